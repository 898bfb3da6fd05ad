//! PortForward: validate a port-forward request and hand out its URL. Connections go to
//! `localhost:<port>` in the pod's pinned network namespace (the host's for host-network pods).

use std::path::PathBuf;

use k8s_cri::v1::{PortForwardRequest, PortForwardResponse};

use super::{required_id, CriError, CriService};
use crate::store::records::SandboxPhase;
use crate::streaming::portforward::Target;
use crate::streaming::StreamRequest;

impl CriService {
    pub async fn port_forward(&self, req: PortForwardRequest) -> Result<PortForwardResponse, CriError> {
        required_id(&req.pod_sandbox_id, "pod_sandbox_id")?;
        let mut ports = Vec::with_capacity(req.port.len());
        for p in &req.port {
            match u16::try_from(*p) {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(CriError::InvalidArgument(format!("port {p} is not in 1..=65535"))),
            }
        }
        let record = self.require_sandbox(&req.pod_sandbox_id)?;
        if record.phase != SandboxPhase::Ready as i32 {
            return Err(CriError::FailedPrecondition(format!("pod sandbox {} is not ready", record.id)));
        }
        // An empty netns path: the pod uses the host's network namespace.
        let netns = (!record.netns_path.is_empty()).then(|| PathBuf::from(&record.netns_path));
        let target = Target { pod_id: record.id, netns };
        let url = self.streaming.url(StreamRequest::PortForward { target, ports })?;
        Ok(PortForwardResponse { url })
    }
}
