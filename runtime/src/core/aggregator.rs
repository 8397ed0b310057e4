//! The aggregator: gather results into segments, store each segment
//! create-only, and only then delete its result messages.
//!
//! A crash before the upload loses nothing (the messages reappear once
//! their visibility lapses); a crash between the upload and the deletes
//! makes duplicates, which reconciliation detects by key and run id.
//!
//! Receives run continuously (`receivers` of them, each replaced as soon as
//! it returns) and the deletes of a stored segment's messages run alongside
//! them, so neither a slow receive nor deleting holds up gathering.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::core::quarantine::quarantine;
use crate::core::retry::{put_if_absent_retrying, CallError, Calls};
use crate::core::seams::BoxFuture;
use crate::core::{segment, BlobStore, Clock, Policy, Queue, Received, ResultView, Shutdown};

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

/// Deletes in flight; on failure they hand back their handles.
type Deleting<'a> = BoxFuture<'a, Result<usize, (CallError, Vec<String>)>>;

/// The segment being filled.
#[derive(Default)]
struct Buffer {
    bodies: Vec<String>,
    handles: Vec<String>,
    /// Handles of messages whose records are in a stored segment, to
    /// delete alongside the next receives.
    stored: Vec<String>,
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
        let receive = |wait_ms: u64| {
            calls.call(move || {
                self.results
                    .receive(self.results.batch_max(), self.config.visibility_ms, wait_ms)
            })
        };
        // Receives run continuously, each replaced as it returns, and the
        // deletes of the last stored segment run alongside them.
        let mut receiving = FuturesUnordered::new();
        let mut deleting: Option<Deleting<'_>> = None;
        loop {
            let stopping = crate::core::is_stopping(&shutdown);
            if !stopping {
                while receiving.len() < self.config.receivers.max(1) {
                    receiving.push(receive(self.wait_ms(&buf)));
                }
            }
            // Once stopping, stored handles wait for the deletes on the way
            // out, which do not heed the stop.
            if deleting.is_none() && !buf.stored.is_empty() && !stopping {
                let handles = std::mem::take(&mut buf.stored);
                let calls = &calls;
                deleting = Some(Box::pin(async move {
                    calls.delete_all(&handles).await.map_err(|e| (e, handles))
                }));
            }
            if receiving.is_empty() && deleting.is_none() {
                break;
            }
            tokio::select! {
                biased;
                deleted = async { deleting.as_mut().expect("guarded").await }, if deleting.is_some() => {
                    deleting = None;
                    match deleted {
                        Ok(_) => {}
                        // Left for the deletes on the way out.
                        Err((CallError::Stopped, mut handles)) => buf.stored.append(&mut handles),
                        Err((e, _)) => return Err(e),
                    }
                }
                Some(received) = receiving.next() => {
                    let msgs = match received {
                        Ok(msgs) => msgs,
                        Err(CallError::Stopped) => continue,
                        Err(e) => return Err(e),
                    };
                    self.take(&mut buf, msgs, &calls).await?;
                    self.maintain(&mut buf, &calls).await?;
                }
            }
        }
        // Storing what is held continues through the stop.
        let (_tx, never) = tokio::sync::watch::channel(false);
        let calls = Calls {
            shutdown: &never,
            ..calls
        };
        self.flush(&mut buf, &calls).await?;
        calls.delete_all(&buf.stored).await?;
        Ok(())
    }

    /// Buffer the results among `msgs`; quarantine anything else.
    async fn take(&self, buf: &mut Buffer, msgs: Vec<Received>, calls: &Calls<'_>) -> Result<(), CallError> {
        let mut early_deletes = Vec::new();
        for msg in msgs {
            // Only the planted silent-dedupe bug remembers keys (for the
            // life of this incarnation); the real aggregator keeps every record.
            let first = ResultView::decode(&msg.body).map(|view| {
                self.config.policy.keeps_duplicates() || buf.seen.insert((view.sweep.into_owned(), view.index))
            });
            match first {
                Ok(first) => self.accept(buf, first, msg.body, msg.handle, &mut early_deletes),
                Err(reason) => {
                    quarantine(
                        &*self.store,
                        &*self.clock,
                        &*self.results,
                        &msg,
                        &reason,
                        self.config.policy,
                        calls.shutdown,
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
        Ok(())
    }

    fn wait_ms(&self, buf: &Buffer) -> u64 {
        if buf.bodies.is_empty() {
            return self.config.wait_ms;
        }
        let deadline = buf.opened_ms + self.config.segment_age_max_ms;
        deadline.saturating_sub(self.clock.mono_ms()).min(self.config.wait_ms)
    }

    fn accept(&self, buf: &mut Buffer, first: bool, body: String, handle: String, early: &mut Vec<String>) {
        if buf.bodies.is_empty() {
            buf.opened_ms = self.clock.mono_ms();
            buf.beat_ms = buf.opened_ms;
        }
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
        // Only now that the segment is stored may its messages go: they
        // are deleted alongside the next receives, or at once on the way out.
        buf.stored.append(&mut buf.handles);
        buf.bodies.clear();
        self.stats.buffered.store(0, Ordering::Relaxed);
        Ok(())
    }
}
