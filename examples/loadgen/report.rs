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
    p50: u64,
    p90: u64,
    p99: u64,
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
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(pct(&v, 50.0), 50);
        assert_eq!(pct(&v, 99.0), 99);
        assert_eq!(pct(&v, 100.0), 100);
        assert_eq!(pct(&[7], 99.0), 7);
        assert_eq!(pct(&[], 50.0), 0);
    }
}
