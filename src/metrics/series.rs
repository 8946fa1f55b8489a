//! The two series types the crate does not have in lock-free form: a counter with a
//! fixed set of label values, and a latency histogram with fixed buckets.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A counter with one label whose values are fixed at compile time: one atomic per
/// value, encoded in a stable order, every series present from the start (at 0).
#[derive(Clone)]
pub(super) struct CounterSet<const N: usize> {
    label: &'static str,
    values: &'static [&'static str; N],
    counts: Arc<[AtomicU64; N]>,
}

impl<const N: usize> CounterSet<N> {
    pub(super) fn new(label: &'static str, values: &'static [&'static str; N]) -> Self {
        CounterSet {
            label,
            values,
            counts: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    pub(super) fn inc(&self, index: usize) {
        self.counts[index].fetch_add(1, Ordering::Relaxed);
    }

    /// For a series that only one thread ever writes: a plain load and store, no
    /// locked read-modify-write (a concurrent writer would lose counts, never more).
    pub(super) fn inc_sole_writer(&self, index: usize) {
        let c = &self.counts[index];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

impl<const N: usize> fmt::Debug for CounterSet<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterSet")
            .field("label", &self.label)
            .finish()
    }
}

impl<const N: usize> TypedMetric for CounterSet<N> {
    const TYPE: MetricType = MetricType::Counter;
}

impl<const N: usize> EncodeMetric for CounterSet<N> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        for (value, count) in self.values.iter().zip(self.counts.iter()) {
            let labels = [(self.label, *value)];
            let mut series = encoder.encode_family(&labels)?;
            series.encode_counter::<NoLabelSet, u64, u64>(&count.load(Ordering::Relaxed), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds of the relay latency buckets, in nanoseconds: 25 µs to 10 s (a relay
/// on loopback takes tens of microseconds; a congested peer waits up to the write
/// timeout).
const LATENCY_BOUNDS_NS: [u64; 18] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A lock-free histogram with fixed buckets: one atomic add for the bucket and one for
/// the sum per observation. (prometheus-client's `Histogram` locks a mutex per
/// observation.) The count is the sum of the buckets, so `+Inf` always equals it.
#[derive(Clone)]
pub struct LatencyHistogram(Arc<HistogramInner>);

struct HistogramInner {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub(super) fn new() -> Self {
        LatencyHistogram(Arc::new(HistogramInner {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(LATENCY_BOUNDS_NS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LatencyHistogram")
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let bounds = LATENCY_BOUNDS_NS
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.0.buckets.iter())
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
