//! Draws (contract v2, "Limited drops" → "Draws"): creation and its bounds, entries and their
//! precedence, the draw itself (run by the job's `step()` or by the servers' own loop), winners'
//! orders holding their unit through payment, cancel, expiry and refund. Each test runs on
//! SQLite and PostgreSQL; the races run on three PostgreSQL instances and check the database
//! afterwards.

mod steps;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use ecommerce_domain::Timestamp;
use ecommerce_testkit::*;
use futures_util::future::join_all;

/// How long a window stays open in the tests that wait for it to close: long enough for the
/// entries the test makes, short enough not to slow the suite.
const WINDOW_MS: i64 = 2_500;

engine_tests!(
    creating_a_draw_sets_its_units_aside_and_answers_the_draw,
    draw_creation_checks_every_bound_before_the_product_and_its_stock,
    draw_routes_need_an_admin_and_answer_their_not_found,
    a_user_enters_once_and_reads_the_entry,
    many_entries_at_once_share_commits_and_are_each_answered,
    outside_the_window_entries_are_draw_not_open_after_already_entered,
    the_draw_makes_min_quantity_entries_winners_with_orders_and_returns_the_rest,
    a_winner_pays_without_taking_stock_and_cancel_refund_and_expiry_give_units_back,
    the_servers_draw_within_ten_seconds_of_the_window_end_and_the_audit_reproduces_it,
    a_winner_pays_a_sold_out_product_past_the_sold_out_gate,
);

postgres_tests!(
    one_user_entering_at_once_on_three_instances_gets_one_entry,
    three_instances_draw_each_draw_exactly_once,
    winners_paying_and_cancelling_at_once_across_instances_keep_the_stock,
);

/// A draw's JSON has exactly the contract's fields.
fn assert_draw_shape(draw: &Value) {
    let expected: std::collections::BTreeSet<&str> = [
        "id",
        "product_id",
        "quantity",
        "entry_starts_at",
        "entry_ends_at",
        "payment_window_seconds",
        "status",
        "entry_count",
        "winner_count",
        "drawn_at",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys(draw), expected, "draw fields: {draw}");
}

fn assert_entry_shape(entry: &Value) {
    let expected: std::collections::BTreeSet<&str> = ["draw_id", "user_id", "status", "entered_at", "order_id"]
        .into_iter()
        .collect();
    assert_eq!(keys(entry), expected, "entry fields: {entry}");
}

/// A server whose own draw loop runs once at start-up only: the test runs the job's step.
async fn app_with_manual_draws(engine: Engine) -> (TestApp, steps::Jobs) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_DRAW_INTERVAL_MS", steps::NEVER_MS)
        .spawn()
        .await;
    let jobs = steps::Jobs::open(app.db()).await;
    (app, jobs)
}

/// Every entry of the draw with `status` (or all), as the admin pages through them.
async fn all_entries(app: &TestApp, draw_id: i64, status: Option<&str>) -> Vec<Value> {
    let filter = status.map(|s| format!("&status={s}")).unwrap_or_default();
    let mut entries = Vec::new();
    let mut after = String::new();
    loop {
        let page = app
            .admin_draw_entries(draw_id, &format!("?limit=100{filter}{after}"))
            .await
            .json(200);
        entries.extend(items(&page).iter().cloned());
        match page["next_after"].as_i64() {
            Some(next) => after = format!("&after={next}"),
            None => return entries,
        }
    }
}

async fn creating_a_draw_sets_its_units_aside_and_answers_the_draw(app: TestApp) {
    let product = app.new_product("Sneaker", 189_000, 10).await;
    let token = app.admin_token().await;
    let body = draw_body(product, 4, -1_000, 3_600_000, 1_800);
    let response = app.post("/api/v1/admin/draws", Some(&token), &body).await;
    let draw = response.json(201);
    assert_draw_shape(&draw);
    let id = id_of(&draw);
    assert_eq!(
        response.header("location"),
        Some(format!("/api/v1/draws/{id}").as_str())
    );
    assert_eq!(draw["product_id"], json!(product));
    assert_eq!(draw["quantity"], json!(4));
    assert_eq!(draw["payment_window_seconds"], json!(1_800));
    assert_eq!(draw["status"], json!("OPEN"));
    assert_eq!(draw["entry_count"], json!(0));
    assert_eq!(draw["winner_count"], Value::Null);
    assert_eq!(draw["drawn_at"], Value::Null);
    assert!(millis(&draw["entry_starts_at"]) < millis(&draw["entry_ends_at"]));
    assert_eq!(app.stock_of(product).await, 6, "the draw's units left the stock");

    let read = app.draw(id).await;
    assert_eq!(read.json(200), draw);
    assert_eq!(read.header("cache-control"), Some("no-cache"));
    assert!(read.header("etag").is_some(), "token-free reads carry an ETag");

    let scheduled = app.create_draw(product, 1, 60_000, 120_000, 60).await;
    assert_eq!(scheduled["status"], json!("SCHEDULED"));
    let page = app.list_draws("?limit=1").await.json(200);
    assert_eq!(ids(&page), vec![id_of(&scheduled)], "newest first");
    assert_eq!(page["next_after"], json!(id_of(&scheduled)));
    let rest = app.list_draws(&format!("?after={}", id_of(&scheduled))).await.json(200);
    assert_eq!(ids(&rest), vec![id]);
    assert_eq!(rest["next_after"], Value::Null);
    assert_eq!(app.stock_of(product).await, 5);
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(product, 10)]).await;
}

async fn draw_creation_checks_every_bound_before_the_product_and_its_stock(app: TestApp) {
    let product = app.new_product("Coat", 1_000, 5).await;
    let hour = 3_600_000;
    let day = 86_400_000;
    let valid = draw_body(product, 2, 0, hour, 60);
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let bad = [
        with("quantity", json!(0)),
        with("quantity", json!(100_001)),
        with("quantity", json!(1.5)),
        with("quantity", json!("2")),
        with("payment_window_seconds", json!(59)),
        with("payment_window_seconds", json!(86_401)),
        with("entry_starts_at", json!("yesterday")),
        with("entry_ends_at", json!(12)),
        with("entry_starts_at", json!(rfc3339_in(2 * hour))),
        with("entry_starts_at", valid["entry_ends_at"].clone()),
        with("entry_ends_at", json!(rfc3339_in(-1_000))),
        // An end in the past is refused even with an earlier start.
        json!({"product_id": product, "quantity": 1, "entry_starts_at": rfc3339_in(-hour),
               "entry_ends_at": rfc3339_in(-1_000), "payment_window_seconds": 60}),
        with("entry_ends_at", json!(rfc3339_in(30 * day + hour))),
        with("product_id", json!(0)),
        with("product_id", json!(-3)),
        // Validation comes before existence and stock.
        json!({"product_id": 999_999, "quantity": 0, "entry_starts_at": rfc3339_in(0),
               "entry_ends_at": rfc3339_in(hour), "payment_window_seconds": 60}),
        json!({"product_id": product, "quantity": 100_001, "entry_starts_at": rfc3339_in(0),
               "entry_ends_at": rfc3339_in(hour), "payment_window_seconds": 60}),
    ];
    for body in &bad {
        app.create_draw_with(body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    let mut missing = valid.clone();
    missing
        .as_object_mut()
        .expect("object")
        .remove("payment_window_seconds");
    app.create_draw_with(&missing)
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    let token = app.admin_token().await;
    let twice = r#"{"product_id": 1, "product_id": 1, "quantity": 1, "entry_starts_at": "2030-01-01T00:00:00Z",
        "entry_ends_at": "2030-01-01T01:00:00Z", "payment_window_seconds": 60}"#;
    app.send_raw(Method::POST, "/api/v1/admin/draws", Some(&token), twice)
        .await
        .assert_problem(400, "VALIDATION_FAILED");

    app.create_draw_with(&with("product_id", json!(999_999)))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.create_draw_with(&with("quantity", json!(6)))
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    assert_eq!(app.stock_of(product).await, 5, "nothing changed");
    let admin_list = app.get("/api/v1/admin/draws", Some(&token)).await.json(200);
    assert!(items(&admin_list).is_empty(), "no draw was stored: {admin_list}");

    // The bounds themselves are accepted: 30 days ahead, a 60 s and a 86,400 s window.
    let edge = json!({"product_id": product, "quantity": 5, "entry_starts_at": rfc3339_in(-day),
        "entry_ends_at": rfc3339_in(30 * day - 60_000), "payment_window_seconds": 86_400});
    app.create_draw_with(&edge).await.expect_status(201);
    assert_eq!(app.stock_of(product).await, 0, "all five units set aside");
    app.create_draw_with(&with("quantity", json!(1)))
        .await
        .assert_problem(409, "OUT_OF_STOCK");
}

async fn draw_routes_need_an_admin_and_answer_their_not_found(app: TestApp) {
    let user = app.create_user().await;
    let product = app.new_product("Bag", 1_000, 5).await;
    let body = draw_body(product, 1, 0, 3_600_000, 60);
    app.post("/api/v1/admin/draws", None, &body)
        .await
        .assert_problem(401, "UNAUTHORIZED");
    app.post("/api/v1/admin/draws", user.bearer(), &body)
        .await
        .assert_problem(403, "FORBIDDEN");
    app.get("/api/v1/admin/draws", user.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    app.get("/api/v1/admin/draws/1/entries", user.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    assert_eq!(app.stock_of(product).await, 5);

    app.draw(999_999).await.assert_problem(404, "DRAW_NOT_FOUND");
    app.draw(0).await.assert_problem(400, "VALIDATION_FAILED");
    app.get("/api/v1/draws/abc", None)
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.enter_draw(&user, 999_999)
        .await
        .assert_problem(404, "DRAW_NOT_FOUND");
    app.draw_entry(&user, 999_999)
        .await
        .assert_problem(404, "DRAW_NOT_FOUND");
    app.admin_draw_entries(999_999, "")
        .await
        .assert_problem(404, "DRAW_NOT_FOUND");
    let token = app.admin_token().await;
    app.get("/api/v1/admin/draws/999999/audit", Some(&token))
        .await
        .assert_problem(404, "DRAW_NOT_FOUND");

    let draw = id_of(&app.create_draw(product, 1, 0, 3_600_000, 60).await);
    app.draw_entry(&user, draw).await.assert_problem(404, "ENTRY_NOT_FOUND");
    app.admin_draw_entries(draw, "?status=NOPE")
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.admin_draw_entries(draw, "?limit=0")
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.list_draws("?limit=101")
        .await
        .assert_problem(400, "VALIDATION_FAILED");

    // Another user's path is 403 whatever the draw; an admin on an unknown user 404.
    let other = app.create_user().await;
    let path = format!("/api/v1/users/{}/draws/{draw}/entries", other.id);
    app.post_empty(&path, user.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    let path = format!("/api/v1/users/{}/draws/999999/entry", other.id);
    app.get(&path, user.bearer()).await.assert_problem(403, "FORBIDDEN");
    let path = format!("/api/v1/users/999999/draws/{draw}/entries");
    app.post_empty(&path, Some(&token))
        .await
        .assert_problem(404, "USER_NOT_FOUND");
    let path = format!("/api/v1/users/{}/draws/abc/entries", user.id);
    app.post_empty(&path, user.bearer())
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(int(&app.draw_ok(draw).await, "entry_count"), 0, "nothing entered");
}

async fn a_user_enters_once_and_reads_the_entry(app: TestApp) {
    let product = app.new_product("Cap", 1_000, 5).await;
    let draw = id_of(&app.create_draw(product, 2, -1_000, 3_600_000, 60).await);
    let user = app.create_user().await;
    let before = now_millis();
    let response = app.enter_draw(&user, draw).await;
    let entry = response.json(201);
    assert_entry_shape(&entry);
    assert_eq!(
        response.header("location"),
        Some(format!("/api/v1/users/{}/draws/{draw}/entry", user.id).as_str())
    );
    assert_eq!(entry["draw_id"], json!(draw));
    assert_eq!(entry["user_id"], json!(user.id));
    assert_eq!(entry["status"], json!("ENTERED"));
    assert_eq!(entry["order_id"], Value::Null);
    assert!(millis(&entry["entered_at"]) >= before - 1_000);

    app.enter_draw(&user, draw).await.assert_problem(409, "ALREADY_ENTERED");
    let read = app.draw_entry(&user, draw).await;
    assert_eq!(read.json(200), entry);
    assert_eq!(read.header("cache-control"), Some("private, no-store"));
    let second = app.create_user().await;
    app.enter_draw(&second, draw).await.expect_status(201);
    // An admin enters a user on their behalf like any user-path route.
    let third = app.create_user().await;
    let token = app.admin_token().await;
    let path = format!("/api/v1/users/{}/draws/{draw}/entries", third.id);
    app.post_empty(&path, Some(&token)).await.expect_status(201);

    let read = app.draw_ok(draw).await;
    assert_eq!(read["entry_count"], json!(3));
    assert_eq!(read["status"], json!("OPEN"));
    let listed = app.admin_draw_entries(draw, "?limit=2").await.json(200);
    let users: Vec<i64> = items(&listed).iter().map(|e| int(e, "user_id")).collect();
    assert_eq!(users, vec![third.id, second.id], "newest first");
    assert!(listed["next_after"].is_i64());
    let rest = app
        .admin_draw_entries(draw, &format!("?after={}", listed["next_after"]))
        .await
        .json(200);
    let users: Vec<i64> = items(&rest).iter().map(|e| int(e, "user_id")).collect();
    assert_eq!(users, vec![user.id]);
    let won = app.admin_draw_entries(draw, "?status=WON").await.json(200);
    assert!(items(&won).is_empty());
    app.db().assert_invariants().await;
}

async fn many_entries_at_once_share_commits_and_are_each_answered(app: TestApp) {
    let product = app.new_product("Sock", 1_000, 5).await;
    let draw = id_of(&app.create_draw(product, 5, -1_000, 3_600_000, 60).await);
    let users = app.create_users(60).await;
    // Everyone at once, and every third user twice.
    let requests = users
        .iter()
        .chain(users.iter().step_by(3))
        .map(|user| app.enter_draw(user, draw));
    let responses = join_all(requests).await;
    let mut created = HashSet::new();
    for response in &responses {
        match response.status {
            201 => assert!(created.insert(int(&response.body, "user_id")), "one 201 per user"),
            _ => response.assert_problem(409, "ALREADY_ENTERED"),
        }
    }
    assert_eq!(created.len(), 60, "every user entered once");
    assert_eq!(int(&app.draw_ok(draw).await, "entry_count"), 60);
    for user in users.iter().take(5) {
        assert_eq!(app.draw_entry(user, draw).await.json(200)["status"], json!("ENTERED"));
    }
    app.db().assert_invariants().await;
}

async fn outside_the_window_entries_are_draw_not_open_after_already_entered(engine: Engine) {
    let (app, _jobs) = app_with_manual_draws(engine).await;
    let product = app.new_product("Hoodie", 1_000, 5).await;
    let user = app.create_user().await;
    let late = app.create_user().await;

    let scheduled = id_of(&app.create_draw(product, 1, 60_000, 120_000, 60).await);
    app.enter_draw(&user, scheduled)
        .await
        .assert_problem(409, "DRAW_NOT_OPEN");
    assert_eq!(app.draw_ok(scheduled).await["status"], json!("SCHEDULED"));

    let closing = app.create_draw(product, 1, -1_000, WINDOW_MS, 60).await;
    let closing_id = id_of(&closing);
    app.enter_draw(&user, closing_id).await.expect_status(201);
    wait_past(&closing["entry_ends_at"]).await;
    let read = app.draw_ok(closing_id).await;
    assert_eq!(read["status"], json!("CLOSED"), "window over, not drawn yet");
    assert_eq!(read["winner_count"], Value::Null);
    app.enter_draw(&late, closing_id)
        .await
        .assert_problem(409, "DRAW_NOT_OPEN");
    app.enter_draw(&user, closing_id)
        .await
        .assert_problem(409, "ALREADY_ENTERED");
    assert_eq!(int(&app.draw_ok(closing_id).await, "entry_count"), 1);
    let listed = ids(&app.list_draws("").await.json(200));
    assert!(listed.contains(&closing_id), "a closed draw is still listed");
    app.db().assert_invariants().await;
}

async fn the_draw_makes_min_quantity_entries_winners_with_orders_and_returns_the_rest(engine: Engine) {
    let (app, jobs) = app_with_manual_draws(engine).await;
    let product = app.new_product("Jacket", 50_000, 20).await;
    let users = app.create_users(5).await;
    // Three units for five entrants, and five units for two.
    let crowded = app.create_draw(product, 3, -1_000, WINDOW_MS, 600).await;
    let roomy = app.create_draw(product, 5, -1_000, WINDOW_MS, 600).await;
    let (crowded_id, roomy_id) = (id_of(&crowded), id_of(&roomy));
    for user in &users {
        app.enter_draw(user, crowded_id).await.expect_status(201);
    }
    for user in &users[..2] {
        app.enter_draw(user, roomy_id).await.expect_status(201);
    }
    assert_eq!(app.stock_of(product).await, 12);
    // The price at draw time is what winners pay.
    app.patch_product(product, &json!({"price": 60_000}))
        .await
        .expect_status(200);

    assert_eq!(
        jobs.run_draws(Timestamp::now()).await,
        0,
        "nothing is due before the end"
    );
    wait_past(&roomy["entry_ends_at"]).await;
    assert_eq!(jobs.run_draws(Timestamp::now()).await, 2);
    assert_eq!(jobs.run_draws(Timestamp::now()).await, 0, "a draw runs once");

    let drawn = app.draw_ok(crowded_id).await;
    assert_draw_shape(&drawn);
    assert_eq!(drawn["status"], json!("DRAWN"));
    assert_eq!(drawn["winner_count"], json!(3));
    assert_eq!(drawn["entry_count"], json!(5));
    let drawn_at = millis(&drawn["drawn_at"]);
    assert!(drawn_at >= millis(&drawn["entry_ends_at"]));
    let mut winners = HashSet::new();
    let mut losers = 0;
    for user in &users {
        let entry = app.draw_entry(user, crowded_id).await.json(200);
        match entry["status"].as_str() {
            Some("WON") => {
                let order_id = int(&entry, "order_id");
                let order = app.order(user, order_id).await.json(200);
                assert_eq!(order["status"], json!("PENDING_PAYMENT"));
                assert_eq!(order["user_id"], json!(user.id));
                assert_eq!(order["total_amount"], json!(60_000), "the price at draw time");
                let lines = order["items"].as_array().expect("items");
                assert_eq!(lines.len(), 1, "{order}");
                assert_eq!(lines[0]["product_id"], json!(product));
                assert_eq!(lines[0]["quantity"], json!(1));
                assert_eq!(millis(&order["expires_at"]), drawn_at + 600_000);
                winners.insert(user.id);
            }
            Some("LOST") => {
                assert_eq!(entry["order_id"], Value::Null);
                losers += 1;
            }
            other => panic!("entry after the draw: {other:?}"),
        }
    }
    assert_eq!((winners.len(), losers), (3, 2));
    let won = all_entries(&app, crowded_id, Some("WON")).await;
    let listed: HashSet<i64> = won.iter().map(|e| int(e, "user_id")).collect();
    assert_eq!(listed, winners, "the admin's WON list");

    let roomy = app.draw_ok(roomy_id).await;
    assert_eq!(
        (roomy["winner_count"].clone(), roomy["status"].clone()),
        (json!(2), json!("DRAWN"))
    );
    // 20 - 3 - 5 = 12 left; the roomy draw's three unwon units come back.
    assert_eq!(app.stock_of(product).await, 15);
    let listed = ids(&app.list_draws("").await.json(200));
    assert!(
        !listed.contains(&crowded_id) && !listed.contains(&roomy_id),
        "drawn draws leave the list"
    );
    let token = app.admin_token().await;
    let all = ids(&app.get("/api/v1/admin/draws", Some(&token)).await.json(200));
    assert_eq!(
        all,
        vec![roomy_id, crowded_id],
        "the admin sees drawn ones, newest first"
    );

    // An entry after the draw is refused; nobody entered twice.
    let newcomer = app.create_user().await;
    app.enter_draw(&newcomer, crowded_id)
        .await
        .assert_problem(409, "DRAW_NOT_OPEN");
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(product, 20)]).await;
}

async fn a_winner_pays_without_taking_stock_and_cancel_refund_and_expiry_give_units_back(engine: Engine) {
    let (app, jobs) = app_with_manual_draws(engine).await;
    let product = app.new_product("Boot", 10_000, 3).await;
    let users = [app.buyer().await, app.buyer().await, app.buyer().await];
    let draw = app.create_draw(product, 3, -1_000, WINDOW_MS, 60).await;
    let draw_id = id_of(&draw);
    for user in &users {
        app.enter_draw(user, draw_id).await.expect_status(201);
    }
    assert_eq!(app.stock_of(product).await, 0, "every unit is set aside");
    wait_past(&draw["entry_ends_at"]).await;
    assert_eq!(jobs.run_draws(Timestamp::now()).await, 1);
    let mut orders = Vec::new();
    for user in &users {
        let entry = app.draw_entry(user, draw_id).await.json(200);
        assert_eq!(entry["status"], json!("WON"), "three units, three entrants");
        orders.push(int(&entry, "order_id"));
    }
    assert_eq!(app.stock_of(product).await, 0);

    // Paying takes no stock (there is none to take) and never fails OUT_OF_STOCK.
    let paid = app.pay_ok(&users[0], orders[0], None).await;
    assert_eq!(paid["paid_amount"], json!(10_000));
    assert_eq!(app.stock_of(product).await, 0);
    assert_eq!(app.balance(&users[0]).await, 990_000);

    // Cancel gives the unit back.
    app.cancel(&users[1], orders[1]).await.expect_status(200);
    assert_eq!(app.stock_of(product).await, 1);

    // Expiry gives the unit back (the step runs as if the payment window had passed).
    let after_window = Timestamp(Timestamp::now().0 + 61_000);
    assert_eq!(jobs.expire_orders(after_window).await, 1);
    assert_eq!(app.stock_of(product).await, 2);
    assert_eq!(jobs.expire_orders(after_window).await, 0);

    // A refund gives it back as for any order.
    app.refund_ok(&users[0], orders[0]).await;
    assert_eq!(app.stock_of(product).await, 3);
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(product, 3)]).await;
}

/// With the catalog cache on, an instance that saw a product sold out refuses its payments from
/// memory (the sold-out gate): a winner's order holds its unit already and must pass.
async fn a_winner_pays_a_sold_out_product_past_the_sold_out_gate(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_DRAW_INTERVAL_MS", steps::NEVER_MS)
        .env("ECOMMERCE_CATALOG_CACHE_MS", 60_000)
        .spawn()
        .await;
    let jobs = steps::Jobs::open(app.db()).await;
    let product = app.new_product("Cap", 10_000, 1).await;
    let (winner, other) = (app.buyer().await, app.buyer().await);
    // Someone's order made while the unit was in stock; then the draw sets the unit aside.
    let order = app.new_order(&other, &[(product, 1)]).await;
    let draw = app.create_draw(product, 1, -1_000, WINDOW_MS, 60).await;
    let draw_id = id_of(&draw);
    app.enter_draw(&winner, draw_id).await.expect_status(201);
    // That order meets the empty stock: the instance now knows the product is sold out.
    app.pay(&other, order, None).await.assert_problem(409, "OUT_OF_STOCK");
    wait_past(&draw["entry_ends_at"]).await;
    assert_eq!(jobs.run_draws(Timestamp::now()).await, 1);
    let entry = app.draw_entry(&winner, draw_id).await.json(200);
    assert_eq!(entry["status"], json!("WON"));
    let paid = app.pay_ok(&winner, int(&entry, "order_id"), None).await;
    assert_eq!(paid["status"], json!("PAID"));
    app.pay(&other, order, None).await.assert_problem(409, "OUT_OF_STOCK");
    assert_eq!(app.stock_of(product).await, 0);
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(product, 1)]).await;
}

async fn the_servers_draw_within_ten_seconds_of_the_window_end_and_the_audit_reproduces_it(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_DRAW_INTERVAL_MS", 200)
        .spawn()
        .await;
    let product = app.new_product("Tee", 1_000, 10).await;
    let users = app.create_users(6).await;
    let draw = app.create_draw(product, 2, -1_000, WINDOW_MS, 60).await;
    let id = id_of(&draw);
    for user in &users {
        app.enter_draw(user, id).await.expect_status(201);
    }
    let ends = millis(&draw["entry_ends_at"]);
    let drawn = loop {
        let read = app.draw_ok(id).await;
        if read["status"] == json!("DRAWN") {
            break read;
        }
        assert!(now_millis() < ends + 10_000, "not drawn 10 s after the window: {read}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(millis(&drawn["drawn_at"]) <= ends + 10_000);
    assert_eq!(drawn["winner_count"], json!(2));

    let token = app.admin_token().await;
    let audit = app
        .get(&format!("/api/v1/admin/draws/{id}/audit"), Some(&token))
        .await
        .json(200);
    let mut entrants: Vec<i64> = users.iter().map(|u| u.id).collect();
    entrants.sort_unstable();
    assert_eq!(audit["entrants"], json!(entrants), "every entrant, by user id");
    let seed = audit["seed"].as_str().expect("a seed once drawn");
    assert_eq!(seed.len(), 64);
    let won: HashSet<i64> = all_entries(&app, id, Some("WON"))
        .await
        .iter()
        .map(|e| int(e, "user_id"))
        .collect();
    let recomputed: HashSet<i64> = audit["winners"]
        .as_array()
        .expect("winners")
        .iter()
        .map(|w| w.as_i64().expect("id"))
        .collect();
    assert_eq!(recomputed, won, "the seed and the entry list give the winners back");
    // And independently of the server, with the domain's function.
    let seed_bytes = ecommerce_domain::draw::parse_seed(seed).expect("hex seed");
    let again: Vec<ecommerce_domain::UserId> = entrants.iter().map(|&u| ecommerce_domain::UserId(u)).collect();
    let again: HashSet<i64> = ecommerce_domain::draw::choose_winners(&again, 2, &seed_bytes)
        .into_iter()
        .map(|u| u.0)
        .collect();
    assert_eq!(again, won);
    app.db().assert_invariants().await;
}

// ---------------------------------------------------------------------------------------------
// Three instances on one PostgreSQL database
// ---------------------------------------------------------------------------------------------

const INSTANCES: usize = 3;

/// One race at a time: each starts three servers with their own pools.
static ONE_RACE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tally(responses: &[TestResponse]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for response in responses {
        let key = if response.status < 400 {
            response.status.to_string()
        } else {
            let code = response.body["code"].as_str().unwrap_or("<no code>");
            format!("{} {code}", response.status)
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

async fn one_user_entering_at_once_on_three_instances_gets_one_entry(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let product = app.new_product("Sneaker", 1_000, 10).await;
    let draw = id_of(&app.create_draw(product, 2, -1_000, 3_600_000, 60).await);
    let user = app.create_user().await;
    let responses = join_all((0..30).map(|i| app.enter_draw_on(i % INSTANCES, &user, draw))).await;
    let expected: BTreeMap<String, usize> = [("201".to_owned(), 1), ("409 ALREADY_ENTERED".to_owned(), 29)].into();
    assert_eq!(tally(&responses), expected);
    let rows = app
        .db()
        .query_i64("select count(*) from draw_entries where draw_id = $1", &[draw])
        .await;
    assert_eq!(rows, 1, "one entry row");
    let counted = app
        .db()
        .query_i64("select entry_count from draws where id = $1", &[draw])
        .await;
    assert_eq!(counted, 1, "entry_count is exact");
    app.db().assert_invariants().await;
}

async fn three_instances_draw_each_draw_exactly_once(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::builder(engine)
        .instances(INSTANCES)
        .env("ECOMMERCE_DRAW_INTERVAL_MS", 20)
        .spawn()
        .await;
    let jobs = [
        steps::Jobs::open(app.db()).await,
        steps::Jobs::open(app.db()).await,
        steps::Jobs::open(app.db()).await,
    ];
    let product = app.new_product("Parka", 5_000, 100).await;
    let users = app.create_users(40).await;
    // A window long enough for 80 entries on a loaded machine (a slow one saw 23 s for this test).
    let draws = [
        app.create_draw(product, 10, -1_000, WINDOW_MS + 5_000, 600).await,
        app.create_draw(product, 50, -1_000, WINDOW_MS + 5_000, 600).await,
    ];
    let ids_of: Vec<i64> = draws.iter().map(id_of).collect();
    // Everyone enters both, spread over the instances, all at once.
    let entries = join_all(users.iter().enumerate().flat_map(|(i, user)| {
        let app = &app;
        ids_of
            .iter()
            .map(move |&draw| app.enter_draw_on(i % INSTANCES, user, draw))
    }))
    .await;
    let expected: BTreeMap<String, usize> = [("201".to_owned(), 80)].into();
    assert_eq!(tally(&entries), expected);
    wait_past(&draws[1]["entry_ends_at"]).await;
    // The servers' loops and three more job runs race for the same draws.
    let now = Timestamp::now();
    let stepped: u64 = join_all(jobs.iter().map(|jobs| jobs.run_draws(now)))
        .await
        .into_iter()
        .sum();
    assert!(stepped <= 2, "at most the two draws: {stepped}");
    for (draw, quantity) in ids_of.iter().zip([10, 40]) {
        let read = app.draw_ok(*draw).await;
        assert_eq!(read["status"], json!("DRAWN"), "{read}");
        assert_eq!(read["winner_count"], json!(quantity), "min(quantity, entries)");
        let db = app.db();
        let orders = db
            .query_i64("select count(*) from purchase_order where draw_id = $1", &[*draw])
            .await;
        assert_eq!(orders, quantity, "one order per winner, drawn once");
        let doubled = db
            .query_i64(
                "select count(*) from (select user_id from purchase_order where draw_id = $1 \
                 group by user_id having count(*) > 1) twice",
                &[*draw],
            )
            .await;
        assert_eq!(doubled, 0, "nobody won twice");
        let won = db
            .query_i64(
                "select count(*) from draw_entries e join purchase_order o on o.id = e.order_id \
                 where e.draw_id = $1 and e.status = 'WON' and o.user_id = e.user_id and o.draw_id = $1",
                &[*draw],
            )
            .await;
        assert_eq!(won, quantity);
        let lost = db
            .query_i64(
                "select count(*) from draw_entries where draw_id = $1 and status = 'LOST'",
                &[*draw],
            )
            .await;
        assert_eq!(lost, 40 - quantity);
    }
    // 100 - 10 - 50 + 10 unwon units of the second draw.
    assert_eq!(app.stock_of(product).await, 50);
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(product, 100)]).await;
}

async fn winners_paying_and_cancelling_at_once_across_instances_keep_the_stock(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::builder(engine)
        .instances(INSTANCES)
        .env("ECOMMERCE_DRAW_INTERVAL_MS", steps::NEVER_MS)
        .spawn()
        .await;
    let jobs = steps::Jobs::open(app.db()).await;
    let product = app.new_product("Scarf", 2_000, 20).await;
    let users = app.create_users(20).await;
    app.fund_all(&users, 10_000).await;
    let draw = app.create_draw(product, 20, -1_000, WINDOW_MS + 1_000, 600).await;
    let draw_id = id_of(&draw);
    join_all(
        users
            .iter()
            .enumerate()
            .map(|(i, user)| app.enter_draw_on(i % INSTANCES, user, draw_id)),
    )
    .await
    .iter()
    .for_each(|r| {
        r.expect_status(201);
    });
    wait_past(&draw["entry_ends_at"]).await;
    assert_eq!(jobs.run_draws(Timestamp::now()).await, 1);
    let mut orders = Vec::new();
    for user in &users {
        orders.push(int(&app.draw_entry(user, draw_id).await.json(200), "order_id"));
    }
    // Each winner pays on one instance and cancels on another at the same moment: exactly one
    // of the two wins, and the unit is either sold or back in stock.
    let races = users.iter().zip(&orders).enumerate().map(|(i, (user, &order))| {
        let app = &app;
        async move {
            let cancel_path = format!("/api/v1/orders/{order}/cancel");
            let (paid, cancelled) = tokio::join!(app.pay_on(i % INSTANCES, user, order, None), async {
                app.request_on((i + 1) % INSTANCES, Method::POST, &cancel_path)
                    .bearer_auth(&user.token)
                    .fetch()
                    .await
            });
            (paid.status, cancelled.status)
        }
    });
    let outcomes = join_all(races).await;
    let mut sold = 0;
    for (paid, cancelled) in &outcomes {
        assert!(
            matches!((paid, cancelled), (200, 409) | (409, 200)),
            "pay {paid}, cancel {cancelled}: exactly one wins"
        );
        sold += i64::from(*paid == 200);
    }
    assert_eq!(app.stock_of(product).await, 20 - sold);
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(product, 20)]).await;
}
