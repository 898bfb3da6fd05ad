//! ExecSync: a command run inside a running container through liblxc attach, in a re-executed
//! single-threaded helper (`cri-lxc __exec <exec.json> -- argv…`) because attach forks. The helper's
//! stdout/stderr are the command's; its exit code is the command's (128+signal when killed), or
//! `HELPER_FAILURE` with a message on stderr when it could not attach at all.
//!
//! Streaming exec (CRI `Exec`, [`spawn_streaming`]) runs the same helper with its stdio as pipes to the
//! daemon, or with a pty the daemon creates (`--tty`: all three are the pty's slave, the daemon keeps the
//! master, `TERM=xterm` is set when the container's env lacks it, as containerd does). With a tty the
//! helper starts a session whose controlling terminal is the pty (`take_terminal`), so ^C/^Z reach the
//! command. The helper leads its own process group (its own session's with a tty), which the attached
//! command inherits: when the client goes away before the command ended, the daemon SIGKILLs that group
//! (an interactive shell that moved itself into a job-control group of its own gets the pty's hangup).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::os::fd::OwnedFd;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::ffi::{self, AttachOptions, EnvPolicy, LxcContainer};
use crate::runtime::process_stdio::{BoxRead, BoxWrite, StdioFlags, StreamEnd, StreamingProcess, TermSize, TerminalResizer};
use crate::runtime::{ExecOutput, RuntimeError};

pub const EXEC_SUBCOMMAND: &str = "__exec";
/// Exit code of the helper when it failed before the command ran (like `docker exec`'s 126/127 family).
pub const HELPER_FAILURE: i32 = 125;
/// Helper flag before `--`: the command runs on a terminal (stdio is a pty slave); sets `TERM`.
pub const TTY_FLAG: &str = "--tty";

/// What an exec needs to run as the container's own process would: its env, user and cwd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecContext {
    pub name: String,
    pub lxcpath: PathBuf,
    pub rootfs: PathBuf,
    pub env: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    pub cwd: String,
    /// The container's own executable, checked before start.
    pub argv0: String,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ExecContext {
    fn path_var(&self) -> &str {
        self.env.iter().find_map(|kv| kv.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH)
    }

    /// runc's check before exec, done against the rootfs from outside: an executable must exist
    /// (looked up in the container's PATH when it has no slash).
    pub fn check_executable(&self) -> Result<(), String> {
        let name = self.argv0.as_str();
        if name.is_empty() {
            return Err("no command specified: neither the image nor the container config has one".into());
        }
        let candidates: Vec<String> = if name.contains('/') {
            let base = if name.starts_with('/') { String::new() } else { format!("{}/", self.cwd.trim_end_matches('/')) };
            vec![format!("{base}{name}")]
        } else {
            self.path_var().split(':').filter(|d| !d.is_empty()).map(|d| format!("{}/{name}", d.trim_end_matches('/'))).collect()
        };
        for c in &candidates {
            if let Some(host) = resolve_in_root(&self.rootfs, c) {
                use std::os::unix::fs::PermissionsExt;
                if host.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0) {
                    return Ok(());
                }
            }
        }
        if name.contains('/') {
            Err(format!("exec: {name:?}: no such file or directory"))
        } else {
            Err(format!("exec: {name:?}: executable file not found in $PATH"))
        }
    }
}

/// The host path of `path` as seen inside `root`: symlinks are followed with `root` as `/` (an
/// absolute link target restarts at `root`, `..` stops at it), at most 40 of them.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = path.split('/').filter(|c| !c.is_empty()).rev().map(str::to_string).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(resolved.join("/")).join(&comp);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = std::fs::read_link(&candidate).ok()?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(target.split('/').filter(|c| !c.is_empty()).rev().map(str::to_string));
            }
            Ok(_) => resolved.push(comp),
            Err(_) => return None,
        }
    }
    Some(root.join(resolved.join("/")))
}

/// Daemon side: run the helper, collect output, enforce the timeout (then the whole helper process
/// group, which holds the attached command, is killed and `ExecTimeout` returned).
pub async fn run(exe: &Path, context: &Path, id: &str, argv: &[String], timeout: Option<Duration>) -> Result<ExecOutput, RuntimeError> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(EXEC_SUBCOMMAND)
        .arg(context)
        .arg("--")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| RuntimeError::Io { what: format!("spawning {} {EXEC_SUBCOMMAND}", exe.display()), source: e })?;
    let pgid = child.id().map(|p| p as i32);
    let output = child.wait_with_output();
    let output = match timeout {
        Some(limit) => match tokio::time::timeout(limit, output).await {
            Ok(out) => out,
            Err(_) => {
                if let Some(pgid) = pgid {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
                }
                return Err(RuntimeError::ExecTimeout { id: id.to_string(), after: limit });
            }
        },
        None => output.await,
    };
    let output = output.map_err(|e| RuntimeError::Io { what: "waiting for the exec helper".into(), source: e })?;
    let exit_code = match output.status.code() {
        Some(code) => code,
        None => 128 + std::os::unix::process::ExitStatusExt::signal(&output.status).unwrap_or(0),
    };
    Ok(ExecOutput { stdout: output.stdout, stderr: output.stderr, exit_code })
}

/// Daemon side of CRI Exec: start the helper with streamed stdio (see the module docs).
pub async fn spawn_streaming(exe: &Path, context: &Path, argv: &[String], flags: StdioFlags) -> Result<StreamingProcess, RuntimeError> {
    let sys = |what: &'static str| move |e: nix::errno::Errno| RuntimeError::Io { what: what.into(), source: std::io::Error::from(e) };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(EXEC_SUBCOMMAND).arg(context);
    if flags.tty {
        cmd.arg(TTY_FLAG);
    }
    cmd.arg("--").args(argv).kill_on_drop(true);
    if !flags.tty {
        // With a tty the helper makes its own session instead (setsid(2) refuses a group leader);
        // either way the helper's pid is the group the abort below kills.
        cmd.process_group(0);
    }
    let null_or_piped = |wanted: bool| if wanted { Stdio::piped() } else { Stdio::null() };
    let master = if flags.tty {
        let pty = nix::pty::openpty(None, None).map_err(sys("openpty"))?;
        // openpty(3) does not set O_CLOEXEC; the helper gets the slave as 0/1/2 only.
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(sys("fcntl(FD_CLOEXEC)"))?;
        }
        let flags = OFlag::from_bits_truncate(fcntl(&pty.master, FcntlArg::F_GETFL).map_err(sys("fcntl(F_GETFL)"))?);
        fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(sys("fcntl(F_SETFL)"))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| RuntimeError::Io { what: "dup pty".into(), source: e });
        cmd.stdin(Stdio::from(dup(&pty.slave)?)).stdout(Stdio::from(dup(&pty.slave)?)).stderr(Stdio::from(pty.slave));
        Some(pty.master)
    } else {
        cmd.stdin(null_or_piped(flags.stdin)).stdout(null_or_piped(flags.stdout)).stderr(null_or_piped(flags.stderr));
        None
    };
    let spawned = cmd.spawn();
    // The Command holds our copies of the pty slave: without them, the master reads EOF (EIO) once the
    // command and its children closed theirs.
    drop(cmd);
    let mut child = spawned.map_err(|e| RuntimeError::Io { what: format!("spawning {} {EXEC_SUBCOMMAND}", exe.display()), source: e })?;
    let pgid = child.id().map(|p| p as i32);

    let io_err = |what: &'static str| move |e: std::io::Error| RuntimeError::Io { what: what.into(), source: e };
    let mut process = StreamingProcess { stdin: None, stdout: None, stderr: None, resizer: None, exit: Box::pin(std::future::pending()) };
    match master {
        Some(master) => {
            let reader = pipe::Receiver::from_owned_fd_unchecked(master.try_clone().map_err(io_err("dup pty master"))?).map_err(io_err("registering the pty"))?;
            process.stdout = Some(Box::new(reader));
            if flags.stdin {
                let writer = pipe::Sender::from_owned_fd_unchecked(master.try_clone().map_err(io_err("dup pty master"))?).map_err(io_err("registering the pty"))?;
                process.stdin = Some(Box::new(writer));
            }
            process.resizer = Some(Box::new(PtyResizer { master }));
        }
        None => {
            process.stdin = child.stdin.take().map(|w| Box::new(w) as BoxWrite);
            process.stdout = child.stdout.take().map(|r| Box::new(r) as BoxRead);
            process.stderr = child.stderr.take().map(|r| Box::new(r) as BoxRead);
        }
    }

    // The helper is waited for in a task of its own. Dropping `exit` before the command ended (client
    // gone) drops `abort`, which SIGKILLs the helper's process group and reaps the helper.
    let (done_tx, done_rx) = oneshot::channel();
    let (abort, aborted) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                let _ = done_tx.send(status);
            }
            _ = aborted => {
                if let Some(pgid) = pgid {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
                }
                // A tty helper not yet through setsid() has no group of its own yet.
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    });
    process.exit = Box::pin(async move {
        let _abort_on_drop = abort;
        let status = done_rx.await.map_err(|_| std::io::Error::other("exec helper task ended"))??;
        let code = status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
        Ok(StreamEnd::Exited(code))
    });
    Ok(process)
}

/// TIOCSWINSZ on the pty master: the kernel applies it to the pair and SIGWINCHes the foreground group.
struct PtyResizer {
    master: OwnedFd,
}

impl TerminalResizer for PtyResizer {
    fn resize(&mut self, size: TermSize) -> std::io::Result<()> {
        let winsize = rustix::termios::Winsize { ws_row: size.height, ws_col: size.width, ws_xpixel: 0, ws_ypixel: 0 };
        rustix::termios::tcsetwinsize(&self.master, winsize).map_err(std::io::Error::from)
    }
}

/// Make the pty on stdin the controlling terminal of a new session (as runc does for `exec -t`), so
/// that ^C, ^Z and window-size changes signal the command's foreground process group and a hangup
/// reaches it when the client goes away. liblxc's attach does not start a session of its own without
/// `LXC_ATTACH_TERMINAL`, so the command inherits this one. The helper is in the foreground group
/// too and survives those signals (see [`ffi::survive_terminal_signals`]) to report the exit code.
fn take_terminal() -> std::io::Result<()> {
    nix::unistd::setsid().map_err(std::io::Error::from)?;
    rustix::process::ioctl_tiocsctty(std::io::stdin()).map_err(std::io::Error::from)?;
    ffi::survive_terminal_signals()
}

/// Helper side: `__exec <exec.json> [--tty] -- argv…`. Runs in a fresh single-threaded process.
pub fn run_exec_helper(args: &[String]) -> i32 {
    let (context_path, tty, argv) = match args {
        [path, sep, argv @ ..] if sep == "--" && !argv.is_empty() => (path, false, argv),
        [path, flag, sep, argv @ ..] if flag == TTY_FLAG && sep == "--" && !argv.is_empty() => (path, true, argv),
        _ => {
            eprintln!("usage: cri-lxc {EXEC_SUBCOMMAND} <exec.json> [{TTY_FLAG}] -- command [args…]");
            return HELPER_FAILURE;
        }
    };
    let context: ExecContext = match std::fs::read(context_path).map_err(|e| e.to_string()).and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cri-lxc exec: reading {context_path}: {e}");
            return HELPER_FAILURE;
        }
    };
    // liblxc hands our signal mask and ignored signals to the attached process; start it clean.
    if let Err(e) = ffi::reset_signal_state() {
        eprintln!("cri-lxc exec: resetting signal state: {e}");
        return HELPER_FAILURE;
    }
    if tty {
        if let Err(e) = take_terminal() {
            eprintln!("cri-lxc exec: making the pty the controlling terminal: {e}");
            return HELPER_FAILURE;
        }
    }
    let container = match LxcContainer::new(&context.name, &context.lxcpath) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cri-lxc exec: {e}");
            return HELPER_FAILURE;
        }
    };
    let mut env = context.env.clone();
    // containerd sets TERM for a terminal exec when the container does not define it.
    if tty && !env.iter().any(|kv| kv.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let options = AttachOptions {
        env_policy: EnvPolicy::Clear,
        extra_env: env,
        uid: Some(context.uid),
        gid: Some(context.gid),
        // The same supplementary groups as the container's own process (lxc.init.groups).
        groups: Some(context.additional_gids.clone()),
        cwd: (!context.cwd.is_empty()).then(|| context.cwd.clone()),
        ..AttachOptions::default()
    };
    match container.attach_run_wait(&options, argv) {
        Ok(exit) => exit.code(),
        Err(e) => {
            eprintln!("cri-lxc exec: {e}");
            HELPER_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"").unwrap();
        std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", r.join("bin/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("bin/up")).unwrap();
        assert_eq!(resolve_in_root(r, "/bin/sh"), Some(r.join("bin/busybox")));
        assert_eq!(resolve_in_root(r, "/bin/abs"), Some(r.join("bin/busybox")));
        // `..` is clamped at the root: /etc of the rootfs (absent), never the host's /etc.
        assert_eq!(resolve_in_root(r, "/bin/up/passwd"), None);
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in_root(r, "/loop"), None);
    }

    #[test]
    fn executable_lookup_uses_the_container_path() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        let bb = root.path().join("bin/busybox");
        std::fs::write(&bb, b"").unwrap();
        std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("busybox", root.path().join("bin/sh")).unwrap();
        let ctx = |argv0: &str, path: &str| ExecContext {
            name: "c".into(),
            lxcpath: "/x".into(),
            rootfs: root.path().into(),
            env: vec![format!("PATH={path}")],
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            cwd: "/".into(),
            argv0: argv0.into(),
        };
        assert_eq!(ctx("sh", "/bin").check_executable(), Ok(()));
        assert_eq!(ctx("/bin/sh", "/nowhere").check_executable(), Ok(()));
        assert!(ctx("sh", "/usr/bin").check_executable().unwrap_err().contains("executable file not found in $PATH"));
        assert!(ctx("/no/such/binary", "/bin").check_executable().unwrap_err().contains("no such file"));
        assert!(ctx("", "/bin").check_executable().unwrap_err().contains("no command"));
    }
}
