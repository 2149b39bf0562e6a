//! AWS's default DirectPut quotas per delivery stream, combined over
//! PutRecord and PutRecordBatch: in US East (N. Virginia), US West (Oregon)
//! and Europe (Ireland) 500,000 records/s, 2,000 requests/s and 5 MiB/s;
//! elsewhere 100,000 records/s, 1,000 requests/s and 1 MiB/s. A call over
//! the request rate is refused whole with ServiceUnavailableException; in a
//! batch, the records past the record or byte rate fail one by one with
//! that code (FailedPutCount), as AWS answers them.

use std::collections::HashMap;

use parking_lot::Mutex;
use ripstream_runtime::quota::{QuotaMode, TokenBucket};

/// The three rates of one region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub records_per_sec: f64,
    pub requests_per_sec: f64,
    pub bytes_per_sec: f64,
}

impl Rates {
    /// AWS's defaults in `region`.
    pub fn for_region(region: &str) -> Rates {
        const MIB: f64 = 1024.0 * 1024.0;
        match region {
            "us-east-1" | "us-west-2" | "eu-west-1" => Rates {
                records_per_sec: 500_000.0,
                requests_per_sec: 2_000.0,
                bytes_per_sec: 5.0 * MIB,
            },
            _ => Rates {
                records_per_sec: 100_000.0,
                requests_per_sec: 1_000.0,
                bytes_per_sec: MIB,
            },
        }
    }
}

struct Buckets {
    records: TokenBucket,
    requests: TokenBucket,
    bytes: TokenBucket,
}

/// The quotas of every delivery stream, by stream uid.
pub struct StreamQuotas {
    mode: QuotaMode,
    rates: Rates,
    streams: Mutex<HashMap<u64, Buckets>>,
}

impl std::fmt::Debug for StreamQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamQuotas")
            .field("mode", &self.mode)
            .field("rates", &self.rates)
            .finish()
    }
}

impl StreamQuotas {
    pub fn new(mode: QuotaMode, rates: Rates) -> StreamQuotas {
        StreamQuotas {
            mode,
            rates,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one put call of records of these sizes to stream `uid`:
    /// `None` when the call itself is over the request rate, else whether
    /// each record passes (in order: once one is over the rate, so are the
    /// rest, as a client retrying the failed ones expects).
    pub fn admit(&self, uid: u64, sizes: &[usize], now_ms: i64) -> Option<Vec<bool>> {
        if self.mode == QuotaMode::Off {
            return Some(vec![true; sizes.len()]);
        }
        let mut streams = self.streams.lock();
        let b = streams.entry(uid).or_insert_with(|| Buckets {
            records: TokenBucket::new(self.rates.records_per_sec, now_ms),
            requests: TokenBucket::new(self.rates.requests_per_sec, now_ms),
            bytes: TokenBucket::new(self.rates.bytes_per_sec, now_ms),
        });
        if !b.requests.can_take(1.0, now_ms) {
            return None;
        }
        b.requests.take(1.0);
        let mut open = true;
        Some(
            sizes
                .iter()
                .map(|&n| {
                    open = open
                        && b.records.can_take(1.0, now_ms)
                        && b.bytes.can_take(n as f64, now_ms);
                    if open {
                        b.records.take(1.0);
                        b.bytes.take(n as f64);
                    }
                    open
                })
                .collect(),
        )
    }

    /// Forgets a deleted stream's buckets.
    pub fn forget(&self, uid: u64) {
        self.streams.lock().remove(&uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_past_the_byte_rate_fail_and_calls_past_the_request_rate_are_refused() {
        let rates = Rates {
            records_per_sec: 1000.0,
            requests_per_sec: 2.0,
            bytes_per_sec: 1000.0,
        };
        let q = StreamQuotas::new(QuotaMode::Aws, rates);
        // 600 + 300 pass, the third would pass the 1000-byte second: it and
        // the rest fail.
        assert_eq!(
            q.admit(1, &[600, 300, 200, 1], 0),
            Some(vec![true, true, false, false])
        );
        assert_eq!(q.admit(1, &[1], 0), Some(vec![true]));
        // The third call in one second.
        assert_eq!(q.admit(1, &[1], 0), None);
        // Other streams have their own.
        assert_eq!(q.admit(2, &[1], 0), Some(vec![true]));
        // A second later, all is back.
        assert_eq!(q.admit(1, &[900], 1000), Some(vec![true]));
        let off = StreamQuotas::new(QuotaMode::Off, rates);
        for _ in 0..10 {
            assert_eq!(off.admit(1, &[10_000], 0), Some(vec![true]));
        }
    }

    #[test]
    fn the_big_regions_have_the_big_defaults() {
        assert_eq!(Rates::for_region("us-east-1").requests_per_sec, 2000.0);
        assert_eq!(
            Rates::for_region("eu-west-1").bytes_per_sec,
            5.0 * 1048576.0
        );
        assert_eq!(Rates::for_region("ap-south-1").records_per_sec, 100_000.0);
    }
}
