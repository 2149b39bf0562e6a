//! S3 server-side encryption (SSE-KMS, SSE-S3) through the real binary
//! with aws-sdk-s3: objects sealed on disk under keyring keys, ranges,
//! copies, multipart uploads, S3's KMS errors and the kms: permissions.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use md5::{Digest, Md5};

use crate::s3::{s3, s3_as};
use crate::support::TestServer;

/// A keyring with a customer key (`alias/app`) the tests disable later.
pub(crate) const KEYRING: &str = r#"
[[key]]
id = "0f1e2d3c-app"
aliases = ["alias/app"]
material = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
"#;
const APP_ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/0f1e2d3c-app";

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: &aws_sdk_s3::error::SdkError<E, R>,
) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .map(String::from)
        .unwrap_or_else(|| format!("not a service error: {e:?}"))
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> u16 {
    e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 % 253) as u8).collect()
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn server(dir: &tempfile::TempDir, extra: &[&str]) -> TestServer {
    let keyring = dir.path().join("keyring.toml");
    if !keyring.exists() {
        std::fs::write(&keyring, KEYRING).unwrap();
    }
    let mut args = vec!["--keyring", keyring.to_str().unwrap()];
    args.extend_from_slice(extra);
    TestServer::start_with(&args)
}

#[tokio::test]
async fn sse_kms_objects_are_sealed_on_disk_and_read_back_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = server(&dir, &[]);
    let c = s3(&srv.url());
    c.create_bucket().bucket("vault").send().await.unwrap();
    let data = pattern(200_000);
    let put = c
        .put_object()
        .bucket("vault")
        .key("docs/a.bin")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id("alias/app")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(put.ssekms_key_id(), Some(APP_ARN));
    // S3: an SSE-KMS object's ETag is not the MD5 of its data.
    let md5 = format!("\"{}\"", hex::encode(Md5::digest(&data)));
    assert_ne!(put.e_tag(), Some(md5.as_str()));
    // The file on disk is not the plaintext (nor holds any piece of it).
    let file = srv.data_dir().join("objects/vault/docs/a.bin");
    let on_disk = std::fs::read(&file).unwrap();
    assert!(on_disk.len() > data.len());
    for at in [0, 65_530, 150_000] {
        assert!(!contains(&on_disk, &data[at..at + 32]), "plaintext at {at}");
    }
    // No object here is SSE-C: a read with customer-key headers is S3's
    // InvalidRequest for such an object, not served as if they were absent.
    let e = c
        .get_object()
        .bucket("vault")
        .key("docs/a.bin")
        .sse_customer_algorithm("AES256")
        .sse_customer_key("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=")
        .sse_customer_key_md5("dummy==")
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidRequest".into(), 400));
    // A range across the first chunk boundary (64 KiB), and one at the end.
    for (a, z) in [(65_530usize, 65_545usize), (131_000, 199_999), (0, 0)] {
        let got = c
            .get_object()
            .bucket("vault")
            .key("docs/a.bin")
            .range(format!("bytes={a}-{z}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.content_range(),
            Some(format!("bytes {a}-{z}/{}", data.len()).as_str())
        );
        assert_eq!(
            got.server_side_encryption(),
            Some(&ServerSideEncryption::AwsKms)
        );
        assert_eq!(got.ssekms_key_id(), Some(APP_ARN));
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&bytes[..], &data[a..=z]);
    }
    let head = c
        .head_object()
        .bucket("vault")
        .key("docs/a.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(data.len() as i64));
    assert_eq!(head.e_tag(), put.e_tag());
    assert_eq!(head.ssekms_key_id(), Some(APP_ARN));
    let whole = c
        .get_object()
        .bucket("vault")
        .key("docs/a.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(whole.body.collect().await.unwrap().into_bytes(), data);

    // No key id: the AWS-managed aws/s3 key, added to the keyring.
    let put = c
        .put_object()
        .bucket("vault")
        .key("default")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .body(ByteStream::from_static(b"managed"))
        .send()
        .await
        .unwrap();
    let managed = put.ssekms_key_id().unwrap().to_string();
    assert!(managed.starts_with("arn:aws:kms:us-east-1:000000000000:key/"));
    assert_ne!(managed, APP_ARN);
    let ring = std::fs::read_to_string(dir.path().join("keyring.toml")).unwrap();
    assert!(
        ring.contains("alias/aws/s3") && ring.contains("alias/app"),
        "{ring}"
    );
    // SSE-S3: the plaintext's MD5 as ETag, no key named.
    let put = c
        .put_object()
        .bucket("vault")
        .key("aes")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.e_tag(), Some("\"5d41402abc4b2a76b9719d911017c592\""));
    assert_eq!(
        put.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    assert_eq!(put.ssekms_key_id(), None);
    assert_ne!(
        std::fs::read(srv.data_dir().join("objects/vault/aes")).unwrap(),
        b"hello"
    );

    // S3's refusals.
    let e = c
        .put_object()
        .bucket("vault")
        .key("x")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id("alias/none")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e), status(&e)),
        ("KMS.NotFoundException".into(), 400)
    );
    let e = c
        .put_object()
        .bucket("vault")
        .key("x")
        .ssekms_key_id("alias/app")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    let e = c
        .put_object()
        .bucket("vault")
        .key("x")
        .sse_customer_algorithm("AES256")
        .sse_customer_key("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=")
        .sse_customer_key_md5("6Y5p3Y5p3Y5p3Y5p3Y5p3Q==")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NotImplemented".into(), 501));

    // CopyObject: decrypted and sealed as the copy's request says.
    let copy = c
        .copy_object()
        .bucket("vault")
        .key("copy")
        .copy_source("vault/docs/a.bin")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .send()
        .await
        .unwrap();
    assert_eq!(copy.ssekms_key_id(), Some(managed.as_str()));
    let plain = c
        .copy_object()
        .bucket("vault")
        .key("plain-copy")
        .copy_source("vault/docs/a.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.server_side_encryption(), None);
    assert_eq!(
        plain.copy_object_result().unwrap().e_tag(),
        Some(md5.as_str())
    );
    for k in ["copy", "plain-copy"] {
        let got = c.get_object().bucket("vault").key(k).send().await.unwrap();
        assert_eq!(got.body.collect().await.unwrap().into_bytes(), data, "{k}");
    }

    // Multipart: parts sealed as they arrive, joined into one object.
    let up = c
        .create_multipart_upload()
        .bucket("vault")
        .key("big")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(APP_ARN)
        .send()
        .await
        .unwrap();
    assert_eq!(up.ssekms_key_id(), Some(APP_ARN));
    let id = up.upload_id().unwrap();
    let part1 = pattern(5 * 1024 * 1024 + 11);
    let part2 = b"and the end".to_vec();
    let mut done = Vec::new();
    for (n, p) in [(1, &part1), (2, &part2)] {
        let out = c
            .upload_part()
            .bucket("vault")
            .key("big")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(p.clone()))
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
    let out = c
        .complete_multipart_upload()
        .bucket("vault")
        .key("big")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.ssekms_key_id(), Some(APP_ARN));
    let all = [part1.clone(), part2.clone()].concat();
    let big = std::fs::read(srv.data_dir().join("objects/vault/big")).unwrap();
    assert!(!contains(&big, &part1[1_000_000..1_000_032]));
    assert!(!contains(&big, b"and the end"));
    let a = part1.len() - 5;
    let got = c
        .get_object()
        .bucket("vault")
        .key("big")
        .range(format!("bytes={a}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes(), &all[a..]);

    // The key disabled in the keyring: reads fail as S3's do, HEAD (which
    // needs no key) still answers.
    srv.terminate();
    let ring = dir.path().join("keyring.toml");
    let text = std::fs::read_to_string(&ring).unwrap();
    std::fs::write(
        &ring,
        text.replace(
            "aliases = [\"alias/app\"]",
            "aliases = [\"alias/app\"]\nenabled = false",
        ),
    )
    .unwrap();
    srv.restart();
    let c = s3(&srv.url());
    let e = c
        .get_object()
        .bucket("vault")
        .key("docs/a.bin")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e), status(&e)),
        ("KMS.DisabledException".into(), 400)
    );
    c.head_object()
        .bucket("vault")
        .key("docs/a.bin")
        .send()
        .await
        .unwrap();
    let got = c
        .get_object()
        .bucket("vault")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes(), data);
}

#[tokio::test]
async fn sse_kms_needs_generate_data_key_to_write_and_decrypt_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.toml");
    std::fs::write(
        &creds,
        format!(
            r#"
[[principal]]
name = "writer"
access_key_id = "AKIDWRITER0000000001"
secret_access_key = "writer-secret"
policy = '''{{"Statement": [{{"Effect": "Allow", "Action": ["s3:*", "kms:GenerateDataKey"], "Resource": "*"}}]}}'''

[[principal]]
name = "reader"
access_key_id = "AKIDREADER0000000001"
secret_access_key = "reader-secret"
policy = '''{{"Statement": [{{"Effect": "Allow", "Action": ["s3:*", "kms:Decrypt"], "Resource": "*"}},
  {{"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "{APP_ARN}"}}]}}'''

[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"
policy = '''{{"Statement": [{{"Effect": "Allow", "Action": ["s3:*", "kms:*"], "Resource": "*"}}]}}'''
"#
        ),
    )
    .unwrap();
    let srv = server(&dir, &["--credentials", creds.to_str().unwrap()]);
    let writer = s3_as(&srv.url(), "AKIDWRITER0000000001", "writer-secret");
    let reader = s3_as(&srv.url(), "AKIDREADER0000000001", "reader-secret");
    writer.create_bucket().bucket("vault").send().await.unwrap();
    for (key, alias) in [("app", "alias/app"), ("managed", "alias/aws/s3")] {
        writer
            .put_object()
            .bucket("vault")
            .key(key)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(alias)
            .body(ByteStream::from_static(b"secret"))
            .send()
            .await
            .unwrap();
    }
    // The writer may not decrypt; the reader may not seal, nor decrypt
    // under the key its policy denies (named by its ARN, not the alias).
    let e = writer
        .get_object()
        .bucket("vault")
        .key("app")
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("AccessDenied".into(), 403));
    let e = reader
        .put_object()
        .bucket("vault")
        .key("x")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = reader
        .get_object()
        .bucket("vault")
        .key("app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let got = reader
        .get_object()
        .bucket("vault")
        .key("managed")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"secret"
    );
    // A multipart upload under a key: adding a part or completing needs
    // kms:Decrypt as well as kms:GenerateDataKey, whoever started it.
    let admin = s3_as(&srv.url(), "AKIDADMIN00000000001", "admin-secret");
    let up = admin
        .create_multipart_upload()
        .bucket("vault")
        .key("parts")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id("alias/app")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let e = writer
        .upload_part()
        .bucket("vault")
        .key("parts")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("AccessDenied".into(), 403));
    let part = admin
        .upload_part()
        .bucket("vault")
        .key("parts")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await
        .unwrap();
    let done = CompletedMultipartUpload::builder()
        .parts(
            CompletedPart::builder()
                .part_number(1)
                .e_tag(part.e_tag().unwrap())
                .build(),
        )
        .build();
    let e = writer
        .complete_multipart_upload()
        .bucket("vault")
        .key("parts")
        .upload_id(id)
        .multipart_upload(done.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    admin
        .complete_multipart_upload()
        .bucket("vault")
        .key("parts")
        .upload_id(id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    // SSE-S3 is the server's own key: no kms: permission is asked.
    reader
        .put_object()
        .bucket("vault")
        .key("aes")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
}
