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

    /// Fold in one event.
    pub fn event(&mut self, at_ms: u64, what: &str, detail: &str) {
        let h = xxhash_rust::xxh3::xxh3_64(detail.as_bytes());
        let line = format!("{at_ms} {what} {h:016x}");
        self.hash = xxhash_rust::xxh3::xxh3_64_with_seed(line.as_bytes(), self.hash);
        self.events += 1;
        if let Some(c) = self.captured.as_mut() {
            if c.len() < CAPTURE_MAX {
                c.push(format!("{line} {}", detail.chars().take(120).collect::<String>()));
            }
        }
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
