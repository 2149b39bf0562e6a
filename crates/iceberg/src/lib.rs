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
//! Every call names the directories ([`Prefix`]es) its stream was
//! authorized to write when it was created: a table whose files would go
//! anywhere else (its `location`, `write.data.path` or `metadata_location`
//! moved since) is refused ([`TableError::NotAuthorized`]), and the table's
//! file I/O refuses every path outside them besides.
//!
//! A commit that fails leaves no data file behind: the table is read again
//! and, unless it holds the commit after all (an answer lost on the way),
//! the file is deleted; when the table cannot be read then, the file is
//! remembered and settled by the writer's next append.
//!
//! [`Tables::write`] adds Firehose's `update` and `delete` operations by
//! unique keys, committed as position deletes ([`delta`]).
//!
//! Not here (yet): partitioned tables (refused), schema evolution.

mod avro_bound;
pub mod catalog;
mod delta;
pub mod schema;
pub mod storage;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use futures::FutureExt;
use iceberg::spec::{DataFileFormat, TableMetadata};
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
use tracing::{info, warn};

pub use catalog::GlueCatalog;
pub use delta::Op;
pub use storage::Prefix;

/// The snapshot summary property naming who committed it.
pub const WRITER_PROPERTY: &str = "ripstream.firehose.writer";
/// The snapshot summary property holding the committed log offsets,
/// `start-end` (end exclusive).
pub const RANGE_PROPERTY: &str = "ripstream.firehose.range";
/// The snapshot summary property naming the append that made it (its data
/// files are named after it too), so a commit whose answer was lost is
/// recognized.
pub const COMMIT_PROPERTY: &str = "ripstream.firehose.commit";

/// How far back through a table's snapshots a writer's last commit is
/// looked for: other writers' commits in between are passed over.
const MAX_SNAPSHOT_WALK: usize = 10_000;

/// Tries at a commit that loses races to other writers, and the first wait
/// between them (doubled up to [`MAX_COMMIT_WAIT`]). Bounded here whatever
/// the table's `commit.retry.*` properties say: the stream's RetryOptions
/// decide how long a table may keep failing.
const COMMIT_ATTEMPTS: u32 = 5;
const FIRST_COMMIT_WAIT: Duration = Duration::from_millis(100);
const MAX_COMMIT_WAIT: Duration = Duration::from_secs(2);

/// Most data files of failed commits remembered for a later settling.
const MAX_UNSETTLED: usize = 1_000;

/// Error codes of records a table refuses, in the error output.
pub const MALFORMED: &str = "Iceberg.MalformedRecord";
pub const TYPE_MISMATCH: &str = "Iceberg.DataTypeMismatch";
pub const MISSING_COLUMN: &str = "Iceberg.MissingColumnWithinRecord";
/// An update or delete whose unique key columns are missing or null.
pub const MISSING_UNIQUE_KEY: &str = "Iceberg.MissingUniqueKey";
/// An update or delete to a table with no UniqueKeys and no identifier
/// fields.
pub const NO_UNIQUE_KEYS: &str = "Iceberg.UniqueKeysNotConfigured";

/// Why a table cannot take records now.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The table is missing, not an Iceberg table, or of a shape this
    /// server cannot write (its owner must change it).
    #[error("{0}")]
    Unusable(String),
    /// Storage or the catalog failed, or the commit lost every retry.
    #[error("{0}")]
    Unavailable(String),
    /// The table's files would go where the stream may not write.
    #[error("{0}")]
    NotAuthorized(String),
}

impl TableError {
    pub fn code(&self) -> &'static str {
        match self {
            TableError::Unusable(_) => "Iceberg.InvalidTable",
            TableError::Unavailable(_) => "Iceberg.CommitFailed",
            TableError::NotAuthorized(_) => "Iceberg.LocationNotAuthorized",
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
    /// lost): nothing was written; `rejected` are the records the table
    /// refused then, read again.
    pub duplicate: bool,
    /// The data file and snapshot written, if any rows were.
    pub data_file: Option<String>,
    pub snapshot_id: Option<i64>,
}

/// The data files of a commit that failed with the table unreadable, kept
/// until the writer's next append reads the table and settles them.
#[derive(Debug, Clone)]
struct Unsettled {
    database: String,
    table: String,
    writer: String,
    start: u64,
    commit: String,
    files: Vec<String>,
}

/// What the table says of a commit that seemed to fail.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// It took: a snapshot of the table is the commit's.
    Committed(i64),
    /// It did not, and no snapshot can refer to its files.
    Unreferenced,
    /// The table's history is cut short (expired snapshots): perhaps.
    Unknown,
}

/// The Iceberg tables of the Glue subset, in the embedded store.
#[derive(Debug, Clone)]
pub struct Tables {
    glue: Glue,
    objects: Objects,
    max_file_bytes: u64,
    /// The most rows of a table's files an update or delete reads.
    max_scanned_rows: u64,
    unsettled: Arc<Mutex<Vec<Unsettled>>>,
    #[cfg(test)]
    faults: Arc<catalog::Faults>,
}

/// Runs a call on a table whose metadata anyone who can write it made:
/// a panic in the `iceberg` crate (arithmetic on a crafted sequence
/// number, say) refuses the table instead of killing the delivery task
/// that would only meet it again.
async fn contained<T>(f: impl Future<Output = Result<T, TableError>>) -> Result<T, TableError> {
    match AssertUnwindSafe(f).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(TableError::Unusable(format!(
                "The Iceberg library failed on the table's metadata: {why}"
            )))
        }
    }
}

/// The most bytes `apache-avro` allocates for one byte string or one
/// block of array items while decoding a manifest (its default is 512 MiB).
const AVRO_MAX_ALLOCATION: usize = 16 << 20;

impl Tables {
    pub fn new(glue: Glue, objects: Objects) -> Tables {
        // Process-wide and set once: before any manifest is decoded.
        apache_avro::util::max_allocation_bytes(AVRO_MAX_ALLOCATION);
        Tables {
            glue,
            objects,
            max_file_bytes: storage::MAX_FILE_BYTES,
            max_scanned_rows: delta::MAX_SCANNED_ROWS,
            unsettled: Arc::default(),
            #[cfg(test)]
            faults: Arc::default(),
        }
    }

    /// The same tables with another cap on whole-file reads (tests).
    pub fn with_max_file_bytes(mut self, max: u64) -> Tables {
        self.max_file_bytes = max;
        self
    }

    /// The same tables with another bound on the rows an update or delete
    /// reads (tests).
    pub fn with_max_scanned_rows(mut self, max: u64) -> Tables {
        self.max_scanned_rows = max;
        self
    }

    /// A catalog whose file I/O touches `scope` only (`None`: anywhere,
    /// for reads that decide what a stream must be authorized for).
    pub fn catalog(&self, scope: Option<&[Prefix]>) -> GlueCatalog {
        let storage = storage::ObjectsStorage::new(self.objects.clone())
            .with_max_file_bytes(self.max_file_bytes);
        let io = match scope {
            Some(scope) => storage.scoped(scope),
            None => storage,
        }
        .into_file_io();
        #[allow(unused_mut)]
        let mut c =
            GlueCatalog::new(self.glue.clone(), io).with_max_file_bytes(self.max_file_bytes);
        #[cfg(test)]
        {
            c.faults = self.faults.clone();
        }
        c
    }

    /// The directories the table's commits write to: its data directory,
    /// its metadata directory (manifests) and the one its
    /// `metadata_location` is in; for a Glue table with columns but no
    /// metadata yet, those its first commit would write. Nothing is
    /// written: this is what a stream for the table must be allowed.
    pub async fn locations(&self, database: &str, table: &str) -> Result<Vec<Prefix>, TableError> {
        contained(async {
            let catalog = self.catalog(None);
            let glue = glue_table(&catalog, database, table).await?;
            match glue.metadata_location() {
                Some(loc) => {
                    let m = catalog::read_metadata(catalog.file_io(), loc, self.max_file_bytes)
                        .await
                        .map_err(unavailable)?;
                    write_prefixes(loc, &m)
                }
                None => {
                    let location = glue
                        .location()
                        .ok_or_else(|| no_location(database, table))?;
                    initial_prefixes(location)
                        .map_err(|e| bad_location(database, table, location, e))
                }
            }
        })
        .await
    }

    /// The table as Glue points at it, its Iceberg metadata created first
    /// when the Glue table is marked ICEBERG and has columns and a
    /// location but no metadata yet (how this server's users make a table
    /// without an Iceberg library), with the catalog to commit it through:
    /// both refused unless every file the table's commits write is in
    /// `scope`.
    async fn open(
        &self,
        database: &str,
        table: &str,
        scope: &[Prefix],
    ) -> Result<(Table, GlueCatalog), TableError> {
        let ident = TableIdent::new(NamespaceIdent::new(database.to_string()), table.to_string());
        let catalog = self.catalog(Some(scope));
        for _ in 0..3 {
            let glue = glue_table(&catalog, database, table).await?;
            if let Some(loc) = glue.metadata_location() {
                // Where the metadata file is, before it is read at all.
                within(&[parent_dir(loc)?], scope, database, table)?;
                let t = iceberg::Catalog::load_table(&catalog, &ident)
                    .await
                    .map_err(unavailable)?;
                within(&write_prefixes(loc, t.metadata())?, scope, database, table)?;
                return Ok((t, catalog));
            }
            let schema = schema::from_hive(&glue.columns()).map_err(|e| {
                TableError::Unusable(format!(
                    "Glue table {database}.{table} has no metadata_location, and its columns cannot make one: {e}"
                ))
            })?;
            let Some(location) = glue.location() else {
                return Err(no_location(database, table));
            };
            let prefixes = initial_prefixes(location)
                .map_err(|e| bad_location(database, table, location, e))?;
            within(&prefixes, scope, database, table)?;
            let creation = TableCreation::builder()
                .name(table.to_string())
                .location(location.trim_end_matches('/').to_string())
                .schema(schema)
                .build();
            match catalog.initialize(&ident, &glue, creation).await {
                Ok(t) => {
                    info!(database, table, location = %t.metadata_location().unwrap_or(""), "created the Iceberg metadata of the Glue table");
                    return Ok((t, catalog));
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
    /// metadata created if need be), writes within `scope`, is
    /// unpartitioned and has a schema Firehose can write, with the
    /// `unique_keys` (if any) among its top-level primitive columns.
    pub async fn check(
        &self,
        database: &str,
        table: &str,
        unique_keys: &[String],
        scope: &[Prefix],
    ) -> Result<(), TableError> {
        contained(async {
            let (t, _) = self.open(database, table, scope).await?;
            usable(&t)?;
            if !unique_keys.is_empty() {
                let schema = t.metadata().current_schema();
                let arrow = arrow_form(schema)?;
                delta::key_columns(schema, &arrow, unique_keys).map_err(|why| {
                    TableError::Unusable(format!("Table {database}.{table}: {why}."))
                })?;
            }
            Ok(())
        })
        .await
    }

    /// The log offsets of `writer`'s last commit to the table, if any.
    pub async fn committed(
        &self,
        database: &str,
        table: &str,
        writer: &str,
        scope: &[Prefix],
    ) -> Result<Option<(u64, u64)>, TableError> {
        contained(async {
            let (t, _) = self.open(database, table, scope).await?;
            Ok(last_range(&t, writer))
        })
        .await
    }

    /// Appends a batch of JSON records as one data file and one snapshot,
    /// unless the batch (its tag's range) was committed already.
    pub async fn append(
        &self,
        database: &str,
        table: &str,
        records: &[&[u8]],
        tag: &CommitTag,
        scope: &[Prefix],
    ) -> Result<Appended, TableError> {
        self.write(database, table, records, &[], &[], tag, scope)
            .await
    }

    /// [`Tables::append`] with each record's operation (`ops[i]`, insert
    /// when `ops` is shorter): updates and deletes replace or remove the
    /// table's rows with their values of `unique_keys` (the table's
    /// identifier fields when empty), all in one snapshot (see
    /// [`delta`]). Within the batch the later operation on a key wins.
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        &self,
        database: &str,
        table: &str,
        records: &[&[u8]],
        ops: &[Op],
        unique_keys: &[String],
        tag: &CommitTag,
        scope: &[Prefix],
    ) -> Result<Appended, TableError> {
        contained(self.write_within(database, table, records, ops, unique_keys, tag, scope)).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_within(
        &self,
        database: &str,
        table: &str,
        records: &[&[u8]],
        ops: &[Op],
        unique_keys: &[String],
        tag: &CommitTag,
        scope: &[Prefix],
    ) -> Result<Appended, TableError> {
        let (t, catalog) = self.open(database, table, scope).await?;
        self.settle_unsettled(database, table, &tag.writer, &t, &catalog)
            .await;
        // A batch committed already is not written again, but the records
        // the table refused are answered again: the answer of the commit
        // may have been lost before they reached the error output (a
        // crash, or another table of the stream failing).
        let duplicate = last_range(&t, &tag.writer).is_some_and(|(_, end)| end >= tag.end);
        let committed = || Appended {
            duplicate: true,
            ..Appended::default()
        };
        let op_of = |i: usize| ops.get(i).copied().unwrap_or_default();
        let by_key = (0..records.len()).any(|i| op_of(i).by_key());
        let prepared = (|| {
            let converter = usable(&t)?;
            let iceberg_schema = t.metadata().current_schema().clone();
            let arrow_schema = Arc::new(arrow_form(&iceberg_schema)?);
            let keys = if by_key {
                // Known before anything is written: a retry cannot change it.
                let version = t.metadata().format_version();
                if version != iceberg::spec::FormatVersion::V2 {
                    return Err(TableError::Unusable(format!(
                        "Table {database}.{table} is Iceberg format {version:?}: updates and deletes are written as format 2 position deletes."
                    )));
                }
                delta::key_columns(&iceberg_schema, &arrow_schema, unique_keys).map_err(|why| {
                    TableError::Unusable(format!("Table {database}.{table}: {why}."))
                })?
            } else {
                None
            };
            Ok((converter, iceberg_schema, arrow_schema, keys))
        })();
        let (converter, iceberg_schema, arrow_schema, keys) = match prepared {
            Ok(p) => p,
            Err(_) if duplicate => return Ok(committed()),
            Err(e) => return Err(e),
        };
        let required: Vec<(usize, String)> = iceberg_schema
            .as_struct()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.required)
            .map(|(i, f)| (i, f.name.clone()))
            .collect();
        // Rows written (inserts and updates) and rows that only name keys
        // (deletes), each with its record's index.
        let mut rows = Vec::with_capacity(records.len());
        let mut kept = Vec::with_capacity(records.len());
        let mut delete_rows = Vec::new();
        let mut deleted = Vec::new();
        let mut rejected = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let op = op_of(i);
            let reject = |code: &'static str, message: String| Rejected {
                index: i,
                code,
                message,
            };
            let row = match converter.read(r) {
                Ok(row) => row,
                Err(e) => {
                    rejected.push(reject(
                        match e {
                            RecordError::NotJson(_) | RecordError::NotObject => MALFORMED,
                            RecordError::Value { .. } => TYPE_MISMATCH,
                        },
                        e.to_string(),
                    ));
                    continue;
                }
            };
            if op.by_key() {
                let Some(k) = &keys else {
                    rejected.push(reject(
                        NO_UNIQUE_KEYS,
                        "The record's operation updates or deletes by unique key, but the destination table configuration names no UniqueKeys and the table has no identifier fields.".into(),
                    ));
                    continue;
                };
                if let Some(n) = k.index.iter().position(|c| row.is_null(*c)) {
                    rejected.push(reject(
                        MISSING_UNIQUE_KEY,
                        format!("The record has no value for unique key {}.", k.names[n]),
                    ));
                    continue;
                }
            }
            if op == Op::Delete {
                delete_rows.push(row);
                deleted.push(i);
                continue;
            }
            if let Some((_, name)) = required.iter().find(|(c, _)| row.is_null(*c)) {
                rejected.push(reject(
                    MISSING_COLUMN,
                    format!("The record has no value for required column {name}."),
                ));
                continue;
            }
            rows.push(row);
            kept.push(i);
        }
        if duplicate {
            return Ok(Appended {
                rejected,
                ..committed()
            });
        }
        if rows.is_empty() && delete_rows.is_empty() {
            return Ok(Appended {
                rejected,
                ..Appended::default()
            });
        }
        let batch = if rows.is_empty() {
            None
        } else {
            match converter
                .record_batch(&rows)
                .map_err(|e| e.to_string())
                .and_then(|b| retype(b, &arrow_schema))
            {
                Ok(b) => Some(b),
                Err(why) => {
                    // A batch the table's Arrow form refuses as a whole
                    // would be refused on every retry: its records go to
                    // the error output instead of stalling the stream.
                    rejected.extend(kept.iter().map(|&index| Rejected {
                        index,
                        code: TYPE_MISMATCH,
                        message: format!("The records do not fit the table's schema: {why}"),
                    }));
                    rejected.sort_by_key(|r| r.index);
                    if delete_rows.is_empty() {
                        return Ok(Appended {
                            rejected,
                            ..Appended::default()
                        });
                    }
                    kept.clear();
                    None
                }
            }
        };
        let accepted = (kept.len() + deleted.len()) as u64;
        // The keys to delete from the table, and which written rows a
        // later operation on their key supersedes.
        let (batch, wanted) = match &keys {
            None => (batch, HashSet::new()),
            Some(k) => {
                let bad = |why: String| {
                    TableError::Unusable(format!(
                        "Table {database}.{table}: reading the unique keys: {why}"
                    ))
                };
                let written_keys = match &batch {
                    Some(b) => delta::batch_keys(b, k).map_err(bad)?,
                    None => Vec::new(),
                };
                let delete_keys = if delete_rows.is_empty() {
                    Vec::new()
                } else {
                    let b = converter
                        .record_batch(&delete_rows)
                        .map_err(|e| bad(e.to_string()))?;
                    let cols = k
                        .index
                        .iter()
                        .zip(&k.types)
                        .map(|(&c, ty)| {
                            arrow_cast::cast(b.column(c), ty).map_err(|e| bad(e.to_string()))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    delta::keys_of(&cols).map_err(bad)?
                };
                // Every accepted record in order: (op, key, written row).
                let mut order: Vec<(usize, Op, Option<&String>, Option<usize>)> = kept
                    .iter()
                    .enumerate()
                    .map(|(w, &i)| {
                        (
                            i,
                            op_of(i),
                            written_keys.get(w).and_then(Option::as_ref),
                            Some(w),
                        )
                    })
                    .chain(deleted.iter().enumerate().map(|(d, &i)| {
                        (
                            i,
                            Op::Delete,
                            delete_keys.get(d).and_then(Option::as_ref),
                            None,
                        )
                    }))
                    .collect();
                order.sort_by_key(|o| o.0);
                let mut later: HashSet<&String> = HashSet::new();
                let mut keep = vec![true; kept.len()];
                for &(_, op, key, w) in order.iter().rev() {
                    let superseded = key.is_some_and(|k| later.contains(k));
                    if let Some(w) = w {
                        keep[w] = !superseded;
                    }
                    if op.by_key()
                        && let Some(k) = key
                    {
                        later.insert(k);
                    }
                }
                let wanted: HashSet<String> = later.into_iter().cloned().collect();
                let batch = match batch {
                    Some(b) if keep.iter().all(|k| *k) => Some(b),
                    Some(b) => Some(
                        arrow_select::filter::filter_record_batch(&b, &BooleanArray::from(keep))
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                    None => None,
                };
                (batch.filter(|b| b.num_rows() > 0), wanted)
            }
        };
        let commit = uuid::Uuid::new_v4().to_string();
        let files = match batch {
            Some(b) => write_data_file(&t, iceberg_schema, b, &commit).await?,
            None => Vec::new(),
        };
        let mut paths: Vec<String> = files.iter().map(|f| f.file_path().to_string()).collect();
        let props = HashMap::from([
            (WRITER_PROPERTY.to_string(), tag.writer.clone()),
            (
                RANGE_PROPERTY.to_string(),
                format!("{}-{}", tag.start, tag.end),
            ),
            (COMMIT_PROPERTY.to_string(), commit.clone()),
        ]);
        let ident = t.identifier().clone();
        let mut t = t;
        let mut wait = FIRST_COMMIT_WAIT;
        let mut attempt = 1;
        let failure = loop {
            let mut delete_file = None;
            let outcome = match &keys {
                Some(k) if !wanted.is_empty() => {
                    // The rows to delete, in the table as it is now (read
                    // again after a lost race: the winner may have added
                    // some).
                    let positions =
                        match delta::positions(&t, k, &wanted, self.max_scanned_rows).await {
                            Ok(p) => p,
                            Err(e) => {
                                catalog.discard(&paths).await;
                                return Err(e);
                            }
                        };
                    let name = format!("{commit}-{attempt}");
                    let mut deletes = Vec::new();
                    if !positions.is_empty() {
                        match delta::write_position_deletes(
                            &t,
                            &data_location(t.metadata()),
                            &name,
                            &positions,
                        )
                        .await
                        {
                            Ok(f) => {
                                delete_file = Some(f.file_path().to_string());
                                deletes.push(f);
                            }
                            Err(e) => {
                                catalog.discard(&paths).await;
                                return Err(e);
                            }
                        }
                    }
                    if files.is_empty() && deletes.is_empty() {
                        // Deletes of keys the table does not hold.
                        return Ok(Appended {
                            rows: accepted,
                            rejected,
                            ..Appended::default()
                        });
                    }
                    let action = delta::RowDelta {
                        data_files: files.clone(),
                        delete_files: deletes,
                        properties: props.clone(),
                        commit: name,
                    };
                    match action.prepare(&t).await {
                        Ok((requirements, updates)) => {
                            catalog.commit_changes(&ident, requirements, updates).await
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => {
                    // The data files are new (their names hold a fresh
                    // uuid): the crate's check for files the table already
                    // has would read every manifest of the table on every
                    // commit.
                    let tx = Transaction::new(&t);
                    let action = tx
                        .fast_append()
                        .with_check_duplicate(false)
                        .add_data_files(files.clone())
                        .set_snapshot_properties(props.clone());
                    match action.apply(tx) {
                        Ok(tx) => tx.commit(&catalog).await,
                        Err(e) => Err(e),
                    }
                }
            };
            match outcome {
                Ok(committed) => {
                    return Ok(Appended {
                        rows: accepted,
                        rejected,
                        duplicate: false,
                        data_file: paths.first().cloned(),
                        snapshot_id: committed.metadata().current_snapshot_id(),
                    });
                }
                Err(e)
                    if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts
                        && attempt < COMMIT_ATTEMPTS =>
                {
                    if let Some(p) = delete_file.take() {
                        catalog.discard(&[p]).await;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_COMMIT_WAIT);
                    attempt += 1;
                    match iceberg::Catalog::load_table(&catalog, &ident).await {
                        Ok(fresh) => t = fresh,
                        Err(e) => break e,
                    }
                }
                Err(e) => {
                    paths.extend(delete_file);
                    break e;
                }
            }
        };
        let unsettled = Unsettled {
            database: database.to_string(),
            table: table.to_string(),
            writer: tag.writer.clone(),
            start: tag.start,
            commit,
            files: paths,
        };
        match self.settle(&unsettled, &catalog, &ident).await {
            Some(Fate::Committed(snapshot_id)) => {
                info!(database, table, snapshot_id, error = %failure, "the commit failed as it was answered, yet the table holds it");
                return Ok(Appended {
                    rows: accepted,
                    rejected,
                    duplicate: false,
                    data_file: unsettled.files.first().cloned(),
                    snapshot_id: Some(snapshot_id),
                });
            }
            Some(Fate::Unreferenced) => {}
            Some(Fate::Unknown) | None => self.remember(unsettled),
        }
        Err(unavailable(failure))
    }

    /// Reads the table and, unless it holds the commit (or might: its
    /// history is cut short), deletes the commit's data files. `None`: the
    /// table cannot be read now.
    async fn settle(
        &self,
        u: &Unsettled,
        catalog: &GlueCatalog,
        ident: &TableIdent,
    ) -> Option<Fate> {
        let t = match iceberg::Catalog::load_table(catalog, ident).await {
            Ok(t) => t,
            Err(e) => {
                warn!(database = %u.database, table = %u.table, error = %e, "cannot read the table after a failed commit; its data file is settled later");
                return None;
            }
        };
        let fate = fate(t.metadata(), u);
        if fate == Fate::Unreferenced {
            catalog.discard(&u.files).await;
        }
        Some(fate)
    }

    fn remember(&self, u: Unsettled) {
        let mut list = self.unsettled.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= MAX_UNSETTLED {
            let gone = list.remove(0);
            warn!(files = ?gone.files, "too many data files of failed commits wait to be settled; the oldest stays as an orphan");
        }
        list.push(u);
    }

    /// Settles the data files of `writer`'s earlier failed commits to the
    /// table, now that it could be read.
    async fn settle_unsettled(
        &self,
        database: &str,
        table: &str,
        writer: &str,
        t: &Table,
        catalog: &GlueCatalog,
    ) {
        let mine: Vec<Unsettled> = {
            let mut list = self.unsettled.lock().unwrap_or_else(|e| e.into_inner());
            let (mine, rest) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|u| u.database == database && u.table == table && u.writer == writer);
            *list = rest;
            mine
        };
        for u in mine {
            match fate(t.metadata(), &u) {
                Fate::Unreferenced => catalog.discard(&u.files).await,
                Fate::Committed(_) => {}
                Fate::Unknown => {
                    warn!(database, table, files = ?u.files, "the table's history is cut short: a failed commit's data file stays, as it may be referenced");
                }
            }
        }
    }
}

async fn glue_table(
    catalog: &GlueCatalog,
    database: &str,
    table: &str,
) -> Result<catalog::GlueTable, TableError> {
    let glue = match catalog.glue_table(database, table).await {
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
    Ok(glue)
}

fn no_location(database: &str, table: &str) -> TableError {
    TableError::Unusable(format!(
        "Glue table {database}.{table} has no metadata_location and no StorageDescriptor.Location to create the table at."
    ))
}

fn bad_location(database: &str, table: &str, location: &str, e: iceberg::Error) -> TableError {
    TableError::Unusable(format!(
        "Glue table {database}.{table}: StorageDescriptor.Location {location}: {}",
        e.message()
    ))
}

/// The directory a file is in.
fn parent_dir(location: &str) -> Result<Prefix, TableError> {
    let dir = location.rsplit_once('/').map_or("", |(d, _)| d);
    Prefix::dir(dir)
        .map_err(|e| TableError::Unusable(format!("metadata_location {location}: {}", e.message())))
}

/// Where a table's data files go: `write.data.path` (or the older
/// `write.folder-storage.path`), else the table's `data/`.
fn data_location(m: &TableMetadata) -> String {
    let props = m.properties();
    props
        .get("write.data.path")
        .or_else(|| props.get("write.folder-storage.path"))
        .map(|p| p.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("{}/data", m.location()))
}

/// The directories a commit to the table writes: data files, manifests
/// (the table's `metadata/`, where the crate puts them) and the next
/// metadata file (beside the current one).
fn write_prefixes(metadata_location: &str, m: &TableMetadata) -> Result<Vec<Prefix>, TableError> {
    let bad = |what: &str, e: iceberg::Error| {
        TableError::Unusable(format!("The table's {what}: {}", e.message()))
    };
    let mut out = vec![
        Prefix::dir(&data_location(m)).map_err(|e| bad("data location", e))?,
        Prefix::dir(&format!("{}/metadata", m.location())).map_err(|e| bad("location", e))?,
        parent_dir(metadata_location)?,
    ];
    out.sort();
    out.dedup();
    Ok(out)
}

/// What a new table at `location` writes: its `data/` and `metadata/`.
fn initial_prefixes(location: &str) -> iceberg::Result<Vec<Prefix>> {
    let base = location.trim_end_matches('/');
    storage::split_location(&format!("{base}/metadata"))?;
    Ok(vec![
        Prefix::dir(&format!("{base}/data"))?,
        Prefix::dir(&format!("{base}/metadata"))?,
    ])
}

/// Refuses a table that would write outside `scope`.
fn within(
    prefixes: &[Prefix],
    scope: &[Prefix],
    database: &str,
    table: &str,
) -> Result<(), TableError> {
    let outside: Vec<String> = prefixes
        .iter()
        .filter(|p| !scope.iter().any(|s| s.covers(p)))
        .map(Prefix::to_string)
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    let allowed: Vec<String> = scope.iter().map(Prefix::to_string).collect();
    Err(TableError::NotAuthorized(format!(
        "Table {database}.{table} now writes to {}, outside the locations the delivery stream was authorized for when it was created ({}).",
        outside.join(", "),
        if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        }
    )))
}

/// The table's schema as Arrow (field ids, Iceberg's names).
fn arrow_form(schema: &iceberg::spec::Schema) -> Result<arrow_schema::Schema, TableError> {
    iceberg::arrow::schema_to_arrow_schema(schema)
        .map_err(|e| TableError::Unusable(format!("the table's schema has no Arrow form: {e}")))
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

/// A snapshot's `start-end` range, if it has a well-formed one.
fn range_of(props: &HashMap<String, String>) -> Option<(u64, u64)> {
    let (a, b) = props.get(RANGE_PROPERTY)?.split_once('-')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a < b).then_some((a, b))
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
            && let Some(r) = range_of(props)
        {
            return Some(r);
        }
        at = s.parent_snapshot_id().and_then(|p| m.snapshot_by_id(p));
    }
    None
}

/// Whether the table holds a commit that seemed to fail. Any snapshot
/// naming it holds it (rolled back or not). None does when the table's
/// history is whole back to the writer's commit before it (its commits
/// are made one after the other) or to the table's first snapshot; when
/// the history is cut short before that (expired snapshots), the commit
/// may be among the expired ones with its files still live.
fn fate(m: &TableMetadata, u: &Unsettled) -> Fate {
    if let Some(s) = m
        .snapshots()
        .find(|s| s.summary().additional_properties.get(COMMIT_PROPERTY) == Some(&u.commit))
    {
        return Fate::Committed(s.snapshot_id());
    }
    let mut at = m.current_snapshot();
    for _ in 0..MAX_SNAPSHOT_WALK {
        let Some(s) = at else {
            return Fate::Unreferenced;
        };
        let props = &s.summary().additional_properties;
        if props.get(WRITER_PROPERTY) == Some(&u.writer)
            && range_of(props).is_some_and(|(_, end)| end <= u.start)
        {
            return Fate::Unreferenced;
        }
        match s.parent_snapshot_id() {
            None => return Fate::Unreferenced,
            Some(p) => match m.snapshot_by_id(p) {
                Some(parent) => at = Some(parent),
                None => return Fate::Unknown,
            },
        }
    }
    Fate::Unknown
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

/// Writes the batch as data files named after the commit, where
/// [`write_prefixes`] says the table's data goes.
async fn write_data_file(
    t: &Table,
    schema: iceberg::spec::SchemaRef,
    batch: RecordBatch,
    commit: &str,
) -> Result<Vec<iceberg::spec::DataFile>, TableError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by("ripstream (Amazon Data Firehose Iceberg delivery)".into())
        .build();
    let locations = DefaultLocationGenerator::with_data_location(data_location(t.metadata()));
    let names =
        DefaultFileNameGenerator::new(format!("firehose-{commit}"), None, DataFileFormat::Parquet);
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
