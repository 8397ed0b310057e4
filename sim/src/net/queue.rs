//! The SQS host's requests and answers, and [`SimQueue`], the protocol's client.

use std::borrow::Cow;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tally::core::{EntryError, Queue, QueueError, QueueStats, Received};

use super::rpc::{Caller, Lost};
use super::wire::{from_wire_statuses, to_wire_statuses, WireQueueError, WireReceived, WireStatuses};
use super::{RpcConfig, SQS_PORT, WAIT_MAX_MS};
use crate::hosts::{QueueAttrs, SqsModel};

/// A request. Borrowed where the client sends it (nothing is copied to
/// build it), owned where the server reads it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SqsRequest<'a> {
    Ensure {
        queue: Cow<'a, str>,
        attrs: QueueAttrs,
    },
    DeleteQueue {
        queue: Cow<'a, str>,
    },
    /// Whether the queue can be used (GetQueueUrl).
    Lookup {
        queue: Cow<'a, str>,
    },
    Send {
        queue: Cow<'a, str>,
        bodies: Cow<'a, [String]>,
    },
    Receive {
        queue: Cow<'a, str>,
        max: u32,
        visibility_ms: u64,
        wait_ms: u64,
    },
    Delete {
        queue: Cow<'a, str>,
        handles: Cow<'a, [String]>,
    },
    ChangeVisibility {
        queue: Cow<'a, str>,
        handles: Cow<'a, [String]>,
        visibility_ms: u64,
    },
    Stats {
        queue: Cow<'a, str>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SqsReply {
    Done,
    Entries(WireStatuses),
    Received(Vec<WireReceived>),
    Stats(QueueStats),
    Failed(WireQueueError),
}

fn done(result: Result<(), QueueError>) -> SqsReply {
    result.map_or_else(|e| SqsReply::Failed(e.into()), |()| SqsReply::Done)
}

fn entries(result: Result<Vec<Result<(), EntryError>>, QueueError>) -> SqsReply {
    result.map_or_else(
        |e| SqsReply::Failed(e.into()),
        |s| SqsReply::Entries(to_wire_statuses(s)),
    )
}

pub(super) fn received(result: Result<Vec<Received>, QueueError>) -> SqsReply {
    result.map_or_else(
        |e| SqsReply::Failed(e.into()),
        |got| SqsReply::Received(got.into_iter().map(Into::into).collect()),
    )
}

/// Apply one request to the model at `now_ms`.
pub(super) fn apply(model: &mut SqsModel, request: SqsRequest<'_>, now_ms: u64) -> SqsReply {
    match request {
        SqsRequest::Ensure { queue, attrs } => done(model.ensure(&queue, &attrs, now_ms)),
        SqsRequest::DeleteQueue { queue } => done(model.delete_queue(&queue, now_ms)),
        SqsRequest::Lookup { queue } => done(model.lookup(&queue, now_ms)),
        SqsRequest::Send { queue, bodies } => entries(model.send_batch(&queue, &bodies, now_ms)),
        SqsRequest::Receive {
            queue,
            max,
            visibility_ms,
            ..
        } => received(model.receive(&queue, max as usize, visibility_ms, now_ms)),
        SqsRequest::Delete { queue, handles } => entries(model.delete_batch(&queue, &handles, now_ms)),
        SqsRequest::ChangeVisibility {
            queue,
            handles,
            visibility_ms,
        } => entries(model.change_visibility_batch(&queue, &handles, visibility_ms, now_ms)),
        SqsRequest::Stats { queue } => model
            .stats(&queue, now_ms)
            .map_or_else(|e| SqsReply::Failed(e.into()), SqsReply::Stats),
    }
}

/// A queue on the simulated SQS host, as the protocol code sees it.
#[derive(Debug)]
pub struct SimQueue {
    caller: Caller,
    name: String,
    attrs: QueueAttrs,
}

fn lost(e: Lost) -> QueueError {
    match e {
        Lost::Unknown { code, message } => QueueError::Retryable {
            code: code.into(),
            message,
        },
        Lost::TooLarge(len) => QueueError::Permanent {
            code: "RequestTooLarge".into(),
            message: format!("a {len}-byte request is over the simulator's frame limit"),
        },
    }
}

fn unexpected(reply: SqsReply) -> QueueError {
    match reply {
        SqsReply::Failed(e) => e.into(),
        other => QueueError::Permanent {
            code: "UnexpectedReply".into(),
            message: format!("{other:?}"),
        },
    }
}

impl SimQueue {
    /// The queue `name` with `attrs` on the SQS host `rpc.host`.
    pub fn new(rpc: RpcConfig, name: &str, attrs: QueueAttrs) -> Self {
        Self {
            caller: Caller::new(rpc, SQS_PORT),
            name: name.into(),
            attrs,
        }
    }

    /// The attributes [`Queue::ensure`] creates the queue with.
    pub fn attrs(&self) -> &QueueAttrs {
        &self.attrs
    }

    /// Delete the queue and everything in it (an operator's mistake).
    pub async fn delete_queue(&self) -> Result<(), QueueError> {
        match self
            .call(
                SqsRequest::DeleteQueue {
                    queue: Cow::Borrowed(&self.name),
                },
                0,
            )
            .await?
        {
            SqsReply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn call(&self, request: SqsRequest<'_>, wait_ms: u64) -> Result<SqsReply, QueueError> {
        self.caller.call(&request, wait_ms).await.map_err(lost)
    }

    async fn call_entries(&self, request: SqsRequest<'_>) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        match self.call(request, 0).await? {
            SqsReply::Entries(statuses) => Ok(from_wire_statuses(statuses)),
            other => Err(unexpected(other)),
        }
    }
}

#[async_trait]
impl Queue for SimQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ensure(&self) -> Result<(), QueueError> {
        let request = SqsRequest::Ensure {
            queue: Cow::Borrowed(&self.name),
            attrs: self.attrs.clone(),
        };
        match self.call(request, 0).await? {
            SqsReply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.call_entries(SqsRequest::Send {
            queue: Cow::Borrowed(&self.name),
            bodies: Cow::Borrowed(bodies),
        })
        .await
    }

    async fn receive(&self, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Received>, QueueError> {
        let wait_ms = wait_ms.min(WAIT_MAX_MS);
        let request = SqsRequest::Receive {
            queue: Cow::Borrowed(&self.name),
            max: u32::try_from(max).unwrap_or(u32::MAX),
            visibility_ms,
            wait_ms,
        };
        match self.call(request, wait_ms).await? {
            SqsReply::Received(got) => Ok(got.into_iter().map(Into::into).collect()),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_batch(&self, handles: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.call_entries(SqsRequest::Delete {
            queue: Cow::Borrowed(&self.name),
            handles: Cow::Borrowed(handles),
        })
        .await
    }

    async fn change_visibility_batch(
        &self,
        handles: &[String],
        visibility_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.call_entries(SqsRequest::ChangeVisibility {
            queue: Cow::Borrowed(&self.name),
            handles: Cow::Borrowed(handles),
            visibility_ms,
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        match self
            .call(
                SqsRequest::Stats {
                    queue: Cow::Borrowed(&self.name),
                },
                0,
            )
            .await?
        {
            SqsReply::Stats(stats) => Ok(stats),
            other => Err(unexpected(other)),
        }
    }
}
