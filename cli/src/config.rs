//! Writing the CLI's profiles file (its format and reading it are
//! [`dora_client::profile`]'s).

use std::path::PathBuf;

use anyhow::Context;
use dora_client::profile::{Profiles, path};

/// Writes the profiles file, readable by its owner only.
pub fn save(profiles: &Profiles) -> anyhow::Result<PathBuf> {
    let path = path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_saphyr::to_string(profiles).context("cannot serialize the config")?;
    dora_apiserver::write_private(&path, text.as_bytes())?;
    Ok(path)
}
