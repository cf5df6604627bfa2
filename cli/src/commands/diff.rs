//! `dora diff`: two generations of a spec, or what an apply of files would change, as a
//! unified diff of their YAML.

use std::process::ExitCode;

use anyhow::bail;
use reqwest::Method;
use serde_json::Value;
use similar::TextDiff;

use super::apply::{self, Mode};
use super::{kind, label};
use crate::args::{ApplyArgs, DiffArgs, Global};
use crate::client::Client;
use crate::output;

pub async fn run(global: &Global, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let (Some(kind_text), Some(name), Some(from)) = (&args.kind, &args.name, args.from) else {
        let files = ApplyArgs {
            files: args.files,
            env: args.env,
            dry_run: true,
        };
        return apply::apply(global, &files, Mode::Diff).await;
    };
    let kind = kind(global, kind_text).await?;
    let mut client = Client::new(global)?;
    let (_, path) = client.object_path(kind, name).await?;
    let list = client
        .json(Method::GET, &format!("{path}/versions"), &[], None)
        .await?;
    let versions = list["items"].as_array().cloned().unwrap_or_default();
    let find = |flag: &str, generation: Option<u64>| -> anyhow::Result<&Value> {
        let found = versions.iter().find(|v| match generation {
            Some(generation) => v["generation"].as_u64() == Some(generation),
            None => v["current"].as_bool() == Some(true),
        });
        match found {
            Some(version) => Ok(version),
            None => {
                let known: Vec<String> = versions
                    .iter()
                    .map(|v| v["generation"].to_string())
                    .collect();
                bail!(
                    "--{flag}: {} has no generation {}; it has {} (`dora versions` lists them)",
                    label(kind.name(), name),
                    generation.map_or("current".into(), |g| g.to_string()),
                    known.join(", ")
                )
            }
        }
    };
    let old = find("from", Some(from))?;
    let new = find("to", args.to)?;
    let title = |version: &Value| {
        let current = if version["current"].as_bool() == Some(true) {
            " (current)"
        } else {
            ""
        };
        format!(
            "{} generation {}{current}",
            label(kind.name(), name),
            version["generation"]
        )
    };
    let text = specs(&old["spec"], &title(old), &new["spec"], &title(new))?;
    print!("{text}");
    Ok(if text.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The unified diff of two specs as YAML, headed by their titles; empty when they are equal.
/// A `null` spec (an object not created yet) is no text at all.
pub fn specs(old: &Value, old_title: &str, new: &Value, new_title: &str) -> anyhow::Result<String> {
    let text = |spec: &Value| -> anyhow::Result<String> {
        Ok(if spec.is_null() {
            String::new()
        } else {
            output::yaml(spec)?
        })
    };
    let (old, new) = (text(old)?, text(new)?);
    if old == new {
        return Ok(String::new());
    }
    Ok(TextDiff::from_lines(&old, &new)
        .unified_diff()
        .header(old_title, new_title)
        .to_string())
}
