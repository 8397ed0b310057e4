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
    cmd
}

pub fn run(args: &[&str]) -> Output {
    tally().args(args).output().expect("tally runs")
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
