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
}

/// Everything a worker talks to.
pub struct Worker {
    /// The work queue.
    pub jobs: Arc<dyn Queue>,
    /// The results queue.
    pub results: Arc<dyn Queue>,
    /// The blob store (manifests, quarantine).
    pub store: Arc<dyn BlobStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Sweeps and their experiments.
    pub manifests: Arc<ManifestCache>,
    /// Behaviour.
    pub config: WorkerConfig,
    /// Counters.
    pub stats: Arc<WorkerStats>,
}

/// A job message this worker holds, with the work decided for it.
struct Held {
    handle: String,
    job: JobMessage,
    receive_count: u32,
    give_up: bool,
}

/// What to do with one received message.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Run it.
    Run(JobMessage),
    /// Record it as given up: it was received too often without a result.
    GiveUp(JobMessage),
    /// Move it to quarantine, for this reason.
    Quarantine(String),
}

/// Decide what to do with a received job message, given the sweep's size
/// and attempt limit (`None` when the sweep has no manifest).
pub fn decide(msg: &Received, sweep: Option<(u64, u32)>) -> Decision {
    decide_decoded(JobMessage::decode(&msg.body), msg.receive_count, sweep)
}

/// [`decide`] for a body already decoded (or not) as `job`.
fn decide_decoded(job: Result<JobMessage, String>, receive_count: u32, sweep: Option<(u64, u32)>) -> Decision {
    let job = match job {
        Ok(job) => job,
        Err(reason) => return Decision::Quarantine(reason),
    };
    match sweep {
        None => Decision::Quarantine(format!("sweep {:?} has no manifest", job.sweep)),
        Some((submitted, _)) if job.index >= submitted => Decision::Quarantine(format!(
            "index {} is outside sweep {:?} of {submitted} jobs",
            job.index, job.sweep
        )),
        Some((_, max_attempts)) if receive_count > max_attempts => Decision::GiveUp(job),
        Some(_) => Decision::Run(job),
    }
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

    /// Take and run jobs until `shutdown` says stop. `slot` numbers this
    /// loop within the worker, so several can share one config.
    pub async fn run(&self, slot: usize, shutdown: Shutdown) -> Result<(), CallError> {
        let mut seq: u64 = 0;
        let jobs = self.calls(&*self.jobs, &shutdown);
        while !crate::core::is_stopping(&shutdown) {
            let receive = || {
                self.jobs
                    .receive(self.config.prefetch, self.config.visibility_ms, self.config.wait_ms)
            };
            let msgs = match jobs.call(receive).await {
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

    async fn handle_batch(
        &self,
        slot: usize,
        seq: &mut u64,
        msgs: Vec<Received>,
        shutdown: &Shutdown,
    ) -> Result<(), CallError> {
        let mut held = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let job = JobMessage::decode(&msg.body);
            let loaded = match &job {
                Ok(job) if !job.sweep.is_empty() => {
                    self.manifests
                        .get(&*self.store, &*self.clock, shutdown, &job.sweep)
                        .await?
                }
                _ => None,
            };
            let limits = loaded.map(|l| (l.manifest.submitted, l.manifest.sweep.max_attempts));
            match decide_decoded(job, msg.receive_count, limits) {
                Decision::Run(job) => held.push(Held {
                    handle: msg.handle,
                    job,
                    receive_count: msg.receive_count,
                    give_up: false,
                }),
                Decision::GiveUp(job) => held.push(Held {
                    handle: msg.handle,
                    job,
                    receive_count: msg.receive_count,
                    give_up: true,
                }),
                Decision::Quarantine(reason) => self.quarantine(&*self.jobs, &msg, &reason, shutdown).await?,
            }
        }
        if self.config.policy.worker_deletes_first() {
            let handles: Vec<String> = held.iter().map(|h| h.handle.clone()).collect();
            self.calls(&*self.jobs, shutdown).delete_all(&handles).await?;
        }
        self.run_held(slot, seq, held, shutdown).await
    }

    /// Run held jobs one after another, heartbeating all held messages and
    /// delivering results in batches.
    async fn run_held(
        &self,
        slot: usize,
        seq: &mut u64,
        mut held: Vec<Held>,
        shutdown: &Shutdown,
    ) -> Result<(), CallError> {
        let mut pending: Vec<(String, ResultMessage)> = Vec::new();
        let mut first_pending_ms = 0;
        let mut beat = self.clock.sleep(self.beat_ms());
        held.reverse();
        while let Some(next) = held.pop() {
            if crate::core::is_stopping(shutdown) {
                held.push(next);
                break;
            }
            // Collected only when a heartbeat is due, not once per job.
            let holding = || -> Vec<String> {
                held.iter()
                    .map(|h| h.handle.clone())
                    .chain(pending.iter().map(|p| p.0.clone()))
                    .chain(std::iter::once(next.handle.clone()))
                    .collect()
            };
            *seq += 1;
            let run_id = format!("{}.{slot}-{seq}", self.config.id);
            let Some(result) = self.run_one(&next, run_id, &holding, &mut beat, shutdown).await? else {
                held.push(next);
                break;
            };
            if pending.is_empty() {
                first_pending_ms = self.clock.mono_ms();
            }
            pending.push((next.handle, result));
            let due = self.clock.mono_ms().saturating_sub(first_pending_ms) >= self.config.result_flush_ms;
            if pending.len() >= self.results.batch_max() || due || held.is_empty() {
                self.deliver(std::mem::take(&mut pending), shutdown).await?;
            }
        }
        self.deliver(pending, shutdown).await?;
        // Stopping: hand back what was never started.
        let unstarted: Vec<String> = held.into_iter().map(|h| h.handle).collect();
        if !unstarted.is_empty() && !self.config.policy.worker_deletes_first() {
            let (_tx, never) = tokio::sync::watch::channel(false);
            self.calls(&*self.jobs, &never)
                .change_visibility_all(&unstarted, 0)
                .await?;
        }
        Ok(())
    }

    /// Run one job while heartbeating the messages `holding` lists (its own
    /// among them).
    /// Returns `None` if a stop was requested mid-run (the run is abandoned).
    async fn run_one(
        &self,
        held: &Held,
        run_id: String,
        holding: &(dyn Fn() -> Vec<String> + Sync),
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
            match self
                .with_heartbeat(loaded.experiment.run(&spec), holding, beat, shutdown)
                .await?
            {
                Some(outcome) => outcome,
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

    /// How often held messages are extended: a third of their visibility.
    fn beat_ms(&self) -> u64 {
        (self.config.visibility_ms / 3).max(1)
    }

    /// Poll `work` to completion, extending the visibility of the messages
    /// `handles` lists whenever `beat` fires (then setting it again). The
    /// beat belongs to the whole batch, not to one job: a batch of short
    /// jobs that outlasts the visibility timeout is extended too. `None` if
    /// stopped first.
    async fn with_heartbeat<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        handles: &(dyn Fn() -> Vec<String> + Sync),
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
                    let refused = self.calls(&*self.jobs, shutdown).change_visibility_all(&handles(), self.config.visibility_ms).await?;
                    if refused > 0 {
                        debug!(worker = %self.config.id, refused, "heartbeat refused: a job may run twice");
                    }
                }
            }
        }
    }

    /// Send results, then (only then) delete their job messages.
    async fn deliver(&self, pending: Vec<(String, ResultMessage)>, shutdown: &Shutdown) -> Result<(), CallError> {
        if pending.is_empty() {
            return Ok(());
        }
        // Delivery continues through a stop: a result in hand is not dropped.
        let (_tx, never) = tokio::sync::watch::channel(false);
        let _ = shutdown;
        let bodies: Vec<String> = pending.iter().map(|(_, r)| r.encode()).collect();
        self.calls(&*self.results, &never).send_all(&bodies).await?;
        self.stats
            .results_sent
            .fetch_add(bodies.len() as u64, Ordering::Relaxed);
        if !self.config.policy.worker_deletes_first() {
            let handles: Vec<String> = pending.into_iter().map(|(h, _)| h).collect();
            let refused = self.calls(&*self.jobs, &never).delete_all(&handles).await?;
            if refused > 0 {
                warn!(worker = %self.config.id, refused, "job deletes refused (stale receipt): those jobs will be seen again");
            }
        }
        Ok(())
    }

    /// Store a message that is not a usable job in the blob store, then
    /// delete it from its queue.
    async fn quarantine(
        &self,
        queue: &dyn Queue,
        msg: &Received,
        reason: &str,
        shutdown: &Shutdown,
    ) -> Result<(), CallError> {
        quarantine(
            &*self.store,
            &*self.clock,
            queue,
            msg,
            reason,
            self.config.policy,
            shutdown,
        )
        .await?;
        self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
