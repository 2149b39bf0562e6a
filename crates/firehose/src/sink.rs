//! Where delivered objects go: the [`ObjectSink`] trait the delivery engine
//! writes through, and [`LocalObjects`], the embedded store's layout
//! (`<root>/<bucket>/<key>` as plain files, a bucket being a directory).
//!
//! The binary wires the object store service's own sink (`ripstream-objects`)
//! over the same layout; the engine only knows the trait.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use ripstream_api::Cause;

/// The future of one put.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an object could not be stored. The engine retries every variant
/// (records wait in the log meanwhile) but `InvalidKey`, which the same key
/// would meet again: that object gets a fresh key, then goes to the error
/// output. The code is the one AWS's delivery error logs show.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The bucket does not exist (`S3.NoSuchBucket`).
    #[error("The specified bucket does not exist: {0}")]
    NoSuchBucket(String),
    /// The key cannot be stored (a path segment the store refuses, or an
    /// object or key prefix in the way of its path).
    #[error("the object key {key} is not valid: {message}")]
    InvalidKey { key: String, message: String },
    /// The KMS key the destination names cannot be used now (disabled or
    /// gone since the stream was configured), or the sink cannot encrypt;
    /// retried, as AWS retries, until the key is usable again.
    #[error("{message}")]
    Kms { code: &'static str, message: String },
    /// The write itself failed (disk full, permissions, I/O).
    #[error("could not write s3://{bucket}/{key}")]
    Write {
        bucket: String,
        key: String,
        #[source]
        source: Cause,
    },
}

impl SinkError {
    /// The error code Firehose reports for a failed S3 delivery.
    pub fn code(&self) -> &'static str {
        match self {
            SinkError::NoSuchBucket(_) => "S3.NoSuchBucket",
            SinkError::InvalidKey { .. } => "S3.InvalidKey",
            SinkError::Kms { code, .. } => code,
            SinkError::Write { .. } => "S3.InternalError",
        }
    }
}

/// An object store the delivery engine writes to. A put that returns `Ok`
/// must be durable: the engine advances its checkpoint right after.
pub trait ObjectSink: Send + Sync + std::fmt::Debug {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Stores an object with SSE-KMS under `kms_key` (an AWSKMSKeyARN).
    /// A sink that cannot encrypt refuses: an object is never stored less
    /// protected than its destination says.
    fn put_encrypted<'a>(
        &'a self,
        _bucket: &'a str,
        _key: &'a str,
        _body: Bytes,
        kms_key: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            Err(SinkError::Kms {
                code: "KMS.UnsupportedOperationException",
                message: format!(
                    "this object store cannot store objects encrypted under {kms_key} (SSE-KMS)"
                ),
            })
        })
    }

    /// Stores an object as its S3 configuration says: under its KMS key
    /// (`Some`: SSE-KMS), or as it is.
    fn put_as<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
        kms_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        match kms_key {
            Some(k) => self.put_encrypted(bucket, key, body, k),
            None => self.put(bucket, key, body),
        }
    }
}

/// The embedded object store's files: bucket `B` is the directory
/// `<root>/B`, which must exist; object `K` is the file `<root>/B/K`.
#[derive(Debug, Clone)]
pub struct LocalObjects {
    root: PathBuf,
}

impl LocalObjects {
    /// Objects under `root` (the server uses `<data-dir>/objects`).
    pub fn new(root: impl Into<PathBuf>) -> LocalObjects {
        LocalObjects { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Bucket names the layout can hold: a single, ordinary directory name.
fn bucket_dir_name_ok(bucket: &str) -> bool {
    !bucket.is_empty()
        && bucket != "."
        && bucket != ".."
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// fsyncs `file`, then each directory from its parent up to `top`: the
/// object store renames a temporary file into place and creates missing
/// directories, none of which survives a power loss unsynced.
fn sync_up_to(file: &Path, top: &Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        if d == top {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Why the layout cannot hold a file at `file`, if it cannot: it is a
/// directory, or one of its ancestors inside `top` is not one.
fn layout_conflict(top: &Path, file: &Path) -> Option<&'static str> {
    if std::fs::symlink_metadata(file).is_ok_and(|m| m.is_dir()) {
        return Some("a key prefix of other objects (a directory) is in the way");
    }
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == top || !d.starts_with(top) {
            break;
        }
        if std::fs::symlink_metadata(d).is_ok_and(|m| !m.is_dir()) {
            return Some("an object is in the way of the key's directories");
        }
        dir = d.parent();
    }
    None
}

impl ObjectSink for LocalObjects {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let bucket_dir = self.root.join(bucket);
            if !bucket_dir_name_ok(bucket) || !bucket_dir.is_dir() {
                return Err(SinkError::NoSuchBucket(bucket.to_string()));
            }
            let path = ObjectPath::parse(key).map_err(|e| SinkError::InvalidKey {
                key: key.to_string(),
                message: e.to_string(),
            })?;
            let write = |e: Cause| SinkError::Write {
                bucket: bucket.to_string(),
                key: key.to_string(),
                source: e,
            };
            let store =
                LocalFileSystem::new_with_prefix(&bucket_dir).map_err(|e| write(e.into()))?;
            let file = bucket_dir.join(key);
            if let Err(e) = store.put(&path, body.into()).await {
                // A file where the key needs a directory (or a directory
                // where it needs the file) refuses this key on every retry.
                if let Some(why) = layout_conflict(&bucket_dir, &file) {
                    return Err(SinkError::InvalidKey {
                        key: key.to_string(),
                        message: why.into(),
                    });
                }
                return Err(write(e.into()));
            }
            let top = bucket_dir.clone();
            tokio::task::spawn_blocking(move || sync_up_to(&file, &top))
                .await
                .map_err(|e| write(e.into()))?
                .map_err(|e| write(e.into()))?;
            Ok(())
        })
    }
}

/// A sink shared by every delivery task.
pub type SharedSink = Arc<dyn ObjectSink>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn puts_files_under_existing_buckets_only() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalObjects::new(dir.path());
        let e = sink
            .put("missing", "a/b", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::NoSuchBucket(_)), "{e}");
        assert_eq!(e.code(), "S3.NoSuchBucket");
        assert!(matches!(
            sink.put("..", "a", Bytes::new()).await.unwrap_err(),
            SinkError::NoSuchBucket(_)
        ));
        std::fs::create_dir(dir.path().join("bkt")).unwrap();
        sink.put("bkt", "2026/12/03/17/obj", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("bkt/2026/12/03/17/obj")).unwrap(),
            b"hello"
        );
        assert!(matches!(
            sink.put("bkt", "a/../b", Bytes::new()).await.unwrap_err(),
            SinkError::InvalidKey { .. }
        ));
    }
}
