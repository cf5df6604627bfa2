use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Dora: a workload orchestrator for GPU and CPU clusters.
#[derive(Debug, Parser)]
#[command(name = "dora", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Zone to act in (default: the profile's, then the user's).
    #[arg(short = 'z', long, global = true, env = "DORA_ZONE")]
    pub zone: Option<String>,
    /// Workspace to act in (default: the profile's, then the user's).
    #[arg(
        short = 'g',
        long,
        visible_alias = "group",
        global = true,
        env = "DORA_WORKSPACE"
    )]
    pub workspace: Option<String>,
    /// Profile of the CLI config to use (default: the current one).
    #[arg(long, global = true, env = "DORA_PROFILE")]
    pub profile: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Dora on this machine: the API server on the embedded store (or a CQL cluster).
    Up(UpArgs),
    /// Create or update resources from YAML or JSON files.
    Apply(ApplyArgs),
    /// List resources, or show one.
    Get(GetArgs),
    /// Show one resource in detail, with its recent events.
    Describe(DescribeArgs),
    /// Delete resources named in files, or one resource by kind and name.
    Delete(DeleteArgs),
    /// Show the spec history of a resource.
    Versions(VersionsArgs),
    /// Show events, of one resource or of the zone.
    Events(EventsArgs),
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the CLI configuration and profiles.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the store, secret and certificates live.
    #[arg(long, env = "DORA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Where state lives: `sqlite:PATH` (default: dora.db in the data folder) or
    /// `cql://HOST:PORT[,HOST:PORT]/KEYSPACE[?replication=DC:RF&consistency=quorum]`.
    #[arg(long, env = "DORA_STORE")]
    pub store: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A file, a folder of .yaml/.yml/.json files, or - for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Replace $KEY and ${KEY} in the manifests before applying.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Wide,
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind: name, plural or alias (wk, c, vol, ws, rc, uc, gpu, cpu...).
    pub kind: String,
    pub name: Option<String>,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    /// Keep watching and print changes.
    #[arg(short, long)]
    pub watch: bool,
    /// List every workspace of the zone.
    #[arg(short = 'A', long)]
    pub all_workspaces: bool,
    /// Print the command's JSON (same as -o json).
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Delete what these files describe.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
    pub files: Vec<PathBuf>,
    /// Replace $KEY and ${KEY} in the manifests.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct VersionsArgs {
    pub kind: String,
    pub name: String,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    pub kind: Option<String>,
    pub name: Option<String>,
    /// Keep watching and print new events.
    #[arg(short, long)]
    pub watch: bool,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    /// How many recent events to show.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for yourself or, as an administrator, for another user.
    Create {
        /// The user the token is for (default: you).
        #[arg(long)]
        user: Option<String>,
        /// Lifetime: <n>s, <n>m, <n>h or <n>d.
        #[arg(long, default_value = "30d")]
        expires_in: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration (tokens hidden).
    View,
    /// Set the default zone of the current profile.
    UseZone { zone: String },
    /// Set the default workspace of the current profile.
    UseWorkspace { workspace: String },
    /// Manage profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Create or replace a profile and make it current.
    Init {
        name: String,
        #[arg(long)]
        api_server: String,
        #[arg(long)]
        token: String,
        /// PEM file of the cluster CA to trust (printed by `dora up` as ca.pem).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Make a profile current.
    Use { name: String },
    /// List profiles.
    Ls,
}
