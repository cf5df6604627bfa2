//! CQL DDL: the seed's tables with their partition and clustering keys, the container indexes,
//! the change feed and leases. Only constant text and validated identifiers go into it.

use scylla::client::session::Session;

use super::{CqlConfig, unavailable};
use crate::{StoreError, Table};

/// Columns every resource table has after its key.
pub(super) const COMMON_COLUMNS: [&str; 15] = [
    "uid",
    "version",
    "generation",
    "spec_hash",
    "owner",
    "labels",
    "created",
    "updated",
    "resource",
    "desired",
    "computed",
    "computed_version",
    "observed",
    "observed_version",
    "meta",
];

fn common_ddl() -> String {
    COMMON_COLUMNS
        .iter()
        .map(|c| {
            let kind = if matches!(
                *c,
                "version"
                    | "generation"
                    | "created"
                    | "updated"
                    | "computed_version"
                    | "observed_version"
            ) {
                "bigint"
            } else {
                "text"
            };
            format!("{c} {kind}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `PRIMARY KEY ((partition), clustering...)` of a table.
fn primary_key(table: Table) -> &'static str {
    match table {
        Table::Resources => "PRIMARY KEY ((kind), name)",
        Table::WorkspacedResources => "PRIMARY KEY ((kind, workspace), name)",
        Table::ZonedResources => "PRIMARY KEY ((kind, zone), name)",
        Table::ZonedWorkspacedResources | Table::Containers => {
            "PRIMARY KEY ((kind, zone), workspace, name)"
        }
    }
}

/// Statements creating the keyspace and every table, in order; all idempotent.
pub(super) fn ddl(config: &CqlConfig) -> Vec<String> {
    let ks = &config.keyspace;
    let replication: Vec<String> = config
        .replication
        .iter()
        .map(|(dc, rf)| format!("'{dc}': {rf}"))
        .collect();
    let mut statements = vec![format!(
        "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', {}}}",
        replication.join(", ")
    )];
    for table in Table::ALL {
        let keys: Vec<String> = table
            .key_columns()
            .iter()
            .map(|c| format!("{c} text"))
            .collect();
        let extra = if table == Table::Containers {
            "workload text, node text, "
        } else {
            ""
        };
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{} ({}, {extra}{}, {})",
            table.name(),
            keys.join(", "),
            common_ddl(),
            primary_key(table)
        ));
    }
    let changes_ttl = config.changes_ttl.as_secs();
    let events_ttl = config.events_ttl.as_secs();
    statements.extend([
        format!("CREATE INDEX IF NOT EXISTS containers_by_workload ON {ks}.containers (workload)"),
        format!("CREATE INDEX IF NOT EXISTS containers_by_node ON {ks}.containers (node)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.versions (zone text, resource_kind text, workspace text, name text, generation bigint, \
             scope text, resource text, spec_hash text, time bigint, PRIMARY KEY ((zone, resource_kind), workspace, name, generation))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.events (zone text, resource_kind text, id text, workspace text, name text, type text, \
             reason text, message text, component text, time bigint, PRIMARY KEY ((zone, resource_kind), id)) \
             WITH default_time_to_live = {events_ttl} AND gc_grace_seconds = 0"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.actions (zone text, resource_kind text, id text, scope text, workspace text, name text, \
             destination text, action text, payload text, created bigint, expires bigint, PRIMARY KEY ((zone, resource_kind), id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.changes (zone text, kind text, bucket bigint, id text, scope text, workspace text, \
             name text, op text, columns text, version bigint, at bigint, PRIMARY KEY ((zone, kind, bucket), id)) \
             WITH default_time_to_live = {changes_ttl} AND gc_grace_seconds = 0 AND compaction = {{'class': 'TimeWindowCompactionStrategy', \
             'compaction_window_unit': 'MINUTES', 'compaction_window_size': 10}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.leases (zone text, component text, holder text, epoch bigint, expires bigint, \
             PRIMARY KEY ((zone, component)))"
        ),
    ]);
    statements
}

/// Adds the columns that tables made by an earlier Dora lack: `meta` (annotations, owner
/// references, finalizers). CQL has no `ADD IF NOT EXISTS`, so the schema is asked first.
pub(super) async fn upgrade(session: &Session, config: &CqlConfig) -> Result<(), StoreError> {
    let ks = &config.keyspace;
    for table in Table::ALL {
        let present = session
            .query_unpaged(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = 'meta'",
                (ks.as_str(), table.name()),
            )
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(unavailable)?
            .rows_num()
            > 0;
        if !present {
            session
                .query_unpaged(
                    format!("ALTER TABLE {ks}.{} ADD meta text", table.name()),
                    &[],
                )
                .await
                .map_err(unavailable)?;
        }
    }
    Ok(())
}
