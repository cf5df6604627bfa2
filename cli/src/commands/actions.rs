//! `dora pause|resume wk NAME` and `dora drain node NAME`.

use std::process::ExitCode;

use dora_crds::Kind;
use reqwest::Method;

use super::{built_in_kind, label};
use crate::args::{ActionArgs, Global};
use crate::client::Client;

pub async fn run(global: &Global, action: &str, args: ActionArgs) -> anyhow::Result<ExitCode> {
    let kind = built_in_kind(&args.kind)?;
    let expected = match action {
        "pause" | "resume" => Kind::Workload,
        _ => Kind::Node,
    };
    if kind != expected {
        anyhow::bail!(
            "`dora {action}` acts on a {}, not a {kind}; e.g. dora {action} {} NAME",
            expected.name().to_ascii_lowercase(),
            expected.name().to_ascii_lowercase()
        );
    }
    let mut client = Client::new(global)?;
    let (_, path) = client.object_path(kind, &args.name).await?;
    let path = format!("{path}/{action}");
    client.json(Method::POST, &path, &[], None).await?;
    println!("{} {action} requested", label(kind.name(), &args.name));
    Ok(ExitCode::SUCCESS)
}
