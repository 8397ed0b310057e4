//! A sweep's failing seeds are grouped by fingerprint: one planted bug
//! failing many seeds makes few groups, and different bugs make different
//! fingerprints.

use tally::core::Policy;
use tally_sim::faults::schedule::Schedule;
use tally_sim::fingerprint::{Groups, SHRINK_RUNS};
use tally_sim::world;

use crate::scenario;

/// Sweep seeds `seeds` of scenario `name` under `policy`, grouping the
/// failing ones.
fn sweep(name: &str, seeds: std::ops::Range<u64>, policy: Policy) -> Groups {
    let s = scenario(name);
    let mut groups = Groups::new(SHRINK_RUNS);
    for seed in seeds {
        let schedule = Schedule::draw(&s.resolve(seed), seed, policy);
        let out = world::run(&schedule, false);
        if !out.verdict.passed() {
            groups.add(&schedule, &out.verdict);
        }
    }
    groups
}

#[test]
fn a_planted_bug_failing_many_seeds_makes_fewer_groups_than_seeds_and_another_bug_another_fingerprint() {
    let naive = sweep("worker-crash", 1..9, Policy::Naive);
    assert!(naive.failing() >= 6, "naive workers fail most seeds: {naive:?}");
    assert!(
        naive.groups.len() * 2 <= naive.failing(),
        "{} failing seeds should make at most half as many groups: {:?}",
        naive.failing(),
        naive.groups
    );
    let crash = naive
        .groups
        .iter()
        .find(|g| g.fingerprint.classes == ["dropped-job"])
        .expect("a group of dropped jobs");
    assert_eq!(crash.fingerprint.strike.role, "worker", "{crash:?}");
    assert!(crash.seeds.len() >= 4, "{crash:?}");

    let no_ledger = sweep("queue-deletion", 0..2, Policy::NoLedger);
    assert_eq!(no_ledger.failing(), 2, "{no_ledger:?}");
    assert_eq!(no_ledger.groups.len(), 1, "{no_ledger:?}");
    let deleted = &no_ledger.groups[0].fingerprint;
    assert_eq!(deleted.strike.role, "sqs", "{deleted:?}");
    assert!(deleted.strike.step.starts_with("delete-"), "{deleted:?}");
    for g in &naive.groups {
        assert_ne!(&g.fingerprint, deleted, "two bugs, one fingerprint");
    }
}
