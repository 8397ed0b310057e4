//! The experiment in the simulation.

use std::sync::Arc;

use async_trait::async_trait;
use tally::core::{Experiment, JobSpec, Outcome};
use tally::experiment::Synthetic;

use crate::checker::oracle::SharedOracle;
use crate::doubles::clock::SimClock;

/// The experiment in the simulation: the built-in synthetic function, with
/// every run and every payload it produces reported to the oracle.
pub struct SimExperiment {
    /// Simulated time.
    pub clock: Arc<SimClock>,
    /// Ground truth.
    pub oracle: SharedOracle,
    /// Duration of one job.
    pub job_ms: u64,
    /// Duration of a slow job.
    pub slow_ms: u64,
    /// Fraction of slow jobs.
    pub slow_rate: f64,
    /// The run's seed.
    pub seed: u64,
}

#[async_trait]
impl Experiment for SimExperiment {
    async fn run(&self, job: &JobSpec) -> Outcome {
        self.oracle.lock().expect("oracle lock").started(job.index);
        let draw = xxhash_rust::xxh3::xxh3_64_with_seed(&job.index.to_le_bytes(), self.seed) as f64 / u64::MAX as f64;
        let ms = if draw < self.slow_rate {
            self.slow_ms
        } else {
            self.job_ms
        };
        let inner = Synthetic {
            clock: self.clock.clone(),
            sleep_ms: ms,
            fail_every: 0,
        };
        let outcome = inner.run(job).await;
        self.oracle
            .lock()
            .expect("oracle lock")
            .produced(job.index, outcome.payload_hash());
        outcome
    }
}
