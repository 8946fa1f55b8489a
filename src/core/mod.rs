//! The pure state machines: the rooms ([`router`]), one session's rules
//! ([`session`], [`rate`], over the in-memory [`codec`]) and who may open a session
//! ([`admission`]); and the words the router and the Redis bridge exchange ([`cluster`]). Nothing here
//! touches a socket, a thread or the clock: time comes in as `now`.

pub mod admission;
pub mod cluster;
pub mod codec;
pub mod rate;
pub mod router;
pub mod session;
