//! The control plane: stream lifecycle, description, listing and settings.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use ripstream_meta::{ShardRecord, StreamMode, StreamRecord, StreamStatus};
use serde::{Deserialize, Serialize};

use crate::hash::even_ranges;
use crate::seq::ShardSeq;
use crate::tags::validate_new_tags;
use crate::types::*;
use crate::{Error, Inner, Result, Service, StreamState, retention_ms, shard_id};

/// Shards an on-demand stream starts with.
pub(crate) const ON_DEMAND_INITIAL_SHARDS: u32 = 4;
const MIN_RETENTION_HOURS: i64 = 24;
const MAX_RETENTION_HOURS: i64 = 8760;
/// Shard-level metrics in the order of the service model.
pub(crate) const ALL_METRICS: [&str; 7] = [
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
];
/// How long a ListShards NextToken stays valid.
const NEXT_TOKEN_TTL_MS: i64 = 300_000;

fn mode_details(mode: StreamMode) -> StreamModeDetails {
    StreamModeDetails { stream_mode: mode }
}

fn enhanced_monitoring(rec: &StreamRecord) -> Vec<EnhancedMetrics> {
    vec![EnhancedMetrics {
        shard_level_metrics: ordered_metrics(rec.shard_level_metrics.iter().map(String::as_str)),
    }]
}

fn ordered_metrics<'a>(set: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: Vec<&str> = set.collect();
    ALL_METRICS
        .iter()
        .filter(|m| set.contains(m))
        .map(|m| m.to_string())
        .collect()
}

fn encryption_type(rec: &StreamRecord) -> String {
    if rec.encryption.is_some() {
        "KMS"
    } else {
        "NONE"
    }
    .to_string()
}

/// Whether a shard is still listed: open, or closed within the retention period.
fn shard_listed(rec: &StreamRecord, shard: &ShardRecord, now_ms: i64) -> bool {
    match &shard.end {
        None => true,
        Some(end) => end.closed_ms >= now_ms - retention_ms(rec.retention_hours),
    }
}

/// The shards readers of the shard list are shown: the record's, except
/// while a reshard's UPDATING state lasts, when AWS still shows the layout
/// from before it (the shards it created hidden, the ones it closed open).
fn published_shards(rec: &StreamRecord, status: StreamStatus) -> Cow<'_, [ShardRecord]> {
    let Some(p) = rec
        .pending_reshard
        .filter(|p| status == StreamStatus::Updating && p.until_ms == rec.status_until_ms)
    else {
        return Cow::Borrowed(&rec.shards);
    };
    let closed_by_it: HashSet<u32> = rec
        .shards
        .iter()
        .filter(|sh| sh.index >= p.first_new_shard)
        .flat_map(|sh| sh.parent.into_iter().chain(sh.adjacent_parent))
        .filter(|i| *i < p.first_new_shard)
        .collect();
    Cow::Owned(
        rec.shards
            .iter()
            .filter(|sh| sh.index < p.first_new_shard)
            .map(|sh| {
                let mut sh = sh.clone();
                if closed_by_it.contains(&sh.index) {
                    sh.end = None;
                }
                sh
            })
            .collect(),
    )
}

pub(crate) fn shard_view(shard: &ShardRecord) -> Shard {
    Shard {
        shard_id: shard_id(shard.index),
        parent_shard_id: shard.parent.map(shard_id),
        adjacent_parent_shard_id: shard.adjacent_parent.map(shard_id),
        hash_key_range: HashKeyRange {
            starting_hash_key: shard.starting_hash_key.to_string(),
            ending_hash_key: shard.ending_hash_key.to_string(),
        },
        sequence_number_range: SequenceNumberRange {
            starting_sequence_number: ShardSeq::of(shard).start(),
            ending_sequence_number: shard.end.as_ref().map(|e| e.ending_sequence_number.clone()),
        },
    }
}

/// Parses the shard number out of a shard id as Kinesis does: the digits after
/// the first dash (or the whole id), so `shardId-000000000001`, `shardId-1` and `1`
/// name the same shard.
pub(crate) fn parse_shard_index(id: &str) -> Option<u32> {
    let digits = id.split_once('-').map_or(id, |(_, d)| d);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u32>().ok().filter(|i| *i <= i32::MAX as u32)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ListShardsToken {
    /// Stream name.
    pub(crate) s: String,
    /// Stream uid.
    u: u64,
    /// Last shard index returned.
    a: u32,
    /// Filter type, shard id and timestamp, if any.
    #[serde(default)]
    f: Option<(ShardFilterType, Option<String>, Option<i64>)>,
    /// Issue time.
    t: i64,
}

/// Domains of the signed pagination tokens.
const LIST_SHARDS_TOKEN: &str = "ListShards";
const LIST_STREAMS_TOKEN: &str = "ListStreams";

#[derive(Serialize, Deserialize)]
struct ListStreamsToken {
    /// Last stream name returned.
    a: String,
}

impl Inner {
    /// A ListShards NextToken this server signed: the stream it pages through.
    pub(crate) fn list_shards_token(&self, token: &str) -> Result<ListShardsToken> {
        self.iterators
            .open(LIST_SHARDS_TOKEN, token)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Error::InvalidArgument("Invalid NextToken.".into()))
    }

    /// The stream name a request refers to, from its name, its ARN, or both.
    pub fn resolve_name(&self, name: Option<&str>, arn: Option<&str>) -> Result<String> {
        let from_arn = match arn {
            Some(arn) => Some(self.name_from_stream_arn(arn)?),
            None => None,
        };
        match (name, from_arn) {
            (None, None) => Err(Error::InvalidArgument(
                "Either StreamName or StreamARN must be provided.".into(),
            )),
            (Some(n), None) => Ok(n.to_string()),
            (None, Some(a)) => Ok(a),
            (Some(n), Some(a)) if n == a => Ok(a),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(
                "StreamARN and StreamName must refer to the same stream.".into(),
            )),
        }
    }

    /// The stream name inside a stream ARN of this server's partition, region
    /// and account (parsed strictly: see [`crate::arn`]).
    pub fn name_from_stream_arn(&self, arn: &str) -> Result<String> {
        match self.arn_scope().parse(arn, "StreamARN")? {
            crate::arn::KinesisArn::Stream { stream } => Ok(stream),
            crate::arn::KinesisArn::Consumer { .. } => {
                Err(Error::InvalidArgument(format!("Invalid StreamARN {arn}.")))
            }
        }
    }

    /// The shard number a request's shard id names. AWS checks the id before
    /// it looks the stream up: an id that names no shard number is not found
    /// in any stream, known or not.
    pub(crate) fn shard_index_in(&self, stream: &str, id: &str) -> Result<u32> {
        parse_shard_index(id).ok_or_else(|| {
            Error::ResourceNotFound(format!(
                "Could not find shard {id} in stream {stream} under account {}.",
                self.cfg.account_id
            ))
        })
    }

    /// The stream, unless it does not exist or its deletion has completed.
    pub fn lookup(&self, name: &str) -> Result<Arc<StreamState>> {
        let now = self.now_ms();
        match self.streams.read().get(name) {
            Some(s) if s.status(now).is_some() => Ok(s.clone()),
            _ => Err(self.not_found(name)),
        }
    }

    pub fn lookup_ref(&self, name: Option<&str>, arn: Option<&str>) -> Result<Arc<StreamState>> {
        let name = self.resolve_name(name, arn)?;
        self.lookup(&name)
    }

    pub fn not_active(&self, s: &StreamState, status: StreamStatus) -> Error {
        Error::ResourceInUse(format!(
            "Stream {} under account {} not ACTIVE, instead in state {}",
            s.rec.name,
            self.cfg.account_id,
            status.as_str()
        ))
    }

    /// Applies `change` to an ACTIVE (or, with `allow_updating`, UPDATING)
    /// stream's record, commits it to the catalog and publishes the new state.
    pub async fn mutate(
        &self,
        stream: &StreamRef,
        allow_updating: bool,
        change: impl FnOnce(&mut StreamRecord, &StreamState) -> Result<()>,
    ) -> Result<Arc<StreamState>> {
        let name =
            self.resolve_name(stream.stream_name.as_deref(), stream.stream_arn.as_deref())?;
        let _guard = self.control.lock().await;
        let cur = self.lookup(&name)?;
        let now = self.now_ms();
        let status = cur.status(now).ok_or_else(|| self.not_found(&name))?;
        if !(status == StreamStatus::Active || (allow_updating && status == StreamStatus::Updating))
        {
            return Err(self.not_active(&cur, status));
        }
        let mut rec = cur.rec.clone();
        rec.status = status;
        change(&mut rec, &cur)?;
        if rec == cur.rec {
            return Ok(cur);
        }
        self.commit_stream(&rec).await?;
        let state = self.build_state(rec, Some(&cur)).await?;
        self.streams.write().insert(name, state.clone());
        Ok(state)
    }

    fn open_shard_total(&self) -> u32 {
        self.streams
            .read()
            .values()
            .map(|s| s.routes.len() as u32)
            .sum()
    }

    fn on_demand_total(&self) -> u32 {
        let now = self.now_ms();
        self.streams
            .read()
            .values()
            .filter(|s| s.rec.mode == StreamMode::OnDemand && s.status(now).is_some())
            .count() as u32
    }

    pub(crate) fn shard_limit_error(&self, additional: u32) -> Error {
        Error::LimitExceeded(format!(
            "This request would exceed the shard limit for the account {} in {}. Current shard count for the account: {}. Limit: {}. Number of additional shards that would have resulted from this request: {}. Refer to the AWS Service Limits page (http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) for current limits and how to request higher limits.",
            self.cfg.account_id,
            self.cfg.region,
            self.open_shard_total(),
            self.cfg.shard_limit,
            additional
        ))
    }

    fn check_on_demand_limit(&self) -> Result<()> {
        if self.on_demand_total() >= self.cfg.on_demand_stream_limit {
            return Err(Error::LimitExceeded(format!(
                "This request would exceed the limit of {} on-demand streams for the account {} in {}.",
                self.cfg.on_demand_stream_limit, self.cfg.account_id, self.cfg.region
            )));
        }
        Ok(())
    }
}

impl Service {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// CreateStream.
    pub async fn create_stream(&self, input: CreateStreamInput) -> Result<Empty> {
        let inner = self.inner();
        let mode = input.stream_mode_details.as_ref().map(|d| d.stream_mode);
        let (mode, shard_count) = match (mode, input.shard_count) {
            (Some(StreamMode::OnDemand), Some(_)) => {
                return Err(Error::InvalidArgument(
                    "ShardCount is not expected when StreamMode=ON_DEMAND".into(),
                ));
            }
            (Some(StreamMode::OnDemand), None) | (None, None) => {
                (StreamMode::OnDemand, ON_DEMAND_INITIAL_SHARDS)
            }
            (Some(StreamMode::Provisioned) | None, Some(n)) => {
                let n = u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    Error::Validation(format!(
                        "1 validation error detected: Value '{n}' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"
                    ))
                })?;
                (StreamMode::Provisioned, n)
            }
            (Some(StreamMode::Provisioned), None) => {
                return Err(Error::InvalidArgument(
                    "ShardCount is required when StreamMode=PROVISIONED".into(),
                ));
            }
        };
        if input.warm_throughput_mibps.is_some() && mode != StreamMode::OnDemand {
            return Err(Error::InvalidArgument(
                "WarmThroughputMiBps is only supported for streams in ON_DEMAND mode.".into(),
            ));
        }
        if let Some(w) = input.warm_throughput_mibps {
            crate::capacity::check_warm(inner, w)?;
        }
        let distribution = input.record_distribution_strategy.unwrap_or_default();
        if distribution == ripstream_meta::RecordDistribution::Auto && mode != StreamMode::OnDemand
        {
            return Err(Error::InvalidArgument(
                "The record distribution strategy AUTO is only supported for streams in ON_DEMAND mode.".into(),
            ));
        }
        // An on-demand stream starts with enough shards for its warm throughput.
        let shard_count = if mode == StreamMode::OnDemand {
            crate::scaler::shard_floor(input.warm_throughput_mibps.map(|w| w as u32))
        } else {
            shard_count
        };
        let tags = input.tags.unwrap_or_default();
        validate_new_tags(inner, &input.stream_name, &Default::default(), &tags)?;

        let _guard = inner.control.lock().await;
        // A refused stream keeps its name: a new record would replace its
        // catalog entry and orphan the data that is left.
        if let Some(e) = inner.damaged_error(&input.stream_name) {
            return Err(e);
        }
        if inner.streams.read().contains_key(&input.stream_name) {
            return Err(Error::ResourceInUse(format!(
                "Stream {} under account {} already exists.",
                input.stream_name, inner.cfg.account_id
            )));
        }
        if inner.open_shard_total().saturating_add(shard_count) > inner.cfg.shard_limit {
            return Err(inner.shard_limit_error(shard_count));
        }
        if mode == StreamMode::OnDemand {
            inner.check_on_demand_limit()?;
        }
        let now = inner.now_ms();
        let catalog = inner.catalog.clone();
        let uid = crate::blocking(move || Ok(catalog.next_id("stream")?)).await?;
        let mut rec = StreamRecord::new(&input.stream_name, uid, now);
        rec.status = StreamStatus::Creating;
        rec.status_until_ms = now + inner.cfg.create_delay.as_millis() as i64;
        rec.mode = mode;
        rec.tags = tags;
        if let Some(kib) = input.max_record_size_kib {
            rec.max_record_size_kib = kib.clamp(1024, 10240) as u32;
        }
        rec.record_distribution = distribution;
        rec.warm_throughput_mibps = input
            .warm_throughput_mibps
            .map(|w| w.clamp(0, i64::from(u32::MAX)) as u32);
        rec.shards = even_ranges(shard_count)
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| ShardRecord {
                index: i as u32,
                starting_hash_key: start,
                ending_hash_key: end,
                created_ms: now,
                parent: None,
                adjacent_parent: None,
                end: None,
                seq_created_s: Some(now.max(0) as u64 / 1000),
            })
            .collect();
        // Partitions first, catalog second: a crash in between leaves orphan
        // partitions that the next start removes, never a stream without data.
        let state = inner.build_state(rec, None).await?;
        inner.commit_stream(&state.rec).await?;
        inner
            .streams
            .write()
            .insert(input.stream_name.clone(), state);
        tracing::info!(stream = %input.stream_name, shards = shard_count, mode = mode.as_str(), "stream created");
        Ok(Empty {})
    }

    /// DeleteStream.
    pub async fn delete_stream(&self, input: DeleteStreamInput) -> Result<Empty> {
        let inner = self.inner();
        let name = inner.resolve_name(
            input.stream.stream_name.as_deref(),
            input.stream.stream_arn.as_deref(),
        )?;
        let _guard = inner.control.lock().await;
        let cur = inner.lookup(&name)?;
        let now = inner.now_ms();
        let status = cur.status(now).ok_or_else(|| inner.not_found(&name))?;
        // A stream still CREATING may be deleted too, as on AWS.
        if status == StreamStatus::Deleting {
            return Err(inner.not_active(&cur, status));
        }
        if input.enforce_consumer_deletion != Some(true)
            && crate::consumers::live_consumers(&cur.rec, now)
                .next()
                .is_some()
        {
            return Err(Error::ResourceInUse(format!(
                "DeleteStream can\u{2019}t delete {acct}:{name} because there are consumers associated with this data stream. To delete {name} anyway, set the EnforceConsumerDeletion parameter to true to force the deletion of all the consumers that are associated with it.",
                acct = inner.cfg.account_id
            )));
        }
        let delay = inner.cfg.delete_delay.as_millis() as i64;
        if delay == 0 {
            inner.purge_stream(&cur).await?;
        } else {
            let mut rec = cur.rec.clone();
            rec.deleted_while_creating = status == StreamStatus::Creating;
            rec.status = StreamStatus::Deleting;
            rec.status_until_ms = now + delay;
            inner.commit_stream(&rec).await?;
            let state = Arc::new(StreamState {
                policies: crate::access::ParsedPolicies::of(&rec),
                rec,
                routes: cur.routes.clone(),
                parts: cur.parts.clone(),
                spread: Default::default(),
                quotas: cur.quotas.clone(),
            });
            inner.streams.write().insert(name.clone(), state);
        }
        tracing::info!(stream = %name, "stream deleted");
        Ok(Empty {})
    }

    /// DescribeStream.
    pub async fn describe_stream(
        &self,
        input: DescribeStreamInput,
    ) -> Result<DescribeStreamOutput> {
        let inner = self.inner();
        let s = inner.lookup_ref(
            input.stream.stream_name.as_deref(),
            input.stream.stream_arn.as_deref(),
        )?;
        let now = inner.now_ms();
        let status = s.status(now).ok_or_else(|| inner.not_found(&s.rec.name))?;
        let limit = input.limit.unwrap_or(100).clamp(1, 100) as usize;
        let after = input.exclusive_start_shard_id.as_deref();
        let published = published_shards(&s.rec, status);
        let never_shown = status == StreamStatus::Creating
            || (status == StreamStatus::Deleting && s.rec.deleted_while_creating);
        let mut shards: Vec<Shard> = if never_shown {
            Vec::new()
        } else {
            let mut all: Vec<&ShardRecord> = published
                .iter()
                .filter(|sh| shard_listed(&s.rec, sh, now))
                .collect();
            all.sort_by_key(|sh| sh.index);
            all.into_iter()
                .map(shard_view)
                .filter(|v| after.is_none_or(|a| v.shard_id.as_str() > a))
                .collect()
        };
        let has_more = shards.len() > limit;
        shards.truncate(limit);
        Ok(DescribeStreamOutput {
            stream_description: StreamDescription {
                stream_name: s.rec.name.clone(),
                stream_arn: inner.stream_arn(&s.rec.name),
                stream_status: status.as_str().to_string(),
                stream_mode_details: mode_details(s.rec.mode),
                shards,
                has_more_shards: has_more,
                retention_period_hours: s.rec.retention_hours,
                stream_creation_timestamp: Timestamp(s.rec.created_ms),
                enhanced_monitoring: enhanced_monitoring(&s.rec),
                encryption_type: encryption_type(&s.rec),
                key_id: s.rec.encryption.as_ref().map(|e| e.key_id.clone()),
            },
        })
    }

    /// DescribeStreamSummary.
    pub async fn describe_stream_summary(
        &self,
        input: DescribeStreamSummaryInput,
    ) -> Result<DescribeStreamSummaryOutput> {
        let inner = self.inner();
        let s = inner.lookup_ref(
            input.stream.stream_name.as_deref(),
            input.stream.stream_arn.as_deref(),
        )?;
        let status = s
            .status(inner.now_ms())
            .ok_or_else(|| inner.not_found(&s.rec.name))?;
        let open_shards = published_shards(&s.rec, status)
            .iter()
            .filter(|sh| sh.end.is_none())
            .count() as u32;
        Ok(DescribeStreamSummaryOutput {
            stream_description_summary: StreamDescriptionSummary {
                stream_name: s.rec.name.clone(),
                stream_arn: inner.stream_arn(&s.rec.name),
                stream_status: status.as_str().to_string(),
                stream_mode_details: mode_details(s.rec.mode),
                retention_period_hours: s.rec.retention_hours,
                stream_creation_timestamp: Timestamp(s.rec.created_ms),
                enhanced_monitoring: enhanced_monitoring(&s.rec),
                encryption_type: encryption_type(&s.rec),
                key_id: s.rec.encryption.as_ref().map(|e| e.key_id.clone()),
                open_shard_count: open_shards,
                consumer_count: crate::consumers::live_consumers(&s.rec, inner.now_ms()).count()
                    as u32,
                warm_throughput: s
                    .rec
                    .warm_throughput_mibps
                    .filter(|_| s.rec.mode == StreamMode::OnDemand)
                    .map(|w| WarmThroughput {
                        target_mi_bps: Some(w),
                        // Each open shard takes 1 MiB/s of writes.
                        current_mi_bps: Some(open_shards),
                    }),
                max_record_size_kib: s.rec.max_record_size_kib,
                record_distribution_strategy: (s.rec.mode == StreamMode::OnDemand)
                    .then(|| s.rec.record_distribution.as_str().to_string()),
            },
        })
    }

    /// ListStreams.
    pub async fn list_streams(&self, input: ListStreamsInput) -> Result<ListStreamsOutput> {
        let inner = self.inner();
        let limit = input.limit.unwrap_or(100).clamp(1, 100) as usize;
        let after = match &input.next_token {
            Some(t) => {
                let raw = inner
                    .iterators
                    .open(LIST_STREAMS_TOKEN, t)
                    .and_then(|b| serde_json::from_slice::<ListStreamsToken>(&b).ok())
                    .ok_or_else(|| Error::InvalidArgument("Invalid NextToken.".into()))?;
                Some(raw.a)
            }
            None => input.exclusive_start_stream_name.clone(),
        };
        let now = inner.now_ms();
        let map = inner.streams.read();
        let mut summaries = Vec::new();
        let mut has_more = false;
        for (name, s) in map.iter() {
            if after.as_ref().is_some_and(|a| name.as_str() <= a.as_str()) {
                continue;
            }
            let Some(status) = s.status(now) else {
                continue;
            };
            if summaries.len() == limit {
                has_more = true;
                break;
            }
            summaries.push(StreamSummary {
                stream_name: name.clone(),
                stream_arn: inner.stream_arn(name),
                stream_status: status.as_str().to_string(),
                stream_mode_details: mode_details(s.rec.mode),
                stream_creation_timestamp: Timestamp(s.rec.created_ms),
            });
        }
        let next_token = if has_more {
            summaries.last().map(|l| {
                inner.iterators.seal(
                    LIST_STREAMS_TOKEN,
                    &serde_json::to_vec(&ListStreamsToken {
                        a: l.stream_name.clone(),
                    })
                    .unwrap_or_default(),
                )
            })
        } else {
            None
        };
        Ok(ListStreamsOutput {
            stream_names: summaries.iter().map(|s| s.stream_name.clone()).collect(),
            has_more_streams: has_more,
            next_token,
            stream_summaries: summaries,
        })
    }

    /// ListShards.
    pub async fn list_shards(&self, input: ListShardsInput) -> Result<ListShardsOutput> {
        let inner = self.inner();
        let now = inner.now_ms();
        let max = input.max_results.unwrap_or(1000).clamp(1, 1000) as usize;
        let (s, after, filter) = if let Some(token) = &input.next_token {
            for (given, what) in [
                (input.stream.stream_name.is_some(), "StreamName"),
                (input.stream.stream_arn.is_some(), "StreamARN"),
                (
                    input.exclusive_start_shard_id.is_some(),
                    "ExclusiveStartShardId",
                ),
                (input.shard_filter.is_some(), "ShardFilter"),
                (
                    input.stream_creation_timestamp.is_some(),
                    "StreamCreationTimestamp",
                ),
            ] {
                if given {
                    return Err(Error::InvalidArgument(format!(
                        "NextToken and {what} cannot be provided together."
                    )));
                }
            }
            let t = inner.list_shards_token(token)?;
            if now.saturating_sub(t.t) > NEXT_TOKEN_TTL_MS {
                return Err(Error::ExpiredNextToken(format!(
                    "The NextToken has expired: it was issued more than {} seconds ago.",
                    NEXT_TOKEN_TTL_MS / 1000
                )));
            }
            let s = inner.lookup(&t.s)?;
            if s.rec.uid != t.u {
                return Err(inner.not_found(&t.s));
            }
            let filter = t.f.map(|(ty, id, ts)| ShardFilter {
                filter_type: ty,
                shard_id: id,
                timestamp: ts.map(Timestamp),
            });
            (s, Some(t.a), filter)
        } else {
            if input.stream.stream_name.is_none() && input.stream.stream_arn.is_none() {
                return Err(Error::InvalidArgument(
                    "Either NextToken or StreamName should be provided.".into(),
                ));
            }
            let s = inner.lookup_ref(
                input.stream.stream_name.as_deref(),
                input.stream.stream_arn.as_deref(),
            )?;
            if let Some(ts) = input.stream_creation_timestamp
                && ts.millis().abs_diff(s.rec.created_ms) >= 1000
            {
                return Err(inner.not_found(&s.rec.name));
            }
            let after = input
                .exclusive_start_shard_id
                .as_deref()
                .map(|id| parse_shard_index(id).unwrap_or(u32::MAX));
            (s, after, input.shard_filter.clone())
        };
        let status = s.status(now).ok_or_else(|| inner.not_found(&s.rec.name))?;
        if status == StreamStatus::Creating {
            return Err(Error::ResourceInUse(format!(
                "Stream {} under account {} not ACTIVE or UPDATING, instead in state CREATING",
                s.rec.name, inner.cfg.account_id
            )));
        }
        let trim = (now - retention_ms(s.rec.retention_hours)).max(s.rec.created_ms);
        let open_at = |sh: &ShardRecord, t: i64| {
            sh.created_ms <= t && sh.end.as_ref().is_none_or(|e| e.closed_ms > t)
        };
        let mut after = after;
        let selector: Box<dyn Fn(&ShardRecord) -> bool> = match &filter {
            None => Box::new(|sh: &ShardRecord| shard_listed(&s.rec, sh, now)),
            Some(f) => match f.filter_type {
                ShardFilterType::AfterShardId => {
                    let id = f.shard_id.as_deref().ok_or_else(|| {
                        Error::InvalidArgument("ShardId must be supplied in a ShardFilter with a Type of AFTER_SHARD_ID".into())
                    })?;
                    let idx = parse_shard_index(id).unwrap_or(u32::MAX);
                    after = Some(after.map_or(idx, |a| a.max(idx)));
                    Box::new(|sh: &ShardRecord| shard_listed(&s.rec, sh, now))
                }
                ShardFilterType::AtTrimHorizon => {
                    Box::new(move |sh: &ShardRecord| open_at(sh, trim))
                }
                ShardFilterType::FromTrimHorizon => {
                    Box::new(|sh: &ShardRecord| shard_listed(&s.rec, sh, now))
                }
                ShardFilterType::AtLatest => Box::new(|sh: &ShardRecord| sh.end.is_none()),
                ShardFilterType::AtTimestamp | ShardFilterType::FromTimestamp => {
                    let ts = f.timestamp.ok_or_else(|| {
                        Error::InvalidArgument(
                            "Timestamp must be supplied in a ShardFilter with a Type of FROM_TIMESTAMP or AT_TIMESTAMP".into(),
                        )
                    })?;
                    let t = ts.millis().max(trim);
                    if f.filter_type == ShardFilterType::AtTimestamp {
                        Box::new(move |sh: &ShardRecord| open_at(sh, t))
                    } else {
                        Box::new(move |sh: &ShardRecord| {
                            sh.end.as_ref().is_none_or(|e| e.closed_ms >= t)
                        })
                    }
                }
            },
        };
        let published = published_shards(&s.rec, status);
        let mut chosen: Vec<&ShardRecord> = published
            .iter()
            .filter(|sh| after.is_none_or(|a| sh.index > a))
            .filter(|sh| selector(sh))
            .collect();
        chosen.sort_by_key(|sh| sh.index);
        let more = chosen.len() > max;
        chosen.truncate(max);
        let next_token = if more {
            chosen.last().map(|last| {
                let t = ListShardsToken {
                    s: s.rec.name.clone(),
                    u: s.rec.uid,
                    a: last.index,
                    f: filter.as_ref().map(|f| {
                        (
                            f.filter_type,
                            f.shard_id.clone(),
                            f.timestamp.map(|t| t.millis()),
                        )
                    }),
                    t: now,
                };
                inner.iterators.seal(
                    LIST_SHARDS_TOKEN,
                    &serde_json::to_vec(&t).unwrap_or_default(),
                )
            })
        } else {
            None
        };
        Ok(ListShardsOutput {
            shards: chosen.into_iter().map(shard_view).collect(),
            next_token,
        })
    }

    /// IncreaseStreamRetentionPeriod.
    pub async fn increase_stream_retention_period(&self, input: RetentionInput) -> Result<Empty> {
        self.change_retention(input, true).await
    }

    /// DecreaseStreamRetentionPeriod.
    pub async fn decrease_stream_retention_period(&self, input: RetentionInput) -> Result<Empty> {
        self.change_retention(input, false).await
    }

    async fn change_retention(&self, input: RetentionInput, increase: bool) -> Result<Empty> {
        let h = input.retention_period_hours;
        if h < MIN_RETENTION_HOURS {
            return Err(Error::InvalidArgument(format!(
                "Minimum allowed retention period is {MIN_RETENTION_HOURS} hours. Requested retention period ({h} hours) is too short."
            )));
        }
        if h > MAX_RETENTION_HOURS {
            return Err(Error::InvalidArgument(format!(
                "Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. Requested retention period ({h} hours) is too long."
            )));
        }
        self.inner()
            .mutate(&input.stream, false, |rec, _| {
                let cur = i64::from(rec.retention_hours);
                if increase && h < cur {
                    return Err(Error::InvalidArgument(format!(
                        "Requested retention period ({h} hours) for stream {} can not be shorter than existing retention period ({cur} hours). Use DecreaseRetentionPeriod API.",
                        rec.name
                    )));
                }
                if !increase && h > cur {
                    return Err(Error::InvalidArgument(format!(
                        "Requested retention period ({h} hours) for stream {} can not be longer than existing retention period ({cur} hours). Use IncreaseRetentionPeriod API.",
                        rec.name
                    )));
                }
                rec.retention_hours = h as u32;
                Ok(())
            })
            .await?;
        Ok(Empty {})
    }

    /// UpdateMaxRecordSize.
    pub async fn update_max_record_size(&self, input: UpdateMaxRecordSizeInput) -> Result<Empty> {
        let kib = input.max_record_size_kib;
        if !(1024..=10240).contains(&kib) {
            return Err(Error::Validation(format!(
                "1 validation error detected: Value '{kib}' at 'maxRecordSizeInKiB' failed to satisfy constraint: Member must have value {} {}",
                if kib < 1024 {
                    "greater than or equal to"
                } else {
                    "less than or equal to"
                },
                if kib < 1024 { 1024 } else { 10240 }
            )));
        }
        self.inner()
            .mutate(&input.stream, false, |rec, _| {
                rec.max_record_size_kib = kib as u32;
                Ok(())
            })
            .await?;
        Ok(Empty {})
    }

    /// UpdateStreamMode.
    pub async fn update_stream_mode(&self, input: UpdateStreamModeInput) -> Result<Empty> {
        let inner = self.inner();
        let mode = input.stream_mode_details.stream_mode;
        if input.warm_throughput_mibps.is_some() && mode != StreamMode::OnDemand {
            return Err(Error::InvalidArgument(
                "WarmThroughputMiBps is only valid when updating the stream mode to ON_DEMAND."
                    .into(),
            ));
        }
        if let Some(w) = input.warm_throughput_mibps {
            crate::capacity::check_warm(inner, w)?;
        }
        let delay = inner.cfg.update_delay.as_millis() as i64;
        let now = inner.now_ms();
        inner
            .mutate(&input.stream, false, |rec, _| {
                if rec.mode == mode {
                    return Ok(());
                }
                if mode == StreamMode::OnDemand {
                    inner.check_on_demand_limit()?;
                }
                rec.mode = mode;
                if let Some(w) = input.warm_throughput_mibps {
                    rec.warm_throughput_mibps = Some(w.clamp(0, i64::from(u32::MAX)) as u32);
                }
                if mode == StreamMode::Provisioned {
                    rec.warm_throughput_mibps = None;
                    // AUTO distribution exists only in on-demand mode.
                    rec.record_distribution = ripstream_meta::RecordDistribution::UserPartitionKey;
                }
                if delay > 0 {
                    rec.status = StreamStatus::Updating;
                    rec.status_until_ms = now + delay;
                }
                Ok(())
            })
            .await?;
        if mode == StreamMode::OnDemand && delay == 0 {
            self.ensure_floor(&input.stream).await?;
        }
        Ok(Empty {})
    }

    /// EnableEnhancedMonitoring.
    pub async fn enable_enhanced_monitoring(
        &self,
        input: EnhancedMonitoringInput,
    ) -> Result<EnhancedMonitoringOutput> {
        self.change_monitoring(input, true).await
    }

    /// DisableEnhancedMonitoring.
    pub async fn disable_enhanced_monitoring(
        &self,
        input: EnhancedMonitoringInput,
    ) -> Result<EnhancedMonitoringOutput> {
        self.change_monitoring(input, false).await
    }

    async fn change_monitoring(
        &self,
        input: EnhancedMonitoringInput,
        enable: bool,
    ) -> Result<EnhancedMonitoringOutput> {
        let inner = self.inner();
        let requested: Vec<&str> = if input.shard_level_metrics.contains(&MetricsName::All) {
            ALL_METRICS.to_vec()
        } else {
            input
                .shard_level_metrics
                .iter()
                .map(|m| m.as_str())
                .collect()
        };
        let mut current = Vec::new();
        let state = inner
            .mutate(&input.stream, true, |rec, _| {
                current = ordered_metrics(rec.shard_level_metrics.iter().map(String::as_str));
                for m in &requested {
                    if enable {
                        rec.shard_level_metrics.insert(m.to_string());
                    } else {
                        rec.shard_level_metrics.remove(*m);
                    }
                }
                Ok(())
            })
            .await?;
        Ok(EnhancedMonitoringOutput {
            stream_name: state.rec.name.clone(),
            stream_arn: inner.stream_arn(&state.rec.name),
            current_shard_level_metrics: current,
            desired_shard_level_metrics: ordered_metrics(
                state.rec.shard_level_metrics.iter().map(String::as_str),
            ),
        })
    }

    /// DescribeLimits.
    pub async fn describe_limits(&self, _input: Empty) -> Result<DescribeLimitsOutput> {
        let inner = self.inner();
        Ok(DescribeLimitsOutput {
            shard_limit: inner.cfg.shard_limit,
            open_shard_count: inner.open_shard_total(),
            on_demand_stream_count: inner.on_demand_total(),
            on_demand_stream_count_limit: inner.cfg.on_demand_stream_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_parse_like_kinesis() {
        assert_eq!(parse_shard_index("shardId-000000000001"), Some(1));
        assert_eq!(parse_shard_index("shardId-1"), Some(1));
        assert_eq!(parse_shard_index("7"), Some(7));
        assert_eq!(parse_shard_index("foo-5"), Some(5));
        assert_eq!(parse_shard_index("shardId-"), None);
        assert_eq!(parse_shard_index("shardId-abc"), None);
        assert_eq!(parse_shard_index("shardId-99999999999"), None);
    }

    /// (index, open) of the shards readers are shown.
    fn shown(rec: &StreamRecord, status: StreamStatus) -> Vec<(u32, bool)> {
        published_shards(rec, status)
            .iter()
            .map(|s| (s.index, s.end.is_none()))
            .collect()
    }

    #[test]
    fn a_pending_reshard_shows_the_layout_before_it() {
        let mut rec = StreamRecord::new("s", 1, 0);
        rec.shards = even_ranges(4)
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| ShardRecord {
                index: i as u32,
                starting_hash_key: start,
                ending_hash_key: end,
                created_ms: 0,
                parent: None,
                adjacent_parent: None,
                end: None,
                seq_created_s: Some(0),
            })
            .collect();
        // An earlier reshard, long published: 2 and 3 merged into 4.
        let mut layout = crate::reshard::Layout::new(rec.shards.clone(), 10);
        layout.merge(2, 3);
        rec.shards = layout.shards;
        let before = vec![(0, true), (1, true), (2, false), (3, false), (4, true)];
        assert_eq!(shown(&rec, StreamStatus::Active), before);
        // Now scaling to 3: 1 and 4 split, pieces merged (5 to 7 are created
        // and closed within the change), UPDATING until 2000.
        let mut layout = crate::reshard::Layout::new(rec.shards.clone(), 1000);
        layout.scale_uniformly(3);
        rec.shards = layout.shards;
        rec.status = StreamStatus::Updating;
        rec.status_until_ms = 2000;
        rec.pending_reshard = Some(ripstream_meta::PendingReshard {
            first_new_shard: 5,
            until_ms: 2000,
        });
        assert_eq!(rec.shards.len(), 11);
        assert_eq!(shown(&rec, StreamStatus::Updating), before);
        // Once ACTIVE, or in a later UPDATING state, the record is shown.
        let all: Vec<(u32, bool)> = rec
            .shards
            .iter()
            .map(|s| (s.index, s.end.is_none()))
            .collect();
        assert_eq!(shown(&rec, StreamStatus::Active), all);
        rec.status_until_ms = 9000;
        assert_eq!(shown(&rec, StreamStatus::Updating), all);
        assert_eq!(all.iter().filter(|(_, open)| *open).count(), 3);
    }
}
