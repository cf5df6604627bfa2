//! Node readiness: a node whose heartbeat is older than the grace period is marked NotReady;
//! once it has been NotReady for `reschedule_after` (or at once when it is drained), its
//! containers are unbound so the placer moves them, each with a new epoch that the returning
//! node cannot match.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dora_crds::status::{NodeCondition, Placement};
use dora_store::{EventType, StatusColumn, now_millis};
use tokio_util::sync::CancellationToken;

use super::workloads::event;
use super::{Error, Shared, bind, node_info, placement};

const CHECK_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), Error> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        check(&shared).await?;
    }
}

async fn check(shared: &Shared) -> Result<(), Error> {
    let now = now_millis();
    let grace = shared.config.node_grace;
    let mut lost = HashSet::new();
    for row in shared.nodes.list() {
        let Some(info) = node_info(&row, grace) else {
            continue;
        };
        let ready = info.ready;
        shared.state().ledger.set_node(info);
        let condition: Option<NodeCondition> = dora_crds::decode(&row.computed).ok();
        match condition {
            Some(condition) if condition.ready == ready => {
                let lost_long = !ready
                    && now - condition.since >= shared.config.reschedule_after.as_millis() as i64;
                if lost_long || condition.drained {
                    lost.insert(row.key.name.clone());
                }
            }
            previous => {
                let condition = NodeCondition {
                    ready,
                    reason: (!ready)
                        .then(|| format!("NodeLost: no heartbeat for {} s", grace.as_secs())),
                    since: now,
                    drained: previous.is_some_and(|c| c.drained),
                };
                shared
                    .store
                    .put_status(
                        &row.key,
                        StatusColumn::Computed,
                        Some(row.computed_version),
                        dora_crds::encode(&condition)?,
                        Some(&shared.fence),
                    )
                    .await?;
                let (kind, reason, message) = if ready {
                    (
                        EventType::Normal,
                        "NodeReady",
                        "heartbeats arrive".to_string(),
                    )
                } else {
                    (
                        EventType::Warning,
                        "NodeNotReady",
                        format!(
                            "no heartbeat for {} s; its containers move in {} s",
                            grace.as_secs(),
                            shared.config.reschedule_after.as_secs()
                        ),
                    )
                };
                event(shared, &row.key, kind, reason, message).await;
            }
        }
    }
    if lost.is_empty() {
        return Ok(());
    }
    for row in shared.containers.list() {
        let old = placement(&row);
        let Some(node) = old.node.as_ref().filter(|n| lost.contains(*n)) else {
            continue;
        };
        let moved = Placement {
            epoch: old.epoch,
            restarts: old.restarts,
            ..Placement::default()
        };
        if bind(shared, &row, &moved).await.is_ok() {
            event(
                shared,
                &row.key,
                EventType::Warning,
                "Rescheduled",
                format!("node {node} is lost or drained; placing it elsewhere"),
            )
            .await;
        }
    }
    Ok(())
}
