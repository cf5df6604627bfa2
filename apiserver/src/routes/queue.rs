//! `GET /v1/zones/{zone}/queue`: the zone's waiting workloads in the order the scheduler places
//! them, as Slurm's `squeue` shows a partition. The order is the scheduler's own
//! ([`Scheduling::rank`]); why each waits and when it may start are what the scheduler last
//! wrote in its status.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::{Scheduling, Verb, WorkloadSpec};
use dora_crds::status::WorkloadStatus;
use dora_store::{ListQuery, Row};
use serde_json::json;

use super::access::{authorize_read, check_zone, visible};
use super::json_response;
use super::params::{NoParams, Params};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity, render};

const PAGE: usize = 5000;

pub(super) async fn queue(
    identity: Identity,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    let Path(zone) = path.map_err(crate::path::rejection)?;
    let target = Target {
        kind: Kind::Workload,
        zone: zone.clone(),
        workspace: None,
        name: None,
    };
    check_zone(&state, &target)?;
    authorize_read(&state, &identity, Verb::Get, &target)?;
    let mut query = ListQuery {
        kind: Kind::Workload.name().into(),
        scope: Kind::Workload.scope(),
        zone: zone.clone(),
        workspace: None,
        after: None,
        limit: PAGE,
    };
    let mut waiting: Vec<(Scheduling, WorkloadStatus, Row)> = Vec::new();
    loop {
        let page = state.service.store.list(&query).await?;
        for row in page.rows {
            let Some(status) = dora_crds::decode_written::<WorkloadStatus>(&row.computed) else {
                continue;
            };
            if status.pending == 0 || status.paused.is_some() {
                continue;
            }
            let Ok(spec) = dora_crds::decode::<WorkloadSpec>(&row.resource) else {
                continue;
            };
            waiting.push((spec.scheduling, status, row));
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    waiting.sort_by(|(a, _, a_row), (b, _, b_row)| {
        let a = a.rank(a_row.created, &a_row.key.workspace, &a_row.key.name);
        a.cmp(&b.rank(b_row.created, &b_row.key.workspace, &b_row.key.name))
    });
    // Positions count every waiting workload, also those the caller may not see.
    let items: Vec<_> = waiting
        .iter()
        .enumerate()
        .filter(|(_, (_, _, row))| visible(&state, &identity, Verb::Get, &row.key))
        .map(|(i, (scheduling, status, row))| {
            json!({
                "position": i + 1,
                "workspace": row.key.workspace,
                "name": row.key.name,
                "priority": scheduling.priority,
                "pending": status.pending,
                "desired": status.desired,
                "reason": status.reason,
                "estimatedStart": status.estimated_start.map(render::timestamp),
                "created": render::timestamp(row.created),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"apiVersion": dora_crds::API_VERSION, "kind": "Queue", "metadata": {"zone": zone}, "items": items}),
    ))
}
