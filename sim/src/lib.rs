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
//! - [`doubles`]: the other seams' simulated stand-ins: the clock on
//!   simulated time, the experiment that reports to the oracle, and a frozen
//!   copy of the bucket for the final reconcile.
//! - [`faults`]: what goes wrong and when: scenarios (`scenarios/*.toml`,
//!   unset faults drawn from the seed), the exact schedule of one run,
//!   crashes aimed at protocol steps (tripwires), and applying faults to the
//!   running simulation.
//! - [`roles`]: the role hosts, each running tally's protocol code.
//! - [`world`]: one run: hosts, fault driver, healing, final check.
//! - [`checker`]: ground truth (the oracle), its comparison with what the
//!   system's own results and report say, and the run's event hash for
//!   determinism checks.
//! - [`coverage`]: the cells of the fault and outcome space a run reached.
//! - [`shrink`]: delta debugging of a failing schedule to a minimal one.
//! - [`explore`]: coverage-guided search: a corpus of schedules that
//!   reached new cells, mutated.
//! - [`fingerprint`]: failing seeds grouped by what they broke and the
//!   first fault that matters.
#![deny(missing_docs)]

pub mod checker;
pub mod coverage;
pub mod doubles;
pub mod explore;
pub mod faults;
pub mod fingerprint;
pub mod hosts;
pub mod net;
pub mod roles;
pub mod shrink;
pub mod world;
