//! RemovePodSandbox: force-remove the pod's containers, release its namespaces and files, forget it.

use k8s_cri::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};

use super::{required_id, CriError, CriService};
use crate::runtime::namespaces;
use crate::store::records::SandboxRecord;

impl CriService {
    pub async fn remove_pod_sandbox(&self, req: RemovePodSandboxRequest) -> Result<RemovePodSandboxResponse, CriError> {
        required_id(&req.pod_sandbox_id, "pod_sandbox_id")?;
        // api.proto: "This call is idempotent, and must not return an error if the sandbox has
        // already been removed."
        let Some(sandbox) = self.find_sandbox(&req.pod_sandbox_id)? else {
            return Ok(RemovePodSandboxResponse {});
        };
        let _pod = self.pod_locks.lock(&sandbox.id).await;
        self.remove_sandbox_locked(&sandbox).await?;
        Ok(RemovePodSandboxResponse {})
    }

    /// Caller holds the pod lock. Also used by recovery for sandboxes a crash left half-made.
    pub(crate) async fn remove_sandbox_locked(&self, sandbox: &SandboxRecord) -> Result<(), CriError> {
        // "If there are any running containers in the sandbox, they must be forcibly removed."
        self.stop_sandbox_locked(sandbox).await?;
        for container in self.store.containers()?.into_iter().filter(|c| c.sandbox_id == sandbox.id) {
            let _c = self.container_locks.lock(&container.id).await;
            self.remove_container_locked(&container).await?;
        }
        let dir = self.sandbox_dir(&sandbox.id);
        // The recorded paths, and the pin files by name: a crash between pinning and recording them must
        // not leave a mount that keeps the directory busy.
        let recorded = [&sandbox.netns_path, &sandbox.ipcns_path, &sandbox.utsns_path, &sandbox.userns_path];
        let by_name = namespaces::PIN_FILES.iter().map(|f| dir.join(f));
        for path in recorded.iter().filter(|p| !p.is_empty()).map(std::path::PathBuf::from).chain(by_name) {
            namespaces::unpin(&path)?;
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CriError::Internal(format!("removing {}: {e}", dir.display())));
            }
            _ => {}
        }
        self.store.remove_sandbox(sandbox)?;
        tracing::info!(pod_sandbox_id = %sandbox.id, "pod sandbox removed");
        Ok(())
    }
}
