//! A short sweep on fixed seeds: the real protocol passes the first seeds
//! of every scenario (six-million at a hundredth of its size). Ignored by
//! default, since CI's sweep draws fresh seeds of the same scenarios; the
//! mutation run (scripts/mutants.sh) includes it, so that a mutant of the
//! runtime must also get past the simulator.

use tally::core::Policy;
use tally_sim::faults::schedule::Schedule;
use tally_sim::world;

use crate::scenario;

/// Seeds per scenario: enough to reach each scenario's faults, few enough
/// that the whole sweep takes seconds.
const SEEDS: u64 = 2;

fn sweep(name: &str) {
    let mut s = scenario(name);
    if name == "six-million" {
        s.jobs /= 100;
    }
    for seed in 0..SEEDS {
        let summary = world::run(&Schedule::draw(&s.resolve(seed), seed, Policy::Real), false);
        assert!(
            summary.verdict.passed() && summary.finished,
            "{name} seed {seed}: finished {}, {:?}",
            summary.finished,
            summary.verdict.violations
        );
    }
}

macro_rules! fixed_seeds {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            #[ignore = "run by scripts/mutants.sh; CI sweeps fresh seeds"]
            fn $test() {
                sweep($name);
            }
        )*
    };
}

fixed_seeds! {
    aggregator_crash => "aggregator-crash",
    cloud_worst_case => "cloud-worst-case",
    deletion_window => "deletion-window",
    expiry => "expiry",
    lagging_counts => "lagging-counts",
    latent_duplicates => "latent-duplicates",
    lost_replies => "lost-replies",
    messy_experiments => "messy-experiments",
    partition_storm => "partition-storm",
    poison_jobs => "poison-jobs",
    queue_deletion => "queue-deletion",
    several_sweeps => "several-sweeps",
    six_million => "six-million",
    slow_jobs => "slow-jobs",
    stale_handles => "stale-handles",
    swarm => "swarm",
    worker_crash => "worker-crash",
}

/// Every scenario file is in the sweep above.
#[test]
fn the_fixed_seed_sweep_names_every_scenario() {
    let source = include_str!("sweep.rs");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".toml")
                .map(String::from)
        })
        .collect();
    names.sort();
    for name in names {
        assert!(
            source.contains(&format!("=> \"{name}\"")),
            "{name}.toml is not in the sweep"
        );
    }
}
