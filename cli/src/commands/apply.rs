//! `dora apply -f`.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use super::label;
use crate::args::{ApplyArgs, Global};
use crate::client::Client;
use crate::manifest;
use dora_client::Failure;

pub async fn run(global: &Global, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    let mut failed = false;
    let (zone, workspace) = client.defaults();
    let mut query = Vec::new();
    if let Some(zone) = zone {
        query.push(("zone", zone.to_string()));
    }
    if let Some(workspace) = workspace {
        query.push(("workspace", workspace.to_string()));
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
            } else {
                let name = label(
                    result["kind"].as_str().unwrap_or_default(),
                    result["name"].as_str().unwrap_or_default(),
                );
                println!("{name} {}", result["outcome"].as_str().unwrap_or_default());
                for warning in result["warnings"].as_array().into_iter().flatten() {
                    eprintln!("warning: {name}: {}", warning.as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
