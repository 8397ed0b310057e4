//! The experiments tally can run: an external command, executed directly
//! (never through a shell, so parameter values cannot inject commands), and
//! a built-in deterministic function used by tests, benchmarks and the
//! simulator.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::core::{Clock, Experiment, JobSpec, Outcome, ResultStatus};
use crate::sweep::{render, Sweep};

mod output;
mod process;
pub use output::{HeadTail, LAST_LINE_MAX};
pub use process::{guard_jobs, RUNNER_VAR};

/// Most bytes of standard output kept when it is not metrics: its first
/// and its last half, with a marker where the middle was cut.
pub const STDOUT_MAX: usize = 64 * 1024;
/// Bytes of standard error kept (the tail).
pub const STDERR_TAIL: usize = 4 * 1024;

/// Build the experiment a sweep asks for. `base_dir` anchors a relative
/// `workdir` (the sweep file's directory for `tally run`).
pub fn from_sweep(sweep: &Sweep, base_dir: PathBuf, clock: Arc<dyn Clock>) -> Arc<dyn Experiment> {
    match &sweep.experiment.command {
        Some(argv) => {
            let workdir = match &sweep.experiment.workdir {
                Some(w) => base_dir.join(w),
                None => base_dir,
            };
            let here = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
            let inherits_workdir = here.is_some() && here == workdir.canonicalize().ok();
            let mut argv = argv.clone();
            if let Some(found) = search_path(&argv[0]) {
                argv[0] = found.to_string_lossy().into_owned();
            }
            Arc::new(Command {
                argv,
                workdir,
                timeout_s: sweep.timeout_s,
                inherits_workdir,
            })
        }
        None => Arc::new(Synthetic {
            clock,
            sleep_ms: sweep.experiment.sleep_ms,
            fail_every: sweep.experiment.fail_every,
        }),
    }
}

/// Check, before anything is written, that a command sweep's workdir
/// exists and its program can be found: otherwise every job would fail.
pub fn check_runnable(sweep: &Sweep, base_dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Some(argv) = &sweep.experiment.command else {
        return Ok(());
    };
    let workdir = match &sweep.experiment.workdir {
        Some(w) => base_dir.join(w),
        None => base_dir.to_owned(),
    };
    if !workdir.is_dir() {
        return Err(format!("the workdir {} is not a directory", workdir.display()));
    }
    let program = &argv[0];
    if program.contains('{') {
        return Ok(()); // a parameter names it: checked per job
    }
    if !program.contains('/') {
        return match search_path(program) {
            Some(_) => Ok(()),
            None => Err(format!(
                "the program {program:?} is not on PATH; install it or give its path in [experiment] command"
            )),
        };
    }
    // A path with a '/' is taken relative to the workdir, where it runs.
    let path = workdir.join(program);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("the program {} is not an executable file", path.display())),
        Err(e) => Err(format!("cannot find the program {}: {e}", path.display())),
    }
}

/// The program `name` as found on `PATH`, looked up once rather than by
/// every spawn (each miss on the way is a failed `execve`). `None` for a
/// name with a `/` or a placeholder, or one not found: spawning then does
/// its own search and reports what it finds.
fn search_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') || name.contains('{') {
        return None;
    }
    #[allow(clippy::disallowed_methods)] // the runtime's own command runner, never the simulator
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Interpret what a program printed: a JSON object on standard output (or on
/// its last non-empty line) becomes metrics; anything else is kept raw.
/// Python's `NaN`, `Infinity` and `-Infinity` are read as the strings
/// `"NaN"`, `"Infinity"` and `"-Infinity"` (see [`quote_non_finite`]).
pub fn parse_stdout(stdout: &str) -> (Option<serde_json::Map<String, serde_json::Value>>, Option<String>) {
    let object = |s: &str| match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    let as_object = |s: &str| {
        let s = s.trim();
        object(s).or_else(|| quote_non_finite(s).and_then(|q| object(&q)))
    };
    if let Some(map) = as_object(stdout) {
        return (Some(map), None);
    }
    if let Some(map) = stdout.lines().rev().find(|l| !l.trim().is_empty()).and_then(as_object) {
        return (Some(map), None);
    }
    if stdout.is_empty() {
        return (None, None);
    }
    (None, Some(stdout.to_owned()))
}

/// Python's `json.dumps` writes a non-finite float as the bare word `NaN`,
/// `Infinity` or `-Infinity`, which JSON does not allow. Rewrite those words
/// (outside strings) as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`,
/// so metrics stay valid JSON for every reader of the messages and the
/// segments; the results database turns them back into numbers. `None`
/// when there is no such word.
pub fn quote_non_finite(text: &str) -> Option<String> {
    const WORDS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 8);
    let (mut i, mut copied, mut in_string, mut escaped) = (0, 0, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some(word) = WORDS.iter().find(|w| bytes[i..].starts_with(w.as_bytes())) {
            out.push_str(&text[copied..i]);
            out.push('"');
            out.push_str(word);
            out.push('"');
            i += word.len();
            copied = i;
            continue;
        }
        i += 1;
    }
    (copied > 0).then(|| out + &text[copied..])
}

/// An external program, one process per job.
pub struct Command {
    /// Program and argument templates.
    pub argv: Vec<String>,
    /// Where the program runs.
    pub workdir: PathBuf,
    /// Kill the program after this many seconds.
    pub timeout_s: u64,
    /// The workdir is this process's own working directory.
    pub inherits_workdir: bool,
}

impl Command {
    fn render_argv(&self, job: &JobSpec) -> Result<Vec<String>, String> {
        self.argv
            .iter()
            .map(|t| {
                render(t, |name| match name {
                    "index" => Some(job.index.to_string()),
                    "run" => Some(job.run.to_string()),
                    "sweep" => Some(job.sweep.clone()),
                    _ => job.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_arg()),
                })
            })
            .collect()
    }
}

fn failed(message: String) -> Outcome {
    Outcome {
        status: ResultStatus::Failed,
        exit_code: None,
        metrics: None,
        stdout: None,
        stderr_tail: message,
    }
}

impl Command {
    fn spawn(&self, argv: &[String]) -> Result<tokio::process::Child, Outcome> {
        let mut command = tokio::process::Command::new(&argv[0]);
        // Setting a working directory can keep the standard library from
        // using posix_spawn; skip it when the child would inherit it anyway.
        if !self.inherits_workdir {
            command.current_dir(&self.workdir);
        }
        process::isolate(&mut command);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot start {:?} in {}: {e}", argv[0], self.workdir.display())))
    }
}

/// Wait for the main process while reading its output into `out` and
/// `err`; once it exited, read on for at most the grace period.
async fn collect(
    child: &mut tokio::process::Child,
    out: &mut HeadTail,
    err: &mut Vec<u8>,
) -> std::io::Result<std::process::ExitStatus> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let reading = async {
        tokio::join!(output::read_into(stdout, out), read_tail(stderr, err, STDERR_TAIL));
    };
    tokio::pin!(reading);
    let status = tokio::select! {
        biased;
        status = child.wait() => status,
        () = &mut reading => return child.wait().await,
    };
    let grace = std::time::Duration::from_millis(process::OUTPUT_GRACE_MS);
    let _ = tokio::time::timeout(grace, reading).await;
    status
}

#[async_trait]
impl Experiment for Command {
    async fn run(&self, job: &JobSpec) -> Outcome {
        let argv = match self.render_argv(job) {
            Ok(argv) => argv,
            Err(e) => return failed(e),
        };
        tracing::debug!(sweep = %job.sweep, index = job.index, argv = ?argv, "job starting");
        let mut child = match self.spawn(&argv) {
            Ok(child) => child,
            Err(outcome) => return outcome,
        };
        // Dropped on every way out, this kills whatever the job left.
        let _group = child.id().and_then(process::Group::new);
        let (mut out, mut err) = (HeadTail::new(STDOUT_MAX / 2, STDOUT_MAX / 2), Vec::new());
        let timeout = std::time::Duration::from_secs(self.timeout_s);
        let collected = tokio::time::timeout(timeout, collect(&mut child, &mut out, &mut err)).await;
        let mut stderr_tail = String::from_utf8_lossy(&err).into_owned();
        let status = match collected {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => return failed(format!("waiting for the program failed: {e}")),
            Err(_) => {
                append_line(
                    &mut stderr_tail,
                    &format!("killed after the {} s timeout", self.timeout_s),
                );
                return Outcome {
                    status: ResultStatus::TimedOut,
                    ..failed(stderr_tail)
                };
            }
        };
        if let Some(note) = process::signal_note(&status) {
            append_line(&mut stderr_tail, &note);
        }
        tracing::debug!(sweep = %job.sweep, index = job.index, %status, "job ended");
        // Parse with the whole last line kept, where metrics live; keep only
        // the usual tail of a long last line that is not metrics.
        let (metrics, stdout) = match parse_stdout(&out.text(usize::MAX)) {
            (None, Some(_)) => (None, Some(out.text(out.tail_cap()))),
            parsed => parsed,
        };
        Outcome {
            status: if status.success() {
                ResultStatus::Ok
            } else {
                ResultStatus::Failed
            },
            exit_code: status.code(),
            metrics,
            stdout,
            stderr_tail,
        }
    }
}

fn append_line(text: &mut String, line: &str) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
}

/// Read everything into `kept`, keeping its last `cap` bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin, kept: &mut Vec<u8>, cap: usize) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * cap {
            kept.drain(..kept.len() - cap);
        }
    }
    if kept.len() > cap {
        kept.drain(..kept.len() - cap);
    }
}

/// A deterministic function of the job's parameters and run, optionally
/// slow and optionally failing, that needs no process.
pub struct Synthetic {
    /// Time to sleep on.
    pub clock: Arc<dyn Clock>,
    /// How long each job takes, ms.
    pub sleep_ms: u64,
    /// Every n-th job fails (0: none).
    pub fail_every: u64,
}

/// The metrics the synthetic experiment reports for a job.
pub fn synthetic_score(job: &JobSpec) -> f64 {
    let canonical = serde_json::to_string(&(&job.params, job.run)).expect("params serialise");
    let h = xxhash_rust::xxh3::xxh3_64(canonical.as_bytes());
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[async_trait]
impl Experiment for Synthetic {
    async fn run(&self, job: &JobSpec) -> Outcome {
        if self.sleep_ms > 0 {
            self.clock.sleep(self.sleep_ms).await;
        }
        let fails = self.fail_every > 0 && job.index % self.fail_every == self.fail_every - 1;
        let mut metrics = serde_json::Map::new();
        metrics.insert("score".into(), serde_json::json!(synthetic_score(job)));
        Outcome {
            status: if fails { ResultStatus::Failed } else { ResultStatus::Ok },
            exit_code: Some(i32::from(fails)),
            metrics: Some(metrics),
            stdout: None,
            stderr_tail: if fails {
                "synthetic failure".into()
            } else {
                String::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_stdout_becomes_metrics_and_anything_else_stays_raw() {
        let (m, raw) = parse_stdout("{\"loss\": 0.5}\n");
        assert_eq!(m.unwrap()["loss"], serde_json::json!(0.5));
        assert!(raw.is_none());
        let (m, _) = parse_stdout("epoch 1\nepoch 2\n{\"acc\": 1}\n\n");
        assert_eq!(m.unwrap()["acc"], serde_json::json!(1));
        let (m, raw) = parse_stdout("hello\n");
        assert!(m.is_none());
        assert_eq!(raw.as_deref(), Some("hello\n"));
        assert_eq!(parse_stdout(""), (None, None));
        assert!(parse_stdout("[1,2]").0.is_none());
    }

    #[test]
    fn python_non_finite_numbers_become_metrics_as_strings() {
        let printed = "epoch 1\n{\"loss\": NaN, \"acc\": Infinity, \"low\": -Infinity, \"note\": \"NaN \\\" Infinity\", \"n\": [NaN]}\n";
        let (m, raw) = parse_stdout(printed);
        let m = m.expect("metrics");
        assert!(raw.is_none());
        assert_eq!(m["loss"], "NaN");
        assert_eq!(m["acc"], "Infinity");
        assert_eq!(m["low"], "-Infinity");
        assert_eq!(m["note"], "NaN \" Infinity", "strings are left alone");
        assert_eq!(m["n"], serde_json::json!(["NaN"]));
        assert!(parse_stdout("{\"x\": NaNa}").0.is_none(), "still JSON or nothing");
        assert_eq!(quote_non_finite("{\"a\": 1}"), None);
    }
}
