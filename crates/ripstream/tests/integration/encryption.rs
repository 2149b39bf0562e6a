//! Server-side encryption: StartStreamEncryption / StopStreamEncryption with
//! the local keyring standing in for KMS.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{EncryptionType, ShardIteratorType};

use crate::support::*;

async fn put(c: &Client, data: &str) -> aws_sdk_kinesis::operation::put_record::PutRecordOutput {
    c.put_record()
        .stream_name("enc")
        .partition_key("k")
        .data(Blob::new(data.to_string()))
        .send()
        .await
        .unwrap()
}

fn data_dir_contains(srv: &TestServer, needle: &[u8]) -> bool {
    let mut found = false;
    for f in srv.files_ending_with("") {
        if let Ok(bytes) = std::fs::read(&f) {
            found |= bytes.windows(needle.len()).any(|w| w == needle);
        }
    }
    found
}

async fn read_all(c: &Client) -> Result<Vec<(String, Option<String>)>, String> {
    let it = c
        .get_shard_iterator()
        .stream_name("enc")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let out = c
        .get_records()
        .shard_iterator(it)
        .send()
        .await
        .map_err(|e| code(&e))?;
    Ok(out
        .records()
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.data().as_ref().to_vec()).unwrap(),
                r.encryption_type().map(|e| e.as_str().to_string()),
            )
        })
        .collect())
}

#[tokio::test]
async fn records_written_while_encrypted_are_ciphertext_on_disk() {
    let mut srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "enc", 1).await;
    put(&c, "cleartext-before-PLAINMARK").await;
    c.start_stream_encryption()
        .stream_name("enc")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .unwrap();
    let d = c.describe_stream().stream_name("enc").send().await.unwrap();
    let d = d.stream_description().unwrap();
    assert_eq!(d.encryption_type(), Some(&EncryptionType::Kms));
    assert_eq!(d.key_id(), Some("alias/aws/kinesis"));
    let out = put(&c, "TOP-SECRET-PAYLOAD-4711").await;
    assert_eq!(out.encryption_type(), Some(&EncryptionType::Kms));
    c.stop_stream_encryption()
        .stream_name("enc")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .unwrap();
    put(&c, "cleartext-after").await;
    let expected = vec![
        // Records stored in the clear carry no EncryptionType, as on AWS.
        ("cleartext-before-PLAINMARK".to_string(), None),
        (
            "TOP-SECRET-PAYLOAD-4711".to_string(),
            Some("KMS".to_string()),
        ),
        ("cleartext-after".to_string(), None),
    ];
    assert_eq!(read_all(&c).await.unwrap(), expected);
    srv.terminate();
    // The search works (the clear record is found), and the secret is not there.
    assert!(data_dir_contains(&srv, b"PLAINMARK"));
    assert!(!data_dir_contains(&srv, b"TOP-SECRET-PAYLOAD-4711"));
    srv.restart();
    assert_eq!(read_all(&srv.client()).await.unwrap(), expected);

    // Unknown keys are refused up front.
    let e = srv
        .client()
        .start_stream_encryption()
        .stream_name("enc")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/does-not-exist")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KMSNotFoundException");
}

#[tokio::test]
async fn a_wrong_or_missing_master_key_is_an_error_not_garbage() {
    let mut srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "enc", 1).await;
    c.start_stream_encryption()
        .stream_name("enc")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .unwrap();
    put(&c, "sealed").await;
    srv.terminate();
    let keyring = srv.data_dir().join("keyring.toml");
    let original = std::fs::read_to_string(&keyring).unwrap();
    // Same key id, different material.
    let material_line = original
        .lines()
        .find(|l| l.starts_with("material"))
        .unwrap()
        .to_string();
    let wrong = original.replace(
        &material_line,
        "material = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"",
    );
    std::fs::write(&keyring, &wrong).unwrap();
    srv.restart();
    assert_eq!(
        read_all(&srv.client()).await.unwrap_err(),
        "KMSAccessDeniedException"
    );
    // Disabled key: reads and writes both refused.
    srv.terminate();
    std::fs::write(
        &keyring,
        original.replace("enabled = true", "enabled = false"),
    )
    .unwrap();
    srv.restart();
    assert_eq!(
        read_all(&srv.client()).await.unwrap_err(),
        "KMSDisabledException"
    );
    let e = srv
        .client()
        .put_record()
        .stream_name("enc")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KMSDisabledException");
    // Key gone from the keyring.
    srv.terminate();
    std::fs::write(&keyring, "").unwrap();
    srv.restart();
    assert_eq!(
        read_all(&srv.client()).await.unwrap_err(),
        "KMSNotFoundException"
    );
}
