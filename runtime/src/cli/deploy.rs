//! The deployable commands, one role per process, on any backend:
//! `tally init`, `tally submit`, `tally worker`, `tally aggregate` and
//! `tally reconcile`. Run as many workers as there are machines; one
//! aggregator (or several: segments never collide); submit and reconcile
//! from anywhere that can reach the queues and the bucket.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;

use crate::cli::backend::{Backend, BackendArgs};
use crate::cli::inspect::print_report;
use crate::cli::{UserError, EXIT_INTERRUPTED};
use crate::core::aggregator::{Aggregator, AggregatorConfig, AggregatorStats};
use crate::core::manifest::{self, ManifestCache};
use crate::core::reconciler::{self, MissingKeys, Report, Tee};
use crate::core::retry::CallError;
use crate::core::submitter::{SubmitStats, Submitter};
use crate::core::worker::{Worker, WorkerConfig, WorkerStats};
use crate::core::{Policy, Queue, QueueError, QueueStats, Shutdown};
use crate::results_db::ResultsDb;
use crate::sweep::Sweep;

/// `tally init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `tally submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The sweep file (TOML).
    pub sweep: PathBuf,
    /// Backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `tally worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Jobs this process runs at the same time.
    #[arg(long, default_value_t = 1, env = "TALLY_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Jobs taken per receive (1 to 10); 1 spreads long jobs across machines.
    #[arg(long, default_value_t = 1, env = "TALLY_PREFETCH", value_parser = clap::value_parser!(u64).range(1..=10))]
    pub prefetch: u64,
    /// Long-poll wait per receive, seconds (SQS allows at most 20).
    #[arg(long, default_value_t = 20, env = "TALLY_WAIT_S", value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_s: u64,
    /// Directory that a sweep's relative `workdir` is resolved against.
    #[arg(long, default_value = ".", env = "TALLY_BASE_DIR")]
    pub base_dir: PathBuf,
    /// Backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `tally aggregate`.
#[derive(Debug, clap::Args)]
pub struct AggregateArgs {
    /// Store a segment once it holds this many results.
    #[arg(long, default_value_t = 20_000, env = "TALLY_SEGMENT_RECORDS")]
    pub segment_records: usize,
    /// Store a segment once it is this old, milliseconds.
    #[arg(long, default_value_t = 10_000, env = "TALLY_SEGMENT_AGE_MS")]
    pub segment_age_ms: u64,
    /// Long-poll wait per receive, seconds (SQS allows at most 20). A stop
    /// request is noticed after the current poll.
    #[arg(long, default_value_t = 20, env = "TALLY_AGGREGATE_WAIT_S", value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_s: u64,
    /// Backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `tally reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// The sweep (needed only when the store holds several).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Resend the missing jobs (as a new attempt) when the queues are drained.
    #[arg(long)]
    pub resubmit: bool,
    /// With --resubmit: resend even when the queues are not drained (jobs
    /// still queued or held will then run twice; reconciliation detects it).
    #[arg(long, requires = "resubmit")]
    pub force: bool,
    /// Write the results database here. Default: the data directory's
    /// results.sqlite (local) or STATE_DIR/results.sqlite (AWS).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
}

async fn open(args: &BackendArgs) -> anyhow::Result<Backend> {
    Backend::open(args.settings()?).await
}

/// A stop flag flipped by SIGINT or SIGTERM, and whether a signal came.
fn stop_on_signal() -> (Shutdown, Arc<std::sync::atomic::AtomicBool>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    crate::cli::stop_on_signal(tx, Arc::clone(&signalled));
    (rx, signalled)
}

/// `tally init`: create the queues and check the blob store.
pub async fn init(args: InitArgs) -> anyhow::Result<u8> {
    let backend = open(&args.backend).await?;
    for q in [&backend.jobs_dead, &backend.jobs, &backend.results] {
        q.ensure()
            .await
            .with_context(|| format!("cannot create queue {}", q.name()))?;
    }
    println!("ready: {}", backend.describe);
    Ok(0)
}

/// `tally submit`: publish the sweep's manifest and send its jobs.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<u8> {
    let sweep = Sweep::load(&args.sweep).map_err(|e| UserError::bad_input(e.to_string()))?;
    let backend = open(&args.backend).await?;
    let (stop, signalled) = stop_on_signal();
    let stats = Arc::new(SubmitStats::default());
    let submitter = Submitter {
        jobs: Arc::clone(&backend.jobs),
        store: Arc::clone(&backend.store),
        clock: Arc::clone(&backend.clock),
        log: backend.send_log()?,
        policy: Policy::Real,
        stats: Arc::clone(&stats),
    };
    let outcome = submitter.submit(&sweep, &stop).await;
    let sent = stats.sent.load(std::sync::atomic::Ordering::Relaxed);
    match outcome {
        Ok(id) => {
            println!("{id}: {} jobs submitted ({sent} sent now)", sweep.len().unwrap_or(0));
            Ok(0)
        }
        Err(CallError::Stopped) if signalled.load(std::sync::atomic::Ordering::SeqCst) => {
            eprintln!("tally: interrupted after {sent} jobs; rerun the same command to resume");
            Ok(EXIT_INTERRUPTED)
        }
        Err(e) => Err(anyhow::Error::new(e).context("submitting failed")),
    }
}

/// A name for this process's role incarnation, unique across restarts.
fn instance_id(backend: &Backend, role: &str) -> String {
    format!("{role}-{:x}-{:x}", std::process::id(), backend.clock.wall_ms())
}

/// `tally worker`: run jobs until SIGINT/SIGTERM, then hand back held jobs.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<u8> {
    let backend = open(&args.backend).await?;
    let (stop, _) = stop_on_signal();
    let clock = Arc::clone(&backend.clock);
    let base_dir = args.base_dir.clone();
    let factory_clock = Arc::clone(&clock);
    let manifests = Arc::new(ManifestCache::new(Arc::new(move |s: &Sweep| {
        crate::experiment::from_sweep(s, base_dir.clone(), Arc::clone(&factory_clock))
    })));
    let worker = Arc::new(Worker {
        jobs: Arc::clone(&backend.jobs),
        results: Arc::clone(&backend.results),
        store: Arc::clone(&backend.store),
        clock,
        manifests,
        config: WorkerConfig {
            visibility_ms: backend.settings.visibility_s * 1000,
            prefetch: args.prefetch as usize,
            wait_ms: args.wait_s * 1000,
            result_flush_ms: 1000,
            policy: Policy::Real,
            ..WorkerConfig::new(instance_id(&backend, "w"))
        },
        stats: Arc::new(WorkerStats::default()),
    });
    eprintln!("tally: worker {} on {}", worker.config.id, backend.describe);
    let mut tasks = JoinSet::new();
    for slot in 0..usize::from(args.concurrency) {
        let (worker, stop) = (Arc::clone(&worker), stop.clone());
        tasks.spawn(async move { worker.run(slot, stop).await });
    }
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) | Ok(Err(CallError::Stopped)) => {}
            Ok(Err(e)) => {
                first.get_or_insert(anyhow::Error::new(e).context("a worker loop failed"));
            }
            Err(e) => {
                first.get_or_insert(anyhow::anyhow!("a worker loop panicked: {e}"));
            }
        }
    }
    first.map_or(Ok(0), Err)
}

/// `tally aggregate`: store results in segments until SIGINT/SIGTERM, then
/// store what is held and exit.
pub async fn aggregate(args: AggregateArgs) -> anyhow::Result<u8> {
    let backend = open(&args.backend).await?;
    let (stop, _) = stop_on_signal();
    let aggregator = Aggregator {
        results: Arc::clone(&backend.results),
        store: Arc::clone(&backend.store),
        clock: Arc::clone(&backend.clock),
        config: AggregatorConfig {
            visibility_ms: backend.settings.visibility_s * 1000 * 2,
            wait_ms: args.wait_s * 1000,
            segment_records_max: args.segment_records.max(1),
            segment_age_max_ms: args.segment_age_ms,
            policy: Policy::Real,
            ..AggregatorConfig::new(instance_id(&backend, "a"))
        },
        stats: Arc::new(AggregatorStats::default()),
    };
    eprintln!("tally: aggregator {} on {}", aggregator.config.id, backend.describe);
    match aggregator.run(stop).await {
        Ok(()) | Err(CallError::Stopped) => Ok(0),
        Err(e) => Err(anyhow::Error::new(e).context("the aggregator failed")),
    }
}

/// Depths of a queue; a missing queue holds nothing.
async fn depth(queue: &dyn Queue) -> anyhow::Result<QueueStats> {
    match queue.stats().await {
        Ok(stats) => Ok(stats),
        Err(QueueError::Missing { .. }) => Ok(QueueStats::default()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read queue {}", queue.name()))),
    }
}

/// `tally reconcile`: classify every job, rebuild the results database, and
/// with `--resubmit` resend what is missing.
pub async fn reconcile(args: ReconcileArgs) -> anyhow::Result<u8> {
    let backend = open(&args.backend).await?;
    let stop = crate::core::never();
    let id = pick_sweep(&backend, args.sweep.clone()).await?;
    let manifest = manifest::load(&*backend.store, &*backend.clock, &stop, &id)
        .await?
        .with_context(|| format!("sweep {id} has no manifest"))?;
    let path = args.out.clone().unwrap_or_else(|| backend.default_results_db());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut db = ResultsDb::create(&path, &manifest).with_context(|| format!("cannot build {}", path.display()))?;
    let mut missing = MissingKeys::default();
    let report = reconciler::reconcile(
        &*backend.store,
        &*backend.clock,
        &stop,
        Policy::Real,
        &id,
        &mut Tee(&mut db, &mut missing),
    )
    .await?;
    db.finish(&report)
        .with_context(|| format!("cannot write {}", path.display()))?;
    print_report(&report, &path, args.json, None);
    if args.resubmit && !missing.0.is_empty() {
        resubmit(&backend, &report, &missing.0, args.force).await?;
    }
    Ok(crate::cli::inspect::exit_code(&report))
}

/// Resend `missing` jobs as a new attempt, if the queues look drained.
async fn resubmit(backend: &Backend, report: &Report, missing: &[u64], force: bool) -> anyhow::Result<()> {
    let jobs = depth(&*backend.jobs).await?;
    let results = depth(&*backend.results).await?;
    let drained = jobs.is_drained() && results.is_drained();
    if !drained && !force {
        eprintln!(
            "tally: not resubmitting {} missing jobs: the queues are not drained (jobs: {} waiting, {} in flight; \
             results: {} waiting, {} in flight); rerun when they are, or pass --force",
            missing.len(),
            jobs.visible,
            jobs.in_flight,
            results.visible,
            results.in_flight
        );
        return Ok(());
    }
    let submitter = Submitter {
        jobs: Arc::clone(&backend.jobs),
        store: Arc::clone(&backend.store),
        clock: Arc::clone(&backend.clock),
        log: backend.send_log()?,
        policy: Policy::Real,
        stats: Arc::new(SubmitStats::default()),
    };
    let attempt = submitter
        .resubmit(&report.sweep, missing, &crate::core::never())
        .await
        .context("resubmitting failed")?;
    eprintln!("tally: resubmitted {} missing jobs as attempt {attempt}", missing.len());
    Ok(())
}

/// The sweep asked for, or the only one in the store.
async fn pick_sweep(backend: &Backend, asked: Option<String>) -> anyhow::Result<String> {
    let ids = reconciler::sweep_ids(&*backend.store, &*backend.clock, &crate::core::never()).await?;
    match asked {
        Some(id) if ids.contains(&id) => Ok(id),
        Some(id) => Err(UserError::bad_input(format!(
            "no sweep {id:?} in {}; it holds: {}",
            backend.describe,
            ids.join(", ")
        ))),
        None if ids.len() == 1 => Ok(ids[0].clone()),
        None if ids.is_empty() => Err(UserError::bad_input(format!(
            "{} holds no sweep yet; run `tally submit SWEEP.toml` first",
            backend.describe
        ))),
        None => Err(UserError::bad_input(format!(
            "{} holds {} sweeps; choose one with --sweep ({})",
            backend.describe,
            ids.len(),
            ids.join(", ")
        ))),
    }
}
