//! A zone in one process: a store (SQLite, or a fresh keyspace on the Cassandra of
//! `DORA_CQL_URL`), schedulers, credit systems and hollow nodes started on demand.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use dora_controller::creditsys::CreditConfig;
use dora_controller::scheduler::SchedulerConfig;
use dora_crds::Kind;
use dora_crds::status::{ContainerReport, Placement};
use dora_nodeagent::sim::{self, SimConfig, SimHandle};
use dora_runtime::{LeaseConfig, WatchConfig};
use dora_store::cql::{CqlConfig, CqlStore};
use dora_store::sqlite::SqliteStore;
use dora_store::{
    ActionRecord, Event, EventQuery, ListQuery, ObjectKey, Precondition, Row, SpecWrite, Store,
};
use tokio_util::sync::CancellationToken;

pub const ZONE: &str = "z1";
pub const WS: &str = "ws";

#[derive(Clone, Copy)]
pub enum Backend {
    Sqlite,
    Cql,
}

pub struct Zone {
    pub store: Arc<dyn Store>,
    cql: Option<CqlStore>,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

/// Fast polling for tests.
pub fn watch_config() -> WatchConfig {
    WatchConfig {
        poll: Duration::from_millis(50),
        relist: Duration::from_secs(30),
        page: 500,
        gather: Duration::from_millis(5),
    }
}

impl Zone {
    pub async fn new(backend: Backend) -> Zone {
        let dir = tempfile::tempdir().unwrap();
        let (store, cql): (Arc<dyn Store>, _) = match backend {
            Backend::Sqlite => (
                Arc::new(SqliteStore::open(dir.path().join("dora.db")).unwrap()),
                None,
            ),
            Backend::Cql => {
                let url = match std::env::var("DORA_CQL_URL") {
                    Ok(url) => url,
                    Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                        panic!("CI=true but DORA_CQL_URL is not set: Cassandra must run")
                    }
                    Err(_) => "cql://127.0.0.1:9042/dora".into(),
                };
                let keyspace =
                    format!("sched_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                let config = CqlConfig::from_url(&url)
                    .unwrap()
                    .with_keyspace(&keyspace)
                    .unwrap();
                let store = CqlStore::connect(config)
                    .await
                    .expect("a CQL cluster: run `scripts/cassandra start`");
                (Arc::new(store.clone()), Some(store))
            }
        };
        Zone {
            store,
            cql,
            _dir: dir,
            stop: CancellationToken::new(),
        }
    }

    pub async fn finish(self) {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(store) = &self.cql {
            store
                .drop_keyspace()
                .await
                .expect("the test keyspace drops");
        }
    }

    pub fn scheduler_config(&self, holder: &str) -> SchedulerConfig {
        let mut config = SchedulerConfig::new(ZONE);
        config.lease = LeaseConfig {
            holder: holder.into(),
            ttl: Duration::from_secs(3),
        };
        config.node_grace = Duration::from_secs(2);
        config.reschedule_after = Duration::from_secs(1);
        config.restart_backoff = Duration::from_millis(200);
        config.watch = watch_config();
        config
    }

    /// Starts a scheduler; the returned token stops it.
    pub fn scheduler(&self, config: SchedulerConfig) -> CancellationToken {
        let stop = self.stop.child_token();
        tokio::spawn(dora_runtime::run_leader(
            self.store.clone(),
            config,
            stop.clone(),
        ));
        stop
    }

    pub fn credit_config(&self, holder: &str) -> CreditConfig {
        let mut config = CreditConfig::new(ZONE);
        config.lease = LeaseConfig {
            holder: holder.into(),
            ttl: Duration::from_secs(3),
        };
        config.slice = Duration::from_millis(200);
        config.watch = watch_config();
        config
    }

    pub fn creditsys(&self, config: CreditConfig) -> CancellationToken {
        let stop = self.stop.child_token();
        tokio::spawn(dora_runtime::run_leader(
            self.store.clone(),
            config,
            stop.clone(),
        ));
        stop
    }

    /// Starts `nodes` hollow nodes named `<prefix>NNNNN` with `gpus` (e.g. "4xA100").
    pub fn sim(&self, prefix: &str, nodes: usize, gpus: &str) -> SimHandle {
        let mut config = SimConfig::new(ZONE, nodes);
        config.prefix = prefix.into();
        config.gpus = dora_nodeagent::hardware::parse_gpus(gpus).unwrap();
        config.cpus = 8;
        config.heartbeat = Duration::from_millis(500);
        config.start_delay = Duration::from_millis(200);
        config.watch = watch_config();
        let handle = SimHandle::default();
        tokio::spawn(sim::run_on_store(
            self.store.clone(),
            config,
            handle.clone(),
            self.stop.child_token(),
        ));
        handle
    }

    /// Applies a manifest the way the API does (validated, normalized), as `owner`.
    pub async fn apply(&self, owner: &str, manifest: &str) {
        for document in dora_crds::parse_documents(manifest) {
            let document = document.expect("the test manifest is valid");
            let key = ObjectKey::new(
                document.kind,
                document.metadata.zone.as_deref().unwrap_or(ZONE),
                document.metadata.workspace.as_deref().unwrap_or(WS),
                &document.metadata.name,
            );
            let write = SpecWrite {
                key,
                precondition: Precondition::None,
                owner: owner.into(),
                labels: Default::default(),
                meta: Default::default(),
                spec_hash: dora_crds::spec_hash(document.kind, &document.spec),
                spec: document.spec,
                desired: serde_json::Value::Null,
                computed: None,
                fence: None,
            };
            self.store.put_spec(write).await.unwrap();
        }
    }

    /// Asks the scheduler for `action` on `key`, as `dora pause` and friends do.
    pub async fn action(&self, key: &ObjectKey, action: &str) {
        let now = dora_store::now_millis();
        let record = ActionRecord {
            id: uuid::Uuid::now_v7().to_string(),
            key: key.clone(),
            destination: "scheduler".into(),
            action: action.into(),
            payload: serde_json::json!({"by": "alice"}),
            created: now,
            expires: now + 60_000,
        };
        self.store.put_action(record).await.unwrap();
    }

    pub async fn list(&self, kind: Kind) -> Vec<Row> {
        let mut query = ListQuery {
            kind: kind.name().into(),
            scope: kind.scope(),
            zone: ZONE.into(),
            workspace: None,
            after: None,
            limit: 1000,
        };
        let mut rows = Vec::new();
        loop {
            let page = self.store.list(&query).await.unwrap();
            rows.extend(page.rows);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return rows,
            }
        }
    }

    /// The containers of `workload`, by index.
    pub async fn containers(&self, workload: &str) -> Vec<Container> {
        let mut containers: Vec<Container> = self
            .list(Kind::Container)
            .await
            .into_iter()
            .filter(|row| row.resource["workload"] == workload)
            .map(Container::from)
            .collect();
        containers.sort_by_key(|c| c.index);
        containers
    }

    /// Waits until the scheduler has marked `count` nodes ready: it knows them all, so that a
    /// placement that depends on the whole set (spreading) sees it.
    pub async fn nodes_ready(&self, count: usize) {
        eventually(
            &format!("{count} nodes ready"),
            Duration::from_secs(30),
            || async {
                let ready = self
                    .list(Kind::Node)
                    .await
                    .iter()
                    .filter(|row| row.computed["ready"] == true)
                    .count();
                (ready >= count).then_some(())
            },
        )
        .await;
    }

    pub async fn workload(&self, name: &str) -> Option<Row> {
        self.store
            .get(&ObjectKey::new(Kind::Workload, ZONE, WS, name))
            .await
            .unwrap()
    }

    pub async fn events(&self, reason: &str) -> Vec<Event> {
        let query = EventQuery {
            zone: ZONE.into(),
            limit: 10_000,
            ..EventQuery::default()
        };
        self.store
            .events(&query)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.reason == reason)
            .collect()
    }
}

/// A container row, decoded.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub index: u64,
    pub hash: String,
    pub placement: Placement,
    pub report: Option<ContainerReport>,
}

impl From<Row> for Container {
    fn from(row: Row) -> Self {
        let placement: Placement = dora_crds::decode(&row.computed).unwrap_or_default();
        let report: Option<ContainerReport> =
            dora_crds::decode(&row.observed)
                .ok()
                .filter(|r: &ContainerReport| {
                    r.epoch == placement.epoch && Some(&r.node) == placement.node.as_ref()
                });
        Container {
            name: row.key.name.clone(),
            index: row.resource["index"].as_u64().unwrap_or_default(),
            hash: row.resource["hash"].as_str().unwrap_or_default().into(),
            placement,
            report,
        }
    }
}

impl Container {
    pub fn running(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.state == dora_crds::status::ContainerState::Running)
    }

    pub fn node(&self) -> Option<&str> {
        self.placement.node.as_deref()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A process workload manifest.
pub fn workload(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Workload\nmetadata: {{name: {name}}}\nspec:\n  replica: {{count: {replicas}}}\n  driver: Process\n{extra}"
    )
}

/// Asserts that no GPU minor or CPU core is held twice on one node by containers that have not
/// ended.
pub fn assert_no_double_booking(containers: &[Container]) {
    let mut held: std::collections::HashSet<(String, &'static str, u32)> = Default::default();
    for c in containers {
        let Some(node) = c.node() else { continue };
        if c.report.as_ref().is_some_and(|r| r.state.is_final()) {
            continue;
        }
        for gpu in &c.placement.gpus {
            assert!(
                held.insert((node.into(), "gpu", *gpu)),
                "GPU {gpu} on {node} is booked twice"
            );
        }
        for cpu in &c.placement.cpus {
            assert!(
                held.insert((node.into(), "cpu", *cpu)),
                "CPU {cpu} on {node} is booked twice"
            );
        }
    }
}
