//! A SPDY/3.1 session over one byte stream: stream multiplexing, the stream state machine of
//! §2.3, PING/GOAWAY handling (§2.6.5, §2.6.6) and 3.1 flow control (§2.6.8), driven by one tokio
//! task per connection that runs a frame reader and a frame writer.
//!
//! # Flow control and the Go peer
//! Kubernetes' SPDY peer is `moby/spdystream`. Its frame dispatcher (`Connection.frameHandler` in
//! `connection.go`) has no case for WINDOW_UPDATE or SETTINGS: both fall to the "unhandled frame
//! type" branch, which only logs at debug level. Its `Stream.Write` sends one DATA frame per call
//! without looking at any window, and it never sends WINDOW_UPDATE itself. Its only backpressure is
//! head-of-line blocking: a DATA frame is handed to the reader over an unbuffered channel, which
//! stalls that frame worker and, once its queue fills, the connection's read loop.
//!
//! So this session:
//! * **sending**: always keeps the 3.1 per-stream and session send windows, but only *waits* on
//!   them once the peer has shown it does flow control — by sending a WINDOW_UPDATE or a SETTINGS
//!   frame with INITIAL_WINDOW_SIZE ([`SendFlowControl::Auto`]). A Go peer never does, so we never
//!   stall waiting for an update that will not come; writes are still backpressured by the bounded
//!   outgoing queue and, behind it, the socket.
//! * **receiving**: buffers at most one advertised window (SETTINGS_INITIAL_WINDOW_SIZE, 64 KiB by
//!   default, sent at session start) per stream and returns credit with WINDOW_UPDATE as the
//!   consumer reads. A peer that ignores the window (the Go peer) is not reset with
//!   FLOW_CONTROL_ERROR — that would break every exec with a slow reader — instead the reader task
//!   stops reading the socket until the consumer drains the stream below the window, which is the
//!   same head-of-line backpressure the Go side applies to us. Memory per stream stays bounded by
//!   the window plus one frame. The session window is credited back on receipt (stream windows
//!   already bound memory), so one unread stream does not starve its siblings.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::frame::{
    Decoder, Encoder, Frame, GoAwayStatus, Limits, RstStatus, Setting, MAX_STREAM_ID,
    SETTINGS_INITIAL_WINDOW_SIZE,
};

pub use super::frame::Headers;

/// Initial stream and session window of SPDY/3.1 (§2.6.8).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// Largest window (§2.6.8: 2^31 - 1).
const MAX_WINDOW: i64 = MAX_STREAM_ID as i64;
/// Largest DATA frame we produce; a write larger than this is split.
const MAX_DATA_CHUNK: usize = 32 * 1024;
/// Outgoing control frames queued before the reader stops reading (e.g. a PING flood that we
/// cannot answer because the peer does not read).
const MAX_QUEUED_CONTROL_FRAMES: usize = 1024;

/// Which side of the connection we are. Per §2.3.2 the client opens odd stream ids and the
/// server even ones; PING ids follow the same parity (§2.6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// When send windows are enforced. See the module docs for why `Auto` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFlowControl {
    /// Enforce once the peer sends WINDOW_UPDATE or SETTINGS_INITIAL_WINDOW_SIZE.
    Auto,
    /// Enforce from the start (a peer known to send WINDOW_UPDATE).
    Enforce,
    /// Never wait on windows.
    Ignore,
}

/// Session tuning. `Config::default()` suits Kubernetes streaming.
#[derive(Debug, Clone)]
pub struct Config {
    /// The per-stream receive window we advertise with SETTINGS_INITIAL_WINDOW_SIZE.
    pub recv_window: u32,
    pub send_flow_control: SendFlowControl,
    /// Peer-opened streams waiting to be taken from the receiver before we stop reading.
    pub accept_backlog: usize,
    /// Bytes of DATA queued towards the socket before writers wait.
    pub max_queued_data: usize,
    pub limits: Limits,
    /// How long queued frames may take to drain once the connection is closing.
    pub close_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            recv_window: DEFAULT_WINDOW,
            send_flow_control: SendFlowControl::Auto,
            accept_backlog: 64,
            max_queued_data: 256 * 1024,
            limits: Limits::default(),
            close_grace: Duration::from_secs(5),
        }
    }
}

/// Why an operation on the session failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("SPDY connection closed: {0}")]
    Closed(String),
    #[error("SPDY session is going away; no new streams")]
    GoingAway,
    #[error("stream reset: {0}")]
    Reset(RstStatus),
    #[error("no stream ids left on this connection")]
    StreamIdsExhausted,
    #[error("stream {0} was already replied to")]
    AlreadyReplied(u32),
    #[error("stream {0} was opened by us; only peer-opened streams take a SYN_REPLY")]
    NotPeerStream(u32),
}

/// A cheap handle to one SPDY connection.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

struct Shared {
    role: Role,
    config: Config,
    inner: Mutex<Inner>,
    /// Wakes the writer: frames queued or shutdown requested. Single consumer, permit semantics.
    writer_wake: Notify,
    /// Wakes the reader when it waits for stream buffer space or queue space.
    reader_wake: Notify,
    /// Set once the writer should stop reading the socket (connection finished).
    stop_reader: watch::Sender<bool>,
    /// Set when the writer must give up even with frames queued (grace period over).
    abort_writer: watch::Sender<bool>,
    /// Set once the connection has fully ended.
    closed: watch::Sender<bool>,
}

struct Inner {
    streams: HashMap<u32, StreamState>,
    next_stream_id: u32,
    next_ping_id: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    last_peer_stream_id: u32,
    out: VecDeque<Frame>,
    out_data_bytes: usize,
    out_waiters: Vec<Waker>,
    /// Session-level send window (§2.6.8, stream 0).
    send_window: i64,
    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_initial_window: i64,
    enforce_send_windows: bool,
    recv_session_unacked: u32,
    goaway_sent: bool,
    goaway_received: bool,
    /// Writer should flush the queue and then shut the socket down.
    shutdown_requested: bool,
    closed: Option<String>,
    accept: Option<mpsc::Sender<Stream>>,
}

struct StreamState {
    /// Opened by us (true) or by the peer.
    local: bool,
    readers: usize,
    writers: usize,
    replied: bool,
    reply_tx: Option<oneshot::Sender<Result<Headers, SessionError>>>,
    recv_buf: VecDeque<Bytes>,
    recv_buffered: usize,
    recv_unacked: u32,
    remote_fin: bool,
    local_fin: bool,
    reset: Option<RstStatus>,
    send_window: i64,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl StreamState {
    fn new(local: bool, send_window: i64) -> StreamState {
        StreamState {
            local,
            readers: 1,
            writers: 1,
            replied: false,
            reply_tx: None,
            recv_buf: VecDeque::new(),
            recv_buffered: 0,
            recv_unacked: 0,
            remote_fin: false,
            local_fin: false,
            reset: None,
            send_window,
            read_waker: None,
            write_waker: None,
        }
    }

    fn finished(&self) -> bool {
        self.reset.is_some() || (self.local_fin && self.remote_fin)
    }

    fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

impl Inner {
    fn push(&mut self, frame: Frame) {
        if let Frame::Data { data, .. } = &frame {
            self.out_data_bytes += data.len();
        }
        self.out.push_back(frame);
    }

    fn active_streams(&self) -> usize {
        self.streams.values().filter(|s| !s.finished()).count()
    }

    fn wake_all(&mut self) {
        for stream in self.streams.values_mut() {
            stream.wake();
        }
        for w in self.out_waiters.drain(..) {
            w.wake();
        }
    }

    /// Drops streams nobody holds once they are finished; a stream whose handles are all gone
    /// before we sent FIN is cancelled (§2.4.2 RST_STREAM CANCEL).
    fn collect(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.readers + stream.writers > 0 {
            return;
        }
        if !stream.finished() && !stream.local_fin {
            stream.reset = Some(RstStatus::Cancel);
            self.out.push_back(Frame::RstStream {
                stream_id: id,
                status: RstStatus::Cancel,
            });
        }
        // A stream we finished sending on stays (detached, discarding input) until the peer's FIN.
        if self.streams.get(&id).is_some_and(|s| s.finished()) {
            self.streams.remove(&id);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this module; keep going with the data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn peer_opens_odd(&self) -> bool {
        self.role == Role::Server
    }

    /// After any change that can finish streams: a session that is going away closes once idle.
    fn maybe_finish_going_away(&self, inner: &mut Inner) {
        if (inner.goaway_sent || inner.goaway_received)
            && inner.active_streams() == 0
            && !inner.shutdown_requested
        {
            inner.shutdown_requested = true;
            self.writer_wake.notify_one();
        }
    }

    fn close_with(&self, inner: &mut Inner, reason: String) {
        if inner.closed.is_none() {
            inner.closed = Some(reason);
        }
        inner.shutdown_requested = true;
        inner.accept = None;
        for stream in inner.streams.values_mut() {
            if let Some(tx) = stream.reply_tx.take() {
                let _ = tx.send(Err(SessionError::Closed(
                    inner.closed.clone().unwrap_or_default(),
                )));
            }
        }
        inner.pings.clear();
        inner.wake_all();
        self.writer_wake.notify_one();
        self.reader_wake.notify_one();
    }
}

impl Session {
    /// Starts a session over `io` with the default [`Config`]. The receiver yields the streams the
    /// peer opens; they must be answered with [`Stream::reply`].
    pub fn new<IO>(io: IO, role: Role) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::with_config(io, role, Config::default())
    }

    pub fn with_config<IO>(io: IO, role: Role, config: Config) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (accept_tx, accept_rx) = mpsc::channel(config.accept_backlog.max(1));
        let enforce = config.send_flow_control == SendFlowControl::Enforce;
        let recv_window = i64::from(config.recv_window).clamp(1, MAX_WINDOW) as u32;
        let mut inner = Inner {
            streams: HashMap::new(),
            next_stream_id: if role == Role::Client { 1 } else { 2 },
            next_ping_id: if role == Role::Client { 1 } else { 2 },
            pings: HashMap::new(),
            last_peer_stream_id: 0,
            out: VecDeque::new(),
            out_data_bytes: 0,
            out_waiters: Vec::new(),
            send_window: i64::from(DEFAULT_WINDOW),
            peer_initial_window: i64::from(DEFAULT_WINDOW),
            enforce_send_windows: enforce,
            recv_session_unacked: 0,
            goaway_sent: false,
            goaway_received: false,
            shutdown_requested: false,
            closed: None,
            accept: Some(accept_tx),
        };
        // Advertise our stream window first thing: it tells a flow-controlling peer what we
        // buffer, and signals that we speak 3.1 flow control. The Go peer parses and ignores it.
        inner.push(Frame::Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: recv_window,
            }],
        });
        let mut config = config;
        config.recv_window = recv_window;
        let shared = Arc::new(Shared {
            role,
            config,
            inner: Mutex::new(inner),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            stop_reader: watch::channel(false).0,
            abort_writer: watch::channel(false).0,
            closed: watch::channel(false).0,
        });
        let (read_half, write_half) = tokio::io::split(io);
        let task_shared = shared.clone();
        tokio::spawn(async move {
            let reader = read_loop(task_shared.clone(), read_half);
            let writer = write_loop(task_shared.clone(), write_half);
            tokio::join!(reader, writer);
            let mut inner = task_shared.lock();
            task_shared.close_with(&mut inner, "connection ended".to_string());
            drop(inner);
            task_shared.closed.send_replace(true);
        });
        (Session { shared }, accept_rx)
    }

    /// Opens a stream (SYN_STREAM) and waits for the peer's SYN_REPLY.
    pub async fn open_stream(&self, headers: Headers) -> Result<Stream, SessionError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut inner = self.shared.lock();
            if let Some(reason) = &inner.closed {
                return Err(SessionError::Closed(reason.clone()));
            }
            if inner.goaway_sent || inner.goaway_received || inner.shutdown_requested {
                return Err(SessionError::GoingAway);
            }
            let id = inner.next_stream_id;
            if id > MAX_STREAM_ID {
                return Err(SessionError::StreamIdsExhausted);
            }
            inner.next_stream_id += 2;
            let mut state = StreamState::new(true, inner.peer_initial_window);
            state.reply_tx = Some(tx);
            inner.streams.insert(id, state);
            // Allocation and queueing under one lock keep ids on the wire increasing (§2.3.2).
            inner.push(Frame::SynStream {
                stream_id: id,
                associated_stream_id: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: headers.clone(),
            });
            id
        };
        self.shared.writer_wake.notify_one();
        // Created before waiting so that abandoning this future cancels the stream (via Drop).
        let mut stream = Stream {
            id,
            headers,
            reply_headers: None,
            shared: self.shared.clone(),
        };
        match rx.await {
            Ok(Ok(reply)) => {
                stream.reply_headers = Some(reply);
                Ok(stream)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SessionError::Closed("session ended".into())),
        }
    }

    /// Sends PING and waits for the echo (§2.6.5).
    pub async fn ping(&self) -> Result<(), SessionError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.shared.lock();
            if let Some(reason) = &inner.closed {
                return Err(SessionError::Closed(reason.clone()));
            }
            let id = inner.next_ping_id;
            inner.next_ping_id = inner.next_ping_id.wrapping_add(2);
            if inner.next_ping_id == 0 {
                inner.next_ping_id = if self.shared.role == Role::Client {
                    1
                } else {
                    2
                };
            }
            inner.pings.insert(id, tx);
            inner.push(Frame::Ping { id });
        }
        self.shared.writer_wake.notify_one();
        rx.await
            .map_err(|_| SessionError::Closed("connection ended before the PING echo".into()))
    }

    /// Sends GOAWAY(OK): the peer may open no more streams, we open none either, and the connection
    /// closes once the open streams finish (§2.6.6).
    pub async fn goaway(&self) {
        let mut inner = self.shared.lock();
        if inner.goaway_sent || inner.closed.is_some() {
            return;
        }
        inner.goaway_sent = true;
        let last = inner.last_peer_stream_id;
        inner.push(Frame::GoAway {
            last_good_stream_id: last,
            status: GoAwayStatus::Ok,
        });
        self.shared.writer_wake.notify_one();
        self.shared.maybe_finish_going_away(&mut inner);
    }

    /// Resolves once the connection has ended (EOF, I/O or protocol error, or GOAWAY completed).
    pub async fn closed(&self) {
        let mut rx = self.shared.closed.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }
}

/// One SPDY stream. Split it into an [`AsyncRead`] and an [`AsyncWrite`] half with [`Stream::split`].
pub struct Stream {
    id: u32,
    headers: Headers,
    reply_headers: Option<Headers>,
    shared: Arc<Shared>,
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the stream's SYN_STREAM.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// For a stream we opened: the headers of the peer's SYN_REPLY.
    pub fn reply_headers(&self) -> Option<&Headers> {
        self.reply_headers.as_ref()
    }

    /// Answers a peer-opened stream with SYN_REPLY. Data can be written only after this.
    pub async fn reply(&self, headers: Headers) -> Result<(), SessionError> {
        let mut inner = self.shared.lock();
        if let Some(reason) = &inner.closed {
            return Err(SessionError::Closed(reason.clone()));
        }
        let Some(stream) = inner.streams.get_mut(&self.id) else {
            return Err(SessionError::Closed("stream is gone".into()));
        };
        if stream.local {
            return Err(SessionError::NotPeerStream(self.id));
        }
        if stream.replied {
            return Err(SessionError::AlreadyReplied(self.id));
        }
        if let Some(status) = stream.reset {
            return Err(SessionError::Reset(status));
        }
        stream.replied = true;
        inner.push(Frame::SynReply {
            stream_id: self.id,
            fin: false,
            headers,
        });
        self.shared.writer_wake.notify_one();
        Ok(())
    }

    /// Aborts the stream with RST_STREAM; both halves then fail.
    pub fn reset(&self, status: RstStatus) {
        reset_stream(&self.shared, self.id, status);
    }

    pub fn split(self) -> (StreamReader, StreamWriter) {
        {
            let mut inner = self.shared.lock();
            if let Some(stream) = inner.streams.get_mut(&self.id) {
                stream.readers += 1;
                stream.writers += 1;
            }
        }
        let reader = StreamReader {
            id: self.id,
            shared: self.shared.clone(),
        };
        let writer = StreamWriter {
            id: self.id,
            shared: self.shared.clone(),
        };
        // Dropping `self` releases its own reader+writer claim.
        (reader, writer)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        release(&self.shared, self.id, true, true);
    }
}

fn reset_stream(shared: &Shared, id: u32, status: RstStatus) {
    let mut inner = shared.lock();
    if inner.closed.is_some() {
        return;
    }
    let Some(stream) = inner.streams.get_mut(&id) else {
        return;
    };
    if stream.reset.is_some() {
        return;
    }
    stream.reset = Some(status);
    stream.recv_buf.clear();
    stream.recv_buffered = 0;
    stream.wake();
    inner.push(Frame::RstStream {
        stream_id: id,
        status,
    });
    shared.writer_wake.notify_one();
    shared.reader_wake.notify_one();
    inner.collect(id);
    shared.maybe_finish_going_away(&mut inner);
}

fn release(shared: &Shared, id: u32, reader: bool, writer: bool) {
    let mut inner = shared.lock();
    let Some(stream) = inner.streams.get_mut(&id) else {
        return;
    };
    if reader {
        stream.readers = stream.readers.saturating_sub(1);
    }
    if writer {
        stream.writers = stream.writers.saturating_sub(1);
    }
    if stream.readers == 0 {
        // Nobody will read what is buffered; drop it so the reader task never waits on it.
        stream.recv_buf.clear();
        stream.recv_buffered = 0;
    }
    inner.collect(id);
    shared.writer_wake.notify_one();
    shared.reader_wake.notify_one();
    shared.maybe_finish_going_away(&mut inner);
}

/// The receiving half: EOF after the peer's FIN, an error after RST_STREAM or connection loss.
pub struct StreamReader {
    id: u32,
    shared: Arc<Shared>,
}

impl StreamReader {
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        release(&self.shared, self.id, true, false);
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_stream(&self.shared, self.id, cx, buf)
    }
}

fn poll_read_stream(
    shared: &Shared,
    id: u32,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let recv_window = shared.config.recv_window;
    let mut inner = shared.lock();
    let closed = inner.closed.clone();
    let Some(stream) = inner.streams.get_mut(&id) else {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "stream is gone",
        )));
    };
    if let Some(status) = stream.reset {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("SPDY stream {id} reset: {status}"),
        )));
    }
    if stream.recv_buf.is_empty() {
        if stream.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(reason) = closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("SPDY connection closed: {reason}"),
            )));
        }
        stream.read_waker = Some(cx.waker().clone());
        return Poll::Pending;
    }
    let mut copied = 0usize;
    while buf.remaining() > 0 {
        let Some(front) = stream.recv_buf.front_mut() else {
            break;
        };
        let n = front.len().min(buf.remaining());
        buf.put_slice(&front[..n]);
        front.advance(n);
        if front.is_empty() {
            stream.recv_buf.pop_front();
        }
        copied += n;
    }
    stream.recv_buffered -= copied;
    stream.recv_unacked = stream.recv_unacked.saturating_add(copied as u32);
    // Return credit in chunks of half a window, not per read (§2.6.8 leaves the policy open).
    let update = if !stream.remote_fin && stream.recv_unacked >= recv_window / 2 {
        let delta = stream.recv_unacked;
        stream.recv_unacked = 0;
        Some(delta)
    } else {
        None
    };
    if let Some(delta) = update {
        inner.push(Frame::WindowUpdate {
            stream_id: id,
            delta,
        });
        shared.writer_wake.notify_one();
    }
    drop(inner);
    shared.reader_wake.notify_one();
    Poll::Ready(Ok(()))
}

/// The sending half: `poll_shutdown` sends FIN (an empty DATA frame with FLAG_FIN).
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        release(&self.shared, self.id, false, true);
    }
}

fn write_error(inner: &Inner, id: u32) -> Option<io::Error> {
    if let Some(reason) = &inner.closed {
        return Some(io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("SPDY connection closed: {reason}"),
        ));
    }
    match inner.streams.get(&id) {
        None => Some(io::Error::new(
            io::ErrorKind::NotConnected,
            "stream is gone",
        )),
        Some(stream) => {
            if let Some(status) = stream.reset {
                Some(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("SPDY stream {id} reset: {status}"),
                ))
            } else if stream.local_fin {
                Some(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "write after FIN on SPDY stream",
                ))
            } else if !stream.local && !stream.replied {
                Some(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "SYN_REPLY not sent yet: call Stream::reply before writing",
                ))
            } else {
                None
            }
        }
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let shared = &self.shared;
        let id = self.id;
        let mut inner = shared.lock();
        if let Some(err) = write_error(&inner, id) {
            return Poll::Ready(Err(err));
        }
        if inner.out_data_bytes >= shared.config.max_queued_data {
            inner.out_waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        let enforce = inner.enforce_send_windows;
        let session_window = inner.send_window;
        let Some(stream) = inner.streams.get_mut(&id) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "stream is gone",
            )));
        };
        let mut n = data.len().min(MAX_DATA_CHUNK);
        if enforce {
            let allowed = stream.send_window.min(session_window);
            if allowed <= 0 {
                stream.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            n = n.min(allowed as usize);
        }
        stream.send_window -= n as i64;
        inner.send_window -= n as i64;
        inner.push(Frame::Data {
            stream_id: id,
            fin: false,
            data: Bytes::copy_from_slice(&data[..n]),
        });
        drop(inner);
        shared.writer_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    /// Frames are handed to the connection writer as they are written; the outgoing queue is
    /// bounded, so there is nothing further to wait for here.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = self.shared.lock();
        match &inner.closed {
            Some(reason) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("SPDY connection closed: {reason}"),
            ))),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let id = self.id;
        let mut inner = shared.lock();
        if inner.streams.get(&id).is_some_and(|s| s.local_fin) {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = write_error(&inner, id) {
            return Poll::Ready(Err(err));
        }
        if let Some(stream) = inner.streams.get_mut(&id) {
            stream.local_fin = true;
        }
        inner.push(Frame::Data {
            stream_id: id,
            fin: true,
            data: Bytes::new(),
        });
        inner.collect(id);
        shared.maybe_finish_going_away(&mut inner);
        drop(inner);
        shared.writer_wake.notify_one();
        Poll::Ready(Ok(()))
    }
}

/// Writes queued frames in order (header compression requires it) until shutdown or failure.
async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut io: W) {
    let mut encoder = match Encoder::new() {
        Ok(encoder) => encoder,
        Err(e) => {
            tracing::error!(error = %e, "SPDY: cannot set up header compression");
            let mut inner = shared.lock();
            shared.close_with(&mut inner, e.to_string());
            shared.stop_reader.send_replace(true);
            return;
        }
    };
    let mut abort = shared.abort_writer.subscribe();
    let mut buf = BytesMut::new();
    loop {
        let notified = shared.writer_wake.notified();
        let (batch, shutdown) = {
            let mut inner = shared.lock();
            let batch: Vec<Frame> = inner.out.drain(..).collect();
            inner.out_data_bytes = 0;
            for w in inner.out_waiters.drain(..) {
                w.wake();
            }
            (batch, inner.shutdown_requested)
        };
        if !batch.is_empty() {
            shared.reader_wake.notify_one();
        }
        if batch.is_empty() && shutdown {
            break;
        }
        if batch.is_empty() {
            tokio::select! {
                _ = notified => {}
                _ = abort.wait_for(|a| *a) => break,
            }
            continue;
        }
        buf.clear();
        let mut failed = None;
        for frame in &batch {
            if let Err(e) = encoder.encode(frame, &mut buf) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            tracing::error!(error = %e, "SPDY: cannot encode an outgoing frame; closing");
            let mut inner = shared.lock();
            shared.close_with(&mut inner, format!("encoding failed: {e}"));
            break;
        }
        let written = tokio::select! {
            r = async { io.write_all(&buf).await?; io.flush().await } => r,
            _ = abort.wait_for(|a| *a) => Err(io::Error::new(io::ErrorKind::TimedOut, "close grace period over")),
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "SPDY: write failed; closing");
            let mut inner = shared.lock();
            shared.close_with(&mut inner, format!("write failed: {e}"));
            break;
        }
    }
    // Best effort: a half-close tells the peer we are done even if it keeps its side open.
    if !*shared.abort_writer.borrow() {
        let _ = tokio::time::timeout(shared.config.close_grace, io.shutdown()).await;
    }
    shared.stop_reader.send_replace(true);
}

/// Reads and dispatches frames until EOF, a protocol error, or the writer finishing.
async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut io: R) {
    let mut decoder = Decoder::new(shared.config.limits);
    let mut stop = shared.stop_reader.subscribe();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let end_reason: String = 'outer: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "SPDY: malformed frame from peer; closing session");
                    let mut inner = shared.lock();
                    let last = inner.last_peer_stream_id;
                    inner.push(Frame::GoAway {
                        last_good_stream_id: last,
                        status: GoAwayStatus::ProtocolError,
                    });
                    inner.goaway_sent = true;
                    break 'outer format!("protocol error: {e}");
                }
            };
            if let Err(reason) = handle_frame(&shared, frame, &mut stop).await {
                break 'outer reason;
            }
        }
        tokio::select! {
            read = io.read_buf(&mut buf) => match read {
                Ok(0) => break 'outer "peer closed the connection".to_string(),
                Ok(_) => {}
                Err(e) => break 'outer format!("read failed: {e}"),
            },
            _ = stop.wait_for(|s| *s) => break 'outer "session shut down".to_string(),
        }
    };
    tracing::debug!(reason = %end_reason, "SPDY: reader finished");
    {
        let mut inner = shared.lock();
        shared.close_with(&mut inner, end_reason);
    }
    // Let the writer flush what is queued (e.g. our GOAWAY), but not forever.
    let mut closed_writer = shared.stop_reader.subscribe();
    let grace = shared.config.close_grace;
    if tokio::time::timeout(grace, closed_writer.wait_for(|s| *s))
        .await
        .is_err()
    {
        shared.abort_writer.send_replace(true);
    }
}

/// Waits until `ready` holds, re-checking whenever a consumer or the writer makes progress.
/// Returns false if the session is shutting down.
async fn wait_until(
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    mut ready: impl FnMut(&Inner) -> bool,
) -> bool {
    loop {
        let notified = shared.reader_wake.notified();
        {
            let inner = shared.lock();
            if inner.closed.is_some() {
                return false;
            }
            if ready(&inner) {
                return true;
            }
        }
        tokio::select! {
            _ = notified => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Applies one frame. `Err` ends the session with that reason.
async fn handle_frame(
    shared: &Arc<Shared>,
    frame: Frame,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    // Bound what we queue in reply (PING echoes, RST, WINDOW_UPDATE) when the peer does not read.
    if !wait_until(shared, stop, |inner| {
        inner.out.len() < MAX_QUEUED_CONTROL_FRAMES
    })
    .await
    {
        return Err("session shut down".into());
    }
    match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => handle_data(shared, stream_id, fin, data, stop).await,
        Frame::SynStream {
            stream_id,
            fin,
            unidirectional,
            headers,
            ..
        } => handle_syn_stream(shared, stream_id, fin, unidirectional, headers, stop).await,
        Frame::SynReply {
            stream_id,
            fin,
            headers,
        } => {
            let mut inner = shared.lock();
            match inner.streams.get_mut(&stream_id) {
                Some(stream) if stream.local && !stream.replied => {
                    stream.replied = true;
                    if fin {
                        stream.remote_fin = true;
                        stream.wake();
                    }
                    if let Some(tx) = stream.reply_tx.take() {
                        if tx.send(Ok(headers)).is_err() {
                            // open_stream was abandoned: nobody will ever use this stream.
                            stream.readers = 0;
                            stream.writers = 0;
                        }
                    }
                    inner.collect(stream_id);
                }
                Some(stream) if stream.local => {
                    // §2.6.2: a second SYN_REPLY is a stream error STREAM_IN_USE.
                    stream.reset = Some(RstStatus::StreamInUse);
                    stream.wake();
                    inner.push(Frame::RstStream {
                        stream_id,
                        status: RstStatus::StreamInUse,
                    });
                    inner.collect(stream_id);
                }
                _ => {
                    inner.push(Frame::RstStream {
                        stream_id,
                        status: RstStatus::InvalidStream,
                    });
                }
            }
            shared.maybe_finish_going_away(&mut inner);
            shared.writer_wake.notify_one();
            Ok(())
        }
        Frame::RstStream { stream_id, status } => {
            let mut inner = shared.lock();
            if let Some(stream) = inner.streams.get_mut(&stream_id) {
                stream.reset = Some(status);
                stream.recv_buf.clear();
                stream.recv_buffered = 0;
                if let Some(tx) = stream.reply_tx.take() {
                    let _ = tx.send(Err(SessionError::Reset(status)));
                }
                stream.wake();
                inner.collect(stream_id);
            }
            shared.maybe_finish_going_away(&mut inner);
            Ok(())
        }
        Frame::Settings { entries, .. } => {
            let mut inner = shared.lock();
            for entry in entries {
                if entry.id != SETTINGS_INITIAL_WINDOW_SIZE {
                    continue;
                }
                let new = i64::from(entry.value).min(MAX_WINDOW);
                let delta = new - inner.peer_initial_window;
                inner.peer_initial_window = new;
                // §2.6.8: a new initial window adjusts every open stream's window by the difference.
                for stream in inner.streams.values_mut() {
                    stream.send_window += delta;
                    stream.wake();
                }
                if shared.config.send_flow_control == SendFlowControl::Auto {
                    inner.enforce_send_windows = true;
                }
            }
            Ok(())
        }
        Frame::Ping { id } => {
            let mut inner = shared.lock();
            let peer_parity = if shared.peer_opens_odd() { 1 } else { 0 };
            if id % 2 == peer_parity {
                inner.push(Frame::Ping { id });
                shared.writer_wake.notify_one();
            } else if let Some(tx) = inner.pings.remove(&id) {
                let _ = tx.send(());
            }
            Ok(())
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            tracing::debug!(?status, last_good_stream_id, "SPDY: peer sent GOAWAY");
            let mut inner = shared.lock();
            inner.goaway_received = true;
            // Streams we opened beyond the peer's last good id were never seen by it (§2.6.6).
            let doomed: Vec<u32> = inner
                .streams
                .iter()
                .filter(|(id, s)| s.local && **id > last_good_stream_id && !s.finished())
                .map(|(id, _)| *id)
                .collect();
            for id in doomed {
                if let Some(stream) = inner.streams.get_mut(&id) {
                    stream.reset = Some(RstStatus::RefusedStream);
                    if let Some(tx) = stream.reply_tx.take() {
                        let _ = tx.send(Err(SessionError::GoingAway));
                    }
                    stream.wake();
                }
                inner.collect(id);
            }
            shared.maybe_finish_going_away(&mut inner);
            Ok(())
        }
        Frame::Headers { stream_id, fin, .. } => {
            // Extra headers are not surfaced (remotecommand and port-forward do not use them),
            // but their FIN counts.
            let mut inner = shared.lock();
            if fin {
                if let Some(stream) = inner.streams.get_mut(&stream_id) {
                    stream.remote_fin = true;
                    stream.wake();
                    inner.collect(stream_id);
                }
            }
            shared.maybe_finish_going_away(&mut inner);
            Ok(())
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut inner = shared.lock();
            if shared.config.send_flow_control == SendFlowControl::Auto {
                inner.enforce_send_windows = true;
            }
            let delta = i64::from(delta);
            if stream_id == 0 {
                inner.send_window += delta;
                if inner.send_window > MAX_WINDOW {
                    tracing::warn!("SPDY: peer overflowed the session window");
                    let last = inner.last_peer_stream_id;
                    inner.push(Frame::GoAway {
                        last_good_stream_id: last,
                        status: GoAwayStatus::ProtocolError,
                    });
                    inner.goaway_sent = true;
                    return Err("session window overflow".into());
                }
                for stream in inner.streams.values_mut() {
                    if let Some(w) = stream.write_waker.take() {
                        w.wake();
                    }
                }
            } else {
                let mut overflow = false;
                if let Some(stream) = inner.streams.get_mut(&stream_id) {
                    stream.send_window += delta;
                    if stream.send_window > MAX_WINDOW {
                        overflow = true;
                        stream.reset = Some(RstStatus::FlowControlError);
                        stream.wake();
                    } else if let Some(w) = stream.write_waker.take() {
                        w.wake();
                    }
                }
                if overflow {
                    inner.push(Frame::RstStream {
                        stream_id,
                        status: RstStatus::FlowControlError,
                    });
                    inner.collect(stream_id);
                    shared.writer_wake.notify_one();
                }
            }
            Ok(())
        }
        Frame::Unknown { frame_type, .. } => {
            // §2.2.1: unknown control frames are ignored.
            tracing::debug!(frame_type, "SPDY: ignoring unknown control frame");
            Ok(())
        }
    }
}

async fn handle_syn_stream(
    shared: &Arc<Shared>,
    stream_id: u32,
    fin: bool,
    unidirectional: bool,
    headers: Headers,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let accept = {
        let mut inner = shared.lock();
        let parity_ok = (stream_id % 2 == 1) == shared.peer_opens_odd();
        let refuse = if !parity_ok || stream_id <= inner.last_peer_stream_id {
            // §2.3.2: ids must have the opener's parity and increase; the Go peer answers the
            // same violation with RST_STREAM PROTOCOL_ERROR, and so do we.
            Some(RstStatus::ProtocolError)
        } else if inner.goaway_sent || inner.accept.is_none() {
            Some(RstStatus::RefusedStream)
        } else {
            None
        };
        if parity_ok && stream_id > inner.last_peer_stream_id {
            inner.last_peer_stream_id = stream_id;
        }
        if let Some(status) = refuse {
            inner.push(Frame::RstStream { stream_id, status });
            shared.writer_wake.notify_one();
            return Ok(());
        }
        let mut state = StreamState::new(false, inner.peer_initial_window);
        state.remote_fin = fin;
        // A unidirectional stream is half-closed on our side from the start (§2.6.1).
        state.local_fin = unidirectional;
        inner.streams.insert(stream_id, state);
        inner.accept.clone()
    };
    let stream = Stream {
        id: stream_id,
        headers,
        reply_headers: None,
        shared: shared.clone(),
    };
    let Some(accept) = accept else {
        return Ok(());
    };
    tokio::select! {
        sent = accept.send(stream) => {
            if let Err(mpsc::error::SendError(stream)) = sent {
                // Nobody accepts streams any more: refuse instead of cancelling.
                stream.reset(RstStatus::RefusedStream);
            }
            Ok(())
        }
        _ = stop.wait_for(|s| *s) => Err("session shut down".into()),
    }
}

async fn handle_data(
    shared: &Arc<Shared>,
    stream_id: u32,
    fin: bool,
    data: Bytes,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let recv_window = shared.config.recv_window as usize;
    {
        let mut inner = shared.lock();
        let len = data.len() as u32;
        // The session window is credited on receipt: per-stream windows bound what we buffer.
        inner.recv_session_unacked = inner.recv_session_unacked.saturating_add(len);
        if inner.recv_session_unacked >= DEFAULT_WINDOW / 2 {
            let delta = inner.recv_session_unacked;
            inner.recv_session_unacked = 0;
            inner.push(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
            shared.writer_wake.notify_one();
        }
        let mut reply = None;
        match inner.streams.get_mut(&stream_id) {
            None => {
                // §2.2.2: DATA for a stream that is not open is answered with INVALID_STREAM.
                reply = Some(RstStatus::InvalidStream);
            }
            Some(stream) if stream.reset.is_some() => {}
            Some(stream) if stream.remote_fin => {
                stream.reset = Some(RstStatus::StreamAlreadyClosed);
                stream.wake();
                reply = Some(RstStatus::StreamAlreadyClosed);
            }
            Some(stream) => {
                if stream.readers > 0 && !data.is_empty() {
                    stream.recv_buffered += data.len();
                    stream.recv_buf.push_back(data);
                }
                if fin {
                    stream.remote_fin = true;
                }
                stream.wake();
            }
        }
        if let Some(status) = reply {
            inner.push(Frame::RstStream { stream_id, status });
            shared.writer_wake.notify_one();
        }
        if fin || reply.is_some() {
            inner.collect(stream_id);
            shared.maybe_finish_going_away(&mut inner);
        }
    }
    // Backpressure for peers that ignore our window (see module docs): stop reading the socket
    // until this stream's consumer brings its buffer back within the window.
    let drained = wait_until(shared, stop, |inner| match inner.streams.get(&stream_id) {
        Some(stream) => stream.recv_buffered <= recv_window || stream.readers == 0,
        None => true,
    })
    .await;
    if drained {
        Ok(())
    } else {
        Err("session shut down".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::DuplexStream;
    use tokio::time::timeout;

    const LIMIT: Duration = Duration::from_secs(10);

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The SYN_STREAM a client sends to open a bidirectional stream.
    fn syn(stream_id: u32, headers: &[(&str, &str)]) -> Frame {
        Frame::SynStream { stream_id, associated_stream_id: 0, priority: 0, slot: 0, fin: false, unidirectional: false, headers: h(headers) }
    }

    fn pair() -> (
        Session,
        mpsc::Receiver<Stream>,
        Session,
        mpsc::Receiver<Stream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, client_rx) = Session::new(a, Role::Client);
        let (server, server_rx) = Session::new(b, Role::Server);
        (client, client_rx, server, server_rx)
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        timeout(LIMIT, f).await.expect("timed out")
    }

    /// Echo server: replies to every stream and copies its input back.
    fn spawn_echo(mut incoming: mpsc::Receiver<Stream>) {
        tokio::spawn(async move {
            while let Some(stream) = incoming.recv().await {
                tokio::spawn(async move {
                    stream.reply(h(&[("echo", "yes")])).await.expect("reply");
                    let (mut r, mut w) = stream.split();
                    tokio::io::copy(&mut r, &mut w).await.expect("copy");
                    w.shutdown().await.expect("fin");
                });
            }
        });
    }

    /// A hand-driven peer speaking raw frames, behaving like `moby/spdystream`: it never sends
    /// SETTINGS or WINDOW_UPDATE.
    struct RawPeer {
        io: DuplexStream,
        enc: Encoder,
        dec: Decoder,
        buf: BytesMut,
    }

    impl RawPeer {
        fn new(io: DuplexStream) -> RawPeer {
            RawPeer {
                io,
                enc: Encoder::new().unwrap(),
                dec: Decoder::new(Limits::default()),
                buf: BytesMut::new(),
            }
        }

        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            self.enc.encode(&frame, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }

        /// Next frame, or None at EOF.
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(frame) = self.dec.decode(&mut self.buf).unwrap() {
                    return Some(frame);
                }
                if within(self.io.read_buf(&mut self.buf)).await.unwrap() == 0 {
                    return None;
                }
            }
        }

        /// Next frame that is not flow-control chatter (SETTINGS / WINDOW_UPDATE).
        async fn recv_significant(&mut self) -> Option<Frame> {
            loop {
                match self.recv().await? {
                    Frame::Settings { .. } | Frame::WindowUpdate { .. } => continue,
                    other => return Some(other),
                }
            }
        }
    }

    #[tokio::test]
    async fn client_opens_server_replies_data_both_ways_and_fin() {
        let (client, _client_rx, _server, mut server_rx) = pair();
        let server_task = tokio::spawn(async move {
            let stream = server_rx.recv().await.expect("stream");
            assert_eq!(stream.id(), 1);
            assert_eq!(
                stream.headers(),
                &h(&[("streamtype", "stdin"), ("port", "80")])
            );
            stream.reply(h(&[("ok", "1")])).await.unwrap();
            let (mut r, mut w) = stream.split();
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            w.write_all(b"pong:").await.unwrap();
            w.write_all(&got).await.unwrap();
            w.shutdown().await.unwrap();
            got
        });
        let stream = within(client.open_stream(h(&[("StreamType", "stdin"), ("port", "80")])))
            .await
            .unwrap();
        assert_eq!(stream.reply_headers(), Some(&h(&[("ok", "1")])));
        let (mut r, mut w) = stream.split();
        w.write_all(b"ping").await.unwrap();
        w.shutdown().await.unwrap();
        let mut back = Vec::new();
        within(r.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back, b"pong:ping");
        assert_eq!(within(server_task).await.unwrap(), b"ping");
        // Writing after FIN fails.
        assert!(w.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn server_role_opens_even_streams_too() {
        let (_client, client_rx, server, _server_rx) = pair();
        spawn_echo(client_rx);
        let stream = within(server.open_stream(h(&[("a", "b")]))).await.unwrap();
        assert_eq!(stream.id(), 2);
        let (mut r, mut w) = stream.split();
        w.write_all(b"abc").await.unwrap();
        w.shutdown().await.unwrap();
        let mut back = Vec::new();
        within(r.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back, b"abc");
    }

    #[tokio::test]
    async fn many_concurrent_streams() {
        let (client, _client_rx, _server, server_rx) = pair();
        spawn_echo(server_rx);
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let stream = client
                    .open_stream(h(&[("n", &i.to_string())]))
                    .await
                    .unwrap();
                let payload: Vec<u8> = (0..(1000 + i * 997)).map(|b| (b ^ i) as u8).collect();
                let (mut r, mut w) = stream.split();
                let expected = payload.clone();
                let writer = tokio::spawn(async move {
                    w.write_all(&payload).await.unwrap();
                    w.shutdown().await.unwrap();
                });
                let mut back = Vec::new();
                r.read_to_end(&mut back).await.unwrap();
                writer.await.unwrap();
                assert_eq!(back, expected);
            }));
        }
        for t in tasks {
            within(t).await.unwrap();
        }
    }

    #[tokio::test]
    async fn reset_by_peer_fails_both_halves() {
        let (client, _client_rx, _server, mut server_rx) = pair();
        tokio::spawn(async move {
            let stream = server_rx.recv().await.unwrap();
            stream.reply(Headers::new()).await.unwrap();
            stream.reset(RstStatus::InternalError);
            // Keep the session alive.
            std::future::pending::<()>().await;
        });
        let stream = within(client.open_stream(Headers::new())).await.unwrap();
        let (mut r, mut w) = stream.split();
        let mut buf = [0u8; 8];
        let err = within(r.read(&mut buf)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(err.to_string().contains("InternalError"), "{err}");
        assert_eq!(
            w.write(b"x").await.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
    }

    #[tokio::test]
    async fn refused_stream_fails_open() {
        let (client, _client_rx, _server, mut server_rx) = pair();
        tokio::spawn(async move {
            let stream = server_rx.recv().await.unwrap();
            stream.reset(RstStatus::RefusedStream);
            std::future::pending::<()>().await;
        });
        assert_eq!(
            within(client.open_stream(Headers::new())).await.err(),
            Some(SessionError::Reset(RstStatus::RefusedStream))
        );
    }

    #[tokio::test]
    async fn ping_both_directions() {
        let (client, _c, server, _s) = pair();
        within(client.ping()).await.unwrap();
        within(server.ping()).await.unwrap();
    }

    #[tokio::test]
    async fn goaway_refuses_new_streams_lets_open_ones_finish_then_closes() {
        let (client, _client_rx, server, server_rx) = pair();
        spawn_echo(server_rx);
        let stream = within(client.open_stream(Headers::new())).await.unwrap();
        let (mut r, mut w) = stream.split();
        within(server.goaway()).await;
        // The client learns of the GOAWAY once it has been processed; PING round-trips order it.
        within(client.ping()).await.unwrap();
        assert_eq!(
            within(client.open_stream(Headers::new())).await.err(),
            Some(SessionError::GoingAway)
        );
        // The open stream still works.
        w.write_all(b"still here").await.unwrap();
        w.shutdown().await.unwrap();
        let mut back = Vec::new();
        within(r.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back, b"still here");
        drop((r, w));
        within(server.closed()).await;
        within(client.closed()).await;
    }

    #[tokio::test]
    async fn dropping_both_halves_without_fin_cancels() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (server, mut incoming) = Session::new(b, Role::Server);
        let mut peer = RawPeer::new(a);
        peer.send(syn(1, &[("streamtype", "stdout")]))
        .await;
        let stream = within(incoming.recv()).await.unwrap();
        stream.reply(Headers::new()).await.unwrap();
        let (r, w) = stream.split();
        drop(r);
        drop(w);
        assert!(matches!(
            peer.recv_significant().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        assert_eq!(
            peer.recv_significant().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: RstStatus::Cancel
            })
        );
        drop(server);
    }

    #[tokio::test]
    async fn data_on_unknown_stream_is_answered_with_rst() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (_server, _incoming) = Session::new(b, Role::Server);
        let mut peer = RawPeer::new(a);
        peer.send(Frame::Data {
            stream_id: 41,
            fin: false,
            data: Bytes::from_static(b"who?"),
        })
        .await;
        assert_eq!(
            peer.recv_significant().await,
            Some(Frame::RstStream {
                stream_id: 41,
                status: RstStatus::InvalidStream
            })
        );
    }

    #[tokio::test]
    async fn malformed_frame_closes_session_with_goaway_protocol_error() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (server, _incoming) = Session::new(b, Role::Server);
        let mut peer = RawPeer::new(a);
        // GOAWAY with a 4-byte payload: invalid in v3.
        peer.io
            .write_all(&[0x80, 0x03, 0x00, 0x07, 0, 0, 0, 4, 0, 0, 0, 1])
            .await
            .unwrap();
        assert_eq!(
            peer.recv_significant().await,
            Some(Frame::GoAway {
                last_good_stream_id: 0,
                status: GoAwayStatus::ProtocolError
            })
        );
        within(server.closed()).await;
        assert!(server.close_reason().unwrap().contains("protocol error"));
        assert!(server.open_stream(Headers::new()).await.is_err());
        // And the socket is closed on our side.
        assert_eq!(peer.recv().await, None);
    }

    #[tokio::test]
    async fn garbage_header_block_closes_session() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (server, _incoming) = Session::new(b, Role::Server);
        let mut peer = RawPeer::new(a);
        peer.io
            .write_all(&[
                0x80, 0x03, 0x00, 0x01, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9,
            ])
            .await
            .unwrap();
        within(server.closed()).await;
        assert!(server.close_reason().unwrap().contains("protocol error"));
    }

    #[tokio::test]
    async fn connection_loss_wakes_readers_and_writers_with_errors() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (server, mut incoming) = Session::new(b, Role::Server);
        let mut peer = RawPeer::new(a);
        peer.send(syn(1, &[])).await;
        let stream = within(incoming.recv()).await.unwrap();
        stream.reply(Headers::new()).await.unwrap();
        let (mut r, mut w) = stream.split();
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 4];
            r.read(&mut buf).await
        });
        drop(peer);
        let err = within(reading).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        within(server.closed()).await;
        assert!(w.write_all(b"late").await.is_err());
        assert!(within(incoming.recv()).await.is_none());
    }

    #[tokio::test]
    async fn writer_blocks_at_the_window_until_the_reader_reads() {
        let (client, _client_rx, _server, mut server_rx) = pair();
        let server_side = tokio::spawn(async move {
            let stream = server_rx.recv().await.unwrap();
            stream.reply(Headers::new()).await.unwrap();
            stream
        });
        let stream = within(client.open_stream(Headers::new())).await.unwrap();
        let server_stream = within(server_side).await.unwrap();
        let (_r, mut w) = stream.split();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let total = 4 * DEFAULT_WINDOW as usize;
        let payload: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let writer = tokio::spawn(async move {
            let mut sent = 0;
            while sent < payload.len() {
                let n = w.write(&payload[sent..]).await.unwrap();
                sent += n;
                counter.store(sent, Ordering::SeqCst);
            }
            w.shutdown().await.unwrap();
        });
        // The writer gets exactly one window's worth out and then waits for WINDOW_UPDATE.
        within(async {
            while accepted.load(Ordering::SeqCst) < DEFAULT_WINDOW as usize {
                tokio::task::yield_now().await;
            }
        })
        .await;
        // Give the writer every chance to overrun: PING round-trips prove the connection (and the
        // server's reader) kept moving meanwhile.
        for _ in 0..50 {
            within(client.ping()).await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), DEFAULT_WINDOW as usize);
        assert!(!writer.is_finished());
        // Reading releases it.
        let (mut r, _w) = server_stream.split();
        let mut got = Vec::new();
        within(r.read_to_end(&mut got)).await.unwrap();
        within(writer).await.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn go_like_peer_that_never_sends_window_update_is_not_stalled() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (_server, mut incoming) = Session::new(b, Role::Server);
        let mut peer = RawPeer::new(a);
        peer.send(syn(1, &[("streamtype", "stdout")]))
        .await;
        let stream = within(incoming.recv()).await.unwrap();
        stream.reply(Headers::new()).await.unwrap();
        let (_r, mut w) = stream.split();
        let total = 10 * DEFAULT_WINDOW as usize;
        let writer = tokio::spawn(async move {
            w.write_all(&vec![7u8; total]).await.unwrap();
            w.shutdown().await.unwrap();
        });
        // The peer only reads; it never returns window credit.
        let mut received = 0usize;
        loop {
            match peer.recv_significant().await {
                Some(Frame::SynReply { .. }) => {}
                Some(Frame::Data { data, fin, .. }) => {
                    received += data.len();
                    if fin {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, total);
        within(writer).await.unwrap();
    }

    #[tokio::test]
    async fn go_like_peer_overrunning_our_window_is_slowed_not_reset() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (server, mut incoming) = Session::new(b, Role::Server);
        let mut peer = RawPeer::new(a);
        peer.send(syn(1, &[("streamtype", "stdin")]))
        .await;
        let stream = within(incoming.recv()).await.unwrap();
        stream.reply(Headers::new()).await.unwrap();
        let (mut r, _w) = stream.split();
        // 8 windows in 32 KiB frames, ignoring flow control like spdystream does.
        let total = 8 * DEFAULT_WINDOW as usize;
        let (read_half, mut write_half) = tokio::io::split(peer.io);
        let mut enc = peer.enc;
        let sender = tokio::spawn(async move {
            for i in 0..total / MAX_DATA_CHUNK {
                let mut out = BytesMut::new();
                enc.encode(
                    &Frame::Data {
                        stream_id: 1,
                        fin: i + 1 == total / MAX_DATA_CHUNK,
                        data: Bytes::from(vec![i as u8; MAX_DATA_CHUNK]),
                    },
                    &mut out,
                )
                .unwrap();
                write_half.write_all(&out).await.unwrap();
            }
            write_half
        });
        // Before we read, the session buffers at most about one window: the sender stalls on the
        // socket instead of the session growing memory.
        within(async {
            loop {
                let buffered = {
                    let inner = server.shared.lock();
                    inner.streams.get(&1).map(|s| s.recv_buffered).unwrap_or(0)
                };
                if buffered > DEFAULT_WINDOW as usize {
                    break buffered;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        {
            let inner = server.shared.lock();
            let buffered = inner.streams.get(&1).map(|s| s.recv_buffered).unwrap_or(0);
            assert!(
                buffered <= DEFAULT_WINDOW as usize + MAX_DATA_CHUNK,
                "{buffered}"
            );
        }
        assert!(!sender.is_finished());
        let mut got = Vec::new();
        within(r.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got.len(), total);
        let mut write_half = within(sender).await.unwrap();
        // A PING echo orders everything the session sent before it: no RST for the overrun.
        let mut out = BytesMut::new();
        Encoder::new()
            .unwrap()
            .encode(&Frame::Ping { id: 1 }, &mut out)
            .unwrap();
        write_half.write_all(&out).await.unwrap();
        let mut peer = RawPeer {
            io: read_half.unsplit(write_half),
            enc: Encoder::new().unwrap(),
            dec: peer.dec,
            buf: peer.buf,
        };
        loop {
            match peer.recv_significant().await {
                Some(Frame::Ping { id: 1 }) => break,
                Some(Frame::SynReply { .. }) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}
