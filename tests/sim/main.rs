//! The simulator checks the real protocol and catches every planted bug.
//!
//! Each planted bug is pinned to a scenario and seed that catch it, so the
//! checker's power cannot silently regress; the real protocol must pass the
//! same runs. Replays must be exact.
// A test reads as one story from set-up to check; the length limit is for
// production code.
#![allow(clippy::too_many_lines)]

mod explore;
mod fingerprints;
mod mutants;
mod regressions;
mod replay;
mod schedules;
mod sdk;
mod sweep;

use std::path::PathBuf;

use tally::core::Policy;
use tally_sim::faults::scenario::Scenario;
use tally_sim::faults::schedule::Schedule;
use tally_sim::world::{self, RunSummary};

/// The scenario file `name` under scenarios/.
pub fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Run one seed of a scenario under a policy.
pub fn run(name: &str, seed: u64, policy: Policy) -> RunSummary {
    let s = scenario(name);
    world::run(&Schedule::draw(&s.resolve(seed), seed, policy), false)
}
