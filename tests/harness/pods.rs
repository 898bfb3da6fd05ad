//! RuntimeService helpers for pod and container tests, used the way kubelet uses the API.
//!
//! * [`Fixture`]: a docker-registry, a daemon, the busybox image pushed and pulled through
//!   `PullImage`, a work dir for pod log directories and host paths, and a [`Cri`] handle.
//!   Dropping it removes whatever pods are left (through the CRI) and lazily unmounts anything
//!   still mounted under its dirs, so a failing test does not leave containers running.
//! * [`Cri`]: a cloneable handle (client + bookkeeping) with one helper per RPC, building requests
//!   the way kubelet fills them (`pod_config`, `container_config`), and `wait_state` / `exec_ok`.
//!   Every RPC is bounded by a timeout, so a hung daemon fails the test instead of hanging it.
//!   Every id it creates is remembered for the leak check.
//! * [`parse_cri_log`] / [`stream_lines`]: a strict parser of the CRI log format
//!   (`<RFC3339Nano> <stdout|stderr> <P|F>[:more tags] <content>\n`) and kubelet's reassembly of
//!   partial (`P`) chunks.
//! * [`Fixture::leaks`] / [`Fixture::assert_no_leaks`]: nothing of a removed pod is left on the
//!   host: no LXC container dir, rootfs dir, pinned namespace dir, mount, process or cgroup.

use super::busybox::busybox_image;
use super::image::{Format, ImageBuilder};
use super::{dir_entries, tail_file, Daemon, Registry};
use cri_lxc::grpc::client::CriClient;
use k8s_cri::v1::*;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;
use tonic::{Code, Status};

/// Upper bound for any single RPC (a hung daemon fails the test instead of hanging it).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// Every container the helpers create carries `CRI_LXC_TEST_TOKEN=<fixture token>` in its
/// environment, so the leak check finds container processes by `/proc/<pid>/environ`.
pub const TOKEN_ENV: &str = "CRI_LXC_TEST_TOKEN";
/// The pod namespace every test pod lives in.
pub const POD_NAMESPACE: &str = "cri-lxc-test";

pub const CREATED: i32 = ContainerState::ContainerCreated as i32;
pub const RUNNING: i32 = ContainerState::ContainerRunning as i32;
pub const EXITED: i32 = ContainerState::ContainerExited as i32;
pub const UNKNOWN: i32 = ContainerState::ContainerUnknown as i32;
pub const READY: i32 = PodSandboxState::SandboxReady as i32;
pub const NOTREADY: i32 = PodSandboxState::SandboxNotready as i32;

pub fn state_name(s: i32) -> &'static str {
    match s {
        CREATED => "CONTAINER_CREATED",
        RUNNING => "CONTAINER_RUNNING",
        EXITED => "CONTAINER_EXITED",
        UNKNOWN => "CONTAINER_UNKNOWN",
        _ => "<invalid state>",
    }
}

/// `CODE: message` of a status, for assertion messages.
pub fn describe(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Panic unless `r` is an error with one of `codes`; returns the status.
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, codes: &[Code], what: &str) -> Status {
    match r {
        Ok(v) => panic!("{what}: expected an error {codes:?}, got OK: {v:?}"),
        Err(s) => {
            assert!(codes.contains(&s.code()), "{what}: expected one of {codes:?}, got {}", describe(&s));
            s
        }
    }
}

/// Panic unless `r` is an error (any code but OK); returns the status.
pub fn expect_err<T: std::fmt::Debug>(r: Result<T, Status>, what: &str) -> Status {
    match r {
        Ok(v) => panic!("{what}: expected an error, got OK: {v:?}"),
        Err(s) => s,
    }
}

/// Await `fut`, panicking if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not return within {limit:?}"),
    }
}

/// Wall clock in Unix nanoseconds (CRI timestamps are Unix nanoseconds).
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn unique_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t{:x}{:08x}{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed))
}

fn kv(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Namespace options kubelet sends for an ordinary pod: network and IPC shared by the pod, PID per
/// container.
pub fn default_namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Output of a successful ExecSync.
#[derive(Debug, Clone)]
pub struct Exec {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl From<ExecSyncResponse> for Exec {
    fn from(r: ExecSyncResponse) -> Exec {
        Exec {
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            code: r.exit_code,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cri: a cloneable handle

#[derive(Clone)]
pub struct Cri {
    pub client: CriClient,
    /// Reference of the busybox image, already pulled.
    pub image: String,
    /// Unique per fixture: in every container's environment and every pod uid.
    pub token: String,
    /// Pod log directories and host paths live here.
    pub work: PathBuf,
    ids: Arc<Mutex<BTreeSet<String>>>,
}

impl Cri {
    /// Every pod and container id this handle (or a clone) has created.
    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().iter().cloned().collect()
    }

    fn remember(&self, id: &str) {
        self.ids.lock().unwrap().insert(id.to_string());
    }

    /// A pod config as kubelet builds it: metadata (uid unique per fixture), hostname = `name`,
    /// a fresh log directory under the work dir, labels `{pod: name, test: lifecycle}`,
    /// annotation `{test.cri-lxc/pod: name}`, and the default namespace options.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = format!("{name}-{}", self.token);
        let log_directory = self.work.join("pods").join(format!("{POD_NAMESPACE}_{name}_{uid}"));
        std::fs::create_dir_all(&log_directory).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid,
                namespace: POD_NAMESPACE.to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_directory.to_str().unwrap().to_string(),
            dns_config: Some(DnsConfig::default()),
            port_mappings: vec![],
            labels: kv(&[("pod", name), ("test", "lifecycle")]),
            annotations: kv(&[("test.cri-lxc/pod", name)]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(default_namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            windows: None,
        }
    }

    /// A container config as kubelet builds it: metadata (`name`, attempt 0), the busybox image,
    /// `command` (empty = the image's entrypoint), log path `<name>/0.log` relative to the pod's
    /// log directory, label `{container: name}`, the fixture token in the environment.
    pub fn container_config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.to_string(), attempt: 0 }),
            image: Some(ImageSpec { image: self.image.clone(), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: vec![KeyValue { key: TOKEN_ENV.into(), value: self.token.clone() }],
            labels: kv(&[("container", name)]),
            annotations: kv(&[("test.cri-lxc/container", name)]),
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(default_namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `<log_directory>/<log_path>` of a container.
    pub fn log_file(&self, pod: &PodSandboxConfig, ctr: &ContainerConfig) -> PathBuf {
        Path::new(&pod.log_directory).join(&ctr.log_path)
    }

    // ----- pods

    pub async fn run_pod_with(&self, config: Option<PodSandboxConfig>, handler: &str) -> Result<String, Status> {
        let mut c = self.client.clone();
        let req = RunPodSandboxRequest { config, runtime_handler: handler.to_string() };
        let r = within("RunPodSandbox", RPC_TIMEOUT, c.runtime.run_pod_sandbox(req)).await;
        let id = r?.into_inner().pod_sandbox_id;
        self.remember(&id);
        Ok(id)
    }

    /// RunPodSandbox with the default handler; panics on error.
    pub async fn run_pod(&self, config: &PodSandboxConfig) -> String {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        match self.run_pod_with(Some(config.clone()), "").await {
            Ok(id) => {
                assert!(!id.is_empty(), "RunPodSandbox({name}) returned an empty id");
                id
            }
            Err(e) => panic!("RunPodSandbox({name}) failed: {}", describe(&e)),
        }
    }

    pub async fn pod_status(&self, id: &str) -> Result<PodSandboxStatusResponse, Status> {
        let mut c = self.client.clone();
        let req = PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: false };
        within("PodSandboxStatus", RPC_TIMEOUT, c.runtime.pod_sandbox_status(req))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn pod_status_ok(&self, id: &str) -> PodSandboxStatus {
        match self.pod_status(id).await {
            Ok(r) => r.status.unwrap_or_else(|| panic!("PodSandboxStatus({id}) returned no status")),
            Err(e) => panic!("PodSandboxStatus({id}) failed: {}", describe(&e)),
        }
    }

    pub async fn list_pods(&self, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
        let mut c = self.client.clone();
        match within("ListPodSandbox", RPC_TIMEOUT, c.runtime.list_pod_sandbox(ListPodSandboxRequest { filter })).await {
            Ok(r) => r.into_inner().items,
            Err(e) => panic!("ListPodSandbox failed: {}", describe(&e)),
        }
    }

    pub async fn stop_pod(&self, id: &str) -> Result<(), Status> {
        let mut c = self.client.clone();
        let req = StopPodSandboxRequest { pod_sandbox_id: id.to_string() };
        within("StopPodSandbox", RPC_TIMEOUT, c.runtime.stop_pod_sandbox(req)).await.map(|_| ())
    }

    pub async fn stop_pod_ok(&self, id: &str) {
        if let Err(e) = self.stop_pod(id).await {
            panic!("StopPodSandbox({id}) failed: {}", describe(&e));
        }
    }

    pub async fn remove_pod(&self, id: &str) -> Result<(), Status> {
        let mut c = self.client.clone();
        let req = RemovePodSandboxRequest { pod_sandbox_id: id.to_string() };
        within("RemovePodSandbox", RPC_TIMEOUT, c.runtime.remove_pod_sandbox(req)).await.map(|_| ())
    }

    pub async fn remove_pod_ok(&self, id: &str) {
        if let Err(e) = self.remove_pod(id).await {
            panic!("RemovePodSandbox({id}) failed: {}", describe(&e));
        }
    }

    /// StopPodSandbox then RemovePodSandbox, both must succeed (kubelet's order).
    pub async fn teardown_pod(&self, id: &str) {
        self.stop_pod_ok(id).await;
        self.remove_pod_ok(id).await;
    }

    // ----- containers

    /// CreateContainer; the container's log directory is created first, as kubelet does.
    pub async fn create(&self, pod_id: &str, pod: &PodSandboxConfig, config: ContainerConfig) -> Result<String, Status> {
        if !config.log_path.is_empty() && !pod.log_directory.is_empty() {
            if let Some(parent) = Path::new(&pod.log_directory).join(&config.log_path).parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
        }
        self.create_raw(CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
    }

    pub async fn create_raw(&self, req: CreateContainerRequest) -> Result<String, Status> {
        let mut c = self.client.clone();
        let r = within("CreateContainer", RPC_TIMEOUT, c.runtime.create_container(req)).await;
        let id = r?.into_inner().container_id;
        self.remember(&id);
        Ok(id)
    }

    pub async fn create_ok(&self, pod_id: &str, pod: &PodSandboxConfig, config: ContainerConfig) -> String {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        match self.create(pod_id, pod, config).await {
            Ok(id) => {
                assert!(!id.is_empty(), "CreateContainer({name}) returned an empty id");
                id
            }
            Err(e) => panic!("CreateContainer({name}) failed: {}", describe(&e)),
        }
    }

    pub async fn start(&self, id: &str) -> Result<(), Status> {
        let mut c = self.client.clone();
        let req = StartContainerRequest { container_id: id.to_string() };
        within("StartContainer", RPC_TIMEOUT, c.runtime.start_container(req)).await.map(|_| ())
    }

    pub async fn start_ok(&self, id: &str) {
        if let Err(e) = self.start(id).await {
            panic!("StartContainer({id}) failed: {}", describe(&e));
        }
    }

    /// CreateContainer + StartContainer, both must succeed. Returns the container id.
    pub async fn create_and_start(&self, pod_id: &str, pod: &PodSandboxConfig, config: ContainerConfig) -> String {
        let id = self.create_ok(pod_id, pod, config).await;
        self.start_ok(&id).await;
        id
    }

    pub async fn status(&self, id: &str) -> Result<ContainerStatus, Status> {
        let mut c = self.client.clone();
        let req = ContainerStatusRequest { container_id: id.to_string(), verbose: false };
        let r = within("ContainerStatus", RPC_TIMEOUT, c.runtime.container_status(req)).await?;
        r.into_inner()
            .status
            .ok_or_else(|| Status::internal(format!("ContainerStatus({id}) returned no status")))
    }

    pub async fn status_ok(&self, id: &str) -> ContainerStatus {
        match self.status(id).await {
            Ok(s) => s,
            Err(e) => panic!("ContainerStatus({id}) failed: {}", describe(&e)),
        }
    }

    /// Poll ContainerStatus until the container is in `state`; panic after `timeout` with the last
    /// status seen.
    pub async fn wait_state(&self, id: &str, state: i32, timeout: Duration) -> ContainerStatus {
        let start = Instant::now();
        loop {
            let s = self.status_ok(id).await;
            if s.state == state {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "container {id} not {} after {timeout:?}; last status: state {} exit {} reason {:?} message {:?}",
                    state_name(state),
                    state_name(s.state),
                    s.exit_code,
                    s.reason,
                    s.message
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn list_containers(&self, filter: Option<ContainerFilter>) -> Vec<Container> {
        let mut c = self.client.clone();
        match within("ListContainers", RPC_TIMEOUT, c.runtime.list_containers(ListContainersRequest { filter })).await {
            Ok(r) => r.into_inner().containers,
            Err(e) => panic!("ListContainers failed: {}", describe(&e)),
        }
    }

    pub async fn stop(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let mut c = self.client.clone();
        let req = StopContainerRequest { container_id: id.to_string(), timeout };
        let limit = RPC_TIMEOUT + Duration::from_secs(timeout.max(0) as u64);
        within("StopContainer", limit, c.runtime.stop_container(req)).await.map(|_| ())
    }

    pub async fn stop_ok(&self, id: &str, timeout: i64) {
        if let Err(e) = self.stop(id, timeout).await {
            panic!("StopContainer({id}, {timeout}) failed: {}", describe(&e));
        }
    }

    pub async fn remove(&self, id: &str) -> Result<(), Status> {
        let mut c = self.client.clone();
        let req = RemoveContainerRequest { container_id: id.to_string() };
        within("RemoveContainer", RPC_TIMEOUT, c.runtime.remove_container(req)).await.map(|_| ())
    }

    pub async fn remove_ok(&self, id: &str) {
        if let Err(e) = self.remove(id).await {
            panic!("RemoveContainer({id}) failed: {}", describe(&e));
        }
    }

    /// ExecSync with `timeout` seconds (0 = none). The client-side guard is generous, so a
    /// DeadlineExceeded seen here comes from the daemon.
    pub async fn exec(&self, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecSyncResponse, Status> {
        let mut c = self.client.clone();
        let req = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        let limit = RPC_TIMEOUT + Duration::from_secs(timeout.max(0) as u64);
        within(&format!("ExecSync({cmd:?})"), limit, c.runtime.exec_sync(req))
            .await
            .map(|r| r.into_inner())
    }

    /// ExecSync with a 60 s timeout that must succeed at the RPC level (any exit code).
    pub async fn exec_ok(&self, id: &str, cmd: &[&str]) -> Exec {
        match self.exec(id, cmd, 60).await {
            Ok(r) => r.into(),
            Err(e) => panic!("ExecSync({id}, {cmd:?}) failed: {}", describe(&e)),
        }
    }

    /// ExecSync that must succeed with exit code 0; returns stdout.
    pub async fn exec_stdout(&self, id: &str, cmd: &[&str]) -> String {
        let r = self.exec_ok(id, cmd).await;
        assert_eq!(r.code, 0, "ExecSync({cmd:?}) exited {}: stdout {:?} stderr {:?}", r.code, r.stdout, r.stderr);
        r.stdout
    }

    /// Wait (up to 30 s) until the container's own process has written a non-empty `path`, then return
    /// its contents: a started container runs its command asynchronously to StartContainer.
    pub async fn wait_file_in(&self, id: &str, path: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.exec_ok(id, &["cat", path]).await;
            if r.code == 0 && !r.stdout.is_empty() {
                return r.stdout;
            }
            assert!(std::time::Instant::now() < deadline, "{path} never appeared in container {id}: {:?}", r.stderr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// ReopenContainerLog (kubelet calls it after renaming the log file).
    pub async fn reopen_log(&self, id: &str) -> Result<(), Status> {
        let mut c = self.client.clone();
        let req = ReopenContainerLogRequest { container_id: id.to_string() };
        within("ReopenContainerLog", RPC_TIMEOUT, c.runtime.reopen_container_log(req)).await.map(|_| ())
    }

    // ----- images

    /// ImageStatus (not verbose); `None` = the daemon does not have the image. Panics on error.
    pub async fn image_status(&self, image: &str) -> Option<Image> {
        let mut c = self.client.clone();
        let req = ImageStatusRequest { image: Some(ImageSpec { image: image.to_string(), ..Default::default() }), verbose: false };
        match within("ImageStatus", RPC_TIMEOUT, c.image.image_status(req)).await {
            Ok(r) => r.into_inner().image,
            Err(e) => panic!("ImageStatus({image}) failed: {}", describe(&e)),
        }
    }

    /// ListImages without a filter. Panics on error.
    pub async fn list_images(&self) -> Vec<Image> {
        let mut c = self.client.clone();
        match within("ListImages", RPC_TIMEOUT, c.image.list_images(ListImagesRequest { filter: None })).await {
            Ok(r) => r.into_inner().images,
            Err(e) => panic!("ListImages failed: {}", describe(&e)),
        }
    }

    /// RemoveImage by any reference form (tag, digest, id).
    pub async fn remove_image(&self, image: &str) -> Result<(), Status> {
        let mut c = self.client.clone();
        let req = RemoveImageRequest { image: Some(ImageSpec { image: image.to_string(), ..Default::default() }) };
        within("RemoveImage", RPC_TIMEOUT, c.image.remove_image(req)).await.map(|_| ())
    }

    /// Remove every pod and container the daemon lists (best effort, errors ignored).
    pub async fn remove_everything(&self) {
        let mut c = self.client.clone();
        let limit = Duration::from_secs(60);
        if let Ok(Ok(r)) = tokio::time::timeout(limit, c.runtime.list_containers(ListContainersRequest { filter: None })).await {
            for ctr in r.into_inner().containers {
                let _ = tokio::time::timeout(limit, c.runtime.stop_container(StopContainerRequest { container_id: ctr.id.clone(), timeout: 0 })).await;
                let _ = tokio::time::timeout(limit, c.runtime.remove_container(RemoveContainerRequest { container_id: ctr.id })).await;
            }
        }
        if let Ok(Ok(r)) = tokio::time::timeout(limit, c.runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None })).await {
            for pod in r.into_inner().items {
                let _ = tokio::time::timeout(limit, c.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() })).await;
                let _ = tokio::time::timeout(limit, c.runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id })).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture

pub struct Fixture {
    pub cri: Cri,
    pub daemon: Daemon,
    pub registry: Registry,
    work_dir: TempDir,
    /// `now_ns()` when the fixture was created (lower bound for CRI timestamps).
    pub started_ns: i64,
}

impl std::ops::Deref for Fixture {
    type Target = Cri;
    fn deref(&self) -> &Cri {
        &self.cri
    }
}

impl Fixture {
    /// Registry + daemon (default config, debug logging) + busybox pushed as `test/busybox:1` and
    /// pulled through PullImage.
    pub async fn start() -> Fixture {
        Fixture::start_with_config("log_level = \"debug\"\n").await
    }

    /// Without a `[cni]` section in `config_toml`, the daemon gets a CNI config of Debian's `loopback`
    /// plugin alone (pods: their own netns with `lo` up, nothing else), so RunPodSandbox works without
    /// touching any bridge; network tests pass their own section.
    pub async fn start_with_config(config_toml: &str) -> Fixture {
        let started_ns = now_ns();
        let registry = Registry::start(None).await;
        let work_dir = tempfile::Builder::new().prefix("cri-lxc-work-").tempdir().expect("tempdir");
        let mut config_toml = config_toml.to_string();
        if !config_toml.contains("[cni]") {
            let conf_dir = work_dir.path().join("net.d");
            std::fs::create_dir_all(&conf_dir).unwrap();
            std::fs::write(
                conf_dir.join("10-loopback.conflist"),
                r#"{"cniVersion":"1.0.0","name":"test-loopback","plugins":[{"type":"loopback"}]}"#,
            )
            .unwrap();
            config_toml.push_str(&format!("\n[cni]\nconf_dir = {:?}\nbin_dirs = [\"/usr/lib/cni\"]\n", conf_dir.to_str().unwrap()));
        }
        let daemon = Daemon::start(&config_toml).await;
        let client = daemon.client().await;
        let cri = Cri {
            client,
            image: String::new(),
            token: unique_token(),
            work: work_dir.path().to_path_buf(),
            ids: Arc::new(Mutex::new(BTreeSet::new())),
        };
        let mut fx = Fixture { cri, daemon, registry, work_dir, started_ns };
        fx.cri.image = fx.push_and_pull("test/busybox:1", &busybox_image()).await;
        fx
    }

    /// Push `image` (OCI format) to the fixture's registry as `repo_and_tag` and pull it through
    /// the CRI. Returns the reference to use in container configs.
    pub async fn push_and_pull(&self, repo_and_tag: &str, image: &ImageBuilder) -> String {
        let built = image.build(Format::Oci);
        let (repo, tag) = repo_and_tag.rsplit_once(':').expect("repo:tag");
        self.registry.pusher().push_image(repo, tag, &built).await;
        let reference = self.registry.image(repo_and_tag);
        let mut c = self.client.clone();
        let req = PullImageRequest {
            image: Some(ImageSpec { image: reference.clone(), ..Default::default() }),
            auth: None,
            sandbox_config: None,
        };
        match within(&format!("PullImage({reference})"), Duration::from_secs(300), c.image.pull_image(req)).await {
            Ok(r) => assert_eq!(r.into_inner().image_ref, built.id(), "PullImage({reference}) image ref"),
            Err(e) => panic!("PullImage({reference}) failed: {}", describe(&e)),
        }
        reference
    }

    /// The fixture's work dir (pod log dirs, host paths for mounts).
    pub fn work(&self) -> &Path {
        self.work_dir.path()
    }

    /// A fresh directory under the work dir for host paths.
    pub fn host_dir(&self, name: &str) -> PathBuf {
        let p = self.work().join("host").join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Connect a new client (after a daemon restart).
    pub async fn reconnect(&mut self) {
        self.cri.client = self.daemon.client().await;
    }

    /// SIGKILL the daemon (its containers must keep running).
    pub async fn kill_daemon(&mut self) {
        self.daemon.kill9().await;
    }

    /// Start the (killed) daemon again on the same dirs and reconnect.
    pub async fn start_daemon(&mut self) {
        self.daemon.launch().await;
        self.reconnect().await;
    }

    /// SIGTERM the daemon, start it again, reconnect.
    pub async fn restart_daemon(&mut self) {
        self.daemon.restart().await;
        self.reconnect().await;
    }

    /// Everything left on the host of the pods and containers this fixture created (call after all
    /// of them were removed): entries in `<root>/lxc`, `<root>/rootfs`, `<state>/sandboxes`; any
    /// path under root or state named after one of the ids; mounts under the daemon's or the
    /// fixture's dirs; processes (other than the daemon) whose command line names those dirs or an
    /// id, or whose environment carries the fixture token; zombie children of the daemon; cgroup
    /// directories named after an id.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let root = self.daemon.root();
        let state = self.daemon.state();
        let ids = self.cri.ids();
        let dirs: Vec<String> = vec![
            self.daemon.dir().to_str().unwrap().to_string(),
            self.work().to_str().unwrap().to_string(),
        ];

        for d in [root.join("lxc"), root.join("rootfs"), state.join("sandboxes")] {
            let e = dir_entries(&d);
            if !e.is_empty() {
                out.push(format!("{} is not empty: {e:?}", d.display()));
            }
        }

        // Any file or dir under root/state named after an id (content/ and layers/ are named by
        // digests: skipped, they can be big).
        let mut named = Vec::new();
        walk_dirs(&root, 6, &mut |p, depth| {
            if depth == 1 && (p.ends_with("content") || p.ends_with("layers")) {
                return false;
            }
            if name_mentions(p, &ids) {
                named.push(p.display().to_string());
            }
            true
        });
        walk_dirs(&state, 6, &mut |p, _| {
            if name_mentions(p, &ids) {
                named.push(p.display().to_string());
            }
            true
        });
        for p in named {
            out.push(format!("path named after a removed pod/container: {p}"));
        }

        for m in mount_points() {
            if dirs.iter().any(|d| m.starts_with(d.as_str())) {
                out.push(format!("mount left: {m}"));
            }
        }

        let daemon_pid = self.daemon.pid().map(|p| p as i32);
        let me = std::process::id() as i32;
        let token = format!("{TOKEN_ENV}={}", self.token);
        for p in processes() {
            if p.pid == me || Some(p.pid) == daemon_pid {
                continue;
            }
            let cmd = p.cmdline.clone();
            if dirs.iter().any(|d| cmd.contains(d.as_str())) || ids.iter().any(|id| mentions(&cmd, id)) {
                out.push(format!("process left: pid {} ({}): {cmd}", p.pid, p.state));
            } else if p.environ_contains(&token) {
                out.push(format!("container process left: pid {} ({}): {cmd}", p.pid, p.state));
            } else if p.state == 'Z' && Some(p.ppid) == daemon_pid {
                out.push(format!("unreaped zombie child of the daemon: pid {}", p.pid));
            }
        }

        walk_dirs(Path::new("/sys/fs/cgroup"), 10, &mut |p, _| {
            if name_mentions(p, &ids) {
                out.push(format!("cgroup left: {}", p.display()));
            }
            true
        });
        out
    }

    /// Poll [`leaks`](Self::leaks) (up to 15 s: processes take a moment to be reaped) and panic
    /// listing whatever is still there.
    pub async fn assert_no_leaks(&self) {
        let start = Instant::now();
        loop {
            let l = self.leaks();
            if l.is_empty() {
                return;
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!("left behind after every pod was removed:\n  {}", l.join("\n  "));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Remove whatever is left through the CRI (a failed test must not leave containers
        // running), on a thread with its own runtime: we may be inside the test's runtime. A
        // daemon a test killed is started again for this.
        let daemon = &mut self.daemon;
        let cri = self.cri.clone();
        std::thread::scope(|s| {
            let _ = s
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async move {
                        if !daemon.is_running() {
                            if daemon.starts == 0 {
                                return;
                            }
                            daemon.launch().await;
                        }
                        // a fresh connection: the test's channel belongs to the test's runtime
                        let socket = daemon.socket();
                        if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(10), CriClient::connect(&socket)).await {
                            let cri = Cri { client, ..cri };
                            cri.remove_everything().await;
                        }
                    });
                })
                .join();
        });
        // Then lazily unmount anything still mounted under our dirs, deepest first, so the temp
        // dirs can be deleted.
        let dirs = [self.daemon.dir().to_path_buf(), self.work().to_path_buf()];
        let mut left: Vec<String> = mount_points()
            .into_iter()
            .filter(|m| dirs.iter().any(|d| m.starts_with(d.to_str().unwrap())))
            .collect();
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// host inspection

/// `s` mentions `id`: the whole id, or (for long ids) its first 12 characters, as runtimes often
/// name things after a short id.
fn mentions(s: &str, id: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    let short = if id.len() > 12 { &id[..12] } else { id };
    s.contains(short)
}

fn name_mentions(p: &Path, ids: &[String]) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    ids.iter().any(|id| mentions(&name, id))
}

/// Walk directories (not following symlinks) up to `max_depth`, calling `f(path, depth)` for every
/// entry; `f` returning false prunes a directory.
fn walk_dirs(base: &Path, max_depth: usize, f: &mut dyn FnMut(&Path, usize) -> bool) {
    fn go(dir: &Path, depth: usize, max: usize, f: &mut dyn FnMut(&Path, usize) -> bool) {
        if depth > max {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let descend = f(&p, depth);
            if descend && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                go(&p, depth + 1, max, f);
            }
        }
    }
    go(base, 1, max_depth, f)
}

/// Mount points of the test's mount namespace (`/proc/self/mountinfo`, octal escapes decoded).
pub fn mount_points() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = ((b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32) as u8;
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    /// NUL separators replaced by spaces.
    pub cmdline: String,
}

impl ProcInfo {
    pub fn environ_contains(&self, needle: &str) -> bool {
        match std::fs::read(format!("/proc/{}/environ", self.pid)) {
            Ok(env) => env.split(|b| *b == 0).any(|e| e == needle.as_bytes()),
            Err(_) => false,
        }
    }
}

/// Every process on the host (those that vanish while being read are skipped).
pub fn processes() -> Vec<ProcInfo> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "<pid> (<comm>) <state> <ppid> ..." – comm may contain spaces and parens.
        let Some(close) = stat.rfind(')') else { continue };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end().to_string();
        out.push(ProcInfo { pid, ppid, state, cmdline });
    }
    out
}

/// Pids of live processes whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    processes()
        .into_iter()
        .filter(|p| p.pid != me && p.state != 'Z' && p.cmdline.contains(needle))
        .map(|p| p.pid)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// CRI log format

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub timestamp: String,
    pub unix_nanos: i128,
    /// `stdout` or `stderr`
    pub stream: String,
    /// tag `P` (true) or `F` (false)
    pub partial: bool,
    /// the content, without the line's terminating newline
    pub content: Vec<u8>,
}

/// Parse a CRI log strictly, the way kubelet's `parseCRILog` reads it: every line is
/// `<timestamp> <stream> <tags> <content>` with single spaces, the timestamp RFC 3339 with up to
/// nine fractional digits (Go's RFC3339Nano), the stream `stdout` or `stderr`, the first tag `P` or
/// `F`. With `complete` the data must end with a newline (the writer is done); otherwise a trailing
/// unterminated line (being written right now) is ignored.
pub fn parse_cri_log(data: &[u8], complete: bool) -> Result<Vec<LogRecord>, String> {
    let mut out = Vec::new();
    let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let last = lines.pop().unwrap_or(&[]);
    if !last.is_empty() && complete {
        return Err(format!("log does not end with a newline; last line: {:?}", String::from_utf8_lossy(last)));
    }
    for (n, line) in lines.iter().enumerate() {
        let err = |what: &str| format!("line {}: {what}: {:?}", n + 1, String::from_utf8_lossy(&line[..line.len().min(200)]));
        let mut parts = line.splitn(4, |b| *b == b' ');
        let ts = parts.next().ok_or_else(|| err("no timestamp"))?;
        let stream = parts.next().ok_or_else(|| err("no stream"))?;
        let tags = parts.next().ok_or_else(|| err("no tag"))?;
        let content = parts.next().ok_or_else(|| err("no space after the tag"))?;
        let ts = std::str::from_utf8(ts).map_err(|_| err("timestamp is not UTF-8"))?;
        let unix_nanos = parse_rfc3339_nanos(ts).ok_or_else(|| err("timestamp is not RFC 3339"))?;
        let stream = match stream {
            b"stdout" => "stdout",
            b"stderr" => "stderr",
            _ => return Err(err("stream is neither stdout nor stderr")),
        };
        let first_tag = tags.split(|b| *b == b':').next().unwrap_or(&[]);
        let partial = match first_tag {
            b"P" => true,
            b"F" => false,
            _ => return Err(err("first tag is neither P nor F")),
        };
        out.push(LogRecord {
            timestamp: ts.to_string(),
            unix_nanos,
            stream: stream.to_string(),
            partial,
            content: content.to_vec(),
        });
    }
    Ok(out)
}

/// Unix nanoseconds of an RFC 3339 timestamp `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b[i] == b'.' {
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let digits = j - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = s[start..j].parse::<i64>().ok()? * 10i64.pow(9 - digits as u32);
        i = j;
    }
    let offset_s: i64 = match b.get(i)? {
        b'Z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // days from civil (proleptic Gregorian)
    let (yy, mm) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

/// The lines of one stream as kubelet reassembles them: `P` chunks are concatenated up to and
/// including the next `F` record. Returns `(line, terminated)`; a trailing run of `P` chunks with no
/// `F` (output that ended without a newline) is returned with `terminated == false`.
pub fn stream_lines(records: &[LogRecord], stream: &str) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    for r in records.iter().filter(|r| r.stream == stream) {
        cur.get_or_insert_with(Vec::new).extend_from_slice(&r.content);
        if !r.partial {
            out.push((cur.take().unwrap(), true));
        }
    }
    if let Some(c) = cur {
        out.push((c, false));
    }
    out
}

/// Read and strictly parse a log file that may still be written to (a trailing unterminated line
/// is ignored). Missing file = no records. Panics on a malformed line.
pub fn read_log(path: &Path) -> Vec<LogRecord> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    parse_cri_log(&data, false).unwrap_or_else(|e| panic!("{} is not a valid CRI log: {e}\n{}", path.display(), tail_file(path, 20)))
}

/// Complete lines written to stdout so far (lossy UTF-8).
pub fn stdout_lines(path: &Path) -> Vec<String> {
    stream_lines(&read_log(path), "stdout")
        .into_iter()
        .filter(|(_, done)| *done)
        .map(|(l, _)| String::from_utf8_lossy(&l).into_owned())
        .collect()
}

/// Poll the stdout lines of a log until `pred` holds; panic after `timeout` showing the log.
pub async fn wait_log(path: &Path, what: &str, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = stdout_lines(path);
        if pred(&lines) {
            return lines;
        }
        if start.elapsed() > timeout {
            panic!("{what}: not in {} after {timeout:?}; log tail:\n{}", path.display(), tail_file(path, 20));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait for a stdout line equal to `line`.
pub async fn wait_log_line(path: &Path, line: &str, timeout: Duration) -> Vec<String> {
    wait_log(path, &format!("log line {line:?}"), timeout, |ls| ls.iter().any(|l| l == line)).await
}
