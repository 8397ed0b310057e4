//! tally runs very large sweeps of experiment jobs through a work queue and
//! guarantees that every submitted job ends with exactly one result in the
//! results database, or is named in the reconciliation report
//! ("exactly-once-or-detected").
//!
//! # Layout
//!
//! - [`core`]: the protocol. Keys and messages, the seams ([`core::Clock`],
//!   [`core::Queue`], [`core::BlobStore`], [`core::Experiment`]), and the four
//!   roles: [`core::submitter`], [`core::worker`], [`core::aggregator`] and
//!   [`core::reconciler`]. Nothing in it touches real time, threads, the
//!   environment or a concrete backend, so the simulator runs it unchanged.
//! - [`sweep`]: sweep files (TOML), their validation and their expansion from
//!   a dense job index to parameter values without materialising the grid.
//! - [`experiment`]: the two experiment kinds, an external command run
//!   without a shell, and a built-in deterministic function for tests.
//! - [`adapters`]: backends behind the seams. [`adapters::local`] is the
//!   embedded default: a SQLite queue with SQS semantics and a directory
//!   blob store.
//!   `adapters::aws` (cargo feature `aws`, on by default) is production:
//!   SQS queues and an S3 bucket.
//! - [`results_db`]: the final results database (one SQLite file, one row per
//!   job) and its exports.
//! - [`cli`]: the `tally` command line.
#![deny(missing_docs)]

pub mod adapters;
pub mod cli;
pub mod core;
pub mod experiment;
pub mod results_db;
#[cfg(test)]
mod scratch;
pub mod sweep;
