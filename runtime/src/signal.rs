//! Stopping a controller process the way a service manager or a terminal asks.

use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM, for [`crate::Controller::run`] and the like.
pub fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => drop(signal.recv().await),
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    stop
}
