//! `dora ban list` and `dora ban lift ADDRESS`: the bans of the API server's IP filter.

use reqwest::Method;
use serde_json::Value;

use crate::args::{BanCommand, Format, Global};
use crate::client::Client;
use crate::output;

pub async fn run(global: &Global, command: BanCommand) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    match command {
        BanCommand::List { output } => {
            let bans = client.json(Method::GET, "/v1/bans", &[], None).await?;
            let empty = bans["items"].as_array().is_none_or(Vec::is_empty);
            if empty && matches!(output, Format::Table | Format::Wide) {
                eprintln!("No address is banned on this API server.");
                return Ok(());
            }
            output::print_items(output, &bans, &["ADDRESS", "SINCE", "UNTIL", "LEFT"], row)
        }
        BanCommand::Lift { address } => {
            client
                .json(Method::DELETE, &format!("/v1/bans/{address}"), &[], None)
                .await?;
            println!("Lifted the ban of {address}.");
            Ok(())
        }
    }
}

fn row(item: &Value) -> Vec<String> {
    let text = |key: &str| item[key].as_str().unwrap_or("<unknown>").to_string();
    vec![
        text("address"),
        text("since"),
        text("until"),
        format!("{}s", item["remaining"].as_u64().unwrap_or(0)),
    ]
}
