//! The operations, on the JSON form of their (model-validated) inputs.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::record::{self, DESTINATION_ID, Encryption, Status, StreamRecord, Tag};
use crate::source::{KinesisSourceConfig, SourceError};
use crate::{Firehose, RETENTION_MS, Stream, blocking};

/// PutRecordBatch's limits: 500 records and 4 MiB of data per call.
pub const MAX_BATCH_RECORDS: usize = 500;
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// A record's data: at most 1,000 KiB.
pub const MAX_RECORD_BYTES: usize = 1_024_000;
/// Tags per delivery stream.
pub const MAX_TAGS: usize = 50;

/// The destination kinds of CreateDeliveryStream besides S3 and the push
/// destinations (module `endpoints`), each refused.
const OTHER_DESTINATIONS: &[&str] = &[
    "AmazonOpenSearchServerlessDestinationConfiguration",
    "SnowflakeDestinationConfiguration",
];

const OTHER_UPDATES: &[&str] = &[
    "AmazonOpenSearchServerlessDestinationUpdate",
    "SnowflakeDestinationUpdate",
];

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidArgument(m.into())
}

pub(crate) fn text<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str)
}

/// The delivery stream name every operation but ListDeliveryStreams has.
pub(crate) fn name_of(input: &Value) -> Result<&str> {
    text(input, "DeliveryStreamName").ok_or_else(|| invalid("DeliveryStreamName is required."))
}

fn seconds(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn parse_tags(v: Option<&Value>) -> Result<Vec<Tag>> {
    let mut out: Vec<Tag> = Vec::new();
    for t in v.and_then(Value::as_array).into_iter().flatten() {
        let key = text(t, "Key").ok_or_else(|| invalid("Tag.Key is required."))?;
        if key.starts_with("aws:") {
            return Err(invalid(format!(
                "Tag key {key} is invalid: the aws: prefix is reserved."
            )));
        }
        if out.iter().any(|o| o.key == key) {
            return Err(invalid(format!("Duplicate tag key {key} in the request.")));
        }
        out.push(Tag {
            key: key.to_string(),
            value: text(t, "Value").map(String::from),
        });
    }
    Ok(out)
}

/// A record id: opaque to clients, long like AWS's, and naming where the
/// record is (stream uid, log offset) plus randomness so ids never repeat
/// across re-created streams or restarts.
fn record_id(uid: u64, offset: u64) -> String {
    let mut raw = Vec::with_capacity(96);
    raw.extend_from_slice(&uid.to_be_bytes());
    raw.extend_from_slice(&offset.to_be_bytes());
    let mut noise = [0u8; 80];
    rand::fill(&mut noise[..]);
    raw.extend_from_slice(&noise);
    STANDARD.encode(raw)
}

impl Firehose {
    pub(crate) fn stream_arn(&self, name: &str) -> String {
        self.inner.stream_arn(name)
    }

    pub async fn create_delivery_stream(&self, input: Value) -> Result<Value> {
        self.create_delivery_stream_with(input, None).await
    }

    /// CreateDeliveryStream, an Iceberg destination's table limited to
    /// `iceberg_locations` (the caller was authorized to write there; the
    /// front door checks): `None` trusts the caller with wherever the table
    /// writes now.
    pub async fn create_delivery_stream_with(
        &self,
        input: Value,
        iceberg_locations: Option<Vec<Vec<String>>>,
    ) -> Result<Value> {
        let inner = &self.inner;
        let name = name_of(&input)?.to_string();
        let stream_type = text(&input, "DeliveryStreamType").unwrap_or("DirectPut");
        let kinesis_source = match stream_type {
            "DirectPut" => {
                if input.get("KinesisStreamSourceConfiguration").is_some() {
                    return Err(invalid(
                        "KinesisStreamSourceConfiguration is only allowed when DeliveryStreamType is KinesisStreamAsSource.",
                    ));
                }
                None
            }
            "KinesisStreamAsSource" => Some(self.kinesis_source_of(&input).await?),
            other => {
                return Err(invalid(format!(
                    "DeliveryStreamType {other} is not supported yet by this server: only DirectPut and KinesisStreamAsSource."
                )));
            }
        };
        for k in ["MSKSourceConfiguration", "DatabaseSourceConfiguration"] {
            if input.get(k).is_some() {
                return Err(invalid(format!(
                    "{k} is not supported yet by this server: only DirectPut and KinesisStreamAsSource."
                )));
            }
        }
        for k in OTHER_DESTINATIONS {
            if input.get(*k).is_some() {
                return Err(invalid(format!(
                    "{k} is not supported yet by this server: only S3, ExtendedS3, Redshift, HttpEndpoint, Splunk, Amazonopensearchservice, Elasticsearch and Iceberg destination configurations."
                )));
            }
        }
        let redshift_cfg = input.get("RedshiftDestinationConfiguration");
        let iceberg = input.get("IcebergDestinationConfiguration");
        let given = [
            "S3DestinationConfiguration",
            "ExtendedS3DestinationConfiguration",
            "RedshiftDestinationConfiguration",
            "IcebergDestinationConfiguration",
        ]
        .iter()
        .filter(|k| input.get(**k).is_some())
        .count()
            + crate::endpoints::ALL
                .iter()
                .filter(|k| input.get(k.configuration_key()).is_some())
                .count();
        if given > 1 {
            return Err(invalid(
                "Only one destination configuration can be specified.",
            ));
        }
        // A Redshift or push destination: its own part stored aside, its
        // intermediate S3 configuration the destination the engine uses.
        let (mut destination, endpoint, redshift) = match (
            crate::endpoints::configuration_in(&input),
            redshift_cfg,
            iceberg,
        ) {
            (Some((kind, cfg)), _, _) => {
                let (d, ep) = crate::endpoints::create(
                    kind,
                    cfg,
                    inner.cfg.allow_http_destinations,
                    inner.cfg.destination_networks.as_ref(),
                )?;
                (d, Some(ep), None)
            }
            (None, Some(r), _) => {
                let (r, d) =
                    crate::redshift::normalize(r, inner.cfg.destination_networks.as_ref())?;
                (d, None, Some(r))
            }
            (None, None, Some(c)) => (
                crate::iceberg::normalize(c, &inner.region, &inner.account)?,
                None,
                None,
            ),
            (None, None, None) => {
                let dest = match (
                    input.get("S3DestinationConfiguration"),
                    input.get("ExtendedS3DestinationConfiguration"),
                ) {
                    (None, None) => {
                        return Err(invalid("A destination configuration must be specified."));
                    }
                    (Some(d), _) => {
                        // Dynamic partitioning is an ExtendedS3 member only.
                        if d.get("DynamicPartitioningConfiguration").is_some() {
                            return Err(invalid(
                                "DynamicPartitioningConfiguration is only supported for ExtendedS3DestinationConfiguration.",
                            ));
                        }
                        d.as_object().cloned().unwrap_or_default()
                    }
                    (None, Some(d)) => d.as_object().cloned().unwrap_or_default(),
                };
                (record::normalize_destination(dest)?, None, None)
            }
        };
        let parsed = record::Destination::of(&destination)?;
        parsed.processing.check_functions(&inner.cfg.functions)?;
        self.check_object_keys(&parsed)?;
        if let Some(ep) = &endpoint {
            crate::processing::pipeline(ep.config.get("ProcessingConfiguration"))?
                .check_functions(&inner.cfg.functions)?;
        }
        if destination.get(crate::iceberg::STORED_KEY).is_some() {
            let locations = match iceberg_locations {
                Some(l) => l,
                None => crate::iceberg::create_locations(inner, &input).await?,
            };
            crate::iceberg::pin(&mut destination, locations);
        }
        crate::iceberg::check(inner, &destination).await?;
        let tags = parse_tags(input.get("Tags"))?;
        if tags.len() > MAX_TAGS {
            return Err(Error::LimitExceeded(format!(
                "A Firehose stream can have at most {MAX_TAGS} tags."
            )));
        }
        let encryption = match input.get("DeliveryStreamEncryptionConfigurationInput") {
            Some(_) if kinesis_source.is_some() => return Err(sse_refused()),
            Some(e) => Some(self.encryption_of(e)?),
            None => None,
        };
        let _guard = inner.control.lock().await;
        let now = inner.now_ms();
        if let Some(cur) = inner.streams.read().get(&name)
            && cur.rec.status_at(now).is_some()
        {
            return Err(Error::ResourceInUse(format!(
                "Firehose {name} under account {} already exists.",
                inner.account
            )));
        }
        let live = inner
            .streams
            .read()
            .values()
            .filter(|s| s.rec.status_at(now).is_some())
            .count();
        if live >= inner.cfg.stream_limit {
            return Err(Error::LimitExceeded(format!(
                "You have already consumed your firehose quota of {} hoses. Firehose names: {name}",
                inner.cfg.stream_limit
            )));
        }
        let catalog = inner.catalog.clone();
        let uid = blocking(move || Ok(catalog.next_id("firehose-stream")?)).await?;
        let rec = StreamRecord {
            name: name.clone(),
            uid,
            stream_type: stream_type.to_string(),
            status: if inner.cfg.create_delay.is_zero() {
                Status::Active
            } else {
                Status::Creating
            },
            status_until_ms: now + inner.cfg.create_delay.as_millis() as i64,
            created_ms: now,
            updated_ms: None,
            version: 1,
            destination,
            direct_put: input.get("DirectPutSourceConfiguration").cloned(),
            kinesis_source,
            tags,
            encryption,
            encryption_changes_ms: Vec::new(),
            endpoint,
            redshift,
        };
        // The partition first: a crash before the commit leaves an orphan
        // partition, which the next start removes.
        let (log, id) = (inner.log.clone(), rec.partition_id());
        let part = blocking(move || Ok(log.create_partition(&id, RETENTION_MS)?)).await?;
        inner.commit(&rec).await?;
        // A stream of the same name whose deletion was due goes for good.
        let old = inner
            .streams
            .write()
            .insert(name.clone(), Arc::new(Stream { rec, part }));
        if let Some(old) = old
            && old.rec.uid != uid
        {
            // The new stream is committed: a failure here leaves only an
            // orphan partition (removed at the next start) and a stale
            // checkpoint no stream reads, so it is logged, not answered.
            let (catalog, old_uid) = (inner.catalog.clone(), old.rec.uid);
            let cleared = blocking(move || {
                let key = old_uid.to_string();
                catalog.write_documents(crate::CHECKPOINTS_SPACE, &[(key.as_bytes(), None)])?;
                catalog.write_documents(
                    crate::source::SOURCE_CHECKPOINTS_SPACE,
                    &[(key.as_bytes(), None)],
                )?;
                Ok(())
            })
            .await;
            let deleted = inner.log.delete_partition(&old.rec.partition_id()).await;
            if let Err(e) = cleared.and(deleted.map_err(Error::from)) {
                tracing::warn!(stream = %name, error = %ripstream_api::Chain(&e), "could not remove the data of the deleted stream of the same name");
            }
        }
        inner.changed.notify_one();
        Ok(json!({"DeliveryStreamARN": inner.stream_arn(&name)}))
    }

    /// The source of a KinesisStreamAsSource stream, checked: both ARNs
    /// given, the stream one of this server's.
    async fn kinesis_source_of(&self, input: &Value) -> Result<KinesisSourceConfig> {
        if input.get("DirectPutSourceConfiguration").is_some() {
            return Err(invalid(
                "DirectPutSourceConfiguration is only allowed when DeliveryStreamType is DirectPut.",
            ));
        }
        let Some(c) = input.get("KinesisStreamSourceConfiguration") else {
            return Err(invalid(
                "KinesisStreamSourceConfiguration is required when DeliveryStreamType is KinesisStreamAsSource.",
            ));
        };
        let (Some(stream_arn), Some(role_arn)) = (text(c, "KinesisStreamARN"), text(c, "RoleARN"))
        else {
            return Err(invalid(
                "KinesisStreamSourceConfiguration needs KinesisStreamARN and RoleARN.",
            ));
        };
        let Some(source) = &self.inner.kinesis else {
            return Err(invalid(
                "KinesisStreamAsSource is not available on this server.",
            ));
        };
        match source.check(stream_arn).await {
            Ok(()) => {}
            Err(SourceError::NotFound(m)) => return Err(invalid(m)),
            Err(e) => return Err(Error::internal(e)),
        }
        Ok(KinesisSourceConfig {
            stream_arn: stream_arn.to_string(),
            role_arn: role_arn.to_string(),
        })
    }

    /// The KMS keys an S3 configuration stores its objects under (its
    /// own, its backup's), each resolved through the keyring as AWS checks
    /// them at create and update: a key it cannot find or use is refused.
    fn check_object_keys(&self, dest: &record::Destination) -> Result<()> {
        let keys = [
            dest.kms_key.as_deref(),
            dest.backup.as_ref().and_then(|b| b.kms_key.as_deref()),
        ];
        for key in keys.into_iter().flatten() {
            self.inner.keyring.resolve(key).map_err(|e| match e {
                ripstream_keyring::KeyringError::File { .. } => Error::internal(e),
                other => invalid(format!(
                    "KMSEncryptionConfig.AWSKMSKeyARN {key} cannot be used: {other}"
                )),
            })?;
        }
        Ok(())
    }

    fn encryption_of(&self, e: &Value) -> Result<Encryption> {
        let key_type = text(e, "KeyType").unwrap_or("AWS_OWNED_CMK");
        let key_arn = text(e, "KeyARN");
        let key_id = match (key_type, key_arn) {
            ("AWS_OWNED_CMK", Some(_)) => {
                return Err(invalid(
                    "KeyARN must not be specified when KeyType is AWS_OWNED_CMK.",
                ));
            }
            ("AWS_OWNED_CMK", None) => ripstream_keyring::MANAGED_ALIAS,
            ("CUSTOMER_MANAGED_CMK", Some(arn)) => arn,
            ("CUSTOMER_MANAGED_CMK", None) => {
                return Err(invalid(
                    "KeyARN is required when KeyType is CUSTOMER_MANAGED_CMK.",
                ));
            }
            (other, _) => return Err(invalid(format!("KeyType {other} is not valid."))),
        };
        let resolved = self.inner.keyring.resolve(key_id).map_err(|e| match e {
            ripstream_keyring::KeyringError::File { .. } => Error::internal(e),
            other => Error::InvalidKmsResource(other.to_string()),
        })?;
        Ok(Encryption {
            key_type: key_type.to_string(),
            key_arn: key_arn.map(String::from),
            key_id: resolved,
        })
    }

    pub async fn delete_delivery_stream(&self, input: Value) -> Result<Value> {
        let inner = &self.inner;
        let name = name_of(&input)?;
        let _guard = inner.control.lock().await;
        let s = inner.stream(name)?;
        let now = inner.now_ms();
        match s.rec.status_at(now) {
            Some(Status::Creating) => {
                return Err(Error::ResourceInUse(format!(
                    "Firehose {name} under account {} is in CREATING state and cannot be deleted.",
                    inner.account
                )));
            }
            Some(Status::Deleting) => return Ok(json!({})),
            _ => {}
        }
        let mut rec = s.rec.clone();
        rec.status = Status::Deleting;
        rec.status_until_ms = now + inner.cfg.delete_delay.as_millis() as i64;
        inner.replace(&s, rec).await?;
        drop(_guard);
        if inner.cfg.delete_delay.is_zero() {
            let s = inner.streams.read().get(name).cloned();
            if let Some(s) = s {
                let _guard = inner.control.lock().await;
                // DELETING is committed: if removing the data fails now, the
                // engine's supervisor retries it, so the deletion stands.
                if let Err(e) = inner.purge(&s).await {
                    tracing::warn!(stream = %name, error = %ripstream_api::Chain(&e), "could not remove the deleted stream's data yet; retrying in the background");
                }
            }
        }
        inner.changed.notify_one();
        Ok(json!({}))
    }

    fn description(&self, s: &Stream, exclusive_start: Option<&str>) -> Value {
        let inner = &self.inner;
        let rec = &s.rec;
        let status = rec.status_at(inner.now_ms()).unwrap_or(Status::Deleting);
        let encryption = match &rec.encryption {
            Some(e) => {
                let mut m = json!({"KeyType": e.key_type, "Status": "ENABLED"});
                if let Some(arn) = &e.key_arn {
                    m["KeyARN"] = json!(arn);
                }
                m
            }
            None => json!({"Status": "DISABLED"}),
        };
        let destinations = if exclusive_start.is_some_and(|id| id >= DESTINATION_ID) {
            vec![]
        } else if let Some(ep) = &rec.endpoint {
            vec![crate::endpoints::description(rec, ep, DESTINATION_ID)]
        } else if let Some(r) = &rec.redshift {
            vec![json!({
                "DestinationId": DESTINATION_ID,
                "RedshiftDestinationDescription": crate::redshift::description(r, &rec.destination),
            })]
        } else {
            vec![match crate::iceberg::description(&rec.destination) {
                Some(d) => {
                    json!({"DestinationId": DESTINATION_ID, "IcebergDestinationDescription": d})
                }
                None => json!({
                    "DestinationId": DESTINATION_ID,
                    "S3DestinationDescription": record::s3_description(&rec.destination),
                    "ExtendedS3DestinationDescription": record::extended_description(&rec.destination),
                }),
            }]
        };
        let mut d = json!({
            "DeliveryStreamName": rec.name,
            "DeliveryStreamARN": inner.stream_arn(&rec.name),
            "DeliveryStreamStatus": status.as_str(),
            "DeliveryStreamEncryptionConfiguration": encryption,
            "DeliveryStreamType": rec.stream_type,
            "VersionId": rec.version.to_string(),
            "CreateTimestamp": seconds(rec.created_ms),
            "Destinations": destinations,
            "HasMoreDestinations": false,
        });
        if let Some(ms) = rec.updated_ms {
            d["LastUpdateTimestamp"] = seconds(ms);
        }
        if let Some(dp) = &rec.direct_put {
            d["Source"] = json!({"DirectPutSourceDescription": dp});
        }
        if let Some(k) = &rec.kinesis_source {
            d["Source"] = json!({"KinesisStreamSourceDescription": {
                "KinesisStreamARN": k.stream_arn,
                "RoleARN": k.role_arn,
                "DeliveryStartTimestamp": seconds(rec.created_ms),
            }});
        }
        d
    }

    pub async fn describe_delivery_stream(&self, input: Value) -> Result<Value> {
        let s = self.inner.stream(name_of(&input)?)?;
        Ok(json!({
            "DeliveryStreamDescription": self.description(&s, text(&input, "ExclusiveStartDestinationId"))
        }))
    }

    pub async fn list_delivery_streams(&self, input: Value) -> Result<Value> {
        let inner = &self.inner;
        let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(10) as usize;
        let kind = text(&input, "DeliveryStreamType");
        let start = text(&input, "ExclusiveStartDeliveryStreamName");
        let now = inner.now_ms();
        let names: Vec<String> = inner
            .streams
            .read()
            .values()
            .filter(|s| s.rec.status_at(now).is_some())
            .filter(|s| kind.is_none_or(|k| k == s.rec.stream_type))
            .filter(|s| start.is_none_or(|st| s.rec.name.as_str() > st))
            .map(|s| s.rec.name.clone())
            .collect();
        let more = names.len() > limit;
        Ok(json!({
            "DeliveryStreamNames": names.into_iter().take(limit).collect::<Vec<_>>(),
            "HasMoreDeliveryStreams": more,
        }))
    }

    pub async fn update_destination(&self, input: Value) -> Result<Value> {
        self.update_destination_with(input, None).await
    }

    /// UpdateDestination, an Iceberg destination's tables limited to
    /// `iceberg_locations` (the caller was authorized to write there; the
    /// front door checks, [`Firehose::iceberg_update_locations`]), which
    /// must still be where they write: `None` trusts the caller with
    /// wherever new tables write now.
    pub async fn update_destination_with(
        &self,
        input: Value,
        iceberg_locations: Option<Vec<Vec<String>>>,
    ) -> Result<Value> {
        let inner = &self.inner;
        let _guard = inner.control.lock().await;
        let s = inner.stream(name_of(&input)?)?;
        let mut rec = self.planned_update(&s.rec, &input)?;
        if rec.destination.get(crate::iceberg::STORED_KEY).is_some() {
            // Read again under the lock: what the front door authorized
            // must be what is pinned (the stream re-created meanwhile, or a
            // table moved, would make them differ).
            let locations =
                crate::iceberg::update_locations(inner, &s.rec.destination, &rec.destination)
                    .await?;
            if iceberg_locations.is_some_and(|authorized| authorized != locations) {
                return Err(Error::ConcurrentModification(format!(
                    "Firehose {} or its tables changed while it was being updated; describe it and try again.",
                    s.rec.name
                )));
            }
            crate::iceberg::pin(&mut rec.destination, locations);
            crate::iceberg::check(inner, &rec.destination).await?;
        }
        rec.version += 1;
        rec.updated_ms = Some(inner.now_ms());
        inner.replace(&s, rec).await?;
        Ok(json!({}))
    }

    /// The directories the tables of the Iceberg destination an
    /// UpdateDestination makes would write (none for other updates): what
    /// its caller must be allowed to write. An update that would be
    /// refused answers its error.
    pub async fn iceberg_update_locations(&self, input: &Value) -> Result<Vec<Vec<String>>> {
        let inner = &self.inner;
        if input.get("IcebergDestinationUpdate").is_none() {
            return Ok(Vec::new());
        }
        let s = inner.stream(name_of(input)?)?;
        let rec = self.planned_update(&s.rec, input)?;
        crate::iceberg::update_locations(inner, &s.rec.destination, &rec.destination).await
    }

    /// The KMS keys (their ARNs) the stream would store objects under
    /// after this update, its unchanged parts included: whoever updates a
    /// stream has it write with these keys on their behalf. An update that
    /// would be refused names none; the update itself answers its error.
    pub fn key_arns_after_update(&self, input: &Value) -> Vec<String> {
        let inner = &self.inner;
        let Ok(s) = name_of(input).and_then(|n| inner.stream(n)) else {
            return Vec::new();
        };
        let Ok(rec) = self.planned_update(&s.rec, input) else {
            return Vec::new();
        };
        let Ok(dest) = record::Destination::of(&rec.destination) else {
            return Vec::new();
        };
        [
            dest.kms_key.as_deref(),
            dest.backup.as_ref().and_then(|b| b.kms_key.as_deref()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|k| inner.keyring.resolve(k).ok())
        .map(|id| inner.keyring.key_arn(&id))
        .collect()
    }

    /// The stream's record as `input` would update it (version unchanged),
    /// or why the update is refused.
    fn planned_update(&self, current: &StreamRecord, input: &Value) -> Result<StreamRecord> {
        let inner = &self.inner;
        let name = name_of(input)?;
        for k in OTHER_UPDATES {
            if input.get(*k).is_some() {
                return Err(invalid(format!(
                    "{k} is not supported yet by this server: only S3, ExtendedS3, Redshift, HttpEndpoint, Splunk, Amazonopensearchservice, Elasticsearch and Iceberg destination updates."
                )));
            }
        }
        if current.status_at(inner.now_ms()) != Some(Status::Active) {
            return Err(Error::ResourceInUse(format!(
                "Firehose {name} under account {} is not ACTIVE.",
                inner.account
            )));
        }
        let given = text(input, "CurrentDeliveryStreamVersionId").unwrap_or("");
        if given != current.version.to_string() {
            return Err(Error::ConcurrentModification(format!(
                "Cannot update firehose: {name} since the current version id: {} and specified version id: {given} do not match",
                current.version
            )));
        }
        let dest_id = text(input, "DestinationId").unwrap_or("");
        if dest_id != DESTINATION_ID {
            return Err(invalid(format!(
                "Destination Id {dest_id} not found for Firehose {name}."
            )));
        }
        let iceberg_update = input.get("IcebergDestinationUpdate");
        if current
            .destination
            .get(crate::iceberg::STORED_KEY)
            .is_some()
        {
            let others =
                input.as_object().into_iter().flatten().any(|(k, _)| {
                    k.ends_with("DestinationUpdate") && k != "IcebergDestinationUpdate"
                });
            let Some(u) = iceberg_update.filter(|_| !others) else {
                return Err(invalid(format!(
                    "Firehose {name} delivers to Apache Iceberg tables: only an IcebergDestinationUpdate can update it on this server (switching destination types is not supported yet)."
                )));
            };
            let mut destination = crate::iceberg::merge_update(
                &current.destination,
                u,
                &inner.region,
                &inner.account,
            )?;
            // Kept until the update pins them anew.
            if let Some(kept) = current.destination.get(crate::iceberg::LOCATIONS_KEY)
                && let Some(d) = destination.as_object_mut()
            {
                d.insert(crate::iceberg::LOCATIONS_KEY.into(), kept.clone());
            }
            let parsed = record::Destination::of(&destination)?;
            parsed.processing.check_functions(&inner.cfg.functions)?;
            self.check_object_keys(&parsed)?;
            let mut rec = current.clone();
            rec.destination = destination;
            return Ok(rec);
        }
        if iceberg_update.is_some() {
            return Err(invalid(format!(
                "Firehose {name} does not deliver to Apache Iceberg tables: switching destination types to Iceberg is not supported yet by this server."
            )));
        }
        let redshift_update = input.get("RedshiftDestinationUpdate");
        if let Some(r) = &current.redshift {
            let others =
                input.as_object().into_iter().flatten().any(|(k, _)| {
                    k.ends_with("DestinationUpdate") && k != "RedshiftDestinationUpdate"
                });
            let Some(u) = redshift_update.filter(|_| !others) else {
                return Err(invalid(format!(
                    "Firehose {name} delivers to Redshift: only a RedshiftDestinationUpdate can update it on this server (switching destination types is not supported yet)."
                )));
            };
            let (redshift, destination) = crate::redshift::merge_update(
                r,
                &current.destination,
                u,
                inner.cfg.destination_networks.as_ref(),
            )?;
            let parsed = record::Destination::of(&destination)?;
            parsed.processing.check_functions(&inner.cfg.functions)?;
            self.check_object_keys(&parsed)?;
            let mut rec = current.clone();
            rec.destination = destination;
            rec.redshift = Some(redshift);
            return Ok(rec);
        }
        if redshift_update.is_some() {
            return Err(invalid(format!(
                "Firehose {name} does not deliver to Redshift: switching destination types to Redshift is not supported yet by this server."
            )));
        }
        let pushes = crate::endpoints::ALL
            .iter()
            .filter(|k| input.get(k.update_key()).is_some())
            .count();
        // AWS: an OpenSearch Service (or Elasticsearch) destination can
        // only be updated to one of its own kind, and no other destination
        // to one.
        let search = |k: Option<crate::endpoints::Kind>| {
            matches!(
                k,
                Some(crate::endpoints::Kind::Opensearch | crate::endpoints::Kind::Elasticsearch)
            )
        };
        let kind_now = current.endpoint.as_ref().map(|e| e.kind);
        let kind_next = crate::endpoints::update_in(input).map(|(k, _)| k);
        if (search(kind_now) || search(kind_next)) && kind_now != kind_next {
            return Err(invalid(format!(
                "Switching between Amazon OpenSearch Service (or Elasticsearch) and other destinations is not supported: Firehose {name} can only be updated with an update of its own destination type."
            )));
        }
        let (destination, endpoint) = match (
            input.get("S3DestinationUpdate"),
            input.get("ExtendedS3DestinationUpdate"),
            crate::endpoints::update_in(input),
        ) {
            _ if pushes > 1 => {
                return Err(invalid("Only one destination update can be specified."));
            }
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(invalid("Only one destination update can be specified."));
            }
            (None, None, None) => {
                return Err(invalid("A destination update must be specified."));
            }
            (None, None, Some((kind, u))) => {
                let (d, ep) = crate::endpoints::update(
                    current,
                    kind,
                    u,
                    inner.cfg.allow_http_destinations,
                    inner.cfg.destination_networks.as_ref(),
                )?;
                (d, Some(ep))
            }
            // An S3 update of a push destination's stream makes it an S3
            // stream on the S3 configuration it had.
            (Some(u), None, None) => (record::merge_update(&current.destination, u, false)?, None),
            (None, Some(u), None) => (record::merge_update(&current.destination, u, true)?, None),
        };
        let parsed = record::Destination::of(&destination)?;
        parsed.processing.check_functions(&inner.cfg.functions)?;
        self.check_object_keys(&parsed)?;
        if let Some(ep) = &endpoint {
            crate::processing::pipeline(ep.config.get("ProcessingConfiguration"))?
                .check_functions(&inner.cfg.functions)?;
        }
        let mut rec = current.clone();
        rec.destination = destination;
        rec.endpoint = endpoint;
        Ok(rec)
    }

    /// Appends records to the stream's partition and answers once they are
    /// durable (the log's group commit).
    async fn put(&self, name: &str, data: Vec<Vec<u8>>) -> Result<(Vec<Value>, u32, bool)> {
        let inner = &self.inner;
        let s = inner.stream(name)?;
        if s.rec.status_at(inner.now_ms()) != Some(Status::Active) {
            return Err(inner.not_found(name));
        }
        if s.rec.kinesis_source.is_some() {
            return Err(invalid(format!(
                "This operation is not permitted on KinesisStreamAsSource delivery stream type. Firehose {name} reads its records from its source stream."
            )));
        }
        let sizes: Vec<usize> = data.iter().map(Vec::len).collect();
        let admitted = inner
            .quotas
            .admit(s.rec.uid, &sizes, inner.now_ms())
            .ok_or_else(|| Error::ServiceUnavailable(SLOW_DOWN.into()))?;
        // Past the rates, the rest of the batch fails record by record.
        let take = admitted.iter().take_while(|ok| **ok).count();
        let throttled = data.len() - take;
        if throttled > 0 {
            inner.metrics.throttled(name, throttled as u64);
        }
        if take == 0 {
            let results = throttled_results(throttled).collect();
            return Ok((results, throttled as u32, s.rec.encryption.is_some()));
        }
        let data = &data[..take];
        let bytes: usize = data.iter().map(Vec::len).sum();
        let encrypted = s.rec.encryption.is_some();
        let appended = inner
            .append(&s, data.iter().map(|d| (&[][..], &d[..])))
            .await;
        match appended {
            Ok(appended) => {
                inner
                    .metrics
                    .incoming(name, data.len() as u64, bytes as u64);
                let mut ids: Vec<Value> = (0..data.len() as u64)
                    .map(|i| json!({"RecordId": record_id(s.rec.uid, appended.base_offset + i)}))
                    .collect();
                ids.extend(throttled_results(throttled));
                Ok((ids, throttled as u32, encrypted))
            }
            // Refusals of the batch itself answer the call.
            Err(e @ (Error::InvalidArgument(_) | Error::InvalidKmsResource(_))) => Err(e),
            Err(e) => {
                tracing::warn!(stream = %name, error = %ripstream_api::Chain(&e), "append failed");
                let failed = (0..data.len())
                    .map(|_| json!({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down. The record could not be stored; retry it."}))
                    .chain(throttled_results(throttled))
                    .collect();
                Ok((failed, (data.len() + throttled) as u32, encrypted))
            }
        }
    }

    fn data_of(record: &Value) -> Result<Vec<u8>> {
        let data = text(record, "Data").unwrap_or("");
        let raw = STANDARD
            .decode(data)
            .map_err(|e| invalid(format!("Record.Data is not valid base64: {e}")))?;
        if raw.len() > MAX_RECORD_BYTES {
            return Err(invalid(format!(
                "Record size ({} bytes) exceeds the maximum of {MAX_RECORD_BYTES} bytes.",
                raw.len()
            )));
        }
        Ok(raw)
    }

    pub async fn put_record(&self, input: Value) -> Result<Value> {
        let name = name_of(&input)?;
        let data = Self::data_of(input.get("Record").unwrap_or(&Value::Null))?;
        let (mut results, failed, encrypted) = self.put(name, vec![data]).await?;
        if failed > 0 {
            return Err(Error::ServiceUnavailable(
                "Slow down. The record could not be stored; retry it.".into(),
            ));
        }
        let mut out = results.pop().unwrap_or_default();
        out["Encrypted"] = json!(encrypted);
        Ok(out)
    }

    pub async fn put_record_batch(&self, input: Value) -> Result<Value> {
        let name = name_of(&input)?;
        let records = input
            .get("Records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if records.is_empty() || records.len() > MAX_BATCH_RECORDS {
            return Err(invalid(format!(
                "Records must hold between 1 and {MAX_BATCH_RECORDS} records."
            )));
        }
        let data = records
            .iter()
            .map(Self::data_of)
            .collect::<Result<Vec<_>>>()?;
        let total: usize = data.iter().map(Vec::len).sum();
        if total > MAX_BATCH_BYTES {
            return Err(invalid(format!(
                "The batch holds {total} bytes of data, more than the maximum of {MAX_BATCH_BYTES} bytes per PutRecordBatch call."
            )));
        }
        let (results, failed, encrypted) = self.put(name, data).await?;
        Ok(json!({
            "FailedPutCount": failed,
            "Encrypted": encrypted,
            "RequestResponses": results,
        }))
    }

    pub async fn tag_delivery_stream(&self, input: Value) -> Result<Value> {
        let inner = &self.inner;
        let name = name_of(&input)?;
        let tags = parse_tags(input.get("Tags"))?;
        let _guard = inner.control.lock().await;
        let s = inner.stream(name)?;
        let mut rec = s.rec.clone();
        for t in tags {
            match rec.tags.iter_mut().find(|o| o.key == t.key) {
                Some(o) => o.value = t.value,
                None => rec.tags.push(t),
            }
        }
        if rec.tags.len() > MAX_TAGS {
            return Err(Error::LimitExceeded(format!(
                "Firehose {name} under account {} would have {} tags: a Firehose stream can have at most {MAX_TAGS} tags.",
                inner.account,
                rec.tags.len()
            )));
        }
        inner.replace(&s, rec).await?;
        Ok(json!({}))
    }

    pub async fn untag_delivery_stream(&self, input: Value) -> Result<Value> {
        let inner = &self.inner;
        let name = name_of(&input)?;
        let keys: Vec<&str> = input
            .get("TagKeys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _guard = inner.control.lock().await;
        let s = inner.stream(name)?;
        let mut rec = s.rec.clone();
        rec.tags.retain(|t| !keys.contains(&t.key.as_str()));
        inner.replace(&s, rec).await?;
        Ok(json!({}))
    }

    pub async fn list_tags_for_delivery_stream(&self, input: Value) -> Result<Value> {
        let s = self.inner.stream(name_of(&input)?)?;
        let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(50) as usize;
        let start = text(&input, "ExclusiveStartTagKey");
        let mut tags = s.rec.tags.clone();
        tags.sort_by(|a, b| a.key.cmp(&b.key));
        let after: Vec<&Tag> = tags
            .iter()
            .filter(|t| start.is_none_or(|k| t.key.as_str() > k))
            .collect();
        let more = after.len() > limit;
        let out: Vec<Value> = after
            .into_iter()
            .take(limit)
            .map(|t| {
                let mut m = Map::new();
                m.insert("Key".into(), json!(t.key));
                if let Some(v) = &t.value {
                    m.insert("Value".into(), json!(v));
                }
                Value::Object(m)
            })
            .collect();
        Ok(json!({"Tags": out, "HasMoreTags": more}))
    }

    pub async fn start_delivery_stream_encryption(&self, input: Value) -> Result<Value> {
        let inner = &self.inner;
        let name = name_of(&input)?;
        let cfg = input
            .get("DeliveryStreamEncryptionConfigurationInput")
            .cloned()
            .unwrap_or(json!({}));
        let encryption = self.encryption_of(&cfg)?;
        let _guard = inner.control.lock().await;
        let s = inner.stream(name)?;
        if s.rec.kinesis_source.is_some() {
            return Err(sse_refused());
        }
        if s.rec.status_at(inner.now_ms()) != Some(Status::Active) {
            return Err(Error::ResourceInUse(format!(
                "Firehose {name} under account {} is not ACTIVE.",
                inner.account
            )));
        }
        let mut rec = s.rec.clone();
        count_encryption_change(&mut rec, inner.now_ms())?;
        rec.encryption = Some(encryption);
        inner.replace(&s, rec).await?;
        Ok(json!({}))
    }

    pub async fn stop_delivery_stream_encryption(&self, input: Value) -> Result<Value> {
        let inner = &self.inner;
        let name = name_of(&input)?;
        let _guard = inner.control.lock().await;
        let s = inner.stream(name)?;
        if s.rec.status_at(inner.now_ms()) != Some(Status::Active) {
            return Err(Error::ResourceInUse(format!(
                "Firehose {name} under account {} is not ACTIVE.",
                inner.account
            )));
        }
        let mut rec = s.rec.clone();
        count_encryption_change(&mut rec, inner.now_ms())?;
        rec.encryption = None;
        inner.replace(&s, rec).await?;
        Ok(json!({}))
    }
}

/// Start- and StopDeliveryStreamEncryption calls a stream takes in 24 hours
/// (AWS: a combined limit of 25 per Firehose stream).
const ENCRYPTION_CHANGES_PER_DAY: usize = 25;

/// Counts a Start/StopDeliveryStreamEncryption call against the day's limit.
fn count_encryption_change(rec: &mut StreamRecord, now_ms: i64) -> Result<()> {
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    rec.encryption_changes_ms.retain(|&t| now_ms - t < DAY_MS);
    if rec.encryption_changes_ms.len() >= ENCRYPTION_CHANGES_PER_DAY {
        return Err(Error::LimitExceeded(format!(
            "StartDeliveryStreamEncryption and StopDeliveryStreamEncryption have a combined limit of {ENCRYPTION_CHANGES_PER_DAY} calls per Firehose stream per 24 hours; {} has reached it.",
            rec.name
        )));
    }
    rec.encryption_changes_ms.push(now_ms);
    Ok(())
}

/// AWS keeps a stream-sourced delivery stream's records under the source
/// stream's encryption, never its own.
fn sse_refused() -> Error {
    invalid(
        "Server-side encryption is not supported for a Firehose stream whose source is a Kinesis data stream; encrypt the source stream instead.",
    )
}

/// AWS's throttling message.
const SLOW_DOWN: &str = "Slow down.";

/// The answers of records refused by the stream's quota.
fn throttled_results(n: usize) -> impl Iterator<Item = Value> {
    (0..n).map(|_| json!({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": SLOW_DOWN}))
}
