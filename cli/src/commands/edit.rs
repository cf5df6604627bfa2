//! Commands that change one field of a spec through the API, as a new spec version: `dora
//! scale`, `dora cordon` and `dora uncordon`.

use std::process::ExitCode;

use anyhow::bail;
use dora_crds::Kind;
use reqwest::Method;
use serde_json::{Value, json};

use super::{built_in_kind, label};
use crate::args::{ActionArgs, Global, ScaleArgs};
use crate::client::Client;

/// Tries of a read-modify-write that lost a race with another writer.
const TRIES: usize = 5;

/// Reads the resource at `path`, lets `change` edit its spec and writes it back with the version
/// read as a precondition, again on a conflict. `change` answers whether it changed anything.
async fn edit_spec(
    client: &Client,
    path: &str,
    change: impl Fn(&mut Value) -> bool,
) -> anyhow::Result<(Value, bool)> {
    for _ in 0..TRIES {
        let item = client.json(Method::GET, path, &[], None).await?;
        let mut spec = item["spec"].clone();
        if !change(&mut spec) {
            return Ok((item, false));
        }
        let meta = &item["metadata"];
        let mut metadata = json!({"name": meta["name"], "version": meta["version"]});
        for field in ["zone", "workspace", "labels"] {
            if !meta[field].is_null() {
                metadata[field] = meta[field].clone();
            }
        }
        let document = json!({
            "apiVersion": item["apiVersion"],
            "kind": item["kind"],
            "metadata": metadata,
            "spec": spec,
        });
        let response = client
            .send(Method::PUT, path, &[], Some(document.to_string()))
            .await?;
        if response.status() == reqwest::StatusCode::CONFLICT {
            continue;
        }
        if !response.status().is_success() {
            return Err(dora_client::failure(response).await.into());
        }
        let written: Value = response.json().await?;
        return Ok((written["object"].clone(), true));
    }
    bail!("{path} kept changing while it was being edited; try again")
}

/// `dora scale KIND NAME --replicas N`.
pub async fn scale(global: &Global, args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let kind = built_in_kind(&args.kind)?;
    if kind != Kind::Workload {
        bail!(
            "{kind} has no replicas to scale; only workloads do: dora scale wk NAME --replicas {}",
            args.replicas
        );
    }
    let mut client = Client::new(global)?;
    let (_, path) = client.object_path(kind, &args.name).await?;
    let replicas = args.replicas;
    let (_, changed) = edit_spec(&client, &path, |spec| {
        let count = &mut spec["replica"]["count"];
        if count.as_u64() == Some(u64::from(replicas)) {
            return false;
        }
        *count = json!(replicas);
        true
    })
    .await?;
    let name = label(kind.name(), &args.name);
    if changed {
        println!("{name} scaled to {replicas}");
    } else {
        println!("{name} already has {replicas} replicas");
    }
    Ok(ExitCode::SUCCESS)
}

/// The client and the path of the node `args` name, for `dora VERB node NAME`.
async fn node_client(
    global: &Global,
    args: &ActionArgs,
    verb: &str,
) -> anyhow::Result<(Client, String)> {
    if built_in_kind(&args.kind)? != Kind::Node {
        bail!("`dora {verb}` acts on a node: dora {verb} node NAME");
    }
    let mut client = Client::new(global)?;
    let place = client.place(Kind::Node, false).await?;
    let path = format!(
        "{}/{}",
        Kind::Node.collection_path(&place.zone, None),
        args.name
    );
    Ok((client, path))
}

/// Sets a node spec's cordon; whether that changed it.
fn set_scheduling_disabled(spec: &mut Value, disabled: bool) -> bool {
    if spec["schedulingDisabled"].as_bool().unwrap_or(false) == disabled {
        return false;
    }
    spec["schedulingDisabled"] = json!(disabled);
    true
}

/// `dora cordon node NAME`: sets `spec.schedulingDisabled`.
pub async fn cordon(global: &Global, args: ActionArgs) -> anyhow::Result<ExitCode> {
    let (client, path) = node_client(global, &args, "cordon").await?;
    let (_, changed) =
        edit_spec(&client, &path, |spec| set_scheduling_disabled(spec, true)).await?;
    let name = label("node", &args.name);
    if changed {
        println!("{name} cordoned");
    } else {
        println!("{name} already cordoned");
    }
    Ok(ExitCode::SUCCESS)
}

/// `dora uncordon node NAME`: undoes both a cordon (`spec.schedulingDisabled`) and a drain
/// (asks the scheduler to lift it).
pub async fn uncordon(global: &Global, args: ActionArgs) -> anyhow::Result<ExitCode> {
    let (client, path) = node_client(global, &args, "uncordon").await?;
    let (node, cordoned) =
        edit_spec(&client, &path, |spec| set_scheduling_disabled(spec, false)).await?;
    let drained = node["status"]["computed"]["drained"]
        .as_bool()
        .unwrap_or(false);
    if drained {
        client
            .json(Method::POST, &format!("{path}/uncordon"), &[], None)
            .await?;
    }
    let name = label("node", &args.name);
    match (cordoned, drained) {
        (true, true) => println!("{name} uncordoned; the end of its drain requested"),
        (true, false) => println!("{name} uncordoned"),
        (false, true) => println!("{name}: the end of its drain requested"),
        (false, false) => println!("{name} was neither cordoned nor drained"),
    }
    Ok(ExitCode::SUCCESS)
}
