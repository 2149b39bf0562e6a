//! Kinesis client libraries for Rust, talking only the public Kinesis and
//! DynamoDB APIs, so they work against Ripstream and against AWS alike.
//!
//! - [`producer`]: a KPL-style producer: `put` returns the sequence number;
//!   records are batched into PutRecords, optionally aggregated, retried
//!   with backoff, and rate-limited per shard.
//! - [`consumer`]: a KCL-style consumer: workers share a stream's shards
//!   through leases in a DynamoDB table, run one record processor per shard,
//!   checkpoint, follow resharding (parents before children) and fail over.
//! - [`aggregation`]: the KPL's aggregated record format.

pub mod aggregation;
pub mod consumer;
pub mod producer;
