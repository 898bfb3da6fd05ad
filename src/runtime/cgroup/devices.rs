//! The devices cgroup: which device nodes a container's processes may open. Without it, CAP_MKNOD
//! (in the default capability set, as with runc) would let a container make a node for a host disk
//! and read it. Pure: renders liblxc keys.
//!
//! The allowlist is runc's default one (libcontainer `AllowedDevices`): creating any node is
//! allowed (`m`), opening only the pseudo devices every container has (null, zero, full, random,
//! urandom, tty, console, ptmx, the pts ptys, /dev/net/tun), plus the devices the CRI request
//! names with their own permissions. A privileged container gets no rules: all devices.
//!
//! liblxc applies the keys to its own container cgroup (`…/cri-lxc-<id>/lxc`), which holds every
//! process of the container and every ExecSync/exec process (attach joins it). On a host whose
//! `devices` controller is a v1 hierarchy the `lxc.cgroup.devices.*` keys are written to
//! devices.deny/devices.allow; on pure cgroup v2 there are no such files and liblxc compiles the
//! `lxc.cgroup2.devices.*` keys into a BPF_CGROUP_DEVICE program instead (lxc.container.conf(5)).

use super::CgroupVersion;
use crate::runtime::DeviceNode;

/// Devices every container may open: `(kind, major, minor or None = any, what)`.
const DEFAULT_ALLOWED: [(char, u64, Option<u64>, &str); 10] = [
    ('c', 1, Some(3), "null"),
    ('c', 1, Some(5), "zero"),
    ('c', 1, Some(7), "full"),
    ('c', 1, Some(8), "random"),
    ('c', 1, Some(9), "urandom"),
    ('c', 5, Some(0), "tty"),
    ('c', 5, Some(1), "console"),
    ('c', 5, Some(2), "ptmx"),
    ('c', 136, None, "pts"),
    ('c', 10, Some(200), "net/tun"),
];

/// The device rules for one container. `devices_cgroup` is the version hosting the host's
/// `devices` controller (None: pure v2, where it is not a listed controller).
pub fn lxc_keys(devices: &[DeviceNode], privileged: bool, devices_cgroup: Option<CgroupVersion>) -> Vec<(&'static str, String)> {
    if privileged {
        return Vec::new();
    }
    let (deny, allow) = match devices_cgroup {
        Some(CgroupVersion::V1) => ("lxc.cgroup.devices.deny", "lxc.cgroup.devices.allow"),
        _ => ("lxc.cgroup2.devices.deny", "lxc.cgroup2.devices.allow"),
    };
    let mut keys = vec![(deny, "a".to_string()), (allow, "c *:* m".to_string()), (allow, "b *:* m".to_string())];
    for (kind, major, minor, _) in DEFAULT_ALLOWED {
        let minor = minor.map_or("*".to_string(), |m| m.to_string());
        keys.push((allow, format!("{kind} {major}:{minor} rwm")));
    }
    for d in devices {
        keys.push((allow, format!("{} {}:{} {}", d.kind, d.major, d.minor, d.permissions)));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> DeviceNode {
        DeviceNode { host_path: "/dev/vdb".into(), container_path: "/dev/xvda".into(), permissions: "r".into(), kind: 'b', major: 252, minor: 16 }
    }

    #[test]
    fn v1_and_v2_get_the_same_allowlist_under_their_own_keys() {
        let v1 = lxc_keys(&[disk()], false, Some(CgroupVersion::V1));
        let v2 = lxc_keys(&[disk()], false, None);
        assert_eq!(v1[0], ("lxc.cgroup.devices.deny", "a".to_string()), "default deny first");
        assert_eq!(v2[0], ("lxc.cgroup2.devices.deny", "a".to_string()));
        let values = |keys: &[(&str, String)]| keys.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>();
        assert_eq!(values(&v1), values(&v2));
        assert!(v1[1..].iter().all(|(k, _)| *k == "lxc.cgroup.devices.allow"));
        assert!(v2[1..].iter().all(|(k, _)| *k == "lxc.cgroup2.devices.allow"));
        let v = values(&v1);
        for rule in ["c *:* m", "b *:* m", "c 1:3 rwm", "c 136:* rwm", "c 5:2 rwm", "b 252:16 r"] {
            assert!(v.contains(&rule.to_string()), "{rule} missing from {v:?}");
        }
        assert!(!v.iter().any(|r| r.starts_with("b ") && r.ends_with("rwm")), "no block device is opened by default: {v:?}");
    }

    #[test]
    fn privileged_containers_get_every_device() {
        assert!(lxc_keys(&[disk()], true, Some(CgroupVersion::V1)).is_empty());
        assert!(lxc_keys(&[], true, None).is_empty());
    }
}
