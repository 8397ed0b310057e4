//! `tally run`: submitter, workers and aggregator in one process on the
//! embedded backend, then reconciliation, resubmission of anything missing,
//! and the final results database.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use crate::cli::inspect::{print_report, reconcile_into_db};
use crate::cli::local::{Local, LockMode};
use crate::cli::{RunArgs, UserError, EXIT_INTERRUPTED};
use crate::core::aggregator::{Aggregator, AggregatorConfig, AggregatorStats};
use crate::core::manifest::ManifestCache;
use crate::core::reconciler::reconcile;
use crate::core::reconciler::MissingKeys;
use crate::core::retry::CallError;
use crate::core::submitter::{SubmitStats, Submitter};
use crate::core::worker::{Worker, WorkerConfig, WorkerStats};
use crate::core::Shutdown;
use crate::sweep::Sweep;

/// How often the run checks for completion and redraws progress.
const TICK_MS: u64 = 100;

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
    let visibility_ms = args.visibility_s * 1000;
    let full = |e| crate::cli::local::explain_disk_full(e, &args.data.data);
    let local = Local::open(&args.data.data, true, LockMode::Exclusive, visibility_ms)
        .await
        .map_err(full)?;
    release_orphans(&local).map_err(full)?;
    let started_ms = local.clock.mono_ms();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    crate::cli::stop_on_signal(stop_tx.clone(), Arc::clone(&interrupted));

    let id = sweep.id();
    let submitted = sweep.len().expect("validated");
    tracing::info!(sweep = %id, jobs = submitted, data = %local.dir.display(), workers = args.workers, "running the sweep");
    let progress = progress_bar(submitted);
    let roles = Roles::start(&local, &sweep, base_dir, &args, (stop_tx.clone(), stop_rx.clone()));
    let outcome = drive(&local, &sweep, &args, &roles, &progress, &stop_rx).await;
    let _ = stop_tx.send(true);
    let role_error = roles.join().await;
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
fn release_orphans(local: &Local) -> anyhow::Result<()> {
    let started = local.jobs_db.started().context("cannot read the queues")?;
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
    local.jobs_db.clear_started().context("cannot write the queues")
}

/// The roles running in this process.
struct Roles {
    tasks: JoinSet<(&'static str, Result<(), CallError>)>,
    submit_stats: Arc<SubmitStats>,
    submitter_done: Arc<std::sync::atomic::AtomicBool>,
    aggregator: Arc<AggregatorStats>,
    submitter: Arc<Submitter>,
}

impl Roles {
    /// Start every role. A role that fails stops the others (through
    /// `halt`): the run cannot finish without it, and would otherwise wait
    /// for it forever.
    fn start(
        local: &Local,
        sweep: &Sweep,
        base_dir: std::path::PathBuf,
        args: &RunArgs,
        (halt, stop): (tokio::sync::watch::Sender<bool>, Shutdown),
    ) -> Self {
        let clock = Arc::clone(&local.clock);
        let mut tasks = RoleTasks {
            set: JoinSet::new(),
            halt,
        };
        let submit_stats = Arc::new(SubmitStats::default());
        let submitter = Arc::new(Submitter {
            jobs: local.jobs.clone(),
            store: Arc::clone(&local.store),
            clock: Arc::clone(&clock),
            log: local.log.clone(),
            policy: args.policy,
            stats: Arc::clone(&submit_stats),
        });
        let submitter_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (submitter, sweep, stop, done) = (
                Arc::clone(&submitter),
                sweep.clone(),
                stop.clone(),
                Arc::clone(&submitter_done),
            );
            tasks.spawn(async move {
                let r = submitter.submit(&sweep, &stop).await.map(|_| ());
                done.store(r.is_ok(), Ordering::SeqCst);
                ("submitter", r)
            });
        }
        let (factory_clock, journal) = (Arc::clone(&clock), Arc::clone(&local.jobs_db));
        let manifests = Arc::new(ManifestCache::new(Arc::new(move |s: &Sweep| {
            let inner = crate::experiment::from_sweep(s, base_dir.clone(), Arc::clone(&factory_clock));
            // Only a program can kill the runner; the built-in runs unjournalled.
            if s.experiment.command.is_none() {
                return inner;
            }
            Arc::new(crate::cli::local::Journalled {
                inner,
                db: Arc::clone(&journal),
            }) as Arc<dyn crate::core::Experiment>
        })));
        let instance = instance_id();
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
            stats: Arc::new(WorkerStats::default()),
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
                segment_age_max_ms: 500,
                receivers: 2,
                policy: args.policy,
                ..AggregatorConfig::new(format!("a-{instance}"))
            },
            stats: Arc::clone(&aggregator_stats),
        };
        tasks.spawn(async move { ("aggregator", aggregator.run(stop).await) });
        Self {
            tasks: tasks.set,
            submit_stats,
            submitter_done,
            aggregator: aggregator_stats,
            submitter,
        }
    }

    /// Wait for every role; the first failure, if any.
    async fn join(mut self) -> Option<anyhow::Error> {
        let mut first = None;
        while let Some(joined) = self.tasks.join_next().await {
            let err = match joined {
                Ok((_, Ok(()))) | Ok((_, Err(CallError::Stopped))) => continue,
                Ok((role, Err(e))) => anyhow::Error::new(e).context(format!("the {role} failed")),
                Err(e) => anyhow::anyhow!("a role panicked: {e}"),
            };
            first.get_or_insert(err);
        }
        first
    }
}

/// The roles' tasks, each of which stops the run if it fails.
struct RoleTasks {
    set: JoinSet<(&'static str, Result<(), CallError>)>,
    halt: tokio::sync::watch::Sender<bool>,
}

impl RoleTasks {
    fn spawn(
        &mut self,
        role: impl std::future::Future<Output = (&'static str, Result<(), CallError>)> + Send + 'static,
    ) {
        let halt = self.halt.clone();
        self.set.spawn(async move {
            let (name, outcome) = role.await;
            if matches!(outcome, Err(ref e) if !matches!(e, CallError::Stopped)) {
                let _ = halt.send(true);
            }
            (name, outcome)
        });
    }
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

/// A name for this process's worker and aggregator incarnations, unique
/// across restarts so run ids never collide.
fn instance_id() -> String {
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), now)
}

/// Watch progress until every job is accounted for, resubmitting what is
/// missing once the queues drain.
async fn drive(
    local: &Local,
    sweep: &Sweep,
    args: &RunArgs,
    roles: &Roles,
    progress: &ProgressBar,
    stop: &Shutdown,
) -> anyhow::Result<()> {
    let id = sweep.id();
    let mut rounds = 0;
    let done_before = {
        let report = reconcile(
            &*local.store,
            &*local.clock,
            stop,
            args.policy,
            &id,
            &mut crate::core::reconciler::NoSink,
        )
        .await;
        report.map(|r| r.done + r.failed).unwrap_or(0)
    };
    loop {
        if crate::core::is_stopping(stop) || roles.tasks.is_empty() {
            return Ok(());
        }
        let stored = roles.aggregator.stored.load(Ordering::Relaxed);
        let sent = roles.submit_stats.sent.load(Ordering::Relaxed);
        progress.set_message(format!("{id}: {sent} sent this session; stored"));
        progress.set_position((done_before + stored).min(progress.length().unwrap_or(0)));
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
        if !roles.submitter_done.load(Ordering::SeqCst) || !drained(local).await? {
            continue;
        }
        if roles.aggregator.buffered.load(Ordering::Relaxed) > 0 {
            continue;
        }
        let mut missing = MissingKeys::default();
        let report = reconcile(&*local.store, &*local.clock, stop, args.policy, &id, &mut missing).await?;
        if missing.0.is_empty() || rounds >= args.resubmit_rounds {
            return Ok(());
        }
        rounds += 1;
        progress.println(format!(
            "{} jobs missing after the queues drained; resubmitting (round {rounds})",
            report.missing
        ));
        roles.submitter.resubmit(&id, &missing.0, stop).await?;
    }
}

/// Jobs queue first, then results: a job leaves the work queue only after
/// its result entered the results queue, so both empty means all stored.
async fn drained(local: &Local) -> anyhow::Result<bool> {
    if !local.jobs.is_empty().context("cannot read the work queue")? {
        return Ok(false);
    }
    local.results.is_empty().context("cannot read the results queue")
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})")
            .expect("a valid template"),
    );
    bar
}
