//! Fault schedules: the exact faults of one run — which fault, when in
//! simulated time, against which host, link or queue. A schedule is drawn
//! from a scenario and a seed, can be written to a file, and replays the
//! run exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::faults::scenario::Resolved;
use crate::faults::tripwire::{Call, Target};

/// Host names.
pub mod hosts {
    /// The simulated SQS service.
    pub const SQS: &str = "sqs";
    /// The simulated S3 service.
    pub const S3: &str = "s3";
    /// The submitter.
    pub const SUBMITTER: &str = "submitter";
    /// The aggregator.
    pub const AGGREGATOR: &str = "aggregator";
    /// The reconciler.
    pub const RECONCILER: &str = "reconciler";

    /// The name of worker host `k`.
    pub fn worker(k: u32) -> String {
        format!("worker-{k}")
    }
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Crash `host`, losing its memory; restart it `down_ms` later.
    Crash {
        /// The host.
        host: String,
        /// How long it stays down.
        down_ms: u64,
    },
    /// Cut the link between `a` and `b` for `ms` (only `a` to `b` when
    /// `oneway`).
    Partition {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// How long.
        ms: u64,
        /// Only messages from `a` to `b` are lost.
        oneway: bool,
    },
    /// Crash `host` right before or after its next call of one kind
    /// (`step`, from now on); restart it `down_ms` later.
    CrashAt {
        /// The host.
        host: String,
        /// The protocol step.
        step: crate::faults::tripwire::Step,
        /// How long it stays down.
        down_ms: u64,
    },
    /// Delete a queue and everything in it.
    DeleteQueue {
        /// The queue.
        queue: String,
    },
    /// Purge a queue: every message in it (and those sent during the
    /// purge's window) is destroyed.
    Purge {
        /// The queue.
        queue: String,
    },
}

/// A fault at a moment of simulated time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, simulated ms from the start.
    pub at_ms: u64,
    /// The fault itself.
    #[serde(flatten)]
    pub fault: Fault,
}

/// Everything that decides a run: seed, resolved scenario, and faults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The seed (network latencies, SQS ordering, draws of the roles).
    pub seed: u64,
    /// Which protocol the roles follow.
    pub policy: tally::core::Policy,
    /// The scenario with every rate resolved.
    pub resolved: Resolved,
    /// The faults, in time order.
    pub events: Vec<Event>,
}

/// Queue names in the simulation.
pub const JOBS_QUEUE: &str = "tally-jobs";
/// The results queue.
pub const RESULTS_QUEUE: &str = "tally-results";

impl Schedule {
    /// Draw the faults of `resolved` from `seed`. The draws are made in a
    /// fixed order (crashes, aimed crashes, partitions, deletions), so a
    /// seed names the same schedule in every build.
    pub fn draw(resolved: &Resolved, seed: u64, policy: tally::core::Policy) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa17_5eed);
        let mut events = Vec::new();
        draw_crashes(&mut rng, resolved, &mut events);
        draw_aimed_crashes(&mut rng, resolved, &mut events);
        draw_partitions(&mut rng, resolved, &mut events);
        draw_deletions(&mut rng, resolved, &mut events);
        draw_purges(&mut rng, resolved, &mut events);
        events.sort_by(|a, b| {
            a.at_ms
                .cmp(&b.at_ms)
                .then_with(|| format!("{:?}", a.fault).cmp(&format!("{:?}", b.fault)))
        });
        Self {
            seed,
            policy,
            resolved: resolved.clone(),
            events,
        }
    }

    /// The schedule as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a schedule serialises")
    }

    /// Read a schedule written by [`Schedule::to_toml`].
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// When a fault strikes: anywhere in the fault phase.
fn draw_at(rng: &mut ChaCha8Rng, resolved: &Resolved) -> u64 {
    rng.random_range(0..resolved.scenario.fault_ms.max(1))
}

/// Timed crashes of workers, then of the aggregator, submitter and reconciler.
fn draw_crashes(rng: &mut ChaCha8Rng, resolved: &Resolved, events: &mut Vec<Event>) {
    let crash = |rng: &mut ChaCha8Rng, host: String| Event {
        at_ms: draw_at(rng, resolved),
        fault: Fault::Crash {
            host,
            down_ms: rng.random_range(100..5_000),
        },
    };
    for _ in 0..resolved.worker_crashes {
        let k = rng.random_range(0..resolved.scenario.workers);
        events.push(crash(rng, hosts::worker(k)));
    }
    for (n, host) in [
        (resolved.aggregator_crashes, hosts::AGGREGATOR),
        (resolved.submitter_crashes, hosts::SUBMITTER),
        (resolved.reconciler_crashes, hosts::RECONCILER),
    ] {
        for _ in 0..n {
            events.push(crash(rng, host.to_owned()));
        }
    }
}

/// The calls each role makes, so aimed crashes strike only where a role
/// can be: `(target, call)` pairs, each aimed at before and after.
pub fn role_calls(host: &str) -> &'static [(Target, Call)] {
    use crate::faults::tripwire::{Call::*, Target::*};
    if host.starts_with("worker-") {
        &[
            (Jobs, Receive),
            (Jobs, Delete),
            (Jobs, Extend),
            (Results, Send),
            (Store, Get),
        ]
    } else if host == hosts::AGGREGATOR {
        &[(Results, Receive), (Results, Delete), (Results, Extend), (Store, Put)]
    } else if host == hosts::SUBMITTER {
        &[(Jobs, Ensure), (Jobs, Send), (Store, Put), (Store, Get)]
    } else {
        &[
            (Jobs, Stats),
            (Results, Stats),
            (Jobs, Send),
            (Store, Put),
            (Store, Get),
            (Store, List),
        ]
    }
}

/// Crashes aimed at protocol steps.
fn draw_aimed_crashes(rng: &mut ChaCha8Rng, resolved: &Resolved, events: &mut Vec<Event>) {
    use crate::faults::tripwire::Step;
    for _ in 0..resolved.step_crashes {
        let host = match rng.random_range(0..5) {
            0 | 1 => hosts::worker(rng.random_range(0..resolved.scenario.workers)),
            2 => hosts::AGGREGATOR.to_owned(),
            3 => hosts::SUBMITTER.to_owned(),
            _ => hosts::RECONCILER.to_owned(),
        };
        let calls = role_calls(&host);
        let (target, call) = calls[rng.random_range(0..calls.len())];
        let step = Step {
            before: rng.random_bool(0.5),
            target,
            call,
        };
        let down_ms = rng.random_range(100..5_000);
        events.push(Event {
            at_ms: draw_at(rng, resolved),
            fault: Fault::CrashAt { host, step, down_ms },
        });
    }
}

/// Two-way, then one-way partitions between a role and SQS or S3.
fn draw_partitions(rng: &mut ChaCha8Rng, resolved: &Resolved, events: &mut Vec<Event>) {
    let roles: Vec<String> = (0..resolved.scenario.workers)
        .map(hosts::worker)
        .chain([hosts::AGGREGATOR, hosts::SUBMITTER, hosts::RECONCILER].map(String::from))
        .collect();
    for (n, oneway) in [(resolved.partitions, false), (resolved.oneway_partitions, true)] {
        for _ in 0..n {
            let role = roles[rng.random_range(0..roles.len())].clone();
            let service = if rng.random_bool(0.7) { hosts::SQS } else { hosts::S3 }.to_owned();
            let (a, b) = if oneway && rng.random_bool(0.5) {
                (service, role)
            } else {
                (role, service)
            };
            events.push(Event {
                at_ms: draw_at(rng, resolved),
                fault: Fault::Partition {
                    a,
                    b,
                    ms: rng.random_range(200..8_000),
                    oneway,
                },
            });
        }
    }
}

/// Deletions of the work queue, then of the results queue.
fn draw_deletions(rng: &mut ChaCha8Rng, resolved: &Resolved, events: &mut Vec<Event>) {
    for (n, queue) in [
        (resolved.jobs_queue_deletions, JOBS_QUEUE),
        (resolved.results_queue_deletions, RESULTS_QUEUE),
    ] {
        for _ in 0..n {
            events.push(Event {
                at_ms: draw_at(rng, resolved),
                fault: Fault::DeleteQueue {
                    queue: queue.to_owned(),
                },
            });
        }
    }
}

/// Purges of each queue (none unless the scenario asks: no draw is made,
/// so other schedules stay as they were).
fn draw_purges(rng: &mut ChaCha8Rng, resolved: &Resolved, events: &mut Vec<Event>) {
    for queue in [JOBS_QUEUE, RESULTS_QUEUE] {
        for _ in 0..resolved.scenario.worst.purges {
            events.push(Event {
                at_ms: draw_at(rng, resolved),
                fault: Fault::Purge {
                    queue: queue.to_owned(),
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::scenario::{FaultSpec, Scenario};

    #[test]
    fn a_schedule_is_a_function_of_the_seed_and_round_trips_through_toml() {
        let scenario = Scenario {
            name: "t".into(),
            jobs: 10,
            workers: 2,
            slots: 1,
            fault_ms: 10_000,
            faults: FaultSpec::default(),
            ..Scenario::default()
        };
        let resolved = scenario.resolve(3);
        let a = Schedule::draw(&resolved, 3, tally::core::Policy::Real);
        assert_eq!(a, Schedule::draw(&resolved, 3, tally::core::Policy::Real));
        assert_eq!(Schedule::from_toml(&a.to_toml()).unwrap(), a);
        assert!(a.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }
}
