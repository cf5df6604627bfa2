//! Dora's state: the `Store` trait over the resource tables, the change feed, events, versions,
//! actions and leases, with an embedded SQLite backend and a CQL (ScyllaDB/Cassandra) backend. Every backend must pass [`conformance`].

pub mod conformance;
pub mod cql;
mod deletion;
mod error;
mod key;
mod meta;
mod open;
mod records;
mod row;
pub mod sqlite;
mod store;

pub use deletion::Deletion;
pub use error::StoreError;
pub use key::{KeyParts, ObjectKey, Table};
pub use meta::{MetaWrite, RowMeta};
pub use open::open;
pub use records::{
    ActionRecord, Change, ChangeFilter, ChangeOp, Cursor, Event, EventQuery, EventType, Fence,
    Lease, VersionRecord,
};
pub use row::{Columns, ListQuery, Page, Precondition, Row, SpecOutcome, SpecWrite, StatusColumn};
pub use store::Store;

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
