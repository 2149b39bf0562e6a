//! Hash keys: MD5 routing and the even division of the 128-bit key space.

use md5::{Digest, Md5};

/// The hash key of a partition key: its MD5 read as a big-endian 128-bit integer.
///
/// ```
/// // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
/// assert_eq!(ripstream_kinesis::hash::hash_key("a"), 0x0cc175b9c0f1b6a831c399e269772661);
/// ```
pub fn hash_key(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest);
    u128::from_be_bytes(b)
}

/// Parses an explicit hash key: a decimal in `0..=2^128-1`.
pub fn parse_hash_key(s: &str) -> Option<u128> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse::<u128>().ok()
}

/// The ranges AWS gives the `n` shards of a new stream: with `w = floor(2^128 / n)`,
/// shard `i` covers `[i*w, (i+1)*w - 1]` and the last shard ends at `2^128 - 1`.
pub fn even_ranges(n: u32) -> Vec<(u128, u128)> {
    let n128 = u128::from(n.max(1));
    if n128 == 1 {
        return vec![(0, u128::MAX)];
    }
    // floor(2^128 / n) without overflow: floor((2^128 - 1) / n), plus one when n divides 2^128.
    let w = u128::MAX / n128 + u128::from(u128::MAX % n128 == n128 - 1);
    (0..n128)
        .map(|i| {
            let start = i * w;
            let end = if i == n128 - 1 {
                u128::MAX
            } else {
                (i + 1) * w - 1
            };
            (start, end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_aws_values() {
        let two = even_ranges(2);
        assert_eq!(two[0].1, 170141183460469231731687303715884105727);
        assert_eq!(two[1].0, 170141183460469231731687303715884105728);
        let three = even_ranges(3);
        assert_eq!(three[0].1, 113427455640312821154458202477256070484);
        assert_eq!(three[1].0, 113427455640312821154458202477256070485);
        assert_eq!(three[2].1, u128::MAX);
        assert_eq!(even_ranges(1), vec![(0, u128::MAX)]);
    }

    #[test]
    fn explicit_hash_keys() {
        assert_eq!(parse_hash_key("0"), Some(0));
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211455"),
            Some(u128::MAX)
        );
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211456"),
            None
        );
        assert_eq!(parse_hash_key("01"), None);
        assert_eq!(parse_hash_key("-1"), None);
        assert_eq!(parse_hash_key(""), None);
    }

    proptest! {
        #[test]
        fn even_ranges_tile_the_key_space(n in 1u32..2000) {
            let r = even_ranges(n);
            prop_assert_eq!(r.len(), n as usize);
            prop_assert_eq!(r[0].0, 0);
            prop_assert_eq!(r[r.len() - 1].1, u128::MAX);
            for w in r.windows(2) {
                prop_assert!(w[0].0 <= w[0].1);
                prop_assert_eq!(w[0].1 + 1, w[1].0);
            }
            // Every shard but the last has the same width.
            let width = r[0].1 - r[0].0;
            for x in &r[..r.len() - 1] {
                prop_assert_eq!(x.1 - x.0, width);
            }
        }

        #[test]
        fn every_key_routes_to_exactly_one_shard(n in 1u32..64, key in any::<u128>()) {
            let r = even_ranges(n);
            let hits = r.iter().filter(|(s, e)| *s <= key && key <= *e).count();
            prop_assert_eq!(hits, 1);
        }
    }
}
