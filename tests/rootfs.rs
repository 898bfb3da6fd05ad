//! `ImageManager::prepare_rootfs` / `release_rootfs` on an image really pulled from a local registry:
//! the container rootfs is an overlay of the image's unpacked layers, whiteouts and opaque directories
//! of upper layers hide lower content, writes go to the container's own upper dir, and release leaves
//! no mount and no directory behind.

mod harness;

use std::path::Path;

use cri_lxc::config::ImageConfig;
use cri_lxc::image::registry::Credentials;
use cri_lxc::image::registry_hosts::RegistryConfig;
use cri_lxc::image::rootfs::is_mounted;
use cri_lxc::image::ImageManager;
use cri_lxc::store::Store;
use harness::*;

fn manager(root: &Path) -> ImageManager {
    let store = Store::open(&root.join("store.redb")).expect("store opens");
    ImageManager::open(root, store, ImageConfig::default(), RegistryConfig::default()).expect("image manager opens")
}

/// Unmounts whatever a failed assertion left mounted, so a failing test does not leak mounts.
struct ReleaseOnDrop<'a>(&'a ImageManager, &'static str);
impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.release_rootfs(self.1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rootfs_of_a_pulled_image_stacks_its_layers() {
    let registry = Registry::start(None).await;
    let base = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/os-release", b"base\n", 0o644)
        .file("etc/removed", b"gone soon\n", 0o644)
        .dir("data", 0o755)
        .file("data/old", b"old\n", 0o644)
        .build(Compression::Gzip);
    let top = LayerBuilder::new()
        .whiteout("etc/removed")
        .opaque("data")
        .file("data/new", b"new\n", 0o644)
        .file("etc/os-release", b"top\n", 0o644)
        .build(Compression::Zstd);
    let image = ImageBuilder::new().layer(base).layer(top).build(Format::Oci);
    registry.pusher().push_image("test/rootfs", "v1", &image).await;

    let root = tempfile::tempdir().unwrap();
    let images = manager(root.path());
    let name = registry.image("test/rootfs:v1");
    let id = images.pull(&name, &Credentials::default()).await.expect("pull");
    assert_eq!(id, image.id());

    let guard_a = ReleaseOnDrop(&images, "ctr-a");
    let guard_b = ReleaseOnDrop(&images, "ctr-b");
    let a = images.prepare_rootfs(&name, "ctr-a").expect("prepare a");
    // By id as well as by name; two containers share the same lower layers at once.
    let b = images.prepare_rootfs(&id, "ctr-b").expect("prepare b");
    assert!(is_mounted(&a.merged).unwrap());
    assert_eq!(std::fs::read(a.merged.join("etc/os-release")).unwrap(), b"top\n");
    assert!(!a.merged.join("etc/removed").exists(), "whiteout must hide the lower file");
    assert_eq!(dir_entries(&a.merged.join("data")), vec!["new".to_string()], "opaque dir shows only the upper layer");

    // Writes land in the container's own upper dir, not in the shared layers or the other container.
    std::fs::write(a.merged.join("etc/written"), b"mine").unwrap();
    assert_eq!(std::fs::read(a.upper.join("etc/written")).unwrap(), b"mine");
    assert!(!b.merged.join("etc/written").exists());
    for chain in image.chain_ids() {
        assert!(!layer_path(root.path(), &chain).join("etc/written").exists());
    }

    images.release_rootfs("ctr-a").expect("release a");
    images.release_rootfs("ctr-a").expect("release is idempotent");
    images.release_rootfs("ctr-b").expect("release b");
    assert!(!is_mounted(&a.merged).unwrap());
    assert!(!root.path().join("rootfs/ctr-a").exists());
    assert!(!root.path().join("rootfs/ctr-b").exists());
    drop((guard_a, guard_b));
}

#[tokio::test(flavor = "multi_thread")]
async fn rootfs_errors_are_clear() {
    let root = tempfile::tempdir().unwrap();
    let images = manager(root.path());
    let missing = images.prepare_rootfs("127.0.0.1:1/never/pulled:v1", "ctr").unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");
    let bad_id = images.prepare_rootfs("busybox", "../escape").unwrap_err();
    assert!(bad_id.to_string().contains("invalid container id"), "{bad_id}");
    assert!(!root.path().join("escape").exists());
}
