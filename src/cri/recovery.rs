//! Start-up reconciliation of the store with what actually exists: objects a crash left half-made are
//! cleaned up, running containers are checked against their monitors (those that exited while the
//! daemon was down get their exit code), sandboxes whose namespaces are gone (a reboot) are NotReady.

use super::{CriError, CriService};
use crate::image::rootfs::is_mounted;
use crate::store::records::{ContainerPhase, SandboxPhase};

impl CriService {
    pub async fn recover(&self) -> Result<(), CriError> {
        let sandboxes = self.store.sandboxes()?;
        let mut cleaned = 0usize;
        for sandbox in &sandboxes {
            let _pod = self.pod_locks.lock(&sandbox.id).await;
            match SandboxPhase::try_from(sandbox.phase).unwrap_or(SandboxPhase::Unspecified) {
                SandboxPhase::Creating | SandboxPhase::Unspecified => {
                    tracing::warn!(pod_sandbox_id = %sandbox.id, "removing a pod sandbox whose creation was interrupted");
                    // One broken sandbox must not keep the daemon from serving the others.
                    match self.remove_sandbox_locked(sandbox).await {
                        Ok(()) => cleaned += 1,
                        Err(e) => tracing::error!(pod_sandbox_id = %sandbox.id, error = %e, "cleaning up an interrupted pod sandbox failed; RemovePodSandbox can retry"),
                    }
                }
                SandboxPhase::Ready => {
                    let pinned = [&sandbox.netns_path, &sandbox.ipcns_path, &sandbox.utsns_path, &sandbox.userns_path];
                    let lost_ns = pinned.iter().filter(|p| !p.is_empty()).any(|p| !is_mounted(std::path::Path::new(p.as_str())).unwrap_or(false));
                    let lost_infra = sandbox.infra_pid > 0 && !self.runtime.pod_infra_alive(sandbox.infra_pid, &self.sandbox_dir(&sandbox.id));
                    let lost = lost_ns || lost_infra;
                    if lost {
                        tracing::warn!(pod_sandbox_id = %sandbox.id, "pinned namespaces or the infra process are gone (reboot?); marking the sandbox NotReady");
                        // Release what the network layer still holds for it (IPAM, host rules).
                        if let Err(e) = self.stop_sandbox_locked(sandbox).await {
                            tracing::error!(pod_sandbox_id = %sandbox.id, error = %e, "stopping a pod sandbox that lost its namespaces failed");
                        }
                    }
                }
                SandboxPhase::NotReady => {}
            }
            // A pod that kept its namespaces: ask the plugins whether its network is intact (CNI CHECK
            // with the saved ADD result). Only reported: kubelet decides whether to recreate the pod.
            let current = self.store.sandbox(&sandbox.id)?;
            if let Some(current) = current.filter(|s| s.phase == SandboxPhase::Ready as i32 && !s.network_state.is_empty()) {
                let request = super::sandbox_run::network_request(&current.id, &super::sandbox_status::sandbox_config(&current));
                if let Err(e) = self.network.check(&request, std::path::Path::new(&current.netns_path), &current.network_state).await {
                    tracing::warn!(pod_sandbox_id = %current.id, error = %e, "pod network check failed after restart");
                }
            }
        }
        for container in self.store.containers()? {
            let _ctr = self.container_locks.lock(&container.id).await;
            let orphan = self.store.sandbox(&container.sandbox_id)?.is_none();
            let phase = ContainerPhase::try_from(container.phase).unwrap_or(ContainerPhase::Unspecified);
            if orphan || matches!(phase, ContainerPhase::Creating | ContainerPhase::Unspecified) {
                tracing::warn!(container_id = %container.id, orphan, "removing a container whose creation was interrupted or whose pod is gone");
                match self.remove_container_locked(&container).await {
                    Ok(()) => cleaned += 1,
                    Err(e) => tracing::error!(container_id = %container.id, error = %e, "cleaning up a container failed; RemoveContainer can retry"),
                }
                continue;
            }
            let id = container.id.clone();
            if let Err(e) = self.refresh_container(container).await {
                tracing::error!(container_id = %id, error = %e, "reading the container's state after restart failed");
            }
        }
        tracing::info!(sandboxes = sandboxes.len(), cleaned, "pods and containers recovered");
        Ok(())
    }
}
