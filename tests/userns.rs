//! User namespaces (`hostUsers: false`: NamespaceOption.userns_options mode POD), checked from inside
//! real containers and from the host: the container's uid_map is the requested mapping, it is root
//! inside and the mapped host id outside, the image looks root-owned inside and is writable, pod
//! files (resolv.conf) are readable and root-owned inside, ExecSync works, two containers share the
//! pod's user and network namespaces and talk over loopback, a shared PID namespace works too, and
//! malformed mappings are InvalidArgument with nothing left behind. Each test ends with the leak check.

mod harness;

use harness::pods::*;
use k8s_cri::v1::*;
use tonic::Code;

const LOOP: &str = "while true; do sleep 1; done";
const RANGE: u32 = 65536;

/// A host id range no other test uses at the same time: kubelet hands out multiples of 65536, so do
/// we, above 2^30 and keyed by the test process.
fn host_base(slot: u32) -> u32 {
    (1 << 30) + ((std::process::id() % 2000) * 4 + slot) * RANGE
}

fn userns(host_id: u32) -> UserNamespace {
    let m = vec![IdMapping { host_id, container_id: 0, length: RANGE }];
    UserNamespace { mode: NamespaceMode::Pod as i32, uids: m.clone(), gids: m }
}

fn with_userns_pod(mut pod: PodSandboxConfig, u: &UserNamespace) -> PodSandboxConfig {
    pod.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().userns_options = Some(u.clone());
    pod
}

/// kubelet sends the pod's user namespace again in each container's NamespaceOption.
fn with_userns_container(mut c: ContainerConfig, u: &UserNamespace) -> ContainerConfig {
    c.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().userns_options = Some(u.clone());
    c
}

/// The container's init pid on the host (ContainerStatus verbose info).
async fn host_pid(fx: &Fixture, id: &str) -> i32 {
    let mut c = fx.client.clone();
    let r = c.runtime.container_status(ContainerStatusRequest { container_id: id.to_string(), verbose: true }).await.unwrap().into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    let pid = info["pid"].as_i64().unwrap_or(0) as i32;
    assert!(pid > 0, "no pid in {info}");
    pid
}

fn ns_of(pid: i32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap().display().to_string()
}

/// The four ids of a `Uid:`/`Gid:` line of /proc/<pid>/status.
fn ids(pid: i32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userns_pod_runs_as_mapped_root_with_shared_namespaces() {
    let fx = Fixture::start().await;
    let base = host_base(0);
    let u = userns(base);
    let pod = with_userns_pod(fx.pod_config("userns"), &u);
    let pod_id = fx.run_pod(&pod).await;

    // A kubelet-style volume: a host dir owned by host root, with a file in it.
    let vol = fx.host_dir("userns-volume");
    std::fs::write(vol.join("from-host"), "host data\n").unwrap();
    let mut cfg_a = with_userns_container(fx.container_config("a", &["sh", "-c", LOOP]), &u);
    cfg_a.mounts.push(Mount { container_path: "/data".into(), host_path: vol.to_str().unwrap().into(), ..Default::default() });
    let a = fx.create_and_start(&pod_id, &pod, cfg_a).await;
    // b serves a file on the pod's loopback (busybox httpd).
    let serve = "echo from-b > /tmp/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp";
    let b = fx.create_and_start(&pod_id, &pod, with_userns_container(fx.container_config("b", &["sh", "-c", serve]), &u)).await;

    // Inside: the requested mapping, root.
    assert_eq!(words(&fx.exec_stdout(&a, &["cat", "/proc/self/uid_map"]).await), words(&format!("0 {base} {RANGE}")));
    assert_eq!(words(&fx.exec_stdout(&a, &["cat", "/proc/self/gid_map"]).await), words(&format!("0 {base} {RANGE}")));
    assert_eq!(fx.exec_stdout(&a, &["id", "-u"]).await.trim(), "0");
    assert_eq!(fx.exec_stdout(&a, &["id", "-g"]).await.trim(), "0");
    // Outside: the mapped host ids.
    let pid_a = host_pid(&fx, &a).await;
    assert_eq!(ids(pid_a, "Uid"), vec![base; 4], "host uids of the container's init");
    assert_eq!(ids(pid_a, "Gid"), vec![base; 4], "host gids of the container's init");
    let host_userns = ns_of(std::process::id() as i32, "user");
    assert_ne!(ns_of(pid_a, "user"), host_userns, "the container is in a user namespace of its own");

    // The image's files look root-owned inside, and the rootfs is writable and readable.
    assert_eq!(fx.exec_stdout(&a, &["stat", "-c", "%u:%g", "/bin/busybox"]).await.trim(), "0:0");
    assert_eq!(fx.exec_stdout(&a, &["stat", "-c", "%u:%g", "/"]).await.trim(), "0:0");
    assert_eq!(fx.exec_stdout(&a, &["sh", "-c", "echo written > /root/new && cat /root/new && stat -c %u /root/new"]).await, "written\n0\n");
    assert_eq!(fx.exec_stdout(&a, &["sh", "-c", "echo changed >> /etc/passwd && tail -n 1 /etc/passwd"]).await, "changed\n");
    // App user 1000 owns its home inside (ids above 0 map too).
    assert_eq!(fx.exec_stdout(&a, &["stat", "-c", "%u:%g", "/home/app"]).await.trim(), "1000:1000");
    // The pod's resolv.conf (written by the daemon as host root) is root's inside, readable.
    assert_eq!(fx.exec_stdout(&a, &["stat", "-c", "%u", "/etc/resolv.conf"]).await.trim(), "0");
    fx.exec_stdout(&a, &["cat", "/etc/resolv.conf"]).await;

    // The volume is usable from inside: root-owned there, readable and writable, and what root in
    // the pod writes is root's on the host too (idmapped with the pod's mapping).
    assert_eq!(fx.exec_stdout(&a, &["stat", "-c", "%u:%g", "/data/from-host"]).await.trim(), "0:0");
    assert_eq!(fx.exec_stdout(&a, &["cat", "/data/from-host"]).await, "host data\n");
    fx.exec_stdout(&a, &["sh", "-c", "echo from-pod > /data/from-pod"]).await;
    {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(vol.join("from-pod")).unwrap();
        assert_eq!((md.uid(), md.gid()), (0, 0), "owner on the host of a file the pod's root wrote");
        assert_eq!(std::fs::read_to_string(vol.join("from-pod")).unwrap(), "from-pod\n");
    }

    // Both containers share the pod's user, network, IPC and UTS namespaces.
    let pid_b = host_pid(&fx, &b).await;
    for kind in ["user", "net", "ipc", "uts"] {
        assert_eq!(ns_of(pid_a, kind), ns_of(pid_b, kind), "{kind} namespace of a and b");
    }
    assert_eq!(fx.exec_stdout(&b, &["id", "-u"]).await.trim(), "0");
    assert_eq!(fx.exec_stdout(&a, &["hostname"]).await.trim(), "userns");
    // Loopback works across the pod's containers (retried while httpd starts).
    let mut got = String::new();
    for _ in 0..50 {
        let r = fx.exec_ok(&a, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"]).await;
        if r.code == 0 {
            got = r.stdout;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(got, "from-b\n", "a fetched b's file over the pod's loopback");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userns_pod_with_a_shared_pid_namespace() {
    let fx = Fixture::start().await;
    let base = host_base(1);
    let u = userns(base);
    let mut pod = with_userns_pod(fx.pod_config("userns-pid"), &u);
    pod.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid = NamespaceMode::Pod as i32;
    let pod_id = fx.run_pod(&pod).await;
    // A process without children: with a shared PID namespace, children of a stopped container's
    // init are re-parented to the pause process instead of dying with it (a race with the cgroup
    // removal that exists without user namespaces too).
    let mut cfg = with_userns_container(fx.container_config("a", &["sleep", "100000"]), &u);
    cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid = NamespaceMode::Pod as i32;
    let a = fx.create_and_start(&pod_id, &pod, cfg).await;
    assert_eq!(fx.exec_stdout(&a, &["id", "-u"]).await.trim(), "0");
    // PID 1 of the pod's PID namespace is the pause process, not the container's shell.
    let pid1 = fx.exec_stdout(&a, &["cat", "/proc/1/cmdline"]).await;
    assert!(pid1.contains("__pause"), "pid 1 is {pid1:?}");
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_namespace_mappings_are_invalid_argument() {
    let fx = Fixture::start().await;
    let base = host_base(2);
    let pods_before = fx.list_pods(None).await.len();
    let m = |container_id, host_id, length| IdMapping { host_id, container_id, length };
    let cases: Vec<(&str, Vec<IdMapping>)> = vec![
        ("no mapping", vec![]),
        ("length 0", vec![m(0, base, 0)]),
        ("not starting at container id 0", vec![m(1, base, RANGE)]),
        ("overlapping container ranges", vec![m(0, base, 100), m(50, base + 1000, 100)]),
        ("overlapping host ranges", vec![m(0, base, 100), m(100, base + 50, 100)]),
        ("host root mapped", vec![m(0, 0, RANGE)]),
    ];
    for (what, maps) in cases {
        let u = UserNamespace { mode: NamespaceMode::Pod as i32, uids: maps.clone(), gids: maps };
        let pod = with_userns_pod(fx.pod_config("bad-userns"), &u);
        expect_code(fx.run_pod_with(Some(pod), "").await, &[Code::InvalidArgument], what);
    }
    let container_mode = UserNamespace { mode: NamespaceMode::Container as i32, ..userns(base) };
    expect_code(fx.run_pod_with(Some(with_userns_pod(fx.pod_config("bad-userns"), &container_mode)), "").await, &[Code::InvalidArgument], "mode CONTAINER");
    let mut host_net = with_userns_pod(fx.pod_config("bad-userns"), &userns(base));
    host_net.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().network = NamespaceMode::Node as i32;
    expect_code(fx.run_pod_with(Some(host_net), "").await, &[Code::InvalidArgument], "host network with a user namespace");
    assert_eq!(fx.list_pods(None).await.len(), pods_before, "a refused RunPodSandbox left a pod");

    // A container cannot ask for a user namespace its pod does not have, nor other mappings.
    let plain = fx.pod_config("plain");
    let plain_id = fx.run_pod(&plain).await;
    let c = with_userns_container(fx.container_config("c", &["true"]), &userns(base));
    expect_code(fx.create(&plain_id, &plain, c).await, &[Code::FailedPrecondition], "a userns container in a pod without one");
    fx.teardown_pod(&plain_id).await;
    let pod = with_userns_pod(fx.pod_config("userns-ok"), &userns(base));
    let pod_id = fx.run_pod(&pod).await;
    let c = with_userns_container(fx.container_config("c", &["true"]), &userns(base + RANGE));
    expect_code(fx.create(&pod_id, &pod, c).await, &[Code::InvalidArgument], "a container mapping other than the pod's");
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}
