//! How the service drives the shard log: deletions, and start-up against a
//! damaged data directory.

use std::sync::Arc;

use crate::types::*;
use crate::{Service, ServiceConfig};

fn put(name: &str, key: &str, data: &str) -> PutRecordInput {
    PutRecordInput {
        stream_name: Some(name.into()),
        partition_key: Some(key.into()),
        data: Blob(data.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

async fn create(svc: &Service, name: &str, shards: i64) {
    svc.create_stream(CreateStreamInput {
        stream_name: name.into(),
        shard_count: Some(shards),
        ..Default::default()
    })
    .await
    .unwrap();
}

fn stream_ref(name: &str) -> StreamRef {
    StreamRef {
        stream_name: Some(name.into()),
        stream_arn: None,
    }
}

/// Regression: every shard's partition was deleted with its own checkpoint
/// on the log's single writer thread, stalling every stream's ingest.
#[tokio::test]
async fn deleting_a_stream_checkpoints_the_log_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(ServiceConfig::new(dir.path())).await.unwrap();
    create(&svc, "doomed", 6).await;
    create(&svc, "other", 1).await;
    for i in 0..30 {
        svc.put_record(put("doomed", &format!("k{i}"), "x"))
            .await
            .unwrap();
    }
    let log: Arc<ripstream_log::Log> = svc.inner.log.clone();
    let before = log.stats().checkpoint_passes;
    svc.delete_stream(DeleteStreamInput {
        stream: stream_ref("doomed"),
        enforce_consumer_deletion: None,
    })
    .await
    .unwrap();
    assert_eq!(log.stats().checkpoint_passes - before, 1);
    assert_eq!(log.partition_ids().len(), 1);
    svc.put_record(put("other", "k", "still here"))
        .await
        .unwrap();
}

/// Regression: a partition the catalog lists but the disk lacks was silently
/// recreated empty at start-up.
#[tokio::test]
async fn a_stream_whose_partition_is_gone_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let uid = {
        let svc = Service::open(ServiceConfig::new(dir.path())).await.unwrap();
        create(&svc, "hurt", 2).await;
        create(&svc, "fine", 1).await;
        for i in 0..10 {
            svc.put_record(put("hurt", &format!("k{i}"), "x"))
                .await
                .unwrap();
        }
        svc.put_record(put("fine", "k", "kept")).await.unwrap();
        let uid = svc.inner.lookup("hurt").unwrap().rec.uid;
        svc.shutdown().await;
        uid
    };
    let gone = dir.path().join(format!("log/stream{uid}-shard1"));
    std::fs::remove_dir_all(&gone).unwrap();
    let svc = Service::open(ServiceConfig::new(dir.path())).await.unwrap();
    assert!(!gone.exists(), "the missing partition was recreated");
    assert_eq!(svc.damaged_streams(), ["hurt"]);
    let err = svc
        .describe_stream(DescribeStreamInput {
            stream: stream_ref("hurt"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, crate::Error::ResourceNotFound(_))
            && msg.contains("shardId-000000000001")
            && msg.contains(&format!("stream{uid}-shard1")),
        "{err:?}"
    );
    assert!(svc.put_record(put("hurt", "k", "x")).await.is_err());
    // The name stays taken, and the shard that is left is not removed as an orphan.
    assert!(
        svc.create_stream(CreateStreamInput {
            stream_name: "hurt".into(),
            shard_count: Some(1),
            ..Default::default()
        })
        .await
        .is_err()
    );
    assert!(dir.path().join(format!("log/stream{uid}-shard0")).exists());
    // Other streams are served.
    svc.put_record(put("fine", "k", "more")).await.unwrap();
}

/// Regression (same defect): a partition directory emptied of its segment
/// files was reopened as an empty shard.
#[tokio::test]
async fn a_stream_whose_partition_lost_its_segments_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let uid = {
        let svc = Service::open(ServiceConfig::new(dir.path())).await.unwrap();
        create(&svc, "hurt", 1).await;
        svc.put_record(put("hurt", "k", "x")).await.unwrap();
        let uid = svc.inner.lookup("hurt").unwrap().rec.uid;
        svc.shutdown().await;
        uid
    };
    let part = dir.path().join(format!("log/stream{uid}-shard0"));
    for e in std::fs::read_dir(&part).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let svc = Service::open(ServiceConfig::new(dir.path())).await.unwrap();
    assert_eq!(svc.damaged_streams(), ["hurt"]);
}
