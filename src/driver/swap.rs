//! A value that SIGHUP may replace while threads read it: the TLS configuration (read
//! once per accepted connection), the access rules and the ICE settings (read once per
//! request). A read clones an `Arc` under a read lock, so a reload never waits for a
//! session and a session keeps the configuration it started with.

use std::sync::RwLock;

pub struct Swap<T: Clone>(RwLock<T>);

impl<T: Clone> Swap<T> {
    pub fn new(value: T) -> Self {
        Swap(RwLock::new(value))
    }

    /// The current value. A writer that panicked cannot leave a half-written `T`
    /// behind (the store is one assignment), so a poisoned lock is still good to read.
    pub fn get(&self) -> T {
        match self.0.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, value: T) {
        match self.0.write() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}
