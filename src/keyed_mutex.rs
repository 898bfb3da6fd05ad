//! Per-key async mutual exclusion: work on the same key (an image reference, a blob digest, a pod id)
//! is serialised, work on different keys runs in parallel. Entries are dropped when the last holder or
//! waiter for a key goes away, so the map does not grow with every key ever seen.
//!
//! Pure synchronisation; no I/O and no knowledge of what the keys mean.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyedMutex {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

pub struct KeyedGuard<'a> {
    owner: &'a KeyedMutex,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedMutex {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        KeyedGuard { owner: self, key: key.to_string(), guard: Some(guard) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds the Arc once nobody holds or waits for the lock.
        if map.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn same_key_serialises_other_keys_do_not() {
        let m = Arc::new(KeyedMutex::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (m, inside, max_inside) = (m.clone(), inside.clone(), max_inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = m.lock("a").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // A different key is not blocked by "a".
        let g = m.lock("a").await;
        let other = tokio::time::timeout(Duration::from_secs(1), m.lock("b")).await;
        assert!(other.is_ok());
        drop(other);
        drop(g);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
        assert_eq!(m.len(), 0);
    }
}
