//! Errors as they go on the wire: an AWS error type, a message, an HTTP status.
//!
//! Each service maps its own errors to an AWS type and status
//! ([`ripstream_api::ServiceError`]); this is where the front door turns
//! one of those, or one of its own refusals, into a response body.

use http::StatusCode;

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Members of the body beyond `__type` and `message` (DynamoDB's `Item`).
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// The causes under the service's error (its `source()` chain), for the
    /// server's log; never sent.
    pub cause: Option<String>,
    /// Response headers the service's error carries
    /// ([`ripstream_api::ServiceError::headers`]).
    pub headers: Vec<(&'static str, String)>,
}

impl WireError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> WireError {
        WireError {
            status,
            code,
            message: message.into(),
            extra: None,
            cause: None,
            headers: Vec::new(),
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

    /// Adds the error's own headers to a response the codec built. They
    /// never replace the codec's framing (content type and length) or the
    /// request ids; a name or value that is not valid HTTP is dropped.
    pub fn add_headers(&self, headers: &mut http::HeaderMap) {
        for (name, value) in &self.headers {
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) else {
                continue;
            };
            let framing = [
                http::header::CONTENT_TYPE,
                http::header::CONTENT_LENGTH,
                http::header::TRANSFER_ENCODING,
            ];
            let ids = ["x-amzn-requestid", "x-amz-request-id", "x-amz-id-2"];
            if framing.contains(&name) || ids.contains(&name.as_str()) {
                continue;
            }
            headers.insert(name, value);
        }
    }

    /// The causes for a log line (`-` when there are none).
    pub fn cause_for_log(&self) -> std::borrow::Cow<'_, str> {
        crate::redact::message_for_log(self.cause.as_deref().unwrap_or("-"))
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
            cause: causes(&*e),
            headers: e.headers(),
        }
    }
}

/// The rendered `source()` chain of an error, if it has one.
fn causes(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let text = ripstream_api::Causes(e).to_string();
    (!text.is_empty()).then_some(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_reaches_the_log_but_not_the_body() {
        let e = ripstream_kinesis::Error::failed(
            "Internal service failure.",
            std::io::Error::other("no space left on device"),
        );
        let w = WireError::from(Box::new(e) as ripstream_api::BoxError);
        assert_eq!(w.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(w.code, "InternalFailure");
        assert_eq!(w.cause.as_deref(), Some("no space left on device"));
        assert_eq!(w.cause_for_log(), "no space left on device");
        let body = String::from_utf8(w.json_body()).unwrap();
        assert_eq!(
            body,
            r#"{"__type":"InternalFailure","message":"Internal service failure."}"#
        );
        assert_eq!(WireError::internal("x").cause_for_log(), "-");
    }
}
