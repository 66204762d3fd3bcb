//! Fast bench users (`--users-by-sql`): thousands of buyers written straight into the database
//! in multi-row inserts, their tokens signed here, instead of a sign-up and a login through the
//! API each (two Argon2id hashes on the server, about 30 users a second on 2 cores).
//!
//! The rows are the ones the server itself would leave behind:
//!
//! - the account as a sign-up writes it (`insert_user`: email, password hash, name, role `USER`,
//!   `created_at`, token version 0), with the password hash computed once by the server's own
//!   [`ecommerce_api::auth::hash_password`] (same Argon2id parameters, same PHC string), so that
//!   logging in with [`PASSWORD`] works;
//! - the top-up as the server writes a charge (`wallet::charge`): the balance on the account row
//!   and one `CHARGE` history line per charge of at most 1,000,000 KRW, `balance_after` the
//!   running sum, so that every balance equals its history;
//! - the access token as a login issues it ([`ecommerce_api::auth::TokenKeys::issue`]: sub,
//!   role, iat, exp, jti, ver), signed with the servers' `ECOMMERCE_JWT_SECRET`.
//!
//! Before the scenario runs, one user logs in through the API (the hash is good) and a minted
//! token is used against every instance (the token is accepted); either failing stops the run.

use std::str::FromStr;
use std::time::{Duration, Instant};

use ecommerce_api::auth::{TokenKeys, hash_password};
use ecommerce_domain::account::{Credentials, Role};
use ecommerce_domain::wallet::{MAX_CHARGE, MIN_CHARGE};
use ecommerce_domain::{Timestamp, UserId};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, QueryBuilder, SqlitePool};

use crate::client::Api;
use crate::users::{PASSWORD, User, now_unix};

/// Accounts per multi-row insert: 6 parameters a row stays under both engines' limits
/// (SQLite 32,766, PostgreSQL 65,535).
const BATCH: usize = 2_000;

/// Where the users go and what signs their tokens.
#[derive(Clone)]
pub struct SqlUsers {
    pub database_url: String,
    pub jwt_secret: String,
}

enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The charges that top a new account up to `target`, as the API set-up would make them: at most
/// [`MAX_CHARGE`] each, stopping when less than [`MIN_CHARGE`] is missing.
pub fn charges_for(target: i64) -> Vec<i64> {
    let mut charges = Vec::new();
    let mut balance = 0;
    while target - balance >= MIN_CHARGE.0 {
        let amount = (target - balance).min(MAX_CHARGE.0);
        charges.push(amount);
        balance += amount;
    }
    charges
}

/// One batch: the accounts, then their history lines, in one transaction. Written once for
/// both engines (`push_values` numbers the placeholders each engine's way).
macro_rules! insert_batch {
    ($db:ty, $pool:expr, $rows:expr, $hash:expr, $charges:expr, $now:expr) => {{
        let balance: i64 = $charges.iter().sum();
        let mut tx = $pool.begin().await.map_err(|e| format!("bench users: begin: {e}"))?;
        let mut accounts =
            QueryBuilder::<$db>::new("insert into account (email, password_hash, name, role, balance, created_at) ");
        accounts.push_values($rows.iter(), |mut row, (n, email)| {
            row.push_bind(email.clone())
                .push_bind($hash.to_owned())
                .push_bind(format!("Load {n}"))
                .push_bind(Role::User.as_str())
                .push_bind(balance)
                .push_bind($now);
        });
        accounts.push(" returning id, email");
        let made: Vec<(i64, String)> = accounts
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| format!("bench users: insert into account: {e}"))?;
        if !$charges.is_empty() {
            let mut lines = Vec::with_capacity(made.len() * $charges.len());
            for (id, _) in &made {
                let mut after = 0;
                for amount in $charges.iter() {
                    after += amount;
                    lines.push((*id, *amount, after));
                }
            }
            let mut entries = QueryBuilder::<$db>::new(
                "insert into balance_entry (user_id, kind, amount, balance_after, order_id, created_at) ",
            );
            entries.push_values(lines, |mut row, (id, amount, after)| {
                row.push_bind(id)
                    .push_bind("CHARGE")
                    .push_bind(amount)
                    .push_bind(after)
                    .push_bind(None::<i64>)
                    .push_bind($now);
            });
            entries
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("bench users: insert into balance_entry: {e}"))?;
        }
        tx.commit().await.map_err(|e| format!("bench users: commit: {e}"))?;
        made
    }};
}

impl Pool {
    async fn open(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .map_err(|e| format!("bench users: cannot connect to PostgreSQL: {e}"))?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            // The server's file, in the server's WAL mode; wait for its writer rather than fail.
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| format!("{url}: {e}"))?
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .map_err(|e| format!("bench users: cannot open {url}: {e}"))?;
            Ok(Self::Sqlite(pool))
        } else {
            Err("--users-by-sql: the database URL must start with postgres:// or sqlite://".into())
        }
    }

    async fn insert(
        &self,
        rows: &[(usize, String)],
        hash: &str,
        charges: &[i64],
        now: i64,
    ) -> Result<Vec<(i64, String)>, String> {
        Ok(match self {
            Pool::Postgres(pool) => insert_batch!(sqlx::Postgres, pool, rows, hash, charges, now),
            Pool::Sqlite(pool) => insert_batch!(sqlx::Sqlite, pool, rows, hash, charges, now),
        })
    }

    async fn close(self) {
        match self {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
}

/// `{prefix}0@loadgen.test` … `{prefix}{count - 1}@…`, each with the balance the `charges` make,
/// and a token each; then checked against the servers.
pub async fn create(
    api: &Api,
    source: &SqlUsers,
    prefix: &str,
    count: usize,
    charges: &[i64],
) -> Result<Vec<User>, String> {
    let started = Instant::now();
    if source.jwt_secret.is_empty() {
        return Err("--users-by-sql needs the servers' ECOMMERCE_JWT_SECRET in the environment".into());
    }
    let hash = hash_password(PASSWORD.to_owned())
        .await
        .map_err(|e| format!("bench users: hashing the password: {e:?}"))?;
    let keys = TokenKeys::new(source.jwt_secret.as_bytes());
    let pool = Pool::open(&source.database_url).await?;
    let now = Timestamp::now();
    let prefix = prefix.to_lowercase();
    let mut users = Vec::with_capacity(count);
    let mut inserted = 0;
    let all: Vec<(usize, String)> = (0..count).map(|n| (n, format!("{prefix}{n}@loadgen.test"))).collect();
    let mut failure = None;
    for batch in all.chunks(BATCH) {
        match pool.insert(batch, &hash, charges, now.millis()).await {
            Ok(made) => {
                inserted += made.len();
                users.extend(made);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    pool.close().await;
    if let Some(e) = failure {
        return Err(e);
    }
    if inserted != count {
        return Err(format!("bench users: {inserted} accounts inserted, {count} asked"));
    }
    let inserted_in = started.elapsed().as_secs_f64();
    // Keep the numbering: user n is `{prefix}n`.
    let position = |email: &str| -> Option<usize> {
        email
            .strip_prefix(prefix.as_str())?
            .strip_suffix("@loadgen.test")?
            .parse()
            .ok()
    };
    users.sort_by_key(|(_, email)| position(email));
    let valid_until = now_unix() + ecommerce_api::auth::TOKEN_TTL_SECONDS as u64;
    let mut out = Vec::with_capacity(count);
    for (id, email) in users {
        let credentials = Credentials {
            user_id: UserId(id),
            password_hash: String::new(),
            role: Role::User,
            token_version: 0,
        };
        let token = keys
            .issue(&credentials, Timestamp::now())
            .map_err(|e| format!("bench users: signing a token: {e:?}"))?;
        out.push(User {
            email,
            id,
            token,
            valid_until,
        });
    }
    eprintln!(
        "setup: {count} users written by SQL in {inserted_in:.2} s ({} batches of at most {BATCH}), tokens signed in {:.2} s",
        count.div_ceil(BATCH),
        started.elapsed().as_secs_f64() - inserted_in
    );
    verify(api, &out, charges.iter().sum()).await?;
    Ok(out)
}

/// Fails loudly unless the servers take these users as their own: user 0 logs in with the bench
/// password (the hash is good), and on every instance a minted token reads its balance (`200`,
/// the balance written).
async fn verify(api: &Api, users: &[User], balance: i64) -> Result<(), String> {
    let Some(first) = users.first() else {
        return Ok(());
    };
    let (id, _, _) = api
        .token(&first.email, PASSWORD)
        .await
        .map_err(|e| format!("--users-by-sql: the written user cannot log in: {e}"))?;
    if id != first.id {
        return Err(format!(
            "--users-by-sql: {} logged in as user {id}, written as {}",
            first.email, first.id
        ));
    }
    // One request per instance (the client takes them in turn), users from both ends.
    let instances = api.bases().len();
    let picks = instances.max(2);
    for k in 0..picks {
        let user = &users[k * (users.len() - 1) / (picks - 1)];
        let path = format!("/api/v1/users/{}/balance", user.id);
        let value = api
            .must(
                "--users-by-sql: a minted token (GET balance)",
                api.get(&path, Some(&user.token)).await,
                200,
            )
            .await?;
        if value["balance"].as_i64() != Some(balance) {
            return Err(format!(
                "--users-by-sql: user {} has balance {}, written {balance}",
                user.id, value["balance"]
            ));
        }
    }
    eprintln!("setup: the written users log in and their minted tokens are accepted ({instances} instance(s))");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_top_up_like_the_api_set_up() {
        assert!(charges_for(0).is_empty());
        assert!(charges_for(999).is_empty());
        assert_eq!(charges_for(2_000), vec![2_000]);
        assert_eq!(charges_for(2_500_500), vec![1_000_000, 1_000_000, 500_500]);
        assert_eq!(charges_for(1_000_999), vec![1_000_000]);
    }
}
