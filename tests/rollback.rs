//! End to end: `dora rollback`, `dora diff` and `dora apply --dry-run` against a real `dora up`.

mod support;

use std::process::Output;

use serde_json::Value;
use support::Dora;

const JOB: &str = "apiVersion: v1\nkind: Workload\nmetadata: {name: job}\nspec:\n  replica: {count: 1}\n  image: {image: \"$IMAGE\"}\n";

/// The images of the job's spec versions, oldest first, the current one last.
fn images(dora: &Dora) -> Vec<String> {
    let versions = dora.json(&["versions", "wk", "job", "-o", "json"]);
    versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["spec"]["image"]["image"].as_str().unwrap().to_string())
        .collect()
}

fn output(dora: &Dora, args: &[&str]) -> Output {
    dora.cli().args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn rollback_writes_the_old_spec_as_a_new_version() {
    let home = support::home();
    let dora = Dora::up(home.path());
    let manifest = home.path().join("job.yaml");
    std::fs::write(&manifest, JOB).unwrap();
    let manifest = manifest.to_str().unwrap();
    for image in ["busybox:1", "busybox:2", "busybox:3"] {
        dora.run(&["apply", "-f", manifest, "-e", &format!("IMAGE={image}")]);
    }
    assert_eq!(images(&dora), ["busybox:1", "busybox:2", "busybox:3"]);

    // By default, back to the previous spec: a fourth generation, the history kept whole.
    let rolled = dora.run(&["rollback", "wk", "job"]);
    assert_eq!(rolled.trim(), "workload/job configured (generation 4)");
    assert_eq!(
        images(&dora),
        ["busybox:1", "busybox:2", "busybox:3", "busybox:2"]
    );

    // --to picks the generation.
    let rolled = dora.run(&["rollback", "wk", "job", "--to", "1"]);
    assert_eq!(rolled.trim(), "workload/job configured (generation 5)");
    let job = dora.json(&["get", "wk", "job", "-o", "json"]);
    assert_eq!(job["spec"]["image"]["image"], "busybox:1");
    assert_eq!(images(&dora).len(), 5);

    // A generation the history does not hold is refused, naming the field; nothing changes.
    let refused = dora.fails(&["rollback", "wk", "job", "--to", "42"]);
    assert!(
        refused.contains("generation") && refused.contains("42"),
        "{refused}"
    );
    assert_eq!(images(&dora).len(), 5);
}

#[test]
fn diff_shows_versions_and_what_an_apply_would_change() {
    let home = support::home();
    let dora = Dora::up(home.path());
    let manifest = home.path().join("job.yaml");
    std::fs::write(&manifest, JOB).unwrap();
    let manifest = manifest.to_str().unwrap();
    for image in ["busybox:1", "busybox:2"] {
        dora.run(&["apply", "-f", manifest, "-e", &format!("IMAGE={image}")]);
    }

    // Two generations: the changed line, and exit status 1 as diff(1) has for differences.
    let diff = output(&dora, &["diff", "wk", "job", "--from", "1", "--to", "2"]);
    assert_eq!(diff.status.code(), Some(1), "{diff:?}");
    let text = stdout(&diff);
    assert!(
        text.contains("--- workload/job generation 1\n")
            && text.contains("+++ workload/job generation 2 (current)\n")
            && text.contains("\n-  image: busybox:1\n")
            && text.contains("\n+  image: busybox:2\n"),
        "{text}"
    );
    let refused = dora.fails(&["diff", "wk", "job", "--from", "7"]);
    assert!(
        refused.contains("--from") && refused.contains('7'),
        "{refused}"
    );

    // A dry run shows the change and writes nothing.
    let dry = dora.run(&[
        "apply",
        "--dry-run",
        "-f",
        manifest,
        "-e",
        "IMAGE=busybox:3",
    ]);
    assert!(
        dry.contains("\n-  image: busybox:2\n")
            && dry.contains("\n+  image: busybox:3\n")
            && dry.contains("workload/job configured (dry run)"),
        "{dry}"
    );
    assert_eq!(images(&dora), ["busybox:1", "busybox:2"]);
    let job: Value = dora.json(&["get", "wk", "job", "-o", "json"]);
    assert_eq!(job["metadata"]["generation"], 2);

    // `diff -f`: the same change; nothing for a file that is what is stored.
    let changed = output(&dora, &["diff", "-f", manifest, "-e", "IMAGE=busybox:3"]);
    assert_eq!(changed.status.code(), Some(1), "{changed:?}");
    assert!(stdout(&changed).contains("\n+  image: busybox:3\n"));
    let same = output(&dora, &["diff", "-f", manifest, "-e", "IMAGE=busybox:2"]);
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    assert_eq!(stdout(&same), "");
    let unchanged = dora.run(&[
        "apply",
        "--dry-run",
        "-f",
        manifest,
        "-e",
        "IMAGE=busybox:2",
    ]);
    assert_eq!(unchanged, "workload/job unchanged (dry run)\n");

    // A new object: all of it added, and still not created.
    let new = home.path().join("new.yaml");
    std::fs::write(&new, JOB.replace("name: job", "name: fresh")).unwrap();
    let dry = dora.run(&[
        "apply",
        "--dry-run",
        "-f",
        new.to_str().unwrap(),
        "-e",
        "IMAGE=busybox:9",
    ]);
    assert!(
        dry.starts_with("--- workload/fresh (stored)\n+++ workload/fresh (applied)\n")
            && dry.contains("\n+  image: busybox:9\n")
            && dry.ends_with("workload/fresh created (dry run)\n"),
        "{dry}"
    );
    dora.fails(&["get", "wk", "fresh"]);
}
