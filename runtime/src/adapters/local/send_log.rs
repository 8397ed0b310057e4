//! The submitter's progress in a SQLite file.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::core::submitter::SendLog;
use crate::core::StoreError;

/// Progress per `(sweep, attempt)`, written through on every mark.
pub struct SqliteSendLog {
    conn: Mutex<Connection>,
}

fn store_err(e: rusqlite::Error) -> StoreError {
    let full = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull);
    StoreError::Permanent {
        code: if full { super::queue::DISK_FULL } else { "SqliteError" }.into(),
        message: e.to_string(),
    }
}

impl SqliteSendLog {
    /// Open (creating) the log at `path`, first moving a log kept under
    /// the name earlier versions used (`old`) to `path`, so a sweep started
    /// by one of them resumes where it was.
    pub fn open_renaming(path: &Path, old: &Path) -> Result<Self, StoreError> {
        if old.exists() && !path.exists() {
            std::fs::rename(old, path).map_err(|e| StoreError::Permanent {
                code: "RenameFailed".into(),
                message: format!("cannot rename {} to {}: {e}", old.display(), path.display()),
            })?;
        }
        Self::open(path)
    }

    /// Open (creating) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(store_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS sent(sweep TEXT NOT NULL, attempt INTEGER NOT NULL,
                 count INTEGER NOT NULL, PRIMARY KEY(sweep, attempt));",
        )
        .map_err(store_err)?;
        Ok(Self { conn: Mutex::new(conn) })
    }
}

impl SendLog for SqliteSendLog {
    fn sent(&self, sweep: &str, attempt: u32) -> Result<u64, StoreError> {
        let conn = self.conn.lock().expect("send log lock");
        let count: Option<i64> = conn
            .query_row(
                "SELECT count FROM sent WHERE sweep=?1 AND attempt=?2",
                params![sweep, attempt],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)?;
        Ok(count.unwrap_or(0) as u64)
    }

    fn mark_sent(&self, sweep: &str, attempt: u32, count: u64) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("send log lock");
        conn.prepare_cached(
            "INSERT INTO sent(sweep, attempt, count) VALUES(?1, ?2, ?3)
             ON CONFLICT(sweep, attempt) DO UPDATE SET count=excluded.count",
        )
        .and_then(|mut s| s.execute(params![sweep, attempt, count as i64]))
        .map_err(store_err)?;
        Ok(())
    }
}
