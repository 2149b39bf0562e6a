//! Anonymous mode (no credentials file), through the real binary: a
//! signature's form is checked as AWS checks it, without any key, and a
//! request with no signature at all gets AWS's missing-token answer unless
//! the operator allows unsigned requests. Answers come in AWS's order:
//! content type, syntax and operation first, then the signature's form,
//! then member validation.

use crate::support::*;

const LIST: (&str, &str) = ("x-amz-target", "Kinesis_20131202.ListStreams");
const JSON: (&str, &str) = ("content-type", "application/x-amz-json-1.1");

/// A Kinesis ListStreams request exactly as given (path, extra headers).
async fn list(addr: &str, path: &str, extra: &[(&str, &str)]) -> RawResponse {
    let mut headers = vec![LIST, JSON];
    headers.extend_from_slice(extra);
    raw_unsigned(addr, false, "POST", path, &headers, b"{}".to_vec()).await
}

fn answer(r: &RawResponse) -> (u16, String, String) {
    let v = r.json();
    (
        r.status,
        v["__type"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn incomplete(message: &str) -> (u16, String, String) {
    (
        400,
        "IncompleteSignatureException".into(),
        message.to_string(),
    )
}

const ALL_QUERY_MISSING: &str = "AWS query-string parameters must include 'X-Amz-Algorithm'. AWS query-string parameters must include 'X-Amz-Credential'. AWS query-string parameters must include 'X-Amz-Signature'. AWS query-string parameters must include 'X-Amz-SignedHeaders'. AWS query-string parameters must include 'X-Amz-Date'. Re-examine the query-string parameters.";

fn all_header_missing(auth: &str) -> String {
    format!(
        "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={auth}"
    )
}

#[tokio::test]
async fn unsigned_requests_get_the_missing_token_answer_by_default() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();
    let r = list(addr, "/", &[]).await;
    assert_eq!(
        answer(&r),
        (
            400,
            "MissingAuthenticationTokenException".into(),
            "Missing Authentication Token".into()
        )
    );
    assert_eq!(
        r.headers["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );
    // Content type with spaces and parameters: still a JSON request.
    let r = raw_unsigned(
        addr,
        false,
        "POST",
        "/",
        &[
            LIST,
            ("content-type", "   application/x-amz-json-1.1   ;whatever"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(answer(&r).1, "MissingAuthenticationTokenException");
    // Every query parameter but X-Amz-Algorithm: no query signature at all.
    let r = list(
        addr,
        "/?X-Amz-Credential=a&X-Amz-Signature=b&X-Amz-SignedHeaders=c&X-Amz-Date=d",
        &[],
    )
    .await;
    assert_eq!(answer(&r).1, "MissingAuthenticationTokenException");
    // An empty Authorization header is none.
    let r = list(addr, "/", &[("authorization", "")]).await;
    assert_eq!(answer(&r).1, "MissingAuthenticationTokenException");
    // In CBOR for a CBOR request, as every other error.
    let r = raw_unsigned(
        addr,
        false,
        "POST",
        "/",
        &[LIST, ("content-type", "application/x-amz-cbor-1.1")],
        vec![0xa0],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        cbor_type(&r),
        "MissingAuthenticationTokenException",
        "{:?}",
        r.body
    );
    // DynamoDB answers in its own envelope.
    let r = raw_unsigned(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", "DynamoDB_20120810.ListTables"),
            ("content-type", "application/x-amz-json-1.0"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        answer(&r),
        (
            400,
            "com.amazon.coral.service#MissingAuthenticationTokenException".into(),
            "Missing Authentication Token".into()
        )
    );
    // Nothing was served: a well-formed signature (checked for form only)
    // is what it takes.
    let r = list(
        addr,
        "/",
        &[
            ("authorization", DUMMY_AUTHORIZATION),
            ("x-amz-date", "20260101T000000Z"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["StreamNames"], serde_json::json!([]));
    let r = list(
        addr,
        "/?X-Amz-Algorithm=a&X-Amz-Credential=b&X-Amz-Signature=c&X-Amz-SignedHeaders=d&X-Amz-Date=e",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn malformed_signatures_get_aws_clauses() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();
    let r = list(addr, "/", &[("authorization", "X")]).await;
    assert_eq!(answer(&r), incomplete(&all_header_missing("X")));
    // `X-Amz-Algorith` is no query signature: the header is read.
    let r = list(addr, "/?X-Amz-Algorith", &[("authorization", "X")]).await;
    assert_eq!(answer(&r), incomplete(&all_header_missing("X")));
    // Parameters are read after the first token, whatever it is; a Date
    // header counts by its presence.
    for auth in [
        "AWS4- Signature=b Credential=a",
        "AWS4- Signature=b,Credential=a",
        "AWS4- Signature=b, Credential=a",
    ] {
        let r = list(addr, "/", &[("authorization", auth), ("date", "a")]).await;
        assert_eq!(
            answer(&r),
            incomplete(&format!(
                "Authorization header requires 'SignedHeaders' parameter. Authorization={auth}"
            )),
            "{auth}"
        );
    }
    let r = list(
        addr,
        "/",
        &[(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=a, SignedHeaders=b, Signature=c",
        )],
    )
    .await;
    assert_eq!(
        answer(&r),
        incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=AWS4-HMAC-SHA256 Credential=a, SignedHeaders=b, Signature=c"
        )
    );
    // Both kinds at once.
    let r = list(addr, "/?X-Amz-Algorithm", &[("authorization", "X")]).await;
    assert_eq!(
        answer(&r),
        (
            400,
            "InvalidSignatureException".into(),
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.".into()
        )
    );
    // An empty X-Amz-Algorithm is missing, but names a query signature.
    let r = list(addr, "/?X-Amz-Algorithm", &[]).await;
    assert_eq!(answer(&r), incomplete(ALL_QUERY_MISSING));
    let r = list(
        addr,
        "/?X-Amz-Algorithm=a&X-Amz-Credential=b&X-Amz-Signature=c&X-Amz-Date=d",
        &[],
    )
    .await;
    assert_eq!(
        answer(&r),
        incomplete(
            "AWS query-string parameters must include 'X-Amz-SignedHeaders'. Re-examine the query-string parameters."
        )
    );
    // DynamoDB checks the same form.
    let r = raw_unsigned(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", "DynamoDB_20120810.ListTables"),
            ("content-type", "application/x-amz-json-1.0"),
            ("authorization", "X"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        answer(&r),
        (
            400,
            "com.amazon.coral.service#IncompleteSignatureException".into(),
            all_header_missing("X")
        )
    );
}

/// AWS's order: content type, syntax and operation before the signature,
/// the signature before the members are validated.
#[tokio::test]
async fn signature_answers_come_in_aws_order() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();
    let unsigned = |headers: Vec<(&'static str, &'static str)>, body: &'static [u8]| {
        let addr = addr.to_string();
        async move { raw_unsigned(&addr, false, "POST", "/", &headers, body.to_vec()).await }
    };
    let r = unsigned(vec![LIST, JSON], b"{not json").await;
    assert_eq!(answer(&r).1, "SerializationException");
    let r = unsigned(vec![LIST, JSON], b"").await;
    assert_eq!(answer(&r).1, "SerializationException");
    let r = unsigned(
        vec![("x-amz-target", "Kinesis_20131202.Whatever"), JSON],
        b"{}",
    )
    .await;
    assert_eq!(answer(&r).1, "UnknownOperationException");
    let r = unsigned(vec![JSON], b"{}").await;
    assert_eq!(answer(&r).1, "UnknownOperationException");
    // No content type the service speaks: CBOR without a body, XML with
    // one, before any signature.
    let r = unsigned(vec![LIST], b"").await;
    assert_eq!(cbor_type(&r), "SerializationException");
    let r = unsigned(vec![LIST], b"{}").await;
    assert_eq!(r.status, 404);
    // The old Coral protocol's envelope, before any signature.
    let r = unsigned(vec![LIST, ("content-type", "application/json")], b"{}").await;
    assert_eq!(
        r.json()["Output"]["__type"],
        "com.amazon.coral.service#UnknownOperationException"
    );
    // A member of the wrong type: the signature is answered first...
    let bad = br#"{"StreamName": 12, "ShardCount": 1}"#;
    let create = ("x-amz-target", "Kinesis_20131202.CreateStream");
    let r = unsigned(vec![create, JSON], bad).await;
    assert_eq!(answer(&r).1, "MissingAuthenticationTokenException");
    let r = unsigned(vec![create, JSON, ("authorization", "X")], bad).await;
    assert_eq!(answer(&r).1, "IncompleteSignatureException");
    // ...and with a well-formed one, validation.
    let r = api(addr, "CreateStream", std::str::from_utf8(bad).unwrap()).await;
    assert_eq!(answer(&r).1, "SerializationException", "{:?}", r.body);
    let r = api(
        addr,
        "CreateStream",
        r#"{"StreamName": "bad name", "ShardCount": 1}"#,
    )
    .await;
    assert_eq!(answer(&r).1, "ValidationException");
}

#[tokio::test]
async fn the_operator_may_allow_unsigned_requests() {
    let srv = TestServer::start_with(&["--allow-unsigned-requests"]);
    let addr = srv.addr.as_str();
    let r = list(addr, "/", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = raw_unsigned(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", "DynamoDB_20120810.ListTables"),
            ("content-type", "application/x-amz-json-1.0"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A malformed signature is still refused: only its absence is allowed.
    let r = list(addr, "/", &[("authorization", "X")]).await;
    assert_eq!(answer(&r), incomplete(&all_header_missing("X")));
    let r = list(addr, "/?X-Amz-Algorithm", &[]).await;
    assert_eq!(answer(&r), incomplete(ALL_QUERY_MISSING));
    // The SDK (which signs) works alike.
    srv.client().list_streams().send().await.unwrap();
}

#[test]
fn unsigned_requests_cannot_be_allowed_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.toml");
    std::fs::write(
        &creds,
        "[[principal]]\nname = \"a\"\naccess_key_id = \"AKID1\"\nsecret_access_key = \"s\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--credentials")
        .arg(&creds)
        .env("RIPSTREAM_ALLOW_UNSIGNED_REQUESTS", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without credentials only"), "{stderr}");
}

fn cbor_type(r: &RawResponse) -> String {
    assert_eq!(r.headers["content-type"], "application/x-amz-cbor-1.1");
    let v: ciborium::Value = ciborium::from_reader(&r.body[..]).expect("a CBOR body");
    v.as_map()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_text() == Some("__type"))
                .and_then(|(_, v)| v.as_text().map(String::from))
        })
        .unwrap_or_default()
}
