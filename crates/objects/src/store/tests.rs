use super::*;
use ripstream_api::ServiceError;

fn store() -> (tempfile::TempDir, Objects) {
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::open(dir.path()).unwrap();
    (dir, objects)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(l: &Listing) -> Vec<String> {
    l.entries
        .iter()
        .map(|e| match e {
            Entry::Object(o) => o.key.clone(),
            Entry::Prefix(p) => format!("{p}*"),
        })
        .collect()
}

#[test]
fn bucket_names_follow_aws_rules() {
    for ok in ["abc", "my-bucket.logs", "a1b", "0ab", &"a".repeat(63)] {
        assert!(valid_bucket_name(ok), "{ok}");
    }
    for bad in [
        "ab",
        &"a".repeat(64),
        "My-Bucket",
        "under_score",
        "-abc",
        "abc-",
        ".abc",
        "a..b",
        "192.168.5.4",
        "xn--abc",
        "sthree-abc",
        "abc-s3alias",
        "abc--ol-s3",
        ".meta",
        "a/b",
    ] {
        assert!(!valid_bucket_name(bad), "{bad}");
    }
}

#[tokio::test]
async fn buckets_are_directories() {
    let (dir, s) = store();
    s.create_bucket("logs").unwrap();
    assert!(dir.path().join("objects/logs").is_dir());
    assert!(s.bucket_exists("logs"));
    assert!(!s.bucket_exists("nope"));
    let e = s.create_bucket("logs").unwrap_err();
    assert_eq!(e.code(), "BucketAlreadyOwnedByYou");
    assert_eq!(e.status(), http::StatusCode::CONFLICT);
    assert_eq!(
        s.create_bucket("Bad_Name").unwrap_err().code(),
        "InvalidBucketName"
    );
    s.create_bucket("alpha").unwrap();
    let names: Vec<_> = s
        .list_buckets()
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["alpha", "logs"]);
    s.put_object("logs", "a/b", b("x")).await.unwrap();
    assert_eq!(
        s.delete_bucket("logs").await.unwrap_err().code(),
        "BucketNotEmpty"
    );
    s.delete("logs", "a/b").await.unwrap();
    // The key's directory went with it; the bucket stays.
    assert!(!dir.path().join("objects/logs/a").exists());
    assert!(dir.path().join("objects/logs").is_dir());
    s.delete_bucket("logs").await.unwrap();
    assert!(!s.bucket_exists("logs"));
    assert_eq!(
        s.delete_bucket("logs").await.unwrap_err().code(),
        "NoSuchBucket"
    );
}

#[tokio::test]
async fn objects_are_plain_files_with_md5_etags() {
    let (dir, s) = store();
    let e = s.put_object("nobucket", "k", b("x")).await.unwrap_err();
    assert!(matches!(e, ObjectsError::NoSuchBucket { .. }));
    s.create_bucket("bk1").unwrap();
    let info = s
        .put_object("bk1", "dir/sub/file.txt", b("hello"))
        .await
        .unwrap();
    assert_eq!(info.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
    assert_eq!(info.size, 5);
    assert_eq!(info.content_type, DEFAULT_CONTENT_TYPE);
    let on_disk = std::fs::read(dir.path().join("objects/bk1/dir/sub/file.txt")).unwrap();
    assert_eq!(on_disk, b"hello");
    let (got, bytes, span) = s.get("bk1", "dir/sub/file.txt", None).await.unwrap();
    assert_eq!(bytes, b("hello"));
    assert_eq!(got, info);
    assert_eq!(span, None);
    let (_, part, span) = s
        .get("bk1", "dir/sub/file.txt", RangeSpec::parse("bytes=1-3"))
        .await
        .unwrap();
    assert_eq!((part, span), (b("ell"), Some((1, 3))));
    let e = s
        .get("bk1", "dir/sub/file.txt", RangeSpec::parse("bytes=9-"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidRange");
    assert_eq!(e.status(), http::StatusCode::RANGE_NOT_SATISFIABLE);
    let e = s.head("bk1", "missing").await.unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        ("NoSuchKey", http::StatusCode::NOT_FOUND)
    );
    // Deleting twice succeeds, as in S3.
    s.delete("bk1", "dir/sub/file.txt").await.unwrap();
    s.delete("bk1", "dir/sub/file.txt").await.unwrap();
    assert_eq!(
        s.head("bk1", "dir/sub/file.txt").await.unwrap_err().code(),
        "NoSuchKey"
    );
}

#[tokio::test]
async fn metadata_lives_outside_the_bucket_and_goes_stale_with_the_file() {
    let (dir, s) = store();
    s.create_bucket("bk1").unwrap();
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        metadata: [("color".to_string(), "blue".to_string())].into(),
        content_md5: None,
        sse: None,
    };
    s.put_with("bk1", "k", b("one"), opts).await.unwrap();
    let info = s.head("bk1", "k").await.unwrap();
    assert_eq!(info.content_type, "text/plain");
    assert_eq!(info.metadata["color"], "blue");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("objects/bk1"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["k"]);
    // Rewritten by another writer: the stored metadata no longer applies.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(dir.path().join("objects/bk1/k"), b"other bytes").unwrap();
    let info = s.head("bk1", "k").await.unwrap();
    assert_eq!(info.content_type, DEFAULT_CONTENT_TYPE);
    assert_eq!(
        info.etag,
        format!("\"{}\"", hex::encode(Md5::digest(b"other bytes")))
    );
    assert!(info.metadata.is_empty());
}

#[tokio::test]
async fn streamed_reads_are_the_file_or_its_range() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    s.put_object("bk1", "big", Bytes::from(data.clone()))
        .await
        .unwrap();
    let collect = |mut stream: BodyStream| async move {
        let mut out = Vec::new();
        while let Some(piece) = next(&mut stream).await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    };
    let (info, len, span, stream) = s.get_stream("bk1", "big", None).await.unwrap();
    assert_eq!((info.size, len, span), (700_000, 700_000, None));
    assert!(collect(stream).await == data);
    let range = RangeSpec::parse("bytes=300000-600000");
    let (_, len, span, stream) = s.get_stream("bk1", "big", range).await.unwrap();
    assert_eq!((len, span), (300_001, Some((300_000, 600_000))));
    assert!(collect(stream).await == data[300_000..=600_000]);
    assert_eq!(
        s.get_stream("bk1", "nope", None)
            .await
            .err()
            .map(|e| e.code()),
        Some("NoSuchKey")
    );
}

#[tokio::test]
async fn a_foreign_file_is_an_object() {
    let (dir, s) = store();
    s.create_bucket("fh1").unwrap();
    let path = dir.path().join("objects/fh1/2026/12/03/x");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"delivered\n").unwrap();
    let listing = s
        .list(
            "fh1",
            ListQuery {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&listing), ["2026/12/03/x"]);
    let Entry::Object(o) = &listing.entries[0] else {
        panic!()
    };
    assert_eq!(
        o.etag,
        format!("\"{}\"", hex::encode(Md5::digest(b"delivered\n")))
    );
    assert_eq!(
        o.last_modified,
        std::fs::metadata(&path).unwrap().modified().unwrap()
    );
    let (_, bytes, _) = s.get("fh1", "2026/12/03/x", None).await.unwrap();
    assert_eq!(&bytes[..], b"delivered\n");
}

#[tokio::test]
async fn keys_that_would_leave_the_bucket_are_refused() {
    let (dir, s) = store();
    s.create_bucket("bk1").unwrap();
    s.create_bucket("bk2").unwrap();
    for key in [
        "../b2/x",
        "a/../../b2/x",
        "..",
        ".",
        "a/./b",
        "/abs",
        "a//b",
        "dir/",
        "nul\0byte",
        "back\\slash",
        "staged#1",
        "",
    ] {
        let e = s.put_object("bk1", key, b("x")).await.unwrap_err();
        assert_eq!(e.code(), "InvalidArgument", "{key:?}");
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        assert!(s.get("bk1", key, None).await.is_err());
        assert!(s.delete("bk1", key).await.is_err());
    }
    assert_eq!(
        s.put_object("bk1", &"k".repeat(1025), b("x"))
            .await
            .unwrap_err()
            .code(),
        "KeyTooLongError"
    );
    // Nothing was written anywhere.
    assert!(
        std::fs::read_dir(dir.path().join("objects/bk2"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(
        std::fs::read_dir(dir.path().join("objects/bk1"))
            .unwrap()
            .next()
            .is_none()
    );
    // Odd but legal names are kept as they are.
    for key in ["a b", "100%", "ü/ñ", "x#y", "a..b", "#", "sp ace/q?x=1&y"] {
        s.put_object("bk1", key, b(key)).await.unwrap();
        assert_eq!(s.get("bk1", key, None).await.unwrap().1, b(key), "{key}");
        assert!(dir.path().join("objects/bk1").join(key).is_file(), "{key}");
    }
    // A key under an existing object's name cannot be a directory too.
    s.put_object("bk1", "leaf", b("x")).await.unwrap();
    assert_eq!(
        s.put_object("bk1", "leaf/child", b("x"))
            .await
            .unwrap_err()
            .code(),
        "InvalidArgument"
    );
}

#[tokio::test]
async fn a_symlink_never_leads_a_read_out_of_the_bucket() {
    let (dir, s) = store();
    s.create_bucket("bk1").unwrap();
    let outside = dir.path().join("secret");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("passwd"), b"root").unwrap();
    let bucket = dir.path().join("objects/bk1");
    std::os::unix::fs::symlink(&outside, bucket.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("passwd"), bucket.join("file")).unwrap();
    for key in ["link/passwd", "file"] {
        assert_eq!(
            s.head("bk1", key).await.unwrap_err().code(),
            "NoSuchKey",
            "{key}"
        );
        assert_eq!(
            s.get_stream("bk1", key, None).await.err().map(|e| e.code()),
            Some("NoSuchKey")
        );
    }
    let l = s
        .list(
            "bk1",
            ListQuery {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(l.entries.is_empty(), "{l:?}");
}

#[tokio::test]
async fn listings_are_ordered_rolled_up_and_paged() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    for k in ["b", "a/2", "a/1", "a-x", "c/d/e", "c/f", "aa", "a/3/4"] {
        s.put_object("bk1", k, b(k)).await.unwrap();
    }
    let all = |prefix, delimiter, after, max_keys| ListQuery {
        prefix,
        delimiter,
        after,
        max_keys,
    };
    let l = s.list("bk1", all("", None, None, 1000)).await.unwrap();
    // Byte order: '-' (0x2d) < '/' (0x2f) < 'a'.
    assert_eq!(
        keys(&l),
        ["a-x", "a/1", "a/2", "a/3/4", "aa", "b", "c/d/e", "c/f"]
    );
    assert!(!l.truncated);
    let l = s.list("bk1", all("", Some("/"), None, 1000)).await.unwrap();
    assert_eq!(keys(&l), ["a-x", "a/*", "aa", "b", "c/*"]);
    let l = s
        .list("bk1", all("a/", Some("/"), None, 1000))
        .await
        .unwrap();
    assert_eq!(keys(&l), ["a/1", "a/2", "a/3/*"]);
    let l = s.list("bk1", all("c", None, None, 1000)).await.unwrap();
    assert_eq!(keys(&l), ["c/d/e", "c/f"]);
    // Pages: max-keys counts keys and prefixes; a page after a common
    // prefix skips everything under it.
    let p1 = s.list("bk1", all("", Some("/"), None, 2)).await.unwrap();
    assert_eq!(keys(&p1), ["a-x", "a/*"]);
    assert!(p1.truncated);
    let p2 = s
        .list("bk1", all("", Some("/"), p1.last(), 2))
        .await
        .unwrap();
    assert_eq!(keys(&p2), ["aa", "b"]);
    assert!(p2.truncated);
    let p3 = s
        .list("bk1", all("", Some("/"), p2.last(), 2))
        .await
        .unwrap();
    assert_eq!(keys(&p3), ["c/*"]);
    assert!(!p3.truncated);
    let l = s.list("bk1", all("", None, Some("a/2"), 3)).await.unwrap();
    assert_eq!(keys(&l), ["a/3/4", "aa", "b"]);
    assert!(l.truncated);
    let l = s.list("bk1", all("", None, None, 0)).await.unwrap();
    assert!(l.entries.is_empty());
    assert!(l.truncated);
    let l = s.list("bk1", all("../", None, None, 10)).await.unwrap();
    assert!(l.entries.is_empty());
    assert_eq!(
        s.list("nob", all("", None, None, 1))
            .await
            .unwrap_err()
            .code(),
        "NoSuchBucket"
    );
}

#[test]
fn ranges_parse_as_s3_reads_them() {
    assert_eq!(
        RangeSpec::parse("bytes=0-9"),
        Some(RangeSpec::From(0, Some(9)))
    );
    assert_eq!(RangeSpec::parse("bytes=5-"), Some(RangeSpec::From(5, None)));
    assert_eq!(RangeSpec::parse("bytes=-3"), Some(RangeSpec::Suffix(3)));
    assert_eq!(RangeSpec::parse("bytes=0-1,3-4"), None);
    assert_eq!(RangeSpec::parse("items=0-1"), None);
    assert_eq!(RangeSpec::parse("bytes=5-1"), None);
    assert_eq!(RangeSpec::From(0, Some(99)).resolve(10).unwrap(), (0, 9));
    assert_eq!(RangeSpec::Suffix(3).resolve(10).unwrap(), (7, 9));
    assert_eq!(RangeSpec::Suffix(30).resolve(10).unwrap(), (0, 9));
    assert!(RangeSpec::From(10, None).resolve(10).is_err());
    assert!(RangeSpec::Suffix(1).resolve(0).is_err());
}

#[tokio::test]
async fn content_md5_mismatch_keeps_the_old_object() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    s.put_object("bk1", "k", b("old")).await.unwrap();
    let opts = PutOptions {
        content_md5: Some([0; 16]),
        ..Default::default()
    };
    assert_eq!(
        s.put_with("bk1", "k", b("new"), opts)
            .await
            .unwrap_err()
            .code(),
        "BadDigest"
    );
    assert_eq!(s.get("bk1", "k", None).await.unwrap().1, b("old"));
}

#[tokio::test]
async fn multipart_uploads_join_parts_with_s3s_etag() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    let id = s
        .create_upload("bk1", "big", PutOptions::default())
        .await
        .unwrap();
    let part1 = vec![7u8; MIN_PART_BYTES as usize];
    let one = |v: Vec<u8>| -> BodyStream {
        Box::pin(crate::store::tests::OnceBody(Some(Ok(Bytes::from(v)))))
    };
    let e1 = s
        .upload_part("bk1", "big", &id, 1, one(part1.clone()), None)
        .await
        .unwrap();
    let e2 = s
        .upload_part("bk1", "big", &id, 2, one(b"tail".to_vec()), None)
        .await
        .unwrap();
    let parts = s.list_parts("bk1", "big", &id).await.unwrap();
    assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        s.complete_upload("bk1", "big", &id, &[(2, e2.clone()), (1, e1.clone())])
            .await
            .unwrap_err()
            .code(),
        "InvalidPartOrder"
    );
    assert_eq!(
        s.complete_upload("bk1", "big", &id, &[(1, "\"00\"".into())])
            .await
            .unwrap_err()
            .code(),
        "InvalidPart"
    );
    let info = s
        .complete_upload("bk1", "big", &id, &[(1, e1.clone()), (2, e2.clone())])
        .await
        .unwrap();
    let mut md5s = Vec::new();
    md5s.extend(Md5::digest(&part1));
    md5s.extend(Md5::digest(b"tail"));
    assert_eq!(
        info.etag,
        format!("\"{}-2\"", hex::encode(Md5::digest(&md5s)))
    );
    assert_eq!(info.size, MIN_PART_BYTES + 4);
    // The ETag survives a re-read (it is not the MD5 of the bytes).
    assert_eq!(s.head("bk1", "big").await.unwrap().etag, info.etag);
    assert_eq!(
        s.list_parts("bk1", "big", &id).await.unwrap_err().code(),
        "NoSuchUpload"
    );
    assert_eq!(
        s.abort_upload("bk1", "big", "../../x")
            .await
            .unwrap_err()
            .code(),
        "NoSuchUpload"
    );
    let id2 = s
        .create_upload("bk1", "small", PutOptions::default())
        .await
        .unwrap();
    s.abort_upload("bk1", "small", &id2).await.unwrap();
    assert_eq!(
        s.abort_upload("bk1", "small", &id2)
            .await
            .unwrap_err()
            .code(),
        "NoSuchUpload"
    );
}

pub(crate) struct OnceBody(pub Option<Result<Bytes, ripstream_api::BoxError>>);

impl futures_core::Stream for OnceBody {
    type Item = Result<Bytes, ripstream_api::BoxError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.take())
    }
}

#[tokio::test]
async fn copies_go_file_to_file_and_keep_etag_and_metadata() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    s.create_bucket("bk2").unwrap();
    // A few MiB, varied so a wrong offset would show.
    let big: Vec<u8> = (0..(3 << 20) + 17).map(|i: u32| (i % 251) as u8).collect();
    let mut meta = BTreeMap::new();
    meta.insert("colour".to_string(), "blue".to_string());
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        metadata: meta.clone(),
        content_md5: None,
        sse: None,
    };
    let src = s
        .put_with("bk1", "src", Bytes::from(big.clone()), opts)
        .await
        .unwrap();
    let copied = s
        .copy(("bk1", "src"), ("bk2", "a/b/dst"), None, None)
        .await
        .unwrap();
    assert_eq!(copied.etag, src.etag);
    assert_eq!(copied.size, big.len() as u64);
    assert_eq!(copied.content_type, "text/plain");
    assert_eq!(copied.metadata, meta);
    let (info, bytes, _) = s.get("bk2", "a/b/dst", None).await.unwrap();
    assert_eq!(info.etag, src.etag);
    assert!(bytes == big);
    // No staging file is left beside it.
    let names: Vec<String> = std::fs::read_dir(s.root().join("bk2/a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["dst"]);
    // Replacing the metadata; copying onto a path an object blocks.
    let replaced = s
        .copy(
            ("bk1", "src"),
            ("bk1", "src2"),
            Some(PutOptions::default()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(replaced.content_type, DEFAULT_CONTENT_TYPE);
    assert!(replaced.metadata.is_empty());
    assert_eq!(
        s.copy(("bk1", "src"), ("bk1", "src/under"), None, None)
            .await
            .unwrap_err()
            .code(),
        "InvalidArgument"
    );
    assert_eq!(
        s.copy(("bk1", "none"), ("bk1", "x"), None, None)
            .await
            .unwrap_err()
            .code(),
        "NoSuchKey"
    );
}

#[tokio::test]
async fn a_key_segment_too_long_for_a_file_name_is_key_too_long() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    let long = "a".repeat(256);
    for key in [long.clone(), format!("dir/{long}"), format!("{long}/x")] {
        let err = s.put_object("bk1", &key, b("x")).await.unwrap_err();
        assert_eq!(err.code(), "KeyTooLongError", "{key}");
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }
    // The longest segment the layout holds is written and read back.
    let fits = format!("d/{}", "b".repeat(MAX_SEGMENT_BYTES));
    s.put_object("bk1", &fits, b("ok")).await.unwrap();
    assert_eq!(s.get("bk1", &fits, None).await.unwrap().1, b("ok"));
}

#[tokio::test]
async fn parts_are_listed_from_their_sidecars_and_old_parts_are_hashed() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    let id = s
        .create_upload("bk1", "k", PutOptions::default())
        .await
        .unwrap();
    let one = |v: Vec<u8>| -> BodyStream { Box::pin(OnceBody(Some(Ok(Bytes::from(v))))) };
    let part1: Vec<u8> = (0..MIN_PART_BYTES as u32 + 3)
        .map(|i| (i % 253) as u8)
        .collect();
    let e1 = s
        .upload_part("bk1", "k", &id, 1, one(part1.clone()), None)
        .await
        .unwrap();
    let e2 = s
        .upload_part("bk1", "k", &id, 2, one(b"tail".to_vec()), None)
        .await
        .unwrap();
    let dir = s.root().join(".meta/uploads/bk1").join(&id);
    // The sidecar is what ListParts answers from: a (fake) ETag recorded
    // for the part's very file is answered as is, without the bytes read.
    let side: PartMeta =
        serde_json::from_slice(&std::fs::read(dir.join("1.json")).unwrap()).unwrap();
    assert_eq!(side.etag, e1);
    assert_eq!(side.size, part1.len() as u64);
    let forged = PartMeta {
        etag: "\"forged\"".into(),
        ..side.clone()
    };
    std::fs::write(dir.join("1.json"), serde_json::to_vec(&forged).unwrap()).unwrap();
    assert_eq!(
        s.list_parts("bk1", "k", &id).await.unwrap()[0].etag,
        "\"forged\""
    );
    std::fs::write(dir.join("1.json"), serde_json::to_vec(&side).unwrap()).unwrap();
    // A part uploaded before sidecars existed is hashed.
    std::fs::remove_file(dir.join("2.json")).unwrap();
    let parts = s.list_parts("bk1", "k", &id).await.unwrap();
    assert_eq!(parts[1].etag, e2);
    let info = s
        .complete_upload("bk1", "k", &id, &[(1, e1), (2, e2)])
        .await
        .unwrap();
    assert_eq!(info.size, part1.len() as u64 + 4);
    let mut want = part1;
    want.extend_from_slice(b"tail");
    assert!(s.get("bk1", "k", None).await.unwrap().1 == want);
}

#[tokio::test]
async fn puts_and_parts_past_the_size_limit_are_entity_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let s = Objects::open(dir.path()).unwrap().with_max_put_bytes(1024);
    s.create_bucket("bk1").unwrap();
    let err = s
        .put_object("bk1", "k", Bytes::from(vec![1u8; 1025]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "EntityTooLarge");
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    s.put_object("bk1", "k", Bytes::from(vec![1u8; 1024]))
        .await
        .unwrap();
    let one = |v: Vec<u8>| -> BodyStream { Box::pin(OnceBody(Some(Ok(Bytes::from(v))))) };
    let err = s
        .put_stream("bk1", "k", one(vec![2u8; 2048]), PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "EntityTooLarge");
    // The old object stays, and no staging file is left.
    assert_eq!(s.head("bk1", "k").await.unwrap().size, 1024);
    let id = s
        .create_upload("bk1", "m", PutOptions::default())
        .await
        .unwrap();
    let err = s
        .upload_part("bk1", "m", &id, 1, one(vec![3u8; 1025]), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "EntityTooLarge");
    assert!(s.list_parts("bk1", "m", &id).await.unwrap().is_empty());
    for n in [0, MAX_PARTS + 1] {
        let err = s
            .upload_part("bk1", "m", &id, n, one(vec![3u8; 1]), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "InvalidArgument");
    }
    let too_many: Vec<(u32, String)> = (1..=MAX_PARTS + 1).map(|n| (n, "\"x\"".into())).collect();
    assert_eq!(
        s.complete_upload("bk1", "m", &id, &too_many)
            .await
            .unwrap_err()
            .code(),
        "InvalidArgument"
    );
    let names: Vec<String> = std::fs::read_dir(s.root().join("bk1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["k"]);
}

fn staged_left(dir: &FsPath) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains('#'))
        .collect()
}

#[tokio::test]
async fn a_key_that_is_a_directory_or_under_an_object_is_refused_before_writing() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    s.put_object("bk1", "k/x", b("x")).await.unwrap();
    let one = |v: &[u8]| -> BodyStream { Box::pin(OnceBody(Some(Ok(Bytes::copy_from_slice(v))))) };
    // `k` is a directory (k/x's): no write to it may start.
    for err in [
        s.put_object("bk1", "k", b("y")).await.unwrap_err(),
        s.put_stream("bk1", "k", one(b"y"), PutOptions::default())
            .await
            .unwrap_err(),
        s.create_upload("bk1", "k", PutOptions::default())
            .await
            .unwrap_err(),
        s.put_object("bk1", "k/x/under", b("y")).await.unwrap_err(),
    ] {
        assert_eq!(err.code(), "InvalidArgument");
    }
    // An upload begun before the directory appeared completes with the
    // error and leaves no staging file.
    let id = s
        .create_upload("bk1", "m", PutOptions::default())
        .await
        .unwrap();
    let e1 = s
        .upload_part("bk1", "m", &id, 1, one(b"part"), None)
        .await
        .unwrap();
    s.put_object("bk1", "m/x", b("x")).await.unwrap();
    let err = s
        .complete_upload("bk1", "m", &id, &[(1, e1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InvalidArgument");
    assert_eq!(staged_left(&s.root().join("bk1")), Vec::<String>::new());
    assert_eq!(s.get("bk1", "k/x", None).await.unwrap().1, b("x"));
}

/// A body that makes `dir` (blocking the key's file) once it is read: the
/// write passed its checks, and its rename then fails.
struct BlockingBody(Option<PathBuf>);

impl futures_core::Stream for BlockingBody {
    type Item = Result<Bytes, ripstream_api::BoxError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.take().map(|dir| {
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            Ok(Bytes::from_static(b"body"))
        }))
    }
}

#[tokio::test]
async fn a_failed_streamed_write_leaves_no_staging_file() {
    let (_dir, s) = store();
    s.create_bucket("bk1").unwrap();
    let body: BodyStream = Box::pin(BlockingBody(Some(s.root().join("bk1/k"))));
    let err = s
        .put_stream("bk1", "k", body, PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InvalidArgument", "{err:?}");
    assert_eq!(staged_left(&s.root().join("bk1")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_bucket_never_removes_an_acknowledged_write() {
    let (_dir, s) = store();
    for round in 0..40 {
        s.create_bucket("race").unwrap();
        let go = Arc::new(tokio::sync::Barrier::new(9));
        let mut puts = Vec::new();
        for i in 0..8 {
            let (s, go) = (s.clone(), go.clone());
            puts.push(tokio::spawn(async move {
                go.wait().await;
                let key = format!("k{i}/o");
                if i % 2 == 0 {
                    s.put_object("race", &key, b("x")).await.map(|_| key)
                } else {
                    let id = s.create_upload("race", &key, PutOptions::default()).await?;
                    let body: BodyStream = Box::pin(OnceBody(Some(Ok(b("y")))));
                    let etag = s.upload_part("race", &key, &id, 1, body, None).await?;
                    s.complete_upload("race", &key, &id, &[(1, etag)])
                        .await
                        .map(|_| key)
                }
            }));
        }
        let deleted = {
            let (s, go) = (s.clone(), go.clone());
            tokio::spawn(async move {
                go.wait().await;
                tokio::task::yield_now().await;
                s.delete_bucket("race").await
            })
        };
        let mut acked = Vec::new();
        for p in puts {
            if let Ok(key) = p.await.unwrap() {
                acked.push(key);
            }
        }
        match deleted.await.unwrap() {
            Ok(()) => {
                assert!(acked.is_empty(), "round {round}: deleted over {acked:?}");
                assert!(!s.bucket_exists("race"));
            }
            Err(e) => {
                assert_eq!(e.code(), "BucketNotEmpty", "round {round}");
                for key in &acked {
                    s.head("race", key).await.unwrap();
                }
                for key in acked {
                    s.delete("race", &key).await.unwrap();
                }
                // Uploads the delete overtook may be left; the bucket
                // goes with them.
                s.delete_bucket("race").await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_listing_page_walks_a_bounded_part_of_a_large_tree() {
    let (dir, s) = store();
    s.create_bucket("big").unwrap();
    // 40 directories of 40 objects (foreign files are objects too), and
    // files beside them whose names sort between the directories' keys.
    let root = dir.path().join("objects/big");
    let mut all = Vec::new();
    for d in 0..40 {
        std::fs::create_dir(root.join(format!("d{d:02}"))).unwrap();
        for f in 0..40 {
            let key = format!("d{d:02}/f{f:02}");
            std::fs::write(root.join(&key), b"x").unwrap();
            all.push(key);
        }
        let key = format!("d{d:02}-x");
        std::fs::write(root.join(&key), b"x").unwrap();
        all.push(key);
    }
    all.sort();
    let total = 40 * 41 + 40;
    let q = |after, delimiter, max_keys| ListQuery {
        prefix: "",
        delimiter,
        after,
        max_keys,
    };
    let first = s.list("big", q(None, None, 10)).await.unwrap();
    assert_eq!(keys(&first), all[..10]);
    assert!(first.truncated);
    // The root and the first directory.
    assert!(first.scanned() <= 80 + 40, "{}", first.scanned());
    // Paging from the middle skips the subtrees before it unopened.
    let mid = s.list("big", q(Some("d20/f35"), None, 10)).await.unwrap();
    let at = all.iter().position(|k| k == "d20/f35").unwrap();
    assert_eq!(keys(&mid), all[at + 1..at + 11]);
    assert!(mid.scanned() <= 80 + 3 * 40, "{}", mid.scanned());
    // Rolled up: each common prefix costs its directory's names, once.
    let rolled = s.list("big", q(None, Some("/"), 6)).await.unwrap();
    assert_eq!(
        keys(&rolled),
        ["d00-x", "d00/*", "d01-x", "d01/*", "d02-x", "d02/*"]
    );
    assert!(rolled.scanned() <= 80 + 4 * 40, "{}", rolled.scanned());
    // Page by page, every key once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .list(
                "big",
                ListQuery {
                    prefix: "",
                    delimiter: None,
                    after: after.as_deref(),
                    max_keys: 100,
                },
            )
            .await
            .unwrap();
        assert!(page.scanned() <= 80 + 5 * 40, "{}", page.scanned());
        seen.extend(keys(&page));
        if !page.truncated {
            break;
        }
        after = page.last().map(String::from);
    }
    assert_eq!(seen, all);
    assert!(total > 1000);
}

#[tokio::test]
async fn a_meta_segment_is_refused() {
    let (_dir, s) = store();
    s.create_bucket("bkm").unwrap();
    for key in [".meta", "a/.meta", ".meta/x"] {
        let e = s.put_object("bkm", key, b("x")).await.unwrap_err();
        assert_eq!(e.code(), "InvalidArgument", "{key}");
    }
    assert!(!valid_bucket_name(".meta"));
}

#[tokio::test]
async fn incomplete_multipart_uploads_expire() {
    let (_dir, s) = store();
    let s = s.with_upload_expiry(Duration::from_millis(300));
    s.create_bucket("mpu").unwrap();
    let old = s
        .create_upload("mpu", "old", PutOptions::default())
        .await
        .unwrap();
    let body: BodyStream = Box::pin(OnceBody(Some(Ok(b("part")))));
    s.upload_part("mpu", "old", &old, 1, body, None)
        .await
        .unwrap();
    assert_eq!(s.expire_uploads().unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let young = s
        .create_upload("mpu", "young", PutOptions::default())
        .await
        .unwrap();
    // The background sweep deletes the old one (parts and all) only.
    let sweep = tokio::spawn(s.background());
    let mut gone = false;
    for _ in 0..100 {
        if s.list_parts("mpu", "old", &old).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone);
    assert_eq!(
        s.list_parts("mpu", "old", &old).await.unwrap_err().code(),
        "NoSuchUpload"
    );
    assert!(s.list_parts("mpu", "young", &young).await.is_ok());
    sweep.abort();
    assert!(!s.uploads_dir("mpu").join(&old).exists());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(s.expire_uploads().unwrap(), 1);
    assert!(s.list_parts("mpu", "young", &young).await.is_err());
}

#[tokio::test]
async fn an_opened_object_streams_the_version_its_info_describes() {
    let (_dir, s) = store();
    s.create_bucket("ver").unwrap();
    let v1 = s.put_object("ver", "k", b("first")).await.unwrap();
    let opened = s.open_object("ver", "k").await.unwrap();
    assert_eq!(opened.info.etag, v1.etag);
    // Overwritten after the conditions were judged on `opened.info`.
    let v2 = s.put_object("ver", "k", b("second!")).await.unwrap();
    assert_ne!(v1.etag, v2.etag);
    let (info, len, _, mut stream) = opened.stream(None).await.unwrap();
    assert_eq!((info.etag, len), (v1.etag, 5));
    let mut got = Vec::new();
    while let Some(piece) = next(&mut stream).await {
        got.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(got, b"first");
}

#[tokio::test]
async fn metadata_under_an_old_md5_name_is_read_and_moved() {
    let (_dir, s) = store();
    s.create_bucket("old").unwrap();
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        ..PutOptions::default()
    };
    s.put_with("old", "a/b", b("x"), opts).await.unwrap();
    let (new, legacy) = (s.meta_path("old", "a/b"), s.legacy_meta_path("old", "a/b"));
    assert_eq!(new.file_name().unwrap().len(), 64);
    std::fs::rename(&new, &legacy).unwrap();
    assert_eq!(
        s.head("old", "a/b").await.unwrap().content_type,
        "text/plain"
    );
    assert!(new.is_file() && !legacy.exists());
    s.delete("old", "a/b").await.unwrap();
    assert!(!new.exists());
}

// ------------------------------------------------------------ encryption

const KEYS: &str = r#"
[[key]]
id = "s3-managed"
aliases = ["alias/aws/s3"]
material = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="

[[key]]
id = "sse-s3"
aliases = ["alias/ripstream/sse-s3"]
material = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="

[[key]]
id = "app"
aliases = ["alias/app"]
material = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="

[[key]]
id = "off"
material = "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ="
enabled = false
"#;

fn ring(text: &str) -> Arc<Keyring> {
    Arc::new(Keyring::parse(text, "us-east-1", "000000000000").unwrap())
}

fn sealed_store() -> (tempfile::TempDir, Objects) {
    let (dir, s) = store();
    (dir, s.with_keyring(ring(KEYS)))
}

fn kms(key: Option<&str>) -> PutOptions {
    PutOptions {
        sse: Some(Sse::Kms(key.map(String::from))),
        ..PutOptions::default()
    }
}

/// A body arriving in the given pieces.
struct Pieces(std::collections::VecDeque<Bytes>);

impl futures_core::Stream for Pieces {
    type Item = Result<Bytes, ripstream_api::BoxError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

fn pieces(data: &[u8], size: usize) -> BodyStream {
    Box::pin(Pieces(
        data.chunks(size).map(Bytes::copy_from_slice).collect(),
    ))
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

async fn read_all(mut stream: BodyStream) -> Result<Vec<u8>, ripstream_api::BoxError> {
    let mut out = Vec::new();
    while let Some(piece) = next(&mut stream).await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn sse_kms_objects_are_sealed_on_disk_and_ranges_open_only_their_chunks() {
    let (dir, s) = sealed_store();
    s.create_bucket("enc").unwrap();
    let chunk = ripstream_keyring::CHUNK;
    let data = pattern(3 * chunk + 77);
    let info = s
        .put_stream("enc", "k", pieces(&data, 10_007), kms(Some("alias/app")))
        .await
        .unwrap();
    let enc = info.encryption.clone().unwrap();
    assert_eq!(enc.algorithm, "aws:kms");
    assert_eq!(
        enc.key_arn.as_deref(),
        Some("arn:aws:kms:us-east-1:000000000000:key/app")
    );
    assert_eq!(info.size, data.len() as u64);
    // S3: an SSE-KMS object's ETag is not the MD5 of its data.
    assert_ne!(
        info.etag,
        format!("\"{}\"", hex::encode(Md5::digest(&data)))
    );
    let on_disk = std::fs::read(dir.path().join("objects/enc/k")).unwrap();
    assert!(!contains(&on_disk, &data[chunk..chunk + 64]));
    let h = ripstream_keyring::header_len(&on_disk).unwrap();
    assert_eq!(
        on_disk.len() as u64,
        h as u64 + ripstream_keyring::sealed_len(data.len() as u64)
    );
    let head = s.head("enc", "k").await.unwrap();
    assert_eq!((head.size, &head.etag), (info.size, &info.etag));
    assert_eq!(head.encryption, Some(enc));
    let (_, whole, _) = s.get("enc", "k", None).await.unwrap();
    assert_eq!(&whole[..], &data[..]);
    let last = data.len() as u64 - 1;
    for (a, z) in [
        (chunk as u64 - 5, chunk as u64 + 5),
        (chunk as u64, 2 * chunk as u64 - 1),
        (1, 1),
        (2 * chunk as u64 + 3, last),
    ] {
        let (_, got, span) = s
            .get("enc", "k", Some(RangeSpec::From(a, Some(z))))
            .await
            .unwrap();
        assert_eq!(span, Some((a, z)));
        assert_eq!(&got[..], &data[a as usize..=z as usize], "{a}-{z}");
        let (_, len, _, stream) = s
            .get_stream("enc", "k", Some(RangeSpec::From(a, Some(z))))
            .await
            .unwrap();
        assert_eq!(len, z - a + 1);
        assert_eq!(
            read_all(stream).await.unwrap(),
            &data[a as usize..=z as usize]
        );
    }
    let (_, got, _) = s
        .get("enc", "k", Some(RangeSpec::Suffix(100)))
        .await
        .unwrap();
    assert_eq!(&got[..], &data[data.len() - 100..]);
    // No key id: the AWS-managed alias/aws/s3. SSE-S3: the plaintext's
    // MD5 as ETag, and no key named.
    let info = s.put_with("enc", "d", b("x"), kms(None)).await.unwrap();
    assert_eq!(
        info.encryption.unwrap().key_arn.as_deref(),
        Some("arn:aws:kms:us-east-1:000000000000:key/s3-managed")
    );
    let opts = PutOptions {
        sse: Some(Sse::S3),
        ..PutOptions::default()
    };
    let info = s.put_with("enc", "s3", b("hello"), opts).await.unwrap();
    assert_eq!(info.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
    let e = info.encryption.unwrap();
    assert_eq!((e.algorithm.as_str(), e.key_arn), ("AES256", None));
    assert_ne!(
        std::fs::read(dir.path().join("objects/enc/s3")).unwrap(),
        b"hello"
    );
    assert_eq!(&s.get("enc", "s3", None).await.unwrap().1[..], b"hello");
    // An empty object is one sealed (empty) chunk.
    s.put_with("enc", "empty", Bytes::new(), kms(None))
        .await
        .unwrap();
    let (info, got, _) = s.get("enc", "empty", None).await.unwrap();
    assert_eq!((info.size, got.len()), (0, 0));
}

#[tokio::test]
async fn unknown_and_disabled_keys_are_s3s_kms_errors() {
    let (dir, s) = sealed_store();
    s.create_bucket("enc").unwrap();
    let err = s
        .put_with("enc", "k", b("x"), kms(Some("alias/none")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.status().as_u16()),
        ("KMS.NotFoundException", 400)
    );
    assert_eq!(err.to_string(), "Invalid keyId alias/none");
    let err = s
        .put_stream("enc", "k", pieces(b"x", 1), kms(Some("off")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.status().as_u16()),
        ("KMS.DisabledException", 400)
    );
    assert_eq!(
        s.create_upload("enc", "m", kms(Some("alias/none")))
            .await
            .unwrap_err()
            .code(),
        "KMS.NotFoundException"
    );
    assert!(s.head("enc", "k").await.is_err(), "nothing was written");
    // Without a keyring, SSE is refused and sealed objects do not open.
    s.put_with("enc", "k", b("secret"), kms(Some("app")))
        .await
        .unwrap();
    let bare = Objects::open(dir.path()).unwrap();
    assert_eq!(
        bare.put_with("enc", "x", b("x"), kms(None))
            .await
            .unwrap_err()
            .code(),
        "InvalidRequest"
    );
    assert!(bare.get("enc", "k", None).await.is_err());
    // The key disabled, then gone, then other material under its id.
    let disabled = KEYS.replace(
        "aliases = [\"alias/app\"]",
        "aliases = [\"alias/app\"]\nenabled = false",
    );
    let code = |o: Objects| async move {
        let opened = o.open_object("enc", "k").await.unwrap();
        // The info needs no key: HeadObject still answers.
        assert_eq!(opened.info.size, 6);
        let e = opened.stream(None).await.err().unwrap();
        (e.code(), e.status().as_u16())
    };
    let reopen = |t: &str| Objects::open(dir.path()).unwrap().with_keyring(ring(t));
    assert_eq!(
        code(reopen(&disabled)).await,
        ("KMS.DisabledException", 400)
    );
    let gone = KEYS.replace("id = \"app\"", "id = \"other\"");
    assert_eq!(code(reopen(&gone)).await, ("KMS.NotFoundException", 400));
    let other = KEYS.replace(
        "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=",
        "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=",
    );
    assert_eq!(code(reopen(&other)).await, ("InternalError", 500));
}

#[tokio::test]
async fn a_tampered_chunk_fails_the_read_instead_of_answering_other_bytes() {
    let (dir, s) = sealed_store();
    s.create_bucket("enc").unwrap();
    let chunk = ripstream_keyring::CHUNK;
    let data = pattern(2 * chunk + 10);
    s.put_with("enc", "k", Bytes::from(data.clone()), kms(None))
        .await
        .unwrap();
    let path = dir.path().join("objects/enc/k");
    let mut bytes = std::fs::read(&path).unwrap();
    let h = ripstream_keyring::header_len(&bytes).unwrap();
    // A bit of the second chunk, the file's size and mtime kept, so the
    // metadata still describes it.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    bytes[h + chunk + 16 + 3] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // The first chunk still opens; any read that needs the second fails.
    let (_, got, _) = s
        .get("enc", "k", Some(RangeSpec::From(0, Some(99))))
        .await
        .unwrap();
    assert_eq!(&got[..], &data[..100]);
    assert!(s.get("enc", "k", None).await.is_err());
    let (_, _, _, stream) = s
        .get_stream("enc", "k", Some(RangeSpec::From(chunk as u64, None)))
        .await
        .unwrap();
    assert!(read_all(stream).await.is_err());
    // Two objects' chunks swapped: neither opens.
    s.put_with("enc", "a", Bytes::from(data.clone()), kms(None))
        .await
        .unwrap();
    s.put_with("enc", "b", Bytes::from(data.clone()), kms(None))
        .await
        .unwrap();
    let (pa, pb) = (
        dir.path().join("objects/enc/a"),
        dir.path().join("objects/enc/b"),
    );
    let (a, bb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
    let mut mixed = a.clone();
    mixed[h..h + chunk + 16].copy_from_slice(&bb[h..h + chunk + 16]);
    let mtime = std::fs::metadata(&pa).unwrap().modified().unwrap();
    std::fs::write(&pa, &mixed).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&pa)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert!(
        s.get("enc", "a", Some(RangeSpec::From(0, Some(0))))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn copies_decrypt_and_seal_as_their_request_says() {
    let (dir, s) = sealed_store();
    s.create_bucket("enc").unwrap();
    let data = pattern(ripstream_keyring::CHUNK + 5);
    let plain_md5 = format!("\"{}\"", hex::encode(Md5::digest(&data)));
    s.put_with("enc", "src", Bytes::from(data.clone()), kms(Some("app")))
        .await
        .unwrap();
    // No SSE on the copy: stored plain (as S3 without a bucket default).
    let info = s
        .copy(("enc", "src"), ("enc", "plain"), None, None)
        .await
        .unwrap();
    assert_eq!((info.encryption, &info.etag), (None, &plain_md5));
    assert_eq!(
        std::fs::read(dir.path().join("objects/enc/plain")).unwrap(),
        data
    );
    // Plain to SSE-KMS under another key, and to SSE-S3.
    let info = s
        .copy(("enc", "plain"), ("enc", "kms"), None, Some(Sse::Kms(None)))
        .await
        .unwrap();
    assert_eq!(
        info.encryption.unwrap().key_arn.as_deref(),
        Some("arn:aws:kms:us-east-1:000000000000:key/s3-managed")
    );
    assert_ne!(info.etag, plain_md5);
    let info = s
        .copy(("enc", "kms"), ("enc", "aes"), None, Some(Sse::S3))
        .await
        .unwrap();
    assert_eq!(info.etag, plain_md5);
    for k in ["kms", "aes"] {
        assert!(!contains(
            &std::fs::read(dir.path().join("objects/enc").join(k)).unwrap(),
            &data[100..164]
        ));
        assert_eq!(&s.get("enc", k, None).await.unwrap().1[..], &data[..]);
    }
    // The sealed copy's data key is bound to its own name: its file moved
    // over another object's does not open there.
    let kms_file = dir.path().join("objects/enc/kms");
    let stolen = std::fs::read(&kms_file).unwrap();
    s.put_with("enc", "victim", Bytes::from(data.clone()), kms(None))
        .await
        .unwrap();
    let victim = dir.path().join("objects/enc/victim");
    let mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
    assert_eq!(
        std::fs::metadata(&victim).unwrap().len(),
        stolen.len() as u64
    );
    std::fs::write(&victim, &stolen).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        s.get("enc", "victim", None).await.unwrap_err().code(),
        "InternalError"
    );
}

#[tokio::test]
async fn sse_kms_multipart_parts_are_sealed_and_joined_into_one_sealed_object() {
    let (dir, s) = sealed_store();
    s.create_bucket("enc").unwrap();
    let id = s
        .create_upload("enc", "mp", kms(Some("alias/app")))
        .await
        .unwrap();
    let part1 = pattern(MIN_PART_BYTES as usize + 3);
    let part2 = b"the tail of it".to_vec();
    let e1 = s
        .upload_part("enc", "mp", &id, 1, pieces(&part1, 100_003), None)
        .await
        .unwrap();
    // A part's Content-MD5 is of its plaintext.
    let md5 = Md5::digest(&part2).into();
    let e2 = s
        .upload_part("enc", "mp", &id, 2, pieces(&part2, 4), Some(md5))
        .await
        .unwrap();
    let stored =
        std::fs::read(dir.path().join(format!("objects/.meta/uploads/enc/{id}/1"))).unwrap();
    assert!(!contains(&stored, &part1[5000..5064]));
    let parts = s.list_parts("enc", "mp", &id).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| p.size).collect::<Vec<_>>(),
        [part1.len() as u64, part2.len() as u64]
    );
    let info = s
        .complete_upload("enc", "mp", &id, &[(1, e1), (2, e2)])
        .await
        .unwrap();
    assert!(info.etag.ends_with("-2\""), "{}", info.etag);
    let all: Vec<u8> = [part1.clone(), part2.clone()].concat();
    assert_eq!(info.size, all.len() as u64);
    assert_eq!(
        info.encryption.unwrap().key_arn.as_deref(),
        Some("arn:aws:kms:us-east-1:000000000000:key/app")
    );
    let on_disk = std::fs::read(dir.path().join("objects/enc/mp")).unwrap();
    assert!(!contains(&on_disk, &part1[5000..5064]));
    assert!(!contains(&on_disk, b"the tail"));
    let (_, got, _) = s.get("enc", "mp", None).await.unwrap();
    assert!(got[..] == all[..]);
    // Across the parts' boundary.
    let a = part1.len() as u64 - 10;
    let (_, got, _) = s
        .get("enc", "mp", Some(RangeSpec::From(a, None)))
        .await
        .unwrap();
    assert_eq!(&got[..], &all[a as usize..]);
}

#[tokio::test]
async fn a_sealed_object_that_lost_its_record_is_still_read_as_sealed() {
    let (dir, s) = sealed_store();
    s.create_bucket("enc").unwrap();
    let data = pattern(ripstream_keyring::CHUNK + 9);
    let put = s
        .put_with(
            "enc",
            "k",
            Bytes::from(data.clone()),
            kms(Some("alias/app")),
        )
        .await
        .unwrap();
    let aes = PutOptions {
        sse: Some(Sse::S3),
        ..PutOptions::default()
    };
    s.put_with("enc", "s", b("sse-s3 body"), aes).await.unwrap();
    // A crash between the rename into place and the record: every record
    // of the bucket gone.
    let _ = &dir;
    for e in std::fs::read_dir(s.meta_dir("enc")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    for _ in 0..2 {
        let head = s.head("enc", "k").await.unwrap();
        assert_eq!(head.size, data.len() as u64);
        assert_eq!(head.encryption, put.encryption);
        let (_, whole, _) = s.get("enc", "k", None).await.unwrap();
        assert_eq!(&whole[..], &data[..]);
        let sse_s3 = s.head("enc", "s").await.unwrap().encryption.unwrap();
        assert_eq!(
            (sse_s3.algorithm.as_str(), sse_s3.key_arn),
            ("AES256", None)
        );
        let (_, body, _) = s.get("enc", "s", None).await.unwrap();
        assert_eq!(&body[..], b"sse-s3 body");
    }
}

#[tokio::test]
async fn a_copy_judged_on_other_encryption_than_its_source_has_is_refused() {
    let (_dir, s) = sealed_store();
    s.create_bucket("enc").unwrap();
    let put = s
        .put_with("enc", "k", b("secret"), kms(Some("alias/app")))
        .await
        .unwrap();
    // Judged when the source was plaintext; overwritten since under a key.
    let e = s
        .copy_judged(("enc", "k"), ("enc", "c"), None, None, Some(None))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ObjectsError::PreconditionFailed { .. }),
        "{e:?}"
    );
    assert!(s.head("enc", "c").await.is_err(), "nothing copied");
    let info = s
        .copy_judged(("enc", "k"), ("enc", "c"), None, None, Some(put.encryption))
        .await
        .unwrap();
    assert_eq!(info.encryption, None, "the copy is as its request says");
    let (_, got, _) = s.get("enc", "c", None).await.unwrap();
    assert_eq!(&got[..], b"secret");
}

#[tokio::test]
async fn a_missing_sse_s3_key_is_the_servers_failure_not_a_kms_error() {
    let (_dir, s) = store();
    let s = s.with_keyring(ring(
        "[[key]]\nid = \"app\"\naliases = [\"alias/app\"]\nmaterial = \"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\"\n",
    ));
    s.create_bucket("enc").unwrap();
    let opts = PutOptions {
        sse: Some(Sse::S3),
        ..PutOptions::default()
    };
    let e = s.put_with("enc", "k", b("x"), opts).await.unwrap_err();
    assert_eq!(e.code(), "InternalError", "{e:?}");
    let e = s
        .put_with("enc", "k", b("x"), kms(Some("alias/none")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "KMS.NotFoundException");
}

#[tokio::test]
async fn sealed_parts_that_lost_their_sidecars_keep_their_etags() {
    let (_dir, s) = sealed_store();
    s.create_bucket("enc").unwrap();
    let one = |v: Vec<u8>| -> BodyStream { Box::pin(OnceBody(Some(Ok(Bytes::from(v))))) };
    let part1 = pattern(MIN_PART_BYTES as usize + 7);
    for (key, opts) in [
        ("kms", kms(Some("alias/app"))),
        (
            "aes",
            PutOptions {
                sse: Some(Sse::S3),
                ..PutOptions::default()
            },
        ),
    ] {
        let id = s.create_upload("enc", key, opts).await.unwrap();
        let e1 = s
            .upload_part("enc", key, &id, 1, one(part1.clone()), None)
            .await
            .unwrap();
        let e2 = s
            .upload_part("enc", key, &id, 2, one(b"tail".to_vec()), None)
            .await
            .unwrap();
        if key == "aes" {
            // SSE-S3's part ETag is the plaintext's MD5, as S3's is.
            let plain: [u8; 16] = Md5::digest(&part1).into();
            assert_eq!(e1, format!("\"{}\"", hex::encode(plain)));
        }
        // A crash lost both sidecars: the parts are hashed again as their
        // ETags were made, so Complete still matches the client's list.
        let dir = s.root().join(".meta/uploads/enc").join(&id);
        for n in ["1.json", "2.json"] {
            std::fs::remove_file(dir.join(n)).unwrap();
        }
        let parts = s.list_parts("enc", key, &id).await.unwrap();
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.etag.clone(), p.size))
                .collect::<Vec<_>>(),
            [(e1.clone(), part1.len() as u64), (e2.clone(), 4)],
            "{key}"
        );
        s.complete_upload("enc", key, &id, &[(1, e1), (2, e2)])
            .await
            .unwrap();
        let mut want = part1.clone();
        want.extend_from_slice(b"tail");
        assert!(s.get("enc", key, None).await.unwrap().1 == want, "{key}");
    }
}
