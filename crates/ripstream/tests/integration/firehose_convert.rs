//! Firehose's record format conversion through the real binary: a Glue
//! table made with the Glue SDK, a delivery stream converting JSON to
//! Parquet, the delivered object read back with the parquet crate row for
//! row, a bad record in the `format-conversion-failed` error output, a
//! stream created before its table, and a table update picked up by the
//! next flush.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int32Type, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, DataFormatConversionConfiguration, Deserializer,
    ExtendedS3DestinationConfiguration, InputFormatConfiguration, OpenXJsonSerDe, OrcSerDe,
    OutputFormatConfiguration, ParquetCompression, ParquetSerDe, Record, SchemaConfiguration,
    Serializer,
};
use aws_sdk_glue::types::{Column, DatabaseInput, StorageDescriptor, TableInput};
use base64::Engine as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::firehose::firehose;
use crate::glue::glue;
use crate::support::TestServer;

const ROLE: &str = "arn:aws:iam::000000000000:role/firehose";

fn table(columns: &[(&str, &str)]) -> TableInput {
    let mut sd = StorageDescriptor::builder().location("s3://lake/events/");
    for (n, t) in columns {
        sd = sd.columns(Column::builder().name(*n).r#type(*t).build().unwrap());
    }
    TableInput::builder()
        .name("events")
        .storage_descriptor(sd.build())
        .build()
        .unwrap()
}

const COLUMNS: &[(&str, &str)] = &[
    ("id", "int"),
    ("user_name", "string"),
    ("price", "decimal(10,2)"),
    ("score", "double"),
    ("ok", "boolean"),
    ("day", "date"),
    ("ts", "timestamp"),
    ("tags", "array<string>"),
    ("attrs", "map<string,int>"),
    ("place", "struct<city:string,zip:int>"),
];

fn conversion(serializer: Serializer) -> DataFormatConversionConfiguration {
    DataFormatConversionConfiguration::builder()
        .schema_configuration(
            SchemaConfiguration::builder()
                .role_arn(ROLE)
                .database_name("lake")
                .table_name("events")
                .build(),
        )
        .input_format_configuration(
            InputFormatConfiguration::builder()
                .deserializer(
                    Deserializer::builder()
                        .open_x_json_ser_de(
                            OpenXJsonSerDe::builder()
                                .convert_dots_in_json_keys_to_underscores(true)
                                .column_to_json_key_mappings("ts", "timestamp")
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .output_format_configuration(
            OutputFormatConfiguration::builder()
                .serializer(serializer)
                .build(),
        )
        .build()
}

fn parquet_serializer() -> Serializer {
    Serializer::builder()
        .parquet_ser_de(
            ParquetSerDe::builder()
                .compression(ParquetCompression::Gzip)
                .build(),
        )
        .build()
}

fn destination(
    size_mb: i32,
) -> aws_sdk_firehose::types::builders::ExtendedS3DestinationConfigurationBuilder {
    ExtendedS3DestinationConfiguration::builder()
        .role_arn(ROLE)
        .bucket_arn("arn:aws:s3:::lake")
        .prefix("events/")
        .error_output_prefix("errors/!{firehose:error-output-type}/")
        .buffering_hints(
            BufferingHints::builder()
                .size_in_mbs(size_mb)
                .interval_in_seconds(1)
                .build(),
        )
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if !key.contains('#') {
                    out.push((key, std::fs::read(&p).unwrap()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn wait_for(
    dir: &Path,
    what: &str,
    f: impl Fn(&[(String, Vec<u8>)]) -> bool,
) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let objs = files(dir);
        if f(&objs) {
            return objs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            objs.iter().map(|o| &o.0).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_parquet(body: &[u8]) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(body))
        .unwrap()
        .build()
        .unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    batches.remove(0)
}

fn put(data: &str) -> Record {
    Record::builder()
        .data(Blob::new(data.as_bytes().to_vec()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn json_records_are_delivered_as_parquet_against_the_glue_table() {
    let srv = TestServer::start();
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    let bucket = srv.data_dir().join("objects/lake");
    std::fs::create_dir_all(&bucket).unwrap();

    // AWS's destination rules for conversion.
    let refused = [
        destination(5).data_format_conversion_configuration(conversion(parquet_serializer())),
        destination(64)
            .compression_format(CompressionFormat::Gzip)
            .data_format_conversion_configuration(conversion(parquet_serializer())),
        destination(64).data_format_conversion_configuration(conversion(
            Serializer::builder()
                .orc_ser_de(OrcSerDe::builder().build())
                .build(),
        )),
    ];
    for (i, d) in refused.into_iter().enumerate() {
        let e = fh
            .create_delivery_stream()
            .delivery_stream_name(format!("bad{i}"))
            .extended_s3_destination_configuration(d.build().unwrap())
            .send()
            .await
            .unwrap_err();
        let se = e.as_service_error().expect("a service error");
        assert_eq!(
            aws_sdk_firehose::error::ProvideErrorMetadata::code(se),
            Some("InvalidArgumentException"),
            "{i}: {se:?}"
        );
    }

    // The stream is created before its table: AWS reads the table when it
    // delivers, so records wait until it exists.
    g.create_database()
        .database_input(DatabaseInput::builder().name("lake").build().unwrap())
        .send()
        .await
        .unwrap();
    fh.create_delivery_stream()
        .delivery_stream_name("conv")
        .extended_s3_destination_configuration(
            destination(64)
                .data_format_conversion_configuration(conversion(parquet_serializer()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let described = fh
        .describe_delivery_stream()
        .delivery_stream_name("conv")
        .send()
        .await
        .unwrap();
    let d = &described
        .delivery_stream_description()
        .unwrap()
        .destinations()[0];
    let ext = d.extended_s3_destination_description().unwrap();
    let conv = ext.data_format_conversion_configuration().unwrap();
    assert_eq!(conv.enabled(), Some(true));
    assert_eq!(
        conv.schema_configuration().unwrap().version_id(),
        Some("LATEST")
    );

    let good = [
        r#"{"id": 1, "User.Name": "ann", "price": "12.50", "score": 0.5, "ok": true, "day": "2026-12-04",
            "timestamp": "2026-12-04T05:06:07Z", "tags": ["a", "b"], "attrs": {"x": 1}, "place": {"City": "Lyon", "zip": 69000}}"#,
        r#"{"ID": 2, "user_name": "bob", "price": 3, "ok": false, "tags": [], "extra": "ignored"}"#,
        r#"{"id": 3}"#,
    ];
    let bad = r#"{"id": "three"}"#;
    let mut records: Vec<Record> = good.iter().map(|r| put(r)).collect();
    records.insert(1, put(bad));
    let out = fh
        .put_record_batch()
        .delivery_stream_name("conv")
        .set_records(Some(records))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_put_count(), 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        files(&bucket).is_empty(),
        "delivered before the table existed"
    );

    g.create_table()
        .database_name("lake")
        .table_input(table(COLUMNS))
        .send()
        .await
        .unwrap();
    let objs = wait_for(&bucket, "the Parquet object and the error output", |o| {
        o.iter().any(|(k, _)| k.starts_with("events/"))
            && o.iter().any(|(k, _)| k.starts_with("errors/"))
    })
    .await;
    let (key, body) = objs.iter().find(|(k, _)| k.starts_with("events/")).unwrap();
    // AWS's default extension for Parquet conversion (FileExtension unset).
    assert!(key.starts_with("events/2"), "{key}");
    assert!(
        key.ends_with(".parquet") && key.contains("/conv-1-"),
        "{key}"
    );
    let (err_key, _) = objs.iter().find(|(k, _)| k.starts_with("errors/")).unwrap();
    assert!(
        !err_key.ends_with(".parquet"),
        "error output is JSON: {err_key}"
    );
    assert_eq!(&body[..4], b"PAR1");
    let batch = read_parquet(body);
    assert_eq!(batch.num_rows(), 3);
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>());
    let col = |n: &str| batch.column_by_name(n).unwrap().clone();
    let ids = col("id");
    let ids = ids.as_primitive::<Int32Type>();
    assert_eq!((ids.value(0), ids.value(1), ids.value(2)), (1, 2, 3));
    let user = col("user_name");
    let user = user.as_string::<i32>();
    assert_eq!(
        (user.value(0), user.value(1), user.is_null(2)),
        ("ann", "bob", true)
    );
    let price = col("price");
    let price = price.as_primitive::<Decimal128Type>();
    assert_eq!(
        (price.value(0), price.value(1), price.is_null(2)),
        (1250, 300, true)
    );
    assert_eq!(col("score").as_primitive::<Float64Type>().value(0), 0.5);
    assert!(col("score").is_null(1));
    let ok = col("ok");
    assert!(ok.as_boolean().value(0) && !ok.as_boolean().value(1) && ok.is_null(2));
    // 2026-12-04 is day 20_791 of the epoch.
    assert_eq!(col("day").as_primitive::<Date32Type>().value(0), 20_791);
    assert_eq!(
        col("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_796_360_767_000_000
    );
    let tags = col("tags");
    let tags = tags.as_list::<i32>();
    let first = tags.value(0);
    let first = first.as_string::<i32>();
    assert_eq!((first.value(0), first.value(1)), ("a", "b"));
    assert_eq!(tags.value(1).len(), 0);
    assert!(tags.is_null(2));
    let attrs = col("attrs");
    let attrs = attrs.as_map();
    assert_eq!(attrs.keys().as_string::<i32>().value(0), "x");
    assert_eq!(attrs.values().as_primitive::<Int32Type>().value(0), 1);
    let place = col("place");
    let place = place.as_struct();
    assert_eq!(place.column(0).as_string::<i32>().value(0), "Lyon");
    assert_eq!(place.column(1).as_primitive::<Int32Type>().value(0), 69000);
    assert!(place.is_null(1));

    // The bad record, in AWS's conversion error document.
    let (ekey, ebody) = objs.iter().find(|(k, _)| k.starts_with("errors/")).unwrap();
    assert!(
        ekey.starts_with("errors/format-conversion-failed/conv-1-"),
        "{ekey}"
    );
    let lines: Vec<serde_json::Value> = std::str::from_utf8(ebody)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l["ErrorCode"], "DataFormatConversion.MalformedData");
    assert!(l["ErrorMessage"].as_str().unwrap().contains("id"), "{l}");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(l["rawData"].as_str().unwrap())
            .unwrap(),
        bad.as_bytes()
    );
    assert_eq!(l["dataCatalogTable"]["databaseName"], "lake");
    assert_eq!(l["dataCatalogTable"]["tableName"], "events");
    assert_eq!(l["dataCatalogTable"]["versionId"], "0");

    // A table update is read by the next flush (VersionId LATEST).
    let mut wider = COLUMNS.to_vec();
    wider.push(("extra", "bigint"));
    g.update_table()
        .database_name("lake")
        .table_input(table(&wider))
        .send()
        .await
        .unwrap();
    fh.put_record()
        .delivery_stream_name("conv")
        .record(put(r#"{"id": 4, "extra": 9007199254740993}"#))
        .send()
        .await
        .unwrap();
    let objs = wait_for(&bucket, "a second Parquet object", |o| {
        o.iter().filter(|(k, _)| k.starts_with("events/")).count() == 2
    })
    .await;
    let second = objs
        .iter()
        .filter(|(k, _)| k.starts_with("events/"))
        .map(|(_, b)| read_parquet(b))
        .find(|b| b.schema_ref().field_with_name("extra").is_ok())
        .expect("the object written after the update has the new column");
    assert_eq!(second.num_rows(), 1);
    assert_eq!(
        second
            .column_by_name("extra")
            .unwrap()
            .as_primitive::<arrow_array::types::Int64Type>()
            .value(0),
        9_007_199_254_740_993
    );
}

/// A Lambda transform turning `id,name` lines into JSON ("bad" into text
/// that is not JSON), as AWS's CSV-to-JSON blueprint does before conversion.
const CSV_TO_JSON_PY: &str = r#"
import base64, json, sys
req = json.load(sys.stdin)
out = []
for r in req["records"]:
    line = base64.b64decode(r["data"]).decode().strip()
    if line == "bad":
        data = "{not json"
    else:
        i, n = line.split(",")
        data = json.dumps({"id": int(i), "name": n})
    out.append({"recordId": r["recordId"], "result": "Ok",
                "data": base64.b64encode(data.encode()).decode()})
json.dump({"records": out}, sys.stdout)
"#;

#[tokio::test]
async fn a_lambda_transform_output_is_converted() {
    use aws_sdk_firehose::types::{
        HiveJsonSerDe, ProcessingConfiguration, Processor, ProcessorParameter,
        ProcessorParameterName as N, ProcessorType as T,
    };
    let fdir = tempfile::tempdir().unwrap();
    let script = fdir.path().join("csv.py");
    std::fs::write(&script, CSV_TO_JSON_PY).unwrap();
    let conf = fdir.path().join("ripstream.toml");
    std::fs::write(
        &conf,
        format!(
            "[functions.csv]\ncommand = [\"python3\", {:?}]\n",
            script.to_str().unwrap()
        ),
    )
    .unwrap();
    let srv = TestServer::start_with(&["--config", conf.to_str().unwrap()]);
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    let bucket = srv.data_dir().join("objects/lake");
    std::fs::create_dir_all(&bucket).unwrap();
    g.create_database()
        .database_input(DatabaseInput::builder().name("lake").build().unwrap())
        .send()
        .await
        .unwrap();
    g.create_table()
        .database_name("lake")
        .table_input(table(&[("id", "int"), ("name", "string")]))
        .send()
        .await
        .unwrap();
    let mut conv = conversion(parquet_serializer());
    conv.input_format_configuration = Some(
        InputFormatConfiguration::builder()
            .deserializer(
                Deserializer::builder()
                    .hive_json_ser_de(HiveJsonSerDe::builder().build())
                    .build(),
            )
            .build(),
    );
    let lambda = Processor::builder()
        .r#type(T::Lambda)
        .parameters(
            ProcessorParameter::builder()
                .parameter_name(N::LambdaArn)
                .parameter_value("arn:aws:lambda:us-east-1:000000000000:function:csv")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    fh.create_delivery_stream()
        .delivery_stream_name("csv")
        .extended_s3_destination_configuration(
            destination(64)
                .processing_configuration(
                    ProcessingConfiguration::builder()
                        .enabled(true)
                        .processors(lambda)
                        .build(),
                )
                .data_format_conversion_configuration(conv)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    fh.put_record_batch()
        .delivery_stream_name("csv")
        .set_records(Some(
            ["1,ann\n", "2,bob\n", "bad\n"]
                .iter()
                .map(|r| put(r))
                .collect(),
        ))
        .send()
        .await
        .unwrap();
    let objs = wait_for(&bucket, "the converted object and the error output", |o| {
        o.iter().any(|(k, _)| k.starts_with("events/"))
            && o.iter()
                .any(|(k, _)| k.starts_with("errors/format-conversion-failed/"))
    })
    .await;
    let (_, body) = objs.iter().find(|(k, _)| k.starts_with("events/")).unwrap();
    let batch = read_parquet(body);
    let ids = batch.column(0).as_primitive::<Int32Type>();
    let names = batch.column(1).as_string::<i32>();
    assert_eq!(batch.num_rows(), 2);
    assert_eq!((ids.value(0), names.value(0)), (1, "ann"));
    assert_eq!((ids.value(1), names.value(1)), (2, "bob"));
    let (_, err) = objs.iter().find(|(k, _)| k.starts_with("errors/")).unwrap();
    let line: serde_json::Value =
        serde_json::from_slice(err.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(line["rawData"].as_str().unwrap())
            .unwrap(),
        b"{not json"
    );
}

/// A stream-sourced delivery stream's conversion failures name the source
/// record, as AWS's error document does: its sequence number and
/// subsequence number.
#[tokio::test]
async fn a_stream_sourced_conversion_failure_names_its_sequence_number() {
    use aws_sdk_firehose::types::{DeliveryStreamType, KinesisStreamSourceConfiguration};
    let srv = TestServer::start();
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    let k = srv.client();
    let bucket = srv.data_dir().join("objects/lake");
    std::fs::create_dir_all(&bucket).unwrap();
    g.create_database()
        .database_input(DatabaseInput::builder().name("lake").build().unwrap())
        .send()
        .await
        .unwrap();
    g.create_table()
        .database_name("lake")
        .table_input(table(&[("id", "int")]))
        .send()
        .await
        .unwrap();
    crate::support::create_stream(&k, "src", 1).await;
    crate::firehose_source::wait_until_active(&k, "src").await;
    fh.create_delivery_stream()
        .delivery_stream_name("conv")
        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
        .kinesis_stream_source_configuration(
            KinesisStreamSourceConfiguration::builder()
                .kinesis_stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/src")
                .role_arn(ROLE)
                .build()
                .unwrap(),
        )
        .extended_s3_destination_configuration(
            destination(64)
                .data_format_conversion_configuration(conversion(parquet_serializer()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for data in [r#"{"id": 1}"#, r#"{"id": "one"}"#] {
        let out = k
            .put_record()
            .stream_name("src")
            .partition_key("p")
            .data(aws_sdk_kinesis::primitives::Blob::new(data))
            .send()
            .await
            .unwrap();
        seqs.push(out.sequence_number().to_string());
    }
    let objs = wait_for(&bucket, "the Parquet object and the error output", |o| {
        o.iter().any(|(k, _)| k.starts_with("events/"))
            && o.iter().any(|(k, _)| k.starts_with("errors/"))
    })
    .await;
    let (_, ebody) = objs.iter().find(|(k, _)| k.starts_with("errors/")).unwrap();
    let l: serde_json::Value = serde_json::from_slice(ebody.trim_ascii_end()).unwrap();
    assert_eq!(l["ErrorCode"], "DataFormatConversion.MalformedData");
    assert_eq!(l["sequenceNumber"], seqs[1].as_str(), "{l}");
    assert_eq!(l["subSequenceNumber"], 0, "{l}");
}
