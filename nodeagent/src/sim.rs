//! Hollow nodes for scale tests and demos: N simulated nodes with fake hardware that heartbeat
//! and run the containers bound to them in memory. A container runs after `start_delay`; its
//! command decides how it ends: `sleep N` ends it after N seconds, `exit C` ends it with code C
//! (0 succeeds, anything else fails), e.g. `sh -c "sleep 2; exit 1"`; otherwise it runs until
//! it is unbound or asked to stop.
//!
//! Hollow nodes write their rows straight to the store: they stand in for many agents at once
//! where the real agent would report through the API.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dora_controller::scheduler::placement;
use dora_crds::Kind;
use dora_crds::spec::{Command, NodeSpec};
use dora_crds::status::{ContainerReport, ContainerState, CpuInfo, NodeReport};
use dora_runtime::{Target, WatchConfig, WatchEvent, watch};
use dora_store::{
    Event, EventType, ObjectKey, Precondition, Row, SpecWrite, StatusColumn, Store, StoreError,
    now_millis,
};
use foldhash::{HashMap, HashSet};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Writes at once while registering and heartbeating.
const CONCURRENT_WRITES: usize = 64;

/// Hollow node settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub zone: String,
    /// Node names are `<prefix><i>`, i from 0.
    pub prefix: String,
    pub nodes: usize,
    pub cpus: u32,
    pub cpu_model: String,
    pub memory_bytes: u64,
    /// GPUs per node: (count, model).
    pub gpus: Vec<(u32, String)>,
    pub heartbeat: Duration,
    /// How long a bound container takes to run.
    pub start_delay: Duration,
    pub watch: WatchConfig,
}

impl SimConfig {
    /// `nodes` nodes in `zone` with 32 CPUs, 256 GiB and no GPUs.
    pub fn new(zone: &str, nodes: usize) -> Self {
        SimConfig {
            zone: zone.to_string(),
            prefix: "sim-".into(),
            nodes,
            cpus: 32,
            cpu_model: "Sim CPU".into(),
            memory_bytes: 256 << 30,
            gpus: Vec::new(),
            heartbeat: Duration::from_secs(5),
            start_delay: Duration::from_millis(100),
            watch: WatchConfig::default(),
        }
    }

    fn name(&self, i: usize) -> String {
        format!("{}{i:05}", self.prefix)
    }

    /// Whether `node` is the name of one of these nodes. Checked without formatting a name,
    /// as it is on every container event.
    fn is_ours(&self, node: &str) -> bool {
        let Some(digits) = node.strip_prefix(&self.prefix) else {
            return false;
        };
        // `name` pads to five digits; longer numbers have no leading zero.
        let canonical = digits.len() >= 5
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits.len() == 5 || !digits.starts_with('0'));
        canonical && digits.parse::<usize>().is_ok_and(|i| i < self.nodes)
    }

    fn report(&self) -> NodeReport {
        NodeReport {
            heartbeat: now_millis(),
            cpu: CpuInfo {
                count: self.cpus,
                product_name: self.cpu_model.clone(),
            },
            memory_bytes: self.memory_bytes,
            gpus: crate::hardware::fake_gpus(&self.gpus),
            drivers: vec!["sim".into()],
            version: env!("CARGO_PKG_VERSION").into(),
            endpoint: None,
        }
    }
}

/// Locks `mutex`; a panic while it was held leaves plain data that is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    dora_crds::encode(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Where each container runs, copy by copy.
type Copies = HashMap<ObjectKey, Vec<Instance>>;

/// One running copy of a container: the row it was started for (a container deleted and created again
/// under its name is another one) and its binding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    uid: String,
    node: String,
    epoch: u64,
}

/// Controls running hollow nodes (for tests): a paused node neither heartbeats nor runs
/// anything, like a machine that lost its network.
#[derive(Clone, Default)]
pub struct SimHandle {
    paused: Arc<Mutex<HashSet<String>>>,
    /// Nodes resumed since the last check for stale containers.
    resumed: Arc<Mutex<HashSet<String>>>,
    running: Arc<Mutex<Copies>>,
}

impl SimHandle {
    /// Stops a node's heartbeats and work.
    pub fn pause(&self, node: &str) {
        lock(&self.paused).insert(node.to_string());
    }

    /// Lets a paused node carry on; it stops what it runs that is no longer bound to it.
    pub fn resume(&self, node: &str) {
        lock(&self.paused).remove(node);
        lock(&self.resumed).insert(node.to_string());
    }

    /// The containers a node runs.
    pub fn running_on(&self, node: &str) -> Vec<ObjectKey> {
        let running = lock(&self.running);
        let mut keys: Vec<ObjectKey> = running
            .iter()
            .filter(|(_, copies)| copies.iter().any(|copy| copy.node == node))
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    fn is_paused(&self, node: &str) -> bool {
        lock(&self.paused).contains(node)
    }
}

/// Registers the hollow nodes and runs them until `stop` is cancelled.
pub async fn run(
    store: Arc<dyn Store>,
    config: SimConfig,
    handle: SimHandle,
    stop: CancellationToken,
) -> Result<(), StoreError> {
    register(&*store, &config).await?;
    tracing::info!(nodes = config.nodes, zone = %config.zone, "hollow nodes registered");
    let sim = Arc::new(Sim {
        store,
        config,
        handle,
    });
    tokio::select! {
        () = stop.cancelled() => {}
        () = sim.clone().heartbeats() => {}
        () = sim.clone().containers(stop.clone()) => {}
    }
    Ok(())
}

async fn register(store: &dyn Store, config: &SimConfig) -> Result<(), StoreError> {
    let spec = encode(&NodeSpec::default())?;
    let results: Vec<Result<(), StoreError>> = futures::stream::iter(0..config.nodes)
        .map(|i| {
            let key = ObjectKey::new(Kind::Node, &config.zone, "", &config.name(i));
            let write = SpecWrite {
                key: key.clone(),
                precondition: Precondition::Absent,
                owner: "sim".into(),
                labels: Default::default(),
                meta: Default::default(),
                spec_hash: dora_crds::spec_hash(Kind::Node, &spec),
                spec: spec.clone(),
                desired: serde_json::Value::Null,
                computed: None,
                fence: None,
            };
            async move {
                match store.put_spec(write).await {
                    Ok(_) | Err(StoreError::AlreadyExists) => {}
                    Err(e) => return Err(e),
                }
                let report = encode(&config.report())?;
                store
                    .put_status(&key, StatusColumn::Observed, None, report, None)
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The pauses between attempts at a container report while the store is unavailable: 100 ms
/// doubling to 5 s, about a minute in all.
fn report_pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(Duration::from_millis(100)), |pause| {
        Some((*pause * 2).min(Duration::from_secs(5)))
    })
    .take(15)
}

/// Runs `write` until it succeeds, finds its row gone, or fails for a reason other than the
/// store being unavailable; after each unavailable attempt waits the next of `pauses`, and
/// gives up when they run out.
async fn retry_unavailable<F, W>(
    key: &ObjectKey,
    pauses: impl Iterator<Item = Duration>,
    mut write: W,
) where
    W: FnMut() -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    let mut pauses = pauses.fuse();
    loop {
        match write().await {
            Ok(()) | Err(StoreError::NotFound) => return,
            Err(e @ StoreError::Unavailable(_)) => match pauses.next() {
                Some(pause) => {
                    tracing::warn!(%key, error = %e, ?pause, "could not report a container; trying again");
                    tokio::time::sleep(pause).await;
                }
                None => {
                    return tracing::warn!(%key, error = %e, "could not report a container; giving up");
                }
            },
            Err(e) => return tracing::warn!(%key, error = %e, "could not report a container"),
        }
    }
}

struct Sim {
    store: Arc<dyn Store>,
    config: SimConfig,
    handle: SimHandle,
}

impl Sim {
    /// Heartbeats every node once per interval, spread over the interval.
    async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let report = match encode(&self.config.report()) {
                Ok(report) => report,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode the heartbeat");
                    continue;
                }
            };
            let store = &self.store;
            futures::stream::iter(0..self.config.nodes)
                .filter(|i| std::future::ready(!self.handle.is_paused(&self.config.name(*i))))
                .for_each_concurrent(CONCURRENT_WRITES, |i| {
                    let key =
                        ObjectKey::new(Kind::Node, &self.config.zone, "", &self.config.name(i));
                    let report = report.clone();
                    async move {
                        if let Err(e) = store
                            .put_status(&key, StatusColumn::Observed, None, report, None)
                            .await
                        {
                            tracing::warn!(%key, error = %e, "heartbeat failed");
                        }
                    }
                })
                .await;
        }
    }

    /// Follows the zone's containers and runs those bound to these nodes.
    async fn containers(self: Arc<Self>, stop: CancellationToken) {
        let mut events = watch(
            self.store.clone(),
            Target::new(Kind::Container, &self.config.zone),
            self.config.watch,
            stop.clone(),
        );
        let mut resume_check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(WatchEvent::Applied(row)) => self.clone().seen(row),
                    Some(WatchEvent::Deleted(key)) => self.drop_unbound(&key, None),
                    Some(WatchEvent::Listed(listed)) => {
                        for row in listed {
                            self.clone().seen(row);
                        }
                    }
                    None => return,
                },
                _ = resume_check.tick() => self.clone().stop_stale(),
            }
        }
    }

    /// A container row changed: start it if it is newly bound here, stop it if asked to.
    fn seen(self: Arc<Self>, row: Arc<Row>) {
        let place = placement(&row);
        let binding = place.node.clone().map(|node| Instance {
            uid: row.uid.clone(),
            node,
            epoch: place.epoch,
        });
        self.drop_unbound(&row.key, binding.as_ref());
        let Some(copy) = binding.filter(|copy| self.config.is_ours(&copy.node)) else {
            return;
        };
        let node = copy.node.clone();
        if self.handle.is_paused(&node) {
            return;
        }
        let report: Option<ContainerReport> = dora_crds::decode_written(&row.observed);
        let current = report.as_ref().filter(|r| r.is_of(&place));
        if let Some(stop) = &place.stop {
            if current.is_some_and(|r| !r.state.is_final()) {
                let started = current.and_then(|r| r.started_at);
                let ended = ContainerReport {
                    node: node.clone(),
                    epoch: place.epoch,
                    state: ContainerState::Failed,
                    exit_code: Some(137),
                    started_at: started,
                    finished_at: Some(now_millis()),
                    reason: Some(stop.clone()),
                    restarts: place.restarts,
                };
                self.forget(&row.key);
                tokio::spawn(async move { self.report(&row.key, ended).await });
            }
            return;
        }
        if current.is_some() || self.is_running(&row.key, &copy) {
            return;
        }
        lock(&self.handle.running)
            .entry(row.key.clone())
            .or_default()
            .push(copy.clone());
        let Some(script) = script(&row) else {
            return;
        };
        tokio::spawn(async move {
            self.lifecycle(row.key.clone(), copy, place.restarts, script)
                .await
        });
    }

    fn is_running(&self, key: &ObjectKey, copy: &Instance) -> bool {
        lock(&self.handle.running)
            .get(key)
            .is_some_and(|copies| copies.contains(copy))
    }

    fn forget(&self, key: &ObjectKey) {
        lock(&self.handle.running).remove(key);
    }

    /// Active nodes stop their copies of `key` that are not its binding. Paused nodes keep
    /// theirs until they resume, and resumed ones until their check against the store
    /// (`stop_stale`) has run, which tells of each copy it stops.
    fn drop_unbound(&self, key: &ObjectKey, binding: Option<&Instance>) {
        let resumed = lock(&self.handle.resumed).clone();
        let mut running = lock(&self.handle.running);
        if let Some(copies) = running.get_mut(key) {
            copies.retain(|copy| {
                Some(copy) == binding
                    || self.handle.is_paused(&copy.node)
                    || resumed.contains(&copy.node)
            });
            if copies.is_empty() {
                running.remove(key);
            }
        }
    }

    /// Runs one container: Running after the start delay, then ended as its command says.
    async fn lifecycle(
        self: Arc<Self>,
        key: ObjectKey,
        copy: Instance,
        restarts: u32,
        (sleep, exit): Script,
    ) {
        tokio::time::sleep(self.config.start_delay).await;
        if !self.is_running(&key, &copy) {
            return;
        }
        let started = now_millis();
        let running = ContainerReport {
            node: copy.node.clone(),
            epoch: copy.epoch,
            state: ContainerState::Running,
            started_at: Some(started),
            restarts,
            ..ContainerReport::default()
        };
        self.report(&key, running.clone()).await;
        let Some(code) = exit.or(sleep.map(|_| 0)) else {
            return;
        };
        tokio::time::sleep(sleep.unwrap_or_default()).await;
        if !self.is_running(&key, &copy) || self.handle.is_paused(&copy.node) {
            return;
        }
        self.forget(&key);
        let ended = ContainerReport {
            state: if code == 0 {
                ContainerState::Succeeded
            } else {
                ContainerState::Failed
            },
            exit_code: Some(code),
            finished_at: Some(now_millis()),
            ..running
        };
        self.report(&key, ended).await;
    }

    /// Reports a container's state; while the store is unavailable, tries again with growing
    /// pauses, as an agent would.
    async fn report(&self, key: &ObjectKey, report: ContainerReport) {
        // Encoded per try: retries are rare, and a copy of the encoded tree costs as much.
        retry_unavailable(key, report_pauses(), || async {
            let value = encode(&report)?;
            self.store
                .put_status(key, StatusColumn::Observed, None, value, None)
                .await
                .map(drop)
        })
        .await;
    }

    /// Stops what resumed nodes run that is no longer bound to them at the same epoch (their
    /// containers moved away while they were gone). Each binding is read from the store, not
    /// from this watcher's view: a node coming back must not trust a feed that may have missed
    /// the move.
    fn stop_stale(self: Arc<Self>) {
        let resumed: HashSet<String> = std::mem::take(&mut *lock(&self.handle.resumed));
        if resumed.is_empty() {
            return;
        }
        let copies: Vec<(ObjectKey, Instance)> = lock(&self.handle.running)
            .iter()
            .flat_map(|(key, copies)| {
                copies
                    .iter()
                    .filter(|copy| resumed.contains(&copy.node))
                    .map(|copy| (key.clone(), copy.clone()))
            })
            .collect();
        tokio::spawn(async move {
            for (key, copy) in copies {
                let row = match self.store.get(&key).await {
                    Ok(row) => row,
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "cannot check a resumed node's container");
                        lock(&self.handle.resumed).insert(copy.node);
                        continue;
                    }
                };
                let bound = row.is_some_and(|row| {
                    let place = placement(&row);
                    row.uid == copy.uid
                        && place.node.as_deref() == Some(copy.node.as_str())
                        && place.epoch == copy.epoch
                });
                if bound {
                    continue;
                }
                {
                    let mut running = lock(&self.handle.running);
                    if let Some(held) = running.get_mut(&key) {
                        held.retain(|held| *held != copy);
                        if held.is_empty() {
                            running.remove(&key);
                        }
                    }
                }
                let Instance { node, epoch, .. } = copy;
                tracing::info!(%key, %node, epoch, "stopped a stale container");
                let event = Event::new(
                    &key,
                    EventType::Normal,
                    "StaleStopped",
                    format!(
                        "node {node} stopped its copy of epoch {epoch}: the container is bound elsewhere or gone"
                    ),
                    "sim",
                );
                if let Err(e) = self.store.append_event(event).await {
                    tracing::warn!(error = %e, "could not record an event");
                }
            }
        });
    }
}

/// How a hollow container ends: after `sleep N` seconds, with `exit C`'s code.
type Script = (Option<Duration>, Option<i32>);

/// The script of a container row's command; `None` when the command is malformed. Only the
/// command is decoded: hollow nodes start thousands of containers a second.
fn script(row: &Row) -> Option<Script> {
    let cmd = ["template", "config", "cmd"]
        .into_iter()
        .try_fold(&*row.resource, |value, field| value.get(field));
    let argv = match cmd {
        Some(cmd) => dora_crds::decode::<Command>(cmd).ok()?.argv(),
        None => Vec::new(),
    };
    let words: Vec<&str> = argv
        .iter()
        .flat_map(|arg| arg.split([' ', ';']))
        .filter(|w| !w.is_empty())
        .collect();
    let mut sleep = None;
    let mut exit = None;
    for pair in words.windows(2) {
        match pair[0] {
            "sleep" => sleep = pair[1].parse::<f64>().ok().map(Duration::from_secs_f64),
            "exit" => exit = pair[1].parse().ok(),
            _ => {}
        }
    }
    Some((sleep, exit))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn hollow_nodes_know_their_names() {
        let config = SimConfig::new("z", 100_002);
        for name in ["sim-00000", "sim-00007", "sim-99999", "sim-100001"] {
            assert!(config.is_ours(name), "{name}");
        }
        for name in [
            "sim-7",
            "sim-0007",
            "sim-+0007",
            "sim-000007",
            "sim-0100001",
            "sim-100002",
            "other-00007",
            "sim-",
        ] {
            assert!(!config.is_ours(name), "{name}");
        }
        assert!(!SimConfig::new("z", 7).is_ours("sim-00007"));
    }

    /// How many attempts `retry_unavailable` makes when the attempts fail with `errors` in turn
    /// and then succeed, with `pauses` pauses allowed.
    async fn attempts(errors: Vec<StoreError>, pauses: usize) -> usize {
        let key = ObjectKey::new(Kind::Container, "z", "w", "c");
        let calls = AtomicUsize::new(0);
        let errors = Mutex::new(errors.into_iter());
        retry_unavailable(&key, std::iter::repeat_n(Duration::ZERO, pauses), || {
            calls.fetch_add(1, Ordering::Relaxed);
            let next = lock(&errors).next();
            async move { next.map_or(Ok(()), Err) }
        })
        .await;
        calls.into_inner()
    }

    fn container(resource: serde_json::Value) -> Row {
        let mut row = Row::new(ObjectKey::new(Kind::Container, "z", "w", "c.0"), "uid");
        row.resource = Arc::new(resource);
        row
    }

    #[test]
    fn a_container_s_script_comes_from_its_command_alone() {
        let with = |cmd: serde_json::Value| {
            script(&container(
                serde_json::json!({"workload": "c", "template": {"config": {"cmd": cmd}}}),
            ))
        };
        assert_eq!(
            with(serde_json::json!(["sh", "-c", "sleep 2; exit 3"])),
            Some((Some(Duration::from_secs(2)), Some(3)))
        );
        assert_eq!(
            with(serde_json::json!("sleep 0.5")),
            Some((Some(Duration::from_millis(500)), None))
        );
        assert_eq!(with(serde_json::json!(42)), None, "a malformed command");
        assert_eq!(
            script(&container(serde_json::json!({"template": {}}))),
            Some((None, None)),
            "no command: runs until stopped"
        );
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable("down".into())
    }

    #[tokio::test]
    async fn reports_are_tried_again_only_while_the_store_is_unavailable() {
        assert_eq!(attempts(vec![], 3).await, 1);
        assert_eq!(
            attempts(vec![unavailable(), unavailable()], 3).await,
            3,
            "written on the third attempt"
        );
        assert_eq!(
            attempts(vec![unavailable(); 10], 3).await,
            4,
            "gives up when the pauses run out"
        );
        assert_eq!(attempts(vec![StoreError::NotFound], 3).await, 1);
        let conflict = StoreError::Conflict {
            expected: 1,
            actual: 2,
        };
        assert_eq!(attempts(vec![conflict, unavailable()], 3).await, 1);
    }

    #[test]
    fn report_pauses_grow_to_five_seconds_for_about_a_minute() {
        let pauses: Vec<Duration> = report_pauses().collect();
        assert_eq!(pauses[..3], [100, 200, 400].map(Duration::from_millis));
        assert_eq!(pauses.last(), Some(&Duration::from_secs(5)));
        let total: Duration = pauses.iter().sum();
        assert!(
            (Duration::from_secs(45)..Duration::from_secs(75)).contains(&total),
            "{total:?}"
        );
    }
}
