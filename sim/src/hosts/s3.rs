//! A pure, deterministic, in-memory model of one S3 bucket.
//!
//! Strongly consistent, as S3 has been since December 2020: a read or list
//! after a successful write sees it. Writes are create-only
//! (`If-None-Match: *`). Injected faults are transient errors (`InternalError`
//! or `SlowDown`), drawn either before the request is applied, or after it
//! was applied (the reply says error but the write happened: an unknown
//! outcome, the case that makes create-only writes necessary).

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

/// Ground truth, reported as it happens.
pub trait S3Observer {
    /// An object was created under `key` (whatever the reply said).
    fn created(&mut self, key: &str, bytes: &[u8]);
}

/// One simulated bucket.
pub struct S3Model {
    objects: BTreeMap<String, Arc<[u8]>>,
    faults: S3Faults,
    rng: ChaCha8Rng,
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
        Self {
            objects: BTreeMap::new(),
            faults,
            rng: ChaCha8Rng::seed_from_u64(seed),
            observer: None,
        }
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

    /// Keys starting with `prefix`, in lexicographic order.
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
}
