//! A pure, deterministic, in-memory model of SQS standard queues.
//!
//! It models the worst case AWS documents, not what one emulator does:
//! at-least-once, unordered delivery (a seeded pick among the oldest visible
//! messages, within a reorder window),
//! occasional duplicate delivery (a second copy of a message stays in the
//! queue and is delivered again later, with its own receipt handles),
//! visibility timeouts and receive counts, a new receipt handle per receive
//! (a delete with a stale handle succeeds without deleting; a visibility
//! change with one fails for that entry; any handle fails 12 h after its
//! receive), batch limits (10 entries, 1 MiB),
//! per-entry failures, dead-letter redrive once a message has been received
//! `max_receives` times, retention (of visible and in-flight messages), the
//! in-flight limit, queue deletion (`NonExistentQueue` for every call,
//! `QueueDeletedRecently` for 60 s) and purging.
//!
//! [`SqsWorstCase`] turns on, one knob each, the harsher behaviours AWS
//! documents that a run may want: lagging and under-counted depths, latent
//! duplicates that reappear long after a delete, a deletion (or purge) that
//! takes effect up to a minute after it was asked for, stale handles that
//! fail or still delete, receives that return fewer messages than are
//! visible, queues not usable just after their creation, and throttling.
//! All are off by default, and their randomness comes from a stream of its
//! own, so with them off a seed gives the draws it always gave.
//!
//! There is no I/O and no async: every call takes the simulated time as
//! `now_ms`. Each operation costs O(log n) or amortised O(1) (see
//! `state.rs` for how), except deleting or purging a queue, which reports
//! every copy it destroys.
//!
//! Ground truth for an oracle comes out through [`SqsObserver`].
//!
//! Simplifications, each on the lenient side of nothing: an expired message
//! is destroyed when a receive picks it, when a delete or visibility change
//! names it, or, on queues created under [`SqsModel::set_retention_ms`],
//! when a depth count is refreshed; until then [`SqsModel::stats`] still
//! counts it, as SQS's approximate counts may. A visibility change with a
//! lapsed handle always fails (SQS may let it through), which is harsher
//! than [`SqsWorstCase::stale_handle_fail_rate`]. A message body's 1 MiB
//! limit is checked only as part of its batch's. Queries without a time
//! ([`SqsModel::exists`], [`SqsModel::bodies`], [`SqsModel::queue_names`])
//! see the model as of its latest call; [`SqsModel::advance`] brings it to
//! a given time.

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

/// AWS's documented worst cases beyond [`SqsFaults`], one knob each; all
/// off by default. Set with [`SqsModel::set_worst_case`]; they may change
/// at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SqsWorstCase {
    /// Depth counts are answered from a snapshot refreshed at most this
    /// often (0: always fresh).
    pub count_lag_ms: u64,
    /// Chance that each nonzero count in an answer is reported lower (a
    /// uniform draw below the true value, down to 0).
    pub undercount_rate: f64,
    /// When above 0, a duplicate left by
    /// [`SqsFaults::duplicate_rate`] is latent: invisible, uncounted and
    /// undeletable until a time drawn log-uniformly between 1 s and this.
    pub latent_duplicate_max_ms: u64,
    /// When above 0, a deleted queue keeps working for a window drawn in
    /// `[0, this]`, then vanishes with every copy in it.
    pub deletion_window_max_ms: u64,
    /// Chance that a delete with a handle whose visibility timeout lapsed
    /// fails that entry with `ReceiptHandleIsInvalid`.
    pub stale_handle_fail_rate: f64,
    /// Chance that a delete with the handle of an earlier receive (not
    /// failed by the rate above) deletes the copy anyway.
    pub stale_delete_deletes_rate: f64,
    /// Chance that a receive returns fewer messages than it could: a short
    /// poll possibly none, a long poll at least one.
    pub short_receive_rate: f64,
    /// A new queue answers `NonExistentQueue` to every call but ensure for
    /// this long after its creation.
    pub create_ready_ms: u64,
    /// Chance that a whole call fails, unapplied, with `RequestThrottled`.
    pub throttle_rate: f64,
    /// A purge destroys the queue's copies (those sent meanwhile too) at
    /// the end of a window drawn in `[0, this]` (0: at once).
    pub purge_window_max_ms: u64,
}

/// Ground truth, reported as it happens. Every method defaults to nothing.
pub trait SqsObserver {
    /// `queue` accepted a message with `body` (one call per accepted entry).
    fn accepted(&mut self, _queue: &str, _body: &str) {}
    /// A copy of a message with `body` was deleted by a receipt handle.
    fn deleted(&mut self, _queue: &str, _body: &str) {}
    /// A copy was lost without being deleted: its queue was deleted or
    /// purged, or its retention ran out.
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

fn retryable(code: &str, message: String) -> QueueError {
    QueueError::Retryable {
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
    worst: SqsWorstCase,
    /// Retention for every queue created while it is set.
    retention_override_ms: Option<u64>,
    /// Deletions and purges that take effect later: (when, what, queue,
    /// its generation).
    deadlines: std::collections::BTreeSet<(u64, Deadline, String, u64)>,
    next_generation: u64,
    in_flight_max: u64,
    reorder_window: u64,
    /// Picks which visible copy a receive returns.
    order_rng: ChaCha8Rng,
    /// Draws injected faults, apart from the order so changing a rate does
    /// not reshuffle delivery.
    fault_rng: ChaCha8Rng,
    /// Draws for the [`SqsWorstCase`] knobs, apart from the others so that
    /// with the knobs off every other draw is as it always was.
    worst_rng: ChaCha8Rng,
    /// Numbers every copy ever made, for receipt handles.
    next_serial: u64,
    next_message_id: u64,
    observer: Observer,
    /// How often each of the model's rare behaviours happened (a stale
    /// handle used, a dead-letter move, a throttled call...): what a run
    /// covered, for coverage-guided search. Counting draws nothing.
    rare: BTreeMap<&'static str, u64>,
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
        let mut worst_rng = ChaCha8Rng::seed_from_u64(seed);
        worst_rng.set_stream(3);
        Self {
            queues: BTreeMap::new(),
            deleted_ms: BTreeMap::new(),
            faults,
            worst: SqsWorstCase::default(),
            retention_override_ms: None,
            deadlines: std::collections::BTreeSet::new(),
            next_generation: 0,
            in_flight_max: IN_FLIGHT_MAX,
            reorder_window: REORDER_WINDOW,
            order_rng,
            fault_rng,
            worst_rng,
            next_serial: 0,
            next_message_id: 0,
            observer: None,
            rare: BTreeMap::new(),
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

    /// Change the worst-case knobs.
    pub fn set_worst_case(&mut self, worst: SqsWorstCase) {
        self.worst = worst;
    }

    /// The current worst-case knobs.
    pub fn worst_case(&self) -> SqsWorstCase {
        self.worst
    }

    /// Give every queue created from now on this retention instead of its
    /// attribute's (`None`: the attribute's again). Such queues also drop
    /// expired copies from their counts whenever the counts are refreshed.
    pub fn set_retention_ms(&mut self, retention_ms: Option<u64>) {
        self.retention_override_ms = retention_ms;
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

    /// Names of the existing queues, in order, as of the latest call.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }

    /// Whether `queue` exists, as of the latest call (a queue in its
    /// deletion window still exists).
    pub fn exists(&self, queue: &str) -> bool {
        self.queues.contains_key(queue)
    }

    /// The attributes `queue` was created with.
    pub fn attrs(&self, queue: &str) -> Option<&QueueAttrs> {
        self.queues.get(queue).map(|q| &q.attrs)
    }

    /// Bodies of every live copy in `queue` (visible or not, latent
    /// duplicates aside), in the order the copies arrived in it, as of the
    /// latest call.
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

    /// Every copy `queue` holds, visible, in flight or latent.
    pub fn held(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, |q| q.live_len() + q.latent_len())
    }

    /// Latent duplicates of `queue` still to appear.
    pub fn latent_pending(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, QueueState::latent_len)
    }

    /// When the next latent duplicate of `queue` appears.
    pub fn next_latent_ms(&self, queue: &str) -> Option<u64> {
        self.queues.get(queue)?.next_latent_ms()
    }

    /// When `queue` next changes for a receiver: `now_ms` if a copy is
    /// visible now, else the earliest of a hidden copy becoming visible, a
    /// latent duplicate appearing and the queue vanishing; `None` if the
    /// queue is missing or none of these will happen.
    pub fn next_visible_ms(&mut self, queue: &str, now_ms: u64) -> Option<u64> {
        self.advance(now_ms);
        let q = self.queues.get_mut(queue)?;
        q.settle(now_ms);
        if q.has_visible() {
            return Some(now_ms);
        }
        [q.next_hidden_ms(), q.next_latent_ms(), q.vanish_ms]
            .into_iter()
            .flatten()
            .min()
    }

    /// Count one rare behaviour.
    fn note(&mut self, what: &'static str) {
        *self.rare.entry(what).or_default() += 1;
    }

    /// How often each rare behaviour happened so far, by name.
    pub fn rare_events(&self) -> &BTreeMap<&'static str, u64> {
        &self.rare
    }

    fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.fault_rng.random_bool(rate.min(1.0))
    }

    /// Like [`Self::chance`], from the worst-case knobs' own stream.
    fn worst_chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.worst_rng.random_bool(rate.min(1.0))
    }

    /// A whole call refused before it is applied, at
    /// [`SqsWorstCase::throttle_rate`]. SendMessage API Reference (and the
    /// other actions'), Errors, RequestThrottled: "The request was denied
    /// due to request throttling. Exceeds the permitted request rate for
    /// the queue or for the recipient of the request." Common Errors lists
    /// the same as ThrottlingException.
    fn throttled(&mut self) -> Result<(), QueueError> {
        let rate = self.worst.throttle_rate;
        if self.worst_chance(rate) {
            self.note("throttled");
            return Err(retryable(
                "RequestThrottled",
                "The request was denied due to request throttling.".into(),
            ));
        }
        Ok(())
    }

    fn failed_entry(&mut self) -> Option<EntryError> {
        let rate = self.faults.entry_failure_rate;
        self.chance(rate)
            .then(|| entry_error("InternalError", "injected entry failure".into(), true))
    }

    /// Send up to ten bodies, at most 1 MiB in all. One status per entry.
    pub fn send_batch(
        &mut self,
        queue: &str,
        bodies: &[String],
        now_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.throttled()?;
        check_batch(bodies)?;
        let total: usize = bodies.iter().map(String::len).sum();
        if total > BATCH_BYTES_MAX {
            return Err(permanent(
                "AWS.SimpleQueueService.BatchRequestTooLong",
                format!("a batch holds at most {BATCH_BYTES_MAX} bytes, not {total}"),
            ));
        }
        self.open(queue, now_ms)?;
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

mod handles;
mod lifecycle;
mod receive;
mod state;

pub use lifecycle::{PURGE_INTERVAL_MS, PURGE_QUEUE_IN_PROGRESS};

use lifecycle::Deadline;
use state::{Handle, MessageCopy, QueueState, HIDDEN};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod worst_tests;
