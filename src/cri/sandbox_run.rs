//! RunPodSandbox: reserve the pod's name, pin its namespaces, write its resolv.conf and hostname,
//! hand the netns to the network layer, record it Ready. Each step registers its undo; a failure
//! undoes what was done, in reverse, and returns the first error.

use std::path::Path;

use k8s_cri::v1::{NamespaceMode, NamespaceOption, PodSandboxConfig, RunPodSandboxRequest, RunPodSandboxResponse};
use prost::Message;

use super::rollback::Rollback;
use super::sandbox_status::namespace_options;
use super::timing::PhaseTimer;
use super::{now_nanos, CriError, CriService};
use crate::model::ids::{new_id, sandbox_name};
use crate::network::{PodNetworkRequest, PortMapping};
use crate::runtime::namespaces::{self, PodNamespaces};
use crate::runtime::pod_sysctl::PodSysctl;
use crate::runtime::userns::{self, IdMap};
use crate::store::records::{SandboxPhase, SandboxRecord};
use crate::store::StoreError;

/// The runtime handler used for `""` (kubelet's default RuntimeClass).
pub const DEFAULT_HANDLER: &str = "lxc";

/// The pod-level security input, validated before anything is created.
struct PodSecurity {
    /// The pod's user namespace mappings (`hostUsers: false`).
    userns: Option<IdMap>,
    /// Namespaced sysctls to set inside the pod's namespaces.
    sysctls: Vec<PodSysctl>,
}

impl CriService {
    pub async fn run_pod_sandbox(&self, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse, CriError> {
        let config = req.config.ok_or_else(|| CriError::InvalidArgument("config is required".into()))?;
        let meta = config.metadata.clone().ok_or_else(|| CriError::InvalidArgument("config.metadata is required".into()))?;
        if meta.name.is_empty() || meta.namespace.is_empty() {
            return Err(CriError::InvalidArgument("config.metadata.name and .namespace are required".into()));
        }
        let handler = if req.runtime_handler.is_empty() { DEFAULT_HANDLER.to_string() } else { req.runtime_handler.clone() };
        if !self.config.runtime_handlers.iter().any(|h| h == &handler) {
            return Err(CriError::InvalidArgument(format!(
                "unknown runtime handler {handler:?}; this node serves {:?}",
                self.config.runtime_handlers
            )));
        }
        let options = namespace_options(&config);
        if options.pid() == NamespaceMode::Target {
            return Err(CriError::InvalidArgument("PID namespace mode TARGET is only valid for containers".into()));
        }
        // Bad security input is refused before anything exists.
        let security = PodSecurity {
            userns: super::user_namespace::pod_user_namespace(&options)?,
            sysctls: super::security_context::pod_sysctls(&config, &options)?,
        };
        let mut timer = PhaseTimer::new("RunPodSandbox");
        let id = new_id();
        let _pod = self.pod_locks.lock(&id).await;
        let name = sandbox_name(&meta.name, &meta.namespace, &meta.uid, meta.attempt);
        let mut record = SandboxRecord {
            schema_version: crate::store::RECORD_SCHEMA_VERSION,
            id: id.clone(),
            name: name.clone(),
            phase: SandboxPhase::Creating as i32,
            created_at_unix_nanos: now_nanos(),
            config: config.encode_to_vec(),
            runtime_handler: handler,
            ..Default::default()
        };
        match self.store.create_sandbox(&record) {
            Ok(()) => {}
            Err(StoreError::NameReserved { holder, .. }) => {
                return Err(CriError::AlreadyExists(format!("pod sandbox name {name:?} is reserved for {holder}")));
            }
            Err(e) => return Err(e.into()),
        }
        timer.mark("store_reserve");
        let mut undo = Rollback::new();
        {
            let store = self.store.clone();
            let record = record.clone();
            undo.push("release the sandbox record and name", move || async move { store.remove_sandbox(&record).map_err(|e| e.to_string()) });
        }
        match self.set_up_sandbox(&config, &options, security, &mut record, &mut undo, &mut timer).await {
            Ok(()) => {
                undo.commit();
                timer.finish(&id);
                tracing::info!(pod_sandbox_id = %id, %name, "pod sandbox ready");
                Ok(RunPodSandboxResponse { pod_sandbox_id: id })
            }
            Err(e) => {
                undo.run().await;
                Err(e)
            }
        }
    }

    async fn set_up_sandbox(
        &self,
        config: &PodSandboxConfig,
        options: &NamespaceOption,
        security: PodSecurity,
        record: &mut SandboxRecord, undo: &mut Rollback, timer: &mut PhaseTimer) -> Result<(), CriError> {
        let dir = self.sandbox_dir(&record.id);
        std::fs::create_dir_all(&dir).map_err(|e| CriError::Internal(format!("creating {}: {e}", dir.display())))?;
        {
            let dir = dir.clone();
            undo.push("remove the sandbox dir", move || async move {
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                }
            });
        }
        let host_net = options.network() == NamespaceMode::Node;
        let want = PodNamespaces {
            net: !host_net,
            ipc: options.ipc() != NamespaceMode::Node,
            // Host-network pods keep the host's hostname, as kubelet expects.
            uts: !host_net,
        };
        let meta = config.metadata.clone().unwrap_or_default();
        let hostname = if config.hostname.is_empty() { meta.name.clone() } else { config.hostname.clone() };
        let pin_dir = dir.clone();
        let pin_hostname = hostname.clone();
        let PodSecurity { userns, sysctls } = security;
        let pinned = match userns {
            None => tokio::task::spawn_blocking(move || namespaces::pin(&pin_dir, want, &pin_hostname))
                .await
                .map_err(|e| CriError::Internal(format!("namespace task: {e}")))??,
            // hostUsers: false: the namespaces are created inside the pod's user namespace by a
            // helper process (see runtime/userns.rs).
            Some(map) => {
                let exe = std::env::current_exe().map_err(|e| CriError::Internal(format!("locating our own binary: {e}")))?;
                tokio::task::spawn_blocking(move || userns::pin(&exe, &pin_dir, &map, want, &pin_hostname))
                    .await
                    .map_err(|e| CriError::Internal(format!("user namespace task: {e}")))?
                    .map_err(super::user_namespace::userns_error)?
            }
        };
        {
            let paths: Vec<_> = pinned.paths().cloned().collect();
            undo.push("unpin namespaces", move || async move {
                for p in &paths {
                    namespaces::unpin(p).map_err(|e| e.to_string())?;
                }
                Ok(())
            });
        }
        let path_str = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        record.netns_path = path_str(&pinned.net);
        record.ipcns_path = path_str(&pinned.ipc);
        record.utsns_path = path_str(&pinned.uts);
        record.userns_path = path_str(&pinned.user);
        // Containers of the pod need idmapped mounts of the image layers and of the pod's files
        // (resolv.conf, hostname): refused now, with the reason, where the kernel or a filesystem
        // cannot do them, rather than at CreateContainer or silently without the mapping.
        if let Some(user) = pinned.user.clone() {
            let dirs = [self.images.layers_root().to_path_buf(), dir.clone()];
            tokio::task::spawn_blocking(move || userns::probe_idmapped_mounts(&user, &[&dirs[0], &dirs[1]]))
                .await
                .map_err(|e| CriError::Internal(format!("idmap probe task: {e}")))?
                .map_err(super::user_namespace::userns_error)?;
        }
        if !sysctls.is_empty() {
            let (net, ipc) = (pinned.net.clone(), pinned.ipc.clone());
            tokio::task::spawn_blocking(move || crate::runtime::pod_sysctl::apply(net.as_deref(), ipc.as_deref(), &sysctls))
                .await
                .map_err(|e| CriError::Internal(format!("sysctl task: {e}")))?
                .map_err(super::security_context::sysctl_error)?;
        }
        timer.mark("netns_pin");
        // Persisted before anything else can fail or the daemon die: recovery must know what is pinned.
        self.store.update_sandbox(record)?;
        timer.mark("store_pins");

        // A PID namespace shared by the pod's containers needs a process to hold it.
        if options.pid() == NamespaceMode::Pod {
            let pid = self.runtime.start_pod_infra(&dir).await?;
            record.infra_pid = pid;
            // Recorded at once, so a crash from here on still lets recovery stop it.
            self.store.update_sandbox(record)?;
            timer.mark("pid_infra");
            let runtime = self.runtime.clone();
            let dir = dir.clone();
            undo.push("stop the pod infra process", move || async move {
                runtime.stop_pod_infra(pid, &dir).await;
                Ok(())
            });
        }
        record.resolv_conf_path = write_file(&dir, "resolv.conf", &resolv_conf(config.dns_config.as_ref())?)?;
        let node_hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().to_string()).unwrap_or_default();
        let effective_hostname = if host_net { node_hostname } else { hostname };
        record.hostname_path = write_file(&dir, "hostname", &format!("{effective_hostname}\n"))?;
        timer.mark("pod_files");

        // The seam where the network layer takes over the pinned netns (CNI ADD). Host-network pods have
        // no netns of their own and skip it.
        if let Some(netns) = &pinned.net {
            let request = network_request(&record.id, config);
            // Registered before ADD: a chain that fails half-way is torn down too.
            {
                let network = self.network.clone();
                let request = request.clone();
                let netns = netns.clone();
                let store = self.store.clone();
                let id = record.id.clone();
                undo.push("tear down pod network", move || async move {
                    let state = store.sandbox(&id).ok().flatten().map(|r| r.network_state).unwrap_or_default();
                    network.teardown(&request, Some(&netns), &state).await.map_err(|e| e.to_string())
                });
            }
            let status = self.network.setup(&request, netns).await?;
            record.ips = status.ips;
            record.network_state = status.state;
            timer.mark("cni_add");
        }
        // The network state and Ready go in one transaction. A crash before it leaves the record in
        // Creating without state; recovery then tears the network down with the current config.
        record.phase = SandboxPhase::Ready as i32;
        self.store.update_sandbox(record)?;
        timer.mark("store_ready");
        Ok(())
    }
}

/// What the network layer needs to know about a pod.
pub(crate) fn network_request(sandbox_id: &str, config: &PodSandboxConfig) -> PodNetworkRequest {
    let meta = config.metadata.clone().unwrap_or_default();
    let port_mappings = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match k8s_cri::v1::Protocol::try_from(p.protocol) {
                Ok(k8s_cri::v1::Protocol::Udp) => "udp",
                Ok(k8s_cri::v1::Protocol::Sctp) => "sctp",
                _ => "tcp",
            }
            .to_string(),
            host_ip: p.host_ip.clone(),
        })
        .collect();
    PodNetworkRequest {
        sandbox_id: sandbox_id.to_string(),
        pod_name: meta.name,
        pod_namespace: meta.namespace,
        pod_uid: meta.uid,
        port_mappings,
        annotations: config.annotations.clone(),
    }
}

/// resolv.conf from the pod's DNSConfig (resolv.conf(5) keywords); without one, the host's file, as
/// kubelet's dnsPolicy Default would give.
fn resolv_conf(dns: Option<&k8s_cri::v1::DnsConfig>) -> Result<String, CriError> {
    match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut out = String::new();
            for s in &d.servers {
                out.push_str(&format!("nameserver {s}\n"));
            }
            if !d.searches.is_empty() {
                out.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            if !d.options.is_empty() {
                out.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            Ok(out)
        }
        _ => Ok(std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    }
}

fn write_file(dir: &Path, name: &str, content: &str) -> Result<String, CriError> {
    let path = dir.join(name);
    std::fs::write(&path, content).map_err(|e| CriError::Internal(format!("writing {}: {e}", path.display())))?;
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = k8s_cri::v1::DnsConfig { servers: vec!["10.96.0.10".into()], searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()], options: vec!["ndots:5".into()] };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap(),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
    }
}
