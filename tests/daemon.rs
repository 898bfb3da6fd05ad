//! The daemon's own surface: Version, Status, RuntimeConfig, the not-yet-implemented
//! RuntimeService RPCs, the socket's life cycle (mode, signals, stale and live sockets), the store
//! lock, and the command line (`version`, `config`, config errors). Every test runs the real
//! `cri-lxc` binary in its own temp dirs.

mod harness;

use cri_lxc::grpc::client::CriClient;
use harness::{tail_file, Daemon};
use k8s_cri::v1::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_cri-lxc");
/// config.rs's defaults.
const DEFAULT_SOCKET: &str = "/run/cri-lxc/cri-lxc.sock";
const DEFAULT_STATE: &str = "/run/cri-lxc";
const DEFAULT_CONFIG_FILE: &str = "/etc/cri-lxc/config.toml";

// ---------------------------------------------------------------------------------------------
// helpers

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cri-lxc-daemon-test-")
        .tempdir()
        .expect("tempdir")
}

/// Run the binary with `args` to completion (killed and failed after 60 s: a command that should
/// exit must not hang the test).
async fn run(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("CRI_LXC_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(out) => out.expect("run cri-lxc"),
        Err(_) => panic!("cri-lxc {args:?} did not exit within 60 s"),
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "cri-lxc {args:?}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A second daemon process in its own temp dir (for tests where it must fail to start): its
/// config file, root, state and socket default to that dir; `socket` / `root` override them.
struct Second {
    dir: tempfile::TempDir,
}

impl Second {
    fn new() -> Second {
        let dir = tempdir();
        std::fs::write(dir.path().join("config.toml"), "log_level = \"debug\"\n").unwrap();
        Second { dir }
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    async fn run(&self, socket: &Path, root: &Path) -> Output {
        let config = self.dir.path().join("config.toml");
        let state = self.dir.path().join("state");
        run(&[
            "--config",
            p(&config),
            "--socket",
            p(socket),
            "--root",
            p(root),
            "--state",
            p(&state),
        ])
        .await
    }
}

async fn version(c: &mut CriClient) -> VersionResponse {
    c.runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("Version")
        .into_inner()
}

async fn cgroup_driver(c: &mut CriClient) -> CgroupDriver {
    let r = c
        .runtime
        .runtime_config(RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner();
    r.linux.expect("RuntimeConfig.linux").cgroup_driver()
}

fn socket_mode(path: &Path) -> (bool, u32) {
    let md =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (md.file_type().is_socket(), md.permissions().mode() & 0o7777)
}

// ---------------------------------------------------------------------------------------------
// Version, Status, RuntimeConfig

#[tokio::test(flavor = "multi_thread")]
async fn version_reports_name_and_versions() {
    let d = Daemon::start_default().await;
    let mut c = d.client().await;
    let v = version(&mut c).await;
    assert_eq!(v.runtime_name, "cri-lxc");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.version, "0.1.0");
    // kubelet may send an empty version string; the answer is the same.
    let v2 = c
        .runtime
        .version(VersionRequest::default())
        .await
        .expect("Version with empty request")
        .into_inner();
    assert_eq!(v2, v);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_both_conditions_honestly() {
    let d = Daemon::start_default().await;
    let mut c = d.client().await;
    let r = c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    assert!(
        r.info.is_empty(),
        "non-verbose Status has no info: {:?}",
        r.info
    );
    let conditions = r.status.expect("Status.status").conditions;
    let types: Vec<&str> = conditions.iter().map(|c| c.r#type.as_str()).collect();
    assert_eq!(
        types.len(),
        2,
        "exactly RuntimeReady and NetworkReady: {conditions:?}"
    );
    let get = |t: &str| {
        conditions
            .iter()
            .find(|c| c.r#type == t)
            .unwrap_or_else(|| panic!("condition {t} missing: {conditions:?}"))
    };
    // src/cri/runtime_status.rs: the LXC runtime is ready when liblxc loads (its version is in the
    // message); CNI does not exist yet, and Status says so.
    let runtime = get("RuntimeReady");
    assert!(runtime.status, "{runtime:?}");
    assert!(runtime.reason.is_empty(), "a true condition has no reason: {runtime:?}");
    assert!(runtime.message.starts_with("liblxc "), "{runtime:?}");
    let network = get("NetworkReady");
    assert!(!network.status, "{network:?}");
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(!network.message.is_empty(), "{network:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_verbose_info_has_the_effective_config() {
    let d = Daemon::start_default().await;
    let mut c = d.client().await;
    let r = c
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status verbose")
        .into_inner();
    let raw = r
        .info
        .get("config")
        .unwrap_or_else(|| panic!("verbose Status has no info[\"config\"]: {:?}", r.info));
    let config: serde_json::Value = serde_json::from_str(raw)
        .unwrap_or_else(|e| panic!("info[\"config\"] is not JSON ({e}): {raw}"));
    assert_eq!(config["root"], p(&d.root()), "{config:#}");
    assert_eq!(config["state"], p(&d.state()), "{config:#}");
    assert_eq!(config["socket"], p(&d.socket()), "{config:#}");
    // The command line's --log-level wins over the file's.
    assert_eq!(
        config["log_level"],
        harness::daemon::LOG_FILTER,
        "{config:#}"
    );
    assert!(r.status.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_config_cgroup_driver_auto_and_forced() {
    let d = Daemon::start_default().await;
    let mut c = d.client().await;
    let auto = cgroup_driver(&mut c).await;
    if Path::new("/run/systemd/system").exists() {
        println!("note: /run/systemd/system exists on this host: auto must pick SYSTEMD");
        assert_eq!(auto, CgroupDriver::Systemd);
    } else {
        assert_eq!(
            auto,
            CgroupDriver::Cgroupfs,
            "auto on a host not booted with systemd"
        );
    }
    drop(c);
    drop(d);

    for (setting, want) in [
        ("systemd", CgroupDriver::Systemd),
        ("cgroupfs", CgroupDriver::Cgroupfs),
    ] {
        let d = Daemon::start(&format!(
            "log_level = \"debug\"\ncgroup_driver = \"{setting}\"\n"
        ))
        .await;
        let mut c = d.client().await;
        assert_eq!(
            cgroup_driver(&mut c).await,
            want,
            "cgroup_driver = {setting:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RuntimeService RPCs of later milestones

#[tokio::test(flavor = "multi_thread")]
async fn unimplemented_runtime_rpcs_say_so_by_name() {
    let d = Daemon::start_default().await;
    let c = d.client().await;
    let mut results: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
    // Every RuntimeService RPC of CRI v1 that a later milestone implements (the pod and container
    // lifecycle, ExecSync and ReopenContainerLog are tested in lifecycle.rs, UpdateRuntimeConfig in
    // network.rs, resources, stats and metrics in resources.rs, Exec/Attach/PortForward in streaming.rs).
    macro_rules! call {
        ($($method:ident($req:ty) = $name:literal;)*) => {$(
            let mut client = c.runtime.clone();
            let r = client.$method(<$req>::default()).await.map(|_| ());
            results.push(($name, r));
        )*};
    }
    call! {
        checkpoint_container(CheckpointContainerRequest) = "CheckpointContainer";
        get_container_events(GetEventsRequest) = "GetContainerEvents";
    }
    assert_eq!(results.len(), 2);
    let mut wrong = Vec::new();
    for (name, r) in &results {
        match r {
            Ok(()) => wrong.push(format!("{name}: succeeded")),
            Err(e) if e.code() != Code::Unimplemented || !e.message().contains(name) => {
                wrong.push(format!("{name}: {:?}: {:?}", e.code(), e.message()))
            }
            Err(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "RPCs that should answer Unimplemented naming themselves:\n{}",
        wrong.join("\n")
    );
    // The daemon is still fine afterwards.
    let mut c2 = d.client().await;
    assert_eq!(version(&mut c2).await.runtime_name, "cri-lxc");
}

// ---------------------------------------------------------------------------------------------
// socket and signals

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_0660_and_removed_on_sigterm() {
    let mut d = Daemon::start_default().await;
    let (is_socket, mode) = socket_mode(&d.socket());
    assert!(is_socket, "{} is not a socket", d.socket().display());
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    let st = d.signal_and_wait(Signal::SIGTERM).await;
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after SIGTERM: {st}\n{}",
        d.log()
    );
    assert!(
        !d.socket().exists(),
        "socket {} left behind after SIGTERM",
        d.socket().display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_exits_cleanly_and_removes_the_socket() {
    let mut d = Daemon::start_default().await;
    // An open client connection must not keep the daemon from exiting.
    let mut c = d.client().await;
    version(&mut c).await;
    let st = d.signal_and_wait(Signal::SIGINT).await;
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after SIGINT: {st}\n{}",
        d.log()
    );
    assert!(
        !d.socket().exists(),
        "socket {} left behind after SIGINT",
        d.socket().display()
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_socket_file_is_replaced() {
    let mut d = Daemon::unstarted("log_level = \"debug\"\n");
    // A socket file nobody listens on: bound, then the listener is gone.
    let stale = std::os::unix::net::UnixListener::bind(d.socket()).expect("bind stale socket");
    drop(stale);
    assert!(d.socket().exists());
    assert!(std::os::unix::net::UnixStream::connect(d.socket()).is_err());
    d.launch().await;
    let mut c = d.client().await;
    assert_eq!(version(&mut c).await.runtime_name, "cri-lxc");
    let (is_socket, mode) = socket_mode(&d.socket());
    assert!(is_socket);
    assert_eq!(mode, 0o660, "replaced socket mode {mode:o}");
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_left_by_a_killed_daemon_is_replaced() {
    let mut d = Daemon::start_default().await;
    d.kill9().await;
    assert!(d.socket().exists(), "SIGKILL cannot remove the socket");
    d.launch().await;
    let mut c = d.client().await;
    assert_eq!(version(&mut c).await.runtime_name, "cri-lxc");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_daemon_on_a_live_socket_fails_and_leaves_it_alone() {
    let mut d = Daemon::start_default().await;
    let second = Second::new();
    let out = second.run(&d.socket(), &second.root()).await;
    let what = describe(&["--socket", p(&d.socket())], &out);
    println!("second daemon on a live socket: {what}");
    assert!(!out.status.success(), "second daemon must fail: {what}");
    let err = text(&out.stderr);
    assert!(
        err.contains("in use") && err.contains(p(&d.socket())),
        "message should say the socket is in use and name it: {what}"
    );
    // The first daemon keeps its socket and keeps serving.
    assert!(d.is_running());
    let (is_socket, _) = socket_mode(&d.socket());
    assert!(is_socket);
    let mut c = d.client().await;
    assert_eq!(version(&mut c).await.runtime_name, "cri-lxc");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_daemon_on_the_same_root_fails_on_the_store_lock() {
    let mut d = Daemon::start_default().await;
    let second = Second::new();
    let out = second.run(&second.socket(), &d.root()).await;
    let what = describe(&["--root", p(&d.root())], &out);
    println!("second daemon on the same root: {what}");
    assert!(!out.status.success(), "second daemon must fail: {what}");
    let err = text(&out.stderr);
    let store = d.root().join("store.redb");
    assert!(
        err.contains(p(&store)),
        "message should name the store file {}: {what}",
        store.display()
    );
    let lower = err.to_lowercase();
    assert!(
        lower.contains("lock") || lower.contains("already open") || lower.contains("in use"),
        "message should say the store is locked / in use: {what}"
    );
    assert!(
        !second.socket().exists(),
        "the failed daemon must not leave a socket behind: {what}"
    );
    assert!(d.is_running());
    let mut c = d.client().await;
    assert_eq!(version(&mut c).await.runtime_name, "cri-lxc");
}

// ---------------------------------------------------------------------------------------------
// command line

#[tokio::test(flavor = "multi_thread")]
async fn cli_version_prints_the_version() {
    for args in [&["version"][..], &["--version"][..]] {
        let out = run(args).await;
        let what = describe(args, &out);
        assert!(out.status.success(), "{what}");
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("cri-lxc "), "{what}");
        assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_config_with_missing_explicit_file_fails() {
    let dir = tempdir();
    let missing = dir.path().join("absent.toml");
    for args in [
        &["--config", p(&missing), "config"][..],
        // the daemon itself, too: it must not start on defaults
        &[
            "--config",
            p(&missing),
            "--socket",
            p(&dir.path().join("s.sock")),
        ][..],
    ] {
        let out = run(args).await;
        let what = describe(args, &out);
        assert_eq!(out.status.code(), Some(2), "{what}");
        assert!(
            text(&out.stderr).contains(p(&missing)),
            "message should name the file: {what}"
        );
    }
    assert!(!dir.path().join("s.sock").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_config_prints_defaults_with_overrides() {
    let args = ["--root", "/x", "config"];
    let out = run(&args).await;
    let what = describe(&args, &out);
    assert!(out.status.success(), "{what}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.ends_with('\n'),
        "`config` output should end with a newline: {what}"
    );
    let v: toml::Table = toml::from_str(&stdout)
        .unwrap_or_else(|e| panic!("`config` output is not TOML ({e}): {what}"));
    assert_eq!(v.get("root").and_then(|r| r.as_str()), Some("/x"), "{what}");
    if Path::new(DEFAULT_CONFIG_FILE).exists() {
        println!("note: {DEFAULT_CONFIG_FILE} exists on this host; not checking the default socket/state");
    } else {
        assert_eq!(
            v.get("socket").and_then(|r| r.as_str()),
            Some(DEFAULT_SOCKET),
            "{what}"
        );
        assert_eq!(
            v.get("state").and_then(|r| r.as_str()),
            Some(DEFAULT_STATE),
            "{what}"
        );
    }
    // The printed config is a valid config file that reproduces itself.
    let dir = tempdir();
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &stdout).unwrap();
    let args2 = ["--config", p(&file), "config"];
    let out2 = run(&args2).await;
    let what2 = describe(&args2, &out2);
    assert!(out2.status.success(), "{what2}");
    assert_eq!(text(&out2.stdout), stdout, "{what2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_config_file_with_unknown_key_fails() {
    let dir = tempdir();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "log_level = \"info\"\nsockett = \"/tmp/x.sock\"\n").unwrap();
    let sock = dir.path().join("s.sock");
    for args in [
        &["--config", p(&file), "config"][..],
        &["--config", p(&file), "--socket", p(&sock)][..],
    ] {
        let out = run(args).await;
        let what = describe(args, &out);
        assert_eq!(out.status.code(), Some(2), "{what}");
        let err = text(&out.stderr);
        assert!(
            err.contains(p(&file)),
            "message should name the file: {what}"
        );
        assert!(
            err.contains("sockett"),
            "message should name the unknown key: {what}"
        );
    }
    assert!(!sock.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_relative_paths_are_rejected() {
    for (flag, field) in [
        ("--root", "root"),
        ("--state", "state"),
        ("--socket", "socket"),
    ] {
        let args = [flag, "relative/dir", "config"];
        let out = run(&args).await;
        let what = describe(&args, &out);
        assert_eq!(out.status.code(), Some(2), "{what}");
        let err = text(&out.stderr);
        assert!(
            err.contains(field) && err.contains("relative/dir"),
            "message should name {field} and the path: {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_log_of_a_clean_run_has_no_errors() {
    // Start, answer a few RPCs, stop: nothing in the log at ERROR level.
    let mut d = Daemon::start_default().await;
    let mut c = d.client().await;
    version(&mut c).await;
    let _ = c
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status");
    drop(c);
    assert_eq!(d.sigterm_and_wait().await.code(), Some(0));
    let log = d.log();
    assert!(!log.contains(" ERROR "), "{}", tail_file(&d.log_path(), 40));
    assert!(
        log.contains("SIGTERM"),
        "the log should say why it stopped:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// systemd readiness

/// `Type=notify`: the daemon sends `READY=1` to `$NOTIFY_SOCKET` once its gRPC socket accepts
/// connections (checked by connecting right after the notification arrives), and `STOPPING=1` on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn sd_notify_ready_after_the_socket_serves() {
    let dir = tempdir();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let socket = dir.path().join("cri.sock");
    let mut child = std::process::Command::new(BIN)
        .arg("--socket")
        .arg(&socket)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
        .spawn()
        .expect("spawn daemon");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);

    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("no sd_notify message within 20 s");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.lines().any(|l| l == "READY=1"), "expected READY=1, got {message:?}");
    // Ready means served: a CRI call succeeds without any retry.
    let mut client = CriClient::connect(&socket).await.expect("socket accepts right after READY=1");
    let version = client.runtime.version(VersionRequest::default()).await.expect("Version after READY=1");
    assert_eq!(version.into_inner().runtime_name, "cri-lxc");

    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let n = notify.recv(&mut buf).expect("no STOPPING=1 after SIGTERM");
    assert!(String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "STOPPING=1"));
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit {status:?}: {}", tail_file(&dir.path().join("daemon.log"), 20));
}

/// kubelet keeps its gRPC connection open: SIGTERM must still end the daemon (after at most the
/// shutdown grace period), with exit status 0 and the socket removed, instead of waiting for the
/// client to go away.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_client_still_connected_exits() {
    let mut d = Daemon::start_default().await;
    let mut client = d.client().await;
    client.runtime.version(VersionRequest::default()).await.expect("Version");
    let status = d.sigterm_and_wait().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(!d.socket().exists(), "socket removed on shutdown");
    // The client is still alive (and connected) until here.
    drop(client);
}
