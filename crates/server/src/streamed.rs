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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The fewest bytes of the connection's body a streamed body must bring in
/// each window (the idle timeout, 30 s: about 1 KiB/s), unless it ends: a
/// client trickling a byte now and then would otherwise hold its request
/// (and its receiving slot) for ever. Counted before `aws-chunked` decoding,
/// so a large chunk still arriving counts.
pub(crate) const MIN_BYTES_PER_WINDOW: usize = 32 * 1024;

/// Counts the bytes of the connection's body as they arrive.
fn metered<B>(body: B) -> (impl Body<Data = Bytes, Error = B::Error>, Arc<AtomicUsize>)
where
    B: Body<Data = Bytes>,
{
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counter.fetch_add(data.len(), Ordering::Relaxed);
        }
        frame
    });
    (body, received)
}

/// A request body on its way to a service: decoded, verified, and cut off
/// when the client sends less than [`MIN_BYTES_PER_WINDOW`] in a window of
/// the idle timeout.
pub(crate) struct StreamedBody {
    body: UnsyncBoxBody<Bytes, ChunkedBodyError>,
    dialect: Dialect,
    /// The hash `x-amz-content-sha256` signed, and the hash of what passed.
    expected: Option<(String, Sha256)>,
    idle: Duration,
    /// The end of the current window.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Bytes of the connection's body so far, and when the window began.
    received: Arc<AtomicUsize>,
    window_start: usize,
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
        let (body, received) = metered(body);
        let body = body
            .map_err(|e| ChunkedBodyError::Body(e.into()))
            .boxed_unsync();
        StreamedBody::new(body, expected_sha256, dialect, idle, received)
    }

    /// An `aws-chunked` body, decoded (and verified, unless `decoder` is
    /// unverified) chunk by chunk.
    /// What the decoder holds (a chunk is verified only once it is whole) is
    /// charged to `budget` as it grows.
    pub(crate) fn chunked(
        body: Incoming,
        decoder: ChunkedDecoder,
        dialect: Dialect,
        idle: Duration,
        budget: &Arc<crate::budget::MemoryBudget>,
    ) -> StreamedBody {
        let (body, received) = metered(body);
        let mut reservation = budget.reservation();
        let body = ChunkedBody::new(body, decoder)
            .holding(Box::new(move |held| reservation.set(held)))
            .boxed_unsync();
        StreamedBody::new(body, None, dialect, idle, received)
    }

    /// A body already buffered (and verified) whole.
    pub(crate) fn buffered(bytes: Bytes, dialect: Dialect) -> StreamedBody {
        let body = http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync();
        // Always ready: its window never ends while it is waited for.
        let received = Arc::new(AtomicUsize::new(usize::MAX));
        StreamedBody::new(body, None, dialect, Duration::from_secs(3600), received)
    }

    fn new(
        body: UnsyncBoxBody<Bytes, ChunkedBodyError>,
        expected_sha256: Option<String>,
        dialect: Dialect,
        idle: Duration,
        received: Arc<AtomicUsize>,
    ) -> StreamedBody {
        StreamedBody {
            body,
            dialect,
            expected: expected_sha256.map(|h| (h, Sha256::new())),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            received,
            window_start: 0,
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
            ChunkedBodyError::Busy => {
                let mut w = WireError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    "The server is buffering too many request bytes; retry with backoff.",
                );
                if self.dialect == Dialect::S3 {
                    w.code = "SlowDown";
                }
                w
            }
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
                    // Slowloris: a client that stops sending, or trickles,
                    // loses the request; one that kept the rate gets another
                    // window.
                    if self.timer.as_mut().poll(cx).is_ready() {
                        let now = self.received.load(Ordering::Relaxed);
                        if now.saturating_sub(self.window_start) >= MIN_BYTES_PER_WINDOW {
                            self.window_start = now;
                            let deadline = tokio::time::Instant::now() + self.idle;
                            self.timer.as_mut().reset(deadline);
                            // Registers the new deadline's wakeup.
                            let _ = self.timer.as_mut().poll(cx);
                            return Poll::Pending;
                        }
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
                                    "The request body brought less than {MIN_BYTES_PER_WINDOW} bytes in {} seconds",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A body fed from a channel, as a client sends it.
    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn channel() -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        (tx, ChannelBody(rx))
    }

    fn streamed(body: ChannelBody, idle: Duration) -> StreamedBody {
        let (body, received) = metered(body);
        let body = body.map_err(|never| match never {}).boxed_unsync();
        StreamedBody::new(body, None, Dialect::Json, idle, received)
    }

    #[tokio::test]
    async fn a_trickling_body_is_cut_off_and_a_steady_one_is_not() {
        use http_body_util::BodyExt as _;
        let idle = Duration::from_millis(300);
        // A byte every 100 ms never leaves the body idle, but brings far
        // less than the minimum per window.
        let (tx, body) = channel();
        let mut body = streamed(body, idle);
        let feeder = tokio::spawn(async move {
            for _ in 0..100 {
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let started = std::time::Instant::now();
        let mut failed = None;
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("the trickle is cut off");
        assert_eq!(e.code, "RequestTimeoutException");
        assert!(started.elapsed() < Duration::from_secs(5));
        feeder.abort();
        // A body that brings the minimum each window streams on.
        let (tx, body) = channel();
        let mut body = streamed(body, idle);
        let feeder = tokio::spawn(async move {
            for _ in 0..4 {
                let _ = tx.send(Bytes::from(vec![0u8; MIN_BYTES_PER_WINDOW])).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(total, 4 * MIN_BYTES_PER_WINDOW);
        feeder.await.unwrap();
    }
}
