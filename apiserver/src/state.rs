use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::request::Parts;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsConfig;
use dora_crds::Kind;
use dora_store::{ObjectKey, Store};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::issued::LastUses;
use crate::token::VerifiedTokens;
use crate::{
    ApiError, Directory, Identity, IssuedToken, Service, TokenClaims, TokenKey, VerifiedToken,
};

/// How many applies read and parse their manifests at once; more wait their turn.
const MANIFESTS_AT_ONCE: usize = 4;

/// Limits and settings of the API server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest lifetime a token may be given.
    pub max_token_lifetime: Duration,
    /// The cluster PKI: issues node certificates and authenticates the API to nodes. Without
    /// it nodes cannot get certificates and container operations are unavailable.
    pub pki: Option<crate::Pki>,
    /// How often the last use of each token is written to its record.
    pub token_use_flush: Duration,
    /// The IP filter and rate limits.
    pub guard: crate::GuardOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body_bytes: 8 << 20,
            max_token_lifetime: Duration::from_secs(366 * 86_400),
            pki: None,
            token_use_flush: Duration::from_secs(60),
            guard: crate::GuardOptions::default(),
        }
    }
}

/// Shared by every request.
pub(crate) struct State {
    pub service: Service,
    pub tokens: TokenKey,
    pub verified: VerifiedTokens,
    /// When each token was last used, written to its record every minute.
    pub last_uses: Arc<LastUses>,
    /// Applies that may read and parse a manifest at once: what large manifests cost in memory
    /// stays bounded however many arrive together.
    pub manifests: tokio::sync::Semaphore,
    pub options: Options,
    pub metrics: PrometheusHandle,
    pub guard: Arc<crate::guard::Guard>,
    /// Cancelled when the server starts shutting down: open watches end with an ERROR line
    /// telling clients to watch again.
    pub stopping: CancellationToken,
    /// The way to node agents.
    pub nodes: crate::nodes::Nodes,
    /// Login codes of `dora console` not yet used.
    pub login_codes: crate::session::LoginCodes,
}

pub(crate) type AppState = Arc<State>;

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

impl State {
    /// The identity behind the request's bearer token, or else its console session cookie
    /// (for which the request must come from the console: [`crate::session::check_origin`]).
    pub fn authenticate(&self, request: &Parts) -> Result<Identity, ApiError> {
        self.identify(self.verify(request)?)
    }

    /// The request's bearer token, or else its console session's, verified.
    pub fn verify(&self, request: &Parts) -> Result<VerifiedToken, ApiError> {
        Ok(match self.verified.bearer(&self.tokens, &request.headers) {
            Some(verified) => verified?,
            None => {
                let token = crate::session::cookie(&request.headers).ok_or_else(|| {
                    ApiError::unauthorized(
                        "no bearer token; log in with `dora config profile init`",
                    )
                })?;
                crate::session::check_origin(request)?;
                self.verified.verify(&self.tokens, token).ok_or_else(|| {
                    ApiError::unauthorized("the console session has ended; log in again")
                })?
            }
        })
    }

    /// Reads the token's user from the store when this server's directory does not know it:
    /// a user made through another zone's API server reaches this one's directory through the
    /// change feed a moment later, and their token must not be refused meanwhile (three
    /// refusals ban the address).
    pub async fn learn_user(&self, verified: &VerifiedToken) {
        let directory = &self.service.directory;
        if verified.claims.node.is_some()
            || verified.claims.join
            || directory.has_user(&verified.subject)
        {
            return;
        }
        let key = ObjectKey::new(Kind::User, "", "", &verified.subject);
        if let Ok(Some(row)) = self.service.store.get(&key).await {
            directory.put(&row);
        }
    }

    /// The identity of a verified token, if it may still be used.
    pub fn identify(&self, verified: VerifiedToken) -> Result<Identity, ApiError> {
        if self.service.directory.is_revoked(&verified.token_id) {
            return Err(revoked());
        }
        self.last_uses.touch(&verified.token_id);
        if verified.claims.node.is_some() || verified.claims.join {
            let zone = verified.claims.zone.ok_or_else(|| {
                ApiError::unauthorized("a node credential or join token must name its zone")
            })?;
            return Ok(Identity {
                user: verified.subject,
                zone: Some(zone),
                workspace: None,
                expires: Some(verified.expires),
                system: false,
                node: verified.claims.node,
                joining: verified.claims.join,
                token: Some(verified.token_id),
            });
        }
        let directory = &self.service.directory;
        let (zone, workspace) = directory
            .defaults(&verified.subject)
            .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
        let created = directory
            .user_created(&verified.subject)
            .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
        if issued_before(verified.issued_at, created) {
            return Err(ApiError::unauthorized(
                "the token was issued to an earlier user of the same name; ask for a new token",
            ));
        }
        Ok(Identity {
            user: verified.subject,
            zone: verified.claims.zone.or(zone),
            workspace: verified.claims.workspace.or(workspace),
            expires: Some(verified.expires),
            system: false,
            node: None,
            joining: false,
            token: Some(verified.token_id),
        })
    }

    /// Mints a token and records it, so that it can be listed and revoked.
    pub async fn issue(
        &self,
        subject: &str,
        lifetime: Duration,
        claims: TokenClaims,
    ) -> Result<IssuedToken, ApiError> {
        let issued = self
            .tokens
            .issue(subject, lifetime, claims.clone())
            .map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal",
                    e.to_string(),
                )
            })?;
        crate::issued::record(&self.service, &issued, &claims).await?;
        Ok(issued)
    }

    /// Checks that `identity` may still use its token: for requests that last (watches).
    pub fn recheck(&self, identity: &Identity) -> Result<(), ApiError> {
        if identity.system {
            return Ok(());
        }
        if identity
            .expires
            .is_some_and(|expires| expires <= crate::token::now_secs())
        {
            return Err(ApiError::unauthorized(
                "the token has expired; get a new one with `dora token create` and watch again",
            ));
        }
        if identity
            .token
            .as_deref()
            .is_some_and(|id| self.service.directory.is_revoked(id))
        {
            return Err(revoked());
        }
        let agent = identity.node.is_some() || identity.joining;
        if !agent && !self.service.directory.has_user(&identity.user) {
            return Err(ApiError::unauthorized("the token's user no longer exists"));
        }
        Ok(())
    }
}

fn revoked() -> ApiError {
    ApiError::unauthorized("the token was revoked; ask for a new one with `dora token create`")
}

/// Whether a token issued at `issued_at` (Unix seconds) predates a user created at `created`
/// (Unix milliseconds), beyond the clock skew tolerated between servers.
fn issued_before(issued_at: u64, created: i64) -> bool {
    let created_secs = u64::try_from(created.div_euclid(1000)).unwrap_or_default();
    issued_at.saturating_add(crate::token::LEEWAY_SECS) < created_secs
}

/// A running-to-be API server over a store.
pub struct ApiServer {
    state: AppState,
}

impl ApiServer {
    /// Loads the directory of users and roles and starts following the change feed.
    pub async fn new(
        store: Arc<dyn Store>,
        secret: &[u8],
        options: Options,
    ) -> anyhow::Result<Self> {
        let (directory, cursor) = Directory::load(store.as_ref()).await?;
        tokio::spawn(directory.clone().follow(store.clone(), cursor));
        let service = Service {
            store,
            directory,
            schedulers: Default::default(),
        };
        let last_uses = Arc::new(LastUses::default());
        tokio::spawn(crate::issued::maintain(
            service.clone(),
            last_uses.clone(),
            options.token_use_flush,
        ));
        let state = State {
            service,
            tokens: TokenKey::from_secret(secret)?,
            verified: VerifiedTokens::default(),
            last_uses,
            manifests: tokio::sync::Semaphore::new(MANIFESTS_AT_ONCE),
            guard: crate::guard::Guard::start(&options.guard),
            nodes: crate::nodes::Nodes::new(options.pki.clone()),
            options,
            metrics: metrics_handle(),
            stopping: CancellationToken::new(),
            login_codes: Default::default(),
        };
        Ok(ApiServer {
            state: Arc::new(state),
        })
    }

    /// Apply and delete without HTTP (used for the bootstrap).
    pub fn service(&self) -> &Service {
        &self.state.service
    }

    /// The shared state, for tests of the routes.
    #[cfg(test)]
    pub(crate) fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The token key. Tokens minted with it directly have no record: they cannot be listed or
    /// revoked; [`ApiServer::issue_token`] makes both.
    pub fn tokens(&self) -> &TokenKey {
        &self.state.tokens
    }

    /// Mints a token (the bootstrap admin's, the local node's credential) and records it, so
    /// that it can be listed and revoked.
    pub async fn issue_token(
        &self,
        subject: &str,
        lifetime: Duration,
        claims: TokenClaims,
    ) -> anyhow::Result<IssuedToken> {
        self.state
            .issue(subject, lifetime, claims)
            .await
            .map_err(|e| anyhow::anyhow!("cannot issue a token: {}", e.message))
    }

    /// The HTTP routes. The IP filter and rate limits need each request's peer address: serve
    /// them with `into_make_service_with_connect_info::<SocketAddr>()`, as [`ApiServer::serve`]
    /// does.
    pub fn router(&self) -> axum::Router {
        crate::routes::router(self.state.clone())
    }

    /// `GET /metrics` alone, over plain HTTP and without a token, on `listener` until
    /// `shutdown`: for a scraper on an address the operator chose (`dora up --metrics-listen`).
    pub fn metrics_server(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<impl Future<Output = std::io::Result<()>> + Send + 'static> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = crate::routes::metrics_router(self.state.clone());
        Ok(axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .into_future())
    }

    /// Serves HTTPS on `listener` until `shutdown` completes, then ends open watches (each with
    /// an ERROR line) and drains for a few seconds.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopping = self.state.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.cancel();
        };
        serve(self.router(), listener, tls, shutdown).await
    }
}

/// Serves `app` over HTTPS on `listener` until `shutdown` completes, then drains for a few
/// seconds.
pub(crate) async fn serve(
    app: axum::Router,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    // Answers and watch lines go out at once, not after the client's delayed ACK (~40 ms).
    axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls))?
        .map(|tls| tls.acceptor(NoDelayAcceptor::new()))
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_older_than_their_user_are_refused() {
        let created = 1_000_000_500; // milliseconds
        assert!(!issued_before(1_000_000, created));
        assert!(!issued_before(
            1_000_000 - crate::token::LEEWAY_SECS,
            created
        ));
        assert!(issued_before(
            1_000_000 - crate::token::LEEWAY_SECS - 1,
            created
        ));
        assert!(!issued_before(0, 0));
    }
}
