//! PROTOCOL.md §9 with a real `redis-server` (started by the test on a free loopback
//! port) and two or three instances: joins and relays across instances, FIFO under
//! load, cluster-wide ids and room limits, REST and kicks from any instance, resume
//! through another instance, an instance killed with SIGKILL, and a Redis outage.

#![cfg(feature = "cluster")]

mod common;
#[path = "support/proxies.rs"]
mod proxies;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use webrtc_signaling::Server;

fn instance(redis: &Redis, f: impl FnOnce(&mut webrtc_signaling::Config)) -> Server {
    start_with(|c| {
        c.cluster.redis = Some(redis.url());
        c.cluster.ttl = Duration::from_secs(3);
        f(c);
    })
}

fn joined(p: &str) -> Value {
    json!({"type": "peer_joined", "peer_id": p})
}
fn left(p: &str) -> Value {
    json!({"type": "peer_left", "peer_id": p})
}

/// Waits until `/healthz` of `addr` answers `status` (an instance is in the cluster
/// once it answers 200).
fn wait_health(addr: SocketAddr, status: u16) {
    let deadline = Instant::now() + DEADLINE * 3;
    while get(addr, "/healthz").status != status {
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {status}"
        );
        std::thread::yield_now();
    }
}

macro_rules! redis_or_skip {
    ($name:literal) => {
        match Redis::start($name) {
            Some(r) => r,
            None => return,
        }
    };
}

#[test]
fn two_instances_are_one_service() {
    let redis = redis_or_skip!("two_instances_are_one_service");
    let (one, two) = (instance(&redis, |_| {}), instance(&redis, |_| {}));
    let (x, y) = (one.local_addr(), two.local_addr());
    wait_health(x, 200);
    wait_health(y, 200);
    let mut a = Client::join_expect(x, "room", "a", &[]);
    let mut b = Client::join_expect(y, "room", "b", &["a"]);
    a.expect_json(joined("b"));
    let mut c = Client::join_expect(x, "room", "c", &["a", "b"]);
    a.expect_json(joined("c"));
    b.expect_json(joined("c"));
    // Relays both ways across instances, and within one.
    a.send_json(&candidate("b", 1));
    b.expect_json(relayed_candidate("b", 1, "a"));
    b.send_json(&candidate("c", 2));
    c.expect_json(relayed_candidate("c", 2, "b"));
    c.send_json(&candidate("a", 3));
    a.expect_json(relayed_candidate("a", 3, "c"));
    // REST answers for the whole cluster from either instance, in join order.
    for addr in [x, y] {
        assert_eq!(
            get_json(addr, "/webrtc/rooms/room/peers"),
            json!({"room_id": "room", "peers": ["a", "b", "c"]})
        );
        assert_eq!(
            get_json(addr, "/webrtc/rooms"),
            json!({"rooms": [{"room_id": "room", "peer_count": 3}]})
        );
    }
    // Ids are unique cluster-wide.
    expect_refused(y, "room", "a", 4409, "peer_id_taken");
    expect_refused(x, "room", "b", 4409, "peer_id_taken");
    // The cluster's series: Redis up, two instances, one relay out of each side.
    for addr in [x, y] {
        // The instance count is read at each heartbeat (a sixth of the TTL).
        let deadline = Instant::now() + DEADLINE;
        let m = loop {
            let m = String::from_utf8(get(addr, "/metrics").body).unwrap();
            if m.lines()
                .any(|l| l == "webrtc_signaling_cluster_instances 2")
            {
                break m;
            }
            assert!(Instant::now() < deadline, "{addr}: never 2 instances:\n{m}");
            std::thread::yield_now();
        };
        for line in [
            "webrtc_signaling_redis_up 1",
            "webrtc_signaling_cross_instance_relays_sent_total 1",
            "webrtc_signaling_cross_instance_relays_received_total 1",
        ] {
            assert!(m.lines().any(|l| l == line), "{addr}: no {line:?} in\n{m}");
        }
    }
    // A leave is one peer_left everywhere, in order after what the leaver sent.
    b.send_json(&candidate("a", 4));
    b.close(1000);
    a.expect_json(relayed_candidate("a", 4, "b"));
    a.expect_json(left("b"));
    c.expect_json(left("b"));
    a.send_json(&candidate("b", 5));
    a.expect_error("peer_not_found");
}

#[test]
fn a_closed_session_s_id_is_free_everywhere_once_the_client_knows() {
    let redis = redis_or_skip!("a_closed_session_s_id_is_free_everywhere_once_the_client_knows");
    let (one, two) = (instance(&redis, |_| {}), instance(&redis, |_| {}));
    let (x, y) = (one.local_addr(), two.local_addr());
    wait_health(x, 200);
    wait_health(y, 200);
    let mut a = Client::join_expect(x, "room", "a", &[]);
    // A client that closes and at once reconnects through the other instance.
    for i in 0..20 {
        let (here, there) = if i % 2 == 0 { (x, y) } else { (y, x) };
        let b = Client::join_expect(here, "room", "b", &["a"]);
        a.expect_json(joined("b"));
        b.close(1000);
        a.expect_json(left("b"));
        let b = Client::join_expect(there, "room", "b", &["a"]);
        a.expect_json(joined("b"));
        b.close(1000);
        a.expect_json(left("b"));
    }
}

#[test]
fn relays_across_instances_keep_their_order_under_load() {
    let redis = redis_or_skip!("relays_across_instances_keep_their_order_under_load");
    let cfg = |c: &mut webrtc_signaling::Config| {
        c.limits.rate_per_sec = 0;
        c.limits.peer_queue = 256;
    };
    let (one, two) = (instance(&redis, cfg), instance(&redis, cfg));
    wait_health(one.local_addr(), 200);
    wait_health(two.local_addr(), 200);
    let mut a = Client::join_expect(one.local_addr(), "load", "a", &[]);
    let mut b = Client::join_expect(two.local_addr(), "load", "b", &["a"]);
    a.expect_json(joined("b"));
    const N: u64 = 2000;
    let sender = std::thread::spawn(move || {
        for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
            let batch: Vec<Value> = chunk.iter().map(|&i| candidate("b", i)).collect();
            a.send_batch(&batch);
        }
        a
    });
    for i in 0..N {
        b.expect_json(relayed_candidate("b", i, "a"));
    }
    let mut a = sender.join().unwrap();
    assert_still_works(&mut b, "b", &mut a, "a", N);
}

#[test]
fn a_password_and_a_database_in_the_url_reach_redis() {
    // '@' and ' ' in the password travel percent-encoded in the URL.
    let redis = match Redis::start_with(
        "a_password_and_a_database_in_the_url",
        &["--requirepass", "p@ss word"],
    ) {
        Some(r) => r,
        None => return,
    };
    let url = format!("redis://:p%40ss%20word@127.0.0.1:{}/3", redis.port);
    let cfg = |c: &mut webrtc_signaling::Config| c.cluster.redis = Some(url.clone());
    let (one, two) = (instance(&redis, cfg), instance(&redis, cfg));
    wait_health(one.local_addr(), 200);
    wait_health(two.local_addr(), 200);
    let mut a = Client::join_expect(one.local_addr(), "locked", "a", &[]);
    let mut b = Client::join_expect(two.local_addr(), "locked", "b", &["a"]);
    a.expect_json(joined("b"));
    b.send_json(&candidate("a", 1));
    a.expect_json(relayed_candidate("a", 1, "b"));
    // The rooms live in database 3: an unauthenticated client sees nothing, and
    // database 0 holds nothing of ours.
    let mut plain = redis_cli(redis.port);
    assert!(redis_cmd(&mut plain, &["PING"]).contains("NOAUTH"));
    assert!(redis_cmd(&mut plain, &["AUTH", "p@ss word"]).contains("OK"));
    assert_eq!(redis_cmd(&mut plain, &["DBSIZE"]), ":0\r\n");
    redis_cmd(&mut plain, &["SELECT", "3"]);
    assert_ne!(redis_cmd(&mut plain, &["DBSIZE"]), ":0\r\n");
}

/// A raw RESP connection: what an operator's redis-cli would see.
fn redis_cli(port: u16) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s
}

/// Sends one command and returns the first reply line (with its CRLF).
fn redis_cmd(s: &mut std::net::TcpStream, args: &[&str]) -> String {
    use std::io::{BufRead, Write};
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req += &format!("${}\r\n{a}\r\n", a.len());
    }
    s.write_all(req.as_bytes()).expect("write to redis");
    let mut line = String::new();
    std::io::BufReader::new(&mut *s)
        .read_line(&mut line)
        .expect("redis reply");
    line
}

#[test]
fn room_limits_count_the_whole_room() {
    let redis = redis_or_skip!("room_limits_count_the_whole_room");
    let cfg = |c: &mut webrtc_signaling::Config| c.limits.max_room_peers = 2;
    let (one, two) = (instance(&redis, cfg), instance(&redis, cfg));
    wait_health(one.local_addr(), 200);
    wait_health(two.local_addr(), 200);
    let _a = Client::join_expect(one.local_addr(), "small", "a", &[]);
    let _b = Client::join_expect(two.local_addr(), "small", "b", &["a"]);
    expect_refused(one.local_addr(), "small", "c", 4503, "room_full");
    expect_refused(two.local_addr(), "small", "c", 4503, "room_full");
}

#[test]
fn three_instances_mesh_and_kick_from_anywhere() {
    let redis = redis_or_skip!("three_instances_mesh_and_kick_from_anywhere");
    let cfg = |c: &mut webrtc_signaling::Config| c.access.admin = true;
    let servers = [
        instance(&redis, cfg),
        instance(&redis, cfg),
        instance(&redis, cfg),
    ];
    let addrs: Vec<SocketAddr> = servers.iter().map(Server::local_addr).collect();
    for &a in &addrs {
        wait_health(a, 200);
    }
    let mut p = Client::join_expect(addrs[0], "mesh", "p", &[]);
    let mut q = Client::join_expect(addrs[1], "mesh", "q", &["p"]);
    let mut r = Client::join_expect(addrs[2], "mesh", "r", &["p", "q"]);
    p.expect_json(joined("q"));
    p.expect_json(joined("r"));
    q.expect_json(joined("r"));
    p.send_json(&candidate("r", 1));
    r.expect_json(relayed_candidate("r", 1, "p"));
    r.send_json(&candidate("q", 2));
    q.expect_json(relayed_candidate("q", 2, "r"));
    q.send_json(&candidate("p", 3));
    p.expect_json(relayed_candidate("p", 3, "q"));
    // An operator on the third instance removes q (on the second).
    let resp = http(addrs[2], "DELETE", "/webrtc/rooms/mesh/peers/q");
    resp.assert_json(200, json!({"room_id": "mesh", "kicked": ["q"]}));
    q.expect_close(4403, "kicked");
    p.expect_json(left("q"));
    r.expect_json(left("q"));
}

#[test]
fn a_peer_resumes_through_another_instance_without_a_flap() {
    let redis = redis_or_skip!("a_peer_resumes_through_another_instance_without_a_flap");
    let (one, two) = (instance(&redis, |_| {}), instance(&redis, |_| {}));
    let (x, y) = (one.local_addr(), two.local_addr());
    wait_health(x, 200);
    wait_health(y, 200);
    let mut a = Client::join_expect(x, "room", "a", &[]);
    let b = Client::join_expect(x, "room", "b", &["a"]);
    a.expect_json(joined("b"));
    let token = b.resume_token.clone().unwrap();
    b.drop_tcp();
    // Held on the first instance; what a sends meanwhile is kept there.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = get(x, "/metrics");
        if String::from_utf8_lossy(&m.body).contains("webrtc_signaling_peers_suspended 1") {
            break;
        }
        assert!(Instant::now() < deadline, "b was never held");
        std::thread::yield_now();
    }
    a.send_json(&candidate("b", 1));
    a.send_json(&candidate("b", 2));
    // b comes back through the second instance.
    let mut b2 = Client::connect_path(y, &format!("/webrtc/signaling/room/b?resume={token}"));
    b2.expect_json(json!({"type": "existing_peers", "peers": ["a"]}));
    b2.expect_json(relayed_candidate("b", 1, "a"));
    b2.expect_json(relayed_candidate("b", 2, "a"));
    assert_still_works(&mut a, "a", &mut b2, "b", 3);
    assert_still_works(&mut b2, "b", &mut a, "a", 4);
    a.expect_silence(Duration::from_millis(300));
    assert_eq!(
        get_json(y, "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a", "b"]})
    );
}

#[test]
fn an_instance_killed_without_a_goodbye_has_its_peers_leave_within_the_ttl() {
    let redis =
        redis_or_skip!("an_instance_killed_without_a_goodbye_has_its_peers_leave_within_the_ttl");
    let survivor = instance(&redis, |_| {});
    wait_health(survivor.local_addr(), 200);
    let url = redis.url();
    let mut doomed = Process::spawn(&["--redis", &url, "--cluster-ttl", "3"], &[]);
    let daddr = doomed.addr();
    doomed.wait_line("in the cluster", |l| l.contains("in the cluster"));
    let mut a = Client::join_expect(survivor.local_addr(), "room", "a", &[]);
    let _b = Client::join_expect(daddr, "room", "b", &["a"]);
    a.expect_json(joined("b"));
    let started = Instant::now();
    doomed.signal("KILL");
    // The TTL bounds it; the generous deadline only bounds a failure.
    assert_eq!(a.recv_json_within(Duration::from_secs(20)), left("b"));
    println!(
        "peer_left after the SIGKILL: {:?} (ttl 3 s)",
        started.elapsed()
    );
    assert_eq!(
        get_json(survivor.local_addr(), "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a"]})
    );
}

#[test]
fn a_redis_outage_refuses_new_sessions_and_loses_nothing_silently() {
    let mut redis =
        redis_or_skip!("a_redis_outage_refuses_new_sessions_and_loses_nothing_silently");
    let (one, two) = (instance(&redis, |_| {}), instance(&redis, |_| {}));
    let (x, y) = (one.local_addr(), two.local_addr());
    wait_health(x, 200);
    wait_health(y, 200);
    let mut a = Client::join_expect(x, "room", "a", &[]);
    let mut b = Client::join_expect(x, "room", "b", &["a"]);
    let mut c = Client::join_expect(y, "room", "c", &["a", "b"]);
    a.expect_json(joined("b"));
    a.expect_json(joined("c"));
    b.expect_json(joined("c"));
    let mut g = Client::join_expect(x, "other", "g", &[]);
    let mut h = Client::join_expect(y, "other", "h", &["g"]);
    let i = Client::join_expect(x, "other", "i", &["g", "h"]);
    g.expect_json(joined("h"));
    g.expect_json(joined("i"));
    h.expect_json(joined("i"));
    redis.stop();
    wait_health(x, 503);
    wait_health(y, 503);
    // Local relays flow; cross-instance ones are answered; new sessions wait.
    a.send_json(&candidate("b", 1));
    b.expect_json(relayed_candidate("b", 1, "a"));
    a.send_json(&candidate("c", 2));
    a.expect_error("peer_unreachable");
    expect_refused(x, "room", "d", 1013, "try_again_later");
    // A session that ends meanwhile leaves at once for its own instance's peers; the
    // other instance hears of it once Redis is back.
    i.close(1000);
    g.expect_json(left("i"));
    h.expect_silence(Duration::from_millis(200));
    redis.restart();
    wait_health(x, 200);
    wait_health(y, 200);
    // Back: the survivors were re-announced, nobody saw anyone leave or join.
    for addr in [x, y] {
        assert_eq!(
            get_json(addr, "/webrtc/rooms/room/peers"),
            json!({"room_id": "room", "peers": ["a", "b", "c"]})
        );
    }
    h.expect_json(left("i"));
    a.send_json(&candidate("c", 3));
    c.expect_json(relayed_candidate("c", 3, "a"));
    c.send_json(&candidate("b", 4));
    b.expect_json(relayed_candidate("b", 4, "c"));
    a.expect_silence(Duration::from_millis(200));
    let _d = Client::join_expect(y, "room", "d", &["a", "b", "c"]);
    a.expect_json(joined("d"));
}

/// The nginx load balancer of docs/scaling.md, as written (only addresses and the
/// port are the test's), in front of two instances: sessions land on both, and the
/// peers meet as if on one server.
#[test]
fn the_documented_load_balancer_spreads_one_room_over_two_instances() {
    let Some(nginx) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
    else {
        if std::env::var("WEBRTC_SIGNALING_REQUIRE_PROXIES").as_deref() == Ok("1") {
            panic!("nginx is not installed (WEBRTC_SIGNALING_REQUIRE_PROXIES=1)");
        }
        println!(
            "SKIPPED the load balancer test: nginx is not installed (apt-get install nginx-light)"
        );
        return;
    };
    let redis = redis_or_skip!("the_documented_load_balancer_spreads_one_room_over_two_instances");
    let (one, two) = (instance(&redis, |_| {}), instance(&redis, |_| {}));
    wait_health(one.local_addr(), 200);
    wait_health(two.local_addr(), 200);
    let doc = include_str!("../docs/scaling.md");
    let start = doc.find("```nginx\n").expect("an nginx block") + "```nginx\n".len();
    let block = &doc[start..start + doc[start..].find("```").unwrap()];
    let port = proxies::free_port();
    let site = block
        .replace("10.0.0.11:8000", &one.local_addr().to_string())
        .replace("10.0.0.12:8000", &two.local_addr().to_string())
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let dir = proxies::Dir::new("lb");
    let site = dir.file("site.conf", &site);
    let d = dir.0.display();
    let conf = dir.file(
        "nginx.conf",
        &format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             include {site};\n}}\n"
        ),
    );
    let child = std::process::Command::new(&nginx)
        .args(["-c", &conf, "-p", &dir.0.to_string_lossy()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut lb = proxies::Proxy(child, dir.0.join("error.log"));
    proxies::wait_listening(&mut lb, port);
    let lb_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut peers = Vec::new();
    let names = ["p0", "p1", "p2", "p3"];
    for (i, name) in names.iter().enumerate() {
        let c = Client::join_expect(lb_addr, "lb", name, &names[..i]);
        peers.push(c);
        for earlier in peers.iter_mut().take(i) {
            earlier.expect_json(joined(name));
        }
    }
    // Round robin put two sessions on each instance.
    for addr in [one.local_addr(), two.local_addr()] {
        let m = String::from_utf8(get(addr, "/metrics").body).unwrap();
        assert!(
            m.contains("webrtc_signaling_sessions_active 2"),
            "{addr}: {m}"
        );
    }
    peers[0].send_json(&candidate("p1", 1));
    peers[1].expect_json(relayed_candidate("p1", 1, "p0"));
    peers[3].send_json(&candidate("p2", 2));
    peers[2].expect_json(relayed_candidate("p2", 2, "p3"));
}
