//! Updates and deletes by unique keys: Firehose's `update` and `delete`
//! operations on a table with `UniqueKeys`.
//!
//! They are committed as Iceberg v2 *position* deletes (merge on read):
//! the live rows whose keys an update or delete names are found by reading
//! the key columns of the table's data files, and one delete file lists
//! them (`file_path`, `pos`) beside the flush's new data file, in one
//! snapshot. Position deletes rather than the equality deletes AWS writes
//! because every Iceberg reader applies them (pyiceberg, DuckDB and
//! Trino read position deletes; pyiceberg refuses equality deletes), at the
//! cost of reading the key columns of the table's live files on each flush
//! that updates or deletes (inserts alone read nothing).
//!
//! The `iceberg` crate's transactions add data files only (and its action
//! trait is its own), so the snapshot is made here ([`RowDelta`]: the
//! current snapshot's manifests carried over, a data manifest and a delete
//! manifest added, one manifest list) and committed through the catalog.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use bytes::Bytes;
use futures::TryStreamExt;
use iceberg::arrow::ArrowFileReader;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, FormatVersion, MAIN_BRANCH,
    ManifestContentType, ManifestFile, ManifestListWriter, ManifestWriterBuilder, Operation,
    Schema, Snapshot, SnapshotReference, SnapshotRetention, Summary, Type,
};
use iceberg::table::Table;
use iceberg::{Error, ErrorKind, TableRequirement, TableUpdate};
use parquet::arrow::{
    ArrowWriter, PARQUET_FIELD_ID_META_KEY, ParquetRecordBatchStreamBuilder, ProjectionMask,
};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::TableError;

/// The reserved field ids of a position delete file's columns (the
/// Iceberg spec's `file_path` and `pos`).
const FILE_PATH_FIELD_ID: i32 = 2_147_483_546;
const POS_FIELD_ID: i32 = 2_147_483_545;

/// What a record does to the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Op {
    /// Appended as a new row (the default, as on AWS).
    #[default]
    Insert,
    /// Replaces the rows with its unique keys (or is inserted when there
    /// are none).
    Update,
    /// Deletes the rows with its unique keys; only the keys are read.
    Delete,
}

impl Op {
    /// Whether it finds rows by unique key.
    pub fn by_key(self) -> bool {
        self != Op::Insert
    }
}

/// The table's unique-key columns: top-level primitive columns.
#[derive(Debug, Clone)]
pub(crate) struct KeyColumns {
    /// Their positions in the table's schema (and its Arrow form).
    pub index: Vec<usize>,
    pub ids: Vec<i32>,
    pub names: Vec<String>,
    /// Their Arrow types in the table's current schema: every file's
    /// values are cast to them before they are compared.
    pub types: Vec<DataType>,
}

/// The key columns `names` name (case-insensitively), or the schema's
/// identifier fields when `names` is empty; `Ok(None)` when there are
/// neither.
pub(crate) fn key_columns(
    schema: &Schema,
    arrow: &ArrowSchema,
    names: &[String],
) -> Result<Option<KeyColumns>, String> {
    let fields = schema.as_struct().fields();
    let ids: Vec<i32> = if names.is_empty() {
        schema.identifier_field_ids().collect()
    } else {
        let mut ids = Vec::with_capacity(names.len());
        for n in names {
            let f = schema
                .field_by_name_case_insensitive(n)
                .filter(|f| fields.iter().any(|t| t.id == f.id))
                .ok_or_else(|| format!("unique key {n} is not a top-level column of the table"))?;
            if !ids.contains(&f.id) {
                ids.push(f.id);
            }
        }
        ids
    };
    if ids.is_empty() {
        return Ok(None);
    }
    let mut out = KeyColumns {
        index: Vec::new(),
        ids: Vec::new(),
        names: Vec::new(),
        types: Vec::new(),
    };
    for id in ids {
        let Some(i) = fields.iter().position(|f| f.id == id) else {
            return Err(format!(
                "identifier field {id} is not a top-level column of the table"
            ));
        };
        let f = &fields[i];
        if !matches!(*f.field_type, Type::Primitive(_)) {
            return Err(format!("unique key {} is not of a primitive type", f.name));
        }
        out.index.push(i);
        out.ids.push(id);
        out.names.push(f.name.clone());
        out.types.push(arrow.field(i).data_type().clone());
    }
    Ok(Some(out))
}

/// Each row's key, comparable across files (`None`: a key column is null).
pub(crate) fn keys_of(cols: &[ArrayRef]) -> Result<Vec<Option<String>>, String> {
    let Some(first) = cols.first() else {
        return Ok(Vec::new());
    };
    let opts = FormatOptions::default();
    let formatters = cols
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(first.len());
    for i in 0..first.len() {
        if cols.iter().any(|c| c.is_null(i)) {
            out.push(None);
            continue;
        }
        let mut k = String::new();
        for f in &formatters {
            let v = f.value(i).to_string();
            // Length-prefixed, so no value can pass for two.
            let _ = write!(k, "{}:{v}", v.len());
        }
        out.push(Some(k));
    }
    Ok(out)
}

/// The key columns of `batch` (in the table's Arrow form), cast to the
/// table's key types.
pub(crate) fn batch_keys(
    batch: &RecordBatch,
    keys: &KeyColumns,
) -> Result<Vec<Option<String>>, String> {
    let cols: Vec<ArrayRef> = keys
        .index
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    keys_of(&cols)
}

fn unavailable(e: impl std::fmt::Display) -> TableError {
    TableError::Unavailable(e.to_string())
}

/// The most rows of a table's data (and position delete) files one flush
/// reads the key columns of: a bound on the work an update or delete does
/// (each file's footer is read first, so a file claiming more is refused
/// before it is decoded). A bigger table takes inserts only.
pub(crate) const MAX_SCANNED_ROWS: u64 = 100_000_000;

/// The most rows one flush deletes.
pub(crate) const MAX_POSITIONS: usize = 10_000_000;

/// A data file's path, shared by its rows' positions.
pub(crate) type Path = Arc<str>;

fn too_big(what: String) -> TableError {
    TableError::Unusable(format!(
        "{what}: updates and deletes by key read a bounded number of rows of a table's files and delete at most {MAX_POSITIONS} rows per flush (compact the table, or deliver inserts only)"
    ))
}

/// The live rows of the table's current snapshot whose keys are in
/// `wanted`, as (data file, position), sorted: rows an existing position
/// delete file deletes already are not live. At most `max_rows` rows of
/// the table's files are read ([`MAX_SCANNED_ROWS`] but in tests).
pub(crate) async fn positions(
    t: &Table,
    keys: &KeyColumns,
    wanted: &HashSet<String>,
    max_rows: u64,
) -> Result<Vec<(Path, i64)>, TableError> {
    let m = t.metadata();
    let Some(snapshot) = m.current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = t
        .manifest_list_reader(snapshot)
        .load()
        .await
        .map_err(unavailable)?;
    let mut out = Vec::new();
    let mut scanned = Budget {
        used: 0,
        max: max_rows,
    };
    let mut delete_manifests = Vec::new();
    for mf in list.entries() {
        // Decrypted by the `iceberg` crate past this server's bounds on
        // what a table file may hold.
        if mf.key_metadata.is_some() {
            return Err(TableError::Unusable(format!(
                "Manifest {} is encrypted: this server updates and deletes rows of tables with plain manifests only.",
                mf.manifest_path
            )));
        }
        if mf.content != ManifestContentType::Data {
            delete_manifests.push(mf);
            continue;
        }
        // A delete file applies within its data file's partition: the
        // one written here is unpartitioned.
        if m.partition_spec_by_id(mf.partition_spec_id)
            .is_none_or(|spec| !spec.is_unpartitioned())
        {
            return Err(TableError::Unusable(format!(
                "Manifest {} holds data files written under a partitioned spec: this server updates and deletes rows of unpartitioned tables only.",
                mf.manifest_path
            )));
        }
        let manifest = mf.load_manifest(t.file_io()).await.map_err(unavailable)?;
        for e in manifest.entries() {
            let f = e.data_file();
            if !e.is_alive() || f.content_type() != DataContentType::Data {
                continue;
            }
            if f.file_format() != DataFileFormat::Parquet {
                return Err(TableError::Unusable(format!(
                    "Data file {} is not Parquet: this server reads the keys of Parquet files only, so it cannot update or delete rows of the table.",
                    f.file_path()
                )));
            }
            positions_in(t, f.file_path(), keys, wanted, &mut scanned, &mut out).await?;
        }
    }
    if out.is_empty() {
        return Ok(out);
    }
    let mut found: HashMap<Path, HashSet<i64>> = HashMap::new();
    for (path, pos) in &out {
        found.entry(path.clone()).or_default().insert(*pos);
    }
    // Rows deleted already: a delete of them again would only make each
    // later update of the key delete more.
    let mut gone: HashMap<Path, HashSet<i64>> = HashMap::new();
    for mf in delete_manifests {
        let manifest = mf.load_manifest(t.file_io()).await.map_err(unavailable)?;
        for e in manifest.entries() {
            let f = e.data_file();
            if !e.is_alive()
                || f.content_type() != DataContentType::PositionDeletes
                || f.file_format() != DataFileFormat::Parquet
                || f.referenced_data_file()
                    .is_some_and(|r| !found.contains_key(r.as_str()))
            {
                continue;
            }
            deleted_in(t, f.file_path(), &found, &mut scanned, &mut gone).await?;
        }
    }
    out.retain(|(path, pos)| !gone.get(path).is_some_and(|g| g.contains(pos)));
    out.sort();
    out.dedup();
    Ok(out)
}

/// The rows of the table's files a flush has read, and may.
struct Budget {
    used: u64,
    max: u64,
}

/// The reader of one of the table's Parquet files, once its footer says
/// it is within what is left of the flush's budget of rows.
async fn open_parquet(
    t: &Table,
    path: &str,
    scanned: &mut Budget,
) -> Result<ParquetRecordBatchStreamBuilder<ArrowFileReader>, TableError> {
    let input = t.file_io().new_input(path).map_err(unavailable)?;
    let meta = input.metadata().await.map_err(unavailable)?;
    let reader = input.reader().await.map_err(unavailable)?;
    let builder = ParquetRecordBatchStreamBuilder::new(ArrowFileReader::new(meta, reader))
        .await
        .map_err(|e| unavailable(format!("data file {path}: {e}")))?;
    let rows: u64 = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| u64::try_from(g.num_rows()).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    scanned.used = scanned.used.saturating_add(rows);
    if scanned.used > scanned.max {
        return Err(too_big(format!(
            "The table's files hold more than {} rows",
            scanned.max
        )));
    }
    // Pages past what the footer says are not decoded.
    Ok(builder.with_limit(usize::try_from(rows).unwrap_or(usize::MAX)))
}

/// The index of the column with field id `id` (or, in files written
/// without field ids, named `name`) among `schema`'s top-level fields.
fn column(schema: &ArrowSchema, id: i32, name: &str) -> Option<usize> {
    let fields = schema.fields();
    let any_ids = fields
        .iter()
        .any(|f| f.metadata().contains_key(PARQUET_FIELD_ID_META_KEY));
    // Files with field ids are matched by them (a renamed column is the
    // same column); files without, by name.
    if any_ids {
        fields.iter().position(|f| {
            f.metadata()
                .get(PARQUET_FIELD_ID_META_KEY)
                .and_then(|v| v.parse::<i32>().ok())
                == Some(id)
        })
    } else {
        fields
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
    }
}

/// Reads the key columns of one data file.
async fn positions_in(
    t: &Table,
    path: &str,
    keys: &KeyColumns,
    wanted: &HashSet<String>,
    scanned: &mut Budget,
    out: &mut Vec<(Path, i64)>,
) -> Result<(), TableError> {
    let builder = open_parquet(t, path, scanned).await?;
    let schema = builder.schema().clone();
    let mut roots = Vec::with_capacity(keys.ids.len());
    for (id, name) in keys.ids.iter().zip(&keys.names) {
        match column(&schema, *id, name) {
            Some(i) => roots.push(i),
            // Written before the column existed: its rows have no key.
            None => return Ok(()),
        }
    }
    let mut sorted = roots.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let column_of: Vec<usize> = roots
        .iter()
        .map(|r| sorted.iter().position(|s| s == r).unwrap_or(0))
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
    let mut stream = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| unavailable(format!("data file {path}: {e}")))?;
    let shared: Path = Arc::from(path);
    let mut pos: i64 = 0;
    while let Some(b) = stream
        .try_next()
        .await
        .map_err(|e| unavailable(format!("data file {path}: {e}")))?
    {
        let mut cols = Vec::with_capacity(column_of.len());
        for (k, &c) in column_of.iter().enumerate() {
            let col = b.column(c);
            let col = if col.data_type() == &keys.types[k] {
                col.clone()
            } else {
                arrow_cast::cast(col, &keys.types[k]).map_err(|e| {
                    TableError::Unusable(format!(
                        "Data file {path}: its column {} cannot be read as the table's key type: {e}",
                        keys.names[k]
                    ))
                })?
            };
            cols.push(col);
        }
        let found = keys_of(&cols).map_err(TableError::Unusable)?;
        for (i, k) in found.into_iter().enumerate() {
            if k.is_some_and(|k| wanted.contains(&k)) {
                if out.len() >= MAX_POSITIONS {
                    return Err(too_big(format!(
                        "The flush deletes more than {MAX_POSITIONS} rows"
                    )));
                }
                out.push((shared.clone(), pos + i as i64));
            }
        }
        pos += b.num_rows() as i64;
    }
    Ok(())
}

/// The positions of `found` a position delete file deletes.
async fn deleted_in(
    t: &Table,
    path: &str,
    found: &HashMap<Path, HashSet<i64>>,
    scanned: &mut Budget,
    gone: &mut HashMap<Path, HashSet<i64>>,
) -> Result<(), TableError> {
    let builder = open_parquet(t, path, scanned).await?;
    let schema = builder.schema().clone();
    let (Some(file_col), Some(pos_col)) = (
        column(&schema, FILE_PATH_FIELD_ID, "file_path"),
        column(&schema, POS_FIELD_ID, "pos"),
    ) else {
        return Err(TableError::Unusable(format!(
            "Position delete file {path} has no file_path and pos columns."
        )));
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [file_col, pos_col]);
    let (file_at, pos_at) = if file_col < pos_col { (0, 1) } else { (1, 0) };
    let mut stream = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| unavailable(format!("delete file {path}: {e}")))?;
    let unreadable = |e: arrow_schema::ArrowError| {
        TableError::Unusable(format!("Position delete file {path}: {e}"))
    };
    while let Some(b) = stream
        .try_next()
        .await
        .map_err(|e| unavailable(format!("delete file {path}: {e}")))?
    {
        let files = arrow_cast::cast(b.column(file_at), &DataType::Utf8).map_err(unreadable)?;
        let positions = arrow_cast::cast(b.column(pos_at), &DataType::Int64).map_err(unreadable)?;
        let (Some(files), Some(positions)) = (
            files.as_any().downcast_ref::<StringArray>(),
            positions.as_any().downcast_ref::<Int64Array>(),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            if files.is_null(i) || positions.is_null(i) {
                continue;
            }
            let (file, pos) = (files.value(i), positions.value(i));
            if let Some((shared, rows)) = found.get_key_value(file)
                && rows.contains(&pos)
            {
                gone.entry(shared.clone()).or_default().insert(pos);
            }
        }
    }
    Ok(())
}

/// Writes the position delete file of `positions` (sorted) next to the
/// commit's data files.
pub(crate) async fn write_position_deletes(
    t: &Table,
    data_location: &str,
    commit: &str,
    positions: &[(Path, i64)],
) -> Result<DataFile, TableError> {
    let field = |name: &str, ty: DataType, id: i32| {
        Field::new(name, ty, false).with_metadata(HashMap::from([(
            PARQUET_FIELD_ID_META_KEY.to_string(),
            id.to_string(),
        )]))
    };
    let schema = Arc::new(ArrowSchema::new(vec![
        field("file_path", DataType::Utf8, FILE_PATH_FIELD_ID),
        field("pos", DataType::Int64, POS_FIELD_ID),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                positions.iter().map(|(p, _)| &**p),
            )),
            Arc::new(Int64Array::from_iter_values(
                positions.iter().map(|(_, p)| *p),
            )),
        ],
    )
    .map_err(unavailable)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by("ripstream (Amazon Data Firehose Iceberg delivery)".into())
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(unavailable)?;
    w.write(&batch).map_err(unavailable)?;
    w.close().map_err(unavailable)?;
    let path = format!("{data_location}/firehose-{commit}-deletes.parquet");
    let size = buf.len() as u64;
    t.file_io()
        .new_output(&path)
        .map_err(unavailable)?
        .write(Bytes::from(buf))
        .await
        .map_err(unavailable)?;
    let mut b = DataFileBuilder::default();
    b.content(DataContentType::PositionDeletes)
        .file_path(path)
        .file_format(DataFileFormat::Parquet)
        .record_count(positions.len() as u64)
        .file_size_in_bytes(size)
        .partition_spec_id(t.metadata().default_partition_spec_id());
    // One data file referenced: readers need not match it against others.
    if let (Some((first, _)), Some((last, _))) = (positions.first(), positions.last())
        && first == last
    {
        b.referenced_data_file(Some(first.to_string()));
    }
    b.build().map_err(unavailable)
}

/// A snapshot adding data files and position delete files.
pub(crate) struct RowDelta {
    pub data_files: Vec<DataFile>,
    pub delete_files: Vec<DataFile>,
    pub properties: HashMap<String, String>,
    /// Names its manifests and manifest list.
    pub commit: String,
}

/// `added-*` summary counts and the `total-*` they make with the parent's.
fn summary(
    parent: Option<&Summary>,
    data: &[DataFile],
    deletes: &[DataFile],
    mut props: HashMap<String, String>,
) -> Summary {
    let records: u64 = data.iter().map(DataFile::record_count).sum();
    let positions: u64 = deletes.iter().map(DataFile::record_count).sum();
    let size: u64 = data
        .iter()
        .chain(deletes)
        .map(DataFile::file_size_in_bytes)
        .sum();
    let added = [
        ("added-data-files", "total-data-files", data.len() as u64),
        ("added-records", "total-records", records),
        (
            "added-delete-files",
            "total-delete-files",
            deletes.len() as u64,
        ),
        (
            "added-position-deletes",
            "total-position-deletes",
            positions,
        ),
        ("added-files-size", "total-files-size", size),
    ];
    for (add, total, n) in added {
        props.insert(add.to_string(), n.to_string());
        let before = match parent {
            None => Some(0),
            Some(p) => p
                .additional_properties
                .get(total)
                .and_then(|v| v.parse::<u64>().ok()),
        };
        if let Some(b) = before {
            props.insert(total.to_string(), b.saturating_add(n).to_string());
        }
    }
    props.insert(
        "added-position-delete-files".into(),
        deletes.len().to_string(),
    );
    Summary {
        operation: if deletes.is_empty() {
            Operation::Append
        } else {
            Operation::Overwrite
        },
        additional_properties: props,
    }
}

fn snapshot_id(t: &Table) -> i64 {
    loop {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if id != 0 && !t.metadata().snapshots().any(|s| s.snapshot_id() == id) {
            return id;
        }
    }
}

impl RowDelta {
    /// Writes the snapshot's manifests and manifest list, and answers the
    /// commit's requirements and updates.
    pub(crate) async fn prepare(
        &self,
        table: &Table,
    ) -> iceberg::Result<(Vec<TableRequirement>, Vec<TableUpdate>)> {
        let m = table.metadata();
        if m.format_version() != FormatVersion::V2 {
            return Err(Error::new(
                ErrorKind::FeatureUnsupported,
                format!(
                    "updates and deletes are written as Iceberg v2 position deletes; the table is format {:?}",
                    m.format_version()
                ),
            ));
        }
        let id = snapshot_id(table);
        let parent = m.current_snapshot();
        let seq = m.next_sequence_number();
        let mut manifests: Vec<ManifestFile> = match parent {
            Some(p) => table
                .manifest_list_reader(p)
                .load()
                .await?
                .consume_entries()
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        let schema = m.current_schema().clone();
        let spec = m.default_partition_spec().as_ref().clone();
        let manifest_path =
            |n: usize| format!("{}/metadata/{}-m{n}.avro", m.location(), self.commit);
        for (n, (files, content)) in [
            (&self.data_files, ManifestContentType::Data),
            (&self.delete_files, ManifestContentType::Deletes),
        ]
        .into_iter()
        .enumerate()
        {
            if files.is_empty() {
                continue;
            }
            let builder = ManifestWriterBuilder::new(
                table.file_io().new_output(manifest_path(n))?,
                Some(id),
                schema.clone(),
                spec.clone(),
            );
            let mut w = match content {
                ManifestContentType::Data => builder.build_v2_data(),
                ManifestContentType::Deletes => builder.build_v2_deletes(),
            };
            for f in files {
                // A negative sequence number: inherited from the snapshot.
                w.add_file(f.clone(), -1)?;
            }
            manifests.push(w.write_manifest_file().await?);
        }
        let list_path = format!("{}/metadata/snap-{id}-0-{}.avro", m.location(), self.commit);
        let writer = table.file_io().new_output(&list_path)?.writer().await?;
        let mut list = ManifestListWriter::v2(writer, id, parent.map(|p| p.snapshot_id()), seq);
        list.add_manifests(manifests.into_iter())?;
        list.close().await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
            .max(m.last_updated_ms());
        let snapshot = Snapshot::builder()
            .with_manifest_list(list_path)
            .with_snapshot_id(id)
            .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
            .with_sequence_number(seq)
            .with_summary(summary(
                parent.map(|p| p.summary()),
                &self.data_files,
                &self.delete_files,
                self.properties.clone(),
            ))
            .with_schema_id(m.current_schema_id())
            .with_timestamp_ms(now)
            .build();
        let updates = vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: MAIN_BRANCH.to_string(),
                reference: SnapshotReference::new(id, SnapshotRetention::branch(None, None, None)),
            },
        ];
        let requirements = vec![
            TableRequirement::UuidMatch { uuid: m.uuid() },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_string(),
                snapshot_id: m.current_snapshot_id(),
            },
        ];
        Ok((requirements, updates))
    }
}
