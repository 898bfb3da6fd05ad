//! A container's confinement, runtime-neutral: which capabilities it keeps, whether it is
//! privileged, its seccomp and AppArmor profiles, no_new_privs, a read-only rootfs and the paths
//! to mask or make read-only. The CRI layer fills a [`SecuritySpec`] from the request
//! (`cri/security_context.rs`); `runtime/lxc/security.rs` renders it as LXC keys.
//!
//! Also owns the OCI seccomp profile format (`Localhost` profiles are OCI JSON files, as for runc
//! and containerd) and the pod sysctl classification (which namespace a sysctl belongs to).
//! Must not depend on cri/ or on LXC.

use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error("unknown capability {0:?} (capabilities(7) names, with or without CAP_, or ALL)")]
    UnknownCapability(String),
    #[error("seccomp profile {path}: {message}")]
    SeccompProfile { path: String, message: String },
    #[error("sysctl {name:?}: {message}")]
    Sysctl { name: String, message: String },
}

/// Every capability of capabilities(7) up to CAP_CHECKPOINT_RESTORE (Linux 5.9), the set liblxc
/// 5.0.2 knows by name. Lower case without `CAP_`, as `lxc.cap.keep` wants them; index = number.
pub const ALL_CAPABILITIES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The capabilities a container gets unless the request adds or drops some: the set containerd
/// (and Docker, CRI-O's default before 1.18) give, so workloads behave the same on cri-lxc nodes.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "chown",
    "dac_override",
    "fsetid",
    "fowner",
    "mknod",
    "net_raw",
    "setgid",
    "setuid",
    "setfcap",
    "setpcap",
    "net_bind_service",
    "sys_chroot",
    "kill",
    "audit_write",
];

/// `CAP_NET_ADMIN`, `net_admin`, `NET_ADMIN` → `net_admin`; None when capabilities(7) has no such one.
pub fn capability_name(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
    ALL_CAPABILITIES.iter().copied().find(|c| *c == bare)
}

/// The capability set from CRI `Capability.add_capabilities` / `drop_capabilities` applied to
/// [`DEFAULT_CAPABILITIES`]. `ALL` in add starts from every capability, `ALL` in drop from none;
/// the named ones are then added, then dropped (so `add: [ALL], drop: [CHOWN]` is all but chown,
/// and `drop: [ALL], add: [NET_ADMIN]` is only net_admin), the order containerd applies them in.
/// Returned in capability-number order.
pub fn resolve_capabilities(add: &[String], drop: &[String]) -> Result<Vec<&'static str>, SecurityError> {
    let is_all = |s: &String| s.trim().eq_ignore_ascii_case("all");
    let named = |list: &[String]| -> Result<Vec<&'static str>, SecurityError> {
        list.iter().filter(|s| !is_all(s)).map(|s| capability_name(s).ok_or_else(|| SecurityError::UnknownCapability(s.clone()))).collect()
    };
    let (add_named, drop_named) = (named(add)?, named(drop)?);
    let mut set: BTreeSet<usize> = DEFAULT_CAPABILITIES.iter().filter_map(|c| cap_index(c)).collect();
    if add.iter().any(is_all) {
        set = (0..ALL_CAPABILITIES.len()).collect();
    }
    if drop.iter().any(is_all) {
        set.clear();
    }
    set.extend(add_named.iter().filter_map(|c| cap_index(c)));
    for c in &drop_named {
        if let Some(i) = cap_index(c) {
            set.remove(&i);
        }
    }
    Ok(set.into_iter().map(|i| ALL_CAPABILITIES[i]).collect())
}

fn cap_index(name: &str) -> Option<usize> {
    ALL_CAPABILITIES.iter().position(|c| *c == name)
}

/// How a container is confined. `Default` is what a request without a security context gets:
/// the default capability set, no seccomp (kubelet sends `Unconfined` unless the pod or
/// `--seccomp-default` asks otherwise; api.proto: an empty `seccomp_profile_path` "is identical
/// with unconfined") and the runtime's default AppArmor profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySpec {
    /// CRI `privileged`: all capabilities, every host device, writable /proc and /sys, no seccomp,
    /// no AppArmor, nothing masked (api.proto's list for `privileged`).
    pub privileged: bool,
    /// Capabilities the process keeps (bounding set; effective and permitted for uid 0).
    pub capabilities: Vec<&'static str>,
    pub no_new_privs: bool,
    pub readonly_rootfs: bool,
    /// Absolute paths inside the container hidden from it (kubelet's defaults arrive in the request).
    pub masked_paths: Vec<String>,
    /// Absolute paths inside the container mounted read-only.
    pub readonly_paths: Vec<String>,
    pub seccomp: SeccompPolicy,
    pub apparmor: AppArmorPolicy,
}

impl Default for SecuritySpec {
    fn default() -> Self {
        SecuritySpec {
            privileged: false,
            capabilities: DEFAULT_CAPABILITIES.to_vec(),
            no_new_privs: false,
            readonly_rootfs: false,
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            seccomp: SeccompPolicy::Unconfined,
            apparmor: AppArmorPolicy::Unconfined,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SeccompPolicy {
    #[default]
    Unconfined,
    /// The runtime's documented default profile (see `runtime/lxc/seccomp.rs`).
    RuntimeDefault,
    /// An OCI seccomp profile from the node (CRI `Localhost`, read and parsed by the CRI layer).
    Profile(OciSeccompProfile),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AppArmorPolicy {
    /// No AppArmor confinement (also what a host without AppArmor gets).
    #[default]
    Unconfined,
    /// The runtime's default profile.
    RuntimeDefault,
    /// A profile already loaded on the node, by name.
    Localhost(String),
}

/// An OCI runtime-spec seccomp profile (config-linux.md "Seccomp"), as kubelet's Localhost
/// profiles and Docker/containerd's default profile are written. Only what can be checked or
/// translated is modelled; unknown fields are ignored, as runc ignores them.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSeccompProfile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Docker's profile format: architectures with their sub-architectures.
    #[serde(default)]
    pub arch_map: Vec<OciArchMap>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub listener_path: String,
    #[serde(default)]
    pub syscalls: Vec<OciSyscallRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSyscallRule {
    #[serde(default)]
    pub names: Vec<String>,
    /// Docker's older single-name form.
    #[serde(default)]
    pub name: String,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<OciSyscallArg>,
    /// Docker's profile format: rules that apply only with/without some capabilities or arches.
    /// runc ignores these fields; a profile that relies on them is rejected (see the translator).
    #[serde(default)]
    pub includes: Option<serde_json::Value>,
    #[serde(default)]
    pub excludes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSyscallArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

impl OciSeccompProfile {
    /// Parse an OCI seccomp profile file's content; `path` only names it in errors.
    pub fn from_json(path: &str, data: &[u8]) -> Result<OciSeccompProfile, SecurityError> {
        let profile: OciSeccompProfile =
            serde_json::from_slice(data).map_err(|e| SecurityError::SeccompProfile { path: path.to_string(), message: format!("not a valid OCI seccomp profile: {e}") })?;
        if profile.default_action.is_empty() {
            return Err(SecurityError::SeccompProfile { path: path.to_string(), message: "defaultAction is required".into() });
        }
        Ok(profile)
    }
}

/// The namespace a pod sysctl lives in, per the Kubernetes list of namespaced sysctls
/// (kubernetes.io "Using sysctls in a Kubernetes Cluster": `kernel.shm*`, `kernel.msg*`,
/// `kernel.sem`, `fs.mqueue.*` are IPC-namespaced, `net.*` network-namespaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Net,
    Ipc,
}

/// Which namespace `name` belongs to, or an error for a sysctl that is not namespaced (it would
/// change the whole node) or that is not a plain sysctl name.
pub fn sysctl_namespace(name: &str) -> Result<SysctlNamespace, SecurityError> {
    let err = |message: &str| SecurityError::Sysctl { name: name.to_string(), message: message.to_string() };
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && !sysctl_path(name).split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if !valid {
        return Err(err("not a valid sysctl name"));
    }
    let dotted = sysctl_path(name).replace('/', ".");
    if dotted.starts_with("net.") {
        Ok(SysctlNamespace::Net)
    } else if dotted.starts_with("kernel.shm") || dotted.starts_with("kernel.msg") || dotted == "kernel.sem" || dotted.starts_with("fs.mqueue.") {
        Ok(SysctlNamespace::Ipc)
    } else {
        Err(err("not a namespaced sysctl; only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* can be set per pod"))
    }
}

/// The path of a sysctl under /proc/sys: dots separate components, unless the name uses `/`
/// (then dots are part of a component, e.g. `net/ipv4/conf/eth0.100/forwarding`, sysctl(8)).
pub fn sysctl_path(name: &str) -> String {
    if name.contains('/') {
        name.trim_start_matches('/').to_string()
    } else {
        name.replace('.', "/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn capability_sets_follow_containerd_rules() {
        assert_eq!(resolve_capabilities(&[], &[]).unwrap().len(), DEFAULT_CAPABILITIES.len());
        let caps = resolve_capabilities(&s(&["NET_ADMIN", "CAP_SYS_TIME"]), &s(&["chown", "KILL"])).unwrap();
        assert!(caps.contains(&"net_admin") && caps.contains(&"sys_time"));
        assert!(!caps.contains(&"chown") && !caps.contains(&"kill"));
        assert_eq!(resolve_capabilities(&s(&["ALL"]), &[]).unwrap().len(), ALL_CAPABILITIES.len());
        let all_but = resolve_capabilities(&s(&["ALL"]), &s(&["CHOWN"])).unwrap();
        assert_eq!(all_but.len(), ALL_CAPABILITIES.len() - 1);
        assert_eq!(resolve_capabilities(&s(&["NET_ADMIN"]), &s(&["ALL"])).unwrap(), vec!["net_admin"]);
        assert_eq!(resolve_capabilities(&[], &s(&["all"])).unwrap(), Vec::<&str>::new());
        assert_eq!(resolve_capabilities(&s(&["CAP_NOPE"]), &[]), Err(SecurityError::UnknownCapability("CAP_NOPE".into())));
    }

    #[test]
    fn sysctls_are_classified_by_namespace() {
        assert_eq!(sysctl_namespace("net.ipv4.ip_forward"), Ok(SysctlNamespace::Net));
        assert_eq!(sysctl_namespace("net/ipv4/conf/eth0.100/forwarding"), Ok(SysctlNamespace::Net));
        assert_eq!(sysctl_namespace("kernel.shmmax"), Ok(SysctlNamespace::Ipc));
        assert_eq!(sysctl_namespace("kernel.sem"), Ok(SysctlNamespace::Ipc));
        assert_eq!(sysctl_namespace("fs.mqueue.msg_max"), Ok(SysctlNamespace::Ipc));
        assert!(sysctl_namespace("kernel.panic").is_err());
        assert!(sysctl_namespace("vm.swappiness").is_err());
        assert!(sysctl_namespace("net.ipv4/../../kernel/panic").is_err());
        assert!(sysctl_namespace("net..x").is_err());
        assert_eq!(sysctl_path("net.ipv4.ip_forward"), "net/ipv4/ip_forward");
        assert_eq!(sysctl_path("net/ipv4/conf/eth0.100/forwarding"), "net/ipv4/conf/eth0.100/forwarding");
    }

    #[test]
    fn oci_profiles_parse() {
        let p = OciSeccompProfile::from_json("p", br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#).unwrap();
        assert_eq!(p.syscalls[0].names, vec!["mkdir"]);
        assert_eq!(p.syscalls[0].args[0].index, 0);
        assert!(OciSeccompProfile::from_json("p", b"{").is_err());
        assert!(OciSeccompProfile::from_json("p", b"{}").is_err());
    }
}
