//! Firehose's KinesisStreamAsSource reads, over the Data Streams service in
//! this process: the binary bridges the two crates, so neither depends on
//! the other. A delivery stream reads as a consumer would (ListShards,
//! GetShardIterator, GetRecords), within the same per-shard read quotas,
//! and gets KPL aggregates as their user records, as AWS's Firehose
//! de-aggregates them.

use ripstream_client::aggregation;
use ripstream_firehose::sink::BoxFuture;
use ripstream_firehose::source::{
    KinesisSource, Position, SourceError, SourceRead, SourceRecord, SourceShard,
};
use ripstream_kinesis::types::{
    DescribeStreamSummaryInput, GetRecordsInput, GetShardIteratorInput, ListShardsInput,
    ShardIteratorType, StreamRef, Timestamp,
};

#[derive(Debug, Clone)]
pub struct KinesisStreams(ripstream_kinesis::Service);

impl KinesisStreams {
    pub fn new(service: ripstream_kinesis::Service) -> KinesisStreams {
        KinesisStreams(service)
    }
}

fn source_error(e: ripstream_kinesis::Error) -> SourceError {
    use ripstream_kinesis::Error as E;
    match e {
        E::ResourceNotFound(m) => SourceError::NotFound(m),
        E::ProvisionedThroughputExceeded(m) | E::LimitExceeded(m) => SourceError::Throttled(m),
        e => SourceError::Failed {
            message: e.message(),
            source: Box::new(e),
        },
    }
}

fn stream(arn: &str) -> StreamRef {
    StreamRef {
        stream_name: None,
        stream_arn: Some(arn.to_string()),
    }
}

/// A Kinesis record as the user records it carries.
fn user_records(r: ripstream_kinesis::types::Record) -> Vec<SourceRecord> {
    let arrival_ms = r.approximate_arrival_timestamp.millis();
    let data = r.data.0;
    if aggregation::is_aggregated(&data)
        && let Some(subs) = aggregation::deaggregate(&data)
    {
        return subs
            .into_iter()
            .map(|u| SourceRecord {
                sequence_number: r.sequence_number.clone(),
                sub_sequence_number: u.sub_sequence_number,
                arrival_ms,
                partition_key: u.partition_key,
                data: u.data,
            })
            .collect();
    }
    vec![SourceRecord {
        sequence_number: r.sequence_number,
        sub_sequence_number: 0,
        arrival_ms,
        partition_key: r.partition_key.unwrap_or_default(),
        data: data.to_vec(),
    }]
}

impl KinesisSource for KinesisStreams {
    fn check<'a>(&'a self, stream_arn: &'a str) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let input = DescribeStreamSummaryInput {
                stream: stream(stream_arn),
            };
            match self.0.describe_stream_summary(input).await {
                Ok(_) => Ok(()),
                Err(ripstream_kinesis::Error::InvalidArgument(_)) => {
                    Err(SourceError::NotFound(format!(
                        "KinesisStreamARN {stream_arn} is not the ARN of a stream of this server's region and account."
                    )))
                }
                Err(e) => Err(source_error(e)),
            }
        })
    }

    fn shards<'a>(
        &'a self,
        stream_arn: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SourceShard>, SourceError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut next_token = None;
            loop {
                let input = ListShardsInput {
                    stream: if next_token.is_some() {
                        StreamRef::default()
                    } else {
                        stream(stream_arn)
                    },
                    next_token: next_token.take(),
                    ..Default::default()
                };
                let page = self.0.list_shards(input).await.map_err(source_error)?;
                out.extend(page.shards.into_iter().map(|s| SourceShard {
                    id: s.shard_id,
                    parent: s.parent_shard_id,
                    adjacent_parent: s.adjacent_parent_shard_id,
                }));
                match page.next_token {
                    Some(t) => next_token = Some(t),
                    None => return Ok(out),
                }
            }
        })
    }

    fn read<'a>(
        &'a self,
        stream_arn: &'a str,
        shard_id: &'a str,
        from: &'a Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<SourceRead, SourceError>> {
        Box::pin(async move {
            let (kind, seq, ts) = match from {
                Position::TrimHorizon => (ShardIteratorType::TrimHorizon, None, None),
                Position::AtTimestamp(ms) => {
                    (ShardIteratorType::AtTimestamp, None, Some(Timestamp(*ms)))
                }
                Position::After(s) => (
                    ShardIteratorType::AfterSequenceNumber,
                    Some(s.clone()),
                    None,
                ),
            };
            let it = self
                .0
                .get_shard_iterator(GetShardIteratorInput {
                    stream: stream(stream_arn),
                    shard_id: shard_id.to_string(),
                    shard_iterator_type: kind,
                    starting_sequence_number: seq,
                    timestamp: ts,
                    dry_run: None,
                })
                .await
                .map_err(source_error)?;
            let iterator = it.shard_iterator;
            let out = self
                .0
                .get_records(GetRecordsInput {
                    shard_iterator: iterator,
                    limit: Some(limit as i64),
                    stream_arn: Some(stream_arn.to_string()),
                    dry_run: None,
                })
                .await
                .map_err(source_error)?;
            Ok(SourceRead {
                ended: out.next_shard_iterator.is_none(),
                records: out.records.into_iter().flat_map(user_records).collect(),
            })
        })
    }
}
