//! The production backend: AWS SQS queues and an S3 bucket (or any server
//! that speaks their APIs, through an endpoint URL).
//!
//! - [`queue::SqsQueue`]: one SQS standard queue behind [`crate::core::Queue`],
//!   with batching, per-entry errors, lazy queue URL resolution, recreation
//!   with its attributes, and a claim check for bodies too large for SQS.
//! - [`store::S3Store`]: a bucket (and key prefix) behind
//!   [`crate::core::BlobStore`], with create-only writes (`If-None-Match: *`).
//! - [`AwsConfig`] and [`connect`]: the SDK configuration shared by both,
//!   using AWS's standard credential chain.
//!
//! Errors are classified here, once, into tally's variants, keeping the AWS
//! error code: see [`classify`].

pub mod batch;
pub mod queue;
pub mod store;

use std::time::Duration;

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

pub use aws_sdk_sqs::config::Credentials;
pub use aws_sdk_sqs::types::QueueAttributeName;
pub use queue::{DeadLetter, SqsQueue, SqsQueueConfig};
pub use store::S3Store;

/// How to reach AWS (or a compatible server).
#[derive(Clone, Debug, Default)]
pub struct AwsConfig {
    /// The region; `None` uses the standard chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// A custom endpoint for both SQS and S3 (a local server, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Fixed credentials instead of the standard chain (tests, local servers).
    pub credentials: Option<Credentials>,
}

/// SDK clients for one [`AwsConfig`].
#[derive(Clone, Debug)]
pub struct Clients {
    /// The shared SDK configuration.
    pub sdk: aws_config::SdkConfig,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// S3; path-style addressing when a custom endpoint is set, since local
    /// servers have no per-bucket host names.
    pub s3: aws_sdk_s3::Client,
}

/// Build the SQS and S3 clients for `config`.
pub async fn clients(config: &AwsConfig) -> Clients {
    let sdk = connect(config).await;
    let s3_conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(config.endpoint_url.is_some())
        .build();
    Clients {
        sqs: aws_sdk_sqs::Client::new(&sdk),
        s3: aws_sdk_s3::Client::from_conf(s3_conf),
        sdk,
    }
}

/// Longest a long-polling receive waits on SQS, seconds.
pub const WAIT_S_MAX: u64 = 20;
/// Longest visibility timeout on SQS, seconds.
pub const VISIBILITY_S_MAX: u64 = 12 * 3600;

/// Load the SDK configuration: the standard credential chain, `config`'s
/// region and endpoint, and timeouts that fit a 20 s long poll.
pub async fn connect(config: &AwsConfig) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        // A long poll holds the connection for up to 20 s.
        .operation_attempt_timeout(Duration::from_secs(WAIT_S_MAX + 15))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(credentials) = &config.credentials {
        loader = loader.credentials_provider(credentials.clone());
    }
    loader.load().await
}

/// What a failed AWS call means to tally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// The queue does not exist.
    Missing,
    /// The queue was deleted less than 60 s ago.
    DeletedRecently,
    /// A conditional write found the key taken (412).
    PreconditionFailed,
    /// The object does not exist.
    NotFound,
    /// Transient: throttling, 5xx, timeout, connection failure, 409 conflict.
    Retryable,
    /// Retrying will not help.
    Permanent,
}

/// A classified AWS failure with the provider's code and message kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What it means.
    pub class: Class,
    /// AWS's error code, or a name for a failure before any answer
    /// (`DispatchFailure`, `TimeoutError`, ...).
    pub code: String,
    /// A human-readable description.
    pub message: String,
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "RequestLimitExceeded",
    "KmsThrottled",
    "OverLimit",
    "AWS.SimpleQueueService.OverLimit",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ConditionalRequestConflict",
    "OperationAborted",
];

/// Whether `code` is one of the throttling or transient codes AWS asks
/// clients to retry.
pub fn is_throttling(code: &str) -> bool {
    THROTTLING.contains(&code)
}

/// Classify an error code and HTTP status into what tally should do.
pub fn classify_code(code: &str, status: Option<u16>) -> Class {
    match code {
        "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue" => Class::Missing,
        "QueueDeletedRecently" | "AWS.SimpleQueueService.QueueDeletedRecently" => Class::DeletedRecently,
        "PreconditionFailed" => Class::PreconditionFailed,
        "NoSuchKey" => Class::NotFound,
        c if THROTTLING.contains(&c) => Class::Retryable,
        _ => match status {
            Some(412) => Class::PreconditionFailed,
            Some(409) | Some(429) => Class::Retryable,
            Some(s) if s >= 500 => Class::Retryable,
            _ => Class::Permanent,
        },
    }
}

/// Classify any SDK error. Failures before an answer (timeouts, connection
/// errors, an unreadable answer) are retryable: the request may or may not
/// have been applied. A request that could not even be built is permanent.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (class, code) = match err {
        SdkError::ConstructionFailure(_) => (Class::Permanent, "ConstructionFailure".to_owned()),
        SdkError::TimeoutError(_) => (Class::Retryable, "TimeoutError".to_owned()),
        SdkError::DispatchFailure(_) => (Class::Retryable, "DispatchFailure".to_owned()),
        SdkError::ResponseError(_) => (Class::Retryable, "ResponseError".to_owned()),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service
                .err()
                .code()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("Http{status}"));
            (classify_code(&code, Some(status)), code)
        }
        _ => (Class::Retryable, "Unknown".to_owned()),
    };
    let message = match err {
        SdkError::ServiceError(service) => match service.err().message() {
            Some(m) => m.to_owned(),
            None => format!("HTTP status {}", service.raw().status().as_u16()),
        },
        other => causes(other),
    };
    Failure { class, code, message }
}

/// `f`, as a planted bug in `policy` may misread it: a throttling
/// error taken for a permanent one.
pub fn misread(f: Failure, policy: crate::core::Policy) -> Failure {
    if !policy.retries_throttling() && f.class == Class::Retryable && is_throttling(&f.code) {
        return Failure {
            class: Class::Permanent,
            ..f
        };
    }
    f
}

/// An error and its causes on one line, without debug dumps.
fn causes(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_what_tally_should_do() {
        assert_eq!(
            classify_code("AWS.SimpleQueueService.NonExistentQueue", Some(400)),
            Class::Missing
        );
        assert_eq!(classify_code("QueueDoesNotExist", Some(400)), Class::Missing);
        assert_eq!(
            classify_code("AWS.SimpleQueueService.QueueDeletedRecently", Some(400)),
            Class::DeletedRecently
        );
        assert_eq!(classify_code("Unknown", Some(412)), Class::PreconditionFailed);
        assert_eq!(classify_code("ConditionalRequestConflict", Some(409)), Class::Retryable);
        assert_eq!(classify_code("SlowDown", Some(503)), Class::Retryable);
        assert_eq!(classify_code("Whatever", Some(502)), Class::Retryable);
        assert_eq!(classify_code("AccessDenied", Some(403)), Class::Permanent);
        assert_eq!(classify_code("InvalidClientTokenId", Some(403)), Class::Permanent);
        assert_eq!(
            classify_code("PreconditionFailed", Some(400)),
            Class::PreconditionFailed
        );
        assert_eq!(classify_code("NoSuchKey", Some(404)), Class::NotFound);
        assert_eq!(classify_code("QueueDeletedRecently", Some(400)), Class::DeletedRecently);
        assert_eq!(classify_code("InternalError", Some(200)), Class::Retryable);
        for status in [409, 429, 500, 599] {
            assert_eq!(classify_code("Other", Some(status)), Class::Retryable, "{status}");
        }
        for status in [None, Some(400), Some(404), Some(499)] {
            assert_eq!(classify_code("Other", status), Class::Permanent, "{status:?}");
        }
    }

    /// Only the planted bug misreads, and only a throttling code.
    #[test]
    fn the_planted_bug_takes_throttling_for_permanent() {
        let failure = |code: &str| Failure {
            class: Class::Retryable,
            code: code.into(),
            message: String::new(),
        };
        let bug = crate::core::Policy::ALL
            .into_iter()
            .find(|p| !p.retries_throttling())
            .expect("a policy that misreads throttling");
        assert!(is_throttling("SlowDown") && !is_throttling("Other"));
        assert_eq!(misread(failure("SlowDown"), bug).class, Class::Permanent);
        assert_eq!(misread(failure("Other"), bug).class, Class::Retryable);
        assert_eq!(
            misread(failure("SlowDown"), crate::core::Policy::Real).class,
            Class::Retryable
        );
    }

    /// An error's causes on one line, each said once.
    #[test]
    fn causes_are_joined_on_one_line_without_repeats() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let inner = Layer("connection refused", None);
        let middle = Layer("io error: connection refused", Some(Box::new(inner)));
        let outer = Layer("dispatch failure\nretrying", Some(Box::new(middle)));
        assert_eq!(
            causes(&outer),
            "dispatch failure retrying: io error: connection refused"
        );
    }
}
