//! The command line and start-up checks (`ecommerce --help`, invalid settings): each runs the
//! real binary with a scrubbed environment and looks at its exit status and output. Invalid
//! settings must fail before any side effect: no database file, no admin, no password printed.

use std::process::Output;

use ecommerce_testkit::*;

fn ecommerce(args: &[&str], env: &[(&str, &str)]) -> Output {
    use_server_binary(env!("CARGO_BIN_EXE_ecommerce"));
    let mut command = server_command();
    command.args(args).envs(env.iter().copied()).env("NO_COLOR", "1");
    command.output().expect("run ecommerce")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every environment variable the server reads.
const SETTINGS: &[&str] = &[
    "ECOMMERCE_ADDR",
    "DATABASE_URL",
    "DATABASE_READ_URL",
    "ECOMMERCE_DB_MAX_CONNECTIONS",
    "ECOMMERCE_ADMIN_EMAIL",
    "ECOMMERCE_ADMIN_PASSWORD",
    "ECOMMERCE_JWT_SECRET",
    "ECOMMERCE_ORDER_TTL_SECONDS",
    "ECOMMERCE_POPULAR_CACHE_SECONDS",
    "NATS_URL",
    "ECOMMERCE_EVENTS_FILE",
    "ECOMMERCE_EVENTS_MAX_AGE_DAYS",
    "ECOMMERCE_EVENTS_REPLICAS",
    "ECOMMERCE_EXPIRY_INTERVAL_MS",
    "ECOMMERCE_RELAY_INTERVAL_MS",
    "ECOMMERCE_RATE_LIMIT_AUTH",
    "ECOMMERCE_RATE_LIMIT_USER",
    "ECOMMERCE_TRUSTED_PROXIES",
    "ECOMMERCE_CORS_ORIGINS",
    "ECOMMERCE_CATALOG_CACHE_MS",
    "ECOMMERCE_LOG_FORMAT",
];

#[test]
fn help_and_version_exit_0_and_help_lists_every_setting_with_its_variable_and_default() {
    let version = ecommerce(&["--version"], &[]);
    assert!(version.status.success(), "{version:?}");
    assert!(
        text(&version.stdout).starts_with("ecommerce "),
        "{}",
        text(&version.stdout)
    );

    for args in [&["--help"][..], &["serve", "--help"], &["-h"]] {
        let help = ecommerce(args, &[]);
        assert!(help.status.success(), "{args:?}: {help:?}");
        let out = text(&help.stdout);
        for setting in SETTINGS {
            assert!(
                out.contains(&format!("env: {setting}")),
                "{args:?} does not list {setting}:\n{out}"
            );
        }
        for default in [
            "127.0.0.1:8080",
            "sqlite://data/ecommerce.db",
            "[default: 900]",
            "[default: 30]",
        ] {
            assert!(
                out.contains(default),
                "{args:?} does not show the default {default}:\n{out}"
            );
        }
    }
    let tail = ecommerce(&["events", "tail", "--help"], &[]);
    assert!(tail.status.success(), "{tail:?}");
    for option in ["--from-sequence", "--since", "--durable"] {
        assert!(text(&tail.stdout).contains(option), "{}", text(&tail.stdout));
    }
}

#[test]
fn the_openapi_command_prints_the_document_as_json() {
    let output = ecommerce(&["openapi"], &[]);
    assert!(output.status.success(), "{output:?}");
    let doc: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{doc}");
    assert!(doc["paths"]["/api/v1/users"].is_object());
}

/// Starts a server that must refuse to start; returns its stderr after checking that it failed
/// and that it created nothing: no database file, no admin, no password shown.
fn refused(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = format!("sqlite://{}", dir.path().join("ecommerce.db").display());
    let events = dir.path().join("events").join("events.jsonl");
    let events = events.to_str().expect("a UTF-8 path");
    let mut all = vec![
        ("ECOMMERCE_ADDR", "127.0.0.1:0"),
        ("DATABASE_URL", db.as_str()),
        ("ECOMMERCE_EVENTS_FILE", events),
    ];
    all.extend_from_slice(env);
    let output = ecommerce(&[], &all);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "started although {env:?}: {stderr}");
    assert!(output.stdout.is_empty(), "printed {:?}", text(&output.stdout));
    assert!(!stderr.contains("password"), "no admin password is printed: {stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read the folder")
        .map(|entry| entry.map(|e| e.file_name()))
        .collect();
    assert!(
        left.is_empty(),
        "nothing is created before the settings are checked: {left:?}"
    );
    stderr
}

#[test]
fn an_unbindable_address_fails_before_the_database_or_the_admin_is_created() {
    let stderr = refused(&[("ECOMMERCE_ADDR", "bad")]);
    assert!(stderr.contains("cannot listen on bad"), "{stderr}");
    assert_eq!(stderr.matches("cannot listen").count(), 1, "printed once: {stderr}");
}

#[test]
fn a_jwt_secret_shorter_than_32_bytes_is_refused() {
    let stderr = refused(&[("ECOMMERCE_JWT_SECRET", "change-me")]);
    assert!(
        stderr.contains("ECOMMERCE_JWT_SECRET must be at least 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("change-me"), "the secret is not echoed: {stderr}");
}

#[test]
fn zero_intervals_and_negative_numbers_are_refused_with_their_range() {
    for (name, value, wording) in [
        ("ECOMMERCE_EXPIRY_INTERVAL_MS", "0", "0 is not in 1..="),
        ("ECOMMERCE_RELAY_INTERVAL_MS", "0", "0 is not in 1..="),
        ("ECOMMERCE_DB_MAX_CONNECTIONS", "0", "0 is not in 1..="),
        ("ECOMMERCE_POPULAR_CACHE_SECONDS", "-1", "-1 is not in 0..="),
        ("ECOMMERCE_ORDER_TTL_SECONDS", "abc", "invalid value 'abc'"),
        ("ECOMMERCE_LOG_FORMAT", "xml", "invalid value 'xml'"),
        ("ECOMMERCE_CORS_ORIGINS", "shop.example.com", "is not an origin"),
        ("ECOMMERCE_TRUSTED_PROXIES", "10.0.0.0/99", "prefix length"),
    ] {
        let stderr = refused(&[(name, value)]);
        assert!(stderr.contains(wording), "{name}={value}: {stderr}");
    }
}

#[test]
fn a_bad_database_scheme_is_named_without_echoing_the_url() {
    let stderr = refused(&[("DATABASE_URL", "mysql://shop:S3cr3t-DB-pass@db.internal/shop")]);
    assert!(stderr.contains("\"mysql\""), "{stderr}");
    assert!(!stderr.contains("S3cr3t"), "the password is not echoed: {stderr}");
}

#[tokio::test]
async fn unknown_ecommerce_variables_are_warned_about_once_at_start() {
    let app = TestApp::builder(Engine::Sqlite)
        .env("ECOMMERCE_ADRR", "x")
        .spawn()
        .await;
    // The server started; its warning names the closest setting. Nothing else is unknown.
    app.health().await.expect_status(200);
    let report = app.stderr(0);
    assert_eq!(
        report.matches("ignoring unknown variable").count(),
        1,
        "one warning, for ECOMMERCE_ADRR only:\n{report}"
    );
    assert!(
        report.contains("ECOMMERCE_ADRR (did you mean ECOMMERCE_ADDR?)"),
        "{report}"
    );
    assert!(
        !report.contains("\u{1b}["),
        "no colour codes when stderr is not a terminal:\n{report}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let app = TestApp::builder(Engine::Sqlite)
        .env("ECOMMERCE_LOG_FORMAT", "json")
        .spawn()
        .await;
    app.health().await.expect_status(200);
    let report = app.stderr(0);
    let lines: Vec<&str> = report.lines().filter(|line| line.starts_with('{')).collect();
    assert!(!lines.is_empty(), "JSON log lines:\n{report}");
    for line in lines {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert!(parsed["level"].is_string() && parsed["fields"].is_object(), "{line}");
    }
}
