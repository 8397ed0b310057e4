use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use tally::core::QueueError;

use super::*;

const Q: &str = "jobs";

fn model(seed: u64) -> SqsModel {
    let mut m = SqsModel::new(seed, SqsFaults::default());
    m.ensure(Q, &QueueAttrs::default(), 0).unwrap();
    m
}

fn bodies(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("job-{i}")).collect()
}

fn send_all(m: &mut SqsModel, n: u32, now_ms: u64) {
    for start in (0..n).step_by(10) {
        let batch = bodies(start..(start + 10).min(n));
        let statuses = m.send_batch(Q, &batch, now_ms).unwrap();
        assert!(statuses.iter().all(Result::is_ok));
    }
}

#[test]
fn a_received_message_is_hidden_until_its_visibility_runs_out_then_redelivered() {
    let mut m = model(1);
    send_all(&mut m, 1, 0);
    let first = m.receive(Q, 10, 1_000, 0).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert!(m.receive(Q, 10, 1_000, 999).unwrap().is_empty());
    let again = m.receive(Q, 10, 1_000, 1_000).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, first[0].body);
    assert_eq!(again[0].message_id, first[0].message_id);
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].handle, first[0].handle);
}

#[test]
fn a_delete_with_a_stale_handle_succeeds_and_deletes_nothing() {
    let mut m = model(2);
    send_all(&mut m, 1, 0);
    let first = m.receive(Q, 1, 100, 0).unwrap().remove(0);
    let second = m.receive(Q, 1, 100, 200).unwrap().remove(0);
    let statuses = m.delete_batch(Q, &[first.handle], 250).unwrap();
    assert_eq!(statuses, vec![Ok(())]);
    assert_eq!(m.stats(Q, 250).unwrap().in_flight, 1);
    m.delete_batch(Q, &[second.handle], 250).unwrap();
    assert!(m.stats(Q, 250).unwrap().is_drained());
}

#[test]
fn a_visibility_change_with_a_stale_handle_fails_that_entry_only() {
    let mut m = model(3);
    send_all(&mut m, 2, 0);
    let got = m.receive(Q, 2, 100, 0).unwrap();
    let stale = got[0].handle.clone();
    // Let the first message reappear and receive it again.
    m.change_visibility_batch(Q, &[got[1].handle.clone()], 10_000, 50)
        .unwrap();
    let again = m.receive(Q, 1, 100, 100).unwrap();
    assert_eq!(again[0].body, got[0].body);
    let statuses = m
        .change_visibility_batch(Q, &[stale, got[1].handle.clone()], 5_000, 120)
        .unwrap();
    assert_eq!(statuses[0].as_ref().unwrap_err().code, "ReceiptHandleIsInvalid");
    assert!(statuses[1].is_ok());
}

#[test]
fn a_message_goes_to_the_dead_letter_queue_on_the_receive_after_max_receives() {
    let mut m = SqsModel::new(4, SqsFaults::default());
    m.ensure("dlq", &QueueAttrs::default(), 0).unwrap();
    let attrs = QueueAttrs {
        max_receives: Some(2),
        dead_letter: Some("dlq".into()),
        ..QueueAttrs::default()
    };
    m.ensure(Q, &attrs, 0).unwrap();
    send_all(&mut m, 1, 0);
    assert_eq!(m.receive(Q, 1, 10, 0).unwrap()[0].receive_count, 1);
    assert_eq!(m.receive(Q, 1, 10, 10).unwrap()[0].receive_count, 2);
    assert!(m.receive(Q, 1, 10, 20).unwrap().is_empty());
    assert!(m.stats(Q, 20).unwrap().is_drained());
    assert_eq!(m.receive("dlq", 1, 10, 20).unwrap()[0].body, "job-0");
}

#[test]
fn every_call_on_a_deleted_queue_is_missing_with_the_provider_code() {
    let mut m = model(5);
    send_all(&mut m, 3, 0);
    m.delete_queue(Q, 1_000).unwrap();
    let code = |e: QueueError| match e {
        QueueError::Missing { code, .. } => code,
        other => panic!("expected Missing, got {other:?}"),
    };
    assert_eq!(code(m.receive(Q, 1, 10, 1_000).unwrap_err()), NON_EXISTENT_QUEUE);
    assert_eq!(
        code(m.send_batch(Q, &bodies(0..1), 1_000).unwrap_err()),
        NON_EXISTENT_QUEUE
    );
    assert_eq!(
        code(m.delete_batch(Q, &["1.1.1".into()], 1_000).unwrap_err()),
        NON_EXISTENT_QUEUE
    );
    assert_eq!(
        code(m.change_visibility_batch(Q, &["1.1.1".into()], 0, 1_000).unwrap_err()),
        NON_EXISTENT_QUEUE
    );
    assert_eq!(code(m.stats(Q, 1_000).unwrap_err()), NON_EXISTENT_QUEUE);
    assert_eq!(code(m.delete_queue(Q, 1_000).unwrap_err()), NON_EXISTENT_QUEUE);
}

#[test]
fn a_deleted_queue_cannot_be_recreated_for_sixty_seconds_and_comes_back_empty() {
    let mut m = model(6);
    send_all(&mut m, 3, 0);
    m.delete_queue(Q, 1_000).unwrap();
    match m.ensure(Q, &QueueAttrs::default(), 60_999) {
        Err(QueueError::DeletedRecently {
            retry_after_ms, code, ..
        }) => {
            assert_eq!(retry_after_ms, 1);
            assert_eq!(code, QUEUE_DELETED_RECENTLY);
        }
        other => panic!("expected DeletedRecently, got {other:?}"),
    }
    m.ensure(Q, &QueueAttrs::default(), 61_000).unwrap();
    assert!(m.stats(Q, 61_000).unwrap().is_drained());
}

#[test]
fn ensure_with_other_attributes_on_an_existing_queue_is_refused() {
    let mut m = model(7);
    let other = QueueAttrs {
        visibility_ms: 5,
        ..QueueAttrs::default()
    };
    assert!(matches!(m.ensure(Q, &other, 0), Err(QueueError::Permanent { .. })));
    m.ensure(Q, &QueueAttrs::default(), 0).unwrap();
}

#[test]
fn batches_over_ten_entries_or_one_mebibyte_or_empty_are_permanent_errors() {
    let mut m = model(8);
    let permanent = |r: Result<Vec<Result<(), tally::core::EntryError>>, QueueError>| {
        matches!(r, Err(QueueError::Permanent { .. }))
    };
    assert!(permanent(m.send_batch(Q, &bodies(0..11), 0)));
    assert!(permanent(m.send_batch(Q, &[], 0)));
    assert!(permanent(m.send_batch(Q, &["x".repeat(BATCH_BYTES_MAX + 1)], 0)));
    let handles: Vec<String> = (0..11).map(|i| format!("{i}.1.1")).collect();
    assert!(permanent(m.delete_batch(Q, &handles, 0)));
    assert!(permanent(m.change_visibility_batch(Q, &handles, 0, 0)));
    assert!(matches!(m.receive(Q, 11, 0, 0), Err(QueueError::Permanent { .. })));
    assert!(m.send_batch(Q, &["x".repeat(BATCH_BYTES_MAX)], 0).is_ok());
}

/// Receive and delete everything; count deliveries per message id.
fn drain(m: &mut SqsModel) -> BTreeMap<String, u32> {
    let mut deliveries = BTreeMap::new();
    let mut now_ms = 0;
    loop {
        let got = m.receive(Q, 10, 30_000, now_ms).unwrap();
        if got.is_empty() && m.stats(Q, now_ms).unwrap().is_drained() {
            return deliveries;
        }
        for r in &got {
            *deliveries.entry(r.message_id.clone()).or_insert(0) += 1;
        }
        for chunk in got.chunks(10) {
            let handles: Vec<String> = chunk.iter().map(|r| r.handle.clone()).collect();
            m.delete_batch(Q, &handles, now_ms).unwrap();
        }
        now_ms += 1;
    }
}

#[test]
fn duplicate_delivery_happens_at_about_the_configured_rate_and_never_at_rate_zero() {
    let mut m = model(9);
    m.set_faults(SqsFaults {
        duplicate_rate: 0.01,
        ..SqsFaults::default()
    });
    send_all(&mut m, 20_000, 0);
    let duplicated = drain(&mut m).values().filter(|&&n| n > 1).count();
    // 1% of 20,000 (plus copies of copies): about 200.
    assert!((140..=280).contains(&duplicated), "{duplicated} duplicated");

    let mut m = model(9);
    send_all(&mut m, 20_000, 0);
    let deliveries = drain(&mut m);
    assert_eq!(deliveries.len(), 20_000);
    assert!(deliveries.values().all(|&n| n == 1));
}

#[test]
fn delivery_is_unordered_but_the_same_seed_gives_the_same_order() {
    let order = |seed| {
        let mut m = model(seed);
        send_all(&mut m, 50, 0);
        let got = m.receive(Q, 10, 1_000, 0).unwrap();
        got.into_iter().map(|r| r.body).collect::<Vec<_>>()
    };
    assert_eq!(order(11), order(11));
    assert_ne!(order(11), bodies(0..10), "delivery kept send order");
    assert_ne!(order(11), order(12));
}

#[test]
fn injected_entry_failures_are_retryable_and_leave_the_entry_unsent() {
    let mut m = model(13);
    m.set_faults(SqsFaults {
        entry_failure_rate: 0.5,
        ..SqsFaults::default()
    });
    let statuses = m.send_batch(Q, &bodies(0..10), 0).unwrap();
    let failed = statuses.iter().filter(|s| s.is_err()).count();
    assert!(failed > 0 && failed < 10, "{failed} of 10 failed");
    assert!(statuses.iter().flatten().count() + failed == 10);
    assert!(statuses.iter().filter_map(|s| s.as_ref().err()).all(|e| e.retryable));
    assert_eq!(m.stats(Q, 0).unwrap().visible, (10 - failed) as u64);
}

#[test]
fn messages_past_their_retention_are_destroyed_not_delivered() {
    let mut m = SqsModel::new(14, SqsFaults::default());
    let attrs = QueueAttrs {
        retention_ms: 60_000,
        ..QueueAttrs::default()
    };
    m.ensure(Q, &attrs, 0).unwrap();
    let log = Rc::new(RefCell::new(Log::default()));
    m.set_observer(Box::new(Rc::clone(&log)));
    send_all(&mut m, 3, 0);
    assert!(m.receive(Q, 10, 0, 60_000).unwrap().is_empty());
    assert_eq!(log.borrow().destroyed.len(), 3);
}

#[test]
fn visibility_cannot_be_extended_past_twelve_hours_from_the_first_receive() {
    let mut m = model(15);
    send_all(&mut m, 1, 0);
    let r = m.receive(Q, 1, VISIBILITY_MAX_MS - 1_000, 0).unwrap().remove(0);
    let now_ms = VISIBILITY_MAX_MS - 2_000;
    let ok = m
        .change_visibility_batch(Q, std::slice::from_ref(&r.handle), 2_000, now_ms)
        .unwrap();
    assert!(ok[0].is_ok());
    let late = m.change_visibility_batch(Q, &[r.handle], 2_001, now_ms).unwrap();
    assert_eq!(late[0].as_ref().unwrap_err().code, "InvalidParameterValue");
}

#[test]
fn receives_fail_as_over_limit_when_too_many_messages_are_in_flight() {
    let mut m = model(16);
    m.set_in_flight_max(5);
    send_all(&mut m, 10, 0);
    assert_eq!(m.receive(Q, 5, 1_000, 0).unwrap().len(), 5);
    assert!(matches!(m.receive(Q, 1, 1_000, 0), Err(QueueError::Retryable { .. })));
}

#[derive(Default)]
struct Log {
    accepted: Vec<String>,
    deleted: Vec<String>,
    destroyed: Vec<String>,
    delivered: Vec<(String, u32)>,
}

impl SqsObserver for Rc<RefCell<Log>> {
    fn accepted(&mut self, _queue: &str, body: &str) {
        self.borrow_mut().accepted.push(body.into());
    }
    fn deleted(&mut self, _queue: &str, body: &str) {
        self.borrow_mut().deleted.push(body.into());
    }
    fn destroyed(&mut self, _queue: &str, body: &str) {
        self.borrow_mut().destroyed.push(body.into());
    }
    fn delivered(&mut self, _queue: &str, body: &str, receive_count: u32) {
        self.borrow_mut().delivered.push((body.into(), receive_count));
    }
}

#[test]
fn the_observer_sees_accepted_delivered_deleted_and_destroyed_bodies() {
    let mut m = model(17);
    let log = Rc::new(RefCell::new(Log::default()));
    m.set_observer(Box::new(Rc::clone(&log)));
    send_all(&mut m, 2, 0);
    let got = m.receive(Q, 1, 1_000, 0).unwrap();
    m.delete_batch(Q, &[got[0].handle.clone()], 0).unwrap();
    m.delete_queue(Q, 0).unwrap();
    let log = log.borrow();
    assert_eq!(log.accepted, bodies(0..2));
    assert_eq!(log.delivered, vec![(got[0].body.clone(), 1)]);
    assert_eq!(log.deleted, vec![got[0].body.clone()]);
    assert_eq!(log.destroyed.len(), 1);
    assert_ne!(log.destroyed[0], got[0].body);
}

#[test]
fn an_old_message_is_not_starved_by_a_stream_of_new_ones() {
    let mut m = model(18);
    m.send_batch(Q, &["old".to_string()], 0).unwrap();
    send_all(&mut m, 5_000, 0);
    for round in 0..2_000 {
        let got = m.receive(Q, 10, 30_000, round).unwrap();
        if got.iter().any(|r| r.body == "old") {
            return;
        }
        let handles: Vec<String> = got.into_iter().map(|r| r.handle).collect();
        m.delete_batch(Q, &handles, round).unwrap();
        let fresh: Vec<String> = (0..10).map(|i| format!("new-{round}-{i}")).collect();
        m.send_batch(Q, &fresh, round).unwrap();
    }
    panic!("the oldest message was never delivered");
}

#[test]
fn a_reorder_window_of_one_delivers_oldest_first() {
    let mut m = model(19);
    m.set_reorder_window(1);
    send_all(&mut m, 30, 0);
    let got: Vec<String> = m
        .receive(Q, 10, 1_000, 0)
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(got, bodies(0..10));
}
