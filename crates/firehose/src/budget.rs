//! The process-wide memory budget of the delivery engine: every delivery
//! stream's buffered-but-undelivered bytes come out of one pool, so the
//! number of streams times their BufferingHints (5,000 × 128 MiB) can never
//! become the server's memory. The records themselves are durable in each
//! stream's log partition before they are acknowledged, so a stream that
//! finds the pool empty loses nothing by flushing early or by not reading
//! ahead: the log holds what it has not buffered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The pool. Bytes are taken through a [`Held`], which gives them back
/// when dropped, so a delivery task that is aborted mid-flush (its stream
/// deleted, the server stopping) cannot leak its share.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
    freed: Notify,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Bytes held now by every stream together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes up to `want` bytes, as many as are free (`all_or_nothing`:
    /// exactly `want` or none). With `alone` (the asker's own bytes), an
    /// all-or-nothing request past what is free is granted when those are
    /// all that is held, so a record bigger than the budget is delivered
    /// by itself rather than never.
    fn take(&self, want: usize, all_or_nothing: bool, alone: Option<usize>) -> usize {
        if want == 0 {
            return 0;
        }
        let mut cur = self.used.load(Ordering::Acquire);
        loop {
            let free = self.limit.saturating_sub(cur);
            let grant = if want <= free || (all_or_nothing && alone.is_some_and(|own| cur <= own)) {
                want
            } else if !all_or_nothing && free > 0 {
                free
            } else {
                return 0;
            };
            match self.used.compare_exchange_weak(
                cur,
                cur + grant,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return grant,
                Err(now) => cur = now,
            }
        }
    }

    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    /// Waits until `need` bytes are free (the whole pool, for more than
    /// it holds), at most `max`.
    pub async fn wait_for_room(&self, need: usize, max: Duration) {
        let need = need.clamp(1, self.limit.max(1));
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release in between still
            // wakes this wait.
            freed.as_mut().enable();
            if self.limit.saturating_sub(self.used()) >= need {
                return;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return;
            }
        }
    }
}

/// One stream's share of the pool.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Held {
    pub fn new(budget: &Arc<Budget>) -> Held {
        Held {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the share by as much as is free, up to `more`; answers how
    /// much it grew.
    pub fn grow_up_to(&mut self, more: usize) -> usize {
        let got = self.budget.take(more, false, None);
        self.bytes += got;
        got
    }

    /// Grows the share to at least `total` bytes, or not at all.
    pub fn ensure(&mut self, total: usize) -> bool {
        self.ensure_with(total, false)
    }

    /// As [`Held::ensure`], for the first record of an empty buffer: past
    /// the limit too when this share is all that is held.
    pub fn ensure_first(&mut self, total: usize) -> bool {
        self.ensure_with(total, true)
    }

    fn ensure_with(&mut self, total: usize, first: bool) -> bool {
        if total <= self.bytes {
            return true;
        }
        let more = total - self.bytes;
        let alone = first.then_some(self.bytes);
        if self.budget.take(more, true, alone) == more {
            self.bytes = total;
            return true;
        }
        false
    }

    /// Gives back everything past `total` bytes.
    pub fn shrink_to(&mut self, total: usize) {
        if total < self.bytes {
            self.budget.give_back(self.bytes - total);
            self.bytes = total;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_never_pass_the_limit_and_come_back_on_drop() {
        let b = Budget::new(100);
        let mut x = Held::new(&b);
        let mut y = Held::new(&b);
        assert_eq!(x.grow_up_to(70), 70);
        assert_eq!(y.grow_up_to(70), 30);
        assert_eq!(b.used(), 100);
        assert_eq!(y.grow_up_to(1), 0);
        assert!(!y.ensure(31));
        x.shrink_to(20);
        assert_eq!(b.used(), 50);
        assert!(y.ensure(80));
        assert_eq!(b.used(), 100);
        drop(x);
        drop(y);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn a_wait_for_room_ends_when_enough_is_given_back() {
        let b = Budget::new(100);
        let mut x = Held::new(&b);
        x.grow_up_to(100);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_for_room(50, Duration::from_secs(30)).await })
        };
        // Too little given back: still waiting.
        x.shrink_to(80);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        x.shrink_to(40);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn an_oversized_request_is_granted_only_to_an_empty_pool() {
        let b = Budget::new(10);
        let mut x = Held::new(&b);
        let mut y = Held::new(&b);
        assert_eq!(x.grow_up_to(1), 1);
        assert!(!y.ensure(50));
        x.shrink_to(0);
        // Read-ahead never passes the limit, even alone.
        assert_eq!(y.grow_up_to(50), 10);
        // One record past it is taken by the only holder, as a first
        // record only.
        assert!(!y.ensure(50));
        assert!(y.ensure_first(50));
        assert_eq!(b.used(), 50);
        assert_eq!(x.grow_up_to(5), 0);
        assert!(!x.ensure_first(5));
        drop(y);
        assert_eq!(b.used(), 0);
    }
}
