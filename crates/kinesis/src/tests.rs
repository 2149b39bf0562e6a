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

async fn iterator(svc: &Service, name: &str, ty: &str) -> String {
    svc.get_shard_iterator(GetShardIteratorInput {
        stream: StreamRef {
            stream_name: Some(name.into()),
            stream_arn: None,
        },
        shard_id: "shardId-000000000000".into(),
        shard_iterator_type: ty.into(),
        ..Default::default()
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
    let it = iterator(&svc, "s", "TRIM_HORIZON").await;
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
    let it = iterator(&svc, "r", "TRIM_HORIZON").await;
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
    let out = get(&svc, &iterator(&svc, "r", "TRIM_HORIZON").await)
        .await
        .unwrap();
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
    let out = get(&svc, &iterator(&svc, "r", "TRIM_HORIZON").await)
        .await
        .unwrap();
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
