//! ImageFsInfo: how much image content and container writable layers use, for kubelet's image GC and
//! eviction thresholds.

use k8s_cri::v1::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value};

use super::{CriError, CriService};
use crate::image::{unix_nanos, FsUsage};

impl CriService {
    pub async fn image_fs_info(&self, _req: ImageFsInfoRequest) -> Result<ImageFsInfoResponse, CriError> {
        let (image, container) = self.images.fs_usage().await?;
        let timestamp = unix_nanos(std::time::SystemTime::now());
        let usage = |mountpoint: &std::path::Path, u: FsUsage| FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier { mountpoint: mountpoint.display().to_string() }),
            used_bytes: Some(UInt64Value { value: u.bytes }),
            inodes_used: Some(UInt64Value { value: u.inodes }),
        };
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![usage(self.images.image_fs_root(), image)],
            container_filesystems: vec![usage(self.images.container_fs_root(), container)],
        })
    }
}
