//! The SQS host's serving loop: the direct RPC and the AWS SDK's JSON
//! protocol on two ports, one model, long polls parked in the host.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;
use turmoil::net::UdpSocket;

use super::http::HttpFrame;
use super::queue::{apply, received, SqsReply, SqsRequest};
use super::rpc;
use super::sqs_json;
use super::{SharedSqs, SQS_HTTP_PORT, SQS_PORT, WAIT_MAX_MS};
use crate::doubles::clock::sim_now_ms;

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
