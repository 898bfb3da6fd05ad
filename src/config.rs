//! The daemon's configuration: TOML file + built-in defaults + command-line overrides, and validation.
//!
//! A complete, working configuration exists with no file at all (`Config::default()`); the file at
//! `/etc/cri-lxc/config.toml` is optional. Must not depend on grpc/, cri/ or any backend's state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::image::registry_hosts::{RegistryConfig, RegistryConfigError};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/cri-lxc/config.toml";
pub const DEFAULT_SOCKET: &str = "/run/cri-lxc/cri-lxc.sock";
pub const DEFAULT_ROOT: &str = "/var/lib/cri-lxc";
pub const DEFAULT_STATE: &str = "/run/cri-lxc";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC Unix socket kubelet and crictl connect to (created with mode 0660).
    pub socket: PathBuf,
    /// Persistent data: store, image content, unpacked layers, container rootfs trees.
    pub root: PathBuf,
    /// Runtime state that must not survive a reboot (tmpfs on a normal host).
    pub state: PathBuf,
    /// `tracing` filter directive, e.g. `info` or `cri_lxc=debug`.
    pub log_level: String,
    /// Which cgroup driver kubelet must be configured with; `auto` picks systemd when PID 1 is systemd.
    pub cgroup_driver: CgroupDriverSetting,
    /// Clamp a container's `oom_score_adj` to the daemon's own when it would be lower (containerd's
    /// switch of the same name). Needed where the daemon lacks CAP_SYS_RESOURCE; off by default, as
    /// in containerd, so kubelet's values (-997 for Guaranteed pods) are applied as sent.
    pub restrict_oom_score_adj: bool,
    /// Runtime handler names (RuntimeClass `handler`) this node serves; `""` means the first.
    pub runtime_handlers: Vec<String>,
    pub image: ImageConfig,
    pub registry: RegistryConfig,
    pub cni: CniConfig,
    pub streaming: StreamingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(DEFAULT_SOCKET),
            root: PathBuf::from(DEFAULT_ROOT),
            state: PathBuf::from(DEFAULT_STATE),
            log_level: "info".to_string(),
            cgroup_driver: CgroupDriverSetting::Auto,
            restrict_oom_score_adj: false,
            runtime_handlers: vec!["lxc".to_string()],
            image: ImageConfig::default(),
            registry: RegistryConfig::default(),
            cni: CniConfig::default(),
            streaming: StreamingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriverSetting {
    Auto,
    Systemd,
    Cgroupfs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// A pull whose byte stream makes no progress for this long is cancelled (containerd's
    /// `image_pull_progress_timeout`, same 5 minute default).
    pub pull_progress_timeout_secs: u64,
    /// Layer blobs of one image downloaded at once.
    pub max_concurrent_downloads: usize,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig { pull_progress_timeout_secs: 300, max_concurrent_downloads: 3 }
    }
}

impl ImageConfig {
    pub fn pull_progress_timeout(&self) -> Duration {
        Duration::from_secs(self.pull_progress_timeout_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Where network configs live; the lexically first *.conflist/*.conf/*.json is used (kubelet's rule).
    pub conf_dir: PathBuf,
    /// Plugin binaries, searched in order (Debian's containernetworking-plugins installs to /usr/lib/cni).
    pub bin_dirs: Vec<PathBuf>,
    /// One plugin invocation may take this long before it is killed.
    pub plugin_timeout_secs: u64,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            plugin_timeout_secs: 30,
        }
    }
}

impl CniConfig {
    pub fn plugin_timeout(&self) -> Duration {
        Duration::from_secs(self.plugin_timeout_secs)
    }
}

/// The exec/attach/port-forward HTTP server (kubelet connects to the URLs Exec/Attach/PortForward return).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// `ip:port` to listen on; port 0 picks a free one (containerd's default is 127.0.0.1 with a free
    /// port too: kubelet on the same host is the only client).
    pub address: String,
    /// How long a returned URL stays usable (single use either way); kubelet's default is 1 minute.
    pub token_ttl_secs: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig { address: "127.0.0.1:0".into(), token_ttl_secs: 60 }
    }
}

impl StreamingConfig {
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("invalid config: registry: {0}")]
    Registry(#[from] RegistryConfigError),
}

/// Command-line values that override the file (each `None` leaves the file's or default value).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub socket: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub log_level: Option<String>,
}

impl Config {
    /// Load `path` if given or if the default file exists, apply overrides, validate.
    /// An explicitly named file that does not exist is an error; the default path may be absent.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (file, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut config = match std::fs::read_to_string(&file) {
            Ok(text) => Config::from_toml(&text, &file)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => Config::default(),
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.socket {
            self.socket = v.clone();
        }
        if let Some(v) = &o.root {
            self.root = v.clone();
        }
        if let Some(v) = &o.state {
            self.state = v.clone();
        }
        if let Some(v) = &o.log_level {
            self.log_level = v.clone();
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, path) in [("socket", &self.socket), ("root", &self.root), ("state", &self.state)] {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid { field, reason: format!("{} is not an absolute path", path.display()) });
            }
        }
        if self.log_level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(ConfigError::Invalid { field: "log_level", reason: format!("{:?} is not a tracing filter", self.log_level) });
        }
        if self.runtime_handlers.is_empty() || self.runtime_handlers.iter().any(|h| h.is_empty()) {
            return Err(ConfigError::Invalid { field: "runtime_handlers", reason: "must list at least one non-empty handler name".into() });
        }
        if self.image.pull_progress_timeout_secs == 0 {
            return Err(ConfigError::Invalid { field: "image.pull_progress_timeout_secs", reason: "must be at least 1".into() });
        }
        if self.cni.plugin_timeout_secs == 0 {
            return Err(ConfigError::Invalid { field: "cni.plugin_timeout_secs", reason: "must be at least 1".into() });
        }
        if self.cni.bin_dirs.is_empty() {
            return Err(ConfigError::Invalid { field: "cni.bin_dirs", reason: "must list at least one directory".into() });
        }
        if self.image.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid { field: "image.max_concurrent_downloads", reason: "must be at least 1".into() });
        }
        if self.streaming.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid { field: "streaming.address", reason: format!("{:?} is not an ip:port address", self.streaming.address) });
        }
        if self.streaming.token_ttl_secs == 0 {
            return Err(ConfigError::Invalid { field: "streaming.token_ttl_secs", reason: "must be at least 1".into() });
        }
        self.registry.validate()?;
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        // Serialising plain data structs cannot fail; fall back to Debug rather than panic.
        toml::to_string_pretty(self).unwrap_or_else(|err| format!("# cannot render config as TOML: {err}\n# {self:?}\n"))
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join("store.redb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_gives_working_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        // An explicitly named missing file is an error…
        assert!(matches!(Config::load(Some(&missing), &Overrides::default()), Err(ConfigError::Read { .. })));
        // …but the defaults themselves validate.
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.socket, PathBuf::from("/run/cri-lxc/cri-lxc.sock"));
        assert_eq!(config.root, PathBuf::from("/var/lib/cri-lxc"));
    }

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "root = \"/srv/a\"\nlog_level = \"debug\"\n[image]\npull_progress_timeout_secs = 7\n").unwrap();
        let o = Overrides { root: Some("/srv/b".into()), ..Default::default() };
        let c = Config::load(Some(&file), &o).unwrap();
        assert_eq!(c.root, PathBuf::from("/srv/b"));
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.image.pull_progress_timeout(), Duration::from_secs(7));
        assert_eq!(c.image.max_concurrent_downloads, 3);
    }

    #[test]
    fn rejects_unknown_keys_and_relative_paths() {
        assert!(matches!(Config::from_toml("sockett = \"/x\"", Path::new("f")), Err(ConfigError::Parse { .. })));
        let c = Config { root: "rel".into(), ..Default::default() };
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { field: "root", .. })));
    }

    #[test]
    fn toml_round_trip() {
        let c = Config::default();
        assert_eq!(Config::from_toml(&c.to_toml(), Path::new("f")).unwrap(), c);
    }
}
