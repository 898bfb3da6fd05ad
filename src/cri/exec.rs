//! Exec: validate a streaming exec request and hand out its URL (the streaming server does the rest).

use k8s_cri::v1::{ExecRequest, ExecResponse};

use super::{required_id, CriError, CriService};
use crate::runtime::process_stdio::StdioFlags;
use crate::runtime::ProcessState;
use crate::streaming::StreamRequest;

impl CriService {
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        if req.cmd.is_empty() {
            return Err(CriError::InvalidArgument("cmd is required".into()));
        }
        let flags = StdioFlags { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, tty: req.tty };
        validate_stdio(flags)?;
        let record = self.require_container(&req.container_id)?;
        self.require_running(&record.id).await?;
        let url = self.streaming.url(StreamRequest::Exec { container_id: record.id, cmd: req.cmd, flags })?;
        Ok(ExecResponse { url })
    }

    /// The container's process runs (Exec and Attach need it): FailedPrecondition otherwise.
    pub(crate) async fn require_running(&self, id: &str) -> Result<(), CriError> {
        match self.runtime.state(id).await? {
            ProcessState::Running { .. } => Ok(()),
            _ => Err(CriError::FailedPrecondition(format!("container {id} is not running"))),
        }
    }
}

/// api.proto (ExecRequest, AttachRequest): "One of `stdin`, `stdout`, and `stderr` MUST be true" and
/// "If `tty` is true, `stderr` MUST be false. Multiplexing is not supported in this case."
pub(crate) fn validate_stdio(flags: StdioFlags) -> Result<(), CriError> {
    if !(flags.stdin || flags.stdout || flags.stderr) {
        return Err(CriError::InvalidArgument("one of stdin, stdout and stderr must be true".into()));
    }
    if flags.tty && flags.stderr {
        return Err(CriError::InvalidArgument("tty and stderr cannot both be true: a terminal has one output stream".into()));
    }
    Ok(())
}
