//! `tally reconcile --resubmit` and `--watch`: the finish-and-resubmit
//! driver behind the separate role commands on the embedded backend.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{data_arg, report, run, synthetic_sweep, tally, Scratch};

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
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(r["done"], 300, "{r}");
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["rounds"], 0, "nothing was lost, so nothing was resent: {r}");
    Ok(())
}
