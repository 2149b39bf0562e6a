//! A barrage of malformed and hostile requests while valid producers write:
//! every bad request gets its error, every acknowledged record is readable,
//! and the server's memory stays bounded.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const CREDENTIALS: &str = r#"
[[principal]]
name = "producer"
access_key_id = "AKIDPRODUCER00000001"
secret_access_key = "producer-secret"
"#;

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// Sends raw bytes and returns what came back (status line and body).
async fn send_raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn request(target: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.{target}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_hurt_valid_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.toml");
    std::fs::write(&creds, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&[
        "--credentials",
        creds.to_str().unwrap(),
        "--quotas",
        "off",
        "--max-body-bytes",
        "2097152",
    ]);
    let good = client_with(&srv.url(), "AKIDPRODUCER00000001", "producer-secret");
    create_stream(&good, "target", 2).await;

    // Valid producers.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut producers = Vec::new();
    for p in 0..3 {
        let (c, stop, acked) = (good.clone(), stop.clone(), acked.clone());
        producers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let data = format!("valid-{p}-{n}");
                let out = c
                    .put_record()
                    .stream_name("target")
                    .partition_key(&data)
                    .data(Blob::new(data.clone()))
                    .send()
                    .await;
                let out = out.expect("valid requests succeed during the barrage");
                assert!(!out.sequence_number().is_empty());
                acked.lock().push(data);
                n += 1;
            }
        }));
    }

    let addr = srv.addr.clone();
    let huge_key = "k".repeat(100_000);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (request("PutRecord", b"{not json", ""), "SerializationException"),
        // Well-formed JSON is authenticated before its members are checked, as AWS does.
        (request("PutRecord", br#"{"StreamName": 12, "Data": "aGk=", "PartitionKey": "k"}"#, ""), "MissingAuthenticationTokenException"),
        (request("PutRecord", br#"{"StreamName": "target", "Data": "!!!", "PartitionKey": "k"}"#, ""), "MissingAuthenticationTokenException"),
        (request("NoSuchThing", b"{}", ""), "UnknownOperationException"),
        (request("PutRecord", format!(r#"{{"StreamName": "target", "Data": "aGk=", "PartitionKey": "{huge_key}"}}"#).as_bytes(), ""), "MissingAuthenticationTokenException"),
        (request("ListStreams", b"{}", "Authorization: AWS4-HMAC-SHA256 Credential=AKIDPRODUCER00000001/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=deadbeef\r\nX-Amz-Date: 20200101T000000Z\r\n"), "InvalidSignatureException"),
        (request("ListStreams", b"{}", "Authorization: AWS4-HMAC-SHA256 garbage\r\n"), "IncompleteSignatureException"),
        (request("ListStreams", b"{}", "Authorization: AWS4-HMAC-SHA256 Credential=NOBODY/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00\r\nX-Amz-Date: 20200101T000000Z\r\n"), "UnrecognizedClientException"),
        (request("ListStreams", b"{}", "Content-Type: text/plain\r\n"), ""),
        (b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n".to_vec(), "413"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\n\r\nfffffffff\r\n".to_vec(), ""),
    ];
    // A body over the limit, and a truncated one.
    let oversized = request("PutRecords", &vec![b'x'; 3 * 1024 * 1024], "");
    let mut truncated = request(
        "PutRecord",
        br#"{"StreamName": "target", "Data": "aGk=", "PartitionKey": "k"}"#,
        "",
    );
    truncated.truncate(truncated.len() - 10);
    // A header block larger than the server accepts.
    let big_headers = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "j".repeat(200_000)
    )
    .into_bytes();

    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pid = srv_pid(&srv);
    for round in 0..20 {
        let mut tasks = Vec::new();
        for (bytes, expect) in cases.iter().cloned() {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let reply = send_raw(&addr, &bytes).await;
                if !expect.is_empty() {
                    assert!(
                        reply.contains(expect),
                        "expected {expect} for {:?}, got {reply:?}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
                    );
                }
            }));
        }
        for bytes in [&oversized, &truncated, &big_headers] {
            let (addr, bytes) = (addr.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                let reply = send_raw(&addr, &bytes).await;
                assert!(
                    !reply.contains(" 200 "),
                    "a broken request succeeded: {reply}"
                );
            }));
        }
        // Slow clients that open connections and send nothing: they hold a
        // connection each, but no memory worth speaking of.
        if round % 5 == 0 {
            for _ in 0..50 {
                let addr = addr.clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
                        let _ = s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").await;
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                });
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        peak.fetch_max(rss_mib(pid), Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().iter().cloned().collect();
    assert!(acked.len() > 50, "only {} valid records", acked.len());
    let mut stored = HashSet::new();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        for r in read_shard(&good, "target", shard).await {
            stored.insert(String::from_utf8(r.data().as_ref().to_vec()).unwrap());
        }
    }
    assert!(acked.is_subset(&stored), "acknowledged records lost");
    assert!(
        stored.iter().all(|s| s.starts_with("valid-")),
        "a malformed request wrote a record"
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak < 300, "server RSS reached {peak} MiB");
}

fn srv_pid(srv: &TestServer) -> u32 {
    srv.process_id()
}
