//! SIGKILL a running `tally run` at random moments; the rerun must finish
//! with every job done exactly once or reported.

use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::support::{data_arg, output_within, report, synthetic_sweep, tally, BoundedOutput, Scratch};

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
    let out = tally().args(&args).bounded_output()?;
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
    assert!(tally().args(&args).bounded_output()?.status.success());
    let first = report(&data)?;
    assert!(tally().args(&args).bounded_output()?.status.success());
    let second = report(&data)?;
    assert_eq!(first["segments"], second["segments"], "nothing new was stored");
    assert_eq!(second["done"], 300);
    assert_eq!(second["duplicates"], 0);
    Ok(())
}

#[test]
fn a_job_that_kills_tally_run_is_given_up_after_max_attempts() -> anyhow::Result<()> {
    let scratch = Scratch::new("killer");
    // The shell's parent is the runner: the job kills it. It waits a second
    // first, so the submitter has recorded the job as sent: a runner killed
    // before that resends it on the next run, and the copy has receive
    // counts of its own (a duplicate, detected, but more kills).
    let sweep = scratch.write(
        "s.toml",
        "name = \"killer\"\nmax_attempts = 2\n[experiment]\ncommand = [\"sh\", \"-c\", \"sleep 1; kill -9 $PPID\"]\n",
    );
    let data = scratch.path("data");
    let args = ["run", &sweep.display().to_string(), "--data", &data_arg(&data)];
    let mut codes = Vec::new();
    for _ in 0..6 {
        // A run the job killed has no exit code (it died of SIGKILL).
        let code = tally()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .code();
        codes.push(code);
        if code.is_some() {
            break;
        }
    }
    assert_eq!(
        codes.last(),
        Some(&Some(1)),
        "the reruns ended, with a failed job: {codes:?}"
    );
    assert!(codes.len() <= 4, "given up after max_attempts receives: {codes:?}");
    let r = report(&data)?;
    assert_eq!((r["failed"].as_u64(), r["done"].as_u64()), (Some(1), Some(0)), "{r}");
    let rows = tally()
        .args(["export", "--data", &data_arg(&data), "--format", "jsonl"])
        .bounded_output()?;
    let row: serde_json::Value = serde_json::from_slice(&rows.stdout)?;
    assert_eq!(row["status"], "gave_up", "{row}");
    Ok(())
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `size` at `dir`, or say why not (not root, no
    /// mount in this container).
    fn mount(dir: &std::path::Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// `cp -a FROM TO`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    anyhow::ensure!(status.success(), "cannot copy {}", from.display());
    Ok(())
}

#[test]
fn a_full_disk_stops_tally_run_with_one_sentence_and_a_rerun_with_space_completes() -> anyhow::Result<()> {
    let scratch = Scratch::new("diskfull");
    let mnt = scratch.path("mnt");
    let disk = match Tmpfs::mount(&mnt, "1m") {
        Ok(disk) => disk,
        Err(why) => {
            println!("skipped: cannot mount a small tmpfs to fill ({why})");
            return Ok(());
        }
    };
    let sweep = scratch.write("s.toml", &synthetic_sweep("diskfull", 30_000, 0));
    let data = mnt.join("data");
    // Past the up-front space check: this is about a disk that fills
    // while the run writes.
    let args = [
        "run",
        &sweep.display().to_string(),
        "--data",
        &data_arg(&data),
        "--ignore-disk-space",
    ];
    let mut run = tally();
    run.args(args);
    let (code, stderr) = output_within(run, 30_000)?;
    assert_eq!(code, Some(1), "exits within 30 s: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
    assert!(
        stderr.contains(&format!(
            "the disk holding the data directory {} is full",
            data.display()
        )),
        "{stderr}"
    );
    // Make space: the same directory, moved to a bigger disk at the same path.
    let saved = scratch.path("saved");
    copy_dir(&data, &saved)?;
    drop(disk);
    let _disk = Tmpfs::mount(&mnt, "256m").map_err(|why| anyhow::anyhow!("cannot remount: {why}"))?;
    copy_dir(&saved, &data)?;
    let out = tally().args(args).bounded_output()?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&data)?;
    assert_eq!(
        (r["done"].as_u64(), r["missing"].as_u64()),
        (Some(30_000), Some(0)),
        "{r}"
    );
    Ok(())
}
