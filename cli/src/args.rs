use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;

use crate::jsonpath::{Path, Template};

/// Dora: a workload orchestrator for GPU and CPU clusters.
#[derive(Debug, Parser)]
#[command(name = "dora", version = env!("DORA_VERSION"), about, propagate_version = true)]
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
    /// The most a call to the API may take, answer included (a one-off `dora shell -- CMD`
    /// waits for CMD to end: raise it for long commands). Streams (-w, logs -f, downloads,
    /// uploads, sessions) instead end when the API falls silent past their keep-alive.
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Dora on this machine: the API server on the embedded store (or a CQL cluster), or
    /// with --upstream the store-less API server of a zone whose data another zone's holds.
    Up(Box<UpArgs>),
    /// Create or update resources from YAML or JSON files.
    Apply(ApplyArgs),
    /// List resources, or show one.
    Get(GetArgs),
    /// Show one resource in detail, with its recent events.
    Describe(DescribeArgs),
    /// Delete resources named in files, or one resource by kind and name.
    Delete(DeleteArgs),
    /// Run the scheduler of one zone (one is active per zone; others stand by).
    Scheduler(SchedulerArgs),
    /// Run the credit system of one zone (one is active per zone; others stand by).
    Creditsys(CreditsysArgs),
    /// Run the garbage collector of one zone: it deletes objects whose owners are gone (one is
    /// active per zone; others stand by).
    Gc(GcArgs),
    /// Run hollow (simulated) nodes, for scale tests and demos.
    Sim(SimArgs),
    /// Run the node agent of this machine: it registers the node and runs what is bound to it.
    Node(NodeArgs),
    /// Print a container's output.
    Logs(LogsArgs),
    /// Run a command in a container.
    Shell(ShellArgs),
    /// Show CPU and memory use of a container, or of every container on a node.
    Top(TopArgs),
    /// List a folder of a volume.
    Ls(LsArgs),
    /// Upload a file or folder to a volume (resumes an interrupted upload).
    Upload(UploadArgs),
    /// Download a file or folder from a volume (resumes an interrupted download).
    Download(DownloadArgs),
    /// Upload what differs between a local folder and a volume, then keep uploading changes.
    Sync(SyncArgs),
    /// Copy something into a new one.
    #[command(subcommand)]
    Clone(CloneCommand),
    /// Show credit use, limit and next reset per zone.
    Credits(CreditsArgs),
    /// Pause a workload: its containers stop until `dora resume`.
    Pause(ActionArgs),
    /// Resume a paused workload.
    Resume(ActionArgs),
    /// Drain a node: nothing new lands there and its containers move to other nodes.
    Drain(ActionArgs),
    /// Let a drained or cordoned node take containers again.
    Uncordon(ActionArgs),
    /// Show the spec history of a resource.
    Versions(VersionsArgs),
    /// Apply an earlier spec of a resource again, as a new generation (the history keeps
    /// every spec).
    Rollback(RollbackArgs),
    /// Show how two generations of a resource's spec differ, or with -f what an apply of the
    /// files would change; exits 1 when there are differences.
    Diff(DiffArgs),
    /// Show events, of one resource or of the zone.
    Events(EventsArgs),
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List or lift the bans of the API server's IP filter (administrators).
    #[command(subcommand)]
    Ban(BanCommand),
    /// Manage the CLI configuration and profiles.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (commands, kinds and resource names).
    Completion { shell: clap_complete::Shell },
    /// Print Dora's version and the commit it was built from.
    Version,
    /// Set the replica count of a workload (its containers are not restarted).
    Scale(ScaleArgs),
    /// Cordon a node: nothing new is placed there; what runs stays (`dora uncordon` undoes it).
    Cordon(ActionArgs),
    /// Wait until a resource meets a condition, or is deleted.
    Wait(WaitArgs),
    /// Describe a kind's fields from its schema: `dora explain workload.spec.replica`.
    Explain(ExplainArgs),
    /// Show the waiting workloads of a zone in the scheduler's order (Slurm's squeue).
    Queue(QueueArgs),
    /// Print (and open in a browser) a link that logs you in to the web console.
    Console(ConsoleArgs),
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
    /// `cql://HOST:PORT[,HOST:PORT]/KEYSPACE[?replication=DC:RF&consistency=quorum|local_quorum&datacenter=DC&lookback=30s]`.
    #[arg(long, env = "DORA_STORE")]
    pub store: Option<String>,
    /// Zone of the scheduler and credit system run here (with --upstream: the zone served).
    #[arg(long, default_value = "default")]
    pub zone: String,
    /// Keep no store and run no scheduler or credit system here: forward every request to the
    /// API server of the zone whose store holds this zone (`https://HOST:PORT`, where `dora
    /// scheduler --zone ZONE` and `dora creditsys --zone ZONE` run on that store), and make the
    /// requests that must reach this zone's nodes (logs, shell, top, volume files) from here.
    /// The data folder must hold that zone's secret.key and pki/{ca,proxy-ca}.{pem,key}.
    #[arg(long, value_name = "URL", conflicts_with_all = ["store", "sim_nodes"])]
    pub upstream: Option<String>,
    /// The CA the upstream's certificate chains to (default: the data folder's pki/ca.pem).
    #[arg(long, value_name = "FILE", requires = "upstream")]
    pub upstream_ca: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub credits: CreditArgs,
    #[command(flatten)]
    pub sim: SimOptions,
    #[command(flatten)]
    pub scheduling: SchedulingArgs,
    /// Run no node agent here (only hollow nodes, or nodes elsewhere).
    #[arg(long)]
    pub no_node: bool,
    /// How long the certificates the cluster CA issues (the API server's, the nodes') last;
    /// each is renewed, without a restart, when a third of it is left.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub certificate_lifetime: std::time::Duration,
    /// Also serve `GET /metrics` over plain HTTP without a token on this address (for a
    /// Prometheus that cannot present a token); the HTTPS `/metrics` needs one.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub node: NodeOptions,
    #[command(flatten)]
    pub guard: GuardArgs,
}

/// The API server's IP filter and rate limits (per API server, in memory).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "IP filter and rate limits")]
pub struct GuardArgs {
    /// Failed authentications (a bad, expired or revoked token, a join token for another
    /// zone) from one client address within --ban-window that ban the address; 0 turns the IP
    /// filter off.
    #[arg(long, env = "DORA_BAN_AFTER", default_value_t = 3)]
    pub ban_after: u32,
    /// The window in which --ban-after failures ban an address.
    #[arg(long, env = "DORA_BAN_WINDOW", default_value = "1s", value_parser = parse_duration)]
    pub ban_window: std::time::Duration,
    /// How long a banned address is refused (403 Banned, with Retry-After) before any token
    /// is read; `dora ban lift ADDRESS` ends a ban sooner.
    #[arg(long, env = "DORA_BAN_TIME", default_value = "60s", value_parser = parse_duration)]
    pub ban_time: std::time::Duration,
    /// The most addresses the IP filter holds with recent failures, and the most it holds
    /// banned.
    #[arg(long, env = "DORA_BAN_TABLE_SIZE", default_value_t = 100_000)]
    pub ban_table_size: usize,
    /// Proxies whose `Forwarded` or `X-Forwarded-For` header names the client (addresses or
    /// CIDR ranges, comma-separated); the header of any other peer is ignored.
    #[arg(long, env = "DORA_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<dora_apiserver::TrustedProxy>,
    /// Requests per second from one client address, counted before authentication (0: no
    /// limit); node agents' reports are limited per node instead.
    #[arg(long, env = "DORA_ADDRESS_RATE_LIMIT", default_value_t = 1000)]
    pub address_rate_limit: u32,
    /// Requests one client address may send at once after a quiet spell.
    #[arg(long, env = "DORA_ADDRESS_BURST", default_value_t = 2000)]
    pub address_burst: u32,
    /// Requests per second of one user (0: no limit); past it, 429 with Retry-After.
    #[arg(long, env = "DORA_USER_RATE_LIMIT", default_value_t = 500)]
    pub user_rate_limit: u32,
    /// Requests one user may send at once after a quiet spell.
    #[arg(long, env = "DORA_USER_BURST", default_value_t = 1000)]
    pub user_burst: u32,
    /// Requests per second of one node agent (its reports and heartbeats), apart from users'
    /// budgets (0: no limit).
    #[arg(long, env = "DORA_NODE_RATE_LIMIT", default_value_t = 1000)]
    pub node_rate_limit: u32,
    /// Requests one node agent may send at once (a node whose containers all change state).
    #[arg(long, env = "DORA_NODE_BURST", default_value_t = 5000)]
    pub node_burst: u32,
}

/// The node agent's settings, for `dora node` and the agent inside `dora up`.
#[derive(Debug, Args, Clone)]
pub struct NodeOptions {
    /// Name of the node (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Pretend to have these GPUs, e.g. 2xA100 (for tests).
    #[arg(long)]
    pub fake_gpus: Option<String>,
    /// The Docker driver: `auto` when a Docker Engine answers, `on` to require one, `off`.
    #[arg(long, value_enum, default_value_t = DockerChoice::Auto)]
    pub docker: DockerChoice,
    /// Do not offer the process driver.
    #[arg(long)]
    pub no_process: bool,
    /// Who Process containers run as when the agent is root: a user name, UID or UID:GID
    /// (default: nobody). `root` runs them as root, with Docker's default capabilities. An
    /// agent that is not root runs them as itself.
    #[arg(long, env = "DORA_PROCESS_USER")]
    pub process_user: Option<String>,
    /// How often the node heartbeats.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub heartbeat: std::time::Duration,
    /// How often the agent compares what its drivers run with what is bound to the node and
    /// stops or removes what nobody wants.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub resync: std::time::Duration,
    /// Where the node API (logs, shell, top) listens; `dora up` picks a free loopback port.
    #[arg(long)]
    pub node_listen: Option<SocketAddr>,
    /// The host name or address the API server reaches this node at (default: the listen
    /// address, or 127.0.0.1 when it listens on all addresses).
    #[arg(long)]
    pub advertise: Option<String>,
}

/// Whether the agent uses Docker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DockerChoice {
    Auto,
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The API server's URL.
    #[arg(long, env = "DORA_API_SERVER")]
    pub api_server: String,
    /// A node credential from `dora token create --node NAME`. Prefer DORA_NODE_TOKEN or
    /// --token-file: a command line is readable by every process of the machine, containers
    /// included (ps, /proc/PID/cmdline).
    #[arg(long, env = "DORA_NODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the node credential (keep it mode 0600).
    #[arg(long, env = "DORA_NODE_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// A join token from `dora token create --join`: exchanged once for this node's own
    /// credential, which is kept in the state folder.
    #[arg(
        long,
        env = "DORA_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["token", "token_file"]
    )]
    pub join_token: Option<String>,
    /// PEM file of the cluster CA.
    #[arg(long, env = "DORA_CA")]
    pub ca: PathBuf,
    /// The node's zone.
    #[arg(long, default_value = "default")]
    pub zone: String,
    /// Where the agent keeps the process driver's containers.
    #[arg(long, env = "DORA_NODE_STATE")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeOptions,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// `container` (c), or `workload` (wk) for its replica 0.
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: String,
    /// Keep printing output as it comes, until the container ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<u32>,
    /// The output of the run before the current one (of a container that restarted).
    #[arg(short, long, conflicts_with = "follow")]
    pub previous: bool,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// `container` (c), or `workload` (wk) for its replica 0.
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: String,
    /// The command to run (after --); default: an interactive sh.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Attach your terminal to the command (the default without a command).
    #[arg(short, long)]
    pub interactive: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// `container` (c) or `node`.
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: String,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    pub volume: String,
    /// A folder inside the volume (default: its top).
    #[arg(default_value = "")]
    pub path: String,
    /// Each entry's type, size and modification time.
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Everything under the folder, named by its path from it.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The local file or folder (a folder is uploaded with all it holds; symlinks in it are
    /// skipped).
    pub source: PathBuf,
    pub volume: String,
    /// Where in the volume (default: the file's or folder's name at the top; a path ending in
    /// / is a folder to put it in).
    #[arg(default_value = "")]
    pub path: String,
    /// Start over instead of resuming an interrupted upload, and send files already there.
    #[arg(long)]
    pub restart: bool,
    /// How many files go at once.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    pub volume: String,
    /// The file or folder inside the volume.
    pub path: String,
    /// The local file or folder (default: the current folder).
    #[arg(default_value = ".")]
    pub destination: PathBuf,
    /// How many files come at once.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The local folder; `.gitignore` and `.doraignore` files in it name what stays out.
    pub local: PathBuf,
    /// `VOLUME` or `VOLUME:PATH`: where in the volume the folder's contents go.
    pub target: String,
    /// Also remove from the volume what is no longer in the local folder.
    #[arg(long)]
    pub delete: bool,
    /// Upload what differs once and stop instead of watching.
    #[arg(long)]
    pub once: bool,
    /// How many files go at once.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

#[derive(Debug, Subcommand)]
pub enum CloneCommand {
    /// Make workspace NEW with SRC's workloads and volumes (their definitions; with
    /// --with-data also the volumes' files).
    Workspace(CloneWorkspaceArgs),
}

#[derive(Debug, Args)]
pub struct CloneWorkspaceArgs {
    /// The workspace to copy.
    pub source: String,
    /// The workspace to make; it must not exist.
    pub new: String,
    /// Also copy the files of each volume.
    #[arg(long)]
    pub with_data: bool,
}

/// How components log.
#[derive(Debug, Args, Clone)]
pub struct LogArgs {
    /// `text` for people, `json` for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "DORA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to log: `error`, `warn`, `info` (each reconcile that changed something), `debug`
    /// (also reconciles that changed nothing) or `trace`, or per module, e.g.
    /// `info,dora_runtime=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info,scylla=warn")]
    pub log_level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a component finds the store.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// `sqlite:PATH` or `cql://HOST:PORT[,HOST:PORT]/KEYSPACE[?...]`.
    #[arg(long, env = "DORA_STORE")]
    pub store: String,
    /// The zone to serve.
    #[arg(long, default_value = "default")]
    pub zone: String,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Credit system settings.
#[derive(Debug, Args, Clone)]
pub struct CreditArgs {
    /// Day of the weekly credit reset (00:00 UTC).
    #[arg(long, default_value = "monday", value_parser = parse_weekday)]
    pub credit_reset_day: time::Weekday,
    /// How often container use is counted.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub credit_slice: std::time::Duration,
    /// Length of a credit period (a week; shorter only for tests and demos).
    #[arg(long, default_value = "7d", value_parser = parse_duration, hide = true)]
    pub credit_period: std::time::Duration,
}

/// Hollow nodes.
#[derive(Debug, Args, Clone)]
pub struct SimOptions {
    /// Also run this many hollow nodes (named sim-00000, sim-00001, ...).
    #[arg(long, default_value_t = 0)]
    pub sim_nodes: usize,
    /// CPUs per hollow node.
    #[arg(long, default_value_t = 32)]
    pub sim_cpus: u32,
    /// Memory per hollow node, e.g. 256Gi.
    #[arg(long, default_value = "256Gi")]
    pub sim_memory: String,
    /// GPUs per hollow node, e.g. 8xA100 or 4xA100,2xH100.
    #[arg(long, default_value = "")]
    pub sim_gpus: String,
    /// How often hollow nodes heartbeat.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub sim_heartbeat: std::time::Duration,
    /// How long a hollow node takes to start a container.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub sim_start_delay: std::time::Duration,
    /// Hollow nodes write straight to the store instead of calling the API as node agents
    /// do: leaves the API server out, to measure the scheduler alone.
    #[arg(long)]
    pub sim_direct: bool,
}

/// Scheduler settings.
#[derive(Debug, Args, Clone)]
pub struct SchedulingArgs {
    /// A node without a heartbeat for this long is NotReady.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub node_grace: std::time::Duration,
    /// Containers of a NotReady node move after this.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub reschedule_after: std::time::Duration,
    /// The first restart delay of an ended container, doubled at each restart up to 5 min
    /// (shorter only for tests and demos).
    #[arg(long, default_value = "10s", value_parser = parse_duration, hide = true)]
    pub restart_backoff: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub scheduling: SchedulingArgs,
}

#[derive(Debug, Args)]
pub struct CreditsysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub credits: CreditArgs,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Write straight to this store (`sqlite:PATH` or `cql://...`) instead of calling the API
    /// of the CLI profile (`--profile`): leaves the API server out, to measure the scheduler
    /// alone.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub sim: SimOptions,
    /// Node names start with this.
    #[arg(long, default_value = "sim-")]
    pub prefix: String,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// `workload` (wk) for pause and resume, `node` for drain, cordon and uncordon.
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Only print the link; do not start a browser.
    #[arg(long)]
    pub no_open: bool,
}

#[derive(Debug, Args)]
pub struct CreditsArgs {
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    /// Use this week per workload, largest first (Slurm's `sacct`).
    #[arg(long)]
    pub workloads: bool,
}

/// Parses `<n>ms`, `<n>s`, `<n>m`, `<n>h` or `<n>d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms
            .parse()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("expected <n>ms, got {text:?}"));
    }
    dora_crds::Duration::parse(text)
        .map(|d| d.0)
        .ok_or_else(|| format!("expected <n>ms, <n>s, <n>m, <n>h or <n>d, got {text:?}"))
}

fn parse_weekday(text: &str) -> Result<time::Weekday, String> {
    use time::Weekday::*;
    let day = match text.to_ascii_lowercase().as_str() {
        "monday" | "mon" => Monday,
        "tuesday" | "tue" => Tuesday,
        "wednesday" | "wed" => Wednesday,
        "thursday" | "thu" => Thursday,
        "friday" | "fri" => Friday,
        "saturday" | "sat" => Saturday,
        "sunday" | "sun" => Sunday,
        _ => return Err(format!("expected a weekday such as monday, got {text:?}")),
    };
    Ok(day)
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A file, a folder of .yaml/.yml/.json files, or - for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Replace $KEY and ${KEY} in the manifests before applying.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Check the manifests as an apply does and show how each spec would change, writing
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl Command {
    /// Whether this is a command a person runs and reads, not a long-running component.
    pub fn is_client(&self) -> bool {
        !matches!(
            self,
            Command::Up(_)
                | Command::Scheduler(_)
                | Command::Creditsys(_)
                | Command::Gc(_)
                | Command::Sim(_)
                | Command::Node(_)
        )
    }
}

/// How `dora get` prints: one of the formats, or a kubectl template.
#[derive(Debug, Clone)]
pub enum GetOutput {
    Format(Format),
    /// `jsonpath=TEMPLATE`, filled from the object, or from the list as `{"items": [...]}`.
    JsonPath(Template),
    /// `custom-columns=HEADER:.path,...`: a table of the paths' values per item.
    CustomColumns(Vec<(String, Path)>),
}

impl GetOutput {
    fn parse(text: &str) -> anyhow::Result<GetOutput> {
        if let Some(template) = text.strip_prefix("jsonpath=") {
            return Ok(GetOutput::JsonPath(Template::parse(template)?));
        }
        if let Some(spec) = text.strip_prefix("custom-columns=") {
            let columns = spec
                .split(',')
                .map(|column| {
                    let (header, path) = column.split_once(':').with_context(|| {
                        format!("custom-columns: {column:?} is not HEADER:.path")
                    })?;
                    Ok((header.to_string(), Path::parse(path)?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            return Ok(GetOutput::CustomColumns(columns));
        }
        Format::from_str(text, true).map(GetOutput::Format).map_err(|_| {
            anyhow::anyhow!(
                "-o {text:?}: use table, wide, yaml, json, jsonpath=TEMPLATE or custom-columns=HEADER:.path,..."
            )
        })
    }
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
    /// Kind: name, plural or alias (wk, c, vol, ws, rc, uc, gpu, cpu, def...), or a kind
    /// defined on the cluster.
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: Option<String>,
    /// table, wide, yaml, json, `jsonpath=TEMPLATE` (`'{.items[*].metadata.name}'`,
    /// `'{range .items[*]}{.metadata.name}{"\n"}{end}'`) or
    /// `custom-columns=HEADER:.path,...`.
    #[arg(short, long, default_value = "table", value_parser = GetOutput::parse)]
    pub output: GetOutput,
    /// Sort the list by the value at this path in each item, e.g. `.metadata.created`.
    #[arg(long, value_parser = Path::parse)]
    pub sort_by: Option<Path>,
    /// Keep watching and print changes.
    #[arg(short, long)]
    pub watch: bool,
    /// List every workspace of the zone.
    #[arg(short = 'A', long)]
    pub all_workspaces: bool,
    /// Print the command's JSON (same as -o json).
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// Only resources whose labels match, e.g. `-l team=demo,tier in (a,b),!gpu`.
    #[arg(short = 'l', long, conflicts_with = "name")]
    pub selector: Option<String>,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
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
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: Option<String>,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: Option<String>,
    /// Delete every resource of KIND whose labels match, e.g. `-l team=demo`.
    #[arg(short = 'l', long, requires = "kind", conflicts_with_all = ["name", "files"])]
    pub selector: Option<String>,
    /// Deleting a Definition: also delete every object of its kind (without it, a definition
    /// whose kind has objects is not deleted).
    #[arg(long)]
    pub cascade: bool,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `workload` (wk).
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: String,
    /// The new replica count.
    #[arg(long)]
    pub replicas: u32,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: String,
    /// What to wait for: `condition=Ready` (or any condition the status holds as true),
    /// `status=Running` (the status word), `delete`, or `jsonpath={.status.computed.ready}=3`.
    #[arg(long = "for", value_name = "CONDITION")]
    pub condition: String,
    /// Give up after this long (<n>s, <n>m, <n>h).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A kind, or a field path under it: `workload`, `wk.spec.replica.count`.
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub field: String,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: String,
    /// The generation to go back to, as `dora versions` lists them (default: the previous
    /// spec).
    #[arg(long, value_name = "GENERATION")]
    pub to: Option<u64>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[arg(
        required_unless_present = "files",
        add = ArgValueCompleter::new(crate::commands::completion::kinds)
    )]
    pub kind: Option<String>,
    #[arg(
        required_unless_present = "files",
        add = ArgValueCompleter::new(crate::commands::completion::names)
    )]
    pub name: Option<String>,
    /// The older generation, as `dora versions` lists them.
    #[arg(long, value_name = "GENERATION", required_unless_present = "files")]
    pub from: Option<u64>,
    /// The newer generation (default: the current one).
    #[arg(long, value_name = "GENERATION", requires = "from")]
    pub to: Option<u64>,
    /// Instead of two generations: a manifest file, a folder, or - for standard input, compared
    /// with what is stored.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name", "from", "to"])]
    pub files: Vec<PathBuf>,
    /// Replace $KEY and ${KEY} in the manifests first.
    #[arg(
        short = 'e',
        long = "env",
        value_name = "KEY=VALUE",
        requires = "files"
    )]
    pub env: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VersionsArgs {
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: String,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
    pub name: String,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::kinds))]
    pub kind: Option<String>,
    #[arg(add = ArgValueCompleter::new(crate::commands::completion::names))]
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
        /// Create a node credential for this node of the zone (-z) instead: it may only
        /// register and report for that node.
        #[arg(long, conflicts_with = "user")]
        node: Option<String>,
        /// Create a join token for the zone (-z) instead: each new node exchanges it once
        /// for a credential of its own (`dora node --join-token`).
        #[arg(long, conflicts_with_all = ["user", "node"])]
        join: bool,
    },
    /// List the tokens you may revoke: yours, and as an administrator everyone's, with their
    /// ids, expiry and last use (written every minute). Same as `dora get tokens`.
    List {
        /// Only the tokens of this user (`node:NAME` for node credentials, `join:ZONE` for
        /// join tokens).
        #[arg(long)]
        user: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Revoke tokens by id before they expire: every API server refuses them within a
    /// second. A node's credentials are also revoked when the Node is deleted.
    Revoke {
        /// Token ids, as `dora token create` and `dora token list` show them.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// List the client addresses the API server bans after failed authentications.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Lift the ban of a client address (as `dora ban list` shows it).
    Lift { address: String },
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
