//! The seams: small traits every backend implements, returning tally's own
//! types. Production (SQS/S3), the embedded default (SQLite/directory) and
//! the simulator each provide their own implementations.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::sweep::JobSpec;

/// Most entries in one queue batch call, as on SQS.
pub const BATCH_MAX: usize = 10;

/// Most bytes in one batch call (and one message), as on SQS since 2025.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// A boxed future, used where a trait method must be object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Time, as the protocol sees it. The only place real time may be read.
pub trait Clock: Send + Sync {
    /// Monotonic milliseconds since an arbitrary origin; used for leases,
    /// heartbeats and timeouts.
    fn mono_ms(&self) -> u64;
    /// Wall-clock milliseconds since the Unix epoch: used in records, and
    /// by the embedded queue for visibility deadlines, which must outlive
    /// the process that set them (a monotonic origin does not).
    fn wall_ms(&self) -> u64;
    /// Sleep for `ms` milliseconds of this clock's time.
    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()>;
}

/// A message as received from a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The message body.
    pub body: String,
    /// The handle for this receive; deleting or extending needs it. A later
    /// receive of the same message makes this handle stale.
    pub handle: String,
    /// The queue's id for the message (stable across receives).
    pub message_id: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
}

/// Approximate queue depths, as SQS reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Messages available for receipt.
    pub visible: u64,
    /// Messages received and not yet deleted or returned.
    pub in_flight: u64,
}

impl QueueStats {
    /// True when nothing is waiting and nothing is held.
    pub fn is_drained(&self) -> bool {
        self.visible == 0 && self.in_flight == 0
    }
}

/// Why a whole queue call failed. The variants say what the caller should do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue does not exist: recreate it with its attributes and retry.
    #[error("queue {queue} does not exist ({code})")]
    Missing {
        /// The queue's name.
        queue: String,
        /// The provider's error code.
        code: String,
    },
    /// The queue was deleted less than 60 s ago and cannot be recreated yet:
    /// wait and retry.
    #[error("queue {queue} was deleted recently; it can be recreated in {retry_after_ms} ms ({code})")]
    DeletedRecently {
        /// The queue's name.
        queue: String,
        /// How long to wait before trying again.
        retry_after_ms: u64,
        /// The provider's error code.
        code: String,
    },
    /// A transient failure (throttling, 5xx, timeout, lost connection). The
    /// outcome of the request is unknown: it may have been applied.
    #[error("transient queue error {code}: {message}")]
    Retryable {
        /// The provider's error code.
        code: String,
        /// The provider's message.
        message: String,
    },
    /// A failure that retrying will not fix (bad request, access denied).
    #[error("queue error {code}: {message}")]
    Permanent {
        /// The provider's error code.
        code: String,
        /// The provider's message.
        message: String,
    },
}

/// Why one entry of a batch call failed while others may have succeeded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EntryError {
    /// The provider's error code for this entry.
    pub code: String,
    /// The provider's message for this entry.
    pub message: String,
    /// Whether resending this entry may succeed.
    pub retryable: bool,
}

/// One named queue with SQS semantics: at-least-once, unordered delivery,
/// visibility timeouts, receive counts, batches of at most ten.
#[async_trait]
pub trait Queue: Send + Sync {
    /// The queue's name.
    fn name(&self) -> &str;
    /// Most entries one batch call takes (SQS: 10).
    fn batch_max(&self) -> usize {
        BATCH_MAX
    }
    /// Create the queue with its configured attributes if it does not exist.
    async fn ensure(&self) -> Result<(), QueueError>;
    /// Send up to ten bodies. Returns one status per entry, in order.
    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError>;
    /// Receive up to `max` (at most ten) messages, hiding them for
    /// `visibility_ms`, waiting up to `wait_ms` for at least one.
    async fn receive(&self, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Received>, QueueError>;
    /// Delete up to ten messages by receipt handle. One status per entry. A
    /// stale handle may succeed without deleting, as on SQS.
    async fn delete_batch(&self, handles: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError>;
    /// Set the visibility of up to ten held messages to `visibility_ms` from
    /// now (0 releases them). One status per entry.
    async fn change_visibility_batch(
        &self,
        handles: &[String],
        visibility_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError>;
    /// Approximate depths.
    async fn stats(&self) -> Result<QueueStats, QueueError>;
    /// Whether nothing is visible or in flight, as approximate as
    /// [`Queue::stats`]; a backend may answer it more cheaply.
    async fn is_drained(&self) -> Result<bool, QueueError> {
        Ok(self.stats().await?.is_drained())
    }
}

/// The result of a create-only write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call created the object.
    Created,
    /// An object with that key already existed; nothing was written.
    AlreadyExists,
}

/// Why a blob store call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Transient (5xx, SlowDown, conflict, timeout); the outcome is unknown.
    #[error("transient store error {code}: {message}")]
    Retryable {
        /// The provider's error code.
        code: String,
        /// The provider's message.
        message: String,
    },
    /// Retrying will not help (access denied, no such bucket, bad key).
    #[error("store error {code}: {message}")]
    Permanent {
        /// The provider's error code.
        code: String,
        /// The provider's message.
        message: String,
    },
}

/// A strongly consistent object store with create-only writes.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Write `bytes` under `key` unless the key exists.
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError>;
    /// Read an object, or `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// List keys starting with `prefix`, in lexicographic order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
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

/// What running one job produced. A failed experiment is an outcome too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Whether the experiment succeeded, failed or timed out.
    pub status: ResultStatus,
    /// The process exit code, when there was one.
    pub exit_code: Option<i32>,
    /// Standard output parsed as a JSON object of metrics, when it was one.
    pub metrics: Option<serde_json::Map<String, serde_json::Value>>,
    /// Standard output kept raw (bounded) when it was not a JSON object.
    pub stdout: Option<String>,
    /// The last few KiB of standard error.
    pub stderr_tail: String,
}

impl Outcome {
    /// A hash of what the experiment produced (status, exit code, metrics,
    /// stdout): equal for two runs of a deterministic experiment.
    ///
    /// The hash is of the compact JSON array `[status, exit_code, metrics,
    /// stdout]`.
    pub fn payload_hash(&self) -> u64 {
        let canonical = serde_json::to_vec(&(self.status, self.exit_code, &self.metrics, &self.stdout))
            .expect("an outcome always serialises");
        xxhash_rust::xxh3::xxh3_64(&canonical)
    }
}

/// Runs one job. Implementations must not panic on bad jobs: a failure is
/// an [`Outcome`] with a failed status.
#[async_trait]
pub trait Experiment: Send + Sync {
    /// Run `job` to completion (or to its timeout) and describe what happened.
    async fn run(&self, job: &JobSpec) -> Outcome;
}
