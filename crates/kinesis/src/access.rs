//! Resource policies (PutResourcePolicy, GetResourcePolicy,
//! DeleteResourcePolicy) and what the front door needs to authorize a call:
//! the ARN a request acts on, and that resource's policy.

use ripstream_meta::StreamRecord;
use serde_json::Value;

use crate::policy::Policy;
use crate::types::*;
use crate::{Error, Inner, Result, Service};

impl Inner {
    /// The stream and, for a consumer ARN, the consumer name a resource ARN names.
    fn policy_target(&self, arn: &str) -> Result<(StreamRef, Option<String>)> {
        if arn.contains("/consumer/") {
            let (s, c) = self.resolve_consumer(&ConsumerRef {
                consumer_arn: Some(arn.to_string()),
                ..Default::default()
            })?;
            return Ok((
                StreamRef {
                    stream_name: Some(s.rec.name.clone()),
                    stream_arn: None,
                },
                Some(c.name),
            ));
        }
        let name = self.name_from_stream_arn(arn)?;
        self.lookup(&name)?;
        Ok((
            StreamRef {
                stream_name: Some(name),
                stream_arn: None,
            },
            None,
        ))
    }

    fn policy_slot<'a>(
        rec: &'a mut StreamRecord,
        consumer: Option<&str>,
    ) -> Option<&'a mut Option<String>> {
        match consumer {
            None => Some(&mut rec.policy),
            Some(name) => rec
                .consumers
                .iter_mut()
                .rev()
                .find(|c| c.name == name)
                .map(|c| &mut c.policy),
        }
    }
}

impl Service {
    /// PutResourcePolicy.
    pub async fn put_resource_policy(&self, input: PutResourcePolicyInput) -> Result<Empty> {
        let inner = self.inner();
        let parsed = Policy::parse(&input.policy)
            .map_err(|e| Error::InvalidArgument(format!("Invalid policy: {e}")))?;
        if !parsed.is_resource_policy() {
            return Err(Error::InvalidArgument(
                "Invalid policy: every statement of a resource policy must name a Principal."
                    .into(),
            ));
        }
        let (stream, consumer) = inner.policy_target(&input.resource_arn)?;
        inner
            .mutate(&stream, true, |rec, _| {
                let slot = Inner::policy_slot(rec, consumer.as_deref())
                    .ok_or_else(|| Error::ResourceNotFound("Consumer not found.".into()))?;
                *slot = Some(input.policy.clone());
                Ok(())
            })
            .await?;
        Ok(Empty {})
    }

    /// GetResourcePolicy: the policy document, or `{}` when there is none.
    pub async fn get_resource_policy(
        &self,
        input: ResourceArnInput,
    ) -> Result<GetResourcePolicyOutput> {
        let policy = self.resource_policy_text(&input.resource_arn)?;
        Ok(GetResourcePolicyOutput {
            policy: policy.unwrap_or_else(|| "{}".into()),
        })
    }

    /// DeleteResourcePolicy.
    pub async fn delete_resource_policy(&self, input: ResourceArnInput) -> Result<Empty> {
        let inner = self.inner();
        let (stream, consumer) = inner.policy_target(&input.resource_arn)?;
        inner
            .mutate(&stream, true, |rec, _| {
                if let Some(slot) = Inner::policy_slot(rec, consumer.as_deref()) {
                    *slot = None;
                }
                Ok(())
            })
            .await?;
        Ok(Empty {})
    }

    fn resource_policy_text(&self, arn: &str) -> Result<Option<String>> {
        let inner = self.inner();
        let (stream, consumer) = inner.policy_target(arn)?;
        let s = inner.lookup_ref(stream.stream_name.as_deref(), None)?;
        let mut rec = s.rec.clone();
        Ok(Inner::policy_slot(&mut rec, consumer.as_deref()).and_then(|p| p.clone()))
    }

    /// The policy attached to a stream or consumer ARN, for authorization.
    pub fn resource_policy(&self, arn: &str) -> Option<Policy> {
        let text = self.resource_policy_text(arn).ok().flatten()?;
        Policy::parse(&text).ok()
    }

    /// The ARN a request acts on, as IAM evaluates it: the consumer for
    /// consumer operations, the stream for stream operations (for GetRecords,
    /// the stream of its iterator), `*` for account-wide ones.
    pub fn request_resource(&self, op: &str, body: &Value) -> String {
        let inner = self.inner();
        let s = |k: &str| body.get(k).and_then(Value::as_str);
        if let Some(arn) = s("ConsumerARN").or(s("ResourceARN")) {
            return arn.to_string();
        }
        if matches!(op, "DescribeStreamConsumer" | "DeregisterStreamConsumer")
            && let (Some(stream_arn), Some(name)) = (s("StreamARN"), s("ConsumerName"))
        {
            let r = ConsumerRef {
                stream_arn: Some(stream_arn.to_string()),
                consumer_name: Some(name.to_string()),
                consumer_arn: None,
            };
            return match inner.resolve_consumer(&r) {
                Ok((st, c)) => inner.consumer_arn(&st.rec.name, &c),
                Err(_) => format!("{stream_arn}/consumer/{name}"),
            };
        }
        if let Some(arn) = s("StreamARN") {
            return arn.to_string();
        }
        if let Some(name) = s("StreamName") {
            return inner.stream_arn(name);
        }
        if op == "GetRecords"
            && let Some(t) =
                s("ShardIterator").and_then(|it| inner.iterators.decode_any_age(it).ok())
        {
            return inner.stream_arn(&t.stream_name);
        }
        "*".into()
    }
}
