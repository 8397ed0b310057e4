//! The S3 host's serving loop, and [`SimStore`], the protocol's client.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tally::core::{BlobStore, PutOutcome, StoreError};
use turmoil::net::UdpSocket;

use super::http::HttpFrame;
use super::rpc::{self, Caller, Lost};
use super::s3_rest;
use super::wire::WireStoreError;
use super::{RpcConfig, SharedS3, S3_HTTP_PORT, S3_PORT};
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

fn apply(model: &mut S3Model, request: S3Request) -> S3Reply {
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

/// Serve `model` on [`S3_PORT`] (the direct RPC) and [`S3_HTTP_PORT`] (the
/// AWS SDK's REST protocol) of the current host until the host stops.
/// Use as a host's software: `sim.host("s3", move || serve_s3(model.clone()))`.
pub async fn serve_s3(model: SharedS3) -> turmoil::Result {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, S3_PORT)).await?;
    let http = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, S3_HTTP_PORT)).await?;
    loop {
        tokio::select! {
            biased;
            got = rpc::recv_frame::<S3Request>(&socket) => {
                let (frame, from) = got?;
                let reply = apply(&mut model.borrow_mut(), frame.body);
                rpc::reply(&socket, from, frame.id, &reply);
            }
            got = rpc::recv_frame::<HttpFrame>(&http) => {
                let (frame, from) = got?;
                let reply = match s3_rest::decode(frame.body) {
                    Ok((request, op)) => s3_rest::encode(&op, apply(&mut model.borrow_mut(), request)),
                    Err(answer) => answer,
                };
                rpc::reply(&http, from, frame.id, &reply);
            }
        }
    }
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
