//! What receivers do with what they hold: delete and change visibility by
//! receipt handle (current, stale or expired), and the depths they ask
//! about.

use rand::Rng;
use tally::core::{EntryError, QueueError, QueueStats};

use super::{check_batch, entry_error, tell, Handle, SqsModel, HIDDEN, VISIBILITY_MAX_MS};

fn invalid_handle(handle: &str) -> EntryError {
    entry_error(
        "ReceiptHandleIsInvalid",
        format!("{handle:?} is not a current receipt handle"),
        false,
    )
}

/// AWS Knowledge Center, "sqs-receipt-handle-error": an expired handle
/// fails with "(InvalidParameterValue) [...] Value '...' for parameter
/// ReceiptHandle is invalid. Reason: The receipt handle has expired." A
/// handle cannot outlive the 12 h a message may stay in flight after it.
fn expired_handle(handle: &str) -> EntryError {
    entry_error(
        "InvalidParameterValue",
        format!("Value {handle:?} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."),
        false,
    )
}

fn handle_expired(handle: Handle, now_ms: u64) -> bool {
    now_ms >= handle.received_ms.saturating_add(VISIBILITY_MAX_MS)
}

impl SqsModel {
    /// What a batch of handles needs first: a batch within SQS's limits, on
    /// a queue that exists, whose due messages are visible again.
    fn open_handle_batch(&mut self, queue: &str, handles: &[String], now_ms: u64) -> Result<(), QueueError> {
        self.throttled()?;
        check_batch(handles)?;
        self.open_settled(queue, now_ms)
    }

    /// Delete up to ten messages by receipt handle. A stale handle (the copy
    /// was received again since, or is gone) succeeds without deleting,
    /// unless the worst-case knobs say otherwise (see [`Self::delete_one`]).
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
            statuses.push(self.delete_one(queue, handle, text, now_ms));
        }
        Ok(statuses)
    }

    /// Delete by one handle. DeleteMessage API Reference: "When you want to
    /// delete a message using the DeleteMessage action, you must use the
    /// ReceiptHandle from the most recent time you received the message. If
    /// you use an old ReceiptHandle, the request will succeed, but the
    /// message might not be deleted." And (Knowledge Center,
    /// "sqs-receipt-handle-error") "The receipt handle expires after a
    /// visibility timeout period [...] with standard SQS queues, older
    /// receipt handles might work": so a handle whose visibility lapsed
    /// fails at [`super::SqsWorstCase::stale_handle_fail_rate`], and one
    /// from an earlier receive deletes at
    /// [`super::SqsWorstCase::stale_delete_deletes_rate`].
    fn delete_one(&mut self, queue: &str, handle: Handle, text: &str, now_ms: u64) -> Result<(), EntryError> {
        if handle_expired(handle, now_ms) {
            return Err(expired_handle(text));
        }
        let q = self.queues.get_mut(queue).expect("opened by the caller");
        let Some(id) = q.same_copy(handle) else {
            return Ok(());
        };
        let copy = q.copy(id);
        // DeleteMessage API Reference: "Amazon SQS automatically deletes
        // messages left in a queue longer than the retention period
        // configured for the queue", in flight or not: a delete finds it
        // gone, and must not count as the consumer's.
        if q.expired(copy, now_ms) {
            let copy = q.remove(id);
            tell(&mut self.observer, |o| o.destroyed(queue, &copy.body));
            return Ok(());
        }
        let current = copy.receive_count == handle.receive_count;
        let lapsed = !current || copy.visible_seq != HIDDEN;
        if lapsed {
            self.note("stale-handle-used");
            let (fail_rate, delete_rate) = (self.worst.stale_handle_fail_rate, self.worst.stale_delete_deletes_rate);
            if self.worst_chance(fail_rate) {
                self.note("stale-handle-failed");
                return Err(invalid_handle(text));
            }
            if !current && !self.worst_chance(delete_rate) {
                return Ok(());
            }
            if !current {
                self.note("stale-handle-deleted");
            }
        }
        let q = self.queues.get_mut(queue).expect("opened by the caller");
        let copy = q.remove(id);
        tell(&mut self.observer, |o| o.deleted(queue, &copy.body));
        Ok(())
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
        if handle_expired(handle, now_ms) {
            return Err(expired_handle(text));
        }
        let q = self.queues.get_mut(queue).expect("checked by the caller");
        let id = q.current(handle).ok_or_else(|| invalid_handle(text))?;
        let copy = q.copy(id);
        // An expired message is gone whatever its visibility: a change must
        // not bring it back.
        if q.expired(copy, now_ms) {
            let copy = q.remove(id);
            tell(&mut self.observer, |o| o.destroyed(queue, &copy.body));
            return Err(invalid_handle(text));
        }
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

    /// Approximate depths of `queue`, never counting latent duplicates.
    ///
    /// GetQueueAttributes API Reference: "The ApproximateNumberOfMessagesDelayed,
    /// ApproximateNumberOfMessagesNotVisible, and ApproximateNumberOfMessages
    /// metrics may not achieve consistency until at least 1 minute after the
    /// producers stop sending messages." So with
    /// [`super::SqsWorstCase::count_lag_ms`] the answer comes from counts
    /// taken at most that long ago, and with
    /// [`super::SqsWorstCase::undercount_rate`] a count may be lower still.
    /// Queues made under [`Self::set_retention_ms`] drop expired copies
    /// whenever their counts are taken.
    pub fn stats(&mut self, queue: &str, now_ms: u64) -> Result<QueueStats, QueueError> {
        self.throttled()?;
        self.open_settled(queue, now_ms)?;
        let lag_ms = self.worst.count_lag_ms;
        let q = self.queues.get_mut(queue).expect("opened above");
        let stats = match q.counted {
            Some((taken_ms, stats)) if lag_ms > 0 && now_ms < taken_ms + lag_ms => stats,
            _ => {
                for copy in q.sweep_expired(now_ms) {
                    tell(&mut self.observer, |o| o.destroyed(queue, &copy.body));
                }
                let stats = q.stats();
                q.counted = Some((now_ms, stats));
                stats
            }
        };
        Ok(QueueStats {
            visible: self.undercount(stats.visible),
            in_flight: self.undercount(stats.in_flight),
        })
    }

    /// `count`, or at [`super::SqsWorstCase::undercount_rate`] a uniform
    /// draw below it.
    fn undercount(&mut self, count: u64) -> u64 {
        let rate = self.worst.undercount_rate;
        if count > 0 && self.worst_chance(rate) {
            self.note("undercount");
            return self.worst_rng.random_range(0..count);
        }
        count
    }
}
