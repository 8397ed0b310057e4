//! The S3 host's front end for the AWS SDK: S3's REST/XML protocol with
//! path-style addressing (`/<bucket>/<key>`), for the calls tally makes:
//! PutObject with `If-None-Match: *`, GetObject, ListObjectsV2 with
//! continuation tokens, and HeadBucket. Errors are S3's XML error bodies
//! with its status codes (S3 API Reference, "Error responses"): 412
//! `PreconditionFailed` for a create-only write to a taken key, 409
//! `ConditionalRequestConflict`, 503 `SlowDown`, 500 `InternalError`, 404
//! `NoSuchKey`. The model has one bucket; any bucket name reaches it.

use super::http::{HttpFrame, HttpReply};
use super::store::{S3Reply, S3Request};
use crate::hosts::LIST_PAGE_MAX;

/// What an answer must say besides the model's reply.
#[derive(Debug)]
pub(crate) enum Op {
    Put,
    Get,
    List { prefix: String, max: usize },
}

/// `%XX` escapes decoded (S3 keys and query values arrive escaped).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A continuation token: the last key of the page, hex-encoded (opaque to
/// the client, as S3's are).
fn token_of(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn key_of_token(token: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

fn error_reply(status: u16, code: &str, message: &str) -> HttpReply {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><RequestId>sim</RequestId></Error>",
        escape_xml(message)
    );
    HttpReply::new(
        status,
        vec![("content-type", "application/xml".to_owned())],
        body.into_bytes(),
    )
}

/// The model's request and what its answer must say, for an SDK request;
/// `Err` is an answer given at once (HeadBucket's, or a refusal).
pub(crate) fn decode(frame: HttpFrame) -> Result<(S3Request, Op), HttpReply> {
    let (path, query) = frame.target.split_once('?').unwrap_or((frame.target.as_str(), ""));
    let path = path.trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(error_reply(400, "InvalidBucketName", "the request names no bucket"));
    }
    let key = unescape(key);
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match (frame.method.as_str(), key.is_empty()) {
        ("HEAD", true) => Err(HttpReply::new(200, Vec::new(), Vec::new())),
        ("PUT", false) if frame.header("if-none-match") == Some("*") => {
            Ok((S3Request::Put { key, bytes: frame.body }, Op::Put))
        }
        ("PUT", false) => Err(error_reply(
            501,
            "NotImplemented",
            "the simulated S3 takes create-only writes (If-None-Match: *) only",
        )),
        ("GET", false) => Ok((S3Request::Get { key }, Op::Get)),
        ("GET", true) if param("list-type").as_deref() == Some("2") => {
            let prefix = param("prefix").unwrap_or_default();
            let max = param("max-keys")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(LIST_PAGE_MAX)
                .clamp(1, LIST_PAGE_MAX);
            let after = match param("continuation-token") {
                None => None,
                Some(t) => match key_of_token(&t) {
                    Some(k) => Some(k),
                    None => {
                        return Err(error_reply(
                            400,
                            "InvalidArgument",
                            "The continuation token provided is incorrect",
                        ))
                    }
                },
            };
            let request = S3Request::ListPage {
                prefix: prefix.clone(),
                after,
                max: max as u32,
            };
            Ok((request, Op::List { prefix, max }))
        }
        (method, _) => Err(error_reply(
            501,
            "NotImplemented",
            &format!("the simulated S3 does not serve {method} {}", frame.target),
        )),
    }
}

/// The SDK's answer for the model's `reply` to a request decoded as `op`.
pub(crate) fn encode(op: &Op, reply: S3Reply) -> HttpReply {
    match (op, reply) {
        (_, S3Reply::Failed(e)) => store_error(&e.into()),
        (Op::Put, S3Reply::Put { created: true }) => {
            HttpReply::new(200, vec![("etag", "\"sim\"".to_owned())], Vec::new())
        }
        // S3 User Guide, "Conditional writes": a PUT with If-None-Match
        // on a key that exists fails with 412 Precondition Failed.
        (Op::Put, S3Reply::Put { created: false }) => error_reply(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        ),
        (Op::Get, S3Reply::Got(Some(bytes))) => HttpReply::new(
            200,
            vec![("content-type", "application/octet-stream".to_owned())],
            bytes,
        ),
        (Op::Get, S3Reply::Got(None)) => error_reply(404, "NoSuchKey", "The specified key does not exist."),
        (Op::List { prefix, max }, S3Reply::Page { keys, next_after }) => list_reply(prefix, *max, &keys, next_after),
        (op, other) => error_reply(500, "InternalError", &format!("{op:?} got {other:?}")),
    }
}

fn list_reply(prefix: &str, max: usize, keys: &[String], next_after: Option<String>) -> HttpReply {
    use std::fmt::Write;
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    let _ = write!(
        xml,
        "<Name>tally</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max}</MaxKeys><IsTruncated>{}</IsTruncated>",
        escape_xml(prefix),
        keys.len(),
        next_after.is_some()
    );
    if let Some(next) = &next_after {
        let _ = write!(xml, "<NextContinuationToken>{}</NextContinuationToken>", token_of(next));
    }
    for key in keys {
        let _ = write!(
            xml,
            "<Contents><Key>{}</Key><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents>",
            escape_xml(key)
        );
    }
    xml.push_str("</ListBucketResult>");
    HttpReply::new(
        200,
        vec![("content-type", "application/xml".to_owned())],
        xml.into_bytes(),
    )
}

/// S3's status for a failure the model gives.
fn store_error(e: &tally::core::StoreError) -> HttpReply {
    let (retryable, code, message) = match e {
        tally::core::StoreError::Retryable { code, message } => (true, code, message),
        tally::core::StoreError::Permanent { code, message } => (false, code, message),
    };
    let status = match code.as_str() {
        "SlowDown" | "ServiceUnavailable" => 503,
        "ConditionalRequestConflict" => 409,
        _ if retryable => 500,
        _ => 400,
    };
    error_reply(status, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_tokens_round_trip() {
        assert_eq!(unescape("sweeps%2Fa%20b/c"), "sweeps/a b/c");
        assert_eq!(unescape("100%"), "100%");
        let key = "sweeps/x/segments/0001 & <é>";
        assert_eq!(key_of_token(&token_of(key)).as_deref(), Some(key));
        assert_eq!(key_of_token("zz"), None);
    }
}
