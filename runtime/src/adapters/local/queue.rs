//! Queues with SQS semantics in one SQLite file.
//!
//! What is modelled: named queues created with attributes; at-least-once
//! delivery with visibility timeouts; receive counts; a new receipt handle
//! per receive, older handles going stale (a delete with a stale handle
//! succeeds without deleting, AWS's documented worst case); batches of at
//! most ten entries and 1 MiB; per-entry errors; long polling; redrive to a
//! dead-letter queue after `max_receives`; queue deletion, with
//! `NoSuchQueue` for every call on a deleted queue and
//! `QueueDeletedRecently` for 60 s after (SQS's behaviour, in local words). Several processes may share the
//! file: SQLite's locking serialises them. Times are wall-clock
//! milliseconds, so visibility survives a process restart.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::core::retry::{BATCH_BYTES_MAX, BATCH_MAX};
use crate::core::{Clock, EntryError, Queue, QueueError, QueueStats, Received};

/// How long a deleted queue's name stays unusable, as on SQS.
pub const DELETED_RECENTLY_MS: u64 = 60_000;
/// Longest visibility timeout, as on SQS.
pub const VISIBILITY_MAX_MS: u64 = 12 * 3600 * 1000;
const POLL_MS: u64 = 25;

/// A queue's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Visibility timeout when a receive gives none.
    pub visibility_ms: u64,
    /// Move a message to `dead_letter` instead of delivering it once it has
    /// been received this many times.
    pub max_receives: Option<u32>,
    /// The dead-letter queue's name.
    pub dead_letter: Option<String>,
    /// Most entries per batch call: 10 as on SQS; one machine may allow more.
    pub batch_max: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            visibility_ms: 30_000,
            max_receives: None,
            dead_letter: None,
            batch_max: BATCH_MAX,
        }
    }
}

/// The shared database behind every queue of one data directory.
pub struct SqliteQueues {
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    notify: tokio::sync::Notify,
}

/// The error code of every local adapter's error for a full disk.
pub const DISK_FULL: &str = "DiskFull";

fn sql_err(e: rusqlite::Error) -> QueueError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            QueueError::Retryable {
                code: "DatabaseBusy".into(),
                message: e.to_string(),
            }
        }
        // Retrying cannot make space: say so at once instead of failing on.
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => QueueError::Permanent {
            code: DISK_FULL.into(),
            message: format!("the disk holding the queue database is full ({e})"),
        },
        other => QueueError::Permanent {
            code: "SqliteError".into(),
            message: other.to_string(),
        },
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
PRAGMA busy_timeout=10000;
PRAGMA wal_autocheckpoint=10000;
PRAGMA cache_size=-65536;
CREATE TABLE IF NOT EXISTS queues(
    name TEXT PRIMARY KEY,
    visibility_ms INTEGER NOT NULL,
    max_receives INTEGER,
    dead_letter TEXT,
    created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deleted_queues(name TEXT PRIMARY KEY, deleted_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_ms INTEGER NOT NULL,
    receives INTEGER NOT NULL DEFAULT 0,
    sent_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS messages_ready ON messages(queue, visible_ms);
CREATE TABLE IF NOT EXISTS started(key TEXT PRIMARY KEY);
";

impl SqliteQueues {
    /// Open (creating) the queue database at `path`; `:memory:` for tests.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Arc<Self>, QueueError> {
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.execute_batch(SCHEMA).map_err(sql_err)?;
        Ok(Arc::new(Self {
            conn: Mutex::new(conn),
            clock,
            notify: tokio::sync::Notify::new(),
        }))
    }

    /// A handle on the queue called `name` with attributes `config`. The
    /// queue itself is created by [`Queue::ensure`].
    pub fn queue(self: &Arc<Self>, name: &str, config: QueueConfig) -> SqliteQueue {
        SqliteQueue {
            db: Arc::clone(self),
            name: name.to_owned(),
            config,
        }
    }

    /// Delete a queue and everything in it (an operator's mistake, or a
    /// test's fault). Its name is unusable for 60 s.
    pub fn delete_queue(&self, name: &str) -> Result<(), QueueError> {
        let now = self.clock.wall_ms();
        let mut conn = self.conn.lock().expect("queue lock");
        let tx = conn.transaction().map_err(sql_err)?;
        let removed = tx
            .execute("DELETE FROM queues WHERE name=?1", [name])
            .map_err(sql_err)?;
        if removed == 0 {
            return Err(missing(name));
        }
        tx.execute("DELETE FROM messages WHERE queue=?1", [name])
            .map_err(sql_err)?;
        tx.execute(
            "INSERT INTO deleted_queues(name, deleted_ms) VALUES(?1, ?2)
             ON CONFLICT(name) DO UPDATE SET deleted_ms=excluded.deleted_ms",
            params![name, now as i64],
        )
        .map_err(sql_err)?;
        tx.commit().map_err(sql_err)
    }

    /// Make every in-flight message of `queue` visible now, and take back
    /// the receive that handed it out unless `ran(body)` says the message's
    /// work had started; returns how many. Only for a caller that holds the
    /// data directory exclusively: every holder of those messages is then
    /// known to be dead, and most of them had not even started the job, so
    /// their receive should not count towards giving the job up. A started
    /// one may be what killed the run: its receive counts, or a job that
    /// kills its runner would be retried forever.
    pub fn release_orphans(&self, queue: &str, ran: impl Fn(&str) -> bool) -> Result<u64, QueueError> {
        let now = self.clock.wall_ms() as i64;
        let mut conn = self.conn.lock().expect("queue lock");
        let tx = conn.transaction().map_err(sql_err)?;
        let held: Vec<(i64, String)> = {
            let mut select = tx
                .prepare("SELECT id, body FROM messages WHERE queue=?1 AND visible_ms>?2")
                .map_err(sql_err)?;
            let rows = select
                .query_map(params![queue, now], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err)?;
            rows.collect::<Result<_, _>>().map_err(sql_err)?
        };
        for (id, body) in &held {
            tx.execute(
                "UPDATE messages SET visible_ms=?2, receives=CASE WHEN ?3 THEN receives ELSE MAX(receives-1, 0) END
                 WHERE id=?1",
                params![id, now, ran(body)],
            )
            .map_err(sql_err)?;
        }
        tx.commit().map_err(sql_err)?;
        Ok(held.len() as u64)
    }

    /// The work recorded as started and not ended: what a dead run was
    /// doing when it died. Versions before `tally run`'s journal file
    /// ([`super::journal::RunJournal`]) kept it here; it is still read, so
    /// that a data directory they left resumes right.
    pub fn started(&self) -> Result<std::collections::BTreeSet<String>, QueueError> {
        let conn = self.conn.lock().expect("queue lock");
        let mut stmt = conn.prepare("SELECT key FROM started").map_err(sql_err)?;
        let keys = stmt.query_map([], |r| r.get(0)).map_err(sql_err)?;
        keys.collect::<Result<_, _>>().map_err(sql_err)
    }

    /// Forget what [`Self::started`] holds (once the orphans are released).
    pub fn clear_started(&self) -> Result<(), QueueError> {
        let conn = self.conn.lock().expect("queue lock");
        conn.execute("DELETE FROM started", []).map_err(sql_err)?;
        Ok(())
    }

    /// Names of existing queues.
    pub fn names(&self) -> Result<Vec<String>, QueueError> {
        let conn = self.conn.lock().expect("queue lock");
        let mut stmt = conn.prepare("SELECT name FROM queues ORDER BY name").map_err(sql_err)?;
        let names = stmt.query_map([], |r| r.get(0)).map_err(sql_err)?;
        names.collect::<Result<Vec<String>, _>>().map_err(sql_err)
    }
}

fn missing(name: &str) -> QueueError {
    QueueError::Missing {
        queue: name.to_owned(),
        code: "NoSuchQueue".into(),
    }
}

fn entry_err(code: &str, message: String) -> EntryError {
    EntryError {
        code: code.into(),
        message,
        retryable: false,
    }
}

fn check_batch<T>(entries: &[T], max: usize) -> Result<(), QueueError> {
    if entries.is_empty() || entries.len() > max {
        return Err(QueueError::Permanent {
            code: if entries.is_empty() {
                "EmptyBatchRequest"
            } else {
                "TooManyEntriesInBatchRequest"
            }
            .into(),
            message: format!("a batch holds 1 to {max} entries, not {}", entries.len()),
        });
    }
    Ok(())
}

/// Parse a receipt handle `id:receives`.
fn parse_handle(handle: &str) -> Option<(i64, i64)> {
    let (id, n) = handle.split_once(':')?;
    Some((id.parse().ok()?, n.parse().ok()?))
}

/// One named queue in a [`SqliteQueues`] database.
pub struct SqliteQueue {
    db: Arc<SqliteQueues>,
    name: String,
    config: QueueConfig,
}

/// A queue's stored attributes.
struct Attrs {
    max_receives: Option<u32>,
    dead_letter: Option<String>,
}

impl SqliteQueue {
    fn attrs(&self, conn: &Connection) -> Result<Attrs, QueueError> {
        conn.prepare_cached("SELECT max_receives, dead_letter FROM queues WHERE name=?1")
            .and_then(|mut s| {
                s.query_row([&self.name], |r| {
                    Ok(Attrs {
                        max_receives: r.get::<_, Option<i64>>(0)?.map(|n| n as u32),
                        dead_letter: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(sql_err)?
            .ok_or_else(|| missing(&self.name))
    }

    fn try_receive(&self, max: usize, visibility_ms: u64) -> Result<Vec<Received>, QueueError> {
        let now = self.db.clock.wall_ms() as i64;
        let mut conn = self.db.conn.lock().expect("queue lock");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let attrs = self.attrs(&tx)?;
        let mut out = Vec::with_capacity(max);
        {
            let mut select = tx
                .prepare_cached("SELECT id, body, receives FROM messages WHERE queue=?1 AND visible_ms<=?2 ORDER BY visible_ms LIMIT ?3")
                .map_err(sql_err)?;
            let mut update = tx
                .prepare_cached("UPDATE messages SET visible_ms=?2, receives=?3 WHERE id=?1")
                .map_err(sql_err)?;
            let mut redrive = tx
                .prepare_cached("UPDATE messages SET queue=?2, visible_ms=?3 WHERE id=?1")
                .map_err(sql_err)?;
            let rows: Vec<(i64, String, i64)> = select
                .query_map(params![self.name, now, max as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(sql_err)?
                .collect::<Result<_, _>>()
                .map_err(sql_err)?;
            for (id, body, receives) in rows {
                if let (Some(limit), Some(dlq)) = (attrs.max_receives, &attrs.dead_letter) {
                    if receives >= i64::from(limit) {
                        redrive.execute(params![id, dlq, now]).map_err(sql_err)?;
                        continue;
                    }
                }
                let receives = receives + 1;
                update
                    .execute(params![id, now + visibility_ms as i64, receives])
                    .map_err(sql_err)?;
                out.push(Received {
                    body,
                    handle: format!("{id}:{receives}"),
                    message_id: id.to_string(),
                    receive_count: receives as u32,
                });
            }
        }
        tx.commit().map_err(sql_err)?;
        Ok(out)
    }

    /// Apply `op` to each handle's message if the handle is current.
    /// `op` gets the message id; a stale handle is `Ok(false)`.
    fn per_handle(
        &self,
        handles: &[String],
        sql: &str,
        stale_is_error: bool,
        extra: i64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        check_batch(handles, self.config.batch_max)?;
        let mut conn = self.db.conn.lock().expect("queue lock");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        self.attrs(&tx)?;
        let mut out = Vec::with_capacity(handles.len());
        {
            let mut stmt = tx.prepare_cached(sql).map_err(sql_err)?;
            for handle in handles {
                let Some((id, receives)) = parse_handle(handle) else {
                    out.push(Err(entry_err(
                        "ReceiptHandleIsInvalid",
                        format!("{handle:?} is not a receipt handle"),
                    )));
                    continue;
                };
                let changed = stmt.execute(params![id, receives, self.name, extra]).map_err(sql_err)?;
                if changed == 0 && stale_is_error {
                    out.push(Err(entry_err(
                        "MessageNotInflight",
                        format!("{handle:?} is stale or its message is gone"),
                    )));
                } else {
                    out.push(Ok(()));
                }
            }
        }
        tx.commit().map_err(sql_err)?;
        Ok(out)
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_max(&self) -> usize {
        self.config.batch_max
    }

    async fn ensure(&self) -> Result<(), QueueError> {
        let now = self.db.clock.wall_ms();
        let mut conn = self.db.conn.lock().expect("queue lock");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM queues WHERE name=?1", [&self.name], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        if exists.is_some() {
            return Ok(());
        }
        let deleted: Option<i64> = tx
            .query_row(
                "SELECT deleted_ms FROM deleted_queues WHERE name=?1",
                [&self.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err)?;
        if let Some(deleted_ms) = deleted {
            let ready_ms = deleted_ms as u64 + DELETED_RECENTLY_MS;
            if now < ready_ms {
                return Err(QueueError::DeletedRecently {
                    queue: self.name.clone(),
                    retry_after_ms: ready_ms - now,
                    code: "QueueDeletedRecently".into(),
                });
            }
        }
        tx.execute(
            "INSERT INTO queues(name, visibility_ms, max_receives, dead_letter, created_ms) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![
                self.name,
                self.config.visibility_ms as i64,
                self.config.max_receives.map(i64::from),
                self.config.dead_letter,
                now as i64
            ],
        )
        .map_err(sql_err)?;
        tx.commit().map_err(sql_err)
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        take_turn().await;
        check_batch(bodies, self.config.batch_max)?;
        let total: usize = bodies.iter().map(String::len).sum();
        if total > BATCH_BYTES_MAX {
            return Err(QueueError::Permanent {
                code: "BatchRequestTooLong".into(),
                message: format!("a batch holds at most {BATCH_BYTES_MAX} bytes, not {total}"),
            });
        }
        let now = self.db.clock.wall_ms() as i64;
        {
            let mut conn = self.db.conn.lock().expect("queue lock");
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            self.attrs(&tx)?;
            {
                let mut insert = tx
                    .prepare_cached("INSERT INTO messages(queue, body, visible_ms, sent_ms) VALUES(?1, ?2, ?3, ?3)")
                    .map_err(sql_err)?;
                for body in bodies {
                    insert.execute(params![self.name, body, now]).map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
        }
        self.db.notify.notify_waiters();
        Ok(bodies.iter().map(|_| Ok(())).collect())
    }

    async fn receive(&self, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Received>, QueueError> {
        let max = max.clamp(1, self.config.batch_max);
        let visibility_ms = visibility_ms.min(VISIBILITY_MAX_MS);
        let clock = &self.db.clock;
        let deadline = clock.mono_ms() + wait_ms;
        loop {
            let notified = self.db.notify.notified();
            let got = self.try_receive(max, visibility_ms)?;
            let now = clock.mono_ms();
            if !got.is_empty() || now >= deadline {
                take_turn().await;
                return Ok(got);
            }
            // Woken by a send in this process, or polling for other processes.
            let nap = clock.sleep(POLL_MS.min(deadline - now));
            tokio::select! {
                biased;
                _ = notified => {}
                _ = nap => {}
            }
        }
    }

    async fn delete_batch(&self, handles: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        // A stale handle (the message was received again since) deletes
        // nothing yet succeeds, as SQS documents it may.
        take_turn().await;
        self.per_handle(
            handles,
            "DELETE FROM messages WHERE id=?1 AND receives=?2 AND queue=?3 AND ?4=?4",
            false,
            0,
        )
    }

    async fn change_visibility_batch(
        &self,
        handles: &[String],
        visibility_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        take_turn().await;
        let until = self.db.clock.wall_ms() + visibility_ms.min(VISIBILITY_MAX_MS);
        self.per_handle(
            handles,
            "UPDATE messages SET visible_ms=?4 WHERE id=?1 AND receives=?2 AND queue=?3",
            true,
            until as i64,
        )
    }

    /// One index probe, not a count: the driver asks it every tick of a
    /// sweep whose queue may hold millions of jobs.
    async fn is_drained(&self) -> Result<bool, QueueError> {
        let conn = self.db.conn.lock().expect("queue lock");
        self.attrs(&conn)?;
        conn.prepare_cached("SELECT NOT EXISTS(SELECT 1 FROM messages WHERE queue=?1)")
            .and_then(|mut s| s.query_row([&self.name], |r| r.get::<_, bool>(0)))
            .map_err(sql_err)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let now = self.db.clock.wall_ms() as i64;
        let conn = self.db.conn.lock().expect("queue lock");
        self.attrs(&conn)?;
        let count = |sql: &str| -> Result<u64, QueueError> {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.query_row(params![self.name, now], |r| r.get::<_, i64>(0)))
                .map(|n| n as u64)
                .map_err(sql_err)
        };
        Ok(QueueStats {
            visible: count("SELECT COUNT(*) FROM messages WHERE queue=?1 AND visible_ms<=?2")?,
            in_flight: count("SELECT COUNT(*) FROM messages WHERE queue=?1 AND visible_ms>?2")?,
        })
    }
}

/// Let the runtime run something else. The SQLite work is done inline, so
/// without this a caller looping over calls that all complete at once (a
/// submitter sending millions of jobs) would never give its thread back:
/// not even to the signal handler that is to stop it.
async fn take_turn() {
    tokio::task::yield_now().await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::core::seams::BoxFuture;

    /// Time that moves only when the test says so.
    #[derive(Default)]
    struct ManualClock(AtomicU64);

    impl ManualClock {
        fn advance(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn mono_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn wall_ms(&self) -> u64 {
            1_000_000 + self.0.load(Ordering::SeqCst)
        }
        fn sleep(&self, _ms: u64) -> BoxFuture<'static, ()> {
            Box::pin(std::future::ready(()))
        }
    }

    async fn setup(config: QueueConfig) -> (Arc<ManualClock>, Arc<SqliteQueues>, SqliteQueue) {
        let clock = Arc::new(ManualClock::default());
        let db = SqliteQueues::open(Path::new(":memory:"), clock.clone()).unwrap();
        let q = db.queue("q", config);
        q.ensure().await.unwrap();
        (clock, db, q)
    }

    fn bodies(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    #[tokio::test]
    async fn a_message_comes_back_after_its_visibility_timeout_with_a_new_handle() {
        let (clock, _db, q) = setup(QueueConfig::default()).await;
        q.send_batch(&bodies(1)).await.unwrap();
        let first = q.receive(10, 1_000, 0).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].receive_count, 1);
        assert!(
            q.receive(10, 1_000, 0).await.unwrap().is_empty(),
            "hidden while in flight"
        );
        assert_eq!(
            q.stats().await.unwrap(),
            QueueStats {
                visible: 0,
                in_flight: 1
            }
        );
        clock.advance(1_001);
        let second = q.receive(10, 1_000, 0).await.unwrap();
        assert_eq!(second[0].receive_count, 2);
        assert_ne!(first[0].handle, second[0].handle);
        // The stale handle deletes nothing, yet succeeds (as SQS may).
        assert_eq!(q.delete_batch(&[first[0].handle.clone()]).await.unwrap(), vec![Ok(())]);
        assert_eq!(q.stats().await.unwrap().in_flight, 1);
        let refused = q
            .change_visibility_batch(&[first[0].handle.clone()], 5_000)
            .await
            .unwrap();
        assert!(refused[0].is_err(), "a stale handle cannot extend");
        q.delete_batch(&[second[0].handle.clone()]).await.unwrap();
        assert!(q.stats().await.unwrap().is_drained());
    }

    #[tokio::test]
    async fn heartbeats_keep_a_message_hidden_and_zero_releases_it() {
        let (clock, _db, q) = setup(QueueConfig::default()).await;
        q.send_batch(&bodies(1)).await.unwrap();
        let got = q.receive(1, 1_000, 0).await.unwrap();
        clock.advance(900);
        q.change_visibility_batch(&[got[0].handle.clone()], 1_000)
            .await
            .unwrap()[0]
            .clone()
            .unwrap();
        clock.advance(900);
        assert!(
            q.receive(1, 1_000, 0).await.unwrap().is_empty(),
            "the heartbeat extended it"
        );
        q.change_visibility_batch(&[got[0].handle.clone()], 0).await.unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!(q.receive(1, 1_000, 0).await.unwrap().len(), 1, "released at once");
    }

    #[tokio::test]
    async fn a_message_received_too_often_moves_to_the_dead_letter_queue() {
        let config = QueueConfig {
            max_receives: Some(2),
            dead_letter: Some("dlq".into()),
            ..QueueConfig::default()
        };
        let (clock, db, q) = setup(config).await;
        let dlq = db.queue("dlq", QueueConfig::default());
        dlq.ensure().await.unwrap();
        q.send_batch(&bodies(1)).await.unwrap();
        for _ in 0..2 {
            assert_eq!(q.receive(1, 10, 0).await.unwrap().len(), 1);
            clock.advance(11);
        }
        assert!(q.receive(1, 10, 0).await.unwrap().is_empty(), "moved, not delivered");
        let dead = dlq.receive(10, 10, 0).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, "m0");
    }

    #[tokio::test]
    async fn a_deleted_queue_is_missing_and_cannot_be_recreated_for_sixty_seconds() {
        let (clock, db, q) = setup(QueueConfig::default()).await;
        q.send_batch(&bodies(3)).await.unwrap();
        db.delete_queue("q").unwrap();
        assert!(matches!(
            q.send_batch(&bodies(1)).await,
            Err(QueueError::Missing { .. })
        ));
        assert!(matches!(q.receive(1, 10, 0).await, Err(QueueError::Missing { .. })));
        assert!(matches!(q.stats().await, Err(QueueError::Missing { .. })));
        match q.ensure().await {
            Err(QueueError::DeletedRecently { retry_after_ms, .. }) => assert_eq!(retry_after_ms, DELETED_RECENTLY_MS),
            other => panic!("expected DeletedRecently, got {other:?}"),
        }
        clock.advance(DELETED_RECENTLY_MS);
        q.ensure().await.unwrap();
        assert!(q.stats().await.unwrap().is_drained(), "what was in it is gone");
    }

    #[tokio::test]
    async fn batches_over_the_sqs_limits_are_refused_whole() {
        let (_clock, _db, q) = setup(QueueConfig::default()).await;
        assert!(matches!(
            q.send_batch(&bodies(11)).await,
            Err(QueueError::Permanent { .. })
        ));
        assert!(matches!(q.send_batch(&[]).await, Err(QueueError::Permanent { .. })));
        let big = vec!["x".repeat(600 * 1024), "y".repeat(600 * 1024)];
        assert!(matches!(q.send_batch(&big).await, Err(QueueError::Permanent { .. })));
        assert_eq!(q.receive(50, 10, 0).await.unwrap().len(), 0);
        q.send_batch(&bodies(10)).await.unwrap();
        assert_eq!(q.receive(50, 10, 0).await.unwrap().len(), 10, "at most ten per receive");
        let bad = q.delete_batch(&["nonsense".into()]).await.unwrap();
        assert_eq!(bad[0].as_ref().unwrap_err().code, "ReceiptHandleIsInvalid");
    }

    /// The byte limit is SQS's exactly: 1 MiB in all is sent, a byte more
    /// is refused; and a queue's own batch size is what it reports.
    #[tokio::test]
    async fn a_batch_of_exactly_the_byte_limit_is_sent() {
        let wide = QueueConfig {
            batch_max: 50,
            ..QueueConfig::default()
        };
        let (_clock, _db, q) = setup(wide).await;
        assert_eq!((q.name(), q.batch_max()), ("q", 50));
        let quarter = BATCH_BYTES_MAX / 4;
        let mut exact = vec!["x".repeat(quarter); 4];
        q.send_batch(&exact).await.unwrap();
        exact[0].push('x');
        assert!(matches!(
            q.send_batch(&exact).await,
            Err(QueueError::Permanent { code, .. }) if code == "BatchRequestTooLong"
        ));
        q.send_batch(&bodies(50)).await.unwrap();
        assert_eq!(q.receive(100, 10, 0).await.unwrap().len(), 50);
    }

    #[tokio::test]
    async fn deleting_a_queue_that_is_not_there_says_so() {
        let (_clock, db, _q) = setup(QueueConfig::default()).await;
        assert_eq!(db.names().unwrap(), ["q"]);
        db.delete_queue("q").unwrap();
        assert!(db.names().unwrap().is_empty());
        assert!(matches!(db.delete_queue("q"), Err(QueueError::Missing { .. })));
    }

    /// A busy database is worth retrying; a full disk is said at once.
    #[test]
    fn sqlite_errors_are_retryable_only_when_the_database_is_busy() {
        let error = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        for busy in [rusqlite::ffi::SQLITE_BUSY, rusqlite::ffi::SQLITE_LOCKED] {
            assert!(matches!(sql_err(error(busy)), QueueError::Retryable { .. }));
        }
        assert!(matches!(
            sql_err(error(rusqlite::ffi::SQLITE_FULL)),
            QueueError::Permanent { code, .. } if code == DISK_FULL
        ));
        assert!(matches!(
            sql_err(error(rusqlite::ffi::SQLITE_CORRUPT)),
            QueueError::Permanent { code, .. } if code == "SqliteError"
        ));
    }

    #[tokio::test]
    async fn orphans_of_a_dead_run_come_back_at_once_without_the_lost_receive() {
        let (_clock, db, q) = setup(QueueConfig::default()).await;
        q.send_batch(&bodies(2)).await.unwrap();
        let held = q.receive(10, 60_000, 0).await.unwrap();
        assert_eq!(held.len(), 2);
        assert_eq!(db.release_orphans("q", |_| false).unwrap(), 2);
        let again = q.receive(10, 60_000, 0).await.unwrap();
        assert_eq!(again.len(), 2, "visible at once, not after 60 s");
        let counts: Vec<u32> = again.iter().map(|m| m.receive_count).collect();
        assert_eq!(counts, vec![1, 1], "the dead run's receive does not count");
    }

    #[tokio::test]
    async fn an_orphan_whose_work_had_started_keeps_the_dead_runs_receive() {
        let (_clock, db, q) = setup(QueueConfig::default()).await;
        q.send_batch(&bodies(2)).await.unwrap();
        let held = q.receive(10, 60_000, 0).await.unwrap();
        // As an earlier version recorded the first job's start.
        db.conn
            .lock()
            .unwrap()
            .execute("INSERT INTO started(key) VALUES(?1)", [&held[0].body])
            .unwrap();
        let started = db.started().unwrap();
        assert_eq!(started.len(), 1);
        assert_eq!(db.release_orphans("q", |body| started.contains(body)).unwrap(), 2);
        db.clear_started().unwrap();
        assert!(db.started().unwrap().is_empty());
        let again = q.receive(10, 60_000, 0).await.unwrap();
        let counts: Vec<(String, u32)> = again.iter().map(|m| (m.body.clone(), m.receive_count)).collect();
        assert_eq!(counts, vec![(held[0].body.clone(), 2), (held[1].body.clone(), 1)]);
    }
}
