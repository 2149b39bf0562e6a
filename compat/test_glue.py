"""boto3 `glue` against ripstream: the Data Catalog subset (databases,
tables, table versions), paging, and AWS's errors."""
import datetime
import uuid

import boto3
import pytest
from botocore.config import Config


@pytest.fixture(scope="module")
def glue(server):
    return boto3.client(
        "glue",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCOMPAT",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture
def db(glue):
    name = "compat_" + uuid.uuid4().hex[:10]
    glue.create_database(DatabaseInput={"Name": name.upper(), "Description": "compat"})
    yield name
    try:
        glue.delete_database(Name=name)
    except glue.exceptions.EntityNotFoundException:
        pass


def table_input(name, columns):
    return {
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet"},
        "PartitionKeys": [{"Name": "dt", "Type": "string"}],
        "StorageDescriptor": {
            "Columns": [{"Name": n, "Type": t, "Comment": "c"} for n, t in columns],
            "Location": "s3://lake/t/",
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
        },
    }


def test_databases(glue, db):
    d = glue.get_database(Name=db.upper())["Database"]
    assert d["Name"] == db
    assert d["Description"] == "compat"
    assert d["CatalogId"] == "000000000000"
    assert isinstance(d["CreateTime"], datetime.datetime)
    with pytest.raises(glue.exceptions.AlreadyExistsException) as e:
        glue.create_database(DatabaseInput={"Name": db})
    assert e.value.response["Error"]["Message"] == "Database already exists."
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    glue.update_database(Name=db, DatabaseInput={"Name": db, "Description": "changed"})
    assert glue.get_database(Name=db)["Database"]["Description"] == "changed"
    names = [d["Name"] for page in glue.get_paginator("get_databases").paginate(PaginationConfig={"PageSize": 1}) for d in page["DatabaseList"]]
    assert db in names
    with pytest.raises(glue.exceptions.EntityNotFoundException) as e:
        glue.get_database(Name="no_such_db")
    assert e.value.response["Error"]["Message"] == "Database no_such_db not found."


def test_tables_versions_and_errors(glue, db):
    glue.create_table(DatabaseName=db, TableInput=table_input("Events", [("id", "bigint"), ("tags", "array<string>")]))
    t = glue.get_table(DatabaseName=db, Name="EVENTS")["Table"]
    assert t["Name"] == "events"
    assert t["DatabaseName"] == db
    assert t["VersionId"] == "0"
    assert t["IsRegisteredWithLakeFormation"] is False
    assert t["CreatedBy"] == "arn:aws:iam::000000000000:root"
    assert t["StorageDescriptor"]["Columns"][1] == {"Name": "tags", "Type": "array<string>", "Comment": "c"}
    assert t["PartitionKeys"] == [{"Name": "dt", "Type": "string"}]
    assert isinstance(t["UpdateTime"], datetime.datetime)
    with pytest.raises(glue.exceptions.AlreadyExistsException):
        glue.create_table(DatabaseName=db, TableInput=table_input("events", []))
    with pytest.raises(glue.exceptions.EntityNotFoundException) as e:
        glue.get_table(DatabaseName=db, Name="ghost")
    assert e.value.response["Error"]["Message"] == "Table ghost not found."
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.create_table(DatabaseName="no_such_db", TableInput=table_input("x", []))

    glue.update_table(DatabaseName=db, TableInput=table_input("events", [("id", "bigint"), ("v1", "int")]))
    with pytest.raises(glue.exceptions.ConcurrentModificationException):
        glue.update_table(DatabaseName=db, VersionId="0", TableInput=table_input("events", []))
    glue.update_table(DatabaseName=db, VersionId="1", SkipArchive=True, TableInput=table_input("events", [("v2", "int")]))
    versions = glue.get_table_versions(DatabaseName=db, TableName="events")["TableVersions"]
    assert [v["VersionId"] for v in versions] == ["0", "2"]
    v0 = glue.get_table_version(DatabaseName=db, TableName="events", VersionId="0")["TableVersion"]
    assert [c["Name"] for c in v0["Table"]["StorageDescriptor"]["Columns"]] == ["id", "tags"]
    with pytest.raises(glue.exceptions.InvalidInputException):
        glue.delete_table_version(DatabaseName=db, TableName="events", VersionId="2")
    glue.delete_table_version(DatabaseName=db, TableName="events", VersionId="0")
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_table_version(DatabaseName=db, TableName="events", VersionId="0")
    glue.delete_table(DatabaseName=db, Name="events")
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.delete_table(DatabaseName=db, Name="events")


def test_get_tables_expression_paging_and_batch_delete(glue, db):
    for n in ["events_a", "events_b", "events_c", "clicks"]:
        glue.create_table(DatabaseName=db, TableInput=table_input(n, [("id", "int")]))
    pages = list(glue.get_paginator("get_tables").paginate(DatabaseName=db, Expression="events*", PaginationConfig={"PageSize": 2}))
    assert len(pages) == 2
    assert [t["Name"] for p in pages for t in p["TableList"]] == ["events_a", "events_b", "events_c"]
    got = glue.get_tables(DatabaseName=db, Expression="clicks|events_b")["TableList"]
    assert [t["Name"] for t in got] == ["clicks", "events_b"]
    with pytest.raises(glue.exceptions.InvalidInputException):
        glue.get_tables(DatabaseName=db, Expression="events(")
    out = glue.batch_delete_table(DatabaseName=db, TablesToDelete=["events_a", "ghost"])
    assert out["Errors"] == [
        {"TableName": "ghost", "ErrorDetail": {"ErrorCode": "EntityNotFoundException", "ErrorMessage": "Table ghost not found."}}
    ]
    assert [t["Name"] for t in glue.get_tables(DatabaseName=db)["TableList"]] == ["clicks", "events_b", "events_c"]
    # Deleting the database takes its tables with it.
    glue.delete_database(Name=db)
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_tables(DatabaseName=db)
    glue.create_database(DatabaseInput={"Name": db})
    assert glue.get_tables(DatabaseName=db)["TableList"] == []


def test_foreign_catalog_is_refused(glue, db):
    with pytest.raises(glue.exceptions.ClientError) as e:
        glue.get_database(CatalogId="111122223333", Name=db)
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert glue.get_database(CatalogId="000000000000", Name=db)["Database"]["Name"] == db
