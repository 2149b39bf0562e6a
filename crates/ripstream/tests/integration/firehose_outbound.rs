//! Firehose's outbound connections through the real binary: https
//! transformation functions and push destinations behind a private CA
//! (`[functions.NAME] ca_file`, `firehose_destination_ca_file`; a CA made
//! here with rcgen, TLS served here with tokio-rustls), and the operator's
//! allow-list of destination networks (`--firehose-destination-networks`)
//! for push destinations and the Redshift destination. Every receiver and
//! database is on 127.0.0.1; an allow-list that leaves loopback out must
//! refuse them before any connection (nothing is sent elsewhere).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_firehose::types::{
    HttpEndpointBufferingHints, HttpEndpointConfiguration, HttpEndpointDestinationConfiguration,
    HttpEndpointRetryOptions, ProcessingConfiguration, ProcessorParameterName as N,
    ProcessorType as T,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::firehose::{bucket_dir, extended, firehose, objects, processor, wait_until};
use crate::firehose_http::{Answer, Got, Handler, Receiver, error_lines, put_all, s3};
use crate::support::*;

/// A test CA (its PEM) and a TLS acceptor for a certificate it issued for
/// 127.0.0.1 and localhost.
fn test_pki() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// An HTTP endpoint that accepts every request, as the protocol wants.
fn accepting() -> Handler {
    Arc::new(|_, g: &Got| {
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        Answer::Json(200, json!({"requestId": body["requestId"], "timestamp": 1}))
    })
}

/// A transformation function: every record upper-cased.
fn upper_function() -> Handler {
    Arc::new(|_, g: &Got| {
        let req: Value = serde_json::from_slice(&g.body).unwrap();
        let records: Vec<Value> = req["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let data = STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
                json!({"recordId": r["recordId"], "result": "Ok",
                       "data": STANDARD.encode(data.to_ascii_uppercase())})
            })
            .collect();
        Answer::Json(200, json!({ "records": records }))
    })
}

fn http_endpoint(
    url: &str,
    bucket: &str,
    retry_s: i32,
    processing: Option<ProcessingConfiguration>,
) -> HttpEndpointDestinationConfiguration {
    HttpEndpointDestinationConfiguration::builder()
        .endpoint_configuration(
            HttpEndpointConfiguration::builder()
                .url(url)
                .build()
                .unwrap(),
        )
        .buffering_hints(
            HttpEndpointBufferingHints::builder()
                .size_in_mbs(1)
                .interval_in_seconds(1)
                .build(),
        )
        .retry_options(
            HttpEndpointRetryOptions::builder()
                .duration_in_seconds(retry_s)
                .build(),
        )
        .set_processing_configuration(processing)
        .s3_configuration(s3(bucket, "errs/"))
        .build()
}

fn with_function(name: &str, retries: &str) -> ProcessingConfiguration {
    ProcessingConfiguration::builder()
        .enabled(true)
        .processors(processor(
            T::Lambda,
            &[
                (
                    N::LambdaArn,
                    &format!("arn:aws:lambda:us-east-1:000000000000:function:{name}"),
                ),
                (N::LambdaNumberOfRetries, retries),
            ],
        ))
        .build()
}

/// The records of every request a receiver got, decoded.
fn delivered(rx: &Receiver) -> Vec<String> {
    rx.got()
        .iter()
        .flat_map(|g| {
            let body: Value = serde_json::from_slice(&g.body).unwrap();
            body["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    String::from_utf8(STANDARD.decode(r["data"].as_str().unwrap()).unwrap())
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn https_functions_and_destinations_trust_the_configured_ca_and_no_other() {
    let (ca_pem, acceptor) = test_pki();
    let function = Receiver::start_with(upper_function(), Some(acceptor.clone())).await;
    let endpoint = Receiver::start_with(accepting(), Some(acceptor)).await;
    assert!(function.url.starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let conf = dir.path().join("ripstream.toml");
    std::fs::write(
        &conf,
        format!(
            "firehose_destination_ca_file = {ca:?}\n[functions.up]\nurl = \"{}/transform\"\nca_file = {ca:?}\n",
            function.url
        ),
    )
    .unwrap();
    // https only, as on AWS: no --firehose-allow-http-destinations.
    let srv = TestServer::start_with(&["--config", conf.to_str().unwrap()]);
    let _bucket = bucket_dir(&srv, "tlsb");
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("tls")
        .http_endpoint_destination_configuration(http_endpoint(
            &format!("{}/in", endpoint.url),
            "tlsb",
            60,
            Some(with_function("up", "3")),
        ))
        .send()
        .await
        .unwrap();
    put_all(&c, "tls", &[b"abc", b"xy"]).await;
    wait_until("delivery over https", Duration::from_secs(60), || {
        !endpoint.got().is_empty()
    })
    .await;
    assert_eq!(delivered(&endpoint), vec!["ABC", "XY"]);
    assert_eq!(endpoint.got()[0].path, "/in");
    let calls = function.got();
    assert_eq!(calls.len(), 1, "one invocation");
    assert_eq!(calls[0].path, "/transform");
    assert_eq!(
        calls[0].headers["content-type"].to_str().unwrap(),
        "application/json"
    );

    // A server that was not given the CA refuses both certificates.
    let conf = dir.path().join("untrusting.toml");
    std::fs::write(
        &conf,
        format!("[functions.up]\nurl = \"{}/transform\"\n", function.url),
    )
    .unwrap();
    let srv = TestServer::start_with(&["--config", conf.to_str().unwrap()]);
    let bucket = bucket_dir(&srv, "untrusted");
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("endpoint")
        .http_endpoint_destination_configuration(http_endpoint(
            &format!("{}/in", endpoint.url),
            "untrusted",
            0,
            None,
        ))
        .send()
        .await
        .unwrap();
    c.create_delivery_stream()
        .delivery_stream_name("function")
        .extended_s3_destination_configuration(
            extended("untrusted", 1)
                .prefix("fn/")
                .error_output_prefix("fnerr/")
                .processing_configuration(with_function("up", "0"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    put_all(&c, "endpoint", &[b"e1"]).await;
    put_all(&c, "function", &[b"f1"]).await;
    wait_until("both error outputs", Duration::from_secs(60), || {
        !error_lines(&bucket, "errs/http-endpoint-failed/").is_empty()
            && !error_lines(&bucket, "fnerr/").is_empty()
    })
    .await;
    let e = &error_lines(&bucket, "errs/http-endpoint-failed/")[0];
    assert_eq!(e["errorCode"], "HttpEndpoint.ConnectionFailed", "{e}");
    assert!(
        e["errorMessage"].as_str().unwrap().contains("certificate"),
        "{e}"
    );
    let f = &error_lines(&bucket, "fnerr/")[0];
    assert_eq!(f["errorCode"], "Lambda.FunctionError", "{f}");
    // The function's URL is the operator's: not in the caller's output.
    assert_eq!(f["errorMessage"], "The function cannot be reached.", "{f}");
    assert!(!objects(&bucket).iter().any(|(k, _)| k.starts_with("fn/")));
    // Neither receiver got a request from the second server.
    assert_eq!(endpoint.got().len(), 1);
    assert_eq!(function.got().len(), 1);
}

#[tokio::test]
async fn push_destinations_outside_the_allowed_networks_are_refused() {
    let rx = Receiver::start(accepting()).await;
    let port = rx.url.rsplit(':').next().unwrap().to_string();
    let srv = TestServer::start_with(&[
        "--firehose-allow-http-destinations",
        "true",
        "--firehose-endpoint-timeout-ms",
        "2000",
        "--firehose-destination-networks",
        "10.0.0.0/8",
    ]);
    let bucket = bucket_dir(&srv, "fenced");
    let c = firehose(&srv.url());
    // An address outside the networks is refused when it is given.
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("literal")
        .http_endpoint_destination_configuration(http_endpoint(
            &format!("http://127.0.0.1:{port}/in"),
            "fenced",
            0,
            None,
        ))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(
        message(&e).contains("outside the networks"),
        "{}",
        message(&e)
    );
    // A name is accepted, and checked on what it resolves to when the
    // delivery connects: localhost is loopback, so nothing is sent.
    c.create_delivery_stream()
        .delivery_stream_name("named")
        .http_endpoint_destination_configuration(http_endpoint(
            &format!("http://localhost:{port}/in"),
            "fenced",
            1,
            None,
        ))
        .send()
        .await
        .unwrap();
    put_all(&c, "named", &[b"r1", b"r2"]).await;
    wait_until("the error output", Duration::from_secs(60), || {
        error_lines(&bucket, "errs/http-endpoint-failed/").len() == 2
    })
    .await;
    for l in error_lines(&bucket, "errs/http-endpoint-failed/") {
        assert_eq!(l["errorCode"], "HttpEndpoint.ConnectionFailed", "{l}");
        let m = l["errorMessage"].as_str().unwrap();
        assert!(m.contains("outside the networks"), "{m}");
        // The caller's output does not learn where its name resolved.
        assert!(!m.contains("127.0.0.1"), "{m}");
    }
    assert!(rx.got().is_empty(), "{:?}", rx.got());
    let log = srv.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("outside firehose_destination_networks")
            && l.contains("127.0.0.1")
            && l.contains("localhost")),
        "{log}"
    );

    // With loopback in the list (here from the environment variable) both
    // the address and the name deliver.
    let srv = TestServer::start_with_env(
        &["--firehose-allow-http-destinations", "true"],
        &[(
            "RIPSTREAM_FIREHOSE_DESTINATION_NETWORKS",
            "10.0.0.0/8,127.0.0.0/8",
        )],
    );
    let _bucket = bucket_dir(&srv, "open");
    let c = firehose(&srv.url());
    for (name, host) in [("literal", "127.0.0.1"), ("named", "localhost")] {
        c.create_delivery_stream()
            .delivery_stream_name(name)
            .http_endpoint_destination_configuration(http_endpoint(
                &format!("http://{host}:{port}/{name}"),
                "open",
                60,
                None,
            ))
            .send()
            .await
            .unwrap();
        put_all(&c, name, &[name.as_bytes()]).await;
    }
    wait_until("both deliveries", Duration::from_secs(60), || {
        rx.got().len() == 2
    })
    .await;
    let mut paths: Vec<String> = rx.got().iter().map(|g| g.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, vec!["/literal", "/named"]);
    let mut records = delivered(&rx);
    records.sort();
    assert_eq!(records, vec!["literal", "named"]);
}

#[tokio::test]
async fn redshift_databases_outside_the_allowed_networks_are_refused() {
    use crate::firehose_redshift::{Pg, config, count, create, put, wait_count};
    let pg = Pg::start();
    let db = pg.database("fenced").await;
    db.batch_execute("CREATE TABLE t (id int, name text)")
        .await
        .unwrap();
    let by_address = pg.jdbc("postgresql", "fenced");
    let by_name = by_address.replace("127.0.0.1", "localhost");
    let srv = TestServer::start_with(&["--firehose-destination-networks", "10.0.0.0/8,fd00::/8"]);
    let stage = bucket_dir(&srv, "stage");
    let c = firehose(&srv.url());
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("literal")
        .redshift_destination_configuration(config(&by_address, "t", None, "JSON 'auto'", false, 1))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(
        message(&e).contains("outside the networks"),
        "{}",
        message(&e)
    );
    create(
        &c,
        "named",
        config(&by_name, "t", None, "JSON 'auto'", false, 1),
    )
    .await;
    put(&c, "named", &[br#"{"id": 1, "name": "a"}"#]).await;
    // Refused at every attempt, then skipped as a load that kept failing:
    // its manifest goes to the error output.
    wait_until("the failed-load manifest", Duration::from_secs(60), || {
        objects(&stage)
            .iter()
            .any(|(k, _)| k.starts_with("errors/redshift-failed/manifests/"))
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM t").await, 0);
    let log = srv.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("outside firehose_destination_networks")
            && l.contains("127.0.0.1")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Redshift.ConnectionFailed") && l.contains("outside the networks")),
        "{log}"
    );

    // Loopback allowed: the address and the name both load.
    let srv = TestServer::start_with(&["--firehose-destination-networks", "127.0.0.0/8"]);
    let _stage = bucket_dir(&srv, "stage");
    let c = firehose(&srv.url());
    create(
        &c,
        "literal",
        config(&by_address, "t", None, "JSON 'auto'", false, 3600),
    )
    .await;
    create(
        &c,
        "named",
        config(&by_name, "t", None, "JSON 'auto'", false, 3600),
    )
    .await;
    put(&c, "literal", &[br#"{"id": 2, "name": "b"}"#]).await;
    put(&c, "named", &[br#"{"id": 3, "name": "c"}"#]).await;
    wait_count(&db, "SELECT count(*) FROM t", 2, &srv).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM t WHERE id IN (2, 3)").await,
        2
    );
}
