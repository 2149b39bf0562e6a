//! The Apache Iceberg destination (`IcebergDestinationConfiguration`):
//! its checks at create, the engine's view of it, and its flush.
//!
//! A stream stores it as an S3 destination (the `S3Configuration`: the
//! bucket of the error output and the AllData backup, with the Iceberg
//! configuration's BufferingHints and ProcessingConfiguration, so buffering
//! and processing are the S3 path's) plus the Iceberg configuration under
//! [`STORED_KEY`]. Each flush writes each table's records as one snapshot
//! through [`IcebergTables`] (the binary's bridge to the Glue subset and
//! the object store; this crate knows neither), tagged with the stream and
//! the log offsets the batch holds, so a batch a table committed before a
//! crash is not committed to it again: with one table the delivery task
//! resumes after the table's last commit of the stream ([`resume`]); with
//! several the batch's range is kept before its first commit
//! ([`crate::pending`]), so a restart re-reads that very batch and each
//! table that holds it already skips it.
//!
//! A table's files go where the table says (its Glue `metadata_location`,
//! its metadata's `location` and `write.data.path`), which its owner can
//! change at any time. CreateDeliveryStream reads where that is now for
//! every table of the DestinationTableConfigurationList
//! ([`create_locations`]), the front door checks the caller may
//! `s3:PutObject` there, and the stream keeps each table's directories
//! ([`pin`]): every later call on a table is limited to its own, and a
//! table that moved elsewhere is refused.
//!
//! A failed write (the table unusable, storage or the catalog failing)
//! is retried, the batch re-read from the log each time, for
//! `RetryOptions.DurationInSeconds` from its first failure (kept with the
//! batch, [`crate::pending`], so a restart does not reset it); then, as
//! AWS does, the failing tables' records go to the error output
//! (`iceberg-failed`, under the table's S3ErrorOutputPrefix when it has
//! one) and delivery moves on.
//!
//! Each record's table and operation (`insert`, `update`, `delete`) come,
//! as on AWS, from a MetadataExtraction query's output or a function's
//! `metadata.otfMetadata` ([`route`]); with a single table a record needs
//! neither. Updates and deletes find the rows by the table
//! configuration's UniqueKeys (or the table's identifier fields). A
//! record naming a table the configuration does not list goes to the
//! error output: only the listed tables' locations were authorized.
//!
//! UpdateDestination takes an `IcebergDestinationUpdate` ([`merge_update`]):
//! a table the stream had keeps the directories authorized at create, a
//! new one's are read and authorized as at create.
//!
//! Not yet: PartitionSpec, schema evolution and automatic table creation:
//! each is refused with an InvalidArgumentException.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::engine::{Batch, Flushed};
use crate::error::{Error, Result};
use crate::pending::Failing;
use crate::record::Destination;
use crate::sink::BoxFuture;
use crate::{Inner, Stream, prefix};

/// Where the Iceberg configuration is kept in the stored destination.
pub const STORED_KEY: &str = "IcebergDestination";

/// The error output type (`!{firehose:error-output-type}`) of records a
/// table refused or that could not be delivered.
pub const ERROR_OUTPUT_TYPE: &str = "iceberg-failed";

/// Where the directories a stream's table may write are kept in the
/// stored destination (beside the Iceberg configuration, so they are not
/// described).
pub const LOCATIONS_KEY: &str = "IcebergTableLocations";

/// AWS's default RetryOptions.DurationInSeconds for Iceberg.
pub const DEFAULT_RETRY_S: u64 = 300;

/// The table a stream delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub database: String,
    pub table: String,
    /// `UniqueKeys`: the columns updates and deletes find rows by (empty:
    /// the table's identifier fields).
    pub unique_keys: Vec<String>,
}

/// What a record does to the table: AWS's `operation`, from the JSON
/// query's output or the function's `otfMetadata` (insert without one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Operation {
    #[default]
    Insert,
    Update,
    Delete,
}

impl Operation {
    /// `insert`, `update` or `delete`, in any case.
    pub fn parse(s: &str) -> Option<Operation> {
        match s.to_ascii_lowercase().as_str() {
            "insert" => Some(Operation::Insert),
            "update" => Some(Operation::Update),
            "delete" => Some(Operation::Delete),
            _ => None,
        }
    }
}

/// The routing fields of a JSON query's output and of a function's
/// `metadata.otfMetadata`.
pub const ROUTE_DATABASE: &str = "destinationDatabaseName";
pub const ROUTE_TABLE: &str = "destinationTableName";
pub const ROUTE_OPERATION: &str = "operation";

/// Error codes of records whose routing this server cannot follow.
pub const INVALID_OPERATION: &str = "Iceberg.InvalidOperation";
pub const TABLE_NOT_CONFIGURED: &str = "Iceberg.TableNotConfigured";

/// Who commits a batch and the log offsets `[start, end)` it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitTag {
    pub writer: String,
    pub start: u64,
    pub end: u64,
}

/// A record the table refused: its index in the batch, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub code: String,
    pub message: String,
}

/// What an append did.
#[derive(Debug, Default)]
pub struct Appended {
    pub rows: u64,
    pub refused: Vec<Refused>,
    /// The batch was committed already (nothing written).
    pub duplicate: bool,
}

/// Why a table cannot take the batch now; the batch waits in the log and
/// is retried.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Missing, not an Iceberg table, or of a shape this server cannot
    /// write: its owner must change it.
    #[error("{message}")]
    Unusable { code: String, message: String },
    /// Storage or the catalog failed.
    #[error("{message}")]
    Unavailable { code: String, message: String },
}

impl TableError {
    pub fn code(&self) -> &str {
        match self {
            TableError::Unusable { code, .. } | TableError::Unavailable { code, .. } => code,
        }
    }
}

/// Iceberg tables, as the binary bridges them. Locations are directories,
/// `s3://bucket/prefix/`; `allowed` are those a stream may use.
pub trait IcebergTables: Send + Sync + std::fmt::Debug {
    /// The directories the table's commits write to now (nothing written).
    fn locations<'a>(
        &'a self,
        t: &'a TableRef,
    ) -> BoxFuture<'a, std::result::Result<Vec<String>, TableError>>;
    /// Whether the table could take records now, within `allowed`.
    fn check<'a>(
        &'a self,
        t: &'a TableRef,
        allowed: &'a [String],
    ) -> BoxFuture<'a, std::result::Result<(), TableError>>;
    /// The log offsets of `writer`'s last commit to the table.
    fn committed<'a>(
        &'a self,
        t: &'a TableRef,
        allowed: &'a [String],
        writer: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<(u64, u64)>, TableError>>;
    /// Writes JSON records as one snapshot (none when the tag's batch is
    /// committed already): `ops[i]` is record i's operation (insert when
    /// `ops` is shorter), updates and deletes by the table's unique keys.
    /// The records it refuses are answered either way.
    fn append<'a>(
        &'a self,
        t: &'a TableRef,
        allowed: &'a [String],
        records: &'a [&'a [u8]],
        ops: &'a [Operation],
        tag: &'a CommitTag,
    ) -> BoxFuture<'a, std::result::Result<Appended, TableError>>;
}

/// One table of a stream's DestinationTableConfigurationList.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTarget {
    pub table: TableRef,
    /// The directories the table may write, as authorized at create;
    /// `None` for a stream stored before they were kept (refused).
    pub locations: Option<Vec<String>>,
    /// `S3ErrorOutputPrefix`: where the failures of the table's records
    /// go (the S3 configuration's ErrorOutputPrefix without one).
    pub error_prefix: Option<String>,
}

/// The engine's view of the Iceberg part of a stored destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The tables records are routed to, in the configuration's order
    /// (at least one).
    pub tables: Vec<TableTarget>,
    pub catalog_arn: String,
    /// `AllData`: every record is also written to the S3 bucket.
    pub backup_all: bool,
    /// How long a failing batch is retried before its records go to the
    /// error output.
    pub retry_ms: i64,
    /// The MetadataExtraction query giving each record's routing and
    /// operation (`destinationDatabaseName`, `destinationTableName`,
    /// `operation`).
    pub routing: Option<Arc<crate::jq::Query>>,
}

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidArgument(m.into())
}

fn not_yet(what: &str) -> Error {
    invalid(format!("{what} is not supported yet by this server."))
}

fn enabled(v: Option<&Value>) -> bool {
    v.and_then(|c| c.get("Enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The catalog ARN this server's Glue subset answers to.
pub fn catalog_arn(region: &str, account: &str) -> String {
    format!(
        "arn:{}:glue:{region}:{account}:catalog",
        ripstream_iam::partition(region)
    )
}

/// Checks an `IcebergDestinationConfiguration` and makes the stored
/// destination (see the module docs).
pub fn normalize(cfg: &Value, region: &str, account: &str) -> Result<Value> {
    let Some(c) = cfg.as_object() else {
        return Err(invalid(
            "IcebergDestinationConfiguration must be an object.",
        ));
    };
    if c.get("RoleARN")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(invalid("RoleARN is required for an Iceberg destination."));
    }
    let ours = catalog_arn(region, account);
    let arn = c
        .get("CatalogConfiguration")
        .and_then(|v| v.get("CatalogARN"))
        .and_then(Value::as_str)
        .unwrap_or(&ours)
        .to_string();
    if arn != ours {
        return Err(invalid(format!(
            "CatalogConfiguration.CatalogARN {arn} is not this server's Glue Data Catalog ({ours}); S3 Tables catalogs and other accounts' or regions' catalogs are not supported yet."
        )));
    }
    let tables = c
        .get("DestinationTableConfigurationList")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if tables.is_empty() {
        return Err(invalid(
            "DestinationTableConfigurationList must name at least one table.",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for table in &tables {
        let name = |k: &str| {
            table
                .get(k)
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_lowercase)
                .ok_or_else(|| invalid(format!("{k} is required for each destination table.")))
        };
        let (db, t) = (
            name("DestinationDatabaseName")?,
            name("DestinationTableName")?,
        );
        if !seen.insert((db.clone(), t.clone())) {
            return Err(invalid(format!(
                "DestinationTableConfigurationList names {db}.{t} more than once."
            )));
        }
        if let Some(keys) = table.get("UniqueKeys") {
            let ok = keys.as_array().is_some_and(|k| {
                k.iter().all(|n| {
                    n.as_str()
                        .is_some_and(|n| !n.is_empty() && !n.contains(char::is_whitespace))
                })
            });
            if !ok {
                return Err(invalid(
                    "UniqueKeys must be a list of column names without whitespace.",
                ));
            }
        }
        if table.get("PartitionSpec").is_some() {
            return Err(not_yet("PartitionSpec (automatic table creation)"));
        }
        // Checked as the stream's ErrorOutputPrefix is: its failures go
        // under it.
        if let Some(p) = table
            .get("S3ErrorOutputPrefix")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            && let Some(s3) = c.get("S3Configuration").and_then(Value::as_object)
        {
            let mut probe = s3.clone();
            probe.insert("ErrorOutputPrefix".into(), json!(p));
            crate::record::normalize_destination(probe)
                .map_err(|e| invalid(format!("S3ErrorOutputPrefix of {db}.{t}: {e}")))?;
        }
    }
    if enabled(c.get("SchemaEvolutionConfiguration")) {
        return Err(not_yet("SchemaEvolutionConfiguration"));
    }
    if enabled(c.get("TableCreationConfiguration")) {
        return Err(not_yet("TableCreationConfiguration"));
    }
    match c.get("S3BackupMode").and_then(Value::as_str) {
        None | Some("FailedDataOnly") | Some("AllData") => {}
        Some(m) => return Err(invalid(format!("S3BackupMode {m} is not valid."))),
    }
    let Some(s3) = c.get("S3Configuration").and_then(Value::as_object) else {
        return Err(invalid(
            "S3Configuration is required for an Iceberg destination.",
        ));
    };
    let mut d: Map<String, Value> = s3.clone();
    // The bucket's buffering is the Iceberg destination's.
    d.remove("BufferingHints");
    if let Some(v) = c.get("BufferingHints") {
        d.insert("BufferingHints".into(), v.clone());
    }
    // The processing is the S3 path's but for MetadataExtraction, which
    // gives each record's routing here (not partition keys): it is read
    // from the Iceberg configuration ([`of`]), checked now.
    if let Some(p) = c.get("ProcessingConfiguration") {
        crate::processing::pipeline(Some(p))?;
        let mut p = p.clone();
        if let Some(list) = p.get_mut("Processors").and_then(Value::as_array_mut) {
            list.retain(|proc_| {
                proc_.get("Type").and_then(Value::as_str) != Some("MetadataExtraction")
            });
        }
        d.insert("ProcessingConfiguration".into(), p);
    }
    // A single table's error prefix is where the stream's failures go
    // (several tables each keep theirs: [`TableTarget::error_prefix`]).
    if let [table] = tables.as_slice()
        && let Some(p) = table
            .get("S3ErrorOutputPrefix")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
    {
        d.insert("ErrorOutputPrefix".into(), json!(p));
    }
    let mut d = match crate::record::normalize_destination(d)? {
        Value::Object(m) => m,
        _ => return Err(invalid("S3Configuration must be an object.")),
    };
    let mut stored = c.clone();
    stored.insert("CatalogConfiguration".into(), {
        let mut cat = c
            .get("CatalogConfiguration")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        cat.insert("CatalogARN".into(), json!(arn));
        Value::Object(cat)
    });
    stored
        .entry("S3BackupMode")
        .or_insert(json!("FailedDataOnly"));
    stored.entry("AppendOnly").or_insert(json!(true));
    stored.insert("BufferingHints".into(), d["BufferingHints"].clone());
    let retry = crate::record::retry_duration_s(c.get("RetryOptions"), DEFAULT_RETRY_S)?;
    stored.insert("RetryOptions".into(), json!({"DurationInSeconds": retry}));
    d.insert(STORED_KEY.into(), Value::Object(stored));
    Ok(Value::Object(d))
}

/// The Iceberg target of a stored destination, if it is one.
pub fn of(dest: &Value) -> Result<Option<Target>> {
    let Some(c) = dest.get(STORED_KEY) else {
        return Ok(None);
    };
    let list = c
        .get("DestinationTableConfigurationList")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| invalid("The Iceberg destination names no table."))?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    };
    // Each table's directories, in the list's order; a stream stored when
    // one table was all there was keeps one flat list.
    let kept = dest.get(LOCATIONS_KEY).and_then(Value::as_array);
    let locations_of = |i: usize| -> Option<Vec<String>> {
        let kept = kept?;
        if kept.iter().all(Value::is_string) {
            let flat = kept.iter().filter_map(Value::as_str).map(str::to_string);
            return (i == 0 && list.len() == 1).then(|| flat.collect());
        }
        kept.get(i).and_then(strings)
    };
    let tables = list
        .iter()
        .enumerate()
        .map(|(i, t)| TableTarget {
            table: TableRef {
                database: s(t, "DestinationDatabaseName"),
                table: s(t, "DestinationTableName"),
                unique_keys: t.get("UniqueKeys").and_then(strings).unwrap_or_default(),
            },
            locations: locations_of(i),
            error_prefix: t
                .get("S3ErrorOutputPrefix")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        })
        .collect();
    let routing = match c.get("ProcessingConfiguration") {
        Some(p) if crate::processing::is_enabled(p) => {
            crate::processing::pipeline(Some(p))?.metadata
        }
        _ => None,
    };
    Ok(Some(Target {
        tables,
        routing,
        catalog_arn: c
            .get("CatalogConfiguration")
            .map(|cc| s(cc, "CatalogARN"))
            .unwrap_or_default(),
        backup_all: c.get("S3BackupMode").and_then(Value::as_str) == Some("AllData"),
        retry_ms: c
            .get("RetryOptions")
            .and_then(|r| r.get("DurationInSeconds"))
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_RETRY_S)
            .saturating_mul(1000)
            .try_into()
            .unwrap_or(i64::MAX),
    }))
}

fn no_catalog() -> Error {
    invalid(
        "Iceberg destinations need this server's Glue Data Catalog and embedded object store, which this server does not offer (an external object store is configured).",
    )
}

/// The directories each table of a CreateDeliveryStream input's Iceberg
/// destination writes to now, in the list's order (none without one):
/// what its caller must be allowed to write, and all the stream may write
/// afterwards.
pub(crate) async fn create_locations(inner: &Inner, input: &Value) -> Result<Vec<Vec<String>>> {
    let Some(cfg) = input.get("IcebergDestinationConfiguration") else {
        return Ok(Vec::new());
    };
    let dest = normalize(cfg, &inner.region, &inner.account)?;
    let Some(t) = of(&dest)? else {
        return Ok(Vec::new());
    };
    let tables = inner.iceberg.as_ref().ok_or_else(no_catalog)?;
    let mut all = Vec::with_capacity(t.tables.len());
    for tt in &t.tables {
        match tables.locations(&tt.table).await {
            Ok(l) => all.push(l),
            Err(TableError::Unusable { message, .. }) => return Err(invalid(message)),
            Err(e @ TableError::Unavailable { .. }) => return Err(Error::internal(e)),
        }
    }
    Ok(all)
}

/// The stored destination an `IcebergDestinationUpdate` makes of a
/// stream's: the update's members replace the configuration's (as AWS
/// merges updates, member by member), checked as at create; its tables'
/// directories are pinned afterwards ([`update_locations`], [`pin`]).
pub fn merge_update(current: &Value, update: &Value, region: &str, account: &str) -> Result<Value> {
    let Some(stored) = current.get(STORED_KEY).and_then(Value::as_object) else {
        return Err(invalid(
            "The delivery stream does not deliver to Apache Iceberg tables.",
        ));
    };
    let Some(u) = update.as_object() else {
        return Err(invalid("IcebergDestinationUpdate must be an object."));
    };
    let mut merged = stored.clone();
    for (k, v) in u {
        merged.insert(k.clone(), v.clone());
    }
    // AWS: the backup of every record, once on, stays on.
    if stored.get("S3BackupMode").and_then(Value::as_str) == Some("AllData")
        && merged.get("S3BackupMode").and_then(Value::as_str) != Some("AllData")
    {
        return Err(invalid(
            "S3BackupMode cannot be changed from AllData to FailedDataOnly.",
        ));
    }
    normalize(&Value::Object(merged), region, account)
}

/// The directories each table of an updated destination may write, in
/// its list's order: a table the stream had keeps those it was authorized
/// for at create; a new one's (and those of a table the stream kept none
/// for) are read now, and the caller must be allowed to write there.
pub(crate) async fn update_locations(
    inner: &Inner,
    current: &Value,
    next: &Value,
) -> Result<Vec<Vec<String>>> {
    let (Some(now), Some(then)) = (of(current)?, of(next)?) else {
        return Ok(Vec::new());
    };
    let tables = inner.iceberg.as_ref().ok_or_else(no_catalog)?;
    let same = |a: &TableRef, b: &TableRef| {
        a.database.to_lowercase() == b.database.to_lowercase()
            && a.table.to_lowercase() == b.table.to_lowercase()
    };
    let mut all = Vec::with_capacity(then.tables.len());
    for tt in &then.tables {
        let kept = now
            .tables
            .iter()
            .find(|old| same(&old.table, &tt.table))
            .and_then(|old| old.locations.clone());
        match kept {
            Some(l) => all.push(l),
            None => match tables.locations(&tt.table).await {
                Ok(l) => all.push(l),
                Err(TableError::Unusable { message, .. }) => return Err(invalid(message)),
                Err(e @ TableError::Unavailable { .. }) => return Err(Error::internal(e)),
            },
        }
    }
    Ok(all)
}

/// Keeps the directories each of a stream's tables may write in its
/// destination.
pub(crate) fn pin(dest: &mut Value, locations: Vec<Vec<String>>) {
    if let Some(d) = dest.as_object_mut() {
        d.insert(LOCATIONS_KEY.into(), json!(locations));
    }
}

/// The resource `s3:PutObject` into a directory is checked on:
/// `arn:<partition>:s3:::<bucket>/<prefix>*`.
pub(crate) fn objects_arn(region: &str, location: &str) -> Result<String> {
    let partition = ripstream_iam::partition(region);
    location
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, _)| crate::record::valid_bucket_name(bucket))
        .map(|(bucket, prefix)| format!("arn:{partition}:s3:::{bucket}/{prefix}*"))
        .ok_or_else(|| {
            invalid(format!(
                "The table writes to {location}, which is not s3://<bucket>/<prefix>."
            ))
        })
}

/// `IcebergDestinationDescription` of a stored destination.
pub fn description(dest: &Value) -> Option<Value> {
    let mut c = dest.get(STORED_KEY)?.as_object()?.clone();
    c.insert(
        "S3DestinationDescription".into(),
        crate::record::s3_description(dest),
    );
    c.remove("S3Configuration");
    Some(Value::Object(c))
}

/// Checks at create that every table can take records (AWS reads each
/// with glue:GetTable before it accepts the stream).
pub(crate) async fn check(inner: &Inner, dest: &Value) -> Result<()> {
    let Some(t) = of(dest)? else {
        return Ok(());
    };
    let Some(tables) = &inner.iceberg else {
        return Err(no_catalog());
    };
    for tt in &t.tables {
        let allowed = tt.locations.as_deref().unwrap_or_default();
        match tables.check(&tt.table, allowed).await {
            Ok(()) => {}
            Err(TableError::Unusable { message, .. }) => return Err(invalid(message)),
            Err(e @ TableError::Unavailable { .. }) => return Err(Error::internal(e)),
        }
    }
    Ok(())
}

/// The writer a stream's commits are tagged with: the stream and its uid,
/// so a stream re-created under the same name starts afresh.
fn writer(inner: &Inner, s: &Stream) -> String {
    format!("{}#{}", inner.stream_arn(&s.rec.name), s.rec.uid)
}

/// Where a stream's delivery resumes: after the table's last commit of the
/// stream when that is past the checkpoint (a crash came between the
/// commit and the checkpoint). A table whose commits cannot be read now
/// is asked again, for as long as the stream's retry duration: going on
/// without knowing could append the committed batch again.
pub(crate) async fn resume(inner: &Arc<Inner>, name: &str, uid: u64, next: u64) -> u64 {
    let Some(s) = crate::engine::current(inner, name, uid) else {
        return next;
    };
    let (Ok(Some(t)), Some(tables)) = (of(&s.rec.destination), &inner.iceberg) else {
        return next;
    };
    // Several tables: the pending batch is re-read instead (see the
    // module docs), as one table's last commit says nothing of the others.
    let [tt] = t.tables.as_slice() else {
        return next;
    };
    let Some(allowed) = &tt.locations else {
        return next;
    };
    let writer = writer(inner, &s);
    let until = inner.now_ms().saturating_add(t.retry_ms);
    let mut backoff = inner.cfg.retry_initial;
    loop {
        match tables.committed(&tt.table, allowed, &writer).await {
            Ok(Some((start, end))) if start <= next && end > next => {
                // Only offsets the stream's log has held: a snapshot
                // anyone could write that names more would skip records
                // never delivered.
                let log_end = s.part.end_offset();
                if end > log_end {
                    warn!(stream = %name, from = next, to = end, log_end, "the table's last commit of the stream names offsets past the stream's log; not resuming after it");
                    return next;
                }
                info!(stream = %name, from = next, to = end, "the table holds the batch delivered before the restart; resuming after it");
                return end;
            }
            Ok(_) => return next,
            Err(e @ TableError::Unavailable { .. }) if inner.now_ms() < until => {
                warn!(stream = %name, code = e.code(), error = %e, "cannot read the table's commits; asking again before delivering");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(inner.cfg.retry_max);
                if crate::engine::current(inner, name, uid).is_none() {
                    return next;
                }
            }
            Err(e) => {
                warn!(stream = %name, code = e.code(), error = %e, "cannot read the table's commits; a batch committed before a crash may be appended again");
                return next;
            }
        }
    }
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// The error output line of a record a table refused or that no table
/// takes (AWS's error record, with the destination table it names).
#[allow(clippy::too_many_arguments)]
fn error_line(
    t: &Target,
    (database, table): (&str, &str),
    attempts: u32,
    arrival_ms: i64,
    code: &str,
    message: &str,
    now: i64,
    raw: &[u8],
) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "attemptsMade": attempts,
        "arrivalTimestamp": arrival_ms,
        "errorCode": code,
        "errorMessage": message,
        "attemptEndingTimestamp": now,
        "rawData": b64().encode(raw),
        "catalogARN": t.catalog_arn,
        "destinationDatabaseName": database,
        "destinationTableName": table,
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// Why a record goes to no table: the error code and message, and the
/// database and table it named.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unrouted {
    code: &'static str,
    message: String,
    database: String,
    table: String,
}

/// A record's table (its index in [`Target::tables`]) and operation, from
/// the JSON query's output and the function's `otfMetadata` (which wins).
/// Names are matched as Glue matches them, in any case; a name not given
/// matches every table, and the two given must single out one listed
/// table: only the listed tables' locations were authorized at create.
fn route(
    t: &Target,
    record: &[u8],
    lambda: Option<&BTreeMap<String, String>>,
) -> std::result::Result<(usize, Operation), Unrouted> {
    let mut fields = BTreeMap::new();
    let unrouted = |code, message, fields: &BTreeMap<String, String>| {
        let named = |k: &str| fields.get(k).cloned().unwrap_or_default();
        Unrouted {
            code,
            message,
            database: named(ROUTE_DATABASE),
            table: named(ROUTE_TABLE),
        }
    };
    if let Some(q) = &t.routing {
        match q.eval(record) {
            Ok(k) => fields.extend(k),
            Err(e) => {
                return Err(unrouted(
                    crate::partition::EXTRACTION_FAILED,
                    e.to_string(),
                    &fields,
                ));
            }
        }
    }
    if let Some(l) = lambda {
        fields.extend(l.iter().filter_map(|(k, v)| {
            k.strip_prefix(crate::lambda::OTF_KEY_PREFIX)
                .map(|k| (k.to_string(), v.clone()))
        }));
    }
    let (db, table) = (fields.get(ROUTE_DATABASE), fields.get(ROUTE_TABLE));
    // Folded as Glue folds names.
    let matches = |given: Option<&String>, configured: &str| {
        given.is_none_or(|g| g.to_lowercase() == configured.to_lowercase())
    };
    let mut candidates = t
        .tables
        .iter()
        .enumerate()
        .filter(|(_, tt)| matches(db, &tt.table.database) && matches(table, &tt.table.table));
    let index = match (candidates.next(), candidates.next()) {
        (Some((i, _)), None) => i,
        (None, _) => {
            let mut listed: Vec<String> = t
                .tables
                .iter()
                .take(5)
                .map(|tt| format!("{}.{}", tt.table.database, tt.table.table))
                .collect();
            if t.tables.len() > listed.len() {
                listed.push(format!("and {} more", t.tables.len() - listed.len()));
            }
            let message = format!(
                "The record is routed to {}.{}, which is not in the delivery stream's DestinationTableConfigurationList ({}).",
                db.map_or("<any>", String::as_str),
                table.map_or("<any>", String::as_str),
                listed.join(", ")
            );
            return Err(unrouted(TABLE_NOT_CONFIGURED, message, &fields));
        }
        (Some(_), Some(_)) => {
            return Err(unrouted(
                TABLE_NOT_CONFIGURED,
                format!(
                    "The delivery stream writes to several tables, and the record names no {}: a MetadataExtraction query or a function's otfMetadata must give its {ROUTE_DATABASE} and {ROUTE_TABLE}.",
                    if db.is_none() {
                        ROUTE_DATABASE
                    } else {
                        ROUTE_TABLE
                    }
                ),
                &fields,
            ));
        }
    };
    match fields.get(ROUTE_OPERATION) {
        None => Ok((index, Operation::Insert)),
        Some(op) => Operation::parse(op).map(|o| (index, o)).ok_or_else(|| {
            unrouted(
                INVALID_OPERATION,
                format!("The record's operation {op} is not insert, update or delete."),
                &fields,
            )
        }),
    }
}

/// Writes one object of the flush to the destination's bucket.
async fn put(
    inner: &Inner,
    name: &str,
    dest: &Destination,
    key: &str,
    data: &Bytes,
    what: &str,
) -> bool {
    let body =
        match crate::engine::encode_body(data, dest.compression, crate::engine::zip_entry(key)) {
            Ok(b) => b,
            Err(e) => {
                warn!(stream = %name, error = %e, "cannot compress the {what}");
                return false;
            }
        };
    match inner
        .sink
        .put_as(&dest.bucket, key, body, dest.kms_key.as_deref())
        .await
    {
        Ok(()) => {
            info!(stream = %name, bucket = %dest.bucket, key = %key, "wrote the {what}");
            true
        }
        Err(e) => {
            inner.metrics.failed(name);
            warn!(stream = %name, bucket = %dest.bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "could not write the {what}; retrying");
            false
        }
    }
}

/// Steps of a flush, counted in `Flushed::Failed { done }` so a retry of
/// the same batch does not write the backup twice. The commit needs no
/// count: a committed batch is recognized by its tag.
const STEP_BACKUP: usize = 1;

/// The records of a flush one table takes: each one's bytes, operation
/// and index in the batch.
#[derive(Default)]
struct Share<'a> {
    raw: Vec<&'a [u8]>,
    ops: Vec<Operation>,
    index: Vec<usize>,
}

/// Where a table's failures go: its own S3ErrorOutputPrefix when several
/// tables are listed (a single table's is the stream's error prefix
/// already), else the stream's (`None`).
fn error_sink(t: &Target, table: usize) -> Option<usize> {
    (t.tables.len() > 1 && t.tables.get(table)?.error_prefix.is_some()).then_some(table)
}

/// One flush into the tables: the AllData backup, one snapshot per table
/// that has records, then the error output of the records no table takes,
/// of those a table refused, and of every record of a table whose writes
/// have failed for the retry duration.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn flush(
    inner: &Arc<Inner>,
    s: &Stream,
    dest: &Destination,
    t: &Target,
    buf: &Batch,
    data: Bytes,
    ends: &[(i64, usize)],
    lambda_keys: &[Option<BTreeMap<String, String>>],
    processing_errors: Vec<u8>,
    skip: usize,
) -> Flushed {
    let range = buf.range.0..buf.range.1;
    let name = &s.rec.name;
    let mut done = skip;
    if t.backup_all && done < STEP_BACKUP && !data.is_empty() {
        let key = prefix::object_key(
            &dest.prefix,
            buf.first_ms,
            name,
            s.rec.version,
            &dest.extension,
            &mut rand::rng(),
        );
        if !put(inner, name, dest, &key, &data, "AllData backup").await {
            return Flushed::Failed { done };
        }
        done = STEP_BACKUP;
    }
    let records = crate::conversion::records(&data, Some(ends), buf.first_ms);
    let now = inner.now_ms();
    // The error output, by where it goes (see [`error_sink`]).
    let mut errors: BTreeMap<Option<usize>, Vec<u8>> = BTreeMap::new();
    errors.insert(None, processing_errors);
    // Each record's table and operation; records no table takes, or with
    // an operation that is none, go to the error output now.
    let mut shares: Vec<Share> = t.tables.iter().map(|_| Share::default()).collect();
    for (i, (arrival, rec)) in records.iter().enumerate() {
        match route(t, rec, lambda_keys.get(i).and_then(Option::as_ref)) {
            Ok((table, op)) => {
                if let Some(share) = shares.get_mut(table) {
                    share.raw.push(rec);
                    share.ops.push(op);
                    share.index.push(i);
                }
            }
            Err(u) => errors.entry(None).or_default().extend(error_line(
                t,
                (&u.database, &u.table),
                1,
                *arrival,
                u.code,
                &u.message,
                now,
                rec,
            )),
        }
    }
    // Several tables are committed one after the other: the batch's range
    // is kept before the first commit, so a restart re-reads that very
    // batch and the tables that committed it skip it (its tag).
    if t.tables.len() > 1 && shares.iter().any(|sh| !sh.raw.is_empty()) {
        let kept = crate::pending::load(inner, s.rec.uid)
            .await
            .is_some_and(|p| p.start == range.start && p.end == range.end);
        if !kept
            && !crate::pending::save(
                inner,
                s.rec.uid,
                &crate::pending::Pending::new(range.start, range.end),
            )
            .await
        {
            return Flushed::Failed { done };
        }
    }
    let tag = CommitTag {
        writer: writer(inner, s),
        start: range.start,
        end: range.end,
    };
    let mut outcomes: Vec<Option<Appended>> = t.tables.iter().map(|_| None).collect();
    let mut failures: Vec<(usize, TableError)> = Vec::new();
    for (i, (tt, share)) in t.tables.iter().zip(&shares).enumerate() {
        if share.raw.is_empty() {
            continue;
        }
        let ops: &[Operation] = if share.ops.iter().all(|o| *o == Operation::Insert) {
            &[]
        } else {
            &share.ops
        };
        let written = match (&inner.iceberg, &tt.locations) {
            (None, _) => Err(TableError::Unavailable {
                code: "Iceberg.CatalogUnavailable".into(),
                message: "This server has no Glue Data Catalog and embedded object store for Iceberg tables now (an external object store is configured).".into(),
            }),
            (_, None) => Err(TableError::Unusable {
                code: "Iceberg.LocationNotAuthorized".into(),
                message: "The delivery stream was created before this server kept the locations its table may write; re-create it to have them authorized.".into(),
            }),
            (Some(tables), Some(allowed)) => {
                tables.append(&tt.table, allowed, &share.raw, ops, &tag).await
            }
        };
        let (database, table) = (&tt.table.database, &tt.table.table);
        match written {
            Ok(out) => {
                if out.duplicate {
                    info!(stream = %name, %database, %table, start = range.start, end = range.end, "the batch is in the table already; not written again");
                } else if out.rows > 0 {
                    let bytes = share.raw.iter().map(|r| r.len() as u64).sum();
                    inner.metrics.delivered(name, out.rows, bytes);
                    info!(stream = %name, %database, %table, records = out.rows, "delivered to the Iceberg table");
                }
                if let Some(o) = outcomes.get_mut(i) {
                    *o = Some(out);
                }
            }
            Err(e) => failures.push((i, e)),
        }
    }
    let mut attempts: Vec<u32> = t.tables.iter().map(|_| 1).collect();
    if !failures.is_empty() {
        inner.metrics.failed(name);
        match crate::pending::failed(inner, s.rec.uid, (range.start, range.end), t.retry_ms).await {
            Failing::Retry => {
                for (i, e) in &failures {
                    let tt = &t.tables[*i];
                    warn!(stream = %name, database = %tt.table.database, table = %tt.table.table, code = e.code(), error = %e, "delivery to the Iceberg table failed; retrying");
                }
                return Flushed::Failed { done };
            }
            Failing::GiveUp { attempts: n } => {
                for (i, e) in failures {
                    let tt = &t.tables[i];
                    warn!(stream = %name, database = %tt.table.database, table = %tt.table.table, code = e.code(), error = %e, attempts = n, retry_s = t.retry_ms / 1000, "delivery to the Iceberg table failed for the whole retry duration; its records go to the error output");
                    let refused = (0..shares[i].raw.len())
                        .map(|index| Refused {
                            index,
                            code: e.code().to_string(),
                            message: e.to_string(),
                        })
                        .collect();
                    attempts[i] = n;
                    outcomes[i] = Some(Appended {
                        refused,
                        ..Appended::default()
                    });
                }
            }
        }
    }
    let now = inner.now_ms();
    for (i, out) in outcomes.iter().enumerate() {
        let (Some(out), Some(tt), Some(share)) = (out, t.tables.get(i), shares.get(i)) else {
            continue;
        };
        for r in &out.refused {
            if let Some((arrival, rec)) = share.index.get(r.index).and_then(|&j| records.get(j)) {
                errors
                    .entry(error_sink(t, i))
                    .or_default()
                    .extend(error_line(
                        t,
                        (&tt.table.database, &tt.table.table),
                        attempts[i],
                        *arrival,
                        &r.code,
                        &r.message,
                        now,
                        rec,
                    ));
            }
        }
    }
    for (sink, lines) in errors {
        if lines.is_empty() {
            continue;
        }
        let own = sink
            .and_then(|i| t.tables.get(i))
            .and_then(|tt| tt.error_prefix.as_deref())
            .and_then(|p| prefix::Template::parse(p).ok());
        let template = own.as_ref().unwrap_or(&dest.error_prefix);
        let key = crate::engine::error_key_under(
            template,
            dest,
            buf.first_ms,
            name,
            s.rec.version,
            ERROR_OUTPUT_TYPE,
            &mut rand::rng(),
        );
        if !put(
            inner,
            name,
            dest,
            &key,
            &Bytes::from(lines),
            "Iceberg error output",
        )
        .await
        {
            return Flushed::Failed { done };
        }
    }
    Flushed::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({
            "RoleARN": "arn:aws:iam::123456789012:role/r",
            "CatalogConfiguration": {"CatalogARN": "arn:aws:glue:us-east-1:123456789012:catalog"},
            "DestinationTableConfigurationList": [{"DestinationDatabaseName": "db", "DestinationTableName": "t"}],
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 5},
            "S3Configuration": {"RoleARN": "arn:aws:iam::123456789012:role/r", "BucketARN": "arn:aws:s3:::errors", "ErrorOutputPrefix": "err/"},
        })
    }

    #[test]
    fn checks_and_stores() {
        let d = normalize(&good(), "us-east-1", "123456789012").unwrap();
        assert_eq!(d["BucketARN"], "arn:aws:s3:::errors");
        assert_eq!(
            d["BufferingHints"],
            json!({"SizeInMBs": 1, "IntervalInSeconds": 5})
        );
        let t = of(&d).unwrap().unwrap();
        assert_eq!(
            t.tables,
            [TableTarget {
                table: TableRef {
                    database: "db".into(),
                    table: "t".into(),
                    unique_keys: Vec::new(),
                },
                locations: None,
                error_prefix: None,
            }]
        );
        assert!(!t.backup_all);
        let e = Destination::of(&d).unwrap();
        assert_eq!(e.iceberg, Some(t.clone()));
        let desc = description(&d).unwrap();
        assert_eq!(desc["S3BackupMode"], "FailedDataOnly");
        assert_eq!(
            desc["S3DestinationDescription"]["BucketARN"],
            "arn:aws:s3:::errors"
        );
        assert!(desc.get("S3Configuration").is_none());
        // Without a CatalogARN: this server's.
        let mut c = good();
        c["CatalogConfiguration"] = json!({});
        let d = normalize(&c, "us-east-1", "123456789012").unwrap();
        assert_eq!(
            of(&d).unwrap().unwrap().catalog_arn,
            "arn:aws:glue:us-east-1:123456789012:catalog"
        );

        let refuse = |patch: &dyn Fn(&mut Value), needle: &str| {
            let mut c = good();
            patch(&mut c);
            let e = normalize(&c, "us-east-1", "123456789012").unwrap_err();
            assert_eq!(e.code(), "InvalidArgumentException");
            assert!(e.to_string().contains(needle), "{e}");
        };
        refuse(
            &|c| c["DestinationTableConfigurationList"][0]["UniqueKeys"] = json!(["a b"]),
            "UniqueKeys",
        );
        refuse(
            &|c| c["DestinationTableConfigurationList"] = json!([]),
            "at least one table",
        );
        refuse(
            &|c| {
                c["DestinationTableConfigurationList"] = json!([
                    {"DestinationDatabaseName": "db", "DestinationTableName": "t"},
                    {"DestinationDatabaseName": "DB", "DestinationTableName": "T"}])
            },
            "more than once",
        );
        refuse(
            &|c| {
                c["DestinationTableConfigurationList"] =
                    json!([{"DestinationDatabaseName": "db", "DestinationTableName": ""}])
            },
            "DestinationTableName is required",
        );
        refuse(
            &|c| {
                c["CatalogConfiguration"]["CatalogARN"] =
                    json!("arn:aws:glue:us-east-1:999999999999:catalog")
            },
            "not this server's",
        );
        refuse(
            &|c| c["SchemaEvolutionConfiguration"] = json!({"Enabled": true}),
            "SchemaEvolution",
        );
        refuse(
            &|c| {
                c.as_object_mut().unwrap().remove("S3Configuration");
            },
            "S3Configuration is required",
        );
        refuse(
            &|c| c["BufferingHints"] = json!({"SizeInMBs": 500}),
            "SizeInMBs",
        );
        refuse(
            &|c| c["RetryOptions"] = json!({"DurationInSeconds": 7201}),
            "7200",
        );
        assert_eq!(t.retry_ms, 300_000);
        assert!(t.routing.is_none());

        // UniqueKeys and a MetadataExtraction query giving the operation:
        // the query is the routing, not the S3 path's partitioning.
        let mut c = good();
        c["DestinationTableConfigurationList"][0]["UniqueKeys"] = json!(["id"]);
        c["ProcessingConfiguration"] = json!({"Enabled": true, "Processors": [
            {"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{destinationDatabaseName: \"db\", destinationTableName: \"t\", operation: .op}"},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]});
        let d = normalize(&c, "us-east-1", "123456789012").unwrap();
        assert_eq!(
            d["ProcessingConfiguration"]["Processors"],
            json!([]),
            "the S3 path does not run the routing query"
        );
        let t = of(&d).unwrap().unwrap();
        assert_eq!(t.tables[0].table.unique_keys, vec!["id".to_string()]);
        assert!(t.routing.is_some());
        assert_eq!(
            description(&d).unwrap()["DestinationTableConfigurationList"][0]["UniqueKeys"],
            json!(["id"])
        );
        assert_eq!(
            route(&t, br#"{"op": "UPDATE"}"#, None),
            Ok((0, Operation::Update))
        );
        assert_eq!(route(&t, br#"{"id": 1}"#, None), Ok((0, Operation::Insert)));
        assert_eq!(
            route(&t, br#"{"op": "upsert"}"#, None).unwrap_err().code,
            INVALID_OPERATION
        );
        assert_eq!(
            route(&t, b"not json", None).unwrap_err().code,
            crate::partition::EXTRACTION_FAILED
        );
        // A function's otfMetadata wins over the query.
        let otf_key = |k: &str| format!("{}{k}", crate::lambda::OTF_KEY_PREFIX);
        let otf = BTreeMap::from([
            (otf_key(ROUTE_OPERATION), "delete".to_string()),
            (otf_key(ROUTE_TABLE), "T".to_string()),
            // A partition key of the same name is not the routing.
            (ROUTE_TABLE.to_string(), "other".to_string()),
        ]);
        assert_eq!(
            route(&t, br#"{"op": "insert"}"#, Some(&otf)),
            Ok((0, Operation::Delete))
        );
        let elsewhere = BTreeMap::from([(otf_key(ROUTE_TABLE), "other".to_string())]);
        let u = route(&t, br#"{}"#, Some(&elsewhere)).unwrap_err();
        assert_eq!(u.code, TABLE_NOT_CONFIGURED);
        assert_eq!((u.database.as_str(), u.table.as_str()), ("db", "other"));
        let mut c = good();
        c["RetryOptions"] = json!({"DurationInSeconds": 0});
        let d = normalize(&c, "us-east-1", "123456789012").unwrap();
        assert_eq!(of(&d).unwrap().unwrap().retry_ms, 0);
        // Stored before the locations were kept: none, which refuses.
        assert_eq!(of(&d).unwrap().unwrap().tables[0].locations, None);
        // Kept when one table was all there was: a flat list.
        let mut old = d.clone();
        old[LOCATIONS_KEY] = json!(["s3://lake/t/"]);
        assert_eq!(
            of(&old).unwrap().unwrap().tables[0].locations,
            Some(vec!["s3://lake/t/".to_string()])
        );
    }

    #[test]
    fn several_tables_route_by_the_names_each_record_gives() {
        let mut c = good();
        c["DestinationTableConfigurationList"] = json!([
            {"DestinationDatabaseName": "db", "DestinationTableName": "t"},
            {"DestinationDatabaseName": "db", "DestinationTableName": "u", "UniqueKeys": ["id"], "S3ErrorOutputPrefix": "u-errors/"},
            {"DestinationDatabaseName": "other", "DestinationTableName": "u"}]);
        c["ProcessingConfiguration"] = json!({"Enabled": true, "Processors": [
            {"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{destinationDatabaseName: .db, destinationTableName: .table, operation: .op}"},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]});
        let mut d = normalize(&c, "us-east-1", "123456789012").unwrap();
        // The stream's own error prefix stays the S3 configuration's.
        assert_eq!(d["ErrorOutputPrefix"], "err/");
        pin(
            &mut d,
            vec![
                vec!["s3://lake/t/".into()],
                vec!["s3://lake/u/".into()],
                vec!["s3://other/u/".into()],
            ],
        );
        let t = of(&d).unwrap().unwrap();
        assert_eq!(t.tables.len(), 3);
        assert_eq!(t.tables[1].error_prefix.as_deref(), Some("u-errors/"));
        assert_eq!(
            t.tables[2].locations,
            Some(vec!["s3://other/u/".to_string()])
        );
        assert_eq!((error_sink(&t, 0), error_sink(&t, 1)), (None, Some(1)));
        let r = |rec: &str| route(&t, rec.as_bytes(), None);
        assert_eq!(
            r(r#"{"db": "db", "table": "T"}"#),
            Ok((0, Operation::Insert))
        );
        assert_eq!(
            r(r#"{"db": "db", "table": "u", "op": "delete"}"#),
            Ok((1, Operation::Delete))
        );
        assert_eq!(
            r(r#"{"db": "other", "table": "u"}"#),
            Ok((2, Operation::Insert))
        );
        // A table name alone singles out t, not u (two databases have one).
        assert_eq!(r(r#"{"table": "t"}"#), Ok((0, Operation::Insert)));
        let u = r(r#"{"table": "u"}"#).unwrap_err();
        assert_eq!(u.code, TABLE_NOT_CONFIGURED);
        assert!(u.message.contains(ROUTE_DATABASE), "{}", u.message);
        // No routing at all with several tables: no table takes it.
        assert_eq!(r(r#"{}"#).unwrap_err().code, TABLE_NOT_CONFIGURED);
        let u = r(r#"{"db": "db", "table": "v"}"#).unwrap_err();
        assert_eq!(u.code, TABLE_NOT_CONFIGURED);
        assert!(u.message.contains("db.t, db.u, other.u"), "{}", u.message);
        assert_eq!(u.table, "v");
    }

    #[test]
    fn directories_are_checked_as_object_arns() {
        assert_eq!(
            objects_arn("us-east-1", "s3://lake/events/data/").unwrap(),
            "arn:aws:s3:::lake/events/data/*"
        );
        assert_eq!(
            objects_arn("cn-north-1", "s3://lake/").unwrap(),
            "arn:aws-cn:s3:::lake/*"
        );
        assert!(objects_arn("us-east-1", "s3://*/x/").is_err());
        assert!(objects_arn("us-east-1", "file:///x/").is_err());
    }

    use base64::Engine as _;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    #[derive(Debug)]
    struct ManualClock(AtomicI64);

    impl ripstream_log::Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A table that answers as told and records what it is asked.
    #[derive(Debug, Default)]
    struct FakeTables {
        /// Appends fail with this while set.
        failing: Mutex<Option<TableError>>,
        /// The last commit `committed` answers.
        last: Mutex<Option<(u64, u64)>>,
        /// Each append: the locations it was limited to and its tag.
        appends: Mutex<Vec<(Vec<String>, CommitTag, usize)>>,
        /// `failing` applies to this table only while set.
        fail_only: Mutex<Option<String>>,
        /// Each append's table.
        written: Mutex<Vec<String>>,
    }

    fn copy(e: &TableError) -> TableError {
        match e {
            TableError::Unusable { code, message } => TableError::Unusable {
                code: code.clone(),
                message: message.clone(),
            },
            TableError::Unavailable { code, message } => TableError::Unavailable {
                code: code.clone(),
                message: message.clone(),
            },
        }
    }

    impl IcebergTables for FakeTables {
        fn locations<'a>(
            &'a self,
            t: &'a TableRef,
        ) -> BoxFuture<'a, std::result::Result<Vec<String>, TableError>> {
            Box::pin(async move { Ok(vec![format!("s3://lake/{}/", t.table)]) })
        }
        fn check<'a>(
            &'a self,
            t: &'a TableRef,
            allowed: &'a [String],
        ) -> BoxFuture<'a, std::result::Result<(), TableError>> {
            Box::pin(async move {
                assert_eq!(allowed, [format!("s3://lake/{}/", t.table)]);
                Ok(())
            })
        }
        fn committed<'a>(
            &'a self,
            _: &'a TableRef,
            _: &'a [String],
            _: &'a str,
        ) -> BoxFuture<'a, std::result::Result<Option<(u64, u64)>, TableError>> {
            Box::pin(async { Ok(*self.last.lock().unwrap()) })
        }
        fn append<'a>(
            &'a self,
            t: &'a TableRef,
            allowed: &'a [String],
            records: &'a [&'a [u8]],
            _: &'a [Operation],
            tag: &'a CommitTag,
        ) -> BoxFuture<'a, std::result::Result<Appended, TableError>> {
            Box::pin(async move {
                self.appends
                    .lock()
                    .unwrap()
                    .push((allowed.to_vec(), tag.clone(), records.len()));
                self.written.lock().unwrap().push(t.table.clone());
                let this_one = self
                    .fail_only
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_none_or(|only| *only == t.table);
                match &*self.failing.lock().unwrap() {
                    Some(e) if this_one => Err(copy(e)),
                    _ => Ok(Appended {
                        rows: records.len() as u64,
                        ..Appended::default()
                    }),
                }
            })
        }
    }

    struct Engine {
        dir: tempfile::TempDir,
        _ctx: ripstream_runtime::ServiceContext,
        svc: crate::Firehose,
        clock: Arc<ManualClock>,
        tables: Arc<FakeTables>,
        engine: tokio::task::JoinHandle<()>,
    }

    impl Drop for Engine {
        fn drop(&mut self) {
            self.engine.abort();
        }
    }

    async fn engine(tables: FakeTables) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
        let mut cfg = ripstream_runtime::ContextConfig::new(dir.path());
        cfg.clock = clock.clone();
        let ctx = ripstream_runtime::ServiceContext::open(cfg).unwrap();
        let tables = Arc::new(tables);
        let sink = Arc::new(crate::LocalObjects::new(dir.path().join("objects")));
        std::fs::create_dir_all(dir.path().join("objects/errors")).unwrap();
        let svc = crate::Firehose::open_in(
            &ctx,
            crate::FirehoseConfig {
                retry_initial: Duration::from_millis(20),
                retry_max: Duration::from_millis(50),
                ..crate::FirehoseConfig::default()
            },
            crate::Connections {
                iceberg: Some(tables.clone()),
                ..crate::Connections::objects(sink)
            },
            &mut prometheus_client::registry::Registry::default(),
        )
        .await
        .unwrap();
        let engine = tokio::spawn(svc.background());
        Engine {
            dir,
            _ctx: ctx,
            svc,
            clock,
            tables,
            engine,
        }
    }

    fn stream(retry_s: u64) -> Value {
        let mut c = good();
        c["BufferingHints"] = json!({"SizeInMBs": 1, "IntervalInSeconds": 0});
        c["RetryOptions"] = json!({"DurationInSeconds": retry_s});
        c["S3Configuration"]["ErrorOutputPrefix"] = json!("err/");
        c["CatalogConfiguration"] = json!({});
        json!({"DeliveryStreamName": "ice", "IcebergDestinationConfiguration": c})
    }

    async fn put(e: &Engine, records: &[&str]) {
        e.svc
            .put_record_batch(json!({"DeliveryStreamName": "ice", "Records": records
                .iter()
                .map(|r| json!({"Data": b64().encode(r)}))
                .collect::<Vec<_>>()}))
            .await
            .unwrap();
    }

    /// The error output's lines, once there are `n`.
    async fn error_lines(e: &Engine, n: usize) -> Vec<Value> {
        error_lines_under(e, "err/iceberg-failed", n).await
    }

    /// The lines of the error output under `dir` of the bucket.
    async fn error_lines_under(e: &Engine, dir: &str, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            let mut lines = Vec::new();
            let root = e.dir.path().join("objects/errors").join(dir);
            let mut stack = vec![root];
            while let Some(d) = stack.pop() {
                for f in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if f.path().is_dir() {
                        stack.push(f.path());
                    } else if !f.path().to_string_lossy().contains('#') {
                        for l in std::fs::read(f.path()).unwrap().split(|b| *b == b'\n') {
                            if !l.is_empty() {
                                lines.push(serde_json::from_slice(l).unwrap());
                            }
                        }
                    }
                }
            }
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no error output of {n} records");
    }

    async fn appends_at_least(e: &Engine, n: usize) {
        for _ in 0..400 {
            if e.tables.appends.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} appends");
    }

    fn unavailable() -> TableError {
        TableError::Unavailable {
            code: "Iceberg.CommitFailed".into(),
            message: "the catalog is down".into(),
        }
    }

    #[tokio::test]
    async fn the_stream_keeps_the_locations_it_was_created_for() {
        let e = engine(FakeTables::default()).await;
        e.svc.create_delivery_stream(stream(300)).await.unwrap();
        put(&e, &[r#"{"id": 1}"#]).await;
        appends_at_least(&e, 1).await;
        let (allowed, tag, n) = e.tables.appends.lock().unwrap()[0].clone();
        assert_eq!(allowed, ["s3://lake/t/".to_string()]);
        assert_eq!((tag.start, tag.end, n), (0, 1, 1));
        // Not described: the destination's own members only.
        let d = e
            .svc
            .describe_delivery_stream(json!({"DeliveryStreamName": "ice"}))
            .await
            .unwrap();
        let text = d.to_string();
        assert!(!text.contains(LOCATIONS_KEY), "{text}");
        assert!(!text.contains("s3://lake/t/"), "{text}");
    }

    #[tokio::test]
    async fn a_table_failing_with_no_retry_duration_sends_the_records_to_the_error_output() {
        let e = engine(FakeTables {
            failing: Mutex::new(Some(unavailable())),
            ..FakeTables::default()
        })
        .await;
        e.svc.create_delivery_stream(stream(0)).await.unwrap();
        put(&e, &[r#"{"id": 1}"#, r#"{"id": 2}"#]).await;
        let lines = error_lines(&e, 2).await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        for l in &lines {
            assert_eq!(l["errorCode"], "Iceberg.CommitFailed");
            assert_eq!(l["errorMessage"], "the catalog is down");
            assert_eq!(l["attemptsMade"], 1);
            assert_eq!(l["destinationTableName"], "t");
        }
        let raw: Vec<Vec<u8>> = lines
            .iter()
            .map(|l| b64().decode(l["rawData"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(raw, [br#"{"id": 1}"#.to_vec(), br#"{"id": 2}"#.to_vec()]);
        // And delivery moves on: the next batch is the next records.
        put(&e, &[r#"{"id": 3}"#]).await;
        error_lines(&e, 3).await;
        let appends = e.tables.appends.lock().unwrap().clone();
        assert_eq!(appends.len(), 2, "each batch tried once");
        assert_eq!((appends[1].1.start, appends[1].1.end), (2, 3));
    }

    #[tokio::test]
    async fn a_failing_table_is_retried_for_the_retry_duration_then_skipped() {
        let e = engine(FakeTables {
            failing: Mutex::new(Some(unavailable())),
            ..FakeTables::default()
        })
        .await;
        e.svc.create_delivery_stream(stream(60)).await.unwrap();
        put(&e, &[r#"{"id": 1}"#]).await;
        appends_at_least(&e, 3).await;
        let root = e.dir.path().join("objects/errors");
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "nothing in the error output within the retry duration"
        );
        // The clock passes the retry duration: the batch is given up.
        e.clock.0.fetch_add(61_000, Ordering::SeqCst);
        let lines = error_lines(&e, 1).await;
        assert_eq!(lines[0]["errorCode"], "Iceberg.CommitFailed");
        let tried = lines[0]["attemptsMade"].as_u64().unwrap();
        assert!(tried >= 3, "{tried}");
        // The table back: the next records go in.
        *e.tables.failing.lock().unwrap() = None;
        let before = e.tables.appends.lock().unwrap().len();
        put(&e, &[r#"{"id": 2}"#]).await;
        appends_at_least(&e, before + 1).await;
        let last = e.tables.appends.lock().unwrap().last().unwrap().1.clone();
        assert_eq!((last.start, last.end), (1, 2));
    }

    #[tokio::test]
    async fn a_commit_naming_offsets_past_the_log_is_not_resumed_after() {
        let e = engine(FakeTables::default()).await;
        e.svc.create_delivery_stream(stream(300)).await.unwrap();
        put(&e, &[r#"{"id": 1}"#]).await;
        appends_at_least(&e, 1).await;
        // Someone who can write the table forges a commit of the stream's
        // that covers every offset; a restart must not skip to its end.
        *e.tables.last.lock().unwrap() = Some((0, u64::MAX));
        let (uid, part) = {
            let s = e.svc.inner.stream("ice").unwrap();
            (s.rec.uid, s.part.end_offset())
        };
        assert_eq!(resume(&e.svc.inner, "ice", uid, 1).await, 1);
        // One that the log does hold is resumed after.
        *e.tables.last.lock().unwrap() = Some((0, part));
        assert_eq!(resume(&e.svc.inner, "ice", uid, 0).await, part);
    }

    #[tokio::test]
    async fn several_tables_each_take_their_records_and_keep_the_batch_for_a_restart() {
        let e = engine(FakeTables {
            failing: Mutex::new(Some(unavailable())),
            fail_only: Mutex::new(Some("u".into())),
            ..FakeTables::default()
        })
        .await;
        let mut input = stream(300);
        let c = &mut input["IcebergDestinationConfiguration"];
        c["DestinationTableConfigurationList"] = json!([
            {"DestinationDatabaseName": "db", "DestinationTableName": "t"},
            {"DestinationDatabaseName": "db", "DestinationTableName": "u", "S3ErrorOutputPrefix": "u-err/"}]);
        c["ProcessingConfiguration"] = json!({"Enabled": true, "Processors": [
            {"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{destinationDatabaseName: \"db\", destinationTableName: .to}"},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]});
        e.svc.create_delivery_stream(input).await.unwrap();
        put(
            &e,
            &[
                r#"{"to": "t", "id": 1}"#,
                r#"{"to": "u", "id": 2}"#,
                r#"{"to": "t", "id": 3}"#,
                r#"{"to": "x", "id": 4}"#,
            ],
        )
        .await;
        // t commits, u fails: the batch is retried as the same range.
        appends_at_least(&e, 4).await;
        let uid = e.svc.inner.stream("ice").unwrap().rec.uid;
        let p = e.svc.inner.pending(uid).unwrap().unwrap();
        assert_eq!((p.start, p.end), (0, 4), "kept for a restart to re-read");
        {
            let appends = e.tables.appends.lock().unwrap();
            let written = e.tables.written.lock().unwrap();
            for ((allowed, tag, n), table) in appends.iter().zip(written.iter()) {
                assert_eq!(
                    allowed,
                    &[format!("s3://lake/{table}/")],
                    "each table its own directories"
                );
                assert_eq!((tag.start, tag.end), (0, 4));
                assert_eq!(*n, if table == "t" { 2 } else { 1 });
            }
            assert_eq!(&written[..2], ["t", "u"]);
        }
        // Once u is given up on, its record goes to u's error prefix and
        // the one for a table not listed to the stream's.
        e.clock.0.fetch_add(301_000, Ordering::SeqCst);
        let lines = error_lines(&e, 1).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["errorCode"], TABLE_NOT_CONFIGURED);
        assert_eq!(lines[0]["destinationTableName"], "x");
        let lines = error_lines_under(&e, "u-err/iceberg-failed", 1).await;
        assert_eq!(lines[0]["errorCode"], "Iceberg.CommitFailed");
        assert_eq!(lines[0]["destinationTableName"], "u");
        assert_eq!(
            b64().decode(lines[0]["rawData"].as_str().unwrap()).unwrap(),
            br#"{"to": "u", "id": 2}"#
        );
        // Delivery moves on to the next batch.
        *e.tables.failing.lock().unwrap() = None;
        let before = e.tables.appends.lock().unwrap().len();
        put(&e, &[r#"{"to": "u", "id": 5}"#]).await;
        appends_at_least(&e, before + 1).await;
        let last = e.tables.appends.lock().unwrap().last().unwrap().1.clone();
        assert_eq!((last.start, last.end), (4, 5));
        assert_eq!(e.tables.written.lock().unwrap().last().unwrap(), "u");
    }

    #[tokio::test]
    async fn an_update_adds_a_table_and_keeps_the_directories_of_those_it_had() {
        let e = engine(FakeTables::default()).await;
        e.svc.create_delivery_stream(stream(300)).await.unwrap();
        let update = |version: &str, u: Value| {
            e.svc.update_destination(json!({
                "DeliveryStreamName": "ice",
                "CurrentDeliveryStreamVersionId": version,
                "DestinationId": crate::record::DESTINATION_ID,
                "IcebergDestinationUpdate": u,
            }))
        };
        let two = json!({
            "DestinationTableConfigurationList": [
                {"DestinationDatabaseName": "db", "DestinationTableName": "t"},
                {"DestinationDatabaseName": "db", "DestinationTableName": "u", "UniqueKeys": ["id"]}],
            "ProcessingConfiguration": {"Enabled": true, "Processors": [
                {"Type": "MetadataExtraction", "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{destinationTableName: .to}"},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]},
            "S3BackupMode": "AllData",
        });
        let e2 = update("7", two.clone()).await.unwrap_err();
        assert_eq!(e2.code(), "ConcurrentModificationException");
        let e2 = e
            .svc
            .update_destination(json!({
                "DeliveryStreamName": "ice",
                "CurrentDeliveryStreamVersionId": "1",
                "DestinationId": crate::record::DESTINATION_ID,
                "S3DestinationUpdate": {"Prefix": "x/"},
            }))
            .await
            .unwrap_err();
        assert!(e2.to_string().contains("IcebergDestinationUpdate"), "{e2}");
        update("1", two).await.unwrap();
        let d = e
            .svc
            .describe_delivery_stream(json!({"DeliveryStreamName": "ice"}))
            .await
            .unwrap();
        let desc = &d["DeliveryStreamDescription"];
        assert_eq!(desc["VersionId"], "2");
        let ice = &desc["Destinations"][0]["IcebergDestinationDescription"];
        assert_eq!(
            ice["DestinationTableConfigurationList"][1]["UniqueKeys"],
            json!(["id"])
        );
        assert_eq!(ice["S3BackupMode"], "AllData");
        // Kept: the buffering and the S3 configuration the update did not name.
        assert_eq!(ice["BufferingHints"]["IntervalInSeconds"], 0);
        assert_eq!(ice["S3DestinationDescription"]["ErrorOutputPrefix"], "err/");
        let t = of(&e.svc.inner.stream("ice").unwrap().rec.destination)
            .unwrap()
            .unwrap();
        let dirs: Vec<_> = t.tables.iter().map(|tt| tt.locations.clone()).collect();
        assert_eq!(
            dirs,
            [
                Some(vec!["s3://lake/t/".to_string()]),
                Some(vec!["s3://lake/u/".to_string()])
            ]
        );
        put(&e, &[r#"{"to": "u", "id": 1}"#, r#"{"to": "t", "id": 2}"#]).await;
        appends_at_least(&e, 2).await;
        let written = e.tables.written.lock().unwrap().clone();
        assert_eq!(written, ["t", "u"]);
        // The backup of every record, once on, stays on.
        let e2 = update("2", json!({"S3BackupMode": "FailedDataOnly"}))
            .await
            .unwrap_err();
        assert!(e2.to_string().contains("AllData"), "{e2}");
    }
}
