//! Talking to one registry endpoint (the upstream host or a mirror) through `oci-client`: credentials
//! from the CRI `AuthConfig`, manifest resolution, blob streams, and sorting registry failures into the
//! kinds the CRI cares about (not found, unauthorised, unreachable).
//!
//! Must not touch the content store or the records: it fetches bytes, the caller verifies and keeps them.

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::manifest::ACCEPTED_MANIFEST_TYPES;
use super::reference::ImageRef;
use super::registry_hosts::Endpoint;

/// Why a registry request failed, as far as the CRI error code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    NotFound,
    Unauthorized,
    Unreachable,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{host}: {message}")]
pub struct RegistryFailure {
    pub host: String,
    pub kind: FailureKind,
    pub message: String,
}

/// Credentials kubelet passes in `PullImageRequest.auth` (from an image pull secret).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64("user:password"), as in a docker config.json `auth` field.
    pub auth: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl Credentials {
    /// The oci-client auth for everything but an identity token (which needs a token exchange per
    /// endpoint, see `RegistrySession::connect`). `registry_token` is a bearer token sent as-is; `auth`
    /// and username/password become Basic credentials, which oci-client uses for a Basic challenge or to
    /// obtain a bearer token from the realm of a Bearer challenge.
    pub fn to_registry_auth(&self) -> Result<RegistryAuth, String> {
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|e| format!("auth is not base64: {e}"))?;
            let text = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
            let (user, pass) = text.split_once(':').ok_or_else(|| "auth must encode \"user:password\"".to_string())?;
            return Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()));
        }
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(self.username.clone(), self.password.clone()));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// One endpoint with its client and credentials, for the duration of one pull.
pub struct RegistrySession {
    client: Client,
    endpoint: Endpoint,
    auth: RegistryAuth,
    image: ImageRef,
}

impl RegistrySession {
    pub fn new(endpoint: &Endpoint, image: &ImageRef, auth: RegistryAuth, progress_timeout: Duration) -> RegistrySession {
        let config = ClientConfig {
            protocol: if endpoint.plain_http { ClientProtocol::Http } else { ClientProtocol::Https },
            accept_invalid_certificates: endpoint.skip_verify,
            // We choose the platform ourselves (with variant) from the raw index.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(progress_timeout),
            user_agent: concat!("cri-lxc/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        RegistrySession { client: Client::new(config), endpoint: endpoint.clone(), auth, image: image.clone() }
    }

    /// Like `new`, but when the credentials carry an identity token (an OAuth2 refresh token, as
    /// `docker login` stores for some registries) first exchange it at this endpoint's token realm for
    /// an access token.
    pub async fn connect(
        endpoint: &Endpoint,
        image: &ImageRef,
        credentials: &Credentials,
        auth: RegistryAuth,
        progress_timeout: Duration,
    ) -> Result<RegistrySession, RegistryFailure> {
        let mut session = RegistrySession::new(endpoint, image, auth, progress_timeout);
        if !credentials.identity_token.is_empty() && credentials.registry_token.is_empty() {
            let token = session.exchange_identity_token(&credentials.identity_token).await?;
            session.auth = RegistryAuth::Bearer(token);
        }
        if matches!(session.auth, RegistryAuth::Basic(..)) {
            // Authenticate up front: oci-client's lazy authentication discards a token service's refusal
            // ("invalid username or password") and reports only the registry's later 401.
            let reference = session.reference_for(None);
            if let Err(e) = session.client.auth(&reference, &session.auth, RegistryOperation::Pull).await {
                return Err(session.failure(e).await);
            }
        }
        Ok(session)
    }

    fn http(&self) -> Result<reqwest::Client, RegistryFailure> {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(self.endpoint.skip_verify)
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("cri-lxc/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| self.other(format!("building an HTTP client: {}", error_chain(&e))))
    }

    fn other(&self, message: String) -> RegistryFailure {
        RegistryFailure { host: self.endpoint.host.clone(), kind: FailureKind::Other, message }
    }

    /// OAuth2 refresh-token grant per the distribution token spec (oauth.md): read the Bearer challenge
    /// from `/v2/`, POST `grant_type=refresh_token` to its realm; registries whose token service only
    /// speaks the older GET flow (404/405 to the POST) get the token as Basic password of `<token>`,
    /// which is what the Docker CLI sends in that case.
    async fn exchange_identity_token(&self, identity_token: &str) -> Result<String, RegistryFailure> {
        let http = self.http()?;
        let scheme = if self.endpoint.plain_http { "http" } else { "https" };
        let ping = format!("{scheme}://{}/v2/", self.endpoint.host);
        let response = http.get(&ping).send().await.map_err(|e| self.request_failure(&e))?;
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer_challenge)
            .ok_or_else(|| RegistryFailure {
                host: self.endpoint.host.clone(),
                kind: FailureKind::Unauthorized,
                message: "an identity token was given, but the registry offers no Bearer token service".into(),
            })?;
        let scope = format!("repository:{}:pull", self.image.repository());
        let service = challenge.service.clone().unwrap_or_default();
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", identity_token),
            ("service", service.as_str()),
            ("scope", scope.as_str()),
            ("client_id", "cri-lxc"),
        ];
        let mut response = http.post(&challenge.realm).form(&form).send().await.map_err(|e| self.request_failure(&e))?;
        if matches!(response.status().as_u16(), 404 | 405) {
            let query = [("service", service.as_str()), ("scope", scope.as_str())];
            response = http
                .get(&challenge.realm)
                .query(&query)
                .basic_auth("<token>", Some(identity_token))
                .send()
                .await
                .map_err(|e| self.request_failure(&e))?;
        }
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.request_failure(&e))?;
        if !status.is_success() {
            let said = envelope_messages(&body).unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(RegistryFailure {
                host: self.endpoint.host.clone(),
                kind: if matches!(status.as_u16(), 401 | 403) { FailureKind::Unauthorized } else { FailureKind::Other },
                message: format!("identity token refused by {}: HTTP {status}: {said}", challenge.realm),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            token: String,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| self.other(format!("token response from {} is not JSON: {e}", challenge.realm)))?;
        let token = if parsed.access_token.is_empty() { parsed.token } else { parsed.access_token };
        if token.is_empty() {
            return Err(self.other(format!("token response from {} has no access_token", challenge.realm)));
        }
        Ok(token)
    }

    fn request_failure(&self, e: &reqwest::Error) -> RegistryFailure {
        let kind = if e.is_connect() || e.is_timeout() { FailureKind::Unreachable } else { FailureKind::Other };
        RegistryFailure { host: self.endpoint.host.clone(), kind, message: error_chain(e) }
    }

    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    fn reference_for(&self, digest: Option<&str>) -> Reference {
        let r = self.image.to_oci_reference(&self.endpoint);
        match digest {
            // Keeps the endpoint routing (mirror / `server` host) and drops the tag.
            Some(d) => r.clone_with_digest(d.to_string()),
            None => r,
        }
    }

    /// Fetch the manifest or index the image reference (or `digest`, when given) names. Returns the raw
    /// bytes; the caller verifies them against the digest it expects.
    pub async fn fetch_manifest(&self, digest: Option<&str>) -> Result<bytes::Bytes, RegistryFailure> {
        let reference = self.reference_for(digest);
        let result = self.client.pull_manifest_raw(&reference, &self.auth, &ACCEPTED_MANIFEST_TYPES).await;
        match result {
            Ok((bytes, _digest)) => Ok(bytes),
            Err(e) => Err(self.failure(e).await),
        }
    }

    /// Fetch a small blob (config) into memory.
    pub async fn fetch_small_blob(&self, digest: &str, progress_timeout: Duration) -> Result<Vec<u8>, RegistryFailure> {
        let mut out = Vec::new();
        let mut stream = self.blob_stream(digest).await?;
        while let Some(chunk) = self.next_chunk(&mut stream, digest, progress_timeout).await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    pub async fn blob_stream(&self, digest: &str) -> Result<oci_client::client::SizedStream, RegistryFailure> {
        let reference = self.reference_for(None);
        // Blob requests need the auth oci-client negotiates on the first manifest request; make sure it
        // has happened even when the manifest came from the local content store.
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        match self.client.pull_blob_stream(&reference, digest).await {
            Ok(stream) => Ok(stream),
            Err(e) => Err(self.failure(e).await),
        }
    }

    /// The next chunk of a blob stream, or a timeout failure when the registry goes quiet for longer than
    /// `progress_timeout` (containerd's image_pull_progress_timeout semantics).
    pub async fn next_chunk(
        &self,
        stream: &mut oci_client::client::SizedStream,
        digest: &str,
        progress_timeout: Duration,
    ) -> Result<Option<bytes::Bytes>, RegistryFailure> {
        match tokio::time::timeout(progress_timeout, stream.next()).await {
            Err(_) => Err(RegistryFailure {
                host: self.endpoint.host.clone(),
                kind: FailureKind::Unreachable,
                message: format!("no progress downloading {digest} for {}s (pull progress timeout)", progress_timeout.as_secs()),
            }),
            Ok(None) => Ok(None),
            Ok(Some(Ok(bytes))) => Ok(Some(bytes)),
            Ok(Some(Err(e))) => Err(RegistryFailure {
                host: self.endpoint.host.clone(),
                kind: FailureKind::Other,
                message: format!("reading blob {digest}: {e}"),
            }),
        }
    }

    async fn failure(&self, err: OciDistributionError) -> RegistryFailure {
        let kind = classify(&err);
        let message = match &err {
            // reqwest's Display hides the cause (e.g. "connection refused"); show the whole chain.
            OciDistributionError::RequestError(e) => error_chain(e),
            // oci-client drops the registry's 401 body; fetch it once more so the user sees the
            // registry's own words ("authentication required", "invalid credentials", …).
            OciDistributionError::UnauthorizedError { url } => match self.registry_message(url).await {
                Some(said) => format!("{said} (HTTP 401 from {url})"),
                None => err.to_string(),
            },
            OciDistributionError::AuthenticationFailure(body) => {
                format!("token service refused the credentials: {}", envelope_messages(body.as_bytes()).unwrap_or_else(|| body.trim().to_string()))
            }
            other => other.to_string(),
        };
        RegistryFailure { host: self.endpoint.host.clone(), kind, message }
    }

    /// The error messages of a registry's error envelope for `url`, requested with the same credentials.
    async fn registry_message(&self, url: &str) -> Option<String> {
        let mut request = self.http().ok()?.get(url);
        if let RegistryAuth::Basic(user, pass) = &self.auth {
            request = request.basic_auth(user, Some(pass));
        }
        let body = request.send().await.ok()?.bytes().await.ok()?;
        envelope_messages(&body)
    }
}

/// The messages of a distribution-spec error envelope (`{"errors":[{"code":…,"message":…}]}`).
fn envelope_messages(body: &[u8]) -> Option<String> {
    let envelope: OciEnvelope = serde_json::from_slice(body).ok()?;
    let messages: Vec<String> = envelope
        .errors
        .iter()
        .map(|e| if e.message.is_empty() { format!("{:?}", e.code) } else { e.message.clone() })
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

#[derive(Debug, PartialEq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

/// `Bearer realm="https://auth.example/token",service="registry.example",scope="…"` (RFC 6750 §3).
fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let rest = header.trim().strip_prefix("Bearer").or_else(|| header.trim().strip_prefix("bearer"))?;
    let mut realm = None;
    let mut service = None;
    let mut chars = rest.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect::<String>().trim().to_string()
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            _ => {}
        }
    }
    Some(BearerChallenge { realm: realm?, service })
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

fn classify(err: &OciDistributionError) -> FailureKind {
    match err {
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => FailureKind::Unauthorized,
        OciDistributionError::ImageManifestNotFoundError(_) => FailureKind::NotFound,
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                FailureKind::Unauthorized
            } else if codes.iter().any(|c| {
                matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown | OciErrorCode::NotFound)
            }) {
                FailureKind::NotFound
            } else {
                FailureKind::Other
            }
        }
        OciDistributionError::ServerError { code, .. } => match code {
            401 | 403 => FailureKind::Unauthorized,
            404 => FailureKind::NotFound,
            _ => FailureKind::Other,
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => FailureKind::Unreachable,
        _ => FailureKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_precedence_and_decoding() {
        let c = Credentials { auth: base64::engine::general_purpose::STANDARD.encode("u:p:x"), ..Default::default() };
        assert!(matches!(c.to_registry_auth().unwrap(), RegistryAuth::Basic(u, p) if u == "u" && p == "p:x"));
        let c = Credentials { username: "a".into(), password: "b".into(), registry_token: "t".into(), ..Default::default() };
        assert!(matches!(c.to_registry_auth().unwrap(), RegistryAuth::Bearer(t) if t == "t"));
        // An identity token is exchanged per endpoint, not turned into Basic credentials here.
        let c = Credentials { identity_token: "i".into(), ..Default::default() };
        assert!(matches!(c.to_registry_auth().unwrap(), RegistryAuth::Anonymous));
        assert!(Credentials { auth: "%%%".into(), ..Default::default() }.to_registry_auth().is_err());
        assert!(matches!(Credentials::default().to_registry_auth().unwrap(), RegistryAuth::Anonymous));
    }

    #[test]
    fn bearer_challenge_parsing() {
        let c = parse_bearer_challenge(r#"Bearer realm="http://127.0.0.1:1/token",service="reg, x",scope="repository:a:pull""#).unwrap();
        assert_eq!(c, BearerChallenge { realm: "http://127.0.0.1:1/token".into(), service: Some("reg, x".into()) });
        let c = parse_bearer_challenge("Bearer realm=http://a/t,service=s").unwrap();
        assert_eq!(c.realm, "http://a/t");
        assert_eq!(c.service.as_deref(), Some("s"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="x""#), None);
    }
}
