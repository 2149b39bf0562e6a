//! Fault injection for the log's own tests: makes chosen syscalls fail once,
//! so the failure paths of syncs and rolls can be exercised on a real disk.
//! Outside tests every check is a constant `false`.

#[cfg(test)]
use std::sync::atomic::{AtomicU32, Ordering};

/// Counts of upcoming operations that are to fail, shared by a [`crate::Log`]
/// and its writer thread.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// `fdatasync`s of segment files.
    #[cfg(test)]
    pub segment_syncs: AtomicU32,
    /// Syncs of the commit log.
    #[cfg(test)]
    pub commit_log_syncs: AtomicU32,
    /// Creations of the next segment when a segment is rolled.
    #[cfg(test)]
    pub roll_creates: AtomicU32,
}

#[cfg(test)]
fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// Whether this segment file sync is to fail.
    pub fn segment_sync(&self) -> bool {
        #[cfg(test)]
        return take(&self.segment_syncs);
        #[cfg(not(test))]
        false
    }

    /// Whether creating the next segment of a roll is to fail.
    pub fn roll_create(&self) -> bool {
        #[cfg(test)]
        return take(&self.roll_creates);
        #[cfg(not(test))]
        false
    }

    /// Whether this commit log sync is to fail.
    pub fn commit_log_sync(&self) -> bool {
        #[cfg(test)]
        return take(&self.commit_log_syncs);
        #[cfg(not(test))]
        false
    }
}

/// The error an injected fault reports.
pub(crate) fn injected() -> std::io::Error {
    std::io::Error::other("injected fault")
}
