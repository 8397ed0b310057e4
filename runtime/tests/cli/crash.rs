//! SIGKILL a running `tally run` at random moments; the rerun must finish
//! with every job done exactly once or reported.

use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::support::{data_arg, report, synthetic_sweep, tally, Scratch};

/// Start `tally run` four times, SIGKILL each at a random moment, then
/// run it to completion; returns the final JSON report. Resubmission is
/// off unless `extra` sets it: the protocol itself must lose nothing.
fn kill_then_finish(
    name: &str,
    extra: &[&str],
    kill_window_ms: std::ops::Range<u64>,
) -> anyhow::Result<serde_json::Value> {
    #[allow(clippy::disallowed_methods)] // a test picks and prints its own seed
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    println!("{name}: seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scratch = Scratch::new(name);
    // 4,000 jobs of 2 ms on 4 workers take about two seconds: longer than
    // the latest kill, so the first run at least is always killed.
    let sweep = scratch.write("kill.toml", &synthetic_sweep(name, 4000, 2));
    let data = scratch.path("data");
    let mut args: Vec<String> = [
        "run",
        &sweep.display().to_string(),
        "--data",
        &data_arg(&data),
        "--workers",
        "4",
    ]
    .map(String::from)
    .to_vec();
    if !extra.contains(&"--resubmit-rounds") {
        args.extend(["--resubmit-rounds", "0"].map(String::from));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = tally()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(rng.random_range(kill_window_ms.clone())));
        if child.try_wait()?.is_none() {
            child.kill()?; // SIGKILL
            kills += 1;
        }
        child.wait()?;
    }
    anyhow::ensure!(kills > 0, "{name}: no run was killed, so this run proves nothing");
    let out = tally().args(&args).output()?;
    let r = report(&data)?;
    println!(
        "{name}: killed {kills} runs; final exit {:?}; report {r}",
        out.status.code()
    );
    Ok(r)
}

#[test]
fn sigkill_at_random_moments_then_rerun_finishes_with_nothing_missing() -> anyhow::Result<()> {
    let r = kill_then_finish("sigkill", &[], 150..1500)?;
    assert_eq!(r["submitted"], 4000, "{r}");
    assert_eq!(r["done"], r["submitted"], "{r}");
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["conflicts"], 0, "{r}");
    assert_eq!(r["phantoms"], 0, "{r}");
    assert_eq!(r["rounds"], 0, "nothing needed resubmitting: {r}");
    Ok(())
}

/// The same test must fail for the original flawed protocol, or it proves
/// nothing.
#[test]
fn the_sigkill_test_catches_the_naive_protocol() -> anyhow::Result<()> {
    let r = kill_then_finish("sigkill-naive", &["--policy", "naive"], 200..700)?;
    assert!(
        r["missing"].as_u64().unwrap_or(0) > 0,
        "naive deletes before delivering, so kills lose jobs: {r}"
    );
    Ok(())
}

/// What the naive protocol loses, the finish-and-resubmit driver finds
/// missing once the queues drain and sends again.
#[test]
fn resubmission_recovers_what_the_naive_protocol_lost_to_kills() -> anyhow::Result<()> {
    let r = kill_then_finish(
        "sigkill-naive-resubmit",
        &["--policy", "naive", "--resubmit-rounds", "3"],
        200..700,
    )?;
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["done"], r["submitted"], "{r}");
    assert!(
        r["rounds"].as_u64().unwrap_or(0) >= 1,
        "something was lost and resent: {r}"
    );
    Ok(())
}

#[test]
fn a_rerun_of_a_finished_sweep_redoes_nothing() -> anyhow::Result<()> {
    let scratch = Scratch::new("rerun");
    let sweep = scratch.write("s.toml", &synthetic_sweep("rerun", 300, 0));
    let data = scratch.path("data");
    let args = ["run", &sweep.display().to_string(), "--data", &data_arg(&data)].map(String::from);
    assert!(tally().args(&args).output()?.status.success());
    let first = report(&data)?;
    assert!(tally().args(&args).output()?.status.success());
    let second = report(&data)?;
    assert_eq!(first["segments"], second["segments"], "nothing new was stored");
    assert_eq!(second["done"], 300);
    assert_eq!(second["duplicates"], 0);
    Ok(())
}
