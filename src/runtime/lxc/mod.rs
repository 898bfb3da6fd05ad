//! The LXC implementation of `ContainerRuntime`.
//!
//! Files per container:
//! * `<root>/lxc/<id>/config` — the rendered LXC config (the private lxcpath, never /var/lib/lxc);
//! * `<state>/containers/<id>/monitor.json` — what the monitor runs; `attach.sock` — its attach
//!   socket (`attach.rs`); `exec.json` — what ExecSync
//!   needs (env, user, cwd); `pid.json` — monitor and init pids once running; `exit.json` — written
//!   by the monitor when the container ends; `lxc.log` — liblxc's own log; `cgroup.json` — the
//!   container's cgroup (relative path) and the limits last applied (see `runtime/cgroup/`).
//!
//! Everything that forks through liblxc runs in a re-executed helper process (`__monitor`,
//! `__exec`); this module only spawns them, reads their files and sends signals.

pub mod apparmor;
pub mod attach;
pub mod config;
pub mod exec;
pub mod ffi;
pub mod monitor;
pub mod seccomp;
pub mod security;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cgroup::{self, CgroupError, Layout, ResourceSpec};
use super::process_stdio::{StdioFlags, StreamingProcess};
use super::{ContainerRuntime, ContainerSpec, ExecOutput, ExitStatus, ProcessState, RuntimeError, Started};
use exec::ExecContext;
use monitor::{MonitorSpec, PidRecord, Ready};

/// How long a monitor may take to report the container running.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGKILL, how long until the monitor must have recorded the exit.
const KILL_GRACE: Duration = Duration::from_secs(10);

pub struct LxcRuntime {
    lxcpath: PathBuf,
    state_dir: PathBuf,
    /// Our own binary, re-executed for the helpers.
    exe: PathBuf,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| RuntimeError::Other(format!("encoding {}: {e}", path.display())))?;
    monitor::write_atomic(path, &data, true).map_err(|e| RuntimeError::Other(e.to_string()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| RuntimeError::Other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

fn process_alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

/// The directories of the cgroup liblxc made for container `id` (`…/lxc.payload.<id>`) that `pid`
/// is in, one per mounted hierarchy: the unified one (`0::`) and the v1 controllers.
fn container_cgroup_dirs(id: &str, pid: i32) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    let leaf = format!("lxc.payload.{id}");
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        // Only ever the container's own cgroup: never signal a cgroup shared with anything else.
        if path.rsplit('/').next() != Some(leaf.as_str()) {
            continue;
        }
        let rel = path.trim_start_matches('/');
        let bases: Vec<String> = if controllers.is_empty() {
            vec!["/sys/fs/cgroup/unified".into(), "/sys/fs/cgroup".into()]
        } else {
            controllers.split(',').filter(|c| !c.starts_with("name=")).map(|c| format!("/sys/fs/cgroup/{c}")).collect()
        };
        dirs.extend(bases.iter().map(|b| Path::new(b).join(rel)).filter(|d| d.join("cgroup.procs").is_file()));
    }
    dirs
}

/// What `cgroup.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CgroupRecord {
    /// The daemon-owned container cgroup, relative to each hierarchy's root.
    dir: String,
    resources: ResourceSpec,
}

fn cgroup_error(id: &str, e: CgroupError) -> RuntimeError {
    match e {
        CgroupError::Invalid(message) => RuntimeError::InvalidResources { id: id.to_string(), message },
        CgroupError::BadParent { .. } => RuntimeError::InvalidResources { id: id.to_string(), message: e.to_string() },
        CgroupError::Io { .. } => RuntimeError::Other(format!("container {id}: {e}")),
    }
}

/// The lowest memory limit on `rel` or any of its ancestors (None: unlimited all the way up).
fn ancestor_memory_limit(layout: &Layout, rel: &str) -> Option<i64> {
    let file = match layout.version_of("memory")? {
        cgroup::CgroupVersion::V1 => "memory.limit_in_bytes",
        cgroup::CgroupVersion::V2 => "memory.max",
    };
    let mut path = String::new();
    let mut lowest: Option<i64> = None;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        if let Some(limit) = layout.read("memory", &path, file).and_then(|t| cgroup::stats::single_value(&t)) {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
        }
    }
    lowest
}

/// Whether the OOM killer ended the container: v2 counts kills hierarchically in memory.events; a
/// v1 cgroup only counts kills of its own tasks (the container's are one level down, in liblxc's
/// cgroup, gone by now), so there a SIGKILL exit (137) of a container whose limit was hit counts.
fn oom_killed(dir: &str, exit_code: i32) -> bool {
    let counters = cgroup::stats::oom_counters(Layout::host(), dir);
    counters.oom_kills > 0 || (counters.limit_hits > 0 && exit_code == 128 + libc::SIGKILL)
}

/// SIGKILL every process in the container's cgroup (a few rounds: a process may fork meanwhile).
fn kill_cgroup_members(id: &str, init_pid: i32, placed: Option<&str>) {
    let dirs = container_cgroup_dirs(id, init_pid);
    // Containers placed by runtime/cgroup/: everything in their own cgroup tree.
    if let Some(dir) = placed {
        for _ in 0..3 {
            let pids = Layout::host().procs(dir);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    for _ in 0..3 {
        let mut any = false;
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any |= kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok();
            }
        }
        if !any {
            break;
        }
    }
}

/// Create `path` (absolute, inside the container) under `root` if missing, resolving existing
/// components as the container would see them (symlinks cannot lead outside `root`).
fn ensure_dir_in_root(root: &Path, path: &str, uid: u32, gid: u32) -> Result<(), RuntimeError> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if components.contains(&"..") {
        return Err(RuntimeError::Other(format!("working directory {path:?} must not contain \"..\"")));
    }
    let mut inside = String::new();
    for component in components {
        let parent = exec::resolve_in_root(root, &inside).ok_or_else(|| RuntimeError::Other(format!("cannot resolve {inside:?} in the rootfs")))?;
        inside.push('/');
        inside.push_str(component);
        match exec::resolve_in_root(root, &inside) {
            Some(p) if p.is_dir() => continue,
            Some(_) => return Err(RuntimeError::Other(format!("working directory {path:?}: {inside:?} exists and is not a directory"))),
            None => {
                let dir = parent.join(component);
                std::fs::create_dir(&dir).map_err(io(format!("creating working directory {}", dir.display())))?;
                nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
                    .map_err(|e| RuntimeError::Other(format!("chown {}: {e}", dir.display())))?;
            }
        }
    }
    Ok(())
}

impl LxcRuntime {
    pub fn new(root: &Path, state: &Path, exe: PathBuf) -> Result<LxcRuntime, RuntimeError> {
        let lxcpath = root.join("lxc");
        let state_dir = state.join("containers");
        for d in [&lxcpath, &state_dir] {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        Ok(LxcRuntime { lxcpath, state_dir, exe })
    }

    pub fn lxcpath(&self) -> &Path {
        &self.lxcpath
    }

    fn dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let valid = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(self.state_dir.join(id))
        } else {
            Err(RuntimeError::Other(format!("invalid container id {id:?}")))
        }
    }

    fn pid_record(&self, id: &str) -> Result<Option<PidRecord>, RuntimeError> {
        read_json(&self.dir(id)?.join("pid.json"))
    }

    fn exit_record(&self, id: &str) -> Result<Option<ExitStatus>, RuntimeError> {
        let record = monitor::read_exit_file(&self.dir(id)?.join("exit.json")).map_err(|e| RuntimeError::Other(e.to_string()))?;
        let Some(r) = record else { return Ok(None) };
        let oom_killed = self.cgroup_record(id)?.is_some_and(|cg| oom_killed(&cg.dir, r.exit_code));
        Ok(Some(ExitStatus {
            code: r.exit_code,
            finished_at_unix_nanos: r.exited_at_unix_nanos,
            oom_killed,
            message: r.message.unwrap_or_default(),
        }))
    }

    fn cgroup_record(&self, id: &str) -> Result<Option<CgroupRecord>, RuntimeError> {
        read_json(&self.dir(id)?.join("cgroup.json"))
    }

    /// Create the container's own cgroup under its pod's and write its limits (see runtime/cgroup/).
    fn place(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let layout = Layout::host();
        let dir = cgroup::container_dir(&spec.cgroup.parent, &spec.id);
        let parent = if spec.cgroup.parent.is_empty() { cgroup::DEFAULT_PARENT } else { spec.cgroup.parent.as_str() };
        let mut resources = spec.cgroup.resources.clone();
        // Never above the pod: kubelet's pod-level memory limit on an ancestor bounds the child.
        if resources.clamp_memory_to(ancestor_memory_limit(layout, parent)) {
            tracing::info!(container_id = %spec.id, memory_limit = resources.memory_limit, "memory limit clamped to the pod cgroup's limit");
        }
        // Written before liblxc or any process sees the cgroup, so the record exists for remove()
        // even if creating the cgroup fails half-way.
        write_json(&self.dir(&spec.id)?.join("cgroup.json"), &CgroupRecord { dir: dir.clone(), resources: resources.clone() })?;
        layout.create(&dir).map_err(|e| cgroup_error(&spec.id, e))?;
        self.apply_limits(&spec.id, &dir, &resources)
    }

    fn apply_limits(&self, id: &str, dir: &str, resources: &ResourceSpec) -> Result<(), RuntimeError> {
        let layout = Layout::host();
        let settings = resources.render(&|c| layout.version_of(c)).map_err(|e| cgroup_error(id, e))?;
        layout.apply(dir, &settings).map_err(|e| cgroup_error(id, e))
    }

    /// Wait until the monitor has recorded the container's exit, or `limit` passes.
    async fn wait_exit(&self, id: &str, limit: Duration) -> Result<bool, RuntimeError> {
        let deadline = Instant::now() + limit;
        loop {
            if self.exit_record(id)?.is_some() {
                return Ok(true);
            }
            if let Some(pids) = self.pid_record(id)? {
                if !process_alive(pids.monitor_pid) {
                    // The monitor is gone: nothing will write the exit file anymore.
                    return Ok(!process_alive(pids.init_pid));
                }
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tonic::async_trait]
impl ContainerRuntime for LxcRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        // Translated before anything is written: a profile liblxc cannot express creates nothing.
        let seccomp_policy = security::seccomp_policy(&spec.security).map_err(|e| RuntimeError::Other(e.to_string()))?;
        let dir = self.dir(&spec.id)?;
        let lxc_dir = self.lxcpath.join(&spec.id);
        for d in [&dir, &lxc_dir] {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        // Like runc, a working directory the image lacks is created (owned by the process user).
        ensure_dir_in_root(&spec.rootfs, &spec.cwd, spec.user.uid, spec.user.gid)?;
        self.place(spec)?;
        let config_path = lxc_dir.join("config");
        let seccomp_path = lxc_dir.join("seccomp");
        let spec = &security::prepare(spec, &seccomp_path, seccomp_policy.as_deref())?;
        let rendered = config::render(spec, &config::ConfigPaths { devices_cgroup: Layout::host().version_of("devices"), lxc_log: &dir.join("lxc.log"), seccomp: &seccomp_path });
        std::fs::write(&config_path, rendered).map_err(io(format!("writing {}", config_path.display())))?;
        let monitor_spec = MonitorSpec {
            name: spec.id.clone(),
            lxcpath: self.lxcpath.clone(),
            config_path,
            argv: spec.argv.clone(),
            log_path: spec.log_path.clone().unwrap_or_else(|| PathBuf::from("/dev/null")),
            exit_file: dir.join("exit.json"),
            pid_file: Some(dir.join("pid.json")),
            stdin: spec.stdin,
            stdin_once: spec.stdin_once,
            tty: spec.tty,
            // lxc's init must be PID 1 of a namespace of its own: in the pod's shared PID namespace or
            // the host's it would be an ordinary process whose shutdown (kill(-1)) hits other
            // containers or the host. There the app runs directly.
            use_init: spec.namespaces.pid.is_none() && !spec.namespaces.host_pid,
            max_log_line: monitor::DEFAULT_MAX_LOG_LINE,
            exit_with_main: true,
            attach_socket: Some(dir.join(attach::SOCKET_NAME)),
        };
        write_json(&dir.join("monitor.json"), &monitor_spec)?;
        let exec = ExecContext {
            name: spec.id.clone(),
            lxcpath: self.lxcpath.clone(),
            rootfs: spec.rootfs.clone(),
            env: spec.env.clone(),
            uid: spec.user.uid,
            gid: spec.user.gid,
            additional_gids: spec.user.additional_gids.clone(),
            cwd: spec.cwd.clone(),
            argv0: spec.argv.first().cloned().unwrap_or_default(),
        };
        write_json(&dir.join("exec.json"), &exec)
    }

    async fn start(&self, id: &str) -> Result<Started, RuntimeError> {
        let dir = self.dir(id)?;
        let exec: ExecContext = read_json(&dir.join("exec.json"))?.ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        // liblxc reports a missing executable only as a silent exit 255; say what runc would.
        exec.check_executable().map_err(|message| RuntimeError::StartFailed { id: id.to_string(), message })?;
        let spec: MonitorSpec = read_json(&dir.join("monitor.json"))?.ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        if let Some(parent) = spec.log_path.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("creating log dir {}", parent.display())))?;
        }
        // The process starts between this instant and the monitor's report; taking it now keeps
        // started_at <= finished_at even for a container that exits at once.
        let spawned_at = crate::image::unix_nanos(std::time::SystemTime::now());
        let exe = self.exe.clone();
        let spec_path = dir.join("monitor.json");
        let handle = tokio::task::spawn_blocking(move || monitor::spawn_monitor(&exe, &spec_path, START_TIMEOUT))
            .await
            .map_err(|e| RuntimeError::Other(format!("monitor task: {e}")))?
            .map_err(|e| RuntimeError::StartFailed { id: id.to_string(), message: e.to_string() })?;
        let mut child = handle.child;
        // Reap the monitor when it ends (it outlives us if the daemon restarts; init reaps it then).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        match handle.ready {
            Ready::Running { monitor_pid, init_pid } => Ok(Started { init_pid, monitor_pid, started_at_unix_nanos: spawned_at }),
            // It ran and ended before the monitor saw it running: still a start; the exit file tells the rest.
            Ready::Exited { monitor_pid, .. } => Ok(Started { init_pid: 0, monitor_pid, started_at_unix_nanos: spawned_at }),
            Ready::Failed { error, .. } => Err(RuntimeError::StartFailed { id: id.to_string(), message: error }),
        }
    }

    async fn stop(&self, id: &str, signal: i32, timeout: Duration) -> Result<(), RuntimeError> {
        let Some(pids) = self.pid_record(id)? else {
            return Ok(()); // never started
        };
        if self.exit_record(id)?.is_some() || !process_alive(pids.init_pid) {
            return Ok(());
        }
        if !timeout.is_zero() {
            // The app (PID 2 under lxc's init) gets the stop signal: lxc's init would turn a SIGTERM
            // into SIGKILL-everything one second later, ignoring the pod's grace period.
            let target = monitor::payload_pid(pids.init_pid).unwrap_or(pids.init_pid);
            if let Ok(sig) = Signal::try_from(signal) {
                let _ = kill(Pid::from_raw(target), sig);
            }
            if self.wait_exit(id, timeout).await? {
                return Ok(());
            }
        }
        // Every process in the container's cgroup (its own PID namespace is not a boundary when the pod
        // shares one), then its first process: killing a PID namespace's init makes the kernel kill
        // the rest of that namespace.
        let placed = self.cgroup_record(id)?.map(|c| c.dir);
        kill_cgroup_members(id, pids.init_pid, placed.as_deref());
        let _ = kill(Pid::from_raw(pids.init_pid), Signal::SIGKILL);
        if self.wait_exit(id, KILL_GRACE).await? {
            Ok(())
        } else {
            Err(RuntimeError::Other(format!("container {id} did not exit {KILL_GRACE:?} after SIGKILL")))
        }
    }

    async fn state(&self, id: &str) -> Result<ProcessState, RuntimeError> {
        let dir = self.dir(id)?;
        if let Some(exit) = self.exit_record(id)? {
            return Ok(ProcessState::Exited(exit));
        }
        if let Some(pids) = self.pid_record(id)? {
            return Ok(if process_alive(pids.monitor_pid) {
                ProcessState::Running { pid: pids.init_pid }
            } else if process_alive(pids.init_pid) {
                ProcessState::Unknown(format!("monitor {} is gone; the container still runs as pid {}", pids.monitor_pid, pids.init_pid))
            } else {
                ProcessState::Unknown(format!("monitor {} ended without recording the exit", pids.monitor_pid))
            });
        }
        if dir.join("monitor.json").exists() {
            Ok(ProcessState::Created)
        } else {
            Err(RuntimeError::NotFound(id.to_string()))
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id)?;
        if let Some(pids) = self.pid_record(id)? {
            if self.exit_record(id)?.is_none() && process_alive(pids.init_pid) {
                return Err(RuntimeError::Other(format!("container {id} still runs")));
            }
        }
        // The container's cgroups (liblxc removed its own sub-cgroup when the container exited;
        // a leftover monitor cgroup of a crashed start is removed too).
        if let Some(cg) = self.cgroup_record(id)? {
            Layout::host().remove(&cg.dir).map_err(|e| cgroup_error(id, e))?;
        }
        Layout::host().remove(&cgroup::monitor_dir(id)).map_err(|e| cgroup_error(id, e))?;
        for d in [self.lxcpath.join(id), dir] {
            match std::fs::remove_dir_all(&d) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(format!("removing {}", d.display()))(e)),
                _ => {}
            }
        }
        Ok(())
    }

    async fn exec_sync(&self, id: &str, argv: &[String], timeout: Option<Duration>) -> Result<ExecOutput, RuntimeError> {
        match self.state(id).await? {
            ProcessState::Running { .. } => {}
            _ => return Err(RuntimeError::NotRunning { id: id.to_string() }),
        }
        exec::run(&self.exe, &self.dir(id)?.join("exec.json"), id, argv, timeout).await
    }

    async fn start_pod_infra(&self, sandbox_dir: &Path) -> Result<i32, RuntimeError> {
        let (exe, dir) = (self.exe.clone(), sandbox_dir.to_path_buf());
        tokio::task::spawn_blocking(move || super::infra::spawn(&exe, &dir))
            .await
            .map_err(|e| RuntimeError::Other(format!("infra task: {e}")))?
    }

    async fn stop_pod_infra(&self, pid: i32, sandbox_dir: &Path) {
        super::infra::stop(pid, sandbox_dir);
    }

    fn pod_infra_alive(&self, pid: i32, sandbox_dir: &Path) -> bool {
        super::infra::is_infra_of(pid, sandbox_dir)
    }

    async fn exec_streaming(&self, id: &str, argv: &[String], flags: StdioFlags) -> Result<StreamingProcess, RuntimeError> {
        match self.state(id).await? {
            ProcessState::Running { .. } => {}
            _ => return Err(RuntimeError::NotRunning { id: id.to_string() }),
        }
        exec::spawn_streaming(&self.exe, &self.dir(id)?.join("exec.json"), argv, flags).await
    }

    async fn attach(&self, id: &str, flags: StdioFlags) -> Result<StreamingProcess, RuntimeError> {
        match self.state(id).await? {
            ProcessState::Running { .. } => {}
            _ => return Err(RuntimeError::NotRunning { id: id.to_string() }),
        }
        let dir = self.dir(id)?;
        let spec: MonitorSpec = read_json(&dir.join("monitor.json"))?.ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let socket = spec.attach_socket.ok_or_else(|| RuntimeError::Other(format!("container {id} was started without an attach socket")))?;
        attach::connect(&socket, flags, spec.tty).await.map_err(io(format!("connecting to {}", socket.display())))
    }

    async fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
        let pids = self.pid_record(id)?.ok_or_else(|| RuntimeError::NotRunning { id: id.to_string() })?;
        if self.exit_record(id)?.is_some() || !process_alive(pids.monitor_pid) {
            return Err(RuntimeError::NotRunning { id: id.to_string() });
        }
        // The monitor reopens its log file on SIGUSR1 (see monitor.rs).
        kill(Pid::from_raw(pids.monitor_pid), Signal::SIGUSR1).map_err(|e| RuntimeError::Other(format!("signalling monitor: {e}")))?;
        // Answer once the file exists again, as containerd does: kubelet's rotation moves the old
        // file away before asking and expects writes to have somewhere to go when we return.
        let spec: Option<MonitorSpec> = read_json(&self.dir(id)?.join("monitor.json"))?;
        let Some(log_path) = spec.map(|s| s.log_path) else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !log_path.exists() {
            if Instant::now() >= deadline {
                return Err(RuntimeError::Other(format!("container {id}: log {} was not reopened within 5s", log_path.display())));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn update_resources(&self, id: &str, resources: &ResourceSpec) -> Result<(), RuntimeError> {
        let mut record = self.cgroup_record(id)?.ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let mut resources = resources.clone();
        // oom_score_adj belongs to the processes, set at start; an update leaves it as it was.
        resources.oom_score_adj = record.resources.oom_score_adj;
        let parent = record.dir.rsplit_once('/').map(|(p, _)| p.to_string()).unwrap_or_default();
        resources.clamp_memory_to(ancestor_memory_limit(Layout::host(), &parent));
        self.apply_limits(id, &record.dir, &resources)?;
        record.resources = resources;
        write_json(&self.dir(id)?.join("cgroup.json"), &record)
    }

    async fn cgroup_stats(&self, id: &str) -> Result<Option<cgroup::CgroupStats>, RuntimeError> {
        let Some(record) = self.cgroup_record(id)? else { return Ok(None) };
        Ok(tokio::task::spawn_blocking(move || cgroup::stats::read(Layout::host(), &record.dir))
            .await
            .map_err(|e| RuntimeError::Other(format!("stats task: {e}")))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_dir_is_created_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("srv")).unwrap();
        std::os::unix::fs::symlink("/srv", root.path().join("link")).unwrap();
        ensure_dir_in_root(root.path(), "/link/app/data", 1000, 1000).unwrap();
        // Through the absolute symlink, but inside the root.
        let made = root.path().join("srv/app/data");
        assert!(made.is_dir());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&made).unwrap().uid(), 1000);
        ensure_dir_in_root(root.path(), "/srv/app/data", 0, 0).unwrap(); // idempotent
        assert!(ensure_dir_in_root(root.path(), "/../x", 0, 0).is_err());
        std::fs::write(root.path().join("file"), b"").unwrap();
        assert!(ensure_dir_in_root(root.path(), "/file/sub", 0, 0).is_err());
    }
}
