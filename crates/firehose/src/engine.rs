//! The delivery engine: one task per delivery stream, run by a supervisor
//! that [`crate::Firehose::background`] returns.
//!
//! A task reads its stream's partition from the durable checkpoint, fills a
//! buffer until BufferingHints say to flush (SizeInMBs reached, or
//! IntervalInSeconds elapsed since the first buffered record arrived), and
//! writes the buffer as one object. Only after the sink reports the object
//! durable does the checkpoint advance, so a crash at any point redelivers
//! at most the last buffer (at least once, never lost). A failing
//! destination is retried with backoff while the records wait in the log:
//! at most one buffer is ever in memory.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::record::{Compression, Destination, Status};
use crate::{Inner, Stream, prefix};

/// The records of one flush, concatenated raw as Firehose writes them to S3.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    pub data: Vec<u8>,
    /// Per record: its arrival time and where it ends in `data` (what a
    /// Lambda processor needs to send records one by one).
    pub ends: Vec<(i64, usize)>,
    pub records: u64,
    /// Arrival (log append) time of the first record.
    pub first_ms: i64,
}

impl Buffer {
    fn push(&mut self, arrival_ms: i64, value: &[u8]) {
        if self.records == 0 {
            self.first_ms = arrival_ms;
        }
        self.data.extend_from_slice(value);
        self.ends.push((arrival_ms, self.data.len()));
        self.records += 1;
    }

    /// The records one source record became (none: the arrival time of
    /// an empty result does not start the buffer).
    fn push_all(&mut self, arrival_ms: i64, values: Vec<Vec<u8>>) {
        for v in values {
            self.push(arrival_ms, &v);
        }
    }

    fn is_empty(&self) -> bool {
        self.records == 0
    }
}

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

/// The body of an object: the buffer as is, or compressed.
pub(crate) fn encode_body(data: &[u8], compression: Compression) -> std::io::Result<Bytes> {
    match compression {
        Compression::None => Ok(Bytes::copy_from_slice(data)),
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

/// One record through the destination's processing pipeline.
fn process(name: &str, dest: &Destination, value: &[u8]) -> Vec<Vec<u8>> {
    if dest.processing.is_identity() {
        return vec![value.to_vec()];
    }
    let mut out = Vec::new();
    if dest.processing.apply(value, |r| out.push(r.to_vec())) {
        warn!(stream = %name, bytes = value.len(), "record is not a run of JSON objects; delivered without de-aggregation");
    }
    out
}

/// The stream a task delivers, while it should: same uid, not deleting.
fn current(inner: &Inner, name: &str, uid: u64) -> Option<Arc<Stream>> {
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
                .or_insert_with(|| set.spawn(deliver(inner.clone(), name, uid)));
        }
        while set.try_join_next().is_some() {}
        tokio::select! {
            _ = inner.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
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

enum Flushed {
    Done,
    /// The destination changed while retrying: flush again with it.
    Reconfigured,
    /// The stream is gone.
    Gone,
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
    debug!(stream = %name, from = next, "delivery started");
    let mut buf = Buffer::default();
    loop {
        let Some(s) = current(&inner, &name, uid) else {
            return;
        };
        let dest = match Destination::of(&s.rec.destination) {
            Ok(d) => d,
            Err(e) => {
                warn!(stream = %name, error = %e, "unusable destination; waiting for an update");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Subscribed before reading, so records appended meanwhile wake us.
        let mut watch = s.part.watch();
        let mut overflow = false;
        if buf.data.len() < dest.size_bytes {
            let room = (dest.size_bytes - buf.data.len()).min(4 << 20);
            let (part, from) = (s.part.clone(), next);
            match tokio::task::spawn_blocking(move || part.read(from, 10_000, room)).await {
                Ok(Ok(out)) => {
                    let empty = out.records.is_empty();
                    for r in out.records {
                        // Processed before buffering, so the size hint
                        // counts what is written (as AWS counts it).
                        let processed = process(&name, &dest, &r.value);
                        let len: usize = processed.iter().map(Vec::len).sum();
                        if !buf.is_empty() && buf.data.len() + len > dest.size_bytes {
                            overflow = true;
                            break;
                        }
                        buf.push_all(r.timestamp_ms, processed);
                        next = r.offset + 1;
                    }
                    if empty && out.next_offset > next {
                        // Records past retention were trimmed before delivery.
                        warn!(stream = %name, lost = out.next_offset - next, "records expired before they could be delivered");
                        next = out.next_offset;
                    }
                }
                Ok(Err(e)) => {
                    warn!(stream = %name, error = %ripstream_api::Chain(&e), "cannot read the delivery stream's records; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    warn!(stream = %name, error = %e, "read task failed; retrying");
                    continue;
                }
            }
        } else {
            overflow = true;
        }
        if buf.is_empty() {
            wait_for_records(&mut watch, Duration::from_secs(1)).await;
            continue;
        }
        let now = inner.now_ms();
        if !should_flush(
            buf.data.len(),
            buf.records,
            dest.size_bytes,
            overflow,
            buf.first_ms,
            dest.interval_ms,
            now,
        ) {
            if next < s.part.end_offset() {
                continue;
            }
            let left = (buf.first_ms + dest.interval_ms - now).clamp(1, 1000);
            wait_for_records(&mut watch, Duration::from_millis(left as u64)).await;
            continue;
        }
        match flush(&inner, &s, &dest, &buf).await {
            Flushed::Done => {}
            Flushed::Reconfigured => continue,
            Flushed::Gone => return,
        }
        if !save_checkpoint(&inner, &name, uid, next).await {
            return;
        }
        buf = Buffer::default();
    }
}

/// What a flush writes: the records to deliver (processed), and the error
/// output of those that failed processing.
struct Output {
    data: Vec<u8>,
    records: u64,
    errors: Vec<u8>,
}

/// The key of an error output object: ErrorOutputPrefix with
/// `!{firehose:error-output-type}`, or (no expressions in it) followed by
/// `processing-failed/YYYY/MM/dd/HH/` as AWS lays it out.
fn error_key(dest: &Destination, first_ms: i64, name: &str, version: u64) -> String {
    let rng = &mut rand::rng();
    if dest.error_prefix.has_expressions() {
        return prefix::object_key(
            &dest.error_prefix,
            first_ms,
            name,
            version,
            &dest.extension,
            rng,
        );
    }
    let mut key = dest.error_prefix.render(first_ms, None, rng);
    key.push_str("processing-failed/");
    let empty = prefix::Template::parse("").unwrap_or_else(|_| dest.error_prefix.clone());
    key.push_str(&prefix::object_key(
        &empty,
        first_ms,
        name,
        version,
        &dest.extension,
        rng,
    ));
    key
}

/// Runs the buffer's records through the Lambda processor, batch by batch,
/// then the delimiter. `None`: the stream went away meanwhile.
async fn transform(
    inner: &Arc<Inner>,
    s: &Stream,
    dest: &Destination,
    l: &crate::processing::LambdaProcessor,
    buf: &Buffer,
) -> Option<Output> {
    use crate::lambda::{self, InRecord, Outcome};
    let name = &s.rec.name;
    let mut out = Output {
        data: Vec::new(),
        records: 0,
        errors: Vec::new(),
    };
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
        let mut bytes = 0;
        while i < buf.ends.len() {
            let (arrival, end) = buf.ends[i];
            let len = end - start;
            if !batch.is_empty() && bytes + len > l.batch_bytes {
                break;
            }
            batch.push(InRecord {
                arrival_ms: arrival,
                data: buf.data[start..end].to_vec(),
            });
            bytes += len;
            start = end;
            i += 1;
        }
        let invocation = uuid::Uuid::new_v4().to_string();
        let body = serde_json::to_vec(&lambda::request(&invocation, &arn, &inner.region, &batch))
            .unwrap_or_default();
        let mut attempts = 0;
        let mut backoff = inner.cfg.retry_initial;
        let outcomes = loop {
            attempts += 1;
            let r = match lambda::invoke(function, &body).await {
                Ok(resp) => lambda::parse_response(&resp, batch.len()),
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
                for (rec, o) in batch.iter().zip(outcomes) {
                    match o {
                        Outcome::Ok(d) => {
                            dest.processing.finish(&d, &mut out.data);
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
    Some(out)
}

/// Every record of the buffer to the error output with one error.
fn fail_all(
    buf: &Buffer,
    attempts: u32,
    code: &str,
    msg: &str,
    arn: &str,
    now: i64,
    mut out: Output,
) -> Output {
    let mut start = 0;
    for &(arrival, end) in &buf.ends {
        out.errors.extend(crate::lambda::error_line(
            attempts,
            arrival,
            code,
            msg,
            now,
            &buf.data[start..end],
            arn,
        ));
        start = end;
    }
    out
}

/// Writes the buffer as one object (and the error output of what failed
/// processing as another), retrying with backoff until stored, the
/// destination changes or the stream goes.
async fn flush(inner: &Arc<Inner>, s: &Stream, dest: &Destination, buf: &Buffer) -> Flushed {
    let name = &s.rec.name;
    let out = match &dest.processing.lambda {
        None => Output {
            data: buf.data.clone(),
            records: buf.records,
            errors: Vec::new(),
        },
        Some(l) => match transform(inner, s, dest, l, buf).await {
            Some(o) => o,
            None => return Flushed::Gone,
        },
    };
    let mut objects = Vec::new();
    for (data, is_error) in [(&out.data, false), (&out.errors, true)] {
        if data.is_empty() {
            continue;
        }
        let body = match encode_body(data, dest.compression) {
            Ok(b) => b,
            Err(e) => {
                warn!(stream = %name, error = %e, "cannot compress the buffer");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Flushed::Reconfigured;
            }
        };
        let key = if is_error {
            error_key(dest, buf.first_ms, name, s.rec.version)
        } else {
            prefix::object_key(
                &dest.prefix,
                buf.first_ms,
                name,
                s.rec.version,
                &dest.extension,
                &mut rand::rng(),
            )
        };
        objects.push((key, body, is_error));
    }
    let mut backoff = inner.cfg.retry_initial;
    // Objects already stored are not written again on a retry.
    let mut done = 0;
    loop {
        while done < objects.len() {
            let (key, body, is_error) = &objects[done];
            match inner.sink.put(&dest.bucket, key, body.clone()).await {
                Ok(()) => {
                    if *is_error {
                        info!(stream = %name, bucket = %dest.bucket, key = %key, bytes = body.len(), "wrote the processing error output");
                    } else {
                        inner
                            .metrics
                            .delivered(name, out.records, out.data.len() as u64);
                        info!(stream = %name, bucket = %dest.bucket, key = %key, records = out.records, bytes = body.len(), "delivered");
                    }
                    done += 1;
                }
                Err(e) => {
                    inner.metrics.failed(name);
                    warn!(stream = %name, bucket = %dest.bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), retry_in_ms = backoff.as_millis() as u64, "delivery to S3 failed; retrying");
                    break;
                }
            }
        }
        if done == objects.len() {
            return Flushed::Done;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.cfg.retry_max);
        match current(inner, name, s.rec.uid) {
            None => return Flushed::Gone,
            Some(now) if now.rec.version != s.rec.version => return Flushed::Reconfigured,
            Some(_) => {}
        }
    }
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
    fn bodies_are_raw_gzip_or_snappy() {
        let raw = b"{\"a\":1}{\"a\":2}";
        assert_eq!(&encode_body(raw, Compression::None).unwrap()[..], raw);
        let gz = encode_body(raw, Compression::Gzip).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);
        let sn = encode_body(raw, Compression::Snappy).unwrap();
        let mut out = Vec::new();
        snap::read::FrameDecoder::new(&sn[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);
        // Hadoop blocks: two of them for a body past one block.
        let big: Vec<u8> = (0..HADOOP_BLOCK + 10).map(|i| (i % 251) as u8).collect();
        let h = encode_body(&big, Compression::HadoopSnappy).unwrap();
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
        let mut b = Buffer::default();
        b.push(5, b"x");
        b.push(9, b"yz");
        assert_eq!((b.first_ms, b.records, &b.data[..]), (5, 2, &b"xyz"[..]));
    }
}
