//! Choosing and opening a backend for the deployable commands (`tally
//! init/submit/worker/aggregate/reconcile`): flags, then `TALLY_*`
//! environment variables (through clap), then an optional TOML `--config`
//! file, then defaults. The AWS backend is checked before use, so a wrong
//! endpoint, region, bucket or credentials is one clear sentence.

#[cfg(feature = "aws")]
mod aws;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;

use crate::adapters::local::SqliteSendLog;
use crate::cli::local::{Local, LockMode};
use crate::cli::UserError;
use crate::core::submitter::SendLog;
use crate::core::{BlobStore, Clock, Queue};

/// Which backend the queues and the blob store live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The embedded backend in a data directory (`--data`).
    Local,
    /// SQS queues and an S3 bucket.
    Aws,
}

/// Where the queues, the blob store and the submitter's progress live.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct BackendArgs {
    /// TOML file with defaults for the settings below (keys as the flags,
    /// with underscores: `queue_prefix = "tally"`). Flags and environment win.
    #[arg(long, env = "TALLY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Backend: `local` (a data directory) or `aws` (SQS and S3). Default local.
    #[arg(long, env = "TALLY_BACKEND", value_enum)]
    pub backend: Option<BackendKind>,
    /// Data directory of the local backend. Default `tally-data`.
    #[arg(long, env = "TALLY_DATA")]
    pub data: Option<PathBuf>,
    /// AWS: queue names are PREFIX-jobs, PREFIX-results and PREFIX-jobs-dead.
    /// Default `tally`.
    #[arg(long, env = "TALLY_QUEUE_PREFIX")]
    pub queue_prefix: Option<String>,
    /// AWS: the S3 bucket (must exist).
    #[arg(long, env = "TALLY_BUCKET")]
    pub bucket: Option<String>,
    /// AWS: key prefix inside the bucket. Default none.
    #[arg(long, env = "TALLY_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// AWS: region. Default: the standard chain (AWS_REGION, profile).
    #[arg(long, env = "TALLY_REGION")]
    pub region: Option<String>,
    /// AWS: endpoint URL for SQS- and S3-compatible servers.
    #[arg(long, env = "TALLY_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Where the submitter keeps its progress (AWS backend). Default `tally-state`.
    #[arg(long, env = "TALLY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Visibility timeout of held jobs, seconds (renewed while a job runs);
    /// also the queues' default. Default 60.
    #[arg(long, env = "TALLY_VISIBILITY_S", value_parser = clap::value_parser!(u64).range(1..=43200))]
    pub visibility_s: Option<u64>,
    /// AWS: bodies larger than this many bytes travel through S3 (claim
    /// check). Default 204800.
    #[arg(long, env = "TALLY_CLAIM_BYTES")]
    pub claim_bytes: Option<usize>,
}

/// The `--config` file: every key optional, same meaning as the flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    backend: Option<BackendKind>,
    data: Option<PathBuf>,
    queue_prefix: Option<String>,
    bucket: Option<String>,
    key_prefix: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    state_dir: Option<PathBuf>,
    visibility_s: Option<u64>,
    claim_bytes: Option<usize>,
}

/// The settings after layering flags, environment, file and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The backend.
    pub backend: BackendKind,
    /// Local data directory.
    pub data: PathBuf,
    /// AWS queue name prefix.
    pub queue_prefix: String,
    /// AWS bucket.
    pub bucket: Option<String>,
    /// AWS key prefix.
    pub key_prefix: String,
    /// AWS region.
    pub region: Option<String>,
    /// AWS endpoint URL.
    pub endpoint_url: Option<String>,
    /// The submitter's progress directory (AWS).
    pub state_dir: PathBuf,
    /// Visibility timeout, seconds.
    pub visibility_s: u64,
    /// Claim-check threshold, bytes.
    pub claim_bytes: usize,
}

fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UserError::bad_input(format!("cannot read --config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_owned();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!(":{l}")).unwrap_or_default();
        UserError::bad_input(format!("{}{at}: {msg}", path.display()))
    })
}

fn valid_queue_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 60
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl BackendArgs {
    /// Layer flags and environment over the config file over defaults.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => read_config(path)?,
            None => ConfigFile::default(),
        };
        let queue_prefix = self
            .queue_prefix
            .clone()
            .or(file.queue_prefix)
            .unwrap_or_else(|| "tally".into());
        if !valid_queue_prefix(&queue_prefix) {
            return Err(UserError::bad_input(format!(
                "--queue-prefix {queue_prefix:?} is not usable: use 1 to 60 letters, digits, '-' or '_'"
            )));
        }
        let visibility_s = self.visibility_s.or(file.visibility_s).unwrap_or(60);
        if !(1..=43_200).contains(&visibility_s) {
            return Err(UserError::bad_input(format!(
                "visibility_s = {visibility_s} is out of range: use 1 to 43200 seconds"
            )));
        }
        Ok(Settings {
            backend: self.backend.or(file.backend).unwrap_or(BackendKind::Local),
            data: self.data.clone().or(file.data).unwrap_or_else(|| "tally-data".into()),
            queue_prefix,
            bucket: self.bucket.clone().or(file.bucket),
            key_prefix: self.key_prefix.clone().or(file.key_prefix).unwrap_or_default(),
            region: self.region.clone().or(file.region),
            endpoint_url: self.endpoint_url.clone().or(file.endpoint_url),
            state_dir: self
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| "tally-state".into()),
            visibility_s,
            claim_bytes: self.claim_bytes.or(file.claim_bytes).unwrap_or(200 * 1024),
        })
    }
}

/// An opened backend: the three queues, the blob store and time.
pub struct Backend {
    /// The settings it was opened with.
    pub settings: Settings,
    /// Real time.
    pub clock: Arc<dyn Clock>,
    /// The work queue.
    pub jobs: Arc<dyn Queue>,
    /// The results queue.
    pub results: Arc<dyn Queue>,
    /// The work queue's dead-letter queue.
    pub jobs_dead: Arc<dyn Queue>,
    /// The blob store.
    pub store: Arc<dyn BlobStore>,
    /// Where it is, for messages.
    pub describe: String,
    local: Option<Local>,
}

impl Backend {
    /// Open the backend `settings` name, checking that it is reachable.
    pub async fn open(settings: Settings) -> anyhow::Result<Self> {
        match settings.backend {
            BackendKind::Local => {
                let local = Local::open(&settings.data, true, LockMode::Shared, settings.visibility_s * 1000).await?;
                Ok(Self {
                    clock: Arc::clone(&local.clock),
                    jobs: local.jobs.clone(),
                    results: local.results.clone(),
                    jobs_dead: local.jobs_dead.clone(),
                    store: Arc::clone(&local.store),
                    describe: format!("local data directory {}", settings.data.display()),
                    settings,
                    local: Some(local),
                })
            }
            #[cfg(feature = "aws")]
            BackendKind::Aws => aws::open(settings).await,
            #[cfg(not(feature = "aws"))]
            BackendKind::Aws => Err(UserError::bad_input(
                "this tally was built without the `aws` feature; rebuild with default features to use --backend aws",
            )),
        }
    }

    /// Assemble an opened AWS backend (used by the AWS opener).
    #[cfg(feature = "aws")]
    pub(crate) fn remote(
        settings: Settings,
        clock: Arc<dyn Clock>,
        queues: [Arc<dyn Queue>; 3],
        store: Arc<dyn BlobStore>,
        describe: String,
    ) -> Self {
        let [jobs, results, jobs_dead] = queues;
        Self {
            settings,
            clock,
            jobs,
            results,
            jobs_dead,
            store,
            describe,
            local: None,
        }
    }

    /// The submitter's progress: the data directory's send log (local), or
    /// a SQLite file in the state directory (AWS).
    pub fn send_log(&self) -> anyhow::Result<Arc<dyn SendLog>> {
        if let Some(local) = &self.local {
            return Ok(local.log.clone());
        }
        let dir = &self.settings.state_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let log = SqliteSendLog::open_renaming(&dir.join("send-log.sqlite"), &dir.join("submit-ledger.sqlite"))
            .context("cannot open the submitter's send log")?;
        Ok(Arc::new(log))
    }

    /// Where `tally reconcile` writes the results database by default.
    pub fn default_results_db(&self) -> PathBuf {
        match &self.local {
            Some(local) => local.results_db(),
            None => self.settings.state_dir.join("results.sqlite"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let dir = crate::scratch::Scratch::new("config");
        let path = dir.path("tally.toml");
        std::fs::write(
            &path,
            "backend = \"aws\"\nbucket = \"from-file\"\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let args = BackendArgs {
            config: Some(path.clone()),
            bucket: Some("from-flag".into()),
            ..BackendArgs::default()
        };
        let s = args.settings().unwrap();
        assert_eq!(s.backend, BackendKind::Aws);
        assert_eq!(s.bucket.as_deref(), Some("from-flag"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.queue_prefix, "tally");
        assert_eq!(s.visibility_s, 60);
    }

    #[test]
    fn unusable_queue_prefixes_are_refused() {
        for bad in ["", "has space", "a/b", &"x".repeat(61)] {
            let args = BackendArgs {
                queue_prefix: Some(bad.to_owned()),
                ..BackendArgs::default()
            };
            assert!(args.settings().is_err(), "{bad:?}");
        }
    }
}
