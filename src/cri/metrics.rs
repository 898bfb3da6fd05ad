//! ListMetricDescriptors and ListPodSandboxMetrics: the cAdvisor-named metrics kubelet serves on
//! `/metrics/cadvisor` when it takes them from the runtime (PodAndContainerStatsFromCRI). Values
//! are the same numbers PodSandboxStats reports; counters of seconds are whole seconds (the CRI
//! `Metric.value` is an integer).

use k8s_cri::v1::{
    ContainerMetrics, ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse, Metric,
    MetricDescriptor, MetricType, PodSandboxMetrics, UInt64Value,
};

use super::container_status::container_config;
use super::{now_nanos, CriError, CriService};
use crate::runtime::cgroup::CgroupStats;
use crate::store::records::{SandboxPhase, ContainerRecord};

/// Labels of every container metric, in this order.
const CONTAINER_LABELS: &[&str] = &["id", "name", "image"];
/// Network metrics add the interface.
const NETWORK_LABELS: &[&str] = &["id", "name", "image", "interface"];

/// (name, help, type, network?)
const METRICS: &[(&str, &str, MetricType, bool)] = &[
    ("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", MetricType::Counter, false),
    ("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", MetricType::Gauge, false),
    ("container_memory_working_set_bytes", "Current working set in bytes.", MetricType::Gauge, false),
    ("container_memory_rss", "Size of RSS in bytes.", MetricType::Gauge, false),
    ("container_memory_failures_total", "Cumulative count of memory allocation failures (page faults).", MetricType::Counter, false),
    ("container_processes", "Number of processes running inside the container.", MetricType::Gauge, false),
    ("container_threads", "Number of threads running inside the container.", MetricType::Gauge, false),
    ("container_network_receive_bytes_total", "Cumulative count of bytes received.", MetricType::Counter, true),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", MetricType::Counter, true),
    ("container_network_receive_packets_total", "Cumulative count of packets received.", MetricType::Counter, true),
    ("container_network_transmit_packets_total", "Cumulative count of packets transmitted.", MetricType::Counter, true),
    ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", MetricType::Counter, true),
    ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", MetricType::Counter, true),
];

fn metric(name: &str, at: i64, labels: &[String], v: u64) -> Metric {
    let kind = METRICS.iter().find(|m| m.0 == name).map(|m| m.2).unwrap_or(MetricType::Gauge);
    Metric { name: name.to_string(), timestamp: at, metric_type: kind as i32, label_values: labels.to_vec(), value: Some(UInt64Value { value: v }) }
}

/// CPU, memory, process metrics of one cgroup.
fn cgroup_metrics(at: i64, labels: &[String], s: &CgroupStats) -> Vec<Metric> {
    let mut out = Vec::new();
    if let Some(cpu) = s.cpu_usage_nanos {
        out.push(metric("container_cpu_usage_seconds_total", at, labels, cpu / 1_000_000_000));
    }
    if let Some(m) = &s.memory {
        out.push(metric("container_memory_usage_bytes", at, labels, m.usage));
        out.push(metric("container_memory_working_set_bytes", at, labels, m.working_set));
        out.push(metric("container_memory_rss", at, labels, m.rss));
        out.push(metric("container_memory_failures_total", at, labels, m.page_faults));
    }
    out.push(metric("container_processes", at, labels, s.processes));
    out.push(metric("container_threads", at, labels, s.threads));
    out
}

impl CriService {
    pub fn list_metric_descriptors(&self, _req: ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse {
        let descriptors = METRICS
            .iter()
            .map(|(name, help, _, network)| MetricDescriptor {
                name: name.to_string(),
                help: help.to_string(),
                label_keys: (if *network { NETWORK_LABELS } else { CONTAINER_LABELS }).iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        ListMetricDescriptorsResponse { descriptors }
    }

    pub async fn list_pod_sandbox_metrics(&self, _req: ListPodSandboxMetricsRequest) -> Result<ListPodSandboxMetricsResponse, CriError> {
        let mut pod_metrics = Vec::new();
        let containers: Vec<ContainerRecord> = self.store.containers()?;
        for sandbox in self.store.sandboxes()? {
            if SandboxPhase::try_from(sandbox.phase) != Ok(SandboxPhase::Ready) {
                continue;
            }
            let numbers = self.pod_numbers(&sandbox).await?;
            let at = now_nanos();
            let pod_name = numbers.stats.attributes.as_ref().and_then(|a| a.metadata.as_ref()).map(|m| m.name.clone()).unwrap_or_default();
            let pod_labels = vec![sandbox.id.clone(), pod_name, String::new()];
            let mut metrics = cgroup_metrics(at, &pod_labels, &numbers.pod);
            for i in numbers.interfaces.iter().filter(|i| i.name != "lo") {
                let labels: Vec<String> = pod_labels.iter().cloned().chain([i.name.clone()]).collect();
                for (name, v) in [
                    ("container_network_receive_bytes_total", i.rx_bytes),
                    ("container_network_transmit_bytes_total", i.tx_bytes),
                    ("container_network_receive_packets_total", i.rx_packets),
                    ("container_network_transmit_packets_total", i.tx_packets),
                    ("container_network_receive_errors_total", i.rx_errors),
                    ("container_network_transmit_errors_total", i.tx_errors),
                ] {
                    metrics.push(metric(name, at, &labels, v));
                }
            }
            let container_metrics = numbers
                .containers
                .iter()
                .filter_map(|(stats, cgroup)| {
                    let id = stats.attributes.as_ref()?.id.clone();
                    let record = containers.iter().find(|c| c.id == id)?;
                    let name = container_config(record).metadata.map(|m| m.name).unwrap_or_default();
                    let labels = vec![id.clone(), name, record.image.clone()];
                    Some(ContainerMetrics { container_id: id, metrics: cgroup.as_ref().map(|c| cgroup_metrics(at, &labels, c)).unwrap_or_default() })
                })
                .collect();
            pod_metrics.push(PodSandboxMetrics { pod_sandbox_id: sandbox.id.clone(), metrics, container_metrics });
        }
        Ok(ListPodSandboxMetricsResponse { pod_metrics })
    }
}
