//! The CQL store on a real Cassandra node: apply throughput (spec writes with LWT, 64 at a
//! time) and change-feed latency, from the start of a write until a watcher on another session
//! (as another process would be) reads it from the feed. Prints figures; asserts nothing.
//!
//! `DORA_CQL_URL=cql://127.0.0.1:9042/dora cargo bench -p dora-store --bench cql`
//! (start Cassandra with `scripts/cassandra start 1`; DORA_BENCH_SECS sets each phase's length).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dora_crds::Kind;
use dora_store::cql::{CqlConfig, CqlStore};
use dora_store::{ChangeFilter, ObjectKey, Precondition, SpecWrite, Store};
use serde_json::json;

/// Concurrent writers of the flat-out phases.
const WRITERS: [usize; 2] = [16, 64];
/// How often the watcher polls the feed.
const POLL: Duration = Duration::from_millis(100);

type Started = Arc<Mutex<HashMap<String, Instant>>>;

fn write(name: &str) -> SpecWrite {
    let spec = json!({"replica": {"count": 1}, "image": {"image": "busybox"}, "config": {"cmd": "sleep 60"}});
    SpecWrite {
        key: ObjectKey::new(Kind::Workload, "bench", "ws", name),
        precondition: Precondition::None,
        owner: "bench".into(),
        labels: BTreeMap::new(),
        meta: Default::default(),
        spec_hash: dora_crds::spec_hash(Kind::Workload, &spec),
        spec,
        desired: serde_json::Value::Null,
        computed: None,
        fence: None,
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Follows the feed on its own session and records each write's latency.
async fn watch(
    store: CqlStore,
    started: Started,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let filter = ChangeFilter::all("Workload", "bench");
    let mut cursor = store.head().await.expect("head");
    let mut latencies = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let changes = store
            .changes(&filter, &cursor, 5000)
            .await
            .expect("changes");
        let now = Instant::now();
        for change in &changes {
            if let Some(start) = started.lock().unwrap().remove(&change.key.name) {
                latencies.push(now - start);
            }
        }
        if let Some(last) = changes.last() {
            cursor = last.cursor.clone();
        }
        tokio::time::sleep(POLL).await;
    }
    latencies
}

async fn phase(
    name: &str,
    writer: &CqlStore,
    watcher: &CqlStore,
    length: Duration,
    writers: usize,
    pace: Option<Duration>,
) {
    let started: Started = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = tokio::spawn(watch(watcher.clone(), started.clone(), stop.clone()));
    let begin = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, started) = (writer.clone(), started.clone());
            let label = name.replace(' ', "-");
            tokio::spawn(async move {
                let (mut done, mut errors) = (0usize, 0usize);
                while begin.elapsed() < length {
                    let item = format!("{label}-{w}-{done}-{errors}");
                    started.lock().unwrap().insert(item.clone(), Instant::now());
                    match store.put_spec(write(&item)).await {
                        Ok(_) => done += 1,
                        Err(_) => errors += 1,
                    }
                    if let Some(pace) = pace {
                        tokio::time::sleep(pace).await;
                    }
                }
                (done, errors)
            })
        })
        .collect();
    let (mut done, mut errors) = (0, 0);
    for task in tasks {
        let (d, e) = task.await.expect("writer");
        done += d;
        errors += e;
    }
    let elapsed = begin.elapsed();
    // Let the watcher catch up with the last writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = watching.await.expect("watcher");
    latencies.sort();
    println!(
        "{name:<34} {:>7.0} docs/s ({done} written, {errors} errors)   feed latency p50 {:>4} ms  p99 {:>4} ms  ({} seen)",
        done as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_millis(),
        percentile(&latencies, 0.99).as_millis(),
        latencies.len(),
    );
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DORA_CQL_URL").unwrap_or_else(|_| "cql://127.0.0.1:9042/dora".into());
    let length = Duration::from_secs(
        std::env::var("DORA_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let keyspace = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let config = CqlConfig::from_url(&url)
        .expect("DORA_CQL_URL")
        .with_keyspace(&keyspace)
        .expect("keyspace");
    let writer = CqlStore::connect(config.clone())
        .await
        .expect("Cassandra answers (scripts/cassandra start 1)");
    let watcher = CqlStore::connect(config).await.expect("a second session");
    println!(
        "CQL store on {url}: skew allowance {} ms, watcher polls every {} ms, {} s per phase",
        CqlConfig::default().skew.as_millis(),
        POLL.as_millis(),
        length.as_secs()
    );
    let steady = Some(Duration::from_millis(10));
    phase(
        "steady, 1 writer, 10 ms apart",
        &writer,
        &watcher,
        length,
        1,
        steady,
    )
    .await;
    for writers in WRITERS {
        let name = format!("flat out, {writers} writers");
        phase(&name, &writer, &watcher, length, writers, None).await;
    }
    writer
        .drop_keyspace()
        .await
        .expect("drop the bench keyspace");
}
