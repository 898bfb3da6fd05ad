//! The stdio of a process the streaming server talks to (CRI Exec and Attach), as the runtime hands it
//! out: async byte streams, a terminal resizer, and the exit. Transport-neutral: the streaming layer
//! maps these onto WebSocket channels or SPDY streams.
//!
//! Ownership rule: dropping a [`StreamingProcess`] before its exit was observed ends the process
//! (exec: the helper's whole process group is SIGKILLed; attach: only the connection to the monitor
//! is closed, the container keeps running). That is how a client disconnect frees everything.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Terminal size as Kubernetes' `remotecommand.TerminalSize` carries it (columns, rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Applies a terminal size to the process's pty.
pub trait TerminalResizer: Send {
    fn resize(&mut self, size: TermSize) -> std::io::Result<()>;
}

/// Which of the standard streams a streaming request wants (CRI `ExecRequest`/`AttachRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StdioFlags {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// How the process ended, as far as the runtime can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Exec: the command's exit code (128 + signal for a signal death).
    Exited(i32),
    /// Attach: the container's output ended (it exited); its exit code is CRI ContainerStatus's business.
    Detached,
}

pub type ExitFuture = Pin<Box<dyn Future<Output = std::io::Result<StreamEnd>> + Send>>;

/// A running process's stdio. `stdout` carries the pty's output when the process has a terminal
/// (`stderr` is then None: a terminal has one output stream).
pub struct StreamingProcess {
    pub stdin: Option<BoxWrite>,
    pub stdout: Option<BoxRead>,
    pub stderr: Option<BoxRead>,
    pub resizer: Option<Box<dyn TerminalResizer>>,
    /// Resolves when the process ended; dropping it (with the rest) ends an exec.
    pub exit: ExitFuture,
}
