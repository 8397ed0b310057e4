//! What an operator sees when the AWS backend cannot be used.

use std::process::{Command, Stdio};

use crate::support;

fn tally(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = Command::new(support::tally_binary()?)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("TALLY_BUCKET")
        .env_remove("TALLY_BACKEND")
        .stdin(Stdio::null())
        .output()?;
    Ok(out)
}

fn one_sentence(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(!out.status.success(), "expected a failure");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, not: {stderr}");
    stderr
}

#[test]
fn an_unreachable_endpoint_is_one_sentence_and_a_failing_exit() -> anyhow::Result<()> {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = tally(&[
        "init",
        "--backend",
        "aws",
        "--region",
        "us-east-1",
        "--bucket",
        "b",
        "--endpoint-url",
        &endpoint,
    ])?;
    let msg = one_sentence(&out);
    assert!(msg.contains("cannot reach S3"), "{msg}");
    Ok(())
}

#[test]
fn a_missing_bucket_flag_is_one_sentence_and_a_failing_exit() -> anyhow::Result<()> {
    let out = tally(&["worker", "--backend", "aws", "--region", "us-east-1"])?;
    let msg = one_sentence(&out);
    assert!(msg.contains("--bucket"), "{msg}");
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[test]
fn missing_credentials_are_one_sentence_and_a_failing_exit() -> anyhow::Result<()> {
    let out = Command::new(support::tally_binary()?)
        .args(["init", "--backend", "aws", "--region", "us-east-1", "--bucket", "b"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .stdin(Stdio::null())
        .output()?;
    let msg = one_sentence(&out);
    assert!(msg.contains("no usable AWS credentials"), "{msg}");
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[test]
fn a_bad_config_file_names_the_file_and_line() -> anyhow::Result<()> {
    let dir = support::scratch("config")?;
    let path = dir.join("tally.toml");
    std::fs::write(&path, "backend = \"aws\"\nbuckett = \"x\"\n")?;
    let out = tally(&["init", "--config", path.to_str().unwrap_or_default()])?;
    let msg = one_sentence(&out);
    assert!(msg.contains("tally.toml:2") && msg.contains("buckett"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
