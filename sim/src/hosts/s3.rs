//! A pure, deterministic, in-memory model of one S3 bucket.
//!
//! Strongly consistent, as S3 has been since December 2020: a read or list
//! after a successful write sees it. Writes are create-only
//! (`If-None-Match: *`). Injected faults are transient errors (`InternalError`
//! or `SlowDown`), drawn either before the request is applied, or after it
//! was applied (the reply says error but the write happened: an unknown
//! outcome, the case that makes create-only writes necessary).
//!
//! [`S3WorstCase`] holds what AWS documents beyond those faults: a 409
//! `ConditionalRequestConflict` on a create-only write, and listings in
//! pages of at most [`LIST_PAGE_MAX`] keys (settable smaller), each page
//! starting after the last key of the one before, so a key created behind
//! a listing's position is missed by it. Its randomness comes from a
//! stream of its own, so with the conflict rate at 0 the other draws are
//! as they always were.
//!
//! Simplifications, each on the lenient side of nothing: a listing that
//! fits one page (1,000 keys unless set smaller) is a snapshot; a
//! conflict is drawn, not caused by a concurrent write.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tally::core::{PutOutcome, StoreError};

/// Fault rates of the model; all zero by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct S3Faults {
    /// Chance that a request fails without being applied.
    pub error_before_rate: f64,
    /// Chance that a request is applied and then answered with an error.
    pub error_after_rate: f64,
}

/// The most keys one ListObjectsV2 page holds, as on S3.
pub const LIST_PAGE_MAX: usize = 1_000;

/// AWS's documented worst cases beyond [`S3Faults`]. Set with
/// [`S3Model::set_worst_case`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct S3WorstCase {
    /// Chance that a create-only write fails, unapplied, with a retryable
    /// 409 `ConditionalRequestConflict`. 0 by default.
    pub conflict_rate: f64,
    /// The most keys a listing page holds; [`LIST_PAGE_MAX`] by default.
    pub list_page_max: usize,
}

impl Default for S3WorstCase {
    fn default() -> Self {
        Self {
            conflict_rate: 0.0,
            list_page_max: LIST_PAGE_MAX,
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Keys in lexicographic order.
    pub keys: Vec<String>,
    /// Where the next page starts (after this key), if there is one: a
    /// continuation token.
    pub next_after: Option<String>,
}

/// Ground truth, reported as it happens.
pub trait S3Observer {
    /// An object was created under `key` (whatever the reply said).
    fn created(&mut self, key: &str, bytes: &[u8]);
}

/// One simulated bucket.
pub struct S3Model {
    objects: BTreeMap<String, Arc<[u8]>>,
    faults: S3Faults,
    worst: S3WorstCase,
    rng: ChaCha8Rng,
    /// Draws for the [`S3WorstCase`] knobs, apart from `rng` so that with
    /// them off every other draw is as it always was.
    worst_rng: ChaCha8Rng,
    observer: Option<Box<dyn S3Observer>>,
}

impl std::fmt::Debug for S3Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Model")
            .field("objects", &self.objects.len())
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

fn retryable(code: &str, message: &str) -> StoreError {
    StoreError::Retryable {
        code: code.into(),
        message: message.into(),
    }
}

impl S3Model {
    /// An empty bucket whose randomness all comes from `seed`.
    pub fn new(seed: u64, faults: S3Faults) -> Self {
        let mut worst_rng = ChaCha8Rng::seed_from_u64(seed);
        worst_rng.set_stream(3);
        Self {
            objects: BTreeMap::new(),
            faults,
            worst: S3WorstCase::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            worst_rng,
            observer: None,
        }
    }

    /// Change the worst-case knobs.
    pub fn set_worst_case(&mut self, worst: S3WorstCase) {
        self.worst = worst;
    }

    /// The current worst-case knobs.
    pub fn worst_case(&self) -> S3WorstCase {
        self.worst
    }

    /// Report ground truth to `observer` from now on.
    pub fn set_observer(&mut self, observer: Box<dyn S3Observer>) {
        self.observer = Some(observer);
    }

    /// Change the fault rates.
    pub fn set_faults(&mut self, faults: S3Faults) {
        self.faults = faults;
    }

    /// The current fault rates.
    pub fn faults(&self) -> S3Faults {
        self.faults
    }

    /// An object as stored, bypassing faults (for the checker).
    pub fn object(&self, key: &str) -> Option<&[u8]> {
        self.objects.get(key).map(|b| &b[..])
    }

    /// An object shared rather than copied, bypassing faults (for the
    /// final reconciliation's snapshot).
    pub fn shared(&self, key: &str) -> Option<Arc<[u8]>> {
        self.objects.get(key).cloned()
    }

    /// Every key, in order, bypassing faults (for the checker).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.objects.keys().map(String::as_str)
    }

    fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random_bool(rate.min(1.0))
    }

    /// An injected error, or nothing; `after` picks which rate applies.
    fn fault(&mut self, after: bool) -> Result<(), StoreError> {
        let rate = if after {
            self.faults.error_after_rate
        } else {
            self.faults.error_before_rate
        };
        if !self.chance(rate) {
            return Ok(());
        }
        if self.rng.random_bool(0.5) {
            Err(retryable("SlowDown", "Please reduce your request rate."))
        } else {
            Err(retryable(
                "InternalError",
                "We encountered an internal error. Please try again.",
            ))
        }
    }

    /// Write `bytes` under `key` unless the key exists.
    pub fn put_if_absent(&mut self, key: &str, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
        self.fault(false)?;
        // S3 User Guide, "Conditional writes": "If a conflicting operation
        // occurs during the upload, S3 returns a 409
        // ConditionalRequestConflict response. On a 409 failure you should
        // retry the upload."
        let conflict_rate = self.worst.conflict_rate;
        if conflict_rate > 0.0 && self.worst_rng.random_bool(conflict_rate.min(1.0)) {
            return Err(retryable(
                "ConditionalRequestConflict",
                "A conflicting conditional operation is currently in progress against this resource.",
            ));
        }
        let outcome = if self.objects.contains_key(key) {
            PutOutcome::AlreadyExists
        } else {
            self.objects.insert(key.into(), Arc::from(bytes));
            if let Some(observer) = self.observer.as_deref_mut() {
                observer.created(key, bytes);
            }
            PutOutcome::Created
        };
        self.fault(true)?;
        Ok(outcome)
    }

    /// Read an object, or `None` if absent.
    pub fn get(&mut self, key: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        self.fault(false)?;
        let found = self.objects.get(key).cloned();
        self.fault(true)?;
        Ok(found)
    }

    /// One page of the keys starting with `prefix` and after `after`, in
    /// lexicographic order: at most `max` keys, and never more than
    /// [`S3WorstCase::list_page_max`]. ListObjectsV2 API Reference:
    /// "Returns some or all (up to 1,000) of the objects in a bucket with
    /// each request"; the next page starts after the last key returned
    /// (`StartAfter`/`ContinuationToken`), so a key created behind that
    /// point is not in this listing.
    pub fn list_page(&mut self, prefix: &str, after: Option<&str>, max: usize) -> Result<ListPage, StoreError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        self.fault(false)?;
        let limit = max.min(self.worst.list_page_max).max(1);
        let start = match after {
            Some(after) if after >= prefix => Excluded(after),
            _ => Included(prefix),
        };
        let mut keys: Vec<String> = self
            .objects
            .range::<str, _>((start, Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next_after = if more { keys.last().cloned() } else { None };
        self.fault(true)?;
        Ok(ListPage { keys, next_after })
    }

    /// Keys starting with `prefix`, in lexicographic order, in one go.
    pub fn list(&mut self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.fault(false)?;
        let keys = self
            .objects
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        self.fault(true)?;
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_put_under_the_same_key_changes_nothing() {
        let mut s3 = S3Model::new(1, S3Faults::default());
        assert_eq!(s3.put_if_absent("a/1", b"one").unwrap(), PutOutcome::Created);
        assert_eq!(s3.put_if_absent("a/1", b"two").unwrap(), PutOutcome::AlreadyExists);
        assert_eq!(&*s3.get("a/1").unwrap().unwrap(), b"one");
        assert_eq!(s3.get("a/2").unwrap(), None);
    }

    #[test]
    fn list_returns_only_keys_under_the_prefix_in_order() {
        let mut s3 = S3Model::new(2, S3Faults::default());
        for key in ["b/2", "a/9", "b/1", "b0", "c"] {
            s3.put_if_absent(key, b"").unwrap();
        }
        assert_eq!(s3.list("b/").unwrap(), vec!["b/1", "b/2"]);
        assert_eq!(s3.list("").unwrap().len(), 5);
    }

    #[test]
    fn an_error_after_applying_leaves_the_object_written() {
        let mut s3 = S3Model::new(
            3,
            S3Faults {
                error_after_rate: 1.0,
                ..S3Faults::default()
            },
        );
        assert!(matches!(s3.put_if_absent("k", b"v"), Err(StoreError::Retryable { .. })));
        assert_eq!(s3.object("k"), Some(&b"v"[..]));
        s3.set_faults(S3Faults::default());
        assert_eq!(s3.put_if_absent("k", b"w").unwrap(), PutOutcome::AlreadyExists);
    }

    #[test]
    fn an_error_before_applying_leaves_nothing_written() {
        let mut s3 = S3Model::new(
            4,
            S3Faults {
                error_before_rate: 1.0,
                ..S3Faults::default()
            },
        );
        assert!(matches!(s3.put_if_absent("k", b"v"), Err(StoreError::Retryable { .. })));
        assert_eq!(s3.object("k"), None);
    }

    #[test]
    fn injected_errors_happen_at_about_their_rate() {
        let mut s3 = S3Model::new(
            5,
            S3Faults {
                error_before_rate: 0.1,
                ..S3Faults::default()
            },
        );
        let failed = (0..10_000)
            .filter(|i| s3.put_if_absent(&i.to_string(), b"").is_err())
            .count();
        assert!((850..=1_150).contains(&failed), "{failed} failed");
    }

    #[test]
    fn a_conflict_fails_a_create_only_write_retryably_and_writes_nothing() {
        let mut s3 = S3Model::new(6, S3Faults::default());
        s3.set_worst_case(S3WorstCase {
            conflict_rate: 1.0,
            ..S3WorstCase::default()
        });
        match s3.put_if_absent("k", b"v") {
            Err(StoreError::Retryable { code, .. }) => assert_eq!(code, "ConditionalRequestConflict"),
            other => panic!("expected a 409 conflict, got {other:?}"),
        }
        assert_eq!(s3.object("k"), None);
        s3.set_worst_case(S3WorstCase::default());
        assert_eq!(s3.put_if_absent("k", b"v").unwrap(), PutOutcome::Created);
    }

    #[test]
    fn listing_pages_hold_at_most_the_page_size_and_miss_a_key_created_behind_the_position() {
        let mut s3 = S3Model::new(7, S3Faults::default());
        s3.set_worst_case(S3WorstCase {
            list_page_max: 7,
            ..S3WorstCase::default()
        });
        for i in 0..20 {
            s3.put_if_absent(&format!("k/{i:02}"), b"").unwrap();
        }
        s3.put_if_absent("j", b"").unwrap();
        let first = s3.list_page("k/", None, LIST_PAGE_MAX).unwrap();
        assert_eq!(first.keys.len(), 7);
        assert_eq!(first.next_after.as_deref(), Some("k/06"));
        s3.put_if_absent("k/00a", b"").unwrap();
        s3.put_if_absent("k/18a", b"").unwrap();
        let mut listed = first.keys;
        let mut after = first.next_after;
        while let Some(from) = after {
            let page = s3.list_page("k/", Some(&from), LIST_PAGE_MAX).unwrap();
            assert!(page.keys.len() <= 7);
            listed.extend(page.keys);
            after = page.next_after;
        }
        assert_eq!(listed.len(), 21);
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "out of order: {listed:?}");
        assert!(listed.contains(&"k/18a".to_string()));
        assert!(
            !listed.contains(&"k/00a".to_string()),
            "a key behind the position was listed"
        );
    }
}
