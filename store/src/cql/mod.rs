//! The distributed backend: ScyllaDB or Apache Cassandra over CQL, with the same statements on
//! both. Compare-and-set uses lightweight transactions; the change feed is a table partitioned
//! by zone, kind and minute, read up to "now minus a skew allowance", and read again over a
//! look-back window behind a reader's cursor for entries that became visible later than that.

mod config;
mod ops;
mod recent;
mod rounds;
mod schema;
mod statements;

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tokio::sync::watch;

pub use config::CqlConfig;
use recent::Recent;
use rounds::Rounds;
use statements::Statements;

use crate::StoreError;

/// The CQL store.
#[derive(Clone)]
pub struct CqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Arc<Session>,
    rounds: Rounds,
    recent: Recent,
    statements: Statements,
    config: CqlConfig,
    notify: watch::Sender<u64>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl CqlStore {
    /// Connects (retrying with backoff while the cluster is unreachable), creates the keyspace
    /// and tables if missing, and prepares every statement.
    pub async fn connect(config: CqlConfig) -> Result<Self, StoreError> {
        let nodes = config.nodes.join(",");
        let connect = || async {
            let mut builder = SessionBuilder::new()
                .known_nodes(&config.nodes)
                .connection_timeout(Duration::from_secs(5));
            if let Some(datacenter) = &config.datacenter {
                // The zone's datacenter only: LOCAL_SERIAL is one Paxos for all its writers.
                let policy = DefaultPolicy::builder()
                    .prefer_datacenter(datacenter.clone())
                    .permit_dc_failover(false)
                    .build();
                let profile = ExecutionProfile::builder()
                    .load_balancing_policy(policy)
                    .build();
                builder = builder.default_execution_profile_handle(profile.into_handle());
            }
            builder.build().await
        };
        let session = connect
            .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(500)).with_max_delay(Duration::from_secs(5)).with_max_times(config.connect_attempts.saturating_sub(1)))
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "the CQL cluster at {nodes} is unreachable; retrying"))
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach the CQL cluster at {nodes}: {e}")))?;
        for statement in schema::ddl(&config) {
            session
                .query_unpaged(statement.as_str(), &[])
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!(
                        "cannot create the schema (`{statement}`): {e}"
                    ))
                })?;
        }
        schema::upgrade(&session, &config).await?;
        session
            .await_schema_agreement()
            .await
            .map_err(unavailable)?;
        let statements = Statements::prepare(&session, &config).await?;
        let (notify, _) = watch::channel(0);
        let session = Arc::new(session);
        Ok(CqlStore {
            inner: Arc::new(Inner {
                rounds: Rounds::start(session.clone(), &config, &statements.lease),
                recent: Recent::new(config.skew.as_millis() as i64),
                session,
                statements,
                config,
                notify,
            }),
        })
    }

    /// Connects to the keyspace `url` names and drops it (see [`CqlStore::drop_keyspace`]).
    pub async fn drop_keyspace_at(url: &str) -> Result<(), StoreError> {
        Self::connect(CqlConfig::from_url(url)?)
            .await?
            .drop_keyspace()
            .await
    }

    /// Drops the keyspace and everything in it (for tests that make one keyspace each).
    pub async fn drop_keyspace(&self) -> Result<(), StoreError> {
        // The keyspace name was validated as an identifier when the config was made.
        let statement = format!("DROP KEYSPACE IF EXISTS {}", self.inner.config.keyspace);
        self.inner
            .session
            .query_unpaged(statement, &[])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Rows of an idempotent read, retried with backoff on transient failures.
    async fn read(
        &self,
        statement: &PreparedStatement,
        values: &[CqlValue],
    ) -> Result<Vec<Row>, StoreError> {
        let attempt = || async {
            let result = self
                .inner
                .session
                .execute_unpaged(statement, values)
                .await
                .map_err(unavailable)?;
            let rows = result.into_rows_result().map_err(unavailable)?;
            rows.rows::<Row>()
                .map_err(unavailable)?
                .collect::<Result<Vec<Row>, _>>()
                .map_err(unavailable)
        };
        attempt.retry(transient_retries()).await
    }

    /// Every row of a read, page by page.
    async fn read_pages(
        &self,
        statement: &PreparedStatement,
        values: Vec<CqlValue>,
        mut keep: impl FnMut(Row) -> bool,
    ) -> Result<(), StoreError> {
        use futures::StreamExt;
        let pager = self
            .inner
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(unavailable)?;
        let mut rows = pager.rows_stream::<Row>().map_err(unavailable)?;
        while let Some(row) = rows.next().await {
            if !keep(row.map_err(unavailable)?) {
                break;
            }
        }
        Ok(())
    }

    /// A write that may be repeated without harm, retried with backoff on transient failures.
    async fn write_idempotent(
        &self,
        statement: &PreparedStatement,
        values: &[CqlValue],
    ) -> Result<(), StoreError> {
        let attempt = || async {
            self.inner
                .session
                .execute_unpaged(statement, values)
                .await
                .map_err(unavailable)?;
            Ok(())
        };
        attempt.retry(transient_retries()).await
    }

    /// A lightweight transaction on its own: whether it applied.
    async fn lwt(
        &self,
        statement: &PreparedStatement,
        values: &[CqlValue],
    ) -> Result<bool, StoreError> {
        rounds::applied(self.inner.session.execute_unpaged(statement, values).await)
    }

    /// A compare-and-set of the row `key`, grouped with others to its partition: whether it
    /// applied. With a fence, refused unless the lease epoch is current just before it is sent.
    async fn cas(
        &self,
        key: &crate::ObjectKey,
        statement: &PreparedStatement,
        values: Vec<CqlValue>,
        fence: Option<&crate::Fence>,
    ) -> Result<bool, StoreError> {
        self.inner.rounds.write(key, statement, values, fence).await
    }

    /// Wakes local watchers.
    fn wake(&self) {
        // At once for watchers reading early entries, and again once the write is final.
        self.inner.notify.send_modify(|n| *n += 1);
        let notify = self.inner.notify.clone();
        let skew = self.inner.config.skew;
        tokio::spawn(async move {
            tokio::time::sleep(skew).await;
            notify.send_modify(|n| *n += 1);
        });
    }
}

/// Backoff for operations that may be repeated: a few quick tries.
fn transient_retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(3)
}

fn text(value: &str) -> CqlValue {
    CqlValue::Text(value.to_string())
}

fn big(value: i64) -> CqlValue {
    CqlValue::BigInt(value)
}

fn column_text(row: &Row, index: usize) -> Result<String, StoreError> {
    match row.columns.get(index) {
        Some(Some(CqlValue::Text(s) | CqlValue::Ascii(s))) => Ok(s.clone()),
        Some(None) => Ok(String::new()),
        other => Err(StoreError::Corrupt(format!(
            "column {index}: expected text, got {other:?}"
        ))),
    }
}

fn column_int(row: &Row, index: usize) -> Result<i64, StoreError> {
    match row.columns.get(index) {
        Some(Some(CqlValue::BigInt(n))) => Ok(*n),
        Some(None) => Ok(0),
        other => Err(StoreError::Corrupt(format!(
            "column {index}: expected bigint, got {other:?}"
        ))),
    }
}
