//! Configuration from the environment (see the table in README.md and API.md).

use std::time::Duration;

/// Everything the server reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: String,
    pub database_url: String,
    pub admin: Option<(String, String)>,
    pub jwt_secret: Option<String>,
    pub order_ttl_seconds: i64,
    pub popular_cache: Duration,
    pub nats_url: Option<String>,
    pub events_file: String,
    pub db_max_connections: u32,
    pub expiry_interval: Duration,
    pub relay_interval: Duration,
    pub cors_origins: ecommerce_api::CorsOrigins,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match var(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a whole number, got {raw:?}")),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        let admin = match (var("ECOMMERCE_ADMIN_EMAIL"), var("ECOMMERCE_ADMIN_PASSWORD")) {
            (Some(email), Some(password)) => Some((email, password)),
            _ => None,
        };
        let order_ttl_seconds: i64 = number("ECOMMERCE_ORDER_TTL_SECONDS", 900)?;
        if order_ttl_seconds < 1 {
            return Err("ECOMMERCE_ORDER_TTL_SECONDS must be at least 1".into());
        }
        Ok(Self {
            addr: var("ECOMMERCE_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
            database_url: var("DATABASE_URL").unwrap_or_else(|| "sqlite://data/ecommerce.db".into()),
            admin,
            jwt_secret: var("ECOMMERCE_JWT_SECRET"),
            order_ttl_seconds,
            popular_cache: Duration::from_secs(number("ECOMMERCE_POPULAR_CACHE_SECONDS", 5)?),
            nats_url: var("NATS_URL"),
            events_file: var("ECOMMERCE_EVENTS_FILE").unwrap_or_else(|| "data/events.jsonl".into()),
            db_max_connections: number("ECOMMERCE_DB_MAX_CONNECTIONS", 16)?,
            expiry_interval: Duration::from_millis(number("ECOMMERCE_EXPIRY_INTERVAL_MS", 5_000)?),
            relay_interval: Duration::from_millis(number("ECOMMERCE_RELAY_INTERVAL_MS", 200)?),
            cors_origins: var("ECOMMERCE_CORS_ORIGINS")
                .unwrap_or_default()
                .parse()
                .map_err(|e| format!("ECOMMERCE_CORS_ORIGINS: {e}"))?,
        })
    }
}
