//! On-demand capacity: streams in ON_DEMAND mode manage their own shards.
//!
//! The policy, run every `on_demand_scale_interval`:
//! - **Split** an open shard that is hot: its smoothed write rate is at least
//!   80 % of the per-shard quota (bytes or records), or writes to it are being
//!   throttled. It is split at the median hash key of its recent writes (so
//!   each child gets about half of the traffic), or in the middle of its range
//!   when the sample cannot divide it. A shard whose recent writes all share one
//!   hash key is not split: no split could spread a single key.
//! - **Merge** two adjacent open shards that have both been cold (under 10 %
//!   of the quota, no throttling) for `on_demand_merge_after`, as long as the
//!   stream keeps at least its floor: 4 shards, or one per MiB/s of warm
//!   throughput.
//! - At most one split or merge per stream per pass, within the account's
//!   shard limit.
//! - Warm throughput: UpdateStreamWarmThroughput (and CreateStream's
//!   `WarmThroughputMiBps`) raises the open shard count at once to one shard
//!   per MiB/s, so that much write capacity is ready without throttling.

use std::collections::HashMap;

use ripstream_meta::{StreamMode, StreamStatus};

use crate::quota::{Meter, WRITE_BYTES_PER_SEC, WRITE_RECORDS_PER_SEC};
use crate::types::StreamRef;
use crate::{Result, Service, StreamState};

/// Shards an on-demand stream never goes below.
pub(crate) const ON_DEMAND_MIN_SHARDS: u32 = 4;

fn hot(m: &Meter) -> bool {
    m.avg_bytes >= 0.8 * WRITE_BYTES_PER_SEC
        || m.avg_records >= 0.8 * WRITE_RECORDS_PER_SEC
        || m.avg_throttled >= 1.0
}

fn cold(m: &Meter) -> bool {
    m.avg_bytes < 0.1 * WRITE_BYTES_PER_SEC
        && m.avg_records < 0.1 * WRITE_RECORDS_PER_SEC
        && m.avg_throttled < 0.01
}

/// The open-shard floor of an on-demand stream.
pub(crate) fn shard_floor(warm_mibps: Option<u32>) -> u32 {
    ON_DEMAND_MIN_SHARDS.max(warm_mibps.unwrap_or(0))
}

/// What one pass decided for a stream.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Split { shard: u32, at: u128 },
    Merge { shard: u32, adjacent: u32 },
}

/// Where to split a hot shard covering `[start, end]`, given its recent keys.
fn split_point(start: u128, end: u128, meter: &Meter) -> Option<u128> {
    let valid = |k: u128| k > start.saturating_add(1) && k < end;
    let median = meter.median_key()?;
    if valid(median) {
        return Some(median);
    }
    // The median sits on an edge of the range: split in the middle, unless all
    // the traffic is one key.
    let (lo, hi) = meter.key_bounds()?;
    if lo == hi {
        return None;
    }
    let mid = start + (end - start) / 2;
    valid(mid).then_some(mid)
}

impl Service {
    /// One pass of the on-demand scaler over every stream.
    pub async fn scale_on_demand(&self) {
        let inner = self.inner();
        let now = inner.now_ms();
        let streams: Vec<_> = inner
            .streams
            .read()
            .values()
            .filter(|s| {
                s.rec.mode == StreamMode::OnDemand && s.status(now) == Some(StreamStatus::Active)
            })
            .cloned()
            .collect();
        for s in streams {
            let stream_ref = StreamRef {
                stream_name: Some(s.rec.name.clone()),
                stream_arn: None,
            };
            if (s.routes.len() as u32) < shard_floor(s.rec.warm_throughput_mibps) {
                if let Err(e) = self.ensure_floor(&stream_ref).await {
                    tracing::debug!(stream = %s.rec.name, error = %ripstream_api::Chain(&e), "could not raise stream to its shard floor");
                }
                continue;
            }
            let Some(action) = self.decide(&s, now) else {
                continue;
            };
            let stream = stream_ref;
            let result = match action {
                Action::Split { shard, at } => inner
                    .reshard(&stream, |cur, layout| {
                        if cur.rec.uid == s.rec.uid && layout.is_open(shard) {
                            layout.split(shard, at);
                        }
                        Ok(())
                    })
                    .await
                    .map(|_| ()),
                Action::Merge { shard, adjacent } => inner
                    .reshard(&stream, |cur, layout| {
                        if cur.rec.uid == s.rec.uid
                            && layout.is_open(shard)
                            && layout.is_open(adjacent)
                        {
                            layout.merge(shard, adjacent);
                        }
                        Ok(())
                    })
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => tracing::info!(stream = %s.rec.name, ?action, "on-demand scaling"),
                Err(e) => {
                    tracing::debug!(stream = %s.rec.name, error = %ripstream_api::Chain(&e), "on-demand scaling skipped")
                }
            }
        }
    }

    fn decide(&self, s: &StreamState, now: i64) -> Option<Action> {
        let inner = self.inner();
        let mut open: Vec<_> = s.rec.shards.iter().filter(|sh| sh.end.is_none()).collect();
        open.sort_by_key(|sh| sh.starting_hash_key);
        let meters: HashMap<u32, Meter> = open
            .iter()
            .filter_map(|sh| s.quotas.get(&sh.index).map(|q| (sh.index, q.meter(now))))
            .collect();
        let mut cold_since = inner.cold_since.lock();
        for sh in &open {
            let key = (s.rec.uid, sh.index);
            match meters.get(&sh.index) {
                Some(m) if cold(m) => {
                    cold_since.entry(key).or_insert(now);
                }
                _ => {
                    cold_since.remove(&key);
                }
            }
        }
        // Hottest first.
        let mut hot_shards: Vec<_> = open
            .iter()
            .filter(|sh| meters.get(&sh.index).is_some_and(hot))
            .collect();
        hot_shards.sort_by(|a, b| {
            let load = |i: u32| {
                meters.get(&i).map_or(0.0, |m| {
                    m.avg_records / WRITE_RECORDS_PER_SEC
                        + m.avg_bytes / WRITE_BYTES_PER_SEC
                        + m.avg_throttled
                })
            };
            load(b.index).total_cmp(&load(a.index))
        });
        if (open.len() as u32) < crate::reshard::MAX_SHARDS_PER_STREAM {
            for sh in hot_shards {
                if let Some(at) =
                    split_point(sh.starting_hash_key, sh.ending_hash_key, &meters[&sh.index])
                {
                    return Some(Action::Split {
                        shard: sh.index,
                        at,
                    });
                }
            }
        }
        if open.len() as u32 > shard_floor(s.rec.warm_throughput_mibps) {
            let merge_after = inner.cfg.on_demand_merge_after.as_millis() as i64;
            let long_cold = |i: u32| {
                cold_since
                    .get(&(s.rec.uid, i))
                    .is_some_and(|t| now - t >= merge_after)
            };
            for pair in open.windows(2) {
                if long_cold(pair[0].index) && long_cold(pair[1].index) {
                    cold_since.remove(&(s.rec.uid, pair[0].index));
                    cold_since.remove(&(s.rec.uid, pair[1].index));
                    return Some(Action::Merge {
                        shard: pair[0].index,
                        adjacent: pair[1].index,
                    });
                }
            }
        }
        None
    }

    /// Raises an on-demand stream to its warm-throughput floor at once.
    pub(crate) async fn ensure_floor(&self, stream: &StreamRef) -> Result<()> {
        let inner = self.inner();
        inner
            .reshard(stream, |cur, layout| {
                let floor = shard_floor(cur.rec.warm_throughput_mibps);
                if cur.rec.mode == StreamMode::OnDemand && layout.open_count() < floor {
                    layout.scale_uniformly(floor);
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{QuotaMode, ShardQuota};

    #[test]
    fn splits_at_the_median_of_recent_keys() {
        let q = ShardQuota::new(0);
        let keys: Vec<(usize, Option<u128>)> = (0..100u128).map(|k| (10, Some(1000 + k))).collect();
        q.admit_writes(QuotaMode::Aws, &keys, 0);
        let m = q.meter(0);
        assert_eq!(split_point(0, u128::MAX, &m), Some(1050));
        // The median at the start of the range: split in the middle instead.
        assert_eq!(split_point(1050, 2000, &m), Some(1525));
        let one = ShardQuota::new(0);
        one.admit_writes(QuotaMode::Aws, &[(10, Some(7)), (10, Some(7))], 0);
        assert_eq!(split_point(0, 100, &one.meter(0)), Some(7));
        assert_eq!(split_point(7, 100, &one.meter(0)), None);
    }
}
