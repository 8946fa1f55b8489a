//! The fuzz driver on the stable toolchain: proptest generates and shrinks inputs,
//! this runs them for a time budget on a thread with the smallest stack the server's
//! connection threads may have.
//!
//! Each target first runs every file of its seed corpus (`tests/fuzz/corpus/<target>/`),
//! then inputs that are either seeds with a few mutations or made by the target's own
//! generator, for `WEBRTC_SIGNALING_FUZZ_SECS` seconds (default 2). A failure is
//! shrunk to a small input, printed, and written to `target/fuzz-failures/`, ready to
//! be added to the corpus. `WEBRTC_SIGNALING_FUZZ_SEED` fixes the random seed.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

/// A check of one input: `Err` describes the broken property.
pub type Check = fn(&[u8]) -> Result<(), String>;

/// The connection threads' smallest stack (`--thread-stack` refuses less).
pub const SMALL_STACK: usize = 64 * 1024;

fn budget() -> Duration {
    let secs = std::env::var("WEBRTC_SIGNALING_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs.max(0.0))
}

/// The seed corpus of `target`, sorted by file name.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read seed"))
        .collect();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}

/// Runs checks on a thread of its own with a small stack: a stack overflow there
/// aborts the test binary, which is a failure as loud as it should be.
struct Worker {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Result<(), String>>,
    runs: std::cell::Cell<u64>,
}

impl Worker {
    fn new(check: Check, stack: usize) -> Worker {
        let (tx, inputs) = mpsc::channel::<Vec<u8>>();
        let (results, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("fuzz-worker".into())
            .stack_size(stack)
            .spawn(move || {
                for input in inputs {
                    let r = std::panic::catch_unwind(|| check(&input))
                        .unwrap_or_else(|p| Err(panic_text(&p)));
                    if results.send(r).is_err() {
                        return;
                    }
                }
            })
            .expect("start the fuzz worker");
        Worker {
            tx,
            rx,
            runs: Default::default(),
        }
    }

    fn check(&self, input: &[u8]) -> Result<(), String> {
        self.runs.set(self.runs.get() + 1);
        self.tx.send(input.to_vec()).map_err(|e| e.to_string())?;
        self.rx.recv().map_err(|e| e.to_string())?
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    let text = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    format!("panic: {text}")
}

/// One mutation of a seed.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Repeat(usize, usize, usize),
    Splice(usize, usize),
}

fn apply(seeds: &[Vec<u8>], seed: usize, muts: &[Mutation]) -> Vec<u8> {
    let mut v = seeds[seed % seeds.len()].clone();
    for m in muts {
        let at = |i: usize, v: &Vec<u8>| if v.is_empty() { 0 } else { i % (v.len() + 1) };
        match m {
            Mutation::Flip(i, x) if !v.is_empty() => {
                let i = i % v.len();
                v[i] ^= x.max(&1);
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, bytes) => {
                let i = at(*i, &v);
                v.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i, &v);
                let end = (i + n % 32).min(v.len());
                v.drain(i..end);
            }
            Mutation::Repeat(i, n, times) => {
                let i = at(*i, &v);
                let end = (i + 1 + n % 64).min(v.len());
                let piece = v[i..end].to_vec();
                for _ in 0..times % 200 {
                    v.splice(end..end, piece.iter().copied());
                }
            }
            Mutation::Splice(other, i) => {
                let o = &seeds[other % seeds.len()];
                let i = at(*i, &v);
                v.splice(i..i, o.iter().copied());
            }
        }
    }
    v
}

fn mutation(dictionary: &'static [&'static [u8]]) -> impl Strategy<Value = Mutation> {
    let word = if dictionary.is_empty() {
        prop::collection::vec(any::<u8>(), 1..8).boxed()
    } else {
        prop_oneof![
            prop::sample::select(dictionary).prop_map(|w| w.to_vec()),
            prop::collection::vec(any::<u8>(), 1..8),
        ]
        .boxed()
    };
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), word).prop_map(|(i, w)| Mutation::Insert(i, w)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(i, n, t)| Mutation::Repeat(i, n, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(o, i)| Mutation::Splice(o, i)),
    ]
}

/// A fuzz target: `check` on the corpus, then on mutated seeds (with words from
/// `dictionary`) and on inputs from `generate`, until the time budget is spent.
pub fn fuzz(
    target: &str,
    stack: usize,
    dictionary: &'static [&'static [u8]],
    generate: BoxedStrategy<Vec<u8>>,
    check: Check,
) {
    let worker = Worker::new(check, stack);
    let seeds = corpus(target);
    for (i, seed) in seeds.iter().enumerate() {
        if let Err(e) = worker.check(seed) {
            panic!(
                "{target}: seed {i} fails: {e}\ninput: {:?}",
                String::from_utf8_lossy(seed)
            );
        }
    }
    let seeds = std::sync::Arc::new(seeds);
    let mutated = {
        let seeds = seeds.clone();
        (
            any::<usize>(),
            prop::collection::vec(mutation(dictionary), 0..6),
        )
            .prop_map(move |(seed, muts)| apply(&seeds, seed, &muts))
    };
    let strategy = prop_oneof![mutated, generate];
    // A runner runs its `cases` once; each round gets a fresh one, seeded from the
    // base seed and the round number so that a failing round can be replayed.
    let base: u64 = std::env::var("WEBRTC_SIGNALING_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(Instant::now())
        });
    let (started, budget) = (Instant::now(), budget());
    for round in 0u64.. {
        let mut runner = TestRunner::new(Config {
            cases: 512,
            failure_persistence: None,
            max_shrink_iters: 4096,
            rng_seed: RngSeed::Fixed(base.wrapping_add(round)),
            ..Config::default()
        });
        let result = runner.run(&strategy, |input| {
            worker.check(&input).map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("{target}-{}", input.len()));
                let _ = std::fs::write(&file, &input);
                panic!(
                    "{target} (WEBRTC_SIGNALING_FUZZ_SEED={base}, round {round}): {why}\nminimal input ({} bytes, saved as {}): {:?}",
                    input.len(),
                    file.display(),
                    String::from_utf8_lossy(&input)
                );
            }
            Err(e) => panic!("{target}: {e}"),
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    println!(
        "{target}: {} inputs ({} seeds, the rest generated) in {:.1} s, no failure",
        worker.runs.get(),
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}
