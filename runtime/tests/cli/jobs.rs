//! What real programs do to `tally run`: long logs, Python's JSON,
//! children that outlive their job.

use crate::support::{data_arg, run, Scratch};

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
