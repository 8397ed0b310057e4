//! Backends behind the seams.
//!
//! - [`local`]: the embedded default — a SQLite queue with SQS semantics, a
//!   directory blob store, and the real clock.

pub mod local;
