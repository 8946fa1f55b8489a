//! `webrtc-signaling token`: mint a room or admin token with the server's own secret
//! flags (same environment variables, same file rules).

use webrtc_signaling::access::{self, Audience, Claims};
use webrtc_signaling::protocol::{PeerId, RoomId};
use webrtc_signaling::{ConfigError, Secret};

use super::{apply_env, switch, Cli, Run, FLAGS};

/// `webrtc-signaling token --room R --peer P [--ttl 1h] [--admin]`: the claims to
/// sign and the secret (from `--auth-secret[-file]` or their environment variables).
#[derive(Debug)]
pub struct TokenRequest {
    pub claims: Claims,
    pub secret: Secret,
}

/// `--help` of the `token` subcommand.
pub const TOKEN_HELP: &str = "\
webrtc-signaling token: print a room token (HS256 JWT) for a server run with --auth-secret

USAGE: webrtc-signaling token --room ROOM --peer PEER [--ttl 1h] [--auth-secret SECRET]
       webrtc-signaling token --admin [--ttl 1h] [--auth-secret SECRET]

  --room ROOM, --peer PEER   the one session the token admits
  --admin                    a token for the REST room listings and admin actions
                             (admin: true, audience webrtc-signaling:admin)
  --ttl DURATION             lifetime: 90, 90s, 30m, 1h or 7d [1h]
  --auth-secret SECRET       env WEBRTC_SIGNALING_AUTH_SECRET
  --auth-secret-file PATH    env WEBRTC_SIGNALING_AUTH_SECRET_FILE
  --auth-audience AUD        env WEBRTC_SIGNALING_AUTH_AUDIENCE (put in aud)
  --auth-issuer ISS          env WEBRTC_SIGNALING_AUTH_ISSUER (put in iss)

Connect with ws://HOST:8000/webrtc/signaling/ROOM/PEER?token=TOKEN, or call the REST
listings with the header 'Authorization: Bearer TOKEN'.
";

/// Parses the arguments after `token`.
pub fn parse<I: Iterator<Item = String>>(
    mut args: I,
    env: &[(String, String)],
) -> Result<Cli, ConfigError> {
    let err = |m: String| ConfigError(m);
    // The secret, audience and issuer flags are the server's own (same env variables,
    // same file rules), so the token fits the server they configure.
    let secret_flags = || {
        FLAGS.iter().filter(|f| {
            f.name.starts_with("auth-secret") || matches!(f.name, "auth-audience" | "auth-issuer")
        })
    };
    let mut keys = Run::default();
    apply_env(&mut keys, env, secret_flags())?;
    let (mut room, mut peer, mut admin) = (None, None, false);
    let mut ttl = 3600;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        if matches!(name.as_str(), "-h" | "--help") {
            return Ok(Cli::TokenHelp);
        }
        if name == "--admin" {
            admin = switch(inline.as_deref().unwrap_or("true"))
                .map_err(|e| err(format!("--admin: {e}")))?;
            continue;
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| err(format!("{name} needs a value (see token --help)")))?;
        let wrap = |e: String| err(format!("{name}: {e}"));
        match name.as_str() {
            "--room" => room = Some(RoomId::parse(&value).map_err(|e| wrap(e.to_string()))?),
            "--peer" => peer = Some(PeerId::parse(&value).map_err(|e| wrap(e.to_string()))?),
            "--ttl" => ttl = duration(&value).map_err(wrap)?,
            flag => match secret_flags().find(|f| flag.strip_prefix("--") == Some(f.name)) {
                Some(f) => (f.set)(&mut keys, &value).map_err(wrap)?,
                None => return Err(err(format!("unknown token flag {name} (see token --help)"))),
            },
        }
    }
    if room.is_some() != peer.is_some() || (room.is_none() && !admin) {
        return Err(err(
            "token needs --room and --peer (or --admin); see token --help".to_owned(),
        ));
    }
    let access = keys.config.access;
    let secret = access.auth_secret.ok_or_else(|| {
        err(
            "token needs --auth-secret, --auth-secret-file or WEBRTC_SIGNALING_AUTH_SECRET"
                .to_owned(),
        )
    })?;
    access::check_secret(secret.expose().as_bytes()).map_err(err)?;
    let now = access::now_secs();
    let audience = access.auth_audience.as_deref();
    let mut claims = if admin {
        Claims::admin(now + ttl, audience)
    } else {
        Claims {
            aud: Audience::of(&audience.into_iter().collect::<Vec<_>>()),
            exp: now + ttl,
            ..Claims::default()
        }
    };
    claims.room = room.map(|r| r.as_str().to_owned());
    claims.peer = peer.map(|p| p.as_str().to_owned());
    claims.iat = Some(now);
    claims.iss = access.auth_issuer;
    Ok(Cli::Token(TokenRequest { claims, secret }))
}

/// `90`, `90s`, `30m`, `1h`, `7d` as seconds (at least 1, at most a year).
fn duration(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{v:?} is not a duration (90, 90s, 30m, 1h, 7d)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{v:?} is not a duration (90, 90s, 30m, 1h, 7d)")),
    };
    match secs {
        1..=31_536_000 => Ok(secs),
        _ => Err(format!("{v:?} is not between 1 second and a year")),
    }
}
