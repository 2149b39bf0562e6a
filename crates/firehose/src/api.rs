//! Firehose behind the front door: the operation table, the [`Spec`], and
//! authorization of each operation's resources before it acts.

use std::sync::Arc;

use http::StatusCode;
use ripstream_api::{BoxError, CallFuture, Reply, Request, Spec, Task};
use serde_json::Value;

use crate::Firehose;

/// The vendored botocore model of Firehose (`firehose/2015-08-04`).
pub static MODEL: &str = include_str!("../model/firehose-2015-08-04.json");

/// The operations this service serves, as the model names them (all of
/// them; what an operation cannot do yet it refuses).
pub const OPERATIONS: &[&str] = &[
    "CreateDeliveryStream",
    "DeleteDeliveryStream",
    "DescribeDeliveryStream",
    "ListDeliveryStreams",
    "UpdateDestination",
    "PutRecord",
    "PutRecordBatch",
    "TagDeliveryStream",
    "UntagDeliveryStream",
    "ListTagsForDeliveryStream",
    "StartDeliveryStreamEncryption",
    "StopDeliveryStreamEncryption",
];

/// Firehose as the front door mounts it.
#[derive(Debug, Clone)]
pub struct FirehoseApi {
    service: Firehose,
    spec: Arc<Spec>,
}

impl FirehoseApi {
    pub fn new(service: Firehose) -> FirehoseApi {
        FirehoseApi {
            spec: Arc::new(
                Spec::from_model(MODEL, "firehose").expect("the vendored model has metadata"),
            ),
            service,
        }
    }

    pub fn service(&self) -> &Firehose {
        &self.service
    }

    /// The resources an operation acts on, from its input: the delivery
    /// stream's ARN for every operation that names one (CreateDeliveryStream
    /// included, as AWS's service authorization reference lists
    /// `deliverystream*` for it), `*` for ListDeliveryStreams.
    fn resources(&self, operation: &str, input: &Value) -> Result<Vec<String>, BoxError> {
        if operation == "ListDeliveryStreams" {
            return Ok(vec!["*".to_string()]);
        }
        let name = crate::ops::name_of(input)?;
        Ok(vec![self.service.stream_arn(name)])
    }

    async fn run(&self, request: Request<'_>) -> Result<Reply, BoxError> {
        let op = request.operation;
        let input = request.input;
        if !OPERATIONS.contains(&op) {
            return Err(Box::new(ripstream_api::Refused {
                code: "UnknownOperationException",
                status: StatusCode::BAD_REQUEST,
                message: format!("Operation {op} is not supported by this version of Ripstream."),
            }));
        }
        request.authorize.authorize(&self.resources(op, &input)?)?;
        if matches!(op, "CreateDeliveryStream" | "UpdateDestination") {
            // The stream will write and invoke as whoever configured it (AWS
            // does so with the IAM role the caller passes): the caller must
            // be allowed to do so itself, or Firehose would write into any
            // bucket for anyone.
            let inner = &self.service.inner;
            for (action, resource) in deputy_actions(&input, &inner.region, &inner.account)? {
                request.authorize.authorize_action(action, &[resource])?;
            }
            // Objects stored under a KMS key are a kms:GenerateDataKey of
            // it each, checked on the key's own ARN (so an alias cannot
            // dodge a Deny); a key the keyring lacks is refused by the
            // operation itself. An update is checked on the keys the
            // stream keeps too: whoever points it elsewhere has it seal
            // with them there.
            let mut arns: Vec<String> = kms_keys(&input)
                .into_iter()
                .filter_map(|named| inner.keyring.resolve(named).ok())
                .map(|id| inner.keyring.key_arn(&id))
                .collect();
            if op == "UpdateDestination" {
                arns.extend(self.service.key_arns_after_update(&input));
            }
            arns.sort();
            arns.dedup();
            for arn in arns {
                request
                    .authorize
                    .authorize_action("kms:GenerateDataKey", &[arn])?;
            }
        }
        // An Iceberg table's files go where the table says, not where the
        // request does: the caller must be allowed to write there itself,
        // and the stream writes nowhere else later (the table's owner may
        // move the table; the stream then refuses it).
        // An update is checked on every table the stream would write,
        // those it keeps included, as its keys are.
        let iceberg_locations = match op {
            "CreateDeliveryStream" => {
                Some(crate::iceberg::create_locations(&self.service.inner, &input).await?)
            }
            "UpdateDestination" if input.get("IcebergDestinationUpdate").is_some() => {
                Some(self.service.iceberg_update_locations(&input).await?)
            }
            _ => None,
        };
        for l in iceberg_locations.iter().flatten().flatten() {
            let arn = crate::iceberg::objects_arn(&self.service.inner.region, l)?;
            request.authorize.authorize_action("s3:PutObject", &[arn])?;
        }
        let svc = &self.service;
        let out = match op {
            "CreateDeliveryStream" => {
                svc.create_delivery_stream_with(input, iceberg_locations)
                    .await?
            }
            "DeleteDeliveryStream" => svc.delete_delivery_stream(input).await?,
            "DescribeDeliveryStream" => svc.describe_delivery_stream(input).await?,
            "ListDeliveryStreams" => svc.list_delivery_streams(input).await?,
            "UpdateDestination" => {
                svc.update_destination_with(input, iceberg_locations)
                    .await?
            }
            "PutRecord" => svc.put_record(input).await?,
            "PutRecordBatch" => svc.put_record_batch(input).await?,
            "TagDeliveryStream" => svc.tag_delivery_stream(input).await?,
            "UntagDeliveryStream" => svc.untag_delivery_stream(input).await?,
            "ListTagsForDeliveryStream" => svc.list_tags_for_delivery_stream(input).await?,
            "StartDeliveryStreamEncryption" => svc.start_delivery_stream_encryption(input).await?,
            _ => svc.stop_delivery_stream_encryption(input).await?,
        };
        let body = serde_json::to_vec(&out).map_err(crate::Error::internal)?;
        Ok(Reply::Json(body))
    }
}

impl ripstream_api::Service for FirehoseApi {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn supports(&self, operation: &str) -> bool {
        OPERATIONS.contains(&operation)
    }

    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a> {
        Box::pin(self.run(request))
    }

    fn start(&self) -> Vec<Task> {
        vec![Box::pin(self.service.background())]
    }
}

/// The reads of a stream-sourced delivery stream on its source.
const KINESIS_SOURCE_ACTIONS: [&str; 4] = [
    "kinesis:DescribeStream",
    "kinesis:GetShardIterator",
    "kinesis:GetRecords",
    "kinesis:ListShards",
];

/// The reads of a Glue table a format conversion makes (what AWS's role for
/// it must allow).
const GLUE_SCHEMA_ACTIONS: [&str; 3] = [
    "glue:GetTable",
    "glue:GetTableVersion",
    "glue:GetTableVersions",
];

/// What an Iceberg destination does to its Glue table (AWS's role for it:
/// read the database and table, move the table's `metadata_location`).
const ICEBERG_GLUE_ACTIONS: [&str; 3] = ["glue:GetDatabase", "glue:GetTable", "glue:UpdateTable"];

/// What a delivery stream configured by `input` will do on the caller's
/// behalf, as (IAM action, resource): `s3:PutObject` into every bucket a
/// destination or backup names (`BucketARN`), the reads of a source
/// stream (`KinesisStreamARN`), `lambda:InvokeFunction` of every Lambda
/// processor (`LambdaArn`), the Glue reads of a conversion's schema
/// (`SchemaConfiguration`) and the Glue reads and update of an Iceberg
/// destination's table (`DestinationDatabaseName` and
/// `DestinationTableName`), wherever in the configuration they appear.
/// (Where an Iceberg table's files go is the table's, not the request's:
/// those buckets are checked once the table is read.)
///
/// Each resource is checked in the one spelling this server stores and
/// acts on, so a policy's Deny cannot be dodged by another spelling: a
/// bucket ARN must be `arn:<partition>:s3:::<bucket>`, a function ARN must
/// name this server's region and account (a function is resolved by name
/// alone), and Glue names are folded as Glue folds them.
/// Every KMSEncryptionConfig.AWSKMSKeyARN of a configuration (the
/// destination's S3 configuration, its backup's).
fn kms_keys(input: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    let mut pending = vec![input];
    while let Some(v) = pending.pop() {
        match v {
            Value::Object(map) => {
                if let Some(k) = map
                    .get("KMSEncryptionConfig")
                    .and_then(|c| c.get("AWSKMSKeyARN"))
                    .and_then(Value::as_str)
                {
                    out.push(k);
                }
                pending.extend(map.values());
            }
            Value::Array(a) => pending.extend(a),
            _ => {}
        }
    }
    out
}

fn deputy_actions(
    input: &Value,
    region: &str,
    account: &str,
) -> Result<Vec<(&'static str, String)>, crate::Error> {
    let partition = ripstream_iam::partition(region);
    let invalid = |m: String| crate::Error::InvalidArgument(m);
    let glue_arn = format!("arn:{partition}:glue:{region}:{account}");
    // Each action on the catalog, the database and the table, names
    // folded as Glue folds them.
    let glue_table =
        |out: &mut Vec<(&'static str, String)>, actions: &[&'static str], db: &str, table: &str| {
            let (db, table) = (db.to_lowercase(), table.to_lowercase());
            for &action in actions {
                out.push((action, format!("{glue_arn}:catalog")));
                out.push((action, format!("{glue_arn}:database/{db}")));
                out.push((action, format!("{glue_arn}:table/{db}/{table}")));
            }
        };
    let mut out = Vec::new();
    let mut pending = vec![input];
    while let Some(v) = pending.pop() {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "BucketARN"
                        && let Some(arn) = v.as_str()
                    {
                        let bucket = arn
                            .strip_prefix(&format!("arn:{partition}:s3:::"))
                            .filter(|b| crate::record::valid_bucket_name(b))
                            .ok_or_else(|| {
                                invalid(format!(
                                    "BucketARN {arn} is not arn:{partition}:s3:::<bucket> with a valid bucket name."
                                ))
                            })?;
                        out.push(("s3:PutObject", format!("arn:{partition}:s3:::{bucket}/*")));
                    }
                    if k == "KinesisStreamARN"
                        && let Some(arn) = v.as_str()
                    {
                        // What AWS's role for a stream source must allow
                        // (the ARN is parsed strictly at create).
                        for action in KINESIS_SOURCE_ACTIONS {
                            out.push((action, arn.to_string()));
                        }
                    }
                    if k == "SchemaConfiguration"
                        && let Some(db) = v.get("DatabaseName").and_then(Value::as_str)
                        && let Some(table) = v.get("TableName").and_then(Value::as_str)
                    {
                        glue_table(&mut out, &GLUE_SCHEMA_ACTIONS, db, table);
                    }
                    pending.push(v);
                }
                if let Some(db) = map.get("DestinationDatabaseName").and_then(Value::as_str)
                    && let Some(table) = map.get("DestinationTableName").and_then(Value::as_str)
                {
                    glue_table(&mut out, &ICEBERG_GLUE_ACTIONS, db, table);
                }
                if map.get("ParameterName").and_then(Value::as_str) == Some("LambdaArn")
                    && let Some(arn) = map.get("ParameterValue").and_then(Value::as_str)
                {
                    let own = format!("arn:{partition}:lambda:{region}:{account}:function:");
                    if !arn.starts_with(&own) || crate::lambda::function_name(arn).is_none() {
                        return Err(invalid(format!(
                            "LambdaArn {arn} is not a function of this server ({own}<name>[:<qualifier>])."
                        )));
                    }
                    out.push(("lambda:InvokeFunction", arn.to_string()));
                }
            }
            Value::Array(items) => pending.extend(items.iter()),
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod deputy_tests {
    use super::*;

    #[test]
    fn every_bucket_and_function_a_configuration_names_is_checked() {
        let input = serde_json::json!({
            "DeliveryStreamName": "d",
            "ExtendedS3DestinationConfiguration": {
                "BucketARN": "arn:aws:s3:::logs",
                "S3BackupConfiguration": {"BucketARN": "arn:aws:s3:::backup"},
                "ProcessingConfiguration": {"Enabled": true, "Processors": [{
                    "Type": "Lambda",
                    "Parameters": [{"ParameterName": "LambdaArn",
                        "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:f"}]
                }]}
            }
        });
        assert_eq!(
            deputy_actions(&input, "us-east-1", "123456789012").unwrap(),
            vec![
                (
                    "lambda:InvokeFunction",
                    "arn:aws:lambda:us-east-1:123456789012:function:f".to_string()
                ),
                ("s3:PutObject", "arn:aws:s3:::backup/*".to_string()),
                ("s3:PutObject", "arn:aws:s3:::logs/*".to_string()),
            ]
        );
        assert!(
            deputy_actions(
                &serde_json::json!({"DeliveryStreamName": "d"}),
                "us-east-1",
                "1"
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn resources_are_checked_in_their_one_spelling() {
        let with =
            |k: &str, v: &str| serde_json::json!({"ExtendedS3DestinationConfiguration": {k: v}});
        for (k, v) in [
            ("BucketARN", "arn:x:s3:::victim"),
            ("BucketARN", "arn:aws:iam::x:s3:::victim"),
            ("BucketARN", "arn:aws:s3:::."),
            ("BucketARN", "arn:aws:s3:::a/b"),
        ] {
            let e = deputy_actions(&with(k, v), "us-east-1", "123456789012").unwrap_err();
            assert_eq!(e.code(), "InvalidArgumentException", "{v}");
        }
        for arn in [
            "arn::lambda:::function:secret",
            "arn:aws:lambda:eu-west-1:123456789012:function:secret",
            "arn:aws:lambda:us-east-1:999999999999:function:secret",
        ] {
            let input = serde_json::json!({"Processors": [{"Parameters": [
                {"ParameterName": "LambdaArn", "ParameterValue": arn}]}]});
            assert!(
                deputy_actions(&input, "us-east-1", "123456789012").is_err(),
                "{arn}"
            );
        }
        let input = serde_json::json!({"DataFormatConversionConfiguration": {
            "SchemaConfiguration": {"DatabaseName": "Logs", "TableName": "Events"}}});
        let got = deputy_actions(&input, "us-east-1", "123456789012").unwrap();
        assert!(got.contains(&(
            "glue:GetTable",
            "arn:aws:glue:us-east-1:123456789012:table/logs/events".to_string()
        )));
        assert_eq!(got.len(), 9);
    }

    #[test]
    fn an_iceberg_tables_glue_reads_and_update_are_checked() {
        let input = serde_json::json!({"IcebergDestinationConfiguration": {
            "DestinationTableConfigurationList": [
                {"DestinationDatabaseName": "Lake", "DestinationTableName": "Events"}],
            "S3Configuration": {"BucketARN": "arn:aws:s3:::errors"}}});
        let got = deputy_actions(&input, "us-east-1", "123456789012").unwrap();
        let glue = "arn:aws:glue:us-east-1:123456789012";
        for action in ["glue:GetDatabase", "glue:GetTable", "glue:UpdateTable"] {
            for resource in ["catalog", "database/lake", "table/lake/events"] {
                assert!(
                    got.contains(&(action, format!("{glue}:{resource}"))),
                    "{action} {resource}: {got:?}"
                );
            }
        }
        assert!(got.contains(&("s3:PutObject", "arn:aws:s3:::errors/*".to_string())));
        assert_eq!(got.len(), 10);
    }
}
