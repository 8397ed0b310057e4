//! The disk-space guard of `tally run`: before anything is written, an
//! estimate of what the sweep will occupy in the data directory, against
//! the free space of its disk.
//!
//! The figures are measured (docs/BENCHMARKS.md, "On-disk footprint"): a
//! queued job costs about [`QUEUED_JOB_BYTES`] in the work queue's file,
//! which the submit window bounds, and every finished job about
//! [`STORED_JOB_BYTES`] in its segment and its row of results.sqlite, plus
//! its parameters and whatever the experiment prints.

use std::path::Path;

use crate::cli::UserError;
use crate::sweep::Sweep;

/// Bytes a job occupies while queued (row, index, WAL), measured.
pub const QUEUED_JOB_BYTES: u64 = 700;
/// Bytes a finished job occupies (segment and results row), measured for
/// the synthetic experiment; a program that prints more needs more.
pub const STORED_JOB_BYTES: u64 = 300;

/// What the sweep is expected to need, bytes.
pub fn estimate(jobs: u64, window: u64) -> u64 {
    let stored = jobs.saturating_mul(STORED_JOB_BYTES);
    // The results queue holds at most about as many as the work queue.
    let queued = jobs.min(window).saturating_mul(QUEUED_JOB_BYTES).saturating_mul(2);
    stored.saturating_add(queued)
}

/// Refuse, with one sentence, a sweep whose estimate exceeds the free space
/// of `data`'s disk (or of its nearest existing parent's).
pub fn check(sweep: &Sweep, data: &Path, window: u64) -> anyhow::Result<()> {
    let jobs = sweep.len().unwrap_or(u64::MAX);
    let need = estimate(jobs, window);
    let Some(free) = free_bytes(data) else {
        return Ok(());
    };
    if need > free {
        return Err(UserError::bad_input(format!(
            "the sweep's {jobs} jobs need about {} in {}, but its disk has {} free; free some space, \
             choose another --data, or pass --ignore-disk-space",
            human(need),
            data.display(),
            human(free)
        )));
    }
    Ok(())
}

/// Free bytes on the disk holding `path` (or its nearest existing parent),
/// for an unprivileged writer; `None` where it cannot be told.
fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    fs4::available_space(existing).ok()
}

/// Bytes in the largest unit that keeps a number of at least one.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_bounds_the_queue_share_of_the_estimate() {
        assert_eq!(estimate(10, 100_000), 10 * STORED_JOB_BYTES + 10 * QUEUED_JOB_BYTES * 2);
        let big = estimate(1_000_000_000, 100_000);
        assert_eq!(big, 1_000_000_000 * STORED_JOB_BYTES + 100_000 * QUEUED_JOB_BYTES * 2);
        assert_eq!(estimate(u64::MAX, 100_000), u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn sizes_read_as_a_person_would_say_them() {
        assert_eq!(human(999), "999.0 B");
        assert_eq!(human(71_000_000_000), "71.0 GB");
    }
}
