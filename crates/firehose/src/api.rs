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
            for (action, resource) in deputy_actions(&input) {
                request.authorize.authorize_action(action, &[resource])?;
            }
        }
        let svc = &self.service;
        let out = match op {
            "CreateDeliveryStream" => svc.create_delivery_stream(input).await?,
            "DeleteDeliveryStream" => svc.delete_delivery_stream(input).await?,
            "DescribeDeliveryStream" => svc.describe_delivery_stream(input).await?,
            "ListDeliveryStreams" => svc.list_delivery_streams(input).await?,
            "UpdateDestination" => svc.update_destination(input).await?,
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

/// What a delivery stream configured by `input` will do on the caller's
/// behalf, as (IAM action, resource): `s3:PutObject` into every bucket a
/// destination or backup names (`BucketARN`), the reads of a source
/// stream (`KinesisStreamARN`), and `lambda:InvokeFunction`
/// of every Lambda processor (`LambdaArn`), wherever in the configuration
/// they appear.
fn deputy_actions(input: &Value) -> Vec<(&'static str, String)> {
    fn walk(v: &Value, out: &mut Vec<(&'static str, String)>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "BucketARN"
                        && let Some(arn) = v.as_str()
                    {
                        out.push(("s3:PutObject", format!("{arn}/*")));
                    }
                    if k == "KinesisStreamARN"
                        && let Some(arn) = v.as_str()
                    {
                        // What AWS's role for a stream source must allow.
                        for action in KINESIS_SOURCE_ACTIONS {
                            out.push((action, arn.to_string()));
                        }
                    }
                    walk(v, out);
                }
                if map.get("ParameterName").and_then(Value::as_str) == Some("LambdaArn")
                    && let Some(arn) = map.get("ParameterValue").and_then(Value::as_str)
                {
                    out.push(("lambda:InvokeFunction", arn.to_string()));
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(input, &mut out);
    out.sort();
    out.dedup();
    out
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
            deputy_actions(&input),
            vec![
                (
                    "lambda:InvokeFunction",
                    "arn:aws:lambda:us-east-1:123456789012:function:f".to_string()
                ),
                ("s3:PutObject", "arn:aws:s3:::backup/*".to_string()),
                ("s3:PutObject", "arn:aws:s3:::logs/*".to_string()),
            ]
        );
        assert!(deputy_actions(&serde_json::json!({"DeliveryStreamName": "d"})).is_empty());
    }
}
