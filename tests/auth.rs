//! Room tokens (PROTOCOL.md §5 close 4401 `unauthorized`, §6 with auth on): a real
//! server with `auth_secret` / `auth_public_key`, real sockets, tokens signed by the
//! server's own `access::mint` (HS256), or put together here and signed with ring
//! (RS256, ES256, other algorithms, hand-made ones).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{assert_still_works, start, start_with, Client, HttpResponse};
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, RsaKeyPair};
use serde_json::{json, Value};
use webrtc_signaling::access::{self, Claims};
use webrtc_signaling::{Secret, Server};

const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";

/// The test-only RSA key pair in tests/fixtures (see tests/fixtures/README.md).
const RSA_PRIVATE: &str = include_str!("fixtures/rs256-test-key.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rs256-test-key.pub.pem");

// ---------------------------------------------------------------- token issuers

/// How an [`Issuer`] signs.
enum Key {
    Hmac(hmac::Algorithm, Vec<u8>),
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// Whoever signs tokens for a test: HS256 with a shared secret (through the server's
/// own `access::mint`), or any algorithm put together here and signed with ring.
struct Issuer {
    alg: &'static str,
    key: Key,
}

/// The DER inside the first PEM block of `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body is base64")
}

impl Issuer {
    fn hs256(secret: &str) -> Issuer {
        Issuer::hmac("HS256", hmac::HMAC_SHA256, secret)
    }

    fn hmac(alg: &'static str, h: hmac::Algorithm, secret: &str) -> Issuer {
        Issuer {
            alg,
            key: Key::Hmac(h, secret.as_bytes().to_vec()),
        }
    }

    fn rs256() -> Issuer {
        let der = pem_der(RSA_PRIVATE);
        Issuer {
            alg: "RS256",
            key: Key::Rsa(
                RsaKeyPair::from_pkcs8(&der)
                    .expect("tests/fixtures/rs256-test-key.pem is a PKCS#8 RSA private key"),
            ),
        }
    }

    /// ES256 with `private_pem`, a PKCS#8 P-256 key (rcgen's `serialize_pem`).
    fn es256(private_pem: &str) -> Issuer {
        let der = pem_der(private_pem);
        let kp = EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &SystemRandom::new(),
        )
        .expect("rcgen's key is a PKCS#8 P-256 private key");
        Issuer {
            alg: "ES256",
            key: Key::Ec(kp),
        }
    }

    fn sign(&self, claims: &Claims) -> String {
        match &self.key {
            Key::Hmac(_, secret) if self.alg == "HS256" => {
                access::mint(secret, claims).expect("access::mint signs HS256")
            }
            _ => self.sign_json(&serde_json::to_value(claims).expect("claims serialise")),
        }
    }

    /// Any claims, including ones `Claims` cannot express (no exp, odd types).
    fn sign_json(&self, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(&json!({"alg": self.alg, "typ": "JWT"})),
            b64(claims)
        );
        let rng = SystemRandom::new();
        let signature = match &self.key {
            Key::Hmac(h, secret) => hmac::sign(&hmac::Key::new(*h, secret), input.as_bytes())
                .as_ref()
                .to_vec(),
            Key::Rsa(kp) => {
                let mut out = vec![0; kp.public().modulus_len()];
                kp.sign(&sig::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out)
                    .expect("RSA signing");
                out
            }
            Key::Ec(kp) => kp
                .sign(&rng, input.as_bytes())
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// A token for room/peer expiring `exp_offset` seconds from now.
    fn peer_exp(&self, room: &str, peer: &str, exp_offset: i64) -> String {
        let now = access::now_secs();
        self.sign(&Claims {
            room: Some(room.to_owned()),
            peer: Some(peer.to_owned()),
            admin: false,
            exp: now.checked_add_signed(exp_offset).expect("exp in range"),
            iat: Some(now),
            ..Claims::default()
        })
    }

    /// A token for room/peer valid for an hour.
    fn peer(&self, room: &str, peer: &str) -> String {
        self.peer_exp(room, peer, 3600)
    }

    fn admin_exp(&self, exp_offset: i64) -> String {
        let now = access::now_secs();
        self.sign(&Claims {
            iat: Some(now),
            ..Claims::admin(
                now.checked_add_signed(exp_offset).expect("exp in range"),
                None,
            )
        })
    }

    /// An admin token valid for an hour.
    fn admin(&self) -> String {
        self.admin_exp(3600)
    }
}

/// A fresh P-256 key pair: (PKCS#8 private PEM, SPKI public PEM).
fn ec_key_pair() -> (String, String) {
    let kp = rcgen::KeyPair::generate().expect("generate a P-256 key");
    (kp.serialize_pem(), kp.public_key_pem())
}

/// A server that requires HS256 tokens signed with `SECRET`.
fn auth_server() -> Server {
    start_with(|c| c.access.auth_secret = Some(Secret::new(SECRET)))
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Every byte as `%XX`.
fn percent_encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

// ---------------------------------------------------------------- signaling helpers

fn session_path(room: &str, peer: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("/webrtc/signaling/{room}/{peer}?token={t}"),
        None => format!("/webrtc/signaling/{room}/{peer}"),
    }
}

/// Connect on `path` (query included) and expect `existing_peers` == `existing`.
fn join_path(addr: SocketAddr, path: &str, name: &str, existing: &[&str]) -> Client {
    let mut c = Client::connect_path(addr, path);
    c.name = name.to_owned();
    let first = c.recv_json();
    assert_eq!(
        first,
        json!({"type": "existing_peers", "peers": existing}),
        "first message of {name} (path {path})"
    );
    c
}

/// Join room/peer presenting `token`; `existing_peers` must be `existing`.
fn join_with(addr: SocketAddr, room: &str, peer: &str, token: &str, existing: &[&str]) -> Client {
    join_path(
        addr,
        &session_path(room, peer, Some(token)),
        &format!("{room}/{peer}"),
        existing,
    )
}

/// The upgrade on `path` succeeds (101), then the server sends error `unauthorized`,
/// closes with 4401 "unauthorized" and ends the connection.
fn expect_unauthorized_path(addr: SocketAddr, path: &str) {
    let mut c = Client::connect_path(addr, path);
    c.expect_close(4401, "unauthorized");
}

fn expect_unauthorized(addr: SocketAddr, room: &str, peer: &str, token: Option<&str>) {
    expect_unauthorized_path(addr, &session_path(room, peer, token));
}

/// With `a` already in "room", a session for room/x presenting `token` (None: no
/// `?token=`) is refused with 4401, and the room never hears of it: the next peer b
/// is told only of a, a's next message is `peer_joined b` (not x), the real x can
/// still take its id, and the REST listings show exactly a, b and x.
fn assert_refused_unseen(server: &Server, issuer: &Issuer, token: Option<&str>) {
    let addr = server.local_addr();
    let mut a = join_with(addr, "room", "a", &issuer.peer("room", "a"), &[]);
    expect_unauthorized(addr, "room", "x", token);
    let mut b = join_with(addr, "room", "b", &issuer.peer("room", "b"), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    let mut x = join_with(addr, "room", "x", &issuer.peer("room", "x"), &["a", "b"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "x"}));
    b.expect_json(json!({"type": "peer_joined", "peer_id": "x"}));
    // a's and b's next messages are relays from x: nothing else was queued for them.
    assert_still_works(&mut x, "x", &mut a, "a", 1);
    assert_still_works(&mut x, "x", &mut b, "b", 2);
    let admin = issuer.admin();
    request(addr, "GET", "/webrtc/rooms/room/peers", Some(&admin))
        .assert_json(200, json!({"room_id": "room", "peers": ["a", "b", "x"]}));
    request(addr, "GET", "/webrtc/rooms", Some(&admin)).assert_json(
        200,
        json!({"rooms": [{"room_id": "room", "peer_count": 3}]}),
    );
}

// ---------------------------------------------------------------- HTTP helpers

/// `METHOD path` with an optional `Authorization: Bearer <token>`.
fn request(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> HttpResponse {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    request_raw(addr, method, path, &auth)
}

/// `METHOD path` with `extra` (complete header lines, CRLF-terminated) in the head.
fn request_raw(addr: SocketAddr, method: &str, path: &str, extra: &str) -> HttpResponse {
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    common::http_exchange(addr, req.as_bytes(), method == "HEAD")
        .expect("HTTP exchange")
        .unwrap_or_else(|| panic!("{method} {path}: connection closed without a response"))
}

/// 401 `unauthorized` JSON with a `WWW-Authenticate: Bearer` challenge.
fn assert_401(resp: &HttpResponse, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {resp:?}");
    resp.assert_error(401, "unauthorized");
    let challenge = resp
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate: {resp:?}"));
    assert!(
        challenge
            .split_whitespace()
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer")),
        "{what}: challenge {challenge:?} is not Bearer"
    );
}

fn assert_403_forbidden(resp: &HttpResponse, what: &str) {
    assert_eq!(resp.status, 403, "{what}: {resp:?}");
    resp.assert_error(403, "forbidden");
}

const ADMIN_PATHS: [&str; 4] = [
    "/webrtc/rooms",
    "/webrtc/rooms/room",
    "/webrtc/rooms/room/peers",
    "/webrtc/rooms/room/peers/a",
];

// ================================================================ sessions

#[test]
fn valid_tokens_admit_peers_that_then_relay_to_each_other() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let mut a = join_with(addr, "room", "a", &hs.peer("room", "a"), &[]);
    let mut b = join_with(addr, "room", "b", &hs.peer("room", "b"), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    assert_still_works(&mut a, "a", &mut b, "b", 1);
    assert_still_works(&mut b, "b", &mut a, "a", 2);
    b.close(1000);
    a.expect_json(json!({"type": "peer_left", "peer_id": "b"}));
}

#[test]
fn missing_token_is_4401_and_the_room_never_learns() {
    let server = auth_server();
    assert_refused_unseen(&server, &Issuer::hs256(SECRET), None);
}

#[test]
fn empty_token_and_other_parameters_are_4401() {
    let server = auth_server();
    let addr = server.local_addr();
    let good = Issuer::hs256(SECRET).peer("room", "x");
    for path in [
        "/webrtc/signaling/room/x?token=".to_owned(),
        "/webrtc/signaling/room/x?token".to_owned(),
        format!("/webrtc/signaling/room/x?tokens={good}"),
        format!("/webrtc/signaling/room/x?Token={good}"),
        format!("/webrtc/signaling/room/x?access_token={good}"),
    ] {
        expect_unauthorized_path(addr, &path);
    }
    // The same token under its proper name works: the refusals were about the name.
    let _x = join_path(
        addr,
        &format!("/webrtc/signaling/room/x?token={good}"),
        "room/x",
        &[],
    );
}

#[test]
fn malformed_token_is_4401_and_the_room_never_learns() {
    let server = auth_server();
    let addr = server.local_addr();
    for garbage in [
        "not-a-token",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "%00%01",
    ] {
        expect_unauthorized(addr, "room", "x", Some(garbage));
    }
    assert_refused_unseen(&server, &Issuer::hs256(SECRET), Some("x.y.z"));
}

#[test]
fn expired_token_beyond_the_leeway_is_4401_and_the_room_never_learns() {
    let server = auth_server();
    let hs = Issuer::hs256(SECRET);
    // The default leeway is 30 s; this one expired an hour ago.
    let expired = hs.peer_exp("room", "x", -3600);
    assert_refused_unseen(&server, &hs, Some(&expired));
}

#[test]
fn expired_token_within_the_leeway_is_accepted() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    // Expired 10 s ago, default leeway 30 s.
    let _a = join_with(addr, "room", "a", &hs.peer_exp("room", "a", -10), &[]);
}

#[test]
fn the_configured_leeway_is_the_one_applied() {
    let hs = Issuer::hs256(SECRET);
    let strict = start_with(|c| {
        c.access.auth_secret = Some(Secret::new(SECRET));
        c.access.auth_leeway = Duration::ZERO;
    });
    expect_unauthorized(
        strict.local_addr(),
        "room",
        "a",
        Some(&hs.peer_exp("room", "a", -10)),
    );
    // The most the leeway may be (access::MAX_LEEWAY_SECS = 300 s).
    let lenient = start_with(|c| {
        c.access.auth_secret = Some(Secret::new(SECRET));
        c.access.auth_leeway = Duration::from_secs(300);
    });
    let _a = join_with(
        lenient.local_addr(),
        "room",
        "a",
        &hs.peer_exp("room", "a", -240),
        &[],
    );
}

#[test]
fn token_for_another_room_is_4401_and_creates_no_room() {
    let server = auth_server();
    let hs = Issuer::hs256(SECRET);
    let addr = server.local_addr();
    // Case matters in room ids (§2): ROOM is another room.
    expect_unauthorized(addr, "room", "x", Some(&hs.peer("ROOM", "x")));
    // assert_refused_unseen also checks /webrtc/rooms lists "room" alone, so
    // neither "other" nor "ROOM" came to exist.
    assert_refused_unseen(&server, &hs, Some(&hs.peer("other", "x")));
}

#[test]
fn token_for_another_peer_is_4401_and_the_room_never_learns() {
    let server = auth_server();
    let hs = Issuer::hs256(SECRET);
    expect_unauthorized(
        server.local_addr(),
        "room",
        "x",
        Some(&hs.peer("room", "X")),
    );
    assert_refused_unseen(&server, &hs, Some(&hs.peer("room", "y")));
}

#[test]
fn admin_token_does_not_open_a_session() {
    let server = auth_server();
    let hs = Issuer::hs256(SECRET);
    assert_refused_unseen(&server, &hs, Some(&hs.admin()));
}

#[test]
fn token_signed_with_another_secret_is_4401_and_the_room_never_learns() {
    let server = auth_server();
    let forged = Issuer::hs256("not-the-secret-not-the-secret-not-the-secret").peer("room", "x");
    assert_refused_unseen(&server, &Issuer::hs256(SECRET), Some(&forged));
}

#[test]
fn token_with_a_tampered_payload_is_4401() {
    let server = auth_server();
    let hs = Issuer::hs256(SECRET);
    // A genuine token for room/a whose payload is swapped for room/x.
    let genuine = hs.peer("room", "a");
    let parts: Vec<&str> = genuine.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS has three parts: {genuine}");
    let payload = b64(&json!({"room": "room", "peer": "x", "exp": access::now_secs() + 3600}));
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_refused_unseen(&server, &hs, Some(&tampered));
}

#[test]
fn alg_none_token_is_4401_and_the_room_never_learns() {
    let server = auth_server();
    let addr = server.local_addr();
    let claims = b64(&json!({"room": "room", "peer": "x", "exp": access::now_secs() + 3600}));
    for alg in ["none", "None", "NONE"] {
        let header = b64(&json!({"alg": alg, "typ": "JWT"}));
        // Unsigned: empty signature, and also with the signature part left out.
        expect_unauthorized(addr, "room", "x", Some(&format!("{header}.{claims}.")));
        expect_unauthorized(addr, "room", "x", Some(&format!("{header}.{claims}")));
    }
    let header = b64(&json!({"alg": "none", "typ": "JWT"}));
    let unsigned = format!("{header}.{claims}.");
    assert_refused_unseen(&server, &Issuer::hs256(SECRET), Some(&unsigned));
}

#[test]
fn hmac_algorithms_other_than_hs256_are_4401() {
    let server = auth_server();
    let addr = server.local_addr();
    let claims = json!({"room": "room", "peer": "x", "exp": access::now_secs() + 3600});
    for (alg, h) in [("HS384", hmac::HMAC_SHA384), ("HS512", hmac::HMAC_SHA512)] {
        let token = Issuer::hmac(alg, h, SECRET).sign_json(&claims);
        expect_unauthorized(addr, "room", "x", Some(&token));
    }
    let _x = join_with(
        addr,
        "room",
        "x",
        &Issuer::hs256(SECRET).peer("room", "x"),
        &[],
    );
}

#[test]
fn token_without_exp_or_not_yet_valid_is_4401() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let now = access::now_secs();
    let no_exp = hs.sign_json(&json!({"room": "room", "peer": "x"}));
    let string_exp = hs.sign_json(&json!({"room": "room", "peer": "x", "exp": "tomorrow"}));
    let not_yet =
        hs.sign_json(&json!({"room": "room", "peer": "x", "exp": now + 7200, "nbf": now + 3600}));
    for token in [&no_exp, &string_exp, &not_yet] {
        expect_unauthorized(addr, "room", "x", Some(token));
    }
    // Extra claims of an identity provider (aud, iss, sub) do not get in the way.
    let extra = hs.sign_json(&json!({
        "room": "room", "peer": "x", "exp": now + 3600,
        "aud": "someone-else", "iss": "https://idp.example", "sub": "user-42", "nbf": now - 60,
    }));
    let _x = join_with(addr, "room", "x", &extra, &[]);
}

#[test]
fn rs256_token_without_a_configured_public_key_is_4401() {
    let server = auth_server();
    let rs = Issuer::rs256().peer("room", "x");
    assert_refused_unseen(&server, &Issuer::hs256(SECRET), Some(&rs));
}

#[test]
fn percent_encoded_token_in_the_query_is_accepted() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let a = hs.peer("room", "a");
    let _a = join_path(
        addr,
        &format!("/webrtc/signaling/room/a?token={}", percent_encode_all(&a)),
        "room/a",
        &[],
    );
    // Only the dots and dashes encoded, lower-case hex, among other parameters.
    let b = hs.peer("room", "b");
    let partly = b.replace('.', "%2e").replace('-', "%2d");
    let _b = join_path(
        addr,
        &format!("/webrtc/signaling/room/b?v=1&token={partly}&x=%20"),
        "room/b",
        &["a"],
    );
}

#[test]
fn a_refused_session_does_not_disturb_the_peer_that_holds_the_id() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let mut a = join_with(addr, "room", "a", &hs.peer("room", "a"), &[]);
    let mut b = join_with(addr, "room", "b", &hs.peer("room", "b"), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    // Someone without a valid token asks for b's id: 4401, not 4409.
    expect_unauthorized(addr, "room", "b", None);
    expect_unauthorized(addr, "room", "b", Some(&hs.peer("room", "a")));
    // b is untouched, and a heard nothing (its next message is b's relay).
    assert_still_works(&mut b, "b", &mut a, "a", 1);
    assert_still_works(&mut a, "a", &mut b, "b", 2);
}

#[test]
fn invalid_ids_are_still_4400_with_auth_on() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let long = "r".repeat(65);
    let mut c = Client::connect_path(addr, &session_path("bad!room", "x", None));
    c.expect_close(4400, "invalid_room_id");
    let mut c = Client::connect_path(addr, &session_path(&long, "x", Some(&hs.peer("room", "x"))));
    c.expect_close(4400, "invalid_room_id");
    let mut c = Client::connect_path(addr, &session_path("room", "bad!peer", None));
    c.expect_close(4400, "invalid_peer_id");
}

// ---------------------------------------------------------------- public keys

#[test]
fn rs256_tokens_are_accepted_with_the_matching_public_key() {
    let server = start_with(|c| c.access.auth_public_key = Some(RSA_PUBLIC.as_bytes().to_vec()));
    let addr = server.local_addr();
    let rs = Issuer::rs256();
    let mut a = join_with(addr, "room", "a", &rs.peer("room", "a"), &[]);
    let mut b = join_with(addr, "room", "b", &rs.peer("room", "b"), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    assert_still_works(&mut a, "a", &mut b, "b", 1);
    // No secret is configured: HS256 tokens are refused, even one "signed" with the
    // public key text as its HMAC secret (algorithm confusion).
    expect_unauthorized(
        addr,
        "room",
        "x",
        Some(&Issuer::hs256(SECRET).peer("room", "x")),
    );
    expect_unauthorized(
        addr,
        "room",
        "x",
        Some(&Issuer::hs256(RSA_PUBLIC).peer("room", "x")),
    );
    // The REST listings take an RS256 admin token.
    request(addr, "GET", "/webrtc/rooms", Some(&rs.admin())).assert_json(
        200,
        json!({"rooms": [{"room_id": "room", "peer_count": 2}]}),
    );
}

#[test]
fn hs256_token_made_with_the_public_key_as_secret_is_4401_and_the_room_never_learns() {
    // Algorithm confusion: the RSA public key is public, so an HS256 token whose
    // HMAC key is its PEM text must not pass where only that public key is configured.
    let server = start_with(|c| c.access.auth_public_key = Some(RSA_PUBLIC.as_bytes().to_vec()));
    let confused = Issuer::hs256(RSA_PUBLIC).peer("room", "x");
    assert_refused_unseen(&server, &Issuer::rs256(), Some(&confused));
}

#[test]
fn es256_tokens_are_accepted_with_the_matching_public_key() {
    let (private, public) = ec_key_pair();
    let server = start_with(|c| c.access.auth_public_key = Some(public.into_bytes()));
    let addr = server.local_addr();
    let es = Issuer::es256(&private);
    let mut a = join_with(addr, "room", "a", &es.peer("room", "a"), &[]);
    let mut b = join_with(addr, "room", "b", &es.peer("room", "b"), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    assert_still_works(&mut b, "b", &mut a, "a", 1);
    // An RSA-signed token is not accepted by an EC key.
    expect_unauthorized(addr, "room", "x", Some(&Issuer::rs256().peer("room", "x")));
    request(addr, "GET", "/webrtc/rooms/room/peers", Some(&es.admin()))
        .assert_json(200, json!({"room_id": "room", "peers": ["a", "b"]}));
}

#[test]
fn es256_token_signed_by_another_key_is_4401_and_the_room_never_learns() {
    let (private, public) = ec_key_pair();
    let (other_private, _) = ec_key_pair();
    let server = start_with(|c| c.access.auth_public_key = Some(public.into_bytes()));
    let forged = Issuer::es256(&other_private).peer("room", "x");
    assert_refused_unseen(&server, &Issuer::es256(&private), Some(&forged));
}

#[test]
fn secret_and_public_key_together_accept_both_kinds_of_token() {
    let server = start_with(|c| {
        c.access.auth_secret = Some(Secret::new(SECRET));
        c.access.auth_public_key = Some(RSA_PUBLIC.as_bytes().to_vec());
    });
    let addr = server.local_addr();
    let mut a = join_with(
        addr,
        "room",
        "a",
        &Issuer::hs256(SECRET).peer("room", "a"),
        &[],
    );
    let mut b = join_with(
        addr,
        "room",
        "b",
        &Issuer::rs256().peer("room", "b"),
        &["a"],
    );
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    assert_still_works(&mut a, "a", &mut b, "b", 1);
    // An ES256 token has no key here.
    let (ec_private, _) = ec_key_pair();
    expect_unauthorized(
        addr,
        "room",
        "x",
        Some(&Issuer::es256(&ec_private).peer("room", "x")),
    );
}

// ================================================================ REST

#[test]
fn room_listings_without_a_token_are_401_with_a_bearer_challenge() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let _a = join_with(addr, "room", "a", &hs.peer("room", "a"), &[]);
    for path in ADMIN_PATHS {
        assert_401(&request(addr, "GET", path, None), &format!("GET {path}"));
        // A bad or foreign credential is no better than none.
        for header in [
            "Authorization: Bearer not-a-token\r\n".to_owned(),
            "Authorization: Bearer \r\n".to_owned(),
            format!("Authorization: Basic {}\r\n", hs.admin()),
            format!("Authorization: {}\r\n", hs.admin()),
            format!(
                "Authorization: Bearer {}\r\n",
                Issuer::hs256("not-the-secret-not-the-secret-not-the-secret").admin()
            ),
        ] {
            assert_401(
                &request_raw(addr, "GET", path, &header),
                &format!("GET {path} with {header:?}"),
            );
        }
        let head = request(addr, "HEAD", path, None);
        assert_eq!(head.status, 401, "HEAD {path}: {head:?}");
        assert!(head.body.is_empty(), "HEAD {path} has a body");
    }
}

#[test]
fn room_listings_with_a_peer_token_are_403_forbidden() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let a_token = hs.peer("room", "a");
    let _a = join_with(addr, "room", "a", &a_token, &[]);
    for path in ADMIN_PATHS {
        assert_403_forbidden(
            &request(addr, "GET", path, Some(&a_token)),
            &format!("GET {path} with a peer token"),
        );
    }
}

#[test]
fn room_listings_with_an_admin_token_answer_as_usual() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let admin = hs.admin();
    request(addr, "GET", "/webrtc/rooms", Some(&admin)).assert_json(200, json!({"rooms": []}));
    let _a = join_with(addr, "room", "a", &hs.peer("room", "a"), &[]);
    let _b = join_with(addr, "room", "b", &hs.peer("room", "b"), &["a"]);
    let _z = join_with(addr, "alpha", "z", &hs.peer("alpha", "z"), &[]);
    request(addr, "GET", "/webrtc/rooms", Some(&admin)).assert_json(
        200,
        json!({"rooms": [{"room_id": "alpha", "peer_count": 1}, {"room_id": "room", "peer_count": 2}]}),
    );
    request(addr, "GET", "/webrtc/rooms/room", Some(&admin))
        .assert_json(200, json!({"room_id": "room", "peer_count": 2}));
    request(addr, "GET", "/webrtc/rooms/room/peers", Some(&admin))
        .assert_json(200, json!({"room_id": "room", "peers": ["a", "b"]}));
    request(addr, "GET", "/webrtc/rooms/room/peers/b", Some(&admin))
        .assert_json(200, json!({"room_id": "room", "peer_id": "b"}));
    request(addr, "GET", "/webrtc/rooms/nope/peers", Some(&admin))
        .assert_error(404, "room_not_found");
    request(addr, "GET", "/webrtc/rooms/bad!id/peers", Some(&admin))
        .assert_error(400, "invalid_room_id");
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let lower = request_raw(
        addr,
        "GET",
        "/webrtc/rooms/room/peers",
        &format!("Authorization: bearer {admin}\r\n"),
    );
    lower.assert_json(200, json!({"room_id": "room", "peers": ["a", "b"]}));
    // An admin token within the leeway still works.
    request(addr, "GET", "/webrtc/rooms/alpha", Some(&hs.admin_exp(-10)))
        .assert_json(200, json!({"room_id": "alpha", "peer_count": 1}));
}

#[test]
fn expired_admin_token_is_401() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let expired = hs.admin_exp(-3600);
    let _a = join_with(addr, "room", "a", &hs.peer("room", "a"), &[]);
    for path in ADMIN_PATHS {
        assert_401(
            &request(addr, "GET", path, Some(&expired)),
            &format!("GET {path} with an expired admin token"),
        );
    }
}

#[test]
fn healthz_and_the_client_page_need_no_token() {
    let server = auth_server();
    let addr = server.local_addr();
    common::get(addr, "/healthz").assert_json(200, json!({"status": "ok"}));
    let page = common::get(addr, "/webrtc/client");
    assert_eq!(page.status, 200, "GET /webrtc/client: {page:?}");
    assert!(
        page.content_type().starts_with("text/html"),
        "{:?}",
        page.content_type()
    );
    let root = common::get(addr, "/");
    assert_eq!(root.status, 302, "GET /: {root:?}");
}

#[test]
fn ice_servers_need_a_token_of_any_kind() {
    let server = start_with(|c| {
        c.access.auth_secret = Some(Secret::new(SECRET));
        c.ice.servers = vec!["stun:stun.invalid:3478".to_owned()];
    });
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let peer = hs.peer("room", "a");
    let body = json!({"iceServers": [{"urls": ["stun:stun.invalid:3478"]}], "ttl": 0});
    assert_401(
        &request(addr, "GET", "/webrtc/ice-servers", None),
        "no token",
    );
    for bad in [
        "garbage".to_owned(),
        hs.peer_exp("room", "a", -3600),
        Issuer::hs256("not-the-secret-not-the-secret-not-the-secret").peer("room", "a"),
    ] {
        assert_401(
            &request(
                addr,
                "GET",
                &format!("/webrtc/ice-servers?token={bad}"),
                None,
            ),
            &format!("?token={bad}"),
        );
        assert_401(
            &request(addr, "GET", "/webrtc/ice-servers", Some(&bad)),
            &format!("Bearer {bad}"),
        );
    }
    // What the built-in client sends: ?token= (with ?peer=, as it does).
    request(
        addr,
        "GET",
        &format!("/webrtc/ice-servers?peer=a&token={peer}"),
        None,
    )
    .assert_json(200, body.clone());
    request(
        addr,
        "GET",
        &format!("/webrtc/ice-servers?token={}", percent_encode_all(&peer)),
        None,
    )
    .assert_json(200, body.clone());
    request(addr, "GET", "/webrtc/ice-servers", Some(&peer)).assert_json(200, body.clone());
    request(addr, "GET", "/webrtc/ice-servers", Some(&hs.admin())).assert_json(200, body);
}

#[test]
fn kicking_needs_an_admin_token() {
    let server = start_with(|c| {
        c.access.auth_secret = Some(Secret::new(SECRET));
        c.access.admin = true;
    });
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let a_token = hs.peer("room", "a");
    let mut a = join_with(addr, "room", "a", &a_token, &[]);
    let mut b = join_with(addr, "room", "b", &hs.peer("room", "b"), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    for path in ["/webrtc/rooms/room/peers/a", "/webrtc/rooms/room"] {
        assert_401(
            &request(addr, "DELETE", path, None),
            &format!("DELETE {path}"),
        );
        assert_401(
            &request(addr, "DELETE", path, Some(&hs.admin_exp(-3600))),
            &format!("DELETE {path} with an expired admin token"),
        );
        // Not even a peer's own token removes it.
        assert_403_forbidden(
            &request(addr, "DELETE", path, Some(&a_token)),
            &format!("DELETE {path} with a's token"),
        );
    }
    let admin = hs.admin();
    request(addr, "GET", "/webrtc/rooms/room/peers", Some(&admin))
        .assert_json(200, json!({"room_id": "room", "peers": ["a", "b"]}));
    request(addr, "DELETE", "/webrtc/rooms/room/peers/a", Some(&admin))
        .assert_json(200, json!({"room_id": "room", "kicked": ["a"]}));
    // The refused DELETEs left no trace: a's first message is its kick.
    a.expect_close(4403, "kicked");
    b.expect_json(json!({"type": "peer_left", "peer_id": "a"}));
    request(addr, "GET", "/webrtc/rooms/room/peers", Some(&admin))
        .assert_json(200, json!({"room_id": "room", "peers": ["b"]}));
}

#[test]
fn an_admin_token_does_not_enable_admin_actions_the_server_disabled() {
    let server = auth_server();
    let addr = server.local_addr();
    let hs = Issuer::hs256(SECRET);
    let mut a = join_with(addr, "room", "a", &hs.peer("room", "a"), &[]);
    request(
        addr,
        "DELETE",
        "/webrtc/rooms/room/peers/a",
        Some(&hs.admin()),
    )
    .assert_error(403, "admin_disabled");
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
}

// ================================================================ auth off

#[test]
fn without_auth_everything_works_without_a_token() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    // A stray ?token= is ignored when auth is off.
    let mut b = join_path(
        addr,
        "/webrtc/signaling/room/b?token=whatever",
        "room/b",
        &["a"],
    );
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    assert_still_works(&mut a, "a", &mut b, "b", 1);
    common::get(addr, "/webrtc/rooms").assert_json(
        200,
        json!({"rooms": [{"room_id": "room", "peer_count": 2}]}),
    );
    common::get(addr, "/webrtc/rooms/room/peers")
        .assert_json(200, json!({"room_id": "room", "peers": ["a", "b"]}));
    common::get(addr, "/webrtc/ice-servers").assert_json(200, json!({"iceServers": [], "ttl": 0}));
    // A bearer header is not needed, and not held against the caller either.
    request(addr, "GET", "/webrtc/rooms", Some("garbage")).assert_json(
        200,
        json!({"rooms": [{"room_id": "room", "peer_count": 2}]}),
    );
}
