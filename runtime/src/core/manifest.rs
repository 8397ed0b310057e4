//! The receipts ledger in the blob store. A sweep's manifest (the validated
//! sweep, whose length defines the submitted keys `0..len`) is written
//! create-only before any of its jobs is sent, and each resubmission round
//! is written as an immutable record of the indices it resends before any
//! of them is sent. The reconciler needs nothing else to know what was
//! submitted, so the ledger outlives any machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::core::retry::{put_if_absent_retrying, store_retrying, CallError};
use crate::core::{BlobStore, Clock, Experiment, PutOutcome, Shutdown};
use crate::sweep::Sweep;

/// Key of a sweep's manifest.
pub fn manifest_key(sweep_id: &str) -> String {
    format!("sweeps/{sweep_id}/manifest.json")
}

/// Key prefix of a sweep's resubmission rounds.
pub fn rounds_prefix(sweep_id: &str) -> String {
    format!("sweeps/{sweep_id}/rounds/")
}

/// Key of one resubmission round.
pub fn round_key(sweep_id: &str, attempt: u32) -> String {
    format!("{}{attempt:06}.json", rounds_prefix(sweep_id))
}

/// The manifest as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The sweep's id.
    pub id: String,
    /// How many jobs were submitted: keys `0..submitted`.
    pub submitted: u64,
    /// The sweep itself.
    pub sweep: Sweep,
}

/// A resubmission round: which indices were sent again, as which attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    /// The attempt number the resent jobs carry (2 for the first resubmit).
    pub attempt: u32,
    /// Inclusive ranges of resent indices.
    pub ranges: Vec<(u64, u64)>,
}

/// Compress sorted indices into inclusive ranges.
pub fn to_ranges(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &i in sorted {
        extend_ranges(&mut out, i, usize::MAX);
    }
    out
}

/// Add index `i`, met in increasing order, to inclusive `ranges`, keeping
/// at most `max` ranges: the first ones, each whole (a cap on indices
/// instead would cut the last range short).
pub fn extend_ranges(ranges: &mut Vec<(u64, u64)>, i: u64, max: usize) {
    if let Some((_, end)) = ranges.last_mut().filter(|(_, end)| *end + 1 == i) {
        *end = i;
    } else if ranges.len() < max {
        ranges.push((i, i));
    }
}

/// Write the manifest create-only. An existing manifest must be identical.
pub async fn publish(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    manifest: &Manifest,
) -> Result<(), CallError> {
    let bytes = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    let key = manifest_key(&manifest.id);
    if put_if_absent_retrying(store, clock, shutdown, &key, &bytes).await? == PutOutcome::AlreadyExists {
        let existing = load(store, clock, shutdown, &manifest.id).await?;
        if existing.as_ref() != Some(manifest) {
            return Err(CallError::Store(crate::core::StoreError::Permanent {
                code: "ManifestMismatch".into(),
                message: format!("{key} exists with different content"),
            }));
        }
    }
    Ok(())
}

/// Read a manifest; `None` if there is none (or it is unreadable).
pub async fn load(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    sweep_id: &str,
) -> Result<Option<Manifest>, CallError> {
    let key = manifest_key(sweep_id);
    let bytes = store_retrying(clock, shutdown, || store.get(&key)).await?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Every resubmission round of a sweep, in attempt order.
pub async fn load_rounds(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    sweep_id: &str,
) -> Result<Vec<Round>, CallError> {
    let prefix = rounds_prefix(sweep_id);
    let keys = store_retrying(clock, shutdown, || store.list(&prefix)).await?;
    let mut rounds = Vec::new();
    for key in keys {
        if let Some(bytes) = store_retrying(clock, shutdown, || store.get(&key)).await? {
            if let Ok(round) = serde_json::from_slice::<Round>(&bytes) {
                rounds.push(round);
            }
        }
    }
    rounds.sort_by_key(|r| r.attempt);
    Ok(rounds)
}

/// Key of the marker the submitter writes once every job of `attempt` was
/// acknowledged by the work queue.
pub fn sent_key(sweep_id: &str, attempt: u32) -> String {
    format!("sweeps/{sweep_id}/sent/{attempt:06}.json")
}

/// Whether the marker of `attempt` is stored: the submitter has sent every
/// job of that round.
pub async fn all_sent(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    sweep_id: &str,
    attempt: u32,
) -> Result<bool, CallError> {
    is_stored(store, clock, shutdown, &sent_key(sweep_id, attempt)).await
}

/// Whether an object (a marker: its presence is the fact) is stored.
async fn is_stored(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    key: &str,
) -> Result<bool, CallError> {
    Ok(store_retrying(clock, shutdown, || store.get(key)).await?.is_some())
}

/// Write the marker that every job of `attempt` was sent (create-only; an
/// existing marker is the same fact).
pub async fn mark_all_sent(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    sweep_id: &str,
    attempt: u32,
    jobs: u64,
) -> Result<(), CallError> {
    let bytes = format!("{{\"attempt\":{attempt},\"jobs\":{jobs}}}").into_bytes();
    put_if_absent_retrying(store, clock, shutdown, &sent_key(sweep_id, attempt), &bytes).await?;
    Ok(())
}

/// Key of a sweep's cancellation record.
pub fn cancel_key(sweep_id: &str) -> String {
    format!("sweeps/{sweep_id}/cancelled.json")
}

/// Record that a sweep is cancelled (create-only; cancelling twice is the
/// same fact). Workers drop its jobs without running them, and the
/// reconciler counts its keys without a result as cancelled, not missing.
pub async fn cancel(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    sweep_id: &str,
    at_wall_ms: u64,
) -> Result<(), CallError> {
    let bytes = format!("{{\"cancelled_ms\":{at_wall_ms}}}").into_bytes();
    put_if_absent_retrying(store, clock, shutdown, &cancel_key(sweep_id), &bytes).await?;
    Ok(())
}

/// Whether a sweep was cancelled.
pub async fn is_cancelled(
    store: &dyn BlobStore,
    clock: &dyn Clock,
    shutdown: &Shutdown,
    sweep_id: &str,
) -> Result<bool, CallError> {
    is_stored(store, clock, shutdown, &cancel_key(sweep_id)).await
}

/// A loaded sweep and the experiment built for it.
pub struct Loaded {
    /// The manifest.
    pub manifest: Manifest,
    /// The experiment that runs its jobs.
    pub experiment: Arc<dyn Experiment>,
}

/// Builds an experiment for a sweep.
pub type ExperimentFactory = Arc<dyn Fn(&Sweep) -> Arc<dyn Experiment> + Send + Sync>;

/// Manifests by sweep id, fetched once and kept; `None` marks a sweep id
/// with no manifest (a foreign message).
pub struct ManifestCache {
    factory: ExperimentFactory,
    entries: Mutex<BTreeMap<String, Option<Arc<Loaded>>>>,
    /// Per sweep: whether it is cancelled, and when that was last asked.
    cancels: Mutex<BTreeMap<String, (bool, u64)>>,
}

/// How often a worker asks again whether a sweep it runs was cancelled: a
/// cancel takes effect within this long, at one read per sweep per period.
pub const CANCEL_RECHECK_MS: u64 = 10_000;

impl ManifestCache {
    /// An empty cache using `factory` to build experiments.
    pub fn new(factory: ExperimentFactory) -> Self {
        Self {
            factory,
            entries: Mutex::new(BTreeMap::new()),
            cancels: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether `sweep_id` was cancelled, asked of the store at most every
    /// [`CANCEL_RECHECK_MS`] (a cancellation is final, so once seen it is
    /// never asked again).
    pub async fn cancelled(
        &self,
        store: &dyn BlobStore,
        clock: &dyn Clock,
        shutdown: &Shutdown,
        sweep_id: &str,
    ) -> Result<bool, CallError> {
        let now = clock.mono_ms();
        if let Some(&(cancelled, asked_ms)) = self.cancels.lock().expect("cache lock").get(sweep_id) {
            if cancelled || now < asked_ms + CANCEL_RECHECK_MS {
                return Ok(cancelled);
            }
        }
        let cancelled = is_cancelled(store, clock, shutdown, sweep_id).await?;
        self.cancels
            .lock()
            .expect("cache lock")
            .insert(sweep_id.to_owned(), (cancelled, now));
        Ok(cancelled)
    }

    /// The loaded sweep for `sweep_id`, fetching it on first use.
    pub async fn get(
        &self,
        store: &dyn BlobStore,
        clock: &dyn Clock,
        shutdown: &Shutdown,
        sweep_id: &str,
    ) -> Result<Option<Arc<Loaded>>, CallError> {
        if let Some(entry) = self.entries.lock().expect("cache lock").get(sweep_id) {
            return Ok(entry.clone());
        }
        let loaded = load(store, clock, shutdown, sweep_id).await?.map(|manifest| {
            let experiment = (self.factory)(&manifest.sweep);
            Arc::new(Loaded { manifest, experiment })
        });
        self.entries
            .lock()
            .expect("cache lock")
            .insert(sweep_id.to_owned(), loaded.clone());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's layout, as docs/ARCHITECTURE.md gives it: data written
    /// by earlier versions is read by these keys, and each sweep and each
    /// round has markers of its own (a marker shared by two sweeps would
    /// cancel or finish one with the other).
    #[test]
    fn keys_are_the_documented_layout_one_per_sweep_and_round() {
        assert_eq!(manifest_key("a-1"), "sweeps/a-1/manifest.json");
        assert_eq!(rounds_prefix("a-1"), "sweeps/a-1/rounds/");
        assert_eq!(round_key("a-1", 2), "sweeps/a-1/rounds/000002.json");
        assert_eq!(sent_key("a-1", 1), "sweeps/a-1/sent/000001.json");
        assert_eq!(cancel_key("a-1"), "sweeps/a-1/cancelled.json");
    }

    #[test]
    fn ranges_compress_runs_of_indices() {
        assert_eq!(to_ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
        assert!(to_ranges(&[]).is_empty());
    }
}
