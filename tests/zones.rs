//! Zones joined through one database: two zones, each with its own `dora up` (API server,
//! scheduler, credit system, hollow nodes) pinned to its own datacenter of one Cassandra
//! cluster. `scripts/test` starts a cluster of two datacenters of one node each
//! (`scripts/cassandra start 2x1`: node 1 is dc1, node 2 is dc2) and sets `DORA_CQL_ZONES_URL`;
//! under `CI=true` a missing one fails the test.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Dora, Home, Store, eventually};

/// The two-datacenter cluster, replicated to both: `cql://HOSTS/KEYSPACE?replication=dc1:1,dc2:1`.
fn zones_url() -> String {
    match std::env::var("DORA_CQL_ZONES_URL") {
        Ok(url) => url,
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but DORA_CQL_ZONES_URL is not set: a two-datacenter Cassandra must run")
        }
        Err(_) => "cql://127.0.0.1:9042,127.0.0.2:9042/dora?replication=dc1:1,dc2:1".into(),
    }
}

/// The store URL of a zone pinned to `datacenter`, in `keyspace`.
fn zone_store(keyspace: &str, datacenter: &str) -> Store {
    let url = zones_url();
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let hosts = base.rsplit_once('/').map_or(base, |(hosts, _)| hosts);
    Store::Cql(format!(
        "{hosts}/{keyspace}?{query}&consistency=local_quorum&datacenter={datacenter}"
    ))
}

/// `scripts/cassandra ARGS`: kills or restarts a node of the cluster.
fn cassandra(args: &[&str]) {
    let status = Command::new(support::repo().join("scripts/cassandra"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/cassandra {args:?} failed");
}

/// A Cassandra node killed for a test and started again when the test ends, failed or not,
/// so that the tests after it find the whole cluster.
struct Outage(Option<&'static str>);

impl Outage {
    fn of(node: &'static str) -> Outage {
        cassandra(&["kill", node]);
        Outage(Some(node))
    }

    fn end(mut self) {
        if let Some(node) = self.0.take() {
            cassandra(&["restart", node]);
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            // Already unwinding: a failure here is reported by the next test, not a panic.
            let _ = Command::new(support::repo().join("scripts/cassandra"))
                .args(["restart", node])
                .status();
        }
    }
}

/// A `dora node` (Process driver) joined with a join token through the API server at `api`.
struct RealNode(std::process::Child);

impl RealNode {
    fn join(home: &Home, name: &str, api: &str, join_token: &str, ca: &str) -> RealNode {
        let log = std::fs::File::create(home.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(support::DORA)
            .args([
                "node",
                "--api-server",
                api,
                "--node-name",
                name,
                "--zone",
                "b",
            ])
            .args([
                "--node-listen",
                "127.0.0.1:0",
                "--heartbeat",
                "1s",
                "--docker",
                "off",
            ])
            .args(["--ca", ca])
            .arg("--state-dir")
            .arg(home.path().join(name))
            .env("DORA_JOIN_TOKEN", join_token)
            .env("RUST_LOG", "warn,dora_nodeagent=info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        RealNode(child)
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dora up` of `zone` on `store` with two hollow nodes of three CPUs, logging to the home.
fn up(home: &Home, zone: &str, store: &Store) -> Dora {
    let log = std::fs::File::create(home.path().join(format!("zone-{zone}.log"))).unwrap();
    let mut args = vec![
        "--no-node",
        "--zone",
        zone,
        "--sim-nodes",
        "2",
        "--sim-cpus",
        "3",
    ];
    args.extend(store.args());
    Dora::up_with(home.path(), &args, "info,dora_store=warn", Stdio::from(log))
}

fn ready(workload: &Value) -> (u64, u64) {
    let computed = &workload["status"]["computed"];
    (
        computed["ready"].as_u64().unwrap_or(0),
        computed["pending"].as_u64().unwrap_or(0),
    )
}

/// A GET of `path` on `url` with `token`: its status and `Retry-After`.
fn status_of(url: &str, ca: &str, token: &str, path: &str) -> (u16, Option<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(dora_client::tls_config(ca).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        match http
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(response) => (
                response.status().as_u16(),
                response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string()),
            ),
            Err(e) => panic!("GET {path} on {url}: {e}"),
        }
    })
}

fn write(home: &Home, name: &str, text: &str) -> PathBuf {
    let path = home.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Three replicas of two CPUs: one fits each three-CPU node, so two run in a zone of two
/// nodes. A third would run if the zone's scheduler used the other zone's nodes.
const SPREAD: &str = "apiVersion: v1\nkind: Workload\nmetadata: {name: spread}\nspec:\n  replica: {count: 3}\n  driver: Process\n  config: {cmd: sleep 1000}\n  selectors:\n    cpu: {product_name: All, count: 2}\n";

#[test]
fn zones_across_datacenters_share_one_database_and_survive_each_others_loss() {
    let keyspace = format!("zones_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (home_a, home_b) = (support::home(), support::home());
    let a = up(&home_a, "a", &zone_store(&keyspace, "dc1"));
    support::share_cluster_secrets(&home_a.path().join("data"), &home_b.path().join("data"));
    let b = up(&home_b, "b", &zone_store(&keyspace, "dc2"));
    let url_b = support::url_of(&b);
    assert!(
        b.banner.iter().any(|l| l.contains("for zone b")),
        "zone B's start leaves zone A's CLI profile alone: {:?}",
        b.banner
    );

    // One CLI config, a profile per zone, one admin token for both.
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(Dora::config(home_a.path())).unwrap())
            .unwrap();
    let admin = config["profiles"]["local"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = config["profiles"]["local"]["ca"]
        .as_str()
        .unwrap()
        .to_string();
    let ca_path = write(&home_a, "ca.pem", &ca);
    let ca_path = ca_path.to_str().unwrap();
    a.run(&[
        "config",
        "profile",
        "init",
        "b",
        "--api-server",
        &url_b,
        "--token",
        &admin,
        "--ca",
        ca_path,
    ]);
    let spread = write(&home_a, "spread.yaml", SPREAD);
    let spread = spread.to_str().unwrap();
    a.run(&["--profile", "local", "-z", "a", "apply", "-f", spread]);
    a.run(&["--profile", "b", "-z", "b", "apply", "-f", spread]);
    for (profile, zone) in [("local", "a"), ("b", "b")] {
        let workload = eventually(
            &a,
            &["--profile", profile, "-z", zone, "get", "wk", "spread"],
            Duration::from_secs(60),
            &format!("two of three replicas running in zone {zone}"),
            |w| ready(w) == (2, 1),
        );
        let reason = workload["status"]["computed"]["reason"].as_str().unwrap();
        assert!(reason.contains("0/2 nodes fit"), "{reason}");
    }
    // Each API server reaches the other zone's rows.
    for (profile, zone) in [("local", "b"), ("b", "a")] {
        let workload = a.json(&[
            "--profile",
            profile,
            "-z",
            zone,
            "get",
            "wk",
            "spread",
            "-o",
            "json",
        ]);
        assert_eq!(ready(&workload), (2, 1), "zone {zone} through {profile}");
    }
    let nodes_b = a.json(&[
        "--profile",
        "local",
        "-z",
        "b",
        "get",
        "nodes",
        "-o",
        "json",
    ]);
    assert_eq!(support::names(&nodes_b).len(), 2, "{nodes_b}");

    // A user created through zone A logs in through zone B.
    let ana = write(
        &home_a,
        "ana.yaml",
        "apiVersion: v1\nkind: User\nmetadata: {name: ana}\nspec:\n  default: {zone: b, workspace: default}\n  resources:\n    - {kind: All, zone: b, workspace: default, role: user}\n",
    );
    a.run(&["--profile", "local", "apply", "-f", ana.to_str().unwrap()]);
    let token = a.run(&["--profile", "local", "token", "create", "--user", "ana"]);
    let token = token.trim().to_string();
    let path = "/v1/zones/b/workspaces/default/workloads";
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until B's directory has ana, her token fails there: ask slower than B's IP filter
    // bans (3 failures in 1 s).
    while status_of(&url_b, &ca, &token, path).0 != 200 {
        assert!(Instant::now() < deadline, "ana's token never worked on B");
        std::thread::sleep(Duration::from_millis(1100));
    }

    // Each zone's spread fits once it asks for two: its pending replica would hold the next
    // workload back.
    let two = write(
        &home_a,
        "spread-two.yaml",
        &SPREAD.replace("count: 3", "count: 2"),
    );
    a.run(&[
        "--profile",
        "local",
        "-z",
        "a",
        "apply",
        "-f",
        two.to_str().unwrap(),
    ]);
    a.run(&[
        "--profile",
        "b",
        "-z",
        "b",
        "apply",
        "-f",
        two.to_str().unwrap(),
    ]);

    // A real node of zone B, joined through B's API server, is reached directly by either
    // API server: logs and commands of its container go from A's API server to the node.
    let join = a.run(&["--profile", "b", "-z", "b", "token", "create", "--join"]);
    let edge = RealNode::join(&home_b, "edge", &url_b, join.trim(), ca_path);
    let hello = write(
        &home_a,
        "hello.yaml",
        "apiVersion: v1\nkind: Workload\nmetadata: {name: hello}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config: {cmd: [sh, -c, 'echo hello from zone b; sleep 1000']}\n  selectors:\n    node: {name: edge}\n    cpu: {product_name: All, count: 100m}\n",
    );
    a.run(&[
        "--profile",
        "b",
        "-z",
        "b",
        "apply",
        "-f",
        hello.to_str().unwrap(),
    ]);
    eventually(
        &a,
        &["--profile", "b", "-z", "b", "get", "wk", "hello"],
        Duration::from_secs(60),
        "hello running on zone B's real node",
        |w| ready(w) == (1, 0),
    );
    for profile in ["local", "b"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = a
                .cli()
                .args(["--profile", profile, "-z", "b", "logs", "wk", "hello"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&logs.stdout).contains("hello from zone b") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no logs of zone B's container through {profile}: {}",
                String::from_utf8_lossy(&logs.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let echoed = a.run(&[
            "--profile",
            profile,
            "-z",
            "b",
            "shell",
            "wk",
            "hello",
            "--",
            "echo",
            "reached",
        ]);
        assert_eq!(echoed.trim(), "reached", "through {profile}");
    }

    // Zone B's datacenter goes: zone A applies, schedules and runs on; zone B answers 503.
    let outage = Outage::of("2");
    let during = write(
        &home_a,
        "during.yaml",
        "apiVersion: v1\nkind: Workload\nmetadata: {name: during}\nspec:\n  replica: {count: 2}\n  driver: Process\n  config: {cmd: sleep 1000}\n  selectors:\n    cpu: {product_name: All, count: 1}\n",
    );
    let during = during.to_str().unwrap();
    a.run(&["--profile", "local", "-z", "a", "apply", "-f", during]);
    eventually(
        &a,
        &["--profile", "local", "-z", "a", "get", "wk", "during"],
        Duration::from_secs(60),
        "zone A's workload running while zone B's datacenter is down",
        |w| ready(w) == (2, 0),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let (status, retry_after) = status_of(&url_b, &ca, &admin, path);
        if status == 503 {
            break retry_after;
        }
        assert!(
            Instant::now() < deadline,
            "zone B still answers {status} without its datacenter"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        refused.is_some_and(|seconds| seconds.parse::<u64>().is_ok()),
        "503 comes with Retry-After"
    );

    // Back: zone B answers again, with nothing lost on either side.
    outage.end();
    let deadline = Instant::now() + Duration::from_secs(120);
    while status_of(&url_b, &ca, &admin, path).0 != 200 {
        assert!(Instant::now() < deadline, "zone B never came back");
        std::thread::sleep(Duration::from_millis(500));
    }
    eventually(
        &a,
        &["--profile", "b", "-z", "a", "get", "wk", "during"],
        Duration::from_secs(120),
        "zone A's write during the outage seen through zone B",
        |w| ready(w) == (2, 0),
    );
    let after = write(
        &home_a,
        "after.yaml",
        "apiVersion: v1\nkind: Workload\nmetadata: {name: after}\nspec:\n  replica: {count: 2}\n  driver: Process\n  config: {cmd: sleep 1000}\n  selectors:\n    cpu: {product_name: All, count: 1}\n",
    );
    a.run(&[
        "--profile",
        "b",
        "-z",
        "b",
        "apply",
        "-f",
        after.to_str().unwrap(),
    ]);
    for (zone, name, wanted) in [
        ("b", "after", (2, 0)),
        ("b", "spread", (2, 0)),
        ("a", "spread", (2, 0)),
    ] {
        eventually(
            &a,
            &["--profile", "b", "-z", zone, "get", "wk", name],
            Duration::from_secs(60),
            &format!("{name} of zone {zone} through zone B after the outage"),
            |w| ready(w) == wanted,
        );
    }
    drop(edge);
    b.stop();
    a.stop();
}

/// Cluster-wide rows (users, roles, zones, workspaces, definitions, tokens) are written from
/// every zone: their compare-and-sets run at SERIAL, so of two zones creating one user at
/// once, in different datacenters, exactly one wins. At LOCAL_SERIAL both would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zones_across_datacenters_never_both_win_a_cluster_wide_compare_and_set() {
    use dora_crds::Kind;
    use dora_store::conformance::{spec, write};
    use dora_store::cql::{CqlConfig, CqlStore};
    use dora_store::{ObjectKey, Precondition, Store as _};

    let keyspace = format!("zones_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let connect = |datacenter: &str| {
        let Store::Cql(url) = zone_store(&keyspace, datacenter) else {
            unreachable!("zone_store is a cql:// URL")
        };
        async move {
            CqlStore::connect(CqlConfig::from_url(&url).unwrap())
                .await
                .unwrap()
        }
    };
    let in_dc1 = connect("dc1").await;
    let in_dc2 = connect("dc2").await;
    let mut winners = Vec::new();
    for i in 0..30 {
        let key = ObjectKey::new(Kind::User, "", "", &format!("user-{i}"));
        let (one, two) = tokio::join!(
            in_dc1.put_spec(write(&key, spec(1, "dc1"), Precondition::Absent)),
            in_dc2.put_spec(write(&key, spec(1, "dc2"), Precondition::Absent)),
        );
        assert!(
            one.is_ok() != two.is_ok(),
            "user-{i}: exactly one of the two creations wins: {one:?} / {two:?}"
        );
        winners.push(if one.is_ok() { "dc1" } else { "dc2" });
    }
    in_dc1.drop_keyspace().await.unwrap();
    eprintln!("winners: {winners:?}");
}
