//! The contract between the front door and the services behind it.
//!
//! Every service (Data Streams, the DynamoDB subset, and later Firehose, S3,
//! Glue, Analytics, Video Streams) implements [`Service`]: it names its
//! [`Spec`] (read from the vendored botocore model's metadata), runs an
//! operation on a validated request, and says which resources the typed
//! request acts on through the [`Authorize`] callback before acting. The front
//! door owns everything common: the listener, the protocol codecs, SigV4,
//! model validation, policy evaluation, metrics. This crate knows no HTTP
//! server and no storage.
//!
//! ```
//! use ripstream_api::{Protocol, Spec};
//! let model = r#"{"metadata": {"protocol": "json", "jsonVersion": "1.1",
//!     "targetPrefix": "Example_20260101", "signingName": "example",
//!     "endpointPrefix": "example", "serviceId": "Example"}, "operations": {}, "shapes": {}}"#;
//! let spec = Spec::from_model(model, "example").unwrap();
//! assert_eq!(spec.protocol, Protocol::AwsJson1_1);
//! assert_eq!(spec.target_prefix.as_deref(), Some("Example_20260101"));
//! assert_eq!(spec.signing_name, "example");
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;

/// The wire protocol of a service, as its model's metadata names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `awsJson1_0`: `POST /`, `X-Amz-Target`, `application/x-amz-json-1.0`.
    AwsJson1_0,
    /// `awsJson1_1`: the same with `application/x-amz-json-1.1`.
    AwsJson1_1,
    /// `restJson1`: operations by method and path template, JSON bodies.
    RestJson1,
    /// `restXml`: operations by method and path template, XML bodies (S3).
    RestXml,
    /// `awsQuery`: `POST /` with a form body naming `Action` and `Version`,
    /// XML replies (STS).
    AwsQuery,
}

impl Protocol {
    /// The content type of requests and responses of the JSON protocols.
    pub fn json_content_type(self) -> Option<&'static str> {
        match self {
            Protocol::AwsJson1_0 => Some("application/x-amz-json-1.0"),
            Protocol::AwsJson1_1 => Some("application/x-amz-json-1.1"),
            Protocol::RestJson1 => Some("application/json"),
            Protocol::RestXml | Protocol::AwsQuery => None,
        }
    }
}

/// Why a model's metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the service model is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("the service model's metadata has no {0}")]
    Missing(&'static str),
    #[error("the service model's protocol {0} is not one Ripstream speaks")]
    Protocol(String),
}

/// What the front door needs to know about a service: all of it from the
/// model's metadata except the IAM action prefix (which AWS documents
/// separately) and whether the service also takes CBOR.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The vendored botocore `service-2.json`.
    pub model: &'static str,
    pub protocol: Protocol,
    /// `X-Amz-Target` prefix of the JSON protocols (`Kinesis_20131202`).
    pub target_prefix: Option<String>,
    /// The SigV4 credential scope's service (`kinesis`, `dynamodb`).
    pub signing_name: String,
    /// The metrics label: the endpoint prefix (`kinesis`, `dynamodb`).
    pub metrics_name: String,
    /// The IAM action prefix (`kinesis` in `kinesis:PutRecord`).
    pub iam_prefix: String,
    /// Whether `application/x-amz-cbor-1.1` is accepted too (the AWS SDK for
    /// Java v2 speaks CBOR to Kinesis).
    pub cbor: bool,
    /// Whether front-door errors carry Coral's namespaced types
    /// (`com.amazon.coral.service#...`), as DynamoDB's do.
    pub coral_error_types: bool,
}

impl Spec {
    /// Reads a botocore model's metadata.
    pub fn from_model(model: &'static str, iam_prefix: &str) -> Result<Spec, SpecError> {
        let doc: Value = serde_json::from_str(model)?;
        let meta = doc.get("metadata").ok_or(SpecError::Missing("metadata"))?;
        let text = |k: &'static str| meta.get(k).and_then(Value::as_str);
        let protocol = match (text("protocol"), text("jsonVersion")) {
            (Some("json"), Some("1.0")) => Protocol::AwsJson1_0,
            (Some("json"), _) => Protocol::AwsJson1_1,
            (Some("rest-json"), _) => Protocol::RestJson1,
            (Some("rest-xml"), _) => Protocol::RestXml,
            (Some("query"), _) => Protocol::AwsQuery,
            (Some(other), _) => return Err(SpecError::Protocol(other.to_string())),
            (None, _) => return Err(SpecError::Missing("protocol")),
        };
        let endpoint = text("endpointPrefix").ok_or(SpecError::Missing("endpointPrefix"))?;
        Ok(Spec {
            model,
            protocol,
            target_prefix: text("targetPrefix").map(String::from),
            signing_name: text("signingName").unwrap_or(endpoint).to_string(),
            metrics_name: endpoint.to_string(),
            iam_prefix: iam_prefix.to_string(),
            cbor: false,
            coral_error_types: false,
        })
    }
}

/// Decodes base64 as AWS accepts it: standard alphabet, padding optional.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    // Requests are validated as canonical padded base64 first, so the SIMD
    // decoder takes the common case; the lenient one the rest.
    if let Ok(v) = base64_simd::STANDARD.decode_to_vec(s) {
        return Some(v);
    }
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

/// An error a service answers with: an AWS error type, an HTTP status and a
/// message, with the cause kept as `source`.
pub trait ServiceError: std::error::Error + Send + Sync + 'static {
    /// The `__type` sent to the client (`ResourceNotFoundException`).
    fn code(&self) -> &'static str;
    /// 400 unless the fault is the server's.
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    /// Members of the error body beyond `__type` and `message`.
    fn fields(&self) -> Option<serde_json::Map<String, Value>> {
        None
    }
    /// Response headers the error carries beyond the protocol's own
    /// (`Allow` on S3's 405 MethodNotAllowed, `Retry-After` on a 503).
    /// Names and values that are not valid HTTP are dropped.
    fn headers(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// The causes under an error, each `source()` in turn, joined by `: ` for a
/// log line. Where an error's message already ends with its cause's (a
/// `{source}` in a thiserror format), the cause is not repeated. The wire
/// message is the error's own `Display`; this is only for the server's logs.
pub struct Causes<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        let mut first = true;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !shown.ends_with(&text) {
                if !first {
                    f.write_str(": ")?;
                }
                f.write_str(&text)?;
                first = false;
            }
            shown = text;
            next = cause.source();
        }
        Ok(())
    }
}

/// An error and its causes, for a log line: `message: cause: cause`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let causes = Causes(self.0).to_string();
        write!(f, "{}", self.0)?;
        if !causes.is_empty() {
            write!(f, ": {causes}")?;
        }
        Ok(())
    }
}

/// A cause kept under a service error, for the logs: any library error.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A service error on its way to the wire.
pub type BoxError = Box<dyn ServiceError>;

impl<E: ServiceError> From<E> for Box<dyn ServiceError> {
    fn from(e: E) -> Box<dyn ServiceError> {
        Box::new(e)
    }
}

/// A refusal by the front door's policy evaluation, or any error raised
/// while working out what a request acts on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl ServiceError for Refused {
    fn code(&self) -> &'static str {
        self.code
    }
    fn status(&self) -> StatusCode {
        self.status
    }
}

/// The front door's policy check, handed to the service with each request:
/// the `resources()` step of the contract. The service parses its typed
/// input, works out the canonical ARNs it names (`*` for account-wide
/// operations) and calls the check before it acts, so what is authorized is
/// exactly what the typed input will act on.
pub trait Authorize: Sync {
    /// Checks the request's own action, `<iam prefix>:<Operation>`
    /// (`kinesis:PutRecord`), on `resources`.
    fn authorize(&self, resources: &[String]) -> Result<(), BoxError>;

    /// Checks a named IAM action on `resources`: where a service's actions
    /// are not its operations' names (S3's `s3:ListBucket` for
    /// ListObjectsV2, `s3:GetObject` for HeadObject), where one request
    /// needs several (CopyObject reads its source with `s3:GetObject`), and
    /// where a service will act on another's resources for the caller
    /// (Firehose writes into a bucket: the caller must be allowed
    /// `s3:PutObject` there, or any caller could make it write anywhere).
    fn authorize_action(&self, action: &str, resources: &[String]) -> Result<(), BoxError>;
}

/// A check that allows everything: anonymous mode, and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorize for AllowAll {
    fn authorize(&self, _: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
    fn authorize_action(&self, _: &str, _: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The events of a streaming response, each as (event type, payload in the
/// JSON form of the model's event shape), or an error that ends the stream.
pub type EventStream = Pin<
    Box<dyn futures_core::Stream<Item = Result<(&'static str, Value), BoxError>> + Send + Sync>,
>;

/// A streaming request body: the payload of an operation whose model marks
/// its blob payload `streaming` (S3 PutObject's `Body`, Kinesis Video
/// PutMedia's `Payload`), handed over as it arrives instead of buffered.
/// Each item is the next piece of the (decoded, verified) data. An error
/// ends the stream: the body was cut short, or a chunk signature, the
/// decoded length or a checksum did not verify. The error is the AWS
/// error the client is owed, so a service that cannot complete returns it
/// as its own. A service must treat what it stored from a stream as
/// committed only once the stream ended with `None`.
pub type BodyStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<bytes::Bytes, BoxError>> + Send>>;

/// What an operation answers.
pub enum Reply {
    /// No output members: an empty body, as AWS sends.
    Empty,
    /// The output in its JSON form, already encoded; the codec passes it
    /// through for JSON clients and converts it (guided by the model) for
    /// others.
    Json(Vec<u8>),
    /// An `application/vnd.amazon.eventstream` response (SubscribeToShard).
    Events(EventStream),
    /// A REST reply whose payload member is raw bytes (S3 GetObject's
    /// `Body`), sent as they are instead of base64 in the JSON form; the
    /// other output members (`output`, JSON form) go where the model binds
    /// them (headers). `status` replaces the operation's own where the
    /// protocol answers otherwise (206 for a byte range, 304 Not Modified).
    Payload {
        output: Vec<u8>,
        body: Payload,
        status: Option<StatusCode>,
    },
}

/// The raw payload of a [`Reply::Payload`].
pub enum Payload {
    /// Bytes in memory.
    Bytes(bytes::Bytes),
    /// Exactly `len` bytes, sent as the stream yields them (S3 GetObject
    /// reads a large object as it goes out). An error ends the response
    /// early: the status and headers are already sent, so the client sees
    /// a body shorter than its Content-Length, never wrong bytes.
    Stream { len: u64, stream: BodyStream },
    /// The whole body as the service wrote it in the protocol's own format
    /// (sent with the protocol's content type), for the replies a model
    /// cannot describe: S3's GetBucketLocation answers with its member as
    /// the document's root element, which every SDK special-cases.
    Document(bytes::Bytes),
}

impl Payload {
    /// How many bytes the payload holds.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) | Payload::Document(b) => b.len() as u64,
            Payload::Stream { len, .. } => *len,
        }
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Empty => f.write_str("Empty"),
            Reply::Json(b) => write!(f, "Json({} bytes)", b.len()),
            Reply::Events(_) => f.write_str("Events(..)"),
            Reply::Payload { body, status, .. } => {
                write!(f, "Payload({} bytes, {status:?})", body.len())
            }
        }
    }
}

/// Who sent a request, as the front door authenticated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// Anonymous mode: the server has no credentials configured and takes
    /// every request as the account's own.
    Anonymous,
    /// A principal of the credentials file whose signature was verified.
    Principal {
        /// Its name (the IAM user name in its ARN).
        name: &'a str,
        /// The access key id the request was signed with.
        access_key_id: &'a str,
        /// `arn:<partition>:iam::<account>:user/<name>`.
        arn: &'a str,
    },
}

/// One request, decoded and validated against the model, with the members
/// the model does not define for the operation removed.
pub struct Request<'a> {
    pub operation: &'a str,
    pub input: Value,
    pub authorize: &'a dyn Authorize,
    /// The authenticated caller (STS answers with it; the other services
    /// leave identity to `authorize`).
    pub caller: Caller<'a>,
    /// Held for as long as the operation's work lasts: a streaming reply
    /// keeps it until its stream ends (the front door's in-flight slot).
    pub slot: Option<Box<dyn Send + Sync>>,
    /// The payload of an operation with a streaming blob payload member,
    /// which is then left out of `input`; `None` for every other operation
    /// (their bodies are bound into `input`).
    pub body: Option<BodyStream>,
}

/// The future of one call.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send + 'a>>;

/// A service's background work: a future that runs (typically loops) until
/// the front door drops it.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A service behind the front door.
pub trait Service: Send + Sync + 'static {
    /// What the front door routes, signs and validates by.
    fn spec(&self) -> &Spec;

    /// Whether the service implements `operation` (the model may define
    /// more operations than a service serves).
    fn supports(&self, operation: &str) -> bool;

    /// Runs one operation.
    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a>;

    /// The resource policy of a resource, by canonical ARN, if the service
    /// keeps resource policies.
    fn resource_policy(&self, _arn: &str) -> Option<Arc<ripstream_iam::Policy>> {
        None
    }

    /// The service's background work (retention, reaping, scaling), asked
    /// for once when the front door begins serving; it runs each task on its
    /// runtime and drops them when it stops serving, before the shared
    /// storage is closed. A task must tolerate being dropped at any await.
    fn start(&self) -> Vec<Task> {
        Vec::new()
    }

    /// Whether a path the front door would otherwise answer itself
    /// (`/health`, `/metrics`) names one of this service's resources: S3
    /// claims `/health` once a bucket named `health` exists, so operators'
    /// short paths never hide a bucket (the `/_ripstream/` ones cannot
    /// collide: no bucket name has an underscore).
    fn claims_path(&self, _path: &str) -> bool {
        false
    }

    /// Resources refused at start-up because their data is missing from the
    /// data directory (`/health` reports the server degraded while any is).
    fn unavailable(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn causes_are_listed_once_each() {
        let e = Outer(Middle(std::io::Error::other("disk full")));
        // The io error is already in the middle one's message.
        assert_eq!(Causes(&e).to_string(), "middle: disk full");
        assert_eq!(Chain(&e).to_string(), "outer: middle: disk full");
        let plain = std::io::Error::other("alone");
        assert_eq!(Causes(&plain).to_string(), "");
        assert_eq!(Chain(&plain).to_string(), "alone");
    }

    #[test]
    fn specs_come_from_the_model_metadata() {
        let dynamo = r#"{"metadata": {"protocol": "json", "jsonVersion": "1.0", "targetPrefix": "DynamoDB_20120810", "endpointPrefix": "dynamodb", "serviceId": "DynamoDB"}}"#;
        let s = Spec::from_model(dynamo, "dynamodb").unwrap();
        assert_eq!(s.protocol, Protocol::AwsJson1_0);
        assert_eq!(s.signing_name, "dynamodb");
        let s3 = r#"{"metadata": {"protocol": "rest-xml", "endpointPrefix": "s3", "signingName": "s3"}}"#;
        assert_eq!(
            Spec::from_model(s3, "s3").unwrap().protocol,
            Protocol::RestXml
        );
        let video = r#"{"metadata": {"protocol": "rest-json", "endpointPrefix": "kinesisvideo"}}"#;
        assert_eq!(
            Spec::from_model(video, "kinesisvideo").unwrap().protocol,
            Protocol::RestJson1
        );
        let sts = r#"{"metadata": {"protocol": "query", "endpointPrefix": "sts"}}"#;
        assert_eq!(
            Spec::from_model(sts, "sts").unwrap().protocol,
            Protocol::AwsQuery
        );
        assert!(matches!(
            Spec::from_model(
                r#"{"metadata": {"protocol": "ec2", "endpointPrefix": "x"}}"#,
                "x"
            ),
            Err(SpecError::Protocol(_))
        ));
        assert!(Spec::from_model("{}", "x").is_err());
    }
}
