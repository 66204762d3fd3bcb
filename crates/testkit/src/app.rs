//! The application under test: one or more `ecommerce` processes on one [`TestDb`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use reqwest::Method;
use reqwest::RequestBuilder;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::db::{Engine, TestDb};
use crate::json::unique_email;
use crate::response::{Fetch, TestResponse};
use crate::server::{Server, base_env};
use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, USER_PASSWORD};

/// Longest wait for one HTTP answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a [`TestApp`]: engine, number of instances, extra environment.
pub struct TestAppBuilder {
    engine: Engine,
    instances: usize,
    env: Vec<(String, String)>,
    removed: Vec<String>,
}

impl TestAppBuilder {
    /// How many server instances share the database (default 1). They start at the same time.
    pub fn instances(mut self, count: usize) -> Self {
        assert!(count >= 1, "a test app needs at least one instance");
        self.instances = count;
        self
    }

    /// An environment variable for every instance, e.g. `ECOMMERCE_ORDER_TTL_SECONDS`; it
    /// overrides the harness's own (see [`crate`]). `{database}` in the value stands for the
    /// test's PostgreSQL database name (e.g. for `DATABASE_READ_URL`).
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// Leaves a variable of the harness's own environment unset (e.g. `ECOMMERCE_ADMIN_EMAIL`,
    /// to see what the server does without it).
    pub fn without_env(mut self, key: &str) -> Self {
        self.removed.push(key.to_owned());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let db = TestDb::create(self.engine).await;
        let envs: Vec<_> = (0..self.instances)
            .map(|index| {
                let mut env = instance_env(&db, index, &self.env);
                env.retain(|(key, _)| !self.removed.contains(key));
                env
            })
            .collect();
        let starts = envs.iter().enumerate().map(|(index, env)| Server::start(index, env));
        let servers = futures_util::future::join_all(starts).await;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build an HTTP client");
        TestApp {
            servers,
            client,
            next_instance: AtomicUsize::new(0),
            admin: OnceCell::new(),
            env: self.env,
            db,
        }
    }
}

fn instance_env(db: &TestDb, index: usize, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = base_env(db, index);
    let name = db.pg_name().unwrap_or_default();
    env.extend(
        extra
            .iter()
            .map(|(key, value)| (key.clone(), value.replace("{database}", name))),
    );
    env
}

/// One or more servers on one fresh database, and typed helpers to call them (one per route,
/// in [`crate::routes`]).
///
/// Helpers send each request to the next instance, round-robin; [`TestApp::request_on`] picks
/// one. Servers are killed before the database is dropped; when the test panics, each server's
/// stderr tail is printed.
pub struct TestApp {
    // Field order is drop order: servers first, then the database they use.
    servers: Vec<Server>,
    /// The HTTP client, for requests the helpers do not cover.
    pub client: reqwest::Client,
    next_instance: AtomicUsize,
    admin: OnceCell<TestUser>,
    env: Vec<(String, String)>,
    db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (index, server) in self.servers.iter().enumerate() {
                eprintln!(
                    "----- stderr of server {index} ({}) -----\n{}",
                    server.base_url,
                    server.stderr_text()
                );
            }
        }
    }
}

/// A signed-up user (or the admin) with a fresh access token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub password: String,
    pub token: String,
}

impl TestUser {
    /// The bearer token, as the generic request helpers take it.
    pub fn bearer(&self) -> Option<&str> {
        Some(&self.token)
    }
}

impl TestApp {
    /// One instance on a fresh database.
    pub async fn spawn(engine: Engine) -> TestApp {
        TestApp::builder(engine).spawn().await
    }

    /// `count` instances on one fresh database.
    pub async fn spawn_n(engine: Engine, count: usize) -> TestApp {
        TestApp::builder(engine).instances(count).spawn().await
    }

    pub fn builder(engine: Engine) -> TestAppBuilder {
        TestAppBuilder {
            engine,
            instances: 1,
            env: Vec::new(),
            removed: Vec::new(),
        }
    }

    pub fn engine(&self) -> Engine {
        self.db.engine()
    }

    pub fn db(&self) -> &TestDb {
        &self.db
    }

    pub fn instance_count(&self) -> usize {
        self.servers.len()
    }

    /// `http://127.0.0.1:PORT` of instance `index`.
    pub fn base_url(&self, index: usize) -> &str {
        &self.servers[index].base_url
    }

    /// The JSON-lines event file of instance `index` (used when `NATS_URL` is unset).
    pub fn events_file(&self, index: usize) -> PathBuf {
        self.db.path(&format!("events-{index}.jsonl"))
    }

    /// What instance `index` wrote on stderr so far (the last lines).
    pub fn stderr(&self, index: usize) -> String {
        self.servers[index].stderr_text()
    }

    /// Starts one more instance on the same database; returns its index.
    pub async fn add_instance(&mut self) -> usize {
        let index = self.servers.len();
        let env = instance_env(&self.db, index, &self.env);
        let server = Server::start(index, &env).await;
        self.servers.push(server);
        index
    }

    /// Like [`TestApp::add_instance`], with more environment for this instance only (a restart
    /// with a changed setting, say).
    pub async fn add_instance_with(&mut self, extra: &[(&str, &str)]) -> usize {
        let index = self.servers.len();
        let mut env = instance_env(&self.db, index, &self.env);
        env.extend(
            extra
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        let server = Server::start(index, &env).await;
        self.servers.push(server);
        index
    }

    /// Kills instance `index` (its slot stays, so indexes do not shift; requests to it fail).
    pub fn kill_instance(&mut self, index: usize) {
        self.servers[index].kill();
    }

    pub(crate) fn pick_instance(&self) -> usize {
        self.next_instance.fetch_add(1, Ordering::Relaxed) % self.servers.len()
    }

    /// A request to the next instance (round-robin). `path` starts with `/`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_on(self.pick_instance(), method, path)
    }

    /// A request to instance `index` (taken modulo the number of instances).
    pub fn request_on(&self, index: usize, method: Method, path: &str) -> RequestBuilder {
        assert!(path.starts_with('/'), "path {path:?} must start with /");
        let server = &self.servers[index % self.servers.len()];
        self.client.request(method, format!("{}{path}", server.base_url))
    }

    /// `GET path`, with a bearer token when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        with_token(self.request(Method::GET, path), token).fetch().await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        with_token(self.request(Method::POST, path), token)
            .json(body)
            .fetch()
            .await
    }

    /// `POST path` with no body at all.
    pub async fn post_empty(&self, path: &str, token: Option<&str>) -> TestResponse {
        with_token(self.request(Method::POST, path), token).fetch().await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        with_token(self.request(Method::PATCH, path), token)
            .json(body)
            .fetch()
            .await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        with_token(self.request(Method::PUT, path), token)
            .json(body)
            .fetch()
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> TestResponse {
        with_token(self.request(Method::DELETE, path), token).fetch().await
    }

    /// `method path` with a raw body sent as `Content-Type: application/json` (malformed JSON,
    /// arrays, duplicate fields…).
    pub async fn send_raw(&self, method: Method, path: &str, token: Option<&str>, raw: &str) -> TestResponse {
        with_token(self.request(method, path), token)
            .header("content-type", "application/json")
            .body(raw.to_owned())
            .fetch()
            .await
    }

    /// Every page of a list, following `next_after` with `limit` items per page.
    /// `path` has no query string. Panics unless every page is 200.
    pub async fn all_pages(&self, path: &str, token: Option<&str>, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let page_path = match after {
                Some(after) => format!("{path}?limit={limit}&after={after}"),
                None => format!("{path}?limit={limit}"),
            };
            let response = self.get(&page_path, token).await;
            let page = response.expect_status(200);
            let page_items = page["items"].as_array().expect("items is an array");
            items.extend(page_items.iter().cloned());
            match page["next_after"].as_i64() {
                Some(next) => after = Some(next),
                None => return items,
            }
            assert!(items.len() < 100_000, "paging through {path} does not end");
        }
    }

    // ----- accounts ----------------------------------------------------------------------

    /// `POST /api/v1/users` with the three fields.
    pub async fn sign_up(&self, email: &str, password: &str, name: &str) -> TestResponse {
        let body = json!({"email": email, "password": password, "name": name});
        self.post("/api/v1/users", None, &body).await
    }

    /// `POST /api/v1/auth/token`.
    pub async fn token(&self, email: &str, password: &str) -> TestResponse {
        let body = json!({"email": email, "password": password});
        self.post("/api/v1/auth/token", None, &body).await
    }

    /// Signs up a new user with a unique email and [`USER_PASSWORD`], and logs it in.
    pub async fn create_user(&self) -> TestUser {
        let email = unique_email();
        self.sign_up(&email, USER_PASSWORD, "Test User")
            .await
            .expect_status(201);
        self.log_in(&email, USER_PASSWORD).await
    }

    /// `count` users, signed up and logged in 16 at a time (Argon2 is slow).
    pub async fn create_users(&self, count: usize) -> Vec<TestUser> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(0..count)
            .map(|_| self.create_user())
            .buffer_unordered(16)
            .collect()
            .await
    }

    /// Logs in; panics unless the answer is 200 with a token.
    pub async fn log_in(&self, email: &str, password: &str) -> TestUser {
        let response = self.token(email, password).await;
        let body = response.expect_status(200);
        TestUser {
            id: body["user_id"].as_i64().expect("user_id in the token answer"),
            email: email.to_owned(),
            password: password.to_owned(),
            token: body["access_token"]
                .as_str()
                .expect("access_token in the token answer")
                .to_owned(),
        }
    }

    /// The admin the servers were started with, logged in once per test app.
    pub async fn admin(&self) -> &TestUser {
        self.admin
            .get_or_init(|| self.log_in(ADMIN_EMAIL, ADMIN_PASSWORD))
            .await
    }

    /// The admin's bearer token.
    pub async fn admin_token(&self) -> String {
        self.admin().await.token.clone()
    }
}

pub(crate) fn with_token(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}
