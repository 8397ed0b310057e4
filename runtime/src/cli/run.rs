//! `tally run`: submitter, workers and aggregator in one process on the
//! embedded backend, then reconciliation, resubmission of anything missing,
//! and the final results database.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use crate::adapters::local::RunJournal;
use crate::cli::inspect::{print_report, reconcile_into_db};
use crate::cli::local::{Local, LockMode};
use crate::cli::{RunArgs, UserError, EXIT_INTERRUPTED};
use crate::core::aggregator::{Aggregator, AggregatorConfig, AggregatorStats};
use crate::core::driver::{Driver, DriverConfig, Step};
use crate::core::manifest::ManifestCache;
use crate::core::reconciler::{reconcile, MissingKeys, NoSink};
use crate::core::retry::CallError;
use crate::core::submitter::{SubmitStats, Submitter};
use crate::core::worker::{Worker, WorkerConfig, WorkerStats};
use crate::core::Shutdown;
use crate::sweep::Sweep;

/// How often the run checks for completion and redraws progress.
const TICK_MS: u64 = 25;

/// Run a sweep to completion. Returns the exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    // Validate before anything is written.
    let sweep = Sweep::load(&args.sweep).map_err(|e| UserError::bad_input(e.to_string()))?;
    let base_dir = args
        .sweep
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| ".".into());
    crate::experiment::check_runnable(&sweep, &base_dir)
        .map_err(|e| UserError::bad_input(format!("{}: {e}", args.sweep.display())))?;
    if !args.ignore_disk_space {
        crate::cli::space::check(&sweep, &args.data.data, args.submit_window)?;
    }
    let visibility_ms = args.visibility_s * 1000;
    let full = |e| crate::cli::local::explain_disk_full(e, &args.data.data);
    let local = Local::open(&args.data.data, true, LockMode::Exclusive, visibility_ms)
        .await
        .map_err(full)?;
    let journal = crate::cli::local::open_journal(&local.dir).map_err(full)?;
    release_orphans(&local, &journal).map_err(full)?;
    let started_ms = local.clock.mono_ms();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    crate::cli::stop_on_signal(stop_tx.clone(), Arc::clone(&interrupted));

    let id = sweep.id();
    earlier_versions(&local, &sweep, &args.data.data).await?;
    let submitted = sweep.len().expect("validated");
    tracing::info!(sweep = %id, jobs = submitted, data = %local.dir.display(), workers = args.workers, "running the sweep");
    let progress = progress_bar(submitted);
    let (roles, mut tasks) = Roles::start(&local, &journal, &sweep, base_dir, &args, stop_rx.clone());
    // A role that fails ends the run at once (and says why) rather than
    // leaving the driver waiting for work nobody does.
    // A stop ends the driver at once, even mid-pass: a pass only reads,
    // and a resubmission cut short is finished by the next run (its round
    // is recorded before any of its jobs is sent).
    let mut stopping = stop_rx.clone();
    let outcome = tokio::select! {
        biased;
        _ = crate::core::stopped(&mut stopping) => Ok(()),
        failed = first_failure(&mut tasks) => Err(failed),
        driven = drive(&local, &sweep, &args, &roles, &progress, &stop_rx) => driven,
    };
    let _ = stop_tx.send(true);
    let role_error = join(tasks).await;
    progress.finish_and_clear();
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("tally: interrupted; nothing is lost: rerun the same command to resume");
        return Ok(EXIT_INTERRUPTED);
    }
    outcome.map_err(full)?;
    if let Some(e) = role_error {
        return Err(full(e));
    }
    let mut missing = MissingKeys::default();
    let report = reconcile_into_db(&local, &id, args.policy, &mut missing)
        .await
        .map_err(full)?;
    let elapsed = local.clock.mono_ms().saturating_sub(started_ms) as f64 / 1000.0;
    print_report(&report, &local.results_db(), args.json, Some(elapsed));
    Ok(crate::cli::inspect::exit_code(&report))
}

/// This process holds the data directory exclusively, so whatever is in
/// flight was held by a run that died: hand it out again now rather than
/// after its visibility timeout. A job that was running when that run died
/// may be what killed it: its receive counts, so it is given up after
/// max_attempts instead of killing every rerun.
fn release_orphans(local: &Local, journal: &RunJournal) -> anyhow::Result<()> {
    let mut started = journal.entries().context("cannot read the journal of running jobs")?;
    // Where versions before the journal file kept it.
    started.append(&mut local.jobs_db.started().context("cannot read the queues")?);
    for (db, queue) in [
        (&local.jobs_db, crate::cli::local::JOBS),
        (&local.results_db_queue, crate::cli::local::RESULTS),
    ] {
        let ran = |body: &str| crate::cli::local::job_started(&started, body);
        let released = db.release_orphans(queue, ran).context("cannot read the queues")?;
        if released > 0 {
            eprintln!("tally: resuming; {released} messages of {queue} held by an earlier run are available again");
        }
    }
    local.jobs_db.clear_started().context("cannot write the queues")?;
    journal.clear().context("cannot write the journal of running jobs")
}

/// The role tasks of this process, each named.
type Tasks = JoinSet<(&'static str, Result<(), CallError>)>;

/// What the driver shares with the roles running in this process.
struct Roles {
    submit_stats: Arc<SubmitStats>,
    aggregator: Arc<AggregatorStats>,
    workers: Arc<WorkerStats>,
    submitter: Arc<Submitter>,
}

impl Roles {
    fn start(
        local: &Local,
        journal: &Arc<RunJournal>,
        sweep: &Sweep,
        base_dir: std::path::PathBuf,
        args: &RunArgs,
        stop: Shutdown,
    ) -> (Self, Tasks) {
        let clock = Arc::clone(&local.clock);
        let mut tasks = JoinSet::new();
        let submit_stats = Arc::new(SubmitStats::default());
        let submitter = Arc::new(Submitter {
            jobs: local.jobs.clone(),
            store: Arc::clone(&local.store),
            clock: Arc::clone(&clock),
            log: local.log.clone(),
            policy: args.policy,
            stats: Arc::clone(&submit_stats),
            window: Some(args.submit_window),
        });
        {
            let (submitter, sweep, stop) = (Arc::clone(&submitter), sweep.clone(), stop.clone());
            tasks.spawn(async move { ("submitter", submitter.submit(&sweep, &stop).await.map(|_| ())) });
        }
        let manifests = manifests(local, journal, base_dir);
        let instance = crate::cli::instance_id();
        let worker_stats = Arc::new(WorkerStats::default());
        let worker = Arc::new(Worker {
            jobs: local.jobs.clone(),
            results: local.results.clone(),
            store: Arc::clone(&local.store),
            clock: Arc::clone(&clock),
            manifests,
            config: WorkerConfig {
                visibility_ms: args.visibility_s * 1000,
                prefetch: prefetch_for(sweep, args.workers),
                wait_ms: 200,
                result_flush_ms: 200,
                policy: args.policy,
                ..WorkerConfig::new(format!("w-{instance}"))
            },
            stats: Arc::clone(&worker_stats),
        });
        for slot in 0..usize::from(args.workers) {
            let (worker, stop) = (Arc::clone(&worker), stop.clone());
            tasks.spawn(async move { ("worker", worker.run(slot, stop).await) });
        }
        let aggregator_stats = Arc::new(AggregatorStats::default());
        let aggregator = Aggregator {
            results: local.results.clone(),
            store: Arc::clone(&local.store),
            clock,
            config: AggregatorConfig {
                visibility_ms: args.visibility_s * 1000 * 2,
                wait_ms: 200,
                segment_records_max: 20_000,
                segment_age_max_ms: 100,
                receivers: 2,
                policy: args.policy,
                ..AggregatorConfig::new(format!("a-{instance}"))
            },
            stats: Arc::clone(&aggregator_stats),
        };
        tasks.spawn(async move { ("aggregator", aggregator.run(stop).await) });
        let roles = Self {
            submit_stats,
            aggregator: aggregator_stats,
            workers: worker_stats,
            submitter,
        };
        (roles, tasks)
    }
}

/// The worker's sweeps and their experiments. A program's runs are
/// journalled in `journal` while they run: only a program can kill the
/// runner, so only a program's receive must outlive it.
fn manifests(local: &Local, journal: &Arc<RunJournal>, base_dir: std::path::PathBuf) -> Arc<ManifestCache> {
    let (factory_clock, journal) = (Arc::clone(&local.clock), Arc::clone(journal));
    Arc::new(ManifestCache::new(Arc::new(move |s: &Sweep| {
        let inner = crate::experiment::from_sweep(s, base_dir.clone(), Arc::clone(&factory_clock));
        // Only a program can kill the runner; the built-in runs unjournalled.
        if s.experiment.command.is_none() {
            return inner;
        }
        Arc::new(crate::cli::local::Journalled {
            inner,
            journal: Arc::clone(&journal),
        }) as Arc<dyn crate::core::Experiment>
    })))
}

/// A role's end, as an error if it failed.
fn failure(joined: Result<(&'static str, Result<(), CallError>), tokio::task::JoinError>) -> Option<anyhow::Error> {
    match joined {
        Ok((_, Ok(()))) | Ok((_, Err(CallError::Stopped))) => None,
        Ok((role, Err(e))) => Some(anyhow::Error::new(e).context(format!("the {role} failed"))),
        Err(e) => Some(anyhow::anyhow!("a role panicked: {e}")),
    }
}

/// The first role to fail; never resolves while the roles run well.
async fn first_failure(tasks: &mut Tasks) -> anyhow::Error {
    while let Some(joined) = tasks.join_next().await {
        if let Some(e) = failure(joined) {
            return e;
        }
    }
    std::future::pending().await
}

/// Wait for every role; the first failure, if any.
async fn join(mut tasks: Tasks) -> Option<anyhow::Error> {
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        if let Some(e) = failure(joined) {
            first.get_or_insert(e);
        }
    }
    first
}

/// A sweep file edited since an earlier run is a new sweep (the id hashes
/// the content); say so when one starts, and how to drop the earlier
/// version's jobs, which are still queued and would run too.
async fn earlier_versions(local: &Local, sweep: &Sweep, data: &Path) -> anyhow::Result<()> {
    let never = crate::core::never();
    let (store, clock) = (&*local.store, &*local.clock);
    let id = sweep.id();
    let ids = crate::core::reconciler::sweep_ids(store, clock, &never).await?;
    if ids.contains(&id) {
        return Ok(());
    }
    let prefix = format!("{}-", sweep.name);
    for other in ids
        .iter()
        .filter(|o| o.strip_prefix(&prefix).is_some_and(|h| h.len() == 8))
    {
        if crate::core::manifest::is_cancelled(store, clock, &never, other).await? {
            continue;
        }
        eprintln!(
            "tally: the sweep file changed since sweep {other} was run from it, so this is a new sweep, {id}; \
             {other}'s unfinished jobs are still queued and will run too. To drop them: \
             tally cancel --sweep {other} --backend local --data {}",
            data.display()
        );
    }
    Ok(())
}

/// Short jobs are taken ten at a time; when there are few jobs per worker,
/// one at a time, so work spreads across workers.
fn prefetch_for(sweep: &Sweep, workers: u16) -> usize {
    let per_worker = sweep.len().unwrap_or(0) / u64::from(workers.max(1));
    if sweep.experiment.sleep_ms >= 1000 || per_worker < 100 {
        1
    } else {
        crate::cli::local::LOCAL_BATCH_MAX.min(per_worker as usize / 10).max(10)
    }
}

/// Run the finish-and-resubmit driver until every job is accounted for,
/// redrawing progress on every step.
async fn drive(
    local: &Local,
    sweep: &Sweep,
    args: &RunArgs,
    roles: &Roles,
    progress: &ProgressBar,
    stop: &Shutdown,
) -> anyhow::Result<()> {
    let id = sweep.id();
    let done_before = {
        let report = reconcile(&*local.store, &*local.clock, stop, args.policy, &id, &mut NoSink).await;
        report.map(|r| r.done + r.failed).unwrap_or(0)
    };
    // The embedded queues count exactly and this process holds every role,
    // so no quiet period is needed; the confirming pass still is.
    let config = DriverConfig {
        quiet_ms: 0,
        poll_ms: TICK_MS,
        rounds_max: args.resubmit_rounds,
        progress_ms: None,
        policy: args.policy,
    };
    let (jobs, results) = (&*local.jobs, &*local.results);
    let mut driver = Driver::new(
        jobs,
        results,
        &*local.store,
        &*local.clock,
        &roles.submitter,
        config,
        &id,
    );
    let on_step = |step: &Step| {
        let stored = roles.aggregator.stored.load(Ordering::Relaxed);
        let sent = roles.submit_stats.sent.load(Ordering::Relaxed);
        let failed = roles.workers.failed.load(Ordering::Relaxed) + roles.workers.gave_up.load(Ordering::Relaxed);
        progress.set_message(format!("{id}: {sent} sent, {failed} failed this session; stored"));
        progress.set_position((done_before + stored).min(progress.length().unwrap_or(0)));
        if let Step::Resubmitted { keys, attempt, .. } = step {
            progress.println(format!(
                "{keys} jobs missing after the queues drained; resubmitted them (attempt {attempt})"
            ));
        }
        ControlFlow::Continue(())
    };
    driver.run(stop, &mut NoSink, on_step).await?;
    Ok(())
}

pub(crate) fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})")
            .expect("a valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::DataArgs;

    /// `tally run` in process on a small sweep, bounded: a change to any
    /// role or to the driver that keeps a run from finishing fails here in
    /// seconds, among the unit tests, before the CLI's tests start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_sweep_runs_to_completion_within_seconds() {
        let dir = crate::scratch::Scratch::new("run");
        let sweep = dir.path("s.toml");
        std::fs::write(
            &sweep,
            "name = \"unit\"\nruns = 40\n\n[experiment]\nbuiltin = \"synthetic\"\nsleep_ms = 0\n",
        )
        .unwrap();
        let args = RunArgs {
            sweep,
            workers: 4,
            data: DataArgs { data: dir.path("data") },
            visibility_s: 60,
            resubmit_rounds: 3,
            json: true,
            submit_window: 100_000,
            ignore_disk_space: true,
            policy: crate::core::Policy::Real,
        };
        let code = tokio::time::timeout(std::time::Duration::from_secs(10), run(args)).await;
        drop(dir);
        let code = code
            .expect("tally run did not finish within 10 s (it takes well under one)")
            .expect("tally run failed");
        assert_eq!(code, 0);
    }
}
