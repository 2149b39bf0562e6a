//! Errors as they go on the wire: an AWS error type, a message, an HTTP status.
//!
//! This is the one table that maps errors to `__type` and status codes.

use http::StatusCode;
use ripstream_kinesis::Error as ServiceError;

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Members of the body beyond `__type` and `message` (DynamoDB's `Item`).
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl WireError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> WireError {
        WireError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// A malformed body or a member of the wrong type.
    pub fn serialization(message: impl Into<String>) -> WireError {
        WireError::new(StatusCode::BAD_REQUEST, "SerializationException", message)
    }

    /// A request that breaks a constraint of the service model.
    pub fn validation(message: impl Into<String>) -> WireError {
        WireError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// An `X-Amz-Target` naming no operation of the service.
    pub fn unknown_operation() -> WireError {
        WireError::new(StatusCode::BAD_REQUEST, "UnknownOperationException", "")
    }

    /// A fault of the server.
    pub fn internal(message: impl Into<String>) -> WireError {
        WireError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            message,
        )
    }

    /// The JSON body: `{"__type": "...", "message": "..."}`.
    pub fn json_body(&self) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("__type".into(), self.code.into());
        if !self.message.is_empty() {
            let key = if self.code.ends_with("SerializationException") {
                "Message"
            } else {
                "message"
            };
            body.insert(key.into(), self.message.clone().into());
        }
        if let Some(extra) = &self.extra {
            body.extend(extra.as_ref().clone());
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

/// Front-door errors travel through services too (a refused authorization
/// comes back from the service that asked for it).
impl ripstream_api::ServiceError for WireError {
    fn code(&self) -> &'static str {
        self.code
    }

    fn status(&self) -> StatusCode {
        self.status
    }

    fn fields(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.extra.as_deref().cloned()
    }
}

/// Any service's error, as its [`ripstream_api::ServiceError`] describes it.
impl From<ripstream_api::BoxError> for WireError {
    fn from(e: ripstream_api::BoxError) -> WireError {
        WireError {
            status: e.status(),
            code: e.code(),
            message: e.to_string(),
            extra: e.fields().map(Box::new),
        }
    }
}

impl From<ServiceError> for WireError {
    fn from(e: ServiceError) -> WireError {
        let status = if e.is_server_fault() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        WireError::new(status, e.code(), e.message())
    }
}

impl From<ripstream_dynamo::DynamoError> for WireError {
    fn from(e: ripstream_dynamo::DynamoError) -> WireError {
        let status = if e.is_server_fault() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        let mut w = WireError::new(status, e.code(), e.to_string());
        w.extra = e.extra().map(Box::new);
        w
    }
}

impl WireError {
    /// The same error with the `__type` DynamoDB's front end gives it.
    pub fn for_dynamodb(mut self) -> WireError {
        self.code = match self.code {
            "ValidationException" => "com.amazon.coral.validate#ValidationException",
            "SerializationException" => "com.amazon.coral.service#SerializationException",
            "UnknownOperationException" => "com.amazon.coral.service#UnknownOperationException",
            "AccessDeniedException" => "com.amazon.coral.service#AccessDeniedException",
            "MissingAuthenticationTokenException" => {
                "com.amazon.coral.service#MissingAuthenticationTokenException"
            }
            "UnrecognizedClientException" => "com.amazon.coral.service#UnrecognizedClientException",
            "InvalidSignatureException" => "com.amazon.coral.service#InvalidSignatureException",
            "IncompleteSignatureException" => {
                "com.amazon.coral.service#IncompleteSignatureException"
            }
            "InternalFailure" => "com.amazonaws.dynamodb.v20120810#InternalServerError",
            other => other,
        };
        self
    }
}
