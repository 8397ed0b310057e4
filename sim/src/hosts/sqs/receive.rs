//! Receiving, and what receivers do with what they hold: delete, change
//! visibility, and the depths they ask about.

use tally::core::{EntryError, QueueError, QueueStats, Received};

use super::{
    check_batch, entry_error, missing, permanent, tell, Handle, MessageCopy, QueueState, SqsModel, HIDDEN,
    VISIBILITY_MAX_MS,
};

/// What to do with the visible copy a receive picked.
enum Pick {
    Deliver,
    Expire,
    DeadLetter(String),
}

fn pick_fate(q: &QueueState, copy: &MessageCopy, queue: &str, now_ms: u64) -> Pick {
    if copy.sent_ms.saturating_add(q.attrs.retention_ms) <= now_ms {
        return Pick::Expire;
    }
    if let (Some(limit), Some(dead_letter)) = (q.attrs.max_receives, &q.attrs.dead_letter) {
        if copy.receive_count >= limit && dead_letter != queue {
            return Pick::DeadLetter(dead_letter.clone());
        }
    }
    Pick::Deliver
}

fn invalid_handle(handle: &str) -> EntryError {
    entry_error(
        "ReceiptHandleIsInvalid",
        format!("{handle:?} is not a current receipt handle"),
        false,
    )
}

impl SqsModel {
    /// Receive up to `max` (1 to 10) messages, hiding each for
    /// `visibility_ms`. Returns at once, empty when nothing is visible: long
    /// polling is the caller's business.
    pub fn receive(
        &mut self,
        queue: &str,
        max: usize,
        visibility_ms: u64,
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
        let q = self.queues.get_mut(queue).ok_or_else(|| missing(queue))?;
        q.promote(now_ms);
        if q.stats().in_flight >= self.in_flight_max {
            return Err(QueueError::Retryable {
                code: "AWS.SimpleQueueService.OverLimit".into(),
                message: format!("{queue} holds {} messages in flight", self.in_flight_max),
            });
        }
        let mut out = Vec::with_capacity(max);
        let mut duplicates = Vec::new();
        while out.len() < max {
            let q = self.queues.get_mut(queue).expect("checked above");
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
                    let q = self.queues.get_mut(queue).expect("checked above");
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
        copy.first_receive_ms.get_or_insert(now_ms);
        let handle = Handle {
            slot: id,
            serial: copy.serial,
            receive_count: copy.receive_count,
        };
        let received = Received {
            body: copy.body.to_string(),
            handle: handle.to_string(),
            message_id: format!("m{}", copy.message_id),
            receive_count: copy.receive_count,
        };
        q.hide(id, now_ms + visibility_ms);
        tell(&mut self.observer, |o| {
            o.delivered(queue, &received.body, received.receive_count)
        });
        received
    }

    /// Leave a second, visible copy of `id` behind, as a copy on another
    /// server would be. It keeps the receive count from before this receive.
    fn duplicate(&mut self, queue: &str, id: usize, now_ms: u64) {
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
        q.insert(copy);
    }

    /// Move copy `id` to the existing queue `dead_letter`, keeping its send
    /// time and receive count.
    fn dead_letter(&mut self, queue: &str, dead_letter: &str, id: usize, now_ms: u64) {
        let q = self.queues.get_mut(queue).expect("redriving from an existing queue");
        let mut copy = q.remove(id);
        tell(&mut self.observer, |o| o.dead_lettered(queue, dead_letter, &copy.body));
        copy.visible_at_ms = now_ms;
        copy.visible_seq = HIDDEN;
        self.next_serial += 1;
        copy.serial = self.next_serial;
        let target = self.queues.get_mut(dead_letter).expect("checked by the caller");
        target.insert(copy);
    }

    /// What a batch of handles needs first: a batch within SQS's limits, on
    /// a queue that exists, whose due messages are visible again.
    fn open_handle_batch(&mut self, queue: &str, handles: &[String], now_ms: u64) -> Result<(), QueueError> {
        check_batch(handles)?;
        self.queues
            .get_mut(queue)
            .ok_or_else(|| missing(queue))?
            .promote(now_ms);
        Ok(())
    }

    /// Delete up to ten messages by receipt handle. A stale handle (the copy
    /// was received again since, or is gone) succeeds without deleting.
    pub fn delete_batch(
        &mut self,
        queue: &str,
        handles: &[String],
        now_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.open_handle_batch(queue, handles, now_ms)?;
        let mut statuses = Vec::with_capacity(handles.len());
        for text in handles {
            let Some(handle) = Handle::parse(text) else {
                statuses.push(Err(invalid_handle(text)));
                continue;
            };
            if let Some(err) = self.failed_entry() {
                statuses.push(Err(err));
                continue;
            }
            let q = self.queues.get_mut(queue).expect("checked above");
            if let Some(id) = q.current(handle) {
                let copy = q.remove(id);
                tell(&mut self.observer, |o| o.deleted(queue, &copy.body));
            }
            statuses.push(Ok(()));
        }
        Ok(statuses)
    }

    /// Hide up to ten held messages for `visibility_ms` from now (0 makes
    /// them visible). A stale handle or a message no longer in flight fails
    /// that entry, as does passing 12 h since the message's first receive.
    pub fn change_visibility_batch(
        &mut self,
        queue: &str,
        handles: &[String],
        visibility_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.open_handle_batch(queue, handles, now_ms)?;
        let mut statuses = Vec::with_capacity(handles.len());
        for text in handles {
            let status = match self.failed_entry() {
                Some(err) => Err(err),
                None => self.change_visibility(queue, text, visibility_ms, now_ms),
            };
            statuses.push(status);
        }
        Ok(statuses)
    }

    fn change_visibility(
        &mut self,
        queue: &str,
        text: &str,
        visibility_ms: u64,
        now_ms: u64,
    ) -> Result<(), EntryError> {
        let handle = Handle::parse(text).ok_or_else(|| invalid_handle(text))?;
        let q = self.queues.get_mut(queue).expect("checked by the caller");
        let id = q.current(handle).ok_or_else(|| invalid_handle(text))?;
        let copy = q.copy(id);
        if copy.visible_seq != HIDDEN {
            return Err(entry_error(
                "AWS.SimpleQueueService.MessageNotInflight",
                format!("the message of {text:?} is not in flight"),
                false,
            ));
        }
        let first_ms = copy.first_receive_ms.unwrap_or(now_ms);
        if now_ms + visibility_ms > first_ms + VISIBILITY_MAX_MS {
            return Err(entry_error(
                "InvalidParameterValue",
                format!("{text:?} would stay in flight over 12 h after its first receive"),
                false,
            ));
        }
        q.hide(id, now_ms + visibility_ms);
        Ok(())
    }

    /// Approximate depths of `queue`.
    pub fn stats(&mut self, queue: &str, now_ms: u64) -> Result<QueueStats, QueueError> {
        let q = self.queues.get_mut(queue).ok_or_else(|| missing(queue))?;
        q.promote(now_ms);
        Ok(q.stats())
    }
}
