//! The pipeline as separate OS processes of the `tally` binary against
//! moto: submit, three workers, one aggregator; a worker and then the
//! aggregator are killed (SIGKILL) mid-run and restarted; the work queue is
//! deleted under them; `tally reconcile --resubmit` runs until the report
//! is clean. Every job must end with a result: done == submitted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tally::adapters::aws::{SqsQueue, SqsQueueConfig};
use tally::core::Queue;

use crate::support;

const JOBS: u64 = 200;

struct Pipeline {
    bin: PathBuf,
    dir: PathBuf,
    endpoint: String,
}

impl Pipeline {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .args(["--backend", "aws", "--region", "us-east-1", "--bucket", "e2e"])
            .args(["--queue-prefix", "e2e", "--visibility-s", "3"])
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("cannot run tally {args:?}"))?;
        Ok(out)
    }

    fn spawn(&self, args: &[&str], log: &str) -> anyhow::Result<Child> {
        let stderr = std::fs::File::create(self.dir.join(log))?;
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start tally {args:?}"))?;
        Ok(child)
    }

    fn worker(&self, n: usize) -> anyhow::Result<Child> {
        self.spawn(
            &["worker", "--concurrency", "2", "--wait-s", "1"],
            &format!("worker-{n}.log"),
        )
    }

    fn aggregator(&self, n: usize) -> anyhow::Result<Child> {
        self.spawn(
            &["aggregate", "--segment-age-ms", "500", "--wait-s", "1"],
            &format!("aggregator-{n}.log"),
        )
    }
}

fn sweep(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("sweep.toml");
    std::fs::write(
        &path,
        "name = \"e2e\"\nruns = 50\nmax_attempts = 20\n\n[experiment]\nbuiltin = \"synthetic\"\nsleep_ms = 150\n\n[grid]\nx = [1, 2, 3, 4]\n",
    )?;
    Ok(path)
}

/// Ask each process to stop (SIGTERM) and wait for a clean exit.
fn stop_all(children: &mut [Child]) -> anyhow::Result<()> {
    for child in children.iter() {
        // `kill` sends SIGTERM; its argument is a number, not user input.
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
    }
    for child in children.iter_mut() {
        let status = child.wait()?;
        if !status.success() {
            bail!("a role exited with {status} after SIGTERM");
        }
    }
    Ok(())
}

fn report(p: &Pipeline) -> anyhow::Result<(i32, serde_json::Value)> {
    let out = p.run(&["reconcile", "--json"])?;
    let json = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reconcile printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((out.status.code().unwrap_or(-1), json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_of_separate_processes_survives_kills_and_a_deleted_queue() -> anyhow::Result<()> {
    let Some(endpoint) = support::moto_endpoint("pipeline_of_separate_processes_survives_kills_and_a_deleted_queue")?
    else {
        return Ok(());
    };
    let _one = support::MOTO.lock().await;
    support::reset(&endpoint)?;
    let clients = support::clients(&endpoint).await;
    clients.s3.create_bucket().bucket("e2e").send().await?;
    let p = Pipeline {
        bin: support::tally_binary()?,
        dir: support::scratch("pipeline")?,
        endpoint,
    };
    let sweep = sweep(&p.dir)?;
    let init = p.run(&["init"])?;
    assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
    let submit = p.run(&["submit", sweep.to_str().context("a UTF-8 path")?])?;
    assert!(
        submit.status.success(),
        "submit: {}",
        String::from_utf8_lossy(&submit.stderr)
    );

    let mut workers = vec![p.worker(0)?, p.worker(1)?, p.worker(2)?];
    let mut aggregator = p.aggregator(0)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    workers[0].kill()?;
    workers[0].wait()?;
    workers[0] = p.worker(3)?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    aggregator.kill()?;
    aggregator.wait()?;
    let aggregator = p.aggregator(1)?;

    // An operator deletes the work queue while jobs are still in it.
    let jobs = SqsQueue::new(clients.sqs.clone(), "e2e-jobs", SqsQueueConfig::default(), None);
    let queued = jobs.stats().await?.visible;
    jobs.delete_queue().await?;

    let mut rounds = 0;
    loop {
        let out = p.run(&["reconcile", "--resubmit"])?;
        if out.status.success() {
            break;
        }
        if out.status.code() != Some(1) {
            bail!("reconcile failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        rounds += 1;
        // About four minutes of rounds two seconds apart.
        if rounds > 120 {
            bail!(
                "not complete after {rounds} reconcile rounds: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut roles = workers;
    roles.push(aggregator);
    stop_all(&mut roles)?;

    let (code, report) = report(&p)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    assert_eq!(code, 0);
    assert_eq!(report["submitted"], JOBS);
    assert_eq!(report["done"], JOBS, "every job has a result");
    assert_eq!(report["missing"], 0);
    assert_eq!(report["conflicts"], 0);
    assert_eq!(report["phantoms"], 0);
    if queued > 0 {
        // Jobs were lost with the queue: they must have been resubmitted.
        assert!(
            report["resubmitted"].as_u64().unwrap_or(0) > 0,
            "{queued} queued jobs were deleted"
        );
    }
    let _ = std::fs::remove_dir_all(&p.dir);
    Ok(())
}
