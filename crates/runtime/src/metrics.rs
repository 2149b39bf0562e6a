//! The shard log's process-wide counters on `/metrics`: registered by the
//! binary into the registry the front door serves, so the front door needs
//! no storage crate to show them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

/// Exposes the shard log's process-wide counters.
#[derive(Debug)]
pub struct LogCollector;

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = ripstream_log::metrics::snapshot();
        let seconds = ConstCounter::new(m.fsync_nanos as f64 / 1e9);
        let enc = encoder.encode_descriptor(
            "ripstream_log_fsync_seconds",
            "Wall time spent in fdatasync calls for appends",
            None,
            seconds.metric_type(),
        )?;
        seconds.encode(enc)?;
        let counters: [(&str, &str, u64); 7] = [
            (
                "ripstream_log_written_bytes",
                "Bytes of batch frames written to the shard log",
                m.bytes_written,
            ),
            (
                "ripstream_log_fsyncs",
                "fdatasync calls made for appends: one per group commit through the commit log, else one per touched shard",
                m.fsyncs,
            ),
            (
                "ripstream_log_segments_rolled",
                "Log segments sealed",
                m.segments_rolled,
            ),
            (
                "ripstream_log_corrupt_batches",
                "Corrupt batches met by readers and skipped",
                m.corrupt_batches,
            ),
            (
                "ripstream_log_truncated_bytes",
                "Bytes of torn or corrupt tail truncated by recovery",
                m.truncated_bytes,
            ),
            (
                "ripstream_log_commit_log_commits",
                "Group commits made durable by one sync of the shared commit log",
                m.commit_log_commits,
            ),
            (
                "ripstream_log_checkpoints",
                "Commit log checkpoints (shard files synced, a new generation started)",
                m.checkpoints,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            let enc = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(enc)?;
        }
        Ok(())
    }
}
