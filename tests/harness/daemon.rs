//! Runs the cri-lxc daemon binary in its own temp dir.

use super::tail_file;
use cri_lxc::grpc::client::CriClient;
use k8s_cri::v1::VersionRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const DAEMON_BIN: &str = env!("CARGO_BIN_EXE_cri-lxc");
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Debug for the daemon itself, info for its dependencies (h2/hyper debug output drowns the log).
pub const LOG_FILTER: &str = "info,cri_lxc=debug";

pub struct Daemon {
    dir: TempDir,
    child: Option<Child>,
    /// Number of times the daemon was started (1 after `start`).
    pub starts: u32,
}

impl Daemon {
    /// Write `config_toml` to `<tmp>/config.toml` and start the daemon with
    /// `--root <tmp>/root --state <tmp>/state --socket <tmp>/cri.sock`; waits until the socket
    /// exists and a `Version` RPC succeeds.
    pub async fn start(config_toml: &str) -> Daemon {
        let mut d = Daemon::unstarted(config_toml);
        d.spawn().await;
        d
    }

    /// Like [`Daemon::start`] but without starting the process: the temp dir and config file
    /// exist, so a test can prepare the dir (e.g. leave a stale socket) before [`Daemon::launch`].
    pub fn unstarted(config_toml: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("cri-lxc-daemon-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("config.toml"), config_toml).unwrap();
        Daemon {
            dir,
            child: None,
            starts: 0,
        }
    }

    /// Start the (not running) daemon and wait until it is ready.
    pub async fn launch(&mut self) {
        self.spawn().await;
    }

    /// Start with a minimal config (debug logging, defaults otherwise).
    pub async fn start_default() -> Daemon {
        Daemon::start("log_level = \"debug\"\n").await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }
    /// Everything the daemon wrote to stdout/stderr (over all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let log2 = log.try_clone().unwrap();
        self.starts += 1;
        use std::io::Write;
        writeln!(&log, "===== cri-lxc start #{} =====", self.starts).unwrap();
        let child = Command::new(DAEMON_BIN)
            .arg("--config")
            .arg(self.config_path())
            .arg("--socket")
            .arg(self.socket())
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--log-level")
            .arg(LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawn cri-lxc");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let start = Instant::now();
        let mut last_err = String::from("socket not created");
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "cri-lxc exited during startup with {st}\n{}",
                    tail_file(&self.log_path(), 60)
                );
            }
            if self.socket().exists() {
                match CriClient::connect(&self.socket()).await {
                    Ok(mut c) => match c
                        .runtime
                        .version(VersionRequest {
                            version: "v1".into(),
                        })
                        .await
                    {
                        Ok(_) => return,
                        Err(e) => last_err = format!("Version RPC: {e}"),
                    },
                    Err(e) => last_err = format!("connect: {e}"),
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "cri-lxc not ready after {READY_TIMEOUT:?} ({last_err})\n{}",
                    tail_file(&self.log_path(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new CRI client connected to the daemon's socket.
    pub async fn client(&self) -> CriClient {
        CriClient::connect(&self.socket())
            .await
            .expect("connect to cri-lxc socket")
    }

    /// SIGKILL the daemon and reap it.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon and wait (up to 30 s, then panic) for it to exit. Returns its status.
    pub async fn sigterm_and_wait(&mut self) -> ExitStatus {
        self.signal_and_wait(Signal::SIGTERM).await
    }

    /// Send `sig` to the daemon and wait (up to 30 s, then panic) for it to exit. Returns its
    /// status.
    pub async fn signal_and_wait(&mut self, sig: Signal) -> ExitStatus {
        let mut c = self.child.take().expect("daemon not running");
        let _ = kill(Pid::from_raw(c.id() as i32), sig);
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "cri-lxc did not exit within 30 s of {sig}\n{}",
                    tail_file(&self.log_path(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start the daemon again on the same config, root, state and socket (SIGTERM first if it is
    /// still running).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.sigterm_and_wait().await;
        }
        self.spawn().await;
    }

    fn shutdown_sync(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- cri-lxc daemon log ({}), tail -----\n{}\n-----",
                self.log_path().display(),
                tail_file(&self.log_path(), 80)
            );
        }
        self.shutdown_sync();
    }
}
