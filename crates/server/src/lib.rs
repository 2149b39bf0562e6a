//! The HTTP front door of Ripstream.
//!
//! One port serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge, as the AWS
//! SDKs use it). Requests are routed to the mounted services (each a
//! [`ripstream_api::Service`], opened by the binary in its shared context and
//! handed to [`Server::bind`]), decoded by the protocol codecs, checked
//! against the AWS service model ([`model`]), and handed to the service;
//! `GET /health` and `GET /metrics` serve operators. This crate knows no
//! storage: errors arrive as each service's `ServiceError` and leave as AWS
//! error types through [`wire`].

pub mod auth;
mod budget;
mod conn;
pub mod eventstream;
mod guard;
pub mod metrics;
pub mod model;
mod query;
mod redact;
mod rest;
mod router;
mod streamed;
pub mod tls;
pub mod wire;

#[cfg(test)]
mod fuzz;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// The region SigV4 scopes must name and ARNs are built in.
    pub region: String,
    /// The account every principal belongs to.
    pub account: String,
    /// Principals whose signatures are checked; `None` accepts anyone (loopback only).
    pub principals: Option<Arc<auth::Principals>>,
    /// Serve TLS with this certificate and key instead of cleartext.
    pub tls: Option<tls::TlsFiles>,
    /// Most connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Most connections from one source address; more are closed at once.
    pub max_connections_per_source: usize,
    /// How long a new connection has to finish its TLS handshake and send
    /// the first bytes that tell HTTP/1.1 from HTTP/2, together.
    pub handshake_timeout: Duration,
    /// A connection carrying no request for this long is closed (HTTP/2
    /// pings do not count as requests).
    pub idle_timeout: Duration,
    /// Most requests handled at once; beyond, requests are shed with a retryable 503.
    /// A request takes its slot once its body has arrived (or starts
    /// streaming to its service), so slow bodies cannot hold every slot.
    pub max_in_flight: usize,
    /// Most requests whose body is still arriving, across all sources;
    /// beyond, requests are shed with a retryable 503.
    pub max_receiving: usize,
    /// Most requests from one source address whose body is still arriving
    /// (counted per request, whatever connections carry them).
    pub max_receiving_per_source: usize,
    /// Most request-body bytes buffered across all in-flight requests;
    /// beyond, requests are shed with a retryable 503.
    pub max_buffered_bytes: usize,
    /// Bearer token `/metrics` requires on a non-loopback listener (without
    /// one, `/metrics` is refused there).
    pub metrics_token: Option<String>,
    /// Serve `application/json` requests as JSON 1.1 instead of answering
    /// them as AWS does (with the old Coral protocol's errors).
    pub allow_plain_json: bool,
    /// Anonymous mode only: serve requests that carry no signature at all
    /// (AWS answers them `MissingAuthenticationTokenException`, which is the
    /// default). Malformed signatures are refused either way.
    pub allow_unsigned_requests: bool,
}

impl ServerConfig {
    /// Defaults for `listen`, in AWS's default region with the account
    /// Data Streams defaults to.
    pub fn new(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            // A 10 MiB PutRecords grows by a third in base64, plus JSON framing.
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            region: "us-east-1".into(),
            account: "000000000000".into(),
            principals: None,
            tls: None,
            max_connections: 10_000,
            max_connections_per_source: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_in_flight: 4096,
            max_receiving: 1024,
            max_receiving_per_source: 128,
            max_buffered_bytes: 1 << 30,
            metrics_token: None,
            allow_plain_json: false,
            allow_unsigned_requests: false,
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS")]
    Tls(#[from] tls::TlsError),
    #[error("the {0} service model: {1}")]
    Model(String, String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A service behind the front door, with its model parsed once.
pub(crate) struct Mounted {
    pub api: Arc<dyn ripstream_api::Service>,
    pub model: Arc<model::ServiceModel>,
    /// The route table and codec of a REST service (restJson1, restXml).
    pub rest: Option<Arc<rest::RestModel>>,
    /// The codec of an awsQuery service (STS).
    pub query: Option<Arc<query::QueryModel>>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("service", &self.api.spec().metrics_name)
            .finish()
    }
}

impl Mounted {
    fn new(api: Arc<dyn ripstream_api::Service>) -> Result<Mounted, ServerError> {
        let model = model::ServiceModel::parse(api.spec().model)
            .map_err(|e| ServerError::Model(api.spec().metrics_name.clone(), e))?;
        let protocol = api.spec().protocol;
        let rest = match protocol {
            ripstream_api::Protocol::RestJson1 | ripstream_api::Protocol::RestXml => {
                Some(Arc::new(
                    rest::RestModel::parse(api.spec().model, protocol)
                        .map_err(|e| ServerError::Model(api.spec().metrics_name.clone(), e))?,
                ))
            }
            _ => None,
        };
        let query = match protocol {
            ripstream_api::Protocol::AwsQuery => Some(Arc::new(
                query::QueryModel::parse(api.spec().model)
                    .map_err(|e| ServerError::Model(api.spec().metrics_name.clone(), e))?,
            )),
            _ => None,
        };
        Ok(Mounted {
            api,
            model: Arc::new(model),
            rest,
            query,
        })
    }
}

/// Shared by every request.
#[derive(Debug)]
pub(crate) struct AppState {
    /// Every service on the port; the first answers requests no service claims.
    pub services: Vec<Mounted>,
    pub region: String,
    pub account: String,
    pub registry: Registry,
    pub metrics: metrics::RequestMetrics,
    pub max_body_bytes: usize,
    pub principals: Option<Arc<auth::Principals>>,
    /// Permits for requests being handled; when none is left, requests are shed.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Permits for requests whose body is still arriving.
    pub receiving: Arc<tokio::sync::Semaphore>,
    /// The same, per source address.
    pub receiving_per_source: Arc<conn::SourceLimiter>,
    /// Bytes of request bodies buffered now, against their limit.
    pub budget: Arc<budget::MemoryBudget>,
    /// Whether the listener is on a loopback address (operator endpoints open).
    pub loopback_listener: bool,
    pub metrics_token: Option<String>,
    /// `application/json` served as JSON 1.1 (else answered as AWS does).
    pub allow_plain_json: bool,
    /// Anonymous mode serves requests with no signature at all.
    pub allow_unsigned_requests: bool,
}

impl AppState {
    /// The service whose model's target prefix is `prefix`.
    pub fn service_for_target(&self, prefix: &str) -> Option<usize> {
        self.services
            .iter()
            .position(|m| m.api.spec().target_prefix.as_deref() == Some(prefix))
    }
}

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    config: ServerConfig,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    /// Mounts `services` (in order: the first answers requests no service
    /// claims) and binds the listening socket. The services' own metrics are
    /// in `registry` already; `/metrics` serves it with the front door's.
    pub async fn bind(
        config: ServerConfig,
        mut registry: Registry,
        services: Vec<Arc<dyn ripstream_api::Service>>,
    ) -> Result<Server, ServerError> {
        let metrics = metrics::RequestMetrics::register(&mut registry);
        let tls = match &config.tls {
            Some(files) => Some(tls::acceptor(files)?),
            None => None,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let services = services
            .into_iter()
            .map(Mounted::new)
            .collect::<Result<Vec<_>, _>>()?;
        let state = Arc::new(AppState {
            services,
            region: config.region.clone(),
            account: config.account.clone(),
            registry,
            metrics,
            max_body_bytes: config.max_body_bytes,
            principals: config.principals.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
            receiving: Arc::new(tokio::sync::Semaphore::new(config.max_receiving.max(1))),
            receiving_per_source: conn::SourceLimiter::new(
                config.max_receiving_per_source.min(config.max_receiving),
            ),
            // A budget below one largest body could never admit it.
            budget: budget::MemoryBudget::new(config.max_buffered_bytes.max(config.max_body_bytes)),
            loopback_listener: config.listen.ip().is_loopback(),
            metrics_token: config.metrics_token.clone(),
            allow_plain_json: config.allow_plain_json,
            allow_unsigned_requests: config.allow_unsigned_requests,
        });
        Ok(Server {
            listener,
            tls,
            state,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Mounts one more service on the port, after the built-in ones; REST
    /// services get their route table here. Only before [`Server::run`].
    pub fn mount(&mut self, api: Arc<dyn ripstream_api::Service>) -> Result<(), ServerError> {
        let mounted = Mounted::new(api)?;
        let name = mounted.api.spec().metrics_name.clone();
        let state = Arc::get_mut(&mut self.state).ok_or_else(|| {
            ServerError::Model(name, "services are mounted before the server runs".into())
        })?;
        state.services.push(mounted);
        Ok(())
    }

    /// Starts every service's background work ([`ripstream_api::Service::start`])
    /// and serves until `shutdown` resolves, then stops accepting, lets
    /// in-flight requests finish (up to the grace period), drops the
    /// background work and returns. The caller then closes the services'
    /// shared context (the shard log's final sync).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let background: Vec<_> = self
            .state
            .services
            .iter()
            .flat_map(|m| m.api.start())
            .map(tokio::spawn)
            .collect();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(64 * 1024)
            // A client may shut down its sending side while it waits for the answer.
            .half_close(true)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            // About what AWS's front ends allow: a connection's streams are
            // requests, and each may wait for its body.
            .max_concurrent_streams(100)
            .max_header_list_size(64 * 1024)
            .keep_alive_interval(Duration::from_secs(60))
            .keep_alive_timeout(Duration::from_secs(20));
        // Connections hold permits of this semaphore; shutdown waits until
        // it has them all back.
        let max_connections = self.config.max_connections.clamp(1, u32::MAX as usize);
        let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
        let sources =
            conn::SourceLimiter::new(self.config.max_connections_per_source.min(max_connections));
        let settings = conn::ConnSettings {
            builder,
            idle_timeout: self.config.idle_timeout,
        };
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        info!(addr = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
        loop {
            tokio::select! {
                permit = connections.clone().acquire_owned() => {
                    let Ok(permit) = permit else { break };
                    let accepted = tokio::select! {
                        a = self.listener.accept() => a,
                        _ = &mut shutdown => break,
                    };
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(source) = sources.try_acquire(peer.ip()) else {
                        debug!(%peer, "closing a connection: too many from this address");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let state = self.state.clone();
                    let settings = settings.clone();
                    let mut stopping = stopping.clone();
                    let acceptor = self.tls.clone();
                    // The handshake and the first bytes share one deadline, so
                    // a silent or trickling client gives its slot back soon.
                    let deadline = tokio::time::Instant::now() + self.config.handshake_timeout;
                    tokio::spawn(async move {
                        // The source's count drops before the slot is given
                        // back, so the next accept never sees it stale.
                        let _slot = (source, permit);
                        match acceptor {
                            None => conn::serve(stream, peer, state, settings, deadline, stopping).await,
                            Some(acceptor) => {
                                match conn::before_deadline(deadline, &mut stopping, acceptor.accept(stream)).await {
                                    Some(Ok(tls)) => conn::serve(tls, peer, state, settings, deadline, stopping).await,
                                    Some(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                                    None => debug!(%peer, "TLS handshake not finished in time"),
                                }
                            }
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        info!("shutting down: no longer accepting connections");
        drop(self.listener);
        let _ = stop.send(true);
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.config.shutdown_grace, connections.acquire_many(all))
            .await
            .is_err()
        {
            warn!("in-flight requests did not finish within the grace period");
        }
        for task in background {
            task.abort();
            // Wait until it is dropped, so none outlives the server and
            // touches storage the caller is about to close.
            let _ = task.await;
        }
        info!("stopped serving");
        Ok(())
    }
}
