//! cri-lxc side by side with containerd (issue 7): the same scenarios, the same CRI client code
//! (`cri_lxc::grpc::client::CriClient` through the test harness's `Cri` helpers), the same images
//! from the same local registry, the same private CNI bridge config, run interleaved (A B A B …)
//! so that machine drift cancels out.
//!
//! * cri-lxc: the integration-test [`Fixture`] (registry on 127.0.0.1, daemon binary in a temp dir,
//!   busybox built from the host's busybox-static) on a [`TestNet`] bridge (no default route, no NAT).
//! * containerd: Debian's `containerd` + `runc` (`make bench` installs them), started here on a
//!   private socket / root / state under a temp dir with a generated config: CRI plugin, the same
//!   CNI conf dir and `/usr/lib/cni`, a `hosts.toml` that sends the local registry to plain HTTP, a
//!   `sandbox_image` built here (busybox whose entrypoint sleeps forever) and pushed to the local
//!   registry, runc's state under the temp dir. Stopped afterwards; whatever it left (shims,
//!   mounts, netns, cgroups) is removed and reported.
//!
//! Env: `ITERATIONS` (default 20, after `WARMUP` = 3), `CONCURRENCY` (default `1,10,50`),
//! `SCALE` (default `0,50,100`: pods already running per runtime), `CONC_ROUNDS_BIG` (rounds
//! for concurrency ≥ 10, default 2), `BENCH_CONTAINERD_LOG` (containerd log level, default info),
//! `BENCH_RUNC` (another runc binary, e.g. a debug wrapper). Output: `target/bench-report/compare-<unix time>.{md,svg}`
//! and `latest.{md,svg}`.
//!
//! The cri-lxc daemon runs with `CRI_LXC_LOG=warn,cri_lxc::timing=debug` (unless `CRI_LXC_LOG` is
//! already set): after the lifecycle scenario the bench reads the `cri_lxc::timing` lines of the
//! measured iterations from the daemon log and adds "Where cri-lxc's pod-start time goes" (median
//! per RPC and phase, top three phases) to the report.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cri_lxc::grpc::client::CriClient;
use harness::busybox::busybox_image;
use harness::image::{Compression, Format, LayerBuilder};
use harness::network::TestNet;
use harness::pods::{describe, within, Cri, Fixture, RUNNING};
use harness::random_bytes;
use k8s_cri::v1::*;

const PAUSE_REF: &str = "bench/pause:1";
const PULL_REF: &str = "bench/multilayer:1";
/// The pause image's process (containerd sandboxes).
const PAUSE_CMD: &[&str] = &["sleep", "2147483647"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// statistics

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[derive(Default)]
struct Row {
    name: String,
    unit: &'static str,
    a: Vec<f64>,
    b: Vec<f64>,
}

impl Row {
    fn stats(v: &[f64]) -> (f64, f64) {
        let mut s = v.to_vec();
        s.sort_by(|x, y| x.partial_cmp(y).unwrap());
        (pct(&s, 0.5), pct(&s, 0.95))
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn row(&mut self, name: &str, unit: &'static str) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.name == name) {
            return &mut self.rows[i];
        }
        self.rows.push(Row { name: name.to_string(), unit, ..Default::default() });
        self.rows.last_mut().unwrap()
    }
    fn push(&mut self, name: &str, unit: &'static str, lxc: bool, v: f64) {
        let r = self.row(name, unit);
        if lxc {
            r.a.push(v)
        } else {
            r.b.push(v)
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// runtime handles

#[derive(Clone)]
struct Rt {
    lxc: bool,
    cri: Cri,
    /// processes of the runtime other than the daemon (per-pod helpers)
    daemon_pid: i32,
    /// where the runtime keeps its data (disk accounting)
    data_dirs: Vec<PathBuf>,
}

impl Rt {
    fn name(&self) -> &'static str {
        if self.lxc {
            "cri-lxc"
        } else {
            "containerd"
        }
    }

    /// Run + Create + Start, polling ContainerStatus until RUNNING. Returns (pod id, container
    /// id, run, create+start, total-ready).
    async fn pod_ready(&self, name: &str) -> (String, String, Duration, Duration, Duration) {
        let pod = self.cri.pod_config(name);
        let t0 = Instant::now();
        let pod_id = self.cri.run_pod(&pod).await;
        let t_run = t0.elapsed();
        let cfg = self.cri.container_config("app", &["sleep", "100000"]);
        let t1 = Instant::now();
        let id = self.cri.create_and_start(&pod_id, &pod, cfg).await;
        let t_cs = t1.elapsed();
        loop {
            let s = self.cri.status_ok(&id).await;
            if s.state == RUNNING {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "{}: container {id} never RUNNING (state {})", self.name(), s.state);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (pod_id, id, t_run, t_cs, t0.elapsed())
    }

    async fn teardown(&self, pod_id: &str, id: &str) {
        self.cri.stop_ok(id, 0).await;
        self.cri.remove_ok(id).await;
        self.cri.teardown_pod(pod_id).await;
    }

    async fn pull(&self, reference: &str) -> Duration {
        let mut c = self.cri.client.clone();
        let req = PullImageRequest { image: Some(ImageSpec { image: reference.to_string(), ..Default::default() }), auth: None, sandbox_config: None };
        let t = Instant::now();
        if let Err(e) = within("PullImage", Duration::from_secs(300), c.image.pull_image(req)).await {
            panic!("{}: PullImage({reference}) failed: {}", self.name(), describe(&e));
        }
        t.elapsed()
    }
}

// ---------------------------------------------------------------------------------------------
// process / disk inspection

fn proc_pids() -> Vec<i32> {
    std::fs::read_dir("/proc").map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()).unwrap_or_default()
}
fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string()).unwrap_or_default()
}
fn exe(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}
/// (RSS kB, PSS kB)
fn mem_kb(pid: i32) -> (u64, u64) {
    let field = |text: &str, key: &str| -> u64 {
        text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (field(&status, "VmRSS:"), field(&rollup, "Pss:"))
}

/// Helper processes of a runtime: cri-lxc = processes running the daemon's binary (monitors,
/// infra/pause) other than the daemon; containerd = its shims (their `-address` is our socket) and
/// the pause processes of the sandboxes those shims run.
fn helper_pids(rt: &Rt, ctd_sock: &str) -> Vec<i32> {
    let daemon_exe = exe(rt.daemon_pid);
    let mut out = Vec::new();
    let mut shims = HashSet::new();
    for pid in proc_pids() {
        if pid == rt.daemon_pid {
            continue;
        }
        if rt.lxc {
            if daemon_exe.is_some() && exe(pid) == daemon_exe {
                out.push(pid);
            }
        } else if cmdline(pid).contains("containerd-shim") && cmdline(pid).contains(ctd_sock) {
            shims.insert(pid);
            out.push(pid);
        }
    }
    if !rt.lxc {
        let pause = PAUSE_CMD.join(" ");
        for pid in proc_pids() {
            if cmdline(pid) == pause && ppid(pid).map(|p| shims.contains(&p)).unwrap_or(false) {
                out.push(pid);
            }
        }
    }
    out
}
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// Bytes allocated under `dirs`, not crossing mount points, hard links counted once.
fn disk_bytes(dirs: &[PathBuf]) -> u64 {
    fn go(p: &Path, dev: u64, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(md) = std::fs::symlink_metadata(p) else { return };
        if md.dev() != dev {
            return;
        }
        if seen.insert((md.dev(), md.ino())) {
            *total += md.blocks() * 512;
        }
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    go(&e.path(), dev, seen, total);
                }
            }
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for d in dirs {
        if let Ok(md) = std::fs::metadata(d) {
            go(d, md.dev(), &mut seen, &mut total);
        }
    }
    total
}

#[derive(Clone, Copy, Default)]
struct Footprint {
    daemon_rss_kb: u64,
    helpers: usize,
    helpers_rss_kb: u64,
    helpers_pss_kb: u64,
    disk: u64,
}

fn footprint(rt: &Rt, ctd_sock: &str) -> Footprint {
    let helpers = helper_pids(rt, ctd_sock);
    let (mut rss, mut pss) = (0, 0);
    for p in &helpers {
        let (r, s) = mem_kb(*p);
        rss += r;
        pss += s;
    }
    Footprint { daemon_rss_kb: mem_kb(rt.daemon_pid).0, helpers: helpers.len(), helpers_rss_kb: rss, helpers_pss_kb: pss, disk: disk_bytes(&rt.data_dirs) }
}

// ---------------------------------------------------------------------------------------------
// containerd

/// Where containerd's libcni keeps its result cache.
const CNI_CACHE: &str = "/var/lib/cni";

struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    run_containerd_existed: bool,
    netns_dir_existed: bool,
    netns_before: BTreeSet<String>,
    /// libcni's result cache (/var/lib/cni) did not exist before containerd ran.
    cni_cache_existed: bool,
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd).args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string()).unwrap_or_else(|e| format!("<{cmd}: {e}>"))
}
fn netns_names() -> BTreeSet<String> {
    harness::dir_entries(Path::new("/var/run/netns")).into_iter().collect()
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    async fn start(registry_addr: &str, conf_dir: &Path, sandbox_image: &str) -> Containerd {
        for bin in ["containerd", "runc", "containerd-shim-runc-v2"] {
            assert!(
                Command::new("sh").arg("-c").arg(format!("command -v {bin}")).stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false),
                "{bin} not found: apt-get install -y containerd runc (make bench does it)"
            );
        }
        let dir = tempfile::Builder::new().prefix("cri-lxc-bench-containerd-").tempdir().unwrap();
        let d = dir.path();
        let hosts = d.join("certs.d").join(registry_addr);
        std::fs::create_dir_all(&hosts).unwrap();
        std::fs::write(
            hosts.join("hosts.toml"),
            format!("server = \"http://{registry_addr}\"\n\n[host.\"http://{registry_addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"),
        )
        .unwrap();
        let p = |s: &str| d.join(s).to_str().unwrap().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "{log_level}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # lowering oom_score_adj needs CAP_SYS_RESOURCE, which this VM does not grant: keep it >= containerd's own
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
{binary_name}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
            root = p("root"),
            state = p("state"),
            sock = p("containerd.sock"),
            runc_root = p("runc"),
            conf_dir = conf_dir.display(),
            certs = p("certs.d"),
            log_level = std::env::var("BENCH_CONTAINERD_LOG").unwrap_or_else(|_| "info".into()),
            binary_name = std::env::var("BENCH_RUNC").map(|b| format!("        BinaryName = \"{b}\"\n")).unwrap_or_default(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let run_containerd_existed = Path::new("/run/containerd").exists();
        let netns_before = netns_names();
        let netns_dir_existed = Path::new("/var/run/netns").exists();
        let cni_cache_existed = Path::new(CNI_CACHE).exists();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd { dir, child: Some(child), run_containerd_existed, netns_dir_existed, netns_before, cni_cache_existed };
        let start = Instant::now();
        while !c.socket().exists() {
            assert!(start.elapsed() < Duration::from_secs(30), "containerd socket never appeared:\n{}", harness::tail_file(&c.dir.path().join("containerd.log"), 40));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    async fn client(&self) -> CriClient {
        let start = Instant::now();
        loop {
            if let Ok(mut c) = CriClient::connect(&self.socket()).await {
                // the CRI plugin is ready once Status answers with NetworkReady
                if let Ok(r) = c.runtime.status(StatusRequest { verbose: false }).await {
                    let ok = r.into_inner().status.map(|s| s.conditions.iter().all(|c| c.status)).unwrap_or(false);
                    if ok {
                        return c;
                    }
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "containerd CRI not ready:\n{}", harness::tail_file(&self.dir.path().join("containerd.log"), 40));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM containerd, then remove what it left; returns what had to be cleaned.
    fn shutdown(&mut self, ids: &[String]) -> Vec<String> {
        let mut cleaned = Vec::new();
        let sock = self.socket().to_str().unwrap().to_string();
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(15) {
                    let _ = child.kill();
                    let _ = child.wait();
                    cleaned.push("containerd needed SIGKILL".into());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        // shims of our socket (they outlive containerd by design)
        for pid in proc_pids() {
            let c = cmdline(pid);
            if c.contains("containerd-shim") && c.contains(&sock) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                cleaned.push(format!("shim pid {pid}"));
            }
        }
        // mounts under our dir, deepest first
        let base = self.dir.path().to_str().unwrap().to_string();
        let mut mounts: Vec<String> = harness::pods::mount_points().into_iter().filter(|m| m.starts_with(&base)).collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            cleaned.push(format!("mount {m}"));
        }
        // network namespaces containerd created (`cni-<uuid>`) and did not remove
        for n in netns_names().difference(&self.netns_before) {
            if n.starts_with("cni-") {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
                cleaned.push(format!("netns {n}"));
            }
        }
        if !self.netns_dir_existed && std::fs::remove_dir("/var/run/netns").is_ok() {
            cleaned.push("empty /var/run/netns (created by containerd)".into());
        }
        // cgroups named after our pods / containers (runc's cgroupfs paths)
        let mut dirs = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for ctl in rd.flatten() {
                collect_cgroups(&ctl.path(), ids, 0, &mut dirs);
            }
        }
        dirs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for d in dirs {
            if std::fs::remove_dir(&d).is_ok() {
                cleaned.push(format!("cgroup {}", d.display()));
            }
        }
        // shim sockets in /run/containerd/s (a fixed path in containerd 1.6)
        if !self.run_containerd_existed && Path::new("/run/containerd").exists() {
            let _ = std::fs::remove_dir_all("/run/containerd");
        }
        // libcni (inside containerd) caches ADD results under /var/lib/cni/results/<net>-<id>-<if>; a
        // pod whose DEL did not run leaves its entry. Ours go; a cache that predates us stays otherwise.
        let results = Path::new(CNI_CACHE).join("results");
        for name in harness::dir_entries(&results) {
            if ids.iter().any(|id| name.contains(id.as_str())) && std::fs::remove_file(results.join(&name)).is_ok() {
                cleaned.push(format!("cni cache {name}"));
            }
        }
        if !self.cni_cache_existed && std::fs::remove_dir_all(CNI_CACHE).is_ok() {
            cleaned.push(format!("{CNI_CACHE} (created by containerd)"));
        }
        cleaned
    }
}

fn collect_cgroups(dir: &Path, ids: &[String], depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 6 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if ids.iter().any(|id| !id.is_empty() && name.contains(id.as_str())) {
            out.push(e.path());
        }
        collect_cgroups(&e.path(), ids, depth + 1, out);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // keep containerd's log for the report / a failed run's diagnosis
        let out = report_dir();
        let _ = std::fs::create_dir_all(&out);
        let _ = std::fs::copy(self.dir.path().join("containerd.log"), out.join("containerd.log"));
        if self.child.is_some() {
            let cleaned = self.shutdown(&[]);
            eprintln!("[compare] containerd stopped after a failure; cleaned: {cleaned:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// scenarios

/// The sequential lifecycle, one pod per iteration per runtime, interleaved.
/// Returns the (pod id, container id) of cri-lxc's measured (non-warm-up) iterations, for the
/// phase breakdown.
async fn lifecycle(rts: &[Rt; 2], rep: &mut Report, warmup: usize, iters: usize) -> Vec<(String, String)> {
    let mut measured = Vec::new();
    for i in 0..warmup + iters {
        // A B, then B A on the next iteration: neither runtime always goes first
        let order: [usize; 2] = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let rt = &rts[k];
            let (pod_id, id, t_run, t_cs, t_ready) = rt.pod_ready(&format!("lc-{i}")).await;
            let t = Instant::now();
            let out = rt.cri.exec_ok(&id, &["true"]).await;
            let t_exec = t.elapsed();
            assert_eq!(out.code, 0, "{}: ExecSync true: {out:?}", rt.name());
            let t = Instant::now();
            rt.cri.stop_ok(&id, 0).await;
            rt.cri.remove_ok(&id).await;
            let t_sr = t.elapsed();
            let t = Instant::now();
            rt.cri.teardown_pod(&pod_id).await;
            let t_pd = t.elapsed();
            if i >= warmup {
                if rt.lxc {
                    measured.push((pod_id.clone(), id.clone()));
                }
                rep.push("RunPodSandbox (bridge CNI)", "ms", rt.lxc, ms(t_run));
                rep.push("CreateContainer + StartContainer", "ms", rt.lxc, ms(t_cs));
                rep.push("pod ready (Run+Create+Start → RUNNING)", "ms", rt.lxc, ms(t_ready));
                rep.push("ExecSync `true`", "ms", rt.lxc, ms(t_exec));
                rep.push("StopContainer(0) + RemoveContainer", "ms", rt.lxc, ms(t_sr));
                rep.push("StopPodSandbox + RemovePodSandbox", "ms", rt.lxc, ms(t_pd));
            }
        }
    }
    measured
}

async fn cold_pull(rts: &[Rt; 2], rep: &mut Report, reference: &str, label: &str, warmup: usize, iters: usize) {
    for i in 0..warmup + iters {
        let order: [usize; 2] = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let rt = &rts[k];
            if rt.cri.image_status(reference).await.is_some() {
                if let Err(e) = rt.cri.remove_image(reference).await {
                    panic!("{}: RemoveImage({reference}): {}", rt.name(), describe(&e));
                }
            }
            let d = rt.pull(reference).await;
            if i >= warmup {
                rep.push(label, "ms", rt.lxc, ms(d));
            }
        }
    }
    for rt in rts {
        let _ = rt.cri.remove_image(reference).await;
    }
}

/// `n` pods in parallel; returns (time until all running, per-pod ready latencies).
async fn parallel_pods(rt: &Rt, prefix: &str, n: usize) -> (Duration, Vec<Duration>, Vec<(String, String)>) {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for j in 0..n {
        let rt = rt.clone();
        let name = format!("{prefix}-{j}");
        set.spawn(async move {
            let (p, c, _, _, d) = rt.pod_ready(&name).await;
            (p, c, d)
        });
    }
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        let (p, c, d) = r.expect("pod task panicked");
        lat.push(d);
        ids.push((p, c));
    }
    (t0.elapsed(), lat, ids)
}

async fn parallel_teardown(rt: &Rt, ids: Vec<(String, String)>) {
    let mut set = tokio::task::JoinSet::new();
    for (p, c) in ids {
        let rt = rt.clone();
        set.spawn(async move { rt.teardown(&p, &c).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("teardown task panicked");
    }
}

/// Start `n` pods with at most 10 in flight (background load for the scale rows).
async fn fill(rt: &Rt, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    let mut k = 0;
    while k < n {
        let batch = (n - k).min(10);
        let (_, _, got) = parallel_pods(rt, &format!("{prefix}-{k}"), batch).await;
        ids.extend(got);
        k += batch;
    }
    ids
}

// ---------------------------------------------------------------------------------------------
// where cri-lxc's pod-start time goes: the daemon's `cri_lxc::timing` debug lines

/// The daemon's log filter for the bench (via `CRI_LXC_LOG`, which wins over the harness's
/// `--log-level`): warnings only, plus the one timing line per pod-start RPC.
const TIMING_FILTER: &str = "warn,cri_lxc::timing=debug";
const POD_START_RPCS: [&str; 3] = ["RunPodSandbox", "CreateContainer", "StartContainer"];

/// One `cri_lxc::timing` line: rpc, id, total ms, phases in order.
struct Timing {
    rpc: String,
    id: String,
    total_ms: f64,
    phases: Vec<(String, f64)>,
}

/// Parses the `key=value` fields after `cri_lxc::timing:` in tracing-subscriber's default fmt
/// output; values may be quoted (`rpc="RunPodSandbox"`) or bare (`total_ms=12.3`). Words without
/// `=` (the message) are skipped.
fn parse_timing_line(line: &str) -> Option<Timing> {
    const TARGET: &str = "cri_lxc::timing:";
    let mut rest = &line[line.find(TARGET)? + TARGET.len()..];
    let mut fields = std::collections::HashMap::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        if !rest.starts_with('=') {
            continue; // a message word
        }
        rest = &rest[1..];
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in q.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end?;
            value = q[..end].to_string();
            rest = &q[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        fields.insert(key.to_string(), value);
    }
    let phases = fields
        .get("phases")?
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, v) = p.rsplit_once(':')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Timing { rpc: fields.get("rpc")?.clone(), id: fields.get("id")?.clone(), total_ms: fields.get("total_ms")?.parse().ok()?, phases })
}

struct PhaseRow {
    rpc: &'static str,
    /// `None`: the RPC's total
    phase: Option<String>,
    n: usize,
    median: f64,
    /// median / the RPC's median total
    share: f64,
}

struct Breakdown {
    rows: Vec<PhaseRow>,
    /// pod-ready iterations whose three timing lines were all found
    complete: usize,
    iterations: usize,
    /// client-side median of "pod ready" (Run+Create+Start → RUNNING)
    pod_ready_median: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|x, y| x.partial_cmp(y).unwrap());
    pct(&s, 0.5)
}

/// One RPC's total durations and, per phase in first-seen order, the phase durations (ms).
type RpcSamples = (Vec<f64>, Vec<(String, Vec<f64>)>);

/// The timing lines of the measured pod-ready iterations (`measured`: pod id, container id) in
/// the daemon log → per RPC and phase medians.
fn phase_breakdown(log: &str, measured: &[(String, String)], pod_ready_median: f64) -> Breakdown {
    let pods: HashSet<&str> = measured.iter().map(|(p, _)| p.as_str()).collect();
    let ctrs: HashSet<&str> = measured.iter().map(|(_, c)| c.as_str()).collect();
    // rpc → (totals, phase → values, in first-seen order)
    let mut per_rpc: Vec<RpcSamples> = vec![Default::default(); 3];
    let mut seen: HashSet<(usize, String)> = HashSet::new();
    for t in log.lines().filter_map(parse_timing_line) {
        let Some(k) = POD_START_RPCS.iter().position(|r| *r == t.rpc) else { continue };
        let wanted = if k == 0 { pods.contains(t.id.as_str()) } else { ctrs.contains(t.id.as_str()) };
        // one line per RPC and object (a retried/idempotent call would log a second one)
        if !wanted || !seen.insert((k, t.id.clone())) {
            continue;
        }
        let (totals, phases) = &mut per_rpc[k];
        totals.push(t.total_ms);
        for (name, v) in t.phases {
            match phases.iter_mut().find(|(n, _)| *n == name) {
                Some((_, vs)) => vs.push(v),
                None => phases.push((name, vec![v])),
            }
        }
    }
    let complete = measured
        .iter()
        .filter(|(p, c)| seen.contains(&(0, p.clone())) && seen.contains(&(1, c.clone())) && seen.contains(&(2, c.clone())))
        .count();
    let mut rows = Vec::new();
    for (k, (totals, phases)) in per_rpc.into_iter().enumerate() {
        if totals.is_empty() {
            continue;
        }
        let total = median(&totals);
        rows.push(PhaseRow { rpc: POD_START_RPCS[k], phase: None, n: totals.len(), median: total, share: 1.0 });
        for (name, vs) in phases {
            let m = median(&vs);
            rows.push(PhaseRow { rpc: POD_START_RPCS[k], phase: Some(name), n: vs.len(), median: m, share: m / total });
        }
    }
    Breakdown { rows, complete, iterations: measured.len(), pod_ready_median }
}

impl Breakdown {
    /// The `k` phases with the largest medians over all three RPCs.
    fn top(&self, k: usize) -> Vec<&PhaseRow> {
        let mut v: Vec<&PhaseRow> = self.rows.iter().filter(|r| r.phase.is_some()).collect();
        v.sort_by(|a, b| b.median.partial_cmp(&a.median).unwrap());
        v.truncate(k);
        v
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        writeln!(s, "## Where cri-lxc's pod-start time goes\n").unwrap();
        if self.rows.is_empty() {
            writeln!(s, "No `cri_lxc::timing` lines for the measured pod-ready iterations in the daemon log (is `CRI_LXC_LOG` set to a filter without `cri_lxc::timing=debug`?).").unwrap();
            return s;
        }
        writeln!(
            s,
            "Daemon-side phase timings (`cri_lxc::timing` debug lines) of the {} measured \"pod ready\" iterations ({} with all three RPC lines found): median per phase; share = phase median / the RPC's median total (phase medians need not add up to the total median).\n",
            self.iterations, self.complete
        )
        .unwrap();
        writeln!(s, "| RPC | phase | n | median ms | share of RPC median |").unwrap();
        writeln!(s, "|---|---|---:|---:|---:|").unwrap();
        let mut sum_totals = 0.0;
        for r in &self.rows {
            match &r.phase {
                None => {
                    sum_totals += r.median;
                    writeln!(s, "| {} | **total (in the handler)** | {} | **{:.2}** | 100 % |", r.rpc, r.n, r.median).unwrap()
                }
                Some(p) => writeln!(s, "| {} | {p} | {} | {:.2} | {:.0} % |", r.rpc, r.n, r.median, r.share * 100.0).unwrap(),
            }
        }
        writeln!(s).unwrap();
        writeln!(
            s,
            "Sum of the three handler medians: {sum_totals:.1} ms of the {:.1} ms client-side \"pod ready\" median; the remaining {:.1} ms are outside the handlers (gRPC round trips, client, ContainerStatus polling until RUNNING).\n",
            self.pod_ready_median,
            self.pod_ready_median - sum_totals
        )
        .unwrap();
        writeln!(s, "Top three phases over \"pod ready\" (Run+Create+Start):\n").unwrap();
        for (i, r) in self.top(3).iter().enumerate() {
            writeln!(
                s,
                "{}. {} / {}: {:.2} ms median ({:.0} % of the RPC, {:.0} % of pod ready)",
                i + 1,
                r.rpc,
                r.phase.as_deref().unwrap_or(""),
                r.median,
                r.share * 100.0,
                r.median / self.pod_ready_median * 100.0
            )
            .unwrap();
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// output

fn fmt_v(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn markdown(rep: &Report, machine: &str, notes: &[String]) -> String {
    let mut s = String::new();
    writeln!(s, "{machine}").unwrap();
    writeln!(s, "| scenario | n (lxc/ctd) | cri-lxc median | cri-lxc p95 | containerd median | containerd p95 | ratio (median, lxc/ctd) |").unwrap();
    writeln!(s, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for r in &rep.rows {
        let (am, a95) = Row::stats(&r.a);
        let (bm, b95) = Row::stats(&r.b);
        let u = r.unit;
        writeln!(
            s,
            "| {} | {}/{} | {} {u} | {} {u} | {} {u} | {} {u} | {:.2} |",
            r.name,
            r.a.len(),
            r.b.len(),
            fmt_v(am),
            fmt_v(a95),
            fmt_v(bm),
            fmt_v(b95),
            am / bm
        )
        .unwrap();
    }
    if !notes.is_empty() {
        writeln!(s).unwrap();
        for n in notes {
            writeln!(s, "- {n}").unwrap();
        }
    }
    s
}

fn report_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target")).join("bench-report")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Grouped horizontal bars of the medians of every latency row (each row scaled to its larger
/// value, labelled with the numbers).
fn svg(rep: &Report, title: &str) -> String {
    let rows: Vec<&Row> = rep.rows.iter().filter(|r| r.unit == "ms").collect();
    let (w, label_w, bar_w, row_h) = (980.0, 400.0, 440.0, 44.0);
    let h = 70.0 + rows.len() as f64 * row_h + 20.0;
    let mut s = String::new();
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#).unwrap();
    writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    writeln!(s, r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#, esc(title)).unwrap();
    writeln!(s, r##"<rect x="{label_w}" y="32" width="12" height="12" fill="#2b6cb0"/><text x="{}" y="43">cri-lxc (median)</text>"##, label_w + 16.0).unwrap();
    writeln!(s, r##"<rect x="{}" y="32" width="12" height="12" fill="#dd6b20"/><text x="{}" y="43">containerd (median)</text>"##, label_w + 150.0, label_w + 166.0).unwrap();
    for (i, r) in rows.iter().enumerate() {
        let y = 60.0 + i as f64 * row_h;
        let (am, _) = Row::stats(&r.a);
        let (bm, _) = Row::stats(&r.b);
        let max = am.max(bm).max(1e-9);
        writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, label_w - 8.0, y + 22.0, esc(&r.name)).unwrap();
        for (k, (v, color)) in [(am, "#2b6cb0"), (bm, "#dd6b20")].iter().enumerate() {
            let by = y + 4.0 + k as f64 * 18.0;
            let bw = if v.is_nan() { 0.0 } else { v / max * bar_w };
            writeln!(s, r#"<rect x="{label_w}" y="{by}" width="{bw:.1}" height="15" fill="{color}"/>"#).unwrap();
            writeln!(s, r#"<text x="{:.1}" y="{}">{} ms</text>"#, label_w + bw + 5.0, by + 12.0, fmt_v(*v)).unwrap();
        }
    }
    writeln!(s, "</svg>").unwrap();
    s
}

// ---------------------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let iters = env_usize("ITERATIONS", 20);
    let warmup = env_usize("WARMUP", 3);
    let conc = env_list("CONCURRENCY", &[1, 10, 50]);
    let scale = env_list("SCALE", &[0, 50, 100]);
    let big_rounds = env_usize("CONC_ROUNDS_BIG", 2);
    let t_start = Instant::now();
    // Logging stays at warn (so it does not distort the timings) except for the one debug line
    // per pod-start RPC under `cri_lxc::timing`. The daemon reads `CRI_LXC_LOG` before its
    // `--log-level`; set here, before any thread of ours reads the environment, and inherited by
    // the daemon process the fixture spawns.
    if std::env::var_os("CRI_LXC_LOG").is_none() {
        std::env::set_var("CRI_LXC_LOG", TIMING_FILTER);
    }

    // The TestNet first: it must outlive both runtimes (their CNI DEL needs its dirs).
    let net = TestNet::new();
    net.write_bridge_conflist();
    let config = net.daemon_config().replace("log_level = \"debug\"", "log_level = \"warn\"");
    let fx = Fixture::start_with_config(&config).await;
    let registry_addr = fx.registry.addr();

    // pause image for containerd and a multi-layer image for the cold pull
    let pusher = fx.registry.pusher();
    let pause = busybox_image().entrypoint(PAUSE_CMD).no_cmd().build(Format::Oci);
    pusher.push_image("bench/pause", "1", &pause).await;
    let mut multi = busybox_image();
    for k in 0..4u64 {
        let l = LayerBuilder::new().dir("data", 0o755).file(&format!("data/blob{k}"), &random_bytes(1_600_000, 7 + k), 0o644).build(Compression::GzipFast);
        multi = multi.layer(l);
    }
    let multi = multi.build(Format::Oci);
    pusher.push_image("bench/multilayer", "1", &multi).await;
    let pull_label = format!("PullImage cold ({} layers, {:.1} MB compressed)", multi.layers.len(), multi.compressed_size() as f64 / 1e6);
    let pause_ref = fx.registry.image(PAUSE_REF);
    let pull_ref = fx.registry.image(PULL_REF);

    eprintln!("[compare] starting containerd");
    let mut ctd = Containerd::start(&registry_addr, &net.conf_dir(), &pause_ref).await;
    let ctd_sock = ctd.socket().to_str().unwrap().to_string();
    let ctd_client = ctd.client().await;

    let lxc = Rt { lxc: true, cri: fx.cri.clone(), daemon_pid: fx.daemon.pid().unwrap() as i32, data_dirs: vec![fx.daemon.dir().to_path_buf()] };
    let mut ctd_cri = fx.cri.clone();
    ctd_cri.client = ctd_client;
    let ctdrt = Rt { lxc: false, cri: ctd_cri, daemon_pid: ctd.pid(), data_dirs: vec![ctd.dir.path().to_path_buf()] };
    ctdrt.pull(&fx.cri.image).await;
    ctdrt.pull(&pause_ref).await;
    let rts = [lxc, ctdrt];

    let mut rep = Report::default();
    let mut notes = Vec::new();

    // the result is worth keeping even if a later phase panics: run the phases in order and write
    // the report at the end.
    eprintln!("[compare] lifecycle: {warmup} warm-ups + {iters} iterations per runtime, interleaved");
    let measured = lifecycle(&rts, &mut rep, warmup, iters).await;
    let pod_ready_median = rep.rows.iter().find(|r| r.name.starts_with("pod ready (")).map(|r| median(&r.a)).unwrap_or(f64::NAN);
    let breakdown = phase_breakdown(&fx.daemon.log(), &measured, pod_ready_median);
    let phases_md = breakdown.markdown();
    eprintln!("\n{phases_md}");
    eprintln!("[compare] cold pull ({:.0}s so far)", t_start.elapsed().as_secs_f64());
    cold_pull(&rts, &mut rep, &pull_ref, &pull_label, 1, iters).await;

    let idle = [footprint(&rts[0], &ctd_sock), footprint(&rts[1], &ctd_sock)];
    for (k, f) in idle.iter().enumerate() {
        rep.push("daemon RSS, idle (images pulled, no pods)", "MiB", k == 0, f.daemon_rss_kb as f64 / 1024.0);
    }

    for &n in &conc {
        let rounds = if n == 1 { iters } else { big_rounds };
        eprintln!("[compare] concurrency {n} × {rounds} rounds ({:.0}s so far)", t_start.elapsed().as_secs_f64());
        for round in 0..rounds + 1 {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let rt = &rts[k];
                let (all, lat, ids) = parallel_pods(rt, &format!("c{n}-{round}"), n).await;
                parallel_teardown(rt, ids).await;
                if round == 0 {
                    continue; // warm-up
                }
                rep.push(&format!("{n} pod(s) in parallel: time to all running"), "ms", rt.lxc, ms(all));
                if n > 1 {
                    for d in lat {
                        rep.push(&format!("{n} pods in parallel: per-pod ready latency"), "ms", rt.lxc, ms(d));
                    }
                }
            }
        }
    }

    // scale: pod-ready latency with N pods already running; footprint at each level
    let mut background: [Vec<(String, String)>; 2] = [vec![], vec![]];
    for &level in &scale {
        eprintln!("[compare] scale: {level} pods running ({:.0}s so far)", t_start.elapsed().as_secs_f64());
        for k in 0..2 {
            let have = background[k].len();
            if level > have {
                let more = fill(&rts[k], &format!("bg{level}"), level - have).await;
                background[k].extend(more);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if level > 0 {
            for k in 0..2 {
                let f = footprint(&rts[k], &ctd_sock);
                let lxc = k == 0;
                rep.push(&format!("daemon RSS with {level} pods"), "MiB", lxc, f.daemon_rss_kb as f64 / 1024.0);
                rep.push(&format!("per-pod helper RSS at {level} pods (monitor/infra vs shim/pause)"), "MiB", lxc, f.helpers_rss_kb as f64 / 1024.0 / level as f64);
                rep.push(&format!("per-pod helper PSS at {level} pods"), "MiB", lxc, f.helpers_pss_kb as f64 / 1024.0 / level as f64);
                rep.push(&format!("disk per pod (1 container) at {level} pods"), "KiB", lxc, (f.disk as f64 - idle[k].disk as f64) / 1024.0 / level as f64);
                notes.push(format!("{} at {level} pods: {} helper processes", rts[k].name(), f.helpers));
            }
        }
        for i in 0..warmup + iters {
            let order: [usize; 2] = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let rt = &rts[k];
                let (p, c, _, _, d) = rt.pod_ready(&format!("s{level}-{i}")).await;
                rt.teardown(&p, &c).await;
                if i >= warmup {
                    rep.push(&format!("pod ready with {level} pods running"), "ms", rt.lxc, ms(d));
                }
            }
        }
    }
    for k in 0..2 {
        let ids = std::mem::take(&mut background[k]);
        parallel_teardown(&rts[k], ids).await;
    }

    // machine and versions
    let cgroup_mode = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2 (unified)"
    } else if Path::new("/sys/fs/cgroup/unified").exists() {
        "v1 (hybrid: v1 controllers + v2 unified mount)"
    } else {
        "v1 (legacy)"
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("?").trim().to_string();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default().lines().next().unwrap_or("").replace("MemTotal:", "").trim().to_string();
    let git = cmd_out("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]);
    let machine = format!(
        "## cri-lxc vs containerd\n\n\
         - machine: {} CPUs ({cpu_model}), {mem} RAM, kernel {}, cgroup {cgroup_mode}\n\
         - cri-lxc {} (git {git}), liblxc {}\n\
         - {} / {}\n\
         - CNI: bridge + host-local on a private test bridge (no default route, no NAT), same conflist for both; images from a local registry on 127.0.0.1\n\
         - {iters} iterations after {warmup} warm-ups per latency row, runtimes interleaved (A B, B A, …); concurrency ≥ 10: {big_rounds} rounds after 1 warm-up round; total run {:.0} s\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cmd_out("uname", &["-r"]),
        env!("CARGO_PKG_VERSION"),
        cmd_out("lxc-info", &["--version"]),
        cmd_out("containerd", &["--version"]),
        cmd_out("runc", &["--version"]),
        t_start.elapsed().as_secs_f64()
    );

    // stop containerd; check that neither runtime left anything behind
    let _ = ctd.pid();
    rts[1].cri.remove_everything().await;
    let ids = rts[1].cri.ids();
    let cleaned = ctd.shutdown(&ids);
    if cleaned.is_empty() {
        notes.push("containerd stopped; nothing of it had to be cleaned up".into());
    } else {
        notes.push(format!("containerd left behind (cleaned by the bench): {}", cleaned.join("; ")));
    }
    let leaks = fx.leaks();
    if !leaks.is_empty() {
        notes.push(format!("left on the host after both runtimes removed their pods: {}", leaks.join("; ")));
    }
    notes.push("per-pod helper RSS/PSS: cri-lxc = processes of the cri-lxc binary other than the daemon (LXC monitor, infra); containerd = containerd-shim-runc-v2 of our socket + the sandbox's pause process. Disk = bytes under each runtime's root/state dirs (not crossing mounts, hard links once), minus idle, per pod".into());

    let md = format!("{}\n{phases_md}", markdown(&rep, &machine, &notes));
    println!("\n{md}");
    let out_dir = report_dir();
    std::fs::create_dir_all(&out_dir).unwrap();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let plot = svg(&rep, &format!("cri-lxc vs containerd, median latency ({iters} iterations)"));
    for name in [format!("compare-{stamp}"), "latest".to_string()] {
        std::fs::write(out_dir.join(format!("{name}.md")), &md).unwrap();
        std::fs::write(out_dir.join(format!("{name}.svg")), &plot).unwrap();
    }
    eprintln!("[compare] report: {}", out_dir.join(format!("compare-{stamp}.md")).display());
    drop(rts);
    drop(fx);
    drop(net);
}
