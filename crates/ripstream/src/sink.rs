//! Firehose's deliveries into the embedded object store: the binary bridges
//! the two crates, so neither depends on the other.

use bytes::Bytes;
use ripstream_firehose::sink::BoxFuture;
use ripstream_firehose::{ObjectSink, SinkError};
use ripstream_objects::{Objects, ObjectsError};

/// Delivered objects go through [`Objects::put_object`], as S3 PutObject's
/// do: fsynced before the delivery engine moves its checkpoint, with their
/// ETag recorded, and seen at once by the S3 API.
#[derive(Debug, Clone)]
pub struct EmbeddedObjects(Objects);

impl EmbeddedObjects {
    pub fn new(objects: Objects) -> EmbeddedObjects {
        EmbeddedObjects(objects)
    }
}

impl ObjectSink for EmbeddedObjects {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            match self.0.put_object(bucket, key, body).await {
                Ok(_) => Ok(()),
                Err(ObjectsError::NoSuchBucket { .. } | ObjectsError::InvalidBucketName { .. }) => {
                    Err(SinkError::NoSuchBucket(bucket.to_string()))
                }
                Err(e @ (ObjectsError::InvalidArgument(_) | ObjectsError::KeyTooLong)) => {
                    Err(SinkError::InvalidKey {
                        key: key.to_string(),
                        message: e.to_string(),
                    })
                }
                Err(e) => Err(SinkError::Write {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    source: Box::new(e),
                }),
            }
        })
    }
}
