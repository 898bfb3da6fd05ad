//! Which endpoints to try, in which order and how, when pulling from a registry host.
//!
//! Owns: the daemon's `[registry]` config section ([`RegistryConfig`]), reading
//! containerd-style `hosts.toml` files from `config_path` (fresh on every call,
//! so an admin can edit them without a restart), and turning both into an
//! ordered list of [`Endpoint`]s for one registry host.
//!
//! Must not depend on: image references beyond a host string, the puller,
//! the image store or any network access. It only reads small files; how an
//! endpoint is then contacted is `super::reference::ImageRef::to_oci_reference`
//! plus the puller's client setup.
//!
//! # Order of endpoints for a registry host
//! 1. `[host."…"]` tables of `<config_path>/<host>/hosts.toml`, in file order;
//! 2. `[registry.mirrors]."<host>"` URLs, in order;
//! 3. `[host."…"]` tables of `<config_path>/_default/hosts.toml` (only when the
//!    host has no directory of its own, as in containerd), then
//!    `[registry.mirrors]."*"` URLs;
//! 4. the upstream: the `server` of the hosts.toml used (host's or
//!    `_default`'s), else the registry host itself.
//!
//! Exact duplicates (same host, scheme, TLS and capabilities) keep only their
//! first position. Endpoints that may neither pull nor resolve are dropped
//! (a `capabilities = ["push"]` host is useless to a pull-only runtime).
//!
//! # Host directory lookup (containerd's rules)
//! For `myreg:5000` the first *existing directory* among
//! `<config_path>/myreg_5000_`, `<config_path>/myreg:5000` and
//! `<config_path>/_default` is used; a directory without `hosts.toml` (e.g.
//! only certificates) means "no hosts.toml entries" and stops the lookup.
//!
//! # Docker Hub
//! The upstream endpoint for `docker.io` has host `index.docker.io`, not
//! containerd's `registry-1.docker.io`: both serve the Docker Hub v2 API, and
//! `index.docker.io` is what oci-client itself resolves `docker.io` to. That
//! keeps the invariant `to_oci_reference(ep).resolve_registry() == ep.host`
//! without adding `?ns=docker.io` to every Docker Hub request, so the puller
//! can key oci-client's per-host protocol and credentials on `ep.host`. A
//! hosts.toml `server = "https://docker.io"` is read as "the upstream itself".
//!
//! # Plain HTTP and TLS verification
//! An explicit `http://` / `https://` in a URL always wins. Without a scheme
//! (the upstream host, or a scheme-less `[registry.mirrors]` entry) a host is
//! plain HTTP if listed in `insecure_http`, or if it is loopback (`localhost`,
//! `127.0.0.0/8`, `[::1]`) on a port other than 443 (containerd does the same
//! for localhost, though it first tries HTTPS; oci-client has no per-request
//! fallback, so we go straight to HTTP). A loopback host on 443 or without a
//! port uses HTTPS without verification, again as containerd does.
//! hosts.toml keys and `server` without a scheme mean `https://`, as in
//! containerd. `skip_verify` is set from the `skip_verify` list or the
//! hosts.toml field (top-level applies to the upstream/server).
//!
//! # Not supported (yet)
//! `override_path = true` hosts and hosts whose URL has a path other than
//! `/v2` are skipped with a warning: oci-client always talks to `/v2/` at the
//! host root. `ca`, `client`, `header`, `dial_timeout` and `proxy` are parsed
//! and then ignored with a warning.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The key in `[registry.mirrors]` that applies to every registry host.
pub const DEFAULT_MIRRORS_KEY: &str = "*";
/// containerd's fallback directory under `config_path`.
pub const DEFAULT_HOST_DIR: &str = "_default";
const HOSTS_FILE: &str = "hosts.toml";

/// The daemon config's `[registry]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// A directory in containerd's certs.d layout (`<host>/hosts.toml`, `_default/hosts.toml`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_path: Option<PathBuf>,
    /// Hosts (`host[:port]`) spoken to over plain HTTP.
    pub insecure_http: Vec<String>,
    /// Hosts (`host[:port]`) spoken to over TLS without certificate verification.
    pub skip_verify: Vec<String>,
    /// Registry host (as in the normalised reference, `docker.io` for Docker
    /// Hub, or `*` for all) → mirror URLs tried in order before the upstream.
    pub mirrors: BTreeMap<String, Vec<String>>,
}

/// One place to send registry requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// host[:port] to connect to (IPv6 in brackets).
    pub host: String,
    /// Speak plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// HTTPS without certificate verification (meaningless with `plain_http`).
    pub skip_verify: bool,
    /// false for the upstream (or the hosts.toml `server`).
    pub is_mirror: bool,
    /// May resolve tags → digests (hosts.toml capability "resolve").
    pub can_resolve: bool,
    /// May serve blobs/manifests by digest ("pull").
    pub can_pull: bool,
}

/// What went wrong with the registry configuration; every variant says where.
#[derive(Debug, thiserror::Error)]
pub enum RegistryConfigError {
    /// A registry host name that is not `host[:port]` (also guards the
    /// directory lookup against path tricks like `..`).
    #[error("invalid registry host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    /// A mirror / host / server URL that cannot be used; `origin` is the
    /// config key or the hosts.toml path it came from.
    #[error("invalid registry endpoint {url:?} in {origin}: {reason}")]
    InvalidUrl {
        origin: String,
        url: String,
        reason: String,
    },
    /// `config_path` or a hosts.toml could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `config_path` is not usable (e.g. not a directory).
    #[error("registry config_path {}: {reason}", path.display())]
    ConfigPath { path: PathBuf, reason: String },
    /// A hosts.toml that is not valid TOML or has invalid values.
    #[error("invalid hosts file {}: {reason}", path.display())]
    HostsFile { path: PathBuf, reason: String },
}

impl RegistryConfigError {
    /// The file or directory the error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            RegistryConfigError::Read { path, .. }
            | RegistryConfigError::ConfigPath { path, .. }
            | RegistryConfigError::HostsFile { path, .. } => Some(path),
            RegistryConfigError::InvalidHost { .. } | RegistryConfigError::InvalidUrl { .. } => {
                None
            }
        }
    }
}

impl RegistryConfig {
    /// Endpoints to try for `registry_host` (as in the normalised reference,
    /// e.g. "docker.io", "127.0.0.1:5000"), in the order described in the
    /// module docs. Reads hosts.toml files fresh on each call.
    ///
    /// Errors: an invalid `registry_host`, a bad mirror URL, or an unreadable
    /// or invalid hosts.toml (the error names the file). Never returns an
    /// empty list unless a hosts.toml leaves nothing that can pull.
    pub fn endpoints_for(&self, registry_host: &str) -> Result<Vec<Endpoint>, RegistryConfigError> {
        let registry_host = registry_host.to_ascii_lowercase();
        let parts =
            split_host_port(&registry_host).map_err(|reason| RegistryConfigError::InvalidHost {
                host: registry_host.clone(),
                reason,
            })?;

        let mut out: Vec<Endpoint> = Vec::new();
        let mut server: Option<Endpoint> = None;

        // 1. the host's own hosts.toml, or remember to use _default's.
        let (own_file, default_file) = match &self.config_path {
            Some(root) => match find_host_dir(root, &registry_host)? {
                HostDir::Own(dir) => (load_hosts_dir(&dir)?, None),
                HostDir::Default(dir) => (None, load_hosts_dir(&dir)?),
                HostDir::None => (None, None),
            },
            None => (None, None),
        };
        if let Some(file) = own_file {
            let (hosts, srv) = self.hosts_file_endpoints(&registry_host, &parts, file)?;
            out.extend(hosts);
            server = Some(srv);
        }

        // 2. this host's configured mirrors.
        out.extend(self.mirror_endpoints(&registry_host)?);

        // 3. _default hosts.toml, then the "*" mirrors.
        if let Some(file) = default_file {
            let (hosts, srv) = self.hosts_file_endpoints(&registry_host, &parts, file)?;
            out.extend(hosts);
            server = Some(srv);
        }
        out.extend(self.mirror_endpoints(DEFAULT_MIRRORS_KEY)?);

        // 4. upstream.
        out.push(match server {
            Some(s) => s,
            None => self.default_upstream(&registry_host, &parts),
        });

        let mut deduped: Vec<Endpoint> = Vec::with_capacity(out.len());
        for ep in out {
            if !(ep.can_pull || ep.can_resolve) {
                tracing::debug!(host = %ep.host, "registry endpoint can neither pull nor resolve; skipped");
                continue;
            }
            if !deduped.iter().any(|d| same_target(d, &ep)) {
                deduped.push(ep);
            }
        }
        Ok(deduped)
    }

    /// Check the static config at daemon start: mirror keys and URLs parse,
    /// the host lists hold `host[:port]`, and `config_path` (if set) is a
    /// readable directory. hosts.toml files are not checked here: they are
    /// read (and reported) on each pull, since they may change at any time.
    pub fn validate(&self) -> Result<(), RegistryConfigError> {
        for (list, hosts) in [
            ("insecure_http", &self.insecure_http),
            ("skip_verify", &self.skip_verify),
        ] {
            for h in hosts {
                split_host_port(h).map_err(|reason| RegistryConfigError::InvalidHost {
                    host: h.clone(),
                    reason: format!("in [registry] {list}: {reason}"),
                })?;
            }
        }
        for (key, urls) in &self.mirrors {
            if key != DEFAULT_MIRRORS_KEY {
                split_host_port(key).map_err(|reason| RegistryConfigError::InvalidHost {
                    host: key.clone(),
                    reason: format!("as a [registry.mirrors] key: {reason}"),
                })?;
            }
            self.mirror_list_endpoints(key, urls)?;
        }
        if let Some(root) = &self.config_path {
            let meta = std::fs::metadata(root).map_err(|source| RegistryConfigError::Read {
                path: root.clone(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(RegistryConfigError::ConfigPath {
                    path: root.clone(),
                    reason: "is not a directory".into(),
                });
            }
            std::fs::read_dir(root).map_err(|source| RegistryConfigError::Read {
                path: root.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn listed(list: &[String], host: &str) -> bool {
        list.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Endpoints from `[registry.mirrors].<key>`; the key is matched without case.
    /// Keys differing only in case are all used, in key order.
    fn mirror_endpoints(&self, key: &str) -> Result<Vec<Endpoint>, RegistryConfigError> {
        let mut out = Vec::new();
        for (k, urls) in &self.mirrors {
            if k.eq_ignore_ascii_case(key) {
                out.extend(self.mirror_list_endpoints(k, urls)?);
            }
        }
        Ok(out)
    }

    fn mirror_list_endpoints(
        &self,
        key: &str,
        urls: &[String],
    ) -> Result<Vec<Endpoint>, RegistryConfigError> {
        let origin = format!("[registry.mirrors].{key:?}");
        let mut out = Vec::with_capacity(urls.len());
        for url in urls {
            let parsed =
                parse_endpoint_url(url).map_err(|reason| RegistryConfigError::InvalidUrl {
                    origin: origin.clone(),
                    url: url.clone(),
                    reason,
                })?;
            if !parsed.path_is_root {
                return Err(RegistryConfigError::InvalidUrl {
                    origin,
                    url: url.clone(),
                    reason: "a path other than /v2 is not supported".into(),
                });
            }
            let plain_http = match parsed.scheme {
                Some(Scheme::Http) => true,
                Some(Scheme::Https) => false,
                None => self.default_plain_http(&parsed.host, &parsed.parts),
            };
            out.push(Endpoint {
                skip_verify: self.default_skip_verify(
                    &parsed.host,
                    &parsed.parts,
                    plain_http,
                    parsed.scheme.is_none(),
                ),
                host: parsed.host,
                plain_http,
                is_mirror: true,
                can_resolve: true,
                can_pull: true,
            });
        }
        Ok(out)
    }

    /// Plain HTTP for a host given without a scheme.
    fn default_plain_http(&self, host: &str, parts: &HostParts) -> bool {
        Self::listed(&self.insecure_http, host)
            || (parts.is_loopback() && !matches!(parts.port, None | Some(443)))
    }

    /// skip_verify for a TLS host: the config list, or a loopback host given
    /// without a scheme (containerd trusts its implicit localhost upstream; an
    /// explicit https:// URL asks for verification).
    fn default_skip_verify(
        &self,
        host: &str,
        parts: &HostParts,
        plain_http: bool,
        scheme_less: bool,
    ) -> bool {
        if plain_http {
            return false;
        }
        Self::listed(&self.skip_verify, host) || (scheme_less && parts.is_loopback())
    }

    fn default_upstream(&self, registry_host: &str, parts: &HostParts) -> Endpoint {
        let host = upstream_connect_host(registry_host);
        // The lists may name either the reference's registry or the host we connect to.
        let plain_http = self.default_plain_http(&host, parts)
            || Self::listed(&self.insecure_http, registry_host);
        let skip_verify = !plain_http
            && (self.default_skip_verify(&host, parts, plain_http, true)
                || Self::listed(&self.skip_verify, registry_host));
        Endpoint {
            host,
            plain_http,
            skip_verify,
            is_mirror: false,
            can_resolve: true,
            can_pull: true,
        }
    }

    /// The `[host]` endpoints of one hosts.toml plus its upstream (`server`
    /// or the registry host itself).
    fn hosts_file_endpoints(
        &self,
        registry_host: &str,
        parts: &HostParts,
        file: LoadedHostsFile,
    ) -> Result<(Vec<Endpoint>, Endpoint), RegistryConfigError> {
        let LoadedHostsFile { path, top, hosts } = file;
        let origin = path.display().to_string();
        let mut out = Vec::with_capacity(hosts.len());
        for (url, fields) in hosts {
            warn_ignored(&path, Some(&url), &fields);
            let parsed =
                parse_endpoint_url(&url).map_err(|reason| RegistryConfigError::InvalidUrl {
                    origin: origin.clone(),
                    url: url.clone(),
                    reason,
                })?;
            if fields.override_path {
                tracing::warn!(file = %path.display(), host = %url, "override_path is not supported; host skipped");
                continue;
            }
            if !parsed.path_is_root {
                tracing::warn!(file = %path.display(), host = %url, "host URLs with a path are not supported; host skipped");
                continue;
            }
            let caps = capabilities(&fields.capabilities).map_err(|reason| {
                RegistryConfigError::HostsFile {
                    path: path.clone(),
                    reason: format!("[host.{url:?}]: {reason}"),
                }
            })?;
            // containerd: a hosts.toml key without a scheme means https.
            let plain_http = parsed.scheme == Some(Scheme::Http);
            out.push(Endpoint {
                skip_verify: !plain_http
                    && (Self::listed(&self.skip_verify, &parsed.host)
                        || fields.skip_verify.unwrap_or(false)),
                host: parsed.host,
                plain_http,
                is_mirror: true,
                can_resolve: caps.resolve,
                can_pull: caps.pull,
            });
        }

        warn_ignored(&path, None, &top.fields);
        let upstream = match top.server.as_deref().filter(|s| !s.is_empty()) {
            None => {
                // containerd ignores top-level capabilities without a server
                // (the implicit upstream can do everything), but keeps skip_verify.
                let mut ep = self.default_upstream(registry_host, parts);
                ep.skip_verify =
                    !ep.plain_http && (ep.skip_verify || top.fields.skip_verify.unwrap_or(false));
                ep
            }
            Some(server) => {
                let parsed = parse_endpoint_url(server).map_err(|reason| {
                    RegistryConfigError::InvalidUrl {
                        origin: format!("{origin} (server)"),
                        url: server.to_string(),
                        reason,
                    }
                })?;
                if top.fields.override_path || !parsed.path_is_root {
                    return Err(RegistryConfigError::HostsFile {
                        path,
                        reason: format!(
                            "server {server:?}: override_path and URL paths are not supported"
                        ),
                    });
                }
                let caps = capabilities(&top.fields.capabilities).map_err(|reason| {
                    RegistryConfigError::HostsFile {
                        path: path.clone(),
                        reason: format!("top level: {reason}"),
                    }
                })?;
                let plain_http = parsed.scheme == Some(Scheme::Http);
                // `server = "https://docker.io"` means the upstream itself, which we reach at
                // its connect host (index.docker.io for Docker Hub).
                let host = if parsed.host == registry_host {
                    upstream_connect_host(registry_host)
                } else {
                    parsed.host
                };
                Endpoint {
                    skip_verify: !plain_http
                        && (Self::listed(&self.skip_verify, &host)
                            || Self::listed(&self.skip_verify, registry_host)
                            || top.fields.skip_verify.unwrap_or(false)),
                    host,
                    plain_http,
                    is_mirror: false,
                    can_resolve: caps.resolve,
                    can_pull: caps.pull,
                }
            }
        };
        Ok((out, upstream))
    }
}

/// Two endpoints that would send identical requests.
fn same_target(a: &Endpoint, b: &Endpoint) -> bool {
    a.host == b.host
        && a.plain_http == b.plain_http
        && a.skip_verify == b.skip_verify
        && a.can_pull == b.can_pull
        && a.can_resolve == b.can_resolve
}

/// Where to connect for a registry's own upstream (see module docs on Docker Hub).
fn upstream_connect_host(registry_host: &str) -> String {
    match registry_host {
        "docker.io" | "index.docker.io" => "index.docker.io".to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// hosts.toml

/// Fields shared by the top level and `[host."…"]` tables of a hosts.toml.
/// Unknown fields are ignored, as containerd does, so files written for a
/// newer containerd still load.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostFields {
    capabilities: Option<Vec<String>>,
    ca: Option<StringOrList>,
    client: Option<toml::Value>,
    skip_verify: Option<bool>,
    header: Option<toml::Table>,
    override_path: bool,
    dial_timeout: Option<String>,
    proxy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// The parts of a hosts.toml that are not per-host fields. Host keys are
/// `Spanned` so we can restore file order: toml's table is sorted by key
/// unless the `preserve_order` feature is on, and order matters here.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostsFileTop {
    server: Option<String>,
    host: BTreeMap<toml::Spanned<String>, HostFields>,
}

struct TopLevel {
    server: Option<String>,
    fields: HostFields,
}

struct LoadedHostsFile {
    path: PathBuf,
    top: TopLevel,
    /// `[host."url"]` tables in file order.
    hosts: Vec<(String, HostFields)>,
}

enum HostDir {
    Own(PathBuf),
    Default(PathBuf),
    None,
}

/// containerd's lookup: `host_port_`, then `host:port` (or just `host`), then `_default`.
fn find_host_dir(root: &Path, registry_host: &str) -> Result<HostDir, RegistryConfigError> {
    let mut candidates = Vec::with_capacity(2);
    if let Some(idx) = registry_host.rfind(':') {
        // Only a real port separator, not a colon inside "[::1]".
        if !registry_host[idx..].contains(']') && idx > 0 {
            candidates.push(format!(
                "{}_{}_",
                &registry_host[..idx],
                &registry_host[idx + 1..]
            ));
        }
    }
    candidates.push(registry_host.to_string());
    for c in candidates {
        let dir = root.join(c);
        if is_dir(&dir)? {
            return Ok(HostDir::Own(dir));
        }
    }
    let dir = root.join(DEFAULT_HOST_DIR);
    if is_dir(&dir)? {
        return Ok(HostDir::Default(dir));
    }
    Ok(HostDir::None)
}

fn is_dir(p: &Path) -> Result<bool, RegistryConfigError> {
    match std::fs::metadata(p) {
        Ok(m) => Ok(m.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(RegistryConfigError::Read {
            path: p.to_path_buf(),
            source,
        }),
    }
}

/// Reads `<dir>/hosts.toml`; a missing file is not an error (a host dir may
/// hold only certificates).
fn load_hosts_dir(dir: &Path) -> Result<Option<LoadedHostsFile>, RegistryConfigError> {
    let path = dir.join(HOSTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(dir = %dir.display(), "registry host directory without hosts.toml");
            return Ok(None);
        }
        Err(source) => return Err(RegistryConfigError::Read { path, source }),
    };
    parse_hosts_file(path, &text).map(Some)
}

fn parse_hosts_file(path: PathBuf, text: &str) -> Result<LoadedHostsFile, RegistryConfigError> {
    let bad = |e: toml::de::Error| RegistryConfigError::HostsFile {
        path: path.clone(),
        reason: e.to_string(),
    };
    // Parsed twice on purpose: once for the shared top-level fields (the
    // struct ignores `server`/`host`), once for server and the ordered host
    // tables. Avoids serde(flatten), which would lose the key spans.
    let fields: HostFields = toml::from_str(text).map_err(bad)?;
    let top: HostsFileTop = toml::from_str(text).map_err(bad)?;
    let mut hosts: Vec<(toml::Spanned<String>, HostFields)> = top.host.into_iter().collect();
    hosts.sort_by_key(|(k, _)| k.span().start);
    Ok(LoadedHostsFile {
        path,
        top: TopLevel {
            server: top.server,
            fields,
        },
        hosts: hosts
            .into_iter()
            .map(|(k, v)| (k.into_inner(), v))
            .collect(),
    })
}

fn warn_ignored(path: &Path, host: Option<&str>, f: &HostFields) {
    let ignored: Vec<&str> = [
        ("client", f.client.is_some()),
        ("header", f.header.is_some()),
        ("dial_timeout", f.dial_timeout.is_some()),
        ("proxy", f.proxy.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if let Some(ca) = &f.ca {
        // Recorded so the admin sees it is not in effect; custom CAs are not
        // wired into the client yet.
        let paths = match ca {
            StringOrList::One(p) => vec![p.as_str()],
            StringOrList::Many(ps) => ps.iter().map(String::as_str).collect(),
        };
        tracing::warn!(
            file = %path.display(),
            host = host.unwrap_or("(top level)"),
            ca = ?paths,
            "hosts.toml ca is not supported yet; system roots are used"
        );
    }
    if !ignored.is_empty() {
        tracing::warn!(
            file = %path.display(),
            host = host.unwrap_or("(top level)"),
            fields = ?ignored,
            "hosts.toml fields not supported by cri-lxc are ignored"
        );
    }
}

struct Caps {
    pull: bool,
    resolve: bool,
}

/// containerd: no capabilities → all; unknown names are an error.
fn capabilities(list: &Option<Vec<String>>) -> Result<Caps, String> {
    let Some(list) = list.as_ref().filter(|l| !l.is_empty()) else {
        return Ok(Caps {
            pull: true,
            resolve: true,
        });
    };
    let mut caps = Caps {
        pull: false,
        resolve: false,
    };
    for c in list {
        match c.to_ascii_lowercase().as_str() {
            "pull" => caps.pull = true,
            "resolve" => caps.resolve = true,
            // Meaningful to containerd; a CRI runtime never pushes.
            "push" => {}
            other => return Err(format!("unknown capability {other:?}")),
        }
    }
    Ok(caps)
}

// ---------------------------------------------------------------------------
// URLs and hosts (no url crate: we only need scheme://host[:port][/v2])

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

struct ParsedUrl {
    scheme: Option<Scheme>,
    /// Lowercased host[:port].
    host: String,
    parts: HostParts,
    /// Path empty, "/", "/v2" or "/v2/".
    path_is_root: bool,
}

fn parse_endpoint_url(url: &str) -> Result<ParsedUrl, String> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Some(Scheme::Http), r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Some(Scheme::Https), r)
    } else if url.contains("://") {
        return Err("only http:// and https:// are supported".into());
    } else {
        (None, url)
    };
    if rest.contains(['?', '#']) {
        return Err("query strings and fragments are not allowed".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in URLs are not supported".into());
    }
    let host = authority.to_ascii_lowercase();
    let parts = split_host_port(&host)?;
    let path_is_root = matches!(path.trim_end_matches('/'), "" | "/v2");
    Ok(ParsedUrl {
        scheme,
        host,
        parts,
        path_is_root,
    })
}

struct HostParts {
    /// Host without port; IPv6 without brackets.
    name: String,
    port: Option<u16>,
}

impl HostParts {
    fn is_loopback(&self) -> bool {
        if self.name == "localhost" {
            return true;
        }
        match self.name.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => false,
        }
    }
}

/// Validates `host[:port]` / `[ipv6][:port]`. Hostnames are DNS-like
/// labels; anything with `/`, `..`, spaces or an empty part is rejected,
/// which also keeps the string safe as a directory name under config_path.
fn split_host_port(s: &str) -> Result<HostParts, String> {
    if s.is_empty() {
        return Err("empty host".into());
    }
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| "unterminated '[' in host".to_string())?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| "unexpected text after IPv6 address".to_string())?,
            ),
        };
        (addr.to_string(), port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port {p:?}"))?,
        ),
    };
    if !s.starts_with('[') {
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!("{name:?} is not a valid host name"));
        }
    }
    Ok(HostParts { name, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ep(host: &str, plain_http: bool, skip_verify: bool, is_mirror: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            plain_http,
            skip_verify,
            is_mirror,
            can_resolve: true,
            can_pull: true,
        }
    }

    fn hosts(eps: &[Endpoint]) -> Vec<&str> {
        eps.iter().map(|e| e.host.as_str()).collect()
    }

    fn write_hosts(root: &Path, dir: &str, text: &str) {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(HOSTS_FILE), text).unwrap();
    }

    fn with_dir(dir: &tempfile::TempDir) -> RegistryConfig {
        RegistryConfig {
            config_path: Some(dir.path().to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn default_config_gives_only_upstream() {
        let c = RegistryConfig::default();
        assert_eq!(
            c.endpoints_for("quay.io").unwrap(),
            vec![ep("quay.io", false, false, false)]
        );
        assert_eq!(
            c.endpoints_for("myreg.local:5000").unwrap(),
            vec![ep("myreg.local:5000", false, false, false)]
        );
    }

    #[test]
    fn docker_hub_upstream_is_index_docker_io() {
        let c = RegistryConfig::default();
        assert_eq!(
            c.endpoints_for("docker.io").unwrap(),
            vec![ep("index.docker.io", false, false, false)]
        );
    }

    #[test]
    fn loopback_defaults_to_plain_http() {
        let c = RegistryConfig::default();
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3:80",
            "[::1]:5000",
        ] {
            assert_eq!(
                c.endpoints_for(h).unwrap(),
                vec![ep(h, true, false, false)],
                "{h}"
            );
        }
        // On 443 or without a port: HTTPS, but loopback is not verified (containerd).
        for h in ["localhost", "127.0.0.1:443", "[::1]"] {
            assert_eq!(
                c.endpoints_for(h).unwrap(),
                vec![ep(h, false, true, false)],
                "{h}"
            );
        }
        // Not loopback.
        assert!(!c.endpoints_for("128.0.0.1:5000").unwrap()[0].plain_http);
        assert!(!c.endpoints_for("localhost.example:5000").unwrap()[0].plain_http);
    }

    #[test]
    fn insecure_http_and_skip_verify_lists() {
        let c = RegistryConfig {
            insecure_http: vec!["myreg.local:5000".into()],
            skip_verify: vec!["MyReg.local:443".into(), "docker.io".into()],
            ..Default::default()
        };
        assert_eq!(
            c.endpoints_for("myreg.local:5000").unwrap(),
            vec![ep("myreg.local:5000", true, false, false)]
        );
        assert_eq!(
            c.endpoints_for("myreg.local:443").unwrap(),
            vec![ep("myreg.local:443", false, true, false)]
        );
        // The list may name the reference's registry rather than the connect host.
        assert_eq!(
            c.endpoints_for("docker.io").unwrap(),
            vec![ep("index.docker.io", false, true, false)]
        );
        // Exact host[:port] match only.
        assert_eq!(
            c.endpoints_for("myreg.local").unwrap(),
            vec![ep("myreg.local", false, false, false)]
        );
    }

    #[test]
    fn mirrors_come_first_in_order_then_star_then_upstream() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "docker.io".to_string(),
            vec![
                "https://mirror.example:5000".to_string(),
                "http://127.0.0.1:5000".to_string(),
            ],
        );
        mirrors.insert("*".to_string(), vec!["http://127.0.0.1:5001".to_string()]);
        let c = RegistryConfig {
            mirrors,
            ..Default::default()
        };
        assert_eq!(
            c.endpoints_for("docker.io").unwrap(),
            vec![
                ep("mirror.example:5000", false, false, true),
                ep("127.0.0.1:5000", true, false, true),
                ep("127.0.0.1:5001", true, false, true),
                ep("index.docker.io", false, false, false),
            ]
        );
        // Other hosts get only the "*" mirrors.
        assert_eq!(
            hosts(&c.endpoints_for("quay.io").unwrap()),
            vec!["127.0.0.1:5001", "quay.io"]
        );
    }

    #[test]
    fn mirror_without_scheme_follows_host_rules() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "quay.io".to_string(),
            vec![
                "mirror.example:5000".to_string(),
                "localhost:5000".to_string(),
                "insecure.example/v2/".to_string(),
                "https://127.0.0.1:5443".to_string(),
            ],
        );
        let c = RegistryConfig {
            mirrors,
            insecure_http: vec!["insecure.example".into()],
            skip_verify: vec!["mirror.example:5000".into()],
            ..Default::default()
        };
        assert_eq!(
            c.endpoints_for("quay.io").unwrap(),
            vec![
                ep("mirror.example:5000", false, true, true),
                ep("localhost:5000", true, false, true),
                ep("insecure.example", true, false, true),
                // Explicit https:// on loopback wins over the HTTP default, and is verified.
                ep("127.0.0.1:5443", false, false, true),
                ep("quay.io", false, false, false),
            ]
        );
    }

    #[test]
    fn mirror_keys_match_case_insensitively() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert("Quay.IO".to_string(), vec!["https://m.example".to_string()]);
        let c = RegistryConfig {
            mirrors,
            ..Default::default()
        };
        assert_eq!(
            hosts(&c.endpoints_for("quay.io").unwrap()),
            vec!["m.example", "quay.io"]
        );
    }

    #[test]
    fn duplicate_endpoints_are_tried_once() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "127.0.0.1:5001".to_string(),
            vec!["http://127.0.0.1:5001".to_string()],
        );
        mirrors.insert("*".to_string(), vec!["http://127.0.0.1:5001".to_string()]);
        let c = RegistryConfig {
            mirrors,
            ..Default::default()
        };
        assert_eq!(
            c.endpoints_for("127.0.0.1:5001").unwrap(),
            vec![ep("127.0.0.1:5001", true, false, true)]
        );
    }

    #[test]
    fn bad_mirror_urls_are_errors() {
        for bad in [
            "ftp://m.example",
            "https://",
            "https://m.example:notaport",
            "https://m.example:0",
            "https://user:pw@m.example",
            "https://m.example/prefix",
            "https://m.example/v2?x=1",
            "https://bad host",
            "https://[::1",
            "https://../x",
        ] {
            let mut mirrors = BTreeMap::new();
            mirrors.insert("docker.io".to_string(), vec![bad.to_string()]);
            let c = RegistryConfig {
                mirrors,
                ..Default::default()
            };
            let err = c.endpoints_for("docker.io").unwrap_err();
            assert!(
                matches!(&err, RegistryConfigError::InvalidUrl { url, origin, .. } if url == bad && origin.contains("docker.io")),
                "{bad}: {err}"
            );
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_registry_host_is_rejected() {
        let c = RegistryConfig::default();
        for bad in [
            "",
            "../etc",
            "a/b",
            "a b",
            "host:99999",
            "[::1",
            "-a.com",
            "a..b",
        ] {
            assert!(
                matches!(
                    c.endpoints_for(bad),
                    Err(RegistryConfigError::InvalidHost { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn hosts_toml_entries_in_file_order_with_capabilities() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            "docker.io",
            r#"
server = "https://registry-1.docker.io"

[host."https://zz-public-mirror.example.com"]
  capabilities = ["pull"]
[host."https://aa-docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"
[host."http://192.0.2.10:5000"]
  capabilities = ["PULL", "resolve", "push"]
  skip_verify = true
[host."https://insecure.example"]
  skip_verify = true
"#,
        );
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "docker.io".to_string(),
            vec!["https://cfg-mirror.example".to_string()],
        );
        mirrors.insert("*".to_string(), vec!["https://star.example".to_string()]);
        let c = RegistryConfig {
            mirrors,
            ..with_dir(&dir)
        };
        let eps = c.endpoints_for("docker.io").unwrap();
        let pull_only = Endpoint {
            can_resolve: false,
            ..ep("zz-public-mirror.example.com", false, false, true)
        };
        assert_eq!(
            eps,
            vec![
                pull_only,
                ep("aa-docker-mirror.internal", false, false, true),
                // skip_verify is meaningless (and false) on plain HTTP.
                ep("192.0.2.10:5000", true, false, true),
                ep("insecure.example", false, true, true),
                ep("cfg-mirror.example", false, false, true),
                ep("star.example", false, false, true),
                // The server override, not a mirror.
                ep("registry-1.docker.io", false, false, false),
            ]
        );
    }

    #[test]
    fn hosts_toml_server_naming_the_registry_is_the_upstream() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            "docker.io",
            "server = \"https://docker.io\"\n[host.\"https://registry-1.docker.io\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
        );
        let eps = with_dir(&dir).endpoints_for("docker.io").unwrap();
        assert_eq!(
            eps,
            vec![
                ep("registry-1.docker.io", false, false, true),
                ep("index.docker.io", false, false, false),
            ]
        );
    }

    #[test]
    fn hosts_toml_top_level_fields_apply_to_upstream() {
        let dir = tempfile::tempdir().unwrap();
        // No server: top-level skip_verify applies to the implicit upstream,
        // top-level capabilities are ignored (containerd).
        write_hosts(
            dir.path(),
            "a.example",
            "skip_verify = true\ncapabilities = [\"pull\"]\n",
        );
        // With a server (no scheme → https): capabilities apply.
        write_hosts(
            dir.path(),
            "b.example",
            "server = \"b-upstream.example:8443\"\ncapabilities = [\"pull\"]\nskip_verify = true\n",
        );
        let c = with_dir(&dir);
        assert_eq!(
            c.endpoints_for("a.example").unwrap(),
            vec![ep("a.example", false, true, false)]
        );
        assert_eq!(
            c.endpoints_for("b.example").unwrap(),
            vec![Endpoint {
                can_resolve: false,
                ..ep("b-upstream.example:8443", false, true, false)
            }]
        );
    }

    #[test]
    fn hosts_toml_with_port_directory_forms() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            "127.0.0.1:5000",
            "[host.\"http://127.0.0.1:6000\"]\n",
        );
        write_hosts(
            dir.path(),
            "myreg_5000_",
            "[host.\"https://underscore.example\"]\n",
        );
        write_hosts(
            dir.path(),
            "myreg:5000",
            "[host.\"https://colon.example\"]\n",
        );
        let c = with_dir(&dir);
        assert_eq!(
            c.endpoints_for("127.0.0.1:5000").unwrap(),
            vec![
                ep("127.0.0.1:6000", true, false, true),
                ep("127.0.0.1:5000", true, false, false)
            ]
        );
        // containerd tries host_port_ before host:port.
        assert_eq!(
            hosts(&c.endpoints_for("myreg:5000").unwrap()),
            vec!["underscore.example", "myreg:5000"]
        );
    }

    #[test]
    fn default_hosts_toml_used_only_without_own_dir() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            DEFAULT_HOST_DIR,
            "[host.\"https://default-mirror.example\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
        );
        write_hosts(
            dir.path(),
            "quay.io",
            "[host.\"https://quay-mirror.example\"]\n",
        );
        // A host dir with only certificates still counts as the host's own dir.
        fs::create_dir_all(dir.path().join("certs-only.example")).unwrap();
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "ghcr.io".to_string(),
            vec!["https://ghcr-mirror.example".to_string()],
        );
        mirrors.insert("*".to_string(), vec!["https://star.example".to_string()]);
        let c = RegistryConfig {
            mirrors,
            ..with_dir(&dir)
        };
        assert_eq!(
            hosts(&c.endpoints_for("ghcr.io").unwrap()),
            vec![
                "ghcr-mirror.example",
                "default-mirror.example",
                "star.example",
                "ghcr.io"
            ]
        );
        assert_eq!(
            hosts(&c.endpoints_for("quay.io").unwrap()),
            vec!["quay-mirror.example", "star.example", "quay.io"]
        );
        assert_eq!(
            hosts(&c.endpoints_for("certs-only.example").unwrap()),
            vec!["star.example", "certs-only.example"]
        );
    }

    #[test]
    fn default_hosts_toml_server_replaces_upstream() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            DEFAULT_HOST_DIR,
            "server = \"https://only-mirror.example\"\n",
        );
        let eps = with_dir(&dir).endpoints_for("quay.io").unwrap();
        assert_eq!(eps, vec![ep("only-mirror.example", false, false, false)]);
    }

    #[test]
    fn hosts_toml_is_read_fresh_each_call() {
        let dir = tempfile::tempdir().unwrap();
        let c = with_dir(&dir);
        assert_eq!(hosts(&c.endpoints_for("quay.io").unwrap()), vec!["quay.io"]);
        write_hosts(dir.path(), "quay.io", "[host.\"https://m1.example\"]\n");
        assert_eq!(
            hosts(&c.endpoints_for("quay.io").unwrap()),
            vec!["m1.example", "quay.io"]
        );
        write_hosts(dir.path(), "quay.io", "[host.\"https://m2.example\"]\n");
        assert_eq!(
            hosts(&c.endpoints_for("quay.io").unwrap()),
            vec!["m2.example", "quay.io"]
        );
    }

    #[test]
    fn override_path_and_path_hosts_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            "quay.io",
            r#"
[host."https://non-compliant.example/v2/upstream"]
  capabilities = ["pull"]
  override_path = true
[host."https://prefixed.example/us"]
[host."https://v2.example/v2"]
[host."https://pushonly.example"]
  capabilities = ["push"]
"#,
        );
        assert_eq!(
            hosts(&with_dir(&dir).endpoints_for("quay.io").unwrap()),
            vec!["v2.example", "quay.io"]
        );
    }

    #[test]
    fn ignored_fields_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            "quay.io",
            r#"
ca = ["/etc/a.pem", "b.pem"]
proxy = "http://proxy:8080"
some_future_field = 1
[host."https://m.example"]
  ca = "/etc/certs/mirror.pem"
  client = [["/c.cert", "/c.key"]]
  dial_timeout = "1s"
  [host."https://m.example".header]
    x-custom = ["a", "b"]
"#,
        );
        assert_eq!(
            hosts(&with_dir(&dir).endpoints_for("quay.io").unwrap()),
            vec!["m.example", "quay.io"]
        );
    }

    #[test]
    fn broken_hosts_toml_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            "quay.io",
            "[host.\"https://m.example\"\ncapabilities = ",
        );
        let err = with_dir(&dir).endpoints_for("quay.io").unwrap_err();
        let file = dir.path().join("quay.io").join(HOSTS_FILE);
        assert!(
            matches!(&err, RegistryConfigError::HostsFile { path, .. } if *path == file),
            "{err}"
        );
        assert_eq!(err.path(), Some(file.as_path()));
        assert!(err.to_string().contains(&file.display().to_string()));
    }

    #[test]
    fn hosts_toml_semantic_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_hosts(
            dir.path(),
            "a.example",
            "[host.\"https://m.example\"]\ncapabilities = [\"fly\"]\n",
        );
        write_hosts(dir.path(), "b.example", "skip_verify = \"yes\"\n");
        write_hosts(dir.path(), "c.example", "[host.\"ftp://m.example\"]\n");
        write_hosts(dir.path(), "d.example", "ca = 5\n");
        write_hosts(
            dir.path(),
            "e.example",
            "server = \"https://e.example/prefix\"\n",
        );
        let c = with_dir(&dir);
        for h in ["a.example", "b.example", "d.example", "e.example"] {
            let err = c.endpoints_for(h).unwrap_err();
            let file = dir.path().join(h).join(HOSTS_FILE);
            assert!(
                matches!(&err, RegistryConfigError::HostsFile { path, .. } if *path == file),
                "{h}: {err}"
            );
        }
        let err = c.endpoints_for("c.example").unwrap_err();
        assert!(
            matches!(&err, RegistryConfigError::InvalidUrl { origin, .. } if origin.contains("c.example")),
            "{err}"
        );
    }

    #[test]
    fn unreadable_hosts_toml_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as text.
        fs::create_dir_all(dir.path().join("quay.io").join(HOSTS_FILE)).unwrap();
        let err = with_dir(&dir).endpoints_for("quay.io").unwrap_err();
        assert!(
            matches!(&err, RegistryConfigError::Read { path, .. } if path.ends_with("quay.io/hosts.toml")),
            "{err}"
        );
    }

    #[test]
    fn validate_checks_static_config() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RegistryConfig::default().validate().is_ok());
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "docker.io".to_string(),
            vec!["https://m.example:5000".to_string()],
        );
        mirrors.insert("*".to_string(), vec!["http://127.0.0.1:5001".to_string()]);
        let good = RegistryConfig {
            config_path: Some(dir.path().to_path_buf()),
            insecure_http: vec!["myreg.local:5000".into()],
            skip_verify: vec!["[::1]:443".into()],
            mirrors,
        };
        assert!(good.validate().is_ok());

        let missing = RegistryConfig {
            config_path: Some(dir.path().join("nope")),
            ..Default::default()
        };
        assert!(
            matches!(missing.validate(), Err(RegistryConfigError::Read { path, .. }) if path.ends_with("nope"))
        );

        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let not_dir = RegistryConfig {
            config_path: Some(file),
            ..Default::default()
        };
        assert!(matches!(
            not_dir.validate(),
            Err(RegistryConfigError::ConfigPath { .. })
        ));

        let bad_list = RegistryConfig {
            insecure_http: vec!["http://myreg".into()],
            ..Default::default()
        };
        assert!(matches!(
            bad_list.validate(),
            Err(RegistryConfigError::InvalidHost { .. })
        ));

        let mut mirrors = BTreeMap::new();
        mirrors.insert("bad/key".to_string(), vec![]);
        let bad_key = RegistryConfig {
            mirrors,
            ..Default::default()
        };
        assert!(matches!(
            bad_key.validate(),
            Err(RegistryConfigError::InvalidHost { .. })
        ));
    }

    #[test]
    fn serde_round_trip() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "docker.io".to_string(),
            vec![
                "https://mirror.example:5000".to_string(),
                "http://127.0.0.1:5000".to_string(),
            ],
        );
        mirrors.insert("*".to_string(), vec!["http://127.0.0.1:5001".to_string()]);
        let c = RegistryConfig {
            config_path: Some(PathBuf::from("/etc/cri-lxc/certs.d")),
            insecure_http: vec!["myreg.local:5000".into()],
            skip_verify: vec!["myreg.local:443".into()],
            mirrors,
        };
        let text = toml::to_string(&c).unwrap();
        let back: RegistryConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        // And the empty config (config_path omitted).
        let text = toml::to_string(&RegistryConfig::default()).unwrap();
        assert_eq!(
            toml::from_str::<RegistryConfig>(&text).unwrap(),
            RegistryConfig::default()
        );
    }

    #[test]
    fn serde_parses_documented_section_and_rejects_unknown() {
        #[derive(Deserialize)]
        struct Daemon {
            registry: RegistryConfig,
        }
        let d: Daemon = toml::from_str(
            r#"
[registry]
config_path = "/etc/cri-lxc/certs.d"
insecure_http = ["myreg.local:5000"]
skip_verify = ["myreg.local:443"]
[registry.mirrors]
"docker.io" = ["https://mirror.example:5000", "http://127.0.0.1:5000"]
"*" = ["http://127.0.0.1:5001"]
"#,
        )
        .unwrap();
        assert_eq!(
            d.registry.config_path.as_deref(),
            Some(Path::new("/etc/cri-lxc/certs.d"))
        );
        assert_eq!(d.registry.mirrors.len(), 2);
        // Every field optional.
        let d: Daemon = toml::from_str("[registry]\n").unwrap();
        assert_eq!(d.registry, RegistryConfig::default());
        assert!(toml::from_str::<Daemon>("[registry]\nmirror = {}\n").is_err());
    }

    #[test]
    fn oci_reference_for_each_endpoint_resolves_to_its_host() {
        use super::super::reference::ImageRef;
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "docker.io".to_string(),
            vec!["http://127.0.0.1:5000".to_string()],
        );
        let c = RegistryConfig {
            mirrors,
            ..Default::default()
        };
        let r = ImageRef::parse("busybox").unwrap();
        let eps = c.endpoints_for(r.registry()).unwrap();
        assert_eq!(eps.len(), 2);
        let mirror = r.to_oci_reference(&eps[0]);
        assert_eq!(mirror.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(mirror.namespace(), Some("docker.io"));
        let upstream = r.to_oci_reference(&eps[1]);
        assert_eq!(upstream.resolve_registry(), "index.docker.io");
        assert_eq!(upstream.namespace(), None);
        for e in &eps {
            assert_eq!(r.to_oci_reference(e).resolve_registry(), e.host);
        }
    }
}
