//! The pure state machines: the rooms ([`router`]), one session's rules
//! ([`session`], [`rate`], over the in-memory [`codec`]) and who may open a session
//! ([`admission`]). Nothing here
//! touches a socket, a thread or the clock: time comes in as `now`.

pub mod admission;
pub mod codec;
pub mod rate;
pub mod router;
pub mod session;
