//! The server's base URL: parsing `--url`, the signaling URL of each peer (with a
//! minted room token under `--auth-secret`), and the TLS client settings it needs.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde_json::{json, Value};

use crate::opts::Opts;
use crate::tls::{client_config, TlsClient};
use crate::{Fail, Res};

#[derive(Clone)]
pub struct Target {
    /// `wss://` (TLS) rather than `ws://`.
    pub secure: bool,
    /// `host[:port]` as the user wrote it (the Host header).
    pub authority: String,
    /// The host alone, without brackets or port (the TLS server name).
    pub host: String,
    /// Path prefix before `/webrtc/signaling`, "" or "/something".
    pub prefix: String,
    /// Resolved addresses, the one that answered the probe first.
    pub addrs: Vec<SocketAddr>,
    /// For `wss://`: the rustls client configuration and server name (SNI).
    pub tls: Option<TlsClient>,
    /// `--auth-secret`: a token is minted for every connection.
    pub auth_secret: Option<Arc<[u8]>>,
}

impl Target {
    pub fn parse(url: &str) -> Res<Target> {
        let (secure, rest) = if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            return Err(Fail::Usage(format!("{url}: use a WebSocket URL, ws://{r}")));
        } else if let Some(r) = url.strip_prefix("https://") {
            return Err(Fail::Usage(format!(
                "{url}: use a WebSocket URL, wss://{r}"
            )));
        } else {
            return Err(Fail::Usage(format!(
                "--url {url}: expected ws://HOST:PORT or wss://HOST:PORT (optionally followed by a path prefix)"
            )));
        };
        let scheme = if secure { "wss" } else { "ws" };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(Fail::Usage(format!(
                "--url {url}: expected {scheme}://HOST:PORT"
            )));
        }
        if path.contains(['?', '#']) {
            return Err(Fail::Usage(format!(
                "--url {url}: no query or fragment, please (the tool builds the signaling path itself)"
            )));
        }
        // Forgive a URL that already names the signaling endpoint.
        let mut prefix = path.trim_end_matches('/').to_string();
        if let Some(i) = prefix.find("/webrtc/signaling") {
            prefix.truncate(i);
        } else if let Some(i) = prefix.find("/webrtc/client") {
            prefix.truncate(i);
        }
        let default_port = if secure { 443 } else { 80 };
        let (with_port, host) = if let Some(bracketed) = authority.strip_prefix('[') {
            let host = bracketed.split(']').next().unwrap_or_default().to_string();
            if authority.contains("]:") {
                (authority.to_string(), host)
            } else {
                (format!("{authority}:{default_port}"), host)
            }
        } else if let Some((host, _port)) = authority.rsplit_once(':') {
            (authority.to_string(), host.to_string())
        } else {
            (format!("{authority}:{default_port}"), authority.to_string())
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|e| Fail::Fatal(format!("--url {url}: cannot resolve `{authority}`: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(Fail::Fatal(format!(
                "--url {url}: `{authority}` resolves to no address"
            )));
        }
        Ok(Target {
            secure,
            authority: authority.to_string(),
            host,
            prefix,
            addrs,
            tls: None,
            auth_secret: None,
        })
    }

    /// Applies `--auth-secret` and the TLS trust flags; wss:// needs exactly one of
    /// --ca, --fingerprint, --insecure, and ws:// none.
    pub fn configure(&mut self, o: &Opts) -> Res<()> {
        self.auth_secret = o.auth_secret.as_ref().map(|s| Arc::from(s.as_bytes()));
        if !self.secure {
            return match o.tls.flag() {
                None => Ok(()),
                Some(flag) => Err(Fail::Usage(format!(
                    "{flag} applies to wss:// URLs only, and --url is {}",
                    self.base()
                ))),
            };
        }
        let name = ServerName::try_from(self.host.clone()).map_err(|_| {
            Fail::Usage(format!(
                "--url {}: `{}` is not a valid TLS server name",
                self.base(),
                self.host
            ))
        })?;
        let config = client_config(&o.tls, &self.base())?;
        self.tls = Some(TlsClient { config, name });
        Ok(())
    }

    /// The signaling URL of one peer, without a token.
    pub fn url(&self, room: &str, peer: &str) -> String {
        format!(
            "{}://{}{}/webrtc/signaling/{room}/{peer}",
            self.scheme(),
            self.authority,
            self.prefix
        )
    }

    /// The URL requested: with `?token=` (a JWT for this room and peer, valid for an
    /// hour) when --auth-secret is set. Never printed: a token is a credential.
    pub fn request_url(&self, room: &str, peer: &str) -> Result<String, String> {
        let mut url = self.url(room, peer);
        if let Some(secret) = &self.auth_secret {
            let claims = webrtc_signaling::access::Claims {
                room: Some(room.to_string()),
                peer: Some(peer.to_string()),
                exp: webrtc_signaling::access::now_secs() + 3600,
                ..Default::default()
            };
            let token = webrtc_signaling::access::mint(secret, &claims)
                .map_err(|e| format!("minting a token: {e}"))?;
            // A JWT is base64url and dots: nothing to percent-encode.
            url.push_str("?token=");
            url.push_str(&token);
        }
        Ok(url)
    }

    pub fn scheme(&self) -> &'static str {
        if self.secure {
            "wss"
        } else {
            "ws"
        }
    }

    pub fn base(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.prefix)
    }
}

pub fn bases(targets: &[Target]) -> Vec<String> {
    targets.iter().map(Target::base).collect()
}

/// The instance of a peer spread round-robin: the `i`-th of a run.
pub fn pick(targets: &[Target], i: usize) -> &Target {
    &targets[i % targets.len()]
}

/// Connections per URL of a run over several instances: a line (`ws://a 4, ws://b
/// 4`) and the JSON list.
pub fn spread(targets: &[Target], counts: &[u64], what: &str) -> (String, Value) {
    let line = targets
        .iter()
        .zip(counts)
        .map(|(t, n)| format!("{} {n}", t.base()))
        .collect::<Vec<_>>()
        .join(", ");
    let list = targets
        .iter()
        .zip(counts)
        .map(|(t, n)| json!({"url": t.base(), what: n}))
        .collect();
    (line, Value::Array(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opts::parse_args;

    #[test]
    fn urls() {
        let t = Target::parse("ws://127.0.0.1:8123").ok().unwrap();
        assert_eq!(t.url("r", "p"), "ws://127.0.0.1:8123/webrtc/signaling/r/p");
        let t = Target::parse("ws://127.0.0.1:8123/sig/webrtc/signaling/x")
            .ok()
            .unwrap();
        assert_eq!(
            t.url("r", "p"),
            "ws://127.0.0.1:8123/sig/webrtc/signaling/r/p"
        );
        let t = Target::parse("wss://localhost:8443/sig").ok().unwrap();
        assert!(t.secure);
        assert_eq!(t.host, "localhost");
        assert_eq!(
            t.url("r", "p"),
            "wss://localhost:8443/sig/webrtc/signaling/r/p"
        );
        let t = Target::parse("wss://[::1]:8443").ok().unwrap();
        assert_eq!(t.host, "::1");
        assert!(ServerName::try_from(t.host.clone()).is_ok());
        assert!(Target::parse("wss://127.0.0.1").is_ok());
        assert!(Target::parse("127.0.0.1:80").is_err());
    }

    #[test]
    fn tokens_in_the_url() {
        let mut t = Target::parse("ws://127.0.0.1:8123").ok().unwrap();
        t.auth_secret = Some(Arc::from(&b"s3cret-s3cret-s3cret-s3cret-s3cret"[..]));
        let url = t.request_url("room1", "a").unwrap();
        let (path, token) = url.split_once("?token=").unwrap();
        assert_eq!(path, "ws://127.0.0.1:8123/webrtc/signaling/room1/a");
        let v = webrtc_signaling::access::Verifier::new(
            Some(b"s3cret-s3cret-s3cret-s3cret-s3cret"),
            None,
            0,
        )
        .unwrap();
        assert!(v.check_peer(Some(token), "room1", "a").is_ok());
        assert!(v.check_peer(Some(token), "room1", "b").is_err());
    }

    #[test]
    fn tls_flags() {
        let opts = |args: &[&str]| {
            parse_args(args.iter().map(|s| s.to_string()).collect())
                .ok()
                .flatten()
        };
        assert!(opts(&["pairs", "--insecure", "--ca", "x.pem"]).is_none());
        let o = opts(&["pairs", "--url", "wss://127.0.0.1:1"]).unwrap();
        let mut t = Target::parse(&o.urls[0]).ok().unwrap();
        assert!(matches!(t.configure(&o), Err(Fail::Usage(_))));
        let o = opts(&["pairs", "--url", "wss://127.0.0.1:1", "--insecure"]).unwrap();
        assert!(t.configure(&o).is_ok() && t.tls.is_some());
        let o = opts(&["pairs", "--url", "ws://127.0.0.1:1", "--insecure"]).unwrap();
        let mut t = Target::parse(&o.urls[0]).ok().unwrap();
        assert!(t.configure(&o).is_err());
    }
}
