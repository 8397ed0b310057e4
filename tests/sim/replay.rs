//! Same seed, same run: byte for byte, and from a schedule file too.

use tally::core::Policy;
use tally_sim::checker::trace::first_divergence;
use tally_sim::faults::schedule::Schedule;
use tally_sim::world;

use crate::scenario;

#[test]
fn a_seed_run_twice_gives_the_same_trace_event_for_event() {
    let s = scenario("swarm");
    let schedule = Schedule::draw(&s.resolve(11), 11, Policy::Real);
    let a = world::run(&schedule, true);
    let b = world::run(&schedule, true);
    let (ta, tb) = (a.captured.unwrap(), b.captured.unwrap());
    assert_eq!(first_divergence(&ta, &tb), None);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert!(
        a.trace_events > 1000,
        "the trace records the run's events ({})",
        a.trace_events
    );
}

#[test]
fn a_different_seed_gives_a_different_trace() {
    let s = scenario("swarm");
    let a = world::run(&Schedule::draw(&s.resolve(1), 1, Policy::Real), false);
    let b = world::run(&Schedule::draw(&s.resolve(2), 2, Policy::Real), false);
    assert_ne!(a.trace_hash, b.trace_hash);
}

#[test]
fn a_failing_seed_replays_exactly_from_its_schedule_file() {
    let s = scenario("aggregator-crash");
    let schedule = Schedule::draw(&s.resolve(0), 0, Policy::Naive);
    let first = world::run(&schedule, false);
    assert!(!first.verdict.passed());
    let again = world::run(&Schedule::from_toml(&schedule.to_toml()).unwrap(), false);
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.verdict.counts, again.verdict.counts);
}

#[test]
fn the_captured_trace_names_the_first_divergence() {
    let a = vec!["1 accepted x".to_owned(), "2 deleted y".to_owned()];
    let b = vec!["1 accepted x".to_owned(), "2 deleted z".to_owned()];
    let d = first_divergence(&a, &b).unwrap();
    assert!(
        d.starts_with("event 1:") && d.contains("deleted y") && d.contains("deleted z"),
        "{d}"
    );
}
