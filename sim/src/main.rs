//! `tally-sim`: run tally's protocol under simulated faults, check
//! exactly-once-or-detected, and replay any run exactly from its seed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tally::core::Policy;
use tally_sim::checker::trace::first_divergence;
use tally_sim::explore::{Explorer, Tried};
use tally_sim::faults::scenario::{Scenario, Transport};
use tally_sim::faults::schedule::Schedule;
use tally_sim::fingerprint::Groups;
use tally_sim::world::{self, RunSummary};

/// A simulated run allocates and frees a few dozen small objects per job,
/// which mimalloc does faster than glibc's allocator (docs/BENCHMARKS.md
/// has the measurement). It changes no result: nothing in the simulator
/// depends on addresses, and a seed's trace is the same under either.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Print a line to standard output, ignoring a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Deterministic fault-injecting simulator for tally.
#[derive(Debug, Parser)]
#[command(name = "tally-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one seed of a scenario and check it.
    Run(RunArgs),
    /// Run a range of seeds and list the failing ones, grouped by
    /// fingerprint (violation kinds and the first fault that matters).
    Sweep(SweepArgs),
    /// Search for a failing run, guided by coverage: mutate the schedules
    /// that reached new cells.
    Explore(ExploreArgs),
    /// Replay a run from a schedule file written by `run --schedule-out`
    /// or `shrink`.
    Replay(ReplayArgs),
    /// Shrink a failing seed's fault schedule to a minimal one that still
    /// fails the same way, and write it as a regression.
    Shrink(ShrinkArgs),
}

#[derive(Debug, clap::Args)]
struct ShrinkArgs {
    #[command(flatten)]
    common: Common,
    /// The failing seed.
    #[arg(long)]
    seed: u64,
    /// Where to write the minimal schedule (default:
    /// scenarios/regressions/SCENARIO-POLICY-SEED.toml).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The scenario file.
    #[arg(long)]
    scenario: PathBuf,
    /// Override the scenario's number of jobs.
    #[arg(long)]
    jobs: Option<u64>,
    /// Protocol: real, or a planted bug the checker must catch.
    #[arg(long, default_value_t = Policy::Real)]
    policy: Policy,
    /// Override the scenario's transport: `direct` (the simulator's RPC)
    /// or `sdk` (production's AWS adapter through the AWS SDK).
    #[arg(long, value_enum)]
    transport: Option<Transport>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// The seed.
    #[arg(long)]
    seed: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Run the seed twice and compare traces event by event.
    #[arg(long)]
    check_determinism: bool,
    /// Write the run's fault schedule (TOML) here.
    #[arg(long)]
    schedule_out: Option<PathBuf>,
    /// Write the run's trace here, one event per line (time in ms, kind,
    /// hash, description), to read what happened on a failing seed.
    #[arg(long)]
    trace_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SweepArgs {
    #[command(flatten)]
    common: Common,
    /// Seeds, as A..B (B excluded).
    #[arg(long)]
    seeds: String,
    /// Stop starting new seeds after this many wall seconds.
    #[arg(long)]
    budget_s: Option<u64>,
    /// Print the result as JSON: the failing seeds grouped by fingerprint.
    #[arg(long)]
    json: bool,
    /// Stop at the first failing seed.
    #[arg(long)]
    first: bool,
}

#[derive(Debug, clap::Args)]
struct ExploreArgs {
    #[command(flatten)]
    common: Common,
    /// Stop starting new runs after this many wall seconds.
    #[arg(long)]
    budget_s: u64,
    /// The seed of the search's own choices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this many runs (default: only the budget stops it).
    #[arg(long)]
    runs: Option<u64>,
    /// Where to write a failing schedule (default:
    /// target/explore/SCENARIO-POLICY-SEED.toml).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// A schedule file.
    #[arg(long)]
    schedule: PathBuf,
    /// Replay under this protocol instead of the schedule's own.
    #[arg(long)]
    policy: Option<Policy>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Sweep(a) => sweep(a),
        Command::Explore(a) => explore(a),
        Command::Replay(a) => replay(a),
        Command::Shrink(a) => shrink(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tally-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(common: &Common) -> anyhow::Result<Scenario> {
    let mut scenario = Scenario::load(&common.scenario)?;
    if let Some(jobs) = common.jobs {
        anyhow::ensure!(jobs > 0, "--jobs must be at least 1");
        scenario.jobs = jobs;
    }
    if let Some(transport) = common.transport {
        scenario.transport = transport;
        scenario
            .check_transport()
            .map_err(|e| anyhow::anyhow!("{}: {e}", common.scenario.display()))?;
    }
    Ok(scenario)
}

fn replay_command(common: &Common, seed: u64) -> String {
    let mut cmd = format!("tally-sim run --scenario {} --seed {seed}", common.scenario.display());
    if common.policy != Policy::Real {
        cmd.push_str(&format!(" --policy {}", common.policy.name()));
    }
    if let Some(transport) = common.transport {
        cmd.push_str(&format!(" --transport {}", transport.name()));
    }
    if let Some(jobs) = common.jobs {
        cmd.push_str(&format!(" --jobs {jobs}"));
    }
    cmd
}

#[allow(clippy::disallowed_methods)] // wall time of the simulator itself, not simulated code
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = std::time::Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

fn summary(schedule: &Schedule, out: &RunSummary, wall_s: f64) -> serde_json::Value {
    let r = &out.report;
    serde_json::json!({
        "scenario": schedule.resolved.scenario.name,
        "transport": schedule.resolved.scenario.transport.name(),
        "seed": schedule.seed,
        "policy": schedule.policy.name(),
        "jobs": schedule.resolved.scenario.jobs,
        "trace_hash": format!("{:016x}", out.trace_hash),
        "trace_events": out.trace_events,
        "faults": out.faults,
        "finished": out.finished,
        "sim_s": out.sim_ms as f64 / 1000.0,
        "wall_s": (wall_s * 1000.0).round() / 1000.0,
        "report": {
            "submitted": r.submitted, "done": r.done, "failed": r.failed, "missing": r.missing,
            "duplicates": r.duplicates, "duplicate_runs": r.duplicate_runs, "conflicts": r.conflicts,
            "phantoms": r.phantoms, "redelivered": r.redelivered, "rounds": r.rounds, "resubmitted": r.resubmitted,
        },
        "classes": out.verdict.classes,
        "violations": out.verdict.counts,
        "first_violations": out.verdict.violations,
        "passed": out.verdict.passed(),
        "sdk_answers": out.sdk_answers,
    })
}

fn print(v: &serde_json::Value, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(v).expect("json"));
        return;
    }
    let get = |k: &str| v[k].to_string();
    outln!(
        "{} seed {} policy {}: {} ({} jobs, {} faults, {} sim s, {} wall s, trace {})",
        v["scenario"].as_str().unwrap_or(""),
        get("seed"),
        v["policy"].as_str().unwrap_or(""),
        if v["passed"] == true { "PASS" } else { "FAIL" },
        get("jobs"),
        get("faults"),
        get("sim_s"),
        get("wall_s"),
        v["trace_hash"].as_str().unwrap_or(""),
    );
    outln!("  report  {}", v["report"]);
    outln!("  classes {}", v["classes"]);
    if v["passed"] != true {
        outln!("  violations {}", v["violations"]);
        for f in v["first_violations"].as_array().into_iter().flatten() {
            outln!("    {f}");
        }
    }
}

fn run(a: RunArgs) -> anyhow::Result<u8> {
    let scenario = load(&a.common)?;
    let schedule = Schedule::draw(&scenario.resolve(a.seed), a.seed, a.common.policy);
    if let Some(path) = &a.schedule_out {
        std::fs::write(path, schedule.to_toml())?;
    }
    let capture = a.check_determinism || a.trace_out.is_some();
    let (out, wall_s) = timed(|| world::run(&schedule, capture));
    if let Some(path) = &a.trace_out {
        let mut text = out.captured.as_deref().unwrap_or(&[]).join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write the trace to {}: {e}", path.display()))?;
    }
    let v = summary(&schedule, &out, wall_s);
    print(&v, a.json);
    if a.check_determinism {
        let again = world::run(&schedule, true);
        match first_divergence(
            out.captured.as_deref().unwrap_or(&[]),
            again.captured.as_deref().unwrap_or(&[]),
        ) {
            None if again.trace_hash == out.trace_hash => outln!(
                "deterministic: both runs have trace {:016x} ({} events)",
                out.trace_hash,
                out.trace_events
            ),
            None => {
                outln!(
                    "NOT deterministic: traces {:016x} and {:016x} differ past the captured events",
                    out.trace_hash,
                    again.trace_hash
                );
                return Ok(1);
            }
            Some(d) => {
                outln!("NOT deterministic: {d}");
                return Ok(1);
            }
        }
    }
    if !out.verdict.passed() {
        eprintln!("replay: {}", replay_command(&a.common, a.seed));
        return Ok(1);
    }
    Ok(0)
}

fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| anyhow::anyhow!("--seeds takes A..B, not {s:?}"))?;
    let (a, b): (u64, u64) = (a.parse()?, b.parse()?);
    anyhow::ensure!(a < b, "--seeds {s}: the range is empty");
    Ok((a, b))
}

fn shrink_command(common: &Common, seed: u64) -> String {
    replay_command(common, seed).replacen("tally-sim run ", "tally-sim shrink ", 1)
}

/// What a sweep found.
struct Swept {
    groups: Groups,
    /// Seeds run.
    ran: u64,
    wall_s: f64,
    /// Seeds run and wall seconds when the first failing seed's run ended
    /// (before its fingerprint's shrink).
    first: Option<(u64, f64)>,
}

/// Run seeds `from..to` (until the budget is spent, or the first failure
/// with `--first`) and group the failing ones by fingerprint.
fn sweep_seeds(a: &SweepArgs, scenario: &Scenario, from: u64, to: u64) -> Swept {
    let mut groups = Groups::new(tally_sim::fingerprint::SHRINK_RUNS);
    let mut first = None;
    let (ran, wall_s) = timed(|| {
        let mut ran = 0;
        #[allow(clippy::disallowed_methods)] // the budget is wall time of the sweep itself
        let start = std::time::Instant::now();
        for seed in from..to {
            if a.budget_s.is_some_and(|b| start.elapsed().as_secs() >= b) {
                break;
            }
            let schedule = Schedule::draw(&scenario.resolve(seed), seed, a.common.policy);
            let out = world::run(&schedule, false);
            ran += 1;
            if !out.verdict.passed() {
                first.get_or_insert((ran, start.elapsed().as_secs_f64()));
                groups.add(&schedule, &out.verdict);
                if a.first {
                    break;
                }
            }
        }
        ran
    });
    Swept {
        groups,
        ran,
        wall_s,
        first,
    }
}

/// A sweep's failures as JSON: one entry per fingerprint.
fn groups_json(common: &Common, groups: &Groups) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = groups
        .groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "classes": g.fingerprint.classes,
                "role": g.fingerprint.strike.role,
                "step": g.fingerprint.strike.step,
                "count": g.seeds.len(),
                "seeds": g.seeds,
                "replay": replay_command(common, g.seeds[0]),
                "shrink": shrink_command(common, g.seeds[0]),
            })
        })
        .collect();
    serde_json::Value::Array(groups)
}

/// Print one line per fingerprint, with the count, the first seeds, and
/// the commands that replay and shrink the first.
fn print_groups(common: &Common, groups: &Groups) {
    for g in &groups.groups {
        let shown: Vec<String> = g.seeds.iter().take(10).map(u64::to_string).collect();
        let more = if g.seeds.len() > 10 { ", ..." } else { "" };
        outln!(
            "FAIL {} seed{}: {} (seeds {}{more})",
            g.seeds.len(),
            if g.seeds.len() == 1 { "" } else { "s" },
            g.fingerprint,
            shown.join(", ")
        );
        outln!("  replay: {}", replay_command(common, g.seeds[0]));
        outln!("  shrink: {}", shrink_command(common, g.seeds[0]));
    }
}

fn sweep(a: SweepArgs) -> anyhow::Result<u8> {
    let scenario = load(&a.common)?;
    let (from, to) = parse_range(&a.seeds)?;
    let Swept {
        groups,
        ran,
        wall_s,
        first,
    } = sweep_seeds(&a, &scenario, from, to);
    let failing = groups.failing();
    if a.json {
        let v = serde_json::json!({
            "scenario": scenario.name,
            "scenario_file": a.common.scenario.display().to_string(),
            "policy": a.common.policy.name(),
            "seeds_from": from,
            "seeds_run": ran,
            "wall_s": (wall_s * 1000.0).round() / 1000.0,
            "failing": failing,
            "first_failure": first.map(|(runs, s)| serde_json::json!({"runs": runs, "wall_s": (s * 1000.0).round() / 1000.0})),
            "shrink_runs": groups.shrink_runs,
            "groups": groups_json(&a.common, &groups),
        });
        outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        print_groups(&a.common, &groups);
        outln!(
            "{}: {ran} seeds from {from} in {wall_s:.1} s, {failing} failing{}",
            scenario.name,
            match groups.groups.len() {
                0 => String::new(),
                n => format!(" in {n} group{}", if n == 1 { "" } else { "s" }),
            }
        );
    }
    Ok(u8::from(failing > 0))
}

/// The search's loop: run until a run fails, the budget is spent or the
/// runs are made.
fn explore_until(a: &ExploreArgs, x: &mut Explorer) -> (Option<Tried>, f64) {
    timed(|| {
        #[allow(clippy::disallowed_methods)] // the budget is wall time of the search itself
        let start = std::time::Instant::now();
        while start.elapsed().as_secs() < a.budget_s && a.runs.is_none_or(|n| x.runs < n) {
            let tried = x.step();
            if !tried.summary.verdict.passed() {
                return Some(tried);
            }
        }
        None
    })
}

fn explore(a: ExploreArgs) -> anyhow::Result<u8> {
    let scenario = load(&a.common)?;
    let name = scenario.name.clone();
    let mut x = Explorer::new(scenario, a.common.policy, a.seed);
    let (failed, wall_s) = explore_until(&a, &mut x);
    let mut v = serde_json::json!({
        "scenario": name,
        "policy": a.common.policy.name(),
        "seed": a.seed,
        "runs": x.runs,
        "wall_s": (wall_s * 1000.0).round() / 1000.0,
        "cells": x.cells.len(),
        "corpus": x.corpus.len(),
        "failed": failed.is_some(),
        "reached": x.cells,
    });
    if let Some(t) = &failed {
        let out = a.out.clone().unwrap_or_else(|| {
            PathBuf::from("target/explore").join(format!("{name}-{}-{}.toml", a.common.policy.name(), a.seed))
        });
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, t.schedule.to_toml())
            .map_err(|e| anyhow::anyhow!("cannot write the schedule to {}: {e}", out.display()))?;
        let mut groups = Groups::new(tally_sim::fingerprint::SHRINK_RUNS);
        groups.add(&t.schedule, &t.summary.verdict);
        let fp = &groups.groups[0].fingerprint;
        v["fingerprint"] = serde_json::json!({"classes": fp.classes, "role": fp.strike.role, "step": fp.strike.step});
        v["origin"] = serde_json::json!(t.origin.name());
        v["schedule"] = serde_json::json!(out.display().to_string());
        v["replay"] = serde_json::json!(format!("tally-sim replay --schedule {}", out.display()));
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        if let Some(t) = &failed {
            outln!(
                "FAIL run {} ({}, {wall_s:.1} s): {}",
                x.runs,
                t.origin.name(),
                v["fingerprint"]
            );
            outln!("  replay: {}", v["replay"].as_str().unwrap_or(""));
        }
        outln!(
            "{name}: {} runs in {wall_s:.1} s, {} cells reached, corpus {}{}",
            x.runs,
            x.cells.len(),
            x.corpus.len(),
            if failed.is_some() { ", failing" } else { ", no failure" }
        );
    }
    Ok(u8::from(failed.is_some()))
}

fn replay(a: ReplayArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&a.schedule)?;
    let mut schedule = Schedule::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", a.schedule.display()))?;
    if let Some(policy) = a.policy {
        schedule.policy = policy;
    }
    let (out, wall_s) = timed(|| world::run(&schedule, false));
    print(&summary(&schedule, &out, wall_s), a.json);
    Ok(u8::from(!out.verdict.passed()))
}

fn shrink(a: ShrinkArgs) -> anyhow::Result<u8> {
    let scenario = load(&a.common)?;
    let schedule = Schedule::draw(&scenario.resolve(a.seed), a.seed, a.common.policy);
    let (shrunk, wall_s) = timed(|| tally_sim::shrink::shrink(&schedule, |step| eprintln!("shrink: {step}")));
    let shrunk = shrunk.map_err(|e| anyhow::anyhow!("seed {}: {e}", a.seed))?;
    let out = a.out.unwrap_or_else(|| {
        PathBuf::from("scenarios/regressions").join(format!(
            "{}-{}-{}.toml",
            scenario.name,
            a.common.policy.name(),
            a.seed
        ))
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let header = format!(
        "# Shrunk from `{}`: {} faults -> {}, in {} runs ({wall_s:.1} s).\n# Violations: {:?}\n",
        replay_command(&a.common, a.seed),
        shrunk.faults_before,
        shrunk.faults_after,
        shrunk.runs,
        shrunk.kinds
    );
    std::fs::write(&out, format!("{header}{}", shrunk.schedule.to_toml()))?;
    outln!("{}", shrunk.schedule.to_toml());
    outln!(
        "faults {} -> {} in {} runs, {wall_s:.1} s; violations {:?}",
        shrunk.faults_before,
        shrunk.faults_after,
        shrunk.runs,
        shrunk.kinds
    );
    outln!("written to {}", out.display());
    outln!("replay: tally-sim replay --schedule {}", out.display());
    Ok(0)
}
