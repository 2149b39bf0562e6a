"""The S3 API subset through boto3 (path style) and the AWS CLI, against
the real binary: what a script that reads Firehose deliveries does."""
import hashlib
import os
import subprocess
import sys
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

AWS = os.path.join(os.path.dirname(sys.executable), "aws")


@pytest.fixture(scope="module")
def s3(server):
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCOMPAT",
        aws_secret_access_key="secret",
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture
def bucket(s3):
    name = "compat-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    return name


def error_code(e):
    return e.response["Error"]["Code"]


def test_buckets(s3):
    name = "compat-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert error_code(e.value) == "BucketAlreadyOwnedByYou"
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="UPPER_case")
    assert error_code(e.value) == "InvalidBucketName"
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_objects(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello boto3", ContentType="text/plain", Metadata={"k": "v"})
    assert put["ETag"] == '"%s"' % hashlib.md5(b"hello boto3").hexdigest()
    got = s3.get_object(Bucket=bucket, Key="a/b.txt")
    assert got["Body"].read() == b"hello boto3"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"k": "v"}
    head = s3.head_object(Bucket=bucket, Key="a/b.txt")
    assert head["ContentLength"] == 11
    part = s3.get_object(Bucket=bucket, Key="a/b.txt", Range="bytes=0-4")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == "bytes 0-4/11"
    assert part["Body"].read() == b"hello"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="a/b.txt", Range="bytes=100-")
    assert error_code(e.value) == "InvalidRange"
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="missing")
    with pytest.raises(s3.exceptions.NoSuchBucket):
        s3.get_object(Bucket="compat-none-" + uuid.uuid4().hex[:8], Key="x")
    s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "a/b.txt"})
    assert s3.get_object(Bucket=bucket, Key="copy.txt")["Body"].read() == b"hello boto3"
    listing = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in listing["Contents"]] == ["copy.txt"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["a/"]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy.txt"}, {"Key": "a/b.txt"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["a/b.txt", "copy.txt"]
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_object(Bucket=bucket, Key="copy.txt")


def test_pagination_and_odd_keys(s3, bucket):
    keys = ["k%03d" % i for i in range(25)] + ["space here", "pct%2F", "ünï/cödé"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 7})
    seen = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert seen == sorted(keys, key=lambda k: k.encode())
    pages = s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 10})
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == seen
    assert s3.get_object(Bucket=bucket, Key="ünï/cödé")["Body"].read() == "ünï/cödé".encode()


def test_upload_file_multipart(s3, bucket, tmp_path):
    # boto3's transfer manager splits this into parts (multipart upload).
    data = os.urandom(12 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    s3.upload_file(str(src), bucket, "big.bin")
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-2"')
    dst = tmp_path / "back.bin"
    s3.download_file(bucket, "big.bin", str(dst))
    assert dst.read_bytes() == data


def aws_s3(server, env, *args):
    out = subprocess.run([AWS, "--endpoint-url", server.url, *args], env=env, capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def test_aws_cli(server, aws_env, tmp_path):
    name = "cli-" + uuid.uuid4().hex[:12]
    rc, _, err = aws_s3(server, aws_env, "s3", "mb", "s3://" + name)
    assert rc == 0, err
    small = tmp_path / "small.txt"
    small.write_text("from the cli\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    for f in (small, big):
        rc, _, err = aws_s3(server, aws_env, "s3", "cp", str(f), "s3://%s/up/%s" % (name, f.name))
        assert rc == 0, err
    rc, out, err = aws_s3(server, aws_env, "s3", "ls", "s3://%s/up/" % name)
    assert rc == 0, err
    assert "small.txt" in out and "big.bin" in out
    rc, out, err = aws_s3(server, aws_env, "s3", "ls")
    assert rc == 0, err
    assert name in out
    for f in (small, big):
        back = tmp_path / ("back-" + f.name)
        rc, _, err = aws_s3(server, aws_env, "s3", "cp", "s3://%s/up/%s" % (name, f.name), str(back))
        assert rc == 0, err
        assert back.read_bytes() == f.read_bytes()
    rc, out, err = aws_s3(server, aws_env, "s3api", "head-object", "--bucket", name, "--key", "up/small.txt")
    assert rc == 0, err
    assert '"ContentLength": 13' in out
    rc, out, err = aws_s3(server, aws_env, "s3api", "list-objects-v2", "--bucket", name, "--prefix", "up/")
    assert rc == 0, err
    assert "up/big.bin" in out
    rc, _, err = aws_s3(server, aws_env, "s3", "rm", "--recursive", "s3://%s/up/" % name)
    assert rc == 0, err
    rc, _, err = aws_s3(server, aws_env, "s3", "rb", "s3://" + name)
    assert rc == 0, err


def test_get_bucket_location(s3, bucket):
    # us-east-1 answers an empty LocationConstraint, which boto3 reads as None.
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.get_bucket_location(Bucket="compat-no-such-bucket-x")
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"
