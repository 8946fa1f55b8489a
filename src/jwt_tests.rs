//! The token's form, the keys and the three signatures, with tokens put together
//! here and signed with ring (the claims rules are `access`'s tests).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

use super::*;

const SECRET: &[u8] = b"jwt-test-secret-jwt-test-secret!";
const RSA_PRIVATE: &str = include_str!("../tests/fixtures/rs256-test-key.pem");
const RSA_PUBLIC: &str = include_str!("../tests/fixtures/rs256-test-key.pub.pem");
/// The same key as PKCS#1 (`openssl rsa -RSAPublicKey_out`).
const RSA_PUBLIC_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAwds8TYoPT25s0k+KxxpX636YbbWjmPcU2jGEqPRX8OvblKMz3FIR
VB29kg/iCN07HD+BMSqN5kHQUE5UppFvx9RdvlJEyWsaI6xUTQMHwMTq0oQLFcI2
i0+Rw1WA8iwbS+AgGCLi7fjhR5b92WSxg7UsNexQxmUwe5x4OTjCM1A0eqPZ/1sm
fmBV+PzNWrc6Btmf1hEOayLdQOHrmjBerB627EfSJBNVBbQYAlni+OO/o8PEFgnq
x5WSr6wwZQRf+7+78yiM9uEzO4/XW7s3knqeHuGPUnJFIH1mcUq+P8dHz3lSUbOM
QCXvCG94dPwa8syotZpImn9sb7gyQAt3CQIDAQAB
-----END RSA PUBLIC KEY-----
";
const RSA_1024: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDWBuRuFNXCLkB75tunBuC2oS5g
zKHErhSgGIaEO/97rTwEekiuDtn0k2lwDdTbVjH+8EIQOvOpa7ZjSfriroBWnRa3
uwPoLpXYbZ3tqxo+EwZtCRKHc251GpZDDxAY3q4y0rwUP3SCI4TIR43x5e34cfMi
oRM+QwTVvnoUCpWTfwIDAQAB
-----END PUBLIC KEY-----
";
const EC_P384: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE9o//X9vK+LG31EmjqelWzL58dFWoYA04
l53pLNj3sgdmNVn6/iB/IpakI9xu1MnQJjR3lyWZefgEfHdZwUg03ntMGAFbU8/X
lWCibzut0G+uL1tzNDoCasYQEm7YSZ9r
-----END PUBLIC KEY-----
";
const ED25519: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEABcPAQpcaT79Qbp9PlcEVw4iJ3tnRWnBqLBlVz7xU+6U=
-----END PUBLIC KEY-----
";

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// `header.claims` signed by `signer`.
fn token(header: Value, claims: Value, signer: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(&header), b64(&claims));
    let signature = signer(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn hmac256(secret: &[u8]) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |m| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        ring::hmac::sign(&key, m).as_ref().to_vec()
    }
}

fn claims() -> Value {
    json!({"room": "r", "peer": "p", "exp": 4_000_000_000u64})
}

fn hs256_keys() -> Vec<VerifyKey> {
    vec![VerifyKey::hs256(SECRET)]
}

fn rsa_signer() -> impl Fn(&[u8]) -> Vec<u8> {
    let body: String = RSA_PRIVATE
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let kp = RsaKeyPair::from_pkcs8(&STANDARD.decode(body).unwrap()).unwrap();
    move |m| {
        let mut out = vec![0; kp.public().modulus_len()];
        kp.sign(&sig::RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut out)
            .unwrap();
        out
    }
}

/// A fresh P-256 key: its signer and its public key as SPKI PEM.
fn ec_key() -> (impl Fn(&[u8]) -> Vec<u8>, String) {
    let rng = SystemRandom::new();
    let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    // SubjectPublicKeyInfo for id-ecPublicKey on prime256v1, then the point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(kp.public_key().as_ref());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(spki)
    );
    let signer = move |m: &[u8]| kp.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec();
    (signer, pem)
}

#[test]
fn hs256_signed_here_verifies_and_returns_the_claims() {
    let t = sign_hs256(SECRET, &claims()).unwrap();
    let got: Value = serde_json::from_slice(&verify(&t, &hs256_keys()).unwrap()).unwrap();
    assert_eq!(got, claims());
    // And a token from another implementation of the same algorithm.
    let t = token(json!({"alg": "HS256"}), claims(), hmac256(SECRET));
    assert!(verify(&t, &hs256_keys()).is_ok());
}

#[test]
fn a_changed_signature_claim_or_secret_is_a_bad_signature() {
    let t = sign_hs256(SECRET, &claims()).unwrap();
    let (input, s) = t.rsplit_once('.').unwrap();
    let mut forged = URL_SAFE_NO_PAD.decode(s).unwrap();
    forged[0] ^= 1;
    let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(forged));
    assert_eq!(verify(&forged, &hs256_keys()), Err(JwtError::BadSignature));
    let (header, _) = input.split_once('.').unwrap();
    let other = b64(&json!({"room": "r", "peer": "admin", "exp": 4_000_000_000u64}));
    let swapped = format!("{header}.{other}.{s}");
    assert_eq!(verify(&swapped, &hs256_keys()), Err(JwtError::BadSignature));
    let t = token(
        json!({"alg": "HS256"}),
        claims(),
        hmac256(b"another-secret"),
    );
    assert_eq!(verify(&t, &hs256_keys()), Err(JwtError::BadSignature));
    let empty = format!("{input}.");
    assert_eq!(verify(&empty, &hs256_keys()), Err(JwtError::BadSignature));
}

#[test]
fn only_the_configured_keys_algorithm_is_accepted() {
    for alg in [
        "none", "None", "HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA",
    ] {
        let t = token(json!({"alg": alg}), claims(), hmac256(SECRET));
        assert_eq!(
            verify(&t, &hs256_keys()),
            Err(JwtError::UnsupportedAlgorithm(alg.to_owned())),
            "{alg}"
        );
    }
    // Algorithm confusion: an HS256 token keyed with the public key's text.
    let rsa = VerifyKey::from_public_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let t = token(
        json!({"alg": "HS256"}),
        claims(),
        hmac256(RSA_PUBLIC.as_bytes()),
    );
    assert_eq!(
        verify(&t, &[rsa]),
        Err(JwtError::UnsupportedAlgorithm("HS256".into()))
    );
}

#[test]
fn malformed_tokens_are_malformed() {
    let good = sign_hs256(SECRET, &claims()).unwrap();
    let (h, rest) = good.split_once('.').unwrap();
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    let cases = [
        String::new(),
        "a.b".into(),
        format!("{good}.x"),
        format!("{h}!.{rest}"),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
        format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","x":{deep}}}"#))
        ),
        format!("{}.{rest}", b64(&json!({"typ": "JWT"}))),
        format!("{}.{rest}", b64(&json!({"alg": 256}))),
        format!("{}=.{rest}", h),
        format!("{good}{}", "A".repeat(MAX_TOKEN_LEN)),
    ];
    for t in cases {
        assert_eq!(verify(&t, &hs256_keys()), Err(JwtError::Malformed), "{t}");
    }
}

#[test]
fn a_critical_extension_is_refused() {
    let t = token(
        json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        claims(),
        hmac256(SECRET),
    );
    assert_eq!(verify(&t, &hs256_keys()), Err(JwtError::Malformed));
}

#[test]
fn rs256_verifies_with_the_public_key_as_spki_or_pkcs1() {
    let t = token(
        json!({"alg": "RS256", "typ": "JWT"}),
        claims(),
        rsa_signer(),
    );
    for pem in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
        let key = VerifyKey::from_public_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.alg(), "RS256");
        assert!(verify(&t, &[key]).is_ok(), "{pem}");
    }
    let key = VerifyKey::from_public_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let (input, _) = t.rsplit_once('.').unwrap();
    let wrong = format!("{input}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));
    assert_eq!(verify(&wrong, &[key]), Err(JwtError::BadSignature));
}

#[test]
fn es256_verifies_with_a_p256_public_key() {
    let (signer, pem) = ec_key();
    let key = VerifyKey::from_public_pem(pem.as_bytes()).unwrap();
    assert_eq!(key.alg(), "ES256");
    let t = token(json!({"alg": "ES256"}), claims(), signer);
    assert!(verify(&t, std::slice::from_ref(&key)).is_ok());
    let (_, other) = ec_key();
    let other = VerifyKey::from_public_pem(other.as_bytes()).unwrap();
    assert_eq!(verify(&t, &[other]), Err(JwtError::BadSignature));
    // Both kinds configured: each token finds its own key.
    let keys = [VerifyKey::hs256(SECRET), key];
    assert!(verify(&t, &keys).is_ok());
    assert!(verify(&sign_hs256(SECRET, &claims()).unwrap(), &keys).is_ok());
}

#[test]
fn unusable_public_keys_are_refused_with_the_reason() {
    let err = |pem: &str| VerifyKey::from_public_pem(pem.as_bytes()).unwrap_err();
    assert!(err(RSA_1024).contains("1024 bits"), "{}", err(RSA_1024));
    assert!(err(EC_P384).contains("P-256"), "{}", err(EC_P384));
    assert!(
        err(ED25519).contains("neither RSA nor EC"),
        "{}",
        err(ED25519)
    );
    assert!(err("hello").contains("BEGIN PUBLIC KEY"));
    assert!(err(RSA_PRIVATE).contains("BEGIN PUBLIC KEY"));
    assert!(err("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n").contains("base64"));
    assert!(err("-----BEGIN PUBLIC KEY-----\nMAA=\n").contains("END PUBLIC KEY"));
    assert!(
        err("-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n")
            .contains("SubjectPublicKeyInfo")
    );
}
