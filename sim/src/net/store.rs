//! The S3 host's requests and answers, and [`SimStore`], the protocol's client.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tally::core::{BlobStore, PutOutcome, StoreError};

use super::rpc::{Caller, Lost};
use super::wire::WireStoreError;
use super::{RpcConfig, S3_PORT};
use crate::hosts::{S3Model, LIST_PAGE_MAX};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum S3Request {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    Get {
        key: String,
    },
    /// One ListObjectsV2 page: keys under `prefix` after `after`.
    ListPage {
        prefix: String,
        after: Option<String>,
        max: u32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum S3Reply {
    Put {
        created: bool,
    },
    Got(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    Page {
        keys: Vec<String>,
        next_after: Option<String>,
    },
    Failed(WireStoreError),
}

pub(super) fn apply(model: &mut S3Model, request: S3Request) -> S3Reply {
    let result = match request {
        S3Request::Put { key, bytes } => model.put_if_absent(&key, &bytes).map(|outcome| S3Reply::Put {
            created: outcome == PutOutcome::Created,
        }),
        S3Request::Get { key } => model.get(&key).map(|found| S3Reply::Got(found.map(|b| b.to_vec()))),
        S3Request::ListPage { prefix, after, max } => {
            model
                .list_page(&prefix, after.as_deref(), max as usize)
                .map(|page| S3Reply::Page {
                    keys: page.keys,
                    next_after: page.next_after,
                })
        }
    };
    result.unwrap_or_else(|e| S3Reply::Failed(e.into()))
}

/// The bucket on a simulated S3 host, as the protocol code sees it.
#[derive(Debug)]
pub struct SimStore {
    caller: Caller,
}

fn lost(e: Lost) -> StoreError {
    match e {
        Lost::Unknown { code, message } => StoreError::Retryable {
            code: code.into(),
            message,
        },
        Lost::TooLarge(len) => StoreError::Permanent {
            code: "EntityTooLarge".into(),
            message: format!("a {len}-byte request is over the simulator's frame limit"),
        },
    }
}

fn unexpected(reply: S3Reply) -> StoreError {
    match reply {
        S3Reply::Failed(e) => e.into(),
        other => StoreError::Permanent {
            code: "UnexpectedReply".into(),
            message: format!("{other:?}"),
        },
    }
}

impl SimStore {
    /// The bucket on the S3 host `rpc.host`.
    pub fn new(rpc: RpcConfig) -> Self {
        Self {
            caller: Caller::new(rpc, S3_PORT),
        }
    }

    async fn call(&self, request: S3Request) -> Result<S3Reply, StoreError> {
        self.caller.call(&request, 0).await.map_err(lost)
    }
}

#[async_trait]
impl BlobStore for SimStore {
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        match self.call(S3Request::Put { key: key.into(), bytes }).await? {
            S3Reply::Put { created: true } => Ok(PutOutcome::Created),
            S3Reply::Put { created: false } => Ok(PutOutcome::AlreadyExists),
            other => Err(unexpected(other)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.call(S3Request::Get { key: key.into() }).await? {
            S3Reply::Got(found) => Ok(found),
            other => Err(unexpected(other)),
        }
    }

    /// Every key under `prefix`, page after page as ListObjectsV2 gives
    /// them: a key created behind the listing's position meanwhile is
    /// missed, as on S3.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let request = S3Request::ListPage {
                prefix: prefix.into(),
                after: after.take(),
                max: LIST_PAGE_MAX as u32,
            };
            match self.call(request).await? {
                S3Reply::Page { keys: page, next_after } => {
                    keys.extend(page);
                    match next_after {
                        Some(next) => after = Some(next),
                        None => return Ok(keys),
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }
}
