//! Token verification (`access::Verifier::verify`) on a 64 KiB stack: any bytes, and
//! HS256 tokens whose header or payload is nested up to and past serde_json's limit
//! (127 levels and more). No panic, no stack overflow, and a token is accepted only
//! if its signature is this secret's HMAC of its content, its algorithm is HS256, it
//! has not expired and it names the configured audience and issuer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;
use ring::hmac;
use webrtc_signaling::access::{now_secs, Verifier};

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";
const AUD: &str = "sig.example";
const ISS: &str = "https://id.example";

fn sign(signing_input: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, signing_input.as_bytes()))
}

pub fn check(input: &[u8]) -> Result<(), String> {
    let token = String::from_utf8_lossy(input);
    let v = Verifier::new(Some(SECRET), None, 0)
        .map_err(|e| e.to_string())?
        .with_audience(Some(AUD.into()))
        .with_issuer(Some(ISS.into()));
    let result = v.verify(&token);
    let Ok(claims) = result else {
        return Ok(());
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else {
        return Err(format!("accepted a token of {} parts", parts.len()));
    };
    if sign(&format!("{h}.{p}")) != s {
        return Err("accepted a token whose signature is not the secret's".into());
    }
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("accepted a token whose header is not JSON")?;
    if header["alg"] != "HS256" {
        return Err(format!("accepted alg {}", header["alg"]));
    }
    if claims.exp < now_secs() || !claims.aud.contains(AUD) || claims.iss.as_deref() != Some(ISS) {
        return Err(format!("accepted claims {claims:?}"));
    }
    Ok(())
}

fn nested(depth: usize, open: char) -> String {
    let close = if open == '[' { ']' } else { '}' };
    if open == '[' {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    } else {
        format!(
            "{}1{}",
            "{\"a\":".repeat(depth),
            close.to_string().repeat(depth)
        )
    }
}

pub fn generate() -> BoxedStrategy<Vec<u8>> {
    let alg = prop::sample::select(vec!["HS256", "HS256", "HS384", "RS256", "none", "ES256"]);
    let depth = prop_oneof![0usize..4, 120usize..=130, Just(127usize)];
    let aud = prop::sample::select(vec![
        serde_json::json!(AUD),
        serde_json::json!([AUD, "x"]),
        serde_json::json!("other"),
        serde_json::Value::Null,
    ]);
    let exp_offset = prop::sample::select(vec![-100i64, -1, 60, 3600]);
    (
        alg,
        depth,
        any::<bool>(),
        any::<bool>(),
        aud,
        exp_offset,
        any::<bool>(),
    )
        .prop_map(|(alg, depth, in_header, arrays, aud, exp_offset, iss)| {
            let deep = nested(depth, if arrays { '[' } else { '{' });
            let (hx, px) = if in_header {
                (deep.as_str(), "0")
            } else {
                ("0", deep.as_str())
            };
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT","x":{hx}}}"#);
            let mut payload = serde_json::json!({
                "room": "r", "peer": "p", "exp": now_secs() as i64 + exp_offset, "aud": aud,
            });
            if iss {
                payload["iss"] = serde_json::json!(ISS);
            }
            let payload = payload.to_string();
            let payload = format!("{},\"x\":{px}}}", &payload[..payload.len() - 1]);
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            );
            let sig = sign(&input);
            format!("{input}.{sig}").into_bytes()
        })
        .boxed()
}

pub const DICTIONARY: &[&[u8]] = &[
    b".",
    b"eyJ",
    b"-",
    b"_",
    b"=",
    b"A",
    b"..",
    b"eyJhbGciOiJub25lIn0",
];

/// A valid token of the generator's shape at exactly 127 levels, both places.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, in_header) in [("header", true), ("payload", false)] {
        let deep = nested(127, '[');
        let (hx, px) = if in_header {
            (deep.as_str(), "0")
        } else {
            ("0", deep.as_str())
        };
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","x":{hx}}}"#);
        let payload = format!(
            r#"{{"room":"r","peer":"p","exp":4102444800,"aud":"{AUD}","iss":"{ISS}","x":{px}}}"#
        );
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        out.push((
            format!("nested-127-{name}"),
            format!("{input}.{}", sign(&input)).into_bytes(),
        ));
    }
    out
}
