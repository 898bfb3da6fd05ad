//! CNI test networks: one private bridge + host-local subnet per test, plus the CRI calls the
//! network tests need (Status' NetworkReady condition, pod IPs, addresses and routes inside a pod).
//!
//! [`TestNet`] owns a temp dir with `conf/` (the daemon's `cni.conf_dir`), `bin/` (an extra
//! `cni.bin_dirs` entry for test plugins), `ipam/` (host-local's `dataDir`) and `calls/` (what the
//! recording test plugin saw). Each one gets its own bridge name (`crit<pid%1000><n>`, at most 15
//! characters) and its own `10.x.y.0/24` (x in 200..=249, chosen so no route of the host overlaps
//! it), so tests can run in parallel. The configs it writes never ask for a default route, a
//! default gateway or masquerading: traffic stays on the bridge between the host's `.1` and the
//! pods.
//!
//! Dropping it (also when the test failed) deletes the bridge and whatever veth is still attached
//! to it, the iptables rules and chains portmap left for its network, the shared
//! `CNI-HOSTPORT-*` chains if this process created them and no port mapping is left anywhere, and
//! puts `net.ipv4.ip_forward` back once the last `TestNet` of the process is gone (the bridge
//! plugin turns it on for `isGateway`). Declare the `TestNet` *before* the `Fixture`: locals drop
//! in reverse order, and the fixture's cleanup runs CNI DEL, which needs the conf and bin dirs.

use super::pods::{describe, within, Cri, RPC_TIMEOUT};
use k8s_cri::v1::*;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha512};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Debian's containernetworking-plugins.
pub const SYSTEM_CNI_BIN: &str = "/usr/lib/cni";
pub const NETWORK_READY: &str = "NetworkReady";
pub const NOT_READY_REASON: &str = "NetworkPluginNotReady";
/// The test plugin's ADD error message.
pub const FAIL_PLUGIN_MSG: &str = "test plugin refuses";
/// The test plugin's STATUS error message (while the status-fail switch exists).
pub const STATUS_FAIL_MSG: &str = "test plugin not available";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Process-wide bookkeeping for what several `TestNet`s share.
struct Shared {
    live: usize,
    /// `net.ipv4.ip_forward` before the first TestNet of the process.
    ip_forward: Option<String>,
    /// nat chains that existed before the first TestNet of the process.
    chains_before: Option<BTreeSet<String>>,
    /// nftables tables (`ip nat`, …) that existed before the first TestNet of the process.
    tables_before: Option<BTreeSet<String>>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared { live: 0, ip_forward: None, chains_before: None, tables_before: None });

pub struct TestNet {
    dir: TempDir,
    /// Linux bridge name (≤ 15 characters).
    pub bridge: String,
    /// CNI network name (unique per test: it names host-local's dir and portmap's comments).
    pub name: String,
    /// `10.x.y` of the subnet `10.x.y.0/24`.
    pub net: [u8; 3],
}

impl TestNet {
    /// A fresh bridge name and /24 that nothing on the host uses, and the temp dirs.
    pub fn new() -> TestNet {
        let pid = std::process::id();
        let routes = host_routes();
        let (bridge, net) = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            assert!(n < 1000, "no free bridge name / subnet found");
            let bridge = format!("crit{}{}", pid % 1000, n);
            assert!(bridge.len() <= 15, "bridge name {bridge} too long");
            let k = ((pid % 1000) * 16 + n) % (50 * 256);
            let net = [10u8, (200 + k / 256) as u8, (k % 256) as u8];
            let base = u32::from(Ipv4Addr::new(net[0], net[1], net[2], 0));
            let overlaps = routes.iter().any(|(dst, mask)| {
                let m = mask & 0xffff_ff00; // the shorter of the two masks
                *mask != 0 && (dst & m) == (base & m)
            });
            if !overlaps && !Path::new("/sys/class/net").join(&bridge).exists() {
                break (bridge, net);
            }
        };
        {
            let mut s = SHARED.lock().unwrap();
            if s.live == 0 {
                s.ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok().map(|v| v.trim().to_string());
            }
            if s.chains_before.is_none() {
                s.chains_before = Some(nat_chains());
            }
            if s.tables_before.is_none() {
                s.tables_before = Some(nft_tables());
            }
            s.live += 1;
        }
        let dir = tempfile::Builder::new().prefix("cri-lxc-cni-").tempdir().expect("tempdir");
        for d in ["conf", "bin", "ipam", "calls"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        TestNet { dir, name: format!("crit-{bridge}"), bridge, net }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The daemon's `cni.conf_dir`.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }
    /// Test plugins (second entry of `cni.bin_dirs`).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    /// host-local's `dataDir`; the allocations live in `<data_dir>/<name>/`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }
    /// One line per call of the test plugin (`ADD`, `DEL`, `VERSION`, …).
    pub fn marker(&self) -> PathBuf {
        self.dir.path().join("fail-plugin.marker")
    }
    pub fn calls_dir(&self) -> PathBuf {
        self.dir.path().join("calls")
    }

    /// `10.x.y.0/24`
    pub fn subnet(&self) -> String {
        format!("{}.{}.{}.0/24", self.net[0], self.net[1], self.net[2])
    }
    /// `10.x.y.1`: the bridge's address on the host (`isGateway`).
    pub fn gateway(&self) -> String {
        self.host(1)
    }
    pub fn host(&self, n: u8) -> String {
        format!("{}.{}.{}.{n}", self.net[0], self.net[1], self.net[2])
    }
    /// `ip` is a pod address of the subnet (not the network, gateway or broadcast address).
    pub fn contains(&self, ip: &str) -> bool {
        match ip.parse::<Ipv4Addr>() {
            Ok(a) => {
                let o = a.octets();
                o[..3] == self.net[..] && o[3] > 1 && o[3] < 255
            }
            Err(_) => false,
        }
    }

    /// The daemon config: debug logging and a `[cni]` section on this net's dirs.
    pub fn daemon_config(&self) -> String {
        self.daemon_config_with_timeout(30)
    }

    /// [`daemon_config`](Self::daemon_config) with another `plugin_timeout_secs`.
    pub fn daemon_config_with_timeout(&self, plugin_timeout_secs: u64) -> String {
        format!(
            "log_level = \"debug\"\n\n[cni]\nconf_dir = {:?}\nbin_dirs = [{:?}, {:?}]\nplugin_timeout_secs = {plugin_timeout_secs}\n",
            self.conf_dir().to_str().unwrap(),
            SYSTEM_CNI_BIN,
            self.bin_dir().to_str().unwrap()
        )
    }

    // ----- network configs

    /// bridge + host-local on this net: the host gets `.1` on the bridge, pods get no routes
    /// (no default route), no masquerading.
    pub fn bridge_plugin(&self) -> Value {
        self.bridge_plugin_with_ranges(json!([[{ "subnet": self.subnet(), "gateway": self.gateway() }]]))
    }

    /// [`bridge_plugin`](Self::bridge_plugin) with other host-local `ranges` (inside the /24!).
    pub fn bridge_plugin_with_ranges(&self, ranges: Value) -> Value {
        json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "isDefaultGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "routes": [],
                "dataDir": self.data_dir().to_str().unwrap(),
            },
        })
    }

    /// portmap, declaring the `portMappings` capability.
    pub fn portmap_plugin(&self) -> Value {
        json!({ "type": "portmap", "capabilities": { "portMappings": true }, "snat": true })
    }

    /// The recording test plugin (installed into the bin dir), with `capabilities` (`{}` = none).
    pub fn fail_plugin(&self, capabilities: Value) -> Value {
        self.install_fail_plugin();
        json!({ "type": "fail-plugin", "capabilities": capabilities })
    }

    /// A conflist `{cniVersion 1.0.0, name, plugins}`.
    pub fn conflist(&self, name: &str, plugins: Vec<Value>) -> Value {
        json!({ "cniVersion": "1.0.0", "name": name, "plugins": plugins })
    }

    /// Write `<conf>/<file>` atomically (the daemon watches the dir; it must never see half a file).
    pub fn write_conf(&self, file: &str, content: &str) -> PathBuf {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        let path = self.conf_dir().join(file);
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Write a conflist of `plugins` named after this net as `<conf>/<file>`.
    pub fn write_conflist(&self, file: &str, plugins: Vec<Value>) -> PathBuf {
        let v = self.conflist(&self.name, plugins);
        self.write_conf(file, &serde_json::to_string_pretty(&v).unwrap())
    }

    /// `10-<name>.conflist` with bridge + host-local.
    pub fn write_bridge_conflist(&self) -> PathBuf {
        self.write_conflist("10-test.conflist", vec![self.bridge_plugin()])
    }

    /// While this file exists, the test plugin's ADD writes its pid to [`hang_pid_file`] and
    /// becomes `sleep 300` (a plugin that hangs).
    pub fn hang_switch(&self) -> PathBuf {
        self.dir.path().join("add-hang")
    }
    pub fn hang_pid_file(&self) -> PathBuf {
        self.dir.path().join("hang.pid")
    }
    /// While this file exists, the test plugin's STATUS fails with code 50 and [`STATUS_FAIL_MSG`].
    pub fn status_fail_switch(&self) -> PathBuf {
        self.dir.path().join("status-fail")
    }

    /// Install `<bin>/fail-plugin`: records every call (`calls/<nanos>-<pid>-<CMD>.env|.stdin`, and
    /// the command on a line of the marker file); ADD fails with code 7 and [`FAIL_PLUGIN_MSG`]
    /// (or hangs, see [`hang_switch`]), DEL/CHECK/GC succeed, STATUS succeeds unless
    /// [`status_fail_switch`] exists, VERSION reports 0.3.0 … 1.1.0.
    pub fn install_fail_plugin(&self) -> PathBuf {
        let path = self.bin_dir().join("fail-plugin");
        let script = format!(
            r#"#!/bin/sh
# cri-lxc network test plugin: records every call, refuses ADD.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
calls={calls}
rec="$calls/$(date +%s%N)-$$-$CNI_COMMAND"
cat > "$rec.stdin"
env | grep '^CNI_' > "$rec.env"
echo "$CNI_COMMAND" >> {marker}
case "$CNI_COMMAND" in
ADD)
    if [ -e {hang} ]; then
        echo $$ > {hang_pid}
        exec sleep 300
    fi
    echo '{{"cniVersion":"1.0.0","code":7,"msg":"{msg}","details":"on purpose"}}'
    exit 1
    ;;
STATUS)
    if [ -e {status_fail} ]; then
        echo '{{"cniVersion":"1.1.0","code":50,"msg":"{status_msg}"}}'
        exit 1
    fi
    exit 0
    ;;
VERSION)
    echo '{{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}}'
    exit 0
    ;;
*)
    exit 0
    ;;
esac
"#,
            calls = sh_quote(self.calls_dir().to_str().unwrap()),
            marker = sh_quote(self.marker().to_str().unwrap()),
            msg = FAIL_PLUGIN_MSG,
            hang = sh_quote(self.hang_switch().to_str().unwrap()),
            hang_pid = sh_quote(self.hang_pid_file().to_str().unwrap()),
            status_fail = sh_quote(self.status_fail_switch().to_str().unwrap()),
            status_msg = STATUS_FAIL_MSG,
        );
        let tmp = self.bin_dir().join(".fail-plugin.tmp");
        std::fs::write(&tmp, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Lines of the marker file (the commands the test plugin ran, in order).
    pub fn marker_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.marker()).unwrap_or_default().lines().map(|l| l.to_string()).collect()
    }

    /// Every recorded call of the test plugin, oldest first.
    pub fn plugin_calls(&self) -> Vec<PluginCall> {
        let mut names: Vec<String> = super::dir_entries(&self.calls_dir()).into_iter().filter(|n| n.ends_with(".env")).collect();
        names.sort_by_key(|n| {
            let nanos: u128 = n.split('-').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            (nanos, n.clone())
        });
        names
            .into_iter()
            .map(|n| {
                let stem = n.trim_end_matches(".env").to_string();
                let env_text = std::fs::read_to_string(self.calls_dir().join(&n)).unwrap_or_default();
                let env: HashMap<String, String> = env_text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let stdin = std::fs::read_to_string(self.calls_dir().join(format!("{stem}.stdin"))).unwrap_or_default();
                PluginCall { command: env.get("CNI_COMMAND").cloned().unwrap_or_default(), env, stdin }
            })
            .collect()
    }

    // ----- host-side inspection

    /// Addresses host-local has allocated on this net right now (file names in
    /// `<data_dir>/<name>/` that are IPv4 addresses), sorted.
    pub fn allocated_ips(&self) -> Vec<String> {
        let mut v: Vec<String> = super::dir_entries(&self.data_dir().join(&self.name))
            .into_iter()
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// Content of host-local's allocation file for `ip` (the container id and interface name).
    pub fn allocation(&self, ip: &str) -> Option<String> {
        std::fs::read_to_string(self.data_dir().join(&self.name).join(ip)).ok()
    }

    /// Interfaces attached to the bridge (the host ends of pod veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        super::dir_entries(&Path::new("/sys/class/net").join(&self.bridge).join("brif"))
    }

    pub fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    /// The per-container DNAT chain portmap creates for `container_id` on this network
    /// (`CNI-DN-` + sha512(name + id), cut to 28 characters, as in CNI's `utils.FormatChainName`).
    pub fn portmap_dn_chain(&self, container_id: &str) -> String {
        let h = hex::encode(Sha512::digest(format!("{}{}", self.name, container_id).as_bytes()));
        format!("CNI-DN-{h}")[..28].to_string()
    }

    /// Lines of `iptables-save` (every table) that belong to this net: rules whose comment names
    /// it, rules in or jumping to its per-container chains, and those chains' declarations.
    pub fn iptables_lines(&self) -> Vec<String> {
        let save = iptables_save(None);
        let tag = format!("name: \\\"{}\\\"", self.name);
        let chains = self.own_dn_chains(&save);
        save.lines()
            .filter(|l| l.contains(&tag) || chains.iter().any(|c| l.contains(c.as_str())))
            .map(|l| l.to_string())
            .collect()
    }

    /// CNI-DN-* chains jumped to by a rule whose comment names this net.
    fn own_dn_chains(&self, save: &str) -> BTreeSet<String> {
        let tag = format!("name: \\\"{}\\\"", self.name);
        save.lines()
            .filter(|l| l.contains(&tag))
            .filter_map(|l| l.split(" -j ").nth(1))
            .filter_map(|t| t.split_whitespace().next())
            .filter(|t| t.starts_with("CNI-DN-"))
            .map(|t| t.to_string())
            .collect()
    }

    /// Delete what portmap left for this net (best effort); returns a description of what was
    /// removed, for the test's report.
    pub fn cleanup_iptables(&self) -> Vec<String> {
        let mut removed = Vec::new();
        if !iptables_available() {
            return removed;
        }
        let save = iptables_save(Some("nat"));
        let tag = format!("name: \\\"{}\\\"", self.name);
        let chains = self.own_dn_chains(&save);
        // rules naming this net, or jumping to its chains, in any chain
        for l in save.lines() {
            let Some(rest) = l.strip_prefix("-A ") else { continue };
            let jumps_to_ours = chains.iter().any(|c| rest.contains(&format!("-j {c}")));
            if l.contains(&tag) || jumps_to_ours {
                let cmd = format!("iptables -w -t nat -D {rest}");
                if sh(&cmd) {
                    removed.push(format!("rule: {rest}"));
                }
            }
        }
        for c in &chains {
            if sh(&format!("iptables -w -t nat -F {c} && iptables -w -t nat -X {c}")) {
                removed.push(format!("chain: {c}"));
            }
        }
        removed
    }

    /// Delete the bridge and every interface still attached to it (best effort).
    pub fn cleanup_links(&self) -> Vec<String> {
        let mut removed = Vec::new();
        for port in self.bridge_ports() {
            if run_quiet("ip", &["link", "del", &port]) {
                removed.push(format!("veth {port}"));
            }
        }
        if self.bridge_exists() && run_quiet("ip", &["link", "del", &self.bridge]) {
            removed.push(format!("bridge {}", self.bridge));
        }
        removed
    }
}

impl TestNet {
    /// The hanging test plugin's process if it is still alive (`sleep 300` with the recorded pid).
    pub fn hung_plugin_alive(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.hang_pid_file()).ok()?.trim().parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next().map(|s| s.to_string()));
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (cmd == b"sleep\x00300\x00" && state.as_deref() != Some("Z")).then_some(pid)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let mut removed = Vec::new();
        if let Some(pid) = self.hung_plugin_alive() {
            // our hanging test plugin, left running by whoever should have killed it
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            removed.push(format!("hung test plugin pid {pid}"));
        }
        removed.extend(self.cleanup_links());
        removed.extend(self.cleanup_iptables());
        let mut s = SHARED.lock().unwrap();
        s.live -= 1;
        if s.live == 0 {
            // shared portmap chains this process created, once no port mapping is left anywhere
            let now = nat_chains();
            let before = s.chains_before.clone().unwrap_or_default();
            let any_dn = now.iter().any(|c| c.starts_with("CNI-DN-"));
            let shared: Vec<&String> = now.iter().filter(|c| c.starts_with("CNI-HOSTPORT-") && !before.contains(*c)).collect();
            if !any_dn && !shared.is_empty() {
                let save = iptables_save(Some("nat"));
                for l in save.lines() {
                    let Some(rest) = l.strip_prefix("-A ") else { continue };
                    if shared.iter().any(|c| rest.contains(&format!("-j {c}"))) && !shared.iter().any(|c| rest.starts_with(&format!("{c} "))) {
                        sh(&format!("iptables -w -t nat -D {rest}"));
                    }
                }
                for c in &shared {
                    sh(&format!("iptables -w -t nat -F {c}"));
                }
                for c in &shared {
                    if sh(&format!("iptables -w -t nat -X {c}")) {
                        removed.push(format!("shared chain: {c}"));
                    }
                }
            }
            // iptables-nft tables portmap created (only builtin chains, no rule left)
            let before = s.tables_before.clone().unwrap_or_default();
            for t in nft_tables().difference(&before) {
                let Some((family, table)) = t.split_once(' ') else { continue };
                if !matches!(family, "ip" | "ip6") {
                    continue;
                }
                let out = Command::new("nft").args(["list", "table", family, table]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
                let builtin = ["PREROUTING", "INPUT", "OUTPUT", "FORWARD", "POSTROUTING"];
                let empty = !out.is_empty()
                    && out.lines().map(str::trim).all(|l| {
                        l.is_empty()
                            || l == "}"
                            || l.starts_with("table ")
                            || l.starts_with("type ")
                            || l.strip_prefix("chain ").map(|c| builtin.iter().any(|b| c == format!("{b} {{"))).unwrap_or(false)
                    });
                if empty && run_quiet("nft", &["delete", "table", family, table]) {
                    removed.push(format!("empty nftables table {t}"));
                }
            }
            if let Some(v) = s.ip_forward.take() {
                let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", format!("{v}\n"));
            }
        }
        if !removed.is_empty() {
            eprintln!("[TestNet {} / {}] cleaned up: {}", self.bridge, self.subnet(), removed.join("; "));
        }
    }
}

/// One recorded call of the test plugin.
#[derive(Debug, Clone)]
pub struct PluginCall {
    pub command: String,
    /// The plugin's `CNI_*` environment.
    pub env: HashMap<String, String>,
    /// What the runtime wrote to the plugin's stdin.
    pub stdin: String,
}

impl PluginCall {
    pub fn config(&self) -> Value {
        serde_json::from_str(&self.stdin).unwrap_or_else(|e| panic!("plugin {} stdin is not JSON ({e}): {:?}", self.command, self.stdin))
    }
    /// `CNI_ARGS` as key → value.
    pub fn cni_args(&self) -> HashMap<String, String> {
        self.env
            .get("CNI_ARGS")
            .map(|a| a.split(';').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// CRI helpers

/// The NetworkReady condition of `Status` (panics if the RPC fails or the condition is missing).
pub async fn network_condition(cri: &Cri) -> RuntimeCondition {
    let mut c = cri.client.clone();
    let r = within("Status", RPC_TIMEOUT, c.runtime.status(StatusRequest { verbose: false }))
        .await
        .unwrap_or_else(|e| panic!("Status failed: {}", describe(&e)))
        .into_inner();
    let conds = r.status.map(|s| s.conditions).unwrap_or_default();
    conds
        .iter()
        .find(|c| c.r#type == NETWORK_READY)
        .cloned()
        .unwrap_or_else(|| panic!("Status has no {NETWORK_READY} condition: {conds:?}"))
}

/// Poll Status until the NetworkReady condition satisfies `pred`; panic after `timeout` showing the
/// last condition.
pub async fn wait_network_condition(cri: &Cri, what: &str, timeout: Duration, pred: impl Fn(&RuntimeCondition) -> bool) -> RuntimeCondition {
    let start = Instant::now();
    loop {
        let c = network_condition(cri).await;
        if pred(&c) {
            return c;
        }
        if start.elapsed() > timeout {
            panic!(
                "NetworkReady never became {what} within {timeout:?}; last: status {} reason {:?} message {:?}",
                c.status, c.reason, c.message
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait (≤ 10 s) for NetworkReady=true.
pub async fn wait_network_ready(cri: &Cri) -> RuntimeCondition {
    wait_network_condition(cri, "true", Duration::from_secs(10), |c| c.status).await
}

/// `(network.ip, network.additional_ips)` of a pod's status.
pub async fn pod_ips(cri: &Cri, pod_id: &str) -> (String, Vec<String>) {
    let st = cri.pod_status_ok(pod_id).await;
    let n = st.network.unwrap_or_default();
    (n.ip, n.additional_ips.into_iter().map(|p| p.ip).collect())
}

/// IPv4 addresses of `dev` inside a container (`ip -4 addr show dev <dev>`), without prefix length.
pub async fn ipv4_addrs_in(cri: &Cri, ctr: &str, dev: &str) -> Vec<String> {
    let out = cri.exec_stdout(ctr, &["ip", "-4", "addr", "show", "dev", dev]).await;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("inet "))
        .filter_map(|r| r.split(['/', ' ']).next())
        .map(|s| s.to_string())
        .collect()
}

/// IPv4 routes inside a container (`ip -4 route`), one per line.
pub async fn ipv4_routes_in(cri: &Cri, ctr: &str) -> Vec<String> {
    let out = cri.exec_stdout(ctr, &["ip", "-4", "route"]).await;
    out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

// ---------------------------------------------------------------------------------------------
// host helpers

/// IPv4 routes of the host's main table as (destination, mask), host byte order.
fn host_routes() -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc/net/route prints the raw (network byte order) value in native (little) endian
            Some((u32::from_be(dst.to_le()), u32::from_be(mask.to_le())))
        })
        .collect()
}

pub fn iptables_available() -> bool {
    Command::new("iptables").arg("-V").output().map(|o| o.status.success()).unwrap_or(false)
}

/// `iptables-save` of every table, or only the section of `table` (empty if iptables is
/// missing). Never `iptables-save -t <table>`: with iptables-nft that creates the table.
pub fn iptables_save(table: Option<&str>) -> String {
    let all = match Command::new("iptables-save").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => return String::new(),
    };
    let Some(t) = table else { return all };
    let mut out = String::new();
    let mut inside = false;
    for l in all.lines() {
        if let Some(name) = l.strip_prefix('*') {
            inside = name == t;
        }
        if inside {
            out.push_str(l);
            out.push('\n');
            if l == "COMMIT" {
                inside = false;
            }
        }
    }
    out
}

/// Chain names of the nat table.
pub fn nat_chains() -> BTreeSet<String> {
    iptables_save(Some("nat"))
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|s| s.to_string())
        .collect()
}

/// `family name` of every nftables table (empty if nft is missing).
pub fn nft_tables() -> BTreeSet<String> {
    let out = Command::new("nft").args(["list", "tables"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.lines().filter_map(|l| l.trim().strip_prefix("table ")).map(|t| t.trim().to_string()).collect()
}

fn sh(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("{cmd} >/dev/null 2>&1")).status().map(|s| s.success()).unwrap_or(false)
}

fn run_quiet(prog: &str, args: &[&str]) -> bool {
    Command::new(prog).args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A TCP request/response with the host's std client: connect to `addr` (≤ 3 s), send `request`,
/// read until EOF (≤ 5 s). `Err` describes what failed.
pub fn tcp_exchange(addr: std::net::SocketAddr, request: &[u8]) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).map_err(|e| format!("write to {addr}: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read from {addr}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
