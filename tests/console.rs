//! The web console in a real browser: Debian's headless chromium, driven over WebDriver
//! (chromedriver), against `dora up` with a node agent. What a person does: log in, apply a
//! workload from the editor and watch it start, read its logs, use its shell, pause it; a user
//! of another workspace sees none of it; a wrong token is refused. Screenshots of the main
//! views are saved under target/console-screenshots/. A second zone, `lab`, has its own
//! hollow node, scheduler and credit system on the same store, so that credits show per zone. Needs `chromium` and `chromedriver`
//! (`apt-get install chromium chromium-driver`); under CI=true their absence fails the test.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use support::Dora;
use support::browser::{
    Driver, browser_ready, click, console_errors, log_in, open_browser, screenshot, wait_text,
    wait_until,
};

const NODE: &str = "n1";

const WORKLOAD: &str = "apiVersion: v1
kind: Workload
metadata: {name: hello}
spec:
  replica: {count: 1}
  driver: Process
  config:
    cmd: [sh, -c, 'echo hello from the console; exec sleep 600']
    restartPolicy: Never
  selectors:
    cpu: {product_name: All, count: 100m}
";

/// A workload of zone `lab`, on its hollow node's GPU.
const TRAIN: &str = "apiVersion: v1
kind: Workload
metadata: {name: train, zone: lab, workspace: a}
spec:
  replica: {count: 1}
  driver: Process
  config: {cmd: [sleep, '600']}
  selectors:
    gpu: {product_name: A100, count: 1}
";

const PEOPLE: &str = "apiVersion: v1
kind: Zone
metadata: {name: lab}
---
apiVersion: v1
kind: Resourcecredit
metadata: {name: a100, zone: lab}
spec:
  product_name: A100
  credit: {per: {hour: 3600}}
---
apiVersion: v1
kind: Workspace
metadata: {name: a}
---
apiVersion: v1
kind: Workspace
metadata: {name: b}
---
apiVersion: v1
kind: User
metadata: {name: ana}
spec:
  default: {zone: default, workspace: a}
  resources:
    - {kind: All, zone: default, workspace: a, role: user}
    - {kind: All, zone: lab, workspace: a, role: user}
  credits: [{zone: default, weekly: 50}, {zone: lab, weekly: 20}]
---
apiVersion: v1
kind: User
metadata: {name: ben}
spec:
  default: {zone: default, workspace: b}
  resources: [{kind: All, zone: default, workspace: b, role: user}]
";

/// The status of `GET path` made by the page itself, with its session cookie.
async fn page_get(browser: &Client, path: &str) -> u64 {
    let script = "const [path, done] = arguments; \
                  fetch(path).then((r) => done(r.status), () => done(0));";
    browser
        .execute_async(script, vec![json!(path)])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

fn up(home: &Path) -> Dora {
    let log = std::fs::File::create(home.join("up.log")).unwrap();
    Dora::up_with(
        home,
        &[
            "--node-name",
            NODE,
            "--heartbeat",
            "1s",
            "--credit-slice",
            "1s",
        ],
        "warn",
        Stdio::from(log),
    )
}

/// A component of zone `lab` on the store of `dora up`, killed when the test ends.
struct Lab(Child);

impl Lab {
    fn start(home: &Path, args: &[&str]) -> Lab {
        let log = std::fs::File::create(home.join(format!("lab-{}.log", args[0]))).unwrap();
        let store = format!("sqlite:{}", home.join("data/dora.db").display());
        let child = Command::new(support::DORA)
            .args(args)
            .args(["--zone", "lab", "--store", &store])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Lab(child)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prices the CPU of the node, so that a running container uses credits.
fn price_the_cpu(dora: &Dora, home: &Path) {
    let cpus = support::wait_for(dora, &["get", "cpu", "-o", "json"], "the node's CPU", |l| {
        l["items"][0]["status"]["productName"].is_string()
    });
    let product = cpus["items"][0]["status"]["productName"].as_str().unwrap();
    let price = home.join("price.yaml");
    std::fs::write(
        &price,
        format!(
            "apiVersion: v1\nkind: Resourcecredit\nmetadata: {{name: cpu}}\nspec:\n  product_name: {}\n  credit: {{per: {{hour: 3600}}}}\n",
            json!(product)
        ),
    )
    .unwrap();
    dora.run(&["apply", "-f", price.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_runs_a_workload_from_the_console() {
    if !browser_ready() {
        return;
    }
    let home = support::home();
    let dora = up(home.path());
    let people = home.path().join("people.yaml");
    std::fs::write(&people, PEOPLE).unwrap();
    dora.run(&["apply", "-f", people.to_str().unwrap()]);
    price_the_cpu(&dora, home.path());
    let _lab = [
        Lab::start(
            home.path(),
            &["sim", "--sim-nodes", "1", "--sim-gpus", "1xA100"],
        ),
        Lab::start(home.path(), &["scheduler"]),
        Lab::start(home.path(), &["creditsys", "--credit-slice", "1s"]),
    ];
    let token = |user: &str| {
        dora.run(&["token", "create", "--user", user, "--expires-in", "1h"])
            .trim()
            .to_string()
    };
    let (ana, ben) = (token("ana"), token("ben"));
    let url = support::url_of(&dora);
    let driver = Driver::start(&home.path().join("chromedriver.log"));
    let browser = open_browser(&driver).await;

    // `/` leads to the console, which asks for a token and refuses a wrong one.
    browser.goto(&url).await.unwrap();
    log_in(&browser, "not-a-token").await;
    wait_text(
        &browser,
        "#login-message",
        "Refused: this token is not valid",
    )
    .await;
    screenshot(&browser, "login-refused").await;
    let nav = browser.find(Locator::Css("#nav")).await.unwrap();
    assert!(
        !nav.is_displayed().await.unwrap(),
        "no views before logging in"
    );
    let refused = console_errors(&browser).await;
    assert!(
        refused.iter().all(|e| e.contains("401")),
        "only the refused login is an error: {refused:?}"
    );

    log_in(&browser, &ana).await;
    wait_text(&browser, "#user", "ana · default/a").await;

    // Apply from the editor; each document's result is shown.
    browser.goto(&format!("{url}/ui/#/apply")).await.unwrap();
    let editor = browser
        .wait()
        .for_element(Locator::Css("#manifest"))
        .await
        .unwrap();
    // A refused document: its field is named and its line selected and marked in the editor
    // (and the 422 is the page's one console error).
    editor
        .send_keys(&format!(
            "{WORKLOAD}  image: {{image: 'Busybox:'}}\n---\napiVersion: v1\nkind: Workspace\nmetadata: {{name: a}}\n"
        ))
        .await
        .unwrap();
    click(&browser, "#apply").await;
    wait_text(&browser, "#results .field", "spec.image.image").await;
    let line = "  image: {image: 'Busybox:'}";
    let marked = browser
        .execute(
            "const e = document.getElementById('manifest'); \
             const mark = document.querySelector('.editor .mark'); \
             const line = e.value.split('\\n').indexOf(arguments[0]); \
             const box = mark.getBoundingClientRect(), area = e.getBoundingClientRect(); \
             return [e.value.slice(e.selectionStart, e.selectionEnd), document.activeElement === e, \
               Number(mark.dataset.line) === line, box.top >= area.top && box.bottom <= area.bottom];",
            vec![json!(line)],
        )
        .await
        .unwrap();
    assert_eq!(
        marked,
        json!([line, true, true, true]),
        "the field's line is selected and marked"
    );
    screenshot(&browser, "apply-refused").await;
    let refused = console_errors(&browser).await;
    assert!(
        refused.len() == 1 && refused[0].contains("422"),
        "{refused:?}"
    );
    editor.clear().await.unwrap();
    editor
        .send_keys(&format!("{WORKLOAD}---\n{TRAIN}"))
        .await
        .unwrap();
    click(&browser, "#apply").await;
    wait_text(&browser, "#results", "Workload hello: created").await;
    wait_text(&browser, "#results", "Workload train: created (in lab/a)").await;
    screenshot(&browser, "apply").await;

    // The workload's page turns Running by itself: the same page, never reloaded.
    click(&browser, "#results a").await;
    browser
        .execute("window.sameDocument = true;", vec![])
        .await
        .unwrap();
    wait_text(&browser, ".summary", "Running").await;
    wait_text(&browser, ".vscroll", "hello.0").await;
    wait_until(
        &browser,
        "the container Running in the table",
        "return [...document.querySelectorAll('.vscroll .vrow')].some((r) => r.textContent.includes('hello.0') && r.textContent.includes('Running'));",
    )
    .await;
    assert_eq!(
        browser
            .execute("return window.sameDocument === true;", vec![])
            .await
            .unwrap(),
        Value::Bool(true),
        "the page was reloaded"
    );
    screenshot(&browser, "workload").await;

    // Its logs, followed.
    click(&browser, "a[href='#/containers/hello.0/logs']").await;
    wait_text(&browser, "#logs", "hello from the console").await;
    screenshot(&browser, "logs").await;

    // A shell: a command's output comes back to the terminal.
    browser
        .goto(&format!("{url}/ui/#/containers/hello.0/shell"))
        .await
        .unwrap();
    wait_text(&browser, "main [role=status]", "Connected").await;
    let keys = browser
        .find(Locator::Css(".xterm-helper-textarea"))
        .await
        .unwrap();
    keys.send_keys("echo console-$((6*7))\n").await.unwrap();
    wait_text(&browser, ".xterm-rows", "console-42").await;
    screenshot(&browser, "shell").await;

    // The workloads, the nodes and their GPUs, events and credits; the list on a phone.
    browser
        .goto(&format!("{url}/ui/#/workloads"))
        .await
        .unwrap();
    wait_text(&browser, ".vscroll", "hello").await;
    screenshot(&browser, "workloads").await;
    for (view, shows) in [("nodes", NODE), ("events", "hello")] {
        browser.goto(&format!("{url}/ui/#/{view}")).await.unwrap();
        wait_text(&browser, "main", shows).await;
        screenshot(&browser, view).await;
    }
    // Ana's use this week in each zone against her limit there, live, and the next reset.
    browser.goto(&format!("{url}/ui/#/credits")).await.unwrap();
    wait_until(
        &browser,
        "ana's use in zones default and lab",
        "const bar = (zone) => document.querySelector(`section[data-zone=${zone}] .credit[data-user=ana]`); \
         return [['default', '50'], ['lab', '20']].every(([zone, limit]) => { const b = bar(zone); \
           return b && Number(b.dataset.used) > 0 && b.dataset.limit === limit \
             && b.querySelector('.limit') && b.querySelector('.fill').offsetWidth > 0; });",
    )
    .await;
    wait_text(&browser, "section[data-zone=lab] h2", "next reset").await;
    screenshot(&browser, "credits").await;

    // Zone lab, where ana may work too: the map of its GPUs shows the one her workload holds.
    browser.goto(&format!("{url}/ui/#/nodes")).await.unwrap();
    click(&browser, "#place option[value='1']").await;
    wait_text(&browser, "#user", "ana · lab/a").await;
    wait_text(&browser, "h1", "Nodes of zone lab").await;
    wait_text(&browser, ".gpumap .gpu.booked", "A100").await;
    screenshot(&browser, "gpus").await;
    click(&browser, "#place option[value='0']").await;
    wait_text(&browser, "#user", "ana · default/a").await;
    browser.set_window_size(390, 844).await.unwrap();
    browser
        .goto(&format!("{url}/ui/#/workloads"))
        .await
        .unwrap();
    wait_text(&browser, ".vscroll", "hello").await;
    // Its one row shows whole, above the horizontal scroll bar a narrow screen gives it.
    wait_until(
        &browser,
        "the phone's workload list to show its row without scrolling",
        "const s = document.querySelector('.vscroll'); return s.scrollHeight <= s.clientHeight;",
    )
    .await;
    screenshot(&browser, "workloads-phone").await;
    browser.set_window_size(1280, 900).await.unwrap();

    // Pausing it takes its containers away.
    browser
        .goto(&format!("{url}/ui/#/workloads/hello"))
        .await
        .unwrap();
    wait_text(&browser, ".vscroll", "hello.0").await;
    click(&browser, "main > .actions button[data-action=pause]").await;
    wait_text(&browser, ".summary", "Paused").await;
    wait_until(
        &browser,
        "Resume offered in place of Pause",
        "const [pause, resume] = document.querySelectorAll('main > .actions button'); \
         return pause.disabled && !resume.disabled;",
    )
    .await;
    wait_until(
        &browser,
        "the container to go",
        "return !document.querySelector('.vscroll').textContent.includes('hello.0');",
    )
    .await;
    screenshot(&browser, "paused").await;

    // A second version from the editor; the history shows what changed and rolls it back.
    browser.goto(&format!("{url}/ui/#/apply")).await.unwrap();
    let editor = browser
        .wait()
        .for_element(Locator::Css("#manifest"))
        .await
        .unwrap();
    editor
        .send_keys(&WORKLOAD.replace("hello from the console", "second version"))
        .await
        .unwrap();
    click(&browser, "#apply").await;
    wait_text(&browser, "#results", "Workload hello: configured").await;
    browser
        .goto(&format!("{url}/ui/#/workloads/hello"))
        .await
        .unwrap();
    wait_text(&browser, "#version", "Generation 2 (current)").await;
    click(&browser, "#version option[value='1']").await;
    wait_text(&browser, "#diff .removed", "hello from the console").await;
    wait_text(&browser, "#diff .added", "second version").await;
    screenshot(&browser, "history").await;
    click(&browser, "#rollback").await;
    wait_text(&browser, "#version", "Generation 3 (current)").await;
    wait_text(&browser, ".summary", "echo hello from the console").await;
    let errors = console_errors(&browser).await;
    assert!(errors.is_empty(), "the console logged errors: {errors:?}");

    // Ben, of workspace B, sees nothing of A, not even by asking for it.
    click(&browser, "#logout").await;
    wait_text(&browser, "#login-message", "logged out").await;
    log_in(&browser, &ben).await;
    wait_text(&browser, "#user", "ben · default/b").await;
    wait_text(&browser, ".summary", "not found").await;
    browser
        .goto(&format!("{url}/ui/#/workloads"))
        .await
        .unwrap();
    wait_text(&browser, "h1", "Workloads (0)").await;
    // Only his own account, and only in the zone he is bound in.
    browser.goto(&format!("{url}/ui/#/credits")).await.unwrap();
    wait_text(&browser, "section[data-zone=default]", "No credit accounts").await;
    assert_eq!(
        browser
            .execute(
                "return document.querySelectorAll('#credits section').length;",
                vec![]
            )
            .await
            .unwrap(),
        json!(1),
        "ben may read no credits of zone lab"
    );
    assert_eq!(
        page_get(&browser, "/v1/zones/default/workspaces/a/workloads").await,
        403
    );
    let ended = browser
        .execute("return document.cookie;", vec![])
        .await
        .unwrap();
    assert_eq!(ended, json!(""), "the session cookie is HttpOnly");

    // `dora console` logs its user in through a one-time link.
    let link = dora.run(&["console", "--no-open"]);
    let link = link.trim();
    assert!(link.contains("/ui/#login="), "{link}");
    click(&browser, "#logout").await;
    wait_text(&browser, "#login-message", "logged out").await;
    browser.goto(link).await.unwrap();
    wait_text(&browser, "#user", "admin").await;

    // A kind defined at run time, with the columns its Definition declares (its objects are
    // the administrator's to see: the bootstrap role `user` grants nothing on Notebook).
    let definition = support::repo().join("examples/definition.yaml");
    dora.run(&["apply", "-f", definition.to_str().unwrap()]);
    browser.goto(&format!("{url}/ui/#/kinds")).await.unwrap();
    click(&browser, "a[href='#/kinds/notebooks']").await;
    wait_text(&browser, ".vhead", "IMAGE").await;
    wait_text(&browser, ".vbody", "jupyter/base-notebook").await;
    screenshot(&browser, "notebooks").await;

    click(&browser, "#logout").await;
    wait_text(&browser, "#login-message", "logged out").await;
    browser.goto("about:blank").await.unwrap();
    browser.goto(link).await.unwrap();
    wait_text(&browser, "#login-message", "used already").await;

    browser.close().await.unwrap();
    dora.stop();
}
