//! What a fault struck: the role and the protocol step or fault kind, by
//! which failures are fingerprinted ([`crate::fingerprint`]) and coverage
//! is counted ([`crate::coverage`]).

use std::fmt;

use serde::Serialize;

use crate::faults::schedule::{hosts, Fault, JOBS_QUEUE};

/// What a fault did, to whom: the role it struck (`worker` for any worker
/// host, `sqs` for a queue fault, the component a fault rate hits) and the
/// protocol step (`after-results-send` for an aimed crash) or fault kind
/// (`crash`, `partition-s3`, `delete-jobs-queue`, a rate's name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Strike {
    /// The role struck.
    pub role: String,
    /// The step, or the fault's kind.
    pub step: String,
}

impl Strike {
    pub(crate) fn new(role: &str, step: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            step: step.into(),
        }
    }

    /// What a run fails with when it needs no fault at all.
    pub fn none() -> Self {
        Self::new("none", "no-fault")
    }
}

impl fmt::Display for Strike {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.step)
    }
}

/// A role's name without its number: every worker is `worker`.
pub fn role_of(host: &str) -> &str {
    if host.starts_with("worker-") {
        "worker"
    } else {
        host
    }
}

fn queue_name(queue: &str) -> &'static str {
    if queue == JOBS_QUEUE {
        "jobs"
    } else {
        "results"
    }
}

/// The strike of one scheduled fault.
pub fn strike_of(fault: &Fault) -> Strike {
    match fault {
        Fault::Crash { host, .. } => Strike::new(role_of(host), "crash"),
        Fault::CrashAt { host, step, .. } => Strike::new(role_of(host), String::from(*step)),
        Fault::Partition { a, b, oneway, .. } => {
            let service = |h: &str| h == hosts::SQS || h == hosts::S3;
            let (role, service, dir) = match (service(a), oneway) {
                (false, false) => (a, b, ""),
                (false, true) => (a, b, "-to"),
                (true, _) => (b, a, "-from"),
            };
            Strike::new(role_of(role), format!("partition{dir}-{service}"))
        }
        Fault::DeleteQueue { queue } => Strike::new(hosts::SQS, format!("delete-{}-queue", queue_name(queue))),
        Fault::Purge { queue } => Strike::new(hosts::SQS, format!("purge-{}-queue", queue_name(queue))),
    }
}

/// The strike of a nonzero fault rate (a name from the shrinker's list):
/// the component it hits and the rate's name.
pub fn strike_of_rate(rate: &str) -> Strike {
    let role = match rate {
        "lost_reply_rate" => "network",
        "s3_error_rate" => hosts::S3,
        "sqs_entry_failure_rate" | "duplicate_delivery_rate" => hosts::SQS,
        "clock_skew_ms" => "clock",
        _ => "experiment",
    };
    Strike::new(role, rate.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::tripwire::Step;

    #[test]
    fn strikes_name_the_role_without_its_number_and_the_step_or_fault_kind() {
        let crash = Fault::Crash {
            host: hosts::worker(2),
            down_ms: 1,
        };
        assert_eq!(strike_of(&crash).to_string(), "worker crash");
        let aimed = Fault::CrashAt {
            host: hosts::AGGREGATOR.into(),
            step: Step::SEGMENT_STORED,
            down_ms: 1,
        };
        assert_eq!(strike_of(&aimed).to_string(), "aggregator after-store-put");
        let reply_lost = Fault::Partition {
            a: hosts::S3.into(),
            b: hosts::worker(0),
            ms: 1,
            oneway: true,
        };
        assert_eq!(strike_of(&reply_lost).to_string(), "worker partition-from-s3");
        let deleted = Fault::DeleteQueue {
            queue: JOBS_QUEUE.into(),
        };
        assert_eq!(strike_of(&deleted).to_string(), "sqs delete-jobs-queue");
        assert_eq!(
            strike_of_rate("duplicate_delivery_rate").to_string(),
            "sqs duplicate-delivery-rate"
        );
    }
}
