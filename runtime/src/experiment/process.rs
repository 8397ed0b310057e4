//! The process group each job runs in: its own group, so a timeout or a stop
//! kills everything the job started, and (on Linux) a parent-death signal,
//! so the job dies with the runner even if the runner is killed outright.

use std::os::unix::process::ExitStatusExt;

/// How long to keep reading a job's output after its main process exited:
/// a background child that inherited stdout would otherwise hold the job
/// open until it ends.
pub const OUTPUT_GRACE_MS: u64 = 500;

/// Start `command` in a new process group and, on Linux, have the kernel
/// SIGKILL it when this process dies.
pub fn isolate(command: &mut tokio::process::Command) {
    command.process_group(0);
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
