//! The HTTP side: one connection pool, requests spread round-robin over the instances, and the
//! few typed calls the set-up phase needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use reqwest::{Client, Method, Url};
use serde_json::{Value, json};

/// One answer: status, body and the time from sending to the last body byte.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub elapsed: Duration,
    /// The `Content-Type` was `application/problem+json` (the contract for every error).
    pub problem_json: bool,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The problem's stable `code`, when the answer is an error with one.
    pub fn code(&self) -> Option<String> {
        if self.is_success() {
            return None;
        }
        self.json()?.get("code")?.as_str().map(str::to_owned)
    }

    pub fn id(&self) -> Option<i64> {
        self.json()?.get("id")?.as_i64()
    }
}

pub type Sent = Result<Reply, reqwest::Error>;

/// A request body, serialized once by the caller when it is reused.
pub enum Body<'a> {
    None,
    Json(&'a Value),
}

pub struct Api {
    client: Client,
    bases: Vec<String>,
    next: AtomicUsize,
}

/// Accepts only loopback targets: this tool must never load another machine.
pub fn check_loopback(base: &str) -> Result<String, String> {
    let url = Url::parse(base).map_err(|e| format!("bad target {base}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!("target {base}: only http:// is supported"));
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!("target {base} is not a loopback address"));
    }
    Ok(base.trim_end_matches('/').to_owned())
}

impl Api {
    pub fn new(bases: &[String], connections: usize) -> Result<Self, String> {
        if bases.is_empty() {
            return Err("no --target given".into());
        }
        let bases = bases.iter().map(|b| check_loopback(b)).collect::<Result<Vec<_>, _>>()?;
        let client = Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(connections.max(1))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            client,
            bases,
            next: AtomicUsize::new(0),
        })
    }

    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// The next instance, round-robin per request.
    fn base(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body<'_>,
        key: Option<&str>,
    ) -> Sent {
        let url = format!("{}{}", self.base(), path);
        let mut request = self.client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Body::Json(value) = body {
            request = request.json(value);
        }
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status().as_u16();
        let problem_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/problem+json"));
        let body = response.bytes().await?;
        Ok(Reply {
            status,
            body,
            elapsed: started.elapsed(),
            problem_json,
        })
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Sent {
        self.send(Method::GET, path, token, Body::None, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Sent {
        self.send(Method::POST, path, token, Body::Json(body), None).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Sent {
        self.send(Method::PUT, path, token, Body::Json(body), None).await
    }

    /// A set-up call that must succeed with `expect`; the error names the call and the answer.
    pub async fn must(&self, what: &str, sent: Sent, expect: u16) -> Result<Value, String> {
        let reply = sent.map_err(|e| format!("{what}: {e}"))?;
        if reply.status != expect {
            return Err(format!(
                "{what}: expected {expect}, got {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        if reply.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&reply.body).map_err(|e| format!("{what}: bad JSON: {e}"))
    }

    /// Logs in: the user id, the access token and its lifetime in seconds.
    pub async fn token(&self, email: &str, password: &str) -> Result<(i64, String, u64), String> {
        let body = json!({"email": email, "password": password});
        let value = self
            .must(
                "POST /api/v1/auth/token",
                self.post("/api/v1/auth/token", None, &body).await,
                200,
            )
            .await?;
        let token = value["access_token"]
            .as_str()
            .ok_or("token: no access_token")?
            .to_owned();
        let user_id = value["user_id"].as_i64().ok_or("token: no user_id")?;
        let expires_in = value["expires_in"].as_u64().unwrap_or(900);
        Ok((user_id, token, expires_in))
    }
}
