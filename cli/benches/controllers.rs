//! A controller outside Dora, over the HTTPS API of a real `dora up` (release build): how
//! long a write takes to reach it (watch latency, p50/p99), and how long it takes after its
//! start to reconcile 10,000 objects of a kind defined at run time once (the first full
//! pass, the runtime recording each in the object's status). Prints figures; asserts nothing.
//!
//! `cargo bench --bench controllers` (DORA_BENCH_OBJECTS sets the object count).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dora_client::{Client, Config};
use dora_crds::Kind;
use dora_runtime::{Action, Controller, Request};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DEFINITION: &str = "apiVersion: v1\nkind: Definition\nmetadata: {name: benchcounters}\nspec:\n  names: {kind: Benchcounter, plural: benchcounters}\n  scope: zonedWorkspaced\n  status: true\n  schema: {type: object, properties: {n: {type: integer}}}\n";
const WRITES: usize = 300;
const BATCH: usize = 250;

fn counter(name: &str, n: usize) -> String {
    format!("apiVersion: v1\nkind: Benchcounter\nmetadata: {{name: {name}}}\nspec: {{n: {n}}}\n")
}

/// Starts a controller of `kind` whose reconciles send the name they saw.
fn controller(
    client: &Client,
    kind: Kind,
    stop: &CancellationToken,
) -> mpsc::UnboundedReceiver<String> {
    let (seen, names) = mpsc::unbounded_channel();
    let reconcile = move |request: Request| {
        let seen = seen.clone();
        async move {
            let _ = seen.send(request.key.name.clone());
            Ok::<_, String>(Action::await_change())
        }
    };
    let controller = Controller::new("bench", client.clone(), kind, "default").concurrency(32);
    tokio::spawn(controller.run(reconcile, stop.clone()));
    names
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let objects: usize = std::env::var("DORA_BENCH_OBJECTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let up = common::Up::start(&[&["--no-node"], common::LIMITS_OUT_OF_REACH].concat());
    let client = Client::new(Config::new(
        up.field("apiServer"),
        up.field("ca"),
        up.field("token"),
    ))
    .expect("client");
    client
        .apply(DEFINITION.into())
        .await
        .expect("the definition applies");
    client.learn_kinds().await.expect("kinds");
    let kind = Kind::parse("benchcounters").expect("the defined kind");
    println!(
        "Controller over the API of dora up (release): {WRITES} single writes, {objects} objects"
    );

    // Watch latency: one write at a time, from sending it to its reconcile.
    let stop = CancellationToken::new();
    let mut seen = controller(&client, kind, &stop);
    let mut latencies = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let name = format!("w{i}");
        let written = Instant::now();
        client.apply(counter(&name, i)).await.expect("apply");
        while seen.recv().await.expect("the controller runs") != name {}
        latencies.push(written.elapsed());
    }
    stop.cancel();
    latencies.sort();
    println!(
        "write → reconcile over the API:  p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms",
        common::quantile(&latencies, 0.50).as_secs_f64() * 1e3,
        common::quantile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    // The first full pass of a controller started over `objects` objects.
    let started = Instant::now();
    for batch in 0..objects.div_ceil(BATCH) {
        let manifest: Vec<String> = (batch * BATCH..((batch + 1) * BATCH).min(objects))
            .map(|i| counter(&format!("o{i}"), i))
            .collect();
        client
            .apply(manifest.join("---\n"))
            .await
            .expect("batch apply");
    }
    println!(
        "applied {objects} objects in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut seen = controller(&client, kind, &stop);
    let mut reconciled = HashSet::with_capacity(objects + WRITES);
    while reconciled.len() < objects + WRITES {
        match tokio::time::timeout(Duration::from_secs(120), seen.recv()).await {
            Ok(Some(name)) => {
                reconciled.insert(name);
            }
            _ => break,
        }
    }
    let pass = started.elapsed();
    stop.cancel();
    println!(
        "first full pass over {} objects: {:.1} s ({:.0} reconciles/s, each recorded in its status)",
        reconciled.len(),
        pass.as_secs_f64(),
        reconciled.len() as f64 / pass.as_secs_f64()
    );
}
