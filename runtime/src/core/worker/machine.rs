//! The worker's decisions for one batch of job messages, as a plain state
//! machine: events in (the batch was received, a job finished, results were
//! acknowledged, a heartbeat is due, a stop), actions out (run a job, send
//! results, delete, extend, hand back, quarantine). No I/O, no clock, no
//! async: the executor in `worker/mod.rs` performs the actions and reports
//! back what happened.
//!
//! Rule 1 of the worker lives here: a job message is deleted only after the
//! results queue acknowledged its result. The planted `naive` policy breaks
//! it in one place, [`Batch::received`]; the planted `no-give-up` policy
//! breaks rule 3 (a worn-out job is given up, not run) in the same place.

use crate::core::retry::BATCH_BYTES_MAX;
use crate::core::{JobMessage, Outcome, Policy, Received, ResultMessage, ResultStatus};

/// Most bytes of one result body: one queue message (SQS's limit). A
/// larger body would be refused by the results queue on every try.
pub const RESULT_BYTES_MAX: usize = BATCH_BYTES_MAX;

/// Most bytes of the experiment's standard error kept in an "output too
/// large" record.
const TOO_LARGE_STDERR_MAX: usize = 4 * 1024;

/// The body to send for `result`. A result too large for one message is
/// refused by the results queue every time (the embedded queue, SQS
/// without the claim check, the simulator): the refusal would fail the
/// worker role, which stops `tally run`, and leave the job to run again
/// after every restart until it wore out, taking the results of its batch
/// with it. It is recorded instead as failed, with its exit code and a
/// short note, without its metrics or output.
pub fn result_body(result: &ResultMessage) -> String {
    let body = result.encode();
    if body.len() <= RESULT_BYTES_MAX {
        return body;
    }
    let o = &result.outcome;
    let mut note = format!(
        "output too large: the result was {} bytes, over the {RESULT_BYTES_MAX}-byte limit of one message; its metrics and output were dropped",
        body.len()
    );
    if !o.stderr_tail.is_empty() && o.stderr_tail.len() <= TOO_LARGE_STDERR_MAX {
        note.push('\n');
        note.push_str(&o.stderr_tail);
    }
    drop(body);
    let small = ResultMessage {
        outcome: Outcome {
            status: ResultStatus::Failed,
            exit_code: o.exit_code,
            metrics: None,
            stdout: None,
            stderr_tail: note,
        },
        ..result.clone()
    };
    small.encode()
}

/// What to do with one received message.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Run it.
    Run(JobMessage),
    /// Record it as given up: it was received too often without a result.
    GiveUp(JobMessage),
    /// Move it to quarantine, for this reason.
    Quarantine(String),
    /// Delete it unrun: its sweep was cancelled (the reconciler counts the
    /// key as cancelled, not missing).
    Drop,
}

/// Decide what to do with a received job message of a sweep that is not
/// cancelled, given the sweep's size and attempt limit (`None` when the
/// sweep has no manifest).
pub fn decide(msg: &Received, sweep: Option<(u64, u32)>) -> Decision {
    decide_decoded(JobMessage::decode(&msg.body), msg.receive_count, sweep, false)
}

/// [`decide`] for a body already decoded (or not) as `job`, of a sweep that
/// may be `cancelled`.
fn decide_decoded(
    job: Result<JobMessage, String>,
    receive_count: u32,
    sweep: Option<(u64, u32)>,
    cancelled: bool,
) -> Decision {
    let job = match job {
        Ok(job) => job,
        Err(reason) => return Decision::Quarantine(reason),
    };
    match sweep {
        Some((submitted, _)) if cancelled && job.index < submitted => Decision::Drop,
        None => Decision::Quarantine(format!("sweep {:?} has no manifest", job.sweep)),
        Some((submitted, _)) if job.index >= submitted => Decision::Quarantine(format!(
            "index {} is outside sweep {:?} of {submitted} jobs",
            job.index, job.sweep
        )),
        Some((_, max_attempts)) if receive_count > max_attempts => Decision::GiveUp(job),
        Some(_) => Decision::Run(job),
    }
}

/// A received message with what the executor looked up for it.
#[derive(Debug)]
pub struct Incoming {
    /// The message.
    pub msg: Received,
    /// Its body decoded as a job, or why it is not one.
    pub job: Result<JobMessage, String>,
    /// The sweep's size and attempt limit, `None` without a manifest.
    pub limits: Option<(u64, u32)>,
    /// Whether the sweep was cancelled.
    pub cancelled: bool,
}

/// A job to start: run its experiment, or record it as given up.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The job.
    pub job: JobMessage,
    /// How often its message was received.
    pub receive_count: u32,
    /// Record a `gave_up` result instead of running it.
    pub give_up: bool,
}

/// What the executor must do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Store the message under `quarantine/`, then delete it.
    Quarantine {
        /// The message.
        msg: Received,
        /// Why it is not a usable message, stored with it.
        reason: String,
    },
    /// Start this job; report [`Batch::finished`], or [`Batch::stopping`]
    /// if a stop comes first.
    Run(Job),
    /// Send these result bodies; report [`Batch::acknowledged`].
    Send(Vec<String>),
    /// Delete these job messages.
    Delete(Vec<String>),
    /// Extend the visibility of these held messages.
    Extend {
        /// The messages.
        handles: Vec<String>,
        /// For how long.
        visibility_ms: u64,
    },
    /// Hand these unstarted job messages back (visibility 0).
    Release(Vec<String>),
}

/// What a batch needs to know about its worker.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most results to send at once (the results queue's batch size).
    pub batch_max: usize,
    /// Send pending results once the oldest has waited this long.
    pub result_flush_ms: u64,
    /// Visibility given by a heartbeat.
    pub visibility_ms: u64,
    /// Which protocol to follow.
    pub policy: Policy,
}

/// A job message the batch holds, with the work decided for it.
#[derive(Debug)]
struct Held {
    handle: String,
    job: JobMessage,
    receive_count: u32,
    give_up: bool,
}

/// One received batch of job messages, from receipt until every message is
/// deleted, handed back or quarantined.
#[derive(Debug)]
pub struct Batch {
    limits: Limits,
    /// Jobs not yet started, the next one last.
    queued: Vec<Held>,
    /// The job started last and not yet finished.
    running: Option<Held>,
    /// Finished jobs whose results are not yet sent: their handles, and
    /// their result bodies in the same order.
    pending: Vec<String>,
    pending_bodies: Vec<String>,
    first_pending_ms: u64,
    /// Handles of the jobs whose results are being sent.
    sending: Vec<String>,
    stopping: bool,
}

impl Batch {
    /// A batch was received: decide each message. The actions quarantine
    /// what is not a runnable job and start the first job.
    pub fn received(limits: Limits, incoming: Vec<Incoming>) -> (Batch, Vec<Action>) {
        let mut actions = Vec::new();
        let mut held = Vec::with_capacity(incoming.len());
        let mut dropped = Vec::new();
        for Incoming {
            msg,
            job,
            limits: sweep,
            cancelled,
        } in incoming
        {
            let (job, give_up) = match decide_decoded(job, msg.receive_count, sweep, cancelled) {
                Decision::Run(job) => (job, false),
                // The planted no-give-up bug runs a worn-out job again.
                Decision::GiveUp(job) => (job, limits.policy.gives_up()),
                Decision::Drop => {
                    dropped.push(msg.handle);
                    continue;
                }
                Decision::Quarantine(reason) => {
                    actions.push(Action::Quarantine { msg, reason });
                    continue;
                }
            };
            held.push(Held {
                handle: msg.handle,
                job,
                receive_count: msg.receive_count,
                give_up,
            });
        }
        if !dropped.is_empty() {
            actions.push(Action::Delete(dropped));
        }
        // The planted bug: delete every job before any result exists.
        if limits.policy.worker_deletes_first() && !held.is_empty() {
            actions.push(Action::Delete(held.iter().map(|h| h.handle.clone()).collect()));
        }
        held.reverse();
        let mut batch = Batch {
            limits,
            queued: held,
            running: None,
            pending: Vec::new(),
            pending_bodies: Vec::new(),
            first_pending_ms: 0,
            sending: Vec::new(),
            stopping: false,
        };
        actions.extend(batch.start_next());
        (batch, actions)
    }

    /// The running job produced `result` at `now_ms`: send the pending
    /// results when a batch of them is ready, they have waited long enough
    /// or no job is left; otherwise start the next job.
    pub fn finished(&mut self, result: &ResultMessage, now_ms: u64) -> Vec<Action> {
        let held = self.running.take().expect("a job finished while none was running");
        if self.pending.is_empty() {
            self.first_pending_ms = now_ms;
        }
        self.pending.push(held.handle);
        self.pending_bodies.push(result_body(result));
        let due = now_ms.saturating_sub(self.first_pending_ms) >= self.limits.result_flush_ms;
        if self.pending.len() >= self.limits.batch_max || due || self.queued.is_empty() {
            return vec![self.send()];
        }
        self.start_next().into_iter().collect()
    }

    /// The results queue acknowledged the results last sent: only now may
    /// their jobs be deleted.
    pub fn acknowledged(&mut self) -> Vec<Action> {
        let handles = std::mem::take(&mut self.sending);
        let mut actions = Vec::new();
        if !self.limits.policy.worker_deletes_first() && !handles.is_empty() {
            actions.push(Action::Delete(handles));
        }
        if self.stopping {
            actions.extend(self.release());
        } else {
            actions.extend(self.start_next());
        }
        actions
    }

    /// A stop was requested: the running job, if any, is abandoned. Results
    /// in hand are still sent (and their jobs then deleted); unstarted jobs
    /// are handed back.
    pub fn stopping(&mut self) -> Vec<Action> {
        self.stopping = true;
        if let Some(held) = self.running.take() {
            self.queued.push(held);
        }
        if !self.sending.is_empty() {
            // The handback follows the acknowledgement of what is in flight.
            return Vec::new();
        }
        if !self.pending.is_empty() {
            return vec![self.send()];
        }
        self.release()
    }

    /// A heartbeat is due: extend every message the batch still holds. The
    /// executor owns the one timer per batch.
    pub fn beat(&self) -> Action {
        let handles = self
            .queued
            .iter()
            .map(|h| &h.handle)
            .chain(&self.pending)
            .chain(&self.sending)
            .chain(self.running.iter().map(|h| &h.handle))
            .cloned()
            .collect();
        Action::Extend {
            handles,
            visibility_ms: self.limits.visibility_ms,
        }
    }

    /// The receipt handle of the job running now.
    pub fn running_handle(&self) -> Option<&str> {
        self.running.as_ref().map(|h| h.handle.as_str())
    }

    fn start_next(&mut self) -> Option<Action> {
        debug_assert!(self.running.is_none(), "one job runs at a time");
        let held = self.queued.pop()?;
        let job = Job {
            job: held.job.clone(),
            receive_count: held.receive_count,
            give_up: held.give_up,
        };
        self.running = Some(held);
        Some(Action::Run(job))
    }

    fn send(&mut self) -> Action {
        assert!(self.sending.is_empty(), "one send at a time per batch");
        assert_eq!(
            self.pending.len(),
            self.pending_bodies.len(),
            "every pending result has its job's handle"
        );
        self.sending = std::mem::take(&mut self.pending);
        Action::Send(std::mem::take(&mut self.pending_bodies))
    }

    fn release(&mut self) -> Vec<Action> {
        let unstarted: Vec<String> = self.queued.drain(..).map(|h| h.handle).collect();
        if unstarted.is_empty() || self.limits.policy.worker_deletes_first() {
            return Vec::new();
        }
        vec![Action::Release(unstarted)]
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
