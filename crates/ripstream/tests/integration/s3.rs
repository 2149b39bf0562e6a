//! The S3 API subset, driven by the official aws-sdk-s3 (path style)
//! against the real binary: every served operation, S3's errors, ranges,
//! a multi-MiB streamed upload, multipart uploads, and a file written
//! straight into the store's directory as Firehose delivers.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration, Delete, ObjectIdentifier,
};

use crate::support::{TestServer, raw, raw_unsigned};

pub(crate) fn s3(url: &str) -> Client {
    s3_as(url, "AKIDTEST", "secret")
}

pub(crate) fn s3_as(url: &str, key: &str, secret: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn code<E: ProvideErrorMetadata, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .map(String::from)
        .unwrap_or_else(|| "not a service error".into())
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> u16 {
    e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn body(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn buckets_are_created_listed_and_deleted() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket().bucket("alpha").send().await.unwrap();
    c.create_bucket()
        .bucket("beta")
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(srv.data_dir().join("objects/alpha").is_dir());
    let e = c.create_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(code(&e), "BucketAlreadyOwnedByYou");
    let e = c
        .create_bucket()
        .bucket("Bad_Name")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidBucketName");
    let out = c.list_buckets().send().await.unwrap();
    let names: Vec<_> = out.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(out.buckets()[0].creation_date().is_some());
    c.head_bucket().bucket("alpha").send().await.unwrap();
    let e = c.head_bucket().bucket("nope").send().await.unwrap_err();
    assert!(
        e.as_service_error().is_some_and(|s| s.is_not_found()),
        "{e:?}"
    );
    c.put_object()
        .bucket("alpha")
        .key("x")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let e = c.delete_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(code(&e), "BucketNotEmpty");
    c.delete_object()
        .bucket("alpha")
        .key("x")
        .send()
        .await
        .unwrap();
    c.delete_bucket().bucket("alpha").send().await.unwrap();
    let e = c.delete_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");
    let out = c.list_buckets().send().await.unwrap();
    assert_eq!(out.buckets().len(), 1);
}

#[tokio::test]
async fn objects_are_put_read_and_deleted() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket().bucket("data").send().await.unwrap();
    let put = c
        .put_object()
        .bucket("data")
        .key("dir/hello.txt")
        .content_type("text/plain")
        .metadata("color", "blue")
        .body(ByteStream::from_static(b"hello world"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.e_tag(), Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\""));
    // The object is the plain file.
    assert_eq!(
        std::fs::read(srv.data_dir().join("objects/data/dir/hello.txt")).unwrap(),
        b"hello world"
    );
    let head = c
        .head_object()
        .bucket("data")
        .key("dir/hello.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(11));
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.e_tag(), put.e_tag());
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("color"))
            .map(String::as_str),
        Some("blue")
    );
    assert!(head.last_modified().is_some());
    let got = c
        .get_object()
        .bucket("data")
        .key("dir/hello.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(got.e_tag(), put.e_tag());
    assert_eq!(body(got).await, b"hello world");
    // A byte range: 206 with Content-Range.
    let part = c
        .get_object()
        .bucket("data")
        .key("dir/hello.txt")
        .range("bytes=6-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.content_range(), Some("bytes 6-10/11"));
    assert_eq!(part.content_length(), Some(5));
    assert_eq!(body(part).await, b"world");
    let e = c
        .get_object()
        .bucket("data")
        .key("dir/hello.txt")
        .range("bytes=50-60")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRange");
    assert_eq!(status(&e), 416);
    // The error's own header: the size a client can retry within.
    assert_eq!(
        e.raw_response()
            .and_then(|r| r.headers().get("content-range")),
        Some("bytes */11")
    );
    // Conditions.
    let e = c
        .get_object()
        .bucket("data")
        .key("dir/hello.txt")
        .if_match("\"0000\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 412);
    assert_eq!(code(&e), "PreconditionFailed");
    let e = c
        .get_object()
        .bucket("data")
        .key("dir/hello.txt")
        .if_none_match(put.e_tag().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 304);
    // Errors.
    let e = c
        .get_object()
        .bucket("data")
        .key("missing")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error().is_some_and(|s| s.is_no_such_key()),
        "{e:?}"
    );
    assert_eq!(status(&e), 404);
    let e = c
        .get_object()
        .bucket("nobucket")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");
    let e = c
        .head_object()
        .bucket("data")
        .key("missing")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error().is_some_and(|s| s.is_not_found()),
        "{e:?}"
    );
    // Content-MD5 that does not match: BadDigest, the old object stays.
    let e = c
        .put_object()
        .bucket("data")
        .key("dir/hello.txt")
        .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
        .body(ByteStream::from_static(b"other"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "BadDigest");
    let got = c
        .get_object()
        .bucket("data")
        .key("dir/hello.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(body(got).await, b"hello world");
    // Keys that would leave the bucket are refused, never followed.
    let e = c
        .put_object()
        .bucket("data")
        .key("a/../../escape")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument", "{e:?}");
    assert!(!srv.data_dir().join("objects/escape").exists());
    assert!(!srv.data_dir().join("escape").exists());
    // Delete is idempotent (204 both times).
    c.delete_object()
        .bucket("data")
        .key("dir/hello.txt")
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("data")
        .key("dir/hello.txt")
        .send()
        .await
        .unwrap();
    let e = c
        .get_object()
        .bucket("data")
        .key("dir/hello.txt")
        .send()
        .await
        .unwrap_err();
    assert!(e.as_service_error().is_some_and(|s| s.is_no_such_key()));
}

#[tokio::test]
async fn listings_page_and_roll_up_like_s3() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket().bucket("list").send().await.unwrap();
    for k in ["b", "a/2", "a/1", "a-x", "c/d/e", "c/f", "aa", "sp ace+%"] {
        c.put_object()
            .bucket("list")
            .key(k)
            .body(ByteStream::from(k.as_bytes().to_vec()))
            .send()
            .await
            .unwrap();
    }
    let out = c.list_objects_v2().bucket("list").send().await.unwrap();
    let keys: Vec<_> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        ["a-x", "a/1", "a/2", "aa", "b", "c/d/e", "c/f", "sp ace+%"]
    );
    assert_eq!(out.key_count(), Some(8));
    assert_eq!(out.is_truncated(), Some(false));
    assert_eq!(out.contents()[0].size(), Some(3));
    assert!(out.contents()[0].e_tag().is_some());
    let out = c
        .list_objects_v2()
        .bucket("list")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = out.contents().iter().filter_map(|o| o.key()).collect();
    let prefixes: Vec<_> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(keys, ["a-x", "aa", "b", "sp ace+%"]);
    assert_eq!(prefixes, ["a/", "c/"]);
    let out = c
        .list_objects_v2()
        .bucket("list")
        .prefix("c/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    assert_eq!(out.contents().len(), 1);
    assert_eq!(out.common_prefixes()[0].prefix(), Some("c/d/"));
    // Pages of 3 with continuation tokens, then start-after.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let out = c
            .list_objects_v2()
            .bucket("list")
            .max_keys(3)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        assert!(out.key_count().unwrap() <= 3);
        seen.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
        if out.is_truncated() != Some(true) {
            break;
        }
        token = out.next_continuation_token().map(String::from);
        assert!(token.is_some());
    }
    assert_eq!(seen.len(), 8);
    let paged: Vec<String> = c
        .list_objects_v2()
        .bucket("list")
        .into_paginator()
        .page_size(2)
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap()
        .iter()
        .flat_map(|p| {
            p.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from))
        })
        .collect();
    assert_eq!(paged, seen);
    let out = c
        .list_objects_v2()
        .bucket("list")
        .start_after("b")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["c/d/e", "c/f", "sp ace+%"]);
    // ListObjects (v1) with a marker.
    let out = c
        .list_objects()
        .bucket("list")
        .marker("c/f")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["sp ace+%"]);
    let e = c
        .list_objects_v2()
        .bucket("nolist")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");
}

#[tokio::test]
async fn a_multi_mib_body_streams_in() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket().bucket("big").send().await.unwrap();
    // Larger than the front door's buffered-body limit would allow whole.
    let data: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let put = c
        .put_object()
        .bucket("big")
        .key("blob.bin")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    use md5::Digest;
    let want = format!("\"{}\"", hex::encode(md5::Md5::digest(&data)));
    assert_eq!(put.e_tag(), Some(want.as_str()));
    let on_disk = std::fs::read(srv.data_dir().join("objects/big/blob.bin")).unwrap();
    assert!(on_disk == data);
    let got = c
        .get_object()
        .bucket("big")
        .key("blob.bin")
        .send()
        .await
        .unwrap();
    assert!(body(got).await == data);
    let tail = c
        .get_object()
        .bucket("big")
        .key("blob.bin")
        .range("bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(body(tail).await, data[data.len() - 10..]);
}

#[tokio::test]
async fn copy_and_batch_delete() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket().bucket("src").send().await.unwrap();
    c.create_bucket().bucket("dst").send().await.unwrap();
    c.put_object()
        .bucket("src")
        .key("a b.txt")
        .content_type("text/plain")
        .body(ByteStream::from_static(b"copy me"))
        .send()
        .await
        .unwrap();
    let out = c
        .copy_object()
        .bucket("dst")
        .key("copied.txt")
        .copy_source("src/a%20b.txt")
        .send()
        .await
        .unwrap();
    let etag = out
        .copy_object_result()
        .and_then(|r| r.e_tag())
        .unwrap()
        .to_string();
    let got = c
        .get_object()
        .bucket("dst")
        .key("copied.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(got.e_tag(), Some(etag.as_str()));
    assert_eq!(body(got).await, b"copy me");
    let e = c
        .copy_object()
        .bucket("dst")
        .key("x")
        .copy_source("src/missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    for k in ["k1", "k2", "k3"] {
        c.put_object()
            .bucket("dst")
            .key(k)
            .body(ByteStream::from_static(b"."))
            .send()
            .await
            .unwrap();
    }
    let ids = |keys: &[&str]| {
        Delete::builder()
            .set_objects(Some(
                keys.iter()
                    .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
                    .collect(),
            ))
            .build()
            .unwrap()
    };
    let out = c
        .delete_objects()
        .bucket("dst")
        .delete(ids(&["k1", "k2", "never"]))
        .send()
        .await
        .unwrap();
    let deleted: Vec<_> = out.deleted().iter().filter_map(|d| d.key()).collect();
    assert_eq!(deleted, ["k1", "k2", "never"]);
    assert!(out.errors().is_empty());
    let mut quiet = ids(&["k3"]);
    quiet.quiet = Some(true);
    let out = c
        .delete_objects()
        .bucket("dst")
        .delete(quiet)
        .send()
        .await
        .unwrap();
    assert!(out.deleted().is_empty());
    let left = c.list_objects_v2().bucket("dst").send().await.unwrap();
    let keys: Vec<_> = left.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["copied.txt"]);
}

#[tokio::test]
async fn multipart_uploads() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket().bucket("mpu").send().await.unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("mpu")
        .key("joined.bin")
        .content_type("application/x-test")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let part1 = vec![1u8; 5 * 1024 * 1024];
    let part2 = b"the end".to_vec();
    let mut done = Vec::new();
    for (n, data) in [(1, part1.clone()), (2, part2.clone())] {
        let out = c
            .upload_part()
            .bucket("mpu")
            .key("joined.bin")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        done.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    let parts = c
        .list_parts()
        .bucket("mpu")
        .key("joined.bin")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(parts.parts().len(), 2);
    assert_eq!(parts.parts()[1].size(), Some(7));
    let out = c
        .complete_multipart_upload()
        .bucket("mpu")
        .key("joined.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    use md5::Digest;
    let mut md5s = Vec::new();
    md5s.extend(md5::Md5::digest(&part1));
    md5s.extend(md5::Md5::digest(&part2));
    let want = format!("\"{}-2\"", hex::encode(md5::Md5::digest(&md5s)));
    assert_eq!(out.e_tag(), Some(want.as_str()));
    let got = c
        .get_object()
        .bucket("mpu")
        .key("joined.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), Some(want.as_str()));
    assert_eq!(got.content_type(), Some("application/x-test"));
    let bytes = body(got).await;
    assert_eq!(bytes.len(), part1.len() + part2.len());
    assert!(bytes.ends_with(b"the end"));
    // Abort, then the upload is gone.
    let up = c
        .create_multipart_upload()
        .bucket("mpu")
        .key("dropped")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    c.abort_multipart_upload()
        .bucket("mpu")
        .key("dropped")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    let e = c
        .list_parts()
        .bucket("mpu")
        .key("dropped")
        .upload_id(id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
    // Parts are kept outside the bucket: the listing has only the object.
    let left = c.list_objects_v2().bucket("mpu").send().await.unwrap();
    assert_eq!(left.contents().len(), 1);
}

#[tokio::test]
async fn a_file_delivered_into_the_directory_is_an_object() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket()
        .bucket("firehose-out")
        .send()
        .await
        .unwrap();
    let path = srv.data_dir().join("objects/firehose-out/2026/12/03/x");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let out = c
        .list_objects_v2()
        .bucket("firehose-out")
        .prefix("2026/12/")
        .send()
        .await
        .unwrap();
    assert_eq!(out.contents().len(), 1);
    let o = &out.contents()[0];
    assert_eq!(o.key(), Some("2026/12/03/x"));
    assert_eq!(o.size(), Some(100_000));
    use md5::Digest;
    let want = format!("\"{}\"", hex::encode(md5::Md5::digest(&data)));
    assert_eq!(o.e_tag(), Some(want.as_str()));
    let got = c
        .get_object()
        .bucket("firehose-out")
        .key("2026/12/03/x")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("binary/octet-stream"));
    assert_eq!(got.e_tag(), Some(want.as_str()));
    assert!(body(got).await == data);
}

/// A well-formed signature scoped to S3 (anonymous mode checks its form).
const S3_AUTH: &[(&str, &str)] = &[
    (
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
    ),
    ("x-amz-date", "20260101T000000Z"),
];

#[tokio::test]
async fn errors_are_s3_xml() {
    let srv = TestServer::start();
    let r = raw(
        &srv.addr,
        false,
        "GET",
        "/nobucket/key",
        S3_AUTH,
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 404);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("<Error><Code>NoSuchBucket</Code>"), "{text}");
    assert!(text.contains("<BucketName>nobucket</BucketName>"), "{text}");
    assert!(r.headers.contains_key("x-amz-request-id"));
    // An operation of S3 that Ripstream does not serve.
    let r = raw(
        &srv.addr,
        false,
        "GET",
        "/nobucket?acl",
        S3_AUTH,
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 501, "{:?}", String::from_utf8_lossy(&r.body));
    // Virtual-host style reaches the same bucket.
    let c = s3(&srv.url());
    c.create_bucket().bucket("vhost").send().await.unwrap();
    let r = raw(
        &srv.addr,
        false,
        "GET",
        "/?list-type=2",
        &[("host", "vhost.s3.localhost"), S3_AUTH[0], S3_AUTH[1]],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("<Name>vhost</Name>"));
}

const CREDENTIALS: &str = r#"
[[principal]]
name = "admin"
access_key_id = "AKIDS3ADMIN000000001"
secret_access_key = "admin-secret"

[[principal]]
name = "reader"
access_key_id = "AKIDS3READER00000001"
secret_access_key = "reader-secret"
policy = '''{"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": ["arn:aws:s3:::shared", "arn:aws:s3:::shared/public/*"]}, {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::copies/*"}]}'''

[[principal]]
name = "by-operation-name"
access_key_id = "AKIDS3OPNAMES0000001"
secret_access_key = "opnames-secret"
policy = '''{"Statement": [{"Effect": "Allow", "Action": ["s3:HeadObject", "s3:ListObjectsV2", "s3:ListBuckets", "s3:CopyObject"], "Resource": "*"}]}'''
"#;

#[tokio::test]
async fn each_operation_is_authorized_on_its_bucket_or_object() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    let admin = s3_as(&srv.url(), "AKIDS3ADMIN000000001", "admin-secret");
    let reader = s3_as(&srv.url(), "AKIDS3READER00000001", "reader-secret");
    admin.create_bucket().bucket("shared").send().await.unwrap();
    for key in ["public/a.txt", "private/b.txt"] {
        admin
            .put_object()
            .bucket("shared")
            .key(key)
            .body(ByteStream::from_static(b"data"))
            .send()
            .await
            .unwrap();
    }
    let got = reader
        .get_object()
        .bucket("shared")
        .key("public/a.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(body(got).await, b"data");
    reader
        .list_objects_v2()
        .bucket("shared")
        .send()
        .await
        .unwrap();
    let e = reader
        .get_object()
        .bucket("shared")
        .key("private/b.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    assert_eq!(status(&e), 403);
    let e = reader
        .put_object()
        .bucket("shared")
        .key("public/new.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    assert!(
        !srv.data_dir()
            .join("objects/shared/public/new.txt")
            .exists()
    );
    let e = reader.list_buckets().send().await.unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    // HeadObject is S3's `s3:GetObject`.
    reader
        .head_object()
        .bucket("shared")
        .key("public/a.txt")
        .send()
        .await
        .unwrap();
    // CopyObject needs `s3:PutObject` on the target and `s3:GetObject` on
    // the source.
    admin.create_bucket().bucket("copies").send().await.unwrap();
    reader
        .copy_object()
        .bucket("copies")
        .key("a.txt")
        .copy_source("shared/public/a.txt")
        .send()
        .await
        .unwrap();
    let e = reader
        .copy_object()
        .bucket("copies")
        .key("b.txt")
        .copy_source("shared/private/b.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    assert!(!srv.data_dir().join("objects/copies/b.txt").exists());
    // Policies name S3's actions, not its operations: these grant nothing.
    let by_op = s3_as(&srv.url(), "AKIDS3OPNAMES0000001", "opnames-secret");
    let e = by_op
        .head_object()
        .bucket("shared")
        .key("public/a.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 403);
    let e = by_op
        .list_objects_v2()
        .bucket("shared")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = by_op.list_buckets().send().await.unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = by_op
        .delete_objects()
        .bucket("shared")
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("public/a.txt")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // Refused per key, as S3 does: the object is still there.
    assert_eq!(e.errors().len(), 1);
    assert_eq!(e.errors()[0].code(), Some("AccessDenied"));
    assert!(srv.data_dir().join("objects/shared/public/a.txt").exists());
    let e = reader
        .delete_bucket()
        .bucket("shared")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    // A wrong secret never reaches the store.
    let bad = s3_as(&srv.url(), "AKIDS3READER00000001", "wrong");
    let e = bad
        .list_objects_v2()
        .bucket("shared")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "SignatureDoesNotMatch");
}

/// `/health` and `/metrics` are the operator's until a bucket takes the
/// name; a request signed for S3 is S3's from the start. `/_ripstream/`
/// paths (no bucket name has an underscore) never change hands.
#[tokio::test]
async fn a_bucket_named_health_takes_the_short_operator_path() {
    let srv = TestServer::start();
    let r = raw_unsigned(&srv.addr, false, "GET", "/health", &[], Vec::new()).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("\"status\""));
    let c = s3(&srv.url());
    // Signed for S3, so S3 answers although no bucket exists yet.
    let e = c
        .list_objects_v2()
        .bucket("health")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");
    c.create_bucket().bucket("health").send().await.unwrap();
    c.put_object()
        .bucket("health")
        .key("probe.txt")
        .body(ByteStream::from_static(b"up"))
        .send()
        .await
        .unwrap();
    let listed = c.list_objects_v2().bucket("health").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1);
    // Unsigned, `/health` is now the bucket's: S3 asks for a signature.
    let r = raw_unsigned(&srv.addr, false, "GET", "/health", &[], Vec::new()).await;
    assert_ne!(r.status, 200);
    assert!(
        !String::from_utf8_lossy(&r.body).contains("\"status\""),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = raw_unsigned(
        &srv.addr,
        false,
        "GET",
        "/_ripstream/health",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("\"status\""));
    // `/metrics` has no bucket of its name: still the operator's.
    let r = raw_unsigned(&srv.addr, false, "GET", "/metrics", &[], Vec::new()).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("ripstream_requests"));
}

/// ListMultipartUploads: uploads in progress by key, paged by the key and
/// upload-id markers, with prefix and delimiter; completed and aborted
/// ones are gone.
#[tokio::test]
async fn multipart_uploads_in_progress_are_listed_and_paged() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket().bucket("uploads").send().await.unwrap();
    let mut ids = Vec::new();
    for key in ["a/1", "a/2", "b", "b", "c"] {
        let u = c
            .create_multipart_upload()
            .bucket("uploads")
            .key(key)
            .send()
            .await
            .unwrap();
        ids.push((key, u.upload_id().unwrap().to_string()));
    }
    let all = c
        .list_multipart_uploads()
        .bucket("uploads")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = all.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(keys, ["a/1", "a/2", "b", "b", "c"]);
    assert_eq!(all.is_truncated(), Some(false));
    assert!(all.uploads()[0].initiated().is_some());
    // Pages of two, following the markers, see every upload once.
    let mut seen = Vec::new();
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    loop {
        let page = c
            .list_multipart_uploads()
            .bucket("uploads")
            .max_uploads(2)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .unwrap();
        assert!(page.uploads().len() <= 2);
        seen.extend(page.uploads().iter().map(|u| {
            (
                u.key().unwrap().to_string(),
                u.upload_id().unwrap().to_string(),
            )
        }));
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(String::from);
        id_marker = page.next_upload_id_marker().map(String::from);
    }
    let mut want: Vec<(String, String)> = ids
        .iter()
        .map(|(k, i)| (k.to_string(), i.clone()))
        .collect();
    want.sort();
    seen.sort();
    assert_eq!(seen, want);
    // A delimiter rolls `a/` up into one common prefix.
    let rolled = c
        .list_multipart_uploads()
        .bucket("uploads")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<&str> = rolled
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["a/"]);
    assert_eq!(rolled.uploads().len(), 3);
    let only_a = c
        .list_multipart_uploads()
        .bucket("uploads")
        .prefix("a/")
        .send()
        .await
        .unwrap();
    assert_eq!(only_a.uploads().len(), 2);
    // An aborted upload is no longer listed.
    let (key, id) = &ids[4];
    c.abort_multipart_upload()
        .bucket("uploads")
        .key(*key)
        .upload_id(id)
        .send()
        .await
        .unwrap();
    let after = c
        .list_multipart_uploads()
        .bucket("uploads")
        .send()
        .await
        .unwrap();
    assert_eq!(after.uploads().len(), 4);
    let e = c
        .list_multipart_uploads()
        .bucket("nobucket")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");
}

#[tokio::test]
async fn get_bucket_location_answers_the_servers_region() {
    let srv = TestServer::start();
    let c = s3(&srv.url());
    c.create_bucket().bucket("here").send().await.unwrap();
    let out = c.get_bucket_location().bucket("here").send().await.unwrap();
    // us-east-1 is S3's empty LocationConstraint (the Rust SDK reads it as
    // an empty value, as it does from S3).
    assert_eq!(out.location_constraint().map_or("", |l| l.as_str()), "");
    let e = c
        .get_bucket_location()
        .bucket("missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");

    let srv = TestServer::start_with(&["--region", "eu-west-1"]);
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(srv.url())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .force_path_style(true)
        .build();
    let c = Client::from_conf(conf);
    c.create_bucket().bucket("there").send().await.unwrap();
    let out = c
        .get_bucket_location()
        .bucket("there")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.location_constraint().map(|l| l.as_str()),
        Some("eu-west-1")
    );
}
