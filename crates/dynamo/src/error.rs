//! Errors of the DynamoDB-compatible service, with the `__type` DynamoDB sends.

use ripstream_api::Cause;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::value::{Item, item_to_json};

#[derive(Debug, Error)]
pub enum DynamoError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Serialization(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    /// A condition did not hold; carries the item when the request asked for
    /// it with `ReturnValuesOnConditionCheckFailure: ALL_OLD`.
    #[error("The conditional request failed")]
    ConditionalCheckFailed { item: Option<Item> },
    /// A fault of the server with no cause below it.
    #[error("{0}")]
    Internal(String),
    /// A fault of a layer below (the metadata store, a blocking task): sent
    /// as `InternalServerError` with `message`, the cause kept for the log.
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        source: Cause,
    },
}

impl DynamoError {
    /// The `__type` of the error body, as DynamoDB's JSON 1.0 protocol writes it.
    pub fn code(&self) -> &'static str {
        match self {
            DynamoError::Validation(_) => "com.amazon.coral.validate#ValidationException",
            DynamoError::Serialization(_) => "com.amazon.coral.service#SerializationException",
            DynamoError::ResourceNotFound(_) => {
                "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"
            }
            DynamoError::ResourceInUse(_) => {
                "com.amazonaws.dynamodb.v20120810#ResourceInUseException"
            }
            DynamoError::ConditionalCheckFailed { .. } => {
                "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"
            }
            DynamoError::Internal(_) | DynamoError::Failed { .. } => {
                "com.amazonaws.dynamodb.v20120810#InternalServerError"
            }
        }
    }

    /// Whether the server is at fault (HTTP 500) rather than the request (400).
    pub fn is_server_fault(&self) -> bool {
        matches!(self, DynamoError::Internal(_) | DynamoError::Failed { .. })
    }

    /// A fault of a layer below: `message` for the client, `source` for the log.
    pub fn failed(message: impl Into<String>, source: impl Into<Cause>) -> DynamoError {
        DynamoError::Failed {
            message: message.into(),
            source: source.into(),
        }
    }

    /// Members of the error body beyond `__type` and `message`.
    pub fn extra(&self) -> Option<Map<String, Value>> {
        match self {
            DynamoError::ConditionalCheckFailed { item: Some(item) } => {
                let mut m = Map::new();
                m.insert("Item".into(), Value::Object(item_to_json(item)));
                Some(m)
            }
            _ => None,
        }
    }

    pub(crate) fn not_found() -> DynamoError {
        DynamoError::ResourceNotFound("Requested resource not found".into())
    }
}

impl From<ripstream_meta::MetaError> for DynamoError {
    fn from(e: ripstream_meta::MetaError) -> DynamoError {
        DynamoError::failed(e.to_string(), e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_catalog_error_stays_the_cause() {
        let meta = ripstream_meta::MetaError::Encode(serde_json::from_str::<u8>("x").unwrap_err());
        let text = meta.to_string();
        let e = DynamoError::from(meta);
        assert!(e.is_server_fault());
        assert_eq!(e.to_string(), text, "the message is unchanged");
        let cause = e.source().expect("kept");
        assert!(cause.downcast_ref::<ripstream_meta::MetaError>().is_some());
        assert!(cause.source().is_some(), "and the serde error under it");
    }
}
