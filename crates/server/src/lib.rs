//! The `ecommerce` server as a library: what `main` wires and what tests call.
//!
//! - [`config`]: settings from options and the environment (clap), checked before any side
//!   effect.
//! - [`App`]: binds, then opens the database, ensures the admin and starts the [`jobs`];
//!   [`App::run_until_stopped`] serves until SIGTERM or Ctrl-C.
//! - [`jobs`]: order expiry, key purge, outbox relay and backlog gauges, each a `step()` that
//!   tests call and a loop that the app runs.
//! - [`events`]: the JetStream stream and `ecommerce events tail`.
//! - [`telemetry`]: logs on stderr.

pub mod config;
pub mod events;
pub mod jobs;
pub mod telemetry;

mod app;

pub use app::App;
pub use config::Config;

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The OpenAPI document of the HTTP API, as pretty JSON (`ecommerce openapi`).
pub fn openapi_json() -> String {
    use utoipa::OpenApi;
    ecommerce_api::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|err| format!("{{\"error\": \"cannot render the OpenAPI document: {err}\"}}"))
}
