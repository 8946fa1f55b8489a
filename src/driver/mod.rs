//! The threads and sockets around the pure core: the router thread ([`router`]), a
//! connection's HTTP phase ([`conn`]) and its session ([`session`]), the bytes under
//! both ([`transport`]), how a parked session thread is woken ([`wake`]), what
//! all of them share ([`context`]), connection slots ([`slots`]) and the accept
//! thread's rules for refusals and failures ([`accept`]).

pub mod accept;
pub mod conn;
pub mod context;
pub mod router;
pub mod session;
pub mod slots;
pub mod transport;
pub mod wake;
