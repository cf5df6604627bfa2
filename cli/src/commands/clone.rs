//! `dora clone workspace SRC NEW [--with-data]`: a new workspace with the workloads and volumes
//! of another, and with `--with-data` the volumes' files, streamed through this machine.

use std::time::Instant;

use anyhow::{Context, bail};
use dora_client::Error;
use dora_crds::{Kind, Resource};
use reqwest::Method;
use serde_json::{Value, json};

use super::volumes::{Remote, Totals};
use crate::args::{CloneWorkspaceArgs, Global};
use crate::client::Client;

/// The document that applies `resource`'s definition as `name` in `workspace`: its spec,
/// labels and annotations, not its status or history.
fn definition(resource: &Resource, workspace: Option<&str>) -> Value {
    let mut metadata = json!({"name": resource.metadata.name});
    if let Some(workspace) = workspace {
        metadata["workspace"] = json!(workspace);
    }
    if !resource.metadata.labels.is_empty() {
        metadata["labels"] = json!(resource.metadata.labels);
    }
    if let Some(annotations) = &resource.metadata.annotations {
        metadata["annotations"] = json!(annotations);
    }
    let mut document = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
    });
    if !resource.spec.is_null() {
        document["spec"] = resource.spec.clone();
    }
    document
}

pub async fn workspace(global: &Global, args: CloneWorkspaceArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut client = Client::new(global)?;
    let source_path = Kind::Workspace.object_path("", None, &args.source);
    let source: Resource = serde_json::from_value(
        client
            .json(Method::GET, &source_path, &[], None)
            .await
            .with_context(|| format!("cannot read workspace {}", args.source))?,
    )?;
    let new_path = Kind::Workspace.object_path("", None, &args.new);
    match client.json(Method::GET, &new_path, &[], None).await {
        Ok(_) => bail!(
            "workspace {} exists; clone makes a new workspace, so name one that does not exist",
            args.new
        ),
        Err(Error::Api(failure)) if failure.status == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let place = client
        .place_with(Kind::Volume, None, Some(&args.source), false)
        .await?;
    let mut documents = vec![definition(&source, None)];
    documents[0]["metadata"]["name"] = json!(args.new);
    let mut volumes = Vec::new();
    for kind in [Kind::Volume, Kind::Workload] {
        let listed = client
            .list(&kind.collection_path(&place.zone, Some(&args.source)), &[])
            .await?;
        for resource in listed.items {
            documents.push(definition(&resource, Some(&args.new)));
            if kind == Kind::Volume {
                volumes.push(resource);
            }
        }
    }
    // The Workspace first: an apply takes a JSON array's documents in order.
    let text = Value::Array(documents.clone()).to_string();
    let query = [("zone", place.zone.clone())];
    let answer = client
        .json(Method::POST, "/v1/apply", &query, Some(text))
        .await
        .with_context(|| format!("cannot make workspace {}", args.new))?;
    for result in answer["results"].as_array().into_iter().flatten() {
        if let Some(error) = result.get("error") {
            bail!(
                "{} {}: {}; workspace {} is left partly made",
                result["kind"].as_str().unwrap_or_default(),
                result["name"].as_str().unwrap_or_default(),
                error["message"].as_str().unwrap_or_default(),
                args.new
            );
        }
    }
    println!(
        "workspace/{} created from {} with {} volume(s) and {} workload(s)",
        args.new,
        args.source,
        volumes.len(),
        documents.len() - 1 - volumes.len()
    );
    if !args.with_data {
        return Ok(());
    }
    for volume in volumes {
        let name = &volume.metadata.name;
        if let Some(path) = volume.spec.get("localPath").and_then(Value::as_str) {
            eprintln!(
                "volume {name}: its localPath {path} names the same folder in both workspaces; nothing to copy"
            );
            continue;
        }
        let from = Remote::open(global, Some(&args.source), name).await?;
        let to = Remote::open(global, Some(&args.new), name).await?;
        let totals = copy(&from, &to).await?;
        eprintln!("{} to volume {name}", totals.line("copied", started));
    }
    Ok(())
}

/// Streams every file of `from` into `to`, one at a time.
async fn copy(from: &Remote, to: &Remote) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    for entry in from.tree("").await? {
        if entry.kind != "file" {
            continue;
        }
        let response = from.client().open(&from.url(&entry.name)?, &[]).await?;
        if !response.status().is_success() {
            return Err(dora_client::failure(response).await.into());
        }
        let body = dora_client::idle_deadline(response.bytes_stream());
        let request = to
            .client()
            .request(Method::PUT, &to.url(&entry.name)?)
            .query(&[
                ("offset", "0".to_string()),
                ("size", entry.size.to_string()),
                ("mtime", entry.modified.to_string()),
            ])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        let response = to.client().send_streaming(request).await?;
        if !response.status().is_success() {
            return Err(dora_client::failure(response).await)
                .with_context(|| format!("cannot copy {}", entry.name));
        }
        totals.files += 1;
        totals.bytes += entry.size;
    }
    Ok(totals)
}
