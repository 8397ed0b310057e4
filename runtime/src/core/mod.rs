//! The protocol core: keys, messages, the seams, and the four roles.
//!
//! Each role keeps its decisions (what to delete, extend, send or record) in
//! plain functions or small state machines, and does the I/O in a thin async
//! shell written against the traits in [`seams`].

pub mod aggregator;
pub mod driver;
pub mod manifest;
pub mod message;
pub mod policy;
pub mod quarantine;
pub mod reconciler;
pub mod retry;
pub mod seams;
pub mod segment;
pub mod submitter;
pub mod worker;

pub use message::{JobMessage, ResultMessage, ResultStatus, ResultView};
pub use policy::Policy;
pub use seams::{
    BlobStore, Clock, EntryError, Experiment, JobSpec, Outcome, PutOutcome, Queue, QueueError, QueueStats, Received,
    StoreError,
};

/// A shutdown signal handed to long-running roles. It resolves once the
/// owner asks the role to stop; roles then finish or release what they hold.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// A shutdown that never says stop, for calls that must finish (storing
/// what is held) or for roles stopped only by a crash.
pub fn never() -> Shutdown {
    let (tx, rx) = tokio::sync::watch::channel(false);
    // The sender must outlive the receiver or `changed` would end at once.
    std::mem::forget(tx);
    rx
}

/// Wait until `shutdown` says stop (or its sender is gone).
pub async fn stopped(shutdown: &mut Shutdown) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// True once a stop has been requested.
pub fn is_stopping(shutdown: &Shutdown) -> bool {
    *shutdown.borrow()
}

/// Sleep `ms` on `clock`, unless `shutdown` says stop first: then `false`
/// at once, for loops that wait between looks and must heed a stop.
pub async fn sleep_unless_stopped(clock: &dyn Clock, ms: u64, shutdown: &Shutdown) -> bool {
    let mut stop = shutdown.clone();
    tokio::select! {
        biased;
        _ = stopped(&mut stop) => false,
        _ = clock.sleep(ms) => true,
    }
}
