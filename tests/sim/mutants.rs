//! Every planted bug is caught, each by the violation it should cause, and
//! the real protocol passes the very same runs.

use tally::core::Policy;
use tally_sim::faults::scenario::Scenario;
use tally_sim::faults::schedule::Schedule;
use tally_sim::world;

use crate::{run, scenario};

fn caught(name: &str, seed: u64, policy: Policy, kind: &str) {
    let out = run(name, seed, policy);
    assert!(
        out.verdict.counts.contains_key(kind),
        "{} on {name} seed {seed} should be caught as {kind}; verdict {:?}",
        policy.name(),
        out.verdict.counts
    );
    let real = run(name, seed, Policy::Real);
    assert!(
        real.verdict.passed(),
        "the real protocol fails {name} seed {seed}: {:?}",
        real.verdict.violations
    );
}

/// Caught as [`caught`] says, and passing the same seed once `calm` takes
/// away the one harsh behaviour of the world the bug relies on: only that
/// behaviour exposes it.
fn caught_only_when_harsh(name: &str, seed: u64, policy: Policy, kind: &str, calm: impl Fn(&mut Scenario)) {
    caught(name, seed, policy, kind);
    let mut s = scenario(name);
    calm(&mut s);
    let out = world::run(&Schedule::draw(&s.resolve(seed), seed, policy), false);
    assert!(
        out.verdict.passed(),
        "{} on a calmer {name} seed {seed} should pass: {:?}",
        policy.name(),
        out.verdict.violations
    );
}

#[test]
fn naive_workers_that_delete_first_are_caught_dropping_jobs_when_they_crash() {
    caught("worker-crash", 1, Policy::Naive, "dropped-job");
}

#[test]
fn a_naive_aggregator_that_deletes_before_storing_is_caught_losing_results() {
    caught("aggregator-crash", 0, Policy::Naive, "lost-result");
}

#[test]
fn not_recreating_a_deleted_queue_is_caught_as_jobs_never_finishing() {
    caught("queue-deletion", 2, Policy::NoRecreate, "not-final");
}

#[test]
fn an_aggregator_that_drops_duplicates_is_caught_losing_accepted_results() {
    caught("cloud-worst-case", 0, Policy::SilentDedupe, "lost-result");
}

#[test]
fn a_reconciler_without_the_receipts_ledger_is_caught_losing_jobs_silently() {
    caught("queue-deletion", 0, Policy::NoLedger, "lost-job");
}

#[test]
fn a_driver_that_finishes_on_an_empty_work_queue_is_caught_resending_results_on_their_way() {
    caught("aggregator-crash", 0, Policy::EagerFinish, "needless-resubmission");
}

#[test]
fn a_driver_that_resends_only_after_a_queue_deletion_is_caught_only_when_messages_expire() {
    caught_only_when_harsh("expiry", 0, Policy::DeletionOnly, "not-final", |s| {
        s.retention_ms = None
    });
}
