//! The built-in client (`/webrtc/client`) in Firefox, and in a call between
//! Firefox and Chromium.
//!
//! Debian's `firefox-esr`, headless, driven through its built-in WebDriver
//! BiDi endpoint (`--remote-debugging-port`, tests/browser/bidi.rs; no
//! geckodriver) on a throw-away profile whose prefs give fake media devices.
//! As for Chromium (tests/browser.rs), every #[test] re-executes this test
//! binary for that one test in a fresh network namespace, and the server
//! (Server::start on 127.0.0.1:0) and the browsers run in there. Firefox
//! needs one thing more: a default route, or it gathers no host candidate
//! for a page that is not capturing; the namespace gets one through a veth
//! pair whose both ends stay inside it (see `Net::VethDefaultRoute`).
//!
//! Skips (prints why, passes) when Firefox (or, for the mixed calls,
//! Chromium) or `unshare -n` is missing, unless
//! WEBRTC_SIGNALING_REQUIRE_FIREFOX=1 (then a skip is a failure).
//! WEBRTC_SIGNALING_FIREFOX_SCREENSHOT=<path> saves a PNG of the two-peer
//! call. Scenarios run one at a time (they share the machine's cores).

#[path = "browser/bidi.rs"]
mod bidi;
#[path = "browser/cdp.rs"]
mod cdp;
#[path = "browser/common.rs"]
mod common;
#[path = "browser/relay.rs"]
mod relay;
#[path = "browser/scenarios.rs"]
mod scenarios;

use common::{Env, Kind, Net, Suite};

const SUITE: Suite = Suite {
    inner_env: "WEBRTC_SIGNALING_FIREFOX_NETNS",
    require_env: "WEBRTC_SIGNALING_REQUIRE_FIREFOX",
    screenshot_env: "WEBRTC_SIGNALING_FIREFOX_SCREENSHOT",
    kind: Kind::Firefox,
    net: Net::VethDefaultRoute,
};

macro_rules! firefox_test {
    ($name:ident, $title:expr) => {
        firefox_test!($name, $title, [Kind::Firefox]);
    };
    ($name:ident, $title:expr, $needs:expr) => {
        #[test]
        fn $name() {
            common::run(&SUITE, &$needs, stringify!($name), $title, scenario::$name);
        }
    };
}

firefox_test!(
    q_signaling_drop_keeps_the_call,
    "firefox (q) signaling drop: reconnect, resume, call kept"
);
firefox_test!(
    a_seed_two_tabs_see_each_other,
    "firefox (a) seed steps, two tabs"
);
firefox_test!(
    b_late_video_one_side_only,
    "firefox (b) late video, one side only"
);
firefox_test!(
    c_three_peers_full_mesh,
    "firefox (c) three peers, full mesh"
);
firefox_test!(
    d_closed_tab_leaves_and_rejoins,
    "firefox (d) closed tab leaves, id rejoins"
);
firefox_test!(
    e_duplicate_peer_id_refused,
    "firefox (e) duplicate peer id refused"
);
firefox_test!(
    f_no_camera_still_receives,
    "firefox (f) no camera, still receives"
);
firefox_test!(
    g_stop_and_restart_video,
    "firefox (g) stop/restart video, both sides"
);
firefox_test!(
    h_client_plumbing,
    "firefox (h) token, ice-servers, disconnect, shutdown"
);
firefox_test!(
    j_offer_collision,
    "firefox (j) offer collisions, both sides"
);
firefox_test!(
    k_camera_permission_blocked,
    "firefox (k) camera blocked by the browser, still receives"
);
firefox_test!(
    l_join_with_cameras_on,
    "firefox (l) join with cameras on, four times"
);
firefox_test!(
    m_mixed_call,
    "mixed (m) Chromium and Firefox, call both ways",
    [Kind::Firefox, Kind::Chromium]
);
firefox_test!(
    n_mixed_offer_collision_chromium_polite,
    "mixed (n) offer collisions, Chromium polite",
    [Kind::Firefox, Kind::Chromium]
);
firefox_test!(
    o_mixed_offer_collision_firefox_polite,
    "mixed (o) offer collisions, Firefox polite",
    [Kind::Firefox, Kind::Chromium]
);
firefox_test!(
    p_mixed_join_with_cameras_on,
    "mixed (p) join with cameras on, each browser joining the other",
    [Kind::Firefox, Kind::Chromium]
);

mod scenario {
    use super::*;
    use std::time::{Duration, Instant};

    use common::MEDIA;
    use webrtc_signaling::Server;

    pub use scenarios::{
        a_seed_two_tabs_see_each_other, b_late_video_one_side_only, c_three_peers_full_mesh,
        d_closed_tab_leaves_and_rejoins, e_duplicate_peer_id_refused, f_no_camera_still_receives,
        g_stop_and_restart_video, q_signaling_drop_keeps_the_call,
    };

    /// (j) with both pages in one Firefox.
    pub fn j_offer_collision(env: &Env) {
        let b = env.browser();
        scenarios::offer_collision(env, &b, &b);
    }

    /// (l) with both pages in one Firefox.
    pub fn l_join_with_cameras_on(env: &Env) {
        let b = env.browser();
        scenarios::join_with_cameras_on(env, "cams", &b, &b);
    }

    /// (h) on a server of its own (it is shut down), with no ICE servers.
    pub fn h_client_plumbing(env: &Env) {
        let server = Server::start(common::test_config()).expect("start the signaling server");
        scenarios::h_client_plumbing(env, &server, "none (host candidates only)");
    }

    /// Firefox's own getUserMedia refusal, not a stub: a profile that blocks
    /// camera and microphone (as a user answering "Block" would) gets
    /// NotAllowedError; #status says so and the page still receives.
    pub fn k_camera_permission_blocked(env: &Env) {
        let b = env.browser();
        let cam = b.open(
            "cam",
            &env.client_url("?room=blocked&peer=cam&autoconnect=1"),
            None,
        );
        cam.wait_status("connected");
        cam.click("start-video");
        let blocking = env.firefox_with(&[
            ("media.navigator.permission.disabled", "false"),
            ("permissions.default.camera", "2"),
            ("permissions.default.microphone", "2"),
        ]);
        let blocked = blocking.open(
            "blocked",
            &env.client_url("?room=blocked&peer=blocked&autoconnect=1"),
            None,
        );
        blocked.wait_status("connected");
        blocked.click("start-video");
        blocked.wait_error("permission denied (NotAllowedError)");
        println!("    #status of the blocked page: {:?}", blocked.status().1);
        blocked.wait(
            "Start Video is usable again",
            "!document.getElementById('start-video').disabled && \
             document.getElementById('stop-video').disabled",
            common::SHORT,
        );
        blocked.assert_video_flowing("cam");
        blocked.assert_remote_videos(&["cam"]);
        cam.assert_remote_videos(&["blocked"]);
        b.assert_no_exceptions();
        blocking.assert_no_exceptions();
    }

    /// The Firefox of the mixed calls: it also uses loopback candidates
    /// (`media.peerconnection.ice.loopback`), as Chromium does with
    /// --allow-loopback-in-peer-connection. Chromium in the test namespace
    /// at times gathers only its loopback candidate for a new connection
    /// (a few in a hundred), which a Firefox that ignores loopback cannot
    /// reach: the call would fail for a reason of the test setup's.
    fn mixed_firefox(env: &Env) -> common::Browser {
        env.firefox_with(&[("media.peerconnection.ice.loopback", "true")])
    }

    /// A Chromium tab and a Firefox tab in one room: the seed's steps in
    /// each, video both ways; each side stops and restarts its video
    /// (renegotiation across the two browsers); the Chromium tab closes,
    /// leaves the Firefox page, and its id rejoins with video.
    pub fn m_mixed_call(env: &Env) {
        let chromium = env.chromium();
        let firefox = mixed_firefox(env);
        let c = chromium.open("chromium", &env.client_url(""), None);
        let f = firefox.open("firefox", &env.client_url(""), None);
        for (p, id) in [(&c, "chromium"), (&f, "firefox")] {
            p.type_into("room-id", "mixed");
            p.type_into("peer-id", id);
            p.click("connect");
            p.wait_status("connected");
            p.click("start-video");
            p.wait(
                "the local preview plays",
                "document.getElementById('local-video').videoWidth > 0",
                MEDIA,
            );
        }
        c.wait_peers(&["firefox"]);
        f.wait_peers(&["chromium"]);
        c.assert_video_flowing("firefox");
        f.assert_video_flowing("chromium");

        for (stopper, other, id, other_id) in [
            (&f, &c, "firefox", "chromium"),
            (&c, &f, "chromium", "firefox"),
        ] {
            stopper.click("stop-video");
            other.wait_video_stopped(id);
            other.assert_remote_videos(&[id]);
            stopper.assert_video_flowing(other_id);
            stopper.click("start-video");
            other.assert_video_flowing(id);
        }

        let closed_at = Instant::now();
        c.close();
        f.wait(
            "chromium gone from #peers and #remote-videos",
            "!document.querySelector('#peers li[data-peer-id=\"chromium\"]') && \
             !document.querySelector('#remote-videos video[data-peer-id=\"chromium\"]')",
            Duration::from_secs(5),
        );
        println!(
            "    the Chromium tab disappeared from the Firefox page {} ms after it closed",
            closed_at.elapsed().as_millis()
        );
        let c = chromium.open(
            "chromium again",
            &env.client_url("?room=mixed&peer=chromium&autoconnect=1"),
            None,
        );
        c.wait_status("connected");
        c.wait_peers(&["firefox"]);
        f.wait_peers(&["chromium"]);
        c.assert_video_flowing("firefox");
        c.click("start-video");
        f.assert_video_flowing("chromium");
        c.assert_remote_videos(&["firefox"]);
        f.assert_remote_videos(&["chromium"]);
        chromium.assert_no_exceptions();
        firefox.assert_no_exceptions();
    }

    /// (j) across browsers: Chromium's page is the polite one (rolls back).
    pub fn n_mixed_offer_collision_chromium_polite(env: &Env) {
        let (chromium, firefox) = (env.chromium(), mixed_firefox(env));
        scenarios::offer_collision(env, &chromium, &firefox);
    }

    /// (j) across browsers: Firefox's page is the polite one (rolls back).
    pub fn o_mixed_offer_collision_firefox_polite(env: &Env) {
        let (chromium, firefox) = (env.chromium(), mixed_firefox(env));
        scenarios::offer_collision(env, &firefox, &chromium);
    }

    /// (l) across browsers: Chromium joins a Firefox page's room, then
    /// Firefox joins a Chromium page's room.
    pub fn p_mixed_join_with_cameras_on(env: &Env) {
        let (chromium, firefox) = (env.chromium(), mixed_firefox(env));
        scenarios::join_with_cameras_on(env, "cams1", &firefox, &chromium);
        scenarios::join_with_cameras_on(env, "cams2", &chromium, &firefox);
    }
}
