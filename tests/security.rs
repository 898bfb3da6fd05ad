//! Security contexts, checked from inside real containers: capability sets and no_new_privs in
//! `/proc/self/status`, `id` for users and groups, a read-only rootfs, masked and read-only paths,
//! seccomp profiles (Localhost OCI JSON, RuntimeDefault, Unconfined), privileged containers, pod
//! sysctls, and the bad-input cases (InvalidArgument / FailedPrecondition, nothing left behind).
//!
//! Expected capability masks are computed here from capabilities(7) numbers, not from the crate's
//! tables. Each test removes its pods and ends with the leak check.

mod harness;

use harness::pods::*;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::*;
use tonic::Code;

const LOOP: &str = "while true; do sleep 1; done";

/// capabilities(7) numbers of containerd's default set: CHOWN 0, DAC_OVERRIDE 1, FOWNER 3,
/// FSETID 4, KILL 5, SETGID 6, SETUID 7, SETPCAP 8, NET_BIND_SERVICE 10, NET_RAW 13,
/// SYS_CHROOT 18, MKNOD 27, AUDIT_WRITE 29, SETFCAP 31.
const DEFAULT_CAP_NUMBERS: [u32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];
const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;

fn mask(numbers: &[u32]) -> u64 {
    numbers.iter().fold(0, |m, n| m | (1u64 << n))
}

/// Every capability this kernel knows (`/proc/sys/kernel/cap_last_cap`) that the daemon (started
/// by this test process, same bounding set) can hand on: "all" cannot be more than that (this CI
/// VM withholds CAP_SYS_RESOURCE).
fn all_caps_mask() -> u64 {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap().trim().parse().unwrap();
    let kernel = (0..=last).fold(0, |m, n| m | (1u64 << n));
    kernel & status_field(&std::fs::read_to_string("/proc/self/status").unwrap(), "CapBnd")
}

/// A hex field (`CapEff:\t000…`) or number field (`NoNewPrivs:\t1`) of /proc/<pid>/status text.
fn status_field(status: &str, field: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field} in:\n{status}"));
    let v = line.split_once(':').unwrap().1.trim();
    if field.starts_with("Cap") {
        u64::from_str_radix(v, 16).unwrap()
    } else {
        v.parse().unwrap()
    }
}

fn security_context(cfg: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    cfg.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default)
}

fn caps(add: &[&str], drop: &[&str]) -> Option<Capability> {
    Some(Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn profile(t: ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile { profile_type: t as i32, localhost_ref: localhost_ref.to_string() })
}

/// The container's main process saves its own `/proc/<pid>/status` here first.
const MAIN_STATUS: &str = "/tmp/main-status";

/// Create and start a container running a loop with `edit` applied to its security context.
async fn running(fx: &Fixture, pod_id: &str, pod: &PodSandboxConfig, name: &str, edit: impl FnOnce(&mut LinuxContainerSecurityContext)) -> String {
    let main = format!("cat /proc/$$/status > {MAIN_STATUS}; {LOOP}");
    let mut cfg = fx.container_config(name, &["sh", "-c", &main]);
    edit(security_context(&mut cfg));
    let id = fx.create_ok(pod_id, pod, cfg).await;
    fx.start_ok(&id).await;
    id
}

/// The container's main process's status (as it saved it; PID 1 is lxc's init, which liblxc 5
/// runs in-process and does not confine like the payload) and an ExecSync process's own status.
async fn statuses(fx: &Fixture, id: &str) -> (String, String) {
    let main = fx.wait_file_in(id, MAIN_STATUS).await;
    let exec = fx.exec_stdout(id, &["cat", "/proc/self/status"]).await;
    (main, exec)
}

#[tokio::test(flavor = "multi_thread")]
async fn capability_sets_users_groups_and_no_new_privs() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("caps");
    let pod_id = fx.run_pod(&pod).await;
    let all = all_caps_mask();
    let default = mask(&DEFAULT_CAP_NUMBERS);

    let cases: Vec<(&str, Option<Capability>, u64)> = vec![
        ("default", None, default),
        ("add-drop", caps(&["NET_ADMIN"], &["CHOWN"]), (default | mask(&[CAP_NET_ADMIN])) & !mask(&[CAP_CHOWN])),
        ("all", caps(&["ALL"], &[]), all),
        ("all-but-chown", caps(&["ALL"], &["CAP_CHOWN"]), all & !mask(&[CAP_CHOWN])),
        ("none", caps(&[], &["ALL"]), 0),
    ];
    for (name, capability, want) in cases {
        let id = running(&fx, &pod_id, &pod, name, |sc| sc.capabilities = capability).await;
        let (main, exec) = statuses(&fx, &id).await;
        for (what, status) in [("main process", &main), ("ExecSync", &exec)] {
            for field in ["CapBnd", "CapEff", "CapPrm"] {
                assert_eq!(status_field(status, field), want, "{name}: {what} {field} (want {want:016x})\n{status}");
            }
            assert_eq!(status_field(status, "NoNewPrivs"), 0, "{name}: {what}");
        }
    }

    // A non-root user keeps the bounding set but has no effective capabilities (as with runc);
    // run_as_group and supplemental groups, merged with the image's /etc/group (app is in extra=2000).
    let id = running(&fx, &pod_id, &pod, "user", |sc| {
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 3000 });
        sc.supplemental_groups = vec![4000];
        sc.no_new_privs = true;
    })
    .await;
    let (main, exec) = statuses(&fx, &id).await;
    for (what, status) in [("main process", &main), ("ExecSync", &exec)] {
        assert_eq!(status_field(status, "CapBnd"), default, "{what}\n{status}");
        assert_eq!(status_field(status, "CapEff"), 0, "{what}\n{status}");
        assert_eq!(status_field(status, "NoNewPrivs"), 1, "{what}\n{status}");
    }
    assert_eq!(fx.exec_stdout(&id, &["id", "-u"]).await.trim(), "1000");
    assert_eq!(fx.exec_stdout(&id, &["id", "-g"]).await.trim(), "3000");
    let groups = fx.exec_stdout(&id, &["grep", "^Groups:", MAIN_STATUS]).await;
    let mut groups: Vec<&str> = groups.trim().trim_start_matches("Groups:").split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, vec!["2000", "4000"], "Merge policy: image groups of app plus the requested one");

    let id = running(&fx, &pod_id, &pod, "strict", |sc| {
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.supplemental_groups = vec![4000];
        sc.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
    })
    .await;
    let status = fx.wait_file_in(&id, MAIN_STATUS).await;
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap_or_default();
    assert_eq!(groups.trim().trim_start_matches("Groups:").split_whitespace().collect::<Vec<_>>(), vec!["4000"], "Strict policy: only the requested groups");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readonly_rootfs_masked_and_readonly_paths() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("paths");
    let pod_id = fx.run_pod(&pod).await;
    let vol = fx.host_dir("vol");

    let mut cfg = fx.container_config("ro", &["sh", "-c", LOOP]);
    cfg.mounts.push(Mount { container_path: "/data".into(), host_path: vol.to_str().unwrap().into(), ..Default::default() });
    security_context(&mut cfg).readonly_rootfs = true;
    let ro = fx.create_ok(&pod_id, &pod, cfg).await;
    fx.start_ok(&ro).await;
    let r = fx.exec_ok(&ro, &["touch", "/newfile"]).await;
    assert_ne!(r.code, 0, "writing to a read-only rootfs succeeded");
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    let r = fx.exec_ok(&ro, &["touch", "/data/ok"]).await;
    assert_eq!(r.code, 0, "a volume stays writable: {}", r.stderr);
    assert!(vol.join("ok").exists());

    let masked_and_ro = |sc: &mut LinuxContainerSecurityContext| {
        sc.masked_paths = vec!["/proc/timer_list".into(), "/sys/kernel".into(), "/proc/no-such-entry".into()];
        sc.readonly_paths = vec!["/etc".into()];
    };
    let plain = running(&fx, &pod_id, &pod, "plain", |_| {}).await;
    let masked = running(&fx, &pod_id, &pod, "masked", masked_and_ro).await;
    let size = "cat /proc/timer_list | wc -c; ls /sys/kernel | wc -l";
    let counts = |s: String| s.split_whitespace().map(|n| n.parse::<u64>().unwrap()).collect::<Vec<_>>();
    let before = counts(fx.exec_stdout(&plain, &["sh", "-c", size]).await);
    assert!(before.iter().all(|n| *n > 0), "without masking both have content: {before:?}");
    assert_eq!(counts(fx.exec_stdout(&masked, &["sh", "-c", size]).await), vec![0, 0], "masked file and directory are empty");
    let r = fx.exec_ok(&masked, &["touch", "/etc/x"]).await;
    assert_ne!(r.code, 0, "a read-only path is writable");
    assert_eq!(fx.exec_ok(&masked, &["touch", "/root/x"]).await.code, 0, "the rest of the rootfs is writable");
    assert_eq!(fx.exec_ok(&plain, &["touch", "/etc/x"]).await.code, 0);
    // The pod's resolv.conf is still mounted inside the read-only /etc.
    assert_eq!(fx.exec_ok(&masked, &["test", "-f", "/etc/resolv.conf"]).await.code, 0);

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_profiles_block_what_they_deny() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("seccomp");
    let pod_id = fx.run_pod(&pod).await;
    let deny_mkdir = fx.work().join("deny-mkdir.json");
    std::fs::write(
        &deny_mkdir,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let path = deny_mkdir.to_str().unwrap().to_string();

    let unconfined = running(&fx, &pod_id, &pod, "unconfined", |sc| sc.seccomp = profile(ProfileType::Unconfined, "")).await;
    let localhost = running(&fx, &pod_id, &pod, "localhost", |sc| sc.seccomp = profile(ProfileType::Localhost, &path)).await;
    #[allow(deprecated)]
    let legacy = running(&fx, &pod_id, &pod, "legacy", |sc| sc.seccomp_profile_path = format!("localhost/{path}")).await;
    let default = running(&fx, &pod_id, &pod, "default", |sc| sc.seccomp = profile(ProfileType::RuntimeDefault, "")).await;

    assert_eq!(fx.exec_ok(&unconfined, &["mkdir", "/tmp/d"]).await.code, 0, "Unconfined allows mkdir");
    for id in [&localhost, &legacy] {
        let r = fx.exec_ok(id, &["mkdir", "/tmp/d"]).await;
        assert_ne!(r.code, 0, "the Localhost profile denies mkdir");
        assert!(r.stderr.contains("Operation not permitted"), "{}", r.stderr);
        // The container's own process is filtered as well as ExecSync.
        let status = fx.wait_file_in(id, MAIN_STATUS).await;
        assert_eq!(status_field(&status, "Seccomp"), 2, "main process in filter mode\n{status}");
    }
    let status = fx.wait_file_in(&unconfined, MAIN_STATUS).await;
    assert_eq!(status_field(&status, "Seccomp"), 0);

    // RuntimeDefault denies unshare (a CAP_SYS_ADMIN operation in Docker's default profile);
    // without a profile a user namespace can be made. Other syscalls work under it.
    let unshare = ["/bin/busybox", "unshare", "-U", "true"];
    assert_eq!(fx.exec_ok(&unconfined, &unshare).await.code, 0, "Unconfined: unshare works");
    let r = fx.exec_ok(&default, &unshare).await;
    assert_ne!(r.code, 0, "RuntimeDefault: unshare must fail");
    assert!(r.stderr.contains("Operation not permitted"), "{}", r.stderr);
    assert_eq!(fx.exec_ok(&default, &["mkdir", "/tmp/d"]).await.code, 0, "RuntimeDefault allows mkdir");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_container_gets_everything() {
    let fx = Fixture::start().await;
    let mut pod = fx.pod_config("privileged");
    pod.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true;
    let pod_id = fx.run_pod(&pod).await;
    // A host device node lxc's autodev does not make.
    use std::os::unix::fs::FileTypeExt;
    let device = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_char_device() || t.is_block_device()))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !["null", "zero", "full", "random", "urandom", "tty", "console", "ptmx"].contains(&n.as_str()))
        .min()
        .expect("the host has a device node besides the basic ones");
    let dev = format!("/dev/{device}");

    let privileged = running(&fx, &pod_id, &pod, "privileged", |sc| {
        sc.privileged = true;
        sc.seccomp = profile(ProfileType::RuntimeDefault, "");
        sc.masked_paths = vec!["/proc/timer_list".into()];
    })
    .await;
    let plain = running(&fx, &pod_id, &pod, "plain", |_| {}).await;

    let (main, exec) = statuses(&fx, &privileged).await;
    for status in [&main, &exec] {
        assert_eq!(status_field(status, "CapEff"), all_caps_mask(), "{status}");
        assert_eq!(status_field(status, "Seccomp"), 0, "privileged: no seccomp\n{status}");
    }
    let test_dev = format!("test -b {dev} || test -c {dev}");
    assert_eq!(fx.exec_ok(&privileged, &["sh", "-c", &test_dev]).await.code, 0, "privileged sees {dev}");
    assert_ne!(fx.exec_ok(&plain, &["sh", "-c", &test_dev]).await.code, 0, "unprivileged does not see {dev}");
    // /sys is writable (and mounted rw) only for the privileged one; nothing masked.
    let sys_rw = "grep ' /sys ' /proc/self/mountinfo | grep -q ' rw,'";
    assert_eq!(fx.exec_ok(&privileged, &["sh", "-c", sys_rw]).await.code, 0);
    assert_ne!(fx.exec_ok(&plain, &["sh", "-c", sys_rw]).await.code, 0);
    let timers = fx.exec_stdout(&privileged, &["sh", "-c", "cat /proc/timer_list | wc -c"]).await;
    assert_ne!(timers.trim(), "0", "privileged: masked_paths are not applied");

    // The devices cgroup, not just the missing node, keeps host devices out: CAP_MKNOD is in the
    // default set (as with runc), yet a node made for the host's disk must not be readable.
    use std::os::unix::fs::MetadataExt;
    let (disk, rdev) = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok().filter(|m| m.file_type().is_block_device()).map(|m| (e.file_name().to_string_lossy().to_string(), m.rdev())))
        .min()
        .expect("the host has a block device");
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let read_disk = format!("mknod /tmp/disk b {major} {minor} && head -c 512 /tmp/disk > /dev/null");
    let r = fx.exec_ok(&plain, &["sh", "-c", &read_disk]).await;
    assert_ne!(r.code, 0, "an unprivileged container read the host's /dev/{disk} through its own node: {r:?}");
    let r = fx.exec_ok(&privileged, &["sh", "-c", &format!("head -c 512 /dev/{disk} > /dev/null")]).await;
    assert_eq!(r.code, 0, "privileged reads /dev/{disk}: {r:?}");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

/// A device the CRI request names is opened with exactly its cgroup permissions.
#[tokio::test(flavor = "multi_thread")]
async fn requested_devices_get_their_cgroup_permissions() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("devices");
    let pod_id = fx.run_pod(&pod).await;
    // /dev/kmsg: a write only adds a line to the kernel log (reading it needs CAP_SYSLOG, which
    // the default set lacks, so writes are what is tested).
    let with_kmsg = |name: &str, permissions: &str| {
        let mut cfg = fx.container_config(name, &["sh", "-c", LOOP]);
        cfg.devices = vec![k8s_cri::v1::Device { container_path: "/dev/xkmsg".into(), host_path: "/dev/kmsg".into(), permissions: permissions.into() }];
        cfg
    };
    let writer = fx.create_ok(&pod_id, &pod, with_kmsg("writer", "w")).await;
    let reader = fx.create_ok(&pod_id, &pod, with_kmsg("reader", "r")).await;
    for id in [&writer, &reader] {
        fx.start_ok(id).await;
    }
    let write = ["sh", "-c", "test -c /dev/xkmsg && echo cri-lxc-devices-test > /dev/xkmsg"];
    let r = fx.exec_ok(&writer, &write).await;
    assert_eq!(r.code, 0, "write permission granted: {r:?}");
    let r = fx.exec_ok(&reader, &write).await;
    assert_ne!(r.code, 0, "write permission was not granted: {r:?}");
    assert!(r.stderr.contains("Operation not permitted"), "{r:?}");
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_sysctls_are_set_in_the_pod_namespaces() {
    let fx = Fixture::start().await;
    let mut pod = fx.pod_config("sysctls");
    let host_port_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let host_shmmni = std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap();
    let sysctls = &mut pod.linux.as_mut().unwrap().sysctls;
    sysctls.insert("net.ipv4.ip_unprivileged_port_start".into(), "81".into());
    sysctls.insert("kernel.shmmni".into(), "1234".into());
    let pod_id = fx.run_pod(&pod).await;
    let id = running(&fx, &pod_id, &pod, "reader", |_| {}).await;
    assert_eq!(fx.exec_stdout(&id, &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]).await.trim(), "81");
    assert_eq!(fx.exec_stdout(&id, &["cat", "/proc/sys/kernel/shmmni"]).await.trim(), "1234");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(), host_port_start, "host untouched");
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(), host_shmmni, "host untouched");
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_security_input_is_refused_and_creates_nothing() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("bad");
    let pod_id = fx.run_pod(&pod).await;
    let invalid_json = fx.work().join("invalid.json");
    std::fs::write(&invalid_json, "{ not json").unwrap();
    let log_action = fx.work().join("log.json");
    std::fs::write(&log_action, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_LOG"}]}"#).unwrap();
    let missing = fx.work().join("missing.json");

    type Edit = Box<dyn FnOnce(&mut LinuxContainerSecurityContext)>;
    let p = |f: &std::path::Path| f.to_str().unwrap().to_string();
    #[allow(deprecated)]
    let cases: Vec<(&str, Edit, Code)> = vec![
        ("unknown apparmor profile form", Box::new(|sc| sc.apparmor_profile = "bogus-profile".into()), Code::InvalidArgument),
        ("apparmor Localhost without a name", Box::new(|sc| sc.apparmor = profile(ProfileType::Localhost, "")), Code::InvalidArgument),
        ("missing seccomp file", Box::new({ let m = p(&missing); move |sc| sc.seccomp = profile(ProfileType::Localhost, &m) }), Code::InvalidArgument),
        ("invalid seccomp file", Box::new({ let m = p(&invalid_json); move |sc| sc.seccomp = profile(ProfileType::Localhost, &m) }), Code::InvalidArgument),
        ("untranslatable seccomp rule", Box::new({ let m = p(&log_action); move |sc| sc.seccomp_profile_path = format!("localhost/{m}") }), Code::InvalidArgument),
        ("unknown seccomp profile string", Box::new(|sc| sc.seccomp_profile_path = "docker/bogus".into()), Code::InvalidArgument),
        ("unknown capability", Box::new(|sc| sc.capabilities = caps(&["CAP_NOT_A_CAP"], &[])), Code::InvalidArgument),
        ("run_as_group without a user", Box::new(|sc| sc.run_as_group = Some(Int64Value { value: 5 })), Code::InvalidArgument),
        ("privileged in an unprivileged pod", Box::new(|sc| sc.privileged = true), Code::InvalidArgument),
        ("relative masked path", Box::new(|sc| sc.masked_paths = vec!["proc/kcore".into()]), Code::InvalidArgument),
    ];
    for (what, edit, code) in cases {
        let mut cfg = fx.container_config("bad", &["true"]);
        edit(security_context(&mut cfg));
        let s = expect_code(fx.create(&pod_id, &pod, cfg).await, &[code], what);
        assert!(!s.message().is_empty(), "{what}: empty message");
    }
    // CRI devices: a host path that is not a device node, permissions beyond "rwm".
    for (what, host_path, permissions) in [("not a device", "/etc/hostname", "rw"), ("bad permissions", "/dev/kmsg", "rwx"), ("missing device", "/dev/no-such-device", "r")] {
        let mut cfg = fx.container_config("bad", &["true"]);
        cfg.devices = vec![k8s_cri::v1::Device { container_path: "/dev/x".into(), host_path: host_path.into(), permissions: permissions.into() }];
        let s = expect_code(fx.create(&pod_id, &pod, cfg).await, &[Code::InvalidArgument], what);
        assert!(s.message().contains(host_path), "{what}: {}", s.message());
    }
    assert!(fx.list_containers(None).await.is_empty(), "a refused CreateContainer left a container");

    // Pod level: sysctls outside the pod's own namespaces, user namespaces.
    let pods_before = fx.list_pods(None).await.len();
    let mut host_net = fx.pod_config("hostnet-sysctl");
    {
        let linux = host_net.linux.as_mut().unwrap();
        linux.security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().network = NamespaceMode::Node as i32;
        linux.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    }
    expect_code(fx.run_pod_with(Some(host_net), "").await, &[Code::InvalidArgument], "net.* sysctl in a host-network pod");
    let mut not_namespaced = fx.pod_config("kernel-sysctl");
    not_namespaced.linux.as_mut().unwrap().sysctls.insert("kernel.panic".into(), "1".into());
    expect_code(fx.run_pod_with(Some(not_namespaced), "").await, &[Code::InvalidArgument], "a sysctl of no namespace");
    let mut no_such = fx.pod_config("unknown-sysctl");
    no_such.linux.as_mut().unwrap().sysctls.insert("net.ipv4.no_such_sysctl".into(), "1".into());
    expect_code(fx.run_pod_with(Some(no_such), "").await, &[Code::InvalidArgument], "an unknown net sysctl");
    let mut userns = fx.pod_config("userns");
    userns.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().userns_options =
        Some(UserNamespace { mode: NamespaceMode::Pod as i32, ..Default::default() });
    // A user namespace without mappings (tests/userns.rs runs real ones).
    expect_code(fx.run_pod_with(Some(userns), "").await, &[Code::InvalidArgument], "a user namespace without id mappings");
    assert_eq!(fx.list_pods(None).await.len(), pods_before, "a refused RunPodSandbox left a pod");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}
