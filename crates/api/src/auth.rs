//! Passwords (Argon2id, hashed on the bounded queue of [`crate::hashing`]) and HS256 access
//! tokens.

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
