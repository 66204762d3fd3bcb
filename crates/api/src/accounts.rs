//! Sign-up and access tokens.

use axum::extract::State;
use ecommerce_domain::account::{self, NewUser, Role, check_password, parse_email, parse_user_name};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::{Error, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{TOKEN_TTL_SECONDS, hash_password, verify_password};
use crate::error::Result;
use crate::extract::{Json, UserScope};
use crate::openapi::operations;
use crate::{AppState, Created};

operations!(create_user::<S>, get_user::<S>, create_token::<S>);

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUserRequest {
    /// One `@`, a domain with a dot, no white space, at most 254 characters. Stored lower-cased.
    #[schema(example = "kim@example.com")]
    #[schema(max_length = 254)]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(example = "correct horse battery")]
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// 1 to 50 characters after trimming.
    #[schema(example = "Kim")]
    #[schema(min_length = 1, max_length = 50)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: i64,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: i64,
    pub user_id: i64,
}

/// Sign up
///
/// Creates a user account. The email is stored lower-cased and is unique whatever its case; the
/// password is kept only as an Argon2id hash.
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts",
    request_body(content = CreateUserRequest,
        example = json!({"email": "kim@example.com", "password": "correct horse battery", "name": "Kim"})),
    responses(
        (status = 201, description = "Account created", body = UserResponse,
            headers(("Location" = String, description = "The account's path, `/api/v1/users/{user_id}`")),
            example = json!({"id": 42, "email": "kim@example.com", "name": "Kim"})),
        (status = 409, description = "EMAIL_TAKEN"),
    ))]
pub async fn create_user<S: Store>(
    State(app): State<AppState<S>>,
    Json(body): Json<CreateUserRequest>,
) -> Result<Created<UserResponse>> {
    let email = parse_email(&body.email)?;
    check_password(&body.password)?;
    let name = parse_user_name(&body.name)?;
    let password_hash = hash_password(body.password).await?;
    let user = NewUser {
        email,
        password_hash,
        name,
        role: Role::User,
    };
    let mut tx = app.store.begin().await?;
    let id = account::sign_up(&mut tx, &user, Timestamp::now()).await?;
    tx.commit().await?;
    Ok(Created(
        format!("/api/v1/users/{id}"),
        UserResponse {
            id: id.0,
            email: user.email,
            name: user.name,
        },
    ))
}

/// Get an account
///
/// The account's id, email and name: the caller's own, or any with an admin token. This is the
/// `Location` of a sign-up.
#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "accounts",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = UserResponse,
            example = json!({"id": 42, "email": "kim@example.com", "name": "Kim"})),
    ))]
pub async fn get_user<S: Store>(State(app): State<AppState<S>>, scope: UserScope) -> Result<axum::Json<UserResponse>> {
    let user = app.store.user(scope.user_id).await?.ok_or(Error::UserNotFound)?;
    Ok(axum::Json(UserResponse {
        id: user.id.0,
        email: user.email,
        name: user.name,
    }))
}

/// Sign in: get an access token
///
/// Answers a bearer token for `Authorization: Bearer <access_token>`, valid for `expires_in`
/// seconds. A wrong email and a wrong password get the same answer.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "accounts",
    request_body(content = TokenRequest,
        example = json!({"email": "kim@example.com", "password": "correct horse battery"})),
    responses(
        (status = 200, description = "Access token", body = TokenResponse, example = json!({
            "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiIsInJvbGUiOiJVU0VSIiwiZXhwIjoxNzY0NTgwMDAwfQ.c2lnbmF0dXJl",
            "token_type": "Bearer", "expires_in": 3600, "user_id": 42})),
        (status = 401, description = "INVALID_CREDENTIALS"),
    ))]
pub async fn create_token<S: Store>(
    State(app): State<AppState<S>>,
    Json(body): Json<TokenRequest>,
) -> Result<axum::Json<TokenResponse>> {
    let credentials = app.store.credentials(&body.email.to_lowercase()).await?;
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let valid = verify_password(body.password, stored_hash).await?;
    let credentials = credentials.filter(|_| valid).ok_or(Error::InvalidCredentials)?;
    let access_token = app
        .auth
        .issue(credentials.user_id, credentials.role, Timestamp::now().millis() / 1000)?;
    Ok(axum::Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: TOKEN_TTL_SECONDS,
        user_id: credentials.user_id.0,
    }))
}
