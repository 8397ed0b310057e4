//! The worker's batch machine, driven by hand and by random event orders,
//! with no runtime.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::core::{Outcome, ResultStatus};

const SWEEP: &str = "s";

fn limits(policy: Policy) -> Limits {
    Limits {
        batch_max: 10,
        result_flush_ms: 1_000,
        visibility_ms: 30_000,
        policy,
    }
}

/// A job message for `index`, received `receive_count` times, with handle
/// `h<index>`; indices from 100 are outside the sweep, 200 is not a job.
fn incoming(index: u64, receive_count: u32) -> Incoming {
    let body = if index == 200 {
        "not a job".to_owned()
    } else {
        JobMessage::new(SWEEP, index, 1).encode()
    };
    Incoming {
        job: JobMessage::decode(&body),
        msg: Received {
            body,
            handle: format!("h{index}"),
            message_id: format!("m{index}"),
            receive_count,
        },
        limits: Some((100, 3)),
        cancelled: false,
    }
}

fn result_of(job: &Job) -> ResultMessage {
    ResultMessage {
        tally: 1,
        sweep: job.job.sweep.clone(),
        index: job.job.index,
        attempt: job.job.attempt,
        receive_count: job.receive_count,
        run_id: format!("w.0-{}", job.job.index),
        worker: "w".into(),
        started_ms: 0,
        duration_ms: 1,
        outcome: Outcome {
            status: ResultStatus::Ok,
            exit_code: Some(0),
            metrics: None,
            stdout: None,
            stderr_tail: String::new(),
        },
    }
}

fn run_of(actions: &[Action]) -> Job {
    match actions.last() {
        Some(Action::Run(job)) => job.clone(),
        other => panic!("expected a job to start, got {other:?}"),
    }
}

/// The handles `batch` holds, sorted, as its heartbeat names them.
fn held(batch: &Batch) -> Vec<String> {
    match batch.beat() {
        Action::Extend { mut handles, .. } => {
            handles.sort();
            handles
        }
        other => panic!("a heartbeat extends, it does not {other:?}"),
    }
}

fn handles(n: u64) -> Vec<String> {
    (0..n).map(|i| format!("h{i}")).collect()
}

#[test]
fn a_job_is_deleted_only_after_its_result_is_acknowledged() {
    let (mut batch, actions) = Batch::received(limits(Policy::Real), vec![incoming(0, 1), incoming(1, 1)]);
    let first = run_of(&actions);
    assert_eq!(actions.len(), 1, "nothing but the first run: {actions:?}");
    let actions = batch.finished(&result_of(&first), 0);
    let second = run_of(&actions);
    assert_eq!(actions.len(), 1, "no delete before any send: {actions:?}");
    let actions = batch.finished(&result_of(&second), 10);
    assert!(matches!(&actions[..], [Action::Send(bodies)] if bodies.len() == 2));
    assert_eq!(batch.acknowledged(), vec![Action::Delete(handles(2))]);
    assert_eq!(held(&batch), Vec::<String>::new(), "the batch holds nothing");
}

#[test]
fn pending_results_are_sent_once_they_fill_a_batch_or_the_oldest_has_waited() {
    let lim = Limits {
        batch_max: 3,
        ..limits(Policy::Real)
    };
    let (mut batch, actions) = Batch::received(lim, (0..6).map(|i| incoming(i, 1)).collect());
    let job = run_of(&actions);
    let job = run_of(&batch.finished(&result_of(&job), 0));
    let job = run_of(&batch.finished(&result_of(&job), 0));
    assert!(matches!(&batch.finished(&result_of(&job), 0)[..], [Action::Send(b)] if b.len() == 3));
    let job = run_of(&batch.acknowledged()[1..]);
    let job = run_of(&batch.finished(&result_of(&job), 100));
    assert!(matches!(&batch.finished(&result_of(&job), 1_100)[..], [Action::Send(b)] if b.len() == 2));
}

#[test]
fn a_stop_delivers_results_in_hand_and_hands_back_unstarted_jobs() {
    let (mut batch, actions) = Batch::received(limits(Policy::Real), (0..4).map(|i| incoming(i, 1)).collect());
    let job = run_of(&actions);
    run_of(&batch.finished(&result_of(&job), 0));
    // The second job is abandoned mid-run.
    let actions = batch.stopping();
    assert!(matches!(&actions[..], [Action::Send(b)] if b.len() == 1));
    let actions = batch.acknowledged();
    let unstarted = vec!["h3".to_owned(), "h2".to_owned(), "h1".to_owned()];
    assert_eq!(
        actions,
        vec![Action::Delete(vec!["h0".into()]), Action::Release(unstarted)]
    );
}

#[test]
fn a_heartbeat_extends_every_message_the_batch_holds() {
    let (mut batch, actions) = Batch::received(limits(Policy::Real), (0..3).map(|i| incoming(i, 1)).collect());
    let job = run_of(&actions);
    run_of(&batch.finished(&result_of(&job), 0));
    let Action::Extend {
        mut handles,
        visibility_ms,
    } = batch.beat()
    else {
        panic!("a beat extends")
    };
    handles.sort();
    assert_eq!((handles, visibility_ms), (self::handles(3), 30_000));
}

#[test]
fn messages_that_are_not_runnable_jobs_are_quarantined_and_worn_out_jobs_given_up() {
    let (_, actions) = Batch::received(
        limits(Policy::Real),
        vec![incoming(200, 1), incoming(150, 1), incoming(7, 4)],
    );
    assert!(matches!(&actions[0], Action::Quarantine { msg, .. } if msg.handle == "h200"));
    assert!(matches!(&actions[1], Action::Quarantine { reason, .. } if reason.contains("outside")));
    assert!(matches!(&actions[2], Action::Run(job) if job.give_up && job.job.index == 7));
}

#[test]
fn a_worker_that_never_gives_up_runs_a_worn_out_job_again() {
    let (_, actions) = Batch::received(limits(Policy::NoGiveUp), vec![incoming(7, 4)]);
    assert!(matches!(&actions[0], Action::Run(job) if !job.give_up), "{actions:?}");
}

#[test]
fn a_result_too_large_for_one_message_is_sent_small_as_failed_with_a_note() {
    let (mut batch, actions) = Batch::received(limits(Policy::Real), vec![incoming(0, 1)]);
    let mut result = result_of(&run_of(&actions));
    result.outcome.stdout = Some("x".repeat(3 * RESULT_BYTES_MAX));
    result.outcome.exit_code = Some(0);
    let actions = batch.finished(&result, 0);
    let [Action::Send(bodies)] = actions.as_slice() else {
        panic!("expected one send, got {actions:?}");
    };
    assert!(bodies[0].len() < 4096, "{} bytes sent", bodies[0].len());
    let sent = ResultMessage::decode(&bodies[0]).expect("a result");
    assert_eq!(sent.outcome.status, ResultStatus::Failed);
    assert_eq!(
        (sent.outcome.exit_code, sent.outcome.stdout.as_deref()),
        (Some(0), None)
    );
    assert!(sent.outcome.stderr_tail.starts_with("output too large"), "{sent:?}");
    assert_eq!((sent.index, &sent.run_id), (result.index, &result.run_id));
}

/// The note of a too-large result keeps the experiment's standard error
/// when it is short (up to 4 KiB), so the failure can still be read.
#[test]
fn a_too_large_result_keeps_a_short_standard_error_in_its_note() {
    let (_, actions) = Batch::received(limits(Policy::Real), vec![incoming(0, 1)]);
    let mut result = result_of(&run_of(&actions));
    result.outcome.stdout = Some("x".repeat(2 * RESULT_BYTES_MAX));
    let note = |stderr: &str| {
        let mut r = result.clone();
        r.outcome.stderr_tail = stderr.to_owned();
        ResultMessage::decode(&result_body(&r))
            .expect("a result")
            .outcome
            .stderr_tail
    };
    let (short, longest, long) = ("boom".to_owned(), "e".repeat(4 * 1024), "e".repeat(4 * 1024 + 1));
    let alone = |note: &str| note.starts_with("output too large") && note.ends_with("were dropped");
    assert!(alone(&note("")), "{}", note(""));
    for kept in [&short, &longest] {
        let (head, tail) = note(kept)
            .split_once('\n')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert!(alone(&head) && tail == *kept, "{head}");
    }
    assert!(alone(&note(&long)), "a long standard error is dropped with the output");
}

#[test]
fn a_result_that_fits_one_message_is_sent_as_it_is() {
    let (mut batch, actions) = Batch::received(limits(Policy::Real), vec![incoming(0, 1)]);
    let mut result = result_of(&run_of(&actions));
    result.outcome.stdout = Some("x".repeat(RESULT_BYTES_MAX / 2));
    let actions = batch.finished(&result, 0);
    assert_eq!(actions, vec![Action::Send(vec![result.encode()])]);
}

/// One thing that can happen next to a batch.
#[derive(Clone, Debug)]
enum Event {
    /// The running job finishes, `ms` after the last event.
    Finish(u64),
    /// The results in flight are acknowledged.
    Ack,
    /// The heartbeat timer fires.
    Beat,
    /// A stop is requested.
    Stop,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0u64..800).prop_map(Event::Finish),
        3 => Just(Event::Ack),
        1 => Just(Event::Beat),
        1 => Just(Event::Stop),
    ]
}

/// What the checker knows about each handle.
#[derive(Default)]
struct Fates {
    /// Handles whose result the results queue acknowledged.
    acknowledged: BTreeMap<String, ()>,
    /// Handles deleted, released or quarantined, and by which action.
    gone: BTreeMap<String, &'static str>,
}

impl Fates {
    fn apply(&mut self, action: &Action, sent: &mut Vec<String>, running: &mut Option<Job>) {
        let mut end = |handles: &[String], how| {
            for h in handles {
                assert!(self.gone.insert(h.clone(), how).is_none(), "{h} ended twice");
            }
        };
        match action {
            Action::Delete(handles) => {
                // SQS refuses a batch of no entries.
                assert!(!handles.is_empty(), "a delete of no messages");
                for h in handles {
                    assert!(
                        self.acknowledged.contains_key(h),
                        "{h} deleted before its result was acknowledged"
                    );
                }
                end(handles, "deleted");
            }
            Action::Release(handles) => {
                assert!(!handles.is_empty(), "a release of no messages");
                end(handles, "released");
            }
            Action::Quarantine { msg, .. } => end(std::slice::from_ref(&msg.handle), "quarantined"),
            Action::Extend { handles, .. } => {
                for h in handles {
                    assert!(!self.gone.contains_key(h), "{h} extended after it ended");
                }
            }
            Action::Send(bodies) => {
                assert!(sent.is_empty(), "a second send before the first was acknowledged");
                *sent = bodies
                    .iter()
                    .map(|b| format!("h{}", ResultMessage::decode(b).expect("a result").index))
                    .collect();
            }
            Action::Run(job) => {
                assert!(running.is_none(), "two jobs running at once");
                *running = Some(job.clone());
            }
        }
    }
}

/// Drive one batch through `events`, performing its actions as an executor
/// would, and check the worker's rule on every action.
fn drive(policy: Policy, received: Vec<(u64, u32)>, events: Vec<Event>) {
    let incoming: Vec<Incoming> = received.iter().map(|&(i, count)| incoming(i, count)).collect();
    let all: Vec<String> = incoming.iter().map(|i| i.msg.handle.clone()).collect();
    let (mut batch, actions) = Batch::received(limits(policy), incoming);
    let (mut fates, mut sent, mut running, mut now_ms) = (Fates::default(), Vec::new(), None, 0);
    for action in &actions {
        fates.apply(action, &mut sent, &mut running);
    }
    for event in events {
        let actions = match event {
            Event::Finish(ms) => match running.take() {
                Some(job) => {
                    now_ms += ms;
                    batch.finished(&result_of(&job), now_ms)
                }
                None => continue,
            },
            Event::Ack if !sent.is_empty() => {
                for h in sent.drain(..) {
                    fates.acknowledged.insert(h, ());
                }
                batch.acknowledged()
            }
            Event::Ack => continue,
            Event::Beat => vec![batch.beat()],
            Event::Stop => {
                running = None;
                batch.stopping()
            }
        };
        for action in &actions {
            fates.apply(action, &mut sent, &mut running);
        }
        let mut holds: Vec<String> = all.iter().filter(|h| !fates.gone.contains_key(*h)).cloned().collect();
        holds.sort();
        assert_eq!(
            held(&batch),
            holds,
            "the heartbeat extends every message held, only those"
        );
    }
    // A batch left alone (no job running, nothing in flight) holds nothing.
    if running.is_none() && sent.is_empty() {
        for h in &all {
            assert!(
                fates.gone.contains_key(h),
                "{h} was neither deleted, released nor quarantined"
            );
        }
    }
}

fn batch_of_messages() -> impl Strategy<Value = Vec<(u64, u32)>> {
    // Distinct indices: one handle each. Some outside the sweep, some not
    // jobs at all, some received too often.
    proptest::collection::btree_map(
        prop_oneof![8 => 0u64..30, 1 => 100u64..103, 1 => Just(200u64)],
        1u32..5,
        0..12,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// The planted naive protocol deletes every job at receipt, and only
/// then: the acknowledgement of its results deletes nothing again.
#[test]
fn the_naive_worker_deletes_each_job_once_at_receipt() {
    let (mut batch, actions) = Batch::received(limits(Policy::Naive), vec![incoming(0, 1), incoming(1, 1)]);
    assert_eq!(actions[0], Action::Delete(handles(2)), "{actions:?}");
    let actions = batch.finished(&result_of(&run_of(&actions)), 0);
    let actions = batch.finished(&result_of(&run_of(&actions)), 0);
    assert!(matches!(actions[..], [Action::Send(_)]), "{actions:?}");
    assert_eq!(batch.acknowledged(), Vec::new(), "nothing is left to delete");
    assert_eq!(held(&batch), Vec::<String>::new(), "the batch holds nothing");
}

/// Stopped, the naive worker hands nothing back: it deleted every job at
/// receipt, so there is nothing left to release.
#[test]
fn the_naive_worker_releases_nothing_when_stopped() {
    let (mut batch, _) = Batch::received(limits(Policy::Naive), vec![incoming(0, 1), incoming(1, 1)]);
    assert_eq!(batch.stopping(), Vec::new());
}

#[test]
fn jobs_of_a_cancelled_sweep_are_deleted_unrun_and_the_others_run() {
    let [mut cancelled, mut outside] = [incoming(99, 1), incoming(100, 1)];
    cancelled.cancelled = true;
    // Past the sweep's last job (99 of 100): foreign, cancelled or not.
    outside.cancelled = true;
    let (_, actions) = Batch::received(limits(Policy::Real), vec![cancelled, outside, incoming(2, 1)]);
    assert!(
        matches!(&actions[0], Action::Quarantine { msg, .. } if msg.handle == "h100"),
        "{actions:?}"
    );
    assert_eq!(actions[1], Action::Delete(vec!["h99".into()]));
    assert!(
        matches!(&actions[2], Action::Run(job) if job.job.index == 2),
        "{actions:?}"
    );
    assert_eq!(actions.len(), 3, "{actions:?}");
}

proptest! {
    #[test]
    fn in_any_event_order_a_job_is_deleted_only_after_its_result_is_acknowledged(
        received in batch_of_messages(),
        events in proptest::collection::vec(event(), 0..60),
    ) {
        drive(Policy::Real, received, events);
    }
}
