//! Attach: validate an attach request and hand out its URL; the container's monitor serves the stdio.

use k8s_cri::v1::{AttachRequest, AttachResponse};

use super::container_status::container_config;
use super::exec::validate_stdio;
use super::{required_id, CriError, CriService};
use crate::runtime::process_stdio::StdioFlags;
use crate::streaming::StreamRequest;

impl CriService {
    pub async fn attach(&self, req: AttachRequest) -> Result<AttachResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        let record = self.require_container(&req.container_id)?;
        // The terminal is the container's (ContainerConfig.tty); kubelet sends the same value.
        let config = container_config(&record);
        if req.tty && !config.tty {
            return Err(CriError::InvalidArgument(format!("container {} has no terminal (it was created with tty=false)", record.id)));
        }
        let flags = StdioFlags { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, tty: config.tty };
        validate_stdio(StdioFlags { tty: req.tty, ..flags })?;
        if req.stdin && !config.stdin {
            return Err(CriError::InvalidArgument(format!("container {} was created without stdin", record.id)));
        }
        self.require_running(&record.id).await?;
        let url = self.streaming.url(StreamRequest::Attach { container_id: record.id, flags })?;
        Ok(AttachResponse { url })
    }
}
