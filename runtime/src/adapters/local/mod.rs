//! The embedded default backend: everything in one data directory.
//!
//! - [`clock::SystemClock`]: real time (the only real-time reader).
//! - [`queue::SqliteQueue`]: named queues with SQS semantics in one SQLite
//!   file, safe to share between processes.
//! - [`store::DirStore`]: a directory as a blob store with atomic
//!   create-only writes.
//! - [`ledger::SqliteSendLog`]: the submitter's progress.

pub mod clock;
pub mod ledger;
pub mod queue;
pub mod store;

pub use clock::SystemClock;
pub use ledger::SqliteSendLog;
pub use queue::{QueueConfig, SqliteQueue, SqliteQueues};
pub use store::DirStore;
