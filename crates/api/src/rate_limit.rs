//! The contract's rate limits (contract v2, "Rate limits"), counted in this instance's memory:
//!
//! - sign-ups and token requests per client address: `auth_per_minute` in any 60 s;
//! - state-changing requests (`POST`, `PUT`, `PATCH`, `DELETE`) per signed-in user:
//!   `user_per_second` a second, in bursts of up to twice that (a token bucket); admins are
//!   exempt;
//! - failed logins per email and client address: [`FAILED_LOGINS`] in any
//!   [`FAILED_LOGIN_WINDOW`] answer `401`, the next ones `429` (another address is not locked
//!   out), whatever the other settings.
//!
//! Over a limit the request is answered `429 RATE_LIMITED` with `Retry-After` before its handler
//! runs, so nothing else happens. With N instances behind a balancer each counts on its own, so
//! a client spread evenly over them gets up to N times a limit; the nginx of the deployment kit
//! counts per address across all of them.
//!
//! The client address is the connection's peer, or, for a peer in the trusted proxies, the
//! right-most address of `X-Forwarded-For` that is not a trusted proxy ([`client_address`]).
//!
//! Memory is bounded: keys that hold nothing (a window with no stamp left, a full bucket) are
//! swept, and a limiter tracks at most [`MAX_KEYS`] keys; past that, new keys are let through
//! uncounted rather than locking everyone out.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ecommerce_domain::account::Role;
use ecommerce_domain::store::Store;
use ecommerce_domain::{Error, UserId};

use crate::AppState;
use crate::error::ApiError;

/// Failed logins per email and client address that answer `401` within [`FAILED_LOGIN_WINDOW`].
pub const FAILED_LOGINS: u32 = 10;
/// The window of [`FAILED_LOGINS`].
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(600);
/// Keys one limiter tracks at most (a few hundred bytes each).
pub const MAX_KEYS: usize = 100_000;
/// How often a limiter sweeps out the keys that hold nothing.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The settings: `ECOMMERCE_RATE_LIMIT_AUTH`, `ECOMMERCE_RATE_LIMIT_USER` (`0`: off) and
/// `ECOMMERCE_TRUSTED_PROXIES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub auth_per_minute: u32,
    pub user_per_second: u32,
    pub trusted_proxies: TrustedProxies,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            auth_per_minute: 30,
            user_per_second: 20,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Networks (address, prefix length) of the load balancers whose `X-Forwarded-For` is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<(IpAddr, u8)>);

impl TrustedProxies {
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0
            .iter()
            .any(|(network, prefix)| in_network(address, canonical(*network), *prefix))
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`, as a dual-stack socket reports it) is
/// that IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn in_network(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
        let prefix = u32::from(prefix).min(width);
        if prefix == 0 { 0 } else { bits >> (width - prefix) }
    }
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            masked(u128::from(u32::from(a)), 32, prefix) == masked(u128::from(u32::from(n)), 32, prefix)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => masked(u128::from(a), 128, prefix) == masked(u128::from(n), 128, prefix),
        _ => false,
    }
}

/// The client of a request from `peer`: the peer itself, unless it is a trusted proxy; then
/// the right-most address of `X-Forwarded-For` (all its lines, in order) that is not a trusted
/// proxy. An entry that is not an address ends the walk (the hop after it is the client), and a
/// list of trusted proxies only gives its left-most one. A client therefore cannot choose its
/// address by sending the header: only what trusted proxies appended is believed.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(address) = parse_hop(hop) else {
            break;
        };
        client = address;
        if !trusted.contains(address) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `2001:db8::1`, and the forms with a port some balancers send (`1.2.3.4:5678`,
/// `[2001:db8::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    hop.parse::<SocketAddr>().ok().map(|socket| canonical(socket.ip()))
}

/// How long to wait, in whole seconds, at least 1 (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    fn from_wait(wait: Duration) -> Self {
        let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        RetryAfter(whole.max(1))
    }
}

/// The rule a limiter counts by.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// At most `limit` in any `period` (a sliding log of the instants counted).
    Window { limit: u32, period: Duration },
    /// A token bucket: `per_second` refill, at most `burst` at once.
    Bucket { per_second: f64, burst: f64 },
}

enum Entry {
    Log(VecDeque<Instant>),
    Bucket { tokens: f64, at: Instant },
}

impl Entry {
    /// Whether the entry holds nothing that a fresh one would not (it can be forgotten).
    fn is_idle(&self, rule: Rule, now: Instant) -> bool {
        match (self, rule) {
            (Entry::Log(stamps), Rule::Window { period, .. }) => stamps
                .back()
                .is_none_or(|last| now.saturating_duration_since(*last) >= period),
            (Entry::Bucket { tokens, at }, Rule::Bucket { per_second, burst }) => {
                tokens + now.saturating_duration_since(*at).as_secs_f64() * per_second >= burst
            }
            _ => true,
        }
    }
}

struct Keys<K> {
    entries: HashMap<K, Entry>,
    last_sweep: Instant,
}

/// Counts requests per key by one [`Rule`], in memory, with a bounded number of keys.
pub struct Limiter<K> {
    rule: Rule,
    max_keys: usize,
    keys: Mutex<Keys<K>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rule: Rule, max_keys: usize) -> Self {
        Self {
            rule,
            max_keys,
            keys: Mutex::new(Keys {
                entries: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Counts one request of `key` at `now`, or says how long to wait when the key is over the
    /// limit (a refused request is not counted).
    pub fn acquire(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let mut keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.saturating_duration_since(keys.last_sweep) >= SWEEP_EVERY {
            self.sweep(&mut keys, now);
        }
        if !keys.entries.contains_key(key) {
            if keys.entries.len() >= self.max_keys
                && now.saturating_duration_since(keys.last_sweep) >= Duration::from_secs(1)
            {
                self.sweep(&mut keys, now);
            }
            if keys.entries.len() >= self.max_keys {
                // Full of live keys: let this one through uncounted rather than refuse it.
                return Ok(());
            }
            let fresh = match self.rule {
                Rule::Window { limit, .. } => Entry::Log(VecDeque::with_capacity(limit.min(64) as usize)),
                Rule::Bucket { burst, .. } => Entry::Bucket { tokens: burst, at: now },
            };
            keys.entries.insert(key.clone(), fresh);
        }
        let Some(entry) = keys.entries.get_mut(key) else {
            return Ok(());
        };
        match (entry, self.rule) {
            (Entry::Log(stamps), Rule::Window { limit, period }) => {
                while stamps
                    .front()
                    .is_some_and(|first| now.saturating_duration_since(*first) >= period)
                {
                    stamps.pop_front();
                }
                if stamps.len() < limit as usize {
                    stamps.push_back(now);
                    Ok(())
                } else {
                    let oldest = stamps.front().copied().unwrap_or(now);
                    Err(RetryAfter::from_wait(
                        period.saturating_sub(now.saturating_duration_since(oldest)),
                    ))
                }
            }
            (Entry::Bucket { tokens, at }, Rule::Bucket { per_second, burst }) => {
                let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_second).min(burst);
                *at = now.max(*at);
                if refilled >= 1.0 {
                    *tokens = refilled - 1.0;
                    Ok(())
                } else {
                    *tokens = refilled;
                    Err(RetryAfter::from_wait(Duration::from_secs_f64(
                        (1.0 - refilled) / per_second,
                    )))
                }
            }
            _ => Ok(()),
        }
    }

    /// Whether [`Limiter::acquire`] would refuse `key` at `now`, without counting anything.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match (keys.entries.get(key), self.rule) {
            (Some(Entry::Log(stamps)), Rule::Window { limit, period }) => {
                let live: Vec<&Instant> = stamps
                    .iter()
                    .filter(|stamp| now.saturating_duration_since(**stamp) < period)
                    .collect();
                match live.first() {
                    Some(oldest) if live.len() >= limit as usize => Err(RetryAfter::from_wait(
                        period.saturating_sub(now.saturating_duration_since(**oldest)),
                    )),
                    _ => Ok(()),
                }
            }
            (Some(Entry::Bucket { tokens, at }), Rule::Bucket { per_second, burst }) => {
                let refilled = (tokens + now.saturating_duration_since(*at).as_secs_f64() * per_second).min(burst);
                if refilled >= 1.0 {
                    Ok(())
                } else {
                    Err(RetryAfter::from_wait(Duration::from_secs_f64(
                        (1.0 - refilled) / per_second,
                    )))
                }
            }
            _ => Ok(()),
        }
    }

    /// How many keys are tracked.
    pub fn tracked_keys(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entries
            .len()
    }

    fn sweep(&self, keys: &mut Keys<K>, now: Instant) {
        let rule = self.rule;
        keys.entries.retain(|_, entry| !entry.is_idle(rule, now));
        keys.last_sweep = now;
    }
}

/// Every limiter of one instance.
pub struct RateLimits {
    auth: Option<Limiter<IpAddr>>,
    user: Option<Limiter<UserId>>,
    failed_logins: Limiter<(u64, IpAddr)>,
    trusted: TrustedProxies,
    /// Keys the login throttle by a hash of the email, so that long emails cost no memory.
    email_hasher: RandomState,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        let auth = (config.auth_per_minute > 0).then(|| {
            Limiter::new(
                Rule::Window {
                    limit: config.auth_per_minute,
                    period: Duration::from_secs(60),
                },
                MAX_KEYS,
            )
        });
        let user = (config.user_per_second > 0).then(|| {
            let per_second = f64::from(config.user_per_second);
            Limiter::new(
                Rule::Bucket {
                    per_second,
                    burst: 2.0 * per_second,
                },
                MAX_KEYS,
            )
        });
        Self {
            auth,
            user,
            failed_logins: Limiter::new(
                Rule::Window {
                    limit: FAILED_LOGINS,
                    period: FAILED_LOGIN_WINDOW,
                },
                MAX_KEYS,
            ),
            trusted: config.trusted_proxies.clone(),
            email_hasher: RandomState::new(),
        }
    }

    /// Refuses a login for `email` from `client` (`429`) once [`FAILED_LOGINS`] failed within
    /// [`FAILED_LOGIN_WINDOW`], before any password is checked. Counts nothing: a login that
    /// turns out wrong is counted by [`LoginAttempt::failed`].
    pub fn login_attempt(&self, email: &str, client: IpAddr) -> Result<LoginAttempt<'_>, ApiError> {
        let key = (self.email_hasher.hash_one(email.to_lowercase()), client);
        match self.failed_logins.peek(&key, Instant::now()) {
            Ok(()) => Ok(LoginAttempt { limits: self, key }),
            Err(retry) => Err(too_many_failed_logins(retry)),
        }
    }
}

fn too_many_failed_logins(retry: RetryAfter) -> ApiError {
    rate_limited(retry, "too many failed logins for this email from this address")
}

/// A login attempt let through by the throttle; successful logins are never counted.
pub struct LoginAttempt<'a> {
    limits: &'a RateLimits,
    key: (u64, IpAddr),
}

impl LoginAttempt<'_> {
    /// The password was wrong: counts the failure. It answers `401`, or `429` when concurrent
    /// failures used up the allowance meanwhile, so that at most [`FAILED_LOGINS`] answer `401`.
    pub fn failed(self) -> ApiError {
        match self.limits.failed_logins.acquire(&self.key, Instant::now()) {
            Ok(_) => Error::InvalidCredentials.into(),
            Err(retry) => too_many_failed_logins(retry),
        }
    }
}

fn rate_limited(retry: RetryAfter, detail: &str) -> ApiError {
    ApiError::from(Error::RateLimited {
        retry_after_seconds: retry.0,
    })
    .with_detail(detail)
}

/// The client address of a request, as [`client_address`] decides it (set by [`enforce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<St: Send + Sync> FromRequestParts<St> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))
    }
}

/// Sign-ups and token requests: the routes `ECOMMERCE_RATE_LIMIT_AUTH` counts.
fn is_auth_route(method: &Method, route: &str) -> bool {
    method == Method::POST && matches!(route, "/api/v1/users" | "/api/v1/auth/token")
}

fn changes_state(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// The middleware: finds the client address, then answers `429` before the handler when a limit
/// is used up. The user limit takes the user from the token's signature alone (a token refused
/// later still counted for its account); admins are not limited.
pub async fn enforce<S: Store>(State(state): State<AppState<S>>, mut req: Request, next: Next) -> Response {
    let limits = &state.limits;
    let peer = match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(info) => info.0.ip(),
        None => {
            // Served without `into_make_service_with_connect_info`: every client shares one
            // address, so the address limits would count everyone together.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("no peer address on requests: the rate limits count every client as one");
            });
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    };
    let client = client_address(peer, req.headers(), &limits.trusted);
    req.extensions_mut().insert(ClientAddr(client));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let route = route.as_deref().unwrap_or_default();
    let now = Instant::now();
    if let Some(auth) = &limits.auth
        && is_auth_route(req.method(), route)
        && let Err(retry) = auth.acquire(&client, now)
    {
        return rate_limited(retry, "too many sign-ups or token requests from this address").into_response();
    }
    if let Some(user) = &limits.user
        && changes_state(req.method())
        && let Some(claims) = crate::extract::bearer_token(req.headers()).and_then(|token| state.auth.verify(token))
        && claims.role != Role::Admin
        && let Err(retry) = user.acquire(&claims.user_id, now)
    {
        return rate_limited(retry, "too many changes from this account; slow down").into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn trusted(list: &[(&str, u8)]) -> TrustedProxies {
        TrustedProxies(list.iter().map(|(address, prefix)| (ip(address), *prefix)).collect())
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).expect("a header value"));
        }
        headers
    }

    #[test]
    fn a_window_counts_at_most_its_limit_in_any_period_and_says_when_to_retry() {
        let limiter = Limiter::new(
            Rule::Window {
                limit: 3,
                period: Duration::from_secs(60),
            },
            10,
        );
        let start = Instant::now();
        for i in 0..3 {
            assert!(limiter.acquire(&1, start + Duration::from_secs(i)).is_ok());
        }
        assert_eq!(
            limiter.acquire(&1, start + Duration::from_secs(10)),
            Err(RetryAfter(50))
        );
        // Refused requests are not counted; another key is not affected.
        assert_eq!(
            limiter.acquire(&1, start + Duration::from_millis(59_500)),
            Err(RetryAfter(1))
        );
        assert!(limiter.acquire(&2, start + Duration::from_secs(10)).is_ok());
        // The first stamp leaves the window at 60 s, the second at 61 s.
        assert!(limiter.acquire(&1, start + Duration::from_secs(60)).is_ok());
        assert_eq!(limiter.acquire(&1, start + Duration::from_secs(60)), Err(RetryAfter(1)));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = Limiter::new(
            Rule::Bucket {
                per_second: 20.0,
                burst: 40.0,
            },
            10,
        );
        let start = Instant::now();
        for _ in 0..40 {
            assert!(limiter.acquire(&7, start).is_ok());
        }
        assert_eq!(limiter.acquire(&7, start), Err(RetryAfter(1)));
        // 20 a second: 10 more after half a second, not 11.
        let later = start + Duration::from_millis(500);
        for _ in 0..10 {
            assert!(limiter.acquire(&7, later).is_ok());
        }
        assert!(limiter.acquire(&7, later).is_err());
        // A full bucket after two seconds of rest, not more.
        let rested = later + Duration::from_secs(10);
        for _ in 0..40 {
            assert!(limiter.acquire(&7, rested).is_ok());
        }
        assert!(limiter.acquire(&7, rested).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        assert_eq!(RetryAfter::from_wait(Duration::ZERO), RetryAfter(1));
        assert_eq!(RetryAfter::from_wait(Duration::from_millis(1)), RetryAfter(1));
        assert_eq!(RetryAfter::from_wait(Duration::from_millis(1_001)), RetryAfter(2));
        assert_eq!(RetryAfter::from_wait(Duration::from_secs(3)), RetryAfter(3));
    }

    #[test]
    fn idle_keys_are_swept_and_the_number_of_keys_is_capped() {
        let limiter = Limiter::new(
            Rule::Window {
                limit: 1,
                period: Duration::from_secs(1),
            },
            100,
        );
        let start = Instant::now();
        for key in 0..100 {
            assert!(limiter.acquire(&key, start).is_ok());
        }
        assert_eq!(limiter.tracked_keys(), 100);
        // Full of live keys: a new key passes uncounted, and is not tracked.
        assert_eq!(limiter.acquire(&1_000, start), Ok(()));
        assert_eq!(limiter.acquire(&1_000, start), Ok(()));
        assert_eq!(limiter.tracked_keys(), 100);
        // Once the old keys hold nothing, they make room.
        let later = start + Duration::from_secs(2);
        assert_eq!(limiter.acquire(&1_000, later), Ok(()));
        assert_eq!(limiter.tracked_keys(), 1);
        assert!(limiter.acquire(&1_000, later).is_err(), "counted now");
        // And the periodic sweep forgets idle keys without any new key.
        let much_later = later + SWEEP_EVERY + Duration::from_secs(1);
        assert!(limiter.acquire(&1_000, much_later).is_ok());
        assert_eq!(limiter.tracked_keys(), 1);
    }

    #[test]
    fn x_forwarded_for_counts_only_from_trusted_proxies() {
        let proxies = trusted(&[("10.0.0.0", 8), ("127.0.0.1", 32)]);
        let headers = forwarded(&["203.0.113.9"]);
        // An untrusted peer: its own address, whatever it sends.
        assert_eq!(
            client_address(ip("198.51.100.7"), &headers, &proxies),
            ip("198.51.100.7")
        );
        // No trusted proxy at all: the peer.
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &TrustedProxies::default()),
            ip("127.0.0.1")
        );
        // A trusted peer: the header's address.
        assert_eq!(client_address(ip("10.1.2.3"), &headers, &proxies), ip("203.0.113.9"));
        // A trusted peer without the header: the peer.
        assert_eq!(
            client_address(ip("10.1.2.3"), &HeaderMap::new(), &proxies),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
        let proxies = trusted(&[("10.0.0.0", 8), ("127.0.0.1", 32)]);
        // The client forged the left part; the proxies appended the right part.
        let headers = forwarded(&["1.1.1.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &proxies), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let headers = forwarded(&["1.1.1.1", "203.0.113.9", "10.0.0.2"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &proxies), ip("203.0.113.9"));
        // Only proxies: the left-most.
        let headers = forwarded(&["10.0.0.5, 10.0.0.2"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &proxies), ip("10.0.0.5"));
        // Garbage ends the walk at the hop after it.
        let headers = forwarded(&["203.0.113.9, not-an-address, 10.0.0.2"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &proxies), ip("10.0.0.2"));
        // Ports and IPv6, and IPv4 seen through a dual-stack socket.
        let headers = forwarded(&["[2001:db8::1]:4711, 203.0.113.9:80"]);
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &headers, &proxies),
            ip("203.0.113.9")
        );
        let proxies6 = trusted(&[("2001:db8::", 32)]);
        let headers = forwarded(&["2001:db9::7, 2001:db8::1"]);
        assert_eq!(
            client_address(ip("2001:db8::2"), &headers, &proxies6),
            ip("2001:db9::7")
        );
    }

    #[test]
    fn networks_match_by_prefix() {
        let proxies = trusted(&[("192.168.0.0", 16), ("0.0.0.0", 0)]);
        assert!(proxies.contains(ip("8.8.8.8")));
        let proxies = trusted(&[("192.168.0.0", 16)]);
        assert!(proxies.contains(ip("192.168.255.1")));
        assert!(!proxies.contains(ip("192.169.0.1")));
        assert!(!proxies.contains(ip("::1")));
    }

    #[test]
    fn failed_logins_are_counted_per_email_and_address_and_successes_are_not() {
        let limits = RateLimits::new(&RateLimitConfig::default());
        let home = ip("203.0.113.1");
        let office = ip("203.0.113.2");
        // Successful attempts never count.
        for _ in 0..3 * FAILED_LOGINS {
            limits
                .login_attempt("kim@example.com", home)
                .expect("successes are free");
        }
        // Attempts judged at once: only FAILED_LOGINS of them answer 401.
        let attempts: Vec<_> = (0..FAILED_LOGINS + 2)
            .map(|_| {
                limits
                    .login_attempt("kim@example.com", home)
                    .expect("not throttled yet")
            })
            .collect();
        let statuses: Vec<u16> = attempts.into_iter().map(|a| a.failed().status.as_u16()).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 401).count(), FAILED_LOGINS as usize);
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
        let refused = limits.login_attempt("KIM@example.com", home).err().expect("throttled");
        assert_eq!(refused.status.as_u16(), 429);
        assert!(refused.retry_after().is_some_and(|s| s >= 1));
        // Another address, another email: not locked out.
        assert_eq!(
            limits
                .login_attempt("kim@example.com", office)
                .expect("another address")
                .failed()
                .status
                .as_u16(),
            401
        );
        limits.login_attempt("lee@example.com", home).expect("another email");
    }

    #[test]
    fn peek_counts_nothing() {
        let limiter = Limiter::new(
            Rule::Window {
                limit: 1,
                period: Duration::from_secs(60),
            },
            10,
        );
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.peek(&1, now), Ok(()));
        }
        assert_eq!(limiter.tracked_keys(), 0);
        limiter.acquire(&1, now).expect("free");
        assert_eq!(limiter.peek(&1, now + Duration::from_secs(30)), Err(RetryAfter(30)));
        assert_eq!(limiter.peek(&1, now + Duration::from_secs(60)), Ok(()));
    }
}
