//! Iceberg's file I/O over the embedded object store: `s3://bucket/key`
//! (and `s3a://`, `s3n://`) is object `key` of bucket `bucket`, so every
//! data, manifest and metadata file a table has is an ordinary S3 object,
//! readable through the S3 API by any Iceberg reader.
//!
//! Where a table's files are is the table's to say (its Glue
//! `metadata_location`, its metadata's `location` and `write.data.path`),
//! and whoever can update the table can change it. A storage for Firehose's
//! writes is therefore scoped ([`ObjectsStorage::file_io_scoped`]): every
//! read, write and delete outside the [`Prefix`]es its stream was
//! authorized for is refused, whatever the metadata says. Whole-file reads
//! (metadata, manifest lists) are capped, as the objects are anyone's who
//! can write the bucket.

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
use ripstream_objects::store::{Entry, ListQuery, RangeSpec, valid_bucket_name};
use ripstream_objects::{Objects, ObjectsError};
use serde::{Deserialize, Serialize};

/// The most bytes a whole-file read (a metadata file, a manifest list, a
/// manifest) brings into memory, and the most a compressed metadata file
/// inflates to. Iceberg's own metadata files stay far below it; a bigger
/// object is refused rather than read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The most bytes a manifest list or manifest inflates to: its records
/// are decoded into values many times their size.
pub const MAX_AVRO_INFLATED: u64 = 32 << 20;

/// A table's files in the embedded store. Serializable because iceberg's
/// storage trait asks for it (to ship storage across processes); the store
/// handle itself cannot travel, so a deserialized copy refuses every call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectsStorage {
    #[serde(skip)]
    objects: Option<Objects>,
    /// Where this storage may read and write; `None`: anywhere.
    #[serde(skip)]
    scope: Option<Arc<[Prefix]>>,
    #[serde(skip, default = "max_file_bytes")]
    max_file_bytes: u64,
}

fn max_file_bytes() -> u64 {
    MAX_FILE_BYTES
}

impl ObjectsStorage {
    pub fn new(objects: Objects) -> ObjectsStorage {
        ObjectsStorage {
            objects: Some(objects),
            scope: None,
            max_file_bytes: MAX_FILE_BYTES,
        }
    }

    /// A [`FileIO`] over the store, what tables are loaded and written with.
    pub fn file_io(objects: Objects) -> FileIO {
        ObjectsStorage::new(objects).into_file_io()
    }

    /// A [`FileIO`] that touches nothing outside `scope`.
    pub fn file_io_scoped(objects: Objects, scope: &[Prefix]) -> FileIO {
        ObjectsStorage::new(objects).scoped(scope).into_file_io()
    }

    /// The same storage, touching nothing outside `scope`.
    pub fn scoped(mut self, scope: &[Prefix]) -> ObjectsStorage {
        self.scope = Some(scope.into());
        self
    }

    /// The same storage with another cap on whole-file reads (tests).
    pub fn with_max_file_bytes(mut self, max: u64) -> ObjectsStorage {
        self.max_file_bytes = max;
        self
    }

    pub fn into_file_io(self) -> FileIO {
        FileIOBuilder::new(Arc::new(ObjectsStorageFactory { storage: self })).build()
    }

    fn objects(&self) -> Result<&Objects> {
        self.objects.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "the embedded object store's handle does not survive serialization",
            )
        })
    }

    /// The bucket and key of `path`, if this storage may touch it.
    fn locate<'a>(&self, path: &'a str) -> Result<(&'a str, &'a str)> {
        let (b, k) = split_location(path)?;
        if let Some(scope) = &self.scope
            && !scope.iter().any(|p| p.holds(b, k))
        {
            return Err(outside(path, scope));
        }
        Ok((b, k))
    }
}

/// The error of a path outside a storage's scope.
fn outside(path: &str, scope: &[Prefix]) -> Error {
    let allowed: Vec<String> = scope.iter().map(Prefix::to_string).collect();
    Error::new(
        ErrorKind::PreconditionFailed,
        format!(
            "{path} is outside the locations this delivery stream may use ({})",
            allowed.join(", ")
        ),
    )
}

/// The scheme, bucket and key of an `s3://` (`s3a://`, `s3n://`) location,
/// the bucket checked as S3 names buckets and the key free of `.` and `..`
/// segments (which S3 keeps as they are but a path would resolve), so that
/// a key under a [`Prefix`] is under it in every reading.
fn parts(path: &str) -> Result<(&str, &str)> {
    let rest = ["s3://", "s3a://", "s3n://"]
        .iter()
        .find_map(|s| path.strip_prefix(s))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::FeatureUnsupported,
                format!("{path} is not an s3:// location; tables live in the object store"),
            )
        })?;
    let (b, k) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_bucket_name(b) {
        return Err(Error::new(
            ErrorKind::DataInvalid,
            format!("{path} does not name a valid bucket"),
        ));
    }
    if k.split('/').any(|s| s == "." || s == "..") {
        return Err(Error::new(
            ErrorKind::DataInvalid,
            format!("{path} has `.` or `..` path segments"),
        ));
    }
    Ok((b, k))
}

/// Splits `s3://bucket/key` into its bucket and key.
pub fn split_location(path: &str) -> Result<(&str, &str)> {
    match parts(path)? {
        (b, k) if !k.is_empty() => Ok((b, k)),
        _ => Err(Error::new(
            ErrorKind::DataInvalid,
            format!("{path} names no object (s3://bucket/key)"),
        )),
    }
}

/// A directory of the store: every key of `bucket` that starts with `key`
/// (empty, or ending in `/`), written `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub bucket: String,
    pub key: String,
}

impl Prefix {
    /// The directory `location` names (`s3://b/t/data` and `s3://b/t/data/`
    /// alike).
    pub fn dir(location: &str) -> Result<Prefix> {
        let (b, k) = parts(location)?;
        let k = k.trim_end_matches('/');
        Ok(Prefix {
            bucket: b.to_string(),
            key: if k.is_empty() {
                String::new()
            } else {
                format!("{k}/")
            },
        })
    }

    /// Whether object `key` of `bucket` is in the directory.
    pub fn holds(&self, bucket: &str, key: &str) -> bool {
        self.bucket == bucket && key.starts_with(&self.key)
    }

    /// Whether every key of `other` is in the directory.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.holds(&other.bucket, &other.key)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl std::str::FromStr for Prefix {
    type Err = Error;

    fn from_str(s: &str) -> Result<Prefix> {
        Prefix::dir(s)
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
        let (b, k) = self.locate(path)?;
        match self.objects()?.head(b, k).await {
            Ok(_) => Ok(true),
            Err(ObjectsError::NoSuchKey { .. }) => Ok(false),
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (b, k) = self.locate(path)?;
        let info = self
            .objects()?
            .head(b, k)
            .await
            .map_err(|e| io_error(path, e))?;
        Ok(FileMetadata { size: info.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let (b, k) = self.locate(path)?;
        // One byte past the cap tells a file that is too big from one that
        // fits exactly, in one read (no size checked, then changed).
        let max = self.max_file_bytes;
        let bytes = match self
            .objects()?
            .get(b, k, Some(RangeSpec::From(0, Some(max))))
            .await
        {
            Ok((_, bytes, _)) => bytes,
            Err(ObjectsError::InvalidRange { .. }) => Bytes::new(),
            Err(e) => return Err(io_error(path, e)),
        };
        if bytes.len() as u64 > max {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!(
                    "{path} is larger than {max} bytes, the most a table file read whole may be"
                ),
            ));
        }
        // Manifest lists and manifests: refused before they are parsed if
        // they would inflate past the cap.
        if crate::avro_bound::is_container(&bytes) {
            let b = bytes.clone();
            let cap = max.min(MAX_AVRO_INFLATED);
            let measured =
                tokio::task::spawn_blocking(move || crate::avro_bound::inflated_len(&b, cap))
                    .await
                    .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?;
            if let Err(why) = measured {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    format!("{path} is not a table file this server reads: {why}"),
                ));
            }
        }
        Ok(bytes)
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        self.locate(path)?;
        Ok(Box::new(ObjectRead {
            storage: self.clone(),
            path: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (b, k) = self.locate(path)?;
        self.objects()?
            .put_object(b, k, bs)
            .await
            .map_err(|e| io_error(path, e))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        self.locate(path)?;
        Ok(Box::new(ObjectWrite {
            storage: self.clone(),
            path: path.to_string(),
            buf: Some(BytesMut::new()),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (b, k) = self.locate(path)?;
        match self.objects()?.delete(b, k).await {
            Ok(()) | Err(ObjectsError::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let (b, prefix) = self.locate(path)?;
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
        self.locate(path)?;
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        self.locate(path)?;
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

/// The most bytes one ranged read of a table file (a Parquet column chunk,
/// say) brings into memory: a file's footer, which anyone who can write
/// the table makes, says how big its chunks are.
pub const MAX_RANGE_BYTES: u64 = 1 << 30;

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        if range.end - range.start > MAX_RANGE_BYTES {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!(
                    "{}: a read of {} bytes, more than the {MAX_RANGE_BYTES} one read of a table file may be",
                    self.path,
                    range.end - range.start
                ),
            ));
        }
        let (b, k) = self.storage.locate(&self.path)?;
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
            split_location("s3://bkt/t/metadata/x.json").unwrap(),
            ("bkt", "t/metadata/x.json")
        );
        assert_eq!(split_location("s3a://bkt/k").unwrap(), ("bkt", "k"));
        assert!(split_location("file:///tmp/x").is_err());
        assert!(split_location("s3://bkt/").is_err());
        assert!(split_location("s3://bkt").is_err());
        // Not a bucket S3 could have, or a key a path would resolve.
        assert!(split_location("s3://../k").is_err());
        assert!(split_location("s3://Bkt/k").is_err());
        assert!(split_location("s3://bkt/t/../other/k").is_err());
        assert!(split_location("s3://bkt/./k").is_err());
        let d = Prefix::dir("s3://bkt/t/data").unwrap();
        assert_eq!(d, Prefix::dir("s3a://bkt/t/data/").unwrap());
        assert_eq!(d.to_string(), "s3://bkt/t/data/");
        assert!(d.holds("bkt", "t/data/f.parquet"));
        // A sibling whose name merely starts the same is not inside.
        assert!(!d.holds("bkt", "t/data2/f.parquet"));
        assert!(!d.holds("other", "t/data/f.parquet"));
        let root = Prefix::dir("s3://bkt").unwrap();
        assert_eq!(root.to_string(), "s3://bkt/");
        assert!(root.covers(&d));
        assert!(!d.covers(&root));
    }

    #[tokio::test]
    async fn a_scoped_storage_touches_nothing_outside_its_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(dir.path()).unwrap();
        objects.create_bucket("lake").unwrap();
        objects.create_bucket("other").unwrap();
        objects
            .put_object("other", "secret/x", Bytes::from_static(b"theirs"))
            .await
            .unwrap();
        let scope = [Prefix::dir("s3://lake/t/").unwrap()];
        let io = ObjectsStorage::file_io_scoped(objects.clone(), &scope);
        io.new_output("s3://lake/t/data/f")
            .unwrap()
            .write(Bytes::from_static(b"ours"))
            .await
            .unwrap();
        assert_eq!(
            &io.new_input("s3://lake/t/data/f")
                .unwrap()
                .read()
                .await
                .unwrap()[..],
            b"ours"
        );
        for path in ["s3://other/secret/x", "s3://lake/t2/x", "s3://lake/x"] {
            let e = io.new_input(path).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{e}");
            assert!(io.new_output(path).is_err(), "{path}");
            assert!(io.delete(path).await.is_err(), "{path}");
        }
        assert!(objects.head("lake", "t2/x").await.is_err());
        objects.head("other", "secret/x").await.unwrap();
    }

    #[tokio::test]
    async fn whole_file_reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(dir.path()).unwrap();
        objects.create_bucket("lake").unwrap();
        objects
            .put_object("lake", "big", Bytes::from(vec![b'x'; 101]))
            .await
            .unwrap();
        objects
            .put_object("lake", "fits", Bytes::from(vec![b'x'; 100]))
            .await
            .unwrap();
        objects
            .put_object("lake", "empty", Bytes::new())
            .await
            .unwrap();
        let io = ObjectsStorage::new(objects)
            .with_max_file_bytes(100)
            .into_file_io();
        let e = io
            .new_input("s3://lake/big")
            .unwrap()
            .read()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 100 bytes"), "{e}");
        let fits = io
            .new_input("s3://lake/fits")
            .unwrap()
            .read()
            .await
            .unwrap();
        assert_eq!(fits.len(), 100);
        let empty = io
            .new_input("s3://lake/empty")
            .unwrap()
            .read()
            .await
            .unwrap();
        assert!(empty.is_empty());
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
