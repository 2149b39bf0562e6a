//! Per-shard throughput quotas and traffic meters.
//!
//! Each shard has four token buckets, as AWS meters provisioned shards: writes
//! of 1 MiB/s and 1000 records/s, reads of 2 MiB/s and 5 GetRecords calls/s.
//! A bucket holds one second of its rate, so short bursts pass. A record
//! larger than a whole bucket is admitted when the bucket is full and leaves it
//! in debt, which is how a single 10 MiB record (or a 10 MiB GetRecords
//! response) is allowed and then throttles the shard for the seconds that
//! follow. Each shard also keeps a meter of recent write traffic and a sample
//! of recent hash keys, which the on-demand scaler reads.

use parking_lot::Mutex;

pub const WRITE_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
pub const WRITE_RECORDS_PER_SEC: f64 = 1000.0;
pub const READ_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;
pub const READ_CALLS_PER_SEC: f64 = 5.0;
/// Hash keys kept for choosing a split point.
const KEY_SAMPLE: usize = 256;

// Shared with the other services that meter AWS's quotas (Firehose).
pub use ripstream_runtime::quota::{QuotaMode, TokenBucket};

/// Write traffic over the last completed second and the one in progress.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    second: i64,
    bytes: f64,
    records: f64,
    throttled: u64,
    /// Smoothed bytes per second over recent seconds.
    pub avg_bytes: f64,
    /// Smoothed records per second over recent seconds.
    pub avg_records: f64,
    /// Smoothed throttled writes per second.
    pub avg_throttled: f64,
    keys: Vec<u128>,
    next_key: usize,
}

impl Meter {
    fn roll(&mut self, now_ms: i64) {
        let sec = now_ms.div_euclid(1000);
        if sec == self.second {
            return;
        }
        // Seconds without traffic count as zero.
        let gap = (sec - self.second).clamp(1, 60) as i32;
        let alpha: f64 = 0.3;
        let keep = (1.0 - alpha).powi(gap - 1);
        self.avg_bytes = (self.avg_bytes * (1.0 - alpha) + self.bytes * alpha) * keep;
        self.avg_records = (self.avg_records * (1.0 - alpha) + self.records * alpha) * keep;
        self.avg_throttled =
            (self.avg_throttled * (1.0 - alpha) + self.throttled as f64 * alpha) * keep;
        self.second = sec;
        self.bytes = 0.0;
        self.records = 0.0;
        self.throttled = 0;
    }

    fn sample_key(&mut self, hash: Option<u128>) {
        let Some(h) = hash else { return };
        if self.keys.len() < KEY_SAMPLE {
            self.keys.push(h);
        } else {
            self.keys[self.next_key] = h;
            self.next_key = (self.next_key + 1) % KEY_SAMPLE;
        }
    }

    /// Brings the averages up to `now_ms`.
    pub fn refresh(&mut self, now_ms: i64) {
        self.roll(now_ms);
    }

    /// The smallest and largest recently written hash keys.
    pub fn key_bounds(&self) -> Option<(u128, u128)> {
        Some((*self.keys.iter().min()?, *self.keys.iter().max()?))
    }

    /// The median of the recently written hash keys.
    pub fn median_key(&self) -> Option<u128> {
        if self.keys.is_empty() {
            return None;
        }
        let mut k = self.keys.clone();
        k.sort_unstable();
        Some(k[k.len() / 2])
    }
}

#[derive(Debug)]
struct Buckets {
    write_bytes: TokenBucket,
    write_records: TokenBucket,
    read_bytes: TokenBucket,
    read_calls: TokenBucket,
    meter: Meter,
}

/// One shard's quotas and meter.
#[derive(Debug)]
pub struct ShardQuota {
    inner: Mutex<Buckets>,
}

impl ShardQuota {
    pub fn new(now_ms: i64) -> ShardQuota {
        ShardQuota {
            inner: Mutex::new(Buckets {
                write_bytes: TokenBucket::new(WRITE_BYTES_PER_SEC, now_ms),
                write_records: TokenBucket::new(WRITE_RECORDS_PER_SEC, now_ms),
                read_bytes: TokenBucket::new(READ_BYTES_PER_SEC, now_ms),
                read_calls: TokenBucket::new(READ_CALLS_PER_SEC, now_ms),
                meter: Meter::default(),
            }),
        }
    }

    /// Admits (or refuses) each of a shard's records in order, metering the
    /// traffic. `sizes` are data plus partition key lengths.
    pub fn admit_writes(
        &self,
        mode: QuotaMode,
        records: &[(usize, Option<u128>)],
        now_ms: i64,
    ) -> Vec<bool> {
        let mut b = self.inner.lock();
        let mut out = Vec::with_capacity(records.len());
        for &(size, hash) in records {
            let ok = mode == QuotaMode::Off
                || (b.write_records.can_take(1.0, now_ms)
                    && b.write_bytes.can_take(size as f64, now_ms));
            b.meter.roll(now_ms);
            if ok {
                b.write_records.take(1.0);
                b.write_bytes.take(size as f64);
                b.meter.bytes += size as f64;
                b.meter.records += 1.0;
            } else {
                b.meter.throttled += 1;
            }
            // Refused demand also tells the scaler where the traffic is.
            b.meter.sample_key(hash);
            out.push(ok);
        }
        out
    }

    /// Whether a GetRecords call may run now; takes a call token if so.
    pub fn admit_read(&self, mode: QuotaMode, now_ms: i64) -> bool {
        if mode == QuotaMode::Off {
            return true;
        }
        let mut b = self.inner.lock();
        if b.read_calls.can_take(1.0, now_ms) && b.read_bytes.positive(now_ms) {
            b.read_calls.take(1.0);
            true
        } else {
            false
        }
    }

    /// Charges the bytes a GetRecords call returned.
    pub fn charge_read(&self, mode: QuotaMode, bytes: usize) {
        if mode == QuotaMode::Aws {
            self.inner.lock().read_bytes.take(bytes as f64);
        }
    }

    /// A reading of the write meter.
    pub fn meter(&self, now_ms: i64) -> Meter {
        let mut b = self.inner.lock();
        b.meter.refresh(now_ms);
        b.meter.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let mut b = TokenBucket::new(5.0, 0);
        for _ in 0..5 {
            assert!(b.can_take(1.0, 0));
            b.take(1.0);
        }
        assert!(!b.can_take(1.0, 0));
        assert!(b.can_take(1.0, 200));
    }

    #[test]
    fn oversized_amounts_pass_once_and_leave_debt() {
        let mut b = TokenBucket::new(100.0, 0);
        assert!(b.can_take(1000.0, 0));
        b.take(1000.0);
        assert!(!b.positive(5_000));
        assert!(b.positive(9_100));
    }

    #[test]
    fn writes_are_throttled_per_record() {
        let q = ShardQuota::new(0);
        let recs: Vec<(usize, Option<u128>)> = (0..1500).map(|i| (10, Some(i))).collect();
        let admitted = q.admit_writes(QuotaMode::Aws, &recs, 0);
        assert_eq!(admitted.iter().filter(|a| **a).count(), 1000);
        assert!(admitted[..1000].iter().all(|a| *a));
        let later = q.admit_writes(QuotaMode::Aws, &recs[..100], 1000);
        assert!(later.iter().all(|a| *a));
        assert!(
            q.admit_writes(QuotaMode::Off, &recs, 1000)
                .iter()
                .all(|a| *a)
        );
        let m = q.meter(5_000);
        assert!(m.avg_throttled > 0.0);
        assert!(m.median_key().is_some());
    }

    #[test]
    fn reads_allow_five_calls_a_second_and_pay_for_big_responses() {
        let q = ShardQuota::new(0);
        for _ in 0..5 {
            assert!(q.admit_read(QuotaMode::Aws, 0));
        }
        assert!(!q.admit_read(QuotaMode::Aws, 0));
        assert!(q.admit_read(QuotaMode::Aws, 1000));
        q.charge_read(QuotaMode::Aws, 10 * 1024 * 1024);
        assert!(!q.admit_read(QuotaMode::Aws, 2000));
        assert!(q.admit_read(QuotaMode::Aws, 6000));
    }
}
