//! The deterministic simulator for tally: tally's own protocol code runs in
//! turmoil hosts that talk over a simulated network to simulated SQS and S3
//! hosts, so partitions, lost replies and crashes hit the real code paths.
//! One `u64` seed drives everything.
//!
//! # Layout
//!
//! - [`hosts`]: the simulated cloud as pure models with no I/O:
//!   [`hosts::SqsModel`] (standard queues with AWS's worst-case semantics)
//!   and [`hosts::S3Model`] (a strongly consistent bucket with create-only
//!   writes). Both report ground truth to an observer.
//! - [`net`]: the models served over turmoil's simulated UDP network, and the
//!   clients the protocol code uses: [`net::SimQueue`] (a
//!   [`tally::core::Queue`]) and [`net::SimStore`] (a
//!   [`tally::core::BlobStore`]). Every call has a timeout; a lost request or
//!   reply is a retryable error with an unknown outcome.
//! - [`clock`]: [`clock::SimClock`], a [`tally::core::Clock`] on simulated
//!   time with a fixed epoch and an adjustable skew.
//! - [`scenario`]: fault scenarios (`scenarios/*.toml`); unset faults are
//!   drawn from the seed.
//! - [`schedule`]: the exact faults of one run, drawn from a scenario and a
//!   seed, written to and replayed from a file.
//! - [`shrink`]: delta debugging of a failing schedule to a minimal one.
//! - [`roles`]: the role hosts, each running tally's protocol code.
//! - [`world`]: one run: hosts, fault driver, healing, final check.
//! - [`oracle`], [`checker`]: ground truth, and its comparison with what the
//!   system's own results and report say.
//! - [`trace`]: the run's event hash, for determinism checks.
//! - [`tripwire`]: crashes aimed at protocol steps.
//! - [`memstore`]: a frozen copy of the bucket for the final reconcile.
#![deny(missing_docs)]

pub mod checker;
pub mod clock;
pub mod hosts;
pub mod memstore;
pub mod net;
pub mod oracle;
pub mod roles;
pub mod scenario;
pub mod schedule;
pub mod shrink;
pub mod trace;
pub mod tripwire;
pub mod world;
