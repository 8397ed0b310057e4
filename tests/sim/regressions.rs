//! The regression corpus: every shrunk schedule in scenarios/regressions/
//! still fails under the planted bug it came from and passes under the
//! real protocol.

use std::path::PathBuf;

use tally::core::Policy;
use tally_sim::faults::schedule::Schedule;
use tally_sim::world;

#[test]
fn every_shrunk_schedule_fails_its_mutant_and_passes_the_real_protocol() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/regressions exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the regression corpus is empty");
    for file in files {
        let schedule = Schedule::from_toml(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_ne!(
            schedule.policy,
            Policy::Real,
            "{}: a regression names the mutant it caught",
            file.display()
        );
        let mutant = world::run(&schedule, false);
        assert!(
            !mutant.verdict.passed(),
            "{}: no longer fails under {}",
            file.display(),
            schedule.policy.name()
        );
        let real = world::run(
            &Schedule {
                policy: Policy::Real,
                ..schedule
            },
            false,
        );
        assert!(
            real.verdict.passed(),
            "{}: fails the real protocol: {:?}",
            file.display(),
            real.verdict.violations
        );
    }
}

#[test]
fn shrinking_a_failing_seed_leaves_a_handful_of_faults_that_still_fail() {
    let s = crate::scenario("partition-storm");
    let schedule = Schedule::draw(&s.resolve(1), 1, Policy::Naive);
    let shrunk = tally_sim::shrink::shrink(&schedule, |_| {}).unwrap();
    assert!(
        shrunk.faults_before > 10,
        "the seed starts with many faults ({})",
        shrunk.faults_before
    );
    assert!(shrunk.faults_after <= 3, "left {} faults", shrunk.faults_after);
    assert!(
        !world::run(&shrunk.schedule, false).verdict.passed(),
        "the shrunk schedule still fails"
    );
    let passing = Schedule::draw(&s.resolve(0), 0, Policy::Real);
    assert!(
        tally_sim::shrink::shrink(&passing, |_| {}).is_err(),
        "a passing run has nothing to shrink"
    );
}
