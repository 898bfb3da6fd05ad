//! Version: who we are and which CRI API we speak.

use k8s_cri::v1::{VersionRequest, VersionResponse};

use super::CriService;

/// The kubelet runtime API version string every CRI runtime reports (api.proto `VersionResponse.version`).
const KUBELET_API_VERSION: &str = "0.1.0";

impl CriService {
    pub fn version(&self, _req: VersionRequest) -> VersionResponse {
        VersionResponse {
            version: KUBELET_API_VERSION.to_string(),
            runtime_name: "cri-lxc".to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: "v1".to_string(),
        }
    }
}
