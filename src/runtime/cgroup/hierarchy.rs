//! The host's cgroup hierarchies (v1 controllers, the unified v2 tree, or both on a hybrid host)
//! and the file operations on one cgroup across all of them: create (with missing parents), write
//! settings, read files, list and kill member processes, remove.
//!
//! Detection reads `/proc/self/mountinfo` (proc(5)): `cgroup` mounts carry their controllers in
//! the super options, the `cgroup2` mount is the unified hierarchy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::resources::Setting;
use super::CgroupError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub path: PathBuf,
    pub version: CgroupVersion,
    /// v1: the controllers (and `name=…`) of this hierarchy; v2: empty (see `unified_controllers`).
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub mounts: Vec<Mount>,
    /// Controllers available in the unified hierarchy (its root's `cgroup.controllers`).
    pub unified_controllers: Vec<String>,
}

/// v1 controllers whose settings or statistics we use.
const V1_KNOWN: &[&str] = &["cpu", "cpuacct", "cpuset", "memory", "pids", "hugetlb", "blkio", "devices", "freezer"];
/// Controllers enabled for the pod trees on the unified hierarchy.
const V2_WANTED: &[&str] = &["cpu", "cpuset", "memory", "pids", "hugetlb", "io"];

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { what, path, source }
}

impl Layout {
    /// The host's layout, detected once (mounts of cgroup hierarchies do not change under us).
    pub fn host() -> &'static Layout {
        static HOST: OnceLock<Layout> = OnceLock::new();
        HOST.get_or_init(|| {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mut layout = Layout::from_mountinfo(&mountinfo);
            if let Some(unified) = layout.unified_root() {
                let controllers = std::fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
                layout.unified_controllers = controllers.split_whitespace().map(str::to_string).collect();
            }
            layout
        })
    }

    /// Parse mountinfo lines: `36 35 0:30 / /sys/fs/cgroup/memory rw,… shared:1 - cgroup cgroup rw,memory`.
    pub fn from_mountinfo(text: &str) -> Layout {
        let mut mounts = Vec::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(mount_point), Some(fstype), Some(options)) = (left.get(4), right.first(), right.get(2)) else { continue };
            let path = PathBuf::from(mount_point.replace("\\040", " "));
            match *fstype {
                "cgroup2" => mounts.push(Mount { path, version: CgroupVersion::V2, controllers: vec![] }),
                "cgroup" => {
                    let controllers: Vec<String> =
                        options.split(',').filter(|o| V1_KNOWN.contains(o) || o.starts_with("name=")).map(str::to_string).collect();
                    if !controllers.is_empty() && !mounts.iter().any(|m: &Mount| m.path == path) {
                        mounts.push(Mount { path, version: CgroupVersion::V1, controllers });
                    }
                }
                _ => {}
            }
        }
        Layout { mounts, unified_controllers: Vec::new() }
    }

    pub fn unified_root(&self) -> Option<&Path> {
        self.mounts.iter().find(|m| m.version == CgroupVersion::V2).map(|m| m.path.as_path())
    }

    /// Pure v2 (Proxmox VE 8) vs v1/hybrid.
    pub fn is_pure_v2(&self) -> bool {
        self.mounts.iter().all(|m| m.version == CgroupVersion::V2)
    }

    /// Which version hosts `controller` (a v1 mount wins: on a hybrid host the kernel binds a
    /// controller to one hierarchy only).
    pub fn version_of(&self, controller: &str) -> Option<CgroupVersion> {
        if self.mounts.iter().any(|m| m.version == CgroupVersion::V1 && m.controllers.iter().any(|c| c == controller)) {
            Some(CgroupVersion::V1)
        } else if self.unified_controllers.iter().any(|c| c == controller) {
            Some(CgroupVersion::V2)
        } else {
            None
        }
    }

    /// The directory holding `controller`'s files for relative cgroup `rel`.
    pub fn dir_of(&self, controller: &str, rel: &str) -> Option<PathBuf> {
        match self.version_of(controller)? {
            CgroupVersion::V1 => self
                .mounts
                .iter()
                .find(|m| m.version == CgroupVersion::V1 && m.controllers.iter().any(|c| c == controller))
                .map(|m| m.path.join(rel)),
            CgroupVersion::V2 => self.unified_root().map(|u| u.join(rel)),
        }
    }

    /// `rel` in every hierarchy.
    pub fn all_dirs(&self, rel: &str) -> Vec<PathBuf> {
        self.mounts.iter().map(|m| m.path.join(rel)).collect()
    }

    /// Create `rel` (and missing parents) in every hierarchy, making each new level usable: v1
    /// cpuset directories start with empty `cpus`/`mems` (cpuset(7)), which are copied from the
    /// parent; on v2 the wanted controllers are enabled in every ancestor's `cgroup.subtree_control`
    /// ("no internal process" holds: none of these levels has processes of its own).
    pub fn create(&self, rel: &str) -> Result<(), CgroupError> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        for m in &self.mounts {
            let mut dir = m.path.clone();
            for part in &parts {
                if m.version == CgroupVersion::V2 {
                    self.enable_controllers(&dir)?;
                }
                let parent = dir.clone();
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io_err("creating cgroup", &dir)(e)),
                }
                if m.controllers.iter().any(|c| c == "cpuset") {
                    // Children (liblxc's own cgroup below ours) inherit cpus/mems at mkdir time
                    // (cgroup-v1/cpusets.rst, cgroup.clone_children); without it liblxc 5.0.2
                    // fails to enter its empty cpuset with ENOSPC.
                    let clone = dir.join("cgroup.clone_children");
                    std::fs::write(&clone, "1").map_err(io_err("writing", &clone))?;
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                        if current.trim().is_empty() {
                            let from = std::fs::read_to_string(parent.join(file)).map_err(io_err("reading", &parent.join(file)))?;
                            std::fs::write(dir.join(file), from.trim()).map_err(io_err("writing", &dir.join(file)))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn enable_controllers(&self, dir: &Path) -> Result<(), CgroupError> {
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let enabled: BTreeSet<String> = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default().split_whitespace().map(str::to_string).collect();
        for c in available.split_whitespace().filter(|c| V2_WANTED.contains(c) && !enabled.contains(*c)) {
            let file = dir.join("cgroup.subtree_control");
            std::fs::write(&file, format!("+{c}")).map_err(io_err("enabling a controller in", &file))?;
        }
        Ok(())
    }

    /// Apply `settings` to cgroup `rel`. A write the kernel refuses with EINVAL is bad input
    /// (a cpuset outside the parent's, a limit below current usage …). On v1 the order of the
    /// memory and memsw limits matters (memsw ≥ memory at every moment), so a refused write is
    /// retried once after the others.
    pub fn apply(&self, rel: &str, settings: &[Setting]) -> Result<(), CgroupError> {
        let mut retry = Vec::new();
        for s in settings {
            if let Err(e) = self.write_setting(rel, s) {
                retry.push((s, e));
            }
        }
        for (s, first) in retry {
            if self.write_setting(rel, s).is_err() {
                return Err(first);
            }
        }
        Ok(())
    }

    fn write_setting(&self, rel: &str, s: &Setting) -> Result<(), CgroupError> {
        let dir = match s.version {
            CgroupVersion::V1 => self.dir_of(&s.controller, rel),
            CgroupVersion::V2 => self.unified_root().map(|u| u.join(rel)),
        }
        .ok_or_else(|| CgroupError::Invalid(format!("no hierarchy holds the {} controller", s.controller)))?;
        let file = dir.join(&s.file);
        if !file.exists() {
            return Err(CgroupError::Invalid(format!("{} does not exist: the kernel does not offer {:?}", file.display(), s.file)));
        }
        std::fs::write(&file, &s.value).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::EBUSY) | Some(libc::ERANGE) => {
                CgroupError::Invalid(format!("the kernel refused {}={:?}: {e}", s.file, s.value))
            }
            _ => CgroupError::Io { what: "writing", path: file.clone(), source: e },
        })
    }

    /// Contents of `controller`'s `file` in cgroup `rel`.
    pub fn read(&self, controller: &str, rel: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir_of(controller, rel)?.join(file)).ok()
    }

    /// Every process in `rel` and below (from the first hierarchy that has the cgroup).
    pub fn procs(&self, rel: &str) -> Vec<i32> {
        let mut pids = BTreeSet::new();
        for dir in self.all_dirs(rel) {
            walk(&dir, &mut |d| {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            });
        }
        pids.into_iter().collect()
    }

    /// Thread count of `rel` and below (`tasks` on v1, `cgroup.threads` on v2).
    pub fn threads(&self, rel: &str) -> u64 {
        let Some(m) = self.mounts.first() else { return 0 };
        let file = if m.version == CgroupVersion::V2 { "cgroup.threads" } else { "tasks" };
        let mut n = 0;
        walk(&m.path.join(rel), &mut |d| n += std::fs::read_to_string(d.join(file)).map(|t| t.lines().count() as u64).unwrap_or(0));
        n
    }

    /// Remove `rel` and everything below it in every hierarchy (deepest first; rmdir(2) is how a
    /// cgroup is removed). Missing directories are fine; a cgroup that still has processes fails.
    pub fn remove(&self, rel: &str) -> Result<(), CgroupError> {
        for dir in self.all_dirs(rel) {
            let mut dirs = Vec::new();
            walk(&dir, &mut |d| dirs.push(d.to_path_buf()));
            for d in dirs.iter().rev() {
                match std::fs::remove_dir(d) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("removing cgroup", d)(e)),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// `dir` and its sub-directories, parents before children.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    f(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&e.path(), f);
            }
        }
    }
}

/// Online CPUs / memory nodes and huge page sizes of this host (for validation).
pub fn host_limits() -> super::resources::HostLimits {
    let list = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| super::resources::parse_cpu_list(&s)).unwrap_or_default();
    let mut mems = list("/sys/devices/system/node/online");
    if mems.is_empty() {
        mems = vec![0]; // kernels without NUMA support still have node 0
    }
    let mut sizes = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in entries.flatten() {
            // hugepages-2048kB → 2MB, as the hugetlb controller names its files
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(kb) = name.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")).and_then(|s| s.parse::<u64>().ok()) {
                sizes.push(match kb {
                    kb if kb % (1 << 20) == 0 => format!("{}GB", kb >> 20),
                    kb if kb % (1 << 10) == 0 => format!("{}MB", kb >> 10),
                    kb => format!("{kb}KB"),
                });
            }
        }
    }
    super::resources::HostLimits { online_cpus: list("/sys/devices/system/cpu/online"), online_mems: mems, hugepage_sizes: sizes }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw shared:8 - tmpfs tmpfs rw,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw
28 26 0:26 / /sys/fs/cgroup/cpu rw shared:10 - cgroup cgroup rw,cpu
29 26 0:27 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory
30 26 0:28 / /sys/fs/cgroup/systemd rw shared:12 - cgroup cgroup rw,xattr,name=systemd
";
    const PURE_V2: &str = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

    #[test]
    fn detects_hybrid_and_pure_v2() {
        let mut hybrid = Layout::from_mountinfo(HYBRID);
        hybrid.unified_controllers = vec!["hugetlb".into()];
        assert!(!hybrid.is_pure_v2());
        assert_eq!(hybrid.mounts.len(), 4);
        assert_eq!(hybrid.version_of("memory"), Some(CgroupVersion::V1));
        assert_eq!(hybrid.version_of("hugetlb"), Some(CgroupVersion::V2));
        assert_eq!(hybrid.version_of("pids"), None);
        assert_eq!(hybrid.dir_of("memory", "a/b"), Some(PathBuf::from("/sys/fs/cgroup/memory/a/b")));
        assert_eq!(hybrid.dir_of("hugetlb", "a"), Some(PathBuf::from("/sys/fs/cgroup/unified/a")));

        let mut v2 = Layout::from_mountinfo(PURE_V2);
        v2.unified_controllers = vec!["cpuset".into(), "cpu".into(), "memory".into(), "pids".into()];
        assert!(v2.is_pure_v2());
        assert_eq!(v2.version_of("memory"), Some(CgroupVersion::V2));
        assert_eq!(v2.dir_of("cpu", "kubepods.slice/x"), Some(PathBuf::from("/sys/fs/cgroup/kubepods.slice/x")));
        assert_eq!(v2.all_dirs("x"), vec![PathBuf::from("/sys/fs/cgroup/x")]);
    }
}
