//! Black-box tests of the catalog cache (`shared/API.md`, "Catalog cache" in contract v2):
//! `ECOMMERCE_CATALOG_CACHE_MS` (default 1000, 0 off) is the longest a product read (detail or
//! list) may lag behind a change made through another instance; an instance's own writes show
//! in its next read; payment always checks the stock in the database.
//!
//! The harness runs every other test with the cache at 0; these turn it on. Lag across
//! instances is checked by polling with a deadline (the bound plus a margin for the requests
//! themselves); nothing here sleeps for a fixed time beyond the bound. Where a test must be able
//! to fail when an invalidation is missing, the bound is set far above the test's deadline
//! (60 s), so only the invalidation can make the change visible in time.

use std::time::{Duration, Instant};

use ecommerce_testkit::*;

engine_tests!(
    own_writes_show_in_the_next_read,
    a_write_through_one_instance_shows_on_another_within_the_bound,
    payment_checks_the_database_while_another_instance_shows_stale_stock,
    with_the_cache_at_0_every_change_shows_at_once_everywhere,
    admin_reads_bypass_the_cache,
);

postgres_tests!(
    changes_reach_three_instances_by_notification_long_before_the_bound,
    an_instance_whose_listener_lost_its_connection_reconnects_and_misses_nothing,
);

/// The contract's default bound.
const DEFAULT_BOUND: Duration = Duration::from_millis(1_000);
/// A bound no test waits for: only an invalidation makes a change visible before it.
const LONG_BOUND: Duration = Duration::from_secs(60);
/// What a poll allows beyond the bound for the requests themselves on a busy machine.
const MARGIN: Duration = Duration::from_millis(1_500);

async fn spawn(engine: Engine, instances: usize, bound: Duration) -> TestApp {
    TestApp::builder(engine)
        .instances(instances)
        .env("ECOMMERCE_CATALOG_CACHE_MS", bound.as_millis())
        .spawn()
        .await
}

/// `GET /api/v1/products/{id}` on instance `index` without a token.
async fn product_on(app: &TestApp, index: usize, id: i64) -> TestResponse {
    app.request_on(index, Method::GET, &format!("/api/v1/products/{id}"))
        .fetch()
        .await
}

/// The ids of the first page of products on sale, on instance `index`.
async fn listed_on(app: &TestApp, index: usize) -> Vec<i64> {
    let page = app
        .request_on(index, Method::GET, "/api/v1/products?limit=100")
        .fetch()
        .await;
    ids(page.expect_status(200))
}

/// The field of the product as instance `index` shows it.
async fn field_on(app: &TestApp, index: usize, id: i64, field: &str) -> Value {
    product_on(app, index, id).await.expect_status(200)[field].clone()
}

/// Polls instance `index` until the product's `field` is `want`; fails after `within` from
/// `since`.
async fn wait_for_field(
    app: &TestApp,
    index: usize,
    id: i64,
    field: &str,
    want: &Value,
    since: Instant,
    within: Duration,
) {
    loop {
        let seen = field_on(app, index, id, field).await;
        if &seen == want {
            return;
        }
        assert!(
            since.elapsed() < within,
            "instance {index}: product {id} still shows {field} = {seen}, not {want}, {:?} after the change",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls instance `index` until `check` holds of its product list.
async fn wait_for_list(
    app: &TestApp,
    index: usize,
    what: &str,
    since: Instant,
    within: Duration,
    check: impl Fn(&[i64]) -> bool,
) {
    loop {
        let listed = listed_on(app, index).await;
        if check(&listed) {
            return;
        }
        assert!(
            since.elapsed() < within,
            "instance {index}: {what} not visible in the list {listed:?} {:?} after the change",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Admin `PATCH`/`POST` on one instance; panics unless 200.
async fn admin_on(app: &TestApp, index: usize, method: Method, path: &str, body: &Value) -> Value {
    let token = app.admin_token().await;
    app.request_on(index, method, path)
        .bearer_auth(&token)
        .json(body)
        .fetch()
        .await
        .json(200)
}

/// Orders and pays on one instance; the paid order's id.
async fn buy_on(app: &TestApp, index: usize, user: &TestUser, product: i64, quantity: i64) -> i64 {
    let order = app.place_order_on(index, user, &[(product, quantity)]).await;
    let order_id = id_of(&order);
    let paid = app.pay_on(index, user, order_id, None).await.json(200);
    assert_eq!(paid["status"], json!("PAID"), "{paid}");
    order_id
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Every kind of change (price, status, restock, stock after payment, refund, a new product)
/// shows in the writing instance's very next read, detail and list, although the bound is far
/// longer than the test.
async fn own_writes_show_in_the_next_read(engine: Engine) {
    let app = spawn(engine, 1, LONG_BOUND).await;
    let id = app.new_product("Cached shirt", 10_000, 10).await;
    // Fill the cache: the detail, the list, and "not found" for the next id.
    assert_eq!(field_on(&app, 0, id, "price").await, json!(10_000));
    assert_eq!(listed_on(&app, 0).await, vec![id]);
    product_on(&app, 0, id + 1)
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");

    admin_on(
        &app,
        0,
        Method::PATCH,
        &format!("/api/v1/admin/products/{id}"),
        &json!({"price": 12_000}),
    )
    .await;
    assert_eq!(field_on(&app, 0, id, "price").await, json!(12_000), "a price change");

    admin_on(
        &app,
        0,
        Method::POST,
        &format!("/api/v1/admin/products/{id}/restock"),
        &json!({"quantity": 5}),
    )
    .await;
    assert_eq!(field_on(&app, 0, id, "stock").await, json!(15), "a restock");

    let user = app.buyer().await;
    app.fund(&user, 100_000).await;
    let order = buy_on(&app, 0, &user, id, 4).await;
    assert_eq!(field_on(&app, 0, id, "stock").await, json!(11), "stock after a payment");

    app.refund_on(0, &user, order).await.expect_status(200);
    assert_eq!(field_on(&app, 0, id, "stock").await, json!(15), "stock after a refund");

    let next = app.new_product("Next", 1_000, 1).await;
    if next == id + 1 {
        assert_eq!(
            field_on(&app, 0, next, "name").await,
            json!("Next"),
            "a product cached as not found"
        );
    }
    assert_eq!(listed_on(&app, 0).await, vec![id, next], "a new product in the list");

    admin_on(
        &app,
        0,
        Method::PATCH,
        &format!("/api/v1/admin/products/{id}"),
        &json!({"status": "STOPPED"}),
    )
    .await;
    assert_eq!(
        field_on(&app, 0, id, "status").await,
        json!("STOPPED"),
        "a status change"
    );
    assert_eq!(
        listed_on(&app, 0).await,
        vec![next],
        "a stopped product leaves the list"
    );
}

/// At the default bound, a change written through instance 0 shows on instance 1 within the
/// bound (PostgreSQL: by notification, usually far sooner; SQLite: by the time bound).
async fn a_write_through_one_instance_shows_on_another_within_the_bound(engine: Engine) {
    let app = spawn(engine, 2, DEFAULT_BOUND).await;
    let id = app.new_product("Shared coat", 50_000, 20).await;
    assert_eq!(field_on(&app, 1, id, "price").await, json!(50_000));
    assert_eq!(listed_on(&app, 1).await, vec![id]);

    let since = Instant::now();
    admin_on(
        &app,
        0,
        Method::PATCH,
        &format!("/api/v1/admin/products/{id}"),
        &json!({"price": 45_000}),
    )
    .await;
    wait_for_field(&app, 1, id, "price", &json!(45_000), since, DEFAULT_BOUND + MARGIN).await;

    let user = app.buyer().await;
    app.fund(&user, 1_000_000).await;
    let since = Instant::now();
    buy_on(&app, 0, &user, id, 3).await;
    wait_for_field(&app, 1, id, "stock", &json!(17), since, DEFAULT_BOUND + MARGIN).await;

    let since = Instant::now();
    admin_on(
        &app,
        0,
        Method::PATCH,
        &format!("/api/v1/admin/products/{id}"),
        &json!({"status": "STOPPED"}),
    )
    .await;
    wait_for_list(&app, 1, "the stop", since, DEFAULT_BOUND + MARGIN, |ids| ids.is_empty()).await;
    assert_eq!(
        app.db()
            .query_i64("select stock from product where id = $1", &[id])
            .await,
        17
    );
}

/// Instance 1 has cached the stock; instance 0 sells all of it. Whatever instance 1 still shows,
/// its payment checks the database: nothing more is sold, and the database accounts for every
/// unit.
async fn payment_checks_the_database_while_another_instance_shows_stale_stock(engine: Engine) {
    let app = spawn(engine, 2, LONG_BOUND).await;
    let id = app.new_product("Last units", 10_000, 5).await;
    assert_eq!(field_on(&app, 1, id, "stock").await, json!(5));
    let (first, second) = (app.buyer().await, app.buyer().await);
    app.fund(&first, 100_000).await;
    app.fund(&second, 100_000).await;
    // The second buyer's order is placed while stock remains, then the first buys it all.
    let pending = id_of(&app.place_order_on(1, &second, &[(id, 1)]).await);
    buy_on(&app, 0, &first, id, 5).await;

    app.pay_on(1, &second, pending, None)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    app.create_order_on(1, &second, &lines_body(&[(id, 1)]))
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    assert_eq!(
        app.db()
            .query_i64("select stock from product where id = $1", &[id])
            .await,
        0
    );
    assert_eq!(
        app.db()
            .query_i64(
                "select cast(coalesce(sum(l.quantity), 0) as bigint) from order_line l join purchase_order o \
                 on o.id = l.order_id where o.status = 'PAID' and l.product_id = $1",
                &[id]
            )
            .await,
        5
    );
    app.db().assert_invariants().await;
}

/// With the cache off, every instance shows every change in its next read, as without a cache.
async fn with_the_cache_at_0_every_change_shows_at_once_everywhere(engine: Engine) {
    let app = spawn(engine, 2, Duration::ZERO).await;
    let id = app.new_product("Uncached", 1_000, 3).await;
    for index in 0..2 {
        assert_eq!(field_on(&app, index, id, "stock").await, json!(3));
    }
    admin_on(
        &app,
        0,
        Method::POST,
        &format!("/api/v1/admin/products/{id}/restock"),
        &json!({"quantity": 2}),
    )
    .await;
    assert_eq!(field_on(&app, 1, id, "stock").await, json!(5));
    admin_on(
        &app,
        1,
        Method::PATCH,
        &format!("/api/v1/admin/products/{id}"),
        &json!({"status": "STOPPED"}),
    )
    .await;
    assert_eq!(listed_on(&app, 0).await, Vec::<i64>::new());
    assert_eq!(field_on(&app, 0, id, "status").await, json!("STOPPED"));
}

/// An admin token reads the database: it sees another instance's change at once, while the
/// cache (long bound) may still hold the old value for everyone else.
async fn admin_reads_bypass_the_cache(engine: Engine) {
    let app = spawn(engine, 2, LONG_BOUND).await;
    let id = app.new_product("Admin view", 1_000, 3).await;
    assert_eq!(field_on(&app, 1, id, "stock").await, json!(3));
    admin_on(
        &app,
        0,
        Method::POST,
        &format!("/api/v1/admin/products/{id}/restock"),
        &json!({"quantity": 4}),
    )
    .await;
    let token = app.admin_token().await;
    let seen = app
        .request_on(1, Method::GET, &format!("/api/v1/products/{id}"))
        .bearer_auth(&token)
        .fetch()
        .await
        .json(200);
    assert_eq!(seen["stock"], json!(7), "an admin read on the other instance");
    let page = app
        .request_on(1, Method::GET, "/api/v1/products")
        .bearer_auth(&token)
        .fetch()
        .await
        .json(200);
    assert_eq!(
        page["items"][0]["stock"],
        json!(7),
        "an admin list on the other instance"
    );
}

/// Three instances on one PostgreSQL database with a 60 s bound: every change written through
/// one instance (price, restock, payments from all three, refund, stop) reaches the others'
/// caches by notification within a few seconds; afterwards every instance shows what the
/// database holds.
async fn changes_reach_three_instances_by_notification_long_before_the_bound(engine: Engine) {
    const WITHIN: Duration = Duration::from_secs(5);
    let app = spawn(engine, 3, LONG_BOUND).await;
    let id = app.new_product("Drop", 30_000, 100).await;
    for index in 0..3 {
        assert_eq!(field_on(&app, index, id, "stock").await, json!(100));
        assert_eq!(listed_on(&app, index).await, vec![id]);
    }

    let since = Instant::now();
    admin_on(
        &app,
        0,
        Method::PATCH,
        &format!("/api/v1/admin/products/{id}"),
        &json!({"price": 25_000}),
    )
    .await;
    for index in 1..3 {
        wait_for_field(&app, index, id, "price", &json!(25_000), since, WITHIN).await;
    }

    let since = Instant::now();
    admin_on(
        &app,
        2,
        Method::POST,
        &format!("/api/v1/admin/products/{id}/restock"),
        &json!({"quantity": 50}),
    )
    .await;
    for index in 0..2 {
        wait_for_field(&app, index, id, "stock", &json!(150), since, WITHIN).await;
    }

    // Payments on every instance at once.
    let users = app.create_users(6).await;
    app.fund_all(&users, 1_000_000).await;
    let since = Instant::now();
    let buys = users
        .iter()
        .enumerate()
        .map(|(n, user)| buy_on(&app, n % 3, user, id, 2));
    let orders = futures_util::future::join_all(buys).await;
    for index in 0..3 {
        wait_for_field(&app, index, id, "stock", &json!(138), since, WITHIN).await;
    }

    let since = Instant::now();
    app.refund_on(1, &users[0], orders[0]).await.expect_status(200);
    for index in [0, 2] {
        wait_for_field(&app, index, id, "stock", &json!(140), since, WITHIN).await;
    }

    let since = Instant::now();
    admin_on(
        &app,
        1,
        Method::PATCH,
        &format!("/api/v1/admin/products/{id}"),
        &json!({"status": "STOPPED"}),
    )
    .await;
    for index in [0, 2] {
        wait_for_list(&app, index, "the stop", since, WITHIN, |ids| ids.is_empty()).await;
    }

    let stock = app
        .db()
        .query_i64("select stock from product where id = $1", &[id])
        .await;
    assert_eq!(stock, 140);
    for index in 0..3 {
        assert_eq!(
            field_on(&app, index, id, "stock").await,
            json!(stock),
            "instance {index}"
        );
    }
    app.db().assert_invariants().await;
}

/// The database drops every instance's listening connection (as a restart or a network cut
/// would), and a change is written at once, while no instance listens. Each listener reconnects
/// and, since notifications may have been missed meanwhile, empties its cache: the change shows
/// on the other instance long before the 60 s bound.
async fn an_instance_whose_listener_lost_its_connection_reconnects_and_misses_nothing(engine: Engine) {
    const WITHIN: Duration = Duration::from_secs(10);
    let app = spawn(engine, 2, LONG_BOUND).await;
    let id = app.new_product("Resilient", 5_000, 8).await;
    assert_eq!(field_on(&app, 1, id, "price").await, json!(5_000));
    let listeners = "select count(pg_terminate_backend(pid)) from pg_stat_activity \
                     where datname = current_database() and query ilike 'listen%'";
    assert_eq!(app.db().query_i64(listeners, &[]).await, 2, "one listener per instance");

    let since = Instant::now();
    admin_on(
        &app,
        0,
        Method::PATCH,
        &format!("/api/v1/admin/products/{id}"),
        &json!({"price": 4_000}),
    )
    .await;
    wait_for_field(&app, 1, id, "price", &json!(4_000), since, WITHIN).await;

    // Listening again: later changes arrive by notification as before.
    let deadline = Instant::now() + WITHIN;
    while app
        .db()
        .query_i64(
            "select count(*) from pg_stat_activity where datname = current_database() and query ilike 'listen%'",
            &[],
        )
        .await
        < 2
    {
        assert!(Instant::now() < deadline, "the listeners did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let since = Instant::now();
    admin_on(
        &app,
        0,
        Method::POST,
        &format!("/api/v1/admin/products/{id}/restock"),
        &json!({"quantity": 1}),
    )
    .await;
    wait_for_field(&app, 1, id, "stock", &json!(9), since, WITHIN).await;
}
