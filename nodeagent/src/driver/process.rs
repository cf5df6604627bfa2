//! The process driver: a container is the workload's command run as a child process in its
//! own process group, in a folder of its own under the driver's root:
//!
//! ```text
//! <root>/<zone>/<workspace>/<name>/<epoch>/
//!     meta.json     what runs: key, epoch, pid, start time, environment
//!     output.log    standard output and standard error
//!     exit.json     how it ended
//!     work/         its working directory
//! ```
//!
//! The files let a restarted agent find what it runs (the processes outlive it) and read how
//! they ended. Stopping signals the whole process group, and removing a container stops what
//! its main process left behind in it.
//!
//! A container, and every command run in it, gets only its own environment ([`Run::env`] with
//! `PATH` and `HOME` defaults) and its standard input, output and error (every other
//! descriptor of the agent is close-on-exec). A root agent runs it as its process user
//! (`nobody` unless told otherwise), with no supplementary group, no capability and no way to
//! gain one (`no_new_privs`): the agent's files (its credential, the containers' `meta.json`)
//! are closed to it. The folders down to `work/` may be searched, not listed, by others; `work/`
//! belongs to the process user. A root agent told to run containers as root gives them only the
//! capabilities Docker gives a container by default ([`confine`]); an agent that is not root
//! runs them as itself. This is not a sandbox (see the README).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use bytes::Bytes;
use dora_crds::status::ContainerState;
use dora_store::{ObjectKey, now_millis};
use rustix::process::{Pid, Signal};
use rustix::thread::CapabilitySet;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::{
    Driver, ExecOutput, Exit, Exits, Instance, LogStream, Run, Usage, logfile, private_file,
};
use crate::user::User;

/// How long a stopped container has between TERM and KILL.
const GRACE: Duration = Duration::from_secs(10);
/// How often an adopted process (not our child) is checked for its end.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// How often a followed log is read for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// The most output a one-off command returns.
const EXEC_OUTPUT: usize = 1 << 20;
/// A container's `PATH` unless its workload sets one (Docker's default).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    zone: String,
    workspace: String,
    name: String,
    epoch: u64,
    restarts: u32,
    pid: i32,
    /// The process's start time in clock ticks since boot, so that a reused pid is not
    /// mistaken for it.
    start_ticks: u64,
    started_at: i64,
    env: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExitFile {
    code: Option<i32>,
    finished_at: i64,
    reason: Option<String>,
}

/// Runs containers as process groups under `root`.
pub struct ProcessDriver {
    root: PathBuf,
    /// Who containers run as, when not the agent's own user.
    user: Option<User>,
    exits: Exits,
}

/// One process's line of /proc/PID/stat, the fields we use.
struct Stat {
    /// Ended but not yet reaped.
    zombie: bool,
    pgrp: i32,
    ticks: u64,
    start_ticks: u64,
    rss_pages: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split(' ').collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        zombie: *fields.first()? == "Z",
        pgrp: fields.get(2)?.parse().ok()?,
        ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        rss_pages: field(24)?,
    })
}

/// Whether `meta`'s process still runs (and is not a zombie, nor another process that got
/// its pid).
fn alive(meta: &Meta) -> bool {
    read_stat(meta.pid).is_some_and(|stat| stat.start_ticks == meta.start_ticks && !stat.zombie)
}

/// Whether any process of `meta`'s container still runs: its main one, or one that the main
/// one left behind in its process group (started no earlier, and with the container's
/// `DORA_CONTAINER`, so that a group that merely got the same number is not mistaken for it).
fn group_alive(meta: &Meta) -> bool {
    if alive(meta) {
        return true;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    let identity = format!("DORA_CONTAINER={}", meta.name);
    entries.flatten().any(|entry| {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            return false;
        };
        read_stat(pid).is_some_and(|stat| {
            stat.pgrp == meta.pid && !stat.zombie && stat.start_ticks >= meta.start_ticks
        }) && std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == identity.as_bytes()))
    })
}

/// A process's exit code, or 128 + the signal that killed it, as shells report it.
fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.code().or(status.signal().map(|s| 128 + s))
}

fn signal_group(pid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        // It may have ended already; nothing to do then.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

async fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(value)?;
    let temporary = path.with_extension("tmp");
    write_private(&temporary, &bytes)
        .await
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    tokio::fs::rename(&temporary, path).await?;
    Ok(())
}

/// Writes a file only the agent's user can read: it may hold a workload's secrets.
async fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = private_file(path).await?;
    file.write_all(bytes).await?;
    file.flush().await
}

/// Capabilities a container started by a root agent keeps: Docker's default set.
const KEPT_CAPABILITIES: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// Run in the child between fork and exec: when the agent is root, drops every capability
/// Docker does not give a container (`SYS_PTRACE` among them, without which the agent's
/// `/proc/PID/environ`, memory and descriptors stay closed to the container, the agent being
/// non-dumpable) from the bounding and inheritable sets, so that no program the container
/// runs gets them back. Only system calls: nothing here allocates.
fn confine() -> std::io::Result<()> {
    use rustix::thread::{
        capabilities, capability_is_in_bounding_set, clear_ambient_capability_set,
        remove_capability_from_bounding_set, set_capabilities,
    };
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    for bit in 0..u64::BITS {
        let capability = CapabilitySet::from_bits_retain(1 << bit);
        // A bit the kernel does not know reads as an error: nothing to drop.
        if !KEPT_CAPABILITIES.contains(capability)
            && capability_is_in_bounding_set(capability).unwrap_or(false)
        {
            remove_capability_from_bounding_set(capability)?;
        }
    }
    let mut sets = capabilities(None)?;
    sets.inheritable = CapabilitySet::empty();
    set_capabilities(None, sets)?;
    // Kernels before 4.3 have no ambient set.
    let _ = clear_ambient_capability_set();
    Ok(())
}

/// Marks every descriptor of the agent above standard error close-on-exec. Rust opens its own
/// so, but the agent may have inherited some from whoever started it (a jobserver's pipe, say)
/// and a C library (NVML) may open some without: none of them is a container's.
fn close_on_exec() -> std::io::Result<()> {
    use rustix::io::{FdFlags, fcntl_getfd, fcntl_setfd};
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let name = entry?.file_name();
        let Some(fd) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if fd <= 2 {
            continue;
        }
        // SAFETY: only the descriptor's flags change; one closed since it was listed (the
        // listing's own among them) fails, or a new one gets a flag it should have anyway.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Ok(flags) = fcntl_getfd(fd)
            && !flags.contains(FdFlags::CLOEXEC)
        {
            let _ = fcntl_setfd(fd, flags | FdFlags::CLOEXEC);
        }
    }
    Ok(())
}

/// Fails, saying what to do, when `user` could not reach containers' folders under `root`.
pub fn reachable(root: &Path, user: Option<&User>) -> anyhow::Result<()> {
    let Some((user, blocked)) = user.and_then(|u| Some((u, u.blocked_at(root)?))) else {
        return Ok(());
    };
    bail!(
        "Process containers run as {} (uid {}), who cannot reach {}: {} is closed to them. \
         Keep the node's state in a folder others may search (such as /var/lib/dora), open \
         {} to others with `chmod o+x`, or run containers as root with --process-user root",
        user.name,
        user.uid,
        root.display(),
        blocked.display(),
        blocked.display()
    )
}

/// Run in the child of a root agent that has just become `user`: no program it runs may
/// gain privileges (a set-user-ID file, file capabilities). Only a system call.
fn no_new_privileges() -> std::io::Result<()> {
    rustix::thread::set_no_new_privs(true)?;
    Ok(())
}

/// A command to run in the container in `dir`, as `user` (or the agent's user), with its
/// environment `env` and nothing of the agent's: no variable, no descriptor but those it is
/// given, no capability Docker would not give.
fn container_command(
    program: &str,
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
    user: Option<&User>,
) -> anyhow::Result<tokio::process::Command> {
    close_on_exec().context("cannot mark the agent's descriptors close-on-exec")?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    match user {
        // The child drops its supplementary groups, then takes the user's group and id
        // (which clears its capabilities), before `pre_exec`.
        Some(user) => {
            command.uid(user.uid).gid(user.gid);
            // SAFETY: only a system call, which is allowed between fork and exec.
            unsafe {
                command.pre_exec(no_new_privileges);
            }
        }
        // SAFETY: `confine` makes only system calls, which is allowed between fork and exec.
        None => unsafe {
            command.pre_exec(confine);
        },
    }
    Ok(command)
}

async fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl ProcessDriver {
    /// A driver keeping its containers under `root` and running them as `user` (the agent's
    /// own user when `None` or root); ends are sent to `exits`.
    ///
    /// Fails when `user` could not reach its containers' folders under `root`.
    pub fn new(root: impl Into<PathBuf>, user: Option<User>, exits: Exits) -> anyhow::Result<Self> {
        let root = root.into();
        let user = user.filter(|user| !user.is_root());
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let mode = if user.is_some() { 0o711 } else { 0o700 };
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(mode))?;
        reachable(&root, user.as_ref())?;
        Ok(ProcessDriver { root, user, exits })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn id_of(key: &ObjectKey, epoch: u64) -> String {
        format!("{}/{}/{}/{epoch}", key.zone, key.workspace, key.name)
    }

    async fn meta(&self, id: &str) -> anyhow::Result<Meta> {
        read_json(&self.dir(id).join("meta.json"))
            .await
            .with_context(|| format!("container {id} has no readable meta.json"))
    }

    /// Waits for our own child to end, records how and tells the agent.
    fn watch_child(&self, id: String, mut child: tokio::process::Child) {
        let dir = self.dir(&id);
        let exits = self.exits.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let code = match status {
                Ok(status) => exit_code(status),
                Err(_) => None,
            };
            let exit = ExitFile {
                code,
                finished_at: now_millis(),
                reason: None,
            };
            record_exit(&dir, &id, exit, &exits).await;
        });
    }

    /// Waits for an adopted process (not our child) to end; its exit code is lost.
    fn watch_adopted(&self, id: String, meta: Meta) {
        let dir = self.dir(&id);
        let exits = self.exits.clone();
        tokio::spawn(async move {
            while alive(&meta) {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            if dir.join("exit.json").exists() {
                return;
            }
            let exit = ExitFile {
                code: None,
                finished_at: now_millis(),
                reason: Some("ended while the agent was restarting; exit code unknown".into()),
            };
            record_exit(&dir, &id, exit, &exits).await;
        });
    }

    /// Every container folder under the root: `<zone>/<ws>/<name>/<epoch>`.
    async fn ids(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = vec![String::new()];
        for _ in 0..4 {
            let mut deeper = Vec::new();
            for id in ids {
                let Ok(mut entries) = tokio::fs::read_dir(self.root.join(&id)).await else {
                    continue;
                };
                while let Some(entry) = entries.next_entry().await? {
                    if entry.file_type().await?.is_dir() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        deeper.push(if id.is_empty() {
                            name
                        } else {
                            format!("{id}/{name}")
                        });
                    }
                }
            }
            ids = deeper;
        }
        Ok(ids)
    }
}

async fn record_exit(dir: &Path, id: &str, exit: ExitFile, exits: &Exits) {
    if !dir.exists() {
        // Removed while it ran: nobody wants to know how it ended.
        return;
    }
    if let Err(e) = write_json(&dir.join("exit.json"), &exit).await {
        tracing::warn!(container = id, error = %e, "cannot record how a process ended");
    }
    let _ = exits.send(Exit {
        id: id.to_string(),
        code: exit.code,
        finished_at: exit.finished_at,
        reason: exit.reason,
    });
}

#[async_trait]
impl Driver for ProcessDriver {
    fn kind(&self) -> dora_crds::spec::Driver {
        dora_crds::spec::Driver::Process
    }

    async fn list(&self) -> anyhow::Result<Vec<Instance>> {
        let mut instances = Vec::new();
        for id in self.ids().await? {
            let Ok(meta) = self.meta(&id).await else {
                // A start that failed half-way: nothing runs there.
                let _ = tokio::fs::remove_dir_all(self.dir(&id)).await;
                continue;
            };
            let ended: Option<ExitFile> = read_json(&self.dir(&id).join("exit.json")).await;
            let mut instance = Instance {
                id: id.clone(),
                key: ObjectKey::new(
                    dora_crds::Kind::Container,
                    &meta.zone,
                    &meta.workspace,
                    &meta.name,
                ),
                epoch: meta.epoch,
                restarts: meta.restarts,
                state: ContainerState::Running,
                exit_code: None,
                started_at: Some(meta.started_at),
                finished_at: None,
                reason: None,
            };
            match ended {
                Some(exit) => instance.ended(&Exit {
                    id: id.clone(),
                    code: exit.code,
                    finished_at: exit.finished_at,
                    reason: exit.reason,
                }),
                None if alive(&meta) => self.watch_adopted(id.clone(), meta),
                None => {
                    let exit = ExitFile {
                        code: None,
                        finished_at: now_millis(),
                        reason: Some("ended while the agent was away; exit code unknown".into()),
                    };
                    instance.ended(&Exit {
                        id: id.clone(),
                        code: None,
                        finished_at: exit.finished_at,
                        reason: exit.reason.clone(),
                    });
                    write_json(&self.dir(&id).join("exit.json"), &exit).await?;
                }
            }
            instances.push(instance);
        }
        Ok(instances)
    }

    async fn start(
        &self,
        run: &Run,
        _pulling: &(dyn Fn() + Send + Sync),
    ) -> anyhow::Result<Instance> {
        let argv = run.argv();
        let Some((program, args)) = argv.split_first() else {
            bail!("the Process driver needs a command: set spec.config.cmd");
        };
        let id = Self::id_of(&run.key, run.epoch);
        let dir = self.dir(&id);
        if dir.exists() {
            // A start that failed half-way, or a copy nobody wants any more.
            tokio::fs::remove_dir_all(&dir).await?;
        }
        let work = dir.join("work");
        // Searched by the process user, listed by nobody else.
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir)
            .await?;
        tokio::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .await?;
        if let Some(user) = &self.user {
            user.own(&work)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("output.log"))?;
        let env = run.env_over(vec![
            ("PATH".into(), PATH.into()),
            ("HOME".into(), work.to_string_lossy().into_owned()),
        ]);
        let mut command = container_command(program, args, &work, &env, self.user.as_ref())?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let child = command
            .spawn()
            .with_context(|| format!("cannot run {program:?}"))?;
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .context("the process ended before it could be watched")?;
        let started_at = now_millis();
        let meta = Meta {
            zone: run.key.zone.clone(),
            workspace: run.key.workspace.clone(),
            name: run.key.name.clone(),
            epoch: run.epoch,
            restarts: run.placement.restarts,
            pid,
            start_ticks: read_stat(pid).map(|s| s.start_ticks).unwrap_or_default(),
            started_at,
            env,
        };
        write_json(&dir.join("meta.json"), &meta).await?;
        self.watch_child(id.clone(), child);
        Ok(Instance::started(id, run, started_at))
    }

    async fn stop(&self, instance: &Instance) -> anyhow::Result<Option<Exit>> {
        let meta = self.meta(&instance.id).await?;
        let exit_path = self.dir(&instance.id).join("exit.json");
        if group_alive(&meta) {
            signal_group(meta.pid, Signal::TERM);
            let deadline = tokio::time::Instant::now() + GRACE;
            while group_alive(&meta) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            signal_group(meta.pid, Signal::KILL);
        }
        // Our child's waiter records the end; give it a moment.
        for _ in 0..40 {
            if let Some(exit) = read_json::<ExitFile>(&exit_path).await {
                return Ok(Some(Exit {
                    id: instance.id.clone(),
                    code: exit.code,
                    finished_at: exit.finished_at,
                    reason: exit.reason,
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(None)
    }

    async fn remove(&self, instance: &Instance) -> anyhow::Result<()> {
        if let Ok(meta) = self.meta(&instance.id).await
            && group_alive(&meta)
        {
            self.stop(instance).await?;
        }
        let dir = self.dir(&instance.id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
        // The container's folder goes with its last epoch (remove_dir keeps a non-empty one).
        if let Some(parent) = dir.parent() {
            let _ = tokio::fs::remove_dir(parent).await;
        }
        Ok(())
    }

    /// Moves the output file there: a process still running goes on writing to it until it
    /// is stopped.
    async fn save_output(&self, instance: &Instance, path: &Path) -> anyhow::Result<()> {
        let output = self.dir(&instance.id).join("output.log");
        tokio::fs::rename(&output, path)
            .await
            .with_context(|| format!("cannot move {} to {}", output.display(), path.display()))
    }

    async fn logs(
        &self,
        instance: &Instance,
        follow: bool,
        tail: Option<usize>,
    ) -> anyhow::Result<LogStream> {
        let dir = self.dir(&instance.id);
        let (file, first) = logfile::open(&dir.join("output.log"), tail)
            .await
            .context("the container has no output yet")?;
        let exit_path = dir.join("exit.json");
        let stream = futures::stream::unfold(
            (file, Some(first), follow),
            move |(mut file, first, follow)| {
                let exit_path = exit_path.clone();
                async move {
                    if let Some(first) = first.filter(|f| !f.is_empty()) {
                        return Some((Ok(Bytes::from(first)), (file, None, follow)));
                    }
                    if !follow {
                        return None;
                    }
                    loop {
                        // Look for the end first: output written before it is still read.
                        let ended = exit_path.exists();
                        let mut more = Vec::new();
                        if let Err(e) = file.read_to_end(&mut more).await {
                            return Some((Err(e), (file, None, false)));
                        }
                        if !more.is_empty() {
                            return Some((Ok(Bytes::from(more)), (file, None, true)));
                        }
                        if ended {
                            return None;
                        }
                        tokio::time::sleep(FOLLOW_POLL).await;
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    async fn exec(&self, instance: &Instance, command: &[String]) -> anyhow::Result<ExecOutput> {
        let Some((program, args)) = command.split_first() else {
            bail!("give a command to run");
        };
        let meta = self.meta(&instance.id).await?;
        let work = self.dir(&instance.id).join("work");
        let output = container_command(program, args, &work, &meta.env, self.user.as_ref())?
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("cannot run {program:?}"))?;
        let mut bytes = output.stdout;
        bytes.extend(output.stderr);
        bytes.truncate(EXEC_OUTPUT);
        Ok(ExecOutput {
            exit_code: exit_code(output.status).unwrap_or(-1),
            output: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    async fn attach(
        &self,
        instance: &Instance,
        command: &[String],
        tty: bool,
    ) -> anyhow::Result<super::Session> {
        let Some((program, args)) = command.split_first() else {
            bail!("give a command to run");
        };
        let meta = self.meta(&instance.id).await?;
        let work = self.dir(&instance.id).join("work");
        let mut process = container_command(program, args, &work, &meta.env, self.user.as_ref())?;
        process.kill_on_drop(true);
        let (input, output, terminal): (
            std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
            LogStream,
            _,
        ) = if tty {
            let (master, subsidiary) = open_pty()?;
            if let Some(user) = &self.user {
                std::os::unix::fs::fchown(&subsidiary, Some(user.uid), Some(user.gid))
                    .context("cannot give the terminal to the process user")?;
            }
            process
                .env("TERM", "xterm-256color")
                .stdin(subsidiary.try_clone()?)
                .stdout(subsidiary.try_clone()?)
                .stderr(subsidiary);
            let reader = std::fs::File::from(master.try_clone()?);
            let writer = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
            (Box::pin(writer), blocking_stream(reader), Some(master))
        } else {
            process
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            (
                Box::pin(tokio::io::sink()),
                Box::pin(futures::stream::empty()) as LogStream,
                None,
            )
        };
        let mut child = process
            .spawn()
            .with_context(|| format!("cannot run {program:?}"))?;
        // The command holds the terminal now; our copies of its end would keep it open.
        drop(process);
        let (input, output) = match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(stdin), Some(stdout), Some(stderr)) => {
                let stdout = tokio_util::io::ReaderStream::new(stdout);
                let stderr = tokio_util::io::ReaderStream::new(stderr);
                let merged: LogStream = Box::pin(futures::stream::select(stdout, stderr));
                (
                    Box::pin(stdin) as std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
                    merged,
                )
            }
            _ => (input, output),
        };
        let (done, exit) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => exit_code(status),
                Err(_) => None,
            };
            let _ = done.send(Some(code.unwrap_or(-1)));
        });
        Ok(super::Session {
            input,
            output,
            control: Box::new(ProcessSession { terminal, exit }),
        })
    }

    async fn top(&self, instance: &Instance) -> anyhow::Result<Usage> {
        let meta = self.meta(&instance.id).await?;
        if !alive(&meta) {
            return Ok(Usage::default());
        }
        let window = Duration::from_millis(250);
        let before = group_stats(meta.pid);
        tokio::time::sleep(window).await;
        let after = group_stats(meta.pid);
        let ticks_per_second = rustix::param::clock_ticks_per_second() as f64;
        let used = after.0.saturating_sub(before.0) as f64 / ticks_per_second;
        Ok(Usage {
            cpu_percent: (used / window.as_secs_f64() * 100.0 * 10.0).round() / 10.0,
            memory_bytes: after.1 * rustix::param::page_size() as u64,
            processes: after.2,
        })
    }
}

/// A terminal: the master side of a new pseudo-terminal, and its subsidiary opened for the
/// child.
fn open_pty() -> anyhow::Result<(std::os::fd::OwnedFd, std::fs::File)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let subsidiary = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))
        .context("cannot open the terminal")?;
    Ok((master, subsidiary))
}

/// Reads `reader` on a blocking thread into a stream; a terminal whose every writer has gone
/// reads as an error (EIO), which ends the stream like the end of a pipe.
fn blocking_stream(mut reader: impl std::io::Read + Send + 'static) -> LogStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 16 << 10];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buffer[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A command attached to a caller: its terminal (if any) and how it ends.
struct ProcessSession {
    terminal: Option<std::os::fd::OwnedFd>,
    exit: tokio::sync::watch::Receiver<Option<i32>>,
}

#[async_trait]
impl super::SessionControl for ProcessSession {
    async fn resize(&self, cols: u16, rows: u16) -> anyhow::Result<()> {
        if let Some(terminal) = &self.terminal {
            let size = rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            rustix::termios::tcsetwinsize(terminal, size)?;
        }
        Ok(())
    }

    async fn exit_code(&self) -> anyhow::Result<i32> {
        let mut exit = self.exit.clone();
        let code = exit.wait_for(Option::is_some).await?;
        Ok(code.unwrap_or(-1))
    }
}

/// CPU ticks, resident pages and process count of process group `pgrp`.
fn group_stats(pgrp: i32) -> (u64, u64, u32) {
    let mut total = (0, 0, 0);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(stat) = read_stat(pid).filter(|s| s.pgrp == pgrp) {
            total.0 += stat.ticks;
            total.1 += stat.rss_pages;
            total.2 += 1;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_and_garbage_does_not() {
        let line = "42 (a (b) c) Z 1 42 42 0 -1 4194560 0 0 0 0 7 3 0 0 20 0 1 0 9999 0 12";
        let stat = parse_stat(line).unwrap();
        assert!(stat.zombie);
        assert_eq!(
            (stat.pgrp, stat.ticks, stat.start_ticks, stat.rss_pages),
            (42, 10, 9999, 12)
        );
        for garbage in ["", ")", "1 (x)", "1 (x) R", "1 (x) R 1 x"] {
            assert!(parse_stat(garbage).is_none(), "{garbage:?}");
        }
    }

    #[test]
    fn our_own_process_reads_as_alive() {
        let pid = std::process::id() as i32;
        let stat = read_stat(pid).unwrap();
        let meta = Meta {
            zone: "z".into(),
            workspace: "w".into(),
            name: "n".into(),
            epoch: 1,
            restarts: 0,
            pid,
            start_ticks: stat.start_ticks,
            started_at: 0,
            env: Vec::new(),
        };
        assert!(alive(&meta));
        assert!(!alive(&Meta {
            start_ticks: stat.start_ticks + 1,
            ..meta
        }));
    }
}
