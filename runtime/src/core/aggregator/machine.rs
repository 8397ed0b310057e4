//! The aggregator's decisions as a plain state machine: events in (results
//! received, a tick, a segment stored, deletes done or stopped, a stop),
//! actions out (store a segment, delete, extend, quarantine). No I/O, no
//! clock, no async: the executor in `aggregator/mod.rs` performs the actions
//! and reports back what happened.
//!
//! Every held result message is in exactly one place: the open segment,
//! a segment being stored, stored and waiting for its delete, or being
//! deleted. The rule lives here: a result message is deleted only after its
//! segment is stored. The planted policies break it in one place each:
//! `naive` deletes on receipt ([`Gatherer::received`]), `silent-dedupe`
//! drops a second record for a key there too.

use std::collections::{BTreeSet, VecDeque};

use super::AggregatorConfig;
use crate::core::{segment, Received, ResultView};

/// What the executor must do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Store the message under `quarantine/`, then delete it.
    Quarantine {
        /// The message.
        msg: Received,
        /// Why it is not a usable message, stored with it.
        reason: String,
    },
    /// Delete these result messages before the next event.
    Delete(Vec<String>),
    /// Store this segment create-only; report [`Gatherer::stored`].
    Store {
        /// Its key.
        key: String,
        /// Its stored bytes.
        bytes: Vec<u8>,
        /// How many records it holds.
        records: usize,
    },
    /// Extend the visibility of these held messages.
    Extend {
        /// The messages.
        handles: Vec<String>,
        /// For how long.
        visibility_ms: u64,
    },
}

/// The segment being filled.
#[derive(Debug, Default)]
struct Open {
    bodies: Vec<String>,
    handles: Vec<String>,
    opened_ms: u64,
    beat_ms: u64,
}

/// Gathers results into segments and decides when each message may go.
#[derive(Debug)]
pub struct Gatherer {
    config: AggregatorConfig,
    open: Open,
    /// Handles of the segments being stored, oldest first.
    storing: VecDeque<Vec<String>>,
    /// Handles whose segment is stored, waiting for their delete.
    stored: Vec<String>,
    /// How many handles the delete in flight holds, if one is.
    deleting: Option<usize>,
    stopping: bool,
    finishing: bool,
    /// Handles held, wherever they are: the check that none is in two places.
    held: usize,
    /// Keys seen, for the planted silent-dedupe bug only.
    seen: BTreeSet<(String, u64)>,
}

impl Gatherer {
    /// A gatherer holding nothing.
    pub fn new(config: AggregatorConfig) -> Self {
        Self {
            config,
            open: Open::default(),
            storing: VecDeque::new(),
            stored: Vec::new(),
            deleting: None,
            stopping: false,
            finishing: false,
            held: 0,
            seen: BTreeSet::new(),
        }
    }

    /// Messages arrived at `now_ms`: buffer the results among them and
    /// quarantine anything else.
    pub fn received(&mut self, msgs: Vec<Received>, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut early = Vec::new();
        for msg in msgs {
            // Only the planted silent-dedupe bug remembers keys (for the
            // life of this incarnation); the real aggregator keeps every record.
            let first = ResultView::decode(&msg.body).map(|view| {
                self.config.policy.keeps_duplicates() || self.seen.insert((view.sweep.into_owned(), view.index))
            });
            match first {
                Ok(first) => self.accept(first, msg.body, msg.handle, now_ms, &mut early),
                Err(reason) => actions.push(Action::Quarantine { msg, reason }),
            }
        }
        if !early.is_empty() {
            actions.push(Action::Delete(early));
        }
        actions
    }

    fn accept(&mut self, first: bool, body: String, handle: String, now_ms: u64, early: &mut Vec<String>) {
        if self.open.bodies.is_empty() {
            self.open.opened_ms = now_ms;
            self.open.beat_ms = now_ms;
        }
        // The planted bug: delete on receipt, before any segment is stored.
        if self.config.policy.aggregator_deletes_first() {
            early.push(handle);
        } else {
            self.open.handles.push(handle);
            self.held += 1;
        }
        if first {
            self.open.bodies.push(body);
        }
    }

    /// Time passed: store the segment when it is full or old; extend held
    /// messages when it has been open for a third of their visibility.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let full = self.open.bodies.len() >= self.config.segment_records_max;
        let old = !self.open.bodies.is_empty() && now_ms >= self.open.opened_ms + self.config.segment_age_max_ms;
        if full || old {
            return self.flush();
        }
        if !self.open.handles.is_empty() && now_ms >= self.open.beat_ms + self.config.visibility_ms / 3 {
            self.open.beat_ms = now_ms;
            return vec![Action::Extend {
                handles: self.open.handles.clone(),
                visibility_ms: self.config.visibility_ms,
            }];
        }
        Vec::new()
    }

    /// The oldest segment being stored is stored: only now may its
    /// messages go. They are deleted alongside the next receives, or at
    /// once when finishing.
    pub fn stored(&mut self) -> Vec<Action> {
        let mut handles = self
            .storing
            .pop_front()
            .expect("a segment was stored while none was being stored");
        self.stored.append(&mut handles);
        self.check();
        self.final_deletes()
    }

    /// Handles to delete alongside the receives, if no delete is in flight
    /// and not stopping (once stopping, they wait for [`Gatherer::finish`]).
    /// Report [`Gatherer::deleted`] or [`Gatherer::delete_stopped`].
    pub fn next_deletes(&mut self) -> Option<Vec<String>> {
        if self.deleting.is_some() || self.stopping || self.stored.is_empty() {
            return None;
        }
        let handles = std::mem::take(&mut self.stored);
        self.deleting = Some(handles.len());
        Some(handles)
    }

    /// The delete in flight is done (refused entries reappear later, which
    /// reconciliation counts).
    pub fn deleted(&mut self) {
        let count = self
            .deleting
            .take()
            .expect("a delete finished while none was in flight");
        self.held -= count;
        self.check();
    }

    /// The delete in flight was cut short by a stop: its handles wait for
    /// the deletes on the way out.
    pub fn delete_stopped(&mut self, mut handles: Vec<String>) {
        let count = self.deleting.take().expect("a delete stopped while none was in flight");
        debug_assert_eq!(count, handles.len(), "a stopped delete hands back all its handles");
        self.stored.append(&mut handles);
        self.check();
    }

    /// A stop was requested: start no more deletes alongside receives.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Receiving is over: store what is held, then delete every stored
    /// message (these calls continue through the stop).
    pub fn finish(&mut self) -> Vec<Action> {
        self.stopping = true;
        self.finishing = true;
        let mut actions = self.flush();
        if self.storing.is_empty() {
            actions.extend(self.final_deletes());
        }
        actions
    }

    /// How long the next receive may wait: no longer than the open
    /// segment's remaining age.
    pub fn wait_ms(&self, now_ms: u64) -> u64 {
        if self.open.bodies.is_empty() {
            return self.config.wait_ms;
        }
        let deadline = self.open.opened_ms + self.config.segment_age_max_ms;
        deadline.saturating_sub(now_ms).min(self.config.wait_ms)
    }

    /// Records held in the open segment.
    pub fn buffered(&self) -> usize {
        self.open.bodies.len()
    }

    /// Close the open segment: a `Store` for its records, its handles held
    /// until [`Gatherer::stored`]. Handles without records (only under the
    /// planted silent-dedupe bug) have nothing to wait for.
    fn flush(&mut self) -> Vec<Action> {
        let open = std::mem::take(&mut self.open);
        if self.config.policy.keeps_duplicates() && !self.config.policy.aggregator_deletes_first() {
            assert_eq!(
                open.bodies.len(),
                open.handles.len(),
                "a segment holds one record per message it holds"
            );
        }
        if open.bodies.is_empty() {
            self.stored.extend(open.handles);
            return Vec::new();
        }
        let (key, bytes) = segment::encode(&self.config.id, &open.bodies);
        self.storing.push_back(open.handles);
        self.check();
        vec![Action::Store {
            key,
            bytes,
            records: open.bodies.len(),
        }]
    }

    fn final_deletes(&mut self) -> Vec<Action> {
        if !self.finishing || !self.storing.is_empty() || self.stored.is_empty() {
            return Vec::new();
        }
        let handles = std::mem::take(&mut self.stored);
        self.held -= handles.len();
        vec![Action::Delete(handles)]
    }

    /// Every held handle is in exactly one place; a handle copied instead of
    /// moved would be counted twice.
    fn check(&self) {
        let placed = self.open.handles.len()
            + self.storing.iter().map(Vec::len).sum::<usize>()
            + self.stored.len()
            + self.deleting.unwrap_or(0);
        debug_assert_eq!(placed, self.held, "a held message is in exactly one place");
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
pub(crate) mod tests;
