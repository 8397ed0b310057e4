//! Fault scenarios: a TOML file fixes the system's shape and some fault
//! rates; every fault left unset is drawn from the seed (swarm testing), so
//! one scenario covers many fault mixes.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A scenario as written in `scenarios/*.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports.
    pub name: String,
    /// Jobs in the sweep.
    #[serde(default = "default_jobs")]
    pub jobs: u64,
    /// Worker hosts.
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Worker loops per host.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Simulated duration of one experiment, ms.
    #[serde(default = "default_job_ms")]
    pub job_ms: u64,
    /// Visibility timeout of held jobs, ms.
    #[serde(default = "default_visibility_ms")]
    pub visibility_ms: u64,
    /// Length of the fault phase, simulated ms.
    #[serde(default = "default_fault_ms")]
    pub fault_ms: u64,
    /// After the fault phase, every job must be final within this long.
    #[serde(default = "default_heal_ms")]
    pub heal_ms: u64,
    /// Submit the jobs as a parameter grid (two parameters, two runs per
    /// setting when `jobs` is even) instead of `runs = jobs`.
    #[serde(default)]
    pub grid: bool,
    /// Message retention of every queue, ms (SQS's default, 4 days, when
    /// unset): seconds make messages expire mid-sweep.
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// AWS's documented worst cases, each off unless set (see
    /// [`WorstSpec`]).
    #[serde(default)]
    pub worst: WorstSpec,
    /// Faults; unset fields are drawn from the seed.
    #[serde(default)]
    pub faults: FaultSpec,
    /// The sweep's per-run timeout, s (unset: an hour); a poison job that
    /// hangs is killed after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Receives after which the work queue moves a job message to its
    /// dead-letter queue (unset: 100). The sweep's `max_attempts` is 5: a
    /// value of 6 or so lets a worn-out job whose give-up result was not
    /// delivered reach the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_receives: Option<u32>,
    /// Sweeps of `jobs` jobs each, submitted at once through the same
    /// queues and bucket (unset: one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweeps: Option<u32>,
    /// How the roles reach the simulated cloud: the simulator's direct
    /// RPC, or production's AWS adapter (`SqsQueue`, `S3Store`) through
    /// the AWS SDK over a simulated HTTP transport.
    #[serde(default, skip_serializing_if = "Transport::is_direct")]
    pub transport: Transport,
}

/// How the roles reach the simulated SQS and S3 hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `SimQueue` and `SimStore`, over the simulator's own RPC.
    #[default]
    Direct,
    /// `SqsQueue` and `S3Store`, production's adapter, through the AWS SDK.
    Sdk,
}

impl Transport {
    /// Whether this is the direct RPC (the default).
    pub fn is_direct(&self) -> bool {
        *self == Self::Direct
    }

    /// The name scenario files and flags use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Sdk => "sdk",
        }
    }
}

fn default_jobs() -> u64 {
    2_000
}
fn default_workers() -> u32 {
    3
}
fn default_slots() -> u32 {
    4
}
fn default_job_ms() -> u64 {
    20
}
fn default_visibility_ms() -> u64 {
    10_000
}
fn default_fault_ms() -> u64 {
    20_000
}
fn default_heal_ms() -> u64 {
    600_000
}

/// The cloud at its documented worst: behaviours AWS allows at any time,
/// not faults of a phase, so they stay on after the faults heal. Each is
/// off unless set; docs/ARCHITECTURE.md has the sources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorstSpec {
    /// SQS depth counts answer from a snapshot up to this old, ms.
    #[serde(default)]
    pub count_lag_ms: u64,
    /// Chance that a nonzero count is reported lower, down to 0.
    #[serde(default)]
    pub undercount_rate: f64,
    /// Duplicates SQS makes stay latent (invisible, uncounted) up to this
    /// long, ms.
    #[serde(default)]
    pub latent_duplicate_max_ms: u64,
    /// A deleted queue keeps answering for up to this long, then vanishes
    /// with what was sent meanwhile, ms.
    #[serde(default)]
    pub deletion_window_max_ms: u64,
    /// Chance that a delete with a lapsed receipt handle fails.
    #[serde(default)]
    pub stale_handle_fail_rate: f64,
    /// Chance that a delete with an earlier receive's handle still deletes.
    #[serde(default)]
    pub stale_delete_deletes_rate: f64,
    /// Chance that a receive returns fewer messages than it could.
    #[serde(default)]
    pub short_receive_rate: f64,
    /// A created queue answers NonExistentQueue this long, ms.
    #[serde(default)]
    pub create_ready_ms: u64,
    /// Chance that an SQS call is throttled.
    #[serde(default)]
    pub throttle_rate: f64,
    /// Purges of each queue during the fault phase.
    #[serde(default)]
    pub purges: u32,
    /// A purge takes effect at the end of a window up to this long, ms.
    #[serde(default)]
    pub purge_window_max_ms: u64,
    /// Chance that an S3 create-only write answers 409.
    #[serde(default)]
    pub s3_conflict_rate: f64,
    /// Keys per ListObjectsV2 page (1,000 when unset, as on S3).
    #[serde(default)]
    pub list_page_max: Option<usize>,
}

impl WorstSpec {
    /// The SQS model's settings.
    pub fn sqs(&self) -> crate::hosts::SqsWorstCase {
        crate::hosts::SqsWorstCase {
            count_lag_ms: self.count_lag_ms,
            undercount_rate: self.undercount_rate,
            latent_duplicate_max_ms: self.latent_duplicate_max_ms,
            deletion_window_max_ms: self.deletion_window_max_ms,
            stale_handle_fail_rate: self.stale_handle_fail_rate,
            stale_delete_deletes_rate: self.stale_delete_deletes_rate,
            short_receive_rate: self.short_receive_rate,
            create_ready_ms: self.create_ready_ms,
            throttle_rate: self.throttle_rate,
            purge_window_max_ms: self.purge_window_max_ms,
        }
    }

    /// The S3 model's settings.
    pub fn s3(&self) -> crate::hosts::S3WorstCase {
        let mut worst = crate::hosts::S3WorstCase {
            conflict_rate: self.s3_conflict_rate,
            ..crate::hosts::S3WorstCase::default()
        };
        if let Some(max) = self.list_page_max {
            worst.list_page_max = max.max(1);
        }
        worst
    }

    fn rates(&self) -> [f64; 6] {
        [
            self.undercount_rate,
            self.stale_handle_fail_rate,
            self.stale_delete_deletes_rate,
            self.short_receive_rate,
            self.throttle_rate,
            self.s3_conflict_rate,
        ]
    }
}

/// Fault counts (over the fault phase) and rates (while it lasts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Crashes of worker hosts.
    pub worker_crashes: Option<u32>,
    /// Crashes of the aggregator host.
    pub aggregator_crashes: Option<u32>,
    /// Crashes of the submitter host.
    pub submitter_crashes: Option<u32>,
    /// Crashes of the reconciler host.
    pub reconciler_crashes: Option<u32>,
    /// Crashes aimed at protocol steps: a worker between result send and
    /// job delete, the aggregator between segment store and result delete,
    /// the submitter between batch send and progress record.
    pub step_crashes: Option<u32>,
    /// Two-way partitions between a role host and SQS or S3.
    pub partitions: Option<u32>,
    /// One-way partitions (requests or replies only).
    pub oneway_partitions: Option<u32>,
    /// Deletions of the work queue.
    pub jobs_queue_deletions: Option<u32>,
    /// Deletions of the results queue.
    pub results_queue_deletions: Option<u32>,
    /// Fraction of SQS/S3 replies dropped after the request was applied.
    pub lost_reply_rate: Option<f64>,
    /// Fraction of S3 calls failing with 5xx/SlowDown.
    pub s3_error_rate: Option<f64>,
    /// Fraction of SQS batch entries failing on their own.
    pub sqs_entry_failure_rate: Option<f64>,
    /// Fraction of SQS receives that also leave a copy visible.
    pub duplicate_delivery_rate: Option<f64>,
    /// Fraction of jobs that run longer than the visibility timeout.
    pub slow_job_rate: Option<f64>,
    /// Largest wall-clock skew of a host, ms.
    pub clock_skew_ms: Option<u64>,
    /// Fraction of keys whose payload differs from run to run (unset:
    /// none, not drawn, so older scenarios and seeds run as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nondeterministic_rate: Option<f64>,
    /// Fraction of keys whose every run crashes its worker host (unset:
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_job_rate: Option<f64>,
    /// Fraction of keys whose every run hangs past the sweep's timeout
    /// (unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang_job_rate: Option<f64>,
    /// Fraction of keys whose every run prints megabytes (unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_output_rate: Option<f64>,
}

/// A scenario with every fault resolved to a number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// The scenario's shape (its `faults` as written).
    pub scenario: Scenario,
    /// Worker crashes.
    pub worker_crashes: u32,
    /// Aggregator crashes.
    pub aggregator_crashes: u32,
    /// Submitter crashes.
    pub submitter_crashes: u32,
    /// Reconciler crashes.
    pub reconciler_crashes: u32,
    /// Crashes aimed at protocol steps.
    pub step_crashes: u32,
    /// Two-way partitions.
    pub partitions: u32,
    /// One-way partitions.
    pub oneway_partitions: u32,
    /// Work-queue deletions.
    pub jobs_queue_deletions: u32,
    /// Results-queue deletions.
    pub results_queue_deletions: u32,
    /// Lost-reply rate.
    pub lost_reply_rate: f64,
    /// S3 error rate.
    pub s3_error_rate: f64,
    /// SQS per-entry failure rate.
    pub sqs_entry_failure_rate: f64,
    /// Duplicate delivery rate.
    pub duplicate_delivery_rate: f64,
    /// Slow job rate.
    pub slow_job_rate: f64,
    /// Clock skew bound, ms.
    pub clock_skew_ms: u64,
    /// Nondeterministic key rate.
    #[serde(default)]
    pub nondeterministic_rate: f64,
    /// Rate of keys that crash their worker.
    #[serde(default)]
    pub crash_job_rate: f64,
    /// Rate of keys that hang past the timeout.
    #[serde(default)]
    pub hang_job_rate: f64,
    /// Rate of keys that print megabytes.
    #[serde(default)]
    pub huge_output_rate: f64,
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ScenarioError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Scenario {
    /// Read and validate a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let err = |message: String| ScenarioError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read the scenario: {e}")))?;
        let scenario: Scenario = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            err(format!("line {}: {}", line.unwrap_or(0), e.message().trim()))
        })?;
        scenario.validate().map_err(err)?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), String> {
        if self.jobs == 0 || self.workers == 0 || self.slots == 0 {
            return Err("jobs, workers and slots must be at least 1".into());
        }
        if self.visibility_ms < 1000 {
            return Err("visibility_ms must be at least 1000".into());
        }
        if self.worst.latent_duplicate_max_ms + 3 * self.visibility_ms + 60_000 > self.heal_ms {
            return Err(
                "heal_ms must outlast the latest latent duplicate (latent_duplicate_max_ms) by the settle phase".into(),
            );
        }
        if self.retention_ms.is_some_and(|ms| ms < 1000) {
            return Err("retention_ms must be at least 1000".into());
        }
        let rates = [
            self.faults.lost_reply_rate,
            self.faults.s3_error_rate,
            self.faults.sqs_entry_failure_rate,
            self.faults.duplicate_delivery_rate,
            self.faults.slow_job_rate,
            self.faults.nondeterministic_rate,
            self.faults.crash_job_rate,
            self.faults.hang_job_rate,
            self.faults.huge_output_rate,
        ];
        if rates
            .iter()
            .flatten()
            .chain(&self.worst.rates())
            .any(|r| !(0.0..=0.5).contains(r))
        {
            return Err("fault rates must lie between 0 and 0.5".into());
        }
        if self.timeout_s == Some(0) {
            return Err("timeout_s must be at least 1".into());
        }
        if self.max_receives == Some(0) {
            return Err("max_receives must be at least 1".into());
        }
        if self.sweeps.is_some_and(|n| !(1..=16).contains(&n)) {
            return Err("sweeps must lie between 1 and 16".into());
        }
        self.check_transport()
    }

    /// SQS takes visibility timeouts and retention periods in whole
    /// seconds: a scenario run through the SDK must give them so.
    pub fn check_transport(&self) -> Result<(), String> {
        if self.transport == Transport::Sdk
            && (!self.visibility_ms.is_multiple_of(1000)
                || self.retention_ms.is_some_and(|ms| !ms.is_multiple_of(1000)))
        {
            return Err("with transport = \"sdk\", visibility_ms and retention_ms must be whole seconds".into());
        }
        Ok(())
    }

    /// Resolve unset faults from `seed`. The draw is in a fixed field
    /// order, so a seed always resolves a scenario the same way.
    pub fn resolve(&self, seed: u64) -> Resolved {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ca1_ab1e);
        let f = &self.faults;
        let mut count = |v: Option<u32>, max: u32| {
            v.unwrap_or_else(|| {
                if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(0..=max)
                }
            })
        };
        let worker_crashes = count(f.worker_crashes, 6);
        let aggregator_crashes = count(f.aggregator_crashes, 3);
        let submitter_crashes = count(f.submitter_crashes, 2);
        let reconciler_crashes = count(f.reconciler_crashes, 2);
        let partitions = count(f.partitions, 4);
        let step_crashes = count(f.step_crashes, 6);
        let oneway_partitions = count(f.oneway_partitions, 3);
        let jobs_queue_deletions = count(f.jobs_queue_deletions, 1);
        let results_queue_deletions = count(f.results_queue_deletions, 1);
        let mut rate = |v: Option<f64>, max: f64| {
            v.unwrap_or_else(|| {
                if rng.random_bool(0.5) {
                    0.0
                } else {
                    rng.random_range(0.0..max)
                }
            })
        };
        let lost_reply_rate = rate(f.lost_reply_rate, 0.05);
        let s3_error_rate = rate(f.s3_error_rate, 0.1);
        let sqs_entry_failure_rate = rate(f.sqs_entry_failure_rate, 0.05);
        let duplicate_delivery_rate = rate(f.duplicate_delivery_rate, 0.01);
        let slow_job_rate = rate(f.slow_job_rate, 0.02);
        let clock_skew_ms = f.clock_skew_ms.unwrap_or_else(|| {
            if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(0..=60_000)
            }
        });
        Resolved {
            scenario: self.clone(),
            worker_crashes,
            aggregator_crashes,
            submitter_crashes,
            reconciler_crashes,
            step_crashes,
            partitions,
            oneway_partitions,
            jobs_queue_deletions,
            results_queue_deletions,
            lost_reply_rate,
            s3_error_rate,
            sqs_entry_failure_rate,
            duplicate_delivery_rate,
            slow_job_rate,
            clock_skew_ms,
            // Messy experiments are not drawn when unset: a scenario asks
            // for them, and older seeds resolve as they always did.
            nondeterministic_rate: f.nondeterministic_rate.unwrap_or(0.0),
            crash_job_rate: f.crash_job_rate.unwrap_or(0.0),
            hang_job_rate: f.hang_job_rate.unwrap_or(0.0),
            huge_output_rate: f.huge_output_rate.unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_faults_are_drawn_from_the_seed_and_set_ones_are_kept() {
        let s = Scenario {
            name: "t".into(),
            jobs: 10,
            workers: 1,
            slots: 1,
            faults: FaultSpec {
                worker_crashes: Some(2),
                ..FaultSpec::default()
            },
            ..Scenario::default()
        };
        let a = s.resolve(7);
        assert_eq!(a, s.resolve(7));
        assert_eq!(a.worker_crashes, 2);
        let differs = (0..20)
            .any(|seed| s.resolve(seed).partitions != a.partitions || s.resolve(seed).s3_error_rate != a.s3_error_rate);
        assert!(differs, "the seed drives unset faults");
    }
}
