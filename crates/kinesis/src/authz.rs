//! What each operation acts on, for authorization.
//!
//! The resources are derived from the same typed, validated input the
//! operation then executes, with the same resolution rules (see
//! [`crate::arn`]), so the resource a policy is evaluated on is the resource
//! the request reaches. Members the service model does not define for an
//! operation never reach the typed input, so they can neither route nor
//! authorize a request.
//!
//! | operation | resource |
//! |---|---|
//! | stream operations (`StreamName`/`StreamARN`; both must name one stream) | the stream |
//! | PutRecord, PutRecords, GetShardIterator | the stream |
//! | GetRecords | the stream of the `ShardIterator` (`StreamARN`, if given, must be the same) |
//! | ListShards | the stream named, or the one the signed `NextToken` pages through |
//! | RegisterStreamConsumer, ListStreamConsumers | the stream of `StreamARN` |
//! | DescribeStreamConsumer, DeregisterStreamConsumer | the consumer (`ConsumerARN`, or `StreamARN` + `ConsumerName`; all given must agree) |
//! | SubscribeToShard | the consumer of `ConsumerARN` |
//! | Tag/UntagResource, ListTagsForResource, Put/Get/DeleteResourcePolicy | the stream or consumer of `ResourceARN` |
//! | ListStreams, DescribeLimits, DescribeAccountSettings, UpdateAccountSettings | `*` (the account) |

use crate::arn::KinesisArn;
use crate::types::*;
use crate::{Error, Inner, Result, Service};

/// The canonical ARNs of what a request acts on (`*` for the account).
pub trait Resources {
    /// Never empty: an operation that names nothing is refused, not allowed.
    fn resources(&self, svc: &Service) -> Result<Vec<String>>;
}

impl Service {
    /// The canonical ARNs a typed request acts on, as IAM evaluates them.
    pub fn resources(&self, input: &impl Resources) -> Result<Vec<String>> {
        let out = input.resources(self)?;
        if out.is_empty() {
            return Err(Error::AccessDenied(
                "The request names no resource to authorize.".into(),
            ));
        }
        Ok(out)
    }
}

impl Inner {
    fn stream_resource(&self, name: Option<&str>, arn: Option<&str>) -> Result<Vec<String>> {
        let name = self.resolve_name(name, arn)?;
        Ok(vec![self.stream_arn(&name)])
    }

    /// A `ResourceARN` or `ConsumerARN`, canonical. A consumer's ARN names it
    /// exactly (name and creation second), so the canonical form is the ARN
    /// of the consumer the operation will find, or of none.
    fn arn_resource(&self, arn: &str, what: &str) -> Result<Vec<String>> {
        let scope = self.arn_scope();
        Ok(vec![scope.canonical(&scope.parse(arn, what)?)])
    }
}

fn account() -> Result<Vec<String>> {
    Ok(vec!["*".to_string()])
}

macro_rules! stream_ref_inputs {
    ($($ty:ty),* $(,)?) => {$(
        impl Resources for $ty {
            fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
                svc.stream_resource(self.stream.stream_name.as_deref(), self.stream.stream_arn.as_deref())
            }
        }
    )*};
}

stream_ref_inputs!(
    DeleteStreamInput,
    DescribeStreamInput,
    DescribeStreamSummaryInput,
    RetentionInput,
    UpdateMaxRecordSizeInput,
    UpdateStreamModeInput,
    EnhancedMonitoringInput,
    AddTagsToStreamInput,
    RemoveTagsFromStreamInput,
    ListTagsForStreamInput,
    GetShardIteratorInput,
    SplitShardInput,
    MergeShardsInput,
    UpdateShardCountInput,
    UpdateStreamWarmThroughputInput,
    UpdateStreamRecordDistributionStrategyInput,
    StreamEncryptionInput,
);

impl Resources for CreateStreamInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.stream_resource(Some(&self.stream_name), None)
    }
}

impl Resources for PutRecordInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.stream_resource(self.stream_name.as_deref(), self.stream_arn.as_deref())
    }
}

impl Resources for PutRecordsInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.stream_resource(self.stream_name.as_deref(), self.stream_arn.as_deref())
    }
}

impl Resources for GetRecordsInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        // An expired iterator still names its stream: authorize that, and let
        // the operation answer ExpiredIteratorException.
        let token = svc
            .iterators
            .decode_any_age(&self.shard_iterator)
            .map_err(|_| Error::InvalidArgument("Invalid ShardIterator.".into()))?;
        if let Some(arn) = &self.stream_arn
            && svc.name_from_stream_arn(arn)? != token.stream_name
        {
            return Err(Error::InvalidArgument(format!(
                "StreamARN {arn} does not match the stream of the ShardIterator."
            )));
        }
        Ok(vec![svc.stream_arn(&token.stream_name)])
    }
}

impl Resources for ListShardsInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        match &self.next_token {
            // With a token, the other stream members are refused by the
            // operation; the token alone says which stream is listed.
            Some(token)
                if self.stream.stream_name.is_none() && self.stream.stream_arn.is_none() =>
            {
                Ok(vec![svc.stream_arn(&svc.list_shards_token(token)?.s)])
            }
            _ => svc.stream_resource(
                self.stream.stream_name.as_deref(),
                self.stream.stream_arn.as_deref(),
            ),
        }
    }
}

impl Resources for RegisterStreamConsumerInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.stream_resource(None, Some(&self.stream_arn))
    }
}

impl Resources for ListStreamConsumersInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.stream_resource(None, Some(&self.stream_arn))
    }
}

impl Resources for ConsumerRef {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        // Resolved exactly as the operation resolves it (every member given
        // must agree); a consumer that does not exist is not found before
        // anything is authorized on it.
        let (s, c) = svc.resolve_consumer(self)?;
        Ok(vec![svc.consumer_arn(&s.rec.name, &c)])
    }
}

impl Resources for SubscribeToShardInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        match svc.arn_scope().parse(&self.consumer_arn, "ConsumerARN")? {
            KinesisArn::Consumer { .. } => svc.arn_resource(&self.consumer_arn, "ConsumerARN"),
            KinesisArn::Stream { .. } => Err(Error::InvalidArgument(format!(
                "Invalid ConsumerARN {}.",
                self.consumer_arn
            ))),
        }
    }
}

impl Resources for TagResourceInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.arn_resource(&self.resource_arn, "ResourceARN")
    }
}

impl Resources for UntagResourceInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.arn_resource(&self.resource_arn, "ResourceARN")
    }
}

impl Resources for ListTagsForResourceInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.arn_resource(&self.resource_arn, "ResourceARN")
    }
}

impl Resources for PutResourcePolicyInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.arn_resource(&self.resource_arn, "ResourceARN")
    }
}

impl Resources for ResourceArnInput {
    fn resources(&self, svc: &Service) -> Result<Vec<String>> {
        let svc = svc.inner();
        svc.arn_resource(&self.resource_arn, "ResourceARN")
    }
}

impl Resources for ListStreamsInput {
    fn resources(&self, _: &Service) -> Result<Vec<String>> {
        account()
    }
}

impl Resources for Empty {
    fn resources(&self, _: &Service) -> Result<Vec<String>> {
        account()
    }
}

impl Resources for UpdateAccountSettingsInput {
    fn resources(&self, _: &Service) -> Result<Vec<String>> {
        account()
    }
}
