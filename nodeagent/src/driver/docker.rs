//! The Docker driver: containers through the Docker Engine API (bollard), marked with Dora's
//! labels so that a restarted agent finds them. Docker never restarts them (restart policy
//! `no`): restarts are Dora's decision. Ends are learned from Docker's event stream.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, DeviceRequest,
    HostConfig, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use dora_crds::spec::{NetworkMode, Protocol, PullPolicy};
use dora_crds::status::ContainerState;
use dora_store::{ObjectKey, now_millis};
use futures::StreamExt;

use super::{Driver, ExecOutput, Exit, Exits, Instance, LogStream, Mount, Run, Usage, join, label};

/// Seconds a stopped container has between TERM and KILL.
const GRACE_SECS: i32 = 10;
/// The most output a one-off command returns.
const EXEC_OUTPUT: usize = 1 << 20;

/// Runs containers on the local Docker Engine.
pub struct DockerDriver {
    docker: Docker,
    cluster: String,
    node: String,
}

fn millis(text: Option<&str>) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(text?, &Rfc3339).ok()?;
    // Docker writes 0001-01-01T00:00:00Z for "never".
    (parsed.year() > 1970).then(|| (parsed.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn label_filter(cluster: &str, node: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={cluster}", label::CLUSTER),
            format!("{}={node}", label::NODE),
        ],
    )])
}

/// The Instance an inspected container is, when it carries Dora's labels.
fn instance_of(inspect: &ContainerInspectResponse) -> Option<Instance> {
    let labels = inspect.config.as_ref()?.labels.as_ref()?;
    let get = |name: &str| labels.get(name).cloned();
    let state = inspect.state.as_ref();
    let status = state.and_then(|s| s.status);
    let exit_code = state
        .and_then(|s| s.exit_code)
        .and_then(|c| i32::try_from(c).ok());
    let running = matches!(
        status,
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED)
    );
    let created = matches!(status, Some(ContainerStateStatusEnum::CREATED));
    let state_now = if running || created {
        ContainerState::Running
    } else if exit_code == Some(0) {
        ContainerState::Succeeded
    } else {
        ContainerState::Failed
    };
    let error = state
        .and_then(|s| s.error.clone())
        .filter(|e| !e.is_empty());
    Some(Instance {
        id: inspect.id.clone()?,
        key: ObjectKey::new(
            dora_crds::Kind::Container,
            &get(label::ZONE)?,
            &get(label::WORKSPACE)?,
            &get(label::NAME)?,
        ),
        epoch: get(label::EPOCH)?.parse().ok()?,
        restarts: get(label::RESTARTS)
            .and_then(|r| r.parse().ok())
            .unwrap_or_default(),
        state: state_now,
        exit_code: (!running && !created).then_some(exit_code).flatten(),
        started_at: millis(state.and_then(|s| s.started_at.as_deref())),
        finished_at: (!running && !created)
            .then(|| millis(state.and_then(|s| s.finished_at.as_deref())))
            .flatten(),
        reason: error.or_else(|| {
            state
                .and_then(|s| s.oom_killed)
                .filter(|oom| *oom)
                .map(|_| "OOMKilled".to_string())
        }),
    })
}

/// Docker container names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]`; Dora's names fit.
fn container_name(run: &Run) -> String {
    format!(
        "dora-{}-{}-{}-{}",
        run.key.zone, run.key.workspace, run.key.name, run.epoch
    )
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerDriver {
    /// Connects to the local Docker Engine (DOCKER_HOST or the default socket) and agrees on
    /// an API version; ends of the containers of `node` of `cluster` are sent to `exits`.
    pub async fn connect(cluster: &str, node: &str, exits: Exits) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .context("cannot connect to Docker")?
            .negotiate_version()
            .await
            .context("Docker does not answer; is dockerd running?")?;
        let version = docker.version().await.context("Docker does not answer")?;
        tracing::info!(version = ?version.version, api = ?version.api_version, "connected to Docker");
        let driver = DockerDriver {
            docker,
            cluster: cluster.to_string(),
            node: node.to_string(),
        };
        driver.follow_events(exits);
        Ok(driver)
    }

    /// Follows Docker's events for this node's containers and reports their ends; reconnects
    /// after a second when the stream breaks (the agent's periodic resync covers the gap).
    fn follow_events(&self, exits: Exits) {
        let docker = self.docker.clone();
        let mut filters = label_filter(&self.cluster, &self.node);
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), vec!["die".into()]);
        tokio::spawn(async move {
            loop {
                let options = EventsOptions {
                    since: None,
                    until: None,
                    filters: Some(filters.clone()),
                };
                let mut events = docker.events(Some(options));
                while let Some(event) = events.next().await {
                    let Ok(event) = event else { break };
                    let Some(id) = event.actor.and_then(|a| a.id) else {
                        continue;
                    };
                    let Ok(inspect) = docker.inspect_container(&id, None).await else {
                        continue;
                    };
                    if let Some(instance) = instance_of(&inspect) {
                        let exit = Exit {
                            id,
                            code: instance.exit_code,
                            finished_at: instance.finished_at.unwrap_or_else(now_millis),
                            reason: instance.reason,
                        };
                        if exits.send(exit).is_err() {
                            return;
                        }
                    }
                }
                if exits.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn has_image(&self, image: &str) -> anyhow::Result<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).context("cannot inspect the image"),
        }
    }

    async fn pull(&self, image: &str) -> anyhow::Result<()> {
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            step.with_context(|| format!("cannot pull {image}"))?;
        }
        Ok(())
    }
}

/// Docker's settings for a binding: what the placement gives it, volumes and ports; Docker
/// never restarts it.
fn host_config(run: &Run) -> HostConfig {
    let template = &run.spec.template;
    let placement = &run.placement;
    let mut host = HostConfig {
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        shm_size: template.config.shm_size.and_then(|s| i64::try_from(s).ok()),
        ..Default::default()
    };
    if !placement.cpus.is_empty() {
        host.cpuset_cpus = Some(join(&placement.cpus));
    } else if placement.millicpu > 0 {
        host.nano_cpus = i64::try_from(placement.millicpu * 1_000_000).ok();
    }
    if placement.memory_bytes > 0 {
        host.memory = i64::try_from(placement.memory_bytes).ok();
    }
    if !placement.gpus.is_empty() {
        host.device_requests = Some(vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(placement.gpus.iter().map(u32::to_string).collect()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]);
    }
    if !run.mounts.is_empty() {
        host.mounts = Some(run.mounts.iter().map(docker_mount).collect());
    }
    if let Some(network) = &template.network {
        host.network_mode = Some(
            match network.mode {
                NetworkMode::None => "none",
                NetworkMode::Bridge => "bridge",
                NetworkMode::Host => "host",
            }
            .into(),
        );
        let mut bindings = HashMap::new();
        for port in &network.ports {
            // One node port per replica: nodePort + replica index.
            let host_port = port
                .node_port
                .map(|p| (u32::from(p) + run.spec.index).to_string());
            bindings.insert(
                port_key(port.port, port.protocol),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port,
                }]),
            );
        }
        if !bindings.is_empty() {
            host.port_bindings = Some(bindings);
        }
    }
    host
}

/// A Local volume is a bind mount of its folder; an NFS volume a Docker local volume with
/// NFS options, so that the node needs no NFS mount of its own.
fn docker_mount(mount: &Mount) -> bollard::models::Mount {
    let mut docker = bollard::models::Mount {
        target: Some(mount.target.clone()),
        read_only: Some(mount.read_only),
        ..Default::default()
    };
    match (mount.server.as_deref(), mount.export.as_deref()) {
        (Some(server), Some(export)) if mount.kind == "NFS" => {
            let access = if mount.read_only { "ro" } else { "rw" };
            docker.typ = Some(MountType::VOLUME);
            docker.volume_options = Some(MountVolumeOptions {
                driver_config: Some(MountVolumeOptionsDriverConfig {
                    name: Some("local".into()),
                    options: Some(HashMap::from([
                        ("type".to_string(), "nfs".to_string()),
                        ("o".to_string(), format!("addr={server},{access},nfsvers=4")),
                        ("device".to_string(), format!(":{export}")),
                    ])),
                }),
                ..Default::default()
            });
        }
        _ => {
            docker.typ = Some(MountType::BIND);
            docker.source = Some(mount.source.clone());
        }
    }
    docker
}

/// A command attached through Docker's exec API.
struct DockerSession {
    docker: Docker,
    exec: String,
}

#[async_trait]
impl super::SessionControl for DockerSession {
    async fn resize(&self, cols: u16, rows: u16) -> anyhow::Result<()> {
        let size = bollard::exec::ResizeExecOptions {
            height: rows,
            width: cols,
        };
        self.docker.resize_exec(&self.exec, size).await?;
        Ok(())
    }

    async fn exit_code(&self) -> anyhow::Result<i32> {
        let inspect = self.docker.inspect_exec(&self.exec).await?;
        Ok(inspect
            .exit_code
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1))
    }
}

fn port_key(port: u16, protocol: Protocol) -> String {
    match protocol {
        Protocol::Tcp => format!("{port}/tcp"),
        Protocol::Udp => format!("{port}/udp"),
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn kind(&self) -> dora_crds::spec::Driver {
        dora_crds::spec::Driver::Docker
    }

    async fn list(&self) -> anyhow::Result<Vec<Instance>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(label_filter(&self.cluster, &self.node)),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .context("cannot list Docker containers")?;
        let mut instances = Vec::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            match self.docker.inspect_container(&id, None).await {
                Ok(inspect) => instances.extend(instance_of(&inspect)),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).context("cannot inspect a Docker container"),
            }
        }
        Ok(instances)
    }

    async fn start(
        &self,
        run: &Run,
        pulling: &(dyn Fn() + Send + Sync),
    ) -> anyhow::Result<Instance> {
        let template = &run.spec.template;
        let Some(image) = template.image.as_ref() else {
            bail!("the Docker driver needs an image: set spec.image.image");
        };
        let present = self.has_image(&image.image).await?;
        match image.pull_policy {
            PullPolicy::Always => {
                pulling();
                self.pull(&image.image).await?;
            }
            PullPolicy::IfNotPresent if !present => {
                pulling();
                self.pull(&image.image).await?;
            }
            PullPolicy::Never if !present => bail!(
                "image {} is not on the node and spec.image.pullPolicy is Never",
                image.image
            ),
            _ => {}
        }
        let argv = run.argv();
        let mut exposed = Vec::new();
        if let Some(network) = &template.network {
            exposed.extend(network.ports.iter().map(|p| port_key(p.port, p.protocol)));
        }
        // Its host name is the node's name, as $HOSTNAME says (on the host's network, the
        // machine's own).
        let on_host_network = template
            .network
            .as_ref()
            .is_some_and(|n| n.mode == NetworkMode::Host);
        let body = ContainerCreateBody {
            hostname: (!on_host_network).then(|| self.node.clone()),
            image: Some(image.image.clone()),
            cmd: (!argv.is_empty()).then_some(argv),
            env: Some(
                run.env()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(run.labels(&self.cluster, &self.node)),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host_config(run)),
            ..Default::default()
        };
        let name = container_name(run);
        // A copy left by a start that failed half-way is replaced.
        let _ = self
            .docker
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await
            .context("Docker refused to create the container")?;
        self.docker
            .start_container(&created.id, None)
            .await
            .context("Docker could not start the container")?;
        let inspect = self.docker.inspect_container(&created.id, None).await?;
        let mut instance =
            instance_of(&inspect).context("the new container lost its Dora labels")?;
        if instance.started_at.is_none() {
            instance.started_at = Some(now_millis());
        }
        Ok(instance)
    }

    async fn stop(&self, instance: &Instance) -> anyhow::Result<Option<Exit>> {
        let options = StopContainerOptions {
            signal: None,
            t: Some(GRACE_SECS),
        };
        match self
            .docker
            .stop_container(&instance.id, Some(options))
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e).context("Docker could not stop the container"),
        }
        let inspect = self.docker.inspect_container(&instance.id, None).await?;
        Ok(instance_of(&inspect).map(|ended| Exit {
            id: instance.id.clone(),
            code: ended.exit_code,
            finished_at: ended.finished_at.unwrap_or_else(now_millis),
            reason: ended.reason,
        }))
    }

    async fn remove(&self, instance: &Instance) -> anyhow::Result<()> {
        if instance.state == ContainerState::Running {
            self.stop(instance).await?;
        }
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .docker
            .remove_container(&instance.id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).context("Docker could not remove the container"),
        }
    }

    async fn logs(
        &self,
        instance: &Instance,
        follow: bool,
        tail: Option<usize>,
    ) -> anyhow::Result<LogStream> {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        let stream = self
            .docker
            .logs(&instance.id, Some(options))
            .map(|chunk| chunk.map(|c| c.into_bytes()).map_err(std::io::Error::other));
        Ok(Box::pin(stream))
    }

    async fn exec(&self, instance: &Instance, command: &[String]) -> anyhow::Result<ExecOutput> {
        if command.is_empty() {
            bail!("give a command to run");
        }
        let created = self
            .docker
            .create_exec(
                &instance.id,
                bollard::exec::CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(command.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .context("Docker could not run the command")?;
        let mut bytes = Vec::new();
        if let bollard::exec::StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&created.id, None).await?
        {
            while let Some(chunk) = output.next().await {
                if bytes.len() < EXEC_OUTPUT {
                    bytes.extend_from_slice(&chunk?.into_bytes());
                }
            }
        }
        bytes.truncate(EXEC_OUTPUT);
        let inspect = self.docker.inspect_exec(&created.id).await?;
        Ok(ExecOutput {
            exit_code: inspect
                .exit_code
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(-1),
            output: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    async fn attach(
        &self,
        instance: &Instance,
        command: &[String],
        tty: bool,
    ) -> anyhow::Result<super::Session> {
        if command.is_empty() {
            bail!("give a command to run");
        }
        let mut env = Vec::new();
        if tty {
            env.push("TERM=xterm-256color".to_string());
        }
        let created = self
            .docker
            .create_exec(
                &instance.id,
                bollard::exec::CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    env: Some(env),
                    cmd: Some(command.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .context("Docker could not run the command")?;
        let options = bollard::exec::StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        let bollard::exec::StartExecResults::Attached { output, input } =
            self.docker.start_exec(&created.id, Some(options)).await?
        else {
            bail!("Docker started the command detached");
        };
        let output: LogStream = Box::pin(
            output.map(|chunk| chunk.map(|c| c.into_bytes()).map_err(std::io::Error::other)),
        );
        Ok(super::Session {
            input,
            output,
            control: Box::new(DockerSession {
                docker: self.docker.clone(),
                exec: created.id,
            }),
        })
    }

    async fn top(&self, instance: &Instance) -> anyhow::Result<Usage> {
        let options = StatsOptions {
            stream: false,
            one_shot: false,
        };
        let stats = self
            .docker
            .stats(&instance.id, Some(options))
            .next()
            .await
            .context("Docker sent no statistics")??;
        let total = |s: &Option<bollard::models::ContainerCpuStats>| {
            s.as_ref()
                .and_then(|s| s.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or_default()
        };
        let system = |s: &Option<bollard::models::ContainerCpuStats>| {
            s.as_ref()
                .and_then(|s| s.system_cpu_usage)
                .unwrap_or_default()
        };
        let cpu_delta = total(&stats.cpu_stats).saturating_sub(total(&stats.precpu_stats));
        let system_delta = system(&stats.cpu_stats).saturating_sub(system(&stats.precpu_stats));
        let cpus = stats
            .cpu_stats
            .as_ref()
            .and_then(|s| s.online_cpus)
            .unwrap_or(1);
        let cpu_percent = if system_delta > 0 {
            cpu_delta as f64 / system_delta as f64 * f64::from(cpus) * 100.0
        } else {
            0.0
        };
        Ok(Usage {
            cpu_percent: (cpu_percent * 10.0).round() / 10.0,
            memory_bytes: stats.memory_stats.and_then(|m| m.usage).unwrap_or_default(),
            processes: stats
                .pids_stats
                .and_then(|p| p.current)
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use dora_crds::spec::{ContainerSpec, Network, Port};
    use dora_crds::status::Placement;

    use super::*;

    fn run(placement: Placement, mounts: Vec<Mount>) -> Run {
        let mut spec = ContainerSpec {
            workload: "train".into(),
            index: 2,
            hash: "h".into(),
            template: Default::default(),
        };
        spec.template.config.shm_size = Some(1 << 30);
        spec.template.network = Some(Network {
            mode: NetworkMode::Bridge,
            ports: vec![Port {
                name: "web".into(),
                kind: Default::default(),
                protocol: Protocol::Tcp,
                port: 8080,
                node_port: Some(30000),
            }],
        });
        Run {
            key: ObjectKey::new(dora_crds::Kind::Container, "z", "w", "train.2"),
            epoch: 3,
            spec,
            placement,
            mounts,
        }
    }

    #[test]
    fn placements_become_docker_settings() {
        let placement = Placement {
            gpus: vec![1, 3],
            cpus: vec![4, 5],
            millicpu: 2000,
            memory_bytes: 8 << 30,
            ..Placement::default()
        };
        let host = host_config(&run(placement, Vec::new()));
        let gpus = &host.device_requests.as_ref().unwrap()[0];
        assert_eq!(
            gpus.device_ids.as_deref(),
            Some(&["1".to_string(), "3".to_string()][..])
        );
        assert_eq!(gpus.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert_eq!(host.cpuset_cpus.as_deref(), Some("4,5"));
        assert_eq!(host.nano_cpus, None, "a CPU set, not a share");
        assert_eq!(host.memory, Some(8 << 30));
        assert_eq!(host.shm_size, Some(1 << 30));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        let binding = &host.port_bindings.unwrap()["8080/tcp"];
        assert_eq!(
            binding.as_ref().unwrap()[0].host_port.as_deref(),
            Some("30002"),
            "nodePort + replica index"
        );

        let shared = Placement {
            millicpu: 500,
            ..Placement::default()
        };
        let host = host_config(&run(shared, Vec::new()));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.cpuset_cpus, None);
        assert_eq!(host.device_requests, None);
    }

    #[test]
    fn local_volumes_bind_and_nfs_volumes_mount_through_docker() {
        let local = Mount {
            name: "data".into(),
            source: "/srv/dora/w/data".into(),
            target: "/data".into(),
            read_only: true,
            kind: "Local".into(),
            server: None,
            export: None,
        };
        let nfs = Mount {
            name: "sets".into(),
            source: "/mnt/nfs/w/sets".into(),
            target: "/sets".into(),
            read_only: false,
            kind: "NFS".into(),
            server: Some("10.0.0.5".into()),
            export: Some("/export/w/sets".into()),
        };
        let host = host_config(&run(Placement::default(), vec![local, nfs]));
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/dora/w/data"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        let options = mounts[1]
            .volume_options
            .as_ref()
            .and_then(|o| o.driver_config.as_ref())
            .and_then(|d| d.options.as_ref())
            .unwrap();
        assert_eq!(options["type"], "nfs");
        assert_eq!(options["o"], "addr=10.0.0.5,rw,nfsvers=4");
        assert_eq!(options["device"], ":/export/w/sets");
    }
}
