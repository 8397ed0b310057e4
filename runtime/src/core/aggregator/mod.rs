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
//!
//! The decisions live in [`machine`] (a [`machine::Gatherer`]); this module
//! is the executor around it: it keeps the receives and the deletes in
//! flight and performs the machine's actions through [`Calls`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::core::quarantine::quarantine;
use crate::core::retry::{put_if_absent_retrying, CallError, Calls};
use crate::core::seams::BoxFuture;
use crate::core::{BlobStore, Clock, Policy, Queue, Received, Shutdown};

pub mod machine;

use machine::{Action, Gatherer};

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
    /// Segment ages, heartbeat timing and backoff.
    pub clock: Arc<dyn Clock>,
    /// Segment limits, visibility, receives in flight and the protocol
    /// to follow.
    pub config: AggregatorConfig,
    /// Records stored and held, shared with whoever draws progress.
    pub stats: Arc<AggregatorStats>,
}

/// Deletes in flight; on failure they hand back their handles.
type Deleting<'a> = BoxFuture<'a, Result<usize, (CallError, Vec<String>)>>;

impl Aggregator {
    /// Gather and store results until `shutdown` says stop, then store what
    /// is held and return.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), CallError> {
        let mut gatherer = Gatherer::new(self.config.clone());
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
        let mut stopping = shutdown.clone();
        loop {
            if crate::core::is_stopping(&shutdown) {
                gatherer.stop();
            } else {
                while receiving.len() < self.config.receivers.max(1) {
                    receiving.push(receive(gatherer.wait_ms(self.clock.mono_ms())));
                }
            }
            if deleting.is_none() {
                if let Some(handles) = gatherer.next_deletes() {
                    let calls = &calls;
                    deleting = Some(Box::pin(async move {
                        calls.delete_all(&handles).await.map_err(|e| (e, handles))
                    }));
                }
            }
            if receiving.is_empty() && deleting.is_none() {
                break;
            }
            tokio::select! {
                biased;
                deleted = async { deleting.as_mut().expect("guarded").await }, if deleting.is_some() => {
                    deleting = None;
                    match deleted {
                        Ok(_) => gatherer.deleted(),
                        Err((CallError::Stopped, handles)) => gatherer.delete_stopped(handles),
                        Err((e, _)) => return Err(e),
                    }
                }
                Some(received) = receiving.next() => {
                    let msgs = match received {
                        Ok(msgs) => msgs,
                        Err(CallError::Stopped) => continue,
                        Err(e) => return Err(e),
                    };
                    self.take(&mut gatherer, msgs, &calls).await?;
                }
                // A stop ends the long polls at once (each may last 20 s);
                // the loop's top then stops the gatherer. Results an
                // abandoned receive took, if any, become visible again after
                // their visibility timeout: nothing is lost.
                () = crate::core::stopped(&mut stopping), if !receiving.is_empty() => receiving.clear(),
            }
        }
        // Storing what is held, and deleting what is stored, continue
        // through the stop.
        let (_tx, never) = tokio::sync::watch::channel(false);
        let calls = Calls {
            shutdown: &never,
            ..calls
        };
        let actions = gatherer.finish();
        self.perform(&mut gatherer, actions, &calls).await
    }

    /// Hand received messages to the gatherer, then let it look at the
    /// time (after the receipt's own calls, as a segment may have aged).
    async fn take(&self, gatherer: &mut Gatherer, msgs: Vec<Received>, calls: &Calls<'_>) -> Result<(), CallError> {
        let actions = gatherer.received(msgs, self.clock.mono_ms());
        self.perform(gatherer, actions, calls).await?;
        let actions = gatherer.tick(self.clock.mono_ms());
        self.perform(gatherer, actions, calls).await
    }

    /// Perform `actions` in order, and those that stored segments lead to.
    async fn perform(&self, gatherer: &mut Gatherer, actions: Vec<Action>, calls: &Calls<'_>) -> Result<(), CallError> {
        let mut todo = VecDeque::from(actions);
        while let Some(action) = todo.pop_front() {
            match action {
                Action::Quarantine { msg, reason } => {
                    let (store, clock, policy) = (&*self.store, &*self.clock, self.config.policy);
                    quarantine(store, clock, &*self.results, &msg, &reason, policy, calls.shutdown).await?;
                    self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                }
                Action::Delete(handles) => {
                    calls.delete_all(&handles).await?;
                }
                Action::Store { key, bytes, records } => {
                    put_if_absent_retrying(&*self.store, &*self.clock, calls.shutdown, &key, &bytes).await?;
                    self.stats.segments.fetch_add(1, Ordering::Relaxed);
                    self.stats.stored.fetch_add(records as u64, Ordering::Relaxed);
                    todo.extend(gatherer.stored());
                }
                Action::Extend { handles, visibility_ms } => {
                    calls.change_visibility_all(&handles, visibility_ms).await?;
                }
            }
        }
        let buffered = gatherer.buffered() as u64;
        self.stats.buffered.store(buffered, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use super::*;
    use crate::adapters::local::{DirStore, QueueConfig, SqliteQueues, SystemClock};
    use crate::core::{PutOutcome, StoreError};

    fn body(index: u64) -> String {
        machine::tests::body(index, index)
    }

    /// A store whose first write fails with a transient error.
    struct FlakyStore {
        inner: DirStore,
        failed: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl BlobStore for FlakyStore {
        async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
            if !self.failed.swap(true, Relaxed) {
                return Err(StoreError::Retryable {
                    code: "SlowDown".into(),
                    message: "try again".into(),
                });
            }
            self.inner.put_if_absent(key, bytes).await
        }

        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key).await
        }

        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list(prefix).await
        }
    }

    /// Stopped while results wait in its open segment (the segment is far
    /// from full or old), the aggregator stores them before it returns,
    /// retrying the store's transient errors through the stop, and only
    /// then deletes their messages: what `tally aggregate` does on SIGTERM.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_stores_the_open_segment_then_deletes_its_messages() {
        let dir = crate::scratch::Scratch::new("aggregate");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let queues = SqliteQueues::open(std::path::Path::new(":memory:"), Arc::clone(&clock)).unwrap();
        let results = Arc::new(queues.queue("results", QueueConfig::default()));
        results.ensure().await.unwrap();
        results.send_batch(&[body(0), body(1), body(2)]).await.unwrap();
        let store = Arc::new(FlakyStore {
            inner: DirStore::open(dir.path("store")).unwrap(),
            failed: std::sync::atomic::AtomicBool::new(false),
        });
        let stats = Arc::new(AggregatorStats::default());
        let aggregator = Aggregator {
            results: Arc::clone(&results) as Arc<dyn Queue>,
            store: Arc::clone(&store) as Arc<dyn BlobStore>,
            clock,
            config: AggregatorConfig {
                visibility_ms: 600_000,
                wait_ms: 50,
                segment_age_max_ms: 600_000,
                receivers: 2,
                ..AggregatorConfig::new("a")
            },
            stats: Arc::clone(&stats),
        };
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(async move { aggregator.run(shutdown).await });
        for _ in 0..250 {
            if stats.buffered.load(Relaxed) == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stats.buffered.load(Relaxed), 3, "the aggregator never held the results");
        assert_eq!(stats.segments.load(Relaxed), 0);
        stop.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), running).await;
        let segments = store.list(crate::core::segment::PREFIX).await.unwrap();
        let drained = results.is_drained().await.unwrap();
        drop(dir);
        ended.expect("the aggregator did not stop within 5 s").unwrap().unwrap();
        assert_eq!(
            (stats.stored.load(Relaxed), segments.len()),
            (3, 1),
            "the held results were not stored"
        );
        assert!(drained, "the stored results' messages were not deleted");
    }
}
