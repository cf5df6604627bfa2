//! `dora token create`, `list` and `revoke`.

use reqwest::Method;
use serde_json::json;

use crate::args::{Global, TokenCommand};
use crate::client::Client;

pub async fn run(global: &Global, command: TokenCommand) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    match command {
        TokenCommand::Create {
            user,
            expires_in,
            node,
            join,
        } => {
            let body = match &node {
                Some(node) => {
                    json!({"node": node, "expiresIn": expires_in, "zone": global.zone})
                }
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
        }
        TokenCommand::List { user, output } => {
            let query: Vec<(&str, String)> = user.map(|user| ("user", user)).into_iter().collect();
            let list = client.json(Method::GET, "/v1/tokens", &query, None).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            super::get::print_items(dora_crds::Kind::Token, &items, output, false)?;
        }
        TokenCommand::Revoke { ids } => {
            for id in ids {
                let path = dora_crds::Kind::Token.object_path("", None, &id);
                let record = client.json(Method::DELETE, &path, &[], None).await?;
                println!(
                    "token {id} of {} revoked",
                    record["spec"]["user"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
