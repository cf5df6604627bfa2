//! A browser for the web console's tests and figures: Debian's chromium, headless, driven over
//! WebDriver by chromedriver on a loopback port, and what a test does with a page.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Whether chromium and chromedriver are installed; under CI=true they must be.
pub fn browser_ready() -> bool {
    let found = ["chromium", "chromedriver"].iter().all(|program| {
        Process::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but chromium or chromedriver is missing: apt-get install chromium chromium-driver"
        );
        eprintln!("skipped: no chromium (apt-get install chromium chromium-driver)");
    }
    found
}

/// chromedriver on a free loopback port, stopped when dropped.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Driver {
    pub fn start(log: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Process::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /session/{id}/se/log` for the browser's console: chromedriver's log command, which
/// returns (and forgets) what the page logged.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (
            reqwest::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// The page's console errors since the last call.
pub async fn console_errors(browser: &Client) -> Vec<String> {
    let entries = browser.issue_cmd(BrowserLog).await.unwrap();
    entries
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["level"] == "SEVERE")
        .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

pub async fn open_browser(driver: &Driver) -> Client {
    let mut capabilities = Capabilities::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900", "--enable-precise-memory-info"]}),
    );
    // The test cluster's CA is its own; the page is still served over HTTPS.
    capabilities.insert("acceptInsecureCerts".into(), json!(true));
    capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
}

pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Waits (30 s at most) until the element `css` holds `text`; returns it.
pub async fn wait_text(browser: &Client, css: &str, text: &str) -> Element {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match browser.find(Locator::Css(css)).await {
            Ok(element) => {
                let shown = element.text().await.unwrap_or_default();
                if shown.contains(text) {
                    return element;
                }
                shown
            }
            Err(_) => "(not in the page)".into(),
        };
        if Instant::now() >= deadline {
            screenshot(browser, "failed").await;
            panic!("{css} never showed {text:?}; it shows {last:?} (see failed.png)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (30 s at most) until `script` returns true in the page.
pub async fn wait_until(browser: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if browser.execute(script, vec![]).await.unwrap() == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Types `token` into the login form and submits it.
pub async fn log_in(browser: &Client, token: &str) {
    let field = browser
        .wait()
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    click(browser, "#login").await;
}
