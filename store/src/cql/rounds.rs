//! Group commit of compare-and-sets. Paxos orders the conditional writes to one partition one
//! after another, and concurrent ones contend: each loser backs off and starts its round again.
//! Every container of a zone lives in one partition, so a busy zone would spend most of its
//! rounds losing. Instead, conditional writes queue here per partition, one round is in flight
//! per partition at a time, and whatever queued while a round ran goes as the next one: a
//! conditional batch, one Paxos round for many writes. Writes fenced by a controller's lease
//! are checked against the lease once per round, just before it is sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures::future::BoxFuture;
use scylla::client::session::Session;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{self, JoinSet};

use super::statements::serial_of;
use super::{CqlConfig, column_int, unavailable};
use crate::{Fence, ObjectKey, StoreError, Table};

/// The most writes in one conditional batch.
const MOST_WRITES: usize = 256;

/// The partition a row lives in: its table and the values of its partition key columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Partition {
    table: Table,
    kind: String,
    /// The zone, or the workspace of a workspaced table.
    within: String,
}

impl Partition {
    fn of(key: &ObjectKey) -> Self {
        let table = key.table();
        let within = match table {
            Table::Resources => String::new(),
            Table::WorkspacedResources => key.workspace.clone(),
            Table::ZonedResources | Table::ZonedWorkspacedResources | Table::Containers => {
                key.zone.clone()
            }
        };
        Partition {
            table,
            kind: key.kind.clone(),
            within,
        }
    }
}

/// One conditional write of one row.
struct Write {
    row: ObjectKey,
    statement: PreparedStatement,
    values: Vec<CqlValue>,
    /// About how many bytes the write carries.
    bytes: usize,
    fence: Option<Fence>,
    applied: oneshot::Sender<Result<bool, StoreError>>,
}

/// Sends conditional writes to the task that groups them into rounds.
pub(super) struct Rounds {
    writes: mpsc::UnboundedSender<(Partition, Write)>,
}

impl Rounds {
    /// Starts the task; it ends when `Rounds` is dropped.
    pub(super) fn start(
        session: Arc<Session>,
        config: &CqlConfig,
        lease: &PreparedStatement,
    ) -> Self {
        let (writes, queued) = mpsc::unbounded_channel();
        let limits = Limits {
            batch_bytes: config.batch_bytes,
            zoned: batch_template(config, Table::ZonedResources),
            cluster_wide: batch_template(config, Table::Resources),
            lease: lease.clone(),
        };
        tokio::spawn(dispatch(session, limits, queued));
        Rounds { writes }
    }

    /// A compare-and-set of the row `key`: whether it applied. With a fence, refused unless
    /// the lease epoch is still current.
    pub(super) async fn write(
        &self,
        key: &ObjectKey,
        statement: &PreparedStatement,
        values: Vec<CqlValue>,
        fence: Option<&Fence>,
    ) -> Result<bool, StoreError> {
        let (applied, answer) = oneshot::channel();
        let write = Write {
            row: key.clone(),
            statement: statement.clone(),
            bytes: values.iter().map(value_bytes).sum(),
            values,
            fence: fence.cloned(),
            applied,
        };
        self.writes
            .send((Partition::of(key), write))
            .map_err(|_| StoreError::Unavailable("the CQL store is shutting down".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("a conditional write was dropped unanswered".into())
        })?
    }
}

struct Limits {
    batch_bytes: usize,
    /// An empty batch with the store's consistency and timeout, for a zone's own rows.
    zoned: Batch,
    /// The same for cluster-wide rows (SERIAL, whatever the store's serial consistency).
    cluster_wide: Batch,
    /// Reads a lease's holder, epoch and expiry.
    lease: PreparedStatement,
}

fn batch_template(config: &CqlConfig, table: Table) -> Batch {
    // One partition: Cassandra applies it atomically without the batch log.
    let mut batch = Batch::new(BatchType::Unlogged);
    batch.set_consistency(config.consistency);
    batch.set_serial_consistency(Some(serial_of(table, config)));
    batch.set_request_timeout(Some(config.request_timeout));
    batch.set_is_idempotent(false);
    batch
}

fn value_bytes(value: &CqlValue) -> usize {
    match value {
        CqlValue::Text(s) | CqlValue::Ascii(s) => s.len() + 4,
        _ => 12,
    }
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Write>,
    busy: bool,
}

async fn dispatch(
    session: Arc<Session>,
    limits: Limits,
    mut queued: mpsc::UnboundedReceiver<(Partition, Write)>,
) {
    let limits = Arc::new(limits);
    let mut lanes: HashMap<Partition, Lane> = HashMap::new();
    let mut running: JoinSet<()> = JoinSet::new();
    let mut held: HashMap<task::Id, Partition> = HashMap::new();
    loop {
        let ready = tokio::select! {
            next = queued.recv() => match next {
                Some((partition, write)) => {
                    let lane = lanes.entry(partition.clone()).or_default();
                    lane.queue.push_back(write);
                    partition
                }
                None => return,
            },
            Some(done) = running.join_next_with_id() => {
                // A round that panicked dropped its writers' senders, which answers them.
                let id = done.map_or_else(|e| e.id(), |(id, ())| id);
                let Some(partition) = held.remove(&id) else {
                    continue;
                };
                if let Some(lane) = lanes.get_mut(&partition) {
                    lane.busy = false;
                }
                partition
            }
        };
        let Some(lane) = lanes.get_mut(&ready) else {
            continue;
        };
        if lane.busy {
            continue;
        }
        if lane.queue.is_empty() {
            lanes.remove(&ready);
            continue;
        }
        lane.busy = true;
        let round = next_round(&mut lane.queue, limits.batch_bytes);
        let (session, limits) = (session.clone(), limits.clone());
        let handle = running.spawn(async move { run_round(&session, &limits, round).await });
        held.insert(handle.id(), ready);
    }
}

/// The writes of the next round, from the front of the queue: at most one per row (a batch
/// checks every condition against the rows as they were before it), and within the size limit.
fn next_round(queue: &mut VecDeque<Write>, batch_bytes: usize) -> Vec<Write> {
    let mut round = Vec::new();
    let mut rows = HashSet::new();
    let mut bytes = 0;
    while let Some(write) = queue.front() {
        let full = round.len() == MOST_WRITES
            || (!round.is_empty() && bytes + write.bytes > batch_bytes)
            || rows.contains(&write.row);
        if full {
            break;
        }
        bytes += write.bytes;
        rows.insert(write.row.clone());
        round.extend(queue.pop_front());
    }
    round
}

async fn run_round(session: &Session, limits: &Limits, round: Vec<Write>) {
    let round = fenced(session, limits, round).await;
    if !round.is_empty() {
        send(session, limits, round).await;
    }
}

/// Sends writes as one statement or one batch. When some condition of a batch fails, none
/// applies, and which one failed is not said in a form worth decoding: each half is sent again,
/// down to single writes, so one lost race costs a few rounds, not one per write.
fn send<'a>(session: &'a Session, limits: &'a Limits, mut round: Vec<Write>) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        if let [write] = &round[..] {
            let result = session
                .execute_unpaged(&write.statement, &write.values)
                .await;
            answer(round, applied(result));
            return;
        }
        let mut batch = if round
            .first()
            .is_some_and(|w| w.row.table().is_cluster_wide())
        {
            limits.cluster_wide.clone()
        } else {
            limits.zoned.clone()
        };
        for write in &round {
            batch.append_statement(write.statement.clone());
        }
        let values: Vec<&[CqlValue]> = round.iter().map(|w| &w.values[..]).collect();
        match applied(session.batch(&batch, values).await) {
            Ok(true) => answer(round, Ok(true)),
            Ok(false) => {
                let second = round.split_off(round.len() / 2);
                send(session, limits, round).await;
                send(session, limits, second).await;
            }
            Err(e) => answer(round, Err(e)),
        }
    })
}

/// The writes of a round whose fences hold; the others are answered here. Each lease is read
/// once per round.
async fn fenced(session: &Session, limits: &Limits, round: Vec<Write>) -> Vec<Write> {
    let mut checked: Vec<(Fence, Result<(), StoreError>)> = Vec::new();
    for fence in round.iter().filter_map(|w| w.fence.as_ref()) {
        if !checked.iter().any(|(known, _)| known == fence) {
            checked.push((fence.clone(), lease_holds(session, limits, fence).await));
        }
    }
    round
        .into_iter()
        .filter_map(|write| {
            let refused = write
                .fence
                .as_ref()
                .and_then(|fence| checked.iter().find(|(known, _)| known == fence))
                .and_then(|(_, holds)| holds.clone().err());
            match refused {
                Some(e) => {
                    let _ = write.applied.send(Err(e));
                    None
                }
                None => Some(write),
            }
        })
        .collect()
}

/// Whether the lease `fence` names still has its epoch.
async fn lease_holds(session: &Session, limits: &Limits, fence: &Fence) -> Result<(), StoreError> {
    let result = session
        .execute_unpaged(&limits.lease, (&fence.zone, &fence.component))
        .await
        .map_err(unavailable)?;
    let rows = result.into_rows_result().map_err(unavailable)?;
    let epoch = rows
        .maybe_first_row::<Row>()
        .map_err(unavailable)?
        .map(|row| column_int(&row, 1))
        .transpose()?;
    match epoch {
        Some(epoch) if epoch as u64 == fence.epoch => Ok(()),
        _ => Err(StoreError::Fenced { epoch: fence.epoch }),
    }
}

fn answer(round: Vec<Write>, applied: Result<bool, StoreError>) {
    for write in round {
        // A writer that stopped waiting has nothing to be told.
        let _ = write.applied.send(applied.clone());
    }
}

/// Whether a conditional write or batch applied, from its `[applied]` column.
pub(super) fn applied(
    result: Result<QueryResult, impl std::fmt::Display>,
) -> Result<bool, StoreError> {
    let rows = result
        .map_err(unavailable)?
        .into_rows_result()
        .map_err(unavailable)?;
    let row = rows.first_row::<Row>().map_err(unavailable)?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
        other => Err(StoreError::Corrupt(format!(
            "a conditional write answered {other:?} instead of [applied]"
        ))),
    }
}
