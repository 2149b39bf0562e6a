//! Errors of the DynamoDB-compatible service, with the `__type` DynamoDB sends.

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
    #[error("{0}")]
    Internal(String),
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
            DynamoError::Internal(_) => "com.amazonaws.dynamodb.v20120810#InternalServerError",
        }
    }

    /// Whether the server is at fault (HTTP 500) rather than the request (400).
    pub fn is_server_fault(&self) -> bool {
        matches!(self, DynamoError::Internal(_))
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
        DynamoError::Internal(e.to_string())
    }
}
