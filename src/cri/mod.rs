//! CRI semantics: what each RPC means (idempotency, lookups, what counts as missing), decided here and
//! nowhere else. One file per RPC group, named after it. Takes and returns CRI message types (they are
//! plain data) but knows nothing of gRPC transport; grpc/ adapts. Errors are `CriError`, mapped to status
//! codes in exactly one place (grpc/status.rs).

mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_status;
mod rollback;
mod runtime_config;
mod runtime_status;
mod version;

use std::sync::Arc;

use crate::config::Config;
use crate::image::ImageManager;

pub use runtime_config::{detect_cgroup_driver, CgroupDriver};

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// An RPC a later milestone implements; the message names the missing feature.
    #[error("{rpc} is not implemented yet: {feature}")]
    Unimplemented { rpc: &'static str, feature: &'static str },
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
}

/// The CRI implementation. Cheap to share: grpc/ holds it in an `Arc`.
pub struct CriService {
    pub(crate) config: Arc<Config>,
    pub(crate) images: Arc<ImageManager>,
    pub(crate) cgroup_driver: CgroupDriver,
}

impl CriService {
    pub fn new(config: Arc<Config>, images: Arc<ImageManager>, cgroup_driver: CgroupDriver) -> CriService {
        CriService { config, images, cgroup_driver }
    }

    /// Answer for RPCs whose feature lands in a later milestone: an honest Unimplemented, never a fake success.
    pub fn unimplemented(rpc: &'static str, feature: &'static str) -> CriError {
        CriError::Unimplemented { rpc, feature }
    }
}

/// The `image` string of an optional ImageSpec, or InvalidArgument naming the field.
fn required_image(spec: Option<&k8s_cri::v1::ImageSpec>, field: &str) -> Result<String, CriError> {
    match spec.map(|s| s.image.trim()) {
        Some(image) if !image.is_empty() => Ok(image.to_string()),
        _ => Err(CriError::InvalidArgument(format!("{field} is required"))),
    }
}
