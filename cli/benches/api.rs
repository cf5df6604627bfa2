//! API throughput and latency against a real `dora up` (release build), over HTTPS with an
//! encrypted bearer token, at 64 concurrent connections; apply of a kind defined at run time
//! beside Workload apply, as a ratio. Prints figures; asserts nothing.
//!
//! `cargo bench --bench api` (DORA_BENCH_SECS sets each phase's length, default 10).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;
const BATCH: usize = 50;

fn client(ca: &str) -> reqwest::Client {
    let tls = dora_client::tls_config(ca).expect("the cluster CA");
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("HTTPS client")
}

struct Phase {
    requests: usize,
    documents: usize,
    errors: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Phase {
    fn print(&self, name: &str) {
        let mut latencies = self.latencies.clone();
        latencies.sort();
        let at = |q: f64| common::quantile(&latencies, q);
        let secs = self.elapsed.as_secs_f64();
        println!(
            "{name:<28} {:>9.0} req/s {:>9.0} docs/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
            self.requests as f64 / secs,
            self.documents as f64 / secs,
            at(0.50).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            self.errors,
        );
    }
}

/// Runs `CONNECTIONS` loops of `request` for `length`; each request counts `docs` documents.
async fn phase<F, Fut>(length: Duration, docs: usize, request: F) -> Phase
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|worker| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut n = 0;
                while started.elapsed() < length {
                    let t = Instant::now();
                    if !request(worker, n).await {
                        errors += 1;
                    }
                    latencies.push(t.elapsed());
                    n += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut result = Phase {
        requests: 0,
        documents: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, errors) = task.await.expect("worker");
        result.requests += latencies.len();
        result.errors += errors;
        result.latencies.extend(latencies);
    }
    result.elapsed = started.elapsed();
    result.documents = (result.requests - result.errors) * docs;
    result
}

fn workload(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replica: {{count: 1}}\n  image: {{image: busybox}}\n  config: {{cmd: sleep 60}}\n"
    )
}

/// A kind defined at run time with Workload's scope, and one object of it.
const DEFINITION: &str = "apiVersion: v1\nkind: Definition\nmetadata: {name: benchthings}\nspec:\n  names: {kind: Benchthing, plural: benchthings}\n  scope: zonedWorkspaced\n  schema:\n    type: object\n    required: [image]\n    properties: {image: {type: string}, count: {type: integer, minimum: 0}}\n  columns: [{name: IMAGE, pointer: /spec/image}]\n";

fn benchthing(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Benchthing\nmetadata:\n  name: {name}\nspec:\n  image: busybox\n  count: 1\n"
    )
}

#[tokio::main]
async fn main() {
    let length = Duration::from_secs(
        std::env::var("DORA_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let up = common::Up::start(&[]);
    let url = up.field("apiServer");
    let token = Arc::new(format!("Bearer {}", up.field("token")));
    let http = client(&up.field("ca"));

    let apply = |http: reqwest::Client, url: String, token: Arc<String>| {
        move |body: String| {
            let request = http
                .post(format!("{url}/v1/apply"))
                .header("authorization", token.as_str())
                .body(body);
            async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
        }
    };
    let apply_one = apply(http.clone(), url.clone(), token.clone());
    assert!(
        apply_one(workload("bench")).await,
        "the bench workload applies"
    );

    println!(
        "Dora API benchmark: {CONNECTIONS} connections, {} s per phase, HTTPS + JWE token",
        length.as_secs()
    );
    let get_url = format!("{url}/v1/zones/default/workspaces/default/workloads/bench");
    let get = {
        let (http, token) = (http.clone(), token.clone());
        move |_: usize, _: usize| {
            let request = http.get(&get_url).header("authorization", token.as_str());
            async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
        }
    };
    phase(Duration::from_secs(2), 1, get.clone()).await;
    phase(length, 1, get).await.print("GET one workload");

    // The defined kind first: the workloads applied after it keep the scheduler busy.
    assert!(apply_one(DEFINITION.into()).await, "the definition applies");
    let defined = apply(http.clone(), url.clone(), token.clone());
    let things = phase(length, 1, move |worker, n| {
        defined(benchthing(&format!("single-{worker}-{n}")))
    })
    .await;
    things.print("apply defined kind, 1 doc");
    let single = apply(http.clone(), url.clone(), token.clone());
    let workloads = phase(length, 1, move |worker, n| {
        single(workload(&format!("single-{worker}-{n}")))
    })
    .await;
    workloads.print("apply, 1 doc per request");

    let rate = |p: &Phase| p.documents as f64 / p.elapsed.as_secs_f64();
    println!(
        "defined kind / Workload apply throughput: {:.2}",
        rate(&things) / rate(&workloads)
    );

    let batch = apply(http.clone(), url.clone(), token.clone());
    phase(length, BATCH, move |worker, n| {
        let manifest: Vec<String> = (0..BATCH)
            .map(|i| workload(&format!("batch-{worker}-{n}-{i}")))
            .collect();
        batch(manifest.join("---\n"))
    })
    .await
    .print(&format!("apply, {BATCH} docs per request"));
}
