//! Sign-up, access tokens, logout and password change.

use axum::extract::State;
use axum::http::StatusCode;
use ecommerce_domain::account::{self, NewUser, Role, check_password, parse_email, parse_user_name};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::{Error, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{TOKEN_TTL_SECONDS, hash_password, verify_password};
use crate::error::Result;
use crate::extract::{Json, Session, UserScope};
use crate::openapi::operations;
use crate::rate_limit::ClientAddr;
use crate::{AppState, Created};

operations!(
    create_user::<S>,
    get_user::<S>,
    create_token::<S>,
    log_out::<S>,
    change_password::<S>
);

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUserRequest {
    /// One `@`, a domain with a dot, no white space, at most 254 characters. Stored lower-cased.
    #[schema(example = "kim@example.com")]
    #[schema(max_length = 254)]
    pub email: String,
    /// 8 to 128 characters, not among the most common passwords (an embedded list of 11,611),
    /// not one character repeated.
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    /// The password the account has now.
    #[schema(example = "correct horse battery")]
    pub current_password: String,
    /// The new password, held to the sign-up rules: 8 to 128 characters, not among the most
    /// common passwords, not one character repeated.
    #[schema(example = "staple battery horse correct")]
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
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
/// seconds. A wrong email and a wrong password get the same answer. Failed logins for one email
/// from one client address are throttled: 10 within 10 minutes answer `401`, the next ones `429`
/// (successful logins do not count; other addresses are not affected).
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
    ClientAddr(client): ClientAddr,
    Json(body): Json<TokenRequest>,
) -> Result<axum::Json<TokenResponse>> {
    let email = body.email.to_lowercase();
    let attempt = app.limits.login_attempt(&email, client)?;
    let credentials = app.store.credentials(&email).await?;
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let valid = verify_password(body.password, stored_hash).await?;
    let Some(credentials) = credentials.filter(|_| valid) else {
        return Err(attempt.failed());
    };
    let access_token = app.auth.issue(&credentials, Timestamp::now())?;
    Ok(axum::Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: TOKEN_TTL_SECONDS,
        user_id: credentials.user_id.0,
    }))
}

/// Sign out: revoke this token
///
/// The token sent with this request answers `401 UNAUTHORIZED` from then on, on every instance
/// within a second (at once on this one). The account's other tokens stay valid.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out: this token is refused from now on"),
    ))]
pub async fn log_out<S: Store>(State(app): State<AppState<S>>, Session(claims): Session) -> Result<StatusCode> {
    let mut tx = app.store.begin().await?;
    account::log_out(&mut tx, &claims).await?;
    tx.commit().await?;
    app.tokens.forget(claims.user_id);
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password
///
/// Needs the current password. Every token of the account issued before, this request's
/// included, answers `401` from then on (on every instance within a second): sign in again with
/// the new password. A wrong `current_password` is `401 INVALID_CREDENTIALS`; the new password
/// follows the sign-up rules (`400 VALIDATION_FAILED`).
#[utoipa::path(put, path = "/api/v1/users/{user_id}/password", tag = "accounts",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token")),
    request_body(content = ChangePasswordRequest,
        example = json!({"current_password": "correct horse battery", "new_password": "staple battery horse correct"})),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Password changed; every earlier token is refused from now on"),
        (status = 401, description = "INVALID_CREDENTIALS"),
    ))]
pub async fn change_password<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode> {
    check_password(&body.new_password)?;
    let credentials = app
        .store
        .credentials_of(scope.user_id)
        .await?
        .ok_or(Error::UserNotFound)?;
    let current_hash = credentials.password_hash;
    let valid = verify_password(body.current_password, Some(current_hash.clone())).await?;
    if !valid {
        return Err(Error::InvalidCredentials.into());
    }
    let new_hash = hash_password(body.new_password).await?;
    let mut tx = app.store.begin().await?;
    account::change_password(&mut tx, scope.user_id, &current_hash, &new_hash).await?;
    tx.commit().await?;
    app.tokens.forget(scope.user_id);
    Ok(StatusCode::NO_CONTENT)
}
