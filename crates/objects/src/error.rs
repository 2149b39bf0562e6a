//! The errors of the store, each one S3's code and status.

use http::StatusCode;
use ripstream_api::{BoxError, ServiceError};
use serde_json::{Map, Value};

/// What the store (and the S3 API over it) answers with; each variant is
/// the S3 error of the same name.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("The specified bucket does not exist")]
    NoSuchBucket { bucket: String },
    #[error("The specified key does not exist.")]
    NoSuchKey { key: String },
    #[error(
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )]
    NoSuchUpload { upload_id: String },
    #[error("Your previous request to create the named bucket succeeded and you already own it.")]
    BucketAlreadyOwnedByYou { bucket: String },
    #[error("The specified bucket is not valid.")]
    InvalidBucketName { bucket: String },
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty { bucket: String },
    #[error("Your key is too long")]
    KeyTooLong,
    /// A key the file layout cannot hold (`..`, an empty segment, NUL, a
    /// name object_store keeps for its staging files, or a key that would
    /// make an existing object a directory).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("The requested range is not satisfiable")]
    InvalidRange { requested: String, size: u64 },
    #[error("The Content-MD5 you specified did not match what we received.")]
    BadDigest,
    #[error("The Content-MD5 you specified is not valid.")]
    InvalidDigest,
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed { condition: &'static str },
    #[error(
        "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
    )]
    InvalidPart,
    #[error("The list of parts was not in ascending order. Parts must be ordered by part number.")]
    InvalidPartOrder,
    #[error("Your proposed upload is smaller than the minimum allowed object size.")]
    EntityTooSmall,
    /// A PutObject or UploadPart body past S3's 5 GiB.
    #[error("Your proposed upload exceeds the maximum allowed object size.")]
    EntityTooLarge { max: u64 },
    #[error(
        "The XML you provided was not well-formed or did not validate against our published schema"
    )]
    MalformedXml,
    /// A header implies functionality this server does not have (SSE-C,
    /// an encryption context, DSSE-KMS): S3's NotImplemented, 501.
    #[error("A header you provided implies functionality that is not implemented: {0}")]
    NotImplemented(String),
    /// The KMS key a write or read names does not exist (S3 answers
    /// KMS's NotFoundException as `KMS.NotFoundException`, 400).
    #[error("{0}")]
    KmsNotFound(String),
    /// The KMS key is disabled (`KMS.DisabledException`, 400).
    #[error("{0}")]
    KmsDisabled(String),
    /// The request body's stream failed (cut short, a chunk signature that
    /// did not verify): the error the front door says the client is owed.
    #[error("{0}")]
    Body(BoxError),
    // The store's own failures: AWS's internal error on the wire, the cause
    // kept as the source for the server's log.
    #[error("We encountered an internal error. Please try again.")]
    Io(#[from] std::io::Error),
    #[error("We encountered an internal error. Please try again.")]
    Store(#[from] object_store::Error),
    #[error("We encountered an internal error. Please try again.")]
    Task(#[from] tokio::task::JoinError),
    /// The keyring file could not be used.
    #[error("We encountered an internal error. Please try again.")]
    Keyring(#[source] ripstream_keyring::KeyringError),
    /// An encrypted object's bytes do not open: altered on disk, or its
    /// master key's material is not what it was sealed under.
    #[error("We encountered an internal error. Please try again.")]
    Sealed(#[from] ripstream_keyring::SealError),
}

impl ServiceError for ObjectsError {
    fn code(&self) -> &'static str {
        match self {
            ObjectsError::NoSuchBucket { .. } => "NoSuchBucket",
            ObjectsError::NoSuchKey { .. } => "NoSuchKey",
            ObjectsError::NoSuchUpload { .. } => "NoSuchUpload",
            ObjectsError::BucketAlreadyOwnedByYou { .. } => "BucketAlreadyOwnedByYou",
            ObjectsError::InvalidBucketName { .. } => "InvalidBucketName",
            ObjectsError::BucketNotEmpty { .. } => "BucketNotEmpty",
            ObjectsError::KeyTooLong => "KeyTooLongError",
            ObjectsError::InvalidArgument(_) => "InvalidArgument",
            ObjectsError::InvalidRequest(_) => "InvalidRequest",
            ObjectsError::InvalidRange { .. } => "InvalidRange",
            ObjectsError::BadDigest => "BadDigest",
            ObjectsError::InvalidDigest => "InvalidDigest",
            ObjectsError::PreconditionFailed { .. } => "PreconditionFailed",
            ObjectsError::InvalidPart => "InvalidPart",
            ObjectsError::InvalidPartOrder => "InvalidPartOrder",
            ObjectsError::EntityTooSmall => "EntityTooSmall",
            ObjectsError::EntityTooLarge { .. } => "EntityTooLarge",
            ObjectsError::MalformedXml => "MalformedXML",
            ObjectsError::NotImplemented(_) => "NotImplemented",
            ObjectsError::KmsNotFound(_) => "KMS.NotFoundException",
            ObjectsError::KmsDisabled(_) => "KMS.DisabledException",
            ObjectsError::Body(e) => e.code(),
            ObjectsError::Io(_)
            | ObjectsError::Store(_)
            | ObjectsError::Task(_)
            | ObjectsError::Keyring(_)
            | ObjectsError::Sealed(_) => "InternalError",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ObjectsError::NoSuchBucket { .. }
            | ObjectsError::NoSuchKey { .. }
            | ObjectsError::NoSuchUpload { .. } => StatusCode::NOT_FOUND,
            ObjectsError::BucketAlreadyOwnedByYou { .. } | ObjectsError::BucketNotEmpty { .. } => {
                StatusCode::CONFLICT
            }
            ObjectsError::InvalidRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ObjectsError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ObjectsError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ObjectsError::Body(e) => e.status(),
            ObjectsError::Io(_)
            | ObjectsError::Store(_)
            | ObjectsError::Task(_)
            | ObjectsError::Keyring(_)
            | ObjectsError::Sealed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn fields(&self) -> Option<Map<String, Value>> {
        let mut m = Map::new();
        match self {
            ObjectsError::NoSuchBucket { bucket }
            | ObjectsError::BucketAlreadyOwnedByYou { bucket }
            | ObjectsError::InvalidBucketName { bucket }
            | ObjectsError::BucketNotEmpty { bucket } => {
                m.insert("BucketName".into(), bucket.clone().into());
            }
            ObjectsError::NoSuchKey { key } => {
                m.insert("Key".into(), key.clone().into());
            }
            ObjectsError::NoSuchUpload { upload_id } => {
                m.insert("UploadId".into(), upload_id.clone().into());
            }
            ObjectsError::InvalidRange { requested, size } => {
                m.insert("RangeRequested".into(), requested.clone().into());
                m.insert("ActualObjectSize".into(), size.to_string().into());
            }
            ObjectsError::PreconditionFailed { condition } => {
                m.insert("Condition".into(), (*condition).into());
            }
            ObjectsError::EntityTooLarge { max } => {
                m.insert("MaxSizeAllowed".into(), max.to_string().into());
            }
            ObjectsError::Body(e) => return e.fields(),
            _ => return None,
        }
        Some(m)
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            // HTTP's unsatisfied-range form (RFC 9110 §15.5.17): the size a
            // client can retry within.
            ObjectsError::InvalidRange { size, .. } => {
                vec![("content-range", format!("bytes */{size}"))]
            }
            ObjectsError::Body(e) => e.headers(),
            _ => Vec::new(),
        }
    }
}
