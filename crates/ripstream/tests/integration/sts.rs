//! STS GetCallerIdentity, driven by the official aws-sdk-sts against the
//! real binary: the call the Kinesis Producer Library makes at start-up.

use aws_sdk_sts::Client;
use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sts::error::ProvideErrorMetadata;

use crate::support::TestServer;

const CREDENTIALS: &str = r#"
[[principal]]
name = "producer"
access_key_id = "AKIDPRODUCER00000001"
secret_access_key = "producer-secret"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kinesis:PutRecords", "Resource": "*"}]}'''
"#;

fn sts(url: &str, access_key: &str, secret: &str) -> Client {
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key, secret, None, None, "test"))
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

#[tokio::test]
async fn anonymous_mode_is_the_account_root() {
    let srv = TestServer::start();
    let out = sts(&srv.url(), "AKIDANY", "any")
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(out.account(), Some("000000000000"));
    assert_eq!(out.arn(), Some("arn:aws:iam::000000000000:root"));
    assert_eq!(out.user_id(), Some("000000000000"));
}

#[tokio::test]
async fn a_principal_is_told_its_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&[
        "--credentials",
        path.to_str().unwrap(),
        "--account-id",
        "123456789012",
    ]);
    let c = sts(&srv.url(), "AKIDPRODUCER00000001", "producer-secret");
    // Its policy grants no sts action: GetCallerIdentity needs none.
    let out = c.get_caller_identity().send().await.unwrap();
    assert_eq!(out.account(), Some("123456789012"));
    assert_eq!(out.arn(), Some("arn:aws:iam::123456789012:user/producer"));
    let user_id = out.user_id().unwrap().to_string();
    assert!(
        user_id.starts_with("AIDA") && user_id.len() == 21,
        "{user_id}"
    );
    // The same user id on every call.
    let again = c.get_caller_identity().send().await.unwrap();
    assert_eq!(again.user_id(), Some(user_id.as_str()));

    let bad = sts(&srv.url(), "AKIDPRODUCER00000001", "wrong")
        .get_caller_identity()
        .send()
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("SignatureDoesNotMatch"), "{bad:?}");
    let unknown = sts(&srv.url(), "AKIDNOBODY0000000001", "x")
        .get_caller_identity()
        .send()
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some("InvalidClientTokenId"), "{unknown:?}");
}
