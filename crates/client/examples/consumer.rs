//! A consumer group member that prints every record of a stream.
//!
//! ```sh
//! ripstream serve &
//! ripstream stream create orders --shards 4
//! cargo run -p ripstream-client --example consumer -- orders my-app
//! ```
//!
//! Start it several times with the same application name and the copies
//! share the shards; stop one (Ctrl-C) and the others take over where it
//! checkpointed. With `RIPSTREAM_ENDPOINT=aws` it runs against AWS with the
//! SDK's usual configuration (the lease table is then a real DynamoDB table).

use std::time::Duration;

use aws_config::BehaviorVersion;
use ripstream_client::consumer::{
    Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker, WorkerConfig,
};

struct Printer {
    shard: String,
}

impl RecordProcessor for Printer {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        for r in &input.records {
            println!(
                "{} {}/{} {}: {}",
                self.shard,
                r.sequence_number,
                r.sub_sequence_number,
                r.partition_key,
                String::from_utf8_lossy(&r.data)
            );
        }
        if let Err(e) = checkpointer.checkpoint().await {
            eprintln!("checkpoint failed: {e}");
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        // Required: the shard's children start only after this checkpoint.
        if let Err(e) = checkpointer.checkpoint().await {
            eprintln!("checkpoint at shard end failed: {e}");
        }
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let stream = args.next().unwrap_or_else(|| "orders".into());
    let app = args.next().unwrap_or_else(|| "printer".into());
    let endpoint =
        std::env::var("RIPSTREAM_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4567".into());
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if endpoint != "aws" {
        loader = loader
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "ripstream",
                "ripstream",
                None,
                None,
                "example",
            ));
    }
    let conf = loader.load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&conf);
    let dynamodb = aws_sdk_dynamodb::Client::new(&conf);
    let worker_id = format!("example-{}", std::process::id());
    let cfg = WorkerConfig::new(&app, &stream, &worker_id)
        .initial_position(InitialPosition::TrimHorizon)
        .idle_time_between_reads(Duration::from_millis(250));
    eprintln!("{worker_id}: consuming {stream} as {app}; Ctrl-C to stop");
    let worker = Worker::start(kinesis, dynamodb, cfg, |shard: &str| Printer {
        shard: shard.to_string(),
    });
    let _ = tokio::signal::ctrl_c().await;
    worker.shutdown().await;
}
