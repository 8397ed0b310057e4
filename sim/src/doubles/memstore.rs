//! A frozen copy of the simulated bucket, readable outside the simulation
//! by the final reconciliation.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tally::core::seams::BoxFuture;
use tally::core::{BlobStore, Clock, PutOutcome, StoreError};

use crate::hosts::S3Model;

/// A read-only snapshot of a bucket.
pub struct MemStore {
    objects: BTreeMap<String, Arc<[u8]>>,
}

impl MemStore {
    /// Every object of `model`, shared with it rather than copied.
    pub fn snapshot(model: &S3Model) -> Self {
        let objects = model
            .keys()
            .filter_map(|k| Some((k.to_owned(), model.shared(k)?)))
            .collect();
        Self { objects }
    }
}

#[async_trait]
impl BlobStore for MemStore {
    async fn put_if_absent(&self, key: &str, _bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        Err(StoreError::Permanent {
            code: "ReadOnly".into(),
            message: format!("the snapshot is read-only ({key})"),
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.objects.get(key).map(|b| b.to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }
}

/// A clock for code run outside the simulation that never needs to wait.
pub struct StillClock;

impl Clock for StillClock {
    fn mono_ms(&self) -> u64 {
        0
    }
    fn wall_ms(&self) -> u64 {
        crate::doubles::clock::EPOCH_MS
    }
    fn sleep(&self, _ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}
