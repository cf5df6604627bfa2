//! An interactive session in a container over a WebSocket: your keystrokes go in as binary
//! messages, its output comes back the same way, and the terminal's size follows yours. The
//! session ends with the command's exit code.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::bail;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;

/// How often an attached session pings the API server.
const PING: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a session waits for anything, a pong included, before it gives up.
const SILENCE: std::time::Duration = std::time::Duration::from_secs(90);

/// Puts the terminal in raw mode until dropped, so that keys go to the remote shell as typed.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

fn resize_message() -> Option<Message> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    let text = json!({"resize": {"cols": size.ws_col, "rows": size.ws_row}}).to_string();
    Some(Message::Text(text.into()))
}

/// Standard input, read on a thread of its own (a read pending on a terminal must not keep
/// the program from exiting); `None` at its end.
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = vec![0u8; 8 << 10];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Runs `command` attached to this terminal (or to standard input and output when they are
/// not a terminal); the exit code is the command's.
pub async fn attach(client: &Client, path: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let query = [
        ("tty", tty.to_string()),
        ("command", serde_json::to_string(command)?),
    ];
    let socket = client.websocket(path, &query).await?;
    let (mut sink, mut incoming) = socket.split();
    let _raw = if tty { Some(RawMode::enable()?) } else { None };
    if tty && let Some(message) = resize_message() {
        sink.send(message).await?;
    }
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut keys = stdin_chunks();
    let mut typing = true;
    let mut stdout = std::io::stdout();
    let mut exit_code = None;
    // A session may be idle for long: pings, which the server answers, tell a quiet one from
    // a dead one.
    // The first after a period, not at once: a ping the server has not read when a short
    // session ends makes its socket close with a reset, which loses the exit code.
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING, PING);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if heard.elapsed() > SILENCE {
                    bail!("the API server stopped answering for {} s", SILENCE.as_secs());
                }
                sink.send(Message::Ping(Default::default())).await?;
            }
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    heard = tokio::time::Instant::now();
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Text(text))) => {
                    let end: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if let Some(code) = end["exitCode"].as_i64() {
                        exit_code = Some(code);
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => heard = tokio::time::Instant::now(),
                Some(Err(e)) => return Err(e.into()),
            },
            chunk = keys.recv(), if typing => match chunk.flatten() {
                Some(bytes) => sink.send(Message::Binary(bytes.into())).await?,
                None => {
                    typing = false;
                    sink.send(Message::Text(json!("eof").to_string().into())).await?;
                }
            },
            _ = resized.recv(), if tty => {
                if let Some(message) = resize_message() {
                    sink.send(message).await?;
                }
            }
        }
    }
    let code = exit_code.unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
