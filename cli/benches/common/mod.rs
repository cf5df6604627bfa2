//! What the benchmarks share: a `dora up` (release build) on a temporary folder.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Rate limits that count every request but that no bench load reaches: the benches measure
/// Dora's throughput, not its limits.
pub const LIMITS_OUT_OF_REACH: &[&str] = &[
    "--address-rate-limit",
    "10000000",
    "--address-burst",
    "10000000",
    "--user-rate-limit",
    "10000000",
    "--user-burst",
    "10000000",
];

/// A running `dora up` and the profile it wrote for its administrator.
pub struct Up {
    pub server: Child,
    /// `apiServer`, `token` and `ca` of the profile.
    pub profile: Value,
    _home: tempfile::TempDir,
}

impl Up {
    /// Starts `dora up` with `extra` arguments and waits until it serves.
    pub fn start(extra: &[&str]) -> Up {
        let home = tempfile::tempdir().expect("temp dir");
        let config = home.path().join("config.yaml");
        let mut server = Command::new(env!("CARGO_BIN_EXE_dora"))
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(home.path().join("data"))
            .args(extra)
            .env("DORA_CONFIG", &config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("dora up");
        let stdout = server.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let _banner = lines
            .find(|l| l.as_ref().is_ok_and(|l| l.contains("dora events -w")))
            .expect("dora up is up");
        std::thread::spawn(move || lines.for_each(drop));
        let text = std::fs::read_to_string(&config).expect("config");
        let file: Value = serde_saphyr::from_str(&text).expect("config YAML");
        Up {
            server,
            profile: file["profiles"]["local"].clone(),
            _home: home,
        }
    }

    /// The profile's field `name`.
    pub fn field(&self, name: &str) -> String {
        self.profile[name].as_str().expect(name).to_string()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.server.id().to_string()])
            .status();
        let _ = self.server.wait();
    }
}

/// The `q` quantile of sorted `values`; the default when there are none.
pub fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(at).copied().unwrap_or_default()
}
