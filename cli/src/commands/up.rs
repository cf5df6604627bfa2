//! `dora up`: the API server, the scheduler and credit system of one zone, a node agent for
//! this machine and optionally hollow nodes, in one process on the embedded store (or a CQL
//! cluster).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use dora_apiserver::{
    ApiServer, Forwarder, Identity, Options, Pki, TokenClaims, TokenKey, write_private,
};
use dora_crds::Kind;
use dora_store::{ListQuery, ObjectKey};
use futures::FutureExt;

use dora_controller::gc::GcConfig;
use dora_nodeagent::sim::{self, SimHandle};
use dora_nodeagent::{AgentConfig, ApiConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{components, node};
use crate::args::UpArgs;
use crate::config;
use dora_client::profile::{Profile, Profiles};

/// Applied on first start: roles, the default zone and workspace, the admin user.
const BOOTSTRAP: &str = include_str!("../../../manifests/bootstrap.yaml");
const ADMIN_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// The built-in agent's credential is minted afresh at every start.
const NODE_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// How long the token lasts with which hollow nodes mint their credentials when they start.
const SIM_MINTING_LIFETIME: Duration = Duration::from_secs(600);

/// Where Dora keeps its data unless told: `/var/lib/dora` for root (whose home is closed to
/// the user Process containers run as), else `$XDG_DATA_HOME/dora` or `~/.local/share/dora`.
pub(super) fn default_data_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() && std::env::var_os("XDG_DATA_HOME").is_none() {
        return PathBuf::from("/var/lib/dora");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
        });
    base.join("dora")
}

/// Makes the data folder, closed to other users: listed by nobody else, and searched by
/// them only when `searched` (a root agent's Process containers run as another user and
/// must reach their folders under `node/`). What it holds is private file by file.
fn open_data_dir(data_dir: &Path, searched: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mode = if searched { 0o711 } else { 0o700 };
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", data_dir.display()))
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(secret) if secret.len() == 32 => Ok(secret),
        Ok(_) => bail!(
            "{} is not a 32-byte secret; restore it from a backup",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = TokenKey::generate_secret();
            write_private(path, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Whether the cluster still needs its bootstrap: no user exists, so nobody could log in. The
/// bootstrap applies the admin user last, so a start that stopped before it is done again.
async fn needs_bootstrap(server: &ApiServer) -> anyhow::Result<bool> {
    let query = ListQuery {
        kind: Kind::User.name().into(),
        scope: Kind::User.scope(),
        zone: String::new(),
        workspace: None,
        after: None,
        limit: 1,
    };
    let page = server
        .service()
        .store
        .list(&query)
        .await
        .context("cannot read the users from the store")?;
    Ok(page.rows.is_empty())
}

/// Creates the Zone this process runs unless it exists (a cluster's first `dora up` makes
/// "default"; each further zone's first `dora up --zone NAME` makes its own). An existing one
/// is left as it is, settings and all.
async fn ensure_zone(server: &ApiServer, zone: &str) -> anyhow::Result<()> {
    let key = ObjectKey::new(Kind::Zone, "", "", zone);
    let store = &server.service().store;
    if store
        .get(&key)
        .await
        .with_context(|| format!("cannot read the zone {zone} from the store"))?
        .is_some()
    {
        return Ok(());
    }
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Zone",
        "metadata": { "name": zone },
    });
    for result in server
        .service()
        .apply_manifest(&Identity::system(), &manifest.to_string(), false)
        .await
    {
        result.map_err(|e| anyhow::anyhow!("--zone {zone}: {}", e.message))?;
    }
    tracing::info!(%zone, "created the zone");
    Ok(())
}

/// The URL clients use to reach `listener`.
fn url_of(listener: &TcpListener) -> anyhow::Result<String> {
    let address = listener.local_addr()?;
    let host = if address.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        address.ip().to_string()
    };
    Ok(if address.is_ipv6() {
        format!("https://[{host}]:{}", address.port())
    } else {
        format!("https://{host}:{}", address.port())
    })
}

/// Applies the bootstrap manifest, mints the admin token, saves it in the CLI profile "local"
/// and prints it once.
async fn bootstrap(
    server: &ApiServer,
    url: &str,
    pki: &Pki,
    data_dir: &Path,
    zone: &str,
) -> anyhow::Result<()> {
    let mut failed = false;
    for result in server
        .service()
        .apply_manifest(&Identity::system(), BOOTSTRAP, false)
        .await
    {
        if let Err(e) = result {
            eprintln!("error: bootstrap manifest: {}", e.message);
            failed = true;
        }
    }
    if failed {
        bail!("the bootstrap manifests did not apply");
    }
    let token = server
        .issue_token("admin", ADMIN_TOKEN_LIFETIME, TokenClaims::default())
        .await?;
    let mut config = Profiles::load()?;
    config.profiles.insert(
        "local".into(),
        Profile {
            api_server: url.to_string(),
            token: token.token.clone(),
            ca: Some(std::fs::read_to_string(pki.ca_path())?),
            zone: Some(zone.into()),
            workspace: Some("default".into()),
        },
    );
    config.current.get_or_insert_with(|| "local".into());
    let config_path = config::save(&config)?;
    println!("Dora is up at {url} (data in {})", data_dir.display());
    println!();
    println!(
        "Admin token, shown this once and saved in profile \"local\" of {}:",
        config_path.display()
    );
    println!("  {}", token.token);
    println!();
    println!("Cluster CA for other machines: {}", pki.ca_path().display());
    println!("Next:");
    println!("  dora apply -f examples/process-workload.yaml");
    println!("  dora get workloads");
    println!("  dora events -w");
    Ok(())
}

/// Points the CLI profile "local" at `url` after a restart on another port, when the profile
/// is this zone's: another zone's `dora up` on this machine leaves it alone.
fn update_profile(url: &str, data_dir: &Path, zone: &str, pki: &Pki) -> anyhow::Result<()> {
    let mut config = Profiles::load()?;
    let data = data_dir.display();
    match config.profiles.get_mut("local") {
        Some(profile) if profile.zone.as_deref().unwrap_or("default") == zone => {
            if profile.api_server != url {
                profile.api_server = url.to_string();
                config::save(&config)?;
            }
            println!(
                "Dora is up at {url} (data in {data}); the CLI profile \"local\" points at it"
            );
        }
        _ => println!(
            "Dora is up at {url} (data in {data}) for zone {zone}, not the CLI profile \"local\"'s; \
             reach it with: dora config profile init {zone} --api-server {url} --token TOKEN --ca {}",
            pki.ca_path().display()
        ),
    }
    Ok(())
}

fn certificate_names(listen: IpAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen.is_unspecified() && !listen.is_loopback() {
        names.push(listen.to_string());
    }
    if let Ok(host) = hostname::get()
        && let Some(host) = host.to_str()
        && !host.is_empty()
    {
        names.push(host.to_string());
    }
    names
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => drop(signal.recv().await),
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    components::init_logging(&args.log)?;
    if args.certificate_lifetime < Duration::from_secs(3) {
        bail!("--certificate-lifetime must be at least 3s (30d unless a test needs it short)");
    }
    if let Some(upstream) = args.upstream.clone() {
        return forward(args, &upstream).await;
    }
    let sim = components::sim_config(&args.zone, &args.sim)?;
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    // The node agent's settings are checked before anything starts; it learns the API's
    // address and its credential once the API server is made.
    let node = (!args.no_node)
        .then(|| {
            let api = ApiConfig {
                url: String::new(),
                ca: String::new(),
                token: String::new(),
            };
            let listen = SocketAddr::from(([127, 0, 0, 1], 0));
            node::agent_config(&args.zone, &args.node, api, data_dir.join("node"), listen)
        })
        .transpose()?;
    open_data_dir(
        &data_dir,
        node.as_ref().is_some_and(AgentConfig::runs_as_another_user),
    )?;
    if let Some(node) = &node {
        node.check()?;
    }
    // Listen first, so that a busy port stops the start before anything is created.
    let listener = TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {}; is another `dora up` running? pass --listen ADDR:PORT",
            args.listen
        )
    })?;
    let metrics_listener = args
        .metrics_listen
        .map(|address| {
            TcpListener::bind(address)
                .with_context(|| format!("--metrics-listen: cannot listen on {address}"))
        })
        .transpose()?;
    let url = url_of(&listener)?;
    let secret = load_or_create_secret(&data_dir.join("secret.key"))?;
    let pki = Pki::new(data_dir.join("pki")).with_lifetime(args.certificate_lifetime);
    pki.ensure(&certificate_names(args.listen.ip()))?;
    let store_url = args
        .store
        .unwrap_or_else(|| format!("sqlite:{}", data_dir.join("dora.db").display()));
    let store = dora_store::open(&store_url)
        .await
        .with_context(|| format!("cannot open the store {store_url}"))?;
    let options = Options {
        pki: Some(pki.clone()),
        guard: components::guard_options(&args.guard),
        ..Options::default()
    };
    let server = ApiServer::new(store.clone(), &secret, options).await?;
    if needs_bootstrap(&server).await? {
        bootstrap(&server, &url, &pki, &data_dir, &args.zone).await?;
    } else {
        update_profile(&url, &data_dir, &args.zone, &pki)?;
    }
    ensure_zone(&server, &args.zone).await?;
    tracing::info!(%url, zone = %args.zone, "serving; scheduler, credit system and garbage collector running");
    let stop = CancellationToken::new();
    let mut components = JoinSet::new();
    if let Some(listener) = metrics_listener {
        tracing::info!(address = %listener.local_addr()?, "serving /metrics over plain HTTP");
        let stopped = stop.clone();
        let served = server.metrics_server(listener, async move { stopped.cancelled().await })?;
        components.spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    components.spawn(dora_runtime::run_leader(
        store.clone(),
        components::scheduler_config(&args.zone, &args.scheduling),
        stop.clone(),
    ));
    components.spawn(dora_runtime::run_leader(
        store.clone(),
        components::credit_config(&args.zone, &args.credits),
        stop.clone(),
    ));
    components.spawn(dora_runtime::run_leader(
        store.clone(),
        GcConfig::new(&args.zone),
        stop.clone(),
    ));
    if sim.nodes > 0 {
        let stop = stop.clone();
        let hollow = if args.sim.sim_direct {
            let store = store.clone();
            sim::run_on_store(store, sim, SimHandle::default(), stop).boxed()
        } else {
            // The hollow nodes mint their credentials as an administrator would.
            let token = server
                .issue_token("admin", SIM_MINTING_LIFETIME, TokenClaims::default())
                .await?
                .token;
            let client = dora_nodeagent::api::connect(ApiConfig {
                url: url.clone(),
                ca: std::fs::read_to_string(pki.ca_path())?,
                token,
            })?;
            sim::run_over_api(client, sim, SimHandle::default(), stop).boxed()
        };
        components.spawn(async move {
            if let Err(e) = hollow.await {
                tracing::error!(error = %format!("{e:#}"), "hollow nodes stopped");
            }
        });
    }
    if let Some(mut config) = node {
        config.api = ApiConfig {
            url: url.clone(),
            ca: std::fs::read_to_string(pki.ca_path())?,
            token: String::new(),
        };
        let claims = TokenClaims {
            zone: Some(args.zone.clone()),
            node: Some(config.name.clone()),
            ..TokenClaims::default()
        };
        config.api.token = server
            .issue_token(
                &format!("node:{}", config.name),
                NODE_TOKEN_LIFETIME,
                claims,
            )
            .await?
            .token;
        let stop = stop.clone();
        components.spawn(async move {
            if let Err(e) = dora_nodeagent::run(config, stop).await {
                tracing::error!(error = %format!("{e:#}"), "the node agent stopped");
            }
        });
    }
    let served = server
        .serve(listener, pki.server_config()?, shutdown_signal())
        .await;
    stop.cancel();
    while components.join_next().await.is_some() {}
    served
}

/// `dora up --upstream`: the API server of a zone whose data lives in another zone's store,
/// forwarding to that zone's API server. It uses the cluster's secret and CAs, which the
/// operator copied into the data folder: it mints nothing, so it makes none of its own.
async fn forward(args: UpArgs, upstream: &str) -> anyhow::Result<()> {
    if !args.no_node {
        bail!(
            "--upstream runs no node agent here (its credential would come from a store); pass \
             --no-node and join this machine with `dora node --api-server URL --join-token TOKEN`"
        );
    }
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let copied = |file: &str| -> anyhow::Result<PathBuf> {
        let path = data_dir.join(file);
        if !path.exists() {
            bail!(
                "--upstream: {} is missing; copy secret.key and pki/{{ca,proxy-ca}}.{{pem,key}} \
                 from the data folder of the zone at {upstream} (README: Running several zones)",
                path.display()
            );
        }
        Ok(path)
    };
    for file in [
        "pki/ca.pem",
        "pki/ca.key",
        "pki/proxy-ca.pem",
        "pki/proxy-ca.key",
    ] {
        copied(file)?;
    }
    let secret = load_or_create_secret(&copied("secret.key")?)?;
    open_data_dir(&data_dir, false)?;
    let listener = TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {}; is another `dora up` running? pass --listen ADDR:PORT",
            args.listen
        )
    })?;
    let url = url_of(&listener)?;
    let pki = Pki::new(data_dir.join("pki")).with_lifetime(args.certificate_lifetime);
    pki.ensure(&certificate_names(args.listen.ip()))?;
    let upstream_ca = args.upstream_ca.unwrap_or_else(|| pki.ca_path());
    let options = Options {
        pki: Some(pki.clone()),
        guard: components::guard_options(&args.guard),
        ..Options::default()
    };
    let server = Forwarder::new(upstream, &upstream_ca, &secret, options)?;
    println!(
        "Dora is up at {url} for zone {zone}, forwarding to {upstream} (no store here); the CLI \
         profile \"local\" is left alone. Reach it with: dora config profile init {zone} \
         --api-server {url} --token TOKEN --ca {ca}",
        zone = args.zone,
        ca = pki.ca_path().display()
    );
    tracing::info!(%url, zone = %args.zone, %upstream, "serving, forwarding to the upstream");
    server
        .serve(listener, pki.server_config()?, shutdown_signal())
        .await
}
