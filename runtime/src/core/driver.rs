//! The finish-and-resubmit driver: the one loop that decides when a sweep
//! may be finished, what to resend, and when it is complete. `tally run`,
//! `tally reconcile --resubmit`, `tally reconcile --watch` and the
//! simulator's reconciler host all run it, so what the commands do in
//! production is what the simulator puts through its faults.
//!
//! The decisions live in [`Finish`], a plain state machine fed with what
//! the queues and the store say; [`Driver`] is the thin async shell that
//! asks them and acts. The rules:
//!
//! 1. Nothing is judged before the submitter has sent every job of the
//!    sweep (its `sent` marker is in the store): a key not yet sent looks
//!    exactly like a key whose job was lost.
//! 2. The queues must look drained (nothing visible, nothing in flight, in
//!    both queues) for a quiet period measured on the driver's clock before
//!    a pass counts. Queue counts are approximate: on SQS they "may not
//!    achieve consistency until at least 1 minute after the producers stop
//!    sending" (GetQueueAttributes), so one empty reading proves nothing.
//! 3. A key is resent only when it was missing in two passes, each after a
//!    quiet period, with the queues drained in between: a result that was
//!    still on its way at the first pass has landed by the second.
//! 4. The sweep is complete when a pass after a quiet period finds no key
//!    missing. At most `rounds_max` resubmission rounds are made.
//!
//! A resubmission that races a run still in flight (a late duplicate the
//! counts did not show) makes a counted duplicate, never a silent one: the
//! key then has two runs, which reconciliation compares.

use std::ops::ControlFlow;

use crate::core::manifest;
use crate::core::reconciler::{MissingKeys, Reconciliation, RecordSink, Report, Tee};
use crate::core::retry::CallError;
use crate::core::submitter::Submitter;
use crate::core::{BlobStore, Clock, Policy, Queue, QueueError, QueueStats, Shutdown};

/// How the driver paces itself.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// How long both queues must look drained before a pass counts.
    pub quiet_ms: u64,
    /// How often the queues are looked at.
    pub poll_ms: u64,
    /// Most resubmission rounds this driver makes.
    pub rounds_max: u32,
    /// When set, a pass is also made this often while the queues are busy,
    /// for progress only (it decides nothing).
    pub progress_ms: Option<u64>,
    /// Which protocol to follow.
    pub policy: Policy,
}

/// What the queues and the store said at one look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// Whether the work queue held nothing, visible or in flight.
    pub jobs_drained: bool,
    /// Whether the results queue held nothing, visible or in flight.
    pub results_drained: bool,
    /// Whether the submitter has sent every job of the sweep.
    pub all_sent: bool,
    /// Whether a queue answered that it does not exist (it was deleted).
    pub queue_missing: bool,
    /// Whether a queue could not be asked (a throttled or failed call):
    /// the look says nothing, and neither starts nor breaks a quiet period.
    pub unknown: bool,
    /// The driver's clock, ms.
    pub now_ms: u64,
}

/// What the driver should do after a look or a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Look again later.
    Wait,
    /// Run a reconciliation pass.
    Reconcile,
    /// Resend these keys (sorted) as a new round.
    Resubmit(Vec<u64>),
    /// No key is missing.
    Complete,
    /// Keys are still missing, but every allowed round has been made.
    Exhausted,
}

/// The driver's decisions, without I/O.
#[derive(Clone, Debug)]
pub struct Finish {
    config: DriverConfig,
    /// When the queues were first seen drained in the current quiet stretch.
    quiet_since_ms: Option<u64>,
    /// Keys missing at the last pass of the current quiet stretch.
    candidates: Option<Vec<u64>>,
    rounds: u32,
    /// Whether a look found a queue missing since the last round (only
    /// the deletion-only mutant asks).
    saw_deletion: bool,
    /// Every key resent so far, sorted (kept only by the resend-once
    /// mutant).
    resent: Vec<u64>,
}

impl Finish {
    /// A driver that has seen nothing yet.
    pub fn new(config: DriverConfig) -> Self {
        Self {
            config,
            quiet_since_ms: None,
            candidates: None,
            rounds: 0,
            saw_deletion: false,
            resent: Vec::new(),
        }
    }

    /// Resubmission rounds made so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Whether the look shows nothing left to arrive. The planted
    /// eager-finish bug trusts an empty work queue alone (and neither waits
    /// out the quiet period nor confirms with a second pass).
    fn drained(&self, look: &Look) -> bool {
        if self.config.policy.finishes_on_empty_work_queue() {
            return look.jobs_drained;
        }
        look.all_sent && look.jobs_drained && look.results_drained
    }

    /// Take in a look at the queues.
    pub fn looked(&mut self, look: &Look) -> Next {
        if look.unknown {
            return Next::Wait;
        }
        self.saw_deletion |= look.queue_missing;
        if !self.drained(look) {
            self.quiet_since_ms = None;
            self.candidates = None;
            return Next::Wait;
        }
        let since = *self.quiet_since_ms.get_or_insert(look.now_ms);
        if !self.config.policy.waits_out_quiet_period() || look.now_ms.saturating_sub(since) >= self.config.quiet_ms {
            Next::Reconcile
        } else {
            Next::Wait
        }
    }

    /// Take in a pass's missing keys (sorted), made at `now_ms` after a
    /// look that said [`Next::Reconcile`].
    pub fn reconciled(&mut self, missing: Vec<u64>, now_ms: u64) -> Next {
        debug_assert!(missing.windows(2).all(|w| w[0] < w[1]), "missing keys are sorted");
        if missing.is_empty() {
            self.candidates = None;
            return Next::Complete;
        }
        if self.rounds >= self.config.rounds_max {
            return Next::Exhausted;
        }
        if self.config.policy.resends_only_after_deletion() && !self.saw_deletion {
            return Next::Wait;
        }
        let mut missing = missing;
        if !self.config.policy.resends_a_key_again() {
            // Keys resent before are trusted to arrive.
            missing.retain(|k| self.resent.binary_search(k).is_err());
            if missing.is_empty() {
                return Next::Wait;
            }
        }
        let confirmed = match self.candidates.take() {
            Some(earlier) => intersect(&earlier, &missing),
            None if self.config.policy.finishes_on_empty_work_queue() => missing.clone(),
            None => Vec::new(),
        };
        if confirmed.is_empty() {
            // The first sighting: confirm after another quiet period.
            self.candidates = Some(missing);
            self.quiet_since_ms = Some(now_ms);
            return Next::Wait;
        }
        self.rounds += 1;
        self.saw_deletion = false;
        if !self.config.policy.resends_a_key_again() {
            self.resent.extend(&confirmed);
            self.resent.sort_unstable();
        }
        // The resent jobs fill the work queue: a new quiet stretch begins.
        self.quiet_since_ms = None;
        Next::Resubmit(confirmed)
    }
}

/// Whether a progress pass is due at `now_ms`: every `progress_ms`, when
/// set, since the last one at `last_ms`.
fn progress_due(progress_ms: Option<u64>, last_ms: u64, now_ms: u64) -> bool {
    progress_ms.is_some_and(|ms| now_ms >= last_ms + ms)
}

/// Keys in both sorted lists, by merging them: no set of millions of
/// keys is built when a whole queue's worth is missing.
fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j) = (0, 0);
    let mut both = Vec::new();
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    both
}

/// What one step of the driver did.
#[derive(Clone, Debug)]
pub enum Step {
    /// Nothing to decide yet; the look that said so.
    Waiting(Look),
    /// Nothing to decide yet; a pass made for progress only.
    Progress(Report),
    /// A pass was made; keys are missing but not yet confirmed.
    Reconciled(Report),
    /// A pass confirmed keys missing and they were resent.
    Resubmitted {
        /// The pass's report.
        report: Report,
        /// How many keys were resent.
        keys: u64,
        /// The attempt they carry.
        attempt: u32,
    },
    /// A pass found no key missing.
    Complete(Report),
    /// Keys are missing and no round is left.
    Exhausted(Report),
}

/// The driver: [`Finish`] with the queues, the store and a resubmitter.
pub struct Driver<'a> {
    /// The work queue, looked at.
    pub jobs: &'a dyn Queue,
    /// The results queue, looked at.
    pub results: &'a dyn Queue,
    /// The blob store: manifest, rounds, segments, markers.
    pub store: &'a dyn BlobStore,
    /// The driver's clock.
    pub clock: &'a dyn Clock,
    /// Resends missing keys.
    pub resubmitter: &'a Submitter,
    /// The decisions.
    finish: Finish,
    /// The incremental reconciliation.
    reconciliation: Reconciliation,
    /// When the last progress pass was made.
    progress_at_ms: u64,
    /// The first complete pass's report, kept only by the complete-once
    /// mutant, which answers with it ever after.
    completed: Option<Report>,
}

impl<'a> Driver<'a> {
    /// A driver of `sweep_id` that has seen nothing yet.
    pub fn new(
        jobs: &'a dyn Queue,
        results: &'a dyn Queue,
        store: &'a dyn BlobStore,
        clock: &'a dyn Clock,
        resubmitter: &'a Submitter,
        config: DriverConfig,
        sweep_id: &str,
    ) -> Self {
        Self {
            jobs,
            results,
            store,
            clock,
            resubmitter,
            finish: Finish::new(config),
            reconciliation: Reconciliation::new(sweep_id),
            progress_at_ms: 0,
            completed: None,
        }
    }

    /// The sweep being driven.
    pub fn sweep_id(&self) -> &str {
        self.reconciliation.sweep_id()
    }

    /// Look at the queues once. Once one part of the look says "not yet",
    /// the rest is not asked (it would not change the decision).
    pub async fn look(&self, shutdown: &Shutdown) -> Result<Look, CallError> {
        let sweep_id = self.reconciliation.sweep_id();
        let mut look = Look {
            now_ms: self.clock.mono_ms(),
            ..Look::default()
        };
        let Some((jobs_drained, missing)) = drained_or_missing(self.jobs).await? else {
            look.unknown = true;
            return Ok(look);
        };
        (look.jobs_drained, look.queue_missing) = (jobs_drained, missing);
        if look.jobs_drained {
            let Some((results_drained, missing)) = drained_or_missing(self.results).await? else {
                look.unknown = true;
                return Ok(look);
            };
            look.results_drained = results_drained;
            look.queue_missing |= missing;
        }
        if look.results_drained {
            look.all_sent = manifest::all_sent(self.store, self.clock, shutdown, sweep_id, 1).await?;
        }
        Ok(look)
    }

    /// One step: look; when the queues have been quiet long enough,
    /// reconcile (records go to `sink` as the pass reads them) and resend
    /// what two passes found missing.
    pub async fn step(&mut self, shutdown: &Shutdown, sink: &mut dyn RecordSink) -> Result<Step, CallError> {
        let look = self.look(shutdown).await?;
        self.judge(look, shutdown, sink).await
    }

    /// [`Self::step`] with a look already taken (or made up, as `--force` does).
    pub async fn judge(
        &mut self,
        look: Look,
        shutdown: &Shutdown,
        sink: &mut dyn RecordSink,
    ) -> Result<Step, CallError> {
        let policy = self.finish.config.policy;
        if let Some(report) = &self.completed {
            return Ok(Step::Complete(report.clone()));
        }
        if self.finish.looked(&look) != Next::Reconcile {
            if progress_due(self.finish.config.progress_ms, self.progress_at_ms, look.now_ms) {
                self.progress_at_ms = look.now_ms;
                let pass = self.reconciliation.pass(self.store, self.clock, shutdown, policy, sink);
                return Ok(Step::Progress(pass.await?));
            }
            return Ok(Step::Waiting(look));
        }
        let mut missing = MissingKeys::default();
        let report = self
            .reconciliation
            .pass(self.store, self.clock, shutdown, policy, &mut Tee(&mut missing, sink))
            .await?;
        match self.finish.reconciled(missing.0, self.clock.mono_ms()) {
            Next::Complete => {
                if !policy.rereads_after_complete() {
                    self.completed = Some(report.clone());
                }
                Ok(Step::Complete(report))
            }
            Next::Exhausted => Ok(Step::Exhausted(report)),
            Next::Resubmit(keys) => {
                let attempt = self.resubmitter.resubmit(&report.sweep, &keys, shutdown).await?;
                Ok(Step::Resubmitted {
                    report,
                    keys: keys.len() as u64,
                    attempt,
                })
            }
            Next::Wait | Next::Reconcile => Ok(Step::Reconciled(report)),
        }
    }

    /// Step every `poll_ms` until the sweep is complete, the rounds are
    /// exhausted, `on_step` says break, or `shutdown` says stop (`Ok(None)`).
    /// `on_step` sees every step (progress); the last step is returned.
    pub async fn run(
        &mut self,
        shutdown: &Shutdown,
        sink: &mut dyn RecordSink,
        mut on_step: impl FnMut(&Step) -> ControlFlow<()>,
    ) -> Result<Option<Step>, CallError> {
        loop {
            if crate::core::is_stopping(shutdown) {
                return Ok(None);
            }
            let step = match self.step(shutdown, sink).await {
                Err(CallError::Stopped) => return Ok(None),
                other => other?,
            };
            let last = matches!(step, Step::Complete(_) | Step::Exhausted(_));
            if on_step(&step).is_break() || last {
                return Ok(Some(step));
            }
            if !crate::core::sleep_unless_stopped(self.clock, self.finish.config.poll_ms, shutdown).await {
                return Ok(None);
            }
        }
    }
}

/// Depths of a queue, for messages; a missing queue holds nothing.
pub async fn depth(queue: &dyn Queue) -> Result<QueueStats, CallError> {
    match queue.stats().await {
        Ok(stats) => Ok(stats),
        Err(QueueError::Missing { .. }) | Err(QueueError::DeletedRecently { .. }) => Ok(QueueStats::default()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a queue holds nothing, and whether it was missing; `None` when
/// a transient error left it unknown (the look then says nothing). A
/// missing queue holds nothing: it was deleted, what it held is gone, and
/// the passes find those keys missing.
async fn drained_or_missing(queue: &dyn Queue) -> Result<Option<(bool, bool)>, CallError> {
    match queue.is_drained().await {
        Ok(drained) => Ok(Some((drained, false))),
        Err(QueueError::Missing { .. }) | Err(QueueError::DeletedRecently { .. }) => Ok(Some((true, true))),
        Err(QueueError::Retryable { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: Policy) -> DriverConfig {
        DriverConfig {
            quiet_ms: 1_000,
            poll_ms: 100,
            rounds_max: 3,
            progress_ms: None,
            policy,
        }
    }

    fn drained(now_ms: u64) -> Look {
        Look {
            jobs_drained: true,
            results_drained: true,
            all_sent: true,
            queue_missing: false,
            unknown: false,
            now_ms,
        }
    }

    fn busy(now_ms: u64) -> Look {
        Look {
            results_drained: false,
            ..drained(now_ms)
        }
    }

    #[test]
    fn nothing_is_judged_before_the_queues_stay_drained_for_the_quiet_period() {
        let mut f = Finish::new(config(Policy::Real));
        assert_eq!(f.looked(&drained(0)), Next::Wait);
        assert_eq!(f.looked(&drained(999)), Next::Wait);
        assert_eq!(f.looked(&busy(1_000)), Next::Wait);
        assert_eq!(f.looked(&drained(1_500)), Next::Wait);
        assert_eq!(f.looked(&drained(2_500)), Next::Reconcile);
    }

    #[test]
    fn nothing_is_judged_before_the_submitter_sent_every_job() {
        let mut f = Finish::new(config(Policy::Real));
        let unsent = Look {
            all_sent: false,
            ..drained(0)
        };
        assert_eq!(f.looked(&unsent), Next::Wait);
        assert_eq!(
            f.looked(&Look {
                now_ms: 5_000,
                ..unsent
            }),
            Next::Wait
        );
    }

    #[test]
    fn a_key_is_resent_only_when_two_quiet_passes_found_it_missing() {
        let mut f = Finish::new(config(Policy::Real));
        f.looked(&drained(0));
        assert_eq!(f.looked(&drained(1_000)), Next::Reconcile);
        assert_eq!(f.reconciled(vec![1, 2, 3], 1_000), Next::Wait);
        assert_eq!(f.rounds(), 0, "a first pass resends nothing");
        // The second pass must wait out another quiet period.
        assert_eq!(f.looked(&drained(1_500)), Next::Wait);
        assert_eq!(f.looked(&drained(2_000)), Next::Reconcile);
        // Key 2's result landed in between: only 1 and 3 are resent.
        assert_eq!(f.reconciled(vec![1, 3, 4], 2_000), Next::Resubmit(vec![1, 3]));
        assert_eq!(f.rounds(), 1);
    }

    #[test]
    fn progress_passes_come_every_progress_period_and_only_when_asked_for() {
        assert!(!progress_due(None, 0, 1 << 40));
        assert!(progress_due(Some(5_000), 0, 5_000));
        assert!(!progress_due(Some(5_000), 10_000, 14_999));
        assert!(progress_due(Some(5_000), 10_000, 15_000));
        assert!(progress_due(Some(5_000), 10_000, 15_001));
    }

    #[test]
    fn intersecting_sorted_key_lists_keeps_exactly_the_common_keys() {
        assert_eq!(intersect(&[1, 3, 5, 7, 9], &[2, 3, 4, 9, 10]), vec![3, 9]);
        assert_eq!(intersect(&[], &[1]), Vec::<u64>::new());
        assert_eq!(intersect(&[4, 5], &[4, 5]), vec![4, 5]);
        // Either list may run out first.
        assert_eq!(intersect(&[5, 6, 8], &[1, 5]), vec![5]);
        assert_eq!(intersect(&[1, 5], &[5, 6, 8]), vec![5]);
    }

    #[test]
    fn activity_between_two_passes_starts_the_confirmation_again() {
        let mut f = Finish::new(config(Policy::Real));
        f.looked(&drained(0));
        f.looked(&drained(1_000));
        assert_eq!(f.reconciled(vec![7], 1_000), Next::Wait);
        assert_eq!(f.looked(&busy(1_500)), Next::Wait);
        f.looked(&drained(2_000));
        assert_eq!(f.looked(&drained(3_000)), Next::Reconcile);
        assert_eq!(
            f.reconciled(vec![7], 3_000),
            Next::Wait,
            "the earlier sighting was forgotten"
        );
    }

    #[test]
    fn a_pass_with_nothing_missing_completes_and_rounds_are_bounded() {
        let mut f = Finish::new(config(Policy::Real));
        f.looked(&drained(0));
        f.looked(&drained(1_000));
        assert_eq!(f.reconciled(vec![], 1_000), Next::Complete);
        let mut f = Finish::new(DriverConfig {
            rounds_max: 0,
            ..config(Policy::Real)
        });
        f.looked(&drained(0));
        f.looked(&drained(1_000));
        assert_eq!(f.reconciled(vec![1], 1_000), Next::Exhausted);
    }

    #[test]
    fn the_eager_finish_mutant_resends_while_results_are_in_flight() {
        let mut f = Finish::new(config(Policy::EagerFinish));
        assert_eq!(f.looked(&busy(0)), Next::Reconcile);
        assert_eq!(f.reconciled(vec![5], 0), Next::Resubmit(vec![5]));
    }

    #[test]
    fn the_no_quiet_mutant_judges_on_the_first_drained_look_but_still_confirms() {
        let mut f = Finish::new(config(Policy::NoQuiet));
        assert_eq!(f.looked(&busy(0)), Next::Wait);
        assert_eq!(f.looked(&drained(1)), Next::Reconcile);
        assert_eq!(f.reconciled(vec![5], 1), Next::Wait);
        assert_eq!(f.looked(&drained(2)), Next::Reconcile);
        assert_eq!(f.reconciled(vec![5], 2), Next::Resubmit(vec![5]));
    }

    #[test]
    fn the_deletion_only_mutant_resends_only_after_a_look_found_a_queue_missing() {
        let mut f = Finish::new(DriverConfig {
            quiet_ms: 0,
            ..config(Policy::DeletionOnly)
        });
        for now in 0..3 {
            assert_eq!(f.looked(&drained(now)), Next::Reconcile);
            assert_eq!(f.reconciled(vec![5], now), Next::Wait, "expired jobs are never resent");
        }
        let deleted = Look {
            queue_missing: true,
            ..drained(3)
        };
        assert_eq!(f.looked(&deleted), Next::Reconcile);
        assert_eq!(f.reconciled(vec![5], 3), Next::Wait, "the first sighting");
        assert_eq!(f.looked(&drained(4)), Next::Reconcile);
        assert_eq!(f.reconciled(vec![5], 4), Next::Resubmit(vec![5]));
    }

    #[test]
    fn a_look_that_could_not_ask_the_queues_neither_breaks_nor_starts_a_quiet_period() {
        let mut f = Finish::new(config(Policy::Real));
        let unknown = |now_ms| Look {
            unknown: true,
            ..busy(now_ms)
        };
        assert_eq!(f.looked(&unknown(0)), Next::Wait);
        assert_eq!(f.looked(&drained(100)), Next::Wait);
        assert_eq!(f.looked(&unknown(600)), Next::Wait);
        assert_eq!(
            f.looked(&drained(1_100)),
            Next::Reconcile,
            "measured from the first drained look"
        );
    }

    #[test]
    fn the_resend_once_mutant_never_resends_a_key_twice() {
        let mut f = Finish::new(DriverConfig {
            quiet_ms: 0,
            ..config(Policy::ResendOnce)
        });
        for (now, expect) in [(0, Next::Wait), (1, Next::Resubmit(vec![4, 5]))] {
            assert_eq!(f.looked(&drained(now)), Next::Reconcile);
            assert_eq!(f.reconciled(vec![4, 5], now), expect);
        }
        for now in 2..6 {
            assert_eq!(f.looked(&drained(now)), Next::Reconcile);
            let expect = if now == 3 { Next::Resubmit(vec![6]) } else { Next::Wait };
            assert_eq!(f.reconciled(vec![4, 5, 6], now), expect, "at {now}");
        }
    }
}
