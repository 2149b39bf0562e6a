//! One leased shard: wait for the parents, read from the checkpoint by
//! polling GetRecords, hand records to the processor in order, and at the
//! shard's end create the children's leases and let the processor
//! checkpoint SHARD_END.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::lease::{AT_TIMESTAMP, LATEST, Lease, LeaseTable, SHARD_END, TRIM_HORIZON};
use super::{
    Checkpointer, InitialPosition, InitializationInput, KinesisClientRecord, ProcessRecordsInput,
    RecordProcessor, WorkerConfig, cmp_sequence, kinesis_error,
};
use crate::aggregation::deaggregate;

/// Why the worker stops a shard's processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The worker shuts down: checkpoint, then the worker gives the lease back.
    Shutdown,
    /// Another worker stole the lease for balance: checkpoint, then let go.
    Handoff,
    /// The lease is gone: stop without checkpointing.
    LeaseLost,
}

/// What a shard task tells its worker.
#[derive(Debug)]
pub(crate) enum ShardEvent {
    /// The shard ended and its SHARD_END checkpoint is written.
    Finished(String),
    /// The task stopped (for any reason) and holds nothing any more.
    Exited(String),
    /// The shard cannot be read however often it is retried: the worker stops.
    Failed(super::ConsumerError),
}

/// What a shard task reads with, shareable across awaits.
pub(crate) struct ShardContext {
    pub kinesis: Client,
    pub table: LeaseTable,
    pub cfg: Arc<WorkerConfig>,
    pub lease: Lease,
    /// Set when reading by enhanced fan-out.
    pub consumer_arn: Option<String>,
}

pub(crate) struct ShardTask<P> {
    pub ctx: ShardContext,
    pub processor: P,
    pub stop: watch::Receiver<Option<Stop>>,
    /// Past this instant the worker could not renew in time: stop processing.
    pub valid_until: Arc<Mutex<Instant>>,
    pub events: mpsc::UnboundedSender<ShardEvent>,
    /// The last record read from the shard (processed or filtered out), to
    /// renew an expired iterator from.
    pub read_to: Option<String>,
}

enum Ended {
    Stopped(Stop),
    ShardEnd,
}

impl<P: RecordProcessor> ShardTask<P> {
    fn stop_reason(&self) -> Option<Stop> {
        if let Some(s) = *self.stop.borrow() {
            return Some(s);
        }
        (Instant::now() > *self.valid_until.lock()).then_some(Stop::LeaseLost)
    }

    /// Sleeps, waking early when told to stop.
    async fn pause(&mut self, d: Duration) -> Option<Stop> {
        let _ = tokio::time::timeout(d, self.stop.changed()).await;
        self.stop_reason()
    }

    pub(crate) async fn run(mut self) {
        let shard = self.ctx.lease.key.clone();
        let me = self.ctx.cfg.worker_id.clone();
        let mut checkpointer = Checkpointer::new(self.ctx.table.clone(), &shard, &me);
        let outcome = self.process(&mut checkpointer).await;
        match outcome {
            Ok(Ended::ShardEnd) => {
                let _ = self.events.send(ShardEvent::Finished(shard.clone()));
            }
            Ok(Ended::Stopped(Stop::Shutdown)) => {
                self.processor.shutdown_requested(&mut checkpointer).await;
            }
            Ok(Ended::Stopped(Stop::Handoff)) => {
                self.processor.shutdown_requested(&mut checkpointer).await;
                if let Err(e) = self.ctx.table.release(&shard, &me).await {
                    warn!(shard = %shard, error = %e, "could not finish the hand-off");
                }
                info!(shard = %shard, "handed over");
            }
            Ok(Ended::Stopped(Stop::LeaseLost)) => {
                self.processor.lease_lost().await;
                info!(shard = %shard, "lease lost");
            }
            Err(e) => {
                warn!(shard = %shard, error = %e, "shard processing stopped");
                self.processor.lease_lost().await;
                if e.is_permanent() {
                    let _ = self.events.send(ShardEvent::Failed(e));
                }
            }
        }
        let _ = self.events.send(ShardEvent::Exited(shard));
    }

    async fn process(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<Ended, super::ConsumerError> {
        let shard = self.ctx.lease.key.clone();
        let me = self.ctx.cfg.worker_id.clone();
        let poll = (self.ctx.cfg.failover_time / 10)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        // Children wait for their parents.
        loop {
            if let Some(s) = self.stop_reason() {
                return Ok(Ended::Stopped(s));
            }
            match self.ctx.parents_done().await {
                Ok(true) => break,
                Ok(false) => debug!(shard = %shard, "waiting for parent shards"),
                Err(e) => warn!(shard = %shard, error = %e, "cannot read parent leases"),
            }
            if let Some(s) = self.pause(poll).await {
                return Ok(Ended::Stopped(s));
            }
        }
        // A stolen lease: wait until the previous owner has checkpointed and
        // let go, or has had a failover time to do so.
        let since = Instant::now();
        let lease = loop {
            let Some(lease) = self.ctx.table.get(&shard).await? else {
                return Ok(Ended::Stopped(Stop::LeaseLost));
            };
            if lease.owner.as_deref() != Some(me.as_str()) {
                return Ok(Ended::Stopped(Stop::LeaseLost));
            }
            match &lease.checkpoint_owner {
                Some(prev) if prev != &me => {
                    if since.elapsed() >= self.ctx.cfg.failover_time {
                        // The previous owner never let go (it died, or lost
                        // track of the lease): end its part in the hand-off,
                        // which also refuses any late checkpoint of its own.
                        self.ctx.table.clear_handoff(&shard, &me, prev).await?;
                        continue;
                    }
                }
                _ => break lease,
            }
            if let Some(s) = self.pause(poll).await {
                return Ok(Ended::Stopped(s));
            }
        };
        self.processor
            .initialize(InitializationInput {
                shard_id: shard.clone(),
                checkpoint: lease.checkpoint.clone(),
                checkpoint_sub_sequence_number: lease.checkpoint_sub,
            })
            .await;
        if lease.checkpoint == SHARD_END {
            return Ok(Ended::ShardEnd);
        }
        let range = match (&lease.starting_hash_key, &lease.ending_hash_key) {
            (Some(a), Some(b)) => a.parse::<u128>().ok().zip(b.parse::<u128>().ok()),
            _ => None,
        };
        // Records at or before the checkpoint are skipped (a checkpoint inside
        // an aggregate resumes at its sequence number).
        let mut resume_after = match lease.checkpoint.as_str() {
            TRIM_HORIZON | LATEST | AT_TIMESTAMP => None,
            seq => Some((seq.to_string(), lease.checkpoint_sub)),
        };
        if let Some(arn) = self.ctx.consumer_arn.clone() {
            return self
                .fan_out(&arn, &lease, range, resume_after, checkpointer)
                .await;
        }
        let mut iterator = self.ctx.iterator(&lease.checkpoint, None).await?;
        let mut backoff = Duration::from_millis(200);
        loop {
            if let Some(s) = self.stop_reason() {
                return Ok(Ended::Stopped(s));
            }
            let Some(it) = iterator.clone() else {
                return self.shard_end(checkpointer, Vec::new()).await;
            };
            let out = self
                .ctx
                .kinesis
                .get_records()
                .shard_iterator(it)
                .limit(self.ctx.cfg.max_records)
                .send()
                .await;
            let out = match out {
                Ok(o) => {
                    backoff = Duration::from_millis(200);
                    o
                }
                Err(e) => {
                    let code = e.code().unwrap_or("");
                    if code == "ExpiredIteratorException" {
                        if let Some(s) = self.pause(backoff).await {
                            return Ok(Ended::Stopped(s));
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        iterator = match self.read_to.clone() {
                            Some(seq) => self.ctx.iterator(&seq, Some(&seq)).await?,
                            None => self.ctx.iterator(&lease.checkpoint, None).await?,
                        };
                        continue;
                    }
                    if code == "ResourceNotFoundException" {
                        // The shard is gone (past retention): it has ended, as
                        // the KCL treats it; its children are found by listing.
                        return self.shard_end(checkpointer, Vec::new()).await;
                    }
                    if super::permanent_code(e.code()) {
                        return Err(super::kinesis_failure("GetRecords", &e));
                    }
                    debug!(shard = %shard, error = %kinesis_error(&e), "GetRecords failed; backing off");
                    if let Some(s) = self.pause(backoff).await {
                        return Ok(Ended::Stopped(s));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let behind = out.millis_behind_latest();
            if let Some(stop) = self
                .deliver(
                    out.records(),
                    range,
                    &mut resume_after,
                    behind,
                    checkpointer,
                )
                .await
            {
                return Ok(Ended::Stopped(stop));
            }
            iterator = out.next_shard_iterator().map(String::from);
            if iterator.is_none() {
                let children = child_leases(out.child_shards());
                return self.shard_end(checkpointer, children).await;
            }
            let wait = if out.records().is_empty() || behind == Some(0) {
                self.ctx.cfg.idle_time_between_reads
            } else {
                // At most 5 GetRecords calls per second per shard.
                Duration::from_millis(200)
            };
            if let Some(s) = self.pause(wait).await {
                return Ok(Ended::Stopped(s));
            }
        }
    }

    /// Reads by enhanced fan-out: subscribes from the checkpoint and again
    /// after each subscription ends, from its continuation sequence number.
    async fn fan_out(
        &mut self,
        arn: &str,
        lease: &Lease,
        range: Option<(u128, u128)>,
        mut resume_after: Option<(String, u64)>,
        checkpointer: &mut Checkpointer,
    ) -> Result<Ended, super::ConsumerError> {
        let shard = lease.key.clone();
        let mut position = match lease.checkpoint.as_str() {
            TRIM_HORIZON => (ShardIteratorType::TrimHorizon, None),
            LATEST => (ShardIteratorType::Latest, None),
            AT_TIMESTAMP => (ShardIteratorType::AtTimestamp, None),
            seq => (ShardIteratorType::AtSequenceNumber, Some(seq.to_string())),
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            if let Some(s) = self.stop_reason() {
                return Ok(Ended::Stopped(s));
            }
            let mut start = StartingPosition::builder()
                .r#type(position.0.clone())
                .set_sequence_number(position.1.clone());
            if position.0 == ShardIteratorType::AtTimestamp {
                let at = match self.ctx.cfg.initial_position {
                    InitialPosition::AtTimestamp(t) => t,
                    _ => SystemTime::now(),
                };
                start = start.timestamp(aws_smithy_types::DateTime::from(at));
            }
            let start = start
                .build()
                .map_err(|e| super::ConsumerError::Kinesis(e.to_string()))?;
            let subscribed = self
                .ctx
                .kinesis
                .subscribe_to_shard()
                .consumer_arn(arn)
                .shard_id(&shard)
                .starting_position(start)
                .send()
                .await;
            let subscribed_at = Instant::now();
            let mut out = match subscribed {
                Ok(o) => {
                    backoff = Duration::from_millis(200);
                    o
                }
                Err(e) => {
                    if e.code() == Some("ResourceNotFoundException") {
                        return Err(super::ConsumerError::Kinesis(kinesis_error(&e)));
                    }
                    if super::permanent_code(e.code()) {
                        return Err(super::kinesis_failure("SubscribeToShard", &e));
                    }
                    // ResourceInUseException: the previous subscription of
                    // this consumer to the shard is still being replaced.
                    debug!(shard = %shard, error = %kinesis_error(&e), "SubscribeToShard failed; backing off");
                    if let Some(s) = self.pause(backoff).await {
                        return Ok(Ended::Stopped(s));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            loop {
                let event = tokio::select! {
                    ev = out.event_stream.recv() => ev,
                    _ = self.stop.changed() => {
                        return Ok(Ended::Stopped(self.stop_reason().unwrap_or(Stop::LeaseLost)));
                    }
                };
                match event {
                    Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => {
                        if let Some(stop) = self
                            .deliver(
                                e.records(),
                                range,
                                &mut resume_after,
                                Some(e.millis_behind_latest()),
                                checkpointer,
                            )
                            .await
                        {
                            return Ok(Ended::Stopped(stop));
                        }
                        if !e.child_shards().is_empty() {
                            // The end of a closed shard.
                            let children = child_leases(e.child_shards());
                            return self.shard_end(checkpointer, children).await;
                        }
                        if !e.continuation_sequence_number().is_empty() {
                            position = (
                                ShardIteratorType::AfterSequenceNumber,
                                Some(e.continuation_sequence_number().to_string()),
                            );
                        }
                    }
                    Ok(Some(_)) => {}
                    // The subscription ended (after 5 minutes): subscribe
                    // again, pausing if it ended at once.
                    Ok(None) => {
                        if subscribed_at.elapsed() < Duration::from_secs(1)
                            && let Some(s) = self.pause(backoff).await
                        {
                            return Ok(Ended::Stopped(s));
                        }
                        break;
                    }
                    Err(e) => {
                        debug!(shard = %shard, error = ?e, "subscription failed; subscribing again");
                        if let Some(s) = self.pause(backoff).await {
                            return Ok(Ended::Stopped(s));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Hands a batch to the processor: de-aggregated, without what the
    /// checkpoint already covers. Returns why to stop, if the lease is gone.
    async fn deliver(
        &mut self,
        raw: &[aws_sdk_kinesis::types::Record],
        range: Option<(u128, u128)>,
        resume_after: &mut Option<(String, u64)>,
        behind: Option<i64>,
        checkpointer: &mut Checkpointer,
    ) -> Option<Stop> {
        let shard = self.ctx.lease.key.clone();
        if let Some(r) = raw.last() {
            self.read_to = Some(r.sequence_number().to_string());
        }
        let mut records = Vec::new();
        for r in raw {
            for u in client_records(r, range, &shard) {
                if let Some((cs, csub)) = resume_after.as_ref() {
                    let o = cmp_sequence(&u.sequence_number, cs);
                    if o.is_lt() || (o.is_eq() && u.sub_sequence_number <= *csub) {
                        continue;
                    }
                }
                records.push(u);
            }
        }
        let last = records.last()?;
        // Filtering by position is only needed until the first record past the checkpoint.
        *resume_after = None;
        // Checked before the checkpoint position moves, so that a batch that
        // is never processed is never checkpointed either.
        if let Some(s) = self.stop_reason() {
            return Some(s);
        }
        checkpointer.last = Some((last.sequence_number.clone(), last.sub_sequence_number));
        self.processor
            .process_records(
                ProcessRecordsInput {
                    shard_id: shard,
                    records,
                    millis_behind_latest: behind,
                },
                checkpointer,
            )
            .await;
        None
    }

    /// The shard's records are all processed: create the children's leases,
    /// let the processor checkpoint SHARD_END, and give the lease back.
    async fn shard_end(
        &mut self,
        checkpointer: &mut Checkpointer,
        children: Vec<Lease>,
    ) -> Result<Ended, super::ConsumerError> {
        let shard = self.ctx.lease.key.clone();
        for c in &children {
            self.ctx.table.create_if_absent(c).await?;
        }
        let ids: Vec<String> = children.iter().map(|c| c.key.clone()).collect();
        self.ctx.table.set_children(&shard, &ids).await?;
        checkpointer.at_shard_end = true;
        let mut delay = Duration::from_millis(500);
        loop {
            self.processor.shard_ended(checkpointer).await;
            if checkpointer.wrote_shard_end() {
                break;
            }
            warn!(shard = %shard, "the record processor did not checkpoint at the end of the shard; its children wait");
            if let Some(s) = self.pause(delay).await {
                return Ok(Ended::Stopped(s));
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        self.ctx
            .table
            .release(&shard, &self.ctx.cfg.worker_id)
            .await?;
        info!(shard = %shard, children = ?ids, "shard finished");
        Ok(Ended::ShardEnd)
    }
}

impl ShardContext {
    /// Whether every parent of the shard is finished (or has no lease).
    async fn parents_done(&self) -> Result<bool, super::ConsumerError> {
        for p in &self.lease.parents {
            if let Some(l) = self.table.get(p).await?
                && !l.is_finished()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A shard iterator for a checkpoint (or just after `after`).
    async fn iterator(
        &self,
        checkpoint: &str,
        after: Option<&str>,
    ) -> Result<Option<String>, super::ConsumerError> {
        let mut req = self
            .kinesis
            .get_shard_iterator()
            .stream_name(&self.cfg.stream_name)
            .shard_id(&self.lease.key);
        req = match (after, checkpoint) {
            (Some(seq), _) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            (None, TRIM_HORIZON) => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            (None, LATEST) => req.shard_iterator_type(ShardIteratorType::Latest),
            (None, AT_TIMESTAMP) => {
                let at = match self.cfg.initial_position {
                    InitialPosition::AtTimestamp(t) => t,
                    _ => SystemTime::now(),
                };
                req.shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(aws_smithy_types::DateTime::from(at))
            }
            // A checkpoint inside an aggregate: read that record again and
            // skip what was processed.
            (None, seq) => req
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            match req.clone().send().await {
                Ok(out) => return Ok(out.shard_iterator().map(String::from)),
                Err(e)
                    if matches!(
                        e.code(),
                        Some("ProvisionedThroughputExceededException" | "LimitExceededException")
                    ) || e.as_service_error().is_none() =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                // The shard is gone (past retention): treated as its end.
                Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
                Err(e) => return Err(super::kinesis_failure("GetShardIterator", &e)),
            }
        }
    }
}

/// The processor's view of one Kinesis record: itself, or the user records
/// of an aggregate.
fn client_records(
    r: &aws_sdk_kinesis::types::Record,
    range: Option<(u128, u128)>,
    shard: &str,
) -> Vec<KinesisClientRecord> {
    let seq = r.sequence_number().to_string();
    let arrival = r
        .approximate_arrival_timestamp()
        .and_then(|t| SystemTime::try_from(*t).ok());
    let data = r.data().as_ref();
    match deaggregate(data) {
        // An aggregate holding a record outside this shard's range landed
        // here after a reshard; its producer sends it again, so it is
        // dropped whole, as the KCL does.
        Some(users)
            if range
                .is_some_and(|(a, b)| users.iter().any(|u| !(a..=b).contains(&u.hash_key()))) =>
        {
            debug!(shard = %shard, sequence_number = %seq, "dropping an aggregate that belongs to another shard");
            Vec::new()
        }
        Some(users) => users
            .into_iter()
            .map(|u| KinesisClientRecord {
                sequence_number: seq.clone(),
                sub_sequence_number: u.sub_sequence_number,
                partition_key: u.partition_key,
                explicit_hash_key: u.explicit_hash_key,
                data: u.data,
                approximate_arrival_timestamp: arrival,
                aggregated: true,
            })
            .collect(),
        None => vec![KinesisClientRecord {
            sequence_number: seq,
            sub_sequence_number: 0,
            partition_key: r.partition_key().unwrap_or_default().to_string(),
            explicit_hash_key: None,
            data: data.to_vec(),
            approximate_arrival_timestamp: arrival,
            aggregated: false,
        }],
    }
}

/// Leases for the children a finished shard reports, to start at their beginning.
fn child_leases(children: &[aws_sdk_kinesis::types::ChildShard]) -> Vec<Lease> {
    children
        .iter()
        .map(|c| Lease {
            key: c.shard_id().to_string(),
            checkpoint: TRIM_HORIZON.to_string(),
            parents: c.parent_shards().to_vec(),
            starting_hash_key: c
                .hash_key_range()
                .map(|h| h.starting_hash_key().to_string()),
            ending_hash_key: c.hash_key_range().map(|h| h.ending_hash_key().to_string()),
            ..Lease::default()
        })
        .collect()
}
