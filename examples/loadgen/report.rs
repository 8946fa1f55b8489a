//! Figures and output: the clock, percentiles and latency summaries, number
//! formatting, and the human lines plus the final JSON object.

use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{json, Value};

pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Nearest-rank percentile of a sorted slice.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub struct Summary {
    pub n: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    /// `samples` in nanoseconds; `true_max` overrides the max when samples were
    /// saturated or thinned.
    pub fn of(mut samples: Vec<u64>, true_max: Option<u64>) -> Summary {
        samples.sort_unstable();
        let n = samples.len();
        let mean = if n == 0 {
            0.0
        } else {
            samples.iter().map(|&v| v as f64).sum::<f64>() / n as f64
        };
        Summary {
            n,
            p50: pct(&samples, 50.0),
            p90: pct(&samples, 90.0),
            p99: pct(&samples, 99.0),
            max: true_max.unwrap_or_else(|| samples.last().copied().unwrap_or(0)),
            mean,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  max {}  (mean {}, {} samples)",
            dur(self.p50),
            dur(self.p90),
            dur(self.p99),
            dur(self.max),
            dur(self.mean as u64),
            int(self.n as u64)
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "samples": self.n,
            "p50": us(self.p50), "p90": us(self.p90), "p99": us(self.p99),
            "max": us(self.max), "mean": us(self.mean as u64),
        })
    }
}

/// Latency samples of a long run in bounded memory: beyond `cap`, every other kept
/// one is dropped and from then on only every 2nd (4th...) one is kept, so what is
/// kept stays uniform over time; `max` is always exact.
pub struct Samples {
    kept: Vec<u32>,
    stride: u64,
    seen: u64,
    cap: usize,
    pub max: u64,
}

impl Samples {
    pub fn new(cap: usize) -> Samples {
        Samples {
            kept: Vec::new(),
            stride: 1,
            seen: 0,
            cap: cap.max(2),
            max: 0,
        }
    }

    pub fn push(&mut self, ns: u64) {
        self.max = self.max.max(ns);
        if self.seen % self.stride == 0 {
            if self.kept.len() >= self.cap {
                let mut i = 0;
                self.kept.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            if self.seen % self.stride == 0 {
                self.kept.push(ns.min(u32::MAX as u64) as u32);
            }
        }
        self.seen += 1;
    }

    /// One summary of several, taken at their common (largest) stride so that each
    /// weighs what it saw.
    pub fn summary<'a>(all: impl IntoIterator<Item = &'a Samples> + Clone) -> Summary {
        let stride = all.clone().into_iter().map(|s| s.stride).max().unwrap_or(1);
        let mut merged = Vec::new();
        let mut max = 0;
        for s in all {
            let step = (stride / s.stride).max(1) as usize;
            merged.extend(s.kept.iter().step_by(step).map(|&v| v as u64));
            max = max.max(s.max);
        }
        Summary::of(merged, Some(max))
    }
}

pub fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

pub fn dur(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// What the tool prints: human lines (unless --json) and the JSON object.
pub struct Out {
    pub json_only: bool,
    pub doc: serde_json::Map<String, Value>,
}

impl Out {
    pub fn line(&self, s: impl AsRef<str>) {
        if !self.json_only {
            println!("{}", s.as_ref());
        }
    }
    pub fn progress(&self, s: impl AsRef<str>) {
        if !self.json_only {
            eprintln!("  .. {}", s.as_ref());
        }
    }
    pub fn set(&mut self, k: &str, v: Value) {
        self.doc.insert(k.to_string(), v);
    }
    pub fn finish(self) {
        println!("{}", Value::Object(self.doc));
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_thin_uniformly() {
        let mut s = Samples::new(100);
        for v in 1..=1000u64 {
            s.push(v);
        }
        assert!(s.kept.len() <= 100 && s.kept.len() >= 50);
        assert_eq!(s.max, 1000);
        let sum = Samples::summary([&s]);
        assert!((400..=600).contains(&sum.p50), "{}", sum.p50);
        assert_eq!(sum.max, 1000);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(pct(&v, 50.0), 50);
        assert_eq!(pct(&v, 99.0), 99);
        assert_eq!(pct(&v, 100.0), 100);
        assert_eq!(pct(&[7], 99.0), 7);
        assert_eq!(pct(&[], 50.0), 0);
    }
}
