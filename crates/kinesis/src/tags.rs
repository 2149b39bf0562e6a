//! Stream tags: AddTagsToStream, RemoveTagsFromStream, ListTagsForStream and
//! the resource-ARN variants TagResource, UntagResource, ListTagsForResource.

use std::collections::BTreeMap;

use crate::types::*;
use ripstream_meta::StreamRecord;

use crate::{Error, Inner, Result, Service};

/// Most tags a stream can carry.
pub(crate) const MAX_TAGS: usize = 50;

fn valid_tag_text(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@%".contains(c)
    })
}

const INVALID_TAG_CHARS: &str = "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, _ . / = + - % @.";

/// Checks the characters of tag keys (and values): AWS names `%` among the
/// valid characters in one message and then refuses it with another.
fn check_tag_chars<'a>(
    inner: &Inner,
    stream: &str,
    verb: &str,
    texts: impl Iterator<Item = &'a str> + Clone,
) -> Result<()> {
    if texts.clone().any(|t| !valid_tag_text(t)) {
        return Err(Error::InvalidArgument(INVALID_TAG_CHARS.into()));
    }
    if texts.clone().any(|t| t.contains('%')) {
        return Err(Error::InvalidArgument(format!(
            "Failed to {verb} tags {} stream {stream} under account {} because some tags contained illegal characters. The allowed characters are Unicode letters, white-spaces, '_',',','/','=','+','-','@'.",
            if verb == "add" { "to" } else { "from" },
            inner.cfg.account_id
        )));
    }
    Ok(())
}

/// Checks tags about to be added to a stream that already has `existing`.
pub(crate) fn validate_new_tags(
    inner: &Inner,
    stream: &str,
    existing: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Result<()> {
    check_tag_chars(
        inner,
        stream,
        "add",
        new.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]),
    )?;
    let total = existing.len() + new.keys().filter(|k| !existing.contains_key(*k)).count();
    if total > MAX_TAGS {
        return Err(Error::InvalidArgument(format!(
            "Failed to add tags to stream {stream} under account {} because a given stream cannot have more than {MAX_TAGS} tags associated with it.",
            inner.cfg.account_id
        )));
    }
    Ok(())
}

fn tag_list(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag {
            key: k.clone(),
            value: Some(v.clone()),
        })
        .collect()
}

impl Inner {
    /// The stream behind a resource ARN, and the consumer if it names one.
    fn resource(&self, arn: &str) -> Result<(StreamRef, Option<(String, i64)>)> {
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
        Ok((
            StreamRef {
                stream_name: Some(name),
                stream_arn: None,
            },
            None,
        ))
    }

    /// The tags of a stream, or of one of its consumers.
    fn tags_of<'a>(
        rec: &'a mut StreamRecord,
        consumer: Option<&(String, i64)>,
    ) -> Option<&'a mut BTreeMap<String, String>> {
        match consumer {
            None => Some(&mut rec.tags),
            Some((name, created_ms)) => rec
                .consumers
                .iter_mut()
                .rev()
                .find(|c| c.name == *name && c.created_ms == *created_ms)
                .map(|c| &mut c.tags),
        }
    }

    async fn add_tags(
        &self,
        stream: &StreamRef,
        consumer: Option<&(String, i64)>,
        tags: BTreeMap<String, String>,
    ) -> Result<()> {
        self.mutate(stream, true, |rec, _| {
            let name = rec.name.clone();
            let target = Self::tags_of(rec, consumer)
                .ok_or_else(|| Error::ResourceNotFound("Consumer not found.".into()))?;
            validate_new_tags(self, &name, target, &tags)?;
            target.extend(tags);
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn remove_tags(
        &self,
        stream: &StreamRef,
        consumer: Option<&(String, i64)>,
        keys: &[String],
    ) -> Result<()> {
        self.mutate(stream, true, |rec, _| {
            check_tag_chars(self, &rec.name, "remove", keys.iter().map(String::as_str))?;
            let target = Self::tags_of(rec, consumer)
                .ok_or_else(|| Error::ResourceNotFound("Consumer not found.".into()))?;
            for k in keys {
                target.remove(k);
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
}

impl Service {
    /// AddTagsToStream.
    pub async fn add_tags_to_stream(&self, input: AddTagsToStreamInput) -> Result<Empty> {
        self.inner()
            .add_tags(&input.stream, None, input.tags)
            .await?;
        Ok(Empty {})
    }

    /// RemoveTagsFromStream.
    pub async fn remove_tags_from_stream(&self, input: RemoveTagsFromStreamInput) -> Result<Empty> {
        self.inner()
            .remove_tags(&input.stream, None, &input.tag_keys)
            .await?;
        Ok(Empty {})
    }

    /// ListTagsForStream.
    pub async fn list_tags_for_stream(
        &self,
        input: ListTagsForStreamInput,
    ) -> Result<ListTagsForStreamOutput> {
        let inner = self.inner();
        let s = inner.lookup_ref(
            input.stream.stream_name.as_deref(),
            input.stream.stream_arn.as_deref(),
        )?;
        let limit = input.limit.map_or(usize::MAX, |l| l.max(1) as usize);
        let mut tags: Vec<Tag> = tag_list(&s.rec.tags)
            .into_iter()
            .filter(|t| {
                input
                    .exclusive_start_tag_key
                    .as_ref()
                    .is_none_or(|k| t.key.as_str() > k.as_str())
            })
            .collect();
        let has_more = tags.len() > limit;
        tags.truncate(limit);
        Ok(ListTagsForStreamOutput {
            tags,
            has_more_tags: has_more,
        })
    }

    /// TagResource.
    pub async fn tag_resource(&self, input: TagResourceInput) -> Result<Empty> {
        let (stream, consumer) = self.inner().resource(&input.resource_arn)?;
        self.inner()
            .add_tags(&stream, consumer.as_ref(), input.tags)
            .await?;
        Ok(Empty {})
    }

    /// UntagResource.
    pub async fn untag_resource(&self, input: UntagResourceInput) -> Result<Empty> {
        let (stream, consumer) = self.inner().resource(&input.resource_arn)?;
        self.inner()
            .remove_tags(&stream, consumer.as_ref(), &input.tag_keys)
            .await?;
        Ok(Empty {})
    }

    /// ListTagsForResource.
    pub async fn list_tags_for_resource(
        &self,
        input: ListTagsForResourceInput,
    ) -> Result<ListTagsForResourceOutput> {
        let inner = self.inner();
        let (stream, consumer) = inner.resource(&input.resource_arn)?;
        let s = inner.lookup_ref(stream.stream_name.as_deref(), None)?;
        let mut rec = s.rec.clone();
        let tags = Inner::tags_of(&mut rec, consumer.as_ref())
            .map(|t| tag_list(t))
            .unwrap_or_default();
        Ok(ListTagsForResourceOutput { tags })
    }
}
