//! Shard iterators: opaque, self-contained tokens authenticated with the server's key.
//!
//! A token carries everything GetRecords needs (stream, shard, next offset,
//! issue time), so iterators cost the server no memory and survive restarts.
//! An HMAC-SHA256 tag (truncated to 128 bits) under a key kept in the catalog
//! makes any change to a token detectable.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long an iterator stays valid.
pub const ITERATOR_TTL_MS: i64 = 300_000;
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// First byte of sealed non-iterator tokens (iterators start with `VERSION`).
const SEALED: u8 = 0xA5;

/// What a shard iterator points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IteratorToken {
    pub stream_name: String,
    pub stream_uid: u64,
    pub shard_index: u32,
    /// Offset of the next record to read.
    pub offset: u64,
    pub issued_ms: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Invalid,
    Expired { issued_ms: i64 },
}

/// Signs and checks iterator tokens.
#[derive(Clone)]
pub struct IteratorCodec {
    key: [u8; 32],
}

impl std::fmt::Debug for IteratorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IteratorCodec { .. }")
    }
}

impl IteratorCodec {
    pub fn new(key: [u8; 32]) -> IteratorCodec {
        IteratorCodec { key }
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// Encodes a token.
    pub fn encode(&self, t: &IteratorToken) -> String {
        let name = t.stream_name.as_bytes();
        let mut body = Vec::with_capacity(30 + name.len() + TAG_LEN);
        body.push(VERSION);
        body.extend_from_slice(&t.issued_ms.to_be_bytes());
        body.extend_from_slice(&t.stream_uid.to_be_bytes());
        body.extend_from_slice(&t.shard_index.to_be_bytes());
        body.extend_from_slice(&t.offset.to_be_bytes());
        body.push(name.len().min(255) as u8);
        body.extend_from_slice(&name[..name.len().min(255)]);
        let tag = self.tag(&body);
        body.extend_from_slice(&tag);
        STANDARD.encode(body)
    }

    /// Signs a payload that is not an iterator (a pagination token). The
    /// `domain` goes into the tag, so a token of one kind never verifies as
    /// another, and no kind verifies as a shard iterator.
    pub fn seal(&self, domain: &str, payload: &[u8]) -> String {
        let mut body = Vec::with_capacity(1 + payload.len() + TAG_LEN);
        body.push(SEALED);
        body.extend_from_slice(payload);
        let tag = self.domain_tag(domain, &body);
        body.extend_from_slice(&tag);
        STANDARD.encode(body)
    }

    /// The payload of a token made by [`IteratorCodec::seal`] for `domain`,
    /// or `None` if it was not made here, for this domain, unchanged.
    pub fn open(&self, domain: &str, token: &str) -> Option<Vec<u8>> {
        let raw = STANDARD.decode(token).ok()?;
        if raw.len() < 1 + TAG_LEN || raw[0] != SEALED {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let expected = self.domain_tag(domain, body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return None;
        }
        Some(body[1..].to_vec())
    }

    fn domain_tag(&self, domain: &str, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// Decodes and verifies a token, checking its age against `now_ms`.
    pub fn decode(&self, s: &str, now_ms: i64) -> Result<IteratorToken, TokenError> {
        let t = self.decode_any_age(s)?;
        if now_ms.saturating_sub(t.issued_ms) > ITERATOR_TTL_MS {
            return Err(TokenError::Expired {
                issued_ms: t.issued_ms,
            });
        }
        Ok(t)
    }

    /// Decodes and verifies a token whatever its age.
    pub fn decode_any_age(&self, s: &str) -> Result<IteratorToken, TokenError> {
        let raw = STANDARD.decode(s).map_err(|_| TokenError::Invalid)?;
        if raw.len() < 30 + TAG_LEN || raw[0] != VERSION {
            return Err(TokenError::Invalid);
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let expected = self.tag(body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Err(TokenError::Invalid);
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&body[i..i + 8]);
            w
        };
        let issued_ms = i64::from_be_bytes(word(1));
        let stream_uid = u64::from_be_bytes(word(9));
        let shard_index = u32::from_be_bytes([body[17], body[18], body[19], body[20]]);
        let offset = u64::from_be_bytes(word(21));
        let name_len = body[29] as usize;
        if body.len() != 30 + name_len {
            return Err(TokenError::Invalid);
        }
        let stream_name =
            String::from_utf8(body[30..].to_vec()).map_err(|_| TokenError::Invalid)?;
        Ok(IteratorToken {
            stream_name,
            stream_uid,
            shard_index,
            offset,
            issued_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> IteratorToken {
        IteratorToken {
            stream_name: "orders".into(),
            stream_uid: 42,
            shard_index: 3,
            offset: 1234,
            issued_ms: 1_000_000,
        }
    }

    #[test]
    fn sealed_tokens_verify_only_in_their_domain() {
        let codec = IteratorCodec::new([7; 32]);
        let t = codec.seal("ListShards", b"payload");
        assert_eq!(
            codec.open("ListShards", &t).as_deref(),
            Some(&b"payload"[..])
        );
        assert_eq!(codec.open("ListStreams", &t), None);
        assert_eq!(codec.decode_any_age(&t), Err(TokenError::Invalid));
        assert_eq!(IteratorCodec::new([8; 32]).open("ListShards", &t), None);
        let mut raw = STANDARD.decode(&t).unwrap();
        raw[2] ^= 1;
        assert_eq!(codec.open("ListShards", &STANDARD.encode(raw)), None);
        let iterator = codec.encode(&token());
        assert_eq!(codec.open("ListShards", &iterator), None);
    }

    #[test]
    fn round_trip_tamper_and_expiry() {
        let c = IteratorCodec::new([7; 32]);
        let s = c.encode(&token());
        assert!(s.len() <= 512);
        assert_eq!(c.decode(&s, 1_000_001).unwrap(), token());
        assert_eq!(
            c.decode(&s, 1_000_000 + ITERATOR_TTL_MS + 1),
            Err(TokenError::Expired {
                issued_ms: 1_000_000
            })
        );
        let mut raw = STANDARD.decode(&s).unwrap();
        raw[25] ^= 1;
        assert_eq!(
            c.decode(&STANDARD.encode(&raw), 1_000_001),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            IteratorCodec::new([8; 32]).decode(&s, 1_000_001),
            Err(TokenError::Invalid)
        );
        assert_eq!(c.decode("not base64!", 0), Err(TokenError::Invalid));
        assert_eq!(c.decode("", 0), Err(TokenError::Invalid));
    }

    #[test]
    fn longest_stream_name_fits_in_512_chars() {
        let c = IteratorCodec::new([1; 32]);
        let mut t = token();
        t.stream_name = "x".repeat(128);
        let s = c.encode(&t);
        assert!(s.len() <= 512, "{}", s.len());
        assert_eq!(c.decode(&s, t.issued_ms).unwrap(), t);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_tokens_are_refused_without_panicking(s in ".{0,600}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let c = IteratorCodec::new([3; 32]);
            prop_assert!(c.decode(&s, 0).is_err());
            prop_assert!(c.decode(&STANDARD.encode(&bytes), 0).is_err());
        }
    }
}
