//! Binding waiting containers to nodes. Each pass takes the waiting workloads in priority order
//! (then age), decides every placement in memory under one lock, then writes the bindings
//! concurrently. A workload that cannot be placed blocks the lower-priority ones that compete
//! for the same nodes, except those that would end before it could start anyway (EASY
//! backfill, by `maxRunTime`).

use std::sync::Arc;
use std::time::Duration;

use dora_crds::Kind;
use dora_crds::spec::{ContainerSpec, QueueRank, Scheduling, WorkloadSpec};
use dora_crds::status::Placement;
use dora_store::{
    Event, EventType, ObjectKey, Precondition, Row, SpecWrite, StoreError, now_millis,
};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::placement::{Booking, Demand, Resume, Stack, could_fit, explain};
use super::{
    COMPONENT, Error, Shared, State, Waiting, container_head, container_spec, placement, report,
};

/// Placement passes happen at most this often under a stream of changes.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(5);
/// Passes run at least this often (restart backoffs ending, in-flight expiry).
const MAX_PASS_INTERVAL: Duration = Duration::from_secs(1);
/// New replicas written to the store together, in one call.
const CREATES_AT_ONCE: usize = 128;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), Error> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(MAX_PASS_INTERVAL) => {}
        }
        let bindings = decide(&shared);
        write(&shared, bindings).await?;
        tokio::time::sleep(MIN_PASS_INTERVAL).await;
    }
}

/// A container to place: an unbound row, or a replica the workload wants that has no row yet.
#[derive(Clone)]
enum Candidate {
    Row(Arc<Row>),
    New(ObjectKey, u32),
}

impl Candidate {
    fn key(&self) -> &ObjectKey {
        match self {
            Candidate::Row(row) => &row.key,
            Candidate::New(key, _) => key,
        }
    }
}

/// A write decided in a pass: a binding of an existing row, or a new row (bound or not).
struct Binding {
    candidate: Candidate,
    workload: Arc<Row>,
    template: Arc<WorkloadSpec>,
    placement: Option<Placement>,
}

/// A workload with containers waiting.
struct Group {
    workload: ObjectKey,
    row: Arc<Row>,
    template: Arc<WorkloadSpec>,
    scheduling: Scheduling,
    created: i64,
    gang: bool,
    max_run_time: Option<i64>,
    demand: Demand,
    stack: Stack,
    candidates: Vec<Candidate>,
}

fn decide(shared: &Shared) -> Vec<Binding> {
    let now = now_millis();
    let mut state = shared.state();
    state.ledger.expire_in_flight();
    let groups = waiting(shared, &state, now);
    let mut bindings = Vec::new();
    let mut reasons: HashMap<ObjectKey, Option<Waiting>> = HashMap::new();
    // Workloads that could not be placed, the nodes they could use, and when they might start
    // at the earliest (`None`: unknown, so nothing competing for those nodes may pass them).
    let mut blocked: Vec<(ObjectKey, HashSet<String>, Option<i64>)> = Vec::new();
    let mut first_fit: HashMap<String, Resume> = HashMap::new();
    for group in groups {
        if !blocked.is_empty() {
            let usable = usable_nodes(&state, &group.demand);
            let head = blocked.iter().find(|(_, nodes, shadow)| {
                let ends_before = matches!(
                    (shadow, group.max_run_time),
                    (Some(shadow), Some(run)) if now + run <= *shadow
                );
                !ends_before && !nodes.is_disjoint(&usable)
            });
            if let Some((head, _, _)) = head {
                unplaced_new(&group, &HashSet::new(), &mut bindings);
                let reason = format!("waiting behind {} (higher priority or older)", head.name);
                reasons.insert(
                    group.workload.clone(),
                    Some(Waiting {
                        reason,
                        estimated_start: None,
                    }),
                );
                continue;
            }
        }
        let spread = spread_of(&state, &group.workload);
        let mut spread = spread;
        let resume = first_fit.entry(format!("{:?}", group.demand)).or_default();
        let mut placed: Vec<(Candidate, Booking)> = Vec::new();
        let mut failure = None;
        for candidate in &group.candidates {
            match group
                .stack
                .choose(&state.ledger, &group.demand, &spread, resume)
            {
                Ok(booking) => {
                    *spread.entry(booking.node.clone()).or_default() += 1;
                    let (uid, version) = match candidate {
                        Candidate::Row(row) => (row.uid.as_str(), row.computed_version + 1),
                        Candidate::New(..) => ("", 1),
                    };
                    state.ledger.set_in_flight(
                        candidate.key(),
                        uid,
                        version,
                        Some(booking.clone()),
                    );
                    placed.push((candidate.clone(), booking));
                }
                Err(misfits) => {
                    let nodes = state.ledger.node_count();
                    failure = Some(explain(nodes, &misfits));
                    break;
                }
            }
        }
        if failure.is_some() && group.gang {
            for (candidate, _) in placed.drain(..) {
                state.ledger.abandon(candidate.key());
            }
        }
        let placed_keys: HashSet<ObjectKey> = placed.iter().map(|(c, _)| c.key().clone()).collect();
        unplaced_new(&group, &placed_keys, &mut bindings);
        for (candidate, booking) in placed {
            let old = match &candidate {
                Candidate::Row(row) => placement(row),
                Candidate::New(..) => Placement::default(),
            };
            bindings.push(Binding {
                workload: group.row.clone(),
                template: group.template.clone(),
                placement: Some(booking.into_placement(&old, now)),
                candidate,
            });
        }
        match failure {
            Some(why) => {
                let why = if group.gang {
                    format!(
                        "gang of {} cannot be placed whole: {why}",
                        group.candidates.len()
                    )
                } else {
                    why
                };
                let usable = usable_nodes(&state, &group.demand);
                let shadow = shadow_time(shared, &state, &usable);
                let waiting = Waiting {
                    reason: why,
                    estimated_start: shadow,
                };
                reasons.insert(group.workload.clone(), Some(waiting));
                blocked.push((group.workload, usable, shadow));
            }
            None => {
                reasons.insert(group.workload, None);
            }
        }
    }
    // Replicas that get a row in this pass are no longer wanted; a failed write is wanted
    // again at the workload's next reconcile.
    for binding in &bindings {
        if let Candidate::New(_, index) = &binding.candidate
            && let Some(wanted) = state.wanted.get_mut(&binding.workload.key)
        {
            wanted.remove(index);
        }
    }
    state.wanted.retain(|_, indices| !indices.is_empty());
    for (workload, waiting) in reasons {
        let changed = match waiting {
            Some(waiting) => {
                let changed = state
                    .reasons
                    .get(&workload)
                    .is_none_or(|known| waiting.differs_from(known));
                if changed {
                    state.reasons.insert(workload.clone(), waiting);
                }
                changed
            }
            None => state.reasons.remove(&workload).is_some(),
        };
        if changed {
            shared.handle.enqueue(workload);
        }
    }
    bindings
}

/// The waiting workloads, highest priority first, then oldest.
fn waiting(shared: &Shared, state: &State, now: i64) -> Vec<Group> {
    let mut groups = Vec::new();
    let workloads: HashSet<&ObjectKey> = state.unbound.keys().chain(state.wanted.keys()).collect();
    for workload_key in workloads {
        let Some(workload) = shared.workloads.get(workload_key) else {
            continue;
        };
        let mut candidates: Vec<(u32, Candidate)> = Vec::new();
        for key in state.unbound.get(workload_key).into_iter().flatten() {
            if state.ledger.is_in_flight(key) {
                continue;
            }
            let Some(row) = shared.containers.get(key) else {
                continue;
            };
            let Some(container) = container_head(&row) else {
                continue;
            };
            let place = placement(&row);
            if place.node.is_some()
                || place.not_before.is_some_and(|t| t > now)
                || container.hash != workload.spec_hash
            {
                continue;
            }
            candidates.push((container.index, Candidate::Row(row)));
        }
        for index in state.wanted.get(workload_key).into_iter().flatten() {
            let key = ObjectKey::new(
                Kind::Container,
                &workload_key.zone,
                &workload_key.workspace,
                &format!("{}.{index}", workload_key.name),
            );
            if state.ledger.is_in_flight(&key) || shared.containers.get(&key).is_some() {
                continue;
            }
            candidates.push((*index, Candidate::New(key, *index)));
        }
        if candidates.is_empty() {
            continue;
        }
        let Ok(spec) = dora_crds::decode::<WorkloadSpec>(&workload.resource) else {
            continue;
        };
        candidates.sort_by_key(|(index, _)| *index);
        let demand = Demand::of(&spec);
        groups.push(Group {
            workload: workload_key.clone(),
            scheduling: spec.scheduling.clone(),
            created: workload.created,
            gang: spec.scheduling.gang,
            max_run_time: spec.config.max_run_time.map(|d| d.0.as_millis() as i64),
            stack: Stack::for_affinity(demand.affinity),
            demand,
            row: workload,
            template: Arc::new(spec),
            candidates: candidates.into_iter().map(|(_, c)| c).collect(),
        });
    }
    groups.sort_by(|a, b| a.rank().cmp(&b.rank()));
    groups
}

impl Group {
    fn rank(&self) -> QueueRank<'_> {
        let key = &self.workload;
        self.scheduling
            .rank(self.created, &key.workspace, &key.name)
    }
}

/// Rows for the replicas of `group` that have none and were not placed: they wait, visibly.
fn unplaced_new(group: &Group, placed: &HashSet<ObjectKey>, bindings: &mut Vec<Binding>) {
    for candidate in &group.candidates {
        if matches!(candidate, Candidate::New(..)) && !placed.contains(candidate.key()) {
            bindings.push(Binding {
                candidate: candidate.clone(),
                workload: group.row.clone(),
                template: group.template.clone(),
                placement: None,
            });
        }
    }
}

/// How many of the workload's containers each node holds (for `Distribute`).
fn spread_of(state: &State, workload: &ObjectKey) -> HashMap<String, u32> {
    let mut spread = HashMap::new();
    for key in state.members.get(workload).into_iter().flatten() {
        if let Some(booking) = state.ledger.booking(key) {
            *spread.entry(booking.node.clone()).or_default() += 1;
        }
    }
    spread
}

/// The nodes that could take `demand` were they empty.
fn usable_nodes(state: &State, demand: &Demand) -> HashSet<String> {
    state
        .ledger
        .nodes()
        .filter(|node| could_fit(node, demand))
        .map(|node| node.name.clone())
        .collect()
}

/// The earliest instant a blocked workload could start: the first end of a container on a
/// node it could use, if every container there has a known end. `None` when unknown.
fn shadow_time(shared: &Shared, state: &State, usable: &HashSet<String>) -> Option<i64> {
    let mut earliest: Option<i64> = None;
    for keys in state.members.values() {
        for key in keys {
            let Some(booking) = state.ledger.booking(key) else {
                continue;
            };
            if !usable.contains(&booking.node) {
                continue;
            }
            let row = shared.containers.get(key)?;
            let spec = container_spec(&row)?;
            let limit = spec.template.config.max_run_time?;
            let started = report(&row, &placement(&row))
                .and_then(|r| r.started_at)
                .unwrap_or_else(now_millis);
            let end = started + limit.0.as_millis() as i64;
            earliest = Some(earliest.map_or(end, |e: i64| e.min(end)));
        }
    }
    earliest
}

async fn write(shared: &Shared, bindings: Vec<Binding>) -> Result<(), Error> {
    let mut creates = Vec::new();
    let mut binds = Vec::new();
    for binding in bindings {
        match &binding.candidate {
            Candidate::New(key, index) => {
                let write = new_container(
                    shared,
                    &binding.workload,
                    &binding.template,
                    key,
                    *index,
                    binding.placement.as_ref(),
                );
                creates.push((binding, write));
            }
            Candidate::Row(_) => binds.push(binding),
        }
    }
    let mut creates = creates.into_iter().peekable();
    let mut chunks = Vec::new();
    while creates.peek().is_some() {
        chunks.push(creates.by_ref().take(CREATES_AT_ONCE).collect::<Vec<_>>());
    }
    let writes = shared.config.writes;
    let (created, bound) = futures::join!(
        futures::stream::iter(chunks)
            .map(|chunk| create(shared, chunk))
            .buffer_unordered(writes.div_ceil(CREATES_AT_ONCE))
            .flat_map(futures::stream::iter)
            .collect::<Vec<_>>(),
        futures::stream::iter(binds)
            .map(|binding| async move {
                let result = match (&binding.candidate, &binding.placement) {
                    (Candidate::Row(row), Some(place)) => {
                        super::bind(shared, row, place).await.map(drop)
                    }
                    _ => Ok(()),
                };
                settle(shared, &binding, result)
            })
            .buffer_unordered(writes)
            .collect::<Vec<_>>(),
    );
    let scheduled: Vec<Event> = created
        .into_iter()
        .chain(bound)
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()?;
    if !scheduled.is_empty() {
        let store = shared.store.clone();
        // Events are for people: the next pass need not wait for them.
        tokio::spawn(async move {
            if let Err(e) = store.append_events(scheduled).await {
                tracing::warn!(error = %e, "Scheduled events not recorded");
            }
        });
    }
    Ok(())
}

/// `Scheduled`: where a container was bound, and to which GPUs or cores.
fn scheduled(key: &ObjectKey, place: &Placement) -> Option<Event> {
    let node = place.node.as_ref()?;
    let mut message = format!("bound to {node}");
    if !place.gpus.is_empty() {
        let gpus: Vec<String> = place.gpus.iter().map(u32::to_string).collect();
        message += &format!(", GPUs {}", gpus.join(","));
    } else if !place.cpus.is_empty() {
        let cpus: Vec<String> = place.cpus.iter().map(u32::to_string).collect();
        message += &format!(", CPUs {}", cpus.join(","));
    }
    Some(Event::new(
        key,
        EventType::Normal,
        "Scheduled",
        message,
        COMPONENT,
    ))
}

/// The row of replica `index` of `workload`, placed or not. `key` is the replica's key,
/// `<workload>.<index>`, shared with the scheduler's maps so that lookups of the row coming
/// back compare pointers, not names.
pub(crate) fn new_container(
    shared: &Shared,
    workload: &Row,
    spec: &WorkloadSpec,
    key: &ObjectKey,
    index: u32,
    place: Option<&Placement>,
) -> Result<SpecWrite, Error> {
    let container = ContainerSpec {
        workload: workload.key.name.clone(),
        index,
        hash: workload.spec_hash.clone(),
        template: spec.clone(),
    };
    Ok(SpecWrite {
        key: key.clone(),
        precondition: Precondition::Absent,
        owner: workload.owner.clone(),
        labels: workload.labels.clone(),
        meta: Default::default(),
        spec: dora_crds::encode(&container)?,
        spec_hash: workload.spec_hash.clone(),
        desired: serde_json::Value::Null,
        computed: place.map(dora_crds::encode).transpose()?,
        fence: Some(shared.fence.clone()),
    })
}

/// Writes the rows of new replicas together; the result of each, in turn.
async fn create(
    shared: &Shared,
    creates: Vec<(Binding, Result<SpecWrite, Error>)>,
) -> Vec<Result<Option<Event>, Error>> {
    let mut writes = Vec::with_capacity(creates.len());
    let mut made = Vec::with_capacity(creates.len());
    for (binding, write) in creates {
        match write {
            Ok(write) => {
                writes.push(write);
                made.push((binding, None));
            }
            Err(e) => made.push((binding, Some(e))),
        }
    }
    let mut stored = shared.store.put_specs(writes).await.into_iter();
    made.into_iter()
        .map(|(binding, failed)| {
            let result = match failed {
                Some(e) => Err(e),
                None => match stored.next() {
                    Some(Ok(outcome)) => {
                        // The row's uid is known only now: the in-flight booking can be
                        // matched with what the watcher brings back.
                        if let Some(place) = &binding.placement {
                            let row = outcome.row();
                            shared.state().ledger.set_in_flight(
                                binding.candidate.key(),
                                &row.uid,
                                row.computed_version,
                                super::booking(row, place.clone()),
                            );
                        }
                        Ok(())
                    }
                    Some(Err(e)) => Err(e.into()),
                    None => Err(StoreError::Unavailable("the store lost a write".into()).into()),
                },
            };
            settle(shared, &binding, result)
        })
        .collect()
}

/// Counts a written binding and gives its `Scheduled` event, or undoes what a failed one
/// booked; only a fenced write stops the pass.
fn settle(
    shared: &Shared,
    binding: &Binding,
    result: Result<(), Error>,
) -> Result<Option<Event>, Error> {
    let bound = binding.placement.is_some();
    match result {
        Ok(()) => Ok(binding.placement.as_ref().and_then(|place| {
            metrics::counter!("dora_scheduler_bindings_total").increment(1);
            scheduled(binding.candidate.key(), place)
        })),
        Err(e) => {
            let key = binding.candidate.key();
            if bound {
                shared.state().ledger.abandon(key);
            }
            if matches!(binding.candidate, Candidate::New(..)) {
                // No longer wanted by the placer: the workload's reconcile wants it again.
                shared.handle.enqueue(binding.workload.key.clone());
            }
            if matches!(e, Error::Store(StoreError::Fenced { .. })) {
                return Err(e);
            }
            tracing::info!(%key, error = %e, "placement not written; retrying");
            Ok(None)
        }
    }
}
