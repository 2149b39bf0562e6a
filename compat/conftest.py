"""Starts the real ripstream binary for the compat suite.

The binary is taken from $RIPSTREAM_BIN, else target/debug/ripstream.
"""
import os
import shutil
import subprocess
import tempfile
import threading
import uuid

import boto3
import pytest
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RIPSTREAM_BIN", os.path.join(ROOT, "target", "debug", "ripstream"))


CREDENTIALS = """
[[principal]]
name = "admin"
access_key_id = "AKIDCOMPATADMIN00001"
secret_access_key = "compat-admin-secret"

[[principal]]
name = "writer"
access_key_id = "AKIDCOMPATWRITER0001"
secret_access_key = "compat-writer-secret"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kinesis:PutRecord*", "kinesis:Describe*", "kinesis:List*"], "Resource": "*"}]}'''
"""


class Server:
    def __init__(self, extra=()):
        self.dir = tempfile.mkdtemp(prefix="ripstream-compat-")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.dir, "data"), *extra],
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.dir, "server.log"), "w"),
            text=True,
        )
        line = self.proc.stdout.readline()
        if "http://" not in line:
            raise RuntimeError("server did not start: " + open(os.path.join(self.dir, "server.log")).read())
        self.url = line.strip().split(" ")[-1]
        # Keep draining stdout so the server never blocks on the pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def secure_server():
    path = os.path.join(tempfile.mkdtemp(prefix="ripstream-creds-"), "credentials.toml")
    with open(path, "w") as f:
        f.write(CREDENTIALS)
    s = Server(extra=("--credentials", path))
    yield s
    s.stop()


def make_client(url, key, secret):
    return boto3.client(
        "kinesis",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture(scope="session")
def kinesis(server):
    return boto3.client(
        "kinesis",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCOMPAT",
        aws_secret_access_key="secret",
        # As applications do: retry throttling (the server enforces AWS's per-shard quotas).
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
    )


@pytest.fixture(scope="session")
def firehose(server):
    return boto3.client(
        "firehose",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCOMPAT",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture
def stream(kinesis):
    """A fresh 2-shard stream, deleted afterwards."""
    name = "compat-" + uuid.uuid4().hex[:10]
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    yield name
    try:
        kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    except kinesis.exceptions.ResourceNotFoundException:
        pass


@pytest.fixture
def aws_env(server):
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="AKIDCOMPAT",
        AWS_SECRET_ACCESS_KEY="secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_PAGER="",
    )
    return env
