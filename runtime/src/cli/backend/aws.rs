//! Opening the AWS backend: SDK configuration, a check of credentials,
//! region, endpoint and bucket that turns each failure into one sentence,
//! and the three queues.

use std::sync::Arc;

use aws_sdk_sqs::config::ProvideCredentials;

use super::{Backend, Settings};
use crate::adapters::aws::queue::DeadLetter;
use crate::adapters::aws::{self, AwsConfig, S3Store, SqsQueue, SqsQueueConfig};
use crate::adapters::local::SystemClock;
use crate::cli::local::REDRIVE_RECEIVES;
use crate::cli::UserError;
use crate::core::{BlobStore, Clock, Queue, QueueError, StoreError};

/// Open SQS and S3 as `settings` say, after checking they answer.
pub async fn open(settings: Settings) -> anyhow::Result<Backend> {
    let Some(bucket) = settings.bucket.clone() else {
        return Err(UserError::bad_input(
            "--backend aws needs a bucket: pass --bucket or set TALLY_BUCKET",
        ));
    };
    let clients = aws::clients(&AwsConfig {
        region: settings.region.clone(),
        endpoint_url: settings.endpoint_url.clone(),
        credentials: None,
    })
    .await;
    let sdk = &clients.sdk;
    if sdk.region().is_none() {
        return Err(UserError::bad_input(
            "no AWS region is configured: pass --region, set TALLY_REGION or AWS_REGION, or set one in your AWS profile",
        ));
    }
    check_credentials(sdk).await?;
    let where_ = settings
        .endpoint_url
        .clone()
        .unwrap_or_else(|| format!("AWS region {}", sdk.region().map(|r| r.to_string()).unwrap_or_default()));
    let s3 = S3Store::new(clients.s3.clone(), &bucket, &settings.key_prefix);
    s3.check().await.map_err(|e| store_unusable(&e, &bucket, &where_))?;
    let store: Arc<dyn BlobStore> = Arc::new(s3);
    let sqs = clients.sqs.clone();
    let prefix = &settings.queue_prefix;
    let dead_name = format!("{prefix}-jobs-dead");
    let visibility_s = settings.visibility_s;
    let claim = |dead_letter: Option<DeadLetter>| SqsQueueConfig {
        visibility_s,
        dead_letter,
        claim_bytes_min: settings.claim_bytes,
        ..SqsQueueConfig::default()
    };
    let jobs = SqsQueue::new(
        sqs.clone(),
        format!("{prefix}-jobs"),
        claim(Some(DeadLetter {
            queue: dead_name.clone(),
            max_receives: REDRIVE_RECEIVES,
        })),
        Some(Arc::clone(&store)),
    );
    match jobs.url().await {
        Ok(_) | Err(QueueError::Missing { .. }) => {}
        Err(e) => return Err(queue_unusable(&e, &where_)),
    }
    let results = SqsQueue::new(
        sqs.clone(),
        format!("{prefix}-results"),
        claim(None),
        Some(Arc::clone(&store)),
    );
    let jobs_dead = SqsQueue::new(sqs, dead_name, claim(None), Some(Arc::clone(&store)));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let queues: [Arc<dyn Queue>; 3] = [Arc::new(jobs), Arc::new(results), Arc::new(jobs_dead)];
    let describe = format!(
        "SQS queues {prefix}-* and s3://{bucket}/{} at {where_}",
        crate::adapters::aws::store::normalise_prefix(&settings.key_prefix)
    );
    Ok(Backend::remote(settings, clock, queues, store, describe))
}

async fn check_credentials(sdk: &aws_config::SdkConfig) -> anyhow::Result<()> {
    let Some(provider) = sdk.credentials_provider() else {
        return Err(UserError::bad_input("no AWS credentials provider is configured"));
    };
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(e) => Err(UserError::bad_input(format!(
            "no usable AWS credentials ({}; tried the environment, the profile, web identity, ECS and EC2 \
             instance metadata): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with \
             an instance or task role",
            first_line(&e.to_string())
        ))),
    }
}

fn store_unusable(e: &StoreError, bucket: &str, where_: &str) -> anyhow::Error {
    match e {
        StoreError::Retryable { code, message } => UserError::bad_input(format!(
            "cannot reach S3 at {where_} ({code}: {}); check --endpoint-url, --region and the network",
            first_line(message)
        )),
        StoreError::Permanent { code, message } => UserError::bad_input(format!(
            "S3 refused bucket {bucket:?} at {where_} ({code}: {}); check that the bucket exists \
             and that these credentials may use it",
            first_line(message)
        )),
    }
}

fn queue_unusable(e: &QueueError, where_: &str) -> anyhow::Error {
    match e {
        QueueError::Retryable { code, message } => UserError::bad_input(format!(
            "cannot reach SQS at {where_} ({code}: {}); check --endpoint-url, --region and the network",
            first_line(message)
        )),
        other => UserError::bad_input(format!(
            "SQS refused the request at {where_} ({other}); check the credentials and their permissions (docs/DEPLOY.md)"
        )),
    }
}

/// The first line of a message, for one-sentence errors.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim_end_matches(['.', ':'])
}
