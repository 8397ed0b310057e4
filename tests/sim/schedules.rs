//! Random fault schedules against a small system: the real protocol keeps
//! its promise under any of them.

use proptest::prelude::*;
use tally::core::Policy;
use tally_sim::faults::schedule::{hosts, role_calls, Event, Fault, Schedule, JOBS_QUEUE, RESULTS_QUEUE};
use tally_sim::faults::tripwire::Step;
use tally_sim::world;

use crate::scenario;

fn fault() -> impl Strategy<Value = Fault> {
    let host = prop_oneof![
        Just(hosts::AGGREGATOR.to_owned()),
        Just(hosts::SUBMITTER.to_owned()),
        Just(hosts::RECONCILER.to_owned()),
        (0u32..2).prop_map(hosts::worker),
    ];
    let service = prop_oneof![Just(hosts::SQS.to_owned()), Just(hosts::S3.to_owned())];
    // Any call of any role, just before or just after it.
    let step = (host.clone(), any::<prop::sample::Index>(), any::<bool>()).prop_map(|(host, pick, before)| {
        let calls = role_calls(&host);
        let (target, call) = calls[pick.index(calls.len())];
        (host, Step { before, target, call })
    });
    prop_oneof![
        (host.clone(), 100u64..6_000).prop_map(|(host, down_ms)| Fault::Crash { host, down_ms }),
        (step, 100u64..6_000).prop_map(|((host, step), down_ms)| Fault::CrashAt { host, step, down_ms }),
        (host, service, 100u64..8_000, any::<bool>()).prop_map(|(a, b, ms, oneway)| Fault::Partition {
            a,
            b,
            ms,
            oneway
        }),
        prop_oneof![Just(JOBS_QUEUE), Just(RESULTS_QUEUE)].prop_map(|q| Fault::DeleteQueue { queue: q.to_owned() }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_real_protocol_survives_any_fault_schedule(
        seed in any::<u64>(),
        mut events in prop::collection::vec((0u64..15_000, fault()), 0..12),
    ) {
        let mut s = scenario("swarm");
        s.jobs = 300;
        s.workers = 2;
        s.fault_ms = 15_000;
        let mut resolved = s.resolve(seed);
        // Only the generated faults: no rates, no drawn events.
        resolved.lost_reply_rate = 0.0;
        resolved.s3_error_rate = 0.0;
        resolved.sqs_entry_failure_rate = 0.0;
        resolved.duplicate_delivery_rate = 0.0;
        events.sort_by_key(|(at, _)| *at);
        let schedule = Schedule {
            seed,
            policy: Policy::Real,
            resolved,
            events: events.into_iter().map(|(at_ms, fault)| Event { at_ms, fault }).collect(),
        };
        let out = world::run(&schedule, false);
        prop_assert!(out.verdict.passed(), "violations {:?}\nschedule:\n{}", out.verdict.violations, schedule.to_toml());
    }
}
