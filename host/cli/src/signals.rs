//! Waiting for the signals that ask a long-running command to stop.

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM, with the signal's name.
pub async fn stop_requested() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => (int, term),
        // Without signal handlers (should not happen on Unix), fall back to Ctrl-C only.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
