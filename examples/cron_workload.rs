//! The `CronWorkload` controller (`examples/cron.yaml` defines the kind): a Workload from its
//! template on its schedule, with a concurrency policy and a history limit, and its last and
//! next run in its status. It runs anywhere, over the API, as your `dora up` profile's user:
//!
//! ```sh
//! dora apply -f examples/cron.yaml && cargo run --example cron_workload
//! ```
//!
//! or `cargo run --example cron_workload -- --api-server URL --ca CA.pem --token TOKEN`, or
//! `-- --profile NAME`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use dora_client::{Client, Config, reqwest::Method};
use dora_crds::Kind;
use dora_runtime::{Action, Cache, Controller, Request};
use dora_store::Row;
use serde_json::json;

fn finished(workload: &Row) -> bool {
    let replicas = workload.resource["replica"]["count"].as_u64().unwrap_or(1) as u32;
    let status = dora_crds::decode_written(&workload.computed);
    let word = dora_crds::phase::workload(status.as_ref(), replicas).word;
    matches!(word, "Completed" | "Failed")
}

fn time(text: &serde_json::Value) -> Option<DateTime<Utc>> {
    text.as_str()?.parse().ok()
}

async fn reconcile(client: Client, workloads: Cache, request: Request) -> anyhow::Result<Action> {
    let Some(cron) = request.object else {
        return Ok(Action::await_change());
    };
    let key = &request.key;
    let path = |kind: Kind, name: &str| {
        format!(
            "{}/{name}",
            kind.collection_path(&key.zone, Some(&key.workspace))
        )
    };
    let schedule: croner::Cron = cron.resource["schedule"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    let mut runs: Vec<Arc<Row>> = workloads
        .list()
        .into_iter()
        .filter(|w| w.key.workspace == key.workspace && w.labels.get("cron") == Some(&key.name))
        .collect();
    runs.sort_by_key(|w| w.created);
    let now = Utc::now();
    let created = DateTime::from_timestamp_millis(cron.created).unwrap_or(now);
    let last = time(&cron.computed["lastRun"]);
    let due = schedule.find_next_occurrence(&last.unwrap_or(created), false)?;
    let mut last_run = last;
    if due <= now {
        let active: Vec<&Arc<Row>> = runs.iter().filter(|w| !finished(w)).collect();
        let policy = cron.resource["concurrencyPolicy"]
            .as_str()
            .unwrap_or("Allow");
        if policy == "Replace" {
            for run in &active {
                client
                    .send(
                        Method::DELETE,
                        &path(Kind::Workload, &run.key.name),
                        &[],
                        None,
                    )
                    .await?;
            }
        }
        if policy != "Forbid" || active.is_empty() {
            let name = format!("{}-{}", key.name, due.timestamp());
            let workload = json!({"apiVersion": "v1", "kind": "Workload",
                "spec": cron.resource["template"],
                "metadata": {"name": name, "zone": key.zone, "workspace": key.workspace,
                             "labels": {"cron": key.name},
                             "ownerReferences": [{"kind": key.kind, "name": key.name,
                                                  "uid": cron.uid, "controller": true}]}});
            client.apply(workload.to_string()).await?;
        }
        last_run = Some(due);
    }
    let history = cron.resource["historyLimit"].as_u64().unwrap_or(3) as usize;
    let done: Vec<&Arc<Row>> = runs.iter().filter(|w| finished(w)).collect();
    for old in done.iter().take(done.len().saturating_sub(history)) {
        client
            .send(
                Method::DELETE,
                &path(Kind::Workload, &old.key.name),
                &[],
                None,
            )
            .await?;
    }
    let next = schedule.find_next_occurrence(&last_run.unwrap_or(created).max(now), false)?;
    let own_kind = Kind::parse(&key.kind).context("the kind is no longer defined")?;
    let status = json!({"lastRun": last_run.map(|t| t.to_rfc3339()), "nextRun": next.to_rfc3339(),
        "active": runs.len() - done.len()});
    client
        .patch_status(&path(own_kind, &key.name), &status)
        .await?;
    let wait = (next - Utc::now()).to_std().unwrap_or_default();
    Ok(Action::requeue(wait.max(Duration::from_millis(100))))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let client = Client::new(Config::from_args(std::env::args())?)?;
    client.learn_kinds().await?;
    let kind = Kind::parse("cronworkloads").context("apply examples/cron.yaml first")?;
    let controller =
        Controller::new("cron", client.clone(), kind, "default").owns_by_reference(Kind::Workload);
    let workloads = controller.cache(Kind::Workload);
    let reconciler = move |request| reconcile(client.clone(), workloads.clone(), request);
    controller
        .run(reconciler, dora_runtime::stop_on_signal())
        .await;
    Ok(())
}
