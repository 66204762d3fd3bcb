//! Black-box tests of the console's admin API (`docs/API.md`, "Admin API"): every product,
//! coupon, order and user whatever its state, the live figures and the units sold per hour.
//! Each test runs on SQLite and on PostgreSQL against the real binary.

use ecommerce_domain::Timestamp;
use ecommerce_testkit::*;

mod steps;

/// Every admin read with a valid query, and the same route with a bad one.
const ROUTES: [(&str, &str); 7] = [
    ("products", "products?limit=0"),
    ("coupons", "coupons?after=0"),
    ("orders", "orders?status=LOST"),
    ("users", "users?email=nope"),
    ("users/1", "users/abc"),
    ("live", "live?limit=0"),
    ("sales/hourly", "sales/hourly?hours=0"),
];

/// The ids of a page's items.
fn page_ids(page: &Value) -> Vec<i64> {
    ids(page)
}

/// An hour from the Unix epoch, as the sales answer writes it (RFC 3339, its first millisecond).
fn hour_text(hour: i64) -> String {
    Timestamp(hour * 3_600_000).to_rfc3339()
}

engine_tests!(
    every_admin_read_needs_an_admin_token_before_its_parameters_are_checked,
    admin_reads_are_private_and_never_cached,
    the_product_list_holds_every_product_newest_first_in_the_product_shape,
    admin_lists_page_like_every_list,
    the_coupon_list_holds_sold_out_coupons_with_nothing_remaining,
    the_order_list_holds_every_users_orders_filtered_by_computed_status,
    users_are_listed_newest_first_and_found_by_email_in_any_case,
    one_user_is_read_with_role_balance_and_sign_up_time,
    live_figures_count_paid_orders_refusals_by_reason_and_requests,
    live_figures_show_the_outbox_backlog_and_its_oldest_event,
    the_paid_rate_counts_every_instances_payments_of_the_last_10_seconds,
    hourly_sales_have_one_item_per_hour_ending_now,
    hourly_sales_count_paid_units_less_refunds,
);

async fn every_admin_read_needs_an_admin_token_before_its_parameters_are_checked(app: TestApp) {
    let customer = app.create_user().await;
    for (route, bad) in ROUTES {
        for path in [route, bad] {
            app.admin_read_as(None, path).await.assert_problem(401, "UNAUTHORIZED");
            app.admin_read_as(Some("not-a-token"), path)
                .await
                .assert_problem(401, "UNAUTHORIZED");
            app.admin_read_as(customer.bearer(), path)
                .await
                .assert_problem(403, "FORBIDDEN");
        }
        let good = app.admin_read(route).await;
        assert!(
            good.status == 200 || (route == "users/1" && good.status == 404),
            "{route}: {} {}",
            good.status,
            good.text
        );
        if bad != "live?limit=0" {
            app.admin_read(bad).await.assert_problem(400, "VALIDATION_FAILED");
        }
    }
    // The live figures take no parameter: an unknown one is ignored, like on every route.
    app.admin_read("live?limit=0").await.expect_status(200);
}

async fn admin_reads_are_private_and_never_cached(app: TestApp) {
    for (route, _) in ROUTES {
        let response = app.admin_read(route).await;
        assert_eq!(
            response.header("cache-control"),
            Some("private, no-store"),
            "{route}: {:?}",
            response.headers
        );
        assert!(response.header("etag").is_none(), "{route} has no ETag");
    }
}

async fn the_product_list_holds_every_product_newest_first_in_the_product_shape(app: TestApp) {
    let shirt = app.new_product("Shirt", 39_000, 10).await;
    let coat = app.new_product("Coat", 189_000, 0).await;
    let belt = app.new_product("Belt", 5_000, 3).await;
    app.stop_product(belt).await;

    let page = app.admin_products("").await;
    assert_eq!(
        page_ids(&page),
        vec![belt, coat, shirt],
        "stopped and sold-out ones too: {page}"
    );
    assert_eq!(page["next_after"], Value::Null);
    let statuses: Vec<&str> = items(&page)
        .iter()
        .map(|p| p["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["STOPPED", "ON_SALE", "ON_SALE"]);
    // The same answer as the product's own read: the lists grow with the product's fields.
    for item in items(&page) {
        let own = app.product(id_of(item)).await.json(200);
        assert_eq!(item, &own);
    }
    let public = app.list_products("").await.json(200);
    assert_eq!(ids(&public), vec![shirt, coat], "customers see only products on sale");
    assert_eq!(
        page_ids(&app.admin_products("?status=ON_SALE").await),
        vec![coat, shirt]
    );
    assert_eq!(page_ids(&app.admin_products("?status=STOPPED").await), vec![belt]);
    let first = app.admin_products("?status=ON_SALE&limit=1").await;
    assert_eq!(
        (page_ids(&first), first["next_after"].clone()),
        (vec![coat], json!(coat))
    );
    let rest = app
        .admin_products(&format!("?status=ON_SALE&limit=1&after={coat}"))
        .await;
    assert_eq!(page_ids(&rest), vec![shirt]);
    for bad in ["status=on_sale", "status=", "status=SOLD"] {
        app.admin_read(&format!("products?{bad}"))
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
}

async fn admin_lists_page_like_every_list(app: TestApp) {
    let products = app.new_products(5).await;
    let newest_first: Vec<i64> = products.iter().rev().copied().collect();
    let first = app.admin_products("?limit=2").await;
    assert_eq!(page_ids(&first), newest_first[..2]);
    assert_eq!(first["next_after"], json!(newest_first[1]));
    let second = app.admin_products(&format!("?limit=2&after={}", newest_first[1])).await;
    assert_eq!(page_ids(&second), newest_first[2..4]);
    let last = app.admin_products(&format!("?limit=2&after={}", newest_first[3])).await;
    assert_eq!(page_ids(&last), newest_first[4..]);
    assert_eq!(last["next_after"], Value::Null, "fewer than limit: the last page");
    assert_eq!(app.admin_products("?limit=100").await["next_after"], Value::Null);
    let token = app.admin_token().await;
    let every = app.all_pages("/api/v1/admin/products", Some(&token), 2).await;
    assert_eq!(every.len(), 5);

    for route in ["products", "coupons", "orders", "users"] {
        for query in [
            "limit=0",
            "limit=101",
            "limit=x",
            "limit=1.5",
            "after=0",
            "after=-3",
            "after=abc",
        ] {
            app.admin_read(&format!("{route}?{query}"))
                .await
                .assert_problem(400, "VALIDATION_FAILED");
        }
    }
}

async fn the_coupon_list_holds_sold_out_coupons_with_nothing_remaining(app: TestApp) {
    let plenty = app.new_coupon("RATE", 10, 100, 3_600).await;
    let single = app.new_coupon("FIXED", 5_000, 1, 3_600).await;
    let user = app.create_user().await;
    app.issue_ok(&user, single).await;

    let page = app.admin_coupons("").await;
    assert_eq!(page_ids(&page), vec![single, plenty], "the sold-out coupon too: {page}");
    let remaining: Vec<i64> = items(&page).iter().map(|c| int(c, "remaining_quantity")).collect();
    assert_eq!(remaining, [0, 100]);
    for item in items(&page) {
        assert_eq!(item, &app.coupon(id_of(item)).await.json(200), "the coupon's own shape");
    }
    assert_eq!(ids(&app.list_coupons("").await.json(200)), vec![plenty]);
    let first = app.admin_coupons("?limit=1").await;
    assert_eq!(
        (page_ids(&first), first["next_after"].clone()),
        (vec![single], json!(single))
    );
}

async fn the_order_list_holds_every_users_orders_filtered_by_computed_status(app: TestApp) {
    let product = app.new_product("Tee", 10_000, 100).await;
    let kim = app.buyer().await;
    let lee = app.buyer().await;
    let paid = app.buy(&kim, &[(product, 1)]).await;
    let refunded = app.buy(&lee, &[(product, 2)]).await;
    app.refund_ok(&lee, refunded).await;
    let cancelled = app.new_order(&kim, &[(product, 1)]).await;
    app.cancel(&kim, cancelled).await.expect_status(200);
    let overdue = app.new_order(&lee, &[(product, 1)]).await;
    let pending = app.new_order(&kim, &[(product, 3)]).await;
    // Overdue, but not yet marked by the expiry job: EXPIRED in every answer.
    let past = now_millis() - 60_000;
    app.db()
        .query_i64(
            "update purchase_order set expires_at = $1 where id = $2 returning id",
            &[past, overdue],
        )
        .await;

    let all = app.admin_orders("").await;
    assert_eq!(page_ids(&all), vec![pending, overdue, cancelled, refunded, paid]);
    for item in items(&all) {
        let owner = if int(item, "user_id") == kim.id { &kim } else { &lee };
        assert_eq!(
            item,
            &app.order(owner, id_of(item)).await.json(200),
            "the order's own shape"
        );
    }
    for (status, expected) in [
        ("PENDING_PAYMENT", vec![pending]),
        ("EXPIRED", vec![overdue]),
        ("PAID", vec![paid]),
        ("CANCELLED", vec![cancelled]),
        ("REFUNDED", vec![refunded]),
    ] {
        let page = app.admin_orders(&format!("?status={status}")).await;
        assert_eq!(page_ids(&page), expected, "{status}: {page}");
        assert!(items(&page).iter().all(|o| o["status"] == json!(status)));
    }
    let first = app.admin_orders("?limit=2").await;
    assert_eq!(
        (page_ids(&first), first["next_after"].clone()),
        (vec![pending, overdue], json!(overdue))
    );
    let rest = app.admin_orders(&format!("?limit=2&after={overdue}")).await;
    assert_eq!(page_ids(&rest), vec![cancelled, refunded]);
    let kims = app.admin_orders(&format!("?user_id={}", kim.id)).await;
    assert_eq!(page_ids(&kims), vec![pending, cancelled, paid]);
    let kims_pending = app
        .admin_orders(&format!("?user_id={}&status=PENDING_PAYMENT", kim.id))
        .await;
    assert_eq!(page_ids(&kims_pending), vec![pending]);
    let lees_first = app.admin_orders(&format!("?user_id={}&limit=1", lee.id)).await;
    assert_eq!(
        (page_ids(&lees_first), lees_first["next_after"].clone()),
        (vec![overdue], json!(overdue))
    );
    let lees_rest = app
        .admin_orders(&format!("?user_id={}&limit=1&after={overdue}", lee.id))
        .await;
    assert_eq!(page_ids(&lees_rest), vec![refunded]);
    let nobody = app.admin_orders("?user_id=987654321").await;
    assert_eq!(nobody, json!({"items": [], "next_after": null}));
    for bad in [
        "status=paid",
        "status=",
        "status=LOST",
        "user_id=0",
        "user_id=-2",
        "user_id=x",
    ] {
        app.admin_read(&format!("orders?{bad}"))
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
}

async fn users_are_listed_newest_first_and_found_by_email_in_any_case(app: TestApp) {
    let admin_id = app.admin().await.id;
    let kim = app.create_user().await;
    let lee = app.create_user().await;
    app.fund(&kim, 7_000).await;

    let all = app.admin_users("").await;
    assert_eq!(page_ids(&all), vec![lee.id, kim.id, admin_id]);
    let found = app.admin_users(&format!("?email={}", kim.email.to_uppercase())).await;
    assert_eq!(page_ids(&found), vec![kim.id], "{found}");
    assert_eq!(found["next_after"], Value::Null);
    let item = &items(&found)[0];
    assert_eq!(
        keys(item),
        ["balance", "created_at", "email", "id", "name", "role"]
            .into_iter()
            .collect()
    );
    assert_eq!(
        (item["email"].clone(), item["balance"].clone()),
        (json!(kim.email), json!(7_000))
    );
    assert_eq!(item["role"], json!("USER"));
    let admin_found = app.admin_users(&format!("?email={ADMIN_EMAIL}")).await;
    assert_eq!(items(&admin_found)[0]["role"], json!("ADMIN"));
    let nobody = app.admin_users("?email=nobody@example.com").await;
    assert_eq!(nobody, json!({"items": [], "next_after": null}));
    for bad in ["email=", "email=no-at-sign", "email=a@b", "email=two@@example.com"] {
        app.admin_read(&format!("users?{bad}"))
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
    let first = app.admin_users("?limit=1").await;
    assert_eq!(first["next_after"], json!(lee.id));
}

async fn one_user_is_read_with_role_balance_and_sign_up_time(app: TestApp) {
    let before = now_millis();
    let kim = app.create_user().await;
    app.fund(&kim, 12_000).await;
    let read = app.admin_user(kim.id).await.json(200);
    assert_eq!(read["id"], json!(kim.id));
    assert_eq!(read["email"], json!(kim.email));
    assert_eq!(read["name"], json!("Test User"));
    assert_eq!(read["role"], json!("USER"));
    assert_eq!(read["balance"], json!(12_000));
    let created = millis(&read["created_at"]);
    assert!(created >= before - 1_000 && created <= now_millis(), "{read}");
    let listed = app.admin_users(&format!("?email={}", kim.email)).await;
    assert_eq!(&items(&listed)[0], &read, "the same shape in the list");

    app.admin_user(987_654_321).await.assert_problem(404, "USER_NOT_FOUND");
    for bad in ["0", "-1", "abc", "99999999999999999999"] {
        app.admin_read(&format!("users/{bad}"))
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
}

async fn live_figures_count_paid_orders_refusals_by_reason_and_requests(app: TestApp) {
    let before = app.admin_live_on(0).await;
    assert_eq!(
        keys(&before),
        [
            "generated_at",
            "orders_paid_per_second",
            "orders_paid_total",
            "outbox_backlog",
            "outbox_oldest_unsent_age_seconds",
            "payment_failures",
            "requests_per_second",
        ]
        .into_iter()
        .collect()
    );
    assert!(millis(&before["generated_at"]) > 0);
    assert_eq!(before["payment_failures"], json!({}), "none refused yet");

    let product = app.new_product("Tee", 10_000, 2).await;
    let buyer = app.buyer().await;
    let too_late = app.new_order(&buyer, &[(product, 1)]).await;
    app.buy(&buyer, &[(product, 1)]).await;
    app.buy(&buyer, &[(product, 1)]).await;
    app.post_empty(&format!("/api/v1/orders/{too_late}/payment"), buyer.bearer())
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    app.restock(product, 1).await.expect_status(200);
    let broke = app.create_user().await;
    let unpaid = app.new_order(&broke, &[(product, 1)]).await;
    for _ in 0..2 {
        app.post_empty(&format!("/api/v1/orders/{unpaid}/payment"), broke.bearer())
            .await
            .assert_problem(409, "INSUFFICIENT_BALANCE");
    }

    let after = app.admin_live_on(0).await;
    assert_eq!(int(&after, "orders_paid_total"), int(&before, "orders_paid_total") + 2);
    assert_eq!(
        after["payment_failures"],
        json!({"INSUFFICIENT_BALANCE": 2, "OUT_OF_STOCK": 1})
    );
    let requests = after["requests_per_second"].as_f64().expect("a number");
    assert!(requests > 0.0, "requests were answered since the last call: {after}");
}

/// The paid rate is read from the database (every instance's payments): the orders whose
/// `paid_at` lies in the last 10 seconds, per second. One payment is moved a minute back in the
/// database, so only the other counts.
async fn the_paid_rate_counts_every_instances_payments_of_the_last_10_seconds(engine: Engine) {
    let app = TestApp::builder(engine).instances(2).spawn().await;
    let product = app.new_product("Tee", 10_000, 10).await;
    let buyer = app.buyer().await;
    let old = app.new_order(&buyer, &[(product, 1)]).await;
    app.pay_on(0, &buyer, old, None).await.expect_status(200);
    let minute_ago = now_millis() - 60_000;
    app.db()
        .query_i64(
            "update purchase_order set paid_at = $1 where id = $2 returning id",
            &[minute_ago, old],
        )
        .await;
    let recent = app.new_order(&buyer, &[(product, 1)]).await;
    app.pay_on(1, &buyer, recent, None).await.expect_status(200);
    let on_0 = app.admin_live_on(0).await;
    assert_eq!(
        on_0["orders_paid_per_second"],
        json!(0.1),
        "one order in 10 seconds: {on_0}"
    );
    assert_eq!(on_0["orders_paid_total"], json!(1), "instance 0 paid one order itself");
    let on_1 = app.admin_live_on(1).await;
    assert_eq!(on_1["orders_paid_total"], json!(1), "and instance 1 the other");
}

async fn live_figures_show_the_outbox_backlog_and_its_oldest_event(engine: Engine) {
    // The relay does not run on its own, so the events wait in the outbox.
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_RELAY_INTERVAL_MS", steps::NEVER_MS)
        .spawn()
        .await;
    let empty = app.admin_live_on(0).await;
    assert_eq!(empty["outbox_backlog"], json!(0));
    assert_eq!(empty["outbox_oldest_unsent_age_seconds"], Value::Null);
    let product = app.new_product("Tee", 10_000, 5).await;
    let buyer = app.buyer().await;
    let first = app.buy(&buyer, &[(product, 1)]).await;
    app.buy(&buyer, &[(product, 1)]).await;
    app.refund_ok(&buyer, first).await;

    let live = app.admin_live_on(0).await;
    let unsent = app
        .db()
        .query_i64("select count(*) from outbox where sent_at is null", &[])
        .await;
    assert_eq!(unsent, 3, "two payments and a refund wait");
    assert_eq!(live["outbox_backlog"], json!(unsent));
    let oldest = app
        .db()
        .query_i64("select min(created_at) from outbox where sent_at is null", &[])
        .await;
    let age = live["outbox_oldest_unsent_age_seconds"].as_f64().expect("an age");
    let generated = millis(&live["generated_at"]);
    assert!(
        (age * 1000.0 - (generated - oldest) as f64).abs() <= 1.0,
        "age {age} s is generated_at - created_at of the oldest event ({generated} - {oldest})"
    );
}

async fn hourly_sales_have_one_item_per_hour_ending_now(app: TestApp) {
    let before = now_millis() / 3_600_000;
    let sales = app.admin_sales_hourly("").await;
    let after = now_millis() / 3_600_000;
    assert_eq!(sales["hours"], json!(72));
    let hours: Vec<&str> = items(&sales).iter().map(|i| i["hour"].as_str().unwrap_or("")).collect();
    assert_eq!(hours.len(), 72);
    let last = hours[71];
    assert!(
        last == hour_text(before) || last == hour_text(after),
        "the last item is the current hour: {last}"
    );
    let newest = if last == hour_text(before) { before } else { after };
    let expected: Vec<String> = (0..72).map(|i| hour_text(newest - 71 + i)).collect();
    assert_eq!(hours, expected, "every hour, oldest first");
    assert!(
        items(&sales).iter().all(|i| i["quantity"] == json!(0)),
        "nothing sold yet"
    );

    let three = app.admin_sales_hourly("?hours=3").await;
    assert_eq!((three["hours"].clone(), items(&three).len()), (json!(3), 3));
    assert_eq!(items(&app.admin_sales_hourly("?hours=168").await).len(), 168);
    for bad in ["hours=0", "hours=169", "hours=-1", "hours=x", "hours=2.5"] {
        app.admin_read(&format!("sales/hourly?{bad}"))
            .await
            .assert_problem(400, "VALIDATION_FAILED");
    }
}

async fn hourly_sales_count_paid_units_less_refunds(app: TestApp) {
    let products = app.new_products(2).await;
    let buyer = app.buyer().await;
    app.buy(&buyer, &[(products[0], 3), (products[1], 2)]).await;
    let refunded = app.buy(&buyer, &[(products[0], 4)]).await;
    app.refund_ok(&buyer, refunded).await;
    app.new_order(&buyer, &[(products[1], 9)]).await; // never paid: no sale
    // Sales of earlier hours, put straight into the hourly aggregate (the server has no clock to
    // move): 2 hours ago inside the window, 72 hours ago outside it.
    let this_hour = now_millis() / 3_600_000;
    let insert = "insert into product_sales_hourly (hour, product_id, quantity) values ($1, $2, $3) \
                  on conflict (hour, product_id) do update set quantity = product_sales_hourly.quantity + excluded.quantity \
                  returning quantity";
    app.db().query_i64(insert, &[this_hour - 2, products[0], 6]).await;
    app.db().query_i64(insert, &[this_hour - 2, products[1], 1]).await;
    app.db().query_i64(insert, &[this_hour - 72, products[1], 50]).await;

    let sales = app.admin_sales_hourly("").await;
    let by_hour: Vec<(String, i64)> = items(&sales)
        .iter()
        .map(|i| (i["hour"].as_str().unwrap_or("").to_owned(), int(i, "quantity")))
        .collect();
    let total: i64 = by_hour.iter().map(|(_, q)| q).sum();
    assert_eq!(
        total,
        5 + 7,
        "5 units paid now (4 more refunded) and 7 two hours ago: {sales}"
    );
    let two_ago = by_hour
        .iter()
        .find(|(hour, _)| *hour == hour_text(this_hour - 2))
        .expect("the hour 2 hours ago is in the window");
    assert_eq!(two_ago.1, 7, "summed over products");
}
