//! Bad input gets one clear sentence and a non-zero exit, never a panic,
//! and nothing is written.

use crate::support::{data_arg, report, run, synthetic_sweep, tally, BoundedOutput, Scratch};

#[test]
fn a_malformed_sweep_file_names_file_and_line_exits_2_and_writes_nothing() {
    let scratch = Scratch::new("malformed");
    let sweep = scratch.write(
        "bad.toml",
        "name = \"x\"\nruns = \"many\"\n[experiment]\nbuiltin = \"synthetic\"\n",
    );
    let data = scratch.path("data");
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
    assert!(stderr.contains("bad.toml:2:"), "names file and line: {stderr}");
    assert!(!data.exists(), "nothing written");
}

#[test]
fn a_missing_sweep_file_and_bad_flags_exit_2() {
    let out = run(&["run", "/nonexistent/sweep.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = run(&["run", "x.toml", "--workers", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["report", "--data", "/nonexistent/tally-data"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no tally data"));
}

#[test]
fn parameter_values_reach_the_program_verbatim_and_never_a_shell() -> anyhow::Result<()> {
    let scratch = Scratch::new("inject");
    let marker = scratch.path("pwned");
    let sweep = scratch.write(
        "inject.toml",
        &format!(
            "name = \"inject\"\n[experiment]\ncommand = [\"echo\", \"{{x}}\"]\n[grid]\nx = [\"; touch {m}\", \"$(touch {m})\", \"`touch {m}`\"]\n",
            m = marker.display()
        ),
    );
    let data = scratch.path("data");
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!marker.exists(), "a parameter value ran as a command");
    let csv = run(&["export", "--data", &data_arg(&data), "--format", "jsonl"]);
    let text = String::from_utf8(csv.stdout)?;
    assert!(text.contains("$(touch"), "the value was passed verbatim: {text}");
    Ok(())
}

#[test]
fn a_foreign_message_in_the_work_queue_is_quarantined_and_the_run_completes() -> anyhow::Result<()> {
    use tally::adapters::local::{SqliteQueues, SystemClock};
    use tally::core::Queue;
    let scratch = Scratch::new("foreign");
    let sweep = scratch.write("s.toml", &synthetic_sweep("foreign", 50, 0));
    let data = scratch.path("data");
    // Create the data directory with a first run, then plant garbage.
    assert!(run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)])
        .status
        .success());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let queues = SqliteQueues::open(
            &data.join("queue-jobs.sqlite"),
            std::sync::Arc::new(SystemClock::default()),
        )?;
        let jobs = queues.queue("tally-jobs", Default::default());
        // Garbage, a job message without its fields, and job messages whose
        // sweep could not be a sweep's id (no manifest can be looked up
        // for them: on a local store they would not even be valid keys).
        let foreign = [
            "this is not a job",
            "{\"tally\":1}",
            "{\"tally\":1,\"sweep\":\"\",\"index\":0,\"attempt\":1}",
            "{\"tally\":1,\"sweep\":\"../x\",\"index\":0,\"attempt\":1}",
            "{\"tally\":1,\"sweep\":\"a//b\",\"index\":0,\"attempt\":1}",
        ];
        jobs.send_batch(&foreign.map(String::from)).await?;
        anyhow::Ok(())
    })?;
    let out = tally()
        .args(["run", &sweep.display().to_string(), "--data", &data_arg(&data)])
        .bounded_output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&data)?;
    assert_eq!(r["quarantined"], 5, "{r}");
    assert_eq!(r["done"], 50, "{r}");
    let held = std::fs::read_dir(data.join("store/quarantine/tally-jobs"))?.count();
    assert_eq!(held, 5, "all kept, not dropped");
    Ok(())
}

#[test]
fn a_program_that_does_not_exist_is_refused_before_anything_is_written() {
    let scratch = Scratch::new("noprogram");
    let sweep = scratch.write(
        "s.toml",
        "name = \"noprogram\"\n[experiment]\ncommand = [\"tally-no-such-program\", \"{x}\"]\n[grid]\nx = [1, 2]\n",
    );
    let data = scratch.path("data");
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
    assert!(stderr.contains("\"tally-no-such-program\" is not on PATH"), "{stderr}");
    assert!(!data.exists(), "nothing written");
    let sweep = scratch.write(
        "p.toml",
        "name = \"noprogram\"\n[experiment]\ncommand = [\"./missing.sh\"]\n",
    );
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.sh"));
    assert!(!data.exists(), "nothing written");
}

#[test]
fn a_workdir_that_does_not_exist_is_refused_before_anything_is_written() {
    let scratch = Scratch::new("noworkdir");
    let sweep = scratch.write(
        "s.toml",
        "name = \"noworkdir\"\n[experiment]\ncommand = [\"true\"]\nworkdir = \"gone\"\n",
    );
    let data = scratch.path("data");
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gone is not a directory"), "{stderr}");
    assert!(!data.exists(), "nothing written");
}
