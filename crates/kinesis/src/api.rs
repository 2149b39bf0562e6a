//! Data Streams behind the front door: the operation table, the service's
//! [`Spec`], and its errors as wire errors.
//!
//! Each operation decodes its typed input from the validated JSON form,
//! asks the front door to authorize the resources that typed input names
//! (the table in [`crate::authz`]), runs, and answers its output in JSON
//! form; the front door's codec turns that into the client's protocol.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::StatusCode;
use ripstream_api::{BoxError, CallFuture, EventStream, Reply, Request, Spec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::consumers::SubscriptionItem;
use crate::{Error, Service};

/// The vendored botocore model of Kinesis Data Streams.
pub static MODEL: &str = include_str!("../model/kinesis-2013-12-02.json");

impl ripstream_api::ServiceError for Error {
    fn code(&self) -> &'static str {
        Error::code(self)
    }

    fn status(&self) -> StatusCode {
        if self.is_server_fault() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        }
    }
}

/// The Data Streams service as the front door mounts it.
#[derive(Debug, Clone)]
pub struct KinesisApi {
    service: Service,
    spec: Arc<Spec>,
}

impl KinesisApi {
    pub fn new(service: Service) -> KinesisApi {
        let mut spec = Spec::from_model(MODEL, "kinesis").expect("the vendored model has metadata");
        // The AWS SDK for Java v2 speaks CBOR to Kinesis by default.
        spec.cbor = true;
        KinesisApi {
            service,
            spec: Arc::new(spec),
        }
    }

    pub fn service(&self) -> &Service {
        &self.service
    }
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, BoxError> {
    serde_json::from_value(value).map_err(|e| {
        Box::new(ripstream_api::Refused {
            code: "SerializationException",
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
        }) as BoxError
    })
}

fn encode<T: Serialize + 'static>(out: &T) -> Result<Reply, BoxError> {
    // Operations without output members answer with an empty body, as AWS does.
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<crate::types::Empty>() {
        return Ok(Reply::Empty);
    }
    serde_json::to_vec(out).map(Reply::Json).map_err(|e| {
        Box::new(Error::failed(
            format!("could not encode the response: {e}"),
            e,
        )) as BoxError
    })
}

fn get_records(out: crate::types::GetRecordsOutput) -> Result<Reply, BoxError> {
    // The hottest response has its own encoder (same JSON, less work).
    crate::fastjson::get_records(&out)
        .map(Reply::Json)
        .map_err(|e| {
            Box::new(Error::Internal(format!(
                "could not encode the response: {e}"
            ))) as BoxError
        })
}

/// The pushes of one subscription as the front door streams them.
struct Subscription(mpsc::Receiver<SubscriptionItem>);

impl futures_core::Stream for Subscription {
    type Item = Result<(&'static str, Value), BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|item| {
            item.map(|r| match r {
                Ok(event) => serde_json::to_value(&event)
                    .map(|v| ("SubscribeToShardEvent", v))
                    .map_err(|e| Box::new(Error::failed(e.to_string(), e)) as BoxError),
                Err(e) => Err(Box::new(e) as BoxError),
            })
        })
    }
}

macro_rules! operations {
    ($($name:literal => $method:ident $(as $encode:ident)?),* $(,)?) => {
        /// The operations this service serves, as the model names them.
        pub const OPERATIONS: &[&str] = &[$($name,)* "SubscribeToShard"];

        impl KinesisApi {
            async fn run(&self, request: Request<'_>) -> Result<Reply, BoxError> {
                let svc = &self.service;
                match request.operation {
                    $($name => {
                        let input = decode(request.input)?;
                        request.authorize.authorize(&svc.resources(&input)?)?;
                        operations!(@encode $($encode)?)(svc.$method(input).await?)
                    })*
                    "SubscribeToShard" => {
                        let input: crate::types::SubscribeToShardInput = decode(request.input)?;
                        request.authorize.authorize(&svc.resources(&input)?)?;
                        // A subscription streams for minutes: the front door's
                        // in-flight slot stays taken until it ends.
                        let events = svc.subscribe_to_shard_holding(input, request.slot).await?;
                        let stream: EventStream = Box::pin(Subscription(events));
                        Ok(Reply::Events(stream))
                    }
                    other => Err(Box::new(ripstream_api::Refused {
                        code: "UnknownOperationException",
                        status: StatusCode::BAD_REQUEST,
                        message: format!("Operation {other} is not supported by this version of Ripstream."),
                    })),
                }
            }
        }
    };
    (@encode) => { |out| encode(&out) };
    (@encode $f:ident) => { $f };
}

operations! {
    "CreateStream" => create_stream,
    "DeleteStream" => delete_stream,
    "DescribeStream" => describe_stream,
    "DescribeStreamSummary" => describe_stream_summary,
    "ListStreams" => list_streams,
    "ListShards" => list_shards,
    "PutRecord" => put_record,
    "PutRecords" => put_records,
    "GetShardIterator" => get_shard_iterator,
    "GetRecords" => get_records as get_records,
    "IncreaseStreamRetentionPeriod" => increase_stream_retention_period,
    "DecreaseStreamRetentionPeriod" => decrease_stream_retention_period,
    "UpdateMaxRecordSize" => update_max_record_size,
    "UpdateStreamMode" => update_stream_mode,
    "EnableEnhancedMonitoring" => enable_enhanced_monitoring,
    "DisableEnhancedMonitoring" => disable_enhanced_monitoring,
    "DescribeLimits" => describe_limits,
    "AddTagsToStream" => add_tags_to_stream,
    "RemoveTagsFromStream" => remove_tags_from_stream,
    "ListTagsForStream" => list_tags_for_stream,
    "TagResource" => tag_resource,
    "UntagResource" => untag_resource,
    "ListTagsForResource" => list_tags_for_resource,
    "SplitShard" => split_shard,
    "MergeShards" => merge_shards,
    "UpdateShardCount" => update_shard_count,
    "UpdateStreamWarmThroughput" => update_stream_warm_throughput,
    "UpdateStreamRecordDistributionStrategy" => update_stream_record_distribution_strategy,
    "DescribeAccountSettings" => describe_account_settings,
    "UpdateAccountSettings" => update_account_settings,
    "RegisterStreamConsumer" => register_stream_consumer,
    "DescribeStreamConsumer" => describe_stream_consumer,
    "ListStreamConsumers" => list_stream_consumers,
    "DeregisterStreamConsumer" => deregister_stream_consumer,
    "PutResourcePolicy" => put_resource_policy,
    "GetResourcePolicy" => get_resource_policy,
    "DeleteResourcePolicy" => delete_resource_policy,
    "StartStreamEncryption" => start_stream_encryption,
    "StopStreamEncryption" => stop_stream_encryption,
}

impl ripstream_api::Service for KinesisApi {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn supports(&self, operation: &str) -> bool {
        OPERATIONS.contains(&operation)
    }

    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a> {
        Box::pin(self.run(request))
    }

    fn resource_policy(&self, arn: &str) -> Option<Arc<ripstream_iam::Policy>> {
        self.service.resource_policy(arn)
    }

    fn start(&self) -> Vec<ripstream_api::Task> {
        vec![Box::pin(self.service.background())]
    }

    fn unavailable(&self) -> Vec<String> {
        self.service.damaged_streams()
    }
}
