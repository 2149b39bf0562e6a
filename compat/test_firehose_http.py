"""boto3 `firehose` against ripstream's push destinations: create, describe
and update an HTTP endpoint, Splunk, Amazon OpenSearch Service and
Elasticsearch destination in AWS's shapes, and one delivery to an HTTP
endpoint receiver (Python's http.server on 127.0.0.1) in AWS's protocol.

The server runs with --firehose-allow-http-destinations true, as the
receiver speaks plain HTTP; a default server refuses http:// URLs."""
import base64
import gzip
import http.server
import json
import threading
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from conftest import Server

ROLE = "arn:aws:iam::000000000000:role/firehose"
S3 = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::compat-push"}


@pytest.fixture(scope="module")
def push_server():
    s = Server(extra=("--firehose-allow-http-destinations", "true", "--firehose-endpoint-timeout-ms", "2000"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fh(push_server):
    return boto3.client(
        "firehose",
        endpoint_url=push_server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCOMPAT",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def name(fh):
    n = "push-" + uuid.uuid4().hex[:10]
    yield n
    try:
        fh.delete_delivery_stream(DeliveryStreamName=n)
    except fh.exceptions.ResourceNotFoundException:
        pass


class Receiver:
    """An HTTP endpoint that answers as AWS's specification asks."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = json.loads(body)
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, req))
                out = json.dumps({"requestId": req["requestId"], "timestamp": int(time.time() * 1000)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/firehose"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def destination(fh, name):
    d = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    return d, d["Destinations"][0]


def test_http_endpoint_create_describe_update_and_deliver(fh, name, receiver, push_server):
    import os
    os.makedirs(os.path.join(push_server.dir, "data", "objects", "compat-push"), exist_ok=True)
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        HttpEndpointDestinationConfiguration={
            "EndpointConfiguration": {"Url": receiver.url, "Name": "py", "AccessKey": "compat-key"},
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
            "RequestConfiguration": {
                "ContentEncoding": "GZIP",
                "CommonAttributes": [{"AttributeName": "team", "AttributeValue": "data"}],
            },
            "S3Configuration": S3,
        },
    )
    d, dest = destination(fh, name)
    h = dest["HttpEndpointDestinationDescription"]
    assert h["EndpointConfiguration"] == {"Url": receiver.url, "Name": "py"}
    assert "AccessKey" not in json.dumps(h)
    assert h["S3BackupMode"] == "FailedDataOnly"
    assert h["RetryOptions"] == {"DurationInSeconds": 300}
    assert h["S3DestinationDescription"]["BucketARN"] == S3["BucketARN"]

    fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"r1"}, {"Data": b"r2"}])
    deadline = time.time() + 60
    while not receiver.requests and time.time() < deadline:
        time.sleep(0.1)
    assert receiver.requests, "nothing delivered"
    headers, req = receiver.requests[0]
    assert headers["x-amz-firehose-protocol-version"] == "1.0"
    assert headers["x-amz-firehose-access-key"] == "compat-key"
    assert headers["x-amz-firehose-request-id"] == req["requestId"]
    assert headers["x-amz-firehose-source-arn"].endswith(f":deliverystream/{name}")
    assert json.loads(headers["x-amz-firehose-common-attributes"]) == {"commonAttributes": {"team": "data"}}
    assert [base64.b64decode(r["data"]) for r in req["records"]] == [b"r1", b"r2"]

    fh.update_destination(
        DeliveryStreamName=name,
        CurrentDeliveryStreamVersionId=d["VersionId"],
        DestinationId=dest["DestinationId"],
        HttpEndpointDestinationUpdate={"RetryOptions": {"DurationInSeconds": 60}, "S3BackupMode": "AllData"},
    )
    d, dest = destination(fh, name)
    assert d["VersionId"] == "2"
    h = dest["HttpEndpointDestinationDescription"]
    assert h["RetryOptions"] == {"DurationInSeconds": 60}
    assert h["S3BackupMode"] == "AllData"
    assert h["EndpointConfiguration"]["Name"] == "py"


def test_splunk_create_describe_update(fh, name):
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        SplunkDestinationConfiguration={
            "HECEndpoint": "https://splunk.example.com:8088",
            "HECEndpointType": "Raw",
            "HECToken": "00000000-0000-0000-0000-000000000000",
            "S3Configuration": S3,
        },
    )
    d, dest = destination(fh, name)
    s = dest["SplunkDestinationDescription"]
    assert s["HECEndpointType"] == "Raw"
    assert s["HECAcknowledgmentTimeoutInSeconds"] == 180
    assert s["RetryOptions"] == {"DurationInSeconds": 3600}
    assert s["S3BackupMode"] == "FailedEventsOnly"
    assert s["BufferingHints"] == {"SizeInMBs": 5, "IntervalInSeconds": 60}
    fh.update_destination(
        DeliveryStreamName=name,
        CurrentDeliveryStreamVersionId="1",
        DestinationId=dest["DestinationId"],
        SplunkDestinationUpdate={"HECEndpointType": "Event", "HECAcknowledgmentTimeoutInSeconds": 300},
    )
    _, dest = destination(fh, name)
    s = dest["SplunkDestinationDescription"]
    assert (s["HECEndpointType"], s["HECAcknowledgmentTimeoutInSeconds"]) == ("Event", 300)
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        fh.update_destination(
            DeliveryStreamName=name,
            CurrentDeliveryStreamVersionId="2",
            DestinationId=dest["DestinationId"],
            SplunkDestinationUpdate={"HECEndpoint": "ftp://splunk.example.com"},
        )


@pytest.mark.parametrize("kind", ["Amazonopensearchservice", "Elasticsearch"])
def test_search_create_describe_update(fh, name, kind):
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        **{f"{kind}DestinationConfiguration": {
            "RoleARN": ROLE,
            "ClusterEndpoint": "https://search.example.com",
            "IndexName": "logs",
            "TypeName": "_doc",
            "S3Configuration": S3,
        }},
    )
    d, dest = destination(fh, name)
    o = dest[f"{kind}DestinationDescription"]
    assert o["ClusterEndpoint"] == "https://search.example.com"
    assert o["IndexRotationPeriod"] == "OneDay"
    assert o["DocumentIdOptions"] == {"DefaultDocumentIdFormat": "FIREHOSE_DEFAULT"}
    assert o["S3BackupMode"] == "FailedDocumentsOnly"
    assert o["RetryOptions"] == {"DurationInSeconds": 300}
    fh.update_destination(
        DeliveryStreamName=name,
        CurrentDeliveryStreamVersionId="1",
        DestinationId=dest["DestinationId"],
        **{f"{kind}DestinationUpdate": {"IndexRotationPeriod": "OneHour", "IndexName": "events"}},
    )
    _, dest = destination(fh, name)
    o = dest[f"{kind}DestinationDescription"]
    assert (o["IndexName"], o["IndexRotationPeriod"]) == ("events", "OneHour")
    assert o["TypeName"] == "_doc"
    # An update shape without S3BackupMode: the mode stays as created.
    assert o["S3BackupMode"] == "FailedDocumentsOnly"


def test_domain_arns_cannot_be_resolved_here(fh, name):
    with pytest.raises(fh.exceptions.InvalidArgumentException) as e:
        fh.create_delivery_stream(
            DeliveryStreamName=name,
            AmazonopensearchserviceDestinationConfiguration={
                "RoleARN": ROLE,
                "DomainARN": "arn:aws:es:us-east-1:000000000000:domain/logs",
                "IndexName": "logs",
                "S3Configuration": S3,
            },
        )
    assert "ClusterEndpoint" in str(e.value)


def test_http_urls_need_the_servers_opt_in(firehose):
    # The suite's default server does not allow http:// destinations.
    n = "push-" + uuid.uuid4().hex[:10]
    with pytest.raises(firehose.exceptions.InvalidArgumentException) as e:
        firehose.create_delivery_stream(
            DeliveryStreamName=n,
            HttpEndpointDestinationConfiguration={
                "EndpointConfiguration": {"Url": "http://127.0.0.1:9/"},
                "S3Configuration": S3,
            },
        )
    assert "https" in str(e.value)
