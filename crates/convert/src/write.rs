//! Hive types as Arrow types, rows as Arrow arrays, and the Parquet file.
//!
//! The mapping is the one Hive's Parquet SerDe reads back: `tinyint`,
//! `smallint`, `int`, `bigint` as 8/16/32/64-bit integers; `float`,
//! `double`; `decimal(p,s)` as Decimal128(p,s); `string`, `char(n)`,
//! `varchar(n)` as UTF-8; `binary`; `date` as Date32; `timestamp` as
//! microseconds without a time zone (Hive's timestamps are zone-less);
//! `array` as a list of `element`, `map` as `key_value` entries (keys not
//! null), `struct` as a struct. Every column and field is nullable.

use std::sync::Arc;

use arrow_array::builder::BooleanBufferBuilder;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int16Array, Int32Array, Int64Array, ListArray, MapArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel};
use parquet::file::properties::{WriterProperties, WriterVersion as PqVersion};

use crate::hive::HiveType;
use crate::read::{Cell, Row};
use crate::{Column, ConvertError};

/// ParquetSerDe's `Compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetCompression {
    #[default]
    Snappy,
    Gzip,
    Uncompressed,
}

/// ParquetSerDe's `WriterVersion`: V1 (default) writes data pages v1 and
/// the 1.0 format's encodings; V2 data pages v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriterVersion {
    #[default]
    V1,
    V2,
}

/// ParquetSerDe's options, AWS's defaults when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetOptions {
    pub compression: ParquetCompression,
    /// The HDFS block size (default 256 MiB, at least 64 MiB). Firehose uses
    /// it for padding only; with `max_padding_bytes` 0 (the default, and
    /// meaningless on S3) it changes nothing in the file.
    pub block_size_bytes: u64,
    /// Data page size (default 1 MiB, at least 64 KiB).
    pub page_size_bytes: usize,
    /// Dictionary encoding (default on, as Hive's writer).
    pub enable_dictionary: bool,
    pub max_padding_bytes: u64,
    pub writer_version: WriterVersion,
}

impl Default for ParquetOptions {
    fn default() -> ParquetOptions {
        ParquetOptions {
            compression: ParquetCompression::Snappy,
            block_size_bytes: 256 << 20,
            page_size_bytes: 1 << 20,
            enable_dictionary: true,
            max_padding_bytes: 0,
            writer_version: WriterVersion::V1,
        }
    }
}

fn list_field(elem: &HiveType) -> Arc<Field> {
    Arc::new(Field::new("element", arrow_type(elem), true))
}

fn map_entries(k: &HiveType, v: &HiveType) -> Arc<Field> {
    Arc::new(Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", arrow_type(k), false),
            Field::new("value", arrow_type(v), true),
        ])),
        false,
    ))
}

fn struct_fields(fields: &[crate::hive::StructField]) -> Fields {
    Fields::from(
        fields
            .iter()
            .map(|f| Field::new(&f.name, arrow_type(&f.ty), true))
            .collect::<Vec<_>>(),
    )
}

pub(crate) fn arrow_type(t: &HiveType) -> DataType {
    match t {
        HiveType::Boolean => DataType::Boolean,
        HiveType::TinyInt => DataType::Int8,
        HiveType::SmallInt => DataType::Int16,
        HiveType::Int => DataType::Int32,
        HiveType::BigInt => DataType::Int64,
        HiveType::Float => DataType::Float32,
        HiveType::Double => DataType::Float64,
        HiveType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
        HiveType::String | HiveType::Char(_) | HiveType::Varchar(_) => DataType::Utf8,
        HiveType::Binary => DataType::Binary,
        HiveType::Date => DataType::Date32,
        HiveType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        HiveType::Array(e) => DataType::List(list_field(e)),
        HiveType::Map(k, v) => DataType::Map(map_entries(k, v), false),
        HiveType::Struct(f) => DataType::Struct(struct_fields(f)),
    }
}

pub(crate) fn arrow_schema(columns: &[Column]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(&c.ty), true))
            .collect::<Vec<_>>(),
    )
}

fn nulls(cells: &[&Cell]) -> Option<NullBuffer> {
    if cells.iter().all(|c| !matches!(c, Cell::Null)) {
        return None;
    }
    let mut b = BooleanBufferBuilder::new(cells.len());
    for c in cells {
        b.append(!matches!(c, Cell::Null));
    }
    Some(NullBuffer::new(b.finish()))
}

fn ints<T>(cells: &[&Cell], f: impl Fn(i64) -> T) -> Vec<Option<T>> {
    cells
        .iter()
        .map(|c| match c {
            Cell::Int(i) => Some(f(*i)),
            _ => None,
        })
        .collect()
}

/// The array of one type from cells read against it (a cell of another
/// kind cannot occur: `read` made them from the same type; it is NULL).
pub(crate) fn array(t: &HiveType, cells: &[&Cell]) -> Result<ArrayRef, ConvertError> {
    Ok(match t {
        HiveType::Boolean => Arc::new(BooleanArray::from(
            cells
                .iter()
                .map(|c| match c {
                    Cell::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        HiveType::TinyInt => Arc::new(Int8Array::from(ints(cells, |i| i as i8))),
        HiveType::SmallInt => Arc::new(Int16Array::from(ints(cells, |i| i as i16))),
        HiveType::Int => Arc::new(Int32Array::from(ints(cells, |i| i as i32))),
        HiveType::BigInt => Arc::new(Int64Array::from(ints(cells, |i| i))),
        HiveType::Float => Arc::new(Float32Array::from(
            cells
                .iter()
                .map(|c| match c {
                    Cell::Float(f) => Some(*f as f32),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        HiveType::Double => Arc::new(Float64Array::from(
            cells
                .iter()
                .map(|c| match c {
                    Cell::Float(f) => Some(*f),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        HiveType::Decimal { precision, scale } => Arc::new(
            Decimal128Array::from(
                cells
                    .iter()
                    .map(|c| match c {
                        Cell::Decimal(d) => Some(*d),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )
            .with_precision_and_scale(*precision, *scale as i8)?,
        ),
        HiveType::String | HiveType::Char(_) | HiveType::Varchar(_) => Arc::new(StringArray::from(
            cells
                .iter()
                .map(|c| match c {
                    Cell::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        HiveType::Binary => Arc::new(BinaryArray::from_opt_vec(
            cells
                .iter()
                .map(|c| match c {
                    Cell::Bytes(b) => Some(b.as_slice()),
                    _ => None,
                })
                .collect(),
        )),
        HiveType::Date => Arc::new(Date32Array::from(
            cells
                .iter()
                .map(|c| match c {
                    Cell::Date(d) => Some(*d),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        HiveType::Timestamp => Arc::new(TimestampMicrosecondArray::from(
            cells
                .iter()
                .map(|c| match c {
                    Cell::Timestamp(t) => Some(*t),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        HiveType::Array(elem) => {
            let mut offsets = Vec::with_capacity(cells.len() + 1);
            offsets.push(0i32);
            let mut children = Vec::new();
            for c in cells {
                if let Cell::List(items) = c {
                    children.extend(items.iter());
                }
                offsets.push(i32::try_from(children.len()).map_err(|_| {
                    arrow_schema::ArrowError::ComputeError("a list past 2^31 elements".into())
                })?);
            }
            let values = array(elem, &children)?;
            Arc::new(ListArray::try_new(
                list_field(elem),
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                values,
                nulls(cells),
            )?)
        }
        HiveType::Map(kt, vt) => {
            let mut offsets = Vec::with_capacity(cells.len() + 1);
            offsets.push(0i32);
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            for c in cells {
                if let Cell::Map(entries) = c {
                    for (k, v) in entries {
                        keys.push(k);
                        values.push(v);
                    }
                }
                offsets.push(i32::try_from(keys.len()).map_err(|_| {
                    arrow_schema::ArrowError::ComputeError("a map past 2^31 entries".into())
                })?);
            }
            let entries_field = map_entries(kt, vt);
            let DataType::Struct(fields) = entries_field.data_type().clone() else {
                return Err(arrow_schema::ArrowError::SchemaError(
                    "map entries must be a struct".into(),
                )
                .into());
            };
            let entries =
                StructArray::try_new(fields, vec![array(kt, &keys)?, array(vt, &values)?], None)?;
            Arc::new(MapArray::try_new(
                entries_field,
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                entries,
                nulls(cells),
                false,
            )?)
        }
        HiveType::Struct(fields) => {
            let mut children = Vec::with_capacity(fields.len());
            for (i, f) in fields.iter().enumerate() {
                let col: Vec<&Cell> = cells
                    .iter()
                    .map(|c| match c {
                        Cell::Struct(v) => v.get(i).unwrap_or(&Cell::Null),
                        _ => &Cell::Null,
                    })
                    .collect();
                children.push(array(&f.ty, &col)?);
            }
            Arc::new(StructArray::try_new(
                struct_fields(fields),
                children,
                nulls(cells),
            )?)
        }
    })
}

fn properties(o: &ParquetOptions) -> WriterProperties {
    let compression = match o.compression {
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::Gzip => Compression::GZIP(GzipLevel::default()),
        ParquetCompression::Uncompressed => Compression::UNCOMPRESSED,
    };
    WriterProperties::builder()
        .set_compression(compression)
        .set_data_page_size_limit(o.page_size_bytes)
        .set_dictionary_enabled(o.enable_dictionary)
        .set_writer_version(match o.writer_version {
            WriterVersion::V1 => PqVersion::PARQUET_1_0,
            WriterVersion::V2 => PqVersion::PARQUET_2_0,
        })
        .set_created_by("ripstream (Amazon Data Firehose record format conversion)".into())
        .build()
}

/// Rows as one Arrow batch of `schema` (the columns' Arrow schema).
pub(crate) fn record_batch(
    columns: &[Column],
    schema: &Arc<Schema>,
    rows: &[Row],
) -> Result<RecordBatch, ConvertError> {
    let mut arrays = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let cells: Vec<&Cell> = rows
            .iter()
            .map(|r| r.0.get(i).unwrap_or(&Cell::Null))
            .collect();
        arrays.push(array(&c.ty, &cells)?);
    }
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

/// Rows as one Parquet file (one row group: a flush is at most 128 MiB of
/// input, below the smallest HDFS block Firehose allows).
pub(crate) fn parquet(
    columns: &[Column],
    schema: &Arc<Schema>,
    rows: Vec<Row>,
    options: &ParquetOptions,
) -> Result<Vec<u8>, ConvertError> {
    let batch = record_batch(columns, schema, &rows)?;
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(properties(options)))?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}
