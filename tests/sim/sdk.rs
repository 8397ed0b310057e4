//! Production's AWS adapter (`SqsQueue`, `S3Store`) inside the simulator,
//! through the AWS SDK over the simulated network: its planted bugs are
//! caught there and only there, the real adapter passes, and runs replay
//! exactly.

use tally::core::Policy;
use tally_sim::faults::scenario::Transport;
use tally_sim::faults::schedule::Schedule;
use tally_sim::world::{self, RunSummary};

use crate::scenario;

fn run_over(transport: Transport, name: &str, seed: u64, policy: Policy) -> RunSummary {
    let mut s = scenario(name);
    s.transport = transport;
    world::run(&Schedule::draw(&s.resolve(seed), seed, policy), false)
}

#[test]
fn each_planted_adapter_bug_is_caught_through_the_sdk_and_passes_the_direct_rpc() {
    for (policy, kind) in [
        (Policy::EntryFailureOk, "dropped-job"),
        (Policy::SkipPage, "unreported-change"),
        (Policy::ThrottlePermanent, "role-failed"),
        (Policy::ErrorOn412, "role-failed"),
    ] {
        let sdk = run_over(Transport::Sdk, "cloud-worst-case", 0, policy);
        assert!(
            sdk.verdict.counts.contains_key(kind),
            "{} through the SDK should be caught as {kind}: {:?}",
            policy.name(),
            sdk.verdict.counts
        );
        let direct = run_over(Transport::Direct, "cloud-worst-case", 0, policy);
        assert!(
            direct.verdict.passed(),
            "{} lives in the adapter, which the direct RPC bypasses: {:?}",
            policy.name(),
            direct.verdict.violations
        );
    }
}

/// Workers start while the submitter creates the queues: SQS may deny a
/// dead-letter queue created less than a second ago, and CreateQueue
/// refuses it with other attributes. The adapter used to stop the worker
/// there (the seed's workers all stopped at 60 ms); it now tries again.
#[test]
fn the_real_adapter_passes_the_worst_case_world_and_a_worker_never_stops_beside_a_new_dead_letter_queue() {
    let out = run_over(Transport::Sdk, "cloud-worst-case", 0, Policy::Real);
    assert!(out.verdict.passed(), "{:?}", out.verdict.violations);
    assert_eq!(out.report.done, 2000);
}

#[test]
fn a_run_through_the_sdk_replays_event_for_event() {
    let mut s = scenario("lost-replies");
    s.transport = Transport::Sdk;
    let schedule = Schedule::draw(&s.resolve(3), 3, Policy::Real);
    let (a, b) = (world::run(&schedule, true), world::run(&schedule, true));
    assert_eq!(a.captured, b.captured);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert!(
        a.trace_events > 1000,
        "the run did something ({} events)",
        a.trace_events
    );
}

/// Every branch of the adapter's error classification is reached by the
/// SDK runs CI sweeps (docs/ARCHITECTURE.md has the table this prints
/// with `--nocapture`).
#[test]
fn the_sdk_runs_reach_every_branch_of_the_adapters_error_classification() {
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    for (name, seeds) in [
        ("cloud-worst-case", 0..3),
        ("lost-replies", 0..2),
        ("stale-handles", 0..1),
    ] {
        for seed in seeds {
            let out = run_over(Transport::Sdk, name, seed, Policy::Real);
            assert!(out.verdict.passed(), "{name} seed {seed}: {:?}", out.verdict.violations);
            for (branch, n) in out.sdk_answers {
                *seen.entry(branch).or_default() += n;
            }
        }
    }
    for (branch, n) in &seen {
        println!("| {branch} | {n} |");
    }
    for class in [
        "Missing:",
        "DeletedRecently:",
        "PreconditionFailed:",
        "Retryable: RequestThrottled",
        "Retryable: SlowDown",
        "Retryable: ConditionalRequestConflict",
        "Retryable: no answer",
        "Permanent: QueueAlreadyExists",
        "entry sender-fault:",
        "entry retryable:",
    ] {
        assert!(
            seen.keys().any(|b| b.starts_with(class)),
            "no SDK answer took the branch {class:?}; reached: {seen:?}"
        );
    }
}
