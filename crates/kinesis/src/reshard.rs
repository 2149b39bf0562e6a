//! Resharding: SplitShard, MergeShards and UpdateShardCount.
//!
//! The shard layout changes in two steps. A pure step ([`Layout`]) computes
//! the new shard list: parents closed, children with their lineage. An
//! effectful step seals the parents' partitions in the log (appends queued
//! before the seal land, later ones are re-routed), records their final
//! sequence numbers and commits the new list to the catalog in one
//! transaction. A crash before the commit leaves the stream as it was (the
//! seal lives in memory and the children's partitions are orphans removed at
//! start-up); after it, the stream is resharded.

use std::collections::HashSet;
use std::sync::Arc;

use ripstream_log::Partition;
use ripstream_meta::{ShardEnd, ShardRecord, StreamMode, StreamRecord, StreamStatus};

use crate::hash::{even_ranges, parse_hash_key};
use crate::seq::ShardSeq;
use crate::types::*;
use crate::{Error, Inner, Result, Service, StreamState, partition_id, shard_id};

/// Most shards one stream may have open.
pub(crate) const MAX_SHARDS_PER_STREAM: u32 = 10_000;

/// A stream's shard list being edited.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub shards: Vec<ShardRecord>,
    pub now_ms: i64,
}

impl Layout {
    pub fn new(shards: Vec<ShardRecord>, now_ms: i64) -> Layout {
        Layout { shards, now_ms }
    }

    fn next_index(&self) -> u32 {
        self.shards.iter().map(|s| s.index + 1).max().unwrap_or(0)
    }

    pub fn is_open(&self, index: u32) -> bool {
        self.open(index).is_some()
    }

    fn open(&self, index: u32) -> Option<&ShardRecord> {
        self.shards
            .iter()
            .find(|s| s.index == index && s.end.is_none())
    }

    fn close(&mut self, index: u32) {
        let now = self.now_ms;
        if let Some(s) = self.shards.iter_mut().find(|s| s.index == index) {
            // The ending sequence number is filled in once the partition is sealed.
            s.end = Some(ShardEnd {
                closed_ms: now,
                ending_sequence_number: String::new(),
            });
        }
    }

    fn child_created(&self, parents: &[u32]) -> i64 {
        // Children are numbered above their parents (see `seq`).
        let newest = parents
            .iter()
            .filter_map(|p| self.shards.iter().find(|s| s.index == *p))
            .map(|s| s.created_ms)
            .max()
            .unwrap_or(0);
        self.now_ms.max(newest + 1)
    }

    /// The creation second a child's sequence numbers carry: above every
    /// parent's, even when it is created within the same second (or the clock
    /// went back), so its numbers are above theirs. A legacy parent's numbers
    /// are below any in AWS's layout already.
    fn child_seq_created_s(&self, parents: &[u32]) -> u64 {
        let newest = parents
            .iter()
            .filter_map(|p| self.shards.iter().find(|s| s.index == *p))
            .filter_map(|s| s.seq_created_s)
            .map(|s| s + 1)
            .max()
            .unwrap_or(0);
        (self.now_ms.max(0) as u64 / 1000).max(newest)
    }

    /// Splits open shard `index` so that the second child starts at `at`
    /// (`start < at <= end`). Returns the children's indexes.
    pub fn split(&mut self, index: u32, at: u128) -> (u32, u32) {
        let parent = self
            .open(index)
            .cloned()
            .expect("caller checked the shard is open");
        let created = self.child_created(&[index]);
        let seq_created_s = Some(self.child_seq_created_s(&[index]));
        let first = self.next_index();
        self.close(index);
        for (i, (start, end)) in [
            (parent.starting_hash_key, at - 1),
            (at, parent.ending_hash_key),
        ]
        .into_iter()
        .enumerate()
        {
            self.shards.push(ShardRecord {
                index: first + i as u32,
                starting_hash_key: start,
                ending_hash_key: end,
                created_ms: created,
                parent: Some(index),
                adjacent_parent: None,
                end: None,
                seq_created_s,
            });
        }
        (first, first + 1)
    }

    /// Merges two adjacent open shards. Returns the child's index.
    pub fn merge(&mut self, index: u32, adjacent: u32) -> u32 {
        let a = self
            .open(index)
            .cloned()
            .expect("caller checked the shard is open");
        let b = self
            .open(adjacent)
            .cloned()
            .expect("caller checked the shard is open");
        let created = self.child_created(&[index, adjacent]);
        let seq_created_s = Some(self.child_seq_created_s(&[index, adjacent]));
        let child = self.next_index();
        self.close(index);
        self.close(adjacent);
        self.shards.push(ShardRecord {
            index: child,
            starting_hash_key: a.starting_hash_key.min(b.starting_hash_key),
            ending_hash_key: a.ending_hash_key.max(b.ending_hash_key),
            created_ms: created,
            parent: Some(index),
            adjacent_parent: Some(adjacent),
            end: None,
            seq_created_s,
        });
        child
    }

    /// Reaches `target` open shards with uniform ranges through splits and merges
    /// (so every new shard keeps AWS's at-most-two-parents lineage).
    pub fn scale_uniformly(&mut self, target: u32) {
        let ranges = even_ranges(target);
        for &(start, _) in ranges.iter().skip(1) {
            let holder = self
                .shards
                .iter()
                .find(|s| {
                    s.end.is_none() && s.starting_hash_key < start && start <= s.ending_hash_key
                })
                .map(|s| s.index);
            if let Some(i) = holder {
                self.split(i, start);
            }
        }
        for (start, end) in ranges {
            let mut pieces: Vec<(u128, u32)> = self
                .shards
                .iter()
                .filter(|s| {
                    s.end.is_none() && s.starting_hash_key >= start && s.ending_hash_key <= end
                })
                .map(|s| (s.starting_hash_key, s.index))
                .collect();
            pieces.sort();
            let mut acc = pieces[0].1;
            for &(_, next) in &pieces[1..] {
                acc = self.merge(acc, next);
            }
        }
    }

    pub fn open_count(&self) -> u32 {
        self.shards.iter().filter(|s| s.end.is_none()).count() as u32
    }
}

impl Inner {
    fn shard_not_found(&self, s: &StreamState, id: &str) -> Error {
        Error::ResourceNotFound(format!(
            "Could not find shard {id} in stream {} under account {}.",
            s.rec.name, self.cfg.account_id
        ))
    }

    /// Refuses manual resharding of an on-demand stream.
    fn provisioned_only(&self, s: &StreamState) -> Result<()> {
        if s.rec.mode == StreamMode::OnDemand {
            return Err(Error::Validation(format!(
                "Request is invalid. Stream {} under account {} is in On-Demand mode.",
                s.rec.name, self.cfg.account_id
            )));
        }
        Ok(())
    }

    /// The open shard a request names.
    fn open_shard<'a>(&self, s: &'a StreamState, id: &str) -> Result<&'a ShardRecord> {
        let index = self.shard_index_in(&s.rec.name, id)?;
        let shard = s
            .rec
            .shards
            .iter()
            .find(|sh| sh.index == index)
            .ok_or_else(|| self.shard_not_found(s, &shard_id(index)))?;
        if shard.end.is_some() {
            return Err(Error::InvalidArgument(format!(
                "Shard {} in stream {} under account {} has already been merged or split, and thus is not eligible for merging or splitting.",
                shard_id(index),
                s.rec.name,
                self.cfg.account_id
            )));
        }
        Ok(shard)
    }

    /// Runs one reshard: `plan` edits the layout of an ACTIVE stream; the
    /// change is then made durable as described in the module docs.
    pub(crate) async fn reshard(
        &self,
        stream: &StreamRef,
        plan: impl FnOnce(&StreamState, &mut Layout) -> Result<()>,
    ) -> Result<(Arc<StreamState>, u32)> {
        let name =
            self.resolve_name(stream.stream_name.as_deref(), stream.stream_arn.as_deref())?;
        let _guard = self.control.lock().await;
        let cur = self.lookup(&name)?;
        let now = self.now_ms();
        let status = cur.status(now).ok_or_else(|| self.not_found(&name))?;
        if status != StreamStatus::Active {
            return Err(self.not_active(&cur, status));
        }
        let before_open = cur.routes.len() as u32;
        let mut layout = Layout::new(cur.rec.shards.clone(), now);
        plan(&cur, &mut layout)?;
        let after_open = layout.open_count();
        if after_open > before_open {
            let others: u32 = self
                .streams
                .read()
                .values()
                .filter(|s| s.rec.name != name)
                .map(|s| s.routes.len() as u32)
                .sum();
            if others + after_open > self.cfg.shard_limit {
                return Err(self.shard_limit_error(after_open - before_open));
            }
        }

        let was_open: HashSet<u32> = cur
            .rec
            .shards
            .iter()
            .filter(|s| s.end.is_none())
            .map(|s| s.index)
            .collect();
        let mut rec = cur.rec.clone();
        rec.status = status;
        rec.shards = layout.shards;
        // Create every new shard's partition (directory fsyncs, on a blocking
        // thread) before sealing anything.
        let retention = crate::retention_ms(rec.retention_hours);
        let fresh: Vec<(String, bool)> = rec
            .shards
            .iter()
            .filter(|s| !cur.parts.contains_key(&s.index))
            .map(|s| (partition_id(rec.uid, s.index), s.end.is_some()))
            .collect();
        let log = self.log.clone();
        crate::blocking(move || {
            for (id, closed) in fresh {
                log.create_partition(&id, retention)?.set_sealed(closed);
            }
            Ok(())
        })
        .await?;
        let mut sealed = Vec::new();
        for sh in rec.shards.iter_mut() {
            let seq = ShardSeq::of(sh);
            let Some(end) = sh
                .end
                .as_mut()
                .filter(|e| e.ending_sequence_number.is_empty())
            else {
                continue;
            };
            if !was_open.contains(&sh.index) {
                // Created and closed in this change: it never held a record.
                end.ending_sequence_number = seq.start();
                continue;
            }
            end.ending_sequence_number = seq.end(end.closed_ms);
            let part = cur
                .parts
                .get(&sh.index)
                .ok_or_else(|| Error::Internal("shard without partition".into()))?;
            if let Err(e) = self.log.seal(part).await {
                unseal(&sealed);
                return Err(e.into());
            }
            sealed.push(part.clone());
        }
        let delay = self.cfg.update_delay.as_millis() as i64;
        rec.pending_reshard = None;
        if delay > 0 {
            rec.status = StreamStatus::Updating;
            rec.status_until_ms = now + delay;
            rec.pending_reshard = Some(ripstream_meta::PendingReshard {
                first_new_shard: cur.rec.next_shard_index(),
                until_ms: rec.status_until_ms,
            });
        }
        if let Err(e) = self.commit_stream(&rec).await {
            unseal(&sealed);
            return Err(e);
        }
        let state = self.build_state(rec, Some(&cur)).await?;
        self.streams.write().insert(name, state.clone());
        Ok((state, before_open))
    }
}

/// Whether a closed shard can be forgotten: it closed longer ago than the
/// stream's retention (so every record it holds has expired too, and AWS no
/// longer lists it) and its children are in the record. Children are numbered
/// above their parents and never pruned before them, so the highest index
/// always stays in the record and `next_index` never hands out a pruned one.
fn prunable(
    rec: &StreamRecord,
    shard: &ShardRecord,
    part: Option<&Partition>,
    now_ms: i64,
) -> bool {
    let Some(end) = &shard.end else {
        return false;
    };
    let cutoff = now_ms - crate::retention_ms(rec.retention_hours);
    end.closed_ms < cutoff
        && part.is_none_or(|p| p.last_timestamp().is_none_or(|t| t < cutoff))
        && rec
            .shards
            .iter()
            .any(|c| c.parent == Some(shard.index) || c.adjacent_parent == Some(shard.index))
}

impl Inner {
    /// Drops a stream's expired closed shards from its record and deletes
    /// their partitions. The children keep their ParentShardId, as on AWS.
    /// The catalog goes first: a crash before the partitions are deleted
    /// leaves orphans, which the next start removes.
    async fn prune_stream(&self, name: &str) -> Result<usize> {
        let _guard = self.control.lock().await;
        let cur = self.lookup(name)?;
        let now = self.now_ms();
        if !matches!(
            cur.status(now),
            Some(StreamStatus::Active | StreamStatus::Updating)
        ) {
            return Ok(0);
        }
        let doomed: HashSet<u32> = cur
            .rec
            .shards
            .iter()
            .filter(|sh| prunable(&cur.rec, sh, cur.parts.get(&sh.index).map(|p| &**p), now))
            .map(|sh| sh.index)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut rec = cur.rec.clone();
        rec.shards.retain(|sh| !doomed.contains(&sh.index));
        self.commit_stream(&rec).await?;
        let uid = rec.uid;
        let state = self.build_state(rec, Some(&cur)).await?;
        self.streams.write().insert(name.to_string(), state);
        {
            let mut cold = self.cold_since.lock();
            for i in &doomed {
                cold.remove(&(uid, *i));
            }
        }
        // One call: the log checkpoints once for all of them.
        let ids: Vec<String> = doomed.iter().map(|i| partition_id(uid, *i)).collect();
        self.log.delete_partitions(&ids).await?;
        tracing::info!(stream = %name, shards = ?doomed, "pruned closed shards past retention");
        Ok(doomed.len())
    }
}

fn unseal(parts: &[Arc<ripstream_log::Partition>]) {
    for p in parts {
        p.set_sealed(false);
    }
}

impl Service {
    /// Prunes the closed shards of every stream that have outlived its
    /// retention (run from the retention task). Returns how many went.
    pub async fn prune_closed_shards(&self) -> usize {
        let inner = self.inner();
        let now = inner.now_ms();
        let due: Vec<String> = inner
            .streams
            .read()
            .values()
            .filter(|s| {
                s.rec
                    .shards
                    .iter()
                    .any(|sh| prunable(&s.rec, sh, s.parts.get(&sh.index).map(|p| &**p), now))
            })
            .map(|s| s.rec.name.clone())
            .collect();
        let mut pruned = 0;
        for name in due {
            match inner.prune_stream(&name).await {
                Ok(n) => pruned += n,
                Err(e) => {
                    tracing::warn!(stream = %name, error = %ripstream_api::Chain(&e), "could not prune closed shards")
                }
            }
        }
        pruned
    }

    /// SplitShard.
    pub async fn split_shard(&self, input: SplitShardInput) -> Result<Empty> {
        let inner = self.inner();
        let name = inner.resolve_name(
            input.stream.stream_name.as_deref(),
            input.stream.stream_arn.as_deref(),
        )?;
        // The shard id is checked before the stream exists, as AWS does.
        inner.shard_index_in(&name, &input.shard_to_split)?;
        let at = parse_hash_key(&input.new_starting_hash_key);
        inner
            .reshard(&input.stream, |s, layout| {
                inner.provisioned_only(s)?;
                let shard = inner.open_shard(s, &input.shard_to_split)?;
                let (start, end) = (shard.starting_hash_key, shard.ending_hash_key);
                let Some(at) = at.filter(|k| *k > start.saturating_add(1) && *k < end) else {
                    return Err(Error::InvalidArgument(format!(
                        "NewStartingHashKey {} used in SplitShard() on shard {} in stream {} under account {} is not both greater than one plus the shard's StartingHashKey {} and less than the shard's EndingHashKey {}.",
                        input.new_starting_hash_key,
                        shard_id(shard.index),
                        s.rec.name,
                        inner.cfg.account_id,
                        start,
                        end
                    )));
                };
                layout.split(shard.index, at);
                Ok(())
            })
            .await?;
        Ok(Empty {})
    }

    /// MergeShards.
    pub async fn merge_shards(&self, input: MergeShardsInput) -> Result<Empty> {
        let inner = self.inner();
        let name = inner.resolve_name(
            input.stream.stream_name.as_deref(),
            input.stream.stream_arn.as_deref(),
        )?;
        // Both shard ids are checked before the stream exists, as AWS does.
        for id in [&input.shard_to_merge, &input.adjacent_shard_to_merge] {
            inner.shard_index_in(&name, id)?;
        }
        inner
            .reshard(&input.stream, |s, layout| {
                inner.provisioned_only(s)?;
                let a = inner.open_shard(s, &input.shard_to_merge)?;
                let b = inner.open_shard(s, &input.adjacent_shard_to_merge)?;
                // Order matters: the adjacent shard must start right after ShardToMerge.
                let adjacent = a.ending_hash_key.checked_add(1) == Some(b.starting_hash_key);
                if !adjacent {
                    return Err(Error::InvalidArgument(format!(
                        "Shards {} and {} in stream {} under account {} are not an adjacent pair of shards eligible for merging",
                        shard_id(a.index),
                        shard_id(b.index),
                        s.rec.name,
                        inner.cfg.account_id
                    )));
                }
                layout.merge(a.index, b.index);
                Ok(())
            })
            .await?;
        Ok(Empty {})
    }

    /// UpdateShardCount.
    pub async fn update_shard_count(
        &self,
        input: UpdateShardCountInput,
    ) -> Result<UpdateShardCountOutput> {
        let inner = self.inner();
        let target = input.target_shard_count;
        let (state, before) = inner
            .reshard(&input.stream, |s, layout| {
                inner.provisioned_only(s)?;
                let current = s.routes.len() as i64;
                if target > current * 2 {
                    return Err(Error::LimitExceeded(format!(
                        "UpdateShardCount cannot scale up over double your current open shard count. Current open shard count: {current}, Target shard count: {target}"
                    )));
                }
                if target * 2 < current {
                    return Err(Error::LimitExceeded(format!(
                        "UpdateShardCount cannot scale down below half your current open shard count. Current open shard count: {current}, Target shard count: {target}"
                    )));
                }
                let others: i64 = inner
                    .streams
                    .read()
                    .values()
                    .filter(|o| o.rec.uid != s.rec.uid)
                    .map(|o| o.routes.len() as i64)
                    .sum();
                let limit = i64::from(inner.cfg.shard_limit.min(MAX_SHARDS_PER_STREAM));
                if target > limit || others + target > i64::from(inner.cfg.shard_limit) {
                    return Err(Error::LimitExceeded(format!(
                        "Target shard count or number of open shards cannot be greater than {}. Current open shard count: {current}, Target shard count: {target}",
                        inner.cfg.shard_limit.min(MAX_SHARDS_PER_STREAM)
                    )));
                }
                if target != current {
                    layout.scale_uniformly(target as u32);
                }
                Ok(())
            })
            .await?;
        Ok(UpdateShardCountOutput {
            stream_name: state.rec.name.clone(),
            stream_arn: inner.stream_arn(&state.rec.name),
            current_shard_count: before,
            target_shard_count: state.routes.len() as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fresh(n: u32) -> Layout {
        let shards = even_ranges(n)
            .into_iter()
            .enumerate()
            .map(|(i, (s, e))| ShardRecord {
                index: i as u32,
                starting_hash_key: s,
                ending_hash_key: e,
                created_ms: 1,
                parent: None,
                adjacent_parent: None,
                end: None,
                seq_created_s: (i % 2 == 0).then_some(0),
            })
            .collect();
        Layout::new(shards, 10)
    }

    /// The open shards tile 0..=2^128-1 with no gap and no overlap.
    fn assert_tiles(l: &Layout) {
        let mut open: Vec<&ShardRecord> = l.shards.iter().filter(|s| s.end.is_none()).collect();
        open.sort_by_key(|s| s.starting_hash_key);
        assert_eq!(open[0].starting_hash_key, 0);
        assert_eq!(open.last().unwrap().ending_hash_key, u128::MAX);
        for w in open.windows(2) {
            assert!(w[0].starting_hash_key <= w[0].ending_hash_key);
            assert_eq!(w[0].ending_hash_key + 1, w[1].starting_hash_key);
        }
    }

    fn assert_lineage(l: &Layout) {
        let mut ids = HashSet::new();
        for s in &l.shards {
            assert!(ids.insert(s.index), "index {} reused", s.index);
            for p in s.parent.iter().chain(s.adjacent_parent.iter()) {
                let parent = l.shards.iter().find(|x| x.index == *p).unwrap();
                assert!(parent.end.is_some(), "parent {p} still open");
                assert!(parent.created_ms < s.created_ms);
                // Children number above their parents (see `seq`).
                assert!(parent.seq_created_s < s.seq_created_s);
                assert!(
                    parent.starting_hash_key <= s.ending_hash_key
                        && s.starting_hash_key <= parent.ending_hash_key
                );
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Split(prop::sample::Index, u64),
        Merge(prop::sample::Index),
        Scale(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<prop::sample::Index>(), any::<u64>()).prop_map(|(i, f)| Op::Split(i, f)),
            any::<prop::sample::Index>().prop_map(Op::Merge),
            (1u32..9).prop_map(Op::Scale),
        ]
    }

    proptest! {
        #[test]
        fn open_shards_always_tile_the_key_space(start in 1u32..6, ops in proptest::collection::vec(op(), 1..25)) {
            let mut l = fresh(start);
            for op in ops {
                let mut open: Vec<ShardRecord> = l.shards.iter().filter(|s| s.end.is_none()).cloned().collect();
                open.sort_by_key(|s| s.starting_hash_key);
                match op {
                    Op::Split(i, frac) => {
                        let s = i.get(&open);
                        let width = s.ending_hash_key - s.starting_hash_key;
                        if width > 2 {
                            let room = width - 2;
                            let r = if room >> 64 > 0 { (room >> 64) * u128::from(frac) } else { u128::from(frac) % room };
                            l.split(s.index, s.starting_hash_key + 2 + r);
                        }
                    }
                    Op::Merge(i) => {
                        if open.len() > 1 {
                            let k = i.index(open.len() - 1);
                            l.merge(open[k].index, open[k + 1].index);
                        }
                    }
                    Op::Scale(factor) => {
                        let cur = open.len() as u32;
                        let target = (cur * factor / 4).clamp(cur.div_ceil(2), cur * 2).max(1);
                        l.scale_uniformly(target);
                        prop_assert_eq!(l.open_count(), target);
                        let mut open: Vec<&ShardRecord> = l.shards.iter().filter(|s| s.end.is_none()).collect();
                        open.sort_by_key(|s| s.starting_hash_key);
                        let even = even_ranges(target);
                        for (s, (a, b)) in open.iter().zip(even) {
                            prop_assert_eq!((s.starting_hash_key, s.ending_hash_key), (a, b));
                        }
                    }
                }
                l.now_ms += 1;
                assert_tiles(&l);
                assert_lineage(&l);
            }
        }
    }

    #[test]
    fn split_and_merge_lineage() {
        let mut l = fresh(2);
        let (a, b) = l.split(0, 1000);
        assert_eq!((a, b), (2, 3));
        let child = l.merge(b, 1);
        let c = l.shards.iter().find(|s| s.index == child).unwrap();
        assert_eq!((c.parent, c.adjacent_parent), (Some(3), Some(1)));
        assert_eq!(c.starting_hash_key, 1000);
        assert_eq!(c.ending_hash_key, u128::MAX);
        assert_tiles(&l);
    }
}
