//! `tally reconcile --resubmit` and `--watch`: the finish-and-resubmit
//! driver behind the separate role commands on the embedded backend.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{data_arg, report, run, synthetic_sweep, tally, BoundedOutput, Scratch};

/// A role process, stopped with SIGTERM (then SIGKILL) when dropped.
struct Role(Child);

impl Role {
    fn start(args: &[&str]) -> anyhow::Result<Self> {
        let child = tally()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        // Up to five seconds for a clean stop.
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn resubmit_refuses_while_jobs_wait_and_says_why() -> anyhow::Result<()> {
    let scratch = Scratch::new("resubmit-busy");
    let sweep = scratch.write("s.toml", &synthetic_sweep("busy", 50, 0));
    let data = data_arg(&scratch.path("data"));
    let local = ["--backend", "local", "--data", &data];
    let submit = run(&[&["submit", &sweep.display().to_string()][..], &local].concat());
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    let out = run(&[&["reconcile", "--resubmit"][..], &local].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not resubmitting"), "{stderr}");
    assert!(stderr.contains("50 waiting"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "50 jobs are missing: {stderr}");
    let r = report(&scratch.path("data"))?;
    assert_eq!(r["rounds"], 0, "nothing was resent: {r}");
    Ok(())
}

#[test]
fn watch_runs_the_driver_until_separate_roles_finish_the_sweep() -> anyhow::Result<()> {
    let scratch = Scratch::new("watch");
    let sweep = scratch.write("s.toml", &synthetic_sweep("watch", 300, 2));
    let data = data_arg(&scratch.path("data"));
    let local = ["--backend", "local", "--data", &data];
    let submit = run(&[&["submit", &sweep.display().to_string()][..], &local].concat());
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    let _worker = Role::start(&[&["worker", "--concurrency", "4", "--wait-s", "1"][..], &local].concat())?;
    let _aggregator = Role::start(&[&["aggregate", "--wait-s", "1", "--segment-age-ms", "200"][..], &local].concat())?;
    let out = tally()
        .args([&["reconcile", "--watch", "--quiet-s", "1", "--json"][..], &local].concat())
        .stdin(Stdio::null())
        .bounded_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(r["done"], 300, "{r}");
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["rounds"], 0, "nothing was lost, so nothing was resent: {r}");
    Ok(())
}

#[test]
fn ctrl_c_stops_watch_at_once_with_exit_130() -> anyhow::Result<()> {
    let scratch = Scratch::new("watch-stop");
    let sweep = scratch.write("s.toml", &synthetic_sweep("watch-stop", 50, 0));
    let data = data_arg(&scratch.path("data"));
    let local = ["--backend", "local", "--data", &data];
    let submit = run(&[&["submit", &sweep.display().to_string()][..], &local].concat());
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    // No workers: the sweep can never finish, so only the stop ends it.
    let mut watch = Role::start(&[&["reconcile", "--watch", "--quiet-s", "1"][..], &local].concat())?;
    std::thread::sleep(Duration::from_millis(1500));
    assert!(watch.0.try_wait()?.is_none(), "still watching");
    Command::new("kill")
        .args(["-INT", &watch.0.id().to_string()])
        .status()?;
    // It takes well under a second; the test allows five, polled in steps
    // of 50 ms, so a busy machine does not make it flaky.
    for _ in 0..100 {
        if let Some(status) = watch.0.try_wait()? {
            assert_eq!(status.code(), Some(130));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("tally reconcile --watch did not stop within five seconds of SIGINT")
}

#[test]
fn an_edited_sweep_names_the_earlier_version_and_cancel_drops_its_jobs_unrun() -> anyhow::Result<()> {
    let scratch = Scratch::new("cancel");
    let data = scratch.path("data");
    let local = ["--backend", "local", "--data", &data_arg(&data)];
    let old = scratch.write("s.toml", &synthetic_sweep("edited", 60, 0));
    let submit = run(&[&["submit", &old.display().to_string()][..], &local].concat());
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    let status = String::from_utf8_lossy(&run(&["status", "--data", &data_arg(&data)]).stdout).into_owned();
    let old_id = status
        .split_whitespace()
        .find(|w| w.starts_with("edited-"))
        .map(|w| w.trim_end_matches(':').to_owned())
        .ok_or_else(|| anyhow::anyhow!("status names no sweep: {status}"))?;

    // The same file, edited: a new sweep, and tally run says so.
    let new = scratch.write("s.toml", &synthetic_sweep("edited", 40, 0));
    let cancel = run(&[&["cancel", "--sweep", &old_id][..], &local].concat());
    assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));
    let out = run(&["run", &new.display().to_string(), "--data", &data_arg(&data)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("tally cancel"),
        "a cancelled version is not brought up again: {stderr}"
    );

    let out = run(&["report", "--json", "--sweep", &old_id, "--data", &data_arg(&data)]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(r["cancelled"], 60, "the old version's jobs were dropped unrun: {r}");
    assert_eq!(r["done"], 0, "{r}");
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(out.status.code(), Some(0), "{r}");
    Ok(())
}

#[test]
fn running_an_edited_sweep_file_names_the_earlier_version_and_how_to_cancel_it() -> anyhow::Result<()> {
    let scratch = Scratch::new("edited");
    let data = scratch.path("data");
    let file = scratch.write("s.toml", &synthetic_sweep("again", 20, 0));
    assert!(run(&["run", &file.display().to_string(), "--data", &data_arg(&data)])
        .status
        .success());
    let file = scratch.write("s.toml", &synthetic_sweep("again", 30, 0));
    let out = run(&["run", &file.display().to_string(), "--data", &data_arg(&data)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the sweep file changed"), "{stderr}");
    assert!(stderr.contains("tally cancel --sweep again-"), "{stderr}");
    Ok(())
}
