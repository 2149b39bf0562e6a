"""boto3 and the AWS CLI against ripstream's DynamoDB-compatible lease tables."""
import json
import subprocess

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError



@pytest.fixture(scope="module")
def dynamodb(server):
    return boto3.client(
        "dynamodb",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCOMPAT",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def test_lease_table_with_waiters_and_conditions(dynamodb):
    dynamodb.create_table(
        TableName="compat-leases",
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName="compat-leases", WaiterConfig={"Delay": 1})
    dynamodb.put_item(
        TableName="compat-leases",
        Item={"leaseKey": {"S": "shardId-0"}, "leaseCounter": {"N": "0"}, "checkpoint": {"S": "TRIM_HORIZON"}},
        Expected={"leaseKey": {"Exists": False}},
    )
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.put_item(
            TableName="compat-leases",
            Item={"leaseKey": {"S": "shardId-0"}},
            ConditionExpression="attribute_not_exists(leaseKey)",
        )
    out = dynamodb.update_item(
        TableName="compat-leases",
        Key={"leaseKey": {"S": "shardId-0"}},
        UpdateExpression="SET leaseOwner = :me ADD leaseCounter :one",
        ConditionExpression="leaseCounter = :seen OR attribute_not_exists(leaseOwner)",
        ExpressionAttributeValues={":me": {"S": "w1"}, ":one": {"N": "1"}, ":seen": {"N": "0"}},
        ReturnValues="ALL_NEW",
    )
    assert out["Attributes"]["leaseCounter"] == {"N": "1"}
    with pytest.raises(ClientError) as e:
        dynamodb.update_item(
            TableName="compat-leases",
            Key={"leaseKey": {"S": "shardId-0"}},
            UpdateExpression="SET leaseOwner = :me",
            ConditionExpression="leaseOwner = :other",
            ExpressionAttributeValues={":me": {"S": "w2"}, ":other": {"S": "w3"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert e.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert e.value.response["Item"]["leaseOwner"] == {"S": "w1"}
    with pytest.raises(ClientError) as e:
        dynamodb.get_item(TableName="compat-leases", Key={"wrong": {"S": "x"}})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    items = list(
        dynamodb.get_paginator("scan").paginate(TableName="compat-leases", PaginationConfig={"PageSize": 1})
    )
    assert sum(p["Count"] for p in items) == 1
    dynamodb.delete_table(TableName="compat-leases")
    dynamodb.get_waiter("table_not_exists").wait(TableName="compat-leases", WaiterConfig={"Delay": 1})


def test_aws_cli_dynamodb(server, aws_env):
    def cli(*args):
        return subprocess.run(
            ["aws", "--endpoint-url", server.url, "dynamodb", *args, "--output", "json"],
            env=aws_env, capture_output=True, text=True,
        )

    r = cli("create-table", "--table-name", "cli-leases", "--billing-mode", "PAY_PER_REQUEST",
            "--key-schema", "AttributeName=leaseKey,KeyType=HASH",
            "--attribute-definitions", "AttributeName=leaseKey,AttributeType=S")
    assert r.returncode == 0, r.stderr
    r = cli("put-item", "--table-name", "cli-leases", "--item", json.dumps({"leaseKey": {"S": "a"}}))
    assert r.returncode == 0, r.stderr
    r = cli("put-item", "--table-name", "cli-leases", "--item", json.dumps({"leaseKey": {"S": "a"}}),
            "--condition-expression", "attribute_not_exists(leaseKey)")
    assert r.returncode != 0 and "ConditionalCheckFailedException" in r.stderr
    r = cli("scan", "--table-name", "cli-leases")
    assert json.loads(r.stdout)["Count"] == 1


def test_policies_cover_dynamodb(secure_server):
    writer = boto3.client(
        "dynamodb", endpoint_url=secure_server.url, region_name="us-east-1",
        aws_access_key_id="AKIDCOMPATWRITER0001", aws_secret_access_key="compat-writer-secret",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    with pytest.raises(ClientError) as e:
        writer.list_tables()
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    admin = boto3.client(
        "dynamodb", endpoint_url=secure_server.url, region_name="us-east-1",
        aws_access_key_id="AKIDCOMPATADMIN00001", aws_secret_access_key="compat-admin-secret",
    )
    assert "TableNames" in admin.list_tables()
    bad = boto3.client(
        "dynamodb", endpoint_url=secure_server.url, region_name="us-east-1",
        aws_access_key_id="AKIDCOMPATADMIN00001", aws_secret_access_key="wrong",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    with pytest.raises(ClientError) as e:
        bad.list_tables()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
