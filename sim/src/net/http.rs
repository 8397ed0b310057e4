//! The AWS SDK inside the simulation: an HTTP client for the SDK that
//! carries each request over the simulated network, and SDK clients set up
//! so that nothing in them reads real time, retries on its own, caches or
//! runs in the background.
//!
//! A request travels as one datagram to the `sqs` or `s3` host (the port
//! says which front end answers: [`super::SQS_HTTP_PORT`],
//! [`super::S3_HTTP_PORT`]), with the same timeout as the direct RPC, so a
//! lost request, a lost reply, a partition or a crashed host reaches the
//! SDK as a connector timeout, as a dead TCP connection would in
//! production. The hosts answer in the wire protocols the SDK speaks
//! (`sqs_json`, `s3_rest`).
//!
//! The SDK is configured for determinism: the simulation's clock as time
//! source (SigV4 signs with it), turmoil's virtual time for sleeps, retries
//! off (tally's retry layer decides, as it does in production, where the
//! SDK's own retries are its first layer), no operation timeouts (the
//! transport's timeout stands for the network's), no stalled-stream
//! watchdog, no identity cache, no clock-skew correction, and invocation
//! ids drawn from a seeded generator instead of a thread-local random one.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use serde::{Deserialize, Serialize};

use super::rpc::{Caller, Lost};
use super::{RpcConfig, S3_HTTP_PORT, SQS_HTTP_PORT, WAIT_MAX_MS};
use crate::doubles::clock::{epoch, sim_now_ms};

/// An HTTP request as it crosses the simulated network.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HttpFrame {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl HttpFrame {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// An HTTP answer as it crosses the simulated network.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl HttpReply {
    /// An answer with `status`, headers and body.
    pub fn new(status: u16, headers: Vec<(&str, String)>, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: headers.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
            body,
        }
    }
}

/// The SDK's HTTP client in the simulation.
#[derive(Clone, Debug)]
pub struct SimHttpClient {
    connector: SharedHttpConnector,
}

impl SimHttpClient {
    /// Reach the SQS front end through `sqs` and the S3 front end through
    /// `s3` (their hosts and timeouts).
    pub fn new(sqs: RpcConfig, s3: RpcConfig) -> Self {
        Self {
            connector: SharedHttpConnector::new(SimConnector {
                sqs: Arc::new(Caller::new(sqs, SQS_HTTP_PORT)),
                s3: Arc::new(Caller::new(s3, S3_HTTP_PORT)),
            }),
        }
    }
}

impl HttpClient for SimHttpClient {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        self.connector.clone()
    }
}

struct SimConnector {
    sqs: Arc<Caller>,
    s3: Arc<Caller>,
}

impl fmt::Debug for SimConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimConnector")
    }
}

impl HttpConnector for SimConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let port = request.uri().split('/').nth(2).and_then(|a| a.rsplit(':').next());
        let caller = match port.and_then(|p| p.parse::<u16>().ok()) {
            Some(SQS_HTTP_PORT) => Arc::clone(&self.sqs),
            Some(S3_HTTP_PORT) => Arc::clone(&self.s3),
            _ => {
                let uri = request.uri().to_owned();
                return HttpConnectorFuture::ready(Err(ConnectorError::io(
                    format!("{uri}: no simulated host answers there").into(),
                )));
            }
        };
        HttpConnectorFuture::new(async move { send(&caller, request).await })
    }
}

async fn send(caller: &Caller, mut request: HttpRequest) -> Result<Response<SdkBody>, ConnectorError> {
    // Every call is its own datagram exchange: there is no connection to
    // keep or poison, but the SDK asks for one after a failure.
    if let Some(capture) = request.extension::<CaptureSmithyConnection>() {
        capture
            .set_connection_retriever(|| Some(ConnectionMetadata::builder().proxied(false).poison_fn(|| {}).build()));
    }
    let body = ByteStream::new(request.take_body())
        .collect()
        .await
        .map_err(|e| ConnectorError::user(e.into()))?
        .to_vec();
    let target = match request.uri().splitn(4, '/').nth(3) {
        Some(rest) => format!("/{rest}"),
        None => "/".to_owned(),
    };
    let frame = HttpFrame {
        method: request.method().to_owned(),
        target,
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
            .collect(),
        body,
    };
    // A long poll holds its request open for up to 20 s, as the SDK's
    // attempt timeout allows in production.
    let wait_ms = if frame.header("x-amz-target") == Some("AmazonSQS.ReceiveMessage") {
        WAIT_MAX_MS
    } else {
        0
    };
    let reply: HttpReply = caller.call(&frame, wait_ms).await.map_err(|e| match e {
        Lost::Unknown { code, message } => {
            note_answer(format!("Retryable: no answer ({code})"));
            ConnectorError::timeout(format!("{code}: {message}").into())
        }
        Lost::TooLarge(len) => ConnectorError::user(format!("a {len}-byte request is over the frame limit").into()),
    })?;
    note_reply(&reply);
    let status = StatusCode::try_from(reply.status).map_err(|e| ConnectorError::other(e.into(), None))?;
    let mut response = Response::new(status, SdkBody::from(reply.body));
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

thread_local! {
    /// The answers the SDK got in this thread's run, by the branch of the
    /// adapter's error classification each one takes (a simulation runs
    /// on one thread; [`take_sdk_answers`] empties it).
    static ANSWERS: std::cell::RefCell<std::collections::BTreeMap<String, u64>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

fn note_answer(branch: String) {
    ANSWERS.with_borrow_mut(|a| *a.entry(branch).or_default() += 1);
}

/// The error answers the AWS SDK received since the last call, by the
/// branch of `tally::adapters::aws::classify_code` each takes (`class:
/// code status`), with batch entries' failures (`entry sender-fault:
/// code`, `entry retryable: code`) and transport losses.
pub fn take_sdk_answers() -> std::collections::BTreeMap<String, u64> {
    ANSWERS.with_borrow_mut(std::mem::take)
}

/// Note which branch of the adapter's classification `reply` takes.
fn note_reply(reply: &HttpReply) {
    // Only errors and SQS's JSON answers (which carry batch entries'
    // failures) are read: an object's bytes are never looked at.
    let sqs_json = reply
        .headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("application/x-amz-json"));
    if reply.status < 300 && !sqs_json {
        return;
    }
    let text = String::from_utf8_lossy(&reply.body);
    if reply.status >= 300 {
        let query = reply
            .headers
            .iter()
            .find(|(n, _)| n == "x-amzn-query-error")
            .and_then(|(_, v)| v.split(';').next());
        let xml = text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(c, _)| c);
        let json = text
            .split_once("#")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(c, _)| c);
        let code = query.or(xml).or(json).unwrap_or("");
        let class = tally::adapters::aws::classify_code(code, Some(reply.status));
        note_answer(format!("{class:?}: {code} {}", reply.status));
        return;
    }
    if !text.contains("\"Failed\":[{") {
        return;
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        for f in v["Failed"].as_array().into_iter().flatten() {
            let kind = if f["SenderFault"].as_bool() == Some(true) {
                "sender-fault"
            } else {
                "retryable"
            };
            note_answer(format!("entry {kind}: {}", f["Code"].as_str().unwrap_or("")));
        }
    }
}

/// The simulation's clock, for signing.
#[derive(Debug)]
struct SimTime;

impl aws_smithy_async::time::TimeSource for SimTime {
    fn now(&self) -> SystemTime {
        epoch() + Duration::from_millis(sim_now_ms())
    }
}

/// Invocation ids from a counter: the SDK's default draws them from a
/// thread-local random generator.
#[derive(Debug, Default)]
struct CountedIds(AtomicU64);

impl aws_runtime::invocation_id::InvocationIdGenerator for CountedIds {
    fn generate(
        &self,
    ) -> Result<Option<aws_runtime::invocation_id::InvocationId>, aws_smithy_runtime_api::box_error::BoxError> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        let id = format!("00000000-0000-4000-8000-{n:012x}");
        Ok(Some(aws_runtime::invocation_id::InvocationId::new(id)))
    }
}

/// Region, credentials and endpoints of the simulated cloud.
const REGION: &str = "us-east-1";

/// SQS and S3 clients that reach the simulated hosts through the SDK.
pub fn sdk_clients(http: &SimHttpClient, sqs_host: &str, s3_host: &str) -> (aws_sdk_sqs::Client, aws_sdk_s3::Client) {
    use aws_sdk_sqs::config as c;
    // What both clients share: everything that could read real time,
    // retry, cache or wait on its own, simulated or turned off.
    let shared = aws_types::SdkConfig::builder()
        .behavior_version(c::BehaviorVersion::latest())
        .region(c::Region::new(REGION))
        .credentials_provider(c::SharedCredentialsProvider::new(c::Credentials::new(
            "sim",
            "sim",
            None,
            None,
            "simulation",
        )))
        .http_client(http.clone())
        .time_source(SimTime)
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .retry_config(c::retry::RetryConfig::disabled())
        .timeout_config(c::timeout::TimeoutConfig::disabled())
        .stalled_stream_protection(c::StalledStreamProtectionConfig::disabled())
        .identity_cache(c::IdentityCache::no_cache())
        .disable_clock_skew_correction(true)
        .build();
    let sqs = aws_sdk_sqs::config::Builder::from(&shared)
        .endpoint_url(format!("http://{sqs_host}:{SQS_HTTP_PORT}"))
        .invocation_id_generator(CountedIds::default())
        .build();
    let s3 = aws_sdk_s3::config::Builder::from(&shared)
        .endpoint_url(format!("http://{s3_host}:{S3_HTTP_PORT}"))
        .force_path_style(true)
        .invocation_id_generator(CountedIds::default())
        .build();
    (aws_sdk_sqs::Client::from_conf(sqs), aws_sdk_s3::Client::from_conf(s3))
}
