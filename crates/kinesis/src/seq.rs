//! Sequence numbers.
//!
//! A sequence number is a 56-digit decimal (the length of AWS's), built from
//! fixed-width fields so that numeric and lexicographic order agree:
//!
//! ```text
//! 4 | shard creation time, ms (13) | shard index (12) | leader epoch (10) | log offset (20)
//! ```
//!
//! Within a shard the epoch and offset never decrease along the log, so numbers
//! increase strictly. A child shard is created after its parents closed, so its
//! numbers are larger than theirs. The epoch grows at every server start, so a
//! number is never handed out twice, even when an unsynced tail was lost.

use std::fmt;

/// The parts of a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber {
    pub shard_created_ms: u64,
    pub shard_index: u32,
    pub epoch: u64,
    pub offset: u64,
}

const MAX_CREATED: u64 = 9_999_999_999_999;
/// The largest epoch a sequence number can carry.
pub const MAX_EPOCH: u64 = 9_999_999_999;

impl SequenceNumber {
    /// The smallest number of a shard: its `StartingSequenceNumber`.
    pub fn shard_start(shard_created_ms: u64, shard_index: u32) -> SequenceNumber {
        SequenceNumber {
            shard_created_ms,
            shard_index,
            epoch: 0,
            offset: 0,
        }
    }

    /// Parses a number this server issued; `None` for anything else.
    pub fn parse(s: &str) -> Option<SequenceNumber> {
        if s.len() != 56 || !s.starts_with('4') || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let created = s[1..14].parse().ok()?;
        let index: u64 = s[14..26].parse().ok()?;
        let epoch = s[26..36].parse().ok()?;
        let offset = s[36..56].parse().ok()?;
        Some(SequenceNumber {
            shard_created_ms: created,
            shard_index: u32::try_from(index).ok()?,
            epoch,
            offset,
        })
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "4{:013}{:012}{:010}{:020}",
            self.shard_created_ms.min(MAX_CREATED),
            self.shard_index,
            self.epoch.min(MAX_EPOCH),
            self.offset
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb() -> impl Strategy<Value = SequenceNumber> {
        (0..=MAX_CREATED, any::<u32>(), 0..=MAX_EPOCH, any::<u64>()).prop_map(|(c, i, e, o)| {
            SequenceNumber {
                shard_created_ms: c,
                shard_index: i,
                epoch: e,
                offset: o,
            }
        })
    }

    proptest! {
        #[test]
        fn round_trips_with_56_digits(s in arb()) {
            let text = s.to_string();
            prop_assert_eq!(text.len(), 56);
            prop_assert_eq!(SequenceNumber::parse(&text), Some(s));
        }

        #[test]
        fn numeric_order_is_field_order(a in arb(), b in arb()) {
            let (ta, tb) = (a.to_string(), b.to_string());
            // Fixed width: string order is numeric order.
            prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
        }

        #[test]
        fn later_records_of_a_shard_have_larger_numbers(c in 0..=MAX_CREATED, i in any::<u32>(), e in 1..MAX_EPOCH, o in 0..u64::MAX - 1, de in 0u64..2) {
            let a = SequenceNumber { shard_created_ms: c, shard_index: i, epoch: e, offset: o };
            let b = SequenceNumber { shard_created_ms: c, shard_index: i, epoch: e + de, offset: o + 1 };
            prop_assert!(a.to_string() < b.to_string());
            prop_assert!(SequenceNumber::shard_start(c, i).to_string() < a.to_string());
        }
    }

    #[test]
    fn foreign_numbers_are_refused() {
        assert!(SequenceNumber::parse("0").is_none());
        assert!(
            SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
                .is_none()
        );
        assert!(SequenceNumber::parse(&"4".repeat(57)).is_none());
    }
}
