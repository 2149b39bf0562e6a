//! SplitShard, MergeShards, UpdateShardCount: lineage, reads across a
//! reshard, per-key order, shard filters and crash safety.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{
    ScalingType, Shard, ShardFilter, ShardFilterType, ShardIteratorType, StreamStatus,
};

use crate::support::*;

const HALF: &str = "170141183460469231731687303715884105728";

pub(crate) async fn shards(c: &Client, stream: &str) -> Vec<Shard> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => c.list_shards().next_token(t),
            None => c.list_shards().stream_name(stream),
        };
        let page = req.send().await.unwrap();
        out.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return out,
        }
    }
}

pub(crate) fn open(shards: &[Shard]) -> Vec<&Shard> {
    let mut v: Vec<&Shard> = shards
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .unwrap()
                .ending_sequence_number()
                .is_none()
        })
        .collect();
    v.sort_by_key(|s| {
        s.hash_key_range()
            .unwrap()
            .starting_hash_key()
            .parse::<u128>()
            .unwrap()
    });
    v
}

pub(crate) fn assert_tiling(shards: &[Shard]) {
    let open = open(shards);
    let mut next = 0u128;
    for (i, s) in open.iter().enumerate() {
        let r = s.hash_key_range().unwrap();
        assert_eq!(
            r.starting_hash_key().parse::<u128>().unwrap(),
            next,
            "gap or overlap before {}",
            s.shard_id()
        );
        let end: u128 = r.ending_hash_key().parse().unwrap();
        if i + 1 < open.len() {
            next = end + 1;
        } else {
            assert_eq!(end, u128::MAX);
        }
    }
}

/// Reads every record of the stream the way the KCL does: a shard only after
/// all its parents are read to their end. Returns (partition key, data) pairs
/// per key, in read order.
pub(crate) async fn read_lineage_ordered(c: &Client, stream: &str) -> HashMap<String, Vec<String>> {
    let all = shards(c, stream).await;
    let ids: HashSet<String> = all.iter().map(|s| s.shard_id().to_string()).collect();
    let mut done: HashSet<String> = HashSet::new();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    while done.len() < all.len() {
        let ready: Vec<&Shard> = all
            .iter()
            .filter(|s| !done.contains(s.shard_id()))
            .filter(|s| {
                s.parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .all(|p| done.contains(p) || !ids.contains(p))
            })
            .collect();
        assert!(!ready.is_empty(), "lineage has a cycle");
        for s in ready {
            for r in read_shard(c, stream, s.shard_id()).await {
                out.entry(r.partition_key().unwrap().to_string())
                    .or_default()
                    .push(String::from_utf8(r.data().as_ref().to_vec()).unwrap());
            }
            done.insert(s.shard_id().to_string());
        }
    }
    out
}

#[tokio::test]
async fn split_closes_the_parent_and_reads_continue_in_the_children() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "sp", 1).await;
    for i in 0..10 {
        c.put_record()
            .stream_name("sp")
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("before-{i}")))
            .send()
            .await
            .unwrap();
    }
    let it = c
        .get_shard_iterator()
        .stream_name("sp")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    c.split_shard()
        .stream_name("sp")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(HALF)
        .send()
        .await
        .unwrap();
    let d = c.describe_stream().stream_name("sp").send().await.unwrap();
    let d = d.stream_description().unwrap();
    assert_eq!(d.stream_status(), &StreamStatus::Active);
    let ids: Vec<&str> = d.shards().iter().map(|s| s.shard_id()).collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002"
        ]
    );
    let parent = &d.shards()[0];
    let ending = parent
        .sequence_number_range()
        .unwrap()
        .ending_sequence_number()
        .unwrap()
        .to_string();
    let c1 = &d.shards()[1];
    assert_eq!(c1.parent_shard_id(), Some("shardId-000000000000"));
    assert_eq!(
        c1.hash_key_range().unwrap().ending_hash_key(),
        "170141183460469231731687303715884105727"
    );
    assert_eq!(
        d.shards()[2].hash_key_range().unwrap().starting_hash_key(),
        HALF
    );
    assert_eq!(
        c.describe_stream_summary()
            .stream_name("sp")
            .send()
            .await
            .unwrap()
            .stream_description_summary()
            .unwrap()
            .open_shard_count(),
        2
    );

    let mut child_seqs = Vec::new();
    for i in 0..10 {
        let out = c
            .put_record()
            .stream_name("sp")
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("after-{i}")))
            .send()
            .await
            .unwrap();
        assert_ne!(out.shard_id(), "shardId-000000000000");
        child_seqs.push(out.sequence_number().to_string());
    }
    // Children number their records above everything in the parent.
    assert!(child_seqs.iter().all(|s| s.as_str() > ending.as_str()));
    // The old iterator reads the parent to its end, then learns the children.
    let r = c.get_records().shard_iterator(&it).send().await.unwrap();
    assert_eq!(r.records().len(), 10);
    assert!(
        r.records()
            .iter()
            .all(|rec| rec.sequence_number() < ending.as_str())
    );
    let r = if r.next_shard_iterator().is_some() {
        c.get_records()
            .shard_iterator(r.next_shard_iterator().unwrap())
            .send()
            .await
            .unwrap()
    } else {
        r
    };
    assert!(r.next_shard_iterator().is_none());
    let children: Vec<&str> = r.child_shards().iter().map(|c| c.shard_id()).collect();
    assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);
    assert_eq!(
        r.child_shards()[0].parent_shards(),
        ["shardId-000000000000"]
    );

    let by_key = read_lineage_ordered(&c, "sp").await;
    for i in 0..10 {
        assert_eq!(
            by_key[&format!("k{i}")],
            [format!("before-{i}"), format!("after-{i}")]
        );
    }

    let e = c
        .split_shard()
        .stream_name("sp")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(HALF)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .split_shard()
        .stream_name("sp")
        .shard_to_split("shardId-000000000001")
        .new_starting_hash_key("1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .split_shard()
        .stream_name("sp")
        .shard_to_split("shardId-000000000009")
        .new_starting_hash_key("5")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
}

#[tokio::test]
async fn merge_requires_adjacent_open_shards() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "mg", 3).await;
    let e = c
        .merge_shards()
        .stream_name("mg")
        .shard_to_merge("shardId-000000000000")
        .adjacent_shard_to_merge("shardId-000000000002")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    // Order matters: the adjacent shard must follow ShardToMerge.
    let e = c
        .merge_shards()
        .stream_name("mg")
        .shard_to_merge("shardId-000000000001")
        .adjacent_shard_to_merge("shardId-000000000000")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "Shards shardId-000000000001 and shardId-000000000000 in stream mg under account 000000000000 are not an adjacent pair of shards eligible for merging"
    );
    c.merge_shards()
        .stream_name("mg")
        .shard_to_merge("shardId-000000000000")
        .adjacent_shard_to_merge("shardId-000000000001")
        .send()
        .await
        .unwrap();
    let all = shards(&c, "mg").await;
    assert_tiling(&all);
    let child = all
        .iter()
        .find(|s| s.shard_id() == "shardId-000000000003")
        .unwrap();
    assert_eq!(child.parent_shard_id(), Some("shardId-000000000000"));
    assert_eq!(
        child.adjacent_parent_shard_id(),
        Some("shardId-000000000001")
    );
    assert_eq!(child.hash_key_range().unwrap().starting_hash_key(), "0");
    let e = c
        .merge_shards()
        .stream_name("mg")
        .shard_to_merge("shardId-000000000000")
        .adjacent_shard_to_merge("shardId-000000000002")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    // Shard filters after the merge.
    let filter = |t: ShardFilterType| ShardFilter::builder().r#type(t).build().unwrap();
    let latest = c
        .list_shards()
        .stream_name("mg")
        .shard_filter(filter(ShardFilterType::AtLatest))
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = latest.shards().iter().map(|s| s.shard_id()).collect();
    assert_eq!(ids, ["shardId-000000000002", "shardId-000000000003"]);
    let horizon = c
        .list_shards()
        .stream_name("mg")
        .shard_filter(filter(ShardFilterType::AtTrimHorizon))
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = horizon.shards().iter().map(|s| s.shard_id()).collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002"
        ]
    );
    let from = c
        .list_shards()
        .stream_name("mg")
        .shard_filter(filter(ShardFilterType::FromTrimHorizon))
        .send()
        .await
        .unwrap();
    assert_eq!(from.shards().len(), 4);
    let future = DateTime::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 1000,
    );
    let at = c
        .list_shards()
        .stream_name("mg")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::FromTimestamp)
                .timestamp(future)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(at.shards().len(), 2);
}

#[tokio::test]
async fn update_shard_count_scales_uniformly_within_the_rules() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "us", 3).await;
    for (target, expect_current) in [(4, 3), (8, 4), (5, 8), (3, 5)] {
        let out = c
            .update_shard_count()
            .stream_name("us")
            .target_shard_count(target)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .unwrap();
        assert_eq!(out.current_shard_count(), Some(expect_current));
        assert_eq!(out.target_shard_count(), Some(target));
        let all = shards(&c, "us").await;
        assert_tiling(&all);
        let open = open(&all);
        assert_eq!(open.len(), target as usize);
        let even = ripstream_kinesis::hash::even_ranges(target as u32);
        for (s, (a, b)) in open.iter().zip(even) {
            let r = s.hash_key_range().unwrap();
            assert_eq!(
                (
                    r.starting_hash_key().to_string(),
                    r.ending_hash_key().to_string()
                ),
                (a.to_string(), b.to_string())
            );
        }
    }
    let e = c
        .update_shard_count()
        .stream_name("us")
        .target_shard_count(7)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "LimitExceededException");
    let e = c
        .update_shard_count()
        .stream_name("us")
        .target_shard_count(1)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "LimitExceededException");
    c.update_stream_mode()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/us")
        .stream_mode_details(
            aws_sdk_kinesis::types::StreamModeDetails::builder()
                .stream_mode(aws_sdk_kinesis::types::StreamMode::OnDemand)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let e = c
        .update_shard_count()
        .stream_name("us")
        .target_shard_count(4)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
}

#[tokio::test]
async fn reshards_show_updating_and_respect_the_shard_limit() {
    let srv = TestServer::start_with(&["--update-stream-delay-ms", "500", "--shard-limit", "3"]);
    let c = srv.client();
    create_stream(&c, "up", 2).await;
    c.split_shard()
        .stream_name("up")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("1000")
        .send()
        .await
        .unwrap();
    let s = c
        .describe_stream_summary()
        .stream_name("up")
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.stream_description_summary().unwrap().stream_status(),
        &StreamStatus::Updating
    );
    let e = c
        .merge_shards()
        .stream_name("up")
        .shard_to_merge("shardId-000000000002")
        .adjacent_shard_to_merge("shardId-000000000003")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    // Records still flow while UPDATING.
    c.put_record()
        .stream_name("up")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = c
        .split_shard()
        .stream_name("up")
        .shard_to_split("shardId-000000000001")
        .new_starting_hash_key("200000000000000000000000000000000000000")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "LimitExceededException");
}

type Acked = Arc<Mutex<BTreeMap<String, Vec<(String, String)>>>>;

async fn write_keys(
    url: String,
    acked: Acked,
    writer: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let c = client_for(&url);
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("w{writer}-k{}", n % 5);
        let data = format!("{writer}-{n}");
        if let Ok(out) = c
            .put_record()
            .stream_name("ord")
            .partition_key(&key)
            .data(Blob::new(data.clone()))
            .send()
            .await
        {
            acked
                .lock()
                .unwrap()
                .entry(key)
                .or_default()
                .push((out.sequence_number().to_string(), data));
        }
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_across_many_reshards_under_load() {
    let srv = TestServer::start_with(&["--quotas", "off"]);
    let c = srv.client();
    create_stream(&c, "ord", 2).await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(write_keys(srv.url(), acked.clone(), w, stop.clone())))
        .collect();
    for target in [4, 6, 3, 5, 3] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.update_shard_count()
            .stream_name("ord")
            .target_shard_count(target)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .unwrap();
    }
    let open_now = open(&shards(&c, "ord").await)
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect::<Vec<_>>();
    c.merge_shards()
        .stream_name("ord")
        .shard_to_merge(&open_now[0])
        .adjacent_shard_to_merge(&open_now[1])
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let read = read_lineage_ordered(&c, "ord").await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.values().map(Vec::len).sum::<usize>() > 50);
    for (key, records) in acked.iter() {
        let expected: Vec<String> = records.iter().map(|(_, d)| d.clone()).collect();
        assert_eq!(read.get(key), Some(&expected), "key {key}");
    }
    assert_tiling(&shards(&c, "ord").await);
}

#[tokio::test]
async fn kill_9_during_resharding_leaves_a_whole_layout() {
    let mut srv = TestServer::start();
    create_stream(&srv.client(), "cr", 2).await;
    let mut acked: Vec<(String, String)> = Vec::new();
    for round in 0..6u64 {
        let c = srv.client();
        for i in 0..20 {
            let out = c
                .put_record()
                .stream_name("cr")
                .partition_key(format!("k{i}"))
                .data(Blob::new(format!("{round}-{i}")))
                .send()
                .await
                .unwrap();
            acked.push((
                out.shard_id().to_string(),
                out.sequence_number().to_string(),
            ));
        }
        let before = open(&shards(&c, "cr").await).len();
        let target = if before >= 4 { 2 } else { before as i32 * 2 };
        let call = tokio::spawn({
            let c = c.clone();
            async move {
                c.update_shard_count()
                    .stream_name("cr")
                    .target_shard_count(target)
                    .scaling_type(ScalingType::UniformScaling)
                    .send()
                    .await
            }
        });
        tokio::time::sleep(Duration::from_micros(500 * round)).await;
        srv.kill9();
        let finished = call.await.unwrap().is_ok();
        srv.restart();
        let c = srv.client();
        let all = shards(&c, "cr").await;
        assert_tiling(&all);
        let after = open(&all).len();
        assert!(
            after == before || after == target as usize,
            "round {round}: {before} -> {after} (target {target})"
        );
        if finished {
            assert_eq!(after, target as usize, "an acknowledged reshard was lost");
        }
        let mut stored = HashSet::new();
        for s in &all {
            for r in read_shard(&c, "cr", s.shard_id()).await {
                stored.insert((s.shard_id().to_string(), r.sequence_number().to_string()));
            }
        }
        for a in &acked {
            assert!(stored.contains(a), "round {round}: lost {a:?}");
        }
    }
}

/// A closed shard past retention goes for good: its partition is deleted, it
/// leaves the catalog (GetShardIterator no longer finds it, across a
/// restart), and its children still name it as their parent, as on AWS.
#[tokio::test]
async fn closed_shards_past_retention_are_pruned() {
    let mut srv = TestServer::start_with(&["--retention-check-secs", "1"]);
    let c = srv.client();
    create_stream(&c, "pr", 1).await;
    for i in 0..10 {
        c.put_record()
            .stream_name("pr")
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("old-{i}")))
            .send()
            .await
            .unwrap();
    }
    c.split_shard()
        .stream_name("pr")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(HALF)
        .send()
        .await
        .unwrap();
    let parent_dir = srv.data_dir().join("log/stream1-shard0");
    assert!(parent_dir.exists());
    // Within retention the closed shard stays, on disk and in the catalog.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(parent_dir.exists());
    assert_eq!(shards(&c, "pr").await.len(), 3);

    // Restarted 25 hours later (the server's clock moved ahead).
    assert_eq!(srv.terminate(), Some(0));
    srv.set_extra(&[
        "--retention-check-secs",
        "1",
        "--test-clock-offset-secs",
        "90000",
    ]);
    srv.restart();
    let c = srv.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while parent_dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired parent was never pruned; log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let check = |all: Vec<Shard>| {
        let ids: Vec<&str> = all.iter().map(|s| s.shard_id()).collect();
        assert_eq!(ids, ["shardId-000000000001", "shardId-000000000002"]);
        for s in &all {
            assert_eq!(s.parent_shard_id(), Some("shardId-000000000000"));
        }
    };
    check(shards(&c, "pr").await);
    let gone = c
        .get_shard_iterator()
        .stream_name("pr")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&gone), "ResourceNotFoundException");
    let d = c.describe_stream().stream_name("pr").send().await.unwrap();
    let described: Vec<&str> = d
        .stream_description()
        .unwrap()
        .shards()
        .iter()
        .map(|s| s.shard_id())
        .collect();
    assert_eq!(described, ["shardId-000000000001", "shardId-000000000002"]);

    // The catalog no longer has it: the same after another restart, and the
    // stream keeps working (new shards take new numbers).
    srv.terminate();
    srv.restart();
    let c = srv.client();
    check(shards(&c, "pr").await);
    c.merge_shards()
        .stream_name("pr")
        .shard_to_merge("shardId-000000000001")
        .adjacent_shard_to_merge("shardId-000000000002")
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = shards(&c, "pr")
        .await
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000001",
            "shardId-000000000002",
            "shardId-000000000003"
        ]
    );
    c.put_record()
        .stream_name("pr")
        .partition_key("k")
        .data(Blob::new("new"))
        .send()
        .await
        .unwrap();
    let read = read_shard(&c, "pr", "shardId-000000000003").await;
    assert_eq!(read.len(), 1);
}

/// AWS checks a shard id before it looks the stream up: an id that names no
/// shard number is "not found" in any stream, known or not, while a well-formed
/// id on an unknown stream gets the stream's own not-found message.
#[tokio::test]
async fn unparseable_shard_ids_are_not_found_before_the_stream_is() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "known", 2).await;
    let acct = "000000000000";
    for stream in ["nosuch", "known"] {
        for bad in ["ABKLFD8", "2.14E4", "2147483648", "shardId-002147483648"] {
            let want =
                format!("Could not find shard {bad} in stream {stream} under account {acct}.");
            let e = c
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(bad)
                .shard_iterator_type(ShardIteratorType::Latest)
                .send()
                .await
                .unwrap_err();
            assert_eq!(
                (code(&e), message(&e)),
                ("ResourceNotFoundException".into(), want.clone()),
                "GetShardIterator {stream} {bad}"
            );
            let e = c
                .split_shard()
                .stream_name(stream)
                .shard_to_split(bad)
                .new_starting_hash_key("1000")
                .send()
                .await
                .unwrap_err();
            assert_eq!(
                (code(&e), message(&e)),
                ("ResourceNotFoundException".into(), want.clone()),
                "SplitShard {stream} {bad}"
            );
            for (first, second) in [(bad, "shardId-000000000001"), ("shardId-000000000000", bad)] {
                let e = c
                    .merge_shards()
                    .stream_name(stream)
                    .shard_to_merge(first)
                    .adjacent_shard_to_merge(second)
                    .send()
                    .await
                    .unwrap_err();
                assert_eq!(
                    (code(&e), message(&e)),
                    ("ResourceNotFoundException".into(), want.clone()),
                    "MergeShards {stream} {first} {second}"
                );
            }
        }
    }
    // Well-formed ids on an unknown stream: the stream is what is missing.
    let e = c
        .split_shard()
        .stream_name("nosuch")
        .shard_to_split("shardId-2147483647")
        .new_starting_hash_key("1000")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "Stream nosuch under account 000000000000 not found."
    );
    let e = c
        .merge_shards()
        .stream_name("nosuch")
        .shard_to_merge("x-0")
        .adjacent_shard_to_merge("1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "Stream nosuch under account 000000000000 not found."
    );
    let e = c
        .get_shard_iterator()
        .stream_name("nosuch")
        .shard_id("a-00002147483647")
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "Shard shardId-002147483647 in stream nosuch under account 000000000000 does not exist"
    );
    // A well-formed id of a shard the known stream lacks names the shard.
    let e = c
        .split_shard()
        .stream_name("known")
        .shard_to_split("shardId-5")
        .new_starting_hash_key("1000")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "Could not find shard shardId-000000000005 in stream known under account 000000000000."
    );
}

async fn status_of(c: &Client, stream: &str) -> StreamStatus {
    c.describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_status()
        .clone()
}

async fn described_shards(c: &Client, stream: &str) -> Vec<Shard> {
    c.describe_stream()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description()
        .unwrap()
        .shards()
        .to_vec()
}

fn ids(shards: &[Shard]) -> Vec<(&str, bool)> {
    shards
        .iter()
        .map(|s| {
            let closed = s
                .sequence_number_range()
                .unwrap()
                .ending_sequence_number()
                .is_some();
            (s.shard_id(), closed)
        })
        .collect()
}

/// While a reshard is UPDATING, AWS still lists the shards as they were; the
/// new layout shows once the stream is ACTIVE again.
#[tokio::test]
async fn a_reshard_is_published_when_the_stream_is_active_again() {
    let mut srv = TestServer::start_with(&["--update-stream-delay-ms", "4000"]);
    let c = srv.client();
    create_stream(&c, "pub", 2).await;
    let before = described_shards(&c, "pub").await;
    c.split_shard()
        .stream_name("pub")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("1000")
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(&c, "pub").await, StreamStatus::Updating);
    let old = vec![
        ("shardId-000000000000", false),
        ("shardId-000000000001", false),
    ];
    let during = described_shards(&c, "pub").await;
    assert_eq!(ids(&during), old);
    assert_eq!(during, before);
    assert_eq!(ids(&shards(&c, "pub").await), old);
    let latest = c
        .list_shards()
        .stream_name("pub")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ids(latest.shards()), old);
    let summary = c
        .describe_stream_summary()
        .stream_name("pub")
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .open_shard_count(),
        2
    );
    // The catalog keeps the reshard pending across a crash.
    srv.kill9();
    srv.restart();
    let c = srv.client();
    if status_of(&c, "pub").await == StreamStatus::Updating {
        assert_eq!(ids(&described_shards(&c, "pub").await), old);
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while status_of(&c, "pub").await != StreamStatus::Active {
        assert!(std::time::Instant::now() < deadline, "never ACTIVE again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new = vec![
        ("shardId-000000000000", true),
        ("shardId-000000000001", false),
        ("shardId-000000000002", false),
        ("shardId-000000000003", false),
    ];
    let after = described_shards(&c, "pub").await;
    assert_eq!(ids(&after), new);
    assert_eq!(after[2].parent_shard_id(), Some("shardId-000000000000"));
    assert_eq!(ids(&shards(&c, "pub").await), new);

    // A later UPDATING state that is no reshard hides nothing.
    c.update_stream_mode()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/pub")
        .stream_mode_details(
            aws_sdk_kinesis::types::StreamModeDetails::builder()
                .stream_mode(aws_sdk_kinesis::types::StreamMode::OnDemand)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(&c, "pub").await, StreamStatus::Updating);
    assert_eq!(ids(&described_shards(&c, "pub").await), new);
    assert_eq!(ids(&shards(&c, "pub").await), new);
}
