//! `dora node`: the node agent of this machine, and its settings for `dora up`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use dora_nodeagent::api::ApiClient;
use dora_nodeagent::user::User;
use dora_nodeagent::{AgentConfig, ApiConfig, DockerUse};

use super::components;
use crate::args::{DockerChoice, NodeArgs, NodeOptions};

/// The host name, as a node name: lowercase, with characters Dora names do not allow
/// replaced by `-`.
pub fn default_name() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.is_empty() {
        "node".into()
    } else {
        name.into()
    }
}

/// The agent's settings from the command line; `listen` is where the node API listens
/// unless `--node-listen` says otherwise.
pub fn agent_config(
    zone: &str,
    options: &NodeOptions,
    api: ApiConfig,
    state_dir: PathBuf,
    listen: SocketAddr,
) -> anyhow::Result<AgentConfig> {
    let name = options.node_name.clone().unwrap_or_else(default_name);
    dora_crds::validate_name("--node-name", &name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = AgentConfig::new(zone, &name, api, state_dir);
    config.docker = match options.docker {
        DockerChoice::Auto => DockerUse::IfAvailable,
        DockerChoice::On => DockerUse::Required,
        DockerChoice::Off => DockerUse::Off,
    };
    config.process = !options.no_process;
    config.process_user = process_user(options.process_user.as_deref())?;
    if options.heartbeat.is_zero() || options.resync.is_zero() {
        anyhow::bail!("--heartbeat and --resync must be longer than 0, e.g. 5s");
    }
    config.heartbeat = options.heartbeat;
    config.resync = options.resync;
    config.fake_gpus = options
        .fake_gpus
        .as_deref()
        .map(dora_nodeagent::hardware::parse_gpus)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--fake-gpus: {e}; write it like 2xA100"))?;
    let listen = options.node_listen.unwrap_or(listen);
    config.listen = Some(listen);
    config.advertise = options.advertise.clone().unwrap_or_else(|| {
        if listen.ip().is_unspecified() {
            "127.0.0.1".into()
        } else {
            listen.ip().to_string()
        }
    });
    Ok(config)
}

/// Who Process containers run as: `--process-user` (default nobody) for a root agent; an
/// agent that is not root cannot run them as anyone but itself.
fn process_user(asked: Option<&str>) -> anyhow::Result<Option<User>> {
    if rustix::process::geteuid().is_root() {
        return User::lookup(asked.unwrap_or("nobody")).map(Some);
    }
    match asked {
        Some(asked) => {
            let user = User::lookup(asked)?;
            if user.uid != rustix::process::geteuid().as_raw() {
                anyhow::bail!(
                    "--process-user {asked}: only an agent running as root can run containers \
                     as another user; start it as root, or leave --process-user out to run \
                     them as yourself"
                );
            }
            Ok(None)
        }
        None => Ok(None),
    }
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    components::init_logging(&args.log)?;
    let ca = std::fs::read_to_string(&args.ca)
        .with_context(|| format!("cannot read the cluster CA {}", args.ca.display()))?;
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --token-file {}", file.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let api = ApiConfig {
        url: args.api_server.clone(),
        ca,
        token: token.clone().unwrap_or_default(),
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| super::up::default_data_dir().join("node"));
    let listen = SocketAddr::from(([0, 0, 0, 0], 7444));
    let mut config = agent_config(&args.zone, &args.node, api, state_dir, listen)?;
    config.check()?;
    if token.is_none() {
        let join = args.join_token.as_deref().context(
            "set DORA_NODE_TOKEN or --token-file (from `dora token create --node NAME`), or DORA_JOIN_TOKEN (from `dora token create --join`)",
        )?;
        config.api.token = joined_credential(&config, join.trim()).await?;
    }
    dora_nodeagent::run(config, dora_runtime::stop_on_signal()).await
}

/// The node's own credential: the one kept from an earlier join, else one obtained now with
/// the join token and kept (mode 0600) in the state folder.
async fn joined_credential(config: &AgentConfig, join: &str) -> anyhow::Result<String> {
    let kept = config.state_dir.join("credential");
    match std::fs::read_to_string(&kept) {
        Ok(token) => return Ok(token.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", kept.display())),
    }
    let mut api = config.api.clone();
    api.token = join.to_string();
    let client = ApiClient::new(api, &config.zone, &config.name)?;
    let token = client
        .join()
        .await
        .context("cannot join the cluster with the join token")?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create {}", config.state_dir.display()))?;
    dora_apiserver::write_private(&kept, token.as_bytes())?;
    tracing::info!(node = %config.name, "joined; the node's credential is kept in {}", kept.display());
    Ok(token)
}
