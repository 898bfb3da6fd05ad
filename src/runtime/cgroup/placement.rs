//! Cgroup paths: the CRI `cgroup_parent` expanded for the cgroup driver kubelet uses, and the
//! per-container paths under it. Pure string functions, unit-tested.
//!
//! kubelet sends, per driver (`pkg/kubelet/cm/cgroup_manager_linux.go` naming):
//! * cgroupfs: a path, `/kubepods/burstable/pod<uid>`;
//! * systemd: a slice name, `kubepods-burstable-pod<uid>.slice`, whose place in the tree follows
//!   systemd.slice(5): "the dash ("-") character … a slice named foo-bar.slice is located in
//!   foo.slice", i.e. `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`.

use super::CgroupError;

/// Parent used when the pod has no `cgroup_parent` (e.g. crictl without one).
pub const DEFAULT_PARENT: &str = "cri-lxc";
/// Parent of the liblxc monitor cgroups: outside every pod's tree.
pub const MONITOR_PARENT: &str = "cri-lxc.monitor";
/// Name of liblxc's own cgroup inside the daemon's per-container cgroup.
pub const LXC_LEAF: &str = "lxc";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

fn bad(parent: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::BadParent { parent: parent.to_string(), reason: reason.into() }
}

/// The pod's cgroup as a path relative to a hierarchy's root (no leading `/`); `""` for an empty
/// `cgroup_parent`.
pub fn expand_parent(driver: Driver, cgroup_parent: &str) -> Result<String, CgroupError> {
    let p = cgroup_parent.trim();
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(bad(p, "control characters are not allowed"));
    }
    let path = if driver == Driver::Systemd && !p.contains('/') {
        expand_slice(p)?
    } else {
        // cgroupfs paths, and absolute paths handed to the systemd driver, are taken as paths.
        p.to_string()
    };
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if parts.contains(&"..") {
        return Err(bad(p, "\"..\" is not allowed"));
    }
    Ok(parts.join("/"))
}

/// `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root slice.
fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    let Some(name) = slice.strip_suffix(".slice") else {
        return Err(bad(slice, "with the systemd cgroup driver the parent must be a slice name ending in .slice"));
    };
    if name == "-" {
        return Ok(String::new());
    }
    if name.is_empty() || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err(bad(slice, "not a valid slice name (systemd.slice(5))"));
    }
    let mut out = Vec::new();
    let mut prefix = String::new();
    for component in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(component);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out.join("/"))
}

/// The daemon-owned cgroup of container `id` (relative path).
pub fn container_dir(parent: &str, id: &str) -> String {
    let parent = if parent.is_empty() { DEFAULT_PARENT } else { parent };
    format!("{parent}/cri-lxc-{id}")
}

/// liblxc's container cgroup (`lxc.cgroup.dir.container`).
pub fn lxc_dir(parent: &str, id: &str) -> String {
    format!("{}/{LXC_LEAF}", container_dir(parent, id))
}

/// liblxc's monitor cgroup (`lxc.cgroup.dir.monitor`).
pub fn monitor_dir(id: &str) -> String {
    format!("{MONITOR_PARENT}/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_slices_expand_like_systemd_places_them() {
        assert_eq!(
            expand_parent(Driver::Systemd, "kubepods-burstable-pod1234.slice").unwrap(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
        );
        assert_eq!(expand_parent(Driver::Systemd, "kubepods.slice").unwrap(), "kubepods.slice");
        assert_eq!(expand_parent(Driver::Systemd, "-.slice").unwrap(), "");
        assert_eq!(expand_parent(Driver::Systemd, "").unwrap(), "");
        // an already expanded path is accepted as such
        assert_eq!(expand_parent(Driver::Systemd, "/kubepods.slice/x.slice").unwrap(), "kubepods.slice/x.slice");
        for bad in ["kubepods", "a--b.slice", "-a.slice", "a-.slice", ".slice"] {
            assert!(expand_parent(Driver::Systemd, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cgroupfs_paths_are_paths() {
        assert_eq!(expand_parent(Driver::Cgroupfs, "/kubepods/burstable/pod1234").unwrap(), "kubepods/burstable/pod1234");
        assert_eq!(expand_parent(Driver::Cgroupfs, "kubepods//besteffort/").unwrap(), "kubepods/besteffort");
        // a slice name under cgroupfs is just a directory name
        assert_eq!(expand_parent(Driver::Cgroupfs, "kubepods.slice").unwrap(), "kubepods.slice");
        assert!(expand_parent(Driver::Cgroupfs, "/kubepods/../etc").is_err());
        assert!(expand_parent(Driver::Cgroupfs, "/a\nlxc.init.uid = 0").is_err());
    }

    #[test]
    fn container_paths() {
        assert_eq!(container_dir("", "c1"), "cri-lxc/cri-lxc-c1");
        assert_eq!(lxc_dir("kubepods/pod1", "c1"), "kubepods/pod1/cri-lxc-c1/lxc");
        assert_eq!(monitor_dir("c1"), "cri-lxc.monitor/c1");
    }
}
