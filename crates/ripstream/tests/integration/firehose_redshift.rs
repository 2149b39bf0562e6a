//! Firehose's Redshift destination delivered into a real PostgreSQL: each
//! test runs its own server (`initdb` into a temp dir, `postgres` on a free
//! port of 127.0.0.1, as `nobody` when the tests run as root, since
//! PostgreSQL refuses to run as root) and checks the rows it receives, the
//! staged files, the error output, a crash between COPY and checkpoint,
//! and a database that goes away and comes back.
//!
//! The server binaries are found through `pg_config --bindir`, then PATH,
//! then `/usr/lib/postgresql/*/bin`; without them the tests fail (CI
//! installs them: `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, CopyCommand, RedshiftDestinationConfiguration,
    RedshiftRetryOptions, RedshiftS3BackupMode, S3DestinationConfiguration,
};
use base64::Engine;
use tempfile::TempDir;

use crate::firehose::{ROLE, bucket_dir, firehose, objects, record, wait_until};
use crate::support::*;

const PASSWORD: &str = "warehouse-pw";

/// The directory holding `initdb` and `postgres`.
fn pg_bindir() -> PathBuf {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&d) {
            return d;
        }
    }
    for d in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has(&d) {
            return d;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has(d))
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "the PostgreSQL server binaries (initdb, postgres) were not found through \
             `pg_config --bindir`, PATH or /usr/lib/postgresql/*/bin: install them \
             (Debian: apt-get install -y postgresql; .ci/run does) to run the Redshift tests"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL server of the test's own, stopped when dropped.
pub(crate) struct Pg {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    /// initdb and postgres refuse to run as root: they run as `nobody`.
    as_root: bool,
}

impl Pg {
    pub fn start() -> Pg {
        let bin = pg_bindir();
        let as_root = unsafe { libc::geteuid() } == 0;
        // Under /tmp, which `nobody` can traverse.
        let dir = tempfile::Builder::new()
            .prefix("ripstream-pg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
        if as_root {
            let ok = Command::new("chown")
                .args(["-R", "nobody:"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "cannot chown the PostgreSQL directory to nobody");
        }
        let mut pg = Pg {
            dir,
            bin,
            port: free_port(),
            child: None,
            as_root,
        };
        let data = pg.dir.path().join("data");
        let pw = pg.dir.path().join("pw");
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "-A",
                "scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pw.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg.spawn();
        pg
    }

    fn command(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pg.log"))
            .unwrap();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path().join("sock"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.dir.path().join("data/postmaster.pid").exists()
                && self.log().contains("ready to accept connections")
            {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("postgres exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT to the postmaster), then SIGKILL if it lingers.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if let Some(pid) = pid {
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                if let Some(pid) = pid {
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The next start must not take a half-gone server for a live one.
        let _ = std::fs::remove_file(self.dir.path().join("data/postmaster.pid"));
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.dir.path().join("pg.log"));
    }

    async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname={db}",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test's PostgreSQL: {e}"));
        tokio::spawn(conn);
        client
    }

    /// A database of its own, created through `postgres`.
    pub async fn database(&self, name: &str) -> tokio_postgres::Client {
        self.client("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        self.client(name).await
    }

    pub fn jdbc(&self, scheme: &str, db: &str) -> String {
        format!("jdbc:{scheme}://127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn config(
    url: &str,
    table: &str,
    columns: Option<&str>,
    options: &str,
    gzip: bool,
    retry_s: i32,
) -> RedshiftDestinationConfiguration {
    let mut copy = CopyCommand::builder()
        .data_table_name(table)
        .copy_options(options);
    if let Some(c) = columns {
        copy = copy.data_table_columns(c);
    }
    let s3 = S3DestinationConfiguration::builder()
        .role_arn(ROLE)
        .bucket_arn("arn:aws:s3:::stage")
        .buffering_hints(
            BufferingHints::builder()
                .size_in_mbs(1)
                .interval_in_seconds(1)
                .build(),
        )
        .compression_format(if gzip {
            CompressionFormat::Gzip
        } else {
            CompressionFormat::Uncompressed
        })
        .build()
        .unwrap();
    RedshiftDestinationConfiguration::builder()
        .role_arn(ROLE)
        .cluster_jdbcurl(url)
        .copy_command(copy.build().unwrap())
        .username("postgres")
        .password(PASSWORD)
        .retry_options(
            RedshiftRetryOptions::builder()
                .duration_in_seconds(retry_s)
                .build(),
        )
        .s3_configuration(s3)
        .build()
        .unwrap()
}

pub(crate) async fn create(
    c: &aws_sdk_firehose::Client,
    name: &str,
    cfg: RedshiftDestinationConfiguration,
) {
    c.create_delivery_stream()
        .delivery_stream_name(name)
        .redshift_destination_configuration(cfg)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {:?}", e.into_service_error()));
}

pub(crate) async fn put(c: &aws_sdk_firehose::Client, name: &str, records: &[&[u8]]) {
    let mut req = c.put_record_batch().delivery_stream_name(name);
    for r in records {
        req = req.records(record(r));
    }
    let out = req.send().await.unwrap();
    assert_eq!(out.failed_put_count(), 0);
}

pub(crate) async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
}

/// Polls `sql` (a count) until it is `want`.
pub(crate) async fn wait_count(
    db: &tokio_postgres::Client,
    sql: &str,
    want: i64,
    srv: &TestServer,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = count(db, sql).await;
        if n == want {
            return;
        }
        assert!(n < want, "{sql}: {n} rows, more than the {want} expected");
        assert!(
            Instant::now() < deadline,
            "{sql}: {n} rows, not {want}; server log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rows_arrive_through_json_csv_and_text_copy_options() {
    let pg = Pg::start();
    let db = pg.database("warehouse").await;
    db.batch_execute(
        "CREATE TABLE events (id int PRIMARY KEY, name text, score double precision, at timestamptz, tags text);
         CREATE TABLE lines (id int, label text, note text);",
    )
    .await
    .unwrap();
    let srv = TestServer::start();
    let stage = bucket_dir(&srv, "stage");
    let c = firehose(&srv.url());
    let url = pg.jdbc("postgresql", "warehouse");

    // What cannot be translated is refused at create time, naming it.
    for (cfg, named) in [
        (
            config(&url, "events", None, "JSON 'auto' MAXERROR 5", false, 60),
            "MAXERROR",
        ),
        (
            config(&url, "events", None, "JSON 's3://b/paths.json'", false, 60),
            "JSONPaths",
        ),
        (
            config("jdbc:mysql://127.0.0.1:1/x", "events", None, "", false, 60),
            "ClusterJDBCURL",
        ),
        (config(&url, "events", None, "CSV", true, 60), "GZIP"),
    ] {
        let e = c
            .create_delivery_stream()
            .delivery_stream_name("refused")
            .redshift_destination_configuration(cfg)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(e.is_invalid_argument_exception(), "{e:?}");
        assert!(format!("{e:?}").contains(named), "{named}: {e:?}");
    }

    // JSON 'auto ignorecase' without a column list: the table's columns.
    create(
        &c,
        "json",
        config(
            &pg.jdbc("redshift", "warehouse"),
            "public.events",
            None,
            "JSON 'auto ignorecase' TIMEFORMAT 'auto'",
            false,
            3600,
        ),
    )
    .await;
    // CSV with a delimiter, GZIP-staged files and NULL AS.
    create(
        &c,
        "csv",
        config(
            &url,
            "lines",
            Some("id, label, note"),
            "FORMAT AS CSV DELIMITER ';' GZIP NULL AS 'NA'",
            true,
            3600,
        ),
    )
    .await;
    // Redshift's default text format: pipes, no quoting; the source
    // records backed up to a bucket of their own.
    let backup = bucket_dir(&srv, "backup");
    let mut text = config(
        &url,
        "lines",
        Some("id,label,note"),
        "DELIMITER '|' NULL AS 'nil'",
        false,
        3600,
    );
    text.s3_backup_mode = Some(RedshiftS3BackupMode::Enabled);
    text.s3_backup_configuration = Some(
        S3DestinationConfiguration::builder()
            .role_arn(ROLE)
            .bucket_arn("arn:aws:s3:::backup")
            .prefix("source/")
            .compression_format(CompressionFormat::Gzip)
            .build()
            .unwrap(),
    );
    create(&c, "text", text).await;

    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("csv")
        .send()
        .await
        .unwrap();
    let dest = &d.delivery_stream_description().unwrap().destinations()[0];
    let rs = dest.redshift_destination_description().unwrap();
    assert_eq!(rs.cluster_jdbcurl(), url);
    assert_eq!(rs.username(), Some("postgres"));
    assert_eq!(
        rs.copy_command().unwrap().data_table_columns(),
        Some("id, label, note")
    );
    assert_eq!(
        rs.retry_options().unwrap().duration_in_seconds(),
        Some(3600)
    );
    let s3 = rs.s3_destination_description().unwrap();
    assert_eq!(s3.bucket_arn(), "arn:aws:s3:::stage");
    assert_eq!(s3.compression_format(), &CompressionFormat::Gzip);
    assert!(dest.extended_s3_destination_description().is_none());
    let described = api(
        &srv.addr,
        "Firehose_20150804.DescribeDeliveryStream",
        r#"{"DeliveryStreamName": "csv"}"#,
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&described.body).contains(PASSWORD),
        "Describe must never return the password"
    );

    put(
        &c,
        "json",
        &[
            br#"{"id": 1, "name": "ann", "score": 1.5, "at": "2026-12-04T10:00:00Z", "tags": ["x", "y"]}"#,
            br#"{"ID": 2, "Name": "bob", "extra": 1}"#,
            b"not json",
            br#"{"Id": 3, "NAME": null}"#,
        ],
    )
    .await;
    put(&c, "csv", &[b"1;one;NA\n", b"2;\"two;2\";x\n"]).await;
    put(&c, "text", &[b"10|ten|nil\n", b"11|\"q\"|\n"]).await;

    wait_count(&db, "SELECT count(*) FROM events", 3, &srv).await;
    wait_count(&db, "SELECT count(*) FROM lines", 4, &srv).await;
    let row = db
        .query_one(
            "SELECT name, score, extract(epoch FROM at)::bigint, tags FROM events WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("ann"));
    assert_eq!(row.get::<_, Option<f64>>(1), Some(1.5));
    assert_eq!(row.get::<_, Option<i64>>(2), Some(1_796_378_400));
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some(r#"["x","y"]"#)
    );
    let names: Vec<Option<String>> = db
        .query("SELECT name FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, [Some("ann".into()), Some("bob".into()), None]);
    let lines: Vec<(i32, Option<String>, Option<String>)> = db
        .query("SELECT id, label, note FROM lines ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        lines,
        [
            (1, Some("one".into()), None),
            (2, Some("two;2".into()), Some("x".into())),
            (10, Some("ten".into()), None),
            // No quoting in text format; an empty field is an empty string.
            (11, Some("\"q\"".into()), Some(String::new())),
        ]
    );

    // The load manifest: one row per staged file, keyed by its S3 URL.
    let manifest = db
        .query(
            "SELECT stream, object_key FROM ripstream_firehose_loads",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(manifest.len(), 3, "one staged file per stream");
    for r in &manifest {
        let key: String = r.get(1);
        let stream: String = r.get(0);
        assert!(key.starts_with("s3://stage/"), "{key}");
        assert!(key.contains(&format!("/{stream}-1-")), "{key}");
    }

    // The staged files: AWS's names, the GZIP stream's compressed.
    let staged = objects(&stage);
    let csv: Vec<_> = staged
        .iter()
        .filter(|(k, _)| k.contains("/csv-1-"))
        .collect();
    assert_eq!(csv.len(), 1, "{staged:?}");
    assert!(csv[0].0.ends_with(".gz"), "{}", csv[0].0);
    assert_eq!(csv[0].1, b"1;one;NA\n2;\"two;2\";x\n");
    assert!(
        manifest
            .iter()
            .any(|r| r.get::<_, String>(1) == format!("s3://stage/{}", csv[0].0))
    );
    // The record that is not JSON: the error output, AWS's error record.
    let errors: Vec<_> = staged
        .iter()
        .filter(|(k, _)| k.starts_with("errors/redshift-failed/"))
        .collect();
    assert_eq!(errors.len(), 1, "{staged:?}");
    let line: serde_json::Value =
        serde_json::from_slice(errors[0].1.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["errorCode"], "Redshift.InvalidRecord");
    assert_eq!(
        line["rawData"],
        base64::engine::general_purpose::STANDARD.encode(b"not json")
    );

    let mut backed_up = Vec::new();
    wait_until("the source backup", Duration::from_secs(30), || {
        backed_up = objects(&backup);
        !backed_up.is_empty()
    })
    .await;
    assert_eq!(backed_up.len(), 1);
    assert!(
        backed_up[0].0.starts_with("source/") && backed_up[0].0.ends_with(".gz"),
        "{}",
        backed_up[0].0
    );
    assert_eq!(backed_up[0].1, b"10|ten|nil\n11|\"q\"|\n");
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("text")
        .send()
        .await
        .unwrap();
    let rs = d.delivery_stream_description().unwrap().destinations()[0]
        .redshift_destination_description()
        .unwrap();
    assert_eq!(rs.s3_backup_mode(), Some(&RedshiftS3BackupMode::Enabled));
    assert_eq!(
        rs.s3_backup_description().unwrap().bucket_arn(),
        "arn:aws:s3:::backup"
    );

    // Counted right after the commit the rows became visible with.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = raw(&srv.addr, false, "GET", "/metrics", &[], Vec::new()).await;
        let text = String::from_utf8_lossy(&m.body).into_owned();
        if text.contains(
            r#"ripstream_firehose_delivery_to_redshift_records_total{delivery_stream="json"} 3"#,
        ) && text.contains(
            r#"ripstream_firehose_delivery_to_redshift_success_total{delivery_stream="csv"} 1"#,
        ) {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // UpdateDestination moves the csv stream to another table; the
    // records after it load there, those before it stay where they are.
    db.batch_execute("CREATE TABLE moved (id int, label text, note text);")
        .await
        .unwrap();
    let update = |copy: CopyCommand| {
        aws_sdk_firehose::types::RedshiftDestinationUpdate::builder().copy_command(copy)
    };
    let copy = CopyCommand::builder()
        .data_table_name("moved")
        .data_table_columns("id, label, note")
        .copy_options("FORMAT AS CSV DELIMITER ';' GZIP NULL AS 'NA'")
        .build()
        .unwrap();
    // A new host needs the password again (it would be sent there).
    let e = c
        .update_destination()
        .delivery_stream_name("csv")
        .current_delivery_stream_version_id("1")
        .destination_id("destinationId-000000000001")
        .redshift_destination_update(
            update(copy.clone())
                .cluster_jdbcurl("jdbc:postgresql://elsewhere.example.com:5432/warehouse")
                .build(),
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_argument_exception(), "{e:?}");
    assert!(format!("{e:?}").contains("Password"), "{e:?}");
    c.update_destination()
        .delivery_stream_name("csv")
        .current_delivery_stream_version_id("1")
        .destination_id("destinationId-000000000001")
        .redshift_destination_update(update(copy).build())
        .send()
        .await
        .unwrap();
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("csv")
        .send()
        .await
        .unwrap();
    let d = d.delivery_stream_description().unwrap();
    assert_eq!(d.version_id(), "2");
    let rs = d.destinations()[0]
        .redshift_destination_description()
        .unwrap();
    assert_eq!(rs.copy_command().unwrap().data_table_name(), "moved");
    assert_eq!(rs.cluster_jdbcurl(), url);
    put(&c, "csv", &[b"3;three;NA\n"]).await;
    wait_count(&db, "SELECT count(*) FROM moved", 1, &srv).await;
    assert_eq!(count(&db, "SELECT count(*) FROM lines").await, 4);
}

#[tokio::test]
async fn a_crash_between_copy_and_checkpoint_loads_nothing_twice() {
    let pg = Pg::start();
    let db = pg.database("warehouse").await;
    // No key: a second load of a file would show as duplicate rows.
    db.batch_execute("CREATE TABLE t (id int, v text)")
        .await
        .unwrap();
    let mut srv = TestServer::start_with_env(&[], &[("RIPSTREAM_TEST_ABORT_AFTER_COPY", "1")]);
    bucket_dir(&srv, "stage");
    let c = firehose(&srv.url());
    create(
        &c,
        "crashy",
        config(
            &pg.jdbc("postgresql", "warehouse"),
            "t",
            None,
            "json 'auto'",
            false,
            3600,
        ),
    )
    .await;
    let first: Vec<Vec<u8>> = (0..100)
        .map(|i| format!(r#"{{"id": {i}, "v": "first"}}"#).into_bytes())
        .collect();
    put(
        &c,
        "crashy",
        &first.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )
    .await;
    // The debug-only hook aborts the server right after the COPY commits.
    assert!(
        srv.wait_exit(Duration::from_secs(90)),
        "the server did not abort after the COPY; log:\n{}",
        srv.log()
    );
    assert!(
        srv.log().contains("aborting after the COPY commit"),
        "{}",
        srv.log()
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM t").await,
        100,
        "the COPY committed before the abort"
    );

    srv.set_env(&[]);
    srv.restart();
    let c = firehose(&srv.url());
    let second: Vec<Vec<u8>> = (100..150)
        .map(|i| format!(r#"{{"id": {i}, "v": "second"}}"#).into_bytes())
        .collect();
    put(
        &c,
        "crashy",
        &second.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )
    .await;
    wait_count(&db, "SELECT count(*) FROM t", 150, &srv).await;
    assert_eq!(count(&db, "SELECT count(DISTINCT id) FROM t").await, 150);
    assert_eq!(
        count(&db, "SELECT count(*) FROM ripstream_firehose_loads").await,
        2
    );
    assert!(
        srv.log()
            .contains("loaded before the restart; not loaded again"),
        "{}",
        srv.log()
    );
}

#[tokio::test]
async fn delivery_waits_for_postgresql_then_skips_or_resumes() {
    let mut pg = Pg::start();
    let db = pg.database("warehouse").await;
    db.batch_execute("CREATE TABLE t (id int, v text)")
        .await
        .unwrap();
    let srv = TestServer::start();
    let stage = bucket_dir(&srv, "stage");
    let c = firehose(&srv.url());
    let url = pg.jdbc("postgresql", "warehouse");
    // Retries for an hour (AWS's default), or not at all.
    create(
        &c,
        "patient",
        config(&url, "t", Some("id, v"), "JSON 'auto'", false, 3600),
    )
    .await;
    create(
        &c,
        "hasty",
        config(&url, "t", Some("id, v"), "JSON 'auto'", false, 0),
    )
    .await;
    put(&c, "patient", &[br#"{"id": 1, "v": "up"}"#]).await;
    wait_count(&db, "SELECT count(*) FROM t", 1, &srv).await;
    drop(db);

    pg.stop();
    put(&c, "patient", &[br#"{"id": 2, "v": "while down"}"#]).await;
    put(&c, "hasty", &[br#"{"id": 100, "v": "skipped"}"#]).await;
    // The stream without retries gives up at once: a Redshift manifest of
    // its staged file goes to the error output, for a manual backfill.
    let mut manifests = Vec::new();
    wait_until("the failed-load manifest", Duration::from_secs(60), || {
        manifests = objects(&stage)
            .into_iter()
            .filter(|(k, _)| k.starts_with("errors/redshift-failed/manifests/"))
            .collect();
        !manifests.is_empty()
    })
    .await;
    assert_eq!(manifests.len(), 1);
    assert!(manifests[0].0.contains("/hasty-1-"), "{}", manifests[0].0);
    let m: serde_json::Value = serde_json::from_slice(&manifests[0].1).unwrap();
    let url_of = m["entries"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(m["entries"][0]["mandatory"], true);
    let key = url_of.strip_prefix("s3://stage/").unwrap();
    assert_eq!(
        std::fs::read(stage.join(key)).unwrap(),
        br#"{"id": 100, "v": "skipped"}"#
    );
    // The patient stream keeps retrying while the records wait on disk.
    wait_until(
        "failed loads of the patient stream",
        Duration::from_secs(60),
        || {
            srv.log()
                .lines()
                .any(|l| l.contains("Redshift.ConnectionFailed") && l.contains("patient"))
        },
    )
    .await;

    pg.spawn();
    let db = pg.client("warehouse").await;
    wait_count(&db, "SELECT count(*) FROM t WHERE id = 2", 1, &srv).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM t").await,
        2,
        "the skipped batch is not loaded"
    );
}
