//! Firehose's errors, each variant one of the AWS error types the model
//! lists for the operations.

use http::StatusCode;
use ripstream_api::Cause;

/// What a Firehose operation answers with when it does not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    ConcurrentModification(String),
    /// The KMS key of the stream's encryption is missing or disabled.
    #[error("{0}")]
    InvalidKmsResource(String),
    /// The record could not be stored now; the client retries.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// The server's fault (a catalog commit, a log append): sent as
    /// `InternalFailure` with a fixed message, the cause kept for the log.
    #[error("Internal service failure.")]
    Internal {
        #[source]
        source: Cause,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn internal(source: impl Into<Cause>) -> Error {
        Error::Internal {
            source: source.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::ResourceNotFound(_) => "ResourceNotFoundException",
            Error::ResourceInUse(_) => "ResourceInUseException",
            Error::InvalidArgument(_) => "InvalidArgumentException",
            Error::LimitExceeded(_) => "LimitExceededException",
            Error::ConcurrentModification(_) => "ConcurrentModificationException",
            Error::InvalidKmsResource(_) => "InvalidKMSResourceException",
            Error::ServiceUnavailable(_) => "ServiceUnavailableException",
            Error::Internal { .. } => "InternalFailure",
        }
    }
}

impl From<ripstream_meta::MetaError> for Error {
    fn from(e: ripstream_meta::MetaError) -> Error {
        Error::internal(e)
    }
}

impl From<ripstream_log::LogError> for Error {
    fn from(e: ripstream_log::LogError) -> Error {
        Error::internal(e)
    }
}

impl ripstream_api::ServiceError for Error {
    fn code(&self) -> &'static str {
        Error::code(self)
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
