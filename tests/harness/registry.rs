//! A real docker-registry (distribution 2.8) on 127.0.0.1, plus a pusher for built images.
//!
//! distribution 2.8 writes its HTTP access log (Apache combined format) to **stdout** and its
//! application log (logrus) to **stderr**; both are captured in files of the registry's temp dir.

use super::image::{BuiltImage, BuiltIndex};
use super::{sha256_digest, tail_file};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct Registry {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Start a registry, optionally protected by htpasswd basic auth with one user.
    pub async fn start(auth: Option<(&str, &str)>) -> Registry {
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        let mut dir = tempfile::Builder::new()
            .prefix("cri-lxc-registry-")
            .tempdir()
            .expect("tempdir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut auth_yaml = String::new();
        if let Some((u, p)) = &auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("run htpasswd (apache2-utils)");
            assert!(
                out.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, &out.stdout).unwrap();
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: cri-lxc-test-realm\n    path: {}\n",
                htpasswd.display()
            );
        }
        let mut last_err = String::new();
        for _attempt in 0..8 {
            let port = super::free_port();
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 cache:\n    blobdescriptor: inmemory\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: cri-lxc-test-secret\n\
                 {auth_yaml}",
                storage.display()
            );
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, config).unwrap();
            let access = std::fs::File::create(dir.path().join("access.log")).unwrap();
            let app = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(access)
                .stderr(app)
                .spawn()
                .expect("spawn /usr/bin/docker-registry (install the docker-registry package)");
            let mut reg = Registry {
                dir,
                child: Some(child),
                port,
                auth: auth.clone(),
            };
            match reg.wait_ready().await {
                Ok(()) => return reg,
                Err(e) => {
                    last_err = e;
                    reg.stop();
                    // take the dir back for the next attempt
                    dir = std::mem::replace(&mut reg.dir, TempDir::new().unwrap());
                }
            }
        }
        panic!("docker-registry did not start: {last_err}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        let client = reqwest::Client::new();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "registry exited with {st}: {}",
                    tail_file(&self.app_log_path(), 20)
                ));
            }
            let log = std::fs::read_to_string(self.app_log_path()).unwrap_or_default();
            if log.contains(&listening) {
                if let Ok(r) = client.get(format!("{}/v2/", self.url())).send().await {
                    let s = r.status().as_u16();
                    if s == 200 || s == 401 {
                        return Ok(());
                    }
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "registry not ready after 20 s: {}",
                    tail_file(&self.app_log_path(), 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }
    /// Fully-qualified image reference `127.0.0.1:<port>/<repo_and_tag>`.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{}", self.addr(), repo_and_tag)
    }
    /// The registry's storage root (contains `docker/registry/v2/...`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
    /// Path of a stored blob's data file inside the registry storage.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = super::hex_of(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
    pub fn app_log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
    /// The HTTP access log (combined format, one request per line).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.access_log_path()).unwrap_or_default()
    }
    /// Status codes of every `GET /v2/<repo>/blobs/<digest>` (with or without a query string such
    /// as `?ns=docker.io`) in the access log.
    pub fn blob_get_statuses(&self, repo: &str, digest: &str) -> Vec<u16> {
        let needle = format!("\"GET /v2/{repo}/blobs/{digest}");
        self.log()
            .lines()
            .filter_map(|l| {
                let i = l.find(&needle)?;
                let rest = &l[i + needle.len()..];
                // rest: ` HTTP/1.1" 200 1234 "" "ua"` or `?ns=x HTTP/1.1" 200 ...`
                if !(rest.starts_with(' ') || rest.starts_with('?')) {
                    return None;
                }
                let after = rest.split_once("\" ")?.1;
                after.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }
    /// Like [`blob_get_statuses`](Self::blob_get_statuses), for use after the client is done:
    /// the access-log line is written when the registry's handler returns, which can be a moment
    /// after the client has read the whole body. Waits (up to 10 s) for at least one line, then
    /// 300 ms more so late duplicates show up too.
    pub async fn settled_blob_gets(&self, repo: &str, digest: &str) -> Vec<u16> {
        let start = Instant::now();
        while self.blob_get_statuses(repo, digest).is_empty()
            && start.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.blob_get_statuses(repo, digest)
    }

    /// Number of successful (200) `GET /v2/<repo>/blobs/<digest>` requests.
    pub fn blob_get_count(&self, repo: &str, digest: &str) -> usize {
        self.blob_get_statuses(repo, digest)
            .iter()
            .filter(|s| **s == 200)
            .count()
    }
    pub fn auth(&self) -> Option<(String, String)> {
        self.auth.clone()
    }
    /// A pusher for this registry (uses the registry's credentials if it has auth).
    pub fn pusher(&self) -> Pusher {
        Pusher::new(&self.url(), self.auth.clone())
    }

    /// Kill (SIGKILL) and reap the registry process.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- docker-registry {} app log (tail) -----\n{}\n----- access log (tail) -----\n{}\n-----",
                self.addr(),
                tail_file(&self.app_log_path(), 30),
                tail_file(&self.access_log_path(), 40)
            );
        }
        self.stop();
    }
}

/// Pushes blobs and manifests to a registry over plain HTTP (monolithic uploads).
#[derive(Clone)]
pub struct Pusher {
    base: String,
    auth: Option<(String, String)>,
    http: reqwest::Client,
}

impl Pusher {
    pub fn new(base_url: &str, auth: Option<(String, String)>) -> Pusher {
        Pusher {
            base: base_url.trim_end_matches('/').to_string(),
            auth,
            http: reqwest::Client::new(),
        }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// Upload a blob (skipped if the registry already has it). Returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let head = self
            .req(
                reqwest::Method::HEAD,
                &format!("{}/v2/{repo}/blobs/{digest}", self.base),
            )
            .send()
            .await
            .expect("HEAD blob");
        if head.status().is_success() {
            return digest;
        }
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("{}/v2/{repo}/blobs/uploads/", self.base),
            )
            .send()
            .await
            .expect("POST blob upload");
        assert_eq!(
            r.status().as_u16(),
            202,
            "start upload: {:?}",
            r.text().await
        );
        let loc = r
            .headers()
            .get("location")
            .expect("upload Location header")
            .to_str()
            .unwrap()
            .to_string();
        let mut url = if loc.starts_with("http://") || loc.starts_with("https://") {
            loc
        } else {
            format!("{}{}", self.base, loc)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&digest);
        let r = self
            .req(reqwest::Method::PUT, &url)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("PUT blob");
        let st = r.status().as_u16();
        assert_eq!(st, 201, "finish upload of {digest}: {:?}", r.text().await);
        digest
    }

    /// PUT a manifest (or index) under `reference` (a tag or a digest). Returns the digest the
    /// registry reports.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        body: &[u8],
        media_type: &str,
    ) -> String {
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        let st = r.status().as_u16();
        let dg = r
            .headers()
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            st,
            201,
            "PUT manifest {repo}:{reference}: {:?}",
            r.text().await
        );
        let dg = dg.unwrap_or_else(|| sha256_digest(body));
        assert_eq!(
            dg,
            sha256_digest(body),
            "registry computed a different manifest digest"
        );
        dg
    }

    /// Push an image's blobs and its manifest under `tag` (use the manifest digest as `tag` to
    /// push it untagged). Returns the manifest digest.
    pub async fn push_image(&self, repo: &str, tag: &str, img: &BuiltImage) -> String {
        for l in &img.layers {
            self.push_blob(repo, &l.blob).await;
        }
        self.push_blob(repo, &img.config).await;
        self.push_manifest(repo, tag, &img.manifest, &img.manifest_media_type)
            .await
    }

    /// Push every platform image by digest and then the index / manifest list under `tag`.
    /// Returns the index digest.
    pub async fn push_index(&self, repo: &str, tag: &str, idx: &BuiltIndex) -> String {
        for img in &idx.images {
            let d = img.manifest_digest.clone();
            self.push_image(repo, &d, img).await;
        }
        self.push_manifest(repo, tag, &idx.manifest, &idx.media_type)
            .await
    }
}

/// Flip bytes in the middle of a file, keeping its length (used to corrupt registry blobs).
pub fn corrupt_file(path: &Path) {
    let mut data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(!data.is_empty());
    let mid = data.len() / 2;
    let end = (mid + 16).min(data.len());
    for b in data[mid..end].iter_mut() {
        *b ^= 0xff;
    }
    std::fs::write(path, data).unwrap();
}
