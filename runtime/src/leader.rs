//! Leader election per (zone, component) through the store's lease, and the one way the
//! components that lead a zone start: [`run_leader`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dora_store::{Fence, Lease, Store};
use tokio_util::sync::CancellationToken;

/// How a lease is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Who this process is, as recorded in the lease row.
    pub holder: String,
    /// How long a lease lasts without renewal: a standby takes over this long after the
    /// holder stops.
    pub ttl: Duration,
}

impl LeaseConfig {
    /// A lease for `holder` with the default TTL of 15 s.
    pub fn new(holder: impl Into<String>) -> Self {
        LeaseConfig {
            holder: holder.into(),
            ttl: Duration::from_secs(15),
        }
    }
}

impl Default for LeaseConfig {
    /// A lease for this process ([`holder_name`]) with the default TTL.
    fn default() -> Self {
        LeaseConfig::new(holder_name())
    }
}

/// A component of which one replica per zone works at a time (Dora's scheduler, credit system
/// and garbage collector): its settings, which say where it leads and how it holds the lease.
pub trait Leader: Clone + Send + Sync + 'static {
    /// Its name in leases, logs and metrics.
    const COMPONENT: &'static str;

    /// The zone it leads.
    fn zone(&self) -> &str;

    /// How it holds the lease.
    fn lease(&self) -> &LeaseConfig;

    /// Works while this replica leads: `fence` goes with its writes, `lost` is cancelled when
    /// the lease is lost (the future is dropped then too).
    fn lead(
        self,
        store: Arc<dyn Store>,
        fence: Fence,
        lost: CancellationToken,
    ) -> impl Future<Output = ()> + Send;
}

/// Runs `leader` until `stop` is cancelled: a standby until it holds the lease of
/// [`Leader::COMPONENT`] in its zone, then leading until it loses it, as often as it wins it.
pub async fn run_leader<L: Leader>(store: Arc<dyn Store>, leader: L, stop: CancellationToken) {
    let zone = leader.zone().to_string();
    let lease = leader.lease().clone();
    run_elected(
        store.clone(),
        &zone,
        L::COMPONENT,
        lease,
        stop,
        |fence, lost| leader.clone().lead(store.clone(), fence, lost),
    )
    .await;
}

/// A unique holder name for this process: host, pid and a random suffix.
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "dora".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{suffix}", std::process::id())
}

/// Runs `work` whenever this process holds the lease of `component` in `zone`, until `stop`
/// is cancelled. `work` gets the fence to attach to its writes and a token that is cancelled
/// when leadership is lost (the work future is also dropped then). The lease is given up on
/// shutdown so that a standby takes over at once.
pub async fn run_elected<F, Fut>(
    store: Arc<dyn Store>,
    zone: &str,
    component: &str,
    config: LeaseConfig,
    stop: CancellationToken,
    mut work: F,
) where
    F: FnMut(Fence, CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let renew_every = config.ttl / 3;
    while !stop.is_cancelled() {
        let lease = match store
            .acquire_lease(zone, component, &config.holder, config.ttl)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                sleep_or_stop(renew_every, &stop).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(%zone, %component, error = %e, "cannot reach the lease");
                sleep_or_stop(renew_every, &stop).await;
                continue;
            }
        };
        tracing::info!(%zone, %component, epoch = lease.epoch, holder = %config.holder, "leading");
        metrics::gauge!("dora_leader", "component" => component.to_string(), "zone" => zone.to_string()).set(1.0);
        let lost = stop.child_token();
        let renewing = renew(&*store, lease, &config, renew_every, lost.clone());
        let held = tokio::select! {
            () = work(renewing.1.clone(), lost.clone()) => true,
            last = renewing.0 => last.is_some(),
        };
        lost.cancel();
        metrics::gauge!("dora_leader", "component" => component.to_string(), "zone" => zone.to_string()).set(0.0);
        if stop.is_cancelled() && held {
            let lease = Lease {
                zone: zone.to_string(),
                component: component.to_string(),
                holder: config.holder.clone(),
                epoch: renewing.1.epoch,
                expires: 0,
            };
            if let Err(e) = store.release_lease(&lease).await {
                tracing::warn!(%zone, %component, error = %e, "could not give the lease up");
            }
            return;
        }
        if !held {
            tracing::warn!(%zone, %component, "lost the lease; standing by");
        }
    }
}

/// Renews `lease` until renewal fails past its expiry (returns `None`) or `stop` is cancelled
/// (returns the last lease). Also returns the fence of the lease.
fn renew<'a>(
    store: &'a dyn Store,
    lease: Lease,
    config: &'a LeaseConfig,
    every: Duration,
    stop: CancellationToken,
) -> (impl Future<Output = Option<Lease>> + 'a, Fence) {
    let fence = lease.fence();
    let future = async move {
        let mut lease = lease;
        loop {
            if sleep_or_stop(every, &stop).await {
                return Some(lease);
            }
            match store
                .acquire_lease(&lease.zone, &lease.component, &config.holder, config.ttl)
                .await
            {
                Ok(Some(renewed)) if renewed.epoch == lease.epoch => lease = renewed,
                Ok(_) => return None,
                Err(e) if dora_store::now_millis() + (every.as_millis() as i64) < lease.expires => {
                    tracing::warn!(error = %e, "lease renewal failed; retrying");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease renewal failed until the lease ran out");
                    return None;
                }
            }
        }
    };
    (future, fence)
}

/// Sleeps for `duration`; returns true if `stop` was cancelled first.
async fn sleep_or_stop(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(duration) => false,
    }
}
