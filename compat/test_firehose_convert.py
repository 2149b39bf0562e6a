"""boto3 Firehose record format conversion against ripstream: a Glue table,
a delivery stream converting JSON to Parquet with the Hive JSON SerDe, and
the delivered object read back through the S3 API with pyarrow, checked
against the types the Glue columns name."""
import decimal
import datetime
import io
import json
import time
import uuid

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config

ROLE = "arn:aws:iam::000000000000:role/firehose"

COLUMNS = [
    ("id", "bigint"),
    ("name", "varchar(16)"),
    ("amount", "decimal(12,3)"),
    ("at", "timestamp"),
    ("tags", "array<string>"),
    ("counts", "map<string,int>"),
    ("who", "struct<first:string,age:smallint>"),
]

# What Hive's Parquet SerDe reads each Glue type as.
EXPECTED = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.decimal128(12, 3)),
        ("at", pa.timestamp("us")),
        ("tags", pa.list_(pa.field("element", pa.string()))),
        ("counts", pa.map_(pa.string(), pa.int32())),
        ("who", pa.struct([("first", pa.string()), ("age", pa.int16())])),
    ]
)


def client(server, service, **cfg):
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCOMPAT",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, **cfg),
    )


def test_json_to_parquet_read_back_with_pyarrow(server):
    glue = client(server, "glue")
    firehose = client(server, "firehose")
    s3 = client(server, "s3", s3={"addressing_style": "path"})
    suffix = uuid.uuid4().hex[:8]
    db, bucket, name = f"lake_{suffix}", f"lake-{suffix}", f"conv-{suffix}"
    s3.create_bucket(Bucket=bucket)
    glue.create_database(DatabaseInput={"Name": db})
    glue.create_table(
        DatabaseName=db,
        TableInput={
            "Name": "events",
            "StorageDescriptor": {"Columns": [{"Name": n, "Type": t} for n, t in COLUMNS]},
        },
    )
    conversion = {
        "SchemaConfiguration": {"RoleARN": ROLE, "DatabaseName": db, "TableName": "events"},
        "InputFormatConfiguration": {
            "Deserializer": {"HiveJsonSerDe": {"TimestampFormats": ["millis", "dd/MM/yyyy HH:mm:ss"]}}
        },
        "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}},
    }
    base = {
        "RoleARN": ROLE,
        "BucketARN": f"arn:aws:s3:::{bucket}",
        "Prefix": "parquet/",
        "FileExtension": ".parquet",
        "DataFormatConversionConfiguration": conversion,
    }
    # The buffer must be at least 64 MiB with conversion.
    with pytest.raises(firehose.exceptions.InvalidArgumentException):
        firehose.create_delivery_stream(
            DeliveryStreamName=name,
            ExtendedS3DestinationConfiguration={**base, "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 1}},
        )
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration={**base, "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 1}},
    )
    rows = [
        {"id": 1, "name": "ann", "amount": "1.5", "at": 1796360767123, "tags": ["x"],
         "counts": {"a": 1}, "who": {"first": "Ann", "age": 30}},
        {"ID": 2, "NAME": "a name longer than sixteen", "at": "04/12/2026 05:06:07"},
    ]
    out = firehose.put_record_batch(
        DeliveryStreamName=name,
        Records=[{"Data": json.dumps(r).encode() + b"\n"} for r in rows] + [{"Data": b"{broken"}],
    )
    assert out["FailedPutCount"] == 0

    deadline = time.time() + 20
    keys = []
    while time.time() < deadline:
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        keys = sorted(o["Key"] for o in listed)
        # Without ErrorOutputPrefix failed records go under Prefix, then
        # the error type (AWS's prefix rules).
        if any(k.startswith("parquet/2") for k in keys) and any(k.startswith("parquet/format-conversion-failed/") for k in keys):
            break
        time.sleep(0.2)
    data_key = next(k for k in keys if k.startswith("parquet/2"))
    assert data_key.endswith(".parquet") and f"/{name}-1-" in data_key

    body = s3.get_object(Bucket=bucket, Key=data_key)["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert table.schema.remove_metadata().equals(EXPECTED), table.schema
    got = table.to_pylist()
    assert got[0] == {
        "id": 1,
        "name": "ann",
        "amount": decimal.Decimal("1.500"),
        "at": datetime.datetime(2026, 12, 4, 5, 6, 7, 123000),
        "tags": ["x"],
        "counts": [("a", 1)],
        "who": {"first": "Ann", "age": 30},
    }
    assert got[1] == {
        "id": 2,
        "name": "a name longer th",
        "amount": None,
        "at": datetime.datetime(2026, 12, 4, 5, 6, 7),
        "tags": None,
        "counts": None,
        "who": None,
    }

    err_key = next(k for k in keys if k.startswith("parquet/format-conversion-failed/"))
    err = s3.get_object(Bucket=bucket, Key=err_key)["Body"].read().decode()
    [line] = [json.loads(l) for l in err.splitlines()]
    assert line["ErrorCode"].startswith("DataFormatConversion.")
    assert line["dataCatalogTable"]["databaseName"] == db
    assert line["dataCatalogTable"]["tableName"] == "events"
    firehose.delete_delivery_stream(DeliveryStreamName=name)
