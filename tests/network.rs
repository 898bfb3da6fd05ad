//! CNI pod networking, driven over the daemon's socket the way kubelet drives it.
//!
//! Every test has its own daemon, conf dir and private network ([`harness::network::TestNet`]): a
//! bridge named `crit<pid%1000><n>` and a `10.x.y.0/24` that no route of the host overlaps, with
//! the host on `.1` of the bridge (`isGateway`), no default route in the pods, no masquerading.
//! Traffic only ever goes between the host's bridge address, loopback and pods of the test's own
//! subnet. Dropping the `TestNet` (declared before the `Fixture`, so it drops after it, when the
//! fixture's cleanup has run CNI DEL) deletes the bridge, its veths and whatever iptables rules
//! portmap left for the network.
//!
//! The plugins are Debian's containernetworking-plugins (`/usr/lib/cni`) plus a recording test
//! plugin (`fail-plugin`: records its environment and stdin, refuses ADD with code 7
//! "test plugin refuses"). Each test ends by removing its pods and checking that nothing is left:
//! no host-local allocation, no veth on the bridge, no iptables rule, `Fixture::assert_no_leaks`.

mod harness;

use harness::network::*;
use harness::pods::*;
use harness::free_port;
use k8s_cri::v1::*;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const T10: Duration = Duration::from_secs(10);
const T30: Duration = Duration::from_secs(30);
const T60: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// helpers

/// A fixture whose daemon uses `net`'s conf and bin dirs; waits for NetworkReady=true (the
/// network config must already be in the conf dir).
async fn start(net: &TestNet) -> Fixture {
    let fx = Fixture::start_with_config(&net.daemon_config()).await;
    wait_network_ready(&fx).await;
    fx
}

/// `sh -c` script serving `body` (plus a newline) with busybox httpd on port 8080 in the foreground.
fn httpd_script(body: &str) -> String {
    format!("mkdir -p /www && echo '{body}' > /www/index.html && exec httpd -f -p 8080 -h /www")
}

/// RunPodSandbox (must succeed) and its status' IP, which must be one address of the test subnet
/// with no additional ones.
async fn run_pod_in(fx: &Fixture, net: &TestNet, pod: &PodSandboxConfig) -> (String, String) {
    let id = fx.run_pod(pod).await;
    let (ip, extra) = pod_ips(fx, &id).await;
    let name = &pod.metadata.as_ref().unwrap().name;
    assert!(
        net.contains(&ip),
        "PodSandboxStatus({name}).network.ip = {ip:?}: not an address of the pod subnet {}",
        net.subnet()
    );
    assert!(extra.is_empty(), "PodSandboxStatus({name}).network.additional_ips on a single-stack network: {extra:?}");
    (id, ip)
}

/// A pod with one `sleep 1000` container: (pod id, container id, pod IP).
async fn sleeper_pod(fx: &Fixture, net: &TestNet, name: &str) -> (PodSandboxConfig, String, String, String) {
    let pod = fx.pod_config(name);
    let (id, ip) = run_pod_in(fx, net, &pod).await;
    let ctr = fx.create_and_start(&id, &pod, fx.container_config("sleeper", &["sleep", "1000"])).await;
    (pod, id, ctr, ip)
}

/// `ping -c 1 -W 2 <ip>` in `ctr`, retried for up to 20 s (the first packets may meet an empty ARP
/// cache); panics with the last output.
async fn ping_ok(fx: &Fixture, ctr: &str, ip: &str) {
    let start = Instant::now();
    loop {
        let last = match fx.exec(ctr, &["ping", "-c", "1", "-W", "2", ip], 15).await {
            Ok(r) if r.exit_code == 0 => return,
            Ok(r) => format!(
                "exit {} stdout {:?} stderr {:?}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            ),
            Err(e) => format!("ExecSync error {}", describe(&e)),
        };
        if start.elapsed() > Duration::from_secs(20) {
            panic!("ping -c 1 -W 2 {ip} from container {ctr} never succeeded; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `wget -q -O - <url>` in `ctr` until it prints `body` (the server may still be starting);
/// panics after 60 s with the last result.
async fn wget_ok(fx: &Fixture, ctr: &str, url: &str, body: &str) {
    let start = Instant::now();
    loop {
        let last = match fx.exec(ctr, &["wget", "-q", "-O", "-", url], 15).await {
            Ok(r) if r.exit_code == 0 && r.stdout == body.as_bytes() => return,
            Ok(r) => format!(
                "exit {} stdout {:?} stderr {:?}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            ),
            Err(e) => format!("ExecSync error {}", describe(&e)),
        };
        if start.elapsed() > T60 {
            panic!("wget {url} in container {ctr}: never got {body:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `GET /` from the test process (the host) to `addr`, retried until the response contains `body`;
/// panics after `timeout` with the last result.
async fn host_http_ok(addr: SocketAddr, body: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let r = tokio::task::spawn_blocking(move || tcp_exchange(addr, b"GET / HTTP/1.0\r\n\r\n")).await.unwrap();
        match &r {
            Ok(resp) if resp.contains(body) => return resp.clone(),
            _ => {}
        }
        if start.elapsed() > timeout {
            panic!("GET http://{addr}/ from the host never returned {body:?} within {timeout:?}; last: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One `GET /` from the host, no retries.
async fn host_http_once(addr: SocketAddr) -> Result<String, String> {
    tokio::task::spawn_blocking(move || tcp_exchange(addr, b"GET / HTTP/1.0\r\n\r\n")).await.unwrap()
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::from((ip.parse::<Ipv4Addr>().unwrap(), port))
}

/// Nothing of the test's network is left on the host: no host-local allocation, no interface on
/// the bridge, no iptables rule or chain of the network.
fn assert_network_released(net: &TestNet, what: &str) {
    let ips = net.allocated_ips();
    assert!(ips.is_empty(), "{what}: host-local still has {ips:?} allocated in {}", net.data_dir().join(&net.name).display());
    let ports = net.bridge_ports();
    assert!(ports.is_empty(), "{what}: interfaces still attached to bridge {}: {ports:?}", net.bridge);
    let rules = net.iptables_lines();
    assert!(rules.is_empty(), "{what}: iptables rules/chains of network {} left:\n{}", net.name, rules.join("\n"));
}

fn host_network_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. NetworkReady

#[tokio::test(flavor = "multi_thread")]
async fn network_ready_follows_the_conf_dir() {
    let net = TestNet::new();
    let fx = Fixture::start_with_config(&net.daemon_config()).await;
    let conf_dir = net.conf_dir().to_str().unwrap().to_string();

    // empty conf dir: not ready, and the message says where the daemon looked
    let c = network_condition(&fx).await;
    assert!(!c.status, "NetworkReady with an empty conf dir: {c:?}");
    assert_eq!(c.reason, NOT_READY_REASON, "NetworkReady reason with an empty conf dir: {c:?}");
    assert!(c.message.contains(&conf_dir), "NetworkReady message with an empty conf dir should name {conf_dir}: {:?}", c.message);

    // files that are not *.conflist / *.conf / *.json are not network configs
    net.write_conf("README.txt", "{ not a network config");
    net.write_conf("10-test.conflist.bak", "{ not a network config either");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = network_condition(&fx).await;
    assert!(!c.status && c.reason == NOT_READY_REASON, "NetworkReady with only non-config files in the conf dir: {c:?}");

    // a valid bridge conflist: ready without a restart
    let valid = net.write_bridge_conflist();
    let c = wait_network_condition(&fx, "true after writing a valid conflist", T10, |c| c.status).await;
    eprintln!("[report] NetworkReady with a valid conflist: {c:?}");

    // a broken file that sorts first is the config now: not ready, naming it
    let broken = net.write_conf("00-broken.conflist", "{ this is not JSON");
    let c = wait_network_condition(&fx, "false after writing 00-broken.conflist", T10, |c| !c.status).await;
    assert_eq!(c.reason, NOT_READY_REASON, "NetworkReady reason with a broken first config: {c:?}");
    assert!(c.message.contains("00-broken.conflist"), "NetworkReady message should name the broken file 00-broken.conflist: {:?}", c.message);
    eprintln!("[report] NetworkReady with a broken first file: {c:?}");

    // both gone: not ready again
    std::fs::remove_file(&broken).unwrap();
    std::fs::remove_file(&valid).unwrap();
    let c = wait_network_condition(&fx, "false after removing every config", T10, |c| !c.status).await;
    assert_eq!(c.reason, NOT_READY_REASON, "NetworkReady reason after removing every config: {c:?}");
    assert!(c.message.contains(&conf_dir), "NetworkReady message after removing every config should name {conf_dir}: {:?}", c.message);

    // a single-plugin *.conf is a network config too
    let mut single = net.bridge_plugin();
    single["cniVersion"] = json!("1.0.0");
    single["name"] = json!(net.name);
    net.write_conf("20-single.conf", &serde_json::to_string_pretty(&single).unwrap());
    wait_network_condition(&fx, "true after writing a single-plugin 20-single.conf", T10, |c| c.status).await;

    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 2. pod to pod

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_on_one_bridge_reach_each_other() {
    let net = TestNet::new();
    net.write_bridge_conflist();
    let fx = start(&net).await;

    let (_pod_a, a, ca, ip_a) = sleeper_pod(&fx, &net, "net-a").await;
    let pod_b = fx.pod_config("net-b");
    let (b, ip_b) = run_pod_in(&fx, &net, &pod_b).await;
    assert_ne!(ip_a, ip_b, "two pods got the same IP");
    let cb = fx.create_and_start(&b, &pod_b, fx.container_config("web", &["sh", "-c", &httpd_script("hello from b")])).await;

    // what the pods see agrees with PodSandboxStatus
    assert_eq!(ipv4_addrs_in(&fx, &ca, "eth0").await, vec![ip_a.clone()], "IPv4 addresses of eth0 in pod A");
    assert_eq!(ipv4_addrs_in(&fx, &cb, "eth0").await, vec![ip_b.clone()], "IPv4 addresses of eth0 in pod B");
    let ifconfig = fx.exec_stdout(&ca, &["ifconfig", "eth0"]).await;
    assert!(ifconfig.contains(&format!("addr:{ip_a} ")), "ifconfig eth0 in pod A does not show {ip_a}:\n{ifconfig}");

    // only the subnet's route: no default route
    for (who, ctr) in [("A", &ca), ("B", &cb)] {
        let routes = ipv4_routes_in(&fx, ctr).await;
        assert!(!routes.is_empty(), "pod {who} has no IPv4 route at all");
        assert!(
            routes.iter().all(|r| r.starts_with(&format!("{} ", net.subnet()))),
            "pod {who}: every route should be the subnet {} (no default route):\n{}",
            net.subnet(),
            routes.join("\n")
        );
    }

    // A and B reach each other across the bridge
    ping_ok(&fx, &ca, &ip_b).await;
    ping_ok(&fx, &cb, &ip_a).await;
    wget_ok(&fx, &ca, &format!("http://{ip_b}:8080/"), "hello from b\n").await;

    // the host reaches a pod through its address on the bridge
    host_http_ok(sock(&ip_b, 8080), "hello from b", T30).await;

    fx.teardown_pod(&a).await;
    fx.teardown_pod(&b).await;
    assert_network_released(&net, "after both pods were removed");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 3. host ports (portmap)

#[tokio::test(flavor = "multi_thread")]
async fn host_port_is_reachable_from_the_host() {
    assert!(iptables_available(), "iptables is missing (portmap needs it): apt-get install -y iptables");
    let net = TestNet::new();
    net.write_conflist("10-test.conflist", vec![net.bridge_plugin(), net.portmap_plugin()]);
    let fx = start(&net).await;

    let host_port = free_port();
    let mut pod = fx.pod_config("hostport");
    pod.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let (id, ip) = run_pod_in(&fx, &net, &pod).await;
    fx.create_and_start(&id, &pod, fx.container_config("web", &["sh", "-c", &httpd_script("hello via host port")])).await;

    let rules = net.iptables_lines();
    assert!(!rules.is_empty(), "no iptables rule names network {} after RunPodSandbox with a host port (portmap not run, or no portMappings capability arg?)", net.name);
    eprintln!("[report] portmap rules for pod {id} (ip {ip}, host port {host_port}):\n{}", rules.join("\n"));

    // the host port on the host's bridge address reaches the pod's listener
    let resp = host_http_ok(sock(&net.gateway(), host_port), "hello via host port", T30).await;
    assert!(resp.starts_with("HTTP/1."), "response through {}:{host_port}: {resp:?}", net.gateway());

    // loopback needs route_localnet (portmap's snat): reported, not required
    match host_http_once(sock("127.0.0.1", host_port)).await {
        Ok(r) if r.contains("hello via host port") => eprintln!("[report] 127.0.0.1:{host_port} reaches the pod too"),
        other => eprintln!("[report] 127.0.0.1:{host_port} does not reach the pod: {other:?}"),
    }

    fx.stop_pod_ok(&id).await;
    // CNI DEL removed the pod's DNAT rules and chain
    let left = net.iptables_lines();
    assert!(left.is_empty(), "iptables rules/chains of network {} left after StopPodSandbox (CNI DEL):\n{}", net.name, left.join("\n"));
    let dn = net.portmap_dn_chain(&id);
    assert!(!nat_chains().contains(&dn), "portmap's chain {dn} for sandbox {id} is still there after StopPodSandbox");
    let cni_chains: Vec<String> = nat_chains().into_iter().filter(|c| c.starts_with("CNI-")).collect();
    eprintln!("[report] CNI nat chains after DEL (shared ones are expected): {cni_chains:?}");
    let after = host_http_once(sock(&net.gateway(), host_port)).await;
    assert!(after.is_err(), "{}:{host_port} still answers after StopPodSandbox: {after:?}", net.gateway());

    fx.remove_pod_ok(&id).await;
    assert_network_released(&net, "after the pod was removed");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 4. host-local allocations

#[tokio::test(flavor = "multi_thread")]
async fn ips_are_released_after_stop() {
    let net = TestNet::new();
    net.write_bridge_conflist();
    let fx = start(&net).await;

    let (_pod, id, _ctr, ip) = sleeper_pod(&fx, &net, "release").await;
    assert_eq!(net.allocated_ips(), vec![ip.clone()], "host-local allocations while the pod runs");
    let owner = net.allocation(&ip).unwrap_or_default();
    if !owner.contains(&id) {
        eprintln!("[report] host-local's allocation file for {ip} does not name the sandbox id {id} (CNI_CONTAINERID is something else): {owner:?}");
    }
    assert_eq!(net.bridge_ports().len(), 1, "interfaces on bridge {} while one pod runs: {:?}", net.bridge, net.bridge_ports());

    fx.stop_pod_ok(&id).await;
    assert_network_released(&net, "after StopPodSandbox");
    // StopPodSandbox is idempotent (kubelet retries it); DEL again must not fail
    fx.stop_pod_ok(&id).await;
    assert_network_released(&net, "after a second StopPodSandbox");
    fx.remove_pod_ok(&id).await;
    assert_network_released(&net, "after RemovePodSandbox");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 5. a failing ADD

#[tokio::test(flavor = "multi_thread")]
async fn failing_plugin_fails_run_pod_sandbox_cleanly() {
    let net = TestNet::new();
    net.write_conflist("10-test.conflist", vec![net.bridge_plugin(), net.fail_plugin(json!({}))]);
    let fx = start(&net).await;

    let pod = fx.pod_config("refused");
    for attempt in 1..=2 {
        // kubelet retries a failed RunPodSandbox with the same pod: the second attempt must fail
        // the same way (nothing of the first one left reserved)
        let err = expect_err(fx.run_pod_with(Some(pod.clone()), "").await, &format!("RunPodSandbox #{attempt} with a refusing plugin"));
        assert!(
            err.message().contains(FAIL_PLUGIN_MSG),
            "RunPodSandbox #{attempt} error should carry the plugin's msg {FAIL_PLUGIN_MSG:?}: {}",
            describe(&err)
        );
        eprintln!("[report] RunPodSandbox #{attempt} with a refusing plugin: {}", describe(&err));

        let marker = net.marker_lines();
        let adds = marker.iter().filter(|l| *l == "ADD").count();
        let dels = marker.iter().filter(|l| *l == "DEL").count();
        assert_eq!(adds, attempt, "ADD calls of the test plugin after attempt {attempt}: marker {marker:?}");
        assert!(dels >= attempt, "DEL was not run after the failed ADD #{attempt}: marker {marker:?}");
        let last_add = marker.iter().rposition(|l| l == "ADD").unwrap();
        assert!(marker[last_add..].iter().any(|l| l == "DEL"), "no DEL after the last ADD: marker {marker:?}");

        assert_network_released(&net, &format!("after failed RunPodSandbox #{attempt}"));
        let pods = fx.list_pods(None).await;
        assert!(pods.is_empty(), "pods listed after failed RunPodSandbox #{attempt}: {pods:?}");
    }
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 6. daemon restart

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_pod_networking() {
    let net = TestNet::new();
    net.write_bridge_conflist();
    let mut fx = start(&net).await;

    let (_pa, a, ca, ip_a) = sleeper_pod(&fx, &net, "keep-a").await;
    let (_pb, b, cb, ip_b) = sleeper_pod(&fx, &net, "keep-b").await;
    ping_ok(&fx, &ca, &ip_b).await;

    fx.kill_daemon().await;
    fx.start_daemon().await;
    wait_network_ready(&fx).await;

    for (who, id, ip) in [("A", &a, &ip_a), ("B", &b, &ip_b)] {
        let (now, extra) = pod_ips(&fx, id).await;
        assert_eq!(&now, ip, "PodSandboxStatus({who}).network.ip after a daemon restart");
        assert!(extra.is_empty(), "PodSandboxStatus({who}).network.additional_ips after a restart: {extra:?}");
        let st = fx.pod_status_ok(id).await;
        assert_eq!(st.state, READY, "pod {who} after a daemon restart");
    }
    assert_eq!(ipv4_addrs_in(&fx, &ca, "eth0").await, vec![ip_a.clone()], "eth0 of pod A after the restart");
    ping_ok(&fx, &ca, &ip_b).await;
    ping_ok(&fx, &cb, &ip_a).await;
    assert_eq!(net.allocated_ips(), { let mut v = vec![ip_a.clone(), ip_b.clone()]; v.sort(); v }, "host-local allocations after the restart");

    fx.teardown_pod(&a).await;
    fx.teardown_pod(&b).await;
    assert_network_released(&net, "after both pods were removed after a restart");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 7. many pods at once

#[tokio::test(flavor = "multi_thread")]
async fn twenty_pods_in_parallel_get_distinct_ips() {
    let net = TestNet::new();
    net.write_bridge_conflist();
    let fx = start(&net).await;

    let mut tasks = Vec::new();
    for i in 0..20 {
        let cri = fx.cri.clone();
        tasks.push(tokio::spawn(async move {
            let pod = cri.pod_config(&format!("par-{i}"));
            let id = cri.run_pod(&pod).await;
            let (ip, extra) = pod_ips(&cri, &id).await;
            (id, ip, extra)
        }));
    }
    let mut pods = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(v) => pods.push(v),
            Err(e) => panic!("pod par-{i}: {e}"),
        }
    }
    for (id, ip, extra) in &pods {
        assert!(net.contains(ip), "pod {id}: ip {ip:?} not in {}", net.subnet());
        assert!(extra.is_empty(), "pod {id}: additional_ips {extra:?}");
    }
    let mut ips: Vec<String> = pods.iter().map(|(_, ip, _)| ip.clone()).collect();
    ips.sort();
    let mut distinct = ips.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 20, "20 pods got {} distinct IPs: {ips:?}", distinct.len());
    assert_eq!(net.allocated_ips(), ips, "host-local allocations = the pods' IPs");
    assert_eq!(net.bridge_ports().len(), 20, "interfaces on bridge {}", net.bridge);

    let mut tasks = Vec::new();
    for (id, _, _) in pods {
        let cri = fx.cri.clone();
        tasks.push(tokio::spawn(async move { cri.teardown_pod(&id).await }));
    }
    for t in tasks {
        t.await.expect("teardown task");
    }
    assert!(fx.list_pods(None).await.is_empty(), "pods left after teardown");
    assert_network_released(&net, "after 20 pods were removed");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 8. host network

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pod_skips_cni() {
    let net = TestNet::new();
    // the only network refuses every ADD: a host-network pod must not call it
    net.write_conflist("10-test.conflist", vec![net.fail_plugin(json!({}))]);
    let fx = start(&net).await;

    let mut pod = fx.pod_config("host-net");
    pod.hostname = String::new();
    pod.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options = Some(host_network_options());
    let id = fx.run_pod(&pod).await;
    let (ip, extra) = pod_ips(&fx, &id).await;
    assert!(ip.is_empty(), "PodSandboxStatus.network.ip of a host-network pod: {ip:?}");
    assert!(extra.is_empty(), "PodSandboxStatus.network.additional_ips of a host-network pod: {extra:?}");
    let marker = net.marker_lines();
    assert!(!marker.iter().any(|l| l == "ADD" || l == "DEL"), "the CNI plugin was called for a host-network pod: {marker:?}");

    // the config is live: an ordinary pod does go through the plugin (and fails)
    let err = expect_err(fx.run_pod_with(Some(fx.pod_config("pod-net")), "").await, "RunPodSandbox of an ordinary pod with a refusing plugin");
    assert!(err.message().contains(FAIL_PLUGIN_MSG), "ordinary pod: {}", describe(&err));

    let dels_before = net.marker_lines().iter().filter(|l| *l == "DEL").count();
    fx.teardown_pod(&id).await;
    let dels_after = net.marker_lines().iter().filter(|l| *l == "DEL").count();
    assert_eq!(dels_before, dels_after, "StopPodSandbox of a host-network pod ran CNI DEL: marker {:?}", net.marker_lines());
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 9. UpdateRuntimeConfig

#[tokio::test(flavor = "multi_thread")]
async fn update_runtime_config_accepts_a_pod_cidr() {
    let net = TestNet::new();
    net.write_bridge_conflist();
    let fx = start(&net).await;

    let mut c = fx.client.clone();
    let req = UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig { network_config: Some(NetworkConfig { pod_cidr: net.subnet() }) }),
    };
    if let Err(e) = within("UpdateRuntimeConfig", RPC_TIMEOUT, c.runtime.update_runtime_config(req)).await {
        panic!("UpdateRuntimeConfig(pod_cidr {}) failed: {}", net.subnet(), describe(&e));
    }
    let cond = network_condition(&fx).await;
    assert!(cond.status, "NetworkReady after UpdateRuntimeConfig: {cond:?}");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 10. what the plugins are given (CNI_ARGS, capability args), config changes without a restart

#[tokio::test(flavor = "multi_thread")]
async fn plugins_get_cni_args_and_only_declared_capability_args() {
    let net = TestNet::new();
    net.write_conflist("10-test.conflist", vec![net.fail_plugin(json!({ "portMappings": true }))]);
    let fx = start(&net).await;

    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let mut pod = fx.pod_config("args");
    pod.port_mappings = vec![
        PortMapping { protocol: Protocol::Tcp as i32, container_port: 8080, host_port: p1 as i32, host_ip: String::new() },
        PortMapping { protocol: Protocol::Udp as i32, container_port: 5353, host_port: p2 as i32, host_ip: "127.0.0.1".into() },
        // no host port: not a port mapping for CNI
        PortMapping { protocol: Protocol::Tcp as i32, container_port: 9090, host_port: 0, host_ip: String::new() },
        PortMapping { protocol: Protocol::Sctp as i32, container_port: 7000, host_port: p3 as i32, host_ip: String::new() },
    ];
    pod.annotations.insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
    pod.annotations.insert("kubernetes.io/egress-bandwidth".into(), "20M".into());
    let meta = pod.metadata.clone().unwrap();

    let err = expect_err(fx.run_pod_with(Some(pod.clone()), "").await, "RunPodSandbox with a refusing plugin");
    assert!(err.message().contains(FAIL_PLUGIN_MSG), "{}", describe(&err));

    let calls = net.plugin_calls();
    let add = calls.iter().find(|c| c.command == "ADD").unwrap_or_else(|| panic!("no ADD call recorded: {calls:?}"));
    let env = &add.env;
    assert_eq!(env.get("CNI_IFNAME").map(String::as_str), Some("eth0"), "CNI_IFNAME: {env:?}");
    let netns = env.get("CNI_NETNS").cloned().unwrap_or_default();
    assert!(netns.starts_with('/'), "CNI_NETNS should be the pod's netns path: {env:?}");
    let container_id = env.get("CNI_CONTAINERID").cloned().unwrap_or_default();
    assert!(!container_id.is_empty(), "CNI_CONTAINERID: {env:?}");
    let cni_path = env.get("CNI_PATH").cloned().unwrap_or_default();
    assert!(
        cni_path.split(':').any(|p| p == SYSTEM_CNI_BIN) && cni_path.split(':').any(|p| p == net.bin_dir().to_str().unwrap()),
        "CNI_PATH should list the configured bin dirs: {cni_path:?}"
    );
    let args = add.cni_args();
    assert_eq!(args.get("IgnoreUnknown").map(String::as_str), Some("1"), "CNI_ARGS: {:?}", env.get("CNI_ARGS"));
    assert_eq!(args.get("K8S_POD_NAMESPACE"), Some(&meta.namespace), "CNI_ARGS: {:?}", env.get("CNI_ARGS"));
    assert_eq!(args.get("K8S_POD_NAME"), Some(&meta.name), "CNI_ARGS: {:?}", env.get("CNI_ARGS"));
    assert_eq!(args.get("K8S_POD_UID"), Some(&meta.uid), "CNI_ARGS: {:?}", env.get("CNI_ARGS"));
    let infra = args.get("K8S_POD_INFRA_CONTAINER_ID").cloned().unwrap_or_default();
    assert!(!infra.is_empty(), "CNI_ARGS without K8S_POD_INFRA_CONTAINER_ID: {:?}", env.get("CNI_ARGS"));
    assert_eq!(infra, container_id, "K8S_POD_INFRA_CONTAINER_ID vs CNI_CONTAINERID");

    let conf = add.config();
    assert_eq!(conf["name"], json!(net.name), "network name on the plugin's stdin: {conf}");
    assert_eq!(conf["type"], json!("fail-plugin"), "type on the plugin's stdin: {conf}");
    assert_eq!(conf["cniVersion"], json!("1.0.0"), "cniVersion on the plugin's stdin: {conf}");
    let rc = &conf["runtimeConfig"];
    let mut got: Vec<(u64, u64, String, String)> = rc["portMappings"]
        .as_array()
        .unwrap_or_else(|| panic!("runtimeConfig.portMappings missing for a plugin declaring portMappings: {conf}"))
        .iter()
        .map(|m| {
            (
                m["hostPort"].as_u64().unwrap_or_else(|| panic!("hostPort in {m}")),
                m["containerPort"].as_u64().unwrap_or_else(|| panic!("containerPort in {m}")),
                m["protocol"].as_str().unwrap_or_else(|| panic!("protocol in {m}")).to_string(),
                m.get("hostIP").and_then(Value::as_str).unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (p1 as u64, 8080, "tcp".to_string(), String::new()),
        (p2 as u64, 5353, "udp".to_string(), "127.0.0.1".to_string()),
        (p3 as u64, 7000, "sctp".to_string(), String::new()),
    ];
    want.sort();
    assert_eq!(got, want, "runtimeConfig.portMappings (host_port 0 left out): {conf}");
    assert!(rc.get("bandwidth").is_none(), "runtimeConfig.bandwidth given to a plugin that does not declare it: {conf}");

    let del = calls.iter().find(|c| c.command == "DEL").unwrap_or_else(|| panic!("no DEL after the failed ADD: {calls:?}"));
    assert_eq!(del.env.get("CNI_CONTAINERID"), Some(&container_id), "DEL's CNI_CONTAINERID");
    assert_eq!(del.env.get("CNI_IFNAME").map(String::as_str), Some("eth0"), "DEL's CNI_IFNAME");

    // The config changes under the running daemon: now only bandwidth is declared (and the network
    // has another name, so the recorded stdin tells which config the daemon used).
    let bw_name = format!("{}-bw", net.name);
    let v = net.conflist(&bw_name, vec![net.fail_plugin(json!({ "bandwidth": true }))]);
    net.write_conf("10-test.conflist", &serde_json::to_string_pretty(&v).unwrap());
    let start = Instant::now();
    let conf = loop {
        let err = expect_err(fx.run_pod_with(Some(pod.clone()), "").await, "RunPodSandbox with the changed config");
        assert!(err.message().contains(FAIL_PLUGIN_MSG), "{}", describe(&err));
        let last = net.plugin_calls().into_iter().rfind(|c| c.command == "ADD").unwrap().config();
        if last["name"] == json!(bw_name) {
            break last;
        }
        assert!(start.elapsed() < T10, "the daemon still uses the old config 10 s after it changed: {last}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let rc = &conf["runtimeConfig"];
    assert!(rc.get("portMappings").is_none(), "runtimeConfig.portMappings given to a plugin that does not declare it: {conf}");
    let bw = &rc["bandwidth"];
    assert_eq!(bw["ingressRate"].as_u64(), Some(10_000_000), "runtimeConfig.bandwidth.ingressRate (bits/s) for \"10M\": {conf}");
    assert_eq!(bw["egressRate"].as_u64(), Some(20_000_000), "runtimeConfig.bandwidth.egressRate (bits/s) for \"20M\": {conf}");
    eprintln!("[report] bandwidth capability arg: {bw}");

    assert!(fx.list_pods(None).await.is_empty(), "pods listed after failed RunPodSandbox calls");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 11. RemovePodSandbox without StopPodSandbox

#[tokio::test(flavor = "multi_thread")]
async fn remove_without_stop_releases_the_network() {
    let net = TestNet::new();
    net.write_bridge_conflist();
    let fx = start(&net).await;

    let (_pod, id, _ctr, ip) = sleeper_pod(&fx, &net, "rm-direct").await;
    assert_eq!(net.allocated_ips(), vec![ip.clone()], "host-local allocations while the pod runs");
    fx.remove_pod_ok(&id).await;
    assert_network_released(&net, "after RemovePodSandbox of a ready pod (no StopPodSandbox first)");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 12. the config disappears under running pods

#[tokio::test(flavor = "multi_thread")]
async fn pods_keep_and_release_their_network_when_the_config_is_gone() {
    let net = TestNet::new();
    let conf = net.write_bridge_conflist();
    let mut fx = start(&net).await;

    let (_pa, a, ca, ip_a) = sleeper_pod(&fx, &net, "gone-a").await;
    let (_pb, b, _cb, ip_b) = sleeper_pod(&fx, &net, "gone-b").await;

    std::fs::remove_file(&conf).unwrap();
    wait_network_condition(&fx, "false after the config was removed", T10, |c| !c.status).await;
    ping_ok(&fx, &ca, &ip_b).await;
    // no config: a new pod cannot get a network, and fails cleanly
    let err = expect_err(fx.run_pod_with(Some(fx.pod_config("gone-c")), "").await, "RunPodSandbox without a network config");
    eprintln!("[report] RunPodSandbox without a network config: {}", describe(&err));
    assert_eq!(fx.list_pods(None).await.len(), 2, "pods listed after a failed RunPodSandbox");

    // across a daemon restart without a config
    fx.kill_daemon().await;
    fx.start_daemon().await;
    assert_eq!(pod_ips(&fx, &a).await.0, ip_a, "pod A's IP after a restart without a network config");
    ping_ok(&fx, &ca, &ip_b).await;

    // DEL uses the config the pod was set up with
    fx.teardown_pod(&a).await;
    assert_eq!(net.allocated_ips(), vec![ip_b.clone()], "allocations after pod A was removed without a network config");
    fx.teardown_pod(&b).await;
    assert_network_released(&net, "after both pods were removed without a network config");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 13. plugin timeout

#[tokio::test(flavor = "multi_thread")]
async fn hanging_plugin_is_killed_after_the_timeout() {
    let net = TestNet::new();
    net.write_conflist("10-test.conflist", vec![net.bridge_plugin(), net.fail_plugin(json!({}))]);
    std::fs::write(net.hang_switch(), "").unwrap();
    let fx = Fixture::start_with_config(&net.daemon_config_with_timeout(3)).await;
    wait_network_ready(&fx).await;

    let t = Instant::now();
    let err = expect_err(fx.run_pod_with(Some(fx.pod_config("hang")), "").await, "RunPodSandbox with a plugin that hangs");
    let took = t.elapsed();
    eprintln!("[report] RunPodSandbox with a hanging plugin (timeout 3 s) failed after {took:?}: {}", describe(&err));
    assert!(took < Duration::from_secs(20), "RunPodSandbox with plugin_timeout_secs = 3 took {took:?}");
    let msg = err.message().to_lowercase();
    assert!(msg.contains("timed out") || msg.contains("timeout"), "the error should say the plugin timed out: {}", describe(&err));

    let start = Instant::now();
    while let Some(pid) = net.hung_plugin_alive() {
        assert!(start.elapsed() < Duration::from_secs(5), "the hung plugin (pid {pid}) still runs after RunPodSandbox failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let marker = net.marker_lines();
    let last_add = marker.iter().rposition(|l| l == "ADD").unwrap_or_else(|| panic!("no ADD recorded: {marker:?}"));
    assert!(marker[last_add..].iter().any(|l| l == "DEL"), "no DEL after the timed-out ADD: {marker:?}");
    assert_network_released(&net, "after the timed-out ADD");
    assert!(fx.list_pods(None).await.is_empty(), "pods listed after a timed-out RunPodSandbox");

    // the daemon is not wedged: the next ADD (no longer hanging) fails the ordinary way, fast
    std::fs::remove_file(net.hang_switch()).unwrap();
    let err = expect_err(fx.run_pod_with(Some(fx.pod_config("hang")), "").await, "RunPodSandbox after the plugin stopped hanging");
    assert!(err.message().contains(FAIL_PLUGIN_MSG), "{}", describe(&err));
    assert_network_released(&net, "after the second failed ADD");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 14. CNI 1.1 STATUS

#[tokio::test(flavor = "multi_thread")]
async fn network_ready_follows_the_plugins_status() {
    let net = TestNet::new();
    let v = json!({ "cniVersion": "1.1.0", "name": net.name, "plugins": [net.fail_plugin(json!({}))] });
    net.write_conf("10-test.conflist", &serde_json::to_string_pretty(&v).unwrap());
    let fx = Fixture::start_with_config(&net.daemon_config()).await;
    wait_network_condition(&fx, "true while STATUS succeeds", T10, |c| c.status).await;

    std::fs::write(net.status_fail_switch(), "").unwrap();
    let c = wait_network_condition(&fx, "false while STATUS fails", T10, |c| !c.status).await;
    assert_eq!(c.reason, NOT_READY_REASON, "{c:?}");
    assert!(c.message.contains(STATUS_FAIL_MSG), "NetworkReady message should carry STATUS' msg {STATUS_FAIL_MSG:?}: {:?}", c.message);
    eprintln!("[report] NetworkReady while STATUS fails: {c:?}");

    std::fs::remove_file(net.status_fail_switch()).unwrap();
    wait_network_condition(&fx, "true again once STATUS succeeds", T10, |c| c.status).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 15. host ports across a restart

#[tokio::test(flavor = "multi_thread")]
async fn host_port_survives_a_restart_and_stop_removes_it() {
    assert!(iptables_available(), "iptables is missing (portmap needs it): apt-get install -y iptables");
    let net = TestNet::new();
    net.write_conflist("10-test.conflist", vec![net.bridge_plugin(), net.portmap_plugin()]);
    let mut fx = start(&net).await;

    let host_port = free_port();
    let mut pod = fx.pod_config("hostport-restart");
    pod.port_mappings = vec![PortMapping { protocol: Protocol::Tcp as i32, container_port: 8080, host_port: host_port as i32, host_ip: String::new() }];
    let (id, _ip) = run_pod_in(&fx, &net, &pod).await;
    fx.create_and_start(&id, &pod, fx.container_config("web", &["sh", "-c", &httpd_script("still here")])).await;
    let gw = sock(&net.gateway(), host_port);
    host_http_ok(gw, "still here", T30).await;

    fx.kill_daemon().await;
    fx.start_daemon().await;
    host_http_ok(gw, "still here", T30).await;

    // DEL after the restart must still hand portmap the pod's port mappings, or it removes nothing
    fx.stop_pod_ok(&id).await;
    let left = net.iptables_lines();
    assert!(left.is_empty(), "portmap rules left after StopPodSandbox after a daemon restart:\n{}", left.join("\n"));
    let after = host_http_once(gw).await;
    assert!(after.is_err(), "{gw} still answers after StopPodSandbox: {after:?}");
    fx.remove_pod_ok(&id).await;
    assert_network_released(&net, "after the pod was removed");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 16. many host ports at once

#[tokio::test(flavor = "multi_thread")]
async fn six_pods_with_host_ports_in_parallel() {
    assert!(iptables_available(), "iptables is missing (portmap needs it): apt-get install -y iptables");
    let net = TestNet::new();
    net.write_conflist("10-test.conflist", vec![net.bridge_plugin(), net.portmap_plugin()]);
    let fx = start(&net).await;

    let mut tasks = Vec::new();
    for i in 0..6 {
        let cri = fx.cri.clone();
        let host_port = free_port();
        tasks.push(tokio::spawn(async move {
            let mut pod = cri.pod_config(&format!("hp-{i}"));
            pod.port_mappings = vec![PortMapping { protocol: Protocol::Tcp as i32, container_port: 8080, host_port: host_port as i32, host_ip: String::new() }];
            let id = cri.run_pod(&pod).await;
            cri.create_and_start(&id, &pod, cri.container_config("web", &["sh", "-c", &httpd_script(&format!("pod {i}"))])).await;
            (id, host_port, format!("pod {i}"))
        }));
    }
    let mut pods = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(v) => pods.push(v),
            Err(e) => panic!("pod hp-{i}: {e}"),
        }
    }
    for (_, port, body) in &pods {
        host_http_ok(sock(&net.gateway(), *port), body, T30).await;
    }

    let mut tasks = Vec::new();
    for (id, _, _) in &pods {
        let cri = fx.cri.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move { cri.teardown_pod(&id).await }));
    }
    for t in tasks {
        t.await.expect("teardown task");
    }
    assert_network_released(&net, "after 6 pods with host ports were removed");
    for (_, port, _) in &pods {
        let r = host_http_once(sock(&net.gateway(), *port)).await;
        assert!(r.is_err(), "host port {port} still answers after its pod was removed: {r:?}");
    }
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 17. additional IPs

#[tokio::test(flavor = "multi_thread")]
async fn two_ranges_give_a_primary_and_an_additional_ip() {
    let net = TestNet::new();
    let ranges = json!([
        [{ "subnet": format!("{}.{}.{}.0/25", net.net[0], net.net[1], net.net[2]), "gateway": net.host(1) }],
        [{ "subnet": format!("{}.{}.{}.128/25", net.net[0], net.net[1], net.net[2]), "gateway": net.host(129) }],
    ]);
    // The bridge plugin (1.1.1) puts one IPv4 gateway address on a bridge only ("already has an IP
    // address different from …"): without isGateway the bridge stays address-less.
    let mut bridge = net.bridge_plugin_with_ranges(ranges);
    bridge["isGateway"] = json!(false);
    net.write_conflist("10-test.conflist", vec![bridge]);
    let fx = start(&net).await;

    let pod = fx.pod_config("two-ips");
    let id = fx.run_pod(&pod).await;
    let ctr = fx.create_and_start(&id, &pod, fx.container_config("sleeper", &["sleep", "1000"])).await;
    let (ip, extra) = pod_ips(&fx, &id).await;
    let last = |s: &str| s.parse::<Ipv4Addr>().map(|a| a.octets()[3]).unwrap_or(0);
    assert!(net.contains(&ip) && last(&ip) < 128, "network.ip should be the first range's address: {ip:?} (additional {extra:?})");
    assert_eq!(extra.len(), 1, "additional_ips should hold the second range's address: {extra:?}");
    assert!(net.contains(&extra[0]) && last(&extra[0]) > 128, "additional_ips[0] = {:?} is not in the second range", extra[0]);

    let mut inside = ipv4_addrs_in(&fx, &ctr, "eth0").await;
    inside.sort();
    let mut want = vec![ip.clone(), extra[0].clone()];
    want.sort();
    assert_eq!(inside, want, "eth0's addresses vs PodSandboxStatus");
    assert_eq!(net.allocated_ips(), want, "host-local allocations");

    fx.teardown_pod(&id).await;
    assert_network_released(&net, "after the pod was removed");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// 18. the daemon dies in the middle of ADD

#[tokio::test(flavor = "multi_thread")]
async fn daemon_killed_during_add_leaves_nothing_allocated_after_restart() {
    killed_during_add(NamespaceMode::Container).await;
}

/// The same with a shared PID namespace (`shareProcessNamespace: true`): the pod's infra process
/// already runs when ADD starts, and must not outlive the interrupted pod.
#[tokio::test(flavor = "multi_thread")]
async fn daemon_killed_during_add_of_a_shared_pid_pod_leaves_nothing_after_restart() {
    killed_during_add(NamespaceMode::Pod).await;
}

async fn killed_during_add(pid_mode: NamespaceMode) {
    let net = TestNet::new();
    // bridge allocates an address, then the test plugin hangs: the daemon is killed right there
    net.write_conflist("10-test.conflist", vec![net.bridge_plugin(), net.fail_plugin(json!({}))]);
    std::fs::write(net.hang_switch(), "").unwrap();
    let mut fx = start(&net).await;
    // Whatever infra process of this daemon is left (the daemon's bug, not ours) is killed by pid
    // when the test ends, failed or not, after being reported below.
    let _reaper = InfraReaper(format!("__pause {}", fx.daemon.dir().display()));

    let cri = fx.cri.clone();
    let mut pod = fx.pod_config("crash");
    pod.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid = pid_mode as i32;
    let run = tokio::spawn(async move { cri.run_pod_with(Some(pod), "").await });
    let start = Instant::now();
    let pid = loop {
        if let Some(pid) = net.hung_plugin_alive() {
            break pid;
        }
        assert!(start.elapsed() < T30, "the test plugin's ADD never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(net.allocated_ips().len(), 1, "bridge ADD should have allocated an address before the test plugin hangs");

    fx.kill_daemon().await;
    let state = fx.daemon.state().to_str().unwrap().to_string();
    let mounts: Vec<String> = mount_points().into_iter().filter(|m| m.starts_with(&state)).collect();
    eprintln!("[report] mounts under the daemon's state dir when it was killed during ADD: {mounts:#?}");
    let r = within("RunPodSandbox interrupted by the daemon's death", T30, run).await.expect("task");
    assert!(r.is_err(), "RunPodSandbox succeeded although the daemon was killed during ADD: {r:?}");
    // the orphaned plugin (ours) is not the restarted daemon's business
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    std::fs::remove_file(net.hang_switch()).unwrap();

    fx.start_daemon().await;
    let pods = fx.list_pods(None).await;
    eprintln!(
        "[report] after a restart, the pod interrupted during ADD is listed as: {:?}; allocations: {:?}",
        pods.iter().map(|p| (p.id.clone(), p.state)).collect::<Vec<_>>(),
        net.allocated_ips()
    );
    for p in &pods {
        assert_ne!(p.state, READY, "a pod whose ADD never finished is listed READY after a restart: {p:?}");
        // kubelet garbage-collects a NotReady sandbox it does not know: Stop, then Remove
        fx.stop_pod_ok(&p.id).await;
        fx.remove_pod_ok(&p.id).await;
    }
    assert_network_released(&net, "after the interrupted pod was stopped and removed");
    let marker = net.marker_lines();
    eprintln!("[report] test plugin calls: {marker:?}");
    fx.assert_no_leaks().await;
}

/// Kills (SIGKILL, by pid) processes whose command line contains `.0` when dropped.
struct InfraReaper(String);

impl Drop for InfraReaper {
    fn drop(&mut self) {
        for pid in pids_with_cmdline(&self.0) {
            eprintln!("[InfraReaper] killing leftover pod infra process {pid} ({})", self.0);
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
