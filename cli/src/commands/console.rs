//! `dora console`: a link that logs the CLI's user in to the web console, opened in a browser
//! where one can be.

use std::process::{Command, Stdio};

use reqwest::Method;

use crate::args::{ConsoleArgs, Global};
use crate::client::Client;

pub async fn run(global: &Global, args: ConsoleArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let answer = client
        .json(Method::POST, "/v1/console/codes", &[], None)
        .await?;
    let path = answer["path"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the API server sent no console link: {answer}"))?;
    let url = format!("{}{path}", client.url());
    // The code is in the fragment, which browsers never send: no server or proxy logs it.
    println!("{url}");
    eprintln!(
        "The link logs you in once, within {} s.",
        answer["expiresIn"].as_u64().unwrap_or(60)
    );
    if !args.no_open {
        open(&url);
    }
    Ok(())
}

/// Opens `url` with xdg-open when there is one; a machine without it (or without a display)
/// still has the printed link.
fn open(url: &str) {
    let opened = Command::new("xdg-open")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if opened.is_err() {
        eprintln!("Open it in a browser (no xdg-open here).");
    }
}
