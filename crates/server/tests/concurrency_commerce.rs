//! Races on coupons, stock and payment with three server instances on one PostgreSQL database,
//! requests spread over the instances: the guarded writes of `shared/DESIGN.md` (decision 1)
//! let exactly the right requests win, and the database keeps every invariant afterwards
//! ("Invariants every change keeps").

use std::collections::{BTreeMap, HashSet};

use ecommerce_testkit::*;
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};

const INSTANCES: usize = 3;

/// The races run one at a time: each starts three servers with their own connection pools, and
/// PostgreSQL allows 100 connections for every test binary running on this machine.
static ONE_RACE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// Helpers local to these tests
// ---------------------------------------------------------------------------------------------

/// How many answers had each `status code` (e.g. `"409 OUT_OF_STOCK"`, `"201"`); every error
/// must be a well-formed problem.
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

/// The invariants on money, stock and events that hold after any race, checked in the database
/// ([`ecommerce_testkit::invariants`]): every balance is the sum of its history and never
/// negative; per product, what paid orders took plus what is left is what was stocked
/// (`stocked`), also in the hourly sales table; every order that was paid (now `PAID` or
/// `REFUNDED`) has exactly one `order.paid` event and there is no other.
async fn assert_money_stock_and_event_invariants(app: &TestApp, stocked: &[(i64, i64)]) {
    app.db().assert_invariants().await;
    app.db().assert_stock_accounts_for(stocked).await;
}

// ---------------------------------------------------------------------------------------------
// Races
// ---------------------------------------------------------------------------------------------

postgres_tests!(
    three_hundred_users_rushing_a_fifty_coupon_get_exactly_fifty,
    one_user_firing_twenty_issue_requests_at_once_gets_one_coupon,
    a_hundred_buyers_paying_at_once_for_twenty_units_leave_exactly_twenty_paid,
    multi_line_orders_taking_products_in_opposite_orders_never_deadlock,
    one_coupon_on_two_orders_paid_at_once_pays_exactly_one,
);

async fn three_hundred_users_rushing_a_fifty_coupon_get_exactly_fifty(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let users = app.create_users(300).await;
    let coupon_id = app.new_coupon("FIXED", 1000, 50, 3600).await;

    let responses = join_all(users.iter().map(|user| app.issue(user, coupon_id))).await;
    assert_eq!(
        tally(&responses),
        counts(&[("201", 50), ("409 COUPON_SOLD_OUT", 250)]),
        "answers to 300 simultaneous issue requests for 50 coupons"
    );
    let mut winners = HashSet::new();
    for (user, response) in users.iter().zip(&responses) {
        if response.status == 201 {
            assert_eq!(response.body["coupon_id"], json!(coupon_id));
            assert_eq!(response.body["status"], json!("AVAILABLE"));
            winners.insert(user.id);
        }
    }
    assert_eq!(winners.len(), 50);

    let db = app.db();
    let rows = db
        .query_i64("select count(*) from user_coupon where coupon_id = $1", &[coupon_id])
        .await;
    let holders = db
        .query_i64(
            "select count(distinct user_id) from user_coupon where coupon_id = $1",
            &[coupon_id],
        )
        .await;
    let remaining = db
        .query_i64(
            "select coalesce(sum(remaining), 0) from coupon_shard where coupon_id = $1",
            &[coupon_id],
        )
        .await;
    let negative = db
        .query_i64("select count(*) from coupon_shard where remaining < 0", &[])
        .await;
    let total = db
        .query_i64("select total_quantity from coupon where id = $1", &[coupon_id])
        .await;
    assert_eq!((rows, holders), (50, 50), "user_coupon rows and distinct holders");
    assert_eq!(remaining, 0, "the shards are empty");
    assert_eq!(negative, 0, "no shard below zero");
    assert_eq!(total, 50);
    let holder_ids = db
        .query_ids("select user_id from user_coupon where coupon_id = $1", &[coupon_id])
        .await;
    assert_eq!(
        holder_ids.into_iter().collect::<HashSet<_>>(),
        winners,
        "the 201s are the holders"
    );

    for index in 0..INSTANCES {
        let read = app
            .request_on(index, Method::GET, &format!("/api/v1/coupons/{coupon_id}"))
            .fetch()
            .await;
        assert_eq!(
            read.expect_status(200)["remaining_quantity"],
            json!(0),
            "instance {index}"
        );
    }
    // Late comers, on every instance, still hear the right answer.
    let late = join_all(users.iter().take(6).map(|user| app.issue(user, coupon_id))).await;
    for (user, response) in users.iter().zip(&late) {
        if winners.contains(&user.id) {
            response.assert_problem(409, "COUPON_ALREADY_ISSUED");
        } else {
            response.assert_problem(409, "COUPON_SOLD_OUT");
        }
    }
}

async fn one_user_firing_twenty_issue_requests_at_once_gets_one_coupon(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let user = app.create_user().await;
    let coupon_id = app.new_coupon("RATE", 10, 100, 3600).await;

    let responses = join_all((0..20).map(|_| app.issue(&user, coupon_id))).await;
    assert_eq!(
        tally(&responses),
        counts(&[("201", 1), ("409 COUPON_ALREADY_ISSUED", 19)]),
        "answers to 20 simultaneous issue requests of one user"
    );
    let db = app.db();
    let rows = db
        .query_i64(
            "select count(*) from user_coupon where coupon_id = $1 and user_id = $2",
            &[coupon_id, user.id],
        )
        .await;
    let remaining = db
        .query_i64(
            "select coalesce(sum(remaining), 0) from coupon_shard where coupon_id = $1",
            &[coupon_id],
        )
        .await;
    assert_eq!(rows, 1, "one user coupon row");
    assert_eq!(remaining, 99, "exactly one coupon taken from the shards");
    let path = format!("/api/v1/users/{}/coupons", user.id);
    let listed = app.get(&path, Some(&user.token)).await;
    assert_eq!(listed.expect_status(200)["items"].as_array().map(Vec::len), Some(1));
}

async fn a_hundred_buyers_paying_at_once_for_twenty_units_leave_exactly_twenty_paid(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let buyers = app.create_users(100).await;
    app.fund_all(&buyers, 1000).await;
    let product = id_of(&app.create_product("Limited drop", 1000, 20).await);
    let orders: Vec<i64> = stream::iter(&buyers)
        .map(|buyer| {
            let app = &app;
            async move { app.new_order(buyer, &[(product, 1)]).await }
        })
        .buffered(16)
        .collect()
        .await;

    let payments = buyers
        .iter()
        .zip(&orders)
        .enumerate()
        .map(|(index, (buyer, &order_id))| app.pay_on(index, buyer, order_id, None));
    let responses = join_all(payments).await;
    assert_eq!(
        tally(&responses),
        counts(&[("200", 20), ("409 OUT_OF_STOCK", 80)]),
        "answers to 100 simultaneous payments for 20 units"
    );
    for response in responses.iter().filter(|r| r.status == 200) {
        assert_eq!(response.body["status"], json!("PAID"));
        assert_eq!(response.body["paid_amount"], json!(1000));
    }

    let db = app.db();
    assert_eq!(
        db.query_i64("select stock from product where id = $1", &[product])
            .await,
        0
    );
    let pending = db
        .query_i64(
            "select count(*) from purchase_order where status = 'PENDING_PAYMENT'",
            &[],
        )
        .await;
    assert_eq!(pending, 80, "the losers' orders stay PENDING_PAYMENT");
    let buyer_ids: Vec<i64> = buyers.iter().map(|b| b.id).collect();
    let mut left_with_money = 0;
    for &id in &buyer_ids {
        let balance = db.query_i64("select balance from account where id = $1", &[id]).await;
        assert!(balance == 0 || balance == 1000, "buyer {id} has {balance}");
        if balance == 1000 {
            left_with_money += 1;
        }
    }
    assert_eq!(left_with_money, 80, "only the 20 winners paid");
    assert_money_stock_and_event_invariants(&app, &[(product, 20)]).await;
}

async fn multi_line_orders_taking_products_in_opposite_orders_never_deadlock(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let buyers = app.create_users(40).await;
    app.fund_all(&buyers, 1000).await;
    let a = id_of(&app.create_product("A", 100, 25).await);
    let b = id_of(&app.create_product("B", 100, 30).await);
    let c = id_of(&app.create_product("C", 100, 30).await);
    let permutations = [[a, b, c], [c, b, a], [b, a, c], [c, a, b], [a, c, b], [b, c, a]];
    let orders: Vec<i64> = stream::iter(buyers.iter().enumerate())
        .map(|(index, buyer)| {
            let lines: Vec<(i64, i64)> = permutations[index % permutations.len()]
                .iter()
                .map(|&product| (product, 1))
                .collect();
            let app = &app;
            async move { app.new_order(buyer, &lines).await }
        })
        .buffered(16)
        .collect()
        .await;

    let payments = buyers
        .iter()
        .zip(&orders)
        .enumerate()
        .map(|(index, (buyer, &order_id))| app.pay_on(index, buyer, order_id, None));
    let responses = join_all(payments).await;
    // Every payment needs one A, and A (25) runs out first: exactly 25 win.
    assert_eq!(
        tally(&responses),
        counts(&[("200", 25), ("409 OUT_OF_STOCK", 15)]),
        "answers to 40 simultaneous payments of overlapping multi-line orders"
    );
    let db = app.db();
    assert_eq!(db.query_i64("select stock from product where id = $1", &[a]).await, 0);
    assert_eq!(db.query_i64("select stock from product where id = $1", &[b]).await, 5);
    assert_eq!(db.query_i64("select stock from product where id = $1", &[c]).await, 5);
    assert_money_stock_and_event_invariants(&app, &[(a, 25), (b, 30), (c, 30)]).await;
}

async fn one_coupon_on_two_orders_paid_at_once_pays_exactly_one(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let users = app.create_users(10).await;
    app.fund_all(&users, 10_000).await;
    let product = id_of(&app.create_product("A", 3000, 1000).await);
    let coupon_id = app.new_coupon("FIXED", 1000, 100, 3600).await;

    let mut plans = Vec::new();
    for user in &users {
        let user_coupon = id_of(app.issue(user, coupon_id).await.expect_status(201));
        let first = app.new_order(user, &[(product, 1)]).await;
        let second = app.new_order(user, &[(product, 1)]).await;
        plans.push((user, user_coupon, first, second));
    }
    // Both payments of a user at once, on two different instances.
    let payments = plans
        .iter()
        .enumerate()
        .flat_map(|(index, &(user, user_coupon, first, second))| {
            [
                app.pay_on(index, user, first, Some(user_coupon)),
                app.pay_on(index + 1, user, second, Some(user_coupon)),
            ]
        });
    let responses = join_all(payments).await;
    assert_eq!(
        tally(&responses),
        counts(&[("200", 10), ("409 COUPON_ALREADY_USED", 10)]),
        "answers to two simultaneous payments with one coupon, for 10 users"
    );

    let db = app.db();
    for (index, &(user, user_coupon, first, second)) in plans.iter().enumerate() {
        let answers = [&responses[2 * index], &responses[2 * index + 1]];
        let winner = match (answers[0].status, answers[1].status) {
            (200, 409) => first,
            (409, 200) => second,
            other => panic!("user {}: expected one 200 and one 409, got {other:?}", user.id),
        };
        let loser = if winner == first { second } else { first };
        let used_by = db
            .query_i64(
                "select coalesce(order_id, 0) from user_coupon where id = $1",
                &[user_coupon],
            )
            .await;
        assert_eq!(used_by, winner, "the user coupon names the paid order");
        let paid_with_it = db
            .query_i64(
                "select count(*) from purchase_order where user_coupon_id = $1 and status = 'PAID'",
                &[user_coupon],
            )
            .await;
        assert_eq!(paid_with_it, 1, "a user coupon pays at most one order");
        let loser_state = db
            .query_i64(
                "select count(*) from purchase_order where id = $1 and status = 'PENDING_PAYMENT' and user_coupon_id is null",
                &[loser],
            )
            .await;
        assert_eq!(loser_state, 1, "the other order stays pending without a coupon");
        assert_eq!(app.balance(user).await, 8000);
        let listed = app
            .get(&format!("/api/v1/users/{}/coupons", user.id), Some(&user.token))
            .await;
        let listed = listed.expect_status(200);
        assert_eq!(listed["items"][0]["status"], json!("USED"));
        assert_eq!(listed["items"][0]["order_id"], json!(winner));
    }
    assert_money_stock_and_event_invariants(&app, &[(product, 1000)]).await;
}

postgres_tests!(
    an_order_paid_many_times_at_once_is_paid_once_with_or_without_an_idempotency_key,
    refunds_racing_refunds_and_payments_racing_cancels_have_one_winner,
);

async fn an_order_paid_many_times_at_once_is_paid_once_with_or_without_an_idempotency_key(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let app = &app;
    let users = app.create_users(8).await;
    app.fund_all(&users, 10_000).await;
    let product = id_of(&app.create_product("A", 2500, 1000).await);
    let mut plain = Vec::new();
    let mut keyed = Vec::new();
    for user in &users {
        plain.push(app.new_order(user, &[(product, 1)]).await);
        keyed.push(app.new_order(user, &[(product, 1)]).await);
    }

    // Ten payments of each order at once, without a key: one wins.
    let without_key = users
        .iter()
        .zip(&plain)
        .flat_map(|(user, &order_id)| (0..10).map(move |attempt| app.pay_on(attempt, user, order_id, None)));
    let responses = join_all(without_key).await;
    assert_eq!(
        tally(&responses),
        counts(&[("200", 8), ("409 ORDER_NOT_PENDING", 72)]),
        "ten simultaneous payments of each of 8 orders"
    );

    // Ten payments of each order at once with one key: the money moves once and every 200
    // is the same answer; the others may only hear that the first is still running.
    let key_of = |order_id: i64| format!("pay-{order_id}");
    let with_key = users.iter().zip(&keyed).flat_map(|(user, &order_id)| {
        let key = key_of(order_id);
        (0..10).map(move |attempt| {
            let key = key.clone();
            async move {
                app.request_on(
                    attempt % INSTANCES,
                    Method::POST,
                    &format!("/api/v1/orders/{order_id}/payment"),
                )
                .bearer_auth(&user.token)
                .header("Idempotency-Key", key)
                .json(&json!({}))
                .fetch()
                .await
            }
        })
    });
    let responses = join_all(with_key).await;
    for (index, chunk) in responses.chunks(10).enumerate() {
        let ok: Vec<&TestResponse> = chunk.iter().filter(|r| r.status == 200).collect();
        assert!(!ok.is_empty(), "order {}: no payment answered 200", keyed[index]);
        for response in &ok {
            assert_eq!(response.body, ok[0].body, "replays repeat the first answer");
            assert_eq!(response.body["status"], json!("PAID"));
        }
        for response in chunk.iter().filter(|r| r.status != 200) {
            response.assert_problem(409, "REQUEST_IN_PROGRESS");
        }
    }
    for user in &users {
        assert_eq!(
            app.balance(user).await,
            5000,
            "two payments of 2,500 for user {}",
            user.id
        );
    }
    let db = app.db();
    let payments = db
        .query_i64("select count(*) from balance_entry where kind = 'PAYMENT'", &[])
        .await;
    assert_eq!(payments, 16, "one PAYMENT line per paid order");
    assert_money_stock_and_event_invariants(app, &[(product, 1000)]).await;
}

async fn refunds_racing_refunds_and_payments_racing_cancels_have_one_winner(engine: Engine) {
    let _race = ONE_RACE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let app = &app;
    let users = app.create_users(10).await;
    app.fund_all(&users, 10_000).await;
    let product = id_of(&app.create_product("A", 4000, 100).await);
    let coupon_id = app.new_coupon("RATE", 50, 100, 3600).await;
    let mut plans = Vec::new();
    for user in &users {
        let user_coupon = id_of(app.issue(user, coupon_id).await.expect_status(201));
        let paid = app.new_order(user, &[(product, 1)]).await;
        app.pay_on(0, user, paid, Some(user_coupon)).await.expect_status(200);
        let pending = app.new_order(user, &[(product, 1)]).await;
        plans.push((user, user_coupon, paid, pending));
    }
    assert_eq!(app.balance(plans[0].0).await, 8000);

    let races = plans.iter().enumerate().flat_map(|(index, &(user, _, paid, pending))| {
        let path = |order_id: i64, action: &str| format!("/api/v1/orders/{order_id}/{action}");
        let send = move |instance: usize, path: String, body: Option<Value>| {
            let request = app
                .request_on(instance % INSTANCES, Method::POST, &path)
                .bearer_auth(&user.token);
            let request = match body {
                Some(body) => request.json(&body),
                None => request,
            };
            request.fetch()
        };
        [
            send(index, path(paid, "refund"), None),
            send(index + 1, path(paid, "refund"), None),
            send(index + 2, path(pending, "payment"), Some(json!({}))),
            send(index, path(pending, "cancel"), None),
        ]
    });
    let responses = join_all(races).await;

    let db = app.db();
    for (chunk, &(user, user_coupon, paid, pending)) in responses.chunks(4).zip(&plans) {
        let refunds = tally(&chunk[..2]);
        assert_eq!(
            refunds,
            counts(&[("200", 1), ("409 ORDER_NOT_PAID", 1)]),
            "two refunds of order {paid} at once"
        );
        let (payment, cancel) = (&chunk[2], &chunk[3]);
        let pay_won = match (payment.status, cancel.status) {
            (200, _) => {
                cancel.assert_problem(409, "ORDER_NOT_PENDING");
                true
            }
            (_, 200) => {
                payment.assert_problem(409, "ORDER_NOT_PENDING");
                false
            }
            other => panic!("pay and cancel of order {pending}: one must win, got {other:?}"),
        };
        let expected_status = if pay_won { "PAID" } else { "CANCELLED" };
        let stored = db
            .query_i64(
                "select count(*) from purchase_order where id = $1 and status = 'PAID'",
                &[pending],
            )
            .await;
        assert_eq!(stored == 1, pay_won, "order {pending} is stored {expected_status}");
        let refunded = db
            .query_i64(
                "select count(*) from purchase_order where id = $1 and status = 'REFUNDED'",
                &[paid],
            )
            .await;
        assert_eq!(refunded, 1, "order {paid} is refunded");
        // Refunded once: 10,000 − 2,000 + 2,000, then maybe the pending order at 4,000.
        let expected_balance = if pay_won { 6000 } else { 10_000 };
        assert_eq!(app.balance(user).await, expected_balance, "balance of user {}", user.id);
        let refund_lines = db
            .query_i64(
                "select count(*) from balance_entry where user_id = $1 and kind = 'REFUND'",
                &[user.id],
            )
            .await;
        assert_eq!(refund_lines, 1, "one REFUND line for user {}", user.id);
        let coupon_free = db
            .query_i64(
                "select count(*) from user_coupon where id = $1 and used_at is null and order_id is null",
                &[user_coupon],
            )
            .await;
        assert_eq!(coupon_free, 1, "the refunded order's coupon is free again");
    }
    let refunded_events = db
        .query_i64("select count(*) from outbox where event_type = 'order.refunded'", &[])
        .await;
    assert_eq!(refunded_events, 10, "one order.refunded event per refund");
    // Stock: 100, 10 sold and given back, plus whatever pending orders won their payment.
    let pending_paid = db
        .query_i64("select count(*) from purchase_order where status = 'PAID'", &[])
        .await;
    let left = db
        .query_i64("select stock from product where id = $1", &[product])
        .await;
    assert_eq!(left, 100 - pending_paid);
    assert_money_stock_and_event_invariants(app, &[(product, 100)]).await;
}
