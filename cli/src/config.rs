//! The CLI configuration: profiles of API server, CA, token and default zone and workspace.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One cluster and identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// `https://host:port`.
    pub api_server: String,
    pub token: String,
    /// PEM of the cluster CA; the system's roots are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// `$DORA_CONFIG`, else `~/.config/dora/config.yaml`.
pub fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("DORA_CONFIG") {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
        });
    base.join("dora").join("config.yaml")
}

impl Config {
    /// Reads the config file; a missing file is an empty config.
    pub fn load() -> anyhow::Result<Config> {
        let path = path();
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => Ok(Config::default()),
            Ok(text) => dora_crds::from_yaml(&text)
                .with_context(|| format!("{} is not a valid Dora config", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the config file, readable by its owner only.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_saphyr::to_string(self).context("cannot serialize the config")?;
        dora_apiserver::write_private(&path, text.as_bytes())?;
        Ok(path)
    }

    /// The name of the profile to use: `--profile`, else the current one.
    pub fn profile_name(&self, wanted: Option<&str>) -> anyhow::Result<String> {
        match wanted.map(str::to_string).or_else(|| self.current.clone()) {
            Some(name) if self.profiles.contains_key(&name) => Ok(name),
            Some(name) => bail!(
                "no profile {name:?} in {}; see `dora config profile ls`",
                path().display()
            ),
            None => bail!(
                "no profile configured in {}; run `dora up`, or `dora config profile init NAME --api-server URL --token TOKEN --ca CA.pem`",
                path().display()
            ),
        }
    }

    /// The profile to use.
    pub fn profile(&self, wanted: Option<&str>) -> anyhow::Result<&Profile> {
        let name = self.profile_name(wanted)?;
        Ok(&self.profiles[&name])
    }

    /// The profile to change.
    pub fn profile_mut(&mut self, wanted: Option<&str>) -> anyhow::Result<&mut Profile> {
        let name = self.profile_name(wanted)?;
        self.profiles.get_mut(&name).context("profile vanished")
    }
}
