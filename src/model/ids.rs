//! Object ids and the reservation names CRI runtimes derive from metadata.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new 64-hex-digit id, like containerd's: unique per call (time, pid, counter and entropy from
/// the kernel are hashed), so ids never repeat across daemon restarts.
pub fn new_id() -> String {
    let mut hasher = Sha256::new();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    hasher.update(nanos.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let mut entropy = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut entropy);
    }
    hasher.update(entropy);
    hex::encode(hasher.finalize())
}

/// `<name>_<namespace>_<uid>_<attempt>`: one sandbox per pod attempt (containerd's makeSandboxName).
pub fn sandbox_name(name: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    format!("{name}_{namespace}_{uid}_{attempt}")
}

/// `<name>_<sandbox name>_<attempt>`: one container per name and attempt within a pod attempt.
pub fn container_name(name: &str, sandbox_name: &str, attempt: u32) -> String {
    format!("{name}_{sandbox_name}_{attempt}")
}

/// Resolve a possibly abbreviated id among `ids` (crictl accepts unique prefixes).
pub fn resolve_prefix<'a>(prefix: &str, ids: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    if prefix.is_empty() {
        return None;
    }
    let mut found = None;
    for id in ids {
        if id == prefix {
            return Some(id);
        }
        if id.starts_with(prefix) {
            if found.is_some() {
                return None; // ambiguous
            }
            found = Some(id);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hex() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn names_and_prefixes() {
        assert_eq!(sandbox_name("web", "default", "u1", 2), "web_default_u1_2");
        assert_eq!(container_name("app", "web_default_u1_2", 0), "app_web_default_u1_2_0");
        let ids = ["abc123", "abd456", "xyz"];
        assert_eq!(resolve_prefix("abc", ids.iter().copied()), Some("abc123"));
        assert_eq!(resolve_prefix("ab", ids.iter().copied()), None);
        assert_eq!(resolve_prefix("xyz", ids.iter().copied()), Some("xyz"));
        assert_eq!(resolve_prefix("", ids.iter().copied()), None);
    }
}
