//! Service-level tests that need control of time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::types::*;
use crate::{Clock, Error, Service, ServiceConfig};

#[derive(Debug)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const HOUR: i64 = 3_600_000;

async fn service(dir: &std::path::Path, clock: Arc<ManualClock>) -> Service {
    let mut cfg = ServiceConfig::new(dir);
    cfg.clock = clock;
    cfg.segment_max_bytes = 4096;
    Service::open(cfg).await.unwrap()
}

fn put(name: &str, data: &str) -> PutRecordInput {
    PutRecordInput {
        stream_name: Some(name.into()),
        partition_key: Some("k".into()),
        data: Blob(data.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

/// A TRIM_HORIZON iterator of the stream's first shard.
async fn iterator(svc: &Service, name: &str) -> String {
    svc.get_shard_iterator(GetShardIteratorInput {
        stream: StreamRef {
            stream_name: Some(name.into()),
            stream_arn: None,
        },
        shard_id: "shardId-000000000000".into(),
        shard_iterator_type: ShardIteratorType::TrimHorizon,
        starting_sequence_number: None,
        timestamp: None,
        dry_run: None,
    })
    .await
    .unwrap()
    .shard_iterator
}

async fn get(svc: &Service, it: &str) -> Result<GetRecordsOutput, Error> {
    svc.get_records(GetRecordsInput {
        shard_iterator: it.into(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn iterators_expire_after_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_421_889_722_000)));
    let svc = service(dir.path(), clock.clone()).await;
    svc.create_stream(CreateStreamInput {
        stream_name: "s".into(),
        shard_count: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let it = iterator(&svc, "s").await;
    clock.0.fetch_add(299_000, Ordering::SeqCst);
    let out = get(&svc, &it).await.unwrap();
    clock.0.fetch_add(2_000, Ordering::SeqCst);
    match get(&svc, &it).await {
        Err(Error::ExpiredIterator(m)) => assert_eq!(
            m,
            "Iterator expired. The iterator was created at time Thu Jan 22 01:22:02 UTC 2015 while right now it is Thu Jan 22 01:27:03 UTC 2015 which is further in the future than the tolerated delay of 300000 milliseconds."
        ),
        other => panic!("{other:?}"),
    }
    // The iterator GetRecords returned was issued later, so it still works.
    get(&svc, out.next_shard_iterator.as_deref().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn records_past_retention_disappear_and_their_space_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let svc = service(dir.path(), clock.clone()).await;
    svc.create_stream(CreateStreamInput {
        stream_name: "r".into(),
        shard_count: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..300 {
        svc.put_record(put("r", &format!("old-{i:04}")))
            .await
            .unwrap();
    }
    clock.0.fetch_add(23 * HOUR, Ordering::SeqCst);
    for i in 0..3 {
        svc.put_record(put("r", &format!("new-{i}"))).await.unwrap();
    }
    let seg_count = || walk_count(dir.path(), ".log");
    let before = seg_count();
    assert!(before > 3);
    // 25 h after the old records: only the new ones are readable.
    clock.0.fetch_add(2 * HOUR, Ordering::SeqCst);
    let it = iterator(&svc, "r").await;
    let out = get(&svc, &it).await.unwrap();
    let data: Vec<String> = out
        .records
        .iter()
        .map(|r| String::from_utf8(r.data.0.to_vec()).unwrap())
        .collect();
    assert_eq!(data, ["new-0", "new-1", "new-2"]);
    assert!(svc.inner.log.enforce_retention() > 0);
    assert!(seg_count() < before);
    // Decreasing retention hides records at once.
    svc.increase_stream_retention_period(RetentionInput {
        stream: StreamRef {
            stream_name: Some("r".into()),
            stream_arn: None,
        },
        retention_period_hours: 48,
    })
    .await
    .unwrap();
    clock.0.fetch_add(24 * HOUR + 1, Ordering::SeqCst);
    let out = get(&svc, &iterator(&svc, "r").await).await.unwrap();
    assert_eq!(out.records.len(), 3);
    svc.decrease_stream_retention_period(RetentionInput {
        stream: StreamRef {
            stream_name: Some("r".into()),
            stream_arn: None,
        },
        retention_period_hours: 24,
    })
    .await
    .unwrap();
    let out = get(&svc, &iterator(&svc, "r").await).await.unwrap();
    assert!(out.records.is_empty());
}

#[tokio::test]
async fn orphan_partitions_are_removed_and_streams_reload() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    {
        let svc = service(dir.path(), clock.clone()).await;
        svc.create_stream(CreateStreamInput {
            stream_name: "keep".into(),
            shard_count: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
        svc.put_record(put("keep", "x")).await.unwrap();
        svc.shutdown().await;
    }
    // A partition no stream owns, as a crash between creating partitions and
    // committing the catalog would leave.
    std::fs::create_dir_all(dir.path().join("log/stream999-shard0")).unwrap();
    let svc = service(dir.path(), clock).await;
    assert!(!dir.path().join("log/stream999-shard0").exists());
    let l = svc.list_streams(ListStreamsInput::default()).await.unwrap();
    assert_eq!(l.stream_names, ["keep"]);
    assert!(svc.epoch() >= 2);
}

fn walk_count(dir: &std::path::Path, suffix: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += walk_count(&p, suffix);
        } else if p.to_string_lossy().ends_with(suffix) {
            n += 1;
        }
    }
    n
}

fn stream_ref(name: &str) -> StreamRef {
    StreamRef {
        stream_name: Some(name.into()),
        stream_arn: None,
    }
}

/// Shard ids ListShards returns, with each one's parents.
async fn listed(svc: &Service, name: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let out = svc
        .list_shards(ListShardsInput {
            stream: stream_ref(name),
            ..Default::default()
        })
        .await
        .unwrap();
    out.shards
        .into_iter()
        .map(|s| (s.shard_id, s.parent_shard_id, s.adjacent_parent_shard_id))
        .collect()
}

#[tokio::test]
async fn closed_shards_past_retention_are_pruned_with_their_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let part_dir = |i: u32| dir.path().join(format!("log/stream1-shard{i}"));
    {
        let svc = service(dir.path(), clock.clone()).await;
        svc.create_stream(CreateStreamInput {
            stream_name: "p".into(),
            shard_count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
        svc.put_record(put("p", "in-0")).await.unwrap();
        svc.split_shard(SplitShardInput {
            stream: stream_ref("p"),
            shard_to_split: "shardId-000000000000".into(),
            new_starting_hash_key: (1u128 << 127).to_string(),
        })
        .await
        .unwrap();
        clock.0.fetch_add(HOUR, Ordering::SeqCst);
        svc.merge_shards(MergeShardsInput {
            stream: stream_ref("p"),
            shard_to_merge: "shardId-000000000001".into(),
            adjacent_shard_to_merge: "shardId-000000000002".into(),
        })
        .await
        .unwrap();
        svc.put_record(put("p", "in-3")).await.unwrap();
        // 23 h after the split: everything is still within retention.
        clock.0.fetch_add(22 * HOUR, Ordering::SeqCst);
        assert_eq!(svc.prune_closed_shards().await, 0);
        assert_eq!(listed(&svc, "p").await.len(), 4);
        assert!(part_dir(0).exists());
        // Just past 24 h since shard 0 closed: it goes, its children stay and
        // still name it as their parent, as on AWS.
        clock.0.fetch_add(HOUR + 1, Ordering::SeqCst);
        assert_eq!(svc.prune_closed_shards().await, 1);
        assert!(!part_dir(0).exists());
        assert!(part_dir(1).exists());
        let zero = Some("shardId-000000000000".to_string());
        assert_eq!(
            listed(&svc, "p").await,
            [
                ("shardId-000000000001".into(), zero.clone(), None),
                ("shardId-000000000002".into(), zero, None),
                (
                    "shardId-000000000003".into(),
                    Some("shardId-000000000001".into()),
                    Some("shardId-000000000002".into())
                ),
            ]
        );
        let e = svc
            .get_shard_iterator(GetShardIteratorInput {
                stream: stream_ref("p"),
                shard_id: "shardId-000000000000".into(),
                shard_iterator_type: ShardIteratorType::TrimHorizon,
                starting_sequence_number: None,
                timestamp: None,
                dry_run: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ResourceNotFound(_)), "{e:?}");
        clock.0.fetch_add(HOUR, Ordering::SeqCst);
        svc.put_record(put("p", "fresh")).await.unwrap();
        assert_eq!(svc.prune_closed_shards().await, 2);
        assert!(!part_dir(1).exists() && !part_dir(2).exists());
        svc.shutdown().await;
    }
    // The catalog forgot them: a restart brings back only the open shard,
    // whose records are intact, and new shards never reuse a pruned number.
    let svc = service(dir.path(), clock.clone()).await;
    let d = svc
        .describe_stream(DescribeStreamInput {
            stream: stream_ref("p"),
            limit: None,
            exclusive_start_shard_id: None,
        })
        .await
        .unwrap();
    let ids: Vec<&str> = d
        .stream_description
        .shards
        .iter()
        .map(|s| s.shard_id.as_str())
        .collect();
    assert_eq!(ids, ["shardId-000000000003"]);
    assert_eq!(
        d.stream_description.shards[0].parent_shard_id.as_deref(),
        Some("shardId-000000000001")
    );
    assert!(!part_dir(0).exists());
    let it = svc
        .get_shard_iterator(GetShardIteratorInput {
            stream: stream_ref("p"),
            shard_id: "shardId-000000000003".into(),
            shard_iterator_type: ShardIteratorType::TrimHorizon,
            starting_sequence_number: None,
            timestamp: None,
            dry_run: None,
        })
        .await
        .unwrap()
        .shard_iterator;
    let out = get(&svc, &it).await.unwrap();
    let data: Vec<&[u8]> = out.records.iter().map(|r| &r.data.0[..]).collect();
    assert_eq!(data, [b"fresh"]);
    svc.update_shard_count(UpdateShardCountInput {
        stream: stream_ref("p"),
        target_shard_count: 2,
        scaling_type: ScalingType::UniformScaling,
    })
    .await
    .unwrap();
    let after: Vec<String> = listed(&svc, "p").await.into_iter().map(|s| s.0).collect();
    assert_eq!(
        after,
        [
            "shardId-000000000003",
            "shardId-000000000004",
            "shardId-000000000005"
        ]
    );
}

/// Opens batches through the keyring, slowly, as a cold disk or a large
/// batch makes a read.
#[derive(Debug)]
struct SlowCipher(Arc<crate::kms::Keyring>, std::time::Duration);

impl ripstream_log::BatchCipher for SlowCipher {
    fn seal(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, ripstream_log::CipherError> {
        self.0.seal(key_id, plaintext)
    }

    fn open(&self, ciphertext: &[u8]) -> Result<Vec<u8>, ripstream_log::CipherError> {
        std::thread::sleep(self.1);
        self.0.open(ciphertext)
    }
}

/// On a single-threaded runtime, so that a read blocking the async worker
/// would hold up everything else.
#[tokio::test(flavor = "current_thread")]
async fn slow_reads_do_not_hold_up_writes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let svc = service(dir.path(), clock).await;
    svc.create_stream(CreateStreamInput {
        stream_name: "slow".into(),
        shard_count: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    svc.start_stream_encryption(StreamEncryptionInput {
        stream: stream_ref("slow"),
        encryption_type: EncryptionType::Kms,
        key_id: "alias/aws/kinesis".into(),
    })
    .await
    .unwrap();
    let first = svc.put_record(put("slow", "secret")).await.unwrap();
    let delay = std::time::Duration::from_millis(1000);
    svc.inner
        .log
        .set_cipher(Arc::new(SlowCipher(svc.inner.keyring.clone(), delay)));
    let it = iterator(&svc, "slow").await;
    let started = std::time::Instant::now();
    let reader = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, &it).await }
    });
    let seeker = tokio::spawn({
        let svc = svc.clone();
        async move {
            svc.get_shard_iterator(GetShardIteratorInput {
                stream: stream_ref("slow"),
                shard_id: "shardId-000000000000".into(),
                shard_iterator_type: ShardIteratorType::AtSequenceNumber,
                starting_sequence_number: Some(first.sequence_number),
                timestamp: None,
                dry_run: None,
            })
            .await
        }
    });
    // Both reads are decrypting (on blocking threads) while this write runs.
    tokio::task::yield_now().await;
    svc.put_record(put("slow", "later")).await.unwrap();
    let wrote_after = started.elapsed();
    assert!(
        wrote_after < delay / 2,
        "a write waited {wrote_after:?} behind reads"
    );
    let out = reader.await.unwrap().unwrap();
    assert_eq!(&out.records[0].data.0[..], b"secret");
    seeker.await.unwrap().unwrap();
    assert!(started.elapsed() >= delay);
}

#[tokio::test]
async fn only_its_own_partitions_are_swept_as_orphans() {
    assert!(crate::is_stream_partition("stream12-shard0"));
    assert!(!crate::is_stream_partition("firehose-3"));
    assert!(!crate::is_stream_partition("streamx-shard1"));
    assert!(!crate::is_stream_partition("stream1-shard"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServiceConfig::new(dir.path());
    // Another service's partition, and an orphan of Data Streams' own.
    {
        let ctx = ripstream_runtime::ServiceContext::open(cfg.context()).unwrap();
        ctx.log.create_partition("firehose-7", HOUR).unwrap();
        ctx.log.create_partition("stream99-shard0", HOUR).unwrap();
        ctx.close().await;
    }
    let svc = Service::open(cfg).await.unwrap();
    let ids = svc.inner.log.partition_ids();
    assert!(ids.contains(&"firehose-7".to_string()), "{ids:?}");
    assert!(!ids.contains(&"stream99-shard0".to_string()), "{ids:?}");
    svc.shutdown().await;
}
