//! Shared integration-test harness for cri-lxc.
//!
//! * [`Registry`]: a real `docker-registry` (distribution 2.8) on 127.0.0.1 in a temp dir,
//!   optionally with htpasswd auth; its access log is captured so tests can count blob GETs.
//! * [`FakeRegistry`]: a tiny raw-HTTP registry (GET/HEAD only) served from memory, whose blob
//!   responses can be corrupted, stalled or throttled; optionally protected by the Docker
//!   bearer-token protocol with its own token endpoint ([`TokenAuth`], [`AuthPath`]).
//! * [`LayerBuilder`] / [`ImageBuilder`] / [`build_index`]: build OCI or Docker v2 schema2
//!   images (and indexes / manifest lists) in memory, push them with [`Pusher`].
//! * [`Daemon`]: runs the `cri-lxc` binary in its own temp dir and hands out CRI clients.
//! * [`busybox::busybox_image`]: a runnable image (the host's static busybox, passwd/group).
//! * [`pods::Fixture`] / [`pods::Cri`]: registry + daemon + pulled busybox, RuntimeService helpers
//!   (pod/container configs as kubelet builds them, `wait_state`, `exec_ok`), a strict CRI log
//!   parser, and the leak check run after every pod is removed.
//! * [`network::TestNet`]: a private CNI bridge + host-local /24 per test (conf/bin/ipam dirs, a
//!   recording test plugin, iptables and link cleanup on drop) and the NetworkReady/pod-IP helpers.
//! * [`spdy_client`]: a SPDY/3.1 client (the codec's client role) doing client-go's handshake and
//!   stream choreography for exec, attach and port-forward.
//! * [`ws_peer::run`]: an independent WebSocket client (Python's websocket-client) for the streaming
//!   tests, driven by a JSON plan.
//!
//! Every object owns its temp dirs and child processes; nothing is global, so tests can run in
//! parallel threads of one test binary.
#![allow(dead_code, unused_imports)]

pub mod busybox;
pub mod daemon;
pub mod fake_registry;
pub mod image;
pub mod network;
pub mod pods;
pub mod registry;
pub mod spdy_client;
pub mod ws_peer;

pub use daemon::Daemon;
pub use fake_registry::{AuthPath, BlobBehaviour, FakeRegistry, TokenAuth, TokenRequest};
pub use image::{
    build_index, chain_ids, random_bytes, BuiltImage, BuiltIndex, Compression, Format,
    ImageBuilder, Layer, LayerBuilder,
};
pub use registry::{Pusher, Registry};

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of a `sha256:<hex>` digest (or the input if it has no algorithm prefix).
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A port on 127.0.0.1 on which nothing listens (bound then closed).
pub fn closed_port() -> u16 {
    free_port()
}

/// Poll `f` every 20 ms until it returns `Some`, or panic after `timeout` with `what`.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Names of the entries of a directory (empty if it does not exist).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

/// `<root>/content/blobs/sha256/<hex>`.
pub fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("content/blobs/sha256").join(hex_of(digest))
}

/// `<root>/layers/<chainid-hex>`.
pub fn layer_path(root: &Path, chain_id: &str) -> PathBuf {
    root.join("layers").join(hex_of(chain_id))
}

/// The last `n` lines of a text file (for failure diagnostics).
pub fn tail_file(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// PullImage with optional credentials, as kubelet sends it; a generous guard turns a hung daemon into
/// a test failure instead of a hang.
pub async fn pull_with(
    c: &mut cri_lxc::grpc::client::CriClient,
    image: &str,
    auth: Option<k8s_cri::v1::AuthConfig>,
) -> Result<String, tonic::Status> {
    let req = k8s_cri::v1::PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec { image: image.to_string(), ..Default::default() }),
        auth,
        sandbox_config: None,
    };
    match tokio::time::timeout(Duration::from_secs(300), c.image.pull_image(req)).await {
        Ok(r) => r.map(|r| r.into_inner().image_ref),
        Err(_) => panic!("PullImage({image}) did not return within 300 s"),
    }
}

/// The status code is one of `allowed` (the message is shown when it is not).
pub fn assert_code(e: &tonic::Status, allowed: &[tonic::Code], what: &str) {
    assert!(allowed.contains(&e.code()), "{what}: expected one of {allowed:?}, got {:?}: {}", e.code(), e.message());
}
