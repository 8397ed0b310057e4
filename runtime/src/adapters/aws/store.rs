//! An S3 bucket (under a key prefix) behind [`BlobStore`].
//!
//! Create-only writes use `If-None-Match: *`: S3 answers 412
//! PreconditionFailed when the key exists (the Rust SDK has no typed variant
//! for it, so the code or the status is matched) and may answer 409
//! ConditionalRequestConflict to one of two racing writers, which is retried.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::{classify, misread, Class, Failure};
use crate::core::{BlobStore, Policy, PutOutcome, StoreError};

/// Keys per ListObjectsV2 page, S3's maximum.
pub const PAGE_KEYS_MAX: i32 = 1000;

/// A bucket, or the part of it under a key prefix.
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    page_keys: i32,
    policy: Policy,
}

fn to_store_error(f: Failure) -> StoreError {
    match f.class {
        Class::Retryable => StoreError::Retryable {
            code: f.code,
            message: f.message,
        },
        _ => StoreError::Permanent {
            code: f.code,
            message: f.message,
        },
    }
}

/// The key prefix as stored: empty, or ending in exactly one `/`.
pub fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

impl S3Store {
    /// The part of `bucket` under `prefix` (may be empty).
    pub fn new(client: Client, bucket: impl Into<String>, prefix: &str) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: normalise_prefix(prefix),
            page_keys: PAGE_KEYS_MAX,
            policy: Policy::Real,
        }
    }

    /// The same store with a planted bug of `policy` (the simulator's
    /// checks must catch it); [`Policy::Real`] is tally's adapter.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    fn failure<E>(&self, e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        misread(classify(e), self.policy)
    }

    /// List in pages of `keys` (for tests of pagination).
    pub fn with_page_keys(mut self, keys: i32) -> Self {
        self.page_keys = keys.clamp(1, PAGE_KEYS_MAX);
        self
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn full(&self, key: &str) -> Result<String, StoreError> {
        if key.is_empty() || key.starts_with('/') {
            return Err(StoreError::Permanent {
                code: "InvalidKey".into(),
                message: format!("{key:?} is not a valid blob key"),
            });
        }
        Ok(format!("{}{key}", self.prefix))
    }

    /// Check that the bucket exists and these credentials may use it.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| to_store_error(classify(&e)))
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        let full = self.full(key)?;
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) => {
                let f = self.failure(&e);
                if f.class == Class::PreconditionFailed && self.policy.takes_412_for_taken() {
                    Ok(PutOutcome::AlreadyExists)
                } else {
                    Err(to_store_error(f))
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let full = self.full(key)?;
        let result = self.client.get_object().bucket(&self.bucket).key(full).send().await;
        let out = match result {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                let f = self.failure(&e);
                return match f.class {
                    Class::NotFound => Ok(None),
                    _ => Err(to_store_error(f)),
                };
            }
        };
        // A body cut off mid-transfer is worth another try.
        let bytes = out.body.collect().await.map_err(|e| StoreError::Retryable {
            code: "BodyReadFailed".into(),
            message: e.to_string(),
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{}{prefix}", self.prefix))
                .max_keys(self.page_keys)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| to_store_error(self.failure(&e)))?;
            pages += 1;
            // The planted skip-page bug drops the second page's keys.
            let kept = pages != 2 || self.policy.reads_every_page();
            for object in out.contents().iter().filter(|_| kept) {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(self.prefix.as_str())) {
                    keys.push(key.to_owned());
                }
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated().unwrap_or(false) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        // S3 lists in UTF-8 byte order already; sort anyway so other servers
        // cannot break the trait's promise.
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_in_one_slash() {
        assert_eq!(normalise_prefix(""), "");
        assert_eq!(normalise_prefix("/"), "");
        assert_eq!(normalise_prefix("tally"), "tally/");
        assert_eq!(normalise_prefix("a/b//"), "a/b/");
    }
}
