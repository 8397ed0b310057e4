//! The same sequence of queue operations against the embedded SQLite queue
//! and against SQS on moto, with the same observable outcomes.
//!
//! Only what AWS guarantees is compared. Known differences, not asserted:
//! - A delete with a stale receipt handle: AWS "succeeds, but the message
//!   might not be deleted"; the embedded queue keeps the message, moto
//!   deletes it. Only the entry's success is compared.
//! - Recreating a queue within 60 s of deleting it: AWS and the embedded
//!   queue refuse (QueueDeletedRecently); moto allows it.
//! - Depths are exact on both here; on AWS they are approximate.
//! - moto accepts a DeleteMessageBatch of more than ten entries (AWS refuses
//!   it with TooManyEntriesInBatchRequest); the adapter checks batch sizes
//!   itself, so both sides report a permanent error.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tally::adapters::aws::{DeadLetter, SqsQueue, SqsQueueConfig};
use tally::adapters::local::{QueueConfig, SqliteQueues, SystemClock};
use tally::core::retry::Calls;
use tally::core::{Clock, EntryError, Policy, Queue, QueueError, Received};

use crate::support;

/// A short name for an outcome: what the caller would do about it.
fn kind<T>(r: &Result<T, QueueError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(QueueError::Missing { .. }) => "missing",
        Err(QueueError::DeletedRecently { .. }) => "deleted-recently",
        Err(QueueError::Retryable { .. }) => "retryable",
        Err(QueueError::Permanent { .. }) => "permanent",
    }
}

fn entries(r: &Result<Vec<Result<(), EntryError>>, QueueError>) -> String {
    match r {
        Ok(v) => format!("{:?}", v.iter().map(|e| e.is_ok()).collect::<Vec<_>>()),
        Err(_) => kind(r).to_owned(),
    }
}

/// Receive until `want` messages arrived or `timeout` passed.
async fn collect(q: &dyn Queue, want: usize, visibility_ms: u64) -> anyhow::Result<Vec<Received>> {
    let mut got: Vec<Received> = Vec::new();
    for _ in 0..5 {
        got.extend(q.receive(10, visibility_ms, 1000).await?);
        if got.len() >= want {
            break;
        }
    }
    got.sort_by(|a, b| a.body.cmp(&b.body));
    Ok(got)
}

fn describe(msgs: &[Received]) -> String {
    let parts: Vec<String> = msgs.iter().map(|m| format!("{}#{}", m.body, m.receive_count)).collect();
    parts.join(",")
}

fn bodies(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

fn handle_of<'a>(msgs: &'a [Received], body: &str) -> anyhow::Result<&'a str> {
    msgs.iter()
        .find(|m| m.body == body)
        .map(|m| m.handle.as_str())
        .with_context(|| format!("{body} was not received"))
}

/// The sequence; each line is one observable outcome.
async fn sequence(
    q: &dyn Queue,
    dlq: &dyn Queue,
    delete: impl AsyncFnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<String>> {
    let mut log = Vec::new();
    log.push(format!(
        "ensure {} {}",
        kind(&dlq.ensure().await),
        kind(&q.ensure().await)
    ));
    let abc: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    log.push(format!("send abc {}", entries(&q.send_batch(&abc).await)));
    log.push(format!("send 11 {}", entries(&q.send_batch(&bodies(11)).await)));
    log.push(format!("send 0 {}", entries(&q.send_batch(&[]).await)));
    let first = collect(q, 3, 3000).await?;
    log.push(format!("receive {}", describe(&first)));
    log.push(format!("receive while held {}", q.receive(10, 1000, 0).await?.len()));
    log.push(format!("stats {:?}", q.stats().await?));
    let del = q.delete_batch(&[handle_of(&first, "a")?.to_owned()]).await;
    log.push(format!("delete a {}", entries(&del)));
    let release = q
        .change_visibility_batch(&[handle_of(&first, "b")?.to_owned()], 0)
        .await;
    log.push(format!("release b {}", entries(&release)));
    log.push(format!("receive released {}", describe(&collect(q, 1, 1000).await?)));
    // c's 3 s and b's 1 s visibility run out: c comes back (2nd receive);
    // b, received twice already, goes to the dead-letter queue instead.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let second = collect(q, 1, 1000).await?;
    log.push(format!("receive after timeout {}", describe(&second)));
    let dead: Vec<String> = collect(dlq, 1, 30_000).await?.into_iter().map(|m| m.body).collect();
    log.push(format!("dead letters {dead:?}"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    log.push(format!(
        "receive after max receives {}",
        describe(&collect(q, 1, 1000).await?)
    ));
    let dead: BTreeSet<String> = collect(dlq, 1, 30_000).await?.into_iter().map(|m| m.body).collect();
    log.push(format!("dead letters {dead:?}"));
    // A stale handle: the entry succeeds (whether it deletes differs).
    q.send_batch(&["d".to_owned()]).await?;
    let h1 = collect(q, 1, 3000).await?;
    q.change_visibility_batch(&[handle_of(&h1, "d")?.to_owned()], 0).await?;
    let h2 = collect(q, 1, 3000).await?;
    log.push(format!("receive d again {}", describe(&h2)));
    let stale = q.delete_batch(&[handle_of(&h1, "d")?.to_owned()]).await;
    log.push(format!("delete with stale handle {}", entries(&stale)));
    log.push(format!("delete 11 {}", entries(&q.delete_batch(&bodies(11)).await)));
    delete().await?;
    log.push(format!("send after delete {}", kind(&q.send_batch(&abc).await)));
    log.push(format!("receive after delete {}", kind(&q.receive(1, 1000, 0).await)));
    log.push(format!("stats after delete {}", kind(&q.stats().await)));
    let again = q.ensure().await;
    log.push(format!(
        "recreate {}",
        if matches!(kind(&again), "ok" | "deleted-recently") {
            "ok-or-deleted-recently"
        } else {
            kind(&again)
        }
    ));
    Ok(log)
}

fn sqs_config(dead: &str) -> SqsQueueConfig {
    SqsQueueConfig {
        visibility_s: 1,
        dead_letter: Some(DeadLetter {
            queue: dead.into(),
            max_receives: 2,
        }),
        ..SqsQueueConfig::default()
    }
}

#[tokio::test]
async fn sqs_on_moto_behaves_like_the_embedded_queue() -> anyhow::Result<()> {
    let Some(endpoint) = support::moto_endpoint("sqs_on_moto_behaves_like_the_embedded_queue")? else {
        return Ok(());
    };
    let _one = support::MOTO.lock().await;
    support::reset(&endpoint)?;

    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let db = SqliteQueues::open(std::path::Path::new(":memory:"), clock)?;
    let config = QueueConfig {
        visibility_ms: 1000,
        max_receives: Some(2),
        dead_letter: Some("conf-dead".into()),
        ..QueueConfig::default()
    };
    let local_q = db.queue("conf", config);
    let local_dlq = db.queue("conf-dead", QueueConfig::default());
    let local = sequence(&local_q, &local_dlq, async || Ok(db.delete_queue("conf")?)).await?;

    let clients = support::clients(&endpoint).await;
    let sqs_q = SqsQueue::new(clients.sqs.clone(), "conf", sqs_config("conf-dead"), None);
    let sqs_dlq = SqsQueue::new(clients.sqs.clone(), "conf-dead", SqsQueueConfig::default(), None);
    // Deleted through a second handle, so `sqs_q` still holds the old URL
    // and must notice the queue is gone from the error itself.
    let other = SqsQueue::new(clients.sqs.clone(), "conf", sqs_config("conf-dead"), None);
    let sqs = sequence(&sqs_q, &sqs_dlq, async || Ok(other.delete_queue().await?)).await?;

    for (l, s) in local.iter().zip(&sqs) {
        println!("{l:<50} | {s}");
    }
    assert_eq!(local, sqs, "the embedded queue and SQS on moto disagree");
    if local.len() != 21 {
        bail!("the sequence ran {} steps, not 21", local.len());
    }
    Ok(())
}

#[tokio::test]
async fn a_deleted_sqs_queue_is_recreated_by_the_retry_layer() -> anyhow::Result<()> {
    let Some(endpoint) = support::moto_endpoint("a_deleted_sqs_queue_is_recreated_by_the_retry_layer")? else {
        return Ok(());
    };
    let _one = support::MOTO.lock().await;
    support::reset(&endpoint)?;
    let clients = support::clients(&endpoint).await;
    let q = SqsQueue::new(clients.sqs.clone(), "gone-jobs", sqs_config("gone-dead"), None);
    q.ensure().await?;
    q.send_batch(&["before".to_owned()]).await?;
    let operator = SqsQueue::new(clients.sqs.clone(), "gone-jobs", sqs_config("gone-dead"), None);
    operator.delete_queue().await?;

    let clock = SystemClock::default();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let calls = Calls {
        queue: &q,
        clock: &clock,
        policy: Policy::Real,
        shutdown: &stop,
    };
    calls.send_all(&["after".to_owned()]).await?;
    let got: Vec<String> = collect(&q, 1, 5000).await?.into_iter().map(|m| m.body).collect();
    // What was in the deleted queue is gone (the reconciler resubmits it).
    assert_eq!(got, vec!["after".to_owned()]);
    let redrive = clients
        .sqs
        .get_queue_attributes()
        .queue_url(q.url().await?)
        .attribute_names(aws_sdk_sqs_attr())
        .send()
        .await?;
    let policy = redrive
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs_attr()))
        .context("the recreated queue has no redrive policy")?;
    assert!(policy.contains("gone-dead"), "redrive policy {policy}");
    Ok(())
}

fn aws_sdk_sqs_attr() -> tally::adapters::aws::QueueAttributeName {
    tally::adapters::aws::QueueAttributeName::RedrivePolicy
}
