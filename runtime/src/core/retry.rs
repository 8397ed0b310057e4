//! Resilient queue and store calls: retry what is transient, recreate a
//! missing queue, wait out "deleted recently", and retry only the entries of
//! a batch that failed.

use std::borrow::Cow;

use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::{debug, warn};

use crate::core::{BlobStore, Clock, EntryError, Policy, PutOutcome, Queue, QueueError, Shutdown, StoreError};

pub use crate::core::seams::{BATCH_BYTES_MAX, BATCH_MAX};

/// Batch calls one role keeps in flight at once: with a 20 ms round trip,
/// one call at a time would cap a role at 500 messages a second.
pub const CALLS_IN_FLIGHT: usize = 32;

const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 5_000;
/// How long a queue just (re)created is left alone before it is used:
/// SQS says to "wait at least one second after the queue is created to be
/// able to use the queue" (CreateQueue), and until then answers as if it
/// did not exist. A caller that retried at once would spin.
pub const QUEUE_READY_MS: u64 = 1_000;

/// Why a resilient call gave up.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The queue refused for a reason retrying cannot fix.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The store refused for a reason retrying cannot fix.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some entries of a batch failed permanently.
    #[error("{count} batch entries failed permanently; first: {first}")]
    Entries {
        /// How many entries failed.
        count: usize,
        /// The first failure.
        first: EntryError,
    },
    /// A stop was requested while the call was waiting to retry.
    #[error("stopped while retrying")]
    Stopped,
}

/// Queue calls with tally's recovery rules applied.
pub struct Calls<'a> {
    /// The queue.
    pub queue: &'a dyn Queue,
    /// Time for backoff.
    pub clock: &'a dyn Clock,
    /// Which recovery rules apply.
    pub policy: Policy,
    /// Retrying stops when this says stop.
    pub shutdown: &'a Shutdown,
}

impl Calls<'_> {
    /// Run `op` until it succeeds, recreating the queue when it is missing
    /// and backing off on transient errors.
    pub async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        let mut backoff_ms = BACKOFF_MIN_MS;
        loop {
            let err = match op().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let wait_ms = match &err {
                QueueError::Missing { queue, .. } if self.policy.recreates_missing_queue() => {
                    warn!(queue = %queue, "queue is missing; recreating it");
                    match self.queue.ensure().await {
                        Ok(()) => QUEUE_READY_MS,
                        Err(QueueError::DeletedRecently { retry_after_ms, .. }) => retry_after_ms.max(BACKOFF_MIN_MS),
                        Err(QueueError::Permanent { .. }) => return Err(err.into()),
                        Err(_) => backoff_ms,
                    }
                }
                QueueError::Missing { .. } | QueueError::Permanent { .. } => return Err(err.into()),
                QueueError::DeletedRecently { retry_after_ms, .. } => (*retry_after_ms).max(BACKOFF_MIN_MS),
                QueueError::Retryable { code, .. } => {
                    debug!(queue = self.queue.name(), code = %code, backoff_ms, "transient queue error");
                    backoff_ms
                }
            };
            backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
            self.pause(wait_ms).await?;
        }
    }

    /// Wait `wait_ms` (every wait here is at least [`BACKOFF_MIN_MS`]),
    /// unless a stop was asked for.
    async fn pause(&self, wait_ms: u64) -> Result<(), CallError> {
        if crate::core::is_stopping(self.shutdown) {
            return Err(CallError::Stopped);
        }
        self.clock.sleep(wait_ms).await;
        Ok(())
    }

    /// Send every body, in batches that respect the queue's limits, up to
    /// [`CALLS_IN_FLIGHT`] batches at a time, retrying only the entries
    /// that failed transiently.
    pub async fn send_all(&self, bodies: &[String]) -> Result<(), CallError> {
        // Futures collected first: a lazy map here trips the compiler's
        // higher-ranked Send check when the caller is spawned.
        let calls: Vec<_> = chunks_by_limits(bodies, self.queue.batch_max())
            .into_iter()
            .map(|chunk| self.send_chunk(chunk))
            .collect();
        stream::iter(calls)
            .buffer_unordered(CALLS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn send_chunk(&self, chunk: &[String]) -> Result<(), CallError> {
        // Borrowed until an entry fails: only entries to retry are copied.
        let mut pending: Cow<'_, [String]> = Cow::Borrowed(chunk);
        let mut backoff_ms = BACKOFF_MIN_MS;
        while !pending.is_empty() {
            let statuses = self.call(|| self.queue.send_batch(&pending)).await?;
            pending = Cow::Owned(retry_entries(&pending, statuses)?);
            if !pending.is_empty() {
                self.pause(backoff_ms).await?;
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
            }
        }
        Ok(())
    }

    /// Delete by receipt handle. Returns how many entries the queue refused
    /// (for example a stale handle): those messages will be delivered again,
    /// which makes a duplicate that reconciliation detects.
    pub async fn delete_all(&self, handles: &[String]) -> Result<usize, CallError> {
        self.per_handle(handles, None).await
    }

    /// Change visibility by receipt handle; returns how many entries the
    /// queue refused.
    pub async fn change_visibility_all(&self, handles: &[String], visibility_ms: u64) -> Result<usize, CallError> {
        self.per_handle(handles, Some(visibility_ms)).await
    }

    /// Delete (`visibility_ms` is `None`) or change visibility, per handle,
    /// up to [`CALLS_IN_FLIGHT`] batches at a time.
    async fn per_handle(&self, handles: &[String], visibility_ms: Option<u64>) -> Result<usize, CallError> {
        let calls: Vec<_> = handles
            .chunks(self.queue.batch_max())
            .map(|chunk| self.handle_chunk(chunk, visibility_ms))
            .collect();
        let refused: Vec<usize> = stream::iter(calls)
            .buffer_unordered(CALLS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(refused.into_iter().sum())
    }

    async fn handle_chunk(&self, chunk: &[String], visibility_ms: Option<u64>) -> Result<usize, CallError> {
        let mut refused = 0;
        let mut pending: Cow<'_, [String]> = Cow::Borrowed(chunk);
        let mut backoff_ms = BACKOFF_MIN_MS;
        while !pending.is_empty() {
            let statuses = match visibility_ms {
                None => self.call(|| self.queue.delete_batch(&pending)).await?,
                Some(ms) => self.call(|| self.queue.change_visibility_batch(&pending, ms)).await?,
            };
            let mut retry = Vec::new();
            for (handle, status) in pending.iter().zip(statuses) {
                match status {
                    Ok(()) => {}
                    Err(e) if e.retryable => retry.push(handle.clone()),
                    Err(e) => {
                        debug!(queue = self.queue.name(), error = %e, "entry refused");
                        refused += 1;
                    }
                }
            }
            pending = Cow::Owned(retry);
            if !pending.is_empty() {
                self.pause(backoff_ms).await?;
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
            }
        }
        Ok(refused)
    }
}

fn retry_entries(pending: &[String], statuses: Vec<Result<(), EntryError>>) -> Result<Vec<String>, CallError> {
    let mut retry = Vec::new();
    let mut permanent: Vec<EntryError> = Vec::new();
    for (body, status) in pending.iter().zip(statuses) {
        match status {
            Ok(()) => {}
            Err(e) if e.retryable => retry.push(body.clone()),
            Err(e) => permanent.push(e),
        }
    }
    let count = permanent.len();
    match permanent.into_iter().next() {
        None => Ok(retry),
        Some(first) => Err(CallError::Entries { count, first }),
    }
}

/// Split bodies into batches of at most `entries_max` entries and
/// [`BATCH_BYTES_MAX`] bytes.
pub fn chunks_by_limits(bodies: &[String], entries_max: usize) -> Vec<&[String]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, body) in bodies.iter().enumerate() {
        let full = i - start == entries_max || (i > start && bytes + body.len() > BATCH_BYTES_MAX);
        if full {
            assert_within_limits(i - start, bytes, entries_max);
            out.push(&bodies[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        assert_within_limits(bodies.len() - start, bytes, entries_max);
        out.push(&bodies[start..]);
    }
    out
}

/// A batch the queue would refuse as a whole is a bug here, not the
/// queue's to report; only a single body over the byte limit may travel
/// alone (the queue then refuses that one entry).
fn assert_within_limits(entries: usize, bytes: usize, entries_max: usize) {
    assert!(
        (1..=entries_max).contains(&entries) && (entries == 1 || bytes <= BATCH_BYTES_MAX),
        "a batch of {entries} entries and {bytes} bytes breaks the limits of {entries_max} entries and {BATCH_BYTES_MAX} bytes"
    );
}

/// Store calls with retries on transient errors.
pub async fn put_if_absent_retrying(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    key: &str,
    bytes: &[u8],
) -> Result<PutOutcome, CallError> {
    store_retrying(clock, shutdown, || store.put_if_absent(key, bytes.to_vec())).await
}

/// Run a store call until it succeeds or fails permanently.
pub async fn store_retrying<T, F, Fut>(clock: &dyn Clock, shutdown: &Shutdown, mut op: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff_ms = BACKOFF_MIN_MS;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err @ StoreError::Permanent { .. }) => return Err(err.into()),
            Err(StoreError::Retryable { code, .. }) => {
                debug!(code = %code, backoff_ms, "transient store error");
            }
        }
        if crate::core::is_stopping(shutdown) {
            return Err(CallError::Stopped);
        }
        clock.sleep(backoff_ms).await;
        backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::core::seams::BoxFuture;
    use crate::core::{QueueStats, Received};

    /// Time that moves only by sleeping, and remembers each sleep.
    #[derive(Default)]
    struct SleptClock {
        now_ms: AtomicU64,
        slept: Mutex<Vec<u64>>,
    }

    impl SleptClock {
        fn slept(&self) -> Vec<u64> {
            self.slept.lock().unwrap().clone()
        }
    }

    impl Clock for SleptClock {
        fn mono_ms(&self) -> u64 {
            self.now_ms.load(Ordering::SeqCst)
        }
        fn wall_ms(&self) -> u64 {
            self.mono_ms()
        }
        fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
            self.now_ms.fetch_add(ms, Ordering::SeqCst);
            self.slept.lock().unwrap().push(ms);
            Box::pin(std::future::ready(()))
        }
    }

    /// A queue that was deleted: `ensure` recreates it, and, as on SQS, it
    /// answers as if it did not exist for a second after that. It refuses
    /// for good after ten sends, so a caller that spins fails, not hangs.
    struct Recreated<'a> {
        clock: &'a SleptClock,
        ready_ms: AtomicU64,
        sends: AtomicU64,
    }

    #[async_trait]
    impl Queue for Recreated<'_> {
        fn name(&self) -> &str {
            "q"
        }
        async fn ensure(&self) -> Result<(), QueueError> {
            let ready = self.clock.mono_ms() + QUEUE_READY_MS;
            let _ = self
                .ready_ms
                .compare_exchange(u64::MAX, ready, Ordering::SeqCst, Ordering::SeqCst);
            Ok(())
        }
        async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            if self.sends.fetch_add(1, Ordering::SeqCst) >= 10 {
                return Err(QueueError::Permanent {
                    code: "Spinning".into(),
                    message: "ten sends".into(),
                });
            }
            if self.clock.mono_ms() < self.ready_ms.load(Ordering::SeqCst) {
                return Err(QueueError::Missing {
                    queue: "q".into(),
                    code: "AWS.SimpleQueueService.NonExistentQueue".into(),
                });
            }
            Ok(vec![Ok(()); bodies.len()])
        }
        async fn receive(&self, _: usize, _: u64, _: u64) -> Result<Vec<Received>, QueueError> {
            unreachable!("only sends are made")
        }
        async fn delete_batch(&self, _: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            unreachable!("only sends are made")
        }
        async fn change_visibility_batch(
            &self,
            _: &[String],
            _: u64,
        ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            unreachable!("only sends are made")
        }
        async fn stats(&self) -> Result<QueueStats, QueueError> {
            unreachable!("only sends are made")
        }
    }

    #[tokio::test]
    async fn a_recreated_queue_is_left_a_second_before_it_is_used_again() {
        let clock = SleptClock::default();
        let queue = Recreated {
            clock: &clock,
            ready_ms: AtomicU64::new(u64::MAX),
            sends: AtomicU64::new(0),
        };
        let (_tx, stop) = tokio::sync::watch::channel(false);
        let calls = Calls {
            queue: &queue,
            clock: &clock,
            policy: Policy::Real,
            shutdown: &stop,
        };
        let bodies = vec!["m".to_string()];
        calls
            .call(|| queue.send_batch(&bodies))
            .await
            .expect("sent once the queue is ready");
        assert_eq!(
            queue.sends.load(Ordering::SeqCst),
            2,
            "one refused send, then one after the wait"
        );
        assert!(clock.mono_ms() >= QUEUE_READY_MS);
    }

    #[test]
    fn batches_respect_entry_and_byte_limits() {
        let small: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        let sizes: Vec<usize> = chunks_by_limits(&small, 10).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![10, 10, 5]);

        let big: Vec<String> = (0..5).map(|_| "x".repeat(400 * 1024)).collect();
        let sizes: Vec<usize> = chunks_by_limits(&big, 10).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert!(chunks_by_limits(&[], 10).is_empty());
    }
    /// A queue with scripted answers. The whole call fails with each of
    /// `errors` in turn first, and `ensure` answers with each of `ensures`
    /// (then `Ok`). After that an entry answers by its name: `retryN-...`
    /// fails transiently its first N times, `bad-...` fails for good, any
    /// other succeeds. It records every batch call, and refuses for good
    /// after fifty, so a caller that spins fails rather than hangs.
    #[derive(Default)]
    struct Scripted {
        errors: Mutex<VecDeque<QueueError>>,
        ensures: Mutex<VecDeque<Result<(), QueueError>>>,
        ensured: AtomicU64,
        calls: Mutex<Vec<(String, Vec<String>)>>,
        attempts: Mutex<BTreeMap<String, u32>>,
    }

    impl Scripted {
        fn failing(errors: Vec<QueueError>) -> Self {
            Scripted {
                errors: Mutex::new(errors.into()),
                ..Scripted::default()
            }
        }

        fn answer(&self, kind: String, entries: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push((kind, entries.to_vec()));
            if calls.len() > 50 {
                return Err(QueueError::Permanent {
                    code: "Spinning".into(),
                    message: "fifty calls".into(),
                });
            }
            if let Some(err) = self.errors.lock().unwrap().pop_front() {
                return Err(err);
            }
            let mut attempts = self.attempts.lock().unwrap();
            let statuses = entries.iter().map(|entry| {
                let n = attempts.entry(entry.clone()).or_default();
                *n += 1;
                let fails_for = entry
                    .strip_prefix("retry")
                    .and_then(|r| r.get(..1)?.parse::<u32>().ok());
                let retryable = fails_for.is_some_and(|times| *n <= times);
                if retryable || entry.starts_with("bad") {
                    Err(EntryError {
                        code: "InternalError".into(),
                        message: entry.clone(),
                        retryable,
                    })
                } else {
                    Ok(())
                }
            });
            Ok(statuses.collect())
        }

        fn attempts(&self, entry: &str) -> u32 {
            self.attempts.lock().unwrap().get(entry).copied().unwrap_or(0)
        }

        fn calls(&self) -> Vec<(String, Vec<String>)> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl Queue for Scripted {
        fn name(&self) -> &str {
            "q"
        }
        async fn ensure(&self) -> Result<(), QueueError> {
            self.ensured.fetch_add(1, Ordering::SeqCst);
            self.ensures.lock().unwrap().pop_front().unwrap_or(Ok(()))
        }
        async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            self.answer("send".into(), bodies)
        }
        async fn receive(&self, _: usize, _: u64, _: u64) -> Result<Vec<Received>, QueueError> {
            unreachable!("no receives are made")
        }
        async fn delete_batch(&self, handles: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            self.answer("delete".into(), handles)
        }
        async fn change_visibility_batch(
            &self,
            handles: &[String],
            visibility_ms: u64,
        ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
            self.answer(format!("visibility {visibility_ms}"), handles)
        }
        async fn stats(&self) -> Result<QueueStats, QueueError> {
            unreachable!("no stats are asked for")
        }
    }

    fn transient() -> QueueError {
        QueueError::Retryable {
            code: "ServiceUnavailable".into(),
            message: "try again".into(),
        }
    }

    fn missing() -> QueueError {
        QueueError::Missing {
            queue: "q".into(),
            code: "AWS.SimpleQueueService.NonExistentQueue".into(),
        }
    }

    fn deleted_recently(retry_after_ms: u64) -> QueueError {
        QueueError::DeletedRecently {
            queue: "q".into(),
            retry_after_ms,
            code: "AWS.SimpleQueueService.QueueDeletedRecently".into(),
        }
    }

    fn names(prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}-{i}")).collect()
    }

    /// A shutdown that has said stop.
    fn stop_asked() -> Shutdown {
        tokio::sync::watch::channel(true).1
    }

    fn calls_on<'a>(queue: &'a Scripted, clock: &'a SleptClock, policy: Policy, shutdown: &'a Shutdown) -> Calls<'a> {
        Calls {
            queue,
            clock,
            policy,
            shutdown,
        }
    }

    /// Call `send_batch` of one body through `Calls` with `policy`.
    async fn send_one(queue: &Scripted, clock: &SleptClock, policy: Policy, stop: bool) -> Result<(), CallError> {
        let shutdown = if stop { stop_asked() } else { crate::core::never() };
        let calls = calls_on(queue, clock, policy, &shutdown);
        let body = vec!["m".to_string()];
        let statuses = calls.call(|| queue.send_batch(&body)).await?;
        assert_eq!(statuses, vec![Ok(())]);
        Ok(())
    }

    #[tokio::test]
    async fn transient_queue_errors_back_off_doubling_from_50_ms_to_5_s() {
        let (queue, clock) = (Scripted::failing(vec![transient(); 9]), SleptClock::default());
        send_one(&queue, &clock, Policy::Real, false).await.unwrap();
        assert_eq!(clock.slept(), vec![50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(queue.calls().len(), 10);
    }

    #[tokio::test]
    async fn a_missing_queue_is_recreated_and_a_recently_deleted_one_waited_out() {
        let queue = Scripted::failing(vec![deleted_recently(7_000), missing(), missing(), missing()]);
        *queue.ensures.lock().unwrap() = VecDeque::from([Err(deleted_recently(20)), Err(transient())]);
        let clock = SleptClock::default();
        send_one(&queue, &clock, Policy::Real, false).await.unwrap();
        // The queue's own wait; its wait raised to the least backoff; the
        // backoff after a transient failure to recreate; a second for the
        // recreated queue to be ready.
        assert_eq!(clock.slept(), vec![7_000, 50, 200, QUEUE_READY_MS]);
        assert_eq!(queue.ensured.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_missing_queue_not_to_be_recreated_or_a_permanent_error_ends_the_call() {
        let clock = SleptClock::default();
        let queue = Scripted::failing(vec![missing()]);
        let err = send_one(&queue, &clock, Policy::NoRecreate, false).await.unwrap_err();
        assert!(matches!(err, CallError::Queue(QueueError::Missing { .. })), "{err}");
        assert_eq!(queue.ensured.load(Ordering::SeqCst), 0);

        let queue = Scripted::failing(vec![missing()]);
        *queue.ensures.lock().unwrap() = VecDeque::from([Err(QueueError::Permanent {
            code: "AccessDenied".into(),
            message: "no".into(),
        })]);
        let err = send_one(&queue, &clock, Policy::Real, false).await.unwrap_err();
        assert!(matches!(err, CallError::Queue(QueueError::Missing { .. })), "{err}");
        assert_eq!(queue.ensured.load(Ordering::SeqCst), 1);

        let queue = Scripted::failing(vec![QueueError::Permanent {
            code: "AccessDenied".into(),
            message: "no".into(),
        }]);
        let err = send_one(&queue, &clock, Policy::Real, false).await.unwrap_err();
        assert!(matches!(err, CallError::Queue(QueueError::Permanent { .. })), "{err}");
        assert_eq!(queue.calls().len(), 1);
        assert!(clock.slept().is_empty());
    }

    #[tokio::test]
    async fn a_stop_ends_retrying_at_once() {
        let (queue, clock) = (Scripted::failing(vec![transient()]), SleptClock::default());
        let err = send_one(&queue, &clock, Policy::Real, true).await.unwrap_err();
        assert!(matches!(err, CallError::Stopped), "{err}");
        let shutdown = stop_asked();
        let outcome: Result<(), _> = store_retrying(&clock, &shutdown, || async {
            Err(StoreError::Retryable {
                code: "SlowDown".into(),
                message: "try again".into(),
            })
        })
        .await;
        assert!(matches!(outcome, Err(CallError::Stopped)), "{outcome:?}");
        assert!(clock.slept().is_empty());
    }

    #[tokio::test]
    async fn sends_resend_only_the_entries_that_failed_transiently() {
        let (queue, clock, shutdown) = (Scripted::default(), SleptClock::default(), crate::core::never());
        let calls = calls_on(&queue, &clock, Policy::Real, &shutdown);
        let mut bodies = names("ok", 12);
        bodies.insert(11, "retry2-a".into());
        calls.send_all(&bodies).await.unwrap();
        let sent = queue.calls();
        assert_eq!(
            sent.len(),
            4,
            "a batch of ten, one of three, then twice the one that failed: {sent:?}"
        );
        assert!(sent
            .iter()
            .all(|(kind, entries)| kind == "send" && entries.len() <= BATCH_MAX));
        let alone = sent.iter().filter(|(_, entries)| *entries == ["retry2-a"]).count();
        assert_eq!(alone, 2, "{sent:?}");
        assert_eq!((queue.attempts("retry2-a"), queue.attempts("ok-0")), (3, 1));
        // Only the batch that held the failing entry waited, doubling.
        assert_eq!(clock.slept(), vec![50, 100]);

        let mut bodies = names("ok", 3);
        bodies.extend(["bad-1", "retry1-x", "bad-2"].map(String::from));
        let err = calls.send_all(&bodies).await.unwrap_err();
        let CallError::Entries { count, first } = err else {
            panic!("{err}")
        };
        assert_eq!((count, first.message.as_str()), (2, "bad-1"));
    }

    #[tokio::test]
    async fn deletes_and_visibility_changes_count_refused_handles_and_retry_transient_ones() {
        // Two batches: ten with one refused, then four with two refused.
        let mut handles = names("ok", 11);
        handles[3] = "bad-0".into();
        handles.extend(["retry2-a", "bad-1", "bad-2"].map(String::from));
        for visibility_ms in [None, Some(30_000)] {
            let (queue, clock, shutdown) = (Scripted::default(), SleptClock::default(), crate::core::never());
            let calls = calls_on(&queue, &clock, Policy::Real, &shutdown);
            let refused = match visibility_ms {
                None => calls.delete_all(&handles).await.unwrap(),
                Some(ms) => calls.change_visibility_all(&handles, ms).await.unwrap(),
            };
            assert_eq!(refused, 3);
            let kind = visibility_ms.map_or("delete".to_string(), |ms| format!("visibility {ms}"));
            let made = queue.calls();
            assert_eq!(made.len(), 4, "{made:?}");
            assert!(made.iter().all(|(k, entries)| *k == kind && entries.len() <= BATCH_MAX));
            assert_eq!((queue.attempts("retry2-a"), queue.attempts("bad-1")), (3, 1));
            assert_eq!(clock.slept(), vec![50, 100]);
        }
    }

    #[tokio::test]
    async fn store_calls_retry_transient_errors_doubling_and_give_up_on_permanent_ones() {
        let (clock, shutdown, tries) = (SleptClock::default(), crate::core::never(), AtomicU64::new(0));
        let outcome = store_retrying(&clock, &shutdown, || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0..3 => Err(StoreError::Retryable {
                        code: "SlowDown".into(),
                        message: "try again".into(),
                    }),
                    _ => Ok(PutOutcome::AlreadyExists),
                }
            }
        })
        .await;
        assert_eq!(outcome.unwrap(), PutOutcome::AlreadyExists);
        assert_eq!(clock.slept(), vec![50, 100, 200]);

        let outcome: Result<(), _> = store_retrying(&clock, &shutdown, || async {
            Err(StoreError::Permanent {
                code: "AccessDenied".into(),
                message: "no".into(),
            })
        })
        .await;
        assert!(matches!(outcome, Err(CallError::Store(StoreError::Permanent { .. }))));
        assert_eq!(clock.slept().len(), 3);
    }

    #[test]
    fn a_body_over_the_byte_limit_travels_alone_and_a_batch_may_fill_the_limit_exactly() {
        let sizes =
            |bodies: &[String]| -> Vec<usize> { chunks_by_limits(bodies, 10).iter().map(|c| c.len()).collect() };
        let (s, over) = ("s".to_string(), "o".repeat(BATCH_BYTES_MAX + 1));
        let (half, more) = ("h".repeat(BATCH_BYTES_MAX / 2), "m".repeat(BATCH_BYTES_MAX / 2 + 1));
        assert_eq!(sizes(&[over.clone(), s.clone(), s.clone()]), vec![1, 2]);
        assert_eq!(sizes(&[s.clone(), over, s.clone()]), vec![1, 1, 1]);
        assert_eq!(sizes(&[half.clone(), half.clone(), half.clone()]), vec![2, 1]);
        assert_eq!(sizes(&[half, more]), vec![1, 1]);
        assert_eq!(sizes(&vec![s.clone(); 10]), vec![10]);
        assert_eq!(sizes(&vec![s; 11]), vec![10, 1]);
    }

    #[test]
    #[should_panic(expected = "breaks the limits")]
    fn a_batch_over_the_limits_is_a_bug_that_panics() {
        assert_within_limits(11, 11, 10);
    }
}
