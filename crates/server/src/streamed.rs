//! Request bodies that stream to their service instead of being buffered:
//! the payload of an operation whose model marks its blob payload
//! `streaming` (S3 PutObject, Kinesis Video PutMedia).
//!
//! A [`StreamedBody`] reads the connection's body as the service asks for
//! it, so the server holds one piece (for `aws-chunked`, one chunk: at most
//! [`chunked::Limits::max_chunk_size`]) at a time whatever the body's size.
//! What the service sees is only ever verified data: `aws-chunked` bodies
//! go through [`chunked::ChunkedBody`], chunk signature by chunk signature,
//! and a body signed by its hash (`x-amz-content-sha256: <hex>`) is hashed
//! as it passes, so its last piece is followed by an error instead of the
//! end when the hash is not the one signed. Errors are the AWS errors the
//! client is owed, in the service's dialect.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use sha2::{Digest, Sha256};

use crate::auth::chunked::{self, ChunkedBody, ChunkedBodyError, ChunkedDecoder, Dialect};
use crate::wire::WireError;

/// A request body on its way to a service: decoded, verified, and cut off
/// when the client stops sending for longer than the idle timeout.
pub(crate) struct StreamedBody {
    body: UnsyncBoxBody<Bytes, ChunkedBodyError>,
    dialect: Dialect,
    /// The hash `x-amz-content-sha256` signed, and the hash of what passed.
    expected: Option<(String, Sha256)>,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Why the body stopped, kept for whoever collects it as a whole.
    failure: Option<WireError>,
    done: bool,
}

impl StreamedBody {
    /// `body` as it came (UNSIGNED-PAYLOAD, anonymous mode, or signed by
    /// `expected_sha256`, the lowercase hex hash the signature covers).
    pub(crate) fn plain(
        body: Incoming,
        expected_sha256: Option<String>,
        dialect: Dialect,
        idle: Duration,
    ) -> StreamedBody {
        let body = body
            .map_err(|e| ChunkedBodyError::Body(e.into()))
            .boxed_unsync();
        StreamedBody::new(body, expected_sha256, dialect, idle)
    }

    /// An `aws-chunked` body, decoded (and verified, unless `decoder` is
    /// unverified) chunk by chunk.
    pub(crate) fn chunked(
        body: Incoming,
        decoder: ChunkedDecoder,
        dialect: Dialect,
        idle: Duration,
    ) -> StreamedBody {
        let body = ChunkedBody::new(body, decoder).boxed_unsync();
        StreamedBody::new(body, None, dialect, idle)
    }

    /// A body already buffered (and verified) whole.
    pub(crate) fn buffered(bytes: Bytes, dialect: Dialect) -> StreamedBody {
        let body = http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync();
        StreamedBody::new(body, None, dialect, Duration::from_secs(3600))
    }

    fn new(
        body: UnsyncBoxBody<Bytes, ChunkedBodyError>,
        expected_sha256: Option<String>,
        dialect: Dialect,
        idle: Duration,
    ) -> StreamedBody {
        StreamedBody {
            body,
            dialect,
            expected: expected_sha256.map(|h| (h, Sha256::new())),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            failure: None,
            done: false,
        }
    }

    /// Why the body stopped early, once it did.
    pub(crate) fn take_failure(&mut self) -> Option<WireError> {
        self.failure.take()
    }

    fn fail(&mut self, e: WireError) -> Poll<Option<Result<Bytes, WireError>>> {
        self.done = true;
        self.failure = Some(e.clone());
        Poll::Ready(Some(Err(e)))
    }

    fn broken(&self, e: ChunkedBodyError) -> WireError {
        match e {
            ChunkedBodyError::Chunked(e) => e.to_wire(self.dialect),
            ChunkedBodyError::Body(e) => match self.dialect {
                Dialect::S3 => {
                    let mut w = WireError::new(
                        StatusCode::BAD_REQUEST,
                        "IncompleteBody",
                        "You did not provide the number of bytes specified by the Content-Length HTTP header",
                    );
                    w.cause = Some(e.to_string());
                    w
                }
                Dialect::Json => {
                    WireError::serialization(format!("Could not read the request body: {e}"))
                }
            },
        }
    }

    /// The next piece of verified data.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WireError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => {
                    // Slowloris: a client that stops sending loses the request.
                    if self.timer.as_mut().poll(cx).is_ready() {
                        let e = match self.dialect {
                            Dialect::S3 => WireError::new(
                                StatusCode::BAD_REQUEST,
                                "RequestTimeout",
                                "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
                            ),
                            Dialect::Json => WireError::new(
                                StatusCode::REQUEST_TIMEOUT,
                                "RequestTimeoutException",
                                format!(
                                    "The request body stalled for {} seconds",
                                    self.idle.as_secs()
                                ),
                            ),
                        };
                        return self.fail(e);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(e))) => {
                    let e = self.broken(e);
                    return self.fail(e);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = tokio::time::Instant::now() + self.idle;
                    self.timer.as_mut().reset(deadline);
                    // Trailers were checked by the decoder; nothing else is data.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Some((_, hasher)) = &mut self.expected {
                        hasher.update(&data);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(None) => {
                    if let Some((claimed, hasher)) = self.expected.take()
                        && hex::encode(hasher.finalize()) != claimed
                    {
                        let e = match self.dialect {
                            Dialect::S3 => WireError::new(
                                StatusCode::BAD_REQUEST,
                                "XAmzContentSHA256Mismatch",
                                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                            ),
                            Dialect::Json => WireError::new(
                                StatusCode::BAD_REQUEST,
                                "InvalidSignatureException",
                                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                            ),
                        };
                        return self.fail(e);
                    }
                    self.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl futures_core::Stream for StreamedBody {
    type Item = Result<Bytes, ripstream_api::BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .poll_data(cx)
            .map(|o| o.map(|r| r.map_err(|e| Box::new(e) as ripstream_api::BoxError)))
    }
}

/// For collecting a body whole (an `aws-chunked` body of an operation whose
/// payload does not stream).
impl Body for StreamedBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        self.get_mut()
            .poll_data(cx)
            .map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The dialect of a REST protocol's errors.
pub(crate) fn dialect(protocol: ripstream_api::Protocol) -> Dialect {
    match protocol {
        ripstream_api::Protocol::RestXml => Dialect::S3,
        _ => Dialect::Json,
    }
}

/// Whether `x-amz-content-sha256` is a hash (which the body must then match).
pub(crate) fn payload_hash(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
}

/// The `aws-chunked` mode `x-amz-content-sha256` announces.
pub(crate) fn chunked_mode(headers: &http::HeaderMap) -> Option<chunked::StreamingMode> {
    headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .and_then(chunked::StreamingMode::from_content_sha256)
}
