//! `dora sync LOCAL VOLUME[:PATH]`: uploads what differs, then watches the folder and uploads
//! again after each burst of changes.
//!
//! Every pass compares the whole tree (one listing of the volume, one walk here) rather than
//! replaying the watcher's events: a pass after any change sees renames, removed folders and
//! events the watcher coalesced or dropped the same way, and a tree of thousands of files
//! compares in milliseconds.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use notify_debouncer_full::notify::RecursiveMode;

use super::Remote;
use super::tree::{self, Filter, Totals};
use crate::args::{Global, SyncArgs};

/// How long the folder must be quiet before a pass: an editor's save or a `git checkout` is
/// one pass, not one per file.
const QUIET: Duration = Duration::from_millis(300);

pub async fn run(global: &Global, args: SyncArgs) -> anyhow::Result<()> {
    let (volume, target) = args
        .target
        .split_once(':')
        .unwrap_or((args.target.as_str(), ""));
    if volume.is_empty() {
        bail!(
            "name the volume: `dora sync {} VOLUME[:PATH]`",
            args.local.display()
        );
    }
    if !args.local.is_dir() {
        bail!(
            "{} is not a folder; `dora upload` sends one file",
            args.local.display()
        );
    }
    super::remote::check(target)?;
    let target = target.trim_matches('/');
    let volume = Remote::open(global, None, volume).await?;
    pass(&volume, &args, target).await?;
    if args.once {
        return Ok(());
    }
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify_debouncer_full::new_debouncer(QUIET, None, move |events| {
        let _ = tx.send(events);
    })
    .context("cannot watch the folder")?;
    watcher
        .watch(&args.local, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", args.local.display()))?;
    eprintln!("watching {} (Ctrl-C stops)", args.local.display());
    while let Some(events) = changes.recv().await {
        if let Err(errors) = events {
            for error in errors {
                eprintln!("warning: watching: {error}");
            }
        }
        // What came during the pass is compared by the next one.
        while changes.try_recv().is_ok() {}
        if let Err(e) = pass(&volume, &args, target).await {
            eprintln!("error: {e:#}; trying again at the next change");
        }
    }
    Ok(())
}

/// Uploads what differs between the folder and `target`, and with `--delete` removes what the
/// folder no longer has. Prints what it did, when it did anything.
async fn pass(volume: &Remote, args: &SyncArgs, target: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let local: &Path = &args.local;
    let wanted = tree::walk(local, Filter::Ignored)?;
    let remote = tree::by_path(volume.tree(target).await?);
    let mut removed = 0;
    if args.delete {
        // What is here but ignored stays in the volume; what is gone from here goes.
        let present = tree::walk(local, Filter::Nothing)?.present;
        for path in tree::stale(&remote, &present) {
            volume
                .remove(&super::remote::join(target, &path), true)
                .await?;
            removed += 1;
        }
    }
    let totals: Totals =
        tree::upload(volume, wanted.files, &remote, target, false, args.jobs).await?;
    if totals.files > 0 || removed > 0 {
        let mut line = totals.line("uploaded", started);
        if removed > 0 {
            line = format!("{line}; removed {removed}");
        }
        eprintln!("{line} ({}:{target})", volume.volume);
    }
    Ok(())
}
