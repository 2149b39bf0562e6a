//! Open files and start-up cost with many sealed segments. A test binary of
//! its own, so the process's descriptor count and the log's process-wide
//! counters see this test alone.

use std::path::Path;

use ripstream_log::{BatchBuilder, FsyncPolicy, Log, LogConfig, metrics};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Writes a partition of `segments` sealed segments (one batch each) and an active one.
async fn write_segments(dir: &Path, segments: usize) {
    let mut config = LogConfig::new(dir, 1);
    // Every append past a segment's first rolls it.
    config.segment_max_bytes = 1;
    config.fsync = FsyncPolicy::Never;
    let log = Log::open(config).unwrap();
    let p = log.create_partition("p", i64::MAX).unwrap();
    for i in 0..=segments {
        let mut b = BatchBuilder::with_capacity(32);
        b.push(b"k", format!("v{i}").as_bytes());
        log.append(&p, b.finish().unwrap()).await.unwrap();
    }
    assert_eq!(p.segment_paths().len(), segments + 1);
    log.shutdown();
}

#[tokio::test]
async fn thousands_of_sealed_segments_cost_no_descriptors_or_reads_at_open() {
    let big = tempfile::tempdir().unwrap();
    let small = tempfile::tempdir().unwrap();
    write_segments(big.path(), 2000).await;
    write_segments(small.path(), 20).await;

    let before = metrics::snapshot().segment_file_opens;
    let log = Log::open(LogConfig::new(small.path(), 2)).unwrap();
    let small_opens = metrics::snapshot().segment_file_opens - before;
    drop(log);

    let fds_before = open_fds();
    let before = metrics::snapshot().segment_file_opens;
    let log = Log::open(LogConfig::new(big.path(), 2)).unwrap();
    let big_opens = metrics::snapshot().segment_file_opens - before;
    // The same files are opened whatever the number of sealed segments: the
    // active segment's, nothing per sealed one.
    assert_eq!(big_opens, small_opens);
    assert!(big_opens <= 4, "{big_opens} files opened at start");

    // Reading every segment keeps at most the cache's worth open.
    let p = log.partition("p").unwrap();
    let mut next = 0;
    while next < 2001 {
        let r = p.read(next, 100, 1 << 20).unwrap();
        assert_eq!(r.records.first().unwrap().offset, next);
        next = r.next_offset;
    }
    assert_eq!(p.offset_for_timestamp(0).unwrap(), 0);
    let stats = log.stats();
    assert!(
        stats.open_segment_files <= ripstream_log::DEFAULT_MAX_OPEN_SEGMENT_FILES,
        "{stats:?}"
    );
    let fds = open_fds();
    assert!(
        fds < 300,
        "{fds} descriptors open (was {fds_before} before open)"
    );

    // The start-up also raised the soft limit on open files to the hard one.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    assert_eq!(lim.rlim_cur, lim.rlim_max);
    drop(log);

    // Active segments are pinned outside the cache: shards read in turn do
    // not evict each other however small the cache is.
    let busy = tempfile::tempdir().unwrap();
    let mut config = LogConfig::new(busy.path(), 1);
    config.max_open_segment_files = 1;
    let log = Log::open(config).unwrap();
    let parts: Vec<_> = (0..5)
        .map(|i| log.create_partition(&format!("p{i}"), i64::MAX).unwrap())
        .collect();
    for p in &parts {
        let mut b = BatchBuilder::with_capacity(32);
        b.push(b"k", b"v");
        log.append(p, b.finish().unwrap()).await.unwrap();
    }
    let before = metrics::snapshot().segment_file_opens;
    for _ in 0..3 {
        for p in &parts {
            assert_eq!(p.read(0, 10, 1 << 20).unwrap().records.len(), 1);
        }
    }
    assert_eq!(metrics::snapshot().segment_file_opens - before, 5);
}
