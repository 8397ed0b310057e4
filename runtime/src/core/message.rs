//! Wire messages. Every message carries its key `(sweep, index)`, a format
//! version, and a type tag, so foreign or corrupt messages are recognised
//! and quarantined instead of being misread.

use serde::{Deserialize, Serialize};

/// The wire format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A job on the work queue. Parameters are not carried: they are a pure
/// function of the sweep's manifest and the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// Format version ([`FORMAT_VERSION`]).
    pub tally: u32,
    /// The sweep's id.
    pub sweep: String,
    /// Dense job index in `0..submitted`.
    pub index: u64,
    /// Submission round: 1 for the first submission, higher for resubmits.
    pub attempt: u32,
}

impl JobMessage {
    /// A job message of the current format.
    pub fn new(sweep: &str, index: u64, attempt: u32) -> Self {
        Self {
            tally: FORMAT_VERSION,
            sweep: sweep.to_owned(),
            index,
            attempt,
        }
    }

    /// Encode as the message body.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a job message always serialises")
    }

    /// Decode a body, or say why it is not a job message of this format.
    pub fn decode(body: &str) -> Result<Self, String> {
        let msg: Self = serde_json::from_str(body).map_err(|e| format!("not a tally job message: {e}"))?;
        if msg.tally != FORMAT_VERSION {
            return Err(format!(
                "job message has format version {}, expected {FORMAT_VERSION}",
                msg.tally
            ));
        }
        Ok(msg)
    }
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// The experiment ran and succeeded.
    Ok,
    /// The experiment ran and failed (non-zero exit, could not start).
    Failed,
    /// The experiment ran past its timeout and was stopped.
    TimedOut,
    /// The job was received more than `max_attempts` times without a result
    /// (a worker kept dying on it): recorded as dead-lettered, not run again.
    GaveUp,
}

impl ResultStatus {
    /// The name used in reports and the results database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::GaveUp => "gave_up",
        }
    }
}

/// A result on the results queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// Format version ([`FORMAT_VERSION`]).
    pub tally: u32,
    /// The sweep's id.
    pub sweep: String,
    /// Dense job index.
    pub index: u64,
    /// The submission round of the job message that was run.
    pub attempt: u32,
    /// The job message's receive count when this run started.
    pub receive_count: u32,
    /// Identifies this run: the worker and its own run sequence number. Two
    /// records with the same run id are one run delivered twice.
    pub run_id: String,
    /// The worker that ran the job.
    pub worker: String,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_ms: u64,
    /// How long the experiment took, ms.
    pub duration_ms: u64,
    /// What the experiment produced.
    #[serde(flatten)]
    pub outcome: crate::core::Outcome,
}

impl ResultMessage {
    /// Encode as the message body.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a result message always serialises")
    }

    /// Decode a body, or say why it is not a result message of this format.
    pub fn decode(body: &str) -> Result<Self, String> {
        let msg: Self = serde_json::from_str(body).map_err(|e| format!("not a tally result message: {e}"))?;
        if msg.tally != FORMAT_VERSION {
            return Err(format!(
                "result message has format version {}, expected {FORMAT_VERSION}",
                msg.tally
            ));
        }
        Ok(msg)
    }

    /// A hash of what the experiment produced (status, exit code, metrics,
    /// stdout), not of when or where it ran. Two runs of a deterministic
    /// experiment have equal payload hashes; a difference is a conflict.
    pub fn payload_hash(&self) -> u64 {
        self.outcome.payload_hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Outcome;

    fn result(metrics: serde_json::Value, worker: &str) -> ResultMessage {
        ResultMessage {
            tally: FORMAT_VERSION,
            sweep: "s".into(),
            index: 3,
            attempt: 1,
            receive_count: 1,
            run_id: format!("{worker}-1"),
            worker: worker.into(),
            started_ms: 10,
            duration_ms: 5,
            outcome: Outcome {
                status: ResultStatus::Ok,
                exit_code: Some(0),
                metrics: metrics.as_object().cloned(),
                stdout: None,
                stderr_tail: String::new(),
            },
        }
    }

    #[test]
    fn payload_hash_ignores_where_and_when_but_not_what() {
        let a = result(serde_json::json!({"loss": 1.5}), "w1");
        let mut b = result(serde_json::json!({"loss": 1.5}), "w2");
        b.started_ms = 99;
        b.duration_ms = 1;
        assert_eq!(a.payload_hash(), b.payload_hash());
        let c = result(serde_json::json!({"loss": 1.25}), "w1");
        assert_ne!(a.payload_hash(), c.payload_hash());
    }

    #[test]
    fn result_round_trips_and_foreign_bodies_are_rejected() {
        let a = result(serde_json::json!({"acc": 0.9}), "w1");
        assert_eq!(ResultMessage::decode(&a.encode()).unwrap(), a);
        assert!(ResultMessage::decode("hello").is_err());
        assert!(JobMessage::decode(r#"{"tally":2,"sweep":"s","index":1,"attempt":1}"#).is_err());
        assert!(
            JobMessage::decode(&a.encode()).is_err(),
            "a result must not read as a job"
        );
        assert!(ResultMessage::decode(&JobMessage::new("s", 1, 1).encode()).is_err());
        let job = JobMessage::new("s", 7, 2);
        assert_eq!(JobMessage::decode(&job.encode()).unwrap(), job);
    }
}
