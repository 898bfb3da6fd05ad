//! Pinning a pod's namespaces: new network, IPC and UTS namespaces held open by bind-mounting their
//! nsfs files onto plain files under the sandbox's state dir, so they outlive any process — no pause
//! process is needed. Containers join them by path (`lxc.namespace.share.<ns> = <file>`).
//!
//! Namespaces are created from a dedicated, short-lived thread: unshare(2) of CLONE_NEWNET,
//! CLONE_NEWIPC and CLONE_NEWUTS affects only the calling thread, so the daemon's other threads stay
//! in the host namespaces, and the thread is never reused for anything else.
//! Must not depend on cri/ or on the network layer (which configures the netns afterwards).

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("creating {what} namespace: {source}")]
    Unshare { what: String, source: nix::Error },
    #[error("setting hostname {hostname:?}: {source}")]
    Hostname { hostname: String, source: nix::Error },
    #[error("pinning {kind} namespace at {path}: {source}")]
    Pin { kind: &'static str, path: PathBuf, source: nix::Error },
    #[error("releasing namespace file {path}: {source}")]
    Unpin { path: PathBuf, source: nix::Error },
    #[error("bringing up loopback in the new network namespace: {0}")]
    Loopback(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("namespace thread died: {0}")]
    Thread(String),
}

/// File names of the pins under a sandbox dir (`userns` only for pods with a user namespace of their
/// own, pinned by `userns.rs`).
pub const PIN_FILES: [&str; 4] = ["netns", "ipcns", "utsns", "userns"];

/// Which namespaces a pod gets of its own (false = the host's, from NamespaceOption NODE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNamespaces {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// Paths of the pinned namespace files (None where the pod uses the host's namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's user namespace (owner of the three above), for `hostUsers: false` pods.
    pub user: Option<PathBuf>,
}

impl PinnedNamespaces {
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.net.iter().chain(self.ipc.iter()).chain(self.uts.iter()).chain(self.user.iter())
    }
}

/// Create and pin the requested namespaces under `dir` (files `netns`, `ipcns`, `utsns`). The UTS
/// namespace gets `hostname`; the network namespace gets its loopback interface up. On error nothing
/// stays pinned.
pub fn pin(dir: &Path, want: PodNamespaces, hostname: &str) -> Result<PinnedNamespaces, NamespaceError> {
    std::fs::create_dir_all(dir).map_err(|source| NamespaceError::Io { path: dir.to_path_buf(), source })?;
    let dir = dir.to_path_buf();
    let hostname = hostname.to_string();
    let handle = std::thread::Builder::new()
        .name("pin-namespaces".into())
        .spawn(move || pin_in_this_thread(&dir, want, &hostname))
        .map_err(|e| NamespaceError::Thread(e.to_string()))?;
    handle.join().map_err(|_| NamespaceError::Thread("panicked".into()))?
}

fn pin_in_this_thread(dir: &Path, want: PodNamespaces, hostname: &str) -> Result<PinnedNamespaces, NamespaceError> {
    let mut flags = CloneFlags::empty();
    let mut names = Vec::new();
    for (wanted, flag, name) in [(want.net, CloneFlags::CLONE_NEWNET, "net"), (want.ipc, CloneFlags::CLONE_NEWIPC, "ipc"), (want.uts, CloneFlags::CLONE_NEWUTS, "uts")] {
        if wanted {
            flags |= flag;
            names.push(name);
        }
    }
    let mut pinned = PinnedNamespaces::default();
    if flags.is_empty() {
        return Ok(pinned);
    }
    unshare(flags).map_err(|source| NamespaceError::Unshare { what: names.join("+"), source })?;
    let result = (|| {
        if want.uts && !hostname.is_empty() {
            nix::unistd::sethostname(hostname).map_err(|source| NamespaceError::Hostname { hostname: hostname.to_string(), source })?;
        }
        if want.net {
            bring_up_loopback()?;
            pinned.net = Some(pin_one(dir, "net", "netns")?);
        }
        if want.ipc {
            pinned.ipc = Some(pin_one(dir, "ipc", "ipcns")?);
        }
        if want.uts {
            pinned.uts = Some(pin_one(dir, "uts", "utsns")?);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(pinned),
        Err(e) => {
            for path in pinned.paths() {
                let _ = unpin(path);
            }
            Err(e)
        }
    }
}

/// `ip link set lo up`, run from this thread so the child starts in the thread's new netns.
fn bring_up_loopback() -> Result<(), NamespaceError> {
    let out = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .map_err(|e| NamespaceError::Loopback(format!("running ip: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NamespaceError::Loopback(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

fn pin_one(dir: &Path, kind: &'static str, file: &str) -> Result<PathBuf, NamespaceError> {
    let target = dir.join(file);
    std::fs::File::create(&target).map_err(|source| NamespaceError::Io { path: target.clone(), source })?;
    let source = format!("/proc/thread-self/ns/{kind}");
    mount(Some(source.as_str()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|source| NamespaceError::Pin { kind, path: target.clone(), source })?;
    Ok(target)
}

/// Release a pinned namespace file: detach the bind mount and delete the file. Idempotent. The
/// namespace itself disappears once no process is left in it.
pub fn unpin(path: &Path) -> Result<(), NamespaceError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (already unpinned); ENOENT: gone.
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => return Err(NamespaceError::Unpin { path: path.to_path_buf(), source }),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NamespaceError::Io { path: path.to_path_buf(), source: e }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn pinned_namespaces_differ_from_ours_and_unpin_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = pin(dir.path(), PodNamespaces { net: true, ipc: true, uts: true }, "pod-host").unwrap();
        let ours = |k: &str| std::fs::metadata(format!("/proc/self/ns/{k}")).unwrap().ino();
        let net = pinned.net.clone().unwrap();
        assert_ne!(std::fs::metadata(&net).unwrap().ino(), ours("net"), "a new netns is pinned");
        assert_ne!(std::fs::metadata(pinned.uts.as_ref().unwrap()).unwrap().ino(), ours("uts"));
        assert_ne!(std::fs::metadata(pinned.ipc.as_ref().unwrap()).unwrap().ino(), ours("ipc"));
        // The pinned netns has loopback up (nsenter from util-linux reads the file by path).
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", net.display()))
            .args(["ip", "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("UP"), "{}", String::from_utf8_lossy(&out.stdout));
        let out = std::process::Command::new("nsenter")
            .arg(format!("--uts={}", pinned.uts.as_ref().unwrap().display()))
            .arg("hostname")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod-host");
        for p in pinned.paths() {
            unpin(p).unwrap();
            unpin(p).unwrap(); // idempotent
            assert!(!p.exists());
        }
    }

    #[test]
    fn host_namespaces_pin_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = pin(dir.path(), PodNamespaces { net: false, ipc: false, uts: false }, "x").unwrap();
        assert_eq!(pinned, PinnedNamespaces::default());
    }
}
