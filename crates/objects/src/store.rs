//! The embedded object store: buckets are directories and objects plain
//! files under the store's root, so what another in-process writer (the
//! Firehose delivery engine) puts there with object_store's LocalFileSystem
//! is an object, and so an operator can read it without Ripstream.
//!
//! ```text
//! <root>/<bucket>/<key>                 the object's bytes (`/` in a key: directories)
//! <root>/.meta/buckets/<bucket>.json    the bucket's creation date
//! <root>/.meta/objects/<bucket>/<h>     an object's Content-Type, user metadata and ETag
//! <root>/.meta/uploads/<bucket>/<id>/   a multipart upload: upload.json and its parts
//! ```
//!
//! `.meta` can never be a bucket (bucket names start with a letter or a
//! digit), so listings never see it. An object's metadata file is named by
//! the SHA-256 of its key (`<h>`), so no key can collide with another's metadata
//! (metadata an older store named by the key's MD5 is still read, and moved).
//! It records the size and modification time of the file it describes: a
//! file rewritten behind the store's back (or written by another writer)
//! has no valid metadata, and is then an object of content type
//! `binary/octet-stream` whose ETag is the MD5 of its bytes, as S3 gives a
//! single-part upload.
//!
//! Writes go through object_store's LocalFileSystem, which stages each one
//! in a temporary file renamed into place, with fsync on (the file and
//! every directory it touched), so an acknowledged write survives power
//! loss and a reader never sees half an object.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest, Md5};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use ripstream_api::BodyStream;
use ripstream_keyring::{Keyring, KeyringError, ObjectOpener, ObjectSealer};
use serde::{Deserialize, Serialize};

use crate::error::ObjectsError;

/// The content type of an object stored without one, as S3 answers it.
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";
/// S3's longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest `/`-separated segment of a key, in bytes: a file name's limit
/// (255 on the usual file systems) less room for a staging file's `#<n>`.
pub const MAX_SEGMENT_BYTES: usize = 255 - 16;
/// S3's smallest part but the last of a multipart upload.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// S3's largest PutObject body and largest part: 5 GiB.
pub const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one multipart upload (numbered 1 to this).
pub const MAX_PARTS: u32 = 10_000;
/// Most keys one listing answers with.
pub const MAX_LIST_KEYS: usize = 1000;

/// What the store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Quoted, as S3 sends it: `"<hex md5>"`, or `"<hex>-<parts>"` for a
    /// multipart upload.
    pub etag: String,
    pub last_modified: SystemTime,
    pub content_type: String,
    /// User metadata (`x-amz-meta-*`), names in lower case.
    pub metadata: BTreeMap<String, String>,
    /// How the object is encrypted at rest, if it is.
    pub encryption: Option<Encryption>,
}

/// What a writer says about an object beyond its bytes.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The Content-MD5 the client sent, decoded; the write fails with
    /// BadDigest (and leaves the old object) when the bytes differ.
    pub content_md5: Option<[u8; 16]>,
    /// Server-side encryption asked for (`x-amz-server-side-encryption`).
    pub sse: Option<Sse>,
}

/// Server-side encryption a write asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`): the server's own keyring key.
    S3,
    /// SSE-KMS (`aws:kms`) under a key id, key ARN, alias or alias ARN of
    /// the keyring; `None` is the AWS-managed `alias/aws/s3`.
    Kms(Option<String>),
}

/// S3's name of SSE-KMS.
pub const AWS_KMS: &str = "aws:kms";
/// S3's name of SSE-S3.
pub const AES256: &str = "AES256";

/// How a stored object is encrypted: what its metadata records and S3's
/// response headers say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// [`AWS_KMS`] or [`AES256`].
    pub algorithm: String,
    /// The master key's id in the keyring.
    pub key_id: String,
    /// The master key's ARN (SSE-KMS only: S3 names no key for SSE-S3).
    pub key_arn: Option<String>,
}

impl Encryption {
    fn is_kms(&self) -> bool {
        self.algorithm == AWS_KMS
    }
}

/// A bucket as ListBuckets reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub created: SystemTime,
}

/// One entry of a listing, in S3's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Object(ObjectInfo),
    /// A common prefix (the keys under it rolled up by the delimiter).
    Prefix(String),
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Only keys (and common prefixes) after this one.
    pub after: Option<&'a str>,
    pub max_keys: usize,
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Whether entries past the last one remain.
    pub truncated: bool,
    /// Directory entries the page's walk looked at.
    scanned: usize,
}

impl Listing {
    /// How many directory entries the page's walk looked at: its cost,
    /// bounded by the page, not the bucket.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// The key or common prefix the next page starts after.
    pub fn last(&self) -> Option<&str> {
        self.entries.last().map(|e| match e {
            Entry::Object(o) => o.key.as_str(),
            Entry::Prefix(p) => p.as_str(),
        })
    }
}

/// One part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
}

/// A multipart upload in progress, as ListMultipartUploads shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub key: String,
    pub upload_id: String,
    /// Milliseconds since the epoch.
    pub initiated_ms: u64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Upload {
    key: String,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    initiated_ms: u64,
    /// The encryption of every part and of the object they make.
    #[serde(default)]
    encryption: Option<Encryption>,
}

/// The metadata file of one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    key: String,
    etag: String,
    content_type: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// The file this describes: its size and modification time (ns).
    size: u64,
    mtime_ns: u128,
    /// An encrypted object's: how, and its plaintext's size (the file
    /// holds the sealed chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encryption: Option<Encryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plain_size: Option<u64>,
}

/// A part's sidecar (`<n>.json` beside the part `<n>`), written once the
/// part is in place, so ListParts and Complete never read parts whole to
/// learn their MD5s. It names the file it describes as `Meta` does.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartMeta {
    etag: String,
    size: u64,
    mtime_ns: u128,
    /// An encrypted part's plaintext size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plain_size: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BucketMeta {
    created_ms: u64,
}

/// The embedded object store.
#[derive(Debug, Clone)]
pub struct Objects {
    root: PathBuf,
    fs: Arc<LocalFileSystem>,
    /// The largest body one write takes: `MAX_PUT_BYTES`, lowered only
    /// by the unit tests (which must not write GiBs).
    max_put_bytes: u64,
    /// Bucket locks, striped by name: every write holds its bucket's
    /// shared from its bucket check to its last file, DeleteBucket holds it
    /// exclusive from its emptiness check to the directory's removal, so
    /// no acknowledged write lands in between and is removed with it.
    locks: Arc<Vec<Arc<tokio::sync::RwLock<()>>>>,
    /// How long an incomplete multipart upload is kept (S3 lifecycle's
    /// AbortIncompleteMultipartUpload): its parts are deleted after.
    upload_expiry: Duration,
    /// The master keys of server-side encryption; without them the store
    /// refuses encrypted writes and cannot read encrypted objects.
    keyring: Option<Arc<Keyring>>,
}

/// The default of [`Objects::with_upload_expiry`]: 7 days, the
/// DaysAfterInitiation commonly configured on S3 buckets.
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many bucket locks the store stripes bucket names over: a bounded
/// table (names come from requests), few enough collisions that one
/// DeleteBucket rarely waits for another bucket's writes.
const BUCKET_LOCKS: usize = 64;

impl Objects {
    /// The store of a data directory: `<data_dir>/objects`.
    pub fn open(data_dir: impl AsRef<FsPath>) -> Result<Objects, ObjectsError> {
        Objects::open_root(data_dir.as_ref().join("objects"))
    }

    /// The store rooted at `root` (created if missing).
    pub fn open_root(root: impl Into<PathBuf>) -> Result<Objects, ObjectsError> {
        let root = root.into();
        std::fs::create_dir_all(root.join(".meta"))?;
        let root = std::fs::canonicalize(&root)?;
        let fs = LocalFileSystem::new_with_prefix(&root)?.with_fsync(true);
        Ok(Objects {
            root,
            fs: Arc::new(fs),
            max_put_bytes: MAX_PUT_BYTES,
            locks: Arc::new(
                (0..BUCKET_LOCKS)
                    .map(|_| Arc::new(tokio::sync::RwLock::new(())))
                    .collect(),
            ),
            upload_expiry: DEFAULT_UPLOAD_EXPIRY,
            keyring: None,
        })
    }

    /// The same store encrypting and decrypting with `keyring`'s keys
    /// (SSE-KMS and SSE-S3).
    pub fn with_keyring(mut self, keyring: Arc<Keyring>) -> Objects {
        self.keyring = Some(keyring);
        self
    }

    fn keyring(&self) -> Result<&Keyring, ObjectsError> {
        self.keyring.as_deref().ok_or_else(|| {
            ObjectsError::InvalidRequest(
                "Server-side encryption is not configured on this server (no keyring).".into(),
            )
        })
    }

    /// The master key a write's SSE names, as the object will record it:
    /// KMS's NotFound and Disabled are S3's `KMS.NotFoundException` and
    /// `KMS.DisabledException`.
    pub fn resolve_sse(&self, sse: &Sse) -> Result<Encryption, ObjectsError> {
        let keyring = self.keyring()?;
        let (name, algorithm) = match sse {
            Sse::S3 => (ripstream_keyring::SSE_S3_ALIAS, AES256),
            Sse::Kms(None) => (ripstream_keyring::S3_MANAGED_ALIAS, AWS_KMS),
            Sse::Kms(Some(k)) => (k.as_str(), AWS_KMS),
        };
        let key_id = keyring.resolve(name).map_err(|e| match e {
            // SSE-S3 is no KMS key to S3's callers: its key missing is
            // the server's failure, never a KMS error naming it.
            e if *sse == Sse::S3 => ObjectsError::Keyring(e),
            // S3's own words for a key it cannot find.
            KeyringError::NotFound(_) => ObjectsError::KmsNotFound(format!("Invalid keyId {name}")),
            e => kms_error(e),
        })?;
        Ok(Encryption {
            algorithm: algorithm.to_string(),
            key_arn: (algorithm == AWS_KMS).then(|| keyring.key_arn(&key_id)),
            key_id,
        })
    }

    /// A sealer for a new object under `enc`, bound to `context`.
    fn sealer(&self, enc: &Encryption, context: &str) -> Result<ObjectSealer, ObjectsError> {
        self.keyring()?
            .seal_object(&enc.key_id, context.as_bytes())
            .map_err(|e| {
                if enc.is_kms() {
                    kms_error(e)
                } else {
                    ObjectsError::Keyring(e)
                }
            })
    }

    /// The same store with incomplete multipart uploads kept `expiry`
    /// after their initiation (by [`Objects::background`]).
    pub fn with_upload_expiry(mut self, expiry: Duration) -> Objects {
        self.upload_expiry = expiry;
        self
    }

    /// The store's background work, until dropped: deletes incomplete
    /// multipart uploads older than the upload expiry, checking a few
    /// times per expiry period (at most hourly), so abandoned parts do
    /// not fill the disk.
    pub fn background(&self) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let every = (this.upload_expiry / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(3600));
            loop {
                let sweeper = this.clone();
                match tokio::task::spawn_blocking(move || sweeper.expire_uploads()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        tracing::info!(uploads = n, "expired incomplete multipart uploads")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %ripstream_api::Chain(&e), "could not expire multipart uploads")
                    }
                    Err(e) => tracing::warn!(error = %e, "multipart upload expiry task failed"),
                }
                tokio::time::sleep(every).await;
            }
        }
    }

    /// Deletes every incomplete multipart upload initiated longer than the
    /// upload expiry ago; answers how many.
    pub fn expire_uploads(&self) -> Result<usize, ObjectsError> {
        let now = millis(SystemTime::now());
        let expiry = u64::try_from(self.upload_expiry.as_millis()).unwrap_or(u64::MAX);
        let uploads = self.root.join(META_DIR).join("uploads");
        let buckets = match std::fs::read_dir(&uploads) {
            Ok(b) => b,
            Err(e) if is_missing(&e) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut expired = 0;
        for bucket in buckets {
            let bucket = bucket?;
            if !bucket.file_type()?.is_dir() {
                continue;
            }
            let ids: Vec<PathBuf> = match std::fs::read_dir(bucket.path()) {
                Ok(ids) => ids
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_dir())
                    .collect(),
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            for dir in ids {
                // An upload whose record is unreadable (torn by a crash at
                // its creation) ages from its directory's mtime.
                let initiated = std::fs::read(dir.join("upload.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Upload>(&b).ok())
                    .map(|u| u.initiated_ms)
                    .or_else(|| Some(millis(std::fs::metadata(&dir).ok()?.modified().ok()?)));
                let Some(initiated) = initiated else { continue };
                if now.saturating_sub(initiated) < expiry {
                    continue;
                }
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => expired += 1,
                    Err(e) if is_missing(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(expired)
    }

    /// The same store with a lower size limit, for tests.
    #[cfg(test)]
    pub(crate) fn with_max_put_bytes(mut self, max: u64) -> Objects {
        self.max_put_bytes = max;
        self
    }

    fn too_large(&self) -> ObjectsError {
        ObjectsError::EntityTooLarge {
            max: self.max_put_bytes,
        }
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &FsPath {
        &self.root
    }

    fn bucket_lock(&self, bucket: &str) -> Arc<tokio::sync::RwLock<()>> {
        // FNV-1a: a stable spread of names over the stripes.
        let h = bucket.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        self.locks[(h % BUCKET_LOCKS as u64) as usize].clone()
    }

    /// Held by a write for as long as it may still create files in the
    /// bucket.
    async fn writing(&self, bucket: &str) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.bucket_lock(bucket).read_owned().await
    }

    fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    fn bucket_meta(&self, bucket: &str) -> PathBuf {
        self.root
            .join(".meta")
            .join("buckets")
            .join(format!("{bucket}.json"))
    }

    fn meta_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(".meta").join("objects").join(bucket)
    }

    /// An object's metadata file: named by the SHA-256 of its key, so no
    /// key can be chosen to collide with another's metadata.
    fn meta_path(&self, bucket: &str, key: &str) -> PathBuf {
        let digest = sha2::Sha256::digest(key.as_bytes());
        self.meta_dir(bucket).join(hex::encode(digest))
    }

    /// Where stores before the SHA-256 names kept the metadata (the MD5 of
    /// the key): still read, and moved to [`Objects::meta_path`] when met.
    fn legacy_meta_path(&self, bucket: &str, key: &str) -> PathBuf {
        let digest = Md5::digest(key.as_bytes());
        self.meta_dir(bucket).join(hex::encode(digest))
    }

    /// The metadata recorded for `key` if it describes the file as it is
    /// now (`stat`), from the SHA-256 name or else the legacy MD5 one.
    fn read_meta(&self, bucket: &str, key: &str, stat: &std::fs::Metadata) -> Option<Meta> {
        let mtime = stat.modified().ok()?;
        let valid = |path: &FsPath| {
            std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
                .filter(|m| m.key == key && m.size == stat.len() && m.mtime_ns == nanos(mtime))
        };
        if let Some(m) = valid(&self.meta_path(bucket, key)) {
            return Some(m);
        }
        let legacy = self.legacy_meta_path(bucket, key);
        let m = valid(&legacy)?;
        // Moved under its new name; if that fails it is read from the old
        // one again next time.
        match write_durable(
            &self.meta_path(bucket, key),
            &serde_json::to_vec(&m).unwrap_or_default(),
        ) {
            Ok(()) => {
                let _ = std::fs::remove_file(&legacy);
            }
            Err(e) => tracing::debug!(error = %e, key, "could not move an object's metadata"),
        }
        Some(m)
    }

    fn uploads_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(".meta").join("uploads").join(bucket)
    }

    // ------------------------------------------------------------ buckets

    /// Whether the bucket exists (a name that cannot be a bucket never does).
    pub fn bucket_exists(&self, bucket: &str) -> bool {
        valid_bucket_name(bucket) && self.bucket_dir(bucket).is_dir()
    }

    fn require_bucket(&self, bucket: &str) -> Result<(), ObjectsError> {
        if self.bucket_exists(bucket) {
            Ok(())
        } else {
            Err(ObjectsError::NoSuchBucket {
                bucket: bucket.to_string(),
            })
        }
    }

    /// Creates a bucket; BucketAlreadyOwnedByYou if it exists (every
    /// bucket of this store is the account's own).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), ObjectsError> {
        if !valid_bucket_name(bucket) {
            return Err(ObjectsError::InvalidBucketName {
                bucket: bucket.to_string(),
            });
        }
        match std::fs::create_dir(self.bucket_dir(bucket)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ObjectsError::BucketAlreadyOwnedByYou {
                    bucket: bucket.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let meta = BucketMeta {
            created_ms: millis(SystemTime::now()),
        };
        write_durable(
            &self.bucket_meta(bucket),
            &serde_json::to_vec(&meta).unwrap_or_default(),
        )?;
        sync_dir(&self.root)?;
        Ok(())
    }

    /// Deletes an empty bucket (BucketNotEmpty otherwise), with its
    /// metadata and any multipart uploads left in it. Writes to the bucket
    /// in flight finish first (and are then seen by the emptiness check);
    /// those that start meanwhile find no bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), ObjectsError> {
        let exclusive = self.bucket_lock(bucket).write_owned().await;
        let this = self.clone();
        let bucket = bucket.to_string();
        // The guard goes with the work: a caller that stops waiting must
        // not release the bucket while the removal still runs.
        tokio::task::spawn_blocking(move || {
            let _exclusive = exclusive;
            this.delete_bucket_blocking(&bucket)
        })
        .await?
    }

    fn delete_bucket_blocking(&self, bucket: &str) -> Result<(), ObjectsError> {
        self.require_bucket(bucket)?;
        let dir = self.bucket_dir(bucket);
        let mut walk = Walk {
            prefix: "",
            after: None,
            skip: None,
            visited: 0,
        };
        // Stops at the first key.
        if !walk.run(&dir, "", &mut |_| Ok(Step::Stop))? {
            return Err(ObjectsError::BucketNotEmpty {
                bucket: bucket.to_string(),
            });
        }
        // Only empty directories (or object_store staging files) are left.
        std::fs::remove_dir_all(&dir)?;
        for extra in [self.meta_dir(bucket), self.uploads_dir(bucket)] {
            match std::fs::remove_dir_all(&extra) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        match std::fs::remove_file(self.bucket_meta(bucket)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        sync_dir(&self.root)?;
        Ok(())
    }

    /// Every bucket, by name.
    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>, ObjectsError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            if !valid_bucket_name(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            let created = std::fs::read(self.bucket_meta(&name))
                .ok()
                .and_then(|b| serde_json::from_slice::<BucketMeta>(&b).ok())
                .map(|m| UNIX_EPOCH + Duration::from_millis(m.created_ms))
                .or_else(|| entry.metadata().ok()?.modified().ok())
                .unwrap_or(UNIX_EPOCH);
            out.push(BucketInfo { name, created });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    // ------------------------------------------------------------ objects

    /// The object_store path of an object, or S3's error for a key this
    /// layout cannot hold.
    fn location(&self, bucket: &str, key: &str) -> Result<Path, ObjectsError> {
        check_key(key)?;
        Path::parse(format!("{bucket}/{key}"))
            .map_err(|_| unsupported_key(key))
            .and_then(|p| {
                // The file LocalFileSystem would write must be the one this
                // store reads: inside the bucket, at the key's own path.
                let file = self
                    .fs
                    .path_to_filesystem(&p)
                    .map_err(|_| unsupported_key(key))?;
                if file != self.bucket_dir(bucket).join(key) {
                    return Err(unsupported_key(key));
                }
                Ok(p)
            })
    }

    fn file(&self, bucket: &str, key: &str) -> PathBuf {
        self.bucket_dir(bucket).join(key)
    }

    /// Writes an object from bytes in memory (the in-process writers' call).
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
    ) -> Result<ObjectInfo, ObjectsError> {
        self.put_with(bucket, key, bytes, PutOptions::default())
            .await
    }

    /// Writes an object from bytes in memory.
    pub async fn put_with(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectInfo, ObjectsError> {
        let location = self.location(bucket, key)?;
        let _writing = self.writing(bucket).await;
        self.require_bucket(bucket)?;
        if bytes.len() as u64 > self.max_put_bytes {
            return Err(self.too_large());
        }
        let digest: [u8; 16] = Md5::digest(&bytes).into();
        if opts.content_md5.is_some_and(|want| want != digest) {
            return Err(ObjectsError::BadDigest);
        }
        let encryption = opts.sse.as_ref().map(|s| self.resolve_sse(s)).transpose()?;
        let plain_size = bytes.len() as u64;
        let (bytes, etag) = match &encryption {
            Some(enc) => {
                let sealed = self
                    .sealer(enc, &object_arn(bucket, key))?
                    .seal_all(&bytes)?;
                let stored: [u8; 16] = Md5::digest(&sealed).into();
                (Bytes::from(sealed), etag_of(Some(enc), digest, stored))
            }
            None => (bytes, etag_of(None, digest, digest)),
        };
        self.check_target(bucket, key)?;
        let target = self.file(bucket, key);
        let before = staged_beside(&target);
        if let Err(e) = self.fs.put(&location, PutPayload::from_bytes(bytes)).await {
            remove_staged(&target, &before);
            // A path that came to conflict meanwhile is the client's
            // error, whatever object_store made of the failed rename.
            self.check_target(bucket, key)?;
            return Err(store_error(e, key));
        }
        let sealed = encryption.map(|e| (e, plain_size));
        self.record(bucket, key, etag, &opts, sealed).await
    }

    /// Copies a request body into a staged upload as it arrives, within the
    /// size limit, and answers the writer (to finish or abort) with the MD5
    /// of what it wrote. On any error the upload is aborted.
    async fn stream_into(
        &self,
        upload: Box<dyn object_store::MultipartUpload>,
        body: &mut BodyStream,
        sealer: Option<ObjectSealer>,
    ) -> Result<Streamed, ObjectsError> {
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 1 << 20);
        let mut md5 = Md5::new();
        let mut stored = Md5::new();
        let mut sealer = sealer;
        if let Some(s) = &sealer {
            stored.update(s.header());
            writer.put(Bytes::copy_from_slice(s.header()));
        }
        let mut total: u64 = 0;
        loop {
            match next(body).await {
                Some(Ok(chunk)) => {
                    total = total.saturating_add(chunk.len() as u64);
                    if total > self.max_put_bytes {
                        let _ = writer.abort().await;
                        return Err(self.too_large());
                    }
                    md5.update(&chunk);
                    let out = match sealer.as_mut().map(|s| s.update(&chunk)) {
                        Some(Ok(sealed)) => Bytes::from(sealed),
                        Some(Err(e)) => {
                            let _ = writer.abort().await;
                            return Err(e.into());
                        }
                        None => chunk,
                    };
                    if out.is_empty() {
                        continue;
                    }
                    stored.update(&out);
                    if let Err(e) = writer.wait_for_capacity(4).await {
                        let _ = writer.abort().await;
                        return Err(e.into());
                    }
                    writer.put(out);
                }
                Some(Err(e)) => {
                    let _ = writer.abort().await;
                    return Err(ObjectsError::Body(e));
                }
                None => {
                    if let Some(s) = sealer.take() {
                        let last = match s.finish() {
                            Ok(last) => last,
                            Err(e) => {
                                let _ = writer.abort().await;
                                return Err(e.into());
                            }
                        };
                        stored.update(&last);
                        writer.put(Bytes::from(last));
                    }
                    return Ok(Streamed {
                        writer,
                        plain_md5: md5.finalize().into(),
                        stored_md5: stored.finalize().into(),
                        plain_size: total,
                    });
                }
            }
        }
    }

    /// Writes an object from a request body as it arrives. Nothing replaces
    /// the old object unless the whole body arrived (and matched its
    /// Content-MD5).
    pub async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        mut body: BodyStream,
        opts: PutOptions,
    ) -> Result<ObjectInfo, ObjectsError> {
        let location = self.location(bucket, key)?;
        let _writing = self.writing(bucket).await;
        self.require_bucket(bucket)?;
        self.check_target(bucket, key)?;
        let encryption = opts.sse.as_ref().map(|s| self.resolve_sse(s)).transpose()?;
        let sealer = encryption
            .as_ref()
            .map(|e| self.sealer(e, &object_arn(bucket, key)))
            .transpose()?;
        let target = self.file(bucket, key);
        let before = staged_beside(&target);
        let upload = self
            .fs
            .put_multipart(&location)
            .await
            .map_err(|e| store_error(e, key))?;
        let streamed = self.stream_into(upload, &mut body, sealer).await?;
        let writer = streamed.writer;
        if opts
            .content_md5
            .is_some_and(|want| want != streamed.plain_md5)
        {
            let _ = writer.abort().await;
            return Err(ObjectsError::BadDigest);
        }
        if let Err(e) = writer.finish().await {
            // object_store leaves its staging file when the rename fails.
            remove_staged(&target, &before);
            // A path that came to conflict meanwhile is the client's
            // error, whatever object_store made of the failed rename.
            self.check_target(bucket, key)?;
            return Err(store_error(e, key));
        }
        let etag = etag_of(encryption.as_ref(), streamed.plain_md5, streamed.stored_md5);
        let sealed = encryption.map(|e| (e, streamed.plain_size));
        self.record(bucket, key, etag, &opts, sealed).await
    }

    /// Writes the metadata of an object just written, and answers its info.
    async fn record(
        &self,
        bucket: &str,
        key: &str,
        etag: String,
        opts: &PutOptions,
        sealed: Option<(Encryption, u64)>,
    ) -> Result<ObjectInfo, ObjectsError> {
        let file = self.file(bucket, key);
        let meta_path = self.meta_path(bucket, key);
        let legacy = self.legacy_meta_path(bucket, key);
        let key = key.to_string();
        let content_type = opts.content_type.clone();
        let metadata = opts.metadata.clone();
        tokio::task::spawn_blocking(move || -> Result<ObjectInfo, ObjectsError> {
            let stat = std::fs::metadata(&file)?;
            let mtime = stat.modified()?;
            let meta = Meta {
                key: key.clone(),
                etag: etag.clone(),
                content_type: content_type.clone(),
                metadata: metadata.clone(),
                size: stat.len(),
                mtime_ns: nanos(mtime),
                encryption: sealed.as_ref().map(|(e, _)| e.clone()),
                plain_size: sealed.as_ref().map(|(_, n)| *n),
            };
            write_durable(&meta_path, &serde_json::to_vec(&meta).unwrap_or_default())?;
            // An older store's metadata of the key describes an older file.
            match std::fs::remove_file(&legacy) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(ObjectInfo {
                key,
                size: sealed.as_ref().map_or(stat.len(), |(_, n)| *n),
                etag,
                last_modified: mtime,
                content_type: content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
                metadata,
                encryption: sealed.map(|(e, _)| e),
            })
        })
        .await?
    }

    /// What the store knows of an object (NoSuchKey if there is none).
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, ObjectsError> {
        self.location(bucket, key)?;
        self.require_bucket(bucket)?;
        let this = self.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        tokio::task::spawn_blocking(move || this.info_blocking(&bucket, &key)).await?
    }

    fn info_blocking(&self, bucket: &str, key: &str) -> Result<ObjectInfo, ObjectsError> {
        let no_such_key = || ObjectsError::NoSuchKey {
            key: key.to_string(),
        };
        let file = self.file(bucket, key);
        let stat = match std::fs::symlink_metadata(&file) {
            Ok(s) if s.is_file() => s,
            Ok(_) => return Err(no_such_key()),
            Err(e) if is_missing(&e) => return Err(no_such_key()),
            Err(e) => return Err(e.into()),
        };
        if !self.inside_bucket(bucket, &file) {
            return Err(no_such_key());
        }
        self.info_of(bucket, key, &file, &stat)
    }

    /// Whether a file really is under its bucket's directory: a directory
    /// on its way that is a symlink (which no request can make, but an
    /// operator could) must not lead a read elsewhere. The bucket's own
    /// directory may be a symlink (a bucket kept on another disk).
    fn inside_bucket(&self, bucket: &str, file: &FsPath) -> bool {
        match (
            std::fs::canonicalize(self.bucket_dir(bucket)),
            std::fs::canonicalize(file),
        ) {
            (Ok(dir), Ok(real)) => real.starts_with(dir),
            _ => false,
        }
    }

    fn info_of(
        &self,
        bucket: &str,
        key: &str,
        file: &FsPath,
        stat: &std::fs::Metadata,
    ) -> Result<ObjectInfo, ObjectsError> {
        let mtime = stat.modified()?;
        let meta_path = self.meta_path(bucket, key);
        let meta = match self.read_meta(bucket, key, stat) {
            Some(m) => m,
            None => {
                // A file this store did not write (or rewritten since):
                // its ETag is the MD5 of its bytes, kept for next time.
                let mut f = std::fs::File::open(file)?;
                let mut md5 = Md5::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut head: Vec<u8> = Vec::new();
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    if head.len() < ripstream_keyring::MAX_HEADER_LEN {
                        let take = n.min(ripstream_keyring::MAX_HEADER_LEN - head.len());
                        head.extend_from_slice(&buf[..take]);
                    }
                    md5.update(&buf[..n]);
                }
                let sealed = ripstream_keyring::header_len(&head).is_some();
                let mut m = Meta {
                    key: key.to_string(),
                    etag: format!("\"{}\"", hex::encode(md5.finalize())),
                    content_type: None,
                    metadata: BTreeMap::new(),
                    size: stat.len(),
                    mtime_ns: nanos(mtime),
                    encryption: None,
                    plain_size: None,
                };
                if sealed {
                    // A sealed file whose record is not (yet) written: the
                    // writer renamed it into place and records it next, or
                    // crashed in between. Its encryption is read from its
                    // own header, and nothing is cached, so the writer's
                    // record is never overwritten by a lesser one.
                    self.read_sealing(bucket, key, &head, stat.len(), &mut m);
                } else if let Err(e) =
                    write_plain(&meta_path, &serde_json::to_vec(&m).unwrap_or_default())
                {
                    // A cache: losing it costs only the hash again.
                    tracing::debug!(error = %e, key, "could not cache an object's ETag");
                }
                m
            }
        };
        let size = match (&meta.encryption, meta.plain_size) {
            (Some(_), Some(n)) => n,
            _ => stat.len(),
        };
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            etag: meta.etag,
            last_modified: mtime,
            content_type: meta
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
            metadata: meta.metadata,
            encryption: meta.encryption,
        })
    }

    /// Fills in the encryption of a sealed file that has no record, from
    /// its header (`head`, its first bytes), when the keyring opens it.
    fn read_sealing(&self, bucket: &str, key: &str, head: &[u8], len: u64, m: &mut Meta) {
        let Some(kr) = self.keyring.as_deref() else {
            return;
        };
        let Ok(Ok(opener)) = kr.open_object(head, object_arn(bucket, key).as_bytes()) else {
            tracing::warn!(
                bucket,
                key,
                "a sealed object without its record cannot be opened with the keyring"
            );
            return;
        };
        let key_id = opener.key_id().to_string();
        let sse_s3 = kr
            .resolve(ripstream_keyring::SSE_S3_ALIAS)
            .is_ok_and(|id| id == key_id);
        m.plain_size = opener.plain_len(len.saturating_sub(opener.header_len() as u64));
        m.encryption = Some(Encryption {
            algorithm: if sse_s3 { AES256 } else { AWS_KMS }.to_string(),
            key_arn: (!sse_s3).then(|| kr.key_arn(&key_id)),
            key_id,
        });
    }

    /// An object's bytes, all of them or `range` (start, end inclusive,
    /// already checked against the size by the caller's `resolve`).
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<RangeSpec>,
    ) -> Result<(ObjectInfo, Bytes, Option<(u64, u64)>), ObjectsError> {
        // Opened before it is judged, as a streamed read: an overwrite in
        // between cannot pair one version's info with another's bytes.
        let OpenObject {
            info,
            file,
            keyring,
            context,
        } = self.open_object(bucket, key).await?;
        tokio::task::spawn_blocking(move || {
            let span = range.map(|r| r.resolve(info.size)).transpose()?;
            let (start, len) = match span {
                Some((s, e)) => (s, e - s + 1),
                None => (0, info.size),
            };
            let sealed = info.encryption.is_some();
            let mut r = plain_reader(keyring.as_deref(), file, sealed, &context, start, len)?;
            let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            r.read_to_end(&mut buf)?;
            Ok((info, Bytes::from(buf), span))
        })
        .await?
    }

    /// An object's bytes (all, or `range`) as a stream read while it is
    /// sent: the file is opened first, so a concurrent overwrite (a rename
    /// over it) never mixes two versions into one answer.
    pub async fn get_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<RangeSpec>,
    ) -> Result<(ObjectInfo, u64, Option<(u64, u64)>, BodyStream), ObjectsError> {
        self.open_object(bucket, key).await?.stream(range).await
    }

    /// Opens an object's file and answers what it is: conditions judged on
    /// this [`OpenObject`]'s info hold for the bytes it then streams, even
    /// if the key is overwritten in between.
    pub async fn open_object(&self, bucket: &str, key: &str) -> Result<OpenObject, ObjectsError> {
        self.location(bucket, key)?;
        self.require_bucket(bucket)?;
        let this = self.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        tokio::task::spawn_blocking(move || {
            let no_such_key = || ObjectsError::NoSuchKey { key: key.clone() };
            let path = this.file(&bucket, &key);
            match std::fs::symlink_metadata(&path) {
                Ok(s) if s.is_file() => {}
                Ok(_) => return Err(no_such_key()),
                Err(e) if is_missing(&e) => return Err(no_such_key()),
                Err(e) => return Err(e.into()),
            }
            if !this.inside_bucket(&bucket, &path) {
                return Err(no_such_key());
            }
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if is_missing(&e) => return Err(no_such_key()),
                Err(e) => return Err(e.into()),
            };
            let stat = file.metadata()?;
            let info = this.info_of(&bucket, &key, &path, &stat)?;
            Ok(OpenObject {
                info,
                file,
                keyring: this.keyring.clone(),
                context: object_arn(&bucket, &key),
            })
        })
        .await?
    }

    /// Deletes an object; deleting one that is not there succeeds, as in S3.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectsError> {
        self.location(bucket, key)?;
        self.require_bucket(bucket)?;
        let this = self.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        tokio::task::spawn_blocking(move || this.delete_blocking(&bucket, &key)).await?
    }

    fn delete_blocking(&self, bucket: &str, key: &str) -> Result<(), ObjectsError> {
        let file = self.file(bucket, key);
        match std::fs::symlink_metadata(&file) {
            Ok(s) if s.is_file() => std::fs::remove_file(&file)?,
            Ok(_) => return Ok(()),
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for meta in [
            self.meta_path(bucket, key),
            self.legacy_meta_path(bucket, key),
        ] {
            match std::fs::remove_file(meta) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // S3 has no directories: the ones the key made go with it, up to
        // (never including) the bucket's own.
        let bucket_dir = self.bucket_dir(bucket);
        let mut dir = file.parent().map(FsPath::to_path_buf);
        while let Some(d) = dir {
            if d == bucket_dir || !d.starts_with(&bucket_dir) {
                break;
            }
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(FsPath::to_path_buf);
        }
        if let Some(parent) = file.parent() {
            let _ = sync_dir(parent);
        }
        Ok(())
    }

    /// Copies an object (its metadata too unless `replace` gives new).
    /// The bytes go file to file (the kernel's copy where it has one),
    /// never through memory whole: a copy of a big object must not cost
    /// the server its size in RAM.
    pub async fn copy(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        replace: Option<PutOptions>,
        sse: Option<Sse>,
    ) -> Result<ObjectInfo, ObjectsError> {
        self.copy_judged(from, to, replace, sse, None).await
    }

    /// [`Objects::copy`] of a source whose encryption the caller was
    /// judged on (`judged`: kms:Decrypt of its key): a source overwritten
    /// since under other encryption is not copied (its key was never
    /// judged), but answered `PreconditionFailed`.
    pub async fn copy_judged(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        replace: Option<PutOptions>,
        sse: Option<Sse>,
        judged: Option<Option<Encryption>>,
    ) -> Result<ObjectInfo, ObjectsError> {
        self.location(from.0, from.1)?;
        self.require_bucket(from.0)?;
        self.location(to.0, to.1)?;
        let _writing = self.writing(to.0).await;
        self.require_bucket(to.0)?;
        // As S3: the copy is encrypted as its request says, never merely
        // because its source was.
        let encryption = sse.as_ref().map(|s| self.resolve_sse(s)).transpose()?;
        let this = self.clone();
        let (fb, fk) = (from.0.to_string(), from.1.to_string());
        let (tb, tk) = (to.0.to_string(), to.1.to_string());
        let enc = encryption.clone();
        let (info, etag) = tokio::task::spawn_blocking(move || {
            this.copy_blocking(&fb, &fk, &tb, &tk, enc.as_ref(), judged.as_ref())
        })
        .await??;
        let opts = replace.unwrap_or(PutOptions {
            content_type: Some(info.content_type.clone()),
            metadata: info.metadata.clone(),
            content_md5: None,
            sse: None,
        });
        // A multipart object's ETag is kept by a byte-for-byte copy (S3
        // computes a new one only for a copy it re-parts; a single copy
        // keeps the MD5); a copy decrypted or sealed anew has its own.
        let etag = etag.unwrap_or_else(|| info.etag.clone());
        let sealed = encryption.map(|e| (e, info.size));
        self.record(to.0, to.1, etag, &opts, sealed).await
    }

    /// Copies the source's file into a staging file beside the target,
    /// fsynced, then renamed over it (and the directory fsynced), as
    /// object_store writes; answers the source's info as it was copied.
    fn copy_blocking(
        &self,
        bucket: &str,
        key: &str,
        to_bucket: &str,
        to_key: &str,
        encryption: Option<&Encryption>,
        judged: Option<&Option<Encryption>>,
    ) -> Result<(ObjectInfo, Option<String>), ObjectsError> {
        let no_such_key = || ObjectsError::NoSuchKey {
            key: key.to_string(),
        };
        let path = self.file(bucket, key);
        match std::fs::symlink_metadata(&path) {
            Ok(s) if s.is_file() => {}
            Ok(_) => return Err(no_such_key()),
            Err(e) if is_missing(&e) => return Err(no_such_key()),
            Err(e) => return Err(e.into()),
        }
        if !self.inside_bucket(bucket, &path) {
            return Err(no_such_key());
        }
        // The source is opened first, so a concurrent overwrite of it
        // never gives the copy one version's bytes and another's ETag.
        let src = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Err(no_such_key()),
            Err(e) => return Err(e.into()),
        };
        let stat = src.metadata()?;
        let info = self.info_of(bucket, key, &path, &stat)?;
        if judged.is_some_and(|j| *j != info.encryption) {
            return Err(ObjectsError::PreconditionFailed {
                condition: "x-amz-copy-source",
            });
        }
        let target = self.file(to_bucket, to_key);
        self.check_target(to_bucket, to_key)?;
        let parent = target
            .parent()
            .map(FsPath::to_path_buf)
            .ok_or_else(|| unsupported_key(to_key))?;
        // Opened (the data key unwrapped) and sealed before any file is
        // made: a key that cannot be used leaves nothing behind.
        let source = if info.encryption.is_some() || encryption.is_some() {
            let reader = plain_reader(
                self.keyring.as_deref(),
                src,
                info.encryption.is_some(),
                &object_arn(bucket, key),
                0,
                info.size,
            )?;
            let sealer = encryption
                .map(|e| self.sealer(e, &object_arn(to_bucket, to_key)))
                .transpose()?;
            CopyFrom::Transform(reader, sealer)
        } else {
            CopyFrom::Raw(src)
        };
        let made = self.make_dirs(to_bucket, &parent, to_key)?;
        let staging = staging_path(&target);
        let result = (|| -> std::io::Result<Option<String>> {
            let mut dst = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staging)?;
            let etag = match source {
                CopyFrom::Transform(mut reader, sealer) => {
                    let (plain, stored) = seal_copy(&mut reader, sealer, &mut dst)?;
                    Some(etag_of(encryption, plain, stored))
                }
                CopyFrom::Raw(mut src) => {
                    std::io::copy(&mut (&mut src).take(stat.len()), &mut dst)?;
                    None
                }
            };
            dst.sync_all()?;
            drop(dst);
            std::fs::rename(&staging, &target)?;
            sync_dir(&parent)?;
            Ok(etag)
        })();
        let etag = match result {
            Ok(etag) => etag,
            Err(e) => {
                let _ = std::fs::remove_file(&staging);
                return Err(io_conflict(e, to_key));
            }
        };
        for dir in made {
            if let Some(up) = dir.parent() {
                sync_dir(up)?;
            }
        }
        Ok((info, etag))
    }

    /// Creates the directories up to `dir` inside the bucket; answers the
    /// ones it made (their parents need an fsync once the write is in).
    fn make_dirs(
        &self,
        bucket: &str,
        dir: &FsPath,
        key: &str,
    ) -> Result<Vec<PathBuf>, ObjectsError> {
        let bucket_dir = self.bucket_dir(bucket);
        let mut missing = Vec::new();
        let mut d = dir.to_path_buf();
        while d != bucket_dir && d.starts_with(&bucket_dir) && !d.is_dir() {
            missing.push(d.clone());
            match d.parent() {
                Some(p) => d = p.to_path_buf(),
                None => break,
            }
        }
        missing.reverse();
        for m in &missing {
            match std::fs::create_dir(m) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && m.is_dir() => {}
                Err(e) => return Err(io_conflict(e, key)),
            }
        }
        Ok(missing)
    }

    /// Refuses, before anything is written, a key whose file would be an
    /// existing directory or lie under an existing object: the layout
    /// cannot hold both.
    fn check_target(&self, bucket: &str, key: &str) -> Result<(), ObjectsError> {
        let bucket_dir = self.bucket_dir(bucket);
        let target = self.file(bucket, key);
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Err(conflict(key));
        }
        let mut d = target.parent();
        while let Some(dir) = d {
            if dir == bucket_dir || !dir.starts_with(&bucket_dir) {
                break;
            }
            if std::fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
                return Err(conflict(key));
            }
            d = dir.parent();
        }
        Ok(())
    }

    /// A page of a bucket's keys in S3's order (UTF-8 byte order).
    pub async fn list(&self, bucket: &str, query: ListQuery<'_>) -> Result<Listing, ObjectsError> {
        self.require_bucket(bucket)?;
        let this = self.clone();
        let bucket = bucket.to_string();
        let prefix = query.prefix.to_string();
        let delimiter = query.delimiter.filter(|d| !d.is_empty()).map(String::from);
        let after = query.after.map(String::from);
        let max = query.max_keys;
        tokio::task::spawn_blocking(move || {
            this.list_blocking(
                &bucket,
                &prefix,
                delimiter.as_deref(),
                after.as_deref(),
                max,
            )
        })
        .await?
    }

    fn list_blocking(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Listing, ObjectsError> {
        let bucket_dir = self.bucket_dir(bucket);
        let mut listing = Listing::default();
        // Walk only the directory the prefix names; a prefix with `..` or
        // an empty segment names no key at all.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !dir_part.is_empty() && check_key(dir_part).is_err() {
            return Ok(listing);
        }
        let (start, rel) = if dir_part.is_empty() {
            (bucket_dir.clone(), String::new())
        } else {
            (bucket_dir.join(dir_part), format!("{dir_part}/"))
        };
        let mut walk = Walk {
            prefix,
            after,
            // After a common prefix (a continuation at one), nothing under
            // it again.
            skip: after
                .filter(|a| delimiter.is_some_and(|d| a.ends_with(d)))
                .map(String::from),
            visited: 0,
        };
        walk.run(&start, &rel, &mut |key| {
            let rolled = delimiter.and_then(|d| {
                let rest = &key[prefix.len()..];
                rest.find(d)
                    .map(|i| key[..prefix.len() + i + d.len()].to_string())
            });
            if let Some(cp) = rolled {
                // Every key starting with a common prefix rolls up into it.
                if after.is_some_and(|a| cp.as_str() <= a) {
                    return Ok(Step::SkipUnder(cp));
                }
                if listing.entries.len() >= max {
                    listing.truncated = true;
                    return Ok(Step::Stop);
                }
                listing.entries.push(Entry::Prefix(cp.clone()));
                return Ok(Step::SkipUnder(cp));
            }
            if listing.entries.len() >= max {
                listing.truncated = true;
                return Ok(Step::Stop);
            }
            let file = bucket_dir.join(&key);
            let Ok(stat) = std::fs::symlink_metadata(&file) else {
                // Deleted since the walk read its directory.
                return Ok(Step::Next);
            };
            listing
                .entries
                .push(Entry::Object(self.info_of(bucket, &key, &file, &stat)?));
            Ok(Step::Next)
        })?;
        listing.scanned = walk.visited;
        Ok(listing)
    }

    // ------------------------------------------------------------ multipart

    fn upload_dir(&self, bucket: &str, upload_id: &str) -> Result<PathBuf, ObjectsError> {
        // Upload ids are this store's own (a UUID's hex); anything else
        // names no upload, and never a path.
        if upload_id.is_empty()
            || upload_id.len() > 64
            || !upload_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ObjectsError::NoSuchUpload {
                upload_id: upload_id.to_string(),
            });
        }
        Ok(self.uploads_dir(bucket).join(upload_id))
    }

    fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(PathBuf, Upload), ObjectsError> {
        let no_such = || ObjectsError::NoSuchUpload {
            upload_id: upload_id.to_string(),
        };
        let dir = self.upload_dir(bucket, upload_id)?;
        let upload: Upload = std::fs::read(dir.join("upload.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(no_such)?;
        if upload.key != key {
            return Err(no_such());
        }
        Ok((dir, upload))
    }

    /// How a multipart upload's parts and object are encrypted (what its
    /// KMS permissions are checked against).
    pub fn upload_encryption(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Encryption>, ObjectsError> {
        Ok(self.upload(bucket, key, upload_id)?.1.encryption)
    }

    /// Starts a multipart upload; answers its id.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
    ) -> Result<String, ObjectsError> {
        self.location(bucket, key)?;
        let _writing = self.writing(bucket).await;
        self.require_bucket(bucket)?;
        self.check_target(bucket, key)?;
        let encryption = opts.sse.as_ref().map(|s| self.resolve_sse(s)).transpose()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.upload_dir(bucket, &id)?;
        let upload = Upload {
            key: key.to_string(),
            content_type: opts.content_type,
            metadata: opts.metadata,
            initiated_ms: millis(SystemTime::now()),
            encryption,
        };
        std::fs::create_dir_all(&dir)?;
        write_durable(
            &dir.join("upload.json"),
            &serde_json::to_vec(&upload).unwrap_or_default(),
        )?;
        Ok(id)
    }

    /// Stores one part from a request body; answers its ETag.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: BodyStream,
        content_md5: Option<[u8; 16]>,
    ) -> Result<String, ObjectsError> {
        let _writing = self.writing(bucket).await;
        self.require_bucket(bucket)?;
        let (_, record) = self.upload(bucket, key, upload_id)?;
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(ObjectsError::InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive".into(),
            ));
        }
        let location = Path::parse(format!(".meta/uploads/{bucket}/{upload_id}/{number}"))
            .map_err(|_| unsupported_key(key))?;
        // Each part is sealed under a data key of its own, bound to the
        // upload and part number.
        let encryption = record.encryption;
        let sealer = encryption
            .as_ref()
            .map(|e| self.sealer(e, &part_context(bucket, key, upload_id, number)))
            .transpose()?;
        let upload = self.fs.put_multipart(&location).await?;
        let mut body = body;
        let streamed = self.stream_into(upload, &mut body, sealer).await?;
        let writer = streamed.writer;
        if content_md5.is_some_and(|want| want != streamed.plain_md5) {
            let _ = writer.abort().await;
            return Err(ObjectsError::BadDigest);
        }
        writer.finish().await?;
        let etag = etag_of(encryption.as_ref(), streamed.plain_md5, streamed.stored_md5);
        let plain_size = encryption.as_ref().map(|_| streamed.plain_size);
        let part = self
            .uploads_dir(bucket)
            .join(upload_id)
            .join(number.to_string());
        let sidecar = part.with_file_name(format!("{number}.json"));
        let recorded = etag.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ObjectsError> {
            let stat = std::fs::metadata(&part)?;
            let meta = PartMeta {
                etag: recorded,
                size: stat.len(),
                mtime_ns: nanos(stat.modified()?),
                plain_size,
            };
            write_durable(&sidecar, &serde_json::to_vec(&meta).unwrap_or_default())?;
            Ok(())
        })
        .await??;
        Ok(etag)
    }

    /// The parts uploaded so far, by number.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>, ObjectsError> {
        self.require_bucket(bucket)?;
        let (dir, upload) = self.upload(bucket, key, upload_id)?;
        let sealing = self.part_sealing(&upload, bucket, key, upload_id);
        tokio::task::spawn_blocking(move || parts_of(&dir, sealing.as_ref())).await?
    }

    /// How an upload's parts are sealed, for reading them back.
    fn part_sealing(
        &self,
        upload: &Upload,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Option<PartSealing> {
        upload.encryption.as_ref().map(|e| PartSealing {
            kms: e.is_kms(),
            keyring: self.keyring.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
        })
    }

    /// The bucket's multipart uploads in progress, in S3's order: by key,
    /// then by initiation time. An upload whose record cannot be read (torn
    /// by a crash as it was created) is left out, as it cannot be completed.
    pub async fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadInfo>, ObjectsError> {
        self.require_bucket(bucket)?;
        let dir = self.uploads_dir(bucket);
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if is_missing(&e) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry?;
                let Some(upload_id) = entry.file_name().to_str().map(String::from) else {
                    continue;
                };
                let Some(upload) = std::fs::read(entry.path().join("upload.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Upload>(&b).ok())
                else {
                    continue;
                };
                out.push(UploadInfo {
                    key: upload.key,
                    upload_id,
                    initiated_ms: upload.initiated_ms,
                });
            }
            out.sort_by(|a, b| {
                (&a.key, a.initiated_ms, &a.upload_id).cmp(&(&b.key, b.initiated_ms, &b.upload_id))
            });
            Ok(out)
        })
        .await?
    }

    /// Joins the named parts into the object; answers its info, with S3's
    /// multipart ETag (the MD5 of the parts' MD5s, `-` and their count).
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectInfo, ObjectsError> {
        let location = self.location(bucket, key)?;
        let _writing = self.writing(bucket).await;
        self.require_bucket(bucket)?;
        let (dir, upload) = self.upload(bucket, key, upload_id)?;
        if parts.is_empty() {
            return Err(ObjectsError::InvalidRequest(
                "You must specify at least one part".into(),
            ));
        }
        if parts.len() > MAX_PARTS as usize {
            return Err(ObjectsError::InvalidArgument(format!(
                "Part number must be an integer between 1 and {MAX_PARTS}, inclusive"
            )));
        }
        if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(ObjectsError::InvalidPartOrder);
        }
        let sealing = self.part_sealing(&upload, bucket, key, upload_id);
        let have = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || parts_of(&dir, sealing.as_ref())).await??
        };
        let mut chosen = Vec::with_capacity(parts.len());
        for (i, (number, etag)) in parts.iter().enumerate() {
            let Some(p) = have.iter().find(|p| p.number == *number) else {
                return Err(ObjectsError::InvalidPart);
            };
            if p.etag.trim_matches('"') != etag.trim_matches('"') {
                return Err(ObjectsError::InvalidPart);
            }
            if i + 1 < parts.len() && p.size < MIN_PART_BYTES {
                return Err(ObjectsError::EntityTooSmall);
            }
            chosen.push(p.clone());
        }
        let mut all = Vec::with_capacity(16 * chosen.len());
        for p in &chosen {
            all.extend(hex::decode(p.etag.trim_matches('"')).unwrap_or_default());
        }
        let etag = format!("\"{}-{}\"", hex::encode(Md5::digest(&all)), chosen.len());
        self.check_target(bucket, key)?;
        let target = self.file(bucket, key);
        let before = staged_beside(&target);
        let writer_upload = self
            .fs
            .put_multipart(&location)
            .await
            .map_err(|e| store_error(e, key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(writer_upload, 1 << 20);
        // An encrypted upload's parts are opened and their plaintext sealed
        // anew as one object: its chunks must run unbroken across parts.
        let mut sealer = match &upload.encryption {
            Some(e) => match self.sealer(e, &object_arn(bucket, key)) {
                Ok(s) => Some(s),
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            },
            None => None,
        };
        if let Some(s) = &sealer {
            writer.put(Bytes::copy_from_slice(s.header()));
        }
        let sealed = upload.encryption.is_some();
        let mut plain_total: u64 = 0;
        // Each part goes in in bounded pieces, never whole in memory.
        for p in &chosen {
            let path = dir.join(p.number.to_string());
            let keyring = self.keyring.clone();
            let context = part_context(bucket, key, upload_id, p.number);
            let size = p.size;
            let opened = tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(path)?;
                plain_reader(keyring.as_deref(), f, sealed, &context, 0, size)
            })
            .await?;
            let mut file = match opened {
                Ok(f) => Some(f),
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            while let Some(f) = file.take() {
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = Vec::with_capacity(READ_CHUNK as usize);
                    let mut f = f;
                    let r = (&mut f).take(READ_CHUNK).read_to_end(&mut buf).map(|_| buf);
                    (f, r)
                })
                .await?;
                match read {
                    (_, Ok(buf)) if buf.is_empty() => {}
                    (f, Ok(buf)) => {
                        if let Err(e) = writer.wait_for_capacity(4).await {
                            let _ = writer.abort().await;
                            return Err(e.into());
                        }
                        plain_total += buf.len() as u64;
                        let out = match sealer.as_mut().map(|s| s.update(&buf)) {
                            Some(Ok(sealed)) => Bytes::from(sealed),
                            Some(Err(e)) => {
                                let _ = writer.abort().await;
                                return Err(e.into());
                            }
                            None => Bytes::from(buf),
                        };
                        if !out.is_empty() {
                            writer.put(out);
                        }
                        file = Some(f);
                    }
                    (_, Err(e)) => {
                        let _ = writer.abort().await;
                        return Err(e.into());
                    }
                }
            }
        }
        if let Some(s) = sealer.take() {
            match s.finish() {
                Ok(last) => writer.put(Bytes::from(last)),
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e.into());
                }
            }
        }
        if let Err(e) = writer.finish().await {
            // object_store leaves its staging file when the rename fails.
            remove_staged(&target, &before);
            // A path that came to conflict meanwhile is the client's
            // error, whatever object_store made of the failed rename.
            self.check_target(bucket, key)?;
            return Err(store_error(e, key));
        }
        let info = self
            .record(
                bucket,
                key,
                etag,
                &PutOptions {
                    content_type: upload.content_type,
                    metadata: upload.metadata,
                    content_md5: None,
                    sse: None,
                },
                upload.encryption.map(|e| (e, plain_total)),
            )
            .await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(info)
    }

    /// Abandons a multipart upload and its parts.
    pub async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), ObjectsError> {
        self.require_bucket(bucket)?;
        let (dir, _) = self.upload(bucket, key, upload_id)?;
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }
}

/// An object's file, open, with what the store knows of it as opened.
#[derive(Debug)]
pub struct OpenObject {
    pub info: ObjectInfo,
    file: std::fs::File,
    keyring: Option<Arc<Keyring>>,
    /// What the object's data key is bound to (its ARN).
    context: String,
}

impl OpenObject {
    /// The object's bytes (all, or `range`) from the open file: its info
    /// again, the length sent, the span of a range, and the stream.
    pub async fn stream(
        self,
        range: Option<RangeSpec>,
    ) -> Result<(ObjectInfo, u64, Option<(u64, u64)>, BodyStream), ObjectsError> {
        let OpenObject {
            info,
            file,
            keyring,
            context,
        } = self;
        let span = range.map(|r| r.resolve(info.size)).transpose()?;
        let (start, len) = match span {
            Some((a, b)) => (a, b - a + 1),
            None => (0, info.size),
        };
        let sealed = info.encryption.is_some();
        // The data key is unwrapped here, before the answer's status: a
        // missing or disabled key is an error reply, not a cut stream.
        let file = tokio::task::spawn_blocking(move || {
            plain_reader(keyring.as_deref(), file, sealed, &context, start, len)
        })
        .await??;
        let stream: BodyStream = Box::pin(FileStream {
            file: Some(file),
            remaining: len,
            pending: None,
        });
        Ok((info, len, span, stream))
    }
}

/// Reads a file in pieces on the blocking pool, as the reply is sent.
struct FileStream {
    file: Option<Reader>,
    remaining: u64,
    #[allow(clippy::type_complexity)]
    pending: Option<tokio::task::JoinHandle<(Reader, std::io::Result<Vec<u8>>)>>,
}

/// Piece size of a streamed read.
const READ_CHUNK: u64 = 256 * 1024;

impl futures_core::Stream for FileStream {
    type Item = Result<Bytes, ripstream_api::BoxError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            if let Some(pending) = self.pending.as_mut() {
                let done = match std::pin::Pin::new(pending).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(done) => done,
                };
                self.pending = None;
                return Poll::Ready(match done {
                    Ok((file, Ok(buf))) => {
                        if buf.is_empty() {
                            // The file shrank under us: end short.
                            self.remaining = 0;
                            Some(Err(ObjectsError::Io(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the object's file was truncated while it was read",
                            ))
                            .into()))
                        } else {
                            self.remaining = self.remaining.saturating_sub(buf.len() as u64);
                            self.file = Some(file);
                            Some(Ok(Bytes::from(buf)))
                        }
                    }
                    Ok((_, Err(e))) => {
                        self.remaining = 0;
                        Some(Err(ObjectsError::Io(e).into()))
                    }
                    Err(e) => {
                        self.remaining = 0;
                        Some(Err(ObjectsError::Task(e).into()))
                    }
                });
            }
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            let Some(file) = self.file.take() else {
                return Poll::Ready(None);
            };
            let want = self.remaining.min(READ_CHUNK);
            self.pending = Some(tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity(want as usize);
                let mut file = file;
                let read = (&mut file).take(want).read_to_end(&mut buf).map(|_| buf);
                (file, read)
            }));
        }
    }
}

/// How the parts of an encrypted upload are sealed.
struct PartSealing {
    /// SSE-KMS: a part's ETag is its stored bytes' MD5; SSE-S3: its
    /// plaintext's.
    kms: bool,
    keyring: Option<Arc<Keyring>>,
    bucket: String,
    key: String,
    upload_id: String,
}

/// The parts in an upload's directory, by number, each with its MD5: from
/// its sidecar, or (a part uploaded before sidecars, or one whose sidecar
/// is stale or lost) hashed in pieces.
fn parts_of(dir: &FsPath, sealing: Option<&PartSealing>) -> Result<Vec<PartInfo>, ObjectsError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = entry.metadata()?;
        let mtime = stat.modified()?;
        let recorded = std::fs::read(dir.join(format!("{number}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice::<PartMeta>(&b).ok())
            .filter(|m| m.size == stat.len() && m.mtime_ns == nanos(mtime));
        let (etag, size) = match recorded {
            Some(m) => {
                let size = m.plain_size.unwrap_or(stat.len());
                (m.etag, size)
            }
            // A part whose sidecar a crash lost: hashed again as its ETag
            // was, from the stored bytes (plain, SSE-KMS) or the plaintext
            // (SSE-S3, opened again under its data key).
            None => match sealing {
                None => {
                    let etag = format!("\"{}\"", hex::encode(md5_of_file(&entry.path())?));
                    (etag, stat.len())
                }
                Some(p) => {
                    let size = sealed_plain_size(&entry.path())?;
                    let digest = if p.kms {
                        md5_of_file(&entry.path())?
                    } else {
                        let context = part_context(&p.bucket, &p.key, &p.upload_id, number);
                        let file = std::fs::File::open(entry.path())?;
                        let mut r =
                            plain_reader(p.keyring.as_deref(), file, true, &context, 0, size)?;
                        md5_of_reader(&mut r)?
                    };
                    (format!("\"{}\"", hex::encode(digest)), size)
                }
            },
        };
        out.push(PartInfo {
            number,
            size,
            etag,
            last_modified: mtime,
        });
    }
    out.sort_by_key(|p| p.number);
    Ok(out)
}

/// What a streamed write left: the upload to finish, the MD5s of the
/// plaintext and of the bytes stored (the same when not sealed), and the
/// plaintext's size.
struct Streamed {
    writer: WriteMultipart,
    plain_md5: [u8; 16],
    stored_md5: [u8; 16],
    plain_size: u64,
}

/// A copy's source: the file as it is, or its plaintext to seal anew.
enum CopyFrom {
    Raw(std::fs::File),
    Transform(Reader, Option<ObjectSealer>),
}

/// A source of an object's plaintext, moved to the blocking pool and back.
type Reader = Box<dyn Read + Send>;

/// The ETag S3 gives a single-part write: the plaintext's MD5, but for
/// SSE-KMS, whose ETag is not (S3: "not an MD5 digest of their object
/// data"): there it is the MD5 of the sealed bytes, so it still changes
/// with the content and reveals nothing of the plaintext.
fn etag_of(encryption: Option<&Encryption>, plain: [u8; 16], stored: [u8; 16]) -> String {
    let digest = if encryption.is_some_and(Encryption::is_kms) {
        stored
    } else {
        plain
    };
    format!("\"{}\"", hex::encode(digest))
}

/// What an object's data key is bound to: its ARN, as S3's encryption
/// context names it.
fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

/// What a part's data key is bound to.
fn part_context(bucket: &str, key: &str, upload_id: &str, number: u32) -> String {
    format!("arn:aws:s3:::{bucket}/{key}?uploadId={upload_id}&partNumber={number}")
}

/// The keyring's refusals as S3 answers them.
fn kms_error(e: KeyringError) -> ObjectsError {
    match e {
        KeyringError::NotFound(m) => ObjectsError::KmsNotFound(m),
        KeyringError::Disabled(m) => ObjectsError::KmsDisabled(m),
        e @ KeyringError::File { .. } => ObjectsError::Keyring(e),
    }
}

/// `len` plaintext bytes from `start` of an object's file: the file itself,
/// or, sealed, its chunks opened as they are read (only those the span
/// touches). The data key is unwrapped here, so a key that cannot be
/// used is an error before any byte.
fn plain_reader(
    keyring: Option<&Keyring>,
    mut file: std::fs::File,
    sealed: bool,
    context: &str,
    start: u64,
    len: u64,
) -> Result<Reader, ObjectsError> {
    if !sealed {
        file.seek(SeekFrom::Start(start))?;
        return Ok(Box::new(file.take(len)));
    }
    let keyring = keyring.ok_or_else(|| {
        ObjectsError::InvalidRequest(
            "The object is encrypted, but server-side encryption is not configured on this server (no keyring).".into(),
        )
    })?;
    let file_len = file.metadata()?.len();
    let mut header = vec![0u8; ripstream_keyring::MAX_HEADER_LEN.min(file_len as usize)];
    file.read_exact(&mut header)?;
    let opener = keyring
        .open_object(&header, context.as_bytes())
        .map_err(kms_error)??;
    let body = file_len.saturating_sub(opener.header_len() as u64);
    let plain = opener
        .plain_len(body)
        .ok_or(ripstream_keyring::SealError::BadHeader)?;
    let chunks = plain.div_ceil(opener.chunk_size() as u64).max(1);
    Ok(Box::new(PlainReader {
        file,
        opener,
        chunks,
        pos: start,
        end: start.saturating_add(len).min(plain),
        buf: Vec::new(),
        buf_at: 0,
        buf_base: u64::MAX,
    }))
}

/// The plaintext of a sealed file, chunk by chunk.
struct PlainReader {
    file: std::fs::File,
    opener: ObjectOpener,
    chunks: u64,
    /// The next plaintext byte to answer, and the span's end.
    pos: u64,
    end: u64,
    /// The open chunk's plaintext, and where it starts in the object.
    buf: Vec<u8>,
    buf_at: usize,
    buf_base: u64,
}

impl Read for PlainReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.end || out.is_empty() {
            return Ok(0);
        }
        let chunk = self.opener.chunk_size() as u64;
        let index = self.pos / chunk;
        if self.buf_base != index * chunk {
            let at = self.opener.chunk_offset(index);
            let sealed_len = chunk as usize + 16;
            self.file.seek(SeekFrom::Start(at))?;
            let mut sealed = Vec::with_capacity(sealed_len);
            (&mut self.file)
                .take(sealed_len as u64)
                .read_to_end(&mut sealed)?;
            let last = index + 1 == self.chunks;
            let plain = self
                .opener
                .open_chunk(index, last, &mut sealed)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let n = plain.len();
            sealed.truncate(n);
            self.buf = sealed;
            self.buf_base = index * chunk;
        }
        self.buf_at = (self.pos - self.buf_base) as usize;
        let avail = &self.buf[self.buf_at.min(self.buf.len())..];
        if avail.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the object's file ends before its recorded size",
            ));
        }
        let want = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let n = avail.len().min(out.len()).min(want);
        out[..n].copy_from_slice(&avail[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Copies a plaintext into `out`, sealed if `sealer`; answers the MD5s of
/// the plaintext and of what was written.
fn seal_copy(
    reader: &mut Reader,
    sealer: Option<ObjectSealer>,
    out: &mut std::fs::File,
) -> std::io::Result<([u8; 16], [u8; 16])> {
    use std::io::Write;
    let mut plain = Md5::new();
    let mut stored = Md5::new();
    let mut sealer = sealer;
    if let Some(s) = &sealer {
        stored.update(s.header());
        out.write_all(s.header())?;
    }
    let mut buf = vec![0u8; READ_CHUNK as usize];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        plain.update(&buf[..n]);
        match sealer.as_mut() {
            Some(s) => {
                let sealed = s.update(&buf[..n]).map_err(std::io::Error::other)?;
                stored.update(&sealed);
                out.write_all(&sealed)?;
            }
            None => {
                stored.update(&buf[..n]);
                out.write_all(&buf[..n])?;
            }
        }
    }
    if let Some(s) = sealer {
        let last = s.finish().map_err(std::io::Error::other)?;
        stored.update(&last);
        out.write_all(&last)?;
    }
    Ok((plain.finalize().into(), stored.finalize().into()))
}

/// The plaintext size of a sealed file, from its header and length.
fn sealed_plain_size(path: &FsPath) -> Result<u64, ObjectsError> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut start = vec![0u8; 16.min(len as usize)];
    f.read_exact(&mut start)?;
    let bad = || ObjectsError::Sealed(ripstream_keyring::SealError::BadHeader);
    let h = ripstream_keyring::header_len(&start).ok_or_else(bad)? as u64;
    ripstream_keyring::plain_len(len.saturating_sub(h)).ok_or_else(bad)
}

/// The MD5 of what a reader gives, read in pieces.
fn md5_of_reader(r: &mut impl Read) -> std::io::Result<[u8; 16]> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(md5.finalize().into());
        }
        md5.update(&buf[..n]);
    }
}

/// The MD5 of a file, read in pieces.
fn md5_of_file(path: &FsPath) -> std::io::Result<[u8; 16]> {
    md5_of_reader(&mut std::fs::File::open(path)?)
}

/// A Range header's one byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=a-b` (b inclusive) or `bytes=a-` (`None`).
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// The range of a Range header; `None` for one S3 ignores (not bytes,
    /// several ranges, malformed), which then gets the whole object.
    pub fn parse(header: &str) -> Option<RangeSpec> {
        let spec = header.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return b.parse().ok().map(RangeSpec::Suffix);
        }
        let start = a.parse().ok()?;
        if b.is_empty() {
            return Some(RangeSpec::From(start, None));
        }
        let end: u64 = b.parse().ok()?;
        (end >= start).then_some(RangeSpec::From(start, Some(end)))
    }

    /// The first and last byte of the range in an object of `size` bytes,
    /// or InvalidRange when none of it is there.
    pub fn resolve(self, size: u64) -> Result<(u64, u64), ObjectsError> {
        let invalid = |s: &RangeSpec| ObjectsError::InvalidRange {
            requested: s.to_string(),
            size,
        };
        match self {
            RangeSpec::From(start, end) => {
                if start >= size {
                    return Err(invalid(&self));
                }
                Ok((start, end.map_or(size - 1, |e| e.min(size - 1))))
            }
            RangeSpec::Suffix(n) => {
                if n == 0 || size == 0 {
                    return Err(invalid(&self));
                }
                Ok((size - n.min(size), size - 1))
            }
        }
    }
}

impl std::fmt::Display for RangeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RangeSpec::From(a, Some(b)) => write!(f, "bytes={a}-{b}"),
            RangeSpec::From(a, None) => write!(f, "bytes={a}-"),
            RangeSpec::Suffix(n) => write!(f, "bytes=-{n}"),
        }
    }
}

/// AWS's rules for a general purpose bucket's name: 3 to 63 characters of
/// lower-case letters, digits, `.` and `-`, starting and ending with a
/// letter or digit, no `..`, not shaped like an IP address, none of the
/// reserved prefixes and suffixes.
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return false;
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
    {
        return false;
    }
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !edge(b[0]) || !edge(b[b.len() - 1]) {
        return false;
    }
    if name.contains("..") || name.parse::<std::net::Ipv4Addr>().is_ok() {
        return false;
    }
    const PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];
    !PREFIXES.iter().any(|p| name.starts_with(p)) && !SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether a key fits the file layout: S3's length limit, then what a file
/// path inside the bucket can be. A key of S3 that names no file (`a//b`,
/// `dir/`, `..`) is refused rather than mapped onto another key's file.
fn check_key(key: &str) -> Result<(), ObjectsError> {
    if key.is_empty() {
        return Err(ObjectsError::InvalidArgument(
            "The key must not be empty.".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ObjectsError::KeyTooLong);
    }
    // Each segment is a file or directory name: past the file system's
    // limit (less room for a staging file's `#<n>`) it could not be written.
    if key.split('/').any(|s| s.len() > MAX_SEGMENT_BYTES) {
        return Err(ObjectsError::KeyTooLong);
    }
    if key.contains('\0') || key.contains('\\') || key.split('/').any(bad_segment) {
        return Err(unsupported_key(key));
    }
    Ok(())
}

/// A key segment the layout cannot hold: empty, `.`, `..`, `.meta` (the
/// store's metadata directory's name, kept out of every path a request
/// makes), or an object_store staging file's name (`<name>#<digits>`).
fn bad_segment(s: &str) -> bool {
    s.is_empty()
        || s == "."
        || s == ".."
        || s == META_DIR
        || s.rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The store's metadata directory under its root.
const META_DIR: &str = ".meta";

fn unsupported_key(key: &str) -> ObjectsError {
    ObjectsError::InvalidArgument(format!(
        "The key {key:?} cannot be stored by this server's file layout (empty, `.`, `..` or `.meta` path segments, a trailing `/`, NUL, `\\` and names ending in `#<digits>` are refused)."
    ))
}

/// object_store's refusals are the client's; its I/O failures are ours.
fn store_error(e: object_store::Error, key: &str) -> ObjectsError {
    match e {
        object_store::Error::InvalidPath { .. } => unsupported_key(key),
        object_store::Error::Generic { ref source, .. }
            if source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotADirectory) =>
        {
            conflict(key)
        }
        other => {
            let text = other.to_string();
            if text.contains("Not a directory") || text.contains("Is a directory") {
                conflict(key)
            } else {
                ObjectsError::Store(other)
            }
        }
    }
}

/// An I/O failure of a write: the layout's conflict when a directory
/// stood where a file had to be (or a file where a directory had to be).
fn io_conflict(e: std::io::Error, key: &str) -> ObjectsError {
    match e.kind() {
        std::io::ErrorKind::NotADirectory
        | std::io::ErrorKind::IsADirectory
        | std::io::ErrorKind::DirectoryNotEmpty
        | std::io::ErrorKind::AlreadyExists => conflict(key),
        _ => ObjectsError::Io(e),
    }
}

/// The staging files (`<name>#<digits>`) beside `target` now.
fn staged_beside(target: &FsPath) -> std::collections::HashSet<PathBuf> {
    let mut out = std::collections::HashSet::new();
    let (Some(dir), Some(name)) = (target.parent(), target.file_name().and_then(|n| n.to_str()))
    else {
        return out;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if file
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix('#'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            out.insert(entry.path());
        }
    }
    out
}

/// Deletes the staging files beside `target` that a failed write left
/// (those not there before it began); another writer's own in-flight
/// staging file is there before, or is a rare loss that only fails that
/// write, never a torn object.
fn remove_staged(target: &FsPath, before: &std::collections::HashSet<PathBuf>) {
    for left in staged_beside(target) {
        if !before.contains(&left)
            && let Err(e) = std::fs::remove_file(&left)
        {
            tracing::warn!(error = %e, file = %left.display(), "could not delete a failed write's staging file");
        }
    }
}

/// A staging file beside `target`, named as object_store names its own
/// (`<name>#<n>`), so listings and keys never see it.
fn staging_path(target: &FsPath) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000;
    target.with_file_name(format!("{name}#{n}"))
}

fn conflict(key: &str) -> ObjectsError {
    ObjectsError::InvalidArgument(format!(
        "The key {key:?} conflicts with another object's path in this server's file layout (an object cannot also be a key prefix followed by `/`)."
    ))
}

/// What a listing's walk does after a key.
enum Step {
    Next,
    /// Skip every key that starts with this (a common prefix just rolled up).
    SkipUnder(String),
    Stop,
}

/// A walk of a bucket's keys in S3's order (UTF-8 byte order), lazily:
/// each directory's names are read and its handle closed before any
/// subdirectory is entered, sorted (a directory as its name plus `/`, which
/// is where its keys sort), and subtrees that hold no key after `after`,
/// none under `prefix`, or only keys under a skipped prefix are never
/// opened. So a page costs the entries it passes on its way to its keys,
/// not the whole bucket.
struct Walk<'a> {
    prefix: &'a str,
    /// Only keys after this.
    after: Option<&'a str>,
    skip: Option<String>,
    /// Directory entries looked at, for the tests that bound a page's cost.
    visited: usize,
}

impl Walk<'_> {
    /// Walks `dir` (keys `rel` + name), calling `f` with each key in order;
    /// `false` once `f` said to stop.
    fn run(
        &mut self,
        dir: &FsPath,
        rel: &str,
        f: &mut dyn FnMut(String) -> Result<Step, ObjectsError>,
    ) -> Result<bool, ObjectsError> {
        let mut names: Vec<(String, bool)> = Vec::new();
        {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if is_missing(&e) => return Ok(true),
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                self.visited += 1;
                let Some(name) = entry.file_name().to_str().map(String::from) else {
                    continue;
                };
                if bad_segment(&name) {
                    continue;
                }
                // Never followed: a symlink is neither.
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    names.push((format!("{name}/"), true));
                } else if kind.is_file() {
                    names.push((name, false));
                }
            }
        }
        names.sort_unstable();
        for (name, is_dir) in names {
            let path = format!("{rel}{name}");
            if is_dir {
                // Keys under `path` all start with it.
                let wanted = path.starts_with(self.prefix) || self.prefix.starts_with(&path);
                let passed = self
                    .after
                    .is_some_and(|a| path.as_str() < a && !a.starts_with(&path));
                let skipped = self.skip.as_deref().is_some_and(|s| path.starts_with(s));
                if !wanted || passed || skipped {
                    continue;
                }
                let sub = dir.join(&name[..name.len() - 1]);
                if !self.run(&sub, &path, f)? {
                    return Ok(false);
                }
            } else {
                if !path.starts_with(self.prefix)
                    || self.after.is_some_and(|a| path.as_str() <= a)
                    || self.skip.as_deref().is_some_and(|s| path.starts_with(s))
                    || check_key(&path).is_err()
                {
                    continue;
                }
                match f(path)? {
                    Step::Next => {}
                    Step::SkipUnder(p) => self.skip = Some(p),
                    Step::Stop => return Ok(false),
                }
            }
        }
        Ok(true)
    }
}

async fn next(body: &mut BodyStream) -> Option<Result<Bytes, ripstream_api::BoxError>> {
    std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await
}

fn is_missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Writes a small file so that it survives power loss: a temporary file,
/// fsynced, renamed over the old one, the directory fsynced, and each
/// directory the write had to create made durable in its parent (a
/// `.meta/objects/<bucket>` made for a bucket's first object is an entry
/// of `.meta/objects`, lost with it unsynced).
fn write_durable(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    write_plain(path, bytes)?;
    for made in missing.iter().rev() {
        if let Some(parent) = made.parent() {
            sync_dir(parent)?;
        }
    }
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn write_plain(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let parent = path.parent().unwrap_or(FsPath::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
