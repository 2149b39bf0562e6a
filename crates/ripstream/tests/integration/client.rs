//! The client libraries (ripstream-client) against the real binary: several
//! KCL-style workers sharing a stream through the lease table the server
//! serves, and the KPL-style producer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;
use parking_lot::Mutex;
use ripstream_client::aggregation::deaggregate;
use ripstream_client::consumer::{
    Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker, WorkerConfig,
};
use ripstream_client::producer::{Producer, ProducerConfig, PutResult};

use crate::dynamodb::dynamo;
use crate::support::TestServer;

/// One record as a processor saw it.
#[derive(Debug, Clone)]
struct Seen {
    worker: String,
    /// Which processor instance (one per lease tenure).
    instance: u64,
    shard: String,
    seq: String,
    sub: u64,
    key: String,
    data: Vec<u8>,
    started: Instant,
    ended: Instant,
}

#[derive(Default)]
struct Journal {
    seen: Mutex<Vec<Seen>>,
    /// When each shard's processor reached SHARD_END.
    ended: Mutex<HashMap<String, Instant>>,
    instances: AtomicU64,
}

struct Recorder {
    worker: String,
    shard: String,
    instance: u64,
    journal: Arc<Journal>,
}

impl RecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        let started = Instant::now();
        // Make each batch take a moment, so overlapping work would show.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let ended = Instant::now();
        {
            let mut seen = self.journal.seen.lock();
            for r in &input.records {
                seen.push(Seen {
                    worker: self.worker.clone(),
                    instance: self.instance,
                    shard: self.shard.clone(),
                    seq: r.sequence_number.clone(),
                    sub: r.sub_sequence_number,
                    key: r.partition_key.clone(),
                    data: r.data.clone(),
                    started,
                    ended,
                });
            }
        }
        let _ = checkpointer.checkpoint().await;
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        self.journal
            .ended
            .lock()
            .insert(self.shard.clone(), Instant::now());
        checkpointer
            .checkpoint()
            .await
            .expect("SHARD_END checkpoint");
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

fn start_worker(
    server: &TestServer,
    app: &str,
    stream: &str,
    id: &str,
    journal: &Arc<Journal>,
) -> Worker {
    start_worker_with(server, app, stream, id, journal, |c| c)
}

fn start_worker_with(
    server: &TestServer,
    app: &str,
    stream: &str,
    id: &str,
    journal: &Arc<Journal>,
    tweak: impl FnOnce(WorkerConfig) -> WorkerConfig,
) -> Worker {
    let cfg = WorkerConfig::new(app, stream, id)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(2))
        .shard_sync_interval(Duration::from_millis(500))
        .idle_time_between_reads(Duration::from_millis(100));
    let cfg = tweak(cfg);
    let journal = journal.clone();
    let worker = id.to_string();
    Worker::start(
        server.client(),
        dynamo(&server.url()),
        cfg,
        move |shard: &str| Recorder {
            worker: worker.clone(),
            shard: shard.to_string(),
            instance: journal.instances.fetch_add(1, Ordering::SeqCst),
            journal: journal.clone(),
        },
    )
}

/// A producer that sends one request at a time, so acknowledgement order is
/// put order as long as nothing is retried (the server here enforces no
/// quotas, so nothing is).
fn ordered_producer(kinesis: &Client, stream: &str) -> Producer {
    let mut cfg = ProducerConfig::new(stream);
    cfg.linger = Duration::from_millis(5);
    cfg.max_in_flight_requests = 1;
    Producer::new(kinesis.clone(), cfg)
}

/// Waits until a stream is ACTIVE (after creation or a reshard).
async fn wait_active(c: &Client, name: &str) {
    for _ in 0..100 {
        let d = c
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary()
            .unwrap()
            .stream_status()
            .as_str()
            == "ACTIVE"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {name} did not become ACTIVE");
}

async fn create_stream(c: &Client, name: &str, shards: i32) {
    c.create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    wait_active(c, name).await;
}

async fn produce(
    producer: &Producer,
    from: usize,
    to: usize,
    keys: usize,
) -> Vec<(String, String, PutResult)> {
    let mut acks = Vec::new();
    for i in from..to {
        let key = format!("key-{}", i % keys);
        let data = format!("record-{i}");
        acks.push((
            key.clone(),
            data.clone(),
            producer.put(key, data.into_bytes()).await.unwrap(),
        ));
    }
    producer.flush().await;
    let mut out = Vec::new();
    for (k, d, a) in acks {
        out.push((k, d, a.await.expect("record stored")));
    }
    out
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn processed(journal: &Journal) -> HashSet<(String, u64)> {
    journal
        .seen
        .lock()
        .iter()
        .map(|s| (s.seq.clone(), s.sub))
        .collect()
}

/// Per processor instance, records come in strictly increasing order; and
/// two workers never process one shard at the same moment.
fn check_order_and_exclusion(journal: &Journal) {
    let seen = journal.seen.lock().clone();
    let mut by_instance: BTreeMap<u64, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        by_instance.entry(s.instance).or_default().push(s);
    }
    for (instance, list) in by_instance {
        for w in list.windows(2) {
            let a = (w[0].seq.len(), &w[0].seq, w[0].sub);
            let b = (w[1].seq.len(), &w[1].seq, w[1].sub);
            assert!(
                a < b,
                "processor {instance} on {} went back: {a:?} then {b:?}",
                w[0].shard
            );
        }
    }
    let mut by_shard: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        by_shard.entry(&s.shard).or_default().push(s);
    }
    for (shard, mut list) in by_shard {
        list.sort_by_key(|s| s.started);
        // Each batch must start after every other worker's batches so far ended.
        let mut latest_end: HashMap<&str, Instant> = HashMap::new();
        for s in list {
            for (worker, end) in &latest_end {
                assert!(
                    *worker == s.worker.as_str() || *end <= s.started,
                    "{worker} and {} processed {shard} at the same time",
                    s.worker
                );
            }
            let e = latest_end.entry(s.worker.as_str()).or_insert(s.ended);
            *e = (*e).max(s.ended);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_share_shards_fail_over_and_never_overlap() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kcl-shared", 6).await;
    let mut cfg = ProducerConfig::new("kcl-shared");
    cfg.linger = Duration::from_millis(10);
    let producer = Producer::new(kinesis.clone(), cfg);
    let mut acks = produce(&producer, 0, 600, 60).await;

    let journal = Arc::new(Journal::default());
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| {
            start_worker(
                &server,
                "kcl-app",
                "kcl-shared",
                &format!("worker-{i}"),
                &journal,
            )
        })
        .collect();
    wait_until(
        "an even split of 6 shards over 3 workers",
        Duration::from_secs(60),
        || {
            let held: Vec<Vec<String>> = workers.iter().map(|w| w.state().held).collect();
            let all: HashSet<&String> = held.iter().flatten().collect();
            held.iter().all(|h| h.len() == 2) && all.len() == 6
        },
    )
    .await;
    wait_until("the first 600 records", Duration::from_secs(60), || {
        processed(&journal).len() >= 600
    })
    .await;

    // Kill one worker without any goodbye: its shards move to the others.
    let victim = workers.remove(0);
    let orphaned = victim.state().held;
    victim.abort();
    let took = wait_until(
        "the orphaned shards to move",
        Duration::from_secs(30),
        || {
            let held: Vec<String> = workers.iter().flat_map(|w| w.state().held).collect();
            orphaned.iter().all(|s| held.contains(s)) && held.len() == 6
        },
    )
    .await;
    eprintln!("failover took {took:?} (failover time 2 s)");
    assert!(took < Duration::from_secs(8), "failover took {took:?}");

    acks.extend(produce(&producer, 600, 1200, 60).await);
    wait_until("all 1200 records", Duration::from_secs(60), || {
        let done = processed(&journal);
        acks.iter()
            .all(|(_, _, a)| done.contains(&(a.sequence_number.clone(), 0)))
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    check_order_and_exclusion(&journal);
    // Leases moved while records flowed: balancing hand-offs and the failover.
    assert!(journal.instances.load(Ordering::SeqCst) >= 8);
    // Every record arrived intact, in the shard it was stored in.
    let seen = journal.seen.lock().clone();
    let by_seq: HashMap<&str, &Seen> = seen.iter().map(|s| (s.seq.as_str(), s)).collect();
    for (key, data, ack) in &acks {
        let s = by_seq[ack.sequence_number.as_str()];
        assert_eq!(
            (&s.key, s.data.as_slice(), &s.shard),
            (key, data.as_bytes(), &ack.shard_id)
        );
    }
    // After a graceful shutdown the leases are free, with checkpoints kept.
    let leases = ripstream_client::consumer::LeaseTable::new(dynamo(&server.url()), "kcl-app")
        .list()
        .await
        .unwrap();
    assert_eq!(leases.len(), 6);
    for l in leases {
        assert_eq!(l.owner, None, "{l:?}");
        assert!(l.checkpoint.chars().all(|c| c.is_ascii_digit()), "{l:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshard_is_followed_parents_before_children() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kcl-reshard", 2).await;
    let producer = ordered_producer(&kinesis, "kcl-reshard");
    let journal = Arc::new(Journal::default());
    let workers: Vec<Worker> = (0..2)
        .map(|i| {
            start_worker(
                &server,
                "reshard-app",
                "kcl-reshard",
                &format!("w{i}"),
                &journal,
            )
        })
        .collect();
    let mut acks = produce(&producer, 0, 200, 20).await;
    // Split the first shard in the middle of its range, then keep writing.
    let shards = kinesis
        .list_shards()
        .stream_name("kcl-reshard")
        .send()
        .await
        .unwrap();
    let first = &shards.shards()[0];
    let start: u128 = first
        .hash_key_range()
        .unwrap()
        .starting_hash_key()
        .parse()
        .unwrap();
    let end: u128 = first
        .hash_key_range()
        .unwrap()
        .ending_hash_key()
        .parse()
        .unwrap();
    kinesis
        .split_shard()
        .stream_name("kcl-reshard")
        .shard_to_split(first.shard_id())
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, "kcl-reshard").await;
    acks.extend(produce(&producer, 200, 400, 20).await);
    wait_until("all 400 records", Duration::from_secs(60), || {
        let done = processed(&journal);
        acks.iter()
            .all(|(_, _, a)| done.contains(&(a.sequence_number.clone(), 0)))
    })
    .await;
    // Once both children have started, the parent's lease is cleaned up, and
    // shard discovery does not bring it back.
    let table = ripstream_client::consumer::LeaseTable::new(dynamo(&server.url()), "reshard-app");
    let parent = first.shard_id().to_string();
    let start_wait = Instant::now();
    loop {
        let keys: Vec<String> = table
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        if !keys.contains(&parent) {
            break;
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(20),
            "the parent lease stayed: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let keys: Vec<String> = table
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert!(
        !keys.contains(&parent),
        "shard sync re-created {parent}: {keys:?}"
    );
    for w in workers {
        w.shutdown().await;
    }
    check_order_and_exclusion(&journal);
    // Per partition key, records were processed in the order they were acknowledged.
    let seen = journal.seen.lock().clone();
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut ordered: Vec<&Seen> = seen.iter().collect();
    ordered.sort_by_key(|s| s.started);
    for (i, s) in ordered.iter().enumerate() {
        first_seen.entry(s.seq.as_str()).or_insert(i);
    }
    let mut per_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, _, a) in &acks {
        per_key
            .entry(k)
            .or_default()
            .push(first_seen[a.sequence_number.as_str()]);
    }
    for (k, positions) in per_key {
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "key {k} out of order: {positions:?}"
        );
    }
    // The children started only after the parent reached its end.
    let parent_end = journal.ended.lock()[first.shard_id()];
    let children: HashSet<&str> = acks
        .iter()
        .map(|(_, _, a)| a.shard_id.as_str())
        .filter(|s| *s != first.shard_id() && *s != shards.shards()[1].shard_id())
        .collect();
    assert_eq!(children.len(), 2, "{children:?}");
    for s in seen.iter().filter(|s| children.contains(s.shard.as_str())) {
        assert!(
            s.started >= parent_end,
            "child {} started before its parent ended",
            s.shard
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processing_resumes_after_the_last_checkpoint() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kcl-resume", 2).await;
    let mut cfg = ProducerConfig::new("kcl-resume");
    cfg.linger = Duration::from_millis(5);
    let producer = Producer::new(kinesis.clone(), cfg);
    let first = produce(&producer, 0, 100, 10).await;
    let journal = Arc::new(Journal::default());
    let w = start_worker(&server, "resume-app", "kcl-resume", "a", &journal);
    wait_until("the first 100", Duration::from_secs(30), || {
        processed(&journal).len() >= 100
    })
    .await;
    w.shutdown().await;
    let second = produce(&producer, 100, 150, 10).await;
    let journal2 = Arc::new(Journal::default());
    let w = start_worker(&server, "resume-app", "kcl-resume", "b", &journal2);
    wait_until("the next 50", Duration::from_secs(30), || {
        processed(&journal2).len() >= 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.shutdown().await;
    let again = processed(&journal2);
    let want: HashSet<(String, u64)> = second
        .iter()
        .map(|(_, _, a)| (a.sequence_number.clone(), 0))
        .collect();
    assert_eq!(again, want);
    assert!(
        first
            .iter()
            .all(|(_, _, a)| !again.contains(&(a.sequence_number.clone(), 0)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregated_records_round_trip() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kpl-agg", 2).await;
    let mut cfg = ProducerConfig::new("kpl-agg");
    cfg.aggregation = true;
    cfg.linger = Duration::from_millis(20);
    let producer = Producer::new(kinesis.clone(), cfg);
    let acks = produce(&producer, 0, 1000, 97).await;
    let m = producer.metrics();
    assert_eq!(m.user_records_sent, 1000);
    assert!(m.kinesis_records_sent < 100, "{m:?}");
    assert!(acks.iter().all(|(_, _, a)| a.sub_sequence_number.is_some()));
    // Read the raw records back and unpack them.
    let mut got = Vec::new();
    for s in kinesis
        .list_shards()
        .stream_name("kpl-agg")
        .send()
        .await
        .unwrap()
        .shards()
    {
        let range = s.hash_key_range().unwrap();
        let (lo, hi): (u128, u128) = (
            range.starting_hash_key().parse().unwrap(),
            range.ending_hash_key().parse().unwrap(),
        );
        let it = kinesis
            .get_shard_iterator()
            .stream_name("kpl-agg")
            .shard_id(s.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let out = kinesis
            .get_records()
            .shard_iterator(it.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        for r in out.records() {
            for u in deaggregate(r.data().as_ref()).expect("an aggregated record") {
                assert!(
                    (lo..=hi).contains(&u.hash_key()),
                    "a user record in the wrong shard"
                );
                got.push((
                    r.sequence_number().to_string(),
                    u.sub_sequence_number,
                    u.partition_key,
                    u.data,
                ));
            }
        }
    }
    assert_eq!(got.len(), 1000);
    let by_id: HashMap<(String, u64), (String, Vec<u8>)> = got
        .into_iter()
        .map(|(s, n, k, d)| ((s, n), (k, d)))
        .collect();
    for (k, d, a) in &acks {
        let (gk, gd) = &by_id[&(a.sequence_number.clone(), a.sub_sequence_number.unwrap())];
        assert_eq!((gk, gd.as_slice()), (k, d.as_bytes()));
    }
    // And a consumer de-aggregates them too.
    let journal = Arc::new(Journal::default());
    let w = start_worker(&server, "agg-app", "kpl-agg", "c", &journal);
    wait_until("1000 user records", Duration::from_secs(30), || {
        processed(&journal).len() >= 1000
    })
    .await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttled_records_are_retried_until_stored() {
    // AWS quotas on: one shard takes 1000 records/s; the producer is told
    // to push at ten times that, so the server throttles part of each batch.
    let server = TestServer::start();
    let kinesis = server.client();
    create_stream(&kinesis, "kpl-throttle", 1).await;
    let mut cfg = ProducerConfig::new("kpl-throttle");
    cfg.rate_limit_percent = 1000.0;
    cfg.linger = Duration::from_millis(5);
    let producer = Producer::new(kinesis.clone(), cfg);
    let acks = produce(&producer, 0, 3000, 100).await;
    let m = producer.metrics();
    assert!(m.throttles > 0 && m.retries > 0, "{m:?}");
    assert_eq!(m.user_records_sent, 3000);
    assert_eq!(m.user_records_failed, 0);
    let distinct: HashSet<&str> = acks
        .iter()
        .map(|(_, _, a)| a.sequence_number.as_str())
        .collect();
    assert_eq!(distinct.len(), 3000);
    assert!(acks.iter().any(|(_, _, a)| a.attempts > 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_buffer_makes_put_wait() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kpl-bounded", 2).await;
    let mut cfg = ProducerConfig::new("kpl-bounded");
    cfg.max_buffered_records = 50;
    cfg.linger = Duration::from_millis(20);
    let producer = Producer::new(kinesis, cfg);
    let mut peak = 0;
    let mut acks = Vec::new();
    for i in 0..2000 {
        acks.push(producer.put(format!("k{i}"), vec![7; 100]).await.unwrap());
        peak = peak.max(producer.outstanding());
    }
    producer.flush().await;
    for a in acks {
        a.await.unwrap();
    }
    assert!(peak <= 50, "{peak} records outstanding with a buffer of 50");
    assert!(peak >= 40, "the buffer never filled ({peak})");
    assert_eq!(producer.outstanding(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregates_survive_a_reshard_under_the_producer() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kpl-split", 1).await;
    let mut cfg = ProducerConfig::new("kpl-split");
    cfg.aggregation = true;
    cfg.linger = Duration::from_millis(20);
    let producer = Producer::new(kinesis.clone(), cfg);
    let mut acks = produce(&producer, 0, 300, 50).await;
    // Split while the producer still predicts the old single shard.
    kinesis
        .split_shard()
        .stream_name("kpl-split")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((u128::MAX / 2).to_string())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    acks.extend(produce(&producer, 300, 600, 50).await);
    // The first aggregates after the split went by the stale map and were sent again.
    assert!(producer.metrics().retries > 0, "{:?}", producer.metrics());
    let journal = Arc::new(Journal::default());
    let w = start_worker(&server, "split-app", "kpl-split", "c", &journal);
    wait_until("all 600 user records", Duration::from_secs(30), || {
        let done = processed(&journal);
        acks.iter().all(|(_, _, a)| {
            done.contains(&(a.sequence_number.clone(), a.sub_sequence_number.unwrap()))
        })
    })
    .await;
    w.shutdown().await;
    check_order_and_exclusion(&journal);
    // Every delivered user record sits in the shard whose range holds its key.
    let seen = journal.seen.lock().clone();
    let ranges: HashMap<String, (u128, u128)> = kinesis
        .list_shards()
        .stream_name("kpl-split")
        .send()
        .await
        .unwrap()
        .shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                s.shard_id().to_string(),
                (
                    r.starting_hash_key().parse().unwrap(),
                    r.ending_hash_key().parse().unwrap(),
                ),
            )
        })
        .collect();
    for s in &seen {
        let (lo, hi) = ranges[&s.shard];
        let h = ripstream_client::aggregation::hash_key_of(&s.key);
        assert!(
            (lo..=hi).contains(&h),
            "{} delivered from {}",
            s.key,
            s.shard
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_workers_follow_a_split() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kcl-efo", 2).await;
    let producer = ordered_producer(&kinesis, "kcl-efo");
    let journal = Arc::new(Journal::default());
    let workers: Vec<Worker> = (0..2)
        .map(|i| {
            start_worker_with(
                &server,
                "efo-app",
                "kcl-efo",
                &format!("e{i}"),
                &journal,
                |c| c.enhanced_fan_out("efo-app"),
            )
        })
        .collect();
    let mut acks = produce(&producer, 0, 200, 20).await;
    wait_until("the first 200 pushed", Duration::from_secs(30), || {
        processed(&journal).len() >= 200
    })
    .await;
    kinesis
        .split_shard()
        .stream_name("kcl-efo")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((u128::MAX / 4).to_string())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    acks.extend(produce(&producer, 200, 400, 20).await);
    wait_until("all 400 pushed", Duration::from_secs(30), || {
        let done = processed(&journal);
        acks.iter()
            .all(|(_, _, a)| done.contains(&(a.sequence_number.clone(), 0)))
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    check_order_and_exclusion(&journal);
    let consumers = kinesis
        .list_stream_consumers()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/kcl-efo")
        .send()
        .await
        .unwrap();
    assert_eq!(consumers.consumers().len(), 1);
    assert!(journal.ended.lock().contains_key("shardId-000000000000"));
}

/// A processor that panics once on its first batch: the worker gives the
/// lease back and the shard is processed by a fresh processor.
struct Panicky {
    inner: Recorder,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl RecordProcessor for Panicky {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("a bug in the application's processor");
        }
        self.inner.process_records(input, checkpointer).await
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        self.inner.shard_ended(checkpointer).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_processor_gives_its_lease_back() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kcl-panic", 1).await;
    let producer = ordered_producer(&kinesis, "kcl-panic");
    let acks = produce(&producer, 0, 50, 5).await;
    let journal = Arc::new(Journal::default());
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cfg = WorkerConfig::new("panic-app", "kcl-panic", "p")
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(2))
        .idle_time_between_reads(Duration::from_millis(100));
    let (j, a) = (journal.clone(), armed.clone());
    let w = Worker::start(
        server.client(),
        dynamo(&server.url()),
        cfg,
        move |shard: &str| Panicky {
            inner: Recorder {
                worker: "p".into(),
                shard: shard.to_string(),
                instance: j.instances.fetch_add(1, Ordering::SeqCst),
                journal: j.clone(),
            },
            armed: a.clone(),
        },
    );
    wait_until(
        "the records after the panic",
        Duration::from_secs(30),
        || {
            let done = processed(&journal);
            acks.iter()
                .all(|(_, _, a)| done.contains(&(a.sequence_number.clone(), 0)))
        },
    )
    .await;
    w.shutdown().await;
    assert!(
        !armed.load(Ordering::SeqCst),
        "the processor never panicked"
    );
    assert!(journal.instances.load(Ordering::SeqCst) >= 2);
}

/// A worker that steals from one that is gone takes over after the failover
/// time, even though the gone worker never finishes the hand-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_of_a_dead_worker_are_taken_over() {
    let server = TestServer::start_with(&["--quotas", "off"]);
    let kinesis = server.client();
    create_stream(&kinesis, "kcl-dead", 2).await;
    let producer = ordered_producer(&kinesis, "kcl-dead");
    let acks = produce(&producer, 0, 100, 10).await;
    // Both leases belong to a worker that no longer runs.
    let table = ripstream_client::consumer::LeaseTable::new(dynamo(&server.url()), "dead-app");
    table.ensure().await.unwrap();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        table
            .create_if_absent(&ripstream_client::consumer::Lease {
                key: shard.into(),
                owner: Some("dead-worker".into()),
                counter: 7,
                checkpoint: "TRIM_HORIZON".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let journal = Arc::new(Journal::default());
    let w = start_worker(&server, "dead-app", "kcl-dead", "alive", &journal);
    wait_until(
        "every record, by the live worker",
        Duration::from_secs(30),
        || {
            let done = processed(&journal);
            acks.iter()
                .all(|(_, _, a)| done.contains(&(a.sequence_number.clone(), 0)))
        },
    )
    .await;
    w.shutdown().await;
    check_order_and_exclusion(&journal);
    for l in table.list().await.unwrap() {
        assert_eq!((l.owner, l.checkpoint_owner), (None, None), "{}", l.key);
    }
}
