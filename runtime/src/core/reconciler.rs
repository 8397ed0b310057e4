//! The reconciler: merge the ledger and every segment, and classify every
//! key of a sweep.
//!
//! Classes, per key `0..submitted`: `done` (one result, or several that
//! agree, status ok), `failed` (agreeing results whose status is not ok),
//! `conflict` (results whose payloads differ) and `missing` (no result).
//! Besides: `duplicates` counts keys with more than one distinct run
//! (payloads agree; collapsed to one row), `redelivered` counts copies of
//! the same run delivered more than once (collapsed silently, since the
//! experiment ran once), and `phantoms` counts results whose key was never
//! submitted. Nothing here is lost: each class is counted and named.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::core::manifest::{self, Manifest};
use crate::core::retry::{store_retrying, CallError};
use crate::core::{segment, BlobStore, Clock, Policy, ResultStatus, ResultView, Shutdown};

/// How many indices a report lists per class (the counts are exact).
pub const LISTED_MAX: usize = 1000;

/// The reconciliation report. Its JSON form is stable: fields may be
/// added, never renamed or removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The sweep's id.
    pub sweep: String,
    /// Jobs submitted (the manifest's length).
    pub submitted: u64,
    /// Keys with an ok result (agreeing copies collapsed).
    pub done: u64,
    /// Keys whose result is a failure, timeout or give-up.
    pub failed: u64,
    /// Keys with no result.
    pub missing: u64,
    /// Keys with no result in a sweep that was cancelled: not run, on
    /// purpose (not counted as missing).
    #[serde(default)]
    pub cancelled: u64,
    /// Keys with more than one run whose payloads agree.
    pub duplicates: u64,
    /// Runs beyond the first, over all duplicated keys.
    pub duplicate_runs: u64,
    /// Keys with runs whose payloads differ.
    pub conflicts: u64,
    /// Results for keys that were never submitted.
    pub phantoms: u64,
    /// Extra copies of one run delivered more than once.
    pub redelivered: u64,
    /// Messages held in quarantine (all queues, all sweeps).
    pub quarantined: u64,
    /// Resubmission rounds so far.
    pub rounds: u32,
    /// Jobs resent over all rounds.
    pub resubmitted: u64,
    /// Segments read.
    pub segments: u64,
    /// Segments that could not be read (named in `unreadable_segments`).
    pub unreadable: u64,
    /// Missing keys, as inclusive index ranges (at most [`LISTED_MAX`]).
    pub missing_ranges: Vec<(u64, u64)>,
    /// Conflicting keys (at most [`LISTED_MAX`]).
    pub conflict_indices: Vec<u64>,
    /// Failed keys (at most [`LISTED_MAX`]).
    pub failed_indices: Vec<u64>,
    /// Phantom keys (at most [`LISTED_MAX`]).
    pub phantom_indices: Vec<u64>,
    /// Segments that could not be read.
    pub unreadable_segments: Vec<String>,
}

impl Report {
    /// True when every submitted job has exactly one agreed final result
    /// and nothing needs a person's attention. An unreadable segment does
    /// not keep a sweep incomplete once every key is accounted for without
    /// it: it is named in the report as evidence (it may hold extra runs of
    /// keys that are done), and the keys it held were run again.
    pub fn is_complete(&self) -> bool {
        self.missing == 0 && self.conflicts == 0 && self.phantoms == 0
    }
}

/// Per-key classification state, compact so millions of keys fit.
#[derive(Clone, Copy, Default)]
struct Key {
    /// Hash of the first run id seen (0: none yet).
    run: u64,
    /// Payload hash of the result chosen so far.
    payload: u64,
    /// Distinct runs seen.
    runs: u32,
    status: Option<ResultStatus>,
    conflict: bool,
}

/// What happened to one record, for the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The first result for its key, or one that replaces a give-up: the
    /// sink should store it as the key's row.
    Chosen,
    /// Another run or copy of a key that already has its row.
    Extra,
    /// A result for a key that was never submitted.
    Phantom,
}

/// A key's final class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyClass {
    /// One agreed ok result.
    Done,
    /// One agreed result that is a failure, timeout or give-up.
    Failed,
    /// Results that disagree.
    Conflict,
    /// No result.
    Missing,
    /// No result, and the sweep was cancelled.
    Cancelled,
}

impl KeyClass {
    /// The name used in reports and the results database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Conflict => "conflict",
            Self::Missing => "missing",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Receives records as they are classified, then every key's class (the
/// results database, the simulator's checker).
pub trait RecordSink {
    /// One record, with its raw body and verdict.
    fn record(&mut self, view: &ResultView<'_>, body: &str, verdict: Fate);
    /// The final class of key `index` and its number of distinct runs,
    /// called once per submitted key, in index order.
    fn class(&mut self, index: u64, class: KeyClass, runs: u32);
}

/// Collects the indices of missing keys, in order (for resubmission).
#[derive(Debug, Default)]
pub struct MissingKeys(pub Vec<u64>);

impl RecordSink for MissingKeys {
    fn record(&mut self, _: &ResultView<'_>, _: &str, _: Fate) {}
    fn class(&mut self, index: u64, class: KeyClass, _: u32) {
        if class == KeyClass::Missing {
            self.0.push(index);
        }
    }
}

/// Feeds two sinks.
pub struct Tee<'a>(pub &'a mut dyn RecordSink, pub &'a mut dyn RecordSink);

impl RecordSink for Tee<'_> {
    fn record(&mut self, r: &ResultView<'_>, body: &str, v: Fate) {
        self.0.record(r, body, v);
        self.1.record(r, body, v);
    }
    fn class(&mut self, index: u64, class: KeyClass, runs: u32) {
        self.0.class(index, class, runs);
        self.1.class(index, class, runs);
    }
}

/// A sink that keeps nothing.
pub struct NoSink;

impl RecordSink for NoSink {
    fn record(&mut self, _: &ResultView<'_>, _: &str, _: Fate) {}
    fn class(&mut self, _: u64, _: KeyClass, _: u32) {}
}

/// The classification in progress. Feed it records, then [`Classifier::finish`].
pub struct Classifier {
    submitted: u64,
    keys: Vec<Key>,
    /// Run-id hashes, each with its payload hash, of keys seen with more
    /// than one distinct run.
    extra_runs: BTreeMap<u64, Vec<(u64, u64)>>,
    report: Report,
    cancelled: bool,
    policy: Policy,
}

impl Classifier {
    /// A classifier for a sweep of `submitted` jobs.
    pub fn new(sweep: &str, submitted: u64) -> Self {
        Self {
            submitted,
            keys: vec![Key::default(); submitted as usize],
            extra_runs: BTreeMap::new(),
            report: Report {
                sweep: sweep.to_owned(),
                submitted,
                ..Report::default()
            },
            cancelled: false,
            policy: Policy::Real,
        }
    }

    /// The same classifier following `policy` (a planted bug may change how
    /// records are told apart).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Keys without a result are cancelled, not missing, from now on.
    pub fn cancel(&mut self) {
        self.cancelled = true;
    }

    /// Classify one record of this sweep.
    pub fn add(&mut self, result: &ResultView<'_>) -> Fate {
        if result.index >= self.submitted {
            self.report.phantoms += 1;
            if self.report.phantom_indices.len() < LISTED_MAX {
                self.report.phantom_indices.push(result.index);
            }
            return Fate::Phantom;
        }
        let run = xxhash_rust::xxh3::xxh3_64(result.run_id.as_bytes()) | 1;
        let payload = result.payload_hash();
        let status = result.status;
        let key = &mut self.keys[result.index as usize];
        if key.runs == 0 {
            *key = Key {
                run,
                payload,
                runs: 1,
                status: Some(status),
                conflict: false,
            };
            return Fate::Chosen;
        }
        // A copy is compared with its own run's payload, not with the key's:
        // with runs that disagree, comparing with whichever run was read
        // first would make the count depend on the order segments are read.
        let seen = if key.run == run {
            Some(key.payload)
        } else {
            let runs = self.extra_runs.entry(result.index).or_default();
            let seen = runs.iter().find(|(r, _)| *r == run).map(|(_, p)| *p);
            if seen.is_none() {
                runs.push((run, payload));
            }
            seen
        };
        let real = status != ResultStatus::GaveUp && key.status != Some(ResultStatus::GaveUp);
        if seen.is_some_and(|p| !(real && payload != p)) {
            self.report.redelivered += 1;
            return Fate::Extra;
        }
        if seen.is_some() {
            // One run id, two payloads: two executions that shared an id (it
            // should be unique, but hosts can be cloned); never a copy.
            key.runs += 1;
            key.conflict = true;
            return Fate::Extra;
        }
        key.runs += 1;
        // A give-up says only that workers kept dying; a real result wins.
        let was_gave_up = key.status == Some(ResultStatus::GaveUp);
        if was_gave_up && status != ResultStatus::GaveUp {
            key.payload = payload;
            key.status = Some(status);
            return Fate::Chosen;
        }
        // The planted blind-conflicts bug takes disagreeing runs for
        // agreeing duplicates.
        if status != ResultStatus::GaveUp && payload != key.payload && self.policy.detects_conflicts() {
            key.conflict = true;
        }
        Fate::Extra
    }

    /// Finish: count every key's class. Without the ledger (the
    /// `no-ledger` mutant), keys with no result are not known to exist.
    pub fn finish(&self, sink: &mut dyn RecordSink) -> Report {
        let policy = self.policy;
        let mut report = self.report.clone();
        let r = &mut report;
        for (i, key) in self.keys.iter().enumerate() {
            let i = i as u64;
            let class = match (key.runs, key.status) {
                (0, _) | (_, None) if self.cancelled => {
                    r.cancelled += 1;
                    KeyClass::Cancelled
                }
                (0, _) | (_, None) => {
                    r.missing += 1;
                    manifest::extend_ranges(&mut r.missing_ranges, i, LISTED_MAX);
                    KeyClass::Missing
                }
                _ if key.conflict => {
                    r.conflicts += 1;
                    push_capped(&mut r.conflict_indices, i);
                    KeyClass::Conflict
                }
                (_, Some(ResultStatus::Ok)) => {
                    r.done += 1;
                    KeyClass::Done
                }
                (_, Some(_)) => {
                    r.failed += 1;
                    push_capped(&mut r.failed_indices, i);
                    KeyClass::Failed
                }
            };
            if class != KeyClass::Missing || policy.reads_ledger() {
                sink.class(i, class, key.runs);
            }
            if key.runs > 1 && !key.conflict {
                r.duplicates += 1;
                r.duplicate_runs += u64::from(key.runs - 1);
            }
        }
        assert_eq!(
            r.done + r.failed + r.conflicts + r.missing + r.cancelled,
            r.submitted,
            "every key of {} is in exactly one class",
            r.sweep
        );
        if !policy.reads_ledger() {
            r.submitted -= r.missing;
            r.missing = 0;
            r.missing_ranges.clear();
        }
        report
    }
}

fn push_capped(v: &mut Vec<u64>, i: u64) {
    if v.len() < LISTED_MAX {
        v.push(i);
    }
}

/// Reconcile one sweep: read its manifest, rounds and every segment,
/// classify every key, and pass every record to `sink`.
pub async fn reconcile(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    policy: Policy,
    sweep_id: &str,
    sink: &mut dyn RecordSink,
) -> Result<Report, CallError> {
    Reconciliation::new(sweep_id)
        .pass(store, clock, shutdown, policy, sink)
        .await
}

/// A reconciliation that is run again and again (the reconciler's loop):
/// segments are immutable and named by their content, so each pass reads
/// only the segments stored since the last one and adds them to what it
/// already knows. A sink sees each record once, in the pass that read it,
/// and every key's class in every pass.
pub struct Reconciliation {
    sweep_id: String,
    classifier: Option<Classifier>,
    /// Segments already read (or found unreadable).
    read: BTreeSet<String>,
    unreadable: Vec<String>,
}

impl Reconciliation {
    /// A reconciliation of `sweep_id` that has read nothing yet.
    pub fn new(sweep_id: &str) -> Self {
        Self {
            sweep_id: sweep_id.to_owned(),
            classifier: None,
            read: BTreeSet::new(),
            unreadable: Vec::new(),
        }
    }

    /// The sweep this reconciliation classifies.
    pub fn sweep_id(&self) -> &str {
        &self.sweep_id
    }

    /// Read the segments stored since the last pass, then report on every key.
    pub async fn pass(
        &mut self,
        store: &dyn BlobStore,
        clock: &dyn Clock,
        shutdown: &Shutdown,
        policy: Policy,
        sink: &mut dyn RecordSink,
    ) -> Result<Report, CallError> {
        let sweep_id = self.sweep_id.as_str();
        if self.classifier.is_none() {
            let manifest: Manifest = manifest::load(store, clock, shutdown, sweep_id).await?.ok_or_else(|| {
                CallError::Store(crate::core::StoreError::Permanent {
                    code: "NoManifest".into(),
                    message: format!("no manifest for sweep {sweep_id:?}"),
                })
            })?;
            self.classifier = Some(Classifier::new(sweep_id, manifest.submitted).with_policy(policy));
        }
        let classifier = self.classifier.as_mut().expect("set above");
        let keys = store_retrying(clock, shutdown, || store.list(segment::PREFIX)).await?;
        let new: Vec<&String> = keys.iter().filter(|k| !self.read.contains(*k)).collect();
        for key in new {
            let Some(bytes) = store_retrying(clock, shutdown, || store.get(key)).await? else {
                continue;
            };
            self.read.insert(key.clone());
            let segment = match segment::decode(&bytes) {
                Ok(segment) => segment,
                Err(reason) => {
                    warn!(segment = %key, reason, "unreadable segment");
                    self.unreadable.push(key.clone());
                    continue;
                }
            };
            drop(bytes);
            for body in segment.records() {
                // Records were validated when aggregated; a record that no
                // longer parses means the segment is damaged.
                let Ok(result) = ResultView::decode(body) else {
                    self.unreadable.push(key.clone());
                    break;
                };
                if result.sweep == sweep_id {
                    let verdict = classifier.add(&result);
                    sink.record(&result, body, verdict);
                }
            }
        }
        if manifest::is_cancelled(store, clock, shutdown, sweep_id).await? {
            classifier.cancel();
        }
        let rounds = manifest::load_rounds(store, clock, shutdown, sweep_id).await?;
        let quarantined = store_retrying(clock, shutdown, || store.list("quarantine/"))
            .await?
            .len() as u64;
        let mut report = classifier.finish(sink);
        report.segments = keys.len() as u64;
        report.unreadable = self.unreadable.len() as u64;
        report.unreadable_segments = self.unreadable.clone();
        report.rounds = rounds.len() as u32;
        report.resubmitted = rounds
            .iter()
            .map(|r| r.ranges.iter().map(|(a, b)| b - a + 1).sum::<u64>())
            .sum();
        report.quarantined = quarantined;
        Ok(report)
    }
}

/// Every sweep id that has a manifest in the store, in key order.
pub async fn sweep_ids(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
) -> Result<Vec<String>, CallError> {
    let keys = store_retrying(clock, shutdown, || store.list("sweeps/")).await?;
    Ok(keys
        .iter()
        .filter_map(|k| k.strip_prefix("sweeps/")?.strip_suffix("/manifest.json"))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::FORMAT_VERSION;
    use crate::core::{Outcome, ResultMessage};

    /// The class names are what the results database's `class` column and
    /// reports hold, so they are an interface: fixed, and distinct.
    #[test]
    fn key_classes_keep_their_documented_names() {
        let names: Vec<&str> = [
            KeyClass::Done,
            KeyClass::Failed,
            KeyClass::Conflict,
            KeyClass::Missing,
            KeyClass::Cancelled,
        ]
        .into_iter()
        .map(KeyClass::as_str)
        .collect();
        assert_eq!(names, ["done", "failed", "conflict", "missing", "cancelled"]);
    }

    fn result(index: u64, run_id: &str, status: ResultStatus, score: f64) -> ResultMessage {
        ResultMessage {
            tally: FORMAT_VERSION,
            sweep: "s".into(),
            index,
            attempt: 1,
            receive_count: 1,
            run_id: run_id.into(),
            worker: "w".into(),
            started_ms: 0,
            duration_ms: 0,
            outcome: Outcome {
                status,
                exit_code: Some(0),
                metrics: serde_json::json!({ "score": score }).as_object().cloned(),
                stdout: None,
                stderr_tail: String::new(),
            },
        }
    }

    fn add(c: &mut Classifier, r: ResultMessage) -> Fate {
        let body = r.encode();
        c.add(&ResultView::decode(&body).unwrap())
    }

    #[test]
    fn two_records_of_one_run_id_that_disagree_are_a_conflict_not_a_copy() {
        let mut c = Classifier::new("s", 2);
        add(&mut c, result(0, "w-1.0-1", ResultStatus::Ok, 1.0));
        assert_eq!(add(&mut c, result(0, "w-1.0-1", ResultStatus::Ok, 1.0)), Fate::Extra);
        add(&mut c, result(1, "w-1.0-1", ResultStatus::Ok, 1.0));
        add(&mut c, result(1, "w-1.0-1", ResultStatus::Ok, 2.0));
        let mut classes = Classes::default();
        let r = c.finish(&mut classes);
        assert_eq!(r.redelivered, 1, "key 0's identical copy: {r:?}");
        assert_eq!(r.conflicts, 1, "key 1's disagreeing copies: {r:?}");
        assert_eq!(r.conflict_indices, vec![1]);
        assert_eq!(r.done, 1);
        // The results database's `runs`: key 1 had two executions.
        assert_eq!(classes.0, [(0, KeyClass::Done, 1), (1, KeyClass::Conflict, 2)]);
    }

    /// Each key's class and count of runs, as the results database gets them.
    #[derive(Default)]
    struct Classes(Vec<(u64, KeyClass, u32)>);

    impl RecordSink for Classes {
        fn record(&mut self, _: &ResultView<'_>, _: &str, _: Fate) {}
        fn class(&mut self, index: u64, class: KeyClass, runs: u32) {
            self.0.push((index, class, runs));
        }
    }

    /// Two runs of a key disagree, and each is delivered twice: whatever
    /// order the segments are read in, the report is the same (a copy of
    /// the second run used to be taken for a conflict when the first run
    /// was read first).
    #[test]
    fn copies_of_disagreeing_runs_are_counted_alike_in_any_order() {
        let records = [
            result(0, "a", ResultStatus::Ok, 1.0),
            result(0, "b", ResultStatus::Ok, 2.0),
            result(0, "a", ResultStatus::Ok, 1.0),
            result(0, "b", ResultStatus::Ok, 2.0),
        ];
        let mut reports = Vec::new();
        for order in [[0, 1, 2, 3], [1, 0, 3, 2], [0, 2, 1, 3], [1, 3, 0, 2]] {
            let mut c = Classifier::new("s", 1);
            for i in order {
                add(&mut c, records[i].clone());
            }
            reports.push(c.finish(&mut NoSink));
        }
        assert_eq!(reports[0].redelivered, 2, "{:?}", reports[0]);
        assert_eq!(reports[0].conflicts, 1);
        for r in &reports[1..] {
            assert_eq!(r, &reports[0]);
        }
    }

    #[test]
    fn every_key_gets_exactly_one_class() {
        let mut c = Classifier::new("s", 6);
        assert_eq!(add(&mut c, result(0, "a", ResultStatus::Ok, 1.0)), Fate::Chosen);
        // Key 1: the same run delivered twice, then a second agreeing run.
        add(&mut c, result(1, "b", ResultStatus::Ok, 2.0));
        assert_eq!(add(&mut c, result(1, "b", ResultStatus::Ok, 2.0)), Fate::Extra);
        add(&mut c, result(1, "c", ResultStatus::Ok, 2.0));
        // Key 2: two runs that disagree.
        add(&mut c, result(2, "d", ResultStatus::Ok, 3.0));
        add(&mut c, result(2, "e", ResultStatus::Ok, 3.5));
        // Key 3: failed. Key 4: gave up, then a real result replaces it.
        add(&mut c, result(3, "f", ResultStatus::Failed, 0.0));
        add(&mut c, result(4, "g", ResultStatus::GaveUp, 0.0));
        assert_eq!(add(&mut c, result(4, "h", ResultStatus::Ok, 4.0)), Fate::Chosen);
        // Key 5: missing. Key 9: phantom.
        assert_eq!(add(&mut c, result(9, "i", ResultStatus::Ok, 0.0)), Fate::Phantom);
        let r = c.finish(&mut NoSink);
        assert_eq!((r.done, r.failed, r.conflicts, r.missing), (3, 1, 1, 1));
        assert_eq!(r.done + r.failed + r.conflicts + r.missing, r.submitted);
        assert_eq!(
            (r.duplicates, r.duplicate_runs, r.redelivered, r.phantoms),
            (2, 2, 1, 1)
        );
        assert_eq!(r.missing_ranges, vec![(5, 5)]);
        assert_eq!(r.conflict_indices, vec![2]);
        assert!(!r.is_complete());
    }

    /// Reports list at most [`LISTED_MAX`] keys of a kind, the first ones
    /// met, while the counts go on.
    #[test]
    fn listed_keys_stop_at_the_cap_while_the_counts_go_on() {
        let over = LISTED_MAX as u64 + 3;
        let mut c = Classifier::new("s", over);
        for i in 0..over {
            add(&mut c, result(i, &format!("f{i}"), ResultStatus::Failed, 0.0));
            assert_eq!(
                add(&mut c, result(over + i, &format!("p{i}"), ResultStatus::Ok, 0.0)),
                Fate::Phantom
            );
        }
        let r = c.finish(&mut NoSink);
        assert_eq!((r.failed, r.phantoms), (over, over));
        let first: Vec<u64> = (0..LISTED_MAX as u64).collect();
        assert_eq!(r.failed_indices, first);
        let phantoms: Vec<u64> = first.iter().map(|i| over + i).collect();
        assert_eq!(r.phantom_indices, phantoms);
    }

    /// Missing keys are listed as whole ranges: a long run of them is one
    /// range however long, and past the cap on ranges the first ones stay.
    #[test]
    fn missing_ranges_are_whole_and_the_first_ones() {
        let long = LISTED_MAX as u64 * 5;
        let mut c = Classifier::new("s", long + 1);
        add(&mut c, result(long, "a", ResultStatus::Ok, 1.0));
        let r = c.finish(&mut NoSink);
        assert_eq!((r.missing, r.missing_ranges.clone()), (long, vec![(0, long - 1)]));

        // Every other key missing: one range each, the first LISTED_MAX.
        let keys = LISTED_MAX as u64 * 2 + 4;
        let mut c = Classifier::new("s", keys);
        for i in (1..keys).step_by(2) {
            add(&mut c, result(i, "a", ResultStatus::Ok, 1.0));
        }
        let r = c.finish(&mut NoSink);
        let first: Vec<(u64, u64)> = (0..LISTED_MAX as u64).map(|k| (2 * k, 2 * k)).collect();
        assert_eq!((r.missing, r.missing_ranges), (keys / 2, first));
    }

    /// A pass over a store: the sweep's rounds count the jobs they resent,
    /// and the store's sweeps are listed by id.
    #[tokio::test]
    async fn a_pass_counts_the_jobs_each_round_resent() {
        use crate::adapters::local::{DirStore, SystemClock};
        use crate::core::manifest::{self, Manifest, Round};

        let dir = crate::scratch::Scratch::new("reconcile-rounds");
        let store = DirStore::open(dir.path("store")).unwrap();
        let (clock, never) = (SystemClock::default(), crate::core::never());
        let sweep: crate::sweep::Sweep =
            toml::from_str("name = \"r\"\nruns = 10\n[experiment]\nbuiltin = \"synthetic\"\n").unwrap();
        let manifest = Manifest {
            id: sweep.id(),
            submitted: 10,
            sweep,
        };
        manifest::publish(&store, &clock, &never, &manifest).await.unwrap();
        for round in [
            Round {
                attempt: 2,
                ranges: vec![(3, 4), (7, 9)],
            },
            Round {
                attempt: 3,
                ranges: vec![(8, 8)],
            },
        ] {
            let key = manifest::round_key(&manifest.id, round.attempt);
            store
                .put_if_absent(&key, serde_json::to_vec(&round).unwrap())
                .await
                .unwrap();
        }
        let mut pass = Reconciliation::new(&manifest.id);
        assert_eq!(pass.sweep_id(), manifest.id);
        let r = pass
            .pass(&store, &clock, &never, Policy::Real, &mut NoSink)
            .await
            .unwrap();
        assert_eq!((r.rounds, r.resubmitted, r.missing), (2, 6, 10), "{r:?}");
        assert_eq!(sweep_ids(&store, &clock, &never).await.unwrap(), [manifest.id.as_str()]);
        let other = reconcile(&store, &clock, &never, Policy::Real, "none-00000000", &mut NoSink).await;
        assert!(other.is_err(), "a sweep without a manifest cannot be reconciled");
    }

    #[test]
    fn blind_conflicts_take_disagreeing_runs_for_a_done_duplicate() {
        let mut c = Classifier::new("s", 1).with_policy(Policy::BlindConflicts);
        add(&mut c, result(0, "a", ResultStatus::Ok, 1.0));
        add(&mut c, result(0, "b", ResultStatus::Ok, 2.0));
        let r = c.finish(&mut NoSink);
        assert_eq!((r.done, r.conflicts, r.duplicate_runs), (1, 0, 1), "{r:?}");
    }

    #[test]
    fn without_the_ledger_missing_keys_vanish() {
        let mut c = Classifier::new("s", 3).with_policy(Policy::NoLedger);
        add(&mut c, result(0, "a", ResultStatus::Ok, 1.0));
        let r = c.finish(&mut NoSink);
        assert_eq!((r.submitted, r.missing), (1, 0));
    }
}
