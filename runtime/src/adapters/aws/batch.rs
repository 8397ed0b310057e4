//! Pure helpers of the SQS adapter: units, batch limits, and per-entry
//! statuses from a batch answer.

use aws_sdk_sqs::types::BatchResultErrorEntry;

use super::{VISIBILITY_S_MAX, WAIT_S_MAX};
use crate::core::retry::BATCH_MAX;
use crate::core::{EntryError, QueueError};

/// Most bytes sent in one SendMessageBatch request. AWS allows 1 MiB since
/// 2025; 256 KiB works everywhere and costs at most a few extra requests.
pub const REQUEST_BYTES_MAX: usize = 256 * 1024;

/// Visibility in whole seconds, rounded up, as SQS takes it.
pub fn visibility_s(visibility_ms: u64) -> i32 {
    visibility_ms.div_ceil(1000).min(VISIBILITY_S_MAX) as i32
}

/// Long-poll wait in whole seconds, rounded up, at most 20.
pub fn wait_s(wait_ms: u64) -> i32 {
    wait_ms.div_ceil(1000).min(WAIT_S_MAX) as i32
}

/// One failed batch entry as tally's [`EntryError`]: retryable unless AWS
/// blames the sender.
pub fn entry_error(e: &BatchResultErrorEntry) -> EntryError {
    EntryError {
        code: e.code().to_owned(),
        message: e.message().unwrap_or_default().to_owned(),
        retryable: !e.sender_fault(),
    }
}

/// AWS refuses batches of no entries or more than ten; some servers do not
/// check, so the adapter does, with AWS's error codes.
pub fn check_batch<T>(entries: &[T]) -> Result<(), QueueError> {
    let code = match entries.len() {
        0 => "AWS.SimpleQueueService.EmptyBatchRequest",
        n if n > BATCH_MAX => "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        _ => return Ok(()),
    };
    Err(QueueError::Permanent {
        code: code.into(),
        message: format!("a batch holds 1 to {BATCH_MAX} entries, not {}", entries.len()),
    })
}

/// Statuses for `n` entries from a batch answer: entries named neither
/// successful nor failed are reported as retryable failures.
pub fn statuses<'a>(
    n: usize,
    ok: impl Iterator<Item = &'a str>,
    failed: &[BatchResultErrorEntry],
) -> Vec<Result<(), EntryError>> {
    let mut out: Vec<Result<(), EntryError>> = (0..n)
        .map(|_| {
            Err(EntryError {
                code: "NoEntryResult".into(),
                message: "the batch answer did not mention this entry".into(),
                retryable: true,
            })
        })
        .collect();
    for id in ok {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
            *slot = Ok(());
        }
    }
    for e in failed {
        if let Some(slot) = e.id().parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
            *slot = Err(entry_error(e));
        }
    }
    out
}

/// Split entries into requests of at most [`REQUEST_BYTES_MAX`] bytes.
pub fn by_request_bytes(bodies: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        if i > start && bytes + body.len() > REQUEST_BYTES_MAX {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        out.push(start..bodies.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_up_to_whole_seconds_within_sqs_limits() {
        assert_eq!(visibility_s(0), 0);
        assert_eq!(visibility_s(1), 1);
        assert_eq!(visibility_s(1000), 1);
        assert_eq!(visibility_s(1001), 2);
        assert_eq!(visibility_s(u64::MAX / 2), 43_200);
        assert_eq!(wait_s(0), 0);
        assert_eq!(wait_s(200), 1);
        assert_eq!(wait_s(60_000), 20);
    }

    #[test]
    fn requests_stay_under_the_byte_limit() {
        let bodies: Vec<String> = (0..10).map(|_| "x".repeat(100 * 1024)).collect();
        let ranges = by_request_bytes(&bodies);
        assert_eq!(ranges, vec![0..2, 2..4, 4..6, 6..8, 8..10]);
        assert!(by_request_bytes(&[]).is_empty());
        // Exactly the limit is one request; a body over it goes alone.
        let halves = vec!["x".repeat(REQUEST_BYTES_MAX / 2); 2];
        assert_eq!(by_request_bytes(&halves), vec![0..2]);
        let huge = vec!["x".repeat(REQUEST_BYTES_MAX + 1), "y".into()];
        assert_eq!(by_request_bytes(&huge), vec![0..1, 1..2]);
    }

    #[test]
    fn characters_sqs_refuses_are_recognised() {
        use crate::adapters::aws::queue::sqs_can_carry;
        assert!(sqs_can_carry("{\"a\":\"tab\there\\n é 😀\"}"));
        assert!(!sqs_can_carry("bad \u{FFFF} char"));
        assert!(!sqs_can_carry("nul \u{0} char"));
    }

    #[test]
    fn batches_of_none_or_more_than_ten_are_refused() {
        assert!(check_batch::<u8>(&[]).is_err());
        assert!(check_batch(&[0u8; 10]).is_ok());
        assert!(matches!(check_batch(&[0u8; 11]), Err(QueueError::Permanent { .. })));
    }

    #[test]
    fn unmentioned_entries_are_retryable_failures() {
        let failed = [BatchResultErrorEntry::builder()
            .id("1")
            .code("ReceiptHandleIsInvalid")
            .sender_fault(true)
            .build()
            .unwrap()];
        let out = statuses(3, ["0"].into_iter(), &failed);
        assert_eq!(out[0], Ok(()));
        assert!(!out[1].as_ref().unwrap_err().retryable);
        assert!(out[2].as_ref().unwrap_err().retryable);
    }
}
