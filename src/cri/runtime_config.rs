//! RuntimeConfig (the cgroup driver kubelet must use with us) and UpdateRuntimeConfig (the pod CIDR).

use std::path::Path;

use k8s_cri::v1::{LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse, UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};

use super::CriService;
use crate::config::CgroupDriverSetting;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

/// `auto` means systemd when the host was booted with systemd (sd_booted(3): /run/systemd/system exists),
/// else cgroupfs — what kubelet's own default detection on such a host would agree with.
pub fn detect_cgroup_driver(setting: CgroupDriverSetting, run_dir: &Path) -> CgroupDriver {
    match setting {
        CgroupDriverSetting::Systemd => CgroupDriver::Systemd,
        CgroupDriverSetting::Cgroupfs => CgroupDriver::Cgroupfs,
        CgroupDriverSetting::Auto if run_dir.join("systemd/system").is_dir() => CgroupDriver::Systemd,
        CgroupDriverSetting::Auto => CgroupDriver::Cgroupfs,
    }
}

impl CriService {
    pub fn runtime_config(&self, _req: RuntimeConfigRequest) -> RuntimeConfigResponse {
        let driver = match self.cgroup_driver {
            CgroupDriver::Systemd => k8s_cri::v1::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => k8s_cri::v1::CgroupDriver::Cgroupfs,
        };
        RuntimeConfigResponse { linux: Some(LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }) }
    }
}

impl CriService {
    /// UpdateRuntimeConfig: kubelet hands over the node's pod CIDR. CNI plugins take their ranges from
    /// their own config (host-local ranges, Kube-OVN's subnets), so it is recorded — shown in verbose
    /// Status — and otherwise changes nothing, which is what Kube-OVN expects.
    pub async fn update_runtime_config(&self, req: UpdateRuntimeConfigRequest) -> Result<UpdateRuntimeConfigResponse, super::CriError> {
        let cidr = req.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
        if !cidr.is_empty() {
            self.store.set_meta("pod_cidr", &cidr)?;
            tracing::info!(pod_cidr = %cidr, "pod CIDR recorded");
        }
        Ok(UpdateRuntimeConfigResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_detects_from_run_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_cgroup_driver(CgroupDriverSetting::Auto, dir.path()), CgroupDriver::Cgroupfs);
        std::fs::create_dir_all(dir.path().join("systemd/system")).unwrap();
        assert_eq!(detect_cgroup_driver(CgroupDriverSetting::Auto, dir.path()), CgroupDriver::Systemd);
        assert_eq!(detect_cgroup_driver(CgroupDriverSetting::Cgroupfs, dir.path()), CgroupDriver::Cgroupfs);
    }
}
