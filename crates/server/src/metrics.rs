//! Request metrics and the `/metrics` endpoint (Prometheus text format).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Operations are named per service: Kinesis's and DynamoDB's TagResource
/// (or DescribeLimits) are different series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub service: String,
    pub operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub service: String,
    pub operation: String,
    pub code: String,
}

/// Counters and latency histograms per operation, and errors by code.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    requests: Family<OperationLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    latency: Family<OperationLabel, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 16,
    ))
}

impl RequestMetrics {
    pub fn register(registry: &mut Registry) -> RequestMetrics {
        let m = RequestMetrics {
            requests: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "ripstream_requests",
            "API requests by operation",
            m.requests.clone(),
        );
        registry.register(
            "ripstream_request_errors",
            "API error responses by operation and error type",
            m.errors.clone(),
        );
        registry.register(
            "ripstream_request_duration_seconds",
            "Time to serve an API request, by operation",
            m.latency.clone(),
        );
        registry.register_collector(Box::new(LogCollector));
        m
    }

    pub fn observe(&self, service: &str, operation: &str, seconds: f64, error: Option<&str>) {
        let op = OperationLabel {
            service: service.to_string(),
            operation: operation.to_string(),
        };
        self.requests.get_or_create(&op).inc();
        self.latency.get_or_create(&op).observe(seconds);
        if let Some(code) = error {
            self.errors
                .get_or_create(&ErrorLabel {
                    service: service.to_string(),
                    operation: operation.to_string(),
                    code: code.to_string(),
                })
                .inc();
        }
    }
}

/// Exposes the shard log's process-wide counters.
#[derive(Debug)]
struct LogCollector;

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = ripstream_kinesis::log_metrics();
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
