//! The simulated cloud on turmoil's network: serving loops for the SQS and
//! S3 hosts, and the clients the protocol code talks through.
//!
//! The transport is UDP: one datagram per request and one per reply, each a
//! postcard-encoded frame carrying a request id. Every call binds a fresh
//! ephemeral socket, sends, and waits for the matching reply until its
//! timeout. UDP was chosen over TCP because turmoil's TCP does not
//! retransmit (a dropped segment stalls a stream for good), connecting to a
//! crashed host hangs, and a connection carries one call at a time; with
//! datagrams a lost request, a lost reply, a partition and a crashed host all
//! look the same to the caller: a timeout, reported as a retryable error
//! whose outcome is unknown, which is exactly the uncertainty tally must
//! survive. Datagrams are not size-limited in turmoil, so multi-megabyte
//! segments travel in one frame (up to [`FRAME_BYTES_MAX`]).
//!
//! Measured (release, `examples/rpc_bench.rs`, 10 tasks, 1 KiB echoes):
//! bare UDP with a socket per call ran 240,000 calls per wall second, bare
//! TCP over one kept connection per task 400,000. The whole `SimQueue` path
//! (encoding, the model, replies) runs about 100,000, so the transport is a
//! minor share, and a socket per call keeps clients stateless: a
//! [`SimQueue`] holds no host-bound state, may be built outside a host, and
//! keeps working across its host's restarts.
//!
//! The models live in `Rc<RefCell<..>>` created outside the host closures,
//! so their state survives a host's crash and restart (`bounce`); a crash
//! only loses the calls in flight and the parked long polls.
//!
//! Long polling happens inside the SQS host: a receive with a wait parks
//! there until a message becomes visible, a send wakes it, or the wait ends.
//! At the in-flight limit it waits and answers empty, where a short poll
//! fails with `OverLimit`, as on SQS.
//!
//! # Example
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use tally::core::Queue;
//! use tally_sim::hosts::{QueueAttrs, SqsFaults, SqsModel};
//! use tally_sim::net::{serve_sqs, sim_builder, RpcConfig, SharedSqs, SimQueue};
//!
//! // The model lives outside the host, so it survives `sim.bounce("sqs")`.
//! let sqs: SharedSqs = Rc::new(RefCell::new(SqsModel::new(7, SqsFaults::default())));
//! let mut sim = sim_builder(7).build();
//! let model = Rc::clone(&sqs);
//! sim.host("sqs", move || serve_sqs(Rc::clone(&model)));
//! sim.client("worker", async {
//!     let jobs = SimQueue::new(RpcConfig::new("sqs"), "jobs", QueueAttrs::default());
//!     jobs.ensure().await?;
//!     jobs.send_batch(&["job-0".to_string()]).await?;
//!     let got = jobs.receive(10, 30_000, 1_000).await?;
//!     jobs.delete_batch(&[got[0].handle.clone()]).await?;
//!     Ok(())
//! });
//! sim.run().unwrap();
//! assert!(sqs.borrow().bodies("jobs").is_empty());
//! ```

mod http;
mod queue;
mod rpc;
mod s3_rest;
mod s3_serve;
mod sqs_json;
mod sqs_serve;
mod store;
mod wire;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

pub use http::{sdk_clients, take_sdk_answers, SimHttpClient};
pub use queue::SimQueue;
pub use s3_serve::serve_s3;
pub use sqs_serve::serve_sqs;
pub use store::SimStore;

use crate::hosts::{S3Model, SqsModel};

/// The port the SQS host serves on.
pub const SQS_PORT: u16 = 9324;
/// The port the S3 host serves on.
pub const S3_PORT: u16 = 9000;
/// The port the SQS host answers the AWS SDK on (SQS's JSON protocol).
pub const SQS_HTTP_PORT: u16 = 9325;
/// The port the S3 host answers the AWS SDK on (S3's REST protocol).
pub const S3_HTTP_PORT: u16 = 9001;
/// The largest request or reply frame, in bytes.
pub const FRAME_BYTES_MAX: usize = 32 * 1024 * 1024;
/// The longest long poll, as on SQS.
pub const WAIT_MAX_MS: u64 = 20_000;

/// An SQS model shared between its host's incarnations and the oracle.
pub type SharedSqs = Rc<RefCell<SqsModel>>;
/// An S3 model shared between its host's incarnations and the oracle.
pub type SharedS3 = Rc<RefCell<S3Model>>;

/// How a client reaches its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcConfig {
    /// The host's name in the simulation.
    pub host: String,
    /// How long a call waits for its reply (beyond any long-poll wait)
    /// before it reports a retryable error with an unknown outcome.
    pub timeout_ms: u64,
}

impl RpcConfig {
    /// Reach `host` with the default 2 s timeout.
    pub fn new(host: &str) -> Self {
        Self {
            host: host.into(),
            timeout_ms: 2_000,
        }
    }

    /// The same, with another timeout.
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = timeout_ms;
        self
    }
}

/// A turmoil builder set up for tally: seeded, with the fixed epoch, a
/// 10 ms tick, and UDP buffers deep enough that a busy SQS host does not
/// drop requests merely for arriving in the same tick. Callers add the
/// simulation's duration, latencies and fault rates.
pub fn sim_builder(seed: u64) -> turmoil::Builder {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(crate::doubles::clock::epoch())
        .tick_duration(Duration::from_millis(10))
        .udp_capacity(1 << 16);
    builder
}
