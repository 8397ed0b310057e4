//! Helpers: a scratch directory per test and the binary under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tally-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, text).expect("write scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tally() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.env_remove("TALLY_DATA").env_remove("RUST_LOG");
    die_with_the_test(&mut cmd);
    cmd
}

/// The child is killed when the test thread that started it ends, so no
/// `tally` outlives its test, even when the test binary is killed (as a
/// mutation run kills one that hangs on a mutant that never stops).
fn die_with_the_test(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls prctl, which is
    // async-signal-safe and touches none of the parent's memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn run(args: &[&str]) -> Output {
    tally().args(args).bounded_output().expect("tally runs")
}

/// How long a test waits for one `tally` command before it kills it and
/// fails: far more than any test's command needs, far less than a hang.
pub const COMMAND_BOUND_MS: u64 = 60_000;

/// [`Command::output`] that kills the command and fails if it runs longer
/// than [`COMMAND_BOUND_MS`], so a `tally` that never stops (as under a
/// mutant of the runtime) fails its test instead of hanging the suite.
pub trait BoundedOutput {
    fn bounded_output(&mut self) -> std::io::Result<Output>;
}

impl BoundedOutput for Command {
    #[allow(clippy::disallowed_methods)] // a test's helper threads, never the simulator
    fn bounded_output(&mut self) -> std::io::Result<Output> {
        use std::io::Read;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        // Drain both pipes on threads so a chatty child cannot block.
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
        let Some(status) = wait_within(&mut child, COMMAND_BOUND_MS)? else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "tally did not finish within {} s and was killed",
                COMMAND_BOUND_MS / 1000
            )));
        };
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

pub fn data_arg(dir: &Path) -> String {
    dir.display().to_string()
}

/// The JSON report for the data directory.
pub fn report(data: &Path) -> anyhow::Result<serde_json::Value> {
    let out = run(&["report", "--json", "--data", &data_arg(data)]);
    let text = String::from_utf8(out.stdout)?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("report is not JSON ({e}): {text}"))
}

/// A synthetic sweep of `jobs` jobs, each sleeping `sleep_ms`.
pub fn synthetic_sweep(name: &str, jobs: u64, sleep_ms: u64) -> String {
    format!("name = \"{name}\"\nruns = {jobs}\n\n[experiment]\nbuiltin = \"synthetic\"\nsleep_ms = {sleep_ms}\n")
}

/// The live (not zombie) processes among `pids` or in process group
/// `pgid`, from /proc.
pub fn live(pids: &[i32], pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let in_group = fields.get(2).and_then(|g| g.parse().ok()) == Some(pgid);
            fields.first() != Some(&"Z") && (in_group || pids.contains(pid))
        })
        .collect()
}

/// Wait up to `ms` for `pids` and process group `pgid` to have no live
/// process; returns what is still alive.
pub fn survivors(pids: &[i32], pgid: i32, ms: u64) -> Vec<i32> {
    // Polls instead of reading the clock: the tests keep to core::Clock's rule.
    for _ in 0..ms / 20 {
        if live(pids, pgid).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    live(pids, pgid)
}

/// Kills processes (and the group each leads) when dropped, so a failing
/// test leaves nothing running.
pub struct KillOnDrop(pub Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in self.0.iter().filter(|p| **p > 1) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Wait up to `ms` for a file to hold a pid, written by a job (write it
/// to a temporary name and rename it, so it is never read half written).
pub fn read_pid(path: &Path, ms: u64) -> Option<i32> {
    for _ in 0..ms / 20 {
        if let Some(pid) = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()) {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// Wait up to `bound_ms` for `child` to exit; `None` if it is still running.
pub fn wait_within(
    child: &mut std::process::Child,
    bound_ms: u64,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    // Polls instead of reading the clock: the tests keep to core::Clock's rule.
    for _ in 0..bound_ms / 20 {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.try_wait()
}

/// Run `cmd` for at most `bound_ms`, killing it then; its exit code
/// (`None` if killed or signalled) and its stderr.
pub fn output_within(mut cmd: Command, bound_ms: u64) -> anyhow::Result<(Option<i32>, String)> {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Drain stderr on a thread so a chatty child cannot block on a full pipe.
    #[allow(clippy::disallowed_methods)] // a test's helper thread, never the simulator
    let reader = {
        let mut stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        })
    };
    let code = wait_within(&mut child, bound_ms)?.and_then(|status| status.code());
    if code.is_none() {
        let _ = child.kill();
    }
    child.wait()?;
    Ok((code, reader.join().unwrap_or_default()))
}
