//! Registry authentication through the Docker bearer-token protocol (distribution's `token.md` and
//! `oauth.md`): the fake registry in token-auth mode serves its own token endpoint, and the cri-lxc
//! daemon pulls with each kind of CRI `AuthConfig` credential.

mod harness;

use base64::Engine as _;
use cri_lxc::grpc::client::CriClient;
use harness::image::simple_image;
use harness::*;
use k8s_cri::v1::{AuthConfig, ImageSpec, ImageStatusRequest, ListImagesRequest};
use tonic::Code;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pw";
const IDENTITY_TOKEN: &str = "identity-refresh-token-7f3a";
const STATIC_TOKEN: &str = "static-registry-token-91c2";
const REPO: &str = "test/private";

// ---------------------------------------------------------------------------------------------
// helpers

fn token_auth() -> TokenAuth {
    TokenAuth::new(USER, PASSWORD)
        .identity_token(IDENTITY_TOKEN)
        .static_token(STATIC_TOKEN)
}

/// A token-auth fake registry serving one image as `test/private:v1`, and a daemon that talks plain
/// HTTP to it.
async fn setup(auth: TokenAuth) -> (FakeRegistry, BuiltImage, Daemon) {
    let reg = FakeRegistry::start_token_auth(auth).await;
    let img = simple_image("tokenauth").build(Format::Oci);
    reg.add_image(REPO, "v1", &img);
    let config = format!(
        "log_level = \"debug\"\n\n[registry]\ninsecure_http = [\"{}\"]\n",
        reg.addr()
    );
    let d = Daemon::start(&config).await;
    (reg, img, d)
}


async fn pull_ok(c: &mut CriClient, image: &str, auth: Option<AuthConfig>, what: &str) -> String {
    match pull_with(c, image, auth).await {
        Ok(r) => r,
        Err(e) => panic!(
            "{what}: PullImage({image}) failed: {:?}: {}",
            e.code(),
            e.message()
        ),
    }
}

async fn image_present(c: &mut CriClient, image: &str) -> Option<String> {
    let req = ImageStatusRequest {
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        verbose: false,
    };
    c.image
        .image_status(req)
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .map(|i| i.id)
}

async fn image_count(c: &mut CriClient) -> usize {
    c.image
        .list_images(ListImagesRequest { filter: None })
        .await
        .expect("ListImages")
        .into_inner()
        .images
        .len()
}

/// Every blob of `img` (layers and config) was fetched with a GET that a token of kind `path`
/// authorised, and by no other kind of token.
fn assert_blobs_fetched_with(reg: &FakeRegistry, img: &BuiltImage, path: AuthPath) {
    let mut digests: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
    digests.push(&img.config_digest);
    for d in digests {
        let auths = reg.blob_get_auth(d);
        assert!(
            !auths.is_empty(),
            "blob {d} was never fetched with a valid Bearer token; requests: {:#?}",
            reg.requests()
        );
        assert!(
            auths.iter().all(|a| *a == path),
            "blob {d} should be fetched with a {path:?} token, got {auths:?}"
        );
    }
    // Nothing that needed a token got through with any other kind.
    let other: Vec<_> = reg
        .authorized_requests()
        .into_iter()
        .filter(|r| r.auth != path)
        .collect();
    assert!(
        other.is_empty(),
        "requests authorised by another token kind: {other:#?}"
    );
}

fn expected_scope() -> String {
    format!("repository:{REPO}:pull")
}


/// The pulls issued a GET /token with Basic credentials that got a token for the image's scope.
fn assert_basic_token_fetched(reg: &FakeRegistry, what: &str) {
    let reqs = reg.token_requests();
    let ok: Vec<&TokenRequest> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.issued == Some(AuthPath::BasicToken))
        .collect();
    assert!(
        !ok.is_empty(),
        "{what}: no successful GET /token with Basic user:password: {reqs:#?}"
    );
    for r in &ok {
        assert_eq!(r.basic_user.as_deref(), Some(USER), "{what}: {r:?}");
        assert_eq!(r.param("service"), Some("fake-registry"), "{what}: {r:?}");
        assert!(
            r.scopes().contains(&expected_scope()),
            "{what}: token requested without scope {}: {r:?}",
            expected_scope()
        );
    }
    assert!(
        reqs.iter().all(|r| r.method == "GET"),
        "{what}: only the GET token flow is expected with user:password: {reqs:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// harness self-test: the protocol as a plain HTTP client sees it (no daemon)

#[tokio::test(flavor = "multi_thread")]
async fn harness_token_protocol() {
    let reg = FakeRegistry::start_token_auth(token_auth()).await;
    let img = simple_image("proto").build(Format::Oci);
    reg.add_image(REPO, "v1", &img);
    let http = reqwest::Client::new();
    let base = format!("http://{}", reg.addr());
    let manifest_url = format!("{base}/v2/{REPO}/manifests/v1");
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("JSON body");

    // /v2/ without a token: a challenge without scope, and the error envelope.
    let r = http.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let www = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        www,
        format!("Bearer realm=\"{}\",service=\"fake-registry\"", reg.realm())
    );
    let body = json(&r.bytes().await.unwrap());
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    assert_eq!(body["errors"][0]["message"], "authentication required");

    // A repository path: the challenge names the scope.
    let r = http.get(&manifest_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let www = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        www.ends_with(&format!(",scope=\"{}\"", expected_scope())),
        "{www}"
    );
    // Basic credentials are no Bearer token.
    let r = http
        .get(&manifest_url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The token endpoint refuses anonymous and wrong credentials.
    let token_url = format!(
        "{}?service=fake-registry&scope=repository%3A{}%3Apull",
        reg.realm(),
        REPO.replace('/', "%2F")
    );
    for (user, pass) in [
        (None, None),
        (Some(USER), Some("wrong")),
        (Some("bob"), Some(PASSWORD)),
    ] {
        let mut rq = http.get(&token_url);
        if let Some(u) = user {
            rq = rq.basic_auth(u, pass);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{user:?}");
        let body = json(&r.bytes().await.unwrap());
        assert_eq!(body["errors"][0]["message"], "invalid username or password");
    }

    // GET /token with the right credentials: token, access_token and expires_in.
    let r = http
        .get(&token_url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = json(&r.bytes().await.unwrap());
    let token = body["token"].as_str().expect("token").to_string();
    assert_eq!(body["access_token"], token.as_str());
    assert_eq!(body["expires_in"], 300);
    let r = http
        .get(&manifest_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), img.manifest.as_slice());
    let blob_url = format!("{base}/v2/{REPO}/blobs/{}", img.config_digest);
    let r = http
        .get(&blob_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        reg.blob_get_auth(&img.config_digest),
        vec![AuthPath::BasicToken]
    );
    // …but not for another repository.
    let r = http
        .get(format!("{base}/v2/other/repo/manifests/v1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"insufficient_scope\""));

    // POST /token, refresh_token grant.
    let form = |rt: &str| {
        format!(
            "grant_type=refresh_token&refresh_token={rt}&service=fake-registry&scope=repository%3A{}%3Apull&client_id=test",
            REPO.replace('/', "%2F")
        )
    };
    let post = |body: String| {
        http.post(reg.realm())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = post(form(IDENTITY_TOKEN)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = json(&r.bytes().await.unwrap());
    assert_eq!(body["expires_in"], 300);
    let access = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let r = http
        .get(&manifest_url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = post(form("not-the-identity-token")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The static token works directly.
    let r = http
        .get(&manifest_url)
        .bearer_auth(STATIC_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .get(&manifest_url)
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let kinds: Vec<AuthPath> = reg.authorized_requests().iter().map(|r| r.auth).collect();
    assert_eq!(
        kinds,
        vec![
            AuthPath::BasicToken,
            AuthPath::BasicToken,
            AuthPath::RefreshToken,
            AuthPath::Static
        ]
    );
    let issued: Vec<Option<AuthPath>> = reg.token_requests().iter().map(|r| r.issued).collect();
    assert_eq!(
        issued,
        vec![
            None,
            None,
            None,
            Some(AuthPath::BasicToken),
            Some(AuthPath::RefreshToken),
            None
        ]
    );
    let refresh = &reg.token_requests()[4];
    assert_eq!(refresh.param("client_id"), Some("test"));
    assert_eq!(refresh.scopes(), vec![expected_scope()]);

    // A token service that only knows GET: POST is answered 405, GET with <token>:<identity> works.
    let reg2 = FakeRegistry::start_token_auth(token_auth().post_status(405)).await;
    let r = http
        .post(reg2.realm())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(IDENTITY_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let r = http
        .get(format!("{}?service=fake-registry", reg2.realm()))
        .basic_auth("<token>", Some(IDENTITY_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        reg2.token_requests().last().unwrap().issued,
        Some(AuthPath::IdentityBasic)
    );
}

// ---------------------------------------------------------------------------------------------
// successful pulls, one per kind of credential

#[tokio::test(flavor = "multi_thread")]
async fn username_password_pulls_via_token_endpoint() {
    let (reg, img, d) = setup(token_auth()).await;
    let mut c = d.client().await;
    let name = reg.image(&format!("{REPO}:v1"));
    let auth = AuthConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    let id = pull_ok(&mut c, &name, Some(auth), "username/password").await;
    assert_eq!(id, img.id());
    assert_eq!(
        image_present(&mut c, &name).await.as_deref(),
        Some(img.id())
    );
    assert_basic_token_fetched(&reg, "username/password");
    assert_blobs_fetched_with(&reg, &img, AuthPath::BasicToken);
}

#[tokio::test(flavor = "multi_thread")]
async fn base64_auth_field_pulls_via_token_endpoint() {
    let (reg, img, d) = setup(token_auth()).await;
    let mut c = d.client().await;
    let name = reg.image(&format!("{REPO}:v1"));
    let auth = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")),
        server_address: reg.addr(),
        ..Default::default()
    };
    let id = pull_ok(&mut c, &name, Some(auth), "base64 auth").await;
    assert_eq!(id, img.id());
    assert_eq!(
        image_present(&mut c, &name).await.as_deref(),
        Some(img.id())
    );
    assert_basic_token_fetched(&reg, "base64 auth");
    assert_blobs_fetched_with(&reg, &img, AuthPath::BasicToken);
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_token_is_used_as_bearer_without_token_endpoint() {
    let (reg, img, d) = setup(token_auth()).await;
    let mut c = d.client().await;
    let name = reg.image(&format!("{REPO}:v1"));
    let auth = AuthConfig {
        registry_token: STATIC_TOKEN.into(),
        ..Default::default()
    };
    let id = pull_ok(&mut c, &name, Some(auth), "registry_token").await;
    assert_eq!(id, img.id());
    assert_eq!(
        image_present(&mut c, &name).await.as_deref(),
        Some(img.id())
    );
    let token_reqs = reg.token_requests();
    assert!(
        token_reqs.is_empty(),
        "a registry_token must be sent as-is, without asking the token endpoint: {token_reqs:#?}"
    );
    assert_blobs_fetched_with(&reg, &img, AuthPath::Static);
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_token_pulls_via_oauth_refresh_grant() {
    let (reg, img, d) = setup(token_auth()).await;
    let mut c = d.client().await;
    let name = reg.image(&format!("{REPO}:v1"));
    let auth = AuthConfig {
        identity_token: IDENTITY_TOKEN.into(),
        ..Default::default()
    };
    let id = pull_ok(&mut c, &name, Some(auth), "identity_token").await;
    assert_eq!(id, img.id());
    assert_eq!(
        image_present(&mut c, &name).await.as_deref(),
        Some(img.id())
    );
    let reqs = reg.token_requests();
    let posts: Vec<&TokenRequest> = reqs.iter().filter(|r| r.method == "POST").collect();
    assert!(
        !posts.is_empty(),
        "no POST /token (OAuth2 refresh grant): {reqs:#?}"
    );
    for p in &posts {
        assert_eq!(p.status, 200, "refresh grant refused: {p:?}");
        assert_eq!(p.issued, Some(AuthPath::RefreshToken), "{p:?}");
        assert_eq!(p.param("grant_type"), Some("refresh_token"), "{p:?}");
        assert_eq!(p.param("service"), Some("fake-registry"), "{p:?}");
        assert!(p.scopes().contains(&expected_scope()), "{p:?}");
        assert!(
            p.param("client_id").is_some_and(|c| !c.is_empty()),
            "oauth.md requires client_id: {p:?}"
        );
    }
    assert!(
        reqs.iter().all(|r| r.method == "POST"),
        "the registry supports POST; no GET fallback expected: {reqs:#?}"
    );
    assert_blobs_fetched_with(&reg, &img, AuthPath::RefreshToken);
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_token_falls_back_to_get_when_post_unsupported() {
    for post_status in [404u16, 405] {
        let (reg, img, d) = setup(token_auth().post_status(post_status)).await;
        let mut c = d.client().await;
        let name = reg.image(&format!("{REPO}:v1"));
        let auth = AuthConfig {
            identity_token: IDENTITY_TOKEN.into(),
            ..Default::default()
        };
        let what = format!("identity_token, POST answered {post_status}");
        let id = pull_ok(&mut c, &name, Some(auth), &what).await;
        assert_eq!(id, img.id());
        let reqs = reg.token_requests();
        assert!(
            reqs.iter()
                .any(|r| r.method == "POST" && r.status == post_status),
            "{what}: POST not tried first: {reqs:#?}"
        );
        let gets: Vec<&TokenRequest> = reqs.iter().filter(|r| r.method == "GET").collect();
        assert!(!gets.is_empty(), "{what}: no GET fallback: {reqs:#?}");
        for g in &gets {
            assert_eq!(g.issued, Some(AuthPath::IdentityBasic), "{what}: {g:?}");
            assert_eq!(g.basic_user.as_deref(), Some("<token>"), "{what}: {g:?}");
            assert!(g.scopes().contains(&expected_scope()), "{what}: {g:?}");
        }
        assert_blobs_fetched_with(&reg, &img, AuthPath::IdentityBasic);
    }
}

// ---------------------------------------------------------------------------------------------
// refusals

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_denied_with_the_registrys_words() {
    let (reg, _img, d) = setup(token_auth()).await;
    let mut c = d.client().await;
    let name = reg.image(&format!("{REPO}:v1"));
    for (what, auth) in [
        (
            "wrong password",
            AuthConfig {
                username: USER.into(),
                password: "wrong".into(),
                ..Default::default()
            },
        ),
        (
            "unknown user",
            AuthConfig {
                username: "mallory".into(),
                password: PASSWORD.into(),
                ..Default::default()
            },
        ),
        (
            "wrong base64 auth",
            AuthConfig {
                auth: base64::engine::general_purpose::STANDARD.encode(format!("{USER}:nope")),
                ..Default::default()
            },
        ),
    ] {
        let e = pull_with(&mut c, &name, Some(auth)).await.expect_err(what);
        assert_code(&e, &[Code::Unauthenticated, Code::PermissionDenied], what);
        // The token endpoint said why; that is what the user needs to read, not just that the
        // manifest request was unauthorised.
        assert!(
            e.message().contains("invalid username or password"),
            "{what}: message should carry the token endpoint's words \"invalid username or password\": {}",
            e.message()
        );
    }
    assert!(
        reg.token_requests().iter().any(|r| r.status == 401),
        "the token endpoint was never asked: {:#?}",
        reg.token_requests()
    );
    assert_eq!(image_count(&mut c).await, 0);
    assert!(reg.authorized_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credentials_is_denied_with_the_registrys_words() {
    let (reg, _img, d) = setup(token_auth()).await;
    let mut c = d.client().await;
    let name = reg.image(&format!("{REPO}:v1"));
    for (what, auth) in [
        ("no auth", None),
        ("empty auth", Some(AuthConfig::default())),
    ] {
        let e = pull_with(&mut c, &name, auth).await.expect_err(what);
        assert_code(&e, &[Code::Unauthenticated, Code::PermissionDenied], what);
        let m = e.message();
        assert!(
            m.contains("authentication required") || m.contains("invalid username or password"),
            "{what}: message should carry the registry's error: {m}"
        );
    }
    assert_eq!(image_count(&mut c).await, 0);
    assert!(reg.authorized_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_identity_or_registry_token_is_denied() {
    let (reg, _img, d) = setup(token_auth()).await;
    let mut c = d.client().await;
    let name = reg.image(&format!("{REPO}:v1"));
    let e = pull_with(
        &mut c,
        &name,
        Some(AuthConfig {
            identity_token: "revoked-identity-token".into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("wrong identity token");
    assert_code(
        &e,
        &[Code::Unauthenticated, Code::PermissionDenied],
        "wrong identity token",
    );
    assert!(
        e.message().contains("invalid refresh token"),
        "wrong identity token: message should carry the token endpoint's words: {}",
        e.message()
    );
    let e = pull_with(
        &mut c,
        &name,
        Some(AuthConfig {
            registry_token: "expired-registry-token".into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("wrong registry token");
    assert_code(
        &e,
        &[Code::Unauthenticated, Code::PermissionDenied],
        "wrong registry token",
    );
    assert!(
        e.message().contains("authentication required"),
        "wrong registry token: message should carry the registry's words: {}",
        e.message()
    );
    assert_eq!(image_count(&mut c).await, 0);
    assert!(reg.authorized_requests().is_empty());
}
