//! The server components run on their own: `dora scheduler`, `dora creditsys`, `dora gc`,
//! `dora sim`.

use std::sync::Arc;

use anyhow::Context;
use dora_controller::creditsys::CreditConfig;
use dora_controller::gc::GcConfig;
use dora_controller::scheduler::SchedulerConfig;
use dora_nodeagent::sim::{self, SimConfig, SimHandle};
use dora_runtime::stop_on_signal;
use dora_store::Store;

use dora_apiserver::{GuardOptions, Rate};

use crate::args::{
    CreditArgs, CreditsysArgs, GcArgs, Global, GuardArgs, LogArgs, LogFormat, SchedulerArgs,
    SchedulingArgs, SimArgs, SimOptions, StoreArgs,
};

/// rustls warns of every odd ClientHello it decodes, such as one that names the server by IP
/// address in SNI (RFC 6066 forbids it; `openssl s_client -servername IP` and some Java and
/// .NET clients send it): rustls ignores that name and the handshake goes on, so the warning
/// tells of the peer, not of a fault here, and any client could add a log line per
/// connection. Only errors of that module are logged unless `--log-level` names rustls.
const CLIENT_HELLO_QUIRKS: &str = "rustls::msgs::handshake=error";

/// Logs to stderr as text or JSON, filtered by `--log-level` (or `RUST_LOG`).
pub fn init_logging(log: &LogArgs) -> anyhow::Result<()> {
    let mut filter = tracing_subscriber::EnvFilter::try_new(&log.log_level).map_err(|e| {
        anyhow::anyhow!(
            "--log-level (or RUST_LOG) {:?}: {e}; expected a level such as info or debug, or directives such as info,dora_runtime=debug",
            log.log_level
        )
    })?;
    if !log.log_level.contains("rustls") {
        filter = filter.add_directive(CLIENT_HELLO_QUIRKS.parse()?);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
}

async fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    init_logging(&args.log)?;
    dora_store::open(&args.store)
        .await
        .with_context(|| format!("cannot open the store {}", args.store))
}

pub fn credit_config(zone: &str, args: &CreditArgs) -> CreditConfig {
    let mut config = CreditConfig::new(zone);
    config.reset_day = args.credit_reset_day;
    config.slice = args.credit_slice;
    config.period = args.credit_period;
    config
}

/// The scheduler of `zone`, as the command line sets it.
pub fn scheduler_config(zone: &str, args: &SchedulingArgs) -> SchedulerConfig {
    let mut config = SchedulerConfig::new(zone);
    config.node_grace = args.node_grace;
    config.reschedule_after = args.reschedule_after;
    config.restart_backoff = args.restart_backoff;
    config
}

/// The API server's IP filter and rate limits from the command line.
pub fn guard_options(args: &GuardArgs) -> GuardOptions {
    GuardOptions {
        ban_after: args.ban_after,
        ban_window: args.ban_window,
        ban_time: args.ban_time,
        ban_table_size: args.ban_table_size,
        trusted_proxies: args.trusted_proxies.clone(),
        address_rate: Rate {
            per_second: args.address_rate_limit,
            burst: args.address_burst,
        },
        user_rate: Rate {
            per_second: args.user_rate_limit,
            burst: args.user_burst,
        },
        node_rate: Rate {
            per_second: args.node_rate_limit,
            burst: args.node_burst,
        },
    }
}

/// Hollow-node settings from the command line.
pub fn sim_config(zone: &str, args: &SimOptions) -> anyhow::Result<SimConfig> {
    let mut config = SimConfig::new(zone, args.sim_nodes);
    config.cpus = args.sim_cpus;
    config.memory_bytes =
        serde_json::from_value::<dora_crds::Bytes>(args.sim_memory.clone().into())
            .map_err(|e| anyhow::anyhow!("--sim-memory: {e}"))?
            .0;
    config.gpus = dora_nodeagent::hardware::parse_gpus(&args.sim_gpus)
        .map_err(|e| anyhow::anyhow!("--sim-gpus: {e}; expected e.g. 8xA100"))?;
    config.heartbeat = args.sim_heartbeat;
    config.start_delay = args.sim_start_delay;
    Ok(config)
}

pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let store = open(&args.store).await?;
    let config = scheduler_config(&args.store.zone, &args.scheduling);
    dora_runtime::run_leader(store, config, stop_on_signal()).await;
    Ok(())
}

pub async fn creditsys(args: CreditsysArgs) -> anyhow::Result<()> {
    let store = open(&args.store).await?;
    let config = credit_config(&args.store.zone, &args.credits);
    dora_runtime::run_leader(store, config, stop_on_signal()).await;
    Ok(())
}

pub async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let store = open(&args.store).await?;
    let config = GcConfig::new(&args.store.zone);
    dora_runtime::run_leader(store, config, stop_on_signal()).await;
    Ok(())
}

/// `dora sim`: through the API of the CLI profile, or straight to `--store`.
pub async fn sim(global: &Global, args: SimArgs) -> anyhow::Result<()> {
    init_logging(&args.log)?;
    let zone = global.zone.clone().unwrap_or_else(|| "default".into());
    let mut config = sim_config(&zone, &args.sim)?;
    config.prefix = args.prefix;
    let stop = stop_on_signal();
    let handle = SimHandle::default();
    let ran = match args.store {
        Some(url) => {
            let store = dora_store::open(&url)
                .await
                .with_context(|| format!("cannot open the store {url}"))?;
            sim::run_on_store(store, config, handle, stop).await
        }
        None => {
            let client = crate::client::Client::new(global)?;
            sim::run_over_api((*client).clone(), config, handle, stop).await
        }
    };
    ran.context("hollow nodes stopped")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn up_guard(args: &[&str]) -> GuardOptions {
        let cli = Cli::try_parse_from([&["dora", "up"], args].concat()).unwrap();
        let Command::Up(up) = cli.command else {
            unreachable!()
        };
        guard_options(&up.guard)
    }

    #[test]
    fn the_flags_default_to_the_servers_defaults() {
        assert_eq!(up_guard(&[]), GuardOptions::default());
    }

    #[test]
    fn trusted_proxies_are_a_comma_separated_list() {
        let options = up_guard(&["--trusted-proxies", "10.0.0.0/8,::1", "--ban-after", "0"]);
        let proxies: Vec<String> = options
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
        assert_eq!(options.ban_after, 0);
        let error = Cli::try_parse_from(["dora", "up", "--trusted-proxies", "proxy.local"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("not an IP address or CIDR range"), "{error}");
    }
}
