//! What tally says when asked to say more, and when something is wrong
//! that the user must fix.

use crate::support::{data_arg, run, synthetic_sweep, tally, BoundedOutput, Scratch};

#[test]
fn verbose_flags_log_to_stderr_and_rust_log_overrides_them() -> anyhow::Result<()> {
    let scratch = Scratch::new("verbose");
    let sweep = scratch.write(
        "s.toml",
        "name = \"verbose\"\nruns = 2\n[experiment]\ncommand = [\"true\"]\n",
    );
    // A fresh data directory each time, so every run runs its jobs.
    let with = |flags: &[&str], rust_log: Option<&str>| -> anyhow::Result<String> {
        let data = scratch.path(&format!("data{}{}", flags.concat(), rust_log.unwrap_or_default()));
        let mut cmd = tally();
        cmd.args(flags)
            .args(["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let out = cmd.bounded_output()?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stderr)?)
    };
    let info = with(&["-v"], None)?;
    assert!(info.contains("INFO") && info.contains("running the sweep"), "{info}");
    assert!(!info.contains("\u{1b}["), "no colour codes in a pipe: {info}");
    let debug = with(&["-vv"], None)?;
    assert!(debug.contains("DEBUG") && debug.contains("job starting"), "{debug}");
    let quiet = with(&["-vv"], Some("error"))?;
    assert!(!quiet.contains("running the sweep"), "RUST_LOG overrides -vv: {quiet}");
    let env = with(&[], Some("tally=info"))?;
    assert!(env.contains("running the sweep"), "{env}");
    Ok(())
}

#[test]
fn a_deleted_work_queue_is_named_with_what_to_do() -> anyhow::Result<()> {
    let scratch = Scratch::new("noqueue");
    let sweep = scratch.write("s.toml", &synthetic_sweep("noqueue", 20, 0));
    let data = scratch.path("data");
    assert!(run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)])
        .status
        .success());
    std::fs::remove_file(data.join("queue-jobs.sqlite"))?;
    for command in ["status", "report"] {
        let out = run(&[command, "--data", &data_arg(&data)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("its work queue") && stderr.contains("queue-jobs.sqlite is missing"),
            "{stderr}"
        );
        assert!(stderr.contains("rerun `tally run"), "{stderr}");
    }
    let out = run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)]);
    assert!(
        out.status.success(),
        "a rerun recreates it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn the_local_backend_speaks_of_its_own_queues_not_of_aws() -> anyhow::Result<()> {
    use tally::adapters::local::{SqliteQueues, SystemClock};
    let scratch = Scratch::new("localwords");
    let sweep = scratch.write("s.toml", &synthetic_sweep("localwords", 5, 0));
    let data = scratch.path("data");
    assert!(run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)])
        .status
        .success());
    let queues = SqliteQueues::open(
        &data.join("queue-jobs.sqlite"),
        std::sync::Arc::new(SystemClock::default()),
    )?;
    queues.delete_queue("tally-jobs")?;
    let out = run(&["status", "--data", &data_arg(&data)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tally-jobs") && text.contains("does not exist"), "{text}");
    assert!(!text.contains("AWS"), "{text}");
    Ok(())
}

#[test]
fn exporting_a_sweep_that_is_not_there_exits_2_naming_the_sweeps_held() -> anyhow::Result<()> {
    let scratch = Scratch::new("exportnope");
    let sweep = scratch.write("s.toml", &synthetic_sweep("exportnope", 5, 0));
    let data = scratch.path("data");
    assert!(run(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)])
        .status
        .success());
    let out = run(&[
        "export",
        "--data",
        &data_arg(&data),
        "--format",
        "csv",
        "--sweep",
        "nope",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no header for nothing");
    assert!(
        stderr.contains("no sweep \"nope\"") && stderr.contains("exportnope-"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_sweep_asked_of_a_data_directory_holding_none_is_one_sentence_saying_so() -> anyhow::Result<()> {
    let scratch = Scratch::new("holdsnone");
    let data = data_arg(&scratch.path("data"));
    for sweep in ["nope", "../x"] {
        let out = run(&["cancel", "--sweep", sweep, "--backend", "local", "--data", &data]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
        assert!(
            stderr.contains(&format!("no sweep {sweep:?}")) && stderr.ends_with("it holds: none\n"),
            "{stderr}"
        );
    }
    Ok(())
}
