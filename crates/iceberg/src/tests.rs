//! Tables on a real Glue subset and object store in a temporary directory,
//! read back through the `iceberg` crate's own scan.

use arrow_array::{Array, Int64Array, StringArray};
use futures::TryStreamExt;
use ripstream_glue::Glue;
use ripstream_objects::Objects;
use ripstream_runtime::{ContextConfig, ServiceContext};
use serde_json::json;

use crate::{CommitTag, MALFORMED, MISSING_COLUMN, TYPE_MISMATCH, TableError, Tables};

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

fn tag(start: u64, end: u64) -> CommitTag {
    CommitTag {
        writer: "arn:aws:firehose:us-east-1:123456789012:deliverystream/s#1".into(),
        start,
        end,
    }
}

async fn scan(tables: &Tables, name: &str) -> Vec<(i64, Option<String>)> {
    let t = tables.open("db", name).await.unwrap();
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
    e.tables.check("db", "events").await.unwrap();
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
        .append("db", "events", &recs, &tag(0, 4))
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
        .append("db", "events", &recs, &tag(0, 4))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        e.tables
            .committed("db", "events", &tag(0, 0).writer)
            .await
            .unwrap(),
        Some((0, 4))
    );
    let next: Vec<&[u8]> = vec![br#"{"id": 3, "name": "c"}"#];
    let out = e
        .tables
        .append("db", "events", &next, &tag(4, 5))
        .await
        .unwrap();
    assert_eq!(out.rows, 1);
    assert_eq!(scan(&e.tables, "events").await.len(), 3);
    let t = e.tables.open("db", "events").await.unwrap();
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
    let err = e.tables.check("db", "missing").await.unwrap_err();
    assert!(matches!(err, TableError::Unusable(_)), "{err}");
    create(&e.glue, "hive", json!({"classification": "json"})).await;
    let err = e.tables.check("db", "hive").await.unwrap_err();
    assert!(err.to_string().contains("table_type=ICEBERG"), "{err}");
}
