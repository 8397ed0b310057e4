//! Scratch directories for unit tests: one per test name and process,
//! empty when made, removed with everything in it when dropped.

use std::path::{Path, PathBuf};

/// A scratch directory, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    /// An empty directory named after `name` (unique per test).
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tally-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Self(dir)
    }

    /// `name` inside the directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
