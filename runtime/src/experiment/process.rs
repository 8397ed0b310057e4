//! The process group each job runs in: its own group, so a timeout or a stop
//! kills everything the job started; and, so that jobs die with the runner
//! even if the runner is killed outright, a guardian process (see
//! [`guard_jobs`]), or where there is none a parent-death signal.

use std::os::unix::process::ExitStatusExt;
use std::sync::OnceLock;

/// The variable every job's environment carries: it names the runner, so
/// that the guardian can find the runner's jobs once the runner is gone.
pub const RUNNER_VAR: &str = "TALLY_RUNNER";

/// This runner's tag, once a guardian watches this process.
static GUARDED: OnceLock<String> = OnceLock::new();

/// Start a guardian for the jobs this process will run: a small process,
/// forked from this one while it is still single-threaded, that waits for
/// this process to end (its end of a pipe closes, however it ends, even by
/// SIGKILL) and then kills every process whose environment carries this
/// runner's [`RUNNER_VAR`], with the process group each leads: every job,
/// everything a job started (even outside its group), nothing else.
///
/// With a guardian, jobs start through `posix_spawn`, not `fork`: a
/// parent-death signal must be set between fork and exec, and forking a
/// large multi-threaded runner costs more than a short job (page tables
/// copied, copy-on-write faults, TLB shootdowns). Without one (this was
/// not called, or it failed), jobs get the parent-death signal instead.
///
/// Call it at most once, before any thread is started (the fork copies
/// only the calling thread). Linux only; elsewhere it does nothing.
pub fn guard_jobs() {
    #[cfg(target_os = "linux")]
    if let Some(tag) = start_guardian() {
        let _ = GUARDED.set(tag);
    }
}

#[cfg(target_os = "linux")]
fn start_guardian() -> Option<String> {
    // The guardian finds jobs through /proc; without it, it could not.
    // This process's id and start time (in clock ticks since boot, the
    // 22nd field of its stat) name it uniquely on this machine.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let started = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.to_owned();
    let tag = format!("{}-{started}", std::process::id());
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    let entry = format!("{RUNNER_VAR}={tag}").into_bytes();
    // SAFETY: this process is single-threaded here (the caller's
    // contract), so the child may run ordinary code, allocation included.
    match unsafe { libc::fork() } {
        -1 => {
            // SAFETY: closing descriptors this function owns.
            unsafe {
                libc::close(read_end);
                libc::close(write_end);
            }
            None
        }
        0 => {
            // SAFETY: the guardian owns its copies of the descriptors.
            unsafe { libc::close(write_end) };
            guardian(read_end, &entry)
        }
        _ => {
            // SAFETY: the runner keeps only the write end, open until it
            // ends; close-on-exec keeps jobs from holding it.
            unsafe { libc::close(read_end) };
            Some(tag)
        }
    }
}

/// The guardian's whole life: detach from the terminal's signals and
/// output, wait for the runner to end, kill what it left running.
#[cfg(target_os = "linux")]
fn guardian(read_end: libc::c_int, entry: &[u8]) -> ! {
    // SAFETY: plain system calls on this process's own state.
    unsafe {
        // Its own group: Ctrl-C and a kill of the runner's group pass it by.
        libc::setpgid(0, 0);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Hold no one's terminal or pipe open: `tally run | tee` ends with
        // the runner.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(read_end, (&raw mut byte).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
    }
    // Processes may fork while the scan runs: scan until one finds none.
    for _ in 0..10 {
        if kill_tagged(entry) == 0 {
            break;
        }
    }
    // SAFETY: ends this process without running the runner's destructors.
    unsafe { libc::_exit(0) }
}

/// Kill every process whose environment holds `entry`, and the group each
/// leads; how many were found.
#[cfg(target_os = "linux")]
fn kill_tagged(entry: &[u8]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    let mut found = 0;
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok()) {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|var| var == entry) {
            continue;
        }
        found += 1;
        // SAFETY: kill and getpgid have no memory-safety preconditions; a
        // negative pid names a group, never the guardian's own.
        unsafe {
            let group = libc::getpgid(pid);
            if group > 1 && group != own_group {
                libc::kill(-group, libc::SIGKILL);
            }
            libc::kill(pid, libc::SIGKILL);
        }
    }
    found
}

/// How long to keep reading a job's output after its main process exited:
/// a background child that inherited stdout would otherwise hold the job
/// open until it ends.
pub const OUTPUT_GRACE_MS: u64 = 500;

/// Start `command` in a new process group, marked for the guardian or, if
/// none watches this process, with the kernel set to SIGKILL it when this
/// process dies (Linux).
pub fn isolate(command: &mut tokio::process::Command) {
    command.process_group(0);
    if let Some(tag) = GUARDED.get() {
        command.env(RUNNER_VAR, tag);
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let runner = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec, where only
        // async-signal-safe calls are allowed: prctl, getppid and _exit are.
        // The signal is tied to the thread that spawns; tally spawns from
        // tokio's worker threads, which live as long as the runtime.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The runner may have died before the signal was armed.
                if libc::getppid() != runner {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
    }
}

/// A job's process group, killed (SIGKILL) when dropped: on a timeout, on a
/// stop (the worker drops the running job), and after the main process
/// exited, so nothing the job started outlives it.
pub struct Group {
    pgid: libc::pid_t,
}

impl Group {
    /// The group led by the process `pid` (started by [`isolate`]).
    pub fn new(pid: u32) -> Option<Self> {
        let pgid = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)?;
        Some(Self { pgid })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; a negative pid
        // names the process group, never this process (it is not in it).
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
    }
}

/// What to add to the stderr tail of a program ended by a signal.
pub fn signal_note(status: &std::process::ExitStatus) -> Option<String> {
    status.signal().map(|s| format!("killed by signal {s}"))
}
