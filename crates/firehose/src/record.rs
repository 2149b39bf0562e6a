//! A delivery stream as the catalog keeps it, its S3 destination's checks
//! and defaults, and its description in AWS's shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::prefix;
use crate::processing::{self, Pipeline};

/// The id AWS gives the one destination of a delivery stream.
pub const DESTINATION_ID: &str = "destinationId-000000000001";

/// Default buffering: 5 MiB or 300 seconds, whichever first.
pub const DEFAULT_SIZE_MB: u64 = 5;
pub const DEFAULT_INTERVAL_S: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Creating,
    Active,
    Deleting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "CREATING",
            Status::Active => "ACTIVE",
            Status::Deleting => "DELETING",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// Server-side encryption of the records the stream holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `AWS_OWNED_CMK` or `CUSTOMER_MANAGED_CMK`.
    pub key_type: String,
    pub key_arn: Option<String>,
    /// The key id the keyring resolved it to, which batches are sealed under.
    pub key_id: String,
}

/// One delivery stream, stored as JSON in the `firehose/streams` space under
/// its name.
#[derive(Clone, Serialize, Deserialize)]
pub struct StreamRecord {
    pub name: String,
    /// Unique across the server's life: names the log partition, so a
    /// stream re-created under the same name never sees the old records.
    pub uid: u64,
    pub stream_type: String,
    pub status: Status,
    /// When CREATING becomes ACTIVE, or DELETING ends.
    pub status_until_ms: i64,
    pub created_ms: i64,
    pub updated_ms: Option<i64>,
    pub version: u64,
    /// The destination in the form of an `ExtendedS3DestinationDescription`,
    /// AWS's defaults filled in.
    pub destination: Value,
    #[serde(default)]
    pub direct_put: Option<Value>,
    /// The Data Streams stream a KinesisStreamAsSource stream reads.
    #[serde(default)]
    pub kinesis_source: Option<crate::source::KinesisSourceConfig>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub encryption: Option<Encryption>,
    /// When Start/StopDeliveryStreamEncryption last changed the stream,
    /// within the last 24 hours (AWS allows 25 such calls a day).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_changes_ms: Vec<i64>,
    /// A push destination (HTTP endpoint, Splunk, OpenSearch,
    /// Elasticsearch); `destination` is then its S3 configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<crate::endpoints::Endpoint>,
    /// A Redshift destination's own configuration (`destination` is then
    /// its intermediate S3 configuration); see [`crate::redshift`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redshift: Option<Value>,
}

// Written out so a Redshift password never reaches a log line: the
// Redshift part is shown without its `Password`.
impl std::fmt::Debug for StreamRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redshift = self.redshift.as_ref().map(|r| {
            let mut r = r.clone();
            if let Some(o) = r.as_object_mut()
                && o.contains_key("Password")
            {
                o.insert("Password".into(), Value::from("<redacted>"));
            }
            r
        });
        f.debug_struct("StreamRecord")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("stream_type", &self.stream_type)
            .field("status", &self.status)
            .field("status_until_ms", &self.status_until_ms)
            .field("created_ms", &self.created_ms)
            .field("updated_ms", &self.updated_ms)
            .field("version", &self.version)
            .field("destination", &self.destination)
            .field("direct_put", &self.direct_put)
            .field("kinesis_source", &self.kinesis_source)
            .field("tags", &self.tags)
            .field("encryption", &self.encryption)
            .field("encryption_changes_ms", &self.encryption_changes_ms)
            .field("endpoint", &self.endpoint)
            .field("redshift", &redshift)
            .finish()
    }
}

impl StreamRecord {
    /// The status now, `None` once a deletion is over.
    pub fn status_at(&self, now_ms: i64) -> Option<Status> {
        match self.status {
            Status::Creating if now_ms >= self.status_until_ms => Some(Status::Active),
            Status::Deleting if now_ms >= self.status_until_ms => None,
            s => Some(s),
        }
    }

    pub fn partition_id(&self) -> String {
        partition_id(self.uid)
    }
}

/// The shard-log partition of a delivery stream: a namespace of its own, so
/// no other service's reconciliation takes it for an orphan of theirs.
pub fn partition_id(uid: u64) -> String {
    format!("firehose-{uid}")
}

/// The stream uid a Firehose partition id names.
pub fn partition_uid(id: &str) -> Option<u64> {
    id.strip_prefix("firehose-")?.parse().ok()
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

fn not_yet(what: &str) -> Error {
    invalid(format!("{what} is not supported yet by this server."))
}

/// The members of an S3 destination configuration or update, the others
/// (Extended only) included.
const S3_MEMBERS: &[&str] = &[
    "RoleARN",
    "BucketARN",
    "Prefix",
    "ErrorOutputPrefix",
    "BufferingHints",
    "CompressionFormat",
    "EncryptionConfiguration",
    "CloudWatchLoggingOptions",
];

fn enabled(v: Option<&Value>, default: bool) -> bool {
    v.and_then(|c| c.get("Enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

/// Checks an S3 destination (configuration, or an update merged into the
/// current one) and fills AWS's defaults: the stored destination.
pub fn normalize_destination(mut d: Map<String, Value>) -> Result<Value> {
    for m in ["RoleARN", "BucketARN"] {
        if d.get(m).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(invalid(format!("{m} is required for an S3 destination.")));
        }
    }
    // What this server cannot do yet is refused, never stored and ignored.
    // Processing: checked here (types, parameters, what is supported yet);
    // applied by the engine from the stored configuration.
    let pipeline = processing::pipeline(d.get("ProcessingConfiguration"))?;
    // Record format conversion: checked and defaulted in its own module.
    crate::conversion::normalize(&mut d)?;
    let converting = crate::conversion::enabled(&d);
    // Dynamic partitioning: with the prefixes' rules (it checks them).
    let partitioned = crate::partition::normalize(&mut d, &pipeline)?;
    // Source record backup: a second S3 destination of its own (the
    // S3DestinationConfiguration shape, so no backup of its own).
    let backup_mode = d
        .get("S3BackupMode")
        .and_then(Value::as_str)
        .map(str::to_string);
    match (backup_mode.as_deref(), d.remove("S3BackupConfiguration")) {
        (None | Some("Disabled"), None) => {}
        (None | Some("Disabled"), Some(_)) => {
            return Err(invalid(
                "S3BackupConfiguration is only allowed when S3BackupMode is Enabled.",
            ));
        }
        (Some("Enabled"), Some(b)) => {
            let mut b = b.as_object().cloned().unwrap_or_default();
            b.remove("S3BackupMode");
            let mut b = normalize_destination(b)?;
            if let Some(o) = b.as_object_mut() {
                o.remove("S3BackupMode");
            }
            d.insert("S3BackupConfiguration".into(), b);
        }
        (Some("Enabled"), None) => {
            return Err(invalid(
                "S3BackupConfiguration is required when S3BackupMode is Enabled.",
            ));
        }
        (Some(m), _) => return Err(invalid(format!("S3BackupMode {m} is not valid."))),
    }
    prefix::time_zone(d.get("CustomTimeZone").and_then(Value::as_str)).map_err(invalid)?;
    match d.get("CompressionFormat").and_then(Value::as_str) {
        None
        | Some("UNCOMPRESSED")
        | Some("GZIP")
        | Some("ZIP")
        | Some("Snappy")
        | Some("HADOOP_SNAPPY") => {}
        Some(c) => return Err(not_yet(&format!("CompressionFormat {c}"))),
    }
    if converting
        && d.get("CompressionFormat")
            .and_then(Value::as_str)
            .is_some_and(|c| c != "UNCOMPRESSED")
    {
        // The serializer compresses (ParquetSerDe.Compression).
        return Err(invalid(
            "CompressionFormat must be UNCOMPRESSED when data format conversion is enabled.",
        ));
    }
    if let Some(e) = d.get("EncryptionConfiguration") {
        let kms = e.get("KMSEncryptionConfig").is_some();
        let none = e.get("NoEncryptionConfig").is_some();
        if kms && none {
            return Err(invalid(
                "EncryptionConfiguration cannot specify both NoEncryptionConfig and KMSEncryptionConfig.",
            ));
        }
        // The key itself is resolved through the keyring by the
        // operation (create and update), which has it.
        if kms
            && e.pointer("/KMSEncryptionConfig/AWSKMSKeyARN")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            return Err(invalid(
                "KMSEncryptionConfig.AWSKMSKeyARN is required when KMSEncryptionConfig is specified.",
            ));
        }
    }
    if let Some(c) = d.get("CloudWatchLoggingOptions")
        && enabled(Some(c), false)
    {
        for m in ["LogGroupName", "LogStreamName"] {
            if c.get(m).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(invalid(format!(
                    "CloudWatchLoggingOptions.{m} is required when CloudWatch logging is enabled."
                )));
            }
        }
    }
    let text = |d: &Map<String, Value>, k: &str| d.get(k).and_then(Value::as_str).map(String::from);
    if bucket_name(text(&d, "BucketARN").as_deref().unwrap_or("")).is_none() {
        return Err(invalid("BucketARN must be arn:aws:s3:::<bucket>."));
    }
    // BufferingHints: either member alone takes the other's default.
    let hints = d.get("BufferingHints").cloned().unwrap_or(json!({}));
    let size =
        hints
            .get("SizeInMBs")
            .and_then(Value::as_u64)
            .unwrap_or(if converting || partitioned {
                crate::conversion::DEFAULT_SIZE_MB.max(crate::partition::DEFAULT_SIZE_MB)
            } else {
                DEFAULT_SIZE_MB
            });
    let interval = hints
        .get("IntervalInSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_INTERVAL_S);
    if !(1..=128).contains(&size) {
        return Err(invalid(
            "BufferingHints.SizeInMBs must be between 1 and 128.",
        ));
    }
    if converting && size < crate::conversion::MIN_SIZE_MB {
        return Err(invalid(
            "BufferingHints.SizeInMBs must be at least 64 when data format conversion is enabled.",
        ));
    }
    if partitioned && size < crate::partition::MIN_SIZE_MB {
        return Err(invalid(
            "BufferingHints.SizeInMBs must be at least 64 when dynamic partitioning is enabled.",
        ));
    }
    if partitioned && interval == 0 {
        return Err(invalid(
            "BufferingHints.IntervalInSeconds cannot be 0 when dynamic partitioning is enabled: zero buffering is not available for dynamic partitioning.",
        ));
    }
    if interval > 900 {
        return Err(invalid(
            "BufferingHints.IntervalInSeconds must be between 0 and 900.",
        ));
    }
    d.insert(
        "BufferingHints".into(),
        json!({"SizeInMBs": size, "IntervalInSeconds": interval}),
    );
    d.entry("CompressionFormat")
        .or_insert(json!("UNCOMPRESSED"));
    d.entry("EncryptionConfiguration")
        .or_insert(json!({"NoEncryptionConfig": "NoEncryption"}));
    d.entry("CloudWatchLoggingOptions")
        .or_insert(json!({"Enabled": false}));
    d.entry("S3BackupMode").or_insert(json!("Disabled"));
    Ok(Value::Object(d))
}

/// The bucket an S3 bucket ARN (`arn:<partition>:s3:::<bucket>`) names, if
/// it is a valid bucket name.
pub fn bucket_name(arn: &str) -> Option<&str> {
    let (head, bucket) = arn.split_once(":::")?;
    let partition = head.strip_prefix("arn:")?.strip_suffix(":s3")?;
    (!partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && valid_bucket_name(bucket))
    .then_some(bucket)
}

/// `DurationInSeconds` of a destination's `RetryOptions`, `default` when
/// it names none; AWS admits 0 to 7200.
pub(crate) fn retry_duration_s(retry_options: Option<&Value>, default: u64) -> Result<u64> {
    match retry_options.and_then(|r| r.get("DurationInSeconds")) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|s| *s <= 7200)
            .ok_or_else(|| invalid("RetryOptions.DurationInSeconds must be between 0 and 7200.")),
    }
}

/// S3's bucket naming rules (3 to 63 characters of lowercase letters,
/// digits, dots and hyphens, starting and ending with a letter or digit, no
/// two dots in a row), so a name never becomes a path segment such as `.`
/// or `..` in an external store's URL or the embedded store's directory.
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.iter().all(|&c| edge(c) || c == b'.' || c == b'-')
        && edge(b[0])
        && edge(b[b.len() - 1])
        && !name.contains("..")
}

/// Merges an `S3DestinationUpdate` or `ExtendedS3DestinationUpdate` into the
/// current destination as AWS does: the members given replace the current
/// ones, the others stay.
pub fn merge_update(current: &Value, update: &Value, extended: bool) -> Result<Value> {
    let mut d = current.as_object().cloned().unwrap_or_default();
    let Some(u) = update.as_object() else {
        return Err(invalid("The destination update must be an object."));
    };
    for (k, v) in u {
        if !extended && !S3_MEMBERS.contains(&k.as_str()) {
            continue;
        }
        if k == "S3BackupUpdate" {
            // Merged member by member into the backup destination, or the
            // backup destination when there was none.
            let merged = match d.get("S3BackupConfiguration") {
                Some(cur) => {
                    let mut b = cur.as_object().cloned().unwrap_or_default();
                    for (bk, bv) in v.as_object().into_iter().flatten() {
                        b.insert(bk.clone(), bv.clone());
                    }
                    Value::Object(b)
                }
                None => v.clone(),
            };
            d.insert("S3BackupConfiguration".into(), merged);
            continue;
        }
        d.insert(k.clone(), v.clone());
    }
    // AWS: a stream's backup can be enabled, never disabled again.
    if current.get("S3BackupMode").and_then(Value::as_str) == Some("Enabled")
        && d.get("S3BackupMode").and_then(Value::as_str) != Some("Enabled")
    {
        return Err(invalid(
            "S3BackupMode cannot be changed from Enabled to Disabled.",
        ));
    }
    crate::partition::check_update(current, &d)?;
    normalize_destination(d)
}

/// `ExtendedS3DestinationDescription`: the stored destination, its backup
/// destination as the `S3BackupDescription` shape.
pub fn extended_description(dest: &Value) -> Value {
    let mut d = dest.clone();
    if let Some(o) = d.as_object_mut()
        && let Some(b) = o.remove("S3BackupConfiguration")
    {
        o.insert("S3BackupDescription".into(), s3_description(&b));
    }
    d
}

/// `S3DestinationDescription`: the members the plain S3 shape has.
pub fn s3_description(dest: &Value) -> Value {
    let mut out = Map::new();
    if let Some(d) = dest.as_object() {
        for m in S3_MEMBERS {
            if let Some(v) = d.get(*m) {
                out.insert((*m).to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// How delivered objects are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// One deflated file per object, named after the object.
    Zip,
    /// Snappy's framing format, as Firehose writes `Snappy`.
    Snappy,
    /// Hadoop's block format (`HADOOP_SNAPPY`), which Hadoop's
    /// `SnappyCodec` reads.
    HadoopSnappy,
}

impl Compression {
    /// The extension AWS gives object names when FileExtension is unset.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zip => ".zip",
            Compression::Snappy => ".snappy",
            Compression::HadoopSnappy => ".hsnappy",
        }
    }
}

/// The destination as the delivery engine uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub bucket: String,
    pub prefix: prefix::Template,
    pub size_bytes: usize,
    pub interval_ms: i64,
    pub compression: Compression,
    /// The extension every data object's name ends with.
    pub extension: String,
    /// The extension of error output objects.
    pub error_extension: String,
    /// What is done to each record before it is buffered.
    pub processing: Pipeline,
    /// Where records that failed processing go.
    pub error_prefix: prefix::Template,
    /// No ErrorOutputPrefix was given, so `error_prefix` is Prefix.
    pub error_prefix_defaulted: bool,
    /// Record format conversion, when enabled.
    pub conversion: Option<crate::conversion::Conversion>,
    /// The Iceberg table records go to instead of objects, if any.
    pub iceberg: Option<crate::iceberg::Target>,
    /// Dynamic partitioning: one object per partition of each flush.
    pub partitioned: bool,
    /// CustomTimeZone (UTC when `None`).
    pub zone: Option<jiff::tz::TimeZone>,
    /// Where source records are backed up (S3BackupMode Enabled).
    pub backup: Option<Box<Destination>>,
    /// The KMS key (KMSEncryptionConfig.AWSKMSKeyARN) this S3
    /// configuration's objects are stored under (SSE-KMS): its data and
    /// error output; a backup has its own.
    pub kms_key: Option<String>,
}

impl Destination {
    /// Reads a stored (normalized) destination.
    pub fn of(dest: &Value) -> Result<Destination> {
        let text = |k: &str| dest.get(k).and_then(Value::as_str);
        let bucket = bucket_name(text("BucketARN").unwrap_or(""))
            .ok_or_else(|| invalid("BucketARN must be arn:aws:s3:::<bucket>."))?
            .to_string();
        let prefix = prefix::Template::parse(text("Prefix").unwrap_or("")).map_err(invalid)?;
        let hints = dest.get("BufferingHints");
        let n = |k: &str, d: u64| {
            hints
                .and_then(|h| h.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(d)
        };
        let compression = match text("CompressionFormat") {
            Some("GZIP") => Compression::Gzip,
            Some("ZIP") => Compression::Zip,
            Some("Snappy") => Compression::Snappy,
            Some("HADOOP_SNAPPY") => Compression::HadoopSnappy,
            _ => Compression::None,
        };
        let conversion = crate::conversion::of(dest)?;
        let file_extension = text("FileExtension").filter(|e| !e.is_empty());
        // AWS's defaults: `.parquet` for converted objects (compressed
        // inside the file), else the compression's.
        let extension = match (file_extension, &conversion) {
            (Some(e), _) => e.to_string(),
            (None, Some(_)) => ".parquet".to_string(),
            (None, None) => compression.extension().to_string(),
        };
        // Error output is JSON lines, never Parquet: converted streams'
        // error objects take only the compression's extension.
        let error_extension = match (file_extension, &conversion) {
            (Some(e), None) => e.to_string(),
            _ => compression.extension().to_string(),
        };
        let mut processing = processing::pipeline(dest.get("ProcessingConfiguration"))?;
        let partitioned = dest.as_object().is_some_and(crate::partition::enabled);
        processing.defer_delimiter = partitioned;
        let zone = prefix::time_zone(text("CustomTimeZone")).map_err(invalid)?;
        // AWS: without ErrorOutputPrefix (allowed only when Prefix has no
        // expressions) failed records go under Prefix, then the error type.
        let error_prefix_defaulted =
            text("ErrorOutputPrefix").is_none_or(str::is_empty) && !prefix.has_expressions();
        let error_prefix = match text("ErrorOutputPrefix").filter(|e| !e.is_empty()) {
            Some(e) => prefix::Template::parse(e).map_err(invalid)?,
            None if !prefix.has_expressions() => prefix.clone(),
            None => prefix::Template::parse("").map_err(invalid)?,
        };
        let backup = match (text("S3BackupMode"), dest.get("S3BackupConfiguration")) {
            (Some("Enabled"), Some(b)) => Some(Box::new(Destination::of(b)?)),
            _ => None,
        };
        let kms_key = dest
            .pointer("/EncryptionConfiguration/KMSEncryptionConfig/AWSKMSKeyARN")
            .and_then(Value::as_str)
            .map(String::from);
        Ok(Destination {
            kms_key,
            iceberg: crate::iceberg::of(dest)?,
            backup,
            partitioned,
            zone,
            conversion,
            error_extension,
            processing,
            error_prefix,
            error_prefix_defaulted,
            bucket,
            prefix,
            size_bytes: (n("SizeInMBs", DEFAULT_SIZE_MB) * 1024 * 1024) as usize,
            interval_ms: (n("IntervalInSeconds", DEFAULT_INTERVAL_S) * 1000) as i64,
            compression,
            extension,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: Value) -> Map<String, Value> {
        let mut m =
            json!({"RoleARN": "arn:aws:iam::123456789012:role/r", "BucketARN": "arn:aws:s3:::bkt"})
                .as_object()
                .cloned()
                .unwrap();
        m.extend(extra.as_object().cloned().unwrap());
        m
    }

    #[test]
    fn defaults_are_awss() {
        let d = normalize_destination(cfg(json!({}))).unwrap();
        assert_eq!(
            d["BufferingHints"],
            json!({"SizeInMBs": 5, "IntervalInSeconds": 300})
        );
        assert_eq!(d["CompressionFormat"], "UNCOMPRESSED");
        assert_eq!(
            d["EncryptionConfiguration"],
            json!({"NoEncryptionConfig": "NoEncryption"})
        );
        assert_eq!(d["CloudWatchLoggingOptions"], json!({"Enabled": false}));
        assert_eq!(d["S3BackupMode"], "Disabled");
        let s3 = s3_description(&d);
        assert!(s3.get("S3BackupMode").is_none());
        assert_eq!(s3["BucketARN"], "arn:aws:s3:::bkt");
        let one = normalize_destination(cfg(json!({"BufferingHints": {"IntervalInSeconds": 1}})))
            .unwrap();
        assert_eq!(
            one["BufferingHints"],
            json!({"SizeInMBs": 5, "IntervalInSeconds": 1})
        );
    }

    #[test]
    fn source_backup_is_a_destination_of_its_own() {
        let b = json!({"RoleARN": "arn:aws:iam::123456789012:role/r", "BucketARN": "arn:aws:s3:::copies", "CompressionFormat": "GZIP", "Prefix": "raw/"});
        let d = normalize_destination(cfg(
            json!({"S3BackupMode": "Enabled", "S3BackupConfiguration": b}),
        ))
        .unwrap();
        let e = Destination::of(&d).unwrap();
        let backup = e.backup.as_deref().unwrap();
        assert_eq!(
            (backup.bucket.as_str(), backup.compression),
            ("copies", Compression::Gzip)
        );
        assert_eq!(backup.extension, ".gz");
        let described = extended_description(&d);
        assert_eq!(
            described["S3BackupDescription"]["BucketARN"],
            "arn:aws:s3:::copies"
        );
        assert_eq!(
            described["S3BackupDescription"]["BufferingHints"]["SizeInMBs"],
            5
        );
        assert!(described.get("S3BackupConfiguration").is_none());
        // An update merges into the backup; disabling it is refused.
        let u = merge_update(&d, &json!({"S3BackupUpdate": {"Prefix": "again/"}}), true).unwrap();
        assert_eq!(u["S3BackupConfiguration"]["Prefix"], "again/");
        assert_eq!(
            u["S3BackupConfiguration"]["BucketARN"],
            "arn:aws:s3:::copies"
        );
        assert!(merge_update(&d, &json!({"S3BackupMode": "Disabled"}), true).is_err());
        for bad in [
            json!({"S3BackupMode": "Enabled"}),
            json!({"S3BackupConfiguration": {"RoleARN": "r", "BucketARN": "arn:aws:s3:::copies"}}),
        ] {
            assert!(normalize_destination(cfg(bad.clone())).is_err(), "{bad}");
        }
        let plain = normalize_destination(cfg(json!({}))).unwrap();
        assert!(Destination::of(&plain).unwrap().backup.is_none());
    }

    #[test]
    fn unsupported_features_are_refused_not_ignored() {
        // SSE-KMS is kept for the engine, the backup's key its own.
        let kms = json!({"EncryptionConfiguration": {"KMSEncryptionConfig": {"AWSKMSKeyARN": "arn:aws:kms:us-east-1:123456789012:key/k"}},
            "S3BackupMode": "Enabled",
            "S3BackupConfiguration": {"RoleARN": "r", "BucketARN": "arn:aws:s3:::copies",
                "EncryptionConfiguration": {"KMSEncryptionConfig": {"AWSKMSKeyARN": "arn:aws:kms:us-east-1:123456789012:key/b"}}}});
        let d = Destination::of(&normalize_destination(cfg(kms)).unwrap()).unwrap();
        assert_eq!(
            d.kms_key.as_deref(),
            Some("arn:aws:kms:us-east-1:123456789012:key/k")
        );
        assert_eq!(
            d.backup.unwrap().kms_key.as_deref(),
            Some("arn:aws:kms:us-east-1:123456789012:key/b")
        );
        let no_arn = json!({"EncryptionConfiguration": {"KMSEncryptionConfig": {}}});
        let e = normalize_destination(cfg(no_arn)).unwrap_err();
        assert_eq!(e.code(), "InvalidArgumentException");
        let plain = normalize_destination(cfg(json!({}))).unwrap();
        assert_eq!(Destination::of(&plain).unwrap().kms_key, None);
        // Disabled features are stored as given.
        assert!(
            normalize_destination(cfg(json!({"ProcessingConfiguration": {"Enabled": false}})))
                .is_ok()
        );
        assert!(
            normalize_destination(cfg(
                json!({"DataFormatConversionConfiguration": {"Enabled": false}})
            ))
            .is_ok()
        );
        assert!(
            normalize_destination(cfg(
                json!({"BufferingHints": {"SizeInMBs": 0, "IntervalInSeconds": 1}})
            ))
            .is_err()
        );
        assert!(normalize_destination(cfg(json!({"Prefix": "!{timestamp:yyyy}/"}))).is_err());
        assert!(
            normalize_destination(cfg(json!({"CloudWatchLoggingOptions": {"Enabled": true}})))
                .is_err()
        );
    }

    #[test]
    fn partitioning_has_awss_destination_rules() {
        let dp = json!({
            "Prefix": "c=!{partitionKeyFromQuery:c}/",
            "ErrorOutputPrefix": "e/!{firehose:error-output-type}/",
            "DynamicPartitioningConfiguration": {"Enabled": true},
            "CustomTimeZone": "America/New_York",
            "ProcessingConfiguration": {"Enabled": true, "Processors": [{"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{c: .c}"},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]}});
        let d = normalize_destination(cfg(dp.clone())).unwrap();
        assert_eq!(d["BufferingHints"]["SizeInMBs"], 128);
        let e = Destination::of(&d).unwrap();
        assert!(e.partitioned && e.zone.is_some() && e.processing.defer_delimiter);
        for (hints, msg) in [
            (
                json!({"SizeInMBs": 63, "IntervalInSeconds": 60}),
                "at least 64",
            ),
            (
                json!({"SizeInMBs": 64, "IntervalInSeconds": 0}),
                "zero buffering",
            ),
        ] {
            let mut x = dp.clone();
            x["BufferingHints"] = hints;
            let err = normalize_destination(cfg(x)).unwrap_err();
            assert!(err.to_string().contains(msg), "{err}");
        }
        let mut bad_zone = dp.clone();
        bad_zone["CustomTimeZone"] = json!("Nowhere/Land");
        assert!(normalize_destination(cfg(bad_zone)).is_err());
        // Not on an existing stream without it.
        let plain = normalize_destination(cfg(json!({}))).unwrap();
        let err = merge_update(&plain, &dp, true).unwrap_err();
        assert!(err.to_string().contains("cannot be enabled"), "{err}");
        assert!(
            merge_update(
                &d,
                &json!({"Prefix": "k=!{partitionKeyFromQuery:c}/"}),
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn conversion_has_awss_destination_rules() {
        let conv = json!({"DataFormatConversionConfiguration": {
            "SchemaConfiguration": {"RoleARN": "arn:aws:iam::123456789012:role/r", "DatabaseName": "db", "TableName": "t"},
            "InputFormatConfiguration": {"Deserializer": {"HiveJsonSerDe": {}}},
            "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}}}});
        let d = normalize_destination(cfg(conv.clone())).unwrap();
        // Without BufferingHints: 128 MiB.
        assert_eq!(d["BufferingHints"]["SizeInMBs"], 128);
        let e = Destination::of(&d).unwrap();
        assert!(e.conversion.is_some());
        assert_eq!(e.extension, ".parquet");
        assert_eq!(e.error_extension, "");
        let mut small = conv.clone();
        small["BufferingHints"] = json!({"SizeInMBs": 63, "IntervalInSeconds": 60});
        let err = normalize_destination(cfg(small)).unwrap_err();
        assert!(err.to_string().contains("at least 64"), "{err}");
        let mut gz = conv.clone();
        gz["CompressionFormat"] = json!("GZIP");
        let err = normalize_destination(cfg(gz)).unwrap_err();
        assert!(err.to_string().contains("UNCOMPRESSED"), "{err}");
        // An update enabling conversion on a 5 MiB stream is refused.
        let plain = normalize_destination(cfg(json!({}))).unwrap();
        assert!(merge_update(&plain, &conv, true).is_err());
    }

    #[test]
    fn updates_merge_member_by_member() {
        let d = normalize_destination(cfg(json!({"Prefix": "a/", "CompressionFormat": "GZIP"})))
            .unwrap();
        let u = merge_update(&d, &json!({"Prefix": "b/"}), false).unwrap();
        assert_eq!(u["Prefix"], "b/");
        assert_eq!(u["CompressionFormat"], "GZIP");
        let u = merge_update(&u, &json!({"BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60}, "FileExtension": ".log"}), true).unwrap();
        assert_eq!(u["BufferingHints"]["SizeInMBs"], 1);
        assert_eq!(u["FileExtension"], ".log");
        assert!(merge_update(&u, &json!({"CompressionFormat": "LZ4"}), true).is_err());
    }

    #[test]
    fn the_engine_view() {
        let d = normalize_destination(cfg(json!({"CompressionFormat": "GZIP", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 2}}))).unwrap();
        let e = Destination::of(&d).unwrap();
        assert_eq!(e.bucket, "bkt");
        assert_eq!(e.extension, ".gz");
        assert_eq!(e.size_bytes, 1 << 20);
        assert_eq!(e.interval_ms, 2000);
        for (c, ext) in [
            ("Snappy", ".snappy"),
            ("ZIP", ".zip"),
            ("HADOOP_SNAPPY", ".hsnappy"),
            ("UNCOMPRESSED", ""),
        ] {
            let d = normalize_destination(cfg(json!({"CompressionFormat": c}))).unwrap();
            assert_eq!(Destination::of(&d).unwrap().extension, ext);
        }
        let d = normalize_destination(cfg(json!({"FileExtension": ".json"}))).unwrap();
        assert_eq!(Destination::of(&d).unwrap().extension, ".json");
        assert_eq!(bucket_name("arn:aws:s3:::my.bucket"), Some("my.bucket"));
        assert_eq!(bucket_name("arn:aws:sqs:::x"), None);
        assert_eq!(partition_uid(&partition_id(42)), Some(42));
        assert_eq!(partition_uid("stream1-shard0"), None);
    }
}
