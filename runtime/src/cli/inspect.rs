//! `tally status`, `tally report` and `tally export`, and the report
//! printing and reconciliation they share with `tally run`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::cli::local::{Local, LockMode};
use crate::cli::{DataArgs, ExportArgs, ReportArgs, UserError};
use crate::core::manifest;
use crate::core::reconciler::{self, RecordSink, Report, Tee};
use crate::core::{Policy, Queue};
use crate::results_db::ResultsDb;

/// Reconcile `sweep_id` and rebuild its rows of the results database.
pub async fn reconcile_into_db(
    local: &Local,
    sweep_id: &str,
    policy: Policy,
    extra: &mut dyn RecordSink,
) -> anyhow::Result<Report> {
    let stop = crate::core::never();
    let manifest = manifest::load(&*local.store, &*local.clock, &stop, sweep_id)
        .await?
        .with_context(|| format!("sweep {sweep_id} has no manifest"))?;
    let path = local.results_db();
    let mut db = ResultsDb::create(&path, &manifest).with_context(|| format!("cannot build {}", path.display()))?;
    let report = reconciler::reconcile(
        &*local.store,
        &*local.clock,
        &stop,
        policy,
        sweep_id,
        &mut Tee(&mut db, extra),
    )
    .await?;
    db.finish(&report)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(
        sweep = sweep_id,
        done = report.done,
        failed = report.failed,
        missing = report.missing,
        db = %path.display(),
        "reconciled"
    );
    Ok(report)
}

/// Print a report as JSON or as a table.
pub fn print_report(report: &Report, db: &Path, json: bool, elapsed_s: Option<f64>) {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(report).expect("a report serialises"));
        return;
    }
    let row = |k: &str, v: String| crate::outln!("{k:<12} {v}");
    row("sweep", report.sweep.clone());
    row("submitted", report.submitted.to_string());
    row("done", report.done.to_string());
    row("failed", report.failed.to_string());
    row("missing", report.missing.to_string());
    if report.cancelled > 0 {
        row("cancelled", report.cancelled.to_string());
    }
    row("conflicts", report.conflicts.to_string());
    row(
        "duplicates",
        format!(
            "{} ({} extra runs, {} redelivered copies)",
            report.duplicates, report.duplicate_runs, report.redelivered
        ),
    );
    row("phantoms", report.phantoms.to_string());
    row("quarantined", report.quarantined.to_string());
    row(
        "resubmitted",
        format!("{} jobs in {} rounds", report.resubmitted, report.rounds),
    );
    row("results", db.display().to_string());
    if let Some(s) = elapsed_s {
        row(
            "elapsed",
            format!("{s:.1} s ({:.0} jobs/s)", report.submitted as f64 / s.max(1e-9)),
        );
    }
    let failed = report.failed;
    let verdict = if !report.is_complete() {
        format!(
            "INCOMPLETE: {} missing, {} conflicts, {} phantoms, {} unreadable segments, {failed} failed",
            report.missing, report.conflicts, report.phantoms, report.unreadable
        )
    } else if report.cancelled > 0 {
        format!(
            "cancelled: {} jobs were not run; every other job has exactly one result ({failed} failed)",
            report.cancelled
        )
    } else if failed == 0 {
        "complete: every job has exactly one result".to_owned()
    } else {
        format!(
            "complete, but {failed} of {} jobs failed: every job has exactly one result, and the failures' \
             stderr_tail is in the results database",
            report.submitted
        )
    };
    row("verdict", verdict);
    if let Some((a, b)) = report.missing_ranges.first() {
        row("first missing", format!("{a}..={b}"));
    }
    if let Some(i) = report.failed_indices.first() {
        row("first failed", i.to_string());
    }
    for segment in &report.unreadable_segments {
        row("unreadable", segment.clone());
    }
    if report.unreadable > 0 {
        row("", unreadable_advice(report));
    }
}

/// What to do about unreadable segments, in a user's words.
fn unreadable_advice(report: &Report) -> String {
    if report.missing == 0 {
        "kept as evidence: every job is accounted for without it (it may hold extra runs of done jobs)".into()
    } else {
        "the jobs it held count as missing: `tally reconcile --resubmit` (or rerunning `tally run`) runs them \
         again; the segment stays as evidence"
            .into()
    }
}

/// The exit code a report gives: 0 when the sweep is complete and no job
/// failed, 1 when something needs attention.
pub fn exit_code(report: &Report) -> u8 {
    u8::from(!report.is_complete() || report.failed > 0)
}

/// `tally report`.
pub async fn report(args: ReportArgs) -> anyhow::Result<u8> {
    let local = Local::open(&args.data.data, false, LockMode::None, 60_000).await?;
    let id = crate::cli::pick_sweep(
        &*local.store,
        &*local.clock,
        &local.dir.display().to_string(),
        args.sweep,
    )
    .await?;
    let report = reconcile_into_db(&local, &id, Policy::Real, &mut reconciler::NoSink).await?;
    print_report(&report, &local.results_db(), args.json, None);
    Ok(exit_code(&report))
}

/// `tally status`.
pub async fn status(args: DataArgs) -> anyhow::Result<u8> {
    let local = Local::open(&args.data, false, LockMode::None, 60_000).await?;
    let stop = crate::core::never();
    crate::outln!("data        {}", local.dir.display());
    for q in [&local.jobs, &local.results, &local.jobs_dead] {
        match q.stats().await {
            Ok(s) => crate::outln!(
                "queue       {:<18} {} waiting, {} in flight",
                q.name(),
                s.visible,
                s.in_flight
            ),
            Err(e) => crate::outln!("queue       {:<18} {e}", q.name()),
        }
    }
    let segments = local.store.list(crate::core::segment::PREFIX).await?.len();
    crate::outln!("segments    {segments}");
    for id in reconciler::sweep_ids(&*local.store, &*local.clock, &stop).await? {
        let Some(m) = manifest::load(&*local.store, &*local.clock, &stop, &id).await? else {
            continue;
        };
        use crate::core::submitter::SendLog;
        let sent = local.log.sent(&id, 1).unwrap_or(0);
        crate::outln!("sweep       {id}: {} jobs, {sent} sent", m.submitted);
    }
    Ok(0)
}

/// `tally export`.
pub async fn export(args: ExportArgs) -> anyhow::Result<u8> {
    let local = Local::open(&args.data.data, false, LockMode::None, 60_000).await?;
    let db = local.results_db();
    if !db.exists() {
        return Err(UserError::bad_input(format!(
            "{} does not exist yet; run `tally report --data {}` to build it",
            db.display(),
            local.dir.display()
        )));
    }
    if let Some(asked) = &args.sweep {
        let held = crate::results_db::sweeps(&db).with_context(|| format!("cannot read {}", db.display()))?;
        if !held.contains(asked) {
            return Err(UserError::bad_input(format!(
                "{} holds no sweep {asked:?}; it holds: {}",
                db.display(),
                crate::cli::held_list(&held)
            )));
        }
    }
    let rows = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let rows = crate::results_db::export(&db, args.sweep.as_deref(), args.format, &mut w)?;
            w.flush()?;
            rows
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let rows = crate::results_db::export(&db, args.sweep.as_deref(), args.format, &mut w)?;
            w.flush()?;
            rows
        }
    };
    tracing::info!(rows, "exported");
    Ok(0)
}
