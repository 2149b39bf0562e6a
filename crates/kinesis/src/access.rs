//! Resource policies (PutResourcePolicy, GetResourcePolicy,
//! DeleteResourcePolicy) and what the front door needs to authorize a call:
//! the ARN a request acts on, and that resource's policy.

use std::collections::HashMap;
use std::sync::Arc;

use ripstream_meta::StreamRecord;

use crate::arn::KinesisArn;
use crate::types::*;
use crate::{Error, Inner, Result, Service};
use ripstream_iam::Policy;

/// Largest resource policy document, in bytes (AWS's quota for resource-based
/// policies; the service model sets no length).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// A stream's and its consumers' resource policies, parsed.
#[derive(Debug, Default)]
pub(crate) struct ParsedPolicies {
    stream: Option<Arc<Policy>>,
    /// By consumer name and creation second, as the consumer's ARN names it.
    consumers: HashMap<(String, i64), Arc<Policy>>,
}

impl ParsedPolicies {
    pub(crate) fn of(rec: &StreamRecord) -> ParsedPolicies {
        // Documents were checked when they were put; one that no longer
        // parses (written by a version with other rules) fails closed, so a
        // Deny it held is never lost.
        let parse = |text: &Option<String>| {
            text.as_deref().map(|t| {
                Arc::new(Policy::parse(t).unwrap_or_else(|e| {
                    tracing::error!(stream = %rec.name, error = %e, "a stored resource policy no longer parses: denying access until it is replaced");
                    Policy::deny_all_but_policy_management()
                }))
            })
        };
        ParsedPolicies {
            stream: parse(&rec.policy),
            consumers: rec
                .consumers
                .iter()
                .filter_map(|c| {
                    Some((
                        (c.name.clone(), c.created_ms.div_euclid(1000)),
                        parse(&c.policy)?,
                    ))
                })
                .collect(),
        }
    }
}

impl Inner {
    /// The stream and, for a consumer ARN, the consumer name a resource ARN names.
    fn policy_target(&self, arn: &str) -> Result<(StreamRef, Option<(String, i64)>)> {
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
                Some((c.name, c.created_ms)),
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
        consumer: Option<&(String, i64)>,
    ) -> Option<&'a mut Option<String>> {
        match consumer {
            None => Some(&mut rec.policy),
            Some((name, created_ms)) => rec
                .consumers
                .iter_mut()
                .rev()
                .find(|c| c.name == *name && c.created_ms == *created_ms)
                .map(|c| &mut c.policy),
        }
    }
}

impl Service {
    /// PutResourcePolicy.
    pub async fn put_resource_policy(&self, input: PutResourcePolicyInput) -> Result<Empty> {
        let inner = self.inner();
        if input.policy.len() > MAX_POLICY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "Invalid policy: the document is {} bytes; a resource policy can have at most {MAX_POLICY_BYTES}.",
                input.policy.len()
            )));
        }
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
                let slot = Inner::policy_slot(rec, consumer.as_ref())
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
                if let Some(slot) = Inner::policy_slot(rec, consumer.as_ref()) {
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
        Ok(Inner::policy_slot(&mut rec, consumer.as_ref()).and_then(|p| p.clone()))
    }

    /// The policy attached to a stream or consumer, by its canonical ARN, for
    /// authorization. Parsed once per catalog change, not per request.
    pub fn resource_policy(&self, arn: &str) -> Option<Arc<Policy>> {
        let inner = self.inner();
        let (stream, consumer) = match inner.arn_scope().parse(arn, "ResourceARN").ok()? {
            KinesisArn::Stream { stream } => (stream, None),
            KinesisArn::Consumer {
                stream,
                consumer,
                created_secs,
            } => (stream, Some((consumer, created_secs))),
        };
        let s = inner.lookup(&stream).ok()?;
        match consumer {
            None => s.policies.stream.clone(),
            Some(key) => s.policies.consumers.get(&key).cloned(),
        }
    }
}
