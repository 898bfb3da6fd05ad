//! RemoveContainer: stop it if it runs (force), delete its runtime state and rootfs, forget it.

use std::time::Duration;

use k8s_cri::v1::{RemoveContainerRequest, RemoveContainerResponse};

use super::{required_id, CriError, CriService};
use crate::store::records::ContainerRecord;

impl CriService {
    pub async fn remove_container(&self, req: RemoveContainerRequest) -> Result<RemoveContainerResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        // api.proto: "This call is idempotent, and must not return an error if the container has
        // already been removed."
        let Some(record) = self.find_container(&req.container_id)? else {
            return Ok(RemoveContainerResponse {});
        };
        let _ctr = self.container_locks.lock(&record.id).await;
        let Some(record) = self.store.container(&record.id)? else {
            return Ok(RemoveContainerResponse {});
        };
        self.remove_container_locked(&record).await?;
        Ok(RemoveContainerResponse {})
    }

    /// Caller holds the container lock.
    pub(crate) async fn remove_container_locked(&self, record: &ContainerRecord) -> Result<(), CriError> {
        // "If the container is running, the container must be forcibly removed."
        self.stop_container_locked(&record.id, Duration::ZERO).await?;
        self.runtime.remove(&record.id).await?;
        self.images.release_rootfs(&record.id)?;
        self.store.remove_container(record)?;
        tracing::info!(container_id = %record.id, "container removed");
        Ok(())
    }
}
