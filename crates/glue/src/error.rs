//! Glue's errors, each variant one of the AWS error types the model lists
//! for the Data Catalog operations (all sent with HTTP 400 but the
//! server's own faults).

use http::StatusCode;
use ripstream_api::Cause;

/// What a Glue operation answers with when it does not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A database, table or table version that does not exist.
    #[error("{0}")]
    EntityNotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidInput(String),
    /// UpdateTable's `VersionId` is not the table's current version.
    #[error("{0}")]
    ConcurrentModification(String),
    /// A quota (databases, tables or table versions) would be exceeded.
    #[error("{0}")]
    ResourceNumberLimitExceeded(String),
    /// A `CatalogId` naming another account's catalog: this server holds
    /// one account's catalog, and no other account grants it access.
    #[error("{0}")]
    AccessDenied(String),
    /// The server's fault (a catalog commit): sent as
    /// `InternalServiceException` with a fixed message, the cause kept for
    /// the log.
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
            Error::EntityNotFound(_) => "EntityNotFoundException",
            Error::AlreadyExists(_) => "AlreadyExistsException",
            Error::InvalidInput(_) => "InvalidInputException",
            Error::ConcurrentModification(_) => "ConcurrentModificationException",
            Error::ResourceNumberLimitExceeded(_) => "ResourceNumberLimitExceededException",
            Error::AccessDenied(_) => "AccessDeniedException",
            Error::Internal { .. } => "InternalServiceException",
        }
    }
}

impl From<ripstream_meta::MetaError> for Error {
    fn from(e: ripstream_meta::MetaError) -> Error {
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
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
