//! SPDY/3.1 framing and multiplexed sessions, as spoken by Kubernetes' remotecommand (exec/attach) and
//! port-forward clients after an HTTP `Upgrade: SPDY/3.1` (their peer implementation is Go's
//! `moby/spdystream`). `frame` owns the wire format and header compression; `session` owns stream
//! multiplexing, flow control and the connection's reader/writer tasks.

pub mod frame;
pub mod session;

pub use self::frame::{FrameError, GoAwayStatus, Headers, RstStatus};
pub use self::session::{
    Config, Role, SendFlowControl, Session, SessionError, Stream, StreamReader, StreamWriter,
};
