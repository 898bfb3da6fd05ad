//! A SPDY/3.1 client for the streaming tests, the way client-go's `remotecommand` / `portforward`
//! SPDY executors behave: HTTP/1.1 `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version` offers, then
//! the client opens one stream per channel (`streamtype` header; for port-forward also `port` and
//! `requestID`). Framing comes from the codec's client role (`cri_lxc::streaming::spdy`); the HTTP
//! handshake and the stream choreography are written here from the Kubernetes protocol description.

use cri_lxc::streaming::spdy::{Headers, Role, Session, Stream, StreamReader, StreamWriter};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(60);

pub struct SpdyConn {
    pub session: Session,
    /// Streams the server opens (none expected).
    pub incoming: mpsc::Receiver<Stream>,
    /// The negotiated `X-Stream-Protocol-Version`.
    pub protocol: String,
}

/// The HTTP answer when the server did not switch protocols.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub head: String,
}

/// Upgrade `url` (`http://host:port/path`) to SPDY/3.1 offering `protocols`.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<SpdyConn, Refused> {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut tcp = TcpStream::connect(host).await.expect("connect to the streaming server");
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n");
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    // Read the response head byte by byte: SPDY frames may follow it directly.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut byte)).await.expect("response head").unwrap();
        assert!(n == 1, "connection closed inside the response head: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if status != 101 {
        return Err(Refused { status, head });
    }
    let protocol = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("x-stream-protocol-version")).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    let (session, incoming) = Session::new(tcp, Role::Client);
    Ok(SpdyConn { session, incoming, protocol })
}

impl SpdyConn {
    /// Open a stream with `streamtype` and extra headers; waits for the server's reply.
    pub async fn open(&self, streamtype: &str, extra: &[(&str, &str)]) -> (StreamReader, StreamWriter) {
        let mut headers: Headers = vec![("streamtype".into(), streamtype.into())];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let stream = tokio::time::timeout(TIMEOUT, self.session.open_stream(headers))
            .await
            .unwrap_or_else(|_| panic!("no reply to the {streamtype} stream"))
            .unwrap_or_else(|e| panic!("opening the {streamtype} stream: {e}"));
        stream.split()
    }
}

/// Everything a reader yields until EOF (or an error), bounded by the timeout.
pub async fn read_all(mut r: StreamReader) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, r.read_to_end(&mut out)).await.expect("stream did not end");
    out
}

/// What an exec/attach session over SPDY produced.
#[derive(Debug, Default)]
pub struct SpdyOutcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub error: Vec<u8>,
}

/// Run a remotecommand session as client-go does: open error first, then the std streams (and resize
/// with a tty), write `stdin` and FIN it, read the outputs and the error stream to their ends.
pub async fn remotecommand(conn: &SpdyConn, stdin: Option<&[u8]>, stdout: bool, stderr: bool, resize: Option<(u16, u16)>) -> SpdyOutcome {
    let (error_r, mut error_w) = conn.open("error", &[]).await;
    error_w.shutdown().await.unwrap();
    let stdin_w = match stdin {
        Some(_) => {
            let (r, w) = conn.open("stdin", &[]).await;
            drop(r);
            Some(w)
        }
        None => None,
    };
    let open_out = |kind: &'static str| async move {
        let (r, mut w) = conn.open(kind, &[]).await;
        w.shutdown().await.unwrap();
        r
    };
    let stdout_r = if stdout { Some(open_out("stdout").await) } else { None };
    let stderr_r = if stderr { Some(open_out("stderr").await) } else { None };
    let mut resize_w = match resize {
        Some(_) => {
            let (r, w) = conn.open("resize", &[]).await;
            drop(r);
            Some(w)
        }
        None => None,
    };
    if let (Some(w), Some((width, height))) = (resize_w.as_mut(), resize) {
        w.write_all(format!("{{\"Width\":{width},\"Height\":{height}}}").as_bytes()).await.unwrap();
    }
    if let (Some(mut w), Some(data)) = (stdin_w, stdin) {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    }
    let (stdout, stderr, error) = tokio::join!(
        async { if let Some(r) = stdout_r { read_all(r).await } else { vec![] } },
        async { if let Some(r) = stderr_r { read_all(r).await } else { vec![] } },
        read_all(error_r),
    );
    drop(resize_w);
    SpdyOutcome { stdout, stderr, error }
}
