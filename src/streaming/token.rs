//! Single-use, expiring tokens that carry a validated streaming request from the gRPC call (Exec,
//! Attach, PortForward) to the HTTP request that serves it, as kubelet's streaming server does: the URL
//! handed to the client contains only the token; consuming it removes it, so a second use — or a use
//! after the TTL — finds nothing (HTTP 404).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

/// Tokens in flight at most (kubelet's cache holds 1000): a client that requests URLs and never uses
/// them cannot grow the map without bound.
pub const MAX_IN_FLIGHT: usize = 1000;
/// 192 random bits, URL-safe base64.
const TOKEN_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading random bytes for a streaming token: {0}")]
    Random(std::io::Error),
    #[error("too many streaming requests in flight ({MAX_IN_FLIGHT}); try again once some were used or expired")]
    Full,
}

pub struct TokenCache<T> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> TokenCache<T> {
    pub fn new(ttl: Duration) -> Self {
        TokenCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// Store `value` under a fresh random token.
    pub fn insert(&self, value: T) -> Result<String, TokenError> {
        let mut raw = [0u8; TOKEN_BYTES];
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut raw)).map_err(TokenError::Random)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|_, (expires, _)| *expires > now);
        if entries.len() >= MAX_IN_FLIGHT {
            return Err(TokenError::Full);
        }
        entries.insert(token.clone(), (now + self.ttl, value));
        Ok(token)
    }

    /// Take the value out; None when the token is unknown, already used or expired.
    pub fn consume(&self, token: &str) -> Option<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (expires, value) = entries.remove(token)?;
        (expires > Instant::now()).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let a = cache.insert(1).unwrap();
        let b = cache.insert(2).unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 32 && a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(cache.consume(&b), Some(2));
        assert_eq!(cache.consume(&b), None);
        assert_eq!(cache.consume("nope"), None);
        let expired = TokenCache::new(Duration::ZERO);
        let t = expired.insert(3).unwrap();
        assert_eq!(expired.consume(&t), None);
    }
}
