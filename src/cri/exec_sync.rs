//! ExecSync and ReopenContainerLog: requests served by a running container's helpers.

use std::time::Duration;

use k8s_cri::v1::{ExecSyncRequest, ExecSyncResponse, ReopenContainerLogRequest, ReopenContainerLogResponse};

use super::{required_id, CriError, CriService};
use crate::runtime::RuntimeError;

impl CriService {
    pub async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        if req.cmd.is_empty() {
            return Err(CriError::InvalidArgument("cmd is required".into()));
        }
        let record = self.require_container(&req.container_id)?;
        // api.proto: timeout in seconds, "0 means no timeout".
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout.unsigned_abs()));
        match self.runtime.exec_sync(&record.id, &req.cmd, timeout).await {
            Ok(out) => Ok(ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }),
            Err(RuntimeError::ExecTimeout { after, .. }) => {
                Err(CriError::DeadlineExceeded(format!("command {:?} in container {} timed out after {}s", req.cmd, record.id, after.as_secs())))
            }
            Err(RuntimeError::NotRunning { id }) => Err(CriError::FailedPrecondition(format!("container {id} is not running"))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn reopen_container_log(&self, req: ReopenContainerLogRequest) -> Result<ReopenContainerLogResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        let record = self.require_container(&req.container_id)?;
        match self.runtime.reopen_log(&record.id).await {
            Ok(()) => Ok(ReopenContainerLogResponse {}),
            Err(RuntimeError::NotRunning { id }) => Err(CriError::FailedPrecondition(format!("container {id} is not running"))),
            Err(e) => Err(e.into()),
        }
    }
}
