//! A volume's files as the CLI reaches them through the API: listings, resumable transfers of
//! one file, and removal.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use dora_client::{Error, failure, idle_deadline};
use dora_crds::Kind;
use futures::StreamExt;
use indicatif::ProgressBar;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::args::Global;
use crate::client::Client;

/// A file or folder of a volume, as the node lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// Its name, or with `recursive` its path from the listed folder.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Unix milliseconds.
    pub modified: i64,
}

/// One volume's files.
pub struct Remote {
    client: Client,
    /// `/v1/zones/Z/workspaces/W/volumes/NAME/files`.
    base: String,
    pub volume: String,
}

/// Refuses a path that is absolute or climbs out with `..`, naming it.
pub fn check(path: &str) -> anyhow::Result<()> {
    if path.starts_with('/') {
        bail!("{path:?} is absolute; name a path inside the volume, from its top");
    }
    if path.split('/').any(|p| p == ".." || p.contains('\0')) {
        // URLs fold `..` away before they leave; the node refuses it anyway.
        bail!("{path:?} leaves the volume; name a path inside it");
    }
    Ok(())
}

/// `a` and `b` joined with one `/`, either may be empty.
pub fn join(a: &str, b: &str) -> String {
    match (a.trim_end_matches('/'), b) {
        ("", b) => b.to_string(),
        (a, "") => a.to_string(),
        (a, b) => format!("{a}/{b}"),
    }
}

/// A file's modification time in Unix milliseconds.
pub fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn time_of(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

fn encode(path: &str) -> String {
    let segments: Vec<String> = path
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
    segments.join("/")
}

impl Remote {
    /// Volume `volume` of `workspace` (default: the command's workspace).
    pub async fn open(
        global: &Global,
        workspace: Option<&str>,
        volume: &str,
    ) -> anyhow::Result<Remote> {
        let mut client = Client::new(global)?;
        let place = client
            .place_with(Kind::Volume, None, workspace, false)
            .await?;
        let base = format!(
            "/v1/zones/{}/workspaces/{}/volumes/{volume}/files",
            place.zone,
            place.workspace.unwrap_or_default(),
        );
        Ok(Remote {
            client,
            base,
            volume: volume.to_string(),
        })
    }

    /// The API path of `path` inside the volume.
    pub fn url(&self, path: &str) -> anyhow::Result<String> {
        check(path)?;
        Ok(format!("{}/{}", self.base, encode(path)))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Details of `path`; `None` when it does not exist.
    pub async fn stat(&self, path: &str) -> anyhow::Result<Option<Entry>> {
        let url = self.url(path)?;
        match self
            .client
            .json(Method::GET, &url, &[("stat", "true".into())], None)
            .await
        {
            Ok(value) => Ok(Some(serde_json::from_value(value)?)),
            Err(Error::Api(failure)) if failure.status == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The entries of folder `path`: its own, or with `recursive` all under it.
    pub async fn list(&self, path: &str, recursive: bool) -> anyhow::Result<Vec<Entry>> {
        let url = self.url(path)?;
        let mut query = Vec::new();
        if recursive {
            query.push(("recursive", "true".to_string()));
        }
        let answer = self.client.json(Method::GET, &url, &query, None).await?;
        let Some(items) = answer.get("items") else {
            bail!(
                "{path} is a file, not a folder; `dora download {} {path}` fetches it",
                self.volume
            );
        };
        Ok(serde_json::from_value(items.clone())?)
    }

    /// Every file and folder under `path`, by its path from it; none when `path` does not exist.
    pub async fn tree(&self, path: &str) -> anyhow::Result<Vec<Entry>> {
        match self.stat(path).await? {
            None => Ok(Vec::new()),
            Some(entry) if entry.kind == "dir" => self.list(path, true).await,
            Some(_) => bail!(
                "{path} is a file in volume {}; name a folder, or a new path",
                self.volume
            ),
        }
    }

    /// Uploads `local` to `path`, resuming an interrupted upload unless `restart`, and counts
    /// what it sends (and what had arrived before) on `bar`. Returns where it resumed.
    pub async fn upload(
        &self,
        local: &Path,
        path: &str,
        restart: bool,
        bar: &ProgressBar,
    ) -> anyhow::Result<u64> {
        let url = self.url(path)?;
        let mut file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("cannot open {}", local.display()))?;
        let metadata = file.metadata().await?;
        let size = metadata.len();
        let offset = if restart {
            0
        } else {
            let arrived = self
                .client
                .json(Method::GET, &url, &[("upload", "true".into())], None)
                .await?;
            arrived["uploaded"].as_u64().unwrap_or(0).min(size)
        };
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        bar.inc(offset);
        let counter = bar.clone();
        // What the file holds when the upload starts: a file still growing is sent again when
        // it next changes.
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(size - offset), 256 << 10)
            .inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    counter.inc(chunk.len() as u64);
                }
            });
        let mut query = vec![("offset", offset.to_string()), ("size", size.to_string())];
        if let Ok(modified) = metadata.modified() {
            query.push(("mtime", millis(modified).to_string()));
        }
        let request = self
            .client
            .request(Method::PUT, &url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        let response = self.client.send_streaming(request).await?;
        if !response.status().is_success() {
            return Err(failure(response).await).with_context(|| {
                format!("the upload of {path} stopped; run the command again to resume")
            });
        }
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if answer["complete"] != true {
            bail!(
                "the upload of {path} stopped at byte {} of {size}; run the command again to resume",
                answer["uploaded"]
            );
        }
        Ok(offset)
    }

    /// Downloads file `entry` at `path` to `local`, through a part file beside it that a rerun
    /// resumes while the volume's file is unchanged; the file gets the volume's modification
    /// time. Counts what arrives (and what had before) on `bar`; returns where it resumed.
    pub async fn download(
        &self,
        path: &str,
        entry: &Entry,
        local: &Path,
        bar: &ProgressBar,
    ) -> anyhow::Result<u64> {
        let url = self.url(path)?;
        let partial = part_of(local, entry);
        let had = tokio::fs::metadata(&partial)
            .await
            .map_or(0, |m| m.len())
            .min(entry.size);
        let mut query = Vec::new();
        if had > 0 {
            query.push(("offset", had.to_string()));
        }
        let response = self.client.open(&url, &query).await?;
        if !response.status().is_success() {
            return Err(failure(response).await.into());
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(had == 0)
            .open(&partial)
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
        file.seek(std::io::SeekFrom::Start(had)).await?;
        bar.inc(had);
        let mut body = idle_deadline(response.bytes_stream());
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .with_context(|| format!("the download of {path} broke; run the command again"))?;
            file.write_all(&chunk).await?;
            bar.inc(chunk.len() as u64);
        }
        file.sync_all().await?;
        file.into_std()
            .await
            .set_modified(time_of(entry.modified))?;
        tokio::fs::rename(&partial, local).await?;
        Ok(had)
    }

    /// Removes `path`, and with `recursive` what a folder there holds.
    pub async fn remove(&self, path: &str, recursive: bool) -> anyhow::Result<()> {
        let url = self.url(path)?;
        let mut query = Vec::new();
        if recursive {
            query.push(("recursive", "true".to_string()));
        }
        let request = self.client.request(Method::DELETE, &url).query(&query);
        self.client.call(request).await?;
        Ok(())
    }
}

/// The part file a download of `entry` to `local` writes: named for the volume file's size and
/// time, so that a rerun resumes only the same file.
fn part_of(local: &Path, entry: &Entry) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    local.with_file_name(format!(
        ".{name}.{}-{}.dora-download",
        entry.size, entry.modified
    ))
}
