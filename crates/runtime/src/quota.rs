//! What the services share to enforce AWS's quotas: whether they are on,
//! and the token bucket they meter with.

/// Whether quotas are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaMode {
    /// AWS's default quotas (Data Streams' per shard, Firehose's per
    /// delivery stream).
    #[default]
    Aws,
    /// No limits: for self-hosted throughput.
    Off,
}

impl std::str::FromStr for QuotaMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aws" => Ok(QuotaMode::Aws),
            "off" => Ok(QuotaMode::Off),
            _ => Err(format!("invalid quota mode {s:?}: expected aws or off")),
        }
    }
}

impl std::fmt::Display for QuotaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaMode::Aws => "aws",
            QuotaMode::Off => "off",
        })
    }
}

/// A token bucket holding at most one second of its rate.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    pub fn new(rate: f64, now_ms: i64) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64) {
        let elapsed = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Whether `amount` may pass now: there are enough tokens, or the amount is
    /// larger than the bucket and the bucket is full.
    pub fn can_take(&mut self, amount: f64, now_ms: i64) -> bool {
        self.refill(now_ms);
        self.tokens >= amount.min(self.rate)
    }

    /// Takes `amount`, possibly into debt.
    pub fn take(&mut self, amount: f64) {
        self.tokens -= amount;
    }

    /// Whether the bucket is out of debt.
    pub fn positive(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        self.tokens > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_one_second_and_admits_one_oversized_amount_when_full() {
        let mut b = TokenBucket::new(10.0, 0);
        assert!(b.can_take(10.0, 0));
        b.take(10.0);
        assert!(!b.can_take(1.0, 0));
        // Half a second refills half the rate.
        assert!(b.can_take(5.0, 500));
        assert!(!b.can_take(6.0, 500));
        // Never more than one second's worth, however long it waited.
        assert!(b.can_take(100.0, 10_000));
        b.take(100.0);
        assert!(!b.positive(10_000));
        assert!(b.positive(20_000));
        assert_eq!("off".parse::<QuotaMode>(), Ok(QuotaMode::Off));
        assert!("fast".parse::<QuotaMode>().is_err());
    }
}
