//! `dora queue`: the zone's waiting workloads in the scheduler's order, as Slurm's `squeue`.

use dora_crds::Kind;
use reqwest::Method;
use serde_json::Value;

use crate::args::{Format, Global, QueueArgs};
use crate::client::Client;
use crate::output;

pub async fn run(global: &Global, args: QueueArgs) -> anyhow::Result<()> {
    let mut client = Client::new(global)?;
    let place = client.place(Kind::Workload, true).await?;
    let queue = client
        .json(
            Method::GET,
            &format!("/v1/zones/{}/queue", place.zone),
            &[],
            None,
        )
        .await?;
    let empty = queue["items"].as_array().is_none_or(Vec::is_empty);
    if empty && matches!(args.output, Format::Table | Format::Wide) {
        eprintln!("Nothing waits in zone {}.", place.zone);
        return Ok(());
    }
    output::print_items(
        args.output,
        &queue,
        &[
            "POSITION",
            "WORKSPACE",
            "NAME",
            "PRIORITY",
            "PENDING",
            "START",
            "AGE",
            "REASON",
        ],
        row,
    )
}

fn row(item: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    };
    vec![
        text(&item["position"]),
        text(&item["workspace"]),
        text(&item["name"]),
        text(&item["priority"]),
        format!("{}/{}", text(&item["pending"]), text(&item["desired"])),
        item["estimatedStart"]
            .as_str()
            .unwrap_or("<unknown>")
            .to_string(),
        output::age(&item["created"]),
        text(&item["reason"]),
    ]
}
