//! Iceberg's catalog over the Glue Data Catalog subset, as AWS keeps Iceberg
//! tables in Glue: a Glue table whose Parameters hold `table_type=ICEBERG`
//! and `metadata_location=s3://.../metadata/NNNNN-<uuid>.metadata.json`.
//! A commit writes the next metadata file, then moves `metadata_location`
//! (keeping the old one as `previous_metadata_location`) with a Glue
//! UpdateTable conditioned on the table's VersionId, so a writer that lost
//! a race to another (this server, pyiceberg, Spark through the Glue API)
//! fails with a retryable conflict and reapplies its change, never
//! overwrites the other's.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent,
};
use ripstream_glue::{Error as GlueError, Glue};
use serde_json::{Map, Value, json};

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
        GlueError::ConcurrentModification(m) => {
            Error::new(ErrorKind::CatalogCommitConflicts, m).with_retryable(true)
        }
        other => Error::new(ErrorKind::Unexpected, other.to_string()),
    }
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
}

impl GlueCatalog {
    pub fn new(glue: Glue, file_io: FileIO) -> GlueCatalog {
        GlueCatalog { glue, file_io }
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
        let version_id = table["VersionId"].as_str().unwrap_or("").to_string();
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
        self.set_metadata_location(glue, &metadata_location.to_string())
            .await?;
        Table::builder()
            .file_io(self.file_io.clone())
            .metadata_location(metadata_location.to_string())
            .metadata(metadata)
            .identifier(ident.clone())
            .runtime(iceberg::Runtime::try_current()?)
            .build()
    }

    async fn load(&self, ident: &TableIdent) -> Result<(Table, GlueTable)> {
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
        let metadata = TableMetadata::read_from(&self.file_io, location).await?;
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
        let ident = commit.identifier().clone();
        let (current, glue) = self.load(&ident).await?;
        // Requirements are checked against the table as Glue points at it
        // now; the VersionId condition below closes the window after.
        let staged = commit.apply(current)?;
        let location = staged.metadata_location_result()?.to_string();
        let parsed = MetadataLocation::from_str(&location)?;
        staged.metadata().write_to(&self.file_io, &parsed).await?;
        self.set_metadata_location(&glue, &location).await?;
        Ok(staged)
    }
}
