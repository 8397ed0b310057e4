//! One simulated run: the simulated cloud, the role hosts running tally's
//! own protocol code, the fault driver, and the final check.
//!
//! Hosts: `sqs` and `s3` (the cloud, never crashed: their state is the
//! durable cloud), `submitter`, `worker-0..`, `aggregator` and
//! `reconciler`. A crash loses a role host's memory; durable state lives
//! outside the host future only where production keeps it on a disk that
//! survives (the submitter's send log). After the fault phase the network
//! heals, crashed hosts restart, fault rates drop to zero, and every job
//! must become final before the heal deadline.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally::core::reconciler::{reconcile, Report};
use tally::core::submitter::MemSendLog;
use tally::sweep::{ExperimentSpec, Sweep, Value};

use crate::checker::oracle::{Oracle, Oracles, SharedOracle};
use crate::checker::resends::{check_resends, Resends};
use crate::checker::settle::check_settled;
use crate::checker::trace::{SharedTrace, Trace};
use crate::checker::{check, Recorder, Verdict};
use crate::coverage::Coverage;
use crate::doubles::experiment::Messy;
use crate::doubles::memstore::MemStore;
use crate::faults::inject::{apply, heal};
use crate::faults::schedule::{hosts, Fault, Schedule, JOBS_QUEUE, RESULTS_QUEUE};
use crate::faults::tripwire::SharedWires;
use crate::hosts::{S3Faults, S3Model, SqsFaults, SqsModel};
use crate::net::{serve_s3, serve_sqs, sim_builder};
use crate::roles::{self, Ctx};

/// What one run found.
#[derive(Debug)]
pub struct RunSummary {
    /// The final reconciliation report.
    pub report: Report,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// Hash of every ground-truth event.
    pub trace_hash: u64,
    /// Events in the trace.
    pub trace_events: u64,
    /// Captured trace, when asked for.
    pub captured: Option<Vec<String>>,
    /// Simulated time at the end, ms.
    pub sim_ms: u64,
    /// Whether every job became final before the heal deadline.
    pub finished: bool,
    /// Faults applied.
    pub faults: usize,
    /// With the SDK transport: the error answers the AWS SDK received, by
    /// the branch of the adapter's classification each takes
    /// ([`crate::net::take_sdk_answers`]).
    pub sdk_answers: BTreeMap<String, u64>,
    /// The cells of the fault and outcome space the run reached (none
    /// unless asked for: [`run_covered`]).
    pub coverage: Coverage,
}

/// The sweep every simulated run submits.
pub fn sweep_for(schedule: &Schedule) -> Sweep {
    let s = &schedule.resolved.scenario;
    let name: String = s
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let name = if name.is_empty() { "sim".into() } else { name };
    let mut sweep = if s.grid {
        grid_sweep(name, s.jobs, s.job_ms)
    } else {
        synthetic_sweep(name, s.jobs, s.job_ms)
    };
    sweep.timeout_s = s.timeout_s.unwrap_or(sweep.timeout_s);
    sweep
}

/// A sweep of exactly `jobs` jobs through parameter expansion: a grid of
/// two parameters (an integer and a string) whose product, times two runs
/// when `jobs` is even, is `jobs`, so keys map to settings and runs as in
/// a real parameter sweep.
pub fn grid_sweep(name: String, jobs: u64, job_ms: u64) -> Sweep {
    let runs = if jobs.is_multiple_of(2) { 2 } else { 1 };
    let settings = jobs / runs;
    let across = (1..=settings.isqrt())
        .rev()
        .find(|&d| settings.is_multiple_of(d))
        .unwrap_or(1);
    let mut sweep = synthetic_sweep(name, 1, job_ms);
    sweep.runs = runs;
    sweep.grid = BTreeMap::from([
        (
            "lr".to_owned(),
            (0..settings / across).map(|i| Value::Int(i as i64)).collect(),
        ),
        (
            "opt".to_owned(),
            (0..across).map(|i| Value::Str(format!("o{i}"))).collect(),
        ),
    ]);
    debug_assert_eq!(sweep.len(), Some(jobs));
    sweep
}

/// Every sweep a simulated run submits: [`sweep_for`]'s alone, or as many
/// as the scenario's `sweeps`, each named after it with a number, the last
/// an edited version of the first.
pub fn sweeps_for(schedule: &Schedule) -> Vec<Sweep> {
    let first = sweep_for(schedule);
    match schedule.resolved.scenario.sweeps {
        None | Some(1) => vec![first],
        // The last is the first resubmitted under an edited file: the same
        // name, other content (a longer timeout), so another sweep id.
        Some(n) => (0..n)
            .map(|k| match k {
                k if k + 1 == n && n > 1 => Sweep {
                    name: format!("{}-0", first.name),
                    timeout_s: first.timeout_s + 1,
                    ..first.clone()
                },
                k => Sweep {
                    name: format!("{}-{k}", first.name),
                    ..first.clone()
                },
            })
            .collect(),
    }
}

/// The ground truth of `sweeps`, each of `jobs` jobs.
/// Resends are judged needless or not when `judged` (not when counts
/// under-count at random).
fn oracles(sweeps: &[Sweep], jobs: u64, judged: bool) -> SharedOracle {
    let sweeps = sweeps
        .iter()
        .map(|sweep| {
            let mut truth = Oracle::new(&sweep.id(), jobs, JOBS_QUEUE, RESULTS_QUEUE);
            truth.resends = Resends::new(jobs, judged);
            truth
        })
        .collect();
    Arc::new(Mutex::new(Oracles { sweeps }))
}

/// A sweep of `jobs` runs of the built-in synthetic experiment, each taking
/// `job_ms`.
pub fn synthetic_sweep(name: String, jobs: u64, job_ms: u64) -> Sweep {
    Sweep {
        name,
        runs: jobs,
        timeout_s: 3600,
        max_attempts: 5,
        experiment: ExperimentSpec {
            command: None,
            workdir: None,
            builtin: Some("synthetic".into()),
            sleep_ms: job_ms,
            fail_every: 0,
        },
        grid: BTreeMap::new(),
        settings: Vec::new(),
    }
}

/// Run `schedule` to the end and check it.
pub fn run(schedule: &Schedule, capture: bool) -> RunSummary {
    run_with(schedule, capture, Coverage::default())
}

/// [`run`], recording the cells of the fault and outcome space the run
/// reached. Knowing where each role stands costs a few percent of a
/// run's time, so only a search asks.
pub fn run_covered(schedule: &Schedule) -> RunSummary {
    run_with(schedule, false, Coverage::recording())
}

fn run_with(schedule: &Schedule, capture: bool, mut coverage: Coverage) -> RunSummary {
    let s = schedule.resolved.scenario.clone();
    let sweeps = sweeps_for(schedule);
    // Counts that under-count at random defeat any quiet period: resends
    // are then judged only for safety, not for need.
    let oracle = oracles(&sweeps, s.jobs, s.worst.undercount_rate == 0.0);
    let trace: SharedTrace = Arc::new(Mutex::new(Trace::new(capture)));
    let r = &schedule.resolved;
    crate::net::take_sdk_answers();
    let (sqs, s3) = cloud(schedule, &oracle, &trace);
    let mut builder = sim_builder(schedule.seed);
    builder
        .simulation_duration(Duration::from_millis(s.fault_ms + s.heal_ms + 120_000))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(40));
    let mut sim = builder.build();
    {
        let m = sqs.clone();
        sim.host(hosts::SQS, move || serve_sqs(m.clone()));
        let m = s3.clone();
        sim.host(hosts::S3, move || serve_s3(m.clone()));
    }
    let messy = Messy::resolved(r, sweeps[0].timeout_s);
    let ctx = Rc::new(Ctx {
        scenario: s.clone(),
        policy: schedule.policy,
        seed: schedule.seed,
        skew_ms: r.clock_skew_ms,
        slow_job_rate: r.slow_job_rate,
        oracle: oracle.clone(),
        submit_log: Arc::new(MemSendLog::default()),
        resubmit_log: Arc::new(MemSendLog::default()),
        incarnations: RefCell::new(BTreeMap::new()),
        wires: SharedWires::default(),
        done_at_ms: Cell::new(None),
        last_reports: RefCell::new(BTreeMap::new()),
        messy,
        sweeps,
        role_failures: RefCell::new(Vec::new()),
    });
    roles::add_hosts(&mut sim, &ctx);
    ctx.wires.lock().expect("wires lock").track_steps = coverage.on;
    let (finished, sim_ms, faults) = drive(&mut sim, schedule, &ctx, &sqs, &s3, &trace, &mut coverage);
    drop(sim);
    coverage.rare(sqs.borrow().rare_events());
    let (report, mut verdict) = final_check(&ctx, &s3, &oracle, &mut coverage);
    for (at, host, error) in ctx.role_failures.borrow().iter() {
        // A role stops only on an error its retry layer took for
        // permanent; in production the process would exit.
        verdict.flag("role-failed", None, format!("{host} stopped at {at} ms: {error}"));
    }
    let mut t = trace.lock().expect("trace lock");
    RunSummary {
        report,
        verdict,
        trace_hash: t.hash,
        trace_events: t.events,
        captured: t.captured.take(),
        sim_ms,
        finished,
        faults,
        sdk_answers: crate::net::take_sdk_answers(),
        coverage,
    }
}

/// The simulated SQS and S3 of `schedule`, at the scenario's worst,
/// reporting ground truth to `oracle` and `trace`.
fn cloud(
    schedule: &Schedule,
    oracle: &SharedOracle,
    trace: &SharedTrace,
) -> (Rc<RefCell<SqsModel>>, Rc<RefCell<S3Model>>) {
    let s = &schedule.resolved.scenario;
    let r = &schedule.resolved;
    let sqs = Rc::new(RefCell::new(SqsModel::new(
        schedule.seed,
        SqsFaults {
            duplicate_rate: r.duplicate_delivery_rate,
            entry_failure_rate: r.sqs_entry_failure_rate,
        },
    )));
    sqs.borrow_mut().set_worst_case(s.worst.sqs());
    sqs.borrow_mut()
        .set_observer(Box::new(crate::checker::oracle::SqsWitness(
            oracle.clone(),
            trace.clone(),
        )));
    let s3 = Rc::new(RefCell::new(S3Model::new(
        schedule.seed ^ 0x53,
        S3Faults {
            error_before_rate: r.s3_error_rate / 2.0,
            error_after_rate: r.s3_error_rate / 2.0,
        },
    )));
    s3.borrow_mut().set_worst_case(s.worst.s3());
    s3.borrow_mut()
        .set_observer(Box::new(crate::checker::oracle::S3Witness(oracle.clone())));
    (sqs, s3)
}

/// Step the simulation, applying faults when due, healing after the fault
/// phase, until every job is final or the heal deadline passes.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    schedule: &Schedule,
    ctx: &Ctx,
    sqs: &Rc<RefCell<SqsModel>>,
    s3: &Rc<RefCell<S3Model>>,
    trace: &SharedTrace,
    coverage: &mut Coverage,
) -> (bool, u64, usize) {
    let s = &schedule.resolved.scenario;
    let lost_reply_rate = schedule.resolved.lost_reply_rate;
    if lost_reply_rate > 0.0 {
        sim.set_fail_rate(lost_reply_rate);
    }
    let mut next = 0;
    let mut restarts: Vec<(u64, String)> = Vec::new();
    let mut repairs: Vec<(u64, String, String, bool)> = Vec::new();
    let mut healed = false;
    let deadline = s.fault_ms + s.heal_ms;
    let step_time = crate::doubles::clock::StepTime::install();
    let mut empty_since = None;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        step_time.set(now);
        while next < schedule.events.len() && schedule.events[next].at_ms <= now {
            let e = &schedule.events[next];
            trace
                .lock()
                .expect("trace lock")
                .event(now, "fault", format_args!("{:?}", e.fault));
            if !matches!(&e.fault, Fault::Crash { host, .. } if !sim.is_host_running(host.as_str())) {
                let rounds = ctx
                    .oracle
                    .lock()
                    .expect("oracle lock")
                    .sweeps
                    .iter()
                    .map(|o| o.rounds)
                    .sum();
                coverage.struck(&e.fault, &ctx.wires.lock().expect("wires lock"), rounds);
            }
            apply(sim, &e.fault, now, sqs, &ctx.wires, &mut restarts, &mut repairs);
            next += 1;
        }
        let fired = std::mem::take(&mut ctx.wires.lock().expect("wires lock").fired);
        for (host, down_ms) in fired {
            trace.lock().expect("trace lock").event(now, "tripwire", &host);
            coverage.fired(&host, &ctx.wires.lock().expect("wires lock"));
            if sim.is_host_running(host.as_str()) {
                sim.crash(host.as_str());
                restarts.push((now + down_ms, host));
            }
        }
        restart_and_repair(sim, now, &mut restarts, &mut repairs);
        if !healed && now >= s.fault_ms {
            healed = true;
            ctx.wires.lock().expect("wires lock").disarm_all();
            heal(sim, sqs, s3, &mut restarts, &mut repairs);
            trace.lock().expect("trace lock").event(now, "heal", "");
        }
        if healed && settled(s, ctx, sqs, now, &mut empty_since) {
            return (true, now, next);
        }
        if now >= deadline {
            return (false, now, next);
        }
        if let Err(e) = sim.step() {
            // A host's software failed outright: that is a finding too.
            trace.lock().expect("trace lock").event(now, "host-error", &e);
            return (false, now, next);
        }
    }
}

/// Restart the crashed hosts and repair the partitions that are due.
fn restart_and_repair(
    sim: &mut turmoil::Sim<'_>,
    now: u64,
    restarts: &mut Vec<(u64, String)>,
    repairs: &mut Vec<(u64, String, String, bool)>,
) {
    restarts.retain(|(at, host)| {
        if *at <= now {
            sim.bounce(host.as_str());
            false
        } else {
            true
        }
    });
    repairs.retain(|(at, a, b, oneway)| {
        if *at <= now {
            if *oneway {
                sim.repair_oneway(a.as_str(), b.as_str());
            } else {
                sim.repair(a.as_str(), b.as_str());
            }
            false
        } else {
            true
        }
    });
}

/// How long the roles keep running after the sweep was declared complete:
/// long enough for the slowest run still in flight (a slow job takes two
/// and a half visibility timeouts) to deliver its result, and for that
/// result to be stored and reported.
pub fn settle_ms(scenario: &crate::faults::scenario::Scenario) -> u64 {
    3 * scenario.visibility_ms + 30_000
}

/// Whether the run may end: the sweep was declared complete after the
/// faults, the settle phase has passed, both queues hold nothing, not even
/// a latent duplicate (a late copy could still land), and the reconciler
/// reported after they emptied.
fn settled(
    s: &crate::faults::scenario::Scenario,
    ctx: &Ctx,
    sqs: &Rc<RefCell<SqsModel>>,
    now: u64,
    empty_since: &mut Option<u64>,
) -> bool {
    let Some(done_at) = ctx.done_at_ms.get() else {
        return false;
    };
    if now < done_at + settle_ms(s) {
        return false;
    }
    let mut model = sqs.borrow_mut();
    // Apply deletions and purges whose window ended, and count the
    // duplicates still latent: a late copy could yet land.
    model.advance(now);
    if model.held(JOBS_QUEUE) + model.held(RESULTS_QUEUE) > 0 {
        *empty_since = None;
        return false;
    }
    let since = *empty_since.get_or_insert(now);
    let reports = ctx.last_reports.borrow();
    reports.len() == ctx.sweeps.len() && reports.values().all(|(at, _)| *at > since)
}

/// Reconcile and check every sweep of the run. Several sweeps make one
/// report and one verdict that add up theirs, each violation naming its
/// sweep.
fn final_check(
    ctx: &Ctx,
    s3: &Rc<RefCell<S3Model>>,
    oracle: &SharedOracle,
    coverage: &mut Coverage,
) -> (Report, Verdict) {
    let oracles = oracle.lock().expect("oracle lock");
    let store = MemStore::snapshot(&s3.borrow());
    let mut checked = ctx.sweeps.iter().zip(&oracles.sweeps).map(|(sweep, truth)| {
        let id = sweep.id();
        let (report, recorder) = final_reconcile(ctx, &id, &store);
        coverage.keys(truth, &recorder);
        let mut verdict = check(truth, &recorder, &report, true);
        let last = ctx.last_reports.borrow().get(&id).map(|(_, r)| r.clone());
        check_settled(last.as_ref(), &report, &mut verdict);
        check_resends(&truth.resends, &mut verdict);
        (id, report, verdict)
    });
    if ctx.sweeps.len() == 1 {
        let (_, report, verdict) = checked.next().expect("one sweep");
        return (report, verdict);
    }
    let mut total = (Report::default(), Verdict::default());
    for (id, report, verdict) in checked {
        add_report(&mut total.0, &report);
        total.1.absorb(verdict, &id);
    }
    total
}

/// Add `r`'s counts to `sum` (the lists are left out).
fn add_report(sum: &mut Report, r: &Report) {
    if !sum.sweep.is_empty() {
        sum.sweep.push_str(", ");
    }
    sum.sweep.push_str(&r.sweep);
    for (s, n) in [
        (&mut sum.submitted, r.submitted),
        (&mut sum.done, r.done),
        (&mut sum.failed, r.failed),
        (&mut sum.missing, r.missing),
        (&mut sum.cancelled, r.cancelled),
        (&mut sum.duplicates, r.duplicates),
        (&mut sum.duplicate_runs, r.duplicate_runs),
        (&mut sum.conflicts, r.conflicts),
        (&mut sum.phantoms, r.phantoms),
        (&mut sum.redelivered, r.redelivered),
        (&mut sum.resubmitted, r.resubmitted),
    ] {
        *s += n;
    }
    sum.rounds += r.rounds;
    // Every sweep's pass reads the same segments and quarantine.
    sum.segments = r.segments;
    sum.quarantined = r.quarantined;
    sum.unreadable = r.unreadable;
}

/// Reconcile sweep `id` from a snapshot of the bucket, outside the
/// simulation, with the checker's recorder as the sink.
fn final_reconcile(ctx: &Ctx, id: &str, store: &MemStore) -> (Report, Recorder) {
    let mut recorder = Recorder::new(id, ctx.scenario.jobs);
    let clock = crate::doubles::memstore::StillClock;
    let (_tx, never) = tokio::sync::watch::channel(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let report = rt
        .block_on(reconcile(store, &clock, &never, ctx.policy, id, &mut recorder))
        .unwrap_or_else(|e| Report {
            sweep: format!("{id} (reconcile failed: {e})"),
            ..Report::default()
        });
    (report, recorder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_sweep_expands_to_exactly_the_jobs_asked_for_each_setting_once_per_run() {
        for jobs in [1, 2, 7, 12, 2_000, 4_999] {
            let sweep = grid_sweep("g".into(), jobs, 1);
            assert_eq!(sweep.len(), Some(jobs), "{jobs} jobs");
            let settings: std::collections::BTreeSet<String> =
                (0..jobs).map(|i| format!("{:?}", sweep.params(i))).collect();
            assert_eq!(settings.len() as u64, jobs / sweep.runs);
        }
        assert_eq!(grid_sweep("g".into(), 2_000, 1).grid.len(), 2);
    }
}
