//! Attacks on a real `dora up` over HTTPS: every route of `/openapi.json` with every kind of
//! wrong credential, a user confined to one workspace reaching for another, oversized and
//! crafted input. Each must be refused and leave the store as it was.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Dora, home};

/// The cluster the attacks run against, as its administrator sees it.
struct Target {
    dora: Dora,
    url: String,
    http: reqwest::Client,
    ca: String,
    admin: String,
}

impl Target {
    fn start(home: &std::path::Path, extra: &[&str]) -> Target {
        let mut args = vec!["--no-node", "--sim-nodes", "1", "--sim-gpus", "1xA100"];
        args.extend(extra);
        let dora = Dora::up_with(home, &args, "warn", Stdio::inherit());
        let config: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(Dora::config(home)).unwrap()).unwrap();
        let profile = &config["profiles"]["local"];
        let ca = profile["ca"].as_str().unwrap().to_string();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(dora_client::tls_config(&ca).unwrap())
            .build()
            .unwrap();
        Target {
            dora,
            url: profile["apiServer"].as_str().unwrap().to_string(),
            http,
            ca,
            admin: profile["token"].as_str().unwrap().to_string(),
        }
    }

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
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn apply(&self, token: &str, manifest: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/apply",
            Some(token),
            Some(manifest.into()),
        )
        .await
    }

    /// Mints a token through the API.
    async fn token(&self, request: Value) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/tokens",
                Some(&self.admin),
                Some(request.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["token"].as_str().unwrap().into(),
            body["id"].as_str().unwrap().into(),
        )
    }

    /// Every stored object, by kind, place and name, with what changes when it is written
    /// (generation, spec hash, deletion): the same before and after an attack, or it worked.
    async fn dump(&self) -> BTreeSet<String> {
        let (_, kinds) = self
            .call(Method::GET, "/v1/kinds", Some(&self.admin), None)
            .await;
        let mut dump = BTreeSet::new();
        for kind in kinds["items"].as_array().unwrap() {
            let plural = kind["plural"].as_str().unwrap();
            if [
                "gpus",
                "cpus",
                "tokens",
                "usercredits",
                "nodes",
                "containers",
            ]
            .contains(&plural)
            {
                // Views, token records (their last use) and what Dora's own components keep
                // rewriting.
                continue;
            }
            let scope = kind["scope"].as_str().unwrap();
            let path = match scope {
                "cluster" | "workspaced" => format!("/v1/{plural}"),
                _ => format!("/v1/zones/default/{plural}"),
            };
            let (status, list) = self
                .call(
                    Method::GET,
                    &format!("{path}?limit=5000"),
                    Some(&self.admin),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{path}: {list}");
            for item in list["items"].as_array().unwrap() {
                let meta = &item["metadata"];
                dump.insert(format!(
                    "{plural} {} {} {} gen={} hash={} deleting={}",
                    meta["zone"],
                    meta["workspace"],
                    meta["name"],
                    meta["generation"],
                    meta["specHash"],
                    meta["deletionTimestamp"]
                ));
            }
        }
        assert!(dump.len() > 10, "{dump:?}");
        dump
    }
}

const SETUP: &str = "apiVersion: v1\nkind: Workspace\nmetadata: {name: secret}\n---\napiVersion: v1\nkind: User\nmetadata: {name: mallory}\nspec:\n  default: {zone: default, workspace: default}\n  resources: [{kind: All, zone: default, workspace: default, role: user}]\n---\napiVersion: v1\nkind: Storage\nmetadata: {name: disk, zone: default}\nspec: {kind: Local, mountpath: /tmp/dora-attacks}\n---\napiVersion: v1\nkind: Volume\nmetadata: {name: vault, workspace: secret}\nspec: {storage: disk}\n---\napiVersion: v1\nkind: Workload\nmetadata: {name: target, workspace: secret}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config: {cmd: [sleep, '600']}\n---\napiVersion: v1\nkind: Workload\nmetadata: {name: mine, workspace: default}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config: {cmd: [sleep, '600']}\n";

/// A manifest a write could carry: it would change the target if it were accepted.
fn payload(kind_path: &str) -> String {
    if kind_path.contains("/workloads/") {
        "apiVersion: v1\nkind: Workload\nmetadata: {name: target, workspace: secret}\nspec:\n  replica: {count: 5}\n  driver: Process\n  config: {cmd: [sh, -c, 'cat /etc/shadow']}\n".into()
    } else {
        json!({"command": ["cat", "/etc/shadow"], "user": "mallory", "node": "target"}).to_string()
    }
}

/// Operations of the document that read nothing of a workspace and change nothing: what any
/// signed-in user may call.
fn harmless(template: &str, method: &str) -> bool {
    // A login code of the web console logs its own caller in, and writes nothing.
    let own_login = template == "/v1/console/codes" && method == "post";
    own_login
        || method == "get"
            && (!template.contains("{workspace}")
                || template.starts_with("/v1/workspaces/{workspace}")
                    && !template.contains("/v1/workspaces/{workspace}/"))
}

#[tokio::test]
async fn every_route_refuses_every_wrong_credential_and_changes_nothing() {
    let home = home();
    // Failed authentications are the point here: the IP filter is tested on its own.
    let target = Target::start(home.path(), &["--ban-after", "0"]);
    let (status, body) = target.apply(&target.admin, SETUP).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (mallory, _) = target.token(json!({"user": "mallory"})).await;
    let (revoked, revoked_id) = target.token(json!({"user": "mallory"})).await;
    let (status, _) = target
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{revoked_id}"),
            Some(&target.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (expired, _) = target
        .token(json!({"user": "mallory", "expiresIn": "1s"}))
        .await;
    let (node, _) = target.token(json!({"node": "elsewhere"})).await;
    let (join, _) = target.token(json!({"join": true})).await;
    // The administrator's own token: no one else may see or revoke it.
    let (_, records) = target
        .call(
            Method::GET,
            "/v1/tokens?user=admin",
            Some(&target.admin),
            None,
        )
        .await;
    let admin_id = records["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // Past the expiry and the clock skew tolerated.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let before = target.dump().await;

    let (_, doc) = target.call(Method::GET, "/openapi.json", None, None).await;
    let callers: [(&str, Option<&str>); 8] = [
        ("no token", None),
        ("garbage", Some("garbage")),
        ("a malformed JWE", Some("a.b.c.d.e")),
        ("expired", Some(&expired)),
        ("revoked", Some(&revoked)),
        ("mallory, of workspace default", Some(&mallory)),
        ("a node credential", Some(&node)),
        ("a join token", Some(&join)),
    ];
    let mut tried = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template
            .replace("{zone}", "default")
            .replace("{workspace}", "secret")
            .replace("{name}", "target")
            .replace("{id}", &admin_id)
            .replace("{path}", "etc/passwd");
        let path = if path.contains("{action}") {
            let action = ["pause", "drain"]
                .into_iter()
                .find(|a| item["post"].to_string().contains(a))
                .unwrap();
            path.replace("{action}", action)
        } else {
            path
        };
        for method in ["get", "put", "post", "patch", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let public = operation.get("security") == Some(&json!([]));
            if public || (template == "/v1/tokens" && method == "post") {
                continue;
            }
            for (who, token) in callers {
                if who == "a join token" && template.ends_with("/credential") {
                    // What a join token is for: a new node claims its name.
                    continue;
                }
                let body = (method != "get").then(|| payload(&path));
                let verb: Method = method.to_uppercase().parse().unwrap();
                let (status, answer) = target.call(verb, &path, token, body).await;
                tried += 1;
                let what = format!("{method} {path} by {who}: {status} {answer}");
                assert!(
                    answer["error"]["message"].is_string() || status.is_success(),
                    "{what}"
                );
                match who {
                    "mallory, of workspace default" | "a node credential" | "a join token" => {
                        if !harmless(template, method) {
                            assert!(status.is_client_error(), "{what}");
                        }
                    }
                    _ => assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}"),
                }
            }
        }
    }
    println!("{tried} attacks refused");
    assert!(tried > 400, "{tried}");
    assert_eq!(target.dump().await, before, "an attack changed the store");
    target.dora.stop();
}

#[tokio::test]
async fn a_user_of_one_workspace_cannot_reach_another_nor_widen_its_roles() {
    let home = home();
    let target = Target::start(home.path(), &[]);
    assert_eq!(target.apply(&target.admin, SETUP).await.0, StatusCode::OK);
    let (mallory, _) = target.token(json!({"user": "mallory"})).await;
    // The secret workspace's container runs on the hollow node.
    support::wait_for(
        &target.dora,
        &["get", "c", "-g", "secret", "-o", "json"],
        "the secret container",
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
    );
    let container = "/v1/zones/default/workspaces/secret/containers/target.0";
    let secret = "/v1/zones/default/workspaces/secret";
    for (method, path) in [
        (Method::GET, format!("{secret}/workloads")),
        (Method::GET, format!("{secret}/workloads/target")),
        (Method::GET, format!("{secret}/workloads/target/versions")),
        (Method::GET, format!("{secret}/containers")),
        (Method::GET, format!("{container}/logs")),
        (Method::GET, format!("{container}/top")),
        (Method::POST, format!("{container}/exec")),
        (Method::GET, format!("{secret}/volumes/vault/files/")),
        (Method::PUT, format!("{secret}/volumes/vault/files/planted")),
        (Method::POST, format!("{secret}/workloads/target/pause")),
        (Method::DELETE, format!("{secret}/workloads/target")),
    ] {
        let body = (method != Method::GET).then(|| payload(&path));
        let (status, answer) = target
            .call(method.clone(), &path, Some(&mallory), body)
            .await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{method} {path}: {status} {answer}"
        );
    }
    // A shell: the WebSocket handshake is refused.
    let websocket = reqwest::Client::builder()
        .use_preconfigured_tls(dora_client::tls_config(&target.ca).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let response = websocket
        .get(format!("{}{container}/exec?tty=true", target.url))
        .bearer_auth(&mallory)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Her own workspace works.
    let (status, answer) = target
        .call(
            Method::GET,
            "/v1/zones/default/workspaces/default/workloads/mine",
            Some(&mallory),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Lists across workspaces show her nothing of the other.
    for list in [
        "/v1/events",
        "/v1/events?workspace=secret",
        "/v1/zones/default/workloads",
        "/v1/zones/default/containers",
    ] {
        let (status, answer) = target.call(Method::GET, list, Some(&mallory), None).await;
        assert!(
            status.is_client_error()
                || answer["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|item| item["workspace"] != "secret"
                        && item["metadata"]["workspace"] != "secret"),
            "{list}: {answer}"
        );
    }
    // Neither users nor roles, nor her own bindings.
    for manifest in [
        "apiVersion: v1\nkind: User\nmetadata: {name: eve}\nspec:\n  resources: [{kind: All, zone: All, workspace: All, role: admin}]\n",
        "apiVersion: v1\nkind: Role\nmetadata: {name: user}\nspec:\n  permission: {All: [Apply, Get, Delete, Token]}\n",
        "apiVersion: v1\nkind: User\nmetadata: {name: mallory}\nspec:\n  default: {zone: default, workspace: default}\n  resources: [{kind: All, zone: All, workspace: All, role: admin}]\n",
        "apiVersion: v1\nkind: Workload\nmetadata: {name: sniff, workspace: default}\nspec:\n  replica: {count: 1}\n  driver: Process\n  config: {cmd: [sleep, '1']}\n  network: {mode: host}\n",
    ] {
        let (status, answer) = target.apply(&mallory, manifest).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{manifest}: {answer}");
    }
    let (status, answer) = target
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&mallory),
            Some(json!({"user": "admin"}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    target.dora.stop();
}

/// Peak memory of a process, from the kernel: VmHWM in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn crafted_manifests_are_refused_in_bounded_memory() {
    let home = home();
    let target = Target::start(home.path(), &[]);
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let deep = format!(
        "apiVersion: v1\nkind: Zone\nmetadata: {{name: deep}}\nspec: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let many: String = (0..50_000)
        .map(|i| format!("---\napiVersion: v1\nkind: Workspace\nmetadata: {{name: w{i}}}\n"))
        .collect();
    // Warm up: the first requests grow the server's pools whatever they carry.
    for _ in 0..3 {
        target
            .apply(
                &target.admin,
                "apiVersion: v1\nkind: Zone\nmetadata: {name: z}\n",
            )
            .await;
    }
    let before = peak_kib(target.dora.child.id());
    for (what, manifest) in [
        ("alias bomb", &bomb),
        ("deep nesting", &deep),
        ("50,000 documents", &many),
    ] {
        let attacks = (0..20).map(|_| target.apply(&target.admin, manifest));
        for (status, answer) in futures::future::join_all(attacks).await {
            assert!(status.is_client_error(), "{what}: {status}");
            assert!(
                answer.to_string().len() < 4096,
                "{what}: the error quotes only a prefix"
            );
        }
    }
    let grown = peak_kib(target.dora.child.id()).saturating_sub(before);
    println!(
        "20 of each crafted manifest at once raised the peak RSS by {} MiB",
        grown / 1024
    );
    assert!(grown < 64 * 1024, "the peak RSS grew by {grown} KiB");
    let (status, _) = target
        .call(Method::GET, "/v1/workspaces/w0", Some(&target.admin), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing of a refused manifest is stored"
    );
    target.dora.stop();
}

/// A client of `target` whose requests leave from `address` (a loopback address).
fn client_from(target: &Target, address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(dora_client::tls_config(&target.ca).unwrap())
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn whoami(
    client: &reqwest::Client,
    target: &Target,
    token: &str,
    spoof: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = client
        .get(format!("{}/v1/whoami", target.url))
        .bearer_auth(token);
    if let Some(address) = spoof {
        request = request
            .header("x-forwarded-for", address)
            .header("forwarded", format!("for={address}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn brute_force_is_banned_and_a_flood_limited_while_others_go_on() {
    let home = home();
    let target = Target::start(
        home.path(),
        &["--user-rate-limit", "20", "--user-burst", "20"],
    );
    let attacker = client_from(&target, "127.0.0.1");
    let neighbour = client_from(&target, "127.0.0.2");
    // Three wrong tokens within a second ban 127.0.0.1, whatever it claims to forward for.
    for attempt in 0..3 {
        let (status, _) = whoami(
            &attacker,
            &target,
            &format!("guess-{attempt}"),
            Some("10.9.9.9"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, answer) = whoami(&attacker, &target, &target.admin, Some("127.0.0.2")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["reason"], "Banned", "{answer}");
    // 127.0.0.2 goes on, with the same valid token.
    let (status, _) = whoami(&neighbour, &target, &target.admin, None).await;
    assert_eq!(status, StatusCode::OK);
    // The administrator, from elsewhere, sees the ban and lifts it.
    let bans = neighbour
        .get(format!("{}/v1/bans", target.url))
        .bearer_auth(&target.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(bans.contains("127.0.0.1"), "{bans}");
    let lifted = neighbour
        .delete(format!("{}/v1/bans/127.0.0.1", target.url))
        .bearer_auth(&target.admin)
        .send()
        .await
        .unwrap();
    assert!(lifted.status().is_success());
    let (status, _) = whoami(&attacker, &target, &target.admin, None).await;
    assert_eq!(status, StatusCode::OK, "the lifted address is served again");

    // A user's flood gets 429 with Retry-After; a node's reports go on meanwhile.
    let (node, _) = target.token(json!({"node": "floodnode"})).await;
    let report = serde_json::to_string(&dora_crds::status::NodeReport::default()).unwrap();
    let mut limited = None;
    for _ in 0..200 {
        let response = neighbour
            .get(format!("{}/v1/whoami", target.url))
            .bearer_auth(&target.admin)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the flood is limited");
    assert!(limited.headers().contains_key("retry-after"));
    for _ in 0..20 {
        let response = neighbour
            .put(format!(
                "{}/v1/zones/default/nodes/floodnode/report",
                target.url
            ))
            .bearer_auth(&node)
            .body(report.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            response.text().await.unwrap()
        );
    }
    target.dora.stop();
}
