//! Image references as kubelet and crictl send them.
//!
//! Owns: parsing and normalising a reference string (`busybox`,
//! `foo/bar:1`, `127.0.0.1:5000/x/y@sha256:…`) into an [`ImageRef`], the
//! digest rules we accept, recognising strings that are image ids rather than
//! references ([`parse_digest_like`]), and building the `oci_client`
//! reference that points a pull at one concrete endpoint.
//!
//! Must not depend on: the image store, the puller, the network, or any file;
//! it only reads `super::registry_hosts::Endpoint` (a plain value) to decide
//! where requests go. Choosing *which* endpoints to try belongs to
//! `super::registry_hosts`.
//!
//! Digest algorithms: only `sha256` (64 lowercase hex). The content store
//! (`super::content`) addresses and verifies blobs by sha256 alone, so a
//! reference pinned by `sha512`/`sha384` (which the underlying oci-spec
//! parser lets through) could never be verified; we reject it, and uppercase
//! hex, at parse time with a clear reason rather than fail deep inside a
//! pull. Supporting sha512 later means adding it to [`DIGEST_ALGORITHMS`]
//! once the store can verify it.

use std::fmt;
use std::net::Ipv6Addr;

use super::registry_hosts::Endpoint;

/// The longest repository path we accept; mirrors the distribution limit
/// (oci-spec checks it too, but only on the repository without the domain).
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Placeholder registry used to let the oci-spec parser handle the rest of
/// an IPv6-literal reference (its grammar predates bracketed IPv6 hosts).
/// `.invalid` is a reserved TLD, so it can never be a real registry.
const IPV6_PLACEHOLDER: &str = "ipv6-literal.invalid";

/// Digest algorithms we accept, with the length of their hex encoding.
pub const DIGEST_ALGORITHMS: &[(&str, usize)] = &[("sha256", 64)];

/// Why a reference string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The input is not a valid image reference; `reason` says which rule failed.
    #[error("invalid image reference {input:?}: {reason}")]
    Invalid { input: String, reason: String },
}

impl ReferenceError {
    fn invalid(input: &str, reason: impl Into<String>) -> Self {
        ReferenceError::Invalid {
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

/// A normalised image reference: always has a registry and a full repository
/// path (`docker.io/library/busybox`), plus a tag, a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// "busybox" → docker.io/library/busybox:latest; "foo/bar" → docker.io/foo/bar:latest;
    /// "127.0.0.1:5000/x/y@sha256:…" keeps the digest and NO tag; "name:tag@sha256:…" keeps both
    /// (pull by digest; the tag is kept for the image's RepoTags).
    ///
    /// Also accepted: `[::1]:5000/x` style IPv6-literal registries.
    /// Rejected with [`ReferenceError::Invalid`]: empty input, whitespace,
    /// uppercase repository, bad tag, bad or unsupported digest (see module
    /// docs), repository longer than 255 characters, and strings that are an
    /// image id rather than a reference (`sha256:<hex>` or bare 64 hex; callers
    /// that accept ids should try [`parse_digest_like`] first).
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::invalid(s, "reference is empty"));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(ReferenceError::invalid(s, "reference contains whitespace"));
        }
        // Docker refuses these too: "sha256:<hex>" would otherwise parse as
        // docker.io/library/sha256:<hex> and a bare id as a repository name,
        // silently turning an id lookup into a pull from Docker Hub.
        if parse_digest_like(s).is_some() {
            return Err(ReferenceError::invalid(
                s,
                "looks like an image id or digest, not a reference",
            ));
        }

        let (ipv6_registry, to_parse) = split_ipv6_registry(s)?;
        let to_parse = lowercase_domain(&to_parse);
        let parsed = match oci_client::Reference::try_from(to_parse.as_str()) {
            Ok(r) => r,
            Err(e) => {
                return Err(ReferenceError::invalid(
                    s,
                    explain_parse_error(&to_parse, &e),
                ))
            }
        };

        let registry = match ipv6_registry {
            Some(r) => r,
            None => parsed.registry().to_string(),
        };
        let repository = parsed.repository().to_string();
        // The grammar allows uppercase in the first path component (it could
        // be a registry host); once it turned out to be a Docker Hub
        // namespace instead, it must be lowercase like any repository.
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::invalid(
                s,
                "repository name must be lowercase",
            ));
        }
        if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::invalid(
                s,
                format!("name must not be longer than {NAME_TOTAL_LENGTH_MAX} characters"),
            ));
        }
        let digest = match parsed.digest() {
            Some(d) => match validate_digest(d) {
                Ok(()) => Some(d.to_string()),
                Err(reason) => return Err(ReferenceError::invalid(s, reason)),
            },
            None => None,
        };
        Ok(ImageRef {
            registry,
            repository,
            // oci-spec already defaults to "latest" only when there is no
            // digest, which is exactly the rule we want.
            tag: parsed.tag().map(str::to_string),
            digest,
        })
    }

    /// Registry host as written in the normalised reference: "docker.io", "127.0.0.1:5000".
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path inside the registry: "library/busybox".
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any ("latest" when the input had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest the reference pins, if any ("sha256:…").
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// "docker.io/library/busybox" (registry/repository)
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// "docker.io/library/busybox:latest" when there is a tag, else None
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{}", self.name(), t))
    }

    /// "docker.io/library/busybox@sha256:…" for a given manifest digest
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{}", self.name(), digest)
    }

    /// Canonical string: name:tag, name@digest, or name:tag@digest
    pub fn canonical(&self) -> String {
        let mut out = self.name();
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d);
        }
        out
    }

    /// The oci-client reference to pull from `endpoint` (the upstream host itself or a mirror host).
    ///
    /// Routing is decided by the endpoint's host, not by `is_mirror`: when
    /// `endpoint.host` differs from the host oci-client would contact on its
    /// own (`resolve_registry()`, which maps docker.io to index.docker.io),
    /// the endpoint is set as the reference's mirror registry, so requests go
    /// to `endpoint.host` with `?ns=<upstream registry>` as containerd does.
    /// In every case `resolve_registry()` of the result equals
    /// `endpoint.host`, so the caller can key oci-client's per-host protocol
    /// (`ClientProtocol::HttpsExcept`) and credentials on `endpoint.host`.
    pub fn to_oci_reference(&self, endpoint: &Endpoint) -> oci_client::Reference {
        let registry = self.registry.clone();
        let repository = self.repository.clone();
        let mut r = match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                t.clone(),
                d.clone(),
            ),
            (None, Some(d)) => oci_client::Reference::with_digest(registry, repository, d.clone()),
            (Some(t), None) => oci_client::Reference::with_tag(registry, repository, t.clone()),
            // parse() never builds this, but the type allows it; "latest" is
            // what the reference grammar would have defaulted to.
            (None, None) => oci_client::Reference::with_tag(registry, repository, "latest".into()),
        };
        if r.resolve_registry() != endpoint.host {
            r.set_mirror_registry(endpoint.host.clone());
        }
        r
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Whether s looks like an image id / digest: "sha256:<64 hex>" or bare 64 hex chars
/// (ids are accepted bare by crictl). Returns the normalised "sha256:<hex>".
///
/// Other algorithms follow [`DIGEST_ALGORITHMS`], as in [`ImageRef::parse`].
/// Hex must be lowercase, as the OCI spec requires and as every id we hand
/// out is; anything else (including short id prefixes) returns None.
pub fn parse_digest_like(s: &str) -> Option<String> {
    if is_lower_hex(s, 64) {
        return Some(format!("sha256:{s}"));
    }
    if validate_digest(s).is_ok() {
        return Some(s.to_string());
    }
    None
}

/// Checks `algo:hex` against the algorithms we can verify.
fn validate_digest(d: &str) -> Result<(), String> {
    let Some((algo, hex)) = d.split_once(':') else {
        return Err(format!("digest {d:?} has no algorithm prefix"));
    };
    let Some(&(_, want)) = DIGEST_ALGORITHMS.iter().find(|(a, _)| *a == algo) else {
        let known: Vec<&str> = DIGEST_ALGORITHMS.iter().map(|(a, _)| *a).collect();
        return Err(format!(
            "unsupported digest algorithm {algo:?} (supported: {})",
            known.join(", ")
        ));
    };
    if !is_lower_hex(hex, want) {
        return Err(format!(
            "{algo} digest must be {want} lowercase hex characters"
        ));
    }
    Ok(())
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Host names are case-insensitive; lowercasing the registry part keeps one
/// spelling per image and makes `ImageRef::registry()` match the lowercase
/// hosts `super::registry_hosts` returns. Only a first component that is a
/// registry by the reference grammar (contains '.' or ':') is touched, so
/// "Foo/bar" stays an (invalid) Docker Hub repository, as in Docker.
fn lowercase_domain(s: &str) -> String {
    match s.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) => {
            format!("{}/{}", first.to_ascii_lowercase(), rest)
        }
        _ => s.to_string(),
    }
}

/// Turns oci-spec's terse errors into a reason a person can act on.
fn explain_parse_error(input: &str, e: &oci_client::ParseError) -> String {
    // A digest too short for the grammar fails as "invalid format" too.
    if let Some((_, digest)) = input.rsplit_once('@') {
        if let Err(reason) = validate_digest(digest) {
            return reason;
        }
    }
    // The grammar fails on an uppercase repository with a generic "invalid
    // format"; if lowercasing is all it takes to parse, say so.
    if matches!(e, oci_client::ParseError::ReferenceInvalidFormat)
        && input.chars().any(|c| c.is_ascii_uppercase())
        && oci_client::Reference::try_from(input.to_ascii_lowercase().as_str()).is_ok()
    {
        return "repository name must be lowercase".to_string();
    }
    e.to_string()
}

/// Splits off a bracketed IPv6 registry (`[::1]:5000/…`), which oci-spec's
/// grammar does not know, and returns the text for oci-spec with a
/// placeholder registry in its place. Inputs without one pass through.
fn split_ipv6_registry(s: &str) -> Result<(Option<String>, String), ReferenceError> {
    let Some(rest) = s.strip_prefix('[') else {
        return Ok((None, s.to_string()));
    };
    let Some((addr, after)) = rest.split_once(']') else {
        return Err(ReferenceError::invalid(s, "unterminated '[' in registry"));
    };
    if addr.parse::<Ipv6Addr>().is_err() {
        return Err(ReferenceError::invalid(
            s,
            "registry is not a valid IPv6 address",
        ));
    }
    let Some((port_part, path)) = after.split_once('/') else {
        return Err(ReferenceError::invalid(s, "registry without repository"));
    };
    if let Some(port) = port_part.strip_prefix(':') {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReferenceError::invalid(s, "invalid registry port"));
        }
    } else if !port_part.is_empty() {
        return Err(ReferenceError::invalid(
            s,
            "unexpected text after IPv6 registry",
        ));
    }
    let registry = format!("[{addr}]{port_part}");
    Ok((Some(registry), format!("{IPV6_PLACEHOLDER}/{path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn sha() -> String {
        format!("sha256:{HEX}")
    }

    fn ep(host: &str, is_mirror: bool) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            plain_http: false,
            skip_verify: false,
            is_mirror,
            can_resolve: true,
            can_pull: true,
        }
    }

    fn reason(s: &str) -> String {
        match ImageRef::parse(s) {
            Err(ReferenceError::Invalid { input, reason }) => {
                assert_eq!(input, s);
                reason
            }
            Ok(r) => panic!("{s:?} unexpectedly parsed as {r:?}"),
        }
    }

    #[test]
    fn bare_name_gets_docker_hub_library_and_latest() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.canonical(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn user_repo_gets_docker_hub_without_library() {
        let r = ImageRef::parse("foo/bar").unwrap();
        assert_eq!(r.name(), "docker.io/foo/bar");
        assert_eq!(r.tag(), Some("latest"));
    }

    #[test]
    fn legacy_index_docker_io_normalises_to_docker_io() {
        let r = ImageRef::parse("index.docker.io/busybox:1.36").unwrap();
        assert_eq!(r.canonical(), "docker.io/library/busybox:1.36");
        let r = ImageRef::parse("docker.io/library/busybox").unwrap();
        assert_eq!(r.canonical(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn registry_with_port_and_digest_has_no_tag() {
        let s = format!("127.0.0.1:5000/x/y@{}", sha());
        let r = ImageRef::parse(&s).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(sha().as_str()));
        assert_eq!(r.repo_tag(), None);
        assert_eq!(r.canonical(), s);
    }

    #[test]
    fn tag_and_digest_are_both_kept() {
        let r = ImageRef::parse(&format!("nginx:1.25@{}", sha())).unwrap();
        assert_eq!(r.tag(), Some("1.25"));
        assert_eq!(r.digest(), Some(sha().as_str()));
        assert_eq!(
            r.canonical(),
            format!("docker.io/library/nginx:1.25@{}", sha())
        );
        assert_eq!(
            r.repo_tag().as_deref(),
            Some("docker.io/library/nginx:1.25")
        );
    }

    #[test]
    fn localhost_and_dotted_hosts_are_registries() {
        assert_eq!(
            ImageRef::parse("localhost/a").unwrap().registry(),
            "localhost"
        );
        assert_eq!(
            ImageRef::parse("localhost:5000/a:t").unwrap().registry(),
            "localhost:5000"
        );
        let r = ImageRef::parse("quay.io/coreos/etcd:v3").unwrap();
        assert_eq!((r.registry(), r.repository()), ("quay.io", "coreos/etcd"));
        // A first component without '.' or ':' is a Docker Hub namespace.
        assert_eq!(ImageRef::parse("myhost/a").unwrap().registry(), "docker.io");
    }

    #[test]
    fn registry_host_is_lowercased() {
        let r = ImageRef::parse("Quay.IO/coreos/etcd:V3").unwrap();
        assert_eq!(r.canonical(), "quay.io/coreos/etcd:V3");
        let r = ImageRef::parse("Docker.IO/busybox").unwrap();
        assert_eq!(r.canonical(), "docker.io/library/busybox:latest");
        assert_eq!(reason("Foo/bar"), "repository name must be lowercase");
    }

    #[test]
    fn ipv6_literal_registry() {
        let r = ImageRef::parse("[::1]:5000/foo/bar:v1").unwrap();
        assert_eq!(r.registry(), "[::1]:5000");
        assert_eq!(r.repository(), "foo/bar");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.canonical(), "[::1]:5000/foo/bar:v1");
        let r = ImageRef::parse("[fe80::1]/x").unwrap();
        assert_eq!(r.registry(), "[fe80::1]");
        assert!(reason("[::1]:5000").contains("without repository"));
        assert!(reason("[zz]:5000/x").contains("IPv6"));
        assert!(reason("[::1:5000/x").contains("unterminated"));
        assert!(reason("[::1]:50a/x").contains("port"));
        assert!(reason("[::1]x/y").contains("unexpected"));
    }

    #[test]
    fn names_and_accessors() {
        let r = ImageRef::parse("registry.k8s.io/pause:3.9").unwrap();
        assert_eq!(r.name(), "registry.k8s.io/pause");
        assert_eq!(r.repo_tag().as_deref(), Some("registry.k8s.io/pause:3.9"));
        assert_eq!(
            r.repo_digest(&sha()),
            format!("registry.k8s.io/pause@{}", sha())
        );
        assert_eq!(r.to_string(), r.canonical());
    }

    #[test]
    fn canonical_round_trips_through_parse() {
        for s in [
            "busybox",
            "foo/bar:1",
            "quay.io/a/b/c:x",
            &format!("127.0.0.1:5000/x/y@{}", sha()),
            &format!("n:t@{}", sha()),
            "[::1]:5000/a:b",
        ] {
            let r = ImageRef::parse(s).unwrap();
            assert_eq!(ImageRef::parse(&r.canonical()).unwrap(), r, "{s}");
        }
    }

    #[test]
    fn rejects_empty() {
        assert!(reason("").contains("empty"));
    }

    #[test]
    fn rejects_whitespace() {
        assert!(reason("busy box").contains("whitespace"));
        assert!(reason(" busybox").contains("whitespace"));
        assert!(reason("busybox\n").contains("whitespace"));
    }

    #[test]
    fn rejects_uppercase_repository_with_clear_reason() {
        assert_eq!(reason("BusyBox"), "repository name must be lowercase");
        assert_eq!(
            reason("quay.io/Foo/bar"),
            "repository name must be lowercase"
        );
        // Uppercase in a tag is fine.
        assert_eq!(ImageRef::parse("busybox:V1").unwrap().tag(), Some("V1"));
    }

    #[test]
    fn rejects_malformed_names_and_tags() {
        for s in [
            "/busybox",
            "busybox/",
            "a//b",
            "busybox:",
            "busybox:-x",
            "busybox@",
            ":tag",
        ] {
            let _ = reason(s);
        }
        let long_tag = format!("busybox:{}", "a".repeat(129));
        let _ = reason(&long_tag);
        let long_repo = format!("quay.io/{}", "a".repeat(250));
        assert!(reason(&long_repo).contains("255"));
    }

    #[test]
    fn rejects_bad_digests() {
        // Too short.
        assert!(reason("busybox@sha256:abcd").contains("digest"));
        // Wrong length for sha256.
        let _ = reason(&format!("busybox@sha256:{HEX}00"));
        // Uppercase hex.
        assert!(reason(&format!("busybox@sha256:{}", HEX.to_uppercase())).contains("lowercase"));
        // Algorithms we cannot verify.
        let sha384 = format!("busybox@sha384:{}", "a".repeat(96));
        assert!(reason(&sha384).contains("unsupported"));
        let md5 = format!("busybox@md5:{}", "a".repeat(32));
        let _ = reason(&md5);
        // Not hex.
        let _ = reason(&format!("busybox@sha256:{}", "g".repeat(64)));
    }

    #[test]
    fn rejects_sha512_digest_the_store_cannot_verify() {
        let d = format!("busybox@sha512:{}", "ab".repeat(64));
        assert!(reason(&d).contains("unsupported digest algorithm \"sha512\""));
    }

    #[test]
    fn rejects_image_ids_as_references() {
        assert!(reason(HEX).contains("image id"));
        assert!(reason(&sha()).contains("image id"));
    }

    #[test]
    fn parse_digest_like_rules() {
        assert_eq!(parse_digest_like(HEX), Some(sha()));
        assert_eq!(parse_digest_like(&sha()), Some(sha()));
        assert_eq!(
            parse_digest_like(&format!("sha512:{}", "0".repeat(128))),
            None
        );
        assert_eq!(parse_digest_like(&HEX.to_uppercase()), None);
        assert_eq!(parse_digest_like(&HEX[..63]), None);
        assert_eq!(parse_digest_like(&format!("{HEX}0")), None);
        assert_eq!(parse_digest_like(&format!("sha256:{}", &HEX[..12])), None);
        assert_eq!(
            parse_digest_like(&format!("sha384:{}", "0".repeat(96))),
            None
        );
        assert_eq!(parse_digest_like("busybox"), None);
        assert_eq!(parse_digest_like(""), None);
    }

    #[test]
    fn oci_reference_for_upstream_hits_the_registry_directly() {
        let r = ImageRef::parse("busybox:1.36").unwrap();
        let o = r.to_oci_reference(&ep("index.docker.io", false));
        assert_eq!(o.resolve_registry(), "index.docker.io");
        assert_eq!(o.namespace(), None);
        assert_eq!(o.registry(), "docker.io");
        assert_eq!(o.repository(), "library/busybox");
        assert_eq!(o.tag(), Some("1.36"));
        assert_eq!(o.digest(), None);

        let r = ImageRef::parse("127.0.0.1:5000/x/y:t").unwrap();
        let o = r.to_oci_reference(&ep("127.0.0.1:5000", false));
        assert_eq!(o.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(o.namespace(), None);
    }

    #[test]
    fn oci_reference_for_mirror_sets_mirror_and_namespace() {
        let r = ImageRef::parse(&format!("busybox:1.36@{}", sha())).unwrap();
        let o = r.to_oci_reference(&ep("127.0.0.1:5001", true));
        assert_eq!(o.resolve_registry(), "127.0.0.1:5001");
        // namespace() is what oci-client sends as ?ns=
        assert_eq!(o.namespace(), Some("docker.io"));
        assert_eq!(o.tag(), Some("1.36"));
        assert_eq!(o.digest(), Some(sha().as_str()));
    }

    #[test]
    fn oci_reference_for_server_override_on_other_host_uses_ns() {
        // A hosts.toml `server` on another host is not a mirror, but requests
        // must still go there.
        let r = ImageRef::parse("docker.io/library/alpine").unwrap();
        let o = r.to_oci_reference(&ep("registry-1.docker.io", false));
        assert_eq!(o.resolve_registry(), "registry-1.docker.io");
        assert_eq!(o.namespace(), Some("docker.io"));
    }

    #[test]
    fn oci_reference_digest_only() {
        let r = ImageRef::parse(&format!("quay.io/a/b@{}", sha())).unwrap();
        let o = r.to_oci_reference(&ep("quay.io", false));
        assert_eq!(o.tag(), None);
        assert_eq!(o.digest(), Some(sha().as_str()));
        assert_eq!(o.whole(), format!("quay.io/a/b@{}", sha()));
    }
}
