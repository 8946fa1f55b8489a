//! Unit tests of a session's rules, fed with client frames from memory.
