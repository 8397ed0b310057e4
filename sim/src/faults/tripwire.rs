//! Crashes aimed at protocol steps: a tripwire armed on a host fires right
//! after that host's next call of one kind succeeds — after a worker's
//! results were acknowledged and before it deletes their jobs, after the
//! aggregator stored a segment and before it deletes its results, after a
//! submitter's batch was acknowledged and before its progress is recorded.
//! The calling task then stops where it stands and the driver crashes the
//! host at the end of the step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tally::core::{BlobStore, EntryError, PutOutcome, Queue, QueueError, QueueStats, Received, StoreError};

/// A protocol step a crash can be aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// A worker's results were acknowledged; its jobs are not yet deleted.
    ResultsSent,
    /// The aggregator's segment was stored; its results are not yet deleted.
    SegmentStored,
    /// A submitter's batch was acknowledged; its progress is not yet recorded.
    JobsSent,
}

/// Armed tripwires and the crashes they requested.
#[derive(Debug, Default)]
pub struct Wires {
    armed: BTreeMap<String, (Step, u64)>,
    /// Hosts to crash now, with how long they stay down.
    pub fired: Vec<(String, u64)>,
}

/// Tripwires shared by the driver and the role hosts.
pub type SharedWires = Arc<Mutex<Wires>>;

impl Wires {
    /// Arm `step` on `host`; it stays down `down_ms` once fired.
    pub fn arm(&mut self, host: &str, step: Step, down_ms: u64) {
        self.armed.insert(host.to_owned(), (step, down_ms));
    }

    /// Forget armed wires (the healed phase).
    pub fn disarm_all(&mut self) {
        self.armed.clear();
    }

    fn trip(&mut self, host: &str, step: Step) -> bool {
        match self.armed.get(host) {
            Some(&(s, down_ms)) if s == step => {
                self.armed.remove(host);
                self.fired.push((host.to_owned(), down_ms));
                true
            }
            _ => false,
        }
    }
}

async fn after(wires: &SharedWires, host: &str, step: Option<Step>) {
    let Some(step) = step else { return };
    if wires.lock().expect("wires lock").trip(host, step) {
        std::future::pending::<()>().await;
    }
}

/// A queue whose successful sends may fire a tripwire.
pub struct TripQueue {
    /// The queue.
    pub inner: Arc<dyn Queue>,
    /// The host using it.
    pub host: String,
    /// Which step a successful send completes.
    pub on_send: Option<Step>,
    /// The wires.
    pub wires: SharedWires,
}

#[async_trait]
impl Queue for TripQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn batch_max(&self) -> usize {
        self.inner.batch_max()
    }
    async fn ensure(&self) -> Result<(), QueueError> {
        self.inner.ensure().await
    }
    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        let out = self.inner.send_batch(bodies).await?;
        if out.iter().all(Result::is_ok) {
            after(&self.wires, &self.host, self.on_send).await;
        }
        Ok(out)
    }
    async fn receive(&self, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Received>, QueueError> {
        self.inner.receive(max, visibility_ms, wait_ms).await
    }
    async fn delete_batch(&self, handles: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.inner.delete_batch(handles).await
    }
    async fn change_visibility_batch(
        &self,
        handles: &[String],
        visibility_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.inner.change_visibility_batch(handles, visibility_ms).await
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.stats().await
    }
}

/// A store whose successful segment writes may fire a tripwire.
pub struct TripStore {
    /// The store.
    pub inner: Arc<dyn BlobStore>,
    /// The host using it.
    pub host: String,
    /// The wires.
    pub wires: SharedWires,
}

#[async_trait]
impl BlobStore for TripStore {
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        let out = self.inner.put_if_absent(key, bytes).await?;
        if key.starts_with(tally::core::segment::PREFIX) {
            after(&self.wires, &self.host, Some(Step::SegmentStored)).await;
        }
        Ok(out)
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
}
