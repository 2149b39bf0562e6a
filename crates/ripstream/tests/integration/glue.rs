//! The Glue Data Catalog subset through the real binary, with the official
//! AWS SDK for Rust: every operation, its errors, paging, table versions,
//! IAM policies on Glue's resource ARNs, and the catalog surviving a
//! restart.

use aws_sdk_glue::Client;
use aws_sdk_glue::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_glue::error::ProvideErrorMetadata;
use aws_sdk_glue::types::{
    Column, DatabaseInput, SerDeInfo, StorageDescriptor, TableAttributes, TableInput,
};

use crate::support::TestServer;

pub(crate) fn glue(url: &str) -> Client {
    glue_as(url, "AKIDTEST", "secret")
}

pub(crate) fn glue_as(url: &str, key: &str, secret: &str) -> Client {
    let conf = aws_sdk_glue::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .retry_config(aws_sdk_glue::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn column(name: &str, ty: &str) -> Column {
    Column::builder()
        .name(name)
        .r#type(ty)
        .comment(format!("the {name}"))
        .build()
        .unwrap()
}

fn table(name: &str, columns: &[(&str, &str)]) -> TableInput {
    let mut sd = StorageDescriptor::builder()
        .location("s3://lake/events/")
        .input_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                )
                .parameters("serialization.format", "1")
                .build(),
        );
    for (n, t) in columns {
        sd = sd.columns(column(n, t));
    }
    TableInput::builder()
        .name(name)
        .table_type("EXTERNAL_TABLE")
        .parameters("classification", "parquet")
        .partition_keys(column("dt", "string"))
        .storage_descriptor(sd.build())
        .build()
        .unwrap()
}

fn database(name: &str) -> DatabaseInput {
    DatabaseInput::builder()
        .name(name)
        .description("the lake")
        .build()
        .unwrap()
}

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_glue::error::SdkError<E>) -> (String, String) {
    match e.as_service_error() {
        Some(s) => (
            s.code().unwrap_or_default().to_string(),
            s.message().unwrap_or_default().to_string(),
        ),
        None => (String::new(), format!("not a service error: {e}")),
    }
}

#[tokio::test]
async fn databases_and_tables_with_their_errors() {
    let srv = TestServer::start();
    let c = glue(&srv.url());
    c.create_database()
        .database_input(database("Lake"))
        .send()
        .await
        .unwrap();
    let e = c
        .create_database()
        .database_input(database("LAKE"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        (
            "AlreadyExistsException".into(),
            "Database already exists.".into()
        )
    );
    let e = c.get_database().name("nope").send().await.unwrap_err();
    assert_eq!(
        code(&e),
        (
            "EntityNotFoundException".into(),
            "Database nope not found.".into()
        )
    );
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    let db = c.get_database().name("LAKE").send().await.unwrap();
    let db = db.database().unwrap();
    assert_eq!(db.name(), "lake");
    assert_eq!(db.description(), Some("the lake"));
    assert_eq!(db.catalog_id(), Some("000000000000"));
    assert!(db.create_time().unwrap().secs() > 1_700_000_000);

    c.update_database()
        .name("lake")
        .database_input(
            DatabaseInput::builder()
                .name("lake")
                .description("changed")
                .parameters("owner", "data")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let db = c.get_database().name("lake").send().await.unwrap();
    assert_eq!(db.database().unwrap().description(), Some("changed"));
    assert_eq!(
        db.database().unwrap().parameters().unwrap().get("owner"),
        Some(&"data".to_string())
    );

    c.create_table()
        .database_name("Lake")
        .table_input(table("Events", &[("id", "bigint"), ("msg", "string")]))
        .send()
        .await
        .unwrap();
    let e = c
        .create_table()
        .database_name("lake")
        .table_input(table("events", &[]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        (
            "AlreadyExistsException".into(),
            "Table already exists.".into()
        )
    );
    let e = c
        .create_table()
        .database_name("missing")
        .table_input(table("t", &[]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        (
            "EntityNotFoundException".into(),
            "Database missing not found.".into()
        )
    );
    // Glue takes any type string; the format converter reads them.
    c.create_table()
        .database_name("lake")
        .table_input(table("odd", &[("x", "whatever<type")]))
        .send()
        .await
        .unwrap();

    let t = c
        .get_table()
        .database_name("LAKE")
        .name("EVENTS")
        .send()
        .await
        .unwrap();
    let t = t.table().unwrap();
    assert_eq!(t.name(), "events");
    assert_eq!(t.database_name(), Some("lake"));
    assert_eq!(t.created_by(), Some("arn:aws:iam::000000000000:root"));
    assert!(!t.is_registered_with_lake_formation());
    assert_eq!(t.catalog_id(), Some("000000000000"));
    assert_eq!(t.version_id(), Some("0"));
    assert_eq!(t.table_type(), Some("EXTERNAL_TABLE"));
    assert_eq!(t.create_time(), t.update_time());
    assert_eq!(
        t.parameters().unwrap().get("classification"),
        Some(&"parquet".to_string())
    );
    assert_eq!(t.partition_keys()[0].name(), "dt");
    let sd = t.storage_descriptor().unwrap();
    let cols: Vec<(&str, Option<&str>, Option<&str>)> = sd
        .columns()
        .iter()
        .map(|c| (c.name(), c.r#type(), c.comment()))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("id", Some("bigint"), Some("the id")),
            ("msg", Some("string"), Some("the msg"))
        ]
    );
    assert_eq!(sd.location(), Some("s3://lake/events/"));
    assert_eq!(
        sd.serde_info().unwrap().serialization_library(),
        Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
    );

    let e = c
        .get_table()
        .database_name("lake")
        .name("ghost")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        (
            "EntityNotFoundException".into(),
            "Table ghost not found.".into()
        )
    );
    let e = c
        .get_table()
        .catalog_id("999999999999")
        .database_name("lake")
        .name("events")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "AccessDeniedException");
    c.get_table()
        .catalog_id("000000000000")
        .database_name("lake")
        .name("events")
        .send()
        .await
        .unwrap();

    c.delete_table()
        .database_name("lake")
        .name("odd")
        .send()
        .await
        .unwrap();
    let e = c
        .delete_table()
        .database_name("lake")
        .name("odd")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "EntityNotFoundException");

    // Deleting the database deletes its tables: a new one of the same name
    // starts empty.
    c.delete_database().name("lake").send().await.unwrap();
    let e = c.delete_database().name("lake").send().await.unwrap_err();
    assert_eq!(code(&e).0, "EntityNotFoundException");
    c.create_database()
        .database_input(database("lake"))
        .send()
        .await
        .unwrap();
    let tables = c.get_tables().database_name("lake").send().await.unwrap();
    assert!(tables.table_list().is_empty());
}

#[tokio::test]
async fn listing_pages_and_filters() {
    let srv = TestServer::start();
    let c = glue(&srv.url());
    for i in 0..5 {
        c.create_database()
            .database_input(database(&format!("db{i}")))
            .send()
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let out = c
            .get_databases()
            .max_results(2)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        pages += 1;
        names.extend(out.database_list().iter().map(|d| d.name().to_string()));
        token = out.next_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["db0", "db1", "db2", "db3", "db4"]);

    for name in ["events_a", "events_b", "events_c", "clicks", "raw_events"] {
        c.create_table()
            .database_name("db0")
            .table_input(table(name, &[("id", "int")]))
            .send()
            .await
            .unwrap();
    }
    // The paginator follows NextToken to the end.
    let pages: Vec<_> = c
        .get_tables()
        .database_name("db0")
        .expression("events*")
        .max_results(2)
        .into_paginator()
        .send()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(pages.len(), 2);
    let names: Vec<String> = pages
        .into_iter()
        .flat_map(|p| p.unwrap().table_list().to_vec())
        .map(|t| t.name().to_string())
        .collect();
    assert_eq!(names, ["events_a", "events_b", "events_c"]);
    let out = c
        .get_tables()
        .database_name("db0")
        .expression("clicks|*events")
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = out.table_list().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["clicks", "raw_events"]);
    let out = c
        .get_tables()
        .database_name("db0")
        .expression("clicks")
        .attributes_to_get(TableAttributes::Name)
        .send()
        .await
        .unwrap();
    assert_eq!(out.table_list()[0].name(), "clicks");
    assert!(out.table_list()[0].storage_descriptor().is_none());
    let e = c
        .get_tables()
        .database_name("db0")
        .expression("events[")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "InvalidInputException");
    let e = c
        .get_tables()
        .database_name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        (
            "EntityNotFoundException".into(),
            "Database nope not found.".into()
        )
    );

    let out = c
        .batch_delete_table()
        .database_name("db0")
        .tables_to_delete("EVENTS_A")
        .tables_to_delete("clicks")
        .tables_to_delete("ghost")
        .send()
        .await
        .unwrap();
    let errors = out.errors();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].table_name(), Some("ghost"));
    let detail = errors[0].error_detail().unwrap();
    assert_eq!(detail.error_code(), Some("EntityNotFoundException"));
    assert_eq!(detail.error_message(), Some("Table ghost not found."));
    let out = c.get_tables().database_name("db0").send().await.unwrap();
    let names: Vec<&str> = out.table_list().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["events_b", "events_c", "raw_events"]);
}

#[tokio::test]
async fn versions_survive_a_restart() {
    let mut srv = TestServer::start();
    let c = glue(&srv.url());
    c.create_database()
        .database_input(database("lake"))
        .send()
        .await
        .unwrap();
    c.create_table()
        .database_name("lake")
        .table_input(table("events", &[("id", "bigint")]))
        .send()
        .await
        .unwrap();
    c.update_table()
        .database_name("lake")
        .table_input(table("events", &[("id", "bigint"), ("v1", "int")]))
        .send()
        .await
        .unwrap();
    c.update_table()
        .database_name("lake")
        .version_id("1")
        .table_input(table("events", &[("v2", "int")]))
        .send()
        .await
        .unwrap();
    let e = c
        .update_table()
        .database_name("lake")
        .version_id("0")
        .table_input(table("events", &[]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "ConcurrentModificationException");
    // Replaces version 2 without archiving it.
    c.update_table()
        .database_name("lake")
        .skip_archive(true)
        .table_input(table("events", &[("v3", "int")]))
        .send()
        .await
        .unwrap();
    let e = c
        .update_table()
        .database_name("lake")
        .table_input(table("ghost", &[]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "EntityNotFoundException");

    srv.kill9();
    srv.restart();
    let c = glue(&srv.url());
    let t = c
        .get_table()
        .database_name("lake")
        .name("events")
        .send()
        .await
        .unwrap();
    let t = t.table().unwrap();
    assert_eq!(t.version_id(), Some("3"));
    assert_eq!(t.storage_descriptor().unwrap().columns()[0].name(), "v3");
    assert!(t.update_time().unwrap().secs() >= t.create_time().unwrap().secs());

    let out = c
        .get_table_versions()
        .database_name("lake")
        .table_name("events")
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = out
        .table_versions()
        .iter()
        .map(|v| v.version_id().unwrap())
        .collect();
    assert_eq!(ids, ["0", "1", "3"]);
    let page = c
        .get_table_versions()
        .database_name("lake")
        .table_name("events")
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.table_versions().len(), 2);
    let rest = c
        .get_table_versions()
        .database_name("lake")
        .table_name("events")
        .max_results(2)
        .set_next_token(page.next_token().map(String::from))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.table_versions()[0].version_id(), Some("3"));
    assert!(rest.next_token().is_none());

    let v1 = c
        .get_table_version()
        .database_name("lake")
        .table_name("events")
        .version_id("1")
        .send()
        .await
        .unwrap();
    let v1 = v1.table_version().unwrap();
    assert_eq!(v1.version_id(), Some("1"));
    let cols: Vec<&str> = v1
        .table()
        .unwrap()
        .storage_descriptor()
        .unwrap()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(cols, ["id", "v1"]);
    let cur = c
        .get_table_version()
        .database_name("lake")
        .table_name("events")
        .send()
        .await
        .unwrap();
    assert_eq!(cur.table_version().unwrap().version_id(), Some("3"));
    let e = c
        .get_table_version()
        .database_name("lake")
        .table_name("events")
        .version_id("2")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "EntityNotFoundException");

    c.delete_table_version()
        .database_name("lake")
        .table_name("events")
        .version_id("0")
        .send()
        .await
        .unwrap();
    let e = c
        .delete_table_version()
        .database_name("lake")
        .table_name("events")
        .version_id("0")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "EntityNotFoundException");
    let e = c
        .delete_table_version()
        .database_name("lake")
        .table_name("events")
        .version_id("3")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "InvalidInputException");

    // A graceful restart keeps the deletion too.
    srv.terminate();
    srv.restart();
    let c = glue(&srv.url());
    let out = c
        .get_table_versions()
        .database_name("lake")
        .table_name("events")
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = out
        .table_versions()
        .iter()
        .map(|v| v.version_id().unwrap())
        .collect();
    assert_eq!(ids, ["1", "3"]);
}

const CREDENTIALS: &str = r#"
[[principal]]
name = "reader"
access_key_id = "AKIDREADER0000000001"
secret_access_key = "reader-secret"
policy = '''{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["glue:Get*", "glue:CreateTable"], "Resource": "*"},
  {"Effect": "Deny", "Action": "glue:*", "Resource": "arn:aws:glue:us-east-1:000000000000:table/lake/secret"}
]}'''

[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "glue:*", "Resource": "*"}]}'''
"#;

#[tokio::test]
async fn policies_apply_to_glue_resource_arns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    let admin = glue_as(&srv.url(), "AKIDADMIN00000000001", "admin-secret");
    let reader = glue_as(&srv.url(), "AKIDREADER0000000001", "reader-secret");
    admin
        .create_database()
        .database_input(database("lake"))
        .send()
        .await
        .unwrap();
    for name in ["open", "secret"] {
        admin
            .create_table()
            .database_name("lake")
            .table_input(table(name, &[("id", "int")]))
            .send()
            .await
            .unwrap();
    }
    let t = reader
        .get_table()
        .database_name("lake")
        .name("open")
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.table().unwrap().created_by(),
        Some("arn:aws:iam::000000000000:user/admin")
    );
    let e = reader
        .get_table()
        .database_name("lake")
        .name("SECRET")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "AccessDeniedException");
    let e = reader
        .delete_table()
        .database_name("lake")
        .name("open")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "AccessDeniedException");
    let e = reader
        .create_database()
        .database_input(database("mine"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, "AccessDeniedException");
    reader
        .create_table()
        .database_name("lake")
        .table_input(table("by_reader", &[]))
        .send()
        .await
        .unwrap();
    let t = admin
        .get_table()
        .database_name("lake")
        .name("by_reader")
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.table().unwrap().created_by(),
        Some("arn:aws:iam::000000000000:user/reader")
    );
    // Nothing the reader was refused happened.
    assert!(
        admin
            .get_table()
            .database_name("lake")
            .name("open")
            .send()
            .await
            .is_ok()
    );
    assert!(admin.get_database().name("mine").send().await.is_err());
}
