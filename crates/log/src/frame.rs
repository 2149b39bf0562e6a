//! The on-disk batch frame.
//!
//! ```text
//! offset  size  field
//!      0     4  frame_len     u32 LE, the whole frame including this header
//!      4     4  crc32c        u32 LE, CRC-32C of bytes [8, frame_len)
//!      8     8  base_offset   u64 LE, offset of the first record
//!     16     8  timestamp_ms  i64 LE, append time shared by every record of the batch
//!     24     8  epoch         u64 LE, leader epoch of the writer that appended it
//!     32     4  record_count  u32 LE, at least 1
//!     36     2  flags         u16 LE, reserved for compression and encryption
//!     38     2  reserved      u16, zero
//!     40     …  records       per record: varint key length, key, varint value length, value
//! ```
//!
//! Every field a reader trusts is covered by the CRC, so a torn or flipped
//! byte anywhere in a frame is detected before a record leaves the log.

use bytes::Bytes;

use crate::LogError;

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 40;
/// Upper bound on a frame: larger values in a header are treated as corruption.
pub const MAX_FRAME_LEN: usize = 256 * 1024 * 1024;

/// The decoded fixed header of a batch frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub frame_len: u32,
    pub crc: u32,
    pub base_offset: u64,
    pub timestamp_ms: i64,
    pub epoch: u64,
    pub record_count: u32,
    pub flags: u16,
}

impl BatchHeader {
    /// Offset one past the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Parses a header without checking the CRC; `None` if the fields are not plausible.
    pub fn parse(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let header = BatchHeader {
            frame_len: u32_at(0),
            crc: u32_at(4),
            base_offset: u64_at(8),
            timestamp_ms: u64_at(16) as i64,
            epoch: u64_at(24),
            record_count: u32_at(32),
            flags: u16::from_le_bytes([buf[36], buf[37]]),
        };
        let len = header.frame_len as usize;
        if !(HEADER_LEN..=MAX_FRAME_LEN).contains(&len) || header.record_count == 0 {
            return None;
        }
        Some(header)
    }

    /// Checks the CRC of a complete frame.
    pub fn crc_matches(&self, frame: &[u8]) -> bool {
        frame.len() == self.frame_len as usize && crc32c::crc32c(&frame[8..]) == self.crc
    }
}

/// A batch of records encoded by the caller, waiting for the writer to give it
/// offsets, a timestamp and a checksum. The header space is reserved up front
/// so the writer fills it in place and writes one contiguous buffer.
#[derive(Debug)]
pub struct PendingBatch {
    pub(crate) buf: Vec<u8>,
    pub(crate) record_count: u32,
    pub(crate) flags: u16,
}

/// Frame flag: the records section is ciphertext, opened by the log's [`BatchCipher`].
pub const FLAG_ENCRYPTED: u16 = 1;

/// Why a batch could not be encrypted or decrypted. The variants follow the
/// KMS failure modes that clients know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    #[error("key {0} not found")]
    KeyNotFound(String),
    #[error("key {0} is disabled")]
    KeyDisabled(String),
    #[error("the data could not be decrypted with key {0}")]
    Undecryptable(String),
    #[error("malformed encrypted batch: {0}")]
    Malformed(String),
}

/// Encrypts and decrypts batches. The ciphertext carries whatever the cipher
/// needs to open it again (key id, wrapped data key, nonce); the log only
/// stores it.
pub trait BatchCipher: Send + Sync + std::fmt::Debug {
    fn seal(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, CipherError>;
    fn open(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CipherError>;
}

impl PendingBatch {
    /// Number of records in the batch.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Size of the frame on disk.
    pub fn frame_len(&self) -> usize {
        self.buf.len()
    }

    /// Replaces the records with their ciphertext under `key_id`.
    pub fn encrypt(
        mut self,
        cipher: &dyn BatchCipher,
        key_id: &str,
    ) -> Result<PendingBatch, CipherError> {
        let sealed = cipher.seal(key_id, &self.buf[HEADER_LEN..])?;
        self.buf.truncate(HEADER_LEN);
        self.buf.extend_from_slice(&sealed);
        self.flags |= FLAG_ENCRYPTED;
        Ok(self)
    }

    /// Fills the header and returns the frame ready to write.
    pub(crate) fn seal(&mut self, base_offset: u64, timestamp_ms: i64, epoch: u64) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[8..16].copy_from_slice(&base_offset.to_le_bytes());
        self.buf[16..24].copy_from_slice(&timestamp_ms.to_le_bytes());
        self.buf[24..32].copy_from_slice(&epoch.to_le_bytes());
        self.buf[32..36].copy_from_slice(&self.record_count.to_le_bytes());
        self.buf[36..38].copy_from_slice(&self.flags.to_le_bytes());
        self.buf[38..40].fill(0);
        let crc = crc32c::crc32c(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// Builds a [`PendingBatch`] record by record.
///
/// ```
/// let mut batch = ripstream_log::BatchBuilder::with_capacity(64);
/// batch.push(b"key", b"value");
/// let batch = batch.finish().expect("one record");
/// assert_eq!(batch.record_count(), 1);
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    record_count: u32,
}

impl BatchBuilder {
    /// A builder whose buffer holds `payload_bytes` of keys and values without growing.
    pub fn with_capacity(payload_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + payload_bytes + 16);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            record_count: 0,
        }
    }

    /// Appends one record.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        put_varint(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(value);
        self.record_count += 1;
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.record_count
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// The finished batch, or `None` when it holds no record or exceeds the frame limit.
    pub fn finish(self) -> Option<PendingBatch> {
        if self.record_count == 0 || self.buf.len() > MAX_FRAME_LEN {
            return None;
        }
        Some(PendingBatch {
            buf: self.buf,
            record_count: self.record_count,
            flags: 0,
        })
    }
}

/// Encoded size of one record inside a frame.
pub fn record_encoded_len(key_len: usize, value_len: usize) -> usize {
    varint_len(key_len as u64) + key_len + varint_len(value_len as u64) + value_len
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Splits the records out of a verified frame, sharing the frame's memory.
pub fn decode_records(
    header: &BatchHeader,
    frame: &Bytes,
) -> Result<Vec<(Bytes, Bytes)>, LogError> {
    let mut out = Vec::with_capacity(header.record_count as usize);
    let mut pos = HEADER_LEN;
    let corrupt = || {
        LogError::Corrupt(format!(
            "malformed records in batch at offset {}",
            header.base_offset
        ))
    };
    for _ in 0..header.record_count {
        let klen = get_varint(frame, &mut pos).ok_or_else(corrupt)? as usize;
        let kend = pos
            .checked_add(klen)
            .filter(|e| *e <= frame.len())
            .ok_or_else(corrupt)?;
        let key = frame.slice(pos..kend);
        pos = kend;
        let vlen = get_varint(frame, &mut pos).ok_or_else(corrupt)? as usize;
        let vend = pos
            .checked_add(vlen)
            .filter(|e| *e <= frame.len())
            .ok_or_else(corrupt)?;
        let value = frame.slice(pos..vend);
        pos = vend;
        out.push((key, value));
    }
    if pos != frame.len() {
        return Err(corrupt());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip_and_crc() {
        let mut b = BatchBuilder::with_capacity(16);
        b.push(b"k", b"v1");
        b.push(b"", b"");
        let mut batch = b.finish().unwrap();
        let frame = Bytes::copy_from_slice(batch.seal(7, 1_700_000_000_123, 3));
        let h = BatchHeader::parse(&frame).unwrap();
        assert_eq!(
            (h.base_offset, h.timestamp_ms, h.epoch, h.record_count),
            (7, 1_700_000_000_123, 3, 2)
        );
        assert!(h.crc_matches(&frame));
        let recs = decode_records(&h, &frame).unwrap();
        assert_eq!(
            recs[0],
            (Bytes::from_static(b"k"), Bytes::from_static(b"v1"))
        );
        assert_eq!(recs[1], (Bytes::new(), Bytes::new()));
    }

    #[test]
    fn empty_batch_is_refused() {
        assert!(BatchBuilder::with_capacity(0).finish().is_none());
    }

    proptest! {
        #[test]
        fn any_flipped_byte_is_detected(records in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..200)), 1..10), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut b = BatchBuilder::with_capacity(0);
            for (k, v) in &records { b.push(k, v); }
            let mut batch = b.finish().unwrap();
            let mut frame = batch.seal(0, 1, 1).to_vec();
            let i = flip.index(frame.len());
            frame[i] ^= 1 << bit;
            let ok = BatchHeader::parse(&frame).map(|h| h.crc_matches(&frame)).unwrap_or(false);
            prop_assert!(!ok);
        }

        #[test]
        fn records_round_trip(records in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..300), proptest::collection::vec(any::<u8>(), 0..300)), 1..20)) {
            let mut b = BatchBuilder::with_capacity(0);
            for (k, v) in &records { b.push(k, v); }
            let mut batch = b.finish().unwrap();
            let frame = Bytes::copy_from_slice(batch.seal(0, 1, 1));
            let h = BatchHeader::parse(&frame).unwrap();
            let got = decode_records(&h, &frame).unwrap();
            prop_assert_eq!(got.len(), records.len());
            for ((k, v), (gk, gv)) in records.iter().zip(got.iter()) {
                prop_assert_eq!(&k[..], &gk[..]);
                prop_assert_eq!(&v[..], &gv[..]);
            }
        }
    }
}
