"""boto3 `firehose` against ripstream: delivery streams, puts, delivery to
the embedded object store's layout, and AWS's errors."""
import gzip
import io
import os
import time
import uuid
import zipfile

import pytest

ROLE = "arn:aws:iam::000000000000:role/firehose"


def dest(bucket, **extra):
    d = {
        "RoleARN": ROLE,
        "BucketARN": f"arn:aws:s3:::{bucket}",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
    }
    d.update(extra)
    return d


def objects(root):
    """(key, bytes) of every object under a bucket directory, gunzipped where .gz."""
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if "#" in f:  # a write being staged
                continue
            path = os.path.join(dirpath, f)
            key = os.path.relpath(path, root)
            data = open(path, "rb").read()
            if key.endswith(".gz"):
                data = gzip.decompress(data)
            out.append((key, data))
    return sorted(out)


@pytest.fixture
def name(firehose):
    n = "compat-" + uuid.uuid4().hex[:10]
    yield n
    try:
        firehose.delete_delivery_stream(DeliveryStreamName=n)
    except firehose.exceptions.ResourceNotFoundException:
        pass


def test_create_describe_list_delete(firehose, name):
    arn = firehose.create_delivery_stream(
        DeliveryStreamName=name, ExtendedS3DestinationConfiguration=dest("bkt")
    )["DeliveryStreamARN"]
    assert arn == f"arn:aws:firehose:us-east-1:000000000000:deliverystream/{name}"
    d = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert d["DeliveryStreamStatus"] == "ACTIVE"
    assert d["DeliveryStreamType"] == "DirectPut"
    assert d["VersionId"] == "1"
    assert d["HasMoreDestinations"] is False
    assert d["DeliveryStreamEncryptionConfiguration"] == {"Status": "DISABLED"}
    ext = d["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert d["Destinations"][0]["DestinationId"] == "destinationId-000000000001"
    assert ext["CompressionFormat"] == "UNCOMPRESSED"
    assert ext["EncryptionConfiguration"] == {"NoEncryptionConfig": "NoEncryption"}
    assert ext["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 1}
    assert name in firehose.list_delivery_streams(Limit=10000)["DeliveryStreamNames"]
    assert name in firehose.list_delivery_streams(DeliveryStreamType="DirectPut", Limit=10000)["DeliveryStreamNames"]
    assert name not in firehose.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource")["DeliveryStreamNames"]
    with pytest.raises(firehose.exceptions.ResourceInUseException):
        firehose.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=dest("bkt"))
    firehose.delete_delivery_stream(DeliveryStreamName=name)
    with pytest.raises(firehose.exceptions.ResourceNotFoundException):
        firehose.describe_delivery_stream(DeliveryStreamName=name)


def test_unsupported_configurations_are_refused(firehose, name):
    for kwargs in [
        # A source stream that does not exist.
        {"DeliveryStreamType": "KinesisStreamAsSource", "KinesisStreamSourceConfiguration": {
            "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/compat-no-such-stream", "RoleARN": ROLE},
         "ExtendedS3DestinationConfiguration": dest("bkt")},
        # S3BackupMode Enabled needs its backup destination.
        {"ExtendedS3DestinationConfiguration": dest("bkt", S3BackupMode="Enabled")},
        {"ExtendedS3DestinationConfiguration": dest("bkt", ProcessingConfiguration={
            "Enabled": True, "Processors": [{"Type": "Lambda"}]})},
        {"ExtendedS3DestinationConfiguration": dest("bkt", Prefix="!{timestamp:yyyy}/")},
    ]:
        with pytest.raises(firehose.exceptions.InvalidArgumentException):
            firehose.create_delivery_stream(DeliveryStreamName=name, **kwargs)


def test_put_and_delivery(firehose, server, name):
    bucket = "compat-" + uuid.uuid4().hex[:8]
    root = os.path.join(server.dir, "data", "objects", bucket)
    os.makedirs(root)
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=dest(bucket, CompressionFormat="GZIP", Prefix="events/"),
    )
    one = firehose.put_record(DeliveryStreamName=name, Record={"Data": b"first\n"})
    assert len(one["RecordId"]) > 100
    assert one["Encrypted"] is False
    out = firehose.put_record_batch(
        DeliveryStreamName=name, Records=[{"Data": f"r{i}\n".encode()} for i in range(10)]
    )
    assert out["FailedPutCount"] == 0
    assert len(out["RequestResponses"]) == 10
    assert all("RecordId" in r for r in out["RequestResponses"])
    deadline = time.time() + 20
    while not objects(root) and time.time() < deadline:
        time.sleep(0.1)
    assert objects(root), "nothing delivered"
    # Let any second flush land before comparing the whole (two objects of
    # one second sort by their uuids, so lines are compared as a set).
    time.sleep(1.5)
    lines = b"".join(d for _, d in objects(root)).splitlines()
    assert sorted(lines) == sorted([b"first"] + [f"r{i}".encode() for i in range(10)])
    key = objects(root)[0][0]
    assert key.startswith("events/") and key.endswith(".gz")
    assert os.path.basename(key).startswith(f"{name}-1-")
    with pytest.raises(firehose.exceptions.ResourceNotFoundException):
        firehose.put_record(DeliveryStreamName="compat-missing", Record={"Data": b"x"})


def test_update_destination(firehose, name):
    firehose.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=dest("bkt"))
    with pytest.raises(firehose.exceptions.ConcurrentModificationException):
        firehose.update_destination(
            DeliveryStreamName=name, CurrentDeliveryStreamVersionId="5",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"Prefix": "new/"},
        )
    firehose.update_destination(
        DeliveryStreamName=name, CurrentDeliveryStreamVersionId="1",
        DestinationId="destinationId-000000000001",
        ExtendedS3DestinationUpdate={"Prefix": "new/", "CompressionFormat": "GZIP"},
    )
    d = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert d["VersionId"] == "2"
    assert "LastUpdateTimestamp" in d
    ext = d["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["Prefix"] == "new/"
    assert ext["CompressionFormat"] == "GZIP"
    assert ext["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 1}
    with pytest.raises(firehose.exceptions.InvalidArgumentException):
        firehose.update_destination(
            DeliveryStreamName=name, CurrentDeliveryStreamVersionId="2",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"S3BackupMode": "Enabled"},  # no S3BackupUpdate
        )


def test_tags(firehose, name):
    firehose.create_delivery_stream(
        DeliveryStreamName=name, ExtendedS3DestinationConfiguration=dest("bkt"),
        Tags=[{"Key": "a", "Value": "1"}],
    )
    firehose.tag_delivery_stream(DeliveryStreamName=name, Tags=[{"Key": "b", "Value": "2"}, {"Key": "c"}])
    t = firehose.list_tags_for_delivery_stream(DeliveryStreamName=name, Limit=2)
    assert [x["Key"] for x in t["Tags"]] == ["a", "b"]
    assert t["HasMoreTags"] is True
    t = firehose.list_tags_for_delivery_stream(DeliveryStreamName=name, ExclusiveStartTagKey="b")
    assert t["Tags"] == [{"Key": "c"}]
    firehose.untag_delivery_stream(DeliveryStreamName=name, TagKeys=["a", "c"])
    assert firehose.list_tags_for_delivery_stream(DeliveryStreamName=name)["Tags"] == [{"Key": "b", "Value": "2"}]
    with pytest.raises(firehose.exceptions.LimitExceededException):
        firehose.tag_delivery_stream(DeliveryStreamName=name, Tags=[{"Key": f"k{i}"} for i in range(50)])
    with pytest.raises(firehose.exceptions.ResourceNotFoundException):
        firehose.list_tags_for_delivery_stream(DeliveryStreamName="compat-missing")


def test_encryption(firehose, name):
    firehose.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=dest("bkt"))
    firehose.start_delivery_stream_encryption(
        DeliveryStreamName=name, DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"}
    )
    d = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert d["DeliveryStreamEncryptionConfiguration"] == {"KeyType": "AWS_OWNED_CMK", "Status": "ENABLED"}
    assert firehose.put_record(DeliveryStreamName=name, Record={"Data": b"x"})["Encrypted"] is True
    firehose.stop_delivery_stream_encryption(DeliveryStreamName=name)
    d = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert d["DeliveryStreamEncryptionConfiguration"]["Status"] == "DISABLED"


def test_kinesis_stream_as_source(firehose, kinesis, server, name):
    src = "compat-src-" + uuid.uuid4().hex[:8]
    kinesis.create_stream(StreamName=src, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=src, WaiterConfig={"Delay": 0.2})
    arn = kinesis.describe_stream_summary(StreamName=src)["StreamDescriptionSummary"]["StreamARN"]
    bucket = "compat-" + uuid.uuid4().hex[:8]
    root = os.path.join(server.dir, "data", "objects", bucket)
    os.makedirs(root)
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": arn, "RoleARN": ROLE},
        ExtendedS3DestinationConfiguration=dest(bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}),
    )
    d = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert d["DeliveryStreamType"] == "KinesisStreamAsSource"
    ks = d["Source"]["KinesisStreamSourceDescription"]
    assert ks["KinesisStreamARN"] == arn and ks["RoleARN"] == ROLE
    assert "DeliveryStartTimestamp" in ks
    assert name in firehose.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource")["DeliveryStreamNames"]
    with pytest.raises(firehose.exceptions.InvalidArgumentException):
        firehose.put_record(DeliveryStreamName=name, Record={"Data": b"x"})
    want = sorted(f"k{i}".encode() for i in range(30))
    kinesis.put_records(StreamName=src, Records=[
        {"PartitionKey": f"p{i}", "Data": f"k{i}\n".encode()} for i in range(30)])
    deadline = time.time() + 20
    lines = []
    while time.time() < deadline:
        lines = sorted(b"".join(d for _, d in objects(root)).splitlines())
        if lines == want:
            break
        time.sleep(0.2)
    assert lines == want
    firehose.delete_delivery_stream(DeliveryStreamName=name)
    kinesis.delete_stream(StreamName=src)


def test_zip_objects_hold_one_file_named_after_the_object(firehose, server, name):
    bucket = "compat-" + uuid.uuid4().hex[:8]
    root = os.path.join(server.dir, "data", "objects", bucket)
    os.makedirs(root)
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=dest(bucket, CompressionFormat="ZIP", Prefix="z/"),
    )
    sent = [f"zip-{i}\n".encode() for i in range(50)]
    assert firehose.put_record_batch(
        DeliveryStreamName=name, Records=[{"Data": d} for d in sent])["FailedPutCount"] == 0
    deadline = time.time() + 20
    while not objects(root) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)
    got = []
    for key, data in objects(root):
        assert key.startswith("z/") and key.endswith(".zip"), key
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            (info,) = z.infolist()
            assert info.filename == os.path.basename(key)[: -len(".zip")]
            assert info.compress_type == zipfile.ZIP_DEFLATED
            got.extend(z.read(info).splitlines(keepends=True))
    assert sorted(got) == sorted(sent)


def test_source_records_are_backed_up(firehose, server, name):
    bucket = "compat-" + uuid.uuid4().hex[:8]
    backup = bucket + "-raw"
    for b in (bucket, backup):
        os.makedirs(os.path.join(server.dir, "data", "objects", b))
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=dest(
            bucket, Prefix="main/", S3BackupMode="Enabled",
            S3BackupConfiguration={"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{backup}",
                                   "Prefix": "raw/", "CompressionFormat": "GZIP"}),
    )
    ext = firehose.describe_delivery_stream(DeliveryStreamName=name)[
        "DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["S3BackupMode"] == "Enabled"
    assert ext["S3BackupDescription"]["BucketARN"] == f"arn:aws:s3:::{backup}"
    assert ext["S3BackupDescription"]["CompressionFormat"] == "GZIP"
    sent = [f"b-{i}\n".encode() for i in range(20)]
    assert firehose.put_record_batch(
        DeliveryStreamName=name, Records=[{"Data": d} for d in sent])["FailedPutCount"] == 0
    roots = [os.path.join(server.dir, "data", "objects", b) for b in (bucket, backup)]
    deadline = time.time() + 20
    while not all(objects(r) for r in roots) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)
    main_objs, raw_objs = objects(roots[0]), objects(roots[1])
    assert all(k.startswith("main/") for k, _ in main_objs)
    assert raw_objs and all(k.startswith("raw/") and k.endswith(".gz") for k, _ in raw_objs)
    for objs in (main_objs, raw_objs):
        assert sorted(b"".join(d for _, d in objs).splitlines(keepends=True)) == sorted(sent)
    # Backup can be turned on, not off.
    v = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]["VersionId"]
    with pytest.raises(firehose.exceptions.InvalidArgumentException):
        firehose.update_destination(
            DeliveryStreamName=name, CurrentDeliveryStreamVersionId=v,
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"S3BackupMode": "Disabled"})
