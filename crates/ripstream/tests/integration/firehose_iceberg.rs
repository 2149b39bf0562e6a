//! Firehose's Iceberg destination through the real binary: a Glue table
//! marked `table_type=ICEBERG` made with the Glue SDK (columns and a
//! location, no metadata: the server writes the table's first metadata),
//! a delivery stream appending to it, the table read back with the
//! `iceberg` crate's scan from the metadata Glue points at, a record that
//! does not fit in the `iceberg-failed` error output, AWS's refusals, and
//! a restart that appends nothing twice; who may create such a stream, and
//! a table moved where its stream may not write.

use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use aws_sdk_firehose::error::ProvideErrorMetadata;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{
    BufferingHints, CatalogConfiguration, DestinationTableConfiguration,
    IcebergDestinationConfiguration, Record, RetryOptions, S3DestinationConfiguration,
};
use aws_sdk_glue::types::{Column, DatabaseInput, StorageDescriptor, TableInput};
use futures::TryStreamExt;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableIdent};

use crate::firehose::{firehose, firehose_as};
use crate::glue::{glue, glue_as};
use crate::s3::s3;
use crate::support::TestServer;

const ROLE: &str = "arn:aws:iam::000000000000:role/firehose";
const CATALOG: &str = "arn:aws:glue:us-east-1:000000000000:catalog";

fn iceberg_destination(table: DestinationTableConfiguration) -> IcebergDestinationConfiguration {
    destination_into(table, "lake", None)
}

/// An Iceberg destination with its error output in `bucket`, retried for
/// `retry_s` (AWS's default when `None`).
fn destination_into(
    table: DestinationTableConfiguration,
    bucket: &str,
    retry_s: Option<i32>,
) -> IcebergDestinationConfiguration {
    IcebergDestinationConfiguration::builder()
        .set_retry_options(retry_s.map(|s| RetryOptions::builder().duration_in_seconds(s).build()))
        .role_arn(ROLE)
        .catalog_configuration(CatalogConfiguration::builder().catalog_arn(CATALOG).build())
        .destination_table_configuration_list(table)
        .buffering_hints(
            BufferingHints::builder()
                .size_in_mbs(1)
                .interval_in_seconds(1)
                .build(),
        )
        .s3_configuration(
            S3DestinationConfiguration::builder()
                .role_arn(ROLE)
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .error_output_prefix("errors/!{firehose:error-output-type}/")
                .prefix("backup/")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn events_table() -> DestinationTableConfiguration {
    DestinationTableConfiguration::builder()
        .destination_database_name("lake")
        .destination_table_name("events")
        .build()
        .unwrap()
}

fn put(data: &str) -> Record {
    Record::builder()
        .data(Blob::new(data.as_bytes().to_vec()))
        .build()
        .unwrap()
}

async fn metadata_location(g: &aws_sdk_glue::Client) -> Option<String> {
    metadata_location_of(g, "events").await
}

async fn metadata_location_of(g: &aws_sdk_glue::Client, table: &str) -> Option<String> {
    let t = g
        .get_table()
        .database_name("lake")
        .name(table)
        .send()
        .await
        .unwrap();
    t.table()
        .unwrap()
        .parameters()
        .and_then(|p| p.get("metadata_location").cloned())
}

/// The table as Glue points at it now, read from the store's files.
async fn load(srv: &TestServer, location: &str) -> Table {
    let objects = ripstream_objects::Objects::open(srv.data_dir()).unwrap();
    let io = ripstream_iceberg::storage::ObjectsStorage::file_io(objects);
    let metadata = TableMetadata::read_from(&io, location).await.unwrap();
    Table::builder()
        .file_io(io)
        .metadata_location(location)
        .metadata(metadata)
        .identifier(TableIdent::new(
            NamespaceIdent::new("lake".into()),
            "events".into(),
        ))
        .runtime(iceberg::Runtime::current())
        .readonly(true)
        .build()
        .unwrap()
}

async fn rows(t: &Table) -> Vec<(i64, Option<String>, usize)> {
    let batches: Vec<RecordBatch> = t
        .scan()
        .select_all()
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let id = b
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let name = b.column_by_name("name").unwrap().as_string::<i32>().clone();
        let tags = b.column_by_name("tags").unwrap().as_list::<i32>().clone();
        for i in 0..b.num_rows() {
            out.push((
                id.value(i),
                (!name.is_null(i)).then(|| name.value(i).to_string()),
                if tags.is_null(i) {
                    0
                } else {
                    tags.value(i).len()
                },
            ));
        }
    }
    out.sort();
    out
}

/// Waits until Glue points at metadata holding `snapshots` snapshots.
async fn wait_for_snapshots(srv: &TestServer, g: &aws_sdk_glue::Client, snapshots: usize) -> Table {
    wait_for_snapshots_of(srv, g, "events", snapshots).await
}

async fn wait_for_snapshots_of(
    srv: &TestServer,
    g: &aws_sdk_glue::Client,
    table: &str,
    snapshots: usize,
) -> Table {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(loc) = metadata_location_of(g, table).await {
            let t = load(srv, &loc).await;
            if t.metadata().snapshots().len() >= snapshots {
                return t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {snapshots} snapshots; log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn error_objects(srv: &TestServer) -> Vec<std::path::PathBuf> {
    let dir = srv.data_dir().join("objects/lake/errors/iceberg-failed");
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn records_are_appended_to_an_iceberg_table_in_glue() {
    let mut srv = TestServer::start();
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    std::fs::create_dir_all(srv.data_dir().join("objects/lake")).unwrap();

    // No table yet: refused at create, as AWS checks the table.
    let e = fh
        .create_delivery_stream()
        .delivery_stream_name("ice")
        .iceberg_destination_configuration(iceberg_destination(events_table()))
        .send()
        .await
        .unwrap_err();
    let se = e.as_service_error().expect("a service error");
    assert_eq!(
        aws_sdk_firehose::error::ProvideErrorMetadata::code(se),
        Some("InvalidArgumentException"),
        "{se:?}"
    );

    g.create_database()
        .database_input(DatabaseInput::builder().name("lake").build().unwrap())
        .send()
        .await
        .unwrap();
    let mut sd = StorageDescriptor::builder().location("s3://lake/events/");
    for (n, t) in [
        ("id", "bigint"),
        ("name", "string"),
        ("tags", "array<string>"),
    ] {
        sd = sd.columns(Column::builder().name(n).r#type(t).build().unwrap());
    }
    g.create_table()
        .database_name("lake")
        .table_input(
            TableInput::builder()
                .name("events")
                .table_type("EXTERNAL_TABLE")
                .parameters("table_type", "ICEBERG")
                .storage_descriptor(sd.build())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // UniqueKeys that are no column of the table: refused at create.
    let e = fh
        .create_delivery_stream()
        .delivery_stream_name("upserts")
        .iceberg_destination_configuration(iceberg_destination(
            DestinationTableConfiguration::builder()
                .destination_database_name("lake")
                .destination_table_name("events")
                .unique_keys("nope")
                .build()
                .unwrap(),
        ))
        .send()
        .await
        .unwrap_err();
    let se = e.as_service_error().expect("a service error");
    assert_eq!(
        aws_sdk_firehose::error::ProvideErrorMetadata::code(se),
        Some("InvalidArgumentException")
    );
    assert!(format!("{se:?}").contains("unique key nope"), "{se:?}");

    fh.create_delivery_stream()
        .delivery_stream_name("ice")
        .iceberg_destination_configuration(iceberg_destination(events_table()))
        .send()
        .await
        .unwrap();
    // Creating the stream wrote the table's first metadata.
    let first = metadata_location(&g).await.expect("metadata_location");
    assert!(
        first.starts_with("s3://lake/events/metadata/00000-"),
        "{first}"
    );
    let described = fh
        .describe_delivery_stream()
        .delivery_stream_name("ice")
        .send()
        .await
        .unwrap();
    let d = &described
        .delivery_stream_description()
        .unwrap()
        .destinations()[0];
    let ice = d
        .iceberg_destination_description()
        .expect("an Iceberg description");
    assert_eq!(
        ice.catalog_configuration().unwrap().catalog_arn(),
        Some(CATALOG)
    );
    let t = &ice.destination_table_configuration_list()[0];
    assert_eq!(t.destination_table_name(), "events");
    assert_eq!(
        ice.s3_destination_description().unwrap().bucket_arn(),
        "arn:aws:s3:::lake"
    );
    assert!(d.extended_s3_destination_description().is_none());

    let out = fh
        .put_record_batch()
        .delivery_stream_name("ice")
        .set_records(Some(vec![
            put(r#"{"id": 1, "Name": "ann", "tags": ["a", "b"]}"#),
            put(r#"{"id": "two"}"#),
            put(r#"{"ID": 3, "extra": true}"#),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_put_count(), 0);
    let table = wait_for_snapshots(&srv, &g, 1).await;
    assert_eq!(
        rows(&table).await,
        vec![(1, Some("ann".into()), 2), (3, None, 0)]
    );
    let snap = table.metadata().current_snapshot().unwrap();
    let props = &snap.summary().additional_properties;
    assert_eq!(
        props.get("ripstream.firehose.range").map(String::as_str),
        Some("0-3")
    );
    // Data files are objects under the table's location.
    let data = srv.data_dir().join("objects/lake/events/data");
    assert!(std::fs::read_dir(&data).unwrap().count() >= 1);

    // The record that does not fit: AWS's error record, raw data included.
    let deadline = Instant::now() + Duration::from_secs(20);
    let errs = loop {
        let e = error_objects(&srv);
        if !e.is_empty() {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no error output; log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&errs[0]).unwrap()).unwrap();
    assert_eq!(line["errorCode"], "Iceberg.DataTypeMismatch");
    assert_eq!(line["destinationTableName"], "events");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line["rawData"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, br#"{"id": "two"}"#);

    // After a restart the stream goes on from its checkpoint: nothing is
    // appended twice.
    srv.kill9();
    srv.restart();
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    fh.put_record()
        .delivery_stream_name("ice")
        .record(put(r#"{"id": 4, "name": "dan"}"#))
        .send()
        .await
        .unwrap();
    let table = wait_for_snapshots(&srv, &g, 2).await;
    assert_eq!(
        rows(&table).await,
        vec![
            (1, Some("ann".into()), 2),
            (3, None, 0),
            (4, Some("dan".into()), 0)
        ]
    );
}

#[tokio::test]
async fn a_crash_between_commit_and_checkpoint_appends_nothing_twice() {
    let mut srv =
        TestServer::start_with_env(&[], &[("RIPSTREAM_TEST_ABORT_AFTER_ICEBERG_COMMIT", "1")]);
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    std::fs::create_dir_all(srv.data_dir().join("objects/lake")).unwrap();
    g.create_database()
        .database_input(DatabaseInput::builder().name("lake").build().unwrap())
        .send()
        .await
        .unwrap();
    let mut sd = StorageDescriptor::builder().location("s3://lake/events/");
    for (n, t) in [
        ("id", "bigint"),
        ("name", "string"),
        ("tags", "array<string>"),
    ] {
        sd = sd.columns(Column::builder().name(n).r#type(t).build().unwrap());
    }
    g.create_table()
        .database_name("lake")
        .table_input(
            TableInput::builder()
                .name("events")
                .parameters("table_type", "ICEBERG")
                .storage_descriptor(sd.build())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    fh.create_delivery_stream()
        .delivery_stream_name("crashy")
        .iceberg_destination_configuration(iceberg_destination(events_table()))
        .send()
        .await
        .unwrap();
    fh.put_record_batch()
        .delivery_stream_name("crashy")
        .set_records(Some(
            (1..=3).map(|i| put(&format!(r#"{{"id": {i}}}"#))).collect(),
        ))
        .send()
        .await
        .unwrap();
    // The debug-only hook aborts the server right after the commit.
    assert!(
        srv.wait_exit(Duration::from_secs(60)),
        "the server did not abort after the commit; log:\n{}",
        srv.log()
    );
    assert!(
        srv.log().contains("aborting after the Iceberg commit"),
        "{}",
        srv.log()
    );

    srv.set_env(&[]);
    srv.restart();
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    fh.put_record()
        .delivery_stream_name("crashy")
        .record(put(r#"{"id": 4}"#))
        .send()
        .await
        .unwrap();
    let table = wait_for_snapshots(&srv, &g, 2).await;
    let ids: Vec<i64> = rows(&table).await.into_iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![1, 2, 3, 4], "nothing appended twice");
    let props = &table
        .metadata()
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties;
    assert_eq!(
        props.get("ripstream.firehose.range").map(String::as_str),
        Some("3-4")
    );
    assert!(srv.log().contains("resuming after it"), "{}", srv.log());
}

/// The Glue database `lake` and its table `events` at `s3://lake/events/`
/// (columns, no metadata yet).
async fn create_events_table(g: &aws_sdk_glue::Client) {
    g.create_database()
        .database_input(DatabaseInput::builder().name("lake").build().unwrap())
        .send()
        .await
        .unwrap();
    create_table(g, "events").await;
}

/// Table `name` of database `lake` at `s3://lake/<name>/`, with the
/// columns of `events`.
async fn create_table(g: &aws_sdk_glue::Client, name: &str) {
    let mut sd = StorageDescriptor::builder().location(format!("s3://lake/{name}/"));
    for (n, t) in [
        ("id", "bigint"),
        ("name", "string"),
        ("tags", "array<string>"),
    ] {
        sd = sd.columns(Column::builder().name(n).r#type(t).build().unwrap());
    }
    g.create_table()
        .database_name("lake")
        .table_input(
            TableInput::builder()
                .name(name)
                .table_type("EXTERNAL_TABLE")
                .parameters("table_type", "ICEBERG")
                .storage_descriptor(sd.build())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

const CREDENTIALS: &str = r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"

[[principal]]
name = "nobucket"
access_key_id = "AKIDNOBUCKET00000001"
secret_access_key = "nobucket-secret"
policy = '''{"Statement": [
  {"Effect": "Allow", "Action": ["firehose:*", "glue:*"], "Resource": "*"},
  {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::errors/*"}
]}'''

[[principal]]
name = "notable"
access_key_id = "AKIDNOTABLE000000001"
secret_access_key = "notable-secret"
policy = '''{"Statement": [
  {"Effect": "Allow", "Action": "firehose:*", "Resource": "*"},
  {"Effect": "Allow", "Action": ["glue:GetTable", "glue:GetDatabase"], "Resource": "*"},
  {"Effect": "Allow", "Action": "s3:PutObject", "Resource": ["arn:aws:s3:::errors/*", "arn:aws:s3:::lake/events/*"]}
]}'''

[[principal]]
name = "owner"
access_key_id = "AKIDOWNER00000000001"
secret_access_key = "owner-secret"
policy = '''{"Statement": [
  {"Effect": "Allow", "Action": "firehose:*", "Resource": "*"},
  {"Effect": "Allow", "Action": ["glue:GetTable", "glue:GetDatabase", "glue:UpdateTable"], "Resource": "*"},
  {"Effect": "Allow", "Action": "s3:PutObject", "Resource": ["arn:aws:s3:::errors/*", "arn:aws:s3:::lake/events/*"]}
]}'''
"#;

/// Firehose writes the table for whoever configured the stream: the
/// caller must be allowed to update the Glue table and to write where the
/// table's files go (which the table says, not the request), or any
/// caller could have the server append to any table and write into any
/// bucket.
#[tokio::test]
async fn creating_a_stream_into_a_table_needs_its_glue_update_and_its_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    for b in ["lake", "errors"] {
        std::fs::create_dir_all(srv.data_dir().join("objects").join(b)).unwrap();
    }
    let admin = glue_as(&srv.url(), "AKIDADMIN00000000001", "admin-secret");
    create_events_table(&admin).await;
    let dest = || destination_into(events_table(), "errors", None);
    for (key, secret, needle) in [
        ("AKIDNOBUCKET00000001", "nobucket-secret", "s3:PutObject"),
        ("AKIDNOTABLE000000001", "notable-secret", "glue:UpdateTable"),
    ] {
        let e = firehose_as(&srv.url(), key, secret)
            .create_delivery_stream()
            .delivery_stream_name("ice")
            .iceberg_destination_configuration(dest())
            .send()
            .await
            .unwrap_err();
        let se = e.as_service_error().expect("a service error");
        assert_eq!(se.code(), Some("AccessDeniedException"), "{key}: {se:?}");
        assert!(
            se.message().is_some_and(|m| m.contains(needle)),
            "{key}: {se:?}"
        );
        // Refused before the table was touched: it has no metadata yet.
        assert_eq!(metadata_location(&admin).await, None, "{key}");
    }
    let owner = firehose_as(&srv.url(), "AKIDOWNER00000000001", "owner-secret");
    owner
        .create_delivery_stream()
        .delivery_stream_name("ice")
        .iceberg_destination_configuration(dest())
        .send()
        .await
        .unwrap();
    assert!(metadata_location(&admin).await.is_some());
    owner
        .put_record()
        .delivery_stream_name("ice")
        .record(put(r#"{"id": 1}"#))
        .send()
        .await
        .unwrap();
    let table = wait_for_snapshots(&srv, &admin, 1).await;
    assert_eq!(rows(&table).await, vec![(1, None, 0)]);

    // An update adding a table needs its directories too: the owner may
    // write lake/events/ only, the administrator anywhere.
    create_table(&admin, "audit").await;
    let update = |fh: aws_sdk_firehose::Client, version: &str| {
        let more = aws_sdk_firehose::types::IcebergDestinationUpdate::builder()
            .destination_table_configuration_list(events_table())
            .destination_table_configuration_list(
                DestinationTableConfiguration::builder()
                    .destination_database_name("lake")
                    .destination_table_name("audit")
                    .build()
                    .unwrap(),
            )
            .build();
        let version = version.to_string();
        async move {
            fh.update_destination()
                .delivery_stream_name("ice")
                .current_delivery_stream_version_id(version)
                .destination_id("destinationId-000000000001")
                .iceberg_destination_update(more)
                .send()
                .await
        }
    };
    let e = update(owner.clone(), "1").await.unwrap_err();
    let se = e.as_service_error().expect("a service error");
    assert_eq!(se.code(), Some("AccessDeniedException"), "{se:?}");
    assert!(
        se.message().is_some_and(|m| m.contains("lake/audit")),
        "{se:?}"
    );
    let fh_admin = firehose_as(&srv.url(), "AKIDADMIN00000000001", "admin-secret");
    update(fh_admin.clone(), "1").await.unwrap();
    let d = fh_admin
        .describe_delivery_stream()
        .delivery_stream_name("ice")
        .send()
        .await
        .unwrap();
    let d = d.delivery_stream_description().unwrap();
    assert_eq!(d.version_id(), "2");
    assert_eq!(
        d.destinations()[0]
            .iceberg_destination_description()
            .unwrap()
            .destination_table_configuration_list()
            .len(),
        2
    );
}

/// Glue's table as `UpdateTable` takes it, `metadata_location` replaced.
async fn point_at(g: &aws_sdk_glue::Client, location: &str) {
    let t = g
        .get_table()
        .database_name("lake")
        .name("events")
        .send()
        .await
        .unwrap();
    let t = t.table().unwrap();
    let mut params = t.parameters().cloned().unwrap_or_default();
    params.insert("metadata_location".into(), location.into());
    g.update_table()
        .database_name("lake")
        .version_id(t.version_id().unwrap())
        .table_input(
            TableInput::builder()
                .name("events")
                .set_table_type(t.table_type().map(String::from))
                .set_parameters(Some(params))
                .set_storage_descriptor(t.storage_descriptor().cloned())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// Whoever can update a Glue table can point it anywhere; the stream
/// writes only where its creator was allowed to, so a table moved into
/// another bucket is refused, its records go to the error output when the
/// retry duration is over, and delivery goes on once the table is back.
#[tokio::test]
async fn a_table_moved_where_its_stream_may_not_write_is_refused() {
    let srv = TestServer::start();
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    for b in ["lake", "other"] {
        std::fs::create_dir_all(srv.data_dir().join("objects").join(b)).unwrap();
    }
    create_events_table(&g).await;
    fh.create_delivery_stream()
        .delivery_stream_name("ice")
        .iceberg_destination_configuration(destination_into(events_table(), "lake", Some(0)))
        .send()
        .await
        .unwrap();
    fh.put_record()
        .delivery_stream_name("ice")
        .record(put(r#"{"id": 1}"#))
        .send()
        .await
        .unwrap();
    wait_for_snapshots(&srv, &g, 1).await;
    let ours = metadata_location(&g).await.unwrap();

    // The same table, its location now another bucket.
    let s3 = s3(&srv.url());
    let key = ours.strip_prefix("s3://lake/").unwrap();
    let body = s3
        .get_object()
        .bucket("lake")
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let mut m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    m["location"] = serde_json::json!("s3://other/stolen");
    let moved = "events/metadata/00009-11111111-2222-4333-8444-555555555555.metadata.json";
    s3.put_object()
        .bucket("lake")
        .key(moved)
        .body(serde_json::to_vec(&m).unwrap().into())
        .send()
        .await
        .unwrap();
    point_at(&g, &format!("s3://lake/{moved}")).await;
    fh.put_record()
        .delivery_stream_name("ice")
        .record(put(r#"{"id": 2}"#))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let errs = loop {
        let e = error_objects(&srv);
        if !e.is_empty() {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no error output; log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&errs[0]).unwrap()).unwrap();
    assert_eq!(line["errorCode"], "Iceberg.LocationNotAuthorized", "{line}");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line["rawData"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, br#"{"id": 2}"#);
    // Nothing was written into the other bucket, nor committed.
    assert_eq!(
        std::fs::read_dir(srv.data_dir().join("objects/other"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        metadata_location(&g).await.as_deref(),
        Some(format!("s3://lake/{moved}").as_str())
    );

    // The table back where it was: delivery goes on with the next records.
    point_at(&g, &ours).await;
    fh.put_record()
        .delivery_stream_name("ice")
        .record(put(r#"{"id": 3}"#))
        .send()
        .await
        .unwrap();
    let table = wait_for_snapshots(&srv, &g, 2).await;
    assert_eq!(rows(&table).await, vec![(1, None, 0), (3, None, 0)]);
}

/// A function that gives each record's operation in `otfMetadata` (from
/// the record's `op`, which it strips) and its data otherwise unchanged.
const OTF_PY: &str = r#"
import base64, json, sys
req = json.load(sys.stdin)
out = []
for r in req["records"]:
    d = json.loads(base64.b64decode(r["data"]))
    op = d.pop("op", None)
    rec = {"recordId": r["recordId"], "result": "Ok",
           "data": base64.b64encode(json.dumps(d).encode()).decode()}
    if op:
        rec["metadata"] = {"otfMetadata": {"destinationDatabaseName": "lake",
                                           "destinationTableName": "events",
                                           "operation": op}}
    out.append(rec)
json.dump({"records": out}, sys.stdout)
"#;

/// Updates and deletes by UniqueKeys with the operation from a Lambda's
/// `otfMetadata`, read back with the `iceberg` crate's scan (which applies
/// the position deletes the server wrote).
#[tokio::test]
async fn a_functions_otf_metadata_updates_and_deletes_rows_by_unique_key() {
    use aws_sdk_firehose::types::{
        ProcessingConfiguration, ProcessorParameterName as N, ProcessorType as T,
    };
    let fdir = tempfile::tempdir().unwrap();
    let script = fdir.path().join("otf.py");
    std::fs::write(&script, OTF_PY).unwrap();
    let conf = fdir.path().join("ripstream.toml");
    std::fs::write(
        &conf,
        format!(
            "[functions.otf]\ncommand = [\"python3\", {:?}]\n",
            script.to_str().unwrap()
        ),
    )
    .unwrap();
    let srv = TestServer::start_with(&["--config", conf.to_str().unwrap()]);
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    std::fs::create_dir_all(srv.data_dir().join("objects/lake")).unwrap();
    create_events_table(&g).await;
    let mut dest = destination_into(
        DestinationTableConfiguration::builder()
            .destination_database_name("lake")
            .destination_table_name("events")
            .unique_keys("id")
            .build()
            .unwrap(),
        "lake",
        None,
    );
    dest.processing_configuration = Some(
        ProcessingConfiguration::builder()
            .enabled(true)
            .processors(crate::firehose::processor(
                T::Lambda,
                &[(
                    N::LambdaArn,
                    "arn:aws:lambda:us-east-1:000000000000:function:otf",
                )],
            ))
            .build(),
    );
    fh.create_delivery_stream()
        .delivery_stream_name("otf")
        .iceberg_destination_configuration(dest)
        .send()
        .await
        .unwrap();
    let batch = |recs: &[&str]| {
        fh.put_record_batch()
            .delivery_stream_name("otf")
            .set_records(Some(recs.iter().map(|r| put(r)).collect()))
            .send()
    };
    let out = batch(&[
        r#"{"id": 1, "name": "a", "tags": ["x"]}"#,
        r#"{"id": 2, "name": "b"}"#,
        r#"{"id": 3, "name": "c"}"#,
    ])
    .await
    .unwrap();
    assert_eq!(out.failed_put_count(), 0);
    wait_for_snapshots(&srv, &g, 1).await;
    batch(&[
        r#"{"op": "update", "id": 2, "name": "b2", "tags": ["y", "z"]}"#,
        r#"{"op": "delete", "id": 3}"#,
        r#"{"op": "delete", "name": "no key"}"#,
    ])
    .await
    .unwrap();
    let t = wait_for_snapshots(&srv, &g, 2).await;
    assert_eq!(
        rows(&t).await,
        vec![(1, Some("a".into()), 1), (2, Some("b2".into()), 2)]
    );
    let snap = t.metadata().current_snapshot().unwrap();
    assert_eq!(
        snap.summary().additional_properties["added-position-deletes"],
        "2"
    );
    // The delete without its key is in the error output.
    error_output_with(&srv, "Iceberg.MissingUniqueKey").await;
}

/// The error output's text, once it holds `needle`.
async fn error_output_with(srv: &TestServer, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body: String = error_objects(srv)
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        if body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no error output with {needle}; log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records routed to two tables by a JSON query, and a crash right after
/// the first table's commit: the restart reads that very batch again, the
/// table that committed it skips it and the other takes its records, so
/// each record is in its table once; one naming no listed table goes to
/// the error output.
#[tokio::test]
async fn a_crash_between_two_tables_commits_delivers_each_record_once() {
    use aws_sdk_firehose::types::{
        ProcessingConfiguration, ProcessorParameterName as N, ProcessorType as T,
    };
    let mut srv =
        TestServer::start_with_env(&[], &[("RIPSTREAM_TEST_ABORT_AFTER_ICEBERG_COMMIT", "1")]);
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    std::fs::create_dir_all(srv.data_dir().join("objects/lake")).unwrap();
    create_events_table(&g).await;
    create_table(&g, "audit").await;
    let table = |name: &str| {
        DestinationTableConfiguration::builder()
            .destination_database_name("lake")
            .destination_table_name(name)
            .build()
            .unwrap()
    };
    let mut dest = iceberg_destination(table("events"));
    dest.destination_table_configuration_list
        .get_or_insert_with(Vec::new)
        .push(table("audit"));
    dest.processing_configuration = Some(
        ProcessingConfiguration::builder()
            .enabled(true)
            .processors(crate::firehose::processor(
                T::MetadataExtraction,
                &[
                    (
                        N::MetadataExtractionQuery,
                        r#"{destinationDatabaseName: "lake", destinationTableName: .to}"#,
                    ),
                    (N::JsonParsingEngine, "JQ-1.6"),
                ],
            ))
            .build(),
    );
    fh.create_delivery_stream()
        .delivery_stream_name("two")
        .iceberg_destination_configuration(dest)
        .send()
        .await
        .unwrap();
    let described = fh
        .describe_delivery_stream()
        .delivery_stream_name("two")
        .send()
        .await
        .unwrap();
    let d = &described
        .delivery_stream_description()
        .unwrap()
        .destinations()[0];
    let listed: Vec<&str> = d
        .iceberg_destination_description()
        .unwrap()
        .destination_table_configuration_list()
        .iter()
        .map(|t| t.destination_table_name())
        .collect();
    assert_eq!(listed, ["events", "audit"]);
    fh.put_record_batch()
        .delivery_stream_name("two")
        .set_records(Some(vec![
            put(r#"{"id": 1, "to": "events"}"#),
            put(r#"{"id": 2, "to": "AUDIT"}"#),
            put(r#"{"id": 3, "to": "events"}"#),
            put(r#"{"id": 4, "to": "nowhere"}"#),
        ]))
        .send()
        .await
        .unwrap();
    assert!(
        srv.wait_exit(Duration::from_secs(60)),
        "the server did not abort after the first commit; log:\n{}",
        srv.log()
    );
    srv.set_env(&[]);
    srv.restart();
    let fh = firehose(&srv.url());
    let g = glue(&srv.url());
    let audit = wait_for_snapshots_of(&srv, &g, "audit", 1).await;
    let ids = |rows: Vec<(i64, Option<String>, usize)>| -> Vec<i64> {
        rows.into_iter().map(|r| r.0).collect()
    };
    assert_eq!(ids(rows(&audit).await), vec![2]);
    fh.put_record()
        .delivery_stream_name("two")
        .record(put(r#"{"id": 5, "to": "events"}"#))
        .send()
        .await
        .unwrap();
    let events = wait_for_snapshots_of(&srv, &g, "events", 2).await;
    assert_eq!(
        ids(rows(&events).await),
        vec![1, 3, 5],
        "nothing appended twice; log:\n{}",
        srv.log()
    );
    for said in [
        "reading again the batch under way before the restart",
        "the batch is in the table already",
    ] {
        assert!(srv.log().contains(said), "{said}: {}", srv.log());
    }
    let audit = wait_for_snapshots_of(&srv, &g, "audit", 1).await;
    assert_eq!(audit.metadata().snapshots().len(), 1);
    let body = error_output_with(&srv, "Iceberg.TableNotConfigured").await;
    assert!(
        body.contains(r#""destinationTableName":"nowhere""#),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "{body}");
}
