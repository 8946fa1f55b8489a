//! Unit tests of tokens and origins.
use super::*;

fn claims(room: &str, peer: &str, exp: u64) -> Claims {
    Claims {
        room: Some(room.into()),
        peer: Some(peer.into()),
        exp,
        ..Claims::default()
    }
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn verifier() -> Verifier {
    Verifier::new(Some(SECRET), None, 5).unwrap()
}

#[test]
fn minted_token_admits_its_room_and_peer_only() {
    let t = mint(SECRET, &claims("r", "p", now_secs() + 60)).unwrap();
    let v = verifier();
    assert_eq!(v.check_peer(Some(&t), "r", "p"), Ok(()));
    assert_eq!(v.check_peer(Some(&t), "r2", "p"), Err(AuthError::WrongRoom));
    assert_eq!(v.check_peer(Some(&t), "r", "p2"), Err(AuthError::WrongPeer));
    assert_eq!(v.check_peer(None, "r", "p"), Err(AuthError::Missing));
    assert_eq!(v.check_admin(Some(&t)), Err(AuthError::NotAdmin));
}

#[test]
fn expiry_honours_the_leeway() {
    let v = verifier();
    let within = mint(SECRET, &claims("r", "p", now_secs() - 2)).unwrap();
    assert_eq!(v.check_peer(Some(&within), "r", "p"), Ok(()));
    let past = mint(SECRET, &claims("r", "p", now_secs() - 30)).unwrap();
    assert_eq!(v.check_peer(Some(&past), "r", "p"), Err(AuthError::Expired));
}

#[test]
fn wrong_secret_alg_none_and_garbage_are_refused() {
    let v = verifier();
    let other = mint(&[b'x'; 32], &claims("r", "p", now_secs() + 60)).unwrap();
    assert_eq!(v.verify(&other), Err(AuthError::BadSignature));
    // {"alg":"none","typ":"JWT"} . {"room":"r","peer":"p","exp":9999999999} . (empty)
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                eyJyb29tIjoiciIsInBlZXIiOiJwIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    assert_eq!(
        v.verify(none),
        Err(AuthError::UnsupportedAlgorithm("none".into()))
    );
    assert_eq!(v.verify("not-a-token"), Err(AuthError::Malformed));
    assert_eq!(v.verify(""), Err(AuthError::Missing));
}

#[test]
fn admin_claim_opens_admin_checks() {
    let t = mint(SECRET, &Claims::admin(now_secs() + 60, None)).unwrap();
    assert_eq!(verifier().check_admin(Some(&t)), Ok(()));
    // admin: true alone is what any application sharing the secret could mint.
    let bare = Claims {
        admin: true,
        exp: now_secs() + 60,
        ..Claims::default()
    };
    let t = mint(SECRET, &bare).unwrap();
    assert_eq!(verifier().check_admin(Some(&t)), Err(AuthError::NotAdmin));
}

#[test]
fn bearer_parsing() {
    assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
    assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
    assert_eq!(bearer(Some("Basic abc")), None);
    assert_eq!(bearer(Some("Bearer ")), None);
}

#[test]
fn origins() {
    let mut o = Origins::default();
    assert!(o.allows(Some("https://evil.example"), None));
    o.add("https://App.example/").unwrap();
    assert!(o.add("app.example").is_err());
    assert!(o.add("https://app.example/path").is_err());
    assert!(o.allows(Some("https://app.example"), Some("signal.example")));
    assert!(!o.allows(Some("https://evil.example"), Some("signal.example")));
    assert!(!o.allows(Some("http://app.example"), Some("signal.example")));
    assert!(!o.allows(Some("null"), Some("signal.example")));
    assert!(o.allows(None, Some("signal.example")));
    // The server's own client page, reached at an address or localhost.
    assert!(o.allows(Some("https://127.0.0.1:8443"), Some("127.0.0.1:8443")));
    assert!(o.allows(Some("http://[::1]:8000"), Some("[::1]:8000")));
    assert!(o.allows(Some("http://localhost:8000"), Some("localhost:8000")));
    assert!(!o.allows(Some("http://127.0.0.1:8000"), Some("127.0.0.1:9000")));
    // DNS rebinding: a name in Host proves nothing.
    assert!(!o.allows(
        Some("https://signal.example:8443"),
        Some("signal.example:8443")
    ));
    assert!(!o.allows(
        Some("http://127.0.0.1.evil.example"),
        Some("127.0.0.1.evil.example")
    ));
    // With --public-origin, only the configured origins are the server's own.
    o.add_public("https://Signal.example:8443/").unwrap();
    assert!(o.add_public("null").is_err());
    assert!(o.allows(Some("https://signal.example:8443"), Some("anything")));
    assert!(!o.allows(Some("http://127.0.0.1:8000"), Some("127.0.0.1:8000")));
}

#[test]
fn audience_issuer_and_admin_audience() {
    let v = verifier()
        .with_audience(Some("sig.example".into()))
        .with_issuer(Some("https://id.example".into()));
    let exp = now_secs() + 60;
    let mut c = claims("r", "p", exp);
    c.iss = Some("https://id.example".into());
    let t = |c: &Claims| mint(SECRET, c).unwrap();
    assert_eq!(
        v.check_peer(Some(&t(&c)), "r", "p"),
        Err(AuthError::WrongAudience)
    );
    c.aud = Audience::of(&["other", "sig.example"]);
    assert_eq!(v.check_peer(Some(&t(&c)), "r", "p"), Ok(()));
    c.iss = Some("https://other.example".into());
    assert_eq!(
        v.check_peer(Some(&t(&c)), "r", "p"),
        Err(AuthError::WrongIssuer)
    );
    // An admin token needs admin: true *and* the admin audience.
    let mut admin = Claims::admin(exp, Some("sig.example"));
    admin.iss = Some("https://id.example".into());
    assert_eq!(v.check_admin(Some(&t(&admin))), Ok(()));
    let mut other_app = admin.clone();
    other_app.aud = Audience::of(&["sig.example"]);
    assert_eq!(
        v.check_admin(Some(&t(&other_app))),
        Err(AuthError::NotAdmin)
    );
    let mut no_flag = admin.clone();
    no_flag.admin = false;
    assert_eq!(v.check_admin(Some(&t(&no_flag))), Err(AuthError::NotAdmin));
}

#[test]
fn short_secrets_and_long_leeways_are_refused() {
    let e = Verifier::new(Some(b"s3cret"), None, 5).unwrap_err();
    assert!(e.contains("at least 32"), "{e}");
    assert!(mint(b"s3cret", &claims("r", "p", 1)).is_err());
    assert!(Verifier::new(Some(SECRET), None, MAX_LEEWAY_SECS + 1).is_err());
    assert!(Verifier::new(Some(SECRET), None, MAX_LEEWAY_SECS).is_ok());
}
