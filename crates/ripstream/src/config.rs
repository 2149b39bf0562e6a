//! Server settings from flags, `RIPSTREAM_*` environment variables and a TOML
//! file, in that order of precedence, over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ripstream_kinesis::{FsyncPolicy, ServiceConfig};
use ripstream_server::ServerConfig;
use serde::Deserialize;

/// Flags of `ripstream serve`. Each also reads a `RIPSTREAM_*` variable.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:4567]
    #[arg(long, env = "RIPSTREAM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for streams and records [default: ./ripstream-data]
    #[arg(long, env = "RIPSTREAM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML file with any of these settings (flags and variables win)
    #[arg(long, env = "RIPSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// TOML file of principals (access keys, secrets, policies); with it every
    /// request must carry a valid SigV4 signature
    #[arg(long, env = "RIPSTREAM_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// Accept unsigned requests even on a non-loopback address (dangerous)
    #[arg(long, env = "RIPSTREAM_INSECURE_ALLOW_ANONYMOUS")]
    pub insecure_allow_anonymous: bool,
    /// Serve `Content-Type: application/json` requests as JSON 1.1 (AWS
    /// answers them with the old Coral protocol's errors, which is the default)
    #[arg(long, env = "RIPSTREAM_ALLOW_PLAIN_JSON")]
    pub allow_plain_json: bool,
    /// Without --credentials, also serve requests that carry no signature at
    /// all (by default they get AWS's MissingAuthenticationTokenException;
    /// any well-formed SigV4 signature is accepted without a key either way)
    #[arg(long, env = "RIPSTREAM_ALLOW_UNSIGNED_REQUESTS")]
    pub allow_unsigned_requests: bool,
    /// PEM certificate chain: serve HTTPS (HTTP/2 by ALPN) instead of cleartext
    #[arg(long, env = "RIPSTREAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "RIPSTREAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keyring of master keys for server-side encryption, standing in for KMS
    /// (keys for alias/aws/kinesis, alias/aws/s3 and alias/ripstream/sse-s3 added if missing)
    /// [default: <data-dir>/keyring.toml]
    #[arg(long, env = "RIPSTREAM_KEYRING")]
    pub keyring: Option<PathBuf>,
    /// Most connections served at once [default: 10000]
    #[arg(long, env = "RIPSTREAM_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections from one source address; more are closed at once
    /// [default: 1024, at most --max-connections]
    #[arg(long, env = "RIPSTREAM_MAX_CONNECTIONS_PER_SOURCE")]
    pub max_connections_per_source: Option<usize>,
    /// Time a new connection has for its TLS handshake and first bytes
    /// together, in milliseconds [default: 10000]
    #[arg(long, env = "RIPSTREAM_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// A connection with no request for this long is closed (HTTP/2 pings do
    /// not count), in milliseconds [default: 120000]
    #[arg(long, env = "RIPSTREAM_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Most requests handled at once before shedding with 503 [default: 4096]
    #[arg(long, env = "RIPSTREAM_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Most request-body bytes buffered across all in-flight requests before
    /// shedding with 503 [default: 1073741824]
    #[arg(long, env = "RIPSTREAM_MAX_BUFFERED_BYTES")]
    pub max_buffered_bytes: Option<usize>,
    /// Bearer token GET /metrics requires on a non-loopback listener
    /// (without it, /metrics is refused there)
    #[arg(long, env = "RIPSTREAM_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Region shown in ARNs [default: us-east-1]
    #[arg(long, env = "RIPSTREAM_REGION")]
    pub region: Option<String>,
    /// Account id shown in ARNs and messages [default: 000000000000]
    #[arg(long, env = "RIPSTREAM_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// When records are forced to disk before being acknowledged:
    /// always (fdatasync before every acknowledgement, shared by concurrent
    /// requests), interval:<ms> (acknowledge once written, sync every <ms>),
    /// or never (leave it to the OS) [default: always]
    #[arg(long, env = "RIPSTREAM_FSYNC")]
    pub fsync: Option<String>,
    /// AWS's quotas: aws (per shard 1 MiB/s and 1000 records/s in, 2 MiB/s
    /// and 5 reads/s out; per Firehose delivery stream AWS's DirectPut
    /// defaults for the region) or off [default: aws]
    #[arg(long, env = "RIPSTREAM_QUOTAS")]
    pub quotas: Option<String>,
    /// How often on-demand streams are checked for hot and cold shards, in
    /// milliseconds [default: 10000]
    #[arg(long, env = "RIPSTREAM_ON_DEMAND_SCALE_INTERVAL_MS")]
    pub on_demand_scale_interval_ms: Option<u64>,
    /// How long two adjacent on-demand shards stay cold before they are merged,
    /// in seconds [default: 600]
    #[arg(long, env = "RIPSTREAM_ON_DEMAND_MERGE_AFTER_SECS")]
    pub on_demand_merge_after_secs: Option<u64>,
    /// How long a SubscribeToShard subscription lasts, in seconds [default: 300]
    #[arg(long, env = "RIPSTREAM_SUBSCRIPTION_LIFETIME_SECS")]
    pub subscription_lifetime_secs: Option<u64>,
    /// How long a new stream stays CREATING, in milliseconds [default: 0]
    #[arg(long, env = "RIPSTREAM_CREATE_STREAM_DELAY_MS")]
    pub create_stream_delay_ms: Option<u64>,
    /// How long a deleted stream stays DELETING, in milliseconds [default: 0]
    #[arg(long, env = "RIPSTREAM_DELETE_STREAM_DELAY_MS")]
    pub delete_stream_delay_ms: Option<u64>,
    /// How long an updated stream stays UPDATING, in milliseconds [default: 0]
    #[arg(long, env = "RIPSTREAM_UPDATE_STREAM_DELAY_MS")]
    pub update_stream_delay_ms: Option<u64>,
    /// Most open shards across all streams [default: 500]
    #[arg(long, env = "RIPSTREAM_SHARD_LIMIT")]
    pub shard_limit: Option<u32>,
    /// Largest request body accepted, in bytes [default: 16777216]
    #[arg(long, env = "RIPSTREAM_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Size at which a shard's log segment is sealed, in bytes [default: 67108864]
    #[arg(long, env = "RIPSTREAM_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// How often expired log segments are deleted, in seconds [default: 60]
    #[arg(long, env = "RIPSTREAM_RETENTION_CHECK_SECS")]
    pub retention_check_secs: Option<u64>,
    /// Size of the commit log shared by all shards, in bytes: with --fsync
    /// always, a group commit of up to --commit-log-window-bytes is made
    /// durable by one fdatasync of it instead of one per shard file; 0 turns
    /// it off [default: 33554432]
    #[arg(long, env = "RIPSTREAM_COMMIT_LOG_BYTES")]
    pub commit_log_bytes: Option<u64>,
    /// Largest group commit, in bytes, that goes through the commit log;
    /// larger ones sync their shard files directly, so their bytes are written
    /// once [default: 262144]
    #[arg(long, env = "RIPSTREAM_COMMIT_LOG_WINDOW_BYTES")]
    pub commit_log_window_bytes: Option<usize>,
    /// How long a new Firehose delivery stream stays CREATING, in
    /// milliseconds [default: 0]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_CREATE_DELAY_MS")]
    pub firehose_create_delay_ms: Option<u64>,
    /// How long a deleted Firehose delivery stream stays DELETING, in
    /// milliseconds [default: 0]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_DELETE_DELAY_MS")]
    pub firehose_delete_delay_ms: Option<u64>,
    /// Most Firehose delivery streams [default: 5000]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_STREAM_LIMIT")]
    pub firehose_stream_limit: Option<usize>,
    /// Most bytes all Firehose delivery streams together hold buffered in
    /// memory; past it a stream flushes early or waits (its records stay in
    /// its log) [default: 536870912]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_BUFFER_MEMORY_BYTES")]
    pub firehose_buffer_memory_bytes: Option<usize>,
    /// Where a Firehose delivery stream whose source is a Kinesis stream
    /// starts reading each shard: trim-horizon (every record the stream
    /// holds) or creation (records from the delivery stream's creation on,
    /// its DeliveryStartTimestamp) [default: trim-horizon]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_KINESIS_START")]
    pub firehose_kinesis_start: Option<String>,
    /// Most active partitions of a dynamically partitioned Firehose stream
    /// (AWS's quota, which AWS raises on request up to 5000); records of
    /// partitions past it go to the error output [default: 500]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_ACTIVE_PARTITION_LIMIT")]
    pub firehose_active_partition_limit: Option<usize>,
    /// Let Firehose push destinations (HTTP endpoint, Splunk, OpenSearch)
    /// use http:// URLs; AWS admits only https [default: false]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_ALLOW_HTTP_DESTINATIONS")]
    pub firehose_allow_http_destinations: Option<bool>,
    /// Networks (comma-separated CIDRs, IPv4 or IPv6) that connections to
    /// hosts named by API callers (Firehose push destinations, Redshift
    /// databases) may go to, checked on each connection's resolved address
    /// [default: any address]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_DESTINATION_NETWORKS")]
    pub firehose_destination_networks: Option<String>,
    /// PEM file of CA certificates Firehose push destinations' certificates
    /// may also chain to, besides the platform's roots [default: none]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_DESTINATION_CA_FILE")]
    pub firehose_destination_ca_file: Option<PathBuf>,
    /// The longest a Firehose push destination has to answer one request,
    /// or Splunk to acknowledge one, in milliseconds [default: 180000]
    #[arg(long, env = "RIPSTREAM_FIREHOSE_ENDPOINT_TIMEOUT_MS")]
    pub firehose_endpoint_timeout_ms: Option<u64>,
    /// Directory of the embedded object store that the S3 API serves and
    /// Firehose delivers into [default: <data-dir>/objects]
    #[arg(long, env = "RIPSTREAM_OBJECT_STORE_ROOT")]
    pub object_store_root: Option<PathBuf>,
    /// How long an incomplete S3 multipart upload is kept before its parts
    /// are deleted (S3 lifecycle's AbortIncompleteMultipartUpload), in
    /// seconds [default: 604800, 7 days]
    #[arg(long, env = "RIPSTREAM_OBJECT_STORE_UPLOAD_EXPIRY_SECS")]
    pub object_store_upload_expiry_secs: Option<u64>,
    /// Deliver Firehose's objects to this external S3-compatible endpoint
    /// (http:// or https://) instead of the embedded store; its keys come
    /// from RIPSTREAM_OBJECT_STORE_ACCESS_KEY_ID and
    /// RIPSTREAM_OBJECT_STORE_SECRET_ACCESS_KEY or the file's
    /// [object_store] table [default: the embedded store]
    #[arg(long, env = "RIPSTREAM_OBJECT_STORE_ENDPOINT")]
    pub object_store_endpoint: Option<String>,
    /// The external store's region [default: the server's --region]
    #[arg(long, env = "RIPSTREAM_OBJECT_STORE_REGION")]
    pub object_store_region: Option<String>,
    /// For tests only: run the server's clock this many seconds ahead of the
    /// system's, so retention (24 hours at least) can be seen to act.
    #[arg(long, hide = true)]
    pub test_clock_offset_secs: Option<u64>,
}

/// The system clock shifted forward, for `--test-clock-offset-secs`.
#[derive(Debug)]
struct OffsetClock(i64);

impl ripstream_kinesis::Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        use ripstream_kinesis::SystemClock;
        SystemClock.now_ms().saturating_add(self.0)
    }
}

/// The same settings as they appear in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub credentials: Option<PathBuf>,
    #[serde(default)]
    pub insecure_allow_anonymous: bool,
    #[serde(default)]
    pub allow_plain_json: bool,
    #[serde(default)]
    pub allow_unsigned_requests: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub keyring: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub max_connections_per_source: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub max_buffered_bytes: Option<usize>,
    pub metrics_token: Option<String>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub fsync: Option<String>,
    pub quotas: Option<String>,
    pub on_demand_scale_interval_ms: Option<u64>,
    pub on_demand_merge_after_secs: Option<u64>,
    pub subscription_lifetime_secs: Option<u64>,
    pub log_level: Option<String>,
    pub create_stream_delay_ms: Option<u64>,
    pub delete_stream_delay_ms: Option<u64>,
    pub update_stream_delay_ms: Option<u64>,
    pub shard_limit: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub segment_bytes: Option<u64>,
    pub retention_check_secs: Option<u64>,
    pub commit_log_bytes: Option<u64>,
    pub commit_log_window_bytes: Option<usize>,
    pub firehose_create_delay_ms: Option<u64>,
    pub firehose_delete_delay_ms: Option<u64>,
    pub firehose_stream_limit: Option<usize>,
    pub firehose_buffer_memory_bytes: Option<usize>,
    pub firehose_kinesis_start: Option<String>,
    pub firehose_active_partition_limit: Option<usize>,
    pub firehose_allow_http_destinations: Option<bool>,
    pub firehose_destination_networks: Option<Vec<String>>,
    pub firehose_destination_ca_file: Option<PathBuf>,
    pub firehose_endpoint_timeout_ms: Option<u64>,
    /// `[object_store]`: where S3 objects live.
    pub object_store: Option<ObjectStoreFile>,
    /// `[functions.NAME]`: the transformation functions Firehose's Lambda
    /// processors name (`arn:aws:lambda:<region>:<account>:function:NAME`).
    #[serde(default)]
    pub functions: std::collections::BTreeMap<String, FunctionFile>,
}

/// One `[functions.NAME]` table: `command = ["python3", "t.py"]` (one JSON
/// request on stdin, one JSON response on stdout per invocation), or
/// `url = "https://..."` (the request POSTed to it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionFile {
    pub command: Option<Vec<String>>,
    /// An HTTP function (`http://` or `https://`): the request is POSTed
    /// to it.
    pub url: Option<String>,
    /// A PEM file of CA certificates the `https://` function's certificate
    /// may also chain to, besides the platform's roots.
    pub ca_file: Option<PathBuf>,
}

/// The `[object_store]` table: the embedded store's settings, or an external
/// S3-compatible endpoint Firehose delivers to instead.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreFile {
    /// The embedded store's directory [default: <data-dir>/objects].
    pub root: Option<PathBuf>,
    /// How long an incomplete multipart upload is kept, in seconds
    /// [default: 604800].
    pub upload_expiry_secs: Option<u64>,
    /// An external S3-compatible endpoint Firehose delivers to instead.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// Where Firehose delivers when not into the embedded store.
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalStore {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// The secret key shown as present or not, never as itself.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for ObjectStoreFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreFile")
            .field("root", &self.root)
            .field("upload_expiry_secs", &self.upload_expiry_secs)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .finish()
    }
}

impl std::fmt::Debug for ExternalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalStore")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .finish()
    }
}

/// The external S3 endpoint, if one is configured (flag, env or file),
/// with its credentials from the environment or the file. Keys are never
/// flags: a command line is visible to every user of the machine.
pub fn external_store(
    args: &ServeArgs,
    file: &FileConfig,
    server_region: &str,
) -> Result<Option<ExternalStore>> {
    let table = file.object_store.as_ref();
    let Some(endpoint) = args
        .object_store_endpoint
        .clone()
        .or_else(|| table.and_then(|o| o.endpoint.clone()))
    else {
        return Ok(None);
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!("object_store endpoint must be an http:// or https:// URL, not {endpoint:?}");
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let access_key_id = env("RIPSTREAM_OBJECT_STORE_ACCESS_KEY_ID")
        .or_else(|| table.and_then(|o| o.access_key_id.clone()));
    let secret_access_key = env("RIPSTREAM_OBJECT_STORE_SECRET_ACCESS_KEY")
        .or_else(|| table.and_then(|o| o.secret_access_key.clone()));
    if access_key_id.is_some() != secret_access_key.is_some() {
        bail!(
            "the external object store needs both an access key id and a secret access key, or neither (unsigned requests)"
        );
    }
    Ok(Some(ExternalStore {
        endpoint,
        region: args
            .object_store_region
            .clone()
            .or_else(|| table.and_then(|o| o.region.clone()))
            .unwrap_or_else(|| server_region.to_string()),
        access_key_id,
        secret_access_key,
    }))
}

/// How long incomplete multipart uploads are kept: the flag, the file's
/// `[object_store] upload_expiry_secs`, else 7 days.
pub fn object_store_upload_expiry(args: &ServeArgs, file: &FileConfig) -> Result<Duration> {
    match args.object_store_upload_expiry_secs.or_else(|| {
        file.object_store
            .as_ref()
            .and_then(|o| o.upload_expiry_secs)
    }) {
        None => Ok(ripstream_objects::store::DEFAULT_UPLOAD_EXPIRY),
        Some(0) => bail!("object_store upload_expiry_secs must be at least 1"),
        Some(n) => Ok(Duration::from_secs(n)),
    }
}

/// The embedded object store's directory: the flag, the file's
/// `[object_store] root`, else `objects` under the data directory.
///
/// Refused when it is the data directory, contains it, or lies in its
/// `log` directory: the S3 API would then serve (and delete) the shard
/// log's files as objects.
pub fn object_store_root(args: &ServeArgs, file: &FileConfig, data_dir: &Path) -> Result<PathBuf> {
    let root = args
        .object_store_root
        .clone()
        .or_else(|| file.object_store.as_ref().and_then(|o| o.root.clone()))
        .unwrap_or_else(|| data_dir.join("objects"));
    let (r, d) = (normalize(&root)?, normalize(data_dir)?);
    if d.starts_with(&r) {
        bail!(
            "the object store root {} is the data directory {} or contains it: S3 clients could read and delete the shard log; give the store a directory of its own",
            root.display(),
            data_dir.display()
        );
    }
    if r.starts_with(d.join("log")) {
        bail!(
            "the object store root {} is inside the data directory's log directory {}: S3 clients could read and delete the shard log; give the store a directory of its own",
            root.display(),
            data_dir.join("log").display()
        );
    }
    Ok(root)
}

/// A path as the file system resolves it, whether or not it exists yet:
/// absolute, `.` and `..` folded, and its longest existing ancestor's
/// symlinks followed (so two spellings of one directory compare equal).
fn normalize(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let abs = std::path::absolute(path)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?;
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Ok(out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Ok(lexical),
        }
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// What `ripstream serve` runs with: the front door's settings and Data
/// Streams' (whose data directory, region and account every service shares).
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    pub service: ServiceConfig,
}

/// Resolves the server configuration.
pub fn resolve(args: &ServeArgs, file: &FileConfig) -> Result<Settings> {
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4567)));
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("ripstream-data"));
    let mut service = ServiceConfig::new(data_dir);
    if let Some(r) = args.region.clone().or_else(|| file.region.clone()) {
        service.region = r;
    }
    if let Some(a) = args.account_id.clone().or_else(|| file.account_id.clone()) {
        if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
            bail!("account id must be 12 digits, got {a:?}");
        }
        service.account_id = a;
    }
    if let Some(f) = args.fsync.clone().or_else(|| file.fsync.clone()) {
        service.fsync = f.parse::<FsyncPolicy>().map_err(anyhow::Error::msg)?;
    }
    service.keyring = args.keyring.clone().or_else(|| file.keyring.clone());
    if let Some(q) = args.quotas.clone().or_else(|| file.quotas.clone()) {
        service.quotas = q.parse().map_err(anyhow::Error::msg)?;
    }
    if let Some(ms) = args
        .on_demand_scale_interval_ms
        .or(file.on_demand_scale_interval_ms)
    {
        service.on_demand_scale_interval = Duration::from_millis(ms.max(10));
    }
    if let Some(secs) = args
        .on_demand_merge_after_secs
        .or(file.on_demand_merge_after_secs)
    {
        service.on_demand_merge_after = Duration::from_secs(secs);
    }
    if let Some(secs) = args
        .subscription_lifetime_secs
        .or(file.subscription_lifetime_secs)
    {
        service.subscription_lifetime = Duration::from_secs(secs.max(1));
    }
    let ms = |a: Option<u64>, f: Option<u64>| Duration::from_millis(a.or(f).unwrap_or(0));
    service.create_delay = ms(args.create_stream_delay_ms, file.create_stream_delay_ms);
    service.delete_delay = ms(args.delete_stream_delay_ms, file.delete_stream_delay_ms);
    service.update_delay = ms(args.update_stream_delay_ms, file.update_stream_delay_ms);
    if let Some(l) = args.shard_limit.or(file.shard_limit) {
        service.shard_limit = l;
    }
    if let Some(b) = args.segment_bytes.or(file.segment_bytes) {
        if b < 4096 {
            bail!("segment size must be at least 4096 bytes");
        }
        service.segment_max_bytes = b;
    }
    if let Some(b) = args.commit_log_bytes.or(file.commit_log_bytes) {
        service.commit_log_bytes = b;
    }
    if let Some(b) = args
        .commit_log_window_bytes
        .or(file.commit_log_window_bytes)
    {
        service.commit_log_max_window = b;
    }
    if let Some(s) = args.retention_check_secs.or(file.retention_check_secs) {
        service.retention_check_interval = Duration::from_secs(s.max(1));
    }
    if let Some(s) = args.test_clock_offset_secs {
        let ms = i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000);
        service.clock = std::sync::Arc::new(OffsetClock(ms));
    }
    let mut cfg = ServerConfig::new(listen);
    cfg.region = service.region.clone();
    cfg.account = service.account_id.clone();
    if let Some(b) = args.max_body_bytes.or(file.max_body_bytes) {
        cfg.max_body_bytes = b;
    }
    if let Some(n) = args.max_connections.or(file.max_connections) {
        cfg.max_connections = n.max(1);
    }
    if let Some(n) = args.max_in_flight.or(file.max_in_flight) {
        cfg.max_in_flight = n.max(1);
    }
    if let Some(n) = args
        .max_connections_per_source
        .or(file.max_connections_per_source)
    {
        cfg.max_connections_per_source = n.max(1);
    }
    if let Some(ms) = args.handshake_timeout_ms.or(file.handshake_timeout_ms) {
        cfg.handshake_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = args.idle_timeout_ms.or(file.idle_timeout_ms) {
        cfg.idle_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(b) = args.max_buffered_bytes.or(file.max_buffered_bytes) {
        cfg.max_buffered_bytes = b;
    }
    cfg.allow_plain_json = args.allow_plain_json || file.allow_plain_json;
    cfg.metrics_token = args
        .metrics_token
        .clone()
        .or_else(|| file.metrics_token.clone())
        .filter(|t| !t.is_empty());
    match (
        args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
        args.tls_key.clone().or_else(|| file.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => cfg.tls = Some(ripstream_server::tls::TlsFiles { cert, key }),
        (None, None) => {}
        _ => bail!("tls_cert and tls_key go together"),
    }
    if let Some(path) = args
        .credentials
        .clone()
        .or_else(|| file.credentials.clone())
    {
        let principals =
            ripstream_server::auth::Principals::load(&path).map_err(anyhow::Error::msg)?;
        cfg.principals = Some(std::sync::Arc::new(principals));
    }
    cfg.allow_unsigned_requests = args.allow_unsigned_requests || file.allow_unsigned_requests;
    if cfg.allow_unsigned_requests && cfg.principals.is_some() {
        bail!(
            "allow_unsigned_requests applies without credentials only: with a credentials file every request must be signed"
        );
    }
    // Safe default: without credentials, only a loopback listener may accept
    // unsigned requests.
    let anonymous_ok = args.insecure_allow_anonymous || file.insecure_allow_anonymous;
    if cfg.principals.is_none() && !cfg.listen.ip().is_loopback() && !anonymous_ok {
        bail!(
            "refusing to listen on {} without credentials: anyone who can reach it could read and write every stream. \
             Give --credentials FILE (see the README's SECURITY section), listen on a loopback address, \
             or pass --insecure-allow-anonymous if the network is trusted",
            cfg.listen
        );
    }
    Ok(Settings {
        server: cfg,
        service,
    })
}

/// The smallest Firehose buffer memory budget accepted: one record of
/// Firehose's largest size (1,000 KiB) with room to spare.
const MIN_FIREHOSE_BUFFER_MEMORY: usize = 1 << 20;

/// Firehose's settings; the keyring is the server's (Data Streams').
pub fn firehose(
    args: &ServeArgs,
    file: &FileConfig,
    service: &ServiceConfig,
) -> Result<ripstream_firehose::FirehoseConfig> {
    let ms = |a: Option<u64>, f: Option<u64>| Duration::from_millis(a.or(f).unwrap_or(0));
    let mut cfg = ripstream_firehose::FirehoseConfig {
        create_delay: ms(args.firehose_create_delay_ms, file.firehose_create_delay_ms),
        delete_delay: ms(args.firehose_delete_delay_ms, file.firehose_delete_delay_ms),
        keyring: service.keyring.clone(),
        // One `--quotas` for every service: AWS's defaults, or none.
        quotas: service.quotas,
        ..Default::default()
    };
    if let Some(n) = args.firehose_stream_limit.or(file.firehose_stream_limit) {
        cfg.stream_limit = n;
    }
    if let Some(n) = args
        .firehose_buffer_memory_bytes
        .or(file.firehose_buffer_memory_bytes)
    {
        // Below one record's worth every record would be delivered alone.
        if n < MIN_FIREHOSE_BUFFER_MEMORY {
            bail!(
                "firehose_buffer_memory_bytes must be at least {MIN_FIREHOSE_BUFFER_MEMORY} (1 MiB, Firehose's largest record), not {n}"
            );
        }
        cfg.buffer_memory_bytes = n;
    }
    if let Some(s) = args
        .firehose_kinesis_start
        .as_ref()
        .or(file.firehose_kinesis_start.as_ref())
    {
        cfg.kinesis_start = s
            .parse()
            .map_err(|e| anyhow::anyhow!("firehose_kinesis_start: {e}"))?;
    }
    if let Some(n) = args
        .firehose_active_partition_limit
        .or(file.firehose_active_partition_limit)
    {
        let max = ripstream_firehose::partition::MAX_ACTIVE_PARTITIONS;
        if !(1..=max).contains(&n) {
            bail!("firehose_active_partition_limit must be from 1 to {max} (AWS's most), not {n}");
        }
        cfg.active_partition_limit = n;
    }
    if let Some(b) = args
        .firehose_allow_http_destinations
        .or(file.firehose_allow_http_destinations)
    {
        cfg.allow_http_destinations = b;
    }
    if let Some(ms) = args
        .firehose_endpoint_timeout_ms
        .or(file.firehose_endpoint_timeout_ms)
    {
        if ms == 0 {
            bail!("firehose_endpoint_timeout_ms must be at least 1");
        }
        cfg.endpoint_timeout = Duration::from_millis(ms);
    }
    let networks = match (
        &args.firehose_destination_networks,
        &file.firehose_destination_networks,
    ) {
        (Some(list), _) => Some(ripstream_firehose::Networks::parse_list(list)),
        (None, Some(items)) => Some(ripstream_firehose::Networks::parse(items)),
        (None, None) => None,
    };
    cfg.destination_networks = networks
        .transpose()
        .map_err(|e| anyhow::anyhow!("firehose_destination_networks: {e}"))?;
    if let Some(ca) = args
        .firehose_destination_ca_file
        .as_ref()
        .or(file.firehose_destination_ca_file.as_ref())
    {
        // Read now, so that a bad file stops the start, not the first
        // delivery.
        ripstream_firehose::ClientBuilder::new()
            .ca_file(ca)
            .map_err(|e| anyhow::anyhow!("firehose_destination_ca_file: {e}"))?;
        cfg.destination_ca_file = Some(ca.clone());
    }
    for (name, f) in &file.functions {
        use ripstream_firehose::lambda::{FunctionConfig, HttpFunction};
        match (&f.command, &f.url) {
            (Some(c), None) if !c.is_empty() => {
                if f.ca_file.is_some() {
                    bail!("[functions.{name}]: ca_file is for url = \"https://...\" functions");
                }
                cfg.functions
                    .insert(name.clone(), FunctionConfig::Command(c.clone()));
            }
            (None, Some(u)) => {
                let function = HttpFunction::new(u, f.ca_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("[functions.{name}]: {e}"))?;
                cfg.functions
                    .insert(name.clone(), FunctionConfig::Url(function));
            }
            _ => bail!(
                "[functions.{name}] needs command = [\"program\", \"arg\", ...] or url = \"https://...\""
            ),
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ripstream_kinesis::quota::QuotaMode;

    #[test]
    fn upload_expiry_comes_from_flag_or_file() {
        let none = FileConfig::default();
        assert_eq!(
            object_store_upload_expiry(&ServeArgs::default(), &none).unwrap(),
            Duration::from_secs(7 * 24 * 3600)
        );
        let file: FileConfig = toml::from_str("[object_store]\nupload_expiry_secs = 60\n").unwrap();
        assert_eq!(
            object_store_upload_expiry(&ServeArgs::default(), &file).unwrap(),
            Duration::from_secs(60)
        );
        let args = ServeArgs {
            object_store_upload_expiry_secs: Some(5),
            ..Default::default()
        };
        assert_eq!(
            object_store_upload_expiry(&args, &file).unwrap(),
            Duration::from_secs(5)
        );
        let args = ServeArgs {
            object_store_upload_expiry_secs: Some(0),
            ..Default::default()
        };
        assert!(object_store_upload_expiry(&args, &none).is_err());
    }

    #[test]
    fn firehose_settings_come_from_flags_or_file() {
        let file: FileConfig =
            toml::from_str("firehose_create_delay_ms = 250\nfirehose_stream_limit = 3\n").unwrap();
        let args = ServeArgs {
            firehose_delete_delay_ms: Some(40),
            ..Default::default()
        };
        let service = ServiceConfig::new("d");
        let f = firehose(&args, &file, &service).unwrap();
        assert_eq!(f.create_delay, Duration::from_millis(250));
        assert_eq!(f.delete_delay, Duration::from_millis(40));
        assert_eq!(f.stream_limit, 3);
        let d = firehose(&ServeArgs::default(), &FileConfig::default(), &service).unwrap();
        assert_eq!(d.create_delay, Duration::ZERO);
        assert_eq!(d.stream_limit, 5000);
        assert_eq!(d.buffer_memory_bytes, 512 << 20);
        let file: FileConfig = toml::from_str("firehose_buffer_memory_bytes = 8388608\n").unwrap();
        let f = firehose(&ServeArgs::default(), &file, &service).unwrap();
        assert_eq!(f.buffer_memory_bytes, 8 << 20);
        let args = ServeArgs {
            firehose_buffer_memory_bytes: Some(4 << 20),
            ..Default::default()
        };
        assert_eq!(
            firehose(&args, &file, &service)
                .unwrap()
                .buffer_memory_bytes,
            4 << 20
        );
        let args = ServeArgs {
            firehose_buffer_memory_bytes: Some(1000),
            ..Default::default()
        };
        let e = firehose(&args, &file, &service).unwrap_err();
        assert!(e.to_string().contains("at least"), "{e}");
        let file: FileConfig =
            toml::from_str("[functions.up]\ncommand = [\"python3\", \"t.py\"]\n").unwrap();
        let f = firehose(&ServeArgs::default(), &file, &service).unwrap();
        assert_eq!(
            f.functions["up"],
            ripstream_firehose::lambda::FunctionConfig::Command(vec![
                "python3".into(),
                "t.py".into()
            ])
        );
        let file: FileConfig =
            toml::from_str("[functions.web]\nurl = \"ftp://127.0.0.1:1/\"\n").unwrap();
        let e = firehose(&ServeArgs::default(), &file, &service).unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
        for url in ["http://127.0.0.1:1/t", "https://fn.example.com/t"] {
            let file: FileConfig =
                toml::from_str(&format!("[functions.web]\nurl = \"{url}\"\n")).unwrap();
            let f = firehose(&ServeArgs::default(), &file, &service).unwrap();
            let ripstream_firehose::lambda::FunctionConfig::Url(web) = &f.functions["web"] else {
                panic!("{:?}", f.functions["web"]);
            };
            assert_eq!((web.url(), web.ca_file()), (url, None));
        }
    }

    /// A test CA's certificate, PEM.
    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn ca_files_are_read_at_start() {
        let service = ServiceConfig::new("d");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem()).unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk").unwrap();
        let toml_path = |p: &Path| format!("{:?}", p.display().to_string());
        let file: FileConfig = toml::from_str(&format!(
            "[functions.web]\nurl = \"https://fn.example.com/\"\nca_file = {}\n",
            toml_path(&ca)
        ))
        .unwrap();
        let f = firehose(&ServeArgs::default(), &file, &service).unwrap();
        let ripstream_firehose::lambda::FunctionConfig::Url(web) = &f.functions["web"] else {
            panic!("{:?}", f.functions["web"]);
        };
        assert_eq!(web.ca_file(), Some(ca.as_path()));
        for (table, why) in [
            (
                format!(
                    "url = \"https://fn.example.com/\"\nca_file = {}",
                    toml_path(&junk)
                ),
                "no PEM certificate",
            ),
            (
                format!(
                    "url = \"http://fn.example.com/\"\nca_file = {}",
                    toml_path(&ca)
                ),
                "https",
            ),
            (
                format!("command = [\"cat\"]\nca_file = {}", toml_path(&ca)),
                "ca_file",
            ),
        ] {
            let file: FileConfig = toml::from_str(&format!("[functions.web]\n{table}\n")).unwrap();
            let e = firehose(&ServeArgs::default(), &file, &service).unwrap_err();
            assert!(e.to_string().contains(why), "{table}: {e}");
        }
        // The push destinations' CA file: flag over file, checked at start.
        let file: FileConfig = toml::from_str(&format!(
            "firehose_destination_ca_file = {}\n",
            toml_path(&ca)
        ))
        .unwrap();
        let f = firehose(&ServeArgs::default(), &file, &service).unwrap();
        assert_eq!(f.destination_ca_file.as_deref(), Some(ca.as_path()));
        let args = ServeArgs {
            firehose_destination_ca_file: Some(junk.clone()),
            ..Default::default()
        };
        let e = firehose(&args, &file, &service).unwrap_err();
        assert!(
            e.to_string().contains("firehose_destination_ca_file"),
            "{e}"
        );
        let args = ServeArgs {
            firehose_destination_ca_file: Some(dir.path().join("missing.pem")),
            ..Default::default()
        };
        assert!(firehose(&args, &FileConfig::default(), &service).is_err());
        assert!(
            firehose(&ServeArgs::default(), &FileConfig::default(), &service)
                .unwrap()
                .destination_ca_file
                .is_none()
        );
    }

    #[test]
    fn destination_networks_come_from_flag_or_file() {
        let service = ServiceConfig::new("d");
        let none = firehose(&ServeArgs::default(), &FileConfig::default(), &service).unwrap();
        assert!(none.destination_networks.is_none());
        let file: FileConfig =
            toml::from_str("firehose_destination_networks = [\"10.0.0.0/8\", \"fd00::/8\"]\n")
                .unwrap();
        let f = firehose(&ServeArgs::default(), &file, &service).unwrap();
        let n = f.destination_networks.unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8,fd00::/8");
        assert!(n.permits("10.1.1.1".parse().unwrap()));
        assert!(!n.permits("127.0.0.1".parse().unwrap()));
        let args = ServeArgs {
            firehose_destination_networks: Some("127.0.0.0/8, ::1/128".into()),
            ..Default::default()
        };
        let f = firehose(&args, &file, &service).unwrap();
        assert_eq!(
            f.destination_networks.unwrap().to_string(),
            "127.0.0.0/8,::1/128"
        );
        for bad in ["10.0.0.0/33", "", "example.com/8"] {
            let args = ServeArgs {
                firehose_destination_networks: Some(bad.into()),
                ..Default::default()
            };
            let e = firehose(&args, &FileConfig::default(), &service).unwrap_err();
            assert!(
                e.to_string().contains("firehose_destination_networks"),
                "{bad}: {e}"
            );
        }
        let file: FileConfig = toml::from_str("firehose_destination_networks = []\n").unwrap();
        assert!(firehose(&ServeArgs::default(), &file, &service).is_err());
    }

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let file: FileConfig = toml::from_str(
            "insecure_allow_anonymous = true\nlisten = \"0.0.0.0:9000\"\nregion = \"eu-west-1\"\nfsync = \"interval:50\"\nshard_limit = 7\nquotas = \"off\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            region: Some("ap-south-1".into()),
            ..Default::default()
        };
        let cfg = resolve(&args, &file).unwrap();
        assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(cfg.service.region, "ap-south-1");
        assert_eq!(
            cfg.service.fsync,
            FsyncPolicy::Interval(Duration::from_millis(50))
        );
        assert_eq!(cfg.service.shard_limit, 7);
        assert_eq!(cfg.service.quotas, QuotaMode::Off);
        assert_eq!(cfg.service.account_id, "000000000000");
        let defaults = resolve(&ServeArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(defaults.server.listen.to_string(), "127.0.0.1:4567");
        assert_eq!(defaults.service.fsync, FsyncPolicy::Always);
        assert_eq!(defaults.service.quotas, QuotaMode::Aws);
    }

    #[test]
    fn an_object_store_root_over_the_data_dir_or_its_log_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("log")).unwrap();
        let with_root = |root: PathBuf| ServeArgs {
            object_store_root: Some(root),
            ..Default::default()
        };
        let none = FileConfig::default();
        for bad in [
            data.clone(),
            data.join("."),
            data.join("log/../"),
            tmp.path().to_path_buf(),
            data.join("log"),
            data.join("log/objects"),
            data.join("x/../log/new"),
        ] {
            let err = object_store_root(&with_root(bad.clone()), &none, &data).unwrap_err();
            assert!(err.to_string().contains("shard log"), "{bad:?}: {err}");
        }
        // A symlink to the data directory is the data directory.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(object_store_root(&with_root(link.clone()), &none, &data).is_err());
        assert!(object_store_root(&with_root(link.join("log/o")), &none, &data).is_err());
        for good in [
            data.join("objects"),
            data.join("logs"),
            tmp.path().join("elsewhere"),
        ] {
            assert_eq!(
                object_store_root(&with_root(good.clone()), &none, &data).unwrap(),
                good
            );
        }
    }

    #[test]
    fn the_object_store_root_defaults_under_the_data_dir() {
        let data = Path::new("/srv/rs");
        let none = FileConfig::default();
        assert_eq!(
            object_store_root(&ServeArgs::default(), &none, data).unwrap(),
            data.join("objects")
        );
        let file: FileConfig = toml::from_str("[object_store]\nroot = \"/mnt/objects\"\n").unwrap();
        assert_eq!(
            object_store_root(&ServeArgs::default(), &file, data).unwrap(),
            PathBuf::from("/mnt/objects")
        );
        let args = ServeArgs {
            object_store_root: Some("/flag".into()),
            ..Default::default()
        };
        assert_eq!(
            object_store_root(&args, &file, data).unwrap(),
            PathBuf::from("/flag")
        );
        // An external endpoint is a real setting; a misspelt key is still refused.
        let external: FileConfig =
            toml::from_str("[object_store]\nendpoint = \"http://x\"\n").unwrap();
        assert_eq!(
            external.object_store.and_then(|o| o.endpoint).as_deref(),
            Some("http://x")
        );
        assert!(toml::from_str::<FileConfig>("[object_store]\nendpiont = \"http://x\"\n").is_err());
    }

    #[test]
    fn public_listeners_need_credentials() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:4567".parse().unwrap()),
            ..Default::default()
        };
        let e = resolve(&args, &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("without credentials"), "{e}");
        let args = ServeArgs {
            listen: Some("0.0.0.0:4567".parse().unwrap()),
            insecure_allow_anonymous: true,
            ..Default::default()
        };
        assert!(resolve(&args, &FileConfig::default()).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds.toml");
        std::fs::write(
            &creds,
            "[[principal]]\nname = \"a\"\naccess_key_id = \"AKID1\"\nsecret_access_key = \"s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            listen: Some("0.0.0.0:4567".parse().unwrap()),
            credentials: Some(creds),
            ..Default::default()
        };
        assert_eq!(
            resolve(&args, &FileConfig::default())
                .unwrap()
                .server
                .principals
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn unsigned_requests_are_allowed_only_without_credentials() {
        assert!(
            !resolve(&ServeArgs::default(), &FileConfig::default())
                .unwrap()
                .server
                .allow_unsigned_requests
        );
        let file: FileConfig = toml::from_str("allow_unsigned_requests = true\n").unwrap();
        assert!(
            resolve(&ServeArgs::default(), &file)
                .unwrap()
                .server
                .allow_unsigned_requests
        );
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds.toml");
        std::fs::write(
            &creds,
            "[[principal]]\nname = \"a\"\naccess_key_id = \"AKID1\"\nsecret_access_key = \"s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            credentials: Some(creds),
            allow_unsigned_requests: true,
            ..Default::default()
        };
        let e = resolve(&args, &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("without credentials only"), "{e}");
    }

    #[test]
    fn front_door_limits() {
        let file: FileConfig = toml::from_str(
            "max_connections_per_source = 8\nidle_timeout_ms = 1500\nmax_buffered_bytes = 1000\nmetrics_token = \"t\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            handshake_timeout_ms: Some(250),
            ..Default::default()
        };
        let cfg = resolve(&args, &file).unwrap();
        assert_eq!(cfg.server.max_connections_per_source, 8);
        assert_eq!(cfg.server.handshake_timeout, Duration::from_millis(250));
        assert_eq!(cfg.server.idle_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.server.max_buffered_bytes, 1000);
        assert_eq!(cfg.server.metrics_token.as_deref(), Some("t"));
        let d = resolve(&ServeArgs::default(), &FileConfig::default()).unwrap();
        assert!(d.server.max_connections_per_source < d.server.max_connections);
        assert_eq!(d.server.handshake_timeout, Duration::from_secs(10));
        assert_eq!(d.server.max_buffered_bytes, 1 << 30);
        assert!(d.server.metrics_token.is_none());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
        let args = ServeArgs {
            fsync: Some("sometimes".into()),
            ..Default::default()
        };
        assert!(resolve(&args, &FileConfig::default()).is_err());
        let args = ServeArgs {
            account_id: Some("123".into()),
            ..Default::default()
        };
        assert!(resolve(&args, &FileConfig::default()).is_err());
    }
}
