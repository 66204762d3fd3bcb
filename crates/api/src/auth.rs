//! Passwords (Argon2id, hashed off the async threads) and HS256 access tokens.

use std::sync::OnceLock;

use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use ecommerce_domain::UserId;
use ecommerce_domain::account::{Actor, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// How long an access token lives.
pub const TOKEN_TTL_SECONDS: i64 = 3_600;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    iat: i64,
    exp: i64,
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

    pub fn issue(&self, user: UserId, role: Role, now_seconds: i64) -> Result<String, ApiError> {
        let claims = Claims {
            sub: user.to_string(),
            role: role.as_str().to_owned(),
            iat: now_seconds,
            exp: now_seconds + TOKEN_TTL_SECONDS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(ApiError::internal)
    }

    pub fn verify(&self, token: &str) -> Option<Actor> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let user_id = data.claims.sub.parse::<i64>().ok().filter(|id| *id > 0)?;
        let role = Role::parse(&data.claims.role)?;
        Some(Actor {
            user_id: UserId(user_id),
            is_admin: role == Role::Admin,
        })
    }
}

/// Argon2id with OWASP's 7 MiB / 5 passes setting (as strong as 19 MiB / 2 passes, a third of
/// the memory). Stored hashes carry their own parameters, so older hashes still verify.
fn argon2() -> Argon2<'static> {
    let params = Params::new(7 * 1024, 5, 1, None).unwrap_or_default();
    Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params)
}

/// Runs `job` on one of a few dedicated hashing threads, one per core. Hashes run at most one
/// per core at a time (more only costs memory and starves other requests of CPU), and always on
/// the same threads, so their multi-megabyte buffers are reused instead of being left behind on
/// every thread of the blocking pool.
async fn on_hashing_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    type Job = Box<dyn FnOnce() + Send>;
    static QUEUE: OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel::<Job>();
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut started = 0;
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || {
                    loop {
                        let next = match receiver.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then(|| std::sync::Mutex::new(sender))
    });
    let sender = queue
        .as_ref()
        .ok_or_else(|| ApiError::internal("no password hashing thread could start"))?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = reply.send(job());
    });
    sender
        .lock()
        .map_err(|_| ApiError::internal("password hashing queue poisoned"))?
        .send(job)
        .map_err(ApiError::internal)?;
    answer.await.map_err(ApiError::internal)
}

/// Hashes a password with Argon2id.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    on_hashing_thread(move || {
        let hash: Result<PasswordHash, _> = argon2().hash_password(password.as_bytes());
        hash.map(|h| h.to_string()).map_err(ApiError::internal)
    })
    .await?
}

/// Checks a password against a stored hash. With no stored hash (unknown email) it still spends
/// the same work, so both failures look alike.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    on_hashing_thread(move || {
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
