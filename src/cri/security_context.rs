//! The CRI security context as kubelet sends it, turned into the runtime's `SecuritySpec`
//! (CreateContainer), plus the pod-level check of RunPodSandbox: pod sysctls. (User namespaces:
//! user_namespace.rs.)
//! Everything here is validated before anything is created, so bad input is an InvalidArgument
//! (or FailedPrecondition for node state) with nothing left behind.
//!
//! api.proto rules implemented here (LinuxContainerSecurityContext):
//! * `seccomp` wins over the deprecated `seccomp_profile_path`; an empty path "is identical with
//!   unconfined"; `localhost/<full-path-to-profile>` / `Localhost` + `localhost_ref` name an OCI
//!   JSON file on the node.
//! * `apparmor` wins over `apparmor_profile`; "runtime/default: equivalent to not specifying a profile".
//! * "run_as_group should only be specified when run_as_user or run_as_username is specified;
//!   otherwise, the runtime MUST error."
//! * privileged: all capabilities, no seccomp, no AppArmor, nothing masked (the runtime renders it).

use std::sync::atomic::{AtomicBool, Ordering};

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig, SecurityProfile, SupplementalGroupsPolicy};

use super::CriError;
use crate::runtime::lxc::{apparmor, seccomp};
use crate::runtime::pod_sysctl::{PodSysctl, SysctlError};
use crate::runtime::security::{self, AppArmorPolicy, OciSeccompProfile, SeccompPolicy, SecuritySpec, SysctlNamespace, ALL_CAPABILITIES};

/// What CreateContainer needs from the security context beyond the user (resolved in passwd.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerSecurity {
    pub spec: SecuritySpec,
    /// `supplemental_groups_policy: Strict`: only the requested groups, not the image's /etc/group.
    pub strict_supplemental_groups: bool,
}

/// Logged once per daemon: AppArmor profiles requested on a host that does not enforce AppArmor.
static APPARMOR_SKIP_LOGGED: AtomicBool = AtomicBool::new(false);

pub(crate) fn container_security(config: &ContainerConfig, pod: &PodSandboxConfig) -> Result<ContainerSecurity, CriError> {
    let default_sc = LinuxContainerSecurityContext::default();
    let sc = config.linux.as_ref().and_then(|l| l.security_context.as_ref()).unwrap_or(&default_sc);
    let pod_sc = pod.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let invalid = |m: String| CriError::InvalidArgument(m);

    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(invalid("security_context.run_as_group requires run_as_user or run_as_username".into()));
    }
    // containerd's rule: a privileged container needs a privileged sandbox (kubelet sets both).
    if sc.privileged && !pod_sc.is_some_and(|p| p.privileged) {
        return Err(invalid("security_context.privileged: the pod sandbox is not privileged".into()));
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.add_ambient_capabilities.is_empty() {
        return Err(invalid(format!(
            "security_context.capabilities.add_ambient_capabilities {:?}: ambient capabilities are not supported by liblxc 5",
            caps.add_ambient_capabilities
        )));
    }
    let capabilities = if sc.privileged {
        ALL_CAPABILITIES.to_vec()
    } else {
        security::resolve_capabilities(&caps.add_capabilities, &caps.drop_capabilities).map_err(|e| invalid(format!("security_context.capabilities: {e}")))?
    };
    for (field, paths) in [("masked_paths", &sc.masked_paths), ("readonly_paths", &sc.readonly_paths)] {
        if let Some(bad) = paths.iter().find(|p| !valid_container_path(p)) {
            return Err(invalid(format!("security_context.{field}: {bad:?} must be an absolute path without \"..\"")));
        }
    }
    let mut spec = SecuritySpec {
        privileged: sc.privileged,
        capabilities,
        no_new_privs: sc.no_new_privs,
        readonly_rootfs: sc.readonly_rootfs,
        masked_paths: sc.masked_paths.clone(),
        readonly_paths: sc.readonly_paths.clone(),
        seccomp: SeccompPolicy::Unconfined,
        apparmor: AppArmorPolicy::Unconfined,
    };
    if !sc.privileged {
        spec.seccomp = seccomp_policy(sc)?;
        // Checked now, so an untranslatable profile is an InvalidArgument before anything exists.
        if let SeccompPolicy::Profile(p) = &spec.seccomp {
            seccomp::translate(p, &spec.capabilities).map_err(|e| invalid(e.to_string()))?;
        }
        spec.apparmor = apparmor_policy(sc)?;
    }
    Ok(ContainerSecurity { spec, strict_supplemental_groups: sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32 })
}

fn valid_container_path(p: &str) -> bool {
    p.starts_with('/') && !p.split('/').any(|c| c == "..") && !p.chars().any(|c| c.is_control())
}

// The deprecated string forms are still what older kubelets send.
#[allow(deprecated)]
fn seccomp_policy(sc: &LinuxContainerSecurityContext) -> Result<SeccompPolicy, CriError> {
    let localhost = |path: &str, field: &str| -> Result<SeccompPolicy, CriError> {
        if !path.starts_with('/') {
            return Err(CriError::InvalidArgument(format!("{field}: seccomp profile path {path:?} must be absolute")));
        }
        let data = std::fs::read(path).map_err(|e| CriError::InvalidArgument(format!("{field}: reading seccomp profile {path}: {e}")))?;
        let profile = OciSeccompProfile::from_json(path, &data).map_err(|e| CriError::InvalidArgument(format!("{field}: {e}")))?;
        Ok(SeccompPolicy::Profile(profile))
    };
    if let Some(p) = &sc.seccomp {
        return match profile_type(p, "security_context.seccomp")? {
            ProfileType::RuntimeDefault => Ok(SeccompPolicy::RuntimeDefault),
            ProfileType::Unconfined => Ok(SeccompPolicy::Unconfined),
            ProfileType::Localhost => localhost(&p.localhost_ref, "security_context.seccomp.localhost_ref"),
        };
    }
    let path = sc.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok(SeccompPolicy::Unconfined),
        "runtime/default" | "docker/default" => Ok(SeccompPolicy::RuntimeDefault),
        _ => match path.strip_prefix("localhost/") {
            Some(file) => localhost(file, "security_context.seccomp_profile_path"),
            None => Err(CriError::InvalidArgument(format!(
                "security_context.seccomp_profile_path {path:?}: expected runtime/default, unconfined or localhost/<path>"
            ))),
        },
    }
}

#[allow(deprecated)]
fn apparmor_policy(sc: &LinuxContainerSecurityContext) -> Result<AppArmorPolicy, CriError> {
    let requested = if let Some(p) = &sc.apparmor {
        match profile_type(p, "security_context.apparmor")? {
            ProfileType::RuntimeDefault => AppArmorPolicy::RuntimeDefault,
            ProfileType::Unconfined => AppArmorPolicy::Unconfined,
            // kubelet sends the name as `localhost/<name>` in localhost_ref too; accept both.
            ProfileType::Localhost => AppArmorPolicy::Localhost(p.localhost_ref.strip_prefix("localhost/").unwrap_or(&p.localhost_ref).to_string()),
        }
    } else {
        match sc.apparmor_profile.as_str() {
            "" | "runtime/default" => AppArmorPolicy::RuntimeDefault,
            "unconfined" => AppArmorPolicy::Unconfined,
            other => match other.strip_prefix("localhost/") {
                Some(name) => AppArmorPolicy::Localhost(name.to_string()),
                None => {
                    return Err(CriError::InvalidArgument(format!(
                        "security_context.apparmor_profile {other:?}: expected runtime/default, unconfined or localhost/<profile>"
                    )))
                }
            },
        }
    };
    if let AppArmorPolicy::Localhost(name) = &requested {
        if !apparmor::valid_profile_name(name) {
            return Err(CriError::InvalidArgument(format!("security_context.apparmor: invalid profile name {name:?}")));
        }
    }
    if requested == AppArmorPolicy::Unconfined {
        return Ok(requested);
    }
    if !apparmor::host_has_apparmor() {
        if !APPARMOR_SKIP_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!("AppArmor is not enabled on this host: containers run without AppArmor confinement (requested profiles are skipped)");
        }
        return Ok(AppArmorPolicy::Unconfined);
    }
    if let AppArmorPolicy::Localhost(name) = &requested {
        if !apparmor::profile_loaded(name) {
            return Err(CriError::FailedPrecondition(format!("AppArmor profile {name:?} is not loaded on this node (load it with apparmor_parser first)")));
        }
    }
    Ok(requested)
}

fn profile_type(p: &SecurityProfile, field: &str) -> Result<ProfileType, CriError> {
    let t = ProfileType::try_from(p.profile_type).map_err(|_| CriError::InvalidArgument(format!("{field}.profile_type {} is unknown", p.profile_type)))?;
    if t == ProfileType::Localhost && p.localhost_ref.is_empty() {
        return Err(CriError::InvalidArgument(format!("{field}: profile_type Localhost needs localhost_ref")));
    }
    Ok(t)
}

/// The pod's sysctls with the namespace each is set in. A sysctl of a namespace the pod shares
/// with the node (hostNetwork for net.*, hostIPC for the IPC ones) or of no namespace at all
/// would change the node: InvalidArgument, as kubelet's own validation says.
pub(crate) fn pod_sysctls(config: &PodSandboxConfig, options: &NamespaceOption) -> Result<Vec<PodSysctl>, CriError> {
    let Some(linux) = &config.linux else { return Ok(Vec::new()) };
    let mut names: Vec<&String> = linux.sysctls.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let value = &linux.sysctls[name];
        let namespace = security::sysctl_namespace(name).map_err(|e| CriError::InvalidArgument(e.to_string()))?;
        let shared_with_node = match namespace {
            SysctlNamespace::Net => options.network() == NamespaceMode::Node,
            SysctlNamespace::Ipc => options.ipc() == NamespaceMode::Node,
        };
        if shared_with_node {
            return Err(CriError::InvalidArgument(format!("sysctl {name:?}: the pod uses the node's {namespace:?} namespace; setting it would change the node")));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(CriError::InvalidArgument(format!("sysctl {name:?}: value must be one line")));
        }
        out.push(PodSysctl { name: name.clone(), value: value.clone(), namespace });
    }
    Ok(out)
}

/// A sysctl the kernel refuses (no such sysctl, value out of range) is the request's fault.
pub(crate) fn sysctl_error(e: SysctlError) -> CriError {
    match &e {
        SysctlError::Write { source, .. } if matches!(source.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ERANGE)) => {
            CriError::InvalidArgument(e.to_string())
        }
        SysctlError::NoNamespace(..) => CriError::InvalidArgument(e.to_string()),
        _ => CriError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{Capability, Int64Value, LinuxContainerConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext};

    fn with_sc(sc: LinuxContainerSecurityContext) -> ContainerConfig {
        ContainerConfig { linux: Some(LinuxContainerConfig { security_context: Some(sc), ..Default::default() }), ..Default::default() }
    }

    fn pod(privileged: bool) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig { security_context: Some(LinuxSandboxSecurityContext { privileged, ..Default::default() }), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn request_fields_map_to_the_spec() {
        let sc = LinuxContainerSecurityContext {
            capabilities: Some(Capability { add_capabilities: vec!["NET_ADMIN".into()], drop_capabilities: vec!["CHOWN".into()], ..Default::default() }),
            readonly_rootfs: true,
            no_new_privs: true,
            masked_paths: vec!["/proc/kcore".into()],
            seccomp: Some(SecurityProfile { profile_type: ProfileType::RuntimeDefault as i32, ..Default::default() }),
            apparmor: Some(SecurityProfile { profile_type: ProfileType::Unconfined as i32, ..Default::default() }),
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        };
        let got = container_security(&with_sc(sc), &pod(false)).unwrap();
        assert!(got.strict_supplemental_groups);
        assert!(got.spec.capabilities.contains(&"net_admin") && !got.spec.capabilities.contains(&"chown"));
        assert_eq!(got.spec.seccomp, SeccompPolicy::RuntimeDefault);
        assert!(got.spec.readonly_rootfs && got.spec.no_new_privs);
        assert_eq!(got.spec.masked_paths, vec!["/proc/kcore"]);
    }

    #[test]
    #[allow(deprecated)]
    fn deprecated_strings_and_bad_input() {
        let path = |s: &str| container_security(&with_sc(LinuxContainerSecurityContext { seccomp_profile_path: s.into(), ..Default::default() }), &pod(false));
        assert_eq!(path("").unwrap().spec.seccomp, SeccompPolicy::Unconfined);
        assert_eq!(path("runtime/default").unwrap().spec.seccomp, SeccompPolicy::RuntimeDefault);
        assert!(matches!(path("localhost/no/such/file"), Err(CriError::InvalidArgument(_))));
        assert!(matches!(path("localhost//no/such/file.json"), Err(CriError::InvalidArgument(_))));
        assert!(matches!(path("bogus"), Err(CriError::InvalidArgument(_))));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        std::fs::write(&file, r#"{"defaultAction":"SCMP_ACT_LOG"}"#).unwrap();
        assert!(matches!(path(&format!("localhost/{}", file.display())), Err(CriError::InvalidArgument(m)) if m.contains("SCMP_ACT_LOG")));
        let bad = |sc: LinuxContainerSecurityContext| container_security(&with_sc(sc), &pod(false));
        assert!(matches!(bad(LinuxContainerSecurityContext { run_as_group: Some(Int64Value { value: 5 }), ..Default::default() }), Err(CriError::InvalidArgument(_))));
        assert!(matches!(bad(LinuxContainerSecurityContext { privileged: true, ..Default::default() }), Err(CriError::InvalidArgument(_))));
        assert!(matches!(bad(LinuxContainerSecurityContext { apparmor_profile: "bogus".into(), ..Default::default() }), Err(CriError::InvalidArgument(_))));
        assert!(matches!(bad(LinuxContainerSecurityContext { masked_paths: vec!["proc/kcore".into()], ..Default::default() }), Err(CriError::InvalidArgument(_))));
        let caps = Capability { add_capabilities: vec!["CAP_BOGUS".into()], ..Default::default() };
        assert!(matches!(bad(LinuxContainerSecurityContext { capabilities: Some(caps), ..Default::default() }), Err(CriError::InvalidArgument(_))));
        let privileged = container_security(&with_sc(LinuxContainerSecurityContext { privileged: true, seccomp_profile_path: "runtime/default".into(), ..Default::default() }), &pod(true)).unwrap();
        assert_eq!(privileged.spec.capabilities.len(), ALL_CAPABILITIES.len());
        assert_eq!(privileged.spec.seccomp, SeccompPolicy::Unconfined);
    }

    #[test]
    fn sysctls_need_a_namespace_of_the_pod() {
        let mut config = PodSandboxConfig { linux: Some(LinuxPodSandboxConfig::default()), ..Default::default() };
        let sysctls = &mut config.linux.as_mut().unwrap().sysctls;
        sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        sysctls.insert("kernel.shmmax".into(), "65536".into());
        let pod_ns = NamespaceOption::default();
        let got = pod_sysctls(&config, &pod_ns).unwrap();
        assert_eq!(got.len(), 2);
        let host_net = NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() };
        assert!(matches!(pod_sysctls(&config, &host_net), Err(CriError::InvalidArgument(_))));
        config.linux.as_mut().unwrap().sysctls.insert("kernel.panic".into(), "1".into());
        assert!(matches!(pod_sysctls(&config, &pod_ns), Err(CriError::InvalidArgument(_))));
    }
}
