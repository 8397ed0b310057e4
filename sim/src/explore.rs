//! Coverage-guided fault search: instead of drawing every schedule afresh
//! from a seed, as a sweep does, keep a corpus of the schedules that
//! reached cells no earlier run reached ([`crate::coverage`]) and mutate
//! them, as fuzzers do: add a fault (one like a fault of the corpus, on
//! another host of the same role, at another time or step), drop one, move
//! one in time, change one fault rate, or keep the faults and reseed the
//! rest of the run (network latencies, delivery order, the roles' draws).
//! A quarter of the runs are still fresh draws, so the corpus keeps
//! widening.
//!
//! Every choice comes from one ChaCha8 stream seeded by the caller, so a
//! seed names the same sequence of runs in every build; the caller's loop
//! alone decides, by wall time, how many runs to make.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tally::core::Policy;

use crate::faults::scenario::Scenario;
use crate::faults::schedule::{hosts, role_calls, Event, Fault, Schedule};
use crate::faults::tripwire::Step;
use crate::world::{self, RunSummary};

/// Fresh draws before mutation starts.
const FRESH_FIRST: u64 = 4;

/// How a schedule was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Drawn from a seed, as a sweep does.
    Fresh,
    /// A fault added.
    Add,
    /// A fault dropped.
    Drop,
    /// A fault moved in time.
    Move,
    /// A fault rate changed.
    Rate,
    /// The faults kept, the seed changed.
    Reseed,
}

impl Origin {
    /// The origin's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fresh => "fresh draw",
            Self::Add => "fault added",
            Self::Drop => "fault dropped",
            Self::Move => "fault moved",
            Self::Rate => "rate changed",
            Self::Reseed => "reseeded",
        }
    }
}

/// One run of the search.
#[derive(Debug)]
pub struct Tried {
    /// The schedule run.
    pub schedule: Schedule,
    /// How it was made.
    pub origin: Origin,
    /// What the run found.
    pub summary: RunSummary,
    /// Cells no earlier run reached.
    pub new_cells: usize,
}

/// The search's state: its random stream, the corpus and every cell
/// reached so far.
#[derive(Debug)]
pub struct Explorer {
    scenario: Scenario,
    policy: Policy,
    rng: ChaCha8Rng,
    /// Schedules that reached new cells, in the order found.
    pub corpus: Vec<Schedule>,
    /// Every cell reached.
    pub cells: BTreeSet<String>,
    /// Runs made.
    pub runs: u64,
}

impl Explorer {
    /// A search of `scenario` under `policy`, every choice drawn from `seed`.
    pub fn new(scenario: Scenario, policy: Policy, seed: u64) -> Self {
        Self {
            scenario,
            policy,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xe7b1_03e5),
            corpus: Vec::new(),
            cells: BTreeSet::new(),
            runs: 0,
        }
    }

    /// Make the next schedule, run it, and keep it if it reached a new cell.
    pub fn step(&mut self) -> Tried {
        let (schedule, origin) = self.next_schedule();
        let summary = world::run_covered(&schedule);
        self.runs += 1;
        let before = self.cells.len();
        self.cells.extend(summary.coverage.cells.iter().cloned());
        let new_cells = self.cells.len() - before;
        if new_cells > 0 {
            self.corpus.push(schedule.clone());
        }
        Tried {
            schedule,
            origin,
            summary,
            new_cells,
        }
    }

    /// A fresh draw, or a mutation of a corpus schedule.
    pub fn next_schedule(&mut self) -> (Schedule, Origin) {
        if self.corpus.is_empty() || self.runs < FRESH_FIRST || self.rng.random_bool(0.25) {
            let seed = self.rng.random::<u64>();
            let schedule = Schedule::draw(&self.scenario.resolve(seed), seed, self.policy);
            return (schedule, Origin::Fresh);
        }
        let parent = self.corpus[self.rng.random_range(0..self.corpus.len())].clone();
        let origin =
            [Origin::Add, Origin::Drop, Origin::Move, Origin::Rate, Origin::Reseed][self.rng.random_range(0..5)];
        self.mutate(parent, origin)
    }

    /// Apply mutation `origin` to `s`; one that does not apply (no fault to
    /// drop, no rate to change) reseeds instead.
    fn mutate(&mut self, mut s: Schedule, origin: Origin) -> (Schedule, Origin) {
        let done = match origin {
            Origin::Add => self.add(&mut s),
            Origin::Drop if !s.events.is_empty() => {
                s.events.remove(self.rng.random_range(0..s.events.len()));
                true
            }
            Origin::Move if !s.events.is_empty() => {
                let k = self.rng.random_range(0..s.events.len());
                s.events[k].at_ms = self.moved(s.events[k].at_ms);
                true
            }
            Origin::Rate => self.change_rate(&mut s),
            _ => false,
        };
        sort(&mut s.events);
        if done {
            return (s, origin);
        }
        s.seed = self.rng.random::<u64>();
        (s, Origin::Reseed)
    }

    /// A time near `at_ms` (within two seconds) or anywhere in the fault
    /// phase, evenly.
    fn moved(&mut self, at_ms: u64) -> u64 {
        let fault_ms = self.scenario.fault_ms.max(1);
        if self.rng.random_bool(0.5) {
            let nudge = self.rng.random_range(0..4_000);
            (at_ms + nudge).saturating_sub(2_000).min(fault_ms - 1)
        } else {
            self.rng.random_range(0..fault_ms)
        }
    }

    /// Add a fault like one of the corpus's, on another host of the same
    /// role (and, aimed, at another step), at another time. Only kinds of
    /// fault the scenario already makes are added.
    fn add(&mut self, s: &mut Schedule) -> bool {
        let donors: Vec<&Event> = self.corpus.iter().flat_map(|c| &c.events).collect();
        if donors.is_empty() {
            return false;
        }
        let mut e = donors[self.rng.random_range(0..donors.len())].clone();
        e.at_ms = self.rng.random_range(0..self.scenario.fault_ms.max(1));
        let workers = s.resolved.scenario.workers.max(1);
        match &mut e.fault {
            Fault::Crash { host, .. } if host.starts_with("worker-") => {
                *host = hosts::worker(self.rng.random_range(0..workers));
            }
            Fault::CrashAt { host, step, .. } => {
                if host.starts_with("worker-") {
                    *host = hosts::worker(self.rng.random_range(0..workers));
                }
                let calls = role_calls(host);
                let (target, call) = calls[self.rng.random_range(0..calls.len())];
                *step = Step {
                    before: self.rng.random_bool(0.5),
                    target,
                    call,
                };
            }
            _ => {}
        }
        s.events.push(e);
        true
    }

    /// Halve, double (a probability at most 0.5) or zero one nonzero rate.
    fn change_rate(&mut self, s: &mut Schedule) -> bool {
        let names = crate::shrink::rates(s);
        if names.is_empty() {
            return false;
        }
        let name = names[self.rng.random_range(0..names.len())];
        let factor = [0.0, 0.5, 2.0][self.rng.random_range(0..3)];
        crate::shrink::each_rate(&mut s.resolved, |n, v| {
            if n == name {
                let cap = if n == "clock_skew_ms" { f64::MAX } else { 0.5 };
                *v = (*v * factor).min(cap.max(*v));
            }
        });
        true
    }
}

/// Events in time order, ties by their text, as [`Schedule::draw`] orders
/// them.
fn sort(events: &mut [Event]) {
    events.sort_by(|a, b| {
        a.at_ms
            .cmp(&b.at_ms)
            .then_with(|| format!("{:?}", a.fault).cmp(&format!("{:?}", b.fault)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::scenario::FaultSpec;

    fn small() -> Scenario {
        Scenario {
            name: "t".into(),
            jobs: 10,
            workers: 2,
            slots: 1,
            fault_ms: 10_000,
            faults: FaultSpec {
                worker_crashes: Some(2),
                step_crashes: Some(2),
                lost_reply_rate: Some(0.01),
                ..FaultSpec::default()
            },
            ..Scenario::default()
        }
    }

    #[test]
    fn a_seed_names_the_same_sequence_of_mutated_schedules() {
        let mutations = |seed| {
            let mut x = Explorer::new(small(), Policy::Real, seed);
            let fresh = Schedule::draw(&x.scenario.resolve(7), 7, Policy::Real);
            x.corpus.push(fresh);
            x.runs = FRESH_FIRST;
            (0..40).map(|_| x.next_schedule()).collect::<Vec<_>>()
        };
        let a = mutations(1);
        assert_eq!(a, mutations(1));
        assert_ne!(a, mutations(2));
        for (s, origin) in &a {
            assert!(s.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "{origin:?}");
            assert!(s.events.iter().all(|e| e.at_ms < 10_000), "{origin:?}");
        }
        let origins: BTreeSet<&str> = a.iter().map(|(_, o)| o.name()).collect();
        assert_eq!(origins.len(), 6, "every kind of change is made: {origins:?}");
    }
}
