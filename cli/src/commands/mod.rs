//! One module per command.

mod actions;
mod apply;
mod ban;
mod clone;
pub(crate) mod completion;
mod components;
mod config;
mod console;
mod credits;
mod delete;
mod diff;
mod edit;
mod explain;
mod get;
mod history;
mod node;
mod proxy;
mod queue;
mod rollback;
mod terminal;
mod token;
mod up;
mod volumes;
mod wait;

use std::process::ExitCode;

use anyhow::Context;
use dora_crds::Kind;

use crate::args::{Cli, CloneCommand, Command, Global};
use crate::client::Client;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Up(args) => up::run(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Apply(args) => apply::run(&global, args).await,
        Command::Get(args) => get::get(&global, args).await.map(|()| ExitCode::SUCCESS),
        Command::Describe(args) => get::describe(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Delete(args) => delete::run(&global, args).await,
        Command::Scheduler(args) => components::scheduler(args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Creditsys(args) => components::creditsys(args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Gc(args) => components::gc(args).await.map(|()| ExitCode::SUCCESS),
        Command::Sim(args) => components::sim(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Node(args) => node::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Logs(args) => proxy::logs(&global, args).await.map(|()| ExitCode::SUCCESS),
        Command::Shell(args) => proxy::shell(&global, args).await,
        Command::Top(args) => proxy::top(&global, args).await.map(|()| ExitCode::SUCCESS),
        Command::Ls(args) => volumes::ls(&global, args).await.map(|()| ExitCode::SUCCESS),
        Command::Upload(args) => volumes::upload(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Download(args) => volumes::download(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Sync(args) => volumes::sync(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Clone(CloneCommand::Workspace(args)) => clone::workspace(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Console(args) => console::run(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Credits(args) => credits::run(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Pause(args) => actions::run(&global, "pause", args).await,
        Command::Resume(args) => actions::run(&global, "resume", args).await,
        Command::Drain(args) => actions::run(&global, "drain", args).await,
        Command::Uncordon(args) => edit::uncordon(&global, args).await,
        Command::Cordon(args) => edit::cordon(&global, args).await,
        Command::Scale(args) => edit::scale(&global, args).await,
        Command::Wait(args) => wait::run(&global, args).await,
        Command::Explain(args) => explain::run(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Queue(args) => queue::run(&global, args).await.map(|()| ExitCode::SUCCESS),
        Command::Rollback(args) => rollback::run(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Diff(args) => diff::run(&global, args).await,
        Command::Versions(args) => history::versions(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Events(args) => history::events(&global, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Token(command) => token::run(&global, command)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Ban(command) => ban::run(&global, command).await.map(|()| ExitCode::SUCCESS),
        Command::Config(command) => config::run(&global, command)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Completion { shell } => completion::script(shell).map(|()| ExitCode::SUCCESS),
        Command::Version => {
            println!("dora {}", env!("DORA_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves a built-in kind typed on the command line, for commands that only take those.
pub(crate) fn built_in_kind(text: &str) -> anyhow::Result<Kind> {
    text.parse::<Kind>()
        .map_err(|e| anyhow::anyhow!("{}", e.message))
        .context("see `dora get --help`")
}

/// Resolves any kind typed on the command line: a built-in one, or one defined on the
/// cluster, which is learnt from the API server when the word names no built-in kind.
pub(crate) async fn kind(global: &Global, text: &str) -> anyhow::Result<Kind> {
    if let Some(kind) = Kind::parse(text) {
        return Ok(kind);
    }
    let learnt = Client::new(global)?.learn_kinds().await;
    built_in_kind(text).map_err(|e| match learnt {
        Ok(()) => e,
        Err(why) => e.context(format!(
            "the cluster's defined kinds could not be read: {why:#}"
        )),
    })
}

/// The `kind/name` label kubectl prints.
pub(crate) fn label(kind: &str, name: &str) -> String {
    format!("{}/{name}", kind.to_ascii_lowercase())
}
