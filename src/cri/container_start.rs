//! StartContainer: have the runtime start the container's process; returns once it runs.

use k8s_cri::v1::{StartContainerRequest, StartContainerResponse};

use super::timing::PhaseTimer;
use super::{now_nanos, required_id, CriError, CriService};
use crate::model::container::can_start;
use crate::runtime::RuntimeError;
use crate::store::records::ContainerPhase;

/// Exit code containerd reports for a container that never started.
const START_ERROR_EXIT_CODE: i32 = 128;

impl CriService {
    pub async fn start_container(&self, req: StartContainerRequest) -> Result<StartContainerResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        let found = self.require_container(&req.container_id)?;
        let _ctr = self.container_locks.lock(&found.id).await;
        let mut record = self.store.container(&found.id)?.ok_or_else(|| CriError::NotFound(format!("container {:?} not found", req.container_id)))?;
        let phase = ContainerPhase::try_from(record.phase).unwrap_or(ContainerPhase::Unspecified);
        if !can_start(phase) {
            return Err(CriError::FailedPrecondition(format!("container {} is {phase:?}, only a created container can be started", record.id)));
        }
        let mut timer = PhaseTimer::new("StartContainer");
        let started = self.runtime.start(&record.id).await;
        timer.mark("monitor_and_lxc_start");
        match started {
            Ok(started) => {
                record.phase = ContainerPhase::Running as i32;
                record.started_at_unix_nanos = started.started_at_unix_nanos;
                record.init_pid = started.init_pid;
                record.monitor_pid = started.monitor_pid;
                self.store.update_container(&record)?;
                timer.mark("store_running");
                timer.finish(&record.id);
                tracing::info!(container_id = %record.id, pid = started.init_pid, "container started");
                Ok(StartContainerResponse {})
            }
            Err(e) => {
                // Like containerd: the container is done for, with the reason kubelet shows.
                let message = match &e {
                    RuntimeError::StartFailed { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                record.phase = ContainerPhase::Exited as i32;
                record.exit_code = START_ERROR_EXIT_CODE;
                record.reason = "StartError".to_string();
                record.message = message;
                record.finished_at_unix_nanos = now_nanos();
                self.store.update_container(&record)?;
                Err(e.into())
            }
        }
    }
}
