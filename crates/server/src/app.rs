//! Building and running the server: bind first, then the side effects (database, admin, jobs),
//! so that a wrong setting fails before anything is created.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use ecommerce_api::AppState;
use ecommerce_domain::Timestamp;
use ecommerce_domain::account::{self, NewUser, Role, check_password_length, parse_email};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_store::{Engine, PgStore, SqliteStore};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::HttpLimits;
use crate::jobs::{JobSettings, Jobs, Sink};

/// How often histogram samples are folded into their buckets when nothing scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// How long background jobs get to finish their round at shutdown.
const JOB_GRACE: Duration = Duration::from_secs(5);

/// A built server: listening, migrated, its admin in place and its jobs running.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    http: HttpLimits,
    jobs: Jobs,
    /// The PostgreSQL product-change listener, when the catalog cache is on.
    listener_task: Option<tokio::task::JoinHandle<()>>,
}

impl App {
    /// Checks the settings, binds the listener, and only then opens (and migrates) the database,
    /// makes sure of the signing secret and the admin, and starts the background jobs.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        config.validate()?;
        if config.max_connections.is_some() {
            crate::http::warn_if_over_the_file_limit(&config.http());
        }
        let listener = TcpListener::bind(&config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let local_addr = listener.local_addr().context("cannot read the listening address")?;
        let sink = match &config.nats_url {
            Some(url) => Sink::jetstream(url).await?,
            None => Sink::file(&config.events_file)?,
        };
        let metrics = metrics_handle()?;
        ecommerce_api::hashing::configure(config.hashing());
        let mut listener_task = None;
        let (router, jobs) = match config.database_url.engine()? {
            Engine::Postgres => {
                let mut store = PgStore::connect(config.database_url.as_str(), config.pool())
                    .await
                    .context("cannot open the PostgreSQL database")?;
                if let Some(read_url) = &config.database_read_url {
                    store = store
                        .with_read_replica(read_url.as_str(), config.pool())
                        .context("cannot use DATABASE_READ_URL")?;
                }
                if config.catalog_cache_ms > 0 {
                    // Other instances' product changes reach this one's catalog cache.
                    listener_task = Some(store.spawn_change_listener());
                }
                assemble(store, &config, sink, metrics).await?
            }
            Engine::Sqlite => {
                let store = SqliteStore::connect(config.database_url.as_str(), config.pool())
                    .await
                    .context("cannot open the SQLite database")?;
                assemble(store, &config, sink, metrics).await?
            }
        };
        Ok(App {
            listener,
            local_addr,
            router,
            http: config.http(),
            jobs,
            listener_task,
        })
    }

    /// Where the server listens (the real port when the address asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until SIGTERM or Ctrl-C, finishing the requests in flight, then stops the jobs.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(crate::shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, finishing the requests in flight, then stops the jobs.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr, "serving; Swagger UI at http://{}/swagger-ui/", self.local_addr);
        crate::http::serve(self.listener, self.router, self.http, shutdown).await;
        self.jobs.stop(JOB_GRACE).await;
        if let Some(task) = self.listener_task {
            task.abort();
        }
        Ok(())
    }
}

/// The engine-specific half of [`App::build`], after the database is open.
async fn assemble<S: Store>(
    store: S,
    config: &Config,
    sink: Sink,
    metrics: PrometheusHandle,
) -> anyhow::Result<(Router, Jobs)> {
    let secret = match &config.jwt_secret {
        Some(secret) => secret.expose().to_owned(),
        None => {
            // Generated once; every instance on this database reads the same one.
            let candidate: String = (0..48).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
            store
                .setting_or_insert("jwt_secret", &candidate)
                .await
                .context("cannot read or store the signing secret")?
        }
    };
    ensure_admin(&store, config).await?;
    let state = AppState::new(store.clone(), secret.as_bytes(), config.api(), Some(metrics));
    let router = ecommerce_api::router(state);
    let settings = JobSettings {
        expiry_interval: config.expiry_interval(),
        draw_interval: config.draw_interval(),
        relay_interval: config.relay_interval(),
        events_max_age: config.events_max_age(),
        events_replicas: config.events_replicas as usize,
    };
    Ok((router, Jobs::start(store, sink, &settings)))
}

/// An admin exists after start-up: the configured one, or on a database with none, a new one
/// whose password is printed once so that a newcomer can use the admin API straight away.
///
/// The generated password has 131 bits (22 letters and digits). Instances that start together
/// on a fresh database each generate one, but only the instance whose insert created the account
/// prints it, so the one printed is the one that works (audit L1).
async fn ensure_admin<S: Store>(store: &S, config: &Config) -> anyhow::Result<()> {
    let (email, password, generated) = match (&config.admin_email, &config.admin_password) {
        (Some(email), Some(password)) => (email.clone(), password.expose().to_owned(), false),
        _ if store.admin_exists().await.context("cannot look for an admin")? => return Ok(()),
        _ => (GENERATED_ADMIN_EMAIL.to_owned(), generated_password(), true),
    };
    let email = parse_email(&email).map_err(|e| anyhow::anyhow!("ECOMMERCE_ADMIN_EMAIL: {e}"))?;
    check_password_length(&password).map_err(|e| anyhow::anyhow!("ECOMMERCE_ADMIN_PASSWORD: {e}"))?;
    // Already an admin with this password: nothing to change, and its tokens stay valid. A new
    // password (a rotation) refuses every token issued before it (audit M5).
    if let Some(existing) = store.credentials(&email).await.context("cannot look for the admin")?
        && existing.role == Role::Admin
        && ecommerce_api::auth::verify_password(password.clone(), Some(existing.password_hash))
            .await
            .unwrap_or(false)
    {
        return Ok(());
    }
    let password_hash = ecommerce_api::auth::hash_password(password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot hash the admin password: {}", e.detail))?;
    let admin = NewUser {
        email: email.clone(),
        password_hash,
        name: "Admin".into(),
        role: Role::Admin,
    };
    let mut tx = store.begin().await.context("cannot save the admin")?;
    let created = if generated {
        // Only a new account: another instance may have created it a moment ago.
        tx.insert_user(&admin, Timestamp::now())
            .await
            .context("cannot save the admin")?
            .is_some()
    } else {
        account::ensure_admin(&mut tx, &admin, Timestamp::now())
            .await
            .context("cannot save the admin")?;
        false
    };
    tx.commit().await.context("cannot save the admin")?;
    if created {
        eprintln!(
            "ecommerce: created admin account {email} with password {password} (shown once; set ECOMMERCE_ADMIN_EMAIL/ECOMMERCE_ADMIN_PASSWORD to choose your own)"
        );
    } else if generated {
        tracing::info!("another instance created the admin account {email} and printed its password");
    }
    Ok(())
}

/// The email of the admin created on a database without one.
const GENERATED_ADMIN_EMAIL: &str = "admin@ecommerce.local";

/// 22 letters and digits from the OS's generator: log2(62^22) = 131 bits.
fn generated_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 22)
}

/// The process-wide Prometheus recorder, installed on first use (a process may build several
/// apps, e.g. in tests).
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(handle) = handle.as_ref() {
        return Ok(handle.clone());
    }
    let installed = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_request_duration_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    crate::telemetry::describe_metrics();
    // Histogram samples are only folded into their buckets by a scrape or by upkeep: without
    // it, an instance that nothing scrapes keeps every sample (audit L2).
    let upkeep = installed.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP);
                upkeep.run_upkeep();
            }
        })
        .context("cannot start the metrics upkeep thread")?;
    *handle = Some(installed.clone());
    Ok(installed)
}
