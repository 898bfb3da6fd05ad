//! The streaming server: the HTTP endpoint behind the URLs CRI `Exec`, `Attach` and `PortForward`
//! return (kubelet, or crictl, connects to them and upgrades the connection).
//!
//! * `cri/` validates a request and calls [`StreamingServer::url`], which stores it under a single-use
//!   token (`token.rs`) and returns `http://<address>/<exec|attach|portforward>/<token>`.
//! * An HTTP/1.1 request for that path consumes the token (unknown, used or expired: 404) and must ask
//!   for an upgrade: WebSocket (`websocket.rs` frames the channels) or SPDY/3.1 (`spdy_transport.rs`
//!   maps client-opened streams; the codec is `spdy/`).
//! * The protocol logic is transport-neutral: `remotecommand.rs` (exec, attach) and `portforward.rs`.
//!
//! WebSocket subprotocols (`Sec-WebSocket-Protocol`): remotecommand — `v5.channel.k8s.io`,
//! `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, `channel.k8s.io`, `base64.channel.k8s.io` (or none:
//! `channel.k8s.io`); port-forward — `v4.channel.k8s.io`, `v4.base64.channel.k8s.io` (or none).
//! SPDY subprotocols (`X-Stream-Protocol-Version`): remotecommand — `v5.channel.k8s.io` …
//! `v2.channel.k8s.io`, `channel.k8s.io`; port-forward — `portforward.k8s.io`. An offer the server
//! cannot meet gets 403, as kubelet answers it.
//!
//! Depends on `runtime/` (the process to stream) and nothing above it; must not depend on cri/ or grpc/.

pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod spdy_transport;
pub mod token;
pub mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::config::StreamingConfig;
use crate::runtime::process_stdio::StdioFlags;
use crate::runtime::ContainerRuntime;
use portforward::{PortStreams, Target};
use remotecommand::{ClientStreams, Version};
use token::{TokenCache, TokenError};
use spdy_transport::SpdyServer;
use websocket::{Framing, WsSession};

/// remotecommand channel numbers (wsstream order).
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

const REMOTECOMMAND_WS_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io"];
const PORTFORWARD_WS_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];
/// The SPDY subprotocol header (Kubernetes' `httpstream.HeaderProtocolVersion`).
const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// A validated streaming request, waiting for its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec { container_id: String, cmd: Vec<String>, flags: StdioFlags },
    Attach { container_id: String, flags: StdioFlags },
    /// `ports` from the CRI request; the URL's `port` query parameter, when present, takes precedence.
    PortForward { target: Target, ports: Vec<u16> },
}

impl StreamRequest {
    fn path_kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec { .. } => "exec",
            StreamRequest::Attach { .. } => "attach",
            StreamRequest::PortForward { .. } => "portforward",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("streaming server address {0:?} is not ip:port")]
    BadAddress(String),
    #[error("binding the streaming server to {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error(transparent)]
    Token(#[from] TokenError),
}

pub struct StreamingServer {
    base_url: String,
    address: SocketAddr,
    tokens: TokenCache<StreamRequest>,
    runtime: Arc<dyn ContainerRuntime>,
}

impl StreamingServer {
    /// Bind the listener (port 0: a free port) and build the server; [`serve`](Self::serve) runs it.
    pub async fn bind(config: &StreamingConfig, runtime: Arc<dyn ContainerRuntime>) -> Result<(Arc<StreamingServer>, TcpListener), StreamingError> {
        let wanted: SocketAddr = config.address.parse().map_err(|_| StreamingError::BadAddress(config.address.clone()))?;
        let listener = TcpListener::bind(wanted).await.map_err(|source| StreamingError::Bind { address: config.address.clone(), source })?;
        let address = listener.local_addr().map_err(|source| StreamingError::Bind { address: config.address.clone(), source })?;
        let server = StreamingServer { base_url: format!("http://{address}"), address, tokens: TokenCache::new(config.token_ttl()), runtime };
        Ok((Arc::new(server), listener))
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Store `request` under a fresh token and return the URL the client must use.
    pub fn url(&self, request: StreamRequest) -> Result<String, StreamingError> {
        let kind = request.path_kind();
        let token = self.tokens.insert(request)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    /// Accept connections until `stop` resolves. Each connection is served on a task of its own.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut stop => return,
            };
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "streaming connection ended with an error");
                }
            });
        }
    }

    /// Route one HTTP request: consume its token, negotiate the upgrade, hand the upgraded
    /// connection to a session task.
    fn handle(self: &Arc<Self>, mut req: Request<Incoming>) -> Response<String> {
        let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() || token.contains('/') {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        // The token is used up by this request whatever happens next, as in kubelet's server.
        let Some(request) = self.tokens.consume(token) else {
            return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token\n");
        };
        if request.path_kind() != kind {
            return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token\n");
        }
        let upgrade = header(&req, UPGRADE).to_ascii_lowercase();
        if upgrade == "spdy/3.1" {
            return self.upgrade_spdy(req, request);
        }
        if upgrade != "websocket" || header(&req, SEC_WEBSOCKET_VERSION) != "13" {
            return plain(StatusCode::BAD_REQUEST, "this endpoint needs a WebSocket upgrade (version 13)\n");
        }
        let key = header(&req, SEC_WEBSOCKET_KEY);
        if key.is_empty() {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        }
        let offered = offered_protocols(&req, SEC_WEBSOCKET_PROTOCOL);
        let supported = match request {
            StreamRequest::PortForward { .. } => PORTFORWARD_WS_PROTOCOLS,
            _ => REMOTECOMMAND_WS_PROTOCOLS,
        };
        let Some(protocol) = websocket::negotiate(&offered, supported) else {
            return plain(StatusCode::BAD_REQUEST, &format!("none of the requested subprotocols {offered:?} is supported; supported: {supported:?}\n"));
        };
        let ports = match &request {
            StreamRequest::PortForward { ports, .. } => match portforward::ports_from_query(req.uri().query().unwrap_or("")) {
                Ok(from_url) if !from_url.is_empty() => from_url,
                Ok(_) if !ports.is_empty() => ports.clone(),
                Ok(_) => return plain(StatusCode::BAD_REQUEST, "query parameter \"port\" is required\n"),
                Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            },
            _ => Vec::new(),
        };

        let accept = derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let server = self.clone();
        tokio::spawn(async move {
            let Some(upgraded) = upgraded(on_upgrade).await else { return };
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(websocket::config())).await;
            server.run_websocket(ws, request, protocol, ports).await;
        });

        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(SEC_WEBSOCKET_ACCEPT, v);
        }
        if !protocol.is_empty() {
            h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
        }
        response
    }

    /// `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version` negotiation (httpstream.Handshake).
    fn upgrade_spdy(self: &Arc<Self>, mut req: Request<Incoming>, request: StreamRequest) -> Response<String> {
        let offered = offered_protocols(&req, STREAM_PROTOCOL_VERSION);
        let supported = match request {
            StreamRequest::PortForward { .. } => spdy_transport::PORTFORWARD_PROTOCOLS,
            _ => spdy_transport::REMOTECOMMAND_PROTOCOLS,
        };
        let Some(protocol) = spdy_transport::negotiate(&offered, supported) else {
            let mut r = plain(StatusCode::FORBIDDEN, &format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}\n"));
            if let Ok(v) = HeaderValue::from_str(&supported.join(", ")) {
                r.headers_mut().insert("x-accepted-stream-protocol-versions", v);
            }
            return r;
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let server = self.clone();
        tokio::spawn(async move {
            let Some(upgraded) = upgraded(on_upgrade).await else { return };
            let spdy = SpdyServer::start(TokioIo::new(upgraded));
            match request {
                StreamRequest::Exec { container_id, cmd, flags } => {
                    spdy.run_remotecommand(protocol, flags, server.runtime.exec_streaming(&container_id, &cmd, flags)).await
                }
                StreamRequest::Attach { container_id, flags } => spdy.run_remotecommand(protocol, flags, server.runtime.attach(&container_id, flags)).await,
                StreamRequest::PortForward { target, .. } => spdy.run_portforward(target).await,
            }
        });
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(STREAM_PROTOCOL_VERSION, HeaderValue::from_static(protocol));
        response
    }

    async fn run_websocket<S>(&self, ws: WebSocketStream<S>, request: StreamRequest, protocol: &'static str, ports: Vec<u16>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let framing = Framing::of(protocol);
        match request {
            StreamRequest::Exec { container_id, cmd, flags } => {
                let process = self.runtime.exec_streaming(&container_id, &cmd, flags).await;
                self.run_remotecommand_ws(ws, framing, Version::of(protocol), flags, process).await;
            }
            StreamRequest::Attach { container_id, flags } => {
                let process = self.runtime.attach(&container_id, flags).await;
                self.run_remotecommand_ws(ws, framing, Version::of(protocol), flags, process).await;
            }
            StreamRequest::PortForward { target, .. } => {
                // Channels 2i (data, both ways) and 2i+1 (error) serve ports[i]. More than 127 ports
                // would not fit in the one-byte channel numbers.
                let ports: Vec<u16> = ports.into_iter().take(127).collect();
                let inbound: Vec<u8> = (0..ports.len()).map(|i| (2 * i) as u8).collect();
                let outbound: Vec<u8> = (0..ports.len()).flat_map(|i| [(2 * i) as u8, (2 * i + 1) as u8]).collect();
                let mut session = WsSession::start(ws, framing, &inbound, &outbound);
                let mut forwards = Vec::new();
                for (i, port) in ports.iter().enumerate() {
                    let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
                    // kubelet's framing: the first message on each of a port's channels is the port
                    // number, 2 bytes little-endian.
                    session.send(data, &port.to_le_bytes()).await;
                    session.send(error, &port.to_le_bytes()).await;
                    let (Some(data_in), Some(data_out), Some(error)) = (session.take_reader(data), session.take_writer(data), session.take_writer(error)) else {
                        continue;
                    };
                    forwards.push(portforward::forward(target.clone(), PortStreams { port: *port, data_in, data_out, error }));
                }
                let gone = session.closed();
                tokio::select! {
                    _ = futures::future::join_all(forwards) => session.finish().await,
                    _ = gone => {}
                }
            }
        }
    }

    async fn run_remotecommand_ws<S>(
        &self,
        ws: WebSocketStream<S>,
        framing: Framing,
        version: Version,
        flags: StdioFlags,
        process: Result<crate::runtime::process_stdio::StreamingProcess, crate::runtime::RuntimeError>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut outbound = vec![ERROR];
        if flags.stdout {
            outbound.push(STDOUT);
        }
        if flags.stderr && !flags.tty {
            outbound.push(STDERR);
        }
        let mut inbound = Vec::new();
        if flags.stdin {
            inbound.push(STDIN);
        }
        if flags.tty {
            inbound.push(RESIZE);
        }
        let mut session = WsSession::start(ws, framing, &inbound, &outbound);
        // kubelet's handshake: an empty message on the lowest channel the client reads tells it the
        // streams are ready.
        let first = [STDOUT, STDERR, ERROR].into_iter().find(|c| outbound.contains(c)).unwrap_or(ERROR);
        session.send(first, &[]).await;
        let client = ClientStreams {
            stdin: session.take_reader(STDIN),
            stdout: session.take_writer(STDOUT),
            stderr: session.take_writer(STDERR),
            error: session.take_writer(ERROR),
            resize: session.take_reader(RESIZE),
        };
        match process {
            Ok(process) => {
                let gone = session.closed();
                remotecommand::serve(process, client, version, gone).await;
            }
            Err(e) => remotecommand::report_error(client, version, e.to_string()).await,
        }
        session.finish().await;
    }
}

/// The protocols a client offers in every `name` header, each possibly a comma-separated list
/// (WebSocket subprotocols and SPDY's `X-Stream-Protocol-Version` are both sent either way).
fn offered_protocols(req: &Request<Incoming>, name: impl hyper::header::AsHeaderName) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The connection after the 101 response went out; None (logged) when the client went away first.
async fn upgraded(on_upgrade: hyper::upgrade::OnUpgrade) -> Option<hyper::upgrade::Upgraded> {
    match on_upgrade.await {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::debug!(error = %e, "streaming upgrade failed");
            None
        }
    }
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_string()
}

fn plain(status: StatusCode, body: &str) -> Response<String> {
    let mut r = Response::new(body.to_string());
    *r.status_mut() = status;
    r
}
