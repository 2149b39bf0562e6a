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
