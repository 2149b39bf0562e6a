use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int8Type, Int32Type, Int64Type,
    TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::*;
use crate::read::Cell;

fn cols(spec: &[(&str, &str)]) -> Vec<(String, String)> {
    spec.iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn read_back(bytes: Vec<u8>) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    batches.into_iter().next().unwrap()
}

fn convert(c: &Converter, records: &[&str]) -> Converted {
    let recs: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
    c.convert(&recs, &ParquetOptions::default()).unwrap()
}

#[test]
fn hive_types_map_to_arrow_types() {
    let c = Converter::new(
        &cols(&[
            ("b", "boolean"),
            ("t", "tinyint"),
            ("s", "smallint"),
            ("i", "int"),
            ("l", "bigint"),
            ("f", "float"),
            ("d", "double"),
            ("m", "decimal(10,2)"),
            ("str", "string"),
            ("c", "char(3)"),
            ("v", "varchar(10)"),
            ("bin", "binary"),
            ("dt", "date"),
            ("ts", "timestamp"),
            ("a", "array<int>"),
            ("mp", "map<string,bigint>"),
            ("st", "struct<x:int,y:string>"),
        ]),
        Deserializer::default(),
    )
    .unwrap();
    let s = c.arrow_schema();
    let ty = |n: &str| s.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(ty("b"), DataType::Boolean);
    assert_eq!(ty("t"), DataType::Int8);
    assert_eq!(ty("s"), DataType::Int16);
    assert_eq!(ty("i"), DataType::Int32);
    assert_eq!(ty("l"), DataType::Int64);
    assert_eq!(ty("f"), DataType::Float32);
    assert_eq!(ty("d"), DataType::Float64);
    assert_eq!(ty("m"), DataType::Decimal128(10, 2));
    for n in ["str", "c", "v"] {
        assert_eq!(ty(n), DataType::Utf8);
    }
    assert_eq!(ty("bin"), DataType::Binary);
    assert_eq!(ty("dt"), DataType::Date32);
    assert_eq!(ty("ts"), DataType::Timestamp(TimeUnit::Microsecond, None));
    assert!(matches!(ty("a"), DataType::List(f) if f.data_type() == &DataType::Int32));
    assert!(matches!(ty("mp"), DataType::Map(..)));
    assert!(matches!(ty("st"), DataType::Struct(f) if f.len() == 2));
    assert!(s.fields().iter().all(|f| f.is_nullable()));
}

#[test]
fn every_type_round_trips_through_parquet() {
    let c = Converter::new(
        &cols(&[
            ("b", "boolean"),
            ("t", "tinyint"),
            ("i", "int"),
            ("l", "bigint"),
            ("d", "double"),
            ("m", "decimal(10,2)"),
            ("str", "string"),
            ("c", "char(3)"),
            ("bin", "binary"),
            ("dt", "date"),
            ("ts", "timestamp"),
            ("a", "array<int>"),
            ("mp", "map<string,bigint>"),
            ("st", "struct<x:int,y:array<string>>"),
        ]),
        Deserializer::default(),
    )
    .unwrap();
    let out = convert(
        &c,
        &[
            r#"{"b": true, "t": -5, "i": "42", "l": 9007199254740993, "d": 1.5, "m": 12.345,
                "str": {"nested": [1]}, "c": "abcdef", "bin": "hi", "dt": "2026-12-04",
                "ts": "2026-12-04T05:06:07.123456Z", "a": [1, null, 3],
                "mp": {"k": 7}, "st": {"X": 1, "y": ["p", "q"]}}"#,
            r#"{"b": null}"#,
        ],
    );
    assert_eq!((out.rows, out.failed.len()), (2, 0), "{:?}", out.failed);
    let batch = read_back(out.parquet.unwrap());
    assert_eq!(batch.num_rows(), 2);
    let col = |n: &str| batch.column_by_name(n).unwrap().clone();
    assert!(col("b").as_boolean().value(0));
    assert!(col("b").is_null(1));
    assert_eq!(col("t").as_primitive::<Int8Type>().value(0), -5);
    assert_eq!(col("i").as_primitive::<Int32Type>().value(0), 42);
    assert_eq!(
        col("l").as_primitive::<Int64Type>().value(0),
        9_007_199_254_740_993
    );
    assert_eq!(col("d").as_primitive::<Float64Type>().value(0), 1.5);
    // 12.345 at scale 2, rounded half up.
    assert_eq!(col("m").as_primitive::<Decimal128Type>().value(0), 1235);
    assert_eq!(col("str").as_string::<i32>().value(0), r#"{"nested":[1]}"#);
    assert_eq!(col("c").as_string::<i32>().value(0), "abc");
    assert_eq!(col("bin").as_binary::<i32>().value(0), b"hi");
    assert_eq!(
        col("dt").as_primitive::<Date32Type>().value(0),
        date("2026-12-04").unwrap()
    );
    assert_eq!(
        col("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_796_360_767_123_456
    );
    let a = col("a");
    let a = a.as_list::<i32>().value(0);
    let a = a.as_primitive::<Int32Type>();
    assert_eq!(
        (a.len(), a.value(0), a.is_null(1), a.value(2)),
        (3, 1, true, 3)
    );
    assert!(col("a").is_null(1));
    let mp = col("mp");
    let mp = mp.as_map();
    assert_eq!(mp.keys().as_string::<i32>().value(0), "k");
    assert_eq!(mp.values().as_primitive::<Int64Type>().value(0), 7);
    let st = col("st");
    let st = st.as_struct();
    assert_eq!(st.column(0).as_primitive::<Int32Type>().value(0), 1);
    assert_eq!(
        st.column(1)
            .as_list::<i32>()
            .value(0)
            .as_string::<i32>()
            .value(1),
        "q"
    );
    assert!(st.is_null(1));
}

fn date(s: &str) -> Option<i32> {
    crate::time::date(s)
}

#[test]
fn bad_records_are_reported_not_written() {
    let c = Converter::new(
        &cols(&[("id", "int"), ("tags", "array<string>"), ("n", "tinyint")]),
        Deserializer::default(),
    )
    .unwrap();
    let out = convert(
        &c,
        &[
            r#"{"id": 1}"#,
            "not json",
            "[1, 2]",
            r#"{"id": "x"}"#,
            r#"{"id": 2147483648}"#,
            r#"{"id": 1.5}"#,
            r#"{"tags": "one"}"#,
            r#"{"n": 300}"#,
            r#"{"id": 2} {"id": 3}"#,
            r#"{"id": 4, "unknown": {"ignored": true}}"#,
        ],
    );
    let failed: Vec<usize> = out.failed.iter().map(|(i, _)| *i).collect();
    assert_eq!(failed, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(matches!(out.failed[0].1, RecordError::NotJson(_)));
    assert_eq!(out.failed[1].1, RecordError::NotObject);
    assert!(
        out.failed[2].1.to_string().contains("id"),
        "{}",
        out.failed[2].1
    );
    assert_eq!(out.rows, 2);
    let batch = read_back(out.parquet.unwrap());
    let ids = batch.column(0).as_primitive::<Int32Type>();
    assert_eq!((ids.value(0), ids.value(1)), (1, 4));
    // A batch of bad records only writes no file.
    let none = convert(&c, &["nope"]);
    assert!(none.parquet.is_none());
    assert_eq!(none.failed.len(), 1);
}

#[test]
fn openx_options_fold_keys_convert_dots_and_map_columns() {
    let schema = cols(&[("user_id", "int"), ("ts", "string"), ("name", "string")]);
    let rec = r#"{"User.Id": 7, "timestamp": "t0", "NAME": "n"}"#;
    // Defaults: case-insensitive, dots kept.
    let c = Converter::new(&schema, Deserializer::default()).unwrap();
    let row = c.read(rec.as_bytes()).unwrap();
    assert_eq!(row.0, vec![Cell::Null, Cell::Null, Cell::Str("n".into())]);
    let mut mappings = BTreeMap::new();
    // Mapped by column name, whatever its case.
    mappings.insert("TS".to_string(), "timestamp".to_string());
    let c = Converter::new(
        &schema,
        Deserializer::OpenX(OpenXOptions {
            convert_dots_to_underscores: true,
            case_insensitive: true,
            column_to_json_key: mappings.clone(),
        }),
    )
    .unwrap();
    let row = c.read(rec.as_bytes()).unwrap();
    assert_eq!(
        row.0,
        vec![Cell::Int(7), Cell::Str("t0".into()), Cell::Str("n".into())]
    );
    // Case-sensitive: NAME is not name.
    let c = Converter::new(
        &schema,
        Deserializer::OpenX(OpenXOptions {
            convert_dots_to_underscores: true,
            case_insensitive: false,
            column_to_json_key: mappings,
        }),
    )
    .unwrap();
    let row = c.read(rec.as_bytes()).unwrap();
    assert_eq!(row.0[2], Cell::Null);
}

#[test]
fn timestamps_per_serde() {
    let schema = cols(&[("ts", "timestamp")]);
    let at = |c: &Converter, v: &str| -> Option<i64> {
        match c.read(format!(r#"{{"ts": {v}}}"#).as_bytes()) {
            Ok(r) => match r.0[0] {
                Cell::Timestamp(t) => Some(t),
                _ => None,
            },
            Err(_) => None,
        }
    };
    let t0 = 1_518_033_528_000_000; // 2018-02-07T19:58:48Z
    let openx = Converter::new(&schema, Deserializer::default()).unwrap();
    assert_eq!(at(&openx, "1518033528"), Some(t0));
    assert_eq!(at(&openx, "1518033528123"), Some(t0 + 123_000));
    assert_eq!(at(&openx, "1518033528.5"), Some(t0 + 500_000));
    assert_eq!(at(&openx, r#""2018-02-07T19:58:48Z""#), Some(t0));
    assert_eq!(at(&openx, r#""2018-02-07T20:58:48+01:00""#), Some(t0));
    assert_eq!(at(&openx, r#""2018-2-7 19:58:48.25""#), Some(t0 + 250_000));
    assert_eq!(at(&openx, r#""yesterday""#), None);

    // Hive: the formats first, then java.sql.Timestamp's form; no epochs
    // without `millis`.
    let hive = Converter::new(&schema, Deserializer::hive(&[]).unwrap()).unwrap();
    assert_eq!(at(&hive, r#""2018-02-07 19:58:48""#), Some(t0));
    assert_eq!(at(&hive, "1518033528"), None);
    let hive = Converter::new(
        &schema,
        Deserializer::hive(&[
            "millis".to_string(),
            "dd/MM/yyyy HH:mm:ss".to_string(),
            "yyyy-MM-dd'T'HH:mm:ss.SSSZ".to_string(),
            "yyyyMMdd".to_string(),
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(at(&hive, "1518033528123"), Some(t0 + 123_000));
    assert_eq!(at(&hive, r#""07/02/2018 19:58:48""#), Some(t0));
    assert_eq!(
        at(&hive, r#""2018-02-07T20:58:48.500+0100""#),
        Some(t0 + 500_000)
    );
    // Formats are tried in order: `millis` takes a numeric string first.
    assert_eq!(at(&hive, r#""20180207""#), Some(20_180_207_000));
    let compact = Converter::new(
        &schema,
        Deserializer::hive(&["yyyyMMdd".to_string()]).unwrap(),
    )
    .unwrap();
    assert_eq!(at(&compact, r#""20180207""#), Some(t0 - 71_928_000_000));
    assert_eq!(at(&hive, r#""2018-02-07 19:58:48""#), Some(t0));
    assert!(Deserializer::hive(&["yyyy-MM-dd GG".to_string()]).is_err());
    assert!(Deserializer::hive(&["'unclosed".to_string()]).is_err());
}

#[test]
fn decimals_round_and_check_precision() {
    use crate::read::decimal;
    assert_eq!(decimal("12.345", 10, 2), Ok(1235));
    assert_eq!(decimal("-12.344", 10, 2), Ok(-1234));
    assert_eq!(decimal("1e3", 10, 2), Ok(100_000));
    assert_eq!(decimal("0.001", 10, 2), Ok(0));
    assert_eq!(decimal("99999999.99", 10, 2), Ok(9_999_999_999));
    assert!(decimal("999999999.99", 10, 2).is_err());
    assert!(decimal("99999999.995", 10, 2).is_err());
    assert!(decimal("1.2.3", 10, 2).is_err());
    assert!(decimal("", 10, 2).is_err());
}

#[test]
fn schemas_are_checked() {
    assert_eq!(
        Converter::new(&[], Deserializer::default()).unwrap_err(),
        SchemaError::NoColumns
    );
    assert!(matches!(
        Converter::new(&cols(&[("a", "integer")]), Deserializer::default()).unwrap_err(),
        SchemaError::BadType { .. }
    ));
    assert!(matches!(
        Converter::new(
            &cols(&[("a", "int"), ("A", "int")]),
            Deserializer::default()
        )
        .unwrap_err(),
        SchemaError::DuplicateColumn(_)
    ));
}

#[test]
fn parquet_options_are_applied() {
    let c = Converter::new(&cols(&[("s", "string")]), Deserializer::default()).unwrap();
    for (compression, expect) in [
        (ParquetCompression::Snappy, Compression::SNAPPY),
        (ParquetCompression::Uncompressed, Compression::UNCOMPRESSED),
    ] {
        let o = ParquetOptions {
            compression,
            writer_version: WriterVersion::V2,
            enable_dictionary: false,
            ..ParquetOptions::default()
        };
        let out = c.convert(&[br#"{"s": "x"}"#], &o).unwrap();
        let r = SerializedFileReader::new(Bytes::from(out.parquet.unwrap())).unwrap();
        let meta = r.metadata();
        assert_eq!(meta.file_metadata().version(), 2);
        let chunk = meta.row_group(0).column(0);
        assert_eq!(chunk.compression(), expect);
        assert!(chunk.dictionary_page_offset().is_none());
    }
    let out = c
        .convert(
            &[br#"{"s": "x"}"#],
            &ParquetOptions {
                compression: ParquetCompression::Gzip,
                ..ParquetOptions::default()
            },
        )
        .unwrap();
    let r = SerializedFileReader::new(Bytes::from(out.parquet.unwrap())).unwrap();
    let meta = r.metadata();
    assert_eq!(meta.file_metadata().version(), 1);
    assert!(matches!(
        meta.row_group(0).column(0).compression(),
        Compression::GZIP(_)
    ));
    assert!(
        meta.row_group(0)
            .column(0)
            .dictionary_page_offset()
            .is_some()
    );
}

mod fuzz {
    //! Records are request input: whatever they hold, conversion answers
    //! with rows or record errors, never a panic.
    use proptest::prelude::*;

    use super::*;

    const TYPES: &[(&str, &str)] = &[
        ("b", "boolean"),
        ("t", "tinyint"),
        ("i", "int"),
        ("l", "bigint"),
        ("f", "float"),
        ("m", "decimal(38,10)"),
        ("n", "decimal(3,3)"),
        ("s", "varchar(2)"),
        ("bin", "binary"),
        ("dt", "date"),
        ("ts", "timestamp"),
        (
            "a",
            "array<map<int,struct<x:decimal(5,2),y:array<timestamp>>>>",
        ),
        ("mp", "map<date,boolean>"),
    ];

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "[0-9eE+.:T/ -]{0,24}".prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-zA-Z0-9]{0,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn record() -> impl Strategy<Value = serde_json::Value> {
        let names: Vec<&'static str> = TYPES.iter().map(|t| t.0).collect();
        prop::collection::vec((prop::sample::select(names), json_value()), 0..8).prop_map(|kv| {
            serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        })
    }

    proptest! {
        #[test]
        fn fuzz_records_never_panic(recs in prop::collection::vec(record(), 1..6), raw in prop::collection::vec(any::<u8>(), 0..64)) {
            for de in [Deserializer::default(), Deserializer::hive(&["millis".into(), "yyyy-MM-dd'T'HH:mm:ss.SSSZ".into()]).unwrap()] {
                let c = Converter::new(&cols(TYPES), de).unwrap();
                let texts: Vec<Vec<u8>> = recs.iter().map(|r| serde_json::to_vec(r).unwrap()).collect();
                let mut batch: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
                batch.push(&raw);
                let out = c.convert(&batch, &ParquetOptions::default()).unwrap();
                prop_assert_eq!(out.rows + out.failed.len(), batch.len());
                if let Some(p) = out.parquet {
                    prop_assert_eq!(read_back(p).num_rows(), out.rows);
                }
            }
        }

        #[test]
        fn fuzz_timestamp_formats_never_panic(f in ".{0,16}", v in ".{0,24}") {
            if let Ok(de) = Deserializer::hive(&[f]) {
                let c = Converter::new(&cols(&[("ts", "timestamp"), ("d", "date")]), de).unwrap();
                let rec = serde_json::json!({"ts": v, "d": v}).to_string();
                let _ = c.read(rec.as_bytes());
            }
        }
    }
}
