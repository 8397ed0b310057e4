//! The experiment in the simulation: the built-in synthetic function, made
//! as messy as real experiments are on keys drawn from the seed (slow runs,
//! payloads that differ per run, and poison jobs that crash their worker,
//! hang past the sweep's timeout or print megabytes), with every run and
//! every payload it produces reported to the oracle.

use std::sync::Arc;

use async_trait::async_trait;
use tally::core::{Clock, Experiment, JobSpec, Outcome, ResultStatus};
use tally::experiment::Synthetic;

use crate::checker::oracle::SharedOracle;
use crate::doubles::clock::SimClock;
use crate::faults::scenario::Resolved;
use crate::faults::tripwire::SharedWires;

/// How long a worker host that a poison job crashed stays down.
const CRASH_DOWN_MS: u64 = 1_000;
/// Bytes a job that prints megabytes prints.
const HUGE_OUTPUT_BYTES: usize = 3 * 1024 * 1024;

/// Which keys misbehave, as fractions of the keys (each key drawn from the
/// seed), and what the misbehaviour needs from the harness.
#[derive(Clone, Debug, Default)]
pub struct Messy {
    /// Keys whose payload differs from one run to the next.
    pub nondeterministic_rate: f64,
    /// Keys whose every run crashes the worker host running it.
    pub crash_rate: f64,
    /// Keys whose every run outlives the sweep's timeout.
    pub hang_rate: f64,
    /// Keys whose every run prints megabytes.
    pub huge_output_rate: f64,
    /// The sweep's timeout, ms: a hanging run is killed after it.
    pub timeout_ms: u64,
    /// The worker host the experiment runs on (the one a crash takes down).
    pub host: String,
    /// Where a crash is asked for; the drive loop crashes and restarts
    /// the host.
    pub wires: SharedWires,
}

impl Messy {
    /// The rates of `resolved`, for a sweep whose timeout is `timeout_s`;
    /// each worker host adds its name and the wires.
    pub fn resolved(resolved: &Resolved, timeout_s: u64) -> Self {
        Self {
            nondeterministic_rate: resolved.nondeterministic_rate,
            crash_rate: resolved.crash_job_rate,
            hang_rate: resolved.hang_job_rate,
            huge_output_rate: resolved.huge_output_rate,
            timeout_ms: timeout_s * 1000,
            ..Self::default()
        }
    }
}

/// What a key does when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Poison {
    None,
    Crash,
    Hang,
    Huge,
}

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
    /// Nondeterministic and poison keys.
    pub messy: Messy,
}

impl SimExperiment {
    /// A draw in `0..1` for key `index`, one independent stream per `salt`.
    fn draw(&self, index: u64, salt: u64) -> f64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(&index.to_le_bytes(), self.seed ^ salt) as f64 / u64::MAX as f64
    }

    fn poison(&self, index: u64) -> Poison {
        let m = &self.messy;
        let d = self.draw(index, 0x9015_0000);
        if d < m.crash_rate {
            Poison::Crash
        } else if d < m.crash_rate + m.hang_rate {
            Poison::Hang
        } else if d < m.crash_rate + m.hang_rate + m.huge_output_rate {
            Poison::Huge
        } else {
            Poison::None
        }
    }

    /// Ask the harness to crash this host, then wait for the crash.
    async fn crash(&self) -> Outcome {
        let wires = &self.messy.wires;
        wires
            .lock()
            .expect("wires lock")
            .fired
            .push((self.messy.host.clone(), CRASH_DOWN_MS));
        std::future::pending().await
    }

    /// What production's process experiment reports for a run it killed at
    /// the sweep's timeout.
    async fn hang(&self) -> Outcome {
        self.clock.sleep(self.messy.timeout_ms).await;
        Outcome {
            status: ResultStatus::TimedOut,
            exit_code: None,
            metrics: None,
            stdout: None,
            stderr_tail: format!("killed after the {} s timeout", self.messy.timeout_ms / 1000),
        }
    }
}

#[async_trait]
impl Experiment for SimExperiment {
    async fn run(&self, job: &JobSpec) -> Outcome {
        let started = self.oracle.lock().expect("oracle lock").started(&job.sweep, job.index);
        let poison = self.poison(job.index);
        if poison == Poison::Crash {
            return self.crash().await;
        }
        let mut outcome = if poison == Poison::Hang {
            self.hang().await
        } else {
            let ms = if self.draw(job.index, 0) < self.slow_rate {
                self.slow_ms
            } else {
                self.job_ms
            };
            let inner = Synthetic {
                clock: self.clock.clone(),
                sleep_ms: ms,
                fail_every: 0,
            };
            inner.run(job).await
        };
        if self.draw(job.index, 0x0dd_ba11) < self.messy.nondeterministic_rate {
            // Real experiments are seldom bit-for-bit repeatable: this run's
            // number among the key's runs makes each run's payload its own.
            if let Some(metrics) = outcome.metrics.as_mut() {
                metrics.insert("run".into(), serde_json::json!(started));
            } else {
                outcome.exit_code = Some(i32::from(started));
            }
        }
        let mut recorded = outcome.payload_hash();
        if poison == Poison::Huge {
            // A result this large cannot travel in one message: the worker
            // must record it failed, with its exit code and without its
            // metrics or output, and the oracle expects exactly that.
            recorded = Outcome {
                status: ResultStatus::Failed,
                metrics: None,
                stdout: None,
                ..outcome.clone()
            }
            .payload_hash();
            outcome.stdout = Some("y".repeat(HUGE_OUTPUT_BYTES));
        }
        self.oracle
            .lock()
            .expect("oracle lock")
            .produced(&job.sweep, job.index, recorded);
        outcome
    }
}
