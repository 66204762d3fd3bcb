//! Races on the balance with three server instances on one PostgreSQL database: the money moves
//! exactly as often as the contract says, whichever instance answers, and the database agrees
//! with the API afterwards (`shared/DESIGN.md`, "Invariants every change keeps").

use ecommerce_testkit::*;
use futures_util::future::join_all;

const INSTANCES: usize = 3;

/// Checks, straight in the database, that the user's balance is the sum of its history lines
/// and equals `expected`; returns the number of history lines.
async fn assert_balance_matches_history(app: &TestApp, user: &TestUser, expected: i64) -> i64 {
    let db = app.db();
    let balance = db
        .query_i64("select balance from account where id = $1", &[user.id])
        .await;
    let history_sum = db
        .query_i64(
            "select coalesce(sum(amount), 0) from balance_entry where user_id = $1",
            &[user.id],
        )
        .await;
    let lines = db
        .query_i64("select count(*) from balance_entry where user_id = $1", &[user.id])
        .await;
    assert_eq!(balance, expected, "account.balance in the database");
    assert_eq!(
        history_sum, balance,
        "the balance is the sum of its balance_entry lines"
    );
    lines
}

/// The balance as each instance reports it: all must agree.
async fn balance_on_every_instance(app: &TestApp, user: &TestUser) -> i64 {
    let path = format!("/api/v1/users/{}/balance", user.id);
    let mut seen = Vec::new();
    for index in 0..app.instance_count() {
        let response = app
            .request_on(index, Method::GET, &path)
            .bearer_auth(&user.token)
            .fetch()
            .await;
        seen.push(response.expect_status(200)["balance"].as_i64().unwrap());
    }
    assert!(
        seen.windows(2).all(|pair| pair[0] == pair[1]),
        "instances disagree on the balance: {seen:?}"
    );
    seen[0]
}

postgres_tests!(
    three_instances_started_at_once_on_one_empty_database_share_users_and_tokens,
    fifty_simultaneous_charges_with_distinct_keys_add_up_to_exactly_fifty_thousand,
    twenty_simultaneous_charges_with_one_key_move_the_balance_once,
    simultaneous_charges_near_the_limit_never_take_the_balance_beyond_ten_million,
);

async fn three_instances_started_at_once_on_one_empty_database_share_users_and_tokens(engine: Engine) {
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    for index in 0..INSTANCES {
        let health = app.request_on(index, Method::GET, "/health").fetch().await;
        assert_eq!(health.expect_status(200), &json!({"status": "ok"}));
    }
    // One admin exists although every instance created it at start-up.
    let admins = app
        .db()
        .query_i64("select count(*) from account where role = 'ADMIN'", &[])
        .await;
    assert_eq!(admins, 1);

    // A token issued by one instance is accepted by the others.
    let user = app.create_user().await;
    let path = format!("/api/v1/users/{}/balance", user.id);
    for index in 0..INSTANCES {
        let response = app
            .request_on(index, Method::GET, &path)
            .bearer_auth(&user.token)
            .fetch()
            .await;
        assert_eq!(response.expect_status(200), &json!({"user_id": user.id, "balance": 0}));
    }
}

async fn fifty_simultaneous_charges_with_distinct_keys_add_up_to_exactly_fifty_thousand(engine: Engine) {
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let user = app.create_user().await;

    let charges = (0..50).map(|n| {
        let key = unique_key();
        let app = &app;
        let user = &user;
        async move { app.charge_on(n % INSTANCES, user, 1_000, &key).await }
    });
    let answers = join_all(charges).await;
    for answer in &answers {
        let body = answer.expect_status(200);
        assert_eq!(body["charged_amount"], json!(1_000));
    }
    // Each charge saw a distinct balance after it: no update was lost or doubled.
    let mut balances_after: Vec<i64> = answers
        .iter()
        .map(|answer| answer.body["balance"].as_i64().unwrap())
        .collect();
    balances_after.sort_unstable();
    assert_eq!(balances_after, (1..=50).map(|n| n * 1_000).collect::<Vec<_>>());

    assert_eq!(balance_on_every_instance(&app, &user).await, 50_000);
    let history = app
        .all_pages(
            &format!("/api/v1/users/{}/balance/history", user.id),
            Some(&user.token),
            100,
        )
        .await;
    assert_eq!(history.len(), 50);
    let sum: i64 = history.iter().map(|line| line["amount"].as_i64().unwrap()).sum();
    assert_eq!(sum, 50_000, "the history sums to the balance");
    // Newest first, and each line's balance_after is the running total in commit order.
    let mut running = 0;
    for line in history.iter().rev() {
        running += line["amount"].as_i64().unwrap();
        assert_eq!(line["balance_after"], json!(running), "line {line}");
    }

    let lines = assert_balance_matches_history(&app, &user, 50_000).await;
    assert_eq!(lines, 50);
}

async fn twenty_simultaneous_charges_with_one_key_move_the_balance_once(engine: Engine) {
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let user = app.create_user().await;
    let key = unique_key();

    let charges = (0..20).map(|n| {
        let (app, user, key) = (&app, &user, &key);
        async move { app.charge_on(n % INSTANCES, user, 5_000, key).await }
    });
    let answers = join_all(charges).await;

    let expected = json!({"user_id": user.id, "charged_amount": 5_000, "balance": 5_000});
    let mut succeeded = 0;
    for answer in &answers {
        if answer.status == 200 {
            assert_eq!(answer.body, expected, "every 200 is the first answer");
            succeeded += 1;
        } else {
            answer.assert_problem(409, "REQUEST_IN_PROGRESS");
        }
    }
    assert!(succeeded >= 1, "at least the first request succeeds");

    // Afterwards the key replays the stored answer on every instance.
    for index in 0..INSTANCES {
        let replay = app.charge_on(index, &user, 5_000, &key).await;
        assert_eq!(replay.expect_status(200), &expected);
    }
    assert_eq!(balance_on_every_instance(&app, &user).await, 5_000);
    let lines = assert_balance_matches_history(&app, &user, 5_000).await;
    assert_eq!(lines, 1, "one history line for one key");
}

async fn simultaneous_charges_near_the_limit_never_take_the_balance_beyond_ten_million(engine: Engine) {
    let app = TestApp::spawn_n(engine, INSTANCES).await;
    let user = app.create_user().await;
    for _ in 0..9 {
        app.charge(&user, 1_000_000, &unique_key()).await.expect_status(200);
    }

    // Room for exactly ten of these twenty.
    let charges = (0..20).map(|n| {
        let key = unique_key();
        let (app, user) = (&app, &user);
        async move { app.charge_on(n % INSTANCES, user, 100_000, &key).await }
    });
    let answers = join_all(charges).await;
    let mut succeeded = 0;
    for answer in &answers {
        if answer.status == 200 {
            succeeded += 1;
        } else {
            answer.assert_problem(400, "BALANCE_LIMIT_EXCEEDED");
        }
    }
    assert_eq!(succeeded, 10, "exactly the charges that fit succeed");
    assert_eq!(balance_on_every_instance(&app, &user).await, 10_000_000);
    let lines = assert_balance_matches_history(&app, &user, 10_000_000).await;
    assert_eq!(lines, 19);
}
