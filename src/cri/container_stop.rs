//! StopContainer: the image's stop signal, `timeout` seconds of grace, then SIGKILL of everything in
//! the container.

use std::time::Duration;

use k8s_cri::v1::{StopContainerRequest, StopContainerResponse};

use super::{required_id, CriError, CriService};
use crate::model::container::may_run;
use crate::store::records::ContainerPhase;

impl CriService {
    pub async fn stop_container(&self, req: StopContainerRequest) -> Result<StopContainerResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        // api.proto: "This call is idempotent, and must not return an error if the container has
        // already been stopped" — one already removed is stopped too.
        let Some(record) = self.find_container(&req.container_id)? else {
            return Ok(StopContainerResponse {});
        };
        let _ctr = self.container_locks.lock(&record.id).await;
        self.stop_container_locked(&record.id, Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0))).await?;
        Ok(StopContainerResponse {})
    }

    /// Caller holds the container lock. A zero timeout kills at once.
    pub(crate) async fn stop_container_locked(&self, id: &str, timeout: Duration) -> Result<(), CriError> {
        let Some(record) = self.store.container(id)? else {
            return Ok(());
        };
        let record = self.refresh_container(record).await?;
        let phase = ContainerPhase::try_from(record.phase).unwrap_or(ContainerPhase::Unspecified);
        if !may_run(phase) {
            return Ok(());
        }
        let signal = if record.stop_signal > 0 { record.stop_signal } else { libc::SIGTERM };
        self.runtime.stop(&record.id, signal, timeout).await?;
        self.refresh_container(record).await?;
        tracing::info!(container_id = %id, "container stopped");
        Ok(())
    }
}
