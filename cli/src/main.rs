//! `dora`: the client commands and the server components, in one binary.

mod args;
mod client;
mod commands;
mod config;
mod jsonpath;
mod manifest;
mod output;

use std::process::ExitCode;

use clap::Parser;

// The API server and the controllers allocate heavily (JSON rows); mimalloc made the
// scheduler about 1.5 times faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's setting for committing whole arenas up front.
const EAGER_COMMIT: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// Runs this command again with the allocator committing memory only as it is used: the node
/// agent then keeps about 7 MiB less resident. The allocator reads its settings before `main`,
/// hence the exec; should it fail, the agent carries on as it is.
fn small_allocator() {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(EAGER_COMMIT, "0")
        .exec();
    eprintln!("warning: cannot restart with the smaller allocator setting: {error}");
}

/// Lets a closed pipe end a client command quietly (`dora completion bash | head`), as it
/// ends other Unix tools; Rust ignores SIGPIPE, so every print would panic instead. The
/// long-running components keep ignoring it: their sockets report a closed peer as an error.
fn die_on_closed_pipe() {
    // SAFETY: called first thing in `main`, before any other thread exists; setting a signal
    // disposition to its default has no other effect on this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    commands::completion::answer_and_exit();
    let args = args::Cli::parse();
    if args.command.is_client() {
        die_on_closed_pipe();
    }
    let agent = matches!(args.command, args::Command::Node(_));
    if agent && std::env::var_os(EAGER_COMMIT).is_none() {
        small_allocator();
    }
    // The node agent does little at a time: one thread keeps its footprint small.
    let mut builder = if agent {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
