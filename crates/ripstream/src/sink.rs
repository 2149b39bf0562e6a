//! Firehose's deliveries into the embedded object store: the binary bridges
//! the two crates, so neither depends on the other.

use bytes::Bytes;
use ripstream_firehose::sink::BoxFuture;
use ripstream_firehose::{ObjectSink, SinkError};
use ripstream_objects::{Objects, ObjectsError, PutOptions, Sse};

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

impl EmbeddedObjects {
    async fn store(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        kms_key: Option<&str>,
    ) -> Result<(), SinkError> {
        let opts = PutOptions {
            sse: kms_key.map(|k| Sse::Kms(Some(k.to_string()))),
            ..PutOptions::default()
        };
        match self.0.put_with(bucket, key, body, opts).await {
            Ok(_) => Ok(()),
            // A key disabled or removed since the stream was configured:
            // retried until it is usable again, as AWS does.
            Err(e @ (ObjectsError::KmsNotFound(_) | ObjectsError::KmsDisabled(_))) => {
                Err(SinkError::Kms {
                    code: ripstream_api::ServiceError::code(&e),
                    message: e.to_string(),
                })
            }
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
    }
}

impl ObjectSink for EmbeddedObjects {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.store(bucket, key, body, None))
    }

    fn put_encrypted<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
        kms_key: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.store(bucket, key, body, Some(kms_key)))
    }
}

/// Deliveries into an external S3-compatible store (`[object_store]
/// endpoint`), through the `object_store` crate's S3 client: one client
/// per bucket, made on first use. The put is acknowledged by the store, so
/// its durability is the store's; the engine retries failures itself, so
/// the client's own retries are few.
pub struct ExternalS3 {
    endpoint: String,
    region: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    /// One client per bucket and SSE-KMS key (object_store sets SSE on
    /// the client, not per request).
    #[allow(clippy::type_complexity)]
    buckets: parking_lot::Mutex<
        std::collections::HashMap<
            (String, Option<String>),
            std::sync::Arc<object_store::aws::AmazonS3>,
        >,
    >,
}

// Written out so the secret key can never reach a log line.
impl std::fmt::Debug for ExternalS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalS3")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl ExternalS3 {
    pub fn new(
        endpoint: String,
        region: String,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    ) -> ExternalS3 {
        ExternalS3 {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            buckets: Default::default(),
        }
    }

    fn store(
        &self,
        bucket: &str,
        kms_key: Option<&str>,
    ) -> Result<std::sync::Arc<object_store::aws::AmazonS3>, object_store::Error> {
        let id = (bucket.to_string(), kms_key.map(String::from));
        if let Some(s) = self.buckets.lock().get(&id) {
            return Ok(s.clone());
        }
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_region(&self.region)
            .with_bucket_name(bucket)
            .with_allow_http(self.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(30),
                ..Default::default()
            });
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(k), Some(s)) => {
                b = b.with_access_key_id(k).with_secret_access_key(s);
            }
            _ => b = b.with_skip_signature(true),
        }
        if let Some(k) = kms_key {
            // The external store's own SSE-KMS, under the key as named.
            b = b.with_sse_kms_encryption(k);
        }
        let store = std::sync::Arc::new(b.build()?);
        self.buckets.lock().insert(id, store.clone());
        Ok(store)
    }

    async fn store_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        kms_key: Option<&str>,
    ) -> Result<(), SinkError> {
        use object_store::ObjectStoreExt;
        let write = |e: object_store::Error| SinkError::Write {
            bucket: bucket.to_string(),
            key: key.to_string(),
            source: Box::new(e),
        };
        let path = object_store::path::Path::parse(key).map_err(|e| SinkError::InvalidKey {
            key: key.to_string(),
            message: e.to_string(),
        })?;
        let store = self.store(bucket, kms_key).map_err(write)?;
        match store.put(&path, body.into()).await {
            Ok(_) => Ok(()),
            // A PUT answered 404 names a bucket that does not exist.
            Err(object_store::Error::NotFound { .. }) => {
                Err(SinkError::NoSuchBucket(bucket.to_string()))
            }
            Err(e) if e.to_string().contains("NoSuchBucket") => {
                Err(SinkError::NoSuchBucket(bucket.to_string()))
            }
            Err(e) => Err(write(e)),
        }
    }
}

impl ObjectSink for ExternalS3 {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.store_object(bucket, key, body, None))
    }

    fn put_encrypted<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
        kms_key: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.store_object(bucket, key, body, Some(kms_key)))
    }
}
