//! KinesisStreamAsSource: a delivery stream that reads a Data Streams
//! stream instead of taking PutRecord calls.
//!
//! Firehose knows nothing of Kinesis: it reads through the
//! [`KinesisSource`] trait, which the binary implements over the Data
//! Streams service in the same process (as a consumer would: ListShards,
//! GetShardIterator, GetRecords, KPL aggregates de-aggregated).
//!
//! One pump task per such stream copies what it reads into the delivery
//! stream's own log partition, then records how far it read each shard
//! (the last sequence number, or that the shard is closed and read to its
//! end) in the catalog. From the partition on, delivery is the DirectPut
//! path: same buffering, processing, destinations, retries and
//! checkpoints. A crash between the append and the shard checkpoint
//! copies those records again: at least once, never lost. Resharding:
//! a shard is read only once its parents are read to their ends (or have
//! expired), so a partition key's records keep their order, as the KCL
//! keeps it.
//!
//! Each shard is polled once a second (AWS's Firehose reads each shard
//! once per second, one of the five reads a shard allows), at once again
//! while a read comes back full. The pump stops copying while the
//! partition holds more undelivered records than [`MAX_UNDELIVERED`]:
//! a destination that is down leaves the rest in the source stream.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ripstream_api::Cause;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::sink::BoxFuture;
use crate::{Inner, Stream};

/// Where each stream-sourced delivery stream stands in each source shard,
/// by stream uid.
pub const SOURCE_CHECKPOINTS_SPACE: &str = "firehose/source-checkpoints";

/// Most records one read asks for (GetRecords' own limit).
pub const READ_LIMIT: usize = 10_000;

/// Records copied but not yet delivered past which the pump waits.
pub const MAX_UNDELIVERED: u64 = 1_000_000;

/// Where a delivery stream starts reading a shard it has never read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceStart {
    /// The oldest record the stream still holds, so records written before
    /// the delivery stream was created are delivered too.
    #[default]
    TrimHorizon,
    /// Records that arrived from the delivery stream's creation on (its
    /// `DeliveryStartTimestamp`), as AWS's Firehose does.
    Creation,
}

impl std::str::FromStr for SourceStart {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<SourceStart, String> {
        match s {
            "trim-horizon" => Ok(SourceStart::TrimHorizon),
            "creation" => Ok(SourceStart::Creation),
            other => Err(format!(
                "unknown start position '{other}': use trim-horizon or creation"
            )),
        }
    }
}

/// A shard of the source stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceShard {
    pub id: String,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
}

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    TrimHorizon,
    /// The first record that arrived at or after this time (ms).
    AtTimestamp(i64),
    /// Right after this sequence number.
    After(String),
}

/// One user record read from the source (a KPL aggregate's sub-records
/// come one by one, sharing the aggregate's sequence number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub sequence_number: String,
    /// The position inside a KPL aggregate; 0 for a plain record.
    pub sub_sequence_number: u64,
    pub arrival_ms: i64,
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// What one read of a shard returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRead {
    pub records: Vec<SourceRecord>,
    /// The shard is closed and every record of it was read.
    pub ended: bool,
}

/// Why the source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The stream (or shard) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The shard's read rate is spent; read again later.
    #[error("{0}")]
    Throttled(String),
    /// Any other failure of the read.
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        source: Cause,
    },
}

/// The Data Streams streams a delivery stream can read.
pub trait KinesisSource: Send + Sync + std::fmt::Debug {
    /// Whether the stream `stream_arn` exists (checked at creation).
    fn check<'a>(
        &'a self,
        stream_arn: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), SourceError>>;
    /// Every shard of the stream, closed ones still held included.
    fn shards<'a>(
        &'a self,
        stream_arn: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Vec<SourceShard>, SourceError>>;
    /// Up to `limit` records of a shard from `from`.
    fn read<'a>(
        &'a self,
        stream_arn: &'a str,
        shard_id: &'a str,
        from: &'a Position,
        limit: usize,
    ) -> BoxFuture<'a, std::result::Result<SourceRead, SourceError>>;
}

/// The source of a KinesisStreamAsSource delivery stream, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KinesisSourceConfig {
    pub stream_arn: String,
    pub role_arn: String,
}

/// How far a delivery stream read one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ShardProgress {
    /// Read up to and including this sequence number.
    After(String),
    /// Closed and read to its end.
    Ended,
}

/// How far a delivery stream read its source, per shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    shards: BTreeMap<String, ShardProgress>,
}

impl Progress {
    fn ended(&self, shard: &str) -> bool {
        matches!(self.shards.get(shard), Some(ShardProgress::Ended))
    }

    /// Whether a shard may be read: its parents are read to their ends, or
    /// are gone from the stream (expired: nothing of theirs is left).
    fn readable(&self, shard: &SourceShard, listed: &HashSet<&str>) -> bool {
        !self.ended(&shard.id)
            && [&shard.parent, &shard.adjacent_parent]
                .into_iter()
                .flatten()
                .all(|p| !listed.contains(p.as_str()) || self.ended(p))
    }
}

/// The metadata a copied record keeps (the log record's key), in the
/// shape of the `kinesisRecordMetadata` a transformation function gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordMetadata {
    pub shard_id: String,
    pub partition_key: String,
    /// Milliseconds since the epoch, as AWS sends it.
    pub approximate_arrival_timestamp: i64,
    pub sequence_number: String,
    pub subsequence_number: u64,
}

impl RecordMetadata {
    /// The metadata a copied record was stored with, if it was.
    pub fn of_key(key: &[u8]) -> Option<RecordMetadata> {
        if key.is_empty() {
            return None;
        }
        serde_json::from_slice(key).ok()
    }
}

fn load_progress(inner: &Inner, uid: u64) -> Result<Progress> {
    let key = uid.to_string();
    Ok(inner
        .catalog
        .documents(SOURCE_CHECKPOINTS_SPACE)?
        .into_iter()
        .find(|(k, _)| k == key.as_bytes())
        .and_then(|(_, v)| serde_json::from_slice(&v).ok())
        .unwrap_or_default())
}

fn save_progress(inner: &Inner, uid: u64, p: &Progress) -> Result<()> {
    let raw = serde_json::to_vec(p).map_err(Error::internal)?;
    inner.catalog.write_documents(
        SOURCE_CHECKPOINTS_SPACE,
        &[(uid.to_string().as_bytes(), Some(&raw))],
    )?;
    Ok(())
}

/// At most this many bytes (keys and values) go into one log append, so a
/// read that de-aggregation made large never passes the log's frame limit.
const COPY_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Copies a shard read into the stream's partition (durable when it
/// returns). Keys are built one chunk at a time, so memory follows the
/// chunk, not the whole read.
async fn copy(inner: &Inner, s: &Stream, shard: &str, records: &[SourceRecord]) -> Result<()> {
    let mut rest = records;
    while !rest.is_empty() {
        let mut items: Vec<(Vec<u8>, &[u8])> = Vec::new();
        let mut bytes = 0;
        let mut taken = 0;
        for r in rest {
            if taken > 0 && bytes + r.data.len() + r.partition_key.len() > COPY_CHUNK_BYTES {
                break;
            }
            let meta = RecordMetadata {
                shard_id: shard.to_string(),
                partition_key: r.partition_key.clone(),
                approximate_arrival_timestamp: r.arrival_ms,
                sequence_number: r.sequence_number.clone(),
                subsequence_number: r.sub_sequence_number,
            };
            let key = serde_json::to_vec(&meta).unwrap_or_default();
            bytes += key.len() + r.data.len();
            items.push((key, &r.data[..]));
            taken += 1;
        }
        inner
            .append(s, items.iter().map(|(k, v)| (&k[..], *v)))
            .await?;
        rest = &rest[taken..];
    }
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    inner
        .metrics
        .read_from_kinesis(&s.rec.name, records.len() as u64, bytes as u64);
    Ok(())
}

/// One stream-sourced delivery stream's pump, until the stream goes.
pub(crate) async fn pump(inner: Arc<Inner>, name: String, uid: u64) {
    let Some(source) = inner.kinesis.clone() else {
        warn!(stream = %name, "no Kinesis source is wired into this server; the delivery stream reads nothing");
        std::future::pending::<()>().await;
        return;
    };
    let loaded = {
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || load_progress(&inner, uid)).await
    };
    let mut progress = match loaded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            warn!(stream = %name, error = %ripstream_api::Chain(&e), "cannot read the source checkpoints; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        Err(e) => {
            warn!(stream = %name, error = %e, "source checkpoint task failed; retrying");
            return;
        }
    };
    let mut backoff = inner.cfg.retry_initial;
    loop {
        let Some(s) = crate::engine::current(&inner, &name, uid) else {
            return;
        };
        let Some(cfg) = s.rec.kinesis_source.clone() else {
            return;
        };
        let delivered = {
            let inner = inner.clone();
            tokio::task::spawn_blocking(move || inner.checkpoint(uid)).await
        };
        if let Ok(Ok(d)) = delivered
            && s.part.end_offset().saturating_sub(d) >= MAX_UNDELIVERED
        {
            debug!(stream = %name, "delivery is behind; the source waits");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let shards = match source.shards(&cfg.stream_arn).await {
            Ok(v) => v,
            Err(e) => {
                warn!(stream = %name, source = %cfg.stream_arn, error = %ripstream_api::Chain(&e), "cannot list the source stream's shards; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(inner.cfg.retry_max.max(Duration::from_secs(1)));
                continue;
            }
        };
        backoff = inner.cfg.retry_initial;
        let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
        let start = match inner.cfg.kinesis_start {
            SourceStart::TrimHorizon => Position::TrimHorizon,
            SourceStart::Creation => Position::AtTimestamp(s.rec.created_ms),
        };
        let mut full = false;
        let mut changed = false;
        for shard in &shards {
            if !progress.readable(shard, &listed) {
                continue;
            }
            let from = match progress.shards.get(&shard.id) {
                Some(ShardProgress::After(seq)) => Position::After(seq.clone()),
                _ => start.clone(),
            };
            let read = match source
                .read(&cfg.stream_arn, &shard.id, &from, READ_LIMIT)
                .await
            {
                Ok(r) => r,
                Err(SourceError::Throttled(_)) => continue,
                Err(e) => {
                    warn!(stream = %name, source = %cfg.stream_arn, shard = %shard.id, error = %ripstream_api::Chain(&e), "cannot read the source shard; retrying");
                    continue;
                }
            };
            if let Some(last) = read.records.last() {
                if let Err(e) = copy(&inner, &s, &shard.id, &read.records).await {
                    warn!(stream = %name, shard = %shard.id, error = %ripstream_api::Chain(&e), "cannot store the records read from the source; retrying");
                    break;
                }
                full |= read.records.len() >= READ_LIMIT;
                progress.shards.insert(
                    shard.id.clone(),
                    ShardProgress::After(last.sequence_number.clone()),
                );
                changed = true;
            }
            if read.ended {
                progress
                    .shards
                    .insert(shard.id.clone(), ShardProgress::Ended);
                changed = true;
            }
        }
        // Shards gone from the stream (expired) need no entry any more.
        let before = progress.shards.len();
        progress.shards.retain(|id, _| listed.contains(id.as_str()));
        changed |= progress.shards.len() != before;
        if changed {
            let (i, p) = (inner.clone(), progress.clone());
            match tokio::task::spawn_blocking(move || save_progress(&i, uid, &p)).await {
                Ok(Ok(())) => {}
                // Not durable: a restart reads those records again (at
                // least once).
                Ok(Err(e)) => {
                    warn!(stream = %name, error = %ripstream_api::Chain(&e), "cannot store the source checkpoints")
                }
                Err(e) => warn!(stream = %name, error = %e, "source checkpoint task failed"),
            }
        }
        if !full {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> SourceShard {
        SourceShard {
            id: id.into(),
            parent: parent.map(String::from),
            adjacent_parent: adjacent.map(String::from),
        }
    }

    #[test]
    fn children_wait_for_their_parents() {
        let mut p = Progress::default();
        let listed: HashSet<&str> = ["a", "b", "c", "m"].into_iter().collect();
        let (a, b) = (shard("a", None, None), shard("b", None, None));
        let child = shard("c", Some("a"), None);
        let merged = shard("m", Some("a"), Some("b"));
        assert!(p.readable(&a, &listed) && p.readable(&b, &listed));
        assert!(!p.readable(&child, &listed));
        p.shards
            .insert("a".into(), ShardProgress::After("1".into()));
        assert!(!p.readable(&child, &listed));
        p.shards.insert("a".into(), ShardProgress::Ended);
        assert!(p.readable(&child, &listed));
        assert!(!p.readable(&a, &listed), "an ended shard is not read again");
        assert!(!p.readable(&merged, &listed), "both parents must end");
        // A parent gone from the stream (expired) holds nothing back.
        let without_b: HashSet<&str> = ["a", "m"].into_iter().collect();
        assert!(p.readable(&merged, &without_b));
    }

    #[test]
    fn progress_and_metadata_round_trip() {
        let mut p = Progress::default();
        p.shards.insert(
            "shardId-000000000000".into(),
            ShardProgress::After("49".into()),
        );
        p.shards
            .insert("shardId-000000000001".into(), ShardProgress::Ended);
        let raw = serde_json::to_vec(&p).unwrap();
        assert_eq!(serde_json::from_slice::<Progress>(&raw).unwrap(), p);
        let m = RecordMetadata {
            shard_id: "shardId-000000000000".into(),
            partition_key: "pk".into(),
            approximate_arrival_timestamp: 1_700_000_000_123,
            sequence_number: "4959".into(),
            subsequence_number: 2,
        };
        let key = serde_json::to_vec(&m).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&key).unwrap();
        assert_eq!(v["shardId"], "shardId-000000000000");
        assert_eq!(v["approximateArrivalTimestamp"], 1_700_000_000_123_i64);
        assert_eq!(RecordMetadata::of_key(&key), Some(m));
        assert_eq!(RecordMetadata::of_key(b""), None);
        assert!("creation".parse::<SourceStart>().is_ok());
        assert!("latest".parse::<SourceStart>().is_err());
    }
}
