//! The aggregator: gather results into segments, store each segment
//! create-only, and only then delete its result messages.
//!
//! A crash before the upload loses nothing (the messages reappear once
//! their visibility lapses); a crash between the upload and the deletes
//! makes duplicates, which reconciliation detects by key and run id.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::core::retry::{put_if_absent_retrying, CallError, Calls};
use crate::core::worker::quarantine;
use crate::core::{segment, BlobStore, Clock, Policy, Queue, ResultMessage, Shutdown};

/// How an aggregator behaves.
#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    /// Names this aggregator incarnation in the segments it writes.
    pub id: String,
    /// Visibility timeout for held result messages.
    pub visibility_ms: u64,
    /// Long-poll wait per receive.
    pub wait_ms: u64,
    /// Store a segment once it holds this many records...
    pub segment_records_max: usize,
    /// ...or once its oldest record is this old.
    pub segment_age_max_ms: u64,
    /// Receives in flight at once (each returns up to a batch).
    pub receivers: usize,
    /// Which protocol to follow.
    pub policy: Policy,
}

impl AggregatorConfig {
    /// Defaults for an aggregator called `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            visibility_ms: 120_000,
            wait_ms: 1_000,
            segment_records_max: 10_000,
            segment_age_max_ms: 2_000,
            receivers: 8,
            policy: Policy::Real,
        }
    }
}

/// Counters an aggregator keeps.
#[derive(Debug, Default)]
pub struct AggregatorStats {
    /// Records stored in segments.
    pub stored: AtomicU64,
    /// Segments stored.
    pub segments: AtomicU64,
    /// Messages moved to quarantine.
    pub quarantined: AtomicU64,
    /// Records held, not yet stored.
    pub buffered: AtomicU64,
}

/// Everything an aggregator talks to.
pub struct Aggregator {
    /// The results queue.
    pub results: Arc<dyn Queue>,
    /// Where segments go.
    pub store: Arc<dyn BlobStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Behaviour.
    pub config: AggregatorConfig,
    /// Counters.
    pub stats: Arc<AggregatorStats>,
}

/// The segment being filled.
#[derive(Default)]
struct Buffer {
    bodies: Vec<String>,
    handles: Vec<String>,
    opened_ms: u64,
    beat_ms: u64,
    seen: BTreeSet<(String, u64)>,
}

impl Aggregator {
    /// Gather and store results until `shutdown` says stop, then store what
    /// is held and return.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), CallError> {
        let mut buf = Buffer::default();
        let calls = Calls {
            queue: &*self.results,
            clock: &*self.clock,
            policy: self.config.policy,
            shutdown: &shutdown,
        };
        while !crate::core::is_stopping(&shutdown) {
            let wait_ms = self.wait_ms(&buf);
            let receives: Vec<_> = (0..self.config.receivers.max(1))
                .map(|_| {
                    calls.call(|| {
                        self.results
                            .receive(self.results.batch_max(), self.config.visibility_ms, wait_ms)
                    })
                })
                .collect();
            let mut msgs = Vec::new();
            let mut stopped = false;
            for received in futures::future::join_all(receives).await {
                match received {
                    Ok(got) => msgs.extend(got),
                    Err(CallError::Stopped) => stopped = true,
                    Err(e) => return Err(e),
                }
            }
            if stopped && msgs.is_empty() {
                break;
            }
            let mut early_deletes = Vec::new();
            for msg in msgs {
                match ResultMessage::decode(&msg.body) {
                    Ok(result) => self.accept(&mut buf, result, msg.body, msg.handle, &mut early_deletes),
                    Err(reason) => {
                        quarantine(
                            &*self.store,
                            &*self.clock,
                            &*self.results,
                            &msg,
                            &reason,
                            self.config.policy,
                            &shutdown,
                        )
                        .await?;
                        self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if !early_deletes.is_empty() {
                calls.delete_all(&early_deletes).await?;
            }
            self.stats.buffered.store(buf.bodies.len() as u64, Ordering::Relaxed);
            self.maintain(&mut buf, &calls).await?;
        }
        // Storing what is held continues through the stop.
        let (_tx, never) = tokio::sync::watch::channel(false);
        let calls = Calls {
            shutdown: &never,
            ..calls
        };
        self.flush(&mut buf, &calls).await
    }

    fn wait_ms(&self, buf: &Buffer) -> u64 {
        if buf.bodies.is_empty() {
            return self.config.wait_ms;
        }
        let deadline = buf.opened_ms + self.config.segment_age_max_ms;
        deadline.saturating_sub(self.clock.mono_ms()).min(self.config.wait_ms)
    }

    fn accept(&self, buf: &mut Buffer, result: ResultMessage, body: String, handle: String, early: &mut Vec<String>) {
        if buf.bodies.is_empty() {
            buf.opened_ms = self.clock.mono_ms();
            buf.beat_ms = buf.opened_ms;
        }
        // Only the planted silent-dedupe bug remembers keys (for the life
        // of this incarnation); the real aggregator keeps every record.
        let first = self.config.policy.keeps_duplicates() || buf.seen.insert((result.sweep, result.index));
        if self.config.policy.aggregator_deletes_first() {
            early.push(handle);
        } else {
            buf.handles.push(handle);
        }
        if first {
            buf.bodies.push(body);
        }
    }

    /// Store the segment when it is full or old; extend held messages when
    /// the segment has been open for a third of their visibility.
    async fn maintain(&self, buf: &mut Buffer, calls: &Calls<'_>) -> Result<(), CallError> {
        let now = self.clock.mono_ms();
        let full = buf.bodies.len() >= self.config.segment_records_max;
        let old = !buf.bodies.is_empty() && now >= buf.opened_ms + self.config.segment_age_max_ms;
        if full || old {
            return self.flush(buf, calls).await;
        }
        if !buf.handles.is_empty() && now >= buf.beat_ms + self.config.visibility_ms / 3 {
            calls
                .change_visibility_all(&buf.handles, self.config.visibility_ms)
                .await?;
            buf.beat_ms = now;
        }
        Ok(())
    }

    async fn flush(&self, buf: &mut Buffer, calls: &Calls<'_>) -> Result<(), CallError> {
        if !buf.bodies.is_empty() {
            let (key, bytes) = segment::encode(&self.config.id, &buf.bodies);
            put_if_absent_retrying(&*self.store, &*self.clock, calls.shutdown, &key, &bytes).await?;
            self.stats.segments.fetch_add(1, Ordering::Relaxed);
            self.stats.stored.fetch_add(buf.bodies.len() as u64, Ordering::Relaxed);
        }
        // Only now that the segment is stored may its messages go.
        calls.delete_all(&buf.handles).await?;
        buf.bodies.clear();
        buf.handles.clear();
        self.stats.buffered.store(0, Ordering::Relaxed);
        Ok(())
    }
}
