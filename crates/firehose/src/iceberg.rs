//! The Apache Iceberg destination (`IcebergDestinationConfiguration`):
//! its checks at create, the engine's view of it, and its flush.
//!
//! A stream stores it as an S3 destination (the `S3Configuration`: the
//! bucket of the error output and the AllData backup, with the Iceberg
//! configuration's BufferingHints and ProcessingConfiguration, so buffering
//! and processing are the S3 path's) plus the Iceberg configuration under
//! [`STORED_KEY`]. Each flush appends its records to the one table as one
//! snapshot through [`IcebergTables`] (the binary's bridge to the Glue
//! subset and the object store; this crate knows neither), tagged with the
//! stream and the log offsets it holds, so a batch committed before a crash
//! is not committed again: the delivery task resumes after the table's last
//! commit of the stream ([`resume`]), and an append of a committed batch is
//! skipped.
//!
//! Not yet: routing records to several tables (JSON query or Lambda
//! metadata), UniqueKeys (upserts need equality deletes, which the `iceberg`
//! crate cannot commit yet), PartitionSpec, schema evolution, automatic
//! table creation, and UpdateDestination of an Iceberg stream: each is
//! refused with an InvalidArgumentException.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::engine::{Batch, Flushed};
use crate::error::{Error, Result};
use crate::record::Destination;
use crate::sink::BoxFuture;
use crate::{Inner, Stream, prefix};

/// Where the Iceberg configuration is kept in the stored destination.
pub const STORED_KEY: &str = "IcebergDestination";

/// The error output type (`!{firehose:error-output-type}`) of records a
/// table refused or that could not be delivered.
pub const ERROR_OUTPUT_TYPE: &str = "iceberg-failed";

/// The table a stream delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub database: String,
    pub table: String,
}

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

/// Iceberg tables, as the binary bridges them.
pub trait IcebergTables: Send + Sync + std::fmt::Debug {
    /// Whether the table could take records now.
    fn check<'a>(&'a self, t: &'a TableRef) -> BoxFuture<'a, std::result::Result<(), TableError>>;
    /// The log offsets of `writer`'s last commit to the table.
    fn committed<'a>(
        &'a self,
        t: &'a TableRef,
        writer: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<(u64, u64)>, TableError>>;
    /// Appends JSON records as one snapshot (none when the tag's batch is
    /// committed already); the records it refuses are answered either way.
    fn append<'a>(
        &'a self,
        t: &'a TableRef,
        records: &'a [&'a [u8]],
        tag: &'a CommitTag,
    ) -> BoxFuture<'a, std::result::Result<Appended, TableError>>;
}

/// The engine's view of the Iceberg part of a stored destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub table: TableRef,
    pub catalog_arn: String,
    /// `AllData`: every record is also written to the S3 bucket.
    pub backup_all: bool,
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
    let [table] = tables.as_slice() else {
        return Err(not_yet(
            "Routing records to tables by JSON query or Lambda metadata (DestinationTableConfigurationList must name exactly one table)",
        ));
    };
    if table
        .get("UniqueKeys")
        .and_then(Value::as_array)
        .is_some_and(|k| !k.is_empty())
    {
        return Err(not_yet(
            "UniqueKeys (updates and deletes need Iceberg equality deletes, which this server cannot commit yet; appends only)",
        ));
    }
    if table.get("PartitionSpec").is_some() {
        return Err(not_yet("PartitionSpec (automatic table creation)"));
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
    for k in ["BufferingHints", "ProcessingConfiguration"] {
        if let Some(v) = c.get(k) {
            d.insert(k.into(), v.clone());
        }
    }
    // The table's error prefix is where its failures go.
    if let Some(p) = table
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
    stored
        .entry("RetryOptions")
        .or_insert(json!({"DurationInSeconds": 300}));
    d.insert(STORED_KEY.into(), Value::Object(stored));
    Ok(Value::Object(d))
}

/// The Iceberg target of a stored destination, if it is one.
pub fn of(dest: &Value) -> Result<Option<Target>> {
    let Some(c) = dest.get(STORED_KEY) else {
        return Ok(None);
    };
    let t = c
        .get("DestinationTableConfigurationList")
        .and_then(Value::as_array)
        .and_then(|l| l.first())
        .ok_or_else(|| invalid("The Iceberg destination names no table."))?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Some(Target {
        table: TableRef {
            database: s(t, "DestinationDatabaseName"),
            table: s(t, "DestinationTableName"),
        },
        catalog_arn: c
            .get("CatalogConfiguration")
            .map(|cc| s(cc, "CatalogARN"))
            .unwrap_or_default(),
        backup_all: c.get("S3BackupMode").and_then(Value::as_str) == Some("AllData"),
    }))
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

/// Checks at create that the table can take records (AWS reads it with
/// glue:GetTable before it accepts the stream).
pub(crate) async fn check(inner: &Inner, dest: &Value) -> Result<()> {
    let Some(t) = of(dest)? else {
        return Ok(());
    };
    let Some(tables) = &inner.iceberg else {
        return Err(invalid(
            "Iceberg destinations need this server's Glue Data Catalog and embedded object store, which this server does not offer (an external object store is configured).",
        ));
    };
    match tables.check(&t.table).await {
        Ok(()) => Ok(()),
        Err(TableError::Unusable { message, .. }) => Err(invalid(message)),
        Err(e @ TableError::Unavailable { .. }) => Err(Error::internal(e)),
    }
}

/// The writer a stream's commits are tagged with: the stream and its uid,
/// so a stream re-created under the same name starts afresh.
fn writer(inner: &Inner, s: &Stream) -> String {
    format!("{}#{}", inner.stream_arn(&s.rec.name), s.rec.uid)
}

/// Where a stream's delivery resumes: after the table's last commit of the
/// stream when that is past the checkpoint (a crash came between the
/// commit and the checkpoint).
pub(crate) async fn resume(inner: &Arc<Inner>, name: &str, uid: u64, next: u64) -> u64 {
    let Some(s) = crate::engine::current(inner, name, uid) else {
        return next;
    };
    let (Ok(Some(t)), Some(tables)) = (of(&s.rec.destination), &inner.iceberg) else {
        return next;
    };
    match tables.committed(&t.table, &writer(inner, &s)).await {
        Ok(Some((start, end))) if start <= next && end > next => {
            info!(stream = %name, from = next, to = end, "the table holds the batch delivered before the restart; resuming after it");
            end
        }
        Ok(_) => next,
        Err(e) => {
            warn!(stream = %name, code = e.code(), error = %e, "cannot read the table's commits; a batch committed before a crash may be appended again");
            next
        }
    }
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// The error output line of a record the table refused (AWS's error
/// record, with the destination table).
fn error_line(
    t: &Target,
    arrival_ms: i64,
    code: &str,
    message: &str,
    now: i64,
    raw: &[u8],
) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "attemptsMade": 1,
        "arrivalTimestamp": arrival_ms,
        "errorCode": code,
        "errorMessage": message,
        "attemptEndingTimestamp": now,
        "rawData": b64().encode(raw),
        "catalogARN": t.catalog_arn,
        "destinationDatabaseName": t.table.database,
        "destinationTableName": t.table.table,
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
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

/// One flush into the table: the AllData backup, the append (one
/// snapshot), then the error output of the records the table refused.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn flush(
    inner: &Arc<Inner>,
    s: &Stream,
    dest: &Destination,
    t: &Target,
    buf: &Batch,
    data: Bytes,
    processing_errors: Vec<u8>,
    lambda: bool,
    skip: usize,
) -> Flushed {
    let range = buf.range.0..buf.range.1;
    let name = &s.rec.name;
    let Some(tables) = &inner.iceberg else {
        warn!(stream = %name, "no Iceberg catalog on this server; retrying");
        return Flushed::Failed { done: skip };
    };
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
    let ends = (!lambda).then(|| buf.ends.clone());
    let records = crate::conversion::records(&data, ends.as_deref(), buf.first_ms);
    let raw: Vec<&[u8]> = records.iter().map(|(_, r)| *r).collect();
    let tag = CommitTag {
        writer: writer(inner, s),
        start: range.start,
        end: range.end,
    };
    let out = match tables.append(&t.table, &raw, &tag).await {
        Ok(o) => o,
        Err(e) => {
            inner.metrics.failed(name);
            warn!(stream = %name, database = %t.table.database, table = %t.table.table, code = e.code(), error = %e, "delivery to the Iceberg table failed; retrying");
            return Flushed::Failed { done };
        }
    };
    if out.duplicate {
        info!(stream = %name, database = %t.table.database, table = %t.table.table, start = range.start, end = range.end, "the batch is in the table already; not appended again");
    } else if out.rows > 0 {
        inner.metrics.delivered(name, out.rows, data.len() as u64);
        info!(stream = %name, database = %t.table.database, table = %t.table.table, records = out.rows, "delivered to the Iceberg table");
    }
    let now = inner.now_ms();
    let mut errors = processing_errors;
    for r in &out.refused {
        if let Some((arrival, rec)) = records.get(r.index) {
            errors.extend(error_line(t, *arrival, &r.code, &r.message, now, rec));
        }
    }
    if !errors.is_empty() {
        let key = crate::engine::error_key_for(
            dest,
            buf.first_ms,
            name,
            s.rec.version,
            ERROR_OUTPUT_TYPE,
        );
        if !put(
            inner,
            name,
            dest,
            &key,
            &Bytes::from(errors),
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
            t.table,
            TableRef {
                database: "db".into(),
                table: "t".into()
            }
        );
        assert!(!t.backup_all);
        let e = Destination::of(&d).unwrap();
        assert_eq!(e.iceberg, Some(t));
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
            &|c| c["DestinationTableConfigurationList"][0]["UniqueKeys"] = json!(["id"]),
            "UniqueKeys",
        );
        refuse(
            &|c| c["DestinationTableConfigurationList"] = json!([]),
            "exactly one table",
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
    }
}
