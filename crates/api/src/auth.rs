//! Passwords (Argon2id, hashed off the async threads) and HS256 access tokens.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use ecommerce_domain::UserId;
use ecommerce_domain::account::Role;
use ecommerce_domain::usecase::Actor;
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
            user_id,
            is_admin: role == Role::Admin,
        })
    }
}

/// Hashes a password with Argon2id on the blocking pool.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let hash: Result<PasswordHash, _> = Argon2::default().hash_password(password.as_bytes());
        hash.map(|h| h.to_string()).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Checks a password against a stored hash on the blocking pool. With no stored hash (unknown
/// email) it still spends the same work, so both failures look alike.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let argon = Argon2::default();
        match stored.as_deref().map(PasswordHash::new) {
            Some(Ok(hash)) => argon.verify_password(password.as_bytes(), &hash).is_ok(),
            _ => {
                let _: Result<PasswordHash, _> = argon.hash_password(password.as_bytes());
                false
            }
        }
    })
    .await
    .map_err(ApiError::internal)
}
