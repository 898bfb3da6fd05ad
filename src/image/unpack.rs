//! Applying one OCI image layer into its own directory, in the form overlayfs expects of a
//! lowerdir.
//!
//! Owns: the layer media type → compression mapping, decompression, the diff_id (sha256 of the
//! uncompressed tar stream), dispatch of every tar entry type, conversion of OCI whiteouts to
//! the overlayfs representation, and keeping every write inside the target directory.
//!
//! Must not depend on: any other module of this crate (registry client, content store, image
//! records, runtime). Only std and the `tar`, `flate2`, `zstd`, `xattr`, `nix`, `libc`, `sha2`,
//! `hex`, `thiserror` and `tracing` crates, so it can be reasoned about and tested on its own.
//!
//! Model: every layer is unpacked ONCE, into an empty directory of its own (one per chain id),
//! and the directories are later stacked as overlayfs lowerdirs. So this is not "apply a diff
//! onto a rootfs" (the model of image-spec `layer.md` §"Applying Changesets"); it is the
//! conversion containerd's overlay snapshotter performs:
//!
//! * image-spec layer.md §"Whiteouts": a file `.wh.<name>` means `<name>` was deleted in a lower
//!   layer. overlayfs (Documentation/filesystems/overlayfs.rst §"whiteouts and opaque
//!   directories") represents that as "a character device with 0/0 device number" named
//!   `<name>`. The `.wh.` file itself is never created.
//! * image-spec §"Opaque Whiteout": `.wh..wh..opq` in a directory hides all siblings from lower
//!   layers. overlayfs: "A directory is made opaque by setting the xattr
//!   `trusted.overlay.opaque` to `y`".
//!
//! Path safety policy (chosen, and tested below):
//! * Entry names and hard-link targets are relative to the layer root: a leading `/` is
//!   stripped, `.` components are dropped, and any `..` component rejects the whole layer
//!   (`UnpackError::UnsafePath`); image tools never produce `..`, so an archive that contains it
//!   is malformed or hostile and unpacking it partly would hide that.
//! * Symlinks met in the PARENT components of an entry (e.g. `evil -> /etc` then `evil/passwd`)
//!   are resolved chroot-like, as if the layer root were `/`: absolute targets restart at the
//!   layer root, `..` is clamped at the layer root, at most 40 hops (Linux `MAXSYMLINKS`). This is
//!   what containerd does (`fs.RootPath`), it keeps legitimate archives such as `lib -> usr/lib`
//!   + `lib/x` working, and by construction no write can land outside the target.
//! * The FINAL component is never followed: an existing node there is removed (unlink does not
//!   follow) before the new one is created, files are opened `O_CREAT|O_EXCL|O_NOFOLLOW`, and
//!   ownership/times/xattrs use the l*/`AT_SYMLINK_NOFOLLOW` variants.
//! * Path-based calls are safe here because the target directory is private to this unpack
//!   until it returns (the caller renames/registers it only afterwards): nobody can swap a
//!   component between our check and our use.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

/// OCI whiteout prefix (image-spec layer.md §"Whiteouts").
const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI opaque-whiteout marker (image-spec layer.md §"Opaque Whiteout").
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// overlayfs marks opaque directories with this xattr, value "y" (overlayfs.rst).
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs keeps its private metadata under this xattr prefix.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
/// PAX record prefix for extended attributes, as written by GNU tar, Docker and BuildKit.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Same bound as the kernel's MAXSYMLINKS for one path walk.
const MAX_SYMLINK_HOPS: u32 = 40;
/// Mode of directories the archive implies but does not list (`a/b` without `a/`); 0755 is what
/// `mkdir -p`, containerd and Docker use.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// zstd (RFC 8478), possibly several frames.
    Zstd,
}

impl Compression {
    /// From an OCI/Docker layer media type: application/vnd.oci.image.layer.v1.tar(+gzip|+zstd),
    /// the nondistributable variants, application/vnd.docker.image.rootfs.diff.tar.gzip,
    /// application/vnd.docker.image.rootfs.foreign.diff.tar.gzip. Unknown →
    /// UnpackError::UnsupportedMediaType.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnpackError> {
        // image-spec media-types.md lists the layer types. layer.md §"Non-Distributable
        // Layers": deprecated, but "Implementations are expected to support preexisting images
        // with non-distributable layers". Docker image manifest v2 schema 2 names its layers
        // rootfs.diff.tar.gzip and, for foreign (Windows base) layers,
        // rootfs.foreign.diff.tar.gzip.
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            other => Err(UnpackError::UnsupportedMediaType {
                media_type: other.to_owned(),
            }),
        }
    }
}

/// What one `unpack_layer` call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// `sha256:<hex>` of the UNCOMPRESSED tar stream (image-spec config.md `rootfs.diff_ids`),
    /// for the caller to compare with the image config.
    pub diff_id: String,
    /// Number of archive members processed (after long-name/PAX headers were merged into the
    /// member they describe), including whiteout markers.
    pub entries: u64,
    /// Length in bytes of the uncompressed tar stream, i.e. what `diff_id` was computed over.
    pub bytes: u64,
}

/// Errors of this module. Every variant names what it was working on.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The media type is not a layer type this module can decompress.
    #[error("unsupported layer media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },

    /// `target` is not an existing, empty directory.
    #[error("unpack target {path}: {reason}")]
    BadTarget { path: PathBuf, reason: &'static str },

    /// Reading, decompressing or parsing the stream failed (truncated blob, corrupt gzip/zstd,
    /// bad tar header checksum, ...). `entry` is the member being read, or a placeholder when
    /// the failure was between members.
    #[error("reading layer stream at {entry}: {source}")]
    Read {
        entry: String,
        #[source]
        source: io::Error,
    },

    /// An entry or hard-link name contains `..` or otherwise cannot be kept inside the target.
    #[error("layer entry {entry:?}: unsafe path: {reason}")]
    UnsafePath { entry: String, reason: &'static str },

    /// A header field cannot be interpreted (bad number, missing link name, ...).
    #[error("layer entry {entry:?}: malformed header: {reason}")]
    BadHeader { entry: String, reason: String },

    /// A tar entry type with no filesystem meaning here (GNU volume/multivolume, unknown).
    #[error("layer entry {entry:?}: unsupported tar entry type {kind:?}")]
    UnsupportedEntryType { entry: String, kind: char },

    /// A hard link names a file that no earlier entry of this layer created.
    #[error("layer entry {entry:?}: hard link target {link:?} does not exist in this layer")]
    MissingLinkTarget { entry: String, link: String },

    /// A hard link names a directory (link(2) cannot do that).
    #[error("layer entry {entry:?}: hard link target {link:?} is a directory")]
    LinkToDirectory { entry: String, link: String },

    /// A parent component of an entry exists in this layer as a non-directory.
    #[error("layer entry {entry:?}: {path} exists and is not a directory")]
    NotADirectory { entry: String, path: PathBuf },

    /// Too many symlinks (a loop) in the parent components of an entry.
    #[error("layer entry {entry:?}: more than {MAX_SYMLINK_HOPS} symlinks while resolving {path}")]
    SymlinkLoop { entry: String, path: PathBuf },

    /// The caller could not open or read the blob before handing it over. `From<io::Error>`
    /// exists for the caller's convenience (`File::open(..).map_err(UnpackError::from)`); this
    /// module itself always attaches entry/path context instead.
    #[error("opening layer blob: {0}")]
    Blob(#[from] io::Error),

    /// A filesystem operation on the target failed.
    #[error("layer entry {entry:?}: {op} {path}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Unpack the (possibly compressed) layer read from `blob` into `target`, which exists and is
/// empty.
///
/// On error the target is left partly written; the caller discards it (it was never
/// registered, and the next attempt must start from an empty directory again).
pub fn unpack_layer(
    blob: impl Read,
    compression: Compression,
    target: &Path,
) -> Result<UnpackStats, UnpackError> {
    check_target(target)?;
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(blob),
        // A gzip blob may consist of several members (RFC 1952 §2.2); gunzip reads them all.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(blob).map_err(|source| {
                UnpackError::Read {
                    entry: "<zstd header>".to_owned(),
                    source,
                }
            })?)
        }
    };
    let mut stream = DigestingReader {
        inner: decoder,
        hasher: Sha256::new(),
        bytes: 0,
    };

    let mut extractor = Extractor {
        root: target.to_path_buf(),
        deferred_dirs: Vec::new(),
    };
    let mut entries = 0u64;
    {
        let mut archive = tar::Archive::new(&mut stream);
        let members = archive.entries().map_err(|source| UnpackError::Read {
            entry: "<archive start>".to_owned(),
            source,
        })?;
        for member in members {
            let mut member = member.map_err(|source| UnpackError::Read {
                entry: format!("<header after {entries} entries>"),
                source,
            })?;
            entries += 1;
            extractor.apply(&mut member)?;
        }
    }
    // The tar reader stops at the end-of-archive marker, but the diff_id covers the whole
    // uncompressed stream (image-spec config.md: "digest over the layer's uncompressed tar
    // archive"), including any trailing zero padding.
    io::copy(&mut stream, &mut io::sink()).map_err(|source| UnpackError::Read {
        entry: "<after end-of-archive>".to_owned(),
        source,
    })?;
    extractor.finish()?;

    Ok(UnpackStats {
        diff_id: format!("sha256:{}", hex::encode(stream.hasher.finalize())),
        entries,
        bytes: stream.bytes,
    })
}

fn check_target(target: &Path) -> Result<(), UnpackError> {
    let io_err = |source| UnpackError::Io {
        entry: String::new(),
        op: "inspect target",
        path: target.to_path_buf(),
        source,
    };
    let meta = fs::metadata(target).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(UnpackError::BadTarget {
            path: target.to_path_buf(),
            reason: "not a directory",
        });
    }
    // An unpack into a used directory would merge two layers' worth of files and whiteouts;
    // refusing catches a retry that forgot to clean up.
    if fs::read_dir(target).map_err(io_err)?.next().is_some() {
        return Err(UnpackError::BadTarget {
            path: target.to_path_buf(),
            reason: "not empty",
        });
    }
    Ok(())
}

/// Tee: hashes and counts every byte the tar parser pulls out of the decompressor.
struct DigestingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Metadata of one member, taken from the header and its PAX records.
struct EntryMeta {
    uid: u32,
    gid: u32,
    /// Permission bits incl. setuid/setgid/sticky; file-type bits stripped.
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// What `resolve_dir` does with a directory that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Create it (0755): archives may omit parent directory entries.
    Create,
    /// Report it: hard-link targets must already have been extracted.
    Absent,
}

/// A directory whose mode and times are applied after the last entry, because writing entries
/// into a directory updates its mtime, and a read-only mode would get in the way of writing.
struct DeferredDir {
    entry: String,
    path: PathBuf,
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
}

struct Extractor {
    root: PathBuf,
    deferred_dirs: Vec<DeferredDir>,
}

impl Extractor {
    fn apply<R: Read>(&mut self, member: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_name = member.path_bytes().into_owned();
        let entry = String::from_utf8_lossy(&raw_name).into_owned();
        let kind = member.header().entry_type();

        if kind.is_pax_global_extensions() {
            // A global PAX header describes the archive, not a file. Layer producers don't use
            // it for file metadata (git-archive stores a comment in it); ignore it.
            debug!(entry = %entry, "skipping PAX global header");
            return Ok(());
        }

        let components = relative_components(&raw_name, &entry)?;
        let meta = read_meta(member, &entry)?;

        let Some((name, parent)) = components.split_last() else {
            return self.apply_root(kind, &meta, &entry);
        };

        if let Some(stripped) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.apply_whiteout(parent, name, OsStr::from_bytes(stripped), &entry);
        }

        let path = self.ensure_dir(parent, &entry)?.join(name);

        use tar::EntryType as T;
        match kind {
            // Pre-POSIX (v7) archives mark directories only by a trailing slash on a member of
            // type NUL; Go's archive/tar (Docker, containerd) reads them as directories too.
            T::Regular if member.header().as_old().linkflag[0] == 0 && raw_name.ends_with(b"/") => {
                self.create_dir(&path, &meta, &entry)
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                // Contiguous files are regular files for every reader (POSIX ustar); GNU sparse
                // members are expanded by the tar crate's reader (holes read as zeros).
                self.create_file(member, &path, &meta, &entry)
            }
            T::Directory => self.create_dir(&path, &meta, &entry),
            T::Symlink => self.create_symlink(member, &path, &meta, &entry),
            T::Link => self.create_hardlink(member, &path, &entry),
            T::Char | T::Block | T::Fifo => self.create_node(member, kind, &path, &meta, &entry),
            other => Err(UnpackError::UnsupportedEntryType {
                entry,
                kind: char::from(other.as_byte()),
            }),
        }
    }

    /// A member naming the layer root itself (`./`, `/`): only a directory makes sense there.
    fn apply_root(
        &mut self,
        kind: tar::EntryType,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), UnpackError> {
        if kind != tar::EntryType::Directory {
            return Err(unsafe_path(
                entry,
                "a non-directory entry names the layer root",
            ));
        }
        let root = self.root.clone();
        self.set_owner_and_xattrs(&root, meta, false, entry)?;
        self.defer_dir(root, meta, entry);
        Ok(())
    }

    fn apply_whiteout(
        &mut self,
        parent: &[OsString],
        marker: &OsStr,
        hidden: &OsStr,
        entry: &str,
    ) -> Result<(), UnpackError> {
        let dir = self.ensure_dir(parent, entry)?;

        if marker == OPAQUE_MARKER {
            // image-spec "Opaque Whiteout" → overlayfs opaque directory.
            return set_opaque(&dir, entry);
        }
        if hidden.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // image-spec: the `.wh..wh.` prefix is reserved; besides `.wh..wh..opq` only AUFS
            // bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`) uses it, which means nothing here.
            debug!(entry, "skipping reserved .wh..wh. entry");
            return Ok(());
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            warn!(entry, "skipping whiteout that names no file");
            return Ok(());
        }

        let path = dir.join(hidden);
        match fs::symlink_metadata(&path) {
            Ok(existing) => {
                // image-spec: "Whiteout files MUST only apply to resources in lower/parent
                // layers. Files that are present in the same layer as a whiteout file can only
                // be hidden by whiteout files in subsequent layers." So the entry of this layer
                // stays. It already hides a lower non-directory; a directory, though, would
                // MERGE with the lower one the whiteout deleted, so it must become opaque.
                if existing.is_dir() {
                    set_opaque(&path, entry)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // overlayfs.rst: "A whiteout is created as a character device with 0/0 device
                // number". Mode 0 like the whiteouts overlayfs itself creates.
                mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|errno| io_error(entry, "mknod whiteout", &path, errno.into()))
            }
            Err(e) => Err(io_error(entry, "lstat", &path, e)),
        }
    }

    fn create_file<R: Read>(
        &mut self,
        member: &mut tar::Entry<'_, R>,
        path: &Path,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), UnpackError> {
        remove_existing(path, entry)?;
        // O_EXCL|O_NOFOLLOW: never write through whatever might be at `path`.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io_error(entry, "create file", path, e))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match member.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::Read {
                        entry: entry.to_owned(),
                        source,
                    });
                }
            };
            file.write_all(&buf[..n])
                .map_err(|e| io_error(entry, "write file", path, e))?;
        }
        drop(file);
        self.set_owner_and_xattrs(path, meta, false, entry)?;
        set_mode(path, meta.mode, entry)?;
        set_times(path, meta, entry)
    }

    fn create_dir(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), UnpackError> {
        match fs::symlink_metadata(path) {
            // image-spec layer.md §"Changeset over existing files": "If the entry and the
            // existing path are both directories, then the existing path's attributes MUST be
            // replaced by those of the entry". Contents stay (a child may have implied it).
            Ok(existing) if existing.is_dir() => {}
            Ok(existing) => {
                let was_whiteout = is_whiteout(&existing);
                fs::remove_file(path).map_err(|e| io_error(entry, "remove", path, e))?;
                mkdir(path, entry)?;
                if was_whiteout {
                    // `.wh.d` then `d/` in one layer: d was deleted from the lower layers and
                    // recreated here. overlayfs would merge the new d with the lower one and
                    // bring its old entries back; opaque keeps the deletion.
                    set_opaque(path, entry)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir(path, entry)?,
            Err(e) => return Err(io_error(entry, "lstat", path, e)),
        }
        self.set_owner_and_xattrs(path, meta, false, entry)?;
        self.defer_dir(path.to_path_buf(), meta, entry);
        Ok(())
    }

    fn create_symlink<R: Read>(
        &mut self,
        member: &mut tar::Entry<'_, R>,
        path: &Path,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), UnpackError> {
        let target = member
            .link_name_bytes()
            .map(|b| OsString::from_vec(b.into_owned()))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad_header(entry, "symlink without a target"))?;
        remove_existing(path, entry)?;
        // Stored verbatim: a symlink is data. Its target is interpreted later, inside the
        // container (or chroot-like by resolve_dir), never by following it now.
        std::os::unix::fs::symlink(&target, path)
            .map_err(|e| io_error(entry, "symlink", path, e))?;
        self.set_owner_and_xattrs(path, meta, true, entry)?;
        // No chmod: symlink permissions are meaningless on Linux and cannot be changed.
        set_times(path, meta, entry)
    }

    fn create_hardlink<R: Read>(
        &mut self,
        member: &mut tar::Entry<'_, R>,
        path: &Path,
        entry: &str,
    ) -> Result<(), UnpackError> {
        let raw_link = member
            .link_name_bytes()
            .map(|b| b.into_owned())
            .ok_or_else(|| bad_header(entry, "hard link without a target"))?;
        let link = String::from_utf8_lossy(&raw_link).into_owned();
        // A hard link target is a member name of this same archive: same rules as entry names,
        // resolved the same chroot-like way, and never created on demand (image-spec layer.md
        // §"Hardlinks": "Extracting a layer with hardlink references to files outside of the
        // layer may fail" — here it does, with MissingLinkTarget).
        let components = relative_components(&raw_link, entry)?;
        let Some((name, parent)) = components.split_last() else {
            return Err(unsafe_path(entry, "hard link to the layer root"));
        };
        let missing = || UnpackError::MissingLinkTarget {
            entry: entry.to_owned(),
            link: link.clone(),
        };
        let dir = self
            .resolve_dir(parent, Missing::Absent, entry)?
            .ok_or_else(missing)?;
        let source = dir.join(name);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_dir() => {
                return Err(UnpackError::LinkToDirectory {
                    entry: entry.to_owned(),
                    link,
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(io_error(entry, "lstat", &source, e)),
        }
        if source == path {
            // `a` hard-linked to itself: it is already what the entry asks for.
            return Ok(());
        }
        remove_existing(path, entry)?;
        // std's hard_link is linkat(..., 0): a symlink source is linked as the symlink itself
        // (what GNU tar does), never followed out of the layer.
        fs::hard_link(&source, path).map_err(|e| io_error(entry, "link", path, e))?;
        // Ownership, mode and times belong to the shared inode, set by the entry that created
        // it; a link header carries nothing that should override them.
        Ok(())
    }

    fn create_node<R: Read>(
        &mut self,
        member: &mut tar::Entry<'_, R>,
        kind: tar::EntryType,
        path: &Path,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), UnpackError> {
        let (sflag, dev) = match kind {
            tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
            _ => {
                let header = member.header();
                let major = header
                    .device_major()
                    .map_err(|e| bad_header(entry, &format!("device major: {e}")))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(|e| bad_header(entry, &format!("device minor: {e}")))?
                    .unwrap_or(0);
                let sflag = if kind == tar::EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (sflag, makedev(u64::from(major), u64::from(minor)))
            }
        };
        remove_existing(path, entry)?;
        mknod(path, sflag, Mode::empty(), dev)
            .map_err(|errno| io_error(entry, "mknod", path, errno.into()))?;
        self.set_owner_and_xattrs(path, meta, false, entry)?;
        set_mode(path, meta.mode, entry)?;
        set_times(path, meta, entry)
    }

    /// Ownership first: chown(2) clears setuid/setgid and `security.capability`, so mode and
    /// xattrs must come after it.
    fn set_owner_and_xattrs(
        &self,
        path: &Path,
        meta: &EntryMeta,
        is_symlink: bool,
        entry: &str,
    ) -> Result<(), UnpackError> {
        // Numeric ids only: image-spec config.md's `User` is resolved inside the container's
        // /etc/passwd, never the host's, so tar uname/gname are ignored.
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
            .map_err(|e| io_error(entry, "lchown", path, e))?;
        for (name, value) in &meta.xattrs {
            let bytes = name.as_bytes();
            if bytes.starts_with(OVERLAY_XATTR_PREFIX.as_bytes()) {
                // overlayfs private metadata (opaque, redirect, origin, metacopy...) must come
                // only from our own whiteout conversion; an archive setting it could forge
                // redirects into other layers.
                warn!(entry, xattr = ?name, "ignoring overlayfs-private xattr from the archive");
                continue;
            }
            if is_symlink && bytes.starts_with(b"user.") {
                // xattr(7): user.* attributes are only allowed on regular files and
                // directories; the kernel refuses them on symlinks.
                debug!(entry, xattr = ?name, "skipping user.* xattr on a symlink");
                continue;
            }
            match xattr::set(path, name, value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    // The filesystem holding the layers has no xattr support for this
                    // namespace; the file is still usable (containerd also only warns).
                    warn!(entry, xattr = ?name, "filesystem does not support xattr, skipped");
                }
                Err(e) => return Err(io_error(entry, "setxattr", path, e)),
            }
        }
        Ok(())
    }

    fn defer_dir(&mut self, path: PathBuf, meta: &EntryMeta, entry: &str) {
        self.deferred_dirs.push(DeferredDir {
            entry: entry.to_owned(),
            path,
            mode: meta.mode,
            atime: meta.atime,
            mtime: meta.mtime,
        });
    }

    /// Directory modes and times, once nothing else will be written into them. Later entries
    /// of the same directory come later in the list and therefore win.
    fn finish(self) -> Result<(), UnpackError> {
        for dir in &self.deferred_dirs {
            match fs::symlink_metadata(&dir.path) {
                Ok(m) if m.is_dir() => {}
                // Replaced by a later non-directory entry: its metadata is already applied.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&dir.entry, "lstat", &dir.path, e)),
            }
            set_mode(&dir.path, dir.mode, &dir.entry)?;
            utimensat(
                nix::fcntl::AT_FDCWD,
                &dir.path,
                &dir.atime,
                &dir.mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|errno| io_error(&dir.entry, "utimensat", &dir.path, errno.into()))?;
        }
        Ok(())
    }

    /// The directory an entry goes into, created (0755) where missing.
    fn ensure_dir(&self, components: &[OsString], entry: &str) -> Result<PathBuf, UnpackError> {
        match self.resolve_dir(components, Missing::Create, entry)? {
            Some(dir) => Ok(dir),
            // resolve_dir answers None only for Missing::Absent.
            None => Err(UnpackError::NotADirectory {
                entry: entry.to_owned(),
                path: self.root.clone(),
            }),
        }
    }

    /// Resolve the directory named by `components` (relative to the layer root) to a real,
    /// symlink-free path below the root, chroot-like (see the module doc). What happens to
    /// missing directories is up to `missing`.
    fn resolve_dir(
        &self,
        components: &[OsString],
        missing: Missing,
        entry: &str,
    ) -> Result<Option<PathBuf>, UnpackError> {
        // Real components below the root, each an existing directory.
        let mut resolved: Vec<OsString> = Vec::new();
        // Components still to walk; reversed so that pop() yields the next one.
        let mut pending: Vec<OsString> = components.iter().rev().cloned().collect();
        let mut hops = 0u32;
        while let Some(component) = pending.pop() {
            if component.is_empty() || component == "." {
                continue;
            }
            if component == ".." {
                // Only symlink targets bring `..` here; clamp at the root like a chroot.
                resolved.pop();
                continue;
            }
            let mut here = self.root.clone();
            here.extend(&resolved);
            here.push(&component);
            match fs::symlink_metadata(&here) {
                Ok(m) if m.is_dir() => resolved.push(component),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(UnpackError::SymlinkLoop {
                            entry: entry.to_owned(),
                            path: here,
                        });
                    }
                    let target =
                        fs::read_link(&here).map_err(|e| io_error(entry, "readlink", &here, e))?;
                    if target.is_absolute() {
                        // Absolute targets are relative to the layer root, as in a chroot.
                        resolved.clear();
                    }
                    for part in target.components().rev() {
                        match part {
                            Component::Normal(s) => pending.push(s.to_owned()),
                            Component::ParentDir => pending.push(OsString::from("..")),
                            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                        }
                    }
                }
                Ok(m) if is_whiteout(&m) && missing == Missing::Create => {
                    // `.wh.d` then `d/x` without a `d/` entry: d is recreated in this layer
                    // over a deleted lower d; as in create_dir's replacement it must be opaque
                    // so that the lower d's entries stay deleted.
                    fs::remove_file(&here).map_err(|e| io_error(entry, "remove", &here, e))?;
                    mkdir(&here, entry)?;
                    set_mode(&here, IMPLIED_DIR_MODE, entry)?;
                    set_opaque(&here, entry)?;
                    resolved.push(component);
                }
                Ok(_) => {
                    return Err(UnpackError::NotADirectory {
                        entry: entry.to_owned(),
                        path: here,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if missing == Missing::Absent {
                        return Ok(None);
                    }
                    mkdir(&here, entry)?;
                    set_mode(&here, IMPLIED_DIR_MODE, entry)?;
                    resolved.push(component);
                }
                Err(e) => return Err(io_error(entry, "lstat", &here, e)),
            }
        }
        let mut dir = self.root.clone();
        dir.extend(&resolved);
        Ok(Some(dir))
    }
}

/// The member name as components relative to the layer root. A leading `/` and `.` components
/// are dropped; `..` rejects the layer (see the module doc for why not clamp).
fn relative_components(raw: &[u8], entry: &str) -> Result<Vec<OsString>, UnpackError> {
    let mut out = Vec::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(unsafe_path(entry, "contains a `..` component"));
            }
            Component::Prefix(_) => return Err(unsafe_path(entry, "has a path prefix")),
            Component::Normal(s) => out.push(s.to_owned()),
        }
    }
    Ok(out)
}

fn read_meta<R: Read>(
    member: &mut tar::Entry<'_, R>,
    entry: &str,
) -> Result<EntryMeta, UnpackError> {
    let header = member.header();
    let old = header.as_old();
    // The tar crate already substituted PAX `uid`/`gid` records into the header.
    let uid = numeric_field(header.uid(), &old.uid, "uid", entry)?;
    let gid = numeric_field(header.gid(), &old.gid, "gid", entry)?;
    let uid = u32::try_from(uid).map_err(|_| bad_header(entry, &format!("uid {uid} too large")))?;
    let gid = u32::try_from(gid).map_err(|_| bad_header(entry, &format!("gid {gid} too large")))?;
    let mode = numeric_field(header.mode().map(u64::from), &old.mode, "mode", entry)? & 0o7777;
    let mode = u32::try_from(mode).map_err(|_| bad_header(entry, "mode out of range"))?;
    let header_mtime = numeric_field(header.mtime(), &old.mtime, "mtime", entry)?;
    let header_mtime = i64::try_from(header_mtime)
        .map_err(|_| bad_header(entry, &format!("mtime {header_mtime} out of range")))?;

    let mut mtime = TimeSpec::new(header_mtime, 0);
    let mut atime = None;
    let mut xattrs = Vec::new();
    let extensions = member
        .pax_extensions()
        .map_err(|source| UnpackError::Read {
            entry: entry.to_owned(),
            source,
        })?;
    if let Some(extensions) = extensions {
        for record in extensions {
            let record = record.map_err(|source| UnpackError::Read {
                entry: entry.to_owned(),
                source,
            })?;
            let key = record.key_bytes();
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                xattrs.push((
                    OsStr::from_bytes(name).to_owned(),
                    record.value_bytes().to_vec(),
                ));
            } else if key == b"mtime" {
                // POSIX pax: times are decimal seconds with an optional fraction.
                mtime = parse_pax_time(record.value_bytes())
                    .ok_or_else(|| bad_header(entry, "unparsable PAX mtime"))?;
            } else if key == b"atime" {
                atime = Some(
                    parse_pax_time(record.value_bytes())
                        .ok_or_else(|| bad_header(entry, "unparsable PAX atime"))?,
                );
            }
        }
    }
    Ok(EntryMeta {
        uid,
        gid,
        mode,
        // Layers rarely carry atime; use mtime rather than "now" so unpacking is reproducible.
        atime: atime.unwrap_or(mtime),
        mtime,
        xattrs,
    })
}

/// A numeric header field; an all-blank field (NULs/spaces) reads as 0, as Go's archive/tar
/// (Docker, containerd, BuildKit) reads it, where the tar crate would refuse it.
fn numeric_field(
    parsed: io::Result<u64>,
    raw: &[u8],
    what: &str,
    entry: &str,
) -> Result<u64, UnpackError> {
    match parsed {
        Ok(value) => Ok(value),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(bad_header(entry, &format!("{what}: {e}"))),
    }
}

/// `"1700000000.123456789"` / `"-1.5"` / `"42"` → TimeSpec.
fn parse_pax_time(raw: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    if !negative {
        return Some(TimeSpec::new(secs, nanos));
    }
    // -1.5 is 1.5 s before the epoch: seconds -2, nanoseconds 0.5e9.
    if nanos == 0 {
        Some(TimeSpec::new(-secs, 0))
    } else {
        Some(TimeSpec::new(-secs - 1, 1_000_000_000 - nanos))
    }
}

/// An overlayfs whiteout: character device 0:0 (overlayfs.rst).
fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn set_opaque(dir: &Path, entry: &str) -> Result<(), UnpackError> {
    xattr::set(dir, OVERLAY_OPAQUE_XATTR, b"y")
        .map_err(|e| io_error(entry, "set trusted.overlay.opaque on", dir, e))
}

/// Make room for a new node at `path`. image-spec layer.md §"Changeset over existing files":
/// unless both are directories, "removing the file path" then "recreating the file path".
/// A directory is removed with its contents; unlink/rmdir never follow symlinks.
fn remove_existing(path: &Path, entry: &str) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| io_error(entry, "remove directory", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| io_error(entry, "remove", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(entry, "lstat", path, e)),
    }
}

fn mkdir(path: &Path, entry: &str) -> Result<(), UnpackError> {
    fs::DirBuilder::new()
        .mode(IMPLIED_DIR_MODE)
        .create(path)
        .map_err(|e| io_error(entry, "mkdir", path, e))
}

/// chmod after creation: creation modes are filtered by the umask, and setuid/setgid must be
/// applied after chown (which clears them).
fn set_mode(path: &Path, mode: u32, entry: &str) -> Result<(), UnpackError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(entry, "chmod", path, e))
}

fn set_times(path: &Path, meta: &EntryMeta, entry: &str) -> Result<(), UnpackError> {
    // AT_SYMLINK_NOFOLLOW: a symlink gets its own times (lutimes), its target is not touched.
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &meta.atime,
        &meta.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|errno| io_error(entry, "utimensat", path, errno.into()))
}

fn io_error(entry: &str, op: &'static str, path: &Path, source: io::Error) -> UnpackError {
    UnpackError::Io {
        entry: entry.to_owned(),
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn unsafe_path(entry: &str, reason: &'static str) -> UnpackError {
    UnpackError::UnsafePath {
        entry: entry.to_owned(),
        reason,
    }
}

fn bad_header(entry: &str, reason: &str) -> UnpackError {
    UnpackError::BadHeader {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::{EntryType, Header};

    const MTIME: u64 = 1_600_000_000;

    /// Builds a layer tar in memory the way image tools do (GNU headers, long names through the
    /// builder), plus raw/PAX escapes for the cases a well-behaved builder refuses to write.
    struct Layer {
        builder: tar::Builder<Vec<u8>>,
    }

    fn header(kind: EntryType, mode: u32, uid: u64, gid: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(MTIME);
        h.set_size(0);
        h
    }

    /// One POSIX pax record: "<len> <key>=<value>\n", len counting the whole record.
    fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body_len = 1 + key.len() + 1 + value.len() + 1;
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        let mut out = format!("{len} {key}=").into_bytes();
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    impl Layer {
        fn new() -> Layer {
            Layer {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        fn file_with(
            &mut self,
            path: &str,
            data: &[u8],
            mode: u32,
            uid: u64,
            gid: u64,
        ) -> &mut Self {
            let mut h = header(EntryType::Regular, mode, uid, gid);
            h.set_size(data.len() as u64);
            self.builder
                .append_data(&mut h, path, data)
                .expect("append file");
            self
        }

        fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
            self.file_with(path, data, 0o644, 0, 0)
        }

        fn dir_with(&mut self, path: &str, mode: u32, mtime: u64) -> &mut Self {
            let mut h = header(EntryType::Directory, mode, 0, 0);
            h.set_mtime(mtime);
            self.builder
                .append_data(&mut h, path, io::empty())
                .expect("append dir");
            self
        }

        fn dir(&mut self, path: &str) -> &mut Self {
            self.dir_with(path, 0o755, MTIME)
        }

        fn link(&mut self, kind: EntryType, path: &str, target: &str) -> &mut Self {
            let mut h = header(kind, 0o777, 0, 0);
            self.builder
                .append_link(&mut h, path, target)
                .expect("append link");
            self
        }

        fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
            self.link(EntryType::Symlink, path, target)
        }

        fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
            self.link(EntryType::Link, path, target)
        }

        fn node(&mut self, kind: EntryType, path: &str, major: u32, minor: u32) -> &mut Self {
            let mut h = header(kind, 0o640, 0, 0);
            h.set_device_major(major).expect("major");
            h.set_device_minor(minor).expect("minor");
            self.builder
                .append_data(&mut h, path, io::empty())
                .expect("append node");
            self
        }

        /// A PAX extended header ('x') describing the next member.
        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let mut h = Header::new_ustar();
            h.set_entry_type(EntryType::XHeader);
            h.set_path("PaxHeaders/entry").expect("pax path");
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.builder
                .append(&h, data.as_slice())
                .expect("append pax");
            self
        }

        /// A member whose name/linkname bytes are written verbatim (`..`, absolute), which
        /// the tar crate's path setters refuse.
        fn raw(&mut self, kind: EntryType, name: &[u8], link: &[u8], data: &[u8]) -> &mut Self {
            let mut h = header(kind, 0o644, 0, 0);
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.builder.append(&h, data).expect("append raw");
            self
        }

        fn finish(self) -> Vec<u8> {
            self.builder.into_inner().expect("finish tar")
        }
    }

    fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
        match compression {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(tar).expect("gzip");
                enc.finish().expect("gzip finish")
            }
            Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
        }
    }

    /// A fresh scratch dir with an empty `layer/` target inside (so escapes would be visible in
    /// the scratch dir next to it).
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("layer");
        fs::create_dir(&target).expect("mkdir target");
        (tmp, target)
    }

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, PathBuf, Result<UnpackStats, UnpackError>) {
        let (tmp, target) = scratch();
        let result = unpack_layer(tar, Compression::None, &target);
        (tmp, target, result)
    }

    fn unpack_ok(tar: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let (tmp, target, result) = unpack(tar);
        result.expect("unpack_layer");
        (tmp, target)
    }

    fn lstat(p: &Path) -> fs::Metadata {
        fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
    }

    fn sha256_hex(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    #[test]
    fn media_types_map_to_compression() {
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Compression::None,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
        ];
        for (media_type, want) in cases {
            assert_eq!(
                Compression::from_media_type(media_type).ok(),
                Some(want),
                "{media_type}"
            );
        }
        for bad in [
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "application/vnd.oci.image.config.v1+json",
            "",
        ] {
            assert!(
                matches!(
                    Compression::from_media_type(bad),
                    Err(UnpackError::UnsupportedMediaType { ref media_type }) if media_type == bad
                ),
                "{bad:?} must be unsupported"
            );
        }
    }

    #[test]
    fn every_compression_unpacks_and_diff_id_is_sha256_of_uncompressed_tar() {
        let mut layer = Layer::new();
        layer.dir("etc").file("etc/hostname", b"box\n");
        let tar = layer.finish();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let blob = compress(&tar, compression);
            if compression != Compression::None {
                assert_ne!(blob, tar);
            }
            let (_tmp, target) = scratch();
            let stats = unpack_layer(blob.as_slice(), compression, &target).expect("unpack");
            assert_eq!(stats.diff_id, sha256_hex(&tar), "{compression:?}");
            assert_eq!(stats.bytes, tar.len() as u64, "{compression:?}");
            assert_eq!(stats.entries, 2, "{compression:?}");
            assert_eq!(
                fs::read(target.join("etc/hostname")).expect("read"),
                b"box\n"
            );
        }
    }

    #[test]
    fn diff_id_covers_padding_after_end_of_archive() {
        let mut layer = Layer::new();
        layer.file("a", b"x");
        let mut tar = layer.finish();
        // Real tar writers pad to a 10 KiB record; the parser stops at the zero blocks before.
        tar.extend_from_slice(&[0u8; 10240]);
        let blob = compress(&tar, Compression::Gzip);
        let (_tmp, target) = scratch();
        let stats = unpack_layer(blob.as_slice(), Compression::Gzip, &target).expect("unpack");
        assert_eq!(stats.diff_id, sha256_hex(&tar));
        assert_eq!(stats.bytes, tar.len() as u64);
    }

    #[test]
    fn regular_files_keep_contents_owner_and_special_mode_bits() {
        let mut layer = Layer::new();
        layer
            .file_with("bin/su", b"#!setuid", 0o4755, 1000, 1001)
            .file_with("bin/wall", b"setgid", 0o2711, 1002, 5)
            .file_with("plain", b"hello", 0o640, 0, 0);
        let mut tmp_dir = header(EntryType::Directory, 0o1777, 0, 0);
        layer
            .builder
            .append_data(&mut tmp_dir, "tmp", io::empty())
            .expect("append tmp");
        let (_tmp, target) = unpack_ok(&layer.finish());

        let su = lstat(&target.join("bin/su"));
        assert_eq!(fs::read(target.join("bin/su")).expect("read"), b"#!setuid");
        // Mode after chown: chown(2) would have cleared setuid had the order been reversed.
        assert_eq!(su.mode() & 0o7777, 0o4755);
        assert_eq!((su.uid(), su.gid()), (1000, 1001));
        assert_eq!(su.mtime(), MTIME as i64);

        let wall = lstat(&target.join("bin/wall"));
        assert_eq!(wall.mode() & 0o7777, 0o2711);
        assert_eq!((wall.uid(), wall.gid()), (1002, 5));

        let plain = lstat(&target.join("plain"));
        assert!(plain.file_type().is_file());
        assert_eq!(plain.mode() & 0o7777, 0o640);
        assert_eq!(fs::read(target.join("plain")).expect("read"), b"hello");

        let tmp = lstat(&target.join("tmp"));
        assert!(tmp.is_dir());
        assert_eq!(tmp.mode() & 0o7777, 0o1777);
    }

    #[test]
    fn file_capability_xattr_survives_chown() {
        // security.capability v2 for cap_net_raw+ep: magic|effective, permitted bit 13.
        let mut cap = Vec::new();
        cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
        cap.extend_from_slice(&(1u32 << 13).to_le_bytes());
        cap.extend_from_slice(&[0u8; 12]);
        let mut layer = Layer::new();
        layer
            .pax(&[("SCHILY.xattr.security.capability", &cap)])
            .file_with("ping", b"elf", 0o755, 1000, 1000);
        let (_tmp, target) = unpack_ok(&layer.finish());
        // chown(2) drops security.capability; it must have been set after the chown.
        let got = xattr::get(target.join("ping"), "security.capability").expect("getxattr");
        assert_eq!(got.as_deref(), Some(cap.as_slice()));
        assert_eq!(lstat(&target.join("ping")).uid(), 1000);
    }

    #[test]
    fn directory_mtimes_are_set_after_their_children() {
        let mut layer = Layer::new();
        layer
            .dir_with("d", 0o750, 1_000)
            .dir_with("d/sub", 0o700, 2_000)
            .file("d/sub/f", b"1")
            .file("d/g", b"2");
        let (_tmp, target) = unpack_ok(&layer.finish());
        let d = lstat(&target.join("d"));
        let sub = lstat(&target.join("d/sub"));
        assert_eq!((d.mtime(), d.mode() & 0o7777), (1_000, 0o750));
        assert_eq!((sub.mtime(), sub.mode() & 0o7777), (2_000, 0o700));
        assert_eq!(lstat(&target.join("d/g")).mtime(), MTIME as i64);
    }

    #[test]
    fn pax_fractional_mtime_and_path_are_honoured() {
        let long = format!("{}/file", "p".repeat(150));
        let mut layer = Layer::new();
        layer
            .pax(&[("mtime", b"1234567890.5"), ("path", long.as_bytes())])
            .file("short-name-ignored", b"pax");
        let (_tmp, target) = unpack_ok(&layer.finish());
        let meta = lstat(&target.join(&long));
        assert_eq!(meta.mtime(), 1_234_567_890);
        assert_eq!(meta.mtime_nsec(), 500_000_000);
        assert!(!target.join("short-name-ignored").exists());
    }

    #[test]
    fn gnu_long_names_and_long_link_targets() {
        let deep = format!("{}/{}/leaf", "a".repeat(120), "b".repeat(120));
        let far = format!("/{}", "t".repeat(200));
        let mut layer = Layer::new();
        layer
            .file(&deep, b"deep")
            .symlink("lnk", &far)
            .hardlink("hl", &deep);
        let (_tmp, target) = unpack_ok(&layer.finish());
        assert_eq!(fs::read(target.join(&deep)).expect("read"), b"deep");
        assert_eq!(
            fs::read_link(target.join("lnk")).expect("readlink"),
            Path::new(&far)
        );
        assert_eq!(
            lstat(&target.join("hl")).ino(),
            lstat(&target.join(&deep)).ino()
        );
    }

    #[test]
    fn symlinks_are_stored_verbatim_with_their_own_owner_and_mtime() {
        let mut layer = Layer::new();
        let mut h = header(EntryType::Symlink, 0o777, 33, 44);
        h.set_mtime(1_111);
        layer
            .builder
            .append_link(&mut h, "abs", "/etc/shadow")
            .expect("append");
        layer
            .symlink("rel", "../../x/./y")
            .symlink("dangling", "nowhere");
        let (_tmp, target) = unpack_ok(&layer.finish());
        assert_eq!(
            fs::read_link(target.join("abs")).expect("readlink"),
            Path::new("/etc/shadow")
        );
        assert_eq!(
            fs::read_link(target.join("rel")).expect("readlink"),
            Path::new("../../x/./y")
        );
        assert_eq!(
            fs::read_link(target.join("dangling")).expect("readlink"),
            Path::new("nowhere")
        );
        let abs = lstat(&target.join("abs"));
        assert!(abs.file_type().is_symlink());
        // lchown/lutimes: the link itself, not the host's /etc/shadow.
        assert_eq!((abs.uid(), abs.gid(), abs.mtime()), (33, 44, 1_111));
        let shadow = fs::metadata("/etc/shadow").expect("stat /etc/shadow");
        assert_ne!(shadow.mtime(), 1_111);
    }

    #[test]
    fn hard_links_share_the_inode() {
        let mut layer = Layer::new();
        layer
            .file_with("usr/bin/a", b"same", 0o755, 7, 7)
            .hardlink("usr/bin/b", "usr/bin/a")
            .raw(EntryType::Link, b"/usr/bin/c", b"/usr/bin/a", b"");
        let (_tmp, target) = unpack_ok(&layer.finish());
        let a = lstat(&target.join("usr/bin/a"));
        let b = lstat(&target.join("usr/bin/b"));
        let c = lstat(&target.join("usr/bin/c"));
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.ino(), c.ino());
        assert_eq!(a.nlink(), 3);
        assert_eq!((b.uid(), b.mode() & 0o7777), (7, 0o755));
    }

    #[test]
    fn hard_link_to_missing_or_directory_target_fails() {
        let mut layer = Layer::new();
        layer.hardlink("b", "not-there");
        let (_tmp, _target, result) = unpack(&layer.finish());
        assert!(
            matches!(result, Err(UnpackError::MissingLinkTarget { ref link, .. }) if link == "not-there"),
            "{result:?}"
        );

        let mut layer = Layer::new();
        layer.dir("d").hardlink("b", "d");
        let (_tmp, _target, result) = unpack(&layer.finish());
        assert!(
            matches!(result, Err(UnpackError::LinkToDirectory { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn hard_link_targets_cannot_escape_the_layer() {
        let passwd_links = lstat(Path::new("/etc/passwd")).nlink();

        let mut layer = Layer::new();
        layer.hardlink("h", "../../../../etc/passwd");
        let (_tmp, target, result) = unpack(&layer.finish());
        assert!(
            matches!(result, Err(UnpackError::UnsafePath { .. })),
            "{result:?}"
        );
        assert!(fs::symlink_metadata(target.join("h")).is_err());

        // Through a symlinked parent: resolved inside the layer, where etc/passwd is absent.
        let mut layer = Layer::new();
        layer.symlink("evil", "/etc").hardlink("h", "evil/passwd");
        let (_tmp, target, result) = unpack(&layer.finish());
        assert!(
            matches!(result, Err(UnpackError::MissingLinkTarget { .. })),
            "{result:?}"
        );
        assert!(fs::symlink_metadata(target.join("h")).is_err());

        assert_eq!(lstat(Path::new("/etc/passwd")).nlink(), passwd_links);
    }

    #[test]
    fn device_nodes_and_fifos_are_created() {
        let mut layer = Layer::new();
        layer
            .node(EntryType::Char, "dev/null", 1, 3)
            .node(EntryType::Block, "dev/loop9", 7, 9)
            .node(EntryType::Fifo, "run/fifo", 0, 0);
        let (_tmp, target) = unpack_ok(&layer.finish());
        let null = lstat(&target.join("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!(
            (
                nix::sys::stat::major(null.rdev()),
                nix::sys::stat::minor(null.rdev())
            ),
            (1, 3)
        );
        assert_eq!(null.mode() & 0o7777, 0o640);
        assert_eq!(null.mtime(), MTIME as i64);
        let block = lstat(&target.join("dev/loop9"));
        assert!(block.file_type().is_block_device());
        assert_eq!(
            (
                nix::sys::stat::major(block.rdev()),
                nix::sys::stat::minor(block.rdev())
            ),
            (7, 9)
        );
        let fifo = lstat(&target.join("run/fifo"));
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o640);
    }

    #[test]
    fn pax_xattrs_round_trip_and_overlay_xattrs_are_refused() {
        let mut layer = Layer::new();
        layer
            .pax(&[("SCHILY.xattr.user.foo", b"bar\0baz")])
            .file("f", b"x")
            .pax(&[
                ("SCHILY.xattr.user.dir", b"d"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ])
            .dir("d");
        let (_tmp, target) = unpack_ok(&layer.finish());
        assert_eq!(
            xattr::get(target.join("f"), "user.foo").expect("getxattr"),
            Some(b"bar\0baz".to_vec())
        );
        let d = target.join("d");
        assert_eq!(
            xattr::get(&d, "user.dir").expect("getxattr"),
            Some(b"d".to_vec())
        );
        assert_eq!(
            xattr::get(&d, "trusted.overlay.redirect").expect("getxattr"),
            None
        );
        assert_eq!(
            xattr::get(&d, "trusted.overlay.opaque").expect("getxattr"),
            None
        );
    }

    #[test]
    fn whiteout_becomes_overlay_char_device_0_0() {
        let mut layer = Layer::new();
        layer
            .dir("etc")
            .file("etc/.wh.motd", b"")
            .file(".wh.toplevel", b"");
        let (_tmp, target) = unpack_ok(&layer.finish());
        for name in ["etc/motd", "toplevel"] {
            let meta = lstat(&target.join(name));
            assert!(meta.file_type().is_char_device(), "{name}");
            assert_eq!(meta.rdev(), 0, "{name}");
        }
        assert!(fs::symlink_metadata(target.join("etc/.wh.motd")).is_err());
        assert!(fs::symlink_metadata(target.join(".wh.toplevel")).is_err());
    }

    #[test]
    fn opaque_marker_sets_trusted_overlay_opaque() {
        let mut layer = Layer::new();
        layer
            .dir("var")
            .dir("var/cache")
            .file("var/cache/.wh..wh..opq", b"")
            .file("var/cache/new", b"n")
            .file("implied/.wh..wh..opq", b"")
            .file(".wh..wh.plnk", b"aufs bookkeeping");
        let (_tmp, target) = unpack_ok(&layer.finish());
        let cache = target.join("var/cache");
        assert_eq!(
            xattr::get(&cache, "trusted.overlay.opaque").expect("getxattr"),
            Some(b"y".to_vec())
        );
        assert_eq!(
            xattr::get(target.join("var"), "trusted.overlay.opaque").expect("get"),
            None
        );
        assert!(fs::symlink_metadata(cache.join(".wh..wh..opq")).is_err());
        assert!(cache.join("new").is_file());
        assert_eq!(
            xattr::get(target.join("implied"), "trusted.overlay.opaque").expect("getxattr"),
            Some(b"y".to_vec())
        );
        assert!(fs::symlink_metadata(target.join(".wh..wh.plnk")).is_err());
        assert!(fs::symlink_metadata(target.join("plnk")).is_err());
        assert!(fs::symlink_metadata(target.join(".wh.plnk")).is_err());
    }

    #[test]
    fn whiteout_and_recreated_directory_in_one_layer_becomes_opaque() {
        // Both orders: per image-spec the same-layer entry survives and the lower one is gone.
        let mut layer = Layer::new();
        layer
            .file(".wh.first", b"")
            .dir("first")
            .file("first/f", b"1")
            .dir("second")
            .file(".wh.second", b"")
            .file("file", b"kept")
            .file(".wh.file", b"");
        let (_tmp, target) = unpack_ok(&layer.finish());
        for d in ["first", "second"] {
            let path = target.join(d);
            assert!(lstat(&path).is_dir(), "{d}");
            assert_eq!(
                xattr::get(&path, "trusted.overlay.opaque").expect("getxattr"),
                Some(b"y".to_vec()),
                "{d}"
            );
        }
        assert_eq!(fs::read(target.join("first/f")).expect("read"), b"1");
        assert_eq!(fs::read(target.join("file")).expect("read"), b"kept");
    }

    #[test]
    fn whiteout_then_implied_directory_in_one_layer_becomes_opaque() {
        let mut layer = Layer::new();
        layer.file(".wh.d", b"").file("d/x", b"x");
        let (_tmp, target) = unpack_ok(&layer.finish());
        let d = target.join("d");
        assert!(lstat(&d).is_dir());
        assert_eq!(
            xattr::get(&d, "trusted.overlay.opaque").expect("getxattr"),
            Some(b"y".to_vec())
        );
        assert_eq!(fs::read(d.join("x")).expect("read"), b"x");
    }

    #[test]
    fn v7_trailing_slash_member_is_a_directory() {
        let mut layer = Layer::new();
        let mut h = Header::new_old();
        h.set_mode(0o711);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(5);
        h.set_size(0);
        h.as_old_mut().name[..4].copy_from_slice(b"old/");
        h.set_cksum();
        layer.builder.append(&h, io::empty()).expect("append");
        let (_tmp, target) = unpack_ok(&layer.finish());
        let old = lstat(&target.join("old"));
        assert!(old.is_dir());
        assert_eq!((old.mode() & 0o7777, old.mtime()), (0o711, 5));
    }

    #[test]
    fn dot_dot_entries_are_rejected_and_write_nothing_outside() {
        for name in [&b"../escape"[..], b"a/../../escape", b"./../escape"] {
            let mut layer = Layer::new();
            layer.raw(EntryType::Regular, name, b"", b"pwned");
            let (tmp, target, result) = unpack(&layer.finish());
            assert!(
                matches!(result, Err(UnpackError::UnsafePath { .. })),
                "{}: {result:?}",
                String::from_utf8_lossy(name)
            );
            assert!(!tmp.path().join("escape").exists());
            assert!(!target.join("escape").exists());
        }
    }

    #[test]
    fn absolute_entry_names_are_rooted_at_the_target() {
        let mut layer = Layer::new();
        layer.raw(EntryType::Regular, b"/abs/file", b"", b"inside");
        let (tmp, target) = unpack_ok(&layer.finish());
        assert_eq!(fs::read(target.join("abs/file")).expect("read"), b"inside");
        assert!(!tmp.path().join("abs").exists());
    }

    #[test]
    fn symlinked_parents_resolve_inside_the_target() {
        let host_passwd = fs::read("/etc/passwd").expect("read /etc/passwd");
        let mut layer = Layer::new();
        layer
            .symlink("evil", "/etc")
            .file("evil/passwd", b"pwned")
            .symlink("up", "../../../../..")
            .file("up/escaped", b"clamped")
            .dir("usr")
            .dir("usr/lib")
            .symlink("lib", "usr/lib")
            .file("lib/libc.so", b"elf")
            .symlink("usr/lib/back", "../../lib")
            .file("usr/lib/back/via-chain", b"chain");
        let (tmp, target) = unpack_ok(&layer.finish());
        assert_eq!(
            fs::read("/etc/passwd").expect("read /etc/passwd"),
            host_passwd
        );
        assert_eq!(fs::read(target.join("etc/passwd")).expect("read"), b"pwned");
        assert!(lstat(&target.join("evil")).file_type().is_symlink());
        assert_eq!(fs::read(target.join("escaped")).expect("read"), b"clamped");
        assert!(!tmp.path().join("escaped").exists());
        assert_eq!(
            fs::read(target.join("usr/lib/libc.so")).expect("read"),
            b"elf"
        );
        assert_eq!(
            fs::read(target.join("usr/lib/via-chain")).expect("read"),
            b"chain"
        );
    }

    #[test]
    fn existing_symlink_at_the_final_component_is_replaced_not_followed() {
        let (tmp, target) = scratch();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"original").expect("write outside");
        let mut layer = Layer::new();
        layer
            .symlink("out", outside.to_str().expect("utf8 tempdir"))
            .file("out", b"replaced")
            .symlink("dir-out", tmp.path().to_str().expect("utf8 tempdir"))
            .dir("dir-out");
        unpack_layer(layer.finish().as_slice(), Compression::None, &target).expect("unpack");
        assert_eq!(fs::read(&outside).expect("read"), b"original");
        assert!(lstat(&target.join("out")).file_type().is_file());
        assert_eq!(fs::read(target.join("out")).expect("read"), b"replaced");
        assert!(lstat(&target.join("dir-out")).is_dir());
        // The tempdir's own mode/mtime were not touched through the link.
        assert!(outside.exists());
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let mut layer = Layer::new();
        layer.symlink("a", "b").symlink("b", "a").file("a/x", b"");
        let (_tmp, _target, result) = unpack(&layer.finish());
        assert!(
            matches!(result, Err(UnpackError::SymlinkLoop { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn later_entries_replace_earlier_ones_of_another_type() {
        let mut layer = Layer::new();
        layer
            .dir("x")
            .file("x/child", b"c")
            .file("x", b"now a file")
            .file("y", b"was a file")
            .dir("y")
            .file("y/inner", b"i")
            .file("z", b"was a file")
            .symlink("z", "target")
            .dir("w")
            .dir_with("w", 0o700, 42);
        let (_tmp, target) = unpack_ok(&layer.finish());
        assert_eq!(fs::read(target.join("x")).expect("read"), b"now a file");
        assert!(lstat(&target.join("y")).is_dir());
        assert_eq!(fs::read(target.join("y/inner")).expect("read"), b"i");
        assert_eq!(
            fs::read_link(target.join("z")).expect("readlink"),
            Path::new("target")
        );
        let w = lstat(&target.join("w"));
        assert_eq!((w.mode() & 0o7777, w.mtime()), (0o700, 42));
    }

    #[test]
    fn file_under_a_regular_file_is_an_error() {
        let mut layer = Layer::new();
        layer.file("f", b"").file("f/g", b"");
        let (_tmp, _target, result) = unpack(&layer.finish());
        assert!(
            matches!(result, Err(UnpackError::NotADirectory { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn implied_parent_directories_are_created_0755() {
        let mut layer = Layer::new();
        layer.file("a/b/c", b"deep");
        let (_tmp, target) = unpack_ok(&layer.finish());
        for d in ["a", "a/b"] {
            let meta = lstat(&target.join(d));
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o7777, 0o755, "{d}");
        }
        assert_eq!(fs::read(target.join("a/b/c")).expect("read"), b"deep");
    }

    #[test]
    fn root_entry_sets_metadata_of_the_target() {
        let mut layer = Layer::new();
        layer.dir_with("./", 0o750, 77).file("f", b"");
        let (_tmp, target) = unpack_ok(&layer.finish());
        let root = lstat(&target);
        assert_eq!((root.mode() & 0o7777, root.mtime()), (0o750, 77));
    }

    #[test]
    fn target_must_be_an_empty_directory() {
        let (_tmp, target) = scratch();
        fs::write(target.join("leftover"), b"").expect("write");
        let tar = Layer::new().finish();
        let result = unpack_layer(tar.as_slice(), Compression::None, &target);
        assert!(
            matches!(result, Err(UnpackError::BadTarget { .. })),
            "{result:?}"
        );
        let result = unpack_layer(tar.as_slice(), Compression::None, &target.join("leftover"));
        assert!(
            matches!(result, Err(UnpackError::BadTarget { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn corrupt_or_truncated_streams_are_read_errors() {
        let mut layer = Layer::new();
        layer.file("big", &[7u8; 100_000]);
        let tar = layer.finish();
        let gz = compress(&tar, Compression::Gzip);
        let (_tmp, target) = scratch();
        let result = unpack_layer(&gz[..gz.len() / 2], Compression::Gzip, &target);
        assert!(
            matches!(result, Err(UnpackError::Read { .. })),
            "{result:?}"
        );

        let (_tmp, target) = scratch();
        let result = unpack_layer(&b"definitely not zstd"[..], Compression::Zstd, &target);
        assert!(
            matches!(result, Err(UnpackError::Read { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn blank_numeric_fields_read_as_zero_and_garbage_is_rejected() {
        let mut layer = Layer::new();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(1);
        // uid, gid and mtime left blank (all NUL), as some writers do.
        layer
            .builder
            .append_data(&mut h, "blank", &b"b"[..])
            .expect("append");
        let (_tmp, target) = unpack_ok(&layer.finish());
        let meta = lstat(&target.join("blank"));
        assert_eq!((meta.uid(), meta.gid(), meta.mtime()), (0, 0, 0));

        let mut layer = Layer::new();
        let mut h = header(EntryType::Regular, 0o600, 0, 0);
        h.as_old_mut().uid.copy_from_slice(b"12x4567\0");
        layer
            .builder
            .append_data(&mut h, "garbage", io::empty())
            .expect("append");
        let (_tmp, _target, result) = unpack(&layer.finish());
        assert!(
            matches!(result, Err(UnpackError::BadHeader { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn pax_times_parse() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
        assert_eq!(t("42"), Some((42, 0)));
        assert_eq!(
            t("1234567890.123456789123"),
            Some((1_234_567_890, 123_456_789))
        );
        assert_eq!(t("1.5"), Some((1, 500_000_000)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        assert_eq!(t(""), None);
        assert_eq!(t("1.x"), None);
        assert_eq!(t(".5"), None);
    }
}
