//! The Redshift destination, delivered into PostgreSQL.
//!
//! As on AWS, each flush is first staged as an object in the intermediate
//! bucket (`S3Configuration`: its prefix, AWS's object names, its
//! compression), then loaded into `CopyCommand.DataTableName` by a
//! [`TableLoader`] (the binary's is PostgreSQL's `COPY ... FROM STDIN`
//! over `tokio-postgres`, crate `ripstream-warehouse`), the COPY options
//! translated by [`crate::copy`].
//!
//! Exactly once per staged file: the loader records the file's key in a
//! load manifest table of the target database in the COPY's transaction,
//! and skips a file already recorded. For the key to be the same when a
//! batch is redelivered after a crash, the batch must be too: before its
//! first load attempt the batch's log range is stored (document space
//! [`PENDING_SPACE`]), a restart re-reads exactly that range, and the
//! staged key's uuid is derived from the stream and that range.
//!
//! A load that fails is retried with the engine's backoff (the records are
//! re-read from the log each time, so a database that is down costs no
//! memory) for `RetryOptions.DurationInSeconds` from the first failure
//! (kept with the range, so a restart does not reset it); then, as AWS
//! does, the batch is skipped and a Redshift manifest naming its staged
//! file is written under the error prefix (`redshift-failed/manifests/`)
//! for a manual backfill.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::copy::{self, CopySpec, Translated};
use crate::error::{Error, Result};
use crate::pending::{self, Pending};
use crate::record::{self, Destination};
use crate::{Inner, Networks, Stream, prefix};

/// Per stream uid: the log range of the batch being loaded, and when its
/// first load failed (the shared [`crate::pending`] record).
pub use crate::pending::PENDING_SPACE;
/// The load manifest table the loader keeps in the target database.
pub const MANIFEST_TABLE: &str = "ripstream_firehose_loads";
/// AWS's default RetryOptions.DurationInSeconds.
pub const DEFAULT_RETRY_S: u64 = 3600;
/// The error output type of what the Redshift path could not load.
pub const ERROR_OUTPUT_TYPE: &str = "redshift-failed";
/// The error prefix AWS's Redshift delivery writes to when the
/// intermediate S3 configuration names none: the `errors/` folder.
pub const DEFAULT_ERROR_PREFIX: &str = "errors/";

/// The future of a load.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a ClusterJDBCURL points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub host: String,
    pub port: u16,
    pub database: String,
}

/// Parses `jdbc:redshift://host:port/db` or `jdbc:postgresql://host:port/db`
/// (a missing port is the scheme's default: 5439 or 5432; `?properties`
/// are ignored).
pub fn parse_jdbc_url(url: &str) -> std::result::Result<Cluster, String> {
    let bad = |why: &str| {
        format!(
            "ClusterJDBCURL {url} is not valid: {why}; expected jdbc:redshift://host:port/database or jdbc:postgresql://host:port/database."
        )
    };
    let (rest, default_port) = if let Some(r) = url.strip_prefix("jdbc:redshift://") {
        (r, 5439)
    } else if let Some(r) = url.strip_prefix("jdbc:postgresql://") {
        (r, 5432)
    } else {
        return Err(bad("unknown scheme"));
    };
    let rest = rest.split('?').next().unwrap_or("");
    let (authority, database) = rest.split_once('/').ok_or_else(|| bad("no database"))?;
    if database.is_empty() || database.contains('/') {
        return Err(bad("no database"));
    }
    if database.chars().any(char::is_control) {
        return Err(bad("control characters in the database name"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [host]"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(bad("no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(Cluster {
        host: host.to_string(),
        port,
        database: database.to_string(),
    })
}

/// What a loader needs to load one staged file.
#[derive(Clone)]
pub struct LoadTarget {
    pub cluster: Cluster,
    pub username: String,
    pub password: String,
    /// `CopyCommand.DataTableName`, as given (`schema.table` allowed).
    pub table: String,
    /// `CopyCommand.DataTableColumns`; `None`: the table's columns in order.
    pub columns: Option<Vec<String>>,
}

/// The password stays out of logs.
impl std::fmt::Debug for LoadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadTarget")
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("table", &self.table)
            .field("columns", &self.columns)
            .finish()
    }
}

/// One staged file to load.
pub struct LoadJob<'a> {
    pub target: &'a LoadTarget,
    /// The delivery stream's name (the manifest table's `stream`).
    pub stream: &'a str,
    /// `s3://bucket/key` of the staged file (the manifest table's key).
    pub object: &'a str,
    /// Translates the file for the columns the COPY loads.
    pub translate: &'a (dyn Fn(&[String]) -> Translated + Sync),
    /// The networks the loader may connect to (`None`: any): it must
    /// resolve the cluster's host itself, keep the addresses inside them
    /// ([`Networks::resolve`]) and connect to those, so that DNS cannot
    /// point a load elsewhere between a check and the connection.
    pub networks: Option<&'a Networks>,
}

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// The file was recorded by an earlier load: nothing was copied.
    pub already_loaded: bool,
    pub rows: u64,
    /// Records that did not translate (not copied).
    pub errors: Vec<copy::RowError>,
}

/// Why a load failed; every variant is retried for the retry duration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The database could not be reached (`Redshift.ConnectionFailed`).
    #[error("cannot connect to {host}:{port}: {message}")]
    Unreachable {
        host: String,
        port: u16,
        message: String,
    },
    /// The database refused something: `code` is the error code AWS's
    /// delivery logs show, `message` the database's.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
}

impl LoadError {
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Unreachable { .. } => "Redshift.ConnectionFailed",
            LoadError::Refused { code, .. } => code,
        }
    }
}

/// A database the Redshift path loads staged files into. An `Ok` load must
/// be committed, together with the manifest row of `job.object`; a job
/// whose object is recorded already loads nothing (`already_loaded`).
pub trait TableLoader: Send + Sync + std::fmt::Debug {
    fn load<'a>(
        &'a self,
        job: LoadJob<'a>,
    ) -> BoxFuture<'a, std::result::Result<LoadOutcome, LoadError>>;
}

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidArgument(m.into())
}

/// Members of RedshiftDestinationConfiguration stored as given (Password
/// too, never described).
const CONFIG_MEMBERS: &[&str] = &[
    "RoleARN",
    "ClusterJDBCURL",
    "CopyCommand",
    "Username",
    "Password",
    "RetryOptions",
    "S3BackupMode",
    "CloudWatchLoggingOptions",
];

/// Checks a RedshiftDestinationConfiguration: the stored Redshift part, and
/// the intermediate S3 destination the engine delivers through (its
/// S3Configuration, with the ProcessingConfiguration).
///
/// `networks` (`firehose_destination_networks`): a ClusterJDBCURL host that
/// is an IP address outside them is refused here; a name is checked on
/// what it resolves to at each connection (by the loader, given
/// [`LoadJob::networks`]).
pub fn normalize(cfg: &Value, networks: Option<&Networks>) -> Result<(Value, Value)> {
    let Some(c) = cfg.as_object() else {
        return Err(invalid(
            "RedshiftDestinationConfiguration must be an object.",
        ));
    };
    let text = |k: &str| c.get(k).and_then(Value::as_str);
    let url = text("ClusterJDBCURL")
        .ok_or_else(|| invalid("ClusterJDBCURL is required for a Redshift destination."))?;
    let cluster = parse_jdbc_url(url).map_err(invalid)?;
    // An IP literal is checked now, in any spelling the resolver accepts
    // (`127.1` is 127.0.0.1 to it): the URL parser reads those the same
    // way. A name is checked on what it resolves to at each connection.
    let literal_refused = |n: &Networks| match cluster.host.parse::<std::net::IpAddr>() {
        Ok(ip) => n.check(&cluster.host, ip).is_err(),
        Err(_) => ripstream_delivery::Url::parse(&format!("http://{}/", cluster.host))
            .is_ok_and(|u| n.check_url(&u).is_err()),
    };
    if networks.is_some_and(literal_refused) {
        return Err(invalid(format!(
            "ClusterJDBCURL {url} is not allowed: {}.",
            ripstream_delivery::NotAllowed
        )));
    }
    if c.contains_key("SecretsManagerConfiguration")
        && c["SecretsManagerConfiguration"]
            .get("Enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    {
        return Err(invalid(
            "SecretsManagerConfiguration is not supported yet by this server: give Username and Password.",
        ));
    }
    for m in ["Username", "Password"] {
        if text(m).is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "{m} is required for a Redshift destination."
            )));
        }
    }
    // The user name travels in the connection's startup packet: control
    // characters there serve only to smuggle lines into another protocol.
    if text("Username").is_some_and(|u| u.chars().any(char::is_control)) {
        return Err(invalid("Username must not contain control characters."));
    }
    let copy_cmd = c.get("CopyCommand");
    let table = copy_cmd
        .and_then(|cc| cc.get("DataTableName"))
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| invalid("CopyCommand.DataTableName is required."))?;
    check_identifier("CopyCommand.DataTableName", table, true)?;
    if let Some(cols) = copy_cmd
        .and_then(|cc| cc.get("DataTableColumns"))
        .and_then(Value::as_str)
    {
        for col in split_columns(cols) {
            check_identifier("CopyCommand.DataTableColumns", &col, false)?;
        }
    }
    let options = copy_cmd
        .and_then(|cc| cc.get("CopyOptions"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let spec = copy::parse(options).map_err(invalid)?;
    // Source record backup: the records as they arrived (before a Lambda
    // processor), to a second S3 destination of its own.
    let backup = match (text("S3BackupMode"), c.get("S3BackupConfiguration")) {
        (None | Some("Disabled"), None) => None,
        (None | Some("Disabled"), Some(_)) => {
            return Err(invalid(
                "S3BackupConfiguration is only allowed when S3BackupMode is Enabled.",
            ));
        }
        (Some("Enabled"), Some(b)) => {
            let b = b.as_object().cloned().unwrap_or_default();
            Some(record::normalize_destination(b)?)
        }
        (Some("Enabled"), None) => {
            return Err(invalid(
                "S3BackupConfiguration is required when S3BackupMode is Enabled.",
            ));
        }
        (Some(m), _) => return Err(invalid(format!("S3BackupMode {m} is not valid."))),
    };
    let Some(s3) = c.get("S3Configuration").and_then(Value::as_object) else {
        return Err(invalid(
            "S3Configuration is required for a Redshift destination.",
        ));
    };
    match s3.get("CompressionFormat").and_then(Value::as_str) {
        None | Some("UNCOMPRESSED") | Some("GZIP") => {}
        Some(f) => {
            return Err(invalid(format!(
                "CompressionFormat {f} cannot be specified for a Redshift destination's S3Configuration: the Redshift COPY operation that reads from the S3 bucket does not support it."
            )));
        }
    }
    let gzip = s3.get("CompressionFormat").and_then(Value::as_str) == Some("GZIP");
    if gzip != spec.gzip {
        return Err(invalid(if gzip {
            "S3Configuration.CompressionFormat is GZIP: CopyOptions must say GZIP, or COPY cannot read the staged files."
        } else {
            "CopyOptions says GZIP: S3Configuration.CompressionFormat must be GZIP, or COPY cannot read the staged files."
        }));
    }
    let mut dest = s3.clone();
    if let Some(p) = c.get("ProcessingConfiguration") {
        dest.insert("ProcessingConfiguration".into(), p.clone());
    }
    let dest = record::normalize_destination(dest)?;
    let mut out = Map::new();
    for m in CONFIG_MEMBERS {
        if let Some(v) = c.get(*m) {
            out.insert((*m).to_string(), v.clone());
        }
    }
    let retry = record::retry_duration_s(c.get("RetryOptions"), DEFAULT_RETRY_S)?;
    out.insert("RetryOptions".into(), json!({"DurationInSeconds": retry}));
    out.entry("S3BackupMode").or_insert(json!("Disabled"));
    if let Some(b) = backup {
        out.insert("S3BackupConfiguration".into(), b);
    }
    out.entry("CloudWatchLoggingOptions")
        .or_insert(json!({"Enabled": false}));
    Ok((Value::Object(out), dest))
}

/// Applies a RedshiftDestinationUpdate to a stream's stored Redshift part
/// and intermediate S3 destination, member by member as AWS merges it
/// (`S3Update` and `S3BackupUpdate` into their configurations, the rest
/// replacing what was there), and checks the result as CreateDeliveryStream
/// would.
pub fn merge_update(
    redshift: &Value,
    destination: &Value,
    update: &Value,
    networks: Option<&Networks>,
) -> Result<(Value, Value)> {
    let Some(u) = update.as_object() else {
        return Err(invalid("RedshiftDestinationUpdate must be an object."));
    };
    let mut cfg = redshift.as_object().cloned().unwrap_or_default();
    let mut s3 = destination.as_object().cloned().unwrap_or_default();
    if let Some(p) = s3.remove("ProcessingConfiguration") {
        cfg.insert("ProcessingConfiguration".into(), p);
    }
    let merge = |into: &mut Map<String, Value>, v: &Value| {
        for (k, v) in v.as_object().into_iter().flatten() {
            into.insert(k.clone(), v.clone());
        }
    };
    for (k, v) in u {
        match k.as_str() {
            "S3Update" => merge(&mut s3, v),
            "S3BackupUpdate" => {
                let mut b = cfg
                    .get("S3BackupConfiguration")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                merge(&mut b, v);
                cfg.insert("S3BackupConfiguration".into(), Value::Object(b));
            }
            _ => {
                cfg.insert(k.clone(), v.clone());
            }
        }
    }
    if redshift.get("S3BackupMode").and_then(Value::as_str) == Some("Enabled")
        && cfg.get("S3BackupMode").and_then(Value::as_str) != Some("Enabled")
    {
        return Err(invalid(
            "S3BackupMode cannot be changed from Enabled to Disabled.",
        ));
    }
    // The stored password is sent to whatever host the URL names: a caller
    // who moves the destination elsewhere must know the credentials, as
    // for Splunk's token.
    let cluster = |v: &Value| {
        v.get("ClusterJDBCURL")
            .and_then(Value::as_str)
            .and_then(|url| parse_jdbc_url(url).ok())
            .map(|c| (c.host.to_ascii_lowercase(), c.port))
    };
    if cluster(&Value::Object(cfg.clone())) != cluster(redshift) && !u.contains_key("Password") {
        return Err(invalid(
            "Password must be given again when ClusterJDBCURL moves the destination to another host or port.",
        ));
    }
    cfg.insert("S3Configuration".into(), Value::Object(s3));
    normalize(&Value::Object(cfg), networks)
}

/// A table or column name as COPY takes it: plain identifiers (letters,
/// digits, `_`, `$`), or double-quoted ones; a table may be `schema.table`.
fn check_identifier(what: &str, name: &str, qualified: bool) -> Result<()> {
    let parts: Vec<&str> = if qualified {
        split_qualified(name)
    } else {
        vec![name.trim()]
    };
    let ok = !parts.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|p| {
            let p = p.trim();
            if let Some(inner) = p.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
                !inner.is_empty() && !inner.replace("\"\"", "").contains('"')
            } else {
                !p.is_empty()
                    && !p.starts_with(|c: char| c.is_ascii_digit())
                    && p.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
            }
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {name} is not a valid name: letters, digits, _ and $, or a double-quoted name."
        )))
    }
}

/// `schema.table` split at the dot outside quotes.
fn split_qualified(name: &str) -> Vec<&str> {
    let mut quoted = false;
    for (i, c) in name.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => return vec![&name[..i], &name[i + 1..]],
            _ => {}
        }
    }
    vec![name]
}

/// DataTableColumns as names (quotes kept, for the loader to quote alike).
pub fn split_columns(cols: &str) -> Vec<String> {
    cols.split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// RedshiftDestinationDescription: the stored configuration without its
/// Password, with the intermediate S3 destination's description.
pub fn description(redshift: &Value, destination: &Value) -> Value {
    let mut out = redshift.as_object().cloned().unwrap_or_default();
    out.remove("Password");
    if let Some(b) = out.remove("S3BackupConfiguration") {
        out.insert("S3BackupDescription".into(), record::s3_description(&b));
    }
    out.insert(
        "S3DestinationDescription".into(),
        record::s3_description(destination),
    );
    if let Some(p) = destination.get("ProcessingConfiguration") {
        out.insert("ProcessingConfiguration".into(), p.clone());
    }
    Value::Object(out)
}

/// The Redshift configuration as the engine uses it.
#[derive(Debug, Clone)]
pub struct Redshift {
    pub target: LoadTarget,
    /// Where source records are backed up (S3BackupMode Enabled).
    pub backup: Option<Destination>,
    pub spec: CopySpec,
    pub retry_ms: i64,
}

impl Redshift {
    pub fn of(redshift: &Value) -> Result<Redshift> {
        let text = |k: &str| redshift.get(k).and_then(Value::as_str).unwrap_or("");
        let cluster = parse_jdbc_url(text("ClusterJDBCURL")).map_err(invalid)?;
        let cc = redshift.get("CopyCommand");
        let cc_text = |k: &str| cc.and_then(|c| c.get(k)).and_then(Value::as_str);
        let spec = copy::parse(cc_text("CopyOptions").unwrap_or("")).map_err(invalid)?;
        let retry_s = redshift
            .get("RetryOptions")
            .and_then(|r| r.get("DurationInSeconds"))
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_RETRY_S);
        let backup = match redshift.get("S3BackupConfiguration") {
            Some(b) if text("S3BackupMode") == "Enabled" => Some(Destination::of(b)?),
            _ => None,
        };
        Ok(Redshift {
            backup,
            target: LoadTarget {
                cluster,
                username: text("Username").to_string(),
                password: text("Password").to_string(),
                table: cc_text("DataTableName").unwrap_or("").trim().to_string(),
                columns: cc_text("DataTableColumns")
                    .map(split_columns)
                    .filter(|c| !c.is_empty()),
            },
            spec,
            retry_ms: (retry_s * 1000) as i64,
        })
    }
}

/// A uuid that is the same whenever the same batch of the same stream is
/// staged, so its key (and manifest row) is too.
fn batch_uuid(uid: u64, start: u64, end: u64) -> uuid::Uuid {
    // splitmix64: spreads the three numbers over 128 bits.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(uid ^ mix(start));
    let b = mix(a ^ mix(end.wrapping_add(1)));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The staged object's key, as AWS names S3 objects, with the batch's
/// uuid (and `!{firehose:random-string}` drawn from it).
fn staged_key(
    dest: &Destination,
    first_ms: i64,
    name: &str,
    version: u64,
    id: uuid::Uuid,
) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id.as_u64_pair().0);
    let mut key = dest.prefix.render(first_ms, None, &mut rng);
    if dest.prefix.appends_default_time() {
        key.push_str(&prefix::default_time_prefix(first_ms));
    }
    key.push_str(&object_name(first_ms, name, version, id));
    key.push_str(&dest.extension);
    key
}

fn object_name(first_ms: i64, name: &str, version: u64, id: uuid::Uuid) -> String {
    let t = prefix::UtcTime::from_ms(first_ms);
    format!(
        "{name}-{version}-{:04}-{:02}-{:02}-{:02}-{:02}-{:02}-{id}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Where this path's error output goes: ErrorOutputPrefix with
/// `!{firehose:error-output-type}` = `redshift-failed`, or (no expression
/// in it) that prefix, `errors/` by default, then `redshift-failed/` and
/// `sub` (`manifests/` for the failed-load manifests), then
/// `YYYY/MM/dd/HH/` and an object name.
fn error_key(
    dest: &Destination,
    first_ms: i64,
    name: &str,
    version: u64,
    sub: &str,
    ext: &str,
) -> String {
    let rng = &mut rand::rng();
    let id = uuid::Uuid::new_v4();
    let mut key = if dest.error_prefix.has_expressions() {
        dest.error_prefix
            .render(first_ms, Some(ERROR_OUTPUT_TYPE), rng)
    } else {
        let mut k = dest.error_prefix.render(first_ms, None, rng);
        if k.is_empty() {
            k.push_str(DEFAULT_ERROR_PREFIX);
        }
        k.push_str(ERROR_OUTPUT_TYPE);
        k.push('/');
        k
    };
    key.push_str(sub);
    key.push_str(&prefix::default_time_prefix(first_ms));
    key.push_str(&object_name(first_ms, name, version, id));
    key.push_str(ext);
    key
}

/// The Redshift manifest naming the staged files of a skipped batch, as
/// COPY's `MANIFEST` option reads it, for a manual backfill.
pub fn failed_manifest(urls: &[String]) -> Vec<u8> {
    let entries: Vec<Value> = urls
        .iter()
        .map(|u| json!({"url": u, "mandatory": true}))
        .collect();
    serde_json::to_vec(&json!({"entries": entries})).unwrap_or_default()
}

/// What the Redshift path of a flush did.
pub(crate) enum Loaded {
    /// The batch is loaded (or skipped into the error output): checkpoint.
    Done,
    /// Retry the batch after the engine's backoff.
    Retry,
}

/// The processed batch to stage and load.
pub(crate) struct Staged<'a> {
    pub data: Bytes,
    pub records: u64,
    /// Per record, where it ends in `data`; `None` after a Lambda processor
    /// (the file is read as one record).
    pub ends: Option<&'a [(i64, usize)]>,
    pub first_ms: i64,
    pub range: (u64, u64),
    /// Error output of processing, written before the load.
    pub processing_errors: Vec<u8>,
    /// The records as they were buffered, before a Lambda processor (what
    /// S3 backup keeps).
    pub source: Bytes,
}

/// Stages the batch, loads it, and writes what could not be loaded to the
/// error output.
pub(crate) async fn deliver(
    inner: &Arc<Inner>,
    s: &Stream,
    dest: &Destination,
    batch: Staged<'_>,
) -> Loaded {
    let name = &s.rec.name;
    let uid = s.rec.uid;
    let rs = match s.rec.redshift.as_ref().map(Redshift::of) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            warn!(stream = %name, error = %e, "unusable Redshift configuration; retrying");
            return Loaded::Retry;
        }
        None => return Loaded::Retry,
    };
    let Some(loader) = inner.tables.clone() else {
        warn!(stream = %name, "this server has no table loader; the Redshift delivery waits");
        return Loaded::Retry;
    };
    let (start, end) = batch.range;
    // The range first, so a restart loads this very batch (same key).
    let mut pending = match pending::load(inner, uid).await {
        Some(p) if p.start == start && p.end == end => p,
        _ => Pending::new(start, end),
    };
    if !pending::save(inner, uid, &pending).await {
        return Loaded::Retry;
    }
    let key = staged_key(
        dest,
        batch.first_ms,
        name,
        s.rec.version,
        batch_uuid(uid, start, end),
    );
    let object = format!("s3://{}/{key}", dest.bucket);
    let body = match crate::engine::encode_body(&batch.data, dest.compression, &key) {
        Ok(b) => b,
        Err(e) => {
            warn!(stream = %name, error = %e, "cannot compress the staged file");
            return Loaded::Retry;
        }
    };
    if !batch.processing_errors.is_empty() {
        // Processing failures keep the engine's own layout.
        let key = crate::engine::error_key(dest, batch.first_ms, name, s.rec.version);
        match crate::engine::encode_body(
            &Bytes::from(batch.processing_errors.clone()),
            dest.compression,
            &key,
        ) {
            Ok(b) => {
                if let Err(e) = inner
                    .sink
                    .put_as(&dest.bucket, &key, b, dest.kms_key.as_deref())
                    .await
                {
                    warn!(stream = %name, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "cannot write the processing error output; retrying");
                    inner.metrics.failed(name);
                    return Loaded::Retry;
                }
            }
            Err(e) => {
                warn!(stream = %name, error = %e, "cannot compress the error output");
                return Loaded::Retry;
            }
        }
    }
    let staged_len = body.len();
    if let Err(e) = inner
        .sink
        .put_as(&dest.bucket, &key, body, dest.kms_key.as_deref())
        .await
    {
        inner.metrics.failed(name);
        warn!(stream = %name, bucket = %dest.bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "cannot stage the batch in the intermediate bucket; retrying");
        return Loaded::Retry;
    }
    inner
        .metrics
        .delivered(name, batch.records, batch.data.len() as u64);
    let records: Vec<&[u8]> = match batch.ends {
        Some(ends) => {
            let mut at = 0;
            ends.iter()
                .map(|&(_, e)| {
                    let r = &batch.data[at..e];
                    at = e;
                    r
                })
                .collect()
        }
        None => vec![&batch.data[..]],
    };
    let spec = rs.spec.clone();
    let translate = move |cols: &[String]| copy::translate(&spec, cols, &records);
    let job = LoadJob {
        target: &rs.target,
        stream: name,
        object: &object,
        translate: &translate,
        networks: inner.cfg.destination_networks.as_ref(),
    };
    let outcome = loader.load(job).await;
    let now = inner.now_ms();
    match outcome {
        Ok(o) => {
            if o.already_loaded {
                info!(stream = %name, object = %object, "the staged file was loaded before the restart; not loaded again");
            } else {
                inner.metrics.loaded(name, o.rows, batch.data.len() as u64);
                info!(stream = %name, table = %rs.target.table, object = %object, rows = o.rows, bytes = staged_len, "loaded into the table");
            }
            if !o.errors.is_empty() {
                let lines = row_error_lines(&o.errors, batch.ends, batch.first_ms, now);
                let ext = dest.compression.extension();
                let key = error_key(dest, batch.first_ms, name, s.rec.version, "", ext);
                let body =
                    match crate::engine::encode_body(&Bytes::from(lines), dest.compression, &key) {
                        Ok(b) => b,
                        Err(e) => {
                            warn!(stream = %name, error = %e, "cannot compress the error output");
                            return Loaded::Retry;
                        }
                    };
                if let Err(e) = inner
                    .sink
                    .put_as(&dest.bucket, &key, body, dest.kms_key.as_deref())
                    .await
                {
                    // The rows are committed: a retry finds the file
                    // recorded and writes only this again.
                    warn!(stream = %name, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "cannot write the rows that did not parse to the error output; retrying");
                    return Loaded::Retry;
                }
                warn!(stream = %name, key = %key, records = o.errors.len(), "records that did not parse went to the error output");
            }
            backup(inner, name, s.rec.version, &rs, &batch).await
        }
        Err(e) => {
            inner.metrics.load_failed(name);
            let first = *pending.first_failure_ms.get_or_insert(now);
            if now - first >= rs.retry_ms {
                warn!(stream = %name, object = %object, code = e.code(), error = %e, retry_s = rs.retry_ms / 1000, "the load kept failing for the retry duration; the batch is skipped and its manifest written to the error output");
                let key = error_key(dest, batch.first_ms, name, s.rec.version, "manifests/", "");
                let body = Bytes::from(failed_manifest(std::slice::from_ref(&object)));
                if let Err(e) = inner
                    .sink
                    .put_as(&dest.bucket, &key, body, dest.kms_key.as_deref())
                    .await
                {
                    warn!(stream = %name, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "cannot write the failed-load manifest; retrying");
                    return Loaded::Retry;
                }
                return backup(inner, name, s.rec.version, &rs, &batch).await;
            }
            warn!(stream = %name, object = %object, code = e.code(), error = %e, "loading into the table failed; retrying");
            pending::save(inner, uid, &pending).await;
            Loaded::Retry
        }
    }
}

/// Writes the batch's source records to the S3 backup destination, if
/// enabled: once the batch is loaded or skipped, so a retried load does not
/// back it up again (a crash in between backs it up after the restart).
async fn backup(
    inner: &Arc<Inner>,
    name: &str,
    version: u64,
    rs: &Redshift,
    batch: &Staged<'_>,
) -> Loaded {
    let Some(b) = &rs.backup else {
        return Loaded::Done;
    };
    let key = prefix::object_key(
        &b.prefix,
        batch.first_ms,
        name,
        version,
        &b.extension,
        &mut rand::rng(),
    );
    let body = match crate::engine::encode_body(&batch.source, b.compression, &key) {
        Ok(body) => body,
        Err(e) => {
            warn!(stream = %name, error = %e, "cannot compress the backup");
            return Loaded::Retry;
        }
    };
    match inner
        .sink
        .put_as(&b.bucket, &key, body, b.kms_key.as_deref())
        .await
    {
        Ok(()) => {
            info!(stream = %name, bucket = %b.bucket, key = %key, "backed up the source records");
            Loaded::Done
        }
        Err(e) => {
            warn!(stream = %name, bucket = %b.bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "cannot write the S3 backup; retrying");
            Loaded::Retry
        }
    }
}

/// The error output lines of records that did not parse, in AWS's
/// error-record shape.
fn row_error_lines(
    errors: &[copy::RowError],
    ends: Option<&[(i64, usize)]>,
    first_ms: i64,
    now: i64,
) -> Vec<u8> {
    let mut out = Vec::new();
    for e in errors {
        let arrival = ends
            .and_then(|ends| ends.get(e.record))
            .map_or(first_ms, |&(a, _)| a);
        out.extend(crate::lambda::error_line(
            1,
            arrival,
            "Redshift.InvalidRecord",
            &e.message,
            now,
            &e.raw,
            "",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Value {
        json!({
            "RoleARN": "arn:aws:iam::123456789012:role/r",
            "ClusterJDBCURL": "jdbc:postgresql://127.0.0.1:5432/db",
            "CopyCommand": {"DataTableName": "public.events", "DataTableColumns": "id, name", "CopyOptions": "JSON 'auto'"},
            "Username": "loader",
            "Password": "secret-1",
            "S3Configuration": {"RoleARN": "arn:aws:iam::123456789012:role/r", "BucketARN": "arn:aws:s3:::stage"},
        })
    }

    #[test]
    fn jdbc_urls_parse() {
        assert_eq!(
            parse_jdbc_url("jdbc:redshift://c.abc.us-east-1.redshift.amazonaws.com:5439/dev")
                .unwrap(),
            Cluster {
                host: "c.abc.us-east-1.redshift.amazonaws.com".into(),
                port: 5439,
                database: "dev".into()
            }
        );
        assert_eq!(
            parse_jdbc_url("jdbc:postgresql://localhost/db?ssl=false")
                .unwrap()
                .port,
            5432
        );
        assert_eq!(
            parse_jdbc_url("jdbc:redshift://[::1]:7/d").unwrap().host,
            "::1"
        );
        for bad in [
            "postgres://h:1/d",
            "jdbc:mysql://h:1/d",
            "jdbc:redshift://h:1",
            "jdbc:redshift://h:x/d",
            "jdbc:redshift://h:0/d",
            "jdbc:redshift://:5/d",
            "jdbc:redshift://h:5/",
        ] {
            assert!(parse_jdbc_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn updates_merge_member_by_member_and_keep_the_rules() {
        let (r, d) = normalize(&cfg(), None).unwrap();
        // The table and the intermediate prefix change; the rest stays.
        let (r2, d2) = merge_update(
            &r,
            &d,
            &json!({"CopyCommand": {"DataTableName": "public.other", "CopyOptions": "JSON 'auto'"},
                    "S3Update": {"Prefix": "staged/"},
                    "RetryOptions": {"DurationInSeconds": 60}}),
            None,
        )
        .unwrap();
        assert_eq!(r2["CopyCommand"]["DataTableName"], "public.other");
        assert_eq!(r2["Username"], "loader");
        assert_eq!(r2["Password"], "secret-1");
        assert_eq!(r2["RetryOptions"]["DurationInSeconds"], 60);
        assert_eq!(d2["Prefix"], "staged/");
        assert_eq!(d2["BucketARN"], "arn:aws:s3:::stage");
        // The update is checked as a creation is.
        let bad = json!({"CopyCommand": {"DataTableName": "t; drop table x"}});
        assert!(merge_update(&r, &d, &bad, None).is_err());
        let gz = json!({"S3Update": {"CompressionFormat": "GZIP"}});
        assert!(
            merge_update(&r, &d, &gz, None).is_err(),
            "GZIP staging needs GZIP in CopyOptions"
        );
        // A new host needs the password again; the same host does not.
        let moved = json!({"ClusterJDBCURL": "jdbc:postgresql://db.example.com:5432/db"});
        let e = merge_update(&r, &d, &moved, None).unwrap_err();
        assert!(e.to_string().contains("Password"), "{e}");
        let mut with_password = moved.clone();
        with_password["Password"] = json!("secret-2");
        let (r3, _) = merge_update(&r, &d, &with_password, None).unwrap();
        assert_eq!(r3["Password"], "secret-2");
        let other_db = json!({"ClusterJDBCURL": "jdbc:postgresql://127.0.0.1:5432/db2"});
        assert!(merge_update(&r, &d, &other_db, None).is_ok());
        // Source backup, once enabled, stays enabled.
        let on = json!({"S3BackupMode": "Enabled", "S3BackupUpdate": {"RoleARN": "arn:aws:iam::123456789012:role/r", "BucketARN": "arn:aws:s3:::backup"}});
        let (r4, d4) = merge_update(&r, &d, &on, None).unwrap();
        assert_eq!(
            r4["S3BackupConfiguration"]["BucketARN"],
            "arn:aws:s3:::backup"
        );
        let off = json!({"S3BackupMode": "Disabled"});
        assert!(merge_update(&r4, &d4, &off, None).is_err());
    }

    #[test]
    fn ip_literal_clusters_outside_the_networks_are_refused() {
        let nets = Networks::parse(["10.0.0.0/8"]).unwrap();
        // cfg() names 127.0.0.1.
        let e = normalize(&cfg(), Some(&nets)).unwrap_err();
        assert!(e.to_string().contains("outside the networks"), "{e}");
        assert!(normalize(&cfg(), None).is_ok());
        let mut c = cfg();
        c["ClusterJDBCURL"] = json!("jdbc:redshift://[::1]:5439/db");
        assert!(normalize(&c, Some(&nets)).is_err());
        for other_spelling in ["127.1", "2130706433", "0x7f.0.0.1"] {
            c["ClusterJDBCURL"] = json!(format!("jdbc:redshift://{other_spelling}:5439/db"));
            assert!(normalize(&c, Some(&nets)).is_err(), "{other_spelling}");
        }
        c["ClusterJDBCURL"] = json!("jdbc:redshift://10.9.8.7:5439/db");
        let (r, d) = normalize(&c, Some(&nets)).unwrap();
        // A name is left to the loader, which checks what it resolves to.
        c["ClusterJDBCURL"] = json!("jdbc:redshift://db.example.com:5439/db");
        assert!(normalize(&c, Some(&nets)).is_ok());
        let back =
            json!({"ClusterJDBCURL": "jdbc:postgresql://127.0.0.1:5432/db", "Password": "p"});
        assert!(merge_update(&r, &d, &back, Some(&nets)).is_err());
        assert!(merge_update(&r, &d, &back, None).is_ok());
    }

    #[test]
    fn configurations_normalize() {
        let (rs, dest) = normalize(&cfg(), None).unwrap();
        assert_eq!(rs["RetryOptions"], json!({"DurationInSeconds": 3600}));
        assert_eq!(rs["S3BackupMode"], "Disabled");
        assert_eq!(dest["BufferingHints"]["SizeInMBs"], 5);
        let d = description(&rs, &dest);
        assert!(d.get("Password").is_none());
        assert_eq!(d["Username"], "loader");
        assert_eq!(
            d["S3DestinationDescription"]["BucketARN"],
            "arn:aws:s3:::stage"
        );
        let r = Redshift::of(&rs).unwrap();
        assert_eq!(
            r.target.columns,
            Some(vec!["id".to_string(), "name".to_string()])
        );
        assert_eq!(r.target.table, "public.events");
        assert!(!format!("{:?}", r.target).contains("secret-1"));
        for (patch, msg) in [
            (
                json!({"ClusterJDBCURL": "jdbc:oracle://h:1/d"}),
                "ClusterJDBCURL",
            ),
            (json!({"Password": ""}), "Password"),
            (
                json!({"CopyCommand": {"DataTableName": "t; drop table x"}}),
                "valid name",
            ),
            (
                json!({"CopyCommand": {"DataTableName": "t", "CopyOptions": "MANIFEST"}}),
                "MANIFEST",
            ),
            (
                json!({"CopyCommand": {"DataTableName": "t", "CopyOptions": "GZIP"}}),
                "GZIP",
            ),
            (
                json!({"S3BackupMode": "Enabled"}),
                "S3BackupConfiguration is required",
            ),
            (
                json!({"S3BackupConfiguration": {"BucketARN": "arn:aws:s3:::b"}}),
                "only allowed",
            ),
            (json!({"RetryOptions": {"DurationInSeconds": 9000}}), "7200"),
        ] {
            let mut c = cfg();
            for (k, v) in patch.as_object().unwrap() {
                c[k] = v.clone();
            }
            let e = normalize(&c, None).unwrap_err();
            assert_eq!(e.code(), "InvalidArgumentException");
            assert!(e.to_string().contains(msg), "{e}");
        }
        let mut c = cfg();
        c["S3BackupMode"] = json!("Enabled");
        c["S3BackupConfiguration"] = json!({"RoleARN": "arn:aws:iam::123456789012:role/r", "BucketARN": "arn:aws:s3:::backup", "CompressionFormat": "GZIP"});
        let (rs, dest) = normalize(&c, None).unwrap();
        let d = description(&rs, &dest);
        assert_eq!(d["S3BackupDescription"]["BucketARN"], "arn:aws:s3:::backup");
        assert!(d.get("S3BackupConfiguration").is_none());
        assert_eq!(Redshift::of(&rs).unwrap().backup.unwrap().bucket, "backup");
        let mut c = cfg();
        c["S3Configuration"]["CompressionFormat"] = json!("Snappy");
        assert!(
            normalize(&c, None)
                .unwrap_err()
                .to_string()
                .contains("Snappy")
        );
        c["S3Configuration"]["CompressionFormat"] = json!("GZIP");
        c["CopyCommand"]["CopyOptions"] = json!("json 'auto' gzip");
        assert!(normalize(&c, None).is_ok());
    }

    #[test]
    fn staged_keys_are_awss_and_stable() {
        let (_, dest) = normalize(&cfg(), None).unwrap();
        let dest = Destination::of(&dest).unwrap();
        let t = 1_796_317_445_123;
        let a = staged_key(&dest, t, "s", 1, batch_uuid(7, 10, 20));
        assert_eq!(a, staged_key(&dest, t, "s", 1, batch_uuid(7, 10, 20)));
        assert_ne!(a, staged_key(&dest, t, "s", 1, batch_uuid(7, 10, 21)));
        assert!(
            a.starts_with("2026/12/03/17/s-1-2026-12-03-17-04-05-"),
            "{a}"
        );
        let e = error_key(&dest, t, "s", 1, "manifests/", "");
        assert!(
            e.starts_with("errors/redshift-failed/manifests/2026/12/03/17/s-1-"),
            "{e}"
        );
        let m: Value = serde_json::from_slice(&failed_manifest(&["s3://b/k".into()])).unwrap();
        assert_eq!(
            m,
            json!({"entries": [{"url": "s3://b/k", "mandatory": true}]})
        );
    }
}
