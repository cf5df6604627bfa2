//! Every CQL statement Dora runs, prepared once at start. Values are always bound, never
//! written into the text.

use std::collections::HashMap;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use super::CqlConfig;
use super::schema::COMMON_COLUMNS;
use crate::{StoreError, Table};

/// The statements of one resource table.
pub(super) struct TableStatements {
    pub get: PreparedStatement,
    /// Rows of one partition (and workspace, where it clusters by one) by a list of names.
    pub get_many: PreparedStatement,
    // Every conditional write also names the row's uid, so that a row deleted and created
    // again between our read and our write is never taken for the one we read.
    /// The same read at SERIAL consistency: sees every committed compare-and-set.
    pub get_serial: PreparedStatement,
    pub insert: PreparedStatement,
    pub update_spec: PreparedStatement,
    pub update_computed: PreparedStatement,
    pub update_observed: PreparedStatement,
    pub delete: PreparedStatement,
    /// One page of a partition after a name (for zoned+workspaced tables: of one workspace).
    pub list: PreparedStatement,
    /// One page of every workspace of a zoned+workspaced partition after (workspace, name).
    pub list_all_workspaces: Option<PreparedStatement>,
}

/// Statements of the other tables.
pub(super) struct Statements {
    pub tables: HashMap<Table, TableStatements>,
    pub insert_version: PreparedStatement,
    pub trim_versions: PreparedStatement,
    pub delete_versions: PreparedStatement,
    pub versions: PreparedStatement,
    pub insert_change: PreparedStatement,
    pub changes: PreparedStatement,
    pub insert_event: PreparedStatement,
    pub events_after: PreparedStatement,
    pub events_newest: PreparedStatement,
    pub insert_action: PreparedStatement,
    pub actions: PreparedStatement,
    pub lease: PreparedStatement,
    pub lease_create: PreparedStatement,
    pub lease_renew: PreparedStatement,
    pub lease_take_over: PreparedStatement,
    pub lease_release: PreparedStatement,
}

struct Preparer<'a> {
    session: &'a Session,
    config: &'a CqlConfig,
}

impl Preparer<'_> {
    async fn prepare(
        &self,
        text: String,
        idempotent: bool,
    ) -> Result<PreparedStatement, StoreError> {
        self.prepare_with(text, idempotent, self.config.serial)
            .await
    }

    /// A statement whose compare-and-sets run at `serial`.
    async fn prepare_with(
        &self,
        text: String,
        idempotent: bool,
        serial: SerialConsistency,
    ) -> Result<PreparedStatement, StoreError> {
        let mut statement = self
            .session
            .prepare(text.as_str())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot prepare `{text}`: {e}")))?;
        statement.set_consistency(self.config.consistency);
        statement.set_serial_consistency(Some(serial));
        statement.set_is_idempotent(idempotent);
        statement.set_request_timeout(Some(self.config.request_timeout));
        Ok(statement)
    }

    async fn idempotent(&self, text: String) -> Result<PreparedStatement, StoreError> {
        self.prepare(text, true).await
    }

    async fn once(&self, text: String) -> Result<PreparedStatement, StoreError> {
        self.prepare(text, false).await
    }

    /// A read that sees every compare-and-set committed at `serial`.
    async fn serial_read(
        &self,
        text: String,
        serial: SerialConsistency,
    ) -> Result<PreparedStatement, StoreError> {
        let mut statement = self.idempotent(text).await?;
        statement.set_consistency(match serial {
            SerialConsistency::LocalSerial => Consistency::LocalSerial,
            SerialConsistency::Serial => Consistency::Serial,
        });
        Ok(statement)
    }

    async fn table(&self, table: Table) -> Result<TableStatements, StoreError> {
        let ks = &self.config.keyspace;
        let name = table.name();
        let serial = serial_of(table, self.config);
        let once = |text: String| self.prepare_with(text, false, serial);
        let keys = table.key_columns();
        let key_match = keys
            .iter()
            .map(|c| format!("{c} = ?"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let siblings_match = keys
            .iter()
            .filter(|c| **c != "name")
            .map(|c| format!("{c} = ?"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let select = format!(
            "SELECT {}, {} FROM {ks}.{name}",
            keys.join(", "),
            COMMON_COLUMNS.join(", ")
        );
        let containers = table == Table::Containers;
        let insert_columns = [
            keys,
            &COMMON_COLUMNS[..],
            if containers {
                &["workload", "node"][..]
            } else {
                &[][..]
            },
        ]
        .concat();
        let markers = vec!["?"; insert_columns.len()].join(", ");
        let workload = if containers { ", workload = ?" } else { "" };
        let node = if containers { ", node = ?" } else { "" };
        // The partition key is every key column but the clustering ones.
        let clustered_by_workspace =
            matches!(table, Table::ZonedWorkspacedResources | Table::Containers);
        let partition: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|c| *c != "name" && !(clustered_by_workspace && *c == "workspace"))
            .collect();
        let partition_match = partition
            .iter()
            .map(|c| format!("{c} = ?"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let list = if clustered_by_workspace {
            format!("{select} WHERE {partition_match} AND workspace = ? AND name > ? LIMIT ?")
        } else {
            format!("{select} WHERE {partition_match} AND name > ? LIMIT ?")
        };
        let list_all_workspaces = match clustered_by_workspace {
            true => Some(
                self.idempotent(format!(
                    "{select} WHERE {partition_match} AND (workspace, name) > (?, ?) LIMIT ?"
                ))
                .await?,
            ),
            false => None,
        };
        Ok(TableStatements {
            get: self.idempotent(format!("{select} WHERE {key_match}")).await?,
            get_many: self.idempotent(format!("{select} WHERE {siblings_match} AND name IN ?")).await?,
            get_serial: self.serial_read(format!("{select} WHERE {key_match}"), serial).await?,
            insert: once(format!("INSERT INTO {ks}.{name} ({}) VALUES ({markers}) IF NOT EXISTS", insert_columns.join(", "))).await?,
            update_spec: once(format!(
                    "UPDATE {ks}.{name} SET version = ?, generation = ?, spec_hash = ?, labels = ?, updated = ?, resource = ?, desired = ?, meta = ?{workload} WHERE {key_match} IF version = ? AND uid = ?"
                ))
                .await?,
            update_computed: once(format!("UPDATE {ks}.{name} SET computed = ?, computed_version = ?{node} WHERE {key_match} IF computed_version = ? AND uid = ?"))
                .await?,
            update_observed: once(format!("UPDATE {ks}.{name} SET observed = ?, observed_version = ? WHERE {key_match} IF observed_version = ? AND uid = ?"))
                .await?,
            delete: once(format!("DELETE FROM {ks}.{name} WHERE {key_match} IF version = ? AND uid = ?")).await?,
            list: self.idempotent(list).await?,
            list_all_workspaces,
        })
    }
}

/// The serial consistency of compare-and-sets on `table`'s rows: the store's (LOCAL_SERIAL
/// with `local_quorum`) for a zone's own rows, which only that zone's datacenter writes, but
/// SERIAL for cluster-wide rows, so that two zones can never both win a compare-and-set on
/// one user, role or workspace. Their plain reads stay local.
pub(super) fn serial_of(table: Table, config: &CqlConfig) -> SerialConsistency {
    if table.is_cluster_wide() {
        SerialConsistency::Serial
    } else {
        config.serial
    }
}

impl Statements {
    pub(super) async fn prepare(session: &Session, config: &CqlConfig) -> Result<Self, StoreError> {
        let p = Preparer { session, config };
        let ks = &config.keyspace;
        let mut tables = HashMap::new();
        for table in Table::ALL {
            tables.insert(table, p.table(table).await?);
        }
        let object = "zone = ? AND resource_kind = ? AND workspace = ? AND name = ?";
        Ok(Statements {
            tables,
            insert_version: p.idempotent(format!("INSERT INTO {ks}.versions (zone, resource_kind, workspace, name, generation, scope, resource, spec_hash, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"))
                .await?,
            trim_versions: p.idempotent(format!("DELETE FROM {ks}.versions WHERE {object} AND generation <= ?")).await?,
            delete_versions: p
                .idempotent(format!("DELETE FROM {ks}.versions WHERE {object}"))
                .await?,
            versions: p.idempotent(format!("SELECT generation, resource, spec_hash, time FROM {ks}.versions WHERE {object}")).await?,
            insert_change: p.idempotent(format!("INSERT INTO {ks}.changes (zone, kind, bucket, id, scope, workspace, name, op, columns, version, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
                .await?,
            changes: p.idempotent(format!("SELECT id, scope, workspace, name, op, columns, version, at FROM {ks}.changes WHERE zone = ? AND kind = ? AND bucket = ? AND id > ? AND id <= ?"))
                .await?,
            insert_event: p.idempotent(format!("INSERT INTO {ks}.events (zone, resource_kind, id, workspace, name, type, reason, message, component, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
                .await?,
            events_after: p.idempotent(format!("SELECT zone, resource_kind, id, workspace, name, type, reason, message, component, time FROM {ks}.events WHERE zone = ? AND resource_kind = ? AND id > ?"))
                .await?,
            events_newest: p.idempotent(format!("SELECT zone, resource_kind, id, workspace, name, type, reason, message, component, time FROM {ks}.events WHERE zone = ? AND resource_kind = ? ORDER BY id DESC"))
                .await?,
            insert_action: p.idempotent(format!("INSERT INTO {ks}.actions (zone, resource_kind, id, scope, workspace, name, destination, action, payload, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"))
                .await?,
            actions: p.idempotent(format!("SELECT id, scope, workspace, name, destination, action, payload, created, expires FROM {ks}.actions WHERE zone = ? AND resource_kind = ? AND id > ?"))
                .await?,
            lease: p.serial_read(format!("SELECT holder, epoch, expires FROM {ks}.leases WHERE zone = ? AND component = ?"), config.serial).await?,
            lease_create: p.once(format!("INSERT INTO {ks}.leases (zone, component, holder, epoch, expires) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS")).await?,
            lease_renew: p.once(format!("UPDATE {ks}.leases SET expires = ? WHERE zone = ? AND component = ? IF holder = ? AND epoch = ?")).await?,
            lease_take_over: p.once(format!("UPDATE {ks}.leases SET holder = ?, epoch = ?, expires = ? WHERE zone = ? AND component = ? IF holder = ? AND epoch = ? AND expires = ?"))
                .await?,
            lease_release: p.once(format!("UPDATE {ks}.leases SET expires = ? WHERE zone = ? AND component = ? IF holder = ? AND epoch = ?")).await?,
        })
    }
}
