//! The pod infra process, only for pods whose containers share one PID namespace
//! (`NamespaceOption.pid = POD`): a PID namespace needs a live init, so a minimal `__pause` process
//! is PID 1 of the pod's PID namespace, reaps orphans, and exits on SIGTERM. Containers join it by
//! `/proc/<pid>/ns/pid`. Pods with per-container PID namespaces (kubelet's default) have no infra
//! process at all.
//!
//! `__pod-infra <sandbox dir>` unshares CLONE_NEWPID (which applies to its children) and spawns
//! `__pause <sandbox dir>` as the namespace's first process, prints its pid and exits; the pause
//! process starts its own session, so it outlives daemon restarts like the container monitors.
//! In a pod with a user namespace, the helper first joins it (the pinned `userns` file in the
//! sandbox dir), so the PID namespace is owned by the pod's user namespace.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::RuntimeError;

pub const INFRA_SUBCOMMAND: &str = "__pod-infra";
pub const PAUSE_SUBCOMMAND: &str = "__pause";

/// Daemon side: start the infra process for the pod whose state dir is `dir`; returns its host pid.
/// Blocking (waits for the short-lived helper); call from `spawn_blocking`.
pub fn spawn(exe: &Path, dir: &Path) -> Result<i32, RuntimeError> {
    let mut child = Command::new(exe)
        .arg(INFRA_SUBCOMMAND)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::Io { what: format!("spawning {} {INFRA_SUBCOMMAND}", exe.display()), source: e })?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let output = child.wait_with_output().map_err(|e| RuntimeError::Io { what: "waiting for the pod infra helper".into(), source: e })?;
    match line.trim().parse::<i32>() {
        Ok(pid) if output.status.success() && pid > 0 => Ok(pid),
        _ => Err(RuntimeError::Other(format!(
            "pod infra process did not start ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// Whether `pid` is the infra process of the pod in `dir` (guards against a recycled pid).
pub fn is_infra_of(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.len() >= 3 && args[1] == PAUSE_SUBCOMMAND.as_bytes() && args[2] == dir.as_os_str().as_encoded_bytes()
}

/// Stop the pod's infra process (idempotent). SIGKILL: it holds no state, and the kernel then kills
/// whatever is left in the pod's PID namespace.
pub fn stop(pid: i32, dir: &Path) {
    if pid > 0 && is_infra_of(pid, dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// `__pod-infra <dir>`: runs in a fresh single-threaded process.
pub fn run_infra_helper(args: &[String]) -> i32 {
    let [dir] = args else {
        eprintln!("usage: cri-lxc {INFRA_SUBCOMMAND} <sandbox dir>");
        return 2;
    };
    // A pod with a user namespace (hostUsers: false): the PID namespace must belong to it, or its
    // containers could not join it (setns(2) needs CAP_SYS_ADMIN in the owning user namespace).
    let userns = Path::new(dir).join(super::userns::USERNS_PIN_FILE);
    if userns.exists() {
        let joined = std::fs::File::open(&userns).map_err(|e| e.to_string()).and_then(|f| nix::sched::setns(&f, CloneFlags::CLONE_NEWUSER).map_err(|e| e.to_string()));
        if let Err(e) = joined {
            eprintln!("joining the pod's user namespace {}: {e}", userns.display());
            return 1;
        }
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        eprintln!("unshare(CLONE_NEWPID): {e}");
        return 1;
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    match Command::new(exe).arg(PAUSE_SUBCOMMAND).arg(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
        Ok(child) => {
            println!("{}", child.id());
            0
        }
        Err(e) => {
            eprintln!("spawning {PAUSE_SUBCOMMAND}: {e}");
            1
        }
    }
}

/// `__pause <dir>`: PID 1 of the pod's PID namespace. Signals arrive through a signalfd (PID 1 gets
/// no default signal actions): SIGCHLD reaps orphans, SIGTERM/SIGINT end it.
pub fn run_pause() -> i32 {
    let _ = nix::unistd::setsid();
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    if mask.thread_block().is_err() {
        return 1;
    }
    let Ok(fd) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC) else {
        return 1;
    };
    loop {
        match fd.read_signal() {
            Ok(Some(info)) if info.ssi_signo == Signal::SIGCHLD as u32 => loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            },
            Ok(Some(info)) if info.ssi_signo == Signal::SIGHUP as u32 => {}
            Ok(Some(_)) => return 0,
            Ok(None) => {}
            Err(nix::Error::EINTR) => {}
            Err(_) => return 1,
        }
    }
}
