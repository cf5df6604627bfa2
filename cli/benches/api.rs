//! API throughput and latency against a real `dora up` (release build), over HTTPS with an
//! encrypted bearer token, at 64 concurrent connections; apply of a kind defined at run time
//! beside Workload apply, as a ratio. Also the cost of the IP filter and rate limits: GET
//! throughput with them on (limits set out of reach) as a ratio to a server with them off
//! (and the same from the server's CPU time per request, which other load does not sway),
//! and a paced client's p99 while another loopback address floods the server with 10,000
//! banned requests/s (from a thread of its own at nice 10), as a ratio to its p99 without the
//! flood. Prints figures (medians of rounds); asserts nothing.
//!
//! `cargo bench --bench api` (DORA_BENCH_SECS sets each phase's length, default 10).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;
const BATCH: usize = 50;
/// Rounds of the filter comparisons, alternating their two sides; medians are printed.
const ROUNDS: usize = 3;

/// The IP filter and every rate limit off.
const GUARD_OFF: &[&str] = &[
    "--ban-after",
    "0",
    "--address-rate-limit",
    "0",
    "--user-rate-limit",
    "0",
    "--node-rate-limit",
    "0",
];
/// The paced good client: workers and requests per second in all.
const GOOD: (usize, u32) = (8, 800);
/// The flood from a banned address: workers and requests per second in all.
const FLOOD: (usize, u32) = (64, 10_000);

fn client(ca: &str) -> reqwest::Client {
    client_from(ca, None)
}

/// A client whose connections come from `from`, when given.
fn client_from(ca: &str, from: Option<std::net::IpAddr>) -> reqwest::Client {
    let tls = dora_client::tls_config(ca).expect("the cluster CA");
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(CONNECTIONS)
        .local_address(from)
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
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn p99(&self) -> Duration {
        let mut latencies = self.latencies.clone();
        latencies.sort();
        common::quantile(&latencies, 0.99)
    }

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

/// Runs `workers` loops of `request` for `length`, together `per_second` requests a second
/// (a request that takes longer delays its worker's next one).
async fn paced<F, Fut>(length: Duration, (workers, per_second): (usize, u32), request: F) -> Phase
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let period = Duration::from_secs_f64(workers as f64 / f64::from(per_second));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let request = request.clone();
            tokio::spawn(async move {
                // Spread the workers' ticks over one period.
                let offset = period.mul_f64(worker as f64 / workers as f64);
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while started.elapsed() < length {
                    ticks.tick().await;
                    let t = Instant::now();
                    if !request().await {
                        errors += 1;
                    }
                    latencies.push(t.elapsed());
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
    result.documents = result.requests - result.errors;
    result
}

/// CPU time (user and system) process `pid` has used so far, from `/proc`.
fn cpu_time(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which is in parentheses: utime and stime are the 12th
    // and 13th, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a command name")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11..13]
        .iter()
        .map(|f| f.parse::<u64>().expect("ticks"))
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// `phase` and the server's CPU seconds per request while it ran.
async fn measured(
    up: &common::Up,
    phase: impl std::future::Future<Output = Phase>,
) -> (Phase, f64) {
    let before = cpu_time(up.server.id());
    let phase = phase.await;
    let used = cpu_time(up.server.id()) - before;
    let per_request = used / phase.requests.max(1) as f64;
    (phase, per_request)
}

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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

/// A request of a paced or closed loop: whether it was answered as expected.
type Request = futures::future::BoxFuture<'static, bool>;

/// One GET of the bench workload; whether it answered `expected`.
async fn get(
    http: reqwest::Client,
    url: Arc<String>,
    token: Arc<String>,
    expected: reqwest::StatusCode,
) -> bool {
    let request = http
        .get(url.as_str())
        .header("authorization", token.as_str());
    request.send().await.is_ok_and(|r| r.status() == expected)
}

/// A GET of the bench workload as the administrator, answered 200.
fn getter(
    http: &reqwest::Client,
    url: &str,
    token: &Arc<String>,
) -> impl Fn() -> Request + Clone + Send + Sync + 'static {
    let (http, token) = (http.clone(), token.clone());
    let url = Arc::new(format!(
        "{url}/v1/zones/default/workspaces/default/workloads/bench"
    ));
    move || {
        Box::pin(get(
            http.clone(),
            url.clone(),
            token.clone(),
            reqwest::StatusCode::OK,
        ))
    }
}

/// `get` for [`phase`], which tells each call its worker and count.
fn closed(
    get: &(impl Fn() -> Request + Clone + Send + Sync + 'static),
) -> impl Fn(usize, usize) -> Request + Send + Sync + 'static {
    let get = get.clone();
    move |_, _| get()
}

/// A `dora up` with `extra` arguments and the bench workload applied.
async fn start(extra: &[&str]) -> (common::Up, String, Arc<String>, reqwest::Client) {
    let up = common::Up::start(extra);
    let url = up.field("apiServer");
    let token = Arc::new(format!("Bearer {}", up.field("token")));
    let http = client(&up.field("ca"));
    let applied = http
        .post(format!("{url}/v1/apply"))
        .header("authorization", token.as_str())
        .body(workload("bench"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(applied, "the bench workload applies");
    (up, url, token, http)
}

#[tokio::main]
async fn main() {
    let length = Duration::from_secs(
        std::env::var("DORA_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let (off, off_url, off_token, off_http) = start(GUARD_OFF).await;
    // Bans last the whole flood.
    let on = [common::LIMITS_OUT_OF_REACH, &["--ban-time", "1h"]].concat();
    let (up, url, token, http) = start(&on).await;
    println!(
        "Dora API benchmark: {CONNECTIONS} connections, {} s per phase, HTTPS + JWE token",
        length.as_secs()
    );
    let get_off = getter(&off_http, &off_url, &off_token);
    let get_on = getter(&http, &url, &token);
    phase(Duration::from_secs(2), 1, closed(&get_off)).await;
    phase(Duration::from_secs(2), 1, closed(&get_on)).await;
    let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (without, off_cpu) = measured(&off, phase(length, 1, closed(&get_off))).await;
        without.print("GET one workload, guard off");
        let (with, on_cpu) = measured(&up, phase(length, 1, closed(&get_on))).await;
        with.print("GET one workload, guard on");
        println!(
            "server CPU per GET: guard off {:.1} µs, on {:.1} µs",
            off_cpu * 1e6,
            on_cpu * 1e6
        );
        ratios.push(with.rate() / without.rate());
        cpu_ratios.push(off_cpu / on_cpu);
    }
    println!(
        "GET throughput with the IP filter and rate limits on / off: median {:.3} of {ratios:.3?}",
        median(ratios.clone())
    );
    println!(
        "the same from the server's CPU per GET (off / on; other processes' load does not count): median {:.3} of {cpu_ratios:.3?}",
        median(cpu_ratios.clone())
    );
    drop(off);
    // Before the applies, whose workloads keep the scheduler busy for a while.
    banned_flood(length, &up, &get_on).await;

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

/// A paced client's latency alone and while another loopback address, banned, floods the
/// server. The flood runs on a thread and runtime of its own at nice 10: an attacker on
/// another machine shares neither the good client's runtime nor the server's CPU, and on a
/// machine of two cores the generator would otherwise measure itself.
async fn banned_flood(
    length: Duration,
    up: &common::Up,
    good: &(impl Fn() -> Request + Clone + Send + Sync + 'static),
) {
    let url = Arc::new(format!(
        "{}/v1/zones/default/workspaces/default/workloads/bench",
        up.field("apiServer")
    ));
    let ca = up.field("ca");
    let mut ratios = Vec::new();
    for round in 0..ROUNDS {
        let alone = paced(length, GOOD, good.clone()).await;
        alone.print("paced GET, alone");
        let flooding = {
            let (url, ca) = (url.clone(), ca.clone());
            std::thread::spawn(move || {
                rustix::process::setpriority_process(None, 10).expect("nice 10");
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the flood's runtime");
                runtime.block_on(flood(length, url, &ca, round == 0))
            })
        };
        let during = paced(length, GOOD, good.clone()).await;
        during.print("paced GET, during the flood");
        flooding
            .join()
            .expect("the flood")
            .print("banned flood (403)");
        ratios.push(during.p99().as_secs_f64() / alone.p99().as_secs_f64());
    }
    println!(
        "p99 of {} GET/s during a flood of {} banned requests/s / alone: median {:.2} of {ratios:.2?}",
        GOOD.1,
        FLOOD.1,
        median(ratios.clone())
    );
}

/// `FLOOD` requests/s from 127.0.0.2 for `length`, first banning it when `ban`.
async fn flood(length: Duration, url: Arc<String>, ca: &str, ban: bool) -> Phase {
    let attacker = client_from(ca, Some([127, 0, 0, 2].into()));
    let garbage = Arc::new("Bearer garbage".to_string());
    let expect = |status| get(attacker.clone(), url.clone(), garbage.clone(), status);
    if ban {
        for _ in 0..3 {
            assert!(
                expect(reqwest::StatusCode::UNAUTHORIZED).await,
                "a garbage token is refused"
            );
        }
    }
    assert!(
        expect(reqwest::StatusCode::FORBIDDEN).await,
        "127.0.0.2 is banned"
    );
    paced(length, FLOOD, move || {
        Box::pin(get(
            attacker.clone(),
            url.clone(),
            garbage.clone(),
            reqwest::StatusCode::FORBIDDEN,
        )) as Request
    })
    .await
}
