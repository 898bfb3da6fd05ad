//! Safe wrapper over the few liblxc (`<lxc/lxccontainer.h>`) calls cri-lxc needs.
//!
//! This is the only module with `unsafe` code; every block carries a `// SAFETY:` note. The raw
//! bindings come from bindgen (see build.rs) and are kept private.
//!
//! # Forking calls
//! `start()` (foreground) and `attach_run_wait()` fork inside liblxc, and the forked children run
//! arbitrary non-async-signal-safe code (malloc, logging) before they exec. Forking a
//! multi-threaded process can deadlock such a child on a lock another thread held at fork time,
//! so these two methods must only run in a *single-threaded* helper process (`__monitor`,
//! `__exec`), never in the tokio daemon. `destroy()` may also run hooks. The other methods
//! (`state`, `init_pid`, `stop`, `shutdown`, `wait`, config access) talk to the container's
//! command socket or parse config in-process and are fine anywhere.
//!
//! # Ownership of C memory
//! * `lxc_container_new` returns one reference, released by `lxc_container_put` in `Drop`.
//! * `state()` returns a static string (never freed); `error_string` belongs to the container.
//! * `config_file_name()` and `get_running_config_item()` return `malloc`ed strings that the
//!   caller must `free()`; we copy and free them right away.
//! * `get_config_item()` writes into a caller buffer (asked for the length first).
//! * Every `CString` we pass lives until the call returns; liblxc copies what it keeps.
//!
//! # Process helpers
//! Being the crate's only `unsafe` module, it also holds the few raw syscalls the monitor
//! needs: [`mark_inherited_fds_cloexec`], [`reset_signal_state`], [`pidfd_open`] and
//! [`pidfd_send_signal`], plus [`mount_setattr_idmap`] for the idmapped mounts of user-namespaced
//! pods (rustix and nix have no `mount_setattr`).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

mod sys {
    #![allow(
        non_camel_case_types,
        non_upper_case_globals,
        non_snake_case,
        dead_code
    )]
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/lxc_bindings.rs"));
}

/// Errors from liblxc calls and from preparing their arguments.
#[derive(Debug, thiserror::Error)]
pub enum LxcError {
    /// A string handed to liblxc contained a NUL byte, so it cannot become a C string.
    #[error("{what} contains an interior NUL byte")]
    InteriorNul { what: String },
    /// `lxc_container_new` returned NULL (invalid name, unreadable config, out of memory).
    #[error("lxc_container_new({name:?}, {lxcpath:?}) failed")]
    New { name: String, lxcpath: String },
    /// A liblxc method reported failure. `error_num`/`error_string` are the container's
    /// `error_num`/`error_string` fields right after the call (liblxc fills them only on some
    /// paths; 0/None is common) and `errno` the thread's errno.
    #[error("liblxc {op} failed for container {name:?}: {}", describe(*error_num, error_string.as_deref(), *errno))]
    Failed {
        op: &'static str,
        name: String,
        error_num: i32,
        error_string: Option<String>,
        errno: i32,
    },
    /// The linked liblxc left this method pointer NULL (older/newer ABI).
    #[error("this liblxc does not provide {method}")]
    Unsupported { method: &'static str },
    /// An argument was rejected before calling liblxc.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn describe(error_num: i32, error_string: Option<&str>, errno: i32) -> String {
    let mut out = String::new();
    if let Some(s) = error_string {
        out.push_str(s);
        out.push(' ');
    }
    out.push_str(&format!("(error_num {error_num}"));
    if errno != 0 {
        out.push_str(&format!(
            ", errno {errno}: {}",
            std::io::Error::from_raw_os_error(errno)
        ));
    }
    out.push(')');
    out
}

/// How a process ended, decoded from a `waitpid(2)` status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProcessExit {
    /// Normal `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ProcessExit {
    /// Decode a raw wait status (as liblxc stores in `error_num` after a foreground start and
    /// returns from `attach_run_wait`).
    ///
    /// liblxc 5.0.2 quirk (measured): when the container's PID 1 is killed by a signal, the
    /// `error_num` left by a foreground `start()` is `(sig << 8) | 0x7f`, i.e. a *stopped*
    /// status (`W_STOPCODE(sig)`), not `W_TERMSIG`-style. `start()` has returned, so PID 1 is
    /// gone: a "stopped" status can only mean that quirk and is decoded as a signal death.
    pub fn from_wait_status(status: i32) -> ProcessExit {
        if libc::WIFEXITED(status) {
            ProcessExit::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ProcessExit::Signaled(libc::WTERMSIG(status))
        } else if libc::WIFSTOPPED(status) {
            ProcessExit::Signaled(libc::WSTOPSIG(status))
        } else {
            // WIFCONTINUED cannot describe an ended process; keep the raw low byte visible.
            ProcessExit::Exited(status & 0xff)
        }
    }

    /// The shell / runc / containerd convention: exit code, or 128 + signal number.
    pub fn code(self) -> i32 {
        match self {
            ProcessExit::Exited(code) => code,
            ProcessExit::Signaled(sig) => 128 + sig,
        }
    }
}

/// Environment policy of an attached process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvPolicy {
    /// Keep the caller's environment (liblxc's default).
    #[default]
    Keep,
    /// Start from an empty environment (plus `extra_env`, `extra_keep_env`, and a few variables
    /// liblxc always sets such as `container=lxc`).
    Clear,
}

/// `LXC_ATTACH_*` flag bits, re-exported as plain `u32` constants.
pub mod attach_flags {
    use super::sys;
    /// Move the attached process into the container's cgroup.
    pub const MOVE_TO_CGROUP: u32 = sys::LXC_ATTACH_MOVE_TO_CGROUP;
    /// Drop the capabilities the container drops (`lxc.cap.drop`/`keep`).
    pub const DROP_CAPABILITIES: u32 = sys::LXC_ATTACH_DROP_CAPABILITIES;
    /// Use the container's personality (e.g. linux32).
    pub const SET_PERSONALITY: u32 = sys::LXC_ATTACH_SET_PERSONALITY;
    /// Exec under the container's LSM profile.
    pub const LSM_EXEC: u32 = sys::LXC_ATTACH_LSM_EXEC;
    /// Remount /proc and /sys (for when not attaching the mount namespace).
    pub const REMOUNT_PROC_SYS: u32 = sys::LXC_ATTACH_REMOUNT_PROC_SYS;
    /// Set `PR_SET_NO_NEW_PRIVS`.
    pub const NO_NEW_PRIVS: u32 = sys::LXC_ATTACH_NO_NEW_PRIVS;
    /// Allocate a new pty for the attached process.
    pub const TERMINAL: u32 = sys::LXC_ATTACH_TERMINAL;
    /// Apply `groups` as supplementary groups.
    pub const SETGROUPS: u32 = sys::LXC_ATTACH_SETGROUPS;
    /// Everything in the "on by default" half (cgroup, caps, personality, LSM).
    pub const DEFAULT: u32 = sys::LXC_ATTACH_DEFAULT;
}

/// Options for [`LxcContainer::attach_run_wait`]. `Default` equals liblxc's
/// `LXC_ATTACH_OPTIONS_DEFAULT` (all namespaces, default flags, root, inherited stdio).
#[derive(Debug, Clone)]
pub struct AttachOptions<'fd> {
    /// `LXC_ATTACH_*` bits, see [`attach_flags`].
    pub flags: u32,
    /// `CLONE_NEW*` bits of the namespaces to enter; `None` = all of the container's.
    pub namespaces: Option<i32>,
    pub env_policy: EnvPolicy,
    /// Extra `KEY=VALUE` entries set in the attached process.
    pub extra_env: Vec<String>,
    /// Names of caller variables kept even with [`EnvPolicy::Clear`].
    pub extra_keep_env: Vec<String>,
    /// `None` = liblxc's default (container root, or the init uid in a userns).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Initial working directory inside the container; `None` = keep the caller's path
    /// (falls back to `/` when it does not exist in the container).
    pub cwd: Option<String>,
    /// Supplementary groups of the attached process (with `LXC_ATTACH_SETGROUPS`); `None` keeps
    /// liblxc's default of dropping them all.
    pub groups: Option<Vec<u32>>,
    /// stdio of the attached process; `None` = the caller's 0/1/2.
    pub stdin: Option<BorrowedFd<'fd>>,
    pub stdout: Option<BorrowedFd<'fd>>,
    pub stderr: Option<BorrowedFd<'fd>>,
}

impl Default for AttachOptions<'_> {
    fn default() -> Self {
        AttachOptions {
            flags: attach_flags::DEFAULT,
            namespaces: None,
            env_policy: EnvPolicy::Keep,
            extra_env: Vec::new(),
            extra_keep_env: Vec::new(),
            uid: None,
            gid: None,
            cwd: None,
            groups: None,
            stdin: None,
            stdout: None,
            stderr: None,
        }
    }
}

/// liblxc's version string (e.g. "5.0.2").
pub fn version() -> String {
    // SAFETY: lxc_get_version takes no arguments and returns a pointer to a static,
    // NUL-terminated string (LXC_VERSION) or NULL; we never free it.
    let ptr = unsafe { sys::lxc_get_version() };
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL, static and NUL-terminated per the header.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// Mark every file descriptor >= 3 close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`).
///
/// Run once at the top of a helper process so that descriptors it inherited without
/// `O_CLOEXEC` (e.g. socket-activation fds of the daemon) can never leak into a container.
/// Descriptors Rust opens are already close-on-exec, so this only affects inherited ones.
pub fn mark_inherited_fds_cloexec() -> std::io::Result<()> {
    // SAFETY: close_range only changes descriptor flags; with CLOSE_RANGE_CLOEXEC nothing is
    // closed, so no OwnedFd anywhere in the process is invalidated.
    let rc = unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as c_int) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `pidfd_open(pid, 0)` (Linux >= 5.3): a descriptor for one process that cannot be confused
/// with a later process reusing the PID; it polls readable once the process has exited.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; on success it returns a new descriptor that
    // nothing else owns, which we wrap exactly once.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor owned by no one else (see above).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
}

/// `MOUNT_ATTR_IDMAP` of `<linux/mount.h>` (not in the libc crate).
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `<linux/mount.h>` (MOUNT_ATTR_SIZE_VER0 = 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH, {MOUNT_ATTR_IDMAP, userns_fd}, 32)` (Linux >= 5.12):
/// turn the detached mount `tree` (from `open_tree(OPEN_TREE_CLONE)`) into an idmapped mount that
/// shows files through the id mapping of the user namespace `userns` (mount_setattr(2)). Fails
/// with EINVAL when the filesystem cannot be idmapped (e.g. overlayfs itself), ENOSYS on old kernels.
pub fn mount_setattr_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> std::io::Result<()> {
    let attr = MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: both descriptors are borrowed for the duration of the call; the path is a valid
    // NUL-terminated empty string (with AT_EMPTY_PATH the call acts on `tree` itself); `attr` is a
    // live, correctly laid out `struct mount_attr` whose size we pass, and the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: signal exactly the process the pidfd refers to.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> std::io::Result<()> {
    // SAFETY: the descriptor is borrowed for the call; a NULL siginfo and zero flags are valid.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Give the calling process a pristine signal state: nothing blocked and every disposition
/// `SIG_DFL`. Call it at the top of the single-threaded process that runs liblxc's foreground
/// `start()`: liblxc hands the caller's signal mask on to the container's init (which passes it
/// to the application), and ignored signals survive exec. Measured before this existed, the
/// application saw the monitor's signalfd mask (SIGHUP/INT/USR1/TERM/CHLD blocked) and
/// signals 32/33 ignored: glibc's `posix_spawn` (used by std's `Command`) sets its internal
/// signals to SIG_IGN in the child, and lxc's init does not reset 32/33 either. glibc refuses
/// `sigaction()` on 32/33, so the raw `rt_sigaction` syscall is used.
pub fn reset_signal_state() -> std::io::Result<()> {
    /// The kernel's `struct sigaction` on x86_64 and aarch64 (not glibc's larger one).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid, fully initialised kernel-layout struct whose
        // handler is SIG_DFL (no code pointer), no old-action buffer, and the kernel's sigset
        // size of 8 bytes. Setting SIG_DFL cannot make a later signal run foreign code.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .map_err(std::io::Error::from)
}

/// For the `__exec` helper of a terminal exec: SIGINT, SIGQUIT and SIGTSTP (what ^C, ^\\ and ^Z on
/// the exec's terminal send to its foreground process group, which includes the helper) run an empty
/// handler instead of ending or stopping the helper. The command keeps its own reaction: a caught
/// signal's handler is reset to the default by exec(2), while an ignored one would stay ignored,
/// which is why this is not SIG_IGN. Called after [`reset_signal_state`].
pub fn survive_terminal_signals() -> std::io::Result<()> {
    extern "C" fn ignore(_: libc::c_int) {}
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(ignore), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP] {
        // SAFETY: the handler is an empty extern "C" function: async-signal-safe, touches no state.
        unsafe { sigaction(sig, &action) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}

fn cstring(what: impl FnOnce() -> String, value: &str) -> Result<CString, LxcError> {
    CString::new(value).map_err(|_| LxcError::InteriorNul { what: what() })
}

fn path_cstring(what: &str, path: &Path) -> Result<CString, LxcError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| LxcError::InteriorNul {
        what: format!("{what} {}", path.display()),
    })
}

/// A NULL-terminated `char *[]` whose strings live as long as the struct.
struct CStringArray {
    _strings: Vec<CString>,
    ptrs: Vec<*mut c_char>,
}

impl CStringArray {
    fn new(what: &str, items: &[String]) -> Result<CStringArray, LxcError> {
        let strings = items
            .iter()
            .enumerate()
            .map(|(i, s)| cstring(|| format!("{what}[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        // liblxc's prototypes take `char **`/`char *const []` but never write through them.
        let mut ptrs: Vec<*mut c_char> =
            strings.iter().map(|s| s.as_ptr() as *mut c_char).collect();
        ptrs.push(ptr::null_mut());
        Ok(CStringArray {
            _strings: strings,
            ptrs,
        })
    }

    fn as_ptr(&self) -> *mut *mut c_char {
        self.ptrs.as_ptr() as *mut *mut c_char
    }
}

/// Fetch a method pointer from the container's vtable, or `Unsupported`.
macro_rules! method {
    ($self:ident, $field:ident) => {{
        // SAFETY: `$self.ptr` is a live lxc_container for as long as `$self` exists (we hold a
        // reference released only in Drop). Reading one function-pointer field by value creates
        // no reference that could alias liblxc's own writes to the struct.
        let f = unsafe { (*$self.ptr.as_ptr()).$field };
        f.ok_or(LxcError::Unsupported {
            method: stringify!($field),
        })
    }};
}

/// One reference to a liblxc container object (`struct lxc_container`).
///
/// Not `Send`/`Sync`: liblxc's object carries per-call state (`error_num`, `daemonize`) that we
/// read back after calls; create one per thread (it is cheap) instead of sharing.
#[derive(Debug)]
pub struct LxcContainer {
    ptr: NonNull<sys::lxc_container>,
    name: String,
}

impl LxcContainer {
    /// `lxc_container_new(name, lxcpath)`. liblxc loads `<lxcpath>/<name>/config` if that file
    /// exists; nothing is created on disk.
    pub fn new(name: &str, lxcpath: &Path) -> Result<LxcContainer, LxcError> {
        let c_name = cstring(|| "container name".to_string(), name)?;
        let c_path = path_cstring("lxcpath", lxcpath)?;
        // SAFETY: both arguments are valid NUL-terminated strings that outlive the call; liblxc
        // copies them. A NULL return is handled below.
        let raw = unsafe { sys::lxc_container_new(c_name.as_ptr(), c_path.as_ptr()) };
        match NonNull::new(raw) {
            Some(ptr) => Ok(LxcContainer {
                ptr,
                name: name.to_string(),
            }),
            None => Err(LxcError::New {
                name: name.to_string(),
                lxcpath: lxcpath.display().to_string(),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's `error_num` field. After a *foreground* `start()` this is the raw wait
    /// status of the container's PID 1 (see [`ProcessExit::from_wait_status`]).
    pub fn error_num(&self) -> i32 {
        // SAFETY: live object (see `method!`); plain int read by value.
        unsafe { (*self.ptr.as_ptr()).error_num }
    }

    /// The container's `error_string` field, if liblxc set one.
    pub fn error_string(&self) -> Option<String> {
        // SAFETY: live object; the field is either NULL or a NUL-terminated string owned by
        // the container, which we only copy.
        unsafe {
            let s = (*self.ptr.as_ptr()).error_string;
            if s.is_null() {
                None
            } else {
                Some(CStr::from_ptr(s).to_string_lossy().into_owned())
            }
        }
    }

    fn failed(&self, op: &'static str) -> LxcError {
        // Capture errno first: the field reads below do not touch it, but be explicit.
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        LxcError::Failed {
            op,
            name: self.name.clone(),
            error_num: self.error_num(),
            error_string: self.error_string(),
            errno,
        }
    }

    fn check(&self, op: &'static str, ok: bool) -> Result<(), LxcError> {
        if ok {
            Ok(())
        } else {
            Err(self.failed(op))
        }
    }

    /// Load a config file (appends to what is loaded; call [`clear_config`](Self::clear_config)
    /// first to replace it).
    pub fn load_config(&self, path: &Path) -> Result<(), LxcError> {
        let f = method!(self, load_config)?;
        let c_path = path_cstring("config file", path)?;
        // SAFETY: live object; c_path outlives the call and liblxc only reads it.
        let ok = unsafe { f(self.ptr.as_ptr(), c_path.as_ptr()) };
        self.check("load_config", ok)
    }

    /// Write the in-memory config to `path`. Note: liblxc also creates the directory
    /// `<lxcpath>/<name>/` as a side effect, even when `path` is elsewhere.
    pub fn save_config(&self, path: &Path) -> Result<(), LxcError> {
        let f = method!(self, save_config)?;
        let c_path = path_cstring("config file", path)?;
        // SAFETY: live object; c_path outlives the call.
        let ok = unsafe { f(self.ptr.as_ptr(), c_path.as_ptr()) };
        self.check("save_config", ok)
    }

    /// Set one config key (list keys such as `lxc.mount.entry` append).
    pub fn set_config_item(&self, key: &str, value: &str) -> Result<(), LxcError> {
        let f = method!(self, set_config_item)?;
        let c_key = cstring(|| format!("config key {key:?}"), key)?;
        let c_value = cstring(|| format!("value of config key {key}"), value)?;
        // SAFETY: live object; both strings outlive the call and are copied by liblxc.
        let ok = unsafe { f(self.ptr.as_ptr(), c_key.as_ptr(), c_value.as_ptr()) };
        self.check("set_config_item", ok)
    }

    /// Read one config key. `None` when liblxc rejects the key (unknown key or error);
    /// `Some("")` when it is valid but unset. Multi-valued keys come back newline-separated.
    pub fn get_config_item(&self, key: &str) -> Option<String> {
        let f = method!(self, get_config_item).ok()?;
        let c_key = cstring(String::new, key).ok()?;
        // SAFETY: live object; a NULL buffer with length 0 asks only for the value's length.
        let len = unsafe { f(self.ptr.as_ptr(), c_key.as_ptr(), ptr::null_mut(), 0) };
        if len < 0 {
            return None;
        }
        let mut buf = vec![0u8; len as usize + 1];
        // SAFETY: buf has len+1 writable bytes and we pass exactly that size, so liblxc writes
        // at most len bytes plus the terminating NUL into memory we own.
        let len2 = unsafe {
            f(
                self.ptr.as_ptr(),
                c_key.as_ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len() as c_int,
            )
        };
        if len2 < 0 {
            return None;
        }
        // The value may have changed between the calls; never read past what we allocated.
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        buf.truncate(end);
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Read a config key from the *running* container (via its command socket).
    pub fn get_running_config_item(&self, key: &str) -> Option<String> {
        let f = method!(self, get_running_config_item).ok()?;
        let c_key = cstring(String::new, key).ok()?;
        // SAFETY: live object; c_key outlives the call.
        let ptr = unsafe { f(self.ptr.as_ptr(), c_key.as_ptr()) };
        take_malloced_string(ptr)
    }

    /// Path of the config file liblxc associates with this container.
    pub fn config_file_name(&self) -> Option<String> {
        let f = method!(self, config_file_name).ok()?;
        // SAFETY: live object; the result is a malloc'ed string we own (or NULL).
        let ptr = unsafe { f(self.ptr.as_ptr()) };
        take_malloced_string(ptr)
    }

    /// Drop the whole in-memory config.
    pub fn clear_config(&self) -> Result<(), LxcError> {
        let f = method!(self, clear_config)?;
        // SAFETY: live object; no other arguments.
        unsafe { f(self.ptr.as_ptr()) };
        Ok(())
    }

    /// Whether `start()` double-forks into the background (liblxc's default for a new object is
    /// `true`). The monitor uses `false`: it stays the parent and `start()` blocks until the
    /// container stops.
    pub fn want_daemonize(&self, daemonize: bool) -> Result<(), LxcError> {
        let f = method!(self, want_daemonize)?;
        // SAFETY: live object; plain bool argument.
        let ok = unsafe { f(self.ptr.as_ptr(), daemonize) };
        self.check("want_daemonize", ok)
    }

    /// Whether `start()` closes every inherited fd above 2 before starting.
    pub fn want_close_all_fds(&self, close: bool) -> Result<(), LxcError> {
        let f = method!(self, want_close_all_fds)?;
        // SAFETY: live object; plain bool argument.
        let ok = unsafe { f(self.ptr.as_ptr(), close) };
        self.check("want_close_all_fds", ok)
    }

    /// Start the container running `argv` (empty = the config's `lxc.init.cmd` /
    /// `lxc.execute.cmd`). `use_init = true` is application-container mode: liblxc runs its
    /// static init (`/usr/sbin/init.lxc.static`, fexecve'd from the host) as PID 1, which runs
    /// `argv` as PID 2, forwards signals and reaps orphans.
    ///
    /// **Forks** (clone of the container init) and, without `want_daemonize(false)`, also
    /// double-forks the caller: only call this from a single-threaded helper process. With
    /// `want_daemonize(false)` it blocks until the container has stopped; `Ok` then means it ran,
    /// and [`error_num`](Self::error_num) holds PID 1's wait status.
    pub fn start(&self, use_init: bool, argv: &[String]) -> Result<(), LxcError> {
        let f = method!(self, start)?;
        let args = CStringArray::new("argv", argv)?;
        let argv_ptr = if argv.is_empty() {
            ptr::null()
        } else {
            args.as_ptr() as *const *mut c_char
        };
        // SAFETY: live object; argv_ptr is NULL or a NULL-terminated array of valid C strings
        // that lives (in `args`) until the call returns. The caller contract above (single
        // threaded process) is what makes the fork inside liblxc sound.
        let ok = unsafe { f(self.ptr.as_ptr(), c_int::from(use_init), argv_ptr) };
        self.check("start", ok)
    }

    pub fn is_running(&self) -> bool {
        match method!(self, is_running) {
            // SAFETY: live object; no other arguments.
            Ok(f) => unsafe { f(self.ptr.as_ptr()) },
            Err(_) => false,
        }
    }

    /// "STOPPED", "STARTING", "RUNNING", "STOPPING", "ABORTING", "FREEZING", "FROZEN", "THAWED".
    pub fn state(&self) -> String {
        let Ok(f) = method!(self, state) else {
            return "UNKNOWN".to_string();
        };
        // SAFETY: live object; returns a pointer to a static state name (or NULL), never freed.
        let ptr = unsafe { f(self.ptr.as_ptr()) };
        if ptr.is_null() {
            return "UNKNOWN".to_string();
        }
        // SAFETY: non-NULL static NUL-terminated string.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }

    /// Host PID of the container's PID 1 (asked over the command socket; no fork).
    pub fn init_pid(&self) -> Option<i32> {
        let f = method!(self, init_pid).ok()?;
        // SAFETY: live object; no other arguments.
        let pid = unsafe { f(self.ptr.as_ptr()) };
        (pid > 0).then_some(pid)
    }

    /// SIGKILL the container (via the command socket).
    pub fn stop(&self) -> Result<(), LxcError> {
        let f = method!(self, stop)?;
        // SAFETY: live object.
        let ok = unsafe { f(self.ptr.as_ptr()) };
        self.check("stop", ok)
    }

    /// Send `lxc.signal.halt` (default SIGPWR) to PID 1 and wait up to `timeout_secs` for it to
    /// stop (-1 = forever, 0 = don't wait). Note lxc's init turns SIGPWR/SIGTERM into SIGTERM
    /// to everything, then SIGKILL one second later.
    pub fn shutdown(&self, timeout_secs: i32) -> Result<(), LxcError> {
        let f = method!(self, shutdown)?;
        // SAFETY: live object; plain int.
        let ok = unsafe { f(self.ptr.as_ptr(), timeout_secs) };
        self.check("shutdown", ok)
    }

    /// Wait until the container reaches `state` (e.g. "RUNNING", "STOPPED"); `timeout_secs` -1 =
    /// forever. Note liblxc polls once a second while the command socket does not exist yet.
    pub fn wait(&self, state: &str, timeout_secs: i32) -> Result<(), LxcError> {
        let f = method!(self, wait)?;
        let c_state = cstring(|| "state".to_string(), state)?;
        // SAFETY: live object; c_state outlives the call.
        let ok = unsafe { f(self.ptr.as_ptr(), c_state.as_ptr(), timeout_secs) };
        self.check("wait", ok)
    }

    /// Remove the container's directory under lxcpath (and its rootfs if liblxc created it).
    /// May run hooks, i.e. fork: helper process only.
    pub fn destroy(&self) -> Result<(), LxcError> {
        let f = method!(self, destroy)?;
        // SAFETY: live object.
        let ok = unsafe { f(self.ptr.as_ptr()) };
        self.check("destroy", ok)
    }

    /// Run `argv` inside the running container and wait for it; returns how it ended.
    ///
    /// **Forks** (twice, inside liblxc): only from a single-threaded helper process. liblxc
    /// `execvp`s `argv[0]` inside the container, so a bare name is searched in the attached
    /// process's `PATH`.
    pub fn attach_run_wait(
        &self,
        options: &AttachOptions<'_>,
        argv: &[String],
    ) -> Result<ProcessExit, LxcError> {
        let f = method!(self, attach_run_wait)?;
        let Some(program) = argv.first() else {
            return Err(LxcError::InvalidArgument(
                "attach_run_wait needs a non-empty argv".into(),
            ));
        };
        if let Some(bad) = options.extra_env.iter().find(|e| !e.contains('=')) {
            return Err(LxcError::InvalidArgument(format!(
                "extra_env entry {bad:?} is not KEY=VALUE"
            )));
        }
        let c_program = cstring(|| "argv[0]".to_string(), program)?;
        let c_argv = CStringArray::new("argv", argv)?;
        let env = CStringArray::new("extra_env", &options.extra_env)?;
        let keep = CStringArray::new("extra_keep_env", &options.extra_keep_env)?;
        let cwd = options
            .cwd
            .as_deref()
            .map(|d| cstring(|| "cwd".to_string(), d))
            .transpose()?;

        // Owned copy liblxc reads through `groups.list` during the call.
        let mut group_list: Vec<libc::gid_t> = options.groups.clone().unwrap_or_default();
        let flags = if options.groups.is_some() { options.flags | sys::LXC_ATTACH_SETGROUPS } else { options.flags };
        let mut opts = sys::lxc_attach_options_t {
            attach_flags: flags as c_int,
            namespaces: options.namespaces.unwrap_or(-1),
            personality: sys::LXC_ATTACH_DETECT_PERSONALITY as _,
            initial_cwd: cwd
                .as_ref()
                .map_or(ptr::null_mut(), |c| c.as_ptr() as *mut c_char),
            uid: options.uid.unwrap_or(u32::MAX),
            gid: options.gid.unwrap_or(u32::MAX),
            env_policy: match options.env_policy {
                EnvPolicy::Keep => sys::LXC_ATTACH_KEEP_ENV,
                EnvPolicy::Clear => sys::LXC_ATTACH_CLEAR_ENV,
            },
            extra_env_vars: if options.extra_env.is_empty() {
                ptr::null_mut()
            } else {
                env.as_ptr()
            },
            extra_keep_env: if options.extra_keep_env.is_empty() {
                ptr::null_mut()
            } else {
                keep.as_ptr()
            },
            stdin_fd: options.stdin.map_or(0, |fd| fd.as_raw_fd()),
            stdout_fd: options.stdout.map_or(1, |fd| fd.as_raw_fd()),
            stderr_fd: options.stderr.map_or(2, |fd| fd.as_raw_fd()),
            log_fd: -libc::EBADF,
            lsm_label: ptr::null_mut(),
            groups: sys::lxc_groups_t {
                size: group_list.len(),
                list: if group_list.is_empty() { ptr::null_mut() } else { group_list.as_mut_ptr() },
            },
        };
        // SAFETY: live object; `opts` mirrors LXC_ATTACH_OPTIONS_DEFAULT with pointers into
        // CStrings/arrays (`cwd`, `env`, `keep`, `c_program`, `c_argv`, `group_list`) and borrowed
        // fds that all outlive this call; liblxc reads them (dup2s the fds in the child) and keeps nothing.
        // The caller contract (single-threaded process) covers the forks inside.
        let status = unsafe {
            f(
                self.ptr.as_ptr(),
                &mut opts,
                c_program.as_ptr(),
                c_argv.as_ptr() as *const *const c_char,
            )
        };
        if status < 0 {
            return Err(self.failed("attach_run_wait"));
        }
        Ok(ProcessExit::from_wait_status(status))
    }
}

impl Drop for LxcContainer {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference (from lxc_container_new) and give it back once;
        // the pointer is not used afterwards.
        unsafe { sys::lxc_container_put(self.ptr.as_ptr()) };
    }
}

/// Copy and `free()` a string liblxc allocated for us.
fn take_malloced_string(ptr: *mut c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: liblxc returned a malloc'ed NUL-terminated string whose ownership passed to us;
    // we copy it and free it exactly once with the matching allocator.
    unsafe {
        let s = CStr::from_ptr(ptr).to_string_lossy().into_owned();
        libc::free(ptr.cast());
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::ProcessExit;

    #[test]
    fn wait_status_decoding() {
        assert_eq!(
            ProcessExit::from_wait_status(3 << 8),
            ProcessExit::Exited(3)
        );
        assert_eq!(ProcessExit::from_wait_status(137 << 8).code(), 137);
        assert_eq!(ProcessExit::from_wait_status(9), ProcessExit::Signaled(9));
        // liblxc 5.0.2's encoding of "PID 1 killed by SIGKILL" (measured: 2431).
        assert_eq!(
            ProcessExit::from_wait_status(0x097f),
            ProcessExit::Signaled(9)
        );
        assert_eq!(ProcessExit::from_wait_status(0x097f).code(), 137);
    }
}
