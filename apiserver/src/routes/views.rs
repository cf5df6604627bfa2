//! The read-only views GPU and CPU: one item per GPU, and one per node's CPUs, of a zone,
//! made from the nodes' reports and the containers bound to them.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::spec::{NodeSpec, Verb, WorkloadClass};
use dora_crds::status::{ContainerReport, NodeCondition, NodeReport, Placement};
use dora_crds::{Kind, decode_written};
use dora_store::{ListQuery, Row, StoreError};
use serde_json::{Value, json};

use super::{MAX_PAGE, json_response};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity};

/// What the containers bound to one node hold there.
#[derive(Default)]
struct Held {
    /// GPU minor number → the container (`workspace/name`) that holds it.
    gpus: HashMap<u32, String>,
    millicores: u64,
}

/// `GET` of a view: the list, or one item by name (`<node>.<minor>` for a GPU, the node's
/// name for its CPUs).
pub(super) async fn get(
    state: &AppState,
    identity: &Identity,
    target: &Target,
) -> Result<Response, ApiError> {
    state
        .service
        .authorize(identity, Verb::Get, target.kind, &target.zone, "")?;
    let nodes = list_all(state, Kind::Node, &target.zone).await?;
    let held = held(&list_all(state, Kind::Container, &target.zone).await?);
    let none = Held::default();
    let mut items = Vec::new();
    for node in &nodes {
        let Some(report) = decode_written::<NodeReport>(&node.observed) else {
            continue;
        };
        let held = held.get(&node.key.name).unwrap_or(&none);
        let allowed = |class| accepts(node, class);
        if target.kind == Kind::Gpu {
            for gpu in &report.gpus {
                let container = held.gpus.get(&gpu.minor);
                items.push(item(
                    target,
                    format!("{}.{}", node.key.name, gpu.minor),
                    json!({
                        "node": node.key.name,
                        "minor": gpu.minor,
                        "productName": gpu.product_name,
                        "memoryBytes": gpu.memory_bytes,
                        "memoryUsedBytes": gpu.memory_used_bytes,
                        "temperature": gpu.temperature,
                        "powerWatts": gpu.power_watts,
                        "utilization": gpu.utilization,
                        "booked": container.is_some(),
                        "container": container,
                        "allowed": allowed(WorkloadClass::Gpu),
                    }),
                ));
            }
        } else {
            items.push(item(
                target,
                node.key.name.clone(),
                json!({
                    "node": node.key.name,
                    "productName": report.cpu.product_name,
                    "count": report.cpu.count,
                    "bookedMillicores": held.millicores,
                    "allowed": allowed(WorkloadClass::Cpu),
                }),
            ));
        }
    }
    if let Some(name) = &target.name {
        return items
            .into_iter()
            .find(|item| item["metadata"]["name"] == *name)
            .map(|item| json_response(StatusCode::OK, &item))
            .ok_or_else(|| ApiError::object_not_found(&target.key()));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"apiVersion": dora_crds::API_VERSION, "kind": format!("{}List", target.kind), "metadata": {}, "items": items}),
    ))
}

fn item(target: &Target, name: String, mut status: Value) -> Value {
    // What the node does not report is left out, not shown as null.
    if let Value::Object(fields) = &mut status {
        fields.retain(|_, value| !value.is_null());
    }
    json!({
        "apiVersion": dora_crds::API_VERSION,
        "kind": target.kind.name(),
        "metadata": {"name": name, "zone": target.zone},
        "status": status,
    })
}

/// Whether new work of `class` may go to the node: it is ready, neither cordoned nor
/// drained, and its `allow` list has the class.
fn accepts(node: &Row, class: WorkloadClass) -> bool {
    let spec: NodeSpec = decode_written(&node.resource).unwrap_or_default();
    let condition: Option<NodeCondition> = decode_written(&node.computed);
    condition.is_some_and(|c| c.ready && !c.drained)
        && !spec.scheduling_disabled
        && spec.allow.contains(&class)
}

/// What the containers that hold resources hold, per node.
fn held(containers: &[Row]) -> HashMap<String, Held> {
    let mut held: HashMap<String, Held> = HashMap::new();
    for row in containers {
        let Some(place) = decode_written::<Placement>(&row.computed) else {
            continue;
        };
        let report: Option<ContainerReport> = decode_written(&row.observed);
        let Some(node) = place.node.as_ref().filter(|_| place.holds(report.as_ref())) else {
            continue;
        };
        let entry = held.entry(node.clone()).or_default();
        entry.millicores += place.millicpu;
        let name = format!("{}/{}", row.key.workspace, row.key.name);
        for minor in &place.gpus {
            entry.gpus.insert(*minor, name.clone());
        }
    }
    held
}

/// Every row of a kind in a zone, page by page.
async fn list_all(state: &AppState, kind: Kind, zone: &str) -> Result<Vec<Row>, StoreError> {
    let mut query = ListQuery {
        kind: kind.name().into(),
        scope: kind.scope(),
        zone: zone.into(),
        workspace: None,
        after: None,
        limit: MAX_PAGE,
    };
    let mut rows = Vec::new();
    loop {
        let page = state.service.store.list(&query).await?;
        rows.extend(page.rows);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(rows),
        }
    }
}
