//! PodSandboxStats and ListPodSandboxStats: the pod's CPU and memory (its cgroup, i.e. kubelet's
//! `cgroup_parent`, when it has one; otherwise the sum of its containers), network counters per
//! interface read inside the pod's pinned network namespace, the process count, and the stats of
//! every container of the pod.

use std::path::PathBuf;

use k8s_cri::v1::{
    LinuxPodSandboxStats, ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, PodSandboxStatsRequest, PodSandboxStatsResponse, ProcessUsage, UInt64Value,
};

use super::sandbox_status::sandbox_config;
use super::{labels_match, now_nanos, required_id, CriError, CriService};
use crate::runtime::cgroup::stats::{parse_net_dev, InterfaceCounters, MemoryStats};
use crate::runtime::cgroup::{self, CgroupStats, Layout};
use crate::store::records::{ContainerPhase, SandboxRecord};

/// The interface kubelet reports as the pod's (CNI's convention).
const DEFAULT_INTERFACE: &str = "eth0";

/// `/proc/thread-self/net/dev` as seen from inside the network namespace pinned at `netns`: read
/// on a short-lived thread of its own that joins the namespace (setns(2) affects only the
/// calling thread), so no other thread of the daemon ever changes namespace.
pub(crate) fn netns_interfaces(netns: PathBuf) -> Vec<InterfaceCounters> {
    let reader = std::thread::spawn(move || -> std::io::Result<String> {
        let ns = std::fs::File::open(&netns)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        std::fs::read_to_string("/proc/thread-self/net/dev")
    });
    match reader.join() {
        Ok(Ok(text)) => parse_net_dev(&text),
        _ => Vec::new(),
    }
}

/// Pod totals from its containers' cgroups when the pod has no cgroup of its own.
fn sum(stats: &[CgroupStats]) -> CgroupStats {
    let mut total = CgroupStats::default();
    for s in stats {
        if let Some(cpu) = s.cpu_usage_nanos {
            total.cpu_usage_nanos = Some(total.cpu_usage_nanos.unwrap_or(0) + cpu);
        }
        if let Some(m) = &s.memory {
            let t = total.memory.get_or_insert_with(MemoryStats::default);
            t.usage += m.usage;
            t.working_set += m.working_set;
            t.rss += m.rss;
            t.page_faults += m.page_faults;
            t.major_page_faults += m.major_page_faults;
        }
        total.processes += s.processes;
        total.threads += s.threads;
    }
    total
}

/// A pod's stats and the raw numbers behind them (metrics.rs turns the latter into metrics).
pub(crate) struct PodNumbers {
    pub stats: PodSandboxStats,
    pub pod: CgroupStats,
    pub interfaces: Vec<InterfaceCounters>,
    pub containers: Vec<(k8s_cri::v1::ContainerStats, Option<CgroupStats>)>,
}

impl CriService {
    /// The pod's own cgroup (relative path), when kubelet gave it one.
    fn pod_cgroup(&self, sandbox: &SandboxRecord) -> Option<String> {
        let config = sandbox_config(sandbox);
        let parent = config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default();
        let driver = match self.cgroup_driver {
            super::CgroupDriver::Systemd => cgroup::placement::Driver::Systemd,
            super::CgroupDriver::Cgroupfs => cgroup::placement::Driver::Cgroupfs,
        };
        cgroup::expand_parent(driver, &parent).ok().filter(|p| !p.is_empty())
    }

    pub(crate) async fn pod_numbers(&self, sandbox: &SandboxRecord) -> Result<PodNumbers, CriError> {
        let config = sandbox_config(sandbox);
        let mut containers = Vec::new();
        for record in self.store.containers()?.into_iter().filter(|c| c.sandbox_id == sandbox.id) {
            if ContainerPhase::try_from(record.phase) == Ok(ContainerPhase::Creating) {
                continue;
            }
            containers.push(self.stats_of(&record).await?);
        }
        let pod_cgroup = self.pod_cgroup(sandbox);
        let own = match pod_cgroup {
            Some(rel) => tokio::task::spawn_blocking(move || cgroup::stats::read(Layout::host(), &rel))
                .await
                .map_err(|e| CriError::Internal(format!("stats task: {e}")))?,
            None => None,
        };
        let pod = own.unwrap_or_else(|| sum(&containers.iter().filter_map(|(_, c)| c.clone()).collect::<Vec<_>>()));
        let at = now_nanos();
        let (cpu, memory) = self.cpu_memory(&sandbox.id, at, Some(&pod));
        let interfaces = if sandbox.netns_path.is_empty() {
            Vec::new() // host network: the node's counters are kubelet's (cAdvisor's) business
        } else {
            let netns = PathBuf::from(&sandbox.netns_path);
            tokio::task::spawn_blocking(move || netns_interfaces(netns)).await.map_err(|e| CriError::Internal(format!("stats task: {e}")))?
        };
        let usage = |i: &InterfaceCounters| NetworkInterfaceUsage {
            name: i.name.clone(),
            rx_bytes: Some(UInt64Value { value: i.rx_bytes }),
            rx_errors: Some(UInt64Value { value: i.rx_errors }),
            tx_bytes: Some(UInt64Value { value: i.tx_bytes }),
            tx_errors: Some(UInt64Value { value: i.tx_errors }),
        };
        let network = (!interfaces.is_empty()).then(|| NetworkUsage {
            timestamp: at,
            default_interface: interfaces.iter().find(|i| i.name == DEFAULT_INTERFACE).map(usage),
            interfaces: interfaces.iter().filter(|i| i.name != "lo").map(usage).collect(),
        });
        let stats = PodSandboxStats {
            attributes: Some(PodSandboxAttributes { id: sandbox.id.clone(), metadata: config.metadata, labels: config.labels, annotations: config.annotations }),
            linux: Some(LinuxPodSandboxStats {
                cpu,
                memory,
                network,
                process: Some(ProcessUsage { timestamp: at, process_count: Some(UInt64Value { value: pod.processes }) }),
                containers: containers.iter().map(|(s, _)| s.clone()).collect(),
            }),
            windows: None,
        };
        Ok(PodNumbers { stats, pod, interfaces, containers })
    }

    pub async fn pod_sandbox_stats(&self, req: PodSandboxStatsRequest) -> Result<PodSandboxStatsResponse, CriError> {
        required_id(&req.pod_sandbox_id, "pod_sandbox_id")?;
        let sandbox = self.require_sandbox(&req.pod_sandbox_id)?;
        Ok(PodSandboxStatsResponse { stats: Some(self.pod_numbers(&sandbox).await?.stats) })
    }

    pub async fn list_pod_sandbox_stats(&self, req: ListPodSandboxStatsRequest) -> Result<ListPodSandboxStatsResponse, CriError> {
        let filter = req.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for sandbox in self.store.sandboxes()? {
            if !filter.id.is_empty() && !sandbox.id.starts_with(&filter.id) {
                continue;
            }
            if !labels_match(&sandbox_config(&sandbox).labels, &filter.label_selector) {
                continue;
            }
            stats.push(self.pod_numbers(&sandbox).await?.stats);
        }
        Ok(ListPodSandboxStatsResponse { stats })
    }
}
