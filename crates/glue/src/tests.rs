//! The service on a real context (catalog in a temporary directory), through
//! the front door's contract ([`GlueApi`] with a recording authorizer).

use std::future::Future;
use std::path::Path;
use std::task::Poll;

use parking_lot::Mutex;
use ripstream_api::{Authorize, BoxError, Caller, Refused, Reply, Request, Service};
use ripstream_runtime::{ContextConfig, ServiceContext};
use serde_json::{Value, json};

use crate::api::GlueApi;
use crate::store::{State, TableRec};
use crate::{Glue, GlueConfig};

fn open(dir: &Path) -> (ServiceContext, GlueApi) {
    let ctx = ServiceContext::open(ContextConfig::new(dir)).unwrap();
    let glue = Glue::open_in(&ctx).unwrap();
    (ctx, GlueApi::new(glue))
}

fn open_with(dir: &Path, config: GlueConfig) -> (ServiceContext, GlueApi) {
    let ctx = ServiceContext::open(ContextConfig::new(dir)).unwrap();
    let glue = Glue::open_with(&ctx, config).unwrap();
    (ctx, GlueApi::new(glue))
}

/// Records what each call asked to be authorized; refuses resources
/// containing `deny`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Vec<String>>>,
    deny: Option<&'static str>,
}

impl Authorize for Recorder {
    fn authorize(&self, resources: &[String]) -> Result<(), BoxError> {
        self.seen.lock().push(resources.to_vec());
        if let Some(d) = self.deny
            && resources.iter().any(|r| r.contains(d))
        {
            return Err(Box::new(Refused {
                code: "AccessDeniedException",
                status: http::StatusCode::BAD_REQUEST,
                message: "denied".into(),
            }));
        }
        Ok(())
    }
    fn authorize_action(&self, _: &str, _: &[String]) -> Result<(), BoxError> {
        panic!("glue checks only its own actions")
    }
}

const ALICE: &str = "arn:aws:iam::000000000000:user/alice";

async fn call_with(
    api: &GlueApi,
    auth: &Recorder,
    op: &str,
    input: Value,
) -> Result<Value, BoxError> {
    let reply = api
        .call(Request {
            operation: op,
            input,
            authorize: auth,
            caller: Caller::Principal {
                name: "alice",
                access_key_id: "AKID",
                arn: ALICE,
            },
            slot: None,
            body: None,
        })
        .await?;
    match reply {
        Reply::Json(b) => Ok(serde_json::from_slice(&b).unwrap()),
        other => panic!("{op}: {other:?}"),
    }
}

async fn call(api: &GlueApi, op: &str, input: Value) -> Result<Value, BoxError> {
    call_with(api, &Recorder::default(), op, input).await
}

async fn ok(api: &GlueApi, op: &str, input: Value) -> Value {
    match call(api, op, input).await {
        Ok(v) => v,
        Err(e) => panic!("{op}: {} {e}", e.code()),
    }
}

async fn err(api: &GlueApi, op: &str, input: Value) -> (String, String) {
    match call(api, op, input).await {
        Ok(v) => panic!("{op} succeeded: {v}"),
        Err(e) => {
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{op}: {e}");
            (e.code().to_string(), e.to_string())
        }
    }
}

fn table_input(name: &str, columns: &[(&str, &str)]) -> Value {
    json!({
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet"},
        "PartitionKeys": [{"Name": "dt", "Type": "string"}],
        "StorageDescriptor": {
            "Columns": columns.iter().map(|(n, t)| json!({"Name": n, "Type": t, "Comment": format!("{n} column")})).collect::<Vec<_>>(),
            "Location": "s3://lake/events/",
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                "Parameters": {"serialization.format": "1"}
            }
        }
    })
}

async fn setup(api: &GlueApi) {
    ok(
        api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "Lake", "Description": "the lake", "Parameters": {"k": "v"}}}),
    )
    .await;
    ok(
        api,
        "CreateTable",
        json!({"DatabaseName": "LAKE", "TableInput": table_input("Events", &[("id", "bigint"), ("msg", "string")])}),
    )
    .await;
}

#[tokio::test]
async fn databases_lifecycle_with_folded_names() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, api) = open(dir.path());
    setup(&api).await;
    let d = ok(&api, "GetDatabase", json!({"Name": "lAkE"})).await["Database"].clone();
    assert_eq!(d["Name"], "lake");
    assert_eq!(d["Description"], "the lake");
    assert_eq!(d["Parameters"], json!({"k": "v"}));
    assert_eq!(d["CatalogId"], "000000000000");
    assert!(d["CreateTime"].as_f64().unwrap() > 1.7e9);
    assert_eq!(
        d["CreateTableDefaultPermissions"][0]["Principal"]["DataLakePrincipalIdentifier"],
        "IAM_ALLOWED_PRINCIPALS"
    );
    let (code, msg) = err(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "LAKE"}}),
    )
    .await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("AlreadyExistsException", "Database already exists.")
    );
    let (code, msg) = err(&api, "GetDatabase", json!({"Name": "Nope"})).await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("EntityNotFoundException", "Database nope not found.")
    );

    ok(
        &api,
        "UpdateDatabase",
        json!({"Name": "lake", "DatabaseInput": {"Name": "Lake", "Description": "new"}}),
    )
    .await;
    let d2 = ok(&api, "GetDatabase", json!({"Name": "lake"})).await["Database"].clone();
    assert_eq!(d2["Description"], "new");
    assert!(
        d2.get("Parameters").is_none(),
        "an update replaces the definition"
    );
    assert_eq!(d2["CreateTime"], d["CreateTime"]);
    let (code, _) = err(
        &api,
        "UpdateDatabase",
        json!({"Name": "lake", "DatabaseInput": {"Name": "other"}}),
    )
    .await;
    assert_eq!(code, "InvalidInputException");
    let (code, _) = err(
        &api,
        "UpdateDatabase",
        json!({"Name": "nope", "DatabaseInput": {"Name": "nope"}}),
    )
    .await;
    assert_eq!(code, "EntityNotFoundException");

    // Deleting a database deletes its tables and their versions.
    ok(
        &api,
        "UpdateTable",
        json!({"DatabaseName": "lake", "TableInput": table_input("events", &[])}),
    )
    .await;
    ok(&api, "DeleteDatabase", json!({"Name": "LAKE"})).await;
    let (code, _) = err(&api, "GetDatabase", json!({"Name": "lake"})).await;
    assert_eq!(code, "EntityNotFoundException");
    ok(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "lake"}}),
    )
    .await;
    let (code, msg) = err(
        &api,
        "GetTable",
        json!({"DatabaseName": "lake", "Name": "events"}),
    )
    .await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("EntityNotFoundException", "Table events not found.")
    );
    {
        let state = api.service().inner.state.read();
        assert!(state.tables.is_empty() && state.versions.is_empty());
    }
    let (code, _) = err(&api, "DeleteDatabase", json!({"Name": "gone"})).await;
    assert_eq!(code, "EntityNotFoundException");
}

#[tokio::test]
async fn tables_echo_their_definition_and_glue_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, api) = open(dir.path());
    setup(&api).await;
    let t = ok(
        &api,
        "GetTable",
        json!({"DatabaseName": "lake", "Name": "EVENTS"}),
    )
    .await["Table"]
        .clone();
    assert_eq!(t["Name"], "events");
    assert_eq!(t["DatabaseName"], "lake");
    assert_eq!(t["CreatedBy"], ALICE);
    assert_eq!(t["IsRegisteredWithLakeFormation"], false);
    assert_eq!(t["CatalogId"], "000000000000");
    assert_eq!(t["VersionId"], "0");
    assert_eq!(t["TableType"], "EXTERNAL_TABLE");
    assert_eq!(t["CreateTime"], t["UpdateTime"]);
    assert_eq!(t["Parameters"], json!({"classification": "parquet"}));
    assert_eq!(
        t["PartitionKeys"],
        json!([{"Name": "dt", "Type": "string"}])
    );
    let sd = &t["StorageDescriptor"];
    assert_eq!(
        sd["Columns"][0],
        json!({"Name": "id", "Type": "bigint", "Comment": "id column"})
    );
    assert_eq!(sd["Location"], "s3://lake/events/");
    assert_eq!(sd["SerdeInfo"]["Parameters"]["serialization.format"], "1");

    // Any type string is accepted: the converter is what parses it.
    ok(
        &api,
        "CreateTable",
        json!({"DatabaseName": "lake", "TableInput": table_input("odd", &[("x", "not a type<")])}),
    )
    .await;

    let (code, msg) = err(
        &api,
        "CreateTable",
        json!({"DatabaseName": "lake", "TableInput": table_input("Events", &[])}),
    )
    .await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("AlreadyExistsException", "Table already exists.")
    );
    let (code, msg) = err(
        &api,
        "CreateTable",
        json!({"DatabaseName": "nope", "TableInput": table_input("t", &[])}),
    )
    .await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("EntityNotFoundException", "Database nope not found.")
    );
    let (code, _) = err(&api, "CreateTable", json!({"DatabaseName": "lake"})).await;
    assert_eq!(code, "InvalidInputException");
    let (code, _) = err(&api, "CreateTable", json!({"DatabaseName": "lake", "TableInput": table_input("t", &[]), "PartitionIndexes": [{"Keys": ["dt"], "IndexName": "i"}]})).await;
    assert_eq!(code, "InvalidInputException");
    let (code, _) = err(
        &api,
        "GetTable",
        json!({"DatabaseName": "nope", "Name": "events"}),
    )
    .await;
    assert_eq!(code, "EntityNotFoundException");

    ok(
        &api,
        "DeleteTable",
        json!({"DatabaseName": "lake", "Name": "Events"}),
    )
    .await;
    let (code, msg) = err(
        &api,
        "DeleteTable",
        json!({"DatabaseName": "lake", "Name": "events"}),
    )
    .await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("EntityNotFoundException", "Table events not found.")
    );
}

#[tokio::test]
async fn get_tables_filters_by_expression_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, api) = open(dir.path());
    ok(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "db"}}),
    )
    .await;
    ok(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "other"}}),
    )
    .await;
    ok(
        &api,
        "CreateTable",
        json!({"DatabaseName": "other", "TableInput": table_input("events_x", &[])}),
    )
    .await;
    for i in 0..7 {
        ok(
            &api,
            "CreateTable",
            json!({"DatabaseName": "db", "TableInput": table_input(&format!("events_{i}"), &[])}),
        )
        .await;
    }
    ok(
        &api,
        "CreateTable",
        json!({"DatabaseName": "db", "TableInput": table_input("clicks", &[])}),
    )
    .await;
    let names = |v: &Value| -> Vec<String> {
        v["TableList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["Name"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ok(&api, "GetTables", json!({"DatabaseName": "DB"})).await;
    assert_eq!(names(&all).len(), 8);
    assert!(all.get("NextToken").is_none());
    let some = ok(
        &api,
        "GetTables",
        json!({"DatabaseName": "db", "Expression": "events_*"}),
    )
    .await;
    assert_eq!(
        names(&some),
        (0..7).map(|i| format!("events_{i}")).collect::<Vec<_>>()
    );
    let alt = ok(
        &api,
        "GetTables",
        json!({"DatabaseName": "db", "Expression": "clicks|events_[12]"}),
    )
    .await;
    assert_eq!(names(&alt), vec!["clicks", "events_1", "events_2"]);

    let mut got = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = json!({"DatabaseName": "db", "Expression": "events.*", "MaxResults": 3});
        if let Some(t) = &token {
            req["NextToken"] = json!(t);
        }
        let page = ok(&api, "GetTables", req).await;
        pages += 1;
        got.extend(names(&page));
        match page.get("NextToken").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        got,
        (0..7).map(|i| format!("events_{i}")).collect::<Vec<_>>()
    );

    let only = ok(
        &api,
        "GetTables",
        json!({"DatabaseName": "db", "Expression": "clicks", "AttributesToGet": ["NAME"]}),
    )
    .await;
    assert_eq!(only["TableList"], json!([{"Name": "clicks"}]));
    let (code, _) = err(
        &api,
        "GetTables",
        json!({"DatabaseName": "db", "Expression": "(unclosed"}),
    )
    .await;
    assert_eq!(code, "InvalidInputException");
    let (code, _) = err(
        &api,
        "GetTables",
        json!({"DatabaseName": "db", "NextToken": "***"}),
    )
    .await;
    assert_eq!(code, "InvalidInputException");
    let (code, msg) = err(&api, "GetTables", json!({"DatabaseName": "missing"})).await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("EntityNotFoundException", "Database missing not found.")
    );

    // Databases page the same way.
    for i in 0..3 {
        ok(
            &api,
            "CreateDatabase",
            json!({"DatabaseInput": {"Name": format!("z{i}")}}),
        )
        .await;
    }
    let p1 = ok(&api, "GetDatabases", json!({"MaxResults": 4})).await;
    let dbs = |v: &Value| -> Vec<String> {
        v["DatabaseList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["Name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(dbs(&p1), vec!["db", "other", "z0", "z1"]);
    let p2 = ok(
        &api,
        "GetDatabases",
        json!({"MaxResults": 4, "NextToken": p1["NextToken"]}),
    )
    .await;
    assert_eq!(dbs(&p2), vec!["z2"]);
    assert!(p2.get("NextToken").is_none());
}

#[tokio::test]
async fn updates_archive_versions_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ctx, api) = open(dir.path());
        setup(&api).await;
        ok(&api, "UpdateTable", json!({"DatabaseName": "lake", "TableInput": table_input("events", &[("id", "bigint"), ("msg", "string"), ("v1", "int")])})).await;
        ok(&api, "UpdateTable", json!({"DatabaseName": "lake", "VersionId": "1", "TableInput": table_input("events", &[("v2", "int")])})).await;
        // Not archived: version 2 is replaced by 3 without a trace.
        ok(&api, "UpdateTable", json!({"DatabaseName": "lake", "SkipArchive": true, "TableInput": table_input("events", &[("v3", "int")])})).await;
        let (code, _) = err(&api, "UpdateTable", json!({"DatabaseName": "lake", "VersionId": "1", "TableInput": table_input("events", &[])})).await;
        assert_eq!(code, "ConcurrentModificationException");
        let (code, _) = err(
            &api,
            "UpdateTable",
            json!({"DatabaseName": "lake", "TableInput": table_input("nope", &[])}),
        )
        .await;
        assert_eq!(code, "EntityNotFoundException");
        ctx.close().await;
    }
    let (_ctx, api) = open(dir.path());
    let t = ok(
        &api,
        "GetTable",
        json!({"DatabaseName": "lake", "Name": "events"}),
    )
    .await["Table"]
        .clone();
    assert_eq!(t["VersionId"], "3");
    assert_eq!(t["StorageDescriptor"]["Columns"][0]["Name"], "v3");
    assert!(t["UpdateTime"].as_f64() >= t["CreateTime"].as_f64());
    let vs = ok(
        &api,
        "GetTableVersions",
        json!({"DatabaseName": "lake", "TableName": "events"}),
    )
    .await;
    let ids: Vec<&str> = vs["TableVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["VersionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["0", "1", "3"]);
    for v in vs["TableVersions"].as_array().unwrap() {
        assert_eq!(v["Table"]["VersionId"], v["VersionId"]);
    }
    let v0 = ok(
        &api,
        "GetTableVersion",
        json!({"DatabaseName": "lake", "TableName": "events", "VersionId": "0"}),
    )
    .await;
    assert_eq!(
        v0["TableVersion"]["Table"]["StorageDescriptor"]["Columns"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let cur = ok(
        &api,
        "GetTableVersion",
        json!({"DatabaseName": "lake", "TableName": "events"}),
    )
    .await;
    assert_eq!(cur["TableVersion"]["VersionId"], "3");
    let (code, _) = err(
        &api,
        "GetTableVersion",
        json!({"DatabaseName": "lake", "TableName": "events", "VersionId": "2"}),
    )
    .await;
    assert_eq!(code, "EntityNotFoundException");

    let p1 = ok(
        &api,
        "GetTableVersions",
        json!({"DatabaseName": "lake", "TableName": "events", "MaxResults": 2}),
    )
    .await;
    assert_eq!(p1["TableVersions"].as_array().unwrap().len(), 2);
    let p2 = ok(&api, "GetTableVersions", json!({"DatabaseName": "lake", "TableName": "events", "MaxResults": 2, "NextToken": p1["NextToken"]})).await;
    assert_eq!(p2["TableVersions"][0]["VersionId"], "3");

    ok(
        &api,
        "DeleteTableVersion",
        json!({"DatabaseName": "lake", "TableName": "events", "VersionId": "1"}),
    )
    .await;
    let (code, _) = err(
        &api,
        "DeleteTableVersion",
        json!({"DatabaseName": "lake", "TableName": "events", "VersionId": "1"}),
    )
    .await;
    assert_eq!(code, "EntityNotFoundException");
    let (code, _) = err(
        &api,
        "DeleteTableVersion",
        json!({"DatabaseName": "lake", "TableName": "events", "VersionId": "3"}),
    )
    .await;
    assert_eq!(code, "InvalidInputException");
    let vs = ok(
        &api,
        "GetTableVersions",
        json!({"DatabaseName": "lake", "TableName": "events"}),
    )
    .await;
    assert_eq!(vs["TableVersions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn batch_delete_reports_missing_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, api) = open(dir.path());
    setup(&api).await;
    ok(
        &api,
        "CreateTable",
        json!({"DatabaseName": "lake", "TableInput": table_input("b", &[])}),
    )
    .await;
    ok(
        &api,
        "UpdateTable",
        json!({"DatabaseName": "lake", "TableInput": table_input("b", &[])}),
    )
    .await;
    let out = ok(
        &api,
        "BatchDeleteTable",
        json!({"DatabaseName": "lake", "TablesToDelete": ["EVENTS", "b", "ghost"]}),
    )
    .await;
    assert_eq!(
        out["Errors"],
        json!([{"TableName": "ghost", "ErrorDetail": {"ErrorCode": "EntityNotFoundException", "ErrorMessage": "Table ghost not found."}}])
    );
    assert_eq!(
        ok(&api, "GetTables", json!({"DatabaseName": "lake"})).await["TableList"],
        json!([])
    );
    assert!(api.service().inner.state.read().versions.is_empty());
    let (code, _) = err(
        &api,
        "BatchDeleteTable",
        json!({"DatabaseName": "nope", "TablesToDelete": ["a"]}),
    )
    .await;
    assert_eq!(code, "EntityNotFoundException");
}

#[tokio::test]
async fn authorization_names_catalog_database_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, api) = open(dir.path());
    setup(&api).await;
    let a = "arn:aws:glue:us-east-1:000000000000";
    let rec = Recorder::default();
    call_with(
        &api,
        &rec,
        "GetTable",
        json!({"DatabaseName": "Lake", "Name": "Events"}),
    )
    .await
    .unwrap();
    call_with(&api, &rec, "GetTables", json!({"DatabaseName": "lake"}))
        .await
        .unwrap();
    call_with(&api, &rec, "GetDatabases", json!({}))
        .await
        .unwrap();
    call_with(&api, &rec, "GetDatabase", json!({"Name": "lake"}))
        .await
        .unwrap();
    call_with(
        &api,
        &rec,
        "BatchDeleteTable",
        json!({"DatabaseName": "lake", "TablesToDelete": ["x", "X", "y"]}),
    )
    .await
    .unwrap();
    call_with(
        &api,
        &rec,
        "CreateTable",
        json!({"DatabaseName": "lake", "TableInput": {"Name": "New"}}),
    )
    .await
    .unwrap();
    assert_eq!(
        *rec.seen.lock(),
        vec![
            vec![
                format!("{a}:catalog"),
                format!("{a}:database/lake"),
                format!("{a}:table/lake/events")
            ],
            vec![
                format!("{a}:catalog"),
                format!("{a}:database/lake"),
                format!("{a}:table/lake/*")
            ],
            vec![format!("{a}:catalog"), format!("{a}:database/*")],
            vec![format!("{a}:catalog"), format!("{a}:database/lake")],
            vec![
                format!("{a}:catalog"),
                format!("{a}:database/lake"),
                format!("{a}:table/lake/x"),
                format!("{a}:table/lake/y")
            ],
            vec![
                format!("{a}:catalog"),
                format!("{a}:database/lake"),
                format!("{a}:table/lake/new")
            ],
        ]
    );
    // A refusal stops the operation before it acts.
    let deny = Recorder {
        deny: Some("table/lake/events"),
        ..Recorder::default()
    };
    let e = call_with(
        &api,
        &deny,
        "DeleteTable",
        json!({"DatabaseName": "lake", "Name": "events"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "AccessDeniedException");
    ok(
        &api,
        "GetTable",
        json!({"DatabaseName": "lake", "Name": "events"}),
    )
    .await;

    // The server's own catalog id is accepted; another account's is not.
    ok(
        &api,
        "GetTable",
        json!({"CatalogId": "000000000000", "DatabaseName": "lake", "Name": "events"}),
    )
    .await;
    let rec = Recorder::default();
    let e = call_with(
        &api,
        &rec,
        "GetDatabase",
        json!({"CatalogId": "111122223333", "Name": "lake"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "AccessDeniedException");
    assert_eq!(
        rec.seen.lock()[0][0],
        "arn:aws:glue:us-east-1:111122223333:catalog"
    );
    assert!(!api.supports("CreatePartition"));
    assert_eq!(api.spec().target_prefix.as_deref(), Some("AWSGlue"));
    assert_eq!(api.spec().signing_name, "glue");
}

/// Starts a call, lets it reach its commit, then drops it, as the server
/// drops a request whose client has gone.
async fn drop_mid_flight(api: &GlueApi, op: &str, input: Value) {
    let mut call = Box::pin(call(api, op, input));
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    assert!(
        first.is_pending(),
        "{op} finished in one poll: nothing dropped"
    );
    drop(call);
    // Whatever the dropped call started ends before the next change does.
    drop(api.service().inner.control.clone().lock_owned().await);
}

fn assert_memory_is_disk(ctx: &ServiceContext, api: &GlueApi) {
    let disk = State::load(&ctx.catalog).unwrap();
    assert_eq!(*api.service().inner.state.read(), disk);
}

#[tokio::test]
async fn a_dropped_request_still_updates_memory_with_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ctx, api) = open(dir.path());
        setup(&api).await;
        drop_mid_flight(
            &api,
            "CreateDatabase",
            json!({"DatabaseInput": {"Name": "other"}}),
        )
        .await;
        assert_memory_is_disk(&ctx, &api);
        ok(&api, "GetDatabase", json!({"Name": "other"})).await;

        drop_mid_flight(
            &api,
            "UpdateTable",
            json!({"DatabaseName": "lake", "TableInput": table_input("events", &[("v1", "int")])}),
        )
        .await;
        assert_memory_is_disk(&ctx, &api);
        let t = ok(
            &api,
            "GetTable",
            json!({"DatabaseName": "lake", "Name": "events"}),
        )
        .await;
        assert_eq!(t["Table"]["VersionId"], "1");
        // The next update starts from the version the dropped one committed.
        ok(&api, "UpdateTable", json!({"DatabaseName": "lake", "VersionId": "1", "TableInput": table_input("events", &[("v2", "int")])})).await;

        drop_mid_flight(&api, "DeleteDatabase", json!({"Name": "lake"})).await;
        assert_memory_is_disk(&ctx, &api);
        let (code, _) = err(
            &api,
            "GetTable",
            json!({"DatabaseName": "lake", "Name": "events"}),
        )
        .await;
        assert_eq!(code, "EntityNotFoundException");
        ctx.close().await;
    }
    // A dropped call's blocking task may still hold the catalog for a
    // moment after it gave the control lock back.
    let ctx = {
        let mut tries = 0;
        loop {
            match ServiceContext::open(ContextConfig::new(dir.path())) {
                Ok(ctx) => break ctx,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the catalog stays open: {e}"),
            }
        }
    };
    let api = GlueApi::new(Glue::open_in(&ctx).unwrap());
    assert_memory_is_disk(&ctx, &api);
    let dbs = ok(&api, "GetDatabases", json!({})).await;
    assert_eq!(dbs["DatabaseList"].as_array().unwrap().len(), 1);
    assert_eq!(dbs["DatabaseList"][0]["Name"], "other");
}

#[tokio::test]
async fn loading_drops_tables_and_versions_of_deleted_databases() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ctx, api) = open(dir.path());
        setup(&api).await;
        ok(
            &api,
            "UpdateTable",
            json!({"DatabaseName": "lake", "TableInput": table_input("events", &[("v1", "int")])}),
        )
        .await;
        // What a catalog without DeleteDatabase's cascade, or edited by
        // hand, could hold: a table and a version of a database that is
        // gone, and a version of a table that is gone.
        let orphan = |db: &str, table: &str, version: u64| TableRec {
            database: db.into(),
            name: table.into(),
            input: serde_json::Map::new(),
            created_ms: 0,
            updated_ms: 0,
            created_by: ALICE.into(),
            version,
        };
        let t = serde_json::to_vec(&orphan("gone", "t", 3)).unwrap();
        let v = serde_json::to_vec(&orphan("gone", "t", 2)).unwrap();
        let w = serde_json::to_vec(&orphan("lake", "dropped", 0)).unwrap();
        ctx.catalog
            .write_documents(
                crate::SPACE,
                &[
                    (b"t\0gone\0t".as_slice(), Some(t.as_slice())),
                    (
                        format!("v\0gone\0t\0{:020}", 2).as_bytes(),
                        Some(v.as_slice()),
                    ),
                    (
                        format!("v\0lake\0dropped\0{:020}", 0).as_bytes(),
                        Some(w.as_slice()),
                    ),
                ],
            )
            .unwrap();
        ctx.close().await;
    }
    let (ctx, api) = open(dir.path());
    {
        let state = api.service().inner.state.read();
        assert_eq!(state.tables.len(), 1);
        assert_eq!(state.versions.len(), 1);
        assert_eq!(state.archived, 1);
    }
    // Gone from disk too, not only skipped.
    let keys: Vec<String> = ctx
        .catalog
        .documents(crate::SPACE)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).replace('\0', "/"))
        .collect();
    assert_eq!(
        keys,
        vec![
            "d/lake".to_string(),
            "t/lake/events".to_string(),
            format!("v/lake/events/{:020}", 0)
        ]
    );
    // A database created under the old name starts empty.
    ok(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "gone"}}),
    )
    .await;
    let ts = ok(&api, "GetTables", json!({"DatabaseName": "gone"})).await;
    assert_eq!(ts["TableList"], json!([]));
}

#[tokio::test]
async fn quotas_refuse_what_would_exceed_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = GlueConfig {
        max_databases: 2,
        max_tables_per_database: 2,
        max_tables: 3,
        max_versions_per_table: 3,
        max_versions: 6,
        ..GlueConfig::default()
    };
    let (_ctx, api) = open_with(dir.path(), config);
    let limit = "ResourceNumberLimitExceededException";
    ok(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "a"}}),
    )
    .await;
    ok(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "b"}}),
    )
    .await;
    let (code, _) = err(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "c"}}),
    )
    .await;
    assert_eq!(code, limit);

    let create = |db: &str, t: &str| json!({"DatabaseName": db, "TableInput": table_input(t, &[("id", "int")])});
    ok(&api, "CreateTable", create("a", "t1")).await;
    ok(&api, "CreateTable", create("a", "t2")).await;
    let (code, m) = err(&api, "CreateTable", create("a", "t3")).await;
    assert_eq!(code, limit);
    assert!(m.contains("database a"), "{m}");
    ok(&api, "CreateTable", create("b", "t1")).await;
    let (code, m) = err(&api, "CreateTable", create("b", "t2")).await;
    assert_eq!(code, limit);
    assert!(m.contains("account"), "{m}");

    // Versions of a table: the current one and two archived fill it.
    let update =
        |t: &str| json!({"DatabaseName": "a", "TableInput": table_input(t, &[("id", "bigint")])});
    ok(&api, "UpdateTable", update("t1")).await;
    ok(&api, "UpdateTable", update("t1")).await;
    let (code, m) = err(&api, "UpdateTable", update("t1")).await;
    assert_eq!(code, limit);
    assert!(m.contains("versions of table t1"), "{m}");
    let t = ok(&api, "GetTable", json!({"DatabaseName": "a", "Name": "t1"})).await;
    assert_eq!(t["Table"]["VersionId"], "2");
    // SkipArchive replaces the current version and adds none.
    let mut skip = update("t1");
    skip["SkipArchive"] = json!(true);
    ok(&api, "UpdateTable", skip).await;
    ok(
        &api,
        "DeleteTableVersion",
        json!({"DatabaseName": "a", "TableName": "t1", "VersionId": "0"}),
    )
    .await;
    ok(&api, "UpdateTable", update("t1")).await;

    // The account: 3 tables + 3 archived versions (t1's 1, 3 and t2's 0).
    ok(&api, "UpdateTable", update("t2")).await;
    let (code, m) = err(&api, "UpdateTable", update("t2")).await;
    assert_eq!(code, limit);
    assert!(m.contains("table versions in the account"), "{m}");
}

#[tokio::test]
async fn oversized_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = GlueConfig {
        max_input_bytes: 4096,
        ..GlueConfig::default()
    };
    let (_ctx, api) = open_with(dir.path(), config);
    setup(&api).await;
    let big = "x".repeat(5000);
    let (code, _) = err(
        &api,
        "CreateDatabase",
        json!({"DatabaseInput": {"Name": "big", "Description": big}}),
    )
    .await;
    assert_eq!(code, "InvalidInputException");
    let mut ti = table_input("big", &[("id", "int")]);
    ti["Description"] = json!(big);
    let (code, m) = err(
        &api,
        "CreateTable",
        json!({"DatabaseName": "lake", "TableInput": ti.clone()}),
    )
    .await;
    assert_eq!(code, "InvalidInputException");
    assert!(m.contains("TableInput"), "{m}");
    ti["Name"] = json!("events");
    let (code, _) = err(
        &api,
        "UpdateTable",
        json!({"DatabaseName": "lake", "TableInput": ti}),
    )
    .await;
    assert_eq!(code, "InvalidInputException");
    let t = ok(
        &api,
        "GetTable",
        json!({"DatabaseName": "lake", "Name": "events"}),
    )
    .await;
    assert_eq!(t["Table"]["VersionId"], "0");
}

/// Every entry of a listing, page by page, and how many pages it took.
async fn all_pages(
    api: &GlueApi,
    op: &str,
    input: Value,
    list: &str,
    key: &str,
) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut pages = 0;
    let mut input = input;
    loop {
        let out = ok(api, op, input.clone()).await;
        pages += 1;
        for e in out[list].as_array().unwrap() {
            names.push(e[key].as_str().unwrap().to_string());
        }
        match out.get("NextToken") {
            Some(t) => input["NextToken"] = t.clone(),
            None => return (names, pages),
        }
    }
}

#[tokio::test]
async fn pages_end_early_at_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    // Each entry below weighs about 3,000 bytes: one per page.
    let config = GlueConfig {
        page_budget_bytes: 5000,
        ..GlueConfig::default()
    };
    let (_ctx, api) = open_with(dir.path(), config);
    let desc = "d".repeat(2000);
    for db in ["a", "b", "c"] {
        ok(
            &api,
            "CreateDatabase",
            json!({"DatabaseInput": {"Name": db, "Description": desc}}),
        )
        .await;
    }
    let (dbs, pages) = all_pages(&api, "GetDatabases", json!({}), "DatabaseList", "Name").await;
    assert_eq!(dbs, vec!["a", "b", "c"]);
    assert_eq!(pages, 3);

    let ti = |name: &str| {
        let mut t = table_input(name, &[("id", "int")]);
        t["Description"] = json!(desc);
        t
    };
    for t in ["t1", "t2", "t3", "t4"] {
        ok(
            &api,
            "CreateTable",
            json!({"DatabaseName": "b", "TableInput": ti(t)}),
        )
        .await;
    }
    // Tables of the neighbouring databases stay out of b's pages.
    ok(
        &api,
        "CreateTable",
        json!({"DatabaseName": "a", "TableInput": ti("t0")}),
    )
    .await;
    ok(
        &api,
        "CreateTable",
        json!({"DatabaseName": "c", "TableInput": ti("t0")}),
    )
    .await;
    let (tables, pages) = all_pages(
        &api,
        "GetTables",
        json!({"DatabaseName": "b"}),
        "TableList",
        "Name",
    )
    .await;
    assert_eq!(tables, vec!["t1", "t2", "t3", "t4"]);
    assert_eq!(pages, 4);
    let (tables, _) = all_pages(
        &api,
        "GetTables",
        json!({"DatabaseName": "b", "Expression": "t[24]"}),
        "TableList",
        "Name",
    )
    .await;
    assert_eq!(tables, vec!["t2", "t4"]);

    for _ in 0..2 {
        ok(
            &api,
            "UpdateTable",
            json!({"DatabaseName": "b", "TableInput": ti("t1")}),
        )
        .await;
    }
    let (versions, pages) = all_pages(
        &api,
        "GetTableVersions",
        json!({"DatabaseName": "b", "TableName": "t1"}),
        "TableVersions",
        "VersionId",
    )
    .await;
    assert_eq!(versions, vec!["0", "1", "2"]);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn latest_names_the_current_version_and_ambiguous_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, api) = open(dir.path());
    setup(&api).await;
    ok(
        &api,
        "UpdateTable",
        json!({"DatabaseName": "lake", "TableInput": table_input("events", &[("v1", "int")])}),
    )
    .await;
    let v = ok(
        &api,
        "GetTableVersion",
        json!({"DatabaseName": "lake", "TableName": "events", "VersionId": "LATEST"}),
    )
    .await;
    assert_eq!(v["TableVersion"]["VersionId"], "1");
    assert_eq!(
        v["TableVersion"]["Table"]["StorageDescriptor"]["Columns"][0]["Name"],
        "v1"
    );

    for name in ["a/b", "a*", "a?b", "a:b"] {
        let (code, _) = err(
            &api,
            "CreateDatabase",
            json!({"DatabaseInput": {"Name": name}}),
        )
        .await;
        assert_eq!(code, "InvalidInputException", "{name}");
        let (code, _) = err(
            &api,
            "CreateTable",
            json!({"DatabaseName": "lake", "TableInput": table_input(name, &[])}),
        )
        .await;
        assert_eq!(code, "InvalidInputException", "{name}");
    }
}
