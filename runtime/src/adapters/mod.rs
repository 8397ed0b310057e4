//! Backends behind the seams.
//!
//! - [`local`]: the embedded default — a SQLite queue with SQS semantics, a
//!   directory blob store, and the real clock.
//! - [`aws`] (cargo feature `aws`, on by default): SQS queues and an S3
//!   bucket, for production.

#[cfg(feature = "aws")]
pub mod aws;
pub mod local;
