//! Interception points for the integration tests (hidden from the docs): hold a
//! session thread, or make the router fail. Empty in production, where each costs
//! one branch on `None`.

use std::fmt;
use std::sync::Arc;

use crate::protocol::{PeerId, RoomId};

/// Called by the router thread before it applies a join to this room (it may panic).
pub type RouterHook = Arc<dyn Fn(&RoomId) + Send + Sync>;
/// Called by a session thread at the top of each of its turns (it may block).
pub type SessionHook = Arc<dyn Fn(&RoomId, &PeerId) + Send + Sync>;

#[derive(Clone, Default)]
pub struct Hooks {
    pub router_join: Option<RouterHook>,
    pub session_turn: Option<SessionHook>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("router_join", &self.router_join.is_some())
            .field("session_turn", &self.session_turn.is_some())
            .finish()
    }
}
