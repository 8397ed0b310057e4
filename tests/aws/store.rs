//! S3 on moto: create-only writes, reads, paginated lists, and the claim
//! check that carries large results through S3.

use std::sync::Arc;

use tally::adapters::aws::queue::CLAIM_MARK;
use tally::adapters::aws::{S3Store, SqsQueue, SqsQueueConfig};
use tally::core::{BlobStore, PutOutcome, Queue};

use crate::support;

#[tokio::test]
async fn s3_put_if_absent_reports_an_existing_key_and_lists_across_pages() -> anyhow::Result<()> {
    let Some(endpoint) = support::moto_endpoint("s3_put_if_absent_reports_an_existing_key_and_lists_across_pages")?
    else {
        return Ok(());
    };
    let _one = support::MOTO.lock().await;
    support::reset(&endpoint)?;
    let clients = support::clients(&endpoint).await;
    clients.s3.create_bucket().bucket("store").send().await?;
    let store = S3Store::new(clients.s3.clone(), "store", "/tally/").with_page_keys(2);

    assert_eq!(
        store.put_if_absent("a/b.json", b"one".to_vec()).await?,
        PutOutcome::Created
    );
    // The 412 PreconditionFailed answer.
    assert_eq!(
        store.put_if_absent("a/b.json", b"two".to_vec()).await?,
        PutOutcome::AlreadyExists
    );
    assert_eq!(store.get("a/b.json").await?.as_deref(), Some(&b"one"[..]));
    assert_eq!(store.get("a/missing.json").await?, None);
    for key in ["a/a.json", "a/c.json", "a/d.json", "b.json"] {
        assert_eq!(store.put_if_absent(key, vec![]).await?, PutOutcome::Created);
    }
    // Five pages of two keys under the prefix, none from outside it.
    clients
        .s3
        .put_object()
        .bucket("store")
        .key("elsewhere/a/x.json")
        .send()
        .await?;
    assert_eq!(
        store.list("a/").await?,
        vec!["a/a.json", "a/b.json", "a/c.json", "a/d.json"]
    );
    assert_eq!(store.list("").await?.len(), 5);
    Ok(())
}

#[tokio::test]
async fn a_300_kib_result_travels_through_the_claim_check() -> anyhow::Result<()> {
    let Some(endpoint) = support::moto_endpoint("a_300_kib_result_travels_through_the_claim_check")? else {
        return Ok(());
    };
    let _one = support::MOTO.lock().await;
    support::reset(&endpoint)?;
    let clients = support::clients(&endpoint).await;
    let store: Arc<dyn BlobStore> = support::bucket(&clients, "claims").await?;
    let q = SqsQueue::new(
        clients.sqs.clone(),
        "claims-results",
        SqsQueueConfig::default(),
        Some(Arc::clone(&store)),
    );
    q.ensure().await?;
    let big = format!("{{\"payload\":\"{}\"}}", "x".repeat(300 * 1024));
    let small = "{\"payload\":\"small\"}".to_owned();
    let sent = q.send_batch(&[big.clone(), small.clone()]).await?;
    assert!(sent.iter().all(|s| s.is_ok()), "{sent:?}");
    assert_eq!(
        store.list("claims/").await?.len(),
        1,
        "only the large body is checked in"
    );

    // On the wire the large message is only a pointer (received here with
    // no visibility timeout, so it stays available).
    let raw = clients
        .sqs
        .receive_message()
        .queue_url(q.url().await?)
        .visibility_timeout(0)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await?;
    let wire: Vec<&str> = raw.messages().iter().filter_map(|m| m.body()).collect();
    assert!(
        !wire.is_empty() && wire.iter().all(|b| b.len() < 1024),
        "{} bodies on the wire",
        wire.len()
    );
    assert!(
        wire.iter().all(|b| *b == small || b.starts_with(CLAIM_MARK)),
        "{wire:?}"
    );

    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(q.receive(10, 30_000, 1000).await?);
        if got.len() >= 2 {
            break;
        }
    }
    let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_by_key(|b| b.len());
    assert_eq!(bodies, vec![small.as_str(), big.as_str()]);

    let handles: Vec<String> = got.iter().map(|m| m.handle.clone()).collect();
    let deleted = q.delete_batch(&handles).await?;
    assert!(deleted.iter().all(|d| d.is_ok()), "{deleted:?}");
    Ok(())
}
