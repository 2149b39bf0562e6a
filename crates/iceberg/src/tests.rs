//! Tables on a real Glue subset and object store in a temporary directory,
//! read back through the `iceberg` crate's own scan.

use std::io::Write;
use std::sync::atomic::Ordering::SeqCst;

use arrow_array::{Array, Int64Array, StringArray};
use bytes::Bytes;
use futures::TryStreamExt;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use ripstream_glue::Glue;
use ripstream_objects::Objects;
use ripstream_objects::store::ListQuery;
use ripstream_runtime::{ContextConfig, ServiceContext};
use serde_json::{Value, json};

use crate::{CommitTag, MALFORMED, MISSING_COLUMN, Prefix, TYPE_MISMATCH, TableError, Tables};

struct Env {
    _dir: tempfile::TempDir,
    _ctx: ServiceContext,
    glue: Glue,
    objects: Objects,
    tables: Tables,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ServiceContext::open(ContextConfig::new(dir.path())).unwrap();
    let glue = Glue::open_in(&ctx).unwrap();
    let objects = Objects::open(dir.path()).unwrap();
    objects.create_bucket("lake").unwrap();
    objects.create_bucket("other").unwrap();
    glue.create_database(json!({"DatabaseInput": {"Name": "db"}}))
        .await
        .unwrap();
    let tables = Tables::new(glue.clone(), objects.clone());
    Env {
        _dir: dir,
        _ctx: ctx,
        glue,
        objects,
        tables,
    }
}

async fn create(glue: &Glue, name: &str, params: serde_json::Value) {
    glue.create_table(
        json!({"DatabaseName": "db", "TableInput": {
            "Name": name,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": params,
            "StorageDescriptor": {
                "Columns": [{"Name": "id", "Type": "bigint"}, {"Name": "name", "Type": "string"}],
                "Location": format!("s3://lake/{name}/"),
            },
        }}),
        "test",
    )
    .await
    .unwrap();
}

/// What a stream for table `name` was authorized to write: its directory.
fn scope(name: &str) -> Vec<Prefix> {
    vec![Prefix::dir(&format!("s3://lake/{name}/")).unwrap()]
}

fn tag(start: u64, end: u64) -> CommitTag {
    CommitTag {
        writer: "arn:aws:firehose:us-east-1:123456789012:deliverystream/s#1".into(),
        start,
        end,
    }
}

async fn scan(tables: &Tables, name: &str) -> Vec<(i64, Option<String>)> {
    let (t, _) = tables.open("db", name, &scope(name)).await.unwrap();
    let batches: Vec<_> = t
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
        let ids = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        let names = b
            .column_by_name("name")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            out.push((
                ids.value(i),
                (!names.is_null(i)).then(|| names.value(i).to_string()),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn appends_are_snapshots_readable_by_iceberg() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    // The first open writes the metadata and points Glue at it.
    e.tables
        .check("db", "events", &[], &scope("events"))
        .await
        .unwrap();
    let t = e
        .glue
        .get_table(json!({"DatabaseName": "db", "Name": "events"}))
        .await
        .unwrap();
    let loc = t["Table"]["Parameters"]["metadata_location"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(loc.starts_with("s3://lake/events/metadata/00000-"), "{loc}");
    let key = loc.strip_prefix("s3://lake/").unwrap();
    e.objects.head("lake", key).await.unwrap();
    assert!(scan(&e.tables, "events").await.is_empty());

    let recs: Vec<&[u8]> = vec![
        br#"{"ID": 1, "Name": "a"}"#,
        b"not json",
        br#"{"id": "x"}"#,
        br#"{"id": 2}"#,
    ];
    let out = e
        .tables
        .append("db", "events", &recs, &tag(0, 4), &scope("events"))
        .await
        .unwrap();
    assert_eq!(out.rows, 2);
    assert!(!out.duplicate);
    let codes: Vec<_> = out.rejected.iter().map(|r| (r.index, r.code)).collect();
    assert_eq!(codes, vec![(1, MALFORMED), (2, TYPE_MISMATCH)]);
    let file = out.data_file.unwrap();
    assert!(
        file.starts_with("s3://lake/events/data/firehose-"),
        "{file}"
    );
    e.objects
        .head("lake", file.strip_prefix("s3://lake/").unwrap())
        .await
        .unwrap();
    assert_eq!(
        scan(&e.tables, "events").await,
        vec![(1, Some("a".into())), (2, None)]
    );

    // The same batch again (a lost checkpoint): nothing appended.
    let again = e
        .tables
        .append("db", "events", &recs, &tag(0, 4), &scope("events"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        e.tables
            .committed("db", "events", &tag(0, 0).writer, &scope("events"))
            .await
            .unwrap(),
        Some((0, 4))
    );
    let next: Vec<&[u8]> = vec![br#"{"id": 3, "name": "c"}"#];
    let out = e
        .tables
        .append("db", "events", &next, &tag(4, 5), &scope("events"))
        .await
        .unwrap();
    assert_eq!(out.rows, 1);
    assert_eq!(scan(&e.tables, "events").await.len(), 3);
    let (t, _) = e
        .tables
        .open("db", "events", &scope("events"))
        .await
        .unwrap();
    assert_eq!(t.metadata().snapshots().len(), 2);
    // Glue points at the newest metadata and remembers the one before.
    let g = e
        .glue
        .get_table(json!({"DatabaseName": "db", "Name": "events"}))
        .await
        .unwrap();
    let params = &g["Table"]["Parameters"];
    assert_eq!(params["metadata_location"].as_str(), t.metadata_location());
    assert!(
        params["previous_metadata_location"]
            .as_str()
            .unwrap()
            .contains("/metadata/00001-")
    );
    let _ = MISSING_COLUMN;
}

#[tokio::test]
async fn tables_that_cannot_take_records_are_named() {
    let e = env().await;
    let err = e
        .tables
        .check("db", "missing", &[], &scope("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::Unusable(_)), "{err}");
    create(&e.glue, "hive", json!({"classification": "json"})).await;
    let err = e
        .tables
        .check("db", "hive", &[], &scope("hive"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("table_type=ICEBERG"), "{err}");
}

/// The keys under a prefix of a bucket.
async fn keys(objects: &Objects, bucket: &str, prefix: &str) -> Vec<String> {
    let page = objects
        .list(
            bucket,
            ListQuery {
                prefix,
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out: Vec<String> = page
        .entries
        .iter()
        .filter_map(|e| match e {
            ripstream_objects::store::Entry::Object(o) => Some(o.key.clone()),
            ripstream_objects::store::Entry::Prefix(_) => None,
        })
        .collect();
    out.sort();
    out
}

/// Points Glue's `metadata_location` at a copy of the table's metadata,
/// edited, stored at `key` of `bucket` (`gzip`: compressed).
async fn repoint(
    e: &Env,
    name: &str,
    bucket: &str,
    key: &str,
    edit: impl Fn(&mut Value),
    gzip: bool,
) {
    let g = e
        .glue
        .get_table(json!({"DatabaseName": "db", "Name": name}))
        .await
        .unwrap();
    let loc = g["Table"]["Parameters"]["metadata_location"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, raw, _) = e
        .objects
        .get("lake", loc.strip_prefix("s3://lake/").unwrap(), None)
        .await
        .unwrap();
    let raw = if raw.starts_with(&[0x1F, 0x8B]) {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut plain)
            .unwrap();
        plain
    } else {
        raw.to_vec()
    };
    let mut m: Value = serde_json::from_slice(&raw).unwrap();
    edit(&mut m);
    let mut body = serde_json::to_vec(&m).unwrap();
    if gzip {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&body).unwrap();
        body = z.finish().unwrap();
    }
    e.objects
        .put_object(bucket, key, Bytes::from(body))
        .await
        .unwrap();
    let mut input = g["Table"].clone();
    input["Parameters"]["metadata_location"] = json!(format!("s3://{bucket}/{key}"));
    let ti: serde_json::Map<String, Value> = input
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| {
            ["Name", "StorageDescriptor", "Parameters", "TableType"].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    e.glue
        .update_table(
            json!({"DatabaseName": "db", "TableInput": ti, "VersionId": g["Table"]["VersionId"]}),
        )
        .await
        .unwrap();
}

const UUID: &str = "11111111-2222-4333-8444-555555555555";

fn rec(id: i64) -> Vec<u8> {
    format!(r#"{{"id": {id}}}"#).into_bytes()
}

#[tokio::test]
async fn locations_are_the_directories_a_commit_writes() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    let want = vec![
        Prefix::dir("s3://lake/events/data/").unwrap(),
        Prefix::dir("s3://lake/events/metadata/").unwrap(),
    ];
    // Before the table has metadata: what its first commit would write,
    // and nothing is written to find out.
    assert_eq!(e.tables.locations("db", "events").await.unwrap(), want);
    assert!(keys(&e.objects, "lake", "events/").await.is_empty());
    e.tables
        .check("db", "events", &[], &scope("events"))
        .await
        .unwrap();
    assert_eq!(e.tables.locations("db", "events").await.unwrap(), want);
    // A data path elsewhere is a directory of its own.
    repoint(
        &e,
        "events",
        "lake",
        &format!("events/metadata/00001-{UUID}.metadata.json"),
        |m| m["properties"] = json!({"write.data.path": "s3://other/stolen/"}),
        false,
    )
    .await;
    assert_eq!(
        e.tables.locations("db", "events").await.unwrap(),
        vec![
            Prefix::dir("s3://lake/events/metadata/").unwrap(),
            Prefix::dir("s3://other/stolen/").unwrap(),
        ]
    );
}

#[tokio::test]
async fn a_table_that_moved_outside_the_streams_locations_is_refused() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    // Not authorized for the table's directory: its metadata is not even
    // created.
    let err = e
        .tables
        .check("db", "events", &[], &scope("elsewhere"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::NotAuthorized(_)), "{err}");
    assert!(keys(&e.objects, "lake", "events/").await.is_empty());
    e.tables
        .check("db", "events", &[], &scope("events"))
        .await
        .unwrap();

    // Whoever can update the table moves its data into another bucket...
    repoint(
        &e,
        "events",
        "lake",
        &format!("events/metadata/00001-{UUID}.metadata.json"),
        |m| m["properties"] = json!({"write.data.path": "s3://other/stolen"}),
        false,
    )
    .await;
    let err = e
        .tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::NotAuthorized(_)), "{err}");
    assert_eq!(err.code(), "Iceberg.LocationNotAuthorized");
    // ...or the whole table, or its metadata file.
    repoint(
        &e,
        "events",
        "lake",
        &format!("events/metadata/00002-{UUID}.metadata.json"),
        |m| m["location"] = json!("s3://other/stolen"),
        false,
    )
    .await;
    let err = e
        .tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::NotAuthorized(_)), "{err}");
    repoint(
        &e,
        "events",
        "other",
        &format!("stolen/metadata/00003-{UUID}.metadata.json"),
        |_| {},
        false,
    )
    .await;
    let err = e
        .tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::NotAuthorized(_)), "{err}");
    // Nothing was written outside the table's directory, only read back.
    assert_eq!(
        keys(&e.objects, "other", "").await,
        vec![format!("stolen/metadata/00003-{UUID}.metadata.json")]
    );
    assert!(keys(&e.objects, "lake", "events/data/").await.is_empty());
}

#[tokio::test]
async fn metadata_files_are_read_within_a_bound() {
    let e = env().await;
    let tables = e.tables.clone().with_max_file_bytes(64 << 10);
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    tables
        .check("db", "events", &[], &scope("events"))
        .await
        .unwrap();
    // A small gzip file that inflates past the bound (whitespace is JSON).
    repoint(
        &e,
        "events",
        "lake",
        &format!("events/metadata/00001-{UUID}.gz.metadata.json"),
        |m| m["padding"] = json!(" ".repeat(1 << 20)),
        true,
    )
    .await;
    let err = tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("inflates to more than"), "{err}");
    let err = tables.locations("db", "events").await.unwrap_err();
    assert!(err.to_string().contains("inflates to more than"), "{err}");
    // A plain one past the bound is not read at all.
    repoint(
        &e,
        "events",
        "lake",
        &format!("events/metadata/00002-{UUID}.metadata.json"),
        |m| m["padding"] = json!(" ".repeat(1 << 20)),
        false,
    )
    .await;
    let err = tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[tokio::test]
async fn a_metadata_version_that_cannot_be_incremented_refuses_the_table() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    e.tables
        .check("db", "events", &[], &scope("events"))
        .await
        .unwrap();
    repoint(
        &e,
        "events",
        "lake",
        &format!("events/metadata/2147483647-{UUID}.metadata.json"),
        |_| {},
        false,
    )
    .await;
    // An error for the records, not a panic of the delivery task.
    let err = e
        .tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
    assert!(
        keys(&e.objects, "lake", "events/data/").await.is_empty(),
        "the data file of the refused commit is deleted"
    );
}

#[tokio::test]
async fn commits_do_not_read_the_tables_older_manifests() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    e.tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap();
    let manifests: Vec<String> = keys(&e.objects, "lake", "events/metadata/")
        .await
        .into_iter()
        .filter(|k| k.ends_with("-m0.avro"))
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    // A manifest the commit would have to read (every one of them, on
    // every commit, to look for the new file) is gone: the commit does
    // not need it.
    e.objects.delete("lake", &manifests[0]).await.unwrap();
    e.tables
        .append("db", "events", &[&rec(2)], &tag(1, 2), &scope("events"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_commit_leaves_no_data_file() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    // The table's very first commit fails...
    e.tables.faults.before.store(1, SeqCst);
    let err = e
        .tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::Unavailable(_)), "{err}");
    assert!(keys(&e.objects, "lake", "events/data/").await.is_empty());
    // ...and one after a commit of the writer's.
    let ok = e
        .tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap();
    let kept = ok.data_file.unwrap();
    e.tables.faults.before.store(1, SeqCst);
    e.tables
        .append("db", "events", &[&rec(2)], &tag(1, 2), &scope("events"))
        .await
        .unwrap_err();
    assert_eq!(
        keys(&e.objects, "lake", "events/data/").await,
        vec![kept.strip_prefix("s3://lake/").unwrap().to_string()]
    );
    assert_eq!(scan(&e.tables, "events").await, vec![(1, None)]);
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_keeps_its_data_file() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    e.tables.faults.lost.store(1, SeqCst);
    let out = e
        .tables
        .append(
            "db",
            "events",
            &[&rec(1), &rec(2)],
            &tag(0, 2),
            &scope("events"),
        )
        .await
        .unwrap();
    assert_eq!(out.rows, 2);
    let file = out.data_file.unwrap();
    e.objects
        .head("lake", file.strip_prefix("s3://lake/").unwrap())
        .await
        .unwrap();
    assert_eq!(scan(&e.tables, "events").await, vec![(1, None), (2, None)]);
    // It counts as committed: not appended again.
    let again = e
        .tables
        .append(
            "db",
            "events",
            &[&rec(1), &rec(2)],
            &tag(0, 2),
            &scope("events"),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
}

#[tokio::test]
async fn a_data_file_the_table_could_not_be_asked_about_is_settled_by_the_next_append() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    e.tables.faults.before_unreadable.store(1, SeqCst);
    e.tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    // Unknown whether the commit took: the file stays for now.
    let left = keys(&e.objects, "lake", "events/data/").await;
    assert_eq!(left.len(), 1, "{left:?}");
    let out = e
        .tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap();
    assert_eq!(
        keys(&e.objects, "lake", "events/data/").await,
        vec![
            out.data_file
                .unwrap()
                .strip_prefix("s3://lake/")
                .unwrap()
                .to_string()
        ]
    );
}

#[tokio::test]
async fn lost_races_are_retried_and_leave_no_files() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    e.tables
        .check("db", "events", &[], &scope("events"))
        .await
        .unwrap();
    let before = keys(&e.objects, "lake", "events/metadata/").await;
    e.tables.faults.conflicts.store(2, SeqCst);
    e.tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap();
    // One metadata file, one manifest list and one manifest more: those
    // of the two lost races were deleted.
    let after = keys(&e.objects, "lake", "events/metadata/").await;
    assert_eq!(after.len(), before.len() + 3, "{after:?}");
    assert_eq!(keys(&e.objects, "lake", "events/data/").await.len(), 1);

    // Losing every try fails the append, and leaves nothing either.
    e.tables.faults.conflicts.store(100, SeqCst);
    let err = e
        .tables
        .append("db", "events", &[&rec(2)], &tag(1, 2), &scope("events"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::Unavailable(_)), "{err}");
    assert_eq!(keys(&e.objects, "lake", "events/metadata/").await, after);
    assert_eq!(keys(&e.objects, "lake", "events/data/").await.len(), 1);
    e.tables.faults.conflicts.store(0, SeqCst);
}

#[tokio::test]
async fn the_tables_own_retry_properties_do_not_govern_its_commits() {
    let e = env().await;
    create(&e.glue, "events", json!({"table_type": "ICEBERG"})).await;
    e.tables
        .check("db", "events", &[], &scope("events"))
        .await
        .unwrap();
    // Whoever writes the table's metadata sets its commit retries (here a
    // thousand tries; an hour's wait between them would do as well).
    let catalog = e.tables.catalog(None);
    let t = iceberg::Catalog::load_table(
        &catalog,
        &iceberg::TableIdent::from_strs(["db", "events"]).unwrap(),
    )
    .await
    .unwrap();
    let tx = Transaction::new(&t);
    let tx = tx
        .update_table_properties()
        .set("commit.retry.min-wait-ms".into(), "1".into())
        .set("commit.retry.max-wait-ms".into(), "1".into())
        .set("commit.retry.num-retries".into(), "1000".into())
        .set("commit.retry.total-timeout-ms".into(), "3600000".into())
        .apply(tx)
        .unwrap();
    tx.commit(&catalog).await.unwrap();
    e.tables.faults.conflicts.store(100, SeqCst);
    e.tables
        .append("db", "events", &[&rec(1)], &tag(0, 1), &scope("events"))
        .await
        .unwrap_err();
    assert_eq!(
        100 - e.tables.faults.conflicts.load(SeqCst),
        crate::COMMIT_ATTEMPTS,
        "tries at the commit"
    );
    e.tables.faults.conflicts.store(0, SeqCst);
}

#[test]
fn ranges_are_start_before_end() {
    let r = |v: &str| {
        crate::range_of(&std::collections::HashMap::from([(
            crate::RANGE_PROPERTY.to_string(),
            v.to_string(),
        )]))
    };
    assert_eq!(r("3-7"), Some((3, 7)));
    assert_eq!(r("7-3"), None);
    assert_eq!(r("5-5"), None);
    assert_eq!(r("x-3"), None);
}

#[tokio::test]
async fn updates_and_deletes_by_unique_key_are_position_deletes() {
    use crate::{MISSING_UNIQUE_KEY, NO_UNIQUE_KEYS, Op};
    let e = env().await;
    create(&e.glue, "users", json!({"table_type": "ICEBERG"})).await;
    let keys = vec!["ID".to_string()];
    e.tables
        .check("db", "users", &keys, &scope("users"))
        .await
        .unwrap();
    let bad = e
        .tables
        .check("db", "users", &["nope".to_string()], &scope("users"))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("unique key nope"), "{bad}");

    let first: Vec<&[u8]> = vec![
        br#"{"id": 1, "name": "a"}"#,
        br#"{"id": 2, "name": "b"}"#,
        br#"{"id": 3, "name": "c"}"#,
    ];
    e.tables
        .append("db", "users", &first, &tag(0, 3), &scope("users"))
        .await
        .unwrap();
    // A second file holding key 2 again (inserts do not replace).
    let second: Vec<&[u8]> = vec![br#"{"id": 2, "name": "b-again"}"#];
    e.tables
        .append("db", "users", &second, &tag(3, 4), &scope("users"))
        .await
        .unwrap();

    let changes: Vec<&[u8]> = vec![
        br#"{"id": 2, "name": "b2"}"#,
        br#"{"id": 3}"#,
        br#"{"id": 4, "name": "d"}"#,
        br#"{"id": 6, "name": "gone"}"#,
        br#"{"id": 6}"#,
        br#"{"id": 7, "name": "first"}"#,
        br#"{"id": 7, "name": "last"}"#,
        br#"{"name": "no key"}"#,
        br#"{"id": 9}"#,
    ];
    let ops = [
        Op::Update,
        Op::Delete,
        Op::Insert,
        Op::Insert,
        Op::Delete,
        Op::Update,
        Op::Update,
        Op::Delete,
        Op::Delete,
    ];
    let out = e
        .tables
        .write(
            "db",
            "users",
            &changes,
            &ops,
            &keys,
            &tag(4, 13),
            &scope("users"),
        )
        .await
        .unwrap();
    let codes: Vec<_> = out.rejected.iter().map(|r| (r.index, r.code)).collect();
    assert_eq!(codes, vec![(7, MISSING_UNIQUE_KEY)]);
    assert_eq!(out.rows, 8);
    assert_eq!(
        scan(&e.tables, "users").await,
        vec![
            (1, Some("a".into())),
            (2, Some("b2".into())),
            (4, Some("d".into())),
            (7, Some("last".into())),
        ]
    );
    let (t, _) = e.tables.open("db", "users", &scope("users")).await.unwrap();
    let s = t.metadata().current_snapshot().unwrap();
    let props = &s.summary().additional_properties;
    // Keys 2 (twice) and 3 were in the table.
    assert_eq!(props["added-position-deletes"], "3");
    assert_eq!(props["added-delete-files"], "1");
    assert_eq!(props["total-records"], "7");

    // The batch again after a lost checkpoint: nothing changes.
    let again = e
        .tables
        .write(
            "db",
            "users",
            &changes,
            &ops,
            &keys,
            &tag(4, 13),
            &scope("users"),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    // Its refused record answered again, for the error output the first
    // answer may not have reached.
    let codes: Vec<_> = again.rejected.iter().map(|r| (r.index, r.code)).collect();
    assert_eq!(codes, vec![(7, MISSING_UNIQUE_KEY)]);

    // A later update of a row an earlier update wrote, and deletes only.
    let more: Vec<&[u8]> = vec![br#"{"id": 2, "name": "b3"}"#, br#"{"id": 1}"#];
    e.tables
        .write(
            "db",
            "users",
            &more,
            &[Op::Update, Op::Delete],
            &keys,
            &tag(13, 15),
            &scope("users"),
        )
        .await
        .unwrap();
    // Only live rows are deleted: the rows of key 2 the first delete file
    // deleted already are not deleted again (b2's row and 1's only).
    let (t, _) = e.tables.open("db", "users", &scope("users")).await.unwrap();
    let s = t.metadata().current_snapshot().unwrap();
    assert_eq!(
        s.summary().additional_properties["added-position-deletes"],
        "2"
    );
    let gone: Vec<&[u8]> = vec![br#"{"id": 4}"#];
    e.tables
        .write(
            "db",
            "users",
            &gone,
            &[Op::Delete],
            &keys,
            &tag(15, 16),
            &scope("users"),
        )
        .await
        .unwrap();
    assert_eq!(
        scan(&e.tables, "users").await,
        vec![(2, Some("b3".into())), (7, Some("last".into()))]
    );

    // A table bigger than the rows an update may read takes none: it is
    // refused before its files are decoded, and nothing is committed.
    let current =
        |t: &iceberg::table::Table| t.metadata().current_snapshot().unwrap().snapshot_id();
    let (t, _) = e.tables.open("db", "users", &scope("users")).await.unwrap();
    let before = current(&t);
    let small = e.tables.clone().with_max_scanned_rows(2);
    let e2 = small
        .write(
            "db",
            "users",
            &more,
            &[Op::Update],
            &keys,
            &tag(16, 17),
            &scope("users"),
        )
        .await
        .unwrap_err();
    assert!(e2.to_string().contains("more than 2 rows"), "{e2}");
    let (t, _) = e.tables.open("db", "users", &scope("users")).await.unwrap();
    assert_eq!(current(&t), before);
    // Without unique keys (and no identifier fields) updates are refused.
    let out = e
        .tables
        .write(
            "db",
            "users",
            &more,
            &[Op::Update],
            &[],
            &tag(16, 18),
            &scope("users"),
        )
        .await
        .unwrap();
    let codes: Vec<_> = out.rejected.iter().map(|r| (r.index, r.code)).collect();
    assert_eq!(codes, vec![(0, NO_UNIQUE_KEYS)]);
    assert_eq!(scan(&e.tables, "users").await.len(), 3);
}
