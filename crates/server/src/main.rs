//! `ecommerce`: the server binary. Reads the environment, picks the storage engine from
//! `DATABASE_URL`, migrates, starts the background jobs (order expiry, outbox relay) and serves
//! until SIGTERM or Ctrl-C, finishing the requests in flight.
//!
//! `ecommerce events tail` prints the event stream from NATS (`NATS_URL`).

use std::process::ExitCode;
use std::time::Duration;

use ecommerce_api::{ApiConfig, AppState};
use ecommerce_domain::Timestamp;
use ecommerce_domain::account::{self, NewUser, Role, check_password, parse_email};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_store::{Engine, PgStore, PoolOptions, SqliteStore};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

mod config;
mod relay;

/// mimalloc hands freed memory back and keeps per-thread heaps small: with glibc's allocator every
/// thread that ever hashed a password kept its multi-megabyte buffer, and RSS grew with them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["serve"] => serve().await,
        ["events", "tail"] => match std::env::var("NATS_URL") {
            Ok(url) => relay::tail(&url).await,
            Err(_) => Err("set NATS_URL to the broker to tail, e.g. nats://127.0.0.1:4222".into()),
        },
        _ => Err("usage: ecommerce [serve] | ecommerce events tail".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("ecommerce: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), String> {
    let config = Config::from_env()?;
    let metrics = install_metrics()?;
    let pool = PoolOptions {
        max_connections: config.db_max_connections,
    };
    match Engine::from_url(&config.database_url) {
        Some(Engine::Postgres) => {
            let store = PgStore::connect(&config.database_url, pool)
                .await
                .map_err(|e| format!("database: {e}"))?;
            launch(store, config, metrics).await
        }
        Some(Engine::Sqlite) => {
            let store = SqliteStore::connect(&config.database_url, pool)
                .await
                .map_err(|e| format!("database: {e}"))?;
            launch(store, config, metrics).await
        }
        None => Err(format!(
            "DATABASE_URL must start with sqlite:// or postgres://, got {:?}",
            config.database_url
        )),
    }
}

fn install_metrics() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_request_duration_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))
}

async fn launch<S: Store>(store: S, config: Config, metrics: PrometheusHandle) -> Result<(), String> {
    let secret = match &config.jwt_secret {
        Some(secret) => secret.clone(),
        None => {
            // Generated once; every instance on this database reads the same one.
            let candidate: String = (0..48).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
            store
                .setting_or_insert("jwt_secret", &candidate)
                .await
                .map_err(|e| format!("database: {e}"))?
        }
    };
    ensure_admin(&store, &config).await?;

    let api = ApiConfig {
        order_ttl_seconds: config.order_ttl_seconds,
        popular_cache: config.popular_cache,
        ..ApiConfig::default()
    };
    let state = AppState::new(store.clone(), secret.as_bytes(), api, Some(metrics));
    let app = ecommerce_api::router(state);

    let listener = TcpListener::bind(&config.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;

    let (stop, stopped) = watch::channel(false);
    let sink = match &config.nats_url {
        Some(url) => relay::Sink::connect_nats(url).await?,
        None => {
            if let Some(folder) = std::path::Path::new(&config.events_file).parent()
                && !folder.as_os_str().is_empty()
            {
                std::fs::create_dir_all(folder).map_err(|e| format!("events file folder: {e}"))?;
            }
            relay::Sink::File(config.events_file.clone())
        }
    };
    let jobs = [
        tokio::spawn(relay::run(store.clone(), sink, config.relay_interval, stopped.clone())),
        tokio::spawn(expire_orders(store.clone(), config.expiry_interval, stopped.clone())),
        tokio::spawn(relay::report_backlog(store.clone(), stopped.clone())),
    ];

    println!("ecommerce listening on http://{local}");
    tracing::info!(addr = %local, "serving; Swagger UI at http://{local}/swagger-ui/");
    // `into_make_service` hands each connection a clone of the built router; serving the router
    // itself would rebuild its whole route table for every new connection (~10 KB each).
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stop.send(true);
        })
        .await
        .map_err(|e| e.to_string())?;
    for job in jobs {
        let _ = tokio::time::timeout(Duration::from_secs(5), job).await;
    }
    Ok(())
}

/// An admin exists after start-up: the configured one, or on a database with none, a new one
/// whose password is printed once so that a newcomer can use the admin API straight away.
async fn ensure_admin<S: Store>(store: &S, config: &Config) -> Result<(), String> {
    let db = |e: ecommerce_domain::StoreError| format!("database: {e}");
    let (email, password, generated) = match &config.admin {
        Some((email, password)) => (email.clone(), password.clone(), false),
        None if store.admin_exists().await.map_err(db)? => return Ok(()),
        None => {
            let password: String = (0..12).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect();
            ("admin@ecommerce.local".to_owned(), password, true)
        }
    };
    let email = parse_email(&email).map_err(|e| format!("ECOMMERCE_ADMIN_EMAIL: {e}"))?;
    check_password(&password).map_err(|e| format!("ECOMMERCE_ADMIN_PASSWORD: {e}"))?;
    let password_hash = ecommerce_api::auth::hash_password(password.clone())
        .await
        .map_err(|e| e.detail)?;
    let admin = NewUser {
        email: email.clone(),
        password_hash,
        name: "Admin".into(),
        role: Role::Admin,
    };
    let mut tx = store.begin().await.map_err(db)?;
    account::ensure_admin(&mut tx, &admin, Timestamp::now())
        .await
        .map_err(|e| format!("database: {e}"))?;
    tx.commit().await.map_err(db)?;
    if generated {
        eprintln!(
            "ecommerce: created admin account {email} with password {password} (shown once; set ECOMMERCE_ADMIN_EMAIL/ECOMMERCE_ADMIN_PASSWORD to choose your own)"
        );
    }
    Ok(())
}

/// How long idempotency keys are kept (the contract promises at least 24 hours).
const IDEMPOTENCY_KEY_RETENTION_SECONDS: i64 = 48 * 3_600;

/// Marks overdue pending orders `EXPIRED` and forgets old idempotency keys. Runs on every
/// instance; the store makes that safe.
async fn expire_orders<S: Store>(store: S, every: Duration, mut shutdown: watch::Receiver<bool>) {
    const BATCH: i64 = 500;
    loop {
        let cutoff = Timestamp::now().plus_seconds(-IDEMPOTENCY_KEY_RETENTION_SECONDS);
        if let Err(err) = store.purge_idempotency_keys(cutoff).await {
            tracing::warn!(error = %err, "idempotency key purge failed");
        }
        match store.expire_orders(Timestamp::now(), BATCH).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(n) if n > 0 => tracing::info!(expired = n, "expired overdue orders"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "order expiry failed"),
        }
        if relay::sleep_or_shutdown(every, &mut shutdown).await {
            return;
        }
    }
}

async fn shutdown_signal() {
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
