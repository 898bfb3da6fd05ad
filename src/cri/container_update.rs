//! UpdateContainerResources, and the CRI → runtime translation of `LinuxContainerResources` that
//! CreateContainer shares: validation (bad values are InvalidArgument before anything is created),
//! the pod's `cgroup_parent` expanded for the cgroup driver, and the `oom_score_adj` policy.
//!
//! UpdatePodSandboxResources (CRI 1.32) is not in the `k8s-cri` 0.11 API this daemon is built on,
//! so kubelet's call answers Unimplemented at the gRPC layer; kubelet tolerates that.

use std::sync::atomic::{AtomicBool, Ordering};

use k8s_cri::v1::{LinuxContainerResources, PodSandboxConfig, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use prost::Message;

use super::container_status::container_config;
use super::runtime_config::CgroupDriver;
use super::{required_id, CriError, CriService};
use crate::runtime::cgroup::{self, placement::Driver, CgroupError, CgroupSpec, HugepageLimit, Layout, ResourceSpec};
use crate::store::records::ContainerPhase;

/// `LinuxContainerResources` as the runtime takes it (api.proto: 0 means "not specified" for every
/// numeric field; oom_score_adj has no such value and is always applied).
pub(crate) fn resource_spec(r: &LinuxContainerResources) -> ResourceSpec {
    ResourceSpec {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit: r.memory_limit_in_bytes,
        memory_swap_limit: r.memory_swap_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r.hugepage_limits.iter().map(|h| HugepageLimit { page_size: h.page_size.clone(), limit: h.limit }).collect(),
        unified: r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        oom_score_adj: Some(r.oom_score_adj),
    }
}

fn invalid(e: CgroupError) -> CriError {
    CriError::InvalidArgument(e.to_string())
}

/// Logged once per daemon: the first clamp says why, later ones are debug lines.
static CLAMP_LOGGED: AtomicBool = AtomicBool::new(false);

impl CriService {
    fn driver(&self) -> Driver {
        match self.cgroup_driver {
            CgroupDriver::Systemd => Driver::Systemd,
            CgroupDriver::Cgroupfs => Driver::Cgroupfs,
        }
    }

    /// Validate `resources` against this host (nothing is written).
    fn validated(&self, resources: ResourceSpec) -> Result<ResourceSpec, CriError> {
        let layout = Layout::host();
        resources.validate(&cgroup::hierarchy::host_limits(), &layout.unified_controllers).map_err(invalid)?;
        // Also render: a limit whose controller this host lacks is refused here, not at start.
        resources.render(&|c| layout.version_of(c)).map_err(invalid)?;
        Ok(resources)
    }

    /// The cgroup placement and limits of a new container of `pod`.
    pub(crate) fn cgroup_spec(&self, pod: &PodSandboxConfig, resources: Option<&LinuxContainerResources>) -> Result<CgroupSpec, CriError> {
        let parent_raw = pod.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or("");
        let parent = cgroup::expand_parent(self.driver(), parent_raw).map_err(invalid)?;
        let mut spec = match resources {
            Some(r) => self.validated(resource_spec(r))?,
            None => ResourceSpec::default(),
        };
        spec.oom_score_adj = self.oom_score_adj(spec.oom_score_adj)?;
        Ok(CgroupSpec { parent, resources: spec })
    }

    /// containerd's `restrict_oom_score_adj`: never below the daemon's own value when switched on.
    /// Off, a value the daemon may not set (no CAP_SYS_RESOURCE) is refused up front instead of
    /// failing the start later.
    fn oom_score_adj(&self, wanted: Option<i64>) -> Result<Option<i64>, CriError> {
        let Some(wanted) = wanted else { return Ok(None) };
        let own = cgroup::own_oom_score_adj();
        if wanted >= own || cgroup::may_lower_oom_score_adj() {
            return Ok(Some(wanted));
        }
        if self.config.restrict_oom_score_adj {
            if !CLAMP_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(wanted, clamped_to = own, "oom_score_adj below the daemon's own is clamped (restrict_oom_score_adj = true; the daemon lacks CAP_SYS_RESOURCE); further clamps are logged at debug");
            } else {
                tracing::debug!(wanted, clamped_to = own, "oom_score_adj clamped");
            }
            return Ok(Some(own));
        }
        Err(CriError::FailedPrecondition(format!(
            "oom_score_adj {wanted} is below the daemon's own ({own}) and the daemon lacks CAP_SYS_RESOURCE; set restrict_oom_score_adj = true to clamp it"
        )))
    }

    pub async fn update_container_resources(&self, req: UpdateContainerResourcesRequest) -> Result<UpdateContainerResourcesResponse, CriError> {
        required_id(&req.container_id, "container_id")?;
        let Some(linux) = req.linux else {
            // Windows resources or nothing: nothing this runtime applies.
            return Ok(UpdateContainerResourcesResponse {});
        };
        let record = self.require_container(&req.container_id)?;
        let _ctr = self.container_locks.lock(&record.id).await;
        let mut record = self.store.container(&record.id)?.ok_or_else(|| CriError::NotFound(format!("container {:?} not found", req.container_id)))?;
        if matches!(ContainerPhase::try_from(record.phase), Ok(ContainerPhase::Exited)) {
            return Err(CriError::FailedPrecondition(format!("container {} has exited", record.id)));
        }
        let resources = self.validated(resource_spec(&linux))?;
        self.runtime.update_resources(&record.id, &resources).await?;
        // ContainerStatus.resources reports what is applied: kept in the stored config.
        let mut config = container_config(&record);
        let linux_config = config.linux.get_or_insert_with(Default::default);
        let oom = linux_config.resources.as_ref().map(|r| r.oom_score_adj).unwrap_or(linux.oom_score_adj);
        linux_config.resources = Some(LinuxContainerResources { oom_score_adj: oom, ..linux });
        record.config = config.encode_to_vec();
        self.store.update_container(&record)?;
        tracing::info!(container_id = %record.id, "container resources updated");
        Ok(UpdateContainerResourcesResponse {})
    }
}
