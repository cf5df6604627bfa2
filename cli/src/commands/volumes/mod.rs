//! `dora ls`, `dora upload`, `dora download` and `dora sync`: files and folders of a volume,
//! served by a node of the zone through the API.

mod remote;
mod sync;
mod tree;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use crate::args::{DownloadArgs, Global, LsArgs, UploadArgs};
use crate::output;
pub(crate) use remote::Remote;
pub use sync::run as sync;
pub(crate) use tree::{Totals, by_path};

pub async fn ls(global: &Global, args: LsArgs) -> anyhow::Result<()> {
    let volume = Remote::open(global, None, &args.volume).await?;
    let items = volume.list(&args.path, args.recursive).await?;
    let listing = json!({"path": args.path, "items": items.iter().map(|e| json!({
        "name": e.name, "kind": e.kind, "size": e.size, "modified": e.modified,
    })).collect::<Vec<_>>()});
    let name = |item: &serde_json::Value| {
        let name = item["name"].as_str().unwrap_or_default();
        let folder = if item["kind"] == "dir" { "/" } else { "" };
        format!("{name}{folder}")
    };
    if args.long {
        output::print_items(
            args.output,
            &listing,
            &["TYPE", "SIZE", "MODIFIED", "NAME"],
            |item| {
                vec![
                    item["kind"].as_str().unwrap_or_default().to_string(),
                    item["size"].as_u64().unwrap_or_default().to_string(),
                    dora_apiserver::timestamp(item["modified"].as_i64().unwrap_or(0)),
                    name(item),
                ]
            },
        )
    } else {
        output::print_items(args.output, &listing, &["NAME"], |item| vec![name(item)])
    }
}

/// Where in the volume an upload of `source` goes.
fn upload_target(source: &Path, path: &str) -> anyhow::Result<String> {
    let absolute = std::path::absolute(source)?;
    let name = absolute
        .components()
        .next_back()
        .and_then(|n| n.as_os_str().to_str())
        .filter(|n| *n != "/")
        .context("the source names no file or folder")?;
    Ok(if path.is_empty() {
        name.to_string()
    } else if path.ends_with('/') {
        format!("{path}{name}")
    } else {
        path.to_string()
    })
}

pub async fn upload(global: &Global, args: UploadArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let metadata = std::fs::metadata(&args.source)
        .with_context(|| format!("cannot open {}", args.source.display()))?;
    let target = upload_target(&args.source, &args.path)?;
    remote::check(&target)?;
    let volume = Remote::open(global, None, &args.volume).await?;
    let (walk, remote) = if metadata.is_dir() {
        let walk = tree::walk(&args.source, tree::Filter::Nothing)?;
        (walk, by_path(volume.tree(&target).await?))
    } else {
        let file = tree::LocalFile {
            path: args.source.clone(),
            relative: String::new(),
            size: metadata.len(),
            modified: metadata.modified().map(remote::millis).unwrap_or(0),
        };
        let there = volume.stat(&target).await?.map(|e| (String::new(), e));
        let walk = tree::Walk {
            files: vec![file],
            ..Default::default()
        };
        (walk, there.into_iter().collect())
    };
    let totals = tree::upload(
        &volume,
        walk.files,
        &remote,
        &target,
        args.restart,
        args.jobs,
    )
    .await?;
    eprintln!(
        "{} to {}:{target}",
        totals.line("uploaded", started),
        args.volume
    );
    if walk.symlinks > 0 {
        eprintln!("skipped {} symlinks (not followed)", walk.symlinks);
    }
    Ok(())
}

/// The local file or folder a download of `path` writes: into `destination` when it is a
/// folder, as `destination` otherwise.
fn download_target(volume: &str, path: &str, destination: &Path) -> PathBuf {
    let name = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or(volume);
    if destination.is_dir() {
        destination.join(name)
    } else {
        destination.to_path_buf()
    }
}

pub async fn download(global: &Global, args: DownloadArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let volume = Remote::open(global, None, &args.volume).await?;
    let Some(entry) = volume.stat(&args.path).await? else {
        bail!(
            "{:?} does not exist in volume {}; `dora ls {} -R` lists what does",
            args.path,
            args.volume,
            args.volume
        );
    };
    let target = download_target(&args.volume, &args.path, &args.destination);
    let files = match entry.kind.as_str() {
        "dir" => {
            std::fs::create_dir_all(&target)
                .with_context(|| format!("cannot make {}", target.display()))?;
            let tree = volume.list(&args.path, true).await?;
            tree::fetches(&args.path, tree, &target)?
        }
        "file" => vec![tree::Fetch {
            path: args.path.clone(),
            entry,
            local: target.clone(),
        }],
        other => bail!("{} is a {other}, not a file or folder", args.path),
    };
    let totals = tree::download(&volume, files, &args.path, args.jobs).await?;
    eprintln!(
        "{} to {}",
        totals.line("downloaded", started),
        target.display()
    );
    Ok(())
}
