//! The `tally` command line: argument parsing, the local backend's setup,
//! and one module per command family.

pub mod backend;
pub mod deploy;
pub mod inspect;
pub mod local;
pub mod run;
mod space;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::core::Policy;
use crate::results_db::Format;

/// Print a line to standard output, ignoring a closed pipe (`tally report
/// | head` must not panic).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// A name for this process's role incarnations (the prefix of its run
/// ids): 128 random bits, so two processes never share one, however alike
/// their hosts (containers started in the same millisecond as pid 1 have
/// the same pid and clock). The operating system's generator seeds it; the
/// simulator names its incarnations itself.
pub(crate) fn instance_id() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom: the std hasher's per-process random keys, twice.
        for (i, half) in bytes.chunks_mut(8).enumerate() {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    format!("{:032x}", u128::from_le_bytes(bytes))
}

/// Sweeps a place holds, for a message: their ids, or "none".
pub(crate) fn held_list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

/// The sweep asked for, or the only one in the store at `place` (named in
/// messages); a sweep it does not hold, or a choice to make, is bad input
/// that lists what it holds.
pub(crate) async fn pick_sweep(
    store: &dyn crate::core::BlobStore,
    clock: &dyn crate::core::Clock,
    place: &str,
    asked: Option<String>,
) -> anyhow::Result<String> {
    let ids = crate::core::reconciler::sweep_ids(store, clock, &crate::core::never()).await?;
    match asked {
        Some(id) if ids.contains(&id) => Ok(id),
        Some(id) => Err(UserError::bad_input(format!(
            "no sweep {id:?} in {place}; it holds: {}",
            held_list(&ids)
        ))),
        None if ids.len() == 1 => Ok(ids[0].clone()),
        None if ids.is_empty() => Err(UserError::bad_input(format!(
            "{place} holds no sweep yet; run `tally run SWEEP.toml` or `tally submit SWEEP.toml` first"
        ))),
        None => Err(UserError::bad_input(format!(
            "{place} holds {} sweeps; choose one with --sweep ({})",
            ids.len(),
            ids.join(", ")
        ))),
    }
}

/// Exit code for bad input: a malformed sweep file, bad flags, no data.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when interrupted by SIGINT or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Run very large experiment sweeps with exactly-once-or-detected results.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a sweep on this machine from start to finish: submit, work,
    /// aggregate, reconcile. Rerunning the same command resumes.
    Run(RunArgs),
    /// Show queue depths and sweep progress.
    Status(DataArgs),
    /// Reconcile and print the report; rebuilds the results database.
    Report(ReportArgs),
    /// Write the results database as CSV or JSON Lines.
    Export(ExportArgs),
    /// Create the queues and check the blob store of a backend.
    Init(deploy::InitArgs),
    /// Publish a sweep and send its jobs to the work queue (resumable).
    Submit(deploy::SubmitArgs),
    /// Run jobs from the work queue until SIGINT/SIGTERM.
    Worker(deploy::WorkerArgs),
    /// Store results from the results queue until SIGINT/SIGTERM.
    Aggregate(deploy::AggregateArgs),
    /// Reconcile a sweep, rebuild its results database, optionally resubmit.
    Reconcile(deploy::ReconcileArgs),
    /// Cancel a sweep: workers drop its remaining jobs without running
    /// them, and the report counts them as cancelled, not missing.
    Cancel(deploy::CancelArgs),
}

/// Where the embedded backend keeps its state.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Data directory of the embedded backend.
    #[arg(long, default_value = "tally-data", env = "TALLY_DATA")]
    pub data: PathBuf,
}

/// `tally run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The sweep file (TOML).
    pub sweep: PathBuf,
    /// Jobs run at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// Data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// Visibility timeout of a held job, seconds (renewed while it runs).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=43200))]
    pub visibility_s: u64,
    /// Resubmission rounds for jobs still missing once the queues drain.
    #[arg(long, default_value_t = 3)]
    pub resubmit_rounds: u32,
    /// Print the final report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Most jobs queued ahead of the workers: the submitter waits while
    /// the work queue holds this many, so its file stays small.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub submit_window: u64,
    /// Run even when the sweep looks too large for the free space of the
    /// data directory's disk.
    #[arg(long)]
    pub ignore_disk_space: bool,
    /// Protocol variant (the non-real ones are planted bugs for testing).
    #[arg(long, default_value_t = Policy::Real, hide = true)]
    pub policy: Policy,
}

/// `tally report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// The sweep (needed only when the data directory holds several).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Print JSON (the stable format) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `tally export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Only this sweep.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// A failure the user can act on, with the exit code to leave with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    /// One sentence: what is wrong and what to do.
    pub message: String,
    /// The process exit code.
    pub code: u8,
}

impl UserError {
    /// Bad input (exit code 2).
    pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            message: message.into(),
            code: EXIT_BAD_INPUT,
        })
    }
}

/// On SIGINT or SIGTERM, set `interrupted` and tell `stop` to stop.
pub(crate) fn stop_on_signal(
    stop: tokio::sync::watch::Sender<bool>,
    interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = stop.send(true);
    });
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        // The AWS credential chain warns about every provider it tried; a
        // failure is reported once, as one sentence, instead.
        0 => "warn,aws_config=error",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person: logs piped to a file stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Parse arguments, run the command, and turn any failure into one
/// sentence on standard error and an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime starts any thread: the guardian is forked.
    if matches!(cli.command, Command::Run(_) | Command::Worker(_)) {
        crate::experiment::guard_jobs();
    }
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tally: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Status(args) => inspect::status(args).await,
            Command::Report(args) => inspect::report(args).await,
            Command::Export(args) => inspect::export(args).await,
            Command::Init(args) => deploy::init(args).await,
            Command::Submit(args) => deploy::submit(args).await,
            Command::Worker(args) => deploy::worker(args).await,
            Command::Aggregate(args) => deploy::aggregate(args).await,
            Command::Reconcile(args) => deploy::reconcile(args).await,
            Command::Cancel(args) => deploy::cancel(args).await,
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.downcast_ref::<UserError>().map_or(1, |u| u.code);
            eprintln!("tally: {}", one_line(&e));
            ExitCode::from(code)
        }
    }
}

/// An error and its causes as one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
