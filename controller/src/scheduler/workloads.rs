//! The workload reconcile: keeps `<workload>.<i>` for every index below the replica count,
//! replaces containers of an older spec a few at a time, restarts ended containers by their
//! restart policy, stops those past `maxRunTime`, and writes the workload's status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dora_crds::Kind;
use dora_crds::spec::{RestartPolicy, WorkloadSpec};
use dora_crds::status::{
    ContainerReport, ContainerState, CreditAccount, Placement, WorkloadStatus,
};
use dora_store::{
    Event, EventType, ObjectKey, Precondition, Row, StatusColumn, StoreError, now_millis,
};
use futures::StreamExt;

use super::{COMPONENT, Error, Shared, bind, container_head, placement, report};
use dora_runtime::{Action, Request};

/// Container writes at once within one reconcile.
const CONCURRENT_WRITES: usize = 32;
/// How often a workload's status is written when only its counts change.
const COUNTS_EVERY: Duration = Duration::from_secs(1);
/// The longest restart backoff.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);

pub(crate) async fn reconcile(shared: Arc<Shared>, request: Request) -> Result<Action, Error> {
    let key = request.key;
    let members: Vec<Arc<Row>> = {
        let state = shared.state();
        state
            .members
            .get(&key)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| shared.containers.get(k))
                    .filter(|row| !state.is_deleted(row))
                    .collect()
            })
            .unwrap_or_default()
    };
    let Some(workload) = request.object else {
        // Deleted: its containers go (node agents stop what is no longer bound to them).
        let changed = !members.is_empty();
        delete_all(&shared, members).await?;
        let mut state = shared.state();
        state.reasons.remove(&key);
        state.status_written.remove(&key);
        state.wanted.remove(&key);
        return Ok(Action::await_change().changed(changed));
    };
    let spec: WorkloadSpec = match dora_crds::decode(&workload.resource) {
        Ok(spec) => spec,
        Err(e) => {
            malformed(&shared, &workload, &e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let now = now_millis();
    let previous: Option<WorkloadStatus> = dora_crds::decode_written(&workload.computed);
    let paused_by = previous.as_ref().and_then(|p| p.paused_by.clone());
    let out_of_credit = pause_reason(&shared, &workload);
    let paused = out_of_credit
        .clone()
        .or_else(|| paused_by.as_ref().map(|who| format!("paused by {who}")));
    let target = if paused.is_some() {
        0
    } else {
        spec.replica.count.0
    };

    let mut by_index: BTreeMap<u32, Member> = BTreeMap::new();
    for row in members {
        let head = container_head(&row).map(|head| (head.index, head.hash == workload.spec_hash));
        match head {
            Some((index, current)) => {
                let place = placement(&row);
                let report = report(&row, &place);
                by_index.insert(
                    index,
                    Member {
                        current,
                        row,
                        place,
                        state: report.as_ref().map(|r| r.state),
                        report,
                    },
                );
            }
            None => malformed(&shared, &row, "the container spec does not decode").await,
        }
    }

    // Scale down: the highest indices go first.
    let excess: Vec<Arc<Row>> = by_index
        .range(target..)
        .rev()
        .map(|(_, member)| member.row.clone())
        .collect();
    let mut changed = !excess.is_empty();
    delete_all(&shared, excess).await?;
    by_index.retain(|index, _| *index < target);

    let mut requeue: Option<Duration> = None;
    let mut soonest = |after: Duration| {
        requeue = Some(requeue.map_or(after, |r: Duration| r.min(after)));
    };

    // Rolling update: stale containers that are not up (waiting for a node, or ended) are
    // replaced at once; those that are up only while `target - maxUnavailable` others stay
    // up. Being conservative both ways with a cache that lags: a stale container counts as up
    // while it is bound and not known to have ended, a new one only once it is reported
    // running.
    let up = by_index
        .values()
        .filter(|m| if m.current { m.is_running() } else { m.is_up() })
        .count() as u32;
    let mut budget = up.saturating_sub(target.saturating_sub(spec.strategy.max_unavailable.0));
    let mut replace = Vec::new();
    for (index, member) in &by_index {
        if member.current {
            continue;
        }
        if member.is_up() {
            if budget == 0 {
                continue;
            }
            budget -= 1;
        }
        replace.push((*index, member.row.clone()));
    }
    if !replace.is_empty() {
        changed = true;
        delete_all(
            &shared,
            replace.iter().map(|(_, row)| row.clone()).collect(),
        )
        .await?;
        for (index, _) in &replace {
            by_index.remove(index);
        }
    }

    // Ended containers, restarts and run-time limits.
    let mut finished = 0;
    let mut failed = 0;
    let mut stops = Vec::new();
    let mut restarts = Vec::new();
    for member in by_index.values() {
        let Some(report) = &member.report else {
            continue;
        };
        let place = &member.place;
        if report.state.is_final() {
            let restart = place.stop.is_none()
                && match spec.config.restart_policy {
                    RestartPolicy::Never => false,
                    RestartPolicy::OnFailure => report.state == ContainerState::Failed,
                    RestartPolicy::Always => true,
                };
            if restart {
                let delay = restart_delay(shared.config.restart_backoff, place.restarts);
                let ended = report.finished_at.unwrap_or(now);
                restarts.push((
                    member.row.clone(),
                    place.clone(),
                    ended + delay.as_millis() as i64,
                ));
            } else {
                finished += 1;
                if report.state == ContainerState::Failed {
                    failed += 1;
                }
            }
        } else if report.state == ContainerState::Running
            && place.stop.is_none()
            && let (Some(limit), Some(started)) = (spec.config.max_run_time, report.started_at)
        {
            let deadline = started + limit.0.as_millis() as i64;
            if deadline <= now {
                stops.push((member.row.clone(), place.clone()));
            } else {
                soonest(Duration::from_millis((deadline - now) as u64));
            }
        }
    }
    changed |= !stops.is_empty() || !restarts.is_empty();
    for (row, mut place) in stops {
        place.stop = Some("MaxRunTime".into());
        bind(&shared, &row, &place).await?;
        event(
            &shared,
            &row.key,
            EventType::Normal,
            "MaxRunTime",
            "stopping: it ran for its maxRunTime".into(),
        )
        .await;
    }
    let restarts_at: Vec<i64> = restarts.iter().map(|(_, _, at)| *at).collect();
    for (row, old, not_before) in restarts {
        let place = Placement {
            epoch: old.epoch,
            restarts: old.restarts + 1,
            not_before: Some(not_before),
            ..Placement::default()
        };
        bind(&shared, &row, &place).await?;
        event(
            &shared,
            &row.key,
            EventType::Normal,
            "Restarting",
            format!(
                "restart {} in {} s",
                place.restarts,
                (not_before - now).max(0) / 1000
            ),
        )
        .await;
    }

    // Missing replicas.
    let missing: Vec<u32> = (0..target).filter(|i| !by_index.contains_key(i)).collect();
    {
        let mut state = shared.state();
        if missing.is_empty() {
            state.wanted.remove(&key);
        } else {
            state
                .wanted
                .insert(key.clone(), missing.iter().copied().collect());
        }
    }
    shared.wake.notify_one();

    let backing_off = |m: &&Member| m.place.node.is_none() && m.place.not_before > Some(now);
    let next_restart = by_index
        .values()
        .filter(backing_off)
        .filter_map(|m| m.place.not_before)
        .chain(restarts_at.iter().copied())
        .min();
    let backoff = by_index.values().filter(backing_off).count() as u32 + restarts_at.len() as u32;
    if let Some(at) = next_restart {
        // The status says CrashLoopBackOff until then.
        soonest(Duration::from_millis(at.saturating_sub(now).max(0) as u64));
    }
    let pending = by_index
        .values()
        .filter(|m| m.place.node.is_none() && !backing_off(m))
        .count() as u32
        + missing.len() as u32;
    let waiting = shared
        .state()
        .reasons
        .get(&key)
        .cloned()
        .filter(|_| pending > 0);
    let status = WorkloadStatus {
        desired: target,
        ready: by_index.values().filter(|m| m.is_running()).count() as u32,
        updated: by_index.values().filter(|m| m.current).count() as u32 + missing.len() as u32,
        pending,
        finished,
        failed,
        backoff,
        next_restart,
        out_of_credit: out_of_credit.is_some(),
        reason: waiting.as_ref().map(|w| w.reason.clone()),
        estimated_start: waiting.and_then(|w| w.estimated_start),
        paused,
        paused_by,
        observed_generation: workload.generation,
        // Judged from the rest by `write_status`, against the previous conditions.
        conditions: Vec::new(),
    };
    match write_status(&shared, &workload, status).await? {
        StatusWrite::Unchanged => {}
        StatusWrite::Written => changed = true,
        StatusWrite::Later(wait) => soonest(wait),
    }
    Ok(requeue
        .map_or(Action::await_change(), Action::requeue)
        .changed(changed))
}

/// A container of the workload, decoded once per reconcile.
struct Member {
    row: Arc<Row>,
    /// Made from the workload's current spec.
    current: bool,
    place: Placement,
    report: Option<ContainerReport>,
    /// What its node reports for its current binding.
    state: Option<ContainerState>,
}

impl Member {
    fn is_running(&self) -> bool {
        self.state == Some(ContainerState::Running)
    }

    /// Bound and not known to have ended.
    fn is_up(&self) -> bool {
        self.place.node.is_some() && !self.state.is_some_and(|s| s.is_final())
    }
}

fn restart_delay(base: Duration, restarts: u32) -> Duration {
    base.saturating_mul(1u32 << restarts.min(16))
        .min(MAX_RESTART_BACKOFF)
}

/// Why the workload must not run now: its owner is out of credits in the zone.
fn pause_reason(shared: &Shared, workload: &Row) -> Option<String> {
    let key = ObjectKey::new(Kind::Usercredit, &workload.key.zone, "", &workload.owner);
    let account: CreditAccount = dora_crds::decode(&shared.credits.get(&key)?.computed).ok()?;
    account.out_of_credit.then(|| {
        format!(
            "{} is out of credits in zone {} until {}",
            workload.owner,
            workload.key.zone,
            dora_runtime::time::rfc3339(account.reset)
        )
    })
}

/// Deletes container rows; until the cache shows them gone, reconciles skip them.
async fn delete_all(shared: &Shared, rows: Vec<Arc<Row>>) -> Result<(), Error> {
    let results: Vec<Result<(), StoreError>> = futures::stream::iter(rows)
        .map(|row| async move {
            match shared.store.delete(&row.key, Precondition::None).await {
                Ok(_) | Err(StoreError::NotFound) => {
                    shared.state().deleted.insert(
                        row.key.clone(),
                        (row.uid.clone(), std::time::Instant::now()),
                    );
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(())
}

/// What [`write_status`] did.
enum StatusWrite {
    Unchanged,
    Written,
    /// A change of counts only, to be written after this.
    Later(Duration),
}

/// Writes the workload's status if it changed. A change of counts only is written at most
/// once per [`COUNTS_EVERY`] (a workload of many replicas would otherwise write once per
/// container event).
async fn write_status(
    shared: &Shared,
    workload: &Row,
    mut status: WorkloadStatus,
) -> Result<StatusWrite, Error> {
    let previous: Option<WorkloadStatus> = dora_crds::decode_written(&workload.computed);
    let before = previous
        .as_ref()
        .map_or(&[][..], |p| p.conditions.as_slice());
    let now = dora_runtime::time::rfc3339(now_millis());
    status.conditions = dora_crds::phase::workload_conditions(&status)
        .into_iter()
        .map(|condition| condition.since(before, &now))
        .collect();
    if previous.as_ref() == Some(&status) {
        return Ok(StatusWrite::Unchanged);
    }
    let counts_only = previous.as_ref().is_some_and(|p| {
        p.reason == status.reason
            && p.paused == status.paused
            && p.backoff == status.backoff
            && p.failed == status.failed
            && p.observed_generation == status.observed_generation
            && p.ready != status.desired
            && status.ready != status.desired
    });
    {
        let mut state = shared.state();
        let last = state.status_written.get(&workload.key).copied();
        if counts_only
            && let Some(wait) = last.and_then(|at| COUNTS_EVERY.checked_sub(at.elapsed()))
        {
            return Ok(StatusWrite::Later(wait));
        }
        state
            .status_written
            .insert(workload.key.clone(), std::time::Instant::now());
    }
    let old_reason = previous.as_ref().and_then(|p| p.reason.clone());
    if status.reason.is_some() && status.reason != old_reason {
        let message = status.reason.clone().unwrap_or_default();
        event(
            shared,
            &workload.key,
            EventType::Warning,
            "FailedScheduling",
            message,
        )
        .await;
    }
    // Pauses asked for with `dora pause` have their own events, from the action.
    let was_out = previous.as_ref().is_some_and(|p| p.out_of_credit);
    match (was_out, status.out_of_credit, &status.paused) {
        (false, true, Some(why)) => {
            event(
                shared,
                &workload.key,
                EventType::Warning,
                "Paused",
                why.clone(),
            )
            .await
        }
        (true, false, _) => {
            event(
                shared,
                &workload.key,
                EventType::Normal,
                "Resumed",
                "resumed: credits are available again".into(),
            )
            .await
        }
        _ => {}
    }
    let value = dora_crds::encode(&status)?;
    match shared
        .store
        .put_status(
            &workload.key,
            StatusColumn::Computed,
            Some(workload.computed_version),
            value,
            Some(&shared.fence),
        )
        .await
    {
        Ok(_) => Ok(StatusWrite::Written),
        // The cache is behind our own previous write; its change reconciles again.
        Err(StoreError::Conflict { .. }) => Ok(StatusWrite::Unchanged),
        Err(e) => Err(e.into()),
    }
}

/// Reports a row that does not decode, once per row version; the row is skipped.
async fn malformed(shared: &Shared, row: &Row, why: &str) {
    tracing::warn!(key = %row.key, error = why, "skipping a malformed row");
    let reported = row.computed.get("malformed").and_then(|v| v.as_u64()) == Some(row.version);
    if reported {
        return;
    }
    event(
        shared,
        &row.key,
        EventType::Warning,
        "Malformed",
        format!("skipped: {why}"),
    )
    .await;
    let mark = serde_json::json!({ "malformed": row.version, "error": why });
    if let Err(e) = shared
        .store
        .put_status(
            &row.key,
            StatusColumn::Computed,
            Some(row.computed_version),
            mark,
            Some(&shared.fence),
        )
        .await
    {
        tracing::warn!(key = %row.key, error = %e, "could not mark a malformed row");
    }
}

pub(crate) async fn event(
    shared: &Shared,
    key: &ObjectKey,
    event_type: EventType,
    reason: &str,
    message: String,
) {
    let event = Event::new(key, event_type, reason, message, COMPONENT);
    if let Err(e) = shared.store.append_event(event).await {
        tracing::warn!(%key, error = %e, "could not record an event");
    }
}
