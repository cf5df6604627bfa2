//! The API over real HTTPS: a server on the embedded SQLite store, called with reqwest.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use dora_apiserver::{ApiServer, GuardOptions, Identity, Options, Pki, TokenClaims, TokenKey};
use dora_crds::Kind;
use dora_store::cql::{CqlConfig, CqlStore};
use dora_store::sqlite::SqliteStore;
use dora_store::{ObjectKey, Precondition, SpecWrite, Store};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const BOOTSTRAP: &str = include_str!("../../manifests/bootstrap.yaml");
const BODY_LIMIT: usize = 64 * 1024;

struct Cluster {
    url: String,
    ca: String,
    secret: Vec<u8>,
    admin: String,
    tokens: TokenKey,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    cql: Option<CqlStore>,
    /// Shuts the server down when cancelled.
    stop: CancellationToken,
}

fn client_for(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(dora_client::tls_config(ca).unwrap())
        .build()
        .unwrap()
}

/// The store a test runs on.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    /// A fresh keyspace on the Cassandra of `DORA_CQL_URL` (scripts/test starts one).
    Cql,
}

async fn open_store(backend: Backend, dir: &std::path::Path) -> (Arc<dyn Store>, Option<CqlStore>) {
    match backend {
        Backend::Sqlite => (
            Arc::new(SqliteStore::open(dir.join("dora.db")).unwrap()),
            None,
        ),
        Backend::Cql => {
            let url = match std::env::var("DORA_CQL_URL") {
                Ok(url) => url,
                Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("CI=true but DORA_CQL_URL is not set: Cassandra must run")
                }
                Err(_) => "cql://127.0.0.1:9042/dora".into(),
            };
            let keyspace = format!("api_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let config = CqlConfig::from_url(&url)
                .unwrap()
                .with_keyspace(&keyspace)
                .unwrap();
            let store = CqlStore::connect(config)
                .await
                .expect("a CQL cluster: run `scripts/cassandra start`");
            (Arc::new(store.clone()), Some(store))
        }
    }
}

fn options() -> Options {
    Options {
        max_body_bytes: BODY_LIMIT,
        token_use_flush: Duration::from_millis(200),
        // These cases send bad tokens on purpose, from one address: the IP filter, which
        // would ban it after 3, has its own tests (guard.rs).
        guard: GuardOptions {
            ban_after: 1000,
            ..GuardOptions::default()
        },
        ..Options::default()
    }
}

async fn start(backend: Backend) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path().join("pki"));
    pki.ensure(&["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    let (store, cql) = open_store(backend, dir.path()).await;
    let secret = TokenKey::generate_secret();
    let options = options();
    let server = ApiServer::new(store.clone(), &secret, options)
        .await
        .unwrap();
    for result in server
        .service()
        .apply_manifest(&Identity::system(), BOOTSTRAP, false)
        .await
    {
        result.unwrap();
    }
    let tokens = server.tokens().clone();
    let admin = tokens
        .issue("admin", Duration::from_secs(3600), TokenClaims::default())
        .unwrap()
        .token;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let tls = pki.server_config().unwrap();
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(server.serve(listener, tls, async move { shutdown.cancelled().await }));
    let ca = std::fs::read_to_string(pki.ca_path()).unwrap();
    let http = client_for(&ca);
    Cluster {
        url,
        ca,
        secret,
        admin,
        tokens,
        http,
        _dir: dir,
        store,
        cql,
        stop,
    }
}

impl Cluster {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn apply(&self, token: &str, manifest: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/apply",
            Some(token),
            Some(manifest.to_string()),
        )
        .await
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// A second API server over the same store, as another machine would run: its URL.
    async fn second_server(&self) -> String {
        let server = ApiServer::new(self.store.clone(), &self.secret, options())
            .await
            .unwrap();
        let pki = Pki::new(self._dir.path().join("pki"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let tls = pki.server_config().unwrap();
        let stop = self.stop.clone();
        tokio::spawn(server.serve(listener, tls, async move { stop.cancelled().await }));
        url
    }

    /// Mints a recorded token through the API, as `dora token create` does.
    async fn create_token(&self, by: &str, request: Value) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/tokens",
                Some(by),
                Some(request.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["token"].as_str().unwrap().to_string(),
            body["id"].as_str().unwrap().to_string(),
        )
    }

    fn token_for(&self, user: &str) -> String {
        self.tokens
            .issue(user, Duration::from_secs(3600), TokenClaims::default())
            .unwrap()
            .token
    }
}

fn workload(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replica: {{count: 1}}\n  image: {{image: {image}}}\n"
    )
}

const WORKLOADS: &str = "/v1/zones/default/workspaces/default/workloads";

async fn health_readiness_metrics_and_openapi(c: &Cluster) {
    let (status, body) = c.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, _) = c.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, doc) = c.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"][WORKLOADS.to_string().replace(
            "default/workspaces/default",
            "{zone}/workspaces/{workspace}"
        )]
        .is_object()
    );
    assert!(doc["components"]["schemas"]["WorkloadSpec"]["properties"]["replica"].is_object());
    let pause = &doc["paths"]["/v1/zones/{zone}/workspaces/{workspace}/workloads/{name}/{action}"];
    assert_eq!(
        pause["post"]["parameters"][3]["schema"]["enum"],
        json!(["pause", "resume"])
    );
    c.get(&c.admin, WORKLOADS).await;
    let (status, _) = c.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, metrics) = c.call(Method::GET, "/metrics", Some(&c.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("dora_api_requests_total"),
        "{metrics}"
    );
}

async fn only_https_with_the_cluster_ca(c: &Cluster) {
    // A plain-HTTP request gets no HTTP answer.
    let port = c.url.rsplit(':').next().unwrap();
    let mut socket = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP must not be served"
    );
    let strangers_ca = {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        pki.ensure(&["localhost".into()]).unwrap();
        std::fs::read_to_string(pki.ca_path()).unwrap()
    };
    assert!(
        client_for(&strangers_ca)
            .get(format!("{}/healthz", c.url))
            .send()
            .await
            .is_err()
    );
    assert!(
        client_for(&c.ca)
            .get(format!("{}/healthz", c.url))
            .send()
            .await
            .is_ok()
    );
}

async fn bad_tokens_get_401(c: &Cluster) {
    let (status, body) = c.call(Method::GET, WORKLOADS, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["reason"], "Unauthorized");
    for token in ["garbage", "a.b.c.d.e", ""] {
        assert_eq!(
            c.get(token, WORKLOADS).await.0,
            StatusCode::UNAUTHORIZED,
            "{token:?}"
        );
    }
    let mut tampered = c.admin.clone().into_bytes();
    let i = tampered.len() - 30;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    assert_eq!(
        c.get(std::str::from_utf8(&tampered).unwrap(), WORKLOADS)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let foreign = TokenKey::from_secret(&[9; 32])
        .unwrap()
        .issue("admin", Duration::from_secs(60), TokenClaims::default())
        .unwrap();
    assert_eq!(
        c.get(&foreign.token, WORKLOADS).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A correctly encrypted token whose expiry has passed.
    let expired = {
        use jwt_simple::prelude::{A256KWKey, Claims, Clock, Duration};
        let mut claims =
            Claims::with_custom_claims(TokenClaims::default(), Duration::from_secs(60))
                .with_issuer("dora")
                .with_subject("admin")
                .with_jwt_id("old");
        let past = Clock::now_since_epoch() - Duration::from_secs(3600);
        claims.issued_at = Some(past);
        claims.expires_at = Some(past + Duration::from_secs(60));
        A256KWKey::from_bytes(&c.secret)
            .unwrap()
            .encrypt(claims)
            .unwrap()
    };
    let (status, body) = c.get(&expired, WORKLOADS).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(c.get(&c.admin, WORKLOADS).await.0, StatusCode::OK);
}

async fn a_deleted_users_tokens_stop_working(c: &Cluster) {
    let user = "apiVersion: v1\nkind: User\nmetadata: {name: bob}\nspec:\n  resources: [{kind: All, zone: All, workspace: default, role: user}]\n";
    assert_eq!(c.apply(&c.admin, user).await.0, StatusCode::OK);
    let (status, issued) = c
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&c.admin),
            Some(json!({"user": "bob", "expiresIn": "1h"}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let bob = issued["token"].as_str().unwrap().to_string();
    let (status, me) = c.get(&bob, "/v1/whoami").await;
    assert_eq!((status, me["user"].as_str()), (StatusCode::OK, Some("bob")));
    assert_eq!(
        c.call(Method::DELETE, "/v1/users/bob", Some(&c.admin), None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = c.get(&bob, "/v1/whoami").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

async fn roles_limit_users_to_their_workspace(c: &Cluster) {
    let setup = "apiVersion: v1\nkind: Workspace\nmetadata: {name: alice}\n---\napiVersion: v1\nkind: User\nmetadata: {name: alice}\nspec:\n  default: {zone: default, workspace: alice}\n  resources: [{kind: All, zone: default, workspace: alice, role: user}]\n";
    assert_eq!(c.apply(&c.admin, setup).await.0, StatusCode::OK);
    let alice = c.token_for("alice");
    let (status, body) = c.apply(&alice, &workload("mine", "busybox")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["results"][0]["workspace"], "alice",
        "the user's default workspace applies"
    );
    assert_eq!(
        c.apply(&c.admin, &workload("admins", "busybox")).await.0,
        StatusCode::OK
    );
    // Naming another workspace in the body, the query or the path does not get around the check.
    let (status, body) = c
        .apply(
            &alice,
            &workload("sneaky", "busybox")
                .replace("name: sneaky", "name: sneaky\n  workspace: default"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = c
        .call(
            Method::POST,
            "/v1/apply?workspace=default",
            Some(&alice),
            Some(workload("sneaky", "busybox")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(c.get(&alice, WORKLOADS).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        c.get(&alice, &format!("{WORKLOADS}/admins")).await.0,
        StatusCode::FORBIDDEN
    );
    // Listing across workspaces shows only what she may see.
    let (status, list) = c.get(&alice, "/v1/zones/default/workloads").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["mine"]);
    let (status, all) = c.get(&c.admin, "/v1/zones/default/workloads").await;
    assert_eq!(
        (status, all["items"].as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );
    // No roles for her, and no tokens for others.
    let role =
        "apiVersion: v1\nkind: Role\nmetadata: {name: mine}\nspec: {permission: {All: [Apply]}}\n";
    assert_eq!(c.apply(&alice, role).await.0, StatusCode::FORBIDDEN);
    let (status, _) = c
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&alice),
            Some(json!({"user": "admin"}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, own) = c
        .call(Method::POST, "/v1/tokens", Some(&alice), Some("{}".into()))
        .await;
    assert_eq!(
        (status, own["user"].as_str()),
        (StatusCode::CREATED, Some("alice"))
    );
    let (status, _) = c
        .call(
            Method::DELETE,
            &format!("{WORKLOADS}/admins"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Applies `manifest` and expects the first failing document to be `document` with `status`
/// and `field`; returns the whole answer.
async fn expect_rejected(
    c: &Cluster,
    manifest: &str,
    status: StatusCode,
    document: u64,
    field: Option<&str>,
) -> Value {
    let (got, body) = c.apply(&c.admin, manifest).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["document"].as_u64(), Some(document), "{body}");
    assert_eq!(body["error"]["field"].as_str(), field, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    body
}

async fn bad_documents_are_refused_with_their_field_and_nothing_is_stored(c: &Cluster) {
    let ok = workload("good", "busybox");
    let cases: Vec<(String, StatusCode, Option<&str>)> = vec![
        ("kind: [unclosed\n".into(), StatusCode::BAD_REQUEST, None),
        (
            ok.replace("Workload", "Pod"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("kind"),
        ),
        (
            ok.replace("replica: {count: 1}", "replica: {cnt: 1}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.replica.cnt"),
        ),
        (
            ok.replace("count: 1", "count: many"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.replica.count"),
        ),
        (
            ok.replace("name: good", "name: Bad_Name"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("metadata.name"),
        ),
        (
            ok.replace("name: good", "name: good\n  zone: atlantis"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("metadata.zone"),
        ),
        (
            ok.replace("name: good", "name: good\n  workspace: nowhere"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("metadata.workspace"),
        ),
        (
            ok.replace("kind: Workload", "kind: Container"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("kind"),
        ),
        (
            ok.replace("apiVersion: v1", "apiVersion: v9"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("apiVersion"),
        ),
    ];
    let mut cases = cases;
    for image in [
        "Busybox",
        "busy box",
        "busybox:",
        "busybox:-1",
        "reg.io:port/app",
        "app@sha256:xyz",
        "a//b",
    ] {
        cases.push((
            workload("good", &format!("{image:?}")),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.image.image"),
        ));
    }
    for (bad, status, field) in cases {
        // The bad document comes second: the first is applied, the bad one is not.
        let manifest = format!("{}---\n{bad}", workload("first", "busybox"));
        let body = expect_rejected(c, &manifest, status, 1, field).await;
        assert_eq!(
            body["results"][0]["outcome"]
                .as_str()
                .map(|o| !o.is_empty()),
            Some(true),
            "{body}"
        );
        assert!(body["results"][1]["error"].is_object());
    }
    let (_, list) = c.get(&c.admin, WORKLOADS).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["first"], "only the valid document was stored");
    // Too large a body.
    let huge = format!("{}# {}\n", ok, "x".repeat(BODY_LIMIT));
    let (status, body) = c.apply(&c.admin, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["reason"], "TooLarge");
    // The server keeps serving.
    assert_eq!(c.apply(&c.admin, &ok).await.0, StatusCode::OK);
}

async fn applies_that_would_start_more_are_refused_out_of_credit(c: &Cluster) {
    let (status, _) = c.apply(&c.admin, &workload("train", "a")).await;
    assert_eq!(status, StatusCode::OK);
    // What the credit system writes when the admin's weekly limit is used up.
    let key = ObjectKey::new(Kind::Usercredit, "default", "", "admin");
    let spec = serde_json::json!({"user": "admin"});
    c.store
        .put_spec(SpecWrite {
            key: key.clone(),
            precondition: Precondition::Absent,
            owner: "creditsys".into(),
            labels: Default::default(),
            meta: Default::default(),
            spec_hash: dora_crds::spec_hash(Kind::Usercredit, &spec),
            spec,
            desired: Value::Null,
            computed: Some(serde_json::json!({
                "weekly": 12.5, "total": 40.0, "limit": 10.0, "weekStart": 0,
                "reset": 1_800_000_000_000i64, "outOfCredit": true, "countedUntil": 0
            })),
            fence: None,
        })
        .await
        .unwrap();
    let more = workload("train", "a").replace("count: 1", "count: 3");
    let body = expect_rejected(c, &more, StatusCode::FORBIDDEN, 0, None).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("out of credits in zone default") && message.contains("2027-01-15"),
        "{message}"
    );
    let (_, object) = c.get(&c.admin, &format!("{WORKLOADS}/train")).await;
    assert_eq!(object["spec"]["replica"]["count"], 1, "nothing was stored");
    // Scaling down, or changing nothing that starts more, still applies.
    let fewer = workload("train", "b").replace("count: 1", "count: 0");
    assert_eq!(c.apply(&c.admin, &fewer).await.0, StatusCode::OK);
    // A resume would do nothing until the reset: it is refused, saying why.
    let (status, body) = c
        .call(
            Method::POST,
            &format!("{WORKLOADS}/train/resume"),
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["reason"], "OutOfCredit");

    // A user sees their own account, not the administrator's.
    let setup = "apiVersion: v1\nkind: User\nmetadata: {name: gina}\nspec:\n  resources: [{kind: All, zone: default, workspace: default, role: user}]\n";
    assert_eq!(c.apply(&c.admin, setup).await.0, StatusCode::OK);
    let gina = issue(c, "gina", Duration::from_secs(600)).token;
    let credits = "/v1/zones/default/usercredits";
    let (status, list) = c.get(&gina, credits).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"], json!([]), "gina sees no other account");
    let (status, _) = c.get(&gina, &format!("{credits}/admin")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, list) = c.get(&c.admin, credits).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

async fn stale_versions_conflict_and_specs_are_kept_as_versions(c: &Cluster) {
    let (_, body) = c.apply(&c.admin, &workload("train", "a")).await;
    assert_eq!(body["results"][0]["outcome"], "created");
    let (_, body) = c.apply(&c.admin, &workload("train", "a")).await;
    assert_eq!(body["results"][0]["outcome"], "unchanged");
    let (_, body) = c.apply(&c.admin, &workload("train", "b")).await;
    assert_eq!(
        (
            body["results"][0]["outcome"].as_str(),
            body["results"][0]["generation"].as_u64()
        ),
        (Some("configured"), Some(2))
    );
    let stale = workload("train", "c").replace("name: train", "name: train\n  version: 1");
    let body = expect_rejected(c, &stale, StatusCode::CONFLICT, 0, Some("metadata.version")).await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("stale"),
        "{body}"
    );
    let (_, object) = c.get(&c.admin, &format!("{WORKLOADS}/train")).await;
    assert_eq!(object["spec"]["image"]["image"], "b");
    let fresh = workload("train", "c").replace("name: train", "name: train\n  version: 2");
    assert_eq!(c.apply(&c.admin, &fresh).await.0, StatusCode::OK);
    let (status, versions) = c
        .get(&c.admin, &format!("{WORKLOADS}/train/versions"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let images: Vec<(&str, bool)> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["spec"]["image"]["image"].as_str().unwrap(),
                v["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(images, vec![("a", false), ("b", false), ("c", true)]);
}

async fn lists_page_and_put_get_delete_work_by_path(c: &Cluster) {
    let manifest: Vec<String> = (0..23)
        .map(|i| workload(&format!("w{i:02}"), "busybox"))
        .collect();
    assert_eq!(
        c.apply(&c.admin, &manifest.join("---\n")).await.0,
        StatusCode::OK
    );
    let mut names = Vec::new();
    let mut path = format!("{WORKLOADS}?limit=10");
    loop {
        let (status, page) = c.get(&c.admin, &path).await;
        assert_eq!(status, StatusCode::OK);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(next) => path = format!("{WORKLOADS}?limit=10&continue={next}"),
            None => break,
        }
    }
    assert_eq!(names.len(), 23);
    assert_eq!(names.first().map(String::as_str), Some("w00"));
    assert_eq!(
        c.get(&c.admin, &format!("{WORKLOADS}?limit=0")).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, body) = c
        .call(
            Method::PUT,
            &format!("{WORKLOADS}/put-one"),
            Some(&c.admin),
            Some(workload("put-one", "x")),
        )
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::CREATED, Some("created"))
    );
    let (status, _) = c
        .call(
            Method::PUT,
            &format!("{WORKLOADS}/other-name"),
            Some(&c.admin),
            Some(workload("put-one", "x")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, object) = c.get(&c.admin, &format!("{WORKLOADS}/put-one")).await;
    assert_eq!(
        (status, object["metadata"]["owner"].as_str()),
        (StatusCode::OK, Some("admin"))
    );
    assert_eq!(
        c.call(
            Method::DELETE,
            &format!("{WORKLOADS}/put-one?version=9"),
            Some(&c.admin),
            None
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        c.call(
            Method::DELETE,
            &format!("{WORKLOADS}/put-one"),
            Some(&c.admin),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, body) = c.get(&c.admin, &format!("{WORKLOADS}/put-one")).await;
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );
    assert_eq!(
        c.get(&c.admin, "/v1/zones/atlantis/workspaces/default/workloads")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = c.get(&c.admin, "/v1/pods").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"]["message"].is_string());
    assert_eq!(
        c.call(Method::POST, WORKLOADS, Some(&c.admin), None)
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (status, events) = c
        .get(
            &c.admin,
            "/v1/events?zone=default&kind=Workload&name=put-one",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    // No scheduler runs beside this API server: the apply says so.
    assert_eq!(reasons, vec!["Created", "NoScheduler", "Deleted"]);
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin),
    buffer: &mut Vec<u8>,
) -> Value {
    loop {
        if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            return serde_json::from_slice(&line).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no watch event in time; so far {:?}",
                    String::from_utf8_lossy(buffer)
                )
            })
            .unwrap()
            .unwrap();
        buffer.extend_from_slice(&chunk);
    }
}

async fn watch_streams_changes_and_resumes(c: &Cluster) {
    c.apply(&c.admin, &workload("existing", "a")).await;
    let watch = |query: String| {
        let request = c
            .http
            .get(format!("{}{WORKLOADS}?watch=true{query}", c.url))
            .bearer_auth(&c.admin);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "application/x-ndjson");
            Box::pin(response.bytes_stream())
        }
    };
    let mut stream = watch(String::new()).await;
    let mut buffer = Vec::new();
    let first = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("existing"))
    );
    c.apply(&c.admin, &workload("new", "a")).await;
    let added = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (
            added["type"].as_str(),
            added["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("new"))
    );
    c.apply(&c.admin, &workload("new", "b")).await;
    let modified = next_event(&mut stream, &mut buffer).await;
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["spec"]["image"]["image"], "b");
    // Resuming from the ADDED event's position replays what came after it, and nothing before.
    let from = added["resourceVersion"].as_str().unwrap();
    let mut resumed = watch(format!("&resourceVersion={from}")).await;
    let mut resumed_buffer = Vec::new();
    // Resumed after the last change of "new": it has nothing of it to replay.
    let after = modified["resourceVersion"].as_str().unwrap();
    let mut late = watch(format!("&resourceVersion={after}")).await;
    let mut late_buffer = Vec::new();
    let replayed = next_event(&mut resumed, &mut resumed_buffer).await;
    assert_eq!(
        (
            replayed["type"].as_str(),
            replayed["object"]["metadata"]["name"].as_str()
        ),
        (Some("MODIFIED"), Some("new"))
    );
    c.call(
        Method::DELETE,
        &format!("{WORKLOADS}/new"),
        Some(&c.admin),
        None,
    )
    .await;
    for (stream, buffer) in [
        (&mut stream, &mut buffer),
        (&mut resumed, &mut resumed_buffer),
        (&mut late, &mut late_buffer),
    ] {
        let deleted = next_event(stream, buffer).await;
        assert_eq!(
            (
                deleted["type"].as_str(),
                deleted["object"]["metadata"]["name"].as_str()
            ),
            (Some("DELETED"), Some("new"))
        );
        // As in Kubernetes, the object as it was last, not only its name.
        assert_eq!(
            deleted["object"]["spec"]["image"]["image"], "b",
            "{deleted}"
        );
    }
    assert_eq!(
        c.get(
            &c.admin,
            &format!("{WORKLOADS}?watch=true&resourceVersion=bogus")
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
}

/// A change that becomes visible behind a watch's position later than the CQL store's skew
/// allowance (replicated late from another datacenter, or written by a client whose clock runs
/// behind) is sent once, with a version no older than what was sent before it: a watch resumed
/// from it is sent nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_change_is_watched_once() {
    let c = start(Backend::Cql).await;
    let watch = |query: String| {
        let request = c
            .http
            .get(format!("{}{WORKLOADS}?watch=true{query}", c.url))
            .bearer_auth(&c.admin);
        async move { Box::pin(request.send().await.unwrap().bytes_stream()) }
    };
    c.apply(&c.admin, &workload("w", "a")).await;
    let mut stream = watch(String::new()).await;
    let mut buffer = Vec::new();
    assert_eq!(next_event(&mut stream, &mut buffer).await["type"], "ADDED");
    // The late change must lie after where the watch started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.apply(&c.admin, &workload("w", "b")).await;
    let modified = next_event(&mut stream, &mut buffer).await;
    assert_eq!(modified["object"]["spec"]["image"]["image"], "b");
    let sent = modified["resourceVersion"].as_str().unwrap();
    let (secs, nanos) = uuid::Uuid::parse_str(sent)
        .unwrap()
        .get_timestamp()
        .unwrap()
        .to_unix();
    let millis = secs * 1000 + u64::from(nanos) / 1_000_000;
    let key = ObjectKey::new(Kind::Workload, "default", "default", "w");
    let cql = c.cql.clone().unwrap();
    let late = cql
        .append_change_at(
            &key,
            dora_store::ChangeOp::Put,
            dora_store::Columns::Observed,
            1,
            millis - 1000,
        )
        .await
        .unwrap();
    let shown = next_event(&mut stream, &mut buffer).await;
    assert_eq!(shown["type"], "MODIFIED", "{shown}");
    let version = shown["resourceVersion"].as_str().unwrap();
    assert_ne!(version, late.0, "its own id lies behind what was sent");
    let mut resumed = watch(format!("&resourceVersion={version}")).await;
    let mut resumed_buffer = Vec::new();
    // Looked back at again, it is not sent twice; nor does the resumed watch send "b" again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.apply(&c.admin, &workload("w", "c")).await;
    let next = next_event(&mut stream, &mut buffer).await;
    assert_eq!(next["object"]["spec"]["image"]["image"], "c", "{next}");
    let first = next_event(&mut resumed, &mut resumed_buffer).await;
    assert_eq!(first["resourceVersion"], next["resourceVersion"], "{first}");
    cql.drop_keyspace().await.unwrap();
}

/// Mints a token for `user` as if by the server, and returns it with its expiry.
fn issue(c: &Cluster, user: &str, lifetime: Duration) -> dora_apiserver::IssuedToken {
    c.tokens
        .issue(user, lifetime, TokenClaims::default())
        .unwrap()
}

async fn a_workspace_scoped_admin_stays_in_the_workspace(c: &Cluster) {
    let setup = "apiVersion: v1\nkind: Workspace\nmetadata: {name: team-a}\n---\napiVersion: v1\nkind: User\nmetadata: {name: carol}\nspec:\n  default: {zone: default, workspace: team-a}\n  resources: [{kind: All, zone: default, workspace: team-a, role: admin}]\n---\napiVersion: v1\nkind: User\nmetadata: {name: dave}\nspec:\n  default: {zone: default, workspace: team-a}\n  resources: [{kind: All, zone: default, workspace: team-a, role: user}]\n";
    let (status, body) = c.apply(&c.admin, setup).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let carol = c.token_for("carol");
    // Cluster kinds are out of reach: no cluster-wide binding for herself, no roles, no users.
    let promote = "apiVersion: v1\nkind: User\nmetadata: {name: carol}\nspec:\n  resources: [{kind: All, zone: All, workspace: All, role: admin}]\n";
    let (status, body) = c.apply(&carol, promote).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = c
        .call(
            Method::PUT,
            "/v1/users/carol",
            Some(&carol),
            Some(promote.to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let role =
        "apiVersion: v1\nkind: Role\nmetadata: {name: mine}\nspec: {permission: {All: [Apply]}}\n";
    assert_eq!(c.apply(&carol, role).await.0, StatusCode::FORBIDDEN);
    for path in [
        "/v1/users/dave",
        "/v1/users/admin",
        "/v1/workspaces/default",
    ] {
        let (status, body) = c.call(Method::DELETE, path, Some(&carol), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    let zone = "apiVersion: v1\nkind: Zone\nmetadata: {name: mine}\n";
    assert_eq!(c.apply(&carol, zone).await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.get(&carol, "/v1/users").await.0, StatusCode::FORBIDDEN);
    let (status, _) = c
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&carol),
            Some(json!({"user": "dave"}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Zoned kinds: readable in her zone, not writable.
    let price = "apiVersion: v1\nkind: Resourcecredit\nmetadata: {name: h200}\nspec:\n  product_name: NVIDIA H200\n  credit: {per: {hour: 10}}\n";
    assert_eq!(c.apply(&carol, price).await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.apply(&c.admin, price).await.0, StatusCode::OK);
    // Her workspace is hers; reads of zones, workspaces and zoned kinds still work, for the
    // bootstrap `user` role too.
    let (status, body) = c.apply(&carol, &workload("hers", "busybox")).await;
    assert_eq!(
        (status, body["results"][0]["workspace"].as_str()),
        (StatusCode::OK, Some("team-a")),
        "{body}"
    );
    let dave = c.token_for("dave");
    for token in [&carol, &dave] {
        for path in [
            "/v1/zones",
            "/v1/zones/default",
            "/v1/workspaces",
            "/v1/workspaces/team-a",
            "/v1/zones/default/nodes",
            "/v1/zones/default/gpus",
            "/v1/zones/default/resourcecredits",
            "/v1/zones/default/resourcecredits/h200",
            "/v1/zones/default/workspaces/team-a/workloads",
        ] {
            let (status, body) = c.get(token, path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        assert_eq!(
            c.get(token, "/v1/zones/default/workspaces/default/workloads")
                .await
                .0,
            StatusCode::FORBIDDEN
        );
    }
    let (_, zones) = c.get(&dave, "/v1/zones").await;
    assert_eq!(zones["items"][0]["metadata"]["name"], "default");
    // An administrator everywhere still may do all of it.
    assert_eq!(c.apply(&c.admin, role).await.0, StatusCode::OK);
    assert_eq!(
        c.call(Method::DELETE, "/v1/users/dave", Some(&c.admin), None)
            .await
            .0,
        StatusCode::OK
    );
}

async fn paths_that_do_not_decode_get_json_errors(c: &Cluster) {
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let (status, body) = c
            .call(method.clone(), "/v1/users/%FF", Some(&c.admin), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {body}");
        assert_eq!(body["error"]["reason"], "BadRequest", "{method}: {body}");
        assert_eq!(body["status"], 400, "{method}: {body}");
    }
}

async fn self_minted_tokens_do_not_outlive_the_minting_token(c: &Cluster) {
    let setup = "apiVersion: v1\nkind: User\nmetadata: {name: erin}\nspec:\n  resources: [{kind: All, zone: default, workspace: default, role: user}]\n";
    assert_eq!(c.apply(&c.admin, setup).await.0, StatusCode::OK);
    let own = issue(c, "erin", Duration::from_secs(600));
    for request in [json!({}), json!({"expiresIn": "30d"})] {
        let (status, minted) = c
            .call(
                Method::POST,
                "/v1/tokens",
                Some(&own.token),
                Some(request.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{minted}");
        let expires = minted["expires"].as_u64().unwrap();
        assert!(
            expires <= own.expires && expires + 60 > own.expires,
            "{expires} vs {}",
            own.expires
        );
        let (status, _) = c.get(minted["token"].as_str().unwrap(), "/v1/whoami").await;
        assert_eq!(status, StatusCode::OK);
    }
    // A shorter token is not lengthened; an administrator everywhere is not capped.
    let (_, minted) = c
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&own.token),
            Some(json!({"expiresIn": "60s"}).to_string()),
        )
        .await;
    assert!(minted["expires"].as_u64().unwrap() < own.expires - 500);
    let admin = issue(c, "admin", Duration::from_secs(600));
    let (_, minted) = c
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&admin.token),
            Some(json!({"expiresIn": "30d"}).to_string()),
        )
        .await;
    assert!(minted["expires"].as_u64().unwrap() > admin.expires + 86_400);
}

/// A user made through another API server (here written straight into the store) is known to
/// this one at once: their token works before its directory has followed the change.
async fn a_user_made_through_another_server_is_known_at_once(c: &Cluster) {
    let user = "apiVersion: v1\nkind: User\nmetadata: {name: holly}\nspec:\n  resources: [{kind: All, zone: default, workspace: default, role: user}]\n";
    assert_eq!(c.apply(&c.admin, user).await.0, StatusCode::OK);
    let holly = c
        .store
        .get(&ObjectKey::new(Kind::User, "", "", "holly"))
        .await
        .unwrap()
        .unwrap();
    let key = ObjectKey::new(Kind::User, "", "", "ivy");
    c.store
        .put_spec(SpecWrite {
            key,
            precondition: Precondition::Absent,
            owner: "admin".into(),
            labels: Default::default(),
            meta: Default::default(),
            spec_hash: holly.spec_hash.clone(),
            spec: (*holly.resource).clone(),
            desired: Value::Null,
            computed: None,
            fence: None,
        })
        .await
        .unwrap();
    let (status, who) = c.get(&c.token_for("ivy"), "/v1/whoami").await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!(who["user"], "ivy", "{who}");
}

async fn tokens_of_an_earlier_user_of_the_same_name_are_refused(c: &Cluster) {
    let user = "apiVersion: v1\nkind: User\nmetadata: {name: frank}\nspec:\n  resources: [{kind: All, zone: default, workspace: default, role: user}]\n";
    assert_eq!(c.apply(&c.admin, user).await.0, StatusCode::OK);
    // A token issued an hour ago, to the frank of then, still unexpired.
    let old = {
        use jwt_simple::prelude::{A256KWKey, Claims, Clock, Duration};
        let mut claims =
            Claims::with_custom_claims(TokenClaims::default(), Duration::from_secs(7200))
                .with_issuer("dora")
                .with_subject("frank")
                .with_jwt_id("before");
        let past = Clock::now_since_epoch() - Duration::from_secs(3600);
        claims.issued_at = Some(past);
        claims.expires_at = Some(past + Duration::from_secs(7200));
        A256KWKey::from_bytes(&c.secret)
            .unwrap()
            .encrypt(claims)
            .unwrap()
    };
    let (status, body) = c.get(&old, "/v1/whoami").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("earlier user"),
        "{body}"
    );
    assert_eq!(
        c.get(&c.token_for("frank"), "/v1/whoami").await.0,
        StatusCode::OK
    );
}

async fn watches_end_when_the_token_expires(c: &Cluster) {
    let short = issue(c, "admin", Duration::from_secs(2));
    let response = c
        .http
        .get(format!("{}{WORKLOADS}?watch=true", c.url))
        .bearer_auth(&short.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = Box::pin(response.bytes_stream());
    let mut buffer = Vec::new();
    let last = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (last["type"].as_str(), last["status"].as_u64()),
        (Some("ERROR"), Some(401)),
        "{last}"
    );
    assert_eq!(last["error"]["reason"], "Unauthorized");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends after the ERROR line");
}

async fn watches_end_cleanly_after_timeout_seconds(c: &Cluster) {
    for path in [
        format!("{WORKLOADS}?watch=true&timeoutSeconds=1"),
        format!("{WORKLOADS}/none?watch=true&timeoutSeconds=1"),
    ] {
        let request = c.http.get(format!("{}{path}", c.url)).bearer_auth(&c.admin);
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        // Without the parameter the stream stays open (a bookmark comes after 30 s).
        let body = tokio::time::timeout(Duration::from_secs(20), response.text())
            .await
            .expect("the watch ends by itself")
            .unwrap();
        assert!(!body.contains("ERROR"), "{body}");
    }
}

fn labelled(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  replica: {{count: 1}}\n  image: {{image: a}}\n"
    )
}

fn item_names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect()
}

async fn label_selectors_filter_lists_and_watches(c: &Cluster) {
    for manifest in [
        labelled("w1", "team: a, tier: x"),
        labelled("w2", "team: b"),
        workload("w3", "a"),
    ] {
        assert!(c.apply(&c.admin, &manifest).await.0.is_success());
    }
    for (selector, expected) in [
        ("team%3Da", vec!["w1"]),
        ("team%3D%3Da", vec!["w1"]),
        ("team!%3Da", vec!["w2", "w3"]),
        ("team%20in%20(a,b)", vec!["w1", "w2"]),
        ("team%20notin%20(a)", vec!["w2", "w3"]),
        ("team", vec!["w1", "w2"]),
        ("!team", vec!["w3"]),
        ("team,tier%3Dx", vec!["w1"]),
    ] {
        let (status, list) = c
            .get(&c.admin, &format!("{WORKLOADS}?labelSelector={selector}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{selector}: {list}");
        assert_eq!(item_names(&list), expected, "{selector}");
    }
    let (status, error) = c
        .get(
            &c.admin,
            &format!("{WORKLOADS}?labelSelector=team%20in%20(a"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"team in (a\"") && message.contains("without its ')'"),
        "{message}"
    );

    // A watch sees only what matches; what stops matching is DELETED, what starts is ADDED.
    let response = c
        .http
        .get(format!(
            "{}{WORKLOADS}?watch=true&labelSelector=team%3Da",
            c.url
        ))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = Box::pin(response.bytes_stream());
    let mut buffer = Vec::new();
    let mut next = async || {
        let event = next_event(&mut stream, &mut buffer).await;
        (
            event["type"].as_str().unwrap().to_string(),
            event["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    assert_eq!(next().await, ("ADDED".into(), "w1".into()));
    c.apply(&c.admin, &labelled("w1", "team: c")).await;
    assert_eq!(next().await, ("DELETED".into(), "w1".into()));
    c.apply(&c.admin, &workload("w4", "a")).await;
    c.apply(&c.admin, &labelled("w2", "team: a")).await;
    assert_eq!(next().await, ("ADDED".into(), "w2".into()));
    c.apply(&c.admin, &labelled("w3", "team: b")).await;
    c.call(
        Method::DELETE,
        &format!("{WORKLOADS}/w2"),
        Some(&c.admin),
        None,
    )
    .await;
    assert_eq!(next().await, ("DELETED".into(), "w2".into()));
}

async fn open_watches_end_with_an_error_when_the_server_shuts_down(c: &Cluster) {
    let response = c
        .http
        .get(format!("{}{WORKLOADS}?watch=true", c.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    let mut stream = Box::pin(response.bytes_stream());
    let mut buffer = Vec::new();
    c.apply(&c.admin, &workload("before", "a")).await;
    assert_eq!(next_event(&mut stream, &mut buffer).await["type"], "ADDED");
    c.stop.cancel();
    let last = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (last["type"].as_str(), last["status"].as_u64()),
        (Some("ERROR"), Some(503)),
        "{last}"
    );
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("watch again"),
        "{last}"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(matches!(end, Ok(None)), "the stream ends after it: {end:?}");
}

async fn unknown_query_parameters_are_refused(c: &Cluster) {
    c.apply(&c.admin, &workload("known", "a")).await;
    let refused = async |method: Method, path: &str, parameter: &str, accepted: &str| {
        let (status, error) = c.call(method, path, Some(&c.admin), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("unknown query parameter `{parameter}`"))
                && message.contains(accepted),
            "{path}: {message}"
        );
    };
    refused(
        Method::GET,
        &format!("{WORKLOADS}?labelSelectr=team%3Da"),
        "labelSelectr",
        "`labelSelector`",
    )
    .await;
    refused(
        Method::GET,
        &format!("{WORKLOADS}/known?limit=1"),
        "limit",
        "`resourceVersion`",
    )
    .await;
    refused(
        Method::GET,
        &format!("{WORKLOADS}/known/versions?all=1"),
        "all",
        "takes no query parameters",
    )
    .await;
    refused(
        Method::DELETE,
        &format!("{WORKLOADS}/known?force=true"),
        "force",
        "`version`",
    )
    .await;
    refused(Method::POST, "/v1/apply?force=true", "force", "`dryRun`").await;
    refused(Method::GET, "/v1/events?kindd=Workload", "kindd", "`kind`").await;
    refused(
        Method::GET,
        "/v1/whoami?zone=x",
        "zone",
        "no query parameters",
    )
    .await;
    refused(
        Method::GET,
        "/healthz?verbose=1",
        "verbose",
        "no query parameters",
    )
    .await;
    let (status, _) = c.get(&c.admin, &format!("{WORKLOADS}/known")).await;
    assert_eq!(status, StatusCode::OK, "the refused DELETE deleted nothing");
}

/// Each scope has its own routes: the Zone and Workspace answer at the prefixes of the zoned
/// and workspaced kinds, every kind's collection answers at its own path, a kind asked for
/// in the wrong scope is told where it lives, and a missing object is worded one way on
/// every route.
async fn every_scope_routes_its_paths(c: &Cluster) {
    for (path, kind) in [
        ("/v1/zones/default", "Zone"),
        ("/v1/workspaces/default", "Workspace"),
        ("/v1/users/admin", "User"),
    ] {
        let (status, body) = c.get(&c.admin, path).await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (StatusCode::OK, Some(kind)),
            "{path}: {body}"
        );
        let (status, body) = c.get(&c.admin, &format!("{path}/versions")).await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (StatusCode::OK, Some("VersionList")),
            "{path}: {body}"
        );
    }
    for kind in Kind::ALL {
        let path =
            kind.collection_path("default", kind.scope().has_workspace().then_some("default"));
        let (status, body) = c.get(&c.admin, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    for (path, lives_at) in [
        (
            "/v1/workloads/x",
            "/v1/zones/{zone}/workspaces/{workspace}/workloads",
        ),
        ("/v1/zones/default/users", "/v1/users"),
        ("/v1/zones/default/workspaces", "/v1/workspaces"),
        (
            "/v1/zones/default/workspaces/default/nodes",
            "/v1/zones/{zone}/nodes",
        ),
        ("/v1/workspaces/default/users/admin", "/v1/users"),
    ] {
        let (status, body) = c.get(&c.admin, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.ends_with(&format!("live at {lives_at}")),
            "{path}: {message}"
        );
    }
    for (method, path, want) in [
        (
            Method::GET,
            "/v1/zones/default/workspaces/default/workloads/x/bogus",
            StatusCode::NOT_FOUND,
        ),
        (Method::GET, "/v1/zones/%FF/nodes", StatusCode::BAD_REQUEST),
        (
            Method::GET,
            "/v1/zones/default/workspaces/default/volumes/%FF/files/a",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/users/admin/report",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/v1/users/admin/logs",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::POST, "/v1/users/admin/pause", StatusCode::NOT_FOUND),
        (
            Method::DELETE,
            "/v1/zones/default/gpus/x",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let (status, body) = c.call(method.clone(), path, Some(&c.admin), None).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(
            body["error"]["message"].is_string(),
            "{method} {path}: {body}"
        );
    }
    let (status, body) = c.get(&c.admin, "/v1/zones/atlantis/nodes").await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Zone \"atlantis\" not found")),
    );
    let missing = "Workload \"gone\" not found in zone default, workspace default";
    let volume =
        "Volume \"gone\" not found in zone default, workspace default; apply a Volume first";
    let base = "/v1/zones/default/workspaces/default";
    for (method, path, message) in [
        (Method::GET, format!("{WORKLOADS}/gone"), missing),
        (Method::GET, format!("{WORKLOADS}/gone/versions"), missing),
        (Method::DELETE, format!("{WORKLOADS}/gone"), missing),
        (Method::POST, format!("{WORKLOADS}/gone/pause"), missing),
        (Method::GET, format!("{base}/volumes/gone/files"), volume),
        (Method::GET, format!("{base}/volumes/gone/files/"), volume),
        (
            Method::GET,
            format!("{base}/volumes/gone/files/a/b"),
            volume,
        ),
    ] {
        let (status, body) = c.call(method.clone(), &path, Some(&c.admin), None).await;
        assert_eq!(
            (status, body["error"]["message"].as_str()),
            (StatusCode::NOT_FOUND, Some(message)),
            "{method} {path}"
        );
    }
}

/// A kind defined at run time, workspaced: its objects live in `workspaced_resources`, a list
/// without a workspace reads every workspace page by page, and a watch resumes from a
/// `resourceVersion` as for built-in kinds.
async fn a_defined_workspaced_kind_pages_and_watches_across_workspaces(c: &Cluster) {
    let definition = "apiVersion: v1\nkind: Definition\nmetadata: {name: pagethings}\nspec:\n  names: {kind: Pagething, plural: pagethings}\n  scope: workspaced\n  schema: {type: object, properties: {size: {type: integer}}}\n";
    let mut manifest = definition.to_string();
    for workspace in ["a", "b", "c"] {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Workspace\nmetadata: {{name: {workspace}}}\n"
        ));
        for name in ["p1", "p2"] {
            manifest.push_str(&format!("---\napiVersion: v1\nkind: Pagething\nmetadata: {{name: {name}, workspace: {workspace}}}\nspec: {{size: 1}}\n"));
        }
    }
    let (status, body) = c.apply(&c.admin, &manifest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let query = next.map_or(String::new(), |token| format!("&continue={token}"));
        let (status, page) = c
            .get(&c.admin, &format!("/v1/pagethings?limit=4{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            let meta = &item["metadata"];
            seen.push(format!(
                "{}/{}",
                meta["workspace"].as_str().unwrap(),
                meta["name"].as_str().unwrap()
            ));
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) => next = Some(token.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["a/p1", "a/p2", "b/p1", "b/p2", "c/p1", "c/p2"]);
    let (status, _) = c.get(&c.admin, "/v1/workspaces/b/pagethings/p1").await;
    assert_eq!(status, StatusCode::OK);
    let (_, doc) = c.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(
        doc["components"]["schemas"]["PagethingSpec"]["properties"]["size"]["type"],
        "integer"
    );
    assert!(doc["paths"]["/v1/workspaces/{workspace}/pagethings/{name}"]["put"].is_object());

    let watch = |query: &str| {
        let request = c
            .http
            .get(format!("{}/v1/pagethings?watch=true{query}", c.url))
            .bearer_auth(&c.admin);
        async move {
            let response = request.send().await.unwrap();
            if response.status() != StatusCode::OK {
                panic!("{}", response.text().await.unwrap());
            }
            Box::pin(response.bytes_stream())
        }
    };
    let mut stream = watch("").await;
    let mut buffer = Vec::new();
    for _ in 0..6 {
        assert_eq!(next_event(&mut stream, &mut buffer).await["type"], "ADDED");
    }
    let change = |size: u32| {
        format!(
            "apiVersion: v1\nkind: Pagething\nmetadata: {{name: p2, workspace: c}}\nspec: {{size: {size}}}\n"
        )
    };
    c.apply(&c.admin, &change(2)).await;
    let first = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["spec"]["size"].as_u64()
        ),
        (Some("MODIFIED"), Some(2))
    );
    c.apply(&c.admin, &change(3)).await;
    let from = first["resourceVersion"].as_str().unwrap();
    let mut resumed = watch(&format!("&resourceVersion={from}")).await;
    let mut resumed_buffer = Vec::new();
    let replayed = next_event(&mut resumed, &mut resumed_buffer).await;
    assert_eq!(
        replayed["object"]["spec"]["size"], 3,
        "only what came after {from}"
    );
}

/// A Workload manifest with extra `metadata` lines (indented by two spaces).
fn workload_with(name: &str, metadata: &str) -> String {
    workload(name, "busybox").replace(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n{metadata}"),
    )
}

/// The uid of the object at `path`.
async fn uid_of(c: &Cluster, path: &str) -> String {
    let (status, object) = c.get(&c.admin, path).await;
    assert_eq!(status, StatusCode::OK, "{object}");
    object["metadata"]["uid"].as_str().unwrap().to_string()
}

/// Annotations, owner references and finalizers are stored with the object, come back from
/// get and watch, stay when an apply leaves them out, and bad ones are refused by field.
async fn metadata_round_trips_and_is_kept_when_left_out(c: &Cluster) {
    let zone = uid_of(c, "/v1/zones/default").await;
    let manifest = workload_with(
        "noted",
        &format!(
            "  annotations: {{example.com/note: \"hello: world\"}}\n  ownerReferences:\n  - {{kind: Zone, name: default, uid: {zone}, controller: true}}\n  finalizers: [example.com/keep]\n"
        ),
    );
    let mut watch = Box::pin(
        c.http
            .get(format!("{}{WORKLOADS}?watch=true", c.url))
            .bearer_auth(&c.admin)
            .send()
            .await
            .unwrap()
            .bytes_stream(),
    );
    let (status, body) = c.apply(&c.admin, &manifest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, object) = c.get(&c.admin, &format!("{WORKLOADS}/noted")).await;
    let meta = &object["metadata"];
    assert_eq!(
        meta["annotations"],
        json!({"example.com/note": "hello: world"})
    );
    assert_eq!(
        meta["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Zone", "name": "default", "uid": zone, "controller": true}])
    );
    assert_eq!(meta["finalizers"], json!(["example.com/keep"]));
    assert!(meta["deletionTimestamp"].is_null(), "{meta}");
    let mut buffer = Vec::new();
    let event = next_event(&mut watch, &mut buffer).await;
    assert_eq!(
        event["object"]["metadata"]["annotations"],
        meta["annotations"]
    );
    assert_eq!(
        event["object"]["metadata"]["finalizers"],
        meta["finalizers"]
    );

    let (_, body) = c.apply(&c.admin, &workload("noted", "busybox")).await;
    assert_eq!(body["results"][0]["outcome"], "unchanged", "{body}");
    let (_, body) = c
        .apply(&c.admin, &workload_with("noted", "  annotations: {}\n"))
        .await;
    assert_eq!(body["results"][0]["outcome"], "configured", "{body}");
    let (_, object) = c.get(&c.admin, &format!("{WORKLOADS}/noted")).await;
    assert!(object["metadata"]["annotations"].is_null(), "{object}");
    assert_eq!(
        object["metadata"]["finalizers"],
        json!(["example.com/keep"])
    );
    assert_eq!(
        object["metadata"]["generation"], 1,
        "metadata is not the spec"
    );

    expect_rejected(
        c,
        &workload_with("bad", "  ownerReferences: [{kind: Zone, name: default}]\n"),
        StatusCode::UNPROCESSABLE_ENTITY,
        0,
        Some("metadata.ownerReferences[0].uid"),
    )
    .await;
    expect_rejected(
        c,
        &workload_with("bad", "  finalizers: [Not Valid]\n"),
        StatusCode::UNPROCESSABLE_ENTITY,
        0,
        Some("metadata.finalizers[0]"),
    )
    .await;
    assert_eq!(
        c.get(&c.admin, &format!("{WORKLOADS}/bad")).await.0,
        StatusCode::NOT_FOUND
    );
}

/// A delete of an object with finalizers only marks it (202, `deletionTimestamp`, phase
/// Terminating); no finalizer can be added then; removing the last one completes the delete.
async fn finalizers_delay_a_delete_until_they_are_removed(c: &Cluster) {
    let guarded =
        |finalizers: &str| workload_with("guarded", &format!("  finalizers: [{finalizers}]\n"));
    let (status, body) = c
        .apply(&c.admin, &guarded("example.com/a, example.com/b"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = format!("{WORKLOADS}/guarded");
    let (status, object) = c.call(Method::DELETE, &path, Some(&c.admin), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{object}");
    let since = object["metadata"]["deletionTimestamp"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, object) = c.get(&c.admin, &path).await;
    assert_eq!(status, StatusCode::OK, "still there");
    assert_eq!(
        object["metadata"]["deletionTimestamp"].as_str(),
        Some(since.as_str())
    );
    assert_eq!(object["status"]["phase"], "Terminating");
    assert!(
        object["status"]["message"]
            .as_str()
            .unwrap()
            .contains("example.com/a, example.com/b"),
        "{object}"
    );
    let (status, again) = c.call(Method::DELETE, &path, Some(&c.admin), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["metadata"]["version"], object["metadata"]["version"]);

    expect_rejected(
        c,
        &guarded("example.com/a, example.com/b, example.com/new"),
        StatusCode::UNPROCESSABLE_ENTITY,
        0,
        Some("metadata.finalizers"),
    )
    .await;
    let (_, body) = c.apply(&c.admin, &guarded("example.com/b")).await;
    assert_eq!(body["results"][0]["outcome"], "configured", "{body}");
    let (_, object) = c.get(&c.admin, &path).await;
    assert_eq!(
        object["metadata"]["deletionTimestamp"].as_str(),
        Some(since.as_str())
    );
    let (_, body) = c.apply(&c.admin, &guarded("")).await;
    assert_eq!(body["results"][0]["outcome"], "deleted", "{body}");
    assert_eq!(c.get(&c.admin, &path).await.0, StatusCode::NOT_FOUND);
    let (_, events) = c
        .get(
            &c.admin,
            "/v1/events?zone=default&kind=Workload&name=guarded",
        )
        .await;
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .filter(|reason| *reason != "NoScheduler")
        .collect();
    assert_eq!(
        reasons,
        ["Created", "DeletionPending", "Configured", "Deleted"]
    );
}

/// With the garbage collector running, deleting an owner deletes its dependents (of a built-in
/// and of a defined kind), not the objects of another owner or of an owner of the same name
/// made again; a dependent with a finalizer is only marked.
async fn dependents_go_with_their_owner(c: &Cluster) {
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let mut config = dora_controller::gc::GcConfig::new("default");
    config.rescan = Duration::from_millis(100);
    tokio::spawn(dora_runtime::run_leader(c.store.clone(), config, stop));
    let definition = "apiVersion: v1\nkind: Definition\nmetadata: {name: gcparents}\nspec:\n  names: {kind: Gcparent, plural: gcparents}\n  scope: zonedWorkspaced\n  schema: {type: object}\n";
    let (status, body) = c
        .apply(
            &c.admin,
            &format!("{definition}---\napiVersion: v1\nkind: Gcparent\nmetadata: {{name: sweep}}\nspec: {{}}\n"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.apply(&c.admin, &workload("keeper", "busybox")).await;
    let sweep = uid_of(c, "/v1/zones/default/workspaces/default/gcparents/sweep").await;
    let keeper = uid_of(c, &format!("{WORKLOADS}/keeper")).await;
    let owned_by = |name: &str, kind: &str, owner: &str, uid: &str, extra: &str| {
        workload_with(
            name,
            &format!("  ownerReferences: [{{kind: {kind}, name: {owner}, uid: {uid}}}]\n{extra}"),
        )
    };
    let manifest = [
        owned_by("point-1", "Gcparent", "sweep", &sweep, ""),
        owned_by("point-2", "Gcparent", "sweep", &sweep, "  finalizers: [example.com/report]\n"),
        owned_by("kept", "Workload", "keeper", &keeper, ""),
        format!(
            "apiVersion: v1\nkind: Gcparent\nmetadata:\n  name: nested\n  ownerReferences: [{{kind: Gcparent, name: sweep, uid: {sweep}}}]\nspec: {{}}\n"
        ),
    ]
    .join("---\n");
    let (status, body) = c.apply(&c.admin, &manifest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        c.call(
            Method::DELETE,
            "/v1/zones/default/workspaces/default/gcparents/sweep",
            Some(&c.admin),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let gone = |path: String| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, object) = c.get(&c.admin, &path).await;
            if status == StatusCode::NOT_FOUND {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} is still there: {object}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    gone(format!("{WORKLOADS}/point-1")).await;
    gone("/v1/zones/default/workspaces/default/gcparents/nested".to_string()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, object) = c.get(&c.admin, &format!("{WORKLOADS}/point-2")).await;
        if object["status"]["phase"] == "Terminating" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{object}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = c.get(&c.admin, &format!("{WORKLOADS}/kept")).await;
    assert_eq!(status, StatusCode::OK, "another owner's dependent stays");

    // Owners are matched by uid: an object of the owner's name that is not it owns nothing.
    let (status, body) = c
        .apply(
            &c.admin,
            &owned_by("stale", "Workload", "keeper", "0123-not-keepers-uid", ""),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gone(format!("{WORKLOADS}/stale")).await;
    assert_eq!(
        c.get(&c.admin, &format!("{WORKLOADS}/kept")).await.0,
        StatusCode::OK
    );
}

/// A `resourceVersion` past the newest change is refused on list and watch, naming the
/// parameter, rather than answered as if nothing happened since.
async fn a_resource_version_ahead_of_the_feed_is_refused(c: &Cluster) {
    c.apply(&c.admin, &workload("existing", "a")).await;
    let (status, list) = c.get(&c.admin, WORKLOADS).await;
    assert_eq!(status, StatusCode::OK);
    let head = list["metadata"]["resourceVersion"].as_str().unwrap();
    let ahead = match head.parse::<u64>() {
        Ok(seq) => (seq + 1_000_000).to_string(),
        // A change id of the year 10889.
        Err(_) => "ffffffff-ffff-7fff-bfff-ffffffffffff".to_string(),
    };
    for query in [
        format!("?resourceVersion={ahead}"),
        format!("?watch=true&resourceVersion={ahead}"),
        format!("/existing?watch=true&resourceVersion={ahead}"),
    ] {
        let (status, body) = c.get(&c.admin, &format!("{WORKLOADS}{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], "resourceVersion", "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("resourceVersion {ahead} is ahead")),
            "{message}"
        );
    }
    let (status, body) = c
        .get(&c.admin, &format!("{WORKLOADS}?resourceVersion={head}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The last page of a list carries no `continue` token, also when it is full: across the
/// workspaces of a workspaced kind and in one partition.
async fn the_last_page_has_no_continue_token(c: &Cluster) {
    let definition = "apiVersion: v1\nkind: Definition\nmetadata: {name: lastpagethings}\nspec:\n  names: {kind: Lastpagething, plural: lastpagethings}\n  scope: workspaced\n  schema: {type: object}\n";
    let mut manifest = definition.to_string();
    for workspace in ["a", "b"] {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Workspace\nmetadata: {{name: {workspace}}}\n"
        ));
        for name in ["p1", "p2"] {
            manifest.push_str(&format!("---\napiVersion: v1\nkind: Lastpagething\nmetadata: {{name: {name}, workspace: {workspace}}}\nspec: {{}}\n"));
        }
    }
    let workloads: Vec<String> = (0..4)
        .map(|i| workload(&format!("w{i}"), "busybox"))
        .collect();
    manifest.push_str(&format!("---\n{}", workloads.join("---\n")));
    let (status, body) = c.apply(&c.admin, &manifest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (collection, limit) in [
        ("/v1/lastpagethings", 2),
        ("/v1/lastpagethings", 4),
        (WORKLOADS, 2),
        (WORKLOADS, 4),
    ] {
        let mut pages = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let query = next.map_or(String::new(), |token| format!("&continue={token}"));
            let (status, page) = c
                .get(&c.admin, &format!("{collection}?limit={limit}{query}"))
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            pages.push(page["items"].as_array().unwrap().len());
            match page["metadata"]["continue"].as_str() {
                Some(token) => next = Some(token.to_string()),
                None => break,
            }
        }
        assert_eq!(pages, vec![limit; 4 / limit], "{collection} by {limit}");
    }
}

/// A binding limited to a zone and a workspace reads a workspaced kind in its workspace
/// (whatever the zone, as it reads zoned kinds in its zone), and a refused write says which
/// binding it would take, zone included.
async fn a_zone_scoped_binding_reads_its_workspace_and_is_told_what_a_write_needs(c: &Cluster) {
    let setup = "apiVersion: v1\nkind: Definition\nmetadata: {name: scopethings}\nspec:\n  names: {kind: Scopething, plural: scopethings}\n  scope: workspaced\n  schema: {type: object}\n---\napiVersion: v1\nkind: Workspace\nmetadata: {name: other}\n---\napiVersion: v1\nkind: Scopething\nmetadata: {name: mine, workspace: default}\nspec: {}\n---\napiVersion: v1\nkind: Scopething\nmetadata: {name: theirs, workspace: other}\nspec: {}\n---\napiVersion: v1\nkind: User\nmetadata: {name: zed}\nspec:\n  default: {zone: default, workspace: default}\n  resources: [{kind: All, zone: default, workspace: default, role: admin}]\n";
    let (status, body) = c.apply(&c.admin, setup).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let zed = c.token_for("zed");
    let (status, body) = c.get(&zed, "/v1/workspaces/default/scopethings/mine").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = c.get(&zed, "/v1/scopethings").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"], "only the workspace of the binding");
    let (status, body) = c.get(&zed, "/v1/workspaces/other/scopethings/theirs").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = c
        .apply(
            &zed,
            "apiVersion: v1\nkind: Scopething\nmetadata: {name: new, workspace: default}\nspec: {}\n",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("user zed may not Apply Scopething in workspace default; that needs a role binding with kind: Scopething, zone: All, workspace: default"),
        "{message}"
    );
    let alice = "apiVersion: v1\nkind: User\nmetadata: {name: yara}\nspec:\n  resources: [{kind: Workload, zone: default, workspace: All, role: admin}]\n";
    assert_eq!(c.apply(&c.admin, alice).await.0, StatusCode::OK);
    let (status, body) = c.get(&c.token_for("yara"), "/v1/scopethings").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("user yara may not Get Scopething in any workspace; that needs a role binding with kind: Scopething, zone: any, workspace: any"),
        "{message}"
    );
}

/// A workload may mount a volume of another workspace only for a user granted `Use` on the
/// Volumes there: applying workloads in one's own workspace gives no access to other data.
async fn mounting_another_workspaces_volume_takes_use(c: &Cluster) {
    let setup = "apiVersion: v1\nkind: Workspace\nmetadata: {name: vault}\n---\napiVersion: v1\nkind: User\nmetadata: {name: uma}\nspec:\n  default: {zone: default, workspace: default}\n  resources: [{zone: default, workspace: default, role: user}]\n";
    let (status, body) = c.apply(&c.admin, setup).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let uma = c.token_for("uma");
    let workload = |volumes: &str| {
        format!(
            "apiVersion: v1\nkind: Workload\nmetadata: {{name: reader}}\nspec:\n  replica: {{count: 1}}\n  driver: Process\n  config: {{cmd: [cat, /data/secret]}}\n  volumes: [{volumes}]\n"
        )
    };
    let (status, body) = c.apply(&uma, &workload("{name: data}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a volume of one's own workspace: {body}"
    );
    let (status, body) = c
        .apply(&uma, &workload("{name: data, workspace: vault}"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let error = apply_error(&body);
    assert_eq!(error["field"], "spec.volumes[0].workspace", "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("may not Use Volume") && message.contains("workspace: vault"),
        "{message}"
    );
    let grant = "apiVersion: v1\nkind: Role\nmetadata: {name: vault-reader}\nspec:\n  permission: {Volume: [Use]}\n---\napiVersion: v1\nkind: User\nmetadata: {name: uma}\nspec:\n  default: {zone: default, workspace: default}\n  resources:\n    - {zone: default, workspace: default, role: user}\n    - {kind: Volume, zone: default, workspace: vault, role: vault-reader}\n";
    assert_eq!(c.apply(&c.admin, grant).await.0, StatusCode::OK);
    let (status, body) = c
        .apply(&uma, &workload("{name: data, workspace: vault}"))
        .await;
    assert_eq!(status, StatusCode::OK, "granted Use: {body}");
}

/// The error of an apply's first document, or of the request.
fn apply_error(body: &Value) -> &Value {
    let error = &body["results"][0]["error"];
    if error.is_null() {
        &body["error"]
    } else {
        error
    }
}

/// The host's network and a Volume at a host path take the `Host` verb, which the `user` role
/// lacks and the `admin` role has.
async fn host_options_take_the_host_verb(c: &Cluster) {
    let setup = "apiVersion: v1\nkind: User\nmetadata: {name: hal}\nspec:\n  default: {zone: default, workspace: default}\n  resources: [{zone: default, workspace: default, role: user}]\n";
    assert_eq!(c.apply(&c.admin, setup).await.0, StatusCode::OK);
    let hal = c.token_for("hal");
    let host_network = "apiVersion: v1\nkind: Workload\nmetadata: {name: sniffer}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config: {cmd: [sleep, '1']}\n  network: {mode: host}\n";
    let host_path = "apiVersion: v1\nkind: Volume\nmetadata: {name: etc}\nspec: {storage: local, localPath: /etc}\n";
    for (manifest, field, what) in [
        (host_network, "spec.network.mode", "the host's network"),
        (host_path, "spec.localPath", "host path \"/etc\""),
    ] {
        let (status, body) = c.apply(&hal, manifest).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let error = apply_error(&body);
        assert_eq!(error["field"], field, "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with(what) && message.contains("may not Host"),
            "{message}"
        );
        let (status, body) = c.apply(&c.admin, manifest).await;
        assert_eq!(status, StatusCode::OK, "the admin role grants Host: {body}");
    }
    let bridge = host_network.replace("mode: host", "mode: bridge");
    let (status, body) = c.apply(&hal, &bridge).await;
    assert_eq!(status, StatusCode::OK, "no host option: {body}");
    let relative = host_path.replace("localPath: /etc", "localPath: shared/etc");
    let (status, body) = c
        .apply(&hal, &relative.replace("name: etc", "name: shared"))
        .await;
    assert_eq!(status, StatusCode::OK, "a path on the storage: {body}");
}

/// Tokens minted through the API are listed to their user and to administrators, with their
/// last use; revoking one is refused to others and takes effect on every API server at once
/// (the second one learns it from the change feed); deleting a Node revokes its credentials,
/// and join tokens can be revoked too.
async fn tokens_are_listed_and_revoked_on_every_server(c: &Cluster) {
    let users = "apiVersion: v1\nkind: User\nmetadata: {name: rita}\nspec:\n  default: {zone: default, workspace: default}\n  resources: [{zone: default, workspace: default, role: user}]\n---\napiVersion: v1\nkind: User\nmetadata: {name: rob}\nspec:\n  default: {zone: default, workspace: default}\n  resources: [{zone: default, workspace: default, role: user}]\n";
    assert_eq!(c.apply(&c.admin, users).await.0, StatusCode::OK);
    let (rita, id) = c.create_token(&c.admin, json!({"user": "rita"})).await;
    let (rob, _) = c.create_token(&c.admin, json!({"user": "rob"})).await;
    let second = c.second_server().await;
    let whoami = |url: String, token: String| {
        let http = c.http.clone();
        async move {
            http.get(format!("{url}/v1/whoami"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(whoami(c.url.clone(), rita.clone()).await, StatusCode::OK);
    assert_eq!(whoami(second.clone(), rita.clone()).await, StatusCode::OK);

    // Listed to her, with the last use written within the flush interval; not to rob.
    let listed = |token: String| async move {
        let (status, body) = c.get(&token, "/v1/tokens").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    };
    let mut used = Value::Null;
    for _ in 0..50 {
        let mine = listed(rita.clone()).await;
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0]["metadata"]["name"], id.as_str());
        assert_eq!(mine[0]["spec"]["user"], "rita");
        assert_eq!(mine[0]["spec"]["purpose"], "User");
        used = mine[0]["status"]["computed"]["lastUsed"].clone();
        if used.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(used.is_string(), "the last use is recorded");
    assert!(
        listed(rob.clone())
            .await
            .iter()
            .all(|t| t["spec"]["user"] == "rob")
    );
    let everyone = listed(c.admin.clone()).await;
    assert!(
        everyone
            .iter()
            .any(|t| t["metadata"]["name"] == id.as_str())
    );

    // Rob may not revoke it, nor learn it exists.
    let path = format!("/v1/tokens/{id}");
    let (status, _) = c.call(Method::DELETE, &path, Some(&rob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(whoami(c.url.clone(), rita.clone()).await, StatusCode::OK);

    // Rita revokes her own; both servers refuse it from then on.
    let (status, body) = c.call(Method::DELETE, &path, Some(&rita), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spec"]["revokedBy"], "rita", "{body}");
    let (status, body) = c.get(&rita, "/v1/whoami").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    let began = std::time::Instant::now();
    while whoami(second.clone(), rita.clone()).await == StatusCode::OK {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the second server never refused it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "the second server refused the revoked token after {:?}",
        began.elapsed()
    );
    assert_eq!(
        whoami(c.url.clone(), rob.clone()).await,
        StatusCode::OK,
        "others' tokens still work"
    );

    // Deleting a Node revokes its credentials; a join token is revoked by id.
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: gone, zone: default}\nspec: {}\n";
    let (status, body) = c.apply(&c.admin, node).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (credential, _) = c
        .create_token(&c.admin, json!({"node": "gone", "zone": "default"}))
        .await;
    let (join, join_id) = c
        .create_token(&c.admin, json!({"join": true, "zone": "default"}))
        .await;
    assert_eq!(
        whoami(c.url.clone(), credential.clone()).await,
        StatusCode::OK
    );
    assert_eq!(whoami(c.url.clone(), join.clone()).await, StatusCode::OK);
    let (status, body) = c
        .call(
            Method::DELETE,
            "/v1/zones/default/nodes/gone",
            Some(&c.admin),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(
        whoami(c.url.clone(), credential).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = c
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{join_id}"),
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami(c.url.clone(), join).await, StatusCode::UNAUTHORIZED);
}

/// Input past the limits is refused naming the limit and quoting at most a prefix of it, and
/// nothing of it is stored.
async fn oversized_input_is_refused_naming_the_limit(c: &Cluster) {
    let workspace = |name: &str, metadata: &str| {
        format!("apiVersion: v1\nkind: Workspace\nmetadata:\n  name: {name}\n{metadata}")
    };
    let labels: String = (0..65).map(|i| format!("    k{i}: v\n")).collect();
    let annotations: String = (0..257).map(|i| format!("    a{i}: v\n")).collect();
    let cases = [
        (
            workspace("labelled", &format!("  labels:\n{labels}")),
            "metadata.labels",
            "at most 64",
        ),
        (
            workspace("annotated", &format!("  annotations:\n{annotations}")),
            "metadata.annotations",
            "at most 256",
        ),
        (
            workspace(&"n".repeat(20_000), ""),
            "metadata.name",
            "(20000 bytes)",
        ),
    ];
    for (manifest, field, says) in cases {
        let (status, body) = c.apply(&c.admin, &manifest).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let error = apply_error(&body);
        assert_eq!(error["field"], field, "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(
            body.to_string().len() < 2048,
            "the error quotes only a prefix: {body}"
        );
    }
    let many: String = (0..1001)
        .map(|i| format!("---\napiVersion: v1\nkind: Zone\nmetadata: {{name: z{i}}}\n"))
        .collect();
    let (status, body) = c.apply(&c.admin, &many).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        apply_error(&body)["message"]
            .as_str()
            .unwrap()
            .contains("more than 1000 documents")
    );
    let (status, _) = c.get(&c.admin, "/v1/zones/z0").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing of a refused manifest is stored"
    );
    let (status, _) = c.get(&c.admin, "/v1/workspaces/labelled").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// One request made from the OpenAPI document: an operation, who calls, and which of its
/// query parameters are sent with which values.
#[derive(Debug, Clone)]
struct Probe {
    operation: usize,
    caller: u8,
    name: u8,
    /// Per documented parameter: sent or not, and which of its values.
    choices: Vec<(bool, u8)>,
    /// An undocumented parameter is added: the request is invalid.
    stray: bool,
    /// A typed parameter gets a value of another type: the request is invalid.
    mistyped: bool,
}

/// Values a query parameter's schema allows; `None` for opaque ones (continuation tokens,
/// feed positions), which only a previous answer can give.
fn valid_values(name: &str, schema: &Value) -> Option<Vec<String>> {
    if let Some(values) = schema["enum"].as_array() {
        return Some(
            values
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        );
    }
    match schema["type"].as_str() {
        Some("boolean") => Some(vec!["false".into()]),
        Some("integer") => {
            let low = schema["minimum"].as_u64().unwrap_or(0);
            let high = schema["maximum"].as_u64().unwrap_or(low + 100);
            Some(vec![
                low.to_string(),
                high.to_string(),
                ((low + high) / 2).to_string(),
            ])
        }
        _ => match name {
            "continue" | "resourceVersion" | "after" => None,
            "labelSelector" => Some(vec![
                "app=probe".into(),
                "tier in (a,b)".into(),
                "!gpu".into(),
            ]),
            "command" => Some(vec!["[\"true\"]".into()]),
            "zone" => Some(vec!["default".into()]),
            "workspace" => Some(vec!["default".into()]),
            "kind" => Some(vec!["Workload".into()]),
            _ => Some(vec!["probe".into(), "x".into()]),
        },
    }
}

/// Requests derived from `/openapi.json`, generated with proptest: valid ones by every caller,
/// and ones made invalid by an undocumented or mistyped parameter. Every answer must be one
/// the operation documents, never a 5xx it does not, and every refusal a JSON error; a valid
/// request by the administrator is never refused as malformed, an invalid one never accepted;
/// a method the document does not list for a path gets 405 with `Allow`.
async fn requests_derived_from_the_document_get_documented_answers(c: &Cluster) {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    let setup = "apiVersion: v1\nkind: User\nmetadata: {name: nora}\nspec:\n  default: {zone: default, workspace: default}\n  resources: [{zone: default, workspace: default, role: user}]\n---\napiVersion: v1\nkind: Workload\nmetadata: {name: probe, labels: {app: probe}}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config: {cmd: [sleep, '600']}\n";
    assert_eq!(c.apply(&c.admin, setup).await.0, StatusCode::OK);
    let nora = c.token_for("nora");
    let (_, doc) = c.call(Method::GET, "/openapi.json", None, None).await;
    let mut operations = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let shared = item["parameters"].as_array().cloned().unwrap_or_default();
        let methods: Vec<&str> = ["get", "put", "post", "patch", "delete"]
            .into_iter()
            .filter(|m| item.get(*m).is_some())
            .collect();
        for method in &methods {
            let operation = &item[*method];
            let params: Vec<Value> = shared
                .iter()
                .chain(operation["parameters"].as_array().into_iter().flatten())
                .cloned()
                .collect();
            operations.push((
                template.clone(),
                method.to_string(),
                operation.clone(),
                params,
            ));
        }
        // A method the path does not have.
        if let Some(other) = ["patch", "post", "put", "delete", "get"]
            .into_iter()
            .find(|m| !methods.contains(m))
        {
            let path = template
                .replace("{zone}", "default")
                .replace("{workspace}", "default")
                .replace("{name}", "probe")
                .replace("{id}", "probe")
                .replace("{path}", "a")
                .replace("{action}", "pause");
            let method: Method = other.to_uppercase().parse().unwrap();
            let response = c
                .http
                .request(method, format!("{}{path}", c.url))
                .bearer_auth(&c.admin)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{other} {template}"
            );
            let allow = response.headers()["allow"].to_str().unwrap().to_lowercase();
            for method in &methods {
                assert!(
                    allow.contains(method),
                    "{template}: Allow {allow} lacks {method}"
                );
            }
        }
    }
    let most_params = operations.iter().map(|o| o.3.len()).max().unwrap_or(0);
    // DORA_CONTRACT_CASES=N runs more.
    let cases: usize = std::env::var("DORA_CONTRACT_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(600);
    let probes = prop::collection::vec(
        (
            0..operations.len(),
            0u8..4,
            0u8..3,
            prop::collection::vec((any::<bool>(), any::<u8>()), most_params),
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.15),
        )
            .prop_map(
                |(operation, caller, name, choices, stray, mistyped)| Probe {
                    operation,
                    caller,
                    name,
                    choices,
                    stray,
                    mistyped,
                },
            ),
        cases,
    );
    let mut runner = match std::env::var("DORA_CONTRACT_SEED") {
        Ok(_) => proptest::test_runner::TestRunner::default(),
        Err(_) => proptest::test_runner::TestRunner::deterministic(),
    };
    let probes = probes.new_tree(&mut runner).unwrap().current();
    let mut answered = std::collections::BTreeMap::<u16, usize>::new();
    for probe in probes {
        let (template, method, operation, params) = &operations[probe.operation];
        let name = ["probe", "x", "no-such-thing"][probe.name as usize];
        let path = template
            .replace("{zone}", "default")
            .replace("{workspace}", "default")
            .replace("{name}", name)
            .replace("{id}", name)
            .replace("{address}", "192.0.2.1")
            .replace("{path}", "a/b");
        let path = match params.iter().find(|p| p["name"] == "action") {
            Some(action) => path.replace("{action}", action["schema"]["enum"][0].as_str().unwrap()),
            None => path,
        };
        let mut query: Vec<(String, String)> = Vec::new();
        let mut mistyped = false;
        for (param, (send, pick)) in params.iter().zip(&probe.choices) {
            if param["in"] != "query" {
                continue;
            }
            let name = param["name"].as_str().unwrap();
            let schema = &param["schema"];
            let typed = matches!(schema["type"].as_str(), Some("integer" | "boolean"));
            if probe.mistyped && typed && !mistyped {
                query.push((name.into(), "not-a-value".into()));
                mistyped = true;
                continue;
            }
            if let (true, Some(values)) = (*send, valid_values(name, schema)) {
                query.push((name.into(), values[*pick as usize % values.len()].clone()));
            }
        }
        if probe.stray {
            query.push(("strayParameter".into(), "1".into()));
        }
        // A required header (a WebSocket's Upgrade) is never sent here.
        let lacks_header = params
            .iter()
            .any(|p| p["in"] == "header" && p["required"] == true);
        let valid = !probe.stray && !mistyped && !lacks_header;
        let public = operation.get("security").is_some_and(|s| s == &json!([]));
        let token = match probe.caller {
            0 => Some(c.admin.as_str()),
            1 => Some(nora.as_str()),
            2 => Some("garbage"),
            _ => None,
        };
        let method: Method = method.to_uppercase().parse().unwrap();
        let mut request = c
            .http
            .request(method.clone(), format!("{}{path}", c.url))
            .query(&query);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if matches!(method, Method::PUT | Method::POST | Method::PATCH) {
            request = request.body("{}");
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let allow = response.headers().get("allow").is_some();
        let text = response.text().await.unwrap();
        *answered.entry(status.as_u16()).or_default() += 1;
        let what = format!(
            "{method} {path}?{query:?} as caller {}: {status} {text}",
            probe.caller
        );
        assert!(
            operation["responses"].get(status.as_str()).is_some(),
            "undocumented answer: {what}"
        );
        assert!(
            !status.is_server_error() || [502, 503].contains(&status.as_u16()),
            "server error: {what}"
        );
        if status.is_client_error() || status.is_server_error() {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("a refusal that is not JSON: {what}"));
            assert!(
                body["error"]["reason"].is_string() && body["error"]["message"].is_string(),
                "{what}"
            );
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED || allow,
                "405 without Allow: {what}"
            );
        }
        let authenticated = public || probe.caller < 2;
        if !valid && authenticated {
            assert!(
                status.is_client_error(),
                "an invalid request accepted: {what}"
            );
        }
        if valid
            && probe.caller == 0
            && !matches!(method, Method::PUT | Method::POST | Method::PATCH)
        {
            assert!(
                status != StatusCode::BAD_REQUEST && status != StatusCode::UNPROCESSABLE_ENTITY,
                "a valid request refused: {what}"
            );
        }
        if !public && probe.caller >= 2 {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        }
    }
    println!("answers to {cases} derived requests by status: {answered:?}");
}

/// Deleting a Definition with `cascade` deletes its objects as a delete of each would: one
/// with finalizers goes Terminating, and stays (its kind still defined, so that its controller
/// can release it) until they are removed; the Definition waits for it, then goes too.
async fn a_cascading_definition_delete_honours_finalizers(c: &Cluster) {
    let thing = |name: &str, finalizers: &str| {
        format!(
            "apiVersion: v1\nkind: Cascadething\nmetadata: {{name: {name}, workspace: default, finalizers: [{finalizers}]}}\nspec: {{}}\n"
        )
    };
    let manifest = [
        "apiVersion: v1\nkind: Definition\nmetadata: {name: cascadethings}\nspec:\n  names: {kind: Cascadething, plural: cascadethings}\n  scope: workspaced\n  schema: {type: object}\n".to_string(),
        thing("plain", ""),
        thing("guarded", "example.com/cleanup"),
    ]
    .join("---\n");
    let (status, body) = c.apply(&c.admin, &manifest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let definition = "/v1/definitions/cascadethings";
    let (status, body) = c
        .call(
            Method::DELETE,
            &format!("{definition}?cascade=true"),
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");
    let things = "/v1/workspaces/default/cascadethings";
    assert_eq!(
        c.get(&c.admin, &format!("{things}/plain")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, guarded) = c.get(&c.admin, &format!("{things}/guarded")).await;
    assert_eq!(status, StatusCode::OK, "{guarded}");
    assert_eq!(guarded["status"]["phase"], "Terminating", "{guarded}");
    let (status, body) = c.get(&c.admin, definition).await;
    assert_eq!(status, StatusCode::OK, "the definition waits: {body}");
    // Deleting again changes nothing while the finalizer stays.
    let (status, _) = c
        .call(
            Method::DELETE,
            &format!("{definition}?cascade=true"),
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        c.get(&c.admin, &format!("{things}/guarded")).await.0,
        StatusCode::OK
    );

    // Its controller releases the finalizer: the object goes, and the definition with it.
    let (status, body) = c.apply(&c.admin, &thing("guarded", "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["outcome"], "deleted", "{body}");
    assert_eq!(
        c.get(&c.admin, &format!("{things}/guarded")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = c.get(&c.admin, definition).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// Every path and method `/openapi.json` documents is routed: none gets the router's own
/// "no such path" or "method not allowed" answer.
async fn every_documented_path_is_routed(c: &Cluster) {
    let (_, doc) = c.call(Method::GET, "/openapi.json", None, None).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 40, "{}", paths.len());
    for (template, operations) in paths {
        let path = template
            .replace("{zone}", "default")
            .replace("{workspace}", "default")
            .replace("{name}", "x")
            .replace("{path}", "a/b");
        for (method, operation) in operations.as_object().unwrap() {
            if !["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let method: Method = method.to_uppercase().parse().unwrap();
            let mut path = path.clone();
            if let Some(action) = operation["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == "action"))
            {
                path = path.replace("{action}", action["schema"]["enum"][0].as_str().unwrap());
            }
            let (status, body) = c.call(method.clone(), &path, Some(&c.admin), None).await;
            let routed = !matches!(
                body["error"]["message"].as_str(),
                Some("no such path; see /openapi.json")
            ) && status != StatusCode::METHOD_NOT_ALLOWED;
            assert!(routed, "{method} {template}: {status} {body}");
        }
    }
}

/// A dry run and a rollback are checked as an apply is: a user outside the workspace is
/// refused both; a dry run writes nothing; a rollback writes a new generation.
async fn dry_runs_and_rollbacks_are_checked_as_applies(c: &Cluster) {
    let setup = "apiVersion: v1\nkind: Workspace\nmetadata: {name: carol}\n---\napiVersion: v1\nkind: User\nmetadata: {name: carol}\nspec:\n  default: {zone: default, workspace: carol}\n  resources: [{kind: All, zone: default, workspace: carol, role: user}]\n";
    assert_eq!(c.apply(&c.admin, setup).await.0, StatusCode::OK);
    let carol = c.token_for("carol");
    for image in ["busybox:1", "busybox:2"] {
        let (status, body) = c.apply(&c.admin, &workload("kept", image)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let kept = format!("{WORKLOADS}/kept");
    let dry_run = |token: &str, manifest: String| {
        let token = token.to_string();
        async move {
            c.call(
                Method::POST,
                "/v1/apply?dryRun=true&workspace=default",
                Some(&token),
                Some(manifest),
            )
            .await
        }
    };
    let (status, body) = dry_run(&c.admin, workload("kept", "busybox:3")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = &body["results"][0];
    assert_eq!(result["outcome"], "configured", "{body}");
    assert_eq!(result["dryRun"]["current"]["image"]["image"], "busybox:2");
    assert_eq!(result["dryRun"]["applied"]["image"]["image"], "busybox:3");
    let (status, body) = dry_run(&carol, workload("kept", "busybox:3")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = dry_run(
        &c.admin,
        workload("kept", "busybox").replace("count: 1", "count: -1"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, object) = c.get(&c.admin, &kept).await;
    assert_eq!(object["metadata"]["generation"], 2, "{object}");

    let rollback = format!("{kept}/rollback");
    let (status, body) = c.call(Method::POST, &rollback, Some(&carol), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = c
        .call(
            Method::POST,
            &format!("{rollback}?generation=9"),
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(body["error"]["field"], "generation", "{status} {body}");
    let (status, body) = c.call(Method::POST, &rollback, Some(&c.admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"]["metadata"]["generation"], 3, "{body}");
    assert_eq!(
        body["object"]["spec"]["image"]["image"], "busybox:1",
        "{body}"
    );
    let (_, versions) = c.get(&c.admin, &format!("{kept}/versions")).await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 3, "{versions}");
}

/// Runs each case on the embedded SQLite store and on Cassandra.
macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let cluster = super::start(super::Backend::Sqlite).await;
                    super::$case(&cluster).await;
                }
            )*
        }
        mod cql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let cluster = super::start(super::Backend::Cql).await;
                    super::$case(&cluster).await;
                    if let Some(store) = &cluster.cql {
                        store.drop_keyspace().await.expect("the test keyspace drops");
                    }
                }
            )*
        }
    };
}

on_every_store!(
    health_readiness_metrics_and_openapi,
    only_https_with_the_cluster_ca,
    bad_tokens_get_401,
    a_deleted_users_tokens_stop_working,
    roles_limit_users_to_their_workspace,
    bad_documents_are_refused_with_their_field_and_nothing_is_stored,
    stale_versions_conflict_and_specs_are_kept_as_versions,
    applies_that_would_start_more_are_refused_out_of_credit,
    lists_page_and_put_get_delete_work_by_path,
    watch_streams_changes_and_resumes,
    a_workspace_scoped_admin_stays_in_the_workspace,
    paths_that_do_not_decode_get_json_errors,
    self_minted_tokens_do_not_outlive_the_minting_token,
    tokens_of_an_earlier_user_of_the_same_name_are_refused,
    a_user_made_through_another_server_is_known_at_once,
    watches_end_when_the_token_expires,
    watches_end_cleanly_after_timeout_seconds,
    label_selectors_filter_lists_and_watches,
    open_watches_end_with_an_error_when_the_server_shuts_down,
    unknown_query_parameters_are_refused,
    a_defined_workspaced_kind_pages_and_watches_across_workspaces,
    metadata_round_trips_and_is_kept_when_left_out,
    finalizers_delay_a_delete_until_they_are_removed,
    dependents_go_with_their_owner,
    every_scope_routes_its_paths,
    a_resource_version_ahead_of_the_feed_is_refused,
    the_last_page_has_no_continue_token,
    a_zone_scoped_binding_reads_its_workspace_and_is_told_what_a_write_needs,
    a_cascading_definition_delete_honours_finalizers,
    every_documented_path_is_routed,
    dry_runs_and_rollbacks_are_checked_as_applies,
    mounting_another_workspaces_volume_takes_use,
    host_options_take_the_host_verb,
    tokens_are_listed_and_revoked_on_every_server,
    oversized_input_is_refused_naming_the_limit,
    requests_derived_from_the_document_get_documented_answers,
);
