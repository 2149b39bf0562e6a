"""The AWS CLI against ripstream, as the README shows it."""
import json
import subprocess
import sys
import os

AWS = os.path.join(os.path.dirname(sys.executable), "aws")


def aws(server, env, *args):
    out = subprocess.run([AWS, "kinesis", "--endpoint-url", server.url, *args], env=env, capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def test_cli_round_trip(server, aws_env):
    rc, _, err = aws(server, aws_env, "create-stream", "--stream-name", "cli-orders", "--shard-count", "4")
    assert rc == 0, err
    rc, _, err = aws(server, aws_env, "wait", "stream-exists", "--stream-name", "cli-orders")
    assert rc == 0, err
    rc, out, err = aws(server, aws_env, "put-record", "--stream-name", "cli-orders", "--partition-key", "k1", "--data", "aGVsbG8=")
    assert rc == 0, err
    put = json.loads(out)
    assert put["ShardId"].startswith("shardId-")
    rc, out, err = aws(server, aws_env, "get-shard-iterator", "--stream-name", "cli-orders", "--shard-id", put["ShardId"], "--shard-iterator-type", "TRIM_HORIZON")
    assert rc == 0, err
    it = json.loads(out)["ShardIterator"]
    rc, out, err = aws(server, aws_env, "get-records", "--shard-iterator", it)
    assert rc == 0, err
    records = json.loads(out)["Records"]
    assert len(records) == 1
    assert records[0]["SequenceNumber"] == put["SequenceNumber"]
    assert records[0]["PartitionKey"] == "k1"
    rc, out, err = aws(server, aws_env, "describe-stream-summary", "--stream-name", "cli-orders")
    assert rc == 0, err
    assert json.loads(out)["StreamDescriptionSummary"]["OpenShardCount"] == 4
    rc, out, err = aws(server, aws_env, "list-streams")
    assert "cli-orders" in json.loads(out)["StreamNames"]
    rc, out, err = aws(server, aws_env, "list-shards", "--stream-name", "cli-orders")
    assert len(json.loads(out)["Shards"]) == 4
    rc, _, err = aws(server, aws_env, "delete-stream", "--stream-name", "cli-orders")
    assert rc == 0, err
    rc, _, err = aws(server, aws_env, "describe-stream", "--stream-name", "cli-orders")
    assert rc != 0
    assert "ResourceNotFoundException" in err


def firehose(server, env, *args):
    out = subprocess.run([AWS, "firehose", "--endpoint-url", server.url, *args], env=env, capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def test_cli_firehose(server, aws_env):
    dest = json.dumps({"RoleARN": "arn:aws:iam::000000000000:role/firehose", "BucketARN": "arn:aws:s3:::cli-bucket",
                       "Prefix": "cli/", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1}})
    rc, out, err = firehose(server, aws_env, "create-delivery-stream", "--delivery-stream-name", "cli-events",
                            "--extended-s3-destination-configuration", dest)
    assert rc == 0, err
    assert json.loads(out)["DeliveryStreamARN"].endswith(":deliverystream/cli-events")
    rc, out, err = firehose(server, aws_env, "describe-delivery-stream", "--delivery-stream-name", "cli-events")
    assert rc == 0, err
    assert json.loads(out)["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
    rc, out, err = firehose(server, aws_env, "list-delivery-streams")
    assert rc == 0, err
    assert "cli-events" in json.loads(out)["DeliveryStreamNames"]
    rc, out, err = firehose(server, aws_env, "put-record", "--delivery-stream-name", "cli-events", "--record", '{"Data": "aGVsbG8K"}')
    assert rc == 0, err
    assert json.loads(out)["RecordId"]
    rc, _, err = firehose(server, aws_env, "delete-delivery-stream", "--delivery-stream-name", "cli-events")
    assert rc == 0, err
    rc, _, err = firehose(server, aws_env, "describe-delivery-stream", "--delivery-stream-name", "cli-events")
    assert rc != 0
    assert "ResourceNotFoundException" in err
