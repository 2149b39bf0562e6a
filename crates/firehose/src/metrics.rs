//! Per-delivery-stream counters under Firehose's CloudWatch names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryStreamLabel {
    pub delivery_stream: String,
}

/// IncomingRecords/Bytes, DeliveryToS3.Records/Bytes/Success and the failed
/// delivery attempts, per delivery stream.
#[derive(Debug, Clone, Default)]
pub struct FirehoseMetrics {
    incoming_records: Family<DeliveryStreamLabel, Counter>,
    incoming_bytes: Family<DeliveryStreamLabel, Counter>,
    s3_records: Family<DeliveryStreamLabel, Counter>,
    s3_bytes: Family<DeliveryStreamLabel, Counter>,
    s3_success: Family<DeliveryStreamLabel, Counter>,
    s3_failures: Family<DeliveryStreamLabel, Counter>,
    throttled: Family<DeliveryStreamLabel, Counter>,
    kinesis_records: Family<DeliveryStreamLabel, Counter>,
    kinesis_bytes: Family<DeliveryStreamLabel, Counter>,
    /// DeliveryToHttpEndpoint / Splunk / AmazonOpenSearchService /
    /// Elasticsearch.
    pub push: crate::endpoints::PushMetrics,
    redshift_records: Family<DeliveryStreamLabel, Counter>,
    redshift_bytes: Family<DeliveryStreamLabel, Counter>,
    redshift_success: Family<DeliveryStreamLabel, Counter>,
    redshift_failures: Family<DeliveryStreamLabel, Counter>,
}

impl FirehoseMetrics {
    pub fn register(registry: &mut Registry) -> FirehoseMetrics {
        let m = FirehoseMetrics {
            push: crate::endpoints::PushMetrics::register(registry),
            ..Default::default()
        };
        for (name, help, family) in [
            (
                "ripstream_firehose_incoming_records",
                "Records accepted by PutRecord/PutRecordBatch (IncomingRecords)",
                &m.incoming_records,
            ),
            (
                "ripstream_firehose_incoming_bytes",
                "Bytes of record data accepted (IncomingBytes)",
                &m.incoming_bytes,
            ),
            (
                "ripstream_firehose_delivery_to_s3_records",
                "Records delivered to S3 (DeliveryToS3.Records)",
                &m.s3_records,
            ),
            (
                "ripstream_firehose_delivery_to_s3_bytes",
                "Bytes of record data delivered to S3 (DeliveryToS3.Bytes)",
                &m.s3_bytes,
            ),
            (
                "ripstream_firehose_delivery_to_s3_success",
                "Objects written to S3 (DeliveryToS3.Success numerator)",
                &m.s3_success,
            ),
            (
                "ripstream_firehose_delivery_to_s3_failures",
                "Failed S3 object writes, each retried",
                &m.s3_failures,
            ),
            (
                "ripstream_firehose_throttled_records",
                "Records refused because the stream's quota was exceeded (ThrottledRecords)",
                &m.throttled,
            ),
            (
                "ripstream_firehose_data_read_from_kinesis_stream_records",
                "Records read from the source Kinesis stream (DataReadFromKinesisStream.Records)",
                &m.kinesis_records,
            ),
            (
                "ripstream_firehose_data_read_from_kinesis_stream_bytes",
                "Bytes read from the source Kinesis stream (DataReadFromKinesisStream.Bytes)",
                &m.kinesis_bytes,
            ),
            (
                "ripstream_firehose_delivery_to_redshift_records",
                "Rows loaded into the Redshift destination's table (DeliveryToRedshift.Records)",
                &m.redshift_records,
            ),
            (
                "ripstream_firehose_delivery_to_redshift_bytes",
                "Bytes of staged files loaded into the table (DeliveryToRedshift.Bytes)",
                &m.redshift_bytes,
            ),
            (
                "ripstream_firehose_delivery_to_redshift_success",
                "Staged files loaded (DeliveryToRedshift.Success numerator)",
                &m.redshift_success,
            ),
            (
                "ripstream_firehose_delivery_to_redshift_failures",
                "Failed loads into the table, each retried for RetryOptions",
                &m.redshift_failures,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        m
    }

    fn label(stream: &str) -> DeliveryStreamLabel {
        DeliveryStreamLabel {
            delivery_stream: stream.to_string(),
        }
    }

    pub fn incoming(&self, stream: &str, records: u64, bytes: u64) {
        let l = Self::label(stream);
        self.incoming_records.get_or_create(&l).inc_by(records);
        self.incoming_bytes.get_or_create(&l).inc_by(bytes);
    }

    pub fn read_from_kinesis(&self, stream: &str, records: u64, bytes: u64) {
        let l = Self::label(stream);
        self.kinesis_records.get_or_create(&l).inc_by(records);
        self.kinesis_bytes.get_or_create(&l).inc_by(bytes);
    }

    pub fn throttled(&self, stream: &str, records: u64) {
        self.throttled
            .get_or_create(&Self::label(stream))
            .inc_by(records);
    }

    pub fn delivered(&self, stream: &str, records: u64, bytes: u64) {
        let l = Self::label(stream);
        self.s3_records.get_or_create(&l).inc_by(records);
        self.s3_bytes.get_or_create(&l).inc_by(bytes);
        self.s3_success.get_or_create(&l).inc();
    }

    pub fn loaded(&self, stream: &str, rows: u64, bytes: u64) {
        let l = Self::label(stream);
        self.redshift_records.get_or_create(&l).inc_by(rows);
        self.redshift_bytes.get_or_create(&l).inc_by(bytes);
        self.redshift_success.get_or_create(&l).inc();
    }

    pub fn load_failed(&self, stream: &str) {
        self.redshift_failures
            .get_or_create(&Self::label(stream))
            .inc();
    }

    pub fn failed(&self, stream: &str) {
        self.s3_failures.get_or_create(&Self::label(stream)).inc();
    }

    /// Drops a deleted stream's series.
    pub fn forget(&self, stream: &str) {
        let l = Self::label(stream);
        self.push.forget(stream);
        for f in [
            &self.incoming_records,
            &self.incoming_bytes,
            &self.s3_records,
            &self.s3_bytes,
            &self.s3_success,
            &self.s3_failures,
            &self.throttled,
            &self.kinesis_records,
            &self.kinesis_bytes,
            &self.redshift_records,
            &self.redshift_bytes,
            &self.redshift_success,
            &self.redshift_failures,
        ] {
            f.remove(&l);
        }
    }
}
