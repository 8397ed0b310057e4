//! Shrinking a failing run to a minimal fault schedule.
//!
//! Delta debugging (ddmin) over the schedule's faults — timed events and
//! nonzero fault rates alike — then fewer jobs and workers, keeping the same
//! violation class, until removing any single remaining fault makes the
//! run pass.

use std::collections::BTreeSet;

use crate::faults::scenario::Resolved;
use crate::faults::schedule::{Event, Schedule};
use crate::world;

/// The faults of a schedule as removable units.
#[derive(Clone, Debug, PartialEq)]
enum Unit {
    Event(Event),
    Rate(&'static str),
}

/// What shrinking found.
#[derive(Debug)]
pub struct Shrunk {
    /// The minimal failing schedule.
    pub schedule: Schedule,
    /// Faults before shrinking.
    pub faults_before: usize,
    /// Faults after.
    pub faults_after: usize,
    /// Runs tried.
    pub runs: u64,
    /// The violation kinds the minimal run shows.
    pub kinds: BTreeSet<&'static str>,
}

/// Call `f` with each fault rate of `r`, by name, letting it change the
/// rate. The one list of the rates shrinking knows.
pub(crate) fn each_rate(r: &mut Resolved, mut f: impl FnMut(&'static str, &mut f64)) {
    f("lost_reply_rate", &mut r.lost_reply_rate);
    f("s3_error_rate", &mut r.s3_error_rate);
    f("sqs_entry_failure_rate", &mut r.sqs_entry_failure_rate);
    f("duplicate_delivery_rate", &mut r.duplicate_delivery_rate);
    f("slow_job_rate", &mut r.slow_job_rate);
    f("nondeterministic_rate", &mut r.nondeterministic_rate);
    f("crash_job_rate", &mut r.crash_job_rate);
    f("hang_job_rate", &mut r.hang_job_rate);
    f("huge_output_rate", &mut r.huge_output_rate);
    let mut skew = r.clock_skew_ms as f64;
    f("clock_skew_ms", &mut skew);
    r.clock_skew_ms = skew as u64;
}

/// The names of the nonzero rates.
pub(crate) fn rates(s: &Schedule) -> Vec<&'static str> {
    let mut names = Vec::new();
    each_rate(&mut s.resolved.clone(), |name, v| {
        if *v > 0.0 {
            names.push(name);
        }
    });
    names
}

fn units(s: &Schedule) -> Vec<Unit> {
    s.events
        .iter()
        .cloned()
        .map(Unit::Event)
        .chain(rates(s).into_iter().map(Unit::Rate))
        .collect()
}

/// The schedule keeping only `keep` of `base`'s faults.
fn with_units(base: &Schedule, keep: &[Unit]) -> Schedule {
    let mut s = base.clone();
    s.events = keep
        .iter()
        .filter_map(|u| if let Unit::Event(e) = u { Some(e.clone()) } else { None })
        .collect();
    let kept: Vec<&str> = keep
        .iter()
        .filter_map(|u| if let Unit::Rate(r) = u { Some(*r) } else { None })
        .collect();
    each_rate(&mut s.resolved, |name, v| {
        if !kept.contains(&name) {
            *v = 0.0;
        }
    });
    s
}

/// The number of faults in a schedule.
pub fn fault_count(s: &Schedule) -> usize {
    units(s).len()
}

struct Tester {
    wanted: BTreeSet<&'static str>,
    runs: u64,
    /// Runs allowed in all; past them every try counts as passing, so
    /// shrinking stops with what it has.
    max_runs: u64,
}

impl Tester {
    /// Whether `s` still fails with a wanted violation kind.
    fn fails(&mut self, s: &Schedule) -> Option<BTreeSet<&'static str>> {
        if self.runs >= self.max_runs {
            return None;
        }
        self.runs += 1;
        let out = world::run(s, false);
        let kinds: BTreeSet<&'static str> = out.verdict.counts.keys().copied().collect();
        kinds.iter().any(|k| self.wanted.contains(k)).then_some(kinds)
    }
}

/// Shrink `failing`, which must fail. `progress` hears about each step:
/// fewer jobs first (every later run is cheaper), then delta debugging
/// over the faults, then fewer workers.
pub fn shrink(failing: &Schedule, progress: impl FnMut(&str)) -> Result<Shrunk, String> {
    shrink_within(failing, u64::MAX, progress)
}

/// [`shrink`] making at most `max_runs` runs, the first included: once they
/// are spent it stops where it is, with a schedule that still fails but may
/// not be minimal.
pub fn shrink_within(failing: &Schedule, max_runs: u64, mut progress: impl FnMut(&str)) -> Result<Shrunk, String> {
    let first = world::run(failing, false);
    if first.verdict.passed() {
        return Err("the run passes: there is nothing to shrink".into());
    }
    let mut t = Tester {
        wanted: first.verdict.counts.keys().copied().collect(),
        runs: 1,
        max_runs,
    };
    let mut kinds = t.wanted.clone();
    let best = fewer_jobs(&mut t, failing.clone(), &mut kinds, &mut progress);
    let current = fewer_faults(&mut t, &best, &mut kinds, &mut progress);
    let schedule = fewer_workers(&mut t, with_units(&best, &current), &mut kinds, &mut progress);
    Ok(Shrunk {
        faults_after: fault_count(&schedule),
        schedule,
        faults_before: fault_count(failing),
        runs: t.runs,
        kinds,
    })
}

/// Halve the jobs while the run keeps failing.
fn fewer_jobs(
    t: &mut Tester,
    mut best: Schedule,
    kinds: &mut BTreeSet<&'static str>,
    progress: &mut impl FnMut(&str),
) -> Schedule {
    while best.resolved.scenario.jobs > 50 {
        let mut s = best.clone();
        s.resolved.scenario.jobs /= 2;
        match t.fails(&s) {
            Some(k) => {
                progress(&format!("jobs -> {}", s.resolved.scenario.jobs));
                best = s;
                *kinds = k;
            }
            None => break,
        }
    }
    best
}

/// Delta debugging (ddmin) over the faults of `best`: the smallest set of
/// units found whose removal of any one makes the run pass.
fn fewer_faults(
    t: &mut Tester,
    best: &Schedule,
    kinds: &mut BTreeSet<&'static str>,
    progress: &mut impl FnMut(&str),
) -> Vec<Unit> {
    let mut current = units(best);
    let mut n = 2;
    while current.len() >= 2 {
        let chunk = current.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..current.len()).step_by(chunk) {
            let complement: Vec<Unit> = current[..start]
                .iter()
                .chain(current[(start + chunk).min(current.len())..].iter())
                .cloned()
                .collect();
            if let Some(k) = t.fails(&with_units(best, &complement)) {
                progress(&format!("{} faults left", complement.len()));
                current = complement;
                *kinds = k;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= current.len() {
                break;
            }
            n = (n * 2).min(current.len());
        }
    }
    if current.len() == 1 {
        if let Some(k) = t.fails(&with_units(best, &[])) {
            current.clear();
            *kinds = k;
        }
    }
    current
}

/// Drop the highest-numbered worker while no fault names it and the run
/// keeps failing.
fn fewer_workers(
    t: &mut Tester,
    mut schedule: Schedule,
    kinds: &mut BTreeSet<&'static str>,
    progress: &mut impl FnMut(&str),
) -> Schedule {
    while schedule.resolved.scenario.workers > 1 {
        let mut s = schedule.clone();
        s.resolved.scenario.workers -= 1;
        let k = s.resolved.scenario.workers;
        let uses_gone_worker = s
            .events
            .iter()
            .any(|e| format!("{:?}", e.fault).contains(&format!("worker-{k}\"")));
        if uses_gone_worker {
            break;
        }
        match t.fails(&s) {
            Some(found) => {
                progress(&format!("workers -> {k}"));
                schedule = s;
                *kinds = found;
            }
            None => break,
        }
    }
    schedule
}
