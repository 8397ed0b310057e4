//! Damaged state in the data directory: what the user is told, and how the
//! sweep recovers.

use std::process::Output;

use crate::support::{data_arg, report, run, synthetic_sweep, Scratch};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_unreadable_segment_is_named_its_jobs_rerun_and_then_the_sweep_is_complete() -> anyhow::Result<()> {
    let scratch = Scratch::new("damaged-segment");
    let sweep = scratch.write("s.toml", &synthetic_sweep("damaged", 200, 0));
    let data = scratch.path("data");
    let run_args = ["run", &sweep.display().to_string(), "--data", &data_arg(&data)];
    assert!(run(&run_args).status.success());
    let segments: Vec<_> = std::fs::read_dir(data.join("store").join("segments"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let damaged = segments.first().expect("the run stored a segment");
    std::fs::write(damaged, b"not a segment")?;
    let name = damaged.file_name().expect("a file").to_string_lossy().into_owned();

    let out = run(&["report", "--data", &data_arg(&data)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("INCOMPLETE"), "{text}");
    assert!(text.contains(&name), "the segment is named: {text}");
    assert!(text.contains("--resubmit"), "the report says what to do: {text}");
    let lost = report(&data)?["missing"].as_u64().unwrap_or(0);
    assert!(lost > 0, "the damaged segment's keys are missing");

    let out = run(&run_args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("complete: every job has exactly one result"), "{text}");
    assert!(text.contains(&name), "still named, as evidence: {text}");
    assert!(text.contains("evidence"), "{text}");
    let r = report(&data)?;
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["unreadable"], 1, "{r}");
    assert_eq!(r["rounds"], 1, "the segment's jobs were resent: {r}");
    assert_eq!(r["resubmitted"], lost, "exactly the missing jobs were resent: {r}");
    Ok(())
}

#[test]
fn a_sweep_too_large_for_the_disk_is_refused_before_anything_is_written() -> anyhow::Result<()> {
    let scratch = Scratch::new("too-large");
    // 1,000^4 = 10^12 jobs: hundreds of terabytes of results.
    let values: Vec<String> = (0..1000).map(|v| v.to_string()).collect();
    let list = values.join(", ");
    let text = format!(
        "name = \"huge\"\n[experiment]\nbuiltin = \"synthetic\"\n[grid]\na = [{list}]\nb = [{list}]\nc = [{list}]\nd = [{list}]\n"
    );
    let sweep = scratch.write("huge.toml", &text);
    let data = scratch.path("data");
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--ignore-disk-space"),
        "the override is named: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
    assert!(!data.exists(), "nothing was written");
    Ok(())
}
