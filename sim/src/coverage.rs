//! Coverage of one run: the cells of the space of what can happen that the
//! run reached, for coverage-guided search (`tally-sim explore`).
//!
//! Three kinds of cell, each a short line of text:
//! - `fault KIND ROLE at STEP`: a fault that struck a role (a crash of a
//!   running host, a partition, a fired tripwire) and the protocol step
//!   the role had last passed when it struck (`start` before its first
//!   call); queue deletions and purges strike `sqs` at the driver's
//!   phase: `round-K`, the resubmission rounds recorded so far (up to 3).
//! - `key CLASS RAN RESENT FATES`: a key's final class (`done`, `failed`,
//!   `conflict`, `missing`...) and how it got there: its experiment never
//!   ran, ran once or ran again, whether a resubmitted attempt of it was
//!   answered, and which of its messages left the queues other than by a
//!   delete (`job-lost`, `resent-job-lost`, `result-lost`,
//!   `dead-lettered`, joined by `+`; `kept` when none).
//! - `rare NAME`: a rare behaviour of the SQS model (a stale handle used
//!   or still deleting, a dead-letter move, a recreate refused while the
//!   name was deleted recently, a latent duplicate made or shown, a purge,
//!   a throttled call, an under-count, a short receive...).
//!
//! Recording a cell draws nothing and changes nothing the run does.

use std::collections::{BTreeMap, BTreeSet};

use tally::core::reconciler::KeyClass;

use crate::checker::oracle::{fate, Oracle};
use crate::checker::Recorder;
use crate::faults::schedule::{hosts, Fault};
use crate::faults::strike::{role_of, strike_of};
use crate::faults::tripwire::Wires;

/// The cells one run reached. The default records nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// The cells, each a line of text.
    pub cells: BTreeSet<String>,
    /// Whether cells are recorded.
    pub on: bool,
}

fn step_name(step: Option<crate::faults::tripwire::Step>) -> String {
    step.map_or_else(|| "start".to_owned(), String::from)
}

impl Coverage {
    /// Coverage that records cells.
    pub fn recording() -> Self {
        Self {
            cells: BTreeSet::new(),
            on: true,
        }
    }

    /// Scheduled `fault` strikes now; `wires` know each role's last step,
    /// `rounds` is how many resubmission rounds the driver has recorded.
    /// A crash of a host that is down strikes nothing: call this only for
    /// one that is running. An aimed crash only arms a wire here; it
    /// strikes when it fires ([`Coverage::fired`]).
    pub fn struck(&mut self, fault: &Fault, wires: &Wires, rounds: u32) {
        if !self.on {
            return;
        }
        let host = match fault {
            Fault::Crash { host, .. } => host,
            Fault::Partition { a, b, .. } if a == hosts::SQS || a == hosts::S3 => b,
            Fault::Partition { a, .. } => a,
            Fault::CrashAt { .. } => return,
            Fault::DeleteQueue { .. } | Fault::Purge { .. } => {
                let s = strike_of(fault);
                let at = rounds.min(3);
                self.cells.insert(format!("fault {} {} at round-{at}", s.step, s.role));
                return;
            }
        };
        let s = strike_of(fault);
        let at = step_name(wires.last_step(host));
        self.cells.insert(format!("fault {} {} at {at}", s.step, s.role));
    }

    /// A tripwire (or a poison job) crashed `host` at its last step.
    pub fn fired(&mut self, host: &str, wires: &Wires) {
        if !self.on {
            return;
        }
        let at = step_name(wires.last_step(host));
        self.cells.insert(format!("fault crash-at {} at {at}", role_of(host)));
    }

    /// Every key's final class and how it got there.
    pub fn keys(&mut self, truth: &Oracle, recorded: &Recorder) {
        if !self.on {
            return;
        }
        let mut seen: BTreeSet<(Option<KeyClass>, u16, bool, u8)> = BTreeSet::new();
        for index in 0..truth.jobs {
            let i = index as usize;
            let class = recorded.classes.get(i).copied().flatten();
            let ran = truth.runs_started.get(i).map_or(0, |&n| n.min(2));
            let fates = truth.fates.get(i).copied().unwrap_or(0);
            seen.insert((class, ran, truth.answered_again(index), fates));
        }
        for (class, ran, again, fates) in seen {
            let fates: Vec<&str> = fate::NAMES
                .iter()
                .filter(|(bit, _)| fates & bit != 0)
                .map(|(_, name)| *name)
                .collect();
            self.cells.insert(format!(
                "key {} {} {} {}",
                class.map_or("unclassed", KeyClass::as_str),
                ["unrun", "ran-once", "ran-again"][usize::from(ran)],
                if again { "resubmitted" } else { "first-attempt" },
                if fates.is_empty() {
                    "kept".to_owned()
                } else {
                    fates.join("+")
                }
            ));
        }
    }

    /// The SQS model's rare behaviours that happened.
    pub fn rare(&mut self, events: &BTreeMap<&'static str, u64>) {
        if !self.on {
            return;
        }
        for (name, _) in events.iter().filter(|(_, &n)| n > 0) {
            self.cells.insert(format!("rare {name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::tripwire::Step;

    #[test]
    fn a_fault_strikes_a_role_at_its_last_step_and_an_aimed_crash_only_when_it_fires() {
        let wires = Wires::default();
        let mut c = Coverage::recording();
        c.struck(
            &Fault::Crash {
                host: hosts::worker(1),
                down_ms: 1,
            },
            &wires,
            0,
        );
        c.struck(
            &Fault::CrashAt {
                host: hosts::AGGREGATOR.into(),
                step: Step::SEGMENT_STORED,
                down_ms: 1,
            },
            &wires,
            0,
        );
        c.struck(
            &Fault::Partition {
                a: hosts::SQS.into(),
                b: hosts::SUBMITTER.into(),
                ms: 1,
                oneway: true,
            },
            &wires,
            0,
        );
        let cells: Vec<&str> = c.cells.iter().map(String::as_str).collect();
        assert_eq!(
            cells,
            [
                "fault crash worker at start",
                "fault partition-from-sqs submitter at start"
            ]
        );
    }
}
