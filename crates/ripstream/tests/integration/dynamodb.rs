//! The DynamoDB-compatible lease tables, driven by the official
//! aws-sdk-dynamodb against the real binary.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeAction, AttributeDefinition, AttributeValue, AttributeValueUpdate, BillingMode,
    ExpectedAttributeValue, KeySchemaElement, KeyType, ReturnValue, ScalarAttributeType,
};

use crate::support::TestServer;

pub fn dynamo(url: &str) -> Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// CreateTable as the KCL sends it: on-demand, `leaseKey` as hash key.
fn lease_table_request(
    c: &Client,
    name: &str,
) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
    c.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
}

async fn create_lease_table(c: &Client, name: &str) {
    let out = lease_table_request(c, name).send().await.unwrap();
    let desc = out.table_description().unwrap();
    assert_eq!(desc.table_name(), Some(name));
    assert_eq!(
        desc.table_arn(),
        Some(format!("arn:aws:dynamodb:us-east-1:000000000000:table/{name}").as_str())
    );
}

#[tokio::test]
async fn lease_table_lifecycle_with_both_condition_styles() {
    let mut server = TestServer::start();
    let c = dynamo(&server.url());
    create_lease_table(&c, "app-leases").await;
    let again = lease_table_request(&c, "app-leases")
        .send()
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some("ResourceInUseException"));
    let table = c
        .describe_table()
        .table_name("app-leases")
        .send()
        .await
        .unwrap();
    assert_eq!(
        table.table().unwrap().table_status().unwrap().as_str(),
        "ACTIVE"
    );

    // Create a lease only if absent (ConditionExpression).
    let create = || {
        c.put_item()
            .table_name("app-leases")
            .item("leaseKey", s("shardId-000000000000"))
            .item("leaseCounter", n(0))
            .item("checkpoint", s("TRIM_HORIZON"))
            .item(
                "parentShardId",
                AttributeValue::Ss(vec!["shardId-a".into(), "shardId-b".into()]),
            )
            .condition_expression("attribute_not_exists(leaseKey)")
    };
    create().send().await.unwrap();
    let err = create().send().await.unwrap_err();
    assert!(
        err.as_service_error()
            .unwrap()
            .is_conditional_check_failed_exception(),
        "{err:?}"
    );

    // Take it the KCL 2.x way: Expected + AttributeUpdates.
    let take = |owner: &str, counter: i64| {
        c.update_item()
            .table_name("app-leases")
            .key("leaseKey", s("shardId-000000000000"))
            .expected(
                "leaseCounter",
                ExpectedAttributeValue::builder().value(n(counter)).build(),
            )
            .attribute_updates(
                "leaseOwner",
                AttributeValueUpdate::builder()
                    .value(s(owner))
                    .action(AttributeAction::Put)
                    .build(),
            )
            .attribute_updates(
                "leaseCounter",
                AttributeValueUpdate::builder()
                    .value(n(1))
                    .action(AttributeAction::Add)
                    .build(),
            )
            .return_values(ReturnValue::AllNew)
    };
    let out = take("worker-1", 0).send().await.unwrap();
    assert_eq!(out.attributes().unwrap()["leaseCounter"], n(1));
    let lost = take("worker-2", 0).send().await.unwrap_err();
    assert_eq!(lost.code(), Some("ConditionalCheckFailedException"));

    // Renew with expressions; a stale owner cannot.
    let renew = |owner: &str| {
        c.update_item()
            .table_name("app-leases")
            .key("leaseKey", s("shardId-000000000000"))
            .update_expression("SET #c = #c + :one")
            .condition_expression("#o = :me AND attribute_exists(leaseKey)")
            .expression_attribute_names("#c", "leaseCounter")
            .expression_attribute_names("#o", "leaseOwner")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":me", s(owner))
            .return_values(ReturnValue::UpdatedNew)
    };
    let out = renew("worker-1").send().await.unwrap();
    assert_eq!(out.attributes().unwrap()["leaseCounter"], n(2));
    assert_eq!(
        renew("worker-2").send().await.unwrap_err().code(),
        Some("ConditionalCheckFailedException")
    );

    // Mixing styles is a ValidationException.
    let mixed = c
        .update_item()
        .table_name("app-leases")
        .key("leaseKey", s("shardId-000000000000"))
        .update_expression("SET a = :v")
        .expression_attribute_values(":v", s("x"))
        .expected(
            "leaseCounter",
            ExpectedAttributeValue::builder().value(n(2)).build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(mixed.code(), Some("ValidationException"));
    assert!(
        mixed
            .message()
            .unwrap()
            .contains("Can not use both expression and non-expression")
    );

    // More leases, then a paged scan sees each once.
    for i in 1..=7 {
        c.put_item()
            .table_name("app-leases")
            .item("leaseKey", s(&format!("shardId-{i:012}")))
            .item("leaseCounter", n(0))
            .send()
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    let mut pages = 0;
    loop {
        let page = c
            .scan()
            .table_name("app-leases")
            .limit(3)
            .set_exclusive_start_key(start.take())
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        pages += 1;
        for item in page.items() {
            keys.push(item["leaseKey"].as_s().unwrap().clone());
        }
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 8);

    // Everything is durable across kill -9.
    server.kill9();
    server.restart();
    let c = dynamo(&server.url());
    let got = c
        .get_item()
        .table_name("app-leases")
        .key("leaseKey", s("shardId-000000000000"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = got.item().unwrap();
    assert_eq!(item["leaseOwner"], s("worker-1"));
    assert_eq!(item["leaseCounter"], n(2));
    let mut parents = item["parentShardId"].as_ss().unwrap().clone();
    parents.sort();
    assert_eq!(parents, ["shardId-a", "shardId-b"]);

    // Delete only while owned; then the table itself.
    let del = c
        .delete_item()
        .table_name("app-leases")
        .key("leaseKey", s("shardId-000000000000"))
        .condition_expression("leaseOwner = :me")
        .expression_attribute_values(":me", s("worker-2"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(del.code(), Some("ConditionalCheckFailedException"));
    let tables = c.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names(), ["app-leases"]);
    c.delete_table()
        .table_name("app-leases")
        .send()
        .await
        .unwrap();
    let gone = c
        .describe_table()
        .table_name("app-leases")
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error()
            .unwrap()
            .is_resource_not_found_exception()
    );
}

#[tokio::test]
async fn only_one_of_many_racing_takers_wins() {
    let server = TestServer::start();
    let c = dynamo(&server.url());
    create_lease_table(&c, "race").await;
    c.put_item()
        .table_name("race")
        .item("leaseKey", s("shardId-0"))
        .item("leaseCounter", n(7))
        .send()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.update_item()
                .table_name("race")
                .key("leaseKey", s("shardId-0"))
                .update_expression("SET leaseOwner = :w, leaseCounter = leaseCounter + :one")
                .condition_expression("leaseCounter = :seen")
                .expression_attribute_values(":w", s(&format!("worker-{w}")))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":seen", n(7))
                .send()
                .await
                .is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    let item = c
        .get_item()
        .table_name("race")
        .key("leaseKey", s("shardId-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(item.item().unwrap()["leaseCounter"], n(8));
}

#[tokio::test]
async fn errors_are_dynamodb_errors() {
    let server = TestServer::start();
    let c = dynamo(&server.url());
    let missing = c
        .get_item()
        .table_name("nope")
        .key("leaseKey", s("x"))
        .send()
        .await
        .unwrap_err();
    assert!(
        missing
            .as_service_error()
            .unwrap()
            .is_resource_not_found_exception()
    );
    let gone = c
        .describe_table()
        .table_name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        gone.message(),
        Some("Requested resource not found: Table: nope not found")
    );
    create_lease_table(&c, "tbl1").await;
    let wrong_key = c
        .get_item()
        .table_name("tbl1")
        .key("other", s("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(wrong_key.code(), Some("ValidationException"));
    assert_eq!(
        wrong_key.message(),
        Some("The provided key element does not match the schema")
    );
    let unused = c
        .put_item()
        .table_name("tbl1")
        .item("leaseKey", s("x"))
        .condition_expression("attribute_not_exists(leaseKey)")
        .expression_attribute_values(":unused", s("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(unused.code(), Some("ValidationException"));
    let bad_limit = c.list_tables().limit(0).send().await.unwrap_err();
    assert_eq!(bad_limit.code(), Some("ValidationException"));
    assert!(
        bad_limit
            .message()
            .unwrap()
            .contains("Member must have value greater than or equal to 1"),
        "{bad_limit:?}"
    );
}

/// What KCL 3.x does: adds the `LeaseOwnerToLeaseKeyIndex` GSI with
/// UpdateTable, queries it per worker, and scans the table in parallel segments.
#[tokio::test]
async fn kcl3_index_query_and_parallel_scan() {
    use aws_sdk_dynamodb::types::{
        CreateGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate, IndexStatus, Projection,
        ProjectionType,
    };
    let server = TestServer::start();
    let c = dynamo(&server.url());
    create_lease_table(&c, "kcl3").await;
    for i in 0..30 {
        let mut put = c
            .put_item()
            .table_name("kcl3")
            .item("leaseKey", s(&format!("shardId-{i:012}")))
            .item("leaseCounter", n(i));
        if i % 3 != 0 {
            put = put.item("leaseOwner", s(&format!("worker-{}", i % 3)));
        }
        put.send().await.unwrap();
    }
    let key = |name: &str, ty: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(ty)
            .build()
            .unwrap()
    };
    let def = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let out = c
        .update_table()
        .table_name("kcl3")
        .attribute_definitions(def("leaseOwner"))
        .attribute_definitions(def("leaseKey"))
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder()
                .create(
                    CreateGlobalSecondaryIndexAction::builder()
                        .index_name("LeaseOwnerToLeaseKeyIndex")
                        .key_schema(key("leaseOwner", KeyType::Hash))
                        .key_schema(key("leaseKey", KeyType::Range))
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::KeysOnly)
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let gsi = &out.table_description().unwrap().global_secondary_indexes()[0];
    assert_eq!(gsi.index_status(), Some(&IndexStatus::Active));
    let mut keys = Vec::new();
    let mut start = None;
    loop {
        let page = c
            .query()
            .table_name("kcl3")
            .index_name("LeaseOwnerToLeaseKeyIndex")
            .key_condition_expression("leaseOwner = :leaseOwner")
            .expression_attribute_values(":leaseOwner", s("worker-1"))
            .limit(4)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        for item in page.items() {
            assert!(
                item.get("leaseCounter").is_none(),
                "KEYS_ONLY projects keys only"
            );
            keys.push(item["leaseKey"].as_s().unwrap().clone());
        }
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    assert_eq!(keys.len(), 10);
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "sorted by the range key"
    );
    let consistent = c
        .query()
        .table_name("kcl3")
        .index_name("LeaseOwnerToLeaseKeyIndex")
        .key_condition_expression("leaseOwner = :o")
        .expression_attribute_values(":o", s("worker-1"))
        .consistent_read(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(consistent.code(), Some("ValidationException"));
    // Parallel segments cover each item exactly once.
    let mut seen = Vec::new();
    for segment in 0..4 {
        let page = c
            .scan()
            .table_name("kcl3")
            .segment(segment)
            .total_segments(4)
            .send()
            .await
            .unwrap();
        seen.extend(
            page.items()
                .iter()
                .map(|i| i["leaseKey"].as_s().unwrap().clone()),
        );
    }
    assert_eq!(seen.len(), 30);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30);
}
