//! Black-box tests of the foundation of the HTTP contract (`shared/API.md`): accounts, tokens and
//! ownership, the catalog, the balance with idempotent charges, the error format, and the
//! operations endpoints. Each test runs on SQLite and on PostgreSQL against the real binary.

use ecommerce_testkit::*;

// ---------------------------------------------------------------------------------------------
// Small helpers local to these tests
// ---------------------------------------------------------------------------------------------

/// Base64url without padding (the JWT alphabet), both ways.
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = BASE64URL.iter().position(|&c| c == byte).expect("base64url") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(BASE64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The token with its claims changed by `edit` and its original signature kept.
fn forge_jwt_payload(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("an access token is a JWT with three parts: {token}");
    };
    let mut claims: Value = serde_json::from_slice(&base64url_decode(payload)).expect("JWT claims are JSON");
    edit(&mut claims);
    let payload = base64url_encode(claims.to_string().as_bytes());
    format!("{header}.{payload}.{signature}")
}

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

engine_tests!(
    sign_up_answers_201_with_the_id_the_lower_cased_email_and_the_trimmed_name,
    sign_up_rejects_emails_that_do_not_look_like_one,
    sign_up_accepts_a_254_character_email_and_rejects_a_255_character_one,
    an_email_is_taken_whatever_its_case,
    passwords_must_have_8_to_128_characters_counted_in_unicode_characters,
    names_are_trimmed_and_must_have_1_to_50_characters,
    sign_up_with_a_missing_field_or_a_wrong_type_is_validation_failed,
);

async fn sign_up_answers_201_with_the_id_the_lower_cased_email_and_the_trimmed_name(app: TestApp) {
    let email = unique_email().to_uppercase();
    let response = app.sign_up(&email, "password-1234", "  Kim Minji  ").await;
    let body = response.expect_status(201);
    assert!(body["id"].as_i64().is_some_and(|id| id > 0), "positive id in {body}");
    assert_eq!(body["email"], json!(email.to_lowercase()));
    assert_eq!(body["name"], json!("Kim Minji"));
    assert!(
        !response.text.contains("password"),
        "the answer must not echo the password: {}",
        response.text
    );
    assert!(response.content_type().starts_with("application/json"));
}

async fn sign_up_rejects_emails_that_do_not_look_like_one(app: TestApp) {
    let bad_emails = [
        "",
        "plain",
        "@example.com",
        "kim@",
        "kim@localhost",
        "kim@@example.com",
        "kim@mail@example.com",
        "kim lee@example.com",
        "kim@exam ple.com",
        "kim\t@example.com",
        "kim@example.com\n",
        "kim\u{a0}lee@example.com",
    ];
    for email in bad_emails {
        app.sign_up(email, "password-1234", "Kim")
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
}

async fn sign_up_accepts_a_254_character_email_and_rejects_a_255_character_one(app: TestApp) {
    let domain = "@example.com";
    let local_254 = "k".repeat(254 - domain.len());
    let email_254 = format!("{local_254}{domain}");
    assert_eq!(email_254.chars().count(), 254);
    let email_255 = format!("k{email_254}");
    app.sign_up(&email_255, "password-1234", "Kim")
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.sign_up(&email_254, "password-1234", "Kim").await.expect_status(201);
}

async fn an_email_is_taken_whatever_its_case(app: TestApp) {
    let email = unique_email();
    app.sign_up(&email, "password-1234", "Kim").await.expect_status(201);
    app.sign_up(&email, "password-5678", "Lee")
        .await
        .assert_problem(409, "EMAIL_TAKEN");
    app.sign_up(&email.to_uppercase(), "password-5678", "Lee")
        .await
        .assert_problem(409, "EMAIL_TAKEN");
    app.sign_up(&ADMIN_EMAIL.to_uppercase(), "password-5678", "Lee")
        .await
        .assert_problem(409, "EMAIL_TAKEN");
    // Only the first account exists: its password logs in.
    app.log_in(&email, "password-1234").await;
    app.token(&email, "password-5678")
        .await
        .assert_problem(401, "INVALID_CREDENTIALS");
}

async fn passwords_must_have_8_to_128_characters_counted_in_unicode_characters(app: TestApp) {
    let too_short = ["", "1234567", &"가".repeat(7)]; // 7 Hangul syllables are 21 bytes
    for password in too_short {
        app.sign_up(&unique_email(), password, "Kim")
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    // 129 syllables are 129 characters (387 bytes).
    app.sign_up(&unique_email(), &"가".repeat(129), "Kim")
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.sign_up(&unique_email(), &"x".repeat(129), "Kim")
        .await
        .assert_problem(400, "VALIDATION_FAILED");

    // Contract v2: neither common nor one character repeated (see `abuse.rs`).
    for password in [
        "1234567x".to_owned(),
        "가나".repeat(4),
        "가나".repeat(64),
        "xy".repeat(64),
    ] {
        let email = unique_email();
        app.sign_up(&email, &password, "Kim").await.expect_status(201);
        app.log_in(&email, &password).await;
    }
}

async fn names_are_trimmed_and_must_have_1_to_50_characters(app: TestApp) {
    for name in ["", "   ", "\t\n", &"가".repeat(51), &format!(" {} ", "n".repeat(51))] {
        app.sign_up(&unique_email(), "password-1234", name)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    let fifty = "가".repeat(50);
    let body = app
        .sign_up(&unique_email(), "password-1234", &format!("  {fifty}  "))
        .await
        .expect_status(201)
        .clone();
    assert_eq!(body["name"], json!(fifty));
    let body = app
        .sign_up(&unique_email(), "password-1234", " K ")
        .await
        .expect_status(201)
        .clone();
    assert_eq!(body["name"], json!("K"));
}

async fn sign_up_with_a_missing_field_or_a_wrong_type_is_validation_failed(app: TestApp) {
    let email = unique_email();
    let bodies = [
        json!({"email": email, "password": "password-1234"}),
        json!({"email": email, "name": "Kim"}),
        json!({"password": "password-1234", "name": "Kim"}),
        json!({"email": null, "password": "password-1234", "name": "Kim"}),
        json!({"email": email, "password": 12345678, "name": "Kim"}),
        json!({"email": email, "password": "password-1234", "name": ["Kim"]}),
        json!("a string"),
    ];
    for body in &bodies {
        app.post("/api/v1/users", None, body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    // None of them created the account.
    app.sign_up(&email, "password-1234", "Kim").await.expect_status(201);
}

// ---------------------------------------------------------------------------------------------
// Tokens and ownership
// ---------------------------------------------------------------------------------------------

engine_tests!(
    a_token_answer_has_a_bearer_token_its_lifetime_and_the_user_id,
    a_wrong_email_and_a_wrong_password_get_the_same_401_invalid_credentials,
    login_ignores_the_case_of_the_email,
    user_paths_without_a_valid_token_are_401_unauthorized,
    a_user_gets_403_forbidden_on_another_users_paths_whether_or_not_that_user_exists,
    an_admin_can_address_any_users_paths,
    an_admin_addressing_an_unknown_user_gets_404_user_not_found,
    ids_in_paths_that_are_not_positive_64_bit_integers_are_validation_failed,
    errors_are_chosen_in_the_order_401_then_403_then_400_then_404_then_409,
);

async fn a_token_answer_has_a_bearer_token_its_lifetime_and_the_user_id(app: TestApp) {
    let email = unique_email();
    let created = app
        .sign_up(&email, "password-1234", "Kim")
        .await
        .expect_status(201)
        .clone();
    let response = app.token(&email, "password-1234").await;
    let body = response.expect_status(200);
    assert!(
        body["access_token"].as_str().is_some_and(|token| !token.is_empty()),
        "{body}"
    );
    assert_eq!(body["token_type"], json!("Bearer"));
    assert!(body["expires_in"].as_i64().is_some_and(|seconds| seconds > 0), "{body}");
    assert_eq!(body["user_id"], created["id"]);

    // The token works on the user's own paths.
    let path = format!("/api/v1/users/{}/balance", created["id"]);
    let token = body["access_token"].as_str().unwrap();
    app.get(&path, Some(token)).await.expect_status(200);
}

async fn a_wrong_email_and_a_wrong_password_get_the_same_401_invalid_credentials(app: TestApp) {
    let user = app.create_user().await;
    let wrong_password = app.token(&user.email, "not-the-password").await;
    wrong_password.assert_problem(401, "INVALID_CREDENTIALS");
    let wrong_email = app.token(&unique_email(), USER_PASSWORD).await;
    wrong_email.assert_problem(401, "INVALID_CREDENTIALS");
    for field in ["type", "title", "status", "detail", "code"] {
        assert_eq!(
            wrong_password.body[field], wrong_email.body[field],
            "a wrong email and a wrong password must be indistinguishable ({field})"
        );
    }
}

async fn login_ignores_the_case_of_the_email(app: TestApp) {
    let email = unique_email();
    let created = app
        .sign_up(&email.to_uppercase(), "password-1234", "Kim")
        .await
        .expect_status(201)
        .clone();
    for variant in [email.clone(), email.to_uppercase()] {
        let user = app.log_in(&variant, "password-1234").await;
        assert_eq!(json!(user.id), created["id"]);
    }
}

async fn user_paths_without_a_valid_token_are_401_unauthorized(app: TestApp) {
    let user = app.create_user().await;
    let balance = format!("/api/v1/users/{}/balance", user.id);
    // The same token with the first character of its signature changed.
    let (signed, signature) = user.token.rsplit_once('.').expect("a JWT has three parts");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);

    // No Authorization header at all.
    app.get(&balance, None).await.assert_problem(401, "UNAUTHORIZED");
    // Bearer tokens that are not ours.
    // The same signature over a payload naming another user, or the admin role.
    let other = app.create_user().await;
    let other_subject = forge_jwt_payload(&user.token, |claims| {
        let object = claims.as_object_mut().expect("JWT claims are an object");
        for (name, value) in object.iter_mut() {
            if *value == json!(user.id) || *value == json!(user.id.to_string()) {
                *value = if value.is_string() {
                    json!(other.id.to_string())
                } else {
                    json!(other.id)
                };
            } else if value.as_str().is_some_and(|v| v.eq_ignore_ascii_case("user")) {
                *value = json!(if name == "role" { "ADMIN" } else { "admin" });
            }
        }
    });
    assert_ne!(other_subject, user.token, "the forged payload differs");
    let other_balance = format!("/api/v1/users/{}/balance", other.id);
    app.get(&other_balance, Some(&other_subject))
        .await
        .assert_problem(401, "UNAUTHORIZED");
    for token in ["garbage", "a.b.c", tampered.as_str(), other_subject.as_str(), ""] {
        app.get(&balance, Some(token)).await.assert_problem(401, "UNAUTHORIZED");
    }
    // Other schemes.
    let schemes = [
        format!("Basic {}", user.token),
        user.token.clone(),
        format!("Token {}", user.token),
    ];
    for header in schemes {
        app.request(Method::GET, &balance)
            .header("authorization", header)
            .fetch()
            .await
            .assert_problem(401, "UNAUTHORIZED");
    }
    // A charge without a token changes nothing.
    let charges = format!("/api/v1/users/{}/balance/charges", user.id);
    app.request(Method::POST, &charges)
        .header("Idempotency-Key", unique_key())
        .json(&json!({"amount": 5000}))
        .fetch()
        .await
        .assert_problem(401, "UNAUTHORIZED");
    assert_eq!(app.balance(&user).await, 0);
}

async fn a_user_gets_403_forbidden_on_another_users_paths_whether_or_not_that_user_exists(app: TestApp) {
    let owner = app.create_user().await;
    let other = app.create_user().await;
    for target in [owner.id, 987_654_321] {
        for path in ["balance", "balance/history"] {
            app.get(&format!("/api/v1/users/{target}/{path}"), Some(&other.token))
                .await
                .assert_problem(403, "FORBIDDEN");
        }
        app.request(Method::POST, &format!("/api/v1/users/{target}/balance/charges"))
            .bearer_auth(&other.token)
            .header("Idempotency-Key", unique_key())
            .json(&json!({"amount": 5000}))
            .fetch()
            .await
            .assert_problem(403, "FORBIDDEN");
    }
    assert_eq!(app.balance(&owner).await, 0);
    assert_eq!(app.balance(&other).await, 0);
}

async fn an_admin_can_address_any_users_paths(app: TestApp) {
    let user = app.create_user().await;
    app.charge(&user, 5000, &unique_key()).await.expect_status(200);
    let admin = app.admin().await.clone();

    let balance = app
        .get(&format!("/api/v1/users/{}/balance", user.id), Some(&admin.token))
        .await;
    assert_eq!(
        balance.expect_status(200),
        &json!({"user_id": user.id, "balance": 5000})
    );
    let history = app
        .get(
            &format!("/api/v1/users/{}/balance/history", user.id),
            Some(&admin.token),
        )
        .await;
    assert_eq!(items(history.expect_status(200)).len(), 1);

    // The admin may charge the user's balance too.
    let charged = app
        .request(Method::POST, &format!("/api/v1/users/{}/balance/charges", user.id))
        .bearer_auth(&admin.token)
        .header("Idempotency-Key", unique_key())
        .json(&json!({"amount": 2_000}))
        .fetch()
        .await;
    assert_eq!(
        charged.expect_status(200),
        &json!({"user_id": user.id, "charged_amount": 2_000, "balance": 7_000})
    );
    assert_eq!(app.balance(&user).await, 7_000);
}

async fn an_admin_addressing_an_unknown_user_gets_404_user_not_found(app: TestApp) {
    let admin = app.admin().await.clone();
    for path in ["balance", "balance/history"] {
        app.get(&format!("/api/v1/users/987654321/{path}"), Some(&admin.token))
            .await
            .assert_problem(404, "USER_NOT_FOUND");
    }
    app.request(Method::POST, "/api/v1/users/987654321/balance/charges")
        .bearer_auth(&admin.token)
        .header("Idempotency-Key", unique_key())
        .json(&json!({"amount": 5000}))
        .fetch()
        .await
        .assert_problem(404, "USER_NOT_FOUND");
}

async fn ids_in_paths_that_are_not_positive_64_bit_integers_are_validation_failed(app: TestApp) {
    let admin = app.admin().await.clone();
    let bad_ids = [
        "0",
        "-1",
        "abc",
        "1.5",
        "1e3",
        "9223372036854775808",
        "99999999999999999999",
    ];
    for id in bad_ids {
        app.get(&format!("/api/v1/users/{id}/balance"), Some(&admin.token))
            .await
            .assert_problem(400, "VALIDATION_FAILED");
        app.get(&format!("/api/v1/products/{id}"), None)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
        app.patch(&format!("/api/v1/admin/products/{id}"), Some(&admin.token), &json!({}))
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    // The largest 64-bit id is well-formed, so it is merely unknown.
    app.get("/api/v1/users/9223372036854775807/balance", Some(&admin.token))
        .await
        .assert_problem(404, "USER_NOT_FOUND");
    app.get("/api/v1/products/9223372036854775807", None)
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
}

async fn errors_are_chosen_in_the_order_401_then_403_then_400_then_404_then_409(app: TestApp) {
    let owner = app.create_user().await;
    let other = app.create_user().await;
    let admin = app.admin().await.clone();
    let charges = |user_id: i64| format!("/api/v1/users/{user_id}/balance/charges");

    // 401 beats 403 and 400: no token, someone else's path, a bad amount, no key.
    app.post(&charges(owner.id), None, &json!({"amount": 1}))
        .await
        .assert_problem(401, "UNAUTHORIZED");
    // 403 beats 400: another user's path with a bad amount, no key, a malformed body.
    app.post(&charges(owner.id), Some(&other.token), &json!({"amount": 1}))
        .await
        .assert_problem(403, "FORBIDDEN");
    app.send_raw(Method::POST, &charges(owner.id), Some(&other.token), "{")
        .await
        .assert_problem(403, "FORBIDDEN");
    // 400 beats 404: the admin on an unknown user with a bad amount or a bad body.
    app.request(Method::POST, &charges(987_654_321))
        .bearer_auth(&admin.token)
        .header("Idempotency-Key", unique_key())
        .json(&json!({"amount": 1}))
        .fetch()
        .await
        .assert_problem(400, "INVALID_CHARGE_AMOUNT");
    app.request(Method::POST, &charges(987_654_321))
        .bearer_auth(&admin.token)
        .header("Idempotency-Key", unique_key())
        .header("content-type", "application/json")
        .body("{")
        .fetch()
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.patch(
        "/api/v1/admin/products/987654321",
        Some(&admin.token),
        &json!({"price": -1}),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    app.post(
        "/api/v1/admin/products/987654321/restock",
        Some(&admin.token),
        &json!({"quantity": 0}),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    // 403 beats 400 on admin routes too; 401 beats both.
    app.post(
        "/api/v1/admin/products",
        Some(&owner.token),
        &json!({"name": "", "price": -1, "stock": -1}),
    )
    .await
    .assert_problem(403, "FORBIDDEN");
    app.post(
        "/api/v1/admin/products",
        None,
        &json!({"name": "", "price": -1, "stock": -1}),
    )
    .await
    .assert_problem(401, "UNAUTHORIZED");
    // 400 beats 409: a taken email with an invalid password.
    app.sign_up(&owner.email, "short", "Kim")
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(app.balance(&owner).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

engine_tests!(
    the_public_product_list_shows_only_products_on_sale_oldest_first,
    the_product_list_pages_by_keyset_and_next_after_is_the_last_id_of_a_full_page,
    the_product_list_holds_20_items_by_default_and_100_at_most,
    paging_parameters_out_of_bounds_or_malformed_are_validation_failed,
    a_product_is_readable_by_id_whatever_its_status,
    an_unknown_product_is_404_product_not_found,
    an_admin_creates_products_on_sale_within_the_name_price_and_stock_bounds,
    patching_a_product_changes_only_the_given_fields_and_an_empty_patch_changes_nothing,
    restock_adds_1_to_1000000_units_and_never_takes_stock_beyond_10000000,
    non_admins_get_403_forbidden_and_anonymous_callers_401_on_admin_routes,
);

async fn the_public_product_list_shows_only_products_on_sale_oldest_first(app: TestApp) {
    let first = app.create_product("Linen shirt", 39_000, 10).await;
    let stopped = app.create_product("Wool coat", 259_000, 3).await;
    let third = app.create_product("Denim jacket", 89_000, 0).await;
    app.patch_product(id_of(&stopped), &json!({"status": "STOPPED"}))
        .await
        .expect_status(200);

    let response = app.list_products("").await;
    let page = response.expect_status(200);
    assert_eq!(ids(page), vec![id_of(&first), id_of(&third)]);
    assert_eq!(page["next_after"], Value::Null);
    assert_eq!(
        items(page)[0],
        json!({"id": id_of(&first), "name": "Linen shirt", "price": 39_000, "stock": 10, "status": "ON_SALE", "sale_starts_at": null, "max_per_user": null})
    );
    assert_eq!(items(page)[1]["stock"], json!(0), "sold-out products stay listed");

    // Keyset paging: `after` is an id, not a position, even the id of a hidden product.
    let after_stopped = app
        .list_products(&format!("?after={}", id_of(&stopped)))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&after_stopped), vec![id_of(&third)]);

    // Back on sale, it is listed again in id order.
    app.patch_product(id_of(&stopped), &json!({"status": "ON_SALE"}))
        .await
        .expect_status(200);
    let page = app.list_products("").await.expect_status(200).clone();
    assert_eq!(ids(&page), vec![id_of(&first), id_of(&stopped), id_of(&third)]);
}

async fn the_product_list_pages_by_keyset_and_next_after_is_the_last_id_of_a_full_page(app: TestApp) {
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(id_of(&app.create_product(&format!("Product {n}"), 1_000 + n, 5).await));
    }
    let page1 = app.list_products("?limit=2").await.expect_status(200).clone();
    assert_eq!(ids(&page1), created[0..2].to_vec());
    assert_eq!(page1["next_after"], json!(created[1]));

    let page2 = app
        .list_products(&format!("?limit=2&after={}", created[1]))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&page2), created[2..4].to_vec());
    assert_eq!(page2["next_after"], json!(created[3]));

    let page3 = app
        .list_products(&format!("?limit=2&after={}", created[3]))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&page3), created[4..5].to_vec());
    assert_eq!(
        page3["next_after"],
        Value::Null,
        "a page with fewer than limit items ends the list"
    );

    // A full last page still points on; the page after it is empty.
    let full = app
        .list_products(&format!("?limit=1&after={}", created[3]))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&full), vec![created[4]]);
    assert_eq!(full["next_after"], json!(created[4]));
    let empty = app
        .list_products(&format!("?limit=1&after={}", created[4]))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(empty, json!({"items": [], "next_after": null}));
}

async fn the_product_list_holds_20_items_by_default_and_100_at_most(app: TestApp) {
    let mut created = Vec::new();
    for n in 0..101 {
        created.push(id_of(&app.create_product(&format!("Product {n}"), 1_000, 1).await));
    }
    let page = app.list_products("").await.expect_status(200).clone();
    assert_eq!(ids(&page), created[0..20].to_vec());
    assert_eq!(page["next_after"], json!(created[19]));
    let page = app.list_products("?limit=100").await.expect_status(200).clone();
    assert_eq!(ids(&page), created[0..100].to_vec());
    let page = app.list_products("?limit=1").await.expect_status(200).clone();
    assert_eq!(ids(&page), vec![created[0]]);
}

async fn paging_parameters_out_of_bounds_or_malformed_are_validation_failed(app: TestApp) {
    let user = app.create_user().await;
    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=-1",
        "?limit=abc",
        "?limit=1.5",
        "?after=abc",
        "?after=1.5",
    ] {
        app.list_products(query).await.assert_problem(400, "VALIDATION_FAILED");
        app.balance_history(&user, query)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
}

async fn a_product_is_readable_by_id_whatever_its_status(app: TestApp) {
    let product = app.create_product("Silk scarf", 49_000, 7).await;
    let id = id_of(&product);
    assert_eq!(app.product(id).await.expect_status(200), &product);
    let stopped = app
        .patch_product(id, &json!({"status": "STOPPED"}))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(stopped["status"], json!("STOPPED"));
    assert_eq!(app.product(id).await.expect_status(200), &stopped);
}

async fn an_unknown_product_is_404_product_not_found(app: TestApp) {
    app.product(987_654_321).await.assert_problem(404, "PRODUCT_NOT_FOUND");
    app.patch_product(987_654_321, &json!({"price": 1_000}))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.restock(987_654_321, 1)
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
}

async fn an_admin_creates_products_on_sale_within_the_name_price_and_stock_bounds(app: TestApp) {
    let product = app.create_product("  Linen shirt  ", 39_000, 10).await;
    assert!(id_of(&product) > 0);
    assert_eq!(
        product,
        json!({"id": id_of(&product), "name": "Linen shirt", "price": 39_000, "stock": 10, "status": "ON_SALE", "sale_starts_at": null, "max_per_user": null})
    );
    for (price, stock) in [(0, 0), (100_000_000, 1_000_000)] {
        let product = app.create_product("Edge", price, stock).await;
        assert_eq!(
            (product["price"].as_i64(), product["stock"].as_i64()),
            (Some(price), Some(stock))
        );
    }
    let long_name = "가".repeat(200);
    assert_eq!(app.create_product(&long_name, 1, 1).await["name"], json!(long_name));

    let admin = app.admin().await.clone();
    let invalid = [
        json!({"name": "", "price": 1, "stock": 1}),
        json!({"name": "   ", "price": 1, "stock": 1}),
        json!({"name": "가".repeat(201), "price": 1, "stock": 1}),
        json!({"name": "Coat", "price": -1, "stock": 1}),
        json!({"name": "Coat", "price": 100_000_001, "stock": 1}),
        json!({"name": "Coat", "price": 1, "stock": -1}),
        json!({"name": "Coat", "price": 1, "stock": 1_000_001}),
        json!({"name": "Coat", "price": 1.5, "stock": 1}),
        json!({"name": "Coat", "price": "1000", "stock": 1}),
        json!({"name": "Coat", "stock": 1}),
        json!({"name": "Coat", "price": 1}),
        json!({"price": 1, "stock": 1}),
    ];
    for body in &invalid {
        app.post("/api/v1/admin/products", Some(&admin.token), body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    let listed = app.all_pages("/api/v1/products", None, 100).await;
    assert_eq!(listed.len(), 4, "only the valid products exist: {listed:?}");
}

async fn patching_a_product_changes_only_the_given_fields_and_an_empty_patch_changes_nothing(app: TestApp) {
    let product = app.create_product("Linen shirt", 39_000, 10).await;
    let id = id_of(&product);

    let unchanged = app.patch_product(id, &json!({})).await.expect_status(200).clone();
    assert_eq!(unchanged, product);

    let renamed = app
        .patch_product(id, &json!({"name": "  Linen shirt II "}))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(
        renamed,
        json!({"id": id, "name": "Linen shirt II", "price": 39_000, "stock": 10, "status": "ON_SALE", "sale_starts_at": null, "max_per_user": null})
    );

    let repriced = app
        .patch_product(id, &json!({"price": 0}))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(repriced["price"], json!(0));
    assert_eq!(repriced["name"], json!("Linen shirt II"));

    let all = app
        .patch_product(id, &json!({"name": "Shirt", "price": 100_000_000, "status": "STOPPED"}))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(
        all,
        json!({"id": id, "name": "Shirt", "price": 100_000_000, "stock": 10, "status": "STOPPED", "sale_starts_at": null, "max_per_user": null})
    );

    let invalid = [
        json!({"name": ""}),
        json!({"name": "  "}),
        json!({"name": "가".repeat(201)}),
        json!({"price": -1}),
        json!({"price": 100_000_001}),
        json!({"price": 9.5}),
        json!({"status": "SOLD"}),
        json!({"status": "on_sale"}),
        json!({"status": 1}),
    ];
    for body in &invalid {
        app.patch_product(id, body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    assert_eq!(
        app.product(id).await.expect_status(200),
        &all,
        "rejected patches changed nothing"
    );
}

async fn restock_adds_1_to_1000000_units_and_never_takes_stock_beyond_10000000(app: TestApp) {
    let product = app.create_product("Socks", 5_000, 1_000_000).await;
    let id = id_of(&product);
    let restocked = app.restock(id, 1).await.expect_status(200).clone();
    assert_eq!(
        restocked,
        json!({"id": id, "name": "Socks", "price": 5_000, "stock": 1_000_001, "status": "ON_SALE", "sale_starts_at": null, "max_per_user": null})
    );

    for quantity in [0, -1, 1_000_001] {
        app.restock(id, quantity).await.assert_problem(400, "VALIDATION_FAILED");
    }
    let admin = app.admin().await.clone();
    let path = format!("/api/v1/admin/products/{id}/restock");
    for body in [json!({}), json!({"quantity": 1.5}), json!({"quantity": "5"})] {
        app.post(&path, Some(&admin.token), &body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }

    for _ in 0..8 {
        app.restock(id, 1_000_000).await.expect_status(200);
    }
    assert_eq!(app.product(id).await.expect_status(200)["stock"], json!(9_000_001));
    app.restock(id, 999_999).await.expect_status(200);
    assert_eq!(app.product(id).await.expect_status(200)["stock"], json!(10_000_000));
    app.restock(id, 1).await.assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(app.product(id).await.expect_status(200)["stock"], json!(10_000_000));
}

async fn non_admins_get_403_forbidden_and_anonymous_callers_401_on_admin_routes(app: TestApp) {
    let product = app.create_product("Cap", 19_000, 5).await;
    let id = id_of(&product);
    let user = app.create_user().await;
    let calls = [
        (
            Method::POST,
            "/api/v1/admin/products".to_owned(),
            json!({"name": "Hat", "price": 1, "stock": 1}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/admin/products/{id}"),
            json!({"price": 1}),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/products/{id}/restock"),
            json!({"quantity": 1}),
        ),
    ];
    for (method, path, body) in &calls {
        app.request(method.clone(), path)
            .bearer_auth(&user.token)
            .json(body)
            .fetch()
            .await
            .assert_problem(403, "FORBIDDEN");
        app.request(method.clone(), path)
            .json(body)
            .fetch()
            .await
            .assert_problem(401, "UNAUTHORIZED");
    }
    assert_eq!(app.product(id).await.expect_status(200), &product, "nothing changed");
    assert_eq!(
        app.list_products("").await.expect_status(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Balance and idempotent charges
// ---------------------------------------------------------------------------------------------

engine_tests!(
    a_new_user_has_a_zero_balance,
    a_charge_adds_to_the_balance_and_answers_the_charged_amount_and_new_balance,
    charge_amounts_outside_1000_to_1000000_are_invalid_charge_amount_and_change_nothing,
    charge_amounts_that_are_not_64_bit_integers_are_validation_failed,
    a_charge_that_would_take_the_balance_beyond_10000000_is_balance_limit_exceeded_and_changes_nothing,
    a_charge_just_over_the_limit_is_refused_while_one_reaching_it_succeeds,
    a_charge_without_an_idempotency_key_is_idempotency_key_missing,
    idempotency_keys_must_be_1_to_255_visible_ascii_characters,
    a_replayed_charge_returns_the_first_answer_and_moves_the_balance_once,
    the_same_key_with_another_body_is_422_idempotency_key_reused,
    a_key_whose_charge_was_refused_with_a_4xx_can_be_used_again,
    a_finished_request_never_leaves_its_key_in_progress_for_the_next_one,
    idempotency_keys_are_scoped_to_the_user,
    the_balance_history_lists_signed_charges_newest_first_with_the_balance_after_each,
    the_balance_history_pages_newest_first_by_keyset,
    one_users_history_never_shows_another_users_lines,
);

async fn a_new_user_has_a_zero_balance(app: TestApp) {
    let user = app.create_user().await;
    let response = app
        .get(&format!("/api/v1/users/{}/balance", user.id), Some(&user.token))
        .await;
    assert_eq!(response.expect_status(200), &json!({"user_id": user.id, "balance": 0}));
    let history = app.balance_history(&user, "").await;
    assert_eq!(history.expect_status(200), &json!({"items": [], "next_after": null}));
}

async fn a_charge_adds_to_the_balance_and_answers_the_charged_amount_and_new_balance(app: TestApp) {
    let user = app.create_user().await;
    let first = app.charge(&user, 1_000, &unique_key()).await;
    assert_eq!(
        first.expect_status(200),
        &json!({"user_id": user.id, "charged_amount": 1_000, "balance": 1_000})
    );
    assert!(first.content_type().starts_with("application/json"));
    let second = app.charge(&user, 1_000_000, &unique_key()).await;
    assert_eq!(
        second.expect_status(200),
        &json!({"user_id": user.id, "charged_amount": 1_000_000, "balance": 1_001_000})
    );
    assert_eq!(app.balance(&user).await, 1_001_000);
}

async fn charge_amounts_outside_1000_to_1000000_are_invalid_charge_amount_and_change_nothing(app: TestApp) {
    let user = app.create_user().await;
    for amount in [999, 0, -1, -1_000, -5_000, 1_000_001, i64::MAX, i64::MIN] {
        let key = unique_key();
        app.charge(&user, amount, &key)
            .await
            .assert_problem(400, "INVALID_CHARGE_AMOUNT");
    }
    assert_eq!(app.balance(&user).await, 0);
    let history = app.balance_history(&user, "").await;
    assert!(items(history.expect_status(200)).is_empty());
}

async fn charge_amounts_that_are_not_64_bit_integers_are_validation_failed(app: TestApp) {
    let user = app.create_user().await;
    let bodies = [
        r#"{"amount": 1500.5}"#,
        r#"{"amount": 0.5}"#,
        r#"{"amount": "5000"}"#,
        r#"{"amount": null}"#,
        r#"{"amount": true}"#,
        r#"{"amount": [5000]}"#,
        r#"{"amount": 18446744073709551616}"#,
        r#"{"amount": 99999999999999999999999}"#,
        r#"{"amount": -9223372036854775809}"#,
        r#"{}"#,
        r#"{"amount": 5000"#,
        r#""#,
    ];
    for raw in bodies {
        let response = app.charge_raw(&user, raw, Some(&unique_key())).await;
        assert_eq!(response.status, 400, "body {raw:?} got {}", response.text);
        response.assert_problem(400, "VALIDATION_FAILED");
    }
    assert_eq!(app.balance(&user).await, 0);
}

async fn a_charge_that_would_take_the_balance_beyond_10000000_is_balance_limit_exceeded_and_changes_nothing(
    app: TestApp,
) {
    let user = app.create_user().await;
    for _ in 0..9 {
        app.charge(&user, 1_000_000, &unique_key()).await.expect_status(200);
    }
    app.charge(&user, 1_000_000, &unique_key()).await.expect_status(200);
    assert_eq!(app.balance(&user).await, 10_000_000, "exactly the limit is allowed");

    let response = app.charge(&user, 1_000, &unique_key()).await;
    response.assert_problem(400, "BALANCE_LIMIT_EXCEEDED");
    assert_eq!(app.balance(&user).await, 10_000_000);
    let history = app
        .all_pages(
            &format!("/api/v1/users/{}/balance/history", user.id),
            Some(&user.token),
            100,
        )
        .await;
    assert_eq!(history.len(), 10, "the refused charge wrote no history line");
}

async fn a_charge_just_over_the_limit_is_refused_while_one_reaching_it_succeeds(app: TestApp) {
    let user = app.create_user().await;
    for _ in 0..9 {
        app.charge(&user, 1_000_000, &unique_key()).await.expect_status(200);
    }
    app.charge(&user, 999_000, &unique_key()).await.expect_status(200);
    app.charge(&user, 1_001, &unique_key())
        .await
        .assert_problem(400, "BALANCE_LIMIT_EXCEEDED");
    app.charge(&user, 1_000, &unique_key()).await.expect_status(200);
    assert_eq!(app.balance(&user).await, 10_000_000);
}

async fn a_charge_without_an_idempotency_key_is_idempotency_key_missing(app: TestApp) {
    let user = app.create_user().await;
    app.charge_raw(&user, r#"{"amount": 5000}"#, None)
        .await
        .assert_problem(400, "IDEMPOTENCY_KEY_MISSING");
    assert_eq!(app.balance(&user).await, 0);
}

async fn idempotency_keys_must_be_1_to_255_visible_ascii_characters(app: TestApp) {
    let user = app.create_user().await;
    let path = format!("/api/v1/users/{}/balance/charges", user.id);
    let too_long = "k".repeat(256);
    let bad_keys: [&[u8]; 6] = [
        b"",
        too_long.as_bytes(),
        b"two words",
        b"tab\there",
        "caf\u{e9}".as_bytes(),
        b"\x80\xff",
    ];
    for key in bad_keys {
        let value = reqwest::header::HeaderValue::from_bytes(key).expect("a sendable header value");
        app.request(Method::POST, &path)
            .bearer_auth(&user.token)
            .header("Idempotency-Key", value)
            .json(&json!({"amount": 5_000}))
            .fetch()
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    assert_eq!(app.balance(&user).await, 0);

    let longest = format!("{}{}", "!~", "k".repeat(253));
    assert_eq!(longest.len(), 255);
    app.charge(&user, 5_000, &longest).await.expect_status(200);
    app.charge(&user, 5_000, "x").await.expect_status(200);
    assert_eq!(app.balance(&user).await, 10_000);
}

async fn a_replayed_charge_returns_the_first_answer_and_moves_the_balance_once(app: TestApp) {
    let user = app.create_user().await;
    let key = unique_key();
    let first = app.charge(&user, 5_000, &key).await;
    assert_eq!(
        first.expect_status(200),
        &json!({"user_id": user.id, "charged_amount": 5_000, "balance": 5_000})
    );

    // Another charge moves the balance; replaying the first key still answers the first answer.
    app.charge(&user, 2_000, &unique_key()).await.expect_status(200);
    for _ in 0..3 {
        let replay = app.charge(&user, 5_000, &key).await;
        assert_eq!(replay.status, first.status);
        assert!(replay.content_type().starts_with("application/json"));
        assert_eq!(replay.body, first.body, "a replay answers the stored first answer");
    }
    // "The same body" is the same JSON value, however it is spelled.
    let respelled = app.charge_raw(&user, "{ \"amount\" :\n 5000 }", Some(&key)).await;
    assert_eq!((respelled.status, &respelled.body), (first.status, &first.body));

    assert_eq!(app.balance(&user).await, 7_000);
    let history = app.balance_history(&user, "").await;
    assert_eq!(
        items(history.expect_status(200)).len(),
        2,
        "one line per charge, not per request"
    );
}

async fn the_same_key_with_another_body_is_422_idempotency_key_reused(app: TestApp) {
    let user = app.create_user().await;
    let key = unique_key();
    app.charge(&user, 5_000, &key).await.expect_status(200);
    app.charge(&user, 6_000, &key)
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.balance(&user).await, 5_000);
}

async fn a_key_whose_charge_was_refused_with_a_4xx_can_be_used_again(app: TestApp) {
    let user = app.create_user().await;
    let key = unique_key();
    app.charge(&user, 500, &key)
        .await
        .assert_problem(400, "INVALID_CHARGE_AMOUNT");
    let ok = app.charge(&user, 5_000, &key).await;
    assert_eq!(ok.expect_status(200)["balance"], json!(5_000));

    // Up to the limit, then a refused charge under a fresh key, reused once there is room.
    for _ in 0..9 {
        app.charge(&user, 1_000_000, &unique_key()).await.expect_status(200);
    }
    let limit_key = unique_key();
    app.charge(&user, 1_000_000, &limit_key)
        .await
        .assert_problem(400, "BALANCE_LIMIT_EXCEEDED");
    let ok = app.charge(&user, 995_000, &limit_key).await;
    assert_eq!(ok.expect_status(200)["balance"], json!(10_000_000));
}

async fn a_finished_request_never_leaves_its_key_in_progress_for_the_next_one(app: TestApp) {
    // One client, one request at a time: each answer arrives before the next request
    // leaves, so none of them may be 409 REQUEST_IN_PROGRESS.
    let user = app.create_user().await;
    let key = unique_key();
    let first = app.charge(&user, 5_000, &key).await;
    first.expect_status(200);
    for round in 0..25 {
        let replay = app.charge(&user, 5_000, &key).await;
        assert_eq!(
            (replay.status, &replay.body),
            (200, &first.body),
            "replay {round} after the answer: {}",
            replay.text
        );
        let reused = app.charge(&user, 6_000, &key).await;
        assert_eq!(reused.status, 422, "reuse {round}: {}", reused.text);
        reused.assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    }

    let refused_key = unique_key();
    for round in 0..25 {
        let refused = app.charge(&user, 500, &refused_key).await;
        assert_eq!(refused.status, 400, "refused charge {round}: {}", refused.text);
        refused.assert_problem(400, "INVALID_CHARGE_AMOUNT");
    }
    app.charge(&user, 1_000, &refused_key).await.expect_status(200);
    assert_eq!(app.balance(&user).await, 6_000);
}

async fn idempotency_keys_are_scoped_to_the_user(app: TestApp) {
    let first = app.create_user().await;
    let second = app.create_user().await;
    let key = unique_key();
    app.charge(&first, 5_000, &key).await.expect_status(200);
    let other = app.charge(&second, 7_000, &key).await;
    assert_eq!(
        other.expect_status(200),
        &json!({"user_id": second.id, "charged_amount": 7_000, "balance": 7_000})
    );
    assert_eq!(app.balance(&first).await, 5_000);
    assert_eq!(app.balance(&second).await, 7_000);
}

async fn the_balance_history_lists_signed_charges_newest_first_with_the_balance_after_each(app: TestApp) {
    let user = app.create_user().await;
    for amount in [1_000, 2_000, 3_000] {
        app.charge(&user, amount, &unique_key()).await.expect_status(200);
    }
    let response = app.balance_history(&user, "").await;
    let page = response.expect_status(200);
    assert_eq!(page["next_after"], Value::Null);
    let lines = items(page);
    assert_eq!(lines.len(), 3);
    let line_ids = ids(page);
    assert!(
        line_ids.windows(2).all(|pair| pair[0] > pair[1]),
        "newest first: {line_ids:?}"
    );
    let summary: Vec<(i64, i64)> = lines
        .iter()
        .map(|line| {
            (
                line["amount"].as_i64().unwrap(),
                line["balance_after"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, vec![(3_000, 6_000), (2_000, 3_000), (1_000, 1_000)]);
    for line in lines {
        assert_eq!(line["type"], json!("CHARGE"));
        assert_eq!(line["order_id"], Value::Null);
        instant(&line["created_at"]);
    }
    let sum: i64 = summary.iter().map(|(amount, _)| amount).sum();
    assert_eq!(sum, app.balance(&user).await, "the balance is the sum of the history");
}

async fn the_balance_history_pages_newest_first_by_keyset(app: TestApp) {
    let user = app.create_user().await;
    for n in 1..=5 {
        app.charge(&user, n * 1_000, &unique_key()).await.expect_status(200);
    }
    let amounts = |page: &Value| -> Vec<i64> {
        items(page)
            .iter()
            .map(|line| line["amount"].as_i64().unwrap())
            .collect()
    };
    let page1 = app.balance_history(&user, "?limit=2").await.expect_status(200).clone();
    assert_eq!(amounts(&page1), vec![5_000, 4_000]);
    assert_eq!(page1["next_after"], json!(ids(&page1)[1]));
    let page2 = app
        .balance_history(&user, &format!("?limit=2&after={}", ids(&page1)[1]))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(amounts(&page2), vec![3_000, 2_000]);
    assert_eq!(page2["next_after"], json!(ids(&page2)[1]));
    let page3 = app
        .balance_history(&user, &format!("?limit=2&after={}", ids(&page2)[1]))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(amounts(&page3), vec![1_000]);
    assert_eq!(page3["next_after"], Value::Null);

    let everything = app
        .all_pages(
            &format!("/api/v1/users/{}/balance/history", user.id),
            Some(&user.token),
            1,
        )
        .await;
    assert_eq!(everything.len(), 5);
}

async fn one_users_history_never_shows_another_users_lines(app: TestApp) {
    let first = app.create_user().await;
    let second = app.create_user().await;
    app.charge(&first, 1_000, &unique_key()).await.expect_status(200);
    app.charge(&second, 2_000, &unique_key()).await.expect_status(200);
    app.charge(&first, 3_000, &unique_key()).await.expect_status(200);
    let page = app.balance_history(&first, "").await.expect_status(200).clone();
    let amounts: Vec<_> = items(&page).iter().map(|line| line["amount"].clone()).collect();
    assert_eq!(amounts, vec![json!(3_000), json!(1_000)]);
}

// ---------------------------------------------------------------------------------------------
// HTTP-level errors
// ---------------------------------------------------------------------------------------------

engine_tests!(
    malformed_json_is_400_validation_failed_as_problem_json,
    a_json_array_where_an_object_is_expected_is_400_validation_failed,
    an_unknown_route_is_404_not_found_as_problem_json,
    a_known_route_with_the_wrong_method_is_405_method_not_allowed_as_problem_json,
    a_body_over_64_kib_is_413_payload_too_large,
    a_json_body_without_a_json_content_type_is_415_unsupported_media_type,
);

async fn malformed_json_is_400_validation_failed_as_problem_json(app: TestApp) {
    let user = app.create_user().await;
    let admin = app.admin().await.clone();
    for raw in ["{", "{\"email\": }", "nul", "{\"email\": \"a@b.com\",}"] {
        app.send_raw(Method::POST, "/api/v1/users", None, raw)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
        app.send_raw(Method::POST, "/api/v1/auth/token", None, raw)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
        app.send_raw(Method::POST, "/api/v1/admin/products", Some(&admin.token), raw)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
        app.charge_raw(&user, raw, Some(&unique_key()))
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
}

async fn a_json_array_where_an_object_is_expected_is_400_validation_failed(app: TestApp) {
    let user = app.create_user().await;
    let admin = app.admin().await.clone();
    // Each array holds exactly the values the object would: only its shape is wrong.
    let email = unique_email();
    app.post("/api/v1/users", None, &json!([email, "password-1234", "Kim"]))
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.post("/api/v1/auth/token", None, &json!([user.email, USER_PASSWORD]))
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.post("/api/v1/admin/products", Some(&admin.token), &json!(["Coat", 1_000, 5]))
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.charge_raw(&user, "[5000]", Some(&unique_key()))
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(app.balance(&user).await, 0);
    assert!(app.all_pages("/api/v1/products", None, 100).await.is_empty());
}

async fn an_unknown_route_is_404_not_found_as_problem_json(app: TestApp) {
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/products",
        "/api/v1/products/1/nope",
        "/api/v1/users/1/wallet",
    ] {
        app.get(path, None).await.assert_problem(404, "NOT_FOUND");
    }
    app.post("/api/v1/nope", None, &json!({}))
        .await
        .assert_problem(404, "NOT_FOUND");
}

async fn a_known_route_with_the_wrong_method_is_405_method_not_allowed_as_problem_json(app: TestApp) {
    let user = app.create_user().await;
    let calls = [
        (Method::DELETE, "/api/v1/users".to_owned()),
        (Method::GET, "/api/v1/users".to_owned()),
        (Method::GET, "/api/v1/auth/token".to_owned()),
        (Method::POST, "/api/v1/products".to_owned()),
        (Method::DELETE, "/api/v1/products/1".to_owned()),
        (Method::PUT, format!("/api/v1/users/{}/balance", user.id)),
        (Method::GET, format!("/api/v1/users/{}/balance/charges", user.id)),
        (Method::POST, "/health".to_owned()),
    ];
    for (method, path) in calls {
        let response = app
            .request(method.clone(), &path)
            .bearer_auth(&user.token)
            .fetch()
            .await;
        assert_eq!(response.status, 405, "{method} {path} got {}", response.text);
        response.assert_problem(405, "METHOD_NOT_ALLOWED");
    }
}

async fn a_body_over_64_kib_is_413_payload_too_large(app: TestApp) {
    let user = app.create_user().await;
    let huge_name = "n".repeat(70 * 1024);
    let response = app.sign_up(&unique_email(), "password-1234", &huge_name).await;
    response.assert_problem(413, "PAYLOAD_TOO_LARGE");
    let huge = format!(r#"{{"amount": 5000, "pad": "{}"}}"#, "p".repeat(65 * 1024));
    app.charge_raw(&user, &huge, Some(&unique_key()))
        .await
        .assert_problem(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(app.balance(&user).await, 0);

    // Just under the limit the body is read and judged on its content.
    let big_name = "n".repeat(60 * 1024);
    app.sign_up(&unique_email(), "password-1234", &big_name)
        .await
        .assert_problem(400, "VALIDATION_FAILED");
}

async fn a_json_body_without_a_json_content_type_is_415_unsupported_media_type(app: TestApp) {
    let body = json!({"email": unique_email(), "password": "password-1234", "name": "Kim"}).to_string();
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut request = app.request(Method::POST, "/api/v1/users").body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.fetch().await.assert_problem(415, "UNSUPPORTED_MEDIA_TYPE");
    }
    // The account was not created by any of them; with a JSON type (and a charset) it is.
    let response = app
        .request(Method::POST, "/api/v1/users")
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .fetch()
        .await;
    response.expect_status(201);
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// Every operation of API.md: path (as OpenAPI spells it) and method.
const API_OPERATIONS: &[(&str, &str)] = &[
    ("/health", "get"),
    ("/api/v1/users", "post"),
    ("/api/v1/auth/token", "post"),
    ("/api/v1/products", "get"),
    ("/api/v1/products/{product_id}", "get"),
    ("/api/v1/products/popular", "get"),
    ("/api/v1/admin/products", "post"),
    ("/api/v1/admin/products/{product_id}", "patch"),
    ("/api/v1/admin/products/{product_id}/restock", "post"),
    ("/api/v1/users/{user_id}/balance", "get"),
    ("/api/v1/users/{user_id}/balance/charges", "post"),
    ("/api/v1/users/{user_id}/balance/history", "get"),
    ("/api/v1/users/{user_id}/cart", "get"),
    ("/api/v1/users/{user_id}/cart", "delete"),
    ("/api/v1/users/{user_id}/cart/items/{product_id}", "put"),
    ("/api/v1/users/{user_id}/cart/items/{product_id}", "delete"),
    ("/api/v1/admin/coupons", "post"),
    ("/api/v1/coupons", "get"),
    ("/api/v1/coupons/{coupon_id}", "get"),
    ("/api/v1/users/{user_id}/coupons", "post"),
    ("/api/v1/users/{user_id}/coupons", "get"),
    ("/api/v1/users/{user_id}/orders", "post"),
    ("/api/v1/users/{user_id}/orders", "get"),
    ("/api/v1/orders/{order_id}", "get"),
    ("/api/v1/orders/{order_id}/payment", "post"),
    ("/api/v1/orders/{order_id}/cancel", "post"),
    ("/api/v1/orders/{order_id}/refund", "post"),
];

engine_tests!(
    health_answers_200_with_status_ok,
    metrics_are_prometheus_text_with_http_request_counters,
    the_openapi_document_is_openapi_3_1_and_documents_every_operation,
    swagger_ui_is_served_from_the_binary_as_html,
);

async fn health_answers_200_with_status_ok(app: TestApp) {
    let response = app.get("/health", None).await;
    assert_eq!(response.expect_status(200), &json!({"status": "ok"}));
    assert!(response.content_type().starts_with("application/json"));
}

async fn metrics_are_prometheus_text_with_http_request_counters(app: TestApp) {
    for _ in 0..3 {
        app.get("/health", None).await.expect_status(200);
        app.list_products("").await.expect_status(200);
    }
    app.get("/api/v1/nope", None).await.assert_problem(404, "NOT_FOUND");
    let response = app.get("/metrics", None).await;
    response.expect_status(200);
    assert!(
        response.content_type().starts_with("text/plain"),
        "Prometheus text format, got {:?}",
        response.content_type()
    );
    let text = &response.text;
    // Counters whose name speaks of requests, and the sum of their samples.
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| name.contains("request"))
        .collect();
    assert!(!counters.is_empty(), "a request counter is declared:\n{text}");
    let counted: f64 = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            counters.contains(&name)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        counted >= 3.0,
        "at least the three product-list requests are counted (got {counted}):\n{text}"
    );
}

async fn the_openapi_document_is_openapi_3_1_and_documents_every_operation(app: TestApp) {
    let response = app.get("/api-docs/openapi.json", None).await;
    let doc = response.expect_status(200);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.1")),
        "OpenAPI 3.1, got {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths object");
    let mut missing = Vec::new();
    for (path, method) in API_OPERATIONS {
        if paths.get(*path).and_then(|item| item.get(*method)).is_none() {
            missing.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented operations: {missing:?}; documented paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
}

async fn swagger_ui_is_served_from_the_binary_as_html(app: TestApp) {
    let response = app.get("/swagger-ui/", None).await;
    response.expect_status(200);
    assert!(
        response.content_type().starts_with("text/html"),
        "got {:?}",
        response.content_type()
    );
    assert!(response.text.to_lowercase().contains("swagger"), "{}", response.text);

    // Its scripts come from the server itself, not from the network.
    let scripts: Vec<&str> = response
        .text
        .split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|src| src.ends_with(".js"))
        .collect();
    assert!(!scripts.is_empty(), "the page loads its scripts: {}", response.text);
    for src in scripts {
        assert!(!src.contains("://"), "script {src} is not served by the binary");
        let path = match src.strip_prefix("./") {
            Some(relative) => format!("/swagger-ui/{relative}"),
            None if src.starts_with('/') => src.to_owned(),
            None => format!("/swagger-ui/{src}"),
        };
        let script = app.get(&path, None).await;
        assert_eq!(script.status, 200, "{path} is served");
        assert!(!script.text.is_empty());
    }
}

postgres_tests!(health_answers_503_while_the_database_does_not_answer_and_200_once_it_does,);

async fn health_answers_503_while_the_database_does_not_answer_and_200_once_it_does(app: TestApp) {
    app.get("/health", None).await.expect_status(200);
    let name = app.db().pg_name().expect("a PostgreSQL database").to_owned();

    pg_admin_execute(&format!(r#"alter database "{name}" allow_connections false"#)).await;
    pg_admin_execute(&format!(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'"
    ))
    .await;
    let down = app.get("/health", None).await;
    pg_admin_execute(&format!(r#"alter database "{name}" allow_connections true"#)).await;
    down.assert_problem(503, "SERVICE_UNAVAILABLE");

    let up = app.get("/health", None).await;
    assert_eq!(up.expect_status(200), &json!({"status": "ok"}));
}
