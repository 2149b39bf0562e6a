//! Writes numbered records through the KPL-style producer and reports its
//! metrics.
//!
//! ```sh
//! cargo run -p ripstream-client --example producer -- orders 10000
//! ```

use aws_config::BehaviorVersion;
use ripstream_client::producer::{Producer, ProducerConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let stream = args.next().unwrap_or_else(|| "orders".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let endpoint =
        std::env::var("RIPSTREAM_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4567".into());
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "ripstream",
            "ripstream",
            None,
            None,
            "example",
        ))
        .load()
        .await;
    let mut cfg = ProducerConfig::new(&stream);
    cfg.aggregation = true;
    let producer = Producer::new(aws_sdk_kinesis::Client::new(&conf), cfg);
    let mut acks = Vec::with_capacity(count);
    for i in 0..count {
        match producer
            .put(
                format!("key-{}", i % 100),
                format!("record {i}").into_bytes(),
            )
            .await
        {
            Ok(ack) => acks.push(ack),
            Err(e) => eprintln!("put failed: {e}"),
        }
    }
    producer.flush().await;
    let mut failed = 0;
    for ack in acks {
        if ack.await.is_err() {
            failed += 1;
        }
    }
    println!("{:?}; {failed} failed", producer.metrics());
}
