//! Cgroup placement, resource limits, UpdateContainerResources, stats, metrics and OOMKilled, on real
//! LXC containers driven over the daemon's socket. Every limit applied is read back from the cgroup
//! files; on this hybrid CI host the v1 files (the v2 renderings are unit-tested in
//! `runtime/cgroup/`). Parents given as `cgroup_parent` are created by the daemon when missing and
//! removed by the test afterwards, as kubelet would. Every test ends with the leak check.

mod harness;

use harness::pods::*;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;

const LOOP: &str = "while true; do sleep 1; done";
const T60: Duration = Duration::from_secs(60);
const MIB: i64 = 1 << 20;

fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The directory holding `controller`'s files for cgroup `rel`.
fn cg_dir(controller: &str, rel: &str) -> PathBuf {
    if pure_v2() { PathBuf::from("/sys/fs/cgroup").join(rel) } else { PathBuf::from("/sys/fs/cgroup").join(controller).join(rel) }
}

fn cg_read(controller: &str, rel: &str, file: &str) -> String {
    let p = cg_dir(controller, rel).join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

/// Remove a test's parent cgroup tree (deepest first) in every hierarchy, as kubelet removes pod
/// cgroups; panics if something is still inside (a container cgroup the daemon left).
fn remove_parent_tree(top: &str) {
    let bases: Vec<PathBuf> = if pure_v2() {
        vec!["/sys/fs/cgroup".into()]
    } else {
        std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|e| e.path()).collect()
    };
    for base in bases {
        let mut dirs = Vec::new();
        let mut stack = vec![base.join(top)];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                dirs.push(d.clone());
                stack.extend(entries.flatten().filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false)).map(|e| e.path()));
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            std::fs::remove_dir(&d).unwrap_or_else(|e| panic!("removing {}: {e}", d.display()));
        }
    }
}

fn with_parent(mut pod: PodSandboxConfig, parent: &str) -> PodSandboxConfig {
    pod.linux.as_mut().unwrap().cgroup_parent = parent.to_string();
    pod
}

fn with_resources(mut c: ContainerConfig, r: LinuxContainerResources) -> ContainerConfig {
    c.linux.as_mut().unwrap().resources = Some(r);
    c
}

/// The host pid of a container's init (verbose ContainerStatus).
async fn init_pid(fx: &Fixture, id: &str) -> i32 {
    let mut c = fx.client.clone();
    let r = c.runtime.container_status(ContainerStatusRequest { container_id: id.into(), verbose: true }).await.unwrap().into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    info["pid"].as_i64().unwrap() as i32
}

/// Processes of cgroup tree `rel` (memory hierarchy / unified).
fn procs_under(rel: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = vec![cg_dir("memory", rel)];
    while let Some(d) = stack.pop() {
        out.extend(std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.parse::<i32>().ok()));
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false)).map(|e| e.path()));
        }
    }
    out
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap_or_default()
}

fn short_token(fx: &Fixture) -> String {
    fx.token.chars().filter(|c| c.is_ascii_alphanumeric()).take(10).collect::<String>().to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn resources_are_applied_updated_and_placed_under_the_pod_cgroup() {
    let fx = Fixture::start_with_config("log_level = \"debug\"\ncgroup_driver = \"cgroupfs\"\n").await;
    let mut c = fx.client.clone();
    let driver = c.runtime.runtime_config(RuntimeConfigRequest {}).await.unwrap().into_inner().linux.unwrap().cgroup_driver;
    assert_eq!(driver, CgroupDriver::Cgroupfs as i32);

    let top = format!("crilxctest-{}", short_token(&fx));
    let parent = format!("/{top}/burstable/pod{}", short_token(&fx));
    let pod = with_parent(fx.pod_config("res"), &parent);
    let pod_id = fx.run_pod(&pod).await;
    let resources = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 * MIB,
        memory_swap_limit_in_bytes: 128 * MIB,
        oom_score_adj: 500,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        ..Default::default()
    };
    let ctr = fx.create_and_start(&pod_id, &pod, with_resources(fx.container_config("limited", &["sh", "-c", LOOP]), resources)).await;
    let rel = format!("{}/cri-lxc-{ctr}", parent.trim_start_matches('/'));

    if pure_v2() {
        assert_eq!(cg_read("cpu", &rel, "cpu.max"), "50000 100000");
        assert_eq!(cg_read("cpu", &rel, "cpu.weight"), "20");
        assert_eq!(cg_read("memory", &rel, "memory.max"), (64 * MIB).to_string());
        assert_eq!(cg_read("memory", &rel, "memory.swap.max"), (64 * MIB).to_string());
    } else {
        assert_eq!(cg_read("cpu", &rel, "cpu.cfs_quota_us"), "50000");
        assert_eq!(cg_read("cpu", &rel, "cpu.cfs_period_us"), "100000");
        assert_eq!(cg_read("cpu", &rel, "cpu.shares"), "512");
        assert_eq!(cg_read("memory", &rel, "memory.limit_in_bytes"), (64 * MIB).to_string());
        assert_eq!(cg_read("memory", &rel, "memory.memsw.limit_in_bytes"), (128 * MIB).to_string());
    }
    assert_eq!(cg_read("cpuset", &rel, "cpuset.cpus"), "0");
    assert_eq!(cg_read("cpuset", &rel, "cpuset.mems"), "0");
    // oom_score_adj: the container's processes inherit it
    assert_eq!(fx.exec_stdout(&ctr, &["cat", "/proc/self/oom_score_adj"]).await.trim(), "500");

    // placement: the container's init is in liblxc's cgroup inside ours, inside the pod's
    let pid = init_pid(&fx, &ctr).await;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory_line = own.lines().find(|l| if pure_v2() { l.starts_with("0::") } else { l.split(':').nth(1) == Some("memory") }).unwrap();
    assert!(memory_line.ends_with(&format!("{parent}/cri-lxc-{ctr}/lxc")), "{own}");
    // the monitor is not in the pod's cgroup: only container processes are
    let in_pod = procs_under(parent.trim_start_matches('/'));
    assert!(in_pod.contains(&pid), "{in_pod:?}");
    for p in &in_pod {
        assert!(!cmdline(*p).contains("__monitor"), "monitor process {p} ({}) is in the pod's cgroup", cmdline(*p));
    }

    // UpdateContainerResources on the running container
    let update = LinuxContainerResources { cpu_period: 100_000, cpu_quota: 20_000, memory_limit_in_bytes: 96 * MIB, memory_swap_limit_in_bytes: 192 * MIB, ..Default::default() };
    c.runtime
        .update_container_resources(UpdateContainerResourcesRequest { container_id: ctr.clone(), linux: Some(update), ..Default::default() })
        .await
        .unwrap();
    if pure_v2() {
        assert_eq!(cg_read("cpu", &rel, "cpu.max"), "20000 100000");
        assert_eq!(cg_read("memory", &rel, "memory.max"), (96 * MIB).to_string());
    } else {
        assert_eq!(cg_read("cpu", &rel, "cpu.cfs_quota_us"), "20000");
        assert_eq!(cg_read("memory", &rel, "memory.limit_in_bytes"), (96 * MIB).to_string());
        assert_eq!(cg_read("memory", &rel, "memory.memsw.limit_in_bytes"), (192 * MIB).to_string());
    }
    let status = fx.status_ok(&ctr).await;
    let applied = status.resources.and_then(|r| r.linux).expect("ContainerStatus.resources");
    assert_eq!((applied.cpu_quota, applied.memory_limit_in_bytes, applied.oom_score_adj), (20_000, 96 * MIB, 500));
    // a bad update is refused and changes nothing
    let bad = LinuxContainerResources { memory_limit_in_bytes: -5, ..Default::default() };
    let r = c.runtime.update_container_resources(UpdateContainerResourcesRequest { container_id: ctr.clone(), linux: Some(bad), ..Default::default() }).await;
    expect_code(r, &[Code::InvalidArgument], "negative memory update");

    // kubelet's pod-level limit on the parent bounds a child that asks for more
    let pod_dir = cg_dir("memory", parent.trim_start_matches('/'));
    let pod_limit_file = if pure_v2() { "memory.max" } else { "memory.limit_in_bytes" };
    std::fs::write(pod_dir.join(pod_limit_file), (200 * MIB).to_string()).unwrap();
    let big = LinuxContainerResources { memory_limit_in_bytes: 512 * MIB, ..Default::default() };
    let ctr2 = fx.create_ok(&pod_id, &pod, with_resources(fx.container_config("big", &["sh", "-c", LOOP]), big)).await;
    let rel2 = format!("{}/cri-lxc-{ctr2}", parent.trim_start_matches('/'));
    assert_eq!(cg_read("memory", &rel2, pod_limit_file), (200 * MIB).to_string());

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
    remove_parent_tree(&top);
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_driver_expands_slice_parents() {
    let fx = Fixture::start_with_config("log_level = \"debug\"\ncgroup_driver = \"systemd\"\n").await;
    let mut c = fx.client.clone();
    let driver = c.runtime.runtime_config(RuntimeConfigRequest {}).await.unwrap().into_inner().linux.unwrap().cgroup_driver;
    assert_eq!(driver, CgroupDriver::Systemd as i32);
    let t = short_token(&fx);
    let pod = with_parent(fx.pod_config("slice"), &format!("crilxct{t}-burstable-pod{t}.slice"));
    let pod_id = fx.run_pod(&pod).await;
    let ctr = fx.create_and_start(&pod_id, &pod, with_resources(fx.container_config("c", &["sh", "-c", LOOP]), LinuxContainerResources { memory_limit_in_bytes: 32 * MIB, ..Default::default() })).await;
    let rel = format!("crilxct{t}.slice/crilxct{t}-burstable.slice/crilxct{t}-burstable-pod{t}.slice/cri-lxc-{ctr}");
    let file = if pure_v2() { "memory.max" } else { "memory.limit_in_bytes" };
    assert_eq!(cg_read("memory", &rel, file), (32 * MIB).to_string());
    let pid = init_pid(&fx, &ctr).await;
    assert!(std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap().contains(&format!("{rel}/lxc")));
    // a non-slice parent is refused with the systemd driver, nothing created
    let bad = with_parent(fx.pod_config("notaslice"), "kubepods-burstable");
    let bad_id = fx.run_pod(&bad).await;
    expect_code(fx.create(&bad_id, &bad, fx.container_config("c", &["true"])).await, &[Code::InvalidArgument], "a slice name without .slice");
    fx.teardown_pod(&bad_id).await;
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
    remove_parent_tree(&format!("crilxct{t}.slice"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_and_metrics_grow_under_load() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("stats");
    let pod_id = fx.run_pod(&pod).await;
    let spinner = fx.create_and_start(&pod_id, &pod, fx.container_config("spin", &["sh", "-c", "while :; do :; done"])).await;
    let idle = fx.create_and_start(&pod_id, &pod, fx.container_config("mem", &["sh", "-c", LOOP])).await;
    let mut c = fx.client.clone();
    let stats = |id: &str| {
        let mut c = c.clone();
        let id = id.to_string();
        async move { c.runtime.container_stats(ContainerStatsRequest { container_id: id }).await.unwrap().into_inner().stats.unwrap() }
    };
    let cpu = |s: &ContainerStats| s.cpu.as_ref().unwrap().usage_core_nano_seconds.as_ref().unwrap().value;
    let first = stats(&spinner).await;
    let u1 = cpu(&first);
    // wait until the spinner used more CPU (no rate asserted, only growth)
    let mut second = stats(&spinner).await;
    for _ in 0..100 {
        if cpu(&second) > u1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        second = stats(&spinner).await;
    }
    assert!(u1 > 0 && cpu(&second) > u1, "CPU usage does not grow: {u1} → {}", cpu(&second));
    assert!(second.cpu.as_ref().unwrap().usage_nano_cores.as_ref().unwrap().value > 0, "nano cores between two samples of a spinner");
    assert_eq!(second.attributes.as_ref().unwrap().metadata.as_ref().unwrap().name, "spin");

    // memory and writable layer grow when the container allocates and writes
    let before = stats(&idle).await;
    let ws = |s: &ContainerStats| s.memory.as_ref().unwrap().working_set_bytes.as_ref().unwrap().value;
    let layer = |s: &ContainerStats| s.writable_layer.as_ref().unwrap().used_bytes.as_ref().unwrap().value;
    let out = fx.exec(&idle, &["sh", "-c", "head -c 4000000 /dev/zero > /blob && echo ok"], 60).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let after = stats(&idle).await;
    assert!(layer(&after) >= layer(&before) + 4_000_000, "writable layer {} → {}", layer(&before), layer(&after));
    assert!(after.writable_layer.as_ref().unwrap().inodes_used.as_ref().unwrap().value >= 1);
    assert!(ws(&after) > 0 && after.memory.as_ref().unwrap().usage_bytes.as_ref().unwrap().value >= ws(&after));
    // page cache of the written file is charged to the container
    assert!(after.memory.as_ref().unwrap().usage_bytes.as_ref().unwrap().value > before.memory.as_ref().unwrap().usage_bytes.as_ref().unwrap().value);

    // ListContainerStats with filters
    let list = |f: ContainerStatsFilter| {
        let mut c = c.clone();
        async move { c.runtime.list_container_stats(ListContainerStatsRequest { filter: Some(f) }).await.unwrap().into_inner().stats }
    };
    assert_eq!(list(ContainerStatsFilter { pod_sandbox_id: pod_id.clone(), ..Default::default() }).await.len(), 2);
    let by_id = list(ContainerStatsFilter { id: spinner.clone(), ..Default::default() }).await;
    assert_eq!(by_id.iter().map(|s| s.attributes.as_ref().unwrap().id.clone()).collect::<Vec<_>>(), vec![spinner.clone()]);
    let by_label = list(ContainerStatsFilter { label_selector: [("container".to_string(), "mem".to_string())].into(), ..Default::default() }).await;
    assert_eq!(by_label.len(), 1);

    // pod stats: the pod's network namespace gets an interface with traffic (a veth pair with both
    // ends inside the pod's own netns: the ARP requests of a ping never leave it)
    let netns = fx.daemon.state().join("sandboxes").join(&pod_id).join("netns");
    for args in [
        vec!["link", "add", "tst0", "type", "veth", "peer", "name", "tst1"],
        vec!["link", "set", "tst0", "up"],
        vec!["link", "set", "tst1", "up"],
        vec!["addr", "add", "10.254.77.1/24", "dev", "tst0"],
    ] {
        let ok = std::process::Command::new("nsenter").arg(format!("--net={}", netns.display())).arg("ip").args(&args).status().unwrap().success();
        assert!(ok, "ip {args:?} in the pod netns");
    }
    let _ = fx.exec(&idle, &["ping", "-c", "2", "-W", "1", "10.254.77.2"], 30).await;
    let p = c.runtime.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap().into_inner().stats.unwrap();
    let linux = p.linux.unwrap();
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value > 0);
    assert!(linux.process.unwrap().process_count.unwrap().value >= 2);
    assert_eq!(linux.containers.len(), 2);
    let net = linux.network.expect("pod network stats");
    let tst = net.interfaces.iter().find(|i| i.name == "tst0").expect("tst0 in the pod's interfaces");
    assert!(tst.tx_bytes.as_ref().unwrap().value > 0, "{tst:?}");
    let all = c.runtime.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: Some(PodSandboxStatsFilter { id: pod_id.clone(), ..Default::default() }) }).await.unwrap().into_inner().stats;
    assert_eq!(all.len(), 1);

    // metrics
    let descriptors = c.runtime.list_metric_descriptors(ListMetricDescriptorsRequest {}).await.unwrap().into_inner().descriptors;
    for name in ["container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_network_receive_bytes_total", "container_network_transmit_bytes_total", "container_processes", "container_threads"] {
        assert!(descriptors.iter().any(|d| d.name == name), "descriptor {name}");
    }
    let metrics = c.runtime.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {}).await.unwrap().into_inner().pod_metrics;
    let pm = metrics.iter().find(|m| m.pod_sandbox_id == pod_id).expect("metrics of the pod");
    assert!(pm.metrics.iter().any(|m| m.name == "container_network_transmit_bytes_total" && m.label_values.last().map(String::as_str) == Some("tst0") && m.value.as_ref().unwrap().value > 0));
    let cm = pm.container_metrics.iter().find(|c| c.container_id == spinner).expect("spinner metrics");
    assert!(cm.metrics.iter().any(|m| m.name == "container_processes" && m.value.as_ref().unwrap().value >= 1));
    for m in pm.metrics.iter().chain(cm.metrics.iter()) {
        let d = descriptors.iter().find(|d| d.name == m.name).unwrap();
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
    }

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_killed_container_reports_oomkilled() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("oom");
    let pod_id = fx.run_pod(&pod).await;
    // 16 MiB, no swap on top; the shell then holds ~64 MB in a variable
    let limits = LinuxContainerResources { memory_limit_in_bytes: 16 * MIB, memory_swap_limit_in_bytes: 16 * MIB, ..Default::default() };
    let hog = fx.create_and_start(&pod_id, &pod, with_resources(fx.container_config("hog", &["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); sleep 1000"]), limits)).await;
    let s = fx.wait_state(&hog, EXITED, T60).await;
    assert_eq!((s.reason.as_str(), s.exit_code), ("OOMKilled", 137), "{s:?}");
    // a container that is merely SIGKILLed is not OOMKilled
    let plain = fx.create_and_start(&pod_id, &pod, with_resources(fx.container_config("plain", &["sh", "-c", LOOP]), LinuxContainerResources { memory_limit_in_bytes: 64 * MIB, ..Default::default() })).await;
    fx.stop_ok(&plain, 0).await;
    let s = fx.status_ok(&plain).await;
    assert_eq!(s.exit_code, 137);
    assert_ne!(s.reason, "OOMKilled");
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_resource_values_are_refused_with_nothing_created() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("bad");
    let pod_id = fx.run_pod(&pod).await;
    let cases = [
        ("negative memory", LinuxContainerResources { memory_limit_in_bytes: -1, ..Default::default() }),
        ("cpuset garbage", LinuxContainerResources { cpuset_cpus: "0-x".into(), ..Default::default() }),
        ("cpuset of a CPU that does not exist", LinuxContainerResources { cpuset_cpus: "4095".into(), ..Default::default() }),
        ("unknown unified key", LinuxContainerResources { unified: [("nosuch.max".to_string(), "1".to_string())].into(), ..Default::default() }),
        ("swap below memory", LinuxContainerResources { memory_limit_in_bytes: 64 * MIB, memory_swap_limit_in_bytes: MIB, ..Default::default() }),
        ("cpu quota below 1ms", LinuxContainerResources { cpu_quota: 10, ..Default::default() }),
        ("oom_score_adj out of range", LinuxContainerResources { oom_score_adj: 5000, ..Default::default() }),
        ("unknown hugepage size", LinuxContainerResources { hugepage_limits: vec![HugepageLimit { page_size: "3MB".into(), limit: 1 }], ..Default::default() }),
    ];
    for (what, r) in cases {
        let e = expect_code(fx.create(&pod_id, &pod, with_resources(fx.container_config("c", &["true"]), r)).await, &[Code::InvalidArgument], what);
        assert!(!e.message().is_empty());
    }
    let bad_parent = with_parent(fx.pod_config("badparent"), "/kubepods/../../etc");
    let bad_id = fx.run_pod(&bad_parent).await;
    expect_code(fx.create(&bad_id, &bad_parent, fx.container_config("c", &["true"])).await, &[Code::InvalidArgument], "cgroup_parent with ..");
    assert!(fx.list_containers(None).await.is_empty(), "a refused container left a record");
    // the container name is free again: the same config with valid resources works
    let ok = fx.create_ok(&pod_id, &pod, with_resources(fx.container_config("c", &["true"]), LinuxContainerResources { memory_limit_in_bytes: 32 * MIB, ..Default::default() })).await;
    assert!(!ok.is_empty());
    fx.teardown_pod(&bad_id).await;
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

/// Whether this process may lower its oom_score_adj (CAP_SYS_RESOURCE), like the daemon it starts.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
    u64::from_str_radix(&hex, 16).unwrap() & (1 << 24) != 0
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_oom_score_adj_follows_restrict_oom_score_adj() {
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap().trim().parse().unwrap();
    let wanted = own - 100;
    let r = LinuxContainerResources { oom_score_adj: wanted, ..Default::default() };

    // off (the default): applied when the daemon may, refused up front otherwise
    let fx = Fixture::start().await;
    let pod = fx.pod_config("oomadj");
    let pod_id = fx.run_pod(&pod).await;
    let created = fx.create(&pod_id, &pod, with_resources(fx.container_config("c", &["sh", "-c", LOOP]), r.clone())).await;
    if has_cap_sys_resource() {
        let id = created.expect("negative oom_score_adj with CAP_SYS_RESOURCE");
        fx.start_ok(&id).await;
        assert_eq!(fx.exec_stdout(&id, &["cat", "/proc/self/oom_score_adj"]).await.trim(), wanted.to_string());
    } else {
        expect_code(created, &[Code::FailedPrecondition], "oom_score_adj below the daemon's without CAP_SYS_RESOURCE");
    }
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
    drop(fx);

    // on: clamped to the daemon's own value (when the daemon cannot go lower)
    let fx = Fixture::start_with_config("log_level = \"debug\"\nrestrict_oom_score_adj = true\n").await;
    let pod = fx.pod_config("oomadj");
    let pod_id = fx.run_pod(&pod).await;
    let id = fx.create_and_start(&pod_id, &pod, with_resources(fx.container_config("c", &["sh", "-c", LOOP]), r)).await;
    let expected = if has_cap_sys_resource() { wanted } else { own };
    assert_eq!(fx.exec_stdout(&id, &["cat", "/proc/self/oom_score_adj"]).await.trim(), expected.to_string());
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}
