//! Stamps the binary with the commit it was built from, for `dora version` and `--version`.
//! Outside a git checkout (a source tarball, an image build without `.git`) the commit comes
//! from `DORA_GIT_COMMIT`, else reads "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=DORA_GIT_COMMIT");
    // HEAD moves on checkout; its reflog on every commit, also of a branch HEAD names.
    for file in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", file]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("DORA_GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!(
        "cargo:rustc-env=DORA_VERSION={} (commit {commit})",
        std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION")
    );
}
