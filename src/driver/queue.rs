//! A session's queue: the router pushes, the session thread takes. Bounded like a
//! channel of `cap` slots, but holding memory only for what it holds.
//!
//! Why not `crossbeam_channel::bounded`: its array allocates (and initialises) every
//! slot up front, about 4.5 KiB per peer at the default `--peer-queue 64`, although an
//! idle peer's queue is empty nearly all the time; at 10,000 idle peers that was a
//! sixth of the server's memory. Here the buffer grows with what is queued and, once
//! the session has emptied it, shrinks back to the smallest (4 slots, none before the
//! first message). The bound is kept exactly (a client
//! cannot grow the queue, whatever it does): [`QueueTx::try_send`] refuses with
//! [`TrySendError::Full`] at `cap`, and never blocks, so the router never waits.
//!
//! One lock per push or take: the router and the session each hold it for a
//! `VecDeque` operation, nothing more.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

pub use crossbeam_channel::TrySendError;

struct Shared<T> {
    state: Mutex<State<T>>,
    cap: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiving end is gone: nothing pushed now would ever be taken.
    closed: bool,
}

impl<T> Shared<T> {
    /// The state, even if a thread panicked while holding the lock: every
    /// operation leaves it consistent (a push or a pop), so it stays usable.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The router's end.
pub struct QueueTx<T> {
    shared: Arc<Shared<T>>,
}

/// The session's end (one per queue: dropping it disconnects the queue).
pub struct QueueRx<T> {
    shared: Arc<Shared<T>>,
}

/// A queue of at most `cap` items (`cap` 0 refuses everything).
pub fn queue<T>(cap: usize) -> (QueueTx<T>, QueueRx<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
        }),
        cap,
    });
    (
        QueueTx {
            shared: shared.clone(),
        },
        QueueRx { shared },
    )
}

impl<T> QueueTx<T> {
    /// Queues `item` unless the queue holds `cap` items already (`Full`) or its
    /// receiving end is gone (`Disconnected`). Never waits.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TrySendError::Disconnected(item));
        }
        if state.items.len() >= self.shared.cap {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        Ok(())
    }
}

/// The capacity a `VecDeque` of small items starts with (std's smallest
/// allocation for elements up to 1 KiB); kept when the queue empties.
const SMALL: usize = 4;

impl<T> QueueRx<T> {
    /// The oldest item, if any.
    pub fn try_recv(&self) -> Option<T> {
        let mut state = self.shared.lock();
        let item = state.items.pop_front();
        if state.items.is_empty() && state.items.capacity() > SMALL {
            // Emptied after a burst: what the burst grew goes back. A buffer of the
            // smallest size stays, so a peer that takes one message at a time does
            // not allocate and free once per message on the relay path.
            state.items = VecDeque::new();
        }
        item
    }

    pub fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    /// Everything queued, oldest first (the queue is left empty).
    pub fn take_all(&self) -> Vec<T> {
        let items = std::mem::take(&mut self.shared.lock().items);
        items.into()
    }
}

impl<T> Drop for QueueRx<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        // Nobody can take them any more; drop them now rather than with the router's
        // end.
        state.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_cap_items_and_refuses_the_next_without_waiting() {
        let (tx, rx) = queue(3);
        for i in 0..3 {
            assert!(tx.try_send(i).is_ok());
        }
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Some(0));
        // One taken, one slot free again, and only one.
        assert!(tx.try_send(4).is_ok());
        assert!(matches!(tx.try_send(5), Err(TrySendError::Full(5))));
        assert_eq!(rx.take_all(), vec![1, 2, 4]);
        assert!(rx.is_empty());
    }

    #[test]
    fn the_bound_holds_over_many_rounds_of_push_and_take() {
        let (tx, rx) = queue(4);
        let mut next = 0u32;
        let mut expected = 0u32;
        for round in 0..100 {
            let mut accepted = 0;
            while tx.try_send(next).is_ok() {
                next += 1;
                accepted += 1;
            }
            assert!(accepted <= 4, "round {round}: {accepted} accepted");
            // Take some (a different number each round), in order.
            for _ in 0..(round % 5) {
                match rx.try_recv() {
                    Some(v) => {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                    None => break,
                }
            }
        }
    }

    #[test]
    fn a_zero_capacity_queue_takes_nothing() {
        let (tx, rx) = queue(0);
        assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn dropping_the_receiver_disconnects_and_frees_what_was_queued() {
        let (tx, rx) = queue(2);
        let item = Arc::new(());
        assert!(tx.try_send(item.clone()).is_ok());
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1);
        assert!(matches!(
            tx.try_send(item.clone()),
            Err(TrySendError::Disconnected(_))
        ));
    }

    #[test]
    fn an_emptied_queue_releases_its_buffer() {
        let (tx, rx) = queue(64);
        for i in 0..40 {
            assert!(tx.try_send(i).is_ok());
        }
        assert!(rx.shared.lock().items.capacity() >= 40);
        while rx.try_recv().is_some() {}
        assert_eq!(rx.shared.lock().items.capacity(), 0);
        // And it works as before afterwards.
        assert!(tx.try_send(7).is_ok());
        assert_eq!(rx.try_recv(), Some(7));
    }
}
