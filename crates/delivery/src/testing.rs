//! A scripted HTTP receiver for the clients' tests: 127.0.0.1 on an
//! ephemeral port, answering each request with the next reply of a
//! handler, and recording what it received.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

pub type Handler = Arc<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

pub enum Reply {
    Json(u16, String),
    /// Never answers (the client's timeout fires).
    Hang,
}

pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(handler: Handler) -> Receiver {
    serve_with(handler, None).await
}

/// A test CA (its PEM) and a TLS acceptor for a certificate it issued for
/// 127.0.0.1 and localhost.
pub fn test_pki() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params
        .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// [`serve`], over TLS when given an acceptor (the URL is then https).
pub async fn serve_with(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = got.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (handler, seen, tls) = (handler.clone(), seen.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (handler, seen) = (handler.clone(), seen.clone());
                    async move {
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                        let r = Received {
                            path,
                            headers,
                            body,
                        };
                        let n = {
                            let mut g = seen.lock().unwrap();
                            g.push(r.clone());
                            g.len() - 1
                        };
                        match handler(n, &r) {
                            Reply::Json(status, body) => Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            ),
                            Reply::Hang => {
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                        }
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    // A handshake the client gives up on is no request.
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                }
            });
        }
    });
    Receiver { url, got, task }
}
