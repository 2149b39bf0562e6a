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
}

impl WireError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> WireError {
        WireError {
            status,
            code,
            message: message.into(),
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
            let key = if self.code == "SerializationException" {
                "Message"
            } else {
                "message"
            };
            body.insert(key.into(), self.message.clone().into());
        }
        serde_json::to_vec(&body).unwrap_or_default()
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
