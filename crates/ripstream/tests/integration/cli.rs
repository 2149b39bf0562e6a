//! The human CLI against a real server.

use std::process::Command;

use crate::support::*;

fn run(srv: &TestServer, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--endpoint")
        .arg(srv.url())
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn stream_put_tail_round_trip() {
    let srv = TestServer::start();
    let (ok, out, err) = run(&srv, &["stream", "create", "cli", "--shards", "2"]);
    assert!(ok, "{err}");
    assert!(out.contains("created stream cli (2 shards"), "{out}");
    let (ok, out, _) = run(&srv, &["stream", "list"]);
    assert!(ok && out.trim() == "cli", "{out}");
    let (ok, out, err) = run(&srv, &["put", "cli", "hello world", "--key", "k1"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("shardId-"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.txt");
    std::fs::write(
        &file,
        (0..1200).map(|i| format!("line {i}\n")).collect::<String>(),
    )
    .unwrap();
    let (ok, out, err) = run(&srv, &["put", "cli", "--file", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("put 1200 records"), "{out}");
    let (ok, out, err) = run(&srv, &["tail", "cli"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1201);
    assert!(lines.contains(&"hello world"));
    assert!(lines.contains(&"line 1199"));
    let (ok, out, _) = run(&srv, &["stream", "describe", "cli"]);
    assert!(
        ok && out.contains("shardId-000000000001") && out.contains("ACTIVE"),
        "{out}"
    );
    let (ok, _, err) = run(&srv, &["stream", "describe", "nope"]);
    assert!(!ok);
    assert!(
        err.contains(
            "ResourceNotFoundException: Stream nope under account 000000000000 not found."
        ),
        "{err}"
    );
    let (ok, _, _) = run(&srv, &["stream", "delete", "cli"]);
    assert!(ok);
    let (_, out, _) = run(&srv, &["stream", "list"]);
    assert!(out.trim().is_empty());
}

#[test]
fn help_describes_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "stream", "put", "tail"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--config",
        "--fsync",
        "RIPSTREAM_LISTEN",
    ] {
        assert!(text.contains(flag), "{text}");
    }
}

/// Two `tail --group` processes share a stream's shards, each record is
/// printed by exactly one of them (aggregated records included), and both
/// leave the group cleanly on Ctrl-C.
#[test]
fn tail_group_members_share_the_shards() {
    use std::io::Read;
    use std::process::Stdio;
    let srv = TestServer::start();
    let (ok, _, err) = run(&srv, &["stream", "create", "grp", "--shards", "4"]);
    assert!(ok, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.txt");
    std::fs::write(
        &file,
        (0..400).map(|i| format!("line {i}\n")).collect::<String>(),
    )
    .unwrap();
    let (ok, out, err) = run(
        &srv,
        &[
            "put",
            "grp",
            "--file",
            file.to_str().unwrap(),
            "--aggregate",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("put 400 records"), "{out}");
    let members: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new(BIN)
                .args(["tail", "grp", "--group", "printers", "--endpoint"])
                .arg(srv.url())
                .env_remove("AWS_PROFILE")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Wait until the group has balanced: two owners with two leases each.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let table = ripstream_client::consumer::LeaseTable::new(
        crate::dynamodb::dynamo(&srv.url()),
        "printers",
    );
    let start = std::time::Instant::now();
    loop {
        let leases = rt.block_on(table.list()).unwrap_or_default();
        let mut owners = std::collections::HashMap::new();
        for l in &leases {
            if let Some(o) = &l.owner {
                *owners.entry(o.clone()).or_insert(0) += 1;
            }
        }
        if owners.len() == 2 && owners.values().all(|&n| n == 2) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(40),
            "the group did not balance: {owners:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Let the owners drain their shards: every lease checkpointed at a record.
    loop {
        let leases = rt.block_on(table.list()).unwrap_or_default();
        if leases.iter().all(|l| {
            l.checkpoint_owner.is_none() && l.checkpoint.bytes().all(|b| b.is_ascii_digit())
        }) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the group did not drain the stream: {leases:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut lines = Vec::new();
    let mut per_member = Vec::new();
    for mut m in members {
        unsafe { libc::kill(m.id() as i32, libc::SIGINT) };
        let status = m.wait().unwrap();
        let mut out = String::new();
        m.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let mut err = String::new();
        m.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "{status:?}: {err}");
        per_member.push(out.lines().count());
        lines.extend(out.lines().map(String::from));
    }
    lines.sort();
    let mut want: Vec<String> = (0..400).map(|i| format!("line {i}")).collect();
    want.sort();
    assert_eq!(lines, want, "members printed {per_member:?}");
}

/// Runs the CLI and waits at most `secs` for it to exit: `None` if it was
/// still running (and was killed), else (success, stdout, stderr).
fn run_within(
    srv: &TestServer,
    args: &[&str],
    env: &[(&str, &str)],
    secs: u64,
) -> Option<(bool, String, String)> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--endpoint")
        .arg(srv.url())
        .env_remove("AWS_PROFILE")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    match status {
        Some(s) => Some((s.success(), out, err)),
        None => {
            eprintln!("still running after {secs} s; stderr:\n{err}");
            None
        }
    }
}

#[test]
fn names_are_checked_before_anything_starts() {
    let srv = TestServer::start();
    let (ok, _, err) = run(&srv, &["stream", "create", "s1"]);
    assert!(ok, "{err}");
    // A two-character group would name a lease table DynamoDB refuses.
    let (ok, _, err) = run_within(&srv, &["tail", "s1", "--group", "g1"], &[], 10)
        .expect("tail --group g1 must fail at once, not retry forever");
    assert!(!ok);
    assert!(
        err.contains("\"g1\" is not a valid group name")
            && err.contains("3 to 255 characters, each a letter, a digit, '_', '.' or '-'"),
        "{err}"
    );
    let (ok, _, err) = run_within(&srv, &["tail", "s1", "--group", "my group"], &[], 10).unwrap();
    assert!(!ok && err.contains("not a valid group name"), "{err}");
    let long = "x".repeat(129);
    for args in [
        vec!["put", "bad name", "data"],
        vec!["stream", "create", &long],
        vec!["stream", "describe", "a/b"],
        vec!["tail", ""],
        vec!["bench", "produce", "--stream", "no spaces"],
    ] {
        let (ok, _, err) = run_within(&srv, &args, &[], 10).unwrap();
        assert!(!ok, "{args:?}");
        assert!(
            err.contains("is not a valid stream name: stream names have 1 to 128 characters"),
            "{args:?}: {err}"
        );
    }
    // Limits are inclusive: 128 characters is a valid stream name.
    let (ok, _, err) = run(&srv, &["stream", "create", &"y".repeat(128)]);
    assert!(ok, "{err}");
}

#[test]
fn permanent_errors_end_tail_group_with_the_error() {
    // A missing stream.
    let srv = TestServer::start();
    let (ok, _, err) = run_within(&srv, &["tail", "nope", "--group", "readers"], &[], 15)
        .expect("a missing stream must end tail --group");
    assert!(!ok);
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    drop(srv);

    // Credentials that may read the stream but not the lease table: the
    // worker's first DynamoDB call is refused, and no retry can change that.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(
        &path,
        r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"

[[principal]]
name = "kinesis-only"
access_key_id = "AKIDKINESIS000000001"
secret_access_key = "kinesis-secret"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}]}'''
"#,
    )
    .unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    let admin = [
        ("AWS_ACCESS_KEY_ID", "AKIDADMIN00000000001"),
        ("AWS_SECRET_ACCESS_KEY", "admin-secret"),
    ];
    let (ok, _, err) = run_within(&srv, &["stream", "create", "s"], &admin, 15).unwrap();
    assert!(ok, "{err}");
    let kinesis_only = [
        ("AWS_ACCESS_KEY_ID", "AKIDKINESIS000000001"),
        ("AWS_SECRET_ACCESS_KEY", "kinesis-secret"),
    ];
    let (ok, _, err) = run_within(
        &srv,
        &["tail", "s", "--group", "readers"],
        &kinesis_only,
        20,
    )
    .expect("a refused lease table must end tail --group");
    assert!(!ok);
    assert!(
        err.contains("consumer group readers on s stopped")
            && err.contains("AccessDeniedException"),
        "{err}"
    );
    // Unknown credentials fail at once too.
    let unknown = [
        ("AWS_ACCESS_KEY_ID", "AKIDUNKNOWN000000001"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
    ];
    let (ok, _, err) =
        run_within(&srv, &["tail", "s", "--group", "readers"], &unknown, 20).unwrap();
    assert!(!ok);
    assert!(err.contains("UnrecognizedClientException"), "{err}");
}

/// `ripstream firehose`: create into a bucket, put a file line by line, see
/// the object the delivery wrote, then list, describe and delete.
#[test]
fn firehose_create_put_list_describe_delete() {
    let srv = TestServer::start();
    // As on AWS, the bucket need not exist yet: records wait for it.
    let (ok, out, err) = run(
        &srv,
        &[
            "firehose",
            "create",
            "to-lake",
            "--to",
            "s3://lake/logs/",
            "--buffer",
            "1MB,1s",
            "--gzip",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("created delivery stream to-lake"), "{out}");
    let (ok, _, err) = run(&srv, &["firehose", "create", "bad", "--to", "lake/logs"]);
    assert!(!ok && err.contains("s3://"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.txt");
    let text: String = (0..1500).map(|i| format!("event {i}\n")).collect();
    std::fs::write(&file, &text).unwrap();
    let (ok, out, err) = run(
        &srv,
        &[
            "firehose",
            "put",
            "to-lake",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    // 1500 lines at most 500 records a batch.
    assert!(
        out.contains("put 1500 records to to-lake in 3 batches"),
        "{out}"
    );
    let (ok, out, err) = run(&srv, &["firehose", "put", "to-lake", "one more"]);
    assert!(ok && !out.trim().is_empty(), "{err}");
    std::fs::create_dir_all(srv.data_dir().join("objects/lake")).unwrap();
    // The delivered objects hold every line once, gzipped.
    let bucket = srv.data_dir().join("objects/lake/logs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut delivered = String::new();
    while std::time::Instant::now() < deadline {
        delivered.clear();
        let mut files = Vec::new();
        let mut stack = vec![bucket.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "gz") {
                    files.push(p);
                }
            }
        }
        files.sort();
        for f in files {
            let mut s = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(f).unwrap()),
                &mut s,
            )
            .unwrap();
            delivered.push_str(&s);
        }
        if delivered.len() >= text.len() + "one more\n".len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Objects written in one second sort by their random suffix: compare
    // the lines, each exactly once.
    let mut got: Vec<&str> = delivered.lines().collect();
    let want_text = format!("{text}one more\n");
    let mut want: Vec<&str> = want_text.lines().collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    let (ok, out, _) = run(&srv, &["firehose", "list"]);
    assert!(ok && out.trim() == "to-lake", "{out}");
    let (ok, out, _) = run(&srv, &["firehose", "describe", "to-lake"]);
    assert!(ok, "{out}");
    for want in [
        "ACTIVE",
        "s3://lake/logs/",
        "GZIP",
        "1 MB or 1 s",
        "DirectPut",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let (ok, _, err) = run(&srv, &["firehose", "describe", "nope"]);
    assert!(!ok && err.contains("ResourceNotFoundException"), "{err}");
    let (ok, out, _) = run(&srv, &["firehose", "delete", "to-lake"]);
    assert!(
        ok && out.contains("deleted delivery stream to-lake"),
        "{out}"
    );
    let (_, out, _) = run(&srv, &["firehose", "list"]);
    assert!(out.trim().is_empty(), "{out}");
}

/// `ripstream firehose create --from-stream`: a delivery stream that reads
/// a Kinesis stream named by name, into a bucket.
#[test]
fn firehose_create_from_a_kinesis_stream() {
    let srv = TestServer::start();
    let (ok, _, err) = run(&srv, &["stream", "create", "clicks", "--shards", "1"]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(
        &srv,
        &[
            "firehose",
            "create",
            "clicks-lake",
            "--to",
            "s3://clicklake/",
            "--from-stream",
            "clicks",
            "--buffer",
            "1MB,0s",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("created delivery stream clicks-lake"), "{out}");
    let (ok, out, _) = run(&srv, &["firehose", "describe", "clicks-lake"]);
    assert!(ok, "{out}");
    assert!(out.contains("KinesisStreamAsSource"), "{out}");
    assert!(
        out.contains("arn:aws:kinesis:us-east-1:000000000000:stream/clicks"),
        "{out}"
    );
    let (ok, _, err) = run(
        &srv,
        &[
            "firehose",
            "create",
            "x",
            "--to",
            "s3://clicklake/",
            "--from-stream",
            "nope",
        ],
    );
    assert!(!ok && err.contains("nope"), "{err}");
    std::fs::create_dir_all(srv.data_dir().join("objects/clicklake")).unwrap();
    let (ok, _, err) = run(&srv, &["put", "clicks", "a click"]);
    assert!(ok, "{err}");
    let bucket = srv.data_dir().join("objects/clicklake");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut found = Vec::new();
        let mut stack = vec![bucket.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if !e.path().to_string_lossy().contains('#') {
                    found.push(std::fs::read(e.path()).unwrap());
                }
            }
        }
        if found.iter().any(|f| f.starts_with(b"a click")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the record never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
