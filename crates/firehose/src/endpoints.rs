//! The push destinations: HTTP endpoint, Splunk, Amazon OpenSearch
//! Service and Elasticsearch. Their configurations are checked and
//! defaulted here, stored beside the stream's S3 configuration (which
//! every one of them has, for its error output and backup), described in
//! the model's shapes, updated member by member, and delivered by
//! [`flush`], which the engine calls instead of writing an object.
//!
//! A flush is one batch as BufferingHints cut it: all its records are
//! written to the S3 backup first when S3BackupMode is All*, then sent
//! (one request for the batch; retried with backoff until RetryOptions'
//! duration runs out, the same request id on every attempt), and what
//! could not be delivered goes to the S3 error output under AWS's
//! `<type>-failed/` prefix in Firehose's error-record JSON. Only then does
//! the engine move the checkpoint, so delivery is at least once; while the
//! destination is down, the records after the batch wait in the stream's
//! log, not in memory.
//!
//! The wire protocols are `ripstream-delivery`'s, which knows nothing of
//! Firehose.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use ripstream_delivery::{DeliveryError, Networks, bulk, http_endpoint, splunk};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::engine::{Batch, Flushed, current, encode_body, error_key_for, zip_entry};
use crate::error::{Error, Result};
use crate::metrics::DeliveryStreamLabel;
use crate::record::{self, Destination, StreamRecord};
use crate::{Inner, Stream, prefix};

/// Which push destination a stream has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    HttpEndpoint,
    Splunk,
    Opensearch,
    Elasticsearch,
}

pub const ALL: [Kind; 4] = [
    Kind::HttpEndpoint,
    Kind::Splunk,
    Kind::Opensearch,
    Kind::Elasticsearch,
];

impl Kind {
    pub fn configuration_key(self) -> &'static str {
        match self {
            Kind::HttpEndpoint => "HttpEndpointDestinationConfiguration",
            Kind::Splunk => "SplunkDestinationConfiguration",
            Kind::Opensearch => "AmazonopensearchserviceDestinationConfiguration",
            Kind::Elasticsearch => "ElasticsearchDestinationConfiguration",
        }
    }

    pub fn update_key(self) -> &'static str {
        match self {
            Kind::HttpEndpoint => "HttpEndpointDestinationUpdate",
            Kind::Splunk => "SplunkDestinationUpdate",
            Kind::Opensearch => "AmazonopensearchserviceDestinationUpdate",
            Kind::Elasticsearch => "ElasticsearchDestinationUpdate",
        }
    }

    fn description_key(self) -> &'static str {
        match self {
            Kind::HttpEndpoint => "HttpEndpointDestinationDescription",
            Kind::Splunk => "SplunkDestinationDescription",
            Kind::Opensearch => "AmazonopensearchserviceDestinationDescription",
            Kind::Elasticsearch => "ElasticsearchDestinationDescription",
        }
    }

    /// The error-output type AWS writes failed records under.
    pub fn failed_type(self) -> &'static str {
        match self {
            Kind::HttpEndpoint => "http-endpoint-failed",
            Kind::Splunk => "splunk-failed",
            Kind::Opensearch => "AmazonOpenSearchService-failed",
            Kind::Elasticsearch => "elasticsearch-failed",
        }
    }

    /// (S3BackupMode values: failed only (the default), everything.)
    fn backup_modes(self) -> (&'static str, &'static str) {
        match self {
            Kind::HttpEndpoint => ("FailedDataOnly", "AllData"),
            Kind::Splunk => ("FailedEventsOnly", "AllEvents"),
            Kind::Opensearch | Kind::Elasticsearch => ("FailedDocumentsOnly", "AllDocuments"),
        }
    }

    /// AWS's BufferingHints defaults (MiB, seconds) and bounds.
    fn buffering(self) -> ((u64, u64), (u64, u64)) {
        match self {
            Kind::HttpEndpoint => ((5, 300), (64, 900)),
            Kind::Splunk => ((5, 60), (5, 60)),
            Kind::Opensearch | Kind::Elasticsearch => ((5, 300), (100, 900)),
        }
    }

    fn default_retry_s(self) -> u64 {
        match self {
            Kind::Splunk => 3600,
            _ => 300,
        }
    }

    /// The members of the description shape besides S3DestinationDescription.
    fn described_members(self) -> &'static [&'static str] {
        match self {
            Kind::HttpEndpoint => &[
                "EndpointConfiguration",
                "BufferingHints",
                "CloudWatchLoggingOptions",
                "RequestConfiguration",
                "ProcessingConfiguration",
                "RoleARN",
                "RetryOptions",
                "S3BackupMode",
            ],
            Kind::Splunk => &[
                "HECEndpoint",
                "HECEndpointType",
                "HECToken",
                "HECAcknowledgmentTimeoutInSeconds",
                "RetryOptions",
                "S3BackupMode",
                "ProcessingConfiguration",
                "CloudWatchLoggingOptions",
                "BufferingHints",
            ],
            Kind::Opensearch | Kind::Elasticsearch => &[
                "RoleARN",
                "ClusterEndpoint",
                "IndexName",
                "TypeName",
                "IndexRotationPeriod",
                "BufferingHints",
                "RetryOptions",
                "S3BackupMode",
                "ProcessingConfiguration",
                "CloudWatchLoggingOptions",
                "DocumentIdOptions",
            ],
        }
    }

    /// The first part of the error codes Firehose reports for it.
    fn code_prefix(self) -> &'static str {
        match self {
            Kind::HttpEndpoint => "HttpEndpoint",
            Kind::Splunk => "Splunk",
            Kind::Opensearch => "AmazonOpenSearchService",
            Kind::Elasticsearch => "Elasticsearch",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::HttpEndpoint => "HTTP endpoint",
            Kind::Splunk => "Splunk",
            Kind::Opensearch => "Amazon OpenSearch Service",
            Kind::Elasticsearch => "Elasticsearch",
        }
    }
}

/// A stream's push destination as stored: its configuration (without
/// S3Configuration, which is the stream's `destination`), AWS's defaults
/// filled in.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub kind: Kind,
    pub config: Value,
}

/// Secrets (the HTTP endpoint's AccessKey and URL, Splunk's HECToken)
/// stay out of logs.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut c = self.config.clone();
        if let Some(ec) = c
            .get_mut("EndpointConfiguration")
            .and_then(Value::as_object_mut)
        {
            for k in ["AccessKey", "Url"] {
                if ec.contains_key(k) {
                    ec.insert(k.into(), json!("<redacted>"));
                }
            }
        }
        if let Some(o) = c.as_object_mut()
            && o.contains_key("HECToken")
        {
            o.insert("HECToken".into(), json!("<redacted>"));
        }
        f.debug_struct("Endpoint")
            .field("kind", &self.kind)
            .field("config", &c)
            .finish()
    }
}

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidArgument(m.into())
}

fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// The push destination configuration a CreateDeliveryStream input has.
pub fn configuration_in(input: &Value) -> Option<(Kind, &Value)> {
    ALL.iter()
        .find_map(|k| input.get(k.configuration_key()).map(|c| (*k, c)))
}

/// The push destination update an UpdateDestination input has.
pub fn update_in(input: &Value) -> Option<(Kind, &Value)> {
    ALL.iter()
        .find_map(|k| input.get(k.update_key()).map(|c| (*k, c)))
}

/// The S3 members of a push destination's S3Configuration (it is an
/// `S3DestinationConfiguration`, not the extended one).
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

fn s3_of(v: Option<&Value>, kind: Kind) -> Result<Value> {
    let Some(m) = v.and_then(Value::as_object) else {
        return Err(invalid(format!(
            "S3Configuration is required for a {} destination (its backup and error output).",
            kind.label()
        )));
    };
    let m: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| S3_MEMBERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    record::normalize_destination(m)
}

/// Checks a push destination's configuration (or an update merged into
/// one) and fills AWS's defaults; `allow_http`: the server admits http://
/// URLs (`firehose_allow_http_destinations`); `networks`: the addresses
/// destinations may have (`firehose_destination_networks`), checked here
/// on IP-literal hosts (names are checked on each connection's resolved
/// address, since what a name resolves to can change).
pub fn normalize(
    kind: Kind,
    cfg: &Value,
    allow_http: bool,
    networks: Option<&Networks>,
) -> Result<Endpoint> {
    let Some(src) = cfg.as_object() else {
        return Err(invalid(format!(
            "{} must be an object.",
            kind.configuration_key()
        )));
    };
    let mut c: Map<String, Value> = src.clone();
    c.remove("S3Configuration");
    c.remove("S3Update");
    let url_check = |what: &str, raw: &str| -> Result<()> {
        let url = ripstream_delivery::parse_url(raw, allow_http)
            .map_err(|e| invalid(format!("{what} {raw} is not allowed: {e}.")))?;
        match networks.map(|n| n.check_url(&url)) {
            Some(Err(e)) => Err(invalid(format!("{what} {raw} is not allowed: {e}."))),
            _ => Ok(()),
        }
    };
    for unsupported in ["SecretsManagerConfiguration", "VpcConfiguration"] {
        let on = match c.get(unsupported) {
            None => false,
            Some(v) if unsupported == "SecretsManagerConfiguration" => {
                v.get("Enabled").and_then(Value::as_bool).unwrap_or(true)
            }
            Some(_) => true,
        };
        if on {
            return Err(invalid(format!(
                "{unsupported} is not supported yet by this server for a {} destination.",
                kind.label()
            )));
        }
        c.remove(unsupported);
    }
    crate::processing::pipeline(c.get("ProcessingConfiguration"))?;
    match kind {
        Kind::HttpEndpoint => {
            let ec = c
                .get("EndpointConfiguration")
                .cloned()
                .unwrap_or(Value::Null);
            let Some(url) = text(&ec, "Url") else {
                return Err(invalid("EndpointConfiguration.Url is required."));
            };
            url_check("EndpointConfiguration.Url", url)?;
            let rc = c.entry("RequestConfiguration").or_insert_with(|| json!({}));
            if let Some(o) = rc.as_object_mut() {
                o.entry("ContentEncoding").or_insert(json!("NONE"));
            }
        }
        Kind::Splunk => {
            let Some(url) = text(cfg, "HECEndpoint") else {
                return Err(invalid("HECEndpoint is required."));
            };
            url_check("HECEndpoint", url)?;
            match text(cfg, "HECEndpointType") {
                Some("Raw" | "Event") => {}
                _ => return Err(invalid("HECEndpointType must be Raw or Event.")),
            }
            if text(cfg, "HECToken").is_none() {
                return Err(invalid("HECToken is required."));
            }
            let t = c
                .get("HECAcknowledgmentTimeoutInSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(180);
            if !(180..=600).contains(&t) {
                return Err(invalid(
                    "HECAcknowledgmentTimeoutInSeconds must be between 180 and 600.",
                ));
            }
            c.insert("HECAcknowledgmentTimeoutInSeconds".into(), json!(t));
        }
        Kind::Opensearch | Kind::Elasticsearch => {
            if text(cfg, "RoleARN").is_none_or(str::is_empty) {
                return Err(invalid("RoleARN is required."));
            }
            if text(cfg, "IndexName").is_none_or(str::is_empty) {
                return Err(invalid("IndexName is required."));
            }
            match (text(cfg, "DomainARN"), text(cfg, "ClusterEndpoint")) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "Specify either DomainARN or ClusterEndpoint, not both.",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        "ClusterEndpoint is required: specify the cluster's URL (DomainARN or ClusterEndpoint).",
                    ));
                }
                (Some(arn), None) => {
                    return Err(invalid(format!(
                        "DomainARN {arn} cannot be resolved on this server (there is no OpenSearch Service control plane here): specify ClusterEndpoint, the cluster's URL, instead."
                    )));
                }
                (None, Some(url)) => url_check("ClusterEndpoint", url)?,
            }
            let rot = text(cfg, "IndexRotationPeriod").unwrap_or("OneDay");
            if bulk::Rotation::parse(rot).is_none() {
                return Err(invalid(format!("IndexRotationPeriod {rot} is not valid.")));
            }
            c.insert("IndexRotationPeriod".into(), json!(rot));
            let fmt = c
                .get("DocumentIdOptions")
                .and_then(|d| text(d, "DefaultDocumentIdFormat"))
                .unwrap_or("FIREHOSE_DEFAULT")
                .to_string();
            if fmt != "FIREHOSE_DEFAULT" && fmt != "NO_DOCUMENT_ID" {
                return Err(invalid(format!(
                    "DocumentIdOptions.DefaultDocumentIdFormat {fmt} is not valid."
                )));
            }
            c.insert(
                "DocumentIdOptions".into(),
                json!({"DefaultDocumentIdFormat": fmt}),
            );
        }
    }
    let ((dsize, dint), (max_size, max_int)) = kind.buffering();
    let hints = c.get("BufferingHints").cloned().unwrap_or(json!({}));
    let size = hints
        .get("SizeInMBs")
        .and_then(Value::as_u64)
        .unwrap_or(dsize);
    let interval = hints
        .get("IntervalInSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(dint);
    if !(1..=max_size).contains(&size) {
        return Err(invalid(format!(
            "BufferingHints.SizeInMBs must be between 1 and {max_size}."
        )));
    }
    if interval > max_int {
        return Err(invalid(format!(
            "BufferingHints.IntervalInSeconds must be between 0 and {max_int}."
        )));
    }
    c.insert(
        "BufferingHints".into(),
        json!({"SizeInMBs": size, "IntervalInSeconds": interval}),
    );
    let retry = record::retry_duration_s(c.get("RetryOptions"), kind.default_retry_s())?;
    c.insert("RetryOptions".into(), json!({"DurationInSeconds": retry}));
    let (failed_only, all) = kind.backup_modes();
    let mode = text(cfg, "S3BackupMode").unwrap_or(failed_only);
    if mode != failed_only && mode != all {
        return Err(invalid(format!(
            "S3BackupMode must be {failed_only} or {all}."
        )));
    }
    c.insert("S3BackupMode".into(), json!(mode));
    c.entry("CloudWatchLoggingOptions")
        .or_insert(json!({"Enabled": false}));
    if let Some(cw) = c.get("CloudWatchLoggingOptions")
        && cw.get("Enabled").and_then(Value::as_bool) == Some(true)
    {
        for m in ["LogGroupName", "LogStreamName"] {
            if text(cw, m).is_none_or(str::is_empty) {
                return Err(invalid(format!(
                    "CloudWatchLoggingOptions.{m} is required when CloudWatch logging is enabled."
                )));
            }
        }
    }
    Ok(Endpoint {
        kind,
        config: Value::Object(c),
    })
}

/// A CreateDeliveryStream's push destination: the stream's S3
/// destination (the backup and error output) and the endpoint.
pub fn create(
    kind: Kind,
    cfg: &Value,
    allow_http: bool,
    networks: Option<&Networks>,
) -> Result<(Value, Endpoint)> {
    let s3 = s3_of(cfg.get("S3Configuration"), kind)?;
    let ep = normalize(kind, cfg, allow_http, networks)?;
    Ok((s3, ep))
}

/// An UpdateDestination with a push destination update: the members given
/// replace the current ones (S3Update merges into the S3 configuration);
/// an update of another kind than the stream's must be complete.
pub fn update(
    rec: &StreamRecord,
    kind: Kind,
    u: &Value,
    allow_http: bool,
    networks: Option<&Networks>,
) -> Result<(Value, Endpoint)> {
    let Some(um) = u.as_object() else {
        return Err(invalid("The destination update must be an object."));
    };
    let s3 = match (u.get("S3Update"), &rec.endpoint) {
        (Some(s), Some(_)) => record::merge_update(&rec.destination, s, false)?,
        (Some(s), None) => s3_of(Some(s), kind)?,
        (None, Some(_)) => rec.destination.clone(),
        (None, None) => {
            return Err(invalid(format!(
                "S3Update is required to change the destination to a {} destination.",
                kind.label()
            )));
        }
    };
    let mut merged = match &rec.endpoint {
        Some(ep) if ep.kind == kind => ep.config.as_object().cloned().unwrap_or_default(),
        _ => Map::new(),
    };
    if let Some(ep) = &rec.endpoint
        && ep.kind == kind
        && matches!(kind, Kind::Opensearch | Kind::Elasticsearch)
        && let Some(m) = text(u, "S3BackupMode")
        && Some(m) != text(&ep.config, "S3BackupMode")
    {
        return Err(invalid(
            "S3BackupMode cannot be changed after the Firehose stream is created.",
        ));
    }
    // AWS: Splunk's backup can go from FailedEventsOnly to AllEvents,
    // never back.
    if let Some(ep) = &rec.endpoint
        && ep.kind == kind
        && kind == Kind::Splunk
        && text(&ep.config, "S3BackupMode") == Some("AllEvents")
        && text(u, "S3BackupMode").is_some_and(|m| m != "AllEvents")
    {
        return Err(invalid(
            "S3BackupMode cannot be changed from AllEvents to FailedEventsOnly.",
        ));
    }
    // A token goes only where it was given for: an update that points
    // Splunk elsewhere must give the token again (else anyone allowed to
    // update could send the stored token to a host of their own).
    if kind == Kind::Splunk
        && let Some(new_url) = text(u, "HECEndpoint")
        && merged.get("HECEndpoint").and_then(Value::as_str) != Some(new_url)
        && !um.contains_key("HECToken")
    {
        merged.remove("HECToken");
    }
    for (k, v) in um {
        if k == "S3Update" {
            continue;
        }
        merged.insert(k.clone(), v.clone());
    }
    if matches!(kind, Kind::Opensearch | Kind::Elasticsearch)
        && um.contains_key("DomainARN")
        && !um.contains_key("ClusterEndpoint")
    {
        merged.remove("ClusterEndpoint");
    }
    let ep = normalize(kind, &Value::Object(merged), allow_http, networks)?;
    Ok((s3, ep))
}

/// The destination's entry in DescribeDeliveryStream's Destinations.
pub fn description(rec: &StreamRecord, ep: &Endpoint, destination_id: &str) -> Value {
    let mut d = Map::new();
    for m in ep.kind.described_members() {
        if let Some(v) = ep.config.get(*m) {
            d.insert((*m).to_string(), v.clone());
        }
    }
    if ep.kind == Kind::HttpEndpoint {
        // HttpEndpointDescription has Url and Name: the access key is
        // never described.
        let ec = ep.config.get("EndpointConfiguration");
        let mut e = Map::new();
        for m in ["Url", "Name"] {
            if let Some(v) = ec.and_then(|c| c.get(m)) {
                e.insert(m.into(), v.clone());
            }
        }
        d.insert("EndpointConfiguration".into(), Value::Object(e));
    }
    d.insert(
        "S3DestinationDescription".into(),
        record::s3_description(&rec.destination),
    );
    json!({
        "DestinationId": destination_id,
        ep.kind.description_key(): d,
    })
}

/// The engine's view of a push destination stream: the S3 configuration's
/// bucket, prefix and compression (for backup and error output), the
/// endpoint's buffering and processing. The error output goes under
/// ErrorOutputPrefix, or Prefix without one (AWS appends
/// `<type>-failed/` to the key prefix).
pub fn engine_destination(rec: &StreamRecord, ep: &Endpoint) -> Result<Destination> {
    let mut d = Destination::of(&rec.destination)?;
    let hints = ep.config.get("BufferingHints");
    let n = |k: &str| hints.and_then(|h| h.get(k)).and_then(Value::as_u64);
    let ((dsize, dint), _) = ep.kind.buffering();
    d.size_bytes = (n("SizeInMBs").unwrap_or(dsize) << 20) as usize;
    d.interval_ms = (n("IntervalInSeconds").unwrap_or(dint) * 1000) as i64;
    d.processing = crate::processing::pipeline(ep.config.get("ProcessingConfiguration"))?;
    if text(&rec.destination, "ErrorOutputPrefix").is_none_or(str::is_empty) {
        d.error_prefix = d.prefix.clone();
    }
    Ok(d)
}

/// DeliveryTo<Destination>.Records/Bytes/Success and failed attempts, per
/// destination kind and delivery stream.
#[derive(Debug, Clone, Default)]
pub struct PushMetrics {
    families: Vec<[Family<DeliveryStreamLabel, Counter>; 4]>,
}

impl PushMetrics {
    pub fn register(registry: &mut Registry) -> PushMetrics {
        let mut m = PushMetrics::default();
        for kind in ALL {
            let (snake, cw) = match kind {
                Kind::HttpEndpoint => ("http_endpoint", "DeliveryToHttpEndpoint"),
                Kind::Splunk => ("splunk", "DeliveryToSplunk"),
                Kind::Opensearch => (
                    "amazon_open_search_service",
                    "DeliveryToAmazonOpenSearchService",
                ),
                Kind::Elasticsearch => ("elasticsearch", "DeliveryToElasticsearch"),
            };
            let f: [Family<DeliveryStreamLabel, Counter>; 4] = Default::default();
            for (i, (what, help)) in [
                ("records", format!("Records delivered ({cw}.Records)")),
                ("bytes", format!("Bytes delivered ({cw}.Bytes)")),
                (
                    "success",
                    format!("Batches delivered in full ({cw}.Success numerator)"),
                ),
                (
                    "failures",
                    format!(
                        "Failed delivery attempts to {}, each retried within RetryOptions",
                        kind.label()
                    ),
                ),
            ]
            .into_iter()
            .enumerate()
            {
                registry.register(
                    format!("ripstream_firehose_delivery_to_{snake}_{what}"),
                    help,
                    f[i].clone(),
                );
            }
            m.families.push(f);
        }
        m
    }

    fn of(&self, kind: Kind) -> Option<&[Family<DeliveryStreamLabel, Counter>; 4]> {
        self.families.get(ALL.iter().position(|k| *k == kind)?)
    }

    fn label(stream: &str) -> DeliveryStreamLabel {
        DeliveryStreamLabel {
            delivery_stream: stream.to_string(),
        }
    }

    pub fn delivered(&self, kind: Kind, stream: &str, records: u64, bytes: u64, whole: bool) {
        if let Some(f) = self.of(kind) {
            let l = Self::label(stream);
            f[0].get_or_create(&l).inc_by(records);
            f[1].get_or_create(&l).inc_by(bytes);
            if whole {
                f[2].get_or_create(&l).inc();
            }
        }
    }

    pub fn failed(&self, kind: Kind, stream: &str) {
        if let Some(f) = self.of(kind) {
            f[3].get_or_create(&Self::label(stream)).inc();
        }
    }

    pub fn forget(&self, stream: &str) {
        let l = Self::label(stream);
        for f in &self.families {
            for c in f {
                c.remove(&l);
            }
        }
    }
}

/// The most records one HTTP endpoint request holds (AWS's request
/// specification: `records` has at most 10,000 items).
const HTTP_MAX_RECORDS: usize = 10_000;

/// One record of a batch.
#[derive(Clone, Copy)]
struct Rec<'a> {
    data: &'a [u8],
    arrival_ms: i64,
    /// (log offset, subsequence): stable across re-reads of the record.
    position: (u64, u32),
}

/// Why a record was not delivered.
struct Failure {
    index: usize,
    code: String,
    message: String,
    /// Extra members of its error record (EventId, esDocumentId...).
    extra: Map<String, Value>,
}

/// A batch's request id: the same whenever the same records are sent (on
/// retries, and after a restart re-reads the batch), different for any
/// other batch.
fn request_id(uid: u64, recs: &[Rec<'_>]) -> String {
    use std::hash::{Hash, Hasher};
    let mut halves = [0u64; 2];
    for (seed, h) in halves.iter_mut().enumerate() {
        let mut s = std::hash::DefaultHasher::new();
        (seed, uid, recs.len()).hash(&mut s);
        for r in recs {
            r.position.hash(&mut s);
            r.data.len().hash(&mut s);
        }
        *h = s.finish();
    }
    uuid::Uuid::from_u64_pair(halves[0], halves[1]).to_string()
}

fn records_of<'a>(buf: &'a Batch) -> Vec<Rec<'a>> {
    let mut start = 0;
    buf.ends
        .iter()
        .enumerate()
        .map(|(i, &(arrival_ms, end))| {
            let r = Rec {
                data: &buf.data[start..end],
                arrival_ms,
                position: buf.positions.get(i).copied().unwrap_or((0, i as u32)),
            };
            start = end;
            r
        })
        .collect()
}

/// Firehose's error record for a push destination.
fn error_line(
    attempts: u32,
    rec: &Rec<'_>,
    code: &str,
    message: &str,
    ending_ms: i64,
    extra: &Map<String, Value>,
) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("attemptsMade".into(), json!(attempts));
    m.insert("arrivalTimestamp".into(), json!(rec.arrival_ms));
    m.insert("errorCode".into(), json!(code));
    m.insert("errorMessage".into(), json!(message));
    m.insert("attemptEndingTimestamp".into(), json!(ending_ms));
    m.insert("rawData".into(), json!(STANDARD.encode(rec.data)));
    for (k, v) in extra {
        m.insert(k.clone(), v.clone());
    }
    let mut line = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
    line.push(b'\n');
    line
}

/// How one attempt at the batch (or at what is left of it) went.
enum Attempt {
    /// Every record still pending was delivered.
    Done,
    /// The whole attempt failed: retry all pending records.
    Failed(DeliveryError),
    /// The records `sent` were delivered, then a request failed: retry
    /// the others.
    FailedAfter {
        sent: Vec<usize>,
        error: DeliveryError,
    },
    /// Some records delivered, some failed for good, some to retry.
    Partial {
        failed: Vec<Failure>,
        retry: Vec<usize>,
        /// The last retryable item's status and error.
        status: u16,
        error: String,
    },
}

fn http_code(e: &DeliveryError) -> &'static str {
    match e {
        DeliveryError::Status { .. } => "HttpEndpoint.DestinationException",
        DeliveryError::InvalidResponse(_) | DeliveryError::ResponseTooLarge(_) => {
            "HttpEndpoint.InvalidResponseFromDestination"
        }
        DeliveryError::Timeout(_) => "HttpEndpoint.RequestTimeout",
        DeliveryError::Connect(_) => "HttpEndpoint.ConnectionFailed",
        DeliveryError::AckTimeout(_) | DeliveryError::Request(_) => "HttpEndpoint.ConnectionReset",
    }
}

fn search_code(kind: Kind, e: &DeliveryError) -> String {
    let p = kind.code_prefix();
    let s = match e {
        DeliveryError::Status { .. } => "ServiceException",
        DeliveryError::InvalidResponse(_) | DeliveryError::ResponseTooLarge(_) => "InvalidResponse",
        DeliveryError::Timeout(_) => "RequestTimeout",
        DeliveryError::Connect(_) => "ConnectionFailed",
        DeliveryError::AckTimeout(_) | DeliveryError::Request(_) => "ConnectionReset",
    };
    format!("{p}.{s}")
}

/// An error record's `errorMessage`: AWS's words for an HTTP endpoint's
/// answer (the receiver's body after them), the error itself otherwise.
fn message_of(kind: Kind, e: &DeliveryError) -> String {
    match (kind, e) {
        (Kind::HttpEndpoint, DeliveryError::Status { body, .. }) => {
            format!("Received the following response from the endpoint destination. {body}")
        }
        _ => e.to_string(),
    }
}

fn code_of(kind: Kind, e: &DeliveryError) -> String {
    match kind {
        Kind::HttpEndpoint => http_code(e).to_string(),
        Kind::Splunk => splunk::error_code(e).to_string(),
        Kind::Opensearch | Kind::Elasticsearch => search_code(kind, e),
    }
}

/// What a stream's destination is sent with.
struct Target {
    kind: Kind,
    http: Option<http_endpoint::Endpoint>,
    hec: Option<splunk::Hec>,
    search: Option<Search>,
}

struct Search {
    cluster: bulk::Cluster,
    index: String,
    rotation: bulk::Rotation,
    type_name: Option<String>,
    ids: bool,
}

fn target(inner: &Inner, s: &Stream, ep: &Endpoint) -> std::result::Result<Target, String> {
    let c = &ep.config;
    let allow = inner.cfg.allow_http_destinations;
    let url = |raw: Option<&str>| {
        ripstream_delivery::parse_url(raw.unwrap_or(""), allow).map_err(|e| e.to_string())
    };
    let timeout = inner.cfg.endpoint_timeout;
    let mut t = Target {
        kind: ep.kind,
        http: None,
        hec: None,
        search: None,
    };
    match ep.kind {
        Kind::HttpEndpoint => {
            let ec = c.get("EndpointConfiguration").cloned().unwrap_or_default();
            let rc = c.get("RequestConfiguration").cloned().unwrap_or_default();
            let common_attributes = rc
                .get("CommonAttributes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    Some((
                        text(a, "AttributeName")?.to_string(),
                        text(a, "AttributeValue")?.to_string(),
                    ))
                })
                .collect();
            t.http = Some(http_endpoint::Endpoint {
                url: url(text(&ec, "Url"))?,
                access_key: text(&ec, "AccessKey").map(String::from),
                common_attributes,
                gzip: text(&rc, "ContentEncoding") == Some("GZIP"),
                source_arn: inner.stream_arn(&s.rec.name),
                timeout,
            });
        }
        Kind::Splunk => {
            let ack = c
                .get("HECAcknowledgmentTimeoutInSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(180);
            t.hec = Some(splunk::Hec {
                url: url(text(c, "HECEndpoint"))?,
                endpoint_type: if text(c, "HECEndpointType") == Some("Event") {
                    splunk::EndpointType::Event
                } else {
                    splunk::EndpointType::Raw
                },
                token: text(c, "HECToken").unwrap_or("").to_string(),
                timeout,
                // The server's endpoint timeout bounds every wait on a
                // push destination, the acknowledgement's included.
                ack_timeout: Duration::from_secs(ack).min(timeout),
                ack_poll: Duration::from_millis(200),
            });
        }
        Kind::Opensearch | Kind::Elasticsearch => {
            t.search = Some(Search {
                cluster: bulk::Cluster {
                    url: url(text(c, "ClusterEndpoint"))?,
                    timeout,
                },
                index: text(c, "IndexName").unwrap_or("").to_string(),
                rotation: bulk::Rotation::parse(text(c, "IndexRotationPeriod").unwrap_or(""))
                    .unwrap_or(bulk::Rotation::OneDay),
                type_name: text(c, "TypeName")
                    .filter(|t| !t.is_empty())
                    .map(String::from),
                ids: c
                    .get("DocumentIdOptions")
                    .and_then(|d| text(d, "DefaultDocumentIdFormat"))
                    != Some("NO_DOCUMENT_ID"),
            });
        }
    }
    Ok(t)
}

fn event_id(uid: u64, pos: (u64, u32)) -> String {
    bulk::document_id(&uid.to_string(), pos.0, pos.1)
}

/// One attempt at the records `pending` (indexes into `recs`).
async fn attempt(
    client: &ripstream_delivery::Client,
    t: &Target,
    uid: u64,
    rid: &str,
    now_ms: i64,
    recs: &[Rec<'_>],
    pending: &[usize],
) -> Attempt {
    let data: Vec<&[u8]> = pending.iter().map(|&i| recs[i].data).collect();
    match t.kind {
        Kind::HttpEndpoint => {
            let Some(ep) = &t.http else {
                return Attempt::Done;
            };
            if pending.len() <= HTTP_MAX_RECORDS {
                // A split batch's retry may be down to its last request:
                // that one keeps the id it was first sent with.
                let split_id;
                let id = if pending.len() == recs.len() {
                    rid
                } else {
                    let part: Vec<Rec<'_>> = pending.iter().map(|&i| recs[i]).collect();
                    split_id = request_id(uid, &part);
                    &split_id
                };
                return match client.send_http_endpoint(ep, id, now_ms, &data).await {
                    Ok(()) => Attempt::Done,
                    Err(e) => Attempt::Failed(e),
                };
            }
            // AWS's protocol caps a request at 10,000 records: a larger
            // buffer goes as several requests, each with the request id of
            // its own records (the same on every retry: a retry starts at
            // the request that failed, so the requests split the same way).
            let mut sent = Vec::new();
            for chunk in pending.chunks(HTTP_MAX_RECORDS) {
                let part: Vec<Rec<'_>> = chunk.iter().map(|&i| recs[i]).collect();
                let data: Vec<&[u8]> = part.iter().map(|r| r.data).collect();
                let id = request_id(uid, &part);
                if let Err(error) = client.send_http_endpoint(ep, &id, now_ms, &data).await {
                    return if sent.is_empty() {
                        Attempt::Failed(error)
                    } else {
                        Attempt::FailedAfter { sent, error }
                    };
                }
                sent.extend_from_slice(chunk);
            }
            Attempt::Done
        }
        Kind::Splunk => {
            let Some(hec) = &t.hec else {
                return Attempt::Done;
            };
            match client.send_splunk(hec, &data).await {
                Ok(_) => Attempt::Done,
                Err(e) => Attempt::Failed(e),
            }
        }
        Kind::Opensearch | Kind::Elasticsearch => {
            let Some(se) = &t.search else {
                return Attempt::Done;
            };
            let meta: Vec<(String, String)> = pending
                .iter()
                .map(|&i| {
                    (
                        bulk::rotated_index(&se.index, se.rotation, recs[i].arrival_ms),
                        event_id(uid, recs[i].position),
                    )
                })
                .collect();
            let docs: Vec<bulk::Doc<'_>> = pending
                .iter()
                .zip(&meta)
                .map(|(&i, (index, id))| bulk::Doc {
                    index,
                    type_name: se.type_name.as_deref(),
                    id: se.ids.then_some(id.as_str()),
                    source: recs[i].data,
                })
                .collect();
            let items = match client.send_bulk(&se.cluster, &docs).await {
                Ok(items) => items,
                Err(e) => return Attempt::Failed(e),
            };
            let (mut failed, mut retry, mut error) = (Vec::new(), Vec::new(), String::new());
            let mut last_status = 0;
            for ((&i, item), (index, id)) in pending.iter().zip(items).zip(&meta) {
                let mut extra = Map::new();
                if se.ids {
                    extra.insert("esDocumentId".into(), json!(id));
                }
                extra.insert("esIndexName".into(), json!(index));
                extra.insert(
                    "esTypeName".into(),
                    json!(se.type_name.as_deref().unwrap_or("")),
                );
                match item {
                    bulk::Item::Indexed => {}
                    bulk::Item::Retry { status, error: e } => {
                        (last_status, error) = (status, e);
                        retry.push(i);
                    }
                    bulk::Item::Failed { status, error: e } => failed.push(Failure {
                        index: i,
                        code: status.to_string(),
                        message: e,
                        extra,
                    }),
                }
            }
            if failed.is_empty() && retry.is_empty() {
                Attempt::Done
            } else {
                Attempt::Partial {
                    failed,
                    retry,
                    status: last_status,
                    error,
                }
            }
        }
    }
}

fn extra_for(kind: Kind, uid: u64, rec: &Rec<'_>, search: Option<&Search>) -> Map<String, Value> {
    let mut m = Map::new();
    match kind {
        Kind::Splunk => {
            m.insert("EventId".into(), json!(event_id(uid, rec.position)));
        }
        Kind::Opensearch | Kind::Elasticsearch => {
            if let Some(se) = search {
                if se.ids {
                    m.insert("esDocumentId".into(), json!(event_id(uid, rec.position)));
                }
                m.insert(
                    "esIndexName".into(),
                    json!(bulk::rotated_index(&se.index, se.rotation, rec.arrival_ms)),
                );
                m.insert(
                    "esTypeName".into(),
                    json!(se.type_name.as_deref().unwrap_or("")),
                );
            }
        }
        Kind::HttpEndpoint => {
            // AWS's HTTP endpoint error record names the record by its
            // place: a data id and its subsequence number.
            m.insert("subsequenceNumber".into(), json!(rec.position.1));
            m.insert("dataId".into(), json!(event_id(uid, rec.position)));
        }
    }
    m
}

/// Writes one object to the S3 configuration's bucket.
async fn put(inner: &Arc<Inner>, dest: &Destination, key: &str, data: &Bytes) -> bool {
    let body = match encode_body(data, dest.compression, zip_entry(key)) {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot compress the S3 backup");
            return false;
        }
    };
    match inner
        .sink
        .put_as(&dest.bucket, key, body, dest.kms_key.as_deref())
        .await
    {
        Ok(()) => true,
        Err(e) => {
            warn!(bucket = %dest.bucket, key = %key, code = e.code(), error = %ripstream_api::Chain(&e), "S3 write of a push destination failed; retrying");
            false
        }
    }
}

/// Delivers a batch to the stream's push destination (see the module
/// docs). `skip`: objects an earlier attempt at the same batch stored
/// (the AllData backup).
pub(crate) async fn flush(
    inner: &Arc<Inner>,
    s: &Stream,
    dest: &Destination,
    ep: &Endpoint,
    buf: &Batch,
    skip: usize,
) -> Flushed {
    let name = &s.rec.name;
    let uid = s.rec.uid;
    let (_, all) = ep.kind.backup_modes();
    let backup_all = text(&ep.config, "S3BackupMode") == Some(all);
    // The batch's objects, each with a fixed place whatever a retry's
    // function answers, so `skip` always names the same ones: the AllData
    // backup, then one error object per processing error type.
    let mut done = 0;
    if backup_all {
        if skip <= done {
            let key = prefix::object_key(
                &dest.prefix,
                buf.first_ms,
                name,
                s.rec.version,
                &dest.extension,
                &mut rand::rng(),
            );
            if !put(inner, dest, &key, &buf.data).await {
                inner.metrics.failed(name);
                return Flushed::Failed { done };
            }
            inner
                .metrics
                .delivered(name, buf.records, buf.data.len() as u64);
            info!(stream = %name, bucket = %dest.bucket, key = %key, records = buf.records, "wrote the S3 backup of every record");
        }
        done += 1;
    }
    let transformed = match &dest.processing.lambda {
        None => None,
        Some(l) => match crate::engine::transform(inner, s, dest, l, buf, true).await {
            Some(o) => Some(o),
            None => return Flushed::Gone,
        },
    };
    // What processing could not read (Decompression, CloudWatch Logs) and
    // what the function failed go to the error output before delivery.
    let mut processing_errors: Vec<(&str, &[u8])> = buf
        .failures
        .iter()
        .map(|(ty, lines)| (*ty, &lines[..]))
        .collect();
    if let Some(o) = &transformed {
        processing_errors.push(("processing-failed", &o.errors[..]));
    }
    for (ty, lines) in processing_errors {
        // The function's failures are whatever this attempt's answer says:
        // an earlier attempt may have stored none where this one has some,
        // so that slot is always written (at least once, never lost).
        let rewritten = ty == "processing-failed";
        if (skip <= done || rewritten) && !lines.is_empty() {
            let key = error_key_for(dest, buf.first_ms, name, s.rec.version, ty);
            if !put(inner, dest, &key, &Bytes::copy_from_slice(lines)).await {
                inner.metrics.failed(name);
                return Flushed::Failed { done };
            }
            warn!(stream = %name, bucket = %dest.bucket, key = %key, error_type = ty, "wrote records that failed processing to the error output");
        }
        done += 1;
    }
    let recs = match &transformed {
        None => records_of(buf),
        Some(o) => o
            .recs
            .iter()
            .map(|r| Rec {
                data: &r.data[..],
                arrival_ms: r.arrival_ms,
                position: buf
                    .positions
                    .get(r.source)
                    .copied()
                    .unwrap_or((0, r.source as u32)),
            })
            .collect(),
    };
    if recs.is_empty() {
        // Every record was dropped or failed processing.
        return Flushed::Done;
    }
    let t = match target(inner, s, ep) {
        Ok(t) => t,
        Err(e) => {
            // Admitted at create under the server's settings then; a server
            // restarted without http allowed fails the records over.
            warn!(stream = %name, error = %e, "the destination's URL is not allowed; records go to the error output");
            let failures = (0..recs.len())
                .map(|index| Failure {
                    index,
                    code: format!("{}.InvalidUrl", ep.kind.code_prefix()),
                    message: e.clone(),
                    extra: Map::new(),
                })
                .collect();
            return write_failures(inner, s, dest, ep, &recs, failures, 0, done).await;
        }
    };
    let rid = request_id(uid, &recs);
    let retry_for = Duration::from_secs(
        ep.config
            .get("RetryOptions")
            .and_then(|r| r.get("DurationInSeconds"))
            .and_then(Value::as_u64)
            .unwrap_or(ep.kind.default_retry_s()),
    );
    let deadline = Instant::now() + retry_for;
    let mut pending: Vec<usize> = (0..recs.len()).collect();
    let mut failures: Vec<Failure> = Vec::new();
    let mut attempts = 0u32;
    let mut backoff = inner.cfg.retry_initial;
    let delivered_bytes = |idx: &[usize], failed: &[Failure]| -> (u64, u64) {
        let n = idx.len() as u64 - failed.len() as u64;
        let failed: std::collections::HashSet<usize> = failed.iter().map(|f| f.index).collect();
        let b: u64 = idx
            .iter()
            .filter(|i| !failed.contains(i))
            .map(|&i| recs[i].data.len() as u64)
            .sum();
        (n, b)
    };
    loop {
        attempts += 1;
        let before = pending.clone();
        let (err, retry, item_status) = match attempt(
            &inner.client,
            &t,
            uid,
            &rid,
            inner.now_ms(),
            &recs,
            &pending,
        )
        .await
        {
            Attempt::Done => {
                let (n, b) = delivered_bytes(&before, &[]);
                inner
                    .metrics
                    .push
                    .delivered(ep.kind, name, n, b, failures.is_empty());
                info!(stream = %name, destination = ep.kind.label(), records = n, attempts, "delivered");
                pending.clear();
                break;
            }
            Attempt::Failed(e) => (e.to_string(), Some(e), 0),
            Attempt::FailedAfter { sent, error } => {
                let (n, b) = delivered_bytes(&sent, &[]);
                inner.metrics.push.delivered(ep.kind, name, n, b, false);
                // `sent` is the head of `pending`, in its order.
                pending.drain(..sent.len().min(pending.len()));
                (error.to_string(), Some(error), 0)
            }
            Attempt::Partial {
                failed,
                retry,
                status,
                error,
            } => {
                let again: std::collections::HashSet<usize> = retry.iter().copied().collect();
                let settled: Vec<usize> = before
                    .iter()
                    .copied()
                    .filter(|i| !again.contains(i))
                    .collect();
                let (n, b) = delivered_bytes(&settled, &failed);
                inner.metrics.push.delivered(ep.kind, name, n, b, false);
                failures.extend(failed);
                pending = retry;
                if pending.is_empty() {
                    break;
                }
                (error, None, status)
            }
        };
        inner.metrics.push.failed(ep.kind, name);
        let now = Instant::now();
        if now + backoff > deadline {
            let (code, message) = match &retry {
                Some(e) => (code_of(ep.kind, e), message_of(ep.kind, e)),
                // Items the cluster kept refusing with 429/5xx: their own
                // status and error, as for items refused for good.
                None => (item_status.to_string(), err),
            };
            warn!(stream = %name, destination = ep.kind.label(), records = pending.len(), attempts, code = %code, error = %message, "delivery failed for the whole retry duration; records go to the error output");
            for &i in &pending {
                failures.push(Failure {
                    index: i,
                    code: code.clone(),
                    message: message.clone(),
                    extra: Map::new(),
                });
            }
            pending.clear();
            break;
        }
        warn!(stream = %name, destination = ep.kind.label(), records = pending.len(), attempt = attempts, error = %err, "delivery failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.cfg.retry_max);
        match current(inner, name, uid) {
            None => return Flushed::Gone,
            // A new configuration: the engine re-reads the batch for it.
            Some(now) if now.rec.version != s.rec.version => return Flushed::Failed { done },
            Some(_) => {}
        }
    }
    write_failures(inner, s, dest, ep, &recs, failures, attempts, done).await
}

#[allow(clippy::too_many_arguments)]
async fn write_failures(
    inner: &Arc<Inner>,
    s: &Stream,
    dest: &Destination,
    ep: &Endpoint,
    recs: &[Rec<'_>],
    mut failures: Vec<Failure>,
    attempts: u32,
    done: usize,
) -> Flushed {
    if failures.is_empty() {
        return Flushed::Done;
    }
    let name = &s.rec.name;
    let search = match ep.kind {
        Kind::Opensearch | Kind::Elasticsearch => target(inner, s, ep).ok().and_then(|t| t.search),
        _ => None,
    };
    failures.sort_by_key(|f| f.index);
    let ending = inner.now_ms();
    let mut lines = Vec::new();
    for f in &failures {
        let rec = &recs[f.index];
        let mut extra = extra_for(ep.kind, s.rec.uid, rec, search.as_ref());
        extra.extend(f.extra.clone());
        lines.extend(error_line(
            attempts, rec, &f.code, &f.message, ending, &extra,
        ));
    }
    let first = failures
        .iter()
        .map(|f| recs[f.index].arrival_ms)
        .min()
        .unwrap_or(0);
    let key = error_key_for(dest, first, name, s.rec.version, ep.kind.failed_type());
    if !put(inner, dest, &key, &Bytes::from(lines)).await {
        inner.metrics.failed(name);
        return Flushed::Failed { done };
    }
    warn!(stream = %name, bucket = %dest.bucket, key = %key, records = failures.len(), "wrote the records that could not be delivered to the error output");
    Flushed::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> Value {
        json!({"RoleARN": "arn:aws:iam::123456789012:role/r", "BucketARN": "arn:aws:s3:::bkt"})
    }

    #[test]
    fn http_endpoint_defaults_and_url_policy() {
        let cfg = json!({"EndpointConfiguration": {"Url": "https://example.com/in", "AccessKey": "k"}, "S3Configuration": s3()});
        let (d, ep) = create(Kind::HttpEndpoint, &cfg, false, None).unwrap();
        assert_eq!(d["BucketARN"], "arn:aws:s3:::bkt");
        assert_eq!(
            ep.config["BufferingHints"],
            json!({"SizeInMBs": 5, "IntervalInSeconds": 300})
        );
        assert_eq!(ep.config["RetryOptions"], json!({"DurationInSeconds": 300}));
        assert_eq!(ep.config["S3BackupMode"], "FailedDataOnly");
        assert_eq!(
            ep.config["RequestConfiguration"],
            json!({"ContentEncoding": "NONE"})
        );
        let http = json!({"EndpointConfiguration": {"Url": "http://127.0.0.1:9/"}, "S3Configuration": s3()});
        let e = create(Kind::HttpEndpoint, &http, false, None).unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        assert!(create(Kind::HttpEndpoint, &http, true, None).is_ok());
        let big = json!({"EndpointConfiguration": {"Url": "https://x"}, "BufferingHints": {"SizeInMBs": 65}, "S3Configuration": s3()});
        assert!(create(Kind::HttpEndpoint, &big, false, None).is_err());
        let no_s3 = json!({"EndpointConfiguration": {"Url": "https://x"}});
        assert!(create(Kind::HttpEndpoint, &no_s3, false, None).is_err());
        let lambda = json!({"EndpointConfiguration": {"Url": "https://x"}, "S3Configuration": s3(),
            "ProcessingConfiguration": {"Enabled": true, "Processors": [{"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:1:function:f"}]}]}});
        let (_, ep) = create(Kind::HttpEndpoint, &lambda, false, None).unwrap();
        let p = crate::processing::pipeline(ep.config.get("ProcessingConfiguration")).unwrap();
        assert_eq!(p.lambda.map(|l| l.function), Some("f".to_string()));
    }

    #[test]
    fn splunk_and_search_rules() {
        let sp = json!({"HECEndpoint": "https://splunk:8088", "HECEndpointType": "Event", "HECToken": "t", "S3Configuration": s3()});
        let (_, ep) = create(Kind::Splunk, &sp, false, None).unwrap();
        assert_eq!(ep.config["HECAcknowledgmentTimeoutInSeconds"], 180);
        assert_eq!(ep.config["RetryOptions"]["DurationInSeconds"], 3600);
        assert_eq!(ep.config["S3BackupMode"], "FailedEventsOnly");
        assert_eq!(
            ep.config["BufferingHints"],
            json!({"SizeInMBs": 5, "IntervalInSeconds": 60})
        );
        let mut bad = sp.clone();
        bad["HECEndpointType"] = json!("Json");
        assert!(create(Kind::Splunk, &bad, false, None).is_err());
        let os = json!({"RoleARN": "arn:aws:iam::123456789012:role/r", "IndexName": "logs", "ClusterEndpoint": "https://search:9200", "S3Configuration": s3()});
        let (_, ep) = create(Kind::Opensearch, &os, false, None).unwrap();
        assert_eq!(ep.config["IndexRotationPeriod"], "OneDay");
        assert_eq!(
            ep.config["DocumentIdOptions"],
            json!({"DefaultDocumentIdFormat": "FIREHOSE_DEFAULT"})
        );
        assert_eq!(ep.config["S3BackupMode"], "FailedDocumentsOnly");
        let arn = json!({"RoleARN": "arn:aws:iam::123456789012:role/r", "IndexName": "logs", "DomainARN": "arn:aws:es:us-east-1:123456789012:domain/d", "S3Configuration": s3()});
        let e = create(Kind::Elasticsearch, &arn, false, None).unwrap_err();
        assert!(e.to_string().contains("ClusterEndpoint"), "{e}");
    }

    #[test]
    fn splunk_backup_of_all_events_cannot_be_turned_back() {
        let cfg = json!({"HECEndpoint": "https://splunk:8088", "HECEndpointType": "Raw", "HECToken": "t", "S3BackupMode": "AllEvents", "S3Configuration": s3()});
        let (destination, ep) = create(Kind::Splunk, &cfg, false, None).unwrap();
        let rec: StreamRecord = serde_json::from_value(json!({
            "name": "s", "uid": 1, "stream_type": "DirectPut", "status": "Active",
            "status_until_ms": 0, "created_ms": 0, "updated_ms": null, "version": 1,
            "destination": destination, "endpoint": ep,
        }))
        .unwrap();
        let back = json!({"S3BackupMode": "FailedEventsOnly"});
        let e = update(&rec, Kind::Splunk, &back, false, None).unwrap_err();
        assert!(e.to_string().contains("AllEvents"), "{e}");
        assert!(
            update(
                &rec,
                Kind::Splunk,
                &json!({"S3BackupMode": "AllEvents"}),
                false,
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn descriptions_never_show_the_access_key() {
        let cfg = json!({"EndpointConfiguration": {"Url": "https://example.com/in", "Name": "n", "AccessKey": "secret"}, "S3Configuration": s3()});
        let (destination, ep) = create(Kind::HttpEndpoint, &cfg, false, None).unwrap();
        let rec: StreamRecord = serde_json::from_value(json!({
            "name": "s", "uid": 1, "stream_type": "DirectPut", "status": "Active",
            "status_until_ms": 0, "created_ms": 0, "updated_ms": null, "version": 1,
            "destination": destination, "endpoint": ep,
        }))
        .unwrap();
        let d = description(
            &rec,
            rec.endpoint.as_ref().unwrap(),
            "destinationId-000000000001",
        );
        let h = &d["HttpEndpointDestinationDescription"];
        assert_eq!(
            h["EndpointConfiguration"],
            json!({"Url": "https://example.com/in", "Name": "n"})
        );
        assert_eq!(
            h["S3DestinationDescription"]["BucketARN"],
            "arn:aws:s3:::bkt"
        );
        assert!(!d.to_string().contains("secret"));
        assert!(!format!("{rec:?}").contains("secret"));
        // An update replaces what it names and keeps the rest.
        let (_, up) = update(
            &rec,
            Kind::HttpEndpoint,
            &json!({"RetryOptions": {"DurationInSeconds": 60}}),
            false,
            None,
        )
        .unwrap();
        assert_eq!(up.config["RetryOptions"]["DurationInSeconds"], 60);
        assert_eq!(up.config["EndpointConfiguration"]["AccessKey"], "secret");
    }

    #[test]
    fn ip_literal_hosts_outside_the_networks_are_refused_at_create_and_update() {
        let nets = Networks::parse(["10.0.0.0/8", "fd00::/8"]).unwrap();
        let with_url =
            |url: &str| json!({"EndpointConfiguration": {"Url": url}, "S3Configuration": s3()});
        for url in [
            "https://127.0.0.1/in",
            "https://[::1]/in",
            "https://2130706433/in",
        ] {
            let e = create(Kind::HttpEndpoint, &with_url(url), false, Some(&nets)).unwrap_err();
            assert_eq!(e.code(), "InvalidArgumentException");
            assert!(e.to_string().contains("outside the networks"), "{url}: {e}");
            // Without an allow-list, any address.
            assert!(create(Kind::HttpEndpoint, &with_url(url), false, None).is_ok());
        }
        for url in [
            "https://10.1.2.3/in",
            "https://[fd00::5]:8443/",
            "https://example.com/",
        ] {
            create(Kind::HttpEndpoint, &with_url(url), false, Some(&nets))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let sp = json!({"HECEndpoint": "https://192.168.0.9:8088", "HECEndpointType": "Raw", "HECToken": "t", "S3Configuration": s3()});
        assert!(create(Kind::Splunk, &sp, false, Some(&nets)).is_err());
        let os = json!({"RoleARN": "arn:aws:iam::123456789012:role/r", "IndexName": "logs", "ClusterEndpoint": "https://169.254.169.254", "S3Configuration": s3()});
        assert!(create(Kind::Opensearch, &os, false, Some(&nets)).is_err());
        // An update to such a URL is refused too.
        let (destination, ep) = create(
            Kind::HttpEndpoint,
            &with_url("https://10.0.0.1/"),
            false,
            Some(&nets),
        )
        .unwrap();
        let rec: StreamRecord = serde_json::from_value(json!({
            "name": "s", "uid": 1, "stream_type": "DirectPut", "status": "Active",
            "status_until_ms": 0, "created_ms": 0, "updated_ms": null, "version": 1,
            "destination": destination, "endpoint": ep,
        }))
        .unwrap();
        let u = json!({"EndpointConfiguration": {"Url": "https://127.0.0.1/"}});
        assert!(update(&rec, Kind::HttpEndpoint, &u, false, Some(&nets)).is_err());
        assert!(update(&rec, Kind::HttpEndpoint, &u, false, None).is_ok());
    }
}
