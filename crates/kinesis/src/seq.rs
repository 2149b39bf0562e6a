//! Sequence numbers.
//!
//! Shards issue numbers in AWS's layout (version 2): a 188-bit integer sent as
//! a 56-digit decimal, whose 47 hexadecimal digits are
//!
//! ```text
//! bits (from the top)  hex digits  field
//!   4                  0           2 (the layout's first mark)
//!  36                  1..10       shard creation time, seconds (see `ShardRecord::seq_created_s`)
//!   4                  10          shard index, low 4 bits
//!  64                  11..27      counter: leader epoch (20 bits) | log offset (43 bits), top bit 0
//!   8                  27..29      0 (AWS's numbers show `00` here)
//!  36                  29..38      the record's arrival time, seconds
//!  32                  38..46      shard index (a non-negative signed 32-bit integer)
//!   4                  46          2 (the version)
//! ```
//!
//! Within a shard only the counter varies above the arrival time, so numbers
//! order by (epoch, offset): along a shard's log the epoch never decreases and
//! the offset grows, so numbers increase strictly, and a restart (a new epoch)
//! numbers every record above all numbers handed out before it, even ones of an
//! unsynced tail that was lost. The counter is the offset read directly, so a
//! number maps to a log offset without a lookup. A child shard's creation
//! second is above its parents', so its numbers are above theirs.
//!
//! Shards created before this layout keep their legacy one (56 digits,
//! `4 | shard creation ms (13) | shard index (12) | epoch (10) | offset (20)`):
//! the catalog tells them apart (`seq_created_s` is `None`), and every legacy
//! number is below 2^185, every AWS-layout number above it.
//!
//! Numbers a client sends are judged as AWS judges them (see [`decode`]).

use ripstream_meta::ShardRecord;

/// The largest leader epoch an AWS-layout number carries.
pub const MAX_EPOCH: u64 = (1 << 20) - 1;
/// The largest log offset an AWS-layout number carries. The counter's all-ones
/// value stays unissued: it is the shards' `EndingSequenceNumber`.
pub const MAX_OFFSET: u64 = (1 << 43) - 2;
const OFFSET_BITS: u32 = 43;
/// The counter's all-ones value (63 bits: its top bit stays clear, as AWS requires).
const COUNTER_ONES: u128 = (1 << 63) - 1;
const MAX_36: u64 = (1 << 36) - 1;

/// The legacy layout's limits.
const LEGACY_MAX_CREATED: u64 = 9_999_999_999_999;
const LEGACY_MAX_EPOCH: u64 = 9_999_999_999;
/// 2^185 in decimal: legacy numbers are below it, AWS's version 1 and 2 above.
const POW_2_185: &str = "49039857307708443467467104868809893875799651909875269632";
/// AWS refuses version-0 and version-2 numbers whose creation second is this or later.
const V0_MAX_CREATED_S: u64 = 16_025_175_000;

/// What a shard's numbers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSeq {
    pub index: u32,
    pub layout: Layout,
}

/// A shard's layout and the creation time it encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// AWS's version 2, with this creation second.
    Aws { created_s: u64 },
    /// Ripstream's first layout, with the shard's creation time in ms.
    Legacy { created_ms: u64 },
}

impl ShardSeq {
    pub fn of(shard: &ShardRecord) -> ShardSeq {
        ShardSeq {
            index: shard.index,
            layout: match shard.seq_created_s {
                Some(created_s) => Layout::Aws { created_s },
                None => Layout::Legacy {
                    created_ms: shard.created_ms.max(0) as u64,
                },
            },
        }
    }

    /// Whether a record at `offset` appended in `epoch` can be numbered.
    pub fn can_number(&self, epoch: u64, offset: u64) -> bool {
        match self.layout {
            Layout::Aws { .. } => epoch <= MAX_EPOCH && offset <= MAX_OFFSET,
            Layout::Legacy { .. } => true,
        }
    }

    /// The number of the record at `offset`, appended in `epoch` at `arrival_ms`.
    /// Out-of-range fields saturate; appends check [`ShardSeq::can_number`] first.
    pub fn record(&self, epoch: u64, offset: u64, arrival_ms: i64) -> String {
        match self.layout {
            Layout::Aws { created_s } => {
                let counter = (u128::from(epoch.min(MAX_EPOCH)) << OFFSET_BITS)
                    | u128::from(offset.min(MAX_OFFSET));
                aws_v2(created_s, self.index, counter, secs(arrival_ms))
            }
            Layout::Legacy { created_ms } => legacy(created_ms, self.index, epoch, offset),
        }
    }

    /// The `StartingSequenceNumber`: at or below every number of the shard.
    pub fn start(&self) -> String {
        match self.layout {
            Layout::Aws { created_s } => aws_v2(created_s, self.index, 0, created_s),
            Layout::Legacy { created_ms } => legacy(created_ms, self.index, 0, 0),
        }
    }

    /// The `EndingSequenceNumber` of a shard that closed at `closed_ms` after
    /// holding records: as AWS does, an upper bound above any number it
    /// issued, not the last record's number.
    pub fn end(&self, closed_ms: i64) -> String {
        match self.layout {
            Layout::Aws { created_s } => {
                aws_v2(created_s, self.index, COUNTER_ONES, secs(closed_ms))
            }
            Layout::Legacy { created_ms } => legacy(created_ms, self.index, u64::MAX, u64::MAX),
        }
    }
}

fn secs(ms: i64) -> u64 {
    (ms.max(0) as u64 / 1000).min(MAX_36)
}

fn aws_v2(created_s: u64, index: u32, counter: u128, arrival_s: u64) -> String {
    let index = u128::from(index & 0x7fff_ffff);
    let mut n = U256::default();
    n.set(0, 4, 2);
    n.set(4, 32, index);
    n.set(36, 36, u128::from(arrival_s.min(MAX_36)));
    n.set(80, 64, counter & COUNTER_ONES);
    n.set(144, 4, index & 0xf);
    n.set(148, 36, u128::from(created_s.min(MAX_36)));
    n.set(184, 4, 2);
    n.to_decimal()
}

fn legacy(created_ms: u64, index: u32, epoch: u64, offset: u64) -> String {
    format!(
        "4{:013}{:012}{:010}{:020}",
        created_ms.min(LEGACY_MAX_CREATED),
        index,
        epoch.min(LEGACY_MAX_EPOCH),
        offset
    )
}

/// A number a client sent, as far as it can be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// AWS's layouts: version 2 (today's), 1, or 0 (numbers below 2^129).
    Aws {
        version: u8,
        created_s: u64,
        /// Signed, as AWS reads it: a set top bit encodes a negative index.
        shard_index: i64,
        /// Version 2's counter (64 bits, hex digits 11..27).
        counter: Option<u128>,
        /// Versions 1 and 2 carry the record's arrival second.
        arrival_s: Option<u64>,
    },
    /// Ripstream's legacy layout.
    Legacy {
        created_ms: u64,
        shard_index: u32,
        epoch: u64,
        offset: u64,
    },
}

/// Decodes a sequence number as AWS does; `None` for a number AWS calls
/// invalid (and that is no legacy number of this server).
///
/// AWS reads the number's hexadecimal digits: a number below 2^124 first gets
/// 2^124 added; then below 2^129 it is version 0 (creation second in digits
/// 1..10, which must be below 16025175000, shard index in digits 28..32);
/// strictly between 2^185 and 1.5 × 2^185 its last digit is the version, 2 or
/// 1 (version 2's counter must have its top bit clear); anything else is invalid.
pub fn decode(s: &str) -> Option<Decoded> {
    if let Some(l) = decode_legacy(s) {
        return Some(l);
    }
    let mut n = U256::from_decimal(s)?;
    if n.bits() <= 124 {
        n.set(124, 1, 1);
    }
    let bits = n.bits();
    let len = bits.div_ceil(4) as usize;
    if bits <= 129 {
        let created_s = n.hex(len, 1, 10) as u64;
        if created_s >= V0_MAX_CREATED_S {
            return None;
        }
        return Some(Decoded::Aws {
            version: 0,
            created_s,
            shard_index: n.hex(len, 28, 32) as i64,
            counter: None,
            arrival_s: None,
        });
    }
    // Strictly above 2^185 and below 3 × 2^184: 47 digits, the first a 2, not
    // all the others zero.
    if len != 47 || n.hex(len, 0, 1) != 2 || n.is_zero_below(185) {
        return None;
    }
    let signed = |v: u128| i64::from(v as u32 as i32);
    match n.hex(len, 46, 47) {
        2 => {
            // Digits 27..29 (zero in AWS's numbers) are not read, as AWS
            // does not judge them.
            let counter = n.hex(len, 11, 27);
            let created_s = n.hex(len, 1, 10) as u64;
            // AWS refuses these creation seconds in version 2 as in version 0.
            if counter >> 63 != 0 || created_s >= V0_MAX_CREATED_S {
                return None;
            }
            Some(Decoded::Aws {
                version: 2,
                created_s,
                shard_index: signed(n.hex(len, 38, 46)),
                counter: Some(counter),
                arrival_s: Some(n.hex(len, 29, 38) as u64),
            })
        }
        1 => Some(Decoded::Aws {
            version: 1,
            created_s: n.hex(len, 1, 10) as u64,
            shard_index: signed(n.hex(len, 38, 46)),
            counter: None,
            arrival_s: Some(n.hex(len, 13, 22) as u64),
        }),
        _ => None,
    }
}

fn decode_legacy(s: &str) -> Option<Decoded> {
    // Every legacy number is below 2^185 (its creation field would have to
    // reach the year 2256), where AWS accepts nothing: no number is both.
    if s.len() != 56 || !s.starts_with('4') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s >= POW_2_185 {
        return None;
    }
    let index: u64 = s[14..26].parse().ok()?;
    Some(Decoded::Legacy {
        created_ms: s[1..14].parse().ok()?,
        shard_index: u32::try_from(index).ok()?,
        epoch: s[26..36].parse().ok()?,
        offset: s[36..56].parse().ok()?,
    })
}

impl Decoded {
    /// The shard index the number encodes (negative when AWS reads it so).
    pub fn shard_index(&self) -> i64 {
        match *self {
            Decoded::Aws { shard_index, .. } => shard_index,
            Decoded::Legacy { shard_index, .. } => i64::from(shard_index),
        }
    }

    /// The (epoch, offset) of the number in `shard`, or `None` when it cannot
    /// have come from it: another layout version or creation time.
    pub fn position_in(&self, shard: &ShardSeq) -> Option<(u64, u64)> {
        let same_shard = self.shard_index() == i64::from(shard.index);
        match (*self, shard.layout) {
            (
                Decoded::Aws {
                    version: 2,
                    created_s,
                    counter: Some(c),
                    ..
                },
                Layout::Aws { created_s: want },
            ) if same_shard && created_s == want => Some((
                (c >> OFFSET_BITS) as u64,
                (c & ((1 << OFFSET_BITS) - 1)) as u64,
            )),
            // A shard keeps the layout it was created with, but a number of
            // the other layout that encodes it exactly is still read.
            (
                Decoded::Aws {
                    version: 2,
                    created_s,
                    counter: Some(c),
                    ..
                },
                Layout::Legacy { created_ms },
            ) if same_shard && created_s == created_ms / 1000 => Some((
                (c >> OFFSET_BITS) as u64,
                (c & ((1 << OFFSET_BITS) - 1)) as u64,
            )),
            (
                Decoded::Legacy {
                    created_ms,
                    epoch,
                    offset,
                    ..
                },
                Layout::Legacy { created_ms: want },
            ) if same_shard && created_ms == want => Some((epoch, offset)),
            _ => None,
        }
    }

    /// Whether AWS takes the number as a `SequenceNumberForOrdering` at
    /// `now_ms`: one whose arrival time is in the future is refused.
    pub fn valid_for_ordering(&self, now_ms: i64) -> bool {
        match *self {
            Decoded::Aws {
                arrival_s: Some(t), ..
            } => (t as i128) * 1000 <= i128::from(now_ms),
            _ => true,
        }
    }
}

/// A 256-bit unsigned integer (little-endian 64-bit limbs): enough for AWS's
/// 188-bit numbers; longer inputs are invalid anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct U256([u64; 4]);

impl U256 {
    fn from_decimal(s: &str) -> Option<U256> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut n = U256::default();
        for b in s.bytes() {
            let mut carry = u128::from(b - b'0');
            for limb in n.0.iter_mut() {
                let v = u128::from(*limb) * 10 + carry;
                *limb = v as u64;
                carry = v >> 64;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(n)
    }

    fn to_decimal(self) -> String {
        // Divides by 10^9 over 32-bit limbs: u64 divisions by a constant,
        // cheap enough to number every record of a 10,000-record read.
        const CHUNK: u64 = 1_000_000_000;
        let mut limbs = [0u32; 8];
        for (i, l) in self.0.iter().enumerate() {
            limbs[2 * i] = *l as u32;
            limbs[2 * i + 1] = (*l >> 32) as u32;
        }
        let mut chunks = Vec::with_capacity(9);
        loop {
            let mut rem: u64 = 0;
            for limb in limbs.iter_mut().rev() {
                let v = (rem << 32) | u64::from(*limb);
                *limb = (v / CHUNK) as u32;
                rem = v % CHUNK;
            }
            chunks.push(rem as u32);
            if limbs.iter().all(|l| *l == 0) {
                break;
            }
        }
        let mut out = String::with_capacity(9 * chunks.len());
        if let Some(top) = chunks.pop() {
            out.push_str(&top.to_string());
        }
        for c in chunks.iter().rev() {
            out.push_str(&format!("{c:09}"));
        }
        out
    }

    /// Number of significant bits.
    fn bits(&self) -> u32 {
        for (i, limb) in self.0.iter().enumerate().rev() {
            if *limb != 0 {
                return 64 * i as u32 + (64 - limb.leading_zeros());
            }
        }
        0
    }

    /// Bits `lsb..lsb + width` (at most 128 of them).
    fn get(&self, lsb: u32, width: u32) -> u128 {
        let mut out: u128 = 0;
        for (i, &limb) in self.0.iter().enumerate() {
            let base = 64 * i as u32;
            if base + 64 <= lsb || base >= lsb + width {
                continue;
            }
            let v = u128::from(limb);
            if base >= lsb {
                out |= v << (base - lsb);
            } else {
                out |= v >> (lsb - base);
            }
        }
        if width < 128 {
            out & ((1 << width) - 1)
        } else {
            out
        }
    }

    /// Sets bits `lsb..lsb + width`, which must be clear, to `value`.
    fn set(&mut self, lsb: u32, width: u32, value: u128) {
        let value = if width < 128 {
            value & ((1 << width) - 1)
        } else {
            value
        };
        for (i, limb) in self.0.iter_mut().enumerate() {
            let base = 64 * i as u32;
            if base + 64 <= lsb || base >= lsb + width {
                continue;
            }
            let part = if base >= lsb {
                value >> (base - lsb)
            } else {
                value << (lsb - base)
            };
            *limb |= part as u64;
        }
    }

    /// Whether every bit below `bit` is clear.
    fn is_zero_below(&self, bit: u32) -> bool {
        (0..bit)
            .step_by(128)
            .all(|lsb| self.get(lsb, (bit - lsb).min(128)) == 0)
    }

    /// Hex digits `from..to` (counted from the left) of the `len`-digit
    /// hexadecimal form, as AWS slices it.
    fn hex(&self, len: usize, from: usize, to: usize) -> u128 {
        let lsb = 4 * (len - to) as u32;
        self.get(lsb, 4 * (to - from) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn aws(created_s: u64, index: u32) -> ShardSeq {
        ShardSeq {
            index,
            layout: Layout::Aws { created_s },
        }
    }

    // Hex conversions straight from the limbs, independent of `get` and `set`.
    fn hex_of(s: &str) -> String {
        let n = U256::from_decimal(s).unwrap();
        let [l0, l1, l2, l3] = n.0;
        let h = format!("{l3:016x}{l2:016x}{l1:016x}{l0:016x}");
        h.trim_start_matches('0').to_string()
    }

    fn from_hex(h: &str) -> String {
        let padded = format!("{h:0>64}");
        let mut n = U256::default();
        for i in 0..4 {
            let digits = &padded[64 - 16 * (i + 1)..64 - 16 * i];
            n.0[i] = u64::from_str_radix(digits, 16).unwrap();
        }
        n.to_decimal()
    }

    const SHARD_INDEX: u32 = i32::MAX as u32;

    proptest! {
        #[test]
        fn issued_numbers_decode_to_their_shard_and_arrival_second(
            created_s in 0..V0_MAX_CREATED_S, index in 0..=SHARD_INDEX, epoch in 0..=MAX_EPOCH,
            offset in 0..=MAX_OFFSET, arrival_ms in 0i64..=(MAX_36 as i64) * 1000,
        ) {
            let shard = aws(created_s, index);
            let text = shard.record(epoch, offset, arrival_ms);
            prop_assert_eq!(text.len(), 56);
            let hex = hex_of(&text);
            prop_assert_eq!(hex.len(), 47);
            prop_assert!(hex.starts_with('2') && hex.ends_with('2'));
            let d = decode(&text).unwrap();
            prop_assert_eq!(d.shard_index(), i64::from(index));
            match d {
                Decoded::Aws { version, created_s: c, arrival_s, .. } => {
                    prop_assert_eq!(version, 2);
                    prop_assert_eq!(c, created_s);
                    prop_assert_eq!(arrival_s, Some(arrival_ms as u64 / 1000));
                }
                other => prop_assert!(false, "decoded as {:?}", other),
            }
            prop_assert_eq!(d.position_in(&shard), Some((epoch, offset)));
            // The fields sit where decoders of AWS's numbers look for them.
            prop_assert_eq!(u64::from_str_radix(&hex[1..10], 16).unwrap(), created_s);
            prop_assert_eq!(u64::from_str_radix(&hex[29..38], 16).unwrap(), arrival_ms as u64 / 1000);
            prop_assert_eq!(u32::from_str_radix(&hex[38..46], 16).unwrap(), index);
            // Within the shard's range.
            prop_assert!(shard.start().as_str() <= text.as_str());
            prop_assert!(text.as_str() < shard.end(arrival_ms).as_str());
        }

        #[test]
        fn numbers_increase_with_the_offset_and_across_epochs(
            created_s in 0..V0_MAX_CREATED_S, index in 0..=SHARD_INDEX,
            epoch in 0..MAX_EPOCH, offset in 0..MAX_OFFSET, later in 0..=MAX_OFFSET,
            t1 in 0i64..=(MAX_36 as i64) * 1000, t2 in 0i64..=(MAX_36 as i64) * 1000,
        ) {
            let shard = aws(created_s, index);
            let a = shard.record(epoch, offset, t1);
            // The next offset, whatever the clock says (it may go back).
            let b = shard.record(epoch, offset + 1, t2);
            // A later epoch, at any offset (an unsynced tail may have been lost).
            let c = shard.record(epoch + 1, later, t2);
            prop_assert!(a < b);
            prop_assert!(a < c);
            // Same width, so string order is numeric order.
            prop_assert_eq!(a.len(), b.len());
            prop_assert_eq!(a.len(), c.len());
        }

        #[test]
        fn children_number_above_parents(
            created_s in 0..V0_MAX_CREATED_S, parent in 0..SHARD_INDEX, child in 0..=SHARD_INDEX,
            epoch in 0..=MAX_EPOCH, offset in 0..=MAX_OFFSET, t in 0i64..=(MAX_36 as i64) * 1000,
            legacy_ms in 0u64..9_000_000_000_000,
        ) {
            let p = aws(created_s, parent);
            let c = aws(created_s + 1, child);
            prop_assert!(p.end(t) < c.start());
            prop_assert!(p.record(epoch, offset, t) < c.start());
            // A legacy parent: every AWS-layout number is above every legacy one.
            let lp = ShardSeq { index: parent, layout: Layout::Legacy { created_ms: legacy_ms } };
            prop_assert!(lp.end(t) < c.start());
            prop_assert!(lp.end(t) < p.start());
        }

        #[test]
        fn legacy_numbers_round_trip(created_ms in 0u64..9_000_000_000_000, index in any::<u32>(),
            epoch in 0..=LEGACY_MAX_EPOCH, offset in any::<u64>()) {
            let shard = ShardSeq { index, layout: Layout::Legacy { created_ms } };
            let text = shard.record(epoch, offset, 0);
            prop_assert_eq!(text.len(), 56);
            prop_assert!(text.starts_with('4'));
            let d = decode(&text).unwrap();
            prop_assert_eq!(d, Decoded::Legacy { created_ms, shard_index: index, epoch, offset });
            prop_assert_eq!(d.position_in(&shard), Some((epoch, offset)));
        }

        #[test]
        fn any_client_number_decodes_without_panicking(s in "0|[1-9][0-9]{0,128}", t in any::<i64>()) {
            if let Some(d) = decode(&s) {
                let _ = d.valid_for_ordering(t);
                let _ = d.position_in(&aws(1, 0));
                let _ = d.position_in(&ShardSeq { index: 0, layout: Layout::Legacy { created_ms: 1 } });
            }
        }

        #[test]
        fn decimal_round_trips(limbs in any::<[u64; 3]>()) {
            let n = U256([limbs[0], limbs[1], limbs[2], 0]);
            prop_assert_eq!(U256::from_decimal(&n.to_decimal()), Some(n));
        }
    }

    #[test]
    fn legacy_numbers_keep_their_text() {
        // The layout every number issued before the AWS layout has.
        let shard = ShardSeq {
            index: 3,
            layout: Layout::Legacy {
                created_ms: 1_764_000_000_123,
            },
        };
        assert_eq!(
            shard.record(7, 42, 0),
            "41764000000123000000000003000000000700000000000000000042"
        );
        assert_eq!(
            shard.start(),
            "41764000000123000000000003000000000000000000000000000000"
        );
        assert_eq!(
            shard.end(0),
            "41764000000123000000000003999999999918446744073709551615"
        );
    }

    #[test]
    fn real_aws_numbers_decode() {
        // From AWS responses quoted in public issues.
        let d = decode("49590338271490256608559692538361571095921575989136588898").unwrap();
        assert_eq!(d.shard_index(), 6);
        let Decoded::Aws {
            version,
            created_s,
            arrival_s,
            ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(version, 2);
        assert_eq!(created_s, 1_542_776_258); // 2018-11-21 04:57:38 UTC
        assert_eq!(arrival_s, Some(1_545_084_650)); // 2018-12-17 22:10:50 UTC
        let d = decode("49546986683135544286507457936321625675700192471156785154").unwrap();
        assert_eq!(d.shard_index(), 0);
    }

    #[test]
    fn aws_judgement_of_odd_numbers() {
        // Small numbers are version 0: "5" encodes shard 5, "0" shard 0.
        assert_eq!(decode("5").unwrap().shard_index(), 5);
        assert_eq!(decode("0").unwrap().shard_index(), 0);
        // Version 0 with a creation second AWS refuses.
        assert!(decode(&from_hex("13bb2cc3d80000000000000000000000")).is_none());
        assert!(decode(&from_hex("13bb2cc3d7ffffffffffffffffffffff")).is_some());
        // 2^185 exactly, versions 0, 3 and 4, a leading 1 or 3: invalid.
        assert!(decode(POW_2_185).is_none());
        for h in [
            "20000000000000000000000000000000000000000000010",
            "20000000000000000000000000000000000000000000003",
            "20000000000000000000000000000000000000000000004",
            "1ffffffffff7fffffffffffffff000000000007fffffff2",
            "30000000000000000000000000000000000000000000001",
        ] {
            assert!(decode(&from_hex(h)).is_none(), "{h}");
        }
        // Version 2's counter must keep its top bit clear.
        assert!(decode(&from_hex("20000000000800000000000000000000000000000000002")).is_none());
        // A set top bit in the shard index reads as a negative index.
        let d = decode(&from_hex("20000000000000000000000000000000000000800000002")).unwrap();
        assert_eq!(d.shard_index(), -2_147_483_648);
        assert_eq!(
            format!("shardId-{:012}", d.shard_index()),
            "shardId--02147483648"
        );
        // All-ones fields are fine but for the creation second, which AWS
        // refuses from 16025175000 on, in version 2 as in version 0.
        assert!(decode(&from_hex("2ffffffffff7fffffffffffffff000000000007fffffff2")).is_none());
        assert!(decode(&from_hex("23bb2cc3d7f7fffffffffffffff000000000007fffffff2")).is_some());
        assert!(decode(&from_hex("23bb2cc3d8f7fffffffffffffff000000000007fffffff2")).is_none());
        // Version 1 is fine.
        assert!(decode(&from_hex("20000000000000000000000000000000000000000000001")).is_some());
        // Too long, not digits.
        assert!(decode(&"9".repeat(80)).is_none());
        assert!(decode("12a").is_none());
        assert!(decode("").is_none());
    }

    #[test]
    fn appends_beyond_the_layouts_range_are_refused() {
        let shard = aws(1_700_000_000, 0);
        assert!(shard.can_number(MAX_EPOCH, MAX_OFFSET));
        assert!(!shard.can_number(MAX_EPOCH + 1, 0));
        assert!(!shard.can_number(1, MAX_OFFSET + 1));
        // The all-ones counter stays the shards' EndingSequenceNumber.
        assert!(shard.record(MAX_EPOCH, MAX_OFFSET, 0) < shard.end(0));
        let legacy = ShardSeq {
            index: 0,
            layout: Layout::Legacy { created_ms: 1 },
        };
        assert!(legacy.can_number(u64::MAX, u64::MAX));
    }

    #[test]
    fn ordering_numbers_from_the_future_are_refused() {
        let now_ms = 1_800_000_000_000;
        let shard = aws(1_700_000_000, 0);
        let at = |ms| decode(&shard.record(1, 0, ms)).unwrap();
        assert!(at(now_ms).valid_for_ordering(now_ms));
        assert!(at(now_ms - 2000).valid_for_ordering(now_ms));
        assert!(!at(now_ms + 2000).valid_for_ordering(now_ms));
        assert!(decode("0").unwrap().valid_for_ordering(now_ms));
    }

    #[test]
    fn numbers_of_another_layout_or_creation_do_not_map() {
        let shard = aws(1_700_000_000, 4);
        let other_time = aws(1_700_000_001, 4);
        let n = decode(&other_time.record(1, 9, 0)).unwrap();
        assert_eq!(n.shard_index(), 4);
        assert_eq!(n.position_in(&shard), None);
        assert_eq!(decode("5").unwrap().position_in(&shard), None);
        let v1 = decode(&from_hex("20000000000000000000000000000000000000000000041")).unwrap();
        assert_eq!(v1.shard_index(), 4);
        assert_eq!(v1.position_in(&shard), None);
        // A legacy shard reads an AWS-layout number of its own creation second.
        let legacy = ShardSeq {
            index: 4,
            layout: Layout::Legacy {
                created_ms: 1_700_000_000_500,
            },
        };
        let n = decode(&shard.record(3, 11, 0)).unwrap();
        assert_eq!(n.position_in(&legacy), Some((3, 11)));
    }
}
