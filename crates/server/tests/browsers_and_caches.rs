//! Black-box tests of contract v2's "Protection, browsers and caches" as seen by integrators:
//! CORS, HTTP caching (`ETag`, `If-None-Match` → 304, `Cache-Control`), compression, the health
//! probes for orchestrators, the event contract's route, `WWW-Authenticate` on 401s,
//! `Location` on 201s and `Idempotent-Replayed` on replays. Each test runs on SQLite and on PostgreSQL against the real binary.

use std::io::Read;

use ecommerce_testkit::*;

engine_tests!(
    without_cors_origins_no_answer_carries_a_cors_header,
    a_preflight_from_an_allowed_origin_is_204_without_a_token_and_before_any_limit,
    answers_to_an_allowed_origin_expose_location_and_retry_after_and_others_get_nothing,
    catalog_reads_carry_an_etag_and_a_matching_if_none_match_is_304,
    best_sellers_may_be_cached_for_the_popular_cache_age,
    a_users_data_and_admin_catalog_reads_are_private_and_errors_are_not_stored,
    large_answers_are_compressed_for_clients_that_accept_gzip_or_br,
    every_401_challenges_for_a_bearer_token,
    created_resources_answer_their_location,
    a_replayed_charge_or_payment_says_so,
    the_probes_and_the_event_contract_are_served,
);

postgres_tests!(
    instances_agree_on_etags,
    ready_fails_while_postgres_is_read_only_and_live_does_not,
);

const SHOP: &str = "https://shop.example.com";

/// Names of the `Access-Control-*` headers of an answer.
fn cors_headers(response: &TestResponse) -> Vec<String> {
    response
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

fn header(response: &TestResponse, name: &str) -> String {
    response.header(name).unwrap_or_default().to_owned()
}

/// An `OPTIONS` preflight as a browser sends it.
async fn preflight(app: &TestApp, origin: &str, method: &str, path: &str) -> TestResponse {
    app.request(Method::OPTIONS, path)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key",
        )
        .fetch()
        .await
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut request = app.request(Method::GET, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.fetch().await
}

async fn without_cors_origins_no_answer_carries_a_cors_header(app: TestApp) {
    let answer = preflight(&app, SHOP, "POST", "/api/v1/auth/token").await;
    answer.assert_problem(405, "METHOD_NOT_ALLOWED");
    assert!(cors_headers(&answer).is_empty(), "{:?}", answer.headers);
    let answer = get_with(&app, "/api/v1/products", &[("origin", SHOP)]).await;
    answer.expect_status(200);
    assert!(cors_headers(&answer).is_empty(), "{:?}", answer.headers);
    assert!(!header(&answer, "vary").contains("Origin"), "{:?}", answer.headers);
}

async fn a_preflight_from_an_allowed_origin_is_204_without_a_token_and_before_any_limit(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_CORS_ORIGINS", format!("{SHOP},http://localhost:3000"))
        // Just enough for the sign-up and the token request below: every limit is used up.
        .env("ECOMMERCE_RATE_LIMIT_AUTH", 2)
        .env("ECOMMERCE_RATE_LIMIT_USER", 1)
        .spawn()
        .await;
    let user = app.create_user().await;
    app.token(&user.email, &user.password)
        .await
        .assert_problem(429, "RATE_LIMITED");
    let charges = format!("/api/v1/users/{}/balance/charges", user.id);
    for (method, path) in [
        ("POST", "/api/v1/auth/token"),
        ("POST", "/api/v1/auth/token"),
        ("POST", "/api/v1/users"),
        ("POST", charges.as_str()),
        ("POST", charges.as_str()),
        ("PATCH", "/api/v1/admin/products/1"),
        ("DELETE", "/api/v1/users/1/cart"),
        ("GET", "/api/v1/products"),
    ] {
        let answer = preflight(&app, SHOP, method, path).await;
        assert_eq!(answer.status, 204, "{method} {path}: {}", answer.text);
        assert!(answer.text.is_empty());
        assert_eq!(header(&answer, "access-control-allow-origin"), SHOP);
        let methods = header(&answer, "access-control-allow-methods");
        for expected in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            assert!(methods.contains(expected), "{expected} in {methods}");
        }
        let allowed = header(&answer, "access-control-allow-headers").to_ascii_lowercase();
        for expected in ["authorization", "content-type", "idempotency-key"] {
            assert!(allowed.contains(expected), "{expected} in {allowed}");
        }
        assert!(header(&answer, "vary").contains("Origin"));
    }
}

async fn answers_to_an_allowed_origin_expose_location_and_retry_after_and_others_get_nothing(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_CORS_ORIGINS", SHOP)
        .spawn()
        .await;
    let signed_up = app
        .request(Method::POST, "/api/v1/users")
        .header("origin", SHOP)
        .json(&json!({"email": unique_email(), "password": USER_PASSWORD, "name": "Mina"}))
        .fetch()
        .await;
    signed_up.expect_status(201);
    assert_eq!(header(&signed_up, "access-control-allow-origin"), SHOP);
    let exposed = header(&signed_up, "access-control-expose-headers");
    for expected in ["Location", "Retry-After", "ETag", "X-Request-Id"] {
        assert!(exposed.contains(expected), "{expected} in {exposed}");
    }

    for origin in ["https://evil.example.com", "http://shop.example.com", "null"] {
        let answer = preflight(&app, origin, "POST", "/api/v1/auth/token").await;
        assert_eq!(answer.status, 405, "{origin}");
        assert!(cors_headers(&answer).is_empty(), "{origin}: {:?}", answer.headers);
        let answer = get_with(&app, "/api/v1/products", &[("origin", origin)]).await;
        answer.expect_status(200);
        assert!(cors_headers(&answer).is_empty(), "{origin}: {:?}", answer.headers);
        assert!(
            header(&answer, "vary").contains("Origin"),
            "a shared cache keeps origins apart"
        );
    }
}

async fn catalog_reads_carry_an_etag_and_a_matching_if_none_match_is_304(app: TestApp) {
    let product = app.new_product("Linen shirt", 39_000, 10).await;
    app.new_coupon("FIXED", 1_000, 10, 3_600).await;
    let path = format!("/api/v1/products/{product}");
    for read in [
        path.as_str(),
        "/api/v1/products",
        "/api/v1/coupons",
        "/api/v1/coupons/1",
    ] {
        let first = app.get(read, None).await;
        first.expect_status(200);
        let etag = header(&first, "etag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "{read}: a strong ETag, {etag}"
        );
        assert_eq!(header(&first, "cache-control"), "no-cache", "{read}");

        for sent in [
            etag.clone(),
            format!("W/{etag}"),
            format!(r#""old", {etag}"#),
            "*".to_owned(),
        ] {
            let again = get_with(&app, read, &[("if-none-match", &sent)]).await;
            assert_eq!(again.status, 304, "{read} with {sent}");
            assert!(again.text.is_empty(), "a 304 has no body");
            assert_eq!(header(&again, "etag"), etag);
            assert_eq!(header(&again, "cache-control"), "no-cache");
        }
        let stale = get_with(&app, read, &[("if-none-match", r#""stale""#)]).await;
        assert_eq!(stale.status, 200, "{read}");
        assert_eq!(stale.text, first.text);
    }

    // HEAD answers the validators of GET; a change makes a new tag, and the old one no longer matches.
    let got = app.get(&path, None).await;
    let headed = app.request(Method::HEAD, &path).fetch().await;
    assert_eq!(headed.status, 200);
    assert_eq!(header(&headed, "etag"), header(&got, "etag"));
    app.patch_product(product, &json!({"price": 35_000}))
        .await
        .expect_status(200);
    let changed = get_with(&app, &path, &[("if-none-match", &header(&got, "etag"))]).await;
    assert_eq!(changed.expect_status(200)["price"], 35_000);
    assert_ne!(header(&changed, "etag"), header(&got, "etag"));
}

async fn best_sellers_may_be_cached_for_the_popular_cache_age(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_POPULAR_CACHE_SECONDS", 7)
        .spawn()
        .await;
    let answer = app.get("/api/v1/products/popular?days=3&limit=5", None).await;
    answer.expect_status(200);
    assert_eq!(header(&answer, "cache-control"), "public, max-age=7");
    let etag = header(&answer, "etag");
    assert!(!etag.is_empty());
    let again = get_with(
        &app,
        "/api/v1/products/popular?days=3&limit=5",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    assert_eq!(header(&again, "cache-control"), "public, max-age=7");
}

async fn a_users_data_and_admin_catalog_reads_are_private_and_errors_are_not_stored(app: TestApp) {
    let user = app.create_user().await;
    let admin = app.admin_token().await;
    let product = app.new_product("Wool coat", 189_000, 3).await;
    let order = app.new_order(&user, &[(product, 1)]).await;

    let private = [
        app.get(&cart_path(&user), user.bearer()).await,
        app.get(&format!("/api/v1/users/{}/balance", user.id), user.bearer())
            .await,
        app.get(&format!("/api/v1/orders/{order}"), user.bearer()).await,
        app.token(&user.email, &user.password).await,
        app.sign_up(&unique_email(), USER_PASSWORD, "Kim").await,
        app.get("/api/v1/products", Some(&admin)).await,
        app.get(&format!("/api/v1/products/{product}"), Some(&admin)).await,
        app.get(&cart_path(&user), None).await,
    ];
    for answer in &private {
        assert_eq!(
            header(answer, "cache-control"),
            "private, no-store",
            "{} {}",
            answer.status,
            answer.text
        );
        assert!(answer.header("etag").is_none(), "{}", answer.text);
    }

    let shopper = app.get("/api/v1/products", user.bearer()).await;
    assert_eq!(
        header(&shopper, "cache-control"),
        "no-cache",
        "a shopper's token changes nothing in the catalog"
    );
    assert!(shopper.header("etag").is_some());

    for missing in [
        "/api/v1/products/999999",
        "/api/v1/coupons/999999",
        "/api/v1/products/x",
    ] {
        let answer = get_with(&app, missing, &[("if-none-match", "*")]).await;
        assert!(
            answer.status == 404 || answer.status == 400,
            "{missing}: {}",
            answer.status
        );
        assert_eq!(header(&answer, "cache-control"), "no-store", "{missing}");
        assert!(answer.header("etag").is_none(), "{missing}");
    }
    let health = app.health().await;
    assert!(health.header("cache-control").is_none() && health.header("etag").is_none());
}

async fn raw_get(app: &TestApp, path: &str, accept_encoding: &str) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let response = app
        .request(Method::GET, path)
        .header("accept-encoding", accept_encoding)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200, "{path}");
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("a body").to_vec();
    (headers, body)
}

fn encoding(headers: &reqwest::header::HeaderMap) -> Option<&str> {
    headers.get("content-encoding").and_then(|v| v.to_str().ok())
}

async fn large_answers_are_compressed_for_clients_that_accept_gzip_or_br(app: TestApp) {
    app.new_products(40).await;
    let plain = app.list_products("?limit=40").await;
    plain.expect_status(200);
    assert!(plain.text.len() > 2048, "{} bytes", plain.text.len());
    assert!(
        plain.header("content-encoding").is_none(),
        "no Accept-Encoding, no compression"
    );

    let (headers, body) = raw_get(&app, "/api/v1/products?limit=40", "gzip").await;
    assert_eq!(encoding(&headers), Some("gzip"));
    assert!(
        headers
            .get("vary")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut unzipped)
        .expect("gzip");
    assert_eq!(unzipped, plain.text);
    assert!(
        body.len() * 3 < plain.text.len(),
        "{} of {} bytes",
        body.len(),
        plain.text.len()
    );
    assert_ne!(
        headers.get("etag"),
        plain.headers.get("etag"),
        "each coding has its own tag"
    );

    let (headers, _) = raw_get(&app, "/api-docs/openapi.json", "br, gzip;q=0.5").await;
    assert_eq!(encoding(&headers), Some("br"));

    for (path, accept) in [
        ("/api/v1/products/1", "gzip, br"),
        ("/health", "gzip, br"),
        ("/api/v1/products?limit=40", "identity"),
        ("/api/v1/products?limit=40", "identity;q=0"),
    ] {
        let (headers, _) = raw_get(&app, path, accept).await;
        assert_eq!(encoding(&headers), None, "{path} with {accept}");
    }
}

async fn every_401_challenges_for_a_bearer_token(app: TestApp) {
    let user = app.create_user().await;
    let balance = format!("/api/v1/users/{}/balance", user.id);
    let none = app.get(&balance, None).await;
    none.assert_problem(401, "UNAUTHORIZED");
    assert_eq!(header(&none, "www-authenticate"), "Bearer");
    for bad in ["not-a-token", "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"] {
        let refused = app.get(&balance, Some(bad)).await;
        refused.assert_problem(401, "UNAUTHORIZED");
        assert_eq!(header(&refused, "www-authenticate"), r#"Bearer error="invalid_token""#);
        assert_eq!(refused.text, none.text, "the body is the v1 body");
    }
    let wrong = app.token(&user.email, "not-the-password").await;
    wrong.assert_problem(401, "INVALID_CREDENTIALS");
    assert_eq!(header(&wrong, "www-authenticate"), "Bearer");
    let forbidden = app
        .get(&format!("/api/v1/users/{}/balance", user.id + 1), user.bearer())
        .await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.header("www-authenticate").is_none());
}

async fn created_resources_answer_their_location(app: TestApp) {
    let email = unique_email();
    let signed_up = app.sign_up(&email, USER_PASSWORD, "Mina").await;
    let account = signed_up.json(201);
    let user_id = id_of(&account);
    assert_eq!(header(&signed_up, "location"), format!("/api/v1/users/{user_id}"));
    let user = app.log_in(&email, USER_PASSWORD).await;
    let read = app.get(&header(&signed_up, "location"), user.bearer()).await;
    assert_eq!(read.json(200), account);
    let other = app.create_user().await;
    app.get(&header(&signed_up, "location"), other.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    let admin = app.admin_token().await;
    assert_eq!(
        app.get(&header(&signed_up, "location"), Some(&admin)).await.json(200),
        account
    );
    app.get("/api/v1/users/999999", Some(&admin))
        .await
        .assert_problem(404, "USER_NOT_FOUND");

    let created = app
        .create_product_with(&json!({"name": "Silk scarf", "price": 59_000, "stock": 5}))
        .await;
    let product = created.json(201);
    assert_eq!(
        header(&created, "location"),
        format!("/api/v1/products/{}", id_of(&product))
    );
    assert_eq!(app.get(&header(&created, "location"), None).await.json(200), product);

    let created = app.create_coupon(&coupon_body("RATE", 10, 100, 3_600)).await;
    let coupon = created.json(201);
    assert_eq!(
        header(&created, "location"),
        format!("/api/v1/coupons/{}", id_of(&coupon))
    );
    assert_eq!(app.get(&header(&created, "location"), None).await.json(200), coupon);

    let ordered = app.create_order(&user, &lines_body(&[(id_of(&product), 1)])).await;
    let order = ordered.json(201);
    assert_eq!(
        header(&ordered, "location"),
        format!("/api/v1/orders/{}", id_of(&order))
    );
}

async fn a_replayed_charge_or_payment_says_so(app: TestApp) {
    let user = app.create_user().await;
    let key = unique_key();
    let first = app.charge(&user, 50_000, &key).await;
    first.expect_status(200);
    assert!(
        first.header("idempotent-replayed").is_none(),
        "a first run is not a replay"
    );
    let again = app.charge(&user, 50_000, &key).await;
    assert_eq!(again.text, first.text);
    assert_eq!(header(&again, "idempotent-replayed"), "true");

    let product = app.new_product("Wool coat", 10_000, 3).await;
    let order = app.new_order(&user, &[(product, 1)]).await;
    let key = unique_key();
    let paid = app.pay_with_key(&user, order, &key, &json!({})).await;
    paid.expect_status(200);
    assert!(paid.header("idempotent-replayed").is_none());
    let replayed = app.pay_with_key(&user, order, &key, &json!({})).await;
    assert_eq!(replayed.text, paid.text);
    assert_eq!(header(&replayed, "idempotent-replayed"), "true");
    let unkeyed = app.pay(&user, order, None).await;
    unkeyed.assert_problem(409, "ORDER_NOT_PENDING");
    assert!(unkeyed.header("idempotent-replayed").is_none());
}

async fn the_probes_and_the_event_contract_are_served(app: TestApp) {
    for probe in ["/health", "/health/live", "/health/ready"] {
        let answer = app.get(probe, None).await;
        assert_eq!(answer.json(200), json!({"status": "ok"}), "{probe}");
    }
    let document = app.get("/api-docs/asyncapi.json", None).await.json(200);
    assert_eq!(document["asyncapi"], "3.0.0");
    let committed: Value = serde_json::from_str(include_str!("../../../docs/asyncapi.json")).expect("JSON");
    assert_eq!(document, committed);
    let openapi = app.openapi().await;
    for path in ["/health/live", "/health/ready", "/api/v1/users/{user_id}"] {
        assert!(openapi["paths"][path]["get"].is_object(), "{path} is documented");
    }
}

async fn instances_agree_on_etags(engine: Engine) {
    let app = TestApp::spawn_n(engine, 2).await;
    let product = app.new_product("Denim jacket", 99_000, 8).await;
    let path = format!("/api/v1/products/{product}");
    let first = app.request_on(0, Method::GET, &path).fetch().await;
    let second = app.request_on(1, Method::GET, &path).fetch().await;
    assert_eq!(header(&first, "etag"), header(&second, "etag"));
    let revalidated = app
        .request_on(1, Method::GET, &path)
        .header("if-none-match", header(&first, "etag"))
        .fetch()
        .await;
    assert_eq!(
        revalidated.status, 304,
        "behind a balancer a tag from one instance holds on another"
    );
}

/// `GET /health/ready` until it answers `status`, for at most 5 seconds (the verdict is reused for
/// a second, and the server reconnects on its own schedule).
async fn ready_becomes(app: &TestApp, status: u16) -> TestResponse {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = app.get("/health/ready", None).await;
        if answer.status == status || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn ready_fails_while_postgres_is_read_only_and_live_does_not(app: TestApp) {
    assert_eq!(app.get("/health/ready", None).await.status, 200);
    let database = app.db().pg_name().expect("a PostgreSQL database").to_owned();
    // A database setting reaches new sessions: end the server's current ones.
    let reconnect = format!("select pg_terminate_backend(pid) from pg_stat_activity where datname = '{database}'");
    pg_admin_execute(&format!(
        "alter database {database} set default_transaction_read_only = on"
    ))
    .await;
    pg_admin_execute(&reconnect).await;

    let refused = ready_becomes(&app, 503).await;
    refused.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert!(refused.text.contains("does not take writes"), "{}", refused.text);
    assert_eq!(app.get("/health/live", None).await.status, 200);
    assert_eq!(
        app.get("/health", None).await.status,
        200,
        "/health asks only whether it answers"
    );

    pg_admin_execute(&format!(
        "alter database {database} reset default_transaction_read_only"
    ))
    .await;
    pg_admin_execute(&reconnect).await;
    assert_eq!(ready_becomes(&app, 200).await.status, 200);
}
