//! `dora delete -f FILE` and `dora delete KIND NAME`.

use std::process::ExitCode;

use anyhow::bail;
use dora_apiserver::collection_path;
use dora_crds::{Kind, parse_documents};
use reqwest::Method;

use super::{kind, label};
use crate::args::{DeleteArgs, Global};
use crate::client::Client;
use crate::manifest;

async fn delete_one(
    client: &mut Client,
    kind: Kind,
    zone: Option<&str>,
    workspace: Option<&str>,
    name: &str,
) -> anyhow::Result<()> {
    let place = client.place_with(kind, zone, workspace, false).await?;
    let path = format!(
        "{}/{name}",
        collection_path(kind, &place.zone, place.workspace.as_deref())
    );
    client.json(Method::DELETE, &path, &[], None).await?;
    println!("{} deleted", label(kind.name(), name));
    Ok(())
}

pub async fn run(global: &Global, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(global)?;
    if args.files.is_empty() {
        let (Some(kind_text), Some(name)) = (&args.kind, &args.name) else {
            bail!("name what to delete: `dora delete KIND NAME` or `dora delete -f FILE`");
        };
        delete_one(&mut client, kind(kind_text)?, None, None, name).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for manifest in manifest::read_all(&args.files, &args.env)? {
        for document in parse_documents(&manifest.text) {
            let result = match document {
                Ok(doc) => {
                    let meta = &doc.metadata;
                    delete_one(
                        &mut client,
                        doc.kind,
                        meta.zone.as_deref(),
                        meta.workspace.as_deref(),
                        &meta.name,
                    )
                    .await
                }
                Err(e) => Err(anyhow::anyhow!("{e}")),
            };
            if let Err(e) = result {
                eprintln!("error: {}: {e:#}", manifest.source);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
