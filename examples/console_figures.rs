//! Figures of the web console (`scripts/bench-console` runs this): against `dora up` with
//! hollow nodes, in Debian's headless chromium,
//! - the page's load time and transfer size, first visit (nothing cached);
//! - the time from a write to the page showing it, p50 and p99 over N changes (workloads
//!   created through the API; the page's count of workloads changes, live through its watch);
//! - with a workload of M containers open (and no error in the browser's console): the time until its table holds them all, the
//!   browser's JavaScript heap and the number of elements in the page, and frame times while
//!   the table is scrolled from top to bottom.
//!
//! `DORA_BIN` (the `dora` to run), `DORA_CONSOLE_CHANGES` (N, default 100),
//! `DORA_CONSOLE_CONTAINERS` (M, default 10,000), `DORA_BENCH_PORT` (default 18410).
//! Asserts nothing; prints the figures, and saves screenshots of the GPU map and the long list
//! under target/console-screenshots/.

#[path = "../tests/support/browser.rs"]
mod browser;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use browser::{Driver, console_errors, log_in, open_browser, screenshot, wait_text, wait_until};
use dora_client::{Client, Config};
use fantoccini::Locator;
use reqwest::Method;
use serde_json::{Value, json};

fn number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `dora up` with hollow nodes, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn apply(client: &Client, yaml: String) {
    client
        .json(Method::POST, "/v1/apply", &[], Some(yaml))
        .await
        .expect("the manifest applies");
}

/// Scrolls the page's table from top to bottom, 400 px a frame: frame times, the JavaScript
/// heap and the elements in the page.
async fn scroll(page: &fantoccini::Client) -> Value {
    page.execute_async(
        "const done = arguments[0]; const table = document.querySelector('.vscroll'); \
         table.scrollTop = 0; const frames = []; let last = performance.now(); \
         const step = () => { const now = performance.now(); frames.push(now - last); last = now; \
           table.scrollTop += 400; \
           if (table.scrollTop + table.clientHeight < table.scrollHeight && frames.length < 2000) requestAnimationFrame(step); \
           else { frames.sort((a, b) => a - b); \
             done({frames: frames.length, p50: frames[Math.floor(frames.length / 2)], p99: frames[Math.floor(frames.length * 0.99)], \
                   heap: performance.memory.usedJSHeapSize, elements: document.getElementsByTagName('*').length}); } }; \
         requestAnimationFrame(step);",
        vec![],
    )
    .await
    .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    assert!(
        browser::browser_ready(),
        "chromium and chromedriver are needed"
    );
    let changes = number("DORA_CONSOLE_CHANGES", 100);
    let containers = number("DORA_CONSOLE_CONTAINERS", 10_000);
    let port = number("DORA_BENCH_PORT", 18410);
    let dora = std::env::var("DORA_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/dora").to_string()
    });
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.yaml");
    let mut child = Command::new(&dora)
        .args(["up", "--no-node", "--sim-nodes", "40", "--sim-cpus", "32"])
        .args(["--sim-gpus", "4xA100,4xH100", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(home.path().join("data"))
        .env("DORA_CONFIG", &config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dora up starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let up = Up(child);
    for line in stdout.lines() {
        if line.unwrap().contains("dora events -w") {
            break;
        }
    }
    let profile: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let profile = &profile["profiles"]["local"];
    let url = profile["apiServer"].as_str().unwrap().to_string();
    let token = profile["token"].as_str().unwrap().to_string();
    let client = Client::new(Config::new(
        url.clone(),
        profile["ca"].as_str().unwrap(),
        token.clone(),
    ))
    .unwrap();

    let driver = Driver::start(&home.path().join("chromedriver.txt"));
    let page = open_browser(&driver).await;
    page.goto(&format!("{url}/ui/")).await.unwrap();
    log_in(&page, &token).await;
    wait_text(&page, "h1", "Workloads (0)").await;

    // A first visit: a fresh browser profile has nothing cached.
    let visitor = open_browser(&driver).await;
    visitor.goto(&format!("{url}/ui/")).await.unwrap();
    wait_until(
        &visitor,
        "the login form",
        "return !!document.getElementById('token');",
    )
    .await;
    let load = visitor
        .execute(
            "const n = performance.getEntriesByType('navigation')[0]; \
             const all = [n, ...performance.getEntriesByType('resource')]; \
             return {ms: n.loadEventEnd - n.startTime, bytes: all.reduce((s, e) => s + e.transferSize, 0), \
                     body: all.reduce((s, e) => s + e.decodedBodySize, 0), files: all.length};",
            vec![],
        )
        .await
        .unwrap();
    visitor.close().await.unwrap();

    // Write → page: each new workload changes the count the page shows.
    page.execute(
        "window.seen = {}; const count = document.querySelector('h1 span'); \
         new MutationObserver(() => { window.seen[count.textContent] = performance.timeOrigin + performance.now(); }) \
           .observe(count, {childList: true, characterData: true, subtree: true});",
        vec![],
    )
    .await
    .unwrap();
    let mut latencies = Vec::new();
    for i in 0..changes {
        let written = now_ms();
        apply(&client, format!(
            "apiVersion: v1\nkind: Workload\nmetadata: {{name: w{i:04}}}\nspec:\n  replica: {{count: 0}}\n  driver: Process\n  config: {{cmd: [sleep, '600']}}\n  selectors:\n    cpu: {{product_name: All, count: 100m}}\n"
        ))
        .await;
        let key = json!(format!("({})", i + 1));
        let deadline = Instant::now() + Duration::from_secs(30);
        let shown = loop {
            let seen = page
                .execute(
                    "return window.seen[arguments[0]] ?? null;",
                    vec![key.clone()],
                )
                .await
                .unwrap();
            if let Some(at) = seen.as_f64() {
                break at;
            }
            assert!(Instant::now() < deadline, "the page never showed {key}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(shown - written);
    }
    latencies.sort_by(f64::total_cmp);

    // A workload of many containers, its page open.
    let started = Instant::now();
    apply(&client, format!(
        "apiVersion: v1\nkind: Workload\nmetadata: {{name: big}}\nspec:\n  replica: {{count: {containers}}}\n  driver: Process\n  config: {{cmd: [sleep, '600']}}\n  selectors:\n    cpu: {{product_name: All, count: 100m}}\n"
    ))
    .await;
    page.goto(&format!("{url}/ui/#/workloads/big"))
        .await
        .unwrap();
    let rows = format!(
        "return document.querySelector('.vspacer')?.style.height === '{}px';",
        containers * 34
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while page.execute(&rows, vec![]).await.unwrap() != Value::Bool(true) {
        assert!(
            Instant::now() < deadline,
            "the table never held {containers} rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = started.elapsed();
    screenshot(&page, "containers-10000").await;
    // While the containers start, their changes stream in as the table scrolls; once all
    // run, the page only scrolls.
    let busy = scroll(&page).await;
    let ready = format!("{containers}/{containers}");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !page
        .find(Locator::Css(".summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains(&ready)
    {
        assert!(Instant::now() < deadline, "{ready} never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let running = started.elapsed();
    let settled = scroll(&page).await;
    page.goto(&format!("{url}/ui/#/nodes")).await.unwrap();
    wait_text(&page, ".gpumap", "H100").await;
    screenshot(&page, "gpus").await;
    let errors = console_errors(&page).await;
    page.close().await.unwrap();
    drop(up);

    println!("web console figures (dora: {dora}; chromium headless, this machine)");
    println!(
        "page load, first visit: {:.0} ms, {} files, {:.1} KiB transferred ({:.1} KiB uncompressed)",
        load["ms"].as_f64().unwrap_or_default(),
        load["files"],
        load["bytes"].as_f64().unwrap_or_default() / 1024.0,
        load["body"].as_f64().unwrap_or_default() / 1024.0
    );
    println!(
        "write -> page over {changes} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "{containers} containers: all listed in the page {:.1} s after the apply, all Running there after {:.1} s; JS heap {:.1} MiB; {} elements in the page",
        listed.as_secs_f64(),
        running.as_secs_f64(),
        settled["heap"].as_f64().unwrap_or_default() / (1024.0 * 1024.0),
        settled["elements"]
    );
    for (when, frames) in [("while they start", busy), ("once all run", settled)] {
        println!(
            "scrolling the table top to bottom {when}: {} frames, frame time p50 {:.1} ms, p99 {:.1} ms",
            frames["frames"],
            frames["p50"].as_f64().unwrap_or_default(),
            frames["p99"].as_f64().unwrap_or_default()
        );
    }
    println!("errors in the browser's console: {errors:?}");
}
