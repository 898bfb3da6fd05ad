//! A container's root filesystem as an overlayfs mount over unpacked image layers.
//!
//! Owns: the on-disk layout of a container's rootfs (`<container_dir>/{upper,work,rootfs}`), the
//! overlay mount options, mounting, unmounting (including anything mounted below it), deleting,
//! and answering "is this path a mount point" from /proc/self/mountinfo.
//!
//! Must not depend on: any other module of this crate (it gets layer directories as plain
//! paths; how they were pulled or unpacked is not its business). Only std, `nix`, `libc`,
//! `thiserror` and `tracing`. (Its tests use the sibling `unpack` module to build real layers,
//! because that is the integration that matters: our whiteout conversion as read by the kernel.)
//!
//! Overlay options, per Documentation/filesystems/overlayfs.rst:
//! * `lowerdir=<top>:...:<bottom>` — "The specified lower directories will be stacked beginning
//!   from the rightmost one and going left", so the topmost layer comes first. `:` separates
//!   layers and `\` escapes; `,` separates mount options. All three are backslash-escaped in
//!   paths (the kernel's option parser unescapes them).
//! * `upperdir`, `workdir` — "The workdir needs to be an empty directory on the same filesystem
//!   as upperdir": both live in the container directory. They are private to one mount.
//! * `index=off` — sharing LOWER layers between concurrent mounts needs no option (checked on
//!   this 6.x kernel with `index=on` as well; see `two_containers_share_the_same_lowers_at_once`).
//!   What the inodes index adds is per-upper bookkeeping that gets in our way: with `index=on`
//!   the upper root is stamped with `trusted.overlay.origin` of the first lower stack, and a
//!   later mount of that upper over a different stack fails with ESTALE ("failed to verify
//!   upper root origin"), e.g. after the layer store was moved or re-unpacked. The index only
//!   serves hard-link copy-up and NFS export, which a container rootfs does not need, so it is
//!   turned off explicitly instead of relying on CONFIG_OVERLAY_FS_INDEX / the `index` module
//!   parameter (default off on Debian, on elsewhere).
//! * No MS_NOSUID/MS_NODEV: setuid binaries in images (ping, sudo, su) must work; the container
//!   runtime decides later what is mounted over /dev.
//!
//! Limits: mount(2) copies at most one page of option data, so the whole option string must fit
//! in 4095 bytes plus its NUL (we check this, rather than let the kernel answer a cryptic
//! EINVAL), and overlayfs stacks at most 500 lower layers (OVL_MAX_STACK).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tracing::{debug, warn};

/// mount(2) copies one page of `data`; it must hold the options and the terminating NUL. 4096 is
/// the x86_64 page size and the smallest Linux uses anywhere, so it is safe on every arch.
pub const MAX_MOUNT_OPTIONS_LEN: usize = 4096 - 1;
/// overlayfs' OVL_MAX_STACK: the most lower layers one mount accepts.
pub const MAX_LOWER_LAYERS: usize = 500;

/// How often `release_rootfs` re-reads mountinfo and unmounts what is still there. Mounts can
/// be stacked on the same point (each umount removes only the top one).
const MAX_UNMOUNT_ROUNDS: usize = 16;

/// Where a container's rootfs pieces live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsPaths {
    /// overlay upperdir: the container's writes.
    pub upper: PathBuf,
    /// overlay workdir (same filesystem as upper, private to the mount).
    pub work: PathBuf,
    /// the mount point: the container's `/`.
    pub merged: PathBuf,
}

impl RootfsPaths {
    /// `container_dir/{upper,work,rootfs}`.
    pub fn under(container_dir: &Path) -> RootfsPaths {
        RootfsPaths {
            upper: container_dir.join("upper"),
            work: container_dir.join("work"),
            merged: container_dir.join("rootfs"),
        }
    }
}

/// Lower directory used when an image has no layers: overlayfs needs at least one lowerdir.
fn empty_lower(container_dir: &Path) -> PathBuf {
    container_dir.join("lower-empty")
}

/// Errors of this module; every variant names the path it was working on.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A lower directory is not an absolute path to an existing directory.
    #[error("lower layer directory {path}: {reason}")]
    InvalidLower { path: PathBuf, reason: &'static str },

    /// The layer stack does not fit in one overlay mount (see the module doc).
    #[error(
        "cannot stack {layers} layers in one overlay mount: at most {MAX_LOWER_LAYERS} layers and \
         {MAX_MOUNT_OPTIONS_LEN} bytes of mount options are accepted, these need {options_len}"
    )]
    TooManyLayers { layers: usize, options_len: usize },

    /// The rootfs mount point is already mounted.
    #[error("{path} is already a mount point")]
    AlreadyMounted { path: PathBuf },

    /// mount(2) failed.
    #[error("mount overlay at {target} with options {options:?}: {source}")]
    Mount {
        target: PathBuf,
        options: String,
        #[source]
        source: Errno,
    },

    /// umount2(2) failed other than by being busy or not mounted.
    #[error("unmount {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },

    /// Mounts kept reappearing below the container directory.
    #[error("{path} is still mounted after {MAX_UNMOUNT_ROUNDS} unmount rounds")]
    StillMounted { path: PathBuf },

    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// lowers: layer dirs, TOPMOST FIRST (overlayfs lowerdir order). Creates upper/work/merged
/// under container_dir and mounts overlay at merged. With no lowers (an image without layers)
/// an empty `container_dir/lower-empty` is used, since overlayfs needs at least one lowerdir.
///
/// Existing upper/work directories are reused, so mounting again after a reboot brings back the
/// container's writes. If `merged` is already a mount point this fails with `AlreadyMounted`
/// rather than stacking a second overlay on it. On error nothing is mounted; directories that
/// were created stay, and `release_rootfs` removes them.
pub fn mount_rootfs(lowers: &[PathBuf], container_dir: &Path) -> Result<RootfsPaths, RootfsError> {
    for lower in lowers {
        // Pre-checks so a bad layer path is reported by name instead of as EINVAL/ENOENT of the
        // whole mount.
        if !lower.is_absolute() {
            return Err(RootfsError::InvalidLower {
                path: lower.clone(),
                reason: "not an absolute path",
            });
        }
        match fs::metadata(lower) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(RootfsError::InvalidLower {
                    path: lower.clone(),
                    reason: "not a directory",
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RootfsError::InvalidLower {
                    path: lower.clone(),
                    reason: "does not exist",
                });
            }
            Err(source) => return Err(io_error("stat", lower, source)),
        }
    }
    if lowers.len() > MAX_LOWER_LAYERS {
        return Err(RootfsError::TooManyLayers {
            layers: lowers.len(),
            options_len: overlay_options(lowers, &RootfsPaths::under(container_dir)).len(),
        });
    }

    let container_dir = absolute(container_dir)?;
    let paths = RootfsPaths::under(&container_dir);
    let no_layers = [empty_lower(&container_dir)];
    let lowers: &[PathBuf] = if lowers.is_empty() {
        &no_layers
    } else {
        lowers
    };
    let options = overlay_options(lowers, &paths);
    if options.len() > MAX_MOUNT_OPTIONS_LEN {
        return Err(RootfsError::TooManyLayers {
            layers: lowers.len(),
            options_len: options.len(),
        });
    }

    fs::create_dir_all(&container_dir)
        .map_err(|source| io_error("mkdir", &container_dir, source))?;
    // The upper dir's root is what the container sees as `/` (overlayfs takes a merged
    // directory's attributes from its topmost copy), so give it the usual 0755.
    create_dir(&paths.upper, 0o755)?;
    create_dir(&paths.work, 0o700)?;
    create_dir(&paths.merged, 0o755)?;
    if lowers == no_layers.as_slice() {
        create_dir(&no_layers[0], 0o755)?;
    }

    if is_mounted(&paths.merged)? {
        return Err(RootfsError::AlreadyMounted {
            path: paths.merged.clone(),
        });
    }
    mount(
        Some("overlay"),
        &paths.merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_os_str()),
    )
    .map_err(|source| RootfsError::Mount {
        target: paths.merged.clone(),
        options: options.to_string_lossy().into_owned(),
        source,
    })?;
    debug!(merged = %paths.merged.display(), layers = lowers.len(), "mounted overlay rootfs");
    Ok(paths)
}

/// The rootfs of a container in a user namespace (a `hostUsers: false` pod): like [`mount_rootfs`],
/// but every lower layer is first bind-mounted, idmapped, under `container_dir/lower-idmapped/<n>`
/// by `idmap_bind(layer, mount_point)` (the caller owns the user namespace), and the upper dir's
/// root is owned by `upper_owner` (the pod root's host uid/gid).
///
/// Why not idmap the overlay mount itself (liblxc's `lxc.rootfs.options = idmap=container`):
/// overlayfs cannot be idmapped (mount_setattr(2) answers EINVAL). Why not idmap the upper layer
/// too: overlayfs does its upper-layer work with the mounter's credentials, and host root is not
/// mapped in the pod's namespace (EOVERFLOW, the overlay then mounts read-only). So the upper stays
/// plain and holds the pod's *host* ids: the container's writes and copied-up files are owned by
/// the mapped host ids on disk, which is what they are seen as from the host, and the shared image
/// layers are never touched. Since Linux 5.19 overlayfs accepts idmapped lower layers.
pub fn mount_rootfs_idmapped(
    lowers: &[PathBuf],
    container_dir: &Path,
    idmap_bind: &dyn Fn(&Path, &Path) -> io::Result<()>,
    upper_owner: (u32, u32),
) -> Result<RootfsPaths, RootfsError> {
    let container_dir = absolute(container_dir)?;
    fs::create_dir_all(&container_dir)
        .map_err(|source| io_error("mkdir", &container_dir, source))?;
    let idmapped_dir = container_dir.join("lower-idmapped");
    create_dir(&idmapped_dir, 0o700)?;
    let mut idmapped = Vec::with_capacity(lowers.len());
    let undo = |points: &[PathBuf]| {
        for p in points {
            let _ = umount2(p, MntFlags::MNT_DETACH);
        }
    };
    for (i, lower) in lowers.iter().enumerate() {
        let point = idmapped_dir.join(i.to_string());
        let step = create_dir(&point, 0o755).and_then(|()| {
            idmap_bind(lower, &point).map_err(|source| io_error("idmapped bind mount of", lower, source))
        });
        if let Err(e) = step {
            undo(&idmapped);
            return Err(e);
        }
        idmapped.push(point);
    }
    let upper = RootfsPaths::under(&container_dir).upper;
    let owned = create_dir(&upper, 0o755).and_then(|()| {
        nix::unistd::chown(
            &upper,
            Some(nix::unistd::Uid::from_raw(upper_owner.0)),
            Some(nix::unistd::Gid::from_raw(upper_owner.1)),
        )
        .map_err(|e| io_error("chown", &upper, io::Error::from(e)))
    });
    let mounted = owned.and_then(|()| mount_rootfs(&idmapped, &container_dir));
    if mounted.is_err() {
        undo(&idmapped);
    }
    mounted
}

/// Unmount (retry with MNT_DETACH if busy) and delete container_dir. Idempotent: OK if not
/// mounted / missing.
///
/// Everything mounted at or below `container_dir` is unmounted, deepest first: something may
/// have been mounted inside the rootfs, and deleting through a live mount would delete its
/// contents (or fail half-way). The directory is only deleted once mountinfo shows nothing
/// below it any more.
pub fn release_rootfs(container_dir: &Path) -> Result<(), RootfsError> {
    let dir = match fs::canonicalize(container_dir) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_error("resolve", container_dir, source)),
    };
    let mut rounds = 0;
    loop {
        let mut below: Vec<PathBuf> = mount_points()?
            .into_iter()
            .filter(|m| m.starts_with(&dir))
            .collect();
        if below.is_empty() {
            break;
        }
        rounds += 1;
        if rounds > MAX_UNMOUNT_ROUNDS {
            return Err(RootfsError::StillMounted {
                path: below.swap_remove(0),
            });
        }
        // Deepest first. A point with stacked mounts is listed once per mount; unmount it once
        // per round and let the next round see whatever is left.
        below.sort_by(|a, b| {
            b.components()
                .count()
                .cmp(&a.components().count())
                .then_with(|| a.cmp(b))
        });
        below.dedup();
        for point in &below {
            unmount(point)?;
        }
    }
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error("remove", &dir, source)),
    }
}

/// Whether `path` is currently a mount point (parse /proc/self/mountinfo; handle octal escapes
/// like \040). A path that does not exist is not mounted.
pub fn is_mounted(path: &Path) -> Result<bool, RootfsError> {
    // mountinfo lists canonical paths, so compare against the canonical form.
    let path = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(io_error("resolve", path, source)),
    };
    Ok(mount_points()?.contains(&path))
}

fn unmount(point: &Path) -> Result<(), RootfsError> {
    match umount2(point, MntFlags::empty()) {
        Ok(()) => Ok(()),
        // Already gone (a lazy unmount of a parent took it along, or a concurrent release).
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => {
            // Something still has files open in it (a dying container's process, a shell in
            // the rootfs). umount2(2) MNT_DETACH: "Perform a lazy unmount: make the mount
            // unavailable for new accesses, ... and actually perform the unmount when the
            // mount ceases to be busy".
            warn!(mount_point = %point.display(), "rootfs busy, detaching lazily");
            match umount2(point, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
                Err(source) => Err(RootfsError::Unmount {
                    path: point.to_path_buf(),
                    source,
                }),
            }
        }
        Err(source) => Err(RootfsError::Unmount {
            path: point.to_path_buf(),
            source,
        }),
    }
}

/// `lowerdir=<l1>:<l2>,upperdir=<u>,workdir=<w>,index=off`, paths escaped.
fn overlay_options(lowers: &[PathBuf], paths: &RootfsPaths) -> OsString {
    let mut out: Vec<u8> = b"lowerdir=".to_vec();
    for (i, lower) in lowers.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        escape_into(&mut out, lower.as_os_str());
    }
    out.extend_from_slice(b",upperdir=");
    escape_into(&mut out, paths.upper.as_os_str());
    out.extend_from_slice(b",workdir=");
    escape_into(&mut out, paths.work.as_os_str());
    out.extend_from_slice(b",index=off");
    OsString::from_vec(out)
}

/// overlayfs splits options at `,` and lowerdir at `:`, both honouring `\` escapes.
fn escape_into(out: &mut Vec<u8>, path: &OsStr) {
    for &b in path.as_bytes() {
        if matches!(b, b'\\' | b':' | b',') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Mount points of the calling process' mount namespace, in mountinfo order.
fn mount_points() -> Result<Vec<PathBuf>, RootfsError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let raw = fs::read(mountinfo).map_err(|source| io_error("read", mountinfo, source))?;
    Ok(parse_mount_points(&raw))
}

/// proc_pid_mountinfo(5): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`;
/// the fifth field is the mount point, with space, tab, newline and backslash written as
/// `\ooo` octal escapes.
fn parse_mount_points(raw: &[u8]) -> Vec<PathBuf> {
    raw.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape_octal(field))))
        .collect()
}

fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() && is_octal_escape(&field[i + 1..i + 4]) {
            let value = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            // Three octal digits can exceed a byte (\777); such text is not an escape the
            // kernel writes, keep it literally.
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn is_octal_escape(digits: &[u8]) -> bool {
    digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d))
}

fn absolute(path: &Path) -> Result<PathBuf, RootfsError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|source| io_error("getcwd", path, source))?;
    Ok(cwd.join(path))
}

/// mkdir that tolerates an existing directory (reuse after reboot) and fixes the mode of a new
/// one regardless of the umask.
fn create_dir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    match fs::create_dir(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|source| io_error("chmod", path, source)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(source) => Err(io_error("mkdir", path, source)),
    }
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> RootfsError {
    RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::super::unpack::{unpack_layer, Compression};
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// Releases the container dir even when an assertion failed half-way, so a failing test
    /// does not leak a mount into the next ones (or the host).
    struct Released(PathBuf);

    impl Drop for Released {
        fn drop(&mut self) {
            if let Err(e) = release_rootfs(&self.0) {
                eprintln!("cleanup of {}: {e}", self.0.display());
            }
        }
    }

    enum Item<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
    }

    /// Builds a real layer: a tar with the given items, unpacked by our own unpacker, so that
    /// the kernel reads exactly the whiteouts/opaque dirs `unpack` produces.
    fn layer(root: &Path, name: &str, items: &[Item<'_>]) -> PathBuf {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            let (path, data): (&str, &[u8]) = match item {
                Item::Dir(path) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    (path, b"")
                }
                Item::File(path, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    (path, data)
                }
            };
            h.set_size(data.len() as u64);
            builder.append_data(&mut h, path, data).expect("append");
        }
        let tar = builder.into_inner().expect("tar");
        let dir = root.join(name);
        fs::create_dir_all(&dir).expect("mkdir layer");
        unpack_layer(tar.as_slice(), Compression::None, &dir).expect("unpack layer");
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| {
                e.expect("dirent")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        out.sort();
        out
    }

    /// Bottom layer with a file to delete and a directory to make opaque; top layer deleting
    /// and replacing them. Returned topmost first.
    fn two_layers(root: &Path) -> Vec<PathBuf> {
        let bottom = layer(
            root,
            "bottom",
            &[
                Item::Dir("etc"),
                Item::File("etc/keep", b"keep"),
                Item::File("etc/gone", b"gone"),
                Item::Dir("opq"),
                Item::File("opq/old1", b"1"),
                Item::File("opq/old2", b"2"),
                Item::Dir("merged"),
                Item::File("merged/from-bottom", b"b"),
            ],
        );
        let top = layer(
            root,
            "top",
            &[
                Item::Dir("etc"),
                Item::File("etc/.wh.gone", b""),
                Item::Dir("opq"),
                Item::File("opq/.wh..wh..opq", b""),
                Item::File("opq/new", b"n"),
                Item::Dir("merged"),
                Item::File("merged/from-top", b"t"),
            ],
        );
        vec![top, bottom]
    }

    #[test]
    fn paths_under_container_dir() {
        let p = RootfsPaths::under(Path::new("/c/1"));
        assert_eq!(p.upper, Path::new("/c/1/upper"));
        assert_eq!(p.work, Path::new("/c/1/work"));
        assert_eq!(p.merged, Path::new("/c/1/rootfs"));
    }

    #[test]
    fn whiteouts_and_opaque_dirs_from_unpack_hide_lower_entries() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let lowers = two_layers(tmp.path());
        let container = tmp.path().join("c1");
        let _release = Released(container.clone());

        let paths = mount_rootfs(&lowers, &container).expect("mount");
        assert_eq!(paths, RootfsPaths::under(&container));
        assert!(is_mounted(&paths.merged).expect("is_mounted"));
        let m = &paths.merged;

        assert_eq!(names(&m.join("etc")), ["keep"]);
        assert_eq!(fs::read(m.join("etc/keep")).expect("read"), b"keep");
        assert_eq!(names(&m.join("opq")), ["new"]);
        assert_eq!(names(&m.join("merged")), ["from-bottom", "from-top"]);
        // The container's `/` carries the upper root's mode.
        assert_eq!(fs::metadata(m).expect("stat").mode() & 0o7777, 0o755);

        // Writes land in upper; lowers stay untouched.
        fs::write(m.join("etc/new"), b"written").expect("write");
        assert_eq!(
            fs::read(paths.upper.join("etc/new")).expect("read"),
            b"written"
        );
        for lower in &lowers {
            assert!(!lower.join("etc/new").exists());
        }
        // A deletion in the container is recorded by the kernel the same way our unpacker
        // records a layer's deletions: a 0:0 char device in upper.
        fs::remove_file(m.join("etc/keep")).expect("rm");
        let whiteout = fs::symlink_metadata(paths.upper.join("etc/keep")).expect("lstat");
        assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
        assert!(lowers[1].join("etc/keep").exists());

        release_rootfs(&container).expect("release");
        assert!(!is_mounted(&paths.merged).expect("is_mounted"));
        assert!(!container.exists());
        release_rootfs(&container).expect("second release is a no-op");
        for lower in &lowers {
            assert!(
                lower.join("etc").is_dir(),
                "lower {} survives",
                lower.display()
            );
        }
    }

    #[test]
    fn two_containers_share_the_same_lowers_at_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let lowers = two_layers(tmp.path());
        let c1 = tmp.path().join("c1");
        let c2 = tmp.path().join("c2");
        let _r1 = Released(c1.clone());
        let _r2 = Released(c2.clone());

        let p1 = mount_rootfs(&lowers, &c1).expect("mount c1");
        let p2 = mount_rootfs(&lowers, &c2).expect("mount c2 on the same lowers");
        assert!(is_mounted(&p1.merged).expect("is_mounted"));
        assert!(is_mounted(&p2.merged).expect("is_mounted"));

        fs::write(p1.merged.join("only-c1"), b"1").expect("write c1");
        fs::write(p2.merged.join("etc/keep"), b"changed in c2").expect("write c2");
        assert!(!p2.merged.join("only-c1").exists());
        assert_eq!(fs::read(p1.merged.join("etc/keep")).expect("read"), b"keep");
        assert_eq!(
            fs::read(p2.merged.join("etc/keep")).expect("read"),
            b"changed in c2"
        );
        assert_eq!(fs::read(lowers[1].join("etc/keep")).expect("read"), b"keep");

        release_rootfs(&c1).expect("release c1");
        assert!(
            is_mounted(&p2.merged).expect("is_mounted"),
            "c2 unaffected by c1's release"
        );
        assert_eq!(names(&p2.merged.join("opq")), ["new"]);
        release_rootfs(&c2).expect("release c2");
        assert!(!is_mounted(&p2.merged).expect("is_mounted"));
    }

    #[test]
    fn image_without_layers_mounts_an_empty_rootfs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let container = tmp.path().join("c");
        let _release = Released(container.clone());
        let paths = mount_rootfs(&[], &container).expect("mount");
        assert!(is_mounted(&paths.merged).expect("is_mounted"));
        assert!(names(&paths.merged).is_empty());
        fs::write(paths.merged.join("f"), b"x").expect("write");
        assert!(paths.upper.join("f").exists());
        release_rootfs(&container).expect("release");
        assert!(!container.exists());
    }

    #[test]
    fn remount_reuses_upper_and_refuses_to_stack() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let lowers = two_layers(tmp.path());
        let container = tmp.path().join("c");
        let _release = Released(container.clone());
        let paths = mount_rootfs(&lowers, &container).expect("mount");
        fs::write(paths.merged.join("state"), b"kept").expect("write");

        let again = mount_rootfs(&lowers, &container);
        assert!(
            matches!(again, Err(RootfsError::AlreadyMounted { .. })),
            "{again:?}"
        );

        // As after a reboot: mount gone, upper still there.
        umount2(&paths.merged, MntFlags::empty()).expect("umount");
        let paths = mount_rootfs(&lowers, &container).expect("remount");
        assert_eq!(fs::read(paths.merged.join("state")).expect("read"), b"kept");
        release_rootfs(&container).expect("release");
    }

    #[test]
    fn upper_can_be_remounted_over_a_different_lower_stack() {
        // What index=off buys: with the index on, the first mount stamps the upper root with
        // the origin of its lower stack and this remount fails with ESTALE.
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = layer(tmp.path(), "first", &[Item::File("a", b"a")]);
        let second = layer(tmp.path(), "second", &[Item::File("b", b"b")]);
        let container = tmp.path().join("c");
        let _release = Released(container.clone());
        let paths = mount_rootfs(std::slice::from_ref(&first), &container).expect("mount");
        fs::write(paths.merged.join("state"), b"kept").expect("write");
        umount2(&paths.merged, MntFlags::empty()).expect("umount");
        let paths = mount_rootfs(&[second], &container).expect("remount over another stack");
        assert_eq!(names(&paths.merged), ["b", "state"]);
    }

    #[test]
    fn lower_paths_with_separators_are_escaped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let odd = layer(
            tmp.path(),
            "odd:name,with\\chars",
            &[Item::File("marker", b"odd")],
        );
        let plain = layer(tmp.path(), "plain", &[Item::File("plain", b"p")]);
        let container = tmp.path().join("c");
        let _release = Released(container.clone());
        let paths = mount_rootfs(&[odd, plain], &container).expect("mount");
        assert_eq!(fs::read(paths.merged.join("marker")).expect("read"), b"odd");
        assert_eq!(fs::read(paths.merged.join("plain")).expect("read"), b"p");
    }

    #[test]
    fn container_dir_with_spaces_is_seen_as_mounted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let lowers = two_layers(tmp.path());
        // mountinfo writes the space as \040 and the tab as \011.
        let container = tmp.path().join("with space\tand tab");
        let _release = Released(container.clone());
        let paths = mount_rootfs(&lowers, &container).expect("mount");
        assert!(is_mounted(&paths.merged).expect("is_mounted"));
        assert!(!is_mounted(&container).expect("is_mounted"));
        release_rootfs(&container).expect("release");
        assert!(!is_mounted(&paths.merged).expect("is_mounted"));
        assert!(!container.exists());
    }

    #[test]
    fn options_over_one_page_are_too_many_layers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut lowers = Vec::new();
        for i in 0..40 {
            let dir = tmp.path().join(format!("{i:03}-{}", "x".repeat(100)));
            fs::create_dir(&dir).expect("mkdir");
            lowers.push(dir);
        }
        let container = tmp.path().join("c");
        let _release = Released(container.clone());
        let result = mount_rootfs(&lowers, &container);
        match result {
            Err(RootfsError::TooManyLayers {
                layers,
                options_len,
            }) => {
                assert_eq!(layers, 40);
                assert!(options_len > MAX_MOUNT_OPTIONS_LEN);
            }
            other => panic!("expected TooManyLayers, got {other:?}"),
        }
        assert!(!is_mounted(&RootfsPaths::under(&container).merged).expect("is_mounted"));

        // Just under the limit still mounts (so the check is not off by a lot).
        let fits = overlay_options(&lowers[..30], &RootfsPaths::under(&container)).len();
        assert!(fits <= MAX_MOUNT_OPTIONS_LEN, "{fits}");
        mount_rootfs(&lowers[..30], &container).expect("30 long lowers fit in a page");
    }

    #[test]
    fn more_than_500_lowers_are_too_many_layers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let lowers: Vec<PathBuf> = (0..=MAX_LOWER_LAYERS)
            .map(|i| {
                let dir = tmp.path().join(i.to_string());
                fs::create_dir(&dir).expect("mkdir");
                dir
            })
            .collect();
        let container = tmp.path().join("c");
        let result = mount_rootfs(&lowers, &container);
        assert!(
            matches!(result, Err(RootfsError::TooManyLayers { layers: 501, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn bad_lower_dirs_are_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("file");
        fs::write(&file, b"").expect("write");
        let container = tmp.path().join("c");
        let _release = Released(container.clone());
        for (lower, reason) in [
            (PathBuf::from("relative/layer"), "not an absolute path"),
            (tmp.path().join("missing"), "does not exist"),
            (file, "not a directory"),
        ] {
            let result = mount_rootfs(std::slice::from_ref(&lower), &container);
            match result {
                Err(RootfsError::InvalidLower { path, reason: got }) => {
                    assert_eq!((path, got), (lower, reason));
                }
                other => panic!("expected InvalidLower, got {other:?}"),
            }
        }
    }

    #[test]
    fn idmapped_variant_mounts_each_lower_and_owns_the_upper_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let lowers = two_layers(tmp.path());
        let container = tmp.path().join("c");
        let _release = Released(container.clone());
        // A plain bind stands in for the idmapped one (runtime/userns.rs tests the real thing).
        let bind = |src: &Path, dst: &Path| {
            mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)
        };
        let paths = mount_rootfs_idmapped(&lowers, &container, &bind, (4242, 4343)).expect("mount");
        assert_eq!(names(&paths.merged.join("opq")), ["new"]);
        let root = fs::metadata(&paths.merged).expect("stat");
        assert_eq!((root.uid(), root.gid()), (4242, 4343), "the container's / is owned by the pod's root");
        for i in 0..lowers.len() {
            assert!(is_mounted(&container.join("lower-idmapped").join(i.to_string())).expect("is_mounted"));
        }
        release_rootfs(&container).expect("release");
        assert!(!container.exists());

        // A failing bind leaves nothing mounted.
        let fail = |_: &Path, _: &Path| Err(io::Error::from_raw_os_error(libc::EINVAL));
        let r = mount_rootfs_idmapped(&lowers, &container, &fail, (1, 1));
        assert!(matches!(r, Err(RootfsError::Io { .. })), "{r:?}");
        assert!(!is_mounted(&RootfsPaths::under(&container).merged).expect("is_mounted"));
        release_rootfs(&container).expect("release");
    }

    #[test]
    fn release_of_missing_dir_is_ok() {
        let tmp = tempfile::tempdir().expect("tempdir");
        release_rootfs(&tmp.path().join("never-created")).expect("release missing");
        assert!(!is_mounted(&tmp.path().join("never-created")).expect("is_mounted"));
    }

    #[test]
    fn release_detaches_a_busy_rootfs_and_nested_mounts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let lowers = two_layers(tmp.path());
        let container = tmp.path().join("c");
        let _release = Released(container.clone());
        let paths = mount_rootfs(&lowers, &container).expect("mount");
        // Something mounted inside the rootfs, and a file held open in it (EBUSY for umount).
        let nested = paths.merged.join("etc");
        mount(
            Some("tmpfs"),
            &nested,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs");
        let held = fs::File::create(paths.merged.join("held-open")).expect("open");
        assert!(is_mounted(&nested).expect("is_mounted"));

        release_rootfs(&container).expect("release busy rootfs");
        assert!(!is_mounted(&nested).expect("is_mounted"));
        assert!(!is_mounted(&paths.merged).expect("is_mounted"));
        assert!(!container.exists());
        drop(held);
        assert!(lowers[1].join("etc/keep").exists());
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        let info =
            b"36 35 98:0 /mnt1 /a\\040b\\011c\\134d rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 36 0:5 / /proc rw - proc proc rw\n\
                     short line\n";
        assert_eq!(
            parse_mount_points(info),
            [PathBuf::from("/a b\tc\\d"), PathBuf::from("/proc")]
        );
        assert_eq!(unescape_octal(b"x\\04"), b"x\\04");
        assert_eq!(unescape_octal(b"\\777"), b"\\777");
        assert_eq!(unescape_octal(b"\\012"), b"\n");
    }

    #[test]
    fn option_string_escapes_and_orders_layers() {
        let paths = RootfsPaths::under(Path::new("/c"));
        let options = overlay_options(
            &[PathBuf::from("/l/top"), PathBuf::from("/l/a:b,c\\d")],
            &paths,
        );
        assert_eq!(
            options,
            "lowerdir=/l/top:/l/a\\:b\\,c\\\\d,upperdir=/c/upper,workdir=/c/work,index=off"
        );
    }
}
