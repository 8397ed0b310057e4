//! The embedded backend of one data directory: its queues, store, ledger
//! and results database, and the lock that keeps two runs apart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::adapters::local::{
    DirStore, QueueConfig, RunJournal, SqliteQueue, SqliteQueues, SqliteSendLog, SystemClock,
};
use crate::cli::UserError;
use crate::core::{BlobStore, Clock, Queue};

/// File of the work queue and its dead-letter queue.
pub const JOBS_FILE: &str = "queue-jobs.sqlite";
/// File of the results queue.
pub const RESULTS_FILE: &str = "queue-results.sqlite";
/// The journal of the jobs `tally run` is running.
pub const JOURNAL_FILE: &str = "running-jobs.journal";
/// Name of the work queue.
pub const JOBS: &str = "tally-jobs";
/// Name of the results queue.
pub const RESULTS: &str = "tally-results";
/// Name of the work queue's dead-letter queue.
pub const JOBS_DEAD: &str = "tally-jobs-dead";
/// Receives of a job before the queue itself dead-letters it. Workers
/// record a job as given up after the sweep's `max_attempts` receives, well
/// before this safety net.
pub const REDRIVE_RECEIVES: u32 = 100;

/// Entries per batch call on the embedded queues. SQS takes 10; one
/// SQLite file pays per transaction, not per message, so larger batches
/// cut its cost per job several times over (docs/BENCHMARKS.md).
pub const LOCAL_BATCH_MAX: usize = 100;

/// How a process holds a data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// `tally run`: alone, so whatever is in flight at start is orphaned.
    Exclusive,
    /// A role process (`worker`, `aggregate`, ...): others may share.
    Shared,
    /// A reader (`status`, `report`, `export`): no lock.
    None,
}

/// Everything in one data directory.
pub struct Local {
    /// The directory.
    pub dir: PathBuf,
    /// Real time.
    pub clock: Arc<dyn Clock>,
    /// The work queue's database (with its dead-letter queue).
    pub jobs_db: Arc<SqliteQueues>,
    /// The results queue's database. A file per queue lets workers and
    /// the aggregator write at the same time.
    pub results_db_queue: Arc<SqliteQueues>,
    /// The work queue.
    pub jobs: Arc<SqliteQueue>,
    /// The results queue.
    pub results: Arc<SqliteQueue>,
    /// The work queue's dead-letter queue.
    pub jobs_dead: Arc<SqliteQueue>,
    /// The blob store.
    pub store: Arc<dyn BlobStore>,
    /// The submitter's progress.
    pub log: Arc<SqliteSendLog>,
    _lock: Option<std::fs::File>,
}

impl Local {
    /// Open `dir`, creating it when `create`; otherwise it must exist.
    /// With `exclusive`, hold the directory's lock (one run at a time).
    pub async fn open(dir: &Path, create: bool, lock_mode: LockMode, visibility_ms: u64) -> anyhow::Result<Self> {
        if !create && !dir.join(JOBS_FILE).exists() {
            return Err(UserError::bad_input(no_work_queue(dir)));
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let lock = lock(dir, lock_mode)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let open = |file: &str| {
            let path = dir.join(file);
            SqliteQueues::open(&path, Arc::clone(&clock)).with_context(|| {
                format!(
                    "cannot open the queue database {} (if it was deleted, delete its -wal and -shm files too and rerun)",
                    path.display()
                )
            })
        };
        let jobs_db = open(JOBS_FILE)?;
        let results_db_queue = open(RESULTS_FILE)?;
        let jobs = Arc::new(jobs_db.queue(
            JOBS,
            QueueConfig {
                visibility_ms,
                max_receives: Some(REDRIVE_RECEIVES),
                dead_letter: Some(JOBS_DEAD.into()),
                batch_max: LOCAL_BATCH_MAX,
            },
        ));
        let results = Arc::new(results_db_queue.queue(
            RESULTS,
            QueueConfig {
                visibility_ms,
                batch_max: LOCAL_BATCH_MAX,
                ..QueueConfig::default()
            },
        ));
        let jobs_dead = Arc::new(jobs_db.queue(JOBS_DEAD, QueueConfig::default()));
        if create {
            for q in [&jobs_dead, &jobs, &results] {
                q.ensure()
                    .await
                    .with_context(|| format!("cannot create queue {}", q.name()))?;
            }
        }
        let store: Arc<dyn BlobStore> =
            Arc::new(DirStore::open(dir.join("store")).context("cannot open the blob store")?);
        let log = SqliteSendLog::open_renaming(&dir.join("send-log.sqlite"), &dir.join("ledger.sqlite"))
            .context("cannot open the submitter's send log")?;
        let log = Arc::new(log);
        Ok(Self {
            dir: dir.to_owned(),
            clock,
            jobs_db,
            results_db_queue,
            jobs,
            results,
            jobs_dead,
            store,
            log,
            _lock: lock,
        })
    }

    /// Where the final results database lives.
    pub fn results_db(&self) -> PathBuf {
        self.dir.join("results.sqlite")
    }
}

fn lock(dir: &Path, mode: LockMode) -> anyhow::Result<Option<std::fs::File>> {
    if mode == LockMode::None {
        return Ok(None);
    }
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let taken = match mode {
        LockMode::Exclusive => file.try_lock(),
        _ => file.try_lock_shared(),
    };
    match taken {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(UserError::bad_input(format!(
            "{} is in use by another tally process ({}); wait for it or use another --data directory",
            dir.display(),
            if mode == LockMode::Exclusive {
                "a run, a worker or an aggregator"
            } else {
                "a `tally run`"
            }
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Why a data directory without a work queue cannot be read: it never held
/// tally data, or its work queue file was deleted.
fn no_work_queue(dir: &Path) -> String {
    let others = [RESULTS_FILE, "ledger.sqlite", "store"];
    if !others.iter().any(|f| dir.join(f).exists()) {
        return format!(
            "{} holds no tally data; run `tally run SWEEP.toml --data {}` first",
            dir.display(),
            dir.display()
        );
    }
    format!(
        "{} holds tally data but its work queue {} is missing (deleted?); rerun `tally run SWEEP.toml --data {}` to recreate it and resubmit the jobs lost with it",
        dir.display(),
        dir.join(JOBS_FILE).display(),
        dir.display()
    )
}

/// A job's key in the started journal.
fn started_key(sweep: &str, index: u64) -> String {
    format!("{sweep}/{index}")
}

/// Whether a work-queue message's job was recorded as started.
pub fn job_started(started: &std::collections::BTreeSet<String>, body: &str) -> bool {
    crate::core::JobMessage::decode(body).is_ok_and(|m| started.contains(&started_key(&m.sweep, m.index)))
}

/// An experiment whose runs are journalled while they run, so that a job
/// that kills `tally run` has its receive counted by the next run
/// ([`SqliteQueues::release_orphans`]) and is eventually given up instead
/// of killing every rerun.
pub struct Journalled {
    /// The experiment.
    pub inner: Arc<dyn crate::core::Experiment>,
    /// Where the running jobs are journalled.
    pub journal: Arc<RunJournal>,
}

#[async_trait::async_trait]
impl crate::core::Experiment for Journalled {
    async fn run(&self, job: &crate::core::JobSpec) -> crate::core::Outcome {
        // Without the journal entry a job that kills its runner is retried
        // forever; better to run it unjournalled than not at all.
        let _running = match self.journal.start(&started_key(&job.sweep, job.index)) {
            Ok(running) => Some(running),
            Err(e) => {
                tracing::warn!(error = %e, "cannot journal the start of a job");
                None
            }
        };
        self.inner.run(job).await
    }
}

/// The journal of the jobs `tally run` is running, in the data directory.
pub fn open_journal(dir: &Path) -> anyhow::Result<Arc<RunJournal>> {
    let path = dir.join(JOURNAL_FILE);
    let journal = RunJournal::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Arc::new(journal))
}

/// Turn a full disk, wherever in the data directory it was met, into one
/// sentence that names the directory and says what to do; any other
/// error is returned as it is.
pub fn explain_disk_full(e: anyhow::Error, dir: &Path) -> anyhow::Error {
    use crate::adapters::local::queue::DISK_FULL;
    use crate::core::retry::CallError;
    use crate::core::{QueueError, StoreError};
    let code = |c: &(dyn std::error::Error + 'static)| -> Option<String> {
        let (queue, store) = match c.downcast_ref::<CallError>() {
            Some(CallError::Queue(q)) => (Some(q), None),
            Some(CallError::Store(s)) => (None, Some(s)),
            _ => (c.downcast_ref::<QueueError>(), c.downcast_ref::<StoreError>()),
        };
        match (queue, store) {
            (Some(QueueError::Permanent { code, .. }), _) | (_, Some(StoreError::Permanent { code, .. })) => {
                Some(code.clone())
            }
            _ => None,
        }
    };
    // The results database is written through rusqlite directly.
    let full = e.chain().any(|c| {
        code(c).is_some_and(|code| code == DISK_FULL)
            || matches!(c.downcast_ref::<rusqlite::Error>(),
                Some(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull)
    });
    if !full {
        return e;
    }
    anyhow::Error::new(UserError {
        message: format!(
            "the disk holding the data directory {} is full; free some space and rerun the same command to resume (everything acknowledged is kept)",
            dir.display()
        ),
        code: 1,
    })
}
