//! Amazon Data Firehose's HTTP endpoint delivery protocol, version 1.0.
//!
//! A request is a POST of `{"requestId", "timestamp", "records": [{"data":
//! base64}]}` (gzip-encoded when configured) with the headers
//! `X-Amz-Firehose-Protocol-Version: 1.0`, `X-Amz-Firehose-Request-Id`
//! (the same on every attempt at one batch, so a receiver can
//! deduplicate), `X-Amz-Firehose-Source-Arn`, `X-Amz-Firehose-Access-Key`
//! (when one is configured) and `X-Amz-Firehose-Common-Attributes`
//! (`{"commonAttributes": {...}}`, when any are configured). Success is a
//! 200 whose JSON body names the same `requestId`; anything else is a
//! failed attempt.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::{Client, DeliveryError, MAX_RESPONSE_BYTES, Url, snippet};

pub const PROTOCOL_VERSION: &str = "1.0";

/// Where and how a stream's batches are sent.
#[derive(Clone)]
pub struct Endpoint {
    pub url: Url,
    /// Sent verbatim as `X-Amz-Firehose-Access-Key`.
    pub access_key: Option<String>,
    /// RequestConfiguration.CommonAttributes, in order.
    pub common_attributes: Vec<(String, String)>,
    /// RequestConfiguration.ContentEncoding GZIP.
    pub gzip: bool,
    /// The delivery stream's ARN (`X-Amz-Firehose-Source-Arn`).
    pub source_arn: String,
    /// How long the endpoint has to answer (AWS: 3 minutes).
    pub timeout: Duration,
}

/// The access key and the URL (whose query may hold a token) stay out of
/// logs.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.url.host_str())
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("common_attributes", &self.common_attributes)
            .field("gzip", &self.gzip)
            .field("source_arn", &self.source_arn)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The request body for a batch.
pub fn request_body(request_id: &str, timestamp_ms: i64, records: &[&[u8]]) -> Vec<u8> {
    let records: Vec<Value> = records
        .iter()
        .map(|r| json!({"data": STANDARD.encode(r)}))
        .collect();
    serde_json::to_vec(&json!({
        "requestId": request_id,
        "timestamp": timestamp_ms,
        "records": records,
    }))
    .unwrap_or_default()
}

/// The `X-Amz-Firehose-Common-Attributes` value, `None` without attributes.
pub fn common_attributes_header(attrs: &[(String, String)]) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    let mut m = Map::new();
    for (k, v) in attrs {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    Some(json!({"commonAttributes": m}).to_string())
}

/// Checks a response: 200 with a JSON body whose `requestId` is ours.
pub fn check_response(status: u16, body: &[u8], request_id: &str) -> Result<(), DeliveryError> {
    if status != 200 {
        return Err(DeliveryError::Status {
            status,
            body: snippet(body),
        });
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        DeliveryError::InvalidResponse(format!("the body is not a JSON object: {}", snippet(body)))
    })?;
    match v.get("requestId").and_then(Value::as_str) {
        Some(id) if id == request_id => Ok(()),
        Some(id) => Err(DeliveryError::InvalidResponse(format!(
            "the response's requestId {id} is not the request's {request_id}"
        ))),
        None => Err(DeliveryError::InvalidResponse(
            "the response has no requestId".into(),
        )),
    }
}

impl Client {
    /// One attempt at delivering `records` as request `request_id`.
    pub async fn send_http_endpoint(
        &self,
        ep: &Endpoint,
        request_id: &str,
        timestamp_ms: i64,
        records: &[&[u8]],
    ) -> Result<(), DeliveryError> {
        let mut body = request_body(request_id, timestamp_ms, records);
        let mut req = self
            .http
            .post(ep.url.clone())
            .header("Content-Type", "application/json")
            .header("X-Amz-Firehose-Protocol-Version", PROTOCOL_VERSION)
            .header("X-Amz-Firehose-Request-Id", request_id)
            .header("X-Amz-Firehose-Source-Arn", &ep.source_arn);
        if let Some(k) = &ep.access_key {
            req = req.header("X-Amz-Firehose-Access-Key", k);
        }
        if let Some(a) = common_attributes_header(&ep.common_attributes) {
            req = req.header("X-Amz-Firehose-Common-Attributes", a);
        }
        if ep.gzip {
            body = crate::gzip(&body)?;
            req = req.header("Content-Encoding", "gzip");
        }
        let (status, resp) = self
            .exchange(req.body(body), ep.timeout, MAX_RESPONSE_BYTES)
            .await?;
        check_response(status, &resp, request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Reply, serve};
    use std::io::Read;
    use std::sync::Arc;

    fn endpoint(url: &str, gzip: bool) -> Endpoint {
        Endpoint {
            url: Url::parse(url).unwrap(),
            access_key: Some("k3y".into()),
            common_attributes: vec![("env".into(), "test".into())],
            gzip,
            source_arn: "arn:aws:firehose:us-east-1:000000000000:deliverystream/s".into(),
            timeout: Duration::from_millis(300),
        }
    }

    fn ok_reply(body: &[u8]) -> Reply {
        let v: Value = serde_json::from_slice(body).unwrap();
        Reply::Json(
            200,
            json!({"requestId": v["requestId"], "timestamp": 1}).to_string(),
        )
    }

    #[tokio::test]
    async fn a_batch_is_sent_as_aws_sends_it() {
        let rx = serve(Arc::new(|_, r| {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut plain)
                .unwrap();
            ok_reply(&plain)
        }))
        .await;
        let c = Client::new().unwrap();
        c.send_http_endpoint(&endpoint(&rx.url, true), "rid-1", 42, &[b"a", b"bc"])
            .await
            .unwrap();
        let got = rx.got.lock().unwrap()[0].clone();
        let h = |k: &str| got.headers.get(k).unwrap().to_str().unwrap().to_string();
        assert_eq!(h("x-amz-firehose-protocol-version"), "1.0");
        assert_eq!(h("x-amz-firehose-request-id"), "rid-1");
        assert_eq!(h("x-amz-firehose-access-key"), "k3y");
        assert_eq!(h("content-encoding"), "gzip");
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(
            serde_json::from_str::<Value>(&h("x-amz-firehose-common-attributes")).unwrap(),
            json!({"commonAttributes": {"env": "test"}})
        );
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&got.body[..])
            .read_to_end(&mut plain)
            .unwrap();
        let v: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(
            v,
            json!({"requestId": "rid-1", "timestamp": 42, "records": [{"data": "YQ=="}, {"data": "YmM="}]})
        );
    }

    #[tokio::test]
    async fn wrong_answers_are_failures() {
        let rx = serve(Arc::new(|n, r| match n {
            0 => Reply::Json(500, "{}".into()),
            1 => Reply::Json(200, json!({"requestId": "other"}).to_string()),
            2 => Reply::Json(200, "not json".into()),
            3 => Reply::Hang,
            _ => ok_reply(&r.body),
        }))
        .await;
        let c = Client::new().unwrap();
        let ep = endpoint(&rx.url, false);
        let send = || c.send_http_endpoint(&ep, "rid", 1, &[b"x"]);
        assert!(matches!(
            send().await,
            Err(DeliveryError::Status { status: 500, .. })
        ));
        assert!(matches!(
            send().await,
            Err(DeliveryError::InvalidResponse(_))
        ));
        assert!(matches!(
            send().await,
            Err(DeliveryError::InvalidResponse(_))
        ));
        assert!(matches!(send().await, Err(DeliveryError::Timeout(_))));
        send().await.unwrap();
        // No gzip configured: no Content-Encoding at all.
        let got = rx.got.lock().unwrap();
        assert!(got[4].headers.get("content-encoding").is_none());
    }

    #[test]
    fn no_attributes_no_header() {
        assert_eq!(common_attributes_header(&[]), None);
    }
}
