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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    /// Progress is kept per sweep and attempt, replaced by each mark, and
    /// still there when the log is opened again.
    #[test]
    fn marks_are_per_sweep_and_attempt_and_survive_a_reopening() {
        let dir = Scratch::new("send-log");
        let path = dir.path("sent.sqlite");
        {
            let log = SqliteSendLog::open(&path).unwrap();
            assert_eq!(log.sent("a", 1).unwrap(), 0);
            log.mark_sent("a", 1, 1280).unwrap();
            log.mark_sent("a", 1, 2560).unwrap();
            log.mark_sent("a", 2, 7).unwrap();
            log.mark_sent("b", 1, 3).unwrap();
        }
        let log = SqliteSendLog::open(&path).unwrap();
        let read: Vec<u64> = [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
            .iter()
            .map(|&(sweep, attempt)| log.sent(sweep, attempt).unwrap())
            .collect();
        assert_eq!(read, [2560, 7, 3, 0]);
    }

    /// A log under the old name is moved to the new one, unless a log is
    /// already there (then the old one is left alone).
    #[test]
    fn a_log_under_the_old_name_is_taken_over_once() {
        let dir = Scratch::new("send-log-rename");
        let (old, new) = (dir.path("old.sqlite"), dir.path("new.sqlite"));
        SqliteSendLog::open(&old).unwrap().mark_sent("a", 1, 5).unwrap();
        let log = SqliteSendLog::open_renaming(&new, &old).unwrap();
        assert_eq!(log.sent("a", 1).unwrap(), 5);
        assert!(!old.exists(), "the old log was moved");
        drop(log);

        SqliteSendLog::open(&old).unwrap().mark_sent("a", 1, 9).unwrap();
        let log = SqliteSendLog::open_renaming(&new, &old).unwrap();
        assert_eq!(log.sent("a", 1).unwrap(), 5, "the new log is kept");
        assert!(old.exists());
    }

    /// A full disk is named as one (the CLI says so in one sentence).
    #[test]
    fn a_full_disk_is_told_apart_from_other_sqlite_errors() {
        let error = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        let full = store_err(error(rusqlite::ffi::SQLITE_FULL));
        let other = store_err(error(rusqlite::ffi::SQLITE_CORRUPT));
        assert!(matches!(full, StoreError::Permanent { code, .. } if code == super::super::queue::DISK_FULL));
        assert!(matches!(other, StoreError::Permanent { code, .. } if code == "SqliteError"));
    }
}
