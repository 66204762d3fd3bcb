//! Passwords (Argon2id, hashed on the bounded queue of [`crate::hashing`]) and HS256 access
//! tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use ecommerce_domain::account::{Credentials, Role, TokenClaims, TokenState};
use ecommerce_domain::store::Store;
use ecommerce_domain::{StoreError, Timestamp, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::batch::Coalesced;
use crate::error::ApiError;

/// How long an access token lives.
pub const TOKEN_TTL_SECONDS: i64 = 3_600;

/// The longest time a token check trusts what it read about an account: a token logged out, or
/// whose account changed its password, role or was deleted, through another instance, is refused
/// here at most this long after (the contract allows a second).
pub const TOKEN_CHECK_TTL: Duration = Duration::from_millis(500);

/// Accounts whose token state one instance remembers at most (about 100 bytes each).
const MAX_CACHED_ACCOUNTS: usize = 100_000;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    /// Issued at, in whole seconds (RFC 7519).
    iat: i64,
    exp: i64,
    /// The token's id, what a logout refuses. Absent from tokens of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    /// The account's token version when the token was issued; a password change bumps it, so a
    /// token issued before, even within the same second, is refused. Absent (0) in older tokens.
    #[serde(default)]
    ver: i64,
}

/// Signs and checks tokens with the secret shared by all instances.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A new token for the account as `credentials` describe it, with a fresh id.
    pub fn issue(&self, credentials: &Credentials, now: Timestamp) -> Result<String, ApiError> {
        let now_seconds = now.millis().div_euclid(1000);
        let claims = Claims {
            sub: credentials.user_id.to_string(),
            role: credentials.role.as_str().to_owned(),
            iat: now_seconds,
            exp: now_seconds + TOKEN_TTL_SECONDS,
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            ver: credentials.token_version,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(ApiError::internal)
    }

    /// The claims of a well-signed, unexpired token. Whether the account still stands behind
    /// them is [`TokenCheck::admits`]'s question.
    pub fn verify(&self, token: &str) -> Option<TokenClaims> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let user_id = data.claims.sub.parse::<i64>().ok().filter(|id| *id > 0)?;
        let role = Role::parse(&data.claims.role)?;
        Some(TokenClaims {
            user_id: UserId(user_id),
            role,
            token_version: data.claims.ver,
            jti: data.claims.jti.filter(|jti| !jti.is_empty() && jti.len() <= 64),
            expires_at: Timestamp(data.claims.exp.saturating_mul(1000)),
        })
    }
}

/// Checks tokens against their account (audit M2, M5): it exists, has the token's role and
/// token version, and did not log the token out. What it read of an account is trusted for
/// [`TOKEN_CHECK_TTL`], so a busy account costs one read per interval and per instance; this
/// instance's own logouts and password changes take effect at once ([`TokenCheck::forget`]).
///
/// Accounts missing from the cache at the same moment (a drop's thousands of first requests)
/// are read together, in one statement ([`crate::batch`]).
pub struct TokenCheck {
    ttl: Duration,
    cache: Mutex<TokenCache>,
    reads: Coalesced<UserId, TokenState>,
}

#[derive(Default)]
struct TokenCache {
    /// Each account's state, with the instant its read started.
    accounts: HashMap<UserId, (Instant, Arc<Option<TokenState>>)>,
    /// Accounts changed by this instance, and when: a read that started before is not kept.
    forgotten: HashMap<UserId, Instant>,
}

impl TokenCheck {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cache: Mutex::new(TokenCache::default()),
            reads: Coalesced::new("token_state"),
        }
    }

    /// The account's state, read in the next batch (alone if that batch failed).
    async fn read<S: Store>(&self, store: &S, user: UserId) -> Result<Arc<Option<TokenState>>, StoreError> {
        let read = self
            .reads
            .read(user, |users: Vec<UserId>| async move {
                store.token_states(&users, Timestamp::now()).await
            })
            .await;
        match read {
            Some(state) => Ok(Arc::new(state)),
            None => Ok(Arc::new(store.token_state(user, Timestamp::now()).await?)),
        }
    }

    /// Whether the account behind `claims` still admits them.
    pub async fn admits<S: Store>(&self, store: &S, claims: &TokenClaims) -> Result<bool, StoreError> {
        let user = claims.user_id;
        let cached = {
            let cache = self.lock();
            cache
                .accounts
                .get(&user)
                .filter(|(read_at, _)| read_at.elapsed() < self.ttl)
                .map(|(_, state)| state.clone())
        };
        let state = match cached {
            Some(state) => state,
            None => {
                let started = Instant::now();
                let state = self.read(store, user).await?;
                self.remember(user, started, state.clone());
                state
            }
        };
        Ok(state.as_ref().as_ref().is_some_and(|state| state.admits(claims)))
    }

    /// Drops what this instance knows of `user`, after a change to its tokens committed here.
    pub fn forget(&self, user: UserId) {
        let ttl = self.ttl;
        let mut cache = self.lock();
        cache.accounts.remove(&user);
        if cache.forgotten.len() >= 1024 {
            cache.forgotten.retain(|_, at| at.elapsed() < ttl);
        }
        cache.forgotten.insert(user, Instant::now());
    }

    fn remember(&self, user: UserId, started: Instant, state: Arc<Option<TokenState>>) {
        if self.ttl.is_zero() {
            return;
        }
        let ttl = self.ttl;
        let mut cache = self.lock();
        if cache.forgotten.get(&user).is_some_and(|at| *at >= started) {
            return;
        }
        if cache.accounts.len() >= MAX_CACHED_ACCOUNTS {
            cache.accounts.retain(|_, (read_at, _)| read_at.elapsed() < ttl);
            if cache.accounts.len() >= MAX_CACHED_ACCOUNTS {
                cache.accounts.clear();
            }
        }
        cache.accounts.insert(user, (started, state));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Argon2id with OWASP's 7 MiB / 5 passes setting (as strong as 19 MiB / 2 passes, a third of
/// the memory). Stored hashes carry their own parameters, so older hashes still verify.
fn argon2() -> Argon2<'static> {
    let params = Params::new(7 * 1024, 5, 1, None).unwrap_or_default();
    Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with Argon2id.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    crate::hashing::run(move || {
        let hash: Result<PasswordHash, _> = argon2().hash_password(password.as_bytes());
        hash.map(|h| h.to_string()).map_err(ApiError::internal)
    })
    .await?
}

/// Longer passwords are refused without hashing: far above what sign-up and the admin settings
/// accept (128), so that none can match.
const LONGEST_PASSWORD_CHARS: usize = 1_024;

/// Checks a password against a stored hash. With no stored hash (unknown email) it still spends
/// the same work, so both failures look alike. A password longer than any account can have is
/// refused without hashing: it cannot match, and hashing it would cost time and memory.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    if password.chars().count() > LONGEST_PASSWORD_CHARS {
        return Ok(false);
    }
    crate::hashing::run(move || {
        let argon = argon2();
        match stored.as_deref().map(PasswordHash::new) {
            Some(Ok(hash)) => argon.verify_password(password.as_bytes(), &hash).is_ok(),
            _ => {
                let _: Result<PasswordHash, _> = argon.hash_password(password.as_bytes());
                false
            }
        }
    })
    .await
}
