//! `dora apply -f`, and its dry run (`--dry-run`, `dora diff -f`).

use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use super::{diff, label};
use crate::args::{ApplyArgs, Global};
use crate::client::Client;
use crate::manifest;
use dora_client::Failure;

/// What an apply of the files does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writes, and prints each document's outcome.
    Write,
    /// Writes nothing; prints how each spec would change and each outcome.
    DryRun,
    /// Writes nothing; prints how each spec would change, and exits 1 when one would.
    Diff,
}

pub async fn run(global: &Global, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Write
    };
    apply(global, &args, mode).await
}

pub async fn apply(global: &Global, args: &ApplyArgs, mode: Mode) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    let mut failed = false;
    let mut changes = false;
    let (zone, workspace) = client.defaults();
    let mut query = Vec::new();
    if let Some(zone) = zone {
        query.push(("zone", zone.to_string()));
    }
    if let Some(workspace) = workspace {
        query.push(("workspace", workspace.to_string()));
    }
    if mode != Mode::Write {
        query.push(("dryRun", "true".to_string()));
    }
    for manifest in manifest::read_all(&args.files, &args.env)? {
        let response = client
            .send(Method::POST, "/v1/apply", &query, Some(manifest.text))
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let Some(results) = body["results"].as_array() else {
            eprintln!(
                "error: {}: {}",
                manifest.source,
                Failure::new(status.as_u16(), &body)
            );
            failed = true;
            continue;
        };
        for result in results {
            if result.get("error").is_some() {
                failed = true;
                eprintln!(
                    "error: {}: {}",
                    manifest.source,
                    Failure::new(status.as_u16(), result)
                );
                continue;
            }
            let name = label(
                result["kind"].as_str().unwrap_or_default(),
                result["name"].as_str().unwrap_or_default(),
            );
            let outcome = result["outcome"].as_str().unwrap_or_default();
            if let Some(preview) = result.get("dryRun") {
                let text = diff::specs(
                    &preview["current"],
                    &format!("{name} (stored)"),
                    &preview["applied"],
                    &format!("{name} (applied)"),
                )?;
                changes |= !text.is_empty();
                print!("{text}");
            }
            match mode {
                Mode::Write => println!("{name} {outcome}"),
                Mode::DryRun => println!("{name} {outcome} (dry run)"),
                Mode::Diff => {}
            }
            for warning in result["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {name}: {}", warning.as_str().unwrap_or_default());
            }
        }
    }
    // As diff(1) and kubectl diff: 1 says that there are differences, so a failure is 2.
    Ok(match (mode, failed) {
        (Mode::Diff, true) => ExitCode::from(2),
        (_, true) => ExitCode::FAILURE,
        (Mode::Diff, false) if changes => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
