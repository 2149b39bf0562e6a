//! `aws-chunked` request bodies: SigV4 streaming payloads, verified chunk by
//! chunk as they arrive, so S3 uploads and Kinesis Video PutMedia never
//! buffer a whole body.
//!
//! A body announced by `x-amz-content-sha256` as one of the `STREAMING-*`
//! values is a sequence of chunks `hex-size[;chunk-signature=<sig>]\r\n
//! <data>\r\n`, a final zero-size chunk, then trailer lines (`name:value\r\n`,
//! possibly none) and an empty line. The header signature covers no byte of
//! it; instead each chunk is signed with the request's signing key over
//!
//! ```text
//! AWS4-HMAC-SHA256-PAYLOAD\n<amz-date>\n<scope>\n<previous signature>\n<sha256("")>\n<sha256(data)>
//! ```
//!
//! the previous signature of the first chunk being the request's own (the
//! seed), so the chain fixes the order of the chunks and where the body ends.
//! The trailers are signed the same way (`AWS4-HMAC-SHA256-TRAILER`, over the
//! hash of `name:value\n` per trailer, chained from the final chunk).
//!
//! [`ChunkedDecoder`] is a push parser: [`ChunkedDecoder::feed`] hands it a
//! piece of the body, [`ChunkedDecoder::decode`] returns the next chunk once
//! its signature (and its framing) verified, so a consumer never sees a byte
//! that is not covered. It holds at most one chunk plus one piece of input:
//! chunks are capped ([`Limits::max_chunk_size`], 16 MiB) and so are header
//! and trailer lines. [`ChunkedBody`] wraps any `http_body::Body` (a
//! `hyper::body::Incoming`) with it and yields the decoded data, then the
//! trailers as a trailers frame. The trailer checksums
//! (`x-amz-checksum-crc32`, `-crc32c`, `-crc64nvme`, `-sha256`) are checked
//! against the decoded data at the end, so a consumer must commit what it
//! stored only once the body ended without an error.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sigv4::{Claims, SigningContext};
use crate::wire::WireError;

pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";

/// Which `aws-chunked` variant a request announced in `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamingMode {
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: signed chunks, no trailers.
    Signed,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks and trailers.
    SignedTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: plain chunks, unsigned trailers
    /// (the data is then covered only by the trailer checksum and TLS).
    UnsignedTrailer,
}

impl StreamingMode {
    /// The mode a `x-amz-content-sha256` value announces, if any. The SigV4a
    /// (`STREAMING-AWS4-ECDSA-P256-SHA256-*`) variants are not supported.
    pub fn from_content_sha256(value: &str) -> Option<StreamingMode> {
        match value {
            STREAMING_SIGNED => Some(StreamingMode::Signed),
            STREAMING_SIGNED_TRAILER => Some(StreamingMode::SignedTrailer),
            STREAMING_UNSIGNED_TRAILER => Some(StreamingMode::UnsignedTrailer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreamingMode::Signed => STREAMING_SIGNED,
            StreamingMode::SignedTrailer => STREAMING_SIGNED_TRAILER,
            StreamingMode::UnsignedTrailer => STREAMING_UNSIGNED_TRAILER,
        }
    }

    /// Whether every chunk carries a signature.
    pub fn signed(self) -> bool {
        !matches!(self, StreamingMode::UnsignedTrailer)
    }

    /// Whether trailer lines may follow the final chunk.
    pub fn has_trailer(self) -> bool {
        !matches!(self, StreamingMode::Signed)
    }
}

/// Which error codes the front door answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// S3's REST-XML codes (`SignatureDoesNotMatch`).
    S3,
    /// The JSON services' codes (`InvalidSignatureException`): Kinesis Video.
    Json,
}

/// Why an `aws-chunked` body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your key and signing method."
    )]
    SignatureDoesNotMatch,
    /// The body ended before its final chunk (or its trailers).
    #[error("You did not provide the number of bytes specified by the Content-Length HTTP header")]
    IncompleteBody,
    /// The decoded data is not as long as `x-amz-decoded-content-length` said
    /// (`provided` is at least that much more when it is longer: a chunk
    /// that would go past the declared length is refused before it is read).
    #[error(
        "You did not provide the number of bytes specified by the x-amz-decoded-content-length HTTP header: expected {declared}, provided {provided}"
    )]
    DecodedLengthMismatch { declared: u64, provided: u64 },
    /// A chunk other than the last was shorter than the minimum.
    #[error("Only the last chunk is allowed to have a size less than {min} bytes")]
    ChunkTooSmall { min: usize },
    #[error("Chunk size {size} is larger than the maximum of {max} bytes")]
    ChunkTooLarge { size: u64, max: usize },
    /// Chunk framing that is not `hex-size;chunk-signature=<64 hex>\r\n...\r\n`.
    #[error("The aws-chunked body is malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "The request contained trailing data that was not well-formed or did not conform to our published schema: {0}"
    )]
    MalformedTrailer(&'static str),
    #[error("The {algorithm} you specified did not match the calculated checksum.")]
    BadDigest { algorithm: &'static str },
    #[error(
        "You must provide the x-amz-decoded-content-length HTTP header with aws-chunked bodies"
    )]
    MissingDecodedContentLength,
}

impl ChunkedError {
    /// The AWS error code.
    pub fn code(&self, dialect: Dialect) -> &'static str {
        match self {
            ChunkedError::SignatureDoesNotMatch => match dialect {
                Dialect::S3 => "SignatureDoesNotMatch",
                Dialect::Json => "InvalidSignatureException",
            },
            ChunkedError::IncompleteBody | ChunkedError::DecodedLengthMismatch { .. } => {
                "IncompleteBody"
            }
            ChunkedError::ChunkTooSmall { .. } | ChunkedError::ChunkTooLarge { .. } => {
                "InvalidChunkSizeError"
            }
            ChunkedError::Malformed(_) => "InvalidRequest",
            ChunkedError::MalformedTrailer(_) => "MalformedTrailerError",
            ChunkedError::BadDigest { .. } => "BadDigest",
            ChunkedError::MissingDecodedContentLength => "MissingContentLength",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ChunkedError::SignatureDoesNotMatch => StatusCode::FORBIDDEN,
            // As S3 answers a missing length.
            ChunkedError::MissingDecodedContentLength => StatusCode::LENGTH_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn to_wire(&self, dialect: Dialect) -> WireError {
        WireError::new(self.status(), self.code(dialect), self.to_string())
    }
}

/// Bounds on what one body may make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest chunk accepted, and so the most data held at once.
    pub max_chunk_size: usize,
    /// Smallest chunk but the last, in the signed modes (S3 requires 8 KiB);
    /// 0 turns the check off.
    pub min_chunk_size: usize,
    /// Longest chunk header or trailer line, without its CRLF.
    pub max_line: usize,
    /// Most trailer lines after the final chunk.
    pub max_trailers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_chunk_size: 16 << 20,
            min_chunk_size: 8 << 10,
            // `1000000;chunk-signature=` and 64 hex digits is 87 bytes; a
            // SHA-256 checksum trailer is 66.
            max_line: 256,
            max_trailers: 8,
        }
    }
}

/// What [`ChunkedDecoder::decode`] has next.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The data of a chunk, its signature verified. Never empty.
    Data(Bytes),
    /// All that was fed is consumed: feed more (or end the input).
    NeedMore,
    /// The final chunk and the trailers verified; nothing more comes.
    End,
}

enum State {
    /// Reading a chunk header line into `line`.
    Header,
    /// Reading `remaining` more bytes of a chunk's data.
    Data {
        size: usize,
        remaining: usize,
        signature: Option<[u8; 64]>,
    },
    /// The chunk's data verified; `matched` bytes of its CRLF seen.
    DataEnd {
        matched: usize,
    },
    /// After the final chunk's header: trailer lines up to an empty one.
    Trailers,
    Done,
    Failed(ChunkedError),
}

/// An incremental `aws-chunked` decoder. See the module documentation.
pub struct ChunkedDecoder {
    mode: StreamingMode,
    /// The signing context and the signature the next chunk chains from, in
    /// the signed modes.
    chain: Option<(SigningContext, String)>,
    declared: u64,
    decoded: u64,
    limits: Limits,
    state: State,
    input: Bytes,
    line: Vec<u8>,
    /// The current chunk's data when it came in several pieces.
    partial: BytesMut,
    /// The current chunk's data when it came whole in one piece.
    whole: Option<Bytes>,
    hasher: Sha256,
    short_chunk_seen: bool,
    /// Trailer names declared in `x-amz-trailer`, lowercase.
    declared_trailers: Vec<String>,
    checksums: Vec<(String, Checksum)>,
    trailers: Vec<(String, String)>,
    /// `name:value\n` of each trailer received, as the trailer signature covers them.
    canonical_trailers: Sha256,
    trailer_signed: bool,
    /// Whether signatures are checked: not in anonymous mode, where the
    /// framing is still decoded so it never reaches a service as data.
    verify: bool,
}

impl std::fmt::Debug for ChunkedDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedDecoder")
            .field("mode", &self.mode)
            .field("declared", &self.declared)
            .field("decoded", &self.decoded)
            .finish_non_exhaustive()
    }
}

/// Whether `x-amz-trailer` in `headers` declares a checksum this decoder
/// checks: what makes an unsigned-trailer body's data verifiable at all.
pub fn declares_checksum(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-amz-trailer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| Checksum::for_trailer(&t.trim().to_ascii_lowercase()).is_some())
}

impl ChunkedDecoder {
    /// A decoder for a body of `mode` whose decoded length is `declared`.
    /// `signing` is required in the signed modes (and ignored otherwise);
    /// `declared_trailers` are the names `x-amz-trailer` announced.
    pub fn new(
        mode: StreamingMode,
        signing: Option<SigningContext>,
        declared: u64,
        declared_trailers: &[&str],
        limits: Limits,
    ) -> ChunkedDecoder {
        let chain = if mode.signed() {
            // Without a context nothing can verify: an empty key and seed
            // then match no signature, so every chunk is refused.
            let ctx = signing.unwrap_or_else(|| SigningContext::new("", "", "", "", ""));
            let seed = ctx.seed_signature.clone();
            Some((ctx, seed))
        } else {
            None
        };
        let declared_trailers: Vec<String> = declared_trailers
            .iter()
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        let checksums = declared_trailers
            .iter()
            .filter_map(|t| Checksum::for_trailer(t).map(|c| (t.clone(), c)))
            .collect();
        ChunkedDecoder {
            mode,
            chain,
            declared,
            decoded: 0,
            limits,
            state: State::Header,
            input: Bytes::new(),
            line: Vec::new(),
            partial: BytesMut::new(),
            whole: None,
            hasher: Sha256::new(),
            short_chunk_seen: false,
            declared_trailers,
            checksums,
            trailers: Vec::new(),
            canonical_trailers: Sha256::new(),
            trailer_signed: false,
            verify: true,
        }
    }

    /// The decoder for a request of a server without credentials (anonymous
    /// mode): `mode` from `x-amz-content-sha256`, the framing, the decoded
    /// length and the trailer checksums checked, no signature.
    pub fn unverified_for_request(
        headers: &HeaderMap,
        mode: StreamingMode,
        limits: Limits,
    ) -> Result<ChunkedDecoder, ChunkedError> {
        let (declared, trailer_names) = Self::declared(headers)?;
        let trailer_names: Vec<&str> = trailer_names.iter().map(String::as_str).collect();
        let mut d = ChunkedDecoder::new(mode, None, declared, &trailer_names, limits);
        d.verify = false;
        Ok(d)
    }

    /// `x-amz-decoded-content-length` and the names `x-amz-trailer` declares.
    fn declared(headers: &HeaderMap) -> Result<(u64, Vec<String>), ChunkedError> {
        let declared = headers
            .get("x-amz-decoded-content-length")
            .ok_or(ChunkedError::MissingDecodedContentLength)?
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(ChunkedError::Malformed(
                "x-amz-decoded-content-length is not a number",
            ))?;
        let names = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(String::from)
            .collect();
        Ok((declared, names))
    }

    /// The decoder for a request `verify` accepted: `None` when its body is
    /// not `aws-chunked`. Reads `x-amz-decoded-content-length` and `x-amz-trailer`.
    pub fn for_request(
        headers: &HeaderMap,
        claims: &Claims,
        limits: Limits,
    ) -> Result<Option<ChunkedDecoder>, ChunkedError> {
        let Some(mode) = claims.streaming else {
            return Ok(None);
        };
        let (declared, trailer_names) = Self::declared(headers)?;
        let trailer_names: Vec<&str> = trailer_names.iter().map(String::as_str).collect();
        Ok(Some(ChunkedDecoder::new(
            mode,
            Some(claims.signing.clone()),
            declared,
            &trailer_names,
            limits,
        )))
    }

    pub fn mode(&self) -> StreamingMode {
        self.mode
    }

    /// Bytes of verified data returned so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Bytes the decoder holds now: input not yet decoded and the buffer of
    /// the chunk being received (which grows up to the chunk's size before
    /// the chunk can be verified).
    pub fn buffered(&self) -> usize {
        self.input.len() + self.partial.capacity()
    }

    /// `x-amz-decoded-content-length`.
    pub fn declared_len(&self) -> u64 {
        self.declared
    }

    /// The trailers received (names lowercase; the trailer signature left
    /// out), complete once [`Decoded::End`] was returned.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// Hands over the next piece of the body. Feed only after `decode`
    /// returned [`Decoded::NeedMore`], so at most one piece is held.
    pub fn feed(&mut self, piece: Bytes) {
        if self.input.is_empty() {
            self.input = piece;
        } else if !piece.is_empty() {
            let mut joined = BytesMut::with_capacity(self.input.len() + piece.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&piece);
            self.input = joined.freeze();
        }
    }

    /// The body ended: an error unless the final chunk and trailers were read.
    pub fn end_of_input(&mut self) -> Result<(), ChunkedError> {
        // What is left of the input may hold the end of the body.
        match self.decode()? {
            Decoded::End => Ok(()),
            Decoded::NeedMore => self.fail(ChunkedError::IncompleteBody),
            Decoded::Data(_) => self.fail(ChunkedError::Malformed(
                "the input ended before the decoded data was taken",
            )),
        }
    }

    fn fail<T>(&mut self, e: ChunkedError) -> Result<T, ChunkedError> {
        tracing::debug!(error = %e, decoded = self.decoded, "aws-chunked body refused");
        self.state = State::Failed(e.clone());
        self.input = Bytes::new();
        self.partial = BytesMut::new();
        self.whole = None;
        Err(e)
    }

    /// Decodes what was fed as far as the next verified chunk.
    pub fn decode(&mut self) -> Result<Decoded, ChunkedError> {
        match self.step() {
            Ok(d) => Ok(d),
            Err(e) => self.fail(e),
        }
    }

    fn step(&mut self) -> Result<Decoded, ChunkedError> {
        loop {
            match &mut self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Done => {
                    if self.input.is_empty() {
                        return Ok(Decoded::End);
                    }
                    return Err(ChunkedError::Malformed("data after the final chunk"));
                }
                State::Header => {
                    if !self.read_line(ChunkedError::Malformed("chunk header too long"))? {
                        return Ok(Decoded::NeedMore);
                    }
                    self.start_chunk()?;
                }
                State::Data {
                    size,
                    remaining,
                    signature,
                } => {
                    if *remaining > 0 {
                        if self.input.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let n = (*remaining).min(self.input.len());
                        let piece = self.input.split_to(n);
                        if signature.is_some() {
                            self.hasher.update(&piece);
                        }
                        for (_, c) in &mut self.checksums {
                            c.update(&piece);
                        }
                        if n == *size {
                            // The whole chunk in one piece: no copy.
                            self.whole = Some(piece);
                        } else {
                            // Grown as the data comes (a header alone holds
                            // nothing), and never past the chunk's size.
                            let need = self.partial.len() + piece.len();
                            if need > self.partial.capacity() {
                                let target = (self.partial.capacity() * 2).max(need).min(*size);
                                let mut grown = BytesMut::with_capacity(target);
                                grown.extend_from_slice(&self.partial);
                                self.partial = grown;
                            }
                            self.partial.extend_from_slice(&piece);
                        }
                        *remaining -= n;
                        if *remaining > 0 {
                            return Ok(Decoded::NeedMore);
                        }
                    }
                    if let Some(presented) = *signature {
                        let digest = self.hasher.finalize_reset();
                        self.verify_chunk(&hex::encode(digest), &presented)?;
                    }
                    self.state = State::DataEnd { matched: 0 };
                }
                State::DataEnd { matched } => {
                    while *matched < 2 {
                        let Some(&b) = self.input.first() else {
                            return Ok(Decoded::NeedMore);
                        };
                        if b != b"\r\n"[*matched] {
                            return Err(ChunkedError::Malformed("chunk data not followed by CRLF"));
                        }
                        self.input.advance(1);
                        *matched += 1;
                    }
                    let data = match self.whole.take() {
                        Some(whole) => whole,
                        None => self.partial.split().freeze(),
                    };
                    self.decoded += data.len() as u64;
                    self.state = State::Header;
                    return Ok(Decoded::Data(data));
                }
                State::Trailers => {
                    if !self.read_line(ChunkedError::MalformedTrailer("trailer line too long"))? {
                        return Ok(Decoded::NeedMore);
                    }
                    if self.line.is_empty() {
                        self.finish_trailers()?;
                        self.state = State::Done;
                    } else {
                        self.trailer_line()?;
                    }
                }
            }
        }
    }

    /// Moves one CRLF-terminated line from the input into `line`; `false`
    /// when the input ran out first.
    fn read_line(&mut self, too_long: ChunkedError) -> Result<bool, ChunkedError> {
        if self.input.is_empty() {
            return Ok(false);
        }
        // The line, its CR and its LF.
        let allowed = (self.limits.max_line + 2).saturating_sub(self.line.len());
        let window = self.input.len().min(allowed);
        match self.input[..window].iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.line.extend_from_slice(&self.input[..i]);
                self.input.advance(i + 1);
                if self.line.pop() != Some(b'\r') {
                    return Err(ChunkedError::Malformed("line not ended by CRLF"));
                }
                if self.line.len() > self.limits.max_line {
                    return Err(too_long);
                }
                Ok(true)
            }
            None if window == allowed => Err(too_long),
            None => {
                self.line.extend_from_slice(&self.input[..window]);
                self.input.advance(window);
                Ok(false)
            }
        }
    }

    /// Parses the chunk header in `line` and moves to its data.
    fn start_chunk(&mut self) -> Result<(), ChunkedError> {
        let line = std::mem::take(&mut self.line);
        let (size_hex, signature) = if self.mode.signed() {
            let Some(semi) = line.iter().position(|&b| b == b';') else {
                return Err(ChunkedError::Malformed(
                    "chunk header without chunk-signature",
                ));
            };
            let sig = line[semi + 1..].strip_prefix(b"chunk-signature=").ok_or(
                ChunkedError::Malformed("chunk header without chunk-signature"),
            )?;
            if sig.len() != 64 || !sig.iter().all(u8::is_ascii_hexdigit) {
                return Err(ChunkedError::Malformed(
                    "chunk-signature is not 64 hex digits",
                ));
            }
            let mut s = [0u8; 64];
            for (d, b) in s.iter_mut().zip(sig) {
                *d = b.to_ascii_lowercase();
            }
            (&line[..semi], Some(s))
        } else {
            (&line[..], None)
        };
        if size_hex.is_empty() || !size_hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(ChunkedError::Malformed("chunk size is not hexadecimal"));
        }
        // Leading zeroes are allowed, so the size is parsed digit by digit,
        // stopping as soon as it is too large.
        let mut size: u64 = 0;
        for &d in size_hex {
            let v = (d as char).to_digit(16).unwrap_or(0) as u64;
            size = size * 16 + v;
            if size > self.limits.max_chunk_size as u64 {
                return Err(ChunkedError::ChunkTooLarge {
                    size,
                    max: self.limits.max_chunk_size,
                });
            }
        }
        let provided = self.decoded.saturating_add(size);
        if provided > self.declared {
            return Err(ChunkedError::DecodedLengthMismatch {
                declared: self.declared,
                provided,
            });
        }
        if size == 0 {
            if let Some(presented) = signature {
                self.verify_chunk(EMPTY_SHA256, &presented)?;
            }
            if self.decoded != self.declared {
                return Err(ChunkedError::DecodedLengthMismatch {
                    declared: self.declared,
                    provided: self.decoded,
                });
            }
            self.state = State::Trailers;
            return Ok(());
        }
        if self.mode.signed() && self.limits.min_chunk_size > 0 {
            if self.short_chunk_seen {
                return Err(ChunkedError::ChunkTooSmall {
                    min: self.limits.min_chunk_size,
                });
            }
            self.short_chunk_seen = size < self.limits.min_chunk_size as u64;
        }
        let size = size as usize;
        self.partial = BytesMut::new();
        self.state = State::Data {
            size,
            remaining: size,
            signature,
        };
        Ok(())
    }

    fn verify_chunk(
        &mut self,
        data_sha256: &str,
        presented: &[u8; 64],
    ) -> Result<(), ChunkedError> {
        let Some((ctx, previous)) = &mut self.chain else {
            return Err(ChunkedError::SignatureDoesNotMatch);
        };
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{previous}\n{EMPTY_SHA256}\n{data_sha256}",
            ctx.amz_date, ctx.scope
        );
        let expected = hex::encode(ctx.sign(to_sign.as_bytes()));
        if self.verify && !bool::from(expected.as_bytes().ct_eq(presented)) {
            return Err(ChunkedError::SignatureDoesNotMatch);
        }
        *previous = expected;
        Ok(())
    }

    /// One `name:value` line after the final chunk.
    fn trailer_line(&mut self) -> Result<(), ChunkedError> {
        let line = std::mem::take(&mut self.line);
        if !self.mode.has_trailer() {
            return Err(ChunkedError::Malformed("trailers after the final chunk"));
        }
        if self.trailer_signed {
            return Err(ChunkedError::MalformedTrailer(
                "a trailer after x-amz-trailer-signature",
            ));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ChunkedError::MalformedTrailer("a trailer line without ':'"));
        };
        let name = std::str::from_utf8(&line[..colon])
            .ok()
            .filter(|n| HeaderName::from_bytes(n.as_bytes()).is_ok())
            .ok_or(ChunkedError::MalformedTrailer("an invalid trailer name"))?
            .to_ascii_lowercase();
        let value = std::str::from_utf8(&line[colon + 1..])
            .ok()
            .map(str::trim)
            .filter(|v| HeaderValue::from_str(v).is_ok())
            .ok_or(ChunkedError::MalformedTrailer("an invalid trailer value"))?
            .to_string();
        if name == TRAILER_SIGNATURE {
            if self.mode != StreamingMode::SignedTrailer {
                return Err(ChunkedError::MalformedTrailer(
                    "x-amz-trailer-signature on unsigned trailers",
                ));
            }
            let presented = value.as_bytes();
            if presented.len() != 64 || !presented.iter().all(u8::is_ascii_hexdigit) {
                return Err(ChunkedError::SignatureDoesNotMatch);
            }
            let Some((ctx, previous)) = &mut self.chain else {
                return Err(ChunkedError::SignatureDoesNotMatch);
            };
            let canonical = std::mem::take(&mut self.canonical_trailers).finalize();
            let to_sign = format!(
                "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{previous}\n{}",
                ctx.amz_date,
                ctx.scope,
                hex::encode(canonical)
            );
            let expected = hex::encode(ctx.sign(to_sign.as_bytes()));
            let presented = value.to_ascii_lowercase();
            if self.verify && !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
                return Err(ChunkedError::SignatureDoesNotMatch);
            }
            *previous = expected;
            self.trailer_signed = true;
            return Ok(());
        }
        if !self.declared_trailers.contains(&name) {
            return Err(ChunkedError::MalformedTrailer(
                "a trailer x-amz-trailer did not declare",
            ));
        }
        if self.trailers.iter().any(|(n, _)| *n == name) {
            return Err(ChunkedError::MalformedTrailer("a trailer sent twice"));
        }
        if self.trailers.len() >= self.limits.max_trailers {
            return Err(ChunkedError::MalformedTrailer("too many trailers"));
        }
        self.canonical_trailers.update(name.as_bytes());
        self.canonical_trailers.update(b":");
        self.canonical_trailers.update(value.as_bytes());
        self.canonical_trailers.update(b"\n");
        self.trailers.push((name, value));
        Ok(())
    }

    /// The empty line after the trailers: every declared trailer came, signed
    /// when it must be, and the checksums match the data.
    fn finish_trailers(&mut self) -> Result<(), ChunkedError> {
        if self.mode == StreamingMode::SignedTrailer && !self.trailer_signed {
            return Err(ChunkedError::SignatureDoesNotMatch);
        }
        for declared in &self.declared_trailers {
            if !self.trailers.iter().any(|(n, _)| n == declared) {
                return Err(ChunkedError::MalformedTrailer(
                    "a trailer x-amz-trailer declared is missing",
                ));
            }
        }
        for (name, checksum) in std::mem::take(&mut self.checksums) {
            let algorithm = checksum.algorithm();
            let computed = checksum.finish();
            let sent = self
                .trailers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str());
            if sent != Some(computed.as_str()) {
                return Err(ChunkedError::BadDigest { algorithm });
            }
        }
        Ok(())
    }
}

/// A checksum a trailer can carry, computed over the decoded data (the
/// maintained CRC crates, hardware-accelerated where the CPU allows).
enum Checksum {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc64fast_nvme::Digest),
    Sha256(Box<Sha256>),
}

impl Checksum {
    fn for_trailer(name: &str) -> Option<Checksum> {
        Some(match name {
            "x-amz-checksum-crc32" => Checksum::Crc32(crc32fast::Hasher::new()),
            "x-amz-checksum-crc32c" => Checksum::Crc32c(0),
            "x-amz-checksum-crc64nvme" => Checksum::Crc64Nvme(crc64fast_nvme::Digest::new()),
            "x-amz-checksum-sha256" => Checksum::Sha256(Box::new(Sha256::new())),
            // SHA-1 is left to the storage layer (no SHA-1 here).
            _ => return None,
        })
    }

    fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Crc32(_) => "CRC32",
            Checksum::Crc32c(_) => "CRC32C",
            Checksum::Crc64Nvme(_) => "CRC64NVME",
            Checksum::Sha256(_) => "SHA256",
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Crc32(h) => h.update(data),
            Checksum::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Checksum::Crc64Nvme(d) => d.write(data),
            Checksum::Sha256(h) => h.update(data),
        }
    }

    /// The base64 of the big-endian digest, as the trailer carries it.
    fn finish(self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Checksum::Crc32(h) => b64.encode(h.finalize().to_be_bytes()),
            Checksum::Crc32c(c) => b64.encode(c.to_be_bytes()),
            Checksum::Crc64Nvme(d) => b64.encode(d.sum64().to_be_bytes()),
            Checksum::Sha256(h) => b64.encode(h.finalize()),
        }
    }
}

/// What `Content-Encoding` says of the decoded body: the header without its
/// `aws-chunked` coding (`None` when nothing is left), as S3 stores it.
pub fn decoded_content_encoding(value: &str) -> Option<String> {
    let rest: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!rest.is_empty()).then(|| rest.join(","))
}

/// Why a [`ChunkedBody`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChunkedBodyError {
    #[error(transparent)]
    Chunked(#[from] ChunkedError),
    /// The body underneath failed (the connection broke).
    #[error("reading the request body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The memory the decoder would hold was refused (see [`ChunkedBody::holding`]).
    #[error("the memory budget for request bodies is exhausted")]
    Busy,
}

/// Asked for the bytes a decoder is about to hold; `false` refuses them.
pub type HoldFn = Box<dyn FnMut(usize) -> bool + Send>;

/// An `http_body::Body` of the verified data of an `aws-chunked` body `B`
/// (a `hyper::body::Incoming`), then a trailers frame with its trailers.
pub struct ChunkedBody<B> {
    inner: B,
    decoder: ChunkedDecoder,
    inner_done: bool,
    trailers_sent: bool,
    hold: Option<HoldFn>,
}

impl<B> ChunkedBody<B> {
    pub fn new(inner: B, decoder: ChunkedDecoder) -> ChunkedBody<B> {
        ChunkedBody {
            inner,
            decoder,
            inner_done: false,
            trailers_sent: false,
            hold: None,
        }
    }

    /// Tells `hold` the bytes the decoder holds whenever they change
    /// (a chunk's buffer grows as it arrives, and empties when handed on),
    /// so they can be charged to a memory budget; when it refuses, the body
    /// ends with [`ChunkedBodyError::Busy`].
    pub fn holding(mut self, hold: HoldFn) -> ChunkedBody<B> {
        self.hold = Some(hold);
        self
    }

    fn charge(&mut self) -> bool {
        let held = self.decoder.buffered();
        self.hold.as_mut().is_none_or(|hold| hold(held))
    }

    pub fn decoder(&self) -> &ChunkedDecoder {
        &self.decoder
    }
}

impl<B> Body for ChunkedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = ChunkedBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ChunkedBodyError>>> {
        let this = self.get_mut();
        loop {
            let decoded = this.decoder.decode();
            if !this.charge() {
                return Poll::Ready(Some(Err(ChunkedBodyError::Busy)));
            }
            match decoded {
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => {
                    if this.trailers_sent {
                        return Poll::Ready(None);
                    }
                    this.trailers_sent = true;
                    let mut map = HeaderMap::new();
                    for (name, value) in this.decoder.trailers() {
                        // Both were checked when the trailer was read.
                        if let (Ok(n), Ok(v)) = (
                            HeaderName::from_bytes(name.as_bytes()),
                            HeaderValue::from_str(value),
                        ) {
                            map.append(n, v);
                        }
                    }
                    if map.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::trailers(map))));
                }
                Ok(Decoded::NeedMore) if this.inner_done => {
                    return Poll::Ready(Some(Err(ChunkedError::IncompleteBody.into())));
                }
                Ok(Decoded::NeedMore) => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Some(Err(ChunkedBodyError::Body(e.into()))));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        // HTTP trailers of the transport carry nothing signed.
                        if let Ok(mut data) = frame.into_data() {
                            let piece = data.copy_to_bytes(data.remaining());
                            this.decoder.feed(piece);
                            if !this.charge() {
                                return Poll::Ready(Some(Err(ChunkedBodyError::Busy)));
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        this.inner_done = true;
                        if let Err(e) = this.decoder.end_of_input() {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_sent
    }

    fn size_hint(&self) -> SizeHint {
        // Only a hint: the decoder refuses anything else.
        let mut hint = SizeHint::new();
        hint.set_upper(
            self.decoder
                .declared_len()
                .saturating_sub(self.decoder.decoded_len()),
        );
        hint
    }
}

#[cfg(test)]
mod tests;
