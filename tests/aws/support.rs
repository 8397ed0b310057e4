//! Shared helpers: the moto endpoint, its reset, SDK clients, the binary.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use tally::adapters::aws::{self, AwsConfig, Clients, S3Store};
use tally::core::BlobStore;

/// One test at a time talks to moto: every test resets it first.
pub static MOTO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The moto endpoint, or `None` (after saying so) when the tests should be
/// skipped. Under CI, or where `TALLY_TEST_REQUIRE_MOTO` is set (as
/// scripts/test.sh sets it), a missing endpoint is an error: a suite that
/// should test the AWS adapter must not pass by skipping it.
#[allow(clippy::disallowed_methods)] // reason: the test harness takes the server from the environment
pub fn moto_endpoint(test: &str) -> anyhow::Result<Option<String>> {
    match std::env::var("TALLY_TEST_MOTO") {
        Ok(url) if !url.trim().is_empty() => Ok(Some(url.trim().trim_end_matches('/').to_owned())),
        _ if std::env::var_os("CI").is_some() || std::env::var_os("TALLY_TEST_REQUIRE_MOTO").is_some() => {
            bail!("TALLY_TEST_MOTO is not set, and this run requires moto: start it with scripts/moto.sh start and export its endpoint")
        }
        _ => {
            eprintln!(
                "skipped {test}: TALLY_TEST_MOTO is not set (run scripts/moto.sh start and export TALLY_TEST_MOTO=URL)"
            );
            Ok(None)
        }
    }
}

/// `host:port` of an `http://host:port` endpoint.
fn authority(endpoint: &str) -> anyhow::Result<&str> {
    let rest = endpoint
        .strip_prefix("http://")
        .with_context(|| format!("{endpoint} is not an http:// URL"))?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// Clear every queue and bucket in moto.
pub fn reset(endpoint: &str) -> anyhow::Result<()> {
    let host = authority(endpoint)?;
    let mut stream = std::net::TcpStream::connect(host).with_context(|| format!("cannot connect to moto at {host}"))?;
    write!(
        stream,
        "POST /moto-api/reset HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if !answer.starts_with("HTTP/1.1 200") && !answer.starts_with("HTTP/1.0 200") {
        bail!("moto reset failed: {}", answer.lines().next().unwrap_or(""));
    }
    Ok(())
}

/// SDK clients for moto with static test credentials.
pub async fn clients(endpoint: &str) -> Clients {
    aws::clients(&AwsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.to_owned()),
        credentials: Some(tally::adapters::aws::Credentials::new(
            "test", "test", None, None, "tests",
        )),
    })
    .await
}

/// A fresh bucket and a store on it.
pub async fn bucket(clients: &Clients, name: &str) -> anyhow::Result<Arc<dyn BlobStore>> {
    clients.s3.create_bucket().bucket(name).send().await?;
    Ok(Arc::new(S3Store::new(clients.s3.clone(), name, "run")))
}

/// The `tally` binary of this build, built first if needed.
pub fn tally_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary is not in target/PROFILE/deps")?;
    let binary = profile_dir.join("tally");
    // `cargo test --workspace` builds it along with the tests (the runtime's
    // own tests need it); building it again here with `-p tally` would
    // resolve features differently and recompile half the dependencies.
    if binary.exists() {
        return Ok(binary);
    }
    let mut build = std::process::Command::new(env!("CARGO"));
    build.args(["build", "-q", "-p", "tally", "--bin", "tally", "--manifest-path"]);
    build.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().context("cannot run cargo to build tally")?;
    if !status.success() {
        bail!("building the tally binary failed");
    }
    Ok(binary)
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tally-aws-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
