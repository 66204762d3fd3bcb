//! Limited drops, part 1 (contract v2, "Limited drops"): scheduled release and `max_per_user` on
//! products, issue windows on coupons. Every rule on both engines, the races with three instances
//! on one PostgreSQL database, checked in the database afterwards.

use std::collections::BTreeMap;

use ecommerce_testkit::*;
use futures_util::future::join_all;

const HOUR_MS: i64 = 3_600_000;

/// An instant `offset_ms` from now, RFC 3339.
fn from_now(offset_ms: i64) -> String {
    rfc3339_at(now_millis() + offset_ms)
}

/// How many answers had each `status code` (`"200"`, `"409 PURCHASE_LIMIT_EXCEEDED"`).
fn tally(responses: &[TestResponse]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for response in responses {
        let key = if response.status < 400 {
            response.status.to_string()
        } else {
            let code = response.body["code"].as_str().unwrap_or("<no code>");
            response.assert_problem(response.status, code);
            format!("{} {code}", response.status)
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

fn counts(expected: &[(&str, usize)]) -> BTreeMap<String, usize> {
    expected.iter().map(|(key, count)| (key.to_string(), *count)).collect()
}

/// Units of `product` in `user`'s PAID orders, and the user's purchase tally of it.
async fn paid_and_tallied(app: &TestApp, user: i64, product: i64) -> (i64, i64) {
    let paid = app
        .db()
        .query_i64(
            "select coalesce(sum(l.quantity), 0) from order_line l join purchase_order o on o.id = l.order_id \
             where o.status = 'PAID' and o.user_id = $1 and l.product_id = $2",
            &[user, product],
        )
        .await;
    let tallied = app
        .db()
        .query_i64(
            "select coalesce(sum(quantity), 0) from purchase_tally where user_id = $1 and product_id = $2",
            &[user, product],
        )
        .await;
    (paid, tallied)
}

engine_tests!(
    products_answer_sale_starts_at_and_max_per_user_everywhere,
    patch_sets_clears_or_leaves_the_drop_fields,
    bad_drop_fields_are_validation_failed_and_change_nothing,
    an_unreleased_product_exists_only_for_admins,
    a_product_scheduled_again_leaves_carts_and_best_sellers_until_its_release,
    a_scheduled_product_is_released_at_its_instant_with_no_job,
    order_creation_counts_paid_units_against_max_per_user,
    order_creation_errors_come_in_contract_order,
    payment_checks_the_limit_again_and_a_refund_gives_it_back,
    payment_errors_come_in_contract_order,
    a_lowered_limit_refuses_only_the_next_purchases,
    a_limit_set_later_counts_what_was_bought_before,
    coupons_answer_their_issue_window_everywhere,
    bad_issue_windows_are_validation_failed,
    issuing_outside_the_window_is_not_issuable,
    coupon_issue_errors_come_in_contract_order_also_once_sold_out,
    the_coupon_list_leaves_out_ended_windows_and_keeps_future_ones,
    a_sold_out_product_refuses_payments_without_a_write_until_restocked_or_refunded,
    the_sold_out_gate_keeps_the_contracts_order_of_errors,
);

// ---------------------------------------------------------------------------------------------
// Product fields
// ---------------------------------------------------------------------------------------------

async fn products_answer_sale_starts_at_and_max_per_user_everywhere(app: TestApp) {
    let plain = app.create_product("Plain", 1_000, 5).await;
    assert_eq!(plain["sale_starts_at"], Value::Null, "{plain}");
    assert_eq!(plain["max_per_user"], Value::Null, "{plain}");

    let starts = rfc3339_at(now_millis() - HOUR_MS);
    let body = json!({"name": "Drop", "price": 1_000, "stock": 5, "sale_starts_at": starts, "max_per_user": 2});
    let created = app.create_product_with(&body).await.json(201);
    assert_eq!(created["max_per_user"], json!(2));
    assert_eq!(millis(&created["sale_starts_at"]), millis(&json!(starts)));
    let id = id_of(&created);

    assert_eq!(app.product(id).await.json(200), created, "the detail");
    let listed = app.list_products("").await.json(200);
    let in_list = items(&listed).iter().find(|p| id_of(p) == id).expect("listed");
    assert_eq!(in_list, &created, "the list");
    let restocked = app.restock(id, 1).await.json(200);
    assert_eq!(
        (&restocked["sale_starts_at"], &restocked["max_per_user"]),
        (&created["sale_starts_at"], &json!(2))
    );
    let patched = app.patch_product(id, &json!({"name": "Drop II"})).await.json(200);
    assert_eq!(
        (&patched["sale_starts_at"], &patched["max_per_user"]),
        (&created["sale_starts_at"], &json!(2))
    );

    // Any offset is accepted; answers are UTC.
    let body = json!({"name": "Seoul", "price": 1, "stock": 1, "sale_starts_at": "2026-03-01T18:00:00+09:00"});
    let seoul = app.create_product_with(&body).await.json(201);
    assert_eq!(seoul["sale_starts_at"], json!("2026-03-01T09:00:00.000Z"));
}

async fn patch_sets_clears_or_leaves_the_drop_fields(app: TestApp) {
    let id = app.new_product("Drop", 1_000, 5).await;
    let starts = rfc3339_at(now_millis() - HOUR_MS);
    let set = app
        .patch_product(id, &json!({"sale_starts_at": starts, "max_per_user": 3}))
        .await
        .json(200);
    assert_eq!(set["max_per_user"], json!(3));
    assert_eq!(millis(&set["sale_starts_at"]), millis(&json!(starts)));

    let untouched = app.patch_product(id, &json!({"price": 2_000})).await.json(200);
    assert_eq!(
        (
            &untouched["sale_starts_at"],
            &untouched["max_per_user"],
            &untouched["price"]
        ),
        (&set["sale_starts_at"], &json!(3), &json!(2_000)),
        "absent fields are left as they are"
    );
    assert_eq!(app.patch_product(id, &json!({})).await.json(200), untouched);

    let cleared = app.patch_product(id, &json!({"max_per_user": null})).await.json(200);
    assert_eq!(
        (&cleared["sale_starts_at"], &cleared["max_per_user"]),
        (&set["sale_starts_at"], &Value::Null)
    );
    let cleared = app.patch_product(id, &json!({"sale_starts_at": null})).await.json(200);
    assert_eq!(
        (&cleared["sale_starts_at"], &cleared["max_per_user"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(app.product(id).await.json(200), cleared);
}

async fn bad_drop_fields_are_validation_failed_and_change_nothing(app: TestApp) {
    let bad = [
        json!({"max_per_user": 0}),
        json!({"max_per_user": -1}),
        json!({"max_per_user": 1_001}),
        json!({"max_per_user": 1.5}),
        json!({"max_per_user": "2"}),
        json!({"sale_starts_at": "tomorrow"}),
        json!({"sale_starts_at": "2026-12-01"}),
        json!({"sale_starts_at": "2026-12-01T10:00:00"}),
        json!({"sale_starts_at": 1_800_000_000_000i64}),
        json!({"sale_starts_at": "2026-13-01T10:00:00Z"}),
    ];
    let before = admin_product_count(&app).await;
    for fields in &bad {
        let mut body = json!({"name": "Drop", "price": 1_000, "stock": 5});
        for (key, value) in fields.as_object().expect("an object") {
            body[key] = value.clone();
        }
        app.create_product_with(&body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    assert_eq!(admin_product_count(&app).await, before, "no product was created");

    let id = app.new_drop_product(5, None, Some(4)).await;
    let product = app.product(id).await.json(200);
    for fields in &bad {
        app.patch_product(id, fields)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
        // A bad field spoils the whole patch.
        let mut with_good = fields.clone();
        with_good["price"] = json!(7);
        app.patch_product(id, &with_good)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    assert_eq!(app.product(id).await.json(200), product, "nothing changed");
    // The bounds themselves are fine.
    app.patch_product(id, &json!({"max_per_user": 1}))
        .await
        .expect_status(200);
    app.patch_product(id, &json!({"max_per_user": 1_000}))
        .await
        .expect_status(200);
}

/// Products on sale as an admin lists them (unreleased ones too).
async fn admin_product_count(app: &TestApp) -> usize {
    let admin = app.admin_token().await;
    app.all_pages("/api/v1/products", Some(&admin), 100).await.len()
}

// ---------------------------------------------------------------------------------------------
// Scheduled release
// ---------------------------------------------------------------------------------------------

async fn an_unreleased_product_exists_only_for_admins(app: TestApp) {
    let released = app.new_product("Released", 1_000, 5).await;
    let later = from_now(HOUR_MS);
    let unreleased = app.new_drop_product(5, Some(&later), Some(1)).await;
    let user = app.buyer().await;
    let admin = app.admin_token().await;

    // Anyone without an admin token: it does not exist.
    app.product(unreleased).await.assert_problem(404, "PRODUCT_NOT_FOUND");
    app.product_as(unreleased, Some(&user.token))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    let public: Vec<i64> = app
        .all_pages("/api/v1/products", None, 100)
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(public, vec![released]);
    let as_user: Vec<i64> = app
        .all_pages("/api/v1/products", Some(&user.token), 100)
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(as_user, vec![released]);
    app.put_item(&user, unreleased, 1)
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.create_order(&user, &lines_body(&[(unreleased, 1)]))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.create_order(&user, &lines_body(&[(released, 1), (unreleased, 1)]))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    assert!(items(&app.cart(&user).await).is_empty(), "nothing was carted");
    assert!(
        items(&app.orders(&user, "").await.json(200)).is_empty(),
        "nothing was ordered"
    );
    let public_read = app.list_products("").await;
    assert!(!public_read.text.contains("Limited sneaker"), "{}", public_read.text);
    assert_eq!(public_read.header("cache-control"), Some("no-cache"));

    // An admin sees it in the list and the detail, and such answers are kept by nobody.
    let detail = app.product_as(unreleased, Some(&admin)).await;
    assert_eq!(id_of(detail.expect_status(200)), unreleased);
    assert_eq!(millis(&detail.body["sale_starts_at"]), millis(&json!(later)));
    assert_eq!(detail.header("cache-control"), Some("private, no-store"));
    let listed = app.get("/api/v1/products", Some(&admin)).await;
    assert_eq!(ids(listed.expect_status(200)), vec![released, unreleased]);
    assert_eq!(listed.header("cache-control"), Some("private, no-store"));
    let not_found = app.product(unreleased).await;
    assert_eq!(
        not_found.header("cache-control"),
        Some("no-store"),
        "a 404 must not outlive the release"
    );

    // Released now (PATCH null): everyone sees it at once, and can buy it.
    app.patch_product(unreleased, &json!({"sale_starts_at": null}))
        .await
        .expect_status(200);
    assert_eq!(id_of(app.product(unreleased).await.expect_status(200)), unreleased);
    app.buy(&user, &[(unreleased, 1)]).await;
}

async fn a_product_scheduled_again_leaves_carts_and_best_sellers_until_its_release(app: TestApp) {
    let other = app.new_product("Other", 500, 50).await;
    let sneaker = app.new_product("Drop", 1_000, 50).await;
    let user = app.buyer().await;
    app.buy(&user, &[(sneaker, 2)]).await;
    let pending = app.new_order(&user, &[(sneaker, 1)]).await;
    app.put_item(&user, other, 1).await.expect_status(200);
    app.put_item(&user, sneaker, 3).await.expect_status(200);
    let popular = app.popular_on(0, "").await.json(200);
    assert_eq!(popular["items"][0]["product_id"], json!(sneaker), "{popular}");

    app.patch_product(sneaker, &json!({"sale_starts_at": from_now(HOUR_MS)}))
        .await
        .expect_status(200);
    // The cart hides it (and keeps it), an order from the cart leaves it out.
    let cart = app.cart(&user).await;
    assert_eq!(
        items(&cart).iter().map(|i| int(i, "product_id")).collect::<Vec<_>>(),
        vec![other]
    );
    assert_eq!(cart["total_amount"], json!(500));
    let admin = app.admin().await;
    let admin_view = app.get(&cart_path(&user), admin.bearer()).await.json(200);
    assert_eq!(
        items(&admin_view).len(),
        2,
        "an admin sees the whole cart: {admin_view}"
    );
    let from_cart = app.create_order(&user, &json!({"from_cart": true})).await.json(201);
    assert_eq!(from_cart["items"].as_array().map(Vec::len), Some(1), "{from_cart}");
    assert_eq!(from_cart["items"][0]["product_id"], json!(other));
    // Absent from the best sellers (another window, so not the answer the instance cached).
    let popular = app.popular_on(0, "?days=1&limit=5").await.json(200);
    assert!(
        !popular["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|i| i["product_id"] == json!(sneaker)),
        "{popular}"
    );
    app.patch_product(sneaker, &json!({"sale_starts_at": null}))
        .await
        .expect_status(200);
    assert_eq!(items(&app.cart(&user).await).len(), 2, "back in the cart once released");

    // The user's own orders are theirs and stay readable; a pending one can still be paid
    // (release and sale status are checked when an order is made, as its price is fixed then).
    app.patch_product(sneaker, &json!({"sale_starts_at": from_now(HOUR_MS)}))
        .await
        .expect_status(200);
    assert_eq!(app.order_status(&user, pending).await, "PENDING_PAYMENT");
    app.pay_ok(&user, pending, None).await;
    app.db().assert_invariants().await;
}

async fn a_scheduled_product_is_released_at_its_instant_with_no_job(app: TestApp) {
    let starts = from_now(2_500);
    let id = app.new_drop_product(5, Some(&starts), None).await;
    let user = app.buyer().await;
    let early = app.product(id).await;
    let early_order = app.create_order(&user, &lines_body(&[(id, 1)])).await;
    // The server answered before the instant only if we got the answers before it.
    if now_millis() < millis(&json!(starts)) {
        early.assert_problem(404, "PRODUCT_NOT_FOUND");
        early_order.assert_problem(404, "PRODUCT_NOT_FOUND");
    }
    wait_past(&json!(starts)).await;
    assert_eq!(id_of(app.product(id).await.expect_status(200)), id);
    assert_eq!(ids(app.list_products("").await.expect_status(200)), vec![id]);
    app.put_item(&user, id, 1).await.expect_status(200);
    app.buy(&user, &[(id, 1)]).await;
}

// ---------------------------------------------------------------------------------------------
// max_per_user
// ---------------------------------------------------------------------------------------------

async fn order_creation_counts_paid_units_against_max_per_user(app: TestApp) {
    let id = app.new_drop_product(100, None, Some(2)).await;
    let user = app.buyer().await;
    app.create_order(&user, &lines_body(&[(id, 3)]))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    // Pending orders do not count; only paid ones do.
    let first = app.new_order(&user, &[(id, 2)]).await;
    let second = app.new_order(&user, &[(id, 2)]).await;
    app.pay_ok(&user, first, None).await;
    app.create_order(&user, &lines_body(&[(id, 1)]))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    // The cart is not limited; ordering from it is.
    app.put_item(&user, id, 5).await.expect_status(200);
    app.create_order(&user, &json!({"from_cart": true}))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    // Another user has an allowance of their own.
    let other = app.buyer().await;
    app.buy(&other, &[(id, 2)]).await;
    assert_eq!(app.order_status(&user, second).await, "PENDING_PAYMENT");
    assert_eq!(paid_and_tallied(&app, user.id, id).await, (2, 2));
    assert_eq!(paid_and_tallied(&app, other.id, id).await, (2, 2));
    app.db().assert_invariants().await;
}

async fn order_creation_errors_come_in_contract_order(app: TestApp) {
    let user = app.buyer().await;
    let limited = app.new_drop_product(1, None, Some(1)).await;
    let stopped = app.new_drop_product(5, None, Some(1)).await;
    app.stop_product(stopped).await;
    let empty = app.new_drop_product(0, None, None).await;
    let unreleased = app.new_drop_product(5, Some(&from_now(HOUR_MS)), None).await;

    // PRODUCT_NOT_FOUND (also an unreleased product) before PRODUCT_NOT_ON_SALE.
    app.create_order(&user, &lines_body(&[(stopped, 2), (unreleased, 1)]))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.create_order(&user, &lines_body(&[(stopped, 2), (999_999, 1)]))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    // PRODUCT_NOT_ON_SALE before PURCHASE_LIMIT_EXCEEDED.
    app.create_order(&user, &lines_body(&[(limited, 2), (stopped, 2)]))
        .await
        .assert_problem(409, "PRODUCT_NOT_ON_SALE");
    // PURCHASE_LIMIT_EXCEEDED before OUT_OF_STOCK, on one line and across lines.
    app.create_order(&user, &lines_body(&[(limited, 5)]))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    app.create_order(&user, &lines_body(&[(empty, 1), (limited, 2)]))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    app.create_order(&user, &lines_body(&[(empty, 1), (limited, 1)]))
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    assert!(items(&app.orders(&user, "").await.json(200)).is_empty());
}

async fn payment_checks_the_limit_again_and_a_refund_gives_it_back(app: TestApp) {
    let id = app.new_drop_product(10, None, Some(2)).await;
    let other = app.new_product("Socks", 500, 10).await;
    let user = app.buyer().await;
    let first = app.new_order(&user, &[(id, 2)]).await;
    let second = app.new_order(&user, &[(id, 1), (other, 1)]).await;
    app.pay_ok(&user, first, None).await;
    let balance = app.balance(&user).await;

    app.pay(&user, second, None)
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    // Nothing changed: the order waits, balance, stock and tally are as they were.
    assert_eq!(app.order_status(&user, second).await, "PENDING_PAYMENT");
    assert_eq!(app.balance(&user).await, balance);
    assert_eq!((app.stock_of(id).await, app.stock_of(other).await), (8, 10));
    assert_eq!(paid_and_tallied(&app, user.id, id).await, (2, 2));
    assert_eq!(paid_and_tallied(&app, user.id, other).await, (0, 0));

    // A refund gives the allowance back.
    app.refund_ok(&user, first).await;
    assert_eq!(paid_and_tallied(&app, user.id, id).await, (0, 0));
    app.pay_ok(&user, second, None).await;
    assert_eq!(paid_and_tallied(&app, user.id, id).await, (1, 1));
    assert_eq!(paid_and_tallied(&app, user.id, other).await, (1, 1));
    app.buy(&user, &[(id, 1)]).await;
    app.create_order(&user, &lines_body(&[(id, 1)]))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    app.db().assert_invariants().await;
}

async fn payment_errors_come_in_contract_order(app: TestApp) {
    let id = app.new_drop_product(4, None, Some(2)).await;
    let user = app.buyer().await;
    let mut orders = Vec::new();
    for _ in 0..4 {
        orders.push(app.new_order(&user, &[(id, 2)]).await);
    }
    app.pay_ok(&user, orders[0], None).await;

    // Order state before the limit.
    app.cancel(&user, orders[1]).await.expect_status(200);
    app.pay(&user, orders[1], None)
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    // Coupon before the limit.
    let coupon = app.new_coupon("FIXED", 100, 10, 3_600).await;
    let user_coupon = id_of(&app.issue_ok(&user, coupon).await);
    let socks = app.new_product("Socks", 500, 10).await;
    let with_coupon = app.new_order(&user, &[(socks, 1)]).await;
    app.pay_ok(&user, with_coupon, Some(user_coupon)).await;
    app.pay(&user, orders[2], Some(user_coupon))
        .await
        .assert_problem(409, "COUPON_ALREADY_USED");
    app.pay(&user, orders[2], Some(999_999))
        .await
        .assert_problem(404, "COUPON_NOT_FOUND");
    // The limit before stock: another buyer takes the last 2 units, then the limit still wins.
    let other = app.buyer().await;
    app.buy(&other, &[(id, 2)]).await;
    assert_eq!(app.stock_of(id).await, 0);
    app.pay(&user, orders[2], None)
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    // The limit before the balance.
    let broke = app.create_user().await;
    let restocked = app.restock(id, 10).await;
    restocked.expect_status(200);
    app.fund(&broke, 2_000).await;
    let broke_first = app.new_order(&broke, &[(id, 2)]).await;
    let broke_second = app.new_order(&broke, &[(id, 2)]).await;
    app.pay_ok(&broke, broke_first, None).await;
    assert_eq!(app.balance(&broke).await, 0);
    app.pay(&broke, broke_second, None)
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    // Within the limit, stock then balance come next as before.
    let third = app.create_user().await;
    let third_order = app.new_order(&third, &[(id, 1)]).await;
    app.pay(&third, third_order, None)
        .await
        .assert_problem(409, "INSUFFICIENT_BALANCE");
    assert_eq!(
        paid_and_tallied(&app, third.id, id).await,
        (0, 0),
        "a failed payment counts nothing"
    );
    app.db().assert_invariants().await;
}

async fn a_lowered_limit_refuses_only_the_next_purchases(app: TestApp) {
    let id = app.new_drop_product(100, None, Some(3)).await;
    let heavy = app.buyer().await;
    let light = app.buyer().await;
    let bought = app.buy(&heavy, &[(id, 3)]).await;
    let pending = app.new_order(&light, &[(id, 1)]).await;
    app.patch_product(id, &json!({"max_per_user": 1}))
        .await
        .expect_status(200);

    assert_eq!(
        app.order_status(&heavy, bought).await,
        "PAID",
        "what was bought stays bought"
    );
    app.create_order(&heavy, &lines_body(&[(id, 1)]))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    app.pay_ok(&light, pending, None).await;
    app.create_order(&light, &lines_body(&[(id, 1)]))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    // A refund still works and gives back what it took.
    app.refund_ok(&heavy, bought).await;
    app.buy(&heavy, &[(id, 1)]).await;
    // Lifting the limit lets everyone buy again.
    app.patch_product(id, &json!({"max_per_user": null}))
        .await
        .expect_status(200);
    app.buy(&light, &[(id, 50)]).await;
    app.db().assert_invariants().await;
}

async fn a_limit_set_later_counts_what_was_bought_before(app: TestApp) {
    let id = app.new_product("Sneaker", 1_000, 100).await;
    let user = app.buyer().await;
    app.buy(&user, &[(id, 2)]).await;
    let pending = app.new_order(&user, &[(id, 1)]).await;
    app.patch_product(id, &json!({"max_per_user": 2}))
        .await
        .expect_status(200);
    app.create_order(&user, &lines_body(&[(id, 1)]))
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    app.pay(&user, pending, None)
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    assert_eq!(paid_and_tallied(&app, user.id, id).await, (2, 2));
}

// ---------------------------------------------------------------------------------------------
// Coupon issue windows
// ---------------------------------------------------------------------------------------------

fn windowed_coupon(total: i64, starts: Option<&str>, ends: Option<&str>) -> Value {
    let mut body = coupon_body("FIXED", 1_000, total, 3_600);
    body["issue_starts_at"] = json!(starts);
    body["issue_ends_at"] = json!(ends);
    body
}

async fn coupons_answer_their_issue_window_everywhere(app: TestApp) {
    let plain = app.create_coupon(&coupon_body("RATE", 10, 5, 60)).await.json(201);
    assert_eq!(
        (&plain["issue_starts_at"], &plain["issue_ends_at"]),
        (&Value::Null, &Value::Null)
    );

    let (starts, ends) = (from_now(-HOUR_MS), from_now(HOUR_MS));
    let created = app
        .create_coupon(&windowed_coupon(5, Some(&starts), Some(&ends)))
        .await
        .json(201);
    assert_eq!(millis(&created["issue_starts_at"]), millis(&json!(starts)));
    assert_eq!(millis(&created["issue_ends_at"]), millis(&json!(ends)));
    let id = id_of(&created);
    assert_eq!(app.coupon(id).await.json(200), created);
    let listed = app.list_coupons("").await.json(200);
    assert_eq!(items(&listed).iter().find(|c| id_of(c) == id), Some(&created));
    // Only a start, only an end.
    let only_start = app
        .create_coupon(&windowed_coupon(1, Some(&starts), None))
        .await
        .json(201);
    assert_eq!(only_start["issue_ends_at"], Value::Null);
    let only_end = app
        .create_coupon(&windowed_coupon(1, None, Some(&ends)))
        .await
        .json(201);
    assert_eq!(only_end["issue_starts_at"], Value::Null);
}

async fn bad_issue_windows_are_validation_failed(app: TestApp) {
    // One clock reading for both: two readings a millisecond apart would make them equal.
    let base = now_millis() + HOUR_MS;
    let (at, earlier) = (rfc3339_at(base), rfc3339_at(base - 1));
    let bad = [
        windowed_coupon(1, Some(&at), Some(&at)),
        windowed_coupon(1, Some(&at), Some(&earlier)),
        windowed_coupon(1, Some("soon"), None),
        windowed_coupon(1, None, Some("2026-12-01")),
        {
            let mut body = windowed_coupon(1, None, None);
            body["issue_ends_at"] = json!(12);
            body
        },
    ];
    for body in &bad {
        app.create_coupon(body).await.assert_problem(400, "VALIDATION_FAILED");
    }
    assert!(
        items(&app.list_coupons("").await.json(200)).is_empty(),
        "no coupon was created"
    );
    app.create_coupon(&windowed_coupon(1, Some(&earlier), Some(&at)))
        .await
        .expect_status(201);
}

async fn issuing_outside_the_window_is_not_issuable(app: TestApp) {
    let user = app.create_user().await;
    let future = app
        .create_coupon(&windowed_coupon(5, Some(&from_now(HOUR_MS)), None))
        .await
        .json(201);
    app.issue(&user, id_of(&future))
        .await
        .assert_problem(409, "COUPON_NOT_ISSUABLE");
    let ended = app
        .create_coupon(&windowed_coupon(
            5,
            Some(&from_now(-2 * HOUR_MS)),
            Some(&from_now(-HOUR_MS)),
        ))
        .await
        .json(201);
    app.issue(&user, id_of(&ended))
        .await
        .assert_problem(409, "COUPON_NOT_ISSUABLE");
    let open = app
        .create_coupon(&windowed_coupon(5, Some(&from_now(-HOUR_MS)), Some(&from_now(HOUR_MS))))
        .await
        .json(201);
    app.issue_ok(&user, id_of(&open)).await;
    // Refused issues took nothing.
    assert_eq!(
        int(
            app.coupon(id_of(&future)).await.expect_status(200),
            "remaining_quantity"
        ),
        5
    );
    assert_eq!(
        int(app.coupon(id_of(&ended)).await.expect_status(200), "remaining_quantity"),
        5
    );
    assert_eq!(app.all_user_coupons(&user).await.len(), 1);

    // A window that opens while we wait.
    let starts = from_now(2_000);
    let soon = id_of(
        &app.create_coupon(&windowed_coupon(5, Some(&starts), None))
            .await
            .json(201),
    );
    let early = app.issue(&user, soon).await;
    if now_millis() < millis(&json!(starts)) {
        early.assert_problem(409, "COUPON_NOT_ISSUABLE");
    }
    wait_past(&json!(starts)).await;
    app.issue_ok(&user, soon).await;
    app.db().assert_invariants().await;
}

async fn coupon_issue_errors_come_in_contract_order_also_once_sold_out(app: TestApp) {
    let (holder, late) = (app.create_user().await, app.create_user().await);
    let ends = from_now(5_000);
    let coupon = id_of(
        &app.create_coupon(&windowed_coupon(1, None, Some(&ends)))
            .await
            .json(201),
    );
    app.issue_ok(&holder, coupon).await;
    // Sold out within the window: the instance now answers this coupon from memory.
    let sold_out = app.issue(&late, coupon).await;
    let in_window = now_millis() < millis(&json!(ends));
    if in_window {
        sold_out.assert_problem(409, "COUPON_SOLD_OUT");
        app.issue(&holder, coupon)
            .await
            .assert_problem(409, "COUPON_ALREADY_ISSUED");
    }
    wait_past(&json!(ends)).await;
    // After the window: ALREADY_ISSUED → NOT_ISSUABLE → SOLD_OUT.
    app.issue(&holder, coupon)
        .await
        .assert_problem(409, "COUPON_ALREADY_ISSUED");
    app.issue(&late, coupon)
        .await
        .assert_problem(409, "COUPON_NOT_ISSUABLE");
    let admin = app.admin().await;
    let by_admin = app
        .post(
            &format!("/api/v1/users/{}/coupons", late.id),
            admin.bearer(),
            &json!({"coupon_id": coupon}),
        )
        .await;
    by_admin.assert_problem(409, "COUPON_NOT_ISSUABLE");

    // Not sold out, window not started: NOT_ISSUABLE; a holder of an ended coupon: ALREADY_ISSUED.
    let future = app
        .create_coupon(&windowed_coupon(3, Some(&from_now(HOUR_MS)), None))
        .await
        .json(201);
    app.issue(&late, id_of(&future))
        .await
        .assert_problem(409, "COUPON_NOT_ISSUABLE");
    assert_eq!(app.all_user_coupons(&late).await.len(), 0);
    app.db().assert_invariants().await;
}

async fn the_coupon_list_leaves_out_ended_windows_and_keeps_future_ones(app: TestApp) {
    let open = id_of(&app.create_coupon(&coupon_body("FIXED", 1, 5, 60)).await.json(201));
    let future = id_of(
        &app.create_coupon(&windowed_coupon(5, Some(&from_now(HOUR_MS)), None))
            .await
            .json(201),
    );
    let ended = id_of(
        &app.create_coupon(&windowed_coupon(5, None, Some(&from_now(-1))))
            .await
            .json(201),
    );
    let ends = from_now(2_000);
    let ending = id_of(
        &app.create_coupon(&windowed_coupon(5, None, Some(&ends)))
            .await
            .json(201),
    );
    let listed = ids(app.list_coupons("").await.expect_status(200));
    assert!(
        listed.contains(&open) && listed.contains(&future) && !listed.contains(&ended),
        "{listed:?}"
    );
    if now_millis() < millis(&json!(ends)) {
        assert!(listed.contains(&ending), "{listed:?}");
    }
    wait_past(&json!(ends)).await;
    assert_eq!(ids(app.list_coupons("").await.expect_status(200)), vec![future, open]);
    // Still readable by id.
    assert_eq!(id_of(app.coupon(ended).await.expect_status(200)), ended);
    // Paging counts only listed coupons.
    let first = app.list_coupons("?limit=1").await.json(200);
    assert_eq!(
        (ids(&first), first["next_after"].clone()),
        (vec![future], json!(future))
    );
}

// ---------------------------------------------------------------------------------------------
// Hot products: the sold-out gate (ECOMMERCE_CATALOG_CACHE_MS > 0)
// ---------------------------------------------------------------------------------------------

/// A single instance whose catalog facts may lag by a minute: the gate's memory never expires
/// within a test, so every refusal below comes from it.
async fn gated(engine: Engine) -> TestApp {
    TestApp::builder(engine)
        .env("ECOMMERCE_CATALOG_CACHE_MS", 60_000)
        .spawn()
        .await
}

/// Pays with no write to products possible; the answer must come without waiting for the block.
async fn pay_while_products_are_blocked(app: &TestApp, user: &TestUser, order: i64) -> TestResponse {
    let block = app.db().block_product_writes().await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), app.pay(user, order, None)).await;
    block.release().await;
    answer.expect("the payment waited for the blocked product table: it tried to write")
}

async fn a_sold_out_product_refuses_payments_without_a_write_until_restocked_or_refunded(engine: Engine) {
    let app = gated(engine).await;
    let id = app.new_drop_product(1, None, None).await;
    let (first, second, third) = (app.buyer().await, app.buyer().await, app.buyer().await);
    let first_order = app.new_order(&first, &[(id, 1)]).await;
    let second_order = app.new_order(&second, &[(id, 1)]).await;
    let third_order = app.new_order(&third, &[(id, 1)]).await;
    app.pay_ok(&first, first_order, None).await;
    // The first refusal goes to the database and teaches the instance the product is sold out.
    app.pay(&second, second_order, None)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    // From then on refusals need no write: they answer while writes to products are blocked.
    pay_while_products_are_blocked(&app, &second, second_order)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    pay_while_products_are_blocked(&app, &third, third_order)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    assert_eq!(app.order_status(&second, second_order).await, "PENDING_PAYMENT");
    let balance = app.balance(&second).await;

    // A restock makes it sellable at once on this instance.
    app.restock(id, 1).await.expect_status(200);
    app.pay_ok(&second, second_order, None).await;
    assert_eq!(app.balance(&second).await, balance - 1_000);
    app.pay(&third, third_order, None)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    pay_while_products_are_blocked(&app, &third, third_order)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    // So does a refund.
    app.refund_ok(&first, first_order).await;
    app.pay_ok(&third, third_order, None).await;
    // The console's live figures count every refusal, the gate's too (2 went to the database).
    assert_eq!(
        app.admin_live_on(0).await["payment_failures"],
        json!({"OUT_OF_STOCK": 5})
    );
    // The stock shown to readers stays the database's.
    assert_eq!(app.stock_of(id).await, 0);
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(id, 2)]).await;
}

async fn the_sold_out_gate_keeps_the_contracts_order_of_errors(engine: Engine) {
    let app = gated(engine).await;
    let id = app.new_drop_product(2, None, Some(1)).await;
    let (winner, late) = (app.buyer().await, app.buyer().await);
    let winner_second = app.new_order(&winner, &[(id, 1)]).await;
    app.buy(&winner, &[(id, 1)]).await;
    let late_order = app.new_order(&late, &[(id, 1)]).await;
    let late_cancelled = app.new_order(&late, &[(id, 1)]).await;
    let big = app.new_order(&late, &[(id, 1)]).await;
    let other = app.buyer().await;
    app.buy(&other, &[(id, 1)]).await;
    app.pay(&late, late_order, None)
        .await
        .assert_problem(409, "OUT_OF_STOCK");

    // Every error that comes before OUT_OF_STOCK still comes first.
    app.pay(&winner, winner_second, None)
        .await
        .assert_problem(409, "PURCHASE_LIMIT_EXCEEDED");
    app.cancel(&late, late_cancelled).await.expect_status(200);
    app.pay(&late, late_cancelled, None)
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    app.pay(&late, big, Some(999_999))
        .await
        .assert_problem(404, "COUPON_NOT_FOUND");
    let coupon = app.new_coupon("FIXED", 100, 10, 3_600).await;
    let their_coupon = id_of(&app.issue_ok(&other, coupon).await);
    app.pay(&late, big, Some(their_coupon))
        .await
        .assert_problem(404, "COUPON_NOT_FOUND");
    let stranger = app.create_user().await;
    app.pay(&stranger, big, None)
        .await
        .assert_problem(404, "ORDER_NOT_FOUND");
    // With an Idempotency-Key the payment runs as usual (its replays come first).
    let keyed = app.pay_with_key(&late, big, &unique_key(), &json!({})).await;
    keyed.assert_problem(409, "OUT_OF_STOCK");
    // A usable coupon and the limit allowing it: the gate's own answer.
    let own_coupon = id_of(&app.issue_ok(&late, coupon).await);
    pay_while_products_are_blocked(&app, &late, big)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    let with_coupon = {
        let block = app.db().block_product_writes().await;
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            app.pay(&late, big, Some(own_coupon)),
        )
        .await;
        block.release().await;
        answer.expect("the payment tried to write")
    };
    with_coupon.assert_problem(409, "OUT_OF_STOCK");
    app.db().assert_invariants().await;
}

// ---------------------------------------------------------------------------------------------
// Three instances on one PostgreSQL database
// ---------------------------------------------------------------------------------------------

postgres_tests!(
    one_users_pending_orders_paid_at_once_across_three_instances_stop_exactly_at_the_limit,
    a_scheduled_product_is_released_on_every_instance_at_its_instant,
    a_restocked_product_is_sellable_on_every_instance_within_the_catalog_cache_bound,
    a_gated_drop_over_three_instances_sells_exactly_its_units_however_often_buyers_press_pay,
);

const INSTANCES: usize = 3;

/// Three servers each: one race at a time keeps PostgreSQL within its connections.
static ONE_RACE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A drop with the sold-out gate on (and token checks and gate reads coalesced): 60 buyers of
/// 15 units, each pressing pay three times on three instances at once, a limit of 1 per buyer.
/// Exactly 15 are paid; every other answer is `OUT_OF_STOCK` or, for a press of a buyer who
/// has just been paid, `ORDER_NOT_PENDING`; the database agrees.
async fn a_gated_drop_over_three_instances_sells_exactly_its_units_however_often_buyers_press_pay(engine: Engine) {
    let _one = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::builder(engine)
        .instances(INSTANCES)
        .env("ECOMMERCE_CATALOG_CACHE_MS", 60_000)
        .spawn()
        .await;
    const UNITS: i64 = 15;
    let id = app.new_drop_product(UNITS, None, Some(1)).await;
    let users = app.create_users(60).await;
    app.fund_all(&users, 10_000).await;
    let mut orders = Vec::new();
    for (k, user) in users.iter().enumerate() {
        orders.push((user, id_of(&app.place_order_on(k, user, &[(id, 1)]).await)));
    }
    let mut answers = Vec::new();
    for press in 0..3 {
        answers.extend(
            join_all(
                orders
                    .iter()
                    .enumerate()
                    .map(|(k, (user, order))| app.pay_on(k + press, user, *order, None)),
            )
            .await,
        );
    }
    let counted = tally(&answers);
    assert_eq!(counted.get("200"), Some(&(UNITS as usize)), "{counted:?}");
    let refused: usize = counted
        .iter()
        .filter(|(key, _)| key.as_str() == "409 OUT_OF_STOCK" || key.as_str() == "409 ORDER_NOT_PENDING")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused + UNITS as usize, answers.len(), "no other answer: {counted:?}");
    assert_eq!(app.stock_of(id).await, 0);
    let paid_orders = app
        .db()
        .query_i64(
            "select count(*) from purchase_order o join order_line l on l.order_id = o.id \
             where o.status = 'PAID' and l.product_id = $1",
            &[id],
        )
        .await;
    assert_eq!(paid_orders, UNITS);
    for user in &users {
        let (paid, tallied) = paid_and_tallied(&app, user.id, id).await;
        assert!(
            paid <= 1 && paid == tallied,
            "user {}: {paid} paid, {tallied} tallied",
            user.id
        );
    }
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(id, UNITS)]).await;
}

async fn one_users_pending_orders_paid_at_once_across_three_instances_stop_exactly_at_the_limit(engine: Engine) {
    let _one = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::builder(engine).instances(INSTANCES).spawn().await;
    const LIMIT: i64 = 3;
    const ORDERS: usize = 12;
    let id = app.new_drop_product(1_000, None, Some(LIMIT)).await;
    let users = app.create_users(4).await;
    app.fund_all(&users, 1_000_000).await;
    // Each user: twelve pending orders of one unit (allowed: pending orders do not count),
    // and the fourth user two-unit orders (only one fits under a limit of 3).
    let mut orders = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let quantity = if n == 3 { 2 } else { 1 };
        for k in 0..ORDERS {
            orders.push((user, app.place_order_on(k, user, &[(id, quantity)]).await));
        }
    }
    let answers = join_all(
        orders
            .iter()
            .enumerate()
            .map(|(k, (user, order))| app.pay_on(k, user, id_of(order), None)),
    )
    .await;
    let expected_paid = 3 * LIMIT as usize + 1;
    assert_eq!(
        tally(&answers),
        counts(&[
            ("200", expected_paid),
            ("409 PURCHASE_LIMIT_EXCEEDED", orders.len() - expected_paid)
        ])
    );
    for (n, user) in users.iter().enumerate() {
        let expected = if n == 3 { 2 } else { LIMIT };
        assert_eq!(
            paid_and_tallied(&app, user.id, id).await,
            (expected, expected),
            "user {n}: paid units and tally"
        );
    }
    let sold = 3 * LIMIT + 2;
    assert_eq!(app.stock_of(id).await, 1_000 - sold);
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(id, 1_000)]).await;

    // A refund gives the allowance back: again at once, exactly one more of the pending orders
    // of that user is paid.
    let first = &users[0];
    let paid_order = orders
        .iter()
        .zip(&answers)
        .find(|((user, _), answer)| user.id == first.id && answer.status == 200)
        .map(|((_, order), _)| id_of(order))
        .expect("a paid order of the first user");
    app.refund_ok(first, paid_order).await;
    assert_eq!(paid_and_tallied(&app, first.id, id).await, (LIMIT - 1, LIMIT - 1));
    let pending: Vec<i64> = orders
        .iter()
        .zip(&answers)
        .filter(|((user, _), answer)| user.id == first.id && answer.status != 200)
        .map(|((_, order), _)| id_of(order))
        .collect();
    let again = join_all(
        pending
            .iter()
            .enumerate()
            .map(|(k, order)| app.pay_on(k, first, *order, None)),
    )
    .await;
    assert_eq!(
        tally(&again),
        counts(&[("200", 1), ("409 PURCHASE_LIMIT_EXCEEDED", pending.len() - 1)])
    );
    assert_eq!(paid_and_tallied(&app, first.id, id).await, (LIMIT, LIMIT));
    let over_limit = app
        .db()
        .query_i64(
            "select count(*) from purchase_tally t join product p on p.id = t.product_id \
             where t.quantity > p.max_per_user",
            &[],
        )
        .await;
    assert_eq!(over_limit, 0, "nobody holds more than the limit");
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(id, 1_000)]).await;
}

async fn a_scheduled_product_is_released_on_every_instance_at_its_instant(engine: Engine) {
    let _one = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::builder(engine).instances(INSTANCES).spawn().await;
    let starts = from_now(3_000);
    let id = app.new_drop_product(10, Some(&starts), Some(1)).await;
    let users = app.create_users(INSTANCES).await;
    app.fund_all(&users, 10_000).await;
    let early: Vec<TestResponse> = join_all((0..INSTANCES).map(|k| {
        app.request_on(k, Method::GET, &format!("/api/v1/products/{id}"))
            .fetch()
    }))
    .await;
    if now_millis() < millis(&json!(starts)) {
        for answer in &early {
            answer.assert_problem(404, "PRODUCT_NOT_FOUND");
        }
    }
    wait_past(&json!(starts)).await;
    for (k, user) in users.iter().enumerate() {
        let detail = app
            .request_on(k, Method::GET, &format!("/api/v1/products/{id}"))
            .fetch()
            .await;
        assert_eq!(id_of(detail.expect_status(200)), id, "instance {k}");
        let order = app.place_order_on(k, user, &[(id, 1)]).await;
        app.pay_on(k, user, id_of(&order), None).await.expect_status(200);
    }
    assert_eq!(app.stock_of(id).await, 10 - INSTANCES as i64);
    app.db().assert_invariants().await;
}

async fn a_restocked_product_is_sellable_on_every_instance_within_the_catalog_cache_bound(engine: Engine) {
    let _one = ONE_RACE_AT_A_TIME.lock().await;
    const BOUND_MS: i64 = 1_500;
    let app = TestApp::builder(engine)
        .instances(INSTANCES)
        .env("ECOMMERCE_CATALOG_CACHE_MS", BOUND_MS)
        .spawn()
        .await;
    let id = app.new_drop_product(3, None, None).await;
    let buyers = app.create_users(2 * INSTANCES).await;
    app.fund_all(&buyers, 10_000).await;
    let mut orders = Vec::new();
    for (k, buyer) in buyers.iter().enumerate() {
        orders.push(id_of(&app.place_order_on(k, buyer, &[(id, 1)]).await));
    }
    // Everyone pays at once: three win, and every instance learns the product is sold out.
    let answers = join_all(
        buyers
            .iter()
            .zip(&orders)
            .enumerate()
            .map(|(k, (buyer, order))| app.pay_on(k, buyer, *order, None)),
    )
    .await;
    assert_eq!(
        tally(&answers),
        counts(&[("200", INSTANCES), ("409 OUT_OF_STOCK", INSTANCES)])
    );
    let waiting: Vec<(usize, &TestUser, i64)> = buyers
        .iter()
        .zip(&orders)
        .zip(&answers)
        .filter(|(_, answer)| answer.status != 200)
        .map(|((buyer, order), _)| (buyer, *order))
        .enumerate()
        .map(|(k, (buyer, order))| (k, buyer, order))
        .collect();
    for &(k, buyer, order) in &waiting {
        app.pay_on(k, buyer, order, None)
            .await
            .assert_problem(409, "OUT_OF_STOCK");
    }
    // A restock through one instance: once the bound has passed, every instance sells again.
    let restocked_at = now_millis();
    app.restock(id, INSTANCES as i64).await.expect_status(200);
    wait_past(&json!(rfc3339_at(restocked_at + BOUND_MS))).await;
    for &(k, buyer, order) in &waiting {
        app.pay_on(k, buyer, order, None).await.expect_status(200);
    }
    assert_eq!(app.stock_of(id).await, 0);
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(&[(id, 3 + INSTANCES as i64)]).await;
}
