//! ContainerStats and ListContainerStats: CPU (core-nanoseconds, and nano-cores as the rate since
//! the previous sample, kept in memory per container like containerd does), memory (working set,
//! usage, RSS, page faults) from the container's cgroup, and the writable layer (bytes and inodes
//! of the overlay upper dir).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsRequest, ContainerStatsResponse, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    ListContainerStatsRequest, ListContainerStatsResponse, MemoryUsage, UInt64Value,
};

use super::container_status::{container_config, listed};
use super::{labels_match, now_nanos, required_id, CriError, CriService};
use crate::runtime::cgroup::CgroupStats;
use crate::store::records::ContainerRecord;

/// Previous (timestamp ns, usage ns) per container or pod, for usage_nano_cores.
#[derive(Default)]
pub(crate) struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    /// Record a sample; the rate since the previous one (None for the first, or a counter reset).
    pub(crate) fn nano_cores(&self, key: &str, at: i64, usage: u64) -> Option<u64> {
        let mut samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let previous = samples.insert(key.to_string(), (at, usage));
        let (t0, u0) = previous?;
        let dt = at.checked_sub(t0).filter(|d| *d > 0)? as u128;
        let du = usage.checked_sub(u0)? as u128;
        Some((du * 1_000_000_000 / dt) as u64)
    }

    pub(crate) fn forget(&self, keep: &dyn Fn(&str) -> bool) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| keep(k));
    }
}

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

impl CriService {
    /// CPU and memory of a cgroup's statistics in CRI form (`key` names the CPU sample).
    pub(crate) fn cpu_memory(&self, key: &str, at: i64, stats: Option<&CgroupStats>) -> (Option<CpuUsage>, Option<MemoryUsage>) {
        let Some(stats) = stats else { return (None, None) };
        let cpu = stats.cpu_usage_nanos.map(|usage| CpuUsage {
            timestamp: at,
            usage_core_nano_seconds: value(usage),
            usage_nano_cores: value(self.cpu_samples.nano_cores(key, at, usage).unwrap_or(0)),
        });
        let memory = stats.memory.as_ref().map(|m| MemoryUsage {
            timestamp: at,
            working_set_bytes: value(m.working_set),
            available_bytes: m.limit.map(|l| UInt64Value { value: l.saturating_sub(m.working_set) }),
            usage_bytes: value(m.usage),
            rss_bytes: value(m.rss),
            page_faults: value(m.page_faults),
            major_page_faults: value(m.major_page_faults),
        });
        (cpu, memory)
    }

    /// Stats of one container record (and its raw cgroup stats, for pod totals and metrics).
    pub(crate) async fn stats_of(&self, record: &ContainerRecord) -> Result<(ContainerStats, Option<CgroupStats>), CriError> {
        let config = container_config(record);
        let cgroup = self.runtime.cgroup_stats(&record.id).await?;
        let at = now_nanos();
        let (cpu, memory) = self.cpu_memory(&record.id, at, cgroup.as_ref());
        let images = self.images.clone();
        let id = record.id.clone();
        let layer = tokio::task::spawn_blocking(move || images.writable_layer_usage(&id)).await.map_err(|e| CriError::Internal(format!("stats task: {e}")))??;
        let writable_layer = Some(FilesystemUsage {
            timestamp: at,
            fs_id: Some(FilesystemIdentifier { mountpoint: self.images.container_fs_root().display().to_string() }),
            used_bytes: value(layer.bytes),
            inodes_used: value(layer.inodes),
        });
        let stats = ContainerStats {
            attributes: Some(ContainerAttributes { id: record.id.clone(), metadata: config.metadata, labels: config.labels, annotations: config.annotations }),
            cpu,
            memory,
            writable_layer,
            swap: None,
        };
        Ok((stats, cgroup))
    }

    pub async fn container_stats(&self, req: ContainerStatsRequest) -> Result<ContainerStatsResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        let record = self.require_container(&req.container_id)?;
        Ok(ContainerStatsResponse { stats: Some(self.stats_of(&record).await?.0) })
    }

    pub async fn list_container_stats(&self, req: ListContainerStatsRequest) -> Result<ListContainerStatsResponse, CriError> {
        let filter = req.filter.unwrap_or_default();
        let all = self.store.containers()?;
        // Samples of containers that are gone would otherwise pile up.
        self.cpu_samples.forget(&|k| all.iter().any(|c| c.id == k) || self.store.sandbox(k).ok().flatten().is_some());
        let mut stats = Vec::new();
        for record in all {
            if !listed(&record, &filter.id, &filter.pod_sandbox_id) {
                continue;
            }
            if !labels_match(&container_config(&record).labels, &filter.label_selector) {
                continue;
            }
            stats.push(self.stats_of(&record).await?.0);
        }
        Ok(ListContainerStatsResponse { stats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cores_is_the_rate_between_samples() {
        let s = CpuSamples::default();
        assert_eq!(s.nano_cores("c", 1_000_000_000, 0), None);
        // half a core over one second
        assert_eq!(s.nano_cores("c", 2_000_000_000, 500_000_000), Some(500_000_000));
        // a counter that went backwards (cgroup re-created) gives no rate
        assert_eq!(s.nano_cores("c", 3_000_000_000, 10), None);
        s.forget(&|_| false);
        assert_eq!(s.nano_cores("c", 4_000_000_000, 20), None);
    }
}
