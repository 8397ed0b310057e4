//! The worker: take jobs, run them, deliver results, and only then delete
//! the jobs.
//!
//! Rules, in order of importance:
//! 1. A job message is deleted only after the results queue acknowledged
//!    its result. A crash at any point leaves the job visible again later.
//! 2. While a job runs, the visibility of every held message is extended
//!    (heartbeat), so a long job is not handed to a second worker.
//! 3. A job received more than `max_attempts` times is not run again: a
//!    `gave_up` result is sent for it, so nothing is retried forever.
//! 4. A message that is not a job of a known sweep is quarantined in the
//!    blob store before it is deleted, never dropped.
//!
//! The decisions live in [`machine`], one [`machine::Batch`] per received
//! batch; this module is the executor around it: it looks up manifests,
//! runs experiments under one heartbeat timer per batch, and performs the
//! machine's actions through [`Calls`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{debug, warn};

use crate::core::manifest::ManifestCache;
use crate::core::message::FORMAT_VERSION;
use crate::core::quarantine::quarantine;
use crate::core::retry::{CallError, Calls};
use crate::core::seams::BoxFuture;
use crate::core::{
    BlobStore, Clock, JobMessage, Outcome, Policy, Queue, Received, ResultMessage, ResultStatus, Shutdown,
};

pub mod machine;

pub use machine::{decide, Decision};
use machine::{Action, Batch, Incoming, Job, Limits};

/// How a worker behaves.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Unique for this worker incarnation; prefixes its run ids.
    pub id: String,
    /// Jobs to take per receive (at most the queue's batch size). Use 1
    /// for long jobs.
    pub prefetch: usize,
    /// Visibility timeout given to received jobs and renewed by heartbeats.
    pub visibility_ms: u64,
    /// Long-poll wait per receive.
    pub wait_ms: u64,
    /// Deliver pending results at least this often.
    pub result_flush_ms: u64,
    /// Which protocol to follow.
    pub policy: Policy,
}

impl WorkerConfig {
    /// Defaults for a worker called `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            prefetch: 10,
            visibility_ms: 60_000,
            wait_ms: 1_000,
            result_flush_ms: 1_000,
            policy: Policy::Real,
        }
    }
}

/// Counters a worker keeps, for progress and tests.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Experiments started.
    pub runs: AtomicU64,
    /// Results acknowledged by the results queue.
    pub results_sent: AtomicU64,
    /// Messages moved to quarantine.
    pub quarantined: AtomicU64,
    /// Jobs recorded as given up.
    pub gave_up: AtomicU64,
    /// Runs that failed or timed out (given-up jobs not included).
    pub failed: AtomicU64,
}

/// Everything a worker talks to.
pub struct Worker {
    /// The work queue.
    pub jobs: Arc<dyn Queue>,
    /// The results queue.
    pub results: Arc<dyn Queue>,
    /// The blob store (manifests, quarantine).
    pub store: Arc<dyn BlobStore>,
    /// Heartbeat timing, result-flush deadlines, backoff, and the
    /// `started_ms` of each result.
    pub clock: Arc<dyn Clock>,
    /// Sweeps and their experiments.
    pub manifests: Arc<ManifestCache>,
    /// Batch sizes, visibility, waits and the protocol to follow.
    pub config: WorkerConfig,
    /// Runs, results sent, quarantined and given-up jobs, shared with
    /// whoever draws progress.
    pub stats: Arc<WorkerStats>,
}

impl Worker {
    fn calls<'a>(&'a self, queue: &'a dyn Queue, shutdown: &'a Shutdown) -> Calls<'a> {
        Calls {
            queue,
            clock: &*self.clock,
            policy: self.config.policy,
            shutdown,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            batch_max: self.results.batch_max(),
            result_flush_ms: self.config.result_flush_ms,
            visibility_ms: self.config.visibility_ms,
            policy: self.config.policy,
        }
    }

    /// Take and run jobs until `shutdown` says stop. `slot` numbers this
    /// loop within the worker, so several can share one config.
    pub async fn run(&self, slot: usize, shutdown: Shutdown) -> Result<(), CallError> {
        let mut seq: u64 = 0;
        let jobs = self.calls(&*self.jobs, &shutdown);
        let mut stopping = shutdown.clone();
        while !crate::core::is_stopping(&shutdown) {
            let receive = || {
                self.jobs
                    .receive(self.config.prefetch, self.config.visibility_ms, self.config.wait_ms)
            };
            // A stop ends a long poll at once (it may last 20 s). Jobs the
            // abandoned receive took, if any, become visible again after
            // their visibility timeout: nothing is lost.
            let received = tokio::select! {
                biased;
                received = jobs.call(receive) => received,
                () = crate::core::stopped(&mut stopping) => break,
            };
            let msgs = match received {
                Ok(msgs) => msgs,
                Err(CallError::Stopped) => break,
                Err(e) => return Err(e),
            };
            if msgs.is_empty() {
                continue;
            }
            match self.handle_batch(slot, &mut seq, msgs, &shutdown).await {
                Ok(()) | Err(CallError::Stopped) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Look up each message's sweep, let a [`Batch`] decide what to do with
    /// the messages, and carry it out.
    async fn handle_batch(
        &self,
        slot: usize,
        seq: &mut u64,
        msgs: Vec<Received>,
        shutdown: &Shutdown,
    ) -> Result<(), CallError> {
        let mut incoming = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let job = JobMessage::decode(&msg.body);
            let loaded = match &job {
                Ok(job) => {
                    self.manifests
                        .get(&*self.store, &*self.clock, shutdown, &job.sweep)
                        .await?
                }
                _ => None,
            };
            let cancelled = match (&loaded, &job) {
                (Some(_), Ok(job)) => {
                    self.manifests
                        .cancelled(&*self.store, &*self.clock, shutdown, &job.sweep)
                        .await?
                }
                _ => false,
            };
            let limits = loaded.map(|l| (l.manifest.submitted, l.manifest.sweep.max_attempts));
            incoming.push(Incoming {
                msg,
                job,
                limits,
                cancelled,
            });
        }
        let (batch, actions) = Batch::received(self.limits(), incoming);
        let mut first = None;
        for action in actions {
            first = self.perform(action, shutdown).await?.or(first);
        }
        self.run_batch(slot, seq, batch, first, shutdown).await
    }

    /// Run the batch's jobs one after another under one heartbeat timer,
    /// and carry out what each finished (or abandoned) job leads to.
    async fn run_batch(
        &self,
        slot: usize,
        seq: &mut u64,
        mut batch: Batch,
        mut next: Option<Job>,
        shutdown: &Shutdown,
    ) -> Result<(), CallError> {
        // Deliveries, their deletes and handbacks continue through a stop:
        // a result in hand is not dropped.
        let (_tx, never) = tokio::sync::watch::channel(false);
        let mut beat = self.clock.sleep(self.beat_ms());
        while let Some(job) = next.take() {
            let actions = if crate::core::is_stopping(shutdown) {
                batch.stopping()
            } else {
                *seq += 1;
                let run_id = format!("{}.{slot}-{seq}", self.config.id);
                match self.run_one(&job, run_id, &batch, &mut beat, shutdown).await? {
                    Some(result) => batch.finished(&result, self.clock.mono_ms()),
                    None => batch.stopping(),
                }
            };
            next = self.perform_all(&mut batch, actions, &never).await?;
        }
        Ok(())
    }

    /// Perform `actions` and those that acknowledged sends lead to; returns
    /// the job to start next, if any.
    async fn perform_all(
        &self,
        batch: &mut Batch,
        actions: Vec<Action>,
        shutdown: &Shutdown,
    ) -> Result<Option<Job>, CallError> {
        let mut todo = std::collections::VecDeque::from(actions);
        let mut next = None;
        while let Some(action) = todo.pop_front() {
            let sent = matches!(action, Action::Send(_));
            next = self.perform(action, shutdown).await?.or(next);
            if sent {
                todo.extend(batch.acknowledged());
            }
        }
        Ok(next)
    }

    /// Perform one action; a `Run` is handed back to be started.
    async fn perform(&self, action: Action, shutdown: &Shutdown) -> Result<Option<Job>, CallError> {
        match action {
            Action::Run(job) => return Ok(Some(job)),
            Action::Quarantine { msg, reason } => {
                let (store, clock, policy) = (&*self.store, &*self.clock, self.config.policy);
                quarantine(store, clock, &*self.jobs, &msg, &reason, policy, shutdown).await?;
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
            }
            Action::Send(bodies) => {
                self.calls(&*self.results, shutdown).send_all(&bodies).await?;
                let sent = bodies.len() as u64;
                self.stats.results_sent.fetch_add(sent, Ordering::Relaxed);
            }
            Action::Delete(handles) => {
                let refused = self.calls(&*self.jobs, shutdown).delete_all(&handles).await?;
                if refused > 0 {
                    warn!(worker = %self.config.id, refused, "job deletes refused (stale receipt): those jobs will be seen again");
                }
            }
            Action::Extend { handles, visibility_ms } => {
                let jobs = self.calls(&*self.jobs, shutdown);
                let refused = jobs.change_visibility_all(&handles, visibility_ms).await?;
                if refused > 0 {
                    debug!(worker = %self.config.id, refused, "heartbeat refused: a job may run twice");
                }
            }
            Action::Release(handles) => {
                self.calls(&*self.jobs, shutdown)
                    .change_visibility_all(&handles, 0)
                    .await?;
            }
        }
        Ok(None)
    }

    /// Run one job while heartbeating the messages `batch` holds (its own
    /// among them).
    /// Returns `None` if a stop was requested mid-run (the run is abandoned).
    async fn run_one(
        &self,
        held: &Job,
        run_id: String,
        batch: &Batch,
        beat: &mut BoxFuture<'static, ()>,
        shutdown: &Shutdown,
    ) -> Result<Option<ResultMessage>, CallError> {
        let started_ms = self.clock.wall_ms();
        let start_mono = self.clock.mono_ms();
        let outcome = if held.give_up {
            self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
            Outcome {
                status: ResultStatus::GaveUp,
                exit_code: None,
                metrics: None,
                stdout: None,
                stderr_tail: format!("received {} times without a result", held.receive_count),
            }
        } else {
            let loaded = self
                .manifests
                .get(&*self.store, &*self.clock, shutdown, &held.job.sweep)
                .await?;
            let loaded = loaded.expect("held jobs have a manifest");
            let spec = loaded.manifest.sweep.job(&held.job.sweep, held.job.index);
            self.stats.runs.fetch_add(1, Ordering::Relaxed);
            let run = loaded.experiment.run(&spec);
            match self.with_heartbeat(run, batch, beat, shutdown).await? {
                Some(outcome) => {
                    if outcome.status != ResultStatus::Ok {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome
                }
                None => return Ok(None),
            }
        };
        Ok(Some(ResultMessage {
            tally: FORMAT_VERSION,
            sweep: held.job.sweep.clone(),
            index: held.job.index,
            attempt: held.job.attempt,
            receive_count: held.receive_count,
            run_id,
            worker: self.config.id.clone(),
            started_ms,
            duration_ms: self.clock.mono_ms().saturating_sub(start_mono),
            outcome,
        }))
    }

    /// The planted abandon-lost-lease bug: whether the running job's
    /// handle went stale (then its copy is deleted, trusting a stale handle
    /// to delete nothing).
    async fn lease_lost(&self, batch: &Batch) -> bool {
        let Some(handle) = batch.running_handle() else {
            return false;
        };
        let handles = [handle.to_owned()];
        let stale = match self
            .jobs
            .change_visibility_batch(&handles, self.config.visibility_ms)
            .await
        {
            Ok(statuses) => statuses
                .iter()
                .any(|s| s.as_ref().is_err_and(|e| e.code.contains("ReceiptHandle"))),
            Err(_) => false,
        };
        if stale {
            let _ = self.jobs.delete_batch(&handles).await;
        }
        stale
    }

    /// How often held messages are extended: a third of their visibility.
    fn beat_ms(&self) -> u64 {
        (self.config.visibility_ms / 3).max(1)
    }

    /// Poll `work` to completion, extending the messages `batch` holds
    /// whenever `beat` fires (then setting it again). The beat belongs to
    /// the whole batch, not to one job: a batch of short jobs that outlasts
    /// the visibility timeout is extended too. `None` if stopped first.
    async fn with_heartbeat<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        batch: &Batch,
        beat: &mut BoxFuture<'static, ()>,
        shutdown: &Shutdown,
    ) -> Result<Option<T>, CallError> {
        let mut stop = shutdown.clone();
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return Ok(Some(out)),
                _ = crate::core::stopped(&mut stop) => return Ok(None),
                _ = beat.as_mut() => {
                    *beat = self.clock.sleep(self.beat_ms());
                    self.perform(batch.beat(), shutdown).await?;
                    if self.config.policy.abandons_lost_lease() && self.lease_lost(batch).await {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::{DirStore, QueueConfig, SqliteQueue, SqliteQueues, SystemClock};
    use crate::core::manifest::{self, Manifest};

    fn received(body: &str, receive_count: u32) -> Received {
        Received {
            body: body.into(),
            handle: "h".into(),
            message_id: "m".into(),
            receive_count,
        }
    }

    #[test]
    fn jobs_are_run_given_up_or_quarantined() {
        let job = JobMessage::new("s", 4, 1);
        let body = job.encode();
        assert_eq!(decide(&received(&body, 1), Some((10, 3))), Decision::Run(job.clone()));
        assert_eq!(decide(&received(&body, 3), Some((10, 3))), Decision::Run(job.clone()));
        assert_eq!(
            decide(&received(&body, 4), Some((10, 3))),
            Decision::GiveUp(job.clone())
        );
        assert!(matches!(
            decide(&received(&body, 1), Some((4, 3))),
            Decision::Quarantine(_)
        ));
        assert!(matches!(decide(&received(&body, 1), None), Decision::Quarantine(_)));
        assert!(matches!(
            decide(&received("garbage", 1), Some((10, 3))),
            Decision::Quarantine(_)
        ));
    }

    /// A worker over in-memory queues and a store in a scratch directory
    /// (removed when dropped), with a published one-job synthetic sweep
    /// whose job sleeps `sleep_ms`, and `copies` copies of that job queued.
    struct Rig {
        worker: Arc<Worker>,
        results: Arc<SqliteQueue>,
        _dir: crate::scratch::Scratch,
    }

    impl Rig {
        async fn new(name: &str, sleep_ms: u64, copies: usize, config: WorkerConfig) -> Rig {
            let dir = crate::scratch::Scratch::new(&format!("worker-{name}"));
            let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
            let queues = SqliteQueues::open(std::path::Path::new(":memory:"), Arc::clone(&clock)).unwrap();
            let (jobs, results) = (
                Arc::new(queues.queue("jobs", QueueConfig::default())),
                Arc::new(queues.queue("results", QueueConfig::default())),
            );
            let store: Arc<dyn BlobStore> = Arc::new(DirStore::open(dir.path("store")).unwrap());
            let text =
                format!("name = \"{name}\"\nruns = 1\n[experiment]\nbuiltin = \"synthetic\"\nsleep_ms = {sleep_ms}\n");
            let sweep: crate::sweep::Sweep = toml::from_str(&text).unwrap();
            let manifest = Manifest {
                id: sweep.id(),
                submitted: 1,
                sweep,
            };
            manifest::publish(&*store, &*clock, &crate::core::never(), &manifest)
                .await
                .unwrap();
            jobs.ensure().await.unwrap();
            results.ensure().await.unwrap();
            let job = JobMessage::new(&manifest.id, 0, 1).encode();
            jobs.send_batch(&vec![job; copies]).await.unwrap();
            let (factory_clock, base) = (Arc::clone(&clock), dir.dir().to_owned());
            let factory = move |s: &crate::sweep::Sweep| {
                crate::experiment::from_sweep(s, base.clone(), Arc::clone(&factory_clock))
            };
            let worker = Arc::new(Worker {
                jobs,
                results: results.clone(),
                store,
                clock,
                manifests: Arc::new(ManifestCache::new(Arc::new(factory))),
                config,
                stats: Arc::new(WorkerStats::default()),
            });
            Rig {
                worker,
                results,
                _dir: dir,
            }
        }

        /// Run `loops` worker loops until `want` results are delivered or
        /// `within_ms` passed; then stop them and return the results.
        async fn deliveries(&self, loops: usize, want: usize, within_ms: u64) -> Vec<ResultMessage> {
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let running: Vec<_> = (0..loops)
                .map(|slot| {
                    let (worker, stop) = (Arc::clone(&self.worker), stop.clone());
                    tokio::spawn(async move { worker.run(slot, stop).await })
                })
                .collect();
            let mut delivered = Vec::new();
            let deadline = self.worker.clock.mono_ms() + within_ms;
            while delivered.len() < want && self.worker.clock.mono_ms() < deadline {
                for msg in self.results.receive(10, 60_000, 10).await.unwrap() {
                    delivered.push(ResultMessage::decode(&msg.body).unwrap());
                }
            }
            stop_tx.send(true).unwrap();
            for loop_ in running {
                loop_.await.unwrap().unwrap();
            }
            delivered
        }

        /// Runs, results sent, failed and given-up jobs.
        fn counted(&self) -> [u64; 4] {
            let stats = &self.worker.stats;
            [&stats.runs, &stats.results_sent, &stats.failed, &stats.gave_up].map(|c| c.load(Ordering::Relaxed))
        }
    }

    fn config(visibility_ms: u64) -> WorkerConfig {
        WorkerConfig {
            prefetch: 1,
            visibility_ms,
            wait_ms: 10,
            result_flush_ms: 0,
            ..WorkerConfig::new("w")
        }
    }

    /// Two copies of one job run by one worker loop are two runs, with two
    /// run ids, so reconciliation counts the key's runs right (a duplicate
    /// run, or a conflict between runs, rather than one run seen twice);
    /// and the worker's counters, which progress shows, count them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_run_of_a_worker_loop_has_its_own_run_id() {
        let rig = Rig::new("runids", 0, 2, config(60_000)).await;
        let delivered = rig.deliveries(1, 2, 5_000).await;
        let run_ids: Vec<&str> = delivered.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(run_ids.len(), 2, "both copies ran and delivered within 5 s");
        assert_ne!(run_ids[0], run_ids[1]);
        assert_eq!(rig.counted(), [2, 2, 0, 0], "runs, results sent, failed, given up");
    }

    /// A job that runs for twice its visibility timeout is not handed to a
    /// second worker loop: the heartbeat extends it in time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_outlasts_its_visibility_timeout_runs_once() {
        // A beat every third of a second leaves a busy machine two thirds
        // of a second of slack; a second run would end by 3 s.
        let rig = Rig::new("heartbeat", 2_000, 1, config(1_000)).await;
        let delivered = rig.deliveries(2, 2, 3_500).await;
        assert_eq!(delivered.len(), 1, "{delivered:?}");
        assert_eq!(rig.counted(), [1, 1, 0, 0], "runs, results sent, failed, given up");
    }
}
