//! Images: pulling from registries, the content store, unpacked layers, and container rootfs mounts.
//!
//! `ImageManager` is the one entry point the CRI layer uses. Layout under the root dir:
//! `content/blobs/sha256/<hex>` (verified blobs), `content/ingest/` (downloads in progress),
//! `layers/<chain-id hex>/` (one unpacked layer, overlayfs-ready), `layers/.tmp-*` (unpacks in progress),
//! `rootfs/<container id>/{upper,work,rootfs}` (a container's overlay).
//!
//! Must not depend on grpc/ or cri/ (no CRI types here); records go through store/.

pub mod content;
pub mod manifest;
pub mod passwd;
pub mod reference;
pub mod registry;
pub mod registry_hosts;
pub mod rootfs;
pub mod unpack;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio::sync::RwLock;

use crate::config::ImageConfig;
use crate::keyed_mutex::KeyedMutex;
use crate::store::records::{ImageRecord, LayerRecord, LayerRef};
use crate::store::{Store, StoreError};
use content::{sha256_digest, sha256_hex, ContentError, ContentStore};
use manifest::{Document, ManifestError};
use reference::{parse_digest_like, ImageRef, ReferenceError};
use registry::{Credentials, FailureKind, RegistryFailure, RegistrySession};
use registry_hosts::{RegistryConfig, RegistryConfigError};
use rootfs::{RootfsError, RootfsPaths};
use unpack::{Compression, UnpackError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("invalid credentials for {image}: {reason}")]
    BadCredentials { image: String, reason: String },
    #[error("pulling {image}: {}", failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Registry { image: String, kind: FailureKind, failures: Vec<RegistryFailure> },
    #[error("pulling {image}: no registry endpoint is configured to resolve or pull it")]
    NoEndpoint { image: String },
    #[error("pulling {image}: {source}")]
    Manifest { image: String, source: ManifestError },
    #[error("pulling {image}: {source}")]
    Content { image: String, source: ContentError },
    #[error("pulling {image}: layer {layer}: {source}")]
    Unpack { image: String, layer: String, source: UnpackError },
    #[error("pulling {image}: layer {layer} unpacks to diff id {actual}, but the image config says {expected}")]
    DiffIdMismatch { image: String, layer: String, expected: String, actual: String },
    #[error("image {image} is in use by container {container}")]
    InUse { image: String, container: String },
    #[error("invalid container id {0:?} for a rootfs")]
    BadContainerId(String),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    RegistryConfig(#[from] RegistryConfigError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("background task failed: {0}")]
    Task(String),
}

/// Bytes and inodes used under one directory tree, for ImageFsInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// What a finished pull leaves behind for concurrent callers of the same reference.
struct FinishedPull {
    at: Instant,
    image_id: String,
}

pub struct ImageManager {
    root: PathBuf,
    store: Store,
    content: ContentStore,
    layers_dir: PathBuf,
    rootfs_dir: PathBuf,
    settings: ImageConfig,
    registry: RegistryConfig,
    /// Whole pulls per canonical reference: concurrent pulls of one image do the work once.
    pull_locks: KeyedMutex,
    finished: Mutex<HashMap<String, FinishedPull>>,
    /// Downloads per blob digest and unpacks per chain id, shared across different images.
    blob_locks: KeyedMutex,
    layer_locks: KeyedMutex,
    /// Pulls hold it shared; removal and garbage collection hold it exclusively, so GC never deletes a
    /// layer a pull has unpacked but not yet recorded in an image.
    gc_lock: RwLock<()>,
}

impl ImageManager {
    /// Open the image stores under `root` and clean what a crash left behind: ingest files, half-unpacked
    /// layers, layer directories without a record and records without a directory.
    pub fn open(root: &Path, store: Store, settings: ImageConfig, registry: RegistryConfig) -> Result<ImageManager, ImageError> {
        let content = ContentStore::open(root).map_err(|source| ImageError::Content { image: String::new(), source })?;
        let layers_dir = root.join("layers");
        let rootfs_dir = root.join("rootfs");
        for dir in [&layers_dir, &rootfs_dir] {
            std::fs::create_dir_all(dir).map_err(|source| ImageError::Io { path: dir.clone(), source })?;
        }
        let manager = ImageManager {
            root: root.to_path_buf(),
            store,
            content,
            layers_dir,
            rootfs_dir,
            settings,
            registry,
            pull_locks: KeyedMutex::new(),
            finished: Mutex::new(HashMap::new()),
            blob_locks: KeyedMutex::new(),
            layer_locks: KeyedMutex::new(),
            gc_lock: RwLock::new(()),
        };
        manager.recover()?;
        Ok(manager)
    }

    fn recover(&self) -> Result<(), ImageError> {
        let ingest = self.content.clear_ingest().map_err(|source| ImageError::Content { image: String::new(), source })?;
        let mut tmp = 0;
        for entry in read_dir(&self.layers_dir)? {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                remove_tree(&entry.path())?;
                tmp += 1;
            }
        }
        // A layer record whose directory vanished makes its images unusable: drop them so they re-pull.
        for layer in self.store.layers()? {
            if !self.layer_path(&layer.chain_id)?.is_dir() {
                tracing::warn!(chain_id = %layer.chain_id, "layer directory missing; dropping the record and images using it");
                for image in self.store.images()? {
                    if image.layers.iter().any(|l| l.chain_id == layer.chain_id) {
                        self.store.remove_image(&image.id)?;
                    }
                }
                self.store.remove_layer(&layer.chain_id)?;
            }
        }
        let removed = self.collect_garbage()?;
        tracing::info!(ingest_files = ingest, unfinished_unpacks = tmp, garbage = removed, "image store recovered");
        Ok(())
    }

    // ---------------------------------------------------------------- pull

    /// Pull `image` (a reference as kubelet sends it) and return its image id (the config digest).
    pub async fn pull(&self, image: &str, credentials: &Credentials) -> Result<String, ImageError> {
        let reference = ImageRef::parse(image)?;
        let auth = credentials
            .to_registry_auth()
            .map_err(|reason| ImageError::BadCredentials { image: image.to_string(), reason })?;
        let key = reference.canonical();
        let asked_at = Instant::now();
        let _pull = self.pull_locks.lock(&key).await;
        // Single flight: if a pull of the same reference finished while we waited, its result is ours.
        if let Some(id) = self.finished_since(&key, asked_at) {
            return Ok(id);
        }
        let _shared = self.gc_lock.read().await;
        let endpoints = self.registry.endpoints_for(reference.registry())?;
        let mut failures = Vec::new();
        for endpoint in endpoints.iter().filter(|e| e.can_pull && (e.can_resolve || reference.digest().is_some())) {
            let connected =
                RegistrySession::connect(endpoint, &reference, credentials, auth.clone(), self.settings.pull_progress_timeout()).await;
            let session = match connected {
                Ok(session) => session,
                Err(failure) => {
                    failures.push(failure);
                    continue;
                }
            };
            match self.pull_from(&session, &reference).await {
                Ok(id) => {
                    self.remember_finished(&key, &id);
                    return Ok(id);
                }
                Err(PullAttempt::Registry(failure)) => {
                    tracing::info!(image = %key, host = %failure.host, error = %failure.message, "registry endpoint failed");
                    failures.push(failure);
                }
                Err(PullAttempt::Fatal(err)) => return Err(err),
            }
        }
        match failures.last() {
            // The last endpoint tried is the upstream itself, whose answer decides the error code.
            Some(last) => Err(ImageError::Registry { image: key, kind: last.kind, failures }),
            None => Err(ImageError::NoEndpoint { image: key }),
        }
    }

    fn finished_since(&self, key: &str, since: Instant) -> Option<String> {
        let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        finished.get(key).filter(|f| f.at >= since).map(|f| f.image_id.clone())
    }

    fn remember_finished(&self, key: &str, id: &str) {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        // Entries only matter to callers already waiting; old ones can go.
        finished.retain(|_, f| f.at.elapsed() < Duration::from_secs(600));
        finished.insert(key.to_string(), FinishedPull { at: Instant::now(), image_id: id.to_string() });
    }

    async fn pull_from(&self, session: &RegistrySession, reference: &ImageRef) -> Result<String, PullAttempt> {
        let image = reference.canonical();
        let timeout = self.settings.pull_progress_timeout();
        let fatal_manifest = |source| PullAttempt::Fatal(ImageError::Manifest { image: image.clone(), source });
        let fatal_content = |source| PullAttempt::Fatal(ImageError::Content { image: image.clone(), source });

        let top_bytes = with_timeout(session, timeout, "manifest", session.fetch_manifest(None)).await?;
        let top_digest = sha256_digest(&top_bytes);
        if let Some(wanted) = reference.digest() {
            if wanted != top_digest {
                return Err(fatal_content(ContentError::DigestMismatch { expected: wanted.to_string(), actual: top_digest }));
            }
        }
        let (manifest, manifest_digest, manifest_bytes) = match manifest::parse_document(&top_bytes, None).map_err(fatal_manifest)? {
            Document::Manifest(m) => (m, top_digest.clone(), top_bytes.clone()),
            Document::Index { manifests, .. } => {
                let chosen = manifest::select_platform(&manifests, &manifest::host_platform()).map_err(fatal_manifest)?;
                let bytes = with_timeout(session, timeout, "manifest", session.fetch_manifest(Some(&chosen.digest))).await?;
                let actual = sha256_digest(&bytes);
                if actual != chosen.digest {
                    return Err(fatal_content(ContentError::DigestMismatch { expected: chosen.digest.clone(), actual }));
                }
                self.content.write_bytes(&top_digest, &top_bytes).map_err(fatal_content)?;
                match manifest::parse_document(&bytes, None).map_err(fatal_manifest)? {
                    Document::Manifest(m) => (m, chosen.digest.clone(), bytes),
                    Document::Index { .. } => {
                        return Err(fatal_manifest(ManifestError::UnsupportedMediaType("an index nested in an index".into())))
                    }
                }
            }
        };
        self.content.write_bytes(&manifest_digest, &manifest_bytes).map_err(fatal_content)?;

        let config_digest = manifest.config.digest.clone();
        sha256_hex(&config_digest).map_err(fatal_content)?;
        let config_bytes = if self.content.contains(&config_digest).map_err(fatal_content)? {
            self.content.read(&config_digest).map_err(fatal_content)?
        } else {
            let bytes = session.fetch_small_blob(&config_digest, timeout).await.map_err(PullAttempt::Registry)?;
            self.content.write_bytes(&config_digest, &bytes).map_err(fatal_content)?;
            bytes
        };
        let config = manifest::parse_config(&config_bytes).map_err(fatal_manifest)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(fatal_manifest(ManifestError::LayerCountMismatch {
                diff_ids: config.rootfs.diff_ids.len(),
                layers: manifest.layers.len(),
            }));
        }
        let chain_ids = manifest::chain_ids(&config.rootfs.diff_ids);
        let layer_refs: Vec<LayerRef> = manifest
            .layers
            .iter()
            .zip(config.rootfs.diff_ids.iter().zip(&chain_ids))
            .map(|(desc, (diff_id, chain_id))| LayerRef {
                blob_digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                blob_size: u64::try_from(desc.size).unwrap_or(0),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
            })
            .collect();

        // Layers are independent directories, so they download and unpack in parallel.
        let mut layer_jobs = Vec::with_capacity(layer_refs.len());
        for layer in &layer_refs {
            layer_jobs.push(self.ensure_layer(session, &image, layer));
        }
        // Every job runs to its end even when one fails: dropping a sibling mid-unpack would leave its
        // temp dir (and a blocking unpack task writing into it) behind.
        let outcomes: Vec<Result<(), PullAttempt>> =
            futures::stream::iter(layer_jobs).buffer_unordered(self.settings.max_concurrent_downloads).collect().await;
        outcomes.into_iter().collect::<Result<Vec<()>, PullAttempt>>()?;

        let size = layer_refs.iter().map(|l| l.blob_size).sum::<u64>() + config_bytes.len() as u64 + manifest_bytes.len() as u64;
        let record = ImageRecord {
            schema_version: crate::store::RECORD_SCHEMA_VERSION,
            id: config_digest.clone(),
            repo_tags: reference.repo_tag().into_iter().collect(),
            repo_digests: vec![reference.repo_digest(&top_digest)],
            manifest_digest,
            manifest_media_type: manifest.media_type.clone(),
            layers: layer_refs,
            size,
            config_json: config_bytes,
            pulled_at_unix_nanos: unix_nanos(SystemTime::now()),
            pinned: false,
        };
        self.store.put_image(&record).map_err(|e| PullAttempt::Fatal(e.into()))?;
        tracing::info!(image = %image, id = %config_digest, host = session.host(), "pulled");
        Ok(config_digest)
    }

    /// Make sure one layer is unpacked under `layers/<chain id>`: download its blob if needed, unpack into a
    /// temp dir, check the diff id, rename into place, record it.
    async fn ensure_layer(&self, session: &RegistrySession, image: &str, layer: &LayerRef) -> Result<(), PullAttempt> {
        let fatal = |e: ImageError| PullAttempt::Fatal(e);
        let content_err = |source| PullAttempt::Fatal(ImageError::Content { image: image.to_string(), source });
        let _unpacking = self.layer_locks.lock(&layer.chain_id).await;
        let final_dir = self.layer_path(&layer.chain_id).map_err(fatal)?;
        if final_dir.is_dir() && self.store.layer(&layer.chain_id).map_err(|e| fatal(e.into()))?.is_some() {
            return Ok(());
        }
        let compression = Compression::from_media_type(&layer.media_type)
            .map_err(|source| fatal(ImageError::Unpack { image: image.to_string(), layer: layer.blob_digest.clone(), source }))?;
        let blob = self.ensure_blob(session, layer).await?;

        let hex = sha256_hex(&layer.chain_id).map_err(content_err)?.to_string();
        let temp = self.layers_dir.join(format!(".tmp-{hex}-{}", std::process::id()));
        remove_tree(&temp).map_err(fatal)?;
        std::fs::create_dir(&temp).map_err(|source| fatal(ImageError::Io { path: temp.clone(), source }))?;
        // Removes the temp dir if this future is dropped (a cancelled PullImage) or fails.
        let mut temp_guard = TempDirGuard(Some(temp.clone()));
        let temp_for_task = temp.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&blob).map_err(UnpackError::from)?;
            unpack::unpack_layer(std::io::BufReader::with_capacity(1 << 20, file), compression, &temp_for_task)
        })
        .await
        .map_err(|e| fatal(ImageError::Task(e.to_string())))?;
        let stats = unpacked
            .map_err(|source| fatal(ImageError::Unpack { image: image.to_string(), layer: layer.blob_digest.clone(), source }))?;
        if stats.diff_id != layer.diff_id {
            return Err(fatal(ImageError::DiffIdMismatch {
                image: image.to_string(),
                layer: layer.blob_digest.clone(),
                expected: layer.diff_id.clone(),
                actual: stats.diff_id,
            }));
        }
        remove_tree(&final_dir).map_err(fatal)?;
        std::fs::rename(&temp, &final_dir).map_err(|source| fatal(ImageError::Io { path: final_dir.clone(), source }))?;
        temp_guard.0 = None;
        let record = LayerRecord {
            schema_version: crate::store::RECORD_SCHEMA_VERSION,
            chain_id: layer.chain_id.clone(),
            diff_id: layer.diff_id.clone(),
            unpacked_bytes: stats.bytes,
            entries: stats.entries,
        };
        self.store.put_layer(&record).map_err(|e| fatal(e.into()))?;
        Ok(())
    }

    /// The verified blob of a layer in the content store, downloading it once even when several pulls
    /// want it at the same time.
    async fn ensure_blob(&self, session: &RegistrySession, layer: &LayerRef) -> Result<PathBuf, PullAttempt> {
        let content_err = |source| PullAttempt::Fatal(ImageError::Content { image: layer.blob_digest.clone(), source });
        let _downloading = self.blob_locks.lock(&layer.blob_digest).await;
        let path = self.content.blob_path(&layer.blob_digest).map_err(content_err)?;
        if path.is_file() {
            return Ok(path);
        }
        let timeout = self.settings.pull_progress_timeout();
        let mut stream = with_timeout(session, timeout, "blob", session.blob_stream(&layer.blob_digest)).await?;
        let mut writer = self.content.writer(&layer.blob_digest).map_err(content_err)?;
        while let Some(chunk) = session.next_chunk(&mut stream, &layer.blob_digest, timeout).await.map_err(PullAttempt::Registry)? {
            writer.write(&chunk).map_err(content_err)?;
        }
        let expected_size = (layer.blob_size > 0).then_some(layer.blob_size);
        writer.commit(expected_size).map_err(content_err)
    }

    // ---------------------------------------------------------------- queries

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.store.images()?)
    }

    /// Find an image by id (`sha256:<hex>`, bare hex, or a unique hex prefix of at least 12 characters as
    /// crictl shows), by repo tag, or by repo digest. `Ok(None)` when nothing matches.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        if let Some(id) = parse_digest_like(name) {
            if let Some(image) = self.store.image(&id)? {
                return Ok(Some(image));
            }
        }
        let short = name.strip_prefix("sha256:").unwrap_or(name);
        if short.len() >= 12 && short.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let prefix = format!("sha256:{short}");
            let matches: Vec<ImageRecord> = self.store.images()?.into_iter().filter(|i| i.id.starts_with(&prefix)).collect();
            if matches.len() == 1 {
                return Ok(matches.into_iter().next());
            }
        }
        let reference = match ImageRef::parse(name) {
            Ok(r) => r,
            // Not an id we hold and not a valid reference either.
            Err(e) if parse_digest_like(name).is_some() || short.len() >= 12 && short.bytes().all(|b| b.is_ascii_hexdigit()) => {
                tracing::debug!(%name, error = %e, "no image with this id");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let key = match reference.digest() {
            Some(d) => reference.repo_digest(d),
            None => match reference.repo_tag() {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        match self.store.image_id_by_name(&key)? {
            Some(id) => Ok(self.store.image(&id)?),
            None => Ok(None),
        }
    }

    // ---------------------------------------------------------------- removal

    /// Remove an image by id, tag or digest (idempotent). Removing one tag of an image that has other tags
    /// only untags it; removing its last tag, its digest or its id removes the image, and then blobs and
    /// layer directories no remaining image uses are deleted. `user_of` names a container still using
    /// an image id; such an image is not deleted (`InUse`). Returns whether anything was removed.
    pub async fn remove(&self, name: &str, user_of: &(dyn Fn(&str) -> Option<String> + Sync)) -> Result<bool, ImageError> {
        let _exclusive = self.gc_lock.write().await;
        let Some(image) = self.resolve(name)? else {
            return Ok(false);
        };
        let by_tag = ImageRef::parse(name).ok().and_then(|r| if r.digest().is_none() { r.repo_tag() } else { None });
        match by_tag {
            Some(tag) if image.repo_tags.len() > 1 && image.repo_tags.contains(&tag) => {
                self.store.remove_image_name(&tag)?;
                tracing::info!(image = %image.id, %tag, "untagged");
            }
            _ => {
                if let Some(user) = user_of(&image.id) {
                    return Err(ImageError::InUse { image: image.id.clone(), container: user });
                }
                self.store.remove_image(&image.id)?;
                let removed = self.collect_garbage()?;
                tracing::info!(image = %image.id, garbage = removed, "removed image");
            }
        }
        Ok(true)
    }

    /// Delete blobs and layer directories (and layer records) no image references. Caller holds the GC
    /// lock exclusively, or runs before any pull can start.
    fn collect_garbage(&self) -> Result<usize, ImageError> {
        let images = self.store.images()?;
        let mut blobs: HashSet<String> = HashSet::new();
        let mut chains: HashSet<String> = HashSet::new();
        for image in &images {
            blobs.insert(image.id.clone());
            blobs.insert(image.manifest_digest.clone());
            for d in &image.repo_digests {
                if let Some((_, digest)) = d.rsplit_once('@') {
                    blobs.insert(digest.to_string());
                }
            }
            for layer in &image.layers {
                blobs.insert(layer.blob_digest.clone());
                chains.insert(layer.chain_id.clone());
            }
        }
        let content_err = |source| ImageError::Content { image: String::new(), source };
        let mut removed = 0;
        for digest in self.content.list().map_err(content_err)? {
            if !blobs.contains(&digest) {
                self.content.remove(&digest).map_err(content_err)?;
                removed += 1;
            }
        }
        for layer in self.store.layers()? {
            if !chains.contains(&layer.chain_id) {
                // Record first: a crash between the two leaves a directory without record, which the
                // next start-up removes; never a record without its directory.
                self.store.remove_layer(&layer.chain_id)?;
            }
        }
        let recorded: HashSet<String> = self.store.layers()?.into_iter().map(|l| l.chain_id).collect();
        for entry in read_dir(&self.layers_dir)? {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(".tmp-") {
                continue;
            }
            let chain_id = format!("sha256:{name}");
            if !recorded.contains(&chain_id) {
                remove_tree(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    // ---------------------------------------------------------------- filesystems and rootfs

    pub fn layer_path(&self, chain_id: &str) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex(chain_id).map_err(|source| ImageError::Content { image: String::new(), source })?;
        Ok(self.layers_dir.join(hex))
    }

    /// Where image data lives (blobs and unpacked layers) and where container layers live.
    pub fn image_fs_root(&self) -> &Path {
        &self.root
    }

    pub fn container_fs_root(&self) -> &Path {
        &self.rootfs_dir
    }

    /// Usage of image content (blobs + layers) and of container writable layers.
    pub async fn fs_usage(&self) -> Result<(FsUsage, FsUsage), ImageError> {
        let dirs = [self.root.join("content"), self.layers_dir.clone(), self.rootfs_dir.clone()];
        let usage = tokio::task::spawn_blocking(move || dirs.iter().map(|d| tree_usage(d)).collect::<Vec<_>>())
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?;
        let image = FsUsage { bytes: usage[0].bytes + usage[1].bytes, inodes: usage[0].inodes + usage[1].inodes };
        Ok((image, usage[2]))
    }

    /// Mount a container's rootfs: the image's layers (topmost first) as overlay lowerdirs, with a
    /// per-container upper and work dir under `rootfs/<container_id>/`.
    pub fn prepare_rootfs(&self, image: &str, container_id: &str) -> Result<RootfsPaths, ImageError> {
        let dir = self.container_dir(container_id)?;
        let record = self.resolve(image)?.ok_or_else(|| ImageError::NotFound(image.to_string()))?;
        let lowers = record
            .layers
            .iter()
            .rev()
            .map(|l| self.layer_path(&l.chain_id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rootfs::mount_rootfs(&lowers, &dir)?)
    }

    /// [`prepare_rootfs`](Self::prepare_rootfs) for a container in a user namespace: the layers are
    /// idmapped by `idmap_bind(layer, mount_point)` and the upper root is owned by `upper_owner`
    /// (see rootfs::mount_rootfs_idmapped). Released by `release_rootfs` like any other.
    pub fn prepare_rootfs_idmapped(
        &self,
        image: &str,
        container_id: &str,
        idmap_bind: &dyn Fn(&Path, &Path) -> std::io::Result<()>,
        upper_owner: (u32, u32),
    ) -> Result<RootfsPaths, ImageError> {
        let dir = self.container_dir(container_id)?;
        let record = self.resolve(image)?.ok_or_else(|| ImageError::NotFound(image.to_string()))?;
        let lowers = record.layers.iter().rev().map(|l| self.layer_path(&l.chain_id)).collect::<Result<Vec<_>, _>>()?;
        Ok(rootfs::mount_rootfs_idmapped(&lowers, &dir, idmap_bind, upper_owner)?)
    }

    /// Where unpacked layers live (what a user-namespaced container's rootfs idmaps).
    pub fn layers_root(&self) -> &Path {
        &self.layers_dir
    }

    /// Unmount and delete a container's rootfs; idempotent.
    pub fn release_rootfs(&self, container_id: &str) -> Result<(), ImageError> {
        Ok(rootfs::release_rootfs(&self.container_dir(container_id)?)?)
    }

    /// Bytes and inodes of a container's writable layer (its overlay upper dir): ContainerStats'
    /// `writable_layer`. Walks the tree; call from a blocking context.
    pub fn writable_layer_usage(&self, container_id: &str) -> Result<FsUsage, ImageError> {
        Ok(tree_usage(&rootfs::RootfsPaths::under(&self.container_dir(container_id)?).upper))
    }

    fn container_dir(&self, container_id: &str) -> Result<PathBuf, ImageError> {
        let valid = !container_id.is_empty()
            && container_id.len() <= 128
            && container_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ImageError::BadContainerId(container_id.to_string()));
        }
        Ok(self.rootfs_dir.join(container_id))
    }
}

/// Deletes a temp directory when dropped while still holding it.
struct TempDirGuard(Option<PathBuf>);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A failure of one endpoint (worth trying the next) or of the pull itself.
enum PullAttempt {
    Registry(RegistryFailure),
    Fatal(ImageError),
}

async fn with_timeout<T>(
    session: &RegistrySession,
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, RegistryFailure>>,
) -> Result<T, PullAttempt> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(PullAttempt::Registry),
        Err(_) => Err(PullAttempt::Registry(RegistryFailure {
            host: session.host().to_string(),
            kind: FailureKind::Unreachable,
            message: format!("no answer for the {what} request in {}s (pull progress timeout)", timeout.as_secs()),
        })),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, ImageError> {
    let io = |source| ImageError::Io { path: dir.to_path_buf(), source };
    std::fs::read_dir(dir).map_err(io)?.collect::<Result<Vec<_>, _>>().map_err(io)
}

fn remove_tree(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::Io { path: path.to_path_buf(), source: e }),
        _ => Ok(()),
    }
}

/// Bytes (allocated blocks) and inodes under `dir`, not following symlinks or crossing into mounts'
/// contents twice (hard links counted once).
fn tree_usage(dir: &Path) -> FsUsage {
    use std::os::unix::fs::MetadataExt;
    let mut usage = FsUsage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let Ok(root_meta) = std::fs::symlink_metadata(dir) else {
        return usage;
    };
    let dev = root_meta.dev();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        // Stay on the filesystem we measure (container rootfs mounts are counted via their upper dir).
        if meta.dev() != dev {
            continue;
        }
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
            continue;
        }
        usage.inodes += 1;
        usage.bytes += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    usage
}

pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)).unwrap_or(0)
}

// Arc is used by callers that share the manager across tasks.
pub type SharedImageManager = Arc<ImageManager>;
