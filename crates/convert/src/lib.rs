//! Firehose's record format conversion: JSON records read against a Glue
//! table's Hive columns, written as one Parquet file.
//!
//! The crate knows nothing of Firehose or Glue: it takes the table's
//! columns as `(name, type string)` pairs (what `StorageDescriptor.Columns`
//! holds), the deserializer's options ([`Deserializer`]: OpenX or Hive JSON
//! SerDe) and the serializer's ([`ParquetOptions`]), and turns a batch of
//! records into a Parquet body plus the records it could not read, each with
//! why, so the caller can send those to its error output.
//!
//! Each record is checked whole against the schema before any of it is
//! appended ([`Row`]), so a bad record leaves no trace in the file. It is
//! kept out of the service crates because `parquet` and `arrow` are heavy:
//! only Firehose links it.
//!
//! ```
//! use ripstream_convert::{Converter, Deserializer, ParquetOptions};
//! let cols = [("id".to_string(), "int".to_string()), ("name".to_string(), "string".to_string())];
//! let conv = Converter::new(&cols, Deserializer::default()).unwrap();
//! let out = conv
//!     .convert(&[br#"{"ID": 1, "name": "a"}"#, b"not json"], &ParquetOptions::default())
//!     .unwrap();
//! assert_eq!(out.rows, 1);
//! assert_eq!(out.failed.len(), 1);
//! assert_eq!(&out.parquet.unwrap()[..4], b"PAR1");
//! ```

pub mod hive;
mod read;
mod time;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::Schema;

pub use read::Row;
pub use time::{JodaFormat, TimestampFormat};
pub use write::{ParquetCompression, ParquetOptions, WriterVersion};

use hive::{HiveType, HiveTypeError};

/// Why a table's columns cannot be a conversion schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("The table has no columns.")]
    NoColumns,
    #[error("Column {column} has type {ty:?}, which is not a Hive type: {source}")]
    BadType {
        column: String,
        ty: String,
        #[source]
        source: HiveTypeError,
    },
    #[error("Column {0} appears more than once.")]
    DuplicateColumn(String),
}

/// Why the deserializer's or serializer's options cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("TimestampFormats: {format:?} is not a Joda-Time pattern this server reads: {why}")]
    TimestampFormat { format: String, why: String },
}

/// Why one record could not be converted: it is not JSON, not an object,
/// or a value does not fit its column's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("The record is not valid JSON: {0}")]
    NotJson(String),
    #[error("The record is not a JSON object.")]
    NotObject,
    #[error("Cannot read {path} as {ty}: {why}")]
    Value {
        path: String,
        ty: String,
        why: String,
    },
}

/// Why a batch could not be written at all (never a record's fault).
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("could not build the Arrow arrays")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("could not write the Parquet file")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// OpenXJsonSerDe's options (Firehose's defaults when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenXOptions {
    /// `a.b` in a JSON key matches column `a_b`.
    pub convert_dots_to_underscores: bool,
    /// JSON keys are lower-cased before they are matched (default true).
    pub case_insensitive: bool,
    /// Column name to the JSON key that fills it (top-level columns).
    pub column_to_json_key: BTreeMap<String, String>,
}

impl Default for OpenXOptions {
    fn default() -> OpenXOptions {
        OpenXOptions {
            convert_dots_to_underscores: false,
            case_insensitive: true,
            column_to_json_key: BTreeMap::new(),
        }
    }
}

/// The JSON deserializer Firehose is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deserializer {
    OpenX(OpenXOptions),
    /// HiveJsonSerDe: `TimestampFormats` (Joda patterns or `millis`), tried
    /// in order before `java.sql.Timestamp.valueOf`'s form.
    Hive(Vec<TimestampFormat>),
}

impl Default for Deserializer {
    fn default() -> Deserializer {
        Deserializer::OpenX(OpenXOptions::default())
    }
}

impl Deserializer {
    /// HiveJsonSerDe with the given `TimestampFormats` strings.
    pub fn hive(formats: &[String]) -> Result<Deserializer, OptionsError> {
        formats
            .iter()
            .map(|f| TimestampFormat::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map(Deserializer::Hive)
    }
}

/// One column of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: HiveType,
}

/// A batch converted: the Parquet body (`None` when no record could be
/// read) and the records that could not, by their index in the batch.
#[derive(Debug)]
pub struct Converted {
    pub parquet: Option<Vec<u8>>,
    pub rows: usize,
    pub failed: Vec<(usize, RecordError)>,
}

/// A schema and a deserializer, ready to convert batches.
#[derive(Debug, Clone)]
pub struct Converter {
    columns: Vec<Column>,
    deserializer: Deserializer,
    arrow: Arc<Schema>,
}

impl Converter {
    /// Parses the columns' Hive types. Column names are matched
    /// case-insensitively, as Hive folds them.
    pub fn new(
        columns: &[(String, String)],
        deserializer: Deserializer,
    ) -> Result<Converter, SchemaError> {
        if columns.is_empty() {
            return Err(SchemaError::NoColumns);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cols = Vec::with_capacity(columns.len());
        for (name, ty) in columns {
            if !seen.insert(name.to_lowercase()) {
                return Err(SchemaError::DuplicateColumn(name.clone()));
            }
            let parsed = hive::parse(ty).map_err(|source| SchemaError::BadType {
                column: name.clone(),
                ty: ty.clone(),
                source,
            })?;
            cols.push(Column {
                name: name.clone(),
                ty: parsed,
            });
        }
        let arrow = Arc::new(write::arrow_schema(&cols));
        Ok(Converter {
            columns: cols,
            deserializer,
            arrow,
        })
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The Arrow schema the Parquet file is written with.
    pub fn arrow_schema(&self) -> &Arc<Schema> {
        &self.arrow
    }

    /// Reads one record (one JSON object) into a row.
    pub fn read(&self, record: &[u8]) -> Result<Row, RecordError> {
        read::row(&self.columns, &self.deserializer, record)
    }

    /// Rows read by [`Converter::read`] as one Arrow batch of
    /// [`Converter::arrow_schema`] (for writers other than this crate's
    /// Parquet file, such as an Iceberg table's).
    pub fn record_batch(&self, rows: &[Row]) -> Result<arrow_array::RecordBatch, ConvertError> {
        write::record_batch(&self.columns, &self.arrow, rows)
    }

    /// Converts a batch: each record is one JSON object.
    pub fn convert(
        &self,
        records: &[&[u8]],
        options: &ParquetOptions,
    ) -> Result<Converted, ConvertError> {
        let mut rows = Vec::with_capacity(records.len());
        let mut failed = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match self.read(r) {
                Ok(row) => rows.push(row),
                Err(e) => failed.push((i, e)),
            }
        }
        let n = rows.len();
        let parquet = if rows.is_empty() {
            None
        } else {
            Some(write::parquet(&self.columns, &self.arrow, rows, options)?)
        };
        Ok(Converted {
            parquet,
            rows: n,
            failed,
        })
    }
}

#[cfg(test)]
mod tests;
