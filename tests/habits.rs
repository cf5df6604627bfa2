//! End to end: the kubectl and Slurm habits (label selectors, scale, cordon, wait, explain,
//! completion of names, queue) against a real `dora up` over HTTPS.

mod support;

use std::process::{Command as Process, Stdio};

use serde_json::Value;
use support::{DORA, Dora, line_reader, names, read_until, wait_for};

fn write(dora: &Dora, file: &str, text: &str) -> String {
    let path = dora.home.join(file);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A Process workload asking for `cpus` CPUs, with labels and scheduling.
fn workload(name: &str, labels: &str, cpus: u32, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  replica: {{count: 1}}\n  driver: Process\n  config: {{cmd: [sleep, '3600']{extra}}}\n  selectors: {{cpu: {{product_name: All, count: {cpus}}}}}\n"
    )
}

/// A completion request as the bash script makes it, for the word at `index`.
fn complete(dora: &Dora, index: usize, words: &[&str]) -> String {
    let output = dora
        .cli()
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", index.to_string())
        .arg("--")
        .args(words)
        .output()
        .unwrap();
    assert!(output.status.success(), "completion of {words:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn selectors_explain_and_completion_of_names() {
    let home = support::home();
    let dora = Dora::up(home.path());
    let manifest = [
        workload("w1", "team: a, tier: x", 1, ""),
        workload("w2", "team: b", 1, ""),
        workload("w3", "", 1, ""),
    ]
    .join("---\n");
    dora.run(&["apply", "-f", &write(&dora, "w.yaml", &manifest)]);

    // -l on get, in kubectl's syntax.
    for (selector, expected) in [
        ("team=a", vec!["w1"]),
        ("team!=a", vec!["w2", "w3"]),
        ("team in (a,b),tier", vec!["w1"]),
        ("team notin (a)", vec!["w2", "w3"]),
        ("!team", vec!["w3"]),
    ] {
        let list = dora.json(&["get", "wk", "-l", selector, "-o", "json"]);
        assert_eq!(names(&list), expected, "{selector}");
    }
    let error = dora.fails(&["get", "wk", "-l", "team in (a"]);
    assert!(
        error.contains("\"team in (a\"") && error.contains("without its ')'"),
        "{error}"
    );

    // -w -l: only matching objects; one that stops matching is DELETED.
    let mut watcher = Process::new(DORA)
        .args(["get", "wk", "-w", "-l", "team=b", "-o", "json"])
        .env("DORA_CONFIG", Dora::config(home.path()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(watcher.stdout.take().unwrap());
    let event = |line: &str| -> (String, String) {
        let event: Value = serde_json::from_str(line).unwrap();
        (
            event["type"].as_str().unwrap().into(),
            event["object"]["metadata"]["name"].as_str().unwrap().into(),
        )
    };
    let seen = read_until(&lines, |l| l.contains("\"ADDED\""), "ADDED w2");
    assert_eq!(event(seen.last().unwrap()), ("ADDED".into(), "w2".into()));
    dora.run(&[
        "apply",
        "-f",
        &write(&dora, "w1.yaml", &workload("w1", "team: b", 1, "")),
    ]);
    let seen = read_until(&lines, |l| l.contains("\"w1\""), "ADDED w1");
    assert_eq!(event(seen.last().unwrap()), ("ADDED".into(), "w1".into()));

    // delete -l deletes what matches, and names it.
    let deleted = dora.run(&["delete", "wk", "-l", "team=b"]);
    assert!(
        deleted.contains("workload/w1 deleted") && deleted.contains("workload/w2 deleted"),
        "{deleted}"
    );
    let seen = read_until(&lines, |l| l.contains("DELETED"), "DELETED");
    assert!(event(seen.last().unwrap()).0 == "DELETED", "{seen:?}");
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(names(&dora.json(&["get", "wk", "-o", "json"])), ["w3"]);

    // explain, from the schema.
    let explained = dora.run(&["explain", "wk.spec.replica"]);
    assert!(
        explained.contains("FIELD:    replica <Object>") && explained.contains("   count\t<"),
        "{explained}"
    );
    let top = dora.run(&["explain", "workload"]);
    assert!(top.contains("KIND:     Workload") && top.contains("   spec\t<Object>"));
    let unknown = dora.fails(&["explain", "wk.spec.replicas"]);
    assert!(
        unknown.contains("\"replicas\" does not exist") && unknown.contains("replica, scheduling"),
        "{unknown}"
    );

    // Completion of kinds and of names from the API.
    assert!(
        complete(&dora, 2, &["dora", "get", "workl"]).contains("workload"),
        "kinds complete"
    );
    let names_offered = complete(&dora, 3, &["dora", "describe", "wk", ""]);
    assert!(names_offered.lines().any(|l| l == "w3"), "{names_offered}");
    let script = dora.run(&["completion", "zsh"]);
    assert!(
        script.contains("compdef") && script.contains("COMPLETE=\"zsh\""),
        "{script}"
    );
    dora.stop();
}

#[test]
fn queue_scale_wait_and_cordon_on_hollow_nodes() {
    let home = support::home();
    let dora = Dora::up_with(
        home.path(),
        &["--no-node", "--sim-nodes", "1", "--sim-cpus", "2"],
        "warn",
        Stdio::inherit(),
    );
    // `long` fills the one node for at most an hour.
    let long = workload("long", "team: a", 2, "");
    let long = long.replace("[sleep, '3600']", "[sleep, '3600'], maxRunTime: 1h");
    dora.run(&["apply", "-f", &write(&dora, "long.yaml", &long)]);
    let ready = dora.run(&[
        "wait",
        "wk",
        "long",
        "--for=jsonpath={.status.computed.ready}=1",
        "--timeout",
        "30s",
    ]);
    assert!(ready.contains("workload/long condition met"), "{ready}");
    for (kind, name, condition) in [
        ("wk", "long", "--for=condition=Ready"),
        ("wk", "long", "--for=condition=Scheduled"),
        ("c", "long.0", "--for=status=Running"),
        ("node", "sim-00000", "--for=condition=Ready"),
    ] {
        let met = dora.run(&["wait", kind, name, condition, "--timeout", "30s"]);
        assert!(met.contains("condition met"), "{met}");
    }
    let timed_out = dora.fails(&[
        "wait",
        "wk",
        "long",
        "--for=jsonpath={.status.computed.ready}=2",
        "--timeout",
        "1s",
    ]);
    assert!(
        timed_out.contains("timed out after 1s") && timed_out.contains("is 1"),
        "{timed_out}"
    );

    // The queue: `big` first by priority, blocked until `long` ends; `small` behind it.
    let queued = format!(
        "{}---\n{}",
        workload("big", "", 2, "").replace("spec:\n", "spec:\n  scheduling: {priority: 5}\n"),
        workload("small", "", 1, "")
    );
    dora.run(&["apply", "-f", &write(&dora, "queued.yaml", &queued)]);
    let queue = wait_for(&dora, &["queue", "-o", "json"], "the queue", |q| {
        q["items"][0]["estimatedStart"].is_string()
            && q["items"][1]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("waiting behind big"))
    });
    let queued: Vec<&str> = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(queued, ["big", "small"]);
    assert_eq!(queue["items"][0]["position"], 1);
    assert_eq!(queue["items"][0]["priority"], 5);
    // The scheduler keeps a workload's reconcile state as any controller does.
    let big = dora.json(&["get", "wk", "big", "-o", "json"]);
    assert_eq!(big["status"]["observedGeneration"], 1, "{big}");
    let condition = |object: &Value, kind: &str| {
        object["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == kind))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let scheduled = condition(&big, "Scheduled");
    assert_eq!(scheduled["status"], "False", "{big}");
    assert_eq!(scheduled["reason"], "Unschedulable", "{big}");
    assert!(scheduled["lastTransitionTime"].is_string(), "{big}");
    assert_eq!(condition(&big, "Reconciled")["status"], "True", "{big}");
    let described = dora.run(&["describe", "wk", "big"]);
    assert!(
        described.contains("Conditions:")
            && described.lines().any(|l| l.contains("Scheduled")
                && l.contains("False")
                && l.contains("Unschedulable")),
        "{described}"
    );
    let wide = dora.run(&["get", "wk", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("OBSERVED"), "{wide}");
    let table = dora.run(&["queue"]);
    assert!(
        table.starts_with("POSITION") && table.contains("big") && table.contains("small"),
        "{table}"
    );

    // scale: a new spec version; the running container is not restarted.
    let before = dora.json(&["get", "c", "long.0", "-o", "json"]);
    assert!(
        dora.run(&["scale", "wk", "long", "--replicas", "2"])
            .contains("workload/long scaled to 2")
    );
    let scaled = dora.json(&["get", "wk", "long", "-o", "json"]);
    assert_eq!(scaled["spec"]["replica"]["count"], 2);
    assert_eq!(scaled["metadata"]["generation"], 2);
    wait_for(
        &dora,
        &["get", "wk", "long", "-o", "json"],
        "2 desired, generation 2 observed",
        |w| w["status"]["computed"]["desired"] == 2 && w["status"]["observedGeneration"] == 2,
    );
    let after = dora.json(&["get", "c", "long.0", "-o", "json"]);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["status"]["computed"]["epoch"],
        before["status"]["computed"]["epoch"]
    );
    let refused = dora.fails(&["scale", "node", "sim-00000", "--replicas", "2"]);
    assert!(refused.contains("only workloads"), "{refused}");

    // wait --for=delete returns once the workload is gone.
    let waiter = Process::new(DORA)
        .args(["wait", "wk", "small", "--for=delete", "--timeout", "30s"])
        .env("DORA_CONFIG", Dora::config(home.path()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    dora.run(&["delete", "wk", "small"]);
    let waited = waiter.wait_with_output().unwrap();
    assert!(waited.status.success());

    // cordon, and uncordon undoing both a cordon and a drain.
    assert!(
        dora.run(&["cordon", "node", "sim-00000"])
            .contains("node/sim-00000 cordoned")
    );
    let node = dora.json(&["get", "node", "sim-00000", "-o", "json"]);
    assert_eq!(node["spec"]["schedulingDisabled"], true);
    assert!(dora.run(&["get", "node"]).contains("Cordoned"));
    dora.run(&["drain", "node", "sim-00000"]);
    wait_for(
        &dora,
        &["get", "node", "sim-00000", "-o", "json"],
        "drained",
        |n| n["status"]["computed"]["drained"] == true,
    );
    let uncordoned = dora.run(&["uncordon", "node", "sim-00000"]);
    assert!(
        uncordoned.contains("uncordoned") && uncordoned.contains("drain"),
        "{uncordoned}"
    );
    wait_for(
        &dora,
        &["get", "node", "sim-00000", "-o", "json"],
        "undrained",
        |n| n["spec"]["schedulingDisabled"] == false && n["status"]["computed"]["drained"] == false,
    );
    dora.stop();
}
