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
