//! A container's confinement as LXC keys ([`render`], pure, part of the golden config files), and
//! the file work it needs before start: the seccomp policy file, mount points made in advance on a
//! read-only rootfs, the host's device nodes for a privileged container.
//!
//! How each CRI setting lands (lxc.container.conf(5) keys):
//! * capabilities → `lxc.cap.keep` (liblxc drops every other one from the bounding set before
//!   exec; root keeps the set as effective and permitted, another uid starts with none, as with
//!   runc). liblxc's attach (ExecSync) drops the same ones, and applies no_new_privs and seccomp.
//! * privileged → no `lxc.cap.keep` (all), `proc:rw sys:rw cgroup:rw`, every host device node,
//!   no seccomp, AppArmor unconfined, nothing masked.
//! * readonly_rootfs → `lxc.rootfs.options = ro`; mount points are created beforehand because
//!   liblxc's `create=` cannot create them on a read-only rootfs.
//! * masked_paths → two optional mount entries each: `/dev/null` bound over it (succeeds for a
//!   file) and a read-only tmpfs (succeeds for a directory); one of the two fails by design.
//!   liblxc's autodev `/dev/null` does not exist yet when mount entries are made, so the host's is used.
//! * readonly_paths → an optional read-only bind of the path onto itself (`relative` source).
//! * Without privileged, /sys and the cgroup tree are read-only and /proc is `mixed` (its `sys`
//!   and `sysrq-trigger` read-only), as runc mounts them.

use std::path::{Path, PathBuf};

use super::config::fstab_escape;
use super::{apparmor, seccomp};
use crate::runtime::security::{SeccompPolicy, SecuritySpec, ALL_CAPABILITIES};
use crate::runtime::{ContainerSpec, DeviceNode, RuntimeError};

/// The confinement keys for `sec`, in order. `seccomp_file` is where [`seccomp_policy`]'s text is
/// written when there is one.
pub fn render(sec: &SecuritySpec, seccomp_file: &Path) -> Vec<(&'static str, String)> {
    let mut keys: Vec<(&'static str, String)> = Vec::new();
    if sec.privileged {
        keys.push(("lxc.mount.auto", "proc:rw sys:rw cgroup:rw".into()));
        keys.push(("lxc.apparmor.profile", "unconfined".into()));
    } else {
        keys.push(("lxc.mount.auto", "proc:mixed sys:ro cgroup:ro".into()));
        keys.push(("lxc.apparmor.profile", apparmor::lxc_profile(&sec.apparmor).to_string()));
        // All of them: liblxc's default keeps every capability, also ones newer than our list.
        if sec.capabilities.len() < ALL_CAPABILITIES.len() {
            let keep = if sec.capabilities.is_empty() { "none".to_string() } else { sec.capabilities.join(" ") };
            keys.push(("lxc.cap.keep", keep));
        }
        if sec.seccomp != SeccompPolicy::Unconfined {
            keys.push(("lxc.seccomp.profile", seccomp_file.display().to_string()));
        }
    }
    if sec.no_new_privs {
        keys.push(("lxc.no_new_privs", "1".into()));
    }
    if sec.readonly_rootfs {
        keys.push(("lxc.rootfs.options", "ro".into()));
    }
    if !sec.privileged {
        for p in &sec.masked_paths {
            let target = fstab_escape(p.trim_start_matches('/'));
            keys.push(("lxc.mount.entry", format!("/dev/null {target} none bind,optional 0 0")));
            keys.push(("lxc.mount.entry", format!("tmpfs {target} tmpfs ro,nosuid,nodev,noexec,size=0,optional 0 0")));
        }
        for p in &sec.readonly_paths {
            let target = fstab_escape(p.trim_start_matches('/'));
            keys.push(("lxc.mount.entry", format!("{target} {target} none rbind,relative,ro,optional 0 0")));
        }
    }
    keys
}

/// The liblxc seccomp policy text for `sec`, None when it runs without seccomp.
pub fn seccomp_policy(sec: &SecuritySpec) -> Result<Option<String>, seccomp::SeccompError> {
    if sec.privileged {
        return Ok(None);
    }
    match &sec.seccomp {
        SeccompPolicy::Unconfined => Ok(None),
        SeccompPolicy::RuntimeDefault => Ok(Some(seccomp::runtime_default(&sec.capabilities))),
        SeccompPolicy::Profile(p) => seccomp::translate(p, &sec.capabilities).map(Some),
    }
}

/// The file work before the config is written: the seccomp policy file, the host's devices for a
/// privileged container (returned in the spec to render), the mount points of a read-only rootfs.
pub fn prepare(spec: &ContainerSpec, seccomp_file: &Path, seccomp_policy: Option<&str>) -> Result<ContainerSpec, RuntimeError> {
    let mut spec = spec.clone();
    if let Some(text) = seccomp_policy {
        std::fs::write(seccomp_file, text).map_err(|source| RuntimeError::Io { what: format!("writing {}", seccomp_file.display()), source })?;
    }
    if spec.security.privileged {
        let requested: Vec<String> = spec.devices.iter().map(|d| d.container_path.clone()).collect();
        spec.devices.extend(host_devices().into_iter().filter(|d| !requested.contains(&d.container_path)));
    }
    if spec.security.readonly_rootfs {
        prepare_readonly_rootfs(&spec)?;
    }
    Ok(spec)
}

/// Paths liblxc mounts on or into that live on the rootfs itself (not on /dev, /proc, /sys).
fn on_rootfs(path: &str) -> bool {
    let p = path.trim_start_matches('/');
    !["dev", "proc", "sys"].iter().any(|top| p == *top || p.starts_with(&format!("{top}/")))
}

/// With a read-only rootfs, create every mount point beforehand (in the container's writable
/// upper dir): /dev, /proc, /sys and the targets of bind mounts and devices on the rootfs.
pub fn prepare_readonly_rootfs(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let root = &spec.rootfs;
    for d in ["/dev", "/proc", "/sys"] {
        super::ensure_dir_in_root(root, d, 0, 0)?;
    }
    let mut files: Vec<&str> = Vec::new();
    for m in spec.mounts.iter().filter(|m| on_rootfs(&m.destination)) {
        if m.is_dir {
            super::ensure_dir_in_root(root, &m.destination, 0, 0)?;
        } else {
            files.push(&m.destination);
        }
    }
    files.extend(spec.devices.iter().map(|d| d.container_path.as_str()).filter(|p| on_rootfs(p)));
    for f in files {
        let (parent, name) = f.rsplit_once('/').unwrap_or(("", f));
        if name.is_empty() || name == ".." || name == "." {
            return Err(RuntimeError::Other(format!("mount target {f:?} is not a file path")));
        }
        super::ensure_dir_in_root(root, if parent.is_empty() { "/" } else { parent }, 0, 0)?;
        let dir = super::exec::resolve_in_root(root, parent).ok_or_else(|| RuntimeError::Other(format!("cannot resolve {parent:?} in the rootfs")))?;
        let target = dir.join(name);
        if std::fs::symlink_metadata(&target).is_err() {
            std::fs::File::create(&target).map_err(|source| RuntimeError::Io { what: format!("creating mount point {}", target.display()), source })?;
        }
    }
    Ok(())
}

/// Every device node of the host's /dev (recursively, without the per-mount-namespace or
/// per-session dirs pts, shm, mqueue, fd), for a privileged container ("All devices from the
/// host's /dev are available within the container", api.proto). Nodes autodev makes itself
/// are left to it.
pub fn host_devices() -> Vec<DeviceNode> {
    use std::os::unix::fs::FileTypeExt;
    const AUTODEV: [&str; 7] = ["null", "zero", "full", "random", "urandom", "tty", "console"];
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            let rel = path.strip_prefix("/dev").map(|r| r.display().to_string()).unwrap_or_default();
            if ft.is_dir() {
                if !["pts", "shm", "mqueue", "fd", "hugepages", ".lxc", ".udev"].contains(&rel.as_str()) {
                    stack.push(path);
                }
            } else if (ft.is_char_device() || ft.is_block_device()) && !AUTODEV.contains(&rel.as_str()) && rel != "ptmx" {
                if let Ok(node) = DeviceNode::from_host(path.clone(), format!("/dev/{rel}"), "rwm") {
                    out.push(node);
                }
            }
        }
    }
    out.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::security::{AppArmorPolicy, DEFAULT_CAPABILITIES};

    fn rendered(sec: &SecuritySpec) -> String {
        render(sec, Path::new("/l/seccomp")).iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }

    #[test]
    fn confined_container() {
        let sec = SecuritySpec {
            capabilities: vec!["chown", "net_admin"],
            no_new_privs: true,
            readonly_rootfs: true,
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            seccomp: SeccompPolicy::RuntimeDefault,
            apparmor: AppArmorPolicy::RuntimeDefault,
            ..Default::default()
        };
        assert_eq!(
            rendered(&sec),
            "lxc.mount.auto = proc:mixed sys:ro cgroup:ro\n\
             lxc.apparmor.profile = generated\n\
             lxc.cap.keep = chown net_admin\n\
             lxc.seccomp.profile = /l/seccomp\n\
             lxc.no_new_privs = 1\n\
             lxc.rootfs.options = ro\n\
             lxc.mount.entry = /dev/null proc/kcore none bind,optional 0 0\n\
             lxc.mount.entry = tmpfs proc/kcore tmpfs ro,nosuid,nodev,noexec,size=0,optional 0 0\n\
             lxc.mount.entry = proc/sys proc/sys none rbind,relative,ro,optional 0 0\n"
        );
        assert!(seccomp_policy(&sec).unwrap().unwrap().contains("unshare errno 1"));
    }

    #[test]
    fn privileged_container_is_not_confined() {
        let sec = SecuritySpec {
            privileged: true,
            capabilities: DEFAULT_CAPABILITIES.to_vec(),
            masked_paths: vec!["/proc/kcore".into()],
            seccomp: SeccompPolicy::RuntimeDefault,
            apparmor: AppArmorPolicy::RuntimeDefault,
            ..Default::default()
        };
        assert_eq!(rendered(&sec), "lxc.mount.auto = proc:rw sys:rw cgroup:rw\nlxc.apparmor.profile = unconfined\n");
        assert_eq!(seccomp_policy(&sec).unwrap(), None);
    }

    #[test]
    fn capability_extremes() {
        let none = SecuritySpec { capabilities: vec![], ..Default::default() };
        assert!(rendered(&none).contains("lxc.cap.keep = none\n"));
        let all = SecuritySpec { capabilities: ALL_CAPABILITIES.to_vec(), ..Default::default() };
        assert!(!rendered(&all).contains("lxc.cap.keep"));
    }

    #[test]
    fn readonly_rootfs_mount_points_are_made_in_advance() {
        let root = tempfile::tempdir().unwrap();
        let spec = ContainerSpec {
            rootfs: root.path().into(),
            mounts: vec![
                crate::runtime::BindMount { source: "/x".into(), destination: "/data/vol".into(), readonly: false, propagation: Default::default(), is_dir: true },
                crate::runtime::BindMount { source: "/y".into(), destination: "/etc/resolv.conf".into(), readonly: false, propagation: Default::default(), is_dir: false },
                crate::runtime::BindMount { source: "/z".into(), destination: "/dev/termination-log".into(), readonly: false, propagation: Default::default(), is_dir: false },
            ],
            ..Default::default()
        };
        prepare_readonly_rootfs(&spec).unwrap();
        assert!(root.path().join("data/vol").is_dir());
        assert!(root.path().join("etc/resolv.conf").is_file());
        assert!(root.path().join("proc").is_dir() && root.path().join("dev").is_dir());
        assert!(!root.path().join("dev/termination-log").exists(), "/dev is autodev's tmpfs");
    }
}
