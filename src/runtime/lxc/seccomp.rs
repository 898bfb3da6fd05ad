//! Seccomp for LXC containers: OCI seccomp profiles (CRI `Localhost`) translated to liblxc's
//! seccomp policy language, and the documented `RuntimeDefault` profile. Pure functions; the
//! runtime writes the text next to the container's config and points `lxc.seccomp.profile` at it.
//!
//! liblxc 5.0.2's policy language (lxc.container.conf(5) "SECCOMP CONFIGURATION", src/lxc/seccomp.c):
//! ```text
//! 2                                   version
//! denylist | allowlist [<action>]     default: allow (denylist) / kill (allowlist), or <action>
//! [x86_64]                            optional architecture section (rules up to the next one)
//! <syscall> <action> [idx,value,op,mask][…]   up to 6 argument conditions, all must hold
//! ```
//! Actions: `allow`, `kill` (SCMP_ACT_KILL = kill the thread), `trap`, `errno <n>`, `notify`.
//! Operators: SCMP_CMP_NE/LT/LE/EQ/GE/GT/MASKED_EQ (for MASKED_EQ the 4th field is the mask and
//! the 2nd the value compared with `arg & mask`). Syscalls unknown to libseccomp are skipped with
//! a warning, like runc. On x86_64 liblxc adds every rule to the x86, x32 and x86_64 filters.
//!
//! What cannot be translated is an error naming the field: actions liblxc lacks (`SCMP_ACT_LOG`,
//! `SCMP_ACT_TRACE`, `SCMP_ACT_KILL_PROCESS`, `SCMP_ACT_NOTIFY` without a listener liblxc
//! could forward to), filter flags, a `listenerPath`, and an architecture list without the
//! host's own architecture.

use std::fmt::Write as _;

use crate::runtime::security::{OciSeccompProfile, OciSyscallRule};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("seccomp profile cannot be used with LXC: {0}")]
pub struct SeccompError(pub String);

/// EPERM: what a denied syscall returns unless the profile says otherwise (runc's default).
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Kill,
    Trap,
    Errno(u32),
}

impl Action {
    fn text(self) -> String {
        match self {
            Action::Allow => "allow".into(),
            Action::Kill => "kill".into(),
            Action::Trap => "trap".into(),
            Action::Errno(n) => format!("errno {n}"),
        }
    }
}

fn action(name: &str, errno: Option<u32>, default_errno: u32, what: &str) -> Result<Action, SeccompError> {
    let a = match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => return Ok(Action::Errno(errno.unwrap_or(default_errno))),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::Kill,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_KILL_PROCESS" => return Err(SeccompError(format!("{what}: SCMP_ACT_KILL_PROCESS (liblxc only kills the thread; use SCMP_ACT_KILL or SCMP_ACT_ERRNO)"))),
        "SCMP_ACT_LOG" | "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY" => return Err(SeccompError(format!("{what}: action {name} is not supported by liblxc 5"))),
        other => return Err(SeccompError(format!("{what}: unknown action {other:?}"))),
    };
    if errno.is_some() {
        return Err(SeccompError(format!("{what}: errnoRet is only valid with SCMP_ACT_ERRNO")));
    }
    Ok(a)
}

/// OCI `SCMP_ARCH_*` → liblxc's section name; None for architectures liblxc has no section for.
fn arch_section(oci: &str) -> Option<&'static str> {
    Some(match oci {
        "SCMP_ARCH_X86_64" => "x86_64",
        "SCMP_ARCH_X86" => "x86",
        "SCMP_ARCH_X32" => "x32",
        "SCMP_ARCH_AARCH64" => "arm64",
        "SCMP_ARCH_ARM" => "arm",
        "SCMP_ARCH_PPC64LE" => "ppc64le",
        "SCMP_ARCH_PPC64" => "ppc64",
        "SCMP_ARCH_PPC" => "ppc",
        "SCMP_ARCH_S390X" => "s390x",
        "SCMP_ARCH_S390" => "s390",
        "SCMP_ARCH_MIPS" => "mips",
        "SCMP_ARCH_MIPS64" => "mips64",
        "SCMP_ARCH_MIPS64N32" => "mips64n32",
        "SCMP_ARCH_MIPSEL" => "mipsel",
        "SCMP_ARCH_MIPSEL64" => "mipsel64",
        "SCMP_ARCH_MIPSEL64N32" => "mipsel64n32",
        _ => return None,
    })
}

/// The OCI name of the architecture this binary runs on.
fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "x86" => "SCMP_ARCH_X86",
        "aarch64" => "SCMP_ARCH_AARCH64",
        "arm" => "SCMP_ARCH_ARM",
        "powerpc64" if cfg!(target_endian = "little") => "SCMP_ARCH_PPC64LE",
        "powerpc64" => "SCMP_ARCH_PPC64",
        "s390x" => "SCMP_ARCH_S390X",
        _ => "",
    }
}

fn valid_syscall_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Docker's `includes`/`excludes` (`caps`, `arches`, `minKernel`): whether the rule applies to a
/// container with `caps`, and the architectures it is limited to (empty = all).
fn rule_scope(rule: &OciSyscallRule, caps: &[&str], what: &str) -> Result<(bool, Vec<String>), SeccompError> {
    let list = |v: Option<&serde_json::Value>, key: &str| -> Vec<String> {
        v.and_then(|v| v.get(key)).and_then(|l| l.as_array()).map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    for (v, side) in [(&rule.includes, "includes"), (&rule.excludes, "excludes")] {
        if let Some(obj) = v.as_ref().and_then(|v| v.as_object()) {
            if let Some(key) = obj.keys().find(|k| !["caps", "arches", "minKernel"].contains(&k.as_str())) {
                return Err(SeccompError(format!("{what}: {side}.{key} is not supported")));
            }
        }
    }
    let has = |c: &String| crate::runtime::security::capability_name(c).is_some_and(|n| caps.contains(&n));
    let inc_caps = list(rule.includes.as_ref(), "caps");
    let exc_caps = list(rule.excludes.as_ref(), "caps");
    // Docker: a rule with includes.caps applies only if the container has all of them; one with
    // excludes.caps only if it has none of them. (minKernel is taken as met: liblxc 5 needs ≥ 4.x.)
    let applies = inc_caps.iter().all(has) && !exc_caps.iter().any(has);
    let mut arches: Vec<String> = list(rule.includes.as_ref(), "arches");
    let excluded = list(rule.excludes.as_ref(), "arches");
    if !excluded.is_empty() {
        if arches.is_empty() {
            arches = ["amd64", "x86", "x32", "arm64", "arm", "ppc64le", "s390x"].iter().map(|s| s.to_string()).collect();
        }
        arches.retain(|a| !excluded.contains(a));
    }
    Ok((applies, arches))
}

/// Docker's short architecture names (`includes.arches`) → liblxc sections.
fn docker_arch_sections(arch: &str) -> &'static [&'static str] {
    match arch {
        "amd64" | "x86_64" => &["x86_64"],
        "x86" | "386" => &["x86"],
        "x32" => &["x32"],
        "arm64" | "aarch64" => &["arm64"],
        "arm" => &["arm"],
        "ppc64le" => &["ppc64le"],
        "s390x" => &["s390x"],
        "s390" => &["s390"],
        _ => &[],
    }
}

/// Translate an OCI seccomp profile into liblxc policy text for a container with `caps`.
pub fn translate(profile: &OciSeccompProfile, caps: &[&str]) -> Result<String, SeccompError> {
    let default_errno = profile.default_errno_ret.unwrap_or(EPERM);
    let default = action(&profile.default_action, None, default_errno, "defaultAction")?;
    if !profile.listener_path.is_empty() {
        return Err(SeccompError("listenerPath (seccomp user notification) is not supported".into()));
    }
    if let Some(flag) = profile.flags.iter().find(|f| f.as_str() != "SECCOMP_FILTER_FLAG_TSYNC") {
        return Err(SeccompError(format!("flag {flag} is not supported (liblxc sets no filter flags)")));
    }
    let arches: Vec<&str> = profile.architectures.iter().map(String::as_str).chain(profile.arch_map.iter().map(|m| m.architecture.as_str())).collect();
    if !arches.is_empty() && !arches.contains(&native_arch()) {
        return Err(SeccompError(format!("architectures {arches:?} do not include this host's {}", native_arch())));
    }
    for a in &arches {
        if arch_section(a).is_none() {
            return Err(SeccompError(format!("unknown architecture {a:?}")));
        }
    }

    let mut out = String::from("2\n");
    // The header only picks the default; every rule below names its action explicitly.
    match default {
        Action::Allow => out.push_str("denylist\n"),
        other => {
            let _ = writeln!(out, "allowlist {}", other.text());
        }
    }
    let mut by_section: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
    for (i, rule) in profile.syscalls.iter().enumerate() {
        let what = format!("syscalls[{i}]");
        let act = action(&rule.action, rule.errno_ret, EPERM, &what)?;
        let (applies, arches) = rule_scope(rule, caps, &what)?;
        // libseccomp refuses a rule whose action is the default one (runc skips them too).
        if !applies || act == default {
            continue;
        }
        let names: Vec<&String> = rule.names.iter().chain(std::iter::once(&rule.name).filter(|n| !n.is_empty())).collect();
        if names.is_empty() {
            return Err(SeccompError(format!("{what}: no syscall names")));
        }
        if rule.args.len() > 6 {
            return Err(SeccompError(format!("{what}: more than 6 argument conditions")));
        }
        let mut conditions = Vec::new();
        for arg in &rule.args {
            if arg.index > 5 {
                return Err(SeccompError(format!("{what}: argument index {} (must be 0-5)", arg.index)));
            }
            let op = match arg.op.as_str() {
                "SCMP_CMP_NE" | "SCMP_CMP_LT" | "SCMP_CMP_LE" | "SCMP_CMP_EQ" | "SCMP_CMP_GE" | "SCMP_CMP_GT" => arg.op.as_str(),
                "SCMP_CMP_MASKED_EQ" => "SCMP_CMP_MASKED_EQ",
                other => return Err(SeccompError(format!("{what}: unknown operator {other:?}"))),
            };
            conditions.push(if op == "SCMP_CMP_MASKED_EQ" {
                // OCI: (arg & value) == valueTwo; liblxc: [index, compared value, op, mask].
                (arg.index, format!("[{},{},{op},{}]", arg.index, arg.value_two, arg.value))
            } else {
                (arg.index, format!("[{},{},{op}]", arg.index, arg.value))
            });
        }
        // Several conditions on one argument cannot share a libseccomp rule; like runc, each
        // becomes a rule of its own then (any of them matching triggers the action).
        let mut seen = std::collections::BTreeSet::new();
        let repeated = conditions.iter().any(|(idx, _)| !seen.insert(*idx));
        let variants: Vec<String> = if repeated { conditions.iter().map(|(_, c)| c.clone()).collect() } else { vec![conditions.iter().map(|(_, c)| c.as_str()).collect()] };
        let mut lines = Vec::new();
        for name in names {
            if !valid_syscall_name(name) {
                return Err(SeccompError(format!("{what}: invalid syscall name {name:?}")));
            }
            for v in &variants {
                let sep = if v.is_empty() { "" } else { " " };
                lines.push(format!("{name} {}{sep}{v}", act.text()));
            }
        }
        let sections: Vec<String> = if arches.is_empty() { vec![String::new()] } else { arches.iter().flat_map(|a| docker_arch_sections(a)).map(|s| s.to_string()).collect() };
        for section in sections {
            match by_section.iter_mut().find(|(s, _)| *s == section) {
                Some((_, l)) => l.extend(lines.iter().cloned()),
                None => by_section.push((section, lines.clone())),
            }
        }
    }
    for (section, lines) in by_section {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "[{}]", if section.is_empty() { "all" } else { &section });
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Syscalls the default profile denies unless the container holds the capability that makes
/// them legitimate (the pairs Docker's and containerd's default profile use), or always (None).
const RUNTIME_DEFAULT_DENIED: &[(&str, Option<&str>)] = &[
    // The kernel keyring is not namespaced.
    ("add_key", None),
    ("keyctl", None),
    ("request_key", None),
    // Obsolete or host-wide interfaces.
    ("create_module", None),
    ("get_kernel_syms", None),
    ("query_module", None),
    ("nfsservctl", None),
    ("uselib", None),
    ("ustat", None),
    ("sysfs", None),
    ("_sysctl", None),
    ("vm86", None),
    ("vm86old", None),
    ("userfaultfd", None),
    ("kexec_load", None),
    ("kexec_file_load", None),
    ("open_by_handle_at", None),
    ("lookup_dcookie", None),
    // Namespaces, mounts and other CAP_SYS_ADMIN operations.
    ("unshare", Some("sys_admin")),
    ("setns", Some("sys_admin")),
    ("mount", Some("sys_admin")),
    ("umount", Some("sys_admin")),
    ("umount2", Some("sys_admin")),
    ("pivot_root", Some("sys_admin")),
    ("open_tree", Some("sys_admin")),
    ("move_mount", Some("sys_admin")),
    ("fsopen", Some("sys_admin")),
    ("fsconfig", Some("sys_admin")),
    ("fsmount", Some("sys_admin")),
    ("fspick", Some("sys_admin")),
    ("mount_setattr", Some("sys_admin")),
    ("name_to_handle_at", Some("sys_admin")),
    ("quotactl", Some("sys_admin")),
    ("quotactl_fd", Some("sys_admin")),
    ("swapon", Some("sys_admin")),
    ("swapoff", Some("sys_admin")),
    ("fanotify_init", Some("sys_admin")),
    ("setdomainname", Some("sys_admin")),
    ("sethostname", Some("sys_admin")),
    ("bpf", Some("sys_admin")),
    ("perf_event_open", Some("sys_admin")),
    ("reboot", Some("sys_boot")),
    ("init_module", Some("sys_module")),
    ("finit_module", Some("sys_module")),
    ("delete_module", Some("sys_module")),
    ("acct", Some("sys_pacct")),
    ("ptrace", Some("sys_ptrace")),
    ("kcmp", Some("sys_ptrace")),
    ("process_vm_readv", Some("sys_ptrace")),
    ("process_vm_writev", Some("sys_ptrace")),
    ("pidfd_getfd", Some("sys_ptrace")),
    ("iopl", Some("sys_rawio")),
    ("ioperm", Some("sys_rawio")),
    ("settimeofday", Some("sys_time")),
    ("stime", Some("sys_time")),
    ("clock_settime", Some("sys_time")),
    ("clock_adjtime", Some("sys_time")),
    ("vhangup", Some("sys_tty_config")),
    ("mbind", Some("sys_nice")),
    ("set_mempolicy", Some("sys_nice")),
    ("move_pages", Some("sys_nice")),
    ("syslog", Some("syslog")),
];

/// `clone` flags that create namespaces (sched.h): NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET. Denied to containers without CAP_SYS_ADMIN, as in Docker's profile.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000];

/// The `RuntimeDefault` profile for a container with `caps`: a deny list (the rest is allowed)
/// of the syscalls in [`RUNTIME_DEFAULT_DENIED`] whose capability the container lacks, answered
/// with EPERM; `clone` with a namespace flag is denied the same way, and `clone3` answers ENOSYS
/// (its flags live in memory a filter cannot read; libc falls back to `clone`). A deny list
/// rather than containerd's allow list: liblxc's own default (`common.seccomp`) is one, and new
/// syscalls of newer libcs keep working, at the price of not blocking syscalls added later.
pub fn runtime_default(caps: &[&str]) -> String {
    let mut out = String::from("2\ndenylist\n# cri-lxc RuntimeDefault (see runtime/lxc/seccomp.rs)\n[all]\n");
    for (name, cap) in RUNTIME_DEFAULT_DENIED {
        if cap.is_none_or(|c| !caps.contains(&c)) {
            let _ = writeln!(out, "{name} errno {EPERM}");
        }
    }
    if !caps.contains(&"sys_admin") {
        for flag in CLONE_NAMESPACE_FLAGS {
            // x86: clone(flags, …) — flags is argument 0 (on s390 it would be 1; not built there).
            let _ = writeln!(out, "clone errno {EPERM} [0,{flag},SCMP_CMP_MASKED_EQ,{flag}]");
        }
        let _ = writeln!(out, "clone3 errno {ENOSYS}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::security::OciSeccompProfile;

    fn profile(json: &str) -> OciSeccompProfile {
        OciSeccompProfile::from_json("t", json.as_bytes()).unwrap()
    }

    #[test]
    fn deny_list_profile_translates() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
               "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"},
                           {"names":["chmod"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":1,"value":511,"op":"SCMP_CMP_EQ"}]},
                           {"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
                           {"names":["personality"],"action":"SCMP_ACT_KILL","args":[{"index":0,"value":255,"valueTwo":8,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        assert_eq!(
            translate(&p, &[]).unwrap(),
            "2\ndenylist\n[all]\nmkdir errno 1\nmkdirat errno 1\nchmod errno 13 [1,511,SCMP_CMP_EQ]\npersonality kill [0,8,SCMP_CMP_MASKED_EQ,255]\n"
        );
    }

    #[test]
    fn allow_list_profile_with_repeated_argument_splits_rules() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
               "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                           {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]},
                           {"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_PTRACE"]}},
                           {"names":["sync"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64"]}}]}"#,
        );
        let text = translate(&p, &["chown"]).unwrap();
        assert_eq!(
            text,
            "2\nallowlist errno 38\n[all]\nread allow\nwrite allow\nsocket allow [0,1,SCMP_CMP_EQ]\nsocket allow [0,2,SCMP_CMP_EQ]\n[x86_64]\nsync allow\n"
        );
        assert!(translate(&p, &["sys_ptrace"]).unwrap().contains("ptrace allow\n"));
    }

    #[test]
    fn untranslatable_profiles_are_errors() {
        let err = |json: &str| translate(&profile(json), &[]).unwrap_err().0;
        assert!(err(r#"{"defaultAction":"SCMP_ACT_LOG"}"#).contains("SCMP_ACT_LOG"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS"}"#).contains("KILL_PROCESS"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#).contains("NOTIFY"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG"]}"#).contains("FLAG_LOG"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock"}"#).contains("listenerPath"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#).contains("index 7"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir\nkill"],"action":"SCMP_ACT_ERRNO"}]}"#).contains("invalid syscall name"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_KILL","errnoRet":1}]}"#).contains("errnoRet"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_S390X"]}"#).contains("do not include"));
    }

    #[test]
    fn runtime_default_depends_on_capabilities() {
        let plain = runtime_default(&crate::runtime::security::DEFAULT_CAPABILITIES);
        assert!(plain.starts_with("2\ndenylist\n"));
        assert!(plain.contains("\nunshare errno 1\n") && plain.contains("\nkeyctl errno 1\n"));
        assert!(plain.contains("clone errno 1 [0,268435456,SCMP_CMP_MASKED_EQ,268435456]"));
        let admin = runtime_default(&["sys_admin", "sys_ptrace"]);
        assert!(!admin.contains("\nunshare ") && !admin.contains("\nptrace ") && !admin.contains("\nclone "));
        assert!(admin.contains("\nkeyctl errno 1\n"));
    }
}
