//! The per-session token bucket of PROTOCOL.md §5 (`rate_limited`, then 4429). Pure.

use std::time::Instant;

/// Refills `per_sec` tokens a second up to `burst`; each data message takes one.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    strikes: u32,
}

impl RateLimit {
    /// `per_sec == 0` lets everything through.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        RateLimit {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            strikes: 0,
        }
    }

    /// `true`: the message may pass. A refusal is a strike; a pass clears them.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }

    /// Refusals in a row.
    pub fn strikes(&self) -> u32 {
        self.strikes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_refills() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 3, t0);
        assert!(r.allow(t0) && r.allow(t0) && r.allow(t0));
        assert!(!r.allow(t0));
        assert!(!r.allow(t0));
        assert_eq!(r.strikes(), 2);
        // 100 ms at 10/s is one token.
        assert!(r.allow(t0 + Duration::from_millis(100)));
        assert_eq!(r.strikes(), 0);
        assert!(!r.allow(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| r.allow(later)));
        assert!(!r.allow(later));
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0, 1, t0);
        assert!((0..10_000).all(|_| r.allow(t0)));
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 1, t0 + Duration::from_secs(1));
        assert!(r.allow(t0 + Duration::from_secs(1)));
        assert!(!r.allow(t0));
    }
}
