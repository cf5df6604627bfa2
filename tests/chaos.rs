//! Chaos: a rollout on hollow nodes while a random control-plane process (the API server, the
//! scheduler, the credit system, one Cassandra node) is killed with SIGKILL every 10 s and
//! started again; at the end every workload converges with exactly its replicas, no container
//! index twice, no GPU booked twice, no acknowledged apply lost, and the credit sums equal a
//! recount from the containers' start times. `scripts/test` runs it on three Cassandra nodes
//! (RF=3, `DORA_CQL_CLUSTER_URL`); `DORA_CHAOS_CONTAINERS` (default 10,000) and
//! `DORA_CHAOS_SECONDS` (default 120, how long processes are killed) size it. It prints its
//! figures.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dora_crds::Kind;
use dora_crds::status::{ContainerReport, ContainerState, Placement};
use dora_store::{ListQuery, Row, Store};

/// Replicas per workload; one in ten workloads asks for a GPU per replica.
const REPLICAS: usize = 100;
const KILL_EVERY: Duration = Duration::from_secs(10);
/// An A100 costs one credit per GPU-second.
const CREDITS_PER_HOUR: f64 = 3600.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

fn cluster_url() -> String {
    match std::env::var("DORA_CQL_CLUSTER_URL") {
        Ok(url) => url,
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but DORA_CQL_CLUSTER_URL is not set: three Cassandra nodes must run")
        }
        Err(_) => {
            "cql://127.0.0.1:9042,127.0.0.2:9042,127.0.0.3:9042/dora?replication=datacenter1:3"
                .into()
        }
    }
}

/// One process of the control plane: how to start it, and the running child.
struct Process {
    name: &'static str,
    args: Vec<String>,
    log: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(support::DORA)
            .args(&self.args)
            .env("DORA_CONFIG", &self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Whether it was started and has ended by itself.
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().is_ok_and(|status| status.is_some()))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cassandra(args: &[&str]) -> bool {
    Command::new(support::repo().join("scripts/cassandra"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free loopback port, so that the API server comes back on the same address.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn workload_manifest(name: &str, gpu: bool) -> String {
    let selectors = if gpu {
        "    gpu: {product_name: A100, count: 1}\n"
    } else {
        "    cpu: {product_name: All, count: 1}\n"
    };
    format!(
        "apiVersion: v1\nkind: Workload\nmetadata: {{name: {name}}}\nspec:\n  replica: {{count: {REPLICAS}}}\n  driver: Process\n  config: {{cmd: sleep 100000}}\n  selectors:\n{selectors}"
    )
}

/// `dora apply -f FILE` until it is acknowledged (exit 0), through whatever the API server
/// is going through; how many tries it took.
fn apply_until_acknowledged(home: &Path, file: &Path, stop: &AtomicBool) -> Option<u32> {
    let mut tries = 0;
    while !stop.load(Ordering::Relaxed) {
        tries += 1;
        let output = Command::new(support::DORA)
            .args(["apply", "-f"])
            .arg(file)
            .env("DORA_CONFIG", home.join("config.yaml"))
            .output()
            .unwrap();
        if output.status.success() {
            return Some(tries);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

async fn list_all(store: &dyn Store, kind: Kind, zone: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                kind: kind.name().into(),
                scope: kind.scope(),
                zone: zone.into(),
                workspace: None,
                after: after.take(),
                limit: 1000,
            })
            .await
            .unwrap();
        rows.extend(page.rows);
        match page.next {
            Some(next) => after = Some(next),
            None => return rows,
        }
    }
}

/// What the end state breaks, one line per violation; how many containers run; and how many
/// do not yet, by node and state. `acknowledged` holds the spec of each acknowledged apply.
async fn violations(
    store: &dyn Store,
    acknowledged: &BTreeMap<String, serde_json::Value>,
) -> (Vec<String>, usize, BTreeMap<String, usize>) {
    let mut found = Vec::new();
    let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
    let workloads: HashMap<String, Row> = list_all(store, Kind::Workload, "default")
        .await
        .into_iter()
        .map(|row| (row.key.name.clone(), row))
        .collect();
    for (name, spec) in acknowledged {
        // The stored spec has the server's defaults filled in; what was sent must be in it.
        match workloads.get(name) {
            None => found.push(format!("acknowledged apply of {name} lost")),
            Some(row)
                if row.resource["replica"] != spec["replica"]
                    || row.resource["selectors"] != spec["selectors"] =>
            {
                found.push(format!("{name} holds another spec than acknowledged"))
            }
            Some(_) => {}
        }
    }
    let containers = list_all(store, Kind::Container, "default").await;
    let mut indices: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut gpus: HashMap<(String, u32), Vec<String>> = HashMap::new();
    let mut running = 0;
    for row in &containers {
        let workload = row.resource["workload"].as_str().unwrap_or_default();
        let index = row
            .key
            .name
            .rsplit_once('.')
            .and_then(|(_, i)| i.parse::<usize>().ok());
        match index {
            Some(index) => indices.entry(workload.into()).or_default().push(index),
            None => found.push(format!("container {} has no index", row.key.name)),
        }
        let place: Placement = dora_crds::decode(&row.computed).unwrap_or_default();
        let report: Option<ContainerReport> = dora_crds::decode(&row.observed).ok();
        match report.as_ref().filter(|r| r.is_of(&place)) {
            Some(r) if r.state == ContainerState::Running => running += 1,
            current => {
                let node = place.node.as_deref().unwrap_or("no node");
                let state = current.map_or("no report".into(), |r| format!("{:?}", r.state));
                *waiting.entry(format!("{node}, {state}")).or_default() += 1;
            }
        }
        if place.holds(report.as_ref())
            && let Some(node) = &place.node
        {
            for gpu in &place.gpus {
                gpus.entry((node.clone(), *gpu))
                    .or_default()
                    .push(row.key.name.clone());
            }
        }
    }
    for name in acknowledged.keys() {
        let mut seen = indices.remove(name).unwrap_or_default();
        seen.sort_unstable();
        let wanted: Vec<usize> = (0..REPLICAS).collect();
        if seen != wanted {
            let distinct: BTreeSet<_> = seen.iter().collect();
            found.push(format!(
                "{name}: {} containers, {} distinct indices, want 0..{REPLICAS} once each",
                seen.len(),
                distinct.len()
            ));
        }
    }
    for (workload, seen) in indices {
        found.push(format!(
            "{} containers of unknown workload {workload}",
            seen.len()
        ));
    }
    for ((node, gpu), holders) in gpus {
        if holders.len() > 1 {
            found.push(format!("GPU {gpu} of {node} booked by {holders:?}"));
        }
    }
    (found, running, waiting)
}

/// The admin's credits against a recount: every running container's GPUs at the A100 price
/// from its start to the account's last slice.
async fn credit_check(store: &dyn Store) -> (f64, f64) {
    let accounts = list_all(store, Kind::Usercredit, "default").await;
    let account = accounts
        .iter()
        .find(|row| row.key.name == "admin")
        .expect("the admin's Usercredit");
    let total = account.computed["total"].as_f64().unwrap_or(0.0);
    let until = account.computed["countedUntil"].as_i64().unwrap_or(0);
    let mut recount = 0.0;
    for row in list_all(store, Kind::Container, "default").await {
        let place: Placement = dora_crds::decode(&row.computed).unwrap_or_default();
        let Ok(report) = dora_crds::decode::<ContainerReport>(&row.observed) else {
            continue;
        };
        if !report.is_of(&place) {
            continue;
        }
        let Some(started) = report.started_at else {
            continue;
        };
        let end = report.finished_at.unwrap_or(until).min(until);
        if end > started {
            recount +=
                place.gpus.len() as f64 * CREDITS_PER_HOUR / 3_600_000.0 * (end - started) as f64;
        }
    }
    (total, recount)
}

#[test]
fn a_rollout_converges_exactly_while_control_plane_processes_are_killed() {
    let containers = env_number("DORA_CHAOS_CONTAINERS", 10_000) as usize;
    let chaos_for = Duration::from_secs(env_number("DORA_CHAOS_SECONDS", 120));
    let workloads = containers.div_ceil(REPLICAS);
    let gpu_workloads: BTreeSet<usize> = (0..workloads).filter(|i| i % 10 == 9).collect();
    // 64 cores and 8 A100s a node; room for every replica with a quarter to spare.
    let nodes = (containers / 48).max(4);
    let url = cluster_url();
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let hosts = base.rsplit_once('/').map_or(base, |(hosts, _)| hosts);
    let keyspace = format!("chaos_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let store_url = format!("{hosts}/{keyspace}?{query}");

    let home = support::home();
    let config = home.path().join("config.yaml");
    let port = free_port();
    let store_args = |command: &str| -> Vec<String> {
        vec![command.into(), "--store".into(), store_url.clone()]
    };
    let process = |name: &'static str, args: Vec<String>| Process {
        name,
        args,
        log: home.path().join(format!("{name}.log")),
        config: config.clone(),
        child: None,
    };
    let mut api_args = vec![
        "up".to_string(),
        "--no-node".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        home.path().join("data").display().to_string(),
        "--store".into(),
        store_url.clone(),
        "--credit-slice".into(),
        "1s".into(),
    ];
    // Applies come from one client address as fast as the API takes them.
    api_args.extend(["--address-rate-limit".into(), "0".into()]);
    // On a loaded machine a hollow node's heartbeats can fail for the 80 s after which its
    // containers move to other nodes. The credits then rightly count both placements, while
    // the recount sees only a container's last: containers stay where they are bound here
    // (moving them is the node tests' subject), by `dora up`'s scheduler as by the other.
    let stay = ["--reschedule-after".to_string(), "1h".into()];
    api_args.extend(stay.clone());
    api_args.extend(["--user-rate-limit".into(), "0".into()]);
    let mut sim_args = store_args("sim");
    sim_args.extend([
        "--sim-nodes".into(),
        nodes.to_string(),
        "--sim-cpus".into(),
        "64".into(),
        "--sim-gpus".into(),
        "8xA100".into(),
        "--sim-start-delay".into(),
        "10ms".into(),
    ]);
    let mut credit_args = store_args("creditsys");
    credit_args.extend(["--credit-slice".into(), "1s".into()]);
    let mut api = process("apiserver", api_args);
    let mut scheduler_args = store_args("scheduler");
    scheduler_args.extend(stay);
    let mut scheduler = process("scheduler", scheduler_args);
    let mut creditsys = process("creditsys", credit_args);
    let mut sim = process("hollow-nodes", sim_args);
    api.start();
    // The first start makes the admin and its profile; the others wait for the keyspace.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !config.exists() {
        assert!(Instant::now() < deadline, "dora up made no profile");
        // A cluster just through the failover test may not agree on its schema at once.
        if api.exited() {
            api.start();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    scheduler.start();
    creditsys.start();
    sim.start();

    let files = home.path().join("manifests");
    std::fs::create_dir_all(&files).unwrap();
    let price = files.join("price.yaml");
    std::fs::write(
        &price,
        format!("apiVersion: v1\nkind: Resourcecredit\nmetadata: {{name: a100}}\nspec:\n  product_name: A100\n  credit: {{per: {{hour: {CREDITS_PER_HOUR}}}}}\n"),
    )
    .unwrap();
    let never = AtomicBool::new(false);
    apply_until_acknowledged(home.path(), &price, &never).unwrap();

    // The rollout, on a thread of its own and spread over the chaos: every workload applied
    // until acknowledged.
    let pace = chaos_for / workloads as u32;
    let rollout_done = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<BTreeMap<String, serde_json::Value>>> = Arc::default();
    let retries = Arc::new(Mutex::new(0u32));
    let started = Instant::now();
    let rollout = {
        let (home, files) = (home.path().to_path_buf(), files.clone());
        let (done, acknowledged, retries) =
            (rollout_done.clone(), acknowledged.clone(), retries.clone());
        let gpu_workloads = gpu_workloads.clone();
        std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            for i in 0..workloads {
                let name = format!("roll-{i:04}");
                let text = workload_manifest(&name, gpu_workloads.contains(&i));
                let file = files.join(format!("{name}.yaml"));
                std::fs::write(&file, &text).unwrap();
                let tries = apply_until_acknowledged(&home, &file, &stop).unwrap();
                *retries.lock().unwrap() += tries - 1;
                let spec =
                    serde_saphyr::from_str::<serde_json::Value>(&text).unwrap()["spec"].clone();
                acknowledged.lock().unwrap().insert(name, spec);
                std::thread::sleep(pace);
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    // The chaos: a random victim every 10 s, for as long as asked and the rollout lasts.
    let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
    let mut down_cassandra: Option<(String, std::thread::JoinHandle<bool>)> = None;
    let mut round = 0u64;
    while started.elapsed() < chaos_for || !rollout_done.load(Ordering::Relaxed) {
        std::thread::sleep(KILL_EVERY);
        if started.elapsed() > chaos_for * 4 {
            break;
        }
        if let Some((_, restart)) = &down_cassandra
            && restart.is_finished()
        {
            let (node, restart) = down_cassandra.take().unwrap();
            assert!(restart.join().unwrap(), "Cassandra node {node} came back");
        }
        round += 1;
        let choices = if down_cassandra.is_some() { 3 } else { 4 };
        let victim = (uuid::Uuid::new_v4().as_u128() % choices) as usize;
        let process = match victim {
            0 => &mut api,
            1 => &mut scheduler,
            2 => &mut creditsys,
            _ => {
                let node = (1 + round % 3).to_string();
                assert!(cassandra(&["kill", &node]), "kill Cassandra node {node}");
                *kills.entry("cassandra").or_default() += 1;
                let restart_node = node.clone();
                let restart = std::thread::spawn(move || cassandra(&["restart", &restart_node]));
                down_cassandra = Some((node, restart));
                continue;
            }
        };
        process.kill();
        *kills.entry(process.name).or_default() += 1;
        std::thread::sleep(Duration::from_millis(500));
        process.start();
    }
    let chaos_time = started.elapsed();
    if let Some((node, restart)) = down_cassandra.take() {
        assert!(restart.join().unwrap(), "Cassandra node {node} came back");
    }
    rollout.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(
        acknowledged.len(),
        workloads,
        "every apply was acknowledged"
    );

    // Convergence: every replica running, then the checks.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(dora_store::open(&store_url))
        .expect("the chaos keyspace opens");
    let calm = Instant::now();
    let deadline = calm + Duration::from_secs(600);
    let mut progress = Instant::now();
    let (found, running) = loop {
        let (found, running, waiting) = runtime.block_on(violations(&*store, &acknowledged));
        if (found.is_empty() && running == containers) || Instant::now() > deadline {
            break (found, running);
        }
        if progress.elapsed() >= Duration::from_secs(10) {
            let mut waiting: Vec<_> = waiting.into_iter().collect();
            waiting.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
            waiting.truncate(5);
            eprintln!(
                "chaos: {} s after the last kill, {running}/{containers} running (most waiting, by node and state: {waiting:?}); {} violations so far{}",
                calm.elapsed().as_secs(),
                found.len(),
                found
                    .first()
                    .map(|v| format!(", first: {v}"))
                    .unwrap_or_default()
            );
            progress = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let converged = calm.elapsed();
    // Two slices after convergence the credit system has counted up to a recent instant.
    std::thread::sleep(Duration::from_secs(3));
    let (total, recount) = runtime.block_on(credit_check(&*store));
    let rows = runtime.block_on(list_all(&*store, Kind::Container, "default"));
    let bytes: usize = rows
        .iter()
        .map(|row| {
            row.resource.to_string().len()
                + row.computed.to_string().len()
                + row.observed.to_string().len()
                + row.key.name.len()
                + row.uid.len()
        })
        .sum();
    let credit_error = (total - recount).abs() / recount.max(1.0);

    println!("chaos: {containers} containers in {workloads} workloads on {nodes} hollow nodes");
    println!(
        "chaos: {} s of kills every {} s: {kills:?}",
        chaos_time.as_secs(),
        KILL_EVERY.as_secs()
    );
    println!(
        "chaos: acknowledged applies {}, retried {}",
        acknowledged.len(),
        retries.lock().unwrap()
    );
    println!(
        "chaos: converged {} s after the last kill; {running}/{containers} running",
        converged.as_secs()
    );
    println!(
        "chaos: credits {total:.1}, recount {recount:.1} (relative difference {credit_error:.2e})"
    );
    println!(
        "chaos: the zone's containers partition: {} rows, {} bytes of values ({} per row)",
        rows.len(),
        bytes,
        bytes / rows.len().max(1)
    );
    println!("chaos: violations {}", found.len());
    for violation in found.iter().take(20) {
        println!("  {violation}");
    }
    assert!(found.is_empty(), "{} violations", found.len());
    assert_eq!(running, containers, "every replica runs");
    assert!(
        credit_error < 1e-3,
        "credits {total} differ from the recount {recount}"
    );
    let _ = runtime.block_on(dora_store::cql::CqlStore::drop_keyspace_at(&store_url));
    drop((api, scheduler, creditsys, sim));
}
