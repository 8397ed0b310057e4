//! The run's trace: every ground-truth event folded into one hash, so two
//! runs of the same seed can be compared byte for byte; with capture on,
//! the events themselves, so the first divergence can be named.

use std::sync::{Arc, Mutex};

/// Most events kept when capturing.
pub const CAPTURE_MAX: usize = 2_000_000;

/// A rolling hash of events, optionally with their descriptions.
#[derive(Debug, Default)]
pub struct Trace {
    /// The rolling hash.
    pub hash: u64,
    /// Events folded in.
    pub events: u64,
    /// Event descriptions, when capturing.
    pub captured: Option<Vec<String>>,
}

/// A shared trace.
pub type SharedTrace = Arc<Mutex<Trace>>;

impl Trace {
    /// A trace that keeps event descriptions if `capture`.
    pub fn new(capture: bool) -> Self {
        Self {
            hash: 0,
            events: 0,
            captured: capture.then(Vec::new),
        }
    }

    /// Fold in one event: `detail` is hashed as it is formatted, so an
    /// event costs no allocation unless the trace is being captured.
    pub fn event(&mut self, at_ms: u64, what: &str, detail: impl std::fmt::Display) {
        let mut h = HashWriter(xxhash_rust::xxh3::Xxh3::new());
        std::fmt::write(&mut h, format_args!("{detail}")).expect("hashing cannot fail");
        self.fold(at_ms, what, h.0.digest(), || detail.to_string());
    }

    /// Fold in one queue event about a message: the hot path, one hash
    /// call over the body.
    pub fn message(&mut self, at_ms: u64, what: &str, queue: &str, body: &str, n: u32) {
        let seed = xxhash_rust::xxh3::xxh3_64(queue.as_bytes()) ^ u64::from(n);
        let detail_hash = xxhash_rust::xxh3::xxh3_64_with_seed(body.as_bytes(), seed);
        self.fold(at_ms, what, detail_hash, || format!("{queue} {n} {body}"));
    }

    fn fold(&mut self, at_ms: u64, what: &str, detail_hash: u64, describe: impl FnOnce() -> String) {
        let mut line = [0u8; 24];
        line[..8].copy_from_slice(&at_ms.to_le_bytes());
        line[8..16].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(what.as_bytes()).to_le_bytes());
        line[16..].copy_from_slice(&detail_hash.to_le_bytes());
        self.hash = xxhash_rust::xxh3::xxh3_64_with_seed(&line, self.hash);
        self.events += 1;
        if let Some(c) = self.captured.as_mut() {
            if c.len() < CAPTURE_MAX {
                let short: String = describe().chars().take(120).collect();
                c.push(format!("{at_ms} {what} {detail_hash:016x} {short}"));
            }
        }
    }
}

struct HashWriter(xxhash_rust::xxh3::Xxh3);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The first event at which two captured traces differ, described.
pub fn first_divergence(a: &[String], b: &[String]) -> Option<String> {
    let n = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if n == a.len() && n == b.len() {
        return None;
    }
    let show = |v: &[String]| v.get(n).cloned().unwrap_or_else(|| "(end of trace)".into());
    Some(format!("event {n}: first run: {}; second run: {}", show(a), show(b)))
}
