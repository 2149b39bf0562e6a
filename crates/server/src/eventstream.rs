//! The `application/vnd.amazon.eventstream` response of SubscribeToShard.
//!
//! Framing (prelude, header and message CRCs) is done by the maintained
//! `aws-smithy-eventstream` crate; this module decides the messages: an
//! `initial-response` event, then one `SubscribeToShardEvent` per push, or an
//! exception event that ends the stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use ripstream_api::EventStream;

use crate::wire::WireError;

pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

fn frame(headers: Vec<Header>, payload: Vec<u8>) -> Bytes {
    let message = Message::new_from_parts(headers, payload);
    let mut out = Vec::with_capacity(message.payload().len() + 128);
    // Writing to a Vec cannot fail; an encoding error would be a bug in our headers.
    if let Err(e) = aws_smithy_eventstream::frame::write_message_to(&message, &mut out) {
        tracing::error!(error = %e, "could not encode an event stream message");
        return Bytes::new();
    }
    Bytes::from(out)
}

fn header(name: &'static str, value: &'static str) -> Header {
    Header::new(name, HeaderValue::String(value.into()))
}

/// The event that opens every subscription: `{}` for JSON clients, an empty
/// payload for CBOR ones (whose SDK would otherwise try to read it as CBOR).
pub fn initial_response(cbor: bool) -> Bytes {
    let (content_type, payload) = if cbor {
        ("application/x-amz-cbor-1.1", Vec::new())
    } else {
        ("application/json", b"{}".to_vec())
    };
    frame(
        vec![
            header(":message-type", "event"),
            header(":event-type", "initial-response"),
            header(":content-type", content_type),
        ],
        payload,
    )
}

/// One pushed event of type `event_type`, its payload encoded in `content_type`.
pub fn event(event_type: &'static str, payload: Vec<u8>, content_type: &'static str) -> Bytes {
    frame(
        vec![
            header(":message-type", "event"),
            header(":event-type", event_type),
            header(":content-type", content_type),
        ],
        payload,
    )
}

/// Encodes an event's payload (its model shape's JSON form) in the request's protocol.
pub type EventEncoder = Box<dyn Fn(&'static str, serde_json::Value) -> Vec<u8> + Send + Sync>;

/// An error that ends the stream, its payload in the client's protocol.
pub fn exception(e: &WireError, cbor: bool) -> Bytes {
    let (content_type, payload) = if cbor {
        let map = ciborium::Value::Map(vec![(
            ciborium::Value::Text("message".into()),
            ciborium::Value::Text(e.message.clone()),
        )]);
        let mut out = Vec::new();
        let _ = ciborium::into_writer(&map, &mut out);
        ("application/x-amz-cbor-1.1", out)
    } else {
        let body = serde_json::json!({ "message": e.message });
        (
            "application/json",
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    };
    frame(
        vec![
            header(":message-type", "exception"),
            Header::new(
                ":exception-type",
                HeaderValue::String(e.code.to_string().into()),
            ),
            header(":content-type", content_type),
        ],
        payload,
    )
}

/// The streaming HTTP body of an event-stream reply: encodes events as they arrive.
pub struct SubscriptionBody {
    started: bool,
    done: bool,
    rx: EventStream,
    cbor: bool,
    encode: EventEncoder,
}

impl SubscriptionBody {
    pub fn new(rx: EventStream, cbor: bool, encode: EventEncoder) -> SubscriptionBody {
        SubscriptionBody {
            started: false,
            done: false,
            rx,
            cbor,
            encode,
        }
    }

    fn content_type(&self) -> &'static str {
        if self.cbor {
            "application/x-amz-cbor-1.1"
        } else {
            "application/json"
        }
    }
}

impl Body for SubscriptionBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.started {
            self.started = true;
            return Poll::Ready(Some(Ok(Frame::data(initial_response(self.cbor)))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok((event_type, ev)))) => {
                let payload = (self.encode)(event_type, ev);
                Poll::Ready(Some(Ok(Frame::data(event(
                    event_type,
                    payload,
                    self.content_type(),
                )))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                let e = WireError::from(e);
                // The request was answered 200 long ago: a fault met while
                // streaming is logged here or nowhere.
                if e.status.is_server_error() {
                    tracing::error!(code = e.code, message = %crate::redact::message_for_log(&e.message), cause = %e.cause_for_log(), "event stream failed");
                }
                Poll::Ready(Some(Ok(Frame::data(exception(&e, self.cbor)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
