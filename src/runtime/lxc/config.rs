//! The LXC configuration of one container, rendered from a `ContainerSpec` by a pure function
//! (unit-tested against golden files in `golden/`). Keys are those of lxc.container.conf(5) as
//! liblxc 5 reads them; each block says why it is there.
//!
//! Must stay pure: no file access, no liblxc calls.

use std::fmt::Write as _;
use std::path::Path;

use crate::runtime::cgroup::CgroupVersion;
use crate::runtime::{ContainerSpec, Propagation};

/// Paths the rendered config refers to, and host facts it depends on, that are not part of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths<'a> {
    /// The hierarchy of the host's `devices` controller (None: pure cgroup v2), which decides
    /// between `lxc.cgroup.devices.*` and `lxc.cgroup2.devices.*` keys.
    pub devices_cgroup: Option<CgroupVersion>,
    /// liblxc's own log for this container (start failures are explained there).
    pub lxc_log: &'a Path,
    /// Where the container's seccomp policy file is written (referenced only when it has one).
    pub seccomp: &'a Path,
}

/// fstab-style escaping for `lxc.mount.entry` fields: whitespace and backslash as octal.
pub(super) fn fstab_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// A config value may not contain a newline (it would start a new key).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

pub fn render(spec: &ContainerSpec, paths: &ConfigPaths<'_>) -> String {
    let mut c = String::new();
    // `writeln!` into a String cannot fail.
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(c, "{k} = {}", one_line(v));
    };

    // The rootfs is the overlay cri-lxc mounted; liblxc only pivots into it.
    line("lxc.rootfs.path", &format!("dir:{}", spec.rootfs.display()));

    // Namespaces: join the pod's pinned ones by path, use the host's where the pod does
    // (NamespaceMode NODE), and create the rest. The set to create is always spelled out with
    // `lxc.namespace.clone`: its alternative `lxc.namespace.keep` makes liblxc 5 clone every other
    // namespace *including user*, which without an idmap breaks the start (EOVERFLOW on /dev/pts).
    let mut clone = vec!["mnt", "cgroup"];
    // A pod with a user namespace (hostUsers: false): join it first, since it owns the pod's other
    // namespaces; `lxc.idmap` tells liblxc the mapping it is already in (for chowning its own
    // setup, and for the `idmap=container` bind mounts below).
    if let Some(user) = &spec.namespaces.user {
        line("lxc.namespace.share.user", &user.path.display().to_string());
        for (kind, maps) in [("u", &user.map.uids), ("g", &user.map.gids)] {
            for m in maps {
                line("lxc.idmap", &format!("{kind} {} {} {}", m.container_id, m.host_id, m.length));
            }
        }
    }
    if let Some(p) = &spec.namespaces.net {
        line("lxc.namespace.share.net", &p.display().to_string());
    } else if !spec.namespaces.host_net {
        clone.push("net");
    }
    if let Some(p) = &spec.namespaces.ipc {
        line("lxc.namespace.share.ipc", &p.display().to_string());
    } else if !spec.namespaces.host_ipc {
        clone.push("ipc");
    }
    if let Some(p) = &spec.namespaces.uts {
        line("lxc.namespace.share.uts", &p.display().to_string());
    } else if !spec.namespaces.host_net {
        // Host-network pods use the host's hostname (kubelet's expectation).
        clone.push("uts");
        if !spec.hostname.is_empty() {
            line("lxc.uts.name", &spec.hostname);
        }
    }
    if let Some(p) = &spec.namespaces.pid {
        line("lxc.namespace.share.pid", &p.display().to_string());
    } else if !spec.namespaces.host_pid {
        clone.push("pid");
    }
    line("lxc.namespace.clone", &clone.join(" "));

    // Application container: no console, no ttys of its own; stdio belongs to the monitor.
    line("lxc.console.path", "none");
    line("lxc.tty.max", "0");
    // A minimal /dev; /proc, /sys and cgroups are mounted as the security context says (below).
    line("lxc.autodev", "1");
    // Cgroup placement (the pod's cgroup, monitor outside it) and oom_score_adj: runtime/cgroup/.
    for (key, value) in crate::runtime::cgroup::lxc_keys(&spec.id, &spec.cgroup) {
        line(key, &value);
    }
    for (key, value) in crate::runtime::cgroup::devices::lxc_keys(&spec.devices, spec.security.privileged, paths.devices_cgroup) {
        line(key, &value);
    }

    // The process: liblxc clears the environment, so every variable is set explicitly.
    for kv in &spec.env {
        line("lxc.environment", kv);
    }
    line("lxc.init.uid", &spec.user.uid.to_string());
    line("lxc.init.gid", &spec.user.gid.to_string());
    if !spec.user.additional_gids.is_empty() {
        let groups: Vec<String> = spec.user.additional_gids.iter().map(u32::to_string).collect();
        line("lxc.init.groups", &groups.join(","));
    }
    if !spec.cwd.is_empty() {
        line("lxc.init.cwd", &spec.cwd);
    }

    // Mounts: targets are relative to the rootfs (lxc.container.conf: "relative paths are taken
    // relative to the mounted container root"); `create=` makes the mount point like kubelet
    // expects, `optional` is never used so a missing source fails the start loudly.
    for m in &spec.mounts {
        let target = m.destination.trim_start_matches('/');
        let mut opts = vec!["rbind".to_string(), if m.is_dir { "create=dir" } else { "create=file" }.to_string()];
        if m.readonly {
            opts.push("ro".into());
        }
        // In a user namespace, host files are shown through the pod's mapping (lxc.container.conf(5)
        // `idmap=container`), so what root owns on the host root owns in the pod.
        if spec.namespaces.user.is_some() {
            opts.push("idmap=container".into());
        }
        opts.push(
            match m.propagation {
                Propagation::Private => "rprivate",
                Propagation::HostToContainer => "rslave",
                Propagation::Bidirectional => "rshared",
            }
            .into(),
        );
        line(
            "lxc.mount.entry",
            &format!("{} {} none {} 0 0", fstab_escape(&m.source.display().to_string()), fstab_escape(target), opts.join(",")),
        );
    }
    for d in &spec.devices {
        let target = d.container_path.trim_start_matches('/');
        line("lxc.mount.entry", &format!("{} {} none bind,create=file 0 0", fstab_escape(&d.host_path.display().to_string()), fstab_escape(target)));
    }

    // Confinement last: its masked and read-only paths must cover the mounts above, as runc
    // applies them after all mounts (the other keys do not depend on their position).
    for (key, value) in super::security::render(&spec.security, paths.seccomp) {
        line(key, &value);
    }

    line("lxc.log.file", &paths.lxc_log.display().to_string());
    line("lxc.log.level", "WARN");
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{BindMount, DeviceNode, ProcessUser, SharedNamespaces};
    use std::path::PathBuf;

    fn golden(name: &str, actual: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/runtime/lxc/golden").join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(actual, expected, "rendered config differs from {}", path.display());
    }

    fn pod_container() -> ContainerSpec {
        ContainerSpec {
            id: "c1".into(),
            sandbox_id: "s1".into(),
            rootfs: "/var/lib/cri-lxc/rootfs/c1/rootfs".into(),
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "GREETING=hello world".into()],
            cwd: "/srv".into(),
            user: ProcessUser { uid: 1000, gid: 1000, additional_gids: vec![2000, 3000] },
            hostname: "web-0".into(),
            namespaces: SharedNamespaces {
                net: Some("/run/cri-lxc/sandboxes/s1/netns".into()),
                ipc: Some("/run/cri-lxc/sandboxes/s1/ipcns".into()),
                uts: Some("/run/cri-lxc/sandboxes/s1/utsns".into()),
                ..Default::default()
            },
            mounts: vec![
                BindMount { source: "/run/cri-lxc/sandboxes/s1/resolv.conf".into(), destination: "/etc/resolv.conf".into(), readonly: true, propagation: Propagation::Private, is_dir: false },
                BindMount { source: "/var/lib/kubelet/pods/u/volumes/my data".into(), destination: "/data".into(), readonly: false, propagation: Propagation::HostToContainer, is_dir: true },
            ],
            devices: vec![DeviceNode { host_path: "/dev/fuse".into(), container_path: "/dev/fuse".into(), permissions: "rwm".into(), kind: 'c', major: 10, minor: 229 }],
            log_path: Some("/var/log/pods/x/c/0.log".into()),
            stop_signal: 15,
            ..Default::default()
        }
    }

    #[test]
    fn pod_container_joins_pinned_namespaces() {
        let rendered = render(&pod_container(), &ConfigPaths { devices_cgroup: Some(CgroupVersion::V1), lxc_log: Path::new("/run/cri-lxc/containers/c1/lxc.log"), seccomp: Path::new("/var/lib/cri-lxc/lxc/c1/seccomp") });
        golden("pod_container.conf", &rendered);
    }

    #[test]
    fn host_network_pod_keeps_host_namespaces() {
        let spec = ContainerSpec {
            rootfs: "/r".into(),
            argv: vec!["true".into()],
            hostname: "ignored-with-host-network".into(),
            namespaces: SharedNamespaces { host_net: true, host_ipc: true, host_pid: true, ..Default::default() },
            ..Default::default()
        };
        golden("host_namespaces.conf", &render(&spec, &ConfigPaths { devices_cgroup: Some(CgroupVersion::V1), lxc_log: Path::new("/l"), seccomp: Path::new("/s") }));
    }

    #[test]
    fn confined_container_renders_its_security_context() {
        use crate::runtime::security::{AppArmorPolicy, SeccompPolicy, SecuritySpec};
        let spec = ContainerSpec {
            security: SecuritySpec {
                capabilities: vec!["chown", "net_bind_service"],
                no_new_privs: true,
                readonly_rootfs: true,
                masked_paths: vec!["/proc/kcore".into(), "/sys/firmware".into()],
                readonly_paths: vec!["/proc/sys".into()],
                seccomp: SeccompPolicy::RuntimeDefault,
                apparmor: AppArmorPolicy::Localhost("k8s-deny-write".into()),
                ..Default::default()
            },
            ..pod_container()
        };
        golden("confined_container.conf", &render(&spec, &ConfigPaths { devices_cgroup: Some(CgroupVersion::V1), lxc_log: Path::new("/run/cri-lxc/containers/c1/lxc.log"), seccomp: Path::new("/var/lib/cri-lxc/lxc/c1/seccomp") }));
    }

    #[test]
    fn userns_pod_container_joins_the_pod_user_namespace() {
        use crate::runtime::userns::{IdMap, IdMapping, PodUserNamespace};
        let mut spec = pod_container();
        let m = vec![IdMapping { container_id: 0, host_id: 65536, length: 65536 }];
        spec.namespaces.user = Some(PodUserNamespace { path: "/run/cri-lxc/sandboxes/s1/userns".into(), map: IdMap { uids: m.clone(), gids: m } });
        spec.devices.clear();
        golden("userns_container.conf", &render(&spec, &ConfigPaths { devices_cgroup: Some(CgroupVersion::V1), lxc_log: Path::new("/run/cri-lxc/containers/c1/lxc.log"), seccomp: Path::new("/var/lib/cri-lxc/lxc/c1/seccomp") }));
    }

    #[test]
    fn values_cannot_inject_keys() {
        let spec = ContainerSpec {
            rootfs: "/r".into(),
            env: vec!["A=1\nlxc.init.uid = 0".into()],
            user: ProcessUser { uid: 1000, gid: 1000, additional_gids: vec![] },
            ..Default::default()
        };
        let rendered = render(&spec, &ConfigPaths { devices_cgroup: Some(CgroupVersion::V1), lxc_log: Path::new("/l"), seccomp: Path::new("/s") });
        assert!(rendered.contains("lxc.environment = A=1 lxc.init.uid = 0\n"));
        let uid_lines: Vec<&str> = rendered.lines().filter(|l| l.starts_with("lxc.init.uid")).collect();
        assert_eq!(uid_lines, vec!["lxc.init.uid = 1000"], "{rendered}");
    }
}
