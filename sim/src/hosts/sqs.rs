//! A pure, deterministic, in-memory model of SQS standard queues.
//!
//! It models the worst case AWS documents, not what one emulator does:
//! at-least-once, unordered delivery (a seeded pick among the oldest visible
//! messages, within a reorder window),
//! occasional duplicate delivery (a second copy of a message stays in the
//! queue and is delivered again later, with its own receipt handles),
//! visibility timeouts and receive counts, a new receipt handle per receive
//! (a delete with a stale handle succeeds without deleting; a visibility
//! change with one fails for that entry), batch limits (10 entries, 1 MiB),
//! per-entry failures, dead-letter redrive once a message has been received
//! `max_receives` times, retention, the in-flight limit, and queue deletion
//! (`NonExistentQueue` for every call, `QueueDeletedRecently` for 60 s).
//!
//! There is no I/O and no async: every call takes the simulated time as
//! `now_ms`. Each operation costs O(log n) or amortised O(1) (see
//! `state.rs` for how).
//!
//! Ground truth for an oracle comes out through [`SqsObserver`].
//!
//! Simplifications, each on the lenient side of nothing: retention is
//! enforced when an expired copy is picked by a receive (until then
//! [`SqsModel::stats`] still counts it, as SQS's approximate counts may);
//! the up-to-60-s window after a queue deletion in which sends may seem to
//! succeed and then vanish is not modelled (every call fails at once); a
//! message body's 1 MiB limit is checked only as part of its batch's.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tally::core::retry::{BATCH_BYTES_MAX, BATCH_MAX};
use tally::core::{EntryError, QueueError};

/// How long a deleted queue's name stays unusable, as on SQS.
pub const DELETED_RECENTLY_MS: u64 = 60_000;
/// Longest visibility timeout, and longest total time a message may stay
/// in flight after its first receive, as on SQS.
pub const VISIBILITY_MAX_MS: u64 = 12 * 3600 * 1000;
/// Default message retention, as on SQS (4 days).
pub const RETENTION_DEFAULT_MS: u64 = 4 * 24 * 3600 * 1000;
/// Received-but-not-deleted messages a queue holds before receives fail.
pub const IN_FLIGHT_MAX: u64 = 120_000;
/// How far out of order delivery is by default (see
/// [`SqsModel::set_reorder_window`]).
pub const REORDER_WINDOW: u64 = 1_000;
/// The provider code for calls on a queue that does not exist.
pub const NON_EXISTENT_QUEUE: &str = "AWS.SimpleQueueService.NonExistentQueue";
/// The provider code for recreating a queue within 60 s of its deletion.
pub const QUEUE_DELETED_RECENTLY: &str = "AWS.SimpleQueueService.QueueDeletedRecently";

/// A queue's attributes, fixed when it is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAttrs {
    /// Visibility timeout when a receive gives none.
    pub visibility_ms: u64,
    /// Move a message to `dead_letter` instead of delivering it once it has
    /// been received this many times.
    pub max_receives: Option<u32>,
    /// The dead-letter queue's name.
    pub dead_letter: Option<String>,
    /// How long a message lives after it was first sent.
    pub retention_ms: u64,
}

impl Default for QueueAttrs {
    fn default() -> Self {
        Self {
            visibility_ms: 30_000,
            max_receives: None,
            dead_letter: None,
            retention_ms: RETENTION_DEFAULT_MS,
        }
    }
}

impl From<&tally::adapters::local::QueueConfig> for QueueAttrs {
    fn from(config: &tally::adapters::local::QueueConfig) -> Self {
        Self {
            visibility_ms: config.visibility_ms,
            max_receives: config.max_receives,
            dead_letter: config.dead_letter.clone(),
            retention_ms: RETENTION_DEFAULT_MS,
        }
    }
}

/// Fault rates of the model; all zero by default. They may be changed at
/// any time (e.g. between a fault phase and a healed phase).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SqsFaults {
    /// Chance that a delivered message also leaves a copy behind that will
    /// be delivered again.
    pub duplicate_rate: f64,
    /// Chance that one entry of a batch call fails with a retryable error.
    pub entry_failure_rate: f64,
}

/// Ground truth, reported as it happens. Every method defaults to nothing.
pub trait SqsObserver {
    /// `queue` accepted a message with `body` (one call per accepted entry).
    fn accepted(&mut self, _queue: &str, _body: &str) {}
    /// A copy of a message with `body` was deleted by a current handle.
    fn deleted(&mut self, _queue: &str, _body: &str) {}
    /// A copy was lost without being deleted: its queue was deleted or its
    /// retention ran out.
    fn destroyed(&mut self, _queue: &str, _body: &str) {}
    /// A copy was handed to a receiver; `receive_count` includes this one.
    fn delivered(&mut self, _queue: &str, _body: &str, _receive_count: u32) {}
    /// A second copy of a message appeared (a duplicate delivery to come).
    fn duplicated(&mut self, _queue: &str, _body: &str) {}
    /// A copy moved from `queue` to its dead-letter queue `dead_letter`.
    fn dead_lettered(&mut self, _queue: &str, _dead_letter: &str, _body: &str) {}
}

type Observer = Option<Box<dyn SqsObserver>>;

fn tell(observer: &mut Observer, event: impl FnOnce(&mut dyn SqsObserver)) {
    if let Some(observer) = observer.as_deref_mut() {
        event(observer);
    }
}

fn permanent(code: &str, message: String) -> QueueError {
    QueueError::Permanent {
        code: code.into(),
        message,
    }
}

fn missing(queue: &str) -> QueueError {
    QueueError::Missing {
        queue: queue.into(),
        code: NON_EXISTENT_QUEUE.into(),
    }
}

fn entry_error(code: &str, message: String, retryable: bool) -> EntryError {
    EntryError {
        code: code.into(),
        message,
        retryable,
    }
}

fn check_batch<T>(entries: &[T]) -> Result<(), QueueError> {
    if entries.is_empty() {
        return Err(permanent(
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "a batch needs an entry".into(),
        ));
    }
    if entries.len() > BATCH_MAX {
        return Err(permanent(
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!("a batch holds at most {BATCH_MAX} entries, not {}", entries.len()),
        ));
    }
    Ok(())
}

/// Every queue of one simulated SQS region.
///
/// `now_ms` is the simulation's elapsed time in milliseconds: inside a host
/// [`crate::doubles::clock::sim_now_ms`], outside (a fault injector between steps)
/// `sim.elapsed().as_millis()`. It must never go backwards.
pub struct SqsModel {
    queues: BTreeMap<String, QueueState>,
    /// When each deleted queue name was deleted.
    deleted_ms: BTreeMap<String, u64>,
    faults: SqsFaults,
    in_flight_max: u64,
    reorder_window: u64,
    /// Picks which visible copy a receive returns.
    order_rng: ChaCha8Rng,
    /// Draws injected faults, apart from the order so changing a rate does
    /// not reshuffle delivery.
    fault_rng: ChaCha8Rng,
    /// Numbers every copy ever made, for receipt handles.
    next_serial: u64,
    next_message_id: u64,
    observer: Observer,
}

impl std::fmt::Debug for SqsModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsModel")
            .field("queues", &self.queues.keys().collect::<Vec<_>>())
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl SqsModel {
    /// An empty region whose randomness all comes from `seed`.
    pub fn new(seed: u64, faults: SqsFaults) -> Self {
        let mut order_rng = ChaCha8Rng::seed_from_u64(seed);
        order_rng.set_stream(1);
        let mut fault_rng = ChaCha8Rng::seed_from_u64(seed);
        fault_rng.set_stream(2);
        Self {
            queues: BTreeMap::new(),
            deleted_ms: BTreeMap::new(),
            faults,
            in_flight_max: IN_FLIGHT_MAX,
            reorder_window: REORDER_WINDOW,
            order_rng,
            fault_rng,
            next_serial: 0,
            next_message_id: 0,
            observer: None,
        }
    }

    /// Report ground truth to `observer` from now on.
    pub fn set_observer(&mut self, observer: Box<dyn SqsObserver>) {
        self.observer = Some(observer);
    }

    /// Change the fault rates.
    pub fn set_faults(&mut self, faults: SqsFaults) {
        self.faults = faults;
    }

    /// The current fault rates.
    pub fn faults(&self) -> SqsFaults {
        self.faults
    }

    /// Change how many messages a queue may hold in flight before receives
    /// fail with `OverLimit`.
    pub fn set_in_flight_max(&mut self, in_flight_max: u64) {
        self.in_flight_max = in_flight_max;
    }

    /// Change how far out of order delivery may be: a receive picks among
    /// the copies that became visible within this many visibility events of
    /// the oldest visible copy (1 delivers oldest first).
    pub fn set_reorder_window(&mut self, reorder_window: u64) {
        self.reorder_window = reorder_window.max(1);
    }

    /// Names of the existing queues, in order.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }

    /// Whether `queue` exists.
    pub fn exists(&self, queue: &str) -> bool {
        self.queues.contains_key(queue)
    }

    /// The attributes `queue` was created with.
    pub fn attrs(&self, queue: &str) -> Option<&QueueAttrs> {
        self.queues.get(queue).map(|q| &q.attrs)
    }

    /// Bodies of every copy in `queue` (visible or not), in the order the
    /// copies arrived in it.
    pub fn bodies(&self, queue: &str) -> Vec<&str> {
        self.queues
            .get(queue)
            .map(|q| {
                let mut copies: Vec<_> = q.copies().map(|c| (c.serial, &*c.body)).collect();
                copies.sort_unstable();
                copies.into_iter().map(|(_, body)| body).collect()
            })
            .unwrap_or_default()
    }

    /// When the next copy of `queue` becomes visible: `now_ms` if one is
    /// visible now, `None` if the queue is empty or missing.
    pub fn next_visible_ms(&mut self, queue: &str, now_ms: u64) -> Option<u64> {
        let q = self.queues.get_mut(queue)?;
        q.promote(now_ms);
        if q.has_visible() {
            return Some(now_ms);
        }
        q.next_hidden_ms()
    }

    fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.fault_rng.random_bool(rate.min(1.0))
    }

    fn failed_entry(&mut self) -> Option<EntryError> {
        let rate = self.faults.entry_failure_rate;
        self.chance(rate)
            .then(|| entry_error("InternalError", "injected entry failure".into(), true))
    }

    /// Create `queue` with `attrs` unless it exists with the same attributes.
    pub fn ensure(&mut self, queue: &str, attrs: &QueueAttrs, now_ms: u64) -> Result<(), QueueError> {
        if let Some(existing) = self.queues.get(queue) {
            if existing.attrs == *attrs {
                return Ok(());
            }
            return Err(permanent(
                "QueueAlreadyExists",
                format!("queue {queue} exists with other attributes: {:?}", existing.attrs),
            ));
        }
        if let Some(&deleted_ms) = self.deleted_ms.get(queue) {
            let ready_ms = deleted_ms + DELETED_RECENTLY_MS;
            if now_ms < ready_ms {
                return Err(QueueError::DeletedRecently {
                    queue: queue.into(),
                    retry_after_ms: ready_ms - now_ms,
                    code: QUEUE_DELETED_RECENTLY.into(),
                });
            }
        }
        self.queues.insert(queue.into(), QueueState::new(attrs.clone()));
        Ok(())
    }

    /// Delete `queue` and every message in it; its name is unusable for 60 s.
    pub fn delete_queue(&mut self, queue: &str, now_ms: u64) -> Result<(), QueueError> {
        let state = self.queues.remove(queue).ok_or_else(|| missing(queue))?;
        for copy in state.copies() {
            tell(&mut self.observer, |o| o.destroyed(queue, &copy.body));
        }
        self.deleted_ms.insert(queue.into(), now_ms);
        Ok(())
    }

    /// Send up to ten bodies, at most 1 MiB in all. One status per entry.
    pub fn send_batch(
        &mut self,
        queue: &str,
        bodies: &[String],
        now_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        check_batch(bodies)?;
        let total: usize = bodies.iter().map(String::len).sum();
        if total > BATCH_BYTES_MAX {
            return Err(permanent(
                "AWS.SimpleQueueService.BatchRequestTooLong",
                format!("a batch holds at most {BATCH_BYTES_MAX} bytes, not {total}"),
            ));
        }
        if !self.queues.contains_key(queue) {
            return Err(missing(queue));
        }
        let mut statuses = Vec::with_capacity(bodies.len());
        for body in bodies {
            if let Some(err) = self.failed_entry() {
                statuses.push(Err(err));
                continue;
            }
            self.next_serial += 1;
            let copy = MessageCopy {
                serial: self.next_serial,
                message_id: self.next_message_id,
                body: body.as_str().into(),
                receive_count: 0,
                visible_at_ms: now_ms,
                sent_ms: now_ms,
                first_receive_ms: None,
                visible_seq: HIDDEN,
            };
            self.next_message_id += 1;
            let q = self.queues.get_mut(queue).expect("checked above");
            q.insert(copy);
            tell(&mut self.observer, |o| o.accepted(queue, body));
            statuses.push(Ok(()));
        }
        Ok(statuses)
    }
}

mod receive;
mod state;

use state::{Handle, MessageCopy, QueueState, HIDDEN};

#[cfg(test)]
mod tests;
