//! Request metrics and the `/metrics` endpoint (Prometheus text format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
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

/// A request's outcome: `code` is the AWS error type it was answered with,
/// or `OK`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub service: String,
    pub operation: String,
    pub code: String,
}

/// Requests by service, operation and outcome, and latency histograms per
/// operation.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    requests: Family<OutcomeLabel, Counter>,
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
            latency: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "ripstream_requests",
            "API requests by service, operation and outcome (the AWS error type, or OK)",
            m.requests.clone(),
        );
        registry.register(
            "ripstream_request_duration_seconds",
            "Time to serve an API request, by service and operation",
            m.latency.clone(),
        );
        m
    }

    pub fn observe(&self, service: &str, operation: &str, seconds: f64, error: Option<&str>) {
        self.requests
            .get_or_create(&OutcomeLabel {
                service: service.to_string(),
                operation: operation.to_string(),
                code: error.unwrap_or("OK").to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabel {
                service: service.to_string(),
                operation: operation.to_string(),
            })
            .observe(seconds);
    }
}
