//! Which jobs are running right now, kept where the runner's death cannot
//! lose it: one fixed-size slot per running job in a small file, each
//! start and end one `pwrite` and no `fsync`. The page cache outlives the
//! process, and the runner's death (a job that kills it) is all this must
//! survive; a machine that loses power loses at most a count of one
//! receive. Two SQLite commits per job, as before, cost a trivial job
//! about a tenth of its time.
//!
//! A slot is [`SLOT`] bytes: the key's length (0: free), the key, and at
//! the end the key's 64-bit xxh3, so a slot torn by a crash of the machine
//! is told from a key and ignored.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

/// Bytes per slot.
pub const SLOT: usize = 128;
/// The longest key a slot holds (a sweep id is at most 73 bytes, so a
/// job's key at most 94).
pub const KEY_MAX: usize = SLOT - 1 - 8;

/// The journal of one runner (it holds its data directory exclusively).
pub struct RunJournal {
    file: File,
    /// Which slots hold a running job's key.
    used: Mutex<Vec<bool>>,
}

impl RunJournal {
    /// Open (creating) the journal at `path`. What it holds was written by
    /// an earlier runner: read it with [`Self::entries`] before starting
    /// jobs, and [`Self::clear`] it once dealt with.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self {
            file,
            used: Mutex::new(Vec::new()),
        })
    }

    /// The keys of the jobs that were running when the runner that wrote
    /// this journal ended.
    pub fn entries(&self) -> io::Result<BTreeSet<String>> {
        let len = self.file.metadata()?.len();
        let mut bytes = vec![0; usize::try_from(len).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut bytes, 0)?;
        let mut keys = BTreeSet::new();
        for slot in bytes.chunks_exact(SLOT) {
            let n = usize::from(slot[0]);
            if n == 0 || n > KEY_MAX {
                continue;
            }
            let key = &slot[1..=n];
            let sum = u64::from_le_bytes(slot[SLOT - 8..].try_into().expect("8 bytes"));
            match std::str::from_utf8(key) {
                Ok(key) if xxhash_rust::xxh3::xxh3_64(key.as_bytes()) == sum => {
                    keys.insert(key.to_owned());
                }
                _ => tracing::warn!("ignoring a torn slot in the journal of running jobs"),
            }
        }
        Ok(keys)
    }

    /// Forget every entry (once the jobs they name are dealt with).
    pub fn clear(&self) -> io::Result<()> {
        self.file.set_len(0)
    }

    /// Record that the job `key` is starting; the entry is removed when
    /// the returned guard is dropped (the job ended or was abandoned).
    pub fn start(&self, key: &str) -> io::Result<Running<'_>> {
        if key.is_empty() || key.len() > KEY_MAX {
            return Err(io::Error::other(format!(
                "a journal key holds 1 to {KEY_MAX} bytes, not {}",
                key.len()
            )));
        }
        let slot = {
            let mut used = self.used.lock().expect("journal lock");
            let free = used.iter().position(|u| !u).unwrap_or(used.len());
            if free == used.len() {
                used.push(false);
            }
            used[free] = true;
            free
        };
        let mut bytes = [0u8; SLOT];
        bytes[0] = key.len() as u8;
        bytes[1..=key.len()].copy_from_slice(key.as_bytes());
        bytes[SLOT - 8..].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(key.as_bytes()).to_le_bytes());
        let running = Running { journal: self, slot };
        self.file.write_all_at(&bytes, offset(slot))?;
        Ok(running)
    }

    fn end(&self, slot: usize) -> io::Result<()> {
        let written = self.file.write_all_at(&[0], offset(slot));
        self.used.lock().expect("journal lock")[slot] = false;
        written
    }
}

fn offset(slot: usize) -> u64 {
    (slot * SLOT) as u64
}

/// A running job's entry, removed when dropped.
pub struct Running<'a> {
    journal: &'a RunJournal,
    slot: usize,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.journal.end(self.slot) {
            tracing::warn!(error = %e, "cannot journal the end of a job");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    #[test]
    fn entries_are_the_jobs_still_running_when_the_runner_ended() {
        let dir = Scratch::new("journal-entries");
        let path = dir.path("started.journal");
        {
            let journal = RunJournal::open(&path).unwrap();
            assert!(journal.entries().unwrap().is_empty());
            let a = journal.start("s-0000000a/1").unwrap();
            let b = journal.start("s-0000000a/2").unwrap();
            drop(a);
            // A slot freed is reused.
            let c = journal.start("s-0000000a/3").unwrap();
            assert_eq!((b.slot, c.slot), (1, 0));
            // The runner dies: the guards are never dropped.
            std::mem::forget((b, c));
        }
        let journal = RunJournal::open(&path).unwrap();
        let keys: Vec<String> = journal.entries().unwrap().into_iter().collect();
        assert_eq!(keys, ["s-0000000a/2", "s-0000000a/3"]);
        journal.clear().unwrap();
        assert!(RunJournal::open(&path).unwrap().entries().unwrap().is_empty());
    }

    #[test]
    fn a_torn_slot_is_ignored_and_a_key_too_long_refused() {
        let dir = Scratch::new("journal-torn");
        let path = dir.path("started.journal");
        let journal = RunJournal::open(&path).unwrap();
        std::mem::forget(journal.start("s-0000000a/1").unwrap());
        std::mem::forget(journal.start("s-0000000a/2").unwrap());
        // Half of the second slot's key lost, as a power cut might leave it.
        journal.file.write_all_at(b"\0\0\0\0", offset(1) + 4).unwrap();
        let keys: Vec<String> = journal.entries().unwrap().into_iter().collect();
        assert_eq!(keys, ["s-0000000a/1"]);
        let longest = "k".repeat(KEY_MAX);
        std::mem::forget(journal.start(&longest).unwrap());
        assert!(journal.start(&"k".repeat(KEY_MAX + 1)).is_err());
        assert!(journal.start("").is_err());
        let keys: Vec<String> = journal.entries().unwrap().into_iter().collect();
        assert_eq!(keys, [longest.clone(), "s-0000000a/1".into()]);
        // A length byte past the slot, as a torn write might leave it.
        journal.file.write_all_at(&[255], offset(0)).unwrap();
        let keys: Vec<String> = journal.entries().unwrap().into_iter().collect();
        assert_eq!(keys, [longest]);
    }
}
