//! Iceberg's catalog over the Glue Data Catalog subset, as AWS keeps Iceberg
//! tables in Glue: a Glue table whose Parameters hold `table_type=ICEBERG`
//! and `metadata_location=s3://.../metadata/NNNNN-<uuid>.metadata.json`.
//! A commit writes the next metadata file, then moves `metadata_location`
//! (keeping the old one as `previous_metadata_location`) with a Glue
//! UpdateTable conditioned on the table's VersionId, so a writer that lost
//! a race to another (this server, pyiceberg, Spark through the Glue API)
//! fails with a conflict (`CatalogCommitConflicts`) and reapplies its
//! change, never overwrites the other's. Conflicts are not marked
//! retryable: the `iceberg` crate's transaction would retry them with the
//! waits the table's own properties name (any length), so
//! [`crate::Tables`] retries them itself, bounded.
//!
//! A commit that definitely did not take (a conflict) leaves nothing: its
//! metadata file, manifest list and new manifests are deleted.

use std::collections::HashMap;
use std::io::Read;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::{SnapshotRef, TableMetadata};
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent, TableRequirement, TableUpdate,
};
use ripstream_glue::{Error as GlueError, Glue};
use serde_json::{Map, Value, json};
use tracing::warn;

use crate::storage::MAX_FILE_BYTES;

/// The Glue table parameter that marks an Iceberg table.
pub const TABLE_TYPE: &str = "table_type";
pub const ICEBERG: &str = "ICEBERG";
pub const METADATA_LOCATION: &str = "metadata_location";
pub const PREVIOUS_METADATA_LOCATION: &str = "previous_metadata_location";

/// The members of a Glue `TableInput` (what GetTable answers beyond them,
/// such as CreateTime or VersionId, UpdateTable does not take).
const TABLE_INPUT_MEMBERS: &[&str] = &[
    "Name",
    "Description",
    "Owner",
    "LastAccessTime",
    "LastAnalyzedTime",
    "Retention",
    "StorageDescriptor",
    "PartitionKeys",
    "ViewOriginalText",
    "ViewExpandedText",
    "TableType",
    "Parameters",
];

/// A Glue table as the catalog reads it.
#[derive(Debug, Clone)]
pub struct GlueTable {
    /// GetTable's `Table`.
    pub table: Value,
    pub version_id: String,
}

impl GlueTable {
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.table
            .get("Parameters")
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
    }

    pub fn is_iceberg(&self) -> bool {
        self.parameter(TABLE_TYPE)
            .is_some_and(|t| t.eq_ignore_ascii_case(ICEBERG))
    }

    pub fn metadata_location(&self) -> Option<&str> {
        self.parameter(METADATA_LOCATION).filter(|l| !l.is_empty())
    }

    /// `StorageDescriptor.Columns` as (name, Hive type).
    pub fn columns(&self) -> Vec<(String, String)> {
        self.table["StorageDescriptor"]["Columns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
                        (s("Name").to_string(), s("Type").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn location(&self) -> Option<&str> {
        self.table["StorageDescriptor"]["Location"]
            .as_str()
            .filter(|l| !l.is_empty())
    }
}

fn glue_error(e: GlueError) -> Error {
    match e {
        GlueError::EntityNotFound(m) => Error::new(ErrorKind::TableNotFound, m),
        GlueError::ConcurrentModification(m) => Error::new(ErrorKind::CatalogCommitConflicts, m),
        other => Error::new(ErrorKind::Unexpected, other.to_string()),
    }
}

/// The version a metadata file's name gives it (`00012-<uuid>.metadata.json`).
fn metadata_version(location: &str) -> Option<i32> {
    let name = location.rsplit('/').next()?;
    let stem = name.strip_suffix(".metadata.json")?;
    let stem = stem.strip_suffix(".gz").unwrap_or(stem);
    stem.split_once('-')?.0.parse().ok()
}

/// Reads a table metadata file, at most `max` bytes of it inflated (a
/// gzip file is inflated incrementally and given up past the limit, so a
/// small file cannot stand for a huge one).
pub async fn read_metadata(file_io: &FileIO, location: &str, max: u64) -> Result<TableMetadata> {
    let raw = file_io.new_input(location)?.read().await?;
    let invalid =
        |what: String| Error::new(ErrorKind::DataInvalid, what).with_context("file_path", location);
    if raw.len() > 2 && raw[0] == 0x1F && raw[1] == 0x8B {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(max.saturating_add(1))
            .read_to_end(&mut json)
            .map_err(|e| invalid(format!("the gzip metadata file does not inflate: {e}")))?;
        if json.len() as u64 > max {
            return Err(invalid(format!(
                "the metadata file inflates to more than {max} bytes"
            )));
        }
        Ok(serde_json::from_slice(&json)?)
    } else {
        Ok(serde_json::from_slice(&raw)?)
    }
}

/// Failures a test makes the catalog answer with.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Commits that fail before Glue is touched (Glue unreachable).
    pub before: std::sync::atomic::AtomicU32,
    /// Commits that lose a race (Glue's `ConcurrentModification`).
    pub conflicts: std::sync::atomic::AtomicU32,
    /// Commits that take but whose answer is lost.
    pub lost: std::sync::atomic::AtomicU32,
    /// Commits that fail before Glue is touched, the table unreadable for
    /// one read after.
    pub before_unreadable: std::sync::atomic::AtomicU32,
    /// Reads of the table that fail.
    pub unreadable: std::sync::atomic::AtomicU32,
}

#[cfg(test)]
fn take(n: &std::sync::atomic::AtomicU32) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    n.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1)).is_ok()
}

fn unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::FeatureUnsupported,
        format!("{what} is not part of the Glue-backed catalog Firehose writes through"),
    )
}

/// The one-level namespace (a Glue database) of an identifier.
fn database(ident: &TableIdent) -> Result<&str> {
    match ident.namespace().as_ref().as_slice() {
        [db] => Ok(db.as_str()),
        _ => Err(Error::new(
            ErrorKind::DataInvalid,
            format!("{ident} is not database.table"),
        )),
    }
}

/// The Glue subset as an Iceberg catalog, in-process.
#[derive(Debug, Clone)]
pub struct GlueCatalog {
    glue: Glue,
    file_io: FileIO,
    max_file_bytes: u64,
    #[cfg(test)]
    pub(crate) faults: Arc<Faults>,
}

impl GlueCatalog {
    pub fn new(glue: Glue, file_io: FileIO) -> GlueCatalog {
        GlueCatalog {
            glue,
            file_io,
            max_file_bytes: MAX_FILE_BYTES,
            #[cfg(test)]
            faults: Arc::default(),
        }
    }

    /// The same catalog with another cap on a metadata file's inflated size.
    pub fn with_max_file_bytes(mut self, max: u64) -> GlueCatalog {
        self.max_file_bytes = max;
        self
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// The Glue table, whatever its type.
    pub async fn glue_table(&self, db: &str, name: &str) -> Result<GlueTable> {
        let out = self
            .glue
            .get_table(json!({"DatabaseName": db, "Name": name}))
            .await
            .map_err(glue_error)?;
        let table = out["Table"].clone();
        // Without it the update could not be conditioned on the version read.
        let Some(version_id) = table["VersionId"].as_str().map(str::to_string) else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("Glue answered no VersionId for {db}.{name}"),
            ));
        };
        Ok(GlueTable { table, version_id })
    }

    /// Points the Glue table at `location`, if it is still at
    /// `expected.version_id` (else a retryable conflict).
    pub async fn set_metadata_location(&self, expected: &GlueTable, location: &str) -> Result<()> {
        let cur = expected.table.as_object().cloned().unwrap_or_default();
        let mut input: Map<String, Value> = cur
            .into_iter()
            .filter(|(k, _)| TABLE_INPUT_MEMBERS.contains(&k.as_str()))
            .collect();
        let mut params = input
            .get("Parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(prev) = expected.metadata_location() {
            params.insert(PREVIOUS_METADATA_LOCATION.into(), json!(prev));
        }
        params.insert(METADATA_LOCATION.into(), json!(location));
        params.insert(TABLE_TYPE.into(), json!(ICEBERG));
        input.insert("Parameters".into(), Value::Object(params));
        let db = expected.table["DatabaseName"].as_str().unwrap_or("");
        self.glue
            .update_table(json!({
                "DatabaseName": db,
                "TableInput": input,
                "VersionId": expected.version_id,
                // One Glue version per commit would pass Glue's version
                // quotas within days of flushes; the metadata files keep
                // the table's history (pyiceberg skips the archive too).
                "SkipArchive": true,
            }))
            .await
            .map_err(glue_error)?;
        Ok(())
    }

    /// Writes a table's first metadata file and points the Glue table at
    /// it (the table had columns but no Iceberg metadata yet).
    pub async fn initialize(
        &self,
        ident: &TableIdent,
        glue: &GlueTable,
        creation: TableCreation,
    ) -> Result<Table> {
        let location = creation
            .location
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "the table has no location"))?;
        let metadata = iceberg::spec::TableMetadataBuilder::from_table_creation(creation)?
            .build()?
            .metadata;
        let metadata_location = MetadataLocation::new_with_metadata(location, &metadata);
        metadata.write_to(&self.file_io, &metadata_location).await?;
        if let Err(e) = self
            .set_metadata_location(glue, &metadata_location.to_string())
            .await
        {
            if e.kind() == ErrorKind::CatalogCommitConflicts {
                // Another writer made the table's first metadata: ours is
                // referenced by nothing.
                self.discard(&[metadata_location.to_string()]).await;
            }
            return Err(e);
        }
        Table::builder()
            .file_io(self.file_io.clone())
            .metadata_location(metadata_location.to_string())
            .metadata(metadata)
            .identifier(ident.clone())
            .runtime(iceberg::Runtime::try_current()?)
            .build()
    }

    /// Applies a commit to the table as Glue points at it now (the
    /// requirements checked against it; the VersionId condition closes the
    /// window after), writes the next metadata file and moves Glue to it.
    /// The steps of `TableCommit::apply`, kept here so that what a commit
    /// that did not take wrote can be found and deleted.
    async fn commit(&self, mut commit: TableCommit) -> Result<Table> {
        let ident = commit.identifier().clone();
        let requirements = commit.take_requirements();
        let updates = commit.take_updates();
        self.commit_changes(&ident, requirements, updates).await
    }

    /// [`GlueCatalog::commit`] of updates made here rather than by the
    /// crate's transactions (which make data-only snapshots).
    pub(crate) async fn commit_changes(
        &self,
        ident: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table> {
        let ident = ident.clone();
        // The snapshot the commit adds: its manifest list and new manifests
        // were written already, by the transaction.
        let added: Option<SnapshotRef> = updates.iter().find_map(|u| match u {
            TableUpdate::AddSnapshot { snapshot } => Some(Arc::new(snapshot.clone())),
            _ => None,
        });
        let (current, glue) = self.load(&ident).await?;
        if let Err(e) = requirements
            .iter()
            .try_for_each(|r| r.check(Some(current.metadata())))
        {
            self.discard_snapshot(&current, added.as_ref(), None).await;
            return Err(e);
        }
        let location = current.metadata_location_result()?.to_string();
        if metadata_version(&location).is_none_or(|v| v == i32::MAX) {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!(
                    "metadata_location {location} is not <location>/metadata/<version>-<uuid>.metadata.json with a version that can be incremented"
                ),
            ));
        }
        let mut builder = current
            .metadata()
            .clone()
            .into_builder(Some(location.clone()));
        for u in updates {
            builder = u.apply(builder)?;
        }
        let metadata = builder.build()?.metadata;
        let next = MetadataLocation::from_str(&location)?
            .with_next_version()
            .with_new_metadata(&metadata);
        let next_location = next.to_string();
        #[cfg(test)]
        if take(&self.faults.before) {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "injected: Glue is unreachable",
            ));
        }
        #[cfg(test)]
        if take(&self.faults.before_unreadable) {
            self.faults
                .unreadable
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::Unexpected,
                "injected: Glue is unreachable",
            ));
        }
        if let Err(e) = metadata.write_to(&self.file_io, &next).await {
            // Glue was not moved: nothing refers to what was written.
            self.discard_snapshot(&current, added.as_ref(), Some(&next_location))
                .await;
            return Err(e);
        }
        #[cfg(test)]
        if take(&self.faults.conflicts) {
            self.discard_snapshot(&current, added.as_ref(), Some(&next_location))
                .await;
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                "injected: another writer committed first",
            ));
        }
        if let Err(e) = self.set_metadata_location(&glue, &next_location).await {
            if e.kind() == ErrorKind::CatalogCommitConflicts {
                // Glue refused the move: nothing refers to what this commit
                // wrote. (Any other failure may have moved it.)
                self.discard_snapshot(&current, added.as_ref(), Some(&next_location))
                    .await;
            }
            return Err(e);
        }
        #[cfg(test)]
        if take(&self.faults.lost) {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "injected: the commit took but its answer was lost",
            ));
        }
        Table::builder()
            .file_io(self.file_io.clone())
            .metadata_location(next_location)
            .metadata(metadata)
            .identifier(ident)
            .runtime(iceberg::Runtime::try_current()?)
            .build()
    }

    /// Deletes what a commit that did not take wrote: its metadata file,
    /// and its snapshot's manifest list and the manifests that snapshot
    /// added (not the ones it carried over from the table).
    async fn discard_snapshot(
        &self,
        current: &Table,
        added: Option<&SnapshotRef>,
        metadata_file: Option<&str>,
    ) {
        let mut paths: Vec<String> = metadata_file.into_iter().map(str::to_string).collect();
        if let Some(s) = added {
            match current.manifest_list_reader(s).load().await {
                Ok(list) => paths.extend(
                    list.entries()
                        .iter()
                        .filter(|m| m.added_snapshot_id == s.snapshot_id())
                        .map(|m| m.manifest_path.clone()),
                ),
                Err(e) => {
                    warn!(manifest_list = %s.manifest_list(), error = %e, "cannot read the manifest list of a commit that did not take; its manifests stay");
                }
            }
            paths.push(s.manifest_list().to_string());
        }
        self.discard(&paths).await;
    }

    /// Deletes files nothing refers to, best effort.
    pub(crate) async fn discard(&self, paths: &[String]) {
        for p in paths {
            if let Err(e) = self.file_io.delete(p).await {
                warn!(path = %p, error = %e, "cannot delete a file no commit refers to; it stays as an orphan");
            }
        }
    }

    async fn load(&self, ident: &TableIdent) -> Result<(Table, GlueTable)> {
        #[cfg(test)]
        if take(&self.faults.unreadable) {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "injected: Glue is unreachable",
            ));
        }
        let db = database(ident)?;
        let glue = self.glue_table(db, ident.name()).await?;
        if !glue.is_iceberg() {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!(
                    "Glue table {ident} is not an Iceberg table (Parameters.table_type is not ICEBERG)"
                ),
            ));
        }
        let Some(location) = glue.metadata_location() else {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("Glue table {ident} has no Parameters.metadata_location"),
            ));
        };
        let metadata = read_metadata(&self.file_io, location, self.max_file_bytes).await?;
        let table = Table::builder()
            .file_io(self.file_io.clone())
            .metadata_location(location.to_string())
            .metadata(metadata)
            .identifier(ident.clone())
            .runtime(iceberg::Runtime::try_current()?)
            .build()?;
        Ok((table, glue))
    }
}

#[async_trait]
impl Catalog for GlueCatalog {
    async fn list_namespaces(
        &self,
        _parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        Err(unsupported("ListNamespaces"))
    }

    async fn create_namespace(
        &self,
        _namespace: &NamespaceIdent,
        _properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        Err(unsupported("CreateNamespace"))
    }

    async fn get_namespace(&self, _namespace: &NamespaceIdent) -> Result<Namespace> {
        Err(unsupported("GetNamespace"))
    }

    async fn namespace_exists(&self, _namespace: &NamespaceIdent) -> Result<bool> {
        Err(unsupported("NamespaceExists"))
    }

    async fn update_namespace(
        &self,
        _namespace: &NamespaceIdent,
        _properties: HashMap<String, String>,
    ) -> Result<()> {
        Err(unsupported("UpdateNamespace"))
    }

    async fn drop_namespace(&self, _namespace: &NamespaceIdent) -> Result<()> {
        Err(unsupported("DropNamespace"))
    }

    async fn list_tables(&self, _namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        Err(unsupported("ListTables"))
    }

    async fn create_table(
        &self,
        _namespace: &NamespaceIdent,
        _creation: TableCreation,
    ) -> Result<Table> {
        Err(unsupported("CreateTable"))
    }

    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        Ok(self.load(table).await?.0)
    }

    async fn drop_table(&self, _table: &TableIdent) -> Result<()> {
        Err(unsupported("DropTable"))
    }

    async fn purge_table(&self, _table: &TableIdent) -> Result<()> {
        Err(unsupported("PurgeTable"))
    }

    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        match self.load(table).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::TableNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rename_table(&self, _src: &TableIdent, _dest: &TableIdent) -> Result<()> {
        Err(unsupported("RenameTable"))
    }

    async fn register_table(
        &self,
        _table: &TableIdent,
        _metadata_location: String,
    ) -> Result<Table> {
        Err(unsupported("RegisterTable"))
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        // Nothing this catalog answers is for the crate to retry on its own.
        self.commit(commit)
            .await
            .map_err(|e| e.with_retryable(false))
    }
}
