//! Failure fingerprints: many failing seeds of a sweep are usually a few
//! bugs, so failures are grouped by what they broke and by the fault that
//! broke it.
//!
//! A fingerprint is the sorted set of the run's violation kinds plus the
//! role and protocol step of the *first fault that matters*. That fault is
//! found by a bounded shrink ([`crate::shrink::shrink_within`], at most
//! [`SHRINK_RUNS`] runs) of the first seed of a group only: the first fault
//! (in time, then rates) of the shrunk schedule. Shrinking is what says a
//! fault matters — the earliest fault of a run is often one that changed
//! nothing — and bounding it keeps a sweep that finds a bug quick; a
//! bounded shrink is as deterministic as the runs it makes.
//!
//! Later seeds are not shrunk: a failing seed joins the first group with
//! the same violation kinds whose fault its own schedule also has (the
//! same kind of fault on the same role, at the same step), or whose
//! shrunk schedule needed no fault at all. Only a seed that joins no group
//! is shrunk, opening a new one. So a sweep costs one bounded shrink per
//! distinct failure, and a given seed range always gives the same groups.

use std::fmt;

use serde::Serialize;

use crate::checker::Verdict;
use crate::faults::schedule::Schedule;
pub use crate::faults::strike::{role_of, strike_of, strike_of_rate, Strike};

/// Runs a fingerprint's shrink may make.
pub const SHRINK_RUNS: u64 = 40;

/// Every strike `schedule` can make: its events', in time order, then its
/// nonzero rates'.
pub fn strikes(schedule: &Schedule) -> Vec<Strike> {
    schedule
        .events
        .iter()
        .map(|e| strike_of(&e.fault))
        .chain(crate::shrink::rates(schedule).into_iter().map(strike_of_rate))
        .collect()
}

/// One distinct failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// The violation kinds, sorted.
    pub classes: Vec<&'static str>,
    /// The first fault that matters.
    pub strike: Strike,
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] after {}", self.classes.join(", "), self.strike)
    }
}

/// The violation kinds of a failing verdict, sorted.
pub fn classes(verdict: &Verdict) -> Vec<&'static str> {
    verdict.counts.keys().copied().collect()
}

/// The first fault that matters in `failing`, which failed: the first
/// fault left by a shrink of at most `max_runs` runs ([`Strike::none`]
/// when none is left), and the runs the shrink made.
pub fn first_fault_that_matters(failing: &Schedule, max_runs: u64) -> (Strike, u64) {
    match crate::shrink::shrink_within(failing, max_runs, |_| {}) {
        Ok(shrunk) => (
            strikes(&shrunk.schedule)
                .into_iter()
                .next()
                .unwrap_or_else(Strike::none),
            shrunk.runs,
        ),
        // It passed when run again: nothing is known of its fault (the
        // simulator is deterministic, so this is a bug of its own).
        Err(_) => (Strike::none(), 1),
    }
}

/// Failing seeds that share a fingerprint.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// What they share.
    pub fingerprint: Fingerprint,
    /// The seeds, in the order they were found.
    pub seeds: Vec<u64>,
}

/// The failures of a sweep, grouped by fingerprint.
#[derive(Debug)]
pub struct Groups {
    /// The groups, in the order their first seed was found.
    pub groups: Vec<Group>,
    /// Runs made by the fingerprints' shrinks.
    pub shrink_runs: u64,
    max_runs: u64,
}

impl Groups {
    /// No failures yet; each new group's shrink may make `max_runs` runs.
    pub fn new(max_runs: u64) -> Self {
        Self {
            groups: Vec::new(),
            shrink_runs: 0,
            max_runs,
        }
    }

    /// Add a failing run of `schedule` with `verdict`; returns the index of
    /// its group. See the module docs for how a seed joins a group.
    pub fn add(&mut self, schedule: &Schedule, verdict: &Verdict) -> usize {
        let classes = classes(verdict);
        let has = strikes(schedule);
        let joined = self.groups.iter().position(|g| {
            g.fingerprint.classes == classes
                && (g.fingerprint.strike == Strike::none() || has.contains(&g.fingerprint.strike))
        });
        if let Some(k) = joined {
            self.groups[k].seeds.push(schedule.seed);
            return k;
        }
        let (strike, runs) = first_fault_that_matters(schedule, self.max_runs);
        self.shrink_runs += runs;
        self.groups.push(Group {
            fingerprint: Fingerprint { classes, strike },
            seeds: vec![schedule.seed],
        });
        self.groups.len() - 1
    }

    /// Failing seeds in all.
    pub fn failing(&self) -> usize {
        self.groups.iter().map(|g| g.seeds.len()).sum()
    }
}
