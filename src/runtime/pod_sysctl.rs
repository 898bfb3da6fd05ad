//! Pod sysctls (CRI `LinuxPodSandboxConfig.sysctls`) written inside the pod's pinned network and
//! IPC namespaces. Namespaced sysctls are looked up in the writer's own namespaces (net.* in its
//! network namespace, the IPC ones in its IPC namespace), so a short-lived thread joins the pinned
//! namespaces with setns(2) and writes `/proc/sys/<name>`; the daemon's other threads never move.
//! Which sysctl belongs to which namespace is decided in `security.rs` (and checked by the CRI
//! layer before anything is created). Must not depend on cri/.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use super::security::{sysctl_path, SysctlNamespace};

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("pod has no {0:?} namespace of its own to set sysctl {1:?} in")]
    NoNamespace(SysctlNamespace, String),
    #[error("joining {path}: {source}")]
    Join { path: PathBuf, source: nix::Error },
    /// The kernel refused the name or value (ENOENT: no such sysctl; EINVAL: bad value).
    #[error("setting sysctl {name}={value:?}: {source}")]
    Write { name: String, value: String, source: std::io::Error },
    #[error("sysctl thread: {0}")]
    Thread(String),
}

/// One sysctl to set: name (dots or slashes), value, and its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSysctl {
    pub name: String,
    pub value: String,
    pub namespace: SysctlNamespace,
}

/// Write `sysctls` in the namespaces pinned at `netns` / `ipcns`.
pub fn apply(netns: Option<&Path>, ipcns: Option<&Path>, sysctls: &[PodSysctl]) -> Result<(), SysctlError> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let (netns, ipcns) = (netns.map(Path::to_path_buf), ipcns.map(Path::to_path_buf));
    let sysctls = sysctls.to_vec();
    std::thread::Builder::new()
        .name("pod-sysctls".into())
        .spawn(move || apply_in_this_thread(netns.as_deref(), ipcns.as_deref(), &sysctls))
        .map_err(|e| SysctlError::Thread(e.to_string()))?
        .join()
        .map_err(|_| SysctlError::Thread("panicked".into()))?
}

fn apply_in_this_thread(netns: Option<&Path>, ipcns: Option<&Path>, sysctls: &[PodSysctl]) -> Result<(), SysctlError> {
    // setns(2) of net/ipc affects only this thread; it ends with the writes.
    for (ns, path, flag) in [(SysctlNamespace::Net, netns, CloneFlags::CLONE_NEWNET), (SysctlNamespace::Ipc, ipcns, CloneFlags::CLONE_NEWIPC)] {
        let Some(first) = sysctls.iter().find(|s| s.namespace == ns) else { continue };
        let path = path.ok_or_else(|| SysctlError::NoNamespace(ns, first.name.clone()))?;
        let file = std::fs::File::open(path).map_err(|e| SysctlError::Join { path: path.to_path_buf(), source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)) })?;
        setns(&file, flag).map_err(|source| SysctlError::Join { path: path.to_path_buf(), source })?;
    }
    for s in sysctls {
        let proc_path = Path::new("/proc/sys").join(sysctl_path(&s.name));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(&proc_path)?;
            f.write_all(s.value.as_bytes())
        };
        write().map_err(|source| SysctlError::Write { name: s.name.clone(), value: s.value.clone(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::namespaces::{pin, unpin, PodNamespaces};

    #[test]
    fn sysctls_land_in_the_pinned_namespaces_only() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = pin(dir.path(), PodNamespaces { net: true, ipc: true, uts: false }, "").unwrap();
        let host_shmmni = std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap();
        let sysctls = vec![
            PodSysctl { name: "net.ipv4.ip_unprivileged_port_start".into(), value: "81".into(), namespace: SysctlNamespace::Net },
            PodSysctl { name: "kernel.shmmni".into(), value: "1234".into(), namespace: SysctlNamespace::Ipc },
        ];
        apply(pinned.net.as_deref(), pinned.ipc.as_deref(), &sysctls).unwrap();
        let read_in = |ns: &str, path: &Path, file: &str| {
            let out = std::process::Command::new("nsenter").arg(format!("--{ns}={}", path.display())).args(["cat", file]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(read_in("net", pinned.net.as_ref().unwrap(), "/proc/sys/net/ipv4/ip_unprivileged_port_start"), "81");
        assert_eq!(read_in("ipc", pinned.ipc.as_ref().unwrap(), "/proc/sys/kernel/shmmni"), "1234");
        assert_eq!(std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(), host_shmmni, "the host's value is untouched");
        let bad = vec![PodSysctl { name: "net.ipv4.no_such_sysctl".into(), value: "1".into(), namespace: SysctlNamespace::Net }];
        assert!(matches!(apply(pinned.net.as_deref(), None, &bad), Err(SysctlError::Write { .. })));
        let no_ipc = vec![PodSysctl { name: "kernel.shmmni".into(), value: "1".into(), namespace: SysctlNamespace::Ipc }];
        assert!(matches!(apply(pinned.net.as_deref(), None, &no_ipc), Err(SysctlError::NoNamespace(..))));
        for p in pinned.paths() {
            unpin(p).unwrap();
        }
    }
}
