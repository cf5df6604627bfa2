//! Scheduler throughput and latency against hollow nodes, in one process:
//! `cargo bench -p dora-controller --bench scheduler -- NODES CONTAINERS [STORE_URL]`.
//!
//! Registers NODES hollow nodes (32 CPUs each), applies workloads of 100 one-core replicas
//! totalling CONTAINERS, waits until every container is bound and running, and prints
//! placements per second and the apply→bound and apply→running latencies (p50, p99), each
//! measured when a watcher of the store reads the bound (running) row back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use dora_controller::scheduler::SchedulerConfig;
use dora_crds::Kind;
use dora_crds::status::{ContainerReport, ContainerState, Placement};
use dora_nodeagent::sim::{self, SimConfig, SimHandle};
use dora_runtime::{Target, WatchConfig, WatchEvent, watch};
use dora_store::cql::CqlStore;
use dora_store::{ListQuery, ObjectKey, Precondition, SpecWrite, Store, now_millis};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ZONE: &str = "bench";
const REPLICAS: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let nodes: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100);
    let containers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let url = args.get(2).cloned();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(nodes, containers, url));
}

async fn run(nodes: usize, containers: usize, url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (store, label) = match &url {
        Some(url) => (dora_store::open(url).await.unwrap(), "cassandra"),
        None => {
            let url = format!("sqlite:{}", dir.path().join("bench.db").display());
            (dora_store::open(&url).await.unwrap(), "sqlite")
        }
    };
    let stop = CancellationToken::new();
    let watch_config = WatchConfig {
        poll: Duration::from_millis(100),
        relist: Duration::from_secs(600),
        page: 1000,
        gather: Duration::from_millis(10),
    };
    let mut hollow = SimConfig::new(ZONE, nodes);
    hollow.heartbeat = Duration::from_secs(10);
    hollow.start_delay = Duration::from_millis(50);
    hollow.watch = watch_config;
    let registered = Instant::now();
    let agents = tokio::spawn(sim::run_on_store(
        store.clone(),
        hollow,
        SimHandle::default(),
        stop.clone(),
    ));
    wait_for_nodes(&*store, nodes).await;
    eprintln!(
        "{nodes} hollow nodes registered in {:.1} s",
        registered.elapsed().as_secs_f64()
    );
    let mut config = SchedulerConfig::new(ZONE);
    config.node_grace = Duration::from_secs(60);
    config.watch = watch_config;
    tokio::spawn(dora_runtime::run_leader(
        store.clone(),
        config,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut events = watch(
        store.clone(),
        Target::new(Kind::Container, ZONE),
        watch_config,
        stop.clone(),
    );
    let workloads = containers.div_ceil(REPLICAS);
    let started = Instant::now();
    let applied_at = now_millis();
    let spec = serde_json::json!({
        "replica": {"count": REPLICAS},
        "driver": "Process",
        "config": {"cmd": ["sleep", "3600"]},
        "selectors": {"cpu": {"product_name": "All", "count": 1}},
    });
    futures::stream::iter(0..workloads)
        .for_each_concurrent(16, |i| apply(&*store, format!("w{i:05}"), &spec))
        .await;
    let applied = started.elapsed();
    let total = workloads * REPLICAS;
    let mut progress = Progress::default();
    wait_until_running(&mut events, &mut progress, total).await;
    let bound: Vec<i64> = progress.seen.values().filter_map(|(b, _)| *b).collect();
    let running: Vec<i64> = progress.seen.values().filter_map(|(_, s)| *s).collect();
    let elapsed = started.elapsed();
    let mut bound: Vec<i64> = bound.into_iter().map(|t| t - applied_at).collect();
    let mut running: Vec<i64> = running.into_iter().map(|t| t - applied_at).collect();
    bound.sort_unstable();
    running.sort_unstable();
    let last_bound = *bound.last().unwrap_or(&0) as f64 / 1000.0;
    println!(
        "{label}: {nodes} nodes, {total} containers in {workloads} workloads: applied in {:.2} s, all running after {:.2} s",
        applied.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  placements/s {:.0} (all {total} bound {last_bound:.2} s after the first apply)",
        total as f64 / last_bound.max(0.001)
    );
    println!(
        "  apply→bound   p50 {} ms  p99 {} ms",
        percentile(&bound, 0.50),
        percentile(&bound, 0.99)
    );
    println!(
        "  apply→running p50 {} ms  p99 {} ms",
        percentile(&running, 0.50),
        percentile(&running, 0.99)
    );
    paced(&*store, &mut events, &mut progress, total).await;
    stop.cancel();
    let _ = agents.await;
    if let Some(url) = url.filter(|u| u.starts_with("cql://")) {
        // Each run makes its own keyspace; left behind, their memtables fill the node's heap.
        CqlStore::drop_keyspace_at(&url).await.unwrap();
    }
}

/// Steady load after the burst: small workloads applied one at a time into the full cluster,
/// each measured from its own apply.
async fn paced(
    store: &dyn Store,
    events: &mut tokio::sync::mpsc::Receiver<WatchEvent>,
    progress: &mut Progress,
    before: usize,
) {
    const WORKLOADS: usize = 20;
    const REPLICAS: usize = 5;
    const EVERY: Duration = Duration::from_millis(200);
    let spec = serde_json::json!({
        "replica": {"count": REPLICAS},
        "driver": "Process",
        "config": {"cmd": ["sleep", "3600"]},
        "selectors": {"cpu": {"product_name": "All", "count": "100m"}},
    });
    let applying = async {
        let mut applied = HashMap::new();
        for i in 0..WORKLOADS {
            let name = format!("paced{i:03}");
            applied.insert(name.clone(), now_millis());
            apply(store, name, &spec).await;
            tokio::time::sleep(EVERY).await;
        }
        applied
    };
    let (applied, ()) = tokio::join!(
        applying,
        wait_until_running(events, progress, before + WORKLOADS * REPLICAS)
    );
    let mut latencies: Vec<i64> = progress
        .seen
        .iter()
        .filter_map(|(key, (_, running))| {
            let (workload, _) = key.name.rsplit_once('.')?;
            Some(running.as_ref()? - applied.get(workload)?)
        })
        .collect();
    latencies.sort_unstable();
    println!(
        "  steady: {WORKLOADS} workloads of {REPLICAS} applied one per {} ms: apply→running p50 {} ms  p99 {} ms",
        EVERY.as_millis(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
}

async fn apply(store: &dyn Store, name: String, spec: &serde_json::Value) {
    let write = SpecWrite {
        key: ObjectKey::new(Kind::Workload, ZONE, "bench", &name),
        precondition: Precondition::None,
        owner: "bench".into(),
        labels: Default::default(),
        meta: Default::default(),
        spec_hash: dora_crds::spec_hash(Kind::Workload, spec),
        spec: spec.clone(),
        desired: serde_json::Value::Null,
        computed: None,
        fence: None,
    };
    store.put_spec(write).await.unwrap();
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn wait_for_nodes(store: &dyn Store, nodes: usize) {
    loop {
        let rows = list(store, Kind::Node).await;
        if rows.iter().filter(|r| !r.observed.is_null()).count() >= nodes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows the containers until `total` run; returns when each was bound and started.
async fn wait_until_running(
    events: &mut tokio::sync::mpsc::Receiver<WatchEvent>,
    progress: &mut Progress,
    total: usize,
) {
    let mut last_print = Instant::now();
    while let Some(event) = events.recv().await {
        match event {
            WatchEvent::Applied(row) => progress.record(&row),
            WatchEvent::Listed(rows) => rows.iter().for_each(|row| progress.record(row)),
            WatchEvent::Deleted(_) => {}
        }
        if last_print.elapsed() > Duration::from_secs(1) {
            eprint!(
                "\r  {} bound, {} running of {total}   ",
                progress.seen.len(),
                progress.running
            );
            last_print = Instant::now();
        }
        if progress.running >= total {
            eprintln!();
            return;
        }
    }
    panic!("the watch ended");
}

/// When each container was bound and started.
#[derive(Default)]
struct Progress {
    seen: HashMap<ObjectKey, (Option<i64>, Option<i64>)>,
    running: usize,
}

impl Progress {
    fn record(&mut self, row: &dora_store::Row) {
        let placement: Placement = dora_crds::decode_written(&row.computed).unwrap_or_default();
        if placement.node.is_none() {
            return;
        }
        let report: Option<ContainerReport> = dora_crds::decode_written(&row.observed);
        let started = report
            .is_some_and(|r| r.epoch == placement.epoch && r.state == ContainerState::Running);
        // Both instants are when the row was read back: a binding counts once it is stored.
        let now = now_millis();
        let entry = self.seen.entry(row.key.clone()).or_default();
        entry.0.get_or_insert(now);
        if entry.1.is_none() && started {
            entry.1 = Some(now);
            self.running += 1;
        }
    }
}

async fn list(store: &dyn Store, kind: Kind) -> Vec<Arc<dora_store::Row>> {
    let mut query = ListQuery {
        kind: kind.name().into(),
        scope: kind.scope(),
        zone: ZONE.into(),
        workspace: None,
        after: None,
        limit: 5000,
    };
    let mut rows = Vec::new();
    loop {
        let page = store.list(&query).await.unwrap();
        rows.extend(page.rows.into_iter().map(Arc::new));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return rows,
        }
    }
}
