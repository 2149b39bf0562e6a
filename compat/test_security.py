"""SigV4 and policies with boto3, the AWS CLI and presigned requests."""
import json
import os
import subprocess
import sys
import urllib.request
import urllib.error

import boto3
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import make_client

AWS = os.path.join(os.path.dirname(sys.executable), "aws")


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_boto3_signatures_and_policies(secure_server):
    admin = make_client(secure_server.url, "AKIDCOMPATADMIN00001", "compat-admin-secret")
    admin.create_stream(StreamName="sec-boto", ShardCount=1)
    writer = make_client(secure_server.url, "AKIDCOMPATWRITER0001", "compat-writer-secret")
    writer.put_record(StreamName="sec-boto", PartitionKey="k", Data=b"signed")
    with pytest.raises(ClientError) as e:
        writer.delete_stream(StreamName="sec-boto")
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        make_client(secure_server.url, "AKIDCOMPATADMIN00001", "wrong").list_streams()
    assert code(e) == "InvalidSignatureException"
    with pytest.raises(ClientError) as e:
        make_client(secure_server.url, "AKIDUNKNOWN000000000", "x").list_streams()
    assert code(e) == "UnrecognizedClientException"


def test_aws_cli_signs_with_configured_keys(secure_server):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDCOMPATADMIN00001", AWS_SECRET_ACCESS_KEY="compat-admin-secret",
               AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="")
    out = subprocess.run([AWS, "kinesis", "--endpoint-url", secure_server.url, "list-streams"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    env["AWS_SECRET_ACCESS_KEY"] = "bad"
    out = subprocess.run([AWS, "kinesis", "--endpoint-url", secure_server.url, "list-streams"], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "InvalidSignatureException" in out.stderr


class JsonQueryAuth(SigV4QueryAuth):
    """Query-string SigV4 that keeps (and signs) a JSON body: botocore's
    presigner would move the body into the query, as for form-encoded APIs."""

    def _modify_request_before_signing(self, request):
        body, request.data = request.data, b""
        super()._modify_request_before_signing(request)
        request.data = body


def presigned(url, body, secret="compat-admin-secret"):
    req = AWSRequest(method="POST", url=url + "/", data=body,
                     headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"})
    JsonQueryAuth(Credentials("AKIDCOMPATADMIN00001", secret), "kinesis", "us-east-1", expires=300).add_auth(req)
    return req


def send(req):
    r = urllib.request.Request(req.url, data=req.data or b"{}", headers=dict(req.headers), method="POST")
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_presigned_query_authentication(secure_server):
    status, body = send(presigned(secure_server.url, b"{}"))
    assert status == 200, body
    assert "StreamNames" in body
    status, body = send(presigned(secure_server.url, b"{}", secret="nope"))
    assert status == 400
    assert body["__type"] == "InvalidSignatureException"
    status, body = send(AWSRequest(method="POST", url=secure_server.url + "/", data=b"{}",
                                   headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"}))
    assert body["__type"] == "MissingAuthenticationTokenException"


def sts_client(url, key, secret):
    return boto3.client("sts", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"mode": "standard", "max_attempts": 1}))


def test_sts_get_caller_identity(server, secure_server):
    # Anonymous mode: the account's root.
    anon = sts_client(server.url, "AKIDANY", "any").get_caller_identity()
    assert anon["Account"] == "000000000000"
    assert anon["Arn"] == "arn:aws:iam::000000000000:root"
    assert anon["UserId"] == "000000000000"
    # Signed: the principal the keys belong to, whatever its policy grants.
    writer = sts_client(secure_server.url, "AKIDCOMPATWRITER0001", "compat-writer-secret").get_caller_identity()
    assert writer["Arn"] == "arn:aws:iam::000000000000:user/writer"
    assert writer["Account"] == "000000000000"
    assert writer["UserId"].startswith("AIDA") and len(writer["UserId"]) == 21
    admin = sts_client(secure_server.url, "AKIDCOMPATADMIN00001", "compat-admin-secret").get_caller_identity()
    assert admin["Arn"] == "arn:aws:iam::000000000000:user/admin"
    assert admin["UserId"] != writer["UserId"]
    with pytest.raises(ClientError) as e:
        sts_client(secure_server.url, "AKIDCOMPATADMIN00001", "wrong").get_caller_identity()
    assert code(e) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:
        sts_client(secure_server.url, "AKIDUNKNOWN000000000", "x").get_caller_identity()
    assert code(e) == "InvalidClientTokenId"
    # An STS operation Ripstream does not serve.
    with pytest.raises(ClientError) as e:
        sts_client(secure_server.url, "AKIDCOMPATADMIN00001", "compat-admin-secret").get_session_token()
    assert code(e) == "InvalidAction"
