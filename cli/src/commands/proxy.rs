//! `dora logs`, `dora shell` and `dora top`: container operations that the API server relays
//! to the container's node.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use dora_crds::Kind;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::args::{Global, LogsArgs, ShellArgs, TopArgs};
use crate::client::Client;
use crate::output;
use dora_client::failure;

/// The API path of a container named directly (`c NAME`) or by its workload (`wk NAME`, its
/// replica 0).
async fn container_path(client: &mut Client, kind: &str, name: &str) -> anyhow::Result<String> {
    let container = match super::built_in_kind(kind)? {
        Kind::Container => name.to_string(),
        Kind::Workload => format!("{name}.0"),
        other => {
            bail!("{other} has no containers of its own; name a container (c) or a workload (wk)")
        }
    };
    let place = client.place(Kind::Container, false).await?;
    Ok(format!(
        "/v1/zones/{}/workspaces/{}/containers/{container}",
        place.zone,
        place.workspace.unwrap_or_default()
    ))
}

pub async fn logs(global: &Global, args: LogsArgs) -> anyhow::Result<()> {
    let mut client = Client::new(global)?;
    let path = container_path(&mut client, &args.kind, &args.name).await?;
    let mut query = Vec::new();
    if args.follow {
        query.push(("follow", "true".to_string()));
    }
    if let Some(tail) = args.tail {
        query.push(("tail", tail.to_string()));
    }
    if args.previous {
        query.push(("previous", "true".to_string()));
    }
    // A followed container may stay quiet for long: only the keep-alive ends a dead stream.
    let response = client.open(&format!("{path}/logs"), &query).await?;
    if !response.status().is_success() {
        return Err(failure(response).await.into());
    }
    let mut body = response.bytes_stream();
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = body.next().await {
        stdout.write_all(&chunk?)?;
        stdout.flush()?;
    }
    Ok(())
}

pub async fn shell(global: &Global, args: ShellArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(global)?;
    let path = container_path(&mut client, &args.kind, &args.name).await?;
    if args.command.is_empty() || args.interactive {
        let command = if args.command.is_empty() {
            vec!["sh".to_string()]
        } else {
            args.command
        };
        return super::terminal::attach(&client, &format!("{path}/exec"), &command).await;
    }
    let body = json!({"command": args.command}).to_string();
    let answer = client
        .json(Method::POST, &format!("{path}/exec"), &[], Some(body))
        .await?;
    print!("{}", answer["output"].as_str().unwrap_or_default());
    std::io::stdout().flush()?;
    let code = answer["exitCode"].as_i64().unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn usage_row(item: &Value) -> Vec<String> {
    let usage = &item["usage"];
    vec![
        item["name"].as_str().unwrap_or_default().to_string(),
        format!("{:.1}%", usage["cpuPercent"].as_f64().unwrap_or_default()),
        format!(
            "{:.1}Mi",
            usage["memoryBytes"].as_f64().unwrap_or_default() / 1_048_576.0
        ),
        usage["processes"].as_u64().unwrap_or_default().to_string(),
    ]
}

pub async fn top(global: &Global, args: TopArgs) -> anyhow::Result<()> {
    let mut client = Client::new(global)?;
    let answer = match super::built_in_kind(&args.kind)? {
        Kind::Node => {
            let place = client.place(Kind::Node, false).await?;
            let path = format!("/v1/zones/{}/nodes/{}/top", place.zone, args.name);
            client.json(Method::GET, &path, &[], None).await?
        }
        kind => {
            let path = container_path(&mut client, kind.name(), &args.name).await?;
            let one = client
                .json(Method::GET, &format!("{path}/top"), &[], None)
                .await?;
            json!({"items": [one]})
        }
    };
    output::print_items(
        args.output,
        &answer,
        &["NAME", "CPU", "MEMORY", "PROCESSES"],
        usage_row,
    )
}
