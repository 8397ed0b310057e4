//! The checker: compare the oracle's ground truth with what the system's
//! own results database and report say.
//!
//! Per key it classifies like Jepsen's total-queue checker — `ok`,
//! `duplicated` (more than one run recorded), `lost` (no result), `recovered`
//! (a result the queue accepted was lost, but the key still ended done),
//! `unexpected` (a recorded result nobody produced) — and says whether the
//! report detected it. A violation is anything the promise forbids: a
//! result the results queue accepted that vanished without a queue
//! deletion to excuse it, a job message consumed (deleted) without any
//! result of it ever being accepted (catalogue failure 1, even when a
//! resubmission later recovered the key), a job or duplicate the report
//! does not name, a phantom, a corrupted payload (one the experiment never
//! produced for its key), recorded runs that disagree without the report
//! naming the key a conflict, or a job not final after the healed phase
//! (a conflict, a failure, a time-out or a give-up is final: reported).

pub mod oracle;
pub mod resends;
pub mod settle;
pub mod trace;

use std::collections::BTreeMap;

use serde::Serialize;
use tally::core::reconciler::{Fate, KeyClass, RecordSink, Report};
use tally::core::{ResultStatus, ResultView};

use crate::checker::oracle::{payload_key, run_hash, Oracle, RunSet};

/// What the results database recorded, gathered while reconciling.
pub struct Recorder {
    jobs: u64,
    sweep: String,
    /// Distinct runs recorded per key.
    pub runs: RunSet,
    /// The reconciler's class per key.
    pub classes: Vec<Option<KeyClass>>,
    /// Distinct payloads recorded per key (give-ups aside), as
    /// [`payload_key`]s.
    pub payloads: RunSet,
    /// Recorded results outside the sweep's keys.
    pub phantoms: u64,
}

impl Recorder {
    /// A recorder for a sweep of `jobs` jobs.
    pub fn new(sweep: &str, jobs: u64) -> Self {
        Self {
            jobs,
            sweep: sweep.to_owned(),
            runs: RunSet::new(jobs),
            classes: vec![None; jobs as usize],
            payloads: RunSet::new(jobs),
            phantoms: 0,
        }
    }
}

impl RecordSink for Recorder {
    fn record(&mut self, r: &ResultView<'_>, _body: &str, _verdict: Fate) {
        if r.sweep != self.sweep || r.index >= self.jobs {
            self.phantoms += 1;
            return;
        }
        self.runs.insert(r.index, run_hash(&r.run_id));
        if r.status != ResultStatus::GaveUp {
            self.payloads.insert(r.index, payload_key(r.payload_hash()));
        }
    }

    fn class(&mut self, index: u64, class: KeyClass, _runs: u32) {
        if let Some(c) = self.classes.get_mut(index as usize) {
            *c = Some(class);
        }
    }
}

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// What kind: `lost-result`, `lost-job`, `dropped-job`,
    /// `unreported-duplicate`, `unreported-conflict`, `unexpected`,
    /// `corrupted`, `not-final`, `miscounted`, `unreported-change` (see
    /// [`settle`]), `needless-resubmission` (see [`resends`]).
    pub kind: &'static str,
    /// The key, when one key is at fault.
    pub index: Option<u64>,
    /// What was seen.
    pub detail: String,
}

/// Jepsen-style key classes, with detection made explicit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Classes {
    /// Exactly one run recorded, and it is the row.
    pub ok: u64,
    /// More than one run recorded, agreeing; the report counts them.
    pub duplicated: u64,
    /// Recorded runs that disagree; the report names the key a conflict.
    pub conflicted: u64,
    /// No result; the report names the key missing.
    pub lost_detected: u64,
    /// No result and the report does not say so.
    pub lost_silent: u64,
    /// An accepted result vanished after a queue deletion, but the key
    /// ended done through resubmission.
    pub recovered: u64,
    /// Results recorded that no worker produced.
    pub unexpected: u64,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Key classes.
    pub classes: Classes,
    /// Violations by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// The first violations (at most 20).
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// True when nothing was violated.
    pub fn passed(&self) -> bool {
        self.counts.is_empty()
    }

    /// Add the verdict on sweep `sweep` of the same run: its classes, its
    /// counts and its first violations, each naming the sweep.
    pub fn absorb(&mut self, other: Verdict, sweep: &str) {
        let (c, o) = (&mut self.classes, &other.classes);
        for (sum, n) in [
            (&mut c.ok, o.ok),
            (&mut c.duplicated, o.duplicated),
            (&mut c.conflicted, o.conflicted),
            (&mut c.lost_detected, o.lost_detected),
            (&mut c.lost_silent, o.lost_silent),
            (&mut c.recovered, o.recovered),
            (&mut c.unexpected, o.unexpected),
        ] {
            *sum += n;
        }
        for (kind, n) in other.counts {
            *self.counts.entry(kind).or_default() += n;
        }
        let room = 20usize.saturating_sub(self.violations.len());
        self.violations
            .extend(other.violations.into_iter().take(room).map(|v| Violation {
                detail: format!("sweep {sweep}: {}", v.detail),
                ..v
            }));
    }

    pub(crate) fn flag(&mut self, kind: &'static str, index: Option<u64>, detail: String) {
        *self.counts.entry(kind).or_default() += 1;
        if self.violations.len() < 20 {
            self.violations.push(Violation { kind, index, detail });
        }
    }
}

/// Check a finished run. `final_phase` says whether every job had to be
/// final by now (liveness).
pub fn check(oracle: &Oracle, recorded: &Recorder, report: &Report, final_phase: bool) -> Verdict {
    let mut v = Verdict::default();
    check_counts(oracle, recorded, report, &mut v);
    for index in 0..oracle.jobs {
        check_key(oracle, recorded, index, &mut v);
        check_payloads(oracle, recorded, index, &mut v);
    }
    if recorded.phantoms > 0 || oracle.foreign_accepted > 0 {
        v.classes.unexpected += recorded.phantoms;
        v.flag(
            "unexpected",
            None,
            format!(
                "{} phantom records, {} foreign results accepted",
                recorded.phantoms, oracle.foreign_accepted
            ),
        );
    }
    for &(index, attempt) in &oracle.dropped {
        v.flag(
            "dropped-job",
            Some(index),
            format!("attempt {attempt}'s job message was deleted and no result of it was ever accepted"),
        );
    }
    // A conflict is a final, reported outcome; only a key with no result
    // is not final.
    if final_phase && report.missing > 0 {
        v.flag(
            "not-final",
            None,
            format!("after the healed phase: {} missing", report.missing),
        );
    }
    v
}

fn check_counts(oracle: &Oracle, recorded: &Recorder, report: &Report, v: &mut Verdict) {
    if report.submitted != oracle.jobs {
        v.flag(
            "miscounted",
            None,
            format!("the report says {} submitted; {} were", report.submitted, oracle.jobs),
        );
    }
    let classes = report.done + report.failed + report.conflicts + report.missing;
    if classes != report.submitted {
        v.flag(
            "miscounted",
            None,
            format!(
                "done+failed+conflicts+missing = {classes} != submitted {}",
                report.submitted
            ),
        );
    }
    let extra: u64 = (0..oracle.jobs)
        .map(|i| recorded.runs.count(i).saturating_sub(1) as u64)
        .sum();
    let conflict_extra: u64 = (0..oracle.jobs)
        .filter(|&i| recorded.classes[i as usize] == Some(KeyClass::Conflict))
        .map(|i| recorded.runs.count(i).saturating_sub(1) as u64)
        .sum();
    if report.duplicate_runs + conflict_extra != extra {
        v.flag(
            "unreported-duplicate",
            None,
            format!(
                "{extra} extra runs recorded; the report counts {} (+{conflict_extra} in conflicts)",
                report.duplicate_runs
            ),
        );
    }
}

fn check_key(oracle: &Oracle, recorded: &Recorder, index: u64, v: &mut Verdict) {
    let class = recorded.classes[index as usize];
    let recorded_runs = recorded.runs.count(index);
    let mut lost_excused = false;
    for run in oracle.accepted.runs(index) {
        if recorded.runs.contains(index, run) {
            continue;
        }
        if oracle.destroyed.contains(&(index, run)) {
            lost_excused = true;
        } else {
            v.flag(
                "lost-result",
                Some(index),
                "the results queue accepted a result that was never recorded".into(),
            );
        }
    }
    for run in recorded.runs.runs(index) {
        if !oracle.accepted.contains(index, run) {
            v.classes.unexpected += 1;
            v.flag(
                "unexpected",
                Some(index),
                "a recorded run the results queue never accepted".into(),
            );
        }
    }
    match (recorded_runs, class) {
        (0, Some(KeyClass::Missing)) => v.classes.lost_detected += 1,
        (0, _) => {
            v.classes.lost_silent += 1;
            v.flag(
                "lost-job",
                Some(index),
                format!("no result, and the report classes it {class:?}"),
            );
        }
        (_, Some(KeyClass::Missing)) | (_, None) => v.flag(
            "miscounted",
            Some(index),
            format!("{recorded_runs} runs recorded, classed {class:?}"),
        ),
        (_, Some(KeyClass::Conflict)) => v.classes.conflicted += 1,
        (1, _) if lost_excused => v.classes.recovered += 1,
        (1, _) => v.classes.ok += 1,
        (_, _) => v.classes.duplicated += 1,
    }
}

/// Every payload recorded for key `index` must be one the experiment
/// produced for it, and recorded payloads that disagree must be reported as
/// a conflict (and only those).
fn check_payloads(oracle: &Oracle, recorded: &Recorder, index: u64, v: &mut Verdict) {
    let mut distinct = 0;
    for payload in recorded.payloads.runs(index) {
        distinct += 1;
        if !oracle.produced.contains(index, payload) {
            v.flag(
                "corrupted",
                Some(index),
                format!(
                    "recorded payload {payload:x} is not among the {} the experiment produced",
                    oracle.produced.count(index)
                ),
            );
        }
    }
    let class = recorded.classes[index as usize];
    if distinct > 1 && class != Some(KeyClass::Conflict) {
        v.flag(
            "unreported-conflict",
            Some(index),
            format!("{distinct} different payloads recorded, and the report classes the key {class:?}"),
        );
    }
    if distinct <= 1 && class == Some(KeyClass::Conflict) {
        v.flag(
            "miscounted",
            Some(index),
            format!("classed a conflict, but {distinct} distinct payloads were recorded"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key 0 produced two payloads (a nondeterministic experiment run
    /// twice) and both were recorded.
    fn two_runs_that_disagree() -> (Oracle, Recorder) {
        let mut oracle = Oracle::new("s", 1, "jobs", "results");
        oracle.produced(0, 10);
        oracle.produced(0, 20);
        let mut recorded = Recorder::new("s", 1);
        recorded.payloads.insert(0, payload_key(10));
        recorded.payloads.insert(0, payload_key(20));
        (oracle, recorded)
    }

    #[test]
    fn disagreeing_runs_of_one_key_are_neither_corrupted_nor_a_violation_when_reported_as_a_conflict() {
        let (oracle, mut recorded) = two_runs_that_disagree();
        recorded.classes[0] = Some(KeyClass::Conflict);
        let mut v = Verdict::default();
        check_payloads(&oracle, &recorded, 0, &mut v);
        assert!(v.passed(), "{:?}", v.violations);
    }

    #[test]
    fn disagreeing_runs_of_a_key_classed_done_are_an_unreported_conflict() {
        let (oracle, mut recorded) = two_runs_that_disagree();
        recorded.classes[0] = Some(KeyClass::Done);
        let mut v = Verdict::default();
        check_payloads(&oracle, &recorded, 0, &mut v);
        assert_eq!(
            v.counts.keys().copied().collect::<Vec<_>>(),
            vec!["unreported-conflict"]
        );
    }

    #[test]
    fn a_recorded_payload_the_experiment_never_produced_for_its_key_is_corrupted() {
        let (oracle, mut recorded) = two_runs_that_disagree();
        recorded.payloads.insert(0, payload_key(30));
        recorded.classes[0] = Some(KeyClass::Conflict);
        let mut v = Verdict::default();
        check_payloads(&oracle, &recorded, 0, &mut v);
        assert_eq!(v.counts.get("corrupted"), Some(&1), "{:?}", v.violations);
    }
}
