//! `ripstream`: the server (`ripstream serve`) and a command line for humans.

mod bench;
mod bench_firehose;
mod cli;
mod config;
mod firehose_cli;
mod iceberg;
mod schemas;
mod sink;
mod source;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Ripstream: a durable, self-hosted server for the Amazon Kinesis Data Streams API.
///
/// Any Kinesis client works against it by pointing its endpoint at the server.
#[derive(Debug, Parser)]
#[command(name = "ripstream", version, propagate_version = true)]
struct Cli {
    /// Log filter, e.g. info, debug, ripstream_log=trace [env: RIPSTREAM_LOG]
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server
    Serve(Box<config::ServeArgs>),
    /// Create, list, describe and delete streams
    Stream(cli::StreamCommand),
    /// Write records to a stream
    Put(cli::PutArgs),
    /// Read records from every shard of a stream
    Tail(cli::TailArgs),
    /// Create, feed, list, describe and delete Firehose delivery streams
    Firehose(firehose_cli::FirehoseCommand),
    /// Measure a Kinesis endpoint: throughput, latency, and that nothing is lost
    Bench(bench::BenchArgs),
}

fn init_logging(level: Option<&str>) {
    let filter = level
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env("RIPSTREAM_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

// The request path allocates per record (JSON values, base64 buffers) from
// many threads; mimalloc measured faster than glibc's allocator there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args, cli.log_level).await,
        other => {
            init_logging(Some(cli.log_level.as_deref().unwrap_or("warn")));
            match other {
                Command::Stream(c) => cli::stream(c).await,
                Command::Put(a) => cli::put(a).await,
                Command::Tail(a) => cli::tail(a).await,
                Command::Firehose(c) => firehose_cli::run(c).await,
                Command::Bench(a) => bench::run(a).await,
                Command::Serve(_) => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once, even where a message already embeds its source.
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("error: {}", ripstream_api::Chain(e));
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: config::ServeArgs, log_level: Option<String>) -> Result<()> {
    let file = match &args.config {
        Some(path) => config::FileConfig::load(path)?,
        None => config::FileConfig::default(),
    };
    init_logging(log_level.or_else(|| file.log_level.clone()).as_deref());
    let config::Settings {
        server: cfg,
        service,
    } = config::resolve(&args, &file)?;
    let firehose_cfg = config::firehose(&args, &file, &service)?;
    let objects_root = config::object_store_root(&args, &file, &service.data_dir)?;
    let upload_expiry = config::object_store_upload_expiry(&args, &file)?;
    let external_store = config::external_store(&args, &file, &service.region)?;
    tracing::info!(
        data_dir = %service.data_dir.display(),
        fsync = %service.fsync,
        quotas = %service.quotas,
        region = %service.region,
        account = %service.account_id,
        "starting ripstream {}",
        env!("CARGO_PKG_VERSION")
    );
    match &cfg.principals {
        Some(p) => tracing::info!(
            principals = p.len(),
            "requests must be signed (SigV4) by a configured principal"
        ),
        None => tracing::warn!(
            "no credentials configured: accepting unsigned requests from anyone who can reach {} (use --credentials to require signatures)",
            cfg.listen
        ),
    }
    tracing::info!(
        max_connections = cfg.max_connections,
        per_source = cfg.max_connections_per_source,
        handshake_ms = cfg.handshake_timeout.as_millis() as u64,
        idle_ms = cfg.idle_timeout.as_millis() as u64,
        max_in_flight = cfg.max_in_flight,
        max_body_bytes = cfg.max_body_bytes,
        max_buffered_bytes = cfg.max_buffered_bytes,
        "front-door limits"
    );
    if !cfg.listen.ip().is_loopback() && cfg.metrics_token.is_none() {
        tracing::warn!(
            "GET /metrics is refused on {} until --metrics-token is set",
            cfg.listen
        );
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    // Opened once; every service gets it, and it is closed last.
    let ctx = ripstream_runtime::ServiceContext::open(service.context())
        .context("cannot open the data directory")?;
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(ripstream_runtime::metrics::LogCollector));
    let kinesis = ripstream_kinesis::Service::open_in(&ctx, service.clone(), &mut registry)
        .await
        .context("cannot open the data directory")?;
    let dynamo = ripstream_dynamo::Dynamo::open_in(&ctx)
        .context("cannot open the DynamoDB-compatible tables")?;
    // The object store's SSE keys live in the server's keyring (Data
    // Streams created it if it was missing); the S3-managed ones are added
    // on first start, as AWS creates aws/s3 on first use.
    let keyring_path = service
        .keyring
        .clone()
        .unwrap_or_else(|| service.data_dir.join("keyring.toml"));
    ripstream_keyring::Keyring::ensure_aliases(
        &keyring_path,
        &[
            ripstream_keyring::S3_MANAGED_ALIAS,
            ripstream_keyring::SSE_S3_ALIAS,
        ],
    )
    .context("cannot add the S3 keys to the keyring")?;
    let object_keys = ripstream_keyring::Keyring::open(&keyring_path, &ctx.region, &ctx.account_id)
        .context("cannot open the keyring")?;
    let objects = ripstream_objects::Objects::open_root(&objects_root)
        .with_context(|| format!("cannot open the object store at {}", objects_root.display()))?
        .with_upload_expiry(upload_expiry)
        .with_keyring(Arc::new(object_keys));
    tracing::info!(root = %objects.root().display(), "object store (S3 API)");
    let glue = ripstream_glue::Glue::open_in(&ctx).context("cannot open the Glue Data Catalog")?;
    // Firehose delivers into the same store the S3 API serves.
    let firehose = ripstream_firehose::Firehose::open_in(
        &ctx,
        firehose_cfg,
        ripstream_firehose::Connections {
            objects: match &external_store {
                Some(x) => {
                    tracing::info!(endpoint = %x.endpoint, region = %x.region, signed = x.access_key_id.is_some(), "Firehose delivers to an external S3 endpoint");
                    Arc::new(sink::ExternalS3::new(
                        x.endpoint.clone(),
                        x.region.clone(),
                        x.access_key_id.clone(),
                        x.secret_access_key.clone(),
                    ))
                }
                None => Arc::new(sink::EmbeddedObjects::new(objects.clone())),
            },
            kinesis: Some(Arc::new(source::KinesisStreams::new(kinesis.clone()))),
            // Format conversion reads its schemas from the Glue service.
            schemas: Some(Arc::new(schemas::GlueSchemas::new(
                glue.clone(),
                &ctx.region,
            ))),
            // Redshift destinations load into PostgreSQL.
            tables: Some(Arc::new(ripstream_warehouse::Postgres::new())),
            // Iceberg tables live in the embedded store only: their
            // metadata and data files are read back through it.
            iceberg: match &external_store {
                Some(_) => None,
                None => Some(Arc::new(iceberg::GlueIcebergTables::new(
                    ripstream_iceberg::Tables::new(glue.clone(), objects.clone()),
                ))),
            },
        },
        &mut registry,
    )
    .await
    .context("cannot open the Firehose delivery streams")?;
    // Adding a service is one crate and one entry here. The first answers
    // requests no service claims.
    let services: Vec<Arc<dyn ripstream_api::Service>> = vec![
        Arc::new(ripstream_kinesis::api::KinesisApi::new(kinesis)),
        Arc::new(ripstream_dynamo::api::DynamoApi::new(dynamo)),
        Arc::new(ripstream_sts::Sts::new(&ctx.region, &ctx.account_id)),
        Arc::new(ripstream_firehose::api::FirehoseApi::new(firehose)),
        Arc::new(ripstream_glue::api::GlueApi::new(glue)),
        Arc::new(ripstream_objects::S3Api::new(
            objects,
            &ctx.region,
            &ctx.account_id,
        )),
    ];
    let server = ripstream_server::Server::bind(cfg, registry, services).await?;
    let addr = server.local_addr()?;
    // A machine-readable line on stdout, for scripts and tests that start the
    // server on port 0.
    println!("ripstream listening on {scheme}://{addr}");
    let served = server.run(shutdown_signal()).await;
    ctx.close().await;
    tracing::info!("shutdown complete");
    Ok(served?)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}
