//! Record format conversion (`DataFormatConversionConfiguration`): its
//! checks at create and update, the engine's view of it, the schema it
//! reads at delivery time, and AWS's error output for records that cannot
//! be converted.
//!
//! The schema is the Glue table's columns, looked up through
//! [`SchemaSource`] at every flush, as AWS reads the table when it
//! delivers: `VersionId` `LATEST` (the default) picks up a table update
//! from the next flush on. The binary implements the trait over the Glue
//! service, so this crate depends on no other service. A table that cannot
//! be read (missing, no columns, a type that is not Hive's) fails the
//! flush, which the engine retries with backoff while the records wait in
//! the log: nothing is lost to a schema that is fixed later. Records that
//! do not parse or do not fit the schema go to the error output under
//! `format-conversion-failed`, one JSON document per record in AWS's shape.
//!
//! The conversion itself (JSON to Parquet) is `ripstream-convert`. ORC is
//! refused at create: see [`normalize`].

use std::fmt::Debug;

use base64::Engine as _;
use ripstream_convert::{
    Converter, Deserializer, OpenXOptions, ParquetCompression, ParquetOptions, WriterVersion,
};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::sink::BoxFuture;

/// The error-output type (`!{firehose:error-output-type}`) of records that
/// could not be converted.
pub const ERROR_OUTPUT_TYPE: &str = "format-conversion-failed";

/// The error code of a record that does not parse or fit the schema.
pub const MALFORMED: &str = "DataFormatConversion.MalformedData";

/// The smallest SizeInMBs AWS accepts with conversion enabled, and the size
/// used when BufferingHints gives none.
pub const MIN_SIZE_MB: u64 = 64;
pub const DEFAULT_SIZE_MB: u64 = 128;

/// The Glue table `SchemaConfiguration` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub catalog_id: Option<String>,
    pub database: String,
    pub table: String,
    pub region: Option<String>,
    /// `LATEST` or a version number.
    pub version_id: String,
}

/// A table's columns as Glue stores them: `(Name, Type)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumns {
    pub columns: Vec<(String, String)>,
    /// The version read (a number, even when `LATEST` was asked for).
    pub version_id: String,
}

/// Why the schema could not be read. The code is the one AWS's delivery
/// error logs use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaError {
    /// The catalog, database, table or version does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The catalog could not be read now.
    #[error("{0}")]
    Unavailable(String),
}

impl SchemaError {
    pub fn code(&self) -> &'static str {
        match self {
            SchemaError::NotFound(_) => "DataFormatConversion.EntityNotFound",
            SchemaError::Unavailable(_) => "DataFormatConversion.InternalError",
        }
    }
}

/// Where conversion reads its schemas: the binary's bridge to Glue.
pub trait SchemaSource: Send + Sync + Debug {
    fn columns<'a>(
        &'a self,
        table: &'a TableRef,
    ) -> BoxFuture<'a, std::result::Result<TableColumns, SchemaError>>;
}

/// The engine's view of an enabled conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub table: TableRef,
    pub deserializer: Deserializer,
    pub parquet: ParquetOptions,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Whether the destination converts: the configuration is present and not
/// disabled (`Enabled` defaults to true).
pub fn enabled(d: &Map<String, Value>) -> bool {
    d.get("DataFormatConversionConfiguration")
        .is_some_and(|c| c.get("Enabled").and_then(Value::as_bool).unwrap_or(true))
}

/// Checks an enabled `DataFormatConversionConfiguration` and fills AWS's
/// defaults (`Enabled`, `VersionId` `LATEST`). The Glue table is not looked
/// up here: AWS reads it at delivery time, so a stream may be created
/// before its table.
pub fn normalize(d: &mut Map<String, Value>) -> Result<()> {
    let Some(c) = d.get_mut("DataFormatConversionConfiguration") else {
        return Ok(());
    };
    let Some(c) = c.as_object_mut() else {
        return Err(invalid(
            "DataFormatConversionConfiguration must be an object.",
        ));
    };
    if !c.get("Enabled").and_then(Value::as_bool).unwrap_or(true) {
        return Ok(());
    }
    c.insert("Enabled".into(), json!(true));
    let Some(schema) = c
        .get_mut("SchemaConfiguration")
        .and_then(Value::as_object_mut)
    else {
        return Err(invalid(
            "SchemaConfiguration is required when data format conversion is enabled.",
        ));
    };
    for m in ["RoleARN", "DatabaseName", "TableName"] {
        if schema
            .get(m)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(invalid(format!(
                "SchemaConfiguration.{m} is required when data format conversion is enabled."
            )));
        }
    }
    schema.entry("VersionId").or_insert_with(|| json!("LATEST"));
    let view = Value::Object(c.clone());
    deserializer(&view)?;
    serializer(&view)?;
    Ok(())
}

fn one_of<'a>(v: Option<&'a Value>, what: &str, names: &[&'a str]) -> Result<(&'a str, &'a Value)> {
    let given: Vec<(&str, &Value)> = names
        .iter()
        .filter_map(|n| v.and_then(|v| v.get(*n)).map(|x| (*n, x)))
        .collect();
    match given.as_slice() {
        [one] => Ok(*one),
        _ => Err(invalid(format!(
            "{what} must specify exactly one of {}.",
            names.join(" or ")
        ))),
    }
}

fn deserializer(c: &Value) -> Result<Deserializer> {
    let d = c
        .get("InputFormatConfiguration")
        .and_then(|i| i.get("Deserializer"));
    let (name, cfg) = one_of(
        d,
        "InputFormatConfiguration.Deserializer",
        &["OpenXJsonSerDe", "HiveJsonSerDe"],
    )?;
    let flag = |k: &str, default: bool| cfg.get(k).and_then(Value::as_bool).unwrap_or(default);
    if name == "HiveJsonSerDe" {
        let formats: Vec<String> = match cfg.get("TimestampFormats") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|f| {
                    f.as_str().map(String::from).ok_or_else(|| {
                        invalid("HiveJsonSerDe.TimestampFormats must be a list of strings.")
                    })
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(invalid(
                    "HiveJsonSerDe.TimestampFormats must be a list of strings.",
                ));
            }
        };
        return Deserializer::hive(&formats).map_err(|e| invalid(format!("HiveJsonSerDe.{e}")));
    }
    let mut mappings = std::collections::BTreeMap::new();
    if let Some(m) = cfg.get("ColumnToJsonKeyMappings") {
        let Some(m) = m.as_object() else {
            return Err(invalid(
                "OpenXJsonSerDe.ColumnToJsonKeyMappings must map column names to JSON keys.",
            ));
        };
        for (col, key) in m {
            let Some(key) = key.as_str() else {
                return Err(invalid(
                    "OpenXJsonSerDe.ColumnToJsonKeyMappings must map column names to JSON keys.",
                ));
            };
            mappings.insert(col.clone(), key.to_string());
        }
    }
    Ok(Deserializer::OpenX(OpenXOptions {
        convert_dots_to_underscores: flag("ConvertDotsInJsonKeysToUnderscores", false),
        case_insensitive: flag("CaseInsensitive", true),
        column_to_json_key: mappings,
    }))
}

fn serializer(c: &Value) -> Result<ParquetOptions> {
    let s = c
        .get("OutputFormatConfiguration")
        .and_then(|o| o.get("Serializer"));
    let (name, cfg) = one_of(
        s,
        "OutputFormatConfiguration.Serializer",
        &["ParquetSerDe", "OrcSerDe"],
    )?;
    if name == "OrcSerDe" {
        return Err(invalid(
            "OrcSerDe is not supported yet by this server: it converts to Parquet only \
             (ParquetSerDe). The Rust ORC writer (orc-rust) is built on another major version of \
             Arrow than the Parquet writer, a second full Arrow build.",
        ));
    }
    let mut o = ParquetOptions::default();
    let n = |k: &str| cfg.get(k).and_then(Value::as_u64);
    if let Some(b) = n("BlockSizeBytes") {
        if b < 64 << 20 {
            return Err(invalid(
                "ParquetSerDe.BlockSizeBytes must be at least 67108864 (64 MiB).",
            ));
        }
        o.block_size_bytes = b;
    }
    if let Some(p) = n("PageSizeBytes") {
        if p < 64 << 10 {
            return Err(invalid(
                "ParquetSerDe.PageSizeBytes must be at least 65536 (64 KiB).",
            ));
        }
        o.page_size_bytes = usize::try_from(p).unwrap_or(usize::MAX);
    }
    if let Some(p) = n("MaxPaddingBytes") {
        o.max_padding_bytes = p;
    }
    if let Some(d) = cfg
        .get("EnableDictionaryCompression")
        .and_then(Value::as_bool)
    {
        o.enable_dictionary = d;
    }
    o.compression = match cfg.get("Compression").and_then(Value::as_str) {
        None | Some("SNAPPY") => ParquetCompression::Snappy,
        Some("GZIP") => ParquetCompression::Gzip,
        Some("UNCOMPRESSED") => ParquetCompression::Uncompressed,
        Some(other) => {
            return Err(invalid(format!(
                "ParquetSerDe.Compression {other} is not one of UNCOMPRESSED, GZIP, SNAPPY."
            )));
        }
    };
    o.writer_version = match cfg.get("WriterVersion").and_then(Value::as_str) {
        None | Some("V1") => WriterVersion::V1,
        Some("V2") => WriterVersion::V2,
        Some(other) => {
            return Err(invalid(format!(
                "ParquetSerDe.WriterVersion {other} is not one of V1, V2."
            )));
        }
    };
    Ok(o)
}

/// The engine's view of a stored (normalized) destination's conversion.
pub fn of(dest: &Value) -> Result<Option<Conversion>> {
    let Some(c) = dest.get("DataFormatConversionConfiguration") else {
        return Ok(None);
    };
    if !c.get("Enabled").and_then(Value::as_bool).unwrap_or(true) {
        return Ok(None);
    }
    let s = c.get("SchemaConfiguration").cloned().unwrap_or(json!({}));
    let table = TableRef {
        catalog_id: text(&s, "CatalogId").map(String::from),
        database: text(&s, "DatabaseName").unwrap_or("").to_string(),
        table: text(&s, "TableName").unwrap_or("").to_string(),
        region: text(&s, "Region").map(String::from),
        version_id: text(&s, "VersionId").unwrap_or("LATEST").to_string(),
    };
    Ok(Some(Conversion {
        table,
        deserializer: deserializer(c)?,
        parquet: serializer(c)?,
    }))
}

/// A converted flush: the Parquet body (empty when no record converted),
/// how many rows it holds, and the error output of the records that did
/// not convert.
pub(crate) struct Converted {
    pub body: Vec<u8>,
    pub rows: u64,
    pub errors: Vec<u8>,
}

/// One record's error-output document, as AWS documents it for format
/// conversion failures (note `ErrorCode` and `ErrorMessage`, capitalized
/// unlike processing failures' members). DirectPut records have no
/// sequence numbers, so those members are left out; a stream source's
/// record (`source`) has its own.
#[allow(clippy::too_many_arguments)]
pub(crate) fn error_line(
    source: Option<&crate::source::RecordMetadata>,
    arrival_ms: i64,
    code: &str,
    message: &str,
    ending_ms: i64,
    raw: &[u8],
    table: &TableRef,
    account: &str,
    region: &str,
    version_id: &str,
) -> Vec<u8> {
    let catalog = table.catalog_id.as_deref().unwrap_or(account);
    let region = table.region.as_deref().unwrap_or(region);
    let mut doc = json!({
        "attemptsMade": 1,
        "arrivalTimestamp": arrival_ms,
        "ErrorCode": code,
        "ErrorMessage": message,
        "attemptEndingTimestamp": ending_ms,
        "rawData": base64::engine::general_purpose::STANDARD.encode(raw),
        "dataCatalogTable": {
            "catalogId": catalog,
            "databaseName": table.database,
            "tableName": table.table,
            "region": region,
            "versionId": version_id,
            "catalogArn": format!("arn:{}:glue:{region}:{catalog}:catalog", ripstream_iam::partition(region)),
        }
    });
    if let (Some(m), Some(o)) = (source, doc.as_object_mut()) {
        o.insert("sequenceNumber".into(), json!(m.sequence_number));
        o.insert("subSequenceNumber".into(), json!(m.subsequence_number));
    }
    let mut line = serde_json::to_vec(&doc).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Splits delivered data into its JSON records: a Lambda's output is one
/// run of records, which the deserializer reads one JSON value at a time;
/// what cannot be read ends the run (it is one bad record).
pub(crate) fn split_json(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(data).into_iter::<serde::de::IgnoredAny>();
    let mut start = 0;
    loop {
        match it.next() {
            Some(Ok(_)) => {
                let end = it.byte_offset();
                out.push(&data[start..end]);
                start = end;
            }
            Some(Err(_)) => {
                if data[start..].iter().any(|b| !b.is_ascii_whitespace()) {
                    out.push(&data[start..]);
                }
                break;
            }
            None => break,
        }
    }
    out
}

/// The records of a flush with their arrival times: by the buffer's record
/// ends when the data is the buffer's, else (a Lambda's output) split into
/// JSON values, all arriving with the buffer's first record.
pub(crate) fn records<'a>(
    data: &'a [u8],
    ends: Option<&[(i64, usize)]>,
    first_ms: i64,
) -> Vec<(i64, &'a [u8])> {
    match ends {
        Some(ends) => {
            let mut start = 0;
            let mut out = Vec::with_capacity(ends.len());
            for &(arrival, end) in ends {
                if let Some(r) = data.get(start..end) {
                    out.push((arrival, r));
                }
                start = end;
            }
            out
        }
        None => split_json(data)
            .into_iter()
            .map(|r| (first_ms, r))
            .collect(),
    }
}

/// What a flush hands to [`convert`]: its data (the buffer's, or a
/// Lambda's output) and, for the buffer's, where each record ends.
pub(crate) struct FlushData {
    pub data: bytes::Bytes,
    pub ends: Option<Vec<(i64, usize)>>,
    pub first_ms: i64,
    /// Per record of `ends`, a stream source's log key (its
    /// [`crate::source::RecordMetadata`]); empty when not known.
    pub meta: Vec<bytes::Bytes>,
}

/// Converts the records of a flush against the table's current schema.
/// `Err`: the schema cannot be read (or the writer failed); the flush is
/// retried. The conversion itself runs on a blocking thread: encoding up
/// to 128 MiB of records must not stall the async workers.
pub(crate) async fn convert(
    source: Option<&dyn SchemaSource>,
    conv: &Conversion,
    input: FlushData,
    account: &str,
    region: &str,
    now_ms: i64,
) -> std::result::Result<Converted, SchemaError> {
    let Some(source) = source else {
        return Err(SchemaError::Unavailable(
            "This server has no Glue Data Catalog to read schemas from.".into(),
        ));
    };
    let cols = source.columns(&conv.table).await?;
    let converter = Converter::new(&cols.columns, conv.deserializer.clone()).map_err(|e| {
        SchemaError::NotFound(format!(
            "The schema of table {}.{} (version {}) cannot be used: {e}",
            conv.table.database, conv.table.table, cols.version_id
        ))
    })?;
    let (conv, account, region) = (conv.clone(), account.to_string(), region.to_string());
    tokio::task::spawn_blocking(move || {
        let records = records(&input.data, input.ends.as_deref(), input.first_ms);
        let raw: Vec<&[u8]> = records.iter().map(|(_, r)| *r).collect();
        let out = converter
            .convert(&raw, &conv.parquet)
            .map_err(|e| SchemaError::Unavailable(format!("{}", ripstream_api::Chain(&e))))?;
        let mut errors = Vec::new();
        for (i, e) in &out.failed {
            let (arrival, raw) = records[*i];
            let source = input
                .meta
                .get(*i)
                .and_then(|k| crate::source::RecordMetadata::of_key(k));
            errors.extend(error_line(
                source.as_ref(),
                arrival,
                MALFORMED,
                &e.to_string(),
                now_ms,
                raw,
                &conv.table,
                &account,
                &region,
                &cols.version_id,
            ));
        }
        Ok(Converted {
            body: out.parquet.unwrap_or_default(),
            rows: out.rows as u64,
            errors,
        })
    })
    .await
    .map_err(|e| SchemaError::Unavailable(format!("the conversion task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(conv: Value) -> Map<String, Value> {
        json!({"DataFormatConversionConfiguration": conv})
            .as_object()
            .cloned()
            .unwrap()
    }

    fn good() -> Value {
        json!({
            "SchemaConfiguration": {"RoleARN": "arn:aws:iam::123456789012:role/r", "DatabaseName": "db", "TableName": "t"},
            "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
            "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}}
        })
    }

    #[test]
    fn checks_and_defaults() {
        let mut d = dest(good());
        normalize(&mut d).unwrap();
        let c = &d["DataFormatConversionConfiguration"];
        assert_eq!(c["Enabled"], true);
        assert_eq!(c["SchemaConfiguration"]["VersionId"], "LATEST");
        let v = of(&Value::Object(d.clone())).unwrap().unwrap();
        assert_eq!(v.table.version_id, "LATEST");
        assert_eq!(v.parquet, ParquetOptions::default());
        assert_eq!(v.deserializer, Deserializer::default());

        let refuse = |patch: &dyn Fn(&mut Value), needle: &str| {
            let mut c = good();
            patch(&mut c);
            let e = normalize(&mut dest(c)).unwrap_err();
            assert_eq!(e.code(), "InvalidArgumentException");
            assert!(e.to_string().contains(needle), "{e}");
        };
        refuse(
            &|c| c["OutputFormatConfiguration"]["Serializer"] = json!({"OrcSerDe": {}}),
            "OrcSerDe is not supported yet",
        );
        refuse(
            &|c| c["OutputFormatConfiguration"]["Serializer"] = json!({}),
            "exactly one",
        );
        refuse(
            &|c| {
                c["InputFormatConfiguration"]["Deserializer"] =
                    json!({"OpenXJsonSerDe": {}, "HiveJsonSerDe": {}})
            },
            "exactly one",
        );
        refuse(
            &|c| {
                c["SchemaConfiguration"]
                    .as_object_mut()
                    .unwrap()
                    .remove("TableName");
            },
            "TableName",
        );
        refuse(
            &|c| {
                c["InputFormatConfiguration"]["Deserializer"] =
                    json!({"HiveJsonSerDe": {"TimestampFormats": ["yyyy GG"]}})
            },
            "TimestampFormats",
        );
        refuse(
            &|c| {
                c["OutputFormatConfiguration"]["Serializer"]["ParquetSerDe"] =
                    json!({"BlockSizeBytes": 1024})
            },
            "BlockSizeBytes",
        );
        // Disabled: stored as given, not checked.
        let mut d = dest(json!({"Enabled": false}));
        normalize(&mut d).unwrap();
        assert!(!enabled(&d));
        assert_eq!(of(&Value::Object(d)).unwrap(), None);
    }

    #[test]
    fn serde_options_are_read() {
        let mut c = good();
        c["InputFormatConfiguration"]["Deserializer"] = json!({"OpenXJsonSerDe": {
            "ConvertDotsInJsonKeysToUnderscores": true, "CaseInsensitive": false,
            "ColumnToJsonKeyMappings": {"ts": "timestamp"}}});
        c["OutputFormatConfiguration"]["Serializer"]["ParquetSerDe"] = json!({
            "Compression": "GZIP", "WriterVersion": "V2", "EnableDictionaryCompression": false,
            "PageSizeBytes": 65536, "BlockSizeBytes": 134217728, "MaxPaddingBytes": 10});
        let v = of(&Value::Object(dest(c))).unwrap().unwrap();
        let Deserializer::OpenX(o) = v.deserializer else {
            panic!("OpenX")
        };
        assert!(o.convert_dots_to_underscores && !o.case_insensitive);
        assert_eq!(o.column_to_json_key["ts"], "timestamp");
        assert_eq!(v.parquet.compression, ParquetCompression::Gzip);
        assert_eq!(v.parquet.writer_version, WriterVersion::V2);
        assert!(!v.parquet.enable_dictionary);
        assert_eq!(
            (
                v.parquet.page_size_bytes,
                v.parquet.block_size_bytes,
                v.parquet.max_padding_bytes
            ),
            (65536, 134217728, 10)
        );
    }

    #[test]
    fn runs_of_json_split_into_records() {
        let recs = split_json(b"{\"a\":1}\n{\"a\":2} {\"a\":\n");
        assert_eq!(
            recs,
            vec![&b"{\"a\":1}"[..], &b"\n{\"a\":2}"[..], &b" {\"a\":\n"[..]]
        );
        assert!(split_json(b"  \n").is_empty());
    }

    #[test]
    fn error_lines_are_awss_shape() {
        let t = TableRef {
            catalog_id: None,
            database: "db".into(),
            table: "t".into(),
            region: None,
            version_id: "LATEST".into(),
        };
        let line = error_line(
            None,
            5,
            MALFORMED,
            "bad",
            9,
            b"x",
            &t,
            "123456789012",
            "us-east-1",
            "0",
        );
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["ErrorCode"], MALFORMED);
        assert_eq!(v["rawData"], "eA==");
        assert_eq!(
            v["dataCatalogTable"]["catalogArn"],
            "arn:aws:glue:us-east-1:123456789012:catalog"
        );
        assert_eq!(v["dataCatalogTable"]["versionId"], "0");
        assert_eq!(
            (
                v["arrivalTimestamp"].as_i64(),
                v["attemptEndingTimestamp"].as_i64()
            ),
            (Some(5), Some(9))
        );
    }
}
