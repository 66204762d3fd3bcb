//! Bench users: `{prefix}{n}@loadgen.test`, created by sign-up and logged in once, with bounded
//! concurrency (every sign-up and login is an Argon2 hash on the server). Tokens are kept in an
//! optional cache file so later scenarios of the same run reuse the same users without logging in
//! again. With `--users-by-sql` they are written into the database instead ([`crate::sql_users`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::Api;
use crate::sql_users::SqlUsers;

pub const PASSWORD: &str = "loadgen-password-1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub email: String,
    pub id: i64,
    pub token: String,
    /// Unix seconds after which the token is not reused.
    pub valid_until: u64,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub struct UserSource {
    pub prefix: String,
    pub concurrency: usize,
    pub cache: Option<PathBuf>,
    /// `--users-by-sql`: write the users straight into the database instead (see
    /// [`crate::sql_users`]); neither the sign-ups nor the cache are used then.
    pub sql: Option<SqlUsers>,
}

fn email(prefix: &str, n: usize) -> String {
    format!("{prefix}{n}@loadgen.test")
}

impl UserSource {
    fn load_cache(&self) -> BTreeMap<String, User> {
        let Some(path) = &self.cache else {
            return BTreeMap::new();
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return BTreeMap::new();
        };
        let users: Vec<User> = serde_json::from_str(&text).unwrap_or_default();
        // Tokens live an hour; keep a margin for the run that is about to use them.
        let fresh_until = now_unix() + 600;
        users
            .into_iter()
            .filter(|u| u.valid_until > fresh_until)
            .map(|u| (u.email.clone(), u))
            .collect()
    }

    fn save_cache(&self, users: &BTreeMap<String, User>) -> Result<(), String> {
        let Some(path) = &self.cache else {
            return Ok(());
        };
        let list: Vec<&User> = users.values().collect();
        let text = serde_json::to_string(&list).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Users number 0..count, signed up (or found already signed up) and logged in.
    pub async fn ensure(&self, api: &Api, count: usize) -> Result<Vec<User>, String> {
        let started = Instant::now();
        let mut known = self.load_cache();
        let missing: Vec<usize> = (0..count)
            .filter(|n| !known.contains_key(&email(&self.prefix, *n)))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "setup: creating {} users ({} cached), {} at a time",
                missing.len(),
                count - missing.len(),
                self.concurrency
            );
        }
        let mut created = stream::iter(missing.iter().copied())
            .map(|n| async move { sign_up_and_log_in(api, &email(&self.prefix, n), n).await })
            .buffer_unordered(self.concurrency.max(1));
        let mut done = 0usize;
        let mut failure = None;
        while let Some(result) = created.next().await {
            match result {
                Ok(user) => {
                    known.insert(user.email.clone(), user);
                    done += 1;
                    if done.is_multiple_of(1000) {
                        eprintln!(
                            "setup: {done}/{} users, {:.0} s",
                            missing.len(),
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        drop(created);
        // Keep what was made even when some failed, so a retry does not redo it.
        self.save_cache(&known)?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok((0..count).map(|n| known[&email(&self.prefix, n)].clone()).collect())
    }
}

async fn sign_up_and_log_in(api: &Api, email: &str, n: usize) -> Result<User, String> {
    let body = json!({"email": email, "password": PASSWORD, "name": format!("Load {n}")});
    let reply = api
        .post("/api/v1/users", None, &body)
        .await
        .map_err(|e| format!("sign-up {email}: {e}"))?;
    // 409 EMAIL_TAKEN: made by an earlier run against the same database; log in all the same.
    if reply.status != 201 && reply.code().as_deref() != Some("EMAIL_TAKEN") {
        return Err(format!(
            "sign-up {email}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    let (id, token, expires_in) = api.token(email, PASSWORD).await?;
    Ok(User {
        email: email.to_owned(),
        id,
        token,
        valid_until: now_unix() + expires_in,
    })
}
