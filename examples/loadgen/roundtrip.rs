//! `roundtrip` mode: one pair trading ~2.4 KB offers and answers; the a->b->a round
//! trip.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::net::{
    clip, close_desc, close_hint, connect_pair, drain_nonblocking, is_timeout, polite_close,
    ws_config, Ws,
};
use crate::opts::Opts;
use crate::procs::{report_procs, Watch};
use crate::report::{int, now_ns, round3, Out, Summary};
use crate::target::{bases, pick, Target};
use crate::{Fail, Res};

/// A ~2.4 KB SDP body shaped like a browser's audio+video offer.
pub fn sdp(setup: &str) -> String {
    let mut s = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:24:AE:ED:AD:30:BC:BD:F1:9C:02\r\n",
    );
    let _ = write!(
        s,
        "a=setup:{setup}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    );
    let lines = [
        "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n",
        "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n",
        "a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6\r\na=ssrc:3735928559 msid:stream0 track0\r\n",
    ];
    let mut i = 0;
    while s.len() < 2400 {
        s.push_str(lines[i % lines.len()]);
        i += 1;
    }
    s
}

pub fn run(o: &Opts, t: &[Target], prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    let offer =
        json!({"type":"offer","offer":{"type":"offer","sdp":sdp("actpass")},"target_peer_id":"b"})
            .to_string();
    let answer = json!({"type":"answer","answer":{"type":"answer","sdp":sdp("active")},"target_peer_id":"a"}).to_string();
    out.line(format!(
        "roundtrip: offer ({} B) a->b, answer ({} B) b->a; {} round trips after {} warm-up, at {}",
        offer.len(),
        answer.len(),
        o.iters,
        o.warmup_iters,
        bases(t).join(", ")
    ));
    let (ta, tb) = (pick(t, 0), pick(t, usize::from(o.cross)));
    if t.len() > 1 || o.cross {
        out.line(format!("  a on {}, b on {}", ta.base(), tb.base()));
        out.set(
            "spread",
            json!({"cross": o.cross, "a": ta.base(), "b": tb.base()}),
        );
    }
    let before = watch.snap();
    let room = format!("{prefix}-rt");
    let (mut a, mut b) = connect_pair(ta, tb, &room, ws_config(64 * 1024), o.connect_timeout)?;
    let mut samples = Vec::with_capacity(o.iters);
    let mut m0 = watch.snap();
    let mut t0 = Instant::now();
    for i in 0..o.warmup_iters + o.iters {
        if i == o.warmup_iters {
            m0 = watch.snap();
            t0 = Instant::now();
        }
        let start = now_ns();
        a.send(Message::text(offer.as_str()))
            .map_err(|e| format!("a: sending the offer: {e}"))?;
        if let Err(e) = expect_relay(&mut b, "offer", i % 100 == 0) {
            // The reason is often on a's socket (e.g. `rate_limited`).
            let mut seen = BTreeMap::new();
            let _ = drain_nonblocking(&mut a, &mut seen);
            let why: Vec<String> = seen
                .keys()
                .map(|k| format!("{k}{}", close_hint(k)))
                .collect();
            return Err(Fail::Fatal(if why.is_empty() {
                format!("round trip {i}: b: {e}")
            } else {
                format!("round trip {i}: b: {e}; a got: {}", why.join(", "))
            }));
        }
        b.send(Message::text(answer.as_str()))
            .map_err(|e| format!("b: sending the answer: {e}"))?;
        expect_relay(&mut a, "answer", i % 100 == 0)
            .map_err(|e| format!("round trip {i}: a: {e}"))?;
        if i >= o.warmup_iters {
            samples.push(now_ns() - start);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let m1 = watch.snap();
    polite_close(&mut a, Duration::from_millis(500));
    polite_close(&mut b, Duration::from_millis(500));
    let n = samples.len();
    let lat = Summary::of(samples, None);
    out.line(format!("round trip a->b->a: {}", lat.line()));
    out.line(format!(
        "{} round trips in {secs:.2} s = {} round trips/s",
        int(n as u64),
        int((n as f64 / secs) as u64)
    ));
    report_procs(out, watch, &before, &m0, &m1);
    out.set(
        "params",
        json!({"iters": o.iters, "warmup": o.warmup_iters,
               "offer_bytes": offer.len(), "answer_bytes": answer.len()}),
    );
    out.set("measured_secs", json!(round3(secs)));
    out.set("round_trip_us", lat.json());
    out.set("ok", json!(true));
    Ok(true)
}

/// Reads until a text message; it must be the relayed `kind` (checked in full when
/// `full`).
pub fn expect_relay(ws: &mut Ws, kind: &str, full: bool) -> Result<(), String> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let text = t.as_str();
                let head = format!("{{\"type\":\"{kind}\"");
                if !text.starts_with(&head) || full {
                    let v: Value = serde_json::from_str(text)
                        .map_err(|_| format!("not JSON: {}", clip(text)))?;
                    if v["type"] == "error" {
                        let code = v["code"].as_str().unwrap_or("?");
                        return Err(format!(
                            "the server answered error {code}{}",
                            close_hint(code)
                        ));
                    }
                    let from = if kind == "offer" { "a" } else { "b" };
                    if v["type"] != kind || v["from_peer_id"] != from || !v[kind]["sdp"].is_string()
                    {
                        return Err(format!("expected a relayed {kind}, got {}", clip(text)));
                    }
                }
                return Ok(());
            }
            Ok(Message::Close(f)) => {
                let d = close_desc(f);
                return Err(format!("closed by the server: {d}{}", close_hint(&d)));
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                return Err(format!("no {kind} within the timeout"))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_size() {
        assert!(sdp("actpass").len() >= 2400);
    }
}
