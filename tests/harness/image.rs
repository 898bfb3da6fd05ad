//! In-memory OCI / Docker v2 schema2 image builder.

use super::sha256_digest;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::io::Write;

/// Fixed mtime used when a test does not care (2020-01-01T00:00:00Z).
pub const DEFAULT_MTIME: u64 = 1_577_836_800;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// gzip at level 1 (fast; for big random layers)
    GzipFast,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OCI image manifest / OCI index, OCI media types.
    Oci,
    /// Docker v2 schema2 manifest / manifest list, Docker media types.
    Docker,
}

/// Builds one layer tarball.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn header(ty: tar::EntryType, mode: u32, uid: u64, gid: u64, mtime: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

impl LayerBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Complete);
        LayerBuilder { tar }
    }

    /// Regular file owned by root, mode `mode`.
    pub fn file(self, path: &str, content: &[u8], mode: u32) -> Self {
        self.file_with(path, content, mode, 0, 0, DEFAULT_MTIME)
    }

    /// Regular file with explicit ownership and mtime.
    pub fn file_with(
        mut self,
        path: &str,
        content: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> Self {
        let mut h = header(
            tar::EntryType::Regular,
            mode,
            uid,
            gid,
            mtime,
            content.len() as u64,
        );
        self.tar
            .append_data(&mut h, path, content)
            .expect("tar file");
        self
    }

    /// Regular file preceded by a PAX header carrying `SCHILY.xattr.<name>` records.
    pub fn file_with_xattrs(
        mut self,
        path: &str,
        content: &[u8],
        mode: u32,
        xattrs: &[(&str, &[u8])],
    ) -> Self {
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.tar
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax");
        let mut h = header(
            tar::EntryType::Regular,
            mode,
            0,
            0,
            DEFAULT_MTIME,
            content.len() as u64,
        );
        self.tar
            .append_data(&mut h, path, content)
            .expect("tar file");
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.dir_with(path, mode, 0, 0, DEFAULT_MTIME)
    }

    pub fn dir_with(mut self, path: &str, mode: u32, uid: u64, gid: u64, mtime: u64) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, uid, gid, mtime, 0);
        let p = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        self.tar
            .append_data(&mut h, p, std::io::empty())
            .expect("tar dir");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, DEFAULT_MTIME, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    /// Hard link `path` -> `target` (target is an archive path of an earlier entry).
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0, 0, DEFAULT_MTIME, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("tar hardlink");
        self
    }

    /// Whiteout for `path` (writes `<dir>/.wh.<name>`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }

    /// Opaque-directory marker `<dir>/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> Self {
        let d = dir.trim_end_matches('/');
        self.file(&format!("{d}/.wh..wh..opq"), b"", 0o644)
    }

    pub fn char_device(mut self, path: &str, major: u32, minor: u32, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Char, mode, 0, 0, DEFAULT_MTIME, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .expect("tar chardev");
        self
    }

    pub fn fifo(mut self, path: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Fifo, mode, 0, 0, DEFAULT_MTIME, 0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .expect("tar fifo");
        self
    }

    /// Regular file whose header name is written verbatim (no path validation), e.g. `../x`, to
    /// build hostile archives.
    pub fn raw_file(mut self, name: &[u8], content: &[u8], mode: u32) -> Self {
        let mut h = header(
            tar::EntryType::Regular,
            mode,
            0,
            0,
            DEFAULT_MTIME,
            content.len() as u64,
        );
        {
            let gnu = h.as_gnu_mut().unwrap();
            assert!(name.len() < gnu.name.len());
            gnu.name[..name.len()].copy_from_slice(name);
        }
        h.set_cksum();
        self.tar.append(&h, content).expect("tar raw file");
        self
    }

    /// The uncompressed tar bytes.
    pub fn into_tar(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish tar")
    }

    pub fn build(self, compression: Compression) -> Layer {
        Layer::from_tar(self.into_tar(), compression)
    }
}

/// A built layer: uncompressed tar, the (compressed) blob, and their digests.
#[derive(Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    /// digest of `blob` (what the manifest references)
    pub digest: String,
    /// digest of the uncompressed tar (what the config's rootfs.diff_ids lists)
    pub diff_id: String,
    pub compression: Compression,
}

impl Layer {
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Layer {
        let blob = match compression {
            Compression::None => tar.clone(),
            Compression::Gzip | Compression::GzipFast => {
                let level = if compression == Compression::Gzip {
                    6
                } else {
                    1
                };
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                e.write_all(&tar).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(&tar[..], 3).unwrap(),
        };
        let diff_id = sha256_digest(&tar);
        let digest = if compression == Compression::None {
            diff_id.clone()
        } else {
            sha256_digest(&blob)
        };
        Layer {
            digest,
            diff_id,
            tar,
            blob,
            compression,
        }
    }

    pub fn media_type(&self, format: Format) -> &'static str {
        match (format, self.compression) {
            (Format::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (Format::Oci, Compression::Gzip | Compression::GzipFast) => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Format::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (Format::Docker, Compression::Gzip | Compression::GzipFast) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
        }
    }
}

/// Deterministic pseudo-random (incompressible) bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// OCI chain IDs for a list of diff IDs.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// Builds an image config + manifest.
#[derive(Clone)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    os: String,
    arch: String,
    variant: Option<String>,
    user: Option<String>,
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    labels: Vec<(String, String)>,
    stop_signal: Option<String>,
    created: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// linux/amd64, no layers.
    pub fn new() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
            user: None,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            entrypoint: None,
            cmd: Some(vec!["/bin/sh".into()]),
            working_dir: None,
            labels: Vec::new(),
            stop_signal: None,
            created: "2020-01-01T00:00:00Z".into(),
        }
    }
    pub fn layer(mut self, l: Layer) -> Self {
        self.layers.push(l);
        self
    }
    pub fn os(mut self, os: &str) -> Self {
        self.os = os.into();
        self
    }
    pub fn arch(mut self, arch: &str) -> Self {
        self.arch = arch.into();
        self
    }
    pub fn variant(mut self, v: &str) -> Self {
        self.variant = Some(v.into());
        self
    }
    pub fn user(mut self, u: &str) -> Self {
        self.user = Some(u.into());
        self
    }
    pub fn env(mut self, e: &str) -> Self {
        self.env.push(e.into());
        self
    }
    pub fn entrypoint(mut self, e: &[&str]) -> Self {
        self.entrypoint = Some(e.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn cmd(mut self, c: &[&str]) -> Self {
        self.cmd = Some(c.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn working_dir(mut self, w: &str) -> Self {
        self.working_dir = Some(w.into());
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
    /// Drop every `Env` entry (including the default `PATH`), e.g. before setting a custom list.
    pub fn clear_env(mut self) -> Self {
        self.env.clear();
        self
    }
    /// No `Cmd` in the config at all (the default is `["/bin/sh"]`).
    pub fn no_cmd(mut self) -> Self {
        self.cmd = None;
        self
    }
    /// `config.StopSignal`, e.g. `SIGUSR1`.
    pub fn stop_signal(mut self, s: &str) -> Self {
        self.stop_signal = Some(s.into());
        self
    }

    pub fn config_json(&self) -> Vec<u8> {
        let mut cfg = serde_json::Map::new();
        if let Some(u) = &self.user {
            cfg.insert("User".into(), json!(u));
        }
        cfg.insert("Env".into(), json!(self.env));
        if let Some(e) = &self.entrypoint {
            cfg.insert("Entrypoint".into(), json!(e));
        }
        if let Some(c) = &self.cmd {
            cfg.insert("Cmd".into(), json!(c));
        }
        if let Some(w) = &self.working_dir {
            cfg.insert("WorkingDir".into(), json!(w));
        }
        if let Some(s) = &self.stop_signal {
            cfg.insert("StopSignal".into(), json!(s));
        }
        if !self.labels.is_empty() {
            let m: serde_json::Map<String, Value> = self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            cfg.insert("Labels".into(), Value::Object(m));
        }
        let mut top = serde_json::Map::new();
        top.insert("created".into(), json!(self.created));
        top.insert("architecture".into(), json!(self.arch));
        top.insert("os".into(), json!(self.os));
        if let Some(v) = &self.variant {
            top.insert("variant".into(), json!(v));
        }
        top.insert("config".into(), Value::Object(cfg));
        top.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()}),
        );
        top.insert(
            "history".into(),
            Value::Array(
                self.layers
                    .iter()
                    .enumerate()
                    .map(|(i, _)| json!({"created": self.created, "created_by": format!("cri-lxc-test layer {i}")}))
                    .collect(),
            ),
        );
        serde_json::to_vec(&Value::Object(top)).unwrap()
    }

    pub fn build(&self, format: Format) -> BuiltImage {
        let config = self.config_json();
        let config_digest = sha256_digest(&config);
        let (mt, cfg_mt) = match format {
            Format::Oci => (OCI_MANIFEST, OCI_CONFIG),
            Format::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type(format), "size": l.blob.len(), "digest": l.digest}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": cfg_mt, "size": config.len(), "digest": config_digest},
            "layers": layers,
        });
        let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
        BuiltImage {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            manifest_media_type: mt.to_string(),
            config_digest,
            config,
            layers: self.layers.clone(),
            os: self.os.clone(),
            arch: self.arch.clone(),
            variant: self.variant.clone(),
            format,
        }
    }
}

#[derive(Clone)]
pub struct BuiltImage {
    pub config: Vec<u8>,
    /// = the image id the daemon must report
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub layers: Vec<Layer>,
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    pub format: Format,
}

impl BuiltImage {
    /// A copy whose config JSON was changed by `f` (config digest and manifest updated).
    pub fn edit_config(&self, f: impl FnOnce(&mut Value)) -> BuiltImage {
        let mut v: Value = serde_json::from_slice(&self.config).unwrap();
        f(&mut v);
        let config = serde_json::to_vec(&v).unwrap();
        let config_digest = sha256_digest(&config);
        let mut out = self.clone();
        let (cd, cl) = (config_digest.clone(), config.len());
        out.config = config;
        out.config_digest = config_digest;
        out.edit_manifest(|m| {
            m["config"]["digest"] = json!(cd);
            m["config"]["size"] = json!(cl);
        })
    }

    /// A copy whose manifest JSON was changed by `f` (manifest digest updated).
    pub fn edit_manifest(&self, f: impl FnOnce(&mut Value)) -> BuiltImage {
        let mut v: Value = serde_json::from_slice(&self.manifest).unwrap();
        f(&mut v);
        let mut out = self.clone();
        out.manifest = serde_json::to_vec_pretty(&v).unwrap();
        out.manifest_digest = sha256_digest(&out.manifest);
        out
    }

    /// The image id (`sha256:<config digest hex>`).
    pub fn id(&self) -> &str {
        &self.config_digest
    }
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids())
    }
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }
    /// Sum of config + compressed layer sizes.
    pub fn compressed_size(&self) -> usize {
        self.config.len() + self.layers.iter().map(|l| l.blob.len()).sum::<usize>()
    }
}

#[derive(Clone)]
pub struct BuiltIndex {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub media_type: String,
    pub images: Vec<BuiltImage>,
}

/// An OCI index (Format::Oci) or Docker manifest list (Format::Docker) over `images`, in order,
/// each entry's platform taken from the image.
pub fn build_index(images: &[BuiltImage], format: Format) -> BuiltIndex {
    let mt = match format {
        Format::Oci => OCI_INDEX,
        Format::Docker => DOCKER_LIST,
    };
    let manifests: Vec<Value> = images
        .iter()
        .map(|i| {
            let mut platform = json!({"architecture": i.arch, "os": i.os});
            if let Some(v) = &i.variant {
                platform["variant"] = json!(v);
            }
            json!({
                "mediaType": i.manifest_media_type,
                "size": i.manifest.len(),
                "digest": i.manifest_digest,
                "platform": platform,
            })
        })
        .collect();
    let body = serde_json::to_vec_pretty(
        &json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests}),
    )
    .unwrap();
    BuiltIndex {
        digest: sha256_digest(&body),
        manifest: body,
        media_type: mt.to_string(),
        images: images.to_vec(),
    }
}

/// A small distinct single-layer image: `/etc/<name>` containing `name`, plus `/bin/<name>`.
pub fn simple_image(name: &str) -> ImageBuilder {
    let layer = LayerBuilder::new()
        .dir("etc", 0o755)
        .file(&format!("etc/{name}"), name.as_bytes(), 0o644)
        .dir("bin", 0o755)
        .file(
            &format!("bin/{name}"),
            format!("#!/bin/sh\necho {name}\n").as_bytes(),
            0o755,
        )
        .build(Compression::Gzip);
    ImageBuilder::new().layer(layer).label("test.name", name)
}
