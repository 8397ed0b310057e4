//! The aggregator's machine, driven by hand and by random event orders,
//! with no runtime.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::core::{Outcome, Policy, ResultMessage, ResultStatus};

fn config(policy: Policy) -> AggregatorConfig {
    AggregatorConfig {
        visibility_ms: 30_000,
        wait_ms: 1_000,
        segment_records_max: 4,
        segment_age_max_ms: 2_000,
        policy,
        ..AggregatorConfig::new("agg")
    }
}

/// The body of run `run` of job `index` (`None`: not a result at all).
pub(crate) fn body(index: u64, run: u64) -> String {
    ResultMessage {
        tally: 1,
        sweep: "s".into(),
        index,
        attempt: 1,
        receive_count: 1,
        run_id: format!("w.0-{run}"),
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
    .encode()
}

fn msg(body: String, handle: &str) -> Received {
    Received {
        body,
        handle: handle.into(),
        message_id: handle.into(),
        receive_count: 1,
    }
}

fn results(range: std::ops::Range<u64>) -> Vec<Received> {
    range.map(|i| msg(body(i, i), &format!("h{i}"))).collect()
}

#[test]
fn a_result_message_is_never_deleted_before_its_segment_is_stored() {
    let mut gatherer = Gatherer::new(config(Policy::Real));
    assert_eq!(gatherer.received(results(0..4), 0), vec![]);
    let actions = gatherer.tick(0);
    assert!(
        matches!(&actions[..], [Action::Store { records: 4, .. }]),
        "{actions:?}"
    );
    assert_eq!(gatherer.next_deletes(), None, "deletes before the store finished");
    assert_eq!(gatherer.stored(), vec![]);
    let handles: Vec<String> = (0..4).map(|i| format!("h{i}")).collect();
    assert_eq!(gatherer.next_deletes(), Some(handles));
    assert_eq!(gatherer.next_deletes(), None, "one delete in flight at a time");
    gatherer.deleted();
}

#[test]
fn an_old_segment_is_stored_and_an_open_one_is_extended_after_a_third_of_the_visibility() {
    let mut gatherer = Gatherer::new(config(Policy::Real));
    gatherer.received(results(0..1), 0);
    assert_eq!(
        gatherer.wait_ms(1_500),
        500,
        "a receive waits no longer than the segment's age"
    );
    assert!(matches!(&gatherer.tick(2_000)[..], [Action::Store { records: 1, .. }]));
    gatherer.stored();
    let long = AggregatorConfig {
        segment_age_max_ms: 60_000,
        ..config(Policy::Real)
    };
    let mut gatherer = Gatherer::new(long);
    gatherer.received(results(0..2), 0);
    assert_eq!(gatherer.tick(9_999), vec![]);
    let extend = Action::Extend {
        handles: vec!["h0".into(), "h1".into()],
        visibility_ms: 30_000,
    };
    assert_eq!(gatherer.tick(10_000), vec![extend]);
    assert_eq!(gatherer.tick(10_001), vec![], "one extend per third of the visibility");
}

#[test]
fn a_stop_stores_what_is_held_then_deletes_everything_stored() {
    let mut gatherer = Gatherer::new(config(Policy::Real));
    gatherer.received(results(0..4), 0);
    gatherer.tick(0);
    gatherer.stored();
    let first = gatherer.next_deletes().expect("stored handles to delete");
    gatherer.received(results(4..6), 0);
    gatherer.stop();
    // The delete in flight was cut short: its handles wait for the way out.
    gatherer.delete_stopped(first);
    assert_eq!(gatherer.next_deletes(), None, "no deletes restarted once stopping");
    assert!(matches!(&gatherer.finish()[..], [Action::Store { records: 2, .. }]));
    let all: Vec<String> = [0, 1, 2, 3, 4, 5].iter().map(|i| format!("h{i}")).collect();
    assert_eq!(gatherer.stored(), vec![Action::Delete(all)]);
}

#[test]
fn finishing_with_nothing_held_asks_for_nothing() {
    let mut gatherer = Gatherer::new(config(Policy::Real));
    assert_eq!(gatherer.finish(), vec![]);
    gatherer.received(results(0..2), 0);
    assert!(matches!(&gatherer.finish()[..], [Action::Store { records: 2, .. }]));
    assert_eq!(gatherer.stored(), vec![Action::Delete(vec!["h0".into(), "h1".into()])]);
    assert_eq!(gatherer.finish(), vec![], "everything was stored and deleted");
    gatherer.check();
}

#[test]
#[should_panic(expected = "a held message is in exactly one place")]
fn a_handle_counted_but_placed_nowhere_fails_the_check() {
    let mut gatherer = Gatherer::new(config(Policy::Real));
    gatherer.received(results(0..2), 0);
    gatherer.held += 1;
    gatherer.check();
}

#[test]
fn what_is_not_a_result_is_quarantined_and_kept_out_of_segments() {
    let mut gatherer = Gatherer::new(config(Policy::Real));
    let actions = gatherer.received(vec![msg("junk".into(), "j"), msg(body(1, 1), "h1")], 0);
    assert!(matches!(&actions[..], [Action::Quarantine { msg, .. }] if msg.handle == "j"));
    assert_eq!(gatherer.buffered(), 1);
}

/// One thing that can happen next to the aggregator.
#[derive(Clone, Debug)]
enum Event {
    /// Results arrive: `(index, run)` pairs; a repeated pair is the same
    /// message delivered again (a new handle).
    Receive(Vec<(u64, u64)>),
    /// Time passes.
    Tick(u64),
    /// The oldest store in flight completes.
    Stored,
    /// Deletes start alongside the receives, if the machine has any.
    StartDeletes,
    /// The delete in flight completes, or is cut short by a stop.
    DeleteDone { stopped: bool },
    /// A stop is requested.
    Stop,
    /// The aggregator crashes: everything in flight is lost, and a new one
    /// starts from nothing.
    Crash,
}

fn event() -> impl Strategy<Value = Event> {
    let pair = (0u64..20, 0u64..3);
    prop_oneof![
        4 => proptest::collection::vec(pair, 0..6).prop_map(Event::Receive),
        3 => (0u64..3_000).prop_map(Event::Tick),
        3 => Just(Event::Stored),
        2 => Just(Event::StartDeletes),
        2 => any::<bool>().prop_map(|stopped| Event::DeleteDone { stopped }),
        1 => Just(Event::Stop),
        1 => Just(Event::Crash),
    ]
}

/// The checker: which bodies are in stored segments, and which handle
/// carries which body.
struct World {
    gatherer: Gatherer,
    policy: Policy,
    now_ms: u64,
    next_handle: u64,
    body_of: BTreeMap<String, String>,
    /// Bodies in segments whose store completed.
    durable: BTreeSet<String>,
    /// Bodies of each store in flight, oldest first.
    storing: Vec<Vec<String>>,
    deleting: Option<Vec<String>>,
    deleted: BTreeSet<String>,
}

impl World {
    fn new(policy: Policy) -> Self {
        World {
            gatherer: Gatherer::new(config(policy)),
            policy,
            now_ms: 0,
            next_handle: 0,
            body_of: BTreeMap::new(),
            durable: BTreeSet::new(),
            storing: Vec::new(),
            deleting: None,
            deleted: BTreeSet::new(),
        }
    }

    fn check_deletes(&mut self, handles: &[String]) {
        // SQS refuses an empty batch (EmptyBatchRequest); the machine never asks for one.
        assert!(!handles.is_empty(), "a delete of no handles");
        for h in handles {
            let body = &self.body_of[h];
            assert!(self.durable.contains(body), "{h} deleted before its segment was stored");
            assert!(self.deleted.insert(h.clone()), "{h} deleted twice");
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Delete(handles) => self.check_deletes(&handles),
                Action::Store { bytes, records, .. } => {
                    let segment = segment::decode(&bytes).expect("a readable segment");
                    let bodies: Vec<String> = segment.records().map(str::to_owned).collect();
                    assert_eq!(bodies.len(), records);
                    self.storing.push(bodies);
                }
                Action::Extend { handles, .. } => {
                    for h in &handles {
                        assert!(!self.deleted.contains(h), "{h} extended after its delete");
                    }
                }
                Action::Quarantine { .. } => {}
            }
        }
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Receive(pairs) => {
                let msgs = pairs
                    .into_iter()
                    .map(|(index, run)| {
                        self.next_handle += 1;
                        let handle = format!("h{}", self.next_handle);
                        self.body_of.insert(handle.clone(), body(index, run));
                        msg(body(index, run), &handle)
                    })
                    .collect();
                let actions = self.gatherer.received(msgs, self.now_ms);
                self.apply(actions);
            }
            Event::Tick(ms) => {
                self.now_ms += ms;
                let actions = self.gatherer.tick(self.now_ms);
                self.apply(actions);
            }
            Event::Stored if !self.storing.is_empty() => {
                self.durable.extend(self.storing.remove(0));
                let actions = self.gatherer.stored();
                self.apply(actions);
            }
            Event::StartDeletes if self.deleting.is_none() => {
                if let Some(handles) = self.gatherer.next_deletes() {
                    self.check_deletes(&handles);
                    self.deleting = Some(handles);
                }
            }
            Event::DeleteDone { stopped } => match self.deleting.take() {
                Some(handles) if stopped => {
                    for h in &handles {
                        self.deleted.remove(h);
                    }
                    self.gatherer.stop();
                    self.gatherer.delete_stopped(handles);
                }
                Some(_) => self.gatherer.deleted(),
                None => {}
            },
            Event::Stop => self.gatherer.stop(),
            Event::Crash => {
                self.gatherer = Gatherer::new(config(self.policy));
                self.storing.clear();
                self.deleting = None;
            }
            Event::Stored | Event::StartDeletes => {}
        }
    }

    /// The way out: store what is held, completing every store.
    fn finish(&mut self) {
        if self.deleting.take().is_some() {
            self.gatherer.deleted();
        }
        let actions = self.gatherer.finish();
        self.apply(actions);
        while !self.storing.is_empty() {
            self.step(Event::Stored);
        }
    }
}

proptest! {
    #[test]
    fn in_any_event_order_a_result_message_is_deleted_only_after_its_segment_is_stored(
        events in proptest::collection::vec(event(), 0..80),
    ) {
        let mut world = World::new(Policy::Real);
        for event in events {
            world.step(event);
        }
        world.finish();
        assert_eq!(world.gatherer.buffered(), 0, "records left behind on the way out");
    }
}
