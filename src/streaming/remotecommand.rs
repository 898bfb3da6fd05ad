//! The remotecommand protocol (exec and attach) over any transport: the five streams of Kubernetes'
//! `remotecommand` — stdin, stdout, stderr, error, resize — connected to a process's stdio.
//!
//! Semantics, as kubelet's `pkg/kubelet/cri/streaming/remotecommand` serves them:
//! * client stdin → process stdin until the client closes it (v5 close signal, SPDY FIN); the
//!   process's stdin is then closed (for a pty: left open, a terminal has no EOF to pass on);
//! * process stdout/stderr → the client until they end; each stream is then closed;
//! * resize: a stream of `{"Width":w,"Height":h}` JSON objects, each applied to the pty;
//! * error: once the process ended — v4 and later: a `metav1.Status` JSON (`Success`, or `Failure` with
//!   reason `NonZeroExitCode` and a cause `ExitCode` whose message is the code, which `kubectl exec`
//!   turns into its own exit code); older versions: nothing on success, the error text otherwise.
//! * The session ends after the error stream was written. If the client goes away first, everything
//!   is dropped, which kills an exec's process group (see `runtime/process_stdio.rs`).

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::runtime::process_stdio::{BoxRead, BoxWrite, StreamEnd, StreamingProcess, TermSize, TerminalResizer};

/// After the process exited, how long its output may still take to drain (a background process
/// holding the pipe or pty open must not keep the session alive forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Resize events larger than this are not terminal sizes.
const MAX_RESIZE_PENDING: usize = 4096;

/// Subprotocol versions; they differ in what the error stream carries and in stdin close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io` (and its base64 variant, and no subprotocol at all)
    V1,
    /// `v2.channel.k8s.io`
    V2,
    /// `v3.channel.k8s.io`: adds resize
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a Status JSON with the exit code
    V4,
    /// `v5.channel.k8s.io`: adds stdin close
    V5,
}

impl Version {
    pub fn of(subprotocol: &str) -> Version {
        match subprotocol.split('.').next() {
            Some("v5") => Version::V5,
            Some("v4") => Version::V4,
            Some("v3") => Version::V3,
            Some("v2") => Version::V2,
            _ => Version::V1,
        }
    }
}

/// The client's side of the five streams, whichever transport carries them.
#[derive(Default)]
pub struct ClientStreams {
    pub stdin: Option<BoxRead>,
    pub stdout: Option<BoxWrite>,
    pub stderr: Option<BoxWrite>,
    pub error: Option<BoxWrite>,
    pub resize: Option<BoxRead>,
}

/// What goes on the error stream at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ExitCode(i32),
    /// The process could not be started or connected to.
    Error(String),
}

impl Outcome {
    fn of(end: std::io::Result<StreamEnd>) -> Outcome {
        match end {
            Ok(StreamEnd::Exited(0)) | Ok(StreamEnd::Detached) => Outcome::Success,
            Ok(StreamEnd::Exited(code)) => Outcome::ExitCode(code),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }

    /// The bytes for the error stream under `version` (None: nothing to write).
    pub fn encode(&self, version: Version) -> Option<Vec<u8>> {
        let status = match self {
            Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::ExitCode(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Error(message) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "code": 500,
            }),
        };
        if version >= Version::V4 {
            return serde_json::to_vec(&status).ok();
        }
        match self {
            Outcome::Success => None,
            Outcome::ExitCode(code) => Some(format!("command terminated with non-zero exit code: exit status {code}").into_bytes()),
            Outcome::Error(message) => Some(message.clone().into_bytes()),
        }
    }
}

/// Aborts its tasks when dropped (the client left, or the session is over).
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Serve one session until the process ended and the error stream was written, or until
/// `client_gone` resolves (then the process is dropped: an exec is killed).
pub async fn serve(process: StreamingProcess, mut client: ClientStreams, version: Version, client_gone: impl Future<Output = ()>) {
    let StreamingProcess { stdin, stdout, stderr, resizer, exit } = process;
    let mut background = Tasks(Vec::new());
    if let (Some(from), Some(to)) = (client.stdin.take(), stdin) {
        background.0.push(tokio::spawn(copy_then_close(from, to)));
    }
    if let (Some(from), Some(resizer)) = (client.resize.take(), resizer) {
        background.0.push(tokio::spawn(apply_resizes(from, resizer)));
    }
    let mut outputs = Tasks(Vec::new());
    for (from, to) in [(stdout, client.stdout.take()), (stderr, client.stderr.take())] {
        match (from, to) {
            (Some(from), Some(to)) => outputs.0.push(tokio::spawn(copy_then_close(from, to))),
            // Not wanted by the client: still drained, so the process cannot block on a full pipe.
            (Some(from), None) => outputs.0.push(tokio::spawn(copy_then_close(from, Box::new(tokio::io::sink())))),
            (None, Some(mut to)) => {
                let _ = to.shutdown().await;
            }
            (None, None) => {}
        }
    }
    let run = async {
        let outcome = Outcome::of(exit.await);
        let drain = async {
            for t in outputs.0.iter_mut() {
                let _ = t.await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
        if let Some(mut error) = client.error.take() {
            if let Some(bytes) = outcome.encode(version) {
                let _ = error.write_all(&bytes).await;
            }
            let _ = error.shutdown().await;
        }
        outcome
    };
    tokio::select! {
        outcome = run => tracing::debug!(?outcome, "streaming session ended"),
        _ = client_gone => tracing::debug!("streaming client went away; ending the session"),
    }
    drop(outputs);
    drop(background);
}

/// Tell the client why nothing could run (the error stream of a session whose process never started).
pub async fn report_error(mut client: ClientStreams, version: Version, message: String) {
    for mut w in [client.stdout.take(), client.stderr.take()].into_iter().flatten() {
        let _ = w.shutdown().await;
    }
    if let Some(mut error) = client.error.take() {
        if let Some(bytes) = Outcome::Error(message).encode(version) {
            let _ = error.write_all(&bytes).await;
        }
        let _ = error.shutdown().await;
    }
}

/// Copy until EOF or an error on either side (a pty master reads EIO once the terminal closed), then
/// close (shut down) the destination. Also port-forward's copy loop in both directions.
pub(super) async fn copy_then_close(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Parse the resize stream (concatenated JSON objects) and apply each size.
async fn apply_resizes(mut from: BoxRead, mut resizer: Box<dyn TerminalResizer>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let (sizes, consumed, malformed) = parse_sizes(&pending);
        for size in sizes {
            if let Err(e) = resizer.resize(size) {
                tracing::debug!(error = %e, "applying a terminal resize");
            }
        }
        pending.drain(..consumed);
        if malformed || pending.len() > MAX_RESIZE_PENDING {
            tracing::debug!("malformed resize stream; further resizes ignored");
            return;
        }
    }
}

/// Complete sizes at the start of `data`, how many bytes they took, and whether what follows is
/// not JSON at all.
fn parse_sizes(data: &[u8]) -> (Vec<TermSize>, usize, bool) {
    let mut stream = serde_json::Deserializer::from_slice(data).into_iter::<TermSize>();
    let mut sizes = Vec::new();
    let mut malformed = false;
    loop {
        match stream.next() {
            Some(Ok(size)) => sizes.push(size),
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                malformed = true;
                break;
            }
            None => break,
        }
    }
    (sizes, stream.byte_offset(), malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shapes_follow_kubelet() {
        let ok: serde_json::Value = serde_json::from_slice(&Outcome::Success.encode(Version::V4).unwrap()).unwrap();
        assert_eq!(ok, serde_json::json!({"metadata": {}, "status": "Success"}));
        let failed: serde_json::Value = serde_json::from_slice(&Outcome::ExitCode(3).encode(Version::V5).unwrap()).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "3"}));
        assert_eq!(Outcome::Success.encode(Version::V3), None);
        assert!(String::from_utf8(Outcome::ExitCode(3).encode(Version::V1).unwrap()).unwrap().contains("exit status 3"));
        assert_eq!(Version::of("v5.channel.k8s.io"), Version::V5);
        assert_eq!(Version::of("v4.base64.channel.k8s.io"), Version::V4);
        assert_eq!(Version::of("base64.channel.k8s.io"), Version::V1);
        assert_eq!(Version::of(""), Version::V1);
    }

    #[test]
    fn resize_stream_parsing_keeps_partial_objects() {
        let (sizes, used, bad) = parse_sizes(br#"{"Width":80,"Height":24}{"Width":100,"Height":3"#);
        assert_eq!(sizes, vec![TermSize { width: 80, height: 24 }]);
        assert_eq!(used, 24);
        assert!(!bad);
        let (sizes, _, bad) = parse_sizes(b"nonsense");
        assert!(sizes.is_empty() && bad);
    }
}
