//! User namespaces for pods (`hostUsers: false`: CRI `NamespaceOption.userns_options` mode POD):
//! the pod's id mapping, the pod's user namespace pinned like its other namespaces, and idmapped
//! bind mounts through it.
//!
//! Why the pod gets ONE user namespace that owns its network, IPC and UTS namespaces (as containerd
//! and CRI-O do): a process can only setns(2) into a namespace whose owning user namespace it has
//! CAP_SYS_ADMIN in. If the daemon created the netns in the initial user namespace, root in the pod
//! could neither join nor administer it. So the namespaces are created *inside* the pod's user
//! namespace, and every container of the pod joins that user namespace (`lxc.namespace.share.user`)
//! before joining the others.
//!
//! unshare(CLONE_NEWUSER) is refused to a multi-threaded process (unshare(2): EINVAL "CLONE_NEWUSER
//! was specified ... and the caller is multithreaded"), so a re-executed single-threaded helper
//! (`__pod-userns`) does the unsharing while the daemon writes its `uid_map`/`gid_map`
//! (user_namespaces(7): the writer holds CAP_SETUID/CAP_SETGID in the parent namespace, so
//! `setgroups` stays "allow" and the pod may still call setgroups(2)) and bind-mounts its nsfs files.
//! The helper is single-use and exits once the namespaces are pinned.
//!
//! Files: the pod's pinned user namespace is also what idmapped mounts (mount_setattr(2)
//! MOUNT_ATTR_IDMAP) use, so a file owned by uid N on disk appears owned by container uid N inside.
//!
//! Must not depend on cri/ (CRI types are converted to [`IdMap`] there).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{Gid, Uid};

use super::namespaces::{self, PinnedNamespaces, PodNamespaces};

pub const USERNS_SUBCOMMAND: &str = "__pod-userns";
/// File name of the pinned user namespace under the sandbox dir (next to namespaces::PIN_FILES).
pub const USERNS_PIN_FILE: &str = "userns";

/// The kernel's limit on lines of one uid_map/gid_map (user_namespaces(7), Linux >= 4.15).
const MAX_MAP_LINES: usize = 340;

/// One line of a uid_map/gid_map: `length` ids from `container_id` inside map to `host_id` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// A pod's uid and gid mappings (kubelet allocates 65536 ids per pod, starting at container id 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdMap {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

/// What a container of a `hostUsers: false` pod needs: the pinned user namespace it joins and the
/// mapping liblxc must know (`lxc.idmap`) for its own setup in that namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUserNamespace {
    pub path: PathBuf,
    pub map: IdMap,
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The requested mapping is malformed (the request's fault).
    #[error("user namespace mapping: {0}")]
    InvalidMapping(String),
    /// The node cannot do it (no user namespaces, no idmapped mounts on a filesystem involved).
    #[error("user namespaces are not usable on this node: {0}")]
    Unsupported(String),
    #[error("user namespace helper: {0}")]
    Helper(String),
    #[error(transparent)]
    Namespace(#[from] namespaces::NamespaceError),
}

impl IdMap {
    /// The checks the kernel would make when the map is written, plus ours: container id 0 must be
    /// mapped (the pod's root; kubelet always maps it) and host id 0 must not be (a pod in a user
    /// namespace must never be host root).
    pub fn validate(&self) -> Result<(), UsernsError> {
        for (kind, maps) in [("uid", &self.uids), ("gid", &self.gids)] {
            let bad = |m: String| Err(UsernsError::InvalidMapping(format!("{kind}s: {m}")));
            if maps.is_empty() {
                return bad("no mapping given".into());
            }
            if maps.len() > MAX_MAP_LINES {
                return bad(format!("{} mappings, the kernel accepts at most {MAX_MAP_LINES}", maps.len()));
            }
            for m in maps {
                if m.length == 0 {
                    return bad(format!("{m:?} has length 0"));
                }
                if u64::from(m.container_id) + u64::from(m.length) > 1 << 32 || u64::from(m.host_id) + u64::from(m.length) > 1 << 32 {
                    return bad(format!("{m:?} runs past the largest id"));
                }
                if m.host_id == 0 {
                    return bad(format!("{m:?} maps host id 0 (root) into the pod"));
                }
            }
            for (i, a) in maps.iter().enumerate() {
                for b in &maps[i + 1..] {
                    if overlaps(a.container_id, a.length, b.container_id, b.length) {
                        return bad(format!("container ranges of {a:?} and {b:?} overlap"));
                    }
                    if overlaps(a.host_id, a.length, b.host_id, b.length) {
                        return bad(format!("host ranges of {a:?} and {b:?} overlap"));
                    }
                }
            }
            if !maps.iter().any(|m| m.container_id == 0) {
                return bad("no mapping starts at container id 0: the pod's root must be mapped".into());
            }
        }
        Ok(())
    }

    /// Host uid and gid of the pod's root (container id 0).
    pub fn root_on_host(&self) -> (u32, u32) {
        let root = |maps: &[IdMapping]| maps.iter().find(|m| m.container_id == 0).map(|m| m.host_id).unwrap_or(u32::MAX);
        (root(&self.uids), root(&self.gids))
    }

    /// The text written to /proc/<pid>/uid_map or gid_map: one `inside outside length` per line.
    pub fn proc_map_text(maps: &[IdMapping]) -> String {
        maps.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length)).collect()
    }
}

fn overlaps(a: u32, a_len: u32, b: u32, b_len: u32) -> bool {
    let (a, b) = (u64::from(a), u64::from(b));
    a < b + u64::from(b_len) && b < a + u64::from(a_len)
}

/// Create the pod's user namespace with `map`, and inside it the namespaces `want` asks for (loopback
/// up in the netns, `hostname` in the UTS namespace); pin them all under `dir` (the user namespace as
/// [`USERNS_PIN_FILE`], the others as namespaces::PIN_FILES). Blocking: call from `spawn_blocking`.
/// On error nothing stays pinned and the helper is gone.
pub fn pin(exe: &Path, dir: &Path, map: &IdMap, want: PodNamespaces, hostname: &str) -> Result<PinnedNamespaces, UsernsError> {
    map.validate()?;
    std::fs::create_dir_all(dir).map_err(|source| namespaces::NamespaceError::Io { path: dir.to_path_buf(), source })?;
    let which: Vec<&str> = [(want.net, "net"), (want.ipc, "ipc"), (want.uts, "uts")].iter().filter(|(w, _)| *w).map(|(_, n)| *n).collect();
    let mut child = Command::new(exe)
        .arg(USERNS_SUBCOMMAND)
        .arg(which.join(","))
        .arg(hostname)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| UsernsError::Helper(format!("spawning {} {USERNS_SUBCOMMAND}: {e}", exe.display())))?;
    let mut pinned = PinnedNamespaces::default();
    let result = drive_helper(&mut child, dir, map, want, &mut pinned);
    // Closing stdin ends the helper in every state; its stderr says why it stopped early.
    drop(child.stdin.take());
    if result.is_err() {
        let _ = child.kill();
    }
    let output = child.wait_with_output();
    match result {
        Ok(()) => Ok(pinned),
        Err(e) => {
            for p in pinned.paths() {
                let _ = namespaces::unpin(p);
            }
            let stderr = output.map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string()).unwrap_or_default();
            Err(match e {
                UsernsError::Unsupported(m) if !stderr.is_empty() => UsernsError::Unsupported(format!("{m}: {stderr}")),
                UsernsError::Helper(m) if !stderr.is_empty() => UsernsError::Helper(format!("{m}: {stderr}")),
                other => other,
            })
        }
    }
}

fn drive_helper(child: &mut Child, dir: &Path, map: &IdMap, want: PodNamespaces, pinned: &mut PinnedNamespaces) -> Result<(), UsernsError> {
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().ok_or_else(|| UsernsError::Helper("no stdout".into()))?);
    let mut stdin = child.stdin.take().ok_or_else(|| UsernsError::Helper("no stdin".into()))?;
    // A helper that cannot create a user namespace (user.max_user_namespaces = 0, a kernel without
    // CONFIG_USER_NS, a seccomp policy) is the node's limitation.
    expect(&mut out, "unshared").map_err(|e| UsernsError::Unsupported(format!("creating a user namespace failed ({e})")))?;
    for (file, maps) in [("uid_map", &map.uids), ("gid_map", &map.gids)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, IdMap::proc_map_text(maps)).map_err(|e| UsernsError::Unsupported(format!("writing {path}: {e}")))?;
    }
    tell(&mut stdin, "mapped")?;
    expect(&mut out, "ready").map_err(|e| UsernsError::Helper(format!("creating namespaces in the pod's user namespace failed ({e})")))?;
    pinned.user = Some(pin_from(pid, "user", &dir.join(USERNS_PIN_FILE))?);
    if want.net {
        pinned.net = Some(pin_from(pid, "net", &dir.join("netns"))?);
    }
    if want.ipc {
        pinned.ipc = Some(pin_from(pid, "ipc", &dir.join("ipcns"))?);
    }
    if want.uts {
        pinned.uts = Some(pin_from(pid, "uts", &dir.join("utsns"))?);
    }
    tell(&mut stdin, "pinned")
}

fn expect(out: &mut BufReader<ChildStdout>, word: &str) -> Result<(), String> {
    let mut line = String::new();
    match out.read_line(&mut line) {
        Ok(_) if line.trim() == word => Ok(()),
        Ok(0) => Err("helper exited".into()),
        Ok(_) => Err(format!("helper said {:?}, expected {word:?}", line.trim())),
        Err(e) => Err(e.to_string()),
    }
}

fn tell(stdin: &mut ChildStdin, word: &str) -> Result<(), UsernsError> {
    writeln!(stdin, "{word}").and_then(|()| stdin.flush()).map_err(|e| UsernsError::Helper(format!("writing to the helper: {e}")))
}

/// Bind-mount the helper's nsfs file onto `target` (a plain file), holding the namespace open.
fn pin_from(pid: u32, kind: &'static str, target: &Path) -> Result<PathBuf, UsernsError> {
    std::fs::File::create(target).map_err(|source| namespaces::NamespaceError::Io { path: target.to_path_buf(), source })?;
    let source = format!("/proc/{pid}/ns/{kind}");
    mount(Some(source.as_str()), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|source| namespaces::NamespaceError::Pin { kind, path: target.to_path_buf(), source })?;
    Ok(target.to_path_buf())
}

/// `__pod-userns <net,ipc,uts> <hostname>`: runs in a fresh single-threaded process. Protocol on
/// stdin/stdout, one word a line: it unshares a user namespace and says `unshared`; waits for
/// `mapped` (the daemon wrote its maps); becomes root of the namespace, unshares the requested
/// namespaces (now owned by the user namespace), sets the hostname, brings loopback up and says
/// `ready`; waits for `pinned` (or EOF) and exits.
pub fn run_userns_helper(args: &[String]) -> i32 {
    let [which, hostname] = args else {
        eprintln!("usage: cri-lxc {USERNS_SUBCOMMAND} <net,ipc,uts> <hostname>");
        return 2;
    };
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let say = |word: &str| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{word}").and_then(|()| out.flush()).is_ok()
    };
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        eprintln!("unshare(CLONE_NEWUSER): {e}");
        return 1;
    }
    if !say("unshared") {
        return 1;
    }
    if !matches!(lines.next(), Some(Ok(l)) if l == "mapped") {
        eprintln!("the daemon did not map the user namespace");
        return 1;
    }
    // Root of the new namespace (mapped now), so that `ip` keeps its capabilities across execve
    // (capabilities(7): exec by a uid that is not root of the namespace clears them).
    if let Err(e) = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).and_then(|()| nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))) {
        eprintln!("becoming root of the pod's user namespace: {e}");
        return 1;
    }
    let mut flags = CloneFlags::empty();
    for name in which.split(',').filter(|s| !s.is_empty()) {
        flags |= match name {
            "net" => CloneFlags::CLONE_NEWNET,
            "ipc" => CloneFlags::CLONE_NEWIPC,
            "uts" => CloneFlags::CLONE_NEWUTS,
            other => {
                eprintln!("unknown namespace {other:?}");
                return 2;
            }
        };
    }
    if !flags.is_empty() {
        if let Err(e) = unshare(flags) {
            eprintln!("unshare({which}) in the pod's user namespace: {e}");
            return 1;
        }
    }
    if flags.contains(CloneFlags::CLONE_NEWUTS) && !hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(hostname) {
            eprintln!("sethostname({hostname:?}): {e}");
            return 1;
        }
    }
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        match Command::new("ip").args(["link", "set", "lo", "up"]).stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!("ip link set lo up: {}", String::from_utf8_lossy(&o.stderr).trim());
                return 1;
            }
            Err(e) => {
                eprintln!("running ip: {e}");
                return 1;
            }
        }
    }
    if !say("ready") {
        return 1;
    }
    // Wait until the daemon holds the namespaces (or gave up); then nothing needs this process.
    let _ = lines.next();
    0
}

/// Whether the kernel can idmap mounts of `dirs` through the user namespace pinned at `userns`:
/// creates a detached idmapped copy of each and drops it (nothing is attached anywhere).
pub fn probe_idmapped_mounts(userns: &Path, dirs: &[&Path]) -> Result<(), UsernsError> {
    let ns = std::fs::File::open(userns).map_err(|e| UsernsError::Helper(format!("opening {}: {e}", userns.display())))?;
    for dir in dirs {
        let tree = open_tree_clone(dir).map_err(|e| UsernsError::Unsupported(format!("open_tree({}): {e}", dir.display())))?;
        crate::runtime::lxc::ffi::mount_setattr_idmap(tree.as_fd(), ns.as_fd())
            .map_err(|e| UsernsError::Unsupported(format!("the filesystem of {} cannot be idmapped (mount_setattr MOUNT_ATTR_IDMAP: {e})", dir.display())))?;
    }
    Ok(())
}

/// Bind-mount `source` onto `target` (an existing directory), idmapped through the user namespace
/// pinned at `userns`: what is owned by id N on disk shows as owned by the host id that container id
/// N maps to, i.e. as N inside the pod. Not recursive (submounts of `source` are not carried over).
pub fn idmapped_bind(source: &Path, target: &Path, userns: &Path) -> std::io::Result<()> {
    let ns = std::fs::File::open(userns)?;
    let tree = open_tree_clone(source)?;
    crate::runtime::lxc::ffi::mount_setattr_idmap(tree.as_fd(), ns.as_fd())?;
    rustix::mount::move_mount(tree.as_fd(), "", rustix::fs::CWD, target, rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
    Ok(())
}

fn open_tree_clone(dir: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    Ok(rustix::mount::open_tree(rustix::fs::CWD, dir, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn m(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping { container_id, host_id, length }
    }

    fn both(maps: Vec<IdMapping>) -> IdMap {
        IdMap { uids: maps.clone(), gids: maps }
    }

    #[test]
    fn mappings_are_validated() {
        assert!(both(vec![m(0, 65536, 65536)]).validate().is_ok());
        assert!(both(vec![m(0, 100000, 1000), m(1000, 300000, 64536)]).validate().is_ok());
        for bad in [
            vec![],
            vec![m(0, 65536, 0)],
            vec![m(1, 65536, 65536)],
            vec![m(0, 0, 65536)],
            vec![m(0, 65536, 100), m(50, 200000, 100)],
            vec![m(0, 65536, 100), m(100, 65600, 100)],
            vec![m(0, u32::MAX, 2)],
        ] {
            assert!(matches!(both(bad.clone()).validate(), Err(UsernsError::InvalidMapping(_))), "{bad:?}");
        }
        let gid_only_bad = IdMap { uids: vec![m(0, 65536, 65536)], gids: vec![m(5, 65536, 65536)] };
        assert!(gid_only_bad.validate().is_err());
        assert_eq!(IdMap::proc_map_text(&[m(0, 65536, 65536), m(70000, 1, 2)]), "0 65536 65536\n70000 1 2\n");
        assert_eq!(both(vec![m(0, 131072, 65536)]).root_on_host(), (131072, 131072));
    }

    /// The helper is our own binary; unit tests have no such subcommand, so the daemon-side protocol
    /// is exercised by tests/userns.rs. Here: the idmapped bind primitive against the kernel.
    #[test]
    fn idmapped_bind_shows_files_through_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        let target = dir.path().join("dst");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(source.join("f"), b"x").unwrap();
        // A user namespace held by a child process (`unshare` from util-linux) with our mapping.
        let mut holder = Command::new("unshare").args(["--user", "sleep", "30"]).spawn().unwrap();
        let pid = holder.id();
        // Wait until the child is in its new user namespace (it is `unshare` until it execs sleep).
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        while std::fs::read_link(format!("/proc/{pid}/ns/user")).map(|l| l == ours).unwrap_or(true) {
            std::thread::yield_now();
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), "0 300000 65536\n").unwrap();
        std::fs::write(format!("/proc/{pid}/gid_map"), "0 300000 65536\n").unwrap();
        let ns = PathBuf::from(format!("/proc/{pid}/ns/user"));
        probe_idmapped_mounts(&ns, &[&source]).unwrap();
        idmapped_bind(&source, &target, &ns).unwrap();
        let md = std::fs::metadata(target.join("f")).unwrap();
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        let _ = holder.kill();
        let _ = holder.wait();
        assert_eq!((md.uid(), md.gid()), (300000, 300000), "uid 0 on disk shows as the pod root's host id");
    }
}
