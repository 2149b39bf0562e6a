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
