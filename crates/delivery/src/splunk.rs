//! Splunk's HTTP Event Collector, as Firehose uses it: a batch is one POST
//! to `/services/collector/raw` (the records concatenated) or
//! `/services/collector/event` (one event JSON object per record), with
//! `Authorization: Splunk <token>` and an `X-Splunk-Request-Channel`. When
//! HEC indexer acknowledgement is on, the answer carries an `ackId`, and
//! the batch counts as delivered only once `/services/collector/ack` on the
//! same channel reports it indexed, within the acknowledgement timeout.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Client, DeliveryError, MAX_RESPONSE_BYTES, Url, snippet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointType {
    Raw,
    Event,
}

#[derive(Clone)]
pub struct Hec {
    /// The HEC base URL (`https://host:8088`).
    pub url: Url,
    pub endpoint_type: EndpointType,
    pub token: String,
    /// How long the collector has to answer one request.
    pub timeout: Duration,
    /// How long indexing may take to be acknowledged.
    pub ack_timeout: Duration,
    /// Between two acknowledgement polls.
    pub ack_poll: Duration,
}

/// The token stays out of logs.
impl std::fmt::Debug for Hec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hec")
            .field("host", &self.url.host_str())
            .field("endpoint_type", &self.endpoint_type)
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("ack_timeout", &self.ack_timeout)
            .finish()
    }
}

/// How a batch was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Acknowledged as indexed (`ackId`).
    Acknowledged(u64),
    /// Accepted by a collector without indexer acknowledgement.
    Accepted,
}

/// The event body of a record: a record that is a HEC event object (a JSON
/// object with an `event` member) as it is, anything else wrapped as the
/// `event` of one (JSON as JSON, other bytes as a string).
pub fn event_json(record: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(record) {
        Ok(v) if v.get("event").is_some() && v.is_object() => v,
        Ok(v) => json!({ "event": v }),
        Err(_) => json!({ "event": String::from_utf8_lossy(record) }),
    }
}

/// The body of a batch for the endpoint type.
pub fn batch_body(kind: EndpointType, records: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        match kind {
            EndpointType::Raw => out.extend_from_slice(r),
            EndpointType::Event => {
                out.extend(serde_json::to_vec(&event_json(r)).unwrap_or_default());
                out.push(b'\n');
            }
        }
    }
    out
}

/// HEC's error answers as Firehose names them in its error output
/// (AWS's Splunk data delivery errors): by HEC's own status `code` in the
/// answer where it gives one, else by the HTTP status.
pub fn error_code(e: &DeliveryError) -> &'static str {
    match e {
        DeliveryError::AckTimeout(_) => "Splunk.AckTimeout",
        DeliveryError::Timeout(_) => "Splunk.ConnectionTimeout",
        DeliveryError::Connect(_) => "Splunk.InvalidEndpoint",
        DeliveryError::Status { status, body } => {
            let hec = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("code").and_then(serde_json::Value::as_u64));
            match (hec, status) {
                (Some(1), _) => "Splunk.DisabledToken",
                (Some(2..=4), _) => "Splunk.InvalidToken",
                (Some(5 | 6 | 12 | 13), _) => "Splunk.InvalidDataFormat",
                (Some(7), _) => "Splunk.InvalidIndex",
                (Some(14), _) => "Splunk.DisabledAck",
                (Some(8 | 9), _) => "Splunk.ServerError",
                (_, 401 | 403) => "Splunk.InvalidToken",
                (_, 400) => "Splunk.InvalidDataFormat",
                (_, 404) => "Splunk.URLNotFound",
                (_, 413) => "Splunk.PayloadTooLarge",
                _ => "Splunk.ServerError",
            }
        }
        DeliveryError::InvalidResponse(_) | DeliveryError::ResponseTooLarge(_) => {
            "Splunk.ServerError"
        }
        DeliveryError::Request(_) => "Splunk.ConnectionClosed",
    }
}

fn path(base: &Url, p: &str) -> Url {
    let mut u = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), p);
    u.set_path(&joined);
    u
}

impl Client {
    /// One attempt: send the batch on a fresh channel, then (when the
    /// collector gives an ackId) poll until it is indexed or the
    /// acknowledgement timeout runs out.
    pub async fn send_splunk(
        &self,
        hec: &Hec,
        records: &[&[u8]],
    ) -> Result<Delivered, DeliveryError> {
        let channel = uuid::Uuid::new_v4().to_string();
        let endpoint = match hec.endpoint_type {
            EndpointType::Raw => "/services/collector/raw",
            EndpointType::Event => "/services/collector/event",
        };
        let auth = format!("Splunk {}", hec.token);
        let req = self
            .http
            .post(path(&hec.url, endpoint))
            .header("Authorization", &auth)
            .header("X-Splunk-Request-Channel", &channel)
            .header("Content-Type", "application/json")
            .body(batch_body(hec.endpoint_type, records));
        let (status, body) = self.exchange(req, hec.timeout, MAX_RESPONSE_BYTES).await?;
        if status != 200 {
            return Err(DeliveryError::Status {
                status,
                body: snippet(&body),
            });
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            DeliveryError::InvalidResponse(format!("not a HEC answer: {}", snippet(&body)))
        })?;
        if v.get("code")
            .and_then(Value::as_i64)
            .is_some_and(|c| c != 0)
        {
            return Err(DeliveryError::InvalidResponse(snippet(&body)));
        }
        let Some(ack) = v.get("ackId").and_then(Value::as_u64) else {
            return Ok(Delivered::Accepted);
        };
        let deadline = Instant::now() + hec.ack_timeout;
        loop {
            let req = self
                .http
                .post(path(&hec.url, "/services/collector/ack"))
                .header("Authorization", &auth)
                .header("X-Splunk-Request-Channel", &channel)
                .header("Content-Type", "application/json")
                .body(json!({"acks": [ack]}).to_string());
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DeliveryError::AckTimeout(hec.ack_timeout));
            }
            match self
                .exchange(req, hec.timeout.min(left), MAX_RESPONSE_BYTES)
                .await
            {
                Ok((200, body)) => {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if v["acks"][ack.to_string()].as_bool() == Some(true) {
                        return Ok(Delivered::Acknowledged(ack));
                    }
                }
                // A poll that fails is polled again until the deadline: the
                // batch itself was accepted.
                Ok((status, body)) => {
                    tracing::debug!(status, body = %snippet(&body), "HEC ack poll refused")
                }
                Err(e) => tracing::debug!(error = %e, "HEC ack poll failed"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DeliveryError::AckTimeout(hec.ack_timeout));
            }
            tokio::time::sleep(hec.ack_poll.min(left)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Reply, serve};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn hec(url: &str, kind: EndpointType, ack_ms: u64) -> Hec {
        Hec {
            url: Url::parse(url).unwrap(),
            endpoint_type: kind,
            token: "tok".into(),
            timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_millis(ack_ms),
            ack_poll: Duration::from_millis(20),
        }
    }

    #[test]
    fn event_bodies() {
        assert_eq!(event_json(br#"{"event":"x","host":"h"}"#)["host"], "h");
        assert_eq!(event_json(br#"{"a":1}"#), json!({"event": {"a": 1}}));
        assert_eq!(event_json(b"plain text"), json!({"event": "plain text"}));
        assert_eq!(batch_body(EndpointType::Raw, &[b"a\n", b"b\n"]), b"a\nb\n");
    }

    #[tokio::test]
    async fn acknowledged_after_polls_on_the_same_channel() {
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        let rx = serve(Arc::new(move |_, r| {
            if r.path == "/services/collector/event" {
                return Reply::Json(200, r#"{"text":"Success","code":0,"ackId":7}"#.into());
            }
            assert_eq!(r.path, "/services/collector/ack");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v, json!({"acks": [7]}));
            let done = p.fetch_add(1, Ordering::SeqCst) >= 2;
            Reply::Json(200, json!({"acks": {"7": done}}).to_string())
        }))
        .await;
        let c = Client::new().unwrap();
        let got = c
            .send_splunk(&hec(&rx.url, EndpointType::Event, 10_000), &[b"hello"])
            .await
            .unwrap();
        assert_eq!(got, Delivered::Acknowledged(7));
        let seen = rx.got.lock().unwrap();
        let channel = seen[0].headers["x-splunk-request-channel"].clone();
        assert!(
            seen.iter()
                .all(|r| r.headers["x-splunk-request-channel"] == channel)
        );
        assert!(
            seen.iter()
                .all(|r| r.headers["authorization"] == "Splunk tok")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&seen[0].body).unwrap(),
            json!({"event": "hello"})
        );
    }

    #[tokio::test]
    async fn an_ack_that_never_comes_times_out() {
        let rx = serve(Arc::new(|_, r| {
            if r.path == "/services/collector/raw" {
                Reply::Json(200, r#"{"text":"Success","code":0,"ackId":1}"#.into())
            } else {
                Reply::Json(200, r#"{"acks":{"1":false}}"#.into())
            }
        }))
        .await;
        let c = Client::new().unwrap();
        let e = c
            .send_splunk(&hec(&rx.url, EndpointType::Raw, 200), &[b"x"])
            .await
            .unwrap_err();
        assert!(matches!(e, DeliveryError::AckTimeout(_)), "{e}");
        assert_eq!(error_code(&e), "Splunk.AckTimeout");
    }

    #[tokio::test]
    async fn without_acks_acceptance_is_delivery_and_bad_tokens_are_refused() {
        let rx = serve(Arc::new(|n, _| match n {
            0 => Reply::Json(200, r#"{"text":"Success","code":0}"#.into()),
            _ => Reply::Json(403, r#"{"text":"Invalid token","code":4}"#.into()),
        }))
        .await;
        let c = Client::new().unwrap();
        let h = hec(&rx.url, EndpointType::Raw, 1000);
        assert_eq!(
            c.send_splunk(&h, &[b"x"]).await.unwrap(),
            Delivered::Accepted
        );
        let e = c.send_splunk(&h, &[b"x"]).await.unwrap_err();
        assert_eq!(error_code(&e), "Splunk.InvalidToken");
    }

    #[test]
    fn error_codes_are_awss_from_hec_codes_then_statuses() {
        let st = |status: u16, body: &str| DeliveryError::Status {
            status,
            body: body.to_string(),
        };
        assert_eq!(
            error_code(&st(403, r#"{"text":"Token disabled","code":1}"#)),
            "Splunk.DisabledToken"
        );
        assert_eq!(
            error_code(&st(400, r#"{"text":"Incorrect index","code":7}"#)),
            "Splunk.InvalidIndex"
        );
        assert_eq!(
            error_code(&st(400, r#"{"text":"ACK is disabled","code":14}"#)),
            "Splunk.DisabledAck"
        );
        assert_eq!(
            error_code(&st(400, r#"{"text":"Invalid data format","code":6}"#)),
            "Splunk.InvalidDataFormat"
        );
        assert_eq!(
            error_code(&st(503, r#"{"text":"Server is busy","code":9}"#)),
            "Splunk.ServerError"
        );
        assert_eq!(error_code(&st(401, "no json")), "Splunk.InvalidToken");
        assert_eq!(error_code(&st(404, "")), "Splunk.URLNotFound");
        assert_eq!(error_code(&st(413, "")), "Splunk.PayloadTooLarge");
        assert_eq!(
            error_code(&DeliveryError::Connect("refused".into())),
            "Splunk.InvalidEndpoint"
        );
    }
}
