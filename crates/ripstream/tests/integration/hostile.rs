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
        // Nothing in the body is decoded before the request is authenticated.
        (request("PutRecord", b"{not json", ""), "MissingAuthenticationTokenException"),
        (request("PutRecord", br#"{"StreamName": 12, "Data": "aGk=", "PartitionKey": "k"}"#, ""), "MissingAuthenticationTokenException"),
        (request("PutRecord", br#"{"StreamName": "target", "Data": "!!!", "PartitionKey": "k"}"#, ""), "MissingAuthenticationTokenException"),
        (request("NoSuchThing", b"{}", ""), "MissingAuthenticationTokenException"),
        (request("PutRecord", format!(r#"{{"StreamName": "target", "Data": "aGk=", "PartitionKey": "{huge_key}"}}"#).as_bytes(), ""), "MissingAuthenticationTokenException"),
        (request("ListStreams", b"{}", "Authorization: AWS4-HMAC-SHA256 Credential=AKIDPRODUCER00000001/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=deadbeef\r\nX-Amz-Date: 20200101T000000Z\r\n"), "InvalidSignatureException"),
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
    // At least 20 rounds, and on until the valid producers have had 50
    // records acknowledged while the barrage goes on (a loaded machine runs
    // them slower, but they must make progress).
    for round in 0.. {
        if round >= 20 && (acked.lock().len() > 50 || round >= 400) {
            break;
        }
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

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// A TCP connection to `addr` from the local address `source` (any of 127.0.0.0/8).
async fn connect_from(source: &str, addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("source address"))?;
    socket.connect(addr.parse().expect("server address")).await
}

/// Whether the server has closed this connection (read sees the end or an error).
async fn closed_by_server(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(wait, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_preface_only_connections_do_not_hold_slots() {
    let srv = TestServer::start_with(&["--max-connections", "64", "--handshake-timeout-ms", "500"]);
    let c = srv.client();
    // Far more connections than slots, and they keep coming while the SDK
    // client works: silent ones, and ones that send all but the last byte of
    // the HTTP/2 preface.
    let mut held = Vec::new();
    for i in 0..300 {
        let mut s = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
        if i % 3 == 0 {
            s.write_all(&H2_PREFACE[..23]).await.unwrap();
        }
        held.push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (addr, stop) = (srv.addr.clone(), stop.clone());
        tokio::spawn(async move {
            let mut more = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
                    if i % 2 == 0 {
                        let _ = s.write_all(&H2_PREFACE[..23]).await;
                    }
                    more.push(s);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            more
        })
    };
    for round in 0..5 {
        let r = tokio::time::timeout(Duration::from_secs(20), c.list_streams().send()).await;
        assert!(
            matches!(r, Ok(Ok(_))),
            "round {round}: the server stopped answering: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    held.extend(flood.await.unwrap());
    let mut still_open = 0;
    for s in &mut held {
        if !closed_by_server(s, Duration::from_secs(10)).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open,
        0,
        "of {} connections that never sent a request, some stay open",
        held.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_every_connection_slot() {
    let srv = TestServer::start_with(&[
        "--max-connections",
        "64",
        "--max-connections-per-source",
        "16",
        "--handshake-timeout-ms",
        "60000",
    ]);
    // Another loopback address stands in for a remote attacker.
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(connect_from("127.0.0.2", &srv.addr).await.unwrap());
    }
    let r = tokio::time::timeout(Duration::from_secs(10), srv.client().list_streams().send()).await;
    assert!(matches!(r, Ok(Ok(_))), "a second source was starved: {r:?}");
    let mut open = 0;
    for s in &mut held {
        if !closed_by_server(s, Duration::from_millis(100)).await {
            open += 1;
        }
    }
    assert!(open <= 16, "{open} connections from one address are open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_are_closed_even_while_pinging() {
    let srv = TestServer::start_with(&["--idle-timeout-ms", "1000"]);
    let stream = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(200))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/health", srv.addr))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    resp.into_body().collect().await.unwrap();
    // Pings every 200 ms keep the connection alive, but carry no request.
    let ended = tokio::time::timeout(Duration::from_secs(8), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_share_one_memory_budget() {
    let srv = TestServer::start_with(&["--max-buffered-bytes", "268435456", "--quotas", "off"]);
    let pid = srv.process_id();
    let len = 16 * 1024 * 1024;
    let body = Arc::new(vec![b'x'; len - 1]);
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: Kinesis_20131202.PutRecords\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {len}\r\n\r\n"
    );
    // Many clients each send all but the last byte of a 16 MiB body, so the
    // server holds what it has accepted of them.
    let mut writers = Vec::new();
    for _ in 0..120 {
        let (addr, body, head) = (srv.addr.clone(), body.clone(), head.clone());
        writers.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(20), async {
                s.write_all(head.as_bytes()).await?;
                s.write_all(&body).await
            })
            .await;
            s
        }));
    }
    let mut held = Vec::new();
    for w in writers {
        held.push(w.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = peak_rss_mib(pid);
    eprintln!("server peak RSS: {peak} MiB");
    // With the budget spent, a small request is shed with a retryable 503.
    let r = api(&srv.addr, "ListStreams", "{}").await;
    assert_eq!(r.status, 503, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["__type"], "ServiceUnavailableException");
    assert!(r.headers.contains_key("retry-after"));
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if api(&srv.addr, "ListStreams", "{}").await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the budget was not given back");
    assert!(peak < 1024, "server peak RSS reached {peak} MiB");
}

/// POSTs raw bytes with a content type and target and returns the response.
/// A call signed (in form) for the service its target names: the
/// credential scope routes before the target does.
async fn post(addr: &str, target: &str, content_type: &str, body: Vec<u8>) -> RawResponse {
    let service = if target.starts_with("DynamoDB_") {
        "dynamodb"
    } else {
        "kinesis"
    };
    let auth = DUMMY_AUTHORIZATION.replace("/kinesis/", &format!("/{service}/"));
    raw(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", target),
            ("content-type", content_type),
            ("authorization", &auth),
            ("x-amz-date", "20260101T000000Z"),
        ],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbor_bodies_of_millions_of_items_are_refused_before_decoding() {
    let srv = TestServer::start();
    let pid = srv.process_id();
    // {"StreamName": "s", "Records": [...]} with millions of one-byte items:
    // integers, empty maps, and nulls in an indefinite-length array.
    let n = 16 * 1024 * 1024 - 64;
    let mut bodies = Vec::new();
    for (item, indefinite) in [(0x00u8, false), (0xa0, false), (0xf6, true)] {
        let mut b = vec![0xa2, 0x6a];
        b.extend_from_slice(b"StreamName");
        b.extend_from_slice(&[0x61, b's', 0x67]);
        b.extend_from_slice(b"Records");
        if indefinite {
            b.push(0x9f);
        } else {
            b.push(0x9a);
            b.extend_from_slice(&(n as u32).to_be_bytes());
        }
        b.resize(b.len() + n, item);
        if indefinite {
            b.push(0xff);
        }
        bodies.push(b);
    }
    let mut tasks = Vec::new();
    for b in bodies {
        let addr = srv.addr.clone();
        tasks.push(tokio::spawn(async move {
            post(
                &addr,
                "Kinesis_20131202.PutRecords",
                "application/x-amz-cbor-1.1",
                b,
            )
            .await
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let peak = peak_rss_mib(pid);
    eprintln!("server peak RSS: {peak} MiB");
    assert!(peak < 1024, "server peak RSS reached {peak} MiB");
    for r in replies {
        assert_eq!(r.status, 400);
        assert_eq!(
            r.headers.get("x-amzn-ErrorType").map(|v| v.as_bytes()),
            Some(&b"SerializationException"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_broken_entries_build_only_ten_messages() {
    let srv = TestServer::start();
    let pid = srv.process_id();
    let mut body = br#"{"StreamName": "s", "Records": ["#.to_vec();
    while body.len() < 16 * 1024 * 1024 - 16 {
        body.extend_from_slice(b"{},");
    }
    body.extend_from_slice(b"{}]}");
    let r = post(
        &srv.addr,
        "Kinesis_20131202.PutRecords",
        "application/x-amz-json-1.1",
        body,
    )
    .await;
    let peak = peak_rss_mib(pid);
    eprintln!("server peak RSS: {peak} MiB");
    assert!(peak < 1024, "server peak RSS reached {peak} MiB");
    assert_eq!(r.status, 400);
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.starts_with("10 validation errors detected: "),
        "{}",
        &msg[..msg.len().min(200)]
    );
    assert!(msg.len() < 256 * 1024, "a {} byte message", msg.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_placeholders_are_not_copied_per_use() {
    let srv = TestServer::start();
    let pid = srv.process_id();
    let target = |op: &str| format!("DynamoDB_20120810.{op}");
    let r = post(
        &srv.addr,
        &target("CreateTable"),
        "application/x-amz-json-1.0",
        br#"{"TableName": "big", "BillingMode": "PAY_PER_REQUEST", "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}], "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}]}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    // A 15 MB value used a hundred times in one expression.
    let big = "v".repeat(15 * 1024 * 1024);
    let uses = vec![":v"; 100].join(", ");
    let put = serde_json::json!({
        "TableName": "big",
        "Item": {"leaseKey": {"S": "k"}},
        "ConditionExpression": format!("a IN ({uses})"),
        "ExpressionAttributeValues": {":v": {"S": big}},
    });
    let r = post(
        &srv.addr,
        &target("PutItem"),
        "application/x-amz-json-1.0",
        serde_json::to_vec(&put).unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    assert!(
        r.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("ConditionalCheckFailedException"),
        "{:?}",
        r.json()
    );
    let sets: Vec<String> = (0..100).map(|i| format!("a{i} = :v")).collect();
    let update = serde_json::json!({
        "TableName": "big",
        "Key": {"leaseKey": {"S": "k"}},
        "UpdateExpression": format!("SET {}", sets.join(", ")),
        "ExpressionAttributeValues": {":v": {"S": big}},
    });
    let r = post(
        &srv.addr,
        &target("UpdateItem"),
        "application/x-amz-json-1.0",
        serde_json::to_vec(&update).unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    let peak = peak_rss_mib(pid);
    eprintln!("server peak RSS: {peak} MiB");
    assert!(peak < 1024, "server peak RSS reached {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_off_loopback() {
    let get = |addr: String, headers: Vec<(&'static str, String)>| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        raw(&addr, false, "GET", "/metrics", &h, Vec::new())
            .await
            .status
    };
    // Loopback: open.
    let local = TestServer::start();
    assert_eq!(get(local.addr.clone(), vec![]).await, 200);
    // Elsewhere without a token: refused.
    let open = TestServer::start_on("0.0.0.0:0", &["--insecure-allow-anonymous"]);
    let addr = open.addr.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(get(addr.clone(), vec![]).await, 403);
    assert_eq!(
        get(addr, vec![("authorization", "Bearer x".into())]).await,
        403
    );
    // Elsewhere with a token: only with it.
    let tokened = TestServer::start_on(
        "0.0.0.0:0",
        &["--insecure-allow-anonymous", "--metrics-token", "m3trics"],
    );
    let addr = tokened.addr.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(get(addr.clone(), vec![]).await, 401);
    assert_eq!(
        get(addr.clone(), vec![("authorization", "Bearer wrong".into())]).await,
        401
    );
    assert_eq!(
        get(
            addr.clone(),
            vec![("authorization", "Bearer m3trics".into())]
        )
        .await,
        200
    );
    // The prefixed path is the same endpoint.
    let prefixed = raw(&addr, false, "GET", "/_ripstream/metrics", &[], Vec::new()).await;
    assert_eq!(prefixed.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_loopback_server_refuses_foreign_host_names() {
    let srv = TestServer::start();
    let port = srv.addr.rsplit(':').next().unwrap().to_string();
    let call = |host: String, path: &'static str, method: &'static str| {
        let addr = srv.addr.clone();
        async move {
            raw(
                &addr,
                false,
                method,
                path,
                &[
                    ("host", host.as_str()),
                    ("x-amz-target", "Kinesis_20131202.ListStreams"),
                    ("content-type", "application/x-amz-json-1.1"),
                ],
                if method == "POST" {
                    b"{}".to_vec()
                } else {
                    Vec::new()
                },
            )
            .await
            .status
        }
    };
    // DNS rebinding: a browser sends the attacker's name.
    for host in [
        format!("attacker.example:{port}"),
        "rebind.127.0.0.1.nip.io".into(),
    ] {
        assert_eq!(call(host.clone(), "/", "POST").await, 403, "{host}");
        assert_eq!(call(host.clone(), "/metrics", "GET").await, 403, "{host}");
        assert_eq!(call(host.clone(), "/health", "GET").await, 403, "{host}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("kinesis.localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(call(host.clone(), "/", "POST").await, 200, "{host}");
    }
    // The SDK names the endpoint it was given.
    srv.client().list_streams().send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_log_the_access_key_id_not_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.toml");
    std::fs::write(&creds, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&[
        "--credentials",
        creds.to_str().unwrap(),
        "--log-level",
        "debug",
    ]);
    let signature = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e7";
    // No X-Amz-Date: AWS echoes the header in IncompleteSignatureException.
    let auth = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDPRODUCER00000001/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature={signature}\r\n"
    );
    let reply = send_raw(&srv.addr, &request("ListStreams", b"{}", &auth)).await;
    assert!(reply.contains("IncompleteSignatureException"), "{reply}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = srv.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert!(
        !refused.is_empty(),
        "no debug line for the refused request:\n{log}"
    );
    assert!(
        refused.iter().any(|l| l.contains("AKIDPRODUCER00000001")),
        "{refused:?}"
    );
    assert!(
        !log.contains(signature),
        "the signature reached the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_subscription_is_not_idleness() {
    use aws_sdk_kinesis::types::{
        ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
    };
    let srv = TestServer::start_with(&["--idle-timeout-ms", "1000"]);
    // The HTTP/2 connection carries only the subscription; writes go over HTTP/1.1.
    let h2 = h2_client_for(&srv.addr);
    let writer = srv.client();
    create_stream(&writer, "idle", 1).await;
    let consumer = writer
        .register_stream_consumer()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/idle")
        .consumer_name("c")
        .send()
        .await
        .unwrap()
        .consumer()
        .unwrap()
        .consumer_arn()
        .to_string();
    let mut sub = h2
        .subscribe_to_shard()
        .consumer_arn(&consumer)
        .shard_id("shardId-000000000000")
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::Latest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seq = writer
        .put_record()
        .stream_name("idle")
        .partition_key("k")
        .data(Blob::new("after a quiet while"))
        .send()
        .await
        .unwrap()
        .sequence_number()
        .to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, sub.event_stream.recv())
            .await
            .expect("the record within 10 s");
        match ev {
            Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => {
                if e.records().iter().any(|r| r.sequence_number() == seq) {
                    break;
                }
            }
            other => panic!("the subscription ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_and_first_bytes_share_one_deadline() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls_pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("s.pem"), dir.path().join("s.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let srv = TestServer::start_with(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--handshake-timeout-ms",
        "1000",
    ]);
    // Silent before the handshake.
    let mut silent = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
    // A finished handshake, then nothing.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(4)).await);
    let mut b = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(4), tls.read(&mut b)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a TLS connection that sent no request is still open: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_reserve_what_decoding_them_builds() {
    // Room for one such body's values at a time: without counting them, every
    // worker thread decodes one at once (about 1 GiB on two cores).
    let srv = TestServer::start_with(&["--max-buffered-bytes", "536870912"]);
    let pid = srv.process_id();
    // 16 MiB of one-character values: 8 million `serde_json::Value`s each.
    let mut body = br#"{"StreamName": "s", "Records": ["#.to_vec();
    while body.len() < 16 * 1024 * 1024 - 16 {
        body.extend_from_slice(b"0,");
    }
    body.extend_from_slice(b"0]}");
    let body = Arc::new(body);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (addr, body) = (srv.addr.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            post(
                &addr,
                "Kinesis_20131202.PutRecords",
                "application/x-amz-json-1.1",
                body.to_vec(),
            )
            .await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().status);
    }
    let peak = peak_rss_mib(pid);
    eprintln!("server peak RSS: {peak} MiB");
    assert!(peak < 800, "server peak RSS reached {peak} MiB");
    assert!(
        statuses.iter().all(|s| *s == 400 || *s == 503),
        "{statuses:?}"
    );
}
