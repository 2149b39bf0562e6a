//! The batch a destination keeps failing on, stored per stream (by uid):
//! its log range, when its first attempt failed and how many attempts it
//! took. A restart re-reads that very batch first ([`resume`]), and a
//! destination's `RetryOptions.DurationInSeconds` counts from the batch's
//! first failure, not from the restart ([`failed`]). Redshift stores it
//! before a batch's first load (its staged file's key derives from the
//! range); Iceberg when an append fails.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::Inner;
use crate::error::{Error, Result};

/// Per stream uid: the batch being delivered. (The name is the one the
/// space had when only Redshift used it: stored streams keep theirs.)
pub const PENDING_SPACE: &str = "firehose/redshift-pending";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub start: u64,
    pub end: u64,
    /// When the first attempt at this batch failed.
    pub first_failure_ms: Option<i64>,
    /// Failed attempts at it so far.
    #[serde(default)]
    pub attempts: u32,
}

impl Pending {
    pub fn new(start: u64, end: u64) -> Pending {
        Pending {
            start,
            end,
            first_failure_ms: None,
            attempts: 0,
        }
    }
}

impl Inner {
    pub(crate) fn pending(&self, uid: u64) -> Result<Option<Pending>> {
        let key = uid.to_string();
        Ok(self
            .catalog
            .documents(PENDING_SPACE)?
            .into_iter()
            .find(|(k, _)| k == key.as_bytes())
            .and_then(|(_, v)| serde_json::from_slice(&v).ok()))
    }

    fn save_pending(&self, uid: u64, p: &Pending) -> Result<()> {
        let raw = serde_json::to_vec(p).map_err(Error::internal)?;
        self.catalog
            .write_documents(PENDING_SPACE, &[(uid.to_string().as_bytes(), Some(&raw))])?;
        Ok(())
    }
}

/// The range a restarted delivery must re-read first: the batch under way
/// when delivery stopped before its checkpoint.
pub(crate) fn resume(inner: &Inner, uid: u64, checkpoint: u64) -> Option<u64> {
    match inner.pending(uid) {
        Ok(Some(p)) if p.start == checkpoint && p.end > p.start => Some(p.end),
        Ok(_) => None,
        Err(e) => {
            warn!(uid, error = %ripstream_api::Chain(&e), "cannot read the pending batch; the next batch is made afresh");
            None
        }
    }
}

pub(crate) async fn load(inner: &Arc<Inner>, uid: u64) -> Option<Pending> {
    let i = inner.clone();
    crate::blocking(move || i.pending(uid)).await.ok().flatten()
}

pub(crate) async fn save(inner: &Arc<Inner>, uid: u64, p: &Pending) -> bool {
    let (i, p) = (inner.clone(), *p);
    match crate::blocking(move || i.save_pending(uid, &p)).await {
        Ok(()) => true,
        Err(e) => {
            warn!(uid, error = %ripstream_api::Chain(&e), "cannot store the pending batch; retrying");
            false
        }
    }
}

/// What to do with a batch whose attempt just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failing {
    /// Try it again.
    Retry,
    /// It has failed for the whole retry duration, over this many attempts.
    GiveUp { attempts: u32 },
}

/// Counts a failed attempt at the batch `[start, end)` of stream `uid`:
/// `GiveUp` once `retry_ms` have passed since its first failure (at once
/// for 0: AWS does not retry then).
pub(crate) async fn failed(
    inner: &Arc<Inner>,
    uid: u64,
    (start, end): (u64, u64),
    retry_ms: i64,
) -> Failing {
    let mut p = match load(inner, uid).await {
        Some(p) if p.start == start && p.end == end => p,
        _ => Pending::new(start, end),
    };
    let now = inner.now_ms();
    let first = *p.first_failure_ms.get_or_insert(now);
    p.attempts = p.attempts.saturating_add(1);
    if now - first >= retry_ms {
        return Failing::GiveUp {
            attempts: p.attempts,
        };
    }
    save(inner, uid, &p).await;
    Failing::Retry
}
