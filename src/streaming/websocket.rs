//! The WebSocket transport of the Kubernetes channel protocols: subprotocol negotiation and the
//! channel multiplexing kubelet's `wsstream` package defines, turned into per-channel byte streams
//! (`BoxRead` for what the client sends, `BoxWrite` for what it receives) so that the protocol logic in
//! `remotecommand.rs` / `portforward.rs` does not know which transport it runs on.
//!
//! Framing (`channel.k8s.io` family): every WebSocket message carries one channel. Binary
//! subprotocols: the first byte is the channel number, the rest is data. `base64.` subprotocols: text
//! messages whose first character is the channel number as an ASCII digit, the rest base64 data.
//! `v5.channel.k8s.io` adds a client message on channel 255 whose one data byte names a channel the
//! client closed (stdin EOF). Messages on channels the session does not read are ignored, as kubelet
//! does; a malformed WebSocket frame (or a message above 1 MiB) ends the session.
//!
//! Flow control: client data is written into a bounded in-memory pipe per channel; while that is full
//! the connection is not read, so TCP pushes back on the client. Outgoing data goes through a bounded
//! queue to the one task that writes the socket, so a slow client blocks the producers (the process's
//! pipes fill and it blocks in write) instead of the daemon buffering.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::runtime::process_stdio::{BoxRead, BoxWrite};

/// v5: a client message on this channel closes the channel named by its one data byte.
pub const STREAM_CLOSE_CHANNEL: u8 = 255;
/// In-memory pipe per channel: a `DuplexStream` pair used in one direction, because dropping one end
/// is EOF (or BrokenPipe) for the other — a `simplex` split would leave the reader waiting forever.
const CHANNEL_BUFFER: usize = 64 * 1024;
/// Data per outgoing message.
const MESSAGE_CHUNK: usize = 32 * 1024;
/// Largest message or frame accepted from a client (stdin chunks and resize events are small).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// How long the close handshake may take at the end of a session.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub fn config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE))
}

/// The first subprotocol the client offered (in its order, as wsstream picks) that `supported` lists.
/// `Some("")` when the client offered none: kubelet then speaks the plain binary channel protocol.
pub fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    if offered.is_empty() {
        return Some("");
    }
    offered.iter().find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

/// How the channels of one session are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Text messages with base64 data (the `base64.` subprotocols).
    pub base64: bool,
    /// Channel 255 closes a client channel (`v5.channel.k8s.io`).
    pub stream_close: bool,
}

impl Framing {
    pub fn of(subprotocol: &str) -> Framing {
        Framing { base64: subprotocol.contains("base64."), stream_close: subprotocol.starts_with("v5.") }
    }

    fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::text(text)
        } else {
            let mut bin = Vec::with_capacity(1 + data.len());
            bin.push(channel);
            bin.extend_from_slice(data);
            Message::binary(bin)
        }
    }

    /// `(channel, data)` of a client message; None for messages that carry no channel data.
    fn decode(self, msg: Message) -> Option<(u8, Vec<u8>)> {
        match msg {
            Message::Binary(bin) if !self.base64 => {
                let (&channel, data) = bin.split_first()?;
                Some((channel, data.to_vec()))
            }
            Message::Text(text) if self.base64 => {
                let (&digit, data) = text.as_bytes().split_first()?;
                let channel = digit.checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD.decode(data).ok()?;
                Some((channel, data))
            }
            _ => None,
        }
    }
}

/// One WebSocket connection split into channels.
pub struct WsSession {
    framing: Framing,
    /// The queue to the socket writer; None once the session is finishing.
    out: Option<mpsc::Sender<Message>>,
    readers: HashMap<u8, BoxRead>,
    writers: HashMap<u8, BoxWrite>,
    pumps: Vec<JoinHandle<()>>,
    reader_task: JoinHandle<()>,
    writer_task: JoinHandle<()>,
    closed: watch::Receiver<bool>,
}

impl WsSession {
    /// Start serving `ws`: `inbound` channels become readers, `outbound` ones writers.
    pub fn start<S>(ws: WebSocketStream<S>, framing: Framing, inbound: &[u8], outbound: &[u8]) -> WsSession
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<Message>(16);
        let writer_task = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                let closing = matches!(msg, Message::Close(_));
                if sink.send(msg).await.is_err() || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let mut readers = HashMap::new();
        let mut inbound_writers: HashMap<u8, DuplexStream> = HashMap::new();
        for &ch in inbound {
            let (r, w) = tokio::io::duplex(CHANNEL_BUFFER);
            readers.insert(ch, Box::new(r) as BoxRead);
            inbound_writers.insert(ch, w);
        }
        let (closed_tx, closed) = watch::channel(false);
        let reader_task = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let msg = match msg {
                    Ok(Message::Close(_)) => break,
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket session ended by a protocol error");
                        break;
                    }
                };
                let Some((channel, data)) = framing.decode(msg) else { continue };
                if framing.stream_close && channel == STREAM_CLOSE_CHANNEL {
                    if let Some(mut w) = data.first().and_then(|c| inbound_writers.remove(c)) {
                        let _ = w.shutdown().await;
                    }
                    continue;
                }
                if data.is_empty() {
                    continue;
                }
                match inbound_writers.get_mut(&channel) {
                    Some(w) => {
                        if w.write_all(&data).await.is_err() {
                            // Nobody reads this channel any more.
                            inbound_writers.remove(&channel);
                        }
                    }
                    None => tracing::debug!(channel, "websocket message on a channel this session does not read; ignored"),
                }
            }
            drop(inbound_writers);
            let _ = closed_tx.send(true);
        });

        let mut writers = HashMap::new();
        let mut pumps = Vec::new();
        for &ch in outbound {
            let (r, w) = tokio::io::duplex(CHANNEL_BUFFER);
            writers.insert(ch, Box::new(w) as BoxWrite);
            pumps.push(tokio::spawn(pump(r, ch, framing, out.clone())));
        }
        WsSession { framing, out: Some(out), readers, writers, pumps, reader_task, writer_task, closed }
    }

    pub fn take_reader(&mut self, channel: u8) -> Option<BoxRead> {
        self.readers.remove(&channel)
    }

    pub fn take_writer(&mut self, channel: u8) -> Option<BoxWrite> {
        self.writers.remove(&channel)
    }

    /// Send one message on `channel` directly (the port prefixes and kubelet's initial empty message
    /// must be messages of their own).
    pub async fn send(&mut self, channel: u8, data: &[u8]) {
        if let Some(out) = &self.out {
            let _ = out.send(self.framing.encode(channel, data)).await;
        }
    }

    /// A future that resolves once the client has gone (close frame, error or EOF).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.clone();
        async move {
            let _ = closed.wait_for(|c| *c).await;
        }
    }

    /// End the session: wait until everything written to the (dropped) writers is sent, then close.
    pub async fn finish(mut self) {
        self.writers.clear();
                for p in self.pumps.drain(..) {
            let _ = p.await;
        }
        let close = Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }));
        if let Some(out) = self.out.take() {
            let _ = out.send(close).await;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut self.writer_task).await;
        self.writer_task.abort();
        self.reader_task.abort();
    }
}

impl Drop for WsSession {
    fn drop(&mut self) {
        for p in &self.pumps {
            p.abort();
        }
        self.reader_task.abort();
        self.writer_task.abort();
    }
}

/// Copy one outgoing channel into messages until its writer is dropped or shut down.
async fn pump(mut r: DuplexStream, channel: u8, framing: Framing, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; MESSAGE_CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(framing.encode(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_client_order() {
        let sup = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];
        let offer = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(negotiate(&offer(&["v4.channel.k8s.io", "v5.channel.k8s.io"]), &sup), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&offer(&["x", "channel.k8s.io"]), &sup), Some("channel.k8s.io"));
        assert_eq!(negotiate(&offer(&["x"]), &sup), None);
        assert_eq!(negotiate(&[], &sup), Some(""));
    }

    #[test]
    fn framing_of_binary_and_base64_channels() {
        let bin = Framing::of("v5.channel.k8s.io");
        assert!(bin.stream_close && !bin.base64);
        assert_eq!(bin.encode(1, b"hi"), Message::binary(vec![1, b'h', b'i']));
        assert_eq!(bin.decode(Message::binary(vec![0, b'x'])), Some((0, b"x".to_vec())));
        assert_eq!(bin.decode(Message::binary(Vec::new())), None);
        assert_eq!(bin.decode(Message::text("0eA==")), None);
        let b64 = Framing::of("v4.base64.channel.k8s.io");
        assert!(b64.base64 && !b64.stream_close);
        assert_eq!(b64.encode(2, b"hi"), Message::text("2aGk="));
        assert_eq!(b64.decode(Message::text("0aGk=")), Some((0, b"hi".to_vec())));
        assert_eq!(b64.decode(Message::text("0!!")), None);
    }
}
