//! Quarantine: where a message that no role can use goes instead of being
//! dropped. The record is stored create-only under `quarantine/<queue>/`,
//! named by its content, and only then is the message deleted. Shared by the
//! worker and the aggregator.

use tracing::warn;

use crate::core::retry::{put_if_absent_retrying, CallError, Calls};
use crate::core::{BlobStore, Clock, Policy, Queue, Received, Shutdown};

/// A quarantined message, as stored.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Quarantined {
    /// The queue it came from.
    pub queue: String,
    /// Why it was quarantined.
    pub reason: String,
    /// The queue's message id.
    pub message_id: String,
    /// The body, as received.
    pub body: String,
}

/// Store `msg` under `quarantine/` (create-only, named by content), then
/// delete it from `queue`.
pub async fn quarantine(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    queue: &dyn Queue,
    msg: &Received,
    reason: &str,
    policy: Policy,
    shutdown: &Shutdown,
) -> Result<(), CallError> {
    warn!(queue = queue.name(), message_id = %msg.message_id, reason, "quarantining a message");
    let record = Quarantined {
        queue: queue.name().to_owned(),
        reason: reason.to_owned(),
        message_id: msg.message_id.clone(),
        body: msg.body.clone(),
    };
    let bytes = serde_json::to_vec(&record).expect("a quarantine record serialises");
    let key = format!(
        "quarantine/{}/{:032x}.json",
        queue.name(),
        xxhash_rust::xxh3::xxh3_128(&bytes)
    );
    put_if_absent_retrying(store, clock, shutdown, &key, &bytes).await?;
    let calls = Calls {
        queue,
        clock,
        policy,
        shutdown,
    };
    calls.delete_all(std::slice::from_ref(&msg.handle)).await?;
    Ok(())
}
