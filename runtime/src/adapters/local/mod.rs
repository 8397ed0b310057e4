//! The embedded default backend: everything in one data directory.
//!
//! - [`clock::SystemClock`]: real time (the only real-time reader).
//! - [`queue::SqliteQueue`]: named queues with SQS semantics in one SQLite
//!   file, safe to share between processes.
//! - [`store::DirStore`]: a directory as a blob store with atomic
//!   create-only writes.
//! - [`ledger::SqliteSendLog`]: the submitter's progress.
//! - [`journal::RunJournal`]: which jobs `tally run` is running, for the
//!   run after one a job killed.

pub mod clock;
pub mod journal;
pub mod queue;
pub mod send_log;
pub mod store;

pub use clock::SystemClock;
pub use journal::RunJournal;
pub use queue::{QueueConfig, SqliteQueue, SqliteQueues};
pub use send_log::SqliteSendLog;
pub use store::DirStore;
