"""boto3 against ripstream: every core operation and its error cases."""
import datetime
import hashlib

import pytest
from botocore.exceptions import ClientError


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_lifecycle_with_waiters(kinesis):
    kinesis.create_stream(StreamName="boto-life", ShardCount=3)
    kinesis.get_waiter("stream_exists").wait(StreamName="boto-life", WaiterConfig={"Delay": 0.1})
    d = kinesis.describe_stream(StreamName="boto-life")["StreamDescription"]
    assert d["StreamStatus"] == "ACTIVE"
    assert [s["ShardId"] for s in d["Shards"]] == ["shardId-000000000000", "shardId-000000000001", "shardId-000000000002"]
    assert d["Shards"][0]["HashKeyRange"]["EndingHashKey"] == "113427455640312821154458202477256070484"
    assert isinstance(d["StreamCreationTimestamp"], datetime.datetime)
    assert d["StreamARN"] == "arn:aws:kinesis:us-east-1:000000000000:stream/boto-life"
    s = kinesis.describe_stream_summary(StreamName="boto-life")["StreamDescriptionSummary"]
    assert s["OpenShardCount"] == 3
    assert "boto-life" in kinesis.list_streams()["StreamNames"]
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.create_stream(StreamName="boto-life", ShardCount=1)
    kinesis.delete_stream(StreamName="boto-life")
    kinesis.get_waiter("stream_not_exists").wait(StreamName="boto-life", WaiterConfig={"Delay": 0.1})
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream(StreamName="boto-life")


def test_put_and_get_round_trip(kinesis, stream):
    sent = {}
    for i in range(20):
        key = f"user-{i}"
        out = kinesis.put_record(StreamName=stream, PartitionKey=key, Data=f"payload-{i}".encode())
        h = int(hashlib.md5(key.encode()).hexdigest(), 16)
        assert out["ShardId"] == ("shardId-000000000000" if h < 2**127 else "shardId-000000000001")
        sent[out["SequenceNumber"]] = f"payload-{i}".encode()
    batch = kinesis.put_records(
        StreamName=stream,
        Records=[{"PartitionKey": f"b{i}", "Data": bytes([i]) * 100} for i in range(100)],
    )
    assert batch["FailedRecordCount"] == 0
    for i, r in enumerate(batch["Records"]):
        sent[r["SequenceNumber"]] = bytes([i]) * 100
    got = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            r = kinesis.get_records(ShardIterator=it, Limit=25)
            for rec in r["Records"]:
                got[rec["SequenceNumber"]] = rec["Data"]
                assert isinstance(rec["ApproximateArrivalTimestamp"], datetime.datetime)
            if not r["Records"] and r["MillisBehindLatest"] == 0:
                break
            it = r["NextShardIterator"]
    assert got == sent


def test_iterators_by_sequence_and_time(kinesis, stream):
    seqs = [kinesis.put_record(StreamName=stream, PartitionKey="same", Data=str(i).encode(), ExplicitHashKey="1")["SequenceNumber"] for i in range(5)]
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1])["ShardIterator"]
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=it)["Records"]] == [b"2", b"3", b"4"]
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="AT_TIMESTAMP", Timestamp=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5))["ShardIterator"]
    assert len(kinesis.get_records(ShardIterator=it)["Records"]) == 5
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="AT_SEQUENCE_NUMBER")
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000007", ShardIteratorType="LATEST")
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.get_records(ShardIterator="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")


def test_validation_errors(kinesis, stream):
    with pytest.raises(ClientError) as e:
        kinesis.put_records(StreamName=stream, Records=[{"PartitionKey": "k", "Data": b"x"}] * 501)
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"x" * (1024 * 1024))
    assert error_code(e) == "ValidationException"
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"x", ExplicitHashKey=str(2**128))
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.increase_stream_retention_period(StreamName=stream, RetentionPeriodHours=9000)


def test_pagination(kinesis):
    names = [f"boto-page-{i}" for i in range(5)]
    for n in names:
        kinesis.create_stream(StreamName=n, ShardCount=3)
    listed = []
    for page in kinesis.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 2}):
        listed.extend(page["StreamNames"])
    assert all(n in listed for n in names)
    shards = []
    resp = kinesis.list_shards(StreamName=names[0], MaxResults=2)
    shards += resp["Shards"]
    while resp.get("NextToken"):
        resp = kinesis.list_shards(NextToken=resp["NextToken"], MaxResults=2)
        shards += resp["Shards"]
    assert len(shards) == 3
    described = []
    for page in kinesis.get_paginator("describe_stream").paginate(StreamName=names[0], PaginationConfig={"PageSize": 1}):
        described += page["StreamDescription"]["Shards"]
    assert len(described) == 3
    for n in names:
        kinesis.delete_stream(StreamName=n)


def test_settings_tags_and_limits(kinesis, stream):
    arn = f"arn:aws:kinesis:us-east-1:000000000000:stream/{stream}"
    kinesis.increase_stream_retention_period(StreamName=stream, RetentionPeriodHours=72)
    kinesis.decrease_stream_retention_period(StreamARN=arn, RetentionPeriodHours=48)
    assert kinesis.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48
    out = kinesis.enable_enhanced_monitoring(StreamName=stream, ShardLevelMetrics=["IncomingRecords", "OutgoingBytes"])
    assert sorted(out["DesiredShardLevelMetrics"]) == ["IncomingRecords", "OutgoingBytes"]
    out = kinesis.disable_enhanced_monitoring(StreamName=stream, ShardLevelMetrics=["ALL"])
    assert out["DesiredShardLevelMetrics"] == []
    kinesis.add_tags_to_stream(StreamName=stream, Tags={"team": "data", "env": "test"})
    tags = kinesis.list_tags_for_stream(StreamName=stream)["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "data", "env": "test"}
    kinesis.remove_tags_from_stream(StreamName=stream, TagKeys=["env"])
    kinesis.tag_resource(ResourceARN=arn, Tags={"owner": "me"})
    assert {t["Key"] for t in kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"]} == {"team", "owner"}
    kinesis.untag_resource(ResourceARN=arn, TagKeys=["owner"])
    limits = kinesis.describe_limits()
    assert limits["ShardLimit"] == 500
    assert limits["OpenShardCount"] >= 2
    kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    assert kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
    kinesis.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=4096)
    assert kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] == 4096
    kinesis.put_record(StreamName=stream, PartitionKey="big", Data=b"x" * (3 * 1024 * 1024))


def test_on_demand_stream_starts_with_four_shards(kinesis):
    kinesis.create_stream(StreamName="boto-od", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    s = kinesis.describe_stream_summary(StreamName="boto-od")["StreamDescriptionSummary"]
    assert s["OpenShardCount"] == 4
    assert s["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
    kinesis.delete_stream(StreamName="boto-od")


def test_enhanced_fan_out_subscribe(kinesis, stream):
    arn = f"arn:aws:kinesis:us-east-1:000000000000:stream/{stream}"
    consumer = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="boto-efo")["Consumer"]
    assert consumer["ConsumerStatus"] == "CREATING"
    kinesis.get_waiter("stream_exists").wait(StreamName=stream)
    desc = kinesis.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
    assert desc["ConsumerStatus"] == "ACTIVE"
    assert [c["ConsumerName"] for c in kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]] == ["boto-efo"]
    seqs = [kinesis.put_record(StreamName=stream, PartitionKey="k", Data=f"efo-{i}".encode(), ExplicitHashKey="0")["SequenceNumber"] for i in range(3)]
    resp = kinesis.subscribe_to_shard(
        ConsumerARN=consumer["ConsumerARN"],
        ShardId="shardId-000000000000",
        StartingPosition={"Type": "TRIM_HORIZON"},
    )
    got = []
    for event in resp["EventStream"]:
        ev = event["SubscribeToShardEvent"]
        got += [(r["SequenceNumber"], r["Data"]) for r in ev["Records"]]
        assert "ContinuationSequenceNumber" in ev
        if len(got) >= 3:
            break
    assert got == [(s, f"efo-{i}".encode()) for i, s in enumerate(seqs)]
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.delete_stream(StreamName=stream)
    kinesis.deregister_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
