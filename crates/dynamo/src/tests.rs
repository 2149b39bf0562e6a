use std::sync::Arc;

use serde_json::{Value, json};

use crate::{Dynamo, DynamoConfig, DynamoError};

fn open(dir: &std::path::Path) -> Dynamo {
    let catalog = Arc::new(ripstream_meta::Catalog::open(&dir.join("meta.redb")).unwrap());
    Dynamo::open(
        catalog,
        DynamoConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        },
    )
    .unwrap()
}

fn lease_table(d: &Dynamo) {
    d.call(
        "CreateTable",
        &json!({"TableName": "leases", "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}]}),
    )
    .unwrap();
}

fn code(r: Result<Value, DynamoError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.code().rsplit('#').next().unwrap().to_string(),
    }
}

#[test]
fn tables_and_items_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = open(dir.path());
        lease_table(&d);
        d.call("PutItem", &json!({"TableName": "leases", "Item": {"leaseKey": {"S": "shardId-0"}, "leaseCounter": {"N": "1"}}}))
            .unwrap();
        assert_eq!(
            code(d.call(
                "CreateTable",
                &json!({"TableName": "leases", "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}]})
            )),
            "ResourceInUseException"
        );
    }
    let d = open(dir.path());
    let got = d
        .call("GetItem", &json!({"TableName": "leases", "Key": {"leaseKey": {"S": "shardId-0"}}, "ConsistentRead": true}))
        .unwrap();
    assert_eq!(got["Item"]["leaseCounter"], json!({"N": "1"}));
    let desc = d
        .call("DescribeTable", &json!({"TableName": "leases"}))
        .unwrap();
    assert_eq!(desc["Table"]["ItemCount"], json!(1));
    assert_eq!(desc["Table"]["TableStatus"], json!("ACTIVE"));
    d.call("DeleteTable", &json!({"TableName": "leases"}))
        .unwrap();
    assert_eq!(
        code(d.call("DescribeTable", &json!({"TableName": "leases"}))),
        "ResourceNotFoundException"
    );
    drop(d);
    let d = open(dir.path());
    assert_eq!(
        d.call("ListTables", &json!({})).unwrap()["TableNames"],
        json!([])
    );
}

#[test]
fn conditional_writes_in_both_styles() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    lease_table(&d);
    let create = json!({"TableName": "leases", "Item": {"leaseKey": {"S": "s-1"}, "leaseCounter": {"N": "0"}},
                        "Expected": {"leaseKey": {"Exists": false}}});
    d.call("PutItem", &create).unwrap();
    assert_eq!(
        code(d.call("PutItem", &create)),
        "ConditionalCheckFailedException"
    );
    // Take the lease the KCL 2.x way.
    let take = json!({"TableName": "leases", "Key": {"leaseKey": {"S": "s-1"}},
        "Expected": {"leaseCounter": {"Value": {"N": "0"}}},
        "AttributeUpdates": {"leaseOwner": {"Value": {"S": "w1"}, "Action": "PUT"},
                             "leaseCounter": {"Value": {"N": "1"}, "Action": "ADD"}},
        "ReturnValues": "ALL_NEW"});
    let out = d.call("UpdateItem", &take).unwrap();
    assert_eq!(out["Attributes"]["leaseCounter"], json!({"N": "1"}));
    assert_eq!(
        code(d.call("UpdateItem", &take)),
        "ConditionalCheckFailedException"
    );
    // Renew the expression way.
    let renew = json!({"TableName": "leases", "Key": {"leaseKey": {"S": "s-1"}},
        "UpdateExpression": "SET leaseCounter = leaseCounter + :one",
        "ConditionExpression": "leaseOwner = :me AND leaseCounter = :c",
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":me": {"S": "w1"}, ":c": {"N": "1"}},
        "ReturnValues": "UPDATED_NEW"});
    assert_eq!(
        d.call("UpdateItem", &renew).unwrap()["Attributes"],
        json!({"leaseCounter": {"N": "2"}})
    );
    let mut fail = renew.clone();
    fail["ReturnValuesOnConditionCheckFailure"] = json!("ALL_OLD");
    match d.call("UpdateItem", &fail) {
        Err(DynamoError::ConditionalCheckFailed { item: Some(item) }) => {
            assert_eq!(
                item["leaseOwner"],
                crate::value::AttributeValue::S("w1".into())
            )
        }
        other => panic!("{other:?}"),
    }
    // Mixing styles, unused values and key updates are refused.
    let mut mixed = renew.clone();
    mixed["Expected"] = json!({"leaseOwner": {"Value": {"S": "w1"}}});
    assert_eq!(code(d.call("UpdateItem", &mixed)), "ValidationException");
    let mut unused = renew.clone();
    unused["ExpressionAttributeValues"][":x"] = json!({"S": "x"});
    assert_eq!(code(d.call("UpdateItem", &unused)), "ValidationException");
    let key_update = json!({"TableName": "leases", "Key": {"leaseKey": {"S": "s-1"}},
        "UpdateExpression": "SET leaseKey = :v", "ExpressionAttributeValues": {":v": {"S": "x"}}});
    assert_eq!(
        code(d.call("UpdateItem", &key_update)),
        "ValidationException"
    );
    // Delete only if still owned.
    let del = json!({"TableName": "leases", "Key": {"leaseKey": {"S": "s-1"}},
        "ConditionExpression": "attribute_exists(leaseKey) AND leaseOwner = :me",
        "ExpressionAttributeValues": {":me": {"S": "w2"}}});
    assert_eq!(
        code(d.call("DeleteItem", &del)),
        "ConditionalCheckFailedException"
    );
    // Wrong key shapes.
    assert_eq!(
        code(d.call(
            "GetItem",
            &json!({"TableName": "leases", "Key": {"leaseKey": {"N": "1"}}})
        )),
        "ValidationException"
    );
    assert_eq!(
        code(d.call(
            "PutItem",
            &json!({"TableName": "leases", "Item": {"other": {"S": "1"}}})
        )),
        "ValidationException"
    );
    assert_eq!(
        code(d.call(
            "PutItem",
            &json!({"TableName": "leases", "Item": {"leaseKey": {"S": ""}}})
        )),
        "ValidationException"
    );
    assert_eq!(
        code(d.call(
            "GetItem",
            &json!({"TableName": "nope", "Key": {"leaseKey": {"S": "1"}}})
        )),
        "ResourceNotFoundException"
    );
}

#[test]
fn scan_and_query_page_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    d.call(
        "CreateTable",
        &json!({"TableName": "tbl", "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "h", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}],
                "AttributeDefinitions": [{"AttributeName": "h", "AttributeType": "S"}, {"AttributeName": "r", "AttributeType": "N"},
                                         {"AttributeName": "owner", "AttributeType": "S"}],
                "GlobalSecondaryIndexes": [{"IndexName": "byOwner", "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
                                            "Projection": {"ProjectionType": "KEYS_ONLY"}}]}),
    )
    .unwrap();
    for h in ["a", "b"] {
        for r in [10, 2, 33, 4] {
            let mut item = json!({"h": {"S": h}, "r": {"N": r.to_string()}, "v": {"S": "x"}});
            if r % 2 == 0 {
                item["owner"] = json!({"S": "w1"});
            }
            d.call("PutItem", &json!({"TableName": "tbl", "Item": item}))
                .unwrap();
        }
    }
    let q = d
        .call(
            "Query",
            &json!({"TableName": "tbl", "KeyConditionExpression": "h = :h AND r > :lo",
            "ExpressionAttributeValues": {":h": {"S": "a"}, ":lo": {"N": "3"}}}),
        )
        .unwrap();
    let rs: Vec<&str> = q["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["r"]["N"].as_str().unwrap())
        .collect();
    assert_eq!(rs, ["4", "10", "33"]);
    // Paging a scan visits every item once.
    let mut seen = Vec::new();
    let mut start: Option<Value> = None;
    loop {
        let mut req = json!({"TableName": "tbl", "Limit": 3});
        if let Some(s) = &start {
            req["ExclusiveStartKey"] = s.clone();
        }
        let page = d.call("Scan", &req).unwrap();
        for i in page["Items"].as_array().unwrap() {
            seen.push(format!(
                "{}{}",
                i["h"]["S"].as_str().unwrap(),
                i["r"]["N"].as_str().unwrap()
            ));
        }
        match page.get("LastEvaluatedKey") {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen.len(), 8);
    seen.dedup();
    assert_eq!(seen.len(), 8);
    // The GSI holds only items with the index key, projected to keys.
    let g = d
        .call(
            "Query",
            &json!({"TableName": "tbl", "IndexName": "byOwner", "KeyConditions":
            {"owner": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "w1"}]}}}),
        )
        .unwrap();
    assert_eq!(g["Count"], json!(6));
    assert!(g["Items"][0].get("v").is_none());
    let c = d
        .call(
            "Scan",
            &json!({"TableName": "tbl", "Select": "COUNT", "FilterExpression": "attribute_exists(#o)",
            "ExpressionAttributeNames": {"#o": "owner"}}),
        )
        .unwrap();
    assert_eq!(
        (c["Count"].clone(), c["ScannedCount"].clone()),
        (json!(6), json!(8))
    );
    assert!(c.get("Items").is_none());
    assert_eq!(
        code(d.call(
            "Query",
            &json!({"TableName": "tbl", "KeyConditionExpression": "r = :r",
        "ExpressionAttributeValues": {":r": {"N": "1"}}})
        )),
        "ValidationException"
    );
}

#[test]
fn names_arns_and_limits_from_review() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    lease_table(&d);
    d.call("PutItem", &json!({"TableName": "leases", "Item": {"leaseKey": {"S": "a"}, "m": {"M": {"x": {"S": "1"}, "y": {"S": "2"}}}}}))
        .unwrap();
    // A name must be a name or this server's ARN, never a smuggled suffix.
    assert_eq!(
        code(d.call(
            "GetItem",
            &json!({"TableName": "public-x:table/leases", "Key": {"leaseKey": {"S": "a"}}})
        )),
        "ValidationException"
    );
    assert_eq!(code(d.call("GetItem", &json!({"TableName": "arn:aws:dynamodb:eu-west-1:111111111111:table/leases", "Key": {"leaseKey": {"S": "a"}}}))), "ResourceNotFoundException");
    let own = d.call("GetItem", &json!({"TableName": "arn:aws:dynamodb:us-east-1:000000000000:table/leases", "Key": {"leaseKey": {"S": "a"}}})).unwrap();
    assert!(own.get("Item").is_some());
    assert_eq!(
        d.request_resources("GetItem", &json!({"TableName": "leases"}))
            .unwrap(),
        ["arn:aws:dynamodb:us-east-1:000000000000:table/leases"]
    );
    assert_eq!(
        d.request_resources(
            "BatchWriteItem",
            &json!({"RequestItems": {"leases": [], "other": []}})
        )
        .unwrap()
        .len(),
        2
    );
    // Each operation reads only the member that names its table: members
    // other operations use cannot route or authorize it.
    assert_eq!(
        d.request_resources(
            "DeleteTable",
            &json!({"TableName": "leases", "RequestItems": {}, "ResourceArn": "arn:aws:dynamodb:us-east-1:000000000000:table/other"})
        )
        .unwrap(),
        ["arn:aws:dynamodb:us-east-1:000000000000:table/leases"]
    );
    assert_eq!(
        d.request_resources(
            "Query",
            &json!({"TableName": "leases", "IndexName": "by-owner"})
        )
        .unwrap(),
        ["arn:aws:dynamodb:us-east-1:000000000000:table/leases/index/by-owner"]
    );
    assert!(
        d.request_resources("BatchGetItem", &json!({"RequestItems": {}}))
            .unwrap()
            .is_empty()
    );
    assert!(
        d.request_resources(
            "GetItem",
            &json!({"TableName": "arn:aws-cn:dynamodb:us-east-1:000000000000:table/leases"})
        )
        .is_err()
    );
    // A huge legacy condition map is evaluated without deep recursion.
    let mut expected = serde_json::Map::new();
    for i in 0..100_000 {
        expected.insert(format!("a{i}"), json!({"Exists": false}));
    }
    d.call(
        "PutItem",
        &json!({"TableName": "leases", "Item": {"leaseKey": {"S": "b"}}, "Expected": expected}),
    )
    .unwrap();
    // Nesting deeper than 32 levels is refused, directly or by an update.
    let mut deep = json!({"S": "leaf"});
    for _ in 0..33 {
        deep = json!({"L": [deep]});
    }
    assert_eq!(
        code(d.call(
            "PutItem",
            &json!({"TableName": "leases", "Item": {"leaseKey": {"S": "c"}, "d": deep}})
        )),
        "ValidationException"
    );
    // UPDATED_NEW returns the updated path only.
    let out = d
        .call("UpdateItem", &json!({"TableName": "leases", "Key": {"leaseKey": {"S": "a"}},
            "UpdateExpression": "SET m.x = :v", "ExpressionAttributeValues": {":v": {"S": "9"}}, "ReturnValues": "UPDATED_NEW"}))
        .unwrap();
    assert_eq!(out["Attributes"], json!({"m": {"M": {"x": {"S": "9"}}}}));
    // Key conditions are checked against the schema.
    assert_eq!(
        code(d.call(
            "Query",
            &json!({"TableName": "leases", "KeyConditionExpression": "leaseKey = :n",
        "ExpressionAttributeValues": {":n": {"N": "1"}}})
        )),
        "ValidationException"
    );
    assert_eq!(code(d.call("Query", &json!({"TableName": "leases", "KeyConditionExpression": "leaseKey = :a AND leaseKey = :a",
        "ExpressionAttributeValues": {":a": {"S": "a"}}}))), "ValidationException");
    // Batches refuse repeated keys.
    assert_eq!(code(d.call("BatchGetItem", &json!({"RequestItems": {"leases": {"Keys": [{"leaseKey": {"S": "a"}}, {"leaseKey": {"S": "a"}}]}}}))), "ValidationException");
    assert_eq!(code(d.call("BatchWriteItem", &json!({"RequestItems": {"leases": [
        {"PutRequest": {"Item": {"leaseKey": {"S": "z"}}}}, {"DeleteRequest": {"Key": {"leaseKey": {"S": "z"}}}}]}}))), "ValidationException");
    // A page that ends exactly at Limit says where it stopped.
    let page = d
        .call("Scan", &json!({"TableName": "leases", "Limit": 2}))
        .unwrap();
    assert_eq!(page["Count"], json!(2));
    let next = d.call("Scan", &json!({"TableName": "leases", "Limit": 2, "ExclusiveStartKey": page["LastEvaluatedKey"]})).unwrap();
    assert_eq!(next["Count"], json!(0));
    assert!(next.get("LastEvaluatedKey").is_none());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Expressions assembled from the grammar's own tokens, so that many get
    /// past the tokenizer and deep into parsing and evaluation.
    fn expression() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("a"),
            Just("#n"),
            Just(":v"),
            Just(":w"),
            Just("("),
            Just(")"),
            Just("["),
            Just("]"),
            Just("0"),
            Just("7"),
            Just("."),
            Just(","),
            Just("="),
            Just("<>"),
            Just("<"),
            Just(">="),
            Just("+"),
            Just("-"),
            Just("AND"),
            Just("OR"),
            Just("NOT"),
            Just("BETWEEN"),
            Just("IN"),
            Just("SET"),
            Just("REMOVE"),
            Just("ADD"),
            Just("DELETE"),
            Just("size"),
            Just("attribute_exists"),
            Just("attribute_not_exists"),
            Just("begins_with"),
            Just("contains"),
            Just("if_not_exists"),
            Just("list_append"),
            Just("attribute_type"),
            Just("é"),
            Just("$"),
        ];
        proptest::collection::vec(token, 0..40).prop_map(|t| t.join(" "))
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"S": "x"})),
            Just(json!({"N": "5"})),
            Just(json!({"N": "1e400"})),
            Just(json!({"SS": ["a", "b"]})),
            Just(json!({"NS": []})),
            Just(json!({"L": [{"N": "1"}, {"S": "y"}]})),
            Just(json!({"M": {"n": {"N": "2"}}})),
            Just(json!({"NULL": true})),
            Just(json!({"B": "AAE="})),
            Just(json!({})),
            Just(json!("not a value")),
        ]
    }

    proptest! {
        #[test]
        fn no_request_panics(update in expression(), condition in expression(), v in value(), w in value()) {
            let dir = tempfile::tempdir().unwrap();
            let d = open(dir.path());
            lease_table(&d);
            d.call("PutItem", &json!({"TableName": "leases", "Item": {"leaseKey": {"S": "k"}, "a": {"L": [{"N": "1"}]}, "n": {"N": "3"}}})).unwrap();
            let names = json!({"#n": "n"});
            let values = json!({":v": v, ":w": w});
            let _ = d.call("UpdateItem", &json!({"TableName": "leases", "Key": {"leaseKey": {"S": "k"}},
                "UpdateExpression": update, "ConditionExpression": condition,
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}));
            let _ = d.call("Scan", &json!({"TableName": "leases", "FilterExpression": condition,
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}));
            let _ = d.call("PutItem", &json!({"TableName": "leases", "Item": {"leaseKey": {"S": "k2"}, "x": v}}));
            // Whatever happened, the table still reads back.
            d.call("GetItem", &json!({"TableName": "leases", "Key": {"leaseKey": {"S": "k"}}})).unwrap();
        }
    }
}
