//! `dora delete -f FILE`, `dora delete KIND NAME` and `dora delete KIND -l SELECTOR`.

use std::process::ExitCode;

use anyhow::bail;
use dora_crds::{Kind, parse_documents};
use reqwest::Method;

use super::{kind, label};
use crate::args::{DeleteArgs, Global};
use crate::client::Client;
use crate::manifest;

async fn delete_one(
    client: &mut Client,
    kind: Kind,
    zone: Option<&str>,
    workspace: Option<&str>,
    name: &str,
    cascade: bool,
) -> anyhow::Result<()> {
    let place = client.place_with(kind, zone, workspace, false).await?;
    let path = kind.object_path(&place.zone, place.workspace.as_deref(), name);
    let query = if cascade {
        vec![("cascade", "true".to_string())]
    } else {
        Vec::new()
    };
    let answer = client.json(Method::DELETE, &path, &query, None).await?;
    println!("{}", deleted(kind, name, &answer));
    Ok(())
}

/// What `dora delete` says of one object, given the API's answer: deleted, or waiting on
/// finalizers when the object is only marked with its `deletionTimestamp`.
fn deleted(kind: Kind, name: &str, answer: &serde_json::Value) -> String {
    let label = label(kind.name(), name);
    let meta = &answer["metadata"];
    if meta["deletionTimestamp"].is_null() {
        return format!("{label} deleted");
    }
    let waiting: Vec<&str> = meta["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    format!(
        "{label} deletion pending on finalizers {}",
        waiting.join(", ")
    )
}

/// Deletes every resource of `kind` whose labels match `selector`, naming each.
async fn delete_selected(
    client: &mut Client,
    kind: Kind,
    selector: &str,
) -> anyhow::Result<ExitCode> {
    let place = client.place(kind, false).await?;
    let collection = kind.collection_path(&place.zone, place.workspace.as_deref());
    let mut names = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut query = vec![
            ("labelSelector", selector.to_string()),
            ("limit", "1000".to_string()),
        ];
        if let Some(token) = &next {
            query.push(("continue", token.clone()));
        }
        let page = client.json(Method::GET, &collection, &query, None).await?;
        for item in page["items"].as_array().into_iter().flatten() {
            if let Some(name) = item["metadata"]["name"].as_str() {
                names.push(name.to_string());
            }
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) => next = Some(token.to_string()),
            None => break,
        }
    }
    if names.is_empty() {
        eprintln!("No {} match {selector:?}.", kind.plural());
    }
    let mut failed = false;
    for name in names {
        let path = kind.object_path(&place.zone, place.workspace.as_deref(), &name);
        match client.json(Method::DELETE, &path, &[], None).await {
            Ok(answer) => println!("{}", deleted(kind, &name, &answer)),
            Err(e) => {
                eprintln!("error: {}: {e:#}", label(kind.name(), &name));
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn run(global: &Global, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(global)?;
    if let (Some(kind_text), Some(selector)) = (&args.kind, &args.selector) {
        return delete_selected(&mut client, kind(global, kind_text).await?, selector).await;
    }
    if args.files.is_empty() {
        let (Some(kind_text), Some(name)) = (&args.kind, &args.name) else {
            bail!(
                "name what to delete: `dora delete KIND NAME`, `dora delete KIND -l SELECTOR` or `dora delete -f FILE`"
            );
        };
        delete_one(
            &mut client,
            kind(global, kind_text).await?,
            None,
            None,
            name,
            args.cascade,
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    let manifests = manifest::read_all(&args.files, &args.env)?;
    // The manifests may hold objects of kinds defined on the cluster.
    client.learn_kinds().await?;
    for manifest in manifests {
        for document in parse_documents(&manifest.text) {
            let result = match document {
                Ok(doc) => {
                    let meta = &doc.metadata;
                    delete_one(
                        &mut client,
                        doc.kind,
                        meta.zone.as_deref(),
                        meta.workspace.as_deref(),
                        &meta.name,
                        args.cascade,
                    )
                    .await
                }
                Err(e) => Err(anyhow::anyhow!("{e}")),
            };
            if let Err(e) = result {
                eprintln!("error: {}: {e:#}", manifest.source);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
