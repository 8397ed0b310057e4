//! Crashes aimed at protocol steps: a tripwire armed on a host fires just
//! before, or just after, that host's next call of one kind on one target
//! (the work queue, the results queue, the bucket). Every call of every
//! role can be aimed at, on both sides: after a worker's results were
//! acknowledged and before it deletes their jobs, before the aggregator's
//! segment upload is even made while earlier deletes are in flight, after
//! a submitter's batch was acknowledged and before its progress is
//! recorded, between a driver's round record and its resends. The calling
//! task then stops where it stands and the world's driver crashes the host
//! at the end of the step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tally::core::{BlobStore, EntryError, PutOutcome, Queue, QueueError, QueueStats, Received, StoreError};

/// What a call touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The work queue.
    Jobs,
    /// The results queue.
    Results,
    /// The bucket.
    Store,
}

/// Which call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// Create a queue.
    Ensure,
    /// Send a batch.
    Send,
    /// Receive.
    Receive,
    /// Delete a batch.
    Delete,
    /// Change visibility of a batch (heartbeat, hand back).
    Extend,
    /// Ask a queue's depths.
    Stats,
    /// Create-only write.
    Put,
    /// Read an object.
    Get,
    /// List keys.
    List,
}

/// A protocol step a crash can be aimed at: just before or just after one
/// kind of call. Written in schedules as `before-results-send`,
/// `after-store-put` and so on; the names of the first three aimed steps
/// (`results-sent`, `segment-stored`, `jobs-sent`) still read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Step {
    /// Before the call is made (else after it returned success).
    pub before: bool,
    /// What it touches.
    pub target: Target,
    /// The call.
    pub call: Call,
}

const TARGETS: [(Target, &str); 3] = [
    (Target::Jobs, "jobs"),
    (Target::Results, "results"),
    (Target::Store, "store"),
];
const CALLS: [(Call, &str); 9] = [
    (Call::Ensure, "ensure"),
    (Call::Send, "send"),
    (Call::Receive, "receive"),
    (Call::Delete, "delete"),
    (Call::Extend, "extend"),
    (Call::Stats, "stats"),
    (Call::Put, "put"),
    (Call::Get, "get"),
    (Call::List, "list"),
];

impl Step {
    const fn new(before: bool, target: Target, call: Call) -> Self {
        Self { before, target, call }
    }

    /// A worker's results were acknowledged; its jobs are not yet deleted.
    pub const RESULTS_SENT: Step = Step::new(false, Target::Results, Call::Send);
    /// The aggregator's segment was stored; its results are not yet deleted.
    pub const SEGMENT_STORED: Step = Step::new(false, Target::Store, Call::Put);
    /// A submitter's batch was acknowledged; its progress is not yet recorded.
    pub const JOBS_SENT: Step = Step::new(false, Target::Jobs, Call::Send);
}

fn name_of<K: PartialEq>(table: &[(K, &'static str)], key: K) -> &'static str {
    table.iter().find(|(k, _)| *k == key).map_or("?", |(_, n)| n)
}

impl From<Step> for String {
    fn from(s: Step) -> String {
        let (target, call) = (name_of(&TARGETS, s.target), name_of(&CALLS, s.call));
        format!("{}-{target}-{call}", if s.before { "before" } else { "after" })
    }
}

impl TryFrom<String> for Step {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "results-sent" => return Ok(Self::RESULTS_SENT),
            "segment-stored" => return Ok(Self::SEGMENT_STORED),
            "jobs-sent" => return Ok(Self::JOBS_SENT),
            _ => {}
        }
        let bad = || format!("{text:?} is not a step (e.g. before-results-send, after-store-put)");
        let mut parts = text.splitn(3, '-');
        let before = match parts.next() {
            Some("before") => true,
            Some("after") => false,
            _ => return Err(bad()),
        };
        let target = parts
            .next()
            .and_then(|t| TARGETS.iter().find(|(_, n)| *n == t))
            .ok_or_else(bad)?
            .0;
        let call = parts
            .next()
            .and_then(|c| CALLS.iter().find(|(_, n)| *n == c))
            .ok_or_else(bad)?
            .0;
        Ok(Self { before, target, call })
    }
}

/// Armed tripwires and the crashes they requested.
#[derive(Debug, Default)]
pub struct Wires {
    armed: BTreeMap<String, (Step, u64)>,
    /// Hosts to crash now, with how long they stay down.
    pub fired: Vec<(String, u64)>,
    /// The last step each host passed: where a fault striking it now
    /// strikes, for coverage (kept only when `track_steps`).
    last: BTreeMap<String, Step>,
    /// Whether to keep each host's last step.
    pub track_steps: bool,
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

    /// The last step `host` passed, if any.
    pub fn last_step(&self, host: &str) -> Option<Step> {
        self.last.get(host).copied()
    }

    fn trip(&mut self, host: &str, step: Step) -> bool {
        // Every call of every role passes here: only a search pays for
        // the bookkeeping, and no allocation once a host has a slot.
        if self.track_steps {
            match self.last.get_mut(host) {
                Some(last) => *last = step,
                None => {
                    self.last.insert(host.to_owned(), step);
                }
            }
        }
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

/// Where a role's calls pass a tripwire: its host and the wires.
#[derive(Clone, Debug)]
pub struct Aim {
    /// The host making the calls.
    pub host: String,
    /// The wires.
    pub wires: SharedWires,
}

impl Aim {
    /// Stop here for good if a wire is armed on this step.
    async fn pass(&self, before: bool, target: Target, call: Call) {
        let step = Step { before, target, call };
        if self.wires.lock().expect("wires lock").trip(&self.host, step) {
            std::future::pending::<()>().await;
        }
    }

    /// Make `op` between the wires before and after it; the wire after
    /// is passed only on success.
    async fn around<T, E>(
        &self,
        target: Target,
        call: Call,
        op: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.pass(true, target, call).await;
        let out = op.await?;
        self.pass(false, target, call).await;
        Ok(out)
    }
}

/// A queue whose calls pass tripwires.
pub struct TripQueue {
    /// The queue.
    pub inner: Arc<dyn Queue>,
    /// Which queue it is.
    pub target: Target,
    /// The host and the wires.
    pub aim: Aim,
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
        self.aim.around(self.target, Call::Ensure, self.inner.ensure()).await
    }
    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        let send = self.inner.send_batch(bodies);
        self.aim.around(self.target, Call::Send, send).await
    }
    async fn receive(&self, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Received>, QueueError> {
        let receive = self.inner.receive(max, visibility_ms, wait_ms);
        self.aim.around(self.target, Call::Receive, receive).await
    }
    async fn delete_batch(&self, handles: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        let delete = self.inner.delete_batch(handles);
        self.aim.around(self.target, Call::Delete, delete).await
    }
    async fn change_visibility_batch(
        &self,
        handles: &[String],
        visibility_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        let extend = self.inner.change_visibility_batch(handles, visibility_ms);
        self.aim.around(self.target, Call::Extend, extend).await
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.aim.around(self.target, Call::Stats, self.inner.stats()).await
    }
    async fn is_drained(&self) -> Result<bool, QueueError> {
        self.aim.around(self.target, Call::Stats, self.inner.is_drained()).await
    }
}

/// A store whose calls pass tripwires.
pub struct TripStore {
    /// The store.
    pub inner: Arc<dyn BlobStore>,
    /// The host and the wires.
    pub aim: Aim,
}

#[async_trait]
impl BlobStore for TripStore {
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        let put = self.inner.put_if_absent(key, bytes);
        self.aim.around(Target::Store, Call::Put, put).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.aim.around(Target::Store, Call::Get, self.inner.get(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.aim
            .around(Target::Store, Call::List, self.inner.list(prefix))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_and_write_by_name_and_the_first_names_still_read() {
        for host in ["worker-0", "aggregator", "submitter", "reconciler"] {
            for &(target, call) in crate::faults::schedule::role_calls(host) {
                for before in [true, false] {
                    let step = Step { before, target, call };
                    let name = String::from(step);
                    assert_eq!(Step::try_from(name.clone()), Ok(step), "{name}");
                }
            }
        }
        assert_eq!(Step::try_from("results-sent".to_string()), Ok(Step::RESULTS_SENT));
        assert_eq!(String::from(Step::SEGMENT_STORED), "after-store-put");
        assert!(Step::try_from("during-store-put".to_string()).is_err());
        assert!(Step::try_from("before-store-fly".to_string()).is_err());
    }
}
