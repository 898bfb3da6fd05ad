//! Status: the RuntimeReady and NetworkReady conditions kubelet gates the node on.
//!
//! Honest answers only: a condition is true when the thing works, not because the RPC was reached.
//! RuntimeReady reflects liblxc being loadable; NetworkReady is the network layer's own verdict.

use std::collections::HashMap;

use k8s_cri::v1::{RuntimeCondition, RuntimeStatus, StatusRequest, StatusResponse};

use super::CriService;

/// Condition types from api.proto (`RuntimeCondition.type`).
const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

impl CriService {
    pub async fn status(&self, req: StatusRequest) -> StatusResponse {
        let lxc = crate::runtime::lxc::ffi::version();
        let runtime = RuntimeCondition {
            r#type: RUNTIME_READY.to_string(),
            status: !lxc.is_empty(),
            reason: if lxc.is_empty() { "LxcUnavailable".to_string() } else { String::new() },
            message: if lxc.is_empty() { "liblxc reports no version".to_string() } else { format!("liblxc {lxc}") },
        };
        let net = self.network.readiness().await;
        let network = RuntimeCondition { r#type: NETWORK_READY.to_string(), status: net.ready, reason: net.reason, message: net.message };
        let mut info = HashMap::new();
        if req.verbose {
            // api.proto: verbose info is free-form; like containerd we put the effective config as JSON.
            let config = serde_json::to_string(&*self.config).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            info.insert("config".to_string(), config);
            if let Ok(Some(cidr)) = self.store.meta("pod_cidr") {
                info.insert("podCIDR".to_string(), cidr);
            }
        }
        StatusResponse {
            status: Some(RuntimeStatus { conditions: vec![runtime, network] }),
            info,
            runtime_handlers: Vec::new(),
            features: None,
        }
    }
}
