//! SigV4 authentication, IAM-style policies, resource policies and TLS,
//! with the official SDK as the client.

use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;

use crate::support::*;

const CREDENTIALS: &str = r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"

[[principal]]
name = "ingest-service"
access_key_id = "AKIDINGEST0000000001"
secret_access_key = "ingest-secret"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:Describe*", "kinesis:List*"], "Resource": "arn:aws:kinesis:*:*:stream/orders*"}]}'''

[[principal]]
name = "reader"
access_key_id = "AKIDREADER0000000001"
secret_access_key = "reader-secret"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kinesis:Describe*", "Resource": "*"}]}'''
"#;

fn secure_server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    (srv, dir)
}

fn admin(srv: &TestServer) -> Client {
    client_with(&srv.url(), "AKIDADMIN00000000001", "admin-secret")
}

async fn put(c: &Client, stream: &str) -> Result<(), String> {
    c.put_record()
        .stream_name(stream)
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{}: {}", code(&e), message(&e)))
}

#[tokio::test]
async fn signatures_are_required_and_checked() {
    let (srv, _dir) = secure_server();
    let c = admin(&srv);
    create_stream(&c, "orders", 1).await;

    // Unsigned.
    let r = api_unsigned(&srv.addr, "ListStreams", "{}").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "MissingAuthenticationTokenException");
    // Unknown access key.
    let e = client_with(&srv.url(), "AKIDNOBODY0000000000", "x")
        .list_streams()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "UnrecognizedClientException");
    // Wrong secret.
    let e = client_with(&srv.url(), "AKIDADMIN00000000001", "wrong")
        .list_streams()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidSignatureException");
    // A signature more than 15 minutes old.
    let old = SystemTime::now() - Duration::from_secs(20 * 60);
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(srv.url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDADMIN00000000001",
            "admin-secret",
            None,
            None,
            "test",
        ))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .time_source(aws_smithy_async::time::StaticTimeSource::new(old))
        .build();
    let e = Client::from_conf(conf)
        .list_streams()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidSignatureException");
    assert!(
        message(&e).starts_with("Signature expired:"),
        "{}",
        message(&e)
    );
    // A payload changed after signing.
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(srv.url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDADMIN00000000001",
            "admin-secret",
            None,
            None,
            "test",
        ))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .interceptor(Tamper)
        .build();
    let e = Client::from_conf(conf)
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidSignatureException");
    // A region the server is not in.
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(srv.url())
        .region(Region::new("eu-west-3"))
        .credentials_provider(Credentials::new(
            "AKIDADMIN00000000001",
            "admin-secret",
            None,
            None,
            "test",
        ))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    let e = Client::from_conf(conf)
        .list_streams()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidSignatureException");
    // Secrets never reach the log.
    for secret in ["admin-secret", "ingest-secret", "reader-secret"] {
        assert!(!srv.log().contains(secret), "{secret} in the log");
    }
}

/// Rewrites the body after the request was signed.
#[derive(Debug)]
struct Tamper;

impl aws_sdk_kinesis::config::Intercept for Tamper {
    fn name(&self) -> &'static str {
        "Tamper"
    }

    fn modify_before_transmit(
        &self,
        context: &mut aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextMut<
            '_,
        >,
        _: &aws_sdk_kinesis::config::RuntimeComponents,
        _: &mut aws_sdk_kinesis::config::ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        let body = context
            .request()
            .body()
            .bytes()
            .unwrap_or_default()
            .to_vec();
        let tampered = String::from_utf8(body).unwrap().replace("orders", "orderz");
        *context.request_mut().body_mut() = aws_smithy_types::body::SdkBody::from(tampered);
        Ok(())
    }
}

#[tokio::test]
async fn identity_and_resource_policies_decide() {
    let (srv, _dir) = secure_server();
    let root = admin(&srv);
    create_stream(&root, "orders-eu", 1).await;
    create_stream(&root, "audit", 1).await;
    let ingest = client_with(&srv.url(), "AKIDINGEST0000000001", "ingest-secret");
    put(&ingest, "orders-eu").await.unwrap();
    ingest
        .describe_stream_summary()
        .stream_name("orders-eu")
        .send()
        .await
        .unwrap();
    let e = put(&ingest, "audit").await.unwrap_err();
    assert!(e.starts_with("AccessDeniedException: User: arn:aws:iam::000000000000:user/ingest-service is not authorized to perform: kinesis:PutRecord on resource: arn:aws:kinesis:us-east-1:000000000000:stream/audit"), "{e}");
    let e = ingest
        .delete_stream()
        .stream_name("orders-eu")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");

    // The reader may only describe, until the stream's resource policy lets it read.
    let reader = client_with(&srv.url(), "AKIDREADER0000000001", "reader-secret");
    let iter = |c: &Client| {
        c.get_shard_iterator()
            .stream_name("orders-eu")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
    };
    let e = iter(&reader).await.unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/orders-eu";
    let policy = r#"{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:user/reader"}, "Action": ["kinesis:GetShardIterator", "kinesis:GetRecords"], "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kinesis:DeleteStream", "Resource": "*"}
    ]}"#;
    root.put_resource_policy()
        .resource_arn(arn)
        .policy(policy)
        .send()
        .await
        .unwrap();
    assert_eq!(
        root.get_resource_policy()
            .resource_arn(arn)
            .send()
            .await
            .unwrap()
            .policy(),
        policy
    );
    let it = iter(&reader).await.unwrap().shard_iterator.unwrap();
    let records = reader
        .get_records()
        .shard_iterator(it)
        .send()
        .await
        .unwrap();
    assert_eq!(records.records().len(), 1);
    // An explicit deny in the resource policy beats even an allow-everything principal.
    let e = root
        .delete_stream()
        .stream_name("orders-eu")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    root.delete_resource_policy()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    let e = iter(&reader).await.unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let e = root
        .put_resource_policy()
        .resource_arn(arn)
        .policy("{not json")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    root.delete_stream()
        .stream_name("orders-eu")
        .send()
        .await
        .unwrap();
}

#[test]
fn a_public_listener_without_credentials_refuses_to_start() {
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without credentials"));
}

/// A test CA and a server certificate for 127.0.0.1 and localhost.
fn test_pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path, ca.pem())
}

#[tokio::test]
async fn tls_with_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_pem) = test_pki(dir.path());
    let srv = TestServer::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(srv.url().starts_with("https://"));
    // The official SDK, trusting the test CA.
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            tls::TlsContext::builder()
                .with_trust_store(
                    tls::TrustStore::empty().with_pem_certificate(ca_pem.as_bytes().to_vec()),
                )
                .build()
                .unwrap(),
        )
        .build_https();
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(srv.url().replace("127.0.0.1", "localhost"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .http_client(http)
        .build();
    let c = Client::from_conf(conf);
    create_stream(&c, "tls", 1).await;
    put(&c, "tls").await.unwrap();
    assert_eq!(read_shard(&c, "tls", "shardId-000000000000").await.len(), 1);

    // ALPN offers h2 and the server picks it.
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
    let tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Cleartext on the TLS port is refused, not served.
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let stream = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        match hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(io)
            .await
        {
            Ok((mut send, conn)) => {
                tokio::spawn(conn);
                send.send_request(
                    http::Request::get("/health")
                        .body(Default::default())
                        .unwrap(),
                )
                .await
                .is_ok()
            }
            Err(_) => false,
        }
    })
    .await
    .unwrap_or(false);
    assert!(!r);
}
