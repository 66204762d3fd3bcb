//! Black-box tests of the server's own protection under abuse (issue 10, the infrastructure half):
//! the bounded password-hashing queue, the connection limits (header and idle timeouts, the
//! connection cap, the head size), hyper's errors as problem+json, path ids, and `/metrics`
//! (HELP texts, the optional token). Each runs on SQLite and PostgreSQL against the real binary.
//!
//! Waits are bounded (a socket read gives up after [`PATIENCE`]) but nothing asserts how long
//! something took: a test checks what happened, e.g. that the server closed a connection.

use std::time::Duration;

use ecommerce_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROBLEM: &str = "application/problem+json";

/// Longest wait for a socket to answer or be closed: far above every timeout the tests set.
const PATIENCE: Duration = Duration::from_secs(30);

fn address(app: &TestApp) -> String {
    app.base_url(0).trim_start_matches("http://").to_owned()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(address(app)).await.expect("connect")
}

/// Everything the server sends until it closes the connection (or [`PATIENCE`] runs out, which
/// fails the test).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server kept the connection open for {PATIENCE:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

/// Sends one keep-alive `GET path` and reads its whole answer (bodies here are small and have a
/// `content-length`).
async fn get_keep_alive(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 answer: {answer:?}"))
}

fn header_of<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let (head, _) = answer.split_once("\r\n\r\n")?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn problem_of(answer: &str) -> Value {
    let (_, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("a JSON body ({e}): {answer:?}"))
}

engine_tests!(
    logins_beyond_the_hashing_queue_are_answered_503_with_retry_after_and_the_queue_recovers,
    a_burst_of_200_sign_ups_at_once_is_served_with_the_default_limits,
    a_connection_that_sends_its_head_too_slowly_is_closed,
    an_idle_keep_alive_connection_is_closed,
    an_idle_keep_alive_connection_outlives_the_header_timeout,
    connections_over_the_limit_are_answered_503_and_closed_and_room_comes_back,
    hypers_own_errors_are_problem_json,
    path_ids_with_a_sign_or_leading_zeros_are_refused,
    every_metric_has_a_help_text_and_the_metrics_token_is_required,
    instances_starting_together_on_a_fresh_database_print_one_admin_password_that_works,
);

/// One hashing thread and one waiting place: of many logins sent at once, those that find the
/// queue full are answered `503 SERVICE_UNAVAILABLE` with `Retry-After` at once, the others `401`;
/// nothing else. Once they are answered, the queue is empty again and a login works.
async fn logins_beyond_the_hashing_queue_are_answered_503_with_retry_after_and_the_queue_recovers(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_HASH_THREADS", 1)
        .env("ECOMMERCE_HASH_QUEUE", 1)
        .spawn()
        .await;
    let user = app.create_user().await;
    let flood = (0..60).map(|_| {
        let app = &app;
        let email = user.email.clone();
        async move { app.token(&email, "not-the-password").await }
    });
    let answers = futures_util::future::join_all(flood).await;
    let mut refused = 0;
    for answer in &answers {
        match answer.status {
            401 => answer.assert_problem(401, "INVALID_CREDENTIALS"),
            503 => {
                answer.assert_problem(503, "SERVICE_UNAVAILABLE");
                let retry_after: u32 = answer
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("a 503 says when to retry");
                assert!(retry_after >= 1);
                refused += 1;
            }
            other => panic!("a login answered {other}: {:?}", answer.body),
        }
    }
    assert!(refused > 0, "60 logins at once never filled a queue of 2");
    // Every flood request has its answer: nothing waits, so the next login is hashed at once.
    app.log_in(&user.email, &user.password).await;
    app.sign_up(&unique_email(), USER_PASSWORD, "After")
        .await
        .expect_status(201);
}

/// The queue is bounded, not small: with the default limits a burst of 200 sign-ups at once (a
/// shop opening; the audit's burst) is all served.
async fn a_burst_of_200_sign_ups_at_once_is_served_with_the_default_limits(app: TestApp) {
    let burst = (0..200).map(|i| {
        let app = &app;
        async move { app.sign_up(&unique_email(), USER_PASSWORD, &format!("Burst {i}")).await }
    });
    for answer in futures_util::future::join_all(burst).await {
        answer.expect_status(201);
    }
}

/// Slowloris: a request head that never completes is cut at the header timeout, and `/health`
/// answers meanwhile.
async fn a_connection_that_sends_its_head_too_slowly_is_closed(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_HEADER_TIMEOUT_MS", 300)
        .spawn()
        .await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("send");
    let mut silent = connect(&app).await;
    app.health().await.expect_status(200);
    assert_eq!(read_until_closed(&mut slow).await, "", "closed without an answer");
    assert_eq!(
        read_until_closed(&mut silent).await,
        "",
        "a connection that sends nothing too"
    );
}

/// After an answer, a keep-alive connection that sends nothing more is closed at the idle timeout.
async fn an_idle_keep_alive_connection_is_closed(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_IDLE_TIMEOUT_MS", 300)
        .spawn()
        .await;
    let mut stream = connect(&app).await;
    let answer = get_keep_alive(&mut stream, "/health").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let answer = get_keep_alive(&mut stream, "/health/live").await;
    assert_eq!(status_of(&answer), 200, "the connection is reused: {answer}");
    assert_eq!(read_until_closed(&mut stream).await, "");
}

/// Between requests the idle timeout applies, not the header timeout: a proxy's pooled
/// connection that waits longer than the header timeout for its next request is still served.
async fn an_idle_keep_alive_connection_outlives_the_header_timeout(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_HEADER_TIMEOUT_MS", 200)
        .env("ECOMMERCE_IDLE_TIMEOUT_MS", 60_000)
        .spawn()
        .await;
    let mut stream = connect(&app).await;
    assert_eq!(status_of(&get_keep_alive(&mut stream, "/health/live").await), 200);
    // Idle for five header timeouts.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let answer = get_keep_alive(&mut stream, "/health/live").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

/// With room for 2 connections, a third is answered `503` problem+json with `Retry-After` and
/// closed; once one of the two closes, a new connection is served again.
async fn connections_over_the_limit_are_answered_503_and_closed_and_room_comes_back(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_MAX_CONNECTIONS", 2)
        .spawn()
        .await;
    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    // Both are served (so the server has accepted and counted them).
    assert_eq!(status_of(&get_keep_alive(&mut first, "/health/live").await), 200);
    assert_eq!(status_of(&get_keep_alive(&mut second, "/health/live").await), 200);

    let mut third = connect(&app).await;
    let refusal = read_until_closed(&mut third).await;
    assert_eq!(status_of(&refusal), 503, "{refusal}");
    assert_eq!(header_of(&refusal, "retry-after"), Some("1"), "{refusal}");
    assert_eq!(header_of(&refusal, "content-type"), Some(PROBLEM), "{refusal}");
    assert_eq!(problem_of(&refusal)["code"], "SERVICE_UNAVAILABLE");

    drop(first);
    // The server notices the close and frees its place; until then it refuses (bounded).
    let mut served = None;
    for _ in 0..300 {
        let mut next = connect(&app).await;
        next.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let answer = read_until_closed(&mut next).await;
        if status_of(&answer) == 200 {
            served = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served.is_some(), "a place never came back after a connection closed");
    assert_eq!(status_of(&get_keep_alive(&mut second, "/health/live").await), 200);
}

/// Requests hyper refuses before any route sees them still get the API's problem+json.
async fn hypers_own_errors_are_problem_json(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_MAX_HEADER_BYTES", 16_384)
        .spawn()
        .await;
    let mut big = connect(&app).await;
    let header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    big.write_all(header.as_bytes()).await.expect("send");
    let answer = read_until_closed(&mut big).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(header_of(&answer, "content-type"), Some(PROBLEM), "{answer}");
    assert_eq!(problem_of(&answer)["status"], 431);

    let mut malformed = connect(&app).await;
    malformed
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        .await
        .expect("send");
    let answer = read_until_closed(&mut malformed).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(header_of(&answer, "content-type"), Some(PROBLEM), "{answer}");
    assert_eq!(problem_of(&answer)["code"], "VALIDATION_FAILED");

    app.health().await.expect_status(200);
}

/// `+7` and `007` are not the id `7`: one spelling per resource.
async fn path_ids_with_a_sign_or_leading_zeros_are_refused(app: TestApp) {
    let user = app.create_user().await;
    let id = user.id;
    app.get(&format!("/api/v1/users/{id}"), user.bearer())
        .await
        .expect_status(200);
    for path in [
        format!("/api/v1/users/+{id}"),
        format!("/api/v1/users/0{id}"),
        format!("/api/v1/users/00{id}/balance"),
    ] {
        app.get(&path, user.bearer())
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    let product = app.new_product("Shirt", 1_000, 5).await;
    app.get(&format!("/api/v1/products/0{product}"), None)
        .await
        .assert_problem(400, "VALIDATION_FAILED");
}

/// `promtool check metrics` wants a HELP line for every metric; with `ECOMMERCE_METRICS_TOKEN`
/// set, `/metrics` answers only a request bearing it.
async fn every_metric_has_a_help_text_and_the_metrics_token_is_required(engine: Engine) {
    const TOKEN: &str = "metrics-scrape-token-0123456789";
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_METRICS_TOKEN", TOKEN)
        .spawn()
        .await;
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("Shirt", 1_000, 5).await;
    let order = app.new_order(&user, &[(product, 1)]).await;
    app.pay_ok(&user, order, None).await;

    app.get("/metrics", None).await.assert_problem(401, "UNAUTHORIZED");
    app.get("/metrics", Some("not-the-token-0123456789"))
        .await
        .assert_problem(401, "UNAUTHORIZED");
    let scrape = app.get("/metrics", Some(TOKEN)).await;
    assert_eq!(scrape.status, 200);
    let text = scrape.text.clone();
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(typed.contains(&"http_requests_total"), "{text}");
    assert!(typed.contains(&"orders_paid_total"), "{text}");
    for name in typed {
        assert!(
            text.lines().any(|line| line.starts_with(&format!("# HELP {name} "))),
            "{name} has no HELP text:\n{text}"
        );
    }
}

/// Without a configured admin, three instances starting at once on a fresh database create one
/// admin: exactly one of them prints its password (22 letters and digits, 131 bits), and that
/// password signs in as an admin (audit L1).
async fn instances_starting_together_on_a_fresh_database_print_one_admin_password_that_works(engine: Engine) {
    let app = TestApp::builder(engine)
        .instances(3)
        .without_env("ECOMMERCE_ADMIN_EMAIL")
        .without_env("ECOMMERCE_ADMIN_PASSWORD")
        .spawn()
        .await;
    let printed: Vec<String> = (0..3)
        .flat_map(|index| app.stderr(index).lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| line.contains("created admin account"))
        .collect();
    assert_eq!(printed.len(), 1, "one instance prints the password: {printed:#?}");
    let password = printed[0]
        .split(" with password ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the line names the password")
        .to_owned();
    assert_eq!(password.len(), 22, "{password}");
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "{password}");
    let admin = app.log_in("admin@ecommerce.local", &password).await;
    app.post(
        "/api/v1/admin/products",
        admin.bearer(),
        &json!({"name": "Coat", "price": 1_000, "stock": 1}),
    )
    .await
    .expect_status(201);
}
