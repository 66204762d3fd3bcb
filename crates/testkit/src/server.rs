//! One running `ecommerce` process on a test database.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::db::TestDb;

/// How long a server may take to print its listening line (migrations, admin hashing, a busy
/// machine running many tests at once).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How many lines of a server's stderr are kept for the failure report.
const STDERR_TAIL_LINES: usize = 200;

static SERVER_BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Names the `ecommerce` binary under test. The test macros call it with
/// `env!("CARGO_BIN_EXE_ecommerce")`, which Cargo sets for the server crate's own tests.
pub fn use_server_binary(path: &str) {
    let _ = SERVER_BINARY.set(PathBuf::from(path));
}

/// The `ecommerce` binary under test (see [`use_server_binary`]).
pub fn server_binary() -> PathBuf {
    if let Some(path) = SERVER_BINARY.get() {
        return path.clone();
    }
    ["NEXTEST_BIN_EXE_ecommerce", "CARGO_BIN_EXE_ecommerce"]
        .into_iter()
        .find_map(std::env::var_os)
        .map(PathBuf::from)
        .expect("no ecommerce binary: run the test through engine_tests!/postgres_tests! or call use_server_binary")
}

/// `ecommerce ARGS…` with nothing from the developer's environment that could redirect it
/// (`ECOMMERCE_*`, `DATABASE_URL`, `NATS_URL`, `RUST_LOG`, `NO_COLOR` are removed).
pub fn server_command() -> Command {
    let mut command = Command::new(server_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|key| {
            key.starts_with("ECOMMERCE_") || ["DATABASE_URL", "NATS_URL", "RUST_LOG", "NO_COLOR"].contains(&key)
        }) {
            command.env_remove(&key);
        }
    }
    command
}

/// One running `ecommerce` process, killed (and reaped) on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base_url: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts a server with `env` and waits for its listening line (never sleeps).
    pub(crate) async fn start(index: usize, env: &[(String, String)]) -> Server {
        let mut command = server_command();
        for (key, value) in env {
            command.env(key, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", server_binary().display()));

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || collect_lines(stderr, &tail));

        // The first stdout line says where the server listens; later ones (there should be
        // none) are kept with the logs so that the pipe never fills.
        let stdout = child.stdout.take().expect("piped stdout");
        let tail = Arc::clone(&stderr_tail);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = ready_tx.send(first);
            }
            for line in lines.map_while(Result::ok) {
                push_line(&tail, format!("[stdout] {line}"));
            }
        });

        let mut server = Server {
            child,
            base_url: String::new(),
            stderr_tail,
        };
        let first_line = match tokio::time::timeout(STARTUP_TIMEOUT, ready_rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => {
                let status = server.child.wait().ok();
                panic!(
                    "server {index} exited ({status:?}) before printing its listening line; its stderr:\n{}",
                    server.stderr_text()
                )
            }
            Err(_) => panic!(
                "server {index} printed no listening line within {STARTUP_TIMEOUT:?}; its stderr:\n{}",
                server.stderr_text()
            ),
        };
        let base_url = first_line
            .strip_prefix("ecommerce listening on ")
            .filter(|url| url.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| {
                panic!(
                    "server {index}: first stdout line should be `ecommerce listening on http://127.0.0.1:PORT`, got {first_line:?}; stderr:\n{}",
                    server.stderr_text()
                )
            });
        server.base_url = base_url.trim_end_matches('/').to_owned();
        server
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn stderr_text(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The environment every test server starts with, before the test's own additions.
pub(crate) fn base_env(db: &TestDb, index: usize) -> Vec<(String, String)> {
    let log_filter = std::env::var("ECOMMERCE_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
    let events_file = db.path(&format!("events-{index}.jsonl"));
    [
        ("ECOMMERCE_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url().to_owned()),
        ("ECOMMERCE_ADMIN_EMAIL", crate::ADMIN_EMAIL.to_owned()),
        ("ECOMMERCE_ADMIN_PASSWORD", crate::ADMIN_PASSWORD.to_owned()),
        ("ECOMMERCE_JWT_SECRET", crate::JWT_SECRET.to_owned()),
        (
            "ECOMMERCE_DB_MAX_CONNECTIONS",
            crate::SERVER_DB_MAX_CONNECTIONS.to_string(),
        ),
        ("ECOMMERCE_EVENTS_FILE", events_file.display().to_string()),
        // The acceptance runs switch the v2 limits and the catalog cache off; tests of those
        // features set them back.
        ("ECOMMERCE_RATE_LIMIT_AUTH", "0".to_owned()),
        ("ECOMMERCE_RATE_LIMIT_USER", "0".to_owned()),
        ("ECOMMERCE_CATALOG_CACHE_MS", "0".to_owned()),
        ("RUST_LOG", log_filter),
        ("NO_COLOR", "1".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

fn collect_lines(source: impl Read, tail: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(source).lines().map_while(Result::ok) {
        push_line(tail, line);
    }
}

fn push_line(tail: &Mutex<VecDeque<String>>, line: String) {
    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    if tail.len() == STDERR_TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
