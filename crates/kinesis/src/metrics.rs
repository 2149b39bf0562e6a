//! Per-stream traffic counters, as Kinesis reports them in CloudWatch.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

/// IncomingBytes/Records and OutgoingBytes/Records per stream.
#[derive(Debug, Clone, Default)]
pub struct StreamMetrics {
    incoming_bytes: Family<StreamLabel, Counter>,
    incoming_records: Family<StreamLabel, Counter>,
    outgoing_bytes: Family<StreamLabel, Counter>,
    outgoing_records: Family<StreamLabel, Counter>,
}

impl StreamMetrics {
    pub fn register(registry: &mut Registry) -> StreamMetrics {
        let m = StreamMetrics::default();
        registry.register(
            "ripstream_stream_incoming_bytes",
            "Bytes of record data (with partition keys) successfully put to the stream",
            m.incoming_bytes.clone(),
        );
        registry.register(
            "ripstream_stream_incoming_records",
            "Records successfully put to the stream",
            m.incoming_records.clone(),
        );
        registry.register(
            "ripstream_stream_outgoing_bytes",
            "Bytes of record data returned by GetRecords",
            m.outgoing_bytes.clone(),
        );
        registry.register(
            "ripstream_stream_outgoing_records",
            "Records returned by GetRecords",
            m.outgoing_records.clone(),
        );
        m
    }

    fn label(stream: &str) -> StreamLabel {
        StreamLabel {
            stream: stream.to_string(),
        }
    }

    pub(crate) fn incoming(&self, stream: &str, records: u64, bytes: u64) {
        let l = Self::label(stream);
        self.incoming_records.get_or_create(&l).inc_by(records);
        self.incoming_bytes.get_or_create(&l).inc_by(bytes);
    }

    pub(crate) fn outgoing(&self, stream: &str, records: u64, bytes: u64) {
        let l = Self::label(stream);
        self.outgoing_records.get_or_create(&l).inc_by(records);
        self.outgoing_bytes.get_or_create(&l).inc_by(bytes);
    }

    pub(crate) fn forget(&self, stream: &str) {
        let l = Self::label(stream);
        self.incoming_bytes.remove(&l);
        self.incoming_records.remove(&l);
        self.outgoing_bytes.remove(&l);
        self.outgoing_records.remove(&l);
    }
}
