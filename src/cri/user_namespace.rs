//! The user namespace part of the CRI request (`hostUsers: false`): NamespaceOption.userns_options
//! of the pod (RunPodSandbox) and of each container (CreateContainer), validated and turned into the
//! runtime's `IdMap`, and UsernsError turned into CRI errors.
//!
//! api.proto (UserNamespace): "NamespaceMode for UserNamespace currently supports only POD and NODE,
//! not CONTAINER OR TARGET". An absent `userns_options` is the node's user namespace, as kubelets
//! before user namespace support send it. kubelet sends the pod's mapping again in every container's
//! NamespaceOption; a container can only run in its pod's user namespace (the pod's network, IPC and
//! UTS namespaces belong to it), so anything else is refused.

use k8s_cri::v1::{ContainerConfig, IdMapping as CriIdMapping, NamespaceMode, NamespaceOption, PodSandboxConfig};

use super::CriError;
use crate::runtime::userns::{IdMap, IdMapping, PodUserNamespace, UsernsError};

fn to_map(maps: &[CriIdMapping]) -> Vec<IdMapping> {
    maps.iter().map(|m| IdMapping { container_id: m.container_id, host_id: m.host_id, length: m.length }).collect()
}

/// The pod's mapping when it asks for a user namespace of its own, None for the node's.
pub(crate) fn pod_user_namespace(options: &NamespaceOption) -> Result<Option<IdMap>, CriError> {
    let Some(userns) = &options.userns_options else { return Ok(None) };
    match userns.mode() {
        NamespaceMode::Node => Ok(None),
        NamespaceMode::Container | NamespaceMode::Target => Err(CriError::InvalidArgument(format!(
            "userns_options.mode {:?}: only POD and NODE are valid for user namespaces",
            userns.mode()
        ))),
        NamespaceMode::Pod => {
            // A namespace shared with the node is owned by the node's user namespace; a process in
            // the pod's could not join it (setns(2) needs CAP_SYS_ADMIN in the owner). Kubernetes'
            // validation refuses hostNetwork/hostIPC/hostPID together with hostUsers: false too.
            for (name, mode) in [("network", options.network()), ("ipc", options.ipc()), ("pid", options.pid())] {
                if mode == NamespaceMode::Node {
                    return Err(CriError::InvalidArgument(format!("a pod with a user namespace cannot use the node's {name} namespace")));
                }
            }
            let map = IdMap { uids: to_map(&userns.uids), gids: to_map(&userns.gids) };
            map.validate().map_err(userns_error)?;
            Ok(Some(map))
        }
    }
}

/// The user namespace a container of `pod` runs in (the pod's, pinned at `userns_path`), after
/// checking that the container's own request agrees with it: same mode, same mappings, no privileged
/// container (it would need the node's devices and a writable /sys), no mount with mappings of its own.
pub(crate) fn container_user_namespace(config: &ContainerConfig, pod: &PodSandboxConfig, userns_path: &str) -> Result<Option<PodUserNamespace>, CriError> {
    let Some(map) = container_mapping(config, pod)? else { return Ok(None) };
    if userns_path.is_empty() {
        return Err(CriError::FailedPrecondition("the pod sandbox asks for a user namespace but has none pinned; recreate the pod".into()));
    }
    Ok(Some(PodUserNamespace { path: userns_path.into(), map }))
}

fn container_mapping(config: &ContainerConfig, pod: &PodSandboxConfig) -> Result<Option<IdMap>, CriError> {
    let pod_options = super::sandbox_status::namespace_options(pod);
    let pod_map = pod_user_namespace(&pod_options)?;
    let sc = config.linux.as_ref().and_then(|l| l.security_context.as_ref());
    if let Some(userns) = sc.and_then(|s| s.namespace_options.as_ref()).and_then(|n| n.userns_options.as_ref()) {
        match (userns.mode(), &pod_map) {
            (NamespaceMode::Node, None) => {}
            (NamespaceMode::Pod, Some(map)) => {
                let asked = IdMap { uids: to_map(&userns.uids), gids: to_map(&userns.gids) };
                if asked != *map && !(asked.uids.is_empty() && asked.gids.is_empty()) {
                    return Err(CriError::InvalidArgument("userns_options: the container's mappings differ from its pod's".into()));
                }
            }
            (NamespaceMode::Pod, None) => {
                return Err(CriError::FailedPrecondition("userns_options.mode POD: the pod sandbox was created without a user namespace".into()))
            }
            (NamespaceMode::Node, Some(_)) => {
                return Err(CriError::InvalidArgument("userns_options.mode NODE: the pod sandbox runs in a user namespace of its own".into()))
            }
            (mode, _) => return Err(CriError::InvalidArgument(format!("userns_options.mode {mode:?}: only POD and NODE are valid for user namespaces"))),
        }
    }
    let Some(map) = pod_map else { return Ok(None) };
    if sc.is_some_and(|s| s.privileged) {
        return Err(CriError::InvalidArgument("a privileged container cannot run in a pod with a user namespace".into()));
    }
    for m in &config.mounts {
        let (uids, gids) = (to_map(&m.uid_mappings), to_map(&m.gid_mappings));
        if (!uids.is_empty() || !gids.is_empty()) && (uids != map.uids || gids != map.gids) {
            return Err(CriError::InvalidArgument(format!(
                "mount {:?}: id mappings other than the pod's are not supported (volumes are idmapped with the pod's mapping)",
                m.container_path
            )));
        }
    }
    Ok(Some(map))
}

/// A malformed mapping is the request's fault; a node that cannot do it is a FailedPrecondition.
pub(crate) fn userns_error(e: UsernsError) -> CriError {
    match e {
        UsernsError::InvalidMapping(_) => CriError::InvalidArgument(e.to_string()),
        UsernsError::Unsupported(_) => CriError::FailedPrecondition(e.to_string()),
        UsernsError::Helper(_) | UsernsError::Namespace(_) => CriError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, UserNamespace};

    fn userns(mode: NamespaceMode, host: u32) -> UserNamespace {
        let m = vec![CriIdMapping { host_id: host, container_id: 0, length: 65536 }];
        UserNamespace { mode: mode as i32, uids: m.clone(), gids: m }
    }

    fn pod(u: Option<UserNamespace>) -> PodSandboxConfig {
        let ns = NamespaceOption { userns_options: u, ..Default::default() };
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig { security_context: Some(LinuxSandboxSecurityContext { namespace_options: Some(ns), ..Default::default() }), ..Default::default() }),
            ..Default::default()
        }
    }

    fn container(u: Option<UserNamespace>) -> ContainerConfig {
        let ns = NamespaceOption { userns_options: u, ..Default::default() };
        ContainerConfig {
            linux: Some(LinuxContainerConfig { security_context: Some(LinuxContainerSecurityContext { namespace_options: Some(ns), ..Default::default() }), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_modes() {
        let ns = |u: Option<UserNamespace>| NamespaceOption { userns_options: u, ..Default::default() };
        assert_eq!(pod_user_namespace(&ns(None)).unwrap(), None);
        assert_eq!(pod_user_namespace(&ns(Some(userns(NamespaceMode::Node, 0)))).unwrap(), None);
        let map = pod_user_namespace(&ns(Some(userns(NamespaceMode::Pod, 65536)))).unwrap().unwrap();
        assert_eq!(map.root_on_host(), (65536, 65536));
        assert!(matches!(pod_user_namespace(&ns(Some(userns(NamespaceMode::Container, 65536)))), Err(CriError::InvalidArgument(_))));
        assert!(matches!(pod_user_namespace(&ns(Some(userns(NamespaceMode::Pod, 0)))), Err(CriError::InvalidArgument(_))));
        let host_net = NamespaceOption { network: NamespaceMode::Node as i32, userns_options: Some(userns(NamespaceMode::Pod, 65536)), ..Default::default() };
        assert!(matches!(pod_user_namespace(&host_net), Err(CriError::InvalidArgument(_))));
    }

    #[test]
    fn containers_follow_their_pod() {
        let p = pod(Some(userns(NamespaceMode::Pod, 65536)));
        assert!(container_mapping(&container(Some(userns(NamespaceMode::Pod, 65536))), &p).unwrap().is_some());
        assert!(container_mapping(&container(None), &p).unwrap().is_some());
        assert!(matches!(container_mapping(&container(Some(userns(NamespaceMode::Pod, 131072))), &p), Err(CriError::InvalidArgument(_))));
        assert!(matches!(container_mapping(&container(Some(userns(NamespaceMode::Pod, 65536))), &pod(None)), Err(CriError::FailedPrecondition(_))));
        assert!(container_mapping(&container(None), &pod(None)).unwrap().is_none());
    }
}
