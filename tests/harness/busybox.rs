//! A real, runnable image: Debian's static busybox plus the few files containers expect.
//!
//! One layer: `/bin/busybox` (copied from the host's `busybox-static` package) with `/bin/<applet>`
//! symlinks, `/etc/passwd` (`root` 0, `app` 1000:1000 home `/home/app`, `nobody` 65534),
//! `/etc/group` (`root` 0, `app` 1000, `extra` 2000 with member `app`, `nogroup` 65534) and the
//! directories `/tmp` (1777), `/home/app` (owned by app), `/root`, `/proc`, `/sys`, `/dev`, `/etc`,
//! `/usr/bin`, `/var`. The config: `Cmd ["sh"]`, `Env ["PATH=/bin:/usr/bin"]`; variants are built
//! with the usual [`ImageBuilder`] setters (`entrypoint`, `cmd`, `working_dir`, `user`, `env`,
//! `stop_signal`, …).

use super::image::{Compression, ImageBuilder, Layer, LayerBuilder};
use std::sync::OnceLock;

/// Where the host's static busybox lives (Debian package `busybox-static`).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applets linked into `/bin` (everything the lifecycle tests run, plus a few handy ones).
pub const APPLETS: &[&str] = &[
    "sh", "ash", "echo", "cat", "ls", "sleep", "id", "hostname", "env", "pwd", "true", "false",
    "kill", "ps", "wget", "nc", "ping", "ip", "ifconfig", "touch", "mkdir", "test", "[", "yes",
    "head", "tail", "tr", "printf", "httpd", "grep", "wc", "rm", "stat", "ln", "cut", "seq",
    "uname", "whoami", "chmod", "date", "sed", "timeout", "mount", "readlink", "dd",
];

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

pub const GROUP: &str = "root:x:0:\n\
app:x:1000:\n\
extra:x:2000:app\n\
nogroup:x:65534:\n";

/// The busybox layer (built once per test binary: compressing 2 MB is not free in debug builds).
pub fn busybox_layer() -> Layer {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            let bin = std::fs::read(HOST_BUSYBOX).unwrap_or_else(|e| {
                panic!(
                    "cannot read {HOST_BUSYBOX} ({e}): install Debian's busybox-static \
                     (apt-get install -y busybox-static)"
                )
            });
            let mut l = LayerBuilder::new()
                .dir("bin", 0o755)
                .file("bin/busybox", &bin, 0o755);
            for a in APPLETS {
                l = l.symlink(&format!("bin/{a}"), "busybox");
            }
            l.dir("etc", 0o755)
                .file("etc/passwd", PASSWD.as_bytes(), 0o644)
                .file("etc/group", GROUP.as_bytes(), 0o644)
                .dir("tmp", 0o1777)
                .dir("home", 0o755)
                .dir_with("home/app", 0o755, 1000, 1000, super::image::DEFAULT_MTIME)
                .dir("root", 0o700)
                .dir("proc", 0o555)
                .dir("sys", 0o555)
                .dir("dev", 0o755)
                .dir("usr", 0o755)
                .dir("usr/bin", 0o755)
                .dir("var", 0o755)
                .build(Compression::GzipFast)
        })
        .clone()
}

/// The busybox image: `Cmd ["sh"]`, `Env ["PATH=/bin:/usr/bin"]`, no entrypoint, user, workdir.
pub fn busybox_image() -> ImageBuilder {
    ImageBuilder::new()
        .clear_env()
        .env("PATH=/bin:/usr/bin")
        .cmd(&["sh"])
        .layer(busybox_layer())
}
