//! Actions addressed to the scheduler: `pause` and `resume` of a workload, `drain` and
//! `uncordon` of a node. Each is recorded in the scheduler's own `computed` columns (who
//! paused, whether drained), so it outlives the action's expiry; applying one twice changes
//! nothing, so a new leader simply replays the unexpired ones.

use std::sync::Arc;
use std::time::Duration;

use dora_crds::Kind;
use dora_crds::status::{NodeCondition, WorkloadStatus};
use dora_store::{ActionRecord, EventType, StatusColumn, StoreError};
use tokio_util::sync::CancellationToken;

use super::workloads::event;
use super::{Error, Shared};

const POLL: Duration = Duration::from_millis(500);
const ATTEMPTS: usize = 5;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), Error> {
    let mut after: [Option<String>; 2] = [None, None];
    loop {
        for (i, kind) in [Kind::Workload, Kind::Node].into_iter().enumerate() {
            let actions = shared
                .store
                .actions(&shared.config.zone, kind.name(), after[i].as_deref())
                .await?;
            for action in actions {
                if action.destination == super::COMPONENT {
                    apply(&shared, &action).await?;
                }
                after[i] = Some(action.id);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn apply(shared: &Shared, action: &ActionRecord) -> Result<(), Error> {
    let by = action.payload["by"]
        .as_str()
        .unwrap_or("someone")
        .to_string();
    for _ in 0..ATTEMPTS {
        let Some(row) = shared.store.get(&action.key).await? else {
            return Ok(());
        };
        let next = match action.action.as_str() {
            "pause" | "resume" => {
                let mut status: WorkloadStatus =
                    dora_crds::decode(&row.computed).unwrap_or_default();
                let paused_by = (action.action == "pause").then(|| by.clone());
                if status.paused_by == paused_by {
                    return Ok(());
                }
                status.paused_by = paused_by;
                dora_crds::encode(&status)?
            }
            "drain" | "uncordon" => {
                let mut condition: NodeCondition =
                    dora_crds::decode(&row.computed).unwrap_or_default();
                let drained = action.action == "drain";
                if condition.drained == drained {
                    return Ok(());
                }
                condition.drained = drained;
                dora_crds::encode(&condition)?
            }
            other => {
                tracing::warn!(action = other, key = %action.key, "unknown action; ignored");
                return Ok(());
            }
        };
        match shared
            .store
            .put_status(
                &action.key,
                StatusColumn::Computed,
                Some(row.computed_version),
                next,
                Some(&shared.fence),
            )
            .await
        {
            Ok(_) => {
                let reason = match action.action.as_str() {
                    "pause" => "Paused",
                    "resume" => "Resumed",
                    "drain" => "Draining",
                    _ => "Uncordoned",
                };
                let message = format!("{} by {by}", action.action);
                event(shared, &action.key, EventType::Normal, reason, message).await;
                if action.key.kind == Kind::Workload.name() {
                    shared.handle.enqueue(action.key.clone());
                }
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    tracing::warn!(key = %action.key, action = %action.action, "action kept conflicting; retried at the next leader");
    Ok(())
}
