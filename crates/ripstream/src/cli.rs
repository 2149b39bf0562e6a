//! The human CLI. It speaks to the server through the official AWS SDK, so it
//! works against AWS itself too (`--endpoint https://kinesis.<region>.amazonaws.com`).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::BehaviorVersion;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{ShardIteratorType, StreamMode, StreamModeDetails};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ripstream_client::consumer::{
    Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker, WorkerConfig,
};
use ripstream_client::producer::{Producer, ProducerConfig, PutFuture};

/// Where the server is; shared by every client command.
#[derive(Debug, Args, Clone)]
pub struct Endpoint {
    /// Kinesis endpoint URL
    #[arg(
        long,
        global = true,
        env = "RIPSTREAM_ENDPOINT",
        default_value = "http://127.0.0.1:4567"
    )]
    pub endpoint: String,
    /// Region to sign requests for [default: from the AWS configuration, else us-east-1]
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
}

#[derive(Debug, Args)]
pub struct StreamCommand {
    #[command(subcommand)]
    action: StreamAction,
    #[command(flatten)]
    endpoint: Endpoint,
}

/// Checks a stream name as Kinesis does, so that a bad one fails at once.
pub(crate) fn stream_name(s: &str) -> Result<String, String> {
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid stream name: stream names have 1 to 128 characters, each a letter, a digit, '_', '.' or '-'"
        ))
    }
}

/// Checks a consumer group name: it names the group's DynamoDB lease table,
/// and DynamoDB refuses such a request however often it is retried.
fn group_name(s: &str) -> Result<String, String> {
    let ok = (3..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid group name: the group names its lease table, and DynamoDB table names have 3 to 255 characters, each a letter, a digit, '_', '.' or '-'"
        ))
    }
}

#[derive(Debug, Subcommand)]
enum StreamAction {
    /// Create a stream and wait until it is ACTIVE
    Create {
        #[arg(value_parser = stream_name)]
        name: String,
        /// Number of shards (provisioned mode)
        #[arg(long, default_value_t = 1, conflicts_with = "on_demand")]
        shards: i32,
        /// Create an on-demand stream instead
        #[arg(long)]
        on_demand: bool,
    },
    /// List streams
    List,
    /// Show a stream and its shards
    Describe {
        #[arg(value_parser = stream_name)]
        name: String,
    },
    /// Delete a stream and all its records
    Delete {
        #[arg(value_parser = stream_name)]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Stream to write to
    #[arg(value_parser = stream_name)]
    stream: String,
    /// The record's data (UTF-8 text); omit with --file
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    data: Option<String>,
    /// Partition key [default: a random key per record]
    #[arg(long)]
    key: Option<String>,
    /// Write one record per line of this file (`-` for standard input), in batches
    #[arg(long)]
    file: Option<PathBuf>,
    /// Pack lines bound for one shard into KPL aggregated records (readable by the KCL)
    #[arg(long, requires = "file")]
    aggregate: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Stream to read
    #[arg(value_parser = stream_name)]
    stream: String,
    /// Where to start: trim-horizon, latest, or a time (RFC 3339, e.g. 2026-11-22T10:00:00Z)
    #[arg(long, default_value = "trim-horizon")]
    from: String,
    /// Keep waiting for new records instead of stopping at the end
    #[arg(long)]
    follow: bool,
    /// Print shard, sequence number and partition key before each record
    #[arg(long, short)]
    verbose: bool,
    /// Read as a member of a consumer group: `tail` processes with the same
    /// group share the shards through a lease table named after the group,
    /// checkpoint as they go, and resume there (implies --follow). The lease
    /// table takes the group's name, so it needs 3 to 255 characters of
    /// letters, digits, '_', '.' and '-'
    #[arg(long, value_name = "NAME", value_parser = group_name)]
    group: Option<String>,
    #[command(flatten)]
    endpoint: Endpoint,
}

fn has_aws_credentials() -> bool {
    std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
        || std::env::var_os("AWS_PROFILE").is_some()
        || std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
        || std::env::var_os("HOME")
            .is_some_and(|h| PathBuf::from(h).join(".aws/credentials").exists())
}

/// An SDK client for the endpoint. Without AWS credentials in the environment
/// it signs with placeholder keys, which a Ripstream server without
/// configured principals accepts.
pub async fn client(ep: &Endpoint) -> Client {
    let conf = sdk_config(ep).await;
    let mut builder = aws_sdk_kinesis::config::Builder::from(&conf);
    if conf.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    Client::from_conf(builder.build())
}

/// The shared SDK configuration of the client commands.
pub(crate) async fn sdk_config(ep: &Endpoint) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).endpoint_url(&ep.endpoint);
    let configured = std::env::var_os("AWS_DEFAULT_REGION").is_some()
        || std::env::var_os("HOME").is_some_and(|h| PathBuf::from(h).join(".aws/config").exists());
    match &ep.region {
        Some(r) => loader = loader.region(aws_config::Region::new(r.clone())),
        // Without any configuration, skip the provider chain (and its slow
        // instance-metadata probe) and sign for us-east-1.
        None if !configured => loader = loader.region(aws_config::Region::new("us-east-1")),
        None => {}
    }
    if !has_aws_credentials() {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            "ripstream",
            "ripstream",
            None,
            None,
            "ripstream-cli",
        ));
    }
    loader.load().await
}

/// A failed SDK call as one line: the AWS error type and message. Every
/// AWS SDK crate shares these smithy types, so this serves the Firehose
/// commands too.
pub(crate) fn sdk_error<E>(e: aws_sdk_kinesis::error::SdkError<E>) -> anyhow::Error
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            anyhow!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("")
            )
        }
        _ => anyhow!("{}", DisplayErrorContext(e)),
    }
}

pub async fn stream(cmd: StreamCommand) -> Result<()> {
    let c = client(&cmd.endpoint).await;
    match cmd.action {
        StreamAction::Create {
            name,
            shards,
            on_demand,
        } => {
            let mut req = c.create_stream().stream_name(&name);
            if on_demand {
                req = req.stream_mode_details(
                    StreamModeDetails::builder()
                        .stream_mode(StreamMode::OnDemand)
                        .build()?,
                );
            } else {
                req = req.shard_count(shards);
            }
            req.send().await.map_err(sdk_error)?;
            let spinner = ProgressBar::new_spinner()
                .with_message(format!("waiting for {name} to become ACTIVE"));
            spinner.enable_steady_tick(Duration::from_millis(100));
            loop {
                let d = c
                    .describe_stream_summary()
                    .stream_name(&name)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                let s = d
                    .stream_description_summary()
                    .context("no summary in the response")?;
                if s.stream_status().as_str() == "ACTIVE" {
                    spinner.finish_and_clear();
                    println!(
                        "created stream {name} ({} shards, {})",
                        s.open_shard_count(),
                        s.stream_arn()
                    );
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        StreamAction::List => {
            let mut pages = c.list_streams().into_paginator().send();
            while let Some(page) = pages.next().await {
                for name in page.map_err(sdk_error)?.stream_names() {
                    println!("{name}");
                }
            }
            Ok(())
        }
        StreamAction::Describe { name } => {
            let d = c
                .describe_stream_summary()
                .stream_name(&name)
                .send()
                .await
                .map_err(sdk_error)?;
            let s = d
                .stream_description_summary()
                .context("no summary in the response")?;
            println!("name:        {}", s.stream_name());
            println!("arn:         {}", s.stream_arn());
            println!("status:      {}", s.stream_status().as_str());
            if let Some(m) = s.stream_mode_details() {
                println!("mode:        {}", m.stream_mode().as_str());
            }
            println!("retention:   {} hours", s.retention_period_hours());
            println!("open shards: {}", s.open_shard_count());
            println!();
            println!(
                "{:<22} {:>40} {:>40}  parent",
                "shard", "starting hash key", "ending hash key"
            );
            {
                for sh in &list_all_shards(&c, &name).await? {
                    let range = sh.hash_key_range();
                    println!(
                        "{:<22} {:>40} {:>40}  {}{}",
                        sh.shard_id(),
                        range.map(|r| r.starting_hash_key()).unwrap_or(""),
                        range.map(|r| r.ending_hash_key()).unwrap_or(""),
                        sh.parent_shard_id().unwrap_or("-"),
                        if sh
                            .sequence_number_range()
                            .and_then(|r| r.ending_sequence_number())
                            .is_some()
                        {
                            " (closed)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(())
        }
        StreamAction::Delete { name } => {
            c.delete_stream()
                .stream_name(&name)
                .send()
                .await
                .map_err(sdk_error)?;
            println!("deleted stream {name}");
            Ok(())
        }
    }
}

fn random_key() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", n ^ u128::from(std::process::id()) << 64)
}

pub async fn put(args: PutArgs) -> Result<()> {
    let c = client(&args.endpoint).await;
    let Some(path) = args.file else {
        let data = args.data.unwrap_or_default();
        let out = c
            .put_record()
            .stream_name(&args.stream)
            .partition_key(args.key.unwrap_or_else(random_key))
            .data(Blob::new(data.into_bytes()))
            .send()
            .await
            .map_err(sdk_error)?;
        println!("{} {}", out.shard_id(), out.sequence_number());
        return Ok(());
    };
    // The producer fails each record on its own; a stream that is missing or
    // refused fails the command here, before any input is read.
    c.describe_stream_summary()
        .stream_name(&args.stream)
        .send()
        .await
        .map_err(sdk_error)?;
    let (reader, bar) = crate::cli::open_input(&path)?;
    let mut cfg = ProducerConfig::new(&args.stream);
    cfg.linger = Duration::from_millis(50);
    cfg.aggregation = args.aggregate;
    let producer = Producer::new(c, cfg);
    // Acknowledgements are checked in order as they come; the producer's
    // bounded buffer keeps memory flat however large the input.
    let mut acks: VecDeque<PutFuture> = VecDeque::new();
    let (mut stored, mut read_bytes, mut lines) = (0u64, 0u64, 0u64);
    let mut failure: Option<String> = None;
    for line in reader.lines() {
        let line = line.context("cannot read input")?;
        read_bytes += line.len() as u64 + 1;
        if line.is_empty() {
            continue;
        }
        let key = args.key.clone().unwrap_or_else(random_key);
        acks.push_back(producer.put(key, line.into_bytes()).await?);
        while acks.len() > 20_000 {
            if let Some(a) = acks.pop_front() {
                match a.await {
                    Ok(_) => stored += 1,
                    Err(e) => failure = Some(e.to_string()),
                }
            }
        }
        lines += 1;
        if lines.is_multiple_of(256) {
            bar.set_position(read_bytes);
            bar.set_message(format!("{} records", producer.metrics().user_records_sent));
        }
    }
    producer.flush().await;
    for a in acks {
        match a.await {
            Ok(_) => stored += 1,
            Err(e) => failure = Some(e.to_string()),
        }
    }
    bar.finish_and_clear();
    let m = producer.metrics();
    println!(
        "put {stored} records to {} in {} requests ({} retried)",
        args.stream, m.requests, m.retries
    );
    if let Some(e) = failure {
        bail!("{} records were not stored: {e}", m.user_records_failed);
    }
    Ok(())
}

/// The lines a `put --file` reads (`-` for standard input) and the bar
/// that shows how far it got: by bytes for a file, a spinner for a pipe.
pub(crate) fn open_input(path: &std::path::Path) -> Result<(Box<dyn BufRead>, ProgressBar)> {
    let (reader, total): (Box<dyn BufRead>, Option<u64>) = if path.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = f.metadata().map(|m| m.len()).ok();
        (Box::new(std::io::BufReader::new(f)), len)
    };
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner(),
    };
    Ok((reader, bar))
}

/// Every shard of a stream, following ListShards' NextToken.
async fn list_all_shards(c: &Client, stream: &str) -> Result<Vec<aws_sdk_kinesis::types::Shard>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => c.list_shards().next_token(t),
            None => c.list_shards().stream_name(stream),
        };
        let page = req.send().await.map_err(sdk_error)?;
        out.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}

/// Reading from the trim horizon starts at the oldest shards and reaches their
/// children through ChildShards, so each key's records come out in order;
/// other positions read every listed shard.
fn from_parents_only(ty: &ShardIteratorType) -> bool {
    matches!(ty, ShardIteratorType::TrimHorizon)
}

fn parse_from(from: &str) -> Result<(ShardIteratorType, Option<DateTime>)> {
    match from {
        "trim-horizon" | "TRIM_HORIZON" => Ok((ShardIteratorType::TrimHorizon, None)),
        "latest" | "LATEST" => Ok((ShardIteratorType::Latest, None)),
        t => {
            let at = humantime::parse_rfc3339_weak(t).with_context(|| {
                format!("--from must be trim-horizon, latest or an RFC 3339 time, not {t:?}")
            })?;
            let ms = at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            Ok((
                ShardIteratorType::AtTimestamp,
                Some(DateTime::from_millis(ms)),
            ))
        }
    }
}

pub async fn tail(args: TailArgs) -> Result<()> {
    if let Some(group) = args.group.clone() {
        return tail_group(args, group).await;
    }
    let c = client(&args.endpoint).await;
    let (ty, at) = parse_from(&args.from)?;
    let listed = list_all_shards(&c, &args.stream).await?;
    let ids: Vec<&str> = listed.iter().map(|s| s.shard_id()).collect();
    let mut shards: Vec<String> = listed
        .iter()
        .filter(|s| {
            !from_parents_only(&ty) || s.parent_shard_id().is_none_or(|p| !ids.contains(&p))
        })
        .map(|s| s.shard_id().to_string())
        .collect();
    let mut iterators: HashMap<String, Option<String>> = HashMap::new();
    for id in &shards {
        let it = c
            .get_shard_iterator()
            .stream_name(&args.stream)
            .shard_id(id)
            .shard_iterator_type(ty.clone())
            .set_timestamp(at)
            .send()
            .await
            .map_err(sdk_error)?;
        iterators.insert(id.clone(), it.shard_iterator().map(String::from));
    }
    let stdout = std::io::stdout();
    loop {
        let mut all_caught_up = true;
        let mut open = 0;
        for i in 0..shards.len() {
            let id = shards[i].clone();
            let Some(Some(iter)) = iterators.get(&id).cloned() else {
                continue;
            };
            open += 1;
            let out = c
                .get_records()
                .shard_iterator(iter)
                .send()
                .await
                .map_err(sdk_error)?;
            {
                let mut w = stdout.lock();
                for r in out.records() {
                    if args.verbose {
                        write!(
                            w,
                            "{id} {} {} ",
                            r.sequence_number(),
                            r.partition_key().unwrap_or_default()
                        )?;
                    }
                    w.write_all(r.data().as_ref())?;
                    w.write_all(b"\n")?;
                }
                w.flush()?;
            }
            if !out.records().is_empty() || out.millis_behind_latest().unwrap_or(0) > 0 {
                all_caught_up = false;
            }
            iterators.insert(id, out.next_shard_iterator().map(String::from));
            for child in out.child_shards() {
                if !iterators.contains_key(child.shard_id()) {
                    let it = c
                        .get_shard_iterator()
                        .stream_name(&args.stream)
                        .shard_id(child.shard_id())
                        .shard_iterator_type(ShardIteratorType::TrimHorizon)
                        .send()
                        .await
                        .map_err(sdk_error)?;
                    shards.push(child.shard_id().to_string());
                    iterators.insert(
                        child.shard_id().to_string(),
                        it.shard_iterator().map(String::from),
                    );
                    all_caught_up = false;
                }
            }
        }
        if open == 0 || (all_caught_up && !args.follow) {
            return Ok(());
        }
        if all_caught_up {
            // Each shard allows 5 reads a second; idle polling stays well under it.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Prints records and checkpoints after each batch.
struct Printer {
    shard: String,
    verbose: bool,
}

impl RecordProcessor for Printer {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        {
            let stdout = std::io::stdout();
            let mut w = stdout.lock();
            for r in &input.records {
                if self.verbose {
                    let _ = write!(
                        w,
                        "{} {} {} ",
                        self.shard, r.sequence_number, r.partition_key
                    );
                }
                let _ = w.write_all(&r.data);
                let _ = w.write_all(b"\n");
            }
            let _ = w.flush();
        }
        if let Err(e) = checkpointer.checkpoint().await {
            tracing::warn!(shard = %self.shard, error = %e, "checkpoint failed");
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        if let Err(e) = checkpointer.checkpoint().await {
            tracing::warn!(shard = %self.shard, error = %e, "checkpoint at shard end failed");
        }
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

/// `tail --group`: one worker of a consumer group, until Ctrl-C.
async fn tail_group(args: TailArgs, group: String) -> Result<()> {
    let kinesis = client(&args.endpoint).await;
    let dynamodb = dynamodb_client(&args.endpoint).await;
    let (ty, at) = parse_from(&args.from)?;
    // A missing stream or refused credentials fail here, at once.
    kinesis
        .describe_stream_summary()
        .stream_name(&args.stream)
        .send()
        .await
        .map_err(sdk_error)?;
    let position = match ty {
        ShardIteratorType::TrimHorizon => InitialPosition::TrimHorizon,
        ShardIteratorType::Latest => InitialPosition::Latest,
        _ => InitialPosition::AtTimestamp(
            UNIX_EPOCH
                + Duration::from_millis(
                    at.map(|t| t.to_millis().unwrap_or(0)).unwrap_or(0).max(0) as u64
                ),
        ),
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let worker_id = format!("{host}-{}-{}", std::process::id(), &random_key()[..8]);
    let cfg = WorkerConfig::new(&group, &args.stream, &worker_id)
        .initial_position(position)
        .idle_time_between_reads(Duration::from_millis(250))
        .shard_sync_interval(Duration::from_secs(10));
    let verbose = args.verbose;
    eprintln!("worker {worker_id} joined group {group} on {}", args.stream);
    let worker = Worker::start(kinesis, dynamodb, cfg, move |shard: &str| Printer {
        shard: shard.to_string(),
        verbose,
    });
    // The worker retries what may pass (throttling, a server restarting)
    // and stops on what cannot (see `ConsumerError::is_permanent`): that ends
    // the command with the error.
    tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            signal.context("cannot wait for Ctrl-C")?;
            eprintln!("checkpointing and leaving the group");
            worker.shutdown().await;
            Ok(())
        }
        e = worker.failed() => {
            worker.abort();
            Err(anyhow!("consumer group {group} on {} stopped: {e}", args.stream))
        }
    }
}

/// A DynamoDB client for the same endpoint (the server serves lease tables).
async fn dynamodb_client(ep: &Endpoint) -> aws_sdk_dynamodb::Client {
    let conf = sdk_config(ep).await;
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&conf);
    if conf.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}
