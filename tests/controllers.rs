//! End to end: a controller outside Dora, built on `dora_controller` over the HTTPS API with a
//! token, reconciles a kind defined at run time: it sees what `dora apply` writes, writes the
//! objects' status, and the runtime records each reconcile (`observedGeneration`, a
//! `Reconciled` condition) where `dora get` and `dora describe` show it.

mod support;

use std::time::{Duration, Instant};

use dora_controller::{Action, Controller, Object, Request, Resource};
use dora_crds::{Kind, Scope};
use serde_json::{Value, json};
use support::{Dora, Store};
use tokio_util::sync::CancellationToken;

const COUNTERS: &str = r#"
apiVersion: v1
kind: Definition
metadata: {name: counters}
spec:
  names: {kind: Counter, plural: counters, aliases: [ctr]}
  scope: zonedWorkspaced
  status: true
  schema:
    type: object
    required: [target]
    properties:
      target: {type: integer}
  columns:
    - {name: TARGET, pointer: /spec/target}
    - {name: DOUBLED, pointer: /status/doubled}
---
apiVersion: v1
kind: Definition
metadata: {name: notes}
spec:
  names: {kind: Note, plural: notes}
  scope: cluster
"#;

/// The Counter kind's types, as its controller reads its objects.
struct Counter;

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct CounterSpec {
    target: i64,
}

impl Resource for Counter {
    const KIND: &'static str = "Counter";
    const PLURAL: &'static str = "counters";
    const SCOPE: Scope = Scope::ZonedWorkspaced;
    type Spec = CounterSpec;
    type Status = Value;
}

fn counter(name: &str, target: i64) -> String {
    format!(
        "apiVersion: v1\nkind: Counter\nmetadata: {{name: {name}}}\nspec: {{target: {target}}}\n"
    )
}

fn apply(dora: &Dora, file: &str, text: &str) {
    let path = dora.home.join(file);
    std::fs::write(&path, text).unwrap();
    dora.run(&["apply", "-f", path.to_str().unwrap()]);
}

fn status_of(dora: &Dora, name: &str) -> Value {
    let list = dora.json(&["get", "counters", "-o", "json"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metadata"]["name"] == name)
        .map(|c| c["status"].clone())
        .unwrap_or(Value::Null)
}

fn wait_for(dora: &Dora, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status_of(dora, name);
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{name}: no {what}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn reconciled(status: &Value) -> &Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Reconciled"))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_over_the_api_reconciles_a_defined_kind_and_shows_its_state() {
    let home = support::home();
    let dora = Dora::up(home.path());
    apply(&dora, "counters.yaml", COUNTERS);
    let client = dora.client();
    client.learn_kinds().await.unwrap();
    let kind = Kind::parse("counters").expect("the kind is learnt from the API");

    // The controller: doubles spec.target into status.doubled; a negative target fails.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let writer = client.clone();
    let reconcile = move |request: Request| {
        let writer = writer.clone();
        let seen_tx = seen_tx.clone();
        async move {
            let _ = seen_tx.send((request.key.name.clone(), request.object.is_some()));
            let Some(row) = request.object else {
                return Ok(Action::await_change());
            };
            let counter = Object::<Counter>::from_row(&row).map_err(|e| e.to_string())?;
            let target = counter.spec.target;
            if target < 0 {
                return Err(format!("target {target} is negative"));
            }
            writer
                .patch_status(&counter.path(), &json!({"doubled": target * 2}))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Action::await_change())
        }
    };
    let stop = CancellationToken::new();
    let controller = Controller::new("counter", client.clone(), kind, "default");
    let running = tokio::spawn(controller.run(reconcile, stop.clone()));

    tokio::task::block_in_place(|| {
        apply(&dora, "one.yaml", &counter("one", 3));
        apply(&dora, "bad.yaml", &counter("bad", -1));
        wait_for(&dora, "one", "status", |s| s["doubled"] == 6);
        let status = wait_for(&dora, "one", "record of the reconcile", |s| {
            s["observedGeneration"] == 1 && reconciled(s)["status"] == "True"
        });
        assert_eq!(reconciled(&status)["reason"], "Succeeded", "{status}");
        let failed = wait_for(&dora, "bad", "failed reconcile", |s| {
            reconciled(s)["status"] == "False"
        });
        assert_eq!(
            reconciled(&failed)["message"],
            "target -1 is negative",
            "{failed}"
        );
        // Its retries are told as one warning event, not one per retry.
        std::thread::sleep(Duration::from_secs(2));
        let events = dora.run(&["events", "ctr", "bad"]);
        let warnings: Vec<&str> = events
            .lines()
            .filter(|l| l.contains("ReconcileFailed"))
            .collect();
        assert_eq!(warnings.len(), 1, "{events}");
        assert!(
            warnings[0].contains("Warning") && warnings[0].contains("target -1 is negative"),
            "{events}"
        );
        assert!(
            !warnings[0].contains("(x"),
            "told once, not folded: {events}"
        );

        // A new spec is reconciled and recorded as its generation.
        apply(&dora, "one.yaml", &counter("one", 5));
        wait_for(&dora, "one", "the new generation", |s| {
            s["doubled"] == 10 && s["observedGeneration"] == 2
        });
        // What a person sees: the kind's columns read the status, describe the conditions.
        let table = dora.run(&["get", "ctr"]);
        let row = table.lines().find(|l| l.starts_with("one ")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().take(3).collect();
        assert_eq!(cells, ["one", "5", "10"], "{table}");
        let described = dora.run(&["describe", "ctr", "one"]);
        assert!(
            described.contains("Reconciled") && described.contains("observedGeneration"),
            "{described}"
        );
        dora.run(&["delete", "ctr", "one"]);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, exists) = tokio::time::timeout(left, seen.recv())
            .await
            .expect("the delete reaches the controller")
            .unwrap();
        if name == "one" && !exists {
            break;
        }
    }
    stop.cancel();
    running.await.unwrap();

    // Status is written only for kinds whose controller keeps one.
    let built_in = client
        .patch_status(
            "/v1/zones/default/workspaces/default/workloads/x",
            &json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(built_in.status(), Some(405), "{built_in}");
    tokio::task::block_in_place(|| {
        apply(
            &dora,
            "note.yaml",
            "apiVersion: v1\nkind: Note\nmetadata: {name: n}\nspec: {}\n",
        )
    });
    client.learn_kinds().await.unwrap();
    let no_status = client
        .put_status("/v1/notes/n", &json!({"x": 1}))
        .await
        .unwrap_err();
    assert_eq!(no_status.status(), Some(422), "{no_status}");
    assert!(
        no_status.to_string().contains("status: false"),
        "{no_status}"
    );
    tokio::task::block_in_place(|| dora.stop());
}

/// The example controller `name`, built by `cargo test` (or `cargo build --examples`) beside
/// the `dora` binary, run as its own process against `dora`'s profile.
fn example(dora: &Dora, name: &str) -> std::process::Child {
    let binary = std::path::Path::new(support::DORA)
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        binary.exists(),
        "{} is missing: cargo build --examples",
        binary.display()
    );
    let log = std::fs::File::create(dora.home.join(format!("{name}.log"))).unwrap();
    std::process::Command::new(binary)
        .env("DORA_CONFIG", Dora::config(&dora.home))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn names_of(dora: &Dora, kind: &str) -> Vec<String> {
    let mut names = support::names(&dora.json(&["get", kind, "-o", "json"]));
    names.sort();
    names
}

fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_sweep_example_runs_its_grid_within_its_parallelism_and_cleans_up_on_sqlite() {
    the_sweep_example_runs_its_grid_within_its_parallelism_and_cleans_up(Store::Sqlite);
}

#[test]
fn the_sweep_example_runs_its_grid_within_its_parallelism_and_cleans_up_on_cassandra() {
    the_sweep_example_runs_its_grid_within_its_parallelism_and_cleans_up(Store::fresh_cql());
}

fn the_sweep_example_runs_its_grid_within_its_parallelism_and_cleans_up(store: Store) {
    let home = support::home();
    let mut args = vec!["--no-node", "--sim-nodes", "2"];
    args.extend(store.args());
    let dora = Dora::up_with(home.path(), &args, "warn", std::process::Stdio::inherit());
    let manifest = support::repo().join("examples/sweep.yaml");
    dora.run(&["apply", "-f", manifest.to_str().unwrap()]);
    let mut controller = example(&dora, "sweep");
    eventually("the sweep's status", || {
        let list = dora.json(&["get", "sweeps", "-o", "json"]);
        let status = &list["items"][0]["status"];
        status["points"] == 4 && status["running"] == 2 && status["pending"] == 2
    });
    // Two points at once: the parallelism.
    assert_eq!(names_of(&dora, "workloads"), ["lr-0", "lr-1"]);
    let table = dora.run(&["get", "sweeps"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..6], ["lr", "4", "2", "2", "0", "0"], "{table}");
    // Each point's values are in its environment.
    let spec = dora.json(&["get", "wk", "lr-0", "-o", "json"]);
    let env = spec["spec"]["config"]["env"].to_string();
    assert!(env.contains("LR=") && env.contains("BATCH="), "{env}");

    dora.run(&["delete", "sweep", "lr"]);
    eventually("the sweep's workloads and containers to go", || {
        names_of(&dora, "workloads").is_empty() && names_of(&dora, "containers").is_empty()
    });
    let _ = controller.kill();
    let _ = controller.wait();
    dora.stop();
}

fn cron(policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: CronWorkload\nmetadata: {{name: tick}}\nspec:\n  schedule: '*/2 * * * * *'\n  concurrencyPolicy: {policy}\n  template:\n    replica: {{count: 1}}\n    driver: Process\n    config: {{cmd: [sleep, '600']}}\n    selectors: {{cpu: {{product_name: All, count: 100m}}}}\n"
    )
}

#[test]
fn the_cron_example_runs_on_schedule_by_its_concurrency_policy_on_sqlite() {
    the_cron_example_runs_on_schedule_by_its_concurrency_policy(Store::Sqlite);
}

#[test]
fn the_cron_example_runs_on_schedule_by_its_concurrency_policy_on_cassandra() {
    the_cron_example_runs_on_schedule_by_its_concurrency_policy(Store::fresh_cql());
}

fn the_cron_example_runs_on_schedule_by_its_concurrency_policy(store: Store) {
    let home = support::home();
    let mut args = vec!["--no-node", "--sim-nodes", "2"];
    args.extend(store.args());
    let dora = Dora::up_with(home.path(), &args, "warn", std::process::Stdio::inherit());
    let manifest = support::repo().join("examples/cron.yaml");
    let definition = std::fs::read_to_string(&manifest).unwrap();
    let definition = definition.split("\n---\n").next().unwrap();
    apply(&dora, "definition.yaml", definition);
    apply(&dora, "tick.yaml", &cron("Forbid"));
    let mut controller = example(&dora, "cron_workload");

    // Forbid: the first run goes on, later ticks start nothing.
    eventually("the first run", || names_of(&dora, "workloads").len() == 1);
    let first = names_of(&dora, "workloads");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        names_of(&dora, "workloads"),
        first,
        "Forbid starts no second run"
    );
    let list = dora.json(&["get", "cwl", "-o", "json"]);
    let status = &list["items"][0]["status"];
    assert_eq!(status["active"], 1, "{status}");
    assert!(
        status["lastRun"].is_string() && status["nextRun"].is_string(),
        "{status}"
    );
    let table = dora.run(&["get", "cronworkloads"]);
    assert!(table.contains("*/2 * * * * *"), "{table}");

    // Replace: a tick stops the running one and starts its own.
    apply(&dora, "tick.yaml", &cron("Replace"));
    eventually("a replacing run", || {
        let now = names_of(&dora, "workloads");
        now.len() == 1 && now != first
    });
    // Allow: runs overlap.
    apply(&dora, "tick.yaml", &cron("Allow"));
    eventually("overlapping runs", || {
        names_of(&dora, "workloads").len() >= 3
    });

    let _ = controller.kill();
    let _ = controller.wait();
    dora.stop();
}

/// Waits for `dora get workloads -o json` to satisfy `check`, returning the list.
fn workloads_until(dora: &Dora, what: &str, check: impl Fn(&[String]) -> bool) -> Value {
    support::wait_for(dora, &["get", "workloads", "-o", "json"], what, |list| {
        check(support::names(list).as_slice())
    })
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// End to end: examples/notebook-controller.py, a controller in Python that knows Dora only
/// through its HTTPS API (list, watch, apply, status writes, delete), reconciles the Notebook
/// kind of examples/definition.yaml: a Workload per Notebook that hollow nodes run, the
/// Workload's phase in the Notebook's status, the Workload deleted with its Notebook, and an
/// orphan found at start deleted too.
#[test]
fn a_controller_in_python_reconciles_notebooks_over_the_api() {
    let home = support::home();
    let dora = Dora::up_with(
        home.path(),
        &["--no-node", "--sim-nodes", "2", "--sim-gpus", "2xA100"],
        "warn",
        std::process::Stdio::inherit(),
    );
    // A Workload of a notebook that no longer exists: the controller deletes it at start.
    let orphan = home.path().join("orphan.yaml");
    std::fs::write(
        &orphan,
        "apiVersion: v1\nkind: Workload\nmetadata: {name: nb-gone, labels: {notebook: gone}}\n\
         spec: {replica: {count: 1}, driver: Docker, image: {image: dora/busybox}}\n",
    )
    .unwrap();
    dora.run(&["apply", "-f", orphan.to_str().unwrap()]);
    dora.run(&["apply", "-f", "examples/definition.yaml"]);

    let log = std::fs::File::create(home.path().join("python-controller.log")).unwrap();
    let mut controller = KillOnDrop(
        std::process::Command::new("python3")
            .arg(support::repo().join("examples/notebook-controller.py"))
            .arg("--profile-config")
            .arg(Dora::config(home.path()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("python3 runs the controller"),
    );

    let list = support::wait_for(
        &dora,
        &["get", "notebooks", "-o", "json"],
        "the notebook's phase Running",
        |list| list["items"][0]["status"]["phase"] == "Running",
    );
    let status = &list["items"][0]["status"];
    assert_eq!(status["workload"], "nb-lab", "{status}");
    assert_eq!(status["observedGeneration"], 1, "{status}");
    let workloads = workloads_until(&dora, "nb-lab alone", |names| names == ["nb-lab"]);
    let workload = &workloads["items"][0];
    assert_eq!(
        workload["metadata"]["labels"]["notebook"], "lab",
        "{workload}"
    );
    assert_eq!(
        workload["spec"]["image"]["image"], "jupyter/base-notebook",
        "{workload}"
    );
    assert_eq!(
        workload["spec"]["selectors"]["gpu"]["count"], 1,
        "{workload}"
    );
    assert_eq!(workload["status"]["phase"], "Running", "{workload}");

    // A new spec is a new generation: the Workload follows, the status records it.
    let edited = home.path().join("lab.yaml");
    std::fs::write(
        &edited,
        "apiVersion: v1\nkind: Notebook\nmetadata: {name: lab}\n\
         spec: {image: jupyter/scipy-notebook, gpus: 2}\n",
    )
    .unwrap();
    dora.run(&["apply", "-f", edited.to_str().unwrap()]);
    support::wait_for(
        &dora,
        &["get", "notebooks", "-o", "json"],
        "generation 2 observed",
        |list| list["items"][0]["status"]["observedGeneration"] == 2,
    );
    support::wait_for(
        &dora,
        &["get", "workloads", "-o", "json"],
        "the new image",
        |list| {
            list["items"][0]["spec"]["image"]["image"] == "jupyter/scipy-notebook"
                && list["items"][0]["spec"]["selectors"]["gpu"]["count"] == 2
        },
    );

    dora.run(&["delete", "notebook", "lab"]);
    workloads_until(&dora, "nb-lab deleted", |names| names.is_empty());

    // SIGTERM ends it cleanly; its log has one line per reconcile, as the Rust runtime's.
    std::process::Command::new("kill")
        .args(["-TERM", &controller.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = controller.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(home.path().join("python-controller.log")).unwrap();
    assert!(exit.success(), "{exit}: {log}");
    for wanted in [
        "name=gone trigger=related}: reconciled result=ok duration_ms=",
        "deleted=nb-gone",
        "name=lab trigger=changed}: reconciled result=ok",
        "deleted=nb-lab",
    ] {
        assert!(log.contains(wanted), "no {wanted:?} in:\n{log}");
    }
    dora.stop();
}
