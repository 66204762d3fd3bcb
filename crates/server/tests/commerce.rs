//! Black-box tests of the commerce part of the HTTP contract (`shared/API.md`): the cart,
//! coupons, orders, payment, cancel, refund and expiry. Each test runs on SQLite and on
//! PostgreSQL against the real binary; where the contract says "nothing changes", the test
//! compares everything the user can see (and the outbox) before and after.

use ecommerce_domain::Timestamp;
use ecommerce_testkit::*;

mod steps;

// ---------------------------------------------------------------------------------------------
// Small helpers local to these tests
// ---------------------------------------------------------------------------------------------

/// A product id no test creates.
const UNKNOWN_ID: i64 = 987_654_321;

// ----- cart -----------------------------------------------------------------------------------

/// `(product_id, quantity)` of every cart line, in cart order.
fn cart_lines(cart: &Value) -> Vec<(i64, i64)> {
    items(cart)
        .iter()
        .map(|item| (int(item, "product_id"), int(item, "quantity")))
        .collect()
}

// ----- orders ---------------------------------------------------------------------------------

/// Rows of the outbox for the order with this event type, straight from the database.
async fn outbox_rows(app: &TestApp, order_id: i64, event_type: &str) -> i64 {
    let sql = match event_type {
        "order.paid" => "select count(*) from outbox where order_id = $1 and event_type = 'order.paid'",
        "order.refunded" => "select count(*) from outbox where order_id = $1 and event_type = 'order.refunded'",
        other => panic!("unknown event type {other}"),
    };
    app.db().query_i64(sql, &[order_id]).await
}

/// Checks a just-made order of these `(product_id, unit_price, quantity)` lines.
fn assert_pending_order(order: &Value, user: &TestUser, lines: &[(i64, i64, i64)]) {
    assert!(id_of(order) > 0, "positive order id in {order}");
    assert_eq!(order["user_id"], json!(user.id), "user_id in {order}");
    assert_eq!(order["status"], json!("PENDING_PAYMENT"), "status in {order}");
    let got: Vec<(i64, i64, i64, i64)> = items(order)
        .iter()
        .map(|item| {
            assert!(item["name"].is_string(), "a line name in {order}");
            (
                int(item, "product_id"),
                int(item, "unit_price"),
                int(item, "quantity"),
                int(item, "amount"),
            )
        })
        .collect();
    let expected: Vec<(i64, i64, i64, i64)> = lines
        .iter()
        .map(|&(product, price, quantity)| (product, price, quantity, price * quantity))
        .collect();
    assert_eq!(got, expected, "order lines in request order: {order}");
    let total: i64 = expected.iter().map(|line| line.3).sum();
    assert_eq!(order["total_amount"], json!(total), "total_amount in {order}");
    assert_eq!(order["discount_amount"], json!(0), "discount before payment in {order}");
    assert_eq!(order["paid_amount"], json!(0), "paid_amount before payment in {order}");
    assert_eq!(
        order["user_coupon_id"],
        Value::Null,
        "no coupon before payment in {order}"
    );
    assert_eq!(order["paid_at"], Value::Null, "paid_at before payment in {order}");
    assert!(millis(&order["expires_at"]) > millis(&order["created_at"]));
}

// ----- "nothing changed" ---------------------------------------------------------------------

/// Everything a failed payment must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    balance: i64,
    history: Vec<Value>,
    stocks: Vec<(i64, i64)>,
    user_coupons: Vec<Value>,
    cart: Value,
    order: Value,
    paid_events: i64,
}

async fn snapshot(app: &TestApp, user: &TestUser, order_id: i64, products: &[i64]) -> Snapshot {
    let mut stocks = Vec::new();
    for &product in products {
        stocks.push((product, app.stock_of(product).await));
    }
    let order = app.order(user, order_id).await.expect_status(200).clone();
    Snapshot {
        balance: app.balance(user).await,
        history: app.history(user).await,
        stocks,
        user_coupons: app.all_user_coupons(user).await,
        cart: app.cart(user).await,
        order,
        paid_events: outbox_rows(app, order_id, "order.paid").await,
    }
}

async fn assert_nothing_changed(
    app: &TestApp,
    user: &TestUser,
    order_id: i64,
    products: &[i64],
    before: &Snapshot,
    after_what: &str,
) {
    let after = snapshot(app, user, order_id, products).await;
    assert_eq!(&after, before, "a failed payment ({after_what}) must change nothing");
    assert_eq!(after.order["status"], json!("PENDING_PAYMENT"));
}

// ---------------------------------------------------------------------------------------------
// Cart
// ---------------------------------------------------------------------------------------------

engine_tests!(
    a_new_users_cart_is_empty,
    put_sets_the_quantity_and_answers_the_whole_cart_with_current_price_stock_and_amounts,
    cart_quantity_must_be_1_to_1000,
    cart_items_keep_the_order_of_first_add_and_a_re_added_item_goes_to_the_end,
    deleting_an_item_that_is_not_in_the_cart_answers_204_and_deleting_the_cart_empties_it,
    carting_an_unknown_product_is_404_and_a_stopped_one_is_409,
    another_users_cart_is_403_and_an_admin_may_read_it,
    an_admin_addressing_an_unknown_user_gets_404_and_malformed_ids_are_400,
    the_cart_follows_the_user_across_tokens,
);

async fn a_new_users_cart_is_empty(app: TestApp) {
    let user = app.create_user().await;
    assert_eq!(app.cart(&user).await, json!({"items": [], "total_amount": 0}));
}

async fn put_sets_the_quantity_and_answers_the_whole_cart_with_current_price_stock_and_amounts(app: TestApp) {
    let user = app.create_user().await;
    let shirt = app.new_product("Shirt", 1000, 5).await;
    let coat = app.new_product("Coat", 2500, 3).await;

    let cart = app.put_item(&user, shirt, 2).await.expect_status(200).clone();
    assert_eq!(
        cart,
        json!({"items": [
            {"product_id": shirt, "name": "Shirt", "price": 1000, "stock": 5, "quantity": 2, "amount": 2000}
        ], "total_amount": 2000})
    );

    // More than the stock is allowed in a cart; the cart shows the stock.
    let cart = app.put_item(&user, coat, 7).await.expect_status(200).clone();
    assert_eq!(
        cart,
        json!({"items": [
            {"product_id": shirt, "name": "Shirt", "price": 1000, "stock": 5, "quantity": 2, "amount": 2000},
            {"product_id": coat, "name": "Coat", "price": 2500, "stock": 3, "quantity": 7, "amount": 17500}
        ], "total_amount": 19500})
    );

    // PUT sets (does not add) and keeps the line where it was first added.
    let cart = app.put_item(&user, shirt, 4).await.expect_status(200).clone();
    assert_eq!(cart_lines(&cart), vec![(shirt, 4), (coat, 7)]);
    assert_eq!(cart["total_amount"], json!(4000 + 17500));

    // Prices and stock shown are the current ones.
    app.patch_product(shirt, &json!({"price": 1200}))
        .await
        .expect_status(200);
    app.restock(coat, 2).await.expect_status(200);
    let cart = app.cart(&user).await;
    assert_eq!(
        cart,
        json!({"items": [
            {"product_id": shirt, "name": "Shirt", "price": 1200, "stock": 5, "quantity": 4, "amount": 4800},
            {"product_id": coat, "name": "Coat", "price": 2500, "stock": 5, "quantity": 7, "amount": 17500}
        ], "total_amount": 22300})
    );
}

async fn cart_quantity_must_be_1_to_1000(app: TestApp) {
    let user = app.create_user().await;
    let product = app.new_product("Socks", 100, 10).await;
    for quantity in [0, -1, 1001, i64::MAX] {
        app.put_item(&user, product, quantity)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    let path = cart_item_path(&user, product);
    for raw in [
        r#"{"quantity": 1.5}"#,
        r#"{"quantity": "2"}"#,
        r#"{}"#,
        r#"{"quantity": null}"#,
        "{",
    ] {
        app.send_raw(Method::PUT, &path, user.bearer(), raw)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    // The shape is checked before the product's existence.
    app.put_item(&user, UNKNOWN_ID, 0)
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(cart_lines(&app.cart(&user).await), vec![]);

    let cart = app.put_item(&user, product, 1000).await.expect_status(200).clone();
    assert_eq!(cart_lines(&cart), vec![(product, 1000)]);
    let cart = app.put_item(&user, product, 1).await.expect_status(200).clone();
    assert_eq!(cart_lines(&cart), vec![(product, 1)]);
}

async fn cart_items_keep_the_order_of_first_add_and_a_re_added_item_goes_to_the_end(app: TestApp) {
    let user = app.create_user().await;
    // Created in id order c < b < a, added a, b, c: the cart follows adding, not ids.
    let c = app.new_product("C", 300, 10).await;
    let b = app.new_product("B", 200, 10).await;
    let a = app.new_product("A", 100, 10).await;
    app.put_item(&user, a, 1).await.expect_status(200);
    app.put_item(&user, b, 2).await.expect_status(200);
    let cart = app.put_item(&user, c, 3).await.expect_status(200).clone();
    assert_eq!(cart_lines(&cart), vec![(a, 1), (b, 2), (c, 3)]);

    let removed = app.remove_item(&user, a).await;
    assert_eq!(removed.status, 204, "DELETE item answers 204, got {}", removed.text);
    assert_eq!(cart_lines(&app.cart(&user).await), vec![(b, 2), (c, 3)]);

    let cart = app.put_item(&user, a, 5).await.expect_status(200).clone();
    assert_eq!(cart_lines(&cart), vec![(b, 2), (c, 3), (a, 5)]);
    assert_eq!(cart["total_amount"], json!(400 + 900 + 500));
}

async fn deleting_an_item_that_is_not_in_the_cart_answers_204_and_deleting_the_cart_empties_it(app: TestApp) {
    let user = app.create_user().await;
    let a = app.new_product("A", 100, 10).await;
    let b = app.new_product("B", 200, 10).await;
    app.put_item(&user, a, 1).await.expect_status(200);

    let absent = app.remove_item(&user, b).await;
    assert_eq!(
        absent.status, 204,
        "DELETE of an absent item answers 204, got {}",
        absent.text
    );
    let again = app.remove_item(&user, b).await;
    assert_eq!(again.status, 204, "got {}", again.text);
    assert_eq!(cart_lines(&app.cart(&user).await), vec![(a, 1)]);

    app.put_item(&user, b, 2).await.expect_status(200);
    let cleared = app.delete(&cart_path(&user), user.bearer()).await;
    assert_eq!(cleared.status, 204, "DELETE cart answers 204, got {}", cleared.text);
    assert_eq!(app.cart(&user).await, json!({"items": [], "total_amount": 0}));
    let cleared_again = app.delete(&cart_path(&user), user.bearer()).await;
    assert_eq!(
        cleared_again.status, 204,
        "DELETE of an empty cart answers 204, got {}",
        cleared_again.text
    );
}

async fn carting_an_unknown_product_is_404_and_a_stopped_one_is_409(app: TestApp) {
    let user = app.create_user().await;
    let kept = app.new_product("Kept", 100, 10).await;
    let stopped = app.new_product("Stopped", 100, 10).await;
    app.put_item(&user, kept, 1).await.expect_status(200);
    app.stop_product(stopped).await;

    app.put_item(&user, UNKNOWN_ID, 1)
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.put_item(&user, stopped, 1)
        .await
        .assert_problem(409, "PRODUCT_NOT_ON_SALE");
    assert_eq!(cart_lines(&app.cart(&user).await), vec![(kept, 1)]);
}

async fn another_users_cart_is_403_and_an_admin_may_read_it(app: TestApp) {
    let owner = app.create_user().await;
    let intruder = app.create_user().await;
    let product = app.new_product("A", 100, 10).await;
    app.put_item(&owner, product, 3).await.expect_status(200);

    app.get(&cart_path(&owner), intruder.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    app.put(
        &cart_item_path(&owner, product),
        intruder.bearer(),
        &json!({"quantity": 9}),
    )
    .await
    .assert_problem(403, "FORBIDDEN");
    app.delete(&cart_item_path(&owner, product), intruder.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    app.delete(&cart_path(&owner), intruder.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    app.get(&cart_path(&owner), None)
        .await
        .assert_problem(401, "UNAUTHORIZED");
    app.put(&cart_item_path(&owner, product), None, &json!({"quantity": 9}))
        .await
        .assert_problem(401, "UNAUTHORIZED");

    assert_eq!(cart_lines(&app.cart(&owner).await), vec![(product, 3)]);
    let admin = app.admin().await.clone();
    let seen_by_admin = app.get(&cart_path(&owner), admin.bearer()).await;
    assert_eq!(cart_lines(seen_by_admin.expect_status(200)), vec![(product, 3)]);
}

async fn an_admin_addressing_an_unknown_user_gets_404_and_malformed_ids_are_400(app: TestApp) {
    let admin = app.admin().await.clone();
    let user = app.create_user().await;
    let product = app.new_product("A", 100, 10).await;
    let unknown = UNKNOWN_ID;
    app.get(&format!("/api/v1/users/{unknown}/cart"), admin.bearer())
        .await
        .assert_problem(404, "USER_NOT_FOUND");
    app.get(&format!("/api/v1/users/{unknown}/orders"), admin.bearer())
        .await
        .assert_problem(404, "USER_NOT_FOUND");
    app.get(&format!("/api/v1/users/{unknown}/coupons"), admin.bearer())
        .await
        .assert_problem(404, "USER_NOT_FOUND");
    // A user addressing another user's path is 403 whether or not that user exists.
    app.get(&format!("/api/v1/users/{unknown}/cart"), user.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    for bad in ["0", "-3", "abc"] {
        app.put(
            &format!("/api/v1/users/{}/cart/items/{bad}", user.id),
            user.bearer(),
            &json!({"quantity": 1}),
        )
        .await
        .assert_problem(400, "VALIDATION_FAILED");
        app.post_empty(&format!("/api/v1/orders/{bad}/payment"), user.bearer())
            .await
            .assert_problem(400, "VALIDATION_FAILED");
        app.post_empty(&format!("/api/v1/orders/{bad}/cancel"), user.bearer())
            .await
            .assert_problem(400, "VALIDATION_FAILED");
        app.post_empty(&format!("/api/v1/orders/{bad}/refund"), user.bearer())
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    assert_eq!(cart_lines(&app.cart(&user).await), vec![]);
    app.put_item(&user, product, 1).await.expect_status(200);
}

async fn the_cart_follows_the_user_across_tokens(app: TestApp) {
    let phone = app.create_user().await;
    let laptop = app.log_in(&phone.email, &phone.password).await;
    assert_eq!(laptop.id, phone.id);
    let a = app.new_product("A", 100, 10).await;
    let b = app.new_product("B", 200, 10).await;

    app.put_item(&phone, a, 2).await.expect_status(200);
    app.put_item(&laptop, b, 1).await.expect_status(200);
    let seen_on_phone = app.cart(&phone).await;
    let seen_on_laptop = app.cart(&laptop).await;
    assert_eq!(cart_lines(&seen_on_phone), vec![(a, 2), (b, 1)]);
    assert_eq!(seen_on_phone, seen_on_laptop);

    app.remove_item(&laptop, a).await;
    assert_eq!(cart_lines(&app.cart(&phone).await), vec![(b, 1)]);
}

// ---------------------------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------------------------

engine_tests!(
    a_direct_order_answers_201_with_location_and_lines_in_request_order,
    direct_orders_need_1_to_50_distinct_lines_of_1_to_1000,
    an_order_takes_exactly_one_of_items_and_from_cart_true,
    an_order_from_the_cart_has_the_cart_lines_in_cart_order_and_leaves_the_cart_as_it_was,
    an_order_from_an_empty_cart_is_400_cart_empty,
    an_order_keeps_the_prices_of_the_moment_it_was_made,
    stock_is_checked_but_not_reserved_so_the_second_payment_is_out_of_stock,
    ordering_unknown_stopped_or_scarce_products_fails_with_404_before_409,
    an_order_from_a_cart_holding_a_stopped_or_scarce_product_is_409,
    orders_are_listed_newest_first_paged_and_filtered_by_status,
    another_users_order_is_404_on_every_route_and_an_admin_may_read_and_refund_it,
);

async fn a_direct_order_answers_201_with_location_and_lines_in_request_order(app: TestApp) {
    let user = app.create_user().await;
    let first = app.new_product("First", 1500, 10).await;
    let second = app.new_product("Second", 700, 10).await;

    let response = app.create_order(&user, &lines_body(&[(second, 3), (first, 1)])).await;
    let order = response.expect_status(201).clone();
    assert_pending_order(&order, &user, &[(second, 700, 3), (first, 1500, 1)]);
    assert_eq!(order["total_amount"], json!(3600));
    assert_eq!(items(&order)[0]["name"], json!("Second"));
    let order_id = id_of(&order);
    assert_eq!(
        response.header("location"),
        Some(format!("/api/v1/orders/{order_id}").as_str()),
        "Location header of a new order"
    );
    // Creating an order checks stock but does not take it.
    assert_eq!(app.stock_of(second).await, 10);

    let read = app.order(&user, order_id).await;
    assert_eq!(read.expect_status(200), &order);
}

async fn direct_orders_need_1_to_50_distinct_lines_of_1_to_1000(app: TestApp) {
    let user = app.create_user().await;
    let mut products = Vec::new();
    for index in 0..51 {
        products.push(app.new_product(&format!("P{index}"), 10, 1000).await);
    }
    let fifty_one: Vec<(i64, i64)> = products.iter().map(|&p| (p, 1)).collect();
    let bad_bodies = [
        json!({"items": []}),
        lines_body(&fifty_one),
        lines_body(&[(products[0], 0)]),
        lines_body(&[(products[0], -1)]),
        lines_body(&[(products[0], 1001)]),
        lines_body(&[(products[0], 1), (products[1], 2), (products[0], 3)]),
        json!({"items": [{"product_id": products[0]}]}),
        json!({"items": [{"product_id": products[0], "quantity": 1.5}]}),
        json!({"items": [{"product_id": "x", "quantity": 1}]}),
        json!({"items": "all"}),
    ];
    for body in &bad_bodies {
        app.create_order(&user, body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    // Shape before existence: a bad quantity on an unknown product is still 400.
    app.create_order(&user, &lines_body(&[(UNKNOWN_ID, 0)]))
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    let orders = app.all_pages(&orders_path(&user), user.bearer(), 100).await;
    assert!(orders.is_empty(), "a rejected order must not be saved: {orders:?}");

    let fifty = app.place_order(&user, &fifty_one[..50]).await;
    assert_eq!(items(&fifty).len(), 50);
    assert_eq!(fifty["total_amount"], json!(500));
    let big = app.place_order(&user, &[(products[50], 1000)]).await;
    assert_eq!(big["total_amount"], json!(10_000));
}

async fn an_order_takes_exactly_one_of_items_and_from_cart_true(app: TestApp) {
    let user = app.create_user().await;
    let product = app.new_product("A", 100, 10).await;
    app.put_item(&user, product, 1).await.expect_status(200);
    let bad_bodies = [
        json!({"items": [{"product_id": product, "quantity": 1}], "from_cart": true}),
        json!({}),
        json!({"from_cart": false}),
        json!({"from_cart": "yes"}),
        json!({"items": null, "from_cart": null}),
    ];
    for body in &bad_bodies {
        app.create_order(&user, body)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    app.send_raw(Method::POST, &orders_path(&user), user.bearer(), "not json")
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    assert!(app.all_pages(&orders_path(&user), user.bearer(), 100).await.is_empty());
}

async fn an_order_from_the_cart_has_the_cart_lines_in_cart_order_and_leaves_the_cart_as_it_was(app: TestApp) {
    let user = app.create_user().await;
    let a = app.new_product("A", 1000, 10).await;
    let b = app.new_product("B", 250, 10).await;
    app.put_item(&user, b, 4).await.expect_status(200);
    app.put_item(&user, a, 2).await.expect_status(200);
    let cart_before = app.cart(&user).await;

    let response = app.create_order(&user, &json!({"from_cart": true})).await;
    let order = response.expect_status(201).clone();
    assert_pending_order(&order, &user, &[(b, 250, 4), (a, 1000, 2)]);
    assert_eq!(
        response.header("location"),
        Some(format!("/api/v1/orders/{}", id_of(&order)).as_str())
    );
    assert_eq!(
        app.cart(&user).await,
        cart_before,
        "creating an order does not empty the cart"
    );

    // A direct order leaves the cart alone too.
    app.place_order(&user, &[(a, 1)]).await;
    assert_eq!(app.cart(&user).await, cart_before);
}

async fn an_order_from_an_empty_cart_is_400_cart_empty(app: TestApp) {
    let user = app.create_user().await;
    app.create_order(&user, &json!({"from_cart": true}))
        .await
        .assert_problem(400, "CART_EMPTY");
    let product = app.new_product("A", 100, 10).await;
    app.put_item(&user, product, 1).await.expect_status(200);
    app.remove_item(&user, product).await;
    app.create_order(&user, &json!({"from_cart": true}))
        .await
        .assert_problem(400, "CART_EMPTY");
}

async fn an_order_keeps_the_prices_of_the_moment_it_was_made(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("Bag", 1000, 10).await;
    let order = app.place_order(&user, &[(product, 3)]).await;
    let order_id = id_of(&order);

    app.patch_product(product, &json!({"price": 5000, "name": "Renamed bag"}))
        .await
        .expect_status(200);
    let read = app.order(&user, order_id).await.expect_status(200).clone();
    assert_eq!(items(&read)[0]["unit_price"], json!(1000));
    assert_eq!(items(&read)[0]["amount"], json!(3000));
    assert_eq!(items(&read)[0]["name"], json!("Bag"));
    assert_eq!(read["total_amount"], json!(3000));

    let paid = app.pay(&user, order_id, None).await.expect_status(200).clone();
    assert_eq!(paid["paid_amount"], json!(3000));
    assert_eq!(items(&paid)[0]["unit_price"], json!(1000));
    assert_eq!(app.balance(&user).await, 7000);
}

async fn stock_is_checked_but_not_reserved_so_the_second_payment_is_out_of_stock(app: TestApp) {
    let first = app.create_user().await;
    let second = app.create_user().await;
    app.fund(&first, 10_000).await;
    app.fund(&second, 10_000).await;
    let product = app.new_product("Limited", 1000, 3).await;

    let first_order = id_of(&app.place_order(&first, &[(product, 3)]).await);
    let second_order = id_of(&app.place_order(&second, &[(product, 3)]).await);
    assert_eq!(app.stock_of(product).await, 3, "orders do not reserve stock");

    app.pay(&first, first_order, None).await.expect_status(200);
    assert_eq!(app.stock_of(product).await, 0);
    let before = snapshot(&app, &second, second_order, &[product]).await;
    app.pay(&second, second_order, None)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    assert_nothing_changed(&app, &second, second_order, &[product], &before, "OUT_OF_STOCK").await;
    assert_eq!(app.balance(&second).await, 10_000);
}

async fn ordering_unknown_stopped_or_scarce_products_fails_with_404_before_409(app: TestApp) {
    let user = app.create_user().await;
    let stopped = app.new_product("Stopped", 100, 10).await;
    let scarce = app.new_product("Scarce", 100, 1).await;
    app.stop_product(stopped).await;

    app.create_order(&user, &lines_body(&[(UNKNOWN_ID, 1)]))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.create_order(&user, &lines_body(&[(stopped, 1), (UNKNOWN_ID, 1)]))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.create_order(&user, &lines_body(&[(scarce, 5), (UNKNOWN_ID, 1)]))
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    app.create_order(&user, &lines_body(&[(stopped, 1)]))
        .await
        .assert_problem(409, "PRODUCT_NOT_ON_SALE");
    app.create_order(&user, &lines_body(&[(scarce, 2)]))
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    assert!(app.all_pages(&orders_path(&user), user.bearer(), 100).await.is_empty());
    app.place_order(&user, &[(scarce, 1)]).await;
}

async fn an_order_from_a_cart_holding_a_stopped_or_scarce_product_is_409(app: TestApp) {
    let user = app.create_user().await;
    let later_stopped = app.new_product("Later stopped", 100, 10).await;
    let scarce = app.new_product("Scarce", 100, 2).await;

    app.put_item(&user, scarce, 3).await.expect_status(200);
    app.create_order(&user, &json!({"from_cart": true}))
        .await
        .assert_problem(409, "OUT_OF_STOCK");

    app.put_item(&user, scarce, 2).await.expect_status(200);
    app.put_item(&user, later_stopped, 1).await.expect_status(200);
    app.stop_product(later_stopped).await;
    app.create_order(&user, &json!({"from_cart": true}))
        .await
        .assert_problem(409, "PRODUCT_NOT_ON_SALE");
    assert!(app.all_pages(&orders_path(&user), user.bearer(), 100).await.is_empty());
}

async fn orders_are_listed_newest_first_paged_and_filtered_by_status(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 100, 100).await;
    let mut order_ids = Vec::new();
    for _ in 0..5 {
        order_ids.push(id_of(&app.place_order(&user, &[(product, 1)]).await));
    }
    let [o1, o2, o3, o4, o5] = order_ids[..] else {
        unreachable!()
    };
    app.pay(&user, o2, None).await.expect_status(200);
    app.cancel(&user, o3).await.expect_status(200);

    let path = orders_path(&user);
    let page = app
        .get(&format!("{path}?limit=2"), user.bearer())
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&page), vec![o5, o4]);
    assert_eq!(page["next_after"], json!(o4));
    let page = app
        .get(&format!("{path}?limit=2&after={o4}"), user.bearer())
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&page), vec![o3, o2]);
    assert_eq!(page["next_after"], json!(o2));
    let page = app
        .get(&format!("{path}?limit=2&after={o2}"), user.bearer())
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&page), vec![o1]);
    assert_eq!(page["next_after"], Value::Null);

    let all = app.get(&path, user.bearer()).await.expect_status(200).clone();
    assert_eq!(ids(&all), vec![o5, o4, o3, o2, o1]);
    assert_eq!(all["next_after"], Value::Null);
    let statuses: Vec<&str> = items(&all).iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            "PENDING_PAYMENT",
            "PENDING_PAYMENT",
            "CANCELLED",
            "PAID",
            "PENDING_PAYMENT"
        ]
    );
    assert_eq!(items(&all)[3]["paid_amount"], json!(100));

    for (status, expected) in [
        ("PAID", vec![o2]),
        ("CANCELLED", vec![o3]),
        ("PENDING_PAYMENT", vec![o5, o4, o1]),
        ("REFUNDED", vec![]),
        ("EXPIRED", vec![]),
    ] {
        let page = app.get(&format!("{path}?status={status}"), user.bearer()).await;
        assert_eq!(ids(page.expect_status(200)), expected, "?status={status}");
    }
    let page = app
        .get(&format!("{path}?status=PENDING_PAYMENT&limit=2"), user.bearer())
        .await;
    assert_eq!(ids(page.expect_status(200)), vec![o5, o4]);
    assert_eq!(page.body["next_after"], json!(o4));
    let page = app
        .get(
            &format!("{path}?status=PENDING_PAYMENT&limit=2&after={o4}"),
            user.bearer(),
        )
        .await;
    assert_eq!(ids(page.expect_status(200)), vec![o1]);

    for bad in ["?status=SHIPPED", "?status=paid", "?limit=0", "?limit=101"] {
        app.get(&format!("{path}{bad}"), user.bearer())
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
}

async fn another_users_order_is_404_on_every_route_and_an_admin_may_read_and_refund_it(app: TestApp) {
    let owner = app.create_user().await;
    let other = app.create_user().await;
    app.fund(&owner, 10_000).await;
    app.fund(&other, 10_000).await;
    let product = app.new_product("A", 1000, 10).await;
    let pending = id_of(&app.place_order(&owner, &[(product, 1)]).await);
    let paid = id_of(&app.place_order(&owner, &[(product, 2)]).await);
    app.pay(&owner, paid, None).await.expect_status(200);

    for order_id in [pending, paid] {
        app.order(&other, order_id).await.assert_problem(404, "ORDER_NOT_FOUND");
        app.pay(&other, order_id, None)
            .await
            .assert_problem(404, "ORDER_NOT_FOUND");
        app.cancel(&other, order_id)
            .await
            .assert_problem(404, "ORDER_NOT_FOUND");
        app.refund(&other, order_id)
            .await
            .assert_problem(404, "ORDER_NOT_FOUND");
    }
    app.order(&owner, UNKNOWN_ID)
        .await
        .assert_problem(404, "ORDER_NOT_FOUND");
    app.pay(&owner, UNKNOWN_ID, None)
        .await
        .assert_problem(404, "ORDER_NOT_FOUND");
    app.cancel(&owner, UNKNOWN_ID)
        .await
        .assert_problem(404, "ORDER_NOT_FOUND");
    app.refund(&owner, UNKNOWN_ID)
        .await
        .assert_problem(404, "ORDER_NOT_FOUND");
    app.get(&format!("/api/v1/orders/{pending}"), None)
        .await
        .assert_problem(401, "UNAUTHORIZED");
    for bad_id in ["0", "-1", "abc", "99999999999999999999"] {
        app.get(&format!("/api/v1/orders/{bad_id}"), owner.bearer())
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    assert_eq!(app.order_status(&owner, pending).await, "PENDING_PAYMENT");
    assert_eq!(app.order_status(&owner, paid).await, "PAID");
    assert_eq!(app.balance(&other).await, 10_000);
    assert_eq!(app.balance(&owner).await, 8_000);

    // Another user's order list and order creation are 403.
    app.get(&orders_path(&owner), other.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
    app.post(&orders_path(&owner), other.bearer(), &lines_body(&[(product, 1)]))
        .await
        .assert_problem(403, "FORBIDDEN");

    // The admin reads and refunds.
    let admin = app.admin().await.clone();
    let read = app.order(&admin, paid).await;
    assert_eq!(read.expect_status(200)["user_id"], json!(owner.id));
    let listed = app.get(&orders_path(&owner), admin.bearer()).await;
    assert_eq!(ids(listed.expect_status(200)), vec![paid, pending]);
    let refunded = app.refund(&admin, paid).await;
    assert_eq!(refunded.expect_status(200)["status"], json!("REFUNDED"));
    assert_eq!(app.balance(&owner).await, 10_000);
    assert_eq!(app.stock_of(product).await, 10);
}

// ---------------------------------------------------------------------------------------------
// Payment
// ---------------------------------------------------------------------------------------------

engine_tests!(
    the_payment_body_is_optional,
    a_payment_takes_stock_debits_the_balance_writes_history_and_clears_the_paid_products_from_the_cart,
    coupons_take_fixed_min_of_value_and_total_and_rate_floor_of_total_times_value_over_100,
    payment_errors_come_in_contract_order_and_each_failure_changes_nothing,
    paying_twice_is_order_not_pending_and_the_money_moves_once,
    a_payment_with_an_idempotency_key_replays_its_answer_and_rejects_another_body,
);

async fn the_payment_body_is_optional(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 1000, 10).await;
    let no_body = id_of(&app.place_order(&user, &[(product, 1)]).await);
    let empty_object = id_of(&app.place_order(&user, &[(product, 1)]).await);
    let null_coupon = id_of(&app.place_order(&user, &[(product, 1)]).await);

    let responses = [
        app.post_empty(&format!("/api/v1/orders/{no_body}/payment"), user.bearer())
            .await,
        app.post(
            &format!("/api/v1/orders/{empty_object}/payment"),
            user.bearer(),
            &json!({}),
        )
        .await,
        app.post(
            &format!("/api/v1/orders/{null_coupon}/payment"),
            user.bearer(),
            &json!({"user_coupon_id": null}),
        )
        .await,
    ];
    for response in &responses {
        let order = response.expect_status(200);
        assert_eq!(order["status"], json!("PAID"));
        assert_eq!(order["discount_amount"], json!(0));
        assert_eq!(order["paid_amount"], json!(1000));
        assert_eq!(order["user_coupon_id"], Value::Null);
    }
    assert_eq!(app.balance(&user).await, 7000);

    let bad = id_of(&app.place_order(&user, &[(product, 1)]).await);
    for raw in [
        r#"{"user_coupon_id": "one"}"#,
        r#"{"user_coupon_id": 1.5}"#,
        "[",
        r#"{"user_coupon_id": 0}"#,
    ] {
        app.send_raw(
            Method::POST,
            &format!("/api/v1/orders/{bad}/payment"),
            user.bearer(),
            raw,
        )
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    }
    assert_eq!(app.order_status(&user, bad).await, "PENDING_PAYMENT");
}

async fn a_payment_takes_stock_debits_the_balance_writes_history_and_clears_the_paid_products_from_the_cart(
    app: TestApp,
) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let a = app.new_product("A", 1200, 10).await;
    let b = app.new_product("B", 800, 5).await;
    let c = app.new_product("C", 50, 3).await;
    app.put_item(&user, a, 2).await.expect_status(200);
    app.put_item(&user, b, 1).await.expect_status(200);
    app.put_item(&user, c, 1).await.expect_status(200);

    let order = app.place_order(&user, &[(b, 2), (a, 3)]).await;
    let order_id = id_of(&order);
    assert_eq!(order["total_amount"], json!(5200));
    let paid = app
        .post(&format!("/api/v1/orders/{order_id}/payment"), user.bearer(), &json!({}))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(paid["id"], json!(order_id));
    assert_eq!(paid["status"], json!("PAID"));
    assert_eq!(paid["items"], order["items"]);
    assert_eq!(paid["total_amount"], json!(5200));
    assert_eq!(paid["discount_amount"], json!(0));
    assert_eq!(paid["paid_amount"], json!(5200));
    assert_eq!(paid["user_coupon_id"], Value::Null);
    let paid_at = millis(&paid["paid_at"]);
    assert!(paid_at >= millis(&order["created_at"]));
    assert!(paid_at <= millis(&order["expires_at"]));

    let read = app.order(&user, order_id).await.expect_status(200).clone();
    assert_eq!(read["status"], json!("PAID"));
    assert_eq!(read["paid_amount"], json!(5200));
    assert_eq!(millis(&read["paid_at"]), paid_at);

    assert_eq!(app.balance(&user).await, 4800);
    let lines = app.history(&user).await;
    let newest = &lines[0];
    assert_eq!(newest["type"], json!("PAYMENT"));
    assert_eq!(newest["amount"], json!(-5200));
    assert_eq!(newest["balance_after"], json!(4800));
    assert_eq!(newest["order_id"], json!(order_id));
    assert_eq!(lines.iter().filter(|line| line["type"] == json!("PAYMENT")).count(), 1);
    let sum: i64 = lines.iter().map(|line| int(line, "amount")).sum();
    assert_eq!(sum, 4800, "the balance is the sum of its history");

    assert_eq!(app.stock_of(a).await, 7);
    assert_eq!(app.stock_of(b).await, 3);
    assert_eq!(app.stock_of(c).await, 3);
    assert_eq!(
        cart_lines(&app.cart(&user).await),
        vec![(c, 1)],
        "the paid products leave the cart"
    );
    assert_eq!(outbox_rows(&app, order_id, "order.paid").await, 1);
}

async fn coupons_take_fixed_min_of_value_and_total_and_rate_floor_of_total_times_value_over_100(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 20_000).await;
    let product = app.new_product("A", 9_999, 100).await;
    let fixed = app.issue_ok(&user, app.new_coupon("FIXED", 3000, 10, 3600).await).await;
    let fixed_big = app
        .issue_ok(&user, app.new_coupon("FIXED", 50_000, 10, 3600).await)
        .await;
    let rate = app.issue_ok(&user, app.new_coupon("RATE", 15, 10, 3600).await).await;
    let rate_full = app.issue_ok(&user, app.new_coupon("RATE", 100, 10, 3600).await).await;

    // (user coupon, quantity, discount, paid)
    let cases = [
        (&fixed, 1, 3000, 6999),
        (&fixed_big, 1, 9999, 0),
        (&rate, 1, 1499, 8500),
        (&rate_full, 2, 19_998, 0),
    ];
    let mut balance = 20_000;
    for (coupon, quantity, discount, paid_amount) in cases {
        let user_coupon_id = id_of(coupon);
        let order_id = id_of(&app.place_order(&user, &[(product, quantity)]).await);
        let paid = app.pay(&user, order_id, Some(user_coupon_id)).await;
        let paid = paid.expect_status(200);
        assert_eq!(paid["status"], json!("PAID"));
        assert_eq!(paid["total_amount"], json!(9_999 * quantity));
        assert_eq!(paid["discount_amount"], json!(discount), "discount with {coupon}");
        assert_eq!(paid["paid_amount"], json!(paid_amount), "paid amount with {coupon}");
        assert_eq!(paid["user_coupon_id"], json!(user_coupon_id));
        balance -= paid_amount;
        assert_eq!(app.balance(&user).await, balance);

        // Every payment writes its PAYMENT line, a 0 KRW one too.
        let lines = app.history(&user).await;
        let line = &lines[0];
        assert_eq!(line["type"], json!("PAYMENT"), "newest history line {line}");
        assert_eq!(line["amount"], json!(-paid_amount));
        assert_eq!(line["balance_after"], json!(balance));
        assert_eq!(line["order_id"], json!(order_id));

        let used = app.user_coupon(&user, user_coupon_id).await;
        assert_eq!(used["status"], json!("USED"));
        assert_eq!(used["order_id"], json!(order_id));
        let used_at = millis(&used["used_at"]);
        assert!(used_at >= millis(&used["issued_at"]));
        assert_eq!(outbox_rows(&app, order_id, "order.paid").await, 1);
    }
    let lines = app.history(&user).await;
    assert_eq!(lines.iter().filter(|line| line["type"] == json!("PAYMENT")).count(), 4);
    let used = app.user_coupons(&user, "?status=USED").await;
    assert_eq!(items(used.expect_status(200)).len(), 4);
}

async fn payment_errors_come_in_contract_order_and_each_failure_changes_nothing(app: TestApp) {
    let buyer = app.create_user().await;
    let rival = app.create_user().await;
    app.fund(&rival, 10_000).await;
    let scarce = app.new_product("Scarce", 10_000, 1).await;
    let cheap = app.new_product("Cheap", 1000, 10).await;
    let products = [scarce, cheap];

    // The buyer's order for the last unit; the rival buys that unit first.
    let order_id = id_of(&app.place_order(&buyer, &[(scarce, 1)]).await);
    let rival_order = id_of(&app.place_order(&rival, &[(scarce, 1)]).await);
    app.pay(&rival, rival_order, None).await.expect_status(200);

    // A used coupon (spent on a 0 KRW order), an expiring one, a good one, the rival's one.
    let used = id_of(
        &app.issue_ok(&buyer, app.new_coupon("FIXED", 1000, 10, 3600).await)
            .await,
    );
    let cheap_order = id_of(&app.place_order(&buyer, &[(cheap, 1)]).await);
    let free = app.pay(&buyer, cheap_order, Some(used)).await;
    assert_eq!(free.expect_status(200)["paid_amount"], json!(0));
    let expiring = app.issue_ok(&buyer, app.new_coupon("FIXED", 1000, 10, 1).await).await;
    let good = id_of(&app.issue_ok(&buyer, app.new_coupon("RATE", 10, 10, 3600).await).await);
    let shared = app.new_coupon("FIXED", 500, 10, 3600).await;
    let rivals = id_of(&app.issue_ok(&rival, shared).await);
    app.put_item(&buyer, scarce, 1).await.expect_status(200);
    app.put_item(&buyer, cheap, 2).await.expect_status(200);
    wait_past(&expiring["expires_at"]).await;
    let expiring = id_of(&expiring);
    assert_eq!(app.user_coupon(&buyer, expiring).await["status"], json!("EXPIRED"));

    // The buyer has no money and the product is gone: the coupon errors come first.
    let before = snapshot(&app, &buyer, order_id, &products).await;
    let cases = [
        (Some(UNKNOWN_ID), 404, "COUPON_NOT_FOUND"),
        (Some(rivals), 404, "COUPON_NOT_FOUND"),
        (Some(used), 409, "COUPON_ALREADY_USED"),
        (Some(expiring), 409, "COUPON_EXPIRED"),
        (Some(good), 409, "OUT_OF_STOCK"),
        (None, 409, "OUT_OF_STOCK"),
    ];
    for (coupon, status, code) in cases {
        app.pay(&buyer, order_id, coupon).await.assert_problem(status, code);
        assert_nothing_changed(&app, &buyer, order_id, &products, &before, code).await;
    }
    assert_eq!(app.user_coupon(&buyer, good).await["status"], json!("AVAILABLE"));
    assert_eq!(app.user_coupon(&rival, rivals).await["status"], json!("AVAILABLE"));

    // Stock is back: now the balance is what is missing.
    app.restock(scarce, 1).await.expect_status(200);
    app.fund(&buyer, 8_000).await;
    let before = snapshot(&app, &buyer, order_id, &products).await;
    for coupon in [Some(good), None] {
        app.pay(&buyer, order_id, coupon)
            .await
            .assert_problem(409, "INSUFFICIENT_BALANCE");
        assert_nothing_changed(&app, &buyer, order_id, &products, &before, "INSUFFICIENT_BALANCE").await;
    }
    // 10 % off 10,000 is 9,000: one more charge makes it payable, exactly to zero.
    app.fund(&buyer, 1_000).await;
    let paid = app.pay(&buyer, order_id, Some(good)).await;
    assert_eq!(paid.expect_status(200)["paid_amount"], json!(9_000));
    assert_eq!(app.balance(&buyer).await, 0);
    assert_eq!(app.stock_of(scarce).await, 0);
    assert_eq!(cart_lines(&app.cart(&buyer).await), vec![(cheap, 2)]);

    // The order's state comes before anything about the coupon.
    app.pay(&buyer, order_id, Some(UNKNOWN_ID))
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    app.pay(&buyer, order_id, Some(used))
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
}

async fn paying_twice_is_order_not_pending_and_the_money_moves_once(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 3000, 10).await;
    let order_id = id_of(&app.place_order(&user, &[(product, 1)]).await);
    app.pay(&user, order_id, None).await.expect_status(200);
    app.pay(&user, order_id, None)
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    app.post_empty(&format!("/api/v1/orders/{order_id}/payment"), user.bearer())
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    assert_eq!(app.balance(&user).await, 7000);
    assert_eq!(app.stock_of(product).await, 9);
    assert_eq!(outbox_rows(&app, order_id, "order.paid").await, 1);
    let payments = app
        .history(&user)
        .await
        .into_iter()
        .filter(|l| l["type"] == json!("PAYMENT"))
        .count();
    assert_eq!(payments, 1);
}

async fn a_payment_with_an_idempotency_key_replays_its_answer_and_rejects_another_body(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 3000, 10).await;
    let coupon = id_of(&app.issue_ok(&user, app.new_coupon("FIXED", 100, 10, 3600).await).await);
    let order_id = id_of(&app.place_order(&user, &[(product, 1)]).await);
    let key = unique_key();

    let first = app.pay_with_key(&user, order_id, &key, &json!({})).await;
    let first_body = first.expect_status(200).clone();
    assert_eq!(first_body["status"], json!("PAID"));
    let replay = app.pay_with_key(&user, order_id, &key, &json!({})).await;
    assert_eq!(
        replay.expect_status(200),
        &first_body,
        "the same key and body replay the first answer"
    );
    assert_eq!(app.balance(&user).await, 7000);
    assert_eq!(app.stock_of(product).await, 9);
    assert_eq!(outbox_rows(&app, order_id, "order.paid").await, 1);

    app.pay_with_key(&user, order_id, &key, &json!({"user_coupon_id": coupon}))
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    app.pay_with_key(&user, order_id, &unique_key(), &json!({}))
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    assert_eq!(app.user_coupon(&user, coupon).await["status"], json!("AVAILABLE"));

    // A failed payment is not stored: the key works again once the balance suffices.
    let big = id_of(&app.place_order(&user, &[(product, 3)]).await);
    let retry_key = unique_key();
    app.pay_with_key(&user, big, &retry_key, &json!({}))
        .await
        .assert_problem(409, "INSUFFICIENT_BALANCE");
    app.fund(&user, 2000).await;
    let retried = app.pay_with_key(&user, big, &retry_key, &json!({})).await;
    assert_eq!(retried.expect_status(200)["status"], json!("PAID"));
    assert_eq!(app.balance(&user).await, 0);
    let payments = app
        .history(&user)
        .await
        .into_iter()
        .filter(|l| l["type"] == json!("PAYMENT"))
        .count();
    assert_eq!(payments, 2);

    // Keys are scoped to the route: a key used for a charge is fresh for a payment.
    let shared_key = unique_key();
    app.charge(&user, 3000, &shared_key).await.expect_status(200);
    let scoped = id_of(&app.place_order(&user, &[(product, 1)]).await);
    let paid = app.pay_with_key(&user, scoped, &shared_key, &json!({})).await;
    assert_eq!(paid.expect_status(200)["status"], json!("PAID"));
    assert_eq!(app.balance(&user).await, 0);

    for bad_key in ["", "has space", "tab\tkey"] {
        let other = id_of(&app.place_order(&user, &[(product, 1)]).await);
        let response = app
            .request(Method::POST, &format!("/api/v1/orders/{other}/payment"))
            .bearer_auth(&user.token)
            .header("Idempotency-Key", bad_key)
            .json(&json!({}))
            .fetch()
            .await;
        response.assert_problem(400, "VALIDATION_FAILED");
    }
}

// ---------------------------------------------------------------------------------------------
// Cancel and refund
// ---------------------------------------------------------------------------------------------

engine_tests!(
    only_a_pending_order_can_be_cancelled,
    a_refund_gives_back_money_stock_and_coupon_and_only_a_paid_order_can_be_refunded,
    a_refund_after_the_coupon_expired_leaves_it_expired,
);

async fn only_a_pending_order_can_be_cancelled(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 1000, 10).await;
    let order = app.place_order(&user, &[(product, 2)]).await;
    let order_id = id_of(&order);

    let cancelled = app.cancel(&user, order_id).await.expect_status(200).clone();
    assert_eq!(cancelled["status"], json!("CANCELLED"));
    assert_eq!(cancelled["items"], order["items"]);
    assert_eq!(cancelled["paid_amount"], json!(0));
    assert_eq!(app.order_status(&user, order_id).await, "CANCELLED");
    app.cancel(&user, order_id)
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    app.pay(&user, order_id, None)
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    app.refund(&user, order_id).await.assert_problem(409, "ORDER_NOT_PAID");
    assert_eq!(app.balance(&user).await, 10_000);
    assert_eq!(app.stock_of(product).await, 10);

    let paid = id_of(&app.place_order(&user, &[(product, 1)]).await);
    app.pay(&user, paid, None).await.expect_status(200);
    app.cancel(&user, paid).await.assert_problem(409, "ORDER_NOT_PENDING");
    assert_eq!(app.order_status(&user, paid).await, "PAID");
    app.refund(&user, paid).await.expect_status(200);
    app.cancel(&user, paid).await.assert_problem(409, "ORDER_NOT_PENDING");
    assert_eq!(app.order_status(&user, paid).await, "REFUNDED");
}

async fn a_refund_gives_back_money_stock_and_coupon_and_only_a_paid_order_can_be_refunded(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 5000, 10).await;
    let coupon = id_of(&app.issue_ok(&user, app.new_coupon("FIXED", 1000, 10, 3600).await).await);
    let order_id = id_of(&app.place_order(&user, &[(product, 2)]).await);
    let pending = id_of(&app.place_order(&user, &[(product, 1)]).await);
    app.refund(&user, pending).await.assert_problem(409, "ORDER_NOT_PAID");

    app.pay(&user, order_id, Some(coupon)).await.expect_status(200);
    assert_eq!(app.balance(&user).await, 1000);
    assert_eq!(app.stock_of(product).await, 8);

    let refunded = app.refund(&user, order_id).await.expect_status(200).clone();
    assert_eq!(refunded["id"], json!(order_id));
    assert_eq!(refunded["status"], json!("REFUNDED"));
    assert_eq!(refunded["total_amount"], json!(10_000));
    assert_eq!(app.order_status(&user, order_id).await, "REFUNDED");
    assert_eq!(app.balance(&user).await, 10_000);
    let lines = app.history(&user).await;
    assert_eq!(lines[0]["type"], json!("REFUND"));
    assert_eq!(lines[0]["amount"], json!(9000));
    assert_eq!(lines[0]["balance_after"], json!(10_000));
    assert_eq!(lines[0]["order_id"], json!(order_id));
    let sum: i64 = lines.iter().map(|line| int(line, "amount")).sum();
    assert_eq!(sum, 10_000, "the balance is the sum of its history");
    assert_eq!(app.stock_of(product).await, 10);
    let coupon_now = app.user_coupon(&user, coupon).await;
    assert_eq!(coupon_now["status"], json!("AVAILABLE"));
    assert_eq!(coupon_now["used_at"], Value::Null);
    assert_eq!(coupon_now["order_id"], Value::Null);
    assert_eq!(outbox_rows(&app, order_id, "order.refunded").await, 1);
    assert_eq!(outbox_rows(&app, order_id, "order.paid").await, 1);

    app.refund(&user, order_id).await.assert_problem(409, "ORDER_NOT_PAID");
    app.pay(&user, order_id, None)
        .await
        .assert_problem(409, "ORDER_NOT_PENDING");
    assert_eq!(app.balance(&user).await, 10_000);
    assert_eq!(outbox_rows(&app, order_id, "order.refunded").await, 1);

    // The coupon given back can pay another order.
    let paid = app.pay(&user, pending, Some(coupon)).await;
    assert_eq!(paid.expect_status(200)["discount_amount"], json!(1000));
    assert_eq!(app.user_coupon(&user, coupon).await["order_id"], json!(pending));
}

async fn a_refund_after_the_coupon_expired_leaves_it_expired(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 2000, 10).await;
    let coupon = app.issue_ok(&user, app.new_coupon("FIXED", 500, 10, 4).await).await;
    let order_id = id_of(&app.place_order(&user, &[(product, 1)]).await);
    app.pay(&user, order_id, Some(id_of(&coupon))).await.expect_status(200);
    wait_past(&coupon["expires_at"]).await;
    assert_eq!(app.user_coupon(&user, id_of(&coupon)).await["status"], json!("USED"));

    app.refund(&user, order_id).await.expect_status(200);
    let after = app.user_coupon(&user, id_of(&coupon)).await;
    assert_eq!(after["status"], json!("EXPIRED"));
    assert_eq!(after["used_at"], Value::Null);
    assert_eq!(after["order_id"], Value::Null);
    assert_eq!(app.balance(&user).await, 10_000);
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

engine_tests!(
    a_pending_order_past_expires_at_reads_expired_and_cannot_be_paid_or_cancelled,
    the_expiry_job_stores_expired_for_pending_orders_only,
);

async fn a_pending_order_past_expires_at_reads_expired_and_cannot_be_paid_or_cancelled(engine: Engine) {
    // The background job practically never runs: what the answers say is computed.
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_ORDER_TTL_SECONDS", 1)
        .env("ECOMMERCE_EXPIRY_INTERVAL_MS", 3_600_000)
        .spawn()
        .await;
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 1000, 10).await;
    let coupon = id_of(&app.issue_ok(&user, app.new_coupon("FIXED", 100, 10, 3600).await).await);
    app.put_item(&user, product, 1).await.expect_status(200);
    let order = app.place_order(&user, &[(product, 1)]).await;
    let order_id = id_of(&order);
    assert_eq!(
        millis(&order["expires_at"]) - millis(&order["created_at"]),
        1000,
        "TTL 1 s"
    );
    wait_past(&order["expires_at"]).await;

    let read = app.order(&user, order_id).await.expect_status(200).clone();
    assert_eq!(read["status"], json!("EXPIRED"));
    let path = orders_path(&user);
    let listed = app.get(&path, user.bearer()).await.expect_status(200).clone();
    assert_eq!(items(&listed)[0]["status"], json!("EXPIRED"));
    let expired = app.get(&format!("{path}?status=EXPIRED"), user.bearer()).await;
    assert_eq!(ids(expired.expect_status(200)), vec![order_id]);
    let pending = app.get(&format!("{path}?status=PENDING_PAYMENT"), user.bearer()).await;
    assert_eq!(ids(pending.expect_status(200)), Vec::<i64>::new());

    let before = snapshot(&app, &user, order_id, &[product]).await;
    for coupon in [None, Some(coupon), Some(UNKNOWN_ID)] {
        app.pay(&user, order_id, coupon)
            .await
            .assert_problem(409, "ORDER_EXPIRED");
    }
    app.cancel(&user, order_id).await.assert_problem(409, "ORDER_EXPIRED");
    app.refund(&user, order_id).await.assert_problem(409, "ORDER_NOT_PAID");
    let after = snapshot(&app, &user, order_id, &[product]).await;
    assert_eq!(after, before, "nothing changes for an expired order");
    assert_eq!(after.order["status"], json!("EXPIRED"));
    assert_eq!(app.balance(&user).await, 10_000);
    assert_eq!(app.user_coupon(&user, coupon).await["status"], json!("AVAILABLE"));
}

async fn the_expiry_job_stores_expired_for_pending_orders_only(engine: Engine) {
    // The server's own expiry loop runs once at start-up only: the test runs the job's step.
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_ORDER_TTL_SECONDS", 2)
        .env("ECOMMERCE_EXPIRY_INTERVAL_MS", steps::NEVER_MS)
        .spawn()
        .await;
    let jobs = steps::Jobs::open(app.db()).await;
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 1000, 10).await;
    // Paid and cancelled right after they are made, well within the 2 s TTL.
    let paid = id_of(&app.place_order(&user, &[(product, 1)]).await);
    app.pay(&user, paid, None).await.expect_status(200);
    let cancelled = id_of(&app.place_order(&user, &[(product, 1)]).await);
    app.cancel(&user, cancelled).await.expect_status(200);
    let pending_order = app.place_order(&user, &[(product, 1)]).await;
    let pending = id_of(&pending_order);

    assert_eq!(jobs.expire_orders(Timestamp::now()).await, 0, "nothing is overdue yet");
    wait_past(&pending_order["expires_at"]).await;
    assert_eq!(
        jobs.expire_orders(Timestamp::now()).await,
        1,
        "the pending order is overdue"
    );
    let stored = app
        .db()
        .query_i64(
            "select count(*) from purchase_order where id = $1 and status = 'EXPIRED'",
            &[pending],
        )
        .await;
    assert_eq!(stored, 1, "the expiry job stores EXPIRED");
    for (order_id, status) in [(paid, "PAID"), (cancelled, "CANCELLED")] {
        let sql = match status {
            "PAID" => "select count(*) from purchase_order where id = $1 and status = 'PAID'",
            _ => "select count(*) from purchase_order where id = $1 and status = 'CANCELLED'",
        };
        assert_eq!(
            app.db().query_i64(sql, &[order_id]).await,
            1,
            "order {order_id} stays {status}"
        );
    }
    assert_eq!(app.order_status(&user, pending).await, "EXPIRED");
    assert_eq!(app.order_status(&user, paid).await, "PAID");
    assert_eq!(app.order_status(&user, cancelled).await, "CANCELLED");
    assert_eq!(app.stock_of(product).await, 9);
    app.pay(&user, pending, None).await.assert_problem(409, "ORDER_EXPIRED");
    app.cancel(&user, pending).await.assert_problem(409, "ORDER_EXPIRED");
    assert_eq!(app.balance(&user).await, 9000);
}

// ---------------------------------------------------------------------------------------------
// Coupons
// ---------------------------------------------------------------------------------------------

engine_tests!(
    an_admin_creates_fixed_and_rate_coupons,
    coupon_values_quantities_validity_and_names_are_bounded,
    only_an_admin_creates_coupons,
    the_coupon_list_shows_coupons_with_stock_left_newest_first_and_reads_need_no_token,
    issuing_a_coupon_answers_201_available_with_expiry_counted_from_issue,
    a_sold_out_coupon_is_409_sold_out_but_its_holder_still_hears_already_issued,
    the_users_coupons_are_listed_newest_first_with_a_status_filter_and_computed_expiry,
);

async fn an_admin_creates_fixed_and_rate_coupons(app: TestApp) {
    let fixed = app
        .create_coupon(&json!({
            "name": "  Welcome  ",
            "discount_type": "FIXED",
            "discount_value": 5000,
            "total_quantity": 100,
            "valid_for_seconds": 86_400,
        }))
        .await;
    let fixed = fixed.expect_status(201).clone();
    assert!(id_of(&fixed) > 0);
    assert_eq!(
        fixed,
        json!({
            "id": id_of(&fixed),
            "name": "Welcome",
            "discount_type": "FIXED",
            "discount_value": 5000,
            "total_quantity": 100,
            "remaining_quantity": 100,
            "valid_for_seconds": 86_400,
            "issue_starts_at": null,
            "issue_ends_at": null,
        })
    );
    let rate = app.create_coupon(&coupon_body("RATE", 20, 3, 60)).await;
    let rate = rate.expect_status(201).clone();
    assert_eq!(rate["discount_type"], json!("RATE"));
    assert_eq!(rate["discount_value"], json!(20));
    assert_eq!(rate["remaining_quantity"], json!(3));
    assert_eq!(app.coupon(id_of(&rate)).await.expect_status(200), &rate);
}

async fn coupon_values_quantities_validity_and_names_are_bounded(app: TestApp) {
    let valid = |kind: &str, value: i64, quantity: i64, valid_for: i64| coupon_body(kind, value, quantity, valid_for);
    let good = [
        valid("RATE", 1, 1, 1),
        valid("RATE", 100, 1, 1),
        valid("FIXED", 1, 1, 1),
        valid("FIXED", 10_000_000, 10_000_000, 31_536_000),
    ];
    for body in &good {
        let created = app.create_coupon(body).await;
        let created = created.expect_status(201);
        assert_eq!(created["remaining_quantity"], body["total_quantity"]);
    }
    let bad = [
        valid("RATE", 0, 1, 1),
        valid("RATE", 101, 1, 1),
        valid("RATE", -5, 1, 1),
        valid("FIXED", 0, 1, 1),
        valid("FIXED", 10_000_001, 1, 1),
        valid("FIXED", 100, 0, 1),
        valid("FIXED", 100, 10_000_001, 1),
        valid("FIXED", 100, 1, 0),
        valid("FIXED", 100, 1, 31_536_001),
        valid("PERCENT", 10, 1, 1),
        valid("fixed", 10, 1, 1),
        json!({"name": "", "discount_type": "FIXED", "discount_value": 1, "total_quantity": 1, "valid_for_seconds": 1}),
        json!({"name": "   ", "discount_type": "FIXED", "discount_value": 1, "total_quantity": 1, "valid_for_seconds": 1}),
        json!({"name": "쿠".repeat(101), "discount_type": "FIXED", "discount_value": 1, "total_quantity": 1, "valid_for_seconds": 1}),
        json!({"discount_type": "FIXED", "discount_value": 1, "total_quantity": 1, "valid_for_seconds": 1}),
        json!({"name": "x", "discount_type": "FIXED", "discount_value": 1.5, "total_quantity": 1, "valid_for_seconds": 1}),
        json!({"name": "x", "discount_type": "FIXED", "discount_value": 1, "total_quantity": "1", "valid_for_seconds": 1}),
    ];
    for body in &bad {
        let response = app.create_coupon(body).await;
        assert!(
            response.status == 400 && response.body["code"] == json!("VALIDATION_FAILED"),
            "{body} must be 400 VALIDATION_FAILED, got {} {}",
            response.status,
            response.text
        );
        response.assert_problem(400, "VALIDATION_FAILED");
    }
    let hundred = json!({"name": "쿠".repeat(100), "discount_type": "FIXED", "discount_value": 1, "total_quantity": 1, "valid_for_seconds": 1});
    let created = app.create_coupon(&hundred).await;
    assert_eq!(created.expect_status(201)["name"], json!("쿠".repeat(100)));

    let listed = app.all_pages("/api/v1/coupons", None, 100).await;
    assert_eq!(listed.len(), good.len() + 1, "only the valid coupons were created");
}

async fn only_an_admin_creates_coupons(app: TestApp) {
    let user = app.create_user().await;
    let body = coupon_body("FIXED", 1000, 10, 60);
    app.post("/api/v1/admin/coupons", user.bearer(), &body)
        .await
        .assert_problem(403, "FORBIDDEN");
    app.post("/api/v1/admin/coupons", None, &body)
        .await
        .assert_problem(401, "UNAUTHORIZED");
    let listed = app.get("/api/v1/coupons", None).await;
    assert_eq!(listed.expect_status(200), &json!({"items": [], "next_after": null}));
}

async fn the_coupon_list_shows_coupons_with_stock_left_newest_first_and_reads_need_no_token(app: TestApp) {
    let user = app.create_user().await;
    let single = app.new_coupon("FIXED", 1000, 1, 60).await;
    let five = app.new_coupon("RATE", 10, 5, 60).await;
    let two = app.new_coupon("FIXED", 300, 2, 60).await;
    let listed = app.get("/api/v1/coupons", None).await.expect_status(200).clone();
    assert_eq!(ids(&listed), vec![two, five, single]);

    app.issue_ok(&user, single).await;
    app.issue_ok(&user, two).await;
    let listed = app.get("/api/v1/coupons", None).await.expect_status(200).clone();
    assert_eq!(ids(&listed), vec![two, five], "a sold-out coupon leaves the list");
    assert_eq!(listed["next_after"], Value::Null);
    assert_eq!(items(&listed)[0]["remaining_quantity"], json!(1));
    assert_eq!(items(&listed)[1]["remaining_quantity"], json!(5));

    let page = app
        .get("/api/v1/coupons?limit=1", None)
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&page), vec![two]);
    assert_eq!(page["next_after"], json!(two));
    let page = app
        .get(&format!("/api/v1/coupons?limit=1&after={two}"), None)
        .await
        .expect_status(200)
        .clone();
    assert_eq!(ids(&page), vec![five]);

    let sold_out = app.coupon(single).await.expect_status(200).clone();
    assert_eq!(sold_out["remaining_quantity"], json!(0));
    assert_eq!(sold_out["total_quantity"], json!(1));
    app.coupon(UNKNOWN_ID).await.assert_problem(404, "COUPON_NOT_FOUND");
    app.get("/api/v1/coupons/abc", None)
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    app.get("/api/v1/coupons?limit=0", None)
        .await
        .assert_problem(400, "VALIDATION_FAILED");
}

async fn issuing_a_coupon_answers_201_available_with_expiry_counted_from_issue(app: TestApp) {
    let user = app.create_user().await;
    let coupon_id = app.new_coupon("RATE", 15, 10, 7200).await;
    let response = app.issue(&user, coupon_id).await;
    let issued = response.expect_status(201).clone();
    assert!(id_of(&issued) > 0);
    assert_eq!(issued["coupon_id"], json!(coupon_id));
    assert_eq!(issued["name"], json!("RATE 15"));
    assert_eq!(issued["discount_type"], json!("RATE"));
    assert_eq!(issued["discount_value"], json!(15));
    assert_eq!(issued["status"], json!("AVAILABLE"));
    assert_eq!(issued["used_at"], Value::Null);
    assert_eq!(issued["order_id"], Value::Null);
    let issued_at = millis(&issued["issued_at"]);
    assert!((issued_at - now_millis()).abs() < 60_000, "issued_at is now: {issued}");
    assert_eq!(
        millis(&issued["expires_at"]) - issued_at,
        7_200_000,
        "expires_at = issued_at + valid_for_seconds"
    );
    assert_eq!(
        app.coupon(coupon_id).await.expect_status(200)["remaining_quantity"],
        json!(9)
    );

    let listed = app.user_coupons(&user, "").await;
    assert_eq!(items(listed.expect_status(200)), &vec![issued.clone()]);

    app.issue(&user, coupon_id)
        .await
        .assert_problem(409, "COUPON_ALREADY_ISSUED");
    assert_eq!(
        app.coupon(coupon_id).await.expect_status(200)["remaining_quantity"],
        json!(9)
    );
    app.issue(&user, UNKNOWN_ID)
        .await
        .assert_problem(404, "COUPON_NOT_FOUND");
    let path = format!("/api/v1/users/{}/coupons", user.id);
    for raw in [r#"{"coupon_id": "x"}"#, "{}", r#"{"coupon_id": 1.5}"#] {
        app.send_raw(Method::POST, &path, user.bearer(), raw)
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    let other = app.create_user().await;
    app.issue(&other, coupon_id).await.expect_status(201);
    app.post(&path, other.bearer(), &json!({"coupon_id": coupon_id}))
        .await
        .assert_problem(403, "FORBIDDEN");
    app.post(&path, None, &json!({"coupon_id": coupon_id}))
        .await
        .assert_problem(401, "UNAUTHORIZED");
    assert_eq!(
        app.coupon(coupon_id).await.expect_status(200)["remaining_quantity"],
        json!(8)
    );
}

async fn a_sold_out_coupon_is_409_sold_out_but_its_holder_still_hears_already_issued(app: TestApp) {
    let first = app.create_user().await;
    let second = app.create_user().await;
    let third = app.create_user().await;
    let coupon_id = app.new_coupon("FIXED", 1000, 2, 60).await;
    app.issue_ok(&first, coupon_id).await;
    app.issue_ok(&second, coupon_id).await;
    app.issue(&third, coupon_id)
        .await
        .assert_problem(409, "COUPON_SOLD_OUT");
    app.issue(&third, coupon_id)
        .await
        .assert_problem(409, "COUPON_SOLD_OUT");
    app.issue(&first, coupon_id)
        .await
        .assert_problem(409, "COUPON_ALREADY_ISSUED");
    app.issue(&second, coupon_id)
        .await
        .assert_problem(409, "COUPON_ALREADY_ISSUED");
    assert_eq!(
        app.coupon(coupon_id).await.expect_status(200)["remaining_quantity"],
        json!(0)
    );
    assert!(app.all_user_coupons(&third).await.is_empty());
}

async fn the_users_coupons_are_listed_newest_first_with_a_status_filter_and_computed_expiry(app: TestApp) {
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let product = app.new_product("A", 1000, 10).await;
    let short = app.issue_ok(&user, app.new_coupon("FIXED", 100, 10, 1).await).await;
    let kept = app.issue_ok(&user, app.new_coupon("RATE", 10, 10, 3600).await).await;
    let spent = app.issue_ok(&user, app.new_coupon("FIXED", 200, 10, 3600).await).await;
    let order_id = id_of(&app.place_order(&user, &[(product, 1)]).await);
    app.pay(&user, order_id, Some(id_of(&spent))).await.expect_status(200);
    wait_past(&short["expires_at"]).await;

    let all = app.user_coupons(&user, "").await.expect_status(200).clone();
    assert_eq!(ids(&all), vec![id_of(&spent), id_of(&kept), id_of(&short)]);
    let statuses: Vec<&str> = items(&all).iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["USED", "AVAILABLE", "EXPIRED"]);
    assert_eq!(items(&all)[2]["used_at"], Value::Null);
    assert_eq!(items(&all)[2]["order_id"], Value::Null);

    for (status, expected) in [
        ("AVAILABLE", vec![id_of(&kept)]),
        ("USED", vec![id_of(&spent)]),
        ("EXPIRED", vec![id_of(&short)]),
    ] {
        let page = app.user_coupons(&user, &format!("?status={status}")).await;
        assert_eq!(ids(page.expect_status(200)), expected, "?status={status}");
    }
    let page = app.user_coupons(&user, "?limit=2").await.expect_status(200).clone();
    assert_eq!(ids(&page), vec![id_of(&spent), id_of(&kept)]);
    assert_eq!(page["next_after"], json!(id_of(&kept)));
    app.user_coupons(&user, "?status=GONE")
        .await
        .assert_problem(400, "VALIDATION_FAILED");

    // An expired coupon cannot pay.
    let other_order = id_of(&app.place_order(&user, &[(product, 1)]).await);
    app.pay(&user, other_order, Some(id_of(&short)))
        .await
        .assert_problem(409, "COUPON_EXPIRED");

    let other = app.create_user().await;
    app.get(&format!("/api/v1/users/{}/coupons", user.id), other.bearer())
        .await
        .assert_problem(403, "FORBIDDEN");
}
