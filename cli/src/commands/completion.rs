//! Shell completion of commands, kinds and resource names.
//!
//! `dora completion SHELL` prints a small script that asks `dora` itself for candidates
//! (`COMPLETE=SHELL dora -- WORDS...`, clap_complete's dynamic completion). Commands and flags
//! come from the command line's definition; kinds from the built-in list and the kinds defined
//! on the cluster (`GET /v1/kinds`); resource names from the API server, listed with the
//! profile, zone and workspace of the words typed so far.

use std::ffi::OsStr;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory};
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{CompleteEnv, Shells};
use dora_crds::Kind;
use reqwest::Method;

use crate::args::{Cli, Global};
use crate::client::Client;

/// The environment variable the completion scripts set.
const VAR: &str = "COMPLETE";
/// How long a name lookup may take before the shell gets no names.
const LOOKUP: Duration = Duration::from_secs(3);

/// Answers a completion request and exits, when the shell made one.
pub fn answer_and_exit() {
    CompleteEnv::with_factory(Cli::command).var(VAR).complete();
}

/// Prints the script that registers completion for `shell`.
pub fn script(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let name = shell.to_string();
    let shells = Shells::builtins();
    let completer = shells
        .completer(&name)
        .ok_or_else(|| anyhow::anyhow!("no completion for {name}"))?;
    let mut script = Vec::new();
    completer.write_registration(VAR, "dora", "dora", "dora", &mut script)?;
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => Ok(written?),
    }
}

/// Runs `lookup` to its end or for [`LOOKUP`] at most; `None` when it fails or takes longer.
fn look_up<T>(lookup: impl Future<Output = anyhow::Result<T>>) -> Option<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime
        .block_on(async { tokio::time::timeout(LOOKUP, lookup).await })
        .ok()?
        .ok()
}

/// Learns the kinds defined on the cluster of the typed profile.
fn learn_kinds(global: &Global) {
    look_up(async { Ok(Client::new(global)?.learn_kinds().await?) });
}

/// Kind names, plurals and aliases starting with what is typed: built-in ones and those
/// defined on the cluster.
pub fn kinds(current: &OsStr) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy();
    if let Some((_, global)) = typed_so_far() {
        learn_kinds(&global);
    }
    let mut words: Vec<String> = Vec::new();
    for kind in Kind::known() {
        let name = kind.name().to_ascii_lowercase();
        words.push(name);
        words.push(kind.plural().to_string());
        words.extend(kind.aliases().iter().map(|a| a.to_string()));
    }
    words.sort();
    words.dedup();
    words
        .into_iter()
        .filter(|w| w.starts_with(typed.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// Names of resources of the kind typed before, starting with what is typed.
pub fn names(current: &OsStr) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy().into_owned();
    let Some((Some(kind_text), global)) = typed_so_far() else {
        return Vec::new();
    };
    let kind = match Kind::parse(&kind_text) {
        Some(kind) => kind,
        None => {
            learn_kinds(&global);
            let Some(kind) = Kind::parse(&kind_text) else {
                return Vec::new();
            };
            kind
        }
    };
    look_up(list_names(kind, global))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&typed))
        .map(CompletionCandidate::new)
        .collect()
}

/// The kind typed (if any) and the global options among the words before the one being
/// completed.
fn typed_so_far() -> Option<(Option<String>, Global)> {
    let mut words: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();
    let current = std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|i| i.parse::<usize>().ok())
        .unwrap_or(words.len().saturating_sub(1));
    words.truncate(current);
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(words)
        .ok()?;
    let (_, command) = matches.subcommand()?;
    let text = |m: &ArgMatches, id: &str| m.try_get_one::<String>(id).ok().flatten().cloned();
    let kind = text(command, "kind");
    let global = Global {
        zone: text(command, "zone").or_else(|| text(&matches, "zone")),
        workspace: text(command, "workspace").or_else(|| text(&matches, "workspace")),
        profile: text(command, "profile").or_else(|| text(&matches, "profile")),
        request_timeout: LOOKUP,
    };
    Some((kind, global))
}

async fn list_names(kind: Kind, global: Global) -> anyhow::Result<Vec<String>> {
    let mut client = Client::new(&global)?;
    let place = client.place(kind, false).await?;
    let path = kind.collection_path(&place.zone, place.workspace.as_deref());
    let query: Vec<(&str, String)> = if kind.is_view() {
        Vec::new()
    } else {
        vec![("limit", "1000".into())]
    };
    let page = client.json(Method::GET, &path, &query, None).await?;
    Ok(page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}
