//! The node API, served over HTTPS to the API server only: the node's certificate comes from
//! the cluster CA, and a caller must present a client certificate from the API server's own
//! CA, which signs nothing else (so one node cannot call another).
//!
//! - `GET  /v1/containers/{workspace}/{name}/logs?follow=true&tail=N&previous=true`
//! - `POST /v1/containers/{workspace}/{name}/exec` with `{"command": [...]}`
//! - `GET  /v1/containers/{workspace}/{name}/attach?tty=true&command=["sh"]`: a WebSocket
//!   session (a shell)
//! - `GET  /v1/containers/{workspace}/{name}/top`
//! - `GET  /v1/top`: every container's use
//! - `GET  /v1/files/PATH?root=FOLDER`: a folder's entries (`&recursive=true`: all under it),
//!   or a file's contents (`&offset=N`: from byte N)
//! - `PUT  /v1/files/PATH?root=FOLDER&size=N&offset=M&mtime=MS`: an upload, resumable from
//!   `offset`; the file gets modification time `mtime` when complete
//! - `DELETE /v1/files/PATH?root=FOLDER&recursive=true`: removes a file or folder

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::driver::{Session, SessionControl};
use crate::files::Volume;

/// An error as the API server shapes them, so that it can relay it unchanged.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let reason = if self.0 == StatusCode::NOT_FOUND {
            "NotFound"
        } else {
            "NodeError"
        };
        (
            self.0,
            axum::Json(json!({"error": {"reason": reason, "message": self.1}})),
        )
            .into_response()
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

type Found = (crate::driver::Instance, Arc<dyn crate::driver::Driver>);

fn find(agent: &Agent, workspace: &str, name: &str) -> Result<Found, Failure> {
    agent.find(workspace, name).ok_or_else(|| {
        Failure(
            StatusCode::NOT_FOUND,
            format!("container {workspace}/{name} does not run on this node (yet)"),
        )
    })
}

/// A container that runs now, to run a command in.
fn find_running(agent: &Agent, workspace: &str, name: &str) -> Result<Found, Failure> {
    let found = find(agent, workspace, name)?;
    if found.0.state != dora_crds::status::ContainerState::Running {
        return Err(Failure(
            StatusCode::CONFLICT,
            format!(
                "container {name} is {}, not Running",
                found.0.state.as_str()
            ),
        ));
    }
    Ok(found)
}

#[derive(Deserialize)]
struct LogParams {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
    /// The run before the current one, which has ended: not followed.
    #[serde(default)]
    previous: bool,
}

async fn logs(
    State(agent): State<Arc<Agent>>,
    Path((workspace, name)): Path<(String, String)>,
    Query(params): Query<LogParams>,
) -> Result<Response, Failure> {
    let stream = if params.previous {
        agent
            .previous_logs(&workspace, &name, params.tail)
            .await?
            .ok_or_else(|| {
                Failure(
                    StatusCode::NOT_FOUND,
                    format!(
                        "node {} keeps no previous run of container {name}: the run before its current one was on another node, or its output could not be kept",
                        agent.config().name
                    ),
                )
            })?
    } else {
        let (instance, driver) = find(&agent, &workspace, &name)?;
        driver.logs(&instance, params.follow, params.tail).await?
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecRequest {
    command: Vec<String>,
}

async fn exec(
    State(agent): State<Arc<Agent>>,
    Path((workspace, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let request: ExecRequest = serde_json::from_slice(&body).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"command\": [...]}}: {e}"),
        )
    })?;
    let (instance, driver) = find_running(&agent, &workspace, &name)?;
    let output = driver.exec(&instance, &request.command).await?;
    Ok(axum::Json(output).into_response())
}

#[derive(Deserialize)]
struct AttachParams {
    #[serde(default)]
    tty: bool,
    /// The command as a JSON list.
    command: String,
}

/// A control message from the caller: a new terminal size, or the end of its input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Control {
    Resize { cols: u16, rows: u16 },
    Eof,
}

async fn attach(
    State(agent): State<Arc<Agent>>,
    Path((workspace, name)): Path<(String, String)>,
    Query(params): Query<AttachParams>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Failure> {
    let command: Vec<String> = serde_json::from_str(&params.command).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("command must be a JSON list of strings: {e}"),
        )
    })?;
    let (instance, driver) = find_running(&agent, &workspace, &name)?;
    let session = driver.attach(&instance, &command, params.tty).await?;
    Ok(upgrade.on_upgrade(move |socket| relay_session(socket, session)))
}

/// Binary messages carry the terminal's bytes both ways; text messages carry control
/// (`{"resize": {"cols", "rows"}}`, `"eof"`) in, and `{"exitCode": N}` out at the end.
async fn relay_session(socket: WebSocket, session: Session) {
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    let (mut sink, mut incoming) = socket.split();
    let Session {
        input,
        mut output,
        control,
    } = session;
    let mut input = Some(input);
    let control: Arc<dyn SessionControl> = Arc::from(control);
    let resizer = control.clone();
    let typing = tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            match message {
                Message::Binary(bytes) => {
                    let Some(writer) = input.as_mut() else {
                        continue;
                    };
                    if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                        return;
                    }
                }
                Message::Text(text) => match serde_json::from_str::<Control>(&text) {
                    Ok(Control::Resize { cols, rows }) => {
                        if let Err(e) = resizer.resize(cols, rows).await {
                            tracing::debug!(error = %format!("{e:#}"), "resize failed");
                        }
                    }
                    // Closing its input is how the command learns the input ended.
                    Ok(Control::Eof) => {
                        if let Some(mut writer) = input.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                    Err(_) => {}
                },
                Message::Close(_) => return,
                _ => {}
            }
        }
    });
    while let Some(chunk) = output.next().await {
        let Ok(chunk) = chunk else { break };
        if sink.send(Message::Binary(chunk)).await.is_err() {
            typing.abort();
            return;
        }
    }
    let code = control.exit_code().await.unwrap_or(-1);
    let end = json!({ "exitCode": code }).to_string();
    let _ = sink.send(Message::Text(end.into())).await;
    let _ = sink.close().await;
    typing.abort();
}

async fn top(
    State(agent): State<Arc<Agent>>,
    Path((workspace, name)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let (instance, driver) = find(&agent, &workspace, &name)?;
    let usage = driver.top(&instance).await?;
    Ok(axum::Json(json!({"name": name, "workspace": workspace, "usage": usage})).into_response())
}

async fn top_all(State(agent): State<Arc<Agent>>) -> Result<Response, Failure> {
    let running = agent
        .all()
        .into_iter()
        .filter(|(instance, _)| instance.state == dora_crds::status::ContainerState::Running);
    let samples = running.map(|(instance, driver)| async move {
        let usage = driver.top(&instance).await.unwrap_or_default();
        json!({"name": instance.key.name, "workspace": instance.key.workspace, "usage": usage})
    });
    let items = futures::future::join_all(samples).await;
    Ok(axum::Json(json!({"items": items})).into_response())
}

#[derive(Deserialize)]
struct FileParams {
    /// The volume's folder on this node.
    root: String,
    #[serde(default)]
    stat: bool,
    #[serde(default)]
    upload: bool,
    /// The caller may list folders but not read files.
    #[serde(default)]
    list_only: bool,
    /// A folder's whole tree, or a folder removed with what it holds.
    #[serde(default)]
    recursive: bool,
    offset: Option<u64>,
    size: Option<u64>,
    /// Unix milliseconds: the modification time an upload gives its file.
    mtime: Option<i64>,
}

fn file_failure(path: &str, e: std::io::Error) -> Failure {
    use std::io::ErrorKind;
    let escape = matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::XDEV.raw_os_error() || code == rustix::io::Errno::LOOP.raw_os_error());
    match e.kind() {
        _ if escape => Failure(
            StatusCode::FORBIDDEN,
            format!("{path:?} leads out of the volume"),
        ),
        ErrorKind::PermissionDenied => Failure(StatusCode::FORBIDDEN, e.to_string()),
        ErrorKind::NotFound => Failure(
            StatusCode::NOT_FOUND,
            format!("{path:?} does not exist in the volume"),
        ),
        ErrorKind::InvalidInput => Failure(StatusCode::CONFLICT, e.to_string()),
        _ => Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn volume(agent: &Agent, params: &FileParams) -> Result<Volume, Failure> {
    if !params.root.starts_with('/') {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "root must be an absolute folder".into(),
        ));
    }
    let owner = agent.config().process_user.clone();
    Volume::open(std::path::Path::new(&params.root), true, owner)
        .map_err(|e| file_failure(&params.root, e))
}

async fn root_files(
    agent: State<Arc<Agent>>,
    params: Query<FileParams>,
) -> Result<Response, Failure> {
    read_files(agent, Path(String::new()), params).await
}

async fn read_files(
    State(agent): State<Arc<Agent>>,
    Path(path): Path<String>,
    Query(params): Query<FileParams>,
) -> Result<Response, Failure> {
    let volume = volume(&agent, &params)?;
    let failure = |e| file_failure(&path, e);
    if params.upload {
        let uploaded = volume.uploaded(&path).map_err(failure)?;
        return Ok(axum::Json(json!({"uploaded": uploaded})).into_response());
    }
    let entry = volume.stat(&path).map_err(failure)?;
    if params.stat {
        return Ok(axum::Json(entry).into_response());
    }
    if entry.kind == "dir" {
        let items = if params.recursive {
            volume.walk(&path)
        } else {
            volume.list(&path)
        }
        .map_err(failure)?;
        return Ok(axum::Json(json!({"path": path, "items": items})).into_response());
    }
    if params.list_only {
        return Err(Failure(
            StatusCode::FORBIDDEN,
            "reading files of this volume needs the Download permission".into(),
        ));
    }
    let offset = params.offset.unwrap_or(0).min(entry.size);
    let mut file = volume.read(&path).map_err(failure)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(failure)?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, (entry.size - offset).to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn write_file(
    State(agent): State<Arc<Agent>>,
    Path(path): Path<String>,
    Query(params): Query<FileParams>,
    body: Body,
) -> Result<Response, Failure> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let size = params.size.ok_or_else(|| {
        Failure(
            StatusCode::BAD_REQUEST,
            "name the file's size: ?size=BYTES".into(),
        )
    })?;
    let offset = params.offset.unwrap_or(0);
    let volume = volume(&agent, &params)?;
    let (file, upload) = volume
        .upload(&path, offset)
        .map_err(|e| file_failure(&path, e))?;
    let mut file = tokio::fs::File::from_std(file);
    let mut written = offset;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| Failure(StatusCode::BAD_REQUEST, e.to_string()))?;
        written += chunk.len() as u64;
        if written > size {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("more than the announced {size} bytes arrived"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| file_failure(&path, e))?;
    }
    file.sync_all().await.map_err(|e| file_failure(&path, e))?;
    if written < size {
        return Ok(axum::Json(json!({"uploaded": written, "complete": false})).into_response());
    }
    if let Some(mtime) = params.mtime {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(mtime.max(0) as u64);
        file.into_std()
            .await
            .set_modified(when)
            .map_err(|e| file_failure(&path, e))?;
    }
    upload.complete().map_err(|e| file_failure(&path, e))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"uploaded": written, "complete": true})),
    )
        .into_response())
}

async fn delete_file(
    State(agent): State<Arc<Agent>>,
    Path(path): Path<String>,
    Query(params): Query<FileParams>,
) -> Result<Response, Failure> {
    let volume = volume(&agent, &params)?;
    volume
        .remove(&path, params.recursive)
        .map_err(|e| file_failure(&path, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Gets the node's certificate from the API, serves the node API on `listen` until `stop`,
/// and returns the endpoint to advertise.
pub async fn start(
    agent: Arc<Agent>,
    listen: SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<String> {
    let host = agent.config().advertise.clone();
    let issued = certificate(&agent, &host, &stop).await?;
    let tls =
        RustlsConfig::from_config(server_config(&issued).context("cannot set up the node's TLS")?);
    tokio::spawn(renew(
        agent.clone(),
        host.clone(),
        issued,
        tls.clone(),
        stop.clone(),
    ));
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/top", get(top_all))
        .route("/v1/containers/{workspace}/{name}/logs", get(logs))
        .route("/v1/containers/{workspace}/{name}/exec", post(exec))
        .route("/v1/containers/{workspace}/{name}/attach", get(attach))
        .route("/v1/containers/{workspace}/{name}/top", get(top))
        .route("/v1/files", get(root_files))
        .route("/v1/files/", get(root_files))
        .route(
            "/v1/files/{*path}",
            get(read_files).put(write_file).delete(delete_file),
        )
        .with_state(agent.clone());
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
    });
    // Output and shell bytes go out at once, not after the peer's delayed ACK.
    let server = axum_server::from_tcp_rustls(listener, tls)?
        .map(|tls| tls.acceptor(NoDelayAcceptor::new()))
        .handle(handle)
        .serve(app.into_make_service());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the node API stopped");
        }
    });
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("https://{host}:{port}"))
}

/// The node's certificate, asked for until the API answers (it may start after the node).
async fn certificate(
    agent: &Agent,
    host: &str,
    stop: &CancellationToken,
) -> anyhow::Result<crate::api::NodeCertificate> {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match agent.api().certificate(&[host.to_string()]).await {
            Ok(issued) => return Ok(issued),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot get the node's certificate yet")
            }
        }
        tokio::select! {
            () = stop.cancelled() => anyhow::bail!("stopped before the node got its certificate"),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Asks the API for a new certificate when the current one is due, and serves it to the
/// connections made from then on, until `stop`.
async fn renew(
    agent: Arc<Agent>,
    host: String,
    mut issued: crate::api::NodeCertificate,
    tls: RustlsConfig,
    stop: CancellationToken,
) {
    loop {
        let at = match issued.renew_after() {
            Ok(at) => at,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the node's certificate will not be renewed");
                return;
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep_until(at) => {}
        }
        let Ok(next) = certificate(&agent, &host, &stop).await else {
            return;
        };
        match server_config(&next) {
            Ok(config) => {
                tls.reload_from_config(config);
                tracing::info!(renew_after = %next.renew_after, "the node's certificate was renewed");
                issued = next;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the API sent an unusable certificate; keeping the current one");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                }
            }
        }
    }
}

/// Sleeps until the wall clock reaches `at`, reading it at least hourly: a host that was
/// suspended wakes up late, and only the wall clock tells how late.
async fn sleep_until(at: std::time::SystemTime) {
    while let Ok(left) = at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left.min(std::time::Duration::from_secs(3600))).await;
    }
}

fn server_config(
    issued: &crate::api::NodeCertificate,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut callers = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(issued.proxy_ca.as_bytes()) {
        callers.add(cert?)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(callers), provider.clone()).build()?;
    let certs = CertificateDer::pem_slice_iter(issued.certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(issued.key.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}
