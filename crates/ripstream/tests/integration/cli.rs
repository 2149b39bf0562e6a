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
