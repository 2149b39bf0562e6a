//! The delivery engine: one task per delivery stream, run by a supervisor
//! that [`crate::Firehose::background`] returns.
//!
//! A task reads its stream's partition from the durable checkpoint, fills a
//! buffer until BufferingHints say to flush (SizeInMBs reached, or
//! IntervalInSeconds elapsed since the first buffered record arrived), and
//! writes the buffer as one object. Only after the sink reports the object
//! durable does the checkpoint advance, so a crash at any point redelivers
//! at most the last buffer (at least once, never lost).
//!
//! Buffers come out of one process-wide memory budget
//! ([`crate::FirehoseConfig::buffer_memory_bytes`]): a task reserves its
//! read-ahead before it reads, and when the budget is spent it flushes
//! what it holds early, or (holding nothing) stops reading until another
//! stream gives memory back. Records it did not buffer wait in the log.
//! A failing destination is retried with backoff without holding the
//! batch: it is dropped after each failed attempt and re-read from the log
//! for the next. A key the object store refuses (an object in the way of
//! the key's directories) gets one fresh key, then the batch goes to the
//! error output (`processing-failed`, error code `S3.InvalidKey`), so a
//! conflicting key never stalls the stream.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::budget::Held;
use crate::record::{Compression, Destination, Status};
use crate::sink::SinkError;
use crate::{Inner, Stream, prefix};

/// The records of one flush, concatenated raw as Firehose writes them to S3.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    pub data: Vec<u8>,
    /// Per record: its arrival time and where it ends in `data` (what a
    /// Lambda processor needs to send records one by one).
    pub ends: Vec<(i64, usize)>,
    /// Per record: its source record's log offset and its index among
    /// what that record became (push destinations' stable ids).
    pub positions: Vec<(u64, u32)>,
    pub records: u64,
    /// Arrival (log append) time of the first record.
    pub first_ms: i64,
    /// The error output of records processing could not read (Decompression,
    /// CloudWatchLogProcessing), by error-output type.
    pub failures: Vec<(&'static str, Vec<u8>)>,
    /// Per record, its source record's metadata (the log key a stream
    /// source stored), kept only for a Lambda processor of a stream-sourced
    /// delivery stream: the `kinesisRecordMetadata` its request carries.
    pub meta: Vec<Bytes>,
}

impl Buffer {
    /// As [`Buffer::push_all`], noting each record's source metadata.
    fn push_all_with(&mut self, arrival_ms: i64, offset: u64, values: Vec<Vec<u8>>, meta: &Bytes) {
        for _ in 0..values.len() {
            self.meta.push(meta.clone());
        }
        self.push_all(arrival_ms, offset, values);
    }

    fn push(&mut self, arrival_ms: i64, value: &[u8]) {
        if self.is_empty() {
            self.first_ms = arrival_ms;
        }
        self.data.extend_from_slice(value);
        self.ends.push((arrival_ms, self.data.len()));
        self.records += 1;
    }

    /// The records one source record (at `offset`) became (none: the
    /// arrival time of an empty result does not start the buffer).
    fn push_all(&mut self, arrival_ms: i64, offset: u64, values: Vec<Vec<u8>>) {
        for (i, v) in values.into_iter().enumerate() {
            self.push(arrival_ms, &v);
            self.positions.push((offset, i as u32));
        }
    }

    /// A record that failed processing: its error output line.
    fn push_failure(&mut self, arrival_ms: i64, f: &crate::cwlogs::Failure, raw: &[u8], now: i64) {
        if self.is_empty() {
            self.first_ms = arrival_ms;
        }
        let line = crate::partition::error_line(arrival_ms, f.code, &f.message, now, raw);
        match self.failures.iter_mut().find(|(t, _)| *t == f.error_type) {
            Some((_, lines)) => lines.extend(line),
            None => self.failures.push((f.error_type, line)),
        }
    }

    fn is_empty(&self) -> bool {
        self.records == 0 && self.failures.is_empty()
    }

    /// Records and failures, for the flush decision.
    fn entries(&self) -> u64 {
        self.records + self.failures.len() as u64
    }

    /// What the buffer costs in memory: its bytes, and per record the
    /// bookkeeping that empty or one-byte records would otherwise get for
    /// free (what the budget is charged).
    fn cost(&self) -> usize {
        self.data.len() + self.ends.len() * RECORD_OVERHEAD
    }

    /// The buffer as a batch to flush (its bytes shared, not copied, by
    /// the object body of an uncompressed delivery).
    fn freeze(self) -> Batch {
        Batch {
            data: Bytes::from(self.data),
            ends: self.ends,
            positions: self.positions,
            records: self.records,
            first_ms: self.first_ms,
            failures: self.failures,
            meta: self.meta,
            range: (0, 0),
        }
    }
}

/// A buffer being flushed.
#[derive(Debug)]
pub(crate) struct Batch {
    pub data: Bytes,
    pub ends: Vec<(i64, usize)>,
    pub positions: Vec<(u64, u32)>,
    pub records: u64,
    pub first_ms: i64,
    pub failures: Vec<(&'static str, Vec<u8>)>,
    pub meta: Vec<Bytes>,
    /// The log offsets the batch spans, `[start, end)`.
    pub range: (u64, u64),
}

/// A request record's JSON beyond its data: `{"recordId": "...",
/// "approximateArrivalTimestamp": ..., "data": ""}` with room for
/// `kinesisRecordMetadata`.
const LAMBDA_RECORD_JSON: usize = 384;

/// The memory one buffered record costs beyond its bytes (its entry in
/// `ends`, and what a flush builds per record), charged to the budget.
const RECORD_OVERHEAD: usize = 64;

/// Most records in one buffer: the size hint counts bytes, so a stream of
/// empty records would otherwise grow a buffer without end until its
/// interval ran out.
const MAX_BUFFER_RECORDS: u64 = 1_000_000;

/// Whether a buffer is due: it holds records and it reached the size hint
/// (or the next record would pass it), or the interval has run since its
/// first record arrived.
pub(crate) fn should_flush(
    buffered: usize,
    records: u64,
    size_limit: usize,
    next_would_overflow: bool,
    first_ms: i64,
    interval_ms: i64,
    now_ms: i64,
) -> bool {
    records > 0
        && (next_would_overflow || buffered >= size_limit || now_ms >= first_ms + interval_ms)
}

/// Hadoop's block compressor splits input into blocks of this size.
const HADOOP_BLOCK: usize = 256 * 1024;

/// The name of the one file inside a ZIP object: the object's own name
/// without its `.zip`, so unzipping many objects into one directory keeps
/// them apart.
pub(crate) fn zip_entry(key: &str) -> &str {
    let base = key.rsplit('/').next().unwrap_or(key);
    base.strip_suffix(".zip")
        .filter(|b| !b.is_empty())
        .unwrap_or(base)
}

/// The body of an object: the buffer as is, or compressed. `entry` names
/// the file inside a ZIP archive.
pub(crate) fn encode_body(
    data: &Bytes,
    compression: Compression,
    entry: &str,
) -> std::io::Result<Bytes> {
    match compression {
        Compression::None => Ok(data.clone()),
        Compression::Zip => {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::with_capacity(
                data.len() / 4 + 256,
            )));
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                // Buffers may pass 4 GiB only in theory (128 MiB cap), but
                // ZIP64 costs a few bytes and never fails a flush.
                .large_file(data.len() as u64 >= u32::MAX as u64);
            zip.start_file(entry, options)
                .map_err(std::io::Error::other)?;
            zip.write_all(data)?;
            let out = zip.finish().map_err(std::io::Error::other)?;
            Ok(Bytes::from(out.into_inner()))
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4 + 64),
                flate2::Compression::default(),
            );
            enc.write_all(data)?;
            Ok(Bytes::from(enc.finish()?))
        }
        Compression::Snappy => {
            let mut enc = snap::write::FrameEncoder::new(Vec::with_capacity(data.len() / 2 + 64));
            enc.write_all(data)?;
            enc.into_inner()
                .map(Bytes::from)
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
        Compression::HadoopSnappy => {
            // Hadoop's BlockCompressorStream: per block, the uncompressed
            // length, then the compressed chunk's length and bytes (all
            // lengths 4-byte big-endian).
            let mut out = Vec::with_capacity(data.len() / 2 + 64);
            let mut enc = snap::raw::Encoder::new();
            for block in data.chunks(HADOOP_BLOCK) {
                let compressed = enc.compress_vec(block).map_err(std::io::Error::other)?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(Bytes::from(out))
        }
    }
}

/// One record through the destination's processing pipeline (`Err`: it
/// goes to the error output).
fn process(
    name: &str,
    dest: &Destination,
    value: &[u8],
) -> Result<Vec<Vec<u8>>, crate::cwlogs::Failure> {
    if dest.processing.is_identity() {
        return Ok(vec![value.to_vec()]);
    }
    let mut out = Vec::new();
    if dest
        .processing
        .apply_checked(value, |r| out.push(r.to_vec()))?
    {
        warn!(stream = %name, bytes = value.len(), "record is not a run of JSON objects; delivered without de-aggregation");
    }
    Ok(out)
}

/// The stream a task delivers, while it should: same uid, not deleting.
pub(crate) fn current(inner: &Inner, name: &str, uid: u64) -> Option<Arc<Stream>> {
    let s = inner.streams.read().get(name).cloned()?;
    let status = s.rec.status_at(inner.now_ms())?;
    (s.rec.uid == uid && status != Status::Deleting).then_some(s)
}

/// Runs the delivery tasks (starting one for each stream that appears,
/// stopping those of streams that go, restarting any that ended) and
/// finishes delayed deletions. Dropping it aborts every task.
pub(crate) async fn supervise(inner: Arc<Inner>) {
    let mut set = JoinSet::new();
    let mut running: HashMap<u64, AbortHandle> = HashMap::new();
    loop {
        finish_deletions(&inner).await;
        let now = inner.now_ms();
        let live: HashMap<u64, String> = inner
            .streams
            .read()
            .values()
            .filter(|s| {
                matches!(
                    s.rec.status_at(now),
                    Some(Status::Active | Status::Creating)
                )
            })
            .map(|s| (s.rec.uid, s.rec.name.clone()))
            .collect();
        running.retain(|uid, h| {
            let keep = live.contains_key(uid) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for (uid, name) in live {
            running
                .entry(uid)
                .or_insert_with(|| set.spawn(stream_tasks(inner.clone(), name, uid)));
        }
        while set.try_join_next().is_some() {}
        tokio::select! {
            _ = inner.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// A stream's delivery loop, and its source's pump if it reads a Kinesis
/// stream: when either ends, both do, and the supervisor starts both anew.
async fn stream_tasks(inner: Arc<Inner>, name: String, uid: u64) {
    let sourced = current(&inner, &name, uid).is_some_and(|s| s.rec.kinesis_source.is_some());
    if sourced {
        tokio::select! {
            _ = deliver(inner.clone(), name.clone(), uid) => {}
            _ = crate::source::pump(inner, name, uid) => {}
        }
    } else {
        deliver(inner, name, uid).await;
    }
}

async fn finish_deletions(inner: &Arc<Inner>) {
    let now = inner.now_ms();
    let due: Vec<Arc<Stream>> = inner
        .streams
        .read()
        .values()
        .filter(|s| s.rec.status == Status::Deleting && s.rec.status_at(now).is_none())
        .cloned()
        .collect();
    for s in due {
        let _guard = inner.control.lock().await;
        if let Err(e) = inner.purge(&s).await {
            warn!(stream = %s.rec.name, error = %ripstream_api::Chain(&e), "could not finish deleting delivery stream");
        }
    }
}

/// Waits for new records in the partition, at most `wait`.
async fn wait_for_records(watch: &mut tokio::sync::watch::Receiver<u64>, wait: Duration) {
    let _ = tokio::time::timeout(wait, watch.changed()).await;
}

pub(crate) enum Flushed {
    Done,
    /// An object could not be stored; `done` of the batch's objects were.
    Failed {
        done: usize,
    },
    /// The stream is gone.
    Gone,
}

/// Most bytes one log read brings in (within the stream's share).
const READ_AHEAD: usize = 4 << 20;

/// A batch whose delivery failed. Its records are not held while the
/// destination is retried: they are re-read from the log (where they are
/// durable until delivered) for each attempt, so a failing destination
/// costs no memory between attempts.
struct Retry {
    /// The offset after the batch's last record.
    end: u64,
    /// How many of the batch's objects are stored already: skipped when the
    /// re-read batch is the same one (it reached `end`).
    done: usize,
    backoff: Duration,
}

/// One stream's delivery loop.
async fn deliver(inner: Arc<Inner>, name: String, uid: u64) {
    let start = {
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || inner.checkpoint(uid)).await
    };
    let mut next = match start {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            warn!(stream = %name, error = %ripstream_api::Chain(&e), "cannot read the delivery checkpoint; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        Err(e) => {
            warn!(stream = %name, error = %e, "cannot read the delivery checkpoint; retrying");
            return;
        }
    };
    next = crate::iceberg::resume(&inner, &name, uid, next).await;
    debug!(stream = %name, from = next, "delivery started");
    let mut buf = Buffer::default();
    // The buffer's share of the engine's memory budget: at least its bytes
    // while it holds records, given back whenever it is emptied.
    let mut held = Held::new(&inner.budget);
    // Where the buffer's first record is in the log: a failed batch is
    // re-read from there.
    let mut batch_start = next;
    // A Redshift load under way when delivery stopped: that very batch
    // first, so its staged file (and load manifest row) is the same one.
    let resume = {
        let i = inner.clone();
        tokio::task::spawn_blocking(move || crate::pending::resume(&i, uid, next))
            .await
            .ok()
            .flatten()
    };
    if let Some(end) = resume {
        info!(stream = %name, from = next, to = end, "reading again the batch under way before the restart");
    }
    let mut retry: Option<Retry> = resume.map(|end| Retry {
        end,
        done: 0,
        backoff: inner.cfg.retry_initial,
    });
    loop {
        let Some(s) = current(&inner, &name, uid) else {
            return;
        };
        let dest = match s.rec.endpoint.as_ref().map_or_else(
            || Destination::of(&s.rec.destination),
            |ep| crate::endpoints::engine_destination(&s.rec, ep),
        ) {
            Ok(d) => d,
            Err(e) => {
                warn!(stream = %name, error = %e, "unusable destination; waiting for an update");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let end = retry.as_ref().map(|r| r.end);
        // A stream source's record metadata goes to a function (its
        // kinesisRecordMetadata) and into conversion failures' error
        // records (their sequence numbers).
        let keep_meta = s.rec.kinesis_source.is_some()
            && (dest.processing.lambda.is_some() || dest.conversion.is_some());
        // Subscribed before reading, so records appended meanwhile wake us.
        let mut watch = s.part.watch();
        let mut overflow = false;
        // The budget had no room for the next record: it waits in the log
        // (`need`: the bytes it waits for).
        let mut starved = false;
        let mut need = 1;
        if end.is_some_and(|e| next >= e) {
            overflow = true;
        } else if buf.data.len() < dest.size_bytes {
            let want = (dest.size_bytes - buf.data.len()).min(READ_AHEAD);
            held.grow_up_to(want);
            let room = held.bytes().saturating_sub(buf.cost());
            if room == 0 {
                starved = true;
            } else {
                let (part, from) = (s.part.clone(), next);
                match tokio::task::spawn_blocking(move || part.read(from, 10_000, room)).await {
                    Ok(Ok(out)) => {
                        // Records before the first one read were trimmed
                        // (retention) before they could be delivered.
                        let first = out.records.first().map_or(out.next_offset, |r| r.offset);
                        if first > next {
                            warn!(stream = %name, lost = first - next, "records expired before they could be delivered");
                            next = first;
                        }
                        let read_nothing = out.records.is_empty();
                        for r in out.records {
                            if end.is_some_and(|e| r.offset >= e) {
                                break;
                            }
                            // Processed before buffering, so the size hint
                            // counts what is written (as AWS counts it).
                            let processed = match process(&name, &dest, &r.value) {
                                Ok(p) => p,
                                Err(f) => {
                                    if buf.is_empty() {
                                        batch_start = r.offset;
                                    }
                                    buf.push_failure(r.timestamp_ms, &f, &r.value, inner.now_ms());
                                    next = r.offset + 1;
                                    continue;
                                }
                            };
                            let len: usize = processed.iter().map(Vec::len).sum();
                            if !buf.is_empty()
                                && (buf.data.len() + len > dest.size_bytes
                                    || buf.records + processed.len() as u64 > MAX_BUFFER_RECORDS)
                            {
                                overflow = true;
                                break;
                            }
                            let cost = len + processed.len() * RECORD_OVERHEAD;
                            let fits = if buf.is_empty() {
                                held.ensure_first(cost)
                            } else {
                                held.ensure(buf.cost() + cost)
                            };
                            if !fits {
                                starved = true;
                                need = cost;
                                break;
                            }
                            if buf.is_empty() {
                                batch_start = r.offset;
                            }
                            if keep_meta {
                                buf.push_all_with(r.timestamp_ms, r.offset, processed, &r.key);
                            } else {
                                buf.push_all(r.timestamp_ms, r.offset, processed);
                            }
                            next = r.offset + 1;
                        }
                        if read_nothing && let Some(r) = retry.as_mut() {
                            // The rest of the failed batch is gone from the
                            // log: what was re-read is the batch now.
                            r.end = next;
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(stream = %name, error = %ripstream_api::Chain(&e), "cannot read the delivery stream's records; retrying");
                        held.shrink_to(buf.cost());
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => {
                        warn!(stream = %name, error = %e, "read task failed; retrying");
                        held.shrink_to(buf.cost());
                        continue;
                    }
                }
            }
            // Read-ahead room the records did not use goes back at once.
            held.shrink_to(buf.cost());
        } else {
            overflow = true;
        }
        if buf.is_empty() {
            if retry.as_ref().is_some_and(|r| next >= r.end) {
                // Every record of the failed batch expired meanwhile.
                retry = None;
            }
            if starved {
                // Other streams hold the budget; their flushes give it back.
                inner
                    .budget
                    .wait_for_room(need, Duration::from_secs(1))
                    .await;
            } else {
                wait_for_records(&mut watch, Duration::from_secs(1)).await;
            }
            continue;
        }
        let now = inner.now_ms();
        let due = match &retry {
            // A failed batch is flushed again once re-read whole (or as
            // much of it as the budget or, after an update, the buffer
            // size lets in: the rest of its range follows).
            Some(r) => next >= r.end || starved || overflow,
            None => {
                starved
                    || should_flush(
                        buf.data.len(),
                        buf.entries(),
                        dest.size_bytes,
                        overflow,
                        buf.first_ms,
                        dest.interval_ms,
                        now,
                    )
            }
        };
        if !due {
            if next < s.part.end_offset() {
                continue;
            }
            let left = (buf.first_ms + dest.interval_ms - now).clamp(1, 1000);
            wait_for_records(&mut watch, Duration::from_millis(left as u64)).await;
            continue;
        }
        if starved {
            debug!(stream = %name, bytes = buf.data.len(), used = inner.budget.used(), limit = inner.budget.limit(), "buffer memory budget spent; flushing early");
        }
        // Skipping stored objects is right only for the very same batch.
        let skip = match &retry {
            Some(r) if next == r.end => r.done,
            _ => 0,
        };
        let mut batch = std::mem::take(&mut buf).freeze();
        batch.range = (batch_start, next);
        let flushed = flush(&inner, &s, &dest, &batch, skip).await;
        drop(batch);
        held.shrink_to(0);
        match flushed {
            Flushed::Done => {}
            Flushed::Gone => return,
            Flushed::Failed { done } => {
                let mut r = retry.take().unwrap_or(Retry {
                    end: next,
                    done: 0,
                    backoff: inner.cfg.retry_initial,
                });
                if next != r.end {
                    // A shorter batch than the failed one: its objects are
                    // not the ones counted.
                    r.done = 0;
                    r.end = next;
                }
                r.done = r.done.max(done);
                tokio::time::sleep(r.backoff).await;
                r.backoff = (r.backoff * 2).min(inner.cfg.retry_max);
                match current(&inner, &name, uid) {
                    None => return,
                    Some(now) if now.rec.version != s.rec.version => {
                        // A new destination: the same batch, but none of
                        // its objects are the new destination's. (Tables
                        // that committed it recognize it by its range.)
                        r.done = 0;
                        retry = Some(r);
                    }
                    Some(_) => retry = Some(r),
                }
                next = batch_start;
                continue;
            }
        }
        if !save_checkpoint(&inner, &name, uid, next).await {
            return;
        }
        // A failed batch flushed in parts (the budget let in only some of
        // it): the next batch ends where it did, so a destination that
        // took the whole batch before (an Iceberg table, by its range)
        // still recognizes the rest.
        retry = retry.filter(|r| next < r.end).map(|r| Retry {
            end: r.end,
            done: 0,
            backoff: inner.cfg.retry_initial,
        });
        batch_start = next;
    }
}

/// What a flush writes: the records to deliver (processed), and the error
/// output of those that failed processing.
pub(crate) struct Output {
    pub(crate) data: Bytes,
    pub(crate) records: u64,
    pub(crate) errors: Vec<u8>,
    /// Dynamic partitioning and push destinations: the function's records
    /// one by one (with their partition keys) instead of `data`.
    pub(crate) recs: Vec<crate::partition::Rec>,
}

/// The key of an error output object: ErrorOutputPrefix with
/// `!{firehose:error-output-type}`, or (no expressions in it) followed by
/// `processing-failed/YYYY/MM/dd/HH/` as AWS lays it out.
pub(crate) fn error_key(dest: &Destination, first_ms: i64, name: &str, version: u64) -> String {
    error_key_for(dest, first_ms, name, version, "processing-failed")
}

/// [`error_key`] for an error-output type (`format-conversion-failed`...).
pub(crate) fn error_key_for(
    dest: &Destination,
    first_ms: i64,
    name: &str,
    version: u64,
    error_type: &str,
) -> String {
    error_key_under(
        &dest.error_prefix,
        dest,
        first_ms,
        name,
        version,
        error_type,
        &mut rand::rng(),
    )
}

/// The error output key under `template` (the destination's error prefix,
/// or none: see the defaulted prefix's escape hatch in `flush`).
pub(crate) fn error_key_under(
    template: &prefix::Template,
    dest: &Destination,
    first_ms: i64,
    name: &str,
    version: u64,
    error_type: &str,
    rng: &mut impl rand::Rng,
) -> String {
    let r = prefix::Render {
        zone: dest.zone.as_ref(),
        ..prefix::Render::utc(first_ms, Some(error_type))
    };
    if template.has_expressions() {
        return prefix::object_key_with(template, &r, name, version, &dest.error_extension, rng);
    }
    let mut key = template.render_with(&r, rng);
    key.push_str(error_type);
    key.push('/');
    let empty = prefix::Template::parse("").unwrap_or_else(|_| template.clone());
    key.push_str(&prefix::object_key_with(
        &empty,
        &prefix::Render {
            error_type: None,
            ..r
        },
        name,
        version,
        &dest.error_extension,
        rng,
    ));
    key
}

/// Runs the buffer's records through the Lambda processor, batch by batch,
/// then the delimiter. `None`: the stream went away meanwhile.
/// `one_by_one`: the records are kept apart in `recs`, each finished
/// (AppendDelimiterToRecord), for a destination that sends records one by
/// one (push destinations).
pub(crate) async fn transform(
    inner: &Arc<Inner>,
    s: &Stream,
    dest: &Destination,
    l: &crate::processing::LambdaProcessor,
    buf: &Batch,
    one_by_one: bool,
) -> Option<Output> {
    use crate::lambda::{self, InRecord, Outcome};
    let name = &s.rec.name;
    let mut out = Output {
        data: Bytes::new(),
        records: 0,
        errors: Vec::new(),
        recs: Vec::new(),
    };
    let mut delivered = Vec::new();
    let Some(function) = inner.cfg.functions.get(&l.function) else {
        // Refused at create; a server restarted without it fails the records.
        warn!(stream = %name, function = %l.function, "the Lambda processor's function is not configured; records go to the error output");
        return Some(fail_all(
            buf,
            0,
            "Lambda.FunctionNotFound",
            &format!(
                "The function {} is not configured on this server.",
                l.function
            ),
            &l.arn,
            inner.now_ms(),
            out,
        ));
    };
    let arn = inner.stream_arn(name);
    let mut start = 0;
    let mut i = 0;
    while i < buf.ends.len() {
        // One batch: records up to the processor's batch size (at least one).
        let mut batch = Vec::new();
        let first = i;
        let mut bytes = 0;
        let mut request_bytes = 0;
        while i < buf.ends.len() {
            let (arrival, end) = buf.ends[i];
            let len = end - start;
            // The request as sent: base64 data plus each record's JSON, so
            // many tiny records cannot make one invocation past Lambda's
            // payload limit.
            let sent = len.div_ceil(3) * 4 + LAMBDA_RECORD_JSON;
            if !batch.is_empty()
                && (bytes + len > l.batch_bytes
                    || request_bytes + sent > crate::lambda::PAYLOAD_LIMIT - 1024)
            {
                break;
            }
            request_bytes += sent;
            batch.push(InRecord {
                arrival_ms: arrival,
                data: buf.data[start..end].to_vec(),
                metadata: buf
                    .meta
                    .get(i)
                    .and_then(|k| crate::source::RecordMetadata::of_key(k)),
            });
            bytes += len;
            start = end;
            i += 1;
        }
        let invocation = uuid::Uuid::new_v4().to_string();
        let source_arn = s.rec.kinesis_source.as_ref().map(|k| k.stream_arn.as_str());
        let body = serde_json::to_vec(&lambda::request(
            &invocation,
            &arn,
            source_arn,
            &inner.region,
            &batch,
        ))
        .unwrap_or_default();
        let mut attempts = 0;
        let mut backoff = inner.cfg.retry_initial;
        let outcomes = loop {
            attempts += 1;
            let r = match lambda::invoke(function, &body).await {
                Ok(resp) => lambda::parse_response_with_keys(&resp, batch.len()),
                Err(e) => Err(e),
            };
            match r {
                Ok(o) => break Ok(o),
                Err(e) if attempts > l.retries => break Err(e),
                Err(e) => {
                    warn!(stream = %name, function = %l.function, code = e.code, error = %e.message, attempt = attempts, "transformation failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(inner.cfg.retry_max);
                    current(inner, name, s.rec.uid)?;
                }
            }
        };
        let ending = inner.now_ms();
        match outcomes {
            Ok(outcomes) => {
                for (j, (rec, (o, keys))) in batch.iter().zip(outcomes).enumerate() {
                    match o {
                        Outcome::Ok(d) if one_by_one => {
                            let mut finished = Vec::with_capacity(d.len() + 1);
                            dest.processing.finish(&d, &mut finished);
                            out.recs.push(crate::partition::Rec {
                                arrival_ms: rec.arrival_ms,
                                data: Bytes::from(finished),
                                lambda_keys: keys,
                                source: first + j,
                            });
                            out.records += 1;
                        }
                        Outcome::Ok(d) if dest.partitioned => {
                            out.recs.push(crate::partition::Rec {
                                arrival_ms: rec.arrival_ms,
                                data: Bytes::from(d),
                                lambda_keys: keys,
                                source: first + j,
                            });
                            out.records += 1;
                        }
                        Outcome::Ok(d) => {
                            dest.processing.finish(&d, &mut delivered);
                            out.records += 1;
                        }
                        Outcome::Dropped => {}
                        Outcome::Failed(code, msg) => out.errors.extend(lambda::error_line(
                            attempts,
                            rec.arrival_ms,
                            &code,
                            &msg,
                            ending,
                            &rec.data,
                            &l.arn,
                        )),
                    }
                }
            }
            Err(e) => {
                warn!(stream = %name, function = %l.function, code = e.code, error = %e.message, records = batch.len(), "transformation failed after its retries; records go to the error output");
                for rec in &batch {
                    out.errors.extend(lambda::error_line(
                        attempts,
                        rec.arrival_ms,
                        e.code,
                        &e.message,
                        ending,
                        &rec.data,
                        &l.arn,
                    ));
                }
            }
        }
    }
    out.data = Bytes::from(delivered);
    Some(out)
}

/// Every record of the buffer to the error output with one error.
fn fail_all(
    buf: &Batch,
    attempts: u32,
    code: &str,
    msg: &str,
    arn: &str,
    now: i64,
    mut out: Output,
) -> Output {
    out.errors.extend(fail_lines(
        &buf.data, &buf.ends, attempts, code, msg, arn, now,
    ));
    out
}

/// The error output of records (`data`, each ending where `ends` says).
fn fail_lines(
    data: &[u8],
    ends: &[(i64, usize)],
    attempts: u32,
    code: &str,
    msg: &str,
    arn: &str,
    now: i64,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &(arrival, end) in ends {
        if let Some(raw) = data.get(start..end) {
            out.extend(crate::lambda::error_line(
                attempts, arrival, code, msg, now, raw, arn,
            ));
        }
        start = end;
    }
    out
}

/// What one object of a flush holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The batch's records (or one partition's), processed.
    Data,
    /// The error output of the records that failed processing.
    ProcessingErrors,
    /// The error output of the whole batch (or partition), whose own keys
    /// the store refused.
    Undeliverable,
    /// The error output of records of another type (format conversion,
    /// decompression, partitioning), named by it.
    TypedErrors(&'static str),
    /// The batch's source records (before a Lambda processor and
    /// conversion), to the S3 backup destination (S3BackupMode Enabled).
    Backup,
}

/// One object of a flush, with what names it.
struct Obj {
    data: Bytes,
    kind: Kind,
    /// The arrival of its oldest record (of the batch's, for error output).
    first_ms: i64,
    /// Its partition's keys (dynamic partitioning).
    keys: Option<prefix::PartitionKeys>,
    /// Records in a data object.
    records: u64,
    /// A data object's records as delivered (and where each ends): its
    /// error output should its keys be refused. `None`: the batch's.
    source: Option<(Bytes, Vec<(i64, usize)>)>,
}

impl Obj {
    fn errors(data: Vec<u8>, kind: Kind, first_ms: i64) -> Obj {
        Obj {
            data: Bytes::from(data),
            kind,
            first_ms,
            keys: None,
            records: 0,
            source: None,
        }
    }
}

/// The records of a flush one by one, for partitioning: the function's
/// output, or the batch's records.
fn partition_input(buf: &Batch, out: &mut Output, lambda: bool) -> Vec<crate::partition::Rec> {
    if lambda {
        return std::mem::take(&mut out.recs);
    }
    let mut recs = Vec::with_capacity(buf.ends.len());
    let mut start = 0;
    for (i, &(arrival, end)) in buf.ends.iter().enumerate() {
        if start <= end && end <= buf.data.len() {
            recs.push(crate::partition::Rec {
                arrival_ms: arrival,
                data: buf.data.slice(start..end),
                lambda_keys: None,
                source: i,
            });
        }
        start = end;
    }
    recs
}

/// Writes the batch as its objects: one (or, with dynamic partitioning, one
/// per partition) of the records, and the error output of what failed,
/// skipping the first `skip` objects (stored by an earlier attempt at the
/// same batch). A key the store refuses is not retried as is: the object
/// gets a fresh key once (the refusal may be of the key's last segment
/// alone), then its records go to the error output (its prefix is in the
/// way). Any other failure answers `Failed`: the caller drops the batch and
/// re-reads it from the log to retry. The caller checkpoints only after
/// `Done`, when every object of the batch is stored.
async fn flush(
    inner: &Arc<Inner>,
    s: &Stream,
    dest: &Destination,
    buf: &Batch,
    skip: usize,
) -> Flushed {
    if let Some(ep) = &s.rec.endpoint {
        return crate::endpoints::flush(inner, s, dest, ep, buf, skip).await;
    }
    let name = &s.rec.name;
    let mut out = match &dest.processing.lambda {
        None => Output {
            data: buf.data.clone(),
            records: buf.records,
            errors: Vec::new(),
            recs: Vec::new(),
        },
        // A function's records one by one for Iceberg: each may carry
        // its own otfMetadata.
        Some(l) => match transform(inner, s, dest, l, buf, dest.iceberg.is_some()).await {
            Some(o) => o,
            None => return Flushed::Gone,
        },
    };
    if let Some(t) = &dest.iceberg {
        // Records Decompression or CloudWatchLogProcessing could not read
        // join the processing errors, as for Redshift.
        let mut errors = std::mem::take(&mut out.errors);
        for (_, lines) in &buf.failures {
            errors.extend_from_slice(lines);
        }
        let (data, ends, keys) = if dest.processing.lambda.is_some() {
            let mut data = Vec::new();
            let mut ends = Vec::with_capacity(out.recs.len());
            let mut keys = Vec::with_capacity(out.recs.len());
            for r in std::mem::take(&mut out.recs) {
                data.extend_from_slice(&r.data);
                ends.push((r.arrival_ms, data.len()));
                keys.push(r.lambda_keys);
            }
            (Bytes::from(data), ends, keys)
        } else {
            (out.data, buf.ends.clone(), Vec::new())
        };
        return crate::iceberg::flush(inner, s, dest, t, buf, data, &ends, &keys, errors, skip)
            .await;
    }
    if s.rec.redshift.is_some() {
        let staged = crate::redshift::Staged {
            data: out.data,
            records: out.records,
            ends: dest.processing.lambda.is_none().then_some(&buf.ends[..]),
            first_ms: buf.first_ms,
            range: buf.range,
            // Records Decompression or CloudWatchLogProcessing could not
            // read join the processing errors (one error output here).
            processing_errors: {
                let mut e = out.errors;
                for (_, lines) in &buf.failures {
                    e.extend_from_slice(lines);
                }
                e
            },
            source: buf.data.clone(),
        };
        return match crate::redshift::deliver(inner, s, dest, staged).await {
            crate::redshift::Loaded::Done => Flushed::Done,
            crate::redshift::Loaded::Retry => Flushed::Failed { done: 0 },
        };
    }
    let now = inner.now_ms();
    let schemas = inner.schemas.as_deref();
    let mut objects: Vec<Obj> = Vec::new();
    if dest.partitioned {
        let recs = partition_input(buf, &mut out, dest.processing.lambda.is_some());
        let (prefix_t, pipeline, zone) = (
            dest.prefix.clone(),
            dest.processing.clone(),
            dest.zone.clone(),
        );
        let limit = inner.cfg.active_partition_limit;
        // JQ runs over every record: off the async workers.
        let split = match tokio::task::spawn_blocking(move || {
            crate::partition::split(recs, &prefix_t, &pipeline, zone.as_ref(), limit, now)
        })
        .await
        {
            Ok(split) => split,
            Err(e) => {
                warn!(stream = %name, error = %e, "the partitioning task failed; retrying");
                return Flushed::Failed { done: skip };
            }
        };
        if !split.errors.is_empty() {
            warn!(stream = %name, bytes = split.errors.len(), "records could not be partitioned; they go to the error output");
        }
        let mut conversion_errors = Vec::new();
        for part in split.parts {
            let source = Bytes::from(part.data);
            let records = part.ends.len() as u64;
            let (data, records) = match &dest.conversion {
                None => (source.clone(), records),
                Some(c) => {
                    let input = crate::conversion::FlushData {
                        data: source.clone(),
                        ends: Some(part.ends.clone()),
                        first_ms: part.first_ms,
                        meta: Vec::new(),
                    };
                    match crate::conversion::convert(
                        schemas,
                        c,
                        input,
                        &inner.account,
                        &inner.region,
                        now,
                    )
                    .await
                    {
                        Ok(conv) => {
                            conversion_errors.extend(conv.errors);
                            (Bytes::from(conv.body), conv.rows)
                        }
                        Err(e) => {
                            inner.metrics.failed(name);
                            warn!(stream = %name, database = %c.table.database, table = %c.table.table, code = e.code(), error = %e, "cannot read the conversion schema; retrying");
                            return Flushed::Failed { done: skip };
                        }
                    }
                }
            };
            if !data.is_empty() {
                objects.push(Obj {
                    data,
                    kind: Kind::Data,
                    first_ms: part.first_ms,
                    keys: Some(part.keys),
                    records,
                    source: Some((source, part.ends)),
                });
            }
        }
        for (data, kind) in [
            (std::mem::take(&mut out.errors), Kind::ProcessingErrors),
            (
                conversion_errors,
                Kind::TypedErrors(crate::conversion::ERROR_OUTPUT_TYPE),
            ),
            (
                split.errors,
                Kind::TypedErrors(crate::partition::ERROR_OUTPUT_TYPE),
            ),
        ] {
            if !data.is_empty() {
                objects.push(Obj::errors(data, kind, buf.first_ms));
            }
        }
    } else {
        // Record format conversion: the records become one Parquet file,
        // and those that do not convert a `format-conversion-failed` object.
        let mut conversion_errors = Vec::new();
        if let Some(c) = &dest.conversion {
            let input = crate::conversion::FlushData {
                data: out.data.clone(),
                ends: dest.processing.lambda.is_none().then(|| buf.ends.clone()),
                first_ms: buf.first_ms,
                meta: if dest.processing.lambda.is_none() {
                    buf.meta.clone()
                } else {
                    Vec::new()
                },
            };
            match crate::conversion::convert(schemas, c, input, &inner.account, &inner.region, now)
                .await
            {
                Ok(conv) => {
                    out.data = Bytes::from(conv.body);
                    out.records = conv.rows;
                    conversion_errors = conv.errors;
                }
                Err(e) => {
                    // Retried with backoff: the records wait in the log
                    // until the table can be read.
                    inner.metrics.failed(name);
                    warn!(stream = %name, database = %c.table.database, table = %c.table.table, code = e.code(), error = %e, "cannot read the conversion schema; retrying");
                    return Flushed::Failed { done: skip };
                }
            }
        }
        if !out.data.is_empty() {
            objects.push(Obj {
                data: out.data.clone(),
                kind: Kind::Data,
                first_ms: buf.first_ms,
                keys: None,
                records: out.records,
                source: None,
            });
        }
        for (data, kind) in [
            (std::mem::take(&mut out.errors), Kind::ProcessingErrors),
            (
                conversion_errors,
                Kind::TypedErrors(crate::conversion::ERROR_OUTPUT_TYPE),
            ),
        ] {
            if !data.is_empty() {
                objects.push(Obj::errors(data, kind, buf.first_ms));
            }
        }
    }
    // What processing could not read (Decompression, CloudWatch Logs).
    for (ty, lines) in &buf.failures {
        let kind = if *ty == "processing-failed" {
            Kind::ProcessingErrors
        } else {
            Kind::TypedErrors(ty)
        };
        objects.push(Obj::errors(lines.clone(), kind, buf.first_ms));
    }
    // Source record backup: last, so the objects before it keep their
    // places when a flush is retried.
    if dest.backup.is_some() && !buf.data.is_empty() {
        objects.push(Obj {
            data: buf.data.clone(),
            kind: Kind::Backup,
            first_ms: buf.first_ms,
            keys: None,
            records: buf.records,
            source: None,
        });
    }
    // Where each kind goes: the backup to its own bucket, in its own
    // compression.
    // Error output is encrypted as the destination's data is.
    let target = |kind: Kind| match (kind, dest.backup.as_deref()) {
        (Kind::Backup, Some(b)) => (b.bucket.as_str(), b.compression, b.kms_key.as_deref()),
        _ => (
            dest.bucket.as_str(),
            dest.compression,
            dest.kms_key.as_deref(),
        ),
    };
    let key_for = |o: &Obj, kind: Kind, rng: &mut rand::rngs::StdRng| match kind {
        Kind::Data => prefix::object_key_with(
            &dest.prefix,
            &prefix::Render {
                zone: dest.zone.as_ref(),
                keys: o.keys.as_ref(),
                ..prefix::Render::utc(o.first_ms, None)
            },
            name,
            s.rec.version,
            &dest.extension,
            rng,
        ),
        Kind::ProcessingErrors | Kind::Undeliverable => error_key_under(
            &dest.error_prefix,
            dest,
            o.first_ms,
            name,
            s.rec.version,
            "processing-failed",
            rng,
        ),
        Kind::TypedErrors(ty) => error_key_under(
            &dest.error_prefix,
            dest,
            o.first_ms,
            name,
            s.rec.version,
            ty,
            rng,
        ),
        Kind::Backup => {
            let b = dest.backup.as_deref().unwrap_or(dest);
            prefix::object_key_with(
                &b.prefix,
                &prefix::Render {
                    zone: dest.zone.as_ref(),
                    ..prefix::Render::utc(o.first_ms, None)
                },
                name,
                s.rec.version,
                &b.extension,
                rng,
            )
        }
    };
    // A function may answer a retry differently from the attempt that
    // stored the first objects (other records fail, other partition keys),
    // so a position names nothing stable then: every object is written
    // again (at least once, never a record lost).
    let skip = if dest.processing.lambda.is_some() {
        0
    } else {
        skip
    };
    let bare_prefix = prefix::Template::parse("").unwrap_or_else(|_| dest.error_prefix.clone());
    for (i, o) in objects.into_iter().enumerate().skip(skip) {
        // Keys drawn from the batch's place in the log and the object's in
        // the batch: a retry (or a restart re-reading the batch) writes
        // over what an earlier attempt stored instead of beside it, so a
        // function's batch that keeps failing further on does not pile up
        // copies.
        let mut rng = object_rng(s.rec.uid, buf.range.0, i);
        let mut kind = o.kind;
        let mut key = key_for(&o, kind, &mut rng);
        let (bucket, compression, kms_key) = target(kind);
        let mut body = match encode_body(&o.data, compression, zip_entry(&key)) {
            Ok(b) => b,
            Err(e) => {
                warn!(stream = %name, error = %e, "cannot compress the buffer");
                return Flushed::Failed { done: i };
            }
        };
        let data_len = o.data.len() as u64;
        let mut refused = false;
        let mut bare = false;
        loop {
            match inner.sink.put_as(bucket, &key, body.clone(), kms_key).await {
                Ok(()) => {
                    match kind {
                        Kind::Backup => {
                            info!(stream = %name, bucket = %bucket, key = %key, records = o.records, "backed up the source records")
                        }
                        Kind::Data => {
                            inner.metrics.delivered(name, o.records, data_len);
                            info!(stream = %name, bucket = %dest.bucket, key = %key, records = o.records, bytes = body.len(), "delivered");
                        }
                        Kind::ProcessingErrors => {
                            info!(stream = %name, bucket = %dest.bucket, key = %key, bytes = body.len(), "wrote the processing error output")
                        }
                        Kind::Undeliverable => {
                            warn!(stream = %name, bucket = %dest.bucket, key = %key, records = o.records, "wrote the records whose keys were refused to the error output")
                        }
                        Kind::TypedErrors(ty) => {
                            warn!(stream = %name, bucket = %dest.bucket, key = %key, bytes = body.len(), error_type = ty, "wrote records that failed to the error output")
                        }
                    }
                    break;
                }
                Err(e @ SinkError::InvalidKey { .. }) if !refused => {
                    // The same key would be refused forever; a fresh one
                    // differs in its last segment.
                    warn!(stream = %name, bucket = %dest.bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "the object store refused the key; trying a fresh one");
                    refused = true;
                    key = key_for(&o, kind, &mut rng);
                }
                Err(e @ SinkError::InvalidKey { .. })
                    if kind != Kind::Data
                        && kind != Kind::Backup
                        && dest.error_prefix_defaulted
                        && !bare =>
                {
                    // The error prefix defaulted to Prefix, whose keys the
                    // store refuses too (an object in the way of a folder):
                    // without a way out the records would wait forever, so
                    // they go under no prefix, their error type first.
                    let ty = match kind {
                        Kind::TypedErrors(ty) => ty,
                        _ => "processing-failed",
                    };
                    warn!(stream = %name, bucket = %dest.bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "the object store refuses the error output's keys under Prefix; writing them under the bucket's root");
                    bare = true;
                    key = error_key_under(
                        &bare_prefix,
                        dest,
                        o.first_ms,
                        name,
                        s.rec.version,
                        ty,
                        &mut rng,
                    );
                }
                Err(e @ SinkError::InvalidKey { .. }) if kind == Kind::Data => {
                    inner.metrics.failed(name);
                    warn!(stream = %name, bucket = %dest.bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), records = o.records, "the object store refuses the delivery prefix's keys; the records go to the error output");
                    let arn = dest
                        .processing
                        .lambda
                        .as_ref()
                        .map_or("", |l| l.arn.as_str());
                    let (data, ends) = match &o.source {
                        Some((d, e)) => (&d[..], &e[..]),
                        None => (&buf.data[..], &buf.ends[..]),
                    };
                    let lines =
                        fail_lines(data, ends, 1, e.code(), &e.to_string(), arn, inner.now_ms());
                    kind = Kind::Undeliverable;
                    key = key_for(&o, kind, &mut rng);
                    body = match encode_body(&Bytes::from(lines), dest.compression, zip_entry(&key))
                    {
                        Ok(b) => b,
                        Err(e) => {
                            warn!(stream = %name, error = %e, "cannot compress the error output");
                            return Flushed::Failed { done: i };
                        }
                    };
                    refused = false;
                }
                Err(e) => {
                    // Retried with backoff by the caller; an error output
                    // whose keys are refused too waits for an operator to
                    // move what is in the way, within the log's retention.
                    inner.metrics.failed(name);
                    warn!(stream = %name, bucket = %bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "delivery to S3 failed; retrying");
                    return Flushed::Failed { done: i };
                }
            }
        }
    }
    Flushed::Done
}

/// The random source of one object's key: the same for the same object
/// of the same batch (see `flush`).
fn object_rng(uid: u64, batch_start: u64, index: usize) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (uid, batch_start, index).hash(&mut h);
    rand::rngs::StdRng::seed_from_u64(h.finish())
}

/// Stores the checkpoint, retrying until it is durable or the stream goes
/// (`false`).
async fn save_checkpoint(inner: &Arc<Inner>, name: &str, uid: u64, next: u64) -> bool {
    let mut backoff = inner.cfg.retry_initial;
    loop {
        let i = inner.clone();
        match tokio::task::spawn_blocking(move || i.save_checkpoint(uid, next)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => {
                warn!(stream = %name, error = %ripstream_api::Chain(&e), "cannot store the delivery checkpoint; retrying")
            }
            Err(e) => warn!(stream = %name, error = %e, "checkpoint task failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.cfg.retry_max);
        if current(inner, name, uid).is_none() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn buffering_decisions() {
        let mb = 1 << 20;
        // Nothing buffered: never.
        assert!(!should_flush(0, 0, mb, true, 0, 0, 10));
        // Size reached.
        assert!(should_flush(mb, 3, mb, false, 1000, 60_000, 1001));
        // The next record would not fit.
        assert!(should_flush(10, 1, mb, true, 1000, 60_000, 1001));
        // Interval elapsed since the first record.
        assert!(!should_flush(10, 1, mb, false, 1000, 60_000, 60_999));
        assert!(should_flush(10, 1, mb, false, 1000, 60_000, 61_000));
        // Zero interval: at once.
        assert!(should_flush(10, 1, mb, false, 1000, 0, 1000));
    }

    #[test]
    fn bodies_are_raw_gzip_zip_or_snappy() {
        let raw = b"{\"a\":1}{\"a\":2}";
        let raw = &Bytes::from_static(raw);
        assert_eq!(&encode_body(raw, Compression::None, "x").unwrap(), raw);
        let gz = encode_body(raw, Compression::Gzip, "x").unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(&out[..], &raw[..]);
        let sn = encode_body(raw, Compression::Snappy, "x").unwrap();
        let mut out = Vec::new();
        snap::read::FrameDecoder::new(&sn[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(&out[..], &raw[..]);
        // Hadoop blocks: two of them for a body past one block.
        let big: Vec<u8> = (0..HADOOP_BLOCK + 10).map(|i| (i % 251) as u8).collect();
        let h = encode_body(&Bytes::from(big.clone()), Compression::HadoopSnappy, "x").unwrap();
        let (mut at, mut out, mut blocks) = (0, Vec::new(), 0);
        while at < h.len() {
            let n = u32::from_be_bytes(h[at..at + 4].try_into().unwrap()) as usize;
            let c = u32::from_be_bytes(h[at + 4..at + 8].try_into().unwrap()) as usize;
            let block = snap::raw::Decoder::new()
                .decompress_vec(&h[at + 8..at + 8 + c])
                .unwrap();
            assert_eq!(block.len(), n);
            out.extend(block);
            at += 8 + c;
            blocks += 1;
        }
        assert_eq!((out, blocks), (big, 2));
        let key = "2026/12/04/18/s-1-2026-12-04-18-00-00-u.zip";
        assert_eq!(zip_entry(key), "s-1-2026-12-04-18-00-00-u");
        assert_eq!(zip_entry("a/.zip"), ".zip");
        let z = encode_body(raw, Compression::Zip, zip_entry(key)).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&z[..])).unwrap();
        assert_eq!(archive.len(), 1);
        let mut file = archive.by_index(0).unwrap();
        assert_eq!(file.name().unwrap(), "s-1-2026-12-04-18-00-00-u");
        let mut out = Vec::new();
        file.read_to_end(&mut out).unwrap();
        assert_eq!(&out[..], &raw[..]);
        let mut b = Buffer::default();
        b.push(5, b"x");
        b.push(9, b"yz");
        assert_eq!((b.first_ms, b.records, &b.data[..]), (5, 2, &b"xyz"[..]));
    }
}
