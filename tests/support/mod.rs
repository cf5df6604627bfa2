//! What the end-to-end tests share: `dora up` as a child process on a temporary data folder
//! and config, and the CLI run against it over HTTPS.
#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

pub const DORA: &str = env!("CARGO_BIN_EXE_dora");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A test's temporary folder: its data, config and logs.
///
/// Others may search it (mode 0711), as they must a node's state folder when the tests run
/// as root and Process containers run as `nobody`. When the test fails it is kept, and the
/// end of every log in it printed.
pub struct Home(Option<tempfile::TempDir>);

/// A new [`Home`].
pub fn home() -> Home {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    Home(Some(dir))
}

impl Home {
    pub fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let path = self.0.take().unwrap().keep();
        eprintln!("kept the failed test's folder {}", path.display());
        let Ok(entries) = std::fs::read_dir(&path) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.path();
            if file.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- the last lines of {}", file.display());
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Lines of a child's stdout, read on a thread.
pub fn line_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line matching `wanted`, returning every line read up to it.
pub fn read_until(
    lines: &mpsc::Receiver<String>,
    wanted: impl Fn(&str) -> bool,
    what: &str,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = wanted(&line);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {what} within 30 s; got {seen:#?}");
}

/// Where a `dora up` of a test keeps its state.
#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded store in the data folder.
    Sqlite,
    /// A keyspace of the Cassandra of `DORA_CQL_URL` (`scripts/test` starts one), as a
    /// `--store` URL.
    Cql(String),
}

impl Store {
    /// A keyspace of its own on the test Cassandra. Under `CI=true`, a missing
    /// `DORA_CQL_URL` fails the test rather than falling back to a local default.
    pub fn fresh_cql() -> Store {
        let url = match std::env::var("DORA_CQL_URL") {
            Ok(url) => url,
            Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("CI=true but DORA_CQL_URL is not set: Cassandra must run")
            }
            Err(_) => "cql://127.0.0.1:9042/dora".into(),
        };
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let hosts = base.rsplit_once('/').map_or(base, |(hosts, _)| hosts);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut store = format!("{hosts}/e2e_{}", &id[..16]);
        if !query.is_empty() {
            store = format!("{store}?{query}");
        }
        Store::Cql(store)
    }

    /// `dora up`'s arguments for this store.
    pub fn args(&self) -> Vec<&str> {
        match self {
            Store::Sqlite => Vec::new(),
            Store::Cql(url) => vec!["--store", url],
        }
    }
}

pub struct Dora {
    pub child: Child,
    /// Everything `dora up` printed before it was up.
    pub banner: Vec<String>,
    pub home: PathBuf,
}

impl Dora {
    pub fn config(home: &Path) -> PathBuf {
        home.join("config.yaml")
    }

    /// `dora up` without a node agent: the API, scheduler and credit system only.
    pub fn up(home: &Path) -> Dora {
        Self::up_with(home, &["--no-node"], "warn", Stdio::inherit())
    }

    /// `dora up` without a node agent on `store`.
    pub fn up_on(home: &Path, store: &Store) -> Dora {
        let mut args = vec!["--no-node"];
        args.extend(store.args());
        Self::up_with(home, &args, "warn", Stdio::inherit())
    }

    /// `dora up` with more arguments, a log filter and where its log goes.
    pub fn up_with(home: &Path, extra: &[&str], log: &str, stderr: Stdio) -> Dora {
        let mut child = Process::new(DORA)
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(home.join("data"))
            .args(extra)
            .env("DORA_CONFIG", Self::config(home))
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("dora up starts");
        let lines = line_reader(child.stdout.take().unwrap());
        let banner = read_until(
            &lines,
            |l| l.starts_with("Dora is up at"),
            "`Dora is up` line",
        );
        let first_start = banner
            .last()
            .is_some_and(|l| !l.contains("profile \"local\""));
        let mut banner = banner;
        if first_start {
            banner.extend(read_until(
                &lines,
                |l| l.contains("dora events -w"),
                "hints",
            ));
        }
        Dora {
            child,
            banner,
            home: home.to_path_buf(),
        }
    }

    pub fn cli(&self) -> Command {
        let mut command = Command::new(DORA);
        command
            .env("DORA_CONFIG", Self::config(&self.home))
            .current_dir(repo());
        command
    }

    pub fn run(&self, args: &[&str]) -> String {
        let output = self.cli().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "dora {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.cli().args(args).output().unwrap();
        assert!(!output.status.success(), "dora {args:?} should fail");
        String::from_utf8(output.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.run(args)).expect("valid JSON")
    }

    /// A client of the API as the profile's user (the administrator `dora up` made).
    pub fn client(&self) -> dora_client::Client {
        let config: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(Self::config(&self.home)).unwrap())
                .unwrap();
        let profile = &config["profiles"]["local"];
        dora_client::Client::new(dora_client::Config::new(
            profile["apiServer"].as_str().unwrap(),
            profile["ca"].as_str().unwrap(),
            profile["token"].as_str().unwrap(),
        ))
        .unwrap()
    }

    pub fn stop(mut self) {
        let _ = Process::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dora {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `dora ARGS -o json` until `check` accepts it.
pub fn wait_for(dora: &Dora, args: &[&str], what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = dora.json(args);
        if check(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {value}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `dora ARGS -o json` until it succeeds and `check` accepts its output, for up to
/// `within`; unlike [`wait_for`], a command that fails is tried again.
pub fn eventually(
    dora: &Dora,
    args: &[&str],
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let output = dora.cli().args(args).args(["-o", "json"]).output().unwrap();
        let value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if output.status.success() && check(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {value} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Gives a second zone's data folder the cluster's secret and CAs from the first zone's, as an
/// operator would copy them: tokens and certificates of one zone are then good in the other.
pub fn share_cluster_secrets(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("pki")).unwrap();
    std::fs::copy(from.join("secret.key"), to.join("secret.key")).unwrap();
    for file in ["ca.key", "ca.pem", "proxy-ca.key", "proxy-ca.pem"] {
        std::fs::copy(from.join("pki").join(file), to.join("pki").join(file)).unwrap();
    }
}

/// The URL in `dora up`'s "Dora is up at URL ..." line.
pub fn url_of(dora: &Dora) -> String {
    let line = dora
        .banner
        .iter()
        .find(|l| l.starts_with("Dora is up at"))
        .unwrap();
    line.split_whitespace().nth(4).unwrap().to_string()
}
