//! Status: the RuntimeReady and NetworkReady conditions kubelet gates the node on.
//!
//! Honest answers only: a condition is true when the thing works, not because the RPC was reached.

use std::collections::HashMap;

use k8s_cri::v1::{RuntimeCondition, RuntimeStatus, StatusRequest, StatusResponse};

use super::CriService;

/// Condition types from api.proto (`RuntimeCondition.type`).
const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

impl CriService {
    pub fn status(&self, req: StatusRequest) -> StatusResponse {
        // Containers cannot be created until the LXC lifecycle milestone lands; saying so keeps kubelet
        // from scheduling pods here.
        let runtime = RuntimeCondition {
            r#type: RUNTIME_READY.to_string(),
            status: false,
            reason: "ContainerLifecycleNotImplemented".to_string(),
            message: "cri-lxc serves the ImageService; pod and container lifecycle on liblxc is not implemented yet".to_string(),
        };
        let network = RuntimeCondition {
            r#type: NETWORK_READY.to_string(),
            status: false,
            reason: "NetworkPluginNotReady".to_string(),
            message: "CNI pod networking is not implemented yet".to_string(),
        };
        let mut info = HashMap::new();
        if req.verbose {
            // api.proto: verbose info is free-form; like containerd we put the effective config as JSON.
            let config = serde_json::to_string(&*self.config).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            info.insert("config".to_string(), config);
        }
        StatusResponse {
            status: Some(RuntimeStatus { conditions: vec![runtime, network] }),
            info,
            runtime_handlers: Vec::new(),
            features: None,
        }
    }
}
