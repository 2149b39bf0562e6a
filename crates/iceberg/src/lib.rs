//! Apache Iceberg tables kept as AWS keeps them: the table is a Glue table
//! (the Glue Data Catalog subset, [`catalog::GlueCatalog`]) whose
//! `metadata_location` names the current metadata file, and every metadata,
//! manifest and data file is an object in the embedded object store
//! ([`storage::ObjectsStorage`]), so pyiceberg, Spark or DuckDB read the
//! tables through the Glue and S3 APIs.
//!
//! [`Tables::append`] is Firehose's Iceberg delivery: a flush's JSON
//! records are read against the table's current schema (JSON keys match
//! column names case-insensitively, through `ripstream-convert`'s reader),
//! written as one Parquet data file and committed as one fast-append
//! snapshot. The snapshot's summary names the writer and the log offsets
//! the records came from (`ripstream.firehose.writer`,
//! `ripstream.firehose.range`), so a writer that crashed between the commit
//! and its checkpoint finds the batch committed ([`Tables::committed`]) and
//! does not append it twice.
//!
//! Not here (yet): partitioned tables (refused), equality deletes (the
//! `iceberg` crate's transactions cannot commit them, so UniqueKeys cannot
//! be honoured), schema evolution.

pub mod catalog;
pub mod schema;
pub mod storage;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use iceberg::spec::DataFileFormat;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{NamespaceIdent, TableCreation, TableIdent};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use ripstream_convert::{Converter, Deserializer, RecordError};
use ripstream_glue::Glue;
use ripstream_objects::Objects;
use tracing::info;

pub use catalog::GlueCatalog;

/// The snapshot summary property naming who committed it.
pub const WRITER_PROPERTY: &str = "ripstream.firehose.writer";
/// The snapshot summary property holding the committed log offsets,
/// `start-end` (end exclusive).
pub const RANGE_PROPERTY: &str = "ripstream.firehose.range";

/// How far back through a table's snapshots a writer's last commit is
/// looked for: other writers' commits in between are passed over.
const MAX_SNAPSHOT_WALK: usize = 10_000;

/// Error codes of records a table refuses, in the error output.
pub const MALFORMED: &str = "Iceberg.MalformedRecord";
pub const TYPE_MISMATCH: &str = "Iceberg.DataTypeMismatch";
pub const MISSING_COLUMN: &str = "Iceberg.MissingColumnWithinRecord";

/// Why a table cannot take records now. Both wait: the records stay in
/// the writer's log and are retried.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The table is missing, not an Iceberg table, or of a shape this
    /// server cannot write (its owner must change it).
    #[error("{0}")]
    Unusable(String),
    /// Storage or the catalog failed, or the commit lost every retry.
    #[error("{0}")]
    Unavailable(String),
}

impl TableError {
    pub fn code(&self) -> &'static str {
        match self {
            TableError::Unusable(_) => "Iceberg.InvalidTable",
            TableError::Unavailable(_) => "Iceberg.CommitFailed",
        }
    }
}

fn unavailable(e: iceberg::Error) -> TableError {
    TableError::Unavailable(e.to_string())
}

/// Who commits a batch and which log offsets it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitTag {
    pub writer: String,
    pub start: u64,
    pub end: u64,
}

/// A record the table refused: its index in the batch, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

/// What an append did.
#[derive(Debug, Default)]
pub struct Appended {
    pub rows: u64,
    pub rejected: Vec<Rejected>,
    /// The batch was committed before (by an attempt whose checkpoint was
    /// lost): nothing was written.
    pub duplicate: bool,
    /// The data file and snapshot written, if any rows were.
    pub data_file: Option<String>,
    pub snapshot_id: Option<i64>,
}

/// The Iceberg tables of the Glue subset, in the embedded store.
#[derive(Debug, Clone)]
pub struct Tables {
    catalog: Arc<GlueCatalog>,
}

impl Tables {
    pub fn new(glue: Glue, objects: Objects) -> Tables {
        let io = storage::ObjectsStorage::file_io(objects);
        Tables {
            catalog: Arc::new(GlueCatalog::new(glue, io)),
        }
    }

    pub fn catalog(&self) -> &Arc<GlueCatalog> {
        &self.catalog
    }

    /// The table, its Iceberg metadata created first when the Glue table
    /// is marked ICEBERG and has columns and a location but no metadata
    /// yet (how this server's users make a table without an Iceberg
    /// library).
    pub async fn open(&self, database: &str, table: &str) -> Result<Table, TableError> {
        let ident = TableIdent::new(NamespaceIdent::new(database.to_string()), table.to_string());
        for _ in 0..3 {
            let glue = match self.catalog.glue_table(database, table).await {
                Ok(g) => g,
                Err(e) if e.kind() == iceberg::ErrorKind::TableNotFound => {
                    return Err(TableError::Unusable(format!(
                        "Glue table {database}.{table} does not exist: {}",
                        e.message()
                    )));
                }
                Err(e) => return Err(unavailable(e)),
            };
            if !glue.is_iceberg() {
                return Err(TableError::Unusable(format!(
                    "Glue table {database}.{table} is not an Iceberg table: its Parameters need table_type=ICEBERG."
                )));
            }
            if glue.metadata_location().is_some() {
                return iceberg::Catalog::load_table(self.catalog.as_ref(), &ident)
                    .await
                    .map_err(unavailable);
            }
            let schema = schema::from_hive(&glue.columns()).map_err(|e| {
                TableError::Unusable(format!(
                    "Glue table {database}.{table} has no metadata_location, and its columns cannot make one: {e}"
                ))
            })?;
            let Some(location) = glue.location() else {
                return Err(TableError::Unusable(format!(
                    "Glue table {database}.{table} has no metadata_location and no StorageDescriptor.Location to create the table at."
                )));
            };
            storage::split_location(location).map_err(|e| {
                TableError::Unusable(format!(
                    "Glue table {database}.{table}: StorageDescriptor.Location {location}: {}",
                    e.message()
                ))
            })?;
            let creation = TableCreation::builder()
                .name(table.to_string())
                .location(location.trim_end_matches('/').to_string())
                .schema(schema)
                .build();
            match self.catalog.initialize(&ident, &glue, creation).await {
                Ok(t) => {
                    info!(database, table, location = %t.metadata_location().unwrap_or(""), "created the Iceberg metadata of the Glue table");
                    return Ok(t);
                }
                // Another writer created it meanwhile: read theirs.
                Err(e) if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(TableError::Unavailable(format!(
            "Glue table {database}.{table} kept changing while its metadata was created"
        )))
    }

    /// Checks that records could be appended now: the table exists (its
    /// metadata created if need be), is unpartitioned and has a schema
    /// Firehose can write.
    pub async fn check(&self, database: &str, table: &str) -> Result<(), TableError> {
        let t = self.open(database, table).await?;
        usable(&t).map(|_| ())
    }

    /// The log offsets of `writer`'s last commit to the table, if any.
    pub async fn committed(
        &self,
        database: &str,
        table: &str,
        writer: &str,
    ) -> Result<Option<(u64, u64)>, TableError> {
        let t = self.open(database, table).await?;
        Ok(last_range(&t, writer))
    }

    /// Appends a batch of JSON records as one data file and one snapshot,
    /// unless the batch (its tag's range) was committed already.
    pub async fn append(
        &self,
        database: &str,
        table: &str,
        records: &[&[u8]],
        tag: &CommitTag,
    ) -> Result<Appended, TableError> {
        let t = self.open(database, table).await?;
        if let Some((_, end)) = last_range(&t, &tag.writer)
            && end >= tag.end
        {
            return Ok(Appended {
                duplicate: true,
                ..Appended::default()
            });
        }
        let converter = usable(&t)?;
        let iceberg_schema = t.metadata().current_schema().clone();
        let arrow_schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(&iceberg_schema).map_err(|e| {
                TableError::Unusable(format!("the table's schema has no Arrow form: {e}"))
            })?,
        );
        let required: Vec<(usize, String)> = iceberg_schema
            .as_struct()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.required)
            .map(|(i, f)| (i, f.name.clone()))
            .collect();
        let mut rows = Vec::with_capacity(records.len());
        let mut kept = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match converter.read(r) {
                Ok(row) => {
                    if let Some((_, name)) = required.iter().find(|(c, _)| row.is_null(*c)) {
                        rejected.push(Rejected {
                            index: i,
                            code: MISSING_COLUMN,
                            message: format!("The record has no value for required column {name}."),
                        });
                    } else {
                        rows.push(row);
                        kept.push(i);
                    }
                }
                Err(e) => rejected.push(Rejected {
                    index: i,
                    code: match e {
                        RecordError::NotJson(_) | RecordError::NotObject => MALFORMED,
                        RecordError::Value { .. } => TYPE_MISMATCH,
                    },
                    message: e.to_string(),
                }),
            }
        }
        if rows.is_empty() {
            return Ok(Appended {
                rejected,
                ..Appended::default()
            });
        }
        let batch = match converter
            .record_batch(&rows)
            .map_err(|e| e.to_string())
            .and_then(|b| retype(b, &arrow_schema))
        {
            Ok(b) => b,
            Err(why) => {
                // A batch the table's Arrow form refuses as a whole would
                // be refused on every retry: its records go to the error
                // output instead of stalling the stream.
                rejected.extend(kept.into_iter().map(|index| Rejected {
                    index,
                    code: TYPE_MISMATCH,
                    message: format!("The records do not fit the table's schema: {why}"),
                }));
                rejected.sort_by_key(|r| r.index);
                return Ok(Appended {
                    rejected,
                    ..Appended::default()
                });
            }
        };
        let rows_n = batch.num_rows() as u64;
        let files = write_data_file(&t, iceberg_schema, batch).await?;
        let data_file = files.first().map(|f| f.file_path().to_string());
        let props = HashMap::from([
            (WRITER_PROPERTY.to_string(), tag.writer.clone()),
            (
                RANGE_PROPERTY.to_string(),
                format!("{}-{}", tag.start, tag.end),
            ),
        ]);
        let tx = Transaction::new(&t);
        let action = tx
            .fast_append()
            .add_data_files(files)
            .set_snapshot_properties(props);
        let tx = action.apply(tx).map_err(unavailable)?;
        let committed = tx
            .commit(self.catalog.as_ref())
            .await
            .map_err(unavailable)?;
        Ok(Appended {
            rows: rows_n,
            rejected,
            duplicate: false,
            data_file,
            snapshot_id: committed.metadata().current_snapshot_id(),
        })
    }
}

/// The reader for the table's current schema, if Firehose can write it.
fn usable(t: &Table) -> Result<Converter, TableError> {
    let m = t.metadata();
    if !m.default_partition_spec().is_unpartitioned() {
        return Err(TableError::Unusable(format!(
            "Table {} is partitioned; this server appends to unpartitioned Iceberg tables only.",
            t.identifier()
        )));
    }
    let cols = schema::to_hive(m.current_schema())
        .map_err(|e| TableError::Unusable(format!("Table {}: {e}", t.identifier())))?;
    Converter::new(&cols, Deserializer::default())
        .map_err(|e| TableError::Unusable(format!("Table {}: {e}", t.identifier())))
}

/// `writer`'s newest commit: walks from the current snapshot back through
/// its ancestors.
fn last_range(t: &Table, writer: &str) -> Option<(u64, u64)> {
    let m = t.metadata();
    let mut at = m.current_snapshot();
    for _ in 0..MAX_SNAPSHOT_WALK {
        let s = at?;
        let props = &s.summary().additional_properties;
        if props.get(WRITER_PROPERTY).is_some_and(|w| w == writer)
            && let Some((a, b)) = props.get(RANGE_PROPERTY).and_then(|r| r.split_once('-'))
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
        {
            return Some((a, b));
        }
        at = s.parent_snapshot_id().and_then(|p| m.snapshot_by_id(p));
    }
    None
}

/// The reader's arrays as the table's Arrow schema (field ids, Iceberg's
/// names for list elements and map entries, time zones): same values,
/// cast where the types' spelling differs.
fn retype(batch: RecordBatch, schema: &Arc<arrow_schema::Schema>) -> Result<RecordBatch, String> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (col, field) in batch.columns().iter().zip(schema.fields()) {
        if col.data_type() == field.data_type() {
            cols.push(col.clone());
        } else {
            cols.push(
                arrow_cast::cast(col, field.data_type())
                    .map_err(|e| format!("column {}: {e}", field.name()))?,
            );
        }
    }
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
}

async fn write_data_file(
    t: &Table,
    schema: iceberg::spec::SchemaRef,
    batch: RecordBatch,
) -> Result<Vec<iceberg::spec::DataFile>, TableError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by("ripstream (Amazon Data Firehose Iceberg delivery)".into())
        .build();
    let locations = DefaultLocationGenerator::new(t.metadata()).map_err(unavailable)?;
    let names = DefaultFileNameGenerator::new(
        format!("firehose-{}", uuid::Uuid::new_v4()),
        None,
        DataFileFormat::Parquet,
    );
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        ParquetWriterBuilder::new(props, schema),
        t.file_io().clone(),
        locations,
        names,
    );
    let mut w = DataFileWriterBuilder::new(rolling)
        .build(None)
        .await
        .map_err(unavailable)?;
    w.write(batch).await.map_err(unavailable)?;
    w.close().await.map_err(unavailable)
}

#[cfg(test)]
mod tests;
