//! Settings, from the command line or the environment (`ecommerce --help` lists each with its
//! variable and default). Defaults come from the crates that use them
//! ([`ApiConfig::default`], [`PoolOptions::default`]), so there is one source for each.
//!
//! Everything that can be checked without side effects is checked here, before the server
//! binds, migrates or creates anything: ranges, the JWT secret's strength, the database URL's
//! scheme, the lists of proxies and origins.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use ecommerce_api::hashing::HashingLimits;
use ecommerce_api::rate_limit::RateLimitConfig;
use ecommerce_api::{ApiConfig, CorsOrigins};
use ecommerce_store::{Engine, PoolOptions};

use crate::http::HttpLimits;

/// Shortest accepted `ECOMMERCE_JWT_SECRET` (HS256 wants a key of at least 256 bits, RFC 7518).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Contract v2 defaults, kept here until the API takes them (then `ApiConfig::default()` is
/// their one source).
pub const RATE_LIMIT_AUTH_DEFAULT: u32 = 30;
pub const RATE_LIMIT_USER_DEFAULT: u32 = 20;
pub const CATALOG_CACHE_MS_DEFAULT: u32 = 1_000;

/// Connection limits, by default (see `Config::http`).
pub const HEADER_TIMEOUT_MS_DEFAULT: u32 = 10_000;
pub const IDLE_TIMEOUT_MS_DEFAULT: u32 = 75_000;
pub const MAX_HEADER_BYTES_DEFAULT: u32 = 64 * 1024;
pub const MAX_CONNECTIONS_DEFAULT: u32 = 10_000;
/// Shortest accepted `ECOMMERCE_METRICS_TOKEN`.
pub const MIN_METRICS_TOKEN_BYTES: usize = 16;

/// How long the event stream keeps events for replay, by default.
pub const EVENTS_MAX_AGE_DAYS_DEFAULT: u32 = 30;

fn default_order_ttl() -> i64 {
    ApiConfig::default().order_ttl_seconds
}

fn default_popular_cache() -> u32 {
    ApiConfig::default().popular_cache.as_secs() as u32
}

fn default_pool_size() -> u32 {
    PoolOptions::default().max_connections
}

const AFTER_HELP: &str = "\
Every setting can be given as an option or through its environment variable (options win).
Logs go to stderr; filter them with RUST_LOG (default: info,sqlx=warn). NO_COLOR turns off
colours, which are only used when stderr is a terminal.";

/// The e-commerce server.
#[derive(Debug, Parser)]
#[command(
    name = "ecommerce",
    version,
    about = "The ecommerce HTTP server: catalog, balance, cart, coupons, orders and their events.",
    after_help = AFTER_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of `serve`, the default command.
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and run the background jobs until SIGTERM or Ctrl-C (the default).
    #[command(after_help = AFTER_HELP)]
    Serve(Box<Config>),
    /// Read the event stream on NATS JetStream.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Print the OpenAPI document of the HTTP API as pretty JSON.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print the events of the stream as JSON lines, from the first (or from a sequence or a
    /// time), then follow new ones.
    Tail(TailArgs),
}

/// Options of `ecommerce events tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// The broker to read, e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "NATS_URL", value_name = "URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Start at this stream sequence number (1 is the first event kept).
    #[arg(long, value_name = "N", conflicts_with = "since", value_parser = clap::value_parser!(u64).range(1..))]
    pub from_sequence: Option<u64>,
    /// Start at the first event stored at or after this time (RFC 3339, e.g. 2026-01-02T03:04:05Z).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub since: Option<time::OffsetDateTime>,
    /// Read through a durable consumer of this name: each event is acknowledged once its line
    /// is written and flushed, and the next run with the same name resumes after it. The start
    /// options only apply when the consumer is first created.
    #[arg(long, value_name = "NAME", value_parser = parse_durable_name)]
    pub durable: Option<String>,
}

/// Settings of the server.
#[derive(Clone, Args)]
pub struct Config {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(
        long,
        env = "ECOMMERCE_ADDR",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: String,

    /// sqlite://FILE (created when missing) or postgres://… (several instances).
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "URL",
        default_value = "sqlite://data/ecommerce.db",
        hide_env_values = true
    )]
    pub database_url: DatabaseUrl,

    /// postgres://… of a streaming replica of DATABASE_URL's database: token-free catalog reads
    /// (products, pages of products) go there; everything else stays on the primary.
    /// PostgreSQL only.
    #[arg(long, env = "DATABASE_READ_URL", value_name = "URL", hide_env_values = true)]
    pub database_read_url: Option<DatabaseUrl>,

    /// Connection pool size per instance.
    #[arg(
        long,
        env = "ECOMMERCE_DB_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = default_pool_size(),
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub db_max_connections: u32,

    /// Email of an admin account that exists after start-up (with --admin-password).
    #[arg(long, env = "ECOMMERCE_ADMIN_EMAIL", value_name = "EMAIL")]
    pub admin_email: Option<String>,

    /// Password of that admin account (8 to 128 characters).
    #[arg(
        long,
        env = "ECOMMERCE_ADMIN_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub admin_password: Option<Secret>,

    /// Token signing secret shared by every instance, at least 32 bytes (e.g. `openssl rand
    /// -base64 48`). Unset: generated once and kept in the database.
    #[arg(long, env = "ECOMMERCE_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// How long a pending order can be paid, in seconds.
    #[arg(
        long,
        env = "ECOMMERCE_ORDER_TTL_SECONDS",
        value_name = "SECONDS",
        default_value_t = default_order_ttl(),
        value_parser = clap::value_parser!(i64).range(1..=31_536_000)
    )]
    pub order_ttl_seconds: i64,

    /// Longest staleness of /products/popular, in seconds; 0 turns the cache off.
    #[arg(
        long,
        env = "ECOMMERCE_POPULAR_CACHE_SECONDS",
        value_name = "SECONDS",
        default_value_t = default_popular_cache(),
        value_parser = clap::value_parser!(u32).range(0..=86_400)
    )]
    pub popular_cache_seconds: u32,

    /// NATS server for the order events (JetStream stream ECOMMERCE_ORDERS), or the nodes of a
    /// cluster separated by commas; unset: the events go to --events-file.
    #[arg(long, env = "NATS_URL", value_name = "URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// JSON-lines file the events go to without NATS (one per instance).
    #[arg(
        long,
        env = "ECOMMERCE_EVENTS_FILE",
        value_name = "FILE",
        default_value = "data/events.jsonl"
    )]
    pub events_file: PathBuf,

    /// How long the JetStream stream keeps events for replay, in days; 0 keeps them forever.
    #[arg(
        long,
        env = "ECOMMERCE_EVENTS_MAX_AGE_DAYS",
        value_name = "DAYS",
        default_value_t = EVENTS_MAX_AGE_DAYS_DEFAULT,
        value_parser = clap::value_parser!(u32).range(0..=36_500)
    )]
    pub events_max_age_days: u32,

    /// Copies of the JetStream stream kept by a NATS cluster (1, 3 or 5; at most the cluster's
    /// size). Applied when the relay creates or updates the stream.
    #[arg(
        long,
        env = "ECOMMERCE_EVENTS_REPLICAS",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=5)
    )]
    pub events_replicas: u32,

    /// How often overdue orders are marked EXPIRED, in milliseconds.
    #[arg(
        long,
        env = "ECOMMERCE_EXPIRY_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u32).range(1..=86_400_000)
    )]
    pub expiry_interval_ms: u32,

    /// How often draws whose entry window ended are looked for and drawn, in milliseconds. A
    /// draw runs within this interval (plus its own duration) after its window ends; keep it well
    /// under the contract's 10 s.
    #[arg(
        long,
        env = "ECOMMERCE_DRAW_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u32).range(1..=86_400_000)
    )]
    pub draw_interval_ms: u32,

    /// How often an idle outbox relay looks for new events, in milliseconds.
    #[arg(
        long,
        env = "ECOMMERCE_RELAY_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..=86_400_000)
    )]
    pub relay_interval_ms: u32,

    /// Sign-ups and token requests per client address per minute; 0 turns it off.
    #[arg(
        long,
        env = "ECOMMERCE_RATE_LIMIT_AUTH",
        value_name = "N",
        default_value_t = RATE_LIMIT_AUTH_DEFAULT,
        value_parser = clap::value_parser!(u32).range(0..=1_000_000)
    )]
    pub rate_limit_auth: u32,

    /// State-changing requests per second per user (bursts of twice that); 0 turns it off.
    #[arg(
        long,
        env = "ECOMMERCE_RATE_LIMIT_USER",
        value_name = "N",
        default_value_t = RATE_LIMIT_USER_DEFAULT,
        value_parser = clap::value_parser!(u32).range(0..=1_000_000)
    )]
    pub rate_limit_user: u32,

    /// Comma-separated addresses or CIDRs of load balancers whose X-Forwarded-For is trusted.
    #[arg(long, env = "ECOMMERCE_TRUSTED_PROXIES", value_name = "LIST", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Comma-separated origins (or *) allowed to call the API from a browser; empty: no CORS.
    #[arg(long, env = "ECOMMERCE_CORS_ORIGINS", value_name = "LIST", default_value = "")]
    pub cors_origins: CorsOrigins,

    /// Longest lag of a product read behind a change made on another instance, in
    /// milliseconds; 0 turns the catalog cache off.
    #[arg(
        long,
        env = "ECOMMERCE_CATALOG_CACHE_MS",
        value_name = "MS",
        default_value_t = CATALOG_CACHE_MS_DEFAULT,
        value_parser = clap::value_parser!(u32).range(0..=60_000)
    )]
    pub catalog_cache_ms: u32,

    /// Password-hashing threads, i.e. sign-ins and sign-ups hashed at once; unset: one per core.
    #[arg(
        long,
        env = "ECOMMERCE_HASH_THREADS",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=256)
    )]
    pub hash_threads: Option<u32>,

    /// Sign-ins and sign-ups that may wait for a hashing thread; the next one is answered 503
    /// with Retry-After at once. Unset: 128 per hashing thread (about 2 s of work).
    #[arg(
        long,
        env = "ECOMMERCE_HASH_QUEUE",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(0..=100_000)
    )]
    pub hash_queue: Option<u32>,

    /// Longest time a client may take to send a request's head (request line and headers),
    /// counted from the connection's opening or its first byte after an idle time, in
    /// milliseconds; a slower connection is closed.
    #[arg(
        long,
        env = "ECOMMERCE_HEADER_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = HEADER_TIMEOUT_MS_DEFAULT,
        value_parser = clap::value_parser!(u32).range(100..=600_000)
    )]
    pub header_timeout_ms: u32,

    /// How long a keep-alive connection may stay idle between requests, in milliseconds; keep it
    /// above the proxy's upstream keepalive_timeout (nginx.conf: 60 s).
    #[arg(
        long,
        env = "ECOMMERCE_IDLE_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = IDLE_TIMEOUT_MS_DEFAULT,
        value_parser = clap::value_parser!(u32).range(100..=3_600_000)
    )]
    pub idle_timeout_ms: u32,

    /// Largest request head (request line and headers), in bytes; a larger one is answered 431.
    #[arg(
        long,
        env = "ECOMMERCE_MAX_HEADER_BYTES",
        value_name = "BYTES",
        default_value_t = MAX_HEADER_BYTES_DEFAULT,
        value_parser = clap::value_parser!(u32).range(8_192..=1_048_576)
    )]
    pub max_header_bytes: u32,

    /// Connections this instance holds open at once; past it, a new connection is answered 503
    /// with Retry-After and closed at once. Keep it below the process's open-file limit. Unset:
    /// 10000, or the open-file limit minus 128 when that is lower.
    #[arg(
        long,
        env = "ECOMMERCE_MAX_CONNECTIONS",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub max_connections: Option<u32>,

    /// Bearer token that GET /metrics requires (`Authorization: Bearer <token>`), at least 16
    /// bytes; unset: /metrics is open (restrict it at the proxy, as deploy/nginx.conf does).
    #[arg(long, env = "ECOMMERCE_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,

    /// Log line format on stderr.
    #[arg(long, env = "ECOMMERCE_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// The settings as if given nothing but the environment (and these arguments).
    pub fn parse_from<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        Ok(match cli.command {
            Some(Command::Serve(config)) => *config,
            _ => cli.serve,
        })
    }

    /// Checks what clap's ranges cannot: the database URL's scheme, the JWT secret's strength,
    /// and the admin pair.
    pub fn validate(&self) -> anyhow::Result<()> {
        let engine = self.database_url.engine()?;
        if let Some(read_url) = &self.database_read_url {
            if engine != Engine::Postgres {
                bail!(
                    "DATABASE_READ_URL is set but DATABASE_URL is SQLite: read replicas are for PostgreSQL only                      (SQLite readers already run beside the writer); unset DATABASE_READ_URL"
                );
            }
            if read_url.engine().ok() != Some(Engine::Postgres) {
                bail!("DATABASE_READ_URL must start with postgres:// (a streaming replica of DATABASE_URL's database)");
            }
        }
        if let Some(secret) = &self.jwt_secret
            && secret.0.len() < MIN_JWT_SECRET_BYTES
        {
            bail!(
                "ECOMMERCE_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes (it has {}); \
                 generate one with `openssl rand -base64 48`, or leave it unset to have one kept in the database",
                secret.0.len()
            );
        }
        if let Some(token) = &self.metrics_token
            && token.0.len() < MIN_METRICS_TOKEN_BYTES
        {
            bail!(
                "ECOMMERCE_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_BYTES} bytes (it has {}); \
                 generate one with `openssl rand -base64 24`",
                token.0.len()
            );
        }
        match (&self.admin_email, &self.admin_password) {
            (Some(_), None) => bail!("ECOMMERCE_ADMIN_EMAIL is set without ECOMMERCE_ADMIN_PASSWORD"),
            (None, Some(_)) => bail!("ECOMMERCE_ADMIN_PASSWORD is set without ECOMMERCE_ADMIN_EMAIL"),
            _ => Ok(()),
        }
    }

    pub fn api(&self) -> ApiConfig {
        ApiConfig {
            order_ttl_seconds: self.order_ttl_seconds,
            popular_cache: Duration::from_secs(self.popular_cache_seconds.into()),
            catalog_cache: Duration::from_millis(self.catalog_cache_ms.into()),
            cors_origins: self.cors_origins.clone(),
            rate_limits: RateLimitConfig {
                auth_per_minute: self.rate_limit_auth,
                user_per_second: self.rate_limit_user,
                trusted_proxies: ecommerce_api::rate_limit::TrustedProxies(self.trusted_proxies.0.clone()),
            },
            metrics_token: self.metrics_token.as_ref().map(|token| token.expose().to_owned()),
            ..ApiConfig::default()
        }
    }

    /// The size of the password-hashing pool.
    pub fn hashing(&self) -> HashingLimits {
        let defaults = HashingLimits::default();
        let threads = self.hash_threads.map_or(defaults.threads, |n| n as usize);
        HashingLimits {
            threads,
            queue: self
                .hash_queue
                .map_or(threads * ecommerce_api::hashing::QUEUE_PER_THREAD, |n| n as usize),
        }
    }

    /// The connection limits of the HTTP server.
    pub fn http(&self) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_millis(self.header_timeout_ms.into()),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.into()),
            max_header_bytes: self.max_header_bytes as usize,
            max_connections: match self.max_connections {
                Some(n) => n as usize,
                None => crate::http::default_max_connections(MAX_CONNECTIONS_DEFAULT as usize),
            },
        }
    }

    pub fn pool(&self) -> PoolOptions {
        PoolOptions {
            max_connections: self.db_max_connections,
        }
    }

    pub fn expiry_interval(&self) -> Duration {
        Duration::from_millis(self.expiry_interval_ms.into())
    }

    pub fn draw_interval(&self) -> Duration {
        Duration::from_millis(self.draw_interval_ms.into())
    }

    pub fn relay_interval(&self) -> Duration {
        Duration::from_millis(self.relay_interval_ms.into())
    }

    pub fn events_max_age(&self) -> Duration {
        Duration::from_secs(u64::from(self.events_max_age_days) * 86_400)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("database_url", &self.database_url)
            .field("database_read_url", &self.database_read_url)
            .field("db_max_connections", &self.db_max_connections)
            .field("admin_email", &self.admin_email)
            .field("admin_password", &self.admin_password)
            .field("jwt_secret", &self.jwt_secret)
            .field("order_ttl_seconds", &self.order_ttl_seconds)
            .field("popular_cache_seconds", &self.popular_cache_seconds)
            .field(
                "nats_url",
                &self
                    .nats_url
                    .as_deref()
                    .map(|url| url.split(',').map(redact_url).collect::<Vec<_>>().join(",")),
            )
            .field("events_file", &self.events_file)
            .field("events_max_age_days", &self.events_max_age_days)
            .field("expiry_interval_ms", &self.expiry_interval_ms)
            .field("draw_interval_ms", &self.draw_interval_ms)
            .field("relay_interval_ms", &self.relay_interval_ms)
            .field("rate_limit_auth", &self.rate_limit_auth)
            .field("rate_limit_user", &self.rate_limit_user)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("cors_origins", &self.cors_origins)
            .field("catalog_cache_ms", &self.catalog_cache_ms)
            .field("hash_threads", &self.hash_threads)
            .field("hash_queue", &self.hash_queue)
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_connections", &self.max_connections)
            .field("metrics_token", &self.metrics_token)
            .field("events_replicas", &self.events_replicas)
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (for Loki, ELK, journald shippers).
    Json,
}

/// A value that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A `DATABASE_URL`; `Debug` hides its password. Its scheme is checked by
/// [`DatabaseUrl::engine`] (in [`Config::validate`]), not while parsing: a parse error would
/// echo the whole value, password included (audit L5).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The engine the scheme names; the error names only the scheme.
    pub fn engine(&self) -> anyhow::Result<Engine> {
        match Engine::from_url(&self.0) {
            Some(engine) => Ok(engine),
            None => {
                let scheme = self.0.split_once(':').map_or("", |(scheme, _)| scheme);
                bail!(
                    "DATABASE_URL must start with sqlite:// or postgres://, got the scheme {scheme:?} (the rest of the URL is not shown)"
                )
            }
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(url.to_owned()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `scheme://user:***@host/…`: the password of a URL replaced.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// `ECOMMERCE_TRUSTED_PROXIES`: addresses or CIDRs (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<(IpAddr, u8)>);

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut networks = Vec::new();
        for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (address, prefix) = match item.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (item, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR"))?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(prefix) => prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|prefix| *prefix <= max)
                    .ok_or_else(|| format!("{item:?}: the prefix length must be 0 to {max}"))?,
            };
            networks.push((address, prefix));
        }
        Ok(TrustedProxies(networks))
    }
}

fn parse_rfc3339(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time such as 2026-01-02T03:04:05Z ({e})"))
}

fn parse_durable_name(name: &str) -> Result<String, String> {
    let valid =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err("1 to 64 letters, digits, '-' or '_'".to_owned())
    }
}

/// `ECOMMERCE_*` variables that no setting reads (typos, mostly), with the closest known name.
pub fn unknown_variables() -> Vec<(String, Option<&'static str>)> {
    let known = known_variables();
    let mut unknown: Vec<_> = std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .filter(|key| key.starts_with("ECOMMERCE_") && !key.starts_with("ECOMMERCE_TEST_"))
        .filter(|key| !known.iter().any(|k| k == key))
        .map(|key| {
            let closest = known
                .iter()
                .copied()
                .map(|k| (edit_distance(&key, k), k))
                .filter(|(distance, _)| *distance <= 3)
                .min()
                .map(|(_, k)| k);
            (key, closest)
        })
        .collect();
    unknown.sort();
    unknown
}

/// Every environment variable a setting of any command reads.
fn known_variables() -> Vec<&'static str> {
    fn collect(command: &clap::Command, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env().and_then(|env| env.to_str()) {
                out.push(env.to_owned());
            }
        }
        for sub in command.get_subcommands() {
            collect(sub, out);
        }
    }
    static KNOWN: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KNOWN
        .get_or_init(|| {
            let mut names = Vec::new();
            collect(&Cli::command(), &mut names);
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|name| &*Box::leak(name.into_boxed_str()))
                .collect()
        })
        .clone()
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Reads the settings of `ecommerce serve` from the environment only (tests, embedding).
pub fn from_env() -> anyhow::Result<Config> {
    Config::parse_from(["ecommerce"]).context("invalid settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_output_hides_every_secret() {
        let config = Config::parse_from([
            "ecommerce",
            "--database-url",
            "postgres://shop:S3cr3t-DB-pass@db.internal/shop",
            "--jwt-secret",
            "a-very-long-secret-that-nobody-may-see-0123456789",
            "--admin-email",
            "admin@example.com",
            "--admin-password",
            "admin-password-secret",
            "--nats-url",
            "nats://relay:N4ts-pass@nats.internal:4222",
        ])
        .expect("valid settings");
        let shown = format!("{config:?}");
        for secret in [
            "S3cr3t-DB-pass",
            "a-very-long-secret",
            "admin-password-secret",
            "N4ts-pass",
        ] {
            assert!(!shown.contains(secret), "{secret} shows in {shown}");
        }
        assert!(shown.contains("postgres://shop:***@db.internal/shop"), "{shown}");
    }

    #[test]
    fn a_bad_database_scheme_is_named_without_the_rest_of_the_url() {
        let url: DatabaseUrl = "mysql://shop:S3cr3t@db/shop".parse().expect("any text parses");
        let err = url.engine().unwrap_err().to_string();
        assert!(err.contains("\"mysql\""), "{err}");
        assert!(!err.contains("S3cr3t"), "{err}");
    }

    #[test]
    fn urls_keep_everything_but_the_password() {
        assert_eq!(
            redact_url("postgres://u:p@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/ecommerce.db"), "sqlite://data/ecommerce.db");
        assert_eq!(redact_url("postgres://u:p%40x@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn a_read_replica_is_for_postgresql_only() {
        let sqlite = Config::parse_from([
            "ecommerce",
            "--database-url",
            "sqlite://data/x.db",
            "--database-read-url",
            "postgres://u:secret@replica/db",
        ])
        .expect("parses");
        let err = sqlite.validate().unwrap_err().to_string();
        assert!(
            err.contains("DATABASE_READ_URL") && err.contains("PostgreSQL only") && !err.contains("secret"),
            "{err}"
        );
        let not_pg = Config::parse_from([
            "ecommerce",
            "--database-url",
            "postgres://h/db",
            "--database-read-url",
            "sqlite://x.db",
        ])
        .expect("parses");
        assert!(not_pg.validate().is_err());
        let pg = Config::parse_from([
            "ecommerce",
            "--database-url",
            "postgres://h/db",
            "--database-read-url",
            "postgres://replica/db",
        ])
        .expect("parses");
        pg.validate().expect("a PostgreSQL replica of a PostgreSQL primary");
        let replicas = Config::parse_from(["ecommerce", "--events-replicas", "3"]).expect("parses");
        assert_eq!(replicas.events_replicas, 3);
        assert!(Config::parse_from(["ecommerce", "--events-replicas", "0"]).is_err());
    }

    #[test]
    fn short_jwt_secrets_and_half_admin_pairs_are_refused() {
        let short = Config::parse_from(["ecommerce", "--jwt-secret", "change-me"]).expect("parses");
        let err = short.validate().unwrap_err().to_string();
        assert!(err.contains("at least 32 bytes") && !err.contains("change-me"), "{err}");
        let strong = Config::parse_from(["ecommerce", "--jwt-secret", &"x".repeat(32)]).expect("parses");
        strong.validate().expect("32 bytes are enough");
        let half = Config::parse_from(["ecommerce", "--admin-email", "a@example.com"]).expect("parses");
        assert!(half.validate().is_err());
    }

    #[test]
    fn zero_and_negative_numbers_are_refused_with_their_range() {
        for (flag, value) in [
            ("--expiry-interval-ms", "0"),
            ("--draw-interval-ms", "0"),
            ("--relay-interval-ms", "0"),
            ("--db-max-connections", "0"),
            ("--order-ttl-seconds", "0"),
            ("--popular-cache-seconds", "-1"),
        ] {
            let err = Config::parse_from(["ecommerce", &format!("{flag}={value}")]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&format!("{value} is not in")), "{flag}={value}: {text}");
        }
    }

    #[test]
    fn the_connection_and_hashing_limits_are_read_and_bounded() {
        let config = Config::parse_from([
            "ecommerce",
            "--hash-threads=3",
            "--header-timeout-ms=2500",
            "--idle-timeout-ms=90000",
            "--max-header-bytes=16384",
            "--max-connections=50",
        ])
        .expect("valid settings");
        assert_eq!(config.hashing(), HashingLimits { threads: 3, queue: 384 });
        let http = config.http();
        assert_eq!(
            (
                http.header_timeout,
                http.idle_timeout,
                http.max_header_bytes,
                http.max_connections
            ),
            (Duration::from_millis(2_500), Duration::from_secs(90), 16_384, 50)
        );
        let queue = Config::parse_from(["ecommerce", "--hash-threads=2", "--hash-queue=0"]).expect("valid");
        assert_eq!(queue.hashing(), HashingLimits { threads: 2, queue: 0 });
        for (flag, value) in [
            ("--hash-threads", "0"),
            ("--header-timeout-ms", "99"),
            ("--idle-timeout-ms", "99"),
            ("--max-header-bytes", "8191"),
            ("--max-connections", "0"),
        ] {
            let err = Config::parse_from(["ecommerce", &format!("{flag}={value}")]).unwrap_err();
            assert!(
                err.to_string().contains(&format!("{value} is not in")),
                "{flag}={value}: {err}"
            );
        }
        let short = Config::parse_from(["ecommerce", "--metrics-token", "short"]).expect("parses");
        let err = short.validate().unwrap_err().to_string();
        assert!(err.contains("at least 16 bytes") && !err.contains("short\""), "{err}");
        let long = Config::parse_from(["ecommerce", "--metrics-token", &"t".repeat(16)]).expect("parses");
        long.validate().expect("16 bytes are enough");
    }

    #[test]
    fn proxies_and_origins_are_parsed_or_refused() {
        let proxies: TrustedProxies = "10.0.0.0/8, ::1".parse().expect("valid");
        assert_eq!(proxies.0.len(), 2);
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("nginx".parse::<TrustedProxies>().is_err());
        assert_eq!("".parse::<CorsOrigins>(), Ok(CorsOrigins::None));
        assert_eq!("*".parse::<CorsOrigins>(), Ok(CorsOrigins::Any));
        assert_eq!(
            "https://shop.example.com, http://localhost:3000".parse::<CorsOrigins>(),
            Ok(CorsOrigins::List(vec![
                "https://shop.example.com".into(),
                "http://localhost:3000".into()
            ]))
        );
        assert!("shop.example.com".parse::<CorsOrigins>().is_err());
        assert!("https://shop.example.com/path".parse::<CorsOrigins>().is_err());
    }

    #[test]
    fn typos_are_matched_to_the_closest_setting() {
        let known = known_variables();
        assert!(known.contains(&"ECOMMERCE_ADDR") && known.contains(&"ECOMMERCE_CATALOG_CACHE_MS"));
        assert_eq!(edit_distance("ECOMMERCE_ADRR", "ECOMMERCE_ADDR"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
