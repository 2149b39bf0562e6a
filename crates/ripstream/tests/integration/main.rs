//! Integration tests: the real `ripstream` binary, driven by the official
//! AWS SDK for Rust and by raw HTTP. One test binary, so it links once.

mod anonymous;
mod authz;
mod capacity;
mod cbor;
mod cli;
mod client;
mod crash;
mod dynamodb;
mod efo;
mod encryption;
mod firehose;
mod firehose_convert;
mod firehose_external;
mod firehose_http;
mod firehose_iceberg;
mod firehose_outbound;
mod firehose_partition;
mod firehose_redshift;
mod firehose_source;
mod glue;
mod hostile;
mod protocol;
mod quotas;
mod records;
mod reshard;
mod s3;
mod s3_sse;
mod security;
mod seqnum;
mod streams;
mod sts;
mod support;
