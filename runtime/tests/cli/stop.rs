//! Ctrl-C and SIGTERM stop `tally run` and `tally submit` within a second
//! in every phase, exit 130, and a rerun resumes.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{data_arg, report, synthetic_sweep, tally, wait_within, BoundedOutput, Scratch};

/// Send SIGINT to `child` after `after_ms`, then wait for it, polling, at
/// most `bound_ms`; kills it if it is still running then. Returns its exit
/// code (`None` if it had to be killed) and its stderr.
fn interrupt(mut child: Child, after_ms: u64, bound_ms: u64) -> anyhow::Result<(Option<i32>, String)> {
    std::thread::sleep(Duration::from_millis(after_ms));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let code = wait_within(&mut child, bound_ms)?.and_then(|status| status.code());
    if code.is_none() {
        child.kill()?;
    }
    let out = child.wait_with_output()?;
    Ok((code, String::from_utf8_lossy(&out.stderr).into_owned()))
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
    let scratch = Scratch::new("stopresume");
    let sweep = scratch.write("s.toml", &synthetic_sweep("stopresume", 20_000, 0));
    let data = scratch.path("data");
    let args = ["run", &sweep.display().to_string(), "--data", &data_arg(&data)];
    let (code, stderr) = interrupt(spawn(&args)?, 500, 3000)?;
    assert_eq!(code, Some(130), "{stderr}");
    let out = tally().args(args).bounded_output()?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&data)?;
    assert_eq!(
        (r["done"].as_u64(), r["missing"].as_u64()),
        (Some(20_000), Some(0)),
        "{r}"
    );
    Ok(())
}
