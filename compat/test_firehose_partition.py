"""boto3 `firehose` dynamic partitioning against ripstream: a JQ
MetadataExtraction query partitions records into their prefixes (read back
with boto3 `s3`, Parquet per partition with pyarrow), records that cannot be
partitioned land under partitioning-failed, AWS's configuration rules,
CloudWatch Logs subscription data decompressed and extracted, and
CustomTimeZone."""
import base64
import datetime
import gzip
import io
import json
import time
import uuid
import zoneinfo

import boto3
import pyarrow.parquet as pq
import pytest
from botocore.config import Config

ROLE = "arn:aws:iam::000000000000:role/firehose"
QUERY = '{customer: .customer_id, year: .ts | strftime("%Y")}'
PREFIX = "customer=!{partitionKeyFromQuery:customer}/year=!{partitionKeyFromQuery:year}/"


def client(server, service, **cfg):
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCOMPAT",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, **cfg),
    )


def jq(query):
    return {"Type": "MetadataExtraction", "Parameters": [
        {"ParameterName": "MetadataExtractionQuery", "ParameterValue": query},
        {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
    ]}


def partitioned(bucket, **extra):
    d = {
        "RoleARN": ROLE,
        "BucketARN": f"arn:aws:s3:::{bucket}",
        "Prefix": PREFIX,
        "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
        "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 1},
        "DynamicPartitioningConfiguration": {"Enabled": True},
        "ProcessingConfiguration": {"Enabled": True, "Processors": [
            jq(QUERY), {"Type": "AppendDelimiterToRecord"}]},
    }
    d.update(extra)
    return d


def wait_for_keys(s3, bucket, done, timeout=30):
    deadline = time.time() + timeout
    keys = []
    while time.time() < deadline:
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
        if done(keys):
            return keys
        time.sleep(0.2)
    raise AssertionError(f"timed out; keys: {keys}")


def read(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture
def env(server):
    suffix = uuid.uuid4().hex[:8]
    s3 = client(server, "s3", s3={"addressing_style": "path"})
    bucket = f"parts-{suffix}"
    s3.create_bucket(Bucket=bucket)
    return client(server, "firehose"), s3, bucket, suffix


def test_jq_partitions_into_prefixes_and_failures_go_to_the_error_output(env):
    firehose, s3, bucket, suffix = env
    name = f"dp-{suffix}"
    firehose.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=partitioned(bucket))
    ext = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"][
        "Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["DynamicPartitioningConfiguration"] == {"Enabled": True, "RetryOptions": {"DurationInSeconds": 300}}
    good = [
        {"customer_id": "a", "ts": 1565382027, "n": 1},
        {"customer_id": "b", "ts": 1565382027, "n": 2},
        {"customer_id": "a", "ts": 1609459200, "n": 3},
    ]
    bad = [b"not json", json.dumps({"ts": 1}).encode()]
    out = firehose.put_record_batch(
        DeliveryStreamName=name,
        Records=[{"Data": json.dumps(r).encode()} for r in good] + [{"Data": b} for b in bad],
    )
    assert out["FailedPutCount"] == 0
    keys = wait_for_keys(s3, bucket, lambda ks: len(ks) >= 4)
    by_prefix = {}
    for k in keys:
        by_prefix.setdefault(k.rsplit("/", 1)[0], []).append(k)
    assert set(by_prefix) == {"customer=a/year=2019", "customer=b/year=2019", "customer=a/year=2021",
                              "errors/partitioning-failed"}
    assert read(s3, bucket, by_prefix["customer=b/year=2019"][0]) == json.dumps(good[1]).encode() + b"\n"
    assert by_prefix["customer=a/year=2019"][0].split("/")[-1].startswith(f"{name}-1-")
    errs = [json.loads(line) for line in read(s3, bucket, by_prefix["errors/partitioning-failed"][0]).splitlines()]
    assert sorted(base64.b64decode(e["rawData"]) for e in errs) == sorted(bad)
    assert {e["errorCode"] for e in errs} == {"DynamicPartitioning.MetadataExtractionFailed"}


def test_awss_configuration_rules(env):
    firehose, _, bucket, suffix = env
    refused = [
        # Only ExtendedS3 has dynamic partitioning.
        {"S3DestinationConfiguration": {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}",
                                        "DynamicPartitioningConfiguration": {"Enabled": True}}},
        {"ExtendedS3DestinationConfiguration": partitioned(bucket, ErrorOutputPrefix="")},
        {"ExtendedS3DestinationConfiguration": partitioned(bucket, Prefix="plain/")},
        {"ExtendedS3DestinationConfiguration": partitioned(bucket, BufferingHints={"SizeInMBs": 5, "IntervalInSeconds": 60})},
        {"ExtendedS3DestinationConfiguration": partitioned(bucket, BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 0})},
        {"ExtendedS3DestinationConfiguration": partitioned(bucket, ProcessingConfiguration={
            "Enabled": True, "Processors": [jq("{customer: .c | recurse}")]})},
        {"ExtendedS3DestinationConfiguration": partitioned(bucket, ProcessingConfiguration={
            "Enabled": True, "Processors": [jq("{customer: .c")]})},
        {"ExtendedS3DestinationConfiguration": partitioned(bucket, CustomTimeZone="Nowhere/Special")},
    ]
    for i, kwargs in enumerate(refused):
        try:
            firehose.create_delivery_stream(DeliveryStreamName=f"bad-{suffix}-{i}", **kwargs)
        except firehose.exceptions.InvalidArgumentException:
            continue
        except Exception as e:  # the model validator may refuse before the server
            assert i == 0 and "DynamicPartitioningConfiguration" in str(e), e
            continue
        raise AssertionError(f"case {i} was accepted")
    plain = f"plain-{suffix}"
    firehose.create_delivery_stream(DeliveryStreamName=plain, ExtendedS3DestinationConfiguration={
        "RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}"})
    with pytest.raises(firehose.exceptions.InvalidArgumentException):
        firehose.update_destination(
            DeliveryStreamName=plain, CurrentDeliveryStreamVersionId="1",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={k: v for k, v in partitioned(bucket).items() if k not in ("RoleARN", "BucketARN")},
        )


COLUMNS = [("customer_id", "string"), ("n", "int")]


def test_conversion_works_per_partition(server, env):
    firehose, s3, bucket, suffix = env
    glue = client(server, "glue")
    db = f"dp_{suffix}"
    glue.create_database(DatabaseInput={"Name": db})
    glue.create_table(DatabaseName=db, TableInput={
        "Name": "events", "StorageDescriptor": {"Columns": [{"Name": n, "Type": t} for n, t in COLUMNS]}})
    name = f"dpconv-{suffix}"
    firehose.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=partitioned(
        bucket, Prefix="c=!{partitionKeyFromQuery:customer}/",
        ProcessingConfiguration={"Enabled": True, "Processors": [jq("{customer: .customer_id}")]},
        DataFormatConversionConfiguration={
            "SchemaConfiguration": {"RoleARN": ROLE, "DatabaseName": db, "TableName": "events"},
            "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
            "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}},
        }))
    rows = [{"customer_id": c, "n": i} for i, c in enumerate("abab")]
    firehose.put_record_batch(DeliveryStreamName=name, Records=[{"Data": json.dumps(r).encode()} for r in rows])
    keys = wait_for_keys(s3, bucket, lambda ks: len(ks) >= 2)
    for c in "ab":
        key = next(k for k in keys if k.startswith(f"c={c}/"))
        assert key.endswith(".parquet")
        table = pq.read_table(io.BytesIO(read(s3, bucket, key)))
        assert table.to_pylist() == [r for r in rows if r["customer_id"] == c]


def test_cloudwatch_logs_are_decompressed_and_extracted(env):
    firehose, s3, bucket, suffix = env
    name = f"cwl-{suffix}"
    firehose.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration={
        "RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}", "Prefix": "logs/", "ErrorOutputPrefix": "errors/",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
        "ProcessingConfiguration": {"Enabled": True, "Processors": [
            {"Type": "Decompression", "Parameters": [{"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"}]},
            {"Type": "CloudWatchLogProcessing", "Parameters": [{"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}]},
            {"Type": "AppendDelimiterToRecord"},
        ]}})

    def doc(kind, messages):
        return gzip.compress(json.dumps({
            "messageType": kind, "owner": "123456789012", "logGroup": "/app", "logStream": "s",
            "subscriptionFilters": ["f"],
            "logEvents": [{"id": str(i), "timestamp": 1700000000000 + i, "message": m} for i, m in enumerate(messages)],
        }).encode())

    firehose.put_record_batch(DeliveryStreamName=name, Records=[
        {"Data": doc("DATA_MESSAGE", ["one", "two"])},
        {"Data": doc("CONTROL_MESSAGE", ["CWL CONTROL MESSAGE: Checking health of destination Firehose."])},
        {"Data": b"plain text"},
    ])
    keys = wait_for_keys(s3, bucket, lambda ks: len(ks) >= 2)
    logs = [k for k in keys if k.startswith("logs/")]
    assert b"".join(read(s3, bucket, k) for k in logs) == b"one\ntwo\n"
    err = next(k for k in keys if k.startswith("errors/decompression-failed/"))
    [doc_] = [json.loads(line) for line in read(s3, bucket, err).splitlines()]
    assert base64.b64decode(doc_["rawData"]) == b"plain text"


def test_custom_time_zone(env):
    firehose, s3, bucket, suffix = env
    name = f"tz-{suffix}"
    firehose.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration={
        "RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}", "CustomTimeZone": "Asia/Kolkata",
        "Prefix": "t=!{timestamp:yyyy-MM-dd-HH}/", "ErrorOutputPrefix": "e/!{firehose:error-output-type}/",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1}})
    zone = zoneinfo.ZoneInfo("Asia/Kolkata")
    before = datetime.datetime.now(zone)
    firehose.put_record(DeliveryStreamName=name, Record={"Data": b"x"})
    after = datetime.datetime.now(zone)
    [key] = wait_for_keys(s3, bucket, lambda ks: len(ks) >= 1)
    # Kolkata is UTC+05:30: the half hour tells its time from UTC's.
    assert any(key.startswith(t.strftime("t=%Y-%m-%d-%H/") + f"{name}-1-" + t.strftime("%Y-%m-%d-%H-%M"))
               for t in (before, after)), key
