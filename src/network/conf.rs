//! The CNI network configuration, read from the CNI conf dir (`/etc/cni/net.d`).
//!
//! Which file: the kubelet-era rule every CRI runtime follows — the lexically first `*.conflist`,
//! `*.conf` or `*.json` in the directory. A `.conflist` is a network configuration list (CNI spec
//! 1.x "Section 1: Network configuration format"; 0.3.x/0.4.0 "Network Configuration Lists"); a
//! `.conf`/`.json` holding a single plugin configuration (the pre-1.0 "Network Configuration")
//! becomes a one-plugin list with `name` and `cniVersion` lifted from it, as libcni's
//! `ConfListFromConf` does. A broken first file is an error naming that file, never silently
//! skipped: falling through to the next file would attach pods to a network nobody chose.
//!
//! [`ConfWatcher`] lets the daemon pick up a configuration that appears, changes or disappears
//! (a CNI daemonset installing its file after the runtime started) without a restart, re-reading
//! only when a cheap fingerprint of the directory changed.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// CNI spec versions this runtime implements (0.3.0 introduced the rich result and chaining,
/// 0.4.0 CHECK and prevResult on DEL, 1.0.0 removed single-plugin configs, 1.1.0 STATUS/GC).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// File name extensions considered, as kubelet/libcni `ConfFiles(dir, [".conf", ".conflist", ".json"])`.
const EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    /// Each plugin's config object as in the file (type, capabilities, ipam, …).
    pub plugins: Vec<Value>,
    /// The file it came from.
    pub source: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("no CNI network config (*.conflist, *.conf, *.json) in {}", dir.display())]
    NoConfig { dir: PathBuf },
    #[error("reading CNI config {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid CNI config {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Loads the network configuration `dir` selects (see the module doc).
pub fn load_conf_dir(dir: &Path) -> Result<NetworkConfList, ConfError> {
    let candidates = candidates(dir)?;
    let first = candidates.first().ok_or_else(|| ConfError::NoConfig { dir: dir.to_path_buf() })?;
    load_file(&dir.join(first))
}

/// Names of the regular files (symlinks followed) in `dir` with a config extension, sorted
/// lexically by their bytes. A missing directory simply holds no config.
fn candidates(dir: &Path) -> Result<Vec<OsString>, ConfError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfError::Read { path: dir.to_path_buf(), source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfError::Read { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        let has_ext = path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e));
        // A directory named x.conf, or a dangling symlink, is not a config file.
        if has_ext && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            names.push(entry.file_name());
        }
    }
    names.sort();
    Ok(names)
}

/// Parses and validates one config file; `.conflist` as a list, anything else as a single plugin.
pub fn load_file(path: &Path) -> Result<NetworkConfList, ConfError> {
    let bytes = std::fs::read(path).map_err(|source| ConfError::Read { path: path.to_path_buf(), source })?;
    let is_list = path.extension().is_some_and(|e| e == "conflist");
    parse(&bytes, is_list, path)
}

fn parse(bytes: &[u8], is_list: bool, path: &Path) -> Result<NetworkConfList, ConfError> {
    let invalid = |reason: String| ConfError::Invalid { path: path.to_path_buf(), reason };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(invalid("the top level is not a JSON object".into()));
    };
    // A .conf/.json that is really a list (no "type", has "plugins") is read as one: since spec
    // 1.0.0 removed single-plugin configs, lists end up in .conf files in the wild.
    let as_list = is_list || (!obj.contains_key("type") && obj.contains_key("plugins"));

    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => return Err(invalid("missing network \"name\"".into())),
        Some(_) => return Err(invalid("\"name\" is not a string".into())),
    };
    validate_name(&name).map_err(invalid)?;
    let cni_version = select_version(&obj).map_err(invalid)?;

    let (disable_check, plugins) = if as_list {
        let disable_check = parse_disable_check(obj.get("disableCheck")).map_err(invalid)?;
        let plugins = match obj.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p.clone(),
            Some(Value::Array(_)) => return Err(invalid("\"plugins\" is empty".into())),
            Some(_) => return Err(invalid("\"plugins\" is not a list".into())),
            None => return Err(invalid("missing \"plugins\" list".into())),
        };
        (disable_check, plugins)
    } else {
        // Single-plugin config: the whole object is the plugin (its name/cniVersion are overwritten at
        // execution time with the list's, which are the same values).
        (false, vec![Value::Object(obj.clone())])
    };
    for (i, plugin) in plugins.iter().enumerate() {
        validate_plugin(plugin).map_err(|r| invalid(format!("plugin {i}: {r}")))?;
    }
    Ok(NetworkConfList { name, cni_version, disable_check, plugins, source: path.to_path_buf() })
}

/// Spec 1.x Section 1: "Must start with an alphanumeric character, optionally followed by any
/// combination of one or more alphanumeric characters, underscore, dot (.) or hyphen (-)."
fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(format!("network name {name:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"))
    }
}

/// The version the list is executed with. Spec 1.1.0 Section 1 adds `cniVersions` (all versions the
/// config supports); the runtime picks the greatest one it supports, else falls back to `cniVersion`.
fn select_version(obj: &Map<String, Value>) -> Result<String, String> {
    if let Some(Value::Array(versions)) = obj.get("cniVersions") {
        let best = versions
            .iter()
            .filter_map(Value::as_str)
            .filter(|v| SUPPORTED_VERSIONS.contains(v))
            .max_by_key(|v| version_key(v));
        if let Some(best) = best {
            return Ok(best.to_string());
        }
    }
    match obj.get("cniVersion") {
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => Ok(v.clone()),
        Some(Value::String(v)) => {
            Err(format!("cniVersion {v:?} is not supported (supported: {})", SUPPORTED_VERSIONS.join(", ")))
        }
        Some(_) => Err("\"cniVersion\" is not a string".into()),
        None => Err("missing \"cniVersion\"".into()),
    }
}

/// libcni accepts a boolean or the strings "true"/"false" for `disableCheck`.
fn parse_disable_check(v: Option<&Value>) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("\"disableCheck\" must be true or false, not {other}")),
    }
}

/// Spec 1.x Section 1 "Plugin configuration objects": `type` is required and "must not contain
/// characters disallowed in file paths" — it names a binary inside the CNI bin dirs, nothing else.
pub(crate) fn validate_plugin(plugin: &Value) -> Result<(), String> {
    let Value::Object(obj) = plugin else {
        return Err("not a JSON object".into());
    };
    match obj.get("type") {
        Some(Value::String(t)) => validate_type(t),
        Some(_) => Err("\"type\" is not a string".into()),
        None => Err("missing \"type\"".into()),
    }
}

pub(crate) fn validate_type(t: &str) -> Result<(), String> {
    if t.is_empty() || t == "." || t == ".." || t.contains(['/', '\\', '\0']) {
        Err(format!("plugin type {t:?} is not a plain file name"))
    } else {
        Ok(())
    }
}

/// Orders "major.minor.patch" numerically (non-numeric parts sort first).
pub(crate) fn version_key(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// What decides whether the directory must be re-read: the candidate names and the identity and
/// freshness of the chosen (first) file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    names: Vec<OsString>,
    /// (dev, inode, size, mtime ns, ctime ns) of the first candidate.
    first: Option<(u64, u64, u64, i128, i128)>,
}

fn fingerprint(dir: &Path) -> Result<Fingerprint, ConfError> {
    let names = candidates(dir)?;
    let first = names.first().and_then(|n| std::fs::metadata(dir.join(n)).ok()).map(|m| {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        (m.dev(), m.ino(), m.size(), ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()))
    });
    Ok(Fingerprint { names, first })
}

type Loaded = Result<Arc<NetworkConfList>, Arc<ConfError>>;

/// Re-reads the conf dir only when it changed since the last [`ConfWatcher::current`] call: a
/// candidate appeared or went away, or the chosen file's inode, size, mtime or ctime changed. (An
/// in-place rewrite to the very same size within one filesystem timestamp tick goes unnoticed;
/// installers that write a temp file and rename it are always seen.)
pub struct ConfWatcher {
    dir: PathBuf,
    state: Mutex<Option<(Fingerprint, Loaded)>>,
}

impl ConfWatcher {
    pub fn new(dir: PathBuf) -> Self {
        ConfWatcher { dir, state: Mutex::new(None) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration as the directory holds it now; an unchanged directory costs a readdir and
    /// a stat. Errors are cached too (a broken file is reported again, not re-parsed, until it changes).
    pub fn current(&self) -> Result<Arc<NetworkConfList>, Arc<ConfError>> {
        let fp = fingerprint(&self.dir).map_err(Arc::new)?;
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((old, loaded)) = state.as_ref() {
            if *old == fp {
                return loaded.clone();
            }
        }
        let loaded: Loaded = match fp.names.first() {
            None => Err(Arc::new(ConfError::NoConfig { dir: self.dir.clone() })),
            Some(first) => load_file(&self.dir.join(first)).map(Arc::new).map_err(Arc::new),
        };
        match &loaded {
            Ok(conf) => tracing::info!(file = %conf.source.display(), network = %conf.name, version = %conf.cni_version, "CNI config loaded"),
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "no usable CNI config"),
        }
        *state = Some((fp, loaded.clone()));
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"net-a","plugins":[{"type":"bridge","bridge":"cni0"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    fn write(dir: &Path, name: &str, body: &str) {
        fs::write(dir.join(name), body).unwrap();
    }

    fn invalid_reason(e: ConfError, file: &str) -> String {
        match e {
            ConfError::Invalid { path, reason } => {
                assert_eq!(path.file_name().unwrap(), file);
                reason
            }
            other => panic!("expected Invalid for {file}, got {other:?}"),
        }
    }

    #[test]
    fn picks_the_lexically_first_candidate() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "20-b.conflist", &LIST.replace("net-a", "net-b"));
        write(d.path(), "10-a.conflist", LIST);
        write(d.path(), "05-notes.txt", "not a config");
        fs::create_dir(d.path().join("00-dir.conf")).unwrap();
        let conf = load_conf_dir(d.path()).unwrap();
        assert_eq!(conf.name, "net-a");
        assert_eq!(conf.cni_version, "1.0.0");
        assert!(!conf.disable_check);
        assert_eq!(conf.plugins.len(), 2);
        assert_eq!(conf.plugins[1]["capabilities"]["portMappings"], true);
        assert_eq!(conf.source, d.path().join("10-a.conflist"));

        // .conf and .json compete on name alone.
        write(d.path(), "01-x.json", r#"{"cniVersion":"0.4.0","name":"json-net","type":"ptp"}"#);
        assert_eq!(load_conf_dir(d.path()).unwrap().name, "json-net");
    }

    #[test]
    fn single_plugin_conf_becomes_a_list() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "10-single.conf",
            r#"{"cniVersion":"0.3.1","name":"single","type":"bridge","bridge":"br9","ipam":{"type":"host-local"}}"#,
        );
        let conf = load_conf_dir(d.path()).unwrap();
        assert_eq!(conf.name, "single");
        assert_eq!(conf.cni_version, "0.3.1");
        assert_eq!(conf.plugins.len(), 1);
        assert_eq!(conf.plugins[0]["type"], "bridge");
        assert_eq!(conf.plugins[0]["ipam"]["type"], "host-local");
        // A list stored under .conf is read as a list.
        write(d.path(), "05-list.conf", &LIST.replace("\"1.0.0\"", "\"0.4.0\",\"disableCheck\":\"true\""));
        let conf = load_conf_dir(d.path()).unwrap();
        assert_eq!((conf.plugins.len(), conf.disable_check, conf.cni_version.as_str()), (2, true, "0.4.0"));
    }

    #[test]
    fn broken_first_file_is_named_not_skipped() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "20-good.conflist", LIST);
        write(d.path(), "10-broken.conflist", "{\"name\": ");
        let reason = invalid_reason(load_conf_dir(d.path()).unwrap_err(), "10-broken.conflist");
        assert!(reason.contains("JSON"), "{reason}");

        for (body, expect) in [
            (r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#, "name"),
            (r#"{"cniVersion":"1.0.0","name":"-bad","plugins":[{"type":"bridge"}]}"#, "network name"),
            (r#"{"name":"n","plugins":[{"type":"bridge"}]}"#, "cniVersion"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, "empty"),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, "plugins"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#, "plugin 0: missing \"type\""),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":7}]}"#, "plugin 1"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#, "plain file name"),
            (r#"{"cniVersion":"1.0.0","name":"n","disableCheck":"maybe","plugins":[{"type":"b"}]}"#, "disableCheck"),
            (r#"[1,2]"#, "object"),
        ] {
            write(d.path(), "10-broken.conflist", body);
            let reason = invalid_reason(load_conf_dir(d.path()).unwrap_err(), "10-broken.conflist");
            assert!(reason.contains(expect), "{body}: {reason}");
        }
        // A single-plugin .conf without "type" is broken too.
        fs::remove_file(d.path().join("10-broken.conflist")).unwrap();
        write(d.path(), "10-broken.conf", r#"{"cniVersion":"0.4.0","name":"n"}"#);
        let reason = invalid_reason(load_conf_dir(d.path()).unwrap_err(), "10-broken.conf");
        assert!(reason.contains("type"), "{reason}");
    }

    #[test]
    fn unsupported_version_is_named() {
        let d = tempfile::tempdir().unwrap();
        for v in ["0.2.0", "0.1.0", "2.0.0", "1.0"] {
            write(d.path(), "10-a.conflist", &LIST.replace("1.0.0", v));
            let reason = invalid_reason(load_conf_dir(d.path()).unwrap_err(), "10-a.conflist");
            assert!(reason.contains(&format!("{v:?}")) && reason.contains("not supported"), "{reason}");
        }
        for v in SUPPORTED_VERSIONS {
            write(d.path(), "10-a.conflist", &LIST.replace("1.0.0", v));
            assert_eq!(load_conf_dir(d.path()).unwrap().cni_version, *v);
        }
        // Spec 1.1.0 cniVersions: the greatest supported one wins.
        write(
            d.path(),
            "10-a.conflist",
            r#"{"cniVersion":"1.0.0","cniVersions":["0.4.0","1.1.0","9.0.0"],"name":"n","plugins":[{"type":"b"}]}"#,
        );
        assert_eq!(load_conf_dir(d.path()).unwrap().cni_version, "1.1.0");
    }

    #[test]
    fn empty_or_missing_dir_has_no_config() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(load_conf_dir(d.path()), Err(ConfError::NoConfig { .. })));
        let missing = d.path().join("nope");
        let e = load_conf_dir(&missing).unwrap_err();
        assert!(matches!(&e, ConfError::NoConfig { dir } if *dir == missing));
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn watcher_notices_add_change_and_remove() {
        let d = tempfile::tempdir().unwrap();
        let w = ConfWatcher::new(d.path().to_path_buf());
        assert_eq!(w.dir(), d.path());
        assert!(matches!(*w.current().unwrap_err(), ConfError::NoConfig { .. }));

        // Appears.
        write(d.path(), "10-a.conflist", LIST);
        let first = w.current().unwrap();
        assert_eq!(first.name, "net-a");
        // Unchanged: the very same Arc comes back (no re-read).
        assert!(Arc::ptr_eq(&first, &w.current().unwrap()));

        // Changes in place (different size).
        write(d.path(), "10-a.conflist", &LIST.replace("net-a", "net-a2"));
        assert_eq!(w.current().unwrap().name, "net-a2");
        // Same size, same content length: replaced by rename (new inode).
        let tmp = d.path().join("tmp");
        fs::write(&tmp, LIST.replace("net-a", "net-z2")).unwrap();
        fs::rename(&tmp, d.path().join("10-a.conflist")).unwrap();
        assert_eq!(w.current().unwrap().name, "net-z2");

        // A lexically earlier file takes over; a later one does not.
        write(d.path(), "99-late.conflist", &LIST.replace("net-a", "late"));
        assert_eq!(w.current().unwrap().name, "net-z2");
        write(d.path(), "05-early.conflist", &LIST.replace("net-a", "early"));
        assert_eq!(w.current().unwrap().name, "early");

        // Broken, then fixed.
        write(d.path(), "05-early.conflist", "{");
        assert!(matches!(*w.current().unwrap_err(), ConfError::Invalid { .. }));
        write(d.path(), "05-early.conflist", &LIST.replace("net-a", "early2"));
        assert_eq!(w.current().unwrap().name, "early2");

        // Removed: the next one is used; all removed: no config.
        fs::remove_file(d.path().join("05-early.conflist")).unwrap();
        assert_eq!(w.current().unwrap().name, "net-z2");
        fs::remove_file(d.path().join("10-a.conflist")).unwrap();
        fs::remove_file(d.path().join("99-late.conflist")).unwrap();
        assert!(matches!(*w.current().unwrap_err(), ConfError::NoConfig { .. }));
    }
}
