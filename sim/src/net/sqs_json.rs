//! The SQS host's front end for the AWS SDK: SQS's JSON protocol
//! (`awsJson1_0`, `X-Amz-Target: AmazonSQS.<Action>`), translated to the
//! model's requests, and the model's answers translated back, errors
//! included, as the SQS API Reference documents them.
//!
//! Errors carry the JSON error shape (`__type`) and, as SQS does for
//! clients of its older query protocol, the `x-amzn-query-error` header
//! with the query error code (`AWS.SimpleQueueService.NonExistentQueue`,
//! `OverLimit`, ...), which the SDK reports as the error's code. Per-entry
//! failures of batch actions carry `SenderFault`. MD5 digests of bodies
//! are left out: the SDK neither checks nor needs them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use tally::core::{QueueError, QueueStats};

use super::http::{HttpFrame, HttpReply};
use super::queue::{SqsReply, SqsRequest};
use super::wire::WireStatuses;
use crate::hosts::sqs::RETENTION_DEFAULT_MS;
use crate::hosts::QueueAttrs;

/// The account id in the simulated cloud's queue URLs and ARNs.
const ACCOUNT: &str = "000000000000";

/// What an answer must say besides the model's reply.
#[derive(Debug)]
pub(crate) enum Op {
    CreateQueue {
        url: String,
    },
    GetQueueUrl {
        url: String,
    },
    QueueArn {
        arn: String,
    },
    Stats,
    DeleteQueue,
    Receive,
    /// A batch action: the entries' ids, in order.
    Batch {
        ids: Vec<String>,
        send: bool,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Input {
    queue_url: Option<String>,
    queue_name: Option<String>,
    entries: Vec<Entry>,
    max_number_of_messages: Option<u32>,
    visibility_timeout: Option<u64>,
    wait_time_seconds: Option<u64>,
    attribute_names: Vec<String>,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Entry {
    id: String,
    message_body: Option<String>,
    receipt_handle: Option<String>,
    visibility_timeout: Option<u64>,
}

/// A client error answered before the model is asked.
fn refuse(shape: &str, message: impl Into<String>) -> HttpReply {
    error_reply(400, shape, Some(shape), &message.into())
}

fn error_reply(status: u16, shape: &str, query_code: Option<&str>, message: &str) -> HttpReply {
    let body = json!({"__type": format!("com.amazonaws.sqs#{shape}"), "message": message});
    let mut headers = vec![("content-type", "application/x-amz-json-1.0".to_owned())];
    if let Some(code) = query_code {
        let fault = if status >= 500 { "Receiver" } else { "Sender" };
        headers.push(("x-amzn-query-error", format!("{code};{fault}")));
    }
    HttpReply::new(status, headers, body.to_string().into_bytes())
}

fn ok_reply(body: &Value) -> HttpReply {
    HttpReply::new(
        200,
        vec![("content-type", "application/x-amz-json-1.0".to_owned())],
        body.to_string().into_bytes(),
    )
}

/// The queue a queue URL names: its last path segment.
fn queue_of(input: &Input) -> Result<String, HttpReply> {
    match input.queue_url.as_deref().and_then(|u| u.rsplit('/').next()) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(refuse("InvalidAddress", "QueueUrl is missing or malformed")),
    }
}

fn name_of(input: &Input) -> Result<String, HttpReply> {
    match input.queue_name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(refuse("InvalidParameterValue", "QueueName is missing")),
    }
}

fn url(frame: &HttpFrame, queue: &str) -> String {
    let host = frame.header("host").unwrap_or("sqs");
    format!("http://{host}/{ACCOUNT}/{queue}")
}

fn arn(queue: &str) -> String {
    format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{queue}")
}

/// A queue's attributes from CreateQueue's, with SQS's defaults (30 s
/// visibility, 4 days' retention) for those not given.
fn attrs_of(input: &Input) -> Result<QueueAttrs, HttpReply> {
    let seconds = |name: &str, default_ms: u64| -> Result<u64, HttpReply> {
        match input.attributes.get(name) {
            None => Ok(default_ms),
            Some(v) => v
                .parse::<u64>()
                .map(|s| s * 1000)
                .map_err(|_| refuse("InvalidAttributeValue", format!("{name} {v:?} is not a number"))),
        }
    };
    let mut attrs = QueueAttrs {
        visibility_ms: seconds("VisibilityTimeout", 30_000)?,
        retention_ms: seconds("MessageRetentionPeriod", RETENTION_DEFAULT_MS)?,
        ..QueueAttrs::default()
    };
    if let Some(policy) = input.attributes.get("RedrivePolicy") {
        let bad = || {
            refuse(
                "InvalidAttributeValue",
                format!("RedrivePolicy {policy:?} is malformed"),
            )
        };
        let v: Value = serde_json::from_str(policy).map_err(|_| bad())?;
        let target = v["deadLetterTargetArn"].as_str().and_then(|a| a.rsplit(':').next());
        let max = match &v["maxReceiveCount"] {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let (Some(target), Some(max)) = (target, max.and_then(|m| u32::try_from(m).ok())) else {
            return Err(bad());
        };
        attrs.dead_letter = Some(target.to_owned());
        attrs.max_receives = Some(max);
    }
    Ok(attrs)
}

/// The model's request and what its answer must say, for an SDK request.
pub(crate) fn decode(frame: &HttpFrame) -> Result<(SqsRequest<'static>, Op), HttpReply> {
    let action = frame
        .header("x-amz-target")
        .and_then(|t| t.strip_prefix("AmazonSQS."))
        .ok_or_else(|| refuse("InvalidAction", "X-Amz-Target names no SQS action"))?;
    let input: Input = serde_json::from_slice(&frame.body)
        .map_err(|e| refuse("InvalidParameterValue", format!("malformed JSON: {e}")))?;
    match action {
        "CreateQueue" | "GetQueueUrl" | "GetQueueAttributes" | "DeleteQueue" => decode_queue(action, frame, &input),
        _ => decode_messages(action, input),
    }
}

/// Actions on a queue itself.
fn decode_queue(action: &str, frame: &HttpFrame, input: &Input) -> Result<(SqsRequest<'static>, Op), HttpReply> {
    Ok(match action {
        "CreateQueue" => {
            let queue = name_of(input)?;
            let op = Op::CreateQueue {
                url: url(frame, &queue),
            };
            let attrs = attrs_of(input)?;
            (
                SqsRequest::Ensure {
                    queue: queue.into(),
                    attrs,
                },
                op,
            )
        }
        "GetQueueUrl" => {
            let queue = name_of(input)?;
            let op = Op::GetQueueUrl {
                url: url(frame, &queue),
            };
            (SqsRequest::Lookup { queue: queue.into() }, op)
        }
        "GetQueueAttributes" => {
            let queue = queue_of(input)?;
            if input.attribute_names.iter().any(|n| n == "QueueArn") {
                let op = Op::QueueArn { arn: arn(&queue) };
                (SqsRequest::Lookup { queue: queue.into() }, op)
            } else {
                (SqsRequest::Stats { queue: queue.into() }, Op::Stats)
            }
        }
        _ => (
            SqsRequest::DeleteQueue {
                queue: queue_of(input)?.into(),
            },
            Op::DeleteQueue,
        ),
    })
}

/// Actions on messages.
fn decode_messages(action: &str, input: Input) -> Result<(SqsRequest<'static>, Op), HttpReply> {
    let queue: Cow<'static, str> = queue_of(&input)?.into();
    let ids: Vec<String> = input.entries.iter().map(|e| e.id.clone()).collect();
    let visibility_s = input.entries.first().and_then(|e| e.visibility_timeout).unwrap_or(0);
    let field = |pick: fn(Entry) -> Option<String>| -> Vec<String> {
        input.entries.into_iter().map(|e| pick(e).unwrap_or_default()).collect()
    };
    Ok(match action {
        "SendMessageBatch" => {
            let bodies = Cow::Owned(field(|e| e.message_body));
            (SqsRequest::Send { queue, bodies }, Op::Batch { ids, send: true })
        }
        "ReceiveMessage" => {
            let request = SqsRequest::Receive {
                queue,
                max: input.max_number_of_messages.unwrap_or(1),
                visibility_ms: input.visibility_timeout.unwrap_or(30) * 1000,
                wait_ms: input.wait_time_seconds.unwrap_or(0) * 1000,
            };
            (request, Op::Receive)
        }
        "DeleteMessageBatch" => {
            let handles = Cow::Owned(field(|e| e.receipt_handle));
            (SqsRequest::Delete { queue, handles }, Op::Batch { ids, send: false })
        }
        "ChangeMessageVisibilityBatch" => {
            let request = SqsRequest::ChangeVisibility {
                queue,
                handles: Cow::Owned(field(|e| e.receipt_handle)),
                visibility_ms: visibility_s * 1000,
            };
            (request, Op::Batch { ids, send: false })
        }
        other => {
            return Err(refuse(
                "InvalidAction",
                format!("the simulated SQS does not serve {other}"),
            ))
        }
    })
}

/// The SDK's answer for the model's `reply` to a request decoded as `op`.
pub(crate) fn encode(op: &Op, reply: SqsReply) -> HttpReply {
    match (op, reply) {
        (_, SqsReply::Failed(e)) => queue_error(&e.into()),
        (Op::CreateQueue { url } | Op::GetQueueUrl { url }, SqsReply::Done) => ok_reply(&json!({"QueueUrl": url})),
        (Op::QueueArn { arn }, SqsReply::Done) => ok_reply(&json!({"Attributes": {"QueueArn": arn}})),
        (Op::DeleteQueue, SqsReply::Done) => ok_reply(&json!({})),
        (Op::Stats, SqsReply::Stats(stats)) => ok_reply(&stats_json(&stats)),
        (Op::Receive, SqsReply::Received(got)) => {
            let messages: Vec<Value> = got
                .into_iter()
                .map(|m| {
                    let m = tally::core::Received::from(m);
                    json!({
                        "MessageId": m.message_id,
                        "ReceiptHandle": m.handle,
                        "Body": m.body,
                        "Attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                    })
                })
                .collect();
            ok_reply(&json!({ "Messages": messages }))
        }
        (Op::Batch { ids, send }, SqsReply::Entries(statuses)) => ok_reply(&batch_json(ids, *send, statuses)),
        (op, other) => error_reply(500, "InternalError", None, &format!("{op:?} got {other:?}")),
    }
}

fn stats_json(stats: &QueueStats) -> Value {
    json!({"Attributes": {
        "ApproximateNumberOfMessages": stats.visible.to_string(),
        "ApproximateNumberOfMessagesNotVisible": stats.in_flight.to_string(),
        "ApproximateNumberOfMessagesDelayed": "0",
    }})
}

fn batch_json(ids: &[String], send: bool, statuses: WireStatuses) -> Value {
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for (id, status) in ids.iter().zip(super::wire::from_wire_statuses(statuses)) {
        match status {
            Ok(()) if send => successful.push(json!({"Id": id, "MessageId": format!("{id}-sent")})),
            Ok(()) => successful.push(json!({ "Id": id })),
            Err(e) => failed.push(json!({
                "Id": id,
                "SenderFault": !e.retryable,
                "Code": e.code,
                "Message": e.message,
            })),
        }
    }
    json!({"Successful": successful, "Failed": failed})
}

/// How SQS answers a whole call's failure: (status, error shape, query
/// code), from the actions' Errors sections in the SQS API Reference.
fn queue_error(e: &QueueError) -> HttpReply {
    let (code, message) = match e {
        QueueError::Missing { code, queue } => (code.as_str(), format!("The specified queue {queue} does not exist.")),
        QueueError::DeletedRecently { code, queue, .. } => (
            code.as_str(),
            format!(
                "You must wait 60 seconds after deleting a queue before you can create another with the name {queue}."
            ),
        ),
        QueueError::Retryable { code, message } | QueueError::Permanent { code, message } => {
            (code.as_str(), message.clone())
        }
    };
    let short = code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code);
    let (status, shape, query) = match short {
        "NonExistentQueue" => (400, "QueueDoesNotExist", code),
        "QueueDeletedRecently" => (400, "QueueDeletedRecently", code),
        "OverLimit" => (403, "OverLimit", "OverLimit"),
        "PurgeQueueInProgress" => (403, "PurgeQueueInProgress", code),
        "QueueAlreadyExists" => (400, "QueueNameExists", "QueueAlreadyExists"),
        "RequestThrottled" => (400, "RequestThrottled", "RequestThrottled"),
        "InternalError" => return error_reply(500, "InternalFailure", None, &message),
        "ServiceUnavailable" => return error_reply(503, "ServiceUnavailable", None, &message),
        _ => (400, short, code),
    };
    error_reply(status, shape, Some(query), &message)
}
