//! End to end: a controller outside Dora, built on `dora_controller` over the HTTPS API with a
//! token, reconciles a kind defined at run time: it sees what `dora apply` writes, writes the
//! objects' status, and the runtime records each reconcile (`observedGeneration`, a
//! `Reconciled` condition) where `dora get` and `dora describe` show it.

mod support;

use std::time::{Duration, Instant};

use dora_controller::{Action, Controller, Request};
use dora_crds::Kind;
use serde_json::{Value, json};
use support::Dora;
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
            let target = row.resource["target"].as_i64().unwrap_or_default();
            if target < 0 {
                return Err(format!("target {target} is negative"));
            }
            let path = format!(
                "{}/{}",
                kind.collection_path(&row.key.zone, Some(&row.key.workspace)),
                row.key.name
            );
            writer
                .patch_status(&path, &json!({"doubled": target * 2}))
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
