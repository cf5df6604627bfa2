//! Certificates and TLS end to end, against `dora up`: a strict RFC 5280 client (Python's `ssl`
//! with `VERIFY_X509_STRICT | VERIFY_X509_PARTIAL_CHAIN`, which is Python 3.13's default)
//! trusts the API server's and a node agent's certificates with the cluster CA only; the
//! certificates are renewed without a restart; an old data folder's 20-year certificate is
//! replaced on start; `/metrics` takes a token or `--metrics-listen`; a ClientHello that names
//! the server by IP address logs nothing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::{Dora, home, wait_for};

/// Connects as a strict client, optionally with a client certificate, and optionally sends
/// `GET path` with a bearer token; prints what it saw as JSON.
const STRICT_CLIENT: &str = r#"
import argparse, http.client, json, socket, ssl
parser = argparse.ArgumentParser()
parser.add_argument("ca")
parser.add_argument("host")
parser.add_argument("port", type=int)
parser.add_argument("--cert", nargs=2)
parser.add_argument("--get")
parser.add_argument("--token")
args = parser.parse_args()
context = ssl.create_default_context(cafile=args.ca)
# Python 3.13's default; this Python may be older.
context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
if args.cert:
    context.load_cert_chain(*args.cert)
seen = {}
with socket.create_connection((args.host, args.port), timeout=10) as sock:
    with context.wrap_socket(sock, server_hostname=args.host) as tls:
        cert = tls.getpeercert()
        seen["serial"] = cert["serialNumber"]
        seen["notBefore"] = ssl.cert_time_to_seconds(cert["notBefore"])
        seen["notAfter"] = ssl.cert_time_to_seconds(cert["notAfter"])
if args.get:
    connection = http.client.HTTPSConnection(args.host, args.port, context=context, timeout=10)
    headers = {"Authorization": "Bearer " + args.token} if args.token else {}
    connection.request("GET", args.get, headers=headers)
    response = connection.getresponse()
    seen["status"] = response.status
    seen["body"] = response.read().decode()
print(json.dumps(seen))
"#;

/// Runs the strict client with `args`: what it saw, or why it failed.
fn strict(args: &[&str]) -> Result<Value, String> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(STRICT_CLIENT)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 runs the strict TLS client of these tests; install Python 3: {e}")
        });
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).expect("the client prints JSON"))
}

fn pki(dora: &Dora) -> PathBuf {
    dora.home.join("data/pki")
}

fn path(file: &Path) -> &str {
    file.to_str().unwrap()
}

/// The port of the API server, from `dora up`'s banner.
fn api_port(dora: &Dora) -> String {
    let line = dora
        .banner
        .iter()
        .find(|l| l.starts_with("Dora is up at"))
        .unwrap();
    let url = line.split_whitespace().nth(4).unwrap();
    url.rsplit(':').next().unwrap().to_string()
}

/// What a strict client sees of the API server at `host`.
fn api_certificate(dora: &Dora, host: &str) -> Value {
    let ca = pki(dora).join("ca.pem");
    strict(&[path(&ca), host, &api_port(dora)])
        .unwrap_or_else(|e| panic!("a strict client refused the API server at {host}: {e}"))
}

/// What a strict client sees of the node agent's API, presenting the API server's client
/// certificate (the only caller a node accepts).
fn node_certificate(dora: &Dora) -> Value {
    let node = wait_for(dora, &["get", "nodes", "-o", "json"], "a node", |list| {
        list["items"][0]["status"]["observed"]["endpoint"].is_string()
    });
    let endpoint = node["items"][0]["status"]["observed"]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let (host, port) = endpoint
        .trim_start_matches("https://")
        .rsplit_once(':')
        .unwrap();
    let pki = pki(dora);
    let (ca, cert, key) = (
        pki.join("ca.pem"),
        pki.join("proxy.pem"),
        pki.join("proxy.key"),
    );
    strict(&[path(&ca), host, port, "--cert", path(&cert), path(&key)])
        .unwrap_or_else(|e| panic!("a strict client refused the node at {endpoint}: {e}"))
}

fn seconds(seen: &Value, field: &str) -> u64 {
    seen[field].as_u64().unwrap()
}

/// Asserts that `seen` is valid now and lasts at most `lifetime` (plus the five minutes
/// certificates are backdated by).
fn lasts_at_most(seen: &Value, lifetime: Duration) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (from, to) = (seconds(seen, "notBefore"), seconds(seen, "notAfter"));
    assert!(from <= now && now < to, "{seen} is not valid now ({now})");
    assert!(
        to - from <= lifetime.as_secs() + 300,
        "{seen} lasts longer than {lifetime:?}"
    );
}

fn token(dora: &Dora) -> String {
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(Dora::config(&dora.home)).unwrap())
            .unwrap();
    config["profiles"]["local"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

const THIRTY_DAYS: Duration = Duration::from_secs(30 * 86_400);

#[test]
fn a_strict_client_trusts_the_api_and_node_certificates_with_the_cluster_ca_only() {
    let home = home();
    let dora = Dora::up_with(home.path(), &["--docker", "off"], "warn", Stdio::inherit());
    for host in ["127.0.0.1", "localhost"] {
        lasts_at_most(&api_certificate(&dora, host), THIRTY_DAYS);
    }
    lasts_at_most(&node_certificate(&dora), THIRTY_DAYS);
    // Another cluster's CA is refused.
    let stranger = home.path().join("stranger");
    let other = Dora::up_with(&stranger, &["--no-node"], "warn", Stdio::inherit());
    let foreign_ca = pki(&other).join("ca.pem");
    let refused = strict(&[path(&foreign_ca), "127.0.0.1", &api_port(&dora)]).unwrap_err();
    assert!(refused.contains("CERTIFICATE_VERIFY_FAILED"), "{refused}");
}

#[test]
fn certificates_are_renewed_without_a_restart() {
    let home = home();
    let mut dora = Dora::up_with(
        home.path(),
        &["--docker", "off", "--certificate-lifetime", "6s"],
        "warn",
        Stdio::inherit(),
    );
    let (api, node) = (api_certificate(&dora, "127.0.0.1"), node_certificate(&dora));
    lasts_at_most(&api, Duration::from_secs(6));
    lasts_at_most(&node, Duration::from_secs(6));
    // Renewed when a third of the 6 s is left; both stay valid throughout, or the strict
    // client would refuse them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut api_renewed, mut node_renewed) = (None, None);
    while api_renewed.is_none() || node_renewed.is_none() {
        assert!(
            Instant::now() < deadline,
            "not renewed within 30 s: API {api_renewed:?}, node {node_renewed:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let seen = api_certificate(&dora, "127.0.0.1");
        if seen["serial"] != api["serial"] {
            api_renewed = Some(seen);
        }
        let seen = node_certificate(&dora);
        if seen["serial"] != node["serial"] {
            node_renewed = Some(seen);
        }
    }
    for (before, renewed) in [(api, api_renewed.unwrap()), (node, node_renewed.unwrap())] {
        lasts_at_most(&renewed, Duration::from_secs(6));
        assert!(
            seconds(&renewed, "notAfter") > seconds(&before, "notAfter"),
            "the renewed certificate {renewed} ends after {before}"
        );
    }
    assert!(
        dora.child.try_wait().unwrap().is_none(),
        "the same `dora up` serves the renewed certificates"
    );
    dora.run(&["get", "nodes"]);
}

/// A 20-year certificate without key identifiers or key usage, as earlier versions issued.
fn old_server_certificate(pki: &Path) -> (String, String) {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    };
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let mut ca = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Dora cluster CA");
    ca.distinguished_name = name;
    let issuer = Issuer::new(ca, ca_key);
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "dora-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn an_old_data_folder_gets_a_short_lived_conforming_certificate_on_start() {
    let home = home();
    let dora = Dora::up(home.path());
    let pki = pki(&dora);
    dora.stop();
    let (cert, key) = old_server_certificate(&pki);
    std::fs::write(pki.join("server.pem"), &cert).unwrap();
    std::fs::write(pki.join("server.key"), key).unwrap();
    let dora = Dora::up(home.path());
    assert_ne!(
        std::fs::read_to_string(pki.join("server.pem")).unwrap(),
        cert,
        "the old certificate is replaced"
    );
    lasts_at_most(&api_certificate(&dora, "localhost"), THIRTY_DAYS);
}

#[test]
fn metrics_take_a_token_or_a_listener_of_their_own() {
    let home = home();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_address = free.local_addr().unwrap().to_string();
    drop(free);
    let dora = Dora::up_with(
        home.path(),
        &["--no-node", "--metrics-listen", &metrics_address],
        "warn",
        Stdio::inherit(),
    );
    let ca = pki(&dora).join("ca.pem");
    let port = api_port(&dora);
    let get = |token: Option<&str>| {
        let mut args = vec![path(&ca), "127.0.0.1", &port, "--get", "/metrics"];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        strict(&args).unwrap()
    };
    assert_eq!(get(None)["status"], 401);
    assert_eq!(get(Some("garbage"))["status"], 401);
    let admin = get(Some(&token(&dora)));
    assert_eq!(admin["status"], 200);
    assert!(
        admin["body"]
            .as_str()
            .unwrap()
            .contains("dora_api_requests_total"),
        "{admin}"
    );
    // A user bound to one workspace may not read them; a monitoring role may.
    let users = home.path().join("users.yaml");
    std::fs::write(
        &users,
        "apiVersion: v1\nkind: Role\nmetadata: {name: monitoring}\nspec:\n  permission: {Zone: [Describe]}\n---\n\
         apiVersion: v1\nkind: User\nmetadata: {name: alice}\nspec:\n  resources: [{kind: All, zone: default, workspace: default, role: user}]\n---\n\
         apiVersion: v1\nkind: User\nmetadata: {name: prometheus}\nspec:\n  resources: [{kind: Zone, zone: All, workspace: All, role: monitoring}]\n",
    )
    .unwrap();
    dora.run(&["apply", "-f", path(&users)]);
    for (user, status) in [("alice", 403), ("prometheus", 200)] {
        let token = dora.run(&["token", "create", "--user", user, "--expires-in", "1h"]);
        assert_eq!(get(Some(token.trim()))["status"], status, "{user}");
    }
    let mut plain = TcpStream::connect(&metrics_address).unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: dora\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("dora_api_requests_total"), "{answer}");
}

/// A TLS 1.2/1.3 ClientHello whose server_name extension names `host`.
fn client_hello_naming(host: &str) -> Vec<u8> {
    let u16_of = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
    let mut entry = vec![0];
    entry.extend(u16_of(host.len()));
    entry.extend(host.as_bytes());
    let mut server_name = u16_of(entry.len()).to_vec();
    server_name.extend(entry);
    let mut extensions = vec![0, 0];
    extensions.extend(u16_of(server_name.len()));
    extensions.extend(server_name);
    let mut hello = vec![3, 3];
    hello.extend([7; 32]);
    hello.push(0);
    hello.extend([0, 2, 0x13, 0x01, 1, 0]);
    hello.extend(u16_of(extensions.len()));
    hello.extend(extensions);
    let mut handshake = vec![1];
    handshake.extend(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![22, 3, 1];
    record.extend(u16_of(handshake.len()));
    record.extend(handshake);
    record
}

#[test]
fn a_client_naming_the_server_by_ip_address_logs_nothing() {
    let home = home();
    let log = home.path().join("up.log");
    let dora = Dora::up_with(
        home.path(),
        &["--no-node"],
        "warn",
        std::fs::File::create(&log).unwrap().into(),
    );
    let port = api_port(&dora);
    for _ in 0..3 {
        let mut socket = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        socket.write_all(&client_hello_naming("127.0.0.1")).unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
    }
    // The server still serves, and has logged nothing of those clients.
    lasts_at_most(&api_certificate(&dora, "127.0.0.1"), THIRTY_DAYS);
    dora.stop();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("SNI"), "{logged}");
}
