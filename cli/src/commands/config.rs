//! `dora config`: profiles and defaults.

use anyhow::{Context, bail};

use dora_crds::Kind;
use reqwest::Method;

use crate::args::{ConfigCommand, Global, ProfileCommand};
use crate::client::Client;
use crate::config;
use crate::output;
use dora_client::profile::{self, Profile, Profiles};

pub async fn run(global: &Global, command: ConfigCommand) -> anyhow::Result<()> {
    let mut config = Profiles::load()?;
    match command {
        ConfigCommand::View => {
            let mut shown = config.clone();
            for profile in shown.profiles.values_mut() {
                profile.token = "<hidden>".into();
                if profile.ca.is_some() {
                    profile.ca = Some("<PEM>".into());
                }
            }
            println!("# {}", profile::path().display());
            print!("{}", output::yaml(&serde_json::to_value(&shown)?)?);
            return Ok(());
        }
        ConfigCommand::UseZone { zone } => {
            config.profile_mut(global.profile.as_deref())?.zone = Some(zone.clone());
            config::save(&config)?;
            println!("Default zone: {zone}");
            warn_if_missing(global, Kind::Zone, &zone).await;
            return Ok(());
        }
        ConfigCommand::UseWorkspace { workspace } => {
            config.profile_mut(global.profile.as_deref())?.workspace = Some(workspace.clone());
            config::save(&config)?;
            println!("Default workspace: {workspace}");
            warn_if_missing(global, Kind::Workspace, &workspace).await;
            return Ok(());
        }
        ConfigCommand::Profile(ProfileCommand::Init {
            name,
            api_server,
            token,
            ca,
        }) => {
            if !api_server.starts_with("https://") {
                bail!("--api-server must be an https:// URL; Dora serves HTTPS only");
            }
            let ca = match ca {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => bail!(
                    "pass --ca with the cluster CA (ca.pem in the server's data folder) so that the server can be verified"
                ),
            };
            dora_client::tls_config(ca.as_deref().unwrap_or_default())?;
            config.profiles.insert(
                name.clone(),
                Profile {
                    api_server,
                    token,
                    ca,
                    zone: global.zone.clone(),
                    workspace: global.workspace.clone(),
                },
            );
            config.current = Some(name.clone());
            println!("Profile {name} created and in use");
        }
        ConfigCommand::Profile(ProfileCommand::Use { name }) => {
            if !config.profiles.contains_key(&name) {
                bail!("no profile {name:?}; see `dora config profile ls`");
            }
            config.current = Some(name.clone());
            println!("Using profile {name}");
        }
        ConfigCommand::Profile(ProfileCommand::Ls) => {
            let rows: Vec<Vec<String>> = config
                .profiles
                .iter()
                .map(|(name, p)| {
                    let current = if config.current.as_deref() == Some(name) {
                        "*"
                    } else {
                        ""
                    };
                    vec![
                        current.into(),
                        name.clone(),
                        p.api_server.clone(),
                        p.zone.clone().unwrap_or_default(),
                        p.workspace.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(
                    &["CURRENT", "NAME", "API SERVER", "ZONE", "WORKSPACE"],
                    &rows
                )
            );
            return Ok(());
        }
    }
    config::save(&config)?;
    Ok(())
}

/// Warns when the zone or workspace just made the default does not exist (yet), or cannot be
/// checked; the setting stays, since an administrator may create it later.
async fn warn_if_missing(global: &Global, kind: Kind, name: &str) {
    let path = format!("/v1/{}/{name}", kind.plural());
    let found = match Client::new(global) {
        Ok(client) => client
            .json(Method::GET, &path, &[], None)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    if let Err(e) = found {
        let what = kind.name().to_ascii_lowercase();
        eprintln!(
            "warning: {what} {name:?} cannot be used: {e:#}; see `dora get {}`",
            kind.plural()
        );
    }
}
