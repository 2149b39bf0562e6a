//! The AWS Security Token Service as far as Kinesis clients need it:
//! `GetCallerIdentity`, which the Kinesis Producer Library calls at start-up
//! to learn its account, answered with the identity the front door
//! authenticated.
//!
//! The front door speaks the awsQuery protocol for it (form in, XML out);
//! this crate sees only the JSON form of the input and answers the JSON form
//! of the output, like every other service.

use std::sync::Arc;

use http::StatusCode;
use ripstream_api::{BoxError, CallFuture, Caller, Reply, Request, Spec};
use sha2::{Digest, Sha256};

/// The vendored botocore model of STS, trimmed to the operations served.
pub static MODEL: &str = include_str!("../model/sts-2011-06-15.json");

/// The model's API version, which every awsQuery request names.
pub const API_VERSION: &str = "2011-06-15";

/// What STS answers with.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// An operation of STS that Ripstream does not serve (the front door
    /// asks [`ripstream_api::Service::supports`] first, so only a caller of
    /// the library meets it).
    #[error("Could not find operation {0} for version {API_VERSION}")]
    InvalidAction(String),
}

impl ripstream_api::ServiceError for StsError {
    fn code(&self) -> &'static str {
        match self {
            StsError::InvalidAction(_) => "InvalidAction",
        }
    }

    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

/// The identity `GetCallerIdentity` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub arn: String,
    pub user_id: String,
    pub account: String,
}

/// STS as the front door mounts it.
#[derive(Debug, Clone)]
pub struct Sts {
    spec: Arc<Spec>,
    region: String,
    account: String,
}

impl Sts {
    /// STS for the server's region (its partition goes into ARNs) and account.
    pub fn new(region: impl Into<String>, account: impl Into<String>) -> Sts {
        Sts {
            spec: Arc::new(
                Spec::from_model(MODEL, "sts").expect("the vendored model has metadata"),
            ),
            region: region.into(),
            account: account.into(),
        }
    }

    /// Who `caller` is, as AWS reports it: an IAM user's ARN with its
    /// unique id (`AIDA...`), or in anonymous mode the account's root
    /// (whose user id is the account id), since an unsigned server acts for
    /// its whole account.
    pub fn identity(&self, caller: Caller<'_>) -> Identity {
        match caller {
            Caller::Anonymous => Identity {
                arn: format!(
                    "arn:{}:iam::{}:root",
                    ripstream_iam::partition(&self.region),
                    self.account
                ),
                user_id: self.account.clone(),
                account: self.account.clone(),
            },
            Caller::Principal { name, arn, .. } => Identity {
                arn: arn.to_string(),
                user_id: user_id(&self.account, name),
                account: self.account.clone(),
            },
        }
    }
}

/// An IAM user's unique id: `AIDA` and 17 characters of AWS's alphabet for
/// ids. AWS draws it at random when the user is created; Ripstream's users
/// live in a file, so it is derived from the account and the name instead,
/// the same on every start and different for every user.
pub fn user_id(account: &str, name: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(format!("{account}\0{name}").as_bytes());
    let mut id = String::from("AIDA");
    // 17 characters of 5 bits each: the first 85 bits of the digest.
    let mut bits: u128 = 0;
    for b in &digest[..16] {
        bits = (bits << 8) | u128::from(*b);
    }
    for i in 0..17 {
        let c = (bits >> (128 - 5 * (i + 1))) & 31;
        id.push(ALPHABET[c as usize] as char);
    }
    id
}

impl ripstream_api::Service for Sts {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn supports(&self, operation: &str) -> bool {
        operation == "GetCallerIdentity"
    }

    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a> {
        Box::pin(async move {
            match request.operation {
                // AWS needs no permission for it, and an explicit Deny of
                // `sts:GetCallerIdentity` does not stop it either, so
                // `authorize` is not asked.
                "GetCallerIdentity" => {
                    let id = self.identity(request.caller);
                    let body = serde_json::json!({
                        "Arn": id.arn,
                        "UserId": id.user_id,
                        "Account": id.account,
                    });
                    Ok(Reply::Json(body.to_string().into_bytes()))
                }
                other => Err(BoxError::from(StsError::InvalidAction(other.to_string()))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ripstream_api::Service;

    #[test]
    fn user_ids_are_stable_distinct_and_shaped_like_aws() {
        let a = user_id("123456789012", "alice");
        assert_eq!(a, user_id("123456789012", "alice"));
        assert_ne!(a, user_id("123456789012", "bob"));
        assert_ne!(a, user_id("210987654321", "alice"));
        assert_eq!(a.len(), 21);
        assert!(a.starts_with("AIDA"));
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
    }

    #[test]
    fn the_model_is_awsquery_signed_as_sts() {
        let sts = Sts::new("us-east-1", "123456789012");
        assert_eq!(sts.spec().protocol, ripstream_api::Protocol::AwsQuery);
        assert_eq!(sts.spec().signing_name, "sts");
        assert_eq!(sts.spec().metrics_name, "sts");
    }

    #[tokio::test]
    async fn answers_with_the_caller() {
        let sts = Sts::new("cn-north-1", "123456789012");
        let call = |caller| {
            sts.call(Request {
                operation: "GetCallerIdentity",
                input: serde_json::json!({}),
                authorize: &ripstream_api::AllowAll,
                caller,
                slot: None,
                body: None,
            })
        };
        let json = |r: Reply| match r {
            Reply::Json(b) => serde_json::from_slice::<serde_json::Value>(&b).unwrap(),
            other => panic!("{other:?}"),
        };
        let anon = json(call(Caller::Anonymous).await.unwrap());
        assert_eq!(anon["Arn"], "arn:aws-cn:iam::123456789012:root");
        assert_eq!(anon["UserId"], "123456789012");
        assert_eq!(anon["Account"], "123456789012");
        let user = json(
            call(Caller::Principal {
                name: "alice",
                access_key_id: "AKIDALICE",
                arn: "arn:aws-cn:iam::123456789012:user/alice",
            })
            .await
            .unwrap(),
        );
        assert_eq!(user["Arn"], "arn:aws-cn:iam::123456789012:user/alice");
        assert_eq!(user["UserId"], user_id("123456789012", "alice"));
        assert_eq!(user["Account"], "123456789012");
        let err = sts
            .call(Request {
                operation: "AssumeRole",
                input: serde_json::json!({}),
                authorize: &ripstream_api::AllowAll,
                caller: Caller::Anonymous,
                slot: None,
                body: None,
            })
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "InvalidAction");
    }
}
