//! Ctrl-C and SIGTERM stop `tally run` and `tally submit` within a second
//! in every phase, exit 130, and a rerun resumes; SIGTERM stops an idle
//! `tally worker` and `tally aggregate` within a second, mid long poll.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{data_arg, report, synthetic_sweep, tally, wait_within, BoundedOutput, Scratch};

/// Send SIGINT to `child` after `after_ms`, then wait for it, polling, at
/// most `bound_ms`; kills it if it is still running then. Returns its exit
/// code (`None` if it had to be killed) and its stderr.
fn interrupt(mut child: Child, after_ms: u64, bound_ms: u64) -> anyhow::Result<(Option<i32>, String)> {
    std::thread::sleep(Duration::from_millis(after_ms));
    let code = signal_then_wait(&mut child, libc::SIGINT, bound_ms)?;
    let out = child.wait_with_output()?;
    Ok((code, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Send `signal` to `child`, wait for it at most `bound_ms`, polling, and
/// kill it if it is still running then. Its exit code: `None` if it had to
/// be killed or died of a signal.
fn signal_then_wait(child: &mut Child, signal: i32, bound_ms: u64) -> anyhow::Result<Option<i32>> {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let code = wait_within(child, bound_ms)?.and_then(|status| status.code());
    if code.is_none() {
        child.kill()?;
    }
    Ok(code)
}

fn spawn(args: &[&str]) -> anyhow::Result<Child> {
    Ok(tally()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

#[test]
fn sigint_while_submitting_a_huge_sweep_stops_tally_run_at_once() -> anyhow::Result<()> {
    let scratch = Scratch::new("stopsubmit");
    let sweep = scratch.write("s.toml", &synthetic_sweep("stopsubmit", 10_000_000, 0));
    let data = scratch.path("data");
    let child = spawn(&["run", &sweep.display().to_string(), "--data", &data_arg(&data)])?;
    let (code, stderr) = interrupt(child, 700, 3000)?;
    assert_eq!(code, Some(130), "exit 130 within 3 s of SIGINT: {stderr}");
    assert!(stderr.contains("rerun the same command to resume"), "{stderr}");
    Ok(())
}

#[test]
fn sigint_stops_tally_submit_at_once() -> anyhow::Result<()> {
    let scratch = Scratch::new("stopsubmit2");
    let sweep = scratch.write("s.toml", &synthetic_sweep("stopsubmit2", 2_000_000, 0));
    let data = scratch.path("data");
    let args = [
        "submit",
        &sweep.display().to_string(),
        "--backend",
        "local",
        "--data",
        &data_arg(&data),
    ];
    let (code, stderr) = interrupt(spawn(&args)?, 700, 3000)?;
    assert_eq!(code, Some(130), "exit 130 within 3 s of SIGINT: {stderr}");
    assert!(stderr.contains("rerun the same command to resume"), "{stderr}");
    Ok(())
}

#[test]
fn a_run_interrupted_while_submitting_resumes_and_completes() -> anyhow::Result<()> {
    const JOBS: u64 = 150_000;
    let scratch = Scratch::new("stopresume");
    // Large enough that the in-process run (some 50,000 jobs/s) is still
    // going when the signal comes half a second in.
    let sweep = scratch.write("s.toml", &synthetic_sweep("stopresume", JOBS, 0));
    let data = scratch.path("data");
    let args = ["run", &sweep.display().to_string(), "--data", &data_arg(&data)];
    let (code, stderr) = interrupt(spawn(&args)?, 500, 3000)?;
    assert_eq!(code, Some(130), "{stderr}");
    let out = tally().args(args).bounded_output()?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&data)?;
    assert_eq!(
        (r["done"].as_u64(), r["missing"].as_u64()),
        (Some(JOBS), Some(0)),
        "{r}"
    );
    Ok(())
}

/// Start a long-running role on an empty local data directory with the
/// longest long poll SQS allows (20 s), wait until it `says` it is running
/// (its signal handlers are then in place), SIGTERM it, and return its exit
/// code if it ended within `bound_ms` of the signal.
fn stop_idle_role(role: &str, says: &str) -> anyhow::Result<Option<i32>> {
    let scratch = Scratch::new(&format!("idle-{role}"));
    let data = scratch.path("data");
    let mut child = spawn(&[role, "--backend", "local", "--data", &data_arg(&data), "--wait-s", "20"])?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    #[allow(clippy::disallowed_methods)] // a test's helper thread, never the simulator
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(30));
    assert!(
        started.as_deref().is_ok_and(|l| l.starts_with(says)),
        "{role} did not start: {started:?}"
    );
    // Well inside the first 20 s poll.
    std::thread::sleep(Duration::from_millis(500));
    let code = signal_then_wait(&mut child, libc::SIGTERM, 1_500)?;
    child.wait()?;
    Ok(code)
}

#[test]
fn sigterm_stops_an_idle_worker_mid_long_poll_within_a_second() -> anyhow::Result<()> {
    assert_eq!(
        stop_idle_role("worker", "tally: worker ")?,
        Some(0),
        "exit 0 within 1.5 s of SIGTERM"
    );
    Ok(())
}

#[test]
fn sigterm_stops_an_idle_aggregator_mid_long_poll_within_a_second() -> anyhow::Result<()> {
    assert_eq!(
        stop_idle_role("aggregate", "tally: aggregator ")?,
        Some(0),
        "exit 0 within 1.5 s of SIGTERM"
    );
    Ok(())
}
