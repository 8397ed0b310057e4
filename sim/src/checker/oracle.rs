//! The oracle: ground truth recorded outside the system under test.
//!
//! It learns from the simulated SQS host which result messages the results
//! queue accepted and which were destroyed by a queue deletion, and from
//! the experiment itself which jobs ran and what they produced. Per-key
//! state is a few dense vectors, so millions of keys fit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tally::core::ResultView;

use crate::checker::resends::Resends;

/// The simulated time, or 0 outside a simulation (a unit test feeding an
/// oracle by hand).
fn now_ms() -> u64 {
    crate::doubles::clock::try_sim_now_ms().unwrap_or(0)
}

/// A hash naming one run (never 0, so 0 can mean "none").
pub fn run_hash(run_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(run_id.as_bytes()) | 1
}

/// A payload hash as a [`RunSet`] holds it (never 0).
pub fn payload_key(payload_hash: u64) -> u64 {
    payload_hash | 1
}

/// Distinct hashes (of runs, or of payloads) per key, compact for the
/// common case of one.
#[derive(Debug, Default)]
pub struct RunSet {
    first: Vec<u64>,
    more: BTreeMap<u64, Vec<u64>>,
}

impl RunSet {
    /// A set for keys `0..keys`.
    pub fn new(keys: u64) -> Self {
        Self {
            first: vec![0; keys as usize],
            more: BTreeMap::new(),
        }
    }

    /// Add `run` to key `index`; true if it was new.
    pub fn insert(&mut self, index: u64, run: u64) -> bool {
        let slot = &mut self.first[index as usize];
        if *slot == 0 {
            *slot = run;
            return true;
        }
        if *slot == run {
            return false;
        }
        let more = self.more.entry(index).or_default();
        if more.contains(&run) {
            return false;
        }
        more.push(run);
        true
    }

    /// Whether key `index` has `run`.
    pub fn contains(&self, index: u64, run: u64) -> bool {
        self.first[index as usize] == run || self.more.get(&index).is_some_and(|m| m.contains(&run))
    }

    /// How many distinct runs key `index` has.
    pub fn count(&self, index: u64) -> usize {
        usize::from(self.first[index as usize] != 0) + self.more.get(&index).map_or(0, Vec::len)
    }

    /// Every run of key `index`.
    pub fn runs(&self, index: u64) -> impl Iterator<Item = u64> + '_ {
        let first = self.first[index as usize];
        (first != 0)
            .then_some(first)
            .into_iter()
            .chain(self.more.get(&index).into_iter().flatten().copied())
    }
}

/// Which submission rounds of each key have an accepted result: a bit per
/// round for the first eight, which is every round in practice, and a
/// sparse set beyond.
#[derive(Debug, Default)]
pub struct Attempts {
    low: Vec<u8>,
    high: BTreeSet<(u64, u32)>,
}

impl Attempts {
    /// A set for keys `0..keys`.
    pub fn new(keys: u64) -> Self {
        Self {
            low: vec![0; keys as usize],
            high: BTreeSet::new(),
        }
    }

    /// Record round `attempt` of key `index`.
    pub fn insert(&mut self, index: u64, attempt: u32) {
        match (attempt.checked_sub(1), self.low.get_mut(index as usize)) {
            (Some(bit @ 0..=7), Some(bits)) => *bits |= 1 << bit,
            _ => {
                self.high.insert((index, attempt));
            }
        }
    }

    /// Whether round `attempt` of key `index` was recorded.
    pub fn contains(&self, index: u64, attempt: u32) -> bool {
        match (attempt.checked_sub(1), self.low.get(index as usize)) {
            (Some(bit @ 0..=7), Some(bits)) => bits & (1 << bit) != 0,
            _ => self.high.contains(&(index, attempt)),
        }
    }
}

/// Ground truth of one simulated run.
#[derive(Debug)]
pub struct Oracle {
    /// Jobs submitted.
    pub jobs: u64,
    /// The sweep's id.
    pub sweep: String,
    /// The results queue's name.
    pub results_queue: String,
    /// Experiment runs started, per key.
    pub runs_started: Vec<u16>,
    /// Every payload the results of each key may carry, as
    /// [`payload_key`]s: one per key for a repeatable experiment, one per
    /// run for a nondeterministic one (none: never finished a run).
    pub produced: RunSet,
    /// Result runs the results queue accepted, per key.
    pub accepted: RunSet,
    /// Result runs destroyed by a deletion of the results queue.
    pub destroyed: BTreeSet<(u64, u64)>,
    /// Accepted results whose key is outside the sweep or foreign.
    pub foreign_accepted: u64,
    /// Queue deletions that happened.
    pub queue_deletions: u64,
    /// The work queue's name.
    pub jobs_queue: String,
    /// Job messages a consumer deleted, as (key, attempt), while no result
    /// of that attempt had been accepted; removed when one is.
    pub dropped: BTreeSet<(u64, u32)>,
    /// (key, attempt) pairs with an accepted result.
    answered: Attempts,
    /// Result copies in the results queue per key, and keys resent while
    /// one was there.
    pub resends: Resends,
    /// How each key's messages left the queues other than by a consumer's
    /// delete, as [`fate`] bits: for coverage.
    pub fates: Vec<u8>,
    /// Resubmission rounds the driver recorded so far.
    pub rounds: u32,
}

/// Bits of [`Oracle::fates`].
pub mod fate {
    /// A first-attempt job message was destroyed (queue deletion, purge,
    /// expiry).
    pub const JOB_LOST: u8 = 1;
    /// A resent job message was destroyed.
    pub const RESENT_JOB_LOST: u8 = 2;
    /// A result message was destroyed.
    pub const RESULT_LOST: u8 = 4;
    /// A message was moved to a dead-letter queue.
    pub const DEAD_LETTERED: u8 = 8;
    /// Every bit, by name.
    pub const NAMES: [(u8, &str); 4] = [
        (JOB_LOST, "job-lost"),
        (RESENT_JOB_LOST, "resent-job-lost"),
        (RESULT_LOST, "result-lost"),
        (DEAD_LETTERED, "dead-lettered"),
    ];
}

/// The ground truth of every sweep of a run, one [`Oracle`] each; each
/// event goes to the oracle of the sweep it names.
#[derive(Debug)]
pub struct Oracles {
    /// One per sweep, in submission order.
    pub sweeps: Vec<Oracle>,
}

/// The shared ground truth.
pub type SharedOracle = Arc<Mutex<Oracles>>;

impl Oracles {
    /// The oracle of sweep `sweep`, if it is one of the run's.
    fn of(&mut self, sweep: &str) -> Option<&mut Oracle> {
        self.sweeps.iter_mut().find(|o| o.sweep == sweep)
    }

    /// The experiment started running key `index` of `sweep`; returns how
    /// many runs of it have started, this one included.
    pub fn started(&mut self, sweep: &str, index: u64) -> u16 {
        self.of(sweep).map_or(0, |o| o.started(index))
    }

    /// The experiment produced a result whose payload hash is `payload`
    /// for key `index` of `sweep`.
    pub fn produced(&mut self, sweep: &str, index: u64, payload: u64) {
        if let Some(o) = self.of(sweep) {
            o.produced(index, payload);
        }
    }

    /// The results queue accepted a message. With one sweep the message
    /// goes straight to its oracle (decoded once, as six million results
    /// want); a result of no sweep of the run is foreign to the first.
    pub fn accepted(&mut self, queue: &str, body: &str) {
        if queue == self.sweeps[0].jobs_queue {
            if let Ok(job) = tally::core::JobMessage::decode(body) {
                if let Some(o) = self.of(&job.sweep) {
                    o.resends.added(job.index, now_ms());
                }
            }
            return;
        }
        if self.sweeps.len() > 1 && queue == self.sweeps[0].results_queue {
            let sweep = ResultView::decode(body).ok().map(|r| r.sweep.into_owned());
            if let Some(o) = sweep.and_then(|sweep| self.of(&sweep)) {
                return o.accepted(queue, body);
            }
        }
        self.sweeps[0].accepted(queue, body);
    }

    /// A consumer deleted a message by its current handle.
    pub fn deleted(&mut self, queue: &str, body: &str) {
        if self.sweeps.len() > 1 && queue == self.sweeps[0].jobs_queue {
            let sweep = tally::core::JobMessage::decode(body).ok().map(|j| j.sweep);
            if let Some(o) = sweep.and_then(|sweep| self.of(&sweep)) {
                return o.deleted(queue, body);
            }
        }
        if self.sweeps.len() > 1 && queue == self.sweeps[0].results_queue {
            // Each oracle counts only its own sweep's results.
            for o in &mut self.sweeps {
                o.deleted(queue, body);
            }
            return;
        }
        self.sweeps[0].deleted(queue, body);
    }

    /// The driver of some sweep stored a round record under `key`.
    pub fn round_stored(&mut self, key: &str, bytes: &[u8]) {
        let Some(o) = self
            .sweeps
            .iter_mut()
            .find(|o| key.starts_with(&tally::core::manifest::rounds_prefix(&o.sweep)))
        else {
            return;
        };
        o.rounds += 1;
        if let Ok(round) = serde_json::from_slice::<tally::core::manifest::Round>(bytes) {
            o.resends.decided(&round);
        }
    }

    /// A copy left `queue` for its dead-letter queue: it is no longer in
    /// any queue the driver looks at.
    pub fn dead_lettered(&mut self, queue: &str, body: &str) {
        for o in &mut self.sweeps {
            let _ = o.left(queue, body, true);
        }
    }

    /// A message was destroyed without being deleted: each oracle keeps
    /// only its own sweep's.
    pub fn destroyed(&mut self, queue: &str, body: &str) {
        for o in &mut self.sweeps {
            o.destroyed(queue, body);
        }
    }
}

impl Oracle {
    /// An oracle for a sweep of `jobs` jobs.
    pub fn new(sweep: &str, jobs: u64, jobs_queue: &str, results_queue: &str) -> Self {
        Self {
            jobs,
            sweep: sweep.to_owned(),
            results_queue: results_queue.to_owned(),
            runs_started: vec![0; jobs as usize],
            produced: RunSet::new(jobs),
            accepted: RunSet::new(jobs),
            destroyed: BTreeSet::new(),
            foreign_accepted: 0,
            queue_deletions: 0,
            jobs_queue: jobs_queue.to_owned(),
            dropped: BTreeSet::new(),
            answered: Attempts::new(jobs),
            resends: Resends::new(jobs, false),
            fates: vec![0; jobs as usize],
            rounds: 0,
        }
    }

    /// Whether a resubmitted attempt (round 2 or later) of key `index`
    /// had a result accepted.
    pub fn answered_again(&self, index: u64) -> bool {
        let low = self
            .answered
            .low
            .get(index as usize)
            .is_some_and(|&bits| bits & !1 != 0);
        low || self
            .answered
            .high
            .range((index, 0)..=(index, u32::MAX))
            .next()
            .is_some()
    }

    /// The experiment started running key `index`; returns how many runs
    /// of it have started, this one included.
    pub fn started(&mut self, index: u64) -> u16 {
        match self.runs_started.get_mut(index as usize) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None => 0,
        }
    }

    /// The experiment produced a result whose payload hash is `payload`
    /// for key `index`.
    pub fn produced(&mut self, index: u64, payload: u64) {
        if index < self.jobs {
            self.produced.insert(index, payload_key(payload));
        }
    }

    /// A result's (key, run hash, attempt), if it is one of this sweep's.
    fn result_key(&self, queue: &str, body: &str) -> Option<(u64, u64, u32)> {
        if queue != self.results_queue {
            return None;
        }
        let r = ResultView::decode(body).ok()?;
        (r.sweep == self.sweep && r.index < self.jobs).then(|| (r.index, run_hash(&r.run_id), r.attempt))
    }

    /// The results queue accepted a message.
    pub fn accepted(&mut self, queue: &str, body: &str) {
        if queue != self.results_queue {
            return;
        }
        match self.result_key(queue, body) {
            Some((index, run, attempt)) => {
                self.resends.added(index, now_ms());
                self.accepted.insert(index, run);
                if !self.dropped.is_empty() {
                    self.dropped.remove(&(index, attempt));
                }
                self.answered.insert(index, attempt);
            }
            None => self.foreign_accepted += 1,
        }
    }

    /// A consumer deleted a message by its current handle. A job deleted
    /// before any result of its attempt was accepted may have been
    /// dropped: it stays suspect until such a result arrives.
    pub fn deleted(&mut self, queue: &str, body: &str) {
        if let Some((index, _, _)) = self.result_key(queue, body) {
            self.resends.removed(index);
        } else if let Some(job) = self.job_of(queue, body) {
            self.resends.removed(job.index);
            if !self.answered.contains(job.index, job.attempt) {
                self.dropped.insert((job.index, job.attempt));
            }
        }
    }

    /// A job message of this sweep's, if `body` in `queue` is one.
    fn job_of(&self, queue: &str, body: &str) -> Option<tally::core::JobMessage> {
        if queue != self.jobs_queue {
            return None;
        }
        tally::core::JobMessage::decode(body)
            .ok()
            .filter(|job| job.sweep == self.sweep)
    }

    /// A copy of this sweep's left `queue` without being deleted; a result
    /// leaving returns its (key, run hash).
    /// `dead_lettered` says whether it moved to a dead-letter queue (else
    /// it was destroyed).
    fn left(&mut self, queue: &str, body: &str, dead_lettered: bool) -> Option<(u64, u64)> {
        if let Some((index, run, _)) = self.result_key(queue, body) {
            self.resends.removed(index);
            self.mark(
                index,
                if dead_lettered {
                    fate::DEAD_LETTERED
                } else {
                    fate::RESULT_LOST
                },
            );
            return Some((index, run));
        }
        if let Some(job) = self.job_of(queue, body) {
            self.resends.removed(job.index);
            let bit = match (dead_lettered, job.attempt) {
                (true, _) => fate::DEAD_LETTERED,
                (false, 0 | 1) => fate::JOB_LOST,
                (false, _) => fate::RESENT_JOB_LOST,
            };
            self.mark(job.index, bit);
        }
        None
    }

    fn mark(&mut self, index: u64, bit: u8) {
        if let Some(f) = self.fates.get_mut(index as usize) {
            *f |= bit;
        }
    }

    /// A message was destroyed without being deleted.
    pub fn destroyed(&mut self, queue: &str, body: &str) {
        if let Some(result) = self.left(queue, body, false) {
            self.destroyed.insert(result);
        }
    }
}

/// Feeds the simulated bucket's round records to the oracle: the moment
/// the driver decided to resend keys.
pub struct S3Witness(pub SharedOracle);

impl crate::hosts::S3Observer for S3Witness {
    fn created(&mut self, key: &str, bytes: &[u8]) {
        if key.starts_with("sweeps/") && key.contains("/rounds/") {
            self.0.lock().expect("oracle lock").round_stored(key, bytes);
        }
    }
}

/// Feeds the simulated SQS host's events to the oracle and the trace.
pub struct SqsWitness(pub SharedOracle, pub crate::checker::trace::SharedTrace);

impl SqsWitness {
    fn note(&self, what: &str, queue: &str, body: &str, n: u32) {
        let now = crate::doubles::clock::try_sim_now_ms().unwrap_or(0);
        self.1.lock().expect("trace lock").message(now, what, queue, body, n);
    }
}

impl crate::hosts::sqs::SqsObserver for SqsWitness {
    fn accepted(&mut self, queue: &str, body: &str) {
        self.note("accepted", queue, body, 0);
        self.0.lock().expect("oracle lock").accepted(queue, body);
    }

    fn deleted(&mut self, queue: &str, body: &str) {
        self.note("deleted", queue, body, 0);
        self.0.lock().expect("oracle lock").deleted(queue, body);
    }

    fn destroyed(&mut self, queue: &str, body: &str) {
        self.note("destroyed", queue, body, 0);
        self.0.lock().expect("oracle lock").destroyed(queue, body);
    }

    fn dead_lettered(&mut self, queue: &str, _dead_letter: &str, body: &str) {
        self.0.lock().expect("oracle lock").dead_lettered(queue, body);
    }

    fn delivered(&mut self, queue: &str, body: &str, receive_count: u32) {
        self.note("delivered", queue, body, receive_count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_sets_count_distinct_runs_per_key() {
        let mut s = RunSet::new(3);
        assert!(s.insert(1, 5));
        assert!(!s.insert(1, 5));
        assert!(s.insert(1, 7));
        assert!(!s.insert(1, 7));
        assert_eq!(s.count(1), 2);
        assert_eq!(s.count(0), 0);
        assert!(s.contains(1, 7) && !s.contains(2, 7));
        assert_eq!(s.runs(1).collect::<Vec<_>>(), vec![5, 7]);
    }

    fn result_body(sweep: &str, index: u64) -> String {
        tally::core::ResultMessage {
            tally: tally::core::message::FORMAT_VERSION,
            sweep: sweep.into(),
            index,
            attempt: 1,
            receive_count: 1,
            run_id: format!("w.0-{index}"),
            worker: "w".into(),
            started_ms: 0,
            duration_ms: 0,
            outcome: tally::core::Outcome {
                status: tally::core::ResultStatus::Ok,
                exit_code: Some(0),
                metrics: None,
                stdout: None,
                stderr_tail: String::new(),
            },
        }
        .encode()
    }

    #[test]
    fn each_sweep_s_results_reach_its_own_oracle_and_other_sweeps_are_foreign() {
        let mut o = Oracles {
            sweeps: vec![
                Oracle::new("a", 2, "jobs", "results"),
                Oracle::new("b", 2, "jobs", "results"),
            ],
        };
        o.accepted("results", &result_body("b", 1));
        o.accepted("results", &result_body("c", 0));
        assert_eq!(o.started("b", 1), 1);
        assert_eq!(o.started("c", 1), 0);
        let (a, b) = (&o.sweeps[0], &o.sweeps[1]);
        assert!(b.accepted.count(1) == 1 && a.accepted.count(1) == 0);
        assert_eq!((a.foreign_accepted, b.foreign_accepted), (1, 0));
        assert_eq!((a.runs_started[1], b.runs_started[1]), (0, 1));
    }

    #[test]
    fn attempts_hold_low_and_high_rounds() {
        let mut a = Attempts::new(2);
        a.insert(1, 1);
        a.insert(1, 8);
        a.insert(1, 9);
        a.insert(5, 1);
        assert!(a.contains(1, 1) && a.contains(1, 8) && a.contains(1, 9) && a.contains(5, 1));
        assert!(!a.contains(0, 1) && !a.contains(1, 2) && !a.contains(1, 10) && !a.contains(1, 0));
    }
}
