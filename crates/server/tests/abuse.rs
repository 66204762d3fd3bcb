//! Black-box tests of holding under abuse, the contract half (`shared/API.md`, contract v2:
//! "Accounts", "Rate limits", "Text limits"; the findings of
//! `shared/reviews/security-audit-81c465a.md` named on each test): input edges, the password
//! policy, tokens checked against their account, logout and password change, the rate limits
//! and the caps on what one user holds. Each runs on SQLite and PostgreSQL; the instances-wide
//! cases run three instances on one PostgreSQL database.
//!
//! The testkit switches the rate limits off; the tests of a limit set it explicitly.

use std::time::{Duration, Instant};

use ecommerce_testkit::*;
use futures_util::future::join_all;

/// Longer than the server's token check trusts what it read of an account (500 ms): after it,
/// every instance has read the account again.
const TOKEN_CHECK_TTL: Duration = Duration::from_millis(600);

engine_tests!(
    names_and_emails_with_control_zero_width_or_bidi_characters_are_refused,
    nul_in_any_text_field_is_400_on_both_engines,
    a_json_key_twice_is_400_on_every_route_charge_and_payment_included,
    common_and_repeated_passwords_are_refused_at_sign_up,
    a_token_is_refused_once_its_account_is_demoted_or_gone,
    logout_refuses_that_token_and_keeps_the_others,
    tokens_of_many_accounts_checked_at_once_are_each_checked_against_their_own_account,
    password_change_refuses_every_earlier_token_and_checks_the_current_password,
    password_change_follows_the_ownership_rules,
    a_rotated_admin_password_refuses_the_admin_tokens_issued_before,
    sign_ups_and_token_requests_are_limited_per_address,
    x_forwarded_for_counts_only_from_trusted_proxies,
    writes_are_limited_per_user_in_bursts_of_twice_the_rate_and_admins_are_exempt,
    failed_logins_are_throttled_per_email_and_address,
    zero_turns_the_auth_and_user_limits_off,
    a_user_holds_at_most_100_pending_orders,
    a_cart_holds_at_most_50_products,
);

postgres_tests!(
    logout_and_password_change_are_refused_on_every_instance_within_a_second,
    the_pending_order_cap_holds_when_three_instances_race,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_rate_limited(response: &TestResponse) {
    response.assert_problem(429, "RATE_LIMITED");
    let retry: u64 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {response:?}"))
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
}

async fn me(app: &TestApp, user: &TestUser, token: &str) -> TestResponse {
    app.get(&format!("/api/v1/users/{}", user.id), Some(token)).await
}

async fn log_out(app: &TestApp, token: &str) -> TestResponse {
    app.post_empty("/api/v1/auth/logout", Some(token)).await
}

async fn change_password(app: &TestApp, user_id: i64, token: &str, current: &str, new: &str) -> TestResponse {
    app.put(
        &format!("/api/v1/users/{user_id}/password"),
        Some(token),
        &json!({"current_password": current, "new_password": new}),
    )
    .await
}

fn token_of(response: &TestResponse) -> String {
    response.json(200)["access_token"].as_str().expect("a token").to_owned()
}

// ---------------------------------------------------------------------------------------------
// Input edges (audit M3, L7, L8)
// ---------------------------------------------------------------------------------------------

async fn names_and_emails_with_control_zero_width_or_bidi_characters_are_refused(app: TestApp) {
    for name in [
        "evil\u{202e}gnp.exe",
        "\u{200b}\u{200b}",
        "\u{feff}Kim",
        "Kim\nAdmin",
        "\u{1b}[31mKim",
        "Ki\u{85}m",
        "Ki\u{2066}m",
        "K\u{2060}im",
    ] {
        app.sign_up(&unique_email(), USER_PASSWORD, name)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    for email in [
        "ali\u{200b}ce@example.com",
        "kim\u{202e}@example.com",
        "kim@exa\u{200d}mple.com",
        "\u{7}kim@example.com",
    ] {
        app.sign_up(email, USER_PASSWORD, "Kim")
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    // White space around a name is trimmed away first; other scripts are names like any.
    let kim = app.sign_up(&unique_email(), USER_PASSWORD, "\t김민지 Zoë\n").await;
    assert_eq!(kim.json(201)["name"], "김민지 Zoë");
    // Product and coupon names are names too.
    let admin = app.admin_token().await;
    app.post(
        "/api/v1/admin/products",
        Some(&admin),
        &json!({"name": "Shirt\u{202e}", "price": 1000, "stock": 1}),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    app.create_coupon(
        &json!({"name": "10\u{200b}%", "discount_type": "RATE", "discount_value": 10,
        "total_quantity": 5, "valid_for_seconds": 60}),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
}

async fn nul_in_any_text_field_is_400_on_both_engines(app: TestApp) {
    // Before: 500 INTERNAL on PostgreSQL (and stored as is on SQLite), even before a token.
    let email = unique_email();
    for body in [
        json!({"email": email, "password": USER_PASSWORD, "name": "a\u{0}b"}),
        json!({"email": format!("nul\u{0}{email}"), "password": USER_PASSWORD, "name": "Kim"}),
        json!({"email": email, "password": "pass\u{0}word-1234", "name": "Kim"}),
    ] {
        app.post("/api/v1/users", None, &body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    app.token("x\u{0}@example.com", "whatever-1234")
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.post(
        "/api/v1/auth/token",
        None,
        &json!({"email": "x@example.com", "password": "a\u{0}"}),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    let admin = app.admin_token().await;
    app.post(
        "/api/v1/admin/products",
        Some(&admin),
        &json!({"name": "a\u{0}b", "price": 1000, "stock": 1}),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    // A NUL in a field the route does not know is refused as well.
    app.post(
        "/api/v1/users",
        None,
        &json!({"email": unique_email(), "password": USER_PASSWORD, "name": "Kim", "note": "\u{0}"}),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    // Nothing was stored: the email is still free.
    app.sign_up(&email, USER_PASSWORD, "Kim").await.expect_status(201);
}

async fn a_json_key_twice_is_400_on_every_route_charge_and_payment_included(app: TestApp) {
    let user = app.create_user().await;
    // Before: 200, and the last amount was charged.
    app.charge_raw(&user, r#"{"amount": 1000, "amount": 2000}"#, Some(&unique_key()))
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(app.balance(&user).await, 0);
    app.fund(&user, 10_000).await;
    let product = app.new_product("Shirt", 1_000, 5).await;
    let order = app.new_order(&user, &[(product, 1)]).await;
    let paid = app
        .request(Method::POST, &format!("/api/v1/orders/{order}/payment"))
        .bearer_auth(&user.token)
        .header("Idempotency-Key", unique_key())
        .header("content-type", "application/json")
        .body(r#"{"user_coupon_id": null, "user_coupon_id": null}"#)
        .fetch()
        .await;
    paid.assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(app.order_status(&user, order).await, "PENDING_PAYMENT");
    assert_eq!(app.balance(&user).await, 10_000);
    // Typed routes, nested objects and escaped spellings of the same key.
    app.send_raw(
        Method::POST,
        "/api/v1/users",
        None,
        &format!(
            r#"{{"email": "{}", "password": "{USER_PASSWORD}", "name": "A", "name": "B"}}"#,
            unique_email()
        ),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    app.send_raw(
        Method::POST,
        &orders_path(&user),
        Some(&user.token),
        &format!(r#"{{"items": [{{"product_id": {product}, "quantity": 1, "quantity": 2}}]}}"#),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    app.send_raw(
        Method::PUT,
        &cart_item_path(&user, product),
        Some(&user.token),
        r#"{"quantity": 1, "quant\u0069ty": 3}"#,
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(items(&app.cart(&user).await).len(), 0);
}

// ---------------------------------------------------------------------------------------------
// Passwords (audit M7)
// ---------------------------------------------------------------------------------------------

async fn common_and_repeated_passwords_are_refused_at_sign_up(app: TestApp) {
    // Before: 201 for each.
    for password in [
        "password123",
        "Password123",
        "qwertyuiop",
        "iloveyou",
        "aaaaaaaa",
        "        ",
    ] {
        app.sign_up(&unique_email(), password, "Kim")
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    for password in ["correct horse battery", "aaaaaaab", "user-password-1234"] {
        app.sign_up(&unique_email(), password, "Kim").await.expect_status(201);
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens (audit M2, M5)
// ---------------------------------------------------------------------------------------------

async fn a_token_is_refused_once_its_account_is_demoted_or_gone(app: TestApp) {
    let user = app.create_user().await;
    // Made an admin in the database, it signs in with an admin token.
    app.db()
        .query_i64(
            "update account set role = 'ADMIN' where id = $1 returning id",
            &[user.id],
        )
        .await;
    let admin_token = token_of(&app.token(&user.email, &user.password).await);
    // The user token issued before names a role the account no longer has.
    tokio::time::sleep(TOKEN_CHECK_TTL).await;
    me(&app, &user, &user.token).await.assert_problem(401, "UNAUTHORIZED");
    app.get("/api/v1/users/1", Some(&admin_token)).await.expect_status(200);
    // Demoted: before, the admin token kept its power for an hour.
    app.db()
        .query_i64(
            "update account set role = 'USER' where id = $1 returning id",
            &[user.id],
        )
        .await;
    tokio::time::sleep(TOKEN_CHECK_TTL).await;
    let refused = app
        .post(
            "/api/v1/admin/products",
            Some(&admin_token),
            &json!({"name": "Free", "price": 1000, "stock": 1}),
        )
        .await;
    refused.assert_problem(401, "UNAUTHORIZED");
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    // Gone: a well-signed token of an account that does not exist is refused.
    let fresh = token_of(&app.token(&user.email, &user.password).await);
    app.db()
        .query_i64("delete from account where id = $1 returning id", &[user.id])
        .await;
    tokio::time::sleep(TOKEN_CHECK_TTL).await;
    me(&app, &user, &fresh).await.assert_problem(401, "UNAUTHORIZED");
}

async fn logout_refuses_that_token_and_keeps_the_others(app: TestApp) {
    let user = app.create_user().await;
    let second = token_of(&app.token(&user.email, &user.password).await);
    me(&app, &user, &user.token).await.expect_status(200);
    let answer = log_out(&app, &user.token).await;
    assert_eq!(answer.status, 204, "{answer:?}");
    assert!(answer.text.is_empty());
    // At once on this instance.
    me(&app, &user, &user.token).await.assert_problem(401, "UNAUTHORIZED");
    log_out(&app, &user.token).await.assert_problem(401, "UNAUTHORIZED");
    app.charge(&user, 1_000, &unique_key())
        .await
        .assert_problem(401, "UNAUTHORIZED");
    // The account's other token and new ones still work.
    me(&app, &user, &second).await.expect_status(200);
    let third = token_of(&app.token(&user.email, &user.password).await);
    me(&app, &user, &third).await.expect_status(200);
    // No token, or a bad one: 401.
    app.post_empty("/api/v1/auth/logout", None)
        .await
        .assert_problem(401, "UNAUTHORIZED");
    log_out(&app, "not-a-token").await.assert_problem(401, "UNAUTHORIZED");
    // The database holds the logged-out token until it expires.
    let revoked = app
        .db()
        .query_i64("select count(*) from revoked_token where user_id = $1", &[user.id])
        .await;
    assert_eq!(revoked, 1);
}

/// The first requests of many accounts at the same moment are checked together (one read for
/// all of them): each token must still meet its own account's logouts, no other's.
async fn tokens_of_many_accounts_checked_at_once_are_each_checked_against_their_own_account(app: TestApp) {
    let mut users = Vec::new();
    for _ in 0..16 {
        let user = app.create_user().await;
        let second = token_of(&app.token(&user.email, &user.password).await);
        users.push((user, second));
    }
    // Every other account logs its first token out.
    for (user, _) in users.iter().step_by(2) {
        assert_eq!(log_out(&app, &user.token).await.status, 204);
    }
    // Past the time a check trusts what it read: every request below reads its account.
    tokio::time::sleep(TOKEN_CHECK_TTL).await;
    let checks = users.iter().enumerate().flat_map(|(n, (user, second))| {
        let logged_out = n % 2 == 0;
        [(user, user.token.clone(), !logged_out), (user, second.clone(), true)]
    });
    let app = &app;
    let answers =
        join_all(checks.map(|(user, token, admitted)| async move { (me(app, user, &token).await, admitted) })).await;
    for (answer, admitted) in answers {
        if admitted {
            answer.expect_status(200);
        } else {
            answer.assert_problem(401, "UNAUTHORIZED");
        }
    }
}

async fn password_change_refuses_every_earlier_token_and_checks_the_current_password(app: TestApp) {
    let user = app.create_user().await;
    // Two more tokens, most likely issued within the same second as the change below.
    let second = token_of(&app.token(&user.email, &user.password).await);
    let third = token_of(&app.token(&user.email, &user.password).await);
    let new_password = "a new and longer secret";
    change_password(&app, user.id, &user.token, "not-the-password", new_password)
        .await
        .assert_problem(401, "INVALID_CREDENTIALS");
    for weak in ["password123", "zzzzzzzzzz", "short"] {
        change_password(&app, user.id, &user.token, &user.password, weak)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    // Nothing changed so far.
    me(&app, &user, &user.token).await.expect_status(200);
    let changed = change_password(&app, user.id, &user.token, &user.password, new_password).await;
    assert_eq!(changed.status, 204, "{changed:?}");
    for token in [&user.token, &second, &third] {
        me(&app, &user, token).await.assert_problem(401, "UNAUTHORIZED");
    }
    app.token(&user.email, &user.password)
        .await
        .assert_problem(401, "INVALID_CREDENTIALS");
    let fresh = token_of(&app.token(&user.email, new_password).await);
    me(&app, &user, &fresh).await.expect_status(200);
    // An admin changes a user's password with that user's current password.
    let admin = app.admin_token().await;
    let newer = "yet another long secret";
    let by_admin = change_password(&app, user.id, &admin, new_password, newer).await;
    assert_eq!(by_admin.status, 204, "{by_admin:?}");
    me(&app, &user, &fresh).await.assert_problem(401, "UNAUTHORIZED");
    app.get("/api/v1/users/1", Some(&admin)).await.expect_status(200);
}

async fn password_change_follows_the_ownership_rules(app: TestApp) {
    let kim = app.create_user().await;
    let lee = app.create_user().await;
    let body = |current: &str| json!({"current_password": current, "new_password": "a new and longer secret"});
    app.put(
        &format!("/api/v1/users/{}/password", lee.id),
        kim.bearer(),
        &body(&lee.password),
    )
    .await
    .assert_problem(403, "FORBIDDEN");
    app.put(
        &format!("/api/v1/users/{}/password", lee.id),
        None,
        &body(&lee.password),
    )
    .await
    .assert_problem(401, "UNAUTHORIZED");
    let admin = app.admin_token().await;
    app.put("/api/v1/users/999999/password", Some(&admin), &body("whatever-1234"))
        .await
        .assert_problem(404, "USER_NOT_FOUND");
    app.put(
        &format!("/api/v1/users/{}/password", kim.id),
        kim.bearer(),
        &json!({"current_password": kim.password}),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    // Lee's password did not change.
    app.log_in(&lee.email, &lee.password).await;
}

async fn a_rotated_admin_password_refuses_the_admin_tokens_issued_before(engine: Engine) {
    // Before (audit M5): the admin token issued before the rotation kept working for an hour.
    let mut app = TestApp::spawn(engine).await;
    let old_token = app.admin_token().await;
    let path = "/api/v1/users/1";
    // A restart with the same password changes nothing: the token stays good.
    let same = app.add_instance_with(&[]).await;
    app.request_on(same, Method::GET, path)
        .bearer_auth(&old_token)
        .fetch()
        .await
        .expect_status(200);
    let rotated_password = "rotated-admin-password-9876";
    let rotated = app
        .add_instance_with(&[("ECOMMERCE_ADMIN_PASSWORD", rotated_password)])
        .await;
    app.request_on(rotated, Method::GET, path)
        .bearer_auth(&old_token)
        .fetch()
        .await
        .assert_problem(401, "UNAUTHORIZED");
    tokio::time::sleep(TOKEN_CHECK_TTL).await;
    for index in [0, same] {
        app.request_on(index, Method::GET, path)
            .bearer_auth(&old_token)
            .fetch()
            .await
            .assert_problem(401, "UNAUTHORIZED");
    }
    let fresh = app
        .request_on(rotated, Method::POST, "/api/v1/auth/token")
        .json(&json!({"email": ADMIN_EMAIL, "password": rotated_password}))
        .fetch()
        .await;
    let fresh = token_of(&fresh);
    app.request_on(0, Method::GET, path)
        .bearer_auth(&fresh)
        .fetch()
        .await
        .expect_status(200);
}

async fn logout_and_password_change_are_refused_on_every_instance_within_a_second(engine: Engine) {
    let app = TestApp::spawn_n(engine, 3).await;
    let user = app.create_user().await;
    let tokens: Vec<String> = {
        let mut tokens = Vec::new();
        for _ in 0..3 {
            tokens.push(token_of(&app.token(&user.email, &user.password).await));
        }
        tokens
    };
    let path = format!("/api/v1/users/{}", user.id);
    // Every instance has read the account (and may keep what it read).
    for index in 0..3 {
        for token in &tokens {
            app.request_on(index, Method::GET, &path)
                .bearer_auth(token)
                .fetch()
                .await
                .expect_status(200);
        }
    }
    let logout = app
        .request_on(0, Method::POST, "/api/v1/auth/logout")
        .bearer_auth(&tokens[0])
        .fetch()
        .await;
    assert_eq!(logout.status, 204, "{logout:?}");
    tokio::time::sleep(TOKEN_CHECK_TTL).await;
    for index in 0..3 {
        let refused = app
            .request_on(index, Method::GET, &path)
            .bearer_auth(&tokens[0])
            .fetch()
            .await;
        refused.assert_problem(401, "UNAUTHORIZED");
        app.request_on(index, Method::GET, &path)
            .bearer_auth(&tokens[1])
            .fetch()
            .await
            .expect_status(200);
    }
    let change = app
        .request_on(1, Method::PUT, &format!("{path}/password"))
        .bearer_auth(&tokens[1])
        .json(&json!({"current_password": user.password, "new_password": "a new and longer secret"}))
        .fetch()
        .await;
    assert_eq!(change.status, 204, "{change:?}");
    tokio::time::sleep(TOKEN_CHECK_TTL).await;
    for index in 0..3 {
        for token in &tokens {
            app.request_on(index, Method::GET, &path)
                .bearer_auth(token)
                .fetch()
                .await
                .assert_problem(401, "UNAUTHORIZED");
        }
    }
    // The shared truth: one token logged out, the version bumped once.
    let db = app.db();
    assert_eq!(
        db.query_i64("select count(*) from revoked_token where user_id = $1", &[user.id])
            .await,
        1
    );
    assert_eq!(
        db.query_i64("select token_version from account where id = $1", &[user.id])
            .await,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Rate limits (audit H1, M6, M7)
// ---------------------------------------------------------------------------------------------

async fn sign_ups_and_token_requests_are_limited_per_address(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_RATE_LIMIT_AUTH", 30)
        .spawn()
        .await;
    let admin = app.admin_token().await; // 1 token request
    let accounts_before = app.db().query_i64("select count(*) from account", &[]).await;
    // 14 sign-ups and 15 token requests, one of them failing: 30 in all.
    let mut users = Vec::new();
    for _ in 0..14 {
        let email = unique_email();
        app.sign_up(&email, USER_PASSWORD, "Kim").await.expect_status(201);
        users.push(email);
    }
    for email in users.iter().take(14) {
        app.token(email, USER_PASSWORD).await.expect_status(200);
    }
    app.token(&users[0], "wrong-password-1234")
        .await
        .assert_problem(401, "INVALID_CREDENTIALS");
    // The 31st, a sign-up: refused, and nothing is created.
    let refused_email = unique_email();
    assert_rate_limited(&app.sign_up(&refused_email, USER_PASSWORD, "Kim").await);
    assert_rate_limited(&app.token(&users[1], USER_PASSWORD).await);
    // An X-Forwarded-For from an untrusted peer changes nothing.
    let forged = app
        .request(Method::POST, "/api/v1/auth/token")
        .header("x-forwarded-for", "203.0.113.77")
        .json(&json!({"email": users[1], "password": USER_PASSWORD}))
        .fetch()
        .await;
    assert_rate_limited(&forged);
    assert_eq!(
        app.db().query_i64("select count(*) from account", &[]).await,
        accounts_before + 14
    );
    // Other routes are not limited by it.
    app.get("/api/v1/users/1", Some(&admin)).await.expect_status(200);
}

async fn x_forwarded_for_counts_only_from_trusted_proxies(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_RATE_LIMIT_AUTH", 2)
        .env("ECOMMERCE_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")
        .spawn()
        .await;
    let token_from = |forwarded: &'static str| {
        app.request(Method::POST, "/api/v1/auth/token")
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .fetch()
    };
    // The client is the right-most address that is not a trusted proxy.
    token_from("203.0.113.1").await.expect_status(200);
    token_from("198.51.100.9, 203.0.113.1, 10.1.1.1")
        .await
        .expect_status(200);
    assert_rate_limited(&token_from("203.0.113.1").await);
    // Another client behind the proxy has its own budget, whatever it forges on the left.
    token_from("203.0.113.1, 203.0.113.2").await.expect_status(200);
    token_from("203.0.113.2").await.expect_status(200);
    assert_rate_limited(&token_from("203.0.113.2").await);
    // Without the header, the proxy itself is the client.
    app.token(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
}

async fn writes_are_limited_per_user_in_bursts_of_twice_the_rate_and_admins_are_exempt(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_RATE_LIMIT_USER", 20)
        .spawn()
        .await;
    let user = app.create_user().await;
    let other = app.create_user().await;
    let started = Instant::now();
    let keys: Vec<String> = (0..120).map(|_| unique_key()).collect();
    let answers = join_all(keys.iter().map(|key| app.charge(&user, 1_000, key))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let charged = answers.iter().filter(|a| a.status == 200).count();
    let limited: Vec<&TestResponse> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(charged + limited.len(), 120, "only 200 and 429");
    limited.iter().for_each(|answer| assert_rate_limited(answer));
    // A burst of 40, then 20 a second.
    assert!(charged >= 40, "{charged} charged");
    assert!(
        (charged as f64) <= 40.0 + 20.0 * elapsed + 1.0,
        "{charged} charged in {elapsed:.2} s"
    );
    assert!(!limited.is_empty(), "{charged} charged in {elapsed:.2} s");
    // A refused request did nothing: the balance is the sum of the charges that passed.
    assert_eq!(app.balance(&user).await, 1_000 * charged as i64);
    assert_eq!(app.history(&user).await.len(), charged);
    // Reads are not limited, nor is another user.
    app.get(&format!("/api/v1/users/{}", user.id), user.bearer())
        .await
        .expect_status(200);
    app.charge(&other, 1_000, &unique_key()).await.expect_status(200);
    // Admins are not limited.
    let admin = app.admin_token().await;
    let product = app.new_product("Shirt", 1_000, 1).await;
    let path = format!("/api/v1/admin/products/{product}/restock");
    let body = json!({"quantity": 1});
    let restocks = join_all((0..60).map(|_| app.post(&path, Some(&admin), &body))).await;
    assert!(
        restocks.iter().all(|r| r.status == 200),
        "{:?}",
        restocks.iter().find(|r| r.status != 200)
    );
}

async fn failed_logins_are_throttled_per_email_and_address(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_RATE_LIMIT_AUTH", 30)
        .env("ECOMMERCE_TRUSTED_PROXIES", "127.0.0.1")
        .spawn()
        .await;
    let user = app.create_user().await;
    let login_from = |address: &'static str, password: &str| {
        app.request(Method::POST, "/api/v1/auth/token")
            .header("x-forwarded-for", address)
            .json(&json!({"email": user.email, "password": password}))
            .fetch()
    };
    // Successful logins do not count.
    login_from("203.0.113.1", &user.password).await.expect_status(200);
    for _ in 0..10 {
        login_from("203.0.113.1", "wrong-password-1234")
            .await
            .assert_problem(401, "INVALID_CREDENTIALS");
    }
    assert_rate_limited(&login_from("203.0.113.1", "wrong-password-1234").await);
    // Locked for that address, even with the right password (and the email's case changed).
    assert_rate_limited(&login_from("203.0.113.1", &user.password).await);
    let upper = app
        .request(Method::POST, "/api/v1/auth/token")
        .header("x-forwarded-for", "203.0.113.1")
        .json(&json!({"email": user.email.to_uppercase(), "password": user.password}))
        .fetch()
        .await;
    assert_rate_limited(&upper);
    // Another address is not locked out, and another email from that address neither.
    login_from("203.0.113.2", &user.password).await.expect_status(200);
    let other = app
        .request(Method::POST, "/api/v1/auth/token")
        .header("x-forwarded-for", "203.0.113.1")
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .fetch()
        .await;
    other.expect_status(200);
    // Attempts racing each other: still at most 10 answer 401.
    let racer = app.create_user().await;
    let wrong = json!({"email": racer.email, "password": "wrong-password-1234"});
    let answers = join_all((0..15).map(|_| {
        app.request(Method::POST, "/api/v1/auth/token")
            .header("x-forwarded-for", "203.0.113.3")
            .json(&wrong)
            .fetch()
    }))
    .await;
    let unauthorized = answers.iter().filter(|a| a.status == 401).count();
    let limited: Vec<&TestResponse> = answers.iter().filter(|a| a.status == 429).collect();
    limited.iter().for_each(|answer| assert_rate_limited(answer));
    assert_eq!((unauthorized, limited.len()), (10, 5));
}

async fn zero_turns_the_auth_and_user_limits_off(app: TestApp) {
    // The testkit's default: both at 0.
    let user = app.create_user().await;
    let logins = join_all((0..45).map(|_| app.token(&user.email, &user.password))).await;
    assert!(logins.iter().all(|r| r.status == 200));
    let keys: Vec<String> = (0..60).map(|_| unique_key()).collect();
    let charges = join_all(keys.iter().map(|key| app.charge(&user, 1_000, key))).await;
    assert!(charges.iter().all(|r| r.status == 200));
    assert_eq!(app.balance(&user).await, 60_000);
}

// ---------------------------------------------------------------------------------------------
// What one user can hold open (audit M6)
// ---------------------------------------------------------------------------------------------

async fn a_user_holds_at_most_100_pending_orders(app: TestApp) {
    let user = app.create_user().await;
    let other = app.create_user().await;
    let product = app.new_product("Shirt", 1_000, 10).await;
    let mut orders = Vec::new();
    for _ in 0..100 {
        orders.push(app.new_order(&user, &[(product, 1)]).await);
    }
    let refused = app.create_order(&user, &lines_body(&[(product, 1)])).await;
    refused.assert_problem(409, "TOO_MANY_PENDING_ORDERS");
    app.put_item(&user, product, 1).await.expect_status(200);
    app.create_order(&user, &json!({"from_cart": true}))
        .await
        .assert_problem(409, "TOO_MANY_PENDING_ORDERS");
    assert_eq!(
        app.db()
            .query_i64("select count(*) from purchase_order where user_id = $1", &[user.id])
            .await,
        100
    );
    // Another user is not affected; a cancelled order frees a place.
    app.new_order(&other, &[(product, 1)]).await;
    app.cancel(&user, orders[0]).await.expect_status(200);
    app.new_order(&user, &[(product, 1)]).await;
}

async fn a_cart_holds_at_most_50_products(app: TestApp) {
    let user = app.create_user().await;
    let products = app.new_products(51).await;
    for product in &products[..50] {
        app.put_item(&user, *product, 1).await.expect_status(200);
    }
    app.put_item(&user, products[50], 1)
        .await
        .assert_problem(409, "CART_FULL");
    // A product already there can still change; a removed one makes room.
    app.put_item(&user, products[0], 3).await.expect_status(200);
    assert_eq!(items(&app.cart(&user).await).len(), 50);
    app.remove_item(&user, products[1]).await;
    app.put_item(&user, products[50], 1).await.expect_status(200);
    // An order from a full cart has the most lines an order may have.
    let order = app.create_order(&user, &json!({"from_cart": true})).await;
    assert_eq!(order.json(201)["items"].as_array().map(Vec::len), Some(50));
}

async fn the_pending_order_cap_holds_when_three_instances_race(engine: Engine) {
    let app = TestApp::spawn_n(engine, 3).await;
    let user = app.create_user().await;
    let product = app.new_product("Shirt", 1_000, 10).await;
    for _ in 0..90 {
        app.new_order(&user, &[(product, 1)]).await;
    }
    let body = lines_body(&[(product, 1)]);
    let answers = join_all((0..30).map(|i| app.create_order_on(i % 3, &user, &body))).await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let refused = answers
        .iter()
        .filter(|a| a.status == 409 && a.body["code"] == "TOO_MANY_PENDING_ORDERS")
        .count();
    assert_eq!(
        (created, refused),
        (10, 20),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(
        app.db()
            .query_i64(
                "select count(*) from purchase_order where user_id = $1 and status = 'PENDING_PAYMENT'",
                &[user.id]
            )
            .await,
        100
    );
    app.db().assert_invariants().await;
}
