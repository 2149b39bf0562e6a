//! Enhanced fan-out: consumer registration and SubscribeToShard.
//!
//! A subscription is a task that reads the shard's log from the requested
//! position and pushes events into a channel of one slot: it waits for the
//! log's change signal rather than polling, so a record is pushed as soon as
//! its append is acknowledged; and it only reads the next batch once the
//! previous event was taken, so a slow subscriber reads from disk at its own
//! pace and never holds more than one event in memory (nor slows producers or
//! other subscribers).

use std::sync::Arc;
use std::time::Duration;

use ripstream_meta::{ConsumerRecord, ConsumerStatus, StreamRecord, StreamStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::error::dry_run;
use crate::quota::{QuotaMode, READ_BYTES_PER_SEC, TokenBucket};
use crate::types::*;
use crate::{Error, Inner, Result, Service, StreamState, shard_id};

/// Most consumers one stream may have.
pub(crate) const MAX_CONSUMERS: usize = 20;
/// A subscription that started less than this long ago cannot be taken over.
const TAKEOVER_AFTER_MS: i64 = 5_000;
/// Most bytes of record data in one pushed event.
const EVENT_BYTES: usize = 1024 * 1024;
/// An event is pushed at least this often, with no records if none arrived.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The effective status of a consumer, `None` once its deregistration completed.
pub(crate) fn consumer_status(c: &ConsumerRecord, now: i64) -> Option<ConsumerStatus> {
    match c.status {
        ConsumerStatus::Creating if now >= c.status_until_ms => Some(ConsumerStatus::Active),
        ConsumerStatus::Deleting if now >= c.status_until_ms => None,
        s => Some(s),
    }
}

/// The consumers of a stream that still exist.
pub(crate) fn live_consumers(
    rec: &StreamRecord,
    now: i64,
) -> impl Iterator<Item = &ConsumerRecord> {
    rec.consumers
        .iter()
        .filter(move |c| consumer_status(c, now).is_some())
}

/// A live subscription, by (consumer ARN, shard index).
#[derive(Debug)]
pub(crate) struct SubscriptionEntry {
    generation: u64,
    started_ms: i64,
    cancel: Arc<Notify>,
}

/// What a subscriber receives: events, or an error that ends the stream.
pub type SubscriptionItem = Result<SubscribeToShardEvent>;

/// Domain of the signed ListStreamConsumers NextToken.
const LIST_CONSUMERS_TOKEN: &str = "ListStreamConsumers";

#[derive(Serialize, Deserialize)]
struct ListConsumersToken {
    /// Stream uid.
    u: u64,
    /// Last consumer name returned.
    a: String,
}

impl Inner {
    pub(crate) fn consumer_arn(&self, stream: &str, c: &ConsumerRecord) -> String {
        self.arn_scope()
            .consumer_arn(stream, &c.name, c.created_ms.div_euclid(1000))
    }

    fn consumer_view(&self, stream: &str, c: &ConsumerRecord, now: i64) -> Consumer {
        Consumer {
            consumer_name: c.name.clone(),
            consumer_arn: self.consumer_arn(stream, c),
            consumer_status: consumer_status(c, now)
                .unwrap_or(ConsumerStatus::Deleting)
                .as_str()
                .to_string(),
            consumer_creation_timestamp: Timestamp(c.created_ms),
        }
    }

    /// (stream name, consumer name, creation seconds) of a consumer ARN of
    /// this server (parsed strictly: see [`crate::arn`]).
    pub(crate) fn parse_consumer_arn(&self, arn: &str) -> Result<(String, String, i64)> {
        match self.arn_scope().parse(arn, "ConsumerARN")? {
            crate::arn::KinesisArn::Consumer {
                stream,
                consumer,
                created_secs,
            } => Ok((stream, consumer, created_secs)),
            crate::arn::KinesisArn::Stream { .. } => Err(Error::InvalidArgument(format!(
                "Invalid ConsumerARN {arn}."
            ))),
        }
    }

    fn consumer_not_found(&self, what: &str) -> Error {
        Error::ResourceNotFound(format!(
            "Consumer {what} under account {} not found.",
            self.cfg.account_id
        ))
    }

    /// The stream and consumer a request names.
    pub(crate) fn resolve_consumer(
        &self,
        r: &ConsumerRef,
    ) -> Result<(Arc<StreamState>, ConsumerRecord)> {
        let now = self.now_ms();
        let (stream, name, secs) = match (&r.consumer_arn, &r.stream_arn, &r.consumer_name) {
            (Some(arn), stream_arn, given_name) => {
                let (stream, name, secs) = self.parse_consumer_arn(arn)?;
                // The consumer acted on must be the one every member names,
                // or authorization and execution could disagree.
                if let Some(stream_arn) = stream_arn
                    && self.name_from_stream_arn(stream_arn)? != stream
                {
                    return Err(Error::InvalidArgument(format!(
                        "ConsumerARN {arn} does not belong to the stream {stream_arn}."
                    )));
                }
                if given_name.as_ref().is_some_and(|n| *n != name) {
                    return Err(Error::InvalidArgument(format!(
                        "ConsumerName does not match the name in ConsumerARN {arn}."
                    )));
                }
                (stream, name, Some(secs))
            }
            (None, Some(stream_arn), Some(name)) => {
                (self.name_from_stream_arn(stream_arn)?, name.clone(), None)
            }
            _ => {
                return Err(Error::InvalidArgument(
                    "Either ConsumerARN or both StreamARN and ConsumerName must be provided."
                        .into(),
                ));
            }
        };
        let what = r.consumer_arn.clone().unwrap_or_else(|| name.clone());
        let s = self
            .lookup(&stream)
            .map_err(|_| self.consumer_not_found(&what))?;
        let c = live_consumers(&s.rec, now)
            .find(|c| c.name == name && secs.is_none_or(|x| x == c.created_ms.div_euclid(1000)))
            .cloned()
            .ok_or_else(|| self.consumer_not_found(&what))?;
        Ok((s, c))
    }
}

impl Service {
    /// RegisterStreamConsumer.
    pub async fn register_stream_consumer(
        &self,
        input: RegisterStreamConsumerInput,
    ) -> Result<RegisterStreamConsumerOutput> {
        let inner = self.inner();
        let now = inner.now_ms();
        let stream = StreamRef {
            stream_name: None,
            stream_arn: Some(input.stream_arn.clone()),
        };
        let tags = input.tags.clone().unwrap_or_default();
        let mut created = None;
        let state = inner
            .mutate(&stream, true, |rec, _| {
                crate::tags::validate_new_tags(inner, &rec.name, &Default::default(), &tags)?;
                if live_consumers(rec, now).any(|c| c.name == input.consumer_name) {
                    return Err(Error::ResourceInUse(format!(
                        "Consumer {} under account {} already exists.",
                        input.consumer_name, inner.cfg.account_id
                    )));
                }
                if live_consumers(rec, now).count() >= MAX_CONSUMERS {
                    return Err(Error::LimitExceeded(format!(
                        "Stream {} under account {} has reached the limit of {MAX_CONSUMERS} registered consumers.",
                        rec.name, inner.cfg.account_id
                    )));
                }
                // The ARN carries the creation second: a name registered again gets a new ARN.
                let last = rec.consumers.iter().filter(|c| c.name == input.consumer_name).map(|c| c.created_ms).max();
                let created_ms = match last {
                    Some(l) if l.div_euclid(1000) >= now.div_euclid(1000) => (l.div_euclid(1000) + 1) * 1000,
                    _ => now,
                };
                rec.consumers.retain(|c| consumer_status(c, now).is_some());
                let c = ConsumerRecord {
                    name: input.consumer_name.clone(),
                    created_ms,
                    status: ConsumerStatus::Creating,
                    status_until_ms: now + inner.cfg.create_delay.as_millis() as i64,
                    tags: tags.clone(),
                    policy: None,
                };
                rec.consumers.push(c.clone());
                created = Some(c);
                Ok(())
            })
            .await?;
        let c = created.ok_or_else(|| Error::Internal("consumer not recorded".into()))?;
        let mut view = inner.consumer_view(&state.rec.name, &c, now);
        // Registration answers CREATING, as AWS does, even when the delay is zero.
        view.consumer_status = ConsumerStatus::Creating.as_str().to_string();
        Ok(RegisterStreamConsumerOutput { consumer: view })
    }

    /// DescribeStreamConsumer.
    pub async fn describe_stream_consumer(
        &self,
        input: ConsumerRef,
    ) -> Result<DescribeStreamConsumerOutput> {
        let inner = self.inner();
        let (s, c) = inner.resolve_consumer(&input)?;
        let v = inner.consumer_view(&s.rec.name, &c, inner.now_ms());
        Ok(DescribeStreamConsumerOutput {
            consumer_description: ConsumerDescription {
                consumer_name: v.consumer_name,
                consumer_arn: v.consumer_arn,
                consumer_status: v.consumer_status,
                consumer_creation_timestamp: v.consumer_creation_timestamp,
                stream_arn: inner.stream_arn(&s.rec.name),
            },
        })
    }

    /// ListStreamConsumers.
    pub async fn list_stream_consumers(
        &self,
        input: ListStreamConsumersInput,
    ) -> Result<ListStreamConsumersOutput> {
        let inner = self.inner();
        let now = inner.now_ms();
        let s = inner.lookup_ref(None, Some(&input.stream_arn))?;
        if let Some(ts) = input.stream_creation_timestamp
            && ts.millis().abs_diff(s.rec.created_ms) >= 1000
        {
            return Err(inner.not_found(&s.rec.name));
        }
        let after = match &input.next_token {
            Some(t) => {
                let tok: ListConsumersToken = inner
                    .iterators
                    .open(LIST_CONSUMERS_TOKEN, t)
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .filter(|tok: &ListConsumersToken| tok.u == s.rec.uid)
                    .ok_or_else(|| Error::InvalidArgument("Invalid NextToken.".into()))?;
                Some(tok.a)
            }
            None => None,
        };
        let max = input.max_results.unwrap_or(100).clamp(1, 10_000) as usize;
        // In registration order, as AWS lists them.
        let mut all: Vec<&ConsumerRecord> = live_consumers(&s.rec, now).collect();
        all.sort_by_key(|c| c.created_ms);
        if let Some(a) = &after {
            let pos = all.iter().position(|c| &c.name == a).map_or(0, |p| p + 1);
            all.drain(..pos);
        }
        let more = all.len() > max;
        all.truncate(max);
        let next_token = if more {
            all.last().map(|c| {
                inner.iterators.seal(
                    LIST_CONSUMERS_TOKEN,
                    &serde_json::to_vec(&ListConsumersToken {
                        u: s.rec.uid,
                        a: c.name.clone(),
                    })
                    .unwrap_or_default(),
                )
            })
        } else {
            None
        };
        Ok(ListStreamConsumersOutput {
            consumers: all
                .into_iter()
                .map(|c| inner.consumer_view(&s.rec.name, c, now))
                .collect(),
            next_token,
        })
    }

    /// DeregisterStreamConsumer.
    pub async fn deregister_stream_consumer(&self, input: ConsumerRef) -> Result<Empty> {
        let inner = self.inner();
        let (s, c) = inner.resolve_consumer(&input)?;
        let now = inner.now_ms();
        let delay = inner.cfg.delete_delay.as_millis() as i64;
        let stream = StreamRef {
            stream_name: Some(s.rec.name.clone()),
            stream_arn: None,
        };
        inner
            .mutate(&stream, true, |rec, _| {
                if delay == 0 {
                    rec.consumers
                        .retain(|x| !(x.name == c.name && x.created_ms == c.created_ms));
                } else if let Some(x) = rec
                    .consumers
                    .iter_mut()
                    .find(|x| x.name == c.name && x.created_ms == c.created_ms)
                {
                    x.status = ConsumerStatus::Deleting;
                    x.status_until_ms = now + delay;
                }
                Ok(())
            })
            .await?;
        Ok(Empty {})
    }

    /// SubscribeToShard: validates the request, then returns the channel the
    /// subscription task pushes events into.
    pub async fn subscribe_to_shard(
        &self,
        input: SubscribeToShardInput,
    ) -> Result<mpsc::Receiver<SubscriptionItem>> {
        self.subscribe_to_shard_holding(input, ()).await
    }

    /// SubscribeToShard, keeping `guard` alive exactly as long as the
    /// subscription runs (the front door passes the request's in-flight
    /// slot, so it is given back when the subscription ends, whatever the
    /// reader does with its connection).
    pub async fn subscribe_to_shard_holding(
        &self,
        input: SubscribeToShardInput,
        guard: impl Send + 'static,
    ) -> Result<mpsc::Receiver<SubscriptionItem>> {
        let inner = self.inner();
        let consumer = ConsumerRef {
            consumer_arn: Some(input.consumer_arn.clone()),
            ..Default::default()
        };
        let (s, c) = inner.resolve_consumer(&consumer)?;
        let now = inner.now_ms();
        if consumer_status(&c, now) != Some(ConsumerStatus::Active) {
            return Err(Error::ResourceInUse(format!(
                "Consumer {} with creation timestamp {} under stream: {} , account {} is not in ACTIVE status.",
                c.name,
                c.created_ms.div_euclid(1000),
                s.rec.name,
                inner.cfg.account_id
            )));
        }
        if !matches!(
            s.status(now),
            Some(StreamStatus::Active | StreamStatus::Updating)
        ) {
            return Err(Error::ResourceInUse(format!(
                "Stream {} under account {} not ACTIVE or UPDATING, instead in state {}",
                s.rec.name,
                inner.cfg.account_id,
                s.status(now).map_or("DELETING", |x| x.as_str())
            )));
        }
        let index = inner.shard_index_in(&s.rec.name, &input.shard_id)?;
        let shard = s
            .rec
            .shards
            .iter()
            .find(|sh| sh.index == index)
            .ok_or_else(|| {
                Error::ResourceNotFound(format!(
                    "Shard {} in stream {} under account {} does not exist",
                    shard_id(index),
                    s.rec.name,
                    inner.cfg.account_id
                ))
            })?;
        let part = s
            .parts
            .get(&index)
            .ok_or_else(|| Error::Internal("shard without partition".into()))?;
        let pos = &input.starting_position;
        // Off the async workers, as GetShardIterator: it may read index files
        // and a record.
        let offset = {
            let (svc, s, shard, part) = (self.clone(), s.clone(), shard.clone(), part.clone());
            let (ty, seq, ts) = (
                pos.position_type,
                pos.sequence_number.clone(),
                pos.timestamp,
            );
            crate::blocking(move || {
                svc.start_offset(&s, &shard, &part, ty, seq.as_deref(), ts, now)
            })
            .await?
        };
        dry_run(input.dry_run)?;

        // Keyed by the canonical ARN, so no spelling of the consumer's ARN
        // can open a second concurrent subscription.
        let key = (inner.consumer_arn(&s.rec.name, &c), index);
        let cancel = Arc::new(Notify::new());
        let generation = {
            let mut subs = inner.subscriptions.lock();
            if let Some(old) = subs.get(&key) {
                if now - old.started_ms < TAKEOVER_AFTER_MS {
                    return Err(Error::ResourceInUse(format!(
                        "Another active subscription exists for this consumer: {}:{}:{}:{}",
                        inner.cfg.account_id,
                        s.rec.name,
                        shard_id(index),
                        c.name
                    )));
                }
                // Taken over: the older subscription ends with ResourceInUseException.
                old.cancel.notify_one();
            }
            let generation = inner
                .next_subscription
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            subs.insert(
                key.clone(),
                SubscriptionEntry {
                    generation,
                    started_ms: now,
                    cancel: cancel.clone(),
                },
            );
            generation
        };
        let (tx, rx) = mpsc::channel(1);
        let svc = self.clone();
        let task = Pump {
            stream: s.rec.name.clone(),
            uid: s.rec.uid,
            consumer: c,
            shard: index,
            offset,
            deadline: tokio::time::Instant::now() + inner.cfg.subscription_lifetime,
            send_deadline: inner.cfg.subscription_send_deadline,
            cancel,
        };
        tokio::spawn(async move {
            task.run(&svc, &tx).await;
            drop(guard);
            let mut subs = svc.inner().subscriptions.lock();
            if subs.get(&key).is_some_and(|e| e.generation == generation) {
                subs.remove(&key);
            }
        });
        Ok(rx)
    }
}

/// The state of one subscription's push loop.
struct Pump {
    stream: String,
    uid: u64,
    consumer: ConsumerRecord,
    shard: u32,
    offset: u64,
    deadline: tokio::time::Instant,
    /// Longest wait for the subscriber to take one item.
    send_deadline: Duration,
    cancel: Arc<Notify>,
}

impl Pump {
    async fn run(mut self, svc: &Service, tx: &mpsc::Sender<SubscriptionItem>) {
        let inner = svc.inner();
        let mut budget = TokenBucket::new(READ_BYTES_PER_SEC, inner.now_ms());
        loop {
            // Checked on every turn: a busy shard whose reader keeps up never
            // waits where the deadline would otherwise be noticed.
            if tokio::time::Instant::now() >= self.deadline {
                return;
            }
            let now = inner.now_ms();
            let s = match inner.lookup(&self.stream) {
                Ok(s) if s.rec.uid == self.uid => s,
                _ => {
                    self.send(tx, Err(inner.not_found(&self.stream))).await;
                    return;
                }
            };
            if !live_consumers(&s.rec, now)
                .any(|c| c.name == self.consumer.name && c.created_ms == self.consumer.created_ms)
            {
                self.send(tx, Err(inner.consumer_not_found(&self.consumer.name)))
                    .await;
                return;
            }
            let (Some(shard), Some(part)) = (
                s.rec.shards.iter().find(|sh| sh.index == self.shard),
                s.parts.get(&self.shard),
            ) else {
                return;
            };
            let mut changes = part.watch();
            changes.borrow_and_update();
            // On a blocking thread, as GetRecords reads: a cold read must not
            // hold an async worker.
            let read = {
                let (part, from) = (part.clone(), self.offset);
                crate::blocking(move || {
                    Ok(part.read(from, crate::records::MAX_GET_RECORDS, EVENT_BYTES)?)
                })
                .await
            };
            let read = match read {
                Ok(r) => r,
                Err(e) => {
                    self.send(tx, Err(e)).await;
                    return;
                }
            };
            let at_end = read.next_offset >= read.end_offset;
            if !read.records.is_empty() || (shard.end.is_some() && at_end) {
                let bytes: usize = read
                    .records
                    .iter()
                    .map(|r| r.key.len() + r.value.len())
                    .sum();
                if inner.cfg.quotas == QuotaMode::Aws {
                    // Each consumer has its own 2 MiB/s per shard.
                    while !budget.positive(inner.now_ms()) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    budget.take(bytes as f64);
                }
                let event = svc.event_from(&s, shard, &read, self.offset);
                let closed = event.child_shards.is_some();
                self.offset = read.next_offset;
                tokio::select! {
                    sent = self.send(tx, Ok(event)) => if !sent { return },
                    _ = self.cancel.notified() => { self.superseded(inner, tx).await; return }
                }
                if closed {
                    return;
                }
                continue;
            }
            self.offset = self.offset.max(read.next_offset);
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(HEARTBEAT) => {
                    let event = svc.event_from(&s, shard, &read, self.offset);
                    if !self.send(tx, Ok(event)).await {
                        return;
                    }
                }
                _ = self.cancel.notified() => { self.superseded(inner, tx).await; return }
                _ = tokio::time::sleep_until(self.deadline) => return,
                _ = tx.closed() => return,
            }
        }
    }

    /// Hands one item to the subscriber, waiting at most the configured send deadline
    /// (and never past the subscription's end): a reader that stops pulling
    /// loses its subscription instead of pinning this task. `false` when the
    /// subscription is over.
    async fn send(&self, tx: &mpsc::Sender<SubscriptionItem>, item: SubscriptionItem) -> bool {
        let until = self
            .deadline
            .min(tokio::time::Instant::now() + self.send_deadline);
        matches!(
            tokio::time::timeout_at(until, tx.send(item)).await,
            Ok(Ok(()))
        )
    }

    async fn superseded(&self, inner: &Inner, tx: &mpsc::Sender<SubscriptionItem>) {
        self.send(
            tx,
            Err(Error::ResourceInUse(format!(
                "Subscription for shard {} of stream {} under account {} was taken over by a newer subscription of the same consumer.",
                shard_id(self.shard),
                self.stream,
                inner.cfg.account_id
            ))),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::types::*;
    use crate::{Service, ServiceConfig};

    #[tokio::test]
    async fn a_busy_subscription_still_ends_at_its_lifetime() {
        const RECORDS: usize = 6_000;
        let dir = tempfile::tempdir().unwrap();
        // A backlog of ~6 MiB, written without quotas...
        {
            let mut cfg = ServiceConfig::new(dir.path());
            cfg.quotas = crate::quota::QuotaMode::Off;
            let svc = Service::open(cfg).await.unwrap();
            svc.create_stream(CreateStreamInput {
                stream_name: "s".into(),
                shard_count: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
            for _ in 0..RECORDS / 500 {
                let records = (0..500)
                    .map(|_| PutRecordsRequestEntry {
                        data: Blob(vec![7u8; 1024].into()),
                        partition_key: Some("k".into()),
                        explicit_hash_key: None,
                    })
                    .collect();
                let out = svc
                    .put_records(PutRecordsInput {
                        stream_name: Some("s".into()),
                        records,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(out.failed_record_count, 0);
            }
            svc.shutdown().await;
        }
        // ...then pushed at the consumer's 2 MiB/s to a reader that always
        // keeps up: the pump is never idle, so only the lifetime can end it,
        // long before the whole backlog has been pushed.
        let mut cfg = ServiceConfig::new(dir.path());
        cfg.subscription_lifetime = Duration::from_millis(500);
        let svc = Service::open(cfg).await.unwrap();
        let consumer = svc
            .register_stream_consumer(RegisterStreamConsumerInput {
                stream_arn: svc.inner().stream_arn("s"),
                consumer_name: "c".into(),
                tags: None,
            })
            .await
            .unwrap()
            .consumer;
        let mut sub = svc
            .subscribe_to_shard(SubscribeToShardInput {
                consumer_arn: consumer.consumer_arn.clone(),
                shard_id: "shardId-000000000000".into(),
                starting_position: StartingPosition {
                    position_type: ShardIteratorType::TrimHorizon,
                    sequence_number: None,
                    timestamp: None,
                },
                dry_run: None,
            })
            .await
            .unwrap();
        let mut received = 0;
        while let Some(item) = sub.recv().await {
            received += item.unwrap().records.len();
        }
        assert!(
            received < RECORDS,
            "the subscription outlived its lifetime: it pushed all {received} records"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_pulling_loses_its_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServiceConfig::new(dir.path());
        cfg.subscription_send_deadline = Duration::from_millis(200);
        let svc = Service::open(cfg).await.unwrap();
        svc.create_stream(CreateStreamInput {
            stream_name: "s".into(),
            shard_count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
        let arn = svc.inner().stream_arn("s");
        let consumer = svc
            .register_stream_consumer(RegisterStreamConsumerInput {
                stream_arn: arn,
                consumer_name: "c".into(),
                tags: None,
            })
            .await
            .unwrap()
            .consumer;
        let subscribe = || {
            svc.subscribe_to_shard(SubscribeToShardInput {
                consumer_arn: consumer.consumer_arn.clone(),
                shard_id: "shardId-000000000000".into(),
                starting_position: StartingPosition {
                    position_type: ShardIteratorType::TrimHorizon,
                    sequence_number: None,
                    timestamp: None,
                },
                dry_run: None,
            })
        };
        for i in 0..3 {
            svc.put_record(PutRecordInput {
                stream_name: Some("s".into()),
                partition_key: Some("k".into()),
                data: Blob(format!("r{i}").into_bytes().into()),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        // Held but never read: the one-slot channel fills and the next send
        // waits for a reader that never comes.
        let stalled = subscribe().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        svc.put_record(PutRecordInput {
            stream_name: Some("s".into()),
            partition_key: Some("k".into()),
            data: Blob(b"more".to_vec().into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut ended = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if svc.inner().subscriptions.lock().is_empty() {
                ended = true;
                break;
            }
        }
        assert!(ended, "the stalled subscription still holds its slot");
        // Its slot is free: a new subscription is not refused as a duplicate.
        let mut fresh = subscribe().await.unwrap();
        let first = fresh.recv().await.unwrap().unwrap();
        assert_eq!(first.records.len(), 4);
        drop(stalled);
    }
}
