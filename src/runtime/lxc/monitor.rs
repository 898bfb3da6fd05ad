//! The per-container monitor: `cri-lxc __monitor <spec.json>`.
//!
//! liblxc's `start()` forks, so it must never run inside the multi-threaded tokio daemon. The
//! daemon instead re-executes its own binary with a hidden subcommand (dispatched in `main`
//! before any runtime or thread exists); [`spawn_monitor`] is the daemon-side half.
//!
//! # Process tree
//! ```text
//! daemon ──spawn──▶ M: `__monitor spec.json`        setsid; owns the CRI log, the exit file and
//!                   │                               the pipes; single thread, one poll() loop
//!                   └─spawn─▶ S: `__monitor-start`  liblxc start(use_init, argv), foreground,
//!                             │                     stdio = the container's stdio
//!                             └─clone─▶ PID 1: lxc's init (a fork of S, see below)
//!                                       └─▶ PID 2: argv (exit_with_main: when it exits,
//!                                           M makes init kill the rest, see `MainWatch`)
//! ```
//! * **M** calls `setsid()` first, so it has its own session and process group: signals to the
//!   daemon's group (kill -9 of the daemon, Ctrl-C) do not reach it or the container. Under
//!   systemd the unit needs `KillMode=process` (as containerd's has), or stopping the daemon
//!   kills M with the rest of the unit's cgroup. liblxc moves S (not M) to `lxc.monitor.<name>`.
//! * **Why a second process S instead of a reader thread:** `start()` blocks until the
//!   container exits, and M must keep pumping logs meanwhile. A reader thread next to `start()`
//!   would make the forking process multi-threaded (a child forked while the reader holds the
//!   malloc lock deadlocks). Doing the pumping before `start()` in the same thread is impossible
//!   as `start()` blocks. So S is a fresh *exec* of `/proc/self/exe` (not a bare fork): it is
//!   single-threaded by construction and no `unsafe fork()` is needed. S first resets its
//!   signal state ([`ffi::reset_signal_state`]): liblxc passes the caller's mask and ignored
//!   signals down to the container, and std's `Command` does *not* clear M's mask.
//! * liblxc 5 runs its init *in-process*: the container's PID 1 is a fork of S running
//!   `lxc_container_init()` (`/proc/1/exe` is our binary); `init.lxc.static` is not used and
//!   nothing has to exist in the rootfs.
//! * S reports how `start()` ended in a small JSON result file (its stdio belongs to the
//!   container, and `want_close_all_fds(true)` closes any extra fd before the container starts).
//!
//! # Exit status
//! With `use_init` lxc's init exits with argv's status (`128 + signal` when argv was killed)
//! once *all* processes of the container are gone; liblxc stores PID 1's wait status in
//! `error_num` after a foreground `start()` (see [`ProcessExit::from_wait_status`] for its
//! 5.0.2 encoding of a signal death). We map a signal death of PID 1 itself (`stop()`, kill -9
//! of init) to `128 + signal` too, like runc/containerd. With `use_init = false` argv is PID 1
//! and its own status is reported.
//!
//! # CRI log format
//! One record per line: `<RFC 3339 nanos> <stdout|stderr> <F|P> <content>\n`, split as
//! containerd's CRI logger does (see [`CriLineSplitter`]); kubelet's `parseCRILog` reads it.
//!
//! # Talking to the daemon
//! * Ready line: M prints exactly one JSON [`Ready`] line on its stdout (a pipe read by
//!   [`spawn_monitor`]) once the container runs (or ran and exited, or failed to start), then
//!   points its stdout at /dev/null so a dead daemon cannot SIGPIPE it.
//! * Pid file (optional): `{"monitor_pid":…,"init_pid":…}` written atomically once running.
//! * Log reopen: **SIGUSR1** to M reopens `log_path` (kubelet's `ReopenContainerLog` after it
//!   renamed the file). The daemon knows the reopen is done when `log_path` exists again; that
//!   makes a control socket unnecessary.
//! * SIGTERM/SIGINT/SIGHUP are blocked and ignored: M only ends when the container has.
//! * Exit file: written atomically (temp + rename) after the container exited and its output
//!   was drained; M exits right after. Its absence with M gone means M was SIGKILLed.
//! * Attach socket (optional, `attach_socket` in the spec): CRI Attach clients connect here; M fans
//!   the container's output out to them in the same poll round it logs it, forwards their input to
//!   the container's stdin pipe / pty master and applies resizes to the pty. Framing, buffering
//!   and backpressure are documented in `attach.rs`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::attach::{self, AttachServer};
use super::ffi::{self, LxcContainer, ProcessExit};

/// Hidden subcommand the daemon runs: `<exe> __monitor <spec.json>`.
pub const MONITOR_SUBCOMMAND: &str = "__monitor";
/// Hidden subcommand M runs for S: `<exe> __monitor-start <spec.json> <result.json>`.
pub const START_SUBCOMMAND: &str = "__monitor-start";

/// Default maximum CRI log line (containerd's `max_container_log_line_size`).
pub const DEFAULT_MAX_LOG_LINE: usize = 16 * 1024;
/// Exit code reported when the container could not be started (containerd's value).
pub const START_ERROR_EXIT_CODE: i32 = 128;
/// How often M asks liblxc whether the container runs yet, until it does.
const START_POLL: Duration = Duration::from_millis(2);
/// Reads per stream per poll round (of up to 64 KiB each).
const PUMP_ROUNDS: usize = 16;
/// After S exits, how long to wait for the stdio pipes to reach EOF (a process outside the
/// container could still hold a write end).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What the daemon writes to `spec.json` for one container.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MonitorSpec {
    /// LXC container name (unique per lxcpath; also names its cgroups).
    pub name: String,
    pub lxcpath: PathBuf,
    /// Complete LXC config for the container (rootfs, namespaces, mounts, environment, ...).
    pub config_path: PathBuf,
    /// Command and arguments (resolved by the daemon from image + CRI config).
    pub argv: Vec<String>,
    /// CRI log file (kubelet's `log_directory/log_path`).
    pub log_path: PathBuf,
    /// Where to write the [`ExitRecord`].
    pub exit_file: PathBuf,
    /// Optional [`PidRecord`] file.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// Keep a stdin pipe open for the container (CRI `stdin`); otherwise stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Close the container's stdin when the first attach client's stdin ends (CRI `stdin_once`,
    /// not for a tty; see `attach.rs`).
    #[serde(default)]
    pub stdin_once: bool,
    /// Give the container a pty as stdin/stdout/stderr (CRI `tty`); logged as stdout.
    #[serde(default)]
    pub tty: bool,
    /// Run argv under lxc's init (application container, PID 2) instead of as PID 1.
    #[serde(default = "default_true")]
    pub use_init: bool,
    #[serde(default = "default_max_log_line")]
    pub max_log_line: usize,
    /// With `use_init`: end the container as soon as argv (PID 2) exits, like Kubernetes
    /// expects, instead of lxc init's default of waiting for every orphan to exit too.
    #[serde(default = "default_true")]
    pub exit_with_main: bool,
    /// Where to serve CRI Attach (see `attach.rs`); absent in specs written before attach existed.
    #[serde(default)]
    pub attach_socket: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
fn default_max_log_line() -> usize {
    DEFAULT_MAX_LOG_LINE
}

/// Contents of the exit file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    /// argv's exit code, `128 + signal` for a signal death, [`START_ERROR_EXIT_CODE`] if it
    /// never started.
    pub exit_code: i32,
    /// The terminating signal, when there was one.
    pub signal: Option<i32>,
    /// RFC 3339 UTC timestamp with nanoseconds.
    pub exited_at: String,
    /// Nanoseconds since the Unix epoch (for CRI's `finished_at`).
    pub exited_at_unix_nanos: i64,
    /// Reason hint for CRI: "Completed", "Error" or "StartError".
    pub reason: String,
    /// Human-readable details (start error text, signal name, ...).
    pub message: Option<String>,
}

/// Contents of the pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PidRecord {
    pub monitor_pid: i32,
    /// Host PID of the container's PID 1 (lxc init with `use_init`).
    pub init_pid: i32,
}

/// The one line M prints on stdout for the daemon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Ready {
    /// The container runs; `init_pid` is its PID 1 on the host.
    Running { monitor_pid: i32, init_pid: i32 },
    /// It ran and already exited before M saw it running (exit file already written).
    Exited { monitor_pid: i32, exit: ExitRecord },
    /// It could not be started (exit file already written, reason "StartError").
    Failed { monitor_pid: i32, error: String },
}

/// What S leaves for M.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StartResult {
    /// `start()` returned true: the container ran.
    started: bool,
    /// PID 1's raw wait status (liblxc `error_num`) when it ran.
    wait_status: Option<i32>,
    error: Option<String>,
    exited_at_unix_nanos: i64,
}

/// Errors of the daemon-side [`spawn_monitor`] and of M's own setup.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys { what: String, source: Errno },
    #[error("bad monitor spec {path}: {source}")]
    Spec {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Lxc(#[from] ffi::LxcError),
    #[error("monitor did not report within {0:?}")]
    Timeout(Duration),
    #[error("monitor exited without reporting (status {0})")]
    NoReport(String),
    #[error("monitor sent an unreadable ready line {line:?}: {source}")]
    BadReport {
        line: String,
        source: serde_json::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MonitorError {
    let what = what.into();
    move |source| MonitorError::Io { what, source }
}
fn sys_err(what: impl Into<String>) -> impl FnOnce(Errno) -> MonitorError {
    let what = what.into();
    move |source| MonitorError::Sys { what, source }
}

/// A started monitor, as seen by the daemon.
#[derive(Debug)]
pub struct MonitorHandle {
    /// The monitor process. The daemon should `wait()` it (from a blocking task) to reap it;
    /// if the daemon dies first, M is reparented and reaped by init.
    pub child: Child,
    pub ready: Ready,
}

/// Daemon side: run `<exe> __monitor <spec_path>` and wait (at most `timeout`) for its ready
/// line. Blocking; call from `spawn_blocking`. Uses only `Command` (no fork in our code; std's
/// spawn is safe in multi-threaded programs).
pub fn spawn_monitor(
    exe: &Path,
    spec_path: &Path,
    timeout: Duration,
) -> Result<MonitorHandle, MonitorError> {
    let mut child = Command::new(exe)
        .arg(MONITOR_SUBCOMMAND)
        .arg(spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // M reports problems through the ready line and the exit file; a stderr pipe to the
        // daemon would SIGPIPE/block it once the daemon is gone.
        .stderr(Stdio::null())
        .current_dir("/")
        .spawn()
        .map_err(io_err(format!(
            "spawning {} {MONITOR_SUBCOMMAND}",
            exe.display()
        )))?;
    let line = match child.stdout.take() {
        Some(mut out) => read_line_with_timeout(&mut out, timeout),
        None => Err(MonitorError::NoReport("no stdout pipe".into())),
    };
    let line = match line {
        Ok(Some(line)) => line,
        Ok(None) => {
            let status = child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(MonitorError::NoReport(status));
        }
        Err(err) => {
            // Leave the container to the caller's cleanup; the monitor itself is useless now.
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
    };
    let ready =
        serde_json::from_str(&line).map_err(|source| MonitorError::BadReport { line, source })?;
    Ok(MonitorHandle { child, ready })
}

/// Read up to the first newline, giving up after `timeout`. `Ok(None)` on EOF without a line.
fn read_line_with_timeout(
    out: &mut std::process::ChildStdout,
    timeout: Duration,
) -> Result<Option<String>, MonitorError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(pos);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MonitorError::Timeout(timeout));
        }
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX).max(1);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(sys_err("poll on monitor stdout")(e)),
        }
        match out.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("reading monitor stdout")(e)),
        }
    }
}

/// Read the exit file (daemon side). `Ok(None)` if it does not exist (yet).
pub fn read_exit_file(path: &Path) -> Result<Option<ExitRecord>, MonitorError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| MonitorError::Spec {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
    }
}

/// Host PID of argv when it runs under lxc init: the child of `init_pid` that is PID 2 in the
/// container's PID namespace. Signals meant for the application (CRI StopContainer's SIGTERM)
/// should go here: lxc init answers SIGTERM/SIGPWR by SIGTERMing everything and SIGKILLing it
/// all one second later, which would ignore the pod's grace period.
pub fn payload_pid(init_pid: i32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|ids| ids.split_whitespace().last())
                    == Some("2")
            })
        })
}

// ---------------------------------------------------------------------------------------------
// M: the monitor process.

/// Entry point of `__monitor <spec.json>`; returns the process exit code. Call from `main`
/// before any thread exists.
pub fn run_monitor(spec_path: &Path) -> i32 {
    // Own session first: from here on, signals to the daemon's process group miss us.
    // EPERM means we already lead a process group (spawned with process_group(0)): fine.
    let _ = nix::unistd::setsid();
    let monitor_pid = std::process::id() as i32;
    let mut ready = ReadyChannel::new();
    match monitor(spec_path, monitor_pid, &mut ready) {
        Ok(()) => 0,
        Err(err) => {
            let msg = err.to_string();
            // Setup failed before the container could run: still leave an exit file when the
            // spec says where, so the daemon sees one uniform "StartError" outcome.
            if let Ok(spec) = read_spec(spec_path) {
                if !spec.exit_file.exists() {
                    let now = unix_nanos(SystemTime::now());
                    let exit = ExitRecord {
                        exit_code: START_ERROR_EXIT_CODE,
                        signal: None,
                        exited_at: format_rfc3339_nanos(now),
                        exited_at_unix_nanos: now,
                        reason: "StartError".into(),
                        message: Some(format!("monitor: {msg}")),
                    };
                    if let Ok(json) = serde_json::to_vec_pretty(&exit) {
                        let _ = write_atomic(&spec.exit_file, &json, true);
                    }
                }
            }
            ready.send(&Ready::Failed {
                monitor_pid,
                error: msg.clone(),
            });
            eprintln!("cri-lxc monitor: {msg}");
            1
        }
    }
}

/// The stdout pipe to the daemon, used exactly once.
struct ReadyChannel {
    sent: bool,
}

impl ReadyChannel {
    fn new() -> Self {
        ReadyChannel { sent: false }
    }

    fn send(&mut self, ready: &Ready) {
        if self.sent {
            return;
        }
        self.sent = true;
        let mut out = std::io::stdout().lock();
        if let Ok(line) = serde_json::to_string(ready) {
            // Errors ignored: the daemon may be gone, which must not stop us.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        // Point fd 1 at /dev/null so later writes can never hit a dead reader.
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(&null);
        }
    }
}

fn read_spec(path: &Path) -> Result<MonitorSpec, MonitorError> {
    let data = std::fs::read(path).map_err(io_err(format!("reading spec {}", path.display())))?;
    serde_json::from_slice(&data).map_err(|source| MonitorError::Spec {
        path: path.to_path_buf(),
        source,
    })
}

/// Where S leaves its result: next to the exit file, hidden.
fn start_result_path(spec: &MonitorSpec) -> PathBuf {
    let name = spec
        .exit_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    spec.exit_file
        .with_file_name(format!(".{name}.start-result"))
}

/// One of the container's output streams.
struct Stream {
    fd: OwnedFd,
    /// `true` once read() returned EOF (or EIO for a pty whose slave side is all closed).
    eof: bool,
    splitter: CriLineSplitter,
    /// The attach frame kind its output goes out as.
    attach_kind: u8,
}

fn monitor(
    spec_path: &Path,
    monitor_pid: i32,
    ready: &mut ReadyChannel,
) -> Result<(), MonitorError> {
    // Descriptors inherited without O_CLOEXEC must not reach S or the container.
    ffi::mark_inherited_fds_cloexec().map_err(io_err("close_range(CLOEXEC)"))?;
    let spec = read_spec(spec_path)?;

    // Signals are handled synchronously through a signalfd in the poll loop. The mask is
    // inherited by S, which clears it (and all dispositions) before calling liblxc.
    let mut mask = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(sig);
    }
    mask.thread_block().map_err(sys_err("blocking signals"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(sys_err("signalfd"))?;

    let mut log = CriLogFile::open(&spec.log_path)?;

    // The container's stdio. M keeps the read ends (and a stdin write end, which keeps the container's
    // stdin open for attach clients until stdin_once closes it); S gets the other ends as its 0/1/2,
    // which liblxc hands to the container.
    let (mut streams, child_stdin, child_stdout, child_stderr, mut stdin_keep) = if spec.tty {
        let pty = nix::pty::openpty(None, None).map_err(sys_err("openpty"))?;
        // openpty(3) does not set O_CLOEXEC.
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(sys_err("fcntl(pty)"))?;
        }
        set_nonblocking(&pty.master)?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(io_err("dup pty slave"));
        let (s_in, s_out, s_err) = (dup(&pty.slave)?, dup(&pty.slave)?, pty.slave);
        let stream = Stream {
            fd: pty.master,
            eof: false,
            splitter: CriLineSplitter::new("stdout", spec.max_log_line),
            attach_kind: attach::STDOUT,
        };
        (
            vec![stream],
            Stdio::from(s_in),
            Stdio::from(s_out),
            Stdio::from(s_err),
            None,
        )
    } else {
        let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe2"))?;
        let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe2"))?;
        set_nonblocking(&out_r)?;
        set_nonblocking(&err_r)?;
        let (stdin, keep) = if spec.stdin {
            let (in_r, in_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe2"))?;
            (Stdio::from(in_r), Some(in_w))
        } else {
            (Stdio::null(), None)
        };
        let streams = vec![
            Stream {
                fd: out_r,
                eof: false,
                splitter: CriLineSplitter::new("stdout", spec.max_log_line),
                attach_kind: attach::STDOUT,
            },
            Stream {
                fd: err_r,
                eof: false,
                splitter: CriLineSplitter::new("stderr", spec.max_log_line),
                attach_kind: attach::STDERR,
            },
        ];
        (streams, stdin, Stdio::from(out_w), Stdio::from(err_w), keep)
    };

    // The attach server: input goes to the stdin pipe (made non-blocking: M must never block on a
    // container that does not read) or, with a tty, the pty master. Not fatal when it cannot be
    // bound: the container runs, only attach is unavailable.
    let mut attach_server = match &spec.attach_socket {
        Some(path) => match attach_server_for(path, &spec, &streams, stdin_keep.as_ref()) {
            Ok(server) => Some(server),
            Err(e) => {
                eprintln!("cri-lxc monitor: attach socket {}: {e}", path.display());
                None
            }
        },
        None => None,
    };

    // Used only for non-forking queries (init_pid over the command socket). Created before S
    // exists so that a failure here cannot leave a container without its log reader.
    let query = LxcContainer::new(&spec.name, &spec.lxcpath).map_err(MonitorError::Lxc)?;

    let result_path = start_result_path(&spec);
    let _ = std::fs::remove_file(&result_path);
    // /proc/self/exe keeps working even if the binary on disk was replaced by an upgrade.
    let mut starter = Command::new("/proc/self/exe")
        .arg(START_SUBCOMMAND)
        .arg(spec_path)
        .arg(&result_path)
        .env_clear()
        .current_dir("/")
        .stdin(child_stdin)
        .stdout(child_stdout)
        .stderr(child_stderr)
        .spawn()
        .map_err(io_err("spawning the start helper"))?;
    // The Command (and with it our copies of the child-side fds) is dropped here, so the pipes
    // reach EOF once the container side has closed them.

    let mut starter_status: Option<std::process::ExitStatus> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut main_watch = MainWatch::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Done when S is gone and every stream hit EOF (or the drain grace ran out).
        if starter_status.is_some()
            && (streams.iter().all(|s| s.eof)
                || drain_deadline.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }

        let searching = starter_status.is_none() && main_watch.needs_ticks();
        let timeout = if (!ready.sent || searching) && starter_status.is_none() {
            PollTimeout::from(START_POLL.as_millis() as u16)
        } else if let Some(deadline) = drain_deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis();
            PollTimeout::from(u16::try_from(left).unwrap_or(u16::MAX))
        } else {
            PollTimeout::NONE
        };
        // Backpressure from a slow attach client (see attach.rs) until the container has exited;
        // then its remaining output is drained regardless.
        let hold_output = starter_status.is_none() && attach_server.as_ref().is_some_and(|a| a.backed_up());
        // A stalled client must be looked at again even when nothing else happens.
        let timeout = match attach_server.as_ref().is_some_and(|a| a.stalled_clients()) {
            true if timeout.as_millis().is_none_or(|ms| ms > 1000) => PollTimeout::from(1000u16),
            _ => timeout,
        };
        let mut fds: Vec<PollFd> = Vec::with_capacity(streams.len() + 1);
        fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        for s in streams.iter().filter(|s| !s.eof && !hold_output) {
            fds.push(PollFd::new(s.fd.as_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = main_watch.main_fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        if let Some(a) = &attach_server {
            fds.extend(a.poll_fds());
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys_err("poll")(e)),
        }
        drop(fds);

        // Output first, so everything written before an exit is logged before we finish.
        if !hold_output {
            for s in streams.iter_mut().filter(|s| !s.eof) {
                pump(s, &mut buf, &mut log, attach_server.as_mut());
            }
        }
        if let Some(a) = attach_server.as_mut() {
            a.service();
            if a.stdin_closed() {
                drop(stdin_keep.take());
            }
        }

        while let Ok(Some(info)) = sigfd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGUSR1) => log.reopen(),
                Ok(Signal::SIGCHLD) => {}
                // SIGTERM/SIGINT/SIGHUP: deliberately ignored, see module docs.
                _ => {}
            }
        }
        if starter_status.is_none() {
            match starter.try_wait() {
                Ok(Some(status)) => {
                    starter_status = Some(status);
                    drain_deadline = Some(Instant::now() + DRAIN_GRACE);
                    // The container is gone; a readable pidfd left in the poll set would
                    // otherwise spin the drain loop.
                    main_watch = MainWatch::Done;
                }
                Ok(None) => {}
                Err(e) => return Err(io_err("waiting for the start helper")(e)),
            }
        }

        if !ready.sent && starter_status.is_none() {
            if let Some(init_pid) = query.init_pid() {
                if let Some(pid_file) = &spec.pid_file {
                    let record = PidRecord {
                        monitor_pid,
                        init_pid,
                    };
                    let json = serde_json::to_vec(&record).unwrap_or_default();
                    // Not fatal: the daemon also gets the pid from the ready line, and dying
                    // here would orphan a running container's output.
                    if let Err(e) = write_atomic(pid_file, &json, false) {
                        eprintln!("cri-lxc monitor: {e}");
                    }
                }
                ready.send(&Ready::Running {
                    monitor_pid,
                    init_pid,
                });
                if spec.use_init && spec.exit_with_main {
                    main_watch.begin(init_pid);
                }
            }
        }
        if starter_status.is_none() {
            main_watch.step();
        }
    }

    for s in streams.iter_mut() {
        s.splitter.finish(&mut |rec| log.write_record(rec));
    }
    log.sync();

    let status = starter_status.map(|s| s.to_string()).unwrap_or_default();
    let result: Option<StartResult> = std::fs::read(&result_path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok());
    let _ = std::fs::remove_file(&result_path);
    let exit = exit_record(result, &status);
    let json = serde_json::to_vec_pretty(&exit).unwrap_or_default();
    write_atomic(&spec.exit_file, &json, true)?;
    // Attached clients get what is still buffered for them, briefly; then their connections close,
    // which tells them the container ended.
    if let Some(a) = attach_server.as_mut() {
        a.finish(Duration::from_secs(1));
    }

    if exit.reason == "StartError" {
        ready.send(&Ready::Failed {
            monitor_pid,
            error: exit.message.clone().unwrap_or_default(),
        });
    } else {
        ready.send(&Ready::Exited { monitor_pid, exit });
    }
    Ok(())
}

/// Read what is available on one stream into the log, at most [`PUMP_ROUNDS`] reads so that a
/// container writing non-stop cannot starve signal handling (the next poll() comes back at
/// once anyway).
fn pump(stream: &mut Stream, buf: &mut [u8], log: &mut CriLogFile, mut attach: Option<&mut AttachServer>) {
    for _ in 0..PUMP_ROUNDS {
        match nix::unistd::read(&stream.fd, buf) {
            Ok(0) => {
                stream.eof = true;
                stream.splitter.finish(&mut |rec| log.write_record(rec));
                return;
            }
            Ok(n) => {
                stream
                    .splitter
                    .feed(&buf[..n], &mut |rec| log.write_record(rec));
                if let Some(a) = attach.as_deref_mut() {
                    a.broadcast(stream.attach_kind, &buf[..n]);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return,
            // EIO: a pty master whose slave side is closed everywhere, i.e. EOF.
            Err(_) => {
                stream.eof = true;
                stream.splitter.finish(&mut |rec| log.write_record(rec));
                return;
            }
        }
    }
}

/// Bind the attach socket with the container's stdin target (a non-blocking dup of the stdin
/// pipe's write end, or of the pty master) and, for a tty, the pty master for resizes.
fn attach_server_for(
    path: &Path,
    spec: &MonitorSpec,
    streams: &[Stream],
    stdin_pipe: Option<&OwnedFd>,
) -> Result<AttachServer, MonitorError> {
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(io_err("dup for attach"));
    let pty = match (spec.tty, streams.first()) {
        (true, Some(s)) => Some(dup(&s.fd)?),
        _ => None,
    };
    let stdin = match (spec.stdin, &pty, stdin_pipe) {
        (false, _, _) => None,
        (true, Some(master), _) => Some(dup(master)?),
        (true, None, Some(pipe)) => {
            let fd = dup(pipe)?;
            set_nonblocking(&fd)?;
            Some(fd)
        }
        (true, None, None) => None,
    };
    AttachServer::bind(path, stdin, pty, spec.stdin_once).map_err(io_err("binding"))
}

fn exit_record(result: Option<StartResult>, starter_status: &str) -> ExitRecord {
    let now = unix_nanos(SystemTime::now());
    let Some(result) = result else {
        return ExitRecord {
            exit_code: START_ERROR_EXIT_CODE,
            signal: None,
            exited_at: format_rfc3339_nanos(now),
            exited_at_unix_nanos: now,
            reason: "StartError".into(),
            message: Some(format!(
                "start helper ended without a result ({starter_status})"
            )),
        };
    };
    let at = result.exited_at_unix_nanos;
    match (result.started, result.wait_status) {
        (true, Some(status)) => {
            let exit = ProcessExit::from_wait_status(status);
            // Only a signal death of PID 1 itself is certain; lxc init reports argv's signal
            // death as a plain exit(128 + n), indistinguishable from `exit 137`.
            let signal = match exit {
                ProcessExit::Signaled(sig) => Some(sig),
                ProcessExit::Exited(_) => None,
            };
            let code = exit.code();
            ExitRecord {
                exit_code: code,
                signal,
                exited_at: format_rfc3339_nanos(at),
                exited_at_unix_nanos: at,
                reason: if code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                },
                message: signal.map(|s| {
                    let name = Signal::try_from(s)
                        .map(|s| s.as_str())
                        .unwrap_or("unknown signal");
                    format!("terminated by {name}")
                }),
            }
        }
        _ => ExitRecord {
            exit_code: START_ERROR_EXIT_CODE,
            signal: None,
            exited_at: format_rfc3339_nanos(at),
            exited_at_unix_nanos: at,
            reason: "StartError".into(),
            message: Some(result.error.unwrap_or_else(|| "liblxc start failed".into())),
        },
    }
}

/// Ends an lxc-init container when its main process (PID 2) exits.
///
/// lxc's init records argv's exit status and then keeps waiting until *all* processes are
/// gone, so a left-over background process would keep the container "running" forever. Once
/// PID 2 has exited and init is still there after [`ORPHAN_GRACE`] (i.e. orphans remain), we
/// send init SIGALRM: lxc init answers it with `kill(-1, SIGKILL)` inside the container, reaps
/// everything and exits with the recorded status (measured on 5.0.2). Side effect: before
/// killing, lxc init tries to freeze forking via `pids.max` and, with a cgroup namespace, prints
/// `Failed to open "/sys/fs/cgroup/pids///pids.max"` on the container's stderr; the grace
/// keeps that line out of the log in the usual no-orphan case.
/// Both processes are tracked through pidfds, so PID reuse cannot misdirect the signal.
#[derive(Default)]
enum MainWatch {
    #[default]
    Off,
    /// Looking for PID 2 among init's children (init may not have forked it yet).
    Searching {
        init: OwnedFd,
        init_pid: i32,
        until: Instant,
    },
    /// PID 2 found; its pidfd is polled.
    Watching {
        init: OwnedFd,
        main: OwnedFd,
    },
    /// PID 2 exited; give init a moment to finish by itself.
    Ending {
        init: OwnedFd,
        deadline: Instant,
    },
    Done,
}

/// How long init may take to exit on its own after PID 2 did, before we end the orphans.
const ORPHAN_GRACE: Duration = Duration::from_millis(50);

/// How long after RUNNING to look for PID 2 before giving up (it is forked right away).
const MAIN_SEARCH: Duration = Duration::from_secs(2);

impl MainWatch {
    fn begin(&mut self, init_pid: i32) {
        // ESRCH: the container is already gone; nothing to watch.
        if let Ok(init) = ffi::pidfd_open(init_pid) {
            *self = MainWatch::Searching {
                init,
                init_pid,
                until: Instant::now() + MAIN_SEARCH,
            };
            self.step();
        }
    }

    /// Whether the watch needs periodic ticks (rather than only poll events).
    fn needs_ticks(&self) -> bool {
        matches!(self, MainWatch::Searching { .. } | MainWatch::Ending { .. })
    }

    fn main_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            MainWatch::Watching { main, .. } => Some(main.as_fd()),
            _ => None,
        }
    }

    /// Advance: find PID 2, or notice that it exited and end the container.
    fn step(&mut self) {
        match std::mem::take(self) {
            MainWatch::Searching {
                init,
                init_pid,
                until,
            } => {
                let children = children_of(init_pid);
                if let Some(pid) = payload_pid(init_pid) {
                    match ffi::pidfd_open(pid) {
                        // Re-check after opening: the PID could have been recycled in between.
                        Ok(main) if payload_pid(init_pid) == Some(pid) => {
                            *self = MainWatch::Watching { init, main };
                            // It may have exited already; the next poll reports it.
                        }
                        _ => {
                            *self = MainWatch::Searching {
                                init,
                                init_pid,
                                until,
                            }
                        }
                    }
                } else if !children.is_empty() {
                    // Only orphans left: PID 2 already exited.
                    *self = MainWatch::Ending {
                        init,
                        deadline: Instant::now(),
                    };
                } else if Instant::now() < until {
                    *self = MainWatch::Searching {
                        init,
                        init_pid,
                        until,
                    };
                } else {
                    *self = MainWatch::Done;
                }
            }
            MainWatch::Watching { init, main } => {
                if exited(&main) {
                    *self = MainWatch::Ending {
                        init,
                        deadline: Instant::now() + ORPHAN_GRACE,
                    };
                } else {
                    *self = MainWatch::Watching { init, main };
                }
            }
            MainWatch::Ending { init, deadline } => {
                if exited(&init) {
                    *self = MainWatch::Done;
                } else if Instant::now() >= deadline {
                    // ESRCH: init is gone already, which is what we wanted.
                    let _ = ffi::pidfd_send_signal(init.as_fd(), Signal::SIGALRM as i32);
                    *self = MainWatch::Done;
                } else {
                    *self = MainWatch::Ending { init, deadline };
                }
            }
            other => *self = other,
        }
    }
}

/// A pidfd polls readable once its process has exited.
fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), MonitorError> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(sys_err("fcntl(F_GETFL)"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(sys_err("fcntl(F_SETFL)"))?;
    Ok(())
}

/// Write `data` to `path` atomically: temp file in the same directory, rename over. With
/// `durable` the data is fsynced first (the exit file must survive a daemon crash; the pid file
/// and S's result only matter while the processes live, and fsync costs milliseconds).
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<(), MonitorError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(format!("writing {}", path.display()))(e)
    })
}

// ---------------------------------------------------------------------------------------------
// S: the start helper.

/// Entry point of `__monitor-start <spec.json> <result.json>`: the single-threaded process that
/// calls liblxc `start()` in the foreground. Its stdio is the container's.
pub fn run_start_helper(spec_path: &Path, result_path: &Path) -> i32 {
    let outcome = (|| -> Result<i32, String> {
        // Whatever M (or our own Rust runtime: SIGPIPE) set up must not reach the container.
        ffi::reset_signal_state().map_err(|e| format!("resetting signal state: {e}"))?;
        let spec = read_spec(spec_path).map_err(|e| e.to_string())?;
        let c = LxcContainer::new(&spec.name, &spec.lxcpath).map_err(|e| e.to_string())?;
        // lxc_container_new may have loaded <lxcpath>/<name>/config; replace, don't append
        // (list keys such as lxc.mount.entry would otherwise be doubled).
        c.clear_config().map_err(|e| e.to_string())?;
        c.load_config(&spec.config_path)
            .map_err(|e| e.to_string())?;
        // Foreground: we stay the parent of the container and learn its exit status.
        c.want_daemonize(false).map_err(|e| e.to_string())?;
        // Only 0/1/2 may reach the container.
        c.want_close_all_fds(true).map_err(|e| e.to_string())?;
        c.start(spec.use_init, &spec.argv)
            .map_err(|e| with_lxc_log_errors(&c, e.to_string()))?;
        Ok(c.error_num())
    })();
    let exited_at_unix_nanos = unix_nanos(SystemTime::now());
    let result = match outcome {
        Ok(status) => StartResult {
            started: true,
            wait_status: Some(status),
            error: None,
            exited_at_unix_nanos,
        },
        Err(error) => StartResult {
            started: false,
            wait_status: None,
            error: Some(error),
            exited_at_unix_nanos,
        },
    };
    let json = serde_json::to_vec(&result).unwrap_or_default();
    match write_atomic(result_path, &json, false) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// liblxc's own reason for a failed start is only in its log (`lxc.log.file`); append the last
/// few ERROR lines to the message that ends up in the exit file / ready line.
fn with_lxc_log_errors(c: &LxcContainer, msg: String) -> String {
    let Some(path) = c.get_config_item("lxc.log.file").filter(|p| !p.is_empty()) else {
        return msg;
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return msg;
    };
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" ERROR "))
        .map(|l| l.split_once(" - ").map_or(l, |(_, rest)| rest).trim())
        .collect();
    if errors.is_empty() {
        return msg;
    }
    format!(
        "{msg}; lxc log: {}",
        errors[errors.len().saturating_sub(3)..].join("; ")
    )
}

// ---------------------------------------------------------------------------------------------
// CRI log format.

/// The CRI log file, reopenable.
struct CriLogFile {
    path: PathBuf,
    file: Option<File>,
    /// Reusable record buffer, so each record is one write(2) on an O_APPEND file.
    record: Vec<u8>,
}

impl CriLogFile {
    fn open(path: &Path) -> Result<CriLogFile, MonitorError> {
        let file =
            Self::open_file(path).map_err(io_err(format!("opening log {}", path.display())))?;
        Ok(CriLogFile {
            path: path.to_path_buf(),
            file: Some(file),
            record: Vec::with_capacity(17 * 1024),
        })
    }

    fn open_file(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
    }

    /// Open a fresh file at the path (after kubelet renamed the old one). On failure keep
    /// writing to the old descriptor rather than dropping output.
    fn reopen(&mut self) {
        match Self::open_file(&self.path) {
            Ok(f) => {
                if let Some(old) = self.file.replace(f) {
                    let _ = old.sync_data();
                }
            }
            Err(e) => eprintln!("cri-lxc monitor: reopening {}: {e}", self.path.display()),
        }
    }

    fn write_record(&mut self, rec: LogRecord<'_>) {
        self.record.clear();
        self.record
            .extend_from_slice(format_rfc3339_nanos(unix_nanos(SystemTime::now())).as_bytes());
        self.record.push(b' ');
        self.record.extend_from_slice(rec.stream.as_bytes());
        self.record
            .extend_from_slice(if rec.partial { b" P " } else { b" F " });
        self.record.extend_from_slice(rec.content);
        self.record.push(b'\n');
        if let Some(f) = self.file.as_mut() {
            // Like containerd: on a write error keep draining the container's output.
            let _ = f.write_all(&self.record);
        }
    }

    fn sync(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.sync_data();
        }
    }
}

/// One CRI log record before the timestamp is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub stream: &'static str,
    /// `P` tag: more of the same line follows (split at `max_line`, or output ended without a
    /// newline).
    pub partial: bool,
    pub content: &'a [u8],
}

/// Splits a byte stream into CRI log records, following containerd's `redirectLogs` (which
/// kubelet's `parseCRILog` expects): a line ending in `\n` (with an optional `\r` before it,
/// both stripped) is `F`; while a line exceeds `max_line` bytes, its first `max_line` bytes go
/// out as `P`; content still pending at EOF goes out as `P`. An empty line is an `F` record
/// with empty content.
#[derive(Debug)]
pub struct CriLineSplitter {
    stream: &'static str,
    max_line: usize,
    pending: Vec<u8>,
}

impl CriLineSplitter {
    pub fn new(stream: &'static str, max_line: usize) -> Self {
        CriLineSplitter {
            stream,
            max_line: max_line.max(1),
            pending: Vec::new(),
        }
    }

    pub fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(LogRecord<'_>)) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let mut line = &data[..pos];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    } else if line.is_empty() && self.pending.last() == Some(&b'\r') {
                        // "\r" and "\n" arrived in different reads.
                        self.pending.pop();
                    }
                    self.pending.extend_from_slice(line);
                    self.split_overlong(emit);
                    emit(LogRecord {
                        stream: self.stream,
                        partial: false,
                        content: &self.pending,
                    });
                    self.pending.clear();
                    data = &data[pos + 1..];
                }
                None => {
                    self.pending.extend_from_slice(data);
                    self.split_overlong(emit);
                    data = &[];
                }
            }
        }
    }

    /// Flush at EOF: a line without its newline is partial.
    pub fn finish(&mut self, emit: &mut dyn FnMut(LogRecord<'_>)) {
        if !self.pending.is_empty() {
            emit(LogRecord {
                stream: self.stream,
                partial: true,
                content: &self.pending,
            });
            self.pending.clear();
        }
    }

    fn split_overlong(&mut self, emit: &mut dyn FnMut(LogRecord<'_>)) {
        if self.pending.len() <= self.max_line {
            return;
        }
        let mut start = 0;
        while self.pending.len() - start > self.max_line {
            emit(LogRecord {
                stream: self.stream,
                partial: true,
                content: &self.pending[start..start + self.max_line],
            });
            start += self.max_line;
        }
        self.pending.drain(..start);
    }
}

fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// `2006-01-02T15:04:05.123456789Z` (UTC, always nine fraction digits; Go's RFC3339Nano parser
/// used by kubelet accepts it).
pub fn format_rfc3339_nanos(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Proleptic Gregorian date from days since 1970-01-01 (H. Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        let mut s = CriLineSplitter::new("stdout", max);
        for c in chunks {
            s.feed(c, &mut |r| out.push((r.partial, r.content.to_vec())));
        }
        s.finish(&mut |r| out.push((r.partial, r.content.to_vec())));
        out
    }

    #[test]
    fn splitter_follows_containerd() {
        assert_eq!(
            split(8, &[b"a\nbc\n"]),
            vec![(false, b"a".to_vec()), (false, b"bc".to_vec())]
        );
        // Line split over reads, CRLF stripped, empty line kept.
        assert_eq!(
            split(8, &[b"ab", b"c\r", b"\n\n"]),
            vec![(false, b"abc".to_vec()), (false, vec![])]
        );
        // Exactly max bytes: one F. max+1: P(max) F(1).
        assert_eq!(split(4, &[b"abcd\n"]), vec![(false, b"abcd".to_vec())]);
        assert_eq!(
            split(4, &[b"abcde\n"]),
            vec![(true, b"abcd".to_vec()), (false, b"e".to_vec())]
        );
        // 2*max: P(max) F(max), as containerd does.
        assert_eq!(
            split(2, &[b"ab", b"cd\n"]),
            vec![(true, b"ab".to_vec()), (false, b"cd".to_vec())]
        );
        // Trailing text without newline at EOF: P.
        assert_eq!(
            split(8, &[b"x\ntail"]),
            vec![(false, b"x".to_vec()), (true, b"tail".to_vec())]
        );
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            format_rfc3339_nanos(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }
}
