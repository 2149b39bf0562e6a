//! The stored form of the catalog and its durable changes.
//!
//! Keys in [`crate::SPACE`]: `d\0<db>` for a database, `t\0<db>\0<table>`
//! for a table's current version, `v\0<db>\0<table>\0<version>` (version
//! as 20 zero-padded digits, so key order is version order) for an
//! archived one. Glue's names cannot hold control characters (the model's
//! pattern, checked again in `ops`), so `\0` separates them unambiguously.

use std::collections::BTreeMap;

use ripstream_meta::Catalog;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use crate::error::{Error, Result};

/// A database: its `DatabaseInput` (name lower-cased) and creation time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseRec {
    pub name: String,
    pub input: Map<String, Value>,
    pub created_ms: i64,
}

/// One version of a table: its `TableInput` (name lower-cased) and what
/// Glue adds to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableRec {
    pub database: String,
    pub name: String,
    pub input: Map<String, Value>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The ARN of whoever created the table.
    pub created_by: String,
    pub version: u64,
}

/// One durable change.
#[derive(Debug, Clone)]
pub enum Change {
    PutDatabase(DatabaseRec),
    DeleteDatabase(String),
    PutTable(TableRec),
    DeleteTable(String, String),
    /// Archives a table version.
    PutVersion(TableRec),
    DeleteVersion(String, String, u64),
}

pub type TableKey = (String, String);

/// The whole catalog, as in the document space.
#[derive(Debug, Default, PartialEq)]
pub struct State {
    pub databases: BTreeMap<String, DatabaseRec>,
    pub tables: BTreeMap<TableKey, TableRec>,
    /// Archived versions (not the current one), by table then version.
    pub versions: BTreeMap<TableKey, BTreeMap<u64, TableRec>>,
    /// How many archived versions `versions` holds, for the account quota.
    pub archived: usize,
}

fn database_key(db: &str) -> Vec<u8> {
    format!("d\0{db}").into_bytes()
}

fn table_key(db: &str, table: &str) -> Vec<u8> {
    format!("t\0{db}\0{table}").into_bytes()
}

fn version_key(db: &str, table: &str, version: u64) -> Vec<u8> {
    format!("v\0{db}\0{table}\0{version:020}").into_bytes()
}

impl Change {
    /// The document key and value (`None`: delete) of the change.
    fn document(&self) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        fn json<T: Serialize>(v: &T) -> Result<Option<Vec<u8>>> {
            serde_json::to_vec(v).map(Some).map_err(Error::internal)
        }
        Ok(match self {
            Change::PutDatabase(d) => (database_key(&d.name), json(d)?),
            Change::DeleteDatabase(db) => (database_key(db), None),
            Change::PutTable(t) => (table_key(&t.database, &t.name), json(t)?),
            Change::DeleteTable(db, t) => (table_key(db, t), None),
            Change::PutVersion(t) => (version_key(&t.database, &t.name, t.version), json(t)?),
            Change::DeleteVersion(db, t, v) => (version_key(db, t, *v), None),
        })
    }
}

impl State {
    /// Reads the document space. An entry that cannot be read is skipped
    /// with a warning rather than keeping the server from starting.
    pub fn load(catalog: &Catalog) -> Result<State> {
        let mut state = State::default();
        for (key, raw) in catalog.documents(crate::SPACE)? {
            let shown = String::from_utf8_lossy(&key).replace('\0', "/");
            let change = match key.first() {
                Some(b'd') => serde_json::from_slice(&raw).map(Change::PutDatabase),
                Some(b't') => serde_json::from_slice(&raw).map(Change::PutTable),
                Some(b'v') => serde_json::from_slice(&raw).map(Change::PutVersion),
                _ => {
                    warn!(key = %shown, "unknown glue catalog entry skipped");
                    continue;
                }
            };
            match change {
                Ok(c) => state.apply(c),
                Err(e) => warn!(key = %shown, error = %e, "unreadable glue catalog entry skipped"),
            }
        }
        // A table or version whose database (or, for a version, table) is
        // gone would be unreachable yet count against the quotas, and a
        // database or table created later under the same name would
        // inherit it. No change this code commits leaves one, but a
        // catalog written before DeleteDatabase dropped its tables, or
        // edited by hand, can; they are dropped here, on disk too.
        let orphans = state.orphans();
        if !orphans.is_empty() {
            warn!(
                entries = orphans.len(),
                "glue catalog entries of deleted databases or tables dropped"
            );
            let docs = orphans
                .iter()
                .map(Change::document)
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<(&[u8], Option<&[u8]>)> = docs
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            catalog.write_documents(crate::SPACE, &refs)?;
            for c in orphans {
                state.apply(c);
            }
        }
        Ok(state)
    }

    /// The deletions of tables without their database and of versions
    /// without their table.
    fn orphans(&self) -> Vec<Change> {
        let mut out = Vec::new();
        for (db, t) in self.tables.keys() {
            if !self.databases.contains_key(db) {
                out.push(Change::DeleteTable(db.clone(), t.clone()));
            }
        }
        for (key, versions) in &self.versions {
            let table_kept = self.databases.contains_key(&key.0) && self.tables.contains_key(key);
            if !table_kept {
                for v in versions.keys() {
                    out.push(Change::DeleteVersion(key.0.clone(), key.1.clone(), *v));
                }
            }
        }
        out
    }

    /// How many versions a table has, its current one included.
    pub fn versions_of(&self, key: &TableKey) -> usize {
        1 + self.versions.get(key).map_or(0, BTreeMap::len)
    }

    /// How many table versions the account has, current ones included.
    pub fn all_versions(&self) -> usize {
        self.tables.len() + self.archived
    }

    pub fn apply(&mut self, change: Change) {
        match change {
            Change::PutDatabase(d) => {
                self.databases.insert(d.name.clone(), d);
            }
            Change::DeleteDatabase(db) => {
                self.databases.remove(&db);
            }
            Change::PutTable(t) => {
                self.tables.insert((t.database.clone(), t.name.clone()), t);
            }
            Change::DeleteTable(db, t) => {
                self.tables.remove(&(db, t));
            }
            Change::PutVersion(t) => {
                let replaced = self
                    .versions
                    .entry((t.database.clone(), t.name.clone()))
                    .or_default()
                    .insert(t.version, t);
                if replaced.is_none() {
                    self.archived += 1;
                }
            }
            Change::DeleteVersion(db, t, v) => {
                let key = (db, t);
                if let Some(versions) = self.versions.get_mut(&key) {
                    if versions.remove(&v).is_some() {
                        self.archived -= 1;
                    }
                    if versions.is_empty() {
                        self.versions.remove(&key);
                    }
                }
            }
        }
    }

    /// The tables of a database, in name order.
    pub fn tables_of<'a>(&'a self, db: &'a str) -> impl Iterator<Item = &'a TableRec> + 'a {
        self.tables
            .range((db.to_string(), String::new())..)
            .take_while(move |((d, _), _)| d == db)
            .map(|(_, t)| t)
    }

    /// The changes that delete a table with every archived version.
    pub fn drop_table(&self, db: &str, table: &str) -> Vec<Change> {
        let key = (db.to_string(), table.to_string());
        let mut out = vec![Change::DeleteTable(key.0.clone(), key.1.clone())];
        for v in self.versions.get(&key).into_iter().flat_map(|m| m.keys()) {
            out.push(Change::DeleteVersion(key.0.clone(), key.1.clone(), *v));
        }
        out
    }
}

impl crate::Inner {
    /// Commits `changes` in one transaction, then applies them to the
    /// memory view. The caller holds `control` and hands its guard over:
    /// both steps run in one blocking task, which runs to its end even if
    /// the request awaiting it is dropped (a client gone mid-call), and
    /// the guard is released only after both, so memory never lags a
    /// commit and no other change starts from the stale view.
    pub async fn commit(
        &self,
        guard: tokio::sync::OwnedMutexGuard<()>,
        changes: Vec<Change>,
    ) -> Result<()> {
        let docs = changes
            .iter()
            .map(Change::document)
            .collect::<Result<Vec<_>>>()?;
        let catalog = self.catalog.clone();
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let refs: Vec<(&[u8], Option<&[u8]>)> = docs
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            catalog.write_documents(crate::SPACE, &refs)?;
            let mut state = state.write();
            for c in changes {
                state.apply(c);
            }
            Ok(())
        })
        .await
        .map_err(Error::internal)?
    }
}
