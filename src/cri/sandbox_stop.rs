//! StopPodSandbox: stop every container of the pod, tear down its network, mark it NotReady.

use std::time::Duration;

use k8s_cri::v1::{StopPodSandboxRequest, StopPodSandboxResponse};

use super::{required_id, CriError, CriService};
use super::sandbox_run::network_request;
use crate::image::rootfs::is_mounted;
use crate::store::records::{SandboxPhase, SandboxRecord};

impl CriService {
    pub async fn stop_pod_sandbox(&self, req: StopPodSandboxRequest) -> Result<StopPodSandboxResponse, CriError> {
        required_id(&req.pod_sandbox_id, "pod_sandbox_id")?;
        // api.proto: "This call is idempotent, and must not return an error if all relevant
        // resources have already been reclaimed" — a sandbox that is gone has nothing left to stop.
        let Some(sandbox) = self.find_sandbox(&req.pod_sandbox_id)? else {
            return Ok(StopPodSandboxResponse {});
        };
        let _pod = self.pod_locks.lock(&sandbox.id).await;
        self.stop_sandbox_locked(&sandbox).await?;
        Ok(StopPodSandboxResponse {})
    }

    /// Caller holds the pod lock.
    pub(crate) async fn stop_sandbox_locked(&self, sandbox: &SandboxRecord) -> Result<(), CriError> {
        // "If there are any running containers in the sandbox, they must be forcibly terminated."
        for container in self.store.containers()?.into_iter().filter(|c| c.sandbox_id == sandbox.id) {
            let _c = self.container_locks.lock(&container.id).await;
            self.stop_container_locked(&container.id, Duration::ZERO).await?;
        }
        // Reload: a sandbox record's network state may be newer than the caller's copy.
        let current = self.store.sandbox(&sandbox.id)?.unwrap_or_else(|| sandbox.clone());
        // A sandbox interrupted while being set up may have a half-made attachment and no saved state:
        // tear it down with the current config.
        let interrupted = current.phase == SandboxPhase::Creating as i32;
        if !current.netns_path.is_empty() && (!current.network_state.is_empty() || interrupted) {
            let request = network_request(&current.id, &super::sandbox_status::sandbox_config(&current));
            // A netns file whose bind mount is gone (reboot) is no namespace: plugins get none then.
            let netns = std::path::Path::new(&current.netns_path);
            let netns = is_mounted(netns).unwrap_or(false).then_some(netns);
            self.network.teardown(&request, netns, &current.network_state).await?;
            // Released: a second Stop (kubelet retries, Remove stops too) has nothing left to DEL.
            let mut updated = current.clone();
            updated.network_state.clear();
            updated.ips.clear();
            self.store.update_sandbox(&updated)?;
        }
        if sandbox.infra_pid > 0 {
            self.runtime.stop_pod_infra(sandbox.infra_pid, &self.sandbox_dir(&sandbox.id)).await;
        }
        // Reload: stopping containers does not touch the sandbox record, but be exact.
        if let Some(mut current) = self.store.sandbox(&sandbox.id)? {
            if current.phase != SandboxPhase::NotReady as i32 {
                current.phase = SandboxPhase::NotReady as i32;
                self.store.update_sandbox(&current)?;
            }
        }
        Ok(())
    }
}
