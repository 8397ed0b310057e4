//! The submitter: record receipts, then send.
//!
//! The manifest (which defines the submitted keys) is stored create-only
//! before the first job is sent, and each resubmission round is stored
//! before any of its jobs is sent. Progress through a round is kept in a
//! [`SendLog`] after each acknowledged group of batches (four rounds of
//! [`CALLS_IN_FLIGHT`] batches: 1,280 jobs on SQS), so a rerun sends only
//! what was not acknowledged; a group resent after a crash makes
//! duplicates, which reconciliation detects by key. Once every job of the
//! first round is acknowledged, the submitter stores the round's `sent`
//! marker, which the finish-and-resubmit driver waits for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::info;

use crate::core::manifest::{self, Manifest, Round};
use crate::core::retry::{put_if_absent_retrying, CallError, Calls, CALLS_IN_FLIGHT};
use crate::core::{BlobStore, Clock, JobMessage, Policy, PutOutcome, Queue, Shutdown, StoreError};
use crate::sweep::Sweep;

/// Durable progress of the submitter: how many jobs of a round the queue
/// has acknowledged. Implementations write through (a crash keeps what was
/// marked).
pub trait SendLog: Send + Sync {
    /// Jobs of `(sweep, attempt)` acknowledged so far, in send order.
    fn sent(&self, sweep: &str, attempt: u32) -> Result<u64, StoreError>;
    /// Record that the first `count` jobs of `(sweep, attempt)` were acknowledged.
    fn mark_sent(&self, sweep: &str, attempt: u32, count: u64) -> Result<(), StoreError>;
}

/// Counters the submitter keeps.
#[derive(Debug, Default)]
pub struct SubmitStats {
    /// Jobs acknowledged by the work queue in this process.
    pub sent: AtomicU64,
}

/// Everything a submitter talks to.
pub struct Submitter {
    /// The work queue.
    pub jobs: Arc<dyn Queue>,
    /// The blob store, where the manifest and round records (the ledger)
    /// are written before any job they name is sent.
    pub store: Arc<dyn BlobStore>,
    /// Backoff between retries.
    pub clock: Arc<dyn Clock>,
    /// How far each round got, so a restarted submitter resends only the
    /// last unacknowledged group.
    pub log: Arc<dyn SendLog>,
    /// Which protocol to follow.
    pub policy: Policy,
    /// Jobs sent, shared with whoever draws progress.
    pub stats: Arc<SubmitStats>,
    /// When set, sending waits while the work queue holds this many jobs
    /// (waiting or in flight), so a queue on a local disk stays the size of
    /// the work in flight, not of the sweep.
    pub window: Option<u64>,
}

impl Submitter {
    /// Publish the sweep's manifest and send every job not yet acknowledged.
    /// Returns the sweep's id.
    pub async fn submit(&self, sweep: &Sweep, shutdown: &Shutdown) -> Result<String, CallError> {
        let id = sweep.id();
        let submitted = sweep.len().expect("a validated sweep has a length");
        let manifest = Manifest {
            id: id.clone(),
            submitted,
            sweep: sweep.clone(),
        };
        manifest::publish(&*self.store, &*self.clock, shutdown, &manifest).await?;
        self.send_round(&id, 1, submitted, |i| i, shutdown).await?;
        // Until this marker is stored, a key not yet sent looks like a lost
        // one: the finish-and-resubmit driver waits for it.
        manifest::mark_all_sent(&*self.store, &*self.clock, shutdown, &id, 1, submitted).await?;
        Ok(id)
    }

    /// Resend `indices` (sorted) of a sweep as a new attempt, recording the
    /// round first. If the previous round was not fully sent, that round is
    /// finished instead and its attempt returned.
    pub async fn resubmit(&self, sweep_id: &str, indices: &[u64], shutdown: &Shutdown) -> Result<u32, CallError> {
        let rounds = manifest::load_rounds(&*self.store, &*self.clock, shutdown, sweep_id).await?;
        if let Some(last) = rounds.last() {
            let len = round_len(last);
            if self.log.sent(sweep_id, last.attempt)? < len {
                let flat = flatten(last);
                self.send_round(sweep_id, last.attempt, len, |i| flat[i as usize], shutdown)
                    .await?;
                return Ok(last.attempt);
            }
        }
        let attempt = rounds.last().map_or(2, |r| r.attempt + 1);
        let round = Round {
            attempt,
            ranges: manifest::to_ranges(indices),
        };
        let bytes = serde_json::to_vec(&round).expect("a round serialises");
        let key = manifest::round_key(sweep_id, attempt);
        if put_if_absent_retrying(&*self.store, &*self.clock, shutdown, &key, &bytes).await?
            == PutOutcome::AlreadyExists
        {
            return Err(CallError::Store(StoreError::Permanent {
                code: "RoundExists".into(),
                message: format!("{key} was written by another submitter; reconcile again"),
            }));
        }
        info!(sweep = sweep_id, attempt, jobs = indices.len(), "resubmitting");
        self.send_round(
            sweep_id,
            attempt,
            indices.len() as u64,
            |i| indices[i as usize],
            shutdown,
        )
        .await?;
        Ok(attempt)
    }

    /// Send positions `sent..len` of a round; `index_at` maps a position to
    /// a job index.
    async fn send_round(
        &self,
        sweep_id: &str,
        attempt: u32,
        len: u64,
        index_at: impl Fn(u64) -> u64,
        shutdown: &Shutdown,
    ) -> Result<(), CallError> {
        let calls = Calls {
            queue: &*self.jobs,
            clock: &*self.clock,
            policy: self.policy,
            shutdown,
        };
        let mut pos = self.log.sent(sweep_id, attempt)?;
        assert!(
            pos <= len,
            "the send log says {pos} jobs of {sweep_id} attempt {attempt} were sent, but the round has {len}"
        );
        // Batches stream out CALLS_IN_FLIGHT at a time; progress is recorded
        // per group of four rounds of them, so the stream drains only once per
        // group, and a crash resends at most one group (duplicates, counted by
        // key: at most 1,280 jobs on SQS).
        let group = (self.jobs.batch_max() * CALLS_IN_FLIGHT * 4) as u64;
        // A window smaller than a group shrinks the group: the queue never
        // holds more than the window.
        let group = self.window.map_or(group, |w| group.min(w).max(1));
        while pos < len {
            if crate::core::is_stopping(shutdown) {
                return Err(CallError::Stopped);
            }
            let end = (pos + group).min(len);
            if let Some(window) = self.window {
                self.wait_for_room(&calls, window, end - pos, shutdown).await?;
            }
            let bodies: Vec<String> = (pos..end)
                .map(|p| JobMessage::new(sweep_id, index_at(p), attempt).encode())
                .collect();
            calls.send_all(&bodies).await?;
            assert!(
                pos < end && end <= len,
                "progress {pos} -> {end} of {len} only grows, within the round"
            );
            self.log.mark_sent(sweep_id, attempt, end)?;
            self.stats.sent.fetch_add(end - pos, Ordering::Relaxed);
            pos = end;
        }
        Ok(())
    }
}

impl Submitter {
    /// Wait until the work queue has room for `count` more jobs within
    /// `window` (an empty queue always has room), or a stop.
    async fn wait_for_room(
        &self,
        calls: &Calls<'_>,
        window: u64,
        count: u64,
        shutdown: &Shutdown,
    ) -> Result<(), CallError> {
        loop {
            let held = calls.call(|| self.jobs.stats()).await?;
            let queued = held.visible + held.in_flight;
            if queued == 0 || queued + count <= window {
                return Ok(());
            }
            if !crate::core::sleep_unless_stopped(&*self.clock, WINDOW_POLL_MS, shutdown).await {
                return Err(CallError::Stopped);
            }
        }
    }
}

/// How often a submitter waiting for room in its window looks again.
const WINDOW_POLL_MS: u64 = 100;

fn round_len(round: &Round) -> u64 {
    round.ranges.iter().map(|(a, b)| b - a + 1).sum()
}

fn flatten(round: &Round) -> Vec<u64> {
    round.ranges.iter().flat_map(|&(a, b)| a..=b).collect()
}

/// A [`SendLog`] in memory, for tests and for runs that need no resume.
#[derive(Default)]
pub struct MemSendLog {
    sent: std::sync::Mutex<std::collections::BTreeMap<(String, u32), u64>>,
}

impl SendLog for MemSendLog {
    fn sent(&self, sweep: &str, attempt: u32) -> Result<u64, StoreError> {
        Ok(*self
            .sent
            .lock()
            .expect("log lock")
            .get(&(sweep.to_owned(), attempt))
            .unwrap_or(&0))
    }

    fn mark_sent(&self, sweep: &str, attempt: u32, count: u64) -> Result<(), StoreError> {
        let before = self
            .sent
            .lock()
            .expect("log lock")
            .insert((sweep.to_owned(), attempt), count);
        assert!(
            before.unwrap_or(0) <= count,
            "the progress of {sweep} attempt {attempt} went back from {before:?} to {count}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::adapters::local::{DirStore, QueueConfig, SqliteQueues, SystemClock};
    use crate::core::{EntryError, QueueError, QueueStats, Received};
    use crate::scratch::Scratch;

    #[test]
    fn the_submit_window_keeps_the_work_queue_no_larger_than_the_window() {
        let dir = Scratch::new("submit-window");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let queues = SqliteQueues::open(&dir.path("q.sqlite"), clock.clone()).expect("queues");
        let jobs = Arc::new(queues.queue("jobs", QueueConfig::default()));
        let (submitter, _) = over(jobs.clone(), &dir, Some(50));
        let sweep = sweep_of(500);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let never = crate::core::never();
        let (most, taken) = rt.block_on(async {
            jobs.ensure().await.expect("a queue");
            let consume = async {
                let (mut most, mut taken) = (0, 0);
                while taken < 500 {
                    let s = jobs.stats().await.expect("stats");
                    most = most.max(s.visible + s.in_flight);
                    let got = jobs.receive(10, 60_000, 0).await.expect("receive");
                    let handles: Vec<String> = got.iter().map(|m| m.handle.clone()).collect();
                    if !handles.is_empty() {
                        jobs.delete_batch(&handles).await.expect("delete");
                    }
                    taken += handles.len() as u64;
                    clock.sleep(2).await;
                }
                (most, taken)
            };
            let both = async { tokio::join!(submitter.submit(&sweep, &never), consume) };
            // It takes about a second; a submitter that stalls fails here.
            let (sent, consumed) = tokio::time::timeout(std::time::Duration::from_secs(20), both)
                .await
                .expect("500 jobs were not sent and taken within 20 s");
            sent.expect("every job is sent");
            consumed
        });
        assert_eq!(taken, 500);
        assert!(most <= 50, "the queue held {most} jobs, more than the window of 50");
        assert!(most > 0);
    }
    /// A work queue that keeps the jobs it is sent and reports, at each
    /// look, the next of `held` (the last one again once they run out), as
    /// if other jobs were waiting or in flight besides.
    #[derive(Default)]
    struct Sink {
        sent: Mutex<Vec<JobMessage>>,
        held: Mutex<VecDeque<QueueStats>>,
        looks: AtomicU64,
    }

    impl Sink {
        fn holding(held: impl IntoIterator<Item = (u64, u64)>) -> Self {
            let held = held
                .into_iter()
                .map(|(visible, in_flight)| QueueStats { visible, in_flight });
            Sink {
                held: Mutex::new(held.collect()),
                ..Sink::default()
            }
        }

        /// The (index, attempt) of every job sent, sorted.
        fn sent(&self) -> Vec<(u64, u32)> {
            let mut sent: Vec<_> = self.sent.lock().unwrap().iter().map(|j| (j.index, j.attempt)).collect();
            sent.sort_unstable();
            sent
        }
    }

    #[async_trait::async_trait]
    impl Queue for Sink {
        fn name(&self) -> &str {
            "jobs"
        }
        async fn ensure(&self) -> Result<(), QueueError> {
            Ok(())
        }
        async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            let jobs = bodies.iter().map(|b| JobMessage::decode(b).expect("a job message"));
            self.sent.lock().unwrap().extend(jobs);
            Ok(vec![Ok(()); bodies.len()])
        }
        async fn receive(&self, _: usize, _: u64, _: u64) -> Result<Vec<Received>, QueueError> {
            unreachable!("a submitter does not receive")
        }
        async fn delete_batch(&self, _: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            unreachable!("a submitter does not delete")
        }
        async fn change_visibility_batch(
            &self,
            _: &[String],
            _: u64,
        ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            unreachable!("a submitter holds no message")
        }
        async fn stats(&self) -> Result<QueueStats, QueueError> {
            self.looks.fetch_add(1, Ordering::SeqCst);
            let mut held = self.held.lock().unwrap();
            let now = if held.len() > 1 {
                held.pop_front()
            } else {
                held.front().copied()
            };
            Ok(now.unwrap_or_default())
        }
    }

    /// A send log that also remembers every mark, in order.
    #[derive(Default)]
    struct MarkLog {
        inner: MemSendLog,
        marks: Mutex<Vec<(u32, u64)>>,
    }

    impl SendLog for MarkLog {
        fn sent(&self, sweep: &str, attempt: u32) -> Result<u64, StoreError> {
            self.inner.sent(sweep, attempt)
        }
        fn mark_sent(&self, sweep: &str, attempt: u32, count: u64) -> Result<(), StoreError> {
            self.marks.lock().unwrap().push((attempt, count));
            self.inner.mark_sent(sweep, attempt, count)
        }
    }

    /// A submitter over `jobs` and a store in `dir`, with `window`.
    fn over(jobs: Arc<dyn Queue>, dir: &Scratch, window: Option<u64>) -> (Submitter, Arc<MarkLog>) {
        let log = Arc::new(MarkLog::default());
        let submitter = Submitter {
            jobs,
            store: Arc::new(DirStore::open(dir.path("store")).expect("store")),
            clock: Arc::new(SystemClock::default()),
            log: log.clone(),
            policy: Policy::Real,
            stats: Arc::new(SubmitStats::default()),
            window,
        };
        (submitter, log)
    }

    fn sweep_of(runs: u64) -> Sweep {
        toml::from_str(&format!(
            "name = \"g\"\nruns = {runs}\n[experiment]\nbuiltin = \"synthetic\"\n"
        ))
        .expect("a sweep")
    }

    /// Progress is marked after each group of four rounds of batches in
    /// flight (1,280 jobs of ten-entry batches), so a crash resends at most
    /// one group; a window far above a group does not stop sending while
    /// the queue holds jobs.
    #[tokio::test]
    async fn progress_is_marked_per_group_of_batches_and_a_wide_window_does_not_wait_for_an_empty_queue() {
        for window in [None, Some(5_000)] {
            let dir = Scratch::new("submit-groups");
            let queue = Arc::new(Sink::holding([(10, 0)]));
            let (submitter, log) = over(queue.clone(), &dir, window);
            let sweep = sweep_of(3_000);
            let never = crate::core::never();
            let submit = submitter.submit(&sweep, &never);
            let id = tokio::time::timeout(std::time::Duration::from_secs(10), submit)
                .await
                .expect("a queue holding 10 jobs leaves room for 1,280 more in a window of 5,000")
                .expect("submitted");
            assert_eq!(id, sweep.id());
            assert_eq!(*log.marks.lock().unwrap(), vec![(1, 1_280), (1, 2_560), (1, 3_000)]);
            assert_eq!(submitter.stats.sent.load(Ordering::Relaxed), 3_000);
            assert_eq!(queue.sent(), (0..3_000).map(|i| (i, 1)).collect::<Vec<_>>());
        }
    }

    /// A resubmission round that a crash cut short is finished (only its
    /// unacknowledged jobs, at its attempt) before a new round begins.
    #[tokio::test]
    async fn an_interrupted_resubmission_is_finished_before_a_new_round_begins() {
        let dir = Scratch::new("submit-resubmit");
        let queue = Arc::new(Sink::default());
        let (submitter, log) = over(queue.clone(), &dir, None);
        let id = sweep_of(30).id();
        let round = Round {
            attempt: 2,
            ranges: vec![(0, 2), (10, 14)],
        };
        let key = manifest::round_key(&id, 2);
        let bytes = serde_json::to_vec(&round).expect("a round serialises");
        submitter.store.put_if_absent(&key, bytes).await.expect("round stored");
        log.mark_sent(&id, 2, 3).expect("marked");
        let never = crate::core::never();

        assert_eq!(submitter.resubmit(&id, &[20], &never).await.expect("finished"), 2);
        assert_eq!(queue.sent(), (10..=14).map(|i| (i, 2)).collect::<Vec<_>>());

        assert_eq!(
            submitter.resubmit(&id, &[20, 21], &never).await.expect("a new round"),
            3
        );
        let rounds = manifest::load_rounds(&*submitter.store, &*submitter.clock, &never, &id).await;
        assert_eq!(
            rounds.expect("rounds").last().map(|r| r.ranges.clone()),
            Some(vec![(20, 21)])
        );
        let sent = queue.sent();
        assert_eq!(sent[sent.len() - 2..], [(20, 3), (21, 3)]);
        assert_eq!(log.marks.lock().unwrap().last(), Some(&(3, 2)));
    }

    /// Jobs in flight count against the window as waiting ones do: the
    /// first group waits until the queue has room for it.
    #[tokio::test]
    async fn jobs_in_flight_count_against_the_window() {
        let dir = Scratch::new("submit-inflight");
        let queue = Arc::new(Sink::holding([(1, 4_000), (1, 4_000), (0, 0)]));
        let (submitter, log) = over(queue.clone(), &dir, Some(5_000));
        let (never, sweep) = (crate::core::never(), sweep_of(3_000));
        let submit = submitter.submit(&sweep, &never);
        tokio::time::timeout(std::time::Duration::from_secs(10), submit)
            .await
            .expect("the queue empties after two looks")
            .expect("submitted");
        // Three looks before the first group, one before each other group.
        assert_eq!(queue.looks.load(Ordering::SeqCst), 5);
        assert_eq!(log.marks.lock().unwrap().last(), Some(&(1, 3_000)));
    }
}
