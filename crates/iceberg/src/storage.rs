//! Iceberg's file I/O over the embedded object store: `s3://bucket/key`
//! (and `s3a://`, `s3n://`) is object `key` of bucket `bucket`, so every
//! data, manifest and metadata file a table has is an ordinary S3 object,
//! readable through the S3 API by any Iceberg reader.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{
    FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use ripstream_objects::store::{Entry, ListQuery, RangeSpec};
use ripstream_objects::{Objects, ObjectsError};
use serde::{Deserialize, Serialize};

/// A table's files in the embedded store. Serializable because iceberg's
/// storage trait asks for it (to ship storage across processes); the store
/// handle itself cannot travel, so a deserialized copy refuses every call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectsStorage {
    #[serde(skip)]
    objects: Option<Objects>,
}

impl ObjectsStorage {
    pub fn new(objects: Objects) -> ObjectsStorage {
        ObjectsStorage {
            objects: Some(objects),
        }
    }

    /// A [`FileIO`] over the store, what tables are loaded and written with.
    pub fn file_io(objects: Objects) -> FileIO {
        FileIOBuilder::new(Arc::new(ObjectsStorageFactory {
            storage: ObjectsStorage::new(objects),
        }))
        .build()
    }

    fn objects(&self) -> Result<&Objects> {
        self.objects.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "the embedded object store's handle does not survive serialization",
            )
        })
    }
}

/// Splits `s3://bucket/key` into its bucket and key.
pub fn split_location(path: &str) -> Result<(&str, &str)> {
    let rest = ["s3://", "s3a://", "s3n://"]
        .iter()
        .find_map(|s| path.strip_prefix(s))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::FeatureUnsupported,
                format!("{path} is not an s3:// location; tables live in the object store"),
            )
        })?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b, k)),
        _ => Err(Error::new(
            ErrorKind::DataInvalid,
            format!("{path} names no object (s3://bucket/key)"),
        )),
    }
}

fn io_error(path: &str, e: ObjectsError) -> Error {
    let kind = match e {
        ObjectsError::NoSuchKey { .. } | ObjectsError::NoSuchBucket { .. } => {
            ErrorKind::DataInvalid
        }
        _ => ErrorKind::Unexpected,
    };
    Error::new(kind, format!("{path}: {e}")).with_source(e)
}

#[async_trait]
#[typetag::serde(name = "ripstream-objects")]
impl Storage for ObjectsStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        let (b, k) = split_location(path)?;
        match self.objects()?.head(b, k).await {
            Ok(_) => Ok(true),
            Err(ObjectsError::NoSuchKey { .. }) => Ok(false),
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (b, k) = split_location(path)?;
        let info = self
            .objects()?
            .head(b, k)
            .await
            .map_err(|e| io_error(path, e))?;
        Ok(FileMetadata { size: info.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let (b, k) = split_location(path)?;
        let (_, bytes, _) = self
            .objects()?
            .get(b, k, None)
            .await
            .map_err(|e| io_error(path, e))?;
        Ok(bytes)
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        split_location(path)?;
        Ok(Box::new(ObjectRead {
            storage: self.clone(),
            path: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (b, k) = split_location(path)?;
        self.objects()?
            .put_object(b, k, bs)
            .await
            .map_err(|e| io_error(path, e))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        split_location(path)?;
        Ok(Box::new(ObjectWrite {
            storage: self.clone(),
            path: path.to_string(),
            buf: Some(BytesMut::new()),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (b, k) = split_location(path)?;
        match self.objects()?.delete(b, k).await {
            Ok(()) | Err(ObjectsError::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let (b, prefix) = split_location(path)?;
        let objects = self.objects()?;
        // The prefix names a directory of the table: its keys, not keys
        // that merely start with the same characters.
        let prefix = if prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        loop {
            let page = objects
                .list(
                    b,
                    ListQuery {
                        prefix: &prefix,
                        max_keys: 1000,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| io_error(path, e))?;
            let keys: Vec<String> = page
                .entries
                .iter()
                .filter_map(|e| match e {
                    Entry::Object(o) => Some(o.key.clone()),
                    Entry::Prefix(_) => None,
                })
                .collect();
            if keys.is_empty() {
                return Ok(());
            }
            for k in keys {
                match objects.delete(b, &k).await {
                    Ok(()) | Err(ObjectsError::NoSuchKey { .. }) => {}
                    Err(e) => return Err(io_error(path, e)),
                }
            }
        }
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(p) = paths.next().await {
            self.delete(&p).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        split_location(path)?;
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        split_location(path)?;
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Hands out the one storage (the store is already open in-process).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectsStorageFactory {
    storage: ObjectsStorage,
}

#[typetag::serde(name = "ripstream-objects")]
impl StorageFactory for ObjectsStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

/// Ranged reads of one object (Parquet footers, then column chunks).
struct ObjectRead {
    storage: ObjectsStorage,
    path: String,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let (b, k) = split_location(&self.path)?;
        let (_, bytes, _) = self
            .storage
            .objects()?
            .get(
                b,
                k,
                Some(RangeSpec::From(range.start, Some(range.end - 1))),
            )
            .await
            .map_err(|e| io_error(&self.path, e))?;
        Ok(bytes)
    }
}

/// A file written whole at close: data files are one flush (at most
/// 128 MiB of records) and metadata files small, and an object appears
/// only complete, as S3's do.
struct ObjectWrite {
    storage: ObjectsStorage,
    path: String,
    buf: Option<BytesMut>,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        match &mut self.buf {
            Some(b) => {
                b.extend_from_slice(&bs);
                Ok(())
            }
            None => Err(Error::new(
                ErrorKind::Unexpected,
                format!("{} is already closed", self.path),
            )),
        }
    }

    async fn close(&mut self) -> Result<()> {
        let Some(buf) = self.buf.take() else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("{} is already closed", self.path),
            ));
        };
        self.storage.write(&self.path, buf.freeze()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_bucket_and_key() {
        assert_eq!(
            split_location("s3://b/t/metadata/x.json").unwrap(),
            ("b", "t/metadata/x.json")
        );
        assert_eq!(split_location("s3a://b/k").unwrap(), ("b", "k"));
        assert!(split_location("file:///tmp/x").is_err());
        assert!(split_location("s3://b/").is_err());
        assert!(split_location("s3://b").is_err());
    }

    #[tokio::test]
    async fn files_are_objects() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(dir.path()).unwrap();
        objects.create_bucket("bkt").unwrap();
        let io = ObjectsStorage::file_io(objects.clone());
        let out = io.new_output("s3://bkt/t/data/f.parquet").unwrap();
        let mut w = out.writer().await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        w.close().await.unwrap();
        let (_, body, _) = objects.get("bkt", "t/data/f.parquet", None).await.unwrap();
        assert_eq!(&body[..], b"hello world");
        let input = io.new_input("s3://bkt/t/data/f.parquet").unwrap();
        assert_eq!(input.metadata().await.unwrap().size, 11);
        let r = input.reader().await.unwrap();
        assert_eq!(&r.read(6..11).await.unwrap()[..], b"world");
        assert!(io.exists("s3://bkt/t/data/f.parquet").await.unwrap());
        assert!(!io.exists("s3://bkt/t/data/g.parquet").await.unwrap());
        io.delete_prefix("s3://bkt/t").await.unwrap();
        assert!(!io.exists("s3://bkt/t/data/f.parquet").await.unwrap());
    }
}
