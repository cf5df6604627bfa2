//! `dora token create`.

use reqwest::Method;
use serde_json::json;

use crate::args::{Global, TokenCommand};
use crate::client::Client;

pub async fn run(global: &Global, command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create {
        user,
        expires_in,
        node,
        join,
    } = command;
    let client = Client::new(global)?;
    let body = match &node {
        Some(node) => json!({"node": node, "expiresIn": expires_in, "zone": global.zone}),
        None if join => json!({"join": true, "expiresIn": expires_in, "zone": global.zone}),
        None => {
            json!({"user": user, "expiresIn": expires_in, "zone": global.zone, "workspace": global.workspace})
        }
    };
    let issued = client
        .json(Method::POST, "/v1/tokens", &[], Some(body.to_string()))
        .await?;
    let expires = issued["expires"]
        .as_i64()
        .map(|secs| dora_apiserver::timestamp(secs * 1000))
        .unwrap_or_default();
    eprintln!(
        "Token for {} (id {}), valid until {expires}:",
        issued["user"].as_str().unwrap_or_default(),
        issued["id"].as_str().unwrap_or_default()
    );
    println!("{}", issued["token"].as_str().unwrap_or_default());
    Ok(())
}
