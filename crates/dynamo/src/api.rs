//! The DynamoDB subset behind the front door: its [`Spec`], and each
//! request authorized on every table it touches before it runs.

use std::sync::Arc;

use http::StatusCode;
use ripstream_api::{BoxError, CallFuture, Refused, Reply, Request, Spec};

use crate::{Dynamo, DynamoError};

/// The vendored botocore model of DynamoDB.
pub static MODEL: &str = include_str!("../model/dynamodb-2012-08-10.json");

impl ripstream_api::ServiceError for DynamoError {
    fn code(&self) -> &'static str {
        DynamoError::code(self)
    }

    fn status(&self) -> StatusCode {
        if self.is_server_fault() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        }
    }

    fn fields(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.extra()
    }
}

/// The DynamoDB-compatible tables as the front door mounts them.
#[derive(Clone)]
pub struct DynamoApi {
    dynamo: Dynamo,
    spec: Arc<Spec>,
}

impl std::fmt::Debug for DynamoApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynamoApi")
    }
}

impl DynamoApi {
    pub fn new(dynamo: Dynamo) -> DynamoApi {
        let mut spec =
            Spec::from_model(MODEL, "dynamodb").expect("the vendored model has metadata");
        spec.coral_error_types = true;
        DynamoApi {
            dynamo,
            spec: Arc::new(spec),
        }
    }

    async fn run(&self, request: Request<'_>) -> Result<Reply, BoxError> {
        let op = request.operation;
        // Every table the operation touches must be allowed; an operation
        // that names none is refused, never allowed.
        let resources = self.dynamo.request_resources(op, &request.input)?;
        if resources.is_empty() {
            return Err(Box::new(Refused {
                code: "AccessDeniedException",
                status: StatusCode::BAD_REQUEST,
                message: format!("The request names no resource to authorize for dynamodb:{op}."),
            }));
        }
        request.authorize.authorize(&resources)?;
        // Writes commit to the metadata store (an fsync): off the async workers.
        let (dynamo, op, input) = (self.dynamo.clone(), op.to_string(), request.input);
        let out = tokio::task::spawn_blocking(move || dynamo.call(&op, &input))
            .await
            .map_err(|e| {
                DynamoError::failed(format!("the operation did not complete: {e}"), e)
            })??;
        serde_json::to_vec(&out).map(Reply::Json).map_err(|e| {
            DynamoError::failed(format!("could not encode the response: {e}"), e).into()
        })
    }
}

impl ripstream_api::Service for DynamoApi {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn supports(&self, operation: &str) -> bool {
        Dynamo::supports(operation)
    }

    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a> {
        Box::pin(self.run(request))
    }
}
