//! The CLI's connection to the API: the chosen profile's server, CA and token, with `-z`/`-g`
//! and `--request-timeout` over its defaults. Calls go through [`dora_client::Client`].

use std::ops::Deref;

use anyhow::bail;
use dora_crds::Kind;
use reqwest::Method;

use crate::args::Global;
use dora_client::profile::{Profile, Profiles};

/// A connection to one API server as one user, and where commands act by default.
pub struct Client {
    api: dora_client::Client,
    zone: Option<String>,
    workspace: Option<String>,
}

/// Calls of the API itself.
impl Deref for Client {
    type Target = dora_client::Client;

    fn deref(&self) -> &dora_client::Client {
        &self.api
    }
}

/// Where a command acts.
pub struct Place {
    pub zone: String,
    /// `None` when the kind has no workspace or all workspaces are wanted.
    pub workspace: Option<String>,
}

impl Client {
    /// A client for the chosen profile, with `-z`/`-g` overriding its defaults.
    pub fn new(global: &Global) -> anyhow::Result<Client> {
        let config = Profiles::load()?;
        let profile = config.profile(global.profile.as_deref())?.clone();
        Self::for_profile(&profile, global)
    }

    fn for_profile(profile: &Profile, global: &Global) -> anyhow::Result<Client> {
        let Some(ca) = &profile.ca else {
            bail!(
                "the profile has no CA certificate; recreate it with `dora config profile init ... --ca CA.pem`"
            );
        };
        let mut config = dora_client::Config::new(&profile.api_server, ca, &profile.token);
        config.timeout = global.request_timeout;
        config.user_agent = concat!("dora/", env!("CARGO_PKG_VERSION")).into();
        Ok(Client {
            api: dora_client::Client::new(config)?,
            zone: global.zone.clone().or(profile.zone.clone()),
            workspace: global.workspace.clone().or(profile.workspace.clone()),
        })
    }
    /// The zone and workspace a command on `kind` acts in.
    pub async fn place(&mut self, kind: Kind, all_workspaces: bool) -> anyhow::Result<Place> {
        self.place_with(kind, None, None, all_workspaces).await
    }

    /// Where the command acts and the API path of the object `name` of `kind` there.
    pub async fn object_path(&mut self, kind: Kind, name: &str) -> anyhow::Result<(Place, String)> {
        let place = self.place(kind, false).await?;
        let path = kind.object_path(&place.zone, place.workspace.as_deref(), name);
        Ok((place, path))
    }

    /// The zone and workspace a command on `kind` acts in: `zone` and `workspace` where given
    /// (by a document), the defaults only for what they leave out.
    pub async fn place_with(
        &mut self,
        kind: Kind,
        zone: Option<&str>,
        workspace: Option<&str>,
        all_workspaces: bool,
    ) -> anyhow::Result<Place> {
        let scope = kind.scope();
        let wants_zone = scope.has_zone() && zone.is_none();
        let wants_workspace = scope.has_workspace() && !all_workspaces && workspace.is_none();
        if (wants_zone && self.zone.is_none()) || (wants_workspace && self.workspace.is_none()) {
            let me = self.json(Method::GET, "/v1/whoami", &[], None).await?;
            self.zone = self.zone.take().or(me["zone"].as_str().map(str::to_string));
            self.workspace = self
                .workspace
                .take()
                .or(me["workspace"].as_str().map(str::to_string));
        }
        let zone = match (scope.has_zone(), zone.or(self.zone.as_deref())) {
            (false, _) => String::new(),
            (true, Some(zone)) => zone.to_string(),
            (true, None) => bail!(
                "{kind} lives in a zone and none is set; pass -z ZONE or run `dora config use-zone ZONE`"
            ),
        };
        let workspace = match (
            scope.has_workspace() && !all_workspaces,
            workspace.or(self.workspace.as_deref()),
        ) {
            (false, _) => None,
            (true, Some(ws)) => Some(ws.to_string()),
            (true, None) => bail!(
                "{kind} lives in a workspace and none is set; pass -g WORKSPACE or run `dora config use-workspace WORKSPACE`"
            ),
        };
        Ok(Place { zone, workspace })
    }

    /// The default zone and workspace, for apply.
    pub fn defaults(&self) -> (Option<&str>, Option<&str>) {
        (self.zone.as_deref(), self.workspace.as_deref())
    }
}
