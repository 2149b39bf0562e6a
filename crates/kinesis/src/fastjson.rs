//! A hand-written JSON encoder for the GetRecords response, the hottest
//! response there is: record data goes from bytes to base64 straight into the
//! output buffer, instead of through a `String` that serde_json then scans for
//! characters to escape (base64 has none). Everything else is written by
//! serde_json itself, so the output is the same JSON as the derived encoding.

use crate::types::GetRecordsOutput;
use base64_simd::{AsOut, STANDARD as SIMD};

fn json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), String> {
    serde_json::to_writer(buf, v).map_err(|e| e.to_string())
}

/// The JSON body of a GetRecords response.
pub(crate) fn get_records(out: &GetRecordsOutput) -> Result<Vec<u8>, String> {
    let data: usize = out.records.iter().map(|r| r.data.0.len()).sum();
    let mut buf = Vec::with_capacity(data / 3 * 4 + out.records.len() * 160 + 256);
    buf.extend_from_slice(b"{\"Records\":[");
    for (i, r) in out.records.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"SequenceNumber\":");
        json(&mut buf, &r.sequence_number)?;
        buf.extend_from_slice(b",\"ApproximateArrivalTimestamp\":");
        json(&mut buf, &r.approximate_arrival_timestamp)?;
        buf.extend_from_slice(b",\"Data\":\"");
        let start = buf.len();
        buf.resize(start + SIMD.encoded_length(r.data.0.len()), 0);
        let written = SIMD.encode(&r.data.0, buf[start..].as_out()).len();
        buf.truncate(start + written);
        buf.push(b'"');
        if let Some(k) = &r.partition_key {
            buf.extend_from_slice(b",\"PartitionKey\":");
            json(&mut buf, k)?;
        }
        if let Some(e) = &r.encryption_type {
            buf.extend_from_slice(b",\"EncryptionType\":");
            json(&mut buf, e)?;
        }
        buf.push(b'}');
    }
    buf.push(b']');
    if let Some(it) = &out.next_shard_iterator {
        buf.extend_from_slice(b",\"NextShardIterator\":");
        json(&mut buf, it)?;
    }
    buf.extend_from_slice(b",\"MillisBehindLatest\":");
    json(&mut buf, &out.millis_behind_latest)?;
    if let Some(children) = &out.child_shards {
        buf.extend_from_slice(b",\"ChildShards\":");
        json(&mut buf, children)?;
    }
    buf.push(b'}');
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Blob, ChildShard, HashKeyRange, Record, Timestamp};
    use bytes::Bytes;

    #[test]
    fn matches_the_derived_encoding() {
        let record = |data: &[u8], key: Option<&str>, ms: i64, enc: Option<&str>| Record {
            sequence_number: "49590338271490256608559692538361571095921575989136588898".into(),
            approximate_arrival_timestamp: Timestamp(ms),
            data: Blob(Bytes::copy_from_slice(data)),
            partition_key: key.map(String::from),
            encryption_type: enc.map(String::from),
        };
        let outs = [
            GetRecordsOutput {
                records: vec![
                    record(b"", Some("k"), 1_700_000_000_123, None),
                    record(
                        &[0, 255, 7, 8, 9],
                        Some("\"quoted\"\\\n\u{1}é"),
                        1_700_000_000_000,
                        Some("KMS"),
                    ),
                    record(&[1; 1000], None, 5, None),
                ],
                next_shard_iterator: Some("AAAA/+==".into()),
                millis_behind_latest: 42,
                child_shards: None,
            },
            GetRecordsOutput {
                records: Vec::new(),
                next_shard_iterator: None,
                millis_behind_latest: 0,
                child_shards: Some(vec![ChildShard {
                    shard_id: "shardId-000000000002".into(),
                    parent_shards: vec!["shardId-000000000000".into()],
                    hash_key_range: HashKeyRange {
                        starting_hash_key: "0".into(),
                        ending_hash_key: "170141183460469231731687303715884105727".into(),
                    },
                }]),
            },
        ];
        for out in &outs {
            let fast: serde_json::Value =
                serde_json::from_slice(&get_records(out).unwrap()).unwrap();
            assert_eq!(fast, serde_json::to_value(out).unwrap());
        }
    }
}
