//! End to end: folders to and from volumes through `dora up` with its node agent over HTTPS:
//! trees upload and download whole and resume, `dora sync` follows a folder's edits, adds and
//! deletes but not its ignored files, paths stay inside the volume, and `dora clone workspace`
//! copies definitions and, when asked, data.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::Dora;

fn up(home: &Path) -> Dora {
    let log = std::fs::File::create(home.join("up.log")).unwrap();
    Dora::up_with(
        home,
        &["--node-name", "n1", "--heartbeat", "1s"],
        "warn",
        Stdio::from(log),
    )
}

/// Storage in `home/storage` and volume `data` in the default workspace.
fn volume(dora: &Dora, home: &Path) -> std::path::PathBuf {
    let storage = home.join("storage");
    let file = home.join("volume.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Storage\nmetadata: {{name: local}}\nspec: {{kind: Local, mountpath: {}}}\n---\napiVersion: v1\nkind: Volume\nmetadata: {{name: data}}\nspec: {{storage: local}}\n",
            storage.display()
        ),
    )
    .unwrap();
    dora.run(&["apply", "-f", file.to_str().unwrap()]);
    storage
}

/// The sha256 of every file under `root`, by its path from it.
fn digests(root: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                folders.push(entry.path());
            } else if kind.is_file() {
                let name = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string();
                let digest = Sha256::digest(std::fs::read(entry.path()).unwrap());
                found.insert(name, format!("{digest:x}"));
            }
        }
    }
    found
}

/// 1,000 files in 10 × 10 folders: every 7th empty, and `z/big.bin`, last, of 4 MiB.
fn tree(root: &Path) {
    for i in 0..10 {
        for j in 0..10 {
            let folder = root.join(format!("d{i}/e{j}"));
            std::fs::create_dir_all(&folder).unwrap();
            for k in 0..10 {
                let n = i * 100 + j * 10 + k;
                let text = if n % 7 == 0 {
                    String::new()
                } else {
                    format!("file {n}\n").repeat(n % 13 + 1)
                };
                if n != 999 {
                    std::fs::write(folder.join(format!("f{k}.txt")), text).unwrap();
                }
            }
        }
    }
    std::fs::create_dir_all(root.join("z")).unwrap();
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(root.join("z/big.bin"), big).unwrap();
}

/// The CLI run in the background, killed when dropped (a failed test leaves no process).
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dora: &Dora, args: &[&str], stderr: Stdio) -> Background {
    Background(
        Process::new(support::DORA)
            .args(args)
            .env("DORA_CONFIG", Dora::config(&dora.home))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_tree_round_trips_resumes_lists_and_stays_in_the_volume() {
    let home = support::home();
    let dora = up(home.path());
    let storage = volume(&dora, home.path());
    let local = home.path().join("tree");
    tree(&local);
    let sent = digests(&local);
    assert_eq!(sent.len(), 1000);
    // A symlink out of the folder is not followed.
    std::fs::write(home.path().join("secret"), "outside").unwrap();
    std::os::unix::fs::symlink(home.path().join("secret"), local.join("d0/leak")).unwrap();

    // The first upload dies part way; its big file had begun arriving earlier.
    let stored = storage.join("default/data/tree");
    std::fs::create_dir_all(stored.join("z")).unwrap();
    let big = std::fs::read(local.join("z/big.bin")).unwrap();
    std::fs::write(stored.join("z/.big.bin.dora-upload"), &big[..1 << 20]).unwrap();
    let first = spawn(
        &dora,
        &["upload", local.to_str().unwrap(), "data", "-j", "1"],
        Stdio::null(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while digests(&stored).len() < 100 {
        assert!(Instant::now() < deadline, "the upload did not begin");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first);
    let arrived = digests(&stored).len();
    assert!(arrived < 1000, "the upload was cut short: {arrived}");

    let output = dora
        .cli()
        .args(["upload", local.to_str().unwrap(), "data"])
        .output()
        .unwrap();
    let said = stderr_of(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("already there"), "{said}");
    // The big file at least; a small one cut short by the kill may be resumed too.
    assert!(said.contains(" resumed"), "{said}");
    assert!(said.contains("skipped 1 symlinks"), "{said}");
    assert_eq!(digests(&stored), sent);
    assert!(!stored.join("d0/leak").exists());

    // Again: everything is there.
    let output = dora
        .cli()
        .args(["upload", local.to_str().unwrap(), "data"])
        .output()
        .unwrap();
    assert!(
        stderr_of(&output).contains("uploaded 0 files, 0 B in")
            && stderr_of(&output).contains("1,000 already there"),
        "{}",
        stderr_of(&output)
    );

    // Back down, whole; a second download finds it all there.
    let back = home.path().join("back");
    let output = dora
        .cli()
        .args(["download", "data", "tree", back.to_str().unwrap()])
        .output()
        .unwrap();
    let said = stderr_of(&output);
    assert!(said.contains("downloaded 1,000 files"), "{said}");
    assert_eq!(digests(&back), sent);
    // Into the home folder, the download lands on the uploaded tree, which has the same
    // sizes and times.
    let output = dora
        .cli()
        .args(["download", "data", "tree", home.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        stderr_of(&output).contains("1,000 already there"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(digests(&local), sent);

    // ls -l -R: the whole tree with types and sizes.
    let listing = dora.json(&["ls", "data", "tree", "-l", "-R", "-o", "json"]);
    let items = listing["items"].as_array().unwrap();
    let files: Vec<&Value> = items.iter().filter(|i| i["kind"] == "file").collect();
    assert_eq!(files.len(), 1000);
    assert!(
        items
            .iter()
            .any(|i| i["name"] == "d3/e4" && i["kind"] == "dir")
    );
    let table = dora.run(&["ls", "data", "tree", "-l", "-R"]);
    let line = table
        .lines()
        .map(str::trim_end)
        .find(|l| l.ends_with("z/big.bin"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.starts_with("file") && line.contains("4194304"),
        "{line}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("dir") && l.ends_with("d9/e9/"))
    );
    let short = dora.run(&["ls", "data", "tree"]);
    assert_eq!(
        short.lines().skip(1).collect::<Vec<_>>(),
        [
            "d0/", "d1/", "d2/", "d3/", "d4/", "d5/", "d6/", "d7/", "d8/", "d9/", "z/"
        ]
    );

    // Out of the volume: `..`, an absolute path, a symlink on the node.
    let error = dora.fails(&["upload", local.to_str().unwrap(), "data", "../../escape"]);
    assert!(
        error.contains("\"../../escape\" leaves the volume"),
        "{error}"
    );
    let error = dora.fails(&["ls", "data", "/etc"]);
    assert!(error.contains("\"/etc\" is absolute"), "{error}");
    let error = dora.fails(&["sync", local.to_str().unwrap(), "data:a/../..", "--once"]);
    assert!(error.contains("leaves the volume"), "{error}");
    std::os::unix::fs::symlink(home.path(), stored.join("out")).unwrap();
    let error = dora.fails(&["download", "data", "tree/out", back.to_str().unwrap()]);
    assert!(
        error.contains("\"tree/out\" leads out of the volume"),
        "{error}"
    );
    let error = dora.fails(&["ls", "data", "tree/out/tree"]);
    assert!(error.contains("leads out of the volume"), "{error}");
}

/// The paths and sizes under `work` of volume `data`, as `dora ls -R` lists them.
fn remote(dora: &Dora) -> Value {
    support::eventually(
        dora,
        &["ls", "data", "-R"],
        Duration::from_secs(10),
        "a listing",
        |_| true,
    )
}

fn has(listing: &Value, path: &str) -> Option<u64> {
    listing["items"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == path)
        .map(|i| i["size"].as_u64().unwrap())
}

#[test]
fn sync_follows_edits_adds_and_deletes_but_not_ignored_files() {
    let home = support::home();
    let dora = up(home.path());
    volume(&dora, home.path());
    let local = home.path().join("work");
    std::fs::create_dir_all(local.join("sub/deep")).unwrap();
    std::fs::create_dir_all(local.join("build")).unwrap();
    std::fs::write(local.join(".gitignore"), "*.log\nbuild/\n").unwrap();
    std::fs::write(local.join(".doraignore"), "secret.txt\n").unwrap();
    std::fs::write(local.join("a.txt"), "first").unwrap();
    std::fs::write(local.join("sub/b.txt"), "b").unwrap();
    std::fs::write(local.join("sub/deep/c.txt"), "c").unwrap();
    std::fs::write(local.join("run.log"), "log").unwrap();
    std::fs::write(local.join("build/out.bin"), "out").unwrap();
    std::fs::write(local.join("secret.txt"), "secret").unwrap();
    let log = std::fs::File::create(home.path().join("sync.log")).unwrap();
    let sync = spawn(
        &dora,
        &["sync", local.to_str().unwrap(), "data:code", "--delete"],
        Stdio::from(log),
    );

    let within = Duration::from_secs(10);
    let ls = ["ls", "data", "code", "-R"];
    support::eventually(&dora, &ls, within, "the first pass", |l| {
        has(l, "sub/deep/c.txt").is_some()
    });
    let listing = remote(&dora);
    for ignored in ["code/run.log", "code/build", "code/secret.txt"] {
        assert!(has(&listing, ignored).is_none(), "{ignored}: {listing}");
    }
    assert_eq!(has(&listing, "code/.gitignore"), Some(13));

    std::fs::write(local.join("a.txt"), "edited, longer").unwrap();
    std::fs::write(local.join("new.txt"), "new").unwrap();
    std::fs::write(local.join("more.log"), "ignored").unwrap();
    std::fs::remove_file(local.join("sub/b.txt")).unwrap();
    support::eventually(&dora, &ls, within, "the edit, add and delete", |l| {
        has(l, "a.txt") == Some(14) && has(l, "new.txt") == Some(3) && has(l, "sub/b.txt").is_none()
    });
    std::fs::remove_dir_all(local.join("sub")).unwrap();
    support::eventually(&dora, &ls, within, "the folder's removal", |l| {
        has(l, "sub").is_none() && has(l, "sub/deep/c.txt").is_none()
    });
    let listing = remote(&dora);
    assert!(has(&listing, "code/more.log").is_none(), "{listing}");
    drop(sync);
}

#[test]
fn clone_workspace_copies_definitions_and_with_data_files() {
    let home = support::home();
    let dora = up(home.path());
    let storage = volume(&dora, home.path());
    let file = home.path().join("workload.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Workload\nmetadata: {name: job, labels: {team: ml}}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config:\n    cmd: [sh, -c, 'true']\n    restartPolicy: Never\n  selectors:\n    cpu: {product_name: All, count: 100m}\n",
    )
    .unwrap();
    dora.run(&["apply", "-f", file.to_str().unwrap()]);
    let note = home.path().join("note.txt");
    std::fs::write(&note, "kept").unwrap();
    dora.run(&["upload", note.to_str().unwrap(), "data", "notes/"]);

    let said = dora.run(&["clone", "workspace", "default", "copy"]);
    assert!(said.contains("workspace/copy created"), "{said}");
    let workload = dora.json(&["get", "wk", "job", "-g", "copy", "-o", "json"]);
    assert_eq!(workload["metadata"]["labels"]["team"], "ml");
    assert_eq!(workload["spec"]["config"]["cmd"][2], "true");
    dora.run(&["get", "vol", "data", "-g", "copy"]);
    assert!(
        !storage.join("copy/data/notes").exists(),
        "no data without --with-data"
    );

    let error = dora.fails(&["clone", "workspace", "default", "copy"]);
    assert!(error.contains("workspace copy exists"), "{error}");
    let error = dora.fails(&["clone", "workspace", "nowhere", "other"]);
    assert!(error.contains("nowhere"), "{error}");

    dora.run(&["clone", "workspace", "default", "copy2", "--with-data"]);
    assert_eq!(
        std::fs::read_to_string(storage.join("copy2/data/notes/note.txt")).unwrap(),
        "kept"
    );
    let listing = dora.json(&["ls", "data", "notes", "-g", "copy2", "-o", "json"]);
    assert_eq!(listing["items"][0]["name"], "note.txt");
}
