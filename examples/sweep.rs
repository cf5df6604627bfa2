//! The `Sweep` controller (`examples/sweep.yaml` defines the kind): one Workload per point of
//! a sweep's parameter grid, at most `parallelism` unfinished at once, counted in its status.
//! It runs anywhere, over the API, as your `dora up` profile's user:
//!
//! ```sh
//! dora apply -f examples/sweep.yaml && cargo run --example sweep
//! ```
//!
//! or `cargo run --example sweep -- --api-server URL --ca CA.pem --token TOKEN`, or
//! `-- --profile NAME`.

use std::sync::Arc;

use anyhow::Context;
use dora_client::{Client, Config};
use dora_crds::Kind;
use dora_runtime::{Action, Cache, Controller, Request};
use dora_store::Row;
use serde_json::{Value, json};

/// Every combination of the parameters' values, as `NAME=value` lists.
fn grid(parameters: &Value) -> Vec<Vec<String>> {
    let mut points = vec![Vec::new()];
    for (name, values) in parameters.as_object().into_iter().flatten() {
        let values = values.as_array().cloned().unwrap_or_default();
        points = points
            .iter()
            .flat_map(|point| {
                values.iter().map(move |value| {
                    let value = value.as_str().map_or(value.to_string(), str::to_string);
                    [point.clone(), vec![format!("{name}={value}")]].concat()
                })
            })
            .collect();
    }
    points
}

/// A Workload's status word, as `dora get` shows it.
fn phase(workload: &Row) -> &'static str {
    let replicas = workload.resource["replica"]["count"].as_u64().unwrap_or(1) as u32;
    let status = dora_crds::decode_written(&workload.computed);
    dora_crds::phase::workload(status.as_ref(), replicas).word
}

async fn reconcile(client: Client, workloads: Cache, request: Request) -> anyhow::Result<Action> {
    let key = &request.key;
    let path = |kind: Kind, name: &str| {
        format!(
            "{}/{name}",
            kind.collection_path(&key.zone, Some(&key.workspace))
        )
    };
    let mine: Vec<Arc<Row>> = workloads
        .list()
        .into_iter()
        .filter(|w| w.key.workspace == key.workspace && w.labels.get("sweep") == Some(&key.name))
        .collect();
    // A deleted sweep's workloads name it as their owner: Dora deletes them.
    let Some(sweep) = request.object else {
        return Ok(Action::await_change());
    };
    let points = grid(&sweep.resource["parameters"]);
    let parallelism = sweep.resource["parallelism"].as_u64().unwrap_or(u64::MAX) as usize;
    let count = |words: &[&str]| mine.iter().filter(|w| words.contains(&phase(w))).count();
    let (succeeded, failed) = (
        count(&["Completed"]),
        count(&["Failed", "CrashLoopBackOff"]),
    );
    let running = count(&["Running", "Starting"]);
    let mut unfinished = mine.len() - succeeded - failed;
    for (index, point) in points.iter().enumerate() {
        let name = format!("{}-{index}", key.name);
        if unfinished >= parallelism || mine.iter().any(|w| w.key.name == name) {
            continue;
        }
        let mut spec = sweep.resource["template"].clone();
        let mut env = spec["config"]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        env.extend(point.iter().map(|pair| json!(pair)));
        spec["config"]["env"] = json!(env);
        let workload = json!({"apiVersion": "v1", "kind": "Workload", "spec": spec,
            "metadata": {"name": name, "zone": key.zone, "workspace": key.workspace,
                         "labels": {"sweep": key.name},
                         "ownerReferences": [{"kind": key.kind, "name": key.name,
                                              "uid": sweep.uid, "controller": true}]}});
        client.apply(workload.to_string()).await?;
        unfinished += 1;
    }
    let own_kind = Kind::parse(&key.kind).context("the kind is no longer defined")?;
    let status = json!({"points": points.len(), "running": running, "succeeded": succeeded,
        "failed": failed, "pending": points.len() - running - succeeded - failed});
    client
        .patch_status(&path(own_kind, &key.name), &status)
        .await?;
    Ok(Action::await_change())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let client = Client::new(Config::from_args(std::env::args())?)?;
    client.learn_kinds().await?;
    let kind = Kind::parse("sweeps").context("apply examples/sweep.yaml first")?;
    let controller =
        Controller::new("sweep", client.clone(), kind, "default").owns_by_reference(Kind::Workload);
    let workloads = controller.cache(Kind::Workload);
    let reconciler = move |request| reconcile(client.clone(), workloads.clone(), request);
    controller
        .run(reconciler, dora_runtime::stop_on_signal())
        .await;
    Ok(())
}
