//! End to end: the real `dora` binary. `dora up` runs as a child process on a temporary data
//! folder and config; client commands run against it over HTTPS.

mod support;

use std::process::{Command as Process, Stdio};

use serde_json::Value;
use support::{DORA, Dora, line_reader, names, read_until, wait_for};

#[test]
fn up_apply_get_describe_version_watch_delete_restart() {
    let home = support::home();
    let dora = Dora::up(home.path());
    let banner = dora.banner.join("\n");
    assert!(banner.contains("Admin token"), "{banner}");
    let config = std::fs::read_to_string(Dora::config(home.path())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(Dora::config(home.path()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CLI config holds a token");
    assert!(config.contains("apiServer: https://127.0.0.1:"), "{config}");

    // Every example applies cleanly, and a second apply changes nothing.
    let applied = dora.run(&["apply", "-f", "examples/"]);
    for expected in [
        "workload/hello.process created",
        "workload/legacy.job created",
        "user/alice created",
        "volume/datasets created",
    ] {
        assert!(applied.contains(expected), "{applied}");
    }
    let again = dora.run(&["apply", "-f", "examples"]);
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

    // get, in every output format.
    let table = dora.run(&["get", "workloads"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("READY") && header.ends_with("AGE"),
        "{table}"
    );
    assert!(
        table.contains("hello.process") && table.contains("Process"),
        "{table}"
    );
    let wide = dora.run(&["get", "wk", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("OWNER") && wide.contains("team=demo"),
        "{wide}"
    );
    let list = dora.json(&["get", "wk", "-o", "json"]);
    assert_eq!(list["kind"], "List");
    assert_eq!(
        names(&list),
        [
            "hello.process",
            "legacy.job",
            "preprocess",
            "train.resnet",
            "train.sim",
            "web.busybox"
        ]
    );
    let one = dora.json(&["get", "Workload", "legacy.job", "--json"]);
    assert_eq!(
        one["spec"]["replica"]["count"], 2,
        "the original's string count is normalized"
    );
    assert_eq!(
        one["metadata"]["workspace"], "default",
        "`group:` is read as the workspace"
    );
    let yaml = dora.run(&["get", "wk", "hello.process", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Workload") && yaml.contains("name: hello.process"),
        "{yaml}"
    );
    let users = dora.run(&["get", "users"]);
    assert!(
        users.contains("alice") && users.contains("admin"),
        "{users}"
    );
    let everywhere = dora.run(&["get", "wk", "-A"]);
    assert!(
        everywhere.lines().next().unwrap().contains("WORKSPACE"),
        "{everywhere}"
    );

    // describe.
    let described = dora.run(&["describe", "wk", "hello.process"]);
    for expected in [
        "Name:       hello.process",
        "Workspace:  default",
        "Spec:",
        "Events:",
        "Created",
    ] {
        assert!(described.contains(expected), "{described}");
    }

    // A spec change through -e substitution keeps the previous spec as a version.
    let manifest = home.path().join("job.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: Workload\nmetadata: {name: job}\nspec:\n  replica: {count: 1}\n  image: {image: \"$IMAGE\"}\n").unwrap();
    let manifest = manifest.to_str().unwrap();
    assert!(
        dora.run(&["apply", "-f", manifest, "-e", "IMAGE=busybox:1"])
            .contains("workload/job created")
    );

    // A watcher sees the change.
    let mut watcher = Process::new(DORA)
        .args(["get", "wk", "job", "-w", "-o", "json"])
        .env("DORA_CONFIG", Dora::config(home.path()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let events = line_reader(watcher.stdout.take().unwrap());
    read_until(&events, |l| l.contains("\"ADDED\""), "initial ADDED event");
    assert!(
        dora.run(&["apply", "-f", manifest, "-e", "IMAGE=busybox:2"])
            .contains("workload/job configured")
    );
    // Status changes from the scheduler arrive as MODIFIED too; the spec change is one of them.
    read_until(
        &events,
        |l| l.contains("\"MODIFIED\"") && l.contains("busybox:2"),
        "MODIFIED event with the new image",
    );
    let _ = watcher.kill();
    let _ = watcher.wait();

    let versions = dora.json(&["versions", "wk", "job", "-o", "json"]);
    let images: Vec<&str> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["spec"]["image"]["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, ["busybox:1", "busybox:2"]);
    let table = dora.run(&["versions", "wk", "job"]);
    assert!(
        table.starts_with("GENERATION") && table.lines().count() == 3,
        "{table}"
    );
    let events = dora.run(&["events", "wk", "job"]);
    assert!(
        events.contains("Created") && events.contains("Configured"),
        "{events}"
    );

    // delete, by name and by file.
    assert!(
        dora.run(&["delete", "wk", "job"])
            .contains("workload/job deleted")
    );
    assert!(dora.fails(&["get", "wk", "job"]).contains("not found"));
    let deleted = dora.run(&["delete", "-f", "examples/volumes.yaml"]);
    assert_eq!(deleted.lines().count(), 3, "{deleted}");

    // A restart keeps everything and prints no secret.
    let token = dora
        .banner
        .iter()
        .find(|l| l.trim_start().starts_with("ey"))
        .unwrap()
        .trim()
        .to_string();
    dora.stop();
    let dora = Dora::up(home.path());
    let banner = dora.banner.join("\n");
    assert!(
        !banner.contains("token") && !banner.contains(&token),
        "{banner}"
    );
    let list = dora.json(&["get", "wk", "-o", "json"]);
    assert_eq!(
        names(&list),
        [
            "hello.process",
            "legacy.job",
            "train.resnet",
            "train.sim",
            "web.busybox"
        ]
    );
    let versions = dora.json(&["get", "users", "-o", "json"]);
    assert_eq!(names(&versions), ["admin", "alice"]);
    dora.stop();
}

#[test]
fn bad_input_profiles_tokens_and_completion() {
    let home = support::home();
    let dora = Dora::up(home.path());
    let bad = home.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Workload\nmetadata: {name: ok}\nspec: {replica: {count: 1}, image: {image: x}}\n---\napiVersion: v1\nkind: Workload\nmetadata: {name: broken}\nspec: {replica: {count: lots}, image: {image: x}}\n").unwrap();
    let output = dora
        .cli()
        .args(["apply", "-f", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("workload/ok created"), "{stdout}");
    assert!(
        stderr.contains("document 2") && stderr.contains("spec.replica.count"),
        "{stderr}"
    );
    assert!(dora.fails(&["get", "wk", "broken"]).contains("not found"));
    assert!(dora.fails(&["get", "pods"]).contains("unknown kind"));
    assert!(
        dora.fails(&["get", "wk", "-z", "atlantis"])
            .contains("Zone \"atlantis\" not found")
    );

    // A token for alice, used through her own profile, sees only her workspace.
    dora.run(&["apply", "-f", "examples/user-with-credits.yaml"]);
    let token = dora
        .run(&["token", "create", "--user", "alice", "--expires-in", "1h"])
        .trim()
        .to_string();
    assert!(token.split('.').count() == 5, "a compact JWE: {token}");
    let ca = home.path().join("data/pki/ca.pem");
    let url = std::fs::read_to_string(Dora::config(home.path()))
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("apiServer: ").map(str::to_string))
        .unwrap();
    dora.run(&[
        "config",
        "profile",
        "init",
        "alice",
        "--api-server",
        &url,
        "--token",
        &token,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    let profiles = dora.run(&["config", "profile", "ls"]);
    assert!(
        profiles.contains("*         alice")
            || profiles
                .lines()
                .any(|l| l.starts_with('*') && l.contains("alice")),
        "{profiles}"
    );
    let applied = dora.run(&["apply", "-f", "examples/process-workload.yaml"]);
    assert!(applied.contains("created"), "{applied}");
    assert_eq!(
        names(&dora.json(&["get", "wk", "-o", "json"])),
        ["hello.process"]
    );
    assert!(
        dora.fails(&["get", "wk", "-g", "default"])
            .contains("may not")
    );
    dora.run(&["config", "profile", "use", "local"]);
    dora.run(&["config", "use-workspace", "alice"]);
    assert_eq!(
        names(&dora.json(&["get", "wk", "-o", "json"])),
        ["hello.process"]
    );
    let view = dora.run(&["config", "view"]);
    assert!(
        view.contains("<hidden>") && !view.contains(&token),
        "{view}"
    );

    let completion = dora.run(&["completion", "bash"]);
    assert!(completion.contains("_dora"), "completion script");
    dora.stop();
}

#[test]
fn a_bad_log_level_is_refused_with_what_is_expected() {
    let home = support::home();
    let output = Process::new(DORA)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "info,dora=loud",
        ])
        .arg("--data-dir")
        .arg(home.path().join("data"))
        .env("DORA_CONFIG", Dora::config(home.path()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--log-level") && stderr.contains("expected a level such as info"),
        "{stderr}"
    );
}

#[test]
fn version_names_the_commit_the_binary_was_built_from() {
    let head = Process::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    let expected = format!(
        "dora {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        head.trim()
    );
    for args in [&["version"][..], &["--version"][..]] {
        let output = Process::new(DORA).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert_eq!(
            String::from_utf8(output.stdout).unwrap().trim(),
            expected,
            "{args:?}"
        );
    }
}

#[test]
fn a_first_start_that_stopped_early_is_bootstrapped_by_the_next() {
    let home = support::home();
    let data = home.path().join("data");
    // A busy port stops the start before it creates anything.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = Process::new(DORA)
        .args(["up", "--listen", &busy.local_addr().unwrap().to_string()])
        .arg("--data-dir")
        .arg(&data)
        .env("DORA_CONFIG", Dora::config(home.path()))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert!(!data.join("secret.key").exists());
    assert!(!Dora::config(home.path()).exists());
    drop(busy);
    // A start stopped (Ctrl-C) after it wrote the secret, before the bootstrap.
    std::fs::write(data.join("secret.key"), [7u8; 32]).unwrap();
    let dora = Dora::up(home.path());
    let banner = dora.banner.join("\n");
    assert!(banner.contains("Admin token"), "{banner}");
    assert!(
        dora.run(&["get", "users"]).contains("admin"),
        "the printed token works"
    );
    dora.stop();
    let dora = Dora::up(home.path());
    let banner = dora.banner.join("\n");
    assert!(!banner.contains("token"), "{banner}");
    dora.stop();
}

#[test]
fn delete_by_file_needs_no_defaults_for_what_the_file_names() {
    let home = support::home();
    let dora = Dora::up(home.path());
    // An administrator without a default zone or workspace.
    let ops = home.path().join("ops.yaml");
    std::fs::write(&ops, "apiVersion: v1\nkind: User\nmetadata: {name: ops}\nspec:\n  resources: [{kind: All, zone: All, workspace: All, role: admin}]\n").unwrap();
    dora.run(&["apply", "-f", ops.to_str().unwrap()]);
    let token = dora
        .run(&["token", "create", "--user", "ops", "--expires-in", "1h"])
        .trim()
        .to_string();
    let url = std::fs::read_to_string(Dora::config(home.path()))
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("apiServer: ").map(str::to_string))
        .unwrap();
    let ca = home.path().join("data/pki/ca.pem");
    dora.run(&[
        "config",
        "profile",
        "init",
        "ops",
        "--api-server",
        &url,
        "--token",
        &token,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    let manifest = home.path().join("placed.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: Role\nmetadata: {name: viewer}\nspec: {permission: {Workload: [Get]}}\n---\napiVersion: v1\nkind: Workload\nmetadata: {name: placed, zone: default, workspace: default}\nspec: {replica: {count: 1}, image: {image: x}}\n").unwrap();
    let manifest = manifest.to_str().unwrap();
    let applied = dora.run(&["apply", "-f", manifest]);
    assert!(applied.contains("workload/placed created"), "{applied}");
    let deleted = dora.run(&["delete", "-f", manifest]);
    assert!(
        deleted.contains("role/viewer deleted") && deleted.contains("workload/placed deleted"),
        "{deleted}"
    );
    // What the file leaves out still needs a default.
    std::fs::write(home.path().join("bare.yaml"), "apiVersion: v1\nkind: Workload\nmetadata: {name: bare, zone: default}\nspec: {replica: {count: 1}, image: {image: x}}\n").unwrap();
    let error = dora.fails(&[
        "delete",
        "-f",
        home.path().join("bare.yaml").to_str().unwrap(),
    ]);
    assert!(error.contains("use-workspace"), "{error}");
    dora.stop();
}

#[test]
fn up_with_hollow_nodes_places_gpu_work_logs_reconciles_as_json_and_shows_credits() {
    let home = support::home();
    let log = std::fs::File::create(home.path().join("up.log")).unwrap();
    let dora = Dora::up_with(
        home.path(),
        &[
            "--no-node",
            "--sim-nodes",
            "2",
            "--sim-gpus",
            "2xA100",
            "--log-format",
            "json",
            "--credit-slice",
            "1s",
        ],
        "info,dora_store=warn",
        Stdio::from(log),
    );
    let manifest = home.path().join("gpu.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Resourcecredit\nmetadata: {name: a100}\nspec:\n  product_name: A100\n  credit: {per: {hour: 3600}}\n---\napiVersion: v1\nkind: Workload\nmetadata: {name: train}\nspec:\n  replica: {count: 3}\n  driver: Process\n  config: {cmd: sleep 1000}\n  selectors:\n    gpu: {product_name: A100, count: 2}\n",
    )
    .unwrap();
    dora.run(&["apply", "-f", manifest.to_str().unwrap()]);
    // Two nodes of two A100s: two replicas run, the third waits with the reason.
    let workload = wait_for(
        &dora,
        &["get", "wk", "train", "-o", "json"],
        "2 of 3 ready",
        |w| w["status"]["computed"]["ready"] == 2 && w["status"]["computed"]["pending"] == 1,
    );
    let reason = workload["status"]["computed"]["reason"].as_str().unwrap();
    assert!(reason.contains("0/2 nodes fit"), "{reason}");
    let containers = dora.run(&["get", "c"]);
    assert!(
        containers.contains("Running") && containers.contains("sim-0000"),
        "{containers}"
    );
    assert!(containers.contains("Pending"), "{containers}");
    assert!(dora.run(&["get", "wk"]).contains("2/3"));
    assert!(dora.run(&["get", "node"]).contains("Ready"));
    // Hollow nodes registered and report through the API, each with a credential of its own.
    let node: Value =
        serde_json::from_str(&dora.run(&["get", "node", "sim-00001", "-o", "json"])).unwrap();
    assert_eq!(node["metadata"]["owner"], "node:sim-00001", "{node}");
    assert!(dora.run(&["events"]).contains("FailedScheduling"));
    wait_for(
        &dora,
        &["credits", "-o", "json"],
        "credits counted",
        |list| {
            list["items"][0]["status"]["computed"]["total"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0
        },
    );
    let credits = dora.run(&["credits"]);
    assert!(
        credits.contains("admin") && credits.contains("USED THIS WEEK"),
        "{credits}"
    );
    dora.stop();
    let log = std::fs::read_to_string(home.path().join("up.log")).unwrap();
    let reconcile = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "reconciled")
        .expect("JSON reconcile lines in the log");
    assert_eq!(reconcile["span"]["name"], "reconcile", "{reconcile}");
    assert_eq!(reconcile["span"]["controller"], "scheduler", "{reconcile}");
    assert!(
        reconcile["fields"]["duration_ms"].is_number(),
        "{reconcile}"
    );
}

#[test]
fn an_address_banned_after_failed_logins_is_listed_and_lifted() {
    let home = support::home();
    let dora = Dora::up(home.path());
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(Dora::config(home.path())).unwrap())
            .unwrap();
    let profile = &config["profiles"]["local"];
    let url = format!("{}/v1/whoami", profile["apiServer"].as_str().unwrap());
    let admin = profile["token"].as_str().unwrap().to_string();
    // Another loopback address than the CLI's tries tokens.
    let stranger = reqwest::Client::builder()
        .use_preconfigured_tls(dora_client::tls_config(profile["ca"].as_str().unwrap()).unwrap())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = |token: &str| {
        let request = stranger.get(&url).bearer_auth(token).send();
        runtime.block_on(request).unwrap().status().as_u16()
    };
    for _ in 0..3 {
        assert_eq!(status("guess"), 401);
    }
    assert_eq!(status(&admin), 403);
    let table = dora.run(&["ban", "list"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ADDRESS") && header.ends_with("LEFT"),
        "{table}"
    );
    assert!(table.contains("127.0.0.2"), "{table}");
    let list = dora.json(&["ban", "list", "-o", "json"]);
    assert_eq!(list["items"][0]["address"], "127.0.0.2", "{list}");
    assert!(dora.run(&["ban", "lift", "127.0.0.2"]).contains("Lifted"));
    assert_eq!(status(&admin), 200);
    assert_eq!(dora.run(&["ban", "list"]), "");
    let again = dora.fails(&["ban", "lift", "127.0.0.2"]);
    assert!(again.contains("not banned"), "{again}");
    let nonsense = dora.fails(&["ban", "lift", "nonsense"]);
    assert!(nonsense.contains("not an IP address"), "{nonsense}");
    dora.stop();
}
