//! CRI semantics: what each RPC means (idempotency, lookups, what counts as missing, rollback on
//! failure, per-object locking), decided here and nowhere else. One file per RPC group, named after
//! it. Takes and returns CRI message types (plain data) but knows nothing of gRPC transport; grpc/
//! adapts. Errors are `CriError`, mapped to status codes in exactly one place (grpc/status.rs).
//!
//! Locking: operations on one pod hold its pod lock; operations on one container hold its container
//! lock; when both are needed the pod lock is taken first. Different pods proceed in parallel.

mod attach;
mod container_create;
mod container_remove;
mod container_start;
mod container_status;
mod container_stats;
mod container_stop;
mod container_update;
mod exec;
mod exec_sync;
mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_status;
mod metrics;
mod port_forward;
mod recovery;
mod rollback;
mod runtime_config;
mod runtime_status;
mod sandbox_remove;
mod sandbox_run;
mod sandbox_stats;
mod sandbox_status;
mod sandbox_stop;
mod security_context;
mod timing;
mod user_namespace;
mod version;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::image::ImageManager;
use crate::keyed_mutex::KeyedMutex;
use crate::model::ids::resolve_prefix;
use crate::network::PodNetwork;
use crate::runtime::ContainerRuntime;
use crate::store::records::{ContainerRecord, SandboxRecord};
use crate::store::Store;
use crate::streaming::StreamingServer;

pub use runtime_config::{detect_cgroup_driver, CgroupDriver};

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
    /// An RPC a later milestone implements; the message names the missing feature.
    #[error("{rpc} is not implemented yet: {feature}")]
    Unimplemented { rpc: &'static str, feature: &'static str },
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Namespace(#[from] crate::runtime::namespaces::NamespaceError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Streaming(#[from] crate::streaming::StreamingError),
}

/// The CRI implementation. Cheap to share: grpc/ holds it in an `Arc`.
pub struct CriService {
    pub(crate) config: Arc<Config>,
    pub(crate) images: Arc<ImageManager>,
    pub(crate) cgroup_driver: CgroupDriver,
    pub(crate) store: Store,
    pub(crate) runtime: Arc<dyn ContainerRuntime>,
    pub(crate) network: Arc<dyn PodNetwork>,
    /// Serves the URLs Exec, Attach and PortForward return.
    pub(crate) streaming: Arc<StreamingServer>,
    /// `<state>/sandboxes`: per-pod pinned namespaces and generated files.
    pub(crate) sandboxes_dir: PathBuf,
    pub(crate) pod_locks: KeyedMutex,
    pub(crate) container_locks: KeyedMutex,
    /// The previous CPU sample per container/pod, for usage_nano_cores (container_stats.rs).
    pub(crate) cpu_samples: container_stats::CpuSamples,
}

/// The collaborators the composition root hands in.
pub struct CriParts {
    pub config: Arc<Config>,
    pub images: Arc<ImageManager>,
    pub cgroup_driver: CgroupDriver,
    pub store: Store,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: Arc<dyn PodNetwork>,
    pub streaming: Arc<StreamingServer>,
}

impl CriService {
    pub fn new(parts: CriParts) -> CriService {
        let sandboxes_dir = parts.config.state.join("sandboxes");
        CriService {
            config: parts.config,
            images: parts.images,
            cgroup_driver: parts.cgroup_driver,
            store: parts.store,
            runtime: parts.runtime,
            network: parts.network,
            streaming: parts.streaming,
            sandboxes_dir,
            pod_locks: KeyedMutex::new(),
            container_locks: KeyedMutex::new(),
            cpu_samples: Default::default(),
        }
    }

    /// Answer for RPCs whose feature lands in a later milestone: an honest Unimplemented, never a fake success.
    pub fn unimplemented(rpc: &'static str, feature: &'static str) -> CriError {
        CriError::Unimplemented { rpc, feature }
    }

    /// A sandbox by id or unique id prefix (crictl accepts prefixes).
    pub(crate) fn find_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, CriError> {
        find_by_id_or_prefix(id, |id| self.store.sandbox(id), || self.store.sandboxes(), |s| &s.id)
    }

    pub(crate) fn find_container(&self, id: &str) -> Result<Option<ContainerRecord>, CriError> {
        find_by_id_or_prefix(id, |id| self.store.container(id), || self.store.containers(), |c| &c.id)
    }

    /// `find_sandbox`, with NotFound for an unknown id.
    pub(crate) fn require_sandbox(&self, id: &str) -> Result<SandboxRecord, CriError> {
        self.find_sandbox(id)?.ok_or_else(|| CriError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    /// `find_container`, with NotFound for an unknown id.
    pub(crate) fn require_container(&self, id: &str) -> Result<ContainerRecord, CriError> {
        self.find_container(id)?.ok_or_else(|| CriError::NotFound(format!("container {id:?} not found")))
    }

    pub(crate) fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes_dir.join(id)
    }
}

/// The record with exactly this id, else the one whose id uniquely starts with it.
fn find_by_id_or_prefix<T>(
    id: &str,
    get: impl FnOnce(&str) -> Result<Option<T>, crate::store::StoreError>,
    list: impl FnOnce() -> Result<Vec<T>, crate::store::StoreError>,
    id_of: impl Fn(&T) -> &String,
) -> Result<Option<T>, CriError> {
    if let Some(record) = get(id)? {
        return Ok(Some(record));
    }
    let all = list()?;
    let found = resolve_prefix(id, all.iter().map(|r| id_of(r).as_str())).map(str::to_string);
    Ok(found.and_then(|found| all.into_iter().find(|r| *id_of(r) == found)))
}

/// The `image` string of an optional ImageSpec, or InvalidArgument naming the field.
fn required_image(spec: Option<&k8s_cri::v1::ImageSpec>, field: &str) -> Result<String, CriError> {
    match spec.map(|s| s.image.trim()) {
        Some(image) if !image.is_empty() => Ok(image.to_string()),
        _ => Err(CriError::InvalidArgument(format!("{field} is required"))),
    }
}

/// An id argument must be present.
fn required_id(id: &str, field: &str) -> Result<(), CriError> {
    if id.trim().is_empty() {
        Err(CriError::InvalidArgument(format!("{field} is required")))
    } else {
        Ok(())
    }
}

/// CRI label selectors match when every selector key is present with the same value.
fn labels_match(labels: &std::collections::HashMap<String, String>, selector: &std::collections::HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn now_nanos() -> i64 {
    crate::image::unix_nanos(std::time::SystemTime::now())
}
