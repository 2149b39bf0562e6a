//! The memory budget for request bodies: the bytes buffered across every
//! in-flight request are bounded, so thousands of concurrent large bodies
//! are refused (503, retry) instead of exhausting memory. A body reserves
//! its buffer from the budget as its bytes arrive, so a client that only
//! declares a large Content-Length holds nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;

use crate::wire::WireError;

/// The bytes every in-flight request may buffer together.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// An empty reservation, to be grown as bytes arrive.
    pub(crate) fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Bytes reserved right now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes held from the budget; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Grows the reservation to `n` bytes; `false` (and unchanged) when the
    /// budget cannot cover it.
    pub(crate) fn grow_to(&mut self, n: usize) -> bool {
        if n <= self.bytes {
            return true;
        }
        if !self.budget.take(n - self.bytes) {
            return false;
        }
        self.bytes = n;
        true
    }
}

impl Reservation {
    /// Holds exactly `n` bytes: grows (`false`, unchanged, when the budget
    /// cannot cover it) or gives the excess back.
    pub(crate) fn set(&mut self, n: usize) -> bool {
        if n >= self.bytes {
            return self.grow_to(n);
        }
        self.budget.used.fetch_sub(self.bytes - n, Ordering::AcqRel);
        self.bytes = n;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a body could not be collected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the memory budget for request bodies is exhausted")]
    Busy,
    #[error("request body not received within {0:?}")]
    Timeout(Duration),
    #[error("could not read the request body: {0}")]
    Read(String),
}

impl BodyError {
    /// The answer AWS gives (`Busy` is answered as load shedding by the router).
    pub(crate) fn to_wire(&self) -> WireError {
        match self {
            BodyError::TooLarge(max) => WireError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SerializationException",
                format!("Request body exceeds the limit of {max} bytes"),
            ),
            BodyError::Busy => WireError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                "The server is buffering too many request bytes; retry with backoff.",
            ),
            BodyError::Timeout(t) => WireError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                format!(
                    "The request body was not received within {} seconds",
                    t.as_secs()
                ),
            ),
            BodyError::Read(e) => {
                WireError::serialization(format!("Could not read the request body: {e}"))
            }
        }
    }
}

/// Roughly what decoding a JSON text costs beyond its bytes: a 32-byte
/// `serde_json::Value` per value, about doubled by vector and map growth, for
/// each byte that can start one (`{}` entries by the million are 1.5 bytes
/// each as text and 20 times that as values).
pub(crate) fn json_decoding_estimate(bytes: &[u8]) -> usize {
    // Counted in runs of 255 with a byte counter and non-short-circuit
    // compares, which the compiler turns into SIMD: every request body
    // passes here, and it showed in PutRecord profiles.
    let starts: usize = bytes
        .chunks(255)
        .map(|run| {
            let n = run.iter().fold(0u8, |n, &b| {
                n + u8::from((b == b',') | (b == b'[') | (b == b'{') | (b == b':'))
            });
            usize::from(n)
        })
        .sum();
    starts.saturating_mul(64)
}

/// Roughly what parsing an XML text costs beyond its bytes: an element is a
/// name, attribute, child and text vector (about 100 bytes before their
/// contents) and then a JSON value, so 128 bytes for each `<`, and 64 for each
/// `=` an attribute may take. `<a/>` by the million is 4 bytes each as text.
pub(crate) fn xml_decoding_estimate(bytes: &[u8]) -> usize {
    let (tags, attrs) = bytes.iter().fold((0usize, 0usize), |(t, a), &b| match b {
        b'<' => (t + 1, a),
        b'=' => (t, a + 1),
        _ => (t, a),
    });
    tags.saturating_mul(128)
        .saturating_add(attrs.saturating_mul(64))
}

/// What a collected body becomes, for the values decoding it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Kept as bytes (or decoded by a codec that bounds itself, as CBOR's).
    Bytes,
    Json,
    Xml,
}

/// Reads a whole body of at most `max` bytes within `timeout`, reserving its
/// buffer from `budget` before growing it; a JSON or XML body also reserves
/// what decoding it will build ([`json_decoding_estimate`],
/// [`xml_decoding_estimate`], at most what the budget could ever give, so a
/// lone request is never refused for it). The
/// reservation must live as long as the bytes and their decoded values do.
pub(crate) async fn collect_body<B>(
    mut body: B,
    max: usize,
    budget: &Arc<MemoryBudget>,
    timeout: Duration,
    decoded: Decoded,
) -> Result<(Bytes, Reservation), BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // A declared length over the limit is refused before reading anything.
    let declared = body.size_hint().lower();
    if declared > max as u64 {
        return Err(BodyError::TooLarge(max));
    }
    // The buffer grows to the declared length at most in one step, and to at
    // most `max` for a body of unknown length.
    let declared = declared as usize;
    let mut reservation = budget.reservation();
    let mut buf = BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let needed = buf.len() + data.len();
            if needed > max {
                return Err(BodyError::TooLarge(max));
            }
            if needed > buf.capacity() {
                // Doubling keeps copies few; the declared length, when it is
                // right, makes it one allocation.
                let target = needed
                    .max(declared.min(max))
                    .max(buf.capacity().saturating_mul(2).min(max));
                if !reservation.grow_to(target) {
                    return Err(BodyError::Busy);
                }
                buf.reserve(target - buf.len());
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(BodyError::Timeout(timeout)),
    }
    let estimate = match decoded {
        Decoded::Bytes => None,
        Decoded::Json => Some(json_decoding_estimate(&buf)),
        Decoded::Xml => Some(xml_decoding_estimate(&buf)),
    };
    if let Some(estimate) = estimate {
        let held = reservation.bytes;
        let decoded = estimate.min(budget.limit.saturating_sub(held));
        if !reservation.grow_to(held.saturating_add(decoded)) {
            return Err(BodyError::Busy);
        }
    }
    Ok((buf.freeze(), reservation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn the_json_estimate_counts_every_value_start_across_runs() {
        // Lengths around the 255-byte runs, all four start bytes and others.
        let alphabet = b",[{:}]\"a1 ";
        for len in [0, 1, 254, 255, 256, 510, 511, 4096] {
            let text: Vec<u8> = (0..len)
                .map(|i: usize| alphabet[(i * 7 + i / 3) % alphabet.len()])
                .collect();
            let naive = text
                .iter()
                .filter(|&&b| matches!(b, b',' | b'[' | b'{' | b':'))
                .count();
            assert_eq!(json_decoding_estimate(&text), naive * 64, "{len}");
        }
        // A run of 255 starts does not overflow the run's counter.
        assert_eq!(json_decoding_estimate(&[b','; 255]), 255 * 64);
        assert_eq!(json_decoding_estimate(&[b'{'; 1000]), 1000 * 64);
    }

    #[tokio::test]
    async fn xml_bodies_reserve_what_parsing_them_builds() {
        let text = Bytes::from("<a/>".repeat(25));
        assert_eq!(xml_decoding_estimate(&text), 25 * 128);
        assert_eq!(xml_decoding_estimate(b"<a x=\"1\" y=\"2\"/>"), 128 + 2 * 64);
        let budget = MemoryBudget::new(10_000);
        let t = Duration::from_secs(5);
        let (_, held) = collect_body(Full::new(text.clone()), 100, &budget, t, Decoded::Xml)
            .await
            .unwrap();
        assert_eq!(budget.used(), 100 + 25 * 128);
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn bodies_are_buffered_only_within_the_budget() {
        let budget = MemoryBudget::new(1000);
        let t = Duration::from_secs(5);
        let (a, held) = collect_body(
            Full::new(Bytes::from(vec![1u8; 600])),
            800,
            &budget,
            t,
            Decoded::Bytes,
        )
        .await
        .unwrap();
        assert_eq!(a.len(), 600);
        assert!(budget.used() >= 600);
        let e = collect_body(
            Full::new(Bytes::from(vec![1u8; 600])),
            800,
            &budget,
            t,
            Decoded::Bytes,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, BodyError::Busy), "{e}");
        drop(held);
        assert_eq!(budget.used(), 0);
        let e = collect_body(
            Full::new(Bytes::from(vec![1u8; 900])),
            800,
            &budget,
            t,
            Decoded::Bytes,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, BodyError::TooLarge(800)), "{e}");
        // A body of unknown length grows its reservation chunk by chunk.
        let streamed = Chunks((0..10).map(|_| Bytes::from(vec![2u8; 50])).collect());
        let (b, _held) = collect_body(streamed, 800, &budget, t, Decoded::Bytes)
            .await
            .unwrap();
        assert_eq!(b.len(), 500);
        assert!(budget.used() >= 500 && budget.used() <= 800);
    }

    #[tokio::test]
    async fn json_bodies_also_reserve_their_decoded_size() {
        let budget = MemoryBudget::new(10_000);
        let t = Duration::from_secs(5);
        let text = Bytes::from(&b"[{},{},{},{}]"[..]);
        let (_, held) = collect_body(Full::new(text.clone()), 100, &budget, t, Decoded::Json)
            .await
            .unwrap();
        assert_eq!(budget.used(), text.len() + 8 * 64);
        // Another one no longer fits beside it; alone it always would.
        let budget2 = MemoryBudget::new(700);
        let (_, alone) = collect_body(Full::new(text.clone()), 100, &budget2, t, Decoded::Json)
            .await
            .unwrap();
        assert_eq!(budget2.used(), 525);
        let e = collect_body(Full::new(text.clone()), 100, &budget2, t, Decoded::Json)
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::Busy), "{e}");
        // An estimate over the whole budget is cut to it: alone, a body is admitted.
        let tiny = MemoryBudget::new(100);
        let (_, whole) = collect_body(Full::new(text.clone()), 100, &tiny, t, Decoded::Json)
            .await
            .unwrap();
        assert_eq!(tiny.used(), 100);
        drop((held, alone, whole));
        assert_eq!(budget.used() + budget2.used(), 0);
    }

    /// A body of unknown length.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }
}
