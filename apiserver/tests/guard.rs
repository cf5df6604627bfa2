//! The IP filter and the rate limits over real HTTPS, from several loopback addresses
//! (127.0.0.x: a client socket bound to each) against a server on 127.0.0.1.

use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dora_apiserver::{
    ApiServer, GuardOptions, Identity, Options, Pki, Rate, TokenClaims, TokenKey,
};
use dora_crds::status::NodeReport;
use dora_store::sqlite::SqliteStore;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const BOOTSTRAP: &str = include_str!("../../manifests/bootstrap.yaml");
const WHOAMI: &str = "/v1/whoami";

struct Server {
    url: String,
    ca: String,
    tokens: TokenKey,
    admin: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(guard: GuardOptions) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path().join("pki"));
    pki.ensure(&["127.0.0.1".into()]).unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("dora.db")).unwrap());
    let options = Options {
        guard,
        ..Options::default()
    };
    let server = ApiServer::new(store, &TokenKey::generate_secret(), options)
        .await
        .unwrap();
    for result in server
        .service()
        .apply_manifest(&Identity::system(), BOOTSTRAP, false)
        .await
    {
        result.unwrap();
    }
    let user = "apiVersion: v1\nkind: User\nmetadata: {name: bob}\nspec:\n  resources: [{kind: All, zone: All, workspace: default, role: user}]\n";
    for result in server
        .service()
        .apply_manifest(&Identity::system(), user, false)
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
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    let tls = pki.server_config().unwrap();
    tokio::spawn(server.serve(listener, tls, async move { shutdown.cancelled().await }));
    Server {
        url,
        ca: std::fs::read_to_string(pki.ca_path()).unwrap(),
        tokens,
        admin,
        stop,
        _dir: dir,
    }
}

/// The answer: status, `Retry-After` and the JSON body.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

impl Server {
    /// A client whose connections come from `from` (a 127.0.0.x address).
    fn client(&self, from: &str) -> Client {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(dora_client::tls_config(&self.ca).unwrap())
            .local_address(from.parse::<IpAddr>().unwrap())
            .build()
            .unwrap();
        Client {
            http,
            url: self.url.clone(),
        }
    }

    fn token(&self, user: &str) -> String {
        self.tokens
            .issue(user, Duration::from_secs(3600), TokenClaims::default())
            .unwrap()
            .token
    }

    fn node_credential(&self, node: &str) -> String {
        let claims = TokenClaims {
            zone: Some("default".into()),
            node: Some(node.into()),
            ..TokenClaims::default()
        };
        self.tokens
            .issue(&format!("node:{node}"), Duration::from_secs(3600), claims)
            .unwrap()
            .token
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        let text = response.text().await.unwrap();
        Answer {
            status,
            retry_after,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), &[], None).await
    }

    /// Fails authentication `n` times, each answered 401.
    async fn fail(&self, n: usize, headers: &[(&str, &str)]) {
        for _ in 0..n {
            let answer = self
                .send(Method::GET, WHOAMI, Some("garbage"), headers, None)
                .await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        }
    }
}

fn assert_banned(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(answer.body["error"]["reason"], "Banned", "{}", answer.body);
    let secs = answer.retry_after.expect("Retry-After");
    assert!(secs >= 1);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("retry in {secs} s")), "{message}");
}

fn banned_addresses(list: &Answer) -> Vec<&str> {
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ban| ban["address"].as_str().unwrap())
        .collect()
}

/// A filter that bans for `ban` after the default 3 failures in 1 s, no rate limits.
fn filter(ban: Duration, trusted: &[&str]) -> GuardOptions {
    GuardOptions {
        ban_time: ban,
        trusted_proxies: trusted.iter().map(|p| p.parse().unwrap()).collect(),
        address_rate: Rate::UNLIMITED,
        user_rate: Rate::UNLIMITED,
        node_rate: Rate::UNLIMITED,
        ..GuardOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_bans_its_address_only_until_the_ban_ends() {
    let server = start(filter(Duration::from_secs(2), &[])).await;
    let attacker = server.client("127.0.0.1");
    let other = server.client("127.0.0.2");
    attacker.fail(3, &[]).await;
    // Banned: even a good token is refused, before it is read.
    let answer = attacker.get(WHOAMI, &server.admin).await;
    assert_banned(&answer);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    // The other address works, and its own failures are its own.
    assert_eq!(
        other.get(WHOAMI, &server.admin).await.status,
        StatusCode::OK
    );
    other.fail(2, &[]).await;
    assert_eq!(
        other.get(WHOAMI, &server.admin).await.status,
        StatusCode::OK
    );
    let metrics = other
        .send(Method::GET, "/metrics", Some(&server.admin), &[], None)
        .await
        .body;
    let metrics = metrics.as_str().unwrap();
    for name in [
        "dora_api_bans_total",
        "dora_api_banned_addresses",
        "dora_api_refused_total{reason=\"banned\"}",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
    // The ban ends by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = attacker.get(WHOAMI, &server.admin).await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert_banned(&answer);
        assert!(Instant::now() < deadline, "the ban never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_list_and_lift_bans_and_nobody_else_can() {
    let server = start(filter(Duration::from_secs(600), &[])).await;
    let attacker = server.client("127.0.0.3");
    let admin = server.client("127.0.0.1");
    attacker.fail(3, &[]).await;
    assert_banned(&attacker.get(WHOAMI, &server.admin).await);
    let list = admin.get("/v1/bans", &server.admin).await;
    assert_eq!(banned_addresses(&list), ["127.0.0.3"]);
    assert!(list.body["items"][0]["remaining"].as_u64().unwrap() > 0);
    // A user, a workspace's user or a node agent may neither list nor lift.
    for token in [server.token("bob"), server.node_credential("n1")] {
        let answer = admin.get("/v1/bans", &token).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        let answer = admin
            .send(
                Method::DELETE,
                "/v1/bans/127.0.0.3",
                Some(&token),
                &[],
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    }
    assert_banned(&attacker.get(WHOAMI, &server.admin).await);
    let lift = |address: &'static str| {
        let (admin, token) = (admin.clone(), server.admin.clone());
        async move {
            admin
                .send(
                    Method::DELETE,
                    &format!("/v1/bans/{address}"),
                    Some(&token),
                    &[],
                    None,
                )
                .await
        }
    };
    assert_eq!(lift("127.0.0.3").await.status, StatusCode::OK);
    assert_eq!(
        attacker.get(WHOAMI, &server.admin).await.status,
        StatusCode::OK
    );
    assert!(banned_addresses(&admin.get("/v1/bans", &server.admin).await).is_empty());
    let again = lift("127.0.0.3").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    let garbage = lift("not-an-address").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST, "{}", garbage.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let server = start(filter(Duration::from_secs(600), &["127.0.0.4"])).await;
    let admin = server.client("127.0.0.1");
    let proxy = server.client("127.0.0.4");
    let stranger = server.client("127.0.0.5");
    // A stranger's header is ignored: its failures ban the stranger, not who it names...
    stranger
        .fail(3, &[("x-forwarded-for", "203.0.113.1")])
        .await;
    assert_eq!(
        banned_addresses(&admin.get("/v1/bans", &server.admin).await),
        ["127.0.0.5"]
    );
    // ...and naming someone else does not get it past its ban.
    for header in [
        ("x-forwarded-for", "127.0.0.9"),
        ("forwarded", "for=127.0.0.9"),
    ] {
        let answer = stranger
            .send(Method::GET, WHOAMI, Some(&server.admin), &[header], None)
            .await;
        assert_banned(&answer);
    }
    // The trusted proxy's header names the client: that client is banned, not the proxy.
    proxy
        .fail(3, &[("x-forwarded-for", "127.0.0.9, 198.51.100.7")])
        .await;
    assert_eq!(
        banned_addresses(&admin.get("/v1/bans", &server.admin).await),
        ["127.0.0.5", "198.51.100.7"]
    );
    for header in [
        ("x-forwarded-for", "198.51.100.7"),
        ("forwarded", "for=\"198.51.100.7:5000\""),
    ] {
        let answer = proxy
            .send(Method::GET, WHOAMI, Some(&server.admin), &[header], None)
            .await;
        assert_banned(&answer);
    }
    let other_client = proxy
        .send(
            Method::GET,
            WHOAMI,
            Some(&server.admin),
            &[("x-forwarded-for", "198.51.100.8")],
            None,
        )
        .await;
    assert_eq!(other_client.status, StatusCode::OK, "{}", other_client.body);
    assert_eq!(
        proxy.get(WHOAMI, &server.admin).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_for_another_zone_counts_as_a_failure() {
    let server = start(filter(Duration::from_secs(600), &[])).await;
    let joiner = server.client("127.0.0.6");
    let claims = TokenClaims {
        zone: Some("elsewhere".into()),
        join: true,
        ..TokenClaims::default()
    };
    let join = server
        .tokens
        .issue("join:elsewhere", Duration::from_secs(600), claims)
        .unwrap()
        .token;
    for n in 0..3 {
        let answer = joiner
            .send(
                Method::POST,
                &format!("/v1/zones/default/nodes/n{n}/credential"),
                Some(&join),
                &[],
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert_eq!(answer.body["error"]["reason"], "Forbidden");
    }
    assert_banned(&joiner.get(WHOAMI, &server.admin).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_rate_limits_gets_429_while_node_reports_go_through() {
    let server = start(GuardOptions {
        address_rate: Rate {
            per_second: 50,
            burst: 50,
        },
        user_rate: Rate {
            per_second: 5,
            burst: 10,
        },
        ..GuardOptions::default()
    })
    .await;
    // One machine: a user flooding the API, a script flooding /healthz, and the node agent.
    let machine = server.client("127.0.0.1");
    let stop = CancellationToken::new();
    // Floods `path` until stopped; counts the refusals that name `limit`.
    let flood = |path: &'static str, token: Option<String>, limit: &'static str| {
        let (machine, stop) = (machine.clone(), stop.clone());
        let named = Arc::new(AtomicUsize::new(0));
        let count = named.clone();
        let task = tokio::spawn(async move {
            let mut refusal = None;
            while !stop.is_cancelled() {
                let answer = machine
                    .send(Method::GET, path, token.as_deref(), &[], None)
                    .await;
                if answer.status == StatusCode::OK {
                    continue;
                }
                assert_eq!(
                    answer.status,
                    StatusCode::TOO_MANY_REQUESTS,
                    "{}",
                    answer.body
                );
                assert_eq!(answer.body["error"]["reason"], "RateLimited");
                let secs = answer.retry_after.expect("Retry-After");
                assert!(secs >= 1);
                let message = answer.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(message.contains(&format!("retry in {secs} s")), "{message}");
                if message.contains(limit) {
                    count.fetch_add(1, Ordering::Relaxed);
                    refusal = Some(message);
                }
            }
            refusal.expect("the flood was refused")
        });
        (named, task)
    };
    let (user_refused, user_flood) = flood(WHOAMI, Some(server.admin.clone()), "user admin");
    let (script_refused, script_flood) = flood("/healthz", None, "address 127.0.0.1");
    let node = server.node_credential("n1");
    let report = serde_json::to_string(&NodeReport::default()).unwrap();
    let mut reports = 0;
    // Reports go on until both floods have been refused a while.
    while reports < 20
        || user_refused.load(Ordering::Relaxed) < 3
        || script_refused.load(Ordering::Relaxed) < 3
    {
        let answer = machine
            .send(
                Method::PUT,
                "/v1/zones/default/nodes/n1/report",
                Some(&node),
                &[],
                Some(report.clone()),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        reports += 1;
        assert!(reports < 100_000, "the floods were never refused");
    }
    stop.cancel();
    let user = user_flood.await.unwrap();
    assert!(user.contains("5 requests/s, bursts of 10"), "{user}");
    let script = script_flood.await.unwrap();
    assert!(script.contains("50 requests/s"), "{script}");
}

#[tokio::test]
async fn a_watch_counts_once_whatever_it_streams() {
    let server = start(GuardOptions {
        user_rate: Rate {
            per_second: 1,
            burst: 3,
        },
        ..GuardOptions::default()
    })
    .await;
    let bob = server.token("bob");
    let machine = server.client("127.0.0.1");
    let watch = machine
        .http
        .get(format!(
            "{}/v1/zones/default/workspaces/default/workloads?watch=true",
            server.url
        ))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    // Twenty changes in one request of the administrator's.
    let manifest: Vec<String> = (0..20)
        .map(|i| format!("apiVersion: v1\nkind: Workload\nmetadata: {{name: w{i}, workspace: default}}\nspec:\n  replica: {{count: 1}}\n  driver: Process\n  config: {{cmd: [sleep, '1']}}\n"))
        .collect();
    let applied = machine
        .send(
            Method::POST,
            "/v1/apply",
            Some(&server.admin),
            &[],
            Some(manifest.join("---\n")),
        )
        .await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
    let mut stream = watch.bytes_stream();
    let mut text = String::new();
    while text.matches("\"ADDED\"").count() < 20 {
        let chunk = futures::StreamExt::next(&mut stream)
            .await
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The watch took one of bob's three; the twenty events took none.
    for _ in 0..2 {
        assert_eq!(machine.get(WHOAMI, &bob).await.status, StatusCode::OK);
    }
    let mut refused = false;
    for _ in 0..5 {
        if machine.get(WHOAMI, &bob).await.status == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
    }
    assert!(refused, "bob's budget is spent by requests, not by events");
}

/// A web console session: the login sets a `Secure; HttpOnly; SameSite=Strict` cookie; with it
/// a request acts as its user under the same role checks, from the console's origin only, and
/// one that changes something only with `X-Dora-Console`; logout ends the session; wrong
/// tokens count toward a ban.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_acts_for_its_user_from_the_console_only() {
    let server = start(GuardOptions::default()).await;
    let client = server.client("127.0.0.4");
    let login = |token: String| {
        client
            .http
            .post(format!("{}/v1/console/login", server.url))
            .body(serde_json::json!({ "token": token }).to_string())
            .send()
    };
    let response = login(server.token("bob")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap();
    let console = [("cookie", session), ("origin", server.url.as_str())];
    let write = [console[0], console[1], ("x-dora-console", "1")];
    let elsewhere = [("cookie", session), ("origin", "https://evil.example")];

    let me = client.send(Method::GET, WHOAMI, None, &console, None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["user"], "bob");
    let users = client
        .send(Method::GET, "/v1/users", None, &console, None)
        .await;
    assert_eq!(users.status, StatusCode::FORBIDDEN, "{}", users.body);
    let cross = client
        .send(Method::GET, WHOAMI, None, &elsewhere, None)
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN, "{}", cross.body);
    assert_eq!(cross.body["error"]["reason"], "CrossSite");
    let logout = "/v1/console/logout";
    let forged = client
        .send(Method::POST, logout, None, &console, None)
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let out = client.send(Method::POST, logout, None, &write, None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    let ended = client.send(Method::GET, WHOAMI, None, &console, None).await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED, "{}", ended.body);

    // Three failures within the ban window (the 401 above may be one of them) ban the address.
    for _ in 0..3 {
        let refused = login("not-a-token".into()).await.unwrap().status();
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&refused),
            "{refused}"
        );
    }
    let banned = login(server.token("bob")).await.unwrap();
    assert_eq!(banned.status(), StatusCode::FORBIDDEN);
}
