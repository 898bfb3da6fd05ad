//! A minimal raw-HTTP/1.1 registry (GET/HEAD of /v2/, manifests and blobs) served from memory on
//! 127.0.0.1, whose blob responses can be corrupted, stalled or throttled. Runs as tasks on the
//! calling tokio runtime (they end with the test's runtime).
//!
//! Optionally ([`FakeRegistry::start_token_auth`]) it protects `/v2/` with the Docker registry
//! bearer-token protocol (distribution's `token.md` and `oauth.md`) and serves its own token
//! endpoint at `/token`:
//! * `/v2/...` without a valid `Authorization: Bearer <token>` → 401 with a
//!   `WWW-Authenticate: Bearer realm=…,service="fake-registry"[,scope="repository:<repo>:pull"]`
//!   challenge and an `UNAUTHORIZED` error envelope; a token whose scopes do not grant
//!   `repository:<repo>:pull` gets the same 401 with `error="insufficient_scope"`;
//! * `GET /token?service=…&scope=…` with HTTP Basic `user:password` → `{"token","access_token",
//!   "expires_in"}` ([`AuthPath::BasicToken`]); Basic `<token>:<identity token>` is accepted as
//!   well ([`AuthPath::IdentityBasic`], docker's fallback for registries without POST);
//!   anonymous or wrong credentials → 401 `invalid username or password`;
//! * `POST /token` with a form body, `grant_type=refresh_token` and the configured identity
//!   token → `{"access_token","expires_in"}` ([`AuthPath::RefreshToken`]), or
//!   `grant_type=password` with the configured user ([`AuthPath::PasswordGrant`]); anything else
//!   → 401 (400 for an unknown grant type). [`TokenAuth::post_status`] makes POST answer a fixed
//!   status instead (404/405: a registry whose token endpoint only knows GET);
//! * a configured static token is accepted directly as a Bearer token ([`AuthPath::Static`]),
//!   as a CRI `registry_token` would be.
//!
//! Every token request is kept ([`FakeRegistry::token_requests`]) and every `/v2/` request that
//! was let through records the auth path of the token that authorised it
//! ([`FakeRegistry::authorized_requests`]).

use super::image::{BuiltImage, BuiltIndex};
use base64::Engine as _;
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

/// The `service` the token-auth challenge names.
pub const TOKEN_SERVICE: &str = "fake-registry";

/// Token-auth mode settings (see the module docs).
#[derive(Clone, Debug)]
pub struct TokenAuth {
    /// HTTP Basic credentials the token endpoint accepts on `GET /token`.
    pub username: String,
    pub password: String,
    /// An identity (OAuth2 refresh) token accepted by `POST /token` with
    /// `grant_type=refresh_token`, and by `GET /token` as Basic `<token>:<identity token>`.
    pub identity_token: Option<String>,
    /// A token accepted directly as `Authorization: Bearer <static token>`.
    pub static_token: Option<String>,
    /// When set, `POST /token` is answered with this status (e.g. 404 or 405) and an empty body.
    pub post_status: Option<u16>,
}

impl TokenAuth {
    pub fn new(username: &str, password: &str) -> TokenAuth {
        TokenAuth {
            username: username.to_string(),
            password: password.to_string(),
            identity_token: None,
            static_token: None,
            post_status: None,
        }
    }
    pub fn identity_token(mut self, token: &str) -> TokenAuth {
        self.identity_token = Some(token.to_string());
        self
    }
    pub fn static_token(mut self, token: &str) -> TokenAuth {
        self.static_token = Some(token.to_string());
        self
    }
    pub fn post_status(mut self, status: u16) -> TokenAuth {
        self.post_status = Some(status);
        self
    }
}

/// How the Bearer token that authorised a request was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthPath {
    /// `GET /token` with Basic `user:password`.
    BasicToken,
    /// `GET /token` with Basic `<token>:<identity token>`.
    IdentityBasic,
    /// `POST /token` with `grant_type=refresh_token`.
    RefreshToken,
    /// `POST /token` with `grant_type=password`.
    PasswordGrant,
    /// The configured static token, sent as-is.
    Static,
}

/// One request to the token endpoint.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// Query parameters (GET) or form fields (POST), decoded, in order.
    pub params: Vec<(String, String)>,
    /// The user name of the request's HTTP Basic credentials, if any.
    pub basic_user: Option<String>,
    pub status: u16,
    /// The kind of token issued (None when refused).
    pub issued: Option<AuthPath>,
}

impl TokenRequest {
    /// The first value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// All requested scopes (repeated `scope` parameters, each possibly space-separated).
    pub fn scopes(&self) -> Vec<String> {
        scopes_of(&self.params)
    }
}

/// A `/v2/` request that a valid token let through.
#[derive(Clone, Debug)]
pub struct AuthorizedRequest {
    pub method: String,
    /// Path with query string, as requested.
    pub path: String,
    pub auth: AuthPath,
}

struct IssuedToken {
    path: AuthPath,
    scopes: Vec<String>,
}

struct TokenState {
    cfg: TokenAuth,
    issued: HashMap<String, IssuedToken>,
    counter: u64,
    token_requests: Vec<TokenRequest>,
    authorized: Vec<AuthorizedRequest>,
}

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
    /// Some in token-auth mode.
    token: Option<TokenState>,
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
    /// An open registry (no authentication).
    pub async fn start() -> FakeRegistry {
        FakeRegistry::start_with(None).await
    }

    /// A registry protected by the bearer-token protocol, with its token endpoint at `/token`.
    pub async fn start_token_auth(auth: TokenAuth) -> FakeRegistry {
        FakeRegistry::start_with(Some(auth)).await
    }

    async fn start_with(auth: Option<TokenAuth>) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake registry");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            token: auth.map(|cfg| TokenState {
                cfg,
                issued: HashMap::new(),
                counter: 0,
                token_requests: Vec::new(),
                authorized: Vec::new(),
            }),
            ..State::default()
        }));
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

    /// The token endpoint's URL (the challenge's `realm`).
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Requests to the token endpoint so far (token-auth mode; empty otherwise).
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state
            .lock()
            .unwrap()
            .token
            .as_ref()
            .map(|t| t.token_requests.clone())
            .unwrap_or_default()
    }

    /// `/v2/` requests a token let through, with the token's auth path (token-auth mode).
    pub fn authorized_requests(&self) -> Vec<AuthorizedRequest> {
        self.state
            .lock()
            .unwrap()
            .token
            .as_ref()
            .map(|t| t.authorized.clone())
            .unwrap_or_default()
    }

    /// Auth paths of the GET requests for blob `digest` that a token let through.
    pub fn blob_get_auth(&self, digest: &str) -> Vec<AuthPath> {
        let suffix = format!("/blobs/{digest}");
        self.authorized_requests()
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path.split('?').next().unwrap_or("").ends_with(&suffix)
            })
            .map(|r| r.auth)
            .collect()
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

/// One parsed HTTP/1.1 request.
struct HttpRequest {
    method: String,
    path: String,
    /// (lower-cased name, value)
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read `n` more bytes into `buf` (beyond what it holds), or fail at EOF.
async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
    while buf.len() < n {
        let mut tmp = [0u8; 4096];
        let got = sock.read(&mut tmp).await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..got]);
    }
    Ok(())
}

async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<HttpRequest>> {
    let pos = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
    buf.drain(..pos + 4);
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("").to_string();
    let mut it = line.split_whitespace();
    let method = it.next().unwrap_or("").to_string();
    let path = it.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut req = HttpRequest {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let eol = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                let want = buf.len() + 1;
                fill(sock, buf, want).await?;
            };
            let size_line = String::from_utf8_lossy(&buf[..eol]).into_owned();
            buf.drain(..eol + 2);
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // no trailers expected: the final CRLF
                fill(sock, buf, 2).await?;
                buf.drain(..2);
                break;
            }
            fill(sock, buf, size + 2).await?;
            req.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else if let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        fill(sock, buf, len).await?;
        req.body = buf.drain(..len).collect();
    }
    Ok(Some(req))
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
    while let Some(req) = read_request(&mut sock, &mut buf).await? {
        let (method, path) = (req.method.as_str(), req.path.as_str());
        let head_only = method == "HEAD";
        let path_only = path.split('?').next().unwrap_or("").to_string();
        let log = |status: u16| {
            st.lock()
                .unwrap()
                .requests
                .push(format!("{method} {path} {status}"));
        };
        let token_mode = st.lock().unwrap().token.is_some();
        if token_mode && path_only == "/token" {
            let (status, body) = token_endpoint(&st, &req);
            log(status);
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            if status == 401 {
                headers.push((
                    "WWW-Authenticate",
                    format!("Basic realm=\"{TOKEN_SERVICE}\""),
                ));
            }
            respond(&mut sock, &status_line(status), &headers, &body, head_only).await?;
            continue;
        }
        if token_mode && (path_only == "/v2" || path_only.starts_with("/v2/")) {
            if let Err(denial) = authorize(&st, &req, &path_only) {
                log(401);
                let port = sock.local_addr()?.port();
                let mut challenge = format!(
                    "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"{TOKEN_SERVICE}\""
                );
                if let Some(repo) = repo_of(&path_only) {
                    challenge.push_str(&format!(",scope=\"repository:{repo}:pull\""));
                }
                if denial == Denial::InsufficientScope {
                    challenge.push_str(",error=\"insufficient_scope\"");
                }
                let b =
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
                respond(
                    &mut sock,
                    "401 Unauthorized",
                    &[
                        ("Content-Type", "application/json".into()),
                        ("WWW-Authenticate", challenge),
                    ],
                    b,
                    head_only,
                )
                .await?;
                continue;
            }
        }
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

// ---------------------------------------------------------------------------------------------
// token-auth mode

fn status_line(status: u16) -> String {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    };
    format!("{status} {reason}")
}

#[derive(Debug, PartialEq, Eq)]
enum Denial {
    /// no, or an unknown, Bearer token
    Unauthenticated,
    /// a valid token that does not grant pull on the repository
    InsufficientScope,
}

/// The repository a `/v2/<repo>/{manifests,blobs,tags}/…` path names (None for `/v2/`).
fn repo_of(path_only: &str) -> Option<String> {
    let rest = path_only.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| rest.rfind(m))
        .min()
        .map(|i| rest[..i].to_string())
}

/// Decode `application/x-www-form-urlencoded` text (also query strings).
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_params(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (url_decode(k), url_decode(v)),
            None => (url_decode(p), String::new()),
        })
        .collect()
}

fn scopes_of(params: &[(String, String)]) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
        .collect()
}

/// Whether `scopes` grant `pull` on `repo` (`repository:<repo>:<actions>`).
fn grants_pull(scopes: &[String], repo: &str) -> bool {
    scopes.iter().any(|s| {
        let Some(rest) = s.strip_prefix("repository:") else {
            return false;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            return false;
        };
        name == repo && actions.split(',').any(|a| a == "pull" || a == "*")
    })
}

/// (user, password) of an `Authorization: Basic …` header.
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.header("authorization")?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Check the Bearer token of a `/v2/` request; on success record it as authorised.
fn authorize(st: &Mutex<State>, req: &HttpRequest, path_only: &str) -> Result<(), Denial> {
    let mut s = st.lock().unwrap();
    let t = s.token.as_mut().expect("token mode");
    let token = bearer_token(req).ok_or(Denial::Unauthenticated)?;
    let auth = if t.cfg.static_token.as_deref() == Some(token.as_str()) {
        AuthPath::Static
    } else {
        let issued = t.issued.get(&token).ok_or(Denial::Unauthenticated)?;
        if let Some(repo) = repo_of(path_only) {
            if !grants_pull(&issued.scopes, &repo) {
                return Err(Denial::InsufficientScope);
            }
        }
        issued.path
    };
    t.authorized.push(AuthorizedRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        auth,
    });
    Ok(())
}

fn issue(t: &mut TokenState, path: AuthPath, scopes: Vec<String>) -> String {
    t.counter += 1;
    let token = format!("fake-{:?}-{}-{:08x}", path, t.counter, rand_u32()).to_lowercase();
    t.issued.insert(token.clone(), IssuedToken { path, scopes });
    token
}

/// Some per-process randomness for token strings (so a token is never guessable from another).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// Answer a `/token` request: (status, JSON body).
fn token_endpoint(st: &Mutex<State>, req: &HttpRequest) -> (u16, Vec<u8>) {
    let mut s = st.lock().unwrap();
    let t = s.token.as_mut().expect("token mode");
    let basic = basic_credentials(req);
    let (params, status, issued, body) = match req.method.as_str() {
        "GET" | "HEAD" => {
            let query = req.path.split_once('?').map(|(_, q)| q).unwrap_or("");
            let params = parse_params(query);
            let path = match &basic {
                Some((u, p)) if *u == t.cfg.username && *p == t.cfg.password => {
                    Some(AuthPath::BasicToken)
                }
                Some((u, p))
                    if u == "<token>" && Some(p.as_str()) == t.cfg.identity_token.as_deref() =>
                {
                    Some(AuthPath::IdentityBasic)
                }
                _ => None,
            };
            match path {
                Some(path) => {
                    let token = issue(t, path, scopes_of(&params));
                    let body = serde_json::json!({
                        "token": token,
                        "access_token": token,
                        "expires_in": 300,
                    });
                    (params, 200, Some(path), body.to_string().into_bytes())
                }
                None => (
                    params,
                    401,
                    None,
                    error_json("UNAUTHORIZED", "invalid username or password"),
                ),
            }
        }
        "POST" => {
            let params = parse_params(&String::from_utf8_lossy(&req.body));
            if let Some(code) = t.cfg.post_status {
                (params, code, None, Vec::new())
            } else {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let path = match get("grant_type").as_str() {
                    "refresh_token"
                        if t.cfg.identity_token.as_deref()
                            == Some(get("refresh_token").as_str()) =>
                    {
                        Ok(AuthPath::RefreshToken)
                    }
                    "refresh_token" => Err((401, "invalid refresh token")),
                    "password"
                        if get("username") == t.cfg.username
                            && get("password") == t.cfg.password =>
                    {
                        Ok(AuthPath::PasswordGrant)
                    }
                    "password" => Err((401, "invalid username or password")),
                    _ => Err((400, "unsupported grant_type")),
                };
                match path {
                    Ok(path) => {
                        let token = issue(t, path, scopes_of(&params));
                        let body = serde_json::json!({"access_token": token, "expires_in": 300});
                        (params, 200, Some(path), body.to_string().into_bytes())
                    }
                    Err((code, msg)) => {
                        let c = if code == 401 {
                            "UNAUTHORIZED"
                        } else {
                            "UNSUPPORTED"
                        };
                        (params, code, None, error_json(c, msg))
                    }
                }
            }
        }
        _ => (Vec::new(), 405, None, Vec::new()),
    };
    t.token_requests.push(TokenRequest {
        method: req.method.clone(),
        params,
        basic_user: basic.map(|(u, _)| u),
        status,
        issued,
    });
    (status, body)
}

fn error_json(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"errors": [{"code": code, "message": message}]})
        .to_string()
        .into_bytes()
}
