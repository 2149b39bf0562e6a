"""boto3 `firehose` with a RedshiftDestinationConfiguration, delivered into a
PostgreSQL this module starts itself (initdb into a temp dir, postgres on a
free 127.0.0.1 port, as `nobody` when run as root since PostgreSQL refuses
root). Without the server binaries the tests fail: .ci/run installs them."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

ROLE = "arn:aws:iam::000000000000:role/firehose"
PASSWORD = "compat-pg-pw"


def pg_bindir():
    def has(d):
        return os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "postgres"))

    try:
        d = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if has(d):
            return d
    except (OSError, subprocess.CalledProcessError):
        pass
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and has(d):
            return d
    found = sorted(d for d in glob.glob("/usr/lib/postgresql/*/bin") if has(d))
    if not found:
        pytest.fail("the PostgreSQL server binaries (initdb, postgres) were not found: install them (Debian: apt-get install -y postgresql; .ci/run does)")
    return found[-1]


class Postgres:
    def __init__(self):
        self.bin = pg_bindir()
        self.root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="ripstream-compat-pg-", dir="/tmp")
        os.mkdir(os.path.join(self.dir, "sock"))
        with open(os.path.join(self.dir, "pw"), "w") as f:
            f.write(PASSWORD)
        if self.root:
            subprocess.run(["chown", "-R", "nobody:", self.dir], check=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", data, "-U", "postgres", "-E", "UTF8", "--no-locale",
                 "-A", "scram-sha-256", "--pwfile=" + os.path.join(self.dir, "pw"))
        self.log = open(os.path.join(self.dir, "pg.log"), "w")
        self.proc = subprocess.Popen(
            self.cmd("postgres", "-D", data, "-k", os.path.join(self.dir, "sock"),
                     "-p", str(self.port), "-h", "127.0.0.1"),
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 60
        while True:
            if "ready to accept connections" in open(os.path.join(self.dir, "pg.log")).read():
                break
            assert self.proc.poll() is None, open(os.path.join(self.dir, "pg.log")).read()
            assert time.time() < deadline, "postgres did not start"
            time.sleep(0.05)

    def cmd(self, prog, *args):
        path = os.path.join(self.bin, prog)
        return (["runuser", "-u", "nobody", "--", path] if self.root else [path]) + list(args)

    def run(self, prog, *args):
        subprocess.run(self.cmd(prog, *args), check=True, capture_output=True)

    def sql(self, query, db="postgres"):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        out = subprocess.run(
            [os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", db, "-tAX", "-v", "ON_ERROR_STOP=1", "-c", query],
            capture_output=True, text=True, env=env, check=True)
        return out.stdout.strip()

    def stop(self):
        pid_file = os.path.join(self.dir, "data", "postmaster.pid")
        try:
            pid = int(open(pid_file).readline())
            os.kill(pid, 2)  # SIGINT: fast shutdown
            self.proc.wait(timeout=30)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pg():
    p = Postgres()
    p.sql("CREATE DATABASE warehouse")
    yield p
    p.stop()


def config(pg, table, options, **extra):
    c = {
        "RoleARN": ROLE,
        "ClusterJDBCURL": f"jdbc:redshift://127.0.0.1:{pg.port}/warehouse",
        "CopyCommand": {"DataTableName": table, "CopyOptions": options},
        "Username": "postgres",
        "Password": PASSWORD,
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::compat-stage",
                            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1}},
    }
    c.update(extra)
    return c


def test_rows_arrive_in_postgresql(firehose, server, pg):
    os.makedirs(os.path.join(server.dir, "data", "objects", "compat-stage"), exist_ok=True)
    table = "t_" + uuid.uuid4().hex[:8]
    pg.sql(f"CREATE TABLE {table} (id int, name text)", db="warehouse")
    name = "compat-rs-" + uuid.uuid4().hex[:8]
    with pytest.raises(firehose.exceptions.InvalidArgumentException) as e:
        firehose.create_delivery_stream(DeliveryStreamName=name,
                                        RedshiftDestinationConfiguration=config(pg, table, "JSON 'auto' MAXERROR 1"))
    assert "MAXERROR" in str(e.value)
    firehose.create_delivery_stream(DeliveryStreamName=name,
                                    RedshiftDestinationConfiguration=config(pg, table, "json 'auto ignorecase'"))
    d = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    rs = d["Destinations"][0]["RedshiftDestinationDescription"]
    assert "Password" not in rs
    assert rs["Username"] == "postgres"
    assert rs["RetryOptions"] == {"DurationInSeconds": 3600}
    assert rs["S3DestinationDescription"]["BucketARN"] == "arn:aws:s3:::compat-stage"
    out = firehose.put_record_batch(DeliveryStreamName=name, Records=[
        {"Data": b'{"id": 1, "name": "one"}'}, {"Data": b'{"ID": 2, "Name": "two"}'}])
    assert out["FailedPutCount"] == 0
    deadline = time.time() + 60
    while pg.sql(f"SELECT count(*) FROM {table}", db="warehouse") != "2":
        assert time.time() < deadline, "rows not loaded"
        time.sleep(0.2)
    assert pg.sql(f"SELECT string_agg(id || ':' || name, ',' ORDER BY id) FROM {table}", db="warehouse") == "1:one,2:two"
    loads = pg.sql(f"SELECT count(*) FROM ripstream_firehose_loads WHERE stream = '{name}'", db="warehouse")
    assert loads == "1"
    firehose.delete_delivery_stream(DeliveryStreamName=name)
