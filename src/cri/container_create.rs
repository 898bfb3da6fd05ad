//! CreateContainer: resolve the (already pulled) image, mount the container's overlay rootfs, work
//! out its process (command, env, cwd, user) from the image config and the CRI request, and have the
//! runtime write its configuration. Nothing runs until StartContainer.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, CreateContainerRequest, CreateContainerResponse, MountPropagation, NamespaceMode};
use prost::Message;

use super::rollback::Rollback;
use super::timing::PhaseTimer;
use super::sandbox_status::{namespace_options, sandbox_config};
use super::{now_nanos, required_image, CriError, CriService};
use crate::image::manifest::{parse_config, RuntimeConfig};
use crate::image::passwd::{resolve_user, UserRequest};
use crate::model::ids::{container_name, new_id};
use crate::model::sandbox::can_create_container;
use crate::runtime::{BindMount, ContainerSpec, DeviceNode, ProcessUser, Propagation, SharedNamespaces};
use crate::store::records::{ContainerPhase, ContainerRecord, SandboxPhase, SandboxRecord};
use crate::store::StoreError;

impl CriService {
    pub async fn create_container(&self, req: CreateContainerRequest) -> Result<CreateContainerResponse, CriError> {
        super::required_id(&req.pod_sandbox_id, "pod_sandbox_id")?;
        let config = req.config.ok_or_else(|| CriError::InvalidArgument("config is required".into()))?;
        let meta = config.metadata.clone().ok_or_else(|| CriError::InvalidArgument("config.metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(CriError::InvalidArgument("config.metadata.name is required".into()));
        }
        let image_name = required_image(config.image.as_ref(), "config.image.image")?;
        let sandbox = self.require_sandbox(&req.pod_sandbox_id)?;
        let _pod = self.pod_locks.lock(&sandbox.id).await;
        // Re-read under the lock: a concurrent StopPodSandbox may have just finished.
        let sandbox = self.store.sandbox(&sandbox.id)?.ok_or_else(|| CriError::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
        if !can_create_container(SandboxPhase::try_from(sandbox.phase).unwrap_or(SandboxPhase::Unspecified)) {
            return Err(CriError::FailedPrecondition(format!("pod sandbox {} is not ready; containers can only be created in a ready sandbox", sandbox.id)));
        }
        let image = self
            .images
            .resolve(&image_name)?
            .ok_or_else(|| CriError::NotFound(format!("image {image_name:?} not found: pull it before creating a container")))?;

        let mut timer = PhaseTimer::new("CreateContainer");
        let id = new_id();
        let _ctr = self.container_locks.lock(&id).await;
        let name = container_name(&meta.name, &sandbox.name, meta.attempt);
        let mut record = ContainerRecord {
            schema_version: crate::store::RECORD_SCHEMA_VERSION,
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: name.clone(),
            phase: ContainerPhase::Creating as i32,
            created_at_unix_nanos: now_nanos(),
            config: config.encode_to_vec(),
            image: image_name.clone(),
            image_id: image.id.clone(),
            ..Default::default()
        };
        match self.store.create_container(&record) {
            Ok(()) => {}
            Err(StoreError::NameReserved { holder, .. }) => {
                return Err(CriError::AlreadyExists(format!("container name {name:?} is reserved for {holder}")));
            }
            Err(e) => return Err(e.into()),
        }
        timer.mark("store_reserve");
        let mut undo = Rollback::new();
        {
            let store = self.store.clone();
            let record = record.clone();
            undo.push("release the container record and name", move || async move { store.remove_container(&record).map_err(|e| e.to_string()) });
        }
        match self.set_up_container(&config, &sandbox, &image, &mut record, &mut undo, &mut timer).await {
            Ok(()) => {
                undo.commit();
                timer.finish(&id);
                tracing::info!(container_id = %id, pod_sandbox_id = %sandbox.id, %name, "container created");
                Ok(CreateContainerResponse { container_id: id })
            }
            Err(e) => {
                undo.run().await;
                Err(e)
            }
        }
    }

    async fn set_up_container(
        &self,
        config: &ContainerConfig,
        sandbox: &SandboxRecord,
        image: &crate::store::records::ImageRecord,
        record: &mut ContainerRecord,
        undo: &mut Rollback,
        timer: &mut PhaseTimer,
    ) -> Result<(), CriError> {
        let id = record.id.clone();
        // Checked before the rootfs exists: bad security input leaves nothing to undo but the record.
        let pod = sandbox_config(sandbox);
        let security = super::security_context::container_security(config, &pod)?;
        // Resources and cgroup parent first: bad values are refused before anything is made.
        let cgroup = self.cgroup_spec(&pod, config.linux.as_ref().and_then(|l| l.resources.as_ref()))?;
        let userns = super::user_namespace::container_user_namespace(config, &pod, &sandbox.userns_path)?;
        let rootfs = match &userns {
            None => self.images.prepare_rootfs(&image.id, &id)?,
            // hostUsers: false: image layers idmapped through the pod's user namespace.
            Some(u) => {
                let bind = |layer: &Path, point: &Path| crate::runtime::userns::idmapped_bind(layer, point, &u.path);
                self.images.prepare_rootfs_idmapped(&image.id, &id, &bind, u.map.root_on_host())?
            }
        };
        timer.mark("rootfs_mount");
        {
            let images = self.images.clone();
            let id = id.clone();
            undo.push("release the rootfs", move || async move { images.release_rootfs(&id).map_err(|e| e.to_string()) });
        }
        let image_config = parse_config(&image.config_json).map_err(|e| CriError::Internal(format!("image {}: {e}", image.id)))?;
        let process = image_config.config.unwrap_or_default();

        let argv = container_argv(config, &process);
        if argv.is_empty() {
            return Err(CriError::InvalidArgument(format!("no command: neither the container config nor image {} has an entrypoint or cmd", record.image)));
        }
        let env = merged_env(process.env.as_deref().unwrap_or_default(), config);
        let cwd = if !config.working_dir.is_empty() {
            config.working_dir.clone()
        } else {
            process.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".to_string())
        };
        let sc = config.linux.as_ref().and_then(|l| l.security_context.as_ref());
        let user_request = UserRequest {
            image_user: process.user.clone().unwrap_or_default(),
            run_as_user: sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value),
            run_as_username: sc.map(|s| s.run_as_username.clone()).filter(|s| !s.is_empty()),
            run_as_group: sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value),
            supplemental_groups: sc.map(|s| s.supplemental_groups.clone()).unwrap_or_default(),
            strict_supplemental_groups: security.strict_supplemental_groups,
        };
        let user = resolve_user(&rootfs.merged, &user_request).map_err(|e| CriError::InvalidArgument(format!("container user: {e}")))?;

        let mut mounts = Vec::new();
        for m in &config.mounts {
            mounts.push(bind_mount(m)?);
        }
        // The pod's resolv.conf and hostname, unless kubelet mounts its own there.
        for (source, destination) in [(&sandbox.resolv_conf_path, "/etc/resolv.conf"), (&sandbox.hostname_path, "/etc/hostname")] {
            if !source.is_empty() && !mounts.iter().any(|m: &BindMount| m.destination == destination) {
                mounts.push(BindMount { source: source.into(), destination: destination.to_string(), readonly: false, propagation: Propagation::Private, is_dir: false });
            }
        }
        let devices = config
            .devices
            .iter()
            .map(|d| DeviceNode::from_host(d.host_path.clone().into(), d.container_path.clone(), &d.permissions))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CriError::InvalidArgument)?;

        let options = namespace_options(&pod);
        let opt_path = |p: &String| (!p.is_empty()).then(|| PathBuf::from(p));
        let namespaces = SharedNamespaces {
            net: opt_path(&sandbox.netns_path),
            ipc: opt_path(&sandbox.ipcns_path),
            uts: opt_path(&sandbox.utsns_path),
            // The pod's shared PID namespace, held by its infra process (NamespaceMode POD).
            pid: (sandbox.infra_pid > 0).then(|| PathBuf::from(format!("/proc/{}/ns/pid", sandbox.infra_pid))),
            user: userns,
            host_net: options.network() == NamespaceMode::Node,
            host_ipc: options.ipc() == NamespaceMode::Node,
            host_pid: options.pid() == NamespaceMode::Node,
        };
        let log_path = (!pod.log_directory.is_empty() && !config.log_path.is_empty()).then(|| Path::new(&pod.log_directory).join(&config.log_path));
        let signal = stop_signal(process.stop_signal.as_deref());
        timer.mark("resolve_process");
        let spec = ContainerSpec {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            rootfs: rootfs.merged.clone(),
            argv,
            env,
            cwd,
            user: ProcessUser { uid: user.uid, gid: user.gid, additional_gids: user.additional_gids.clone() },
            hostname: pod.hostname.clone(),
            namespaces,
            mounts,
            devices,
            log_path: log_path.clone(),
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            tty: config.tty,
            stop_signal: signal,
            cgroup_parent: pod.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default(),
            security: security.spec,
            cgroup,
        };
        self.runtime.create(&spec).await?;
        timer.mark("lxc_config");
        {
            let runtime = self.runtime.clone();
            undo.push("remove the runtime container", move || async move { runtime.remove(&id).await.map_err(|e| e.to_string()) });
        }
        record.log_path = log_path.map(|p| p.display().to_string()).unwrap_or_default();
        record.uid = i64::from(user.uid);
        record.gid = i64::from(user.gid);
        record.supplemental_gids = user.additional_gids.iter().map(|g| i64::from(*g)).collect();
        record.stop_signal = signal;
        record.phase = ContainerPhase::Created as i32;
        self.store.update_container(record)?;
        timer.mark("store_created");
        Ok(())
    }
}

/// CRI: `command` replaces the image Entrypoint and `args` replaces its Cmd; with `args` alone the
/// image Entrypoint stays (Docker's and kubelet's rule).
fn container_argv(config: &ContainerConfig, image: &RuntimeConfig) -> Vec<String> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    if !config.command.is_empty() {
        config.command.iter().chain(config.args.iter()).cloned().collect()
    } else if !config.args.is_empty() {
        entrypoint.into_iter().chain(config.args.iter().cloned()).collect()
    } else {
        entrypoint.into_iter().chain(cmd).collect()
    }
}

/// Image env, then CRI envs overriding by name; order kept, duplicates removed.
fn merged_env(image_env: &[String], config: &ContainerConfig) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    for kv in &config.envs {
        set(&kv.key, &kv.value);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn bind_mount(m: &k8s_cri::v1::Mount) -> Result<BindMount, CriError> {
    if m.container_path.is_empty() || !m.container_path.starts_with('/') {
        return Err(CriError::InvalidArgument(format!("mount container_path {:?} must be absolute", m.container_path)));
    }
    if m.host_path.is_empty() || !m.host_path.starts_with('/') {
        return Err(CriError::InvalidArgument(format!("mount host_path {:?} must be absolute", m.host_path)));
    }
    let source = PathBuf::from(&m.host_path);
    // kubelet expects a missing host path to be created as a directory (containerd and CRI-O do so).
    if std::fs::symlink_metadata(&source).is_err() {
        std::fs::create_dir_all(&source).map_err(|e| CriError::Internal(format!("creating mount source {}: {e}", source.display())))?;
    }
    let is_dir = std::fs::metadata(&source).map(|md| md.is_dir()).unwrap_or(true);
    let propagation = match m.propagation() {
        MountPropagation::PropagationPrivate => Propagation::Private,
        MountPropagation::PropagationHostToContainer => Propagation::HostToContainer,
        MountPropagation::PropagationBidirectional => Propagation::Bidirectional,
    };
    Ok(BindMount { source, destination: m.container_path.clone(), readonly: m.readonly, propagation, is_dir })
}

/// An image StopSignal ("SIGUSR1", "USR1", "10") as a number; SIGTERM when absent or unknown.
fn stop_signal(name: Option<&str>) -> i32 {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return libc::SIGTERM;
    };
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<nix::sys::signal::Signal>().map(|s| s as i32).unwrap_or(libc::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::KeyValue;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> RuntimeConfig {
        RuntimeConfig {
            entrypoint: Some(entrypoint.iter().map(|s| s.to_string()).collect()),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_override_entrypoint_and_cmd() {
        let img = image(&["/entry"], &["default"]);
        let cfg = |command: &[&str], args: &[&str]| ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(container_argv(&cfg(&[], &[]), &img), vec!["/entry", "default"]);
        assert_eq!(container_argv(&cfg(&[], &["x"]), &img), vec!["/entry", "x"]);
        assert_eq!(container_argv(&cfg(&["sh"], &[]), &img), vec!["sh"]);
        assert_eq!(container_argv(&cfg(&["sh"], &["-c", "true"]), &img), vec!["sh", "-c", "true"]);
    }

    #[test]
    fn env_merges_with_cri_winning() {
        let cfg = ContainerConfig {
            envs: vec![KeyValue { key: "B".into(), value: "cri".into() }, KeyValue { key: "C".into(), value: "new".into() }],
            ..Default::default()
        };
        assert_eq!(merged_env(&["A=1".into(), "B=image".into()], &cfg), vec!["A=1", "B=cri", "C=new"]);
    }

    #[test]
    fn stop_signals() {
        assert_eq!(stop_signal(None), libc::SIGTERM);
        assert_eq!(stop_signal(Some("SIGUSR1")), libc::SIGUSR1);
        assert_eq!(stop_signal(Some("usr1")), libc::SIGUSR1);
        assert_eq!(stop_signal(Some("9")), 9);
        assert_eq!(stop_signal(Some("SIGNOPE")), libc::SIGTERM);
    }
}
