//! The scheduler of one zone: turns Workloads into Container rows (`<workload>.<i>`, indices
//! from 0) and binds those to nodes. One is active per zone (lease); every binding carries
//! the lease epoch, so a deposed scheduler's late write is refused.
//!
//! - [`workloads`]: replicas, rolling updates, restarts, run-time limits, pause, status.
//! - [`placer`]: binds waiting containers in priority order, with gang placement and backfill.
//! - [`placement`](mod@placement): where one container goes: filters, scorers, then allocation.
//! - [`nodes`]: readiness from heartbeats; containers of lost nodes move after a timeout.
//! - [`actions`]: pause and resume of workloads, drain and uncordon of nodes.

mod actions;
mod ledger;
mod nodes;
pub mod placement;
mod placer;
mod workloads;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dora_crds::Kind;
use dora_crds::spec::{ContainerSpec, NodeSpec};
use dora_crds::status::{ContainerReport, CreditAccount, NodeCondition, NodeReport, Placement};
use dora_store::{Fence, ObjectKey, Row, StatusColumn, Store, StoreError};
use foldhash::{HashMap, HashSet};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use ledger::Ledger;
use placement::{Booking, NodeInfo};

use dora_runtime::{Cache, Controller, Handle, Leader, LeaseConfig, WatchConfig, WatchEvent};

/// Container changes within this window reconcile their workload once: a workload's replicas
/// change by the hundred while they are placed and started.
const RELATED_WINDOW: Duration = Duration::from_millis(100);

/// The component name in leases and events.
pub const COMPONENT: &str = "scheduler";

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub zone: String,
    pub lease: LeaseConfig,
    /// A node without a heartbeat for this long is NotReady (default 20 s).
    pub node_grace: Duration,
    /// Containers of a NotReady node move to other nodes after this (default 60 s).
    pub reschedule_after: Duration,
    /// First delay before a failed container is restarted; doubles per restart up to 5 min.
    pub restart_backoff: Duration,
    /// Workload reconciles at once.
    pub concurrency: usize,
    /// Bindings written at once. Many: the store commits whatever is queued together, and
    /// fuller commits place a burst faster on both backends.
    pub writes: usize,
    pub watch: WatchConfig,
}

impl SchedulerConfig {
    /// Defaults for `zone`.
    pub fn new(zone: &str) -> Self {
        SchedulerConfig {
            zone: zone.to_string(),
            lease: LeaseConfig::default(),
            node_grace: NodeReport::GRACE,
            reschedule_after: Duration::from_secs(60),
            restart_backoff: Duration::from_secs(10),
            concurrency: 32,
            writes: 1024,
            watch: WatchConfig::default(),
        }
    }
}

/// Why a scheduler's write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode a status: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The scheduler of `zone` runs with [`dora_runtime::run_leader`]: a standby until it holds
/// the zone's lease, then active until it loses it.
impl Leader for SchedulerConfig {
    const COMPONENT: &'static str = COMPONENT;

    fn zone(&self) -> &str {
        &self.zone
    }

    fn lease(&self) -> &LeaseConfig {
        &self.lease
    }

    fn lead(
        self,
        store: Arc<dyn Store>,
        fence: Fence,
        lost: CancellationToken,
    ) -> impl Future<Output = ()> + Send {
        lead(store, self, fence, lost)
    }
}

/// What the parts of one active scheduler share.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub config: SchedulerConfig,
    pub fence: Fence,
    pub workloads: Cache,
    pub containers: Cache,
    pub nodes: Cache,
    pub credits: Cache,
    pub state: Mutex<State>,
    /// Wakes the placer.
    pub wake: Notify,
    pub handle: Handle,
}

/// Indexes over the caches, kept current by the controller's observers.
#[derive(Default)]
pub(crate) struct State {
    pub ledger: Ledger,
    /// Container keys per workload key.
    pub members: HashMap<ObjectKey, HashSet<ObjectKey>>,
    /// Containers waiting for a node, per workload key.
    pub unbound: HashMap<ObjectKey, HashSet<ObjectKey>>,
    /// Replica indices a workload wants that have no row yet; the placer makes them.
    pub wanted: HashMap<ObjectKey, BTreeSet<u32>>,
    /// Why a workload's containers wait, as the placer last found.
    pub reasons: HashMap<ObjectKey, Waiting>,
    /// When each workload's status was last written.
    pub status_written: HashMap<ObjectKey, std::time::Instant>,
    /// Containers this scheduler deleted (key → uid) that the cache may still show.
    pub deleted: HashMap<ObjectKey, (String, std::time::Instant)>,
    /// Users whose Usercredit row was last seen out of credit.
    pub out_of_credit: HashSet<String>,
}

/// Why a workload's containers wait, and when they may start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Waiting {
    pub reason: String,
    /// The backfill's earliest start (epoch milliseconds), when known.
    pub estimated_start: Option<i64>,
}

impl Waiting {
    /// Estimates this close are the same to people: the status is not rewritten for them.
    const ESTIMATE_SLACK_MS: i64 = 10_000;

    /// Whether `self` says something `other` does not.
    pub fn differs_from(&self, other: &Waiting) -> bool {
        self.reason != other.reason
            || match (self.estimated_start, other.estimated_start) {
                (Some(a), Some(b)) => (a - b).abs() > Self::ESTIMATE_SLACK_MS,
                (a, b) => a.is_some() != b.is_some(),
            }
    }
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The workload a container row belongs to.
pub fn owner_of(row: &Row) -> Option<ObjectKey> {
    let workload = row.resource.get("workload")?.as_str()?;
    Some(ObjectKey::new(
        Kind::Workload,
        &row.key.zone,
        &row.key.workspace,
        workload,
    ))
}

/// The container spec of a row; `None` for a malformed one.
pub fn container_spec(row: &Row) -> Option<ContainerSpec> {
    dora_crds::decode(&row.resource).ok()
}

/// Which replica a container row is, read from the row without decoding its template or
/// copying its strings.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ContainerHead<'a> {
    pub workload: &'a str,
    pub index: u32,
    pub hash: &'a str,
}

/// The head of a container row; `None` for a malformed one.
pub fn container_head(row: &Row) -> Option<ContainerHead<'_>> {
    serde::Deserialize::deserialize(&*row.resource).ok()
}

/// The placement of a container row (default: unbound).
pub fn placement(row: &Row) -> Placement {
    dora_crds::decode_written(&row.computed).unwrap_or_default()
}

/// What the node reports for the container's current binding, if anything.
pub fn report(row: &Row, placement: &Placement) -> Option<ContainerReport> {
    let report: ContainerReport = dora_crds::decode_written(&row.observed)?;
    report.is_of(placement).then_some(report)
}

/// Writes a container's placement, fenced by the lease.
pub(crate) async fn bind(shared: &Shared, row: &Row, place: &Placement) -> Result<Arc<Row>, Error> {
    let value = dora_crds::encode(place)?;
    Ok(shared
        .store
        .put_status(
            &row.key,
            StatusColumn::Computed,
            Some(row.computed_version),
            value,
            Some(&shared.fence),
        )
        .await?)
}

/// What a container row with `placement` holds on its node.
fn booking(row: &Row, placement: Placement) -> Option<Booking> {
    if report(row, &placement).is_some_and(|r| r.state.is_final()) {
        return None;
    }
    Booking::of(placement)
}

/// A node row as the scheduler sees it; `None` when it has never reported.
pub(crate) fn node_info(row: &Row, grace: Duration) -> Option<NodeInfo> {
    let report: NodeReport = dora_crds::decode(&row.observed).ok()?;
    let mut spec: NodeSpec = dora_crds::decode(&row.resource).unwrap_or_default();
    // A drained node takes nothing new, like a cordoned one.
    let condition: Option<NodeCondition> = dora_crds::decode(&row.computed).ok();
    spec.scheduling_disabled |= condition.is_some_and(|c| c.drained);
    let ready = report.is_fresh(dora_store::now_millis(), grace);
    Some(NodeInfo {
        name: row.key.name.clone(),
        spec,
        report,
        ready,
    })
}

/// How long a deletion is assumed not yet visible in the cache.
const DELETE_VISIBLE_WITHIN: Duration = Duration::from_secs(60);

impl State {
    /// Whether the cache's `row` is one this scheduler already deleted.
    pub fn is_deleted(&self, row: &Row) -> bool {
        self.deleted
            .get(&row.key)
            .is_some_and(|(uid, at)| *uid == row.uid && at.elapsed() < DELETE_VISIBLE_WITHIN)
    }

    /// Records whether `user` is out of credit; true when that changed. A credit slice
    /// rewrites the user's row without changing this, and reconciles nothing.
    fn credit_flipped(&mut self, user: &str, out: bool) -> bool {
        if out {
            self.out_of_credit.insert(user.to_string())
        } else {
            self.out_of_credit.remove(user)
        }
    }

    fn observe_container(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Applied(row) => self.container_row(row),
            WatchEvent::Deleted(key) => self.container_gone(key),
            WatchEvent::Listed(rows) => {
                self.deleted.clear();
                self.ledger.clear_cached();
                self.members.clear();
                self.unbound.clear();
                for row in rows {
                    self.container_row(row);
                }
            }
        }
    }

    fn container_row(&mut self, row: &Row) {
        if self
            .deleted
            .get(&row.key)
            .is_some_and(|(uid, _)| *uid != row.uid)
        {
            self.deleted.remove(&row.key);
        }
        let place = placement(row);
        let bound = place.node.is_some();
        self.ledger.set_cached(
            &row.key,
            &row.uid,
            row.computed_version,
            booking(row, place),
        );
        let Some(owner) = owner_of(row) else { return };
        self.members
            .entry(owner.clone())
            .or_default()
            .insert(row.key.clone());
        if !bound {
            self.unbound
                .entry(owner)
                .or_default()
                .insert(row.key.clone());
        } else if let Some(waiting) = self.unbound.get_mut(&owner) {
            waiting.remove(&row.key);
            if waiting.is_empty() {
                self.unbound.remove(&owner);
            }
        }
    }

    fn container_gone(&mut self, key: &ObjectKey) {
        self.deleted.remove(key);
        self.ledger.remove_cached(key);
        for set in self.members.values_mut().chain(self.unbound.values_mut()) {
            set.remove(key);
        }
        self.members.retain(|_, set| !set.is_empty());
        self.unbound.retain(|_, set| !set.is_empty());
    }

    fn observe_node(&mut self, event: &WatchEvent, grace: Duration) {
        match event {
            WatchEvent::Applied(row) => match node_info(row, grace) {
                Some(info) => self.ledger.set_node(info),
                None => self.ledger.remove_node(&row.key.name),
            },
            WatchEvent::Deleted(key) => self.ledger.remove_node(&key.name),
            WatchEvent::Listed(rows) => {
                let names: Vec<String> = self.ledger.nodes().map(|n| n.name.clone()).collect();
                for name in names {
                    self.ledger.remove_node(&name);
                }
                for row in rows {
                    if let Some(info) = node_info(row, grace) {
                        self.ledger.set_node(info);
                    }
                }
            }
        }
    }
}

async fn lead(
    store: Arc<dyn Store>,
    config: SchedulerConfig,
    fence: Fence,
    lost: CancellationToken,
) {
    let zone = config.zone.clone();
    let controller = Controller::new("scheduler", store.clone(), Kind::Workload, &zone)
        .concurrency(config.concurrency)
        .batch_related(RELATED_WINDOW)
        .watch_config(config.watch);
    let workloads = controller.cache(Kind::Workload);
    let handle = controller.handle();
    // Mappers and observers need the shared state, which needs the caches: build in two steps.
    let shared_slot: Arc<std::sync::OnceLock<Arc<Shared>>> = Arc::default();
    let slot = shared_slot.clone();
    let controller = controller
        .owns(Kind::Container, owner_of)
        .watches(Kind::Node, |_| Vec::new())
        .watches(Kind::Usercredit, {
            let slot = slot.clone();
            move |row| {
                let Some(shared) = slot.get() else {
                    return Vec::new();
                };
                // A user went out of credit or back: every workload of theirs in the zone. A
                // deleted row is no longer in the cache.
                let out = shared.credits.get(&row.key).is_some_and(|row| {
                    dora_crds::decode::<CreditAccount>(&row.computed)
                        .is_ok_and(|account| account.out_of_credit)
                });
                let user = row
                    .resource
                    .get("user")
                    .and_then(|u| u.as_str())
                    .unwrap_or_default();
                if !shared.state().credit_flipped(user, out) {
                    return Vec::new();
                }
                shared
                    .workloads
                    .list()
                    .into_iter()
                    .filter(|w| w.owner == user)
                    .map(|w| w.key.clone())
                    .collect()
            }
        })
        .observe_with(Kind::Container, {
            let slot = slot.clone();
            move |event| {
                if let Some(shared) = slot.get() {
                    shared.state().observe_container(event);
                    shared.wake.notify_one();
                }
            }
        })
        .observe_with(Kind::Node, {
            let slot = slot.clone();
            move |event| {
                if let Some(shared) = slot.get() {
                    shared.state().observe_node(event, shared.config.node_grace);
                    shared.wake.notify_one();
                }
            }
        });
    let shared = Arc::new(Shared {
        store,
        fence,
        workloads,
        containers: controller.cache(Kind::Container),
        nodes: controller.cache(Kind::Node),
        credits: controller.cache(Kind::Usercredit),
        state: Mutex::default(),
        wake: Notify::new(),
        handle,
        config,
    });
    let _ = shared_slot.set(shared.clone());
    let reconciler = shared.clone();
    let stopped = lost.child_token();
    tokio::join!(
        async {
            controller
                .run(
                    move |request| workloads::reconcile(reconciler.clone(), request),
                    stopped.clone(),
                )
                .await;
        },
        async {
            if let Err(e) = placer::run(shared.clone(), stopped.clone()).await {
                tracing::warn!(error = %e, "placement stopped");
                stopped.cancel();
            }
        },
        async {
            if let Err(e) = nodes::run(shared.clone(), stopped.clone()).await {
                tracing::warn!(error = %e, "node monitoring stopped");
                stopped.cancel();
            }
        },
        async {
            if let Err(e) = actions::run(shared.clone(), stopped.clone()).await {
                tracing::warn!(error = %e, "action handling stopped");
                stopped.cancel();
            }
        },
    );
}
