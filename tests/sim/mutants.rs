//! Every planted bug is caught, each by the violation it should cause, and
//! the real protocol passes the very same runs.

use tally::core::Policy;
use tally_sim::faults::scenario::Scenario;
use tally_sim::faults::schedule::Schedule;
use tally_sim::world::{self, RunSummary};

use crate::{run, scenario};

/// Run one seed of scenario `name`, changed by `change`, under `policy`.
fn run_changed(name: &str, seed: u64, policy: Policy, change: impl Fn(&mut Scenario)) -> RunSummary {
    let mut s = scenario(name);
    change(&mut s);
    world::run(&Schedule::draw(&s.resolve(seed), seed, policy), false)
}

/// `policy` passes seed `seed` of `name` once `change` takes away what
/// exposes it, and so does the real protocol: only what `change` took away
/// catches the bug.
fn passes_without(name: &str, seed: u64, policy: Policy, change: impl Fn(&mut Scenario)) {
    for p in [policy, Policy::Real] {
        let out = run_changed(name, seed, p, &change);
        assert!(
            out.verdict.passed(),
            "{} should pass {name} seed {seed} once changed: {:?}",
            p.name(),
            out.verdict.violations
        );
    }
}

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
    caught("expiry", 0, Policy::DeletionOnly, "not-final");
    passes_without("expiry", 0, Policy::DeletionOnly, |s| s.retention_ms = None);
}

#[test]
fn a_reconciler_blind_to_conflicts_is_caught_only_when_runs_of_a_key_can_disagree() {
    caught("messy-experiments", 0, Policy::BlindConflicts, "unreported-conflict");
    passes_without("messy-experiments", 0, Policy::BlindConflicts, |s| {
        s.faults.nondeterministic_rate = Some(0.0);
    });
}

#[test]
fn a_worker_that_never_gives_up_is_caught_only_when_poison_jobs_keep_crashing_it() {
    caught("messy-experiments", 0, Policy::NoGiveUp, "not-final");
    passes_without("messy-experiments", 0, Policy::NoGiveUp, |s| {
        s.faults.crash_job_rate = Some(0.0);
        s.faults.hang_job_rate = Some(0.0);
        s.faults.huge_output_rate = Some(0.0);
    });
}

#[test]
fn several_sweeps_sharing_the_queues_are_each_checked_and_a_reconciler_without_the_ledger_is_caught_in_each() {
    caught("several-sweeps", 0, Policy::NoLedger, "lost-job");
    let out = run("several-sweeps", 0, Policy::NoLedger);
    let s = scenario("several-sweeps");
    let ids: std::collections::BTreeSet<String> =
        world::sweeps_for(&Schedule::draw(&s.resolve(0), 0, Policy::NoLedger))
            .iter()
            .map(tally::sweep::Sweep::id)
            .collect();
    assert_eq!(
        ids.len(),
        3,
        "three sweeps, one an edited file under the name of another: {ids:?}"
    );
    for id in ids {
        let named = format!("sweep {id}: ");
        assert!(
            out.verdict.violations.iter().any(|v| v.detail.starts_with(&named)),
            "no violation names sweep {id}: {:?}",
            out.verdict.violations
        );
    }
    let real = run("several-sweeps", 0, Policy::Real);
    assert_eq!(real.report.submitted, 3 * 700, "{:?}", real.report);
}

#[test]
fn a_driver_without_a_quiet_period_is_caught_only_when_the_counts_lag() {
    caught("lagging-counts", 8, Policy::NoQuiet, "needless-resubmission");
    passes_without("lagging-counts", 8, Policy::NoQuiet, |s| s.worst.count_lag_ms = 0);
}

#[test]
fn a_driver_that_never_rereads_after_complete_is_caught_only_when_duplicates_come_late() {
    caught("latent-duplicates", 0, Policy::CompleteOnce, "unreported-change");
    passes_without("latent-duplicates", 0, Policy::CompleteOnce, |s| {
        s.worst.latent_duplicate_max_ms = 0;
    });
}

#[test]
fn duplicates_that_come_back_up_to_an_hour_later_are_all_reported_by_the_last_report() {
    let out = run_changed("latent-duplicates", 1, Policy::Real, |s| {
        s.worst.latent_duplicate_max_ms = 3_600_000;
        s.heal_ms = 3_800_000;
    });
    assert!(out.verdict.passed(), "{:?}", out.verdict.violations);
    assert!(
        out.sim_ms > 30 * 60 * 1000,
        "the run waited for a copy due more than half an hour late (ended at {} ms)",
        out.sim_ms
    );
    assert!(out.report.duplicates > 0, "late copies ran again and were counted");
}

/// A race CI found (cloud-worst-case seed 1796031143 of an earlier build):
/// a latent copy ran late and its segment landed while a reconciliation
/// pass was listing the bucket. The run ended on that pass's report,
/// stamped when it finished, and the checker flagged the segment as an
/// unreported change. A report now counts from when its pass began, so the
/// run goes on until a pass starts after the queues emptied. The race is
/// rare; with more duplicates these two seeds hit it (both failed with
/// `unreported-change` under the old stamp, traces e9a892ef4d9824a8 and
/// baa511e5ac23e819).
#[test]
fn a_copy_stored_while_the_last_pass_was_listing_is_reported_by_a_later_pass() {
    for seed in [83, 240] {
        let out = run_changed("cloud-worst-case", seed, Policy::Real, |s| {
            s.name = "late-race".into();
            s.faults.duplicate_delivery_rate = Some(0.3);
        });
        assert!(out.verdict.passed(), "seed {seed}: {:?}", out.verdict.violations);
        assert!(
            out.sim_ms > 590_000,
            "seed {seed}: late copies ran (ended at {} ms)",
            out.sim_ms
        );
    }
}

#[test]
fn a_driver_that_resends_a_key_only_once_is_caught_when_a_resend_is_lost_with_its_queue() {
    caught("deletion-window", 50, Policy::ResendOnce, "not-final");
}

#[test]
fn a_worker_that_deletes_its_copy_of_a_lost_lease_is_caught_only_when_stale_handles_can_still_delete() {
    caught("stale-handles", 13, Policy::AbandonLostLease, "dropped-job");
    passes_without("stale-handles", 13, Policy::AbandonLostLease, |s| {
        s.worst.stale_handle_fail_rate = 0.0;
        s.worst.stale_delete_deletes_rate = 0.0;
    });
}
