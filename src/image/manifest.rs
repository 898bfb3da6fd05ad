//! OCI and Docker v2 manifest, index and image-config documents: media types, parsing, and choosing
//! the host's platform from an index.
//!
//! Parsed with our own serde types rather than oci-client's so that Docker schema2 manifest lists and
//! OCI indexes share one code path and nothing is lost (variant, config `User`). Pure: no I/O.

use std::collections::HashMap;

use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What we send in `Accept` when resolving a reference.
pub const ACCEPTED_MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} is not valid JSON: {source}")]
    Json { what: &'static str, source: serde_json::Error },
    #[error("unsupported manifest media type {0:?} (only OCI and Docker schema2 images are supported)")]
    UnsupportedMediaType(String),
    #[error("manifest has schemaVersion {0}; only schema version 2 is supported")]
    UnsupportedSchema(i64),
    #[error("no manifest for platform {wanted} in the image index (available: {available})")]
    NoMatchingPlatform { wanted: String, available: String },
    #[error("image config lists {diff_ids} diff ids but the manifest has {layers} layers")]
    LayerCountMismatch { diff_ids: usize, layers: usize },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) if !v.is_empty() => write!(f, "/{v}"),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    schema_version: i64,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// An image manifest (one platform): config and layers, bottom-most layer first.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Manifest(ImageManifest),
    Index { media_type: String, manifests: Vec<Descriptor> },
}

/// Parse a manifest or index. `header_type` is the registry's Content-Type, used when the document
/// itself omits `mediaType` (allowed for OCI documents).
pub fn parse_document(bytes: &[u8], header_type: Option<&str>) -> Result<Document, ManifestError> {
    let raw: RawDocument = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json { what: "manifest", source })?;
    if raw.schema_version != 2 {
        return Err(ManifestError::UnsupportedSchema(raw.schema_version));
    }
    let media_type = raw
        .media_type
        .clone()
        .or_else(|| header_type.map(str::to_string))
        .filter(|t| !t.is_empty())
        // OCI allows omitting mediaType; the shape tells index from manifest.
        .unwrap_or_else(|| if raw.manifests.is_some() { OCI_INDEX.to_string() } else { OCI_MANIFEST.to_string() });
    match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(Document::Index { media_type, manifests: raw.manifests.unwrap_or_default() }),
        OCI_MANIFEST | DOCKER_MANIFEST => match raw.config {
            Some(config) => Ok(Document::Manifest(ImageManifest { media_type, config, layers: raw.layers.unwrap_or_default() })),
            None => Err(ManifestError::UnsupportedMediaType(format!("{media_type} without config"))),
        },
        other => Err(ManifestError::UnsupportedMediaType(other.to_string())),
    }
}

/// The platform this daemon runs containers for, in OCI (GOARCH) terms.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform { architecture: architecture.into(), os: "linux".into(), variant: variant.map(str::to_string) }
}

/// Pick the index entry for `wanted`: same os and architecture; a wanted variant must match, except
/// that an entry without variant is an acceptable fallback (arm64 images often omit "v8").
pub fn select_platform<'a>(manifests: &'a [Descriptor], wanted: &Platform) -> Result<&'a Descriptor, ManifestError> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os == wanted.os && p.architecture == wanted.architecture))
        .collect();
    let variant_of = |d: &Descriptor| d.platform.as_ref().and_then(|p| p.variant.clone()).filter(|v| !v.is_empty());
    let exact = candidates.iter().find(|d| variant_of(d) == wanted.variant);
    let fallback = candidates.iter().find(|d| variant_of(d).is_none());
    exact.or(fallback).copied().ok_or_else(|| ManifestError::NoMatchingPlatform {
        wanted: wanted.to_string(),
        available: manifests.iter().filter_map(|d| d.platform.as_ref().map(Platform::to_string)).collect::<Vec<_>>().join(", "),
    })
}

/// The parts of an image config (OCI image-spec `config.json`) the runtime uses.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct ImageConfigDoc {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
    #[serde(default)]
    pub volumes: Option<HashMap<String, serde_json::Value>>,
}

pub fn parse_config(bytes: &[u8]) -> Result<ImageConfigDoc, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Json { what: "image config", source })
}

/// How the image's `User` reads for the CRI `Image.uid` / `Image.username` fields: a numeric user
/// (optionally `uid:gid`) is a uid, anything else a name (CRI: "UID and the following user name are
/// mutually exclusive").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    None,
    Uid(i64),
    Name(String),
}

pub fn image_user(user: Option<&str>) -> ImageUser {
    let user = user.unwrap_or("");
    let first = user.split(':').next().unwrap_or("");
    if first.is_empty() {
        return ImageUser::None;
    }
    match first.parse::<i64>() {
        Ok(uid) => ImageUser::Uid(uid),
        Err(_) => ImageUser::Name(first.to_string()),
    }
}

/// Chain ids per OCI image-spec: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{prev} {diff}").as_bytes()))),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plat(arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform { architecture: arch.into(), os: "linux".into(), variant: variant.map(Into::into) }),
        }
    }

    #[test]
    fn platform_selection_prefers_exact_variant() {
        let list = vec![plat("arm64", None, "a"), plat("arm64", Some("v8"), "b"), plat("amd64", None, "c")];
        let arm = Platform { architecture: "arm64".into(), os: "linux".into(), variant: Some("v8".into()) };
        assert_eq!(select_platform(&list, &arm).unwrap().digest, "b");
        let armv7 = Platform { architecture: "arm".into(), os: "linux".into(), variant: Some("v7".into()) };
        assert!(matches!(select_platform(&list, &armv7), Err(ManifestError::NoMatchingPlatform { .. })));
        let amd = Platform { architecture: "amd64".into(), os: "linux".into(), variant: None };
        assert_eq!(select_platform(&list, &amd).unwrap().digest, "c");
        // An arm64 host takes an entry without variant when there is no exact one.
        assert_eq!(select_platform(&list[..1], &arm).unwrap().digest, "a");
    }

    #[test]
    fn parses_docker_and_oci_documents() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c","size":3},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:l","size":9}]}"#;
        match parse_document(docker, None).unwrap() {
            Document::Manifest(m) => {
                assert_eq!(m.media_type, DOCKER_MANIFEST);
                assert_eq!(m.layers.len(), 1);
                assert_eq!(m.config.digest, "sha256:c");
            }
            other => panic!("expected manifest, got {other:?}"),
        }
        let oci_index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:x","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        assert!(matches!(parse_document(oci_index, None).unwrap(), Document::Index { .. }));
        assert!(matches!(parse_document(br#"{"schemaVersion":1}"#, None), Err(ManifestError::UnsupportedSchema(1))));
        assert!(matches!(parse_document(b"nope", None), Err(ManifestError::Json { .. })));
    }

    #[test]
    fn user_field_reading() {
        assert_eq!(image_user(Some("1000:1000")), ImageUser::Uid(1000));
        assert_eq!(image_user(Some("nobody")), ImageUser::Name("nobody".into()));
        assert_eq!(image_user(Some("")), ImageUser::None);
        assert_eq!(image_user(None), ImageUser::None);
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let d = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        use sha2::{Digest, Sha256};
        assert_eq!(c[1], format!("sha256:{}", hex::encode(Sha256::digest(b"sha256:a sha256:b"))));
    }
}
