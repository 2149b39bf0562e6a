//! Envelope encryption of stored objects (S3's SSE-KMS and SSE-S3), in
//! fixed-size chunks, so a range is read by opening only the chunks it
//! touches and a write is sealed as it streams in.
//!
//! An object sealed under a master key is
//!
//! ```text
//! header:  "RSSE" | version 1 | chunk size log2 | key id length u8 | nonce prefix 7
//!          | key id | wrapped data key (nonce 12, ciphertext 32, tag 16)
//! chunks:  each AES-256-GCM ciphertext of CHUNK plaintext bytes, then its tag (16);
//!          the last one shorter (or empty, for an empty object only)
//! ```
//!
//! Every object has a fresh 256-bit data key, sealed under the master key
//! with the key id and the caller's context (the object's ARN) as
//! associated data, so a header moved onto another object does not open.
//! A chunk's nonce is the object's random prefix, its index (u32, big
//! endian) and a final flag (1 on the last chunk only): reordering chunks,
//! dropping the tail or appending one fails authentication, and chunks of
//! another object do not open under this object's data key.

use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};

use crate::{Keyring, KeyringError, TAG_LEN, WRAPPED_LEN, aead_key, open, random, seal};

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const CHUNK_LOG2: u8 = 16;
const MAGIC: &[u8; 4] = b"RSSE";
const VERSION: u8 = 1;
const PREFIX_LEN: usize = 7;
/// The fixed part of the header: magic, version, chunk size, id length, prefix.
const FIXED: usize = 4 + 1 + 1 + 1 + PREFIX_LEN;
/// The longest header: a 255-byte key id.
pub const MAX_HEADER_LEN: usize = FIXED + 255 + WRAPPED_LEN;
const CHUNK_AAD: &[u8] = b"ripstream-object-v1";

/// Why a sealed object could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The header is not one this version writes (or is cut short).
    #[error("the object's encryption header is not valid")]
    BadHeader,
    /// The data key did not open under the named master key: other key
    /// material than the object was sealed with, or the header was altered.
    #[error("the object's data key does not open under master key {0}")]
    Undecryptable(String),
    /// A chunk failed authentication: altered, reordered, truncated or
    /// taken from another object.
    #[error("chunk {0} of the object does not authenticate")]
    Tampered(u64),
    /// More chunks than the nonce's 32-bit index can number (256 TiB at
    /// the default chunk size): sealing stops rather than reuse a nonce.
    #[error("the object is too large to encrypt")]
    TooLarge,
    /// The cipher refused to seal a chunk.
    #[error("encryption failed")]
    SealFailed,
}

/// Seals an object's plaintext as it arrives: [`ObjectSealer::header`]
/// first, then what each [`ObjectSealer::update`] and the final
/// [`ObjectSealer::finish`] answer, in order.
pub struct ObjectSealer {
    key: LessSafeKey,
    prefix: [u8; PREFIX_LEN],
    header: Vec<u8>,
    next: Option<u32>,
    pending: Vec<u8>,
}

impl std::fmt::Debug for ObjectSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSealer")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// Opens the chunks of one sealed object.
pub struct ObjectOpener {
    key: LessSafeKey,
    prefix: [u8; PREFIX_LEN],
    chunk: usize,
    header_len: usize,
    key_id: String,
}

impl std::fmt::Debug for ObjectOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectOpener")
            .field("key_id", &self.key_id)
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

fn nonce(prefix: &[u8; PREFIX_LEN], index: u32, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
    n[NONCE_LEN - 1] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn wrap_aad(key_id: &str, context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(key_id.len() + 1 + context.len());
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(context);
    aad
}

/// The header's length, from its first [`FIXED`] bytes (`None`: not a header).
pub fn header_len(start: &[u8]) -> Option<usize> {
    if start.len() < FIXED || &start[..4] != MAGIC || start[4] != VERSION {
        return None;
    }
    Some(FIXED + usize::from(start[6]) + WRAPPED_LEN)
}

/// The sealed length (header excluded) of `plain` plaintext bytes.
pub fn sealed_len(plain: u64) -> u64 {
    let chunks = plain.div_ceil(CHUNK as u64).max(1);
    plain + chunks * TAG_LEN as u64
}

/// The plaintext length of `sealed` bytes of chunks (header excluded);
/// `None` when no sealed object has that length.
pub fn plain_len(sealed: u64) -> Option<u64> {
    let step = (CHUNK + TAG_LEN) as u64;
    if sealed < TAG_LEN as u64 {
        return None;
    }
    let chunks = sealed.div_ceil(step);
    let plain = sealed - chunks * TAG_LEN as u64;
    // A last chunk of tag only is the empty object's alone.
    (sealed_len(plain) == sealed).then_some(plain)
}

impl Keyring {
    /// kms:GenerateDataKey for one object: a fresh data key sealed under
    /// the master key `key_id` (a resolved id), bound to `context`.
    pub fn seal_object(&self, key_id: &str, context: &[u8]) -> Result<ObjectSealer, KeyringError> {
        let master = self.enabled_key(key_id)?;
        let data_key = random::<32>();
        let failed = || KeyringError::File {
            message: "encryption failed".into(),
            source: None,
        };
        let wrapped =
            seal(&master.key, &wrap_aad(key_id, context), &data_key).ok_or_else(failed)?;
        let id = key_id.as_bytes();
        if id.len() > 255 {
            return Err(KeyringError::NotFound(format!("Invalid keyId {key_id}")));
        }
        let prefix = random::<PREFIX_LEN>();
        let mut header = Vec::with_capacity(FIXED + id.len() + wrapped.len());
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.push(CHUNK_LOG2);
        header.push(id.len() as u8);
        header.extend_from_slice(&prefix);
        header.extend_from_slice(id);
        header.extend_from_slice(&wrapped);
        Ok(ObjectSealer {
            key: aead_key(&data_key).ok_or_else(failed)?,
            prefix,
            header,
            next: Some(0),
            pending: Vec::with_capacity(CHUNK),
        })
    }

    /// kms:Decrypt of an object's data key: the opener of the object whose
    /// header this is (its first [`header_len`] bytes), bound to `context`.
    /// A missing or disabled master key is the keyring's error; key
    /// material that does not open the data key is [`SealError`]'s.
    pub fn open_object(
        &self,
        header: &[u8],
        context: &[u8],
    ) -> Result<Result<ObjectOpener, SealError>, KeyringError> {
        let Some(len) = header_len(header).filter(|l| header.len() >= *l) else {
            return Ok(Err(SealError::BadHeader));
        };
        let id_len = usize::from(header[6]);
        let Ok(key_id) = std::str::from_utf8(&header[FIXED..FIXED + id_len]) else {
            return Ok(Err(SealError::BadHeader));
        };
        let chunk_log2 = header[5];
        if !(10..=24).contains(&chunk_log2) {
            return Ok(Err(SealError::BadHeader));
        }
        let master = self.enabled_key(key_id)?;
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&header[7..FIXED]);
        let wrapped = &header[FIXED + id_len..len];
        let opened = open(&master.key, &wrap_aad(key_id, context), wrapped)
            .and_then(|k| aead_key(&k))
            .ok_or_else(|| SealError::Undecryptable(key_id.to_string()));
        Ok(opened.map(|key| ObjectOpener {
            key,
            prefix,
            chunk: 1 << chunk_log2,
            header_len: len,
            key_id: key_id.to_string(),
        }))
    }

    /// The master key of a resolved id, if it can be used.
    fn enabled_key(&self, key_id: &str) -> Result<&crate::MasterKey, KeyringError> {
        let key = self.keys.get(key_id).ok_or_else(|| {
            KeyringError::NotFound(format!("Key '{}' does not exist", self.key_arn(key_id)))
        })?;
        if !key.entry.enabled {
            return Err(KeyringError::Disabled(format!(
                "{} is disabled.",
                self.key_arn(key_id)
            )));
        }
        Ok(key)
    }
}

impl ObjectSealer {
    /// The bytes the sealed object starts with.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Seals one chunk onto the end of `out`, in place.
    fn seal_chunk(&mut self, plain: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), SealError> {
        let index = self.next.ok_or(SealError::TooLarge)?;
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(&self.prefix, index, last),
                Aad::from(CHUNK_AAD),
                &mut out[start..],
            )
            .map_err(|_| {
                out.truncate(start);
                SealError::SealFailed
            })?;
        out.extend_from_slice(tag.as_ref());
        // A nonce is never used twice: past the last index, no chunk seals.
        self.next = index.checked_add(1);
        Ok(())
    }

    /// Takes more plaintext; answers the chunks it completed, sealed. A
    /// full chunk is held back until more follows: only then is it known
    /// not to be the last.
    pub fn update(&mut self, mut plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        while !plain.is_empty() {
            if self.pending.len() == CHUNK {
                let full = std::mem::take(&mut self.pending);
                let sealed = self.seal_chunk(&full, false, &mut out);
                self.pending = full;
                self.pending.clear();
                sealed?;
            }
            let take = (CHUNK - self.pending.len()).min(plain.len());
            self.pending.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
        }
        Ok(out)
    }

    /// Seals the last chunk (empty only if the object is).
    pub fn finish(mut self) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::with_capacity(self.pending.len() + TAG_LEN);
        let last = std::mem::take(&mut self.pending);
        self.seal_chunk(&last, true, &mut out)?;
        Ok(out)
    }

    /// Seals a whole object in memory, header and chunks, into one buffer
    /// (the plaintext and the sealed copy are the only two in memory).
    pub fn seal_all(mut self, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out =
            Vec::with_capacity(self.header.len() + sealed_len(plain.len() as u64) as usize);
        out.extend_from_slice(&self.header);
        let mut chunks = plain.chunks(CHUNK).peekable();
        if chunks.peek().is_none() {
            self.seal_chunk(&[], true, &mut out)?;
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            self.seal_chunk(chunk, last, &mut out)?;
        }
        Ok(out)
    }
}

impl ObjectOpener {
    /// The header's length: chunks start there.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// The master key id the object was sealed under.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The plaintext length of an object whose chunks take `sealed` bytes.
    pub fn plain_len(&self, sealed: u64) -> Option<u64> {
        let step = (self.chunk + TAG_LEN) as u64;
        if sealed < TAG_LEN as u64 {
            return None;
        }
        let chunks = sealed.div_ceil(step);
        let plain = sealed - chunks * TAG_LEN as u64;
        let again = plain.div_ceil(self.chunk as u64).max(1);
        (again == chunks).then_some(plain)
    }

    /// Where chunk `index` starts in the sealed object (header included).
    pub fn chunk_offset(&self, index: u64) -> u64 {
        self.header_len as u64 + index * (self.chunk + TAG_LEN) as u64
    }

    /// Opens chunk `index` (`last`: the object's final chunk) in place:
    /// answers its plaintext, or Tampered.
    pub fn open_chunk<'a>(
        &self,
        index: u64,
        last: bool,
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], SealError> {
        let i = u32::try_from(index).map_err(|_| SealError::Tampered(index))?;
        if sealed.len() > self.chunk + TAG_LEN || (!last && sealed.len() != self.chunk + TAG_LEN) {
            return Err(SealError::Tampered(index));
        }
        self.key
            .open_in_place(nonce(&self.prefix, i, last), Aad::from(CHUNK_AAD), sealed)
            .map(|p| &mut p[..])
            .map_err(|_| SealError::Tampered(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn ring(material: [u8; 32], enabled: bool) -> Keyring {
        Keyring::parse(
            &format!(
                "[[key]]\nid = \"k1\"\naliases = [\"alias/aws/s3\"]\nmaterial = \"{}\"\nenabled = {enabled}\n",
                STANDARD.encode(material)
            ),
            "us-east-1",
            "000000000000",
        )
        .unwrap()
    }

    /// The plaintext of bytes `a..b` of a sealed object, opening only the
    /// chunks that hold them.
    fn read_range(
        r: &Keyring,
        sealed: &[u8],
        ctx: &[u8],
        a: usize,
        b: usize,
    ) -> Result<Vec<u8>, SealError> {
        let o = r.open_object(sealed, ctx).unwrap()?;
        let body = (sealed.len() - o.header_len()) as u64;
        let plain = o.plain_len(body).ok_or(SealError::BadHeader)? as usize;
        let chunks = plain.div_ceil(o.chunk_size()).max(1) as u64;
        let mut out = Vec::new();
        for i in (a / o.chunk_size()) as u64..=((b.max(a + 1) - 1) / o.chunk_size()) as u64 {
            let at = o.chunk_offset(i) as usize;
            let end = (at + o.chunk_size() + TAG_LEN).min(sealed.len());
            let mut buf = sealed[at..end].to_vec();
            let p = o.open_chunk(i, i + 1 == chunks, &mut buf)?;
            let base = i as usize * o.chunk_size();
            let lo = a.saturating_sub(base);
            let hi = (b - base).min(p.len());
            out.extend_from_slice(&p[lo..hi]);
        }
        Ok(out)
    }

    #[test]
    fn round_trips_streamed_and_whole_with_ranges_across_chunks() {
        let r = ring([7; 32], true);
        let plain: Vec<u8> = (0..(3 * CHUNK + 100)).map(|i| (i % 251) as u8).collect();
        let sealed = r
            .seal_object("k1", b"arn:aws:s3:::b/k")
            .unwrap()
            .seal_all(&plain)
            .unwrap();
        assert_eq!(
            sealed.len() as u64,
            header_len(&sealed).unwrap() as u64 + sealed_len(plain.len() as u64)
        );
        assert!(!sealed.windows(64).any(|w| w == &plain[1000..1064]));
        // Streamed in odd pieces, the same layout.
        let mut s = r.seal_object("k1", b"arn:aws:s3:::b/k").unwrap();
        let mut streamed = s.header().to_vec();
        for piece in plain.chunks(10_007) {
            streamed.extend(s.update(piece).unwrap());
        }
        streamed.extend(s.finish().unwrap());
        assert_eq!(streamed.len(), sealed.len());
        for (a, b) in [
            (0, plain.len()),
            (CHUNK - 3, CHUNK + 5),
            (CHUNK, 2 * CHUNK),
            (2 * CHUNK + 1, 3 * CHUNK + 100),
            (5, 6),
        ] {
            assert_eq!(
                read_range(&r, &sealed, b"arn:aws:s3:::b/k", a, b).unwrap(),
                &plain[a..b],
                "{a}..{b}"
            );
            assert_eq!(
                read_range(&r, &streamed, b"arn:aws:s3:::b/k", a, b).unwrap(),
                &plain[a..b]
            );
        }
        // Exactly one chunk, and empty: the layout's edge cases.
        for n in [0, 1, CHUNK, CHUNK + 1, 2 * CHUNK] {
            let p = &plain[..n];
            let s = r.seal_object("k1", b"c").unwrap().seal_all(p).unwrap();
            let body = (s.len() - header_len(&s).unwrap()) as u64;
            assert_eq!(plain_len(body), Some(n as u64));
            assert_eq!(read_range(&r, &s, b"c", 0, n).unwrap(), p);
        }
    }

    #[test]
    fn a_sealer_stops_at_the_last_chunk_index_instead_of_reusing_a_nonce() {
        let r = ring([7; 32], true);
        let mut s = r.seal_object("k1", b"c").unwrap();
        s.next = Some(u32::MAX);
        // The chunk at the last index seals; nothing after it does.
        let first = s.update(&vec![1u8; CHUNK + 1]).unwrap();
        assert_eq!(first.len(), CHUNK + TAG_LEN);
        assert_eq!(s.next, None);
        assert_eq!(s.finish().err(), Some(SealError::TooLarge));
        let mut s = r.seal_object("k1", b"c").unwrap();
        s.next = Some(u32::MAX);
        assert_eq!(
            s.update(&vec![1u8; 2 * CHUNK + 1]).err(),
            Some(SealError::TooLarge)
        );
    }

    #[test]
    fn tampering_reordering_truncation_and_swaps_are_detected() {
        let r = ring([7; 32], true);
        let plain = vec![42u8; 2 * CHUNK + 10];
        let sealed = r.seal_object("k1", b"a").unwrap().seal_all(&plain).unwrap();
        let h = header_len(&sealed).unwrap();
        let step = CHUNK + TAG_LEN;
        // One bit of chunk 1.
        let mut flipped = sealed.clone();
        flipped[h + step + 7] ^= 1;
        assert_eq!(
            read_range(&r, &flipped, b"a", 0, plain.len()),
            Err(SealError::Tampered(1))
        );
        // Chunks 0 and 1 swapped (same plaintext, so only the nonce tells).
        let mut swapped = sealed.clone();
        let (c0, c1) = (
            sealed[h..h + step].to_vec(),
            sealed[h + step..h + 2 * step].to_vec(),
        );
        swapped[h..h + step].copy_from_slice(&c1);
        swapped[h + step..h + 2 * step].copy_from_slice(&c0);
        assert_eq!(
            read_range(&r, &swapped, b"a", 0, 10),
            Err(SealError::Tampered(0))
        );
        // Cut at a chunk boundary: the new last chunk was not sealed as last.
        let cut = &sealed[..h + 2 * step];
        assert_eq!(
            read_range(&r, cut, b"a", 0, 2 * CHUNK),
            Err(SealError::Tampered(1))
        );
        // A chunk of another object under another data key.
        let other = r.seal_object("k1", b"a").unwrap().seal_all(&plain).unwrap();
        let mut mixed = sealed.clone();
        mixed[h..h + step].copy_from_slice(&other[h..h + step]);
        assert_eq!(
            read_range(&r, &mixed, b"a", 0, 10),
            Err(SealError::Tampered(0))
        );
        // The header moved to another object's name.
        assert_eq!(
            r.open_object(&sealed, b"b").unwrap().err(),
            Some(SealError::Undecryptable("k1".into()))
        );
        assert_eq!(
            r.open_object(b"RSSE", b"a").unwrap().err(),
            Some(SealError::BadHeader)
        );
    }

    #[test]
    fn wrong_missing_and_disabled_keys() {
        let sealed = ring([7; 32], true)
            .seal_object("k1", b"a")
            .unwrap()
            .seal_all(b"secret")
            .unwrap();
        assert_eq!(
            ring([8; 32], true)
                .open_object(&sealed, b"a")
                .unwrap()
                .err(),
            Some(SealError::Undecryptable("k1".into()))
        );
        assert!(matches!(
            ring([7; 32], false).open_object(&sealed, b"a"),
            Err(KeyringError::Disabled(_))
        ));
        assert!(matches!(
            ring([7; 32], false).seal_object("k1", b"a"),
            Err(KeyringError::Disabled(_))
        ));
        let empty = Keyring::parse("", "us-east-1", "000000000000").unwrap();
        assert!(matches!(
            empty.open_object(&sealed, b"a"),
            Err(KeyringError::NotFound(_))
        ));
        assert!(matches!(
            empty.seal_object("k1", b"a"),
            Err(KeyringError::NotFound(_))
        ));
    }
}
