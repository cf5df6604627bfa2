//! Folders to and from volumes: a local walk, the plan of what differs, and the transfers, a
//! few files at once under one progress bar.
//!
//! A file is already there when the other side has one of the same size and modification time
//! (to the millisecond), rsync's quick check: uploads and downloads carry the time over, so a
//! file copied once compares equal until either side changes it, without reading either.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressStyle};

use super::remote::{Entry, Remote, check, join, millis};

/// A local file to send.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: PathBuf,
    /// Its path from the walked folder, with `/`.
    pub relative: String,
    pub size: u64,
    /// Unix milliseconds.
    pub modified: i64,
}

/// What a walk of a local folder found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The files to send.
    pub files: Vec<LocalFile>,
    /// Every path in the folder (files, folders, symlinks), ignored ones included.
    pub present: HashSet<String>,
    /// Symlinks, which are not followed: a link may lead anywhere on this machine.
    pub symlinks: u64,
}

/// Which files a walk leaves out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// None: an upload sends what it is given.
    Nothing,
    /// What `.gitignore` and `.doraignore` files name, and `.git`.
    Ignored,
}

/// Walks `root` without following symlinks.
pub fn walk(root: &Path, filter: Filter) -> anyhow::Result<Walk> {
    let mut builder = ignore::WalkBuilder::new(root);
    builder
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b));
    match filter {
        Filter::Nothing => {
            builder.standard_filters(false);
        }
        Filter::Ignored => {
            builder
                .hidden(false)
                .git_global(false)
                .require_git(false)
                .add_custom_ignore_filename(".doraignore")
                .filter_entry(|e| e.file_name() != ".git");
        }
    }
    let mut found = Walk::default();
    for entry in builder.build() {
        let entry = entry.with_context(|| format!("cannot read {}", root.display()))?;
        if entry.depth() == 0 {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_str()
            .with_context(|| format!("{} is not UTF-8; rename it", entry.path().display()))?
            .to_string();
        if relative.ends_with(".dora-download") {
            continue;
        }
        let Some(kind) = entry.file_type() else {
            continue;
        };
        found.present.insert(relative.clone());
        if kind.is_symlink() {
            found.symlinks += 1;
        } else if kind.is_file() {
            let metadata = entry.metadata()?;
            found.files.push(LocalFile {
                path: entry.path().to_path_buf(),
                relative,
                size: metadata.len(),
                modified: metadata.modified().map(millis).unwrap_or(0),
            });
        }
    }
    Ok(found)
}

/// How a transfer went.
#[derive(Debug, Default)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    /// Files the other side already had.
    pub skipped: u64,
    /// Files an earlier run had begun.
    pub resumed: u64,
}

impl Totals {
    /// `uploaded 1,000 files, 12.3 MiB in 1.2 s; 3 already there`.
    pub fn line(&self, verb: &str, started: Instant) -> String {
        let mut line = format!(
            "{verb} {} file{}, {} in {:.1} s",
            HumanCount(self.files),
            if self.files == 1 { "" } else { "s" },
            HumanBytes(self.bytes),
            started.elapsed().as_secs_f64()
        );
        let mut notes = Vec::new();
        if self.skipped > 0 {
            notes.push(format!("{} already there", HumanCount(self.skipped)));
        }
        if self.resumed > 0 {
            notes.push(format!("{} resumed", HumanCount(self.resumed)));
        }
        if !notes.is_empty() {
            line = format!("{line}; {}", notes.join(", "));
        }
        line
    }
}

/// One bar for a whole tree.
pub fn progress(size: u64, message: &str) -> ProgressBar {
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

/// Whether the two sides hold the same file, by rsync's quick check.
fn same(entry: Option<&Entry>, size: u64, modified: i64) -> bool {
    entry.is_some_and(|e| e.kind == "file" && e.size == size && e.modified == modified)
}

/// Runs `work` on each item, `jobs` at a time; every item is tried, and the first failure
/// is returned with how many failed.
async fn each<T, F>(items: Vec<T>, jobs: u16, work: impl Fn(T) -> F) -> anyhow::Result<u64>
where
    F: Future<Output = anyhow::Result<bool>>,
{
    let mut results = futures::stream::iter(items)
        .map(work)
        .buffer_unordered(usize::from(jobs));
    let (mut resumed, mut failed, mut first) = (0, 0, None);
    while let Some(result) = results.next().await {
        match result {
            Ok(true) => resumed += 1,
            Ok(false) => {}
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e.context(format!(
            "{failed} file{} failed; run the command again to resume",
            if failed == 1 { "" } else { "s" }
        ))),
        None => Ok(resumed),
    }
}

/// Sends `files` to folder `target` of the volume, except those `remote` (its tree, by path
/// from `target`) already holds, unless `restart`.
pub async fn upload(
    volume: &Remote,
    files: Vec<LocalFile>,
    remote: &HashMap<String, Entry>,
    target: &str,
    restart: bool,
    jobs: u16,
) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    let (send, skip): (Vec<LocalFile>, Vec<LocalFile>) = files
        .into_iter()
        .partition(|f| restart || !same(remote.get(&f.relative), f.size, f.modified));
    totals.skipped = skip.len() as u64;
    if send.is_empty() {
        return Ok(totals);
    }
    totals.files = send.len() as u64;
    totals.bytes = send.iter().map(|f| f.size).sum();
    let bar = progress(totals.bytes, &format!("→ {}:{target}", volume.volume));
    let result = each(send, jobs, |file| {
        let bar = bar.clone();
        async move {
            let path = join(target, &file.relative);
            let offset = volume.upload(&file.path, &path, restart, &bar).await?;
            Ok(offset > 0)
        }
    })
    .await;
    bar.finish_and_clear();
    totals.resumed = result?;
    Ok(totals)
}

/// A file of the volume to fetch, and where.
pub struct Fetch {
    /// Its path in the volume.
    pub path: String,
    pub entry: Entry,
    pub local: PathBuf,
}

/// The files of `tree` (entries under folder `source`, by path from it) as they land in the
/// local folder `into`, whose folders it makes. Symlinks on the node are neither followed nor
/// made here.
pub fn fetches(source: &str, tree: Vec<Entry>, into: &Path) -> anyhow::Result<Vec<Fetch>> {
    let mut fetches = Vec::new();
    for entry in tree {
        check(&entry.name)?;
        let local = into.join(&entry.name);
        match entry.kind.as_str() {
            "dir" => std::fs::create_dir_all(&local)
                .with_context(|| format!("cannot make {}", local.display()))?,
            "file" => fetches.push(Fetch {
                path: join(source, &entry.name),
                entry,
                local,
            }),
            _ => {}
        }
    }
    Ok(fetches)
}

/// Fetches `files`, except those already here; `label` names the source on the bar.
pub async fn download(
    volume: &Remote,
    files: Vec<Fetch>,
    label: &str,
    jobs: u16,
) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    let (skip, fetch): (Vec<Fetch>, Vec<Fetch>) = files.into_iter().partition(|f| {
        std::fs::symlink_metadata(&f.local).is_ok_and(|m| {
            m.is_file()
                && same(
                    Some(&f.entry),
                    m.len(),
                    m.modified().map(millis).unwrap_or(0),
                )
        })
    });
    totals.skipped = skip.len() as u64;
    totals.files = fetch.len() as u64;
    totals.bytes = fetch.iter().map(|f| f.entry.size).sum();
    let bar = progress(totals.bytes, &format!("{}:{label} →", volume.volume));
    let result = each(fetch, jobs, |file| {
        let bar = bar.clone();
        async move {
            if let Some(parent) = file.local.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let offset = volume
                .download(&file.path, &file.entry, &file.local, &bar)
                .await?;
            Ok(offset > 0)
        }
    })
    .await;
    bar.finish_and_clear();
    totals.resumed = result?;
    Ok(totals)
}

/// A folder's tree in the volume, by path from it.
pub fn by_path(tree: Vec<Entry>) -> HashMap<String, Entry> {
    tree.into_iter().map(|e| (e.name.clone(), e)).collect()
}

/// The volume paths to remove so that folder `target` holds only what `present` names: the
/// topmost of each missing subtree.
pub fn stale(remote: &HashMap<String, Entry>, present: &HashSet<String>) -> Vec<String> {
    let gone: HashSet<&str> = remote
        .keys()
        .filter(|p| !present.contains(*p))
        .map(String::as_str)
        .collect();
    let mut topmost: Vec<String> = gone
        .iter()
        .filter(|path| {
            let ancestors = path.match_indices('/').map(|(at, _)| &path[..at]);
            !ancestors.into_iter().any(|a| gone.contains(a))
        })
        .map(|p| p.to_string())
        .collect();
    topmost.sort();
    topmost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: &str) -> Entry {
        Entry {
            name: name.into(),
            kind: kind.into(),
            size: 0,
            modified: 0,
        }
    }

    #[test]
    fn stale_paths_are_the_topmost_of_what_is_gone() {
        let remote = by_path(vec![
            entry("a", "dir"),
            entry("a/x", "file"),
            entry("a-b", "dir"),
            entry("a-b/y", "file"),
            entry("keep", "dir"),
            entry("keep/old", "file"),
            entry("keep/new", "file"),
        ]);
        let present: HashSet<String> = ["a-b", "a-b/y", "keep", "keep/new"]
            .map(String::from)
            .into();
        assert_eq!(stale(&remote, &present), ["a", "keep/old"]);
    }
}
