//! The service's errors: one variant per AWS error type a Kinesis client knows.

/// An error of the Kinesis service. The variant is the AWS error type; the
/// string is the message sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// A fault of the server, not of the request.
    #[error("{0}")]
    Internal(String),
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
            Error::Internal(_) => "InternalFailure",
        }
    }

    /// Whether the fault is the server's (HTTP 500) rather than the request's.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Error::Internal(_))
    }

    /// The message sent to the client.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<ripstream_log::LogError> for Error {
    fn from(e: ripstream_log::LogError) -> Self {
        if let ripstream_log::LogError::Cipher(c) = &e {
            return crate::kms::cipher_error(c);
        }
        tracing::error!(error = %e, "log error");
        Error::Internal("Internal service failure.".into())
    }
}

impl From<ripstream_meta::MetaError> for Error {
    fn from(e: ripstream_meta::MetaError) -> Self {
        tracing::error!(error = %e, "catalog error");
        Error::Internal("Internal service failure.".into())
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
