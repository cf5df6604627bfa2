use std::sync::Arc;

use crate::cql::{CqlConfig, CqlStore};
use crate::sqlite::SqliteStore;
use crate::{Store, StoreError};

/// Opens the store a URL names: `sqlite:PATH` (embedded) or
/// `cql://HOST:PORT[,HOST:PORT...]/KEYSPACE[?replication=DC:RF&consistency=quorum|local_quorum&datacenter=DC&lookback=30s]`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(Arc::new(SqliteStore::open(path)?));
    }
    if url.starts_with("cql://") {
        return Ok(Arc::new(
            CqlStore::connect(CqlConfig::from_url(url)?).await?,
        ));
    }
    Err(StoreError::Unavailable(format!(
        "unknown store {url:?}; use sqlite:PATH or cql://HOST:PORT[,HOST:PORT]/KEYSPACE"
    )))
}
