//! One SQS standard queue behind [`Queue`].
//!
//! The queue URL is resolved lazily (GetQueueUrl) and cached; a call that
//! finds the queue gone clears the cache and reports [`QueueError::Missing`],
//! so the core's retry layer recreates it through [`Queue::ensure`]
//! (CreateQueue with the configured attributes and redrive policy).
//!
//! Bodies larger than [`SqsQueueConfig::claim_bytes_min`] (or holding
//! characters SQS refuses) are stored in the blob store under `claims/<hash>` (create-only) and the message carries a
//! short pointer instead (a "claim check"); [`Queue::receive`] resolves it,
//! so callers never see the pointer.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use tracing::warn;

use super::batch::{by_request_bytes, check_batch, statuses, visibility_s, wait_s};
use super::{classify, misread, Class, Failure, VISIBILITY_S_MAX};
use crate::core::retry::BATCH_MAX;
use crate::core::{BlobStore, EntryError, Policy, PutOutcome, Queue, QueueError, QueueStats, Received, StoreError};

/// Retention of every queue tally creates: the 14-day maximum, so a paused
/// sweep loses nothing to expiry.
pub const RETENTION_S: u64 = 14 * 24 * 3600;
/// Default size above which a body goes through the claim check: below the
/// 256 KiB message limit that SQS had until 2025 and many servers keep.
pub const CLAIM_BYTES_MIN: usize = 200 * 1024;
/// How long SQS refuses to recreate a deleted queue's name.
pub const DELETED_RECENTLY_MS: u64 = 60_000;
/// A claim-check pointer starts with this; no job or result body does
/// (they are JSON objects).
pub const CLAIM_MARK: &str = "tally-claim:1:";

/// Where a queue's dead letters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead-letter queue's name (created if missing, 14-day retention).
    pub queue: String,
    /// Receives after which SQS moves a message there (1 to 1000).
    pub max_receives: u32,
}

/// A queue's attributes and client-side settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsQueueConfig {
    /// The queue's default visibility timeout, seconds.
    pub visibility_s: u64,
    /// Message retention, seconds.
    pub retention_s: u64,
    /// The redrive policy, if any.
    pub dead_letter: Option<DeadLetter>,
    /// Bodies of more bytes than this go through the claim check.
    pub claim_bytes_min: usize,
}

impl Default for SqsQueueConfig {
    fn default() -> Self {
        Self {
            visibility_s: 60,
            retention_s: RETENTION_S,
            dead_letter: None,
            claim_bytes_min: CLAIM_BYTES_MIN,
        }
    }
}

/// One SQS queue, addressed by name.
pub struct SqsQueue {
    client: Client,
    name: String,
    config: SqsQueueConfig,
    url: Mutex<Option<String>>,
    claims: Option<Arc<dyn BlobStore>>,
    policy: Policy,
}

fn to_queue_error(queue: &str, f: Failure) -> QueueError {
    match f.class {
        Class::Missing => QueueError::Missing {
            queue: queue.to_owned(),
            code: f.code,
        },
        Class::DeletedRecently => QueueError::DeletedRecently {
            queue: queue.to_owned(),
            retry_after_ms: DELETED_RECENTLY_MS,
            code: f.code,
        },
        Class::Retryable => QueueError::Retryable {
            code: f.code,
            message: f.message,
        },
        Class::PreconditionFailed | Class::NotFound | Class::Permanent => QueueError::Permanent {
            code: f.code,
            message: f.message,
        },
    }
}

fn store_to_queue(e: StoreError) -> QueueError {
    match e {
        StoreError::Retryable { code, message } => QueueError::Retryable { code, message },
        StoreError::Permanent { code, message } => QueueError::Permanent { code, message },
    }
}

fn build_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Permanent {
        code: "InvalidRequest".into(),
        message: e.to_string(),
    }
}

impl SqsQueue {
    /// A handle on the queue `name`; nothing is called until it is used.
    /// `claims` holds bodies too large for a message; without it they are
    /// sent as they are.
    pub fn new(
        client: Client,
        name: impl Into<String>,
        config: SqsQueueConfig,
        claims: Option<Arc<dyn BlobStore>>,
    ) -> Self {
        Self {
            client,
            name: name.into(),
            config,
            url: Mutex::new(None),
            claims,
            policy: Policy::Real,
        }
    }

    /// The same queue with a planted bug of `policy` (the simulator's
    /// checks must catch it); [`Policy::Real`] is tally's adapter.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Per-entry statuses of a batch answer, as the policy reads them.
    fn statuses<'a>(
        &self,
        n: usize,
        ok: impl Iterator<Item = &'a str>,
        failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
    ) -> Vec<Result<(), EntryError>> {
        let out = statuses(n, ok, failed);
        if self.policy.reads_entry_failures() {
            out
        } else {
            vec![Ok(()); n]
        }
    }

    fn fail(&self, f: Failure) -> QueueError {
        let f = misread(f, self.policy);
        if f.class == Class::Missing {
            *self.url.lock().expect("url lock") = None;
        }
        to_queue_error(&self.name, f)
    }

    /// The queue's URL, resolved once and cached until the queue goes missing.
    pub async fn url(&self) -> Result<String, QueueError> {
        if let Some(url) = self.url.lock().expect("url lock").clone() {
            return Ok(url);
        }
        let url = lookup_url(&self.client, &self.name).await?;
        *self.url.lock().expect("url lock") = Some(url.clone());
        Ok(url)
    }

    /// Delete the queue and everything in it: an operator's action (and a
    /// test's fault). Calls on it fail with [`QueueError::Missing`] after.
    pub async fn delete_queue(&self) -> Result<(), QueueError> {
        let url = self.url().await?;
        let result = self.client.delete_queue().queue_url(url).send().await;
        *self.url.lock().expect("url lock") = None;
        result.map(|_| ()).map_err(|e| self.fail(classify(&e)))
    }

    /// The ARN of the queue called `name`, creating it (as a dead-letter
    /// queue: maximum retention) if it does not exist.
    ///
    /// Another process may have created it a moment ago: SQS may then
    /// still deny it (CreateQueue API Reference: "you must wait at least
    /// one second after the queue is created to be able to use the
    /// queue"), and it may have other attributes than these, so that
    /// CreateQueue refuses with `QueueAlreadyExists`. Both are worth
    /// another try, not a stop: they come back as retryable.
    async fn dead_letter_arn(&self, name: &str) -> Result<String, QueueError> {
        let not_ready = |e: QueueError| match e {
            QueueError::Missing { code, .. } => QueueError::Retryable {
                code,
                message: format!("dead-letter queue {name} was created a moment ago and does not answer yet"),
            },
            other => other,
        };
        let url = match lookup_url(&self.client, name).await {
            Ok(url) => url,
            Err(QueueError::Missing { .. }) => {
                let created = self
                    .client
                    .create_queue()
                    .queue_name(name)
                    .attributes(QueueAttributeName::MessageRetentionPeriod, RETENTION_S.to_string())
                    .send()
                    .await
                    .map_err(|e| classify(&e));
                match created {
                    Ok(out) => out.queue_url().unwrap_or_default().to_owned(),
                    Err(f) if exists_with_other_attributes(&f) => {
                        lookup_url(&self.client, name).await.map_err(not_ready)?
                    }
                    Err(f) => return Err(to_queue_error(name, f)),
                }
            }
            Err(e) => return Err(e),
        };
        let attrs = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| not_ready(to_queue_error(name, classify(&e))))?;
        attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| QueueError::Permanent {
                code: "NoQueueArn".into(),
                message: format!("GetQueueAttributes gave no QueueArn for {name}"),
            })
    }

    /// Replace a body too large for a message (or one SQS would refuse) by
    /// a pointer to a blob.
    async fn check_in(&self, body: &str) -> Result<String, QueueError> {
        let needs_claim = body.len() > self.config.claim_bytes_min || !sqs_can_carry(body);
        let Some(store) = self.claims.as_ref().filter(|_| needs_claim) else {
            return Ok(body.to_owned());
        };
        let key = format!("claims/{:032x}", xxhash_rust::xxh3::xxh3_128(body.as_bytes()));
        // Named by content: an existing blob under the key is this body.
        let _: PutOutcome = store
            .put_if_absent(&key, body.as_bytes().to_vec())
            .await
            .map_err(store_to_queue)?;
        Ok(format!("{CLAIM_MARK}{key}"))
    }

    /// Resolve a claim-check pointer back to its body. A pointer whose blob
    /// is gone is passed on unchanged: the caller quarantines it.
    async fn check_out(&self, body: String) -> Result<String, QueueError> {
        let (Some(key), Some(store)) = (body.strip_prefix(CLAIM_MARK), self.claims.as_ref()) else {
            return Ok(body);
        };
        match store.get(key).await.map_err(store_to_queue)? {
            Some(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Ok(text),
                Err(_) => Ok(body),
            },
            None => {
                warn!(queue = %self.name, key, "claim-check blob is missing");
                Ok(body)
            }
        }
    }

    /// Send one SendMessageBatch request; statuses in entry order.
    async fn send_request(&self, url: &str, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        let mut entries = Vec::with_capacity(bodies.len());
        for (i, body) in bodies.iter().enumerate() {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .map_err(build_err)?;
            entries.push(entry);
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.fail(classify(&e)))?;
        Ok(self.statuses(bodies.len(), out.successful().iter().map(|s| s.id()), out.failed()))
    }
}

/// Whether SQS accepts `body` as it is: it refuses characters outside
/// `#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`
/// (an experiment's stderr may hold such a character); those bodies go
/// through the claim check instead.
pub fn sqs_can_carry(body: &str) -> bool {
    body.chars()
        .all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..))
}

/// Whether CreateQueue refused because a queue of that name exists with
/// other attributes (`QueueAlreadyExists` in SQS's query codes,
/// `QueueNameExists` in its JSON error shapes).
fn exists_with_other_attributes(f: &Failure) -> bool {
    f.code.ends_with("QueueAlreadyExists") || f.code.ends_with("QueueNameExists")
}

/// GetQueueUrl for `name`.
async fn lookup_url(client: &Client, name: &str) -> Result<String, QueueError> {
    let out = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| to_queue_error(name, classify(&e)))?;
    out.queue_url().map(str::to_owned).ok_or_else(|| QueueError::Permanent {
        code: "NoQueueUrl".into(),
        message: format!("GetQueueUrl gave no URL for {name}"),
    })
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ensure(&self) -> Result<(), QueueError> {
        let mut create = self
            .client
            .create_queue()
            .queue_name(&self.name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                self.config.visibility_s.min(VISIBILITY_S_MAX).to_string(),
            )
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                self.config.retention_s.to_string(),
            );
        if let Some(dl) = &self.config.dead_letter {
            let arn = self.dead_letter_arn(&dl.queue).await?;
            let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": dl.max_receives});
            create = create.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let url = match create.send().await {
            Ok(out) => out.queue_url().unwrap_or_default().to_owned(),
            Err(e) => {
                let f = classify(&e);
                // Same name, different attributes (changed flags): use the
                // queue as it is rather than refuse to work.
                if exists_with_other_attributes(&f) {
                    warn!(queue = %self.name, "queue exists with other attributes; using it as it is");
                    lookup_url(&self.client, &self.name).await?
                } else {
                    return Err(self.fail(f));
                }
            }
        };
        *self.url.lock().expect("url lock") = Some(url);
        Ok(())
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        check_batch(bodies)?;
        let url = self.url().await?;
        let mut sent = Vec::with_capacity(bodies.len());
        for body in bodies {
            sent.push(self.check_in(body).await?);
        }
        let mut out = Vec::with_capacity(bodies.len());
        for range in by_request_bytes(&sent) {
            let len = range.len();
            match self.send_request(&url, &sent[range]).await {
                Ok(statuses) => out.extend(statuses),
                // Earlier requests went through: report this one's entries
                // as retryable so only they are sent again.
                Err(QueueError::Retryable { code, message }) if !out.is_empty() => {
                    out.extend((0..len).map(|_| {
                        Err(EntryError {
                            code: code.clone(),
                            message: message.clone(),
                            retryable: true,
                        })
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn receive(&self, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Received>, QueueError> {
        let url = self.url().await?;
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, BATCH_MAX) as i32)
            .visibility_timeout(visibility_s(visibility_ms))
            .wait_time_seconds(wait_s(wait_ms))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.fail(classify(&e)))?;
        let mut got = Vec::with_capacity(out.messages().len());
        for m in out.messages() {
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            got.push(Received {
                body: self.check_out(m.body().unwrap_or_default().to_owned()).await?,
                handle: m.receipt_handle().unwrap_or_default().to_owned(),
                message_id: m.message_id().unwrap_or_default().to_owned(),
                receive_count,
            });
        }
        Ok(got)
    }

    async fn delete_batch(&self, handles: &[String]) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        check_batch(handles)?;
        let url = self.url().await?;
        let mut entries = Vec::with_capacity(handles.len());
        for (i, handle) in handles.iter().enumerate() {
            let entry = DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .build()
                .map_err(build_err)?;
            entries.push(entry);
        }
        let out = self
            .client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.fail(classify(&e)))?;
        Ok(self.statuses(handles.len(), out.successful().iter().map(|s| s.id()), out.failed()))
    }

    async fn change_visibility_batch(
        &self,
        handles: &[String],
        visibility_ms: u64,
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        check_batch(handles)?;
        let url = self.url().await?;
        let mut entries = Vec::with_capacity(handles.len());
        for (i, handle) in handles.iter().enumerate() {
            let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .visibility_timeout(visibility_s(visibility_ms))
                .build()
                .map_err(build_err)?;
            entries.push(entry);
        }
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.fail(classify(&e)))?;
        Ok(self.statuses(handles.len(), out.successful().iter().map(|s| s.id()), out.failed()))
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let url = self.url().await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| self.fail(classify(&e)))?;
        let get = |name: QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueStats {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages)
                + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::DirStore;
    use crate::scratch::Scratch;

    /// A queue whose claim check holds bodies over ten bytes; no call to
    /// SQS is made.
    fn claiming(claims: Option<Arc<dyn BlobStore>>) -> SqsQueue {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .build();
        let settings = SqsQueueConfig {
            claim_bytes_min: 10,
            ..SqsQueueConfig::default()
        };
        SqsQueue::new(Client::from_conf(config), "q", settings, claims)
    }

    /// Bodies over the size, or holding a character SQS refuses, travel as
    /// a pointer and come back whole; a pointer whose blob is gone or
    /// unreadable is passed on for the caller to quarantine.
    #[tokio::test]
    async fn large_or_unsendable_bodies_travel_by_claim_check() {
        let dir = Scratch::new("claims");
        let store: Arc<dyn BlobStore> = Arc::new(DirStore::open(dir.path("store")).unwrap());
        let q = claiming(Some(Arc::clone(&store)));
        let fits = "0123456789";
        assert_eq!(q.check_in(fits).await.unwrap(), fits);
        for body in ["0123456789a", "\u{FFFF}"] {
            let pointer = q.check_in(body).await.unwrap();
            assert!(pointer.starts_with(CLAIM_MARK), "{body:?} became {pointer:?}");
            assert_eq!(q.check_out(pointer).await.unwrap(), body);
        }
        assert_eq!(q.check_out(fits.into()).await.unwrap(), fits);
        let gone = format!("{CLAIM_MARK}claims/gone");
        assert_eq!(q.check_out(gone.clone()).await.unwrap(), gone);
        store.put_if_absent("claims/bad", vec![0xff, 0xfe]).await.unwrap();
        let bad = format!("{CLAIM_MARK}claims/bad");
        assert_eq!(q.check_out(bad.clone()).await.unwrap(), bad);

        let unclaimed = claiming(None);
        assert_eq!(unclaimed.check_in("0123456789a").await.unwrap(), "0123456789a");
        assert_eq!(unclaimed.name(), "q");
    }
}
