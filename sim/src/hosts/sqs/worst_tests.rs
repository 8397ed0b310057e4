//! Tests of the [`SqsWorstCase`] knobs and the retention override: each
//! shows the harsher behaviour with its knob on.

use std::cell::RefCell;
use std::rc::Rc;

use tally::core::QueueError;

use super::*;

const Q: &str = "jobs";

fn worst_model(seed: u64, worst: SqsWorstCase) -> (SqsModel, Rc<RefCell<Seen>>) {
    let mut m = SqsModel::new(seed, SqsFaults::default());
    m.set_worst_case(worst);
    let seen = Rc::new(RefCell::new(Seen::default()));
    m.set_observer(Box::new(Rc::clone(&seen)));
    m.ensure(Q, &QueueAttrs::default(), 0).unwrap();
    (m, seen)
}

fn send(m: &mut SqsModel, n: u32, now_ms: u64) {
    for start in (0..n).step_by(10) {
        let batch: Vec<String> = (start..(start + 10).min(n)).map(|i| format!("job-{i}")).collect();
        assert!(m.send_batch(Q, &batch, now_ms).unwrap().iter().all(Result::is_ok));
    }
}

#[derive(Default)]
struct Seen {
    deleted: Vec<String>,
    destroyed: Vec<String>,
}

impl SqsObserver for Rc<RefCell<Seen>> {
    fn deleted(&mut self, _queue: &str, body: &str) {
        self.borrow_mut().deleted.push(body.into());
    }
    fn destroyed(&mut self, _queue: &str, body: &str) {
        self.borrow_mut().destroyed.push(body.into());
    }
}

fn entry_code(statuses: &[Result<(), tally::core::EntryError>]) -> &str {
    &statuses[0].as_ref().expect_err("the entry should fail").code
}

#[test]
fn counts_lag_behind_by_up_to_the_count_lag_and_then_catch_up() {
    let worst = SqsWorstCase {
        count_lag_ms: 60_000,
        ..SqsWorstCase::default()
    };
    let (mut m, _) = worst_model(1, worst);
    assert_eq!(m.stats(Q, 0).unwrap().visible, 0);
    send(&mut m, 5, 10);
    assert_eq!(m.stats(Q, 59_999).unwrap().visible, 0, "a count fresher than the lag");
    assert_eq!(m.stats(Q, 60_000).unwrap().visible, 5);
}

#[test]
fn an_undercount_reports_fewer_messages_than_there_are_down_to_zero() {
    let worst = SqsWorstCase {
        undercount_rate: 1.0,
        ..SqsWorstCase::default()
    };
    let (mut m, _) = worst_model(2, worst);
    send(&mut m, 10, 0);
    let counts: Vec<u64> = (0..50).map(|t| m.stats(Q, t).unwrap().visible).collect();
    assert!(counts.iter().all(|&n| n < 10), "{counts:?}");
    assert!(counts.contains(&0), "{counts:?}");
}

fn latent_worst() -> SqsWorstCase {
    SqsWorstCase {
        latent_duplicate_max_ms: 4 * 3_600_000,
        ..SqsWorstCase::default()
    }
}

fn always_duplicate(m: &mut SqsModel) {
    m.set_faults(SqsFaults {
        duplicate_rate: 1.0,
        ..SqsFaults::default()
    });
}

#[test]
fn a_latent_duplicate_is_invisible_uncounted_and_undeletable_until_its_time() {
    let (mut m, seen) = worst_model(3, latent_worst());
    always_duplicate(&mut m);
    send(&mut m, 1, 0);
    let got = m.receive(Q, 10, 30_000, 0).unwrap();
    m.set_faults(SqsFaults::default());
    assert_eq!(m.latent_pending(Q), 1);
    m.delete_batch(Q, &[got[0].handle.clone()], 10).unwrap();
    assert_eq!(seen.borrow().deleted, vec!["job-0"]);
    assert!(m.stats(Q, 10).unwrap().is_drained(), "a latent copy was counted");
    assert!(m.bodies(Q).is_empty());
    let due_ms = m.next_latent_ms(Q).expect("a latent copy is pending");
    assert!((1_000..=4 * 3_600_000).contains(&due_ms), "{due_ms}");
    assert_eq!(
        m.next_visible_ms(Q, 10),
        Some(due_ms),
        "the long-poll parker must wake for it"
    );
    assert!(m.receive(Q, 10, 30_000, due_ms - 1).unwrap().is_empty());
    let again = m.receive(Q, 10, 30_000, due_ms).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, "job-0");
    assert_eq!(again[0].message_id, got[0].message_id);
    assert_eq!(m.latent_pending(Q), 0);
}

#[test]
fn latent_duplicates_reappear_after_seconds_often_and_after_hours_sometimes() {
    let (mut m, _) = worst_model(4, latent_worst());
    always_duplicate(&mut m);
    send(&mut m, 300, 0);
    for _ in 0..30 {
        m.receive(Q, 10, 30_000, 0).unwrap();
    }
    let mut delays = Vec::new();
    let mut now_ms = 0;
    m.set_faults(SqsFaults::default());
    while let Some(due_ms) = m.next_latent_ms(Q) {
        delays.push(due_ms);
        now_ms = now_ms.max(due_ms);
        m.receive(Q, 10, VISIBILITY_MAX_MS, now_ms).unwrap();
    }
    assert_eq!(delays.len(), 300);
    assert!(
        delays.iter().filter(|&&d| d < 10_000).count() > 30,
        "few delays of seconds"
    );
    assert!(delays.iter().any(|&d| d > 3_600_000), "no delay of hours");
}

#[test]
fn a_queue_deletion_destroys_its_latent_duplicates_too() {
    let (mut m, seen) = worst_model(5, latent_worst());
    always_duplicate(&mut m);
    send(&mut m, 2, 0);
    let got = m.receive(Q, 10, 30_000, 0).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(m.latent_pending(Q), 2);
    m.delete_queue(Q, 10).unwrap();
    assert_eq!(seen.borrow().destroyed.len(), 4);
    assert_eq!(m.latent_pending(Q), 0);
    assert_eq!(m.next_latent_ms(Q), None);
}

#[test]
fn a_deleted_queue_keeps_working_through_its_deletion_window_then_vanishes_with_every_copy() {
    let worst = SqsWorstCase {
        deletion_window_max_ms: 60_000,
        ..SqsWorstCase::default()
    };
    let (mut m, seen) = worst_model(6, worst);
    m.ensure("other", &QueueAttrs::default(), 0).unwrap();
    send(&mut m, 3, 0);
    m.delete_queue(Q, 1_000).unwrap();
    // Within the window every call still works, but the name cannot be
    // taken again.
    send(&mut m, 2, 1_001);
    let got = m.receive(Q, 1, 30_000, 1_001).unwrap();
    m.delete_batch(Q, &[got[0].handle.clone()], 1_001).unwrap();
    m.delete_queue(Q, 1_002).unwrap();
    assert!(matches!(
        m.ensure(Q, &QueueAttrs::default(), 1_002),
        Err(QueueError::DeletedRecently { .. })
    ));
    assert!(m.exists(Q));
    // Any call at or after the window's end makes the queue vanish.
    m.stats("other", 61_000).unwrap();
    assert!(!m.exists(Q));
    assert!(m.bodies(Q).is_empty());
    assert_eq!(m.next_visible_ms(Q, 61_000), None);
    assert_eq!(
        seen.borrow().destroyed.len(),
        4,
        "every copy left, sent in the window or not"
    );
    assert!(matches!(m.stats(Q, 61_000), Err(QueueError::Missing { .. })));
    m.ensure(Q, &QueueAttrs::default(), 61_000).unwrap();
}

#[test]
fn a_long_poll_parker_is_told_when_a_queue_in_its_deletion_window_vanishes() {
    let worst = SqsWorstCase {
        deletion_window_max_ms: 60_000,
        ..SqsWorstCase::default()
    };
    let (mut m, _) = worst_model(18, worst);
    m.delete_queue(Q, 1_000).unwrap();
    let vanish_ms = m
        .next_visible_ms(Q, 1_000)
        .expect("the vanishing is a change to wake for");
    assert!((1_001..=61_000).contains(&vanish_ms), "{vanish_ms}");
    m.advance(vanish_ms - 1);
    assert!(m.exists(Q));
    m.advance(vanish_ms);
    assert!(!m.exists(Q));
    assert!(m.queue_names().is_empty());
}

#[test]
fn the_retention_override_expires_in_flight_messages_and_a_handle_cannot_bring_them_back() {
    let mut m = SqsModel::new(7, SqsFaults::default());
    m.set_retention_ms(Some(1_000));
    let seen = Rc::new(RefCell::new(Seen::default()));
    m.set_observer(Box::new(Rc::clone(&seen)));
    m.ensure(Q, &QueueAttrs::default(), 0).unwrap();
    assert_eq!(m.attrs(Q), Some(&QueueAttrs::default()), "the attributes stay as asked");
    send(&mut m, 2, 0);
    let got = m.receive(Q, 2, 10_000, 0).unwrap();
    let deleted = m.delete_batch(Q, &[got[0].handle.clone()], 1_500).unwrap();
    assert_eq!(deleted, vec![Ok(())]);
    let changed = m
        .change_visibility_batch(Q, &[got[1].handle.clone()], 0, 1_500)
        .unwrap();
    assert_eq!(entry_code(&changed), "ReceiptHandleIsInvalid");
    assert!(m.receive(Q, 10, 0, 20_000).unwrap().is_empty());
    let seen = seen.borrow();
    assert!(
        seen.deleted.is_empty(),
        "an expired message was deleted: {:?}",
        seen.deleted
    );
    assert_eq!(seen.destroyed.len(), 2, "each destroyed once: {:?}", seen.destroyed);
}

#[test]
fn counts_under_the_retention_override_drop_expired_messages_when_refreshed() {
    let worst = SqsWorstCase {
        count_lag_ms: 5_000,
        ..SqsWorstCase::default()
    };
    let mut m = SqsModel::new(8, SqsFaults::default());
    m.set_worst_case(worst);
    m.set_retention_ms(Some(1_000));
    let seen = Rc::new(RefCell::new(Seen::default()));
    m.set_observer(Box::new(Rc::clone(&seen)));
    m.ensure(Q, &QueueAttrs::default(), 0).unwrap();
    send(&mut m, 3, 0);
    m.receive(Q, 1, 60_000, 0).unwrap();
    assert_eq!(m.stats(Q, 0).unwrap().visible, 2);
    assert_eq!(m.stats(Q, 4_999).unwrap().visible, 2, "counted until the lag is over");
    assert!(m.stats(Q, 5_000).unwrap().is_drained());
    assert_eq!(seen.borrow().destroyed.len(), 3);
}

#[test]
fn a_delete_with_a_lapsed_handle_fails_at_the_stale_handle_fail_rate() {
    let worst = SqsWorstCase {
        stale_handle_fail_rate: 1.0,
        ..SqsWorstCase::default()
    };
    let (mut m, _) = worst_model(9, worst);
    send(&mut m, 1, 0);
    let got = m.receive(Q, 1, 100, 0).unwrap();
    let statuses = m.delete_batch(Q, &[got[0].handle.clone()], 200).unwrap();
    assert_eq!(entry_code(&statuses), "ReceiptHandleIsInvalid");
    assert!(!statuses[0].as_ref().unwrap_err().retryable);
    assert_eq!(m.stats(Q, 200).unwrap().visible, 1);
    // A handle within its visibility still deletes.
    let again = m.receive(Q, 1, 100, 200).unwrap();
    assert_eq!(
        m.delete_batch(Q, &[again[0].handle.clone()], 250).unwrap(),
        vec![Ok(())]
    );
    assert!(m.stats(Q, 250).unwrap().is_drained());
}

#[test]
fn a_delete_with_the_handle_of_an_earlier_receive_deletes_at_the_stale_delete_rate() {
    let worst = SqsWorstCase {
        stale_delete_deletes_rate: 1.0,
        ..SqsWorstCase::default()
    };
    let (mut m, seen) = worst_model(10, worst);
    send(&mut m, 1, 0);
    let first = m.receive(Q, 1, 100, 0).unwrap().remove(0);
    let _second = m.receive(Q, 1, 100, 200).unwrap().remove(0);
    assert_eq!(m.delete_batch(Q, &[first.handle], 250).unwrap(), vec![Ok(())]);
    assert!(
        m.stats(Q, 250).unwrap().is_drained(),
        "the stale delete deleted nothing"
    );
    assert_eq!(seen.borrow().deleted, vec!["job-0"]);
}

#[test]
fn a_receipt_handle_fails_as_expired_twelve_hours_after_its_receive() {
    let (mut m, _) = worst_model(11, SqsWorstCase::default());
    send(&mut m, 1, 0);
    let got = m.receive(Q, 1, 100, 0).unwrap().remove(0);
    let handles = [got.handle];
    let deleted = m.delete_batch(Q, &handles, VISIBILITY_MAX_MS).unwrap();
    assert_eq!(entry_code(&deleted), "InvalidParameterValue");
    assert!(deleted[0].as_ref().unwrap_err().message.contains("expired"));
    let changed = m.change_visibility_batch(Q, &handles, 0, VISIBILITY_MAX_MS).unwrap();
    assert_eq!(entry_code(&changed), "InvalidParameterValue");
    assert_eq!(m.stats(Q, VISIBILITY_MAX_MS).unwrap().visible, 1);
}

#[test]
fn a_stingy_short_poll_may_return_none_and_a_stingy_long_poll_fewer_but_at_least_one() {
    let worst = SqsWorstCase {
        short_receive_rate: 1.0,
        ..SqsWorstCase::default()
    };
    let (mut m, _) = worst_model(12, worst);
    send(&mut m, 1_000, 0);
    let short: Vec<usize> = (0..40).map(|_| m.receive(Q, 10, 60_000, 0).unwrap().len()).collect();
    assert!(short.iter().all(|&n| n < 10), "{short:?}");
    assert!(short.contains(&0), "{short:?}");
    let long: Vec<usize> = (0..40)
        .map(|_| m.receive_long(Q, 10, 60_000, 0).unwrap().len())
        .collect();
    assert!(long.iter().all(|&n| (1..10).contains(&n)), "{long:?}");
}

#[test]
fn a_long_poll_at_the_in_flight_limit_finds_nothing_while_a_short_poll_is_over_limit() {
    let (mut m, _) = worst_model(13, SqsWorstCase::default());
    m.set_in_flight_max(5);
    send(&mut m, 10, 0);
    assert_eq!(m.receive(Q, 5, 1_000, 0).unwrap().len(), 5);
    assert_eq!(m.receive_long(Q, 5, 1_000, 0).unwrap().len(), 0);
    assert!(matches!(m.receive(Q, 1, 1_000, 0), Err(QueueError::Retryable { .. })));
}

#[test]
fn a_new_queue_answers_missing_until_it_is_ready_but_ensure_succeeds() {
    let worst = SqsWorstCase {
        create_ready_ms: 1_000,
        ..SqsWorstCase::default()
    };
    let (mut m, _) = worst_model(14, worst);
    let batch = vec!["job".to_string()];
    assert!(matches!(m.send_batch(Q, &batch, 999), Err(QueueError::Missing { .. })));
    assert!(matches!(m.stats(Q, 999), Err(QueueError::Missing { .. })));
    assert!(matches!(m.receive(Q, 1, 0, 999), Err(QueueError::Missing { .. })));
    m.ensure(Q, &QueueAttrs::default(), 999).unwrap();
    assert!(m.send_batch(Q, &batch, 1_000).is_ok());
}

#[test]
fn throttling_fails_whole_calls_retryably_before_applying_them() {
    let worst = SqsWorstCase {
        throttle_rate: 0.5,
        ..SqsWorstCase::default()
    };
    let (mut m, _) = worst_model(15, worst);
    let mut sent = 0;
    let mut throttled = 0;
    for i in 0..100 {
        match m.send_batch(Q, &[format!("job-{i}")], 0) {
            Ok(_) => sent += 1,
            Err(QueueError::Retryable { code, .. }) if code == "RequestThrottled" => throttled += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!((25..75).contains(&throttled), "{throttled} throttled");
    m.set_worst_case(SqsWorstCase::default());
    assert_eq!(m.stats(Q, 0).unwrap().visible, sent);
}

#[test]
fn a_purge_destroys_every_message_at_the_end_of_its_window_including_ones_sent_during_it() {
    let worst = SqsWorstCase {
        purge_window_max_ms: 60_000,
        ..SqsWorstCase::default()
    };
    let (mut m, seen) = worst_model(16, worst);
    send(&mut m, 3, 0);
    m.purge(Q, 1_000).unwrap();
    send(&mut m, 2, 1_001);
    assert_eq!(m.stats(Q, 1_001).unwrap().visible, 5, "purged at once");
    match m.purge(Q, 60_999) {
        Err(QueueError::Retryable { code, .. }) => assert_eq!(code, PURGE_QUEUE_IN_PROGRESS),
        other => panic!("expected PurgeQueueInProgress, got {other:?}"),
    }
    assert!(m.stats(Q, 61_000).unwrap().is_drained());
    assert_eq!(seen.borrow().destroyed.len(), 5);
    send(&mut m, 1, 61_000);
    m.purge(Q, 61_000).unwrap();
}

#[test]
fn a_purge_without_a_window_destroys_every_copy_at_once() {
    let (mut m, seen) = worst_model(17, SqsWorstCase::default());
    send(&mut m, 3, 0);
    m.receive(Q, 1, 30_000, 0).unwrap();
    m.purge(Q, 0).unwrap();
    assert!(m.stats(Q, 0).unwrap().is_drained());
    assert_eq!(seen.borrow().destroyed.len(), 3);
}

/// Everything a client sees of one queue over a random run of calls, with
/// the queue deleted at `delete_ms`, and the model's record of destroyed
/// copies. CreateQueue is left out: it is the one call that tells a queue
/// in its deletion window from a live one (it is refused).
fn client_view(seed: u64, worst: SqsWorstCase, delete_ms: u64) -> (Vec<String>, Vec<String>, u64) {
    use rand::{Rng, SeedableRng};
    let (mut m, seen) = worst_model(seed, worst);
    let mut ops = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut view, mut held, mut deleted) = (Vec::new(), Vec::<String>::new(), false);
    let mut vanish_ms = delete_ms;
    let mut sent = 0u32;
    for step in 0..800u64 {
        let now_ms = step * 250;
        if !deleted && now_ms >= delete_ms {
            m.delete_queue(Q, delete_ms).unwrap();
            vanish_ms = m.deadlines.first().map_or(delete_ms, |d| d.0);
            deleted = true;
        }
        let seen_now = match ops.random_range(0..5) {
            0 => {
                let bodies: Vec<String> = (0..ops.random_range(1..=10))
                    .map(|i| format!("job-{sent}-{i}"))
                    .collect();
                sent += 1;
                format!("{:?}", m.send_batch(Q, &bodies, now_ms))
            }
            1 | 2 => {
                let got = m.receive(Q, ops.random_range(1..=10), ops.random_range(500..=5_000), now_ms);
                if let Ok(got) = &got {
                    held.extend(got.iter().map(|r| r.handle.clone()));
                }
                format!("{got:?}")
            }
            3 => {
                let take = ops.random_range(0..=held.len().min(10));
                let handles: Vec<String> = held.drain(..take).collect();
                format!("{:?}", m.delete_batch(Q, &handles, now_ms))
            }
            _ => format!("{:?}", m.stats(Q, now_ms)),
        };
        view.push(format!("{now_ms}: {seen_now}"));
    }
    let destroyed = seen.borrow().destroyed.clone();
    (view, destroyed, vanish_ms)
}

/// Why no protocol bug can be exposed by the deletion window alone: to
/// every call but CreateQueue, a queue deleted at `t` that vanishes at `v`
/// looks exactly like one deleted at once at `v`. Same answers to sends,
/// receives, deletes and counts, the same copies destroyed.
#[test]
fn a_deletion_window_looks_to_every_call_but_create_queue_like_an_instant_deletion_at_its_end() {
    let window = SqsWorstCase {
        deletion_window_max_ms: 60_000,
        ..SqsWorstCase::default()
    };
    let mut vanished_later = 0;
    for seed in 0..50 {
        let delete_ms = 10_000 + seed * 1_000;
        let (slow, slow_destroyed, vanish_ms) = client_view(seed, window, delete_ms);
        let (instant, instant_destroyed, _) = client_view(seed, SqsWorstCase::default(), vanish_ms);
        assert_eq!(slow, instant, "seed {seed}: the answers differ");
        assert_eq!(slow_destroyed, instant_destroyed, "seed {seed}");
        assert!(
            slow.iter().any(|a| a.contains("Missing")),
            "seed {seed}: never vanished"
        );
        vanished_later += usize::from(vanish_ms > delete_ms);
    }
    assert!(vanished_later > 40, "the windows were mostly empty: {vanished_later}");
}
