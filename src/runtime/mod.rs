//! Running containers: the `ContainerRuntime` seam the CRI layer drives (one narrow trait, so
//! orchestration can be unit-tested with a fake), and its LXC implementation in `lxc/`. Pod namespaces
//! are pinned here too (`namespaces.rs`); the network layer only configures the pinned netns.
//!
//! Must not depend on cri/ or grpc/: the runtime knows processes, files and LXC, not CRI semantics.

pub mod infra;
pub mod cgroup;
pub mod lxc;
pub mod namespaces;
pub mod pod_sysctl;
pub mod security;
pub mod userns;
pub mod process_stdio;

use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to create one container, already resolved by the CRI layer (image config merged
/// with the CRI request, user looked up in the image, paths absolute).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    pub id: String,
    pub sandbox_id: String,
    /// The mounted rootfs (overlay merged dir).
    pub rootfs: PathBuf,
    /// Full argv of the container's process (entrypoint + cmd, after CRI overrides).
    pub argv: Vec<String>,
    /// `KEY=VALUE` pairs, image env overridden by CRI envs.
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ProcessUser,
    /// Hostname when the container has its own UTS namespace (host network pods use the host's).
    pub hostname: String,
    pub namespaces: SharedNamespaces,
    pub mounts: Vec<BindMount>,
    pub devices: Vec<DeviceNode>,
    /// CRI log file the monitor writes (None: output discarded).
    pub log_path: Option<PathBuf>,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    /// Signal StopContainer sends first (from the image's StopSignal; SIGTERM by default).
    pub stop_signal: i32,
    /// Cgroup parent of the pod (CRI `cgroup_parent`), empty for the runtime's default.
    pub cgroup_parent: String,
    /// Capabilities, privileged, seccomp, AppArmor, read-only rootfs, masked/read-only paths.
    pub security: security::SecuritySpec,
    /// Where the container's cgroup goes (parent expanded for the driver) and its limits.
    pub cgroup: cgroup::CgroupSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Namespaces the container joins by path; None = a namespace of its own (or the host's, see
/// `host_*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// The pod's user namespace (`hostUsers: false`); None = the host's. Joined before the others,
    /// which it owns.
    pub user: Option<userns::PodUserNamespace>,
    /// The pod runs in the host's network / IPC / PID namespace (NamespaceMode NODE).
    pub host_net: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    pub readonly: bool,
    pub propagation: Propagation,
    /// Whether the source is a directory (decides what the mount point is created as).
    pub is_dir: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub host_path: PathBuf,
    pub container_path: String,
    /// cgroup permissions, e.g. "rwm".
    pub permissions: String,
    /// `'c'` or `'b'`, and the device number: what the devices cgroup allows.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
}

impl DeviceNode {
    /// The device node at `host_path` (symlinks followed, as runc does for device paths), given to
    /// the container at `container_path` with cgroup `permissions` (empty: `rwm`, a subset of `rwm`).
    pub fn from_host(host_path: PathBuf, container_path: String, permissions: &str) -> Result<DeviceNode, String> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !permissions.chars().all(|c| "rwm".contains(c)) {
            return Err(format!("device {}: permissions {permissions:?} are not a subset of \"rwm\"", host_path.display()));
        }
        let meta = std::fs::metadata(&host_path).map_err(|e| format!("device {}: {e}", host_path.display()))?;
        let kind = if meta.file_type().is_char_device() {
            'c'
        } else if meta.file_type().is_block_device() {
            'b'
        } else {
            return Err(format!("{} is not a device node", host_path.display()));
        };
        let rdev = meta.rdev();
        let permissions = if permissions.is_empty() { "rwm" } else { permissions }.to_string();
        Ok(DeviceNode { host_path, container_path, permissions, kind, major: nix::sys::stat::major(rdev), minor: nix::sys::stat::minor(rdev) })
    }
}

/// What the runtime knows about a container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    /// Created, never started.
    Created,
    Running { pid: i32 },
    Exited(ExitStatus),
    /// The monitor is gone and left no exit record.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// 128 + signal for a process killed by a signal, as runc and containerd report.
    pub code: i32,
    pub finished_at_unix_nanos: i64,
    pub oom_killed: bool,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub init_pid: i32,
    pub monitor_pid: i32,
    pub started_at_unix_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {0} not found in the runtime")]
    NotFound(String),
    #[error("container {id} is not running")]
    NotRunning { id: String },
    #[error("starting container {id}: {message}")]
    StartFailed { id: String, message: String },
    #[error("exec in container {id} timed out after {after:?}")]
    ExecTimeout { id: String, after: Duration },
    #[error("liblxc: {0}")]
    Lxc(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// Resource values the kernel refuses or the host cannot apply (bad input).
    #[error("container {id}: {message}")]
    InvalidResources { id: String, message: String },
    #[error("{0}")]
    Other(String),
}

#[tonic::async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Prepare the container (write its configuration); nothing runs yet.
    async fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    /// Start the container's process; returns once it runs.
    async fn start(&self, id: &str) -> Result<Started, RuntimeError>;
    /// Send `signal` to the container's process, wait up to `timeout` for it to exit, then kill every
    /// process of the container. Returns once nothing of it runs.
    async fn stop(&self, id: &str, signal: i32, timeout: Duration) -> Result<(), RuntimeError>;
    async fn state(&self, id: &str) -> Result<ProcessState, RuntimeError>;
    /// Delete everything the runtime holds for the container (must not be running). Idempotent.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    async fn exec_sync(&self, id: &str, argv: &[String], timeout: Option<Duration>) -> Result<ExecOutput, RuntimeError>;
    /// Make the container's log writer reopen its file (after kubelet rotated it).
    async fn reopen_log(&self, id: &str) -> Result<(), RuntimeError>;
    /// Start the process holding a pod's shared PID namespace (see infra.rs); returns its pid.
    async fn start_pod_infra(&self, sandbox_dir: &std::path::Path) -> Result<i32, RuntimeError>;
    /// Stop it; idempotent, and a no-op if `pid` is no longer that pod's infra process.
    async fn stop_pod_infra(&self, pid: i32, sandbox_dir: &std::path::Path);
    /// Whether the pod's infra process still runs.
    fn pod_infra_alive(&self, pid: i32, sandbox_dir: &std::path::Path) -> bool;
    /// Apply new limits to the container's cgroup (running or not); UpdateContainerResources.
    async fn update_resources(&self, id: &str, resources: &cgroup::ResourceSpec) -> Result<(), RuntimeError>;
    /// Statistics of the container's cgroup; None when it has none (never placed by this runtime).
    async fn cgroup_stats(&self, id: &str) -> Result<Option<cgroup::CgroupStats>, RuntimeError>;
    /// CRI Exec: run `argv` in the running container with streamed stdio (pipes, or a pty with `tty`).
    async fn exec_streaming(&self, id: &str, argv: &[String], flags: process_stdio::StdioFlags) -> Result<process_stdio::StreamingProcess, RuntimeError>;
    /// CRI Attach: the running container's own stdio, through its monitor.
    async fn attach(&self, id: &str, flags: process_stdio::StdioFlags) -> Result<process_stdio::StreamingProcess, RuntimeError>;
}
