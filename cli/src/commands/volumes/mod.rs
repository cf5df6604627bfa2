//! `dora ls`, `dora upload` and `dora download`: files of a volume, served by a node of the
//! zone through the API.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dora_crds::Kind;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::args::{DownloadArgs, Global, LsArgs, UploadArgs};
use crate::client::Client;
use crate::output;
use dora_client::{failure, idle_deadline};

/// `/v1/.../volumes/NAME/files/PATH`, each segment percent-encoded.
async fn files_path(client: &mut Client, volume: &str, path: &str) -> anyhow::Result<String> {
    if path.split('/').any(|p| p == "..") {
        // URLs fold `..` away before they leave; the node refuses it anyway.
        bail!("{path:?} leaves the volume; name a path inside it");
    }
    let place = client.place(Kind::Volume, false).await?;
    let encoded: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        })
        .collect();
    Ok(format!(
        "/v1/zones/{}/workspaces/{}/volumes/{volume}/files/{}",
        place.zone,
        place.workspace.unwrap_or_default(),
        encoded.join("/")
    ))
}

fn progress(size: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(size).with_message(message.to_string());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

pub async fn ls(global: &Global, args: LsArgs) -> anyhow::Result<()> {
    let mut client = Client::new(global)?;
    let path = files_path(&mut client, &args.volume, &args.path).await?;
    let answer = client.json(Method::GET, &path, &[], None).await?;
    if answer.get("items").is_none() {
        bail!(
            "{} is a file, not a folder; `dora download {} {}` fetches it",
            args.path,
            args.volume,
            args.path
        );
    }
    output::print_items(
        args.output,
        &answer,
        &["NAME", "SIZE", "MODIFIED"],
        |item| {
            let name = item["name"].as_str().unwrap_or_default();
            let folder = if item["kind"] == "dir" { "/" } else { "" };
            vec![
                format!("{name}{folder}"),
                item["size"].as_u64().unwrap_or_default().to_string(),
                dora_apiserver::timestamp(item["modified"].as_i64().unwrap_or(0)),
            ]
        },
    )
}

/// Where in the volume an upload of `source` goes.
fn upload_target(source: &Path, path: &str) -> anyhow::Result<String> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .context("the source names no file")?;
    Ok(if path.is_empty() {
        name.to_string()
    } else if path.ends_with('/') {
        format!("{path}{name}")
    } else {
        path.to_string()
    })
}

pub async fn upload(global: &Global, args: UploadArgs) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(&args.source)
        .await
        .with_context(|| format!("cannot open {}", args.source.display()))?;
    let size = file.metadata().await?.len();
    let target = upload_target(&args.source, &args.path)?;
    let mut client = Client::new(global)?;
    let path = files_path(&mut client, &args.volume, &target).await?;
    let offset = if args.restart {
        0
    } else {
        let arrived = client
            .json(Method::GET, &path, &[("upload", "true".into())], None)
            .await?;
        arrived["uploaded"].as_u64().unwrap_or(0).min(size)
    };
    if offset > 0 {
        eprintln!("resuming at byte {offset} of {size}");
    }
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let bar = progress(
        size,
        &format!("{} → {}:{target}", args.source.display(), args.volume),
    );
    bar.set_position(offset);
    let counter = bar.clone();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.inc(chunk.len() as u64);
            }
        });
    let request = client
        .request(Method::PUT, &path)
        .query(&[("offset", offset.to_string()), ("size", size.to_string())])
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream));
    let response = client.send_streaming(request).await?;
    if !response.status().is_success() {
        bar.abandon();
        return Err(failure(response).await)
            .context("the upload stopped; run the same command again to resume");
    }
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if answer["complete"] != true {
        bar.abandon();
        bail!(
            "the upload stopped at byte {} of {size}; run the same command again to resume",
            answer["uploaded"]
        );
    }
    bar.finish();
    eprintln!("uploaded {size} bytes to {}:{target}", args.volume);
    Ok(())
}

/// The local file a download writes.
fn download_target(path: &str, destination: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .rsplit('/')
        .find(|p| !p.is_empty())
        .context("name a file inside the volume")?;
    Ok(if destination.is_dir() {
        destination.join(name)
    } else {
        destination.to_path_buf()
    })
}

pub async fn download(global: &Global, args: DownloadArgs) -> anyhow::Result<()> {
    let target = download_target(&args.path, &args.destination)?;
    let mut client = Client::new(global)?;
    let path = files_path(&mut client, &args.volume, &args.path).await?;
    let response = client.open(&path, &[]).await?;
    if !response.status().is_success() {
        return Err(failure(response).await.into());
    }
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if is_json {
        bail!(
            "{} is a folder; `dora ls {} {}` lists it",
            args.path,
            args.volume,
            args.path
        );
    }
    let bar = progress(
        response.content_length().unwrap_or(0),
        &format!("{}:{} → {}", args.volume, args.path, target.display()),
    );
    let partial = target.with_extension("dora-download");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let mut body = idle_deadline(response.bytes_stream());
    // Counted here: a progress bar drawn nowhere (no terminal) counts nothing.
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download broke; run the command again")?;
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().await?;
    tokio::fs::rename(&partial, &target).await?;
    bar.finish();
    eprintln!("downloaded {written} bytes to {}", target.display());
    Ok(())
}
