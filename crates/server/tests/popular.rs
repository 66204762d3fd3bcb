//! Black-box tests of the best-seller list `GET /api/v1/products/popular` (`shared/API.md`;
//! `shared/DESIGN.md`, decision 5): products ranked by the quantity sold in orders paid within
//! the last `days` × 24 hours, refunds excluded, `sold_quantity` descending then `product_id`
//! ascending, with current names and prices, and no staler than
//! `ECOMMERCE_POPULAR_CACHE_SECONDS` plus one second. Each test runs on SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ecommerce_testkit::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An app whose instances cache the list for `cache_seconds` (0: no cache).
async fn spawn_app(engine: Engine, instances: usize, cache_seconds: u64) -> TestApp {
    TestApp::builder(engine)
        .instances(instances)
        .env("ECOMMERCE_POPULAR_CACHE_SECONDS", cache_seconds)
        .spawn()
        .await
}

/// The list's body; panics unless 200.
async fn popular(app: &TestApp, query: &str) -> Value {
    app.popular_on(0, query).await.expect_status(200).clone()
}

/// `(product_id, sold_quantity)` of every item, in list order, after checking that each item
/// has exactly the documented fields and that ranks run 1..n.
fn ranking(body: &Value) -> Vec<(i64, i64)> {
    let items = body["items"].as_array().expect("items is an array");
    items
        .iter()
        .enumerate()
        .map(|(position, item)| {
            let fields: BTreeSet<&str> = item
                .as_object()
                .expect("an item is an object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                fields,
                BTreeSet::from(["rank", "product_id", "name", "price", "sold_quantity"]),
                "fields of {item}"
            );
            assert_eq!(item["rank"], json!(position + 1), "ranks are positions 1..n: {body}");
            (
                item["product_id"].as_i64().expect("product_id"),
                item["sold_quantity"].as_i64().expect("sold_quantity"),
            )
        })
        .collect()
}

/// Polls `query` on instance `index` until `check` holds, at most `within` after `since`.
///
/// Polling the real processes is the point here: the rule under test is the staleness bound of
/// each instance's own cache (`ECOMMERCE_POPULAR_CACHE_SECONDS` plus one second), which only
/// the wall clock of a running instance shows; there is no background job to step.
async fn wait_for_list(
    app: &TestApp,
    index: usize,
    query: &str,
    since: Instant,
    within: Duration,
    what: &str,
    check: impl Fn(&[(i64, i64)]) -> bool,
) {
    loop {
        let body = app.popular_on(index, query).await.expect_status(200).clone();
        if check(&ranking(&body)) {
            return;
        }
        assert!(
            since.elapsed() < within,
            "instance {index}: {what} not visible within {within:?}; the list is {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

engine_tests!(
    best_sellers_are_ranked_by_quantity_then_product_id_and_unsold_products_are_absent,
    an_empty_shop_has_an_empty_list,
    names_and_prices_are_the_current_ones_not_those_of_the_sale,
    refunded_orders_no_longer_count,
    days_must_be_1_to_30_and_limit_1_to_50_else_validation_failed,
    by_default_the_list_covers_3_days_and_holds_5_items,
    only_sales_of_the_last_days_times_24_hours_count,
    with_a_2_second_cache_payments_and_refunds_show_within_3_seconds_on_every_instance,
    with_the_cache_at_0_every_change_shows_at_once,
);

async fn best_sellers_are_ranked_by_quantity_then_product_id_and_unsold_products_are_absent(engine: Engine) {
    let app = spawn_app(engine, 1, 0).await;
    let p = app.new_products(6).await;
    let alice = app.buyer().await;
    let bob = app.buyer().await;
    // p[2] reaches 5 first, p[1] ties with it later: the tie goes to the smaller id.
    app.buy(&alice, &[(p[2], 5)]).await;
    app.buy(&alice, &[(p[0], 2), (p[1], 3)]).await;
    app.buy(&bob, &[(p[1], 2), (p[3], 1)]).await;
    app.buy(&bob, &[(p[5], 3)]).await;
    // p[4] is ordered but never paid: it has no sale.
    app.post(
        &format!("/api/v1/users/{}/orders", bob.id),
        Some(&bob.token),
        &json!({"items": [{"product_id": p[4], "quantity": 9}]}),
    )
    .await
    .expect_status(201);

    let body = popular(&app, "?days=1&limit=50").await;
    assert_eq!(body["days"], json!(1), "{body}");
    assert_eq!(
        ranking(&body),
        vec![(p[1], 5), (p[2], 5), (p[5], 3), (p[0], 2), (p[3], 1)],
        "{body}"
    );
    let first = &body["items"][0];
    assert_eq!(
        (first["name"].as_str(), first["price"].as_i64()),
        (Some("P2"), Some(1_000))
    );
    // `limit` cuts the same ranking.
    let top_two = popular(&app, "?days=1&limit=2").await;
    assert_eq!(ranking(&top_two), vec![(p[1], 5), (p[2], 5)], "{top_two}");
}

async fn an_empty_shop_has_an_empty_list(engine: Engine) {
    let app = spawn_app(engine, 1, 0).await;
    app.new_products(2).await;
    let body = popular(&app, "").await;
    assert_eq!(body, json!({"days": 3, "items": []}));
}

async fn names_and_prices_are_the_current_ones_not_those_of_the_sale(engine: Engine) {
    let app = spawn_app(engine, 1, 0).await;
    let p = app.new_products(1).await;
    let user = app.buyer().await;
    app.buy(&user, &[(p[0], 2)]).await;
    app.patch_product(p[0], &json!({"name": "Renamed coat", "price": 2_500}))
        .await
        .expect_status(200);
    let body = popular(&app, "").await;
    assert_eq!(ranking(&body), vec![(p[0], 2)], "{body}");
    assert_eq!(body["items"][0]["name"], json!("Renamed coat"), "{body}");
    assert_eq!(body["items"][0]["price"], json!(2_500), "{body}");
}

async fn refunded_orders_no_longer_count(engine: Engine) {
    let app = spawn_app(engine, 1, 0).await;
    let p = app.new_products(2).await;
    let user = app.buyer().await;
    let three = app.buy(&user, &[(p[0], 3)]).await;
    let two = app.buy(&user, &[(p[0], 2)]).await;
    app.buy(&user, &[(p[1], 4)]).await;
    assert_eq!(ranking(&popular(&app, "").await), vec![(p[0], 5), (p[1], 4)]);

    app.refund_ok(&user, two).await;
    assert_eq!(ranking(&popular(&app, "").await), vec![(p[1], 4), (p[0], 3)]);
    app.refund_ok(&user, three).await;
    assert_eq!(
        ranking(&popular(&app, "").await),
        vec![(p[1], 4)],
        "a product whose every sale was refunded leaves the list"
    );
}

async fn days_must_be_1_to_30_and_limit_1_to_50_else_validation_failed(engine: Engine) {
    let app = spawn_app(engine, 1, 0).await;
    for query in [
        "?days=0",
        "?days=31",
        "?days=-1",
        "?days=abc",
        "?days=1.5",
        "?days=3x",
        "?days=99999999999999999999",
        "?limit=0",
        "?limit=51",
        "?limit=-5",
        "?limit=ten",
        "?limit=2.0",
        "?days=3&limit=51",
        "?days=31&limit=5",
    ] {
        app.popular_on(0, query).await.assert_problem(400, "VALIDATION_FAILED");
    }
    for (query, days) in [
        ("?days=1", 1),
        ("?days=30", 30),
        ("?limit=1", 3),
        ("?limit=50", 3),
        ("?days=30&limit=50", 30),
    ] {
        let body = popular(&app, query).await;
        assert_eq!(body["days"], json!(days), "{query}: {body}");
    }
}

async fn by_default_the_list_covers_3_days_and_holds_5_items(engine: Engine) {
    let app = spawn_app(engine, 1, 0).await;
    let p = app.new_products(6).await;
    let user = app.buyer().await;
    let lines: Vec<(i64, i64)> = p.iter().zip([6, 5, 4, 3, 2, 1]).map(|(id, q)| (*id, q)).collect();
    app.buy(&user, &lines).await;
    let body = popular(&app, "").await;
    assert_eq!(body["days"], json!(3), "{body}");
    assert_eq!(
        ranking(&body),
        vec![(p[0], 6), (p[1], 5), (p[2], 4), (p[3], 3), (p[4], 2)],
        "five items, the sixth best seller left out: {body}"
    );
}

/// Sales older than the window are put straight into the hourly aggregate
/// (`product_sales_hourly`, `hour` = hours since the Unix epoch): the server has no clock
/// to move.
async fn only_sales_of_the_last_days_times_24_hours_count(engine: Engine) {
    let app = spawn_app(engine, 1, 0).await;
    let p = app.new_products(3).await;
    let user = app.buyer().await;
    app.buy(&user, &[(p[0], 1)]).await;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let this_hour = now_ms / 3_600_000;
    let insert = "insert into product_sales_hourly (hour, product_id, quantity) values ($1, $2, $3) returning quantity";
    // Two days ago: inside 3 days, outside 1 day.
    app.db().query_i64(insert, &[this_hour - 48, p[1], 7]).await;
    // Four days ago: outside 3 days, inside 5 days.
    app.db().query_i64(insert, &[this_hour - 96, p[2], 100]).await;

    assert_eq!(ranking(&popular(&app, "?days=1").await), vec![(p[0], 1)]);
    assert_eq!(ranking(&popular(&app, "?days=3").await), vec![(p[1], 7), (p[0], 1)]);
    assert_eq!(
        ranking(&popular(&app, "?days=5").await),
        vec![(p[2], 100), (p[1], 7), (p[0], 1)]
    );
}

async fn with_a_2_second_cache_payments_and_refunds_show_within_3_seconds_on_every_instance(engine: Engine) {
    let app = spawn_app(engine, 2, 2).await;
    let p = app.new_products(1).await;
    let user = app.buyer().await;
    app.buy(&user, &[(p[0], 1)]).await;
    // Fill both caches with the current list.
    for index in 0..2 {
        wait_for_list(
            &app,
            index,
            "",
            Instant::now(),
            Duration::from_secs(3),
            "the first sale",
            |list| list == [(p[0], 1)],
        )
        .await;
    }

    let order = app.buy(&user, &[(p[0], 2)]).await;
    let paid_at = Instant::now();
    for index in 0..2 {
        wait_for_list(&app, index, "", paid_at, Duration::from_secs(3), "a payment", |list| {
            list == [(p[0], 3)]
        })
        .await;
    }

    app.refund_ok(&user, order).await;
    let refunded_at = Instant::now();
    for index in 0..2 {
        wait_for_list(
            &app,
            index,
            "",
            refunded_at,
            Duration::from_secs(3),
            "a refund",
            |list| list == [(p[0], 1)],
        )
        .await;
    }
}

async fn with_the_cache_at_0_every_change_shows_at_once(engine: Engine) {
    let app = spawn_app(engine, 2, 0).await;
    let p = app.new_products(2).await;
    let user = app.buyer().await;
    app.buy(&user, &[(p[0], 1)]).await;
    for index in 0..2 {
        let body = app.popular_on(index, "").await.expect_status(200).clone();
        assert_eq!(ranking(&body), vec![(p[0], 1)], "instance {index}: {body}");
    }
    let order = app.buy(&user, &[(p[1], 2)]).await;
    for index in 0..2 {
        let body = app.popular_on(index, "").await.expect_status(200).clone();
        assert_eq!(ranking(&body), vec![(p[1], 2), (p[0], 1)], "instance {index}: {body}");
    }
    app.refund_ok(&user, order).await;
    for index in 0..2 {
        let body = app.popular_on(index, "").await.expect_status(200).clone();
        assert_eq!(ranking(&body), vec![(p[0], 1)], "instance {index}: {body}");
    }
}
