//! `--ops-bind`: which endpoints a listener serves. Without it the one port serves
//! everything; with it `/metrics` and the admin API (`DELETE` and the per-room and
//! per-peer `GET`s of docs/production.md) move to the ops listener, which serves no
//! signaling and no page. `/healthz` and the PROTOCOL.md §6 listings stay on both.

use super::route::Route;

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The only listener (no `--ops-bind`).
    All,
    /// The public port, with an ops listener beside it.
    Public,
    /// The ops listener.
    Ops,
}

/// Whether `route` is served on `side` (else: 404, as if the path did not exist).
pub fn serves(side: Side, route: &Route<'_>) -> bool {
    let ops_only = matches!(
        route,
        Route::Metrics
            | Route::Room(_)
            | Route::Peer(..)
            | Route::KickRoom(_)
            | Route::KickPeer(..)
    );
    let both = matches!(route, Route::Healthz | Route::Rooms | Route::RoomPeers(_));
    match side {
        Side::All => true,
        Side::Public => !ops_only,
        Side::Ops => ops_only || both,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split() {
        assert!(serves(Side::All, &Route::Metrics));
        assert!(!serves(Side::Public, &Route::Metrics));
        assert!(!serves(Side::Public, &Route::KickPeer("r", "p")));
        assert!(serves(Side::Public, &Route::Rooms));
        assert!(serves(Side::Public, &Route::Client));
        assert!(serves(Side::Ops, &Route::Metrics));
        assert!(serves(Side::Ops, &Route::KickRoom("r")));
        assert!(serves(Side::Ops, &Route::Healthz));
        assert!(!serves(Side::Ops, &Route::Client));
        assert!(!serves(
            Side::Ops,
            &Route::Signaling {
                room: "r",
                peer: "p"
            }
        ));
        assert!(!serves(Side::Ops, &Route::IceServers));
    }
}
