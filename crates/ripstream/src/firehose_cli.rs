//! `ripstream firehose`: delivery streams from the command line, through the
//! official AWS SDK for Firehose (so it works against AWS too, given a real
//! `--role-arn`).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_firehose::Client;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, DeliveryStreamStatus, DeliveryStreamType,
    ExtendedS3DestinationConfiguration, KinesisStreamSourceConfiguration, Record,
};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;

use crate::cli::{Endpoint, sdk_error};

/// PutRecordBatch's limits (AWS's): records and bytes of data per call.
const BATCH_RECORDS: usize = 500;
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The largest record Firehose takes (1,000 KiB).
const MAX_RECORD: usize = 1_000 * 1024;
/// How often a throttled or failed record is sent again before the command
/// gives up on it.
const ATTEMPTS: u32 = 10;

#[derive(Debug, Args)]
pub struct FirehoseCommand {
    #[command(subcommand)]
    action: FirehoseAction,
    #[command(flatten)]
    endpoint: Endpoint,
}

/// Checks a delivery stream name as Firehose does, so a bad one fails at
/// once.
fn delivery_stream_name(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid delivery stream name: 1 to 64 characters, each a letter, a digit, '_', '.' or '-'"
        ))
    }
}

/// `s3://bucket[/prefix]`, as (bucket, prefix).
fn s3_url(s: &str) -> Result<(String, Option<String>), String> {
    let rest = s
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{s:?} is not an s3://bucket/prefix URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'));
    if !valid_bucket {
        return Err(format!(
            "{bucket:?} is not a valid bucket name: 3 to 63 lowercase letters, digits, '.' and '-'"
        ));
    }
    Ok((
        bucket.to_string(),
        (!prefix.is_empty()).then(|| prefix.to_string()),
    ))
}

/// Buffering hints: `5MB`, `60s`, or both as `5MB,60s` (Firehose's limits:
/// 1 to 128 MB, 0 to 900 s).
fn buffer_hints(s: &str) -> Result<(Option<i32>, Option<i32>), String> {
    let mut size = None;
    let mut secs = None;
    for part in s.split(',').map(str::trim) {
        let lower = part.to_ascii_lowercase();
        if let Some(n) = lower
            .strip_suffix("mib")
            .or_else(|| lower.strip_suffix("mb"))
        {
            let n: i32 = n
                .trim()
                .parse()
                .map_err(|_| format!("{part:?} is not a size such as 5MB"))?;
            if !(1..=128).contains(&n) {
                return Err(format!("the buffer size must be 1 to 128 MB, not {n}"));
            }
            size = Some(n);
        } else if let Some(n) = lower.strip_suffix('s') {
            let n: i32 = n
                .trim()
                .parse()
                .map_err(|_| format!("{part:?} is not an interval such as 60s"))?;
            if !(0..=900).contains(&n) {
                return Err(format!(
                    "the buffer interval must be 0 to 900 seconds, not {n}"
                ));
            }
            secs = Some(n);
        } else {
            return Err(format!(
                "{part:?} is neither a size (5MB) nor an interval (60s)"
            ));
        }
    }
    Ok((size, secs))
}

#[derive(Debug, Subcommand)]
enum FirehoseAction {
    /// Create a delivery stream into S3 (DirectPut, or reading a Kinesis
    /// stream with --from-stream) and wait until it is ACTIVE
    Create {
        #[arg(value_parser = delivery_stream_name)]
        name: String,
        /// Where objects go: s3://bucket/prefix/ (the bucket must exist)
        #[arg(long, value_name = "S3_URL", value_parser = s3_url)]
        to: (String, Option<String>),
        /// Read this Kinesis data stream (name or ARN) instead of taking
        /// PutRecord calls (DeliveryStreamType KinesisStreamAsSource)
        #[arg(long, value_name = "STREAM")]
        from_stream: Option<String>,
        /// GZIP-compress each object
        #[arg(long)]
        gzip: bool,
        /// Buffering hints: size, interval or both [default: Firehose's, 5MB,300s]
        #[arg(long, value_name = "5MB,60s", value_parser = buffer_hints)]
        buffer: Option<(Option<i32>, Option<i32>)>,
        /// Prefix for records that fail processing or delivery
        #[arg(long)]
        error_prefix: Option<String>,
        /// The IAM role Firehose assumes (needed against AWS; Ripstream only records it)
        #[arg(
            long,
            default_value = "arn:aws:iam::000000000000:role/ripstream-firehose"
        )]
        role_arn: String,
    },
    /// Send records: DATA as one record, or each line of --file as one
    Put(FirehosePutArgs),
    /// List delivery streams
    List,
    /// Show a delivery stream and its destination
    Describe {
        #[arg(value_parser = delivery_stream_name)]
        name: String,
    },
    /// Delete a delivery stream (records not yet delivered are dropped)
    Delete {
        #[arg(value_parser = delivery_stream_name)]
        name: String,
    },
}

#[derive(Debug, Args)]
struct FirehosePutArgs {
    #[arg(value_parser = delivery_stream_name)]
    name: String,
    /// The record's data (UTF-8 text); omit with --file
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    data: Option<String>,
    /// Send one record per line of this file (`-` for standard input), in
    /// batches of up to 500 records or 4 MiB
    #[arg(long)]
    file: Option<PathBuf>,
    /// Send each record as given, without the newline the command appends
    /// (Firehose concatenates records as they are)
    #[arg(long)]
    no_newline: bool,
}

async fn client(ep: &Endpoint) -> Client {
    let conf = crate::cli::sdk_config(ep).await;
    let mut builder = aws_sdk_firehose::config::Builder::from(&conf);
    if conf.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    Client::from_conf(builder.build())
}

pub async fn run(cmd: FirehoseCommand) -> Result<()> {
    let c = client(&cmd.endpoint).await;
    match cmd.action {
        FirehoseAction::Create {
            name,
            to: (bucket, prefix),
            from_stream,
            gzip,
            buffer,
            error_prefix,
            role_arn,
        } => {
            let source = match from_stream {
                Some(s) => Some(stream_arn(&cmd.endpoint, &s).await?),
                None => None,
            };
            create(
                &c,
                &name,
                &bucket,
                prefix,
                source,
                gzip,
                buffer,
                error_prefix,
                role_arn,
            )
            .await
        }
        FirehoseAction::Put(args) => put(&c, args).await,
        FirehoseAction::List => {
            let mut start: Option<String> = None;
            loop {
                let page = c
                    .list_delivery_streams()
                    .set_exclusive_start_delivery_stream_name(start.clone())
                    .send()
                    .await
                    .map_err(sdk_error)?;
                for n in page.delivery_stream_names() {
                    println!("{n}");
                }
                match (
                    page.has_more_delivery_streams(),
                    page.delivery_stream_names().last(),
                ) {
                    (true, Some(last)) => start = Some(last.clone()),
                    _ => return Ok(()),
                }
            }
        }
        FirehoseAction::Describe { name } => describe(&c, &name).await,
        FirehoseAction::Delete { name } => {
            c.delete_delivery_stream()
                .delivery_stream_name(&name)
                .send()
                .await
                .map_err(sdk_error)?;
            println!("deleted delivery stream {name}");
            Ok(())
        }
    }
}

/// The ARN of a Kinesis stream given by name or ARN, as Data Streams
/// reports it (so it is right for any region and account).
async fn stream_arn(ep: &Endpoint, stream: &str) -> Result<String> {
    if stream.starts_with("arn:") {
        return Ok(stream.to_string());
    }
    let k = crate::cli::client(ep).await;
    let d = k
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("cannot find the Kinesis stream {stream}"))?;
    Ok(d.stream_description_summary()
        .context("no stream summary in the response")?
        .stream_arn()
        .to_string())
}

#[allow(clippy::too_many_arguments)]
async fn create(
    c: &Client,
    name: &str,
    bucket: &str,
    prefix: Option<String>,
    source: Option<String>,
    gzip: bool,
    buffer: Option<(Option<i32>, Option<i32>)>,
    error_prefix: Option<String>,
    role_arn: String,
) -> Result<()> {
    let mut dest = ExtendedS3DestinationConfiguration::builder()
        .role_arn(role_arn.clone())
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .set_prefix(prefix)
        .set_error_output_prefix(error_prefix);
    if gzip {
        dest = dest.compression_format(CompressionFormat::Gzip);
    }
    if let Some((size, secs)) = buffer {
        dest = dest.buffering_hints(
            BufferingHints::builder()
                .set_size_in_mbs(size)
                .set_interval_in_seconds(secs)
                .build(),
        );
    }
    let mut req = c
        .create_delivery_stream()
        .delivery_stream_name(name)
        .extended_s3_destination_configuration(dest.build()?);
    if let Some(arn) = source {
        req = req
            .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
            .kinesis_stream_source_configuration(
                KinesisStreamSourceConfiguration::builder()
                    .kinesis_stream_arn(arn)
                    .role_arn(role_arn)
                    .build()?,
            );
    }
    req.send().await.map_err(sdk_error)?;
    let spinner =
        ProgressBar::new_spinner().with_message(format!("waiting for {name} to become ACTIVE"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    loop {
        let d = c
            .describe_delivery_stream()
            .delivery_stream_name(name)
            .send()
            .await
            .map_err(sdk_error)?;
        let d = d
            .delivery_stream_description()
            .context("no description in the response")?;
        match d.delivery_stream_status() {
            DeliveryStreamStatus::Active => {
                spinner.finish_and_clear();
                println!(
                    "created delivery stream {name} ({}) into s3://{bucket}/",
                    d.delivery_stream_arn()
                );
                return Ok(());
            }
            DeliveryStreamStatus::CreatingFailed => {
                spinner.finish_and_clear();
                bail!("delivery stream {name} could not be created");
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn describe(c: &Client, name: &str) -> Result<()> {
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name(name)
        .send()
        .await
        .map_err(sdk_error)?;
    let d = d
        .delivery_stream_description()
        .context("no description in the response")?;
    println!("name:        {}", d.delivery_stream_name());
    println!("arn:         {}", d.delivery_stream_arn());
    println!("status:      {}", d.delivery_stream_status().as_str());
    println!("type:        {}", d.delivery_stream_type().as_str());
    if let Some(k) = d
        .source()
        .and_then(|s| s.kinesis_stream_source_description())
    {
        println!("source:      {}", k.kinesis_stream_arn().unwrap_or("?"));
    }
    println!("version:     {}", d.version_id());
    for dest in d.destinations() {
        let Some(s3) = dest.extended_s3_destination_description() else {
            println!("destination: {} (not S3)", dest.destination_id());
            continue;
        };
        let bucket = s3.bucket_arn().trim_start_matches("arn:aws:s3:::");
        println!(
            "destination: {} s3://{bucket}/{}",
            dest.destination_id(),
            s3.prefix().unwrap_or("")
        );
        if let Some(p) = s3.error_output_prefix() {
            println!("errors to:   s3://{bucket}/{p}");
        }
        println!("compression: {}", s3.compression_format().as_str());
        if let Some(h) = s3.buffering_hints() {
            println!(
                "buffering:   {} MB or {} s",
                h.size_in_mbs().unwrap_or(5),
                h.interval_in_seconds().unwrap_or(300)
            );
        }
    }
    Ok(())
}

/// Sends one batch, sending again (with backoff) the records Firehose
/// refused, until all are in or `ATTEMPTS` ran out; returns how many were
/// stored and the last error of those that were not.
async fn send_batch(c: &Client, name: &str, batch: Vec<Vec<u8>>) -> (u64, Option<String>) {
    let mut pending = batch;
    let mut stored = 0u64;
    let mut wait = Duration::from_millis(100);
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        let records: Vec<Record> = pending
            .iter()
            .filter_map(|d| Record::builder().data(Blob::new(d.clone())).build().ok())
            .collect();
        match c
            .put_record_batch()
            .delivery_stream_name(name)
            .set_records(Some(records))
            .send()
            .await
        {
            Ok(out) => {
                let mut again = Vec::new();
                for (r, d) in out.request_responses().iter().zip(pending) {
                    match r.error_code() {
                        None => stored += 1,
                        Some(code) => {
                            last_error =
                                Some(format!("{code}: {}", r.error_message().unwrap_or_default()));
                            again.push(d);
                        }
                    }
                }
                pending = again;
            }
            Err(e) => {
                let e = sdk_error(e);
                // Only throttling and server faults are worth retrying.
                let retry = e.to_string().starts_with("ServiceUnavailableException")
                    || e.to_string().starts_with("InternalFailure");
                last_error = Some(e.to_string());
                if !retry {
                    break;
                }
            }
        }
        if pending.is_empty() {
            return (stored, None);
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
    (stored, last_error)
}

async fn put(c: &Client, args: FirehosePutArgs) -> Result<()> {
    let newline = |mut v: Vec<u8>| {
        if !args.no_newline {
            v.push(b'\n');
        }
        v
    };
    let Some(path) = args.file else {
        let data = newline(args.data.unwrap_or_default().into_bytes());
        let out = c
            .put_record()
            .delivery_stream_name(&args.name)
            .record(Record::builder().data(Blob::new(data)).build()?)
            .send()
            .await
            .map_err(sdk_error)?;
        println!("{}", out.record_id());
        return Ok(());
    };
    // A missing or refused stream fails the command before any input is read.
    c.describe_delivery_stream()
        .delivery_stream_name(&args.name)
        .send()
        .await
        .map_err(sdk_error)?;
    let (reader, bar) = crate::cli::open_input(&path)?;
    let (mut stored, mut failed, mut read_bytes, mut requests) = (0u64, 0u64, 0u64, 0u64);
    let mut last_error: Option<String> = None;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut lines = reader.split(b'\n');
    loop {
        let line = lines.next().transpose().context("cannot read input")?;
        let flush = !batch.is_empty()
            && match &line {
                None => true,
                Some(l) => {
                    batch.len() == BATCH_RECORDS
                        || batch_bytes + l.len() + usize::from(!args.no_newline) > BATCH_BYTES
                }
            };
        if flush {
            let sent = batch.len() as u64;
            let (ok, err) = send_batch(c, &args.name, std::mem::take(&mut batch)).await;
            requests += 1;
            stored += ok;
            failed += sent - ok;
            if err.is_some() {
                last_error = err;
            }
            batch_bytes = 0;
            bar.set_position(read_bytes);
            bar.set_message(format!("{stored} records"));
        }
        let Some(mut l) = line else { break };
        read_bytes += l.len() as u64 + 1;
        if l.last() == Some(&b'\r') {
            l.pop();
        }
        if l.is_empty() {
            continue;
        }
        let data = newline(l);
        if data.len() > MAX_RECORD {
            failed += 1;
            last_error = Some(format!(
                "a line of {} bytes is larger than Firehose's largest record ({MAX_RECORD} bytes)",
                data.len()
            ));
            continue;
        }
        batch_bytes += data.len();
        batch.push(data);
    }
    bar.finish_and_clear();
    println!(
        "put {stored} records to {} in {requests} batches",
        args.name
    );
    if failed > 0 {
        let e = last_error.unwrap_or_default();
        bail!("{failed} records were not stored: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_before_any_request() {
        assert_eq!(
            s3_url("s3://logs/app/"),
            Ok(("logs".into(), Some("app/".into())))
        );
        assert_eq!(s3_url("s3://logs"), Ok(("logs".into(), None)));
        assert!(s3_url("logs/app").is_err());
        assert!(s3_url("s3://Bad_Bucket/").is_err());
        assert_eq!(buffer_hints("5MB,60s"), Ok((Some(5), Some(60))));
        assert_eq!(buffer_hints("1s"), Ok((None, Some(1))));
        assert_eq!(buffer_hints("64MiB"), Ok((Some(64), None)));
        assert!(buffer_hints("500MB").is_err());
        assert!(buffer_hints("901s").is_err());
        assert!(buffer_hints("fast").is_err());
        assert!(delivery_stream_name("ok-name.1").is_ok());
        assert!(delivery_stream_name(&"x".repeat(65)).is_err());
    }
}
