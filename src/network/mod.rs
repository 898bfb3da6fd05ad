//! Pod networking: the one seam where a pod's pinned network namespace is handed to the network layer.
//!
//! `PodNetwork::setup` runs after the netns is pinned (with loopback up) and before the sandbox is
//! Ready; `teardown` on StopPodSandbox (and when a failed RunPodSandbox is rolled back). The CNI
//! implementation (`cni_network.rs`, built on `conf.rs` and `cni.rs`) is the production one.
//! Must not depend on cri/ or runtime/.

pub mod cni;
pub mod cni_network;
pub mod conf;

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNetworkRequest {
    pub sandbox_id: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// Port mappings with a host port (CRI PodSandboxConfig.port_mappings).
    pub port_mappings: Vec<PortMapping>,
    /// Pod annotations (bandwidth limits are read from them).
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// "tcp", "udp" or "sctp", as CNI's portMappings capability spells them.
    pub protocol: String,
    pub host_ip: String,
}

/// What the network layer set up for a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNetworkStatus {
    /// Addresses, primary first.
    pub ips: Vec<String>,
    /// Opaque state `teardown` needs (persisted with the sandbox).
    pub state: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("pod network is not ready: {0}")]
    NotReady(String),
    #[error("network setup for pod {pod}: {message}")]
    Setup { pod: String, message: String },
    #[error("network check for pod {pod}: {message}")]
    Check { pod: String, message: String },
    #[error("network teardown for pod {pod}: {message}")]
    Teardown { pod: String, message: String },
}

/// The NetworkReady condition as the network layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

#[tonic::async_trait]
pub trait PodNetwork: Send + Sync {
    async fn setup(&self, req: &PodNetworkRequest, netns: &Path) -> Result<PodNetworkStatus, NetworkError>;
    /// Release what `setup` made; `netns` is None when the namespace is already gone; `state` is what
    /// setup returned. Must succeed for a pod whose setup never ran (empty state).
    async fn teardown(&self, req: &PodNetworkRequest, netns: Option<&Path>, state: &[u8]) -> Result<(), NetworkError>;
    /// Verify a pod's network is still as set up (CNI CHECK with the saved result).
    async fn check(&self, req: &PodNetworkRequest, netns: &Path, state: &[u8]) -> Result<(), NetworkError>;
    async fn readiness(&self) -> Readiness;
}
