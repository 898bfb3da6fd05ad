//! Container cgroups: where a pod's containers live in the cgroup tree, which resource limits are
//! written there, what is read back as statistics, and whether the OOM killer struck.
//!
//! Layout of one container `<id>` under the pod's parent `P` (the CRI `cgroup_parent`, expanded for
//! the configured driver, see [`placement`]), in every mounted hierarchy (v1 controllers and the
//! unified one; a pure v2 host has only the latter):
//!
//! ```text
//! P/cri-lxc-<id>/          owned by the daemon: created at CreateContainer, limits written here,
//!                          removed at RemoveContainer; statistics and OOM counters are read here
//! P/cri-lxc-<id>/lxc/      liblxc's container cgroup (`lxc.cgroup.dir.container`); liblxc creates
//!                          it at start and removes it when the container exits
//! cri-lxc.monitor/<id>/    liblxc's monitor cgroup (`lxc.cgroup.dir.monitor`, the `__monitor-start`
//!                          process), outside the pod so it never counts against the pod's limits
//! ```
//!
//! Why limits are not `lxc.cgroup.*` / `lxc.cgroup2.*` keys: liblxc applies those to its own
//! container cgroup and deletes that cgroup the moment the container exits, taking the OOM counters
//! with it (an OOMKilled container could not be told from any other SIGKILL). A level the daemon
//! owns keeps the counters until RemoveContainer and is the one place UpdateContainerResources
//! writes to, whether the container runs or not. The limits are hierarchical, so they bind
//! liblxc's sub-cgroup all the same.
//!
//! Must not depend on cri/ or grpc/.

pub mod devices;
pub mod hierarchy;
pub mod placement;
pub mod resources;
pub mod stats;

pub use hierarchy::{CgroupVersion, Layout};
pub use placement::{container_dir, expand_parent, monitor_dir, DEFAULT_PARENT};
pub use resources::{HugepageLimit, ResourceSpec};
pub use stats::CgroupStats;

/// What the runtime needs to place one container: its parent (already expanded to a path relative
/// to each hierarchy's root, e.g. `kubepods/burstable/pod<uid>`) and the limits to apply.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct CgroupSpec {
    /// Relative path of the pod's cgroup; empty = [`DEFAULT_PARENT`].
    pub parent: String,
    pub resources: ResourceSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A resource value kubelet (or a client) sent that cannot be applied.
    #[error("invalid resources: {0}")]
    Invalid(String),
    /// An invalid `cgroup_parent`.
    #[error("invalid cgroup parent {parent:?}: {reason}")]
    BadParent { parent: String, reason: String },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
}

/// The LXC keys (lxc.container.conf(5)) that place container `id` in its cgroups and set its
/// `oom_score_adj`. Pure; called by the config renderer.
///
/// * `lxc.cgroup.dir.container` / `lxc.cgroup.dir.monitor` (liblxc requires both together): the
///   container under the daemon's per-container cgroup in the pod, the monitor (`__monitor-start`)
///   outside every pod. Relative paths: with `lxc.cgroup.relative` unset liblxc resolves them from
///   the hierarchy's root.
/// * `lxc.proc.oom_score_adj`: written for the container's first process before it execs.
pub fn lxc_keys(id: &str, spec: &CgroupSpec) -> Vec<(&'static str, String)> {
    let mut keys = vec![
        ("lxc.cgroup.dir.container", placement::lxc_dir(&spec.parent, id)),
        ("lxc.cgroup.dir.monitor", placement::monitor_dir(id)),
    ];
    if let Some(adj) = spec.resources.oom_score_adj {
        keys.push(("lxc.proc.oom_score_adj", adj.to_string()));
    }
    keys
}

/// The daemon's own `oom_score_adj`: the floor for containers when `restrict_oom_score_adj` is on
/// (a process without CAP_SYS_RESOURCE may not go below it, proc(5)).
pub fn own_oom_score_adj() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Whether this process may lower oom_score_adj (CAP_SYS_RESOURCE in its effective set).
pub fn may_lower_oom_score_adj() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}
