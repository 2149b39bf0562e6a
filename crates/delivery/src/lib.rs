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
//! the URL check never saw). With an operator's [`Networks`] allow-list
//! ([`ClientBuilder::networks`]) every connection's address is checked
//! after DNS resolution, and IP-literal URLs before the request is sent.
//!
//! [`ClientBuilder`] is also how other outbound HTTP clients of the server
//! are made (Firehose's transformation functions), so every one has the
//! same redirect, proxy, timeout and trust policy.

pub mod bulk;
pub mod http_endpoint;
pub mod networks;
pub mod splunk;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use networks::{Networks, NetworksError, NotAllowed, ResolveError};
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
    /// The response body is longer than the caller's cap (bytes).
    #[error("the endpoint's response is not valid: the response body is larger than {0} bytes")]
    ResponseTooLarge(usize),
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
        if let Some(refused) = find::<NotAllowed>(&e) {
            // The allow-list's own words, not reqwest's layers around them.
            DeliveryError::Connect(refused.to_string())
        } else if e.is_timeout() {
            DeliveryError::Timeout(timeout)
        } else if e.is_connect() {
            DeliveryError::Connect(chain(&e))
        } else {
            DeliveryError::Request(chain(&e))
        }
    }
}

/// The first error of type `T` in `e`'s chain of causes.
fn find<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
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

/// Why a [`Client`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the CA file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the CA file {} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// How a [`Client`] is made: extra trusted roots on top of the platform's,
/// and an allow-list of networks.
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    roots: Vec<reqwest::Certificate>,
    networks: Option<Arc<Networks>>,
}

impl ClientBuilder {
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Also trusts the certificates of a PEM file (a private CA), read
    /// now so that a bad file is an error at start-up.
    pub fn ca_file(mut self, path: &Path) -> Result<ClientBuilder, ClientError> {
        use rustls_pki_types::pem::PemObject;
        let read = |source| ClientError::CaFile {
            path: path.to_path_buf(),
            source,
        };
        let ders: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(read)?
                .collect::<Result<_, _>>()
                .map_err(read)?;
        if ders.is_empty() {
            return Err(ClientError::NoCertificate(path.to_path_buf()));
        }
        for der in ders {
            let cert = reqwest::Certificate::from_der(&der)
                .map_err(|e| ClientError::Build(format!("{}: {}", path.display(), chain(&e))))?;
            self.roots.push(cert);
        }
        Ok(self)
    }

    /// Connects only to addresses in `networks` (`None`: any address).
    pub fn networks(mut self, networks: Option<Networks>) -> ClientBuilder {
        self.networks = networks.map(Arc::new);
        self
    }

    pub fn build(self) -> Result<Client, ClientError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect for us, past the
            // allow-list; HTTPS_PROXY in the server's environment is not
            // the operator's choice of where batches go either.
            .no_proxy()
            .user_agent(concat!("ripstream-delivery/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10));
        if !self.roots.is_empty() {
            b = b.tls_certs_merge(self.roots);
        }
        if let Some(n) = &self.networks {
            b = b.dns_resolver(Arc::new(networks::Resolver {
                networks: n.clone(),
            }));
        }
        let http = b.build().map_err(|e| ClientError::Build(chain(&e)))?;
        Ok(Client {
            http,
            networks: self.networks,
        })
    }
}

/// The HTTP client every destination shares (connection pools per host).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Checked on IP-literal URLs before each request (the resolver
    /// checks names).
    networks: Option<Arc<Networks>>,
}

impl Client {
    /// A client with the platform's roots and no allow-list.
    pub fn new() -> Result<Client, ClientError> {
        ClientBuilder::new().build()
    }

    /// One POST of a JSON body: the status and the body (at most `cap`
    /// bytes, else [`DeliveryError::ResponseTooLarge`]), within `timeout`.
    pub async fn post_json(
        &self,
        url: &Url,
        body: Vec<u8>,
        timeout: Duration,
        cap: usize,
    ) -> Result<(u16, Vec<u8>), DeliveryError> {
        let req = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.exchange(req, timeout, cap).await
    }

    /// Sends a request and reads its status and (capped) body.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
        cap: usize,
    ) -> Result<(u16, Vec<u8>), DeliveryError> {
        let req = req
            .build()
            .map_err(|e| DeliveryError::from_reqwest(e, timeout))?;
        if let Some(n) = &self.networks {
            // reqwest's connector never asks the resolver about an IP
            // literal.
            n.check_url(req.url())
                .map_err(|e| DeliveryError::Connect(e.to_string()))?;
        }
        let work = async {
            let mut resp = self
                .http
                .execute(req)
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
                    return Err(DeliveryError::ResponseTooLarge(cap));
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

    fn ok_endpoint(url: &str) -> crate::http_endpoint::Endpoint {
        crate::http_endpoint::Endpoint {
            url: Url::parse(&format!("{url}/in")).unwrap(),
            access_key: None,
            common_attributes: vec![],
            gzip: false,
            source_arn: String::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Answers each HTTP endpoint request as the protocol wants.
    fn ok_handler() -> crate::testing::Handler {
        Arc::new(|_, r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            crate::testing::Reply::Json(
                200,
                serde_json::json!({"requestId": v["requestId"], "timestamp": 1}).to_string(),
            )
        })
    }

    #[tokio::test]
    async fn https_needs_a_trusted_root_and_a_ca_file_adds_one() {
        let (ca_pem, acceptor) = crate::testing::test_pki();
        let rx = crate::testing::serve_with(ok_handler(), Some(acceptor)).await;
        assert!(rx.url.starts_with("https://127.0.0.1:"), "{}", rx.url);
        let ep = ok_endpoint(&rx.url);
        // The platform's roots do not know the test CA.
        let e = Client::new()
            .unwrap()
            .send_http_endpoint(&ep, "r", 0, &[b"x"])
            .await
            .unwrap_err();
        assert!(matches!(e, DeliveryError::Connect(_)), "{e}");
        assert!(e.to_string().contains("certificate"), "{e}");
        assert!(rx.got.lock().unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &ca_pem).unwrap();
        let c = ClientBuilder::new().ca_file(&ca).unwrap().build().unwrap();
        c.send_http_endpoint(&ep, "r", 0, &[b"x"]).await.unwrap();
        assert_eq!(rx.got.lock().unwrap().len(), 1);
    }

    #[test]
    fn bad_ca_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = ClientBuilder::new().ca_file(&missing).unwrap_err();
        assert!(matches!(e, ClientError::CaFile { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        assert!(matches!(
            ClientBuilder::new().ca_file(&empty),
            Err(ClientError::NoCertificate(_))
        ));
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(ClientBuilder::new().ca_file(&broken).is_err());
    }

    #[tokio::test]
    async fn the_allow_list_refuses_addresses_outside_it() {
        let rx = crate::testing::serve(ok_handler()).await;
        let port = rx.url.rsplit(':').next().unwrap().to_string();
        let elsewhere = ClientBuilder::new()
            .networks(Some(Networks::parse(["10.0.0.0/8"]).unwrap()))
            .build()
            .unwrap();
        // An IP literal (which reqwest does not resolve) and a name that
        // resolves to loopback are both refused, before any connection.
        for url in [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::ffff:127.0.0.1]:{port}"),
        ] {
            let e = elsewhere
                .send_http_endpoint(&ok_endpoint(&url), "r", 0, &[b"x"])
                .await
                .unwrap_err();
            assert!(matches!(e, DeliveryError::Connect(_)), "{url}: {e}");
            assert!(e.retryable());
            assert_eq!(
                e.to_string(),
                format!("could not connect to the endpoint: {NotAllowed}"),
                "{url}"
            );
        }
        assert!(rx.got.lock().unwrap().is_empty());
        let loopback = ClientBuilder::new()
            .networks(Some(
                Networks::parse(["10.0.0.0/8", "127.0.0.0/8"]).unwrap(),
            ))
            .build()
            .unwrap();
        for url in [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
        ] {
            loopback
                .send_http_endpoint(&ok_endpoint(&url), "r", 0, &[b"x"])
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert_eq!(rx.got.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn responses_past_the_cap_are_their_own_error() {
        let rx = crate::testing::serve(Arc::new(|_, _| {
            crate::testing::Reply::Json(200, "x".repeat(100))
        }))
        .await;
        let c = Client::new().unwrap();
        let url = Url::parse(&rx.url).unwrap();
        let timeout = Duration::from_secs(10);
        assert!(matches!(
            c.post_json(&url, b"{}".to_vec(), timeout, 99).await,
            Err(DeliveryError::ResponseTooLarge(99))
        ));
        let (status, body) = c
            .post_json(&url, b"{}".to_vec(), timeout, 100)
            .await
            .unwrap();
        assert_eq!((status, body.len()), (200, 100));
        let got = rx.got.lock().unwrap();
        assert_eq!(got[0].headers["content-type"], "application/json");
        assert_eq!(got[0].body, b"{}");
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
