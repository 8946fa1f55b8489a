//! The `redis-reader` thread: follows this instance's inbox stream (PROTOCOL.md §9)
//! and hands every event to the router, in the order Redis wrote them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::warn;
use redis::Value;

use super::bridge::{connect, string, BridgeConfig, COMMAND_TIMEOUT, MAX_BACKOFF, READ_BLOCK};
use super::router::RouterHandle;
use super::scripts::inbox;
use crate::core::cluster::decode;

/// Follows this instance's inbox: every entry, in order, to the router.
pub(super) fn read_loop(cfg: &BridgeConfig, router: &RouterHandle, ok: &AtomicBool) {
    // A fresh instance id: its inbox holds nothing older than this instance.
    let mut last = "0-0".to_owned();
    let key = inbox(&cfg.me);
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut con = match connect(&cfg.url, READ_BLOCK + COMMAND_TIMEOUT) {
            Ok(c) => c,
            Err(_) => {
                ok.store(false, Ordering::Release);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        ok.store(true, Ordering::Release);
        loop {
            let reply: redis::RedisResult<Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(512)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&key)
                .arg(&last)
                .query(&mut con);
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    warn!("redis: inbox reader: {e}");
                    ok.store(false, Ordering::Release);
                    break;
                }
            };
            for (id, fields) in entries(&reply) {
                last = id;
                if let Some(event) = decode(&fields) {
                    if router.cluster(event).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
/// The entries of an XREAD reply: `[[key, [[id, [f, v, ...]], ...]]]` (RESP2) or a
/// map of key to entries (RESP3).
fn entries(reply: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let streams: Vec<&Value> = match reply {
        Value::Array(s) => s
            .iter()
            .filter_map(|x| match x {
                Value::Array(kv) if kv.len() == 2 => Some(&kv[1]),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(items) = s else { continue };
        for item in items {
            let Value::Array(pair) = item else { continue };
            let (Some(id), Some(Value::Array(fv))) = (pair.first().and_then(string), pair.get(1))
            else {
                continue;
            };
            let fields = fv
                .chunks_exact(2)
                .filter_map(|c| Some((string(&c[0])?, string(&c[1])?)))
                .collect();
            out.push((id, fields));
        }
    }
    out
}
