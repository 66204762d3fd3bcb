//! The `ecommerce` server as a library: what `main` wires and what tests call.
//!
//! - [`config`]: settings from options and the environment (clap), checked before any side
//!   effect.
//! - [`App`]: binds, then opens the database, ensures the admin and starts the [`jobs`];
//!   [`App::run_until_stopped`] serves until SIGTERM or Ctrl-C.
//! - [`jobs`]: order expiry, key purge, outbox relay and backlog gauges, each a `step()` that
//!   tests call and a loop that the app runs.
//! - [`events`]: the JetStream stream and `ecommerce events tail`.
//! - [`http`]: the HTTP/1.1 server loop with its connection limits.
//! - [`telemetry`]: logs on stderr.

pub mod config;
pub mod events;
pub mod http;
pub mod jobs;
pub mod telemetry;

mod app;

pub use app::App;
pub use config::Config;

/// Completes on SIGTERM or Ctrl-C. The handlers are installed by this call, not when the
/// future is first polled, so a signal that arrives meanwhile is not lost (and does not kill
/// the process).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The OpenAPI document of the HTTP API, as pretty JSON (`ecommerce openapi`).
pub fn openapi_json() -> String {
    ecommerce_api::openapi()
        .to_pretty_json()
        .unwrap_or_else(|err| format!("{{\"error\": \"cannot render the OpenAPI document: {err}\"}}"))
}
