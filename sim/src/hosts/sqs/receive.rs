//! Receiving: which copies a receive returns, how many, and what it leaves
//! behind (duplicates, latent or not, and dead-lettered copies).

use rand::Rng;
use tally::core::{QueueError, Received};

use super::{permanent, retryable, tell, Handle, MessageCopy, QueueState, SqsModel, HIDDEN, VISIBILITY_MAX_MS};

/// The shortest delay of a latent duplicate.
const LATENT_MIN_MS: u64 = 1_000;

/// What to do with the visible copy a receive picked.
enum Pick {
    Deliver,
    Expire,
    DeadLetter(String),
}

fn pick_fate(q: &QueueState, copy: &MessageCopy, queue: &str, now_ms: u64) -> Pick {
    if q.expired(copy, now_ms) {
        return Pick::Expire;
    }
    if let (Some(limit), Some(dead_letter)) = (q.attrs.max_receives, &q.attrs.dead_letter) {
        if copy.receive_count >= limit && dead_letter != queue {
            return Pick::DeadLetter(dead_letter.clone());
        }
    }
    Pick::Deliver
}

impl SqsModel {
    /// Receive up to `max` (1 to 10) messages, hiding each for
    /// `visibility_ms`: a short poll, answered at once, empty when nothing
    /// is visible (long polling is the caller's business: see
    /// [`Self::receive_long`]).
    pub fn receive(
        &mut self,
        queue: &str,
        max: usize,
        visibility_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Received>, QueueError> {
        self.receive_as(queue, max, visibility_ms, false, now_ms)
    }

    /// One look of a long poll: like [`Self::receive`], but at the in-flight
    /// limit it returns nothing rather than `OverLimit`, and a stingy
    /// answer still holds a message when one is visible. SQS Developer
    /// Guide, "Amazon SQS message quotas" (in-flight messages): "If you
    /// reach this quota while using short polling, Amazon SQS returns the
    /// OverLimit error message. If you use long polling, Amazon SQS returns
    /// no error messages."
    pub fn receive_long(
        &mut self,
        queue: &str,
        max: usize,
        visibility_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Received>, QueueError> {
        self.receive_as(queue, max, visibility_ms, true, now_ms)
    }

    fn receive_as(
        &mut self,
        queue: &str,
        max: usize,
        visibility_ms: u64,
        long: bool,
        now_ms: u64,
    ) -> Result<Vec<Received>, QueueError> {
        if max == 0 || max > tally::core::retry::BATCH_MAX {
            return Err(permanent(
                "ReadCountOutOfRange",
                format!("receive 1 to 10 messages, not {max}"),
            ));
        }
        if visibility_ms > VISIBILITY_MAX_MS {
            return Err(permanent(
                "InvalidParameterValue",
                format!("visibility {visibility_ms} ms is over 12 h"),
            ));
        }
        self.throttled()?;
        self.open_settled(queue, now_ms)?;
        if self.queues[queue].stats().in_flight >= self.in_flight_max {
            if long {
                return Ok(Vec::new());
            }
            return Err(retryable(
                "AWS.SimpleQueueService.OverLimit",
                format!("{queue} holds {} messages in flight", self.in_flight_max),
            ));
        }
        let max = self.stingy(max, long);
        self.take_up_to(queue, max, visibility_ms, now_ms)
    }

    /// How many messages this receive may return, at most `max`: fewer at
    /// [`super::SqsWorstCase::short_receive_rate`]. ReceiveMessage API
    /// Reference: short polling samples "a weighted random set of machines
    /// [...] This means only the messages on the sampled machines are
    /// returned. If the number of messages in the queue is small (fewer
    /// than 1,000), you most likely get fewer messages than you requested
    /// per ReceiveMessage call. If the number of messages in the queue is
    /// extremely small, you might not receive any messages".
    fn stingy(&mut self, max: usize, long: bool) -> usize {
        let rate = self.worst.short_receive_rate;
        if !self.worst_chance(rate) {
            return max;
        }
        self.note("short-receive");
        match (long, max) {
            (true, 1) => 1,
            (true, _) => self.worst_rng.random_range(1..max),
            (false, _) => self.worst_rng.random_range(0..max),
        }
    }

    /// Pick, deliver, expire or redrive visible copies of the open `queue`
    /// until `max` are delivered or none is visible.
    fn take_up_to(
        &mut self,
        queue: &str,
        max: usize,
        visibility_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Received>, QueueError> {
        let mut out = Vec::with_capacity(max);
        let mut duplicates = Vec::new();
        while out.len() < max {
            let q = self.queues.get_mut(queue).expect("opened by the caller");
            let Some(id) = q.pick(&mut self.order_rng, self.reorder_window) else {
                break;
            };
            let fate = match pick_fate(q, q.copy(id), queue, now_ms) {
                // A redrive to a missing dead-letter queue delivers instead.
                Pick::DeadLetter(target) if !self.queues.contains_key(&target) => Pick::Deliver,
                fate => fate,
            };
            match fate {
                Pick::Expire => {
                    self.note("expired");
                    let q = self.queues.get_mut(queue).expect("opened by the caller");
                    let copy = q.remove(id);
                    tell(&mut self.observer, |o| o.destroyed(queue, &copy.body));
                }
                Pick::DeadLetter(dead_letter) => self.dead_letter(queue, &dead_letter, id, now_ms),
                Pick::Deliver => {
                    let duplicate_rate = self.faults.duplicate_rate;
                    if self.chance(duplicate_rate) {
                        duplicates.push(id);
                    }
                    out.push(self.deliver(queue, id, visibility_ms, now_ms));
                }
            }
        }
        for id in duplicates {
            self.duplicate(queue, id, now_ms);
        }
        Ok(out)
    }

    /// Hide the picked copy `id` for `visibility_ms` and describe it.
    fn deliver(&mut self, queue: &str, id: usize, visibility_ms: u64, now_ms: u64) -> Received {
        let q = self.queues.get_mut(queue).expect("delivering from an existing queue");
        let copy = q.copy_mut(id);
        copy.receive_count += 1;
        let again = copy.first_receive_ms.is_some();
        copy.first_receive_ms.get_or_insert(now_ms);
        let handle = Handle {
            slot: id,
            serial: copy.serial,
            receive_count: copy.receive_count,
            received_ms: now_ms,
        };
        let received = Received {
            body: copy.body.to_string(),
            handle: handle.to_string(),
            message_id: format!("m{}", copy.message_id),
            receive_count: copy.receive_count,
        };
        q.hide(id, now_ms + visibility_ms);
        if again {
            self.note("redelivered");
        }
        tell(&mut self.observer, |o| {
            o.delivered(queue, &received.body, received.receive_count)
        });
        received
    }

    /// Leave a second copy of `id` behind, as a copy on another server
    /// would be. It keeps the receive count from before this receive. It is
    /// visible at once, or, with
    /// [`super::SqsWorstCase::latent_duplicate_max_ms`], latent until a
    /// drawn time: DeleteMessage API Reference: "it is possible to receive
    /// a message even after you delete it. This might happen on rare
    /// occasions if one of the servers which stores a copy of the message
    /// is unavailable when you send the request to delete the message. The
    /// copy remains on the server and might be returned to you during a
    /// subsequent receive request." No bound is given on when.
    fn duplicate(&mut self, queue: &str, id: usize, now_ms: u64) {
        let latent_max_ms = self.worst.latent_duplicate_max_ms;
        let due_ms = (latent_max_ms > 0).then(|| now_ms + self.latent_delay_ms(latent_max_ms));
        self.note(if due_ms.is_some() {
            "latent-duplicate"
        } else {
            "duplicate"
        });
        let q = self.queues.get_mut(queue).expect("duplicating in an existing queue");
        let original = q.copy(id);
        self.next_serial += 1;
        let copy = MessageCopy {
            serial: self.next_serial,
            message_id: original.message_id,
            body: original.body.clone(),
            receive_count: original.receive_count.saturating_sub(1),
            visible_at_ms: now_ms,
            sent_ms: original.sent_ms,
            first_receive_ms: None,
            visible_seq: HIDDEN,
        };
        tell(&mut self.observer, |o| o.duplicated(queue, &copy.body));
        match due_ms {
            Some(due_ms) => q.add_latent(copy, due_ms),
            None => {
                q.insert(copy);
            }
        }
    }

    /// A delay log-uniform between 1 s and `max_ms`: seconds are common,
    /// hours possible.
    fn latent_delay_ms(&mut self, max_ms: u64) -> u64 {
        let low = LATENT_MIN_MS.min(max_ms) as f64;
        let high = max_ms as f64;
        if high <= low {
            return max_ms;
        }
        let drawn = self.worst_rng.random_range(low.ln()..high.ln()).exp();
        (drawn as u64).clamp(LATENT_MIN_MS.min(max_ms), max_ms)
    }

    /// Move copy `id` to the existing queue `dead_letter`, keeping its send
    /// time and receive count.
    fn dead_letter(&mut self, queue: &str, dead_letter: &str, id: usize, now_ms: u64) {
        let q = self.queues.get_mut(queue).expect("redriving from an existing queue");
        let mut copy = q.remove(id);
        self.note("dead-letter-move");
        tell(&mut self.observer, |o| o.dead_lettered(queue, dead_letter, &copy.body));
        copy.visible_at_ms = now_ms;
        copy.visible_seq = HIDDEN;
        self.next_serial += 1;
        copy.serial = self.next_serial;
        let target = self.queues.get_mut(dead_letter).expect("checked by the caller");
        target.insert(copy);
    }
}
