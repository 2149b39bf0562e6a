//! Authorization bypasses and what a signature covers, each pinned by the
//! request that used to get through: validly signed requests (the official
//! SDKs sign them) carrying members, ARNs and tokens crafted to make the
//! server authorize one resource and act on another.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::{Value, json};

use crate::support::*;

const ACCOUNT_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000";

const CREDENTIALS: &str = r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"

[[principal]]
name = "orders-admin"
access_key_id = "AKIDORDERS0000000001"
secret_access_key = "orders-secret"
policy = '''{"Statement": [{"Effect": "Allow", "Action": "kinesis:*", "Resource": "arn:aws:kinesis:us-east-1:000000000000:stream/orders*"}]}'''

[[principal]]
name = "not-payments"
access_key_id = "AKIDNOTPAY0000000001"
secret_access_key = "notpay-secret"
policy = '''{"Statement": [
  {"Effect": "Allow", "Action": ["kinesis:*", "dynamodb:*"], "Resource": "*"},
  {"Effect": "Deny", "Action": "kinesis:*", "Resource": "arn:aws:kinesis:us-east-1:000000000000:stream/payments"}
]}'''

[[principal]]
name = "reader"
access_key_id = "AKIDREADER0000000001"
secret_access_key = "reader-secret"
policy = '''{"Statement": [{"Effect": "Allow", "Action": "kinesis:Describe*", "Resource": "*"}]}'''
"#;

fn secure_server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    (srv, dir)
}

fn stream_arn(name: &str) -> String {
    format!("{ACCOUNT_ARN}:stream/{name}")
}

/// Merges members into a request's JSON body before the SDK signs it, so the
/// server receives a validly signed request with members the SDK would
/// never send.
#[derive(Debug)]
struct Smuggle(Value);

impl Intercept for Smuggle {
    fn name(&self) -> &'static str {
        "Smuggle"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.request().body().bytes().unwrap_or_default();
        let mut v: Value = serde_json::from_slice(body)?;
        for (k, x) in self.0.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        let bytes = serde_json::to_vec(&v)?;
        let len = bytes.len().to_string();
        context
            .request_mut()
            .headers_mut()
            .insert("content-length", len);
        *context.request_mut().body_mut() = SdkBody::from(bytes);
        Ok(())
    }
}

/// Claims the signed body's hash in `x-amz-content-sha256`, then sends
/// another body under that signature (a replayed capture).
#[derive(Debug)]
struct SwapBodyAfterSigning;

impl Intercept for SwapBodyAfterSigning {
    fn name(&self) -> &'static str {
        "SwapBodyAfterSigning"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use sha2::Digest;
        let body = context.request().body().bytes().unwrap_or_default();
        let hash = hex::encode(sha2::Sha256::digest(body));
        context
            .request_mut()
            .headers_mut()
            .insert("x-amz-content-sha256", hash);
        Ok(())
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context
            .request()
            .body()
            .bytes()
            .unwrap_or_default()
            .to_vec();
        let swapped = String::from_utf8(body)?.replace("orders", "orderz");
        *context.request_mut().body_mut() = SdkBody::from(swapped);
        Ok(())
    }
}

fn client_with_interceptor(
    srv: &TestServer,
    key: &str,
    secret: &str,
    interceptor: impl Intercept + 'static,
) -> Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .endpoint_url(srv.url())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            key, secret, None, None, "test",
        ))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .interceptor(interceptor)
        .build();
    Client::from_conf(conf)
}

fn admin(srv: &TestServer) -> Client {
    client_with(&srv.url(), "AKIDADMIN00000000001", "admin-secret")
}

async fn records_in(c: &Client, stream: &str) -> usize {
    read_shard(c, stream, "shardId-000000000000").await.len()
}

#[tokio::test]
async fn members_the_operation_does_not_define_never_authorize_it() {
    let (srv, _dir) = secure_server();
    let root = admin(&srv);
    create_stream(&root, "orders", 1).await;
    create_stream(&root, "payments", 1).await;

    // PutRecord names payments; a smuggled ResourceARN (not a PutRecord
    // member) names orders, which orders-admin may write.
    let smuggler = client_with_interceptor(
        &srv,
        "AKIDORDERS0000000001",
        "orders-secret",
        Smuggle(
            json!({"ResourceARN": stream_arn("orders"), "ConsumerARN": format!("{}/consumer/c:1", stream_arn("orders"))}),
        ),
    );
    let e = smuggler
        .put_record()
        .stream_name("payments")
        .partition_key("k")
        .data(Blob::new("stolen"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException", "{}", message(&e));
    assert!(message(&e).contains("stream/payments"), "{}", message(&e));
    assert_eq!(records_in(&root, "payments").await, 0);
    let e = smuggler
        .delete_stream()
        .stream_name("payments")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    root.describe_stream_summary()
        .stream_name("payments")
        .send()
        .await
        .expect("payments still exists");
    // GetRecords on a payments iterator, with orders smuggled in.
    let it = root
        .get_shard_iterator()
        .stream_name("payments")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let e = smuggler
        .get_records()
        .shard_iterator(it)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException", "{}", message(&e));
    // PutResourcePolicy names its resource by ResourceARN; StreamName and
    // StreamARN are not its members, so naming orders there grants nothing.
    let by_stream = client_with_interceptor(
        &srv,
        "AKIDORDERS0000000001",
        "orders-secret",
        Smuggle(json!({"StreamName": "orders", "StreamARN": stream_arn("orders")})),
    );
    let open_policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kinesis:*","Resource":"*"}]}"#;
    let e = by_stream
        .put_resource_policy()
        .resource_arn(stream_arn("payments"))
        .policy(open_policy)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException", "{}", message(&e));
    let policy = root
        .get_resource_policy()
        .resource_arn(stream_arn("payments"))
        .send()
        .await
        .unwrap();
    assert!(
        policy.policy().is_empty() || policy.policy() == "{}",
        "payments got a policy: {:?}",
        policy.policy()
    );
    // The same principal's own stream works through the same interceptor.
    smuggler
        .put_record()
        .stream_name("orders")
        .partition_key("k")
        .data(Blob::new("mine"))
        .send()
        .await
        .unwrap();

    // StreamName and StreamARN must name one stream.
    let e = root
        .put_record()
        .stream_name("orders")
        .stream_arn(stream_arn("payments"))
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert_eq!(records_in(&root, "payments").await, 0);
}

#[tokio::test]
async fn arns_are_canonical_before_policies_see_them() {
    let (srv, _dir) = secure_server();
    let root = admin(&srv);
    create_stream(&root, "payments", 1).await;
    let denied = client_with(&srv.url(), "AKIDNOTPAY0000000001", "notpay-secret");
    let e = denied
        .put_record()
        .stream_name("payments")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    // Other spellings of the same stream's ARN: another partition, region or
    // account is another stream (not found); other cases are malformed.
    for (arn, expected) in [
        (
            "arn:aws-cn:kinesis:us-east-1:000000000000:stream/payments",
            "ResourceNotFoundException",
        ),
        (
            "arn:aws-us-gov:kinesis:us-east-1:000000000000:stream/payments",
            "ResourceNotFoundException",
        ),
        (
            "arn:aws:kinesis:us-west-2:000000000000:stream/payments",
            "ResourceNotFoundException",
        ),
        (
            "arn:aws:KINESIS:us-east-1:000000000000:stream/payments",
            "ValidationException",
        ),
    ] {
        let e = denied
            .put_record()
            .stream_arn(arn)
            .partition_key("k")
            .data(Blob::new("x"))
            .send()
            .await
            .unwrap_err();
        assert!(
            [expected, "InvalidArgumentException"].contains(&code(&e).as_str()),
            "{arn}: {} {}",
            code(&e),
            message(&e)
        );
    }
    assert_eq!(records_in(&root, "payments").await, 0);
    // A consumer ARN whose timestamp has leading zeros is not the consumer.
    let consumer = root
        .register_stream_consumer()
        .stream_arn(stream_arn("payments"))
        .consumer_name("c1")
        .send()
        .await
        .unwrap()
        .consumer
        .unwrap();
    let (prefix, secs) = consumer.consumer_arn.rsplit_once(':').unwrap();
    let padded = format!("{prefix}:00{secs}");
    let e = root
        .describe_stream_consumer()
        .consumer_arn(&padded)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException", "{}", message(&e));
    // And a consumer ARN must belong to the stream it is given with.
    create_stream(&root, "other", 1).await;
    let e = root
        .describe_stream_consumer()
        .consumer_arn(&consumer.consumer_arn)
        .stream_arn(stream_arn("other"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException", "{}", message(&e));
}

#[tokio::test]
async fn list_shards_tokens_are_signed_and_authorized_by_their_stream() {
    let (srv, _dir) = secure_server();
    let root = admin(&srv);
    create_stream(&root, "payments", 3).await;
    let page = root
        .list_shards()
        .stream_name("payments")
        .max_results(1)
        .send()
        .await
        .unwrap();
    let token = page.next_token.unwrap();
    // The token alone names payments, which this principal is denied.
    let denied = client_with(&srv.url(), "AKIDNOTPAY0000000001", "notpay-secret");
    let e = denied
        .list_shards()
        .next_token(&token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException", "{}", message(&e));
    // The owner pages on.
    let next = root.list_shards().next_token(&token).send().await.unwrap();
    assert_eq!(next.shards().len(), 2);
    // A token written by hand (the old unsigned layout) is refused.
    let forged = {
        let raw = json!({"s": "payments", "u": 0, "a": 0, "t": i64::MIN});
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&raw).unwrap())
    };
    let e = root
        .list_shards()
        .next_token(forged)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException", "{}", message(&e));
}

#[tokio::test]
async fn a_resource_policy_naming_the_account_does_not_grant_by_itself() {
    let (srv, _dir) = secure_server();
    let root = admin(&srv);
    create_stream(&root, "shared", 1).await;
    let reader = client_with(&srv.url(), "AKIDREADER0000000001", "reader-secret");
    let iter = |c: &Client| {
        c.get_shard_iterator()
            .stream_name("shared")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
    };
    for principal in ["arn:aws:iam::000000000000:root", "000000000000"] {
        let policy = format!(
            r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{principal}"}}, "Action": "kinesis:GetShardIterator", "Resource": "*"}}]}}"#
        );
        root.put_resource_policy()
            .resource_arn(stream_arn("shared"))
            .policy(policy)
            .send()
            .await
            .unwrap();
        let e = iter(&reader).await.unwrap_err();
        assert_eq!(code(&e), "AccessDeniedException", "{principal}");
    }
    // Naming the principal itself grants; a partial wildcard does not.
    for (principal, allowed) in [
        ("arn:aws:iam::000000000000:user/reader", true),
        ("arn:aws:iam::000000000000:user/*", false),
        ("arn:aws:iam::000000000000:user/read*", false),
    ] {
        let policy = format!(
            r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{principal}"}}, "Action": "kinesis:GetShardIterator", "Resource": "*"}}]}}"#
        );
        root.put_resource_policy()
            .resource_arn(stream_arn("shared"))
            .policy(policy)
            .send()
            .await
            .unwrap();
        assert_eq!(iter(&reader).await.is_ok(), allowed, "{principal}");
    }
    // Allow with NotPrincipal would grant the world: refused.
    let e = root
        .put_resource_policy()
        .resource_arn(stream_arn("shared"))
        .policy(r#"{"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::000000000000:user/x"}, "Action": "kinesis:*", "Resource": "*"}]}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    // Documents over AWS's size quota are refused.
    let padding = "x".repeat(21 * 1024);
    let big = format!(
        r#"{{"Id": "{padding}", "Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "*"}}, "Action": "kinesis:*", "Resource": "*"}}]}}"#
    );
    let e = root
        .put_resource_policy()
        .resource_arn(stream_arn("shared"))
        .policy(big)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException", "{}", message(&e));
}

#[tokio::test]
async fn dynamodb_requests_naming_no_table_are_refused() {
    let (srv, _dir) = secure_server();
    let dynamo = |key: &str, secret: &str, smuggle: Option<Value>| {
        let mut conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .endpoint_url(srv.url())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                key, secret, None, None, "test",
            ))
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled());
        if let Some(v) = smuggle {
            conf = conf.interceptor(Smuggle(v));
        }
        aws_sdk_dynamodb::Client::from_conf(conf.build())
    };
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    use aws_sdk_dynamodb::types::*;
    let root = dynamo("AKIDADMIN00000000001", "admin-secret", None);
    root.create_table()
        .table_name("leases")
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    // The reader is allowed nothing in DynamoDB; an empty RequestItems used
    // to leave DeleteTable with no resource, and so unchecked.
    let reader = dynamo(
        "AKIDREADER0000000001",
        "reader-secret",
        Some(json!({"RequestItems": {}})),
    );
    let e = reader
        .delete_table()
        .table_name("leases")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");
    root.describe_table()
        .table_name("leases")
        .send()
        .await
        .expect("the table is still there");
    // An ARN of another partition does not dodge a Deny.
    let e = root
        .describe_table()
        .table_name("arn:aws-cn:dynamodb:us-east-1:000000000000:table/leases")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"), "{e:?}");
}

#[tokio::test]
async fn the_signature_covers_the_body_received_and_comes_before_parsing() {
    let (srv, _dir) = secure_server();
    let root = admin(&srv);
    create_stream(&root, "orders", 1).await;
    // A signature whose x-amz-content-sha256 names the signed body, sent with
    // another body (the stream name changed) under it.
    let swapped = client_with_interceptor(
        &srv,
        "AKIDADMIN00000000001",
        "admin-secret",
        SwapBodyAfterSigning,
    );
    let e = swapped
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidSignatureException", "{}", message(&e));

    // Without credentials the server decodes nothing: a body that is not
    // JSON gets the missing-token answer, not a serialization error.
    let r = api_unsigned(&srv.addr, "ListStreams", "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["__type"],
        "MissingAuthenticationTokenException",
        "{:?}",
        r.body
    );
    let r = raw_unsigned(
        &srv.addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", "Kinesis_20131202.ListStreams"),
            ("content-type", "application/x-amz-cbor-1.1"),
        ],
        vec![0xbf; 64],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        !String::from_utf8_lossy(&r.body).contains("Serialization"),
        "{:?}",
        r.body
    );

    // Presigned requests live at most a week.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let date = ripstream_server::auth::sigv4::format_amz_date(now);
    for expires in ["604801", "18446744073709551616", "-5"] {
        let path = format!(
            "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDADMIN00000000001%2F{}%2Fus-east-1%2Fkinesis%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
            &date[..8]
        );
        let r = raw(
            &srv.addr,
            false,
            "POST",
            &path,
            &[
                ("x-amz-target", "Kinesis_20131202.ListStreams"),
                ("content-type", "application/x-amz-json-1.1"),
            ],
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(r.status, 400, "{expires}");
        assert_eq!(
            r.json()["__type"],
            "IncompleteSignatureException",
            "{expires}: {:?}",
            r.body
        );
    }
}
