//! JSON Web Tokens in compact form (RFC 7519, RFC 7515): the three parts, the header,
//! public keys in PEM, and the HS256, RS256 and ES256 signatures. No I/O and no claims
//! policy: `access` decides what a token with a good signature may do.
//!
//! The signatures are ring's, the crypto rustls already brings, rather than a second
//! crypto stack for three algorithms (cargo feature `auth`; without it [`SUPPORTED`] is
//! false and no key can be made). Each key is for one algorithm and the key decides:
//! a token naming any other `alg` (`none` included) is refused before its signature is
//! looked at, so a public key can never serve as an HMAC secret.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::protocol::scan;

/// Whether this build verifies and signs tokens (cargo feature `auth`).
pub const SUPPORTED: bool = cfg!(feature = "auth");

/// Deepest nesting of arrays and objects in a token's header or claims. Ours need 2
/// (an `aud` list); serde_json would go to 128, and at that depth its recursion
/// overflows a 64 KiB connection thread stack in a debug build.
pub const MAX_DEPTH: usize = 16;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longest token accepted (header, claims and signature, encoded). A 4096-bit RSA
/// signature is 683 characters; the claims of this server's tokens are a few hundred.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Shortest RSA modulus accepted for RS256 (RFC 7518 §3.3; ring's own floor).
pub const MIN_RSA_BITS: usize = 2048;

/// Why a token could not be read or its signature is not good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts, a header that is not JSON (or nests deeper than
    /// [`MAX_DEPTH`]), a `crit` extension.
    Malformed,
    /// The header names an algorithm no configured key is for.
    UnsupportedAlgorithm(String),
    BadSignature,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed => f.write_str("malformed token"),
            JwtError::UnsupportedAlgorithm(alg) => {
                write!(f, "token algorithm {alg:?} is not accepted")
            }
            JwtError::BadSignature => f.write_str("bad token signature"),
        }
    }
}

impl std::error::Error for JwtError {}

/// A key tokens are verified with; each is for exactly one algorithm.
pub enum VerifyKey {
    /// HS256: the shared secret.
    Hs256(Vec<u8>),
    /// RS256: a PKCS#1 `RSAPublicKey`, DER.
    Rs256(Vec<u8>),
    /// ES256: a P-256 point, uncompressed (`04 || X || Y`).
    Es256(Vec<u8>),
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.write_str(self.alg())
    }
}

impl VerifyKey {
    pub fn hs256(secret: &[u8]) -> VerifyKey {
        VerifyKey::Hs256(secret.to_vec())
    }

    /// The `alg` this key checks.
    pub fn alg(&self) -> &'static str {
        match self {
            VerifyKey::Hs256(_) => "HS256",
            VerifyKey::Rs256(_) => "RS256",
            VerifyKey::Es256(_) => "ES256",
        }
    }

    fn verify(&self, signing_input: &[u8], sig: &[u8]) -> bool {
        match self {
            VerifyKey::Hs256(secret) => crypto::hs256_verify(secret, signing_input, sig),
            VerifyKey::Rs256(der) => crypto::rs256_verify(der, signing_input, sig),
            VerifyKey::Es256(point) => crypto::es256_verify(point, signing_input, sig),
        }
    }

    /// An RSA (RS256) or EC P-256 (ES256) public key in PEM: `PUBLIC KEY`
    /// (SubjectPublicKeyInfo, what `openssl pkey -pubout` writes) or `RSA PUBLIC KEY`
    /// (PKCS#1).
    pub fn from_public_pem(pem: &[u8]) -> Result<VerifyKey, String> {
        if !SUPPORTED {
            return Err(UNSUPPORTED.to_owned());
        }
        let text = std::str::from_utf8(pem).map_err(|_| "the public key is not PEM text")?;
        if let Some(der) = pem_block(text, "PUBLIC KEY")? {
            return from_spki(&der);
        }
        if let Some(der) = pem_block(text, "RSA PUBLIC KEY")? {
            check_rsa(&der)?;
            return Ok(VerifyKey::Rs256(der));
        }
        Err("no -----BEGIN PUBLIC KEY----- block (an RSA or EC P-256 public key in PEM)".into())
    }
}

/// Checks the signature of `token` with the key for the algorithm its header names,
/// and returns the decoded claims (JSON bytes, not yet parsed, nesting at most
/// [`MAX_DEPTH`] deep).
pub fn verify(token: &str, keys: &[VerifyKey]) -> Result<Vec<u8>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    // What the signature covers: `header.claims`, as sent.
    let signing_input = &token[..header.len() + 1 + claims.len()];
    let header = b64(header)?;
    if scan::nests_deeper(&header, MAX_DEPTH) {
        return Err(JwtError::Malformed);
    }
    let header: Header = serde_json::from_slice(&header).map_err(|_| JwtError::Malformed)?;
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: extensions we do not understand make the token invalid.
        return Err(JwtError::Malformed);
    }
    let key = keys
        .iter()
        .find(|k| k.alg() == header.alg)
        // Named in a log line: a client's text, so kept short.
        .ok_or_else(|| JwtError::UnsupportedAlgorithm(header.alg.chars().take(16).collect()))?;
    let sig = b64(sig)?;
    if !key.verify(signing_input.as_bytes(), &sig) {
        return Err(JwtError::BadSignature);
    }
    let claims = b64(claims)?;
    if scan::nests_deeper(&claims, MAX_DEPTH) {
        return Err(JwtError::Malformed);
    }
    Ok(claims)
}

/// `header.claims.signature` of `claims` signed with HS256 under `secret`.
pub fn sign_hs256(secret: &[u8], claims: &impl serde::Serialize) -> Result<String, String> {
    if !SUPPORTED {
        return Err(UNSUPPORTED.to_owned());
    }
    let claims = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let mut token = B64URL.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    token.push('.');
    B64URL.encode_string(claims, &mut token);
    let tag = crypto::hs256_sign(secret, token.as_bytes());
    token.push('.');
    B64URL.encode_string(tag, &mut token);
    Ok(token)
}

/// What a build without the `auth` feature says to a secret or key.
pub const UNSUPPORTED: &str =
    "this build has no room tokens: build with the cargo feature `auth` (on by default)";

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    B64URL.decode(part).map_err(|_| JwtError::Malformed)
}

/// The DER inside `-----BEGIN {label}-----` … `-----END {label}-----`, if there is such
/// a block.
fn pem_block(text: &str, label: &str) -> Result<Option<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        return Ok(None);
    };
    let body = &text[start + begin.len()..];
    let stop = body.find(&end).ok_or_else(|| format!("no {end} line"))?;
    let b64: String = body[..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(Some)
        .map_err(|_| format!("the {label} block is not base64"))
}

// DER object identifiers (the value bytes) of the SubjectPublicKeyInfo algorithms.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;

/// SubjectPublicKeyInfo (RFC 5280 §4.1.2.7): `SEQUENCE { SEQUENCE { algorithm OID,
/// parameters }, BIT STRING key }`.
fn from_spki(der: &[u8]) -> Result<VerifyKey, String> {
    let bad = || "the PUBLIC KEY block is not a SubjectPublicKeyInfo".to_owned();
    let mut outer = Der(der);
    let mut spki = Der(outer.take(SEQUENCE).ok_or_else(bad)?);
    if !outer.0.is_empty() {
        return Err(bad());
    }
    let mut alg = Der(spki.take(SEQUENCE).ok_or_else(bad)?);
    let bits = spki.take(BIT_STRING).ok_or_else(bad)?;
    // The leading byte counts unused bits in the last byte: a key is whole bytes.
    let key = match bits {
        [0, key @ ..] if spki.0.is_empty() => key,
        _ => return Err(bad()),
    };
    let oid = alg.take(OID).ok_or_else(bad)?;
    if oid == OID_RSA_ENCRYPTION {
        check_rsa(key)?;
        Ok(VerifyKey::Rs256(key.to_vec()))
    } else if oid == OID_EC_PUBLIC_KEY {
        if alg.take(OID) != Some(OID_PRIME256V1) {
            return Err("an EC public key on a curve other than P-256 (ES256 needs P-256)".into());
        }
        if key.len() != 65 || key[0] != 0x04 {
            return Err("the EC public key is not an uncompressed P-256 point".into());
        }
        Ok(VerifyKey::Es256(key.to_vec()))
    } else {
        Err("the public key is neither RSA nor EC P-256".into())
    }
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` with a
/// modulus of at least [`MIN_RSA_BITS`].
fn check_rsa(der: &[u8]) -> Result<(), String> {
    let bad = || "the RSA public key is not a PKCS#1 RSAPublicKey".to_owned();
    let mut outer = Der(der);
    let mut key = Der(outer.take(SEQUENCE).ok_or_else(bad)?);
    let modulus = key.take(INTEGER).ok_or_else(bad)?;
    key.take(INTEGER).ok_or_else(bad)?;
    if !outer.0.is_empty() || !key.0.is_empty() {
        return Err(bad());
    }
    let modulus = match modulus {
        [0, rest @ ..] => rest,
        m => m,
    };
    let bits = modulus
        .first()
        .map_or(0, |b| 8 * modulus.len() - b.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA public key has {bits} bits; RS256 needs at least {MIN_RSA_BITS}"
        ));
    }
    Ok(())
}

/// A cursor over DER TLVs (definite lengths only, as DER requires).
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The value of the next element if its tag is `tag`.
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&t, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if t != tag || rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Some(value)
    }
}

/// The signatures themselves (ring's).
#[cfg(feature = "auth")]
mod crypto {
    use ring::{hmac, signature};

    /// Compares the tags in constant time.
    pub fn hs256_verify(secret: &[u8], msg: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, secret), msg, tag).is_ok()
    }

    pub fn hs256_sign(secret: &[u8], msg: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::sign(&key, msg).as_ref().to_vec()
    }

    pub fn rs256_verify(der: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
            .verify(msg, sig)
            .is_ok()
    }

    pub fn es256_verify(point: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(msg, sig)
            .is_ok()
    }
}

/// Without the `auth` feature no key can be made ([`SUPPORTED`] is false), so nothing
/// here is reached; every check fails all the same.
#[cfg(not(feature = "auth"))]
mod crypto {
    pub fn hs256_verify(_: &[u8], _: &[u8], _: &[u8]) -> bool {
        false
    }

    pub fn hs256_sign(_: &[u8], _: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    pub fn rs256_verify(_: &[u8], _: &[u8], _: &[u8]) -> bool {
        false
    }

    pub fn es256_verify(_: &[u8], _: &[u8], _: &[u8]) -> bool {
        false
    }
}

#[cfg(all(test, feature = "auth"))]
#[path = "jwt_tests.rs"]
mod tests;
