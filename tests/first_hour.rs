//! What a new user meets in the first hour, end to end against `dora up` over HTTPS: every
//! kind's table holds real data, workloads and containers say what they do in words people
//! know, events tell the story, and nothing fails silently.

mod support;

use std::process::{Command as Process, Stdio};

use dora_crds::Kind;
use serde_json::Value;
use support::{DORA, Dora, line_reader, read_until, wait_for};

/// Every kind, applied once, on hollow nodes with GPUs.
const EVERYTHING: &str = r#"
apiVersion: v1
kind: Resourcecredit
metadata: {name: a100}
spec:
  product_name: A100
  credit: {per: {hour: 2}}
---
apiVersion: v1
kind: Storage
metadata: {name: scratch}
spec: {kind: Local, mountpath: /tmp/dora-first-hour}
---
apiVersion: v1
kind: Volume
metadata: {name: data}
spec: {storage: scratch}
---
apiVersion: v1
kind: Zone
metadata: {name: elsewhere}
spec: {endpoint: "https://elsewhere.example:7443"}
---
apiVersion: v1
kind: User
metadata: {name: alice}
spec:
  default: {zone: default, workspace: default}
  resources:
    - {kind: All, zone: default, workspace: default, role: user}
  credits:
    - {zone: default, weekly: 100}
---
apiVersion: v1
kind: Definition
metadata: {name: gadgets}
spec:
  names: {kind: Gadget, plural: gadgets}
  scope: zoned
---
apiVersion: v1
kind: Workload
metadata: {name: train, labels: {team: vision}}
spec:
  replica: {count: 2}
  driver: Process
  config: {cmd: sleep 600}
  selectors:
    gpu: {product_name: A100, count: 1}
"#;

fn hollow(home: &std::path::Path) -> Dora {
    Dora::up_with(
        home,
        &[
            "--no-node",
            "--sim-nodes",
            "2",
            "--sim-gpus",
            "2xA100",
            "--credit-slice",
            "1s",
        ],
        "warn",
        Stdio::inherit(),
    )
}

fn apply(dora: &Dora, name: &str, manifest: &str) -> std::process::Output {
    let path = dora.home.join(name);
    std::fs::write(&path, manifest).unwrap();
    dora.cli()
        .args(["apply", "-f", path.to_str().unwrap()])
        .output()
        .unwrap()
}

fn items(list: &Value) -> &Vec<Value> {
    list["items"].as_array().expect("a list")
}

#[test]
fn every_kind_s_table_reads_fields_its_objects_have() {
    let home = support::home();
    let dora = hollow(home.path());
    let applied = apply(&dora, "everything.yaml", EVERYTHING);
    assert!(applied.status.success(), "{applied:?}");
    wait_for(
        &dora,
        &["get", "wk", "train", "-o", "json"],
        "running",
        |w| w["status"]["phase"] == "Running",
    );
    wait_for(&dora, &["get", "uc", "-o", "json"], "credit rows", |l| {
        !items(l).is_empty()
    });
    for kind in Kind::ALL {
        let list = dora.json(&["get", kind.name(), "-o", "json"]);
        assert!(!items(&list).is_empty(), "no {kind} to check");
        for item in items(&list) {
            for column in kind.columns().iter().filter(|c| !c.optional) {
                assert!(
                    column.value(item).is_some(),
                    "{kind} column {} reads nothing from {item:#}",
                    column.name
                );
            }
        }
        for output in ["table", "wide"] {
            let table = dora.run(&["get", kind.name(), "-o", output]);
            let header = table.lines().next().unwrap_or_default();
            for column in kind
                .columns()
                .iter()
                .filter(|c| output == "wide" || !c.wide)
            {
                assert!(header.contains(column.name), "{kind}: {table}");
            }
        }
    }

    // The GPU view says which GPU is booked, and by whom; the CPU view shows each node.
    let gpus = dora.json(&["get", "gpu", "-o", "json"]);
    let booked: Vec<&Value> = items(&gpus)
        .iter()
        .filter(|g| g["status"]["booked"] == true)
        .collect();
    assert_eq!(booked.len(), 2, "{gpus:#}");
    assert!(
        booked[0]["status"]["container"]
            .as_str()
            .unwrap()
            .starts_with("default/train."),
        "{gpus:#}"
    );
    assert_eq!(items(&dora.json(&["get", "cpu", "-o", "json"])).len(), 2);

    // Use per workload, as Slurm's sacct.
    wait_for(&dora, &["credits", "-o", "json"], "use per workload", |l| {
        items(l).iter().any(|account| {
            account["status"]["computed"]["workloads"]["default/train"]
                .as_f64()
                .is_some_and(|used| used > 0.0)
        })
    });
    let by_workload = dora.run(&["credits", "--workloads"]);
    let row = by_workload.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("train ") && row.contains("admin"),
        "{by_workload}"
    );

    // kubectl's templates and sorting.
    let names = dora.run(&[
        "get",
        "c",
        "--sort-by",
        ".metadata.name",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(names, "train.0 train.1");
    let custom = dora.run(&[
        "get",
        "gpu",
        "--sort-by=.status.minor",
        "-o",
        "custom-columns=GPU:.metadata.name,MINOR:.status.minor,NOPE:.status.nothing",
    ]);
    let minors: Vec<&str> = custom
        .lines()
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(minors, vec!["MINOR", "0", "0", "1", "1"], "{custom}");
    assert!(
        custom.lines().nth(1).unwrap().ends_with("<none>"),
        "{custom}"
    );
    let bad = dora.fails(&["get", "c", "-o", "jsonpath={range .items[*]}"]);
    assert!(bad.contains("without {end}"), "{bad}");

    // Cordoned and drained nodes say so.
    dora.run(&["drain", "node", "sim-00000"]);
    wait_for(
        &dora,
        &["get", "node", "sim-00000", "-o", "json"],
        "drained",
        |n| n["status"]["scheduling"] == "Drained",
    );
    assert!(dora.run(&["get", "node"]).contains("Drained"));
    let cordon = "apiVersion: v1\nkind: Node\nmetadata: {name: sim-00001}\nspec: {schedulingDisabled: true}\n";
    assert!(apply(&dora, "cordon.yaml", cordon).status.success());
    wait_for(
        &dora,
        &["get", "node", "sim-00001", "-o", "json"],
        "cordoned",
        |n| n["status"]["scheduling"] == "Cordoned",
    );

    // Hollow nodes serve no node API; the error names the flag that gives one.
    let error = dora.fails(&["logs", "c", "train.0"]);
    assert!(error.contains("--node-listen"), "{error}");

    // Labels read as key=value, and times as times.
    let described = dora.run(&["describe", "c", "train.0"]);
    assert!(described.contains("startedAt: \"20"), "{described}");
    let described = dora.run(&["describe", "wk", "train"]);
    assert!(described.contains("Labels:     team=vision"), "{described}");
    dora.stop();
}

const ENDINGS: &str = r#"
apiVersion: v1
kind: Workload
metadata: {name: done}
spec:
  replica: {count: 1}
  driver: Process
  config: {cmd: exit 0}
---
apiVersion: v1
kind: Workload
metadata: {name: broken}
spec:
  replica: {count: 1}
  driver: Process
  config: {cmd: exit 3}
---
apiVersion: v1
kind: Workload
metadata: {name: crashing}
spec:
  replica: {count: 1}
  driver: Process
  config: {cmd: exit 4, restartPolicy: OnFailure}
---
apiVersion: v1
kind: Workload
metadata: {name: idle}
spec:
  replica: {count: 1}
  driver: Process
  config: {cmd: sleep 600}
"#;

#[test]
fn workloads_and_containers_say_what_they_do_and_events_tell_it_once() {
    let home = support::home();
    let dora = hollow(home.path());
    assert!(apply(&dora, "endings.yaml", ENDINGS).status.success());
    let phase = |kind: &str, name: &str, word: &'static str| {
        wait_for(&dora, &["get", kind, name, "-o", "json"], word, |o| {
            o["status"]["phase"] == word
        })
    };
    phase("wk", "done", "Completed");
    phase("c", "done.0", "Completed");
    let failed = phase("wk", "broken", "Failed");
    assert_eq!(failed["status"]["message"], "1 of 1 failed");
    let container = phase("c", "broken.0", "Failed");
    assert_eq!(container["status"]["message"], "exit code 3");
    let crashing = phase("c", "crashing.0", "CrashLoopBackOff");
    assert!(crashing["status"]["nextRetry"].is_string(), "{crashing:#}");
    phase("wk", "crashing", "CrashLoopBackOff");
    phase("wk", "idle", "Running");
    dora.run(&["pause", "wk", "idle"]);
    phase("wk", "idle", "Paused");

    // The table shows the words, and -o wide the exit code.
    let workloads = dora.run(&["get", "wk"]);
    for word in ["Completed", "Failed", "CrashLoopBackOff", "Paused"] {
        assert!(workloads.contains(word), "{workloads}");
    }
    let wide = dora.run(&["get", "c", "broken.0", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    let exit = header.iter().position(|h| *h == "EXIT").unwrap();
    assert_eq!(row[exit], "3", "{wide}");

    // Scheduled names the node and GPUs; a repeated event is told once, with its count.
    let events = dora.json(&["events", "-o", "json"]);
    let scheduled = items(&events)
        .iter()
        .find(|e| e["reason"] == "Scheduled")
        .expect("a Scheduled event");
    assert!(
        scheduled["message"]
            .as_str()
            .unwrap()
            .starts_with("bound to sim-"),
        "{scheduled:#}"
    );
    wait_for(
        &dora,
        &["events", "-o", "json"],
        "a folded restart",
        |list| {
            items(list)
                .iter()
                .any(|e| e["reason"] == "Restarting" && e["count"].as_u64() >= Some(2))
                || items(list).iter().any(|e| {
                    e["reason"] == "Scheduled"
                        && e["object"]["metadata"]["name"] == "crashing.0"
                        && e["count"].as_u64() >= Some(2)
                })
        },
    );
    let resumed = items(&dora.json(&["events", "-o", "json"]))
        .iter()
        .filter(|e| e["reason"] == "Resumed")
        .count();
    dora.run(&["resume", "wk", "idle"]);
    phase("wk", "idle", "Running");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let resumed_after = items(&dora.json(&["events", "-o", "json"]))
        .iter()
        .filter(|e| e["reason"] == "Resumed")
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum::<u64>();
    assert_eq!(resumed_after, resumed as u64 + 1, "one Resumed per resume");
    dora.stop();
}

#[test]
fn nothing_fails_silently() {
    let home = support::home();
    let dora = hollow(home.path());
    assert!(apply(&dora, "everything.yaml", EVERYTHING).status.success());

    // A workload in a zone no scheduler serves: apply warns, and an event says so.
    let lost = "apiVersion: v1\nkind: Workload\nmetadata: {name: lost, zone: elsewhere}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config: {cmd: sleep 5}\n";
    let applied = apply(&dora, "lost.yaml", lost);
    assert!(applied.status.success());
    let warning = String::from_utf8_lossy(&applied.stderr);
    assert!(
        warning.contains("no scheduler has ever served zone elsewhere"),
        "{warning}"
    );
    let waiting = dora.json(&["get", "wk", "lost", "-z", "elsewhere", "-o", "json"]);
    assert_eq!(waiting["status"]["phase"], "Pending");
    assert!(
        dora.run(&["events", "-z", "elsewhere"])
            .contains("NoScheduler")
    );

    // An unset variable of apply -e is named.
    let templated = "apiVersion: v1\nkind: Workspace\nmetadata: {name: $NAME}\n";
    let path = dora.home.join("templated.yaml");
    std::fs::write(&path, templated).unwrap();
    let stderr = dora.fails(&["apply", "-f", path.to_str().unwrap(), "-e", "OTHER=x"]);
    assert!(stderr.contains("$NAME (line 3)"), "{stderr}");

    // A default workspace that does not exist is set, with a warning.
    let output = dora
        .cli()
        .args(["config", "use-workspace", "nope"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: workspace \"nope\""), "{stderr}");
    dora.run(&["config", "use-workspace", "default"]);

    // A closed pipe ends a command quietly.
    let piped = Process::new("sh")
        .args([
            "-c",
            &format!("'{DORA}' completion bash | head -c 10 >/dev/null"),
        ])
        .env("DORA_CONFIG", Dora::config(&dora.home))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A Resourcecredit named, as the original's manifests name it, by the GPU's product string.
    let product = "Tesla V100-SXM2-16GB";
    let price = format!(
        "apiVersion: v1\nkind: Resourcecredit\nmetadata: {{name: {product}}}\nspec:\n  product_name: {product}\n  credit: {{per: {{hour: 1}}}}\n"
    );
    let applied = apply(&dora, "v100.yaml", &price);
    assert!(applied.status.success(), "{applied:?}");
    let read = dora.json(&["get", "rc", product, "-o", "json"]);
    assert_eq!(read["metadata"]["name"], product, "{read}");
    assert!(dora.run(&["delete", "rc", product]).contains("deleted"));
    let stderr = dora.fails(&["get", "rc", product]);
    assert!(stderr.contains("not found"), "{stderr}");
    dora.stop();
}

#[test]
fn a_watched_table_keeps_its_columns_and_shows_what_was_deleted() {
    let home = support::home();
    let dora = hollow(home.path());
    let mut watcher = Process::new(DORA)
        .args(["get", "wk", "-w"])
        .env("DORA_CONFIG", Dora::config(&dora.home))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(watcher.stdout.take().unwrap());
    let long = "apiVersion: v1\nkind: Workload\nmetadata: {name: a-rather-long-workload-name}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config: {cmd: sleep 600}\n";
    assert!(apply(&dora, "long.yaml", long).status.success());
    let mut seen = read_until(&lines, |l| l.contains("Running"), "the workload running");
    dora.run(&["delete", "wk", "a-rather-long-workload-name"]);
    seen.extend(read_until(
        &lines,
        |l| l.starts_with("DELETED"),
        "the deletion",
    ));
    let _ = watcher.kill();
    let _ = watcher.wait();
    let header = &seen[0];
    assert!(header.starts_with("EVENT"), "{seen:#?}");
    // STATUS starts at the same column in every line.
    let column = header.find("STATUS").unwrap();
    for line in &seen[1..] {
        let word = &line[column..];
        assert!(
            ["Pending", "Starting", "Running"]
                .iter()
                .any(|w| word.starts_with(w)),
            "{seen:#?}"
        );
    }
    // A deleted row shows the workload as it last was, not empty cells.
    let deleted = seen.last().unwrap();
    assert!(
        deleted.contains("Running") && deleted.contains("1/1"),
        "{deleted}"
    );
    dora.stop();
}
