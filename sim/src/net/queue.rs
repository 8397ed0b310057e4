//! The SQS host's serving loop, and [`SimQueue`], the protocol's client.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tally::core::{EntryError, Queue, QueueError, QueueStats, Received};
use tokio::sync::Notify;
use turmoil::net::UdpSocket;

use super::http::HttpFrame;
use super::rpc::{self, Caller, Lost};
use super::sqs_json;
use super::wire::{from_wire_statuses, to_wire_statuses, WireQueueError, WireReceived, WireStatuses};
use super::{RpcConfig, SharedSqs, SQS_HTTP_PORT, SQS_PORT, WAIT_MAX_MS};
use crate::doubles::clock::sim_now_ms;
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

fn received(result: Result<Vec<Received>, QueueError>) -> SqsReply {
    result.map_or_else(
        |e| SqsReply::Failed(e.into()),
        |got| SqsReply::Received(got.into_iter().map(Into::into).collect()),
    )
}

/// Apply one request to the model at `now_ms`.
fn apply(model: &mut SqsModel, request: SqsRequest<'_>, now_ms: u64) -> SqsReply {
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

/// Where an answer goes, and in which protocol: the direct RPC's reply,
/// or the SDK's HTTP answer for the action it asked.
struct Respond {
    socket: Rc<UdpSocket>,
    from: SocketAddr,
    id: u64,
    http: Option<sqs_json::Op>,
}

impl Respond {
    fn send(self, reply: SqsReply) {
        match &self.http {
            None => rpc::reply(&self.socket, self.from, self.id, &reply),
            Some(op) => rpc::reply(&self.socket, self.from, self.id, &sqs_json::encode(op, reply)),
        }
    }
}

/// Serve `model` on [`SQS_PORT`] (the direct RPC) and [`SQS_HTTP_PORT`]
/// (the AWS SDK's JSON protocol) of the current host until the host stops.
/// Use as a host's software: `sim.host("sqs", move || serve_sqs(model.clone()))`.
pub async fn serve_sqs(model: SharedSqs) -> turmoil::Result {
    let socket = Rc::new(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, SQS_PORT)).await?);
    let http = Rc::new(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, SQS_HTTP_PORT)).await?);
    // Per queue: wakes its parked long polls when messages may have become
    // visible there.
    let mut changes: BTreeMap<String, Rc<Notify>> = BTreeMap::new();
    loop {
        let (request, respond) = tokio::select! {
            biased;
            got = rpc::recv_frame::<SqsRequest<'static>>(&socket) => {
                let (frame, from) = got?;
                let respond = Respond { socket: Rc::clone(&socket), from, id: frame.id, http: None };
                (frame.body, respond)
            }
            got = rpc::recv_frame::<HttpFrame>(&http) => {
                let (frame, from) = got?;
                match sqs_json::decode(&frame.body) {
                    Ok((request, op)) => {
                        (request, Respond { socket: Rc::clone(&http), from, id: frame.id, http: Some(op) })
                    }
                    Err(refused) => {
                        rpc::reply(&http, from, frame.id, &refused);
                        continue;
                    }
                }
            }
        };
        serve_one(&model, &mut changes, request, respond);
    }
}

/// Answer one request, or park it if it is a long poll.
fn serve_one(
    model: &SharedSqs,
    changes: &mut BTreeMap<String, Rc<Notify>>,
    request: SqsRequest<'static>,
    respond: Respond,
) {
    match request {
        SqsRequest::Receive {
            queue,
            max,
            visibility_ms,
            wait_ms,
        } if wait_ms > 0 => {
            let poll = LongPoll {
                model: Rc::clone(model),
                changes: Rc::clone(changes.entry(queue.to_string()).or_default()),
                respond,
                queue: queue.into_owned(),
                max: max as usize,
                visibility_ms,
                deadline_ms: sim_now_ms() + wait_ms.min(WAIT_MAX_MS),
            };
            tokio::task::spawn_local(poll.run());
        }
        request => {
            // A parked poll must hear of new messages, and of its queue's
            // end. A send wakes one poll per message at most (a woken
            // poll takes up to ten): waking every poll of a busy queue
            // on every send would cost more than the sends.
            let wake = match &request {
                SqsRequest::Send { queue, bodies } => Some((queue.to_string(), Some(bodies.len()))),
                SqsRequest::ChangeVisibility { queue, .. } | SqsRequest::DeleteQueue { queue } => {
                    Some((queue.to_string(), None))
                }
                _ => None,
            };
            let reply = apply(&mut model.borrow_mut(), request, sim_now_ms());
            if let Some((queue, count)) = wake {
                if let Some(polls) = changes.get(&queue) {
                    match count {
                        Some(n) => (0..n).for_each(|_| polls.notify_one()),
                        None => polls.notify_waiters(),
                    }
                }
            }
            respond.send(reply);
        }
    }
}

/// How often a parked long poll looks again without being woken, so that
/// changes made to the model directly (a fault injector deleting a queue
/// outside any host) are seen within this time.
const RECHECK_MS: u64 = 1_000;

/// A receive waiting inside the host for a message to become visible.
struct LongPoll {
    model: SharedSqs,
    changes: Rc<Notify>,
    respond: Respond,
    queue: String,
    max: usize,
    visibility_ms: u64,
    deadline_ms: u64,
}

impl LongPoll {
    async fn run(self) {
        loop {
            let changed = self.changes.notified();
            let now_ms = sim_now_ms();
            // A long poll's look: at the in-flight limit it finds nothing
            // rather than failing, as on SQS.
            let result = self
                .model
                .borrow_mut()
                .receive_long(&self.queue, self.max, self.visibility_ms, now_ms);
            let empty = matches!(&result, Ok(got) if got.is_empty());
            if !empty || now_ms >= self.deadline_ms {
                self.respond.send(received(result));
                return;
            }
            let next_ms = self
                .model
                .borrow_mut()
                .next_visible_ms(&self.queue, now_ms)
                .unwrap_or(self.deadline_ms)
                .min(now_ms + RECHECK_MS)
                .clamp(now_ms + 1, self.deadline_ms);
            tokio::select! {
                biased;
                () = changed => {}
                () = tokio::time::sleep(Duration::from_millis(next_ms - now_ms)) => {}
            }
        }
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
