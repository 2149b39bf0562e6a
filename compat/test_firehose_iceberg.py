"""Firehose's Iceberg destination against ripstream, as a pyiceberg user
meets it: the table is created with pyiceberg's own Glue catalog pointed at
the server (Glue and S3 on the same endpoint), a boto3 delivery stream
appends to it, and pyiceberg loads the table through Glue and scans it
through the S3 API."""
import time
import uuid

import boto3
import pyarrow as pa
import pytest
from botocore.config import Config

pyiceberg = pytest.importorskip("pyiceberg")
from pyiceberg.catalog import load_catalog  # noqa: E402
from pyiceberg.schema import Schema  # noqa: E402
from pyiceberg.types import (  # noqa: E402
    DoubleType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
)

ROLE = "arn:aws:iam::000000000000:role/firehose"
KEY, SECRET = "AKIDCOMPAT", "secret"


def client(server, service, **cfg):
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=Config(retries={"mode": "standard", "max_attempts": 1}, **cfg),
    )


def catalog(server):
    return load_catalog(
        "ripstream",
        **{
            "type": "glue",
            "glue.endpoint": server.url,
            "glue.region": "us-east-1",
            "glue.access-key-id": KEY,
            "glue.secret-access-key": SECRET,
            "s3.endpoint": server.url,
            "s3.region": "us-east-1",
            "s3.access-key-id": KEY,
            "s3.secret-access-key": SECRET,
            "s3.force-virtual-addressing": "false",
            # The same for iceberg-rust's reader (DataFusion via pyiceberg-core).
            "s3.path-style-access": "true",
        },
    )


def routing(query):
    """A ProcessingConfiguration whose MetadataExtraction JSON query gives
    each record's routing (table, operation), as on AWS."""
    return {
        "Enabled": True,
        "Processors": [
            {
                "Type": "MetadataExtraction",
                "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": query},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                ],
            }
        ],
    }


def error_body(s3, bucket, prefix, deadline_s=20):
    """The error output objects under `prefix`, once there are any."""
    deadline = time.time() + deadline_s
    while True:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        if listed:
            return b"".join(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed)
        assert time.time() < deadline, f"no error output under {prefix}"
        time.sleep(0.2)


def wait_for_rows(cat, ident, n, deadline_s=30):
    deadline = time.time() + deadline_s
    while True:
        table = cat.load_table(ident)
        rows = table.scan().to_arrow()
        if rows.num_rows >= n:
            return table, rows
        assert time.time() < deadline, f"{rows.num_rows} rows, wanted {n}"
        time.sleep(0.2)


def test_pyiceberg_reads_what_firehose_appends(server):
    suffix = uuid.uuid4().hex[:8]
    db, bucket, stream = f"lake_{suffix}", f"lake-{suffix}", f"ice-{suffix}"
    s3 = client(server, "s3", s3={"addressing_style": "path"})
    firehose = client(server, "firehose")
    s3.create_bucket(Bucket=bucket)

    cat = catalog(server)
    cat.create_namespace(db)
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "name", StringType(), required=False),
        NestedField(3, "score", DoubleType(), required=False),
        NestedField(4, "at", TimestampType(), required=False),
        NestedField(5, "tags", ListType(6, StringType(), element_required=False), required=False),
    )
    cat.create_table(f"{db}.events", schema=schema, location=f"s3://{bucket}/events")
    glue = client(server, "glue")
    params = glue.get_table(DatabaseName=db, Name="events")["Table"]["Parameters"]
    assert params["table_type"].upper() == "ICEBERG"
    assert params["metadata_location"].startswith(f"s3://{bucket}/events/metadata/")

    firehose.create_delivery_stream(
        DeliveryStreamName=stream,
        IcebergDestinationConfiguration={
            "RoleARN": ROLE,
            "CatalogConfiguration": {"CatalogARN": "arn:aws:glue:us-east-1:000000000000:catalog"},
            "DestinationTableConfigurationList": [
                {"DestinationDatabaseName": db, "DestinationTableName": "events"}
            ],
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
            "S3Configuration": {
                "RoleARN": ROLE,
                "BucketARN": f"arn:aws:s3:::{bucket}",
                "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
                "Prefix": "backup/",
            },
        },
    )
    desc = firehose.describe_delivery_stream(DeliveryStreamName=stream)["DeliveryStreamDescription"]
    ice = desc["Destinations"][0]["IcebergDestinationDescription"]
    assert ice["DestinationTableConfigurationList"][0]["DestinationTableName"] == "events"

    out = firehose.put_record_batch(
        DeliveryStreamName=stream,
        Records=[
            {"Data": b'{"id": 1, "Name": "ann", "score": 0.5, "at": "2026-12-04 05:06:07", "tags": ["a"]}'},
            {"Data": b'{"id": 2, "name": "bob", "tags": []}'},
            {"Data": b'{"id": {"not": "a number"}}'},
        ],
    )
    assert out["FailedPutCount"] == 0
    table, rows = wait_for_rows(cat, f"{db}.events", 2)
    rows = rows.sort_by("id").to_pylist()
    assert [(r["id"], r["name"], r["tags"]) for r in rows] == [(1, "ann", ["a"]), (2, "bob", [])]
    assert rows[0]["score"] == 0.5 and rows[1]["score"] is None
    assert str(rows[0]["at"]) == "2026-12-04 05:06:07"
    snap = table.current_snapshot()
    assert snap.summary["operation"].value == "append"
    assert snap.summary["ripstream.firehose.range"] == "0-3"

    # The record that does not fit is in the error output, through S3.
    deadline = time.time() + 20
    while True:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="errors/iceberg-failed/").get("Contents", [])
        if listed:
            break
        assert time.time() < deadline, "no error output"
        time.sleep(0.2)
    body = s3.get_object(Bucket=bucket, Key=listed[0]["Key"])["Body"].read()
    assert b"Iceberg.DataTypeMismatch" in body

    # A second flush is a second snapshot, pyiceberg sees both.
    firehose.put_record(DeliveryStreamName=stream, Record={"Data": b'{"id": 3}'})
    table, rows = wait_for_rows(cat, f"{db}.events", 3)
    assert len(table.metadata.snapshots) == 2
    assert sorted(rows.column("id").to_pylist()) == [1, 2, 3]
    assert rows.schema.field("id").type == pa.int64()


def test_updates_and_deletes_by_unique_key(server):
    """UniqueKeys with each record's operation from a JSON query (AWS's
    `{operation: ...}` MetadataExtraction): what pyiceberg (and DataFusion,
    through pyiceberg-core) read back is the table after the upserts."""
    suffix = uuid.uuid4().hex[:8]
    db, bucket, stream = f"lake_{suffix}", f"lake-{suffix}", f"ups-{suffix}"
    s3 = client(server, "s3", s3={"addressing_style": "path"})
    firehose = client(server, "firehose")
    s3.create_bucket(Bucket=bucket)
    cat = catalog(server)
    cat.create_namespace(db)
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "name", StringType(), required=False),
    )
    cat.create_table(f"{db}.users", schema=schema, location=f"s3://{bucket}/users")
    firehose.create_delivery_stream(
        DeliveryStreamName=stream,
        IcebergDestinationConfiguration={
            "RoleARN": ROLE,
            "CatalogConfiguration": {"CatalogARN": "arn:aws:glue:us-east-1:000000000000:catalog"},
            "DestinationTableConfigurationList": [
                {"DestinationDatabaseName": db, "DestinationTableName": "users", "UniqueKeys": ["id"]}
            ],
            "ProcessingConfiguration": routing("{operation: .op}"),
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
            "S3Configuration": {
                "RoleARN": ROLE,
                "BucketARN": f"arn:aws:s3:::{bucket}",
                "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
            },
        },
    )
    ice = firehose.describe_delivery_stream(DeliveryStreamName=stream)["DeliveryStreamDescription"][
        "Destinations"
    ][0]["IcebergDestinationDescription"]
    assert ice["DestinationTableConfigurationList"][0]["UniqueKeys"] == ["id"]

    def put(*records):
        out = firehose.put_record_batch(
            DeliveryStreamName=stream, Records=[{"Data": r.encode()} for r in records]
        )
        assert out["FailedPutCount"] == 0

    put('{"id": 1, "name": "ann"}', '{"id": 2, "name": "bob"}', '{"id": 3, "name": "cy"}')
    wait_for_rows(cat, f"{db}.users", 3)
    put(
        '{"op": "update", "id": 2, "name": "bobby"}',
        '{"op": "delete", "id": 3}',
        '{"op": "insert", "id": 4, "name": "di"}',
        '{"op": "update", "id": 5, "name": "ed"}',
        '{"op": "merge", "id": 1, "name": "never"}',
    )
    expected = [(1, "ann"), (2, "bobby"), (4, "di"), (5, "ed")]
    deadline = time.time() + 30
    while True:
        table = cat.load_table(f"{db}.users")
        rows = sorted((r["id"], r["name"]) for r in table.scan().to_arrow().to_pylist())
        if rows == expected:
            break
        assert time.time() < deadline, rows
        time.sleep(0.2)
    snap = table.current_snapshot()
    assert snap.summary["operation"].value == "overwrite"
    assert snap.summary["added-position-deletes"] == "2"

    # The record with an operation that is none is in the error output.
    assert b"Iceberg.InvalidOperation" in error_body(s3, bucket, "errors/iceberg-failed/")

    # DataFusion applies the same deletes (iceberg-rust's table provider).
    import datafusion
    ctx = datafusion.SessionContext()
    ctx.register_table("users", table)
    got = ctx.sql("SELECT id, name FROM users ORDER BY id").to_pylist()
    assert [(r["id"], r["name"]) for r in got] == expected


def test_records_are_routed_to_several_tables(server):
    """A DestinationTableConfigurationList of two tables with a JSON query
    giving each record's table and operation (AWS's "route incoming
    records to different Iceberg tables"): pyiceberg reads each table's
    own records; a record for a table not listed goes to the error output,
    and a table's own S3ErrorOutputPrefix takes its refused records."""
    suffix = uuid.uuid4().hex[:8]
    db, bucket, stream = f"lake_{suffix}", f"lake-{suffix}", f"route-{suffix}"
    s3 = client(server, "s3", s3={"addressing_style": "path"})
    firehose = client(server, "firehose")
    s3.create_bucket(Bucket=bucket)
    cat = catalog(server)
    cat.create_namespace(db)
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "name", StringType(), required=False),
    )
    for name in ("spawns", "boots"):
        cat.create_table(f"{db}.{name}", schema=schema, location=f"s3://{bucket}/{name}")
    query = '{destinationDatabaseName: "%s", destinationTableName: .event, operation: .op}' % db
    firehose.create_delivery_stream(
        DeliveryStreamName=stream,
        IcebergDestinationConfiguration={
            "RoleARN": ROLE,
            "CatalogConfiguration": {"CatalogARN": "arn:aws:glue:us-east-1:000000000000:catalog"},
            "DestinationTableConfigurationList": [
                {"DestinationDatabaseName": db, "DestinationTableName": "spawns", "UniqueKeys": ["id"]},
                {
                    "DestinationDatabaseName": db,
                    "DestinationTableName": "boots",
                    "S3ErrorOutputPrefix": "boots-errors/!{firehose:error-output-type}/",
                },
            ],
            "ProcessingConfiguration": routing(query),
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
            "S3Configuration": {
                "RoleARN": ROLE,
                "BucketARN": f"arn:aws:s3:::{bucket}",
                "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
            },
        },
    )
    ice = firehose.describe_delivery_stream(DeliveryStreamName=stream)["DeliveryStreamDescription"][
        "Destinations"
    ][0]["IcebergDestinationDescription"]
    assert [t["DestinationTableName"] for t in ice["DestinationTableConfigurationList"]] == ["spawns", "boots"]

    out = firehose.put_record_batch(
        DeliveryStreamName=stream,
        Records=[
            {"Data": b'{"event": "spawns", "id": 1, "name": "a"}'},
            {"Data": b'{"event": "BOOTS", "id": 10, "name": "pc"}'},
            {"Data": b'{"event": "spawns", "id": 2, "name": "b"}'},
            {"Data": b'{"event": "quits", "id": 3}'},
            {"Data": b'{"event": "boots", "id": {"not": "a number"}}'},
        ],
    )
    assert out["FailedPutCount"] == 0
    _, spawns = wait_for_rows(cat, f"{db}.spawns", 2)
    _, boots = wait_for_rows(cat, f"{db}.boots", 1)
    assert sorted(spawns.column("id").to_pylist()) == [1, 2]
    assert boots.column("id").to_pylist() == [10]

    # Each table its own updates: spawns' row 2 replaced, boots untouched.
    firehose.put_record(
        DeliveryStreamName=stream, Record={"Data": b'{"event": "spawns", "op": "update", "id": 2, "name": "b2"}'}
    )
    deadline = time.time() + 30
    while True:
        rows = sorted((r["id"], r["name"]) for r in cat.load_table(f"{db}.spawns").scan().to_arrow().to_pylist())
        if rows == [(1, "a"), (2, "b2")]:
            break
        assert time.time() < deadline, rows
        time.sleep(0.2)
    assert cat.load_table(f"{db}.boots").scan().to_arrow().num_rows == 1

    stream_errors = error_body(s3, bucket, "errors/iceberg-failed/")
    assert b"Iceberg.TableNotConfigured" in stream_errors
    assert b'"destinationTableName":"quits"' in stream_errors
    boots_errors = error_body(s3, bucket, "boots-errors/iceberg-failed/")
    assert b"Iceberg.DataTypeMismatch" in boots_errors
    assert b'"destinationTableName":"boots"' in boots_errors

    # UpdateDestination adds a table: records for it land there from then on.
    cat.create_table(f"{db}.quits", schema=schema, location=f"s3://{bucket}/quits")
    desc = firehose.describe_delivery_stream(DeliveryStreamName=stream)["DeliveryStreamDescription"]
    tables = desc["Destinations"][0]["IcebergDestinationDescription"]["DestinationTableConfigurationList"]
    firehose.update_destination(
        DeliveryStreamName=stream,
        CurrentDeliveryStreamVersionId=desc["VersionId"],
        DestinationId=desc["Destinations"][0]["DestinationId"],
        IcebergDestinationUpdate={
            "DestinationTableConfigurationList": tables
            + [{"DestinationDatabaseName": db, "DestinationTableName": "quits"}],
        },
    )
    desc = firehose.describe_delivery_stream(DeliveryStreamName=stream)["DeliveryStreamDescription"]
    assert desc["VersionId"] == "2"
    ice = desc["Destinations"][0]["IcebergDestinationDescription"]
    assert [t["DestinationTableName"] for t in ice["DestinationTableConfigurationList"]] == [
        "spawns",
        "boots",
        "quits",
    ]
    assert ice["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 1}
    firehose.put_record(DeliveryStreamName=stream, Record={"Data": b'{"event": "quits", "id": 30}'})
    _, quits = wait_for_rows(cat, f"{db}.quits", 1)
    assert quits.column("id").to_pylist() == [30]
    with pytest.raises(firehose.exceptions.ConcurrentModificationException):
        firehose.update_destination(
            DeliveryStreamName=stream,
            CurrentDeliveryStreamVersionId="1",
            DestinationId=desc["Destinations"][0]["DestinationId"],
            IcebergDestinationUpdate={"BufferingHints": {"SizeInMBs": 2, "IntervalInSeconds": 5}},
        )
    with pytest.raises(firehose.exceptions.InvalidArgumentException):
        firehose.update_destination(
            DeliveryStreamName=stream,
            CurrentDeliveryStreamVersionId="2",
            DestinationId=desc["Destinations"][0]["DestinationId"],
            ExtendedS3DestinationUpdate={"Prefix": "elsewhere/"},
        )

    # The same table twice is refused, as is a list without a table.
    for tables in (
        [{"DestinationDatabaseName": db, "DestinationTableName": "boots"}] * 2,
        [],
    ):
        with pytest.raises(firehose.exceptions.InvalidArgumentException):
            firehose.create_delivery_stream(
                DeliveryStreamName=f"{stream}-bad",
                IcebergDestinationConfiguration={
                    "RoleARN": ROLE,
                    "CatalogConfiguration": {"CatalogARN": "arn:aws:glue:us-east-1:000000000000:catalog"},
                    "DestinationTableConfigurationList": tables,
                    "S3Configuration": {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}"},
                },
            )
