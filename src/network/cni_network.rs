//! `PodNetwork` over CNI plugins: the network config from the conf dir (re-read when it changes), ADD in
//! the pod's netns with the Kubernetes CNI_ARGS and capability args, the config and ADD result kept
//! as the pod's network state for DEL, STATUS feeding NetworkReady.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cni::{Attachment, CniExec};
use super::conf::{ConfWatcher, NetworkConfList};
use super::{NetworkError, PodNetwork, PodNetworkRequest, PodNetworkStatus, Readiness};

/// The interface CNI creates in the pod (kubelet's and every runtime's choice).
const POD_IFNAME: &str = "eth0";
/// DEL is retried: a plugin may fail transiently (a busy iptables lock), and an IP must not leak.
const DEL_ATTEMPTS: u32 = 3;

pub struct CniPodNetwork {
    watcher: ConfWatcher,
    exec: CniExec,
}

/// What is persisted with a sandbox: the exact config used for ADD and its result.
#[derive(Debug, Serialize, Deserialize)]
struct NetworkState {
    name: String,
    cni_version: String,
    disable_check: bool,
    plugins: Vec<serde_json::Value>,
    source: PathBuf,
    result: serde_json::Value,
}

impl NetworkState {
    fn conf(&self) -> NetworkConfList {
        NetworkConfList {
            name: self.name.clone(),
            cni_version: self.cni_version.clone(),
            disable_check: self.disable_check,
            plugins: self.plugins.clone(),
            source: self.source.clone(),
        }
    }
}

impl CniPodNetwork {
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, timeout: Duration) -> CniPodNetwork {
        CniPodNetwork { watcher: ConfWatcher::new(conf_dir), exec: CniExec::new(bin_dirs, timeout) }
    }

    fn attachment(req: &PodNetworkRequest, netns: Option<&Path>) -> Attachment {
        // Kube-OVN and other Kubernetes-aware plugins read the pod's identity from these.
        let args = vec![
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("K8S_POD_NAMESPACE".to_string(), req.pod_namespace.clone()),
            ("K8S_POD_NAME".to_string(), req.pod_name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".to_string(), req.sandbox_id.clone()),
            ("K8S_POD_UID".to_string(), req.pod_uid.clone()),
        ];
        Attachment {
            container_id: req.sandbox_id.clone(),
            netns: netns.map(Path::to_path_buf),
            ifname: POD_IFNAME.to_string(),
            args,
            capability_args: capability_args(req),
        }
    }
}

/// CNI capability args (conventions.md): `portMappings`, `bandwidth`, and the pod annotations for
/// plugins that ask for them; the executor passes each plugin only those it declares.
fn capability_args(req: &PodNetworkRequest) -> serde_json::Map<String, serde_json::Value> {
    let mut args = serde_json::Map::new();
    let ports: Vec<serde_json::Value> = req
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| serde_json::json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol, "hostIP": p.host_ip}))
        .collect();
    if !ports.is_empty() {
        args.insert("portMappings".into(), serde_json::Value::Array(ports));
    }
    let ingress = req.annotations.get("kubernetes.io/ingress-bandwidth").and_then(|v| parse_quantity(v));
    let egress = req.annotations.get("kubernetes.io/egress-bandwidth").and_then(|v| parse_quantity(v));
    if ingress.is_some() || egress.is_some() {
        // Burst as containerd sets it: effectively unlimited, the rate is what limits.
        let mut bw = serde_json::Map::new();
        if let Some(rate) = ingress {
            bw.insert("ingressRate".into(), rate.into());
            bw.insert("ingressBurst".into(), u64::from(u32::MAX).into());
        }
        if let Some(rate) = egress {
            bw.insert("egressRate".into(), rate.into());
            bw.insert("egressBurst".into(), u64::from(u32::MAX).into());
        }
        args.insert("bandwidth".into(), serde_json::Value::Object(bw));
    }
    if !req.annotations.is_empty() {
        args.insert("io.kubernetes.cri.pod-annotations".into(), serde_json::json!(req.annotations));
    }
    args
}

/// A Kubernetes quantity ("10M", "1Gi", "500k", "1000") in bits per second.
fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        _ => return None,
    };
    let bits = value * factor;
    (bits.is_finite() && bits >= 1.0).then_some(bits as u64)
}

#[tonic::async_trait]
impl PodNetwork for CniPodNetwork {
    async fn setup(&self, req: &PodNetworkRequest, netns: &Path) -> Result<PodNetworkStatus, NetworkError> {
        let conf = self.watcher.current().map_err(|e| NetworkError::NotReady(e.to_string()))?;
        let att = Self::attachment(req, Some(netns));
        let pod = format!("{}/{}", req.pod_namespace, req.pod_name);
        match self.exec.add(&conf, &att).await {
            Ok(result) => {
                let state = NetworkState {
                    name: conf.name.clone(),
                    cni_version: conf.cni_version.clone(),
                    disable_check: conf.disable_check,
                    plugins: conf.plugins.clone(),
                    source: conf.source.clone(),
                    result: result.raw.clone(),
                };
                let state = serde_json::to_vec(&state).map_err(|e| NetworkError::Setup { pod: pod.clone(), message: e.to_string() })?;
                tracing::info!(pod_sandbox_id = %req.sandbox_id, network = %conf.name, ips = ?result.ips, "pod network added");
                Ok(PodNetworkStatus { ips: result.ips, state })
            }
            Err(add_error) => {
                // A chain that failed half-way may have allocated an address: DEL so nothing stays.
                if let Err(del_error) = self.exec.del(&conf, &att, None).await {
                    tracing::warn!(pod_sandbox_id = %req.sandbox_id, error = %del_error, "DEL after a failed ADD failed");
                }
                Err(NetworkError::Setup { pod, message: add_error.to_string() })
            }
        }
    }

    async fn teardown(&self, req: &PodNetworkRequest, netns: Option<&Path>, state: &[u8]) -> Result<(), NetworkError> {
        let pod = format!("{}/{}", req.pod_namespace, req.pod_name);
        // The config and result of this pod's ADD; without them (setup never finished) the current
        // config, so a half-made attachment is still released.
        let (conf, prev) = match serde_json::from_slice::<NetworkState>(state) {
            Ok(saved) => (saved.conf(), Some(saved.result)),
            Err(_) if state.is_empty() => match self.watcher.current() {
                Ok(conf) => ((*conf).clone(), None),
                Err(_) => return Ok(()), // no network config: nothing can have been set up
            },
            Err(e) => return Err(NetworkError::Teardown { pod, message: format!("saved network state is unreadable: {e}") }),
        };
        // A netns that is already gone (reboot, manual cleanup) is passed as empty: plugins then only
        // release their host-side state (IPAM, iptables), which is what must not leak.
        let netns = netns.filter(|p| p.exists());
        let att = Self::attachment(req, netns);
        let mut last = None;
        for attempt in 1..=DEL_ATTEMPTS {
            match self.exec.del(&conf, &att, prev.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(pod_sandbox_id = %req.sandbox_id, attempt, error = %e, "CNI DEL failed");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        Err(NetworkError::Teardown { pod, message: last.map(|e| e.to_string()).unwrap_or_default() })
    }

    async fn check(&self, req: &PodNetworkRequest, netns: &Path, state: &[u8]) -> Result<(), NetworkError> {
        let pod = format!("{}/{}", req.pod_namespace, req.pod_name);
        let saved: NetworkState = serde_json::from_slice(state).map_err(|e| NetworkError::Check { pod: pod.clone(), message: format!("saved network state is unreadable: {e}") })?;
        let att = Self::attachment(req, Some(netns));
        self.exec.check(&saved.conf(), &att, &saved.result).await.map_err(|e| NetworkError::Check { pod, message: e.to_string() })
    }

    async fn readiness(&self) -> Readiness {
        let not_ready = |message: String| Readiness { ready: false, reason: "NetworkPluginNotReady".into(), message };
        match self.watcher.current() {
            Err(e) => not_ready(format!("cni config uninitialized: {e}")),
            Ok(conf) => match self.exec.status(&conf).await {
                Ok(()) => Readiness { ready: true, reason: String::new(), message: format!("CNI network {:?} from {}", conf.name, conf.source.display()) },
                Err(e) => not_ready(format!("CNI network {:?} reports not ready: {e}", conf.name)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::PortMapping;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("500k"), Some(500_000));
        assert_eq!(parse_quantity("1000"), Some(1000));
        assert_eq!(parse_quantity("ten"), None);
        assert_eq!(parse_quantity("5X"), None);
    }

    #[test]
    fn capability_args_from_the_pod() {
        let req = PodNetworkRequest {
            port_mappings: vec![
                PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: String::new() },
                PortMapping { host_port: 0, container_port: 9090, protocol: "tcp".into(), host_ip: String::new() },
            ],
            annotations: [("kubernetes.io/ingress-bandwidth".to_string(), "10M".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let args = capability_args(&req);
        assert_eq!(args["portMappings"], serde_json::json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]));
        assert_eq!(args["bandwidth"]["ingressRate"], 10_000_000);
        assert!(args["bandwidth"].get("egressRate").is_none());
        assert_eq!(args["io.kubernetes.cri.pod-annotations"]["kubernetes.io/ingress-bandwidth"], "10M");
        assert!(capability_args(&PodNetworkRequest::default()).is_empty());
    }
}
