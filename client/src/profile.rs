//! The profiles file the CLI keeps (`$DORA_CONFIG`, else `~/.config/dora/config.yaml`): named
//! API servers with their CA, token and default zone and workspace. `dora up` writes one for
//! its cluster, so any program can reach it as the same user ([`crate::Config::from_profile`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

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
pub struct Profiles {
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

impl Profiles {
    /// Reads the profiles file; a missing file has no profiles.
    pub fn load() -> Result<Profiles, Error> {
        let path = path();
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => Ok(Profiles::default()),
            Ok(text) => dora_crds::from_yaml(&text).map_err(|e| {
                Error::Config(format!(
                    "{} is not a valid Dora config: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
            Err(e) => Err(Error::Config(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// The name of the profile to use: `wanted`, else the current one.
    pub fn profile_name(&self, wanted: Option<&str>) -> Result<String, Error> {
        match wanted.map(str::to_string).or_else(|| self.current.clone()) {
            Some(name) if self.profiles.contains_key(&name) => Ok(name),
            Some(name) => Err(Error::Config(format!(
                "no profile {name:?} in {}; see `dora config profile ls`",
                path().display()
            ))),
            None => Err(Error::Config(format!(
                "no profile configured in {}; run `dora up`, or `dora config profile init NAME --api-server URL --token TOKEN --ca CA.pem`",
                path().display()
            ))),
        }
    }

    /// The profile to use.
    pub fn profile(&self, wanted: Option<&str>) -> Result<&Profile, Error> {
        let name = self.profile_name(wanted)?;
        Ok(&self.profiles[&name])
    }

    /// The profile to change.
    pub fn profile_mut(&mut self, wanted: Option<&str>) -> Result<&mut Profile, Error> {
        let name = self.profile_name(wanted)?;
        self.profiles
            .get_mut(&name)
            .ok_or_else(|| Error::Config("profile vanished".into()))
    }
}
