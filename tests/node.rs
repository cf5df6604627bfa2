//! End to end: the node agent inside `dora up` runs containers with the process driver and on
//! a real Docker Engine, and the CLI reaches their logs, shells and usage through the API.
//! Docker tests need dockerd and the dora/busybox image (`scripts/docker start`); under
//! CI=true their absence fails the run.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Dora;

const NODE: &str = "n1";

fn up(home: &Path) -> Dora {
    let log = std::fs::File::create(home.join("up.log")).unwrap();
    Dora::up_with(
        home,
        &["--node-name", NODE, "--heartbeat", "1s"],
        "warn,dora_nodeagent=info",
        Stdio::from(log),
    )
}

/// Whether dockerd answers and has the test image; under CI=true it must.
fn docker_ready() -> bool {
    let ready = Process::new("docker")
        .args(["image", "inspect", "dora/busybox"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        assert!(
            std::env::var("CI").is_err(),
            "Docker or the dora/busybox image is missing; run scripts/docker start"
        );
        eprintln!("skipped: no Docker (run scripts/docker start)");
    }
    ready
}

/// Docker containers of one Dora container, by label.
fn docker_ids(container: &str) -> Vec<String> {
    let output = Process::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=dora.name={container}"),
        ])
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Removes a test's Docker containers even when it fails.
struct DockerCleanup(&'static str);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for id in docker_ids(self.0) {
            let _ = Process::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

/// Kills a test's processes (exactly `marker`) even when it fails: they outlive the agent.
struct ProcessCleanup(&'static str);

impl Drop for ProcessCleanup {
    fn drop(&mut self) {
        for pid in process_ids(self.0) {
            let _ = Process::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// Processes whose command line is `marker`.
fn processes(marker: &str) -> usize {
    process_ids(marker).len()
}

fn process_ids(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|cmd| {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.trim() == marker
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn workload(name: &str, driver: &str, command: &str, restart: &str) -> String {
    let image = if driver == "Docker" {
        "  image: {image: dora/busybox, pullPolicy: Never}\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Workload\nmetadata: {{name: {name}}}\nspec:\n  replica: {{count: 1}}\n  driver: {driver}\n{image}  config:\n    cmd: [sh, -c, {command:?}]\n    restartPolicy: {restart}\n  selectors:\n    cpu: {{product_name: All, count: 100m}}\n"
    )
}

fn apply(dora: &Dora, home: &Path, file: &str, yaml: &str) {
    let path = home.join(file);
    std::fs::write(&path, yaml).unwrap();
    dora.run(&["apply", "-f", path.to_str().unwrap()]);
}

fn container(dora: &Dora, name: &str) -> Value {
    let list = dora.json(&["get", "c", "-o", "json"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metadata"]["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn state(container: &Value) -> &str {
    container["status"]["observed"]["state"]
        .as_str()
        .unwrap_or("")
}

fn wait_state(dora: &Dora, name: &str, wanted: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = container(dora, name);
        if state(&found) == wanted {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {wanted}: {found}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `check` every 100 ms for up to 30 s.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Apply → Running → logs → one-off shell → top → delete → gone, for one driver.
fn lifecycle(driver: &str, name: &'static str, marker: &str) {
    let home = support::home();
    let dora = up(home.path());
    let replica = format!("{name}.0");
    let command = format!("echo hello from $DORA_WORKLOAD; exec {marker}");
    // Docker publishes the port at nodePort + replica index.
    let ports = "  network:\n    ports: [{name: web, port: 8080, nodePort: 39180}]\n";
    let mut yaml = workload(name, driver, &command, "Never");
    if driver == "Docker" {
        yaml.push_str(ports);
    }
    apply(&dora, home.path(), "w.yaml", &yaml);
    let running = wait_state(&dora, &replica, "Running");
    if driver == "Docker" {
        let id = docker_ids(&replica).pop().unwrap();
        let output = Process::new("docker")
            .args(["port", &id, "8080/tcp"])
            .output()
            .unwrap();
        let published = String::from_utf8_lossy(&output.stdout);
        assert!(published.contains(":39180"), "{published}");
    }
    assert_eq!(running["status"]["observed"]["node"], NODE);
    assert_eq!(running["status"]["computed"]["node"], NODE);
    eventually("the greeting in the logs", || {
        dora.run(&["logs", "c", &replica])
            .contains(&format!("hello from {name}"))
    });
    assert!(
        dora.run(&["logs", "wk", name, "--tail", "1"])
            .starts_with("hello")
    );

    let output = dora
        .cli()
        .args([
            "shell",
            "c",
            &replica,
            "--",
            "sh",
            "-c",
            "echo inside $DORA_CONTAINER; exit 4",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("inside {replica}")));

    // A session fed from a pipe, and one on a terminal (`script` gives the CLI one).
    let typed = session(
        &dora,
        &replica,
        false,
        "echo typed $DORA_CONTAINER\nexit 6\n",
    );
    assert_eq!(typed.0, Some(6), "{typed:?}");
    assert!(typed.1.contains(&format!("typed {replica}")), "{typed:?}");
    let terminal = session(&dora, &replica, true, "tty\nexit 3\n");
    assert_eq!(terminal.0, Some(3), "{terminal:?}");
    assert!(terminal.1.contains("/dev/pts/"), "{terminal:?}");

    let top = dora.json(&["top", "c", &replica, "-o", "json"]);
    assert!(
        top["items"][0]["usage"]["memoryBytes"].as_u64().unwrap() > 0,
        "{top}"
    );
    assert!(dora.run(&["top", "node", NODE]).contains(&replica));

    // Logs of a container that is not placed, and of one that does not exist, say so.
    assert!(
        dora.fails(&["logs", "c", "nothing.0"])
            .contains("not found")
    );

    dora.run(&["delete", "wk", name]);
    eventually("the container row to go", || {
        container(&dora, &replica).is_null()
    });
    if driver == "Docker" {
        eventually("the Docker container to go", || {
            docker_ids(&replica).is_empty()
        });
    } else {
        eventually("the process to end", || processes(marker) == 0);
        let folder = home
            .path()
            .join("data/node/process/default/default")
            .join(&replica);
        eventually("the process folder to go", || !folder.exists());
    }
    dora.stop();
}

/// `dora shell c NAME` with `input` typed, on a terminal when `tty`: exit code and output.
fn session(dora: &Dora, replica: &str, tty: bool, input: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let dora_cmd = format!("{} shell c {replica}", support::DORA);
    let mut command = if tty {
        let mut script = Process::new("script");
        script.args(["-qfec", &dora_cmd, "/dev/null"]);
        script
    } else {
        let mut plain = Process::new(support::DORA);
        plain.args(["shell", "c", replica]);
        plain
    };
    let mut child = command
        .env("DORA_CONFIG", Dora::config(&dora.home))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    // A terminal session ends with its `exit`; its input stays open until then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the shell session did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

#[test]
fn process_containers_run_log_shell_and_are_removed() {
    lifecycle("Process", "hello.process", "sleep 1001");
}

#[test]
fn docker_containers_run_log_shell_and_are_removed() {
    if !docker_ready() {
        return;
    }
    let _cleanup = DockerCleanup("hello.docker.0");
    lifecycle("Docker", "hello.docker", "sleep 1002");
}

/// Restarts as the node reports them: the restart count of the run it reported last.
fn restarts(container: &Value) -> u64 {
    container["status"]["observed"]["restarts"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn failing_commands_follow_each_restart_policy() {
    let home = support::home();
    let dora = up(home.path());
    let mut drivers = vec![("Process", "p")];
    let _cleanup: Vec<DockerCleanup> = if docker_ready() {
        drivers.push(("Docker", "d"));
        ["d.never.0", "d.onfailure.0", "d.always.0", "d.done.0"]
            .into_iter()
            .map(DockerCleanup)
            .collect()
    } else {
        Vec::new()
    };
    let mut yaml = String::new();
    for (driver, prefix) in &drivers {
        for (name, command, policy) in [
            ("never", "echo run; exit 3", "Never"),
            ("onfailure", "echo run; exit 3", "OnFailure"),
            ("always", "echo run; exit 0", "Always"),
            ("done", "echo run; exit 0", "OnFailure"),
        ] {
            yaml.push_str(&workload(
                &format!("{prefix}.{name}"),
                driver,
                command,
                policy,
            ));
            yaml.push_str("---\n");
        }
    }
    apply(&dora, home.path(), "policies.yaml", &yaml);

    for (_, prefix) in &drivers {
        let never = wait_state(&dora, &format!("{prefix}.never.0"), "Failed");
        assert_eq!(never["status"]["observed"]["exitCode"], 3, "{never}");
        let done = wait_state(&dora, &format!("{prefix}.done.0"), "Succeeded");
        assert_eq!(done["status"]["observed"]["exitCode"], 0, "{done}");
        // Its events tell the run: placed, started, ended with the exit code.
        let events = dora.json(&["events", "c", &format!("{prefix}.never.0"), "-o", "json"]);
        let told: Vec<(String, String)> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let text = |f: &str| e[f].as_str().unwrap_or_default().to_string();
                (text("reason"), text("message"))
            })
            .collect();
        let told: Vec<&(String, String)> = told.iter().filter(|(r, _)| r != "Pulling").collect();
        let reasons: Vec<&str> = told.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(reasons, vec!["Scheduled", "Started", "Failed"], "{told:?}");
        assert!(told[2].1.starts_with("exit code 3"), "{told:?}");
    }
    // The restart backoff starts at 10 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    for (_, prefix) in &drivers {
        loop {
            let onfailure = container(&dora, &format!("{prefix}.onfailure.0"));
            let always = container(&dora, &format!("{prefix}.always.0"));
            if restarts(&onfailure) >= 1 && restarts(&always) >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no restarts: {onfailure} {always}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for (_, prefix) in &drivers {
        let never = container(&dora, &format!("{prefix}.never.0"));
        let done = container(&dora, &format!("{prefix}.done.0"));
        assert_eq!((restarts(&never), state(&never)), (0, "Failed"), "{never}");
        assert_eq!((restarts(&done), state(&done)), (0, "Succeeded"), "{done}");
        // The logs of an ended container stay readable.
        assert!(
            dora.run(&["logs", "c", &format!("{prefix}.never.0")])
                .contains("run")
        );
        for name in ["never", "onfailure", "always", "done"] {
            dora.run(&["delete", "wk", &format!("{prefix}.{name}")]);
        }
    }
    if drivers.len() > 1 {
        eventually("the Docker containers to go", || {
            ["d.never.0", "d.onfailure.0", "d.always.0", "d.done.0"]
                .iter()
                .all(|c| docker_ids(c).is_empty())
        });
    }
    dora.stop();
}

/// A workload whose runs count themselves in a file of the volume `data` (seen at `folder`):
/// runs 1 and 2 print `run N` and fail, run 3 prints `run 3` and stays up as `marker`.
fn crashing(name: &str, driver: &str, folder: &str, marker: &str) -> String {
    let command = format!(
        "f={folder}/{name}; n=$(( $(cat $f 2>/dev/null || echo 0) + 1 )); echo $n > $f; echo run $n; [ $n -ge 3 ] && exec {marker}; exit 1"
    );
    let target = if driver == "Docker" {
        format!("      target: {folder}\n")
    } else {
        String::new()
    };
    format!(
        "{}  volumes:\n    - name: data\n{target}",
        workload(name, driver, &command, "OnFailure")
    )
}

/// Waits until `check` accepts container `name`.
fn wait_container(dora: &Dora, name: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = container(dora, name);
        if check(&found) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never {what}: {found}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A crashed container's output: `logs` shows the run that ended while the container waits
/// to restart (bound to no node), `logs --previous` the run before the current one; only
/// one previous run is kept, and nothing once the container is deleted.
#[test]
fn a_crashed_containers_output_stays_readable_and_previous_runs_are_kept() {
    let home = support::home();
    let log = std::fs::File::create(home.path().join("up.log")).unwrap();
    // Restarts 4 s, then 8 s, after a crash.
    let dora = Dora::up_with(
        home.path(),
        &[
            "--node-name",
            NODE,
            "--heartbeat",
            "1s",
            "--restart-backoff",
            "4s",
        ],
        "warn,dora_nodeagent=info",
        Stdio::from(log),
    );
    let storage = home.path().join("storage");
    apply(
        &dora,
        home.path(),
        "volume.yaml",
        &format!(
            "apiVersion: v1\nkind: Storage\nmetadata: {{name: local}}\nspec: {{kind: Local, mountpath: {}}}\n---\napiVersion: v1\nkind: Volume\nmetadata: {{name: data}}\nspec: {{storage: local}}\n",
            storage.display()
        ),
    );
    let _processes = ProcessCleanup("sleep 1011");
    let mut cases = vec![(
        "crash.process",
        "Process",
        "$DORA_VOLUME_DATA",
        "sleep 1011",
    )];
    let docker = docker_ready();
    let _docker = docker.then(|| DockerCleanup("crash.docker.0"));
    if docker {
        cases.push(("crash.docker", "Docker", "/mnt/data", "sleep 1012"));
    }
    let mut yaml = workload("once", "Process", "echo only run; exit 2", "Never");
    for (name, driver, folder, marker) in &cases {
        yaml.push_str("---\n");
        yaml.push_str(&crashing(name, driver, folder, marker));
    }
    apply(&dora, home.path(), "crashing.yaml", &yaml);

    // The runs of both drivers go on side by side: each waits 8 s after its second.
    for (name, _, _, _) in &cases {
        let replica = format!("{name}.0");
        // Run 2 failed: the container waits 8 s to restart, bound to no node.
        wait_container(&dora, &replica, "waited after run 2", |c| {
            state(c) == "Failed" && restarts(c) == 1 && c["status"]["computed"]["node"].is_null()
        });
        assert_eq!(dora.run(&["logs", "c", &replica]), "run 2\n");
        assert_eq!(dora.run(&["logs", "c", &replica, "--previous"]), "run 1\n");
    }
    for (name, _, _, _) in &cases {
        let replica = format!("{name}.0");
        // Run 3 runs: run 2 is the previous one, and run 1 is no longer kept.
        wait_container(&dora, &replica, "ran a third time", |c| {
            state(c) == "Running" && restarts(c) == 2
        });
        eventually("the third run's output", || {
            dora.run(&["logs", "c", &replica]) == "run 3\n"
        });
        assert_eq!(dora.run(&["logs", "c", &replica, "-p"]), "run 2\n");
        // Of the ended copies, only the output is kept.
        if name.ends_with("docker") {
            assert_eq!(docker_ids(&replica).len(), 1);
        } else {
            let copies = home
                .path()
                .join("data/node/process/default/default")
                .join(&replica);
            assert_eq!(std::fs::read_dir(copies).unwrap().count(), 1);
        }
        assert_eq!(
            dora.run(&["logs", "wk", name, "-p", "--tail", "1"]),
            "run 2\n"
        );
    }

    // A container that never restarted has no previous run.
    wait_state(&dora, "once.0", "Failed");
    assert_eq!(dora.run(&["logs", "c", "once.0"]), "only run\n");
    let error = dora.fails(&["logs", "c", "once.0", "--previous"]);
    assert!(
        error.contains("container once.0 has not restarted; no previous run"),
        "{error}"
    );

    for (name, _, _, _) in &cases {
        dora.run(&["delete", "wk", name]);
    }
    let previous = home.path().join("data/node/previous");
    eventually("the previous runs' output to go", || {
        std::fs::read_dir(&previous).is_ok_and(|mut entries| entries.next().is_none())
    });
    eventually("the third runs to end", || {
        processes("sleep 1011") == 0 && (!docker || docker_ids("crash.docker.0").is_empty())
    });
    dora.stop();
}

#[test]
fn a_killed_agent_adopts_what_it_ran_without_duplicates() {
    let home = support::home();
    let dora = up(home.path());
    let marker = "sleep 1003";
    apply(
        &dora,
        home.path(),
        "p.yaml",
        &workload(
            "kept.process",
            "Process",
            &format!("exec {marker}"),
            "Never",
        ),
    );
    let docker = docker_ready();
    let _cleanup = DockerCleanup("kept.docker.0");
    if docker {
        apply(
            &dora,
            home.path(),
            "d.yaml",
            &workload("kept.docker", "Docker", "exec sleep 1004", "Never"),
        );
        wait_state(&dora, "kept.docker.0", "Running");
    }
    let before = wait_state(&dora, "kept.process.0", "Running");
    eventually("the process", || processes(marker) == 1);
    let docker_before = docker_ids("kept.docker.0");

    // Killed without a chance to clean up; its containers keep running.
    drop(dora);
    assert_eq!(processes(marker), 1);
    let dora = up(home.path());
    // Heartbeats and a resync later, nothing was started twice.
    std::thread::sleep(Duration::from_secs(3));
    let after = wait_state(&dora, "kept.process.0", "Running");
    assert_eq!(processes(marker), 1);
    assert_eq!(
        after["status"]["observed"]["startedAt"],
        before["status"]["observed"]["startedAt"]
    );
    assert_eq!(docker_ids("kept.docker.0"), docker_before);
    if docker {
        assert_eq!(docker_before.len(), 1);
    }
    dora.run(&["delete", "wk", "kept.process"]);
    eventually("the process to end", || processes(marker) == 0);
    if docker {
        dora.run(&["delete", "wk", "kept.docker"]);
        eventually("the Docker container to go", || {
            docker_ids("kept.docker.0").is_empty()
        });
    }
    dora.stop();
}

#[test]
fn node_credentials_act_only_for_their_node() {
    let home = support::home();
    let dora = up(home.path());
    apply(
        &dora,
        home.path(),
        "w.yaml",
        &workload("guarded", "Process", "exec sleep 1005", "Never"),
    );
    let running = wait_state(&dora, "guarded.0", "Running");
    let epoch = running["status"]["computed"]["epoch"].as_u64().unwrap();
    let other = dora
        .run(&["token", "create", "--node", "n2"])
        .trim()
        .to_string();
    let own = dora
        .run(&["token", "create", "--node", NODE])
        .trim()
        .to_string();
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(Dora::config(home.path())).unwrap())
            .unwrap();
    let profile = &config["profiles"]["local"];
    let base = profile["apiServer"].as_str().unwrap().to_string();
    let api = Api::new(&base, profile["ca"].as_str().unwrap());
    let node_report = serde_json::json!({"heartbeat": 0, "cpu": {"count": 1}, "memoryBytes": 1});
    let n1 = "/v1/zones/default/nodes/n1/report";
    let n2 = "/v1/zones/default/nodes/n2/report";
    assert_eq!(api.put(&other, n1, &node_report), 403);
    assert_eq!(api.put(&other, n2, &node_report), 200);
    let report = "/v1/zones/default/workspaces/default/containers/guarded.0/report";
    let failed = |node: &str, epoch: u64| serde_json::json!({"node": node, "epoch": epoch, "state": "Failed"});
    // Another node's credential cannot speak for n1, nor report for itself what is not bound
    // to it; n1's own credential cannot report a binding the container does not have.
    assert_eq!(api.put(&other, report, &failed(NODE, epoch)), 403);
    assert_eq!(api.put(&other, report, &failed("n2", epoch)), 409);
    assert_eq!(api.put(&own, report, &failed(NODE, epoch + 1)), 409);
    let containers = "/v1/zones/default/containers";
    assert_eq!(api.get(&other, containers), 403);
    assert_eq!(api.get(&other, &format!("{containers}?node=n1")), 403);
    assert_eq!(api.get(&other, &format!("{containers}?node=n2")), 200);
    assert_eq!(
        api.get(&other, "/v1/zones/default/workspaces/default/workloads"),
        403
    );

    // A join token claims a new node's name once and gets that node's credential; it can do
    // nothing else itself.
    let join = dora.run(&["token", "create", "--join"]).trim().to_string();
    let claim = |token: &str, node: &str| {
        api.post(token, &format!("/v1/zones/default/nodes/{node}/credential"))
    };
    let (status, issued) = claim(&join, "n9");
    assert_eq!(status, 201, "{issued}");
    let n9 = issued["token"].as_str().unwrap().to_string();
    assert_eq!(claim(&join, "n9").0, 409);
    assert_eq!(claim(&join, NODE).0, 409);
    assert_eq!(claim(&other, "n10").0, 403);
    let n9_report = "/v1/zones/default/nodes/n9/report";
    assert_eq!(api.put(&n9, n9_report, &node_report), 200);
    assert_eq!(api.put(&n9, n1, &node_report), 403);
    assert_eq!(api.put(&join, n9_report, &node_report), 403);
    assert_eq!(api.get(&join, &format!("{containers}?node=n9")), 403);
    assert_eq!(state(&container(&dora, "guarded.0")), "Running");
    dora.run(&["delete", "wk", "guarded"]);
    eventually("the process to end", || processes("sleep 1005") == 0);
    dora.stop();
}

/// Raw HTTPS calls to the API, for what the CLI does not do.
struct Api {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str, ca: &str) -> Api {
        let tls = dora_client::tls_config(ca).unwrap();
        Api {
            runtime: tokio::runtime::Runtime::new().unwrap(),
            http: reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .build()
                .unwrap(),
            base: base.to_string(),
        }
    }

    fn put(&self, token: &str, path: &str, body: &Value) -> u16 {
        let request = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body);
        self.runtime
            .block_on(request.send())
            .unwrap()
            .status()
            .as_u16()
    }

    fn post(&self, token: &str, path: &str) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token);
        self.runtime.block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        })
    }

    fn get(&self, token: &str, path: &str) -> u16 {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token);
        self.runtime
            .block_on(request.send())
            .unwrap()
            .status()
            .as_u16()
    }
}

fn sha256(path: &Path) -> String {
    let output = Process::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn volume_files_round_trip_stay_confined_and_mount_into_containers() {
    let home = support::home();
    let dora = up(home.path());
    let storage = home.path().join("storage");
    apply(
        &dora,
        home.path(),
        "volume.yaml",
        &format!(
            "apiVersion: v1\nkind: Storage\nmetadata: {{name: local}}\nspec: {{kind: Local, mountpath: {}}}\n---\napiVersion: v1\nkind: Volume\nmetadata: {{name: data}}\nspec: {{storage: local}}\n",
            storage.display()
        ),
    );
    // 50 MB of varied bytes.
    let big = home.path().join("big.bin");
    let chunk: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut bytes = Vec::with_capacity(50_000_000);
    for round in 0..50u8 {
        bytes.extend(chunk.iter().map(|b| b.wrapping_add(round)));
    }
    std::fs::write(&big, &bytes).unwrap();

    // An interrupted upload left its first 10 MB; the upload resumes there.
    let folder = storage.join("default/data/sets");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(".big.bin.dora-upload"), &bytes[..10_000_000]).unwrap();
    let output = dora
        .cli()
        .args(["upload", big.to_str().unwrap(), "data", "sets/"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("uploaded 1 file, ") && said.contains("; 1 resumed"),
        "{said}"
    );
    assert_eq!(sha256(&folder.join("big.bin")), sha256(&big));

    let listing = dora.json(&["ls", "data", "sets", "-o", "json"]);
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listing}");
    assert_eq!(items[0]["name"], "big.bin");
    assert_eq!(items[0]["size"], 50_000_000);
    assert!(dora.run(&["ls", "data"]).contains("sets/"));

    let back = home.path().join("back.bin");
    let output = dora
        .cli()
        .args(["download", "data", "sets/big.bin", back.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(sha256(&back), sha256(&big));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("downloaded 1 file, "), "{said}");

    // Nothing leads out of the volume: not `..`, not a symlink.
    std::fs::write(home.path().join("secret"), "outside").unwrap();
    std::os::unix::fs::symlink(home.path().join("secret"), folder.join("link")).unwrap();
    for escape in ["../../../secret", "sets/../../secret", "sets/link"] {
        let error = dora.fails(&["download", "data", escape, home.path().to_str().unwrap()]);
        assert!(
            error.contains("out of the volume") || error.contains("leaves the volume"),
            "{escape}: {error}"
        );
    }
    let outside = home.path().join("evil.txt");
    std::fs::write(&outside, "x").unwrap();
    let error = dora.fails(&[
        "upload",
        outside.to_str().unwrap(),
        "data",
        "../../evil.txt",
    ]);
    assert!(error.contains("volume"), "{error}");
    assert!(!storage.join("evil.txt").exists() && !home.path().join("evil.txt.x").exists());

    // A container sees the volume: the process driver through DORA_VOLUME_DATA.
    apply(
        &dora,
        home.path(),
        "reader.yaml",
        &format!(
            "{}  volumes:\n    - name: data\n",
            workload(
                "reader",
                "Process",
                "wc -c < $DORA_VOLUME_DATA/sets/big.bin",
                "Never"
            )
        ),
    );
    wait_state(&dora, "reader.0", "Succeeded");
    assert!(dora.run(&["logs", "c", "reader.0"]).contains("50000000"));
    if docker_ready() {
        let _cleanup = DockerCleanup("docker.reader.0");
        apply(
            &dora,
            home.path(),
            "docker-reader.yaml",
            &format!(
                "{}  volumes:\n    - name: data\n      target: /mnt/data\n",
                workload(
                    "docker.reader",
                    "Docker",
                    "wc -c < /mnt/data/sets/big.bin",
                    "Never"
                )
            ),
        );
        wait_state(&dora, "docker.reader.0", "Succeeded");
        assert!(
            dora.run(&["logs", "c", "docker.reader.0"])
                .contains("50000000")
        );
        dora.run(&["delete", "wk", "docker.reader"]);
        eventually("the Docker container to go", || {
            docker_ids("docker.reader.0").is_empty()
        });
    }
    dora.stop();
}

/// The API server's URL, from the CLI profile `dora up` wrote.
fn api_url(home: &Path) -> String {
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(Dora::config(home)).unwrap()).unwrap();
    config["profiles"]["local"]["apiServer"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `dora node` for the cluster of a `dora up --no-node`, started as its help says: its node
/// credential in DORA_NODE_TOKEN; it reaches the API at `api`.
struct NodeAgent {
    child: std::process::Child,
    token: String,
}

impl NodeAgent {
    fn start(dora: &Dora, name: &str, api: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let token = dora
            .run(&["token", "create", "--node", name])
            .trim()
            .to_string();
        let log = std::fs::File::create(dora.home.join(format!("{name}.log"))).unwrap();
        let child = Process::new(support::DORA)
            .args(["node", "--api-server", api, "--node-name", name])
            .args(["--node-listen", "127.0.0.1:0", "--heartbeat", "1s"])
            .arg("--ca")
            .arg(dora.home.join("data/pki/ca.pem"))
            .arg("--state-dir")
            .arg(dora.home.join(name))
            .args(args)
            .env("DORA_NODE_TOKEN", &token)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn,dora_nodeagent=info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        NodeAgent { child, token }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `output` between the line `--- name` and the next `--- ` line.
fn section<'a>(output: &'a str, name: &str) -> Vec<&'a str> {
    output
        .lines()
        .skip_while(|l| *l != format!("--- {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with("--- "))
        .collect()
}

/// Checks the environment a container printed: its identity and the workload's variable are
/// there, and nothing else but what a shell adds.
fn assert_container_env(env: &[&str], node: &str, workload: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !env.iter().any(|l| l.contains(secret)),
            "a secret of the agent: {env:#?}"
        );
    }
    let replica = format!("{workload}.0");
    for wanted in [
        format!("HOSTNAME={node}"),
        format!("DORA_NODE={node}"),
        "DORA_ZONE=default".into(),
        "DORA_WORKSPACE=default".into(),
        format!("DORA_WORKLOAD={workload}"),
        format!("DORA_CONTAINER={replica}"),
        "DORA_REPLICA=0".into(),
        "GREETING=hi".into(),
    ] {
        assert!(env.contains(&wanted.as_str()), "no {wanted}: {env:#?}");
    }
    let names: Vec<&str> = env
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.contains(&"PATH") && names.contains(&"HOME"),
        "{env:#?}"
    );
    let known = |name: &&str| {
        name.starts_with("DORA_")
            || [
                "HOSTNAME", "GREETING", "PATH", "HOME", "PWD", "SHLVL", "TERM",
            ]
            .contains(name)
    };
    assert!(
        names.iter().all(known),
        "more than the container's own: {env:#?}"
    );
}

/// A workload whose command is `command`, with GREETING=hi in its environment.
fn greeting_workload(name: &str, driver: &str, command: &str) -> String {
    workload(name, driver, command, "Never").replace(
        "    restartPolicy:",
        "    env: [GREETING=hi]\n    restartPolicy:",
    )
}

#[test]
fn containers_get_their_own_environment_and_no_secret_of_the_agent() {
    let home = support::home();
    let dora = Dora::up(home.path());
    let secret = "agent-secret-4711";
    let agent = NodeAgent::start(
        &dora,
        "n2",
        &api_url(home.path()),
        &[],
        &[("DORA_TEST_SECRET", secret)],
    );
    let _cleanup = ProcessCleanup("sleep 1006");
    let secrets = [agent.token.as_str(), secret, "DORA_NODE_TOKEN"];
    let report = "echo '--- env'; env; echo '--- fds'; ls /proc/$$/fd; \
                  echo '--- parent'; cat /proc/$PPID/environ 2>&1; echo; tr '\\0' ' ' < /proc/$PPID/cmdline; \
                  echo; echo '--- end'";
    apply(
        &dora,
        home.path(),
        "clean.yaml",
        &greeting_workload("clean", "Process", &format!("{report}; exec sleep 1006")),
    );
    wait_state(&dora, "clean.0", "Running");
    eventually("the container's report", || {
        dora.run(&["logs", "c", "clean.0"]).contains("--- end")
    });
    // The container itself, and a command run in it, see the same.
    let logs = dora.run(&["logs", "c", "clean.0"]);
    let output = dora
        .cli()
        .args(["shell", "c", "clean.0", "--", "sh", "-c", report])
        .output()
        .unwrap();
    let shell = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    for seen in [&logs, &shell] {
        assert_container_env(&section(seen, "env"), "n2", "clean", &secrets);
        assert_eq!(section(seen, "fds"), ["0", "1", "2"], "{seen}");
        // The parent is the agent: its command line shows, its environment does not.
        let parent = section(seen, "parent").join("\n");
        assert!(parent.contains("node --api-server"), "{parent}");
        assert!(parent.contains("Permission denied"), "{parent}");
        for secret in &secrets {
            assert!(!parent.contains(secret), "{parent}");
        }
    }
    let home_dir = section(&logs, "env")
        .into_iter()
        .find_map(|l| l.strip_prefix("HOME="))
        .unwrap()
        .to_string();
    assert!(
        home_dir.contains("/clean.0/") && home_dir.ends_with("/work"),
        "{home_dir}"
    );

    if docker_ready() {
        let _cleanup = DockerCleanup("clean.docker.0");
        let command = "echo '--- env'; env; echo '--- host'; hostname; echo '--- end'";
        apply(
            &dora,
            home.path(),
            "docker.yaml",
            &greeting_workload("clean.docker", "Docker", command),
        );
        wait_state(&dora, "clean.docker.0", "Succeeded");
        let logs = dora.run(&["logs", "c", "clean.docker.0"]);
        assert_container_env(&section(&logs, "env"), "n2", "clean.docker", &secrets);
        assert_eq!(section(&logs, "host"), ["n2"], "{logs}");
        dora.run(&["delete", "wk", "clean.docker"]);
        eventually("the Docker container to go", || {
            docker_ids("clean.docker.0").is_empty()
        });
    }
    dora.run(&["delete", "wk", "clean"]);
    eventually("the process to end", || processes("sleep 1006") == 0);
    drop(agent);
    dora.stop();
}

#[test]
fn a_process_container_cannot_read_what_the_agent_keeps() {
    let home = support::home();
    let dora = up(home.path());
    let _cleanup = ProcessCleanup("sleep 1007");
    apply(
        &dora,
        home.path(),
        "guard.yaml",
        &workload(
            "guard",
            "Process",
            "echo '--- id'; id -u; exec sleep 1007",
            "Never",
        ),
    );
    wait_state(&dora, "guard.0", "Running");
    let data = home.path().join("data");
    let container = data.join("node/process/default/default/guard.0");
    let epoch = std::fs::read_dir(&container)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let mut kept: Vec<_> = ["secret.key", "dora.db", "pki/ca.key", "pki/server.key"]
        .iter()
        .map(|file| data.join(file))
        .collect();
    kept.push(epoch.path().join("meta.json"));
    let kept: Vec<String> = kept
        .iter()
        .inspect(|file| assert!(file.exists(), "{} is kept", file.display()))
        .map(|file| file.display().to_string())
        .collect();
    let report = format!(
        "echo '--- id'; id -u; echo '--- reads'; for f in {} ../meta.json; do \
         if cat $f >/dev/null 2>&1; then echo read $f; else echo denied $f; fi; done; \
         echo '--- lists'; ls {} >/dev/null 2>&1 && echo listed || echo denied; \
         echo '--- home'; echo hi > $HOME/note && cat $HOME/note; echo '--- end'",
        kept.join(" "),
        data.display()
    );
    let seen = dora.run(&["shell", "c", "guard.0", "--", "sh", "-c", &report]);
    eventually("the container's id", || {
        dora.run(&["logs", "c", "guard.0"]).contains("--- id")
    });
    let logs = dora.run(&["logs", "c", "guard.0"]);
    let reads = section(&seen, "reads");
    assert_eq!(reads.len(), kept.len() + 1, "{seen}");
    assert_eq!(
        section(&seen, "home"),
        ["hi"],
        "its HOME is its own: {seen}"
    );
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().mode() & 0o777;
    assert_eq!(mode(&data.join("dora.db")), 0o600);
    if me == 0 {
        // A root agent runs it, and what runs in it, as nobody: everything the agent
        // keeps is closed to it; the data folder may be searched, not listed.
        assert_eq!(mode(&data), 0o711);
        assert_eq!(section(&logs, "id"), ["65534"], "{logs}");
        assert_eq!(section(&seen, "id"), ["65534"], "{seen}");
        assert!(reads.iter().all(|l| l.starts_with("denied")), "{seen}");
        assert_eq!(section(&seen, "lists"), ["denied"], "{seen}");
    } else {
        // An agent that is not root runs it as itself, as the README says.
        assert_eq!(section(&logs, "id"), [me.to_string().as_str()], "{logs}");
        assert_eq!(mode(&data), 0o700);
    }
    dora.run(&["delete", "wk", "guard"]);
    eventually("the process to end", || processes("sleep 1007") == 0);
    dora.stop();

    if me == 0 {
        // A data folder nobody could reach stops `dora up` before it starts, saying why.
        let closed = home.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let output = Process::new(support::DORA)
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(closed.join("data"))
            .env("DORA_CONFIG", closed.join("config.yaml"))
            .output()
            .unwrap();
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            error.contains(&format!("{} is closed to them", closed.display()))
                && error.contains("--process-user root"),
            "{error}"
        );
        assert!(!String::from_utf8_lossy(&output.stdout).contains("Dora is up"));
    }
}

/// A TCP proxy that, once told to, swallows what clients send after their TLS handshake:
/// requests then hang unanswered, as on a path that loses packets without resetting the
/// connection, while what the server sends (a watch) still arrives.
struct Swallower {
    address: std::net::SocketAddr,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Swallower {
    fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let swallow = std::sync::Arc::new(AtomicBool::new(false));
        let flag = swallow.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut from_server, mut to_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let _ = Self::forward_records(client, server, &flag);
                });
            }
        });
        Swallower { address, swallow }
    }

    /// Passes TLS records from `client` to `server`; while `swallow` is set, drops every
    /// application-data record after the first (in TLS 1.3, the client's Finished).
    fn forward_records(
        mut client: std::net::TcpStream,
        mut server: std::net::TcpStream,
        swallow: &std::sync::atomic::AtomicBool,
    ) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let mut application_records = 0;
        loop {
            let mut header = [0u8; 5];
            client.read_exact(&mut header)?;
            let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
            client.read_exact(&mut body)?;
            if header[0] == 0x17 {
                application_records += 1;
                if application_records > 1 && swallow.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
            }
            server.write_all(&header)?;
            server.write_all(&body)?;
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    fn swallow(&self) {
        self.swallow
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_hung_report_does_not_keep_a_deleted_container_alive() {
    let home = support::home();
    let dora = Dora::up(home.path());
    let api = api_url(home.path());
    let upstream = api.trim_start_matches("https://").parse().unwrap();
    let proxy = Swallower::start(upstream);
    let _cleanup = (ProcessCleanup("sleep 1007"), ProcessCleanup("sleep 1008"));
    let _agent = NodeAgent::start(
        &dora,
        "n3",
        &proxy.url(),
        &["--resync", "1s", "--docker", "off"],
        &[],
    );
    apply(
        &dora,
        home.path(),
        "kept.yaml",
        &workload("kept", "Process", "exec sleep 1007", "Never"),
    );
    wait_state(&dora, "kept.0", "Running");

    // From now on the agent's requests hang; its watch still tells it what changes.
    proxy.swallow();
    apply(
        &dora,
        home.path(),
        "hung.yaml",
        &workload("hung", "Process", "exec sleep 1008", "Never"),
    );
    eventually("the process to start", || processes("sleep 1008") == 1);
    assert_ne!(
        state(&container(&dora, "hung.0")),
        "Running",
        "its report got through"
    );
    dora.run(&["delete", "wk", "hung"]);
    eventually("the deleted container's process to end", || {
        processes("sleep 1008") == 0
    });
    // A container still bound to the node keeps running while the API cannot be reached.
    assert_eq!(processes("sleep 1007"), 1);

    // The CLI does not hang either: through the same path, a call ends at its deadline.
    let config = home.path().join("through-proxy.yaml");
    let text = std::fs::read_to_string(Dora::config(home.path())).unwrap();
    std::fs::write(&config, text.replace(&api, &proxy.url())).unwrap();
    let output = Process::new(support::DORA)
        .args(["get", "c", "--request-timeout", "2s"])
        .env("DORA_CONFIG", &config)
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{error}");
    assert!(error.contains("did not answer within 2s"), "{error}");
    dora.run(&["delete", "wk", "kept"]);
    eventually("the other process to end", || processes("sleep 1007") == 0);
    dora.stop();
}

#[test]
fn what_a_process_container_leaves_behind_goes_with_it() {
    let home = support::home();
    let dora = up(home.path());
    let _cleanup = ProcessCleanup("sleep 1009");
    apply(
        &dora,
        home.path(),
        "leaver.yaml",
        &workload("leaver", "Process", "sleep 1009 & exit 0", "Never"),
    );
    wait_state(&dora, "leaver.0", "Succeeded");
    assert_eq!(processes("sleep 1009"), 1);
    dora.run(&["delete", "wk", "leaver"]);
    eventually("what it left behind to end", || {
        processes("sleep 1009") == 0
    });
    dora.stop();
}
