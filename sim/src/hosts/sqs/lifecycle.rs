//! A queue's life: its creation (and the second before it is usable), its
//! deletion (at once, or at the end of a window in which it still works),
//! its purges, and the deadlines that apply them at whatever call comes
//! first at or after their time.

use tally::core::QueueError;

use super::{
    missing, permanent, retryable, tell, QueueAttrs, QueueState, SqsModel, DELETED_RECENTLY_MS, QUEUE_DELETED_RECENTLY,
};

/// How long after a purge the queue refuses another, as on SQS.
pub const PURGE_INTERVAL_MS: u64 = 60_000;
/// The provider code for a purge within a minute of the last one.
pub const PURGE_QUEUE_IN_PROGRESS: &str = "AWS.SimpleQueueService.PurgeQueueInProgress";

/// What a deadline does when its time comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Deadline {
    /// The end of a deletion window: the queue and its copies vanish.
    Vanish,
    /// The end of a purge: the queue's copies are destroyed.
    Purge,
}

impl SqsModel {
    /// Apply every deletion and purge due by `now_ms`. Every call does this
    /// first; call it directly before reading the model through
    /// [`Self::exists`], [`Self::bodies`] or [`Self::queue_names`] at a
    /// time when no call was made.
    pub fn advance(&mut self, now_ms: u64) {
        while let Some(first) = self.deadlines.first() {
            if first.0 > now_ms {
                break;
            }
            let (_, deadline, queue, generation) = self.deadlines.pop_first().expect("checked above");
            if self.queues.get(&queue).is_none_or(|q| q.generation != generation) {
                continue;
            }
            match deadline {
                Deadline::Vanish => self.vanish(&queue),
                Deadline::Purge => self.destroy_all(&queue),
            }
        }
    }

    /// [`Self::open`], then bring the queue's visibility up to `now_ms`,
    /// for calls that look at which copies are visible.
    pub(super) fn open_settled(&mut self, queue: &str, now_ms: u64) -> Result<(), QueueError> {
        self.open(queue, now_ms)?;
        if self.queues.get_mut(queue).expect("opened above").settle(now_ms) > 0 {
            self.note("latent-duplicate-shown");
        }
        Ok(())
    }

    /// Check that `queue` is there for a call other than ensure at
    /// `now_ms`, or say why the call finds no queue. It does not make due
    /// copies visible: a send must not (that would renumber the visible
    /// copies, and so the order of delivery, against a receive's view).
    pub(super) fn open(&mut self, queue: &str, now_ms: u64) -> Result<(), QueueError> {
        self.advance(now_ms);
        let q = self.queues.get_mut(queue).ok_or_else(|| missing(queue))?;
        // CreateQueue API Reference: "After you create a queue, you must
        // wait at least one second after the queue is created to be able to
        // use the queue." (with SqsWorstCase::create_ready_ms)
        if now_ms < q.ready_ms {
            self.note("used-before-ready");
            return Err(missing(queue));
        }
        Ok(())
    }

    /// GetQueueUrl (and GetQueueAttributes asking only for the ARN):
    /// whether `queue` can be used, with the same answers as any other
    /// call on it.
    pub fn lookup(&mut self, queue: &str, now_ms: u64) -> Result<(), QueueError> {
        self.throttled()?;
        self.open(queue, now_ms)
    }

    /// Create `queue` with `attrs` unless it exists with the same attributes.
    pub fn ensure(&mut self, queue: &str, attrs: &QueueAttrs, now_ms: u64) -> Result<(), QueueError> {
        self.throttled()?;
        self.advance(now_ms);
        if let Some(existing) = self.queues.get(queue) {
            if existing.vanish_ms.is_some() {
                return Err(self.deleted_recently(queue, now_ms));
            }
            if existing.attrs == *attrs {
                return Ok(());
            }
            return Err(permanent(
                "QueueAlreadyExists",
                format!("queue {queue} exists with other attributes: {:?}", existing.attrs),
            ));
        }
        if self
            .deleted_ms
            .get(queue)
            .is_some_and(|&deleted_ms| now_ms < deleted_ms + DELETED_RECENTLY_MS)
        {
            return Err(self.deleted_recently(queue, now_ms));
        }
        let retention_ms = self.retention_override_ms.unwrap_or(attrs.retention_ms);
        let mut state = QueueState::new(attrs.clone(), retention_ms, self.retention_override_ms.is_some());
        state.ready_ms = now_ms + self.worst.create_ready_ms;
        state.generation = self.next_generation;
        self.next_generation += 1;
        self.queues.insert(queue.into(), state);
        Ok(())
    }

    /// DeleteQueue API Reference: "When you delete a queue, you must wait
    /// at least 60 seconds before creating a queue with the same name." A
    /// queue still in its deletion window cannot be recreated either.
    fn deleted_recently(&mut self, queue: &str, now_ms: u64) -> QueueError {
        self.note("recreate-while-deleted-recently");
        let named_ms = self.deleted_ms.get(queue).map_or(0, |&at| at + DELETED_RECENTLY_MS);
        let vanish_ms = self.queues.get(queue).and_then(|q| q.vanish_ms).unwrap_or(0);
        QueueError::DeletedRecently {
            queue: queue.into(),
            retry_after_ms: named_ms.max(vanish_ms).saturating_sub(now_ms).max(1),
            code: QUEUE_DELETED_RECENTLY.into(),
        }
    }

    /// Delete `queue` and every message in it; its name is unusable for 60 s.
    ///
    /// With [`super::SqsWorstCase::deletion_window_max_ms`] the queue keeps
    /// working for a drawn window and vanishes at its end. DeleteQueue API
    /// Reference: "When you delete a queue, the deletion process takes up
    /// to 60 seconds. Requests you send involving that queue during the 60
    /// seconds might succeed. For example, a SendMessage request might
    /// succeed, but after 60 seconds the queue and the message you sent no
    /// longer exist." A second deletion within the window is Ok.
    pub fn delete_queue(&mut self, queue: &str, now_ms: u64) -> Result<(), QueueError> {
        self.throttled()?;
        self.open(queue, now_ms)?;
        let max_ms = self.worst.deletion_window_max_ms;
        let q = self.queues.get_mut(queue).expect("opened above");
        if q.vanish_ms.is_some() {
            return Ok(());
        }
        self.deleted_ms.insert(queue.into(), now_ms);
        self.note("queue-deleted");
        if max_ms == 0 {
            self.vanish(queue);
            return Ok(());
        }
        let vanish_ms = now_ms + rand::Rng::random_range(&mut self.worst_rng, 0..=max_ms);
        let q = self.queues.get_mut(queue).expect("opened above");
        q.vanish_ms = Some(vanish_ms);
        let generation = q.generation;
        self.deadlines
            .insert((vanish_ms, super::Deadline::Vanish, queue.into(), generation));
        self.advance(now_ms);
        Ok(())
    }

    /// Remove `queue`, reporting every copy in it, latent ones too, as
    /// destroyed.
    fn vanish(&mut self, queue: &str) {
        self.destroy_all(queue);
        self.queues.remove(queue);
    }

    fn destroy_all(&mut self, queue: &str) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        for copy in q.take_all() {
            tell(&mut self.observer, |o| o.destroyed(queue, &copy.body));
        }
    }

    /// Delete every message in `queue`, in flight and latent ones too
    /// (each reported destroyed). PurgeQueue API Reference: "The message
    /// deletion process takes up to 60 seconds. [...] Messages sent to the
    /// queue before you call PurgeQueue might be received but are deleted
    /// within the next minute. Messages sent to the queue after you call
    /// PurgeQueue might be deleted while the queue is being purged." With
    /// [`super::SqsWorstCase::purge_window_max_ms`] the deletion happens at
    /// the end of a drawn window, taking what was sent meanwhile too.
    /// A second purge within 60 s fails with `PurgeQueueInProgress` ("the
    /// specified queue previously received a PurgeQueue request within the
    /// last 60 seconds").
    pub fn purge(&mut self, queue: &str, now_ms: u64) -> Result<(), QueueError> {
        self.throttled()?;
        self.open(queue, now_ms)?;
        let max_ms = self.worst.purge_window_max_ms;
        let q = self.queues.get_mut(queue).expect("opened above");
        if let Some(purged_ms) = q.purged_ms.filter(|&at| now_ms < at + PURGE_INTERVAL_MS) {
            self.note("purge-refused");
            return Err(retryable(
                PURGE_QUEUE_IN_PROGRESS,
                format!("{queue} was purged at {purged_ms} ms, less than 60 s ago"),
            ));
        }
        q.purged_ms = Some(now_ms);
        self.note("purged");
        if max_ms == 0 {
            self.destroy_all(queue);
            return Ok(());
        }
        let end_ms = now_ms + rand::Rng::random_range(&mut self.worst_rng, 0..=max_ms);
        let generation = self.queues[queue].generation;
        self.deadlines
            .insert((end_ms, super::Deadline::Purge, queue.into(), generation));
        self.advance(now_ms);
        Ok(())
    }
}
