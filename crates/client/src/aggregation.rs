//! The Kinesis Producer Library's aggregation format, which the official KCL
//! reads: many user records packed into one Kinesis record.
//!
//! ```text
//! 0xF3 0x89 0x9A 0xC2 | protobuf AggregatedRecord | MD5(protobuf bytes)
//! ```
//!
//! ```
//! use ripstream_client::aggregation::{Aggregator, UserRecord, deaggregate};
//!
//! let mut agg = Aggregator::new();
//! agg.add(UserRecord::new("user-1", b"hello".to_vec()));
//! agg.add(UserRecord::new("user-2", b"world".to_vec()));
//! let packed = agg.finish().unwrap();
//! let records = deaggregate(&packed.data).unwrap();
//! assert_eq!(records.len(), 2);
//! assert_eq!(records[1].partition_key, "user-2");
//! ```

use md5::{Digest, Md5};
use prost::Message;

/// The magic prefix of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;
/// Largest Kinesis record an aggregate may become (the KPL's default
/// `AggregationMaxSize` is 50 KiB; Kinesis takes up to 1 MiB).
pub const MAX_AGGREGATE_BYTES: usize = 1024 * 1024 - 256;

#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// A record as the application put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

impl UserRecord {
    pub fn new(partition_key: impl Into<String>, data: Vec<u8>) -> UserRecord {
        UserRecord {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data,
        }
    }

    /// The 128-bit hash key that routes this record to a shard.
    pub fn hash_key(&self) -> u128 {
        routing_key(&self.partition_key, self.explicit_hash_key.as_deref())
    }
}

/// The explicit hash key if it is a valid one, else MD5 of the partition key.
fn routing_key(partition_key: &str, explicit_hash_key: Option<&str>) -> u128 {
    explicit_hash_key
        .and_then(|h| h.parse::<u128>().ok())
        .unwrap_or_else(|| hash_key_of(partition_key))
}

/// MD5 of a partition key as a 128-bit big-endian number, as Kinesis routes.
pub fn hash_key_of(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// One Kinesis record holding several user records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// The outer record's partition key: `"a"`, as the KPL writes it (the
    /// explicit hash key does the routing).
    pub partition_key: String,
    /// The outer record's explicit hash key: the first user record's hash
    /// key, so the aggregate lands where that record would have.
    pub explicit_hash_key: String,
    pub data: Vec<u8>,
    /// How many user records it holds.
    pub count: usize,
}

/// Packs user records into one aggregated record.
#[derive(Debug, Default)]
pub struct Aggregator {
    inner: AggregatedRecord,
    first: Option<(String, u128)>,
    /// Encoded size so far, as an upper bound.
    size: usize,
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator::default()
    }

    pub fn len(&self) -> usize {
        self.inner.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.records.is_empty()
    }

    /// The size of the aggregate if `r` were added, partition key table included.
    pub fn size_with(&self, r: &UserRecord) -> usize {
        let key_bytes = if self.inner.partition_key_table.contains(&r.partition_key) {
            0
        } else {
            1 + varint_len(r.partition_key.len() as u64) + r.partition_key.len()
        };
        let ehk_bytes = r
            .explicit_hash_key
            .as_ref()
            .map(|h| 1 + varint_len(h.len() as u64) + h.len() + 2 + 10)
            .unwrap_or(0);
        let inner = 1 + 10 + 1 + varint_len(r.data.len() as u64) + r.data.len();
        let record = 1 + varint_len(inner as u64) + inner;
        MAGIC.len() + DIGEST_LEN + self.size + key_bytes + ehk_bytes + record
    }

    /// Adds a record.
    pub fn add(&mut self, r: UserRecord) {
        let before = self.size_with(&r) - MAGIC.len() - DIGEST_LEN;
        if self.first.is_none() {
            self.first = Some((r.partition_key.clone(), r.hash_key()));
        }
        let pk = match self
            .inner
            .partition_key_table
            .iter()
            .position(|k| *k == r.partition_key)
        {
            Some(i) => i,
            None => {
                self.inner.partition_key_table.push(r.partition_key);
                self.inner.partition_key_table.len() - 1
            }
        };
        let ehk = r.explicit_hash_key.map(|h| {
            match self
                .inner
                .explicit_hash_key_table
                .iter()
                .position(|k| *k == h)
            {
                Some(i) => i as u64,
                None => {
                    self.inner.explicit_hash_key_table.push(h);
                    (self.inner.explicit_hash_key_table.len() - 1) as u64
                }
            }
        });
        self.inner.records.push(Record {
            partition_key_index: pk as u64,
            explicit_hash_key_index: ehk,
            data: r.data,
            tags: Vec::new(),
        });
        self.size = before;
    }

    /// The aggregated record, or `None` if nothing was added. A single
    /// record is still aggregated; callers that want to send it plain can
    /// check [`Aggregator::len`] first.
    pub fn finish(self) -> Option<Aggregate> {
        let (_, hash) = self.first?;
        let partition_key = "a".to_string();
        let count = self.inner.records.len();
        let body = self.inner.encode_to_vec();
        let mut data = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
        data.extend_from_slice(&MAGIC);
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(&body));
        Some(Aggregate {
            partition_key,
            explicit_hash_key: hash.to_string(),
            data,
            count,
        })
    }
}

/// A user record read back out of a Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeaggregatedRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
    /// Position inside the aggregate (the KCL's sub-sequence number).
    pub sub_sequence_number: u64,
}

impl DeaggregatedRecord {
    /// The 128-bit hash key this record routes by.
    pub fn hash_key(&self) -> u128 {
        routing_key(&self.partition_key, self.explicit_hash_key.as_deref())
    }
}

/// Whether `data` is an aggregated record (magic, protobuf, matching MD5).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() > MAGIC.len() + DIGEST_LEN && data.starts_with(&MAGIC) && {
        let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
        Md5::digest(body).as_slice() == &data[data.len() - DIGEST_LEN..]
    }
}

/// Kinesis's partition keys are at most 256 characters, so at most this
/// many bytes of UTF-8; a longer one marks a record no KPL wrote.
const MAX_PARTITION_KEY_BYTES: usize = 1024;
/// The longest decimal 128-bit hash key.
const MAX_HASH_KEY_BYTES: usize = 39;

/// The user records inside an aggregated record, or `None` if `data` is not
/// one (no magic, bad MD5, a protobuf that does not decode, keys longer
/// than Kinesis allows, or more bytes out than a KPL aggregate of this size
/// can hold), in which case it is treated as a plain record. The last bound
/// matters because every sub-record repeats its partition key: a small
/// aggregate of empty records sharing one long key would otherwise expand
/// thousands of times in memory.
pub fn deaggregate(data: &[u8]) -> Option<Vec<DeaggregatedRecord>> {
    if !is_aggregated(data) {
        return None;
    }
    let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
    let agg = AggregatedRecord::decode(body).ok()?;
    if agg
        .partition_key_table
        .iter()
        .any(|k| k.len() > MAX_PARTITION_KEY_BYTES)
        || agg
            .explicit_hash_key_table
            .iter()
            .any(|k| k.len() > MAX_HASH_KEY_BYTES)
    {
        return None;
    }
    let budget = data.len().saturating_mul(32).max(1 << 20);
    let mut expanded = 0usize;
    for r in &agg.records {
        let key = agg
            .partition_key_table
            .get(usize::try_from(r.partition_key_index).ok()?)?;
        expanded = expanded.saturating_add(key.len() + r.data.len() + MAX_HASH_KEY_BYTES);
        if expanded > budget {
            return None;
        }
    }
    let mut out = Vec::with_capacity(agg.records.len());
    for (i, r) in agg.records.into_iter().enumerate() {
        let partition_key = agg
            .partition_key_table
            .get(usize::try_from(r.partition_key_index).ok()?)?
            .clone();
        let explicit_hash_key = match r.explicit_hash_key_index {
            Some(ix) => Some(
                agg.explicit_hash_key_table
                    .get(usize::try_from(ix).ok()?)?
                    .clone(),
            ),
            None => None,
        };
        out.push(DeaggregatedRecord {
            partition_key,
            explicit_hash_key,
            data: r.data,
            sub_sequence_number: i as u64,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        // One record, partition key "a", data "b": hand-assembled protobuf.
        let mut agg = Aggregator::new();
        agg.add(UserRecord::new("a", b"b".to_vec()));
        let out = agg.finish().unwrap();
        let body = [
            0x0A, 0x01, b'a', // partition_key_table = ["a"]
            0x1A, 0x05, // records[0], 5 bytes
            0x08, 0x00, // partition_key_index = 0
            0x1A, 0x01, b'b', // data = "b"
        ];
        assert_eq!(&out.data[..4], &MAGIC);
        assert_eq!(&out.data[4..out.data.len() - 16], &body);
        assert_eq!(
            &out.data[out.data.len() - 16..],
            Md5::digest(body).as_slice()
        );
        assert_eq!(out.partition_key, "a");
        assert_eq!(out.explicit_hash_key, hash_key_of("a").to_string());
    }

    #[test]
    fn plain_and_damaged_records_are_not_aggregates() {
        assert!(deaggregate(b"hello").is_none());
        let mut agg = Aggregator::new();
        agg.add(UserRecord::new("k", vec![1, 2, 3]));
        let mut data = agg.finish().unwrap().data;
        let last = data.len() - 1;
        data[last] ^= 1;
        assert!(deaggregate(&data).is_none());
    }

    fn framed(agg: &AggregatedRecord) -> Vec<u8> {
        let body = agg.encode_to_vec();
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(&body));
        data
    }

    #[test]
    fn aggregates_no_kpl_could_write_are_plain_records() {
        let record = |data: &[u8]| Record {
            partition_key_index: 0,
            explicit_hash_key_index: None,
            data: data.to_vec(),
            tags: Vec::new(),
        };
        // A key longer than Kinesis allows.
        let long = AggregatedRecord {
            partition_key_table: vec!["k".repeat(MAX_PARTITION_KEY_BYTES + 1)],
            explicit_hash_key_table: Vec::new(),
            records: vec![record(b"x")],
        };
        assert!(deaggregate(&framed(&long)).is_none());
        // Many empty records sharing one long key: gigabytes out of a few
        // hundred kilobytes in.
        let wide = AggregatedRecord {
            partition_key_table: vec!["k".repeat(MAX_PARTITION_KEY_BYTES)],
            explicit_hash_key_table: Vec::new(),
            records: (0..100_000).map(|_| record(b"")).collect(),
        };
        assert!(deaggregate(&framed(&wide)).is_none());
        // The same records under a short key are what a KPL writes.
        let short = AggregatedRecord {
            partition_key_table: vec!["k".into()],
            ..wide
        };
        assert_eq!(deaggregate(&framed(&short)).map(|v| v.len()), Some(100_000));
    }

    proptest! {
        #[test]
        fn round_trips(records in proptest::collection::vec(
            ("[a-z]{1,8}", proptest::option::of(any::<u128>()), proptest::collection::vec(any::<u8>(), 0..64)),
            1..40,
        )) {
            let mut agg = Aggregator::new();
            let mut predicted = 0;
            let input: Vec<UserRecord> = records.into_iter().map(|(k, h, d)| UserRecord {
                partition_key: k,
                explicit_hash_key: h.map(|h| h.to_string()),
                data: d,
            }).collect();
            for r in &input {
                predicted = agg.size_with(r);
                agg.add(r.clone());
            }
            let out = agg.finish().unwrap();
            prop_assert!(out.data.len() <= predicted, "{} > {}", out.data.len(), predicted);
            prop_assert_eq!(out.count, input.len());
            let back = deaggregate(&out.data).unwrap();
            prop_assert_eq!(back.len(), input.len());
            for (i, (a, b)) in input.iter().zip(&back).enumerate() {
                prop_assert_eq!(&a.partition_key, &b.partition_key);
                prop_assert_eq!(&a.explicit_hash_key, &b.explicit_hash_key);
                prop_assert_eq!(&a.data, &b.data);
                prop_assert_eq!(b.sub_sequence_number, i as u64);
                prop_assert_eq!(a.hash_key(), b.hash_key());
            }
        }
    }
}
