//! A minimal raw-HTTP/1.1 registry (GET/HEAD of /v2/, manifests and blobs) served from memory on
//! 127.0.0.1, whose blob responses can be corrupted, stalled or throttled. Runs as tasks on the
//! calling tokio runtime (they end with the test's runtime).

use super::image::{BuiltImage, BuiltIndex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub enum BlobBehaviour {
    /// serve the blob as stored
    Normal,
    /// serve the blob with some bytes flipped (same length, so only the digest check catches it)
    Corrupt,
    /// send the headers (full Content-Length) and the first `n` bytes, then hold the connection
    /// open without sending anything more
    StallAfter(usize),
    /// send at most `bytes_per_sec` (in 64 KiB chunks); re-read on every chunk, so switching the
    /// behaviour back to `Normal` speeds up a running transfer
    Throttle(usize),
}

/// (media type, body)
type StoredManifest = (String, Arc<Vec<u8>>);

#[derive(Default)]
struct State {
    /// (repo, reference) -> (media type, body). reference is a tag or a digest.
    manifests: HashMap<(String, String), StoredManifest>,
    /// digest -> data (blobs are served under any repo)
    blobs: HashMap<String, Arc<Vec<u8>>>,
    behaviour: HashMap<String, BlobBehaviour>,
    /// request log: "GET /v2/... 200"
    requests: Vec<String>,
    /// digest -> bytes of body sent so far (all requests)
    sent: HashMap<String, Arc<AtomicU64>>,
}

#[derive(Clone)]
pub struct FakeRegistry {
    port: u16,
    state: Arc<Mutex<State>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake registry");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(sock, st).await;
                });
            }
        });
        FakeRegistry {
            port,
            state,
            task: Arc::new(task),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{}", self.addr(), repo_and_tag)
    }

    pub fn add_blob(&self, data: &[u8]) -> String {
        let d = super::sha256_digest(data);
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(d.clone(), Arc::new(data.to_vec()));
        d
    }

    pub fn add_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        self.state.lock().unwrap().manifests.insert(
            (repo.to_string(), reference.to_string()),
            (media_type.to_string(), Arc::new(body.to_vec())),
        );
    }

    /// Serve `img` (blobs, manifest by digest and under `tag`).
    pub fn add_image(&self, repo: &str, tag: &str, img: &BuiltImage) {
        for l in &img.layers {
            self.add_blob(&l.blob);
        }
        self.add_blob(&img.config);
        self.add_manifest(
            repo,
            &img.manifest_digest,
            &img.manifest_media_type,
            &img.manifest,
        );
        self.add_manifest(repo, tag, &img.manifest_media_type, &img.manifest);
    }

    pub fn add_index(&self, repo: &str, tag: &str, idx: &BuiltIndex) {
        for i in &idx.images {
            self.add_image(repo, &i.manifest_digest, i);
        }
        self.add_manifest(repo, &idx.digest, &idx.media_type, &idx.manifest);
        self.add_manifest(repo, tag, &idx.media_type, &idx.manifest);
    }

    pub fn remove_blob(&self, digest: &str) {
        self.state.lock().unwrap().blobs.remove(digest);
    }

    pub fn set_behaviour(&self, digest: &str, b: BlobBehaviour) {
        self.state
            .lock()
            .unwrap()
            .behaviour
            .insert(digest.to_string(), b);
    }

    /// Request log lines `"<METHOD> <path> <status>"`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Number of GET requests for a blob.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let suffix = format!("/blobs/{digest}");
        self.requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET ")
                    && r.split(' ')
                        .nth(1)
                        .is_some_and(|p| p.split('?').next().unwrap_or("").ends_with(&suffix))
            })
            .count()
    }

    /// Body bytes of `digest` sent so far (over all requests).
    pub fn bytes_sent(&self, digest: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .sent
            .get(digest)
            .map(|a| a.load(Ordering::SeqCst))
            .unwrap_or(0)
    }
}

async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, String)>> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            buf.drain(..pos + 4);
            let line = head.lines().next().unwrap_or("").to_string();
            let mut it = line.split_whitespace();
            let method = it.next().unwrap_or("").to_string();
            let path = it.next().unwrap_or("").to_string();
            // no request bodies expected (GET/HEAD only); ignore Content-Length bodies
            return Ok(Some((method, path)));
        }
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn respond(
    sock: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Docker-Distribution-Api-Version: registry/2.0\r\n\r\n");
    sock.write_all(out.as_bytes()).await?;
    if !head_only {
        sock.write_all(body).await?;
    }
    sock.flush().await
}

fn error_body(code: &str, msg: &str) -> Vec<u8> {
    format!(r#"{{"errors":[{{"code":"{code}","message":"{msg}","detail":null}}]}}"#).into_bytes()
}

async fn serve_conn(mut sock: TcpStream, st: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some((method, path)) = read_request(&mut sock, &mut buf).await? {
        let head_only = method == "HEAD";
        let path_only = path.split('?').next().unwrap_or("").to_string();
        let log = |status: u16| {
            st.lock()
                .unwrap()
                .requests
                .push(format!("{method} {path} {status}"));
        };
        if method != "GET" && method != "HEAD" {
            log(405);
            respond(&mut sock, "405 Method Not Allowed", &[], b"", false).await?;
            continue;
        }
        if path_only == "/v2/" || path_only == "/v2" {
            log(200);
            respond(
                &mut sock,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                b"{}",
                head_only,
            )
            .await?;
            continue;
        }
        let rest = path_only.strip_prefix("/v2/").unwrap_or("");
        if let Some(i) = rest.rfind("/manifests/") {
            let repo = &rest[..i];
            let reference = &rest[i + "/manifests/".len()..];
            let found = st
                .lock()
                .unwrap()
                .manifests
                .get(&(repo.to_string(), reference.to_string()))
                .cloned();
            match found {
                Some((mt, body)) => {
                    log(200);
                    let dg = super::sha256_digest(&body);
                    respond(
                        &mut sock,
                        "200 OK",
                        &[("Content-Type", mt), ("Docker-Content-Digest", dg)],
                        &body,
                        head_only,
                    )
                    .await?;
                }
                None => {
                    log(404);
                    let b = error_body("MANIFEST_UNKNOWN", "manifest unknown");
                    respond(
                        &mut sock,
                        "404 Not Found",
                        &[("Content-Type", "application/json".into())],
                        &b,
                        head_only,
                    )
                    .await?;
                }
            }
            continue;
        }
        if let Some(i) = rest.rfind("/blobs/") {
            let digest = rest[i + "/blobs/".len()..].to_string();
            let (blob, beh, sent) = {
                let mut s = st.lock().unwrap();
                let blob = s.blobs.get(&digest).cloned();
                let beh = s
                    .behaviour
                    .get(&digest)
                    .cloned()
                    .unwrap_or(BlobBehaviour::Normal);
                let sent = s.sent.entry(digest.clone()).or_default().clone();
                (blob, beh, sent)
            };
            let Some(blob) = blob else {
                log(404);
                let b = error_body("BLOB_UNKNOWN", "blob unknown to registry");
                respond(
                    &mut sock,
                    "404 Not Found",
                    &[("Content-Type", "application/json".into())],
                    &b,
                    head_only,
                )
                .await?;
                continue;
            };
            log(200);
            let hdr = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
                 Docker-Content-Digest: {digest}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\r\n",
                blob.len()
            );
            sock.write_all(hdr.as_bytes()).await?;
            if head_only {
                continue;
            }
            match beh {
                BlobBehaviour::Normal => {
                    sock.write_all(&blob).await?;
                    sent.fetch_add(blob.len() as u64, Ordering::SeqCst);
                }
                BlobBehaviour::Corrupt => {
                    let mut data = blob.to_vec();
                    let mid = data.len() / 2;
                    let end = (mid + 16).min(data.len());
                    for b in data[mid..end].iter_mut() {
                        *b ^= 0xff;
                    }
                    sock.write_all(&data).await?;
                    sent.fetch_add(data.len() as u64, Ordering::SeqCst);
                }
                BlobBehaviour::StallAfter(n) => {
                    let n = n.min(blob.len().saturating_sub(1));
                    sock.write_all(&blob[..n]).await?;
                    sock.flush().await?;
                    sent.fetch_add(n as u64, Ordering::SeqCst);
                    // hold the connection open until the peer goes away (or the test ends)
                    let mut tmp = [0u8; 1024];
                    loop {
                        match tokio::time::timeout(Duration::from_secs(600), sock.read(&mut tmp))
                            .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(()),
                            Ok(Ok(_)) => {}
                        }
                    }
                }
                BlobBehaviour::Throttle(_) => {
                    let mut off = 0;
                    while off < blob.len() {
                        let cur = st
                            .lock()
                            .unwrap()
                            .behaviour
                            .get(&digest)
                            .cloned()
                            .unwrap_or(BlobBehaviour::Normal);
                        let chunk = 64 * 1024;
                        let end = (off + chunk).min(blob.len());
                        sock.write_all(&blob[off..end]).await?;
                        sent.fetch_add((end - off) as u64, Ordering::SeqCst);
                        off = end;
                        if let BlobBehaviour::Throttle(rate) = cur {
                            let secs = chunk as f64 / rate.max(1) as f64;
                            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                        }
                    }
                }
            }
            sock.flush().await?;
            continue;
        }
        log(404);
        let b = error_body("NAME_UNKNOWN", "repository name not known to registry");
        respond(
            &mut sock,
            "404 Not Found",
            &[("Content-Type", "application/json".into())],
            &b,
            head_only,
        )
        .await?;
    }
    Ok(())
}
