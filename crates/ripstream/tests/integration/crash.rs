//! Durability: kill -9 under load, torn and corrupted segments.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::support::*;

/// (shard, sequence number) -> data of every acknowledged record.
type Acked = Arc<Mutex<BTreeMap<(String, String), Vec<u8>>>>;

async fn produce_until_killed(url: String, acked: Acked, producer: usize, round: usize) {
    let c = client_for(&url);
    let mut n = 0u64;
    loop {
        n += 1;
        if n.is_multiple_of(3) {
            let data = format!("r{round}-p{producer}-single-{n}").into_bytes();
            match c
                .put_record()
                .stream_name("crash")
                .partition_key(format!("key-{}", n % 11))
                .data(Blob::new(data.clone()))
                .send()
                .await
            {
                Ok(out) => {
                    acked.lock().unwrap().insert(
                        (
                            out.shard_id().to_string(),
                            out.sequence_number().to_string(),
                        ),
                        data,
                    );
                }
                Err(_) => return,
            }
        } else {
            let datas: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("r{round}-p{producer}-batch-{n}-{i}").into_bytes())
                .collect();
            let entries: Vec<PutRecordsRequestEntry> = datas
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("k{i}"))
                        .data(Blob::new(d.clone()))
                        .build()
                        .unwrap()
                })
                .collect();
            match c
                .put_records()
                .stream_name("crash")
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    let mut a = acked.lock().unwrap();
                    for (r, d) in out.records().iter().zip(datas) {
                        if let (Some(shard), Some(seq)) = (r.shard_id(), r.sequence_number()) {
                            a.insert((shard.to_string(), seq.to_string()), d);
                        }
                    }
                }
                Err(_) => return,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    // Quotas off: this test is about durability under as much load as possible.
    let mut srv = TestServer::start_with(&["--quotas", "off"]);
    create_stream(&srv.client(), "crash", 4).await;
    let acked: Acked = Arc::default();
    for round in 0..3 {
        let producers: Vec<_> = (0..8)
            .map(|p| tokio::spawn(produce_until_killed(srv.url(), acked.clone(), p, round)))
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        srv.kill9();
        for p in producers {
            let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        }
        srv.restart();
        let c = srv.client();
        let mut stored: HashMap<(String, String), Vec<u8>> = HashMap::new();
        for shard in 0..4 {
            let shard = format!("shardId-{shard:012}");
            let records = read_shard(&c, "crash", &shard).await;
            let seqs: Vec<&str> = records.iter().map(|r| r.sequence_number()).collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "sequence numbers out of order in {shard}"
            );
            for r in &records {
                stored.insert(
                    (shard.clone(), r.sequence_number().to_string()),
                    r.data().as_ref().to_vec(),
                );
            }
        }
        let acked = acked.lock().unwrap();
        assert!(
            acked.len() > 100,
            "round {round}: only {} records acknowledged",
            acked.len()
        );
        for (k, data) in acked.iter() {
            match stored.get(k) {
                Some(d) => assert_eq!(d, data, "record {k:?} changed"),
                None => panic!(
                    "round {round}: acknowledged record {k:?} lost ({} acked, {} stored)",
                    acked.len(),
                    stored.len()
                ),
            }
        }
    }
}

fn active_segment(srv: &TestServer, shard: u32) -> std::path::PathBuf {
    srv.files_ending_with(".log")
        .into_iter()
        .filter(|p| {
            p.parent()
                .is_some_and(|d| d.to_string_lossy().ends_with(&format!("-shard{shard}")))
        })
        .max()
        .expect("a segment")
}

async fn metric(srv: &TestServer, name: &str) -> u64 {
    let r = raw(&srv.addr, false, "GET", "/metrics", &[], Vec::new()).await;
    String::from_utf8(r.body.to_vec())
        .unwrap()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn write_numbered(srv: &TestServer, from: usize, n: usize) {
    let c = srv.client();
    for i in from..from + n {
        c.put_record()
            .stream_name("c")
            .partition_key("k")
            .data(Blob::new(format!("record-{i:04}")))
            .send()
            .await
            .unwrap();
    }
}

async fn read_values(srv: &TestServer) -> Vec<String> {
    read_shard(&srv.client(), "c", "shardId-000000000000")
        .await
        .iter()
        .map(|r| String::from_utf8(r.data().as_ref().to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn flipped_byte_in_the_tail_is_cut_back_to_the_last_good_batch() {
    let mut srv = TestServer::start();
    create_stream(&srv.client(), "c", 1).await;
    write_numbered(&srv, 0, 10).await;
    srv.terminate();
    let seg = active_segment(&srv, 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&seg, bytes).unwrap();
    srv.restart();
    assert!(
        srv.log().contains("truncating to the last good batch"),
        "{}",
        srv.log()
    );
    assert!(metric(&srv, "ripstream_log_truncated_bytes_total").await > 0);
    let values = read_values(&srv).await;
    assert_eq!(values.len(), 9);
    assert_eq!(values.last().unwrap(), "record-0008");
    write_numbered(&srv, 100, 2).await;
    assert_eq!(read_values(&srv).await.len(), 11);
}

/// Kills the server after ten acknowledged writes and cuts the last 7 bytes
/// off the shard's segment file, as a power loss can when the file was not
/// synced; returns the server restarted.
async fn cut_tail_after_kill(args: &[&str]) -> TestServer {
    let mut srv = TestServer::start_with(args);
    create_stream(&srv.client(), "c", 1).await;
    write_numbered(&srv, 0, 10).await;
    srv.kill9();
    let seg = active_segment(&srv, 0);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    srv.restart();
    srv
}

#[tokio::test]
async fn truncated_segment_recovers_and_keeps_accepting_writes() {
    // Without the commit log, the torn batch is cut back.
    let srv = cut_tail_after_kill(&["--commit-log-bytes", "0"]).await;
    let values = read_values(&srv).await;
    assert_eq!(
        values,
        (0..9).map(|i| format!("record-{i:04}")).collect::<Vec<_>>()
    );
    write_numbered(&srv, 9, 1).await;
    assert_eq!(read_values(&srv).await.len(), 10);
}

#[tokio::test]
async fn commit_log_restores_an_acknowledged_tail_the_segment_lost() {
    // By default the acknowledged batch is also in the commit log, which is
    // replayed into the segment before recovery: nothing is lost.
    let srv = cut_tail_after_kill(&[]).await;
    assert!(
        srv.log()
            .contains("commit log replayed into the segment files"),
        "{}",
        srv.log()
    );
    let values = read_values(&srv).await;
    assert_eq!(
        values,
        (0..10)
            .map(|i| format!("record-{i:04}"))
            .collect::<Vec<_>>()
    );
    write_numbered(&srv, 10, 1).await;
    assert_eq!(read_values(&srv).await.len(), 11);
}

#[tokio::test]
async fn corruption_inside_a_sealed_segment_is_skipped_not_served() {
    let mut srv = TestServer::start_with(&["--segment-bytes", "4096"]);
    create_stream(&srv.client(), "c", 1).await;
    write_numbered(&srv, 0, 200).await;
    srv.terminate();
    let segs: Vec<_> = srv.files_ending_with(".log");
    assert!(segs.len() > 2, "expected several segments, got {segs:?}");
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[50] ^= 0xff;
    std::fs::write(&segs[0], bytes).unwrap();
    srv.restart();
    let values = read_values(&srv).await;
    // Each PutRecord was one batch: exactly the damaged one is lost.
    assert_eq!(values.len(), 199);
    assert!(!values.contains(&"record-0000".to_string()));
    assert!(values.iter().all(|v| v.starts_with("record-")));
    assert_eq!(values.last().unwrap(), "record-0199");
    assert!(metric(&srv, "ripstream_log_corrupt_batches_total").await > 0);
    let started = Instant::now();
    write_numbered(&srv, 200, 1).await;
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Regression: a shard whose partition directory was gone at start-up was
/// silently recreated empty. Now the stream is refused, with an error naming
/// what is missing, and the other streams are served.
#[tokio::test]
async fn a_stream_whose_shard_data_is_gone_is_refused_after_restart() {
    let mut srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "hurt", 2).await;
    create_stream(&c, "fine", 1).await;
    for (stream, data) in [("hurt", "h1"), ("hurt", "h2"), ("fine", "f1")] {
        c.put_record()
            .stream_name(stream)
            .partition_key(data)
            .data(Blob::new(data.as_bytes().to_vec()))
            .send()
            .await
            .unwrap();
    }
    srv.terminate();
    // "hurt" was created first, so its partitions have the lower stream uid.
    let log_dir = srv.data_dir().join("log");
    let uid = std::fs::read_dir(&log_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("stream")?
                .split_once("-shard")?
                .0
                .parse::<u64>()
                .ok()
        })
        .min()
        .unwrap();
    let gone = log_dir.join(format!("stream{uid}-shard0"));
    std::fs::remove_dir_all(&gone).unwrap();
    srv.restart();
    let c = srv.client();
    let err = c
        .describe_stream()
        .stream_name("hurt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ResourceNotFoundException");
    let msg = message(&err);
    assert!(
        msg.contains("shardId-000000000000") && msg.contains("missing"),
        "{msg}"
    );
    let put = c
        .put_record()
        .stream_name("hurt")
        .partition_key("k")
        .data(Blob::new(b"x".to_vec()))
        .send()
        .await;
    assert!(put.is_err());
    assert!(!gone.exists(), "the missing partition was recreated");
    assert!(
        srv.log().contains(&format!("stream{uid}-shard0")),
        "{}",
        srv.log()
    );
    // The other stream is served as before.
    c.put_record()
        .stream_name("fine")
        .partition_key("k")
        .data(Blob::new(b"f2".to_vec()))
        .send()
        .await
        .unwrap();
    let records = read_shard(&c, "fine", "shardId-000000000000").await;
    let values: Vec<&[u8]> = records.iter().map(|r| r.data().as_ref()).collect();
    assert_eq!(values, [&b"f1"[..], &b"f2"[..]]);
    // Operators see the refused stream in /health; the server stays up.
    let health = raw(&srv.addr, false, "GET", "/health", &[], Vec::new()).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "degraded", "{:?}", health.body);
    assert_eq!(
        health.json()["damaged_streams"],
        serde_json::json!(["hurt"])
    );
}
