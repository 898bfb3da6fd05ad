//! Pod networking: the one seam where a pod's pinned network namespace is handed to the network layer.
//!
//! `PodNetwork::setup` runs after the netns is pinned (with loopback up) and before the sandbox is
//! Ready; `teardown` on StopPodSandbox. The CNI implementation plugs in here; until then
//! `LoopbackOnly` leaves the pod with loopback alone and says so in `Status`.
//! Must not depend on cri/ or runtime/.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNetworkRequest {
    pub sandbox_id: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
}

/// Addresses the network layer gave the pod, primary first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNetworkStatus {
    pub ips: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network setup for pod {pod}: {message}")]
    Setup { pod: String, message: String },
}

#[tonic::async_trait]
pub trait PodNetwork: Send + Sync {
    async fn setup(&self, req: &PodNetworkRequest, netns: &Path) -> Result<PodNetworkStatus, NetworkError>;
    async fn teardown(&self, req: &PodNetworkRequest, netns: Option<&Path>) -> Result<(), NetworkError>;
    /// (ready, reason, message) for the NetworkReady condition.
    fn readiness(&self) -> (bool, String, String);
}

/// No pod network yet: pods get their own netns with loopback only.
pub struct LoopbackOnly;

#[tonic::async_trait]
impl PodNetwork for LoopbackOnly {
    async fn setup(&self, _req: &PodNetworkRequest, _netns: &Path) -> Result<PodNetworkStatus, NetworkError> {
        Ok(PodNetworkStatus::default())
    }

    async fn teardown(&self, _req: &PodNetworkRequest, _netns: Option<&Path>) -> Result<(), NetworkError> {
        Ok(())
    }

    fn readiness(&self) -> (bool, String, String) {
        (false, "NetworkPluginNotReady".into(), "CNI pod networking is not implemented yet: pods get loopback only".into())
    }
}
