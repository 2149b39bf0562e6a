//! Push delivery over HTTP, for services that send batches of records to
//! a receiver someone else runs: Amazon Data Firehose's HTTP endpoint
//! request/response protocol ([`http_endpoint`]), Splunk's HTTP Event
//! Collector with indexer acknowledgement ([`splunk`]) and the
//! OpenSearch/Elasticsearch `_bulk` API ([`bulk`]).
//!
//! Each client makes one attempt and says whether its failure is worth
//! retrying; the caller owns retries, deadlines, durability and error
//! output, so this crate knows nothing of delivery streams, checkpoints or
//! object storage.
//!
//! Outbound URLs come from API callers, so [`parse_url`] is the one place
//! they are admitted: `https` only unless the caller allows `http`, no
//! credentials or fragments in them, and the [`Client`] never follows
//! redirects (a redirect could send a batch, and its access key, to a host
//! the URL check never saw).

pub mod bulk;
pub mod http_endpoint;
pub mod splunk;

use std::time::Duration;

pub use reqwest::Url;

/// The most bytes of a response body read: AWS caps an HTTP endpoint's
/// response at 1 MiB; bulk responses for large batches are bigger, so each
/// client passes its own cap.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a URL is not admitted as a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0} is not a valid URL")]
    Invalid(String),
    #[error("the URL must use https (http:// destinations are off on this server)")]
    HttpNotAllowed,
    #[error("the URL scheme {0} is not supported: only https (and http where allowed)")]
    Scheme(String),
    #[error("the URL must not carry credentials or a fragment")]
    Userinfo,
}

/// Parses a destination URL under the server's policy.
pub fn parse_url(raw: &str, allow_http: bool) -> Result<Url, UrlError> {
    let url = Url::parse(raw).map_err(|_| UrlError::Invalid(raw.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(UrlError::HttpNotAllowed),
        other => return Err(UrlError::Scheme(other.to_string())),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::Invalid(raw.to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(UrlError::Userinfo);
    }
    Ok(url)
}

/// Why one attempt failed. Every variant is retryable but those
/// [`DeliveryError::retryable`] says not; the caller retries within its
/// retry duration either way if it wants to (AWS retries every failure of
/// an HTTP endpoint).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No connection (refused, DNS, TLS).
    #[error("could not connect to the endpoint: {0}")]
    Connect(String),
    /// The endpoint did not answer within the response timeout.
    #[error("the endpoint did not respond within {0:?}")]
    Timeout(Duration),
    /// The endpoint answered with a status other than success.
    #[error("the endpoint answered {status}: {body}")]
    Status { status: u16, body: String },
    /// The endpoint answered success, but not in the protocol's format.
    #[error("the endpoint's response is not valid: {0}")]
    InvalidResponse(String),
    /// Splunk accepted the batch but did not acknowledge indexing it in
    /// time.
    #[error(
        "did not receive an acknowledgement from HEC before the HEC acknowledgement timeout ({0:?}) expired"
    )]
    AckTimeout(Duration),
    /// The request could not be sent (a body error, a protocol error).
    #[error("the request failed: {0}")]
    Request(String),
}

impl DeliveryError {
    /// Whether the same request may succeed later: everything but the
    /// 4xx answers that say the request itself is wrong (429 and 408 are
    /// retryable).
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Status { status, .. } => {
                !(400..500).contains(status) || *status == 429 || *status == 408
            }
            _ => true,
        }
    }

    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> DeliveryError {
        // The URL may carry a token in its query (the model marks it
        // sensitive): messages go to logs and error output without it.
        let e = e.without_url();
        if e.is_timeout() {
            DeliveryError::Timeout(timeout)
        } else if e.is_connect() {
            DeliveryError::Connect(chain(&e))
        } else {
            DeliveryError::Request(chain(&e))
        }
    }
}

/// An error with its causes, one line (reqwest's Display omits them).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The HTTP client every destination shares (connection pools per host).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    pub fn new() -> Result<Client, DeliveryError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ripstream-delivery/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DeliveryError::Request(chain(&e)))?;
        Ok(Client { http })
    }

    /// Sends a request and reads its status and (capped) body.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
        cap: usize,
    ) -> Result<(u16, Vec<u8>), DeliveryError> {
        let work = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| DeliveryError::from_reqwest(e, timeout))?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| DeliveryError::from_reqwest(e, timeout))?
            {
                if body.len() + chunk.len() > cap {
                    return Err(DeliveryError::InvalidResponse(format!(
                        "the response body is larger than {cap} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        // The timeout covers the body too: an endpoint that sends headers
        // and then stalls is as unresponsive as one that sends nothing.
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| DeliveryError::Timeout(timeout))?
    }
}

/// A response body for an error message: UTF-8, cut to a few hundred
/// bytes as AWS cuts what it logs.
pub(crate) fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let mut end = s.len().min(512);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// gzip of a request body.
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>, DeliveryError> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(data)
        .and_then(|_| enc.finish())
        .map_err(|e| DeliveryError::Request(e.to_string()))
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_unless_allowed() {
        assert!(parse_url("https://example.com/x?y=1", false).is_ok());
        assert_eq!(
            parse_url("http://127.0.0.1:8080/", false),
            Err(UrlError::HttpNotAllowed)
        );
        assert!(parse_url("http://127.0.0.1:8080/", true).is_ok());
        assert!(matches!(
            parse_url("file:///etc/passwd", true),
            Err(UrlError::Scheme(_))
        ));
        assert_eq!(
            parse_url("https://u:p@example.com/", false),
            Err(UrlError::Userinfo)
        );
        assert!(matches!(
            parse_url("not a url", true),
            Err(UrlError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn errors_do_not_repeat_the_url() {
        // Nothing listens on port 9 of 127.0.0.1 (discard; refused here).
        let c = Client::new().unwrap();
        let ep = crate::http_endpoint::Endpoint {
            url: Url::parse("http://127.0.0.1:9/in?token=s3cret").unwrap(),
            access_key: None,
            common_attributes: vec![],
            gzip: false,
            source_arn: String::new(),
            timeout: Duration::from_secs(5),
        };
        let e = c
            .send_http_endpoint(&ep, "r", 0, &[b"x"])
            .await
            .unwrap_err();
        assert!(matches!(e, DeliveryError::Connect(_)), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn which_statuses_are_retried() {
        let s = |status| DeliveryError::Status {
            status,
            body: String::new(),
        };
        assert!(s(500).retryable());
        assert!(s(503).retryable());
        assert!(s(429).retryable());
        assert!(!s(400).retryable());
        assert!(!s(403).retryable());
        assert!(DeliveryError::Timeout(Duration::from_secs(1)).retryable());
    }
}
