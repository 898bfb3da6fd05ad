//! PodSandboxStatus and ListPodSandbox.

use std::collections::HashMap;

use k8s_cri::v1::{
    LinuxPodSandboxStatus, ListPodSandboxRequest, ListPodSandboxResponse, Namespace, NamespaceOption, PodIp, PodSandbox,
    PodSandboxConfig, PodSandboxNetworkStatus, PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
};
use prost::Message;

use super::{labels_match, now_nanos, required_id, CriError, CriService};
use crate::model::sandbox::cri_state;
use crate::store::records::{SandboxPhase, SandboxRecord};

/// The PodSandboxConfig kubelet sent, as stored (empty if the record predates storing it).
pub(crate) fn sandbox_config(record: &SandboxRecord) -> PodSandboxConfig {
    PodSandboxConfig::decode(record.config.as_slice()).unwrap_or_default()
}

/// The pod's NamespaceOption (all POD when kubelet sent none).
pub(crate) fn namespace_options(config: &PodSandboxConfig) -> NamespaceOption {
    config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.clone()).unwrap_or_default()
}

fn phase(record: &SandboxRecord) -> SandboxPhase {
    SandboxPhase::try_from(record.phase).unwrap_or(SandboxPhase::Unspecified)
}

impl CriService {
    pub fn pod_sandbox_status(&self, req: PodSandboxStatusRequest) -> Result<PodSandboxStatusResponse, CriError> {
        required_id(&req.pod_sandbox_id, "pod_sandbox_id")?;
        let sandbox = self.require_sandbox(&req.pod_sandbox_id)?;
        let config = sandbox_config(&sandbox);
        // Always present (kubelet reads `network.ip`); empty until the network layer assigns addresses.
        let network = Some(PodSandboxNetworkStatus {
            ip: sandbox.ips.first().cloned().unwrap_or_default(),
            additional_ips: sandbox.ips.iter().skip(1).map(|ip| PodIp { ip: ip.clone() }).collect(),
        });
        let status = PodSandboxStatus {
            id: sandbox.id.clone(),
            metadata: config.metadata.clone(),
            state: cri_state(phase(&sandbox)) as i32,
            created_at: sandbox.created_at_unix_nanos,
            network,
            linux: Some(LinuxPodSandboxStatus { namespaces: Some(Namespace { options: Some(namespace_options(&config)) }) }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler: sandbox.runtime_handler.clone(),
        };
        let mut info = HashMap::new();
        if req.verbose {
            let verbose = serde_json::json!({
                "id": sandbox.id,
                "name": sandbox.name,
                "runtimeHandler": sandbox.runtime_handler,
                "netnsPath": sandbox.netns_path,
                "ipcnsPath": sandbox.ipcns_path,
                "utsnsPath": sandbox.utsns_path,
                "usernsPath": sandbox.userns_path,
                "resolvConfPath": sandbox.resolv_conf_path,
                "hostnamePath": sandbox.hostname_path,
                "config": config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(PodSandboxStatusResponse { status: Some(status), info, containers_statuses: Vec::new(), timestamp: now_nanos() })
    }

    pub fn list_pod_sandbox(&self, req: ListPodSandboxRequest) -> Result<ListPodSandboxResponse, CriError> {
        let filter = req.filter.unwrap_or_default();
        let mut items = Vec::new();
        for sandbox in self.store.sandboxes()? {
            // A sandbox still being set up is not listed (containerd does the same).
            if phase(&sandbox) == SandboxPhase::Creating {
                continue;
            }
            if !filter.id.is_empty() && !sandbox.id.starts_with(&filter.id) {
                continue;
            }
            let state = cri_state(phase(&sandbox));
            if filter.state.as_ref().is_some_and(|s| s.state != state as i32) {
                continue;
            }
            let config = sandbox_config(&sandbox);
            if !labels_match(&config.labels, &filter.label_selector) {
                continue;
            }
            items.push(PodSandbox {
                id: sandbox.id.clone(),
                metadata: config.metadata,
                state: state as i32,
                created_at: sandbox.created_at_unix_nanos,
                labels: config.labels,
                annotations: config.annotations,
                runtime_handler: sandbox.runtime_handler,
            });
        }
        items.sort_by_key(|s| s.created_at);
        Ok(ListPodSandboxResponse { items })
    }
}
