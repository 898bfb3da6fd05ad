//! ImageService integration tests: a real docker-registry (or an in-test fake registry) on
//! 127.0.0.1, images built in memory, and the cri-lxc daemon binary in a temp dir.

mod harness;

use base64::Engine as _;
use cri_lxc::grpc::client::CriClient;
use harness::image::simple_image;
use harness::*;
use k8s_cri::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest,
    ListImagesRequest, RemoveImageRequest, VersionRequest,
};
use serde_json::json;
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// helpers

/// Daemon config: debug logging, `pull_progress_timeout_secs`, the given registries as plain
/// HTTP, plus `extra` TOML appended verbatim (e.g. `[registry.mirrors]`).
fn config(insecure: &[&str], progress_timeout: u64, extra: &str) -> String {
    let list: Vec<String> = insecure.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "log_level = \"debug\"\n\n[image]\npull_progress_timeout_secs = {progress_timeout}\n\n\
         [registry]\ninsecure_http = [{}]\nskip_verify = []\n{extra}",
        list.join(", ")
    )
}

async fn daemon_for(hosts: &[&str]) -> Daemon {
    Daemon::start(&config(hosts, 60, "")).await
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}


async fn pull(c: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    pull_with(c, image, None).await
}

async fn pull_ok(c: &mut CriClient, image: &str) -> String {
    match pull(c, image).await {
        Ok(r) => r,
        Err(e) => panic!("PullImage({image}) failed: {:?}: {}", e.code(), e.message()),
    }
}

async fn status(c: &mut CriClient, image: &str) -> Option<Image> {
    let req = ImageStatusRequest {
        image: spec(image),
        verbose: false,
    };
    match c.image.image_status(req).await {
        Ok(r) => r.into_inner().image,
        Err(e) => panic!(
            "ImageStatus({image}) failed: {:?}: {}",
            e.code(),
            e.message()
        ),
    }
}

async fn status_verbose(
    c: &mut CriClient,
    image: &str,
) -> (Option<Image>, HashMap<String, String>) {
    let req = ImageStatusRequest {
        image: spec(image),
        verbose: true,
    };
    match c.image.image_status(req).await {
        Ok(r) => {
            let r = r.into_inner();
            (r.image, r.info)
        }
        Err(e) => panic!(
            "ImageStatus({image}, verbose) failed: {:?}: {}",
            e.code(),
            e.message()
        ),
    }
}

async fn status_ok(c: &mut CriClient, image: &str) -> Image {
    status(c, image)
        .await
        .unwrap_or_else(|| panic!("ImageStatus({image}) returned no image"))
}

async fn list(c: &mut CriClient, filter: Option<&str>) -> Vec<Image> {
    let req = ListImagesRequest {
        filter: filter.map(|f| ImageFilter { image: spec(f) }),
    };
    c.image
        .list_images(req)
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn remove(c: &mut CriClient, image: &str) -> Result<(), tonic::Status> {
    c.image
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

async fn remove_ok(c: &mut CriClient, image: &str) {
    if let Err(e) = remove(c, image).await {
        panic!(
            "RemoveImage({image}) failed: {:?}: {}",
            e.code(),
            e.message()
        );
    }
}

fn ids(images: &[Image]) -> Vec<String> {
    let mut v: Vec<String> = images.iter().map(|i| i.id.clone()).collect();
    v.sort();
    v
}

fn basic_auth(user: &str, pass: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        username: user.into(),
        password: pass.into(),
        ..Default::default()
    })
}

/// Files in `<root>/content/ingest` (recursively).
fn ingest_files(root: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path.display().to_string());
                }
            }
        }
    }
    let mut v = Vec::new();
    walk(&root.join("content/ingest"), &mut v);
    v
}

fn tmp_layer_entries(root: &Path) -> Vec<String> {
    dir_entries(&root.join("layers"))
        .into_iter()
        .filter(|n| n.starts_with(".tmp"))
        .collect()
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if r < 0 {
        None
    } else {
        buf.truncate(r as usize);
        Some(buf)
    }
}


// ---------------------------------------------------------------------------------------------
// harness self-test (no daemon)

#[tokio::test(flavor = "multi_thread")]
async fn harness_registry_push_roundtrip() {
    let reg = Registry::start(None).await;
    let img = simple_image("roundtrip").build(Format::Oci);
    let dg = reg.pusher().push_image("test/roundtrip", "v1", &img).await;
    assert_eq!(dg, img.manifest_digest);
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/v2/test/roundtrip/manifests/v1", reg.url()))
        .header("accept", harness::image::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), img.manifest);
    let layer = &img.layers[0];
    let r = http
        .get(format!(
            "{}/v2/test/roundtrip/blobs/{}",
            reg.url(),
            layer.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer.blob);
    // the access-log line is written once the response is complete
    wait_for("access log line", Duration::from_secs(5), || {
        (reg.blob_get_count("test/roundtrip", &layer.digest) == 1).then_some(())
    })
    .await;
    assert!(reg.blob_data_path(&layer.digest).is_file());

    let reg2 = Registry::start(Some(("alice", "s3cret"))).await;
    let r = http
        .get(format!("{}/v2/", reg2.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    reg2.pusher().push_image("test/roundtrip", "v1", &img).await;
}

// ---------------------------------------------------------------------------------------------
// pulling

#[tokio::test(flavor = "multi_thread")]
async fn pull_oci_image_by_tag_and_status() {
    let reg = Registry::start(None).await;
    let img = simple_image("oci")
        .user("1000:1000")
        .env("FOO=bar")
        .working_dir("/work")
        .build(Format::Oci);
    reg.pusher().push_image("test/oci", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let name = reg.image("test/oci:v1");

    let image_ref = pull_ok(&mut c, &name).await;
    assert_eq!(
        image_ref,
        img.id(),
        "PullImage must return the image id (config digest)"
    );

    let st = status_ok(&mut c, &name).await;
    assert_eq!(st.id, img.id());
    assert_eq!(st.repo_tags, vec![name.clone()]);
    assert_eq!(
        st.repo_digests,
        vec![format!("{}@{}", reg.image("test/oci"), img.manifest_digest)]
    );
    assert!(st.size > 0, "size must be > 0");
    assert_eq!(
        st.uid.as_ref().map(|u| u.value),
        Some(1000),
        "uid from User 1000:1000"
    );
    assert_eq!(st.username, "");

    // content store and unpacked layers
    let root = d.root();
    assert!(
        blob_path(&root, img.id()).is_file(),
        "config blob in content/blobs"
    );
    for l in &img.layers {
        assert!(
            blob_path(&root, &l.digest).is_file(),
            "layer blob {} in content/blobs",
            l.digest
        );
    }
    for cid in img.chain_ids() {
        assert!(
            layer_path(&root, &cid).is_dir(),
            "layer dir layers/{}",
            hex_of(&cid)
        );
    }
    assert!(
        ingest_files(&root).is_empty(),
        "content/ingest not empty after pull: {:?}",
        ingest_files(&root)
    );
    assert!(tmp_layer_entries(&root).is_empty());

    // listed exactly once
    let all = list(&mut c, None).await;
    assert_eq!(ids(&all), vec![img.id().to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_docker_schema2_image() {
    let reg = Registry::start(None).await;
    let base = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/os-release", b"ID=test\n", 0o644)
        .build(Compression::Gzip);
    let top = LayerBuilder::new()
        .file("etc/motd", b"docker\n", 0o644)
        .build(Compression::Gzip);
    let img = ImageBuilder::new()
        .layer(base)
        .layer(top)
        .user("nobody")
        .build(Format::Docker);
    assert_eq!(img.manifest_media_type, harness::image::DOCKER_MANIFEST);
    reg.pusher().push_image("test/docker", "latest", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let name = reg.image("test/docker:latest");
    assert_eq!(pull_ok(&mut c, &name).await, img.id());
    let st = status_ok(&mut c, &name).await;
    assert_eq!(st.id, img.id());
    assert_eq!(
        st.repo_digests,
        vec![format!(
            "{}@{}",
            reg.image("test/docker"),
            img.manifest_digest
        )]
    );
    assert_eq!(st.username, "nobody");
    assert!(
        st.uid.is_none(),
        "uid must be unset for a user name, got {:?}",
        st.uid
    );
    for cid in img.chain_ids() {
        assert!(layer_path(&d.root(), &cid).is_dir(), "layer dir for {cid}");
    }
}

/// gzip, zstd and uncompressed layers in one OCI image; file metadata survives unpacking.
#[tokio::test(flavor = "multi_thread")]
async fn pull_mixed_compression_and_unpacked_contents() {
    let reg = Registry::start(None).await;
    let l1 = LayerBuilder::new()
        .dir("etc", 0o755)
        .file_with(
            "etc/owned",
            b"owned by 1234:5678\n",
            0o640,
            1234,
            5678,
            1_600_000_000,
        )
        .file("etc/gone", b"whited out later\n", 0o644)
        .dir("opq", 0o755)
        .file("opq/old", b"old\n", 0o644)
        .dir("bin", 0o755)
        .file("bin/tool", b"#!/bin/sh\n", 0o755)
        .symlink("bin/link", "tool")
        .hardlink("bin/hard", "bin/tool")
        .build(Compression::Gzip);
    let l2 = LayerBuilder::new()
        .dir("dev", 0o755)
        .char_device("dev/null", 1, 3, 0o666)
        .fifo("dev/fifo", 0o600)
        .file_with_xattrs(
            "xattr-file",
            b"x\n",
            0o644,
            &[("user.cri-lxc-test", b"hello")],
        )
        .build(Compression::Zstd);
    let l3 = LayerBuilder::new()
        .dir("etc", 0o755)
        .whiteout("etc/gone")
        .opaque("opq")
        .file("opq/new", b"new\n", 0o644)
        .file("plain", b"uncompressed layer\n", 0o600)
        .build(Compression::None);
    let img = ImageBuilder::new()
        .layer(l1)
        .layer(l2)
        .layer(l3)
        .build(Format::Oci);
    reg.pusher().push_image("test/mixed", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    assert_eq!(pull_ok(&mut c, &reg.image("test/mixed:v1")).await, img.id());

    let cids = img.chain_ids();
    for cid in &cids {
        assert!(layer_path(&d.root(), cid).is_dir(), "layer dir for {cid}");
    }
    // layer 1 (gzip)
    let l1 = layer_path(&d.root(), &cids[0]);
    let owned = l1.join("etc/owned");
    assert_eq!(
        std::fs::read(&owned).expect("etc/owned in layer 1"),
        b"owned by 1234:5678\n"
    );
    let m = std::fs::symlink_metadata(&owned).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(
        std::fs::read_link(l1.join("bin/link")).unwrap(),
        Path::new("tool")
    );
    let tool = std::fs::metadata(l1.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::metadata(l1.join("bin/hard")).unwrap().ino(),
        tool.ino(),
        "hard link shares the inode"
    );
    // layer 2 (zstd)
    let l2 = layer_path(&d.root(), &cids[1]);
    let dev = std::fs::symlink_metadata(l2.join("dev/null")).expect("dev/null in layer 2");
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));
    assert!(std::fs::symlink_metadata(l2.join("dev/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(std::fs::read(l2.join("xattr-file")).unwrap(), b"x\n");
    assert_eq!(
        lgetxattr(&l2.join("xattr-file"), "user.cri-lxc-test").as_deref(),
        Some(&b"hello"[..])
    );
    // layer 3 (uncompressed)
    let l3 = layer_path(&d.root(), &cids[2]);
    assert_eq!(
        std::fs::read(l3.join("plain")).expect("plain in layer 3"),
        b"uncompressed layer\n"
    );
    assert_eq!(std::fs::read(l3.join("opq/new")).unwrap(), b"new\n");
    // whiteouts in overlayfs form: `.wh.gone` -> char device 0/0 `gone`; opaque dir -> xattr
    let wh = std::fs::symlink_metadata(l3.join("etc/gone")).expect("whiteout etc/gone in layer 3");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout must be a 0/0 char device"
    );
    assert!(
        !l3.join("etc/.wh.gone").exists(),
        ".wh. file must not be created"
    );
    assert!(
        !l3.join("opq/.wh..wh..opq").exists(),
        "opaque marker file must not be created"
    );
    assert_eq!(
        lgetxattr(&l3.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_digest() {
    let reg = Registry::start(None).await;
    let img = simple_image("bydigest").build(Format::Oci);
    reg.pusher().push_image("test/bydigest", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let by_digest = format!("{}@{}", reg.image("test/bydigest"), img.manifest_digest);
    assert_eq!(pull_ok(&mut c, &by_digest).await, img.id());
    let st = status_ok(&mut c, &by_digest).await;
    assert_eq!(st.id, img.id());
    assert_eq!(st.repo_digests, vec![by_digest.clone()]);
    assert!(
        st.repo_tags.is_empty(),
        "pull by digest adds no tag: {:?}",
        st.repo_tags
    );
    // a digest that does not exist in the registry
    let missing = format!("{}@sha256:{}", reg.image("test/bydigest"), "0".repeat(64));
    let e = pull(&mut c, &missing)
        .await
        .expect_err("pull of an unknown digest must fail");
    assert_code(&e, &[Code::NotFound], "unknown digest");
}

fn two_platform_images(format: Format) -> (BuiltImage, BuiltImage, BuiltImage, BuiltImage) {
    let amd = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("arch", b"amd64\n", 0o644)
                .build(Compression::Gzip),
        )
        .arch("amd64")
        .build(format);
    let arm = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("arch", b"arm64\n", 0o644)
                .build(Compression::Gzip),
        )
        .arch("arm64")
        .variant("v8")
        .build(format);
    let win = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("arch", b"windows\n", 0o644)
                .build(Compression::Gzip),
        )
        .os("windows")
        .arch("amd64")
        .build(format);
    let attest = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("attestation", b"{}\n", 0o644)
                .build(Compression::None),
        )
        .os("unknown")
        .arch("unknown")
        .build(format);
    (amd, arm, win, attest)
}

async fn check_index_pull(format: Format) {
    let reg = Registry::start(None).await;
    let (amd, arm, win, attest) = two_platform_images(format);
    // amd64 deliberately not first
    let idx = build_index(
        &[win.clone(), arm.clone(), amd.clone(), attest.clone()],
        format,
    );
    reg.pusher().push_index("test/multi", "v1", &idx).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let name = reg.image("test/multi:v1");
    let id = pull_ok(&mut c, &name).await;
    assert_eq!(
        id,
        amd.id(),
        "must pick linux/amd64 (arm64={}, windows={})",
        arm.id(),
        win.id()
    );
    let st = status_ok(&mut c, &name).await;
    assert_eq!(st.id, amd.id());
    assert_eq!(
        st.repo_digests,
        vec![format!("{}@{}", reg.image("test/multi"), idx.digest)],
        "repo digest = index digest"
    );
    assert_eq!(
        ids(&list(&mut c, None).await),
        vec![amd.id().to_string()],
        "only the amd64 image is stored"
    );
    // by the index digest: same image, same single repo digest
    let by_digest = format!("{}@{}", reg.image("test/multi"), idx.digest);
    assert_eq!(pull_ok(&mut c, &by_digest).await, amd.id());
    assert_eq!(
        status_ok(&mut c, &by_digest).await.repo_digests,
        vec![by_digest.clone()]
    );
    let cid = &amd.chain_ids()[0];
    assert_eq!(
        std::fs::read(layer_path(&d.root(), cid).join("arch")).unwrap(),
        b"amd64\n"
    );
    for other in [&arm, &win, &attest] {
        assert!(
            !blob_path(&d.root(), other.id()).exists(),
            "config of another platform downloaded"
        );
        assert_eq!(
            reg.blob_get_count("test/multi", &other.layers[0].digest),
            0,
            "other platform's layer fetched"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_oci_index_selects_linux_amd64() {
    check_index_pull(Format::Oci).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_docker_manifest_list_selects_linux_amd64() {
    check_index_pull(Format::Docker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_index_without_host_platform_fails() {
    let reg = Registry::start(None).await;
    let (_amd, arm, win, _) = two_platform_images(Format::Oci);
    let idx = build_index(&[arm, win], Format::Oci);
    reg.pusher().push_index("test/noamd", "v1", &idx).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let e = pull(&mut c, &reg.image("test/noamd:v1"))
        .await
        .expect_err("no linux/amd64 entry: pull must fail");
    assert_ne!(e.code(), Code::Ok);
    assert!(list(&mut c, None).await.is_empty());
}

/// Pulling an image that is already present returns the same id and downloads no blob again.
#[tokio::test(flavor = "multi_thread")]
async fn pull_again_is_idempotent_and_downloads_nothing() {
    let reg = Registry::start(None).await;
    let img = simple_image("again").build(Format::Oci);
    reg.pusher().push_image("test/again", "v1", &img).await;
    reg.pusher()
        .push_manifest("test/again", "v2", &img.manifest, &img.manifest_media_type)
        .await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    assert_eq!(pull_ok(&mut c, &reg.image("test/again:v1")).await, img.id());
    assert_eq!(pull_ok(&mut c, &reg.image("test/again:v1")).await, img.id());
    assert_eq!(pull_ok(&mut c, &reg.image("test/again:v2")).await, img.id());
    let all = list(&mut c, None).await;
    assert_eq!(all.len(), 1, "one image with two tags: {all:?}");
    let mut tags = all[0].repo_tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        vec![reg.image("test/again:v1"), reg.image("test/again:v2")]
    );
    assert_eq!(
        all[0].repo_digests,
        vec![format!(
            "{}@{}",
            reg.image("test/again"),
            img.manifest_digest
        )]
    );
    for dg in img
        .layer_digests()
        .iter()
        .chain([img.config_digest.clone()].iter())
    {
        let st = reg.settled_blob_gets("test/again", dg).await;
        assert_eq!(
            st,
            vec![200],
            "blob {dg} must be fetched once over three pulls"
        );
    }
}

/// Re-pulling a tag that now points at another image moves the tag.
#[tokio::test(flavor = "multi_thread")]
async fn repull_moves_tag_to_new_image() {
    let reg = Registry::start(None).await;
    let a = simple_image("move-a").build(Format::Oci);
    let b = simple_image("move-b").build(Format::Oci);
    let name = reg.image("test/move:latest");
    reg.pusher().push_image("test/move", "latest", &a).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    assert_eq!(pull_ok(&mut c, &name).await, a.id());
    reg.pusher().push_image("test/move", "latest", &b).await;
    assert_eq!(pull_ok(&mut c, &name).await, b.id());
    assert_eq!(status_ok(&mut c, &name).await.id, b.id());
    for img in list(&mut c, None).await {
        if img.id != b.id() {
            assert!(
                !img.repo_tags.contains(&name),
                "old image {} still has the moved tag",
                img.id
            );
        } else {
            assert_eq!(img.repo_tags, vec![name.clone()]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// names, mirrors, hosts.toml

#[tokio::test(flavor = "multi_thread")]
async fn docker_hub_names_are_normalised_and_mirror_is_used() {
    let reg = Registry::start(None).await;
    let img = simple_image("busybox").build(Format::Docker);
    reg.pusher()
        .push_image("library/busybox", "latest", &img)
        .await;
    let app = simple_image("app").build(Format::Oci);
    reg.pusher().push_image("someuser/app", "1.0", &app).await;
    let extra = format!(
        "\n[registry.mirrors]\n\"docker.io\" = [\"{}\"]\n",
        reg.url()
    );
    let d = Daemon::start(&config(&[&reg.addr()], 60, &extra)).await;
    let mut c = d.client().await;

    assert_eq!(pull_ok(&mut c, "busybox").await, img.id());
    let st = status_ok(&mut c, "busybox").await;
    assert_eq!(
        st.repo_tags,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    assert_eq!(
        st.repo_digests,
        vec![format!("docker.io/library/busybox@{}", img.manifest_digest)]
    );
    for alias in [
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox:latest",
        "docker.io/busybox",
    ] {
        assert_eq!(
            status(&mut c, alias).await.map(|i| i.id),
            Some(img.id().to_string()),
            "ImageStatus({alias})"
        );
    }
    assert_eq!(
        ids(&list(&mut c, Some("busybox")).await),
        vec![img.id().to_string()]
    );

    assert_eq!(pull_ok(&mut c, "someuser/app:1.0").await, app.id());
    assert_eq!(
        status_ok(&mut c, "docker.io/someuser/app:1.0")
            .await
            .repo_tags,
        vec!["docker.io/someuser/app:1.0"]
    );

    remove_ok(&mut c, "busybox").await;
    assert!(status(&mut c, "docker.io/library/busybox:latest")
        .await
        .is_none());
    assert_eq!(
        reg.settled_blob_gets("library/busybox", &img.layers[0].digest)
            .await,
        vec![200]
    );
}

/// `"*"` mirrors apply to every host; the upstream (a closed loopback port) is never needed.
#[tokio::test(flavor = "multi_thread")]
async fn default_mirror_applies_to_every_host() {
    let reg = Registry::start(None).await;
    let img = simple_image("star").build(Format::Oci);
    reg.pusher().push_image("test/star", "v1", &img).await;
    let upstream = format!("127.0.0.1:{}", closed_port());
    let extra = format!("\n[registry.mirrors]\n\"*\" = [\"{}\"]\n", reg.url());
    let d = Daemon::start(&config(&[&reg.addr(), &upstream], 60, &extra)).await;
    let mut c = d.client().await;
    let name = format!("{upstream}/test/star:v1");
    assert_eq!(pull_ok(&mut c, &name).await, img.id());
    let st = status_ok(&mut c, &name).await;
    assert_eq!(
        st.repo_tags,
        vec![name.clone()],
        "the image keeps its upstream name"
    );
    assert_eq!(
        st.repo_digests,
        vec![format!("{upstream}/test/star@{}", img.manifest_digest)]
    );
}

/// A mirror that does not have the image is skipped and the next one is used.
#[tokio::test(flavor = "multi_thread")]
async fn mirrors_are_tried_in_order() {
    let empty = Registry::start(None).await;
    let reg = Registry::start(None).await;
    let img = simple_image("order").build(Format::Oci);
    reg.pusher().push_image("test/order", "v1", &img).await;
    let upstream = format!("127.0.0.1:{}", closed_port());
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let extra = format!(
        "\n[registry.mirrors]\n\"{upstream}\" = [\"{dead}\", \"{}\", \"{}\"]\n",
        empty.url(),
        reg.url()
    );
    let d = Daemon::start(&config(
        &[&reg.addr(), &empty.addr(), &upstream],
        60,
        &extra,
    ))
    .await;
    let mut c = d.client().await;
    assert_eq!(
        pull_ok(&mut c, &format!("{upstream}/test/order:v1")).await,
        img.id()
    );
}

/// containerd-style `config_path`: `<dir>/<host>/hosts.toml` and `<dir>/_default/hosts.toml`.
#[tokio::test(flavor = "multi_thread")]
async fn hosts_toml_config_path() {
    let reg = Registry::start(None).await;
    let img = simple_image("hosts").build(Format::Oci);
    reg.pusher().push_image("test/hosts", "v1", &img).await;
    let img2 = simple_image("hosts-default").build(Format::Oci);
    reg.pusher()
        .push_image("test/hostsdefault", "v1", &img2)
        .await;

    let certs = tempfile::tempdir().unwrap();
    let up1 = format!("127.0.0.1:{}", closed_port());
    let up2 = format!("127.0.0.1:{}", closed_port());
    std::fs::create_dir_all(certs.path().join(&up1)).unwrap();
    std::fs::write(
        certs.path().join(&up1).join("hosts.toml"),
        format!(
            "server = \"http://{up1}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.url()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(certs.path().join("_default")).unwrap();
    std::fs::write(
        certs.path().join("_default/hosts.toml"),
        format!(
            "[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.url()
        ),
    )
    .unwrap();
    let extra = format!("config_path = \"{}\"\n", certs.path().display());
    let d = Daemon::start(&config(&[&reg.addr(), &up1, &up2], 60, &extra)).await;
    let mut c = d.client().await;
    let n1 = format!("{up1}/test/hosts:v1");
    assert_eq!(pull_ok(&mut c, &n1).await, img.id());
    assert_eq!(status_ok(&mut c, &n1).await.repo_tags, vec![n1.clone()]);
    let n2 = format!("{up2}/test/hostsdefault:v1");
    assert_eq!(pull_ok(&mut c, &n2).await, img2.id(), "_default/hosts.toml");
}

/// No `[registry]` section at all: a loopback registry is reached over plain HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn loopback_registry_defaults_to_plain_http() {
    let reg = Registry::start(None).await;
    let img = simple_image("plain").build(Format::Oci);
    reg.pusher().push_image("test/plain", "v1", &img).await;
    let d = Daemon::start("log_level = \"debug\"\n").await;
    let mut c = d.client().await;
    assert_eq!(pull_ok(&mut c, &reg.image("test/plain:v1")).await, img.id());
}

// ---------------------------------------------------------------------------------------------
// ImageStatus / ListImages / ImageFsInfo

#[tokio::test(flavor = "multi_thread")]
async fn image_status_user_fields() {
    let reg = Registry::start(None).await;
    let cases: Vec<(&str, Option<i64>, &str)> = vec![
        ("1000", Some(1000), ""),
        ("1000:1000", Some(1000), ""),
        ("0", Some(0), ""),
        ("nobody", None, "nobody"),
        ("nobody:nogroup", None, "nobody"),
    ];
    let mut built = Vec::new();
    for (i, (user, _, _)) in cases.iter().enumerate() {
        let img = simple_image(&format!("user{i}"))
            .user(user)
            .build(Format::Oci);
        reg.pusher()
            .push_image("test/user", &format!("u{i}"), &img)
            .await;
        built.push(img);
    }
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    for (i, (user, uid, username)) in cases.iter().enumerate() {
        let name = reg.image(&format!("test/user:u{i}"));
        assert_eq!(pull_ok(&mut c, &name).await, built[i].id());
        let st = status_ok(&mut c, &name).await;
        assert_eq!(
            st.uid.as_ref().map(|u| u.value),
            *uid,
            "uid for User={user:?}"
        );
        assert_eq!(st.username, *username, "username for User={user:?}");
        // ListImages reports the same fields
        let l = list(&mut c, Some(&name)).await;
        assert_eq!(l.len(), 1);
        assert_eq!(
            l[0].uid.as_ref().map(|u| u.value),
            *uid,
            "ListImages uid for User={user:?}"
        );
        assert_eq!(l[0].username, *username);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_status_verbose_info_has_config() {
    let reg = Registry::start(None).await;
    let img = simple_image("verbose")
        .env("MARKER=cri-lxc-verbose")
        .entrypoint(&["/bin/verbose"])
        .cmd(&["--flag"])
        .working_dir("/srv")
        .build(Format::Oci);
    reg.pusher().push_image("test/verbose", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let name = reg.image("test/verbose:v1");
    pull_ok(&mut c, &name).await;
    let (image, info) = status_verbose(&mut c, &name).await;
    assert_eq!(image.expect("image").id, img.id());
    let raw = info
        .get("info")
        .unwrap_or_else(|| panic!("verbose info has no \"info\" key: {info:?}"));
    let v: serde_json::Value = serde_json::from_str(raw).expect("info is JSON");
    let s = v.to_string();
    for needle in ["MARKER=cri-lxc-verbose", "/bin/verbose", "--flag", "/srv"] {
        assert!(s.contains(needle), "verbose info lacks {needle}: {s}");
    }
    // non-verbose status carries no info
    let req = ImageStatusRequest {
        image: spec(&name),
        verbose: false,
    };
    let r = c.image.image_status(req).await.unwrap().into_inner();
    assert!(
        r.info.is_empty(),
        "non-verbose ImageStatus returned info {:?}",
        r.info
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_status_of_unknown_image_is_empty() {
    let reg = Registry::start(None).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    for name in [
        reg.image("test/nothere:v1"),
        "busybox".to_string(),
        format!("sha256:{}", "a".repeat(64)),
        format!("{}@sha256:{}", reg.image("test/nothere"), "b".repeat(64)),
    ] {
        let req = ImageStatusRequest {
            image: spec(&name),
            verbose: true,
        };
        let r = c
            .image
            .image_status(req)
            .await
            .unwrap_or_else(|e| {
                panic!("ImageStatus({name}) of an unknown image must not fail: {e}")
            })
            .into_inner();
        assert!(
            r.image.is_none(),
            "ImageStatus({name}) returned {:?}",
            r.image
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_status_by_every_reference_form() {
    let reg = Registry::start(None).await;
    let img = simple_image("forms").build(Format::Oci);
    reg.pusher().push_image("test/forms", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    pull_ok(&mut c, &reg.image("test/forms:v1")).await;
    for r in [
        reg.image("test/forms:v1"),
        img.id().to_string(),
        hex_of(img.id()).to_string(),
        format!("{}@{}", reg.image("test/forms"), img.manifest_digest),
    ] {
        assert_eq!(
            status(&mut c, &r).await.map(|i| i.id),
            Some(img.id().to_string()),
            "ImageStatus({r})"
        );
    }
    // an untagged name means :latest, which does not exist
    assert!(status(&mut c, &reg.image("test/forms")).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn list_images_with_filter() {
    let reg = Registry::start(None).await;
    let a = simple_image("list-a").build(Format::Oci);
    let b = simple_image("list-b").build(Format::Docker);
    reg.pusher().push_image("test/a", "v1", &a).await;
    reg.pusher().push_image("test/b", "v1", &b).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    assert!(
        list(&mut c, None).await.is_empty(),
        "fresh daemon lists no image"
    );
    pull_ok(&mut c, &reg.image("test/a:v1")).await;
    pull_ok(&mut c, &reg.image("test/b:v1")).await;
    let mut both = vec![a.id().to_string(), b.id().to_string()];
    both.sort();
    assert_eq!(ids(&list(&mut c, None).await), both);
    assert_eq!(
        ids(&list(&mut c, Some("")).await),
        both,
        "empty filter = no filter"
    );
    assert_eq!(
        ids(&list(&mut c, Some(&reg.image("test/a:v1"))).await),
        vec![a.id().to_string()]
    );
    assert_eq!(
        ids(&list(&mut c, Some(&reg.image("test/b:v1"))).await),
        vec![b.id().to_string()]
    );
    assert!(list(&mut c, Some(&reg.image("test/c:v1"))).await.is_empty());
    for i in list(&mut c, None).await {
        assert!(i.size > 0);
        assert_eq!(i.repo_tags.len(), 1);
        assert_eq!(i.repo_digests.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_fs_info_reports_usage() {
    let reg = Registry::start(None).await;
    let img = simple_image("fsinfo").build(Format::Oci);
    reg.pusher().push_image("test/fsinfo", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    pull_ok(&mut c, &reg.image("test/fsinfo:v1")).await;
    let r = c
        .image
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    assert!(!r.image_filesystems.is_empty(), "no image_filesystems");
    assert!(
        !r.container_filesystems.is_empty(),
        "no container_filesystems"
    );
    for (kind, fs) in r
        .image_filesystems
        .iter()
        .map(|f| ("image", f))
        .chain(r.container_filesystems.iter().map(|f| ("container", f)))
    {
        assert!(fs.timestamp > 0, "{kind} fs timestamp");
        let mp = fs
            .fs_id
            .as_ref()
            .map(|i| i.mountpoint.clone())
            .unwrap_or_default();
        assert!(!mp.is_empty(), "{kind} fs mountpoint empty");
        assert!(
            fs.used_bytes.as_ref().map(|u| u.value).unwrap_or(0) > 0,
            "{kind} fs used_bytes: {fs:?}"
        );
        assert!(
            fs.inodes_used.as_ref().map(|u| u.value).unwrap_or(0) > 0,
            "{kind} fs inodes_used: {fs:?}"
        );
    }
    let img_fs = &r.image_filesystems[0];
    assert!(
        img_fs.used_bytes.as_ref().unwrap().value >= img.layers[0].blob.len() as u64,
        "image fs used bytes smaller than a pulled layer"
    );
}

// ---------------------------------------------------------------------------------------------
// RemoveImage

#[tokio::test(flavor = "multi_thread")]
async fn remove_by_tag_untags_then_deletes() {
    let reg = Registry::start(None).await;
    let img = simple_image("tags").build(Format::Oci);
    reg.pusher().push_image("test/tags", "v1", &img).await;
    reg.pusher()
        .push_manifest("test/tags", "v2", &img.manifest, &img.manifest_media_type)
        .await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let (v1, v2) = (reg.image("test/tags:v1"), reg.image("test/tags:v2"));
    pull_ok(&mut c, &v1).await;
    pull_ok(&mut c, &v2).await;

    remove_ok(&mut c, &v1).await;
    assert!(
        status(&mut c, &v1).await.is_none(),
        "v1 still resolves after removing it"
    );
    let st = status_ok(&mut c, &v2).await;
    assert_eq!(st.id, img.id());
    assert_eq!(st.repo_tags, vec![v2.clone()], "only v2 left");
    let root = d.root();
    assert!(
        blob_path(&root, img.id()).is_file(),
        "untagging must not delete content"
    );
    assert!(layer_path(&root, &img.chain_ids()[0]).is_dir());

    remove_ok(&mut c, &v2).await;
    assert!(status(&mut c, &v2).await.is_none());
    assert!(
        status(&mut c, img.id()).await.is_none(),
        "image without names must be gone"
    );
    assert!(list(&mut c, None).await.is_empty());
    assert!(
        !blob_path(&root, img.id()).exists(),
        "config blob left behind"
    );
    for l in &img.layers {
        assert!(
            !blob_path(&root, &l.digest).exists(),
            "layer blob {} left behind",
            l.digest
        );
    }
    assert!(
        !blob_path(&root, &img.manifest_digest).exists(),
        "manifest blob left behind"
    );
    for cid in img.chain_ids() {
        assert!(
            !layer_path(&root, &cid).exists(),
            "layer dir {cid} left behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_by_id_and_by_bare_hex_id() {
    let reg = Registry::start(None).await;
    let a = simple_image("rm-id-a").build(Format::Oci);
    let b = simple_image("rm-id-b").build(Format::Oci);
    reg.pusher().push_image("test/rmid", "a", &a).await;
    reg.pusher()
        .push_manifest("test/rmid", "a2", &a.manifest, &a.manifest_media_type)
        .await;
    reg.pusher().push_image("test/rmid", "b", &b).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    pull_ok(&mut c, &reg.image("test/rmid:a")).await;
    pull_ok(&mut c, &reg.image("test/rmid:a2")).await;
    pull_ok(&mut c, &reg.image("test/rmid:b")).await;

    // by full id: removes the image with all its tags
    remove_ok(&mut c, a.id()).await;
    assert!(status(&mut c, &reg.image("test/rmid:a")).await.is_none());
    assert!(status(&mut c, &reg.image("test/rmid:a2")).await.is_none());
    assert!(!blob_path(&d.root(), a.id()).exists());
    // by bare 64-hex id (crictl style)
    remove_ok(&mut c, hex_of(b.id())).await;
    assert!(status(&mut c, b.id()).await.is_none());
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_by_digest_reference() {
    let reg = Registry::start(None).await;
    let img = simple_image("rm-digest").build(Format::Oci);
    reg.pusher().push_image("test/rmdigest", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    pull_ok(&mut c, &reg.image("test/rmdigest:v1")).await;
    remove_ok(
        &mut c,
        &format!("{}@{}", reg.image("test/rmdigest"), img.manifest_digest),
    )
    .await;
    assert!(
        status(&mut c, img.id()).await.is_none(),
        "removing the only repo digest removes the image"
    );
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_unknown_image_is_ok() {
    let reg = Registry::start(None).await;
    let img = simple_image("rm-twice").build(Format::Oci);
    reg.pusher().push_image("test/rmtwice", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    remove_ok(&mut c, &reg.image("test/never:v1")).await;
    remove_ok(&mut c, &format!("sha256:{}", "c".repeat(64))).await;
    let name = reg.image("test/rmtwice:v1");
    pull_ok(&mut c, &name).await;
    remove_ok(&mut c, &name).await;
    remove_ok(&mut c, &name).await;
    remove_ok(&mut c, img.id()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_keeps_layers_shared_with_other_images() {
    let reg = Registry::start(None).await;
    let base = LayerBuilder::new()
        .dir("usr", 0o755)
        .file("usr/base", &random_bytes(200_000, 7), 0o644)
        .build(Compression::Gzip);
    let a_top = LayerBuilder::new()
        .file("a", b"image a\n", 0o644)
        .build(Compression::Gzip);
    let b_top = LayerBuilder::new()
        .file("b", b"image b\n", 0o644)
        .build(Compression::Zstd);
    let a = ImageBuilder::new()
        .layer(base.clone())
        .layer(a_top)
        .build(Format::Oci);
    let b = ImageBuilder::new()
        .layer(base.clone())
        .layer(b_top)
        .build(Format::Docker);
    reg.pusher().push_image("test/shared-a", "v1", &a).await;
    reg.pusher().push_image("test/shared-b", "v1", &b).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    pull_ok(&mut c, &reg.image("test/shared-a:v1")).await;
    pull_ok(&mut c, &reg.image("test/shared-b:v1")).await;
    let root = d.root();
    let (ac, bc) = (a.chain_ids(), b.chain_ids());
    assert_eq!(ac[0], bc[0]);
    for p in [
        layer_path(&root, &ac[0]),
        layer_path(&root, &ac[1]),
        layer_path(&root, &bc[1]),
    ] {
        assert!(p.is_dir(), "{} missing after pulls", p.display());
    }

    remove_ok(&mut c, &reg.image("test/shared-a:v1")).await;
    assert!(
        layer_path(&root, &ac[0]).is_dir(),
        "shared base layer dir deleted"
    );
    assert!(
        blob_path(&root, &base.digest).is_file(),
        "shared base layer blob deleted"
    );
    assert!(
        !layer_path(&root, &ac[1]).exists(),
        "a's own layer dir left behind"
    );
    assert!(
        !blob_path(&root, &a.layers[1].digest).exists(),
        "a's own layer blob left behind"
    );
    assert!(!blob_path(&root, a.id()).exists(), "a's config left behind");
    assert!(layer_path(&root, &bc[1]).is_dir(), "b's layer dir deleted");
    assert!(blob_path(&root, b.id()).is_file(), "b's config deleted");
    assert_eq!(ids(&list(&mut c, None).await), vec![b.id().to_string()]);
    let bst = status_ok(&mut c, &reg.image("test/shared-b:v1")).await;
    assert_eq!(bst.id, b.id());

    remove_ok(&mut c, b.id()).await;
    for cid in bc {
        assert!(
            !layer_path(&root, &cid).exists(),
            "layer dir {cid} left after removing all images"
        );
    }
    assert!(!blob_path(&root, &base.digest).exists());
}

// ---------------------------------------------------------------------------------------------
// authentication

async fn auth_setup() -> (Registry, BuiltImage, Daemon) {
    let reg = Registry::start(Some(("alice", "s3cret-pw"))).await;
    let img = simple_image("auth").build(Format::Oci);
    reg.pusher().push_image("test/private", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    (reg, img, d)
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_with_username_and_password() {
    let (reg, img, d) = auth_setup().await;
    let mut c = d.client().await;
    let name = reg.image("test/private:v1");
    assert_eq!(
        pull_with(&mut c, &name, basic_auth("alice", "s3cret-pw"))
            .await
            .expect("pull with credentials"),
        img.id()
    );
    assert_eq!(status_ok(&mut c, &name).await.id, img.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_with_base64_auth_field() {
    let (reg, img, d) = auth_setup().await;
    let mut c = d.client().await;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw");
    let cfg = AuthConfig {
        auth,
        server_address: reg.addr(),
        ..Default::default()
    };
    let r = pull_with(&mut c, &reg.image("test/private:v1"), Some(cfg)).await;
    assert_eq!(r.expect("pull with base64 auth"), img.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_with_wrong_or_missing_credentials_is_denied() {
    let (reg, _img, d) = auth_setup().await;
    let mut c = d.client().await;
    let name = reg.image("test/private:v1");
    for (what, auth) in [
        ("wrong password", basic_auth("alice", "wrong")),
        ("unknown user", basic_auth("mallory", "s3cret-pw")),
        ("no credentials", None),
    ] {
        let e = pull_with(&mut c, &name, auth).await.expect_err(what);
        assert_code(&e, &[Code::Unauthenticated, Code::PermissionDenied], what);
        let m = e.message().to_lowercase();
        assert!(
            m.contains("authentication required") || m.contains("unauthorized"),
            "{what}: message should carry the registry's error: {}",
            e.message()
        );
    }
    assert!(list(&mut c, None).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// bad input and registry failures

#[tokio::test(flavor = "multi_thread")]
async fn malformed_references_are_invalid_argument() {
    let d = Daemon::start(&config(&[], 60, "")).await;
    let mut c = d.client().await;
    for bad in [
        "UPPER/Case",
        "foo@sha256:zz",
        "",
        "foo:bar:baz",
        "127.0.0.1:5000/UP:tag",
        "foo/../bar",
    ] {
        let e = pull(&mut c, bad)
            .await
            .expect_err(&format!("pull({bad:?}) must fail"));
        assert_code(&e, &[Code::InvalidArgument], &format!("pull({bad:?})"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tag_or_repository_is_not_found() {
    let reg = Registry::start(None).await;
    let img = simple_image("known").build(Format::Oci);
    reg.pusher().push_image("test/known", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    for name in [reg.image("test/known:v2"), reg.image("test/unknown:v1")] {
        let e = pull(&mut c, &name).await.expect_err(&name);
        assert_code(&e, &[Code::NotFound], &name);
    }
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_registry_error_names_the_host() {
    let port = closed_port();
    let host = format!("127.0.0.1:{port}");
    let d = daemon_for(&[&host]).await;
    let mut c = d.client().await;
    let e = pull(&mut c, &format!("{host}/test/foo:v1"))
        .await
        .expect_err("closed port");
    assert!(
        e.message().contains(&host),
        "error should name {host}: {:?}: {}",
        e.code(),
        e.message()
    );
    assert_ne!(e.code(), Code::InvalidArgument);
}

fn looks_like_digest_error(m: &str) -> bool {
    let m = m.to_lowercase();
    m.contains("digest") || m.contains("mismatch") || m.contains("sha256") || m.contains("checksum")
}

/// A layer blob corrupted inside the registry's storage: the pull fails and leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn corrupted_layer_fails_and_leaves_nothing() {
    let reg = Registry::start(None).await;
    let img = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("ok", b"fine\n", 0o644)
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file("big", &random_bytes(300_000, 3), 0o644)
                .build(Compression::Gzip),
        )
        .build(Format::Oci);
    reg.pusher().push_image("test/corrupt", "v1", &img).await;
    let bad = img.layers[1].digest.clone();
    harness::registry::corrupt_file(&reg.blob_data_path(&bad));
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let name = reg.image("test/corrupt:v1");
    let e = pull(&mut c, &name)
        .await
        .expect_err("corrupted layer must fail the pull");
    assert!(
        looks_like_digest_error(e.message()),
        "error should report the digest mismatch: {}",
        e.message()
    );
    assert!(status(&mut c, &name).await.is_none());
    assert!(list(&mut c, None).await.is_empty());
    assert!(
        !blob_path(&d.root(), &bad).exists(),
        "corrupted blob stored under its digest"
    );
    assert!(
        !layer_path(&d.root(), &img.chain_ids()[1]).exists(),
        "layer dir of a corrupt layer"
    );
    assert!(
        tmp_layer_entries(&d.root()).is_empty(),
        "temp extraction dirs left: {:?}",
        tmp_layer_entries(&d.root())
    );
    assert!(
        ingest_files(&d.root()).is_empty(),
        "partial downloads left: {:?}",
        ingest_files(&d.root())
    );
}

/// A config blob whose bytes don't match its digest (served by the in-test fake registry).
#[tokio::test(flavor = "multi_thread")]
async fn corrupted_config_fails_and_leaves_nothing() {
    let fake = FakeRegistry::start().await;
    let img = simple_image("badconfig").build(Format::Oci);
    fake.add_image("test/badconfig", "v1", &img);
    fake.set_behaviour(img.id(), BlobBehaviour::Corrupt);
    let d = daemon_for(&[&fake.addr()]).await;
    let mut c = d.client().await;
    let name = fake.image("test/badconfig:v1");
    let e = pull(&mut c, &name)
        .await
        .expect_err("corrupted config must fail the pull");
    assert!(
        looks_like_digest_error(e.message()),
        "error should report the digest mismatch: {}",
        e.message()
    );
    assert!(list(&mut c, None).await.is_empty());
    assert!(!blob_path(&d.root(), img.id()).exists());
    // once the registry serves good data the pull succeeds
    fake.set_behaviour(img.id(), BlobBehaviour::Normal);
    assert_eq!(pull_ok(&mut c, &name).await, img.id());
}

/// A registry that stops sending mid-blob: the pull is cancelled by `pull_progress_timeout_secs`.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_download_hits_progress_timeout() {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("data", &random_bytes(1 << 20, 11), 0o644)
                .build(Compression::Gzip),
        )
        .build(Format::Oci);
    fake.add_image("test/stall", "v1", &img);
    let layer = img.layers[0].digest.clone();
    fake.set_behaviour(&layer, BlobBehaviour::StallAfter(4096));
    let d = Daemon::start(&config(&[&fake.addr()], 2, "")).await;
    let mut c = d.client().await;
    let name = fake.image("test/stall:v1");
    let e = pull(&mut c, &name)
        .await
        .expect_err("stalled pull must fail");
    let m = e.message().to_lowercase();
    assert!(
        m.contains("timeout")
            || m.contains("timed out")
            || m.contains("stall")
            || m.contains("progress"),
        "error should mention the progress timeout: {:?}: {}",
        e.code(),
        e.message()
    );
    assert!(fake.blob_gets(&layer) >= 1);
    assert!(list(&mut c, None).await.is_empty());
    assert!(!blob_path(&d.root(), &layer).exists());
    // the failed pull must not poison later pulls of the same image
    fake.set_behaviour(&layer, BlobBehaviour::Normal);
    assert_eq!(pull_ok(&mut c, &name).await, img.id());
    assert!(
        ingest_files(&d.root()).is_empty(),
        "partial downloads left: {:?}",
        ingest_files(&d.root())
    );
}

/// The config's rootfs.diff_ids does not match the unpacked layer.
#[tokio::test(flavor = "multi_thread")]
async fn diff_id_mismatch_fails_and_leaves_nothing() {
    let reg = Registry::start(None).await;
    let good = simple_image("diffid").build(Format::Oci);
    let bogus = format!("sha256:{}", "1".repeat(64));
    let img = good.edit_config(|c| c["rootfs"]["diff_ids"][0] = json!(bogus));
    reg.pusher().push_image("test/diffid", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let e = pull(&mut c, &reg.image("test/diffid:v1"))
        .await
        .expect_err("diff id mismatch must fail the pull");
    assert!(
        e.message().to_lowercase().contains("diff"),
        "error should name the diff id mismatch: {}",
        e.message()
    );
    assert!(list(&mut c, None).await.is_empty());
    assert!(
        !layer_path(&d.root(), &bogus).exists(),
        "layer stored under the bogus chain id"
    );
    assert!(
        !layer_path(&d.root(), &good.chain_ids()[0]).exists(),
        "unverified layer dir kept"
    );
    assert!(tmp_layer_entries(&d.root()).is_empty());
}

/// The manifest references a layer blob the registry does not have.
#[tokio::test(flavor = "multi_thread")]
async fn missing_blob_fails_and_names_it() {
    let fake = FakeRegistry::start().await;
    let img = simple_image("missing").build(Format::Oci);
    fake.add_image("test/missing", "v1", &img);
    let layer = img.layers[0].digest.clone();
    fake.remove_blob(&layer);
    let d = daemon_for(&[&fake.addr()]).await;
    let mut c = d.client().await;
    let e = pull(&mut c, &fake.image("test/missing:v1"))
        .await
        .expect_err("missing blob must fail the pull");
    assert!(
        e.message().contains(hex_of(&layer)),
        "error should name the missing blob {layer}: {}",
        e.message()
    );
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_layer_media_type_fails() {
    let reg = Registry::start(None).await;
    let img = simple_image("mediatype")
        .build(Format::Oci)
        .edit_manifest(|m| {
            m["layers"][0]["mediaType"] = json!("application/vnd.example.layer.v1.tar+lz4")
        });
    reg.pusher().push_image("test/mediatype", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let e = pull(&mut c, &reg.image("test/mediatype:v1"))
        .await
        .expect_err("unknown layer media type");
    assert!(
        e.message().contains("lz4"),
        "error should name the media type: {}",
        e.message()
    );
    assert!(list(&mut c, None).await.is_empty());
    assert!(!layer_path(&d.root(), &img.chain_ids()[0]).exists());
}

/// Pull by digest where the registry serves a different manifest: the digest must be verified.
#[tokio::test(flavor = "multi_thread")]
async fn manifest_not_matching_requested_digest_fails() {
    let fake = FakeRegistry::start().await;
    let wanted = simple_image("wanted").build(Format::Oci);
    let served = simple_image("served").build(Format::Oci);
    fake.add_image("test/swap", "v1", &served);
    fake.add_manifest(
        "test/swap",
        &wanted.manifest_digest,
        &served.manifest_media_type,
        &served.manifest,
    );
    let d = daemon_for(&[&fake.addr()]).await;
    let mut c = d.client().await;
    let name = format!("{}@{}", fake.image("test/swap"), wanted.manifest_digest);
    let e = pull(&mut c, &name)
        .await
        .expect_err("manifest digest mismatch must fail");
    assert!(looks_like_digest_error(e.message()), "{}", e.message());
    assert!(
        list(&mut c, None).await.is_empty(),
        "an image with the wrong content was stored"
    );
}

/// `..` entries and symlinked parents never write outside the layer directory.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_layer_paths_are_contained() {
    let reg = Registry::start(None).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    let tag = format!("escape-{}", std::process::id());

    // 1. a `../` entry: the layer is rejected
    let dotdot = LayerBuilder::new()
        .file("ok", b"ok\n", 0o644)
        .raw_file(format!("../../{tag}").as_bytes(), b"pwned\n", 0o644)
        .raw_file(format!("../{tag}").as_bytes(), b"pwned\n", 0o644)
        .build(Compression::Gzip);
    let img = ImageBuilder::new().layer(dotdot).build(Format::Oci);
    reg.pusher().push_image("test/dotdot", "v1", &img).await;
    let e = pull(&mut c, &reg.image("test/dotdot:v1"))
        .await
        .expect_err("a layer with `..` must be rejected");
    assert_ne!(e.code(), Code::Ok);
    for p in [
        d.root().join(&tag),
        d.root().join("layers").join(&tag),
        d.dir().join(&tag),
    ] {
        assert!(!p.exists(), "{} written outside the layer", p.display());
    }
    assert!(list(&mut c, None).await.is_empty());
    assert!(tmp_layer_entries(&d.root()).is_empty());

    // 2. an absolute symlink used as a parent directory: resolved inside the layer (or rejected)
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let sym = LayerBuilder::new()
        .symlink("evil", &target)
        .file("evil/pwned", b"pwned\n", 0o644)
        .symlink("rel", "../../../../../../../../..")
        .file("rel/tmp-pwned-by-cri-lxc-test", b"pwned\n", 0o644)
        .build(Compression::Gzip);
    let img = ImageBuilder::new().layer(sym).build(Format::Oci);
    reg.pusher().push_image("test/symlink", "v1", &img).await;
    let r = pull(&mut c, &reg.image("test/symlink:v1")).await;
    assert!(
        !outside.path().join("pwned").exists(),
        "layer wrote through an absolute symlink"
    );
    let host_file = Path::new("/tmp-pwned-by-cri-lxc-test");
    if host_file.exists() {
        let _ = std::fs::remove_file(host_file);
        panic!(
            "layer wrote through a relative symlink to {}",
            host_file.display()
        );
    }
    if r.is_ok() {
        let l = layer_path(&d.root(), &img.chain_ids()[0]);
        assert_eq!(std::fs::read_link(l.join("evil")).unwrap(), outside.path());
    }
}

/// Two different images sharing a base layer, pulled at the same time: the shared blob is
/// downloaded once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_images_sharing_a_layer() {
    let reg = Registry::start(None).await;
    let base = LayerBuilder::new()
        .file("base", &random_bytes(4 << 20, 5), 0o644)
        .build(Compression::Gzip);
    let a = ImageBuilder::new()
        .layer(base.clone())
        .layer(
            LayerBuilder::new()
                .file("a", b"a\n", 0o644)
                .build(Compression::Gzip),
        )
        .build(Format::Oci);
    let b = ImageBuilder::new()
        .layer(base.clone())
        .layer(
            LayerBuilder::new()
                .file("b", b"b\n", 0o644)
                .build(Compression::Gzip),
        )
        .build(Format::Oci);
    reg.pusher().push_image("test/share", "a", &a).await;
    reg.pusher().push_image("test/share", "b", &b).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let (mut c1, mut c2) = (d.client().await, d.client().await);
    let (na, nb) = (reg.image("test/share:a"), reg.image("test/share:b"));
    let (ra, rb) = tokio::join!(pull(&mut c1, &na), pull(&mut c2, &nb));
    assert_eq!(ra.expect("pull a"), a.id());
    assert_eq!(rb.expect("pull b"), b.id());
    assert_eq!(
        reg.settled_blob_gets("test/share", &base.digest).await,
        vec![200],
        "shared base blob fetched once"
    );
    let mut want = vec![a.id().to_string(), b.id().to_string()];
    want.sort();
    assert_eq!(ids(&list(&mut c1, None).await), want);
    assert!(layer_path(&d.root(), &a.chain_ids()[0]).is_dir());
}

// ---------------------------------------------------------------------------------------------
// concurrency, crashes, restarts

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_are_single_flight() {
    let reg = Registry::start(None).await;
    let img = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("one", &random_bytes(2 << 20, 1), 0o644)
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file("two", &random_bytes(2 << 20, 2), 0o644)
                .build(Compression::Zstd),
        )
        .layer(
            LayerBuilder::new()
                .file("three", b"3\n", 0o644)
                .build(Compression::None),
        )
        .build(Format::Oci);
    reg.pusher().push_image("test/flight", "v1", &img).await;
    let d = daemon_for(&[&reg.addr()]).await;
    let name = reg.image("test/flight:v1");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = d.client().await;
        let name = name.clone();
        tasks.push(tokio::spawn(async move { pull(&mut c, &name).await }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Ok(id) => assert_eq!(id, img.id()),
            Err(e) => panic!("concurrent pull failed: {:?}: {}", e.code(), e.message()),
        }
    }
    let mut c = d.client().await;
    assert_eq!(ids(&list(&mut c, None).await), vec![img.id().to_string()]);
    for dg in img
        .layer_digests()
        .iter()
        .chain([img.config_digest.clone()].iter())
    {
        let st = reg.settled_blob_gets("test/flight", dg).await;
        assert_eq!(
            st,
            vec![200],
            "blob {dg} must be fetched exactly once, got statuses {st:?}"
        );
    }
}

/// kill -9 while a big layer is downloading; the restarted daemon is consistent and can pull.
#[tokio::test(flavor = "multi_thread")]
async fn crash_during_download_recovers() {
    const BIG: usize = 16 << 20;
    let fake = FakeRegistry::start().await;
    let small = LayerBuilder::new()
        .file("small", b"small\n", 0o644)
        .build(Compression::Gzip);
    let big = LayerBuilder::new()
        .file("big", &random_bytes(BIG, 42), 0o644)
        .build(Compression::None);
    let img = ImageBuilder::new()
        .layer(small)
        .layer(big)
        .build(Format::Oci);
    fake.add_image("test/crash", "v1", &img);
    let big_digest = img.layers[1].digest.clone();
    fake.set_behaviour(&big_digest, BlobBehaviour::Throttle(2 << 20));
    let mut d = daemon_for(&[&fake.addr()]).await;
    let name = fake.image("test/crash:v1");
    let mut c = d.client().await;
    let pull_task = {
        let name = name.clone();
        let mut c = c.clone();
        tokio::spawn(async move { pull(&mut c, &name).await })
    };
    wait_for(
        "4 MiB of the big layer to be sent",
        Duration::from_secs(60),
        || (fake.bytes_sent(&big_digest) >= 4 << 20).then_some(()),
    )
    .await;
    d.kill9().await;
    let r = pull_task.await.unwrap();
    assert!(
        r.is_err(),
        "pull cannot succeed when the daemon was killed mid-way"
    );

    d.restart().await;
    let root = d.root();
    c = d.client().await;
    c.runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("Version after crash");
    assert!(
        list(&mut c, None).await.is_empty(),
        "half-pulled image listed after crash"
    );
    assert!(status(&mut c, &name).await.is_none());
    assert!(
        tmp_layer_entries(&root).is_empty(),
        "temp layer dirs after restart: {:?}",
        tmp_layer_entries(&root)
    );
    assert!(
        ingest_files(&root).is_empty(),
        "ingest not emptied at startup: {:?}",
        ingest_files(&root)
    );
    assert!(
        !blob_path(&root, &big_digest).exists(),
        "partial big blob committed"
    );
    assert!(
        !layer_path(&root, &img.chain_ids()[1]).exists(),
        "layer dir of the unfinished layer"
    );

    fake.set_behaviour(&big_digest, BlobBehaviour::Normal);
    assert_eq!(pull_ok(&mut c, &name).await, img.id());
    let big_file = layer_path(&root, &img.chain_ids()[1]).join("big");
    assert_eq!(
        std::fs::metadata(&big_file)
            .expect("big file unpacked")
            .len(),
        BIG as u64
    );
}

/// kill -9 while a big layer is being extracted (best effort: the window is found by polling
/// for `layers/.tmp-*`; if the daemon finishes first the crash checks still run).
#[tokio::test(flavor = "multi_thread")]
async fn crash_during_extraction_recovers() {
    let reg = Registry::start(None).await;
    let mut lb = LayerBuilder::new().dir("many", 0o755);
    for i in 0..3000 {
        lb = lb.file(&format!("many/f{i}"), format!("{i}\n").as_bytes(), 0o644);
    }
    const BIG: usize = 24 << 20;
    let big = lb
        .file("big", &random_bytes(BIG, 43), 0o644)
        .build(Compression::None);
    let img = ImageBuilder::new().layer(big).build(Format::Oci);
    reg.pusher().push_image("test/crashx", "v1", &img).await;
    let mut d = daemon_for(&[&reg.addr()]).await;
    let root = d.root();
    let name = reg.image("test/crashx:v1");
    let c = d.client().await;
    let pull_task = {
        let name = name.clone();
        let mut c = c.clone();
        tokio::spawn(async move { pull(&mut c, &name).await })
    };
    let mut caught = false;
    let start = std::time::Instant::now();
    while !pull_task.is_finished() && start.elapsed() < Duration::from_secs(120) {
        if !tmp_layer_entries(&root).is_empty() {
            d.kill9().await;
            caught = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if !caught {
        eprintln!(
            "note: did not observe layers/.tmp-* before the pull finished; crashing afterwards"
        );
        d.kill9().await;
    } else {
        eprintln!("note: killed the daemon while layers/.tmp-* existed");
    }
    let _ = pull_task.await.unwrap();
    d.restart().await;
    let mut c = d.client().await;
    c.runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("Version after crash");
    let listed = list(&mut c, None).await;
    assert!(
        tmp_layer_entries(&root).is_empty(),
        "temp layer dirs after restart: {:?}",
        tmp_layer_entries(&root)
    );
    assert!(
        ingest_files(&root).is_empty(),
        "ingest not emptied at startup"
    );
    let cid = img.chain_ids()[0].clone();
    if listed.is_empty() {
        assert!(
            !layer_path(&root, &cid).exists(),
            "layer dir of an image that is not listed survived restart"
        );
    } else {
        assert_eq!(ids(&listed), vec![img.id().to_string()]);
        assert!(
            layer_path(&root, &cid).is_dir(),
            "listed image without its layer dir"
        );
    }
    assert_eq!(pull_ok(&mut c, &name).await, img.id());
    assert_eq!(
        std::fs::metadata(layer_path(&root, &cid).join("big"))
            .unwrap()
            .len(),
        BIG as u64
    );
    assert_eq!(
        std::fs::read(layer_path(&root, &cid).join("many/f2999")).unwrap(),
        b"2999\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_persist_across_restart() {
    let reg = Registry::start(None).await;
    let a = simple_image("persist-a").user("1000").build(Format::Oci);
    let b = simple_image("persist-b").build(Format::Docker);
    reg.pusher().push_image("test/persist", "a", &a).await;
    reg.pusher().push_image("test/persist", "b", &b).await;
    let mut d = daemon_for(&[&reg.addr()]).await;
    let mut c = d.client().await;
    pull_ok(&mut c, &reg.image("test/persist:a")).await;
    pull_ok(&mut c, &reg.image("test/persist:b")).await;
    let before = status_ok(&mut c, &reg.image("test/persist:a")).await;
    let mut before_list = list(&mut c, None).await;
    before_list.sort_by(|x, y| x.id.cmp(&y.id));
    drop(c);

    let st = d.sigterm_and_wait().await;
    assert!(st.success(), "daemon exit status after SIGTERM: {st}");
    assert!(
        !d.socket().exists(),
        "socket must be removed on clean shutdown"
    );

    d.restart().await;
    let mut c = d.client().await;
    let mut after_list = list(&mut c, None).await;
    after_list.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(ids(&after_list), ids(&before_list));
    for (x, y) in before_list.iter().zip(after_list.iter()) {
        assert_eq!(x.repo_tags, y.repo_tags);
        assert_eq!(x.repo_digests, y.repo_digests);
        assert_eq!(x.size, y.size);
    }
    let after = status_ok(&mut c, &reg.image("test/persist:a")).await;
    assert_eq!(after.id, before.id);
    assert_eq!(after.uid.map(|u| u.value), Some(1000));
    // and the restarted daemon can still remove them
    remove_ok(&mut c, &reg.image("test/persist:b")).await;
    assert_eq!(ids(&list(&mut c, None).await), vec![a.id().to_string()]);
}
