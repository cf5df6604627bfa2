//! The node agent's reconcile loop. It lists the containers bound to its node through the API,
//! then follows the API's watch stream; for each container it makes the driver run exactly
//! the binding the scheduler chose (the epoch), stops what is asked to stop, removes copies
//! nobody wants, and reports every change of state. After a restart it adopts the containers
//! its drivers already run instead of starting them again.
//!
//! A container that ended and waits to restart is bound nowhere, but the API still lists it
//! to the node of its last run: the agent keeps that ended copy, so that its output stays
//! readable, until a new run replaces it (its output then kept as the previous run's, see
//! [`crate::previous`]) or the container is deleted or bound elsewhere.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use dora_crds::Resource;
use dora_crds::spec::{ContainerSpec, Driver as DriverKind};
use dora_crds::status::{ContainerReport, ContainerState, NodeReport, Placement};
use dora_store::{ObjectKey, now_millis};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiConfig, Change, Reported, key_of};
use crate::driver::docker::DockerDriver;
use crate::driver::process::ProcessDriver;
use crate::driver::{Driver, Exit, Instance, LogStream, Mount, Run};
use crate::hardware::{self, Gpus};
use crate::previous::PreviousRuns;
use crate::user::User;

/// The watch starts over with a fresh list this often, so that a missed change heals.
const RELIST: Duration = Duration::from_secs(300);

/// Tries of one report before it waits for the next resync (over about 3 s).
const REPORT_ATTEMPTS: u32 = 4;

/// Whether to use Docker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerUse {
    Off,
    /// When a Docker Engine answers at start.
    IfAvailable,
    /// Fail to start without one.
    Required,
}

/// Settings of a node agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub zone: String,
    pub name: String,
    pub api: ApiConfig,
    /// Where the agent keeps the process driver's containers and previous runs' output.
    pub state_dir: PathBuf,
    pub docker: DockerUse,
    pub process: bool,
    /// Who a root agent runs Process containers as; `None` (or root) keeps the agent's user.
    pub process_user: Option<User>,
    pub fake_gpus: Option<Vec<(u32, String)>>,
    pub heartbeat: Duration,
    /// How often the drivers' containers are compared with what the agent believes.
    pub resync: Duration,
    /// Where the node API listens; `None` serves none (no logs or shells).
    pub listen: Option<SocketAddr>,
    /// The host name or address the API server reaches the node API at.
    pub advertise: String,
}

impl AgentConfig {
    /// Fails, saying what to do, when an agent so configured could not run: its Process
    /// containers' user could not reach their folders in the state folder.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.process {
            return Ok(());
        }
        let user = self.process_user.as_ref().filter(|u| !u.is_root());
        crate::driver::process::reachable(&self.state_dir.join("process"), user)
    }

    /// Whether Process containers run as another user than the agent's, who must be able to
    /// search the folders down to the state folder.
    pub fn runs_as_another_user(&self) -> bool {
        self.process && self.process_user.as_ref().is_some_and(|u| !u.is_root())
    }

    /// An agent for `name` in `zone` with the process driver, Docker when it answers,
    /// a 5 s heartbeat and no node API.
    pub fn new(zone: &str, name: &str, api: ApiConfig, state_dir: PathBuf) -> Self {
        AgentConfig {
            zone: zone.to_string(),
            name: name.to_string(),
            api,
            state_dir,
            docker: DockerUse::IfAvailable,
            process: true,
            process_user: None,
            fake_gpus: None,
            heartbeat: Duration::from_secs(5),
            resync: Duration::from_secs(30),
            listen: None,
            advertise: "127.0.0.1".into(),
        }
    }
}

/// What the scheduler bound to this node, as last seen.
#[derive(Debug, Clone)]
struct Wanted {
    run: Run,
    report: Option<ContainerReport>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running agent, shared by its tasks and its node API.
pub struct Agent {
    config: AgentConfig,
    api: ApiClient,
    drivers: Vec<Arc<dyn Driver>>,
    wanted: Mutex<HashMap<ObjectKey, Wanted>>,
    /// Containers bound nowhere that last ran here: waiting to restart.
    resting: Mutex<HashSet<ObjectKey>>,
    instances: Mutex<HashMap<ObjectKey, (Instance, DriverKind)>>,
    previous: PreviousRuns,
    /// Bindings whose start failed: not tried again.
    failed: Mutex<HashSet<(ObjectKey, u64)>>,
    /// One per container, held while its driver acts on it, never across a call to the API.
    locks: Mutex<HashMap<ObjectKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Reports not yet sent, the newest per container ([`Agent::send`]).
    outbox: Mutex<HashMap<ObjectKey, Outgoing>>,
}

/// Whether a reconcile is to be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    Yes,
    No,
}

/// A container's reports on their way to the API: the newest waiting one, and whether a task
/// is sending them.
#[derive(Default)]
struct Outgoing {
    next: Option<ContainerReport>,
    sending: bool,
}

impl Agent {
    /// The agent's settings.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The agent's client of the API.
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    fn key(&self, workspace: &str, name: &str) -> ObjectKey {
        ObjectKey::new(
            dora_crds::Kind::Container,
            &self.config.zone,
            workspace,
            name,
        )
    }

    /// The container `name` of `workspace` and the driver that runs it (or ran it, when it
    /// ended).
    pub fn find(&self, workspace: &str, name: &str) -> Option<(Instance, Arc<dyn Driver>)> {
        let key = self.key(workspace, name);
        let (instance, kind) = lock(&self.instances).get(&key).cloned()?;
        Some((instance, self.driver(kind)?))
    }

    /// The output (its last `tail` lines) of the run before the current one of container
    /// `name` of `workspace`, when this node keeps it.
    pub async fn previous_logs(
        &self,
        workspace: &str,
        name: &str,
        tail: Option<usize>,
    ) -> anyhow::Result<Option<LogStream>> {
        self.previous.read(&self.key(workspace, name), tail).await
    }

    /// Every container the agent runs or ran, with its driver.
    pub fn all(&self) -> Vec<(Instance, Arc<dyn Driver>)> {
        let instances: Vec<_> = lock(&self.instances).values().cloned().collect();
        instances
            .into_iter()
            .filter_map(|(instance, kind)| Some((instance, self.driver(kind)?)))
            .collect()
    }

    fn driver(&self, kind: DriverKind) -> Option<Arc<dyn Driver>> {
        self.drivers.iter().find(|d| d.kind() == kind).cloned()
    }

    fn key_lock(&self, key: &ObjectKey) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks).entry(key.clone()).or_default().clone()
    }

    fn report_of(&self, instance: &Instance) -> ContainerReport {
        ContainerReport {
            node: self.config.name.clone(),
            epoch: instance.epoch,
            state: instance.state,
            exit_code: instance.exit_code,
            started_at: instance.started_at,
            finished_at: instance.finished_at,
            reason: instance.reason.clone(),
            restarts: instance.restarts,
        }
    }

    /// Queues a report of a container's state and returns at once. One task per container
    /// sends its reports in order, skipping any that a newer one replaced while it waited, so
    /// that a slow or hung API holds neither the container's lock nor the caller.
    fn send(self: &Arc<Self>, key: &ObjectKey, report: ContainerReport) {
        let mut outbox = lock(&self.outbox);
        let outgoing = outbox.entry(key.clone()).or_default();
        outgoing.next = Some(report);
        if !outgoing.sending {
            outgoing.sending = true;
            tokio::spawn(self.clone().send_queued(key.clone()));
        }
    }

    async fn send_queued(self: Arc<Self>, key: ObjectKey) {
        loop {
            let report = {
                let mut outbox = lock(&self.outbox);
                match outbox.get_mut(&key).and_then(|o| o.next.take()) {
                    Some(report) => report,
                    None => {
                        outbox.remove(&key);
                        return;
                    }
                }
            };
            self.report(&key, report).await;
        }
    }

    /// Whether a newer report of `key` waits to be sent.
    fn superseded(&self, key: &ObjectKey) -> bool {
        lock(&self.outbox)
            .get(key)
            .is_some_and(|o| o.next.is_some())
    }

    /// Reports a container's state, trying a few times over a few seconds when the API does
    /// not answer (each try within the API client's deadline); what still fails is reported
    /// again at the next resync.
    async fn report(&self, key: &ObjectKey, report: ContainerReport) {
        let state = report.state;
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=REPORT_ATTEMPTS {
            match self.api.report_container(key, &report).await {
                Ok(Reported::Recorded) => {
                    tracing::debug!(%key, state = state.as_str(), epoch = report.epoch, "reported");
                    if let Some(wanted) = lock(&self.wanted).get_mut(key) {
                        wanted.report = Some(report);
                    }
                    return;
                }
                Ok(Reported::Stale) => {
                    tracing::info!(%key, epoch = report.epoch, "the binding moved on; the watch will say where");
                    return;
                }
                Err(e) if attempt == REPORT_ATTEMPTS => {
                    tracing::warn!(%key, error = %format!("{e:#}"), "could not report; trying again at the next resync");
                    return;
                }
                Err(e) => {
                    tracing::debug!(%key, error = %format!("{e:#}"), "report failed; retrying")
                }
            }
            if self.superseded(key) {
                return;
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// Makes the driver's copy of `key` match its binding.
    async fn reconcile(self: Arc<Self>, key: ObjectKey) {
        while self.reconcile_once(key.clone()).await == Again::Yes {}
    }

    /// One try of [`Agent::reconcile`]. The volumes of a copy to start are asked of the API
    /// before the container's lock is taken; when what to start changed meanwhile, it is tried
    /// again.
    async fn reconcile_once(self: &Arc<Self>, key: ObjectKey) -> Again {
        let mounts = match self.mounts_to_start(&key).await {
            Ok(mounts) => mounts,
            Err((epoch, failure)) => {
                lock(&self.failed).insert((key.clone(), epoch));
                self.send(&key, failure);
                return Again::No;
            }
        };
        let key_lock = self.key_lock(&key);
        let _guard = key_lock.lock().await;
        let wanted = lock(&self.wanted).get(&key).cloned();
        let resting = lock(&self.resting).contains(&key);
        let mut have = lock(&self.instances).get(&key).cloned();
        if let Some((instance, kind)) = &have
            && wanted
                .as_ref()
                .is_none_or(|w| w.run.epoch != instance.epoch)
        {
            if wanted.is_none() && resting && instance.state.is_final() {
                return Again::No;
            }
            let Some(driver) = self.driver(*kind) else {
                return Again::No;
            };
            if wanted.is_some() {
                match self.previous.keep(driver.as_ref(), instance).await {
                    Ok(()) => {
                        tracing::debug!(%key, epoch = instance.epoch, "kept the output of the run replaced")
                    }
                    Err(e) => {
                        tracing::warn!(%key, error = %format!("{e:#}"), "cannot keep the output of the run replaced");
                        self.previous.forget(&key).await;
                    }
                }
            }
            match driver.remove(instance).await {
                Ok(()) => {
                    tracing::info!(%key, epoch = instance.epoch, "removed a copy nobody wants");
                    lock(&self.instances).remove(&key);
                    have = None;
                }
                Err(e) => {
                    tracing::warn!(%key, error = %format!("{e:#}"), "could not remove; trying again at the next resync");
                    return Again::No;
                }
            }
        }
        let Some(wanted) = wanted else {
            lock(&self.failed).retain(|(failed, _)| *failed != key);
            if !resting {
                self.previous.forget(&key).await;
            }
            return Again::No;
        };
        let run = &wanted.run;
        let current = wanted.report.as_ref().filter(|r| r.is_of(&run.placement));
        if let Some(reason) = &run.placement.stop {
            self.stop(&key, have, current, reason).await;
            return Again::No;
        }
        if let Some((instance, _)) = have {
            let report = self.report_of(&instance);
            if current != Some(&report) {
                self.send(&key, report);
            }
            return Again::No;
        }
        if !self.should_start(&key, run, current) {
            return Again::No;
        }
        let mut run = run.clone();
        if !run.spec.template.volumes.is_empty() {
            let Some(mounts) = mounts else {
                return Again::Yes;
            };
            run.mounts = mounts;
        }
        self.start(&key, &run).await;
        Again::No
    }

    /// Whether `run` is to be started: it has not ended, nor failed to start.
    fn should_start(&self, key: &ObjectKey, run: &Run, current: Option<&ContainerReport>) -> bool {
        let ended = current.is_some_and(|r| r.state.is_final());
        !ended && !lock(&self.failed).contains(&(key.clone(), run.epoch))
    }

    /// The volumes of `key`'s binding when it is to be started and has any; when they cannot
    /// be had, the epoch and the report of its failure.
    async fn mounts_to_start(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<Vec<Mount>>, (u64, ContainerReport)> {
        let Some(wanted) = lock(&self.wanted).get(key).cloned() else {
            return Ok(None);
        };
        let run = &wanted.run;
        let current = wanted.report.as_ref().filter(|r| r.is_of(&run.placement));
        let running = lock(&self.instances)
            .get(key)
            .is_some_and(|(instance, _)| instance.epoch == run.epoch);
        if run.spec.template.volumes.is_empty()
            || run.placement.stop.is_some()
            || running
            || !self.should_start(key, run, current)
        {
            return Ok(None);
        }
        self.mounts(key, run.spec.template.driver)
            .await
            .map(Some)
            .map_err(|e| {
                let reason = format!("cannot mount its volumes: {e:#}");
                (run.epoch, self.failure(run, reason))
            })
    }

    /// A report that `run` failed to start, for `reason`.
    fn failure(&self, run: &Run, reason: String) -> ContainerReport {
        ContainerReport {
            node: self.config.name.clone(),
            epoch: run.epoch,
            state: ContainerState::Failed,
            finished_at: Some(now_millis()),
            reason: Some(reason),
            restarts: run.placement.restarts,
            ..ContainerReport::default()
        }
    }

    /// Starts `run`, whose volumes are resolved, and reports how that went.
    async fn start(self: &Arc<Self>, key: &ObjectKey, run: &Run) {
        let kind = run.spec.template.driver;
        let Some(driver) = self.driver(kind) else {
            let reason = format!(
                "node {} has no {kind:?} driver; it offers {}",
                self.config.name,
                self.driver_names().join(", ")
            );
            lock(&self.failed).insert((key.clone(), run.epoch));
            self.send(key, self.failure(run, reason));
            return;
        };
        let pulling = {
            let agent = self.clone();
            let key = key.clone();
            let report = ContainerReport {
                state: ContainerState::Pulling,
                finished_at: None,
                reason: None,
                ..self.failure(run, String::new())
            };
            move || agent.send(&key, report.clone())
        };
        match driver.start(run, &pulling).await {
            Ok(instance) => {
                tracing::info!(%key, epoch = run.epoch, id = %instance.id, "started");
                let report = self.report_of(&instance);
                lock(&self.instances).insert(key.clone(), (instance, kind));
                self.send(key, report);
            }
            Err(e) => {
                tracing::warn!(%key, error = %format!("{e:#}"), "could not start");
                lock(&self.failed).insert((key.clone(), run.epoch));
                self.send(key, self.failure(run, format!("{e:#}")));
            }
        }
    }

    /// The container's volumes from the API, with their local folders made. A folder the
    /// agent makes belongs to the process user, so that Process containers may write there,
    /// and a Process container's folders must be open to that user.
    async fn mounts(&self, key: &ObjectKey, driver: DriverKind) -> anyhow::Result<Vec<Mount>> {
        let mounts = self.api.mounts(key).await?;
        let user = self.config.process_user.as_ref().filter(|u| !u.is_root());
        let process = driver == DriverKind::Process;
        for mount in mounts.iter().filter(|m| m.kind == "Local") {
            let folder = std::path::Path::new(&mount.source);
            let made = !folder.exists();
            tokio::fs::create_dir_all(folder)
                .await
                .with_context(|| format!("cannot create {}", mount.source))?;
            let Some(user) = user else { continue };
            if made {
                user.own(folder)?;
            }
            if let Some(blocked) = user.blocked_at(folder).filter(|_| process) {
                bail!(
                    "volume {}: its folder {} cannot be reached by the process user {}: {} is \
                     closed to them (chmod o+x {} on the node)",
                    mount.name,
                    mount.source,
                    user.name,
                    blocked.display(),
                    blocked.display()
                );
            }
        }
        Ok(mounts)
    }

    /// Stops the container as its binding asks (maxRunTime, drain) and reports why.
    async fn stop(
        self: &Arc<Self>,
        key: &ObjectKey,
        have: Option<(Instance, DriverKind)>,
        current: Option<&ContainerReport>,
        reason: &str,
    ) {
        let Some((mut instance, kind)) = have else {
            if let Some(current) = current.filter(|r| !r.state.is_final()) {
                let report = ContainerReport {
                    state: ContainerState::Failed,
                    finished_at: Some(now_millis()),
                    reason: Some(reason.to_string()),
                    ..current.clone()
                };
                self.send(key, report);
            }
            return;
        };
        if instance.state == ContainerState::Running
            && let Some(driver) = self.driver(kind)
        {
            match driver.stop(&instance).await {
                Ok(exit) => instance.ended(&exit.unwrap_or(Exit {
                    id: instance.id.clone(),
                    code: Some(137),
                    finished_at: now_millis(),
                    reason: None,
                })),
                Err(e) => {
                    tracing::warn!(%key, error = %format!("{e:#}"), "could not stop");
                    return;
                }
            }
            instance.state = ContainerState::Failed;
            instance.reason = Some(reason.to_string());
            lock(&self.instances).insert(key.clone(), (instance.clone(), kind));
        }
        let report = self.report_of(&instance);
        if current != Some(&report) {
            self.send(key, report);
        }
    }

    /// A container ended by itself.
    async fn exited(self: Arc<Self>, exit: Exit) {
        let key = lock(&self.instances)
            .iter()
            .find(|(_, (instance, _))| instance.id == exit.id)
            .map(|(key, _)| key.clone());
        let Some(key) = key else {
            return;
        };
        let key_lock = self.key_lock(&key);
        let _guard = key_lock.lock().await;
        let report = {
            let mut instances = lock(&self.instances);
            let Some((instance, _)) = instances.get_mut(&key) else {
                return;
            };
            if instance.id != exit.id || instance.state.is_final() {
                return;
            }
            instance.ended(&exit);
            tracing::info!(%key, epoch = instance.epoch, code = ?exit.code, "ended");
            self.report_of(instance)
        };
        self.send(&key, report);
    }

    fn driver_names(&self) -> Vec<String> {
        self.drivers
            .iter()
            .map(|d| format!("{:?}", d.kind()).to_lowercase())
            .collect()
    }

    /// Reads what the drivers run: new copies are adopted, ends missed are recorded, and each
    /// key gets at most one copy (the newest epoch).
    async fn adopt(self: &Arc<Self>) {
        for driver in &self.drivers {
            let listed = match driver.list().await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::warn!(driver = ?driver.kind(), error = %format!("{e:#}"), "cannot list containers");
                    continue;
                }
            };
            let mut extra = Vec::new();
            {
                let mut instances = lock(&self.instances);
                for found in listed {
                    match instances.get_mut(&found.key) {
                        Some((known, _)) if known.id == found.id => {
                            if found.state.is_final() && !known.state.is_final() {
                                *known = found;
                            }
                        }
                        Some((known, _)) if known.epoch >= found.epoch => extra.push(found),
                        Some(_) | None => {
                            if let Some((older, _)) =
                                instances.insert(found.key.clone(), (found, driver.kind()))
                            {
                                extra.push(older);
                            }
                        }
                    }
                }
            }
            for duplicate in extra {
                tracing::info!(key = %duplicate.key, epoch = duplicate.epoch, "removing a duplicate copy");
                if let Err(e) = driver.remove(&duplicate).await {
                    tracing::warn!(error = %format!("{e:#}"), "could not remove a duplicate");
                }
            }
        }
    }

    fn set_wanted(&self, resource: &Resource) -> ObjectKey {
        let key = key_of(resource);
        let status = resource.status.clone().unwrap_or_default();
        let placement: Placement = dora_crds::decode(&status["computed"]).unwrap_or_default();
        let spec: Option<ContainerSpec> = dora_crds::decode(&resource.spec).ok();
        let report: Option<ContainerReport> = dora_crds::decode(&status["observed"]).ok();
        let ran_here = report.as_ref().is_some_and(|r| r.node == self.config.name);
        let resting = spec.is_some() && placement.node.is_none() && ran_here;
        if resting {
            lock(&self.resting).insert(key.clone());
        } else {
            lock(&self.resting).remove(&key);
        }
        let mut wanted = lock(&self.wanted);
        match spec {
            Some(spec) if placement.node.as_deref() == Some(self.config.name.as_str()) => {
                wanted.insert(
                    key.clone(),
                    Wanted {
                        run: Run {
                            key: key.clone(),
                            epoch: placement.epoch,
                            spec,
                            placement,
                            mounts: Vec::new(),
                        },
                        report,
                    },
                );
            }
            _ => {
                wanted.remove(&key);
            }
        }
        key
    }

    /// Reconciles every key the agent wants, runs or keeps a previous run of.
    fn reconcile_all(self: &Arc<Self>) {
        let mut keys: HashSet<ObjectKey> = lock(&self.wanted).keys().cloned().collect();
        keys.extend(lock(&self.instances).keys().cloned());
        keys.extend(self.previous.keys());
        for key in keys {
            tokio::spawn(self.clone().reconcile(key));
        }
    }

    /// Lists, then watches, the node's containers until `stop`; starts over when the watch
    /// breaks, and every few minutes.
    async fn follow(self: Arc<Self>, stop: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.clone().list_and_watch(&stop).await {
                Ok(()) if stop.is_cancelled() => return,
                Ok(()) => {
                    delay = Duration::from_millis(200);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "watching containers failed; starting over");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    async fn list_and_watch(self: Arc<Self>, stop: &CancellationToken) -> anyhow::Result<()> {
        let (items, version) = self.api.list().await?;
        // Dropped, not cleared: a reconcile meanwhile must not find a listed container unwanted.
        let listed: HashSet<ObjectKey> = items.iter().map(key_of).collect();
        lock(&self.wanted).retain(|key, _| listed.contains(key));
        lock(&self.resting).retain(|key| listed.contains(key));
        for item in &items {
            self.set_wanted(item);
        }
        self.reconcile_all();
        let mut changes = Box::pin(self.api.watch(&version).await?);
        let relist = tokio::time::sleep(RELIST);
        tokio::pin!(relist);
        loop {
            let change = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = &mut relist => return Ok(()),
                change = changes.next() => change,
            };
            match change {
                Some(Ok(Change::Applied(resource))) => {
                    let key = self.set_wanted(&resource);
                    tokio::spawn(self.clone().reconcile(key));
                }
                Some(Ok(Change::Gone(key))) => {
                    lock(&self.wanted).remove(&key);
                    lock(&self.resting).remove(&key);
                    tokio::spawn(self.clone().reconcile(key));
                }
                Some(Ok(Change::Bookmark(_))) => {}
                Some(Err(e)) => return Err(e),
                None => bail!("the watch ended"),
            }
        }
    }

    fn node_report(&self, gpus: &Gpus, endpoint: Option<&str>) -> NodeReport {
        NodeReport {
            heartbeat: now_millis(),
            cpu: hardware::cpus(),
            memory_bytes: hardware::memory_bytes(),
            gpus: gpus.devices(),
            drivers: self.driver_names(),
            version: env!("CARGO_PKG_VERSION").into(),
            endpoint: endpoint.map(str::to_string),
        }
    }
}

/// Runs a node agent until `stop` is cancelled.
///
/// The process becomes non-dumpable first: its `/proc/PID/environ` (which may hold
/// `DORA_NODE_TOKEN`), memory and descriptors are closed to the processes it starts, which
/// run as its user, and they cannot trace it.
pub async fn run(config: AgentConfig, stop: CancellationToken) -> anyhow::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("cannot make the node agent non-dumpable")?;
    let api = ApiClient::new(config.api.clone(), &config.zone, &config.name)?;
    let (exits, mut ended) = mpsc::unbounded_channel();
    let mut drivers: Vec<Arc<dyn Driver>> = Vec::new();
    if config.process {
        let root = config.state_dir.join("process");
        let user = config.process_user.clone();
        drivers.push(Arc::new(ProcessDriver::new(root, user, exits.clone())?));
    }
    match config.docker {
        DockerUse::Off => {}
        use_docker => {
            match DockerDriver::connect(&config.api.cluster_id(), &config.name, exits.clone()).await
            {
                Ok(docker) => drivers.push(Arc::new(docker)),
                Err(e) if use_docker == DockerUse::IfAvailable => {
                    tracing::info!(error = %format!("{e:#}"), "running without the Docker driver");
                }
                Err(e) => return Err(e),
            }
        }
    }
    let fake = config.fake_gpus.clone();
    let gpus = tokio::task::spawn_blocking(move || Gpus::discover(fake)).await?;
    let previous = PreviousRuns::new(config.state_dir.join("previous"))?;
    let agent = Arc::new(Agent {
        config,
        api,
        drivers,
        wanted: Mutex::default(),
        resting: Mutex::default(),
        instances: Mutex::default(),
        previous,
        failed: Mutex::default(),
        locks: Mutex::default(),
        outbox: Mutex::default(),
    });
    let endpoint = match agent.config.listen {
        Some(listen) => Some(crate::server::start(agent.clone(), listen, stop.clone()).await?),
        None => None,
    };
    register(&agent, &gpus, endpoint.as_deref(), &stop).await;
    tracing::info!(
        node = %agent.config.name,
        zone = %agent.config.zone,
        drivers = ?agent.driver_names(),
        gpus = gpus.source(),
        endpoint = ?endpoint,
        "node agent running"
    );
    agent.adopt().await;
    tokio::spawn(agent.clone().follow(stop.clone()));
    tokio::spawn(heartbeat(agent.clone(), gpus, endpoint, stop.clone()));
    let mut resync = tokio::time::interval(agent.config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            Some(exit) = ended.recv() => {
                tokio::spawn(agent.clone().exited(exit));
            }
            _ = resync.tick() => {
                agent.adopt().await;
                agent.reconcile_all();
            }
        }
    }
}

/// Heartbeats the node until `stop`, apart from the resync, so that a slow API delays neither.
async fn heartbeat(
    agent: Arc<Agent>,
    gpus: Gpus,
    endpoint: Option<String>,
    stop: CancellationToken,
) {
    let mut heartbeat = tokio::time::interval(agent.config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = heartbeat.tick() => {}
        }
        let report = agent.node_report(&gpus, endpoint.as_deref());
        if let Err(e) = agent.api.report_node(&report).await {
            tracing::warn!(error = %format!("{e:#}"), "heartbeat failed");
        }
    }
}

/// Registers the node, trying again until the API answers or `stop`.
async fn register(agent: &Agent, gpus: &Gpus, endpoint: Option<&str>, stop: &CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match agent
            .api
            .report_node(&agent.node_report(gpus, endpoint))
            .await
        {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot register the node yet"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
