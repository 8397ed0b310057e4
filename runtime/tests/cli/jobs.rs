//! What real programs do to `tally run`: long logs, Python's JSON,
//! children that outlive their job.

use std::process::Stdio;

use crate::support::{data_arg, read_pid, run, survivors, tally, KillOnDrop, Scratch};

/// Run a sweep whose one job is `sh -c SCRIPT`, and return the exported
/// rows as JSON text, one per line.
fn run_script(scratch: &Scratch, name: &str, script: &str, extra_toml: &str) -> anyhow::Result<(i32, String)> {
    let sweep = scratch.write(
        "s.toml",
        &format!("name = \"{name}\"\n{extra_toml}\n[experiment]\ncommand = [\"sh\", \"-c\", '''{script}''']\n"),
    );
    let data = scratch.path("data");
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    let code = out.status.code().unwrap_or(-1);
    let rows = run(&["export", "--data", &data_arg(&data), "--format", "jsonl"]);
    Ok((code, String::from_utf8(rows.stdout)?))
}

#[test]
fn metrics_after_a_long_log_are_kept_and_the_cut_is_marked() -> anyhow::Result<()> {
    let scratch = Scratch::new("longlog");
    let script = r#"yes 'epoch done, loss falling' | head -c 200000; echo; echo '{{"loss": 0.25}}'"#;
    let (code, rows) = run_script(&scratch, "longlog", script, "")?;
    assert_eq!(code, 0, "{rows}");
    let row: serde_json::Value = serde_json::from_str(rows.trim())?;
    assert_eq!(row["status"], "ok", "{row}");
    assert_eq!(row["loss"], 0.25, "{row}");
    assert_eq!(row["metrics_json"], r#"{"loss":0.25}"#, "{row}");
    Ok(())
}

#[test]
fn metrics_too_large_for_one_message_record_the_job_failed_with_a_note_and_the_run_goes_on() -> anyhow::Result<()> {
    let scratch = Scratch::new("bigmetrics");
    // One metrics line just under the kept line's 1 MiB: with the result's
    // other fields, the result no longer fits one queue message.
    let script = r#"printf '{{"blob": "'; head -c 1048500 /dev/zero | tr '\0' a; printf '"}}\n'"#;
    let (code, rows) = run_script(&scratch, "bigmetrics", script, "")?;
    let row = only_row(&rows)?;
    assert_eq!(row["status"], "failed", "{}", &rows[..rows.len().min(600)]);
    let note = row.to_string();
    assert!(note.contains("output too large"), "{}", &note[..note.len().min(600)]);
    assert_eq!(code, 1, "one failed job");
    Ok(())
}

#[test]
fn a_long_log_without_metrics_keeps_head_and_tail_with_a_marker() -> anyhow::Result<()> {
    let scratch = Scratch::new("longraw");
    let script = "echo first; yes 'middle of the log' | head -c 200000; echo; echo last";
    let (_, rows) = run_script(&scratch, "longraw", script, "")?;
    let row: serde_json::Value = serde_json::from_str(rows.trim())?;
    let stdout = row["stdout"].as_str().unwrap_or_default();
    assert!(stdout.starts_with("first\n"), "{stdout}");
    assert!(
        stdout.ends_with("\nlast\n"),
        "{}",
        &stdout[stdout.len().saturating_sub(200)..]
    );
    assert!(stdout.contains("bytes of output omitted]"), "the cut is marked");
    assert!(stdout.len() <= tally::experiment::STDOUT_MAX + 100, "{}", stdout.len());
    Ok(())
}

#[test]
fn python_nan_and_infinity_are_metrics_in_the_database_and_the_exports() -> anyhow::Result<()> {
    let scratch = Scratch::new("nonfinite");
    let script = r#"echo '{{"loss": NaN, "acc": Infinity, "low": -Infinity, "steps": 3}}'"#;
    let (code, rows) = run_script(&scratch, "nonfinite", script, "")?;
    assert_eq!(code, 0, "{rows}");
    for field in [
        r#""loss":NaN"#,
        r#""acc":Infinity"#,
        r#""low":-Infinity"#,
        r#""steps":3"#,
    ] {
        assert!(rows.contains(field), "{field} in {rows}");
    }
    let data = scratch.path("data");
    let csv = run(&["export", "--data", &data_arg(&data), "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(csv.stdout.as_slice());
    let header = reader.headers()?.clone();
    let row = reader.records().next().transpose()?.unwrap_or_default();
    let field = |name: &str| {
        let at = header.iter().position(|h| h == name);
        at.and_then(|i| row.get(i)).unwrap_or_default().to_owned()
    };
    assert_eq!(
        (field("loss"), field("acc"), field("low")),
        ("NaN".into(), "Infinity".into(), "-Infinity".into()),
        "{row:?}"
    );
    let db = rusqlite::Connection::open(data.join("results.sqlite"))?;
    let (acc, low, loss): (f64, f64, Option<f64>) = db.query_row("SELECT acc, low, loss FROM results", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    assert_eq!((acc, low, loss), (f64::INFINITY, f64::NEG_INFINITY, None));
    Ok(())
}

/// The one exported row of a single-job sweep.
fn only_row(rows: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(rows.trim()).map_err(|e| anyhow::anyhow!("{e}: {rows}"))
}

/// A shell snippet that writes `$$` (the job's shell, its group leader)
/// and `$!` (the last background child) to files under `dir`.
fn record_pids(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!("echo $$ > {d}/t && mv {d}/t {d}/leader; echo $! > {d}/t && mv {d}/t {d}/child")
}

/// The job's leader and background child pids, written by `record_pids`.
fn recorded_pids(dir: &std::path::Path, rows: &str) -> anyhow::Result<(i32, i32)> {
    let pid = |name: &str| read_pid(&dir.join(name), 2000).ok_or_else(|| anyhow::anyhow!("no {name} pid: {rows}"));
    Ok((pid("leader")?, pid("child")?))
}

#[test]
fn a_timeout_kills_the_whole_process_group() -> anyhow::Result<()> {
    let scratch = Scratch::new("timeoutgroup");
    let script = format!("sleep 971 & {}; exec sleep 972", record_pids(&scratch.0));
    let (_, rows) = run_script(&scratch, "timeoutgroup", &script, "timeout_s = 1")?;
    let (leader, child) = recorded_pids(&scratch.0, &rows)?;
    let _cleanup = KillOnDrop(vec![leader, child]);
    assert_eq!(only_row(&rows)?["status"], "timed_out", "{rows}");
    assert_eq!(
        survivors(&[child], leader, 2000),
        Vec::<i32>::new(),
        "the job's children outlived it"
    );
    Ok(())
}

#[test]
fn a_background_child_holding_stdout_does_not_hold_the_job_open() -> anyhow::Result<()> {
    let scratch = Scratch::new("background");
    let script = format!(r#"sleep 973 & {}; echo '{{{{"acc": 1}}}}'"#, record_pids(&scratch.0));
    let (code, rows) = run_script(&scratch, "background", &script, "timeout_s = 5")?;
    let (leader, child) = recorded_pids(&scratch.0, &rows)?;
    let _cleanup = KillOnDrop(vec![leader, child]);
    let row = only_row(&rows)?;
    assert_eq!(
        (code, &row["status"], &row["acc"]),
        (0, &"ok".into(), &1.into()),
        "{rows}"
    );
    assert_eq!(
        survivors(&[child], leader, 2000),
        Vec::<i32>::new(),
        "the background child outlived its job"
    );
    Ok(())
}

#[test]
fn a_job_killed_by_a_signal_records_the_signal() -> anyhow::Result<()> {
    let scratch = Scratch::new("signalled");
    let (_, rows) = run_script(&scratch, "signalled", "kill -9 $$", "")?;
    let row = only_row(&rows)?;
    assert_eq!(
        (&row["status"], &row["exit_code"]),
        (&"failed".into(), &serde_json::Value::Null)
    );
    assert!(
        row["stderr_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("killed by signal 9"),
        "{rows}"
    );
    Ok(())
}

#[test]
fn jobs_die_with_a_killed_runner_with_all_they_started() -> anyhow::Result<()> {
    let scratch = Scratch::new("orphan");
    // The job's shell, a child in its group, and one that left for a
    // session of its own.
    let d = scratch.0.display();
    let script = format!(
        "sleep 977 & {}; setsid sleep 978 & echo $! > {d}/t && mv {d}/t {d}/escaped; exec sleep 974",
        record_pids(&scratch.0)
    );
    let sweep = scratch.write(
        "s.toml",
        &format!("name = \"orphan\"\n[experiment]\ncommand = [\"sh\", \"-c\", '''{script}''']\n"),
    );
    let data = scratch.path("data");
    let mut runner = tally()
        .args(["run", &sweep.display().to_string(), "--data", &data_arg(&data)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pids = recorded_pids(&scratch.0, "");
    let escaped = read_pid(&scratch.path("escaped"), 10_000);
    runner.kill()?; // SIGKILL: no chance to clean up
    runner.wait()?;
    let (leader, child) = pids?;
    let escaped = escaped.ok_or_else(|| anyhow::anyhow!("the escaped child never started"))?;
    let _cleanup = KillOnDrop(vec![leader, child, escaped]);
    assert_eq!(
        survivors(&[leader, child, escaped], leader, 2000),
        Vec::<i32>::new(),
        "the job or what it started outlived its runner"
    );
    Ok(())
}

#[test]
fn a_stop_kills_the_running_jobs_whole_process_group() -> anyhow::Result<()> {
    let scratch = Scratch::new("stopgroup");
    let script = format!("sleep 975 & {}; exec sleep 976", record_pids(&scratch.0));
    let sweep = scratch.write(
        "s.toml",
        &format!("name = \"stopgroup\"\n[experiment]\ncommand = [\"sh\", \"-c\", '''{script}''']\n"),
    );
    let data = scratch.path("data");
    let mut runner = tally()
        .args(["run", &sweep.display().to_string(), "--data", &data_arg(&data)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pids = recorded_pids(&scratch.0, "");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(runner.id() as i32, libc::SIGINT);
    }
    let status = runner.wait()?;
    let (leader, child) = pids?;
    let _cleanup = KillOnDrop(vec![leader, child]);
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        survivors(&[child], leader, 2000),
        Vec::<i32>::new(),
        "the job outlived the stop"
    );
    Ok(())
}

#[test]
fn failed_jobs_are_counted_in_the_verdict_and_exit_1() -> anyhow::Result<()> {
    let scratch = Scratch::new("failures");
    let sweep = scratch.write(
        "s.toml",
        "name = \"failures\"\nruns = 20\n[experiment]\nbuiltin = \"synthetic\"\nfail_every = 10\n",
    );
    let data = scratch.path("data");
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    let stdout = String::from_utf8(out.stdout)?;
    let verdict = stdout.lines().find(|l| l.starts_with("verdict")).unwrap_or_default();
    assert!(verdict.contains("2 of 20 jobs failed"), "{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report = run(&["report", "--data", &data_arg(&data)]);
    assert_eq!(report.status.code(), Some(1));
    Ok(())
}
