//! The SPDY/3.1 transport of remotecommand and port-forward, as kubelet's streaming server speaks it
//! (`k8s.io/apimachinery/pkg/util/httpstream/spdy`): after `Upgrade: SPDY/3.1` the *client* opens one
//! SPDY stream per channel and names it with a `streamtype` header; the server replies to each and maps
//! them onto the transport-neutral streams of `remotecommand.rs` / `portforward.rs`. Framing, header
//! compression and flow control are the codec's (`spdy/`).
//!
//! * remotecommand (`v5`…`v2.channel.k8s.io`, `channel.k8s.io`): streams `error`, `stdin`, `stdout`,
//!   `stderr`, `resize` (v3+ with a tty). The server waits (at most [`STREAM_WAIT`]) until every stream
//!   the request needs exists, then runs the process. stdin EOF is the client's FIN on `stdin`.
//! * port-forward (`portforward.k8s.io`): per forwarded connection the client opens an `error` and a
//!   `data` stream carrying the same `port` and `requestID` headers; a pair is forwarded once both
//!   exist; a pair still incomplete after [`STREAM_WAIT`] is dropped with a message on its error stream.
//!   Old clients without `requestID` are paired by stream id, as kubelet does.
//! * Streams the session does not use are reset (REFUSED_STREAM) rather than left unread, which would
//!   stall the connection (see the codec's README on head-of-line backpressure).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::portforward::{self, PortStreams, Target};
use super::remotecommand::{self, ClientStreams, Version};
use super::spdy::{Headers, Role, RstStatus, Session, Stream};
use crate::runtime::process_stdio::{BoxRead, BoxWrite, StdioFlags, StreamingProcess};
use crate::runtime::RuntimeError;

/// Subprotocols (`X-Stream-Protocol-Version`), newest first.
pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
pub const PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// How long the client may take to open the streams a request needs (kubelet's
/// `streamCreationTimeout` default).
pub const STREAM_WAIT: Duration = Duration::from_secs(30);
/// After the session's work is done, how long the client gets to close the connection itself.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The client's protocol choice: the first of its `X-Stream-Protocol-Version` values (in its order, as
/// `httpstream.Handshake` negotiates) that the server supports. `Some("")` when it sent none
/// (pre-negotiation clients, served as `channel.k8s.io`).
pub fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    if offered.is_empty() {
        return Some("");
    }
    offered.iter().find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

/// An I/O object whose read side can be ended from outside: the codec's session runs until its
/// connection ends, and this is how the server ends one whose client does not close it.
struct CancellableIo<T> {
    inner: T,
    cancel: Arc<Cancel>,
}

#[derive(Default)]
struct Cancel {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl Cancel {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CancellableIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.cancel.waker.register(cx.waker());
        if self.cancel.cancelled.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(())); // EOF
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CancellableIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A server-side SPDY session over an upgraded connection.
pub struct SpdyServer {
    session: Session,
    incoming: mpsc::Receiver<Stream>,
    cancel: Arc<Cancel>,
}

impl SpdyServer {
    pub fn start<T>(io: T) -> SpdyServer
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let cancel = Arc::new(Cancel::default());
        let (session, incoming) = Session::new(CancellableIo { inner: io, cancel: cancel.clone() }, Role::Server);
        SpdyServer { session, incoming, cancel }
    }

    /// End the session: GOAWAY, let the client close, close it ourselves after a grace period.
    async fn finish(self) {
        let SpdyServer { session, incoming, cancel } = self;
        drop(incoming);
        session.goaway().await;
        if tokio::time::timeout(CLOSE_GRACE, session.closed()).await.is_err() {
            cancel.cancel();
            session.closed().await;
        }
    }

    /// Serve exec or attach: wait for the streams `flags` needs, start the process, run the protocol.
    pub async fn run_remotecommand<F>(mut self, protocol: &str, flags: StdioFlags, start: F)
    where
        F: std::future::Future<Output = Result<StreamingProcess, RuntimeError>>,
    {
        let version = Version::of(protocol);
        let mut wanted = vec!["error"];
        if flags.stdin {
            wanted.push("stdin");
        }
        if flags.stdout {
            wanted.push("stdout");
        }
        if flags.stderr && !flags.tty {
            wanted.push("stderr");
        }
        if flags.tty && version >= Version::V3 {
            wanted.push("resize");
        }
        let mut streams: HashMap<&'static str, Stream> = HashMap::new();
        let deadline = Instant::now() + STREAM_WAIT;
        while streams.len() < wanted.len() {
            let stream = tokio::select! {
                s = self.incoming.recv() => match s {
                    Some(s) => s,
                    None => return, // the connection ended
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(?wanted, got = ?streams.keys().collect::<Vec<_>>(), "SPDY client did not open its streams in time");
                    return self.finish().await;
                }
            };
            let kind = header(stream.headers(), "streamtype").unwrap_or("").to_string();
            match wanted.iter().find(|w| **w == kind) {
                Some(w) if !streams.contains_key(w) => {
                    if stream.reply(Headers::new()).await.is_err() {
                        return self.finish().await;
                    }
                    streams.insert(w, stream);
                }
                _ => {
                    tracing::debug!(streamtype = %kind, "unexpected SPDY stream; refused");
                    stream.reset(RstStatus::RefusedStream);
                }
            }
        }

        let mut client = ClientStreams::default();
        for (kind, stream) in streams {
            let (reader, mut writer) = stream.split();
            match kind {
                // Streams only the client writes: our half is closed at once.
                "stdin" | "resize" => {
                    let _ = writer.shutdown().await;
                    let reader = Some(Box::new(reader) as BoxRead);
                    if kind == "stdin" {
                        client.stdin = reader;
                    } else {
                        client.resize = reader;
                    }
                }
                // Streams only we write: their (empty) input is not needed.
                _ => {
                    drop(reader);
                    let writer = Some(Box::new(writer) as BoxWrite);
                    match kind {
                        "stdout" => client.stdout = writer,
                        "stderr" => client.stderr = writer,
                        _ => client.error = writer,
                    }
                }
            }
        }
        // Further streams are refused while the session runs.
        let refuse = refuse_streams(std::mem::replace(&mut self.incoming, mpsc::channel(1).1));
        match start.await {
            Ok(process) => remotecommand::serve(process, client, version, self.session.closed()).await,
            Err(e) => remotecommand::report_error(client, version, e.to_string()).await,
        }
        refuse.abort();
        self.finish().await;
    }

    /// Serve port-forward: pair `data`/`error` streams by `requestID` and forward each pair.
    pub async fn run_portforward(mut self, target: Target) {
        let mut pending: HashMap<String, Pair> = HashMap::new();
        let mut forwards = JoinSet::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let stream = tokio::select! {
                s = self.incoming.recv() => match s {
                    Some(s) => s,
                    None => break,
                },
                _ = sweep.tick() => {
                    let now = Instant::now();
                    let expired: Vec<String> = pending.iter().filter(|(_, p)| now.duration_since(p.since) > STREAM_WAIT).map(|(k, _)| k.clone()).collect();
                    for id in expired {
                        if let Some(pair) = pending.remove(&id) {
                            forwards.spawn(pair.expire(id));
                        }
                    }
                    continue;
                }
                Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
            };
            let kind = header(stream.headers(), "streamtype").unwrap_or("").to_string();
            let port = header(stream.headers(), "port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
            let (Some(port), "data" | "error") = (port, kind.as_str()) else {
                tracing::debug!(streamtype = %kind, "SPDY port-forward stream without a valid port or type; refused");
                stream.reset(RstStatus::RefusedStream);
                continue;
            };
            // kubelet's legacy pairing for clients without requestID: the error stream is opened
            // first, its data stream two ids later.
            let request_id = match header(stream.headers(), "requestid") {
                Some(id) if !id.is_empty() => id.to_string(),
                _ if kind == "data" => stream.id().saturating_sub(2).to_string(),
                _ => stream.id().to_string(),
            };
            if stream.reply(Headers::new()).await.is_err() {
                break;
            }
            let pair = pending.entry(request_id.clone()).or_insert_with(|| Pair { port, data: None, error: None, since: Instant::now() });
            let slot = if kind == "data" { &mut pair.data } else { &mut pair.error };
            if slot.is_some() || pair.port != port {
                tracing::debug!(request_id, "duplicate or inconsistent SPDY port-forward stream; refused");
                stream.reset(RstStatus::ProtocolError);
                continue;
            }
            *slot = Some(stream);
            if pair.data.is_some() && pair.error.is_some() {
                if let Some(Pair { port, data: Some(data), error: Some(error), .. }) = pending.remove(&request_id) {
                    let (data_in, data_out) = data.split();
                    let (error_in, error_out) = error.split();
                    drop(error_in);
                    let streams = PortStreams { port, data_in: Box::new(data_in), data_out: Box::new(data_out), error: Box::new(error_out) };
                    forwards.spawn(portforward::forward(target.clone(), streams));
                }
            }
        }
        forwards.abort_all();
        self.finish().await;
    }
}

/// One port-forward connection's streams while the other one is awaited.
struct Pair {
    port: u16,
    data: Option<Stream>,
    error: Option<Stream>,
    since: Instant,
}

impl Pair {
    async fn expire(self, request_id: String) {
        if let Some(error) = self.error {
            let (_, mut w) = error.split();
            let msg = format!("timed out waiting for the data stream of request {request_id} (port {})", self.port);
            let _ = w.write_all(msg.as_bytes()).await;
            let _ = w.shutdown().await;
        }
        if let Some(data) = self.data {
            data.reset(RstStatus::Cancel);
        }
    }
}

fn refuse_streams(mut incoming: mpsc::Receiver<Stream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(s) = incoming.recv().await {
            s.reset(RstStatus::RefusedStream);
        }
    })
}

/// A header's value (the codec lower-cases names).
fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_client_order() {
        let offer = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(negotiate(&offer(&["v4.channel.k8s.io", "v5.channel.k8s.io"]), REMOTECOMMAND_PROTOCOLS), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&offer(&["portforward.k8s.io"]), PORTFORWARD_PROTOCOLS), Some("portforward.k8s.io"));
        assert_eq!(negotiate(&offer(&["v9"]), REMOTECOMMAND_PROTOCOLS), None);
        assert_eq!(negotiate(&[], REMOTECOMMAND_PROTOCOLS), Some(""));
    }
}
