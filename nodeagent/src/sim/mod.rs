//! Hollow nodes for scale tests and demos: N simulated nodes with fake hardware that heartbeat
//! and run the containers bound to them in memory. A container runs after `start_delay`; its
//! command decides how it ends: `sleep N` ends it after N seconds, `exit C` ends it with code C
//! (0 succeeds, anything else fails), e.g. `sh -c "sleep 2; exit 1"`; otherwise it runs until
//! it is unbound or asked to stop.
//!
//! Like Kubernetes' hollow kubelets they reach the cluster as real agents do, over the API
//! with a credential each ([`run_over_api`], the [`crate::api`] client the agent uses), or,
//! to measure the scheduler without the API server, straight through the store
//! ([`run_on_store`]): a [`Link`] either way.

mod api;
mod store;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dora_crds::spec::Command;
use dora_crds::status::{ContainerReport, ContainerState, CpuInfo, NodeReport, Placement};
use dora_store::{Event, EventType, ObjectKey, Store, now_millis};
use foldhash::{HashMap, HashSet};
use futures::StreamExt;
use tokio::sync::mpsc;
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
    /// How the store link follows containers.
    pub watch: dora_runtime::WatchConfig,
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
            watch: dora_runtime::WatchConfig::default(),
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

/// Registers the hollow nodes in `store` and runs them there until `stop` is cancelled.
pub async fn run_on_store(
    store: Arc<dyn Store>,
    config: SimConfig,
    handle: SimHandle,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    run(Link::Store(store), config, handle, stop).await
}

/// Registers the hollow nodes through the API and runs them until `stop` is cancelled. Each
/// node calls with a credential of its own, which `client` (a caller who may mint node
/// credentials in the zone) mints; all share `client`'s connections.
pub async fn run_over_api(
    client: dora_client::Client,
    config: SimConfig,
    handle: SimHandle,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let nodes = api::ApiNodes::connect(&client, &config).await?;
    run(Link::Api(Arc::new(nodes)), config, handle, stop).await
}

async fn run(
    link: Link,
    config: SimConfig,
    handle: SimHandle,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    link.register(&config).await?;
    tracing::info!(nodes = config.nodes, zone = %config.zone, via = link.name(), "hollow nodes registered");
    let sim = Arc::new(Sim {
        link,
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

/// How hollow nodes reach the cluster.
enum Link {
    /// Straight to the store, leaving the API server out.
    Store(Arc<dyn Store>),
    /// Through the API, as node agents do.
    Api(Arc<api::ApiNodes>),
}

/// A container of these nodes changed, as the store or the API tells it.
enum Update {
    Seen(Box<Seen>),
    Gone(ObjectKey),
}

/// A container as hollow nodes need it.
struct Seen {
    key: ObjectKey,
    uid: String,
    place: Placement,
    /// The node's report of the current binding.
    current: Option<ContainerReport>,
    /// Its script, read only when it may have to start: `None` when its command is malformed.
    script: Option<Script>,
}

impl Seen {
    /// Whether a hollow node may have to start it, so that its script is worth reading.
    fn may_start(place: &Placement, current: Option<&ContainerReport>) -> bool {
        place.node.is_some() && place.stop.is_none() && current.is_none()
    }
}

/// What a report came to.
enum Reported {
    Done,
    /// The cluster is unavailable: worth another try.
    Again(String),
    Failed(String),
}

impl Link {
    fn name(&self) -> &'static str {
        match self {
            Link::Store(_) => "store",
            Link::Api(_) => "api",
        }
    }

    async fn register(&self, config: &SimConfig) -> anyhow::Result<()> {
        match self {
            Link::Store(store) => store::register(&**store, config).await,
            Link::Api(nodes) => nodes.register(config).await,
        }
    }

    async fn heartbeat(&self, config: &SimConfig, i: usize, report: &NodeReport) {
        let sent = match self {
            Link::Store(store) => store::heartbeat(&**store, config, i, report).await,
            Link::Api(nodes) => nodes.heartbeat(i, report).await,
        };
        if let Err(e) = sent {
            tracing::warn!(node = config.name(i), error = %format!("{e:#}"), "heartbeat failed");
        }
    }

    async fn report(&self, key: &ObjectKey, report: &ContainerReport) -> Reported {
        match self {
            Link::Store(store) => store::report(&**store, key, report).await,
            Link::Api(nodes) => nodes.report(key, report).await,
        }
    }

    /// Follows the containers of these nodes.
    fn updates(&self, config: &SimConfig, stop: CancellationToken) -> mpsc::Receiver<Update> {
        match self {
            Link::Store(store) => store::updates(store.clone(), config.clone(), stop),
            Link::Api(nodes) => nodes.clone().updates(config, stop),
        }
    }

    /// Whether `copy` of `key` is its current binding, read now rather than from the feed.
    async fn is_bound(&self, key: &ObjectKey, copy: &Instance) -> anyhow::Result<bool> {
        match self {
            Link::Store(store) => store::is_bound(&**store, key, copy).await,
            Link::Api(nodes) => nodes.is_bound(key, copy).await,
        }
    }

    /// Tells about `key`: an event in the store; through the API, where agents record no
    /// events, the log line alone.
    async fn tell(&self, event: Event) {
        if let Link::Store(store) = self
            && let Err(e) = store.append_event(event).await
        {
            tracing::warn!(error = %e, "could not record an event");
        }
    }
}

/// The pauses between attempts at a container report while the cluster is unavailable: 100 ms
/// doubling to 5 s, about a minute in all.
fn report_pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(Duration::from_millis(100)), |pause| {
        Some((*pause * 2).min(Duration::from_secs(5)))
    })
    .take(15)
}

/// Runs `write` until it is done or fails for a reason other than the cluster being
/// unavailable; after each unavailable attempt waits the next of `pauses`, and gives up when
/// they run out.
async fn retry_unavailable<F, W>(
    key: &ObjectKey,
    pauses: impl Iterator<Item = Duration>,
    mut write: W,
) where
    W: FnMut() -> F,
    F: Future<Output = Reported>,
{
    let mut pauses = pauses.fuse();
    loop {
        match write().await {
            Reported::Done => return,
            Reported::Again(e) => match pauses.next() {
                Some(pause) => {
                    tracing::warn!(%key, error = %e, ?pause, "could not report a container; trying again");
                    tokio::time::sleep(pause).await;
                }
                None => {
                    return tracing::warn!(%key, error = %e, "could not report a container; giving up");
                }
            },
            Reported::Failed(e) => {
                return tracing::warn!(%key, error = %e, "could not report a container");
            }
        }
    }
}

struct Sim {
    link: Link,
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
            let report = self.config.report();
            futures::stream::iter(0..self.config.nodes)
                .filter(|i| std::future::ready(!self.handle.is_paused(&self.config.name(*i))))
                .for_each_concurrent(CONCURRENT_WRITES, |i| {
                    // Owned, so that the future is Send for every borrow's lifetime.
                    let (sim, report) = (self.clone(), report.clone());
                    async move { sim.link.heartbeat(&sim.config, i, &report).await }
                })
                .await;
        }
    }

    /// Follows the containers and runs those bound to these nodes.
    async fn containers(self: Arc<Self>, stop: CancellationToken) {
        let mut updates = self.link.updates(&self.config, stop);
        let mut resume_check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(Update::Seen(seen)) => self.clone().seen(*seen),
                    Some(Update::Gone(key)) => self.drop_unbound(&key, None),
                    None => return,
                },
                _ = resume_check.tick() => self.clone().stop_stale(),
            }
        }
    }

    /// A container changed: start it if it is newly bound here, stop it if asked to.
    fn seen(self: Arc<Self>, seen: Seen) {
        let Seen {
            key,
            uid,
            place,
            current,
            script,
        } = seen;
        let binding = place.node.clone().map(|node| Instance {
            uid,
            node,
            epoch: place.epoch,
        });
        self.drop_unbound(&key, binding.as_ref());
        let Some(copy) = binding.filter(|copy| self.config.is_ours(&copy.node)) else {
            return;
        };
        let node = copy.node.clone();
        if self.handle.is_paused(&node) {
            return;
        }
        if let Some(stop) = &place.stop {
            if current.as_ref().is_some_and(|r| !r.state.is_final()) {
                let started = current.as_ref().and_then(|r| r.started_at);
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
                self.forget(&key);
                tokio::spawn(async move { self.report(&key, ended).await });
            }
            return;
        }
        if current.is_some() || self.is_running(&key, &copy) {
            return;
        }
        lock(&self.handle.running)
            .entry(key.clone())
            .or_default()
            .push(copy.clone());
        let Some(script) = script else {
            return;
        };
        tokio::spawn(async move { self.lifecycle(key, copy, place.restarts, script).await });
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
    /// theirs until they resume, and resumed ones until their check against the cluster
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

    /// Reports a container's state; while the cluster is unavailable, tries again with growing
    /// pauses, as an agent would.
    async fn report(&self, key: &ObjectKey, report: ContainerReport) {
        retry_unavailable(key, report_pauses(), || self.link.report(key, &report)).await;
    }

    /// Stops what resumed nodes run that is no longer bound to them at the same epoch (their
    /// containers moved away while they were gone). Each binding is read anew: a node coming
    /// back must not trust a feed that may have missed the move.
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
                match self.link.is_bound(&key, &copy).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(%key, error = %format!("{e:#}"), "cannot check a resumed node's container");
                        lock(&self.handle.resumed).insert(copy.node);
                        continue;
                    }
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
                self.link.tell(event).await;
            }
        });
    }
}

/// How a hollow container ends: after `sleep N` seconds, with `exit C`'s code.
type Script = (Option<Duration>, Option<i32>);

/// The script of a container's spec (its `template.config.cmd`); `None` when the command is
/// malformed. Only the command is decoded: hollow nodes start thousands of containers a second.
fn script(spec: &serde_json::Value) -> Option<Script> {
    let cmd = ["template", "config", "cmd"]
        .into_iter()
        .try_fold(spec, |value, field| value.get(field));
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

    /// How many attempts `retry_unavailable` makes when the attempts come to `outcomes` in
    /// turn and then succeed, with `pauses` pauses allowed.
    async fn attempts(outcomes: Vec<Reported>, pauses: usize) -> usize {
        let key = ObjectKey::new(dora_crds::Kind::Container, "z", "w", "c");
        let calls = AtomicUsize::new(0);
        let outcomes = Mutex::new(outcomes.into_iter());
        retry_unavailable(&key, std::iter::repeat_n(Duration::ZERO, pauses), || {
            calls.fetch_add(1, Ordering::Relaxed);
            let next = lock(&outcomes).next();
            async move { next.unwrap_or(Reported::Done) }
        })
        .await;
        calls.into_inner()
    }

    #[test]
    fn a_container_s_script_comes_from_its_command_alone() {
        let with = |cmd: serde_json::Value| {
            script(&serde_json::json!({"workload": "c", "template": {"config": {"cmd": cmd}}}))
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
            script(&serde_json::json!({"template": {}})),
            Some((None, None)),
            "no command: runs until stopped"
        );
    }

    fn unavailable() -> Reported {
        Reported::Again("down".into())
    }

    #[tokio::test]
    async fn reports_are_tried_again_only_while_the_cluster_is_unavailable() {
        assert_eq!(attempts(vec![], 3).await, 1);
        assert_eq!(
            attempts(vec![unavailable(), unavailable()], 3).await,
            3,
            "written on the third attempt"
        );
        let many = (0..10).map(|_| unavailable()).collect();
        assert_eq!(
            attempts(many, 3).await,
            4,
            "gives up when the pauses run out"
        );
        let failed = Reported::Failed("refused".into());
        assert_eq!(attempts(vec![failed, unavailable()], 3).await, 1);
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
