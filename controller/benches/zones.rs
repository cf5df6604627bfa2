//! Partition isolation of zones in one store:
//! `cargo bench -p dora-controller --bench zones -- NODES CONTAINERS OTHER [STORE_URL]`.
//!
//! Zone A's control plane (scheduler, credit system and garbage collector, as `dora up` runs
//! them) runs in a child process of its own, so that the memory and CPU measured are its own,
//! beside NODES hollow nodes of zone A in this process. Workloads of 100 one-core replicas
//! totalling CONTAINERS are applied and followed until every container runs. This is measured
//! three ways: alone, in a store (keyspace or file) of its own; and in a second store, beside
//! three other zones (`b`, `c`, `d`) of OTHER running containers each, idle (30 s after they
//! were written), and while those zones are busy, their containers reporting a new status at a
//! fixed rate (DORA_BENCH_BUSY_RATE writes/s per zone, default 50), as their nodes would. The
//! three ways take turns, for DORA_BENCH_ROUNDS rounds (default 5), each run as a new zone
//! (`a1`, `a2`, ...) that starts from empty partitions. Prints the medians of zone A's
//! placements/s, its control plane's peak memory and CPU time, and the rows the store returned
//! to each of zone A's components, counted by a wrapper around the store handle each of them is
//! given; ratios are medians of each round's ratio. With DORA_BENCH_STORE_PID, the CPU time
//! the store's server process used during each run is printed too. RUST_LOG (e.g. `warn`) shows the components'
//! logs.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dora_controller::creditsys::{self, CreditConfig};
use dora_controller::gc::{self, GcConfig};
use dora_controller::scheduler::{self, SchedulerConfig};
use dora_crds::Kind;
use dora_crds::spec::{ContainerSpec, WorkloadSpec};
use dora_crds::status::{ContainerReport, ContainerState, Placement};
use dora_nodeagent::sim::{self, SimConfig, SimHandle};
use dora_runtime::{Target, WatchConfig, WatchEvent, watch};
use dora_store::cql::CqlStore;
use dora_store::{
    ActionRecord, Change, ChangeFilter, Cursor, Deletion, Event, EventQuery, Fence, Lease,
    ListQuery, ObjectKey, Page, Precondition, Row, SpecOutcome, SpecWrite, StatusColumn, Store,
    StoreError, VersionRecord, now_millis,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the child process: the zone whose control plane it runs.
const CHILD_ZONE: &str = "DORA_BENCH_ZONE";
/// Set in the child process: the store it opens.
const CHILD_STORE: &str = "DORA_BENCH_STORE";
const OTHER_ZONES: [&str; 3] = ["b", "c", "d"];
const WORKSPACE: &str = "bench";
const REPLICAS: usize = 100;
/// Spec writes per `put_specs` call while filling the other zones, and calls at once.
const FILL_CHUNK: usize = 500;
const FILL_CALLS: usize = 4;
/// Status writes at once while filling.
const FILL_STATUS: usize = 256;
/// Zone A's components, in the order printed.
const COMPONENTS: [&str; 4] = [
    scheduler::COMPONENT,
    creditsys::COMPONENT,
    gc::COMPONENT,
    "hollow nodes",
];
/// Counters of rows read, in the order printed.
const READS: [&str; 7] = [
    "listed", "got", "feed", "early", "lookback", "after", "records",
];

/// How long zone A's containers may make no progress before a run gives up.
const STALL: Duration = Duration::from_secs(30);
/// The pause after filling the other zones, before they count as idle.
const SETTLE: Duration = Duration::from_secs(30);

const WATCH: WatchConfig = WatchConfig {
    poll: Duration::from_millis(100),
    relist: Duration::from_secs(600),
    page: 1000,
    gather: Duration::from_millis(10),
};

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let (Ok(zone), Ok(url)) = (std::env::var(CHILD_ZONE), std::env::var(CHILD_STORE)) {
        return runtime.block_on(control_plane(zone, url));
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let nodes: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let containers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let other: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let busy_rate: f64 = std::env::var("DORA_BENCH_BUSY_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50.0);
    let rounds: usize = std::env::var("DORA_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let url = args.get(3).cloned();
    runtime.block_on(run(nodes, containers, other, busy_rate, rounds, url));
}

async fn run(
    nodes: usize,
    containers: usize,
    other: usize,
    busy_rate: f64,
    rounds: usize,
    url: Option<String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (url, label) = match url {
        Some(url) => (url, "cassandra"),
        None => (
            format!("sqlite:{}", dir.path().join("bench.db").display()),
            "sqlite",
        ),
    };
    let zone_a = ZoneA { nodes, containers };
    let alone = Shared::open(beside(&url, "_alone")).await;
    let shared = Shared::open(url).await;
    let measured = measure_all(&zone_a, &alone, &shared, other, busy_rate, rounds).await;
    for store in [alone, shared] {
        store.drop_keyspace().await;
    }
    let report = measured.unwrap_or_else(|stall| {
        eprintln!("{stall}");
        std::process::exit(1);
    });
    println!(
        "{label}: zone A = {nodes} hollow nodes, {} containers; {rounds} rounds, each running zone A alone in a store of its own, then beside zones b, c, d idle and busy in another, in turn (earlier runs' zones stay, stopped); zones b, c, d: {other} running containers each (filled in {:.0} s)",
        containers.div_ceil(REPLICAS) * REPLICAS,
        report.filled_s
    );
    println!(
        "  busy: each of b, c, d rewrites one container's observed status {busy_rate} times/s (all three together achieved {:.0} writes/s)",
        report.busy_writes_per_s
    );
    print_table(&report.runs);
}

/// `url` with `suffix` added to its keyspace or file name.
fn beside(url: &str, suffix: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => format!("{base}{suffix}?{query}"),
        None => format!("{url}{suffix}"),
    }
}

/// A store zone A's runs share, and its URL for the child process.
struct Shared {
    store: Arc<dyn Store>,
    url: String,
}

impl Shared {
    async fn open(url: String) -> Shared {
        let store = dora_store::open(&url).await.unwrap();
        Shared { store, url }
    }

    /// Drops the keyspace of a CQL store: each run makes its own, and left behind, their
    /// memtables fill the node's heap.
    async fn drop_keyspace(self) {
        if self.url.starts_with("cql://") {
            CqlStore::drop_keyspace_at(&self.url).await.unwrap();
        }
    }
}

/// The ways zone A is measured, in the order printed.
const WAYS: [&str; 3] = ["alone", "idle", "busy"];

/// Zone A's runs in each of [`WAYS`], round by round, and what the other zones did meanwhile.
struct Report {
    runs: [Vec<Figures>; 3],
    /// How long filling the other zones took.
    filled_s: f64,
    /// The status writes per second the busy zones achieved together.
    busy_writes_per_s: f64,
}

/// Fills the other zones in `shared`, then runs zone A `rounds` times each way: alone in
/// `alone`, and beside the other zones in `shared`, idle and busy. The ways take turns within a
/// round, and each round starts with the next way, so that a drift of the machine's speed
/// over the benchmark touches every way alike.
async fn measure_all(
    zone_a: &ZoneA,
    alone: &Shared,
    shared: &Shared,
    other: usize,
    busy_rate: f64,
    rounds: usize,
) -> Result<Report, String> {
    let started = Instant::now();
    fill(&*shared.store, other).await;
    let filled_s = started.elapsed().as_secs_f64();
    eprintln!("filled {other} containers in each of zones b, c, d in {filled_s:.0} s");
    // Idle means at rest: the store flushes and compacts what the fill wrote first.
    tokio::time::sleep(SETTLE).await;

    let mut runs: [Vec<Figures>; 3] = Default::default();
    let (mut written, mut busy_for) = (0, Duration::ZERO);
    for round in 0..rounds {
        for way in (0..WAYS.len()).map(|w| (w + round) % WAYS.len()) {
            let zone = format!("a{}", round * WAYS.len() + way + 1);
            eprintln!(
                "round {} of {rounds}, {}: zone {zone}",
                round + 1,
                WAYS[way]
            );
            let figures = match way {
                0 => zone_a.measure(alone, &zone).await?,
                1 => zone_a.measure(shared, &zone).await?,
                _ => {
                    let busy = Busy::start(&shared.store, other, busy_rate);
                    let figures = zone_a.measure(shared, &zone).await;
                    let (count, elapsed) = busy.stop().await;
                    written += count;
                    busy_for += elapsed;
                    figures?
                }
            };
            runs[way].push(figures);
        }
    }
    Ok(Report {
        runs,
        filled_s,
        busy_writes_per_s: written as f64 / busy_for.as_secs_f64(),
    })
}

/// The other zones' status writers of a busy run.
struct Busy {
    writers: Vec<tokio::task::JoinHandle<()>>,
    written: Arc<AtomicU64>,
    stop: CancellationToken,
    since: Instant,
}

impl Busy {
    fn start(store: &Arc<dyn Store>, containers: usize, rate: f64) -> Busy {
        let stop = CancellationToken::new();
        let written = Arc::new(AtomicU64::new(0));
        let writers = OTHER_ZONES
            .iter()
            .map(|zone| {
                tokio::spawn(busy(
                    store.clone(),
                    zone,
                    containers,
                    rate,
                    written.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Busy {
            writers,
            written,
            stop,
            since: Instant::now(),
        }
    }

    /// Stops the writers; the writes they made, and over how long.
    async fn stop(self) -> (u64, Duration) {
        let elapsed = self.since.elapsed();
        self.stop.cancel();
        for writer in self.writers {
            writer.await.unwrap();
        }
        (self.written.load(Ordering::Relaxed), elapsed)
    }
}

/// What one run of zone A measured.
struct Figures {
    placements_per_s: f64,
    running_after: f64,
    /// Containers bound but not seen running when the run gave up waiting.
    stuck: u64,
    peak_rss: u64,
    cpu: f64,
    /// CPU time of the store's server process (DORA_BENCH_STORE_PID) from the first apply
    /// until every container ran; 0 when it is not known.
    store_cpu: f64,
    /// Rows read per component: each counter of [`READS`], and `foreign`.
    reads: HashMap<String, Value>,
}

/// The middle of `values`.
fn middle<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

impl Figures {
    /// The median of each figure over `runs`.
    fn median(runs: &[Figures]) -> Figures {
        let of = |figure: &dyn Fn(&Figures) -> f64| middle(runs.iter().map(figure).collect());
        let reads = runs[0]
            .reads
            .iter()
            .map(|(component, counters)| {
                let counters: serde_json::Map<String, Value> = counters
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(|counter| {
                        let values = runs
                            .iter()
                            .map(|run| run.reads[component][counter].as_u64().unwrap())
                            .collect();
                        (counter.clone(), json!(middle(values)))
                    })
                    .collect();
                (component.clone(), Value::Object(counters))
            })
            .collect();
        Figures {
            placements_per_s: of(&|f| f.placements_per_s),
            running_after: of(&|f| f.running_after),
            stuck: runs.iter().map(|f| f.stuck).sum(),
            peak_rss: middle(runs.iter().map(|f| f.peak_rss).collect()),
            cpu: of(&|f| f.cpu),
            store_cpu: of(&|f| f.store_cpu),
            reads,
        }
    }

    /// Rows read by all of zone A's components.
    fn all_rows(&self) -> u64 {
        COMPONENTS.iter().map(|c| self.rows(c)).sum()
    }

    fn rows(&self, component: &str) -> u64 {
        READS
            .iter()
            .map(|counter| self.reads[component][*counter].as_u64().unwrap())
            .sum()
    }

    fn foreign(&self) -> u64 {
        COMPONENTS
            .iter()
            .map(|c| self.reads[*c]["foreign"].as_u64().unwrap())
            .sum()
    }
}

fn print_table(runs: &[Vec<Figures>; 3]) {
    let [alone, idle, busy] = runs.each_ref().map(|runs| Figures::median(runs));
    let (alone, idle, busy) = (&alone, &idle, &busy);
    println!(
        "  {:<34} {:>13} {:>13} {:>7} {:>13} {:>7}",
        "zone A", "alone", "idle", "ratio", "busy", "ratio"
    );
    // A ratio is the median of the rounds' ratios: each round's runs ran close in time.
    let ratio_row = |name: &str, figure: &dyn Fn(&Figures) -> f64, higher_is_better: bool| {
        let ratio = |with: &[Figures]| {
            middle(
                runs[0]
                    .iter()
                    .zip(with)
                    .map(|(alone, with)| {
                        if higher_is_better {
                            figure(with) / figure(alone)
                        } else {
                            figure(alone) / figure(with)
                        }
                    })
                    .collect(),
            )
        };
        println!(
            "  {name:<34} {:>13.1} {:>13.1} {:>7.2} {:>13.1} {:>7.2}",
            figure(alone),
            figure(idle),
            ratio(&runs[1]),
            figure(busy),
            ratio(&runs[2])
        );
    };
    ratio_row("placements/s", &|f| f.placements_per_s, true);
    ratio_row("all running after (s)", &|f| f.running_after, false);
    ratio_row(
        "control plane peak RSS (MiB)",
        &|f| f.peak_rss as f64 / 1048576.0,
        false,
    );
    ratio_row("control plane CPU (s)", &|f| f.cpu, false);
    if alone.store_cpu > 0.0 {
        ratio_row("store server CPU (s)", &|f| f.store_cpu, false);
    }
    let count_row = |name: &str, figure: &dyn Fn(&Figures) -> u64| {
        let delta = |other: u64| format!("{:+}", other as i64 - figure(alone) as i64);
        println!(
            "  {name:<34} {:>13} {:>13} {:>7} {:>13} {:>7}",
            figure(alone),
            figure(idle),
            delta(figure(idle)),
            figure(busy),
            delta(figure(busy))
        );
    };
    for component in COMPONENTS {
        count_row(&format!("rows read by {component}"), &|f| f.rows(component));
    }
    count_row("rows read, all of zone A's", &Figures::all_rows);
    for counter in READS {
        count_row(&format!("  of which {counter}"), &|f| {
            COMPONENTS
                .iter()
                .map(|c| f.reads[*c][counter].as_u64().unwrap())
                .sum()
        });
    }
    count_row("rows of other zones read", &Figures::foreign);
    count_row("containers never running, all runs", &|f| f.stuck);
    let spread = |runs: &[Figures]| {
        let rows = runs.iter().map(Figures::all_rows);
        format!("{}-{}", rows.clone().min().unwrap(), rows.max().unwrap())
    };
    println!(
        "  {:<34} {:>13} {:>13} {:>7} {:>13}",
        "rows read, fewest-most of the runs",
        spread(&runs[0]),
        spread(&runs[1]),
        "",
        spread(&runs[2])
    );
    println!(
        "  (ratio: throughput with/alone, costs alone/with, goal >= 0.9; row counts: difference from alone, goal 0)"
    );
    println!(
        "  (listed: rows of lists; got: rows of gets; feed: change entries; early: entries read before they were final; lookback: entries read again behind the cursor, for late ones; after: rows read for changes; records: leases, events, actions, versions)"
    );
}

/// Zone A's side of a run: its hollow nodes and workloads here, its control plane in a child.
struct ZoneA {
    nodes: usize,
    containers: usize,
}

impl ZoneA {
    /// Runs zone A as `zone` until every container runs, and what it measured; an error
    /// saying how far it got if the containers stop making progress.
    async fn measure(&self, shared: &Shared, zone: &str) -> Result<Figures, String> {
        let store = &shared.store;
        let stop = CancellationToken::new();
        let hollow_reads = Arc::new(Reads::default());
        let mut hollow = SimConfig::new(zone, self.nodes);
        // Registration reports every node once; heartbeats during the run would make the
        // rows read grow with its length rather than with its work.
        hollow.heartbeat = Duration::from_secs(3600);
        hollow.start_delay = Duration::from_millis(50);
        hollow.watch = WATCH;
        let agents = tokio::spawn(sim::run_on_store(
            Counted::wrap(store.clone(), zone, hollow_reads.clone()),
            hollow,
            SimHandle::default(),
            stop.clone(),
        ));
        wait_for_nodes(&**store, zone, self.nodes).await;

        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ZONE, zone)
            .env(CHILD_STORE, &shared.url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_leaders(&**store, zone).await;

        // The bench's own watcher polls often: it times the placements.
        let timing = WatchConfig {
            poll: Duration::from_millis(25),
            ..WATCH
        };
        let mut events = watch(
            store.clone(),
            Target::new(Kind::Container, zone),
            timing,
            stop.clone(),
        );
        let workloads = self.containers.div_ceil(REPLICAS);
        let total = workloads * REPLICAS;
        let store_pid = std::env::var("DORA_BENCH_STORE_PID").unwrap_or_default();
        let store_cpu = cpu_seconds(&store_pid);
        let applied_at = now_millis();
        let spec = workload_spec();
        futures::stream::iter(0..workloads)
            .for_each_concurrent(16, |i| apply(&**store, zone, format!("w{i:05}"), &spec))
            .await;
        let (last_bound, last_running, stuck) =
            wait_until_running(&**store, zone, &mut events, total).await?;
        let store_cpu = store_cpu
            .zip(cpu_seconds(&store_pid))
            .map_or(0.0, |(before, after)| after - before);
        // Let the components read what the last writes changed before they are stopped.
        tokio::time::sleep(Duration::from_secs(3)).await;

        child.stdin.take().unwrap().shutdown().await.unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert!(
            child.wait().await.unwrap().success(),
            "zone {zone}'s control plane failed"
        );
        stop.cancel();
        let _ = agents.await;

        let report: Value = serde_json::from_str(&out).unwrap();
        let mut reads: HashMap<String, Value> =
            serde_json::from_value(report["reads"].clone()).unwrap();
        reads.insert("hollow nodes".into(), hollow_reads.to_json());
        let bound_s = (last_bound - applied_at) as f64 / 1000.0;
        let figures = Figures {
            placements_per_s: total as f64 / bound_s.max(0.001),
            running_after: (last_running - applied_at) as f64 / 1000.0,
            stuck,
            peak_rss: report["peak_rss"].as_u64().unwrap(),
            cpu: report["cpu_s"].as_f64().unwrap(),
            store_cpu,
            reads,
        };
        let rows = figures.all_rows();
        eprintln!(
            "zone {zone}: {total} bound in {bound_s:.1} s, running after {:.1} s; rows read {rows}",
            figures.running_after,
        );
        Ok(figures)
    }
}

/// The child process: zone `zone`'s scheduler, credit system and garbage collector until its
/// standard input closes; then prints, as one JSON object, the rows each read, its peak
/// resident memory and its CPU time.
async fn control_plane(zone: String, url: String) {
    let store = dora_store::open(&url).await.unwrap();
    let stop = CancellationToken::new();
    let reads: Vec<(&str, Arc<Reads>)> = COMPONENTS[..3]
        .iter()
        .map(|c| (*c, Arc::new(Reads::default())))
        .collect();
    let handle = |component: &str| {
        let (_, reads) = reads.iter().find(|(c, _)| *c == component).unwrap();
        Counted::wrap(store.clone(), &zone, reads.clone())
    };
    let mut scheduler = SchedulerConfig::new(&zone);
    scheduler.node_grace = Duration::from_secs(7200);
    scheduler.watch = WATCH;
    let mut credits = CreditConfig::new(&zone);
    credits.watch = WATCH;
    let mut collector = GcConfig::new(&zone);
    collector.watch = WATCH;
    let components = [
        tokio::spawn(dora_runtime::run_leader(
            handle(scheduler::COMPONENT),
            scheduler,
            stop.clone(),
        )),
        tokio::spawn(dora_runtime::run_leader(
            handle(creditsys::COMPONENT),
            credits,
            stop.clone(),
        )),
        tokio::spawn(dora_runtime::run_leader(
            handle(gc::COMPONENT),
            collector,
            stop.clone(),
        )),
    ];
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
        .await
        .unwrap()
        .unwrap();
    stop.cancel();
    for component in components {
        component.await.unwrap();
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let reads: serde_json::Map<String, Value> = reads
        .iter()
        .map(|(c, r)| (c.to_string(), r.to_json()))
        .collect();
    let report = json!({
        "reads": reads,
        "peak_rss": peak_kib * 1024,
        "cpu_s": cpu_seconds("self").unwrap(),
    });
    println!("{report}");
}

/// The CPU time process `pid` (or `self`) has used, user and system.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // utime and stime, the 14th and 15th fields, in ticks of 1/100 s; the name before them
    // ends with the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Rows a store returned to one component.
#[derive(Default)]
struct Reads {
    /// Rows of lists.
    listed: AtomicU64,
    /// Rows of gets.
    got: AtomicU64,
    /// Change entries of the feed.
    feed: AtomicU64,
    /// Change entries read while still too young to be final.
    early: AtomicU64,
    /// Change entries read again behind the cursor, for late ones.
    lookback: AtomicU64,
    /// Rows read for changes.
    after: AtomicU64,
    /// Leases, events, actions and versions.
    records: AtomicU64,
    /// Those of them that belong to another zone (cluster-wide rows belong to every zone).
    foreign: AtomicU64,
}

impl Reads {
    fn to_json(&self) -> Value {
        json!({
            "listed": self.listed.load(Ordering::Relaxed),
            "got": self.got.load(Ordering::Relaxed),
            "feed": self.feed.load(Ordering::Relaxed),
            "early": self.early.load(Ordering::Relaxed),
            "lookback": self.lookback.load(Ordering::Relaxed),
            "after": self.after.load(Ordering::Relaxed),
            "records": self.records.load(Ordering::Relaxed),
            "foreign": self.foreign.load(Ordering::Relaxed),
        })
    }
}

/// The store as one of zone A's components sees it: each call goes to the real store, and
/// the rows it returns are counted.
struct Counted {
    inner: Arc<dyn Store>,
    zone: String,
    reads: Arc<Reads>,
}

impl Counted {
    fn wrap(inner: Arc<dyn Store>, zone: &str, reads: Arc<Reads>) -> Arc<dyn Store> {
        Arc::new(Counted {
            inner,
            zone: zone.to_string(),
            reads,
        })
    }

    fn count<'a>(&self, counter: &AtomicU64, zones: impl Iterator<Item = &'a str>) {
        let (mut all, mut foreign) = (0, 0);
        for zone in zones {
            all += 1;
            if !zone.is_empty() && zone != self.zone {
                foreign += 1;
            }
        }
        counter.fetch_add(all, Ordering::Relaxed);
        self.reads.foreign.fetch_add(foreign, Ordering::Relaxed);
    }
}

#[async_trait]
impl Store for Counted {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Row>, StoreError> {
        let row = self.inner.get(key).await?;
        self.count(&self.reads.got, row.iter().map(|r| r.key.zone.as_str()));
        Ok(row)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let page = self.inner.list(query).await?;
        self.count(
            &self.reads.listed,
            page.rows.iter().map(|r| r.key.zone.as_str()),
        );
        Ok(page)
    }

    async fn put_spec(&self, write: SpecWrite) -> Result<SpecOutcome, StoreError> {
        self.inner.put_spec(write).await
    }

    async fn put_specs(&self, writes: Vec<SpecWrite>) -> Vec<Result<SpecOutcome, StoreError>> {
        self.inner.put_specs(writes).await
    }

    async fn put_status(
        &self,
        key: &ObjectKey,
        column: StatusColumn,
        expected: Option<u64>,
        value: Value,
        fence: Option<&Fence>,
    ) -> Result<Arc<Row>, StoreError> {
        self.inner
            .put_status(key, column, expected, value, fence)
            .await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<Row, StoreError> {
        self.inner.delete(key, precondition).await
    }

    async fn delete_or_finalize(
        &self,
        key: &ObjectKey,
        precondition: Precondition,
    ) -> Result<Deletion, StoreError> {
        self.inner.delete_or_finalize(key, precondition).await
    }

    async fn delete_if_finalized(&self, row: &Row) -> Result<Option<Row>, StoreError> {
        self.inner.delete_if_finalized(row).await
    }

    async fn versions(&self, key: &ObjectKey) -> Result<Vec<VersionRecord>, StoreError> {
        let versions = self.inner.versions(key).await?;
        self.count(
            &self.reads.records,
            versions.iter().map(|v| v.key.zone.as_str()),
        );
        Ok(versions)
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        self.inner.head().await
    }

    async fn get_after(&self, change: &Change) -> Result<Option<Arc<Row>>, StoreError> {
        let row = self.inner.get_after(change).await?;
        self.count(&self.reads.after, row.iter().map(|r| r.key.zone.as_str()));
        Ok(row)
    }

    async fn rows_after(&self, changes: &[Change]) -> Result<Vec<Option<Arc<Row>>>, StoreError> {
        let rows = self.inner.rows_after(changes).await?;
        self.count(
            &self.reads.after,
            rows.iter().flatten().map(|r| r.key.zone.as_str()),
        );
        Ok(rows)
    }

    async fn check_reached(&self, cursor: &Cursor) -> Result<(), StoreError> {
        self.inner.check_reached(cursor).await
    }

    async fn changes(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let changes = self.inner.changes(filter, after, limit).await?;
        self.count(
            &self.reads.feed,
            changes.iter().map(|c| c.key.zone.as_str()),
        );
        Ok(changes)
    }

    async fn changes_early(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let changes = self.inner.changes_early(filter, after, limit).await?;
        self.count(
            &self.reads.early,
            changes.iter().map(|c| c.key.zone.as_str()),
        );
        Ok(changes)
    }

    fn lookback(&self) -> Option<Duration> {
        self.inner.lookback()
    }

    async fn changes_behind(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let changes = self
            .inner
            .changes_behind(filter, after, cursor, limit)
            .await?;
        self.count(
            &self.reads.lookback,
            changes.iter().map(|c| c.key.zone.as_str()),
        );
        Ok(changes)
    }

    fn has_young_entries(&self) -> bool {
        self.inner.has_young_entries()
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscribe()
    }

    async fn append_event(&self, event: Event) -> Result<(), StoreError> {
        self.inner.append_event(event).await
    }

    async fn append_events(&self, events: Vec<Event>) -> Result<(), StoreError> {
        self.inner.append_events(events).await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let events = self.inner.events(query).await?;
        self.count(&self.reads.records, events.iter().map(|e| e.zone.as_str()));
        Ok(events)
    }

    async fn put_action(&self, action: ActionRecord) -> Result<(), StoreError> {
        self.inner.put_action(action).await
    }

    async fn actions(
        &self,
        zone: &str,
        kind: &str,
        after: Option<&str>,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let actions = self.inner.actions(zone, kind, after).await?;
        self.count(
            &self.reads.records,
            actions.iter().map(|a| a.key.zone.as_str()),
        );
        Ok(actions)
    }

    async fn acquire_lease(
        &self,
        zone: &str,
        component: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner.acquire_lease(zone, component, holder, ttl).await
    }

    async fn lease(&self, zone: &str, component: &str) -> Result<Option<Lease>, StoreError> {
        let lease = self.inner.lease(zone, component).await?;
        self.count(&self.reads.records, lease.iter().map(|l| l.zone.as_str()));
        Ok(lease)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release_lease(lease).await
    }
}

fn workload_spec() -> Value {
    json!({
        "replica": {"count": REPLICAS},
        "driver": "Process",
        "config": {"cmd": ["sleep", "3600"]},
        "selectors": {"cpu": {"product_name": "All", "count": 1}},
    })
}

fn workload_write(zone: &str, name: &str, spec: &Value) -> SpecWrite {
    SpecWrite {
        key: ObjectKey::new(Kind::Workload, zone, WORKSPACE, name),
        precondition: Precondition::None,
        owner: "bench".into(),
        labels: Default::default(),
        meta: Default::default(),
        spec_hash: dora_crds::spec_hash(Kind::Workload, spec),
        spec: spec.clone(),
        desired: Value::Null,
        computed: None,
        fence: None,
    }
}

async fn apply(store: &dyn Store, zone: &str, name: String, spec: &Value) {
    store
        .put_spec(workload_write(zone, &name, spec))
        .await
        .unwrap();
}

/// Fills each of [`OTHER_ZONES`] with `containers` running containers, as their scheduler
/// and nodes would have written them (workloads of 100 replicas, each container bound to a
/// node and reported running), written straight through the store in large batches.
async fn fill(store: &dyn Store, containers: usize) {
    let spec = workload_spec();
    let template: WorkloadSpec = serde_json::from_value(spec.clone()).unwrap();
    let hash = dora_crds::spec_hash(Kind::Workload, &spec);
    let workloads: Vec<SpecWrite> = OTHER_ZONES
        .iter()
        .flat_map(|zone| {
            (0..containers.div_ceil(REPLICAS))
                .map(|w| workload_write(zone, &format!("w{w:05}"), &spec))
        })
        .collect();
    for result in store.put_specs(workloads).await {
        result.unwrap();
    }
    let now = now_millis();
    let keys: Vec<(usize, ObjectKey)> = (0..containers)
        .flat_map(|i| {
            OTHER_ZONES.iter().map(move |zone| {
                let name = format!("w{:05}.{}", i / REPLICAS, i % REPLICAS);
                (i, ObjectKey::new(Kind::Container, zone, WORKSPACE, &name))
            })
        })
        .collect();
    let write = |i: usize, key: ObjectKey| SpecWrite {
        key,
        precondition: Precondition::None,
        owner: "bench".into(),
        labels: Default::default(),
        meta: Default::default(),
        spec: dora_crds::encode(&ContainerSpec {
            workload: format!("w{:05}", i / REPLICAS),
            index: (i % REPLICAS) as u32,
            hash: hash.clone(),
            template: template.clone(),
        })
        .unwrap(),
        spec_hash: hash.clone(),
        desired: Value::Null,
        computed: Some(dora_crds::encode(&placement(i, now)).unwrap()),
        fence: None,
    };
    let mut done = 0;
    let mut specs = futures::stream::iter(keys.chunks(FILL_CHUNK))
        .map(|chunk| {
            let writes = chunk.iter().map(|(i, key)| write(*i, key.clone()));
            store.put_specs(writes.collect())
        })
        .buffer_unordered(FILL_CALLS);
    while let Some(results) = specs.next().await {
        for result in results {
            result.unwrap();
        }
        done += FILL_CHUNK;
        eprint!("\r  specs {done} of {}   ", containers * OTHER_ZONES.len());
    }
    let mut reports = futures::stream::iter(&keys)
        .map(|(i, key)| async move {
            let report = running_report(*i, now);
            store
                .put_status(key, StatusColumn::Observed, None, report, None)
                .await
                .unwrap();
        })
        .buffer_unordered(FILL_STATUS);
    let mut done = 0;
    while reports.next().await.is_some() {
        done += 1;
        if done % 10_000 == 0 {
            eprint!(
                "\r  reports {done} of {}   ",
                containers * OTHER_ZONES.len()
            );
        }
    }
    eprintln!();
}

/// Container `i` of another zone: on node `i / 32`, on core `i % 32`.
fn placement(i: usize, now: i64) -> Placement {
    Placement {
        node: Some(format!("sim-{:05}", i / 32)),
        epoch: 1,
        cpus: vec![(i % 32) as u32],
        millicpu: 1000,
        cpu_product: Some("Sim CPU".into()),
        bound_at: now,
        ..Default::default()
    }
}

fn running_report(i: usize, started: i64) -> Value {
    dora_crds::encode(&ContainerReport {
        node: format!("sim-{:05}", i / 32),
        epoch: 1,
        state: ContainerState::Running,
        started_at: Some(started),
        ..Default::default()
    })
    .unwrap()
}

/// Keeps `zone` busy until `stop`: one container after another, `rate` times a second, gets
/// a new observed status, as a node reporting a restarted container writes it.
async fn busy(
    store: Arc<dyn Store>,
    zone: &'static str,
    containers: usize,
    rate: f64,
    written: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writes = tokio::task::JoinSet::new();
    for i in (0..containers).cycle() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let name = format!("w{:05}.{}", i / REPLICAS, i % REPLICAS);
        let key = ObjectKey::new(Kind::Container, zone, WORKSPACE, &name);
        let (store, written) = (store.clone(), written.clone());
        writes.spawn(async move {
            let report = running_report(i, now_millis());
            if store
                .put_status(&key, StatusColumn::Observed, None, report, None)
                .await
                .is_ok()
            {
                written.fetch_add(1, Ordering::Relaxed);
            }
        });
        while writes.try_join_next().is_some() {}
    }
    writes.join_all().await;
}

async fn wait_for_nodes(store: &dyn Store, zone: &str, nodes: usize) {
    loop {
        let mut query = ListQuery {
            kind: Kind::Node.name().into(),
            scope: Kind::Node.scope(),
            zone: zone.into(),
            workspace: None,
            after: None,
            limit: 5000,
        };
        let mut reported = 0;
        loop {
            let page = store.list(&query).await.unwrap();
            reported += page.rows.iter().filter(|r| !r.observed.is_null()).count();
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        if reported >= nodes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the child leads each of its components in `zone`.
async fn wait_for_leaders(store: &dyn Store, zone: &str) {
    for component in &COMPONENTS[..3] {
        loop {
            let lease = store.lease(zone, component).await.unwrap();
            if lease.is_some_and(|l| l.expires > now_millis()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Follows the containers until `total` run; returns when the last was read back bound, when
/// the last was seen running, and how many were bound but never ran when progress stopped
/// with all bound. An error when it stopped before.
async fn wait_until_running(
    store: &dyn Store,
    zone: &str,
    events: &mut tokio::sync::mpsc::Receiver<WatchEvent>,
    total: usize,
) -> Result<(i64, i64, u64), String> {
    let mut seen: HashMap<ObjectKey, bool> = HashMap::new();
    let (mut last_bound, mut last_running, mut running) = (0, 0, 0);
    let mut last_print = Instant::now();
    loop {
        let event = match tokio::time::timeout(STALL, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the watch ended"),
            Err(_) => {
                let (bound, started) = count_containers(store, zone).await;
                if bound == total {
                    eprintln!(
                        "\nzone {zone}: all {total} bound, {started} running in the store, {running} seen running; none more for {} s",
                        STALL.as_secs()
                    );
                    return Ok((last_bound, last_running, (total - running) as u64));
                }
                return Err(format!(
                    "zone {zone} made no progress for {} s: its watch saw {} bound and {running} running, its partition holds {bound} bound and {started} running of {total}",
                    STALL.as_secs(),
                    seen.len()
                ));
            }
        };
        let rows = match event {
            WatchEvent::Applied(row) => vec![row],
            WatchEvent::Listed(rows) => rows,
            WatchEvent::Deleted(_) => continue,
        };
        let now = now_millis();
        for row in rows {
            let place = scheduler::placement(&row);
            if place.node.is_none() {
                continue;
            }
            let started =
                scheduler::report(&row, &place).is_some_and(|r| r.state == ContainerState::Running);
            let counted = seen.entry(row.key.clone()).or_default();
            if started && !*counted {
                *counted = true;
                running += 1;
                last_running = now;
            }
            if seen.len() == total && last_bound == 0 {
                last_bound = now;
            }
        }
        if last_print.elapsed() > Duration::from_secs(1) {
            eprint!("\r  {} bound, {running} running of {total}   ", seen.len());
            last_print = Instant::now();
        }
        if running >= total {
            eprintln!();
            return Ok((last_bound, last_running, 0));
        }
    }
}

/// How many of `zone`'s containers the store holds bound, and running.
async fn count_containers(store: &dyn Store, zone: &str) -> (usize, usize) {
    let mut query = ListQuery {
        kind: Kind::Container.name().into(),
        scope: Kind::Container.scope(),
        zone: zone.into(),
        workspace: None,
        after: None,
        limit: 5000,
    };
    let (mut bound, mut running) = (0, 0);
    loop {
        let page = store.list(&query).await.unwrap();
        for row in &page.rows {
            let place = scheduler::placement(row);
            if place.node.is_some() {
                bound += 1;
                running += usize::from(
                    scheduler::report(row, &place)
                        .is_some_and(|r| r.state == ContainerState::Running),
                );
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => return (bound, running),
        }
    }
}
