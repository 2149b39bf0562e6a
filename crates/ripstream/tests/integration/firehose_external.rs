//! Firehose delivering to an external S3-compatible endpoint
//! (`[object_store] endpoint`): a second Ripstream serves the S3 API with
//! signatures required, and the first signs its deliveries with the keys
//! its config names. The objects are read back through that endpoint's S3
//! API, as any S3 client would.

use std::time::{Duration, Instant};

use crate::firehose::{extended, firehose, record};
use crate::support::*;

const STORE_CREDENTIALS: &str = r#"
[[principal]]
name = "delivery"
access_key_id = "AKIDDELIVERY00000001"
secret_access_key = "delivery-secret"
"#;

#[tokio::test]
async fn deliveries_go_to_an_external_s3_endpoint_signed() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.toml");
    std::fs::write(&creds, STORE_CREDENTIALS).unwrap();
    let store = TestServer::start_with(&["--credentials", creds.to_str().unwrap()]);
    let conf = dir.path().join("ripstream.toml");
    std::fs::write(
        &conf,
        format!(
            "[object_store]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"AKIDDELIVERY00000001\"\nsecret_access_key = \"delivery-secret\"\n",
            store.url()
        ),
    )
    .unwrap();
    let srv = TestServer::start_with(&["--config", conf.to_str().unwrap()]);
    let s3 = crate::s3::s3_as(&store.url(), "AKIDDELIVERY00000001", "delivery-secret");
    s3.create_bucket().bucket("remote").send().await.unwrap();
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("out")
        .extended_s3_destination_configuration(
            extended("remote", 1).prefix("far/").build().unwrap(),
        )
        .send()
        .await
        .unwrap();
    c.put_record_batch()
        .delivery_stream_name("out")
        .records(record(b"one\n"))
        .records(record(b"two\n"))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let key = loop {
        let listed = s3
            .list_objects_v2()
            .bucket("remote")
            .prefix("far/")
            .send()
            .await
            .unwrap();
        if let Some(k) = listed.contents().first().and_then(|o| o.key()) {
            break k.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "nothing delivered; log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(key.starts_with("far/") && key.contains("/out-1-"), "{key}");
    let got = s3
        .get_object()
        .bucket("remote")
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(&got[..], b"one\ntwo\n");
    // Nothing went to the delivering server's own store.
    assert!(!srv.data_dir().join("objects/remote").exists());

    // A bucket the endpoint does not have: records wait, then arrive.
    c.create_delivery_stream()
        .delivery_stream_name("later")
        .extended_s3_destination_configuration(extended("notyet", 1).build().unwrap())
        .send()
        .await
        .unwrap();
    c.put_record()
        .delivery_stream_name("later")
        .record(record(b"waited"))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !srv.log().contains("S3.NoSuchBucket") {
        assert!(
            Instant::now() < deadline,
            "no NoSuchBucket in:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s3.create_bucket().bucket("notyet").send().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = s3.list_objects_v2().bucket("notyet").send().await.unwrap();
        if !listed.contents().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never delivered; log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn an_external_endpoint_needs_both_keys_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ripstream.toml");
    std::fs::write(
        &conf,
        "[object_store]\nendpoint = \"http://127.0.0.1:9\"\naccess_key_id = \"AKID\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret access key"), "{err}");
}
