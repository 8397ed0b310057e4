//! Wire messages. Every message carries its key `(sweep, index)`, a format
//! version, and a type tag, so foreign or corrupt messages are recognised
//! and quarantined instead of being misread.

mod layout;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub use crate::core::seams::ResultStatus;

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
        let msg: Self = match layout::job(body) {
            Some((tally, sweep, index, attempt)) => Self {
                tally,
                sweep: sweep.to_owned(),
                index,
                attempt,
            },
            None => serde_json::from_str(body).map_err(|e| format!("not a tally job message: {e}"))?,
        };
        if msg.tally != FORMAT_VERSION {
            return Err(format!(
                "job message has format version {}, expected {FORMAT_VERSION}",
                msg.tally
            ));
        }
        if !is_sweep_id(&msg.sweep) {
            return Err(format!(
                "job message names sweep {:?}, which is not a sweep id",
                msg.sweep
            ));
        }
        Ok(msg)
    }
}

/// Most bytes of a sweep's id ([`crate::sweep::Sweep::id`]): its name,
/// '-', eight hex digits.
const SWEEP_ID_MAX: usize = crate::sweep::NAME_MAX + 1 + 8;

/// Whether `s` could be a sweep's id: 1 to 73 letters, digits, '-' or '_'.
/// A worker builds store keys from the sweep a job message names, so a
/// message naming anything else ("", "../x", "a/b") is refused as foreign
/// before any key is built from it.
pub fn is_sweep_id(s: &str) -> bool {
    crate::sweep::is_name_text(s, SWEEP_ID_MAX)
}

/// A result on the results queue. On the wire it is one flat JSON object:
/// the fields below, then the outcome's fields.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "FlatResult")]
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
    pub outcome: crate::core::seams::Outcome,
}

/// The wire form of a [`ResultMessage`]. Written out field by field rather
/// than with `#[serde(flatten)]`, which buffers every message through an
/// intermediate map and costs more than the rest of decoding together.
#[derive(Serialize, Deserialize)]
struct FlatResult<S = String, M = Option<serde_json::Map<String, serde_json::Value>>> {
    tally: u32,
    sweep: S,
    index: u64,
    attempt: u32,
    receive_count: u32,
    run_id: S,
    worker: S,
    started_ms: u64,
    duration_ms: u64,
    status: ResultStatus,
    exit_code: Option<i32>,
    metrics: M,
    stdout: Option<S>,
    stderr_tail: S,
}

/// A result message read in place: every field checked, strings borrowed
/// from the body rather than copied, metrics kept as raw JSON text. Reading
/// a view costs a fraction of [`ResultMessage::decode`], which matters when
/// millions of records are aggregated and reconciled; a sink that needs the
/// whole message decodes the body itself.
#[derive(Debug, Deserialize)]
pub struct ResultView<'a> {
    /// Format version ([`FORMAT_VERSION`]).
    pub tally: u32,
    /// The sweep's id.
    #[serde(borrow)]
    pub sweep: Cow<'a, str>,
    /// Dense job index.
    pub index: u64,
    /// The submission round of the job message that was run.
    pub attempt: u32,
    /// The job message's receive count when this run started.
    pub receive_count: u32,
    /// Identifies the run.
    #[serde(borrow)]
    pub run_id: Cow<'a, str>,
    /// The worker that ran the job.
    #[serde(borrow)]
    pub worker: Cow<'a, str>,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_ms: u64,
    /// How long the experiment took, ms.
    pub duration_ms: u64,
    /// How the job ended.
    pub status: ResultStatus,
    /// The process exit code, when there was one.
    pub exit_code: Option<i32>,
    /// The metrics object's JSON text as it appears in the body.
    #[serde(borrow, deserialize_with = "raw_json")]
    pub metrics: Option<&'a str>,
    /// Raw standard output, when it was not a JSON object.
    #[serde(borrow)]
    pub stdout: Option<Cow<'a, str>>,
    /// The tail of standard error.
    #[serde(borrow)]
    pub stderr_tail: Cow<'a, str>,
}

/// Any JSON value (or null), kept as its text.
fn raw_json<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de str>, D::Error> {
    let raw: Option<&'de serde_json::value::RawValue> = Deserialize::deserialize(deserializer)?;
    Ok(raw.map(serde_json::value::RawValue::get))
}

impl<'a> ResultView<'a> {
    /// Read the view of a body, or say why it is not a result message of
    /// this format. Accepts exactly what [`ResultMessage::decode`] accepts.
    pub fn decode(body: &'a str) -> Result<Self, String> {
        let view = match layout::result_view(body) {
            Some(view) => view,
            None => serde_json::from_str(body).map_err(|e| format!("not a tally result message: {e}"))?,
        };
        if view.tally != FORMAT_VERSION {
            return Err(format!(
                "result message has format version {}, expected {FORMAT_VERSION}",
                view.tally
            ));
        }
        if view.metrics.is_some_and(|m| !m.starts_with('{')) {
            return Err("not a tally result message: metrics is not an object".to_owned());
        }
        Ok(view)
    }

    /// [`ResultMessage::payload_hash`], from the view. Equal to it for every
    /// body a worker writes, whose metrics are compact JSON as serde writes
    /// them (a test holds the two together).
    pub fn payload_hash(&self) -> u64 {
        let metrics = self.metrics.unwrap_or("null");
        let mut canonical = Vec::with_capacity(metrics.len() + 48);
        canonical.push(b'[');
        canonical.extend_from_slice(b"\"");
        canonical.extend_from_slice(self.status.as_str().as_bytes());
        canonical.extend_from_slice(b"\",");
        match self.exit_code {
            Some(code) => canonical.extend_from_slice(code.to_string().as_bytes()),
            None => canonical.extend_from_slice(b"null"),
        }
        canonical.push(b',');
        canonical.extend_from_slice(metrics.as_bytes());
        canonical.push(b',');
        serde_json::to_writer(&mut canonical, &self.stdout).expect("a string always serialises");
        canonical.push(b']');
        xxhash_rust::xxh3::xxh3_64(&canonical)
    }
}

impl From<FlatResult> for ResultMessage {
    fn from(f: FlatResult) -> Self {
        Self {
            tally: f.tally,
            sweep: f.sweep,
            index: f.index,
            attempt: f.attempt,
            receive_count: f.receive_count,
            run_id: f.run_id,
            worker: f.worker,
            started_ms: f.started_ms,
            duration_ms: f.duration_ms,
            outcome: crate::core::seams::Outcome {
                status: f.status,
                exit_code: f.exit_code,
                metrics: f.metrics,
                stdout: f.stdout,
                stderr_tail: f.stderr_tail,
            },
        }
    }
}

impl Serialize for ResultMessage {
    fn serialize<Z: serde::Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        FlatResult {
            tally: self.tally,
            sweep: self.sweep.as_str(),
            index: self.index,
            attempt: self.attempt,
            receive_count: self.receive_count,
            run_id: self.run_id.as_str(),
            worker: self.worker.as_str(),
            started_ms: self.started_ms,
            duration_ms: self.duration_ms,
            status: self.outcome.status,
            exit_code: self.outcome.exit_code,
            metrics: &self.outcome.metrics,
            stdout: self.outcome.stdout.as_deref(),
            stderr_tail: self.outcome.stderr_tail.as_str(),
        }
        .serialize(serializer)
    }
}

impl ResultMessage {
    /// Encode as the message body.
    pub fn encode(&self) -> String {
        layout::write_result(self)
            .unwrap_or_else(|| serde_json::to_string(self).expect("a result message always serialises"))
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
    use crate::core::seams::Outcome;

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
    fn result_wire_form_is_one_flat_object() {
        let a = result(serde_json::json!({"acc": 0.5}), "w1");
        assert_eq!(
            a.encode(),
            concat!(
                r#"{"tally":1,"sweep":"s","index":3,"attempt":1,"receive_count":1,"run_id":"w1-1","worker":"w1","#,
                r#""started_ms":10,"duration_ms":5,"status":"ok","exit_code":0,"metrics":{"acc":0.5},"#,
                r#""stdout":null,"stderr_tail":""}"#
            )
        );
    }

    #[test]
    fn payload_hash_is_the_hash_of_the_canonical_array() {
        let a = result(serde_json::json!({"loss": 0.1, "n": 3}), "w1");
        let o = &a.outcome;
        let canonical = serde_json::json!([o.status, o.exit_code, o.metrics, o.stdout]).to_string();
        assert_eq!(a.payload_hash(), xxhash_rust::xxh3::xxh3_64(canonical.as_bytes()));
    }

    #[test]
    fn views_agree_with_whole_messages() {
        let metrics = [
            serde_json::json!({"loss": 0.1, "n": 3, "big": 18446744073709551615u64, "neg": -0.0}),
            serde_json::json!({"z": 1e-300, "a": [1.5, "x\"y\u{00e9}\n"], "o": {"k": null, "t": true}}),
            serde_json::json!({}),
        ];
        for m in metrics {
            let mut a = result(m, "w\"1");
            let body = a.encode();
            let view = ResultView::decode(&body).unwrap();
            assert_eq!(
                (view.index, view.attempt, &*view.run_id, &*view.sweep),
                (3, 1, "w\"1-1", "s")
            );
            assert_eq!(view.payload_hash(), a.payload_hash(), "{body}");
            a.outcome.metrics = None;
            a.outcome.stdout = Some("raw\ttext \u{1F600}".into());
            a.outcome.status = ResultStatus::TimedOut;
            let body = a.encode();
            assert_eq!(
                ResultView::decode(&body).unwrap().payload_hash(),
                a.payload_hash(),
                "{body}"
            );
        }
        assert!(ResultView::decode("{}").is_err());
        assert!(ResultView::decode(&JobMessage::new("s", 1, 1).encode()).is_err());
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

    #[test]
    fn job_messages_naming_what_cannot_be_a_sweep_id_are_refused() {
        let longest = format!("{}-0123abcd", "n".repeat(64));
        for sweep in ["s", "A_b-9", longest.as_str()] {
            let job = JobMessage::new(sweep, 1, 1);
            assert_eq!(JobMessage::decode(&job.encode()), Ok(job));
        }
        let too_long = format!("{longest}0");
        for sweep in ["", "../x", "a/b", "a b", "é", too_long.as_str()] {
            // The layout's fast path and the general decoder alike.
            let fast = JobMessage::new(sweep, 1, 1).encode();
            let general = format!(r#"{{"sweep":{sweep:?},"tally":1,"index":1,"attempt":1}}"#);
            for body in [fast, general] {
                let err = JobMessage::decode(&body).expect_err(&body);
                assert!(err.contains("not a sweep id"), "{body}: {err}");
            }
        }
    }
}
