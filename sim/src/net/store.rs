//! The S3 host's serving loop, and [`SimStore`], the protocol's client.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tally::core::{BlobStore, PutOutcome, StoreError};
use turmoil::net::UdpSocket;

use super::rpc::{self, Caller, Lost};
use super::wire::WireStoreError;
use super::{RpcConfig, SharedS3, S3_PORT};
use crate::hosts::S3Model;

#[derive(Debug, Serialize, Deserialize)]
enum S3Request {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    Get {
        key: String,
    },
    List {
        prefix: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum S3Reply {
    Put { created: bool },
    Got(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    Listed(Vec<String>),
    Failed(WireStoreError),
}

fn apply(model: &mut S3Model, request: S3Request) -> S3Reply {
    let result = match request {
        S3Request::Put { key, bytes } => model.put_if_absent(&key, &bytes).map(|outcome| S3Reply::Put {
            created: outcome == PutOutcome::Created,
        }),
        S3Request::Get { key } => model.get(&key).map(|found| S3Reply::Got(found.map(|b| b.to_vec()))),
        S3Request::List { prefix } => model.list(&prefix).map(S3Reply::Listed),
    };
    result.unwrap_or_else(|e| S3Reply::Failed(e.into()))
}

/// Serve `model` on [`S3_PORT`] of the current host until the host stops.
/// Use as a host's software: `sim.host("s3", move || serve_s3(model.clone()))`.
pub async fn serve_s3(model: SharedS3) -> turmoil::Result {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, S3_PORT)).await?;
    loop {
        let (frame, from) = rpc::recv_frame::<S3Request>(&socket).await?;
        let reply = apply(&mut model.borrow_mut(), frame.body);
        rpc::reply(&socket, from, frame.id, &reply);
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

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self.call(S3Request::List { prefix: prefix.into() }).await? {
            S3Reply::Listed(keys) => Ok(keys),
            other => Err(unexpected(other)),
        }
    }
}
