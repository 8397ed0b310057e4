use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tally::core::{BlobStore, PutOutcome, Queue, QueueError, StoreError};

use super::*;
use crate::doubles::clock::sim_now_ms;
use crate::hosts::{QueueAttrs, S3Faults, S3Model, SqsFaults, SqsModel};

/// A simulation with an SQS host and an S3 host already serving.
fn cloud(seed: u64, faults: SqsFaults) -> (turmoil::Sim<'static>, SharedSqs, SharedS3) {
    let sqs: SharedSqs = Rc::new(RefCell::new(SqsModel::new(seed, faults)));
    let s3: SharedS3 = Rc::new(RefCell::new(S3Model::new(seed, S3Faults::default())));
    let mut sim = sim_builder(seed).simulation_duration(Duration::from_secs(600)).build();
    let model = Rc::clone(&sqs);
    sim.host("sqs", move || serve_sqs(Rc::clone(&model)));
    let model = Rc::clone(&s3);
    sim.host("s3", move || serve_s3(Rc::clone(&model)));
    (sim, sqs, s3)
}

fn jobs() -> SimQueue {
    SimQueue::new(RpcConfig::new("sqs"), "jobs", QueueAttrs::default())
}

fn batch(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("job-{i}")).collect()
}

#[test]
fn a_client_sends_receives_and_deletes_through_sim_queue_and_stores_through_sim_store() {
    let (mut sim, sqs, s3) = cloud(1, SqsFaults::default());
    sim.client("client", async {
        let queue = jobs();
        queue.ensure().await?;
        let statuses = queue.send_batch(&batch(0..10)).await?;
        assert!(statuses.iter().all(Result::is_ok));
        let got = queue.receive(10, 30_000, 0).await?;
        assert_eq!(got.len(), 10);
        let handles: Vec<String> = got.iter().map(|r| r.handle.clone()).collect();
        queue.delete_batch(&handles).await?;
        assert!(queue.stats().await?.is_drained());

        let store = SimStore::new(RpcConfig::new("s3"));
        let segment: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            store.put_if_absent("seg/1", segment.clone()).await?,
            PutOutcome::Created
        );
        assert_eq!(store.put_if_absent("seg/1", vec![1]).await?, PutOutcome::AlreadyExists);
        assert_eq!(store.get("seg/1").await?, Some(segment));
        assert_eq!(store.list("seg/").await?, vec!["seg/1".to_string()]);
        Ok(())
    });
    sim.run().unwrap();
    assert!(sqs.borrow().bodies("jobs").is_empty());
    assert!(s3.borrow().object("seg/1").is_some());
}

#[test]
fn a_partition_makes_calls_retryable_with_unknown_outcome_and_repair_brings_them_back() {
    let (mut sim, sqs, _s3) = cloud(2, SqsFaults::default());
    sim.client("client", async {
        let queue = jobs();
        queue.ensure().await?;
        let store = SimStore::new(RpcConfig::new("s3"));

        turmoil::partition("client", "sqs");
        turmoil::partition("client", "s3");
        let started_ms = sim_now_ms();
        let err = queue.send_batch(&batch(0..1)).await.unwrap_err();
        assert!(matches!(err, QueueError::Retryable { .. }), "{err:?}");
        assert!(sim_now_ms() - started_ms >= 2_000, "gave up before its timeout");
        let err = store.put_if_absent("k", vec![1]).await.unwrap_err();
        assert!(matches!(err, StoreError::Retryable { .. }), "{err:?}");
        turmoil::repair("client", "sqs");
        turmoil::repair("client", "s3");

        // The request arrives but the reply is lost: applied, yet an error.
        turmoil::partition_oneway("sqs", "client");
        let err = queue.send_batch(&batch(1..2)).await.unwrap_err();
        assert!(matches!(err, QueueError::Retryable { .. }), "{err:?}");
        turmoil::repair_oneway("sqs", "client");

        queue.send_batch(&batch(2..3)).await?;
        assert_eq!(store.put_if_absent("k", vec![1]).await?, PutOutcome::Created);
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(sqs.borrow().bodies("jobs"), vec!["job-1", "job-2"]);
}

#[test]
fn a_long_poll_answers_as_soon_as_a_message_is_sent() {
    let (mut sim, _sqs, _s3) = cloud(3, SqsFaults::default());
    let waited_ms = Rc::new(RefCell::new(None));
    let waited = Rc::clone(&waited_ms);
    sim.client("poller", async move {
        let queue = jobs();
        queue.ensure().await?;
        let started_ms = sim_now_ms();
        let got = queue.receive(10, 30_000, 20_000).await?;
        assert_eq!(got.len(), 1);
        *waited.borrow_mut() = Some(sim_now_ms() - started_ms);
        Ok(())
    });
    sim.client("sender", async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let queue = jobs();
        queue.ensure().await?;
        queue.send_batch(&batch(0..1)).await?;
        Ok(())
    });
    sim.run().unwrap();
    let waited_ms = waited_ms.borrow().expect("the poller finished");
    assert!((2_500..6_000).contains(&waited_ms), "waited {waited_ms} ms");
}

#[test]
fn queue_state_survives_a_bounce_of_the_sqs_host() {
    let (mut sim, _sqs, _s3) = cloud(4, SqsFaults::default());
    sim.client("client", async {
        let queue = jobs();
        queue.ensure().await?;
        queue.send_batch(&batch(0..3)).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(queue.stats().await?.visible, 3);
        Ok(())
    });
    for _ in 0..200 {
        sim.step().unwrap();
    }
    sim.bounce("sqs");
    sim.run().unwrap();
}

#[test]
fn a_long_poll_at_the_in_flight_limit_waits_and_answers_empty_where_a_short_poll_is_over_limit() {
    let (mut sim, sqs, _s3) = cloud(9, SqsFaults::default());
    sqs.borrow_mut().set_in_flight_max(1);
    sim.client("client", async {
        let queue = jobs();
        queue.ensure().await?;
        queue.send_batch(&batch(0..2)).await?;
        assert_eq!(queue.receive(1, 60_000, 0).await?.len(), 1);
        let err = queue.receive(10, 60_000, 0).await.unwrap_err();
        assert!(matches!(err, QueueError::Retryable { .. }), "{err:?}");
        let started_ms = sim_now_ms();
        assert!(queue.receive(10, 60_000, 2_000).await?.is_empty());
        assert!(sim_now_ms() - started_ms >= 2_000, "answered before its wait was over");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn a_sim_store_listing_follows_every_page_of_a_small_page_size() {
    let (mut sim, _sqs, s3) = cloud(10, SqsFaults::default());
    s3.borrow_mut().set_worst_case(crate::hosts::S3WorstCase {
        list_page_max: 7,
        ..crate::hosts::S3WorstCase::default()
    });
    for i in 0..20 {
        s3.borrow_mut().put_if_absent(&format!("seg/{i:02}"), b"").unwrap();
    }
    s3.borrow_mut().put_if_absent("set", b"").unwrap();
    sim.client("client", async {
        let store = SimStore::new(RpcConfig::new("s3"));
        let keys = store.list("seg/").await?;
        let wanted: Vec<String> = (0..20).map(|i| format!("seg/{i:02}")).collect();
        assert_eq!(keys, wanted);
        assert!(store.list("nothing/").await?.is_empty());
        Ok(())
    });
    sim.run().unwrap();
}

/// Several pollers and senders over a lossy, jittery network with
/// duplicate delivery; every outcome each client sees, in order.
fn busy_trace(seed: u64) -> Vec<String> {
    let faults = SqsFaults {
        duplicate_rate: 0.05,
        entry_failure_rate: 0.05,
    };
    let (mut sim, sqs, _s3) = cloud(seed, faults);
    sim.set_fail_rate(0.02);
    let trace = Rc::new(RefCell::new(Vec::new()));
    for worker in 0..3 {
        let trace = Rc::clone(&trace);
        sim.client(format!("worker{worker}"), async move {
            let queue = jobs();
            while queue.ensure().await.is_err() {}
            for round in 0..20 {
                let sent = queue.send_batch(&batch(round * 10..round * 10 + 10)).await;
                let got = queue.receive(10, 5_000, 1_000).await;
                let line = match (&sent, &got) {
                    (Ok(s), Ok(g)) => {
                        let handles: Vec<String> = g.iter().map(|r| r.handle.clone()).collect();
                        if !handles.is_empty() {
                            let _ = queue.delete_batch(&handles).await;
                        }
                        let bodies: Vec<&str> = g.iter().map(|r| r.body.as_str()).collect();
                        format!(
                            "{} ok {} got {bodies:?}",
                            sim_now_ms(),
                            s.iter().filter(|s| s.is_ok()).count()
                        )
                    }
                    _ => format!("{} failed {:?} {:?}", sim_now_ms(), sent.err(), got.err()),
                };
                trace.borrow_mut().push(format!("worker{worker} {line}"));
            }
            Ok(())
        });
    }
    sim.run().unwrap();
    let mut trace = trace.take();
    trace.push(format!("left {:?}", sqs.borrow().bodies("jobs")));
    trace
}

#[test]
fn the_same_seed_twice_gives_identical_outcomes_and_another_seed_does_not() {
    let first = busy_trace(7);
    assert!(first.iter().any(|l| l.contains("failed")), "the network never failed");
    assert_eq!(first, busy_trace(7));
    assert_ne!(first, busy_trace(8));
}

#[test]
fn calls_to_a_crashed_sqs_host_time_out_and_succeed_again_after_its_restart() {
    let (mut sim, _sqs, _s3) = cloud(5, SqsFaults::default());
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&outcomes);
    sim.client("client", async move {
        let queue = jobs();
        queue.ensure().await?;
        for i in 0..30 {
            let outcome = queue.send_batch(&batch(i..i + 1)).await;
            seen.borrow_mut().push(match outcome {
                Ok(_) => "ok",
                Err(QueueError::Retryable { .. }) => "lost",
                Err(_) => "other",
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    });
    for _ in 0..300 {
        sim.step().unwrap();
    }
    sim.crash("sqs");
    for _ in 0..600 {
        sim.step().unwrap();
    }
    sim.bounce("sqs");
    sim.run().unwrap();
    let outcomes = outcomes.borrow().join(" ");
    assert!(outcomes.starts_with("ok ok"), "{outcomes}");
    assert!(outcomes.contains("ok lost"), "{outcomes}");
    assert!(outcomes.contains("lost ok"), "{outcomes}");
    assert!(outcomes.ends_with("ok ok"), "{outcomes}");
    assert!(!outcomes.contains("other"), "{outcomes}");
}

#[test]
fn a_queue_deleted_during_a_long_poll_answers_missing_and_refuses_recreation_for_a_minute() {
    let (mut sim, _sqs, _s3) = cloud(6, SqsFaults::default());
    sim.client("poller", async {
        let queue = jobs();
        queue.ensure().await?;
        let err = queue.receive(10, 30_000, 20_000).await.unwrap_err();
        assert!(matches!(err, QueueError::Missing { .. }), "{err:?}");
        match queue.ensure().await {
            Err(QueueError::DeletedRecently { retry_after_ms, .. }) => {
                assert!((50_000..=60_000).contains(&retry_after_ms), "{retry_after_ms}");
                tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
            }
            other => panic!("expected DeletedRecently, got {other:?}"),
        }
        queue.ensure().await?;
        assert!(queue.stats().await?.is_drained());
        Ok(())
    });
    sim.client("operator", async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        jobs().delete_queue().await?;
        Ok(())
    });
    sim.run().unwrap();
}

/// Every body any queue accepted, however often.
struct Accepted(Rc<RefCell<std::collections::BTreeSet<String>>>);

impl crate::hosts::SqsObserver for Accepted {
    fn accepted(&mut self, _queue: &str, body: &str) {
        self.0.borrow_mut().insert(body.into());
    }
}

#[test]
fn tallys_resilient_calls_get_every_body_accepted_through_a_queue_deletion_and_a_partition() {
    let (mut sim, sqs, _s3) = cloud(8, SqsFaults::default());
    let accepted = Rc::new(RefCell::new(std::collections::BTreeSet::new()));
    sqs.borrow_mut().set_observer(Box::new(Accepted(Rc::clone(&accepted))));
    sim.client("submitter", async {
        let queue = jobs();
        let clock = crate::doubles::clock::SimClock::new();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let calls = tally::core::retry::Calls {
            queue: &queue,
            clock: &clock,
            policy: tally::core::Policy::Real,
            shutdown: &shutdown,
        };
        queue.ensure().await?;
        for round in 0..20 {
            calls.send_all(&batch(round * 5..round * 5 + 5)).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    });
    sim.client("operator", async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        jobs().delete_queue().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        turmoil::partition("submitter", "sqs");
        tokio::time::sleep(Duration::from_secs(5)).await;
        turmoil::repair("submitter", "sqs");
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(*accepted.borrow(), batch(0..100).into_iter().collect());
    let left = sqs.borrow().bodies("jobs").len();
    assert!(
        (50..100).contains(&left),
        "{left} bodies left: the deletion destroyed none?"
    );
}

#[test]
fn a_request_over_the_frame_limit_is_refused_unsent_with_its_size_and_the_next_one_goes_through() {
    let (mut sim, _sqs, s3) = cloud(3, SqsFaults::default());
    sim.client("client", async {
        let store = SimStore::new(RpcConfig::new("s3"));
        let err = store.put_if_absent("big", vec![7; FRAME_BYTES_MAX]).await.unwrap_err();
        match err {
            StoreError::Permanent { code, message } => {
                assert_eq!(code, "EntityTooLarge");
                let len: usize = message
                    .strip_prefix("a ")
                    .and_then(|m| m.split('-').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no size in {message:?}"));
                assert!(len > FRAME_BYTES_MAX, "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.put_if_absent("small", vec![1]).await?, PutOutcome::Created);
        Ok(())
    });
    sim.run().unwrap();
    assert!(s3.borrow().object("big").is_none());
    assert!(s3.borrow().object("small").is_some());
}
