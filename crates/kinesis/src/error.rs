//! The service's errors: one variant per AWS error type a Kinesis client knows.

use ripstream_api::Cause;

/// An error of the Kinesis service. The variant is the AWS error type; the
/// string is the message sent to the client.
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
    ExpiredIterator(String),
    #[error("{0}")]
    ExpiredNextToken(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    ProvisionedThroughputExceeded(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    KmsNotFound(String),
    #[error("{0}")]
    KmsDisabled(String),
    #[error("{0}")]
    KmsAccessDenied(String),
    #[error("{0}")]
    KmsInvalidState(String),
    /// The request would have succeeded; `DryRun` was set.
    #[error("{0}")]
    DryRunOperation(String),
    /// A fault of the server, not of the request, with no cause below it
    /// (a broken invariant, a limit of our own).
    #[error("{0}")]
    Internal(String),
    /// A fault of a layer below (the shard log, the catalog, the keyring, a
    /// blocking task). Sent as `InternalFailure` with `message`; the cause
    /// stays as `source` for the front door's log, never for the client.
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        source: Cause,
    },
}

impl Error {
    /// The AWS error type, as sent in `__type`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::ResourceNotFound(_) => "ResourceNotFoundException",
            Error::ResourceInUse(_) => "ResourceInUseException",
            Error::InvalidArgument(_) => "InvalidArgumentException",
            Error::LimitExceeded(_) => "LimitExceededException",
            Error::ExpiredIterator(_) => "ExpiredIteratorException",
            Error::ExpiredNextToken(_) => "ExpiredNextTokenException",
            Error::Validation(_) => "ValidationException",
            Error::ProvisionedThroughputExceeded(_) => "ProvisionedThroughputExceededException",
            Error::AccessDenied(_) => "AccessDeniedException",
            Error::DryRunOperation(_) => "DryRunOperationException",
            Error::KmsNotFound(_) => "KMSNotFoundException",
            Error::KmsDisabled(_) => "KMSDisabledException",
            Error::KmsAccessDenied(_) => "KMSAccessDeniedException",
            Error::KmsInvalidState(_) => "KMSInvalidStateException",
            Error::Internal(_) | Error::Failed { .. } => "InternalFailure",
        }
    }

    /// Whether the fault is the server's (HTTP 500) rather than the request's.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Error::Internal(_) | Error::Failed { .. })
    }

    /// A fault of a layer below: `message` for the client, `source` for the log.
    pub fn failed(message: impl Into<String>, source: impl Into<Cause>) -> Error {
        Error::Failed {
            message: message.into(),
            source: source.into(),
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// What a client is told of a storage fault (the cause goes to the log).
const INTERNAL: &str = "Internal service failure.";

impl From<ripstream_log::LogError> for Error {
    fn from(e: ripstream_log::LogError) -> Self {
        if let ripstream_log::LogError::Cipher(c) = &e {
            return crate::kms::cipher_error(c);
        }
        Error::failed(INTERNAL, e)
    }
}

impl From<ripstream_meta::MetaError> for Error {
    fn from(e: ripstream_meta::MetaError) -> Self {
        Error::failed(INTERNAL, e)
    }
}

/// The answer to a request whose checks passed but which asked for a dry run.
pub(crate) fn dry_run(requested: Option<bool>) -> Result<()> {
    if requested == Some(true) {
        return Err(Error::DryRunOperation(
            "The request would have succeeded, but the DryRun parameter was set.".into(),
        ));
    }
    Ok(())
}

/// Result of a service call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_log_error_stays_the_cause() {
        let io = std::io::Error::other("no space left on device");
        let log = ripstream_log::LogError::Io {
            path: "/data/log/stream1-shard0".into(),
            source: io,
        };
        let e = Error::from(log);
        assert_eq!(e.code(), "InternalFailure");
        assert!(e.is_server_fault());
        // The client is told what it was told before...
        assert_eq!(e.message(), "Internal service failure.");
        // ...and the log can walk down to the I/O error.
        let cause = e.source().expect("the log error is kept");
        let log = cause
            .downcast_ref::<ripstream_log::LogError>()
            .expect("as itself");
        assert!(matches!(log, ripstream_log::LogError::Io { .. }));
        let io = log.source().expect("the I/O error under it");
        assert_eq!(io.to_string(), "no space left on device");
        assert_eq!(
            ripstream_api::Chain(&e).to_string(),
            "Internal service failure.: I/O error on /data/log/stream1-shard0: no space left on device"
        );
    }

    #[test]
    fn a_catalog_error_stays_the_cause() {
        let e = Error::from(ripstream_meta::MetaError::Encode(
            serde_json::from_str::<u8>("x").unwrap_err(),
        ));
        assert_eq!(e.message(), "Internal service failure.");
        assert!(
            e.source()
                .and_then(|c| c.downcast_ref::<ripstream_meta::MetaError>())
                .is_some()
        );
    }
}
