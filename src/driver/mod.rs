//! The threads and sockets around the pure core: the router thread ([`router`]), a
//! connection's HTTP phase ([`conn`]) and its session ([`session`]), the bytes under
//! both ([`transport`]), how a parked session thread is woken ([`wake`]), what all
//! of them share ([`context`]), what SIGHUP may replace under them ([`swap`]),
//! each session's queue ([`queue`]) and the gate through which the router writes to a
//! sleeping session's socket itself ([`direct`]), giving back stack pages ([`stack`]), connection slots ([`slots`]), the accept thread's rules for refusals and
//! failures ([`accept`]), and the bridge to Redis for a cluster ([`bridge`],
//! [`inbox`], [`scripts`]).

pub mod accept;
#[cfg(feature = "cluster")]
pub mod bridge;
#[cfg(not(feature = "cluster"))]
#[path = "no_bridge.rs"]
pub mod bridge;
pub mod conn;
pub mod context;
pub mod direct;
#[cfg(feature = "cluster")]
pub mod inbox;
pub mod queue;
pub mod router;
#[cfg(feature = "cluster")]
pub mod scripts;
pub mod session;
pub mod slots;
pub mod stack;
pub mod swap;
pub mod transport;
pub mod wake;
