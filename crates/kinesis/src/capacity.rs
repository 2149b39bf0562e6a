//! Current AWS capacity features: warm throughput, record distribution
//! strategy and the account's minimum throughput billing commitment.

use ripstream_meta::StreamMode;
use serde::{Deserialize, Serialize};

use crate::types::*;
use crate::{Error, Inner, Result, Service};

const COMMITMENT_KEY: &str = "account/minimum-throughput-billing-commitment";
/// How long a commitment must run before it can end.
const COMMITMENT_WINDOW_MS: i64 = 24 * 3_600_000;
/// Largest warm throughput of one stream (10 GiB/s).
const MAX_WARM_MIBPS: i64 = 10 * 1024;

/// The commitment as stored in the catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Commitment {
    enabled: bool,
    started_ms: Option<i64>,
    /// When ending was requested (the end takes effect at the earliest allowed time).
    end_requested_ms: Option<i64>,
    ended_ms: Option<i64>,
}

impl Commitment {
    fn earliest_end(&self) -> Option<i64> {
        self.started_ms.map(|s| s + COMMITMENT_WINDOW_MS)
    }

    /// Applies an end that was requested before the window closed, once it has.
    fn settle(mut self, now: i64) -> Commitment {
        if self.enabled
            && self.end_requested_ms.is_some()
            && let Some(earliest) = self.earliest_end()
            && now >= earliest
        {
            self.enabled = false;
            self.ended_ms = Some(earliest);
            self.end_requested_ms = None;
        }
        self
    }

    fn active(&self) -> bool {
        self.enabled
    }

    fn view(&self) -> MinimumThroughputBillingCommitmentOutput {
        let status = match (self.enabled, self.end_requested_ms) {
            (true, None) => "ENABLED",
            (true, Some(_)) => "ENABLED_UNTIL_EARLIEST_ALLOWED_END",
            (false, _) => "DISABLED",
        };
        MinimumThroughputBillingCommitmentOutput {
            status: status.into(),
            started_at: self.started_ms.map(Timestamp),
            ended_at: self.ended_ms.map(Timestamp),
            earliest_allowed_end_at: if self.enabled {
                self.earliest_end().map(Timestamp)
            } else {
                None
            },
        }
    }
}

impl Inner {
    fn commitment(&self) -> Result<Commitment> {
        let raw = self.catalog.setting(COMMITMENT_KEY)?;
        let c: Commitment = raw
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(c.settle(self.now_ms()))
    }

    /// Whether the account has a minimum throughput billing commitment.
    pub(crate) fn has_commitment(&self) -> Result<bool> {
        Ok(self.commitment()?.active())
    }
}

pub(crate) fn check_warm(inner: &Inner, mibps: i64) -> Result<()> {
    if !inner.has_commitment()? {
        return Err(Error::InvalidArgument(
            "Warm throughput is only available in accounts with MinimumThroughputBillingCommitment enabled. Enable it with UpdateAccountSettings.".into(),
        ));
    }
    if mibps > MAX_WARM_MIBPS {
        return Err(Error::LimitExceeded(format!(
            "WarmThroughputMiBps {mibps} exceeds the limit of {MAX_WARM_MIBPS} MiB/s for a stream."
        )));
    }
    Ok(())
}

impl Service {
    /// UpdateStreamWarmThroughput.
    pub async fn update_stream_warm_throughput(
        &self,
        input: UpdateStreamWarmThroughputInput,
    ) -> Result<UpdateStreamWarmThroughputOutput> {
        let inner = self.inner();
        let mibps = input.warm_throughput_mibps;
        check_warm(inner, mibps)?;
        inner
            .mutate(&input.stream, false, |rec, _| {
                if rec.mode != StreamMode::OnDemand {
                    return Err(Error::InvalidArgument(format!(
                        "Warm throughput is only supported for streams in ON_DEMAND mode; stream {} is PROVISIONED.",
                        rec.name
                    )));
                }
                rec.warm_throughput_mibps = Some(mibps as u32);
                Ok(())
            })
            .await?;
        self.ensure_floor(&input.stream).await?;
        let s = inner.lookup_ref(
            input.stream.stream_name.as_deref(),
            input.stream.stream_arn.as_deref(),
        )?;
        Ok(UpdateStreamWarmThroughputOutput {
            stream_arn: inner.stream_arn(&s.rec.name),
            stream_name: s.rec.name.clone(),
            warm_throughput: WarmThroughput {
                target_mi_bps: Some(mibps as u32),
                current_mi_bps: Some(s.routes.len() as u32),
            },
        })
    }

    /// UpdateStreamRecordDistributionStrategy.
    pub async fn update_stream_record_distribution_strategy(
        &self,
        input: UpdateStreamRecordDistributionStrategyInput,
    ) -> Result<Empty> {
        let strategy = input.record_distribution_strategy;
        self.inner()
            .mutate(&input.stream, true, |rec, _| {
                if rec.mode != StreamMode::OnDemand {
                    return Err(Error::InvalidArgument(format!(
                        "The record distribution strategy is only supported for streams in ON_DEMAND mode; stream {} is PROVISIONED.",
                        rec.name
                    )));
                }
                rec.record_distribution = strategy;
                Ok(())
            })
            .await?;
        Ok(Empty {})
    }

    /// DescribeAccountSettings.
    pub async fn describe_account_settings(&self, _input: Empty) -> Result<AccountSettingsOutput> {
        Ok(AccountSettingsOutput {
            minimum_throughput_billing_commitment: self.inner().commitment()?.view(),
        })
    }

    /// UpdateAccountSettings.
    pub async fn update_account_settings(
        &self,
        input: UpdateAccountSettingsInput,
    ) -> Result<AccountSettingsOutput> {
        let inner = self.inner();
        let _guard = inner.control.lock().await;
        let now = inner.now_ms();
        let mut c = inner.commitment()?;
        match input.minimum_throughput_billing_commitment.status {
            CommitmentStatus::Enabled => {
                if !c.enabled {
                    c = Commitment {
                        enabled: true,
                        started_ms: Some(now),
                        end_requested_ms: None,
                        ended_ms: None,
                    };
                } else {
                    // Asking to stay enabled cancels a pending end.
                    c.end_requested_ms = None;
                }
            }
            CommitmentStatus::Disabled => {
                if c.enabled {
                    if c.earliest_end().is_some_and(|e| now < e) {
                        c.end_requested_ms = Some(now);
                    } else {
                        c.enabled = false;
                        c.ended_ms = Some(now);
                    }
                }
            }
        }
        let bytes = serde_json::to_vec(&c).map_err(|e| Error::failed(e.to_string(), e))?;
        // A redb commit (an fsync): on a blocking thread, not an async worker.
        let catalog = inner.catalog.clone();
        crate::blocking(move || Ok(catalog.put_setting(COMMITMENT_KEY, &bytes)?)).await?;
        Ok(AccountSettingsOutput {
            minimum_throughput_billing_commitment: c.view(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitment_ends_no_earlier_than_its_window() {
        let c = Commitment {
            enabled: true,
            started_ms: Some(0),
            end_requested_ms: Some(1000),
            ended_ms: None,
        };
        assert_eq!(
            c.clone().settle(1000).view().status,
            "ENABLED_UNTIL_EARLIEST_ALLOWED_END"
        );
        let ended = c.settle(COMMITMENT_WINDOW_MS);
        assert_eq!(ended.view().status, "DISABLED");
        assert_eq!(ended.view().ended_at, Some(Timestamp(COMMITMENT_WINDOW_MS)));
    }
}
