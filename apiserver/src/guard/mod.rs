//! The API server's protection against abuse, applied to every request before routing: the
//! client address ([`peer`]), the IP filter that bans addresses failing authentication
//! ([`bans`]) and rate limits per address, user and node ([`limits`]).

mod bans;
mod limits;
mod peer;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use limits::Rate;
pub use peer::TrustedProxy;

use crate::ApiError;
use bans::BanPolicy;
pub(crate) use bans::Bans;
use limits::Limits;
use peer::Proxies;

/// Settings of the IP filter and the rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardOptions {
    /// Failed authentications from one address within `ban_window` that ban it; 0 turns the
    /// IP filter off.
    pub ban_after: u32,
    pub ban_window: Duration,
    /// How long a ban lasts.
    pub ban_time: Duration,
    /// The most addresses the IP filter holds, with recent failures and banned (each).
    pub ban_table_size: usize,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers name the client.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Per client address, before authentication; agents' reports are not counted here.
    pub address_rate: Rate,
    /// Per authenticated user.
    pub user_rate: Rate,
    /// Per node, for requests made with its node credential.
    pub node_rate: Rate,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            ban_after: 3,
            ban_window: Duration::from_secs(1),
            ban_time: Duration::from_secs(60),
            ban_table_size: 100_000,
            trusted_proxies: Vec::new(),
            address_rate: Rate {
                per_second: 1000,
                burst: 2000,
            },
            user_rate: Rate {
                per_second: 500,
                burst: 1000,
            },
            node_rate: Rate {
                per_second: 1000,
                burst: 5000,
            },
        }
    }
}

/// How often expired bans and quiet rate-limit keys are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The filter and limits of one API server (in memory: each server bans on its own).
pub(crate) struct Guard {
    proxies: Proxies,
    pub bans: Bans,
    limits: Limits,
}

impl Guard {
    /// The guard, with a task that drops expired bans and quiet rate-limit keys every second
    /// for as long as the guard lives.
    pub fn start(options: &GuardOptions) -> Arc<Self> {
        let guard = Arc::new(Guard {
            proxies: Proxies::new(&options.trusted_proxies),
            bans: Bans::new(BanPolicy {
                after: options.ban_after,
                window: options.ban_window,
                time: options.ban_time,
                capacity: options.ban_table_size.max(1),
            }),
            limits: Limits::new(options.address_rate, options.user_rate, options.node_rate),
        });
        let alive = Arc::downgrade(&guard);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(guard) = alive.upgrade() else { return };
                guard.bans.sweep();
                guard.limits.sweep();
            }
        });
        guard
    }

    /// Whether `peer` is one of the trusted proxies.
    pub fn is_proxy(&self, peer: IpAddr) -> bool {
        self.proxies.trusts(peer.to_canonical())
    }

    /// Counts a request of an authenticated caller against its user's or node's budget.
    pub fn admit(&self, identity: &crate::Identity) -> Result<(), Refusal> {
        self.limits.admit(identity)
    }
}

/// A refusal that tells when to retry: 403 for a banned address, 429 past a rate limit.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub error: ApiError,
    pub retry_after: Duration,
}

impl Refusal {
    fn rate_limited(message: String, retry_after: Duration) -> Self {
        Refusal {
            error: ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RateLimited", message),
            retry_after,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(limits::retry_after_secs(self.retry_after)),
        );
        response
    }
}

/// Marks a response that refused credentials without a 401 (a join token used for another
/// zone): the IP filter counts it as a failed authentication.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CredentialsRefused;

/// `error` as a response that counts as a failed authentication.
pub(crate) fn refuse_credentials(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.extensions_mut().insert(CredentialsRefused);
    response
}

/// Whether a request is a node agent's report or heartbeat: limited per node once
/// authenticated, never per address (agents share addresses with users).
fn is_report(request: &Request) -> bool {
    request.method() == Method::PUT && request.uri().path().ends_with("/report")
}

/// The client's address as the IP filter sees it, in the extensions of every request that
/// passed it: what a forwarding API server tells its upstream in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddress(pub IpAddr);

/// The middleware: refuses banned addresses and requests past the address's rate limit
/// before anything else is done, and records failed authentications. Without the peer's
/// address (a router served without connect info) requests pass unfiltered.
pub(crate) async fn filter(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return next.run(request).await;
    };
    let address = guard.proxies.client(peer.ip(), request.headers());
    request.extensions_mut().insert(ClientAddress(address));
    if let Some(left) = guard.bans.check(address) {
        metrics::counter!("dora_api_refused_total", "reason" => "banned").increment(1);
        return Refusal {
            error: ApiError::new(
                StatusCode::FORBIDDEN,
                "Banned",
                format!(
                    "address {address} is banned after repeated failed authentications; retry in {} s, or ask an administrator to lift the ban (dora ban lift {address})",
                    limits::retry_after_secs(left)
                ),
            ),
            retry_after: left,
        }
        .into_response();
    }
    if !is_report(&request)
        && let Err(refusal) = guard.limits.admit_address(address)
    {
        return refusal.into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED
        || response.extensions().get::<CredentialsRefused>().is_some()
    {
        guard.bans.fail(address);
    }
    response
}
