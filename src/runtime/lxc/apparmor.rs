//! AppArmor for LXC containers: whether the host enforces AppArmor, whether a named profile is
//! loaded, and the `lxc.apparmor.profile` value for a policy.
//!
//! `RuntimeDefault` is liblxc's `generated` profile: liblxc derives it from its default container
//! profile (`lxc-container-default`: deny writes to /proc/sysrq-trigger, /sys/firmware, mounts
//! other than the container's own, …), writes it under the container's lxcpath dir and loads it
//! with `apparmor_parser` itself at start (lxc.container.conf(5), `lxc.apparmor.profile`), so no
//! profile has to be installed on the node. `Localhost` profiles must already be loaded (kubelet
//! and containerd expect the same). On a host without AppArmor nothing is applied and the daemon
//! says so once in its log.

use std::path::Path;

use crate::runtime::security::AppArmorPolicy;

/// securityfs' view of AppArmor (apparmor(7)).
const PROFILES: &str = "/sys/kernel/security/apparmor/profiles";
const ENABLED: &str = "/sys/module/apparmor/parameters/enabled";

/// Whether the kernel enforces AppArmor (module loaded and enabled, securityfs mounted).
pub fn host_has_apparmor() -> bool {
    std::fs::read_to_string(ENABLED).is_ok_and(|s| s.trim().starts_with('Y')) && Path::new(PROFILES).exists()
}

/// Whether a profile called `name` is loaded (a `<name> (<mode>)` line in the profiles list).
pub fn profile_loaded(name: &str) -> bool {
    std::fs::read_to_string(PROFILES).is_ok_and(|list| list.lines().any(|l| l.rsplit_once(" (").is_some_and(|(n, _)| n == name)))
}

/// A profile name must be one line of printable characters (it becomes a config value).
pub fn valid_profile_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.chars().any(|c| c.is_control())
}

/// The `lxc.apparmor.profile` value for `policy`.
pub fn lxc_profile(policy: &AppArmorPolicy) -> &str {
    match policy {
        AppArmorPolicy::Unconfined => "unconfined",
        AppArmorPolicy::RuntimeDefault => "generated",
        AppArmorPolicy::Localhost(name) => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_values() {
        assert_eq!(lxc_profile(&AppArmorPolicy::Unconfined), "unconfined");
        assert_eq!(lxc_profile(&AppArmorPolicy::RuntimeDefault), "generated");
        assert_eq!(lxc_profile(&AppArmorPolicy::Localhost("my-prof".into())), "my-prof");
        assert!(valid_profile_name("k8s-apparmor-example-deny-write"));
        assert!(!valid_profile_name("a\nlxc.init.uid = 0"));
        assert!(!valid_profile_name(""));
    }
}
