//! `ecommerce`: the server binary. `main` only wires: it parses the command line, starts the
//! logs and hands over to the library (`ecommerce --help` lists every setting).

use std::process::ExitCode;

use clap::Parser;
use ecommerce::config::{Cli, Command, EventsCommand};
use ecommerce::{App, telemetry};

/// mimalloc hands freed memory back and keeps per-thread heaps small: with glibc's allocator every
/// thread that ever hashed a password kept its multi-megabyte buffer, and RSS grew with them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(config)) => serve(*config).await,
        Some(Command::Events {
            command: EventsCommand::Tail(args),
        }) => {
            telemetry::init(cli.serve.log_format);
            ecommerce::events::tail(args).await
        }
        Some(Command::Openapi) => print_openapi(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Printed once, with its causes.
            tracing::error!("{err:#}");
            if !tracing::dispatcher::has_been_set() {
                eprintln!("ecommerce: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `ecommerce openapi`; a reader that stops early (`| head`) is not an error.
fn print_openapi() -> anyhow::Result<()> {
    use std::io::Write;
    let mut document = ecommerce::openapi_json();
    document.push('\n');
    match std::io::stdout().lock().write_all(document.as_bytes()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

async fn serve(config: ecommerce::Config) -> anyhow::Result<()> {
    telemetry::init(config.log_format);
    for (name, closest) in ecommerce::config::unknown_variables() {
        match closest {
            Some(closest) => tracing::warn!("ignoring unknown variable {name} (did you mean {closest}?)"),
            None => tracing::warn!("ignoring unknown variable {name}"),
        }
    }
    let app = App::build(config).await?;
    // The harness and scripts read this first stdout line to learn the port.
    println!("ecommerce listening on http://{}", app.local_addr());
    app.run_until_stopped().await
}
