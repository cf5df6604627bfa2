//! End to end: a kind defined at run time with a `Definition`, used through the CLI against a
//! real `dora up` over HTTPS as any built-in kind is: apply, get (its columns, wide, json,
//! -A, -w), describe, versions, events, completion, RBAC by kind name; collisions, deleting
//! a definition with objects, changing its schema; a restart; a second API server on the same
//! store. Each on the embedded store and on the Cassandra of `scripts/test`.

mod support;

use std::process::{Command as Process, Stdio};

use serde_json::Value;
use support::{DORA, Dora, Store, line_reader, names, read_until};

const DEFINITION: &str = r#"
apiVersion: v1
kind: Definition
metadata: {name: notebooks}
spec:
  names: {kind: Notebook, plural: notebooks, aliases: [nb]}
  scope: zonedWorkspaced
  status: true
  schema:
    type: object
    required: [image]
    additionalProperties: false
    properties:
      image: {type: string}
      gpus: {type: integer, minimum: 0}
      idle: {type: string}
  columns:
    - {name: IMAGE, jsonPath: .spec.image}
    - {name: GPUS, pointer: /spec/gpus}
    - {name: IDLE, pointer: /spec/idle, wide: true}
"#;

fn notebook(name: &str, workspace: &str, gpus: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Notebook\nmetadata: {{name: {name}, workspace: {workspace}}}\nspec: {{image: jupyter/lab, gpus: {gpus}, idle: 30m}}\n"
    )
}

fn write(dora: &Dora, file: &str, text: &str) -> String {
    let path = dora.home.join(file);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// What `dora apply -f` printed and whether it succeeded.
fn apply(dora: &Dora, file: &str, text: &str) -> (bool, String, String) {
    let output = dora
        .cli()
        .args(["apply", "-f", &write(dora, file, text)])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A value of the CLI config of `home` (`apiServer`, `token`) of its first profile.
fn config_value(home: &std::path::Path, key: &str) -> String {
    std::fs::read_to_string(Dora::config(home))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{key}: "))
                .map(str::to_string)
        })
        .unwrap()
}

#[test]
fn a_defined_kind_works_like_a_built_in_one_on_sqlite() {
    a_defined_kind_works_like_a_built_in_one(Store::Sqlite);
}

#[test]
fn a_defined_kind_works_like_a_built_in_one_on_cassandra() {
    a_defined_kind_works_like_a_built_in_one(Store::fresh_cql());
}

fn a_defined_kind_works_like_a_built_in_one(store: Store) {
    let home = support::home();
    let dora = Dora::up_on(home.path(), &store);
    dora.run(&[
        "apply",
        "-f",
        &write(
            &dora,
            "ws.yaml",
            "apiVersion: v1\nkind: Workspace\nmetadata: {name: other}\n",
        ),
    ]);

    // One manifest defines the kind and makes objects of it.
    let manifest = [
        notebook("lab", "default", "1"),
        DEFINITION.to_string(),
        notebook("spare", "other", "0"),
    ]
    .join("---\n");
    let (ok, stdout, stderr) = apply(&dora, "nb.yaml", &manifest);
    assert!(ok, "{stderr}");
    for line in [
        "definition/notebooks created",
        "notebook/lab created",
        "notebook/spare created",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }

    // Invalid objects are refused with the field named; nothing is stored.
    let (ok, _, stderr) = apply(&dora, "bad.yaml", &notebook("bad", "default", "many"));
    assert!(
        !ok && stderr.contains("spec.gpus") && stderr.contains("\"many\""),
        "{stderr}"
    );
    let (ok, _, stderr) = apply(
        &dora,
        "bad.yaml",
        "apiVersion: v1\nkind: nb\nmetadata: {name: bad}\nspec: {image: x, colour: red}\n",
    );
    assert!(!ok && stderr.contains("spec.colour"), "{stderr}");
    let (ok, _, stderr) = apply(
        &dora,
        "bad.yaml",
        "apiVersion: v1\nkind: nb\nmetadata: {name: bad}\nspec: {gpus: 1}\n",
    );
    assert!(!ok && stderr.contains("spec.image"), "{stderr}");
    assert!(dora.fails(&["get", "nb", "bad"]).contains("not found"));

    // get: its own columns, wide, json, across workspaces.
    let table = dora.run(&["get", "notebooks"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("IMAGE") && header.contains("GPUS") && !header.contains("IDLE"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("lab") && l.contains("jupyter/lab")),
        "{table}"
    );
    assert!(
        !table.contains("spare"),
        "only the default workspace: {table}"
    );
    let wide = dora.run(&["get", "nb", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("IDLE") && wide.contains("30m"),
        "{wide}"
    );
    assert_eq!(names(&dora.json(&["get", "nb", "-o", "json"])), ["lab"]);
    let all = dora.run(&["get", "nb", "-A"]);
    assert!(
        all.contains("WORKSPACE") && all.contains("spare") && all.contains("lab"),
        "{all}"
    );
    let one = dora.json(&["get", "Notebook", "lab", "-o", "json"]);
    assert_eq!(
        (one["kind"].as_str(), one["spec"]["gpus"].as_u64()),
        (Some("Notebook"), Some(1))
    );

    // A watch sees changes, and describe, versions and events tell the story.
    let mut watcher = Process::new(DORA)
        .args(["get", "nb", "-w", "-o", "json"])
        .env("DORA_CONFIG", Dora::config(home.path()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(watcher.stdout.take().unwrap());
    read_until(
        &lines,
        |l| l.contains("\"ADDED\"") && l.contains("\"lab\""),
        "ADDED lab",
    );
    let (ok, _, stderr) = apply(&dora, "lab.yaml", &notebook("lab", "default", "2"));
    assert!(ok, "{stderr}");
    let seen = read_until(&lines, |l| l.contains("\"MODIFIED\""), "MODIFIED lab");
    let event: Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(event["object"]["spec"]["gpus"], 2);
    let _ = watcher.kill();
    let _ = watcher.wait();
    let described = dora.run(&["describe", "nb", "lab"]);
    assert!(
        described.contains("Notebook")
            && described.contains("gpus: 2")
            && described.contains("Configured"),
        "{described}"
    );
    let versions = dora.json(&["versions", "nb", "lab", "-o", "json"]);
    assert_eq!(versions["items"].as_array().unwrap().len(), 2, "{versions}");
    let events = dora.run(&["events", "nb", "lab"]);
    assert!(
        events.contains("Created") && events.contains("Configured"),
        "{events}"
    );

    // explain reads the definition's schema.
    let explained = dora.run(&["explain", "nb.spec"]);
    assert!(
        explained.contains("gpus") && explained.contains("image"),
        "{explained}"
    );

    // Completion offers the kind's names.
    let output = dora
        .cli()
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", "2")
        .args(["--", "dora", "get", "noteb"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("notebooks"),
        "{output:?}"
    );

    // Names that collide are refused, whatever the definition's own name.
    let colliding = DEFINITION
        .replace("aliases: [nb]", "aliases: [wk]")
        .replace("Notebook", "Pad")
        .replace("notebooks", "pads");
    let (ok, _, stderr) = apply(&dora, "collide.yaml", &colliding);
    assert!(
        !ok && stderr.contains("spec.names.aliases[0]")
            && stderr.contains("built-in kind Workload"),
        "{stderr}"
    );
    let twice = DEFINITION
        .replace("notebooks", "notebookz")
        .replace("aliases: [nb]", "aliases: []");
    let (ok, _, stderr) = apply(&dora, "twice.yaml", &twice);
    assert!(
        !ok && stderr.contains("already names kind Notebook"),
        "{stderr}"
    );

    // A schema that a stored object fails is refused, naming it; one they pass is taken.
    let stricter = DEFINITION.replace(
        "gpus: {type: integer, minimum: 0}",
        "gpus: {type: integer, maximum: 1}",
    );
    let (ok, _, stderr) = apply(&dora, "stricter.yaml", &stricter);
    assert!(
        !ok && stderr.contains("default/default/lab") && stderr.contains("spec.gpus"),
        "{stderr}"
    );
    let looser = DEFINITION.replace("required: [image]", "required: []");
    let (ok, stdout, stderr) = apply(&dora, "looser.yaml", &looser);
    assert!(
        ok && stdout.contains("definition/notebooks configured"),
        "{stderr}"
    );

    // Deleting the definition is refused while objects exist; --cascade deletes them.
    let refused = dora.fails(&["delete", "definition", "notebooks"]);
    assert!(
        refused.contains("still has 2 Notebook") && refused.contains("--cascade"),
        "{refused}"
    );
    assert_eq!(names(&dora.json(&["get", "nb", "-o", "json"])), ["lab"]);
    dora.run(&["delete", "def", "notebooks", "--cascade"]);
    assert!(dora.fails(&["get", "nb"]).contains("unknown kind"));
    let (ok, _, stderr) = apply(&dora, "nb.yaml", &manifest);
    assert!(ok, "defined again, its objects start afresh: {stderr}");
    assert_eq!(names(&dora.json(&["get", "nb", "-o", "json"])), ["lab"]);
    assert_eq!(
        dora.json(&["get", "nb", "lab", "-o", "json"])["metadata"]["generation"],
        1
    );
    dora.stop();
}

#[test]
fn rights_restart_and_a_second_api_server_on_sqlite() {
    rights_restart_and_a_second_api_server(Store::Sqlite);
}

#[test]
fn rights_restart_and_a_second_api_server_on_cassandra() {
    rights_restart_and_a_second_api_server(Store::fresh_cql());
}

fn rights_restart_and_a_second_api_server(store: Store) {
    let home = support::home();
    let dora = Dora::up_on(home.path(), &store);
    let manifest = [DEFINITION.to_string(), notebook("lab", "default", "1")].join("---\n");
    let (ok, _, stderr) = apply(&dora, "nb.yaml", &manifest);
    assert!(ok, "{stderr}");

    // bob has the built-in user role: nothing on Notebooks, until a role names the kind.
    let bob = "apiVersion: v1\nkind: User\nmetadata: {name: bob}\nspec:\n  default: {zone: default, workspace: default}\n  resources:\n    - {zone: default, workspace: default, role: user}\n";
    dora.run(&["apply", "-f", &write(&dora, "bob.yaml", bob)]);
    let token = dora.run(&["token", "create", "--user", "bob", "--expires-in", "1h"]);
    let ca = home.path().join("data/pki/ca.pem");
    let url = config_value(home.path(), "apiServer");
    dora.run(&[
        "config",
        "profile",
        "init",
        "bob",
        "--api-server",
        &url,
        "--token",
        token.trim(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    dora.run(&["config", "profile", "use", "local"]);
    let as_bob = |args: &[&str]| {
        let mut all = vec!["--profile", "bob"];
        all.extend_from_slice(args);
        dora.cli().args(&all).output().unwrap()
    };
    let denied = as_bob(&["get", "nb"]);
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && stderr.contains("may not Get Notebook"),
        "{stderr}"
    );
    let changed = write(&dora, "bob-nb.yaml", &notebook("lab", "default", "7"));
    let denied = as_bob(&["apply", "-f", &changed]);
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && stderr.contains("may not Apply Notebook"),
        "{stderr}"
    );
    assert!(!as_bob(&["delete", "nb", "lab"]).status.success());
    let lab = dora.json(&["get", "nb", "lab", "-o", "json"]);
    assert_eq!(
        (
            lab["spec"]["gpus"].as_u64(),
            lab["metadata"]["generation"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let reader = "apiVersion: v1\nkind: Role\nmetadata: {name: notebook-reader}\nspec:\n  permission: {Notebook: [Get, GetOne]}\n---\n".to_string()
        + &bob.replace("role: user}\n", "role: user}\n    - {kind: Notebook, zone: default, workspace: default, role: notebook-reader}\n");
    dora.run(&["apply", "-f", &write(&dora, "reader.yaml", &reader)]);
    let listed = as_bob(&["get", "nb", "-o", "json"]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(!as_bob(&["apply", "-f", &changed]).status.success());

    // The definition survives a restart.
    dora.stop();
    let dora = Dora::up_on(home.path(), &store);
    assert_eq!(names(&dora.json(&["get", "nb", "-o", "json"])), ["lab"]);

    // A second API server on the same store learns a kind defined through the first while
    // it runs.
    let second_home = support::home();
    std::os::unix::fs::symlink(home.path().join("data"), second_home.path().join("data")).unwrap();
    let second = Dora::up_on(second_home.path(), &store);
    let second_url = second
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("Dora is up at "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let admin = dora.run(&["token", "create", "--user", "admin", "--expires-in", "1h"]);
    dora.run(&[
        "config",
        "profile",
        "init",
        "second",
        "--api-server",
        &second_url,
        "--token",
        admin.trim(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    dora.run(&["config", "profile", "use", "local"]);
    let gadgets = DEFINITION
        .replace("Notebook", "Gadget")
        .replace("notebooks", "gadgets")
        .replace("aliases: [nb]", "aliases: [gd]")
        .replace("zonedWorkspaced", "workspaced");
    let manifest = [
        gadgets,
        "apiVersion: v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {image: x}\n".to_string(),
    ]
    .join("---\n");
    let (ok, _, stderr) = apply(&dora, "gadgets.yaml", &manifest);
    assert!(ok, "{stderr}");
    // A workspaced kind lives in workspaced_resources; -A reads every workspace.
    let other = "apiVersion: v1\nkind: Workspace\nmetadata: {name: other}\n---\napiVersion: v1\nkind: Gadget\nmetadata: {name: g2, workspace: other}\nspec: {image: why}\n";
    let (ok, _, stderr) = apply(&dora, "other.yaml", other);
    assert!(ok, "{stderr}");
    assert_eq!(names(&dora.json(&["get", "gd", "-o", "json"])), ["g1"]);
    let all = dora.run(&["get", "gd", "-A"]);
    assert!(
        all.contains("WORKSPACE") && all.contains("g1") && all.contains("g2"),
        "{all}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let on_second = loop {
        let output = dora
            .cli()
            .args(["--profile", "second", "get", "gadgets", "-o", "json"])
            .output()
            .unwrap();
        if output.status.success() {
            break serde_json::from_slice::<Value>(&output.stdout).unwrap();
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("unknown kind"), "{stderr}");
        assert!(
            std::time::Instant::now() < deadline,
            "the second server never served gadgets: {stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(names(&on_second), ["g1"]);
    second.stop();
    dora.stop();
}
