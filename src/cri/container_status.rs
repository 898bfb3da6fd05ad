//! ContainerStatus and ListContainers, and bringing a container record up to date with what the
//! runtime observed (a running container may have exited since the last look).

use std::collections::HashMap;

use k8s_cri::v1::{
    Container, ContainerConfig, ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, ContainerUser, ImageSpec,
    LinuxContainerUser, ListContainersRequest, ListContainersResponse, Mount,
};
use prost::Message;

use super::{labels_match, required_id, CriError, CriService};
use crate::model::container::{cri_state, exit_reason};
use crate::runtime::ProcessState;
use crate::store::records::{ContainerPhase, ContainerRecord};

pub(crate) fn container_config(record: &ContainerRecord) -> ContainerConfig {
    ContainerConfig::decode(record.config.as_slice()).unwrap_or_default()
}

fn phase(record: &ContainerRecord) -> ContainerPhase {
    ContainerPhase::try_from(record.phase).unwrap_or(ContainerPhase::Unspecified)
}

impl CriService {
    /// Record what the runtime saw since: a running container that exited gets its exit code, time and
    /// reason. Persisted, so the answer survives a restart even if the runtime's files do not.
    pub(crate) async fn refresh_container(&self, mut record: ContainerRecord) -> Result<ContainerRecord, CriError> {
        if !matches!(phase(&record), ContainerPhase::Running | ContainerPhase::Unknown) {
            return Ok(record);
        }
        let before = record.clone();
        match self.runtime.state(&record.id).await {
            Ok(ProcessState::Exited(exit)) => {
                record.phase = ContainerPhase::Exited as i32;
                record.exit_code = exit.code;
                record.finished_at_unix_nanos = exit.finished_at_unix_nanos;
                record.reason = exit_reason(exit.code, exit.oom_killed).to_string();
                record.message = exit.message;
            }
            Ok(ProcessState::Running { pid }) => {
                record.phase = ContainerPhase::Running as i32;
                record.init_pid = pid;
            }
            Ok(ProcessState::Unknown(message)) => {
                record.phase = ContainerPhase::Unknown as i32;
                record.message = message;
            }
            Ok(ProcessState::Created) => {}
            Err(crate::runtime::RuntimeError::NotFound(_)) => {
                record.phase = ContainerPhase::Unknown as i32;
                record.message = "the runtime has no state for this container".into();
            }
            Err(e) => return Err(e.into()),
        }
        if record != before {
            self.store.update_container(&record)?;
        }
        Ok(record)
    }

    pub async fn container_status(&self, req: ContainerStatusRequest) -> Result<ContainerStatusResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        let record = self.require_container(&req.container_id)?;
        let record = self.refresh_container(record).await?;
        let config = container_config(&record);
        let mounts: Vec<Mount> = config.mounts.clone();
        let status = ContainerStatus {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            state: cri_state(phase(&record)) as i32,
            created_at: record.created_at_unix_nanos,
            started_at: record.started_at_unix_nanos,
            finished_at: record.finished_at_unix_nanos,
            exit_code: record.exit_code,
            image: Some(ImageSpec { image: record.image.clone(), ..Default::default() }),
            image_ref: record.image_id.clone(),
            reason: record.reason.clone(),
            message: record.message.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts,
            log_path: record.log_path.clone(),
            resources: config.linux.as_ref().and_then(|l| l.resources.clone()).map(|linux| k8s_cri::v1::ContainerResources { linux: Some(linux), windows: None }),
            image_id: record.image_id.clone(),
            user: Some(ContainerUser {
                linux: Some(LinuxContainerUser { uid: record.uid, gid: record.gid, supplemental_groups: record.supplemental_gids.clone() }),
            }),
        };
        let mut info = HashMap::new();
        if req.verbose {
            let verbose = serde_json::json!({
                "id": record.id,
                "sandboxID": record.sandbox_id,
                "name": record.name,
                "pid": record.init_pid,
                "monitorPid": record.monitor_pid,
                "imageId": record.image_id,
                "stopSignal": record.stop_signal,
                "config": config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(ContainerStatusResponse { status: Some(status), info })
    }

    pub async fn list_containers(&self, req: ListContainersRequest) -> Result<ListContainersResponse, CriError> {
        let filter = req.filter.unwrap_or_default();
        let mut containers = Vec::new();
        for record in self.store.containers()? {
            if !listed(&record, &filter.id, &filter.pod_sandbox_id) {
                continue;
            }
            let record = self.refresh_container(record).await?;
            let state = cri_state(phase(&record));
            if filter.state.as_ref().is_some_and(|s| s.state != state as i32) {
                continue;
            }
            let config = container_config(&record);
            if !labels_match(&config.labels, &filter.label_selector) {
                continue;
            }
            containers.push(Container {
                id: record.id.clone(),
                pod_sandbox_id: record.sandbox_id.clone(),
                metadata: config.metadata,
                image: Some(ImageSpec { image: record.image.clone(), ..Default::default() }),
                image_ref: record.image_id.clone(),
                state: state as i32,
                created_at: record.created_at_unix_nanos,
                labels: config.labels,
                annotations: config.annotations,
                image_id: record.image_id.clone(),
            });
        }
        containers.sort_by_key(|c| c.created_at);
        Ok(ListContainersResponse { containers })
    }
}

/// Whether List{Containers,ContainerStats} shows `record` for these id / pod id prefix filters (empty:
/// any). A container still being created is never listed.
pub(crate) fn listed(record: &ContainerRecord, id_prefix: &str, pod_id_prefix: &str) -> bool {
    phase(record) != ContainerPhase::Creating && record.id.starts_with(id_prefix) && record.sandbox_id.starts_with(pod_id_prefix)
}
