//! The data plane: PutRecord, PutRecords, GetShardIterator, GetRecords.

use std::sync::Arc;

use bytes::Bytes;
use ripstream_log::{BatchBuilder, Partition, record_encoded_len};
use ripstream_log::{LogError, ReadOutcome};
use ripstream_meta::{RecordDistribution, ShardRecord, StreamStatus};

use std::sync::atomic::Ordering;

use crate::error::dry_run;
use crate::hash::{hash_key, parse_hash_key};
use crate::iterator::{IteratorToken, TokenError};
use crate::seq::{self, ShardSeq};
use crate::types::*;
use crate::{Error, Inner, Result, Service, StreamState, shard_id};

/// Most bytes (data plus partition keys) in one PutRecords request.
pub const MAX_PUT_RECORDS_BYTES: usize = 10 * 1024 * 1024;
/// Most bytes of data one GetRecords call returns.
pub const MAX_GET_RECORDS_BYTES: usize = 10 * 1024 * 1024;
/// Most records one GetRecords call returns.
pub const MAX_GET_RECORDS: usize = 10_000;

/// Appends stop this many offsets short of the largest offset a sequence
/// number carries: more than any number of appends in flight at once.
const OFFSET_MARGIN: u64 = 1 << 32;

/// What the numbers of the shard behind `route` carry.
fn route_seq(s: &StreamState, route: &crate::Route) -> ShardSeq {
    // The catalog keeps shards in index order (new ones get the next index,
    // pruning keeps the order); a linear search covers any other order.
    let shards = &s.rec.shards;
    shards
        .binary_search_by_key(&route.index, |sh| sh.index)
        .ok()
        .map(|i| &shards[i])
        .or_else(|| shards.iter().find(|sh| sh.index == route.index))
        .map_or(
            ShardSeq {
                index: route.index,
                layout: seq::Layout::Legacy {
                    created_ms: route.created_ms.max(0) as u64,
                },
            },
            ShardSeq::of,
        )
}

/// Formats epoch milliseconds the way Java's `Date.toString()` does in UTC,
/// as AWS's iterator-expiry message shows them: `Thu Jan 22 01:22:02 UTC 2015`.
pub(crate) fn java_date(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%a %b %d %H:%M:%S UTC %Y").to_string(),
        None => format!("{ms} ms since the epoch"),
    }
}

/// How a record is placed on a shard.
#[derive(Debug, Clone, Copy)]
enum Placement {
    Hash(u128),
    /// Round-robin over the open shards (record distribution AUTO).
    Spread,
}

/// What PutRecord(s) and GetRecords say of encryption: `KMS`, or nothing for
/// records stored in the clear (AWS sends no `EncryptionType: NONE` there).
fn encryption_type(s: &StreamState) -> Option<String> {
    s.rec.encryption.is_some().then(|| "KMS".to_string())
}

impl Inner {
    fn shard_missing(&self, stream: &str, shard: &str) -> Error {
        Error::ResourceNotFound(format!(
            "Shard {shard} in stream {stream} under account {} does not exist",
            self.cfg.account_id
        ))
    }

    /// The stream a put goes to: it must exist and have finished CREATING.
    fn writable_stream(&self, name: Option<&str>, arn: Option<&str>) -> Result<Arc<StreamState>> {
        let s = self.lookup_ref(name, arn)?;
        match s.status(self.now_ms()) {
            Some(StreamStatus::Creating) | None => Err(self.not_found(&s.rec.name)),
            Some(_) => Ok(s),
        }
    }

    /// Where a record goes: its hash key, or, for a stream that distributes
    /// records itself, no key at all.
    fn placement(
        &self,
        s: &StreamState,
        partition_key: Option<&str>,
        explicit: Option<&str>,
        key_path: &str,
    ) -> Result<Placement> {
        if s.rec.record_distribution == RecordDistribution::Auto {
            return Ok(Placement::Spread);
        }
        let Some(key) = partition_key else {
            return Err(Error::Validation(format!(
                "1 validation error detected: Value null at '{key_path}' failed to satisfy constraint: Member must not be null"
            )));
        };
        match explicit {
            Some(h) => parse_hash_key(h).map(Placement::Hash).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {h}"
                ))
            }),
            None => Ok(Placement::Hash(hash_key(key))),
        }
    }

    /// The open shard (position in `routes`) a placement goes to now.
    fn slot_for(&self, s: &StreamState, p: Placement) -> Result<usize> {
        match p {
            Placement::Hash(h) => s.route_slot(h).ok_or_else(|| self.no_route(s, h)),
            Placement::Spread => {
                let n = s.routes.len();
                if n == 0 {
                    return Err(self.no_route(s, 0));
                }
                Ok((s.spread.fetch_add(1, Ordering::Relaxed) % n as u64) as usize)
            }
        }
    }

    /// Encrypts a batch under the stream's key, if the stream is encrypted.
    fn maybe_encrypt(
        &self,
        s: &StreamState,
        batch: ripstream_log::PendingBatch,
    ) -> Result<ripstream_log::PendingBatch> {
        match &s.rec.encryption {
            None => Ok(batch),
            Some(e) => batch
                .encrypt(self.keyring.as_ref(), &e.resolved_key_id)
                .map_err(|c| crate::kms::cipher_error(&c)),
        }
    }

    fn throttled(&self, s: &StreamState, index: u32) -> String {
        format!(
            "Rate exceeded for shard {} in stream {} under account {}.",
            shard_id(index),
            s.rec.name,
            self.cfg.account_id
        )
    }

    /// Admits each (size, placement) of a shard's records under its quota.
    fn admit(&self, s: &StreamState, index: u32, records: &[(usize, Placement)]) -> Vec<bool> {
        let Some(q) = s.quotas.get(&index) else {
            return vec![true; records.len()];
        };
        let metered: Vec<(usize, Option<u128>)> = records
            .iter()
            .map(|(size, p)| {
                (
                    *size,
                    if let Placement::Hash(h) = p {
                        Some(*h)
                    } else {
                        None
                    },
                )
            })
            .collect();
        q.admit_writes(self.cfg.quotas, &metered, self.now_ms())
    }

    /// Waits for a reshard in progress to finish and returns the new snapshot.
    async fn after_reshard(&self, name: &str) -> Result<Arc<StreamState>> {
        drop(self.control.lock().await);
        self.writable_stream(Some(name), None)
    }

    fn no_route(&self, s: &StreamState, hash: u128) -> Error {
        Error::Internal(format!(
            "no open shard of stream {} covers hash key {hash}",
            s.rec.name
        ))
    }

    /// Refuses an append of `n` records whose sequence numbers the shard's
    /// layout could not hold (2^43 offsets, 2^20 leader epochs).
    fn check_numbering(&self, seq: &ShardSeq, part: &Partition, n: u64) -> Result<()> {
        let last = part.end_offset().saturating_add(n + OFFSET_MARGIN);
        if seq.can_number(self.epoch, last) {
            return Ok(());
        }
        tracing::error!(
            shard = %shard_id(seq.index),
            epoch = self.epoch,
            end_offset = part.end_offset(),
            "the shard's sequence numbers are exhausted; appends refused"
        );
        Err(Error::Internal(format!(
            "Shard {} has no sequence numbers left for epoch {} at offset {}",
            shard_id(seq.index),
            self.epoch,
            part.end_offset()
        )))
    }

    fn too_large(&self, path: &str, max: usize) -> Error {
        Error::Validation(format!(
            "1 validation error detected: Value at '{path}' failed to satisfy constraint: Member must have length less than or equal to {max}"
        ))
    }
}

impl Service {
    /// PutRecord.
    pub async fn put_record(&self, input: PutRecordInput) -> Result<PutRecordOutput> {
        let inner = self.inner();
        let mut s =
            inner.writable_stream(input.stream_name.as_deref(), input.stream_arn.as_deref())?;
        let key = input.partition_key.as_deref().unwrap_or("");
        let max = s.rec.max_record_size_kib as usize * 1024;
        if input.data.0.len() + key.len() > max {
            return Err(inner.too_large("data", max));
        }
        let placement = inner.placement(
            &s,
            input.partition_key.as_deref(),
            input.explicit_hash_key.as_deref(),
            "partitionKey",
        )?;
        // Judged as AWS does: any number it could have issued, arrived by now
        // (or one of this server's legacy numbers).
        if let Some(seq) = &input.sequence_number_for_ordering
            && !seq::decode(seq).is_some_and(|d| d.valid_for_ordering(inner.now_ms()))
        {
            return Err(Error::InvalidArgument(format!(
                "ExclusiveMinimumSequenceNumber {seq} used in PutRecord on stream {} under account {} is invalid.",
                s.rec.name, inner.cfg.account_id
            )));
        }
        dry_run(input.dry_run)?;
        // Sequence numbers grow with the log offset within a shard and with the
        // shard's creation time across a reshard, so a record is always numbered
        // above any SequenceNumberForOrdering this server handed out before it.
        let mut attempts = 0;
        loop {
            let slot = inner.slot_for(&s, placement)?;
            let route = &s.routes[slot];
            if attempts == 0
                && !inner.admit(
                    &s,
                    route.index,
                    &[(input.data.0.len() + key.len(), placement)],
                )[0]
            {
                return Err(Error::ProvisionedThroughputExceeded(
                    inner.throttled(&s, route.index),
                ));
            }
            let mut batch =
                BatchBuilder::with_capacity(record_encoded_len(key.len(), input.data.0.len()));
            batch.push(key.as_bytes(), &input.data.0);
            let batch = batch
                .finish()
                .ok_or_else(|| Error::Internal("record too large for a log frame".into()))?;
            let batch = inner.maybe_encrypt(&s, batch)?;
            let seq = route_seq(&s, route);
            inner.check_numbering(&seq, &route.part, 1)?;
            match inner.log.append(&route.part, batch).await {
                Ok(appended) => {
                    inner
                        .metrics
                        .incoming(&s.rec.name, 1, (input.data.0.len() + key.len()) as u64);
                    return Ok(PutRecordOutput {
                        shard_id: shard_id(route.index),
                        sequence_number: seq.record(
                            appended.epoch,
                            appended.base_offset,
                            appended.timestamp_ms,
                        ),
                        encryption_type: encryption_type(&s),
                    });
                }
                Err(LogError::Sealed(_)) if attempts < 3 => {
                    // The shard closed under us (a reshard): route again on the new layout.
                    attempts += 1;
                    s = inner.after_reshard(&s.rec.name).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// PutRecords.
    pub async fn put_records(&self, input: PutRecordsInput) -> Result<PutRecordsOutput> {
        let inner = self.inner();
        let mut s =
            inner.writable_stream(input.stream_name.as_deref(), input.stream_arn.as_deref())?;
        let max = s.rec.max_record_size_kib as usize * 1024;
        let mut total = 0usize;
        for (i, r) in input.records.iter().enumerate() {
            let size = r.data.0.len() + r.partition_key.as_deref().map_or(0, str::len);
            if size > max {
                return Err(inner.too_large(&format!("records.{}.member.data", i + 1), max));
            }
            total += size;
        }
        if total > MAX_PUT_RECORDS_BYTES {
            return Err(Error::InvalidArgument(
                "Records size exceeds 10 MB limit".into(),
            ));
        }
        // Place every record first, so a bad hash key fails the request before anything is written.
        let mut placements = Vec::with_capacity(input.records.len());
        for (i, r) in input.records.iter().enumerate() {
            let path = format!("records.{}.member.partitionKey", i + 1);
            placements.push(inner.placement(
                &s,
                r.partition_key.as_deref(),
                r.explicit_hash_key.as_deref(),
                &path,
            )?);
        }
        dry_run(input.dry_run)?;
        let n = input.records.len();
        let mut results: Vec<Option<PutRecordsResultEntry>> = vec![None; n];
        let mut pending: Vec<usize> = (0..n).collect();
        let mut attempts = 0;
        let mut bytes = 0u64;
        while !pending.is_empty() {
            let mut sealed = Vec::new();
            // One batch per shard, all submitted before any is awaited, so the
            // whole request shares one commit window.
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); s.routes.len()];
            for &i in &pending {
                groups[inner.slot_for(&s, placements[i])?].push(i);
            }
            if attempts == 0 {
                for (slot, members) in groups.iter_mut().enumerate() {
                    if members.is_empty() {
                        continue;
                    }
                    let index = s.routes[slot].index;
                    let sizes: Vec<(usize, Placement)> = members
                        .iter()
                        .map(|&i| {
                            let r = &input.records[i];
                            (
                                r.data.0.len() + r.partition_key.as_deref().map_or(0, str::len),
                                placements[i],
                            )
                        })
                        .collect();
                    let admitted = inner.admit(&s, index, &sizes);
                    let mut kept = Vec::with_capacity(members.len());
                    for (&i, ok) in members.iter().zip(admitted) {
                        if ok {
                            kept.push(i);
                        } else {
                            results[i] = Some(PutRecordsResultEntry {
                                error_code: Some("ProvisionedThroughputExceededException".into()),
                                error_message: Some(inner.throttled(&s, index)),
                                ..Default::default()
                            });
                        }
                    }
                    *members = kept;
                }
            }
            let mut appends = Vec::new();
            for (slot, members) in groups.iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                let size: usize = members
                    .iter()
                    .map(|&i| {
                        let r = &input.records[i];
                        record_encoded_len(
                            r.partition_key.as_deref().map_or(0, str::len),
                            r.data.0.len(),
                        )
                    })
                    .sum();
                let mut b = BatchBuilder::with_capacity(size);
                for &i in members {
                    let r = &input.records[i];
                    b.push(
                        r.partition_key.as_deref().unwrap_or("").as_bytes(),
                        &r.data.0,
                    );
                }
                let batch = b
                    .finish()
                    .ok_or_else(|| Error::Internal("batch too large for a log frame".into()))?;
                let batch = inner.maybe_encrypt(&s, batch)?;
                let route = &s.routes[slot];
                if let Err(e) =
                    inner.check_numbering(&route_seq(&s, route), &route.part, members.len() as u64)
                {
                    for &i in members {
                        results[i] = Some(PutRecordsResultEntry {
                            error_code: Some(e.code().into()),
                            error_message: Some(e.to_string()),
                            ..Default::default()
                        });
                    }
                    continue;
                }
                appends.push((slot, inner.log.append(&route.part, batch)));
            }
            for (slot, fut) in appends {
                let route = &s.routes[slot];
                match fut.await {
                    Ok(a) => {
                        let seq = route_seq(&s, route);
                        for (k, &i) in groups[slot].iter().enumerate() {
                            let r = &input.records[i];
                            bytes += (r.data.0.len()
                                + r.partition_key.as_deref().map_or(0, str::len))
                                as u64;
                            results[i] = Some(PutRecordsResultEntry {
                                sequence_number: Some(seq.record(
                                    a.epoch,
                                    a.base_offset + k as u64,
                                    a.timestamp_ms,
                                )),
                                shard_id: Some(shard_id(route.index)),
                                error_code: None,
                                error_message: None,
                            });
                        }
                    }
                    Err(LogError::Sealed(_)) if attempts < 3 => {
                        sealed.extend_from_slice(&groups[slot])
                    }
                    Err(e) => {
                        tracing::error!(error = %e, shard = %shard_id(route.index), "append failed");
                        for &i in &groups[slot] {
                            results[i] = Some(PutRecordsResultEntry {
                                error_code: Some("InternalFailure".into()),
                                error_message: Some("Internal Service Failure".into()),
                                ..Default::default()
                            });
                        }
                    }
                }
            }
            pending = sealed;
            if !pending.is_empty() {
                attempts += 1;
                s = inner.after_reshard(&s.rec.name).await?;
            }
        }
        let records: Vec<PutRecordsResultEntry> =
            results.into_iter().map(Option::unwrap_or_default).collect();
        let failed = records.iter().filter(|r| r.error_code.is_some()).count() as u32;
        inner
            .metrics
            .incoming(&s.rec.name, (n as u32 - failed) as u64, bytes);
        Ok(PutRecordsOutput {
            failed_record_count: failed,
            records,
            encryption_type: encryption_type(&s),
        })
    }

    /// GetShardIterator.
    pub async fn get_shard_iterator(
        &self,
        input: GetShardIteratorInput,
    ) -> Result<GetShardIteratorOutput> {
        let inner = self.inner();
        let name = inner.resolve_name(
            input.stream.stream_name.as_deref(),
            input.stream.stream_arn.as_deref(),
        )?;
        // The shard id is checked before the stream, as AWS does.
        let index = inner.shard_index_in(&name, &input.shard_id)?;
        let s = inner
            .lookup(&name)
            .map_err(|_| inner.shard_missing(&name, &shard_id(index)))?;
        let now = inner.now_ms();
        let shard = s
            .rec
            .shards
            .iter()
            .find(|sh| sh.index == index)
            .filter(|_| s.status(now).is_some_and(|st| st != StreamStatus::Creating))
            .ok_or_else(|| inner.shard_missing(&name, &shard_id(index)))?;
        let part = s
            .parts
            .get(&index)
            .ok_or_else(|| inner.shard_missing(&name, &shard_id(index)))?;
        // Finding the offset may read index files and a record (cold ones from
        // disk), so it runs on a blocking thread.
        let offset = {
            let (svc, s, shard, part) = (self.clone(), s.clone(), shard.clone(), part.clone());
            let (ty, seq, ts) = (
                input.shard_iterator_type,
                input.starting_sequence_number.clone(),
                input.timestamp,
            );
            crate::blocking(move || {
                svc.start_offset(&s, &shard, &part, ty, seq.as_deref(), ts, now)
            })
            .await?
        };
        dry_run(input.dry_run)?;
        let token = IteratorToken {
            stream_name: name,
            stream_uid: s.rec.uid,
            shard_index: index,
            offset,
            issued_ms: now,
        };
        Ok(GetShardIteratorOutput {
            shard_iterator: inner.iterators.encode(&token),
        })
    }

    /// The offset a reader starts at, for an iterator type or starting position.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_offset(
        &self,
        s: &StreamState,
        shard: &ShardRecord,
        part: &Partition,
        ty: ShardIteratorType,
        seq: Option<&str>,
        timestamp: Option<Timestamp>,
        now: i64,
    ) -> Result<u64> {
        use ShardIteratorType::*;
        Ok(match (ty, seq) {
            (AtSequenceNumber | AfterSequenceNumber, None) | (TrimHorizon | Latest, Some(_)) => {
                let which = if seq.is_some() {
                    "and also a StartingSequenceNumber"
                } else {
                    "and no StartingSequenceNumber"
                };
                return Err(Error::InvalidArgument(format!(
                    "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. Request specified {ty} {which}."
                )));
            }
            (TrimHorizon, None) => part.start_offset()?,
            (Latest, None) => part.end_offset(),
            (AtTimestamp, _) => {
                let ts = timestamp.ok_or_else(|| {
                    Error::InvalidArgument(
                        "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. Current request has no timestamp parameter.".into(),
                    )
                })?;
                if ts.millis() > now {
                    return Err(Error::InvalidArgument(format!(
                        "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: {}, currentTimestampInMillis: {now}",
                        ts.millis()
                    )));
                }
                part.offset_for_timestamp(ts.millis())?
            }
            (AtSequenceNumber | AfterSequenceNumber, Some(seq)) => {
                self.offset_for_sequence(s, shard, part, seq, ty == AfterSequenceNumber)?
            }
        })
    }

    /// Records as the API returns them.
    pub(crate) fn records_view(&self, shard: &ShardRecord, read: &ReadOutcome) -> Vec<Record> {
        // Derived from what the log stores with each record, so a record keeps
        // the number it was acknowledged with.
        let seq = ShardSeq::of(shard);
        read.records
            .iter()
            .map(|r| Record {
                sequence_number: seq.record(r.epoch, r.offset, r.timestamp_ms),
                approximate_arrival_timestamp: Timestamp(r.timestamp_ms),
                data: Blob(Bytes::clone(&r.value)),
                partition_key: (!r.key.is_empty())
                    .then(|| String::from_utf8_lossy(&r.key).into_owned()),
                encryption_type: r.encrypted.then(|| "KMS".to_string()),
            })
            .collect()
    }

    /// The children of a closed shard, as GetRecords and SubscribeToShard list them.
    pub(crate) fn child_shards(&self, s: &StreamState, shard: &ShardRecord) -> Vec<ChildShard> {
        s.rec
            .shards
            .iter()
            .filter(|c| c.parent == Some(shard.index) || c.adjacent_parent == Some(shard.index))
            .map(|c| ChildShard {
                shard_id: shard_id(c.index),
                parent_shards: c
                    .parent
                    .iter()
                    .chain(c.adjacent_parent.iter())
                    .map(|p| shard_id(*p))
                    .collect(),
                hash_key_range: HashKeyRange {
                    starting_hash_key: c.starting_hash_key.to_string(),
                    ending_hash_key: c.ending_hash_key.to_string(),
                },
            })
            .collect()
    }

    /// How far behind the tip a reader at the end of `read` is.
    fn millis_behind(read: &ReadOutcome, now: i64) -> i64 {
        if read.next_offset >= read.end_offset {
            0
        } else {
            read.records
                .last()
                .map_or(0, |r| (now - r.timestamp_ms).max(0))
        }
    }

    /// A SubscribeToShard event for what a read returned; `offset` is where the read started.
    pub(crate) fn event_from(
        &self,
        s: &StreamState,
        shard: &ShardRecord,
        read: &ReadOutcome,
        offset: u64,
    ) -> SubscribeToShardEvent {
        let now = self.inner().now_ms();
        let records = self.records_view(shard, read);
        let closed_and_done = shard.end.is_some() && read.next_offset >= read.end_offset;
        // Continue after the last record delivered (or before the next one).
        let continuation = match records.last() {
            Some(r) => r.sequence_number.clone(),
            None if offset > 0 => ShardSeq::of(shard).record(self.inner().epoch, offset - 1, now),
            None => ShardSeq::of(shard).start(),
        };
        let bytes = read
            .records
            .iter()
            .map(|r| (r.key.len() + r.value.len()) as u64)
            .sum();
        self.inner()
            .metrics
            .outgoing(&s.rec.name, records.len() as u64, bytes);
        SubscribeToShardEvent {
            millis_behind_latest: Self::millis_behind(read, now),
            records,
            continuation_sequence_number: (!closed_and_done).then_some(continuation),
            child_shards: closed_and_done.then(|| self.child_shards(s, shard)),
        }
    }

    fn offset_for_sequence(
        &self,
        s: &StreamState,
        shard: &ShardRecord,
        part: &Partition,
        seq: &str,
        after: bool,
    ) -> Result<u64> {
        let inner = self.inner();
        let invalid = |why: &str| {
            Error::InvalidArgument(format!(
                "StartingSequenceNumber {seq} used in GetShardIterator on shard {} in stream {} under account {} is invalid{why}.",
                shard_id(shard.index),
                s.rec.name,
                inner.cfg.account_id
            ))
        };
        // AWS's checks, in its order: the number's form, the shard it encodes
        // (read as a signed 32-bit index), then its layout and creation time.
        let parsed = seq::decode(seq).ok_or_else(|| invalid(""))?;
        if parsed.shard_index() != i64::from(shard.index) {
            return Err(Error::InvalidArgument(format!(
                "Invalid StartingSequenceNumber. It encodes shardId-{:012}, while it was used in a call to a shard with {}",
                parsed.shard_index(),
                shard_id(shard.index)
            )));
        }
        let (epoch, o) = parsed
            .position_in(&ShardSeq::of(shard))
            .ok_or_else(|| invalid(" because it did not come from this stream"))?;
        // The record now at offset `o` decides: it is the requested record if its
        // epoch matches, or a later one if the original was lost before a sync.
        let at = part.read(o, 1, 0)?;
        let epoch_at = at
            .records
            .first()
            .filter(|r| r.offset == o)
            .map(|r| r.epoch);
        Ok(match epoch_at {
            Some(e) if e > epoch || (e == epoch && !after) => o,
            Some(_) => o + 1,
            None => o.max(part.start_offset()?),
        })
    }

    /// GetRecords.
    pub async fn get_records(&self, input: GetRecordsInput) -> Result<GetRecordsOutput> {
        let inner = self.inner();
        let now = inner.now_ms();
        let token = inner.iterators.decode(&input.shard_iterator, now).map_err(|e| match e {
            TokenError::Invalid => Error::InvalidArgument("Invalid ShardIterator.".into()),
            TokenError::Expired { issued_ms } => Error::ExpiredIterator(format!(
                "Iterator expired. The iterator was created at time {} while right now it is {} which is further in the future than the tolerated delay of {} milliseconds.",
                java_date(issued_ms),
                java_date(now),
                crate::iterator::ITERATOR_TTL_MS
            )),
        })?;
        if let Some(arn) = &input.stream_arn
            && inner.name_from_stream_arn(arn)? != token.stream_name
        {
            return Err(Error::InvalidArgument(format!(
                "StreamARN {arn} does not match the stream of the ShardIterator."
            )));
        }
        let sid = shard_id(token.shard_index);
        let missing = || inner.shard_missing(&token.stream_name, &sid);
        let s = inner.lookup(&token.stream_name).map_err(|_| missing())?;
        if s.rec.uid != token.stream_uid {
            return Err(missing());
        }
        let shard = s
            .rec
            .shards
            .iter()
            .find(|sh| sh.index == token.shard_index)
            .ok_or_else(missing)?;
        let part = s.parts.get(&token.shard_index).ok_or_else(missing)?;
        dry_run(input.dry_run)?;
        let limit = input.limit.map_or(MAX_GET_RECORDS, |l| {
            l.clamp(1, MAX_GET_RECORDS as i64) as usize
        });
        let quota = s.quotas.get(&token.shard_index);
        if let Some(q) = quota
            && !q.admit_read(inner.cfg.quotas, now)
        {
            return Err(Error::ProvisionedThroughputExceeded(format!(
                "Rate exceeded for Shard - {}/{}/{}",
                inner.cfg.account_id, s.rec.name, sid
            )));
        }
        // A read may pread up to 10 MiB of a cold segment, check CRCs, decrypt
        // and rebuild an index: on a blocking thread, so that a consumer
        // catching up never stalls the async workers that serve PutRecords.
        let read = {
            let (part, from) = (part.clone(), token.offset);
            crate::blocking(move || Ok(part.read(from, limit, MAX_GET_RECORDS_BYTES)?)).await?
        };
        let records = self.records_view(shard, &read);
        let bytes: u64 = read
            .records
            .iter()
            .map(|r| (r.key.len() + r.value.len()) as u64)
            .sum();
        inner
            .metrics
            .outgoing(&s.rec.name, records.len() as u64, bytes);
        if let Some(q) = quota {
            q.charge_read(inner.cfg.quotas, bytes as usize);
        }
        let millis_behind = Self::millis_behind(&read, now);
        let closed_and_done = shard.end.is_some() && read.next_offset >= read.end_offset;
        let (next, children) = if closed_and_done {
            (None, Some(self.child_shards(&s, shard)))
        } else {
            let next = IteratorToken {
                offset: read.next_offset,
                issued_ms: now,
                ..token
            };
            (Some(inner.iterators.encode(&next)), None)
        };
        Ok(GetRecordsOutput {
            records,
            next_shard_iterator: next,
            millis_behind_latest: millis_behind,
            child_shards: children,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_dates() {
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(1_421_889_722_000), "Thu Jan 22 01:22:02 UTC 2015");
        assert_eq!(java_date(1_709_251_199_000), "Thu Feb 29 23:59:59 UTC 2024");
    }
}
