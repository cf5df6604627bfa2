//! A zone without its own database: zone B's `dora up --upstream` keeps no store and forwards
//! to zone A's API server, whose store also holds zone B, scheduled by `dora scheduler --zone
//! b` and `dora creditsys --zone b` on that store. A node of zone B joins through B and runs a
//! workload applied through B; `dora logs` and `dora shell` reach it through B, which alone
//! reaches its nodes. Tokens are checked at both hops, and the caller's rights are A's to
//! grant. The store is a keyspace of the test Cassandra (`DORA_CQL_URL`): the processes
//! sharing it could not share SQLite.

mod support;

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Dora, Home, Store};

/// A child process killed when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dora COMPONENT --zone b --store STORE`, logging to the home.
fn component(home: &Home, component: &str, store: &str) -> Running {
    let log = std::fs::File::create(home.path().join(format!("{component}.log"))).unwrap();
    let child = Command::new(support::DORA)
        .args([component, "--zone", "b", "--store", store])
        .env("RUST_LOG", "info,dora_store=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Running(child)
}

/// A GET of `path` on `url` with `token`, from the loopback address `from`: its status and
/// body.
fn get(url: &str, ca: &str, token: &str, from: [u8; 4], path: &str) -> (u16, String) {
    get_with(url, ca, token, from, path, &[])
}

/// [`get`] with more headers.
fn get_with(
    url: &str,
    ca: &str,
    token: &str,
    from: [u8; 4],
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(dora_client::tls_config(ca).unwrap())
            .local_address(IpAddr::from(from))
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut request = http.get(format!("{url}{path}")).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on {url}: {e}"));
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    })
}

const SETUP: &str = "apiVersion: v1\nkind: Zone\nmetadata: {name: b}\n---\napiVersion: v1\nkind: Workspace\nmetadata: {name: other}\n---\napiVersion: v1\nkind: User\nmetadata: {name: bob}\nspec:\n  default: {zone: b, workspace: default}\n  resources: [{kind: All, zone: b, workspace: default, role: user}]\n---\napiVersion: v1\nkind: User\nmetadata: {name: carol}\nspec:\n  default: {zone: b, workspace: default}\n  resources: [{kind: All, zone: b, workspace: default, role: user}]\n";

const HELLO: &str = "apiVersion: v1\nkind: Workload\nmetadata: {name: hello, zone: b, workspace: default}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config:\n    cmd: [sh, -c, 'echo hello from zone b; exec sleep 600']\n  selectors:\n    cpu: {product_name: All, count: 100m}\n";

#[test]
fn a_zone_without_a_store_forwards_to_the_zone_holding_its_data_and_reaches_its_own_nodes() {
    let store = Store::fresh_cql();
    let Store::Cql(store_url) = &store else {
        unreachable!()
    };
    let (home_a, home_b) = (support::home(), support::home());
    // Zone A trusts B (on 127.0.0.1) to name its clients.
    // Failures count for 30 s: the three of a client are never too slow to ban it.
    let guard = ["--ban-window", "30s"];
    let mut args = vec!["--no-node", "--zone", "a", "--trusted-proxies", "127.0.0.1"];
    args.extend(guard);
    args.extend(store.args());
    let log = std::fs::File::create(home_a.path().join("zone-a.log")).unwrap();
    let a = Dora::up_with(
        home_a.path(),
        &args,
        "info,dora_store=warn",
        Stdio::from(log),
    );
    let url_a = support::url_of(&a);
    support::share_cluster_secrets(&home_a.path().join("data"), &home_b.path().join("data"));
    let log = std::fs::File::create(home_b.path().join("zone-b.log")).unwrap();
    let b = Dora::up_with(
        home_b.path(),
        &[
            "--no-node",
            "--zone",
            "b",
            "--upstream",
            &url_a,
            guard[0],
            guard[1],
        ],
        "info",
        Stdio::from(log),
    );
    let url_b = support::url_of(&b);
    assert!(
        !home_b.path().join("data/dora.db").exists(),
        "B keeps no store"
    );

    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(Dora::config(home_a.path())).unwrap())
            .unwrap();
    let admin = config["profiles"]["local"]["token"].as_str().unwrap();
    let ca = config["profiles"]["local"]["ca"].as_str().unwrap();
    let ca_path = home_a.path().join("data/pki/ca.pem");
    a.run(&[
        "config",
        "profile",
        "init",
        "b",
        "--api-server",
        &url_b,
        "--token",
        admin,
        "--ca",
        ca_path.to_str().unwrap(),
    ]);
    let through_b = |args: &[&str]| {
        let mut all = vec!["--profile", "b", "-z", "b"];
        all.extend(args);
        a.run(&all)
    };
    let setup = home_a.path().join("setup.yaml");
    std::fs::write(&setup, SETUP).unwrap();
    through_b(&["apply", "-f", setup.to_str().unwrap()]);
    let _scheduler = component(&home_a, "scheduler", store_url);
    let _credits = component(&home_a, "creditsys", store_url);

    // A node of zone B joins and reports through B.
    let join = through_b(&["token", "create", "--join"]).trim().to_string();
    let log = std::fs::File::create(home_b.path().join("nb.log")).unwrap();
    let _node = Running(
        Command::new(support::DORA)
            .args([
                "node",
                "--api-server",
                &url_b,
                "--zone",
                "b",
                "--node-name",
                "nb",
            ])
            .args([
                "--node-listen",
                "127.0.0.1:0",
                "--heartbeat",
                "1s",
                "--docker",
                "off",
            ])
            .arg("--ca")
            .arg(&ca_path)
            .arg("--state-dir")
            .arg(home_b.path().join("nb"))
            .env("DORA_JOIN_TOKEN", &join)
            .env("RUST_LOG", "warn,dora_nodeagent=info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );

    // A workload applied through B runs on B's node; its logs, a shell and top reach it
    // through B, which alone reaches the node.
    let hello = home_a.path().join("hello.yaml");
    std::fs::write(&hello, HELLO).unwrap();
    through_b(&["apply", "-f", hello.to_str().unwrap()]);
    let running = support::eventually(
        &a,
        &["--profile", "b", "-z", "b", "get", "c", "hello.0"],
        Duration::from_secs(60),
        "hello.0 running on node nb",
        |c| c["status"]["observed"]["state"] == "Running",
    );
    assert_eq!(running["status"]["observed"]["node"], "nb", "{running}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !through_b(&["logs", "c", "hello.0"]).contains("hello from zone b") {
        assert!(
            Instant::now() < deadline,
            "no greeting in the logs through B"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let shell = a
        .cli()
        .args(["--profile", "b", "-z", "b", "shell", "c", "hello.0", "--"])
        .args(["sh", "-c", "echo inside $DORA_CONTAINER; exit 4"])
        .output()
        .unwrap();
    assert_eq!(shell.status.code(), Some(4), "{shell:?}");
    assert!(String::from_utf8_lossy(&shell.stdout).contains("inside hello.0"));
    let mut session = Command::new(support::DORA)
        .env("DORA_CONFIG", Dora::config(home_a.path()))
        .args(["--profile", "b", "-z", "b", "shell", "c", "hello.0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = session.stdin.take().unwrap();
    std::io::Write::write_all(&mut keys, b"echo typed $DORA_CONTAINER\nexit 6\n").unwrap();
    drop(keys);
    let session = session.wait_with_output().unwrap();
    assert_eq!(session.status.code(), Some(6), "{session:?}");
    assert!(String::from_utf8_lossy(&session.stdout).contains("typed hello.0"));
    assert!(through_b(&["top", "node", "nb"]).contains("hello.0"));
    // A volume's files go up (streamed through B to the node) and come back.
    let storage = home_b.path().join("storage");
    let volume = home_a.path().join("volume.yaml");
    std::fs::write(
        &volume,
        format!(
            "apiVersion: v1\nkind: Storage\nmetadata: {{name: local, zone: b}}\nspec: {{kind: Local, mountpath: {}}}\n---\napiVersion: v1\nkind: Volume\nmetadata: {{name: data, zone: b, workspace: default}}\nspec: {{storage: local}}\n",
            storage.display()
        ),
    )
    .unwrap();
    through_b(&["apply", "-f", volume.to_str().unwrap()]);
    let note = home_a.path().join("note.txt");
    std::fs::write(&note, "written through zone b").unwrap();
    through_b(&["upload", note.to_str().unwrap(), "data", "notes/"]);
    let stored = storage.join("default/data/notes/note.txt");
    assert_eq!(
        std::fs::read_to_string(stored).unwrap(),
        "written through zone b"
    );
    let back = home_a.path().join("back.txt");
    through_b(&["download", "data", "notes/note.txt", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(back).unwrap(),
        "written through zone b"
    );

    // The forwarded request carries the caller's identity and no more rights: bob, a user of
    // workspace default, reads it through B but not workspace other, nor its containers.
    let bob = through_b(&["token", "create", "--user", "bob", "--expires-in", "1h"])
        .trim()
        .to_string();
    let (status, whoami) = get(&url_b, ca, &bob, [127, 0, 0, 1], "/v1/whoami");
    assert_eq!(status, 200, "{whoami}");
    assert!(whoami.contains("\"bob\""), "{whoami}");
    let workloads = "/v1/zones/b/workspaces/default/workloads";
    assert_eq!(get(&url_b, ca, &bob, [127, 0, 0, 1], workloads).0, 200);
    let logs = "/v1/zones/b/workspaces/default/containers/hello.0/logs";
    let (status, output) = get(&url_b, ca, &bob, [127, 0, 0, 1], logs);
    assert_eq!(
        (status, output.contains("hello from zone b")),
        (200, true),
        "{output}"
    );
    // Where a node-bound request goes is told to a trusted proxy (B) only: a client asking A
    // so gets the request made.
    let locate = [("dora-locate", "1")];
    let (status, output) = get_with(&url_a, ca, &bob, [127, 0, 0, 3], logs, &locate);
    assert_eq!(
        (status, output.contains("hello from zone b")),
        (200, true),
        "{output}"
    );
    for path in [
        "/v1/zones/b/workspaces/other/workloads",
        "/v1/zones/b/workspaces/other/containers/hello.0/logs",
    ] {
        let (status, answer) = get(&url_b, ca, &bob, [127, 0, 0, 1], path);
        assert_eq!(status, 403, "{path}: {answer}");
    }

    // A garbled token is refused at B, which bans its client (127.0.0.3) after three, and
    // never reaches A: A still serves that client.
    for _ in 0..3 {
        let (status, answer) = get(&url_b, ca, "garbage", [127, 0, 0, 3], workloads);
        assert_eq!(status, 401, "{answer}");
    }
    let (status, answer) = get(&url_b, ca, admin, [127, 0, 0, 3], workloads);
    assert_eq!(status, 403, "banned at B: {answer}");
    assert!(answer.contains("Banned"), "{answer}");
    assert_eq!(get(&url_a, ca, admin, [127, 0, 0, 3], workloads).0, 200);
    // B's bans are B's: an administrator lists and lifts them through B, bob may not.
    assert!(through_b(&["ban", "list"]).contains("127.0.0.3"));
    assert!(
        !a.run(&["--profile", "local", "ban", "list"])
            .contains("127.0.0.3")
    );
    assert_eq!(get(&url_b, ca, &bob, [127, 0, 0, 1], "/v1/bans").0, 403);
    through_b(&["ban", "lift", "127.0.0.3"]);
    assert_eq!(get(&url_b, ca, admin, [127, 0, 0, 3], workloads).0, 200);

    // A token B cannot tell is dead (its user was deleted) is refused by A, whose IP filter
    // sees the client (127.0.0.4), not B: A bans that client and still serves B's others.
    let carol = through_b(&["token", "create", "--user", "carol", "--expires-in", "1h"])
        .trim()
        .to_string();
    through_b(&["delete", "user", "carol"]);
    for _ in 0..3 {
        let (status, answer) = get(&url_b, ca, &carol, [127, 0, 0, 4], workloads);
        assert_eq!(status, 401, "{answer}");
        assert!(answer.contains("no longer exists"), "{answer}");
    }
    let (status, answer) = get(&url_a, ca, admin, [127, 0, 0, 4], workloads);
    assert_eq!(status, 403, "banned at A: {answer}");
    assert_eq!(get(&url_b, ca, admin, [127, 0, 0, 1], workloads).0, 200);

    // A watch through B streams: a change made while it is open arrives on it.
    let mut watch = Command::new(support::DORA)
        .env("DORA_CONFIG", Dora::config(home_a.path()))
        .args(["--profile", "b", "-z", "b", "get", "wk", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = support::line_reader(watch.stdout.take().unwrap());
    let _watch = Running(watch);
    support::read_until(&lines, |l| l.contains("hello"), "the watch's first rows");
    let later = home_a.path().join("later.yaml");
    std::fs::write(&later, HELLO.replace("name: hello,", "name: later,")).unwrap();
    through_b(&["apply", "-f", later.to_str().unwrap()]);
    support::read_until(&lines, |l| l.contains("later"), "the change on the watch");

    // Without its upstream, B answers 503 naming it.
    a.stop();
    let (status, answer) = get(&url_b, ca, admin, [127, 0, 0, 1], workloads);
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains(&url_a), "{answer}");
    b.stop();
}
