//! End to end: owner references and finalizers through the CLI against a real `dora up`: an
//! object owned by another goes when its owner is deleted (the garbage collector `dora up`
//! runs), and an object with a finalizer shows Terminating after `dora delete` until its
//! finalizer is removed with an apply.

mod support;

use serde_json::Value;
use support::{Dora, Store, names, wait_for};

fn write(dora: &Dora, file: &str, text: &str) -> String {
    let path = dora.home.join(file);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn workload(name: &str, metadata: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Workload\nmetadata:\n  name: {name}\n{metadata}spec:\n  replica: {{count: 1}}\n  image: {{image: busybox}}\n"
    )
}

#[test]
fn dependents_go_with_their_owner_and_finalizers_hold_a_delete_on_sqlite() {
    dependents_go_with_their_owner_and_finalizers_hold_a_delete(Store::Sqlite);
}

#[test]
fn dependents_go_with_their_owner_and_finalizers_hold_a_delete_on_cassandra() {
    dependents_go_with_their_owner_and_finalizers_hold_a_delete(Store::fresh_cql());
}

fn dependents_go_with_their_owner_and_finalizers_hold_a_delete(store: Store) {
    let home = support::home();
    let dora = Dora::up_on(home.path(), &store);
    dora.run(&[
        "apply",
        "-f",
        &write(&dora, "owner.yaml", &workload("sweep", "")),
    ]);
    let owner = dora.json(&["get", "wk", "sweep", "-o", "json"]);
    let uid = owner["metadata"]["uid"].as_str().unwrap();
    let dependents = [
        workload(
            "point-1",
            &format!("  ownerReferences: [{{kind: Workload, name: sweep, uid: {uid}, controller: true}}]\n"),
        ),
        workload(
            "guarded",
            "  finalizers: [example.com/hold]\n  annotations: {example.com/note: kept}\n",
        ),
        workload("bystander", ""),
    ]
    .join("---\n");
    dora.run(&["apply", "-f", &write(&dora, "dependents.yaml", &dependents)]);
    let described = dora.run(&["describe", "wk", "point-1"]);
    assert!(
        described.contains(&format!("Workload sweep (uid {uid}, controller)")),
        "{described}"
    );

    let out = dora.run(&["delete", "wk", "sweep"]);
    assert_eq!(out.trim(), "workload/sweep deleted");
    wait_for(
        &dora,
        &["get", "wk", "-o", "json"],
        "point-1 to go with its owner",
        |list| !names(list).contains(&"point-1".to_string()),
    );
    let left = dora.json(&["get", "wk", "-o", "json"]);
    assert_eq!(names(&left), ["bystander", "guarded"]);

    let out = dora.run(&["delete", "wk", "guarded"]);
    assert_eq!(
        out.trim(),
        "workload/guarded deletion pending on finalizers example.com/hold"
    );
    let table = dora.run(&["get", "wk", "guarded"]);
    assert!(table.contains("Terminating"), "{table}");
    let described = dora.run(&["describe", "wk", "guarded"]);
    assert!(
        described.contains("Finalizers: example.com/hold"),
        "{described}"
    );
    assert!(described.contains("Deleting:"), "{described}");
    assert!(
        described.contains("Annotations: example.com/note=kept"),
        "{described}"
    );
    let refused = dora.fails(&[
        "apply",
        "-f",
        &write(
            &dora,
            "more.yaml",
            &workload(
                "guarded",
                "  finalizers: [example.com/hold, example.com/more]\n",
            ),
        ),
    ]);
    assert!(refused.contains("metadata.finalizers"), "{refused}");

    // The controller's part: read the object, drop its finalizer, apply it back.
    let mut object: Value = dora.json(&["get", "wk", "guarded", "-o", "json"]);
    object["metadata"]["finalizers"] = Value::Array(Vec::new());
    let out = dora.run(&[
        "apply",
        "-f",
        &write(&dora, "released.json", &object.to_string()),
    ]);
    assert!(out.contains("deleted"), "{out}");
    let missing = dora.fails(&["get", "wk", "guarded"]);
    assert!(missing.contains("not found"), "{missing}");
    dora.stop();
}
