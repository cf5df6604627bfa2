//! `dora rollback`.

use reqwest::Method;

use super::{kind, label};
use crate::args::{Global, RollbackArgs};
use crate::client::Client;

pub async fn run(global: &Global, args: RollbackArgs) -> anyhow::Result<()> {
    let kind = kind(global, &args.kind).await?;
    let mut client = Client::new(global)?;
    let (_, path) = client.object_path(kind, &args.name).await?;
    let query: Vec<(&str, String)> = args
        .to
        .map(|generation| ("generation", generation.to_string()))
        .into_iter()
        .collect();
    let answer = client
        .json(Method::POST, &format!("{path}/rollback"), &query, None)
        .await?;
    println!(
        "{} {} (generation {})",
        label(kind.name(), &args.name),
        answer["outcome"].as_str().unwrap_or_default(),
        answer["object"]["metadata"]["generation"]
    );
    Ok(())
}
