//! A bounded cache of the read descriptors of segment files, shared by every
//! partition of a [`crate::Log`].
//!
//! Holding one descriptor per segment forever would grow with the data (hourly
//! rolls, 500 shards and a week of retention is 84,000 files) until `open`
//! fails with `EMFILE` and no shard can roll again. Segments are opened on
//! first read instead, and at most `capacity` descriptors are kept; past that
//! the least recently used one is closed. Recency is tracked the CLOCK way (a
//! reference bit per file and a sweeping hand) so a read that finds its file
//! open takes no lock but its own segment's.
//!
//! Active segments are the exception: tailing consumers read them all the
//! time, and there is one per partition, so their descriptors are *pinned*
//! (kept outside the cache, never evicted) until the segment is sealed.
//! Otherwise a few hundred busy shards would evict each other at every read.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

/// Default number of segment files kept open for reading.
pub const DEFAULT_MAX_OPEN_SEGMENT_FILES: usize = 256;

/// One segment's place in the cache: its open file, if any.
#[derive(Debug, Default)]
pub(crate) struct FileSlot {
    file: RwLock<Option<Arc<File>>>,
    referenced: AtomicBool,
    /// Kept open outside the cache (an active segment).
    pinned: AtomicBool,
}

impl FileSlot {
    /// A slot whose file, once opened, stays open until [`FileSlot::unpin`].
    pub fn pinned() -> FileSlot {
        FileSlot {
            pinned: AtomicBool::new(true),
            ..FileSlot::default()
        }
    }

    /// Hands the file over to the cache (the segment was sealed): closed
    /// now, reopened through the cache when next read.
    pub fn unpin(&self) {
        let mut guard = self.file.write();
        self.pinned.store(false, Ordering::Relaxed);
        *guard = None;
    }

    /// Closes the file (readers still holding it keep it until they finish).
    pub fn close(&self) {
        *self.file.write() = None;
    }
}

#[derive(Debug)]
pub(crate) struct FileCache {
    capacity: usize,
    /// The slots holding an open file (or that did, if since dropped).
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    slots: Vec<Weak<FileSlot>>,
    hand: usize,
}

impl FileCache {
    pub fn new(capacity: usize) -> Arc<FileCache> {
        Arc::new(FileCache {
            capacity: capacity.max(1),
            ring: Mutex::new(Ring::default()),
        })
    }

    /// The open file of `slot`, opening `path` if it is not open.
    pub fn get(&self, slot: &Arc<FileSlot>, path: &Path) -> io::Result<Arc<File>> {
        slot.referenced.store(true, Ordering::Relaxed);
        // Readers of one busy shard share the fast path.
        if let Some(f) = slot.file.read().as_ref() {
            return Ok(f.clone());
        }
        let mut guard = slot.file.write();
        if let Some(f) = guard.as_ref() {
            return Ok(f.clone());
        }
        let file = Arc::new(File::open(path)?);
        crate::metrics::count_file_open();
        *guard = Some(file.clone());
        if slot.pinned.load(Ordering::Relaxed) {
            return Ok(file);
        }
        // The slot's lock is never held while taking the ring's: eviction
        // takes them in the other order.
        drop(guard);
        self.admit(slot);
        Ok(file)
    }

    fn admit(&self, slot: &Arc<FileSlot>) {
        let mut ring = self.ring.lock();
        // Readers may set bits again behind the hand: after two full laps the
        // file under the hand goes whatever its bit says.
        let mut spared = 0;
        while ring.slots.len() >= self.capacity {
            let i = ring.hand % ring.slots.len();
            let laps_left = spared < 2 * ring.slots.len();
            match ring.slots[i].upgrade() {
                None => {
                    ring.slots.swap_remove(i);
                }
                Some(s) if laps_left && s.referenced.swap(false, Ordering::Relaxed) => {
                    ring.hand = i + 1;
                    spared += 1;
                }
                Some(s) => {
                    s.close();
                    ring.slots.swap_remove(i);
                }
            }
        }
        ring.slots.push(Arc::downgrade(slot));
    }

    /// Files currently held open (an upper bound: closed slots linger until swept).
    pub fn open_files(&self) -> usize {
        self.ring.lock().slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_capacity_and_keeps_what_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(3);
        let slots: Vec<(Arc<FileSlot>, std::path::PathBuf)> = (0..10)
            .map(|i| {
                let path = dir.path().join(format!("{i}.log"));
                std::fs::write(&path, b"x").unwrap();
                (Arc::new(FileSlot::default()), path)
            })
            .collect();
        let is_open = |i: usize| slots[i].0.file.read().is_some();
        for (i, (slot, path)) in slots.iter().enumerate() {
            cache.get(slot, path).unwrap();
            // Slot 0 is read between every other open, so it stays.
            cache.get(&slots[0].0, &slots[0].1).unwrap();
            assert!(cache.open_files() <= 3, "after {i}");
            assert!(is_open(0), "after {i}");
        }
        assert_eq!((0..10).filter(|&i| is_open(i)).count(), 3);
        // An active segment's file is pinned outside the cache until sealed.
        let pinned = Arc::new(FileSlot::pinned());
        cache.get(&pinned, &slots[1].1).unwrap();
        assert_eq!(cache.open_files(), 3, "pinned files are outside the cache");
        pinned.unpin();
        assert!(pinned.file.read().is_none());
    }
}
