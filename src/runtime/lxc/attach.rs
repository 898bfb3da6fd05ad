//! CRI Attach through the per-container monitor: the monitor's attach socket (server side, run inside
//! M's single-threaded poll loop, see `monitor.rs`) and the daemon's client of it.
//!
//! # Socket
//! `<state>/containers/<id>/attach.sock` (mode 0600), bound by the monitor when the container has one
//! in its spec. The path may exceed `sun_path`'s 108 bytes, so both sides name it through
//! `/proc/self/fd/<fd of the directory>/attach.sock`. The monitor outlives the daemon, so a restarted
//! daemon simply connects again.
//!
//! # Framing (both directions)
//! `[kind: u8][length: u32 big-endian][payload: length bytes]`, payload at most [`MAX_FRAME`] bytes.
//! * monitor → daemon: [`STDOUT`], [`STDERR`] — the container's output as it is read (a tty
//!   container's pty output is `STDOUT`). The monitor closes the connection once the container's
//!   output ended (it exited).
//! * daemon → monitor: [`STDIN`] — bytes for the container's stdin (dropped when the container was
//!   created without stdin); [`STDIN_CLOSE`] (empty) — the client's stdin ended; [`RESIZE`] —
//!   `width: u16 BE, height: u16 BE` for a tty container's pty.
//! * Unknown kinds are ignored; an oversized frame closes that connection. Closing the connection
//!   detaches; the container keeps running. Its stdin stays open, except that for a container created
//!   with `stdin_once` (and no tty) the first [`STDIN_CLOSE`] closes it once the input before it was
//!   delivered: the container reads EOF, as with containerd ("stdin will be closed after the first
//!   attach session completes", api.proto). A pty has no write-only close, so a tty container's
//!   stdin stays open.
//!
//! # Buffering and backpressure (monitor side)
//! Every attached client gets every output byte, in the same poll round the CRI log gets it. Each
//! client has an output buffer; while any client holds more than [`HIGH_WATER`] unsent bytes the
//! monitor stops reading the container's output, so the container blocks in write(2) instead of the
//! monitor buffering without bound (the log loses nothing: it is written when the output is read).
//! A client that stays above the mark for [`STALL_LIMIT`] is disconnected, so one stuck `kubectl
//! attach` cannot stall the container forever. After the container exited the remaining output
//! (bounded by the pipe capacity) is read regardless. Bound per client: `HIGH_WATER` plus one
//! poll round of reads (the monitor's `PUMP_ROUNDS` × 64 KiB per stream). Client input waiting for
//! the container's stdin is bounded by [`STDIN_HIGH_WATER`]: beyond it clients are not read.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};


use crate::runtime::process_stdio::{BoxRead, BoxWrite, StdioFlags, StreamEnd, StreamingProcess, TermSize, TerminalResizer};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STDIN_CLOSE: u8 = 3;
pub const RESIZE: u8 = 4;
pub const MAX_FRAME: usize = 64 * 1024;
const HEADER: usize = 5;
pub const HIGH_WATER: usize = 256 * 1024;
pub const STALL_LIMIT: Duration = Duration::from_secs(10);
pub const STDIN_HIGH_WATER: usize = 64 * 1024;
/// At most this many clients at once; further connections are closed right away.
const MAX_CLIENTS: usize = 16;

/// File name of the socket in the container's state directory.
pub const SOCKET_NAME: &str = "attach.sock";

/// Append `payload` as frames of `kind` (split at MAX_FRAME; an empty payload is one empty frame).
pub fn encode_frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    if payload.is_empty() {
        out.push(kind);
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    for chunk in payload.chunks(MAX_FRAME) {
        out.push(kind);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("attach frame of {0} bytes exceeds the {MAX_FRAME} byte limit")]
pub struct FrameTooLong(usize);

/// Incremental decoder of the framing above.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameTooLong> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameTooLong(len));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some((kind, payload)))
    }
}

pub fn encode_resize(size: TermSize) -> [u8; 4] {
    let [w0, w1] = size.width.to_be_bytes();
    let [h0, h1] = size.height.to_be_bytes();
    [w0, w1, h0, h1]
}

pub fn decode_resize(payload: &[u8]) -> Option<TermSize> {
    match payload {
        [w0, w1, h0, h1] => Some(TermSize { width: u16::from_be_bytes([*w0, *w1]), height: u16::from_be_bytes([*h0, *h1]) }),
        _ => None,
    }
}

/// `/proc/self/fd/<dir fd>/<name>`: a short path for a socket in a deep directory. The returned
/// file must stay open while the path is used.
fn short_path(socket: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    let dir = socket.parent().ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "socket path has no directory"))?;
    let name = socket.file_name().ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "socket path has no file name"))?;
    let dir_file = std::fs::File::open(dir)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", dir_file.as_raw_fd())).join(name);
    Ok((dir_file, path))
}

// ---------------------------------------------------------------------------------------------
// Monitor side

struct Client {
    sock: UnixStream,
    out: Vec<u8>,
    sent: usize,
    decoder: FrameDecoder,
    /// Since when `out` has been above HIGH_WATER.
    full_since: Option<Instant>,
    gone: bool,
}

impl Client {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    fn flush(&mut self) {
        while self.sent < self.out.len() {
            match self.sock.write(&self.out[self.sent..]) {
                Ok(0) => {
                    self.gone = true;
                    return;
                }
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.gone = true;
                    return;
                }
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > HIGH_WATER {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        if self.pending() > HIGH_WATER {
            self.full_since.get_or_insert_with(Instant::now);
        } else {
            self.full_since = None;
        }
    }
}

/// The monitor's attach server; everything non-blocking, driven by M's poll loop.
pub struct AttachServer {
    listener: UnixListener,
    clients: Vec<Client>,
    /// Where STDIN frames go: the stdin pipe's write end or (tty) the pty master. None: no stdin.
    stdin: Option<OwnedFd>,
    /// The pty master, for RESIZE.
    pty: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    /// `stdin_once`: a STDIN_CLOSE closes `stdin` (after `stdin_pending`).
    stdin_once: bool,
    close_stdin: bool,
}

impl AttachServer {
    /// Bind `socket` (a stale file from an earlier monitor is replaced). `stdin` must be non-blocking
    /// and, for `stdin_once` to reach the container as EOF, the only write end the monitor holds.
    pub fn bind(socket: &Path, stdin: Option<OwnedFd>, pty: Option<OwnedFd>, stdin_once: bool) -> std::io::Result<AttachServer> {
        let (_dir, path) = short_path(socket)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        // Whoever may connect may type into the container: root only.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let stdin_once = stdin_once && pty.is_none();
        Ok(AttachServer { listener, clients: Vec::new(), stdin, pty, stdin_pending: Vec::new(), stdin_once, close_stdin: false })
    }

    /// Descriptors for M's poll(): the listener, every client (readable unless stdin is backed up;
    /// writable while it has output pending), the stdin target while input waits for it.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        let read_clients = self.stdin_pending.len() < STDIN_HIGH_WATER;
        for c in &self.clients {
            let mut flags = PollFlags::empty();
            if read_clients {
                flags |= PollFlags::POLLIN;
            }
            if c.pending() > 0 {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.sock.as_fd(), flags));
        }
        if let (Some(fd), false) = (&self.stdin, self.stdin_pending.is_empty()) {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
        }
        fds
    }

    /// Whether the container's output must not be read now (a client is above the high-water mark).
    pub fn backed_up(&self) -> bool {
        self.clients.iter().any(|c| c.pending() > HIGH_WATER)
    }

    /// Accept new clients, send buffered output, read client input, feed the container's stdin,
    /// drop clients that went away or stalled too long.
    pub fn service(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || sock.set_nonblocking(true).is_err() {
                        continue; // dropped: closed
                    }
                    self.clients.push(Client { sock, out: Vec::new(), sent: 0, decoder: FrameDecoder::default(), full_since: None, gone: false });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock, or a transient accept error: try again next round
            }
        }
        let mut buf = [0u8; 16 * 1024];
        for c in self.clients.iter_mut() {
            c.flush();
            // Input: at most a few reads per round, and none while stdin is backed up.
            for _ in 0..4 {
                if c.gone || self.stdin_pending.len() >= STDIN_HIGH_WATER {
                    break;
                }
                match c.sock.read(&mut buf) {
                    Ok(0) => c.gone = true,
                    Ok(n) => {
                        c.decoder.push(&buf[..n]);
                        loop {
                            match c.decoder.next_frame() {
                                Ok(Some((STDIN, data))) => {
                                    if self.stdin.is_some() {
                                        self.stdin_pending.extend_from_slice(&data);
                                    }
                                }
                                Ok(Some((STDIN_CLOSE, _))) => self.close_stdin |= self.stdin_once,
                                Ok(Some((RESIZE, data))) => {
                                    if let (Some(pty), Some(size)) = (&self.pty, decode_resize(&data)) {
                                        let ws = rustix::termios::Winsize { ws_row: size.height, ws_col: size.width, ws_xpixel: 0, ws_ypixel: 0 };
                                        let _ = rustix::termios::tcsetwinsize(pty, ws);
                                    }
                                }
                                Ok(Some(_)) => {} // unknown kind: ignored (see module docs)
                                Ok(None) => break,
                                Err(_) => {
                                    c.gone = true;
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => c.gone = true,
                }
            }
        }
        self.write_stdin();
        let now = Instant::now();
        self.clients.retain(|c| !c.gone && c.full_since.is_none_or(|t| now.duration_since(t) < STALL_LIMIT));
    }

    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else { return };
        while !self.stdin_pending.is_empty() {
            match nix::unistd::write(fd, &self.stdin_pending) {
                Ok(n) => {
                    self.stdin_pending.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    // The container closed its stdin: nothing will ever read this.
                    self.stdin_pending.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.close_stdin {
            self.stdin = None;
        }
    }

    /// Whether stdin_once closed the container's stdin: the monitor drops its own copy of the write
    /// end too, so that the container reads EOF.
    pub fn stdin_closed(&self) -> bool {
        self.close_stdin && self.stdin.is_none()
    }

    /// Hand one chunk of container output to every client.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        for c in self.clients.iter_mut() {
            encode_frame(kind, data, &mut c.out);
            c.flush();
        }
    }

    /// Whether some client has output the poll loop should wake up for even with nothing else to do.
    pub fn stalled_clients(&self) -> bool {
        self.clients.iter().any(|c| c.full_since.is_some())
    }

    /// The container ended: give clients up to `limit` to take what is buffered, then close them.
    pub fn finish(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.clients.iter().any(|c| !c.gone && c.pending() > 0) && Instant::now() < deadline {
            let mut fds: Vec<PollFd> = self.clients.iter().filter(|c| c.pending() > 0).map(|c| PollFd::new(c.sock.as_fd(), PollFlags::POLLOUT)).collect();
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u8));
            drop(fds);
            for c in self.clients.iter_mut() {
                c.flush();
            }
        }
        self.clients.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Daemon side

struct AbortOnDrop([tokio::task::JoinHandle<()>; 2]);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Forwards resizes to the monitor's pty over the attach connection.
struct AttachResizer {
    tx: mpsc::Sender<TermSize>,
}

impl TerminalResizer for AttachResizer {
    fn resize(&mut self, size: TermSize) -> std::io::Result<()> {
        // A full queue means resizes are arriving faster than they can matter; the next one wins.
        let _ = self.tx.try_send(size);
        Ok(())
    }
}

/// Connect to a container's attach socket. `tty`: the container has a terminal (resizes apply).
pub async fn connect(socket: &Path, flags: StdioFlags, tty: bool) -> std::io::Result<StreamingProcess> {
    let (dir, path) = short_path(socket)?;
    let stream = tokio::net::UnixStream::connect(&path).await?;
    drop(dir);
    let (mut sock_r, mut sock_w) = stream.into_split();

    let (stdout_r, mut stdout_w) = tokio::io::duplex(64 * 1024);
    let (stderr_r, mut stderr_w) = tokio::io::duplex(64 * 1024);
    let (stdin_r, stdin_w) = tokio::io::duplex(64 * 1024);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(8);
    let (done_tx, done_rx) = oneshot::channel::<()>();

    // In-memory pipes: duplex pairs used one way (dropping an end is EOF/BrokenPipe for the other).
    // Output: demultiplex frames into stdout/stderr; writing into the pipe waits while the
    // client is slow, so the socket is not read and the monitor's backpressure takes over.
    let (want_out, want_err) = (flags.stdout, flags.stderr);
    let reader = tokio::spawn(async move {
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 32 * 1024];
        'read: loop {
            let n = match sock_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            loop {
                let (kind, data) = match decoder.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => break 'read,
                };
                let target = match kind {
                    STDOUT if want_out => &mut stdout_w,
                    STDERR if want_err => &mut stderr_w,
                    _ => continue,
                };
                if target.write_all(&data).await.is_err() {
                    // The reader side is gone (session over).
                    break 'read;
                }
            }
        }
        let _ = stdout_w.shutdown().await;
        let _ = stderr_w.shutdown().await;
        let _ = done_tx.send(());
    });

    // Input: stdin bytes and resizes, framed, to the monitor. Runs (keeping the connection open)
    // until the session drops it, also after stdin ended or when there is nothing to send at all.
    let writer = tokio::spawn(async move {
        let mut stdin_r = Some(stdin_r).filter(|_| flags.stdin);
        let mut resize_rx = Some(resize_rx);
        let mut buf = vec![0u8; 32 * 1024];
        let mut frame = Vec::with_capacity(buf.len() + HEADER);
        loop {
            frame.clear();
            tokio::select! {
                r = async { match stdin_r.as_mut() { Some(s) => s.read(&mut buf).await, None => std::future::pending().await } } => match r {
                    Ok(0) | Err(_) => { stdin_r = None; encode_frame(STDIN_CLOSE, &[], &mut frame) }
                    Ok(n) => encode_frame(STDIN, &buf[..n], &mut frame),
                },
                size = async { match resize_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match size {
                    Some(size) => encode_frame(RESIZE, &encode_resize(size), &mut frame),
                    None => { resize_rx = None; continue; }
                },
            }
            if sock_w.write_all(&frame).await.is_err() {
                break;
            }
        }
    });

    let exit = Box::pin(async move {
        // Dropping the exit future (the session is over) ends both tasks, closing the connection:
        // that is the detach.
        let _tasks = AbortOnDrop([reader, writer]);
        let _ = done_rx.await;
        Ok(StreamEnd::Detached)
    });
    Ok(StreamingProcess {
        stdin: flags.stdin.then(|| Box::new(stdin_w) as BoxWrite),
        stdout: flags.stdout.then(|| Box::new(stdout_r) as BoxRead),
        stderr: (flags.stderr && !tty).then(|| Box::new(stderr_r) as BoxRead),
        resizer: tty.then(|| Box::new(AttachResizer { tx: resize_tx }) as Box<dyn TerminalResizer>),
        exit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = Vec::new();
        encode_frame(STDOUT, b"hello", &mut wire);
        encode_frame(RESIZE, &encode_resize(TermSize { width: 120, height: 40 }), &mut wire);
        encode_frame(STDERR, b"", &mut wire);
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got[0], (STDOUT, b"hello".to_vec()));
        assert_eq!(decode_resize(&got[1].1), Some(TermSize { width: 120, height: 40 }));
        assert_eq!(got[2], (STDERR, vec![]));
        assert_eq!(got.len(), 3);
    }

    /// Read frames from a client socket until `want` bytes of `kind` arrived.
    fn read_kind(sock: &mut UnixStream, kind: u8, want: usize) -> Vec<u8> {
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while got.len() < want {
            let n = sock.read(&mut buf).unwrap();
            assert!(n > 0, "server closed early");
            d.push(&buf[..n]);
            while let Some((k, data)) = d.next_frame().unwrap() {
                if k == kind {
                    got.extend_from_slice(&data);
                }
            }
        }
        got
    }

    #[test]
    fn server_fans_out_holds_back_for_a_slow_client_and_forwards_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
        let flags = nix::fcntl::OFlag::from_bits_truncate(nix::fcntl::fcntl(&stdin_w, nix::fcntl::FcntlArg::F_GETFL).unwrap());
        nix::fcntl::fcntl(&stdin_w, nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let socket = dir.path().join(SOCKET_NAME);
        let mut server = AttachServer::bind(&socket, Some(stdin_w), None, false).unwrap();
        let mut fast = UnixStream::connect(&socket).unwrap();
        let mut slow = UnixStream::connect(&socket).unwrap();
        server.service();
        assert_eq!(server.clients.len(), 2);

        // Output beyond the high-water mark that the slow client does not read: the server says
        // "hold the container's output" instead of buffering on.
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while !server.backed_up() {
            server.broadcast(STDOUT, &chunk);
            sent += chunk.len();
            // The fast client keeps up.
            assert_eq!(read_kind(&mut fast, STDOUT, chunk.len()).len(), chunk.len());
            assert!(sent < 64 * 1024 * 1024, "never backed up");
        }
        assert!(server.stalled_clients());
        // Once the slow client drains, the hold is released and it got every byte in order.
        let reader = std::thread::spawn(move || read_kind(&mut slow, STDOUT, sent));
        while server.backed_up() {
            server.service();
            std::thread::sleep(Duration::from_millis(1));
        }
        server.finish(Duration::from_secs(10));
        let got = reader.join().unwrap();
        assert_eq!(got.len(), sent);
        assert!(got.iter().all(|b| *b == b'x'));

        // Client input reaches the stdin pipe; resizes without a pty are ignored.
        let mut server = AttachServer::bind(&socket, server.stdin.take(), None, false).unwrap();
        let mut client = UnixStream::connect(&socket).unwrap();
        server.service();
        let mut frames = Vec::new();
        encode_frame(RESIZE, &encode_resize(TermSize { width: 1, height: 1 }), &mut frames);
        encode_frame(STDIN, b"typed", &mut frames);
        client.write_all(&frames).unwrap();
        // The read end is non-blocking too: service() until the bytes arrive (bounded).
        let flags = nix::fcntl::OFlag::from_bits_truncate(nix::fcntl::fcntl(&stdin_r, nix::fcntl::FcntlArg::F_GETFL).unwrap());
        nix::fcntl::fcntl(&stdin_r, nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let mut got = Vec::new();
        for _ in 0..1000 {
            server.service();
            let mut buf = [0u8; 16];
            if let Ok(n) = nix::unistd::read(&stdin_r, &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            if got.len() >= 5 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, b"typed");
        // A client that hangs up is dropped.
        drop(client);
        for _ in 0..1000 {
            server.service();
            if server.clients.is_empty() {
                break;
            }
        }
        assert!(server.clients.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused_and_big_payloads_split() {
        let mut d = FrameDecoder::default();
        d.push(&[STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameTooLong(u32::MAX as usize)));
        let mut wire = Vec::new();
        encode_frame(STDOUT, &vec![7u8; MAX_FRAME + 1], &mut wire);
        let mut d = FrameDecoder::default();
        d.push(&wire);
        assert_eq!(d.next_frame().unwrap().map(|f| f.1.len()), Some(MAX_FRAME));
        assert_eq!(d.next_frame().unwrap().map(|f| f.1.len()), Some(1));
        assert_eq!(decode_resize(&[1, 2, 3]), None);
    }
}
