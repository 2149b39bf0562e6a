//! How much an Avro object container file (a manifest list, a manifest)
//! inflates to, measured before it is parsed.
//!
//! The `apache-avro` crate inflates each block whole, with no limit, so a
//! table file of a few megabytes of compressed zeros (anyone who can write
//! the table's bucket can make one) would take the whole process down with
//! it. Walking the container's blocks and streaming each through its
//! decoder into nothing costs no memory and refuses such a file first.
//! Only the framing is read here (Avro's object container spec); the
//! records are left to `apache-avro`.

use std::collections::HashMap;
use std::io::Read;

const MAGIC: &[u8; 4] = b"Obj\x01";
const SYNC_LEN: usize = 16;

/// Whether `bytes` start as an Avro object container file does.
pub(crate) fn is_container(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The bytes the container's blocks inflate to, if at most `max`.
pub(crate) fn inflated_len(bytes: &[u8], max: u64) -> Result<u64, String> {
    let mut r = Cursor { bytes, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not an Avro object container file".into());
    }
    let mut codec = b"null".to_vec();
    let mut schema = None;
    // The metadata map: blocks of entries up to an empty one.
    loop {
        let count = r.long()?;
        if count == 0 {
            break;
        }
        if count < 0 {
            r.long()?; // the block's size in bytes
        }
        for _ in 0..count.unsigned_abs() {
            let key = r.bytes()?;
            let value = r.bytes()?;
            if key == b"avro.codec" {
                codec = value.to_vec();
            }
            if key == b"avro.schema" {
                schema = Some(value);
            }
        }
    }
    // The records are decoded with the file's own (writer) schema: an
    // array of items that take no bytes would make any number of values
    // out of a few bytes.
    let schema: serde_json::Value = serde_json::from_slice(schema.ok_or("it has no schema")?)
        .map_err(|e| format!("its schema is not JSON: {e}"))?;
    min_len(&schema, &mut HashMap::new())?;
    let sync = r.take(SYNC_LEN)?;
    let mut total: u64 = 0;
    while r.at < bytes.len() {
        if r.long()? < 0 {
            return Err("a block with a negative object count".into());
        }
        let size = usize::try_from(r.long()?).map_err(|_| "a block of negative size")?;
        let data = r.take(size)?;
        if r.take(SYNC_LEN)? != sync {
            return Err("a block not followed by the file's sync marker".into());
        }
        let room = max.saturating_sub(total);
        total = total.saturating_add(block_len(&codec, data, room)?);
        if total > max {
            return Err(format!("its blocks inflate to more than {max} bytes"));
        }
    }
    Ok(total)
}

/// The fewest bytes a value of `schema` is encoded in; `Err` for a schema
/// with an array whose items can take none. `named`: the sizes of the
/// named types defined so far (a reference to one still being defined,
/// which only a union or an array can hold, counts as one byte).
fn min_len(schema: &serde_json::Value, named: &mut HashMap<String, u64>) -> Result<u64, String> {
    use serde_json::Value;
    Ok(match schema {
        Value::String(t) => match t.as_str() {
            "null" => 0,
            "boolean" | "int" | "long" | "bytes" | "string" => 1,
            "float" => 4,
            "double" => 8,
            other => named.get(other).copied().unwrap_or(1),
        },
        // A union: the branch's index, then the branch.
        Value::Array(branches) => {
            let mut least = u64::MAX;
            for b in branches {
                least = least.min(min_len(b, named)?);
            }
            1u64.saturating_add(if branches.is_empty() { 0 } else { least })
        }
        Value::Object(o) => {
            let name = o.get("name").and_then(Value::as_str).map(str::to_string);
            let full = match (&name, o.get("namespace").and_then(Value::as_str)) {
                (Some(n), Some(ns)) if !n.contains('.') => Some(format!("{ns}.{n}")),
                _ => None,
            };
            let len = match o.get("type") {
                Some(Value::String(t)) if t == "record" || t == "error" => {
                    let mut sum: u64 = 0;
                    for f in o
                        .get("fields")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let ty = f.get("type").ok_or("a record field without a type")?;
                        sum = sum.saturating_add(min_len(ty, named)?);
                    }
                    sum
                }
                Some(Value::String(t)) if t == "enum" => 1,
                Some(Value::String(t)) if t == "fixed" => o
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or("a fixed type without a size")?,
                Some(Value::String(t)) if t == "array" => {
                    let items = o.get("items").ok_or("an array without items")?;
                    if min_len(items, named)? == 0 {
                        return Err("its schema has an array of items that take no bytes".into());
                    }
                    1
                }
                // Each entry's key takes a byte at least.
                Some(Value::String(t)) if t == "map" => {
                    min_len(o.get("values").ok_or("a map without values")?, named)?;
                    1
                }
                Some(t) => min_len(t, named)?,
                None => return Err("a schema object without a type".into()),
            };
            for n in [name, full].into_iter().flatten() {
                named.insert(n, len);
            }
            len
        }
        _ => return Err("a schema that is neither a name, a union nor an object".into()),
    })
}

/// What one block inflates to, counted up to one byte past `room`.
fn block_len(codec: &[u8], data: &[u8], room: u64) -> Result<u64, String> {
    let count = |reader: &mut dyn Read| -> Result<u64, String> {
        std::io::copy(
            &mut reader.take(room.saturating_add(1)),
            &mut std::io::sink(),
        )
        .map_err(|e| format!("a block does not inflate: {e}"))
    };
    match codec {
        b"null" => Ok(data.len() as u64),
        b"deflate" => count(&mut flate2::read::DeflateDecoder::new(data)),
        // The block's snappy data, then its CRC-32.
        b"snappy" => {
            let body = data
                .len()
                .checked_sub(4)
                .and_then(|n| data.get(..n))
                .ok_or("a snappy block shorter than its checksum")?;
            snap::raw::decompress_len(body)
                .map(|n| n as u64)
                .map_err(|e| format!("a snappy block: {e}"))
        }
        b"zstandard" => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| format!("a zstandard block: {e}"))?;
            count(&mut d)
        }
        other => Err(format!(
            "its codec {} is not one this server reads (null, deflate, snappy, zstandard)",
            String::from_utf8_lossy(other)
        )),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or("the file ends inside a block")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// Avro's `long`: a zig-zag varint of at most ten bytes.
    fn long(&mut self) -> Result<i64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self
                .take(1)?
                .first()
                .ok_or("the file ends inside a number")?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err("a number longer than ten bytes".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.long()?).map_err(|_| "a string of negative length")?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn long(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn container(codec: &str, blocks: &[Vec<u8>]) -> Vec<u8> {
        container_of(
            r#"{"type": "record", "name": "r", "fields": [{"name": "a", "type": "long"}]}"#,
            codec,
            blocks,
        )
    }

    fn container_of(schema: &str, codec: &str, blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend(long(2));
        for s in ["avro.codec", codec, "avro.schema", schema] {
            f.extend(long(s.len() as i64));
            f.extend(s.as_bytes());
        }
        f.extend(long(0));
        let sync = [7u8; SYNC_LEN];
        f.extend(sync);
        for b in blocks {
            f.extend(long(1));
            f.extend(long(b.len() as i64));
            f.extend(b);
            f.extend(sync);
        }
        f
    }

    fn deflated(n: usize) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; n]).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_bomb_is_refused_before_it_inflates() {
        // 64 MiB of zeros deflate to about 64 KiB.
        let bomb = container("deflate", &[deflated(64 << 20)]);
        assert!(bomb.len() < 1 << 20);
        let e = inflated_len(&bomb, 1 << 20).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        assert_eq!(inflated_len(&bomb, 64 << 20).unwrap(), 64 << 20);
    }

    #[test]
    fn each_codec_is_measured() {
        let plain = container("null", &[vec![1; 10], vec![2; 5]]);
        assert_eq!(inflated_len(&plain, 100).unwrap(), 15);
        let mut snappy = snap::raw::Encoder::new().compress_vec(&[0; 1000]).unwrap();
        snappy.extend([0; 4]);
        assert_eq!(
            inflated_len(&container("snappy", &[snappy]), 5000).unwrap(),
            1000
        );
        let z = zstd::stream::encode_all(&vec![0u8; 3000][..], 3).unwrap();
        assert_eq!(
            inflated_len(&container("zstandard", &[z]), 2999).unwrap_err(),
            "its blocks inflate to more than 2999 bytes"
        );
        assert!(
            inflated_len(&container("xz", &[vec![1]]), 100)
                .unwrap_err()
                .contains("codec xz")
        );
    }

    #[test]
    fn a_schema_making_values_of_no_bytes_is_refused() {
        let refused = [
            r#"{"type": "array", "items": "null"}"#,
            r#"{"type": "record", "name": "r", "fields": [{"name": "a", "type": {"type": "array", "items": {"type": "record", "name": "e", "fields": [{"name": "n", "type": "null"}]}}}]}"#,
            r#"{"type": "record", "name": "r", "fields": [{"name": "z", "type": {"type": "fixed", "name": "z0", "size": 0}}, {"name": "a", "type": {"type": "array", "items": "z0"}}]}"#,
        ];
        for schema in refused {
            let f = container_of(schema, "null", &[vec![1]]);
            let e = inflated_len(&f, 100).unwrap_err();
            assert!(e.contains("take no bytes"), "{schema}: {e}");
        }
        // What Iceberg's manifests hold: unions with null, maps, arrays of
        // records and longs.
        let manifest = r#"{"type": "record", "name": "manifest_entry", "fields": [
            {"name": "status", "type": "int"},
            {"name": "data_file", "type": {"type": "record", "name": "r2", "fields": [
                {"name": "column_sizes", "type": ["null", {"type": "array", "items": {"type": "record", "name": "k117_v118", "fields": [{"name": "key", "type": "int"}, {"name": "value", "type": "long"}]}}]},
                {"name": "split_offsets", "type": ["null", {"type": "array", "items": "long"}]},
                {"name": "partition", "type": {"type": "record", "name": "r102", "fields": []}},
                {"name": "props", "type": {"type": "map", "values": "null"}}]}}]}"#;
        assert!(inflated_len(&container_of(manifest, "null", &[vec![1]]), 100).is_ok());
        let f = container_of("not json", "null", &[]);
        assert!(inflated_len(&f, 100).unwrap_err().contains("not JSON"));
    }

    #[test]
    fn broken_framing_is_refused_not_panicked_on() {
        let good = container("null", &[vec![1; 10]]);
        for cut in 0..good.len() {
            let _ = inflated_len(&good[..cut], 100);
        }
        let mut bad_sync = good.clone();
        let n = bad_sync.len();
        bad_sync[n - 1] ^= 1;
        assert!(inflated_len(&bad_sync, 100).unwrap_err().contains("sync"));
        let mut huge = MAGIC.to_vec();
        huge.extend([0xff; 11]);
        assert!(inflated_len(&huge, 100).is_err());
    }
}
