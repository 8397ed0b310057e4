//! One queue's messages, arranged so every operation is O(log n) or
//! amortised O(1) at millions of messages, and touches memory near the
//! queue's front: copies live in a slab (slot access without a map lookup),
//! hidden copies wait in a set ordered by the time they become visible, and
//! visible copies are numbered in the order they became visible.
//!
//! A receive picks at random among the oldest visible copies: a number is
//! drawn uniformly between the oldest visible copy's and that plus the
//! reorder window, and the first copy at or after it is taken. Delivery is
//! thus unordered (by up to the window) yet no copy waits forever behind
//! newer ones, and picks stay in cache: a uniform pick over millions of
//! copies was three times slower.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use tally::core::QueueStats;

use super::QueueAttrs;

/// One copy of a message. Duplicates are separate copies sharing a
/// message id.
#[derive(Debug)]
pub(super) struct MessageCopy {
    /// Unique over the model's life; tells a reused slot from its past.
    pub serial: u64,
    pub message_id: u64,
    pub body: Box<str>,
    pub receive_count: u32,
    pub visible_at_ms: u64,
    pub sent_ms: u64,
    pub first_receive_ms: Option<u64>,
    /// Its number in [`QueueState::visible`] while visible, [`HIDDEN`]
    /// while hidden (a sentinel keeps a copy at 80 bytes: six million of
    /// them fit in 0.5 GB).
    pub visible_seq: u64,
}

/// [`MessageCopy::visible_seq`] of a copy that is not visible.
pub(super) const HIDDEN: u64 = u64::MAX;

// Millions of copies are held at once: keep a slot small.
const _: () = assert!(std::mem::size_of::<Option<MessageCopy>>() <= 80);

/// A receipt handle: which copy (slot and serial), which receive of it,
/// and when that receive happened (handles expire 12 h after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Handle {
    pub slot: usize,
    pub serial: u64,
    pub receive_count: u32,
    pub received_ms: u64,
}

impl Handle {
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let handle = Self {
            slot: usize::from_str_radix(parts.next()?, 16).ok()?,
            serial: u64::from_str_radix(parts.next()?, 16).ok()?,
            receive_count: parts.next()?.parse().ok()?,
            received_ms: u64::from_str_radix(parts.next()?, 16).ok()?,
        };
        parts.next().is_none().then_some(handle)
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:x}.{:x}.{}.{:x}",
            self.slot, self.serial, self.receive_count, self.received_ms
        )
    }
}

#[derive(Debug)]
pub(super) struct QueueState {
    pub attrs: QueueAttrs,
    /// How long a copy lives after its send: the attribute, or the model's
    /// override in force when the queue was created.
    pub retention_ms: u64,
    /// Calls other than ensure find no queue before this time.
    pub ready_ms: u64,
    /// Tells this queue from an earlier one of the same name, so a deadline
    /// set for that one does not touch this one.
    pub generation: u64,
    /// When a pending deletion makes the queue and its copies vanish.
    pub vanish_ms: Option<u64>,
    /// When the last purge was asked for.
    pub purged_ms: Option<u64>,
    /// The counts last taken, and when: answered until they are stale.
    pub counted: Option<(u64, QueueStats)>,
    slots: Vec<Option<MessageCopy>>,
    /// Empty slots, reused last-freed first.
    free: Vec<usize>,
    len: usize,
    /// Hidden copies by the time they become visible, then slot.
    hidden: BTreeSet<(u64, usize)>,
    /// Visible copies' slots by the number they got when they became
    /// visible.
    visible: BTreeMap<u64, usize>,
    next_seq: u64,
    /// Latent duplicates by the time they appear, then serial.
    latent: BTreeMap<(u64, u64), MessageCopy>,
    /// Every live copy by send time, then slot; kept only on queues whose
    /// counts sweep out expired copies (see [`Self::sweep_expired`]).
    by_sent: Option<BTreeSet<(u64, usize)>>,
}

impl QueueState {
    /// An empty queue; `sweeps` keeps the index that lets
    /// [`Self::sweep_expired`] find expired copies.
    pub fn new(attrs: QueueAttrs, retention_ms: u64, sweeps: bool) -> Self {
        Self {
            attrs,
            retention_ms,
            ready_ms: 0,
            generation: 0,
            vanish_ms: None,
            purged_ms: None,
            counted: None,
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            hidden: BTreeSet::new(),
            visible: BTreeMap::new(),
            next_seq: 0,
            latent: BTreeMap::new(),
            by_sent: sweeps.then(BTreeSet::new),
        }
    }

    /// Whether `copy` outlived this queue's retention at `now_ms`.
    pub fn expired(&self, copy: &MessageCopy, now_ms: u64) -> bool {
        copy.sent_ms.saturating_add(self.retention_ms) <= now_ms
    }

    /// The slot `handle` names if it still holds the copy the handle was
    /// issued for, whichever receive of it the handle is from.
    pub fn same_copy(&self, handle: Handle) -> Option<usize> {
        let copy = self.slots.get(handle.slot)?.as_ref()?;
        (copy.serial == handle.serial).then_some(handle.slot)
    }

    pub fn copy(&self, slot: usize) -> &MessageCopy {
        self.slots[slot].as_ref().expect("a live slot")
    }

    pub fn copy_mut(&mut self, slot: usize) -> &mut MessageCopy {
        self.slots[slot].as_mut().expect("a live slot")
    }

    /// Every copy, in slot order.
    pub fn copies(&self) -> impl Iterator<Item = &MessageCopy> {
        self.slots.iter().flatten()
    }

    /// The slot `handle` names, if it is the copy's current handle.
    pub fn current(&self, handle: Handle) -> Option<usize> {
        let copy = self.slots.get(handle.slot)?.as_ref()?;
        (copy.serial == handle.serial && copy.receive_count == handle.receive_count).then_some(handle.slot)
    }

    /// The earliest time a hidden copy becomes visible.
    pub fn next_hidden_ms(&self) -> Option<u64> {
        self.hidden.first().map(|&(at_ms, _)| at_ms)
    }

    /// Bring the queue up to `now_ms`: latent duplicates that are due
    /// appear, then copies whose visibility ran out become visible.
    /// Returns how many latent duplicates appeared.
    pub fn settle(&mut self, now_ms: u64) -> usize {
        let mut shown = 0;
        while let Some(entry) = self.latent.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let copy = entry.remove();
            self.insert(copy);
            shown += 1;
        }
        self.promote(now_ms);
        shown
    }

    /// Keep `copy` hidden from everything until `due_ms`, when
    /// [`Self::settle`] makes it a visible copy.
    pub fn add_latent(&mut self, mut copy: MessageCopy, due_ms: u64) {
        copy.visible_at_ms = due_ms;
        copy.visible_seq = HIDDEN;
        self.latent.insert((due_ms, copy.serial), copy);
    }

    /// Copies in the queue, visible or in flight (latent ones not counted).
    pub fn live_len(&self) -> usize {
        self.len
    }

    pub fn latent_len(&self) -> usize {
        self.latent.len()
    }

    pub fn next_latent_ms(&self) -> Option<u64> {
        self.latent.first_key_value().map(|(&(due_ms, _), _)| due_ms)
    }

    /// Take every copy, live (in slot order) then latent (in due order),
    /// leaving the queue empty.
    pub fn take_all(&mut self) -> Vec<MessageCopy> {
        let mut all: Vec<MessageCopy> = self.slots.drain(..).flatten().collect();
        all.extend(std::mem::take(&mut self.latent).into_values());
        self.free.clear();
        self.len = 0;
        self.hidden.clear();
        self.visible.clear();
        if let Some(by_sent) = self.by_sent.as_mut() {
            by_sent.clear();
        }
        all
    }

    /// Remove and return every live copy past its retention at `now_ms`,
    /// oldest first; nothing on a queue created without the index.
    pub fn sweep_expired(&mut self, now_ms: u64) -> Vec<MessageCopy> {
        let Some(by_sent) = self.by_sent.as_ref() else {
            return Vec::new();
        };
        let Some(oldest_alive_ms) = now_ms.checked_sub(self.retention_ms) else {
            return Vec::new();
        };
        let slots: Vec<usize> = by_sent
            .range(..=(oldest_alive_ms, usize::MAX))
            .map(|&(_, slot)| slot)
            .collect();
        slots.into_iter().map(|slot| self.remove(slot)).collect()
    }

    /// Make every copy whose visibility ran out visible.
    pub fn promote(&mut self, now_ms: u64) {
        while let Some(&(at_ms, slot)) = self.hidden.first() {
            if at_ms > now_ms {
                break;
            }
            self.hidden.pop_first();
            self.show(slot);
        }
    }

    /// Put the hidden copy in `slot` among the visible ones, as the newest.
    pub fn show(&mut self, slot: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.copy_mut(slot).visible_seq = seq;
        self.visible.insert(seq, slot);
    }

    pub fn has_visible(&self) -> bool {
        !self.visible.is_empty()
    }

    /// Take a visible copy at random from the oldest, within `window`
    /// visibility numbers of the oldest; it is then neither visible nor
    /// hidden until [`Self::hide`] or [`Self::show`].
    pub fn pick(&mut self, rng: &mut ChaCha8Rng, window: u64) -> Option<usize> {
        let (&first, _) = self.visible.first_key_value()?;
        let (&last, _) = self.visible.last_key_value()?;
        let drawn = rng.random_range(first..=last.min(first.saturating_add(window.max(1) - 1)));
        let (&seq, _) = self
            .visible
            .range(drawn..)
            .next()
            .expect("the last key is at or after the draw");
        Some(self.take_visible(seq))
    }

    /// Add a visible copy; returns its slot.
    pub fn insert(&mut self, copy: MessageCopy) -> usize {
        let sent_ms = copy.sent_ms;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(copy);
                slot
            }
            None => {
                self.slots.push(Some(copy));
                self.slots.len() - 1
            }
        };
        if let Some(by_sent) = self.by_sent.as_mut() {
            by_sent.insert((sent_ms, slot));
        }
        self.len += 1;
        self.show(slot);
        slot
    }

    fn take_visible(&mut self, seq: u64) -> usize {
        let slot = self.visible.remove(&seq).expect("a visible copy");
        self.copy_mut(slot).visible_seq = HIDDEN;
        slot
    }

    pub fn remove(&mut self, slot: usize) -> MessageCopy {
        let copy = self.copy(slot);
        let (sent_ms, visible_at_ms, visible_seq) = (copy.sent_ms, copy.visible_at_ms, copy.visible_seq);
        if let Some(by_sent) = self.by_sent.as_mut() {
            by_sent.remove(&(sent_ms, slot));
        }
        if visible_seq == HIDDEN {
            self.hidden.remove(&(visible_at_ms, slot));
        } else {
            self.take_visible(visible_seq);
        }
        self.len -= 1;
        self.free.push(slot);
        self.slots[slot].take().expect("a live slot")
    }

    /// Hide the copy in `slot` (not visible now) until `until_ms`.
    pub fn hide(&mut self, slot: usize, until_ms: u64) {
        let copy = self.copy_mut(slot);
        debug_assert_eq!(copy.visible_seq, HIDDEN);
        let old = (copy.visible_at_ms, slot);
        copy.visible_at_ms = until_ms;
        self.hidden.remove(&old);
        self.hidden.insert((until_ms, slot));
    }

    pub fn stats(&self) -> QueueStats {
        let visible = self.visible.len() as u64;
        QueueStats {
            visible,
            in_flight: self.len as u64 - visible,
        }
    }
}
