//! Tables mirroring the CQL schema: the seed's eight tables plus the change feed and leases.

use rusqlite::Connection;

use crate::Table;

/// Columns every resource table has after its key.
pub(super) const COMMON_COLUMNS: &str = "uid, version, generation, spec_hash, owner, labels, created, updated, \
     resource, desired, computed, computed_version, observed, observed_version, meta";

const COMMON_DDL: &str = "uid TEXT NOT NULL, version INTEGER NOT NULL, generation INTEGER NOT NULL, \
     spec_hash TEXT NOT NULL, owner TEXT NOT NULL, labels TEXT NOT NULL, created INTEGER NOT NULL, \
     updated INTEGER NOT NULL, resource TEXT NOT NULL, desired TEXT NOT NULL, \
     computed TEXT NOT NULL DEFAULT 'null', computed_version INTEGER NOT NULL DEFAULT 0, \
     observed TEXT NOT NULL DEFAULT 'null', observed_version INTEGER NOT NULL DEFAULT 0, \
     meta TEXT NOT NULL DEFAULT '{}'";

/// DDL for a fresh database; every statement is idempotent.
pub(super) fn ddl() -> String {
    let mut sql = String::new();
    for table in Table::ALL {
        let keys = table.key_columns();
        let key_ddl: Vec<String> = keys.iter().map(|c| format!("{c} TEXT NOT NULL")).collect();
        let extra = if table == Table::Containers {
            "workload TEXT NOT NULL DEFAULT '', node TEXT NOT NULL DEFAULT '', "
        } else {
            ""
        };
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {name} ({keys}, {extra}{COMMON_DDL}, PRIMARY KEY ({pk})) WITHOUT ROWID;\n",
            name = table.name(),
            keys = key_ddl.join(", "),
            pk = keys.join(", "),
        ));
    }
    sql.push_str(
        "CREATE INDEX IF NOT EXISTS containers_by_workload ON containers (kind, zone, workspace, workload);
         CREATE INDEX IF NOT EXISTS containers_by_node ON containers (kind, zone, node);
         CREATE TABLE IF NOT EXISTS versions (
             zone TEXT NOT NULL, resource_kind TEXT NOT NULL, workspace TEXT NOT NULL, name TEXT NOT NULL,
             generation INTEGER NOT NULL, scope TEXT NOT NULL, resource TEXT NOT NULL, spec_hash TEXT NOT NULL,
             time INTEGER NOT NULL,
             PRIMARY KEY (zone, resource_kind, workspace, name, generation)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS events (
             zone TEXT NOT NULL, resource_kind TEXT NOT NULL, id TEXT NOT NULL, workspace TEXT NOT NULL,
             name TEXT NOT NULL, type TEXT NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL,
             component TEXT NOT NULL, time INTEGER NOT NULL,
             PRIMARY KEY (zone, resource_kind, id)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS events_by_zone ON events (zone, id);
         CREATE TABLE IF NOT EXISTS actions (
             zone TEXT NOT NULL, resource_kind TEXT NOT NULL, id TEXT NOT NULL, scope TEXT NOT NULL,
             workspace TEXT NOT NULL, name TEXT NOT NULL, destination TEXT NOT NULL, action TEXT NOT NULL,
             payload TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL,
             PRIMARY KEY (zone, resource_kind, id)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS changes (
             seq INTEGER PRIMARY KEY, zone TEXT NOT NULL, kind TEXT NOT NULL, scope TEXT NOT NULL,
             workspace TEXT NOT NULL, name TEXT NOT NULL, op TEXT NOT NULL, columns TEXT NOT NULL,
             version INTEGER NOT NULL, at INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS changes_by_partition ON changes (kind, zone, seq);
         CREATE TABLE IF NOT EXISTS leases (
             zone TEXT NOT NULL, component TEXT NOT NULL, holder TEXT NOT NULL, epoch INTEGER NOT NULL,
             expires INTEGER NOT NULL, PRIMARY KEY (zone, component)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    );
    sql
}

/// Adds the columns that tables made by an earlier Dora lack: `meta` (annotations, owner
/// references, finalizers).
pub(super) fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
    for table in Table::ALL {
        let has_meta: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = 'meta'",
            [table.name()],
            |row| row.get(0),
        )?;
        if !has_meta {
            conn.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN meta TEXT NOT NULL DEFAULT '{{}}'",
                table.name()
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_meta(conn: &Connection, table: Table) -> bool {
        conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = 'meta'",
            [table.name()],
            |row| row.get(0),
        )
        .unwrap()
    }

    #[test]
    fn tables_made_before_the_meta_column_gain_it_once() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&ddl()).unwrap();
        for table in Table::ALL {
            conn.execute_batch(&format!("ALTER TABLE {} DROP COLUMN meta", table.name()))
                .unwrap();
            assert!(!has_meta(&conn, table));
        }
        upgrade(&conn).unwrap();
        upgrade(&conn).unwrap();
        for table in Table::ALL {
            assert!(has_meta(&conn, table), "{}", table.name());
        }
    }
}
