//! A KCL-style consumer.
//!
//! A [`Worker`] holds leases on shards in a DynamoDB lease table (the KCL's
//! schema), runs one [`RecordProcessor`] per leased shard, renews its leases,
//! takes expired ones and steals to even out the load across workers, finds
//! new shards (on a timer and from `ChildShards` at the end of a shard), and
//! processes a child only after its parents are finished. Records written by
//! the KPL's aggregation are de-aggregated, and checkpoints keep the
//! sub-sequence number. Several workers of one application (one lease table)
//! share a stream's shards; a worker that dies loses its leases after the
//! failover time.
//!
//! ```no_run
//! use ripstream_client::consumer::{
//!     Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker, WorkerConfig,
//! };
//!
//! struct Printer;
//!
//! impl RecordProcessor for Printer {
//!     async fn process_records(&mut self, input: ProcessRecordsInput, checkpointer: &mut Checkpointer) {
//!         for r in &input.records {
//!             println!("{} {}", r.partition_key, String::from_utf8_lossy(&r.data));
//!         }
//!         let _ = checkpointer.checkpoint().await;
//!     }
//!
//!     async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
//!         let _ = checkpointer.checkpoint().await;
//!     }
//! }
//!
//! # async fn run(kinesis: aws_sdk_kinesis::Client, dynamodb: aws_sdk_dynamodb::Client) {
//! let config = WorkerConfig::new("my-app", "orders", "worker-1")
//!     .initial_position(InitialPosition::TrimHorizon);
//! let worker = Worker::start(kinesis, dynamodb, config, |_shard_id: &str| Printer);
//! // ... later:
//! worker.shutdown().await;
//! # }
//! ```

mod lease;
mod shard;
mod worker;

use std::future::Future;
use std::time::{Duration, SystemTime};

pub use lease::{Lease, LeaseTable, SHARD_END};
pub use worker::{Worker, WorkerState};

use lease::Conditional;

/// Errors of the consumer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsumerError {
    #[error("lease table: {0}")]
    LeaseTable(String),
    #[error("kinesis: {0}")]
    Kinesis(String),
    /// The lease is held by another worker now; stop processing the shard.
    #[error("the lease on {0} is held by another worker")]
    LeaseLost(String),
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(String),
    /// A refusal that retrying cannot change (an invalid name or argument, a
    /// missing stream or table, denied access, unknown credentials): the
    /// worker stops on it instead of retrying forever.
    #[error("{0}")]
    Permanent(String),
}

impl ConsumerError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ConsumerError::Permanent(_))
    }
}

/// Error codes (Kinesis and DynamoDB) that no retry can turn into a success.
pub(crate) fn permanent_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ValidationException"
                | "InvalidArgumentException"
                | "ResourceNotFoundException"
                | "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "IncompleteSignatureException"
                | "MissingAuthenticationToken"
                | "MissingAuthenticationTokenException"
                | "InvalidClientTokenId"
                | "KMSAccessDeniedException"
                | "KMSDisabledException"
                | "KMSNotFoundException"
                | "KMSInvalidStateException"
        )
    )
}

/// A Kinesis error as a [`ConsumerError`]: permanent or not, with what was being done.
pub(crate) fn kinesis_failure<E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::fmt::Debug>(
    doing: &str,
    e: &E,
) -> ConsumerError {
    if permanent_code(e.code()) {
        ConsumerError::Permanent(format!("kinesis {doing}: {}", kinesis_error(e)))
    } else {
        ConsumerError::Kinesis(format!("{doing}: {}", kinesis_error(e)))
    }
}

/// Where a worker starts reading a shard that has no checkpoint yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    TrimHorizon,
    Latest,
    AtTimestamp(SystemTime),
}

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The application; also the lease table's name.
    pub application_name: String,
    pub stream_name: String,
    pub worker_id: String,
    pub initial_position: InitialPosition,
    /// A lease not renewed for this long is expired and may be taken.
    pub failover_time: Duration,
    /// How often the stream's shards are listed for new ones.
    pub shard_sync_interval: Duration,
    /// Wait between GetRecords calls once a shard is caught up.
    pub idle_time_between_reads: Duration,
    /// `Limit` of each GetRecords call.
    pub max_records: i32,
    /// Most leases stolen from another worker in one balancing round.
    pub max_leases_to_steal_at_once: usize,
    /// Read by enhanced fan-out (SubscribeToShard) as this registered
    /// consumer, instead of polling GetRecords.
    pub fan_out_consumer: Option<String>,
}

impl WorkerConfig {
    pub fn new(
        application_name: impl Into<String>,
        stream_name: impl Into<String>,
        worker_id: impl Into<String>,
    ) -> WorkerConfig {
        WorkerConfig {
            application_name: application_name.into(),
            stream_name: stream_name.into(),
            worker_id: worker_id.into(),
            initial_position: InitialPosition::Latest,
            failover_time: Duration::from_secs(10),
            shard_sync_interval: Duration::from_secs(60),
            // The KCL 2.x default.
            idle_time_between_reads: Duration::from_millis(1500),
            max_records: 10_000,
            max_leases_to_steal_at_once: 1,
            fan_out_consumer: None,
        }
    }

    /// Reads by enhanced fan-out as the stream consumer `name` (registered
    /// if it does not exist), with its own 2 MiB/s per shard.
    pub fn enhanced_fan_out(mut self, name: impl Into<String>) -> WorkerConfig {
        self.fan_out_consumer = Some(name.into());
        self
    }

    pub fn initial_position(mut self, p: InitialPosition) -> WorkerConfig {
        self.initial_position = p;
        self
    }

    pub fn failover_time(mut self, d: Duration) -> WorkerConfig {
        self.failover_time = d;
        self
    }

    pub fn shard_sync_interval(mut self, d: Duration) -> WorkerConfig {
        self.shard_sync_interval = d;
        self
    }

    pub fn idle_time_between_reads(mut self, d: Duration) -> WorkerConfig {
        self.idle_time_between_reads = d;
        self
    }
}

/// A record as the processor sees it: a Kinesis record, or one user record
/// of a KPL aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisClientRecord {
    pub sequence_number: String,
    /// Position inside an aggregate; 0 for a plain record.
    pub sub_sequence_number: u64,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
    pub approximate_arrival_timestamp: Option<SystemTime>,
    pub aggregated: bool,
}

/// What `initialize` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializationInput {
    pub shard_id: String,
    /// The checkpoint processing resumes after (a sequence number or a sentinel).
    pub checkpoint: String,
    pub checkpoint_sub_sequence_number: u64,
}

/// One batch of records.
#[derive(Debug, Clone)]
pub struct ProcessRecordsInput {
    pub shard_id: String,
    pub records: Vec<KinesisClientRecord>,
    pub millis_behind_latest: Option<i64>,
}

/// The application's per-shard logic. One instance processes one shard, in
/// order; `shard_ended` must checkpoint, or the shard's children never start.
pub trait RecordProcessor: Send + 'static {
    fn initialize(&mut self, input: InitializationInput) -> impl Future<Output = ()> + Send {
        let _ = input;
        async {}
    }

    fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = ()> + Send;

    /// The lease went to another worker; do not checkpoint.
    fn lease_lost(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Every record of the shard was processed; call `checkpointer.checkpoint()`.
    fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> impl Future<Output = ()> + Send;

    /// The worker is shutting down, or handing the shard to another worker:
    /// checkpoint what was processed.
    fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = ()> + Send {
        let _ = checkpointer;
        async {}
    }
}

/// An SDK error as `Code: message`.
pub(crate) fn kinesis_error<E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::fmt::Debug>(
    e: &E,
) -> String {
    format!(
        "{}: {}",
        e.code().unwrap_or("error"),
        e.message()
            .map(String::from)
            .unwrap_or_else(|| format!("{e:?}"))
    )
}

/// Compares two sequence numbers (decimal strings of any length).
pub(crate) fn cmp_sequence(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Records progress on one shard in the lease table.
#[derive(Debug)]
pub struct Checkpointer {
    table: LeaseTable,
    shard_id: String,
    worker_id: String,
    /// The last record handed to the processor.
    last: Option<(String, u64)>,
    at_shard_end: bool,
    /// The last checkpoint written.
    written: Option<(String, u64)>,
}

impl Checkpointer {
    pub(crate) fn new(table: LeaseTable, shard_id: &str, worker_id: &str) -> Checkpointer {
        Checkpointer {
            table,
            shard_id: shard_id.to_string(),
            worker_id: worker_id.to_string(),
            last: None,
            at_shard_end: false,
            written: None,
        }
    }

    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// Checkpoints at the last record handed to the processor, or at
    /// SHARD_END once the shard has ended.
    pub async fn checkpoint(&mut self) -> Result<(), ConsumerError> {
        if self.at_shard_end {
            return self.write(SHARD_END, 0).await;
        }
        match self.last.clone() {
            Some((seq, sub)) => self.write(&seq, sub).await,
            None => Ok(()),
        }
    }

    /// Checkpoints at a given record (sequence and sub-sequence number).
    pub async fn checkpoint_at(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<(), ConsumerError> {
        if sequence_number.is_empty() || !sequence_number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConsumerError::InvalidCheckpoint(format!(
                "{sequence_number:?} is not a sequence number"
            )));
        }
        if let Some((last, last_sub)) = &self.last
            && (
                cmp_sequence(sequence_number, last),
                sub_sequence_number.cmp(last_sub),
            ) > (std::cmp::Ordering::Equal, std::cmp::Ordering::Equal)
        {
            return Err(ConsumerError::InvalidCheckpoint(format!(
                "{sequence_number}/{sub_sequence_number} is past the last record processed"
            )));
        }
        self.write(sequence_number, sub_sequence_number).await
    }

    /// The last checkpoint this checkpointer wrote.
    pub fn last_checkpoint(&self) -> Option<(&str, u64)> {
        self.written.as_ref().map(|(s, n)| (s.as_str(), *n))
    }

    pub(crate) fn wrote_shard_end(&self) -> bool {
        self.written.as_ref().is_some_and(|(s, _)| s == SHARD_END)
    }

    async fn write(&mut self, checkpoint: &str, sub: u64) -> Result<(), ConsumerError> {
        match self
            .table
            .checkpoint(&self.shard_id, &self.worker_id, checkpoint, sub)
            .await?
        {
            Conditional::Done(()) => {
                self.written = Some((checkpoint.to_string(), sub));
                Ok(())
            }
            Conditional::Lost => Err(ConsumerError::LeaseLost(self.shard_id.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn sequence_numbers_compare_numerically() {
        assert_eq!(cmp_sequence("9", "10"), Ordering::Less);
        assert_eq!(
            cmp_sequence(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692538361571095921575989136588899"
            ),
            Ordering::Less
        );
        assert_eq!(cmp_sequence("007", "7"), Ordering::Equal);
    }
}
