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

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("ecommerce: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process, before the runtime and the first
/// connection allocate. mimalloc asks for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), so
/// on a kernel with THP at `madvise` or `always` every 2 MiB region it touched became resident
/// whole: 18 of the 20 MiB of heap of an idle instance, and about a third of the RSS under 1,000
/// busy connections (docs/BENCHMARKS.md, "Memory (RSS) of one instance"). The heap of this
/// server is small, so huge pages save little TLB work. Best effort: where the call is refused,
/// only the RSS is higher.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // From <linux/prctl.h>; the C library is linked anyway, and this is its one use here.
        const PR_SET_THP_DISABLE: i32 = 41;
        unsafe extern "C" {
            fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
        }
        let (on, unused): (std::ffi::c_ulong, std::ffi::c_ulong) = (1, 0);
        // SAFETY: a plain system call that takes integers (as the C declaration, variadic, with
        // `unsigned long` arguments) and changes one flag of this process.
        let refused = unsafe { prctl(PR_SET_THP_DISABLE, on, unused, unused, unused) } != 0;
        if refused {
            eprintln!("ecommerce: cannot turn transparent huge pages off (prctl); RSS will be higher");
        }
    }
}

async fn run() -> ExitCode {
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
