//! The submitter: record receipts, then send.
//!
//! The manifest (which defines the submitted keys) is stored create-only
//! before the first job is sent, and each resubmission round is stored
//! before any of its jobs is sent. Progress through a round is kept in a
//! [`SendLog`] after each acknowledged batch, so a rerun sends only what was
//! not acknowledged; a batch resent after a crash makes duplicates, which
//! reconciliation detects by key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::info;

use crate::core::manifest::{self, Manifest, Round};
use crate::core::retry::{put_if_absent_retrying, CallError, Calls, CALLS_IN_FLIGHT};
use crate::core::{BlobStore, Clock, JobMessage, Policy, PutOutcome, Queue, Shutdown, StoreError};
use crate::sweep::Sweep;

/// Durable progress of the submitter: how many jobs of a round the queue
/// has acknowledged. Implementations write through (a crash keeps what was
/// marked).
pub trait SendLog: Send + Sync {
    /// Jobs of `(sweep, attempt)` acknowledged so far, in send order.
    fn sent(&self, sweep: &str, attempt: u32) -> Result<u64, StoreError>;
    /// Record that the first `count` jobs of `(sweep, attempt)` were acknowledged.
    fn mark_sent(&self, sweep: &str, attempt: u32, count: u64) -> Result<(), StoreError>;
}

/// Counters the submitter keeps.
#[derive(Debug, Default)]
pub struct SubmitStats {
    /// Jobs acknowledged by the work queue in this process.
    pub sent: AtomicU64,
}

/// Everything a submitter talks to.
pub struct Submitter {
    /// The work queue.
    pub jobs: Arc<dyn Queue>,
    /// The blob store (the ledger).
    pub store: Arc<dyn BlobStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Progress.
    pub log: Arc<dyn SendLog>,
    /// Which protocol to follow.
    pub policy: Policy,
    /// Counters.
    pub stats: Arc<SubmitStats>,
}

impl Submitter {
    /// Publish the sweep's manifest and send every job not yet acknowledged.
    /// Returns the sweep's id.
    pub async fn submit(&self, sweep: &Sweep, shutdown: &Shutdown) -> Result<String, CallError> {
        let id = sweep.id();
        let submitted = sweep.len().expect("a validated sweep has a length");
        let manifest = Manifest {
            id: id.clone(),
            submitted,
            sweep: sweep.clone(),
        };
        manifest::publish(&*self.store, &*self.clock, shutdown, &manifest).await?;
        self.send_round(&id, 1, submitted, |i| i, shutdown).await?;
        Ok(id)
    }

    /// Resend `indices` (sorted) of a sweep as a new attempt, recording the
    /// round first. If the previous round was not fully sent, that round is
    /// finished instead and its attempt returned.
    pub async fn resubmit(&self, sweep_id: &str, indices: &[u64], shutdown: &Shutdown) -> Result<u32, CallError> {
        let rounds = manifest::load_rounds(&*self.store, &*self.clock, shutdown, sweep_id).await?;
        if let Some(last) = rounds.last() {
            let len = round_len(last);
            if self.log.sent(sweep_id, last.attempt)? < len {
                let flat = flatten(last);
                self.send_round(sweep_id, last.attempt, len, |i| flat[i as usize], shutdown)
                    .await?;
                return Ok(last.attempt);
            }
        }
        let attempt = rounds.last().map_or(2, |r| r.attempt + 1);
        let round = Round {
            attempt,
            ranges: manifest::to_ranges(indices),
        };
        let bytes = serde_json::to_vec(&round).expect("a round serialises");
        let key = manifest::round_key(sweep_id, attempt);
        if put_if_absent_retrying(&*self.store, &*self.clock, shutdown, &key, &bytes).await?
            == PutOutcome::AlreadyExists
        {
            return Err(CallError::Store(StoreError::Permanent {
                code: "RoundExists".into(),
                message: format!("{key} was written by another submitter; reconcile again"),
            }));
        }
        info!(sweep = sweep_id, attempt, jobs = indices.len(), "resubmitting");
        self.send_round(
            sweep_id,
            attempt,
            indices.len() as u64,
            |i| indices[i as usize],
            shutdown,
        )
        .await?;
        Ok(attempt)
    }

    /// Send positions `sent..len` of a round; `index_at` maps a position to
    /// a job index.
    async fn send_round(
        &self,
        sweep_id: &str,
        attempt: u32,
        len: u64,
        index_at: impl Fn(u64) -> u64,
        shutdown: &Shutdown,
    ) -> Result<(), CallError> {
        let calls = Calls {
            queue: &*self.jobs,
            clock: &*self.clock,
            policy: self.policy,
            shutdown,
        };
        let mut pos = self.log.sent(sweep_id, attempt)?;
        // Batches stream out CALLS_IN_FLIGHT at a time; progress is recorded
        // per group of four rounds of them, so the stream drains only once per
        // group, and a crash resends at most one group (duplicates, counted by
        // key: at most 1,280 jobs on SQS).
        let group = (self.jobs.batch_max() * CALLS_IN_FLIGHT * 4) as u64;
        while pos < len {
            if crate::core::is_stopping(shutdown) {
                return Err(CallError::Stopped);
            }
            let end = (pos + group).min(len);
            let bodies: Vec<String> = (pos..end)
                .map(|p| JobMessage::new(sweep_id, index_at(p), attempt).encode())
                .collect();
            calls.send_all(&bodies).await?;
            self.log.mark_sent(sweep_id, attempt, end)?;
            self.stats.sent.fetch_add(end - pos, Ordering::Relaxed);
            pos = end;
        }
        Ok(())
    }
}

fn round_len(round: &Round) -> u64 {
    round.ranges.iter().map(|(a, b)| b - a + 1).sum()
}

fn flatten(round: &Round) -> Vec<u64> {
    round.ranges.iter().flat_map(|&(a, b)| a..=b).collect()
}

/// A [`SendLog`] in memory, for tests and for runs that need no resume.
#[derive(Default)]
pub struct MemSendLog {
    sent: std::sync::Mutex<std::collections::BTreeMap<(String, u32), u64>>,
}

impl SendLog for MemSendLog {
    fn sent(&self, sweep: &str, attempt: u32) -> Result<u64, StoreError> {
        Ok(*self
            .sent
            .lock()
            .expect("log lock")
            .get(&(sweep.to_owned(), attempt))
            .unwrap_or(&0))
    }

    fn mark_sent(&self, sweep: &str, attempt: u32, count: u64) -> Result<(), StoreError> {
        self.sent
            .lock()
            .expect("log lock")
            .insert((sweep.to_owned(), attempt), count);
        Ok(())
    }
}
