//! Storage conformance suite: every rule of the storage port (`ecommerce_domain::store`), written
//! once over `S: Store` and run against SQLite and PostgreSQL, each test on a fresh database.
//! The races at the end run many transactions at once; on SQLite they queue for the one writer,
//! on PostgreSQL they meet on real row locks.

mod support;

use std::collections::HashSet;

use ecommerce_domain::account::{self, Role};
use ecommerce_domain::cart;
use ecommerce_domain::catalog::{self, MAX_STOCK, NewProduct, ProductPatch, ProductRequest, ProductStatus};
use ecommerce_domain::changes::{ProductChange, ProductChangeSubscriber};
use ecommerce_domain::coupon::{self, DiscountType, NewUserCoupon, UserCouponStatus};
use ecommerce_domain::draw::{self, DrawRequest, EntryStatus, NewDraw};
use ecommerce_domain::events::Event;
use ecommerce_domain::order::{self, OrderStatus, Payment};
use ecommerce_domain::store::{IdempotencyScope, KeyClaim, OutboxBacklog, Store, Tx};
use ecommerce_domain::wallet::{self, EntryKind, MAX_BALANCE, NewBalanceEntry};
use ecommerce_domain::{CouponId, DrawId, Error, Hour, Krw, OrderId, ProductId, Timestamp, UserCouponId, UserId};
use support::*;

conformance!(
    migrating_again_keeps_the_schema_and_the_data,
    three_instances_can_migrate_one_fresh_database_at_once,
    the_first_stored_setting_wins,
    an_email_is_registered_only_once,
    upsert_admin_creates_or_promotes_the_account,
    token_state_follows_role_version_and_logouts,
    a_password_changes_only_from_the_current_hash_and_bumps_the_token_version,
    pending_orders_are_counted_per_user_and_the_account_lock_says_whether_it_exists,
    every_use_case_about_an_unknown_user_answers_user_not_found,
    products_are_created_read_and_patched,
    committed_product_changes_are_published_and_rolled_back_ones_are_not,
    products_on_sale_are_listed_oldest_first_by_keyset,
    restocking_stops_at_the_maximum_stock,
    returned_stock_is_capped_at_the_maximum,
    stock_is_taken_only_while_it_covers_the_quantity,
    balance_credits_and_debits_respect_their_guards,
    balance_history_is_newest_first_and_pages_by_keyset,
    idempotency_keys_are_fresh_then_replayed_or_reused,
    a_rolled_back_idempotency_key_is_free_again,
    a_stored_answer_that_cannot_be_read_back_is_an_error,
    purging_removes_only_keys_older_than_the_cutoff,
    a_released_lease_lets_the_events_go_out_at_once,
    purging_the_outbox_removes_only_events_sent_before_the_cutoff,
    the_cart_keeps_items_in_the_order_first_added,
    coupon_quantity_is_spread_over_shards_that_sum_to_the_total,
    take_coupon_starts_at_the_given_shard_and_moves_on_when_it_is_empty,
    take_coupon_hands_out_exactly_the_total_quantity,
    coupons_in_stock_are_newest_first_and_hide_sold_out_ones,
    a_user_holds_a_coupon_at_most_once,
    coupon_holders_are_everyone_who_holds_the_coupon,
    user_coupon_status_is_computed_on_read,
    orders_are_read_back_with_lines_in_request_order,
    orders_are_listed_newest_first_by_computed_status,
    mark_paid_accepts_only_pending_unexpired_orders,
    expire_orders_marks_only_overdue_pending_orders,
    popular_ranks_by_quantity_then_product_id,
    refunded_sales_cancel_out_of_popular,
    popular_counts_only_the_hours_in_the_window,
    outbox_events_wait_for_earlier_events_of_their_order,
    a_leased_event_is_not_leased_again_until_the_lease_runs_out,
    outbox_backlog_counts_unsent_events_and_the_oldest,
    paying_takes_stock_money_and_coupon_and_records_the_sale,
    a_payment_failing_on_balance_changes_nothing,
    a_payment_failing_on_stock_changes_nothing,
    paying_with_an_unusable_coupon_fails,
    refunding_gives_back_money_stock_and_coupon,
    a_refund_never_fails_on_the_stock_limit,
    only_pending_unexpired_orders_can_be_cancelled,
    concurrent_stock_takes_never_oversell,
    concurrent_coupon_issues_never_exceed_the_total,
    concurrent_issues_to_one_user_give_one_coupon,
    concurrent_payments_with_overlapping_products_do_not_deadlock,
    concurrent_payments_of_one_order_pay_it_once,
    concurrent_charges_with_one_idempotency_key_move_money_once,
    concurrent_relays_lease_each_event_once,
    concurrent_expiry_runs_mark_each_order_once,
    concurrent_settings_agree_on_one_value,
    admin_lists_hold_every_product_and_coupon_newest_first,
    admin_order_list_holds_every_users_orders_by_computed_status,
    accounts_are_listed_newest_first_and_found_by_email,
    sales_by_hour_sum_the_products_of_each_hour_in_the_window,
    drop_fields_of_products_are_stored_patched_and_cleared,
    products_on_sale_leave_out_unreleased_ones_unless_asked,
    popular_leaves_out_unreleased_products,
    coupon_issue_windows_are_stored_and_end_their_listing,
    the_purchase_tally_adds_within_the_limit_and_never_goes_below_zero,
    payment_and_refund_keep_the_tally_and_the_limit,
    an_order_for_payment_comes_with_each_products_limit_and_tally,
    concurrent_purchases_of_one_user_stop_at_the_limit,
    a_draw_takes_its_units_from_stock_and_reads_back,
    draws_are_listed_newest_first_and_undrawn_only_on_request,
    an_entry_is_unique_per_user_and_counted_only_while_the_window_is_open,
    a_draw_is_claimed_once_and_settles_every_entry,
    a_draw_orders_unit_comes_back_on_cancel_and_on_expiry_but_payment_takes_none,
    twenty_thousand_entries_draw_in_one_transaction,
    concurrent_entries_of_one_user_make_one_entry,
    a_batch_of_entries_commits_together_and_keeps_one_entry_per_user,
    concurrent_draw_runs_draw_once,
);

postgres_only!(a_key_held_by_a_running_request_is_in_progress);

// ---------------------------------------------------------------------------------------------
// Migrations and settings

async fn migrating_again_keeps_the_schema_and_the_data<S: Engine>(db: TestDb<S>) {
    let first = db.connect().await;
    let kim = user(&first, "kim@example.com").await;
    let second = db.connect().await;
    let third = db.connect().await;
    let found = third
        .user(kim)
        .await
        .expect("read user")
        .expect("the user survives a second migration");
    assert_eq!(found.email, "kim@example.com");
    user(&second, "lee@example.com").await;
    assert!(
        first
            .credentials("lee@example.com")
            .await
            .expect("read credentials")
            .is_some()
    );
}

async fn three_instances_can_migrate_one_fresh_database_at_once<S: Engine>(db: TestDb<S>) {
    let url = db.url.clone();
    let tasks = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { S::open(&url).await.map_err(|e| e.to_string()) })
        })
        .collect();
    let stores = join_all(tasks).await;
    for store in &stores {
        assert!(
            store.is_ok(),
            "a concurrent migration failed: {store:?}",
            store = store.as_ref().err()
        );
    }
    let stores: Vec<S> = stores.into_iter().map(|s| s.expect("checked")).collect();
    let kim = user(&stores[0], "kim@example.com").await;
    for store in &stores {
        assert!(store.user(kim).await.expect("read user").is_some());
    }
}

async fn the_first_stored_setting_wins<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    assert_eq!(
        store.setting_or_insert("jwt_secret", "first").await.expect("setting"),
        "first"
    );
    assert_eq!(
        store.setting_or_insert("jwt_secret", "second").await.expect("setting"),
        "first"
    );
    assert_eq!(store.setting_or_insert("other", "x").await.expect("setting"), "x");
    let reconnected = db.connect().await;
    assert_eq!(
        reconnected
            .setting_or_insert("jwt_secret", "third")
            .await
            .expect("setting"),
        "first"
    );
}

async fn concurrent_settings_agree_on_one_value<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let tasks = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .setting_or_insert("jwt_secret", &format!("secret-{i}"))
                    .await
                    .expect("setting")
            })
        })
        .collect();
    let values: HashSet<String> = join_all(tasks).await.into_iter().collect();
    assert_eq!(values.len(), 1, "every instance must see the same secret: {values:?}");
}

// ---------------------------------------------------------------------------------------------
// Accounts

async fn an_email_is_registered_only_once<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;

    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.insert_user(&new_user("kim@example.com"), T0).await.expect("insert"),
        None,
        "the email is taken"
    );
    assert!(matches!(
        account::sign_up(&mut tx, &new_user("kim@example.com"), T0).await,
        Err(Error::EmailTaken)
    ));
    let lee = tx
        .insert_user(&new_user("lee@example.com"), T0)
        .await
        .expect("insert")
        .expect("a new email is free");
    assert!(tx.user_exists(lee).await.expect("exists"));
    assert!(!tx.user_exists(lee.unknown()).await.expect("exists"));
    tx.commit().await.expect("commit");

    assert_ne!(kim, lee);
    let found = store.user(kim).await.expect("read").expect("kim exists");
    assert_eq!(
        (found.email.as_str(), found.name.as_str(), found.role),
        ("kim@example.com", "Kim", Role::User)
    );
    let credentials = store
        .credentials("kim@example.com")
        .await
        .expect("read")
        .expect("kim can log in");
    assert_eq!(
        (
            credentials.user_id,
            credentials.password_hash.as_str(),
            credentials.role
        ),
        (kim, "hash of kim@example.com", Role::User)
    );
    assert!(store.credentials("nobody@example.com").await.expect("read").is_none());
    assert!(store.user(lee.unknown()).await.expect("read").is_none());
    assert_eq!(
        store.balance(kim).await.expect("read"),
        Some(Krw(0)),
        "a new account starts at 0"
    );
    assert!(!store.admin_exists().await.expect("read"));
}

async fn upsert_admin_creates_or_promotes_the_account<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let mut tx = store.begin().await.expect("begin");
    let admin = tx
        .upsert_admin(&new_user("admin@example.com"), T0)
        .await
        .expect("upsert");
    tx.commit().await.expect("commit");
    assert!(store.admin_exists().await.expect("read"));
    assert_eq!(
        store
            .credentials("admin@example.com")
            .await
            .expect("read")
            .expect("exists")
            .role,
        Role::Admin
    );

    let kim = user(&store, "kim@example.com").await;
    let mut promoted = new_user("kim@example.com");
    promoted.password_hash = "new hash".to_owned();
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.upsert_admin(&promoted, T0).await.expect("upsert"),
        kim,
        "the existing account is promoted"
    );
    let again = tx
        .upsert_admin(&new_user("admin@example.com"), T0)
        .await
        .expect("upsert");
    tx.commit().await.expect("commit");
    assert_eq!(again, admin, "running it again keeps one account");
    let credentials = store
        .credentials("kim@example.com")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (
            credentials.user_id,
            credentials.role,
            credentials.password_hash.as_str()
        ),
        (kim, Role::Admin, "new hash")
    );
}

async fn token_state_follows_role_version_and_logouts<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let state = store.token_state(kim, T0).await.expect("read").expect("kim exists");
    assert_eq!(
        (state.role, state.token_version, state.revoked.len()),
        (Role::User, 0, 0)
    );
    assert!(store.token_state(kim.unknown(), T0).await.expect("read").is_none());

    let claims = |jti: &str, expires_at: Timestamp| account::TokenClaims {
        user_id: kim,
        role: Role::User,
        token_version: 0,
        jti: Some(jti.to_owned()),
        expires_at,
    };
    let mut tx = store.begin().await.expect("begin");
    account::log_out(&mut tx, &claims("first", at(3_600)))
        .await
        .expect("log out");
    account::log_out(&mut tx, &claims("first", at(3_600)))
        .await
        .expect("twice is no error");
    account::log_out(&mut tx, &claims("short", at(10)))
        .await
        .expect("log out");
    tx.commit().await.expect("commit");
    let state = store.token_state(kim, at(5)).await.expect("read").expect("exists");
    let mut revoked = state.revoked.clone();
    revoked.sort();
    assert_eq!(revoked, ["first", "short"]);
    assert!(!state.admits(&claims("first", at(3_600))));
    assert!(state.admits(&claims("other", at(3_600))));
    // Expired logouts are not read, and the purge forgets them.
    let later = store.token_state(kim, at(20)).await.expect("read").expect("exists");
    assert_eq!(later.revoked, ["first"]);
    assert_eq!(store.purge_revoked_tokens(at(20)).await.expect("purge"), 1);
    assert_eq!(store.purge_revoked_tokens(at(20)).await.expect("purge"), 0);

    // A token without an id logs out every token of the account.
    let mut tx = store.begin().await.expect("begin");
    let no_id = account::TokenClaims {
        jti: None,
        ..claims("", at(3_600))
    };
    account::log_out(&mut tx, &no_id).await.expect("log out");
    tx.commit().await.expect("commit");
    let bumped = store.token_state(kim, T0).await.expect("read").expect("exists");
    assert_eq!(bumped.token_version, 1);
    assert!(!bumped.admits(&claims("other", at(3_600))));

    // Promoted by upsert_admin: the role and version follow, so user tokens are refused.
    let mut tx = store.begin().await.expect("begin");
    tx.upsert_admin(&new_user("kim@example.com"), T0).await.expect("upsert");
    tx.commit().await.expect("commit");
    let promoted = store.token_state(kim, T0).await.expect("read").expect("exists");
    assert_eq!((promoted.role, promoted.token_version), (Role::Admin, 2));
}

async fn a_password_changes_only_from_the_current_hash_and_bumps_the_token_version<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let current = store.credentials_of(kim).await.expect("read").expect("exists");
    assert_eq!((current.user_id, current.token_version), (kim, 0));
    assert!(store.credentials_of(kim.unknown()).await.expect("read").is_none());

    let mut tx = store.begin().await.expect("begin");
    assert!(matches!(
        account::change_password(&mut tx, kim, "not the stored hash", "new hash").await,
        Err(Error::InvalidCredentials)
    ));
    account::change_password(&mut tx, kim, &current.password_hash, "new hash")
        .await
        .expect("changed");
    // The same change again lost its guard: the hash is no longer the current one.
    assert!(
        !tx.change_password(kim, &current.password_hash, "newer hash")
            .await
            .expect("guard")
    );
    assert!(!tx.change_password(kim.unknown(), "new hash", "x").await.expect("guard"));
    tx.commit().await.expect("commit");
    let changed = store
        .credentials("kim@example.com")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((changed.password_hash.as_str(), changed.token_version), ("new hash", 1));
}

async fn pending_orders_are_counted_per_user_and_the_account_lock_says_whether_it_exists<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let lee = user(&store, "lee@example.com").await;
    let shirt = product(&store, "Shirt", 1_000, 10).await;
    let first = order(&store, kim, &[(shirt.id, 1)], T0).await;
    order(&store, kim, &[(shirt.id, 1)], T0).await;
    order(&store, lee, &[(shirt.id, 1)], T0).await;
    cancel(&store, first.id, kim, T0).await.expect("cancelled");
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.lock_account(kim).await.expect("lock"));
    assert!(!tx.lock_account(kim.unknown()).await.expect("lock"));
    assert_eq!(tx.pending_order_count(kim, T0).await.expect("count"), 1);
    assert_eq!(tx.pending_order_count(lee, T0).await.expect("count"), 1);
    // Past their expiry, pending orders no longer count.
    assert_eq!(tx.pending_order_count(kim, at(100_000)).await.expect("count"), 0);
    tx.commit().await.expect("commit");
}

/// The one existence rule (`account::require_user`), as every use case about an account meets it.
async fn every_use_case_about_an_unknown_user_answers_user_not_found<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let coat = product(&store, "Coat", 1_000, 5).await;
    let deal = coupon(&store, DiscountType::Fixed, 1_000, 5, 3_600).await;
    let nobody = by_admin(kim.unknown());
    let not_found = |outcome: Result<(), Error>, what: &str| {
        assert!(matches!(outcome, Err(Error::UserNotFound)), "{what}: {outcome:?}");
    };

    let mut tx = store.begin().await.expect("begin");
    not_found(
        wallet::charge(&mut tx, nobody, Krw(5_000), T0).await.map(drop),
        "charge",
    );
    not_found(
        cart::put_cart_item(&mut tx, nobody, coat.id, 1, T0).await.map(drop),
        "put in cart",
    );
    not_found(
        cart::remove_cart_item(&mut tx, nobody, coat.id).await,
        "remove from cart",
    );
    not_found(cart::clear_cart(&mut tx, nobody).await, "clear the cart");
    let lines = order::OrderSource::Lines(vec![ecommerce_domain::order::LineRequest {
        product_id: coat.id,
        quantity: 1,
    }]);
    not_found(
        order::create_order(&mut tx, nobody, &lines, T0, TTL).await.map(drop),
        "order",
    );
    not_found(
        coupon::issue_coupon(&mut tx, nobody, &deal, T0, 0).await.map(drop),
        "issue",
    );
    drop(tx);
    not_found(cart::cart(&store, nobody, T0).await.map(drop), "read the cart");
    not_found(wallet::balance(&store, nobody).await.map(drop), "read the balance");
    not_found(
        wallet::balance_history(&store, nobody, page(None, 10)).await.map(drop),
        "history",
    );
    not_found(
        order::list_orders(&store, nobody, None, T0, page(None, 10))
            .await
            .map(drop),
        "orders",
    );
    not_found(
        coupon::user_coupons(&store, nobody, None, T0, page(None, 10))
            .await
            .map(drop),
        "coupons",
    );

    let kim_by_admin = by_admin(kim);
    assert!(
        cart::cart(&store, kim_by_admin, T0)
            .await
            .expect("an existing user")
            .is_empty()
    );
    assert_eq!(wallet::balance(&store, kim_by_admin).await.expect("balance"), Krw(0));
    assert_eq!(remaining(&store, deal.id).await, 5, "nothing was issued");
}

// ---------------------------------------------------------------------------------------------
// Catalog

async fn products_are_created_read_and_patched<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let coat = product(&store, "Coat", 120_000, 7).await;
    assert_eq!(
        (coat.name.as_str(), coat.price.0, coat.stock, coat.status),
        ("Coat", 120_000, 7, ProductStatus::OnSale)
    );
    assert_eq!(store.product(coat.id).await.expect("read"), Some(coat.clone()));

    let mut tx = store.begin().await.expect("begin");
    let unchanged = tx
        .update_product(coat.id, &ProductPatch::default())
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(unchanged, coat, "an empty patch changes nothing");
    let patch = ProductPatch {
        name: Some("Long coat".to_owned()),
        price: Some(Krw(99_000)),
        status: None,
        ..ProductPatch::default()
    };
    let patched = tx
        .update_product(coat.id, &patch)
        .await
        .expect("update")
        .expect("exists");
    let stop = ProductPatch {
        status: Some(ProductStatus::Stopped),
        ..ProductPatch::default()
    };
    let stopped = tx
        .update_product(coat.id, &stop)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        tx.update_product(coat.id.unknown(), &patch).await.expect("update"),
        None
    );
    assert_eq!(tx.product(coat.id).await.expect("read"), Some(stopped.clone()));
    tx.commit().await.expect("commit");

    assert_eq!(
        (patched.name.as_str(), patched.price.0, patched.stock, patched.status),
        ("Long coat", 99_000, 7, ProductStatus::OnSale)
    );
    assert_eq!(
        (stopped.name.as_str(), stopped.price.0, stopped.status),
        ("Long coat", 99_000, ProductStatus::Stopped)
    );
    assert_eq!(store.product(coat.id).await.expect("read"), Some(stopped));
    assert_eq!(store.product(coat.id.unknown()).await.expect("read"), None);
}

/// Records what a store's product-change feed publishes.
#[derive(Default)]
struct Changes(std::sync::Mutex<Vec<Vec<i64>>>);

impl ProductChangeSubscriber for Changes {
    fn changed(&self, change: ProductChange<'_>) {
        let ids = match change {
            ProductChange::Products(ids) => ids.iter().map(|id| id.0).collect(),
            ProductChange::All => vec![-1],
        };
        self.0.lock().expect("lock").push(ids);
    }
}

impl Changes {
    fn take(&self) -> Vec<Vec<i64>> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

/// The catalog caches follow the store's feed: a commit publishes every product whose row the
/// transaction changed (create, patch, restock, stock taken or returned), once each, after the
/// commit; a rollback, or a transaction that changed no product, publishes nothing.
async fn committed_product_changes_are_published_and_rolled_back_ones_are_not<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let seen = std::sync::Arc::new(Changes::default());
    store.product_changes().subscribe(seen.clone());
    let coat = product(&store, "Coat", 1_000, 10).await;
    let shirt = product(&store, "Shirt", 1_000, 10).await;
    assert_eq!(seen.take(), vec![vec![coat.id.0], vec![shirt.id.0]], "each creation");

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.take_stock(coat.id, 2).await.expect("take"));
    tx.add_stock(shirt.id, 3).await.expect("add").expect("exists");
    tx.return_stock(coat.id, 1).await.expect("return");
    let patch = ProductPatch {
        price: Some(Krw(900)),
        ..ProductPatch::default()
    };
    tx.update_product(shirt.id, &patch)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(seen.take(), Vec::<Vec<i64>>::new(), "nothing before the commit");
    tx.commit().await.expect("commit");
    assert_eq!(
        seen.take(),
        vec![vec![coat.id.0, shirt.id.0]],
        "once each, in the order first changed"
    );

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.take_stock(coat.id, 1).await.expect("take"));
    tx.rollback().await.expect("rollback");
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.take_stock(coat.id, 1).await.expect("take"));
    drop(tx);
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.product(coat.id).await.expect("read").map(|p| p.stock), Some(9));
    tx.commit().await.expect("commit");
    assert_eq!(
        seen.take(),
        Vec::<Vec<i64>>::new(),
        "rolled back, or no product changed"
    );
    assert_eq!(store.product(coat.id).await.expect("read").expect("exists").stock, 9);
}

async fn products_on_sale_are_listed_oldest_first_by_keyset<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(product(&store, &format!("Item {i}"), 1_000, 1).await.id);
    }
    let mut tx = store.begin().await.expect("begin");
    let stop = ProductPatch {
        status: Some(ProductStatus::Stopped),
        ..ProductPatch::default()
    };
    tx.update_product(ids[1], &stop).await.expect("update").expect("exists");
    tx.commit().await.expect("commit");

    let listed = |items: Vec<ecommerce_domain::catalog::Product>| items.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        listed(store.products_on_sale(page(None, 100), None).await.expect("list")),
        vec![ids[0], ids[2], ids[3], ids[4]]
    );
    let first = listed(store.products_on_sale(page(None, 2), None).await.expect("list"));
    assert_eq!(first, vec![ids[0], ids[2]]);
    let second = listed(
        store
            .products_on_sale(page(first.last().map(|p| p.0), 2), None)
            .await
            .expect("list"),
    );
    assert_eq!(second, vec![ids[3], ids[4]]);
    assert!(
        store
            .products_on_sale(page(Some(ids[4].0), 2), None)
            .await
            .expect("list")
            .is_empty()
    );
}

async fn restocking_stops_at_the_maximum_stock<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let coat = product(&store, "Coat", 1_000, 1_000_000).await;
    let mut tx = store.begin().await.expect("begin");
    let restocked = tx
        .add_stock(coat.id, 8_999_999)
        .await
        .expect("add")
        .expect("fits under the maximum");
    assert_eq!(restocked.stock, 9_999_999);
    assert_eq!(
        tx.add_stock(coat.id, 2).await.expect("add"),
        None,
        "one over the maximum is refused"
    );
    assert_eq!(
        tx.add_stock(coat.id, 1).await.expect("add").map(|p| p.stock),
        Some(MAX_STOCK),
        "exactly the maximum is fine"
    );
    assert_eq!(tx.add_stock(coat.id, 1).await.expect("add"), None);
    assert_eq!(
        tx.add_stock(coat.id.unknown(), 1).await.expect("add"),
        None,
        "unknown product"
    );
    assert!(matches!(
        catalog::restock(&mut tx, coat.id.unknown(), 1).await,
        Err(Error::ProductNotFound)
    ));
    assert!(matches!(
        catalog::restock(&mut tx, coat.id, 1).await,
        Err(Error::Validation(_))
    ));
    tx.commit().await.expect("commit");
    assert_eq!(stock(&store, coat.id).await, MAX_STOCK);
}

async fn returned_stock_is_capped_at_the_maximum<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let coat = product(&store, "Coat", 1_000, 5).await;
    let mut tx = store.begin().await.expect("begin");
    tx.return_stock(coat.id, 3).await.expect("return");
    assert_eq!(tx.product(coat.id).await.expect("read").map(|p| p.stock), Some(8));
    tx.add_stock(coat.id, MAX_STOCK - 10).await.expect("add").expect("fits");
    tx.return_stock(coat.id, 1).await.expect("return");
    assert_eq!(
        tx.product(coat.id).await.expect("read").map(|p| p.stock),
        Some(MAX_STOCK - 1),
        "under the maximum everything comes back"
    );
    tx.return_stock(coat.id, 5).await.expect("return");
    assert_eq!(
        tx.product(coat.id).await.expect("read").map(|p| p.stock),
        Some(MAX_STOCK),
        "capped, not refused"
    );
    tx.return_stock(coat.id, 1).await.expect("return");
    assert_eq!(
        tx.product(coat.id).await.expect("read").map(|p| p.stock),
        Some(MAX_STOCK)
    );
    tx.return_stock(coat.id.unknown(), 1)
        .await
        .expect("an unknown product changes nothing");
    tx.commit().await.expect("commit");
    assert_eq!(stock(&store, coat.id).await, MAX_STOCK);
}

async fn stock_is_taken_only_while_it_covers_the_quantity<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let coat = product(&store, "Coat", 1_000, 7).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.take_stock(coat.id, 5).await.expect("take"));
    assert!(!tx.take_stock(coat.id, 3).await.expect("take"), "2 left cannot cover 3");
    assert_eq!(
        tx.product(coat.id).await.expect("read").map(|p| p.stock),
        Some(2),
        "a refused take changes nothing"
    );
    assert!(
        tx.take_stock(coat.id, 2).await.expect("take"),
        "the last ones can be taken"
    );
    assert!(!tx.take_stock(coat.id, 1).await.expect("take"));
    assert!(
        !tx.take_stock(coat.id.unknown(), 1).await.expect("take"),
        "unknown product"
    );
    tx.commit().await.expect("commit");
    assert_eq!(stock(&store, coat.id).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Balance

async fn balance_credits_and_debits_respect_their_guards<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.credit_balance(kim, Krw(9_000_000)).await.expect("credit"),
        Some(Krw(9_000_000))
    );
    assert_eq!(
        tx.credit_balance(kim, Krw(1_000_001)).await.expect("credit"),
        None,
        "over the limit"
    );
    assert_eq!(
        tx.credit_balance(kim, Krw(1_000_000)).await.expect("credit"),
        Some(MAX_BALANCE),
        "exactly the limit"
    );
    assert_eq!(
        tx.debit_balance(kim, MAX_BALANCE + Krw(1)).await.expect("debit"),
        None,
        "more than the balance"
    );
    assert_eq!(
        tx.debit_balance(kim, Krw(4_000_000)).await.expect("debit"),
        Some(Krw(6_000_000))
    );
    assert_eq!(
        tx.debit_balance(kim, Krw(0)).await.expect("debit"),
        Some(Krw(6_000_000)),
        "a 0 KRW payment is allowed"
    );
    assert_eq!(
        tx.debit_balance(kim, Krw(6_000_000)).await.expect("debit"),
        Some(Krw(0)),
        "the whole balance can be spent"
    );
    assert_eq!(tx.debit_balance(kim, Krw(1)).await.expect("debit"), None);
    assert_eq!(
        tx.credit_balance(kim.unknown(), Krw(1_000)).await.expect("credit"),
        None,
        "unknown user"
    );
    tx.commit().await.expect("commit");
    assert_eq!(balance(&store, kim).await, 0);
    assert_eq!(store.balance(kim.unknown()).await.expect("read"), None);

    let mut tx = store.begin().await.expect("begin");
    assert!(matches!(
        wallet::charge(&mut tx, by_admin(kim.unknown()), Krw(5_000), T0).await,
        Err(Error::UserNotFound)
    ));
    tx.credit_balance(kim, MAX_BALANCE - Krw(500))
        .await
        .expect("credit")
        .expect("fits");
    assert!(matches!(
        wallet::charge(&mut tx, own(kim), Krw(1_000), T0).await,
        Err(Error::BalanceLimitExceeded)
    ));
}

async fn balance_history_is_newest_first_and_pages_by_keyset<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let lee = user(&store, "lee@example.com").await;
    charge(&store, kim, 5_000).await;
    charge(&store, lee, 9_000).await;
    charge(&store, kim, 7_000).await;
    let mut tx = store.begin().await.expect("begin");
    let after = tx
        .debit_balance(kim, Krw(2_000))
        .await
        .expect("debit")
        .expect("covered");
    let entry = NewBalanceEntry {
        user_id: kim,
        kind: EntryKind::Payment,
        amount: Krw(-2_000),
        balance_after: after,
        order_id: Some(OrderId(77)),
        created_at: at(5),
    };
    tx.append_balance_entry(&entry).await.expect("append");
    tx.commit().await.expect("commit");

    let history = store.balance_history(kim, page(None, 100)).await.expect("history");
    let lines: Vec<_> = history
        .iter()
        .map(|e| (e.kind, e.amount.0, e.balance_after.0, e.order_id.map(|o| o.0)))
        .collect();
    assert_eq!(
        lines,
        vec![
            (EntryKind::Payment, -2_000, 10_000, Some(77)),
            (EntryKind::Charge, 7_000, 12_000, None),
            (EntryKind::Charge, 5_000, 5_000, None),
        ],
        "newest first, only kim's lines"
    );
    assert_eq!(history[0].created_at, at(5));
    assert!(history.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(
        history.iter().map(|e| e.amount.0).sum::<i64>(),
        balance(&store, kim).await,
        "the balance is the sum of its history"
    );

    let first = store.balance_history(kim, page(None, 2)).await.expect("history");
    assert_eq!(
        first.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![history[0].id, history[1].id]
    );
    let rest = store
        .balance_history(kim, page(Some(first[1].id.0), 2))
        .await
        .expect("history");
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![history[2].id]);
}

// ---------------------------------------------------------------------------------------------
// Idempotency keys

fn scope(user: UserId, route: &'static str, key: &str) -> IdempotencyScope {
    IdempotencyScope {
        user_id: user,
        route,
        key: key.to_owned(),
    }
}

async fn idempotency_keys_are_fresh_then_replayed_or_reused<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let charges = scope(UserId(1), "charge", "key-1");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&charges, "hash-a", T0).await.expect("claim"),
        KeyClaim::Fresh
    );
    tx.save_idempotent_response(&charges, 200, r#"{"balance":5000}"#)
        .await
        .expect("save");
    tx.commit().await.expect("commit");

    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&charges, "hash-a", at(1))
            .await
            .expect("claim"),
        KeyClaim::Replay {
            status: 200,
            body: r#"{"balance":5000}"#.to_owned()
        }
    );
    assert_eq!(
        tx.claim_idempotency_key(&charges, "hash-b", at(1))
            .await
            .expect("claim"),
        KeyClaim::Reused
    );
    assert_eq!(
        tx.claim_idempotency_key(&scope(UserId(2), "charge", "key-1"), "hash-b", at(1))
            .await
            .expect("claim"),
        KeyClaim::Fresh,
        "keys are per user"
    );
    assert_eq!(
        tx.claim_idempotency_key(&scope(UserId(1), "payment", "key-1"), "hash-b", at(1))
            .await
            .expect("claim"),
        KeyClaim::Fresh,
        "keys are per route"
    );
    tx.save_idempotent_response(&scope(UserId(1), "payment", "key-1"), 201, "{}")
        .await
        .expect("save");
    tx.commit().await.expect("commit");

    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&scope(UserId(1), "payment", "key-1"), "hash-b", at(2))
            .await
            .expect("claim"),
        KeyClaim::Replay {
            status: 201,
            body: "{}".to_owned()
        }
    );
}

async fn a_rolled_back_idempotency_key_is_free_again<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let key = scope(UserId(1), "charge", "key-1");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&key, "hash-a", T0).await.expect("claim"),
        KeyClaim::Fresh
    );
    drop(tx); // the request failed: a 4xx stores nothing

    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&key, "hash-b", at(1)).await.expect("claim"),
        KeyClaim::Fresh,
        "the key may be used again, even with another body"
    );
    tx.save_idempotent_response(&key, 200, "ok").await.expect("save");
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&key, "hash-b", at(2)).await.expect("claim"),
        KeyClaim::Replay {
            status: 200,
            body: "ok".to_owned()
        }
    );
}

async fn a_stored_answer_that_cannot_be_read_back_is_an_error<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let key = scope(UserId(1), "charge", "key-1");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&key, "hash-a", T0).await.expect("claim"),
        KeyClaim::Fresh
    );
    tx.save_idempotent_response(&key, 200, "ok").await.expect("save");
    tx.commit().await.expect("commit");
    store
        .execute("update idempotency_key set status_code = 70000 where key = 'key-1'")
        .await;
    let mut tx = store.begin().await.expect("begin");
    assert!(
        tx.claim_idempotency_key(&key, "hash-a", at(1)).await.is_err(),
        "an impossible status is not replayed as 200"
    );
}

async fn purging_removes_only_keys_older_than_the_cutoff<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let old = scope(UserId(1), "charge", "old");
    let new = scope(UserId(1), "charge", "new");
    let mut tx = store.begin().await.expect("begin");
    for (key, now) in [(&old, T0), (&new, at(100))] {
        assert_eq!(
            tx.claim_idempotency_key(key, "hash-a", now).await.expect("claim"),
            KeyClaim::Fresh
        );
        tx.save_idempotent_response(key, 200, "ok").await.expect("save");
    }
    tx.commit().await.expect("commit");

    assert_eq!(
        store.purge_idempotency_keys(T0).await.expect("purge"),
        0,
        "created_at equal to the cutoff stays"
    );
    assert_eq!(store.purge_idempotency_keys(at(100)).await.expect("purge"), 1);
    assert_eq!(store.purge_idempotency_keys(at(100)).await.expect("purge"), 0);
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&old, "hash-b", at(200)).await.expect("claim"),
        KeyClaim::Fresh,
        "purged"
    );
    assert_eq!(
        tx.claim_idempotency_key(&new, "hash-a", at(200)).await.expect("claim"),
        KeyClaim::Replay {
            status: 200,
            body: "ok".to_owned()
        },
        "kept"
    );
}

// ---------------------------------------------------------------------------------------------
// Cart

async fn the_cart_keeps_items_in_the_order_first_added<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let lee = user(&store, "lee@example.com").await;
    let a = product(&store, "A", 1_000, 5).await;
    let b = product(&store, "B", 2_000, 5).await;
    let c = product(&store, "C", 3_000, 5).await;
    let items = |cart: Vec<ecommerce_domain::cart::CartItem>| {
        cart.into_iter().map(|i| (i.product.id, i.quantity)).collect::<Vec<_>>()
    };

    let mut tx = store.begin().await.expect("begin");
    tx.put_cart_item(kim, c.id, 1).await.expect("put");
    tx.put_cart_item(kim, a.id, 2).await.expect("put");
    tx.put_cart_item(kim, b.id, 3).await.expect("put");
    tx.put_cart_item(lee, a.id, 9).await.expect("put");
    tx.put_cart_item(kim, c.id, 7).await.expect("put");
    assert_eq!(
        items(tx.cart(kim).await.expect("cart")),
        vec![(c.id, 7), (a.id, 2), (b.id, 3)],
        "setting a quantity keeps the place"
    );
    tx.commit().await.expect("commit");
    let cart = store.cart(kim).await.expect("cart");
    assert_eq!(cart[0].product, c, "the cart carries the current product");
    assert_eq!(items(cart), vec![(c.id, 7), (a.id, 2), (b.id, 3)]);

    let mut tx = store.begin().await.expect("begin");
    tx.remove_cart_items(kim, &[c.id]).await.expect("remove");
    tx.put_cart_item(kim, c.id, 1).await.expect("put");
    tx.commit().await.expect("commit");
    assert_eq!(
        items(store.cart(kim).await.expect("cart")),
        vec![(a.id, 2), (b.id, 3), (c.id, 1)],
        "removed and added again goes to the end"
    );

    let mut tx = store.begin().await.expect("begin");
    tx.remove_cart_items(kim, &[]).await.expect("removing nothing is fine");
    tx.remove_cart_items(kim, &[a.id, b.id, a.id.unknown()])
        .await
        .expect("remove");
    tx.commit().await.expect("commit");
    assert_eq!(items(store.cart(kim).await.expect("cart")), vec![(c.id, 1)]);
    assert_eq!(
        items(store.cart(lee).await.expect("cart")),
        vec![(a.id, 9)],
        "another user's cart is untouched"
    );

    let mut tx = store.begin().await.expect("begin");
    tx.clear_cart(kim).await.expect("clear");
    tx.commit().await.expect("commit");
    assert!(store.cart(kim).await.expect("cart").is_empty());
    assert_eq!(items(store.cart(lee).await.expect("cart")), vec![(a.id, 9)]);
}

// ---------------------------------------------------------------------------------------------
// Coupons

async fn coupon_quantity_is_spread_over_shards_that_sum_to_the_total<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    for total in [1, 3, 16, 37, 10_000_000] {
        let stored = coupon(&store, DiscountType::Fixed, 1_000, total, 3_600).await;
        let shards = store.coupon_shards(stored.id).await;
        let expected = new_coupon(DiscountType::Fixed, 1_000, total, 3_600).shard_quantities();
        assert_eq!(shards, expected, "total {total}");
        assert_eq!(shards.iter().sum::<i64>(), total);
        let read = store.coupon(stored.id).await.expect("read").expect("exists");
        assert_eq!((read.total_quantity, read.remaining_quantity), (total, total));
        assert_eq!(read, stored);
    }
    assert_eq!(store.coupon(CouponId(999_999)).await.expect("read"), None);
}

async fn take_coupon_starts_at_the_given_shard_and_moves_on_when_it_is_empty<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let rush = coupon(&store, DiscountType::Fixed, 1_000, 32, 3_600).await; // 16 shards of 2
    let mut tx = store.begin().await.expect("begin");
    for _ in 0..3 {
        assert!(tx.take_coupon(rush.id, 5).await.expect("take"));
    }
    for _ in 0..3 {
        assert!(tx.take_coupon(rush.id, 15).await.expect("take"));
    }
    tx.commit().await.expect("commit");
    let mut expected = vec![2; 16];
    expected[5] = 0;
    expected[6] = 1;
    expected[15] = 0;
    expected[0] = 1; // wraps around after the last shard
    assert_eq!(store.coupon_shards(rush.id).await, expected);
    assert_eq!(remaining(&store, rush.id).await, 26);
}

async fn take_coupon_hands_out_exactly_the_total_quantity<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let rush = coupon(&store, DiscountType::Rate, 10, 20, 3_600).await;
    let mut tx = store.begin().await.expect("begin");
    for i in 0..20 {
        assert!(
            tx.take_coupon(rush.id, (i * 7) % 16).await.expect("take"),
            "coupon {i} of 20"
        );
    }
    assert!(!tx.take_coupon(rush.id, 0).await.expect("take"), "none left");
    assert!(!tx.take_coupon(rush.id, 9).await.expect("take"));
    tx.commit().await.expect("commit");
    assert!(store.coupon_shards(rush.id).await.iter().all(|&left| left == 0));
    assert_eq!(remaining(&store, rush.id).await, 0);
}

async fn coupons_in_stock_are_newest_first_and_hide_sold_out_ones<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let c1 = coupon(&store, DiscountType::Fixed, 1_000, 1, 3_600).await;
    let c2 = coupon(&store, DiscountType::Fixed, 1_000, 1, 3_600).await;
    let c3 = coupon(&store, DiscountType::Rate, 5, 2, 3_600).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.take_coupon(c2.id, 0).await.expect("take"));
    assert!(tx.take_coupon(c3.id, 0).await.expect("take"));
    tx.commit().await.expect("commit");

    let listed = store.coupons_in_stock(page(None, 10), T0).await.expect("list");
    assert_eq!(
        listed.iter().map(|c| (c.id, c.remaining_quantity)).collect::<Vec<_>>(),
        vec![(c3.id, 1), (c1.id, 1)]
    );
    assert_eq!(listed[0].discount, c3.discount);
    let first = store.coupons_in_stock(page(None, 1), T0).await.expect("list");
    assert_eq!(first.iter().map(|c| c.id).collect::<Vec<_>>(), vec![c3.id]);
    let rest = store.coupons_in_stock(page(Some(c3.id.0), 1), T0).await.expect("list");
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), vec![c1.id]);
    assert_eq!(remaining(&store, c2.id).await, 0);
}

async fn a_user_holds_a_coupon_at_most_once<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let lee = user(&store, "lee@example.com").await;
    let deal = coupon(&store, DiscountType::Fixed, 1_000, 10, 3_600).await;
    issue(&store, kim, &deal).await;

    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.insert_user_coupon(&NewUserCoupon {
            user_id: kim,
            coupon_id: deal.id,
            issued_at: at(1),
            expires_at: at(3_601)
        })
        .await
        .expect("insert"),
        None
    );
    assert!(matches!(
        coupon::issue_coupon(&mut tx, own(kim), &deal, at(1), 0).await,
        Err(Error::CouponAlreadyIssued)
    ));
    drop(tx);
    assert_eq!(remaining(&store, deal.id).await, 9, "a refused issue takes nothing");

    issue(&store, lee, &deal).await;
    assert!(store.has_user_coupon(kim, deal.id).await.expect("read"));
    assert!(store.has_user_coupon(lee, deal.id).await.expect("read"));
    assert!(!store.has_user_coupon(lee, deal.id.unknown()).await.expect("read"));
    assert_eq!(remaining(&store, deal.id).await, 8);
    assert_eq!(
        store
            .user_coupons(kim, None, T0, page(None, 10))
            .await
            .expect("list")
            .len(),
        1
    );
}

async fn coupon_holders_are_everyone_who_holds_the_coupon<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let lee = user(&store, "lee@example.com").await;
    let park = user(&store, "park@example.com").await;
    let deal = coupon(&store, DiscountType::Fixed, 1_000, 2, 3_600).await;
    let other = coupon(&store, DiscountType::Fixed, 1_000, 5, 3_600).await;
    assert!(store.coupon_holders(deal.id).await.expect("holders").is_empty());
    issue(&store, lee, &deal).await;
    issue(&store, kim, &deal).await;
    issue(&store, park, &other).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(matches!(
        coupon::issue_coupon(&mut tx, own(park), &deal, T0, 0).await,
        Err(Error::CouponSoldOut)
    ));
    drop(tx);

    let mut holders = store.coupon_holders(deal.id).await.expect("holders");
    holders.sort_unstable();
    assert_eq!(holders, vec![kim, lee], "a sold-out attempt holds nothing");
    assert_eq!(store.coupon_holders(other.id).await.expect("holders"), vec![park]);
}

async fn user_coupon_status_is_computed_on_read<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let lee = user(&store, "lee@example.com").await;
    let c1 = coupon(&store, DiscountType::Fixed, 1_000, 10, 3_600).await;
    let c2 = coupon(&store, DiscountType::Rate, 20, 10, 3_600).await;
    let c3 = coupon(&store, DiscountType::Fixed, 3_000, 10, 3_600).await;
    let mut tx = store.begin().await.expect("begin");
    let available = tx
        .insert_user_coupon(&NewUserCoupon {
            user_id: kim,
            coupon_id: c1.id,
            issued_at: T0,
            expires_at: at(3_600),
        })
        .await
        .expect("insert")
        .expect("new");
    let used = tx
        .insert_user_coupon(&NewUserCoupon {
            user_id: kim,
            coupon_id: c2.id,
            issued_at: T0,
            expires_at: at(3_600),
        })
        .await
        .expect("insert")
        .expect("new");
    let expired = tx
        .insert_user_coupon(&NewUserCoupon {
            user_id: kim,
            coupon_id: c3.id,
            issued_at: at(-7_200),
            expires_at: at(-3_600),
        })
        .await
        .expect("insert")
        .expect("new");
    tx.insert_user_coupon(&NewUserCoupon {
        user_id: lee,
        coupon_id: c1.id,
        issued_at: T0,
        expires_at: at(3_600),
    })
    .await
    .expect("insert")
    .expect("new");
    assert!(tx.use_coupon(used, OrderId(4242), at(10)).await.expect("use"));
    assert!(
        !tx.use_coupon(used, OrderId(4243), at(11)).await.expect("use"),
        "a used coupon cannot be used again"
    );
    assert!(
        !tx.use_coupon(expired, OrderId(4243), at(11)).await.expect("use"),
        "an expired coupon cannot be used"
    );
    assert!(
        !tx.use_coupon(available, OrderId(4243), at(3_600)).await.expect("use"),
        "expired at exactly expires_at"
    );
    let read = tx.user_coupon(used).await.expect("read").expect("exists");
    assert_eq!(
        (read.used_at, read.order_id, read.user_id, read.coupon_id),
        (Some(at(10)), Some(OrderId(4242)), kim, c2.id)
    );
    assert_eq!(read.discount, c2.discount);
    tx.commit().await.expect("commit");

    let now = at(60);
    let ids = |list: Vec<ecommerce_domain::coupon::UserCoupon>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let list = |status, now, page| store.user_coupons(kim, status, now, page);
    assert_eq!(
        ids(list(None, now, page(None, 10)).await.expect("list")),
        vec![expired, used, available],
        "newest first"
    );
    assert_eq!(
        ids(list(Some(UserCouponStatus::Available), now, page(None, 10))
            .await
            .expect("list")),
        vec![available]
    );
    assert_eq!(
        ids(list(Some(UserCouponStatus::Used), now, page(None, 10))
            .await
            .expect("list")),
        vec![used]
    );
    assert_eq!(
        ids(list(Some(UserCouponStatus::Expired), now, page(None, 10))
            .await
            .expect("list")),
        vec![expired]
    );
    assert_eq!(
        ids(list(Some(UserCouponStatus::Expired), at(3_600), page(None, 10))
            .await
            .expect("list")),
        vec![expired, available],
        "an unused coupon is EXPIRED from expires_at on"
    );
    assert_eq!(
        ids(list(Some(UserCouponStatus::Used), at(99_999), page(None, 10))
            .await
            .expect("list")),
        vec![used],
        "USED stays USED"
    );
    assert_eq!(
        ids(list(None, now, page(None, 2)).await.expect("list")),
        vec![expired, used]
    );
    assert_eq!(
        ids(list(None, now, page(Some(used.0), 2)).await.expect("list")),
        vec![available]
    );

    let mut tx = store.begin().await.expect("begin");
    tx.release_coupon(used).await.expect("release");
    tx.commit().await.expect("commit");
    let released = list(Some(UserCouponStatus::Available), now, page(None, 10))
        .await
        .expect("list");
    assert_eq!(ids(released.clone()), vec![used, available]);
    assert_eq!((released[0].used_at, released[0].order_id), (None, None));
}

// ---------------------------------------------------------------------------------------------
// Orders

async fn orders_are_read_back_with_lines_in_request_order<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let a = product(&store, "A", 1_000, 5).await;
    let b = product(&store, "B", 2_500, 5).await;
    let c = product(&store, "C", 700, 5).await;
    let created = order(&store, kim, &[(c.id, 1), (a.id, 3), (b.id, 2)], T0).await;

    let read = store.order(created.id).await.expect("read").expect("exists");
    assert_eq!(read, created);
    let lines: Vec<_> = read
        .lines
        .iter()
        .map(|l| (l.product_id, l.name.as_str(), l.unit_price.0, l.quantity, l.amount.0))
        .collect();
    assert_eq!(
        lines,
        vec![
            (c.id, "C", 700, 1, 700),
            (a.id, "A", 1_000, 3, 3_000),
            (b.id, "B", 2_500, 2, 5_000)
        ]
    );
    assert_eq!(
        (read.user_id, read.stored_status, read.total_amount),
        (kim, OrderStatus::PendingPayment, Krw(8_700))
    );
    assert_eq!(
        (
            read.discount_amount,
            read.paid_amount,
            read.user_coupon_id,
            read.paid_at
        ),
        (Krw(0), Krw(0), None, None)
    );
    assert_eq!((read.created_at, read.expires_at), (T0, at(TTL)));

    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.order(created.id).await.expect("read"), Some(created.clone()));
    assert_eq!(tx.order(created.id.unknown()).await.expect("read"), None);
    let stop = ProductPatch {
        name: Some("A renamed".to_owned()),
        price: Some(Krw(9)),
        ..ProductPatch::default()
    };
    tx.update_product(a.id, &stop).await.expect("update");
    tx.commit().await.expect("commit");
    assert_eq!(
        store.order(created.id).await.expect("read"),
        Some(created),
        "prices are fixed when the order is made"
    );
    assert_eq!(store.order(OrderId(999_999)).await.expect("read"), None);
}

async fn orders_are_listed_newest_first_by_computed_status<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user_with_balance(&store, "kim@example.com", 100_000).await;
    let lee = user(&store, "lee@example.com").await;
    let a = product(&store, "A", 1_000, 50).await;
    let b = product(&store, "B", 2_000, 50).await;
    let c = product(&store, "C", 3_000, 50).await;
    let overdue = order(&store, kim, &[(a.id, 1)], T0).await;
    let paid = order(&store, kim, &[(a.id, 1), (b.id, 2), (c.id, 3)], at(500)).await;
    pay(&store, paid.id, kim, None, at(600)).await.expect("pay");
    let cancelled = order(&store, kim, &[(b.id, 1), (c.id, 1)], at(600)).await;
    cancel(&store, cancelled.id, kim, at(700)).await.expect("cancel");
    let pending = order(&store, kim, &[(c.id, 2)], at(800)).await;
    order(&store, lee, &[(a.id, 1)], at(800)).await;

    let now = at(1_000); // past the first order's expires_at, before the last one's
    let ids = |list: Vec<ecommerce_domain::order::Order>| list.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let all = store.orders(kim, None, now, page(None, 10)).await.expect("list");
    assert_eq!(ids(all.clone()), vec![pending.id, cancelled.id, paid.id, overdue.id]);
    assert_eq!(all[2].lines, paid.lines, "every line of every order");
    assert_eq!(all[2].stored_status, OrderStatus::Paid);
    assert_eq!(all[3].status(now), OrderStatus::Expired);

    let by = |status| store.orders(kim, Some(status), now, page(None, 10));
    assert_eq!(
        ids(by(OrderStatus::PendingPayment).await.expect("list")),
        vec![pending.id]
    );
    assert_eq!(
        ids(by(OrderStatus::Expired).await.expect("list")),
        vec![overdue.id],
        "overdue but not yet marked counts as EXPIRED"
    );
    assert_eq!(ids(by(OrderStatus::Paid).await.expect("list")), vec![paid.id]);
    assert_eq!(ids(by(OrderStatus::Cancelled).await.expect("list")), vec![cancelled.id]);
    assert!(by(OrderStatus::Refunded).await.expect("list").is_empty());
    let early = store
        .orders(kim, Some(OrderStatus::PendingPayment), at(100), page(None, 10))
        .await
        .expect("list");
    assert_eq!(
        ids(early),
        vec![pending.id, overdue.id],
        "before expires_at the first order is still pending"
    );

    let first = store.orders(kim, None, now, page(None, 2)).await.expect("list");
    assert_eq!(ids(first.clone()), vec![pending.id, cancelled.id]);
    assert_eq!(first[1].lines.len(), 2);
    let rest = store
        .orders(kim, None, now, page(Some(cancelled.id.0), 2))
        .await
        .expect("list");
    assert_eq!(ids(rest.clone()), vec![paid.id, overdue.id]);
    assert_eq!(rest[0].lines.len(), 3, "the page limit counts orders, not lines");
}

async fn mark_paid_accepts_only_pending_unexpired_orders<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let a = product(&store, "A", 1_000, 50).await;
    let first = order(&store, kim, &[(a.id, 2)], T0).await;
    let second = order(&store, kim, &[(a.id, 1)], T0).await;

    let mut tx = store.begin().await.expect("begin");
    assert!(
        !tx.mark_paid(first.id, &payment(0, 2_000, None, at(TTL)))
            .await
            .expect("mark"),
        "expired at exactly expires_at"
    );
    assert!(
        !tx.mark_cancelled(first.id, at(TTL)).await.expect("mark"),
        "expired orders cannot be cancelled"
    );
    assert!(
        tx.mark_paid(first.id, &payment(500, 1_500, Some(31), at(TTL - 1)))
            .await
            .expect("mark")
    );
    assert!(
        !tx.mark_paid(first.id, &payment(0, 2_000, None, at(10)))
            .await
            .expect("mark"),
        "already paid"
    );
    assert!(
        !tx.mark_cancelled(first.id, at(10)).await.expect("mark"),
        "a paid order cannot be cancelled"
    );
    assert!(tx.mark_cancelled(second.id, at(10)).await.expect("mark"));
    assert!(
        !tx.mark_paid(second.id, &payment(0, 1_000, None, at(11)))
            .await
            .expect("mark"),
        "a cancelled order cannot be paid"
    );
    assert!(
        !tx.mark_refunded(second.id, at(11)).await.expect("mark"),
        "only paid orders are refunded"
    );
    assert!(
        !tx.mark_paid(first.id.unknown(), &payment(0, 0, None, at(1)))
            .await
            .expect("mark"),
        "unknown order"
    );
    tx.commit().await.expect("commit");

    let paid = store.order(first.id).await.expect("read").expect("exists");
    assert_eq!(
        (
            paid.stored_status,
            paid.discount_amount,
            paid.paid_amount,
            paid.user_coupon_id,
            paid.paid_at
        ),
        (
            OrderStatus::Paid,
            Krw(500),
            Krw(1_500),
            Some(UserCouponId(31)),
            Some(at(TTL - 1))
        )
    );
    assert_eq!(
        store
            .order(second.id)
            .await
            .expect("read")
            .expect("exists")
            .stored_status,
        OrderStatus::Cancelled
    );

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.mark_refunded(first.id, at(2_000)).await.expect("mark"));
    assert!(
        !tx.mark_refunded(first.id, at(2_001)).await.expect("mark"),
        "refunded once"
    );
    tx.commit().await.expect("commit");
    assert_eq!(
        store
            .order(first.id)
            .await
            .expect("read")
            .expect("exists")
            .stored_status,
        OrderStatus::Refunded
    );
}

/// A payment of `paid` after `discount` off, with the user coupon `coupon`, at `paid_at`.
fn payment(discount: i64, paid: i64, coupon: Option<i64>, paid_at: Timestamp) -> Payment {
    Payment {
        discount_amount: Krw(discount),
        paid_amount: Krw(paid),
        user_coupon_id: coupon.map(UserCouponId),
        paid_at,
    }
}

async fn stored_status<S: Engine>(store: &S, order: OrderId) -> OrderStatus {
    store.order(order).await.expect("read").expect("exists").stored_status
}

async fn expire_orders_marks_only_overdue_pending_orders<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user_with_balance(&store, "kim@example.com", 100_000).await;
    let a = product(&store, "A", 1_000, 50).await;
    let mut overdue = Vec::new();
    for _ in 0..3 {
        overdue.push(order(&store, kim, &[(a.id, 1)], T0).await.id);
    }
    let fresh = order(&store, kim, &[(a.id, 1)], at(500)).await.id;
    let paid = order(&store, kim, &[(a.id, 1)], T0).await.id;
    pay(&store, paid, kim, None, at(10)).await.expect("pay");
    let cancelled = order(&store, kim, &[(a.id, 1)], T0).await.id;
    cancel(&store, cancelled, kim, at(10)).await.expect("cancel");

    let now = at(1_000);
    assert_eq!(
        store.expire_orders(now, 2).await.expect("expire"),
        2,
        "at most one batch"
    );
    assert_eq!(store.expire_orders(now, 2).await.expect("expire"), 1);
    assert_eq!(
        store.expire_orders(now, 2).await.expect("expire"),
        0,
        "nothing left to mark"
    );
    for id in overdue {
        assert_eq!(stored_status(&store, id).await, OrderStatus::Expired);
    }
    assert_eq!(stored_status(&store, fresh).await, OrderStatus::PendingPayment);
    assert_eq!(stored_status(&store, paid).await, OrderStatus::Paid);
    assert_eq!(stored_status(&store, cancelled).await, OrderStatus::Cancelled);
    assert_eq!(
        store.expire_orders(at(500 + TTL), 10).await.expect("expire"),
        1,
        "expires_at itself is overdue"
    );
}

// ---------------------------------------------------------------------------------------------
// Best sellers

async fn add_sales<S: Engine>(store: &S, sales: &[(ProductId, Hour, i64)]) {
    let mut tx = store.begin().await.expect("begin");
    for &(product, hour, quantity) in sales {
        tx.add_sales(product, hour, quantity).await.expect("add sales");
    }
    tx.commit().await.expect("commit");
}

fn ranking(entries: &[ecommerce_domain::ranking::PopularEntry]) -> Vec<(ProductId, i64)> {
    entries.iter().map(|e| (e.product_id, e.sold_quantity)).collect()
}

async fn popular_ranks_by_quantity_then_product_id<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 1).await;
    let b = product(&store, "B", 2_000, 1).await;
    let c = product(&store, "C", 3_000, 1).await;
    let d = product(&store, "D", 4_000, 1).await;
    let h = T0.hour();
    add_sales(
        &store,
        &[
            (c.id, h, 5),
            (b.id, h, 7),
            (a.id, Hour(h.0 - 1), 2),
            (a.id, h, 3),
            (d.id, h, 1),
        ],
    )
    .await;
    add_sales(&store, &[(b.id, h, 1)]).await;

    let top = store.popular(Hour(h.0 - 2), 3, T0).await.expect("popular");
    assert_eq!(
        ranking(&top),
        vec![(b.id, 8), (a.id, 5), (c.id, 5)],
        "ties go to the lower product id"
    );
    assert_eq!((top[0].name.as_str(), top[0].price), ("B", Krw(2_000)));
    assert_eq!(
        ranking(&store.popular(Hour(h.0 - 2), 10, T0).await.expect("popular")).len(),
        4
    );

    let mut tx = store.begin().await.expect("begin");
    let patch = ProductPatch {
        name: Some("B2".to_owned()),
        price: Some(Krw(2_100)),
        ..ProductPatch::default()
    };
    tx.update_product(b.id, &patch).await.expect("update");
    tx.commit().await.expect("commit");
    let top = store.popular(Hour(h.0 - 2), 1, T0).await.expect("popular");
    assert_eq!(
        (top[0].name.as_str(), top[0].price),
        ("B2", Krw(2_100)),
        "name and price are current"
    );
}

async fn refunded_sales_cancel_out_of_popular<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 1).await;
    let b = product(&store, "B", 2_000, 1).await;
    let h = T0.hour();
    add_sales(&store, &[(a.id, h, 2), (b.id, h, 4)]).await;
    add_sales(&store, &[(b.id, h, -4), (a.id, h, -1)]).await;
    assert_eq!(
        ranking(&store.popular(h, 5, T0).await.expect("popular")),
        vec![(a.id, 1)],
        "a fully refunded product is absent"
    );
    add_sales(&store, &[(a.id, h, -1)]).await;
    assert!(store.popular(h, 5, T0).await.expect("popular").is_empty());
}

async fn popular_counts_only_the_hours_in_the_window<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 1).await;
    let b = product(&store, "B", 2_000, 1).await;
    let h = T0.hour();
    add_sales(
        &store,
        &[(a.id, Hour(h.0 - 72), 100), (a.id, h, 1), (b.id, Hour(h.0 - 71), 2)],
    )
    .await;
    assert_eq!(
        ranking(&store.popular(Hour(h.0 - 72), 5, T0).await.expect("popular")),
        vec![(a.id, 101), (b.id, 2)]
    );
    assert_eq!(
        ranking(&store.popular(Hour(h.0 - 71), 5, T0).await.expect("popular")),
        vec![(b.id, 2), (a.id, 1)],
        "the oldest hour left the window"
    );
    assert_eq!(
        ranking(&store.popular(h, 5, T0).await.expect("popular")),
        vec![(a.id, 1)]
    );
    assert!(store.popular(Hour(h.0 + 1), 5, T0).await.expect("popular").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Outbox

async fn append_events<S: Engine>(store: &S, events: &[(&str, i64, Timestamp)]) {
    let mut tx = store.begin().await.expect("begin");
    for &(id, order, now) in events {
        let event = Event {
            id: id.to_owned(),
            event_type: "order.paid",
            order_id: OrderId(order),
            occurred_at: now,
            payload: format!(r#"{{"id":"{id}"}}"#),
        };
        tx.append_outbox(&event).await.expect("append");
    }
    tx.commit().await.expect("commit");
}

fn event_ids(events: &[ecommerce_domain::store::OutboxEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_id.as_str()).collect()
}

async fn outbox_events_wait_for_earlier_events_of_their_order<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    append_events(
        &store,
        &[("e1", 1, at(1)), ("e2", 2, at(2)), ("e3", 1, at(3)), ("e4", 3, at(4))],
    )
    .await;

    let first = store.lease_outbox(at(10), at(40), 1).await.expect("lease");
    assert_eq!(event_ids(&first), vec!["e1"], "oldest first, at most the limit");
    let second = store.lease_outbox(at(10), at(40), 10).await.expect("lease");
    assert_eq!(
        event_ids(&second),
        vec!["e2", "e4"],
        "e3 waits for e1 of the same order"
    );
    assert!(second.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(store.lease_outbox(at(11), at(41), 10).await.expect("lease").is_empty());

    store.mark_outbox_sent(&[first[0].seq], at(12)).await.expect("mark");
    let third = store.lease_outbox(at(12), at(42), 10).await.expect("lease");
    assert_eq!(event_ids(&third), vec!["e3"], "sent e1 frees e3");
    assert_eq!(
        (
            third[0].order_id,
            third[0].event_type.as_str(),
            third[0].payload.as_str()
        ),
        (OrderId(1), "order.paid", r#"{"id":"e3"}"#)
    );
}

async fn a_leased_event_is_not_leased_again_until_the_lease_runs_out<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    append_events(&store, &[("e1", 7, at(0))]).await;
    let leased = store.lease_outbox(at(0), at(30), 10).await.expect("lease");
    assert_eq!(event_ids(&leased), vec!["e1"]);
    assert!(
        store.lease_outbox(at(29), at(59), 10).await.expect("lease").is_empty(),
        "another relay holds the lease"
    );
    let again = store.lease_outbox(at(30), at(60), 10).await.expect("lease");
    assert_eq!(
        again, leased,
        "the lease ran out (a relay died): the event goes out again"
    );
    store.mark_outbox_sent(&[again[0].seq], at(31)).await.expect("mark");
    assert!(
        store
            .lease_outbox(at(100), at(130), 10)
            .await
            .expect("lease")
            .is_empty(),
        "a sent event is never leased again"
    );
}

async fn a_released_lease_lets_the_events_go_out_at_once<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    append_events(&store, &[("e1", 7, at(0)), ("e2", 8, at(0))]).await;
    let leased = store.lease_outbox(at(0), at(30), 10).await.expect("lease");
    assert_eq!(event_ids(&leased), vec!["e1", "e2"]);
    store.mark_outbox_sent(&[leased[0].seq], at(1)).await.expect("mark");
    // The sink failed on e2: the relay gives its lease back.
    store
        .release_outbox(&[leased[0].seq, leased[1].seq])
        .await
        .expect("release");
    let again = store.lease_outbox(at(2), at(32), 10).await.expect("lease");
    assert_eq!(
        event_ids(&again),
        vec!["e2"],
        "a released event is leased again before its lease ran out; a sent one is not"
    );
}

async fn purging_the_outbox_removes_only_events_sent_before_the_cutoff<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    append_events(&store, &[("e1", 1, at(0)), ("e2", 2, at(0)), ("e3", 3, at(0))]).await;
    let leased = store.lease_outbox(at(0), at(30), 10).await.expect("lease");
    store.mark_outbox_sent(&[leased[0].seq], at(5)).await.expect("mark");
    store.mark_outbox_sent(&[leased[1].seq], at(20)).await.expect("mark");
    assert_eq!(store.purge_sent_outbox(at(10)).await.expect("purge"), 1);
    assert_eq!(store.purge_sent_outbox(at(10)).await.expect("purge"), 0);
    assert_eq!(
        store.outbox_backlog().await.expect("backlog").unsent,
        1,
        "the unsent event is kept"
    );
    assert_eq!(store.purge_sent_outbox(at(1_000)).await.expect("purge"), 1);
    store.release_outbox(&[leased[2].seq]).await.expect("release");
    assert_eq!(
        event_ids(&store.lease_outbox(at(40), at(70), 10).await.expect("lease")),
        vec!["e3"]
    );
}

async fn outbox_backlog_counts_unsent_events_and_the_oldest<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    assert_eq!(
        store.outbox_backlog().await.expect("backlog"),
        OutboxBacklog {
            unsent: 0,
            oldest_created_at: None
        }
    );
    append_events(&store, &[("e1", 1, at(1)), ("e2", 2, at(2)), ("e3", 3, at(3))]).await;
    assert_eq!(
        store.outbox_backlog().await.expect("backlog"),
        OutboxBacklog {
            unsent: 3,
            oldest_created_at: Some(at(1))
        }
    );
    let leased = store.lease_outbox(at(5), at(35), 2).await.expect("lease");
    assert_eq!(
        store.outbox_backlog().await.expect("backlog").unsent,
        3,
        "leased is not sent"
    );
    store.mark_outbox_sent(&[leased[0].seq], at(6)).await.expect("mark");
    store
        .mark_outbox_sent(&[], at(6))
        .await
        .expect("marking nothing is fine");
    assert_eq!(
        store.outbox_backlog().await.expect("backlog"),
        OutboxBacklog {
            unsent: 2,
            oldest_created_at: Some(at(2))
        }
    );
    store.mark_outbox_sent(&[leased[1].seq], at(7)).await.expect("mark");
    let last = store.lease_outbox(at(8), at(38), 10).await.expect("lease");
    store
        .mark_outbox_sent(&last.iter().map(|e| e.seq).collect::<Vec<_>>(), at(9))
        .await
        .expect("mark");
    assert_eq!(store.outbox_backlog().await.expect("backlog"), OutboxBacklog::default());
}

// ---------------------------------------------------------------------------------------------
// Use cases through the port

/// Kim with some balance, three products, a cart holding all three, a RATE 10 coupon and a
/// pending order of B×3 and A×2 (9,500 KRW; 950 off with the coupon; 8,550 to pay).
struct Shop {
    kim: UserId,
    a: ProductId,
    b: ProductId,
    c: ProductId,
    user_coupon: UserCouponId,
    order: ecommerce_domain::order::Order,
}

const SHOP_DISCOUNT: Krw = Krw(950);
const SHOP_PAID: Krw = Krw(8_550);

async fn shop<S: Engine>(store: &S, balance: i64) -> Shop {
    let kim = user_with_balance(store, "kim@example.com", balance).await;
    let a = product(store, "A", 1_000, 10).await.id;
    let b = product(store, "B", 2_500, 5).await.id;
    let c = product(store, "C", 700, 3).await.id;
    let mut tx = store.begin().await.expect("begin");
    for (product, quantity) in [(b, 1), (c, 1), (a, 2)] {
        cart::put_cart_item(&mut tx, own(kim), product, quantity, T0)
            .await
            .expect("put in cart");
    }
    tx.commit().await.expect("commit");
    let deal = coupon(store, DiscountType::Rate, 10, 5, 3_600).await;
    let user_coupon = issue(store, kim, &deal).await;
    let order = order(store, kim, &[(b, 3), (a, 2)], T0).await;
    assert_eq!(order.total_amount, Krw(9_500));
    Shop {
        kim,
        a,
        b,
        c,
        user_coupon,
        order,
    }
}

/// Everything a payment touches, to compare before and after.
async fn snapshot<S: Engine>(store: &S, shop: &Shop) -> String {
    let stocks = [
        stock(store, shop.a).await,
        stock(store, shop.b).await,
        stock(store, shop.c).await,
    ];
    let order = store.order(shop.order.id).await.expect("read").expect("exists");
    let coupons = store
        .user_coupons(shop.kim, None, at(60), page(None, 10))
        .await
        .expect("coupons");
    let cart: Vec<_> = store
        .cart(shop.kim)
        .await
        .expect("cart")
        .into_iter()
        .map(|i| (i.product.id, i.quantity))
        .collect();
    let history = store.balance_history(shop.kim, page(None, 100)).await.expect("history");
    let popular = store.popular(Hour(T0.hour().0 - 1), 10, T0).await.expect("popular");
    let backlog = store.outbox_backlog().await.expect("backlog");
    format!(
        "stock {stocks:?}\norder {order:?}\ncoupons {coupons:?}\ncart {cart:?}\nbalance {:?}\nhistory {history:?}\npopular {popular:?}\noutbox {backlog:?}",
        store.balance(shop.kim).await.expect("balance")
    )
}

async fn paying_takes_stock_money_and_coupon_and_records_the_sale<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let shop = shop(&store, 20_000).await;
    let now = at(60);
    let settled = pay(&store, shop.order.id, shop.kim, Some(shop.user_coupon), now)
        .await
        .expect("pay");

    assert_eq!(
        (settled.order.discount_amount, settled.order.paid_amount),
        (SHOP_DISCOUNT, SHOP_PAID)
    );
    let paid = store.order(shop.order.id).await.expect("read").expect("exists");
    assert_eq!(paid, settled.order, "the answer is what was stored");
    assert_eq!(
        (
            paid.stored_status,
            paid.discount_amount,
            paid.paid_amount,
            paid.user_coupon_id,
            paid.paid_at
        ),
        (
            OrderStatus::Paid,
            SHOP_DISCOUNT,
            SHOP_PAID,
            Some(shop.user_coupon),
            Some(now)
        )
    );
    assert_eq!(
        [
            stock(&store, shop.a).await,
            stock(&store, shop.b).await,
            stock(&store, shop.c).await
        ],
        [8, 2, 3],
        "every line"
    );

    assert_eq!(balance(&store, shop.kim).await, 20_000 - SHOP_PAID.0);
    let history = store.balance_history(shop.kim, page(None, 100)).await.expect("history");
    let last = &history[0];
    assert_eq!(
        (
            last.kind,
            last.amount,
            last.balance_after,
            last.order_id,
            last.created_at
        ),
        (
            EntryKind::Payment,
            -SHOP_PAID,
            Krw(20_000) - SHOP_PAID,
            Some(shop.order.id),
            now
        )
    );
    assert_eq!(history.iter().map(|e| e.amount.0).sum::<i64>(), 20_000 - SHOP_PAID.0);

    let used = store
        .user_coupons(shop.kim, Some(UserCouponStatus::Used), now, page(None, 10))
        .await
        .expect("coupons");
    assert_eq!(
        used.iter().map(|c| (c.id, c.order_id, c.used_at)).collect::<Vec<_>>(),
        vec![(shop.user_coupon, Some(shop.order.id), Some(now))]
    );

    let cart: Vec<_> = store
        .cart(shop.kim)
        .await
        .expect("cart")
        .into_iter()
        .map(|i| i.product.id)
        .collect();
    assert_eq!(cart, vec![shop.c], "the paid products leave the cart");
    assert_eq!(
        ranking(&store.popular(now.hour(), 5, T0).await.expect("popular")),
        vec![(shop.b, 3), (shop.a, 2)]
    );

    assert_eq!(
        store.outbox_backlog().await.expect("backlog"),
        OutboxBacklog {
            unsent: 1,
            oldest_created_at: Some(now)
        }
    );
    let events = store.lease_outbox(now, at(90), 10).await.expect("lease");
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].event_id.as_str(),
            events[0].event_type.as_str(),
            events[0].order_id
        ),
        (settled.event.id.as_str(), "order.paid", shop.order.id)
    );
    let payload: serde_json::Value = serde_json::from_str(&events[0].payload).expect("the payload is JSON");
    assert_eq!(payload["data"]["order_id"], shop.order.id.0);
    assert_eq!(payload["data"]["paid_amount"], SHOP_PAID.0);
    assert_eq!(payload["data"]["items"].as_array().map(Vec::len), Some(2));

    assert!(matches!(
        pay(&store, shop.order.id, shop.kim, None, at(61)).await,
        Err(Error::OrderNotPending)
    ));
}

async fn a_payment_failing_on_balance_changes_nothing<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let shop = shop(&store, 8_000).await;
    let before = snapshot(&store, &shop).await;
    // The order, the coupon and the stock are all written before the balance is found short.
    let outcome = pay(&store, shop.order.id, shop.kim, Some(shop.user_coupon), at(60)).await;
    assert!(
        matches!(outcome, Err(Error::InsufficientBalance)),
        "{:?}",
        outcome.err()
    );
    assert_eq!(
        snapshot(&store, &shop).await,
        before,
        "dropping the transaction undid every write"
    );

    charge(&store, shop.kim, 1_000).await;
    let settled = pay(&store, shop.order.id, shop.kim, Some(shop.user_coupon), at(61))
        .await
        .expect("pay after charging");
    assert_eq!(settled.order.paid_amount, SHOP_PAID);
    assert_eq!(balance(&store, shop.kim).await, 9_000 - SHOP_PAID.0);
}

async fn a_payment_failing_on_stock_changes_nothing<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let shop = shop(&store, 20_000).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.take_stock(shop.b, 3).await.expect("take"), "someone else bought B");
    tx.commit().await.expect("commit");
    let before = snapshot(&store, &shop).await;
    // A is taken (lower id) before B is found short.
    let outcome = pay(&store, shop.order.id, shop.kim, Some(shop.user_coupon), at(60)).await;
    assert!(
        matches!(outcome, Err(Error::OutOfStock(id)) if id == shop.b),
        "{:?}",
        outcome.err()
    );
    assert_eq!(snapshot(&store, &shop).await, before);
    assert_eq!(stock(&store, shop.a).await, 10);
}

async fn paying_with_an_unusable_coupon_fails<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let shop = shop(&store, 50_000).await;
    let lee = user(&store, "lee@example.com").await;
    let lees = issue(&store, lee, &coupon(&store, DiscountType::Fixed, 1_000, 5, 3_600).await).await;
    let short = coupon(&store, DiscountType::Fixed, 1_000, 5, 30).await;
    let expiring = issue(&store, shop.kim, &short).await;

    let before = snapshot(&store, &shop).await;
    let outcome = pay(&store, shop.order.id, shop.kim, Some(lees), at(60)).await;
    assert!(
        matches!(outcome, Err(Error::CouponNotFound)),
        "another user's coupon: {:?}",
        outcome.err()
    );
    let outcome = pay(&store, shop.order.id, shop.kim, Some(expiring), at(60)).await;
    assert!(matches!(outcome, Err(Error::CouponExpired)), "{:?}", outcome.err());
    let outcome = pay(&store, shop.order.id, shop.kim, Some(UserCouponId(9_999)), at(60)).await;
    assert!(matches!(outcome, Err(Error::CouponNotFound)), "{:?}", outcome.err());
    assert_eq!(snapshot(&store, &shop).await, before);

    let second = order(&store, shop.kim, &[(shop.a, 1)], T0).await;
    pay(&store, second.id, shop.kim, Some(shop.user_coupon), at(60))
        .await
        .expect("pay");
    let outcome = pay(&store, shop.order.id, shop.kim, Some(shop.user_coupon), at(61)).await;
    assert!(matches!(outcome, Err(Error::CouponAlreadyUsed)), "{:?}", outcome.err());
    assert_eq!(
        store
            .order(shop.order.id)
            .await
            .expect("read")
            .expect("exists")
            .stored_status,
        OrderStatus::PendingPayment
    );
}

async fn refunding_gives_back_money_stock_and_coupon<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let shop = shop(&store, 20_000).await;
    let paid_at = at(60);
    pay(&store, shop.order.id, shop.kim, Some(shop.user_coupon), paid_at)
        .await
        .expect("pay");
    let later = at(2 * 3_600); // another hour: the sale leaves the hour it was paid in
    let settled = refund(&store, shop.order.id, shop.kim, later).await.expect("refund");

    assert_eq!(
        store
            .order(shop.order.id)
            .await
            .expect("read")
            .expect("exists")
            .stored_status,
        OrderStatus::Refunded
    );
    assert_eq!(settled.order.stored_status, OrderStatus::Refunded);
    assert_eq!(
        [stock(&store, shop.a).await, stock(&store, shop.b).await],
        [10, 5],
        "the stock is back"
    );
    assert_eq!(balance(&store, shop.kim).await, 20_000);
    let history = store.balance_history(shop.kim, page(None, 100)).await.expect("history");
    assert_eq!(
        (
            history[0].kind,
            history[0].amount,
            history[0].balance_after,
            history[0].order_id
        ),
        (EntryKind::Refund, SHOP_PAID, Krw(20_000), Some(shop.order.id))
    );
    assert_eq!(history.iter().map(|e| e.amount.0).sum::<i64>(), 20_000);

    let coupon = store
        .user_coupons(shop.kim, Some(UserCouponStatus::Available), paid_at, page(None, 10))
        .await
        .expect("list");
    assert_eq!(
        coupon.iter().map(|c| (c.id, c.used_at, c.order_id)).collect::<Vec<_>>(),
        vec![(shop.user_coupon, None, None)]
    );
    assert!(
        store
            .popular(Hour(paid_at.hour().0 - 1), 10, T0)
            .await
            .expect("popular")
            .is_empty(),
        "refunded orders no longer count"
    );

    let first = store.lease_outbox(later, at(2 * 3_600 + 30), 10).await.expect("lease");
    assert_eq!(
        first.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        vec!["order.paid"],
        "order.refunded waits"
    );
    store.mark_outbox_sent(&[first[0].seq], later).await.expect("mark");
    let second = store.lease_outbox(later, at(2 * 3_600 + 30), 10).await.expect("lease");
    assert_eq!(
        (second.len(), second[0].event_id.as_str()),
        (1, settled.event.id.as_str())
    );
    assert_eq!(second[0].event_type, "order.refunded");

    assert!(matches!(
        refund(&store, shop.order.id, shop.kim, at(2 * 3_600 + 1)).await,
        Err(Error::OrderNotPaid)
    ));
    assert_eq!(balance(&store, shop.kim).await, 20_000, "refunded once");
}

/// Audit L6: stock restocked up to the maximum while an order was paid comes back capped.
async fn a_refund_never_fails_on_the_stock_limit<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let free = product(&store, "Sample", 0, 1_000).await;
    let bought = order(&store, kim, &[(free.id, 1_000)], T0).await;
    pay(&store, bought.id, kim, None, at(1)).await.expect("pay");
    let mut tx = store.begin().await.expect("begin");
    catalog::restock(&mut tx, free.id, MAX_STOCK)
        .await
        .expect("restock to the maximum");
    tx.commit().await.expect("commit");

    let settled = refund(&store, bought.id, kim, at(2)).await.expect("refund");
    assert_eq!(settled.order.stored_status, OrderStatus::Refunded);
    assert_eq!(stock(&store, free.id).await, MAX_STOCK);
}

async fn only_pending_unexpired_orders_can_be_cancelled<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user_with_balance(&store, "kim@example.com", 50_000).await;
    let a = product(&store, "A", 1_000, 10).await;
    let first = order(&store, kim, &[(a.id, 1)], T0).await;
    let cancelled = cancel(&store, first.id, kim, at(10)).await.expect("cancel");
    assert_eq!(cancelled.stored_status, OrderStatus::Cancelled);
    assert_eq!(
        store
            .order(first.id)
            .await
            .expect("read")
            .expect("exists")
            .stored_status,
        OrderStatus::Cancelled
    );
    assert!(matches!(
        cancel(&store, first.id, kim, at(11)).await,
        Err(Error::OrderNotPending)
    ));
    assert!(matches!(
        pay(&store, first.id, kim, None, at(11)).await,
        Err(Error::OrderNotPending)
    ));

    let overdue = order(&store, kim, &[(a.id, 1)], T0).await;
    assert!(matches!(
        cancel(&store, overdue.id, kim, at(TTL)).await,
        Err(Error::OrderExpired)
    ));
    assert!(matches!(
        pay(&store, overdue.id, kim, None, at(TTL)).await,
        Err(Error::OrderExpired)
    ));
    assert_eq!(
        store
            .order(overdue.id)
            .await
            .expect("read")
            .expect("exists")
            .stored_status,
        OrderStatus::PendingPayment
    );

    let lee = user(&store, "lee@example.com").await;
    let mut tx = store.begin().await.expect("begin");
    let outcome = order::cancel_order(&mut tx, overdue.id, owner(lee), at(1)).await;
    assert!(
        matches!(outcome, Err(Error::OrderNotFound)),
        "another user's order is invisible"
    );
    drop(tx);
    assert_eq!((stock(&store, a.id).await, balance(&store, kim).await), (10, 50_000));
}

// ---------------------------------------------------------------------------------------------
// Races

async fn concurrent_stock_takes_never_oversell<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let coat = product(&store, "Coat", 1_000, 20).await.id;
    let tasks = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.expect("begin");
                let taken = tx.take_stock(coat, 1).await.expect("take");
                tokio::task::yield_now().await; // hold the row a little longer
                if taken {
                    tx.commit().await.expect("commit");
                }
                taken
            })
        })
        .collect();
    let taken = join_all(tasks).await.into_iter().filter(|&t| t).count();
    assert_eq!(taken, 20);
    assert_eq!(stock(&store, coat).await, 0);
}

async fn concurrent_coupon_issues_never_exceed_the_total<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let rush = coupon(&store, DiscountType::Fixed, 1_000, 30, 3_600).await;
    let mut users = Vec::new();
    for i in 0..100 {
        users.push(user(&store, &format!("user{i}@example.com")).await);
    }
    let tasks = users
        .iter()
        .enumerate()
        .map(|(i, &user)| {
            let (store, rush) = (store.clone(), rush.clone());
            tokio::spawn(async move {
                let mut tx = store.begin().await.expect("begin");
                match coupon::issue_coupon(&mut tx, own(user), &rush, T0, i as u64).await {
                    Ok(_) => {
                        tx.commit().await.expect("commit");
                        true
                    }
                    Err(Error::CouponSoldOut) => false,
                    Err(other) => panic!("unexpected error: {other}"),
                }
            })
        })
        .collect();
    let issued = join_all(tasks).await.into_iter().filter(|&t| t).count();
    assert_eq!(issued, 30);
    assert_eq!(remaining(&store, rush.id).await, 0);
    let mut holders = 0;
    for &user in &users {
        holders += usize::from(store.has_user_coupon(user, rush.id).await.expect("read"));
    }
    assert_eq!(holders, 30, "a sold-out attempt leaves no user coupon behind");
    assert_eq!(store.coupon_holders(rush.id).await.expect("holders").len(), 30);
    assert!(
        store
            .coupons_in_stock(page(None, 10), T0)
            .await
            .expect("list")
            .is_empty()
    );
}

async fn concurrent_issues_to_one_user_give_one_coupon<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let rush = coupon(&store, DiscountType::Fixed, 1_000, 30, 3_600).await;
    let kim = user(&store, "kim@example.com").await;
    let tasks = (0..10)
        .map(|i| {
            let (store, rush) = (store.clone(), rush.clone());
            tokio::spawn(async move {
                let mut tx = store.begin().await.expect("begin");
                match coupon::issue_coupon(&mut tx, own(kim), &rush, T0, i).await {
                    Ok(_) => {
                        tx.commit().await.expect("commit");
                        true
                    }
                    Err(Error::CouponAlreadyIssued) => false,
                    Err(other) => panic!("unexpected error: {other}"),
                }
            })
        })
        .collect();
    assert_eq!(join_all(tasks).await.into_iter().filter(|&t| t).count(), 1);
    assert_eq!(remaining(&store, rush.id).await, 29);
    assert_eq!(
        store
            .user_coupons(kim, None, T0, page(None, 10))
            .await
            .expect("list")
            .len(),
        1
    );
}

async fn concurrent_payments_with_overlapping_products_do_not_deadlock<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let p1 = product(&store, "P1", 100, 1_000).await.id;
    let p2 = product(&store, "P2", 200, 1_000).await.id;
    let p3 = product(&store, "P3", 300, 1_000).await.id;
    let mut orders = Vec::new();
    for i in 0..24 {
        let buyer = user_with_balance(&store, &format!("user{i}@example.com"), 10_000).await;
        let mut tx = store.begin().await.expect("begin");
        for product in [p1, p2, p3] {
            tx.put_cart_item(buyer, product, 1).await.expect("put");
        }
        tx.commit().await.expect("commit");
        let lines = if i % 2 == 0 {
            [(p1, 1), (p2, 2), (p3, 3)]
        } else {
            [(p3, 3), (p2, 2), (p1, 1)]
        };
        orders.push((buyer, order(&store, buyer, &lines, T0).await.id));
    }
    let tasks = orders
        .iter()
        .map(|&(buyer, order)| {
            let store = store.clone();
            tokio::spawn(async move {
                pay(&store, order, buyer, None, at(1))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let outcomes = join_all(tasks).await;
    let failures: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failures.is_empty(), "every payment must succeed: {failures:?}");
    assert_eq!(
        [
            stock(&store, p1).await,
            stock(&store, p2).await,
            stock(&store, p3).await
        ],
        [1_000 - 24, 1_000 - 48, 1_000 - 72]
    );
    assert_eq!(
        ranking(&store.popular(T0.hour(), 5, T0).await.expect("popular")),
        vec![(p3, 72), (p2, 48), (p1, 24)]
    );
    assert_eq!(store.outbox_backlog().await.expect("backlog").unsent, 24);
    for &(buyer, _) in &orders {
        assert_eq!(balance(&store, buyer).await, 10_000 - 1_400);
        assert!(store.cart(buyer).await.expect("cart").is_empty());
    }
}

async fn concurrent_payments_of_one_order_pay_it_once<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user_with_balance(&store, "kim@example.com", 50_000).await;
    let a = product(&store, "A", 1_000, 100).await.id;
    let paid = order(&store, kim, &[(a, 3)], T0).await.id;
    let tasks = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                match pay(&store, paid, kim, None, at(1)).await {
                    Ok(_) => true,
                    Err(Error::OrderNotPending) => false,
                    Err(other) => panic!("unexpected error: {other}"),
                }
            })
        })
        .collect();
    assert_eq!(join_all(tasks).await.into_iter().filter(|&t| t).count(), 1);
    assert_eq!(balance(&store, kim).await, 47_000);
    assert_eq!(stock(&store, a).await, 97);
    assert_eq!(
        store.outbox_backlog().await.expect("backlog").unsent,
        1,
        "exactly one order.paid"
    );
    let payments = store.balance_history(kim, page(None, 100)).await.expect("history");
    assert_eq!(payments.iter().filter(|e| e.kind == EntryKind::Payment).count(), 1);
}

async fn concurrent_charges_with_one_idempotency_key_move_money_once<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let tasks = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = scope(kim, "charge", "same-key");
                let mut tx = store.begin().await.expect("begin");
                match tx.claim_idempotency_key(&key, "hash", T0).await.expect("claim") {
                    KeyClaim::Fresh => {
                        let receipt = wallet::charge(&mut tx, own(kim), Krw(5_000), T0).await.expect("charge");
                        tx.save_idempotent_response(&key, 200, &receipt.balance.to_string())
                            .await
                            .expect("save");
                        tokio::task::yield_now().await;
                        tx.commit().await.expect("commit");
                        KeyClaim::Fresh
                    }
                    other => other,
                }
            })
        })
        .collect();
    let outcomes = join_all(tasks).await;
    assert_eq!(
        outcomes.iter().filter(|&c| *c == KeyClaim::Fresh).count(),
        1,
        "{outcomes:?}"
    );
    let replay = KeyClaim::Replay {
        status: 200,
        body: "5000".to_owned(),
    };
    assert!(
        outcomes
            .iter()
            .all(|c| [KeyClaim::Fresh, KeyClaim::InProgress, replay.clone()].contains(c)),
        "a duplicate either waits for the first answer or is told the first is running: {outcomes:?}"
    );
    assert_eq!(balance(&store, kim).await, 5_000, "the money moved once");
    assert_eq!(
        store.balance_history(kim, page(None, 10)).await.expect("history").len(),
        1
    );
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.claim_idempotency_key(&scope(kim, "charge", "same-key"), "hash", at(1))
            .await
            .expect("claim"),
        replay
    );
}

/// PostgreSQL only: SQLite runs one write transaction at a time, so a duplicate never meets a
/// running first request there.
async fn a_key_held_by_a_running_request_is_in_progress<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let key = scope(UserId(1), "charge", "key-1");
    let mut first = store.begin().await.expect("begin");
    assert_eq!(
        first.claim_idempotency_key(&key, "hash-a", T0).await.expect("claim"),
        KeyClaim::Fresh
    );
    let mut duplicate = store.begin().await.expect("begin");
    assert_eq!(
        duplicate
            .claim_idempotency_key(&key, "hash-a", at(1))
            .await
            .expect("claim"),
        KeyClaim::InProgress,
        "a duplicate does not queue behind the running request"
    );
    drop(duplicate);
    first.save_idempotent_response(&key, 200, "done").await.expect("save");
    first.commit().await.expect("commit");
    let mut after = store.begin().await.expect("begin");
    assert_eq!(
        after.claim_idempotency_key(&key, "hash-a", at(2)).await.expect("claim"),
        KeyClaim::Replay {
            status: 200,
            body: "done".to_owned()
        }
    );
    drop(after);

    let other = scope(UserId(1), "charge", "key-2");
    let mut failing = store.begin().await.expect("begin");
    assert_eq!(
        failing
            .claim_idempotency_key(&other, "hash-a", T0)
            .await
            .expect("claim"),
        KeyClaim::Fresh
    );
    let mut duplicate = store.begin().await.expect("begin");
    assert_eq!(
        duplicate
            .claim_idempotency_key(&other, "hash-b", at(1))
            .await
            .expect("claim"),
        KeyClaim::InProgress
    );
    drop(duplicate);
    drop(failing);
    let mut retry = store.begin().await.expect("begin");
    assert_eq!(
        retry
            .claim_idempotency_key(&other, "hash-b", at(2))
            .await
            .expect("claim"),
        KeyClaim::Fresh,
        "a rolled-back holder frees the key"
    );
}

async fn concurrent_relays_lease_each_event_once<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let events: Vec<(String, i64)> = (0..40).map(|i| (format!("e{i}"), i)).collect();
    let refs: Vec<(&str, i64, Timestamp)> = events
        .iter()
        .map(|(id, order)| (id.as_str(), *order, at(*order)))
        .collect();
    append_events(&store, &refs).await;
    let tasks = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.lease_outbox(at(100), at(130), 40).await.expect("lease") })
        })
        .collect();
    let leased: Vec<String> = join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .map(|e| e.event_id)
        .collect();
    let unique: HashSet<&String> = leased.iter().collect();
    assert_eq!(unique.len(), leased.len(), "an event was leased twice");
    assert_eq!(leased.len(), 40, "every event was leased");
}

async fn concurrent_expiry_runs_mark_each_order_once<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let a = product(&store, "A", 1_000, 100).await.id;
    for _ in 0..30 {
        order(&store, kim, &[(a, 1)], T0).await;
    }
    let tasks = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.expire_orders(at(TTL + 1), 100).await.expect("expire") })
        })
        .collect();
    assert_eq!(join_all(tasks).await.into_iter().sum::<u64>(), 30);
    let expired = store
        .orders(kim, Some(OrderStatus::Expired), at(TTL + 1), page(None, 100))
        .await
        .expect("list");
    assert!(expired.iter().all(|o| o.stored_status == OrderStatus::Expired));
    assert_eq!(expired.len(), 30);
}

// ---------------------------------------------------------------------------------------------
// Admin reads (the console)

async fn admin_lists_hold_every_product_and_coupon_newest_first<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 5).await;
    let b = product(&store, "B", 2_000, 0).await;
    let c = product(&store, "C", 3_000, 5).await;
    let mut tx = store.begin().await.expect("begin");
    let stop = ProductPatch {
        status: Some(ProductStatus::Stopped),
        ..ProductPatch::default()
    };
    tx.update_product(c.id, &stop).await.expect("stop");
    tx.commit().await.expect("commit");
    let products = store.all_products(None, page(None, 10)).await.expect("list");
    assert_eq!(
        products.iter().map(|p| (p.id, p.status)).collect::<Vec<_>>(),
        vec![
            (c.id, ProductStatus::Stopped),
            (b.id, ProductStatus::OnSale),
            (a.id, ProductStatus::OnSale)
        ],
        "stopped and sold-out products too, newest first"
    );
    let first = store.all_products(None, page(None, 2)).await.expect("list");
    assert_eq!(first.iter().map(|p| p.id).collect::<Vec<_>>(), vec![c.id, b.id]);
    let rest = store.all_products(None, page(Some(b.id.0), 2)).await.expect("list");
    assert_eq!(rest.iter().map(|p| p.id).collect::<Vec<_>>(), vec![a.id]);
    let by = |status, after, limit| store.all_products(Some(status), page(after, limit));
    let on_sale = by(ProductStatus::OnSale, None, 10).await.expect("list");
    assert_eq!(on_sale.iter().map(|p| p.id).collect::<Vec<_>>(), vec![b.id, a.id]);
    let on_sale = by(ProductStatus::OnSale, Some(b.id.0), 10).await.expect("list");
    assert_eq!(on_sale.iter().map(|p| p.id).collect::<Vec<_>>(), vec![a.id]);
    let stopped = by(ProductStatus::Stopped, None, 10).await.expect("list");
    assert_eq!(stopped.iter().map(|p| p.id).collect::<Vec<_>>(), vec![c.id]);

    let c1 = coupon(&store, DiscountType::Fixed, 1_000, 1, 3_600).await;
    let c2 = coupon(&store, DiscountType::Rate, 5, 2, 3_600).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.take_coupon(c1.id, 0).await.expect("take"));
    tx.commit().await.expect("commit");
    let coupons = store.all_coupons(page(None, 10)).await.expect("list");
    assert_eq!(
        coupons.iter().map(|c| (c.id, c.remaining_quantity)).collect::<Vec<_>>(),
        vec![(c2.id, 2), (c1.id, 0)],
        "the sold-out coupon too, with 0 left"
    );
    let rest = store.all_coupons(page(Some(c2.id.0), 1)).await.expect("list");
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), vec![c1.id]);
}

async fn admin_order_list_holds_every_users_orders_by_computed_status<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user_with_balance(&store, "kim@example.com", 100_000).await;
    let lee = user_with_balance(&store, "lee@example.com", 100_000).await;
    let a = product(&store, "A", 1_000, 50).await;
    let b = product(&store, "B", 2_000, 50).await;
    let overdue = order(&store, kim, &[(a.id, 1)], T0).await;
    let paid = order(&store, lee, &[(a.id, 1), (b.id, 2)], at(500)).await;
    pay(&store, paid.id, lee, None, at(600)).await.expect("pay");
    let marked = order(&store, lee, &[(b.id, 1)], at(550)).await;
    assert_eq!(store.expire_orders(at(1_500), 10).await.expect("expire"), 2);
    let cancelled = order(&store, kim, &[(b.id, 1)], at(1_500)).await;
    cancel(&store, cancelled.id, kim, at(1_600)).await.expect("cancel");
    let pending = order(&store, lee, &[(a.id, 2)], at(1_700)).await;
    let late = order(&store, kim, &[(a.id, 1)], at(1_710)).await;

    // At 2,000 s: `late` and `pending` are pending, the others settled or expired.
    let now = at(2_000);
    let ids = |list: Vec<ecommerce_domain::order::Order>| list.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let all = store.all_orders(None, now, page(None, 10)).await.expect("list");
    assert_eq!(
        ids(all.clone()),
        vec![late.id, pending.id, cancelled.id, marked.id, paid.id, overdue.id]
    );
    assert_eq!(all[4].lines, paid.lines, "every line of every order");
    let by = |status, now, after, limit| store.all_orders(Some(status), now, page(after, limit));
    assert_eq!(
        ids(by(OrderStatus::PendingPayment, now, None, 10).await.expect("list")),
        vec![late.id, pending.id]
    );
    assert_eq!(
        ids(by(OrderStatus::Paid, now, None, 10).await.expect("list")),
        vec![paid.id]
    );
    assert_eq!(
        ids(by(OrderStatus::Cancelled, now, None, 10).await.expect("list")),
        vec![cancelled.id]
    );
    assert_eq!(
        ids(by(OrderStatus::Expired, now, None, 10).await.expect("list")),
        vec![marked.id, overdue.id]
    );
    assert!(by(OrderStatus::Refunded, now, None, 10).await.expect("list").is_empty());

    // Later, `pending` is overdue but not yet marked: EXPIRED, merged in id order with the marked ones.
    let later = at(2_605);
    assert_eq!(
        ids(by(OrderStatus::Expired, later, None, 10).await.expect("list")),
        vec![pending.id, marked.id, overdue.id],
        "overdue but not yet marked counts as EXPIRED"
    );
    assert_eq!(
        ids(by(OrderStatus::PendingPayment, later, None, 10).await.expect("list")),
        vec![late.id]
    );
    let first = by(OrderStatus::Expired, later, None, 2).await.expect("list");
    assert_eq!(ids(first), vec![pending.id, marked.id]);
    let rest = by(OrderStatus::Expired, later, Some(marked.id.0), 2)
        .await
        .expect("list");
    assert_eq!(ids(rest), vec![overdue.id]);
    let first = store.all_orders(None, now, page(None, 2)).await.expect("list");
    assert_eq!(ids(first), vec![late.id, pending.id]);
    let rest = store
        .all_orders(None, now, page(Some(marked.id.0), 10))
        .await
        .expect("list");
    assert_eq!(ids(rest.clone()), vec![paid.id, overdue.id]);
    assert_eq!(rest[0].lines.len(), 2, "the page limit counts orders, not lines");

    // Orders paid since an instant: by `paid_at`, refunded ones too.
    let second = order(&store, kim, &[(b.id, 1)], at(1_800)).await;
    pay(&store, second.id, kim, None, at(1_900)).await.expect("pay");
    refund(&store, second.id, kim, at(1_950)).await.expect("refund");
    assert_eq!(store.orders_paid_since(at(600)).await.expect("count"), 2);
    assert_eq!(store.orders_paid_since(at(601)).await.expect("count"), 1);
    assert_eq!(store.orders_paid_since(at(1_900)).await.expect("count"), 1);
    assert_eq!(store.orders_paid_since(at(1_901)).await.expect("count"), 0);
}

async fn accounts_are_listed_newest_first_and_found_by_email<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user_with_balance(&store, "kim@example.com", 7_000).await;
    let lee = user(&store, "lee@example.com").await;
    let all = store.accounts(None, page(None, 10)).await.expect("list");
    assert_eq!(all.iter().map(|a| a.id).collect::<Vec<_>>(), vec![lee, kim]);
    let found = store
        .accounts(Some("kim@example.com"), page(None, 10))
        .await
        .expect("find");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].id, found[0].email.as_str(), found[0].role, found[0].balance),
        (kim, "kim@example.com", Role::User, Krw(7_000))
    );
    assert!(found[0].created_at.millis() > 0);
    assert!(
        store
            .accounts(Some("nobody@example.com"), page(None, 10))
            .await
            .expect("find")
            .is_empty()
    );
    let rest = store.accounts(None, page(Some(lee.0), 10)).await.expect("list");
    assert_eq!(rest.iter().map(|a| a.id).collect::<Vec<_>>(), vec![kim]);
    assert_eq!(store.account(kim).await.expect("read"), Some(found[0].clone()));
    assert_eq!(store.account(UserId(987_654)).await.expect("read"), None);
}

async fn sales_by_hour_sum_the_products_of_each_hour_in_the_window<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 1).await;
    let b = product(&store, "B", 2_000, 1).await;
    let h = T0.hour();
    add_sales(
        &store,
        &[
            (a.id, Hour(h.0 - 72), 100),
            (a.id, Hour(h.0 - 71), 2),
            (b.id, Hour(h.0 - 71), 3),
            (a.id, h, 4),
        ],
    )
    .await;
    add_sales(&store, &[(a.id, h, -1)]).await;
    let sold = |since| store.sales_by_hour(since);
    let got: Vec<(i64, i64)> = sold(Hour(h.0 - 71))
        .await
        .expect("sales")
        .iter()
        .map(|s| (s.hour.0, s.quantity))
        .collect();
    assert_eq!(
        got,
        vec![(h.0 - 71, 5), (h.0, 3)],
        "summed over products, refunds taken out"
    );
    assert!(sold(Hour(h.0 + 1)).await.expect("sales").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Limited drops: scheduled release, per-customer limits, coupon issue windows

async fn drop_product<S: Engine>(
    store: &S,
    stock: i64,
    sale_starts_at: Option<&str>,
    max_per_user: Option<i64>,
) -> catalog::Product {
    let new = NewProduct::parse(ProductRequest {
        name: "Sneaker",
        price: Krw(1_000),
        stock,
        sale_starts_at,
        max_per_user,
    })
    .expect("valid product");
    let mut tx = store.begin().await.expect("begin");
    let product = catalog::create_product(&mut tx, &new, T0).await.expect("create");
    tx.commit().await.expect("commit");
    product
}

async fn drop_fields_of_products_are_stored_patched_and_cleared<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let sneaker = drop_product(&store, 5, Some("2027-01-15T09:00:00Z"), Some(2)).await;
    let starts = Timestamp::parse_rfc3339("2027-01-15T09:00:00Z", "t").expect("an instant");
    assert_eq!((sneaker.sale_starts_at, sneaker.max_per_user), (Some(starts), Some(2)));
    assert_eq!(store.product(sneaker.id).await.expect("read"), Some(sneaker.clone()));
    let plain = product(&store, "Plain", 1, 1).await;
    assert_eq!((plain.sale_starts_at, plain.max_per_user), (None, None));
    let kim = user(&store, "kim@example.com").await;

    let mut tx = store.begin().await.expect("begin");
    let renamed = ProductPatch {
        name: Some("Sneaker II".to_owned()),
        ..ProductPatch::default()
    };
    let kept = tx
        .update_product(sneaker.id, &renamed)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (kept.sale_starts_at, kept.max_per_user),
        (Some(starts), Some(2)),
        "absent leaves them"
    );
    let moved = ProductPatch {
        sale_starts_at: Some(Some(T0)),
        max_per_user: Some(Some(7)),
        ..ProductPatch::default()
    };
    let moved = tx
        .update_product(sneaker.id, &moved)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!((moved.sale_starts_at, moved.max_per_user), (Some(T0), Some(7)));
    let cleared = ProductPatch {
        sale_starts_at: Some(None),
        max_per_user: Some(None),
        ..ProductPatch::default()
    };
    let cleared = tx
        .update_product(sneaker.id, &cleared)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!((cleared.sale_starts_at, cleared.max_per_user), (None, None));
    assert_eq!(cleared.name, "Sneaker II");
    // The cart reads the fields too.
    tx.put_cart_item(kim, plain.id, 1).await.expect("cart");
    let cart = tx.cart(kim).await.expect("cart");
    assert_eq!(cart[0].product, plain);
    tx.commit().await.expect("commit");
    assert_eq!(store.product(sneaker.id).await.expect("read"), Some(cleared));
}

async fn products_on_sale_leave_out_unreleased_ones_unless_asked<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let released = product(&store, "Released", 1, 1).await.id;
    let at_t0 = drop_product(&store, 1, Some(&T0.to_rfc3339()), None).await.id;
    let later = drop_product(&store, 1, Some(&at(60).to_rfc3339()), None).await.id;
    let ids = |items: Vec<catalog::Product>| items.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.products_on_sale(page(None, 10), Some(T0)).await.expect("list")),
        vec![released, at_t0],
        "released at the instant itself"
    );
    assert_eq!(
        ids(store
            .products_on_sale(page(None, 10), Some(at(-1)))
            .await
            .expect("list")),
        vec![released]
    );
    assert_eq!(
        ids(store
            .products_on_sale(page(None, 10), Some(at(60)))
            .await
            .expect("list")),
        vec![released, at_t0, later]
    );
    assert_eq!(
        ids(store.products_on_sale(page(None, 10), None).await.expect("list")),
        vec![released, at_t0, later],
        "None lists unreleased products too"
    );
    // Paging counts only the listed ones.
    assert_eq!(
        ids(store
            .products_on_sale(page(Some(released.0), 1), Some(at(-1)))
            .await
            .expect("list")),
        Vec::<ProductId>::new()
    );
}

async fn popular_leaves_out_unreleased_products<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 1).await;
    let b = drop_product(&store, 1, Some(&at(60).to_rfc3339()), None).await;
    let c = product(&store, "C", 1_000, 1).await;
    let h = T0.hour();
    add_sales(&store, &[(a.id, h, 1), (b.id, h, 9), (c.id, h, 2)]).await;
    assert_eq!(
        ranking(&store.popular(h, 2, T0).await.expect("popular")),
        vec![(c.id, 2), (a.id, 1)]
    );
    assert_eq!(
        ranking(&store.popular(h, 2, at(60)).await.expect("popular")),
        vec![(b.id, 9), (c.id, 2)]
    );
}

async fn coupon_issue_windows_are_stored_and_end_their_listing<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let windowed = |starts: Option<Timestamp>, ends: Option<Timestamp>| {
        let mut new = new_coupon(DiscountType::Fixed, 1_000, 5, 60);
        new.issue_starts_at = starts;
        new.issue_ends_at = ends;
        new
    };
    let mut tx = store.begin().await.expect("begin");
    let open = coupon::create_coupon(&mut tx, &windowed(None, None), T0)
        .await
        .expect("create");
    let future = coupon::create_coupon(&mut tx, &windowed(Some(at(10)), None), T0)
        .await
        .expect("create");
    let ending = coupon::create_coupon(&mut tx, &windowed(Some(at(-10)), Some(at(10))), T0)
        .await
        .expect("create");
    tx.commit().await.expect("commit");
    assert_eq!(
        (ending.issue_starts_at, ending.issue_ends_at),
        (Some(at(-10)), Some(at(10)))
    );
    assert_eq!(store.coupon(ending.id).await.expect("read"), Some(ending.clone()));
    assert_eq!(store.coupon(future.id).await.expect("read"), Some(future.clone()));
    let ids = |items: Vec<coupon::Coupon>| items.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.coupons_in_stock(page(None, 10), at(9)).await.expect("list")),
        vec![ending.id, future.id, open.id]
    );
    assert_eq!(
        ids(store.coupons_in_stock(page(None, 10), at(10)).await.expect("list")),
        vec![future.id, open.id],
        "the end is exclusive"
    );
    assert_eq!(
        ids(store
            .coupons_in_stock(page(Some(future.id.0), 10), at(10))
            .await
            .expect("list")),
        vec![open.id]
    );
}

/// Sets the product's `max_per_user` inside the transaction.
async fn set_limit<T: Tx>(tx: &mut T, product: ProductId, limit: Option<i64>) {
    let patch = ProductPatch {
        max_per_user: Some(limit),
        ..ProductPatch::default()
    };
    tx.update_product(product, &patch)
        .await
        .expect("patch")
        .expect("product");
}

async fn the_purchase_tally_adds_within_the_limit_and_never_goes_below_zero<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let lee = user(&store, "lee@example.com").await;
    let shoe = product(&store, "Shoe", 1, 10).await.id;
    let hat = product(&store, "Hat", 1, 10).await.id;
    let mut tx = store.begin().await.expect("begin");
    set_limit(&mut tx, shoe, Some(3)).await;
    set_limit(&mut tx, hat, Some(3)).await;
    assert_eq!(tx.purchased_quantity(kim, shoe).await.expect("read"), 0);
    assert!(
        !tx.add_purchase(kim, shoe, 4).await.expect("add"),
        "a first purchase over the limit"
    );
    assert_eq!(
        tx.purchased_quantity(kim, shoe).await.expect("read"),
        0,
        "nothing was written"
    );
    assert!(tx.add_purchase(kim, shoe, 2).await.expect("add"));
    assert!(!tx.add_purchase(kim, shoe, 2).await.expect("add"));
    assert!(
        tx.add_purchase(kim, shoe, 1).await.expect("add"),
        "up to the limit itself"
    );
    assert!(!tx.add_purchase(kim, shoe, 1).await.expect("add"));
    set_limit(&mut tx, shoe, Some(2)).await;
    assert!(
        !tx.add_purchase(kim, shoe, 1).await.expect("add"),
        "a lowered limit refuses"
    );
    set_limit(&mut tx, shoe, None).await;
    assert!(tx.add_purchase(kim, shoe, 500).await.expect("add"), "no limit");
    assert_eq!(tx.purchased_quantity(kim, shoe).await.expect("read"), 503);
    set_limit(&mut tx, shoe, Some(3)).await;
    // Per user and product.
    assert!(tx.add_purchase(lee, shoe, 3).await.expect("add"));
    assert!(tx.add_purchase(kim, hat, 3).await.expect("add"));
    assert!(
        !tx.add_purchase(kim, ProductId(hat.0 + 1_000), 1).await.expect("add"),
        "no product, no purchase"
    );
    tx.remove_purchase(kim, shoe, 500).await.expect("remove");
    assert_eq!(tx.purchased_quantity(kim, shoe).await.expect("read"), 3);
    tx.remove_purchase(kim, shoe, 10).await.expect("remove");
    assert_eq!(
        tx.purchased_quantity(kim, shoe).await.expect("read"),
        0,
        "never below 0"
    );
    tx.remove_purchase(lee, hat, 1).await.expect("no row is no error");
    assert_eq!(tx.purchased_quantity(lee, hat).await.expect("read"), 0);
    assert_eq!(tx.purchased_quantity(lee, shoe).await.expect("read"), 3);
    assert_eq!(tx.purchased_quantity(kim, hat).await.expect("read"), 3);
    tx.commit().await.expect("commit");
}

async fn an_order_for_payment_comes_with_each_products_limit_and_tally<S: Engine>(db: TestDb<S>) {
    use ecommerce_domain::payment::Allowance;
    let store = db.connect().await;
    let kim = user_with_balance(&store, "kim@example.com", 100_000).await;
    let lee = user_with_balance(&store, "lee@example.com", 100_000).await;
    let shoe = drop_product(&store, 10, None, Some(3)).await.id;
    let socks = product(&store, "Socks", 100, 10).await.id;
    let paid = order(&store, kim, &[(shoe, 2)], T0).await.id;
    pay(&store, paid, kim, None, at(1)).await.expect("pay");
    // Lee's purchase is not Kim's.
    let lees = order(&store, lee, &[(shoe, 1)], T0).await.id;
    pay(&store, lees, lee, None, at(1)).await.expect("pay");
    let pending = order(&store, kim, &[(socks, 5), (shoe, 1)], T0).await;

    let (read, allowances) = store
        .order_for_payment(pending.id)
        .await
        .expect("read")
        .expect("the order");
    assert_eq!(read, store.order(pending.id).await.expect("read").expect("the order"));
    let mut allowances = allowances;
    allowances.sort_by_key(|a| a.product_id);
    let mut expected = vec![
        Allowance {
            product_id: shoe,
            max_per_user: Some(3),
            purchased: 2,
        },
        Allowance {
            product_id: socks,
            max_per_user: None,
            purchased: 0,
        },
    ];
    expected.sort_by_key(|a| a.product_id);
    assert_eq!(allowances, expected);
    assert!(allowances.iter().all(|a| a.allows(1)));
    assert!(
        !allowances.iter().all(|a| a.allows(2)),
        "2 more shoes would pass the limit"
    );
    let missing = OrderId(pending.id.0 + 1_000);
    assert!(
        store.order_for_payment(missing).await.expect("read").is_none(),
        "no order"
    );
    // Several at once: each with its own lines and its own owner's tallies.
    let many = store
        .orders_for_payment(&[lees, missing, pending.id, paid])
        .await
        .expect("read");
    assert_eq!(many.len(), 3, "the missing order is absent");
    assert_eq!(many[&pending.id].0, read);
    let shoe_of = |id: OrderId| {
        many[&id]
            .1
            .iter()
            .find(|a| a.product_id == shoe)
            .map(|a| (a.max_per_user, a.purchased))
    };
    assert_eq!(shoe_of(lees), Some((Some(3), 1)), "Lee's own tally");
    assert_eq!(shoe_of(paid), Some((Some(3), 2)));
    assert_eq!(many[&paid].0.lines.len(), 1);
}

async fn payment_and_refund_keep_the_tally_and_the_limit<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user_with_balance(&store, "kim@example.com", 100_000).await;
    let shoe = drop_product(&store, 10, None, Some(3)).await.id;
    let socks = product(&store, "Socks", 100, 10).await.id;
    let first = order(&store, kim, &[(shoe, 2), (socks, 5)], T0).await.id;
    let second = order(&store, kim, &[(shoe, 2)], T0).await.id;
    pay(&store, first, kim, None, at(1)).await.expect("pay");
    let refused = pay(&store, second, kim, None, at(2)).await;
    assert!(
        matches!(refused, Err(Error::PurchaseLimitExceeded(p)) if p == shoe),
        "{refused:?}"
    );
    assert_eq!(stock(&store, shoe).await, 8, "a refused payment takes no stock");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.purchased_quantity(kim, shoe).await.expect("read"), 2);
    assert_eq!(
        tx.purchased_quantity(kim, socks).await.expect("read"),
        5,
        "unlimited products count too"
    );
    tx.rollback().await.expect("rollback");

    refund(&store, first, kim, at(3)).await.expect("refund");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.purchased_quantity(kim, shoe).await.expect("read"), 0);
    assert_eq!(tx.purchased_quantity(kim, socks).await.expect("read"), 0);
    tx.rollback().await.expect("rollback");
    pay(&store, second, kim, None, at(4))
        .await
        .expect("paid after the refund");
    // Order creation sees the tally.
    let mut tx = store.begin().await.expect("begin");
    let over = order::create_order(
        &mut tx,
        own(kim),
        &order::OrderSource::Lines(vec![order::LineRequest {
            product_id: shoe,
            quantity: 2,
        }]),
        at(5),
        900,
    )
    .await;
    assert!(
        matches!(over, Err(Error::PurchaseLimitExceeded(p)) if p == shoe),
        "{over:?}"
    );
}

async fn concurrent_purchases_of_one_user_stop_at_the_limit<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let shoe = drop_product(&store, 10, None, Some(7)).await.id;
    let tasks = (0..30)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.expect("begin");
                let added = tx.add_purchase(kim, shoe, 1).await.expect("add");
                tokio::task::yield_now().await; // hold the row a little longer
                if added {
                    tx.commit().await.expect("commit");
                }
                added
            })
        })
        .collect();
    let added = join_all(tasks).await.into_iter().filter(|&a| a).count();
    assert_eq!(added, 7);
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.purchased_quantity(kim, shoe).await.expect("read"), 7);
}

// ---------------------------------------------------------------------------------------------
// Draws

/// A draw of `quantity` units of `product` whose window runs `at(0)..at(600)`, created at `at(-10)`.
async fn new_draw<S: Store>(store: &S, product: ProductId, quantity: i64, window: i64) -> draw::Draw {
    let (starts, ends) = (at(0).to_rfc3339(), at(600).to_rfc3339());
    let new_draw = NewDraw::parse(
        DrawRequest {
            product_id: product.0,
            quantity,
            entry_starts_at: &starts,
            entry_ends_at: &ends,
            payment_window_seconds: window,
        },
        at(-10),
    )
    .expect("a valid draw");
    let mut tx = store.begin().await.expect("begin");
    let created = draw::create_draw(&mut tx, &new_draw, at(-10)).await;
    match created {
        Ok(created) => {
            tx.commit().await.expect("commit");
            created
        }
        Err(err) => panic!("create draw: {err}"),
    }
}

async fn enter<S: Store>(store: &S, user: UserId, id: DrawId, now: Timestamp) -> Result<draw::DrawEntry, Error> {
    let mut tx = store.begin().await.expect("begin");
    let entry = draw::enter_draw(&mut tx, own(user), id, now).await?;
    tx.commit().await.expect("commit");
    Ok(entry)
}

async fn run_draw<S: Store>(store: &S, id: DrawId, now: Timestamp, seed: u8) -> Option<draw::DrawOutcome> {
    let mut tx = store.begin().await.expect("begin");
    let outcome = draw::run_draw(&mut tx, id, now, &[seed; 32])
        .await
        .expect("run the draw");
    if outcome.is_some() {
        tx.commit().await.expect("commit");
    }
    outcome
}

async fn a_draw_takes_its_units_from_stock_and_reads_back<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 10).await;
    let created = new_draw(&store, a.id, 4, 600).await;
    assert_eq!(stock(&store, a.id).await, 6);
    let read = store.draw(created.id).await.expect("read").expect("stored");
    assert_eq!(read, created);
    assert_eq!((read.entry_count, read.winner_count, read.drawn_at), (0, None, None));
    assert_eq!(read.entry_starts_at, at(0));
    assert_eq!(read.entry_ends_at, at(600));
    assert_eq!(read.payment_window_seconds, 600);

    let mut tx = store.begin().await.expect("begin");
    let short = NewDraw {
        quantity: 7,
        ..new_draw_of(a.id)
    };
    assert!(matches!(
        draw::create_draw(&mut tx, &short, at(-10)).await,
        Err(Error::OutOfStock(_))
    ));
    drop(tx);
    let mut tx = store.begin().await.expect("begin");
    let missing = new_draw_of(ProductId(999_999));
    assert!(matches!(
        draw::create_draw(&mut tx, &missing, at(-10)).await,
        Err(Error::ProductNotFound)
    ));
    drop(tx);
    assert_eq!(stock(&store, a.id).await, 6, "failed creations change nothing");
    assert!(store.draw(DrawId(999_999)).await.expect("read").is_none());
}

fn new_draw_of(product: ProductId) -> NewDraw {
    NewDraw {
        product_id: product,
        quantity: 1,
        entry_starts_at: at(0),
        entry_ends_at: at(600),
        payment_window_seconds: 60,
    }
}

async fn draws_are_listed_newest_first_and_undrawn_only_on_request<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 10).await;
    let first = new_draw(&store, a.id, 1, 60).await.id;
    let second = new_draw(&store, a.id, 1, 60).await.id;
    let third = new_draw(&store, a.id, 1, 60).await.id;
    assert!(run_draw(&store, second, at(600), 1).await.is_some());
    let ids = |draws: Vec<draw::Draw>| draws.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.draws(false, page(None, 10)).await.expect("list")),
        vec![third, second, first]
    );
    assert_eq!(
        ids(store.draws(true, page(None, 10)).await.expect("list")),
        vec![third, first]
    );
    assert_eq!(
        ids(store.draws(false, page(Some(third.0), 1)).await.expect("list")),
        vec![second]
    );
    assert_eq!(store.due_draws(at(599), 10).await.expect("due"), vec![]);
    assert_eq!(store.due_draws(at(600), 10).await.expect("due"), vec![first, third]);
    assert_eq!(store.due_draws(at(600), 1).await.expect("due"), vec![first]);
}

async fn an_entry_is_unique_per_user_and_counted_only_while_the_window_is_open<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let lee = user(&store, "lee@example.com").await;
    let park = user(&store, "park@example.com").await;
    let a = product(&store, "A", 1_000, 10).await;
    let id = new_draw(&store, a.id, 2, 60).await.id;
    assert!(matches!(enter(&store, kim, id, at(-1)).await, Err(Error::DrawNotOpen)));
    let entry = enter(&store, kim, id, at(0)).await.expect("enter at the start");
    assert_eq!(
        (entry.user_id, entry.status, entry.entered_at, entry.order_id),
        (kim, EntryStatus::Entered, at(0), None)
    );
    assert!(matches!(
        enter(&store, kim, id, at(1)).await,
        Err(Error::AlreadyEntered)
    ));
    assert!(
        matches!(enter(&store, kim, id, at(600)).await, Err(Error::AlreadyEntered)),
        "ALREADY_ENTERED first"
    );
    enter(&store, lee, id, Timestamp(at(600).0 - 1))
        .await
        .expect("the last millisecond");
    assert!(matches!(
        enter(&store, park, id, at(600)).await,
        Err(Error::DrawNotOpen)
    ));
    assert!(matches!(
        enter(&store, park, DrawId(999_999), at(1)).await,
        Err(Error::DrawNotFound)
    ));
    let read = store.draw(id).await.expect("read").expect("stored");
    assert_eq!(read.entry_count, 2, "only the entries that were made");
    assert_eq!(store.draw_entry(id, kim).await.expect("read"), Some(entry));
    assert!(store.draw_entry(id, park).await.expect("read").is_none());
    assert_eq!(store.draw_entrants(id).await.expect("read"), vec![kim, lee]);
    // A guard that fails after the insert leaves nothing once the transaction is dropped.
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.insert_draw_entry(id, park, at(700)).await.expect("insert").is_some());
    assert!(!tx.count_draw_entries(id, 1, at(700)).await.expect("count"), "closed");
    drop(tx);
    assert!(store.draw_entry(id, park).await.expect("read").is_none());
}

async fn a_draw_is_claimed_once_and_settles_every_entry<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 7_000, 10).await;
    let id = new_draw(&store, a.id, 3, 120).await.id;
    let mut users = Vec::new();
    for n in 0..5 {
        let u = user(&store, &format!("u{n}@example.com")).await;
        enter(&store, u, id, at(n)).await.expect("enter");
        users.push(u);
    }
    assert!(
        run_draw(&store, id, at(599), 1).await.is_none(),
        "not due before the end"
    );
    let outcome = run_draw(&store, id, at(600), 9).await.expect("drawn");
    assert!(run_draw(&store, id, at(601), 9).await.is_none(), "claimed once");
    assert_eq!(outcome.winners, draw::choose_winners(&users, 3, &[9; 32]));
    let read = store.draw(id).await.expect("read").expect("stored");
    assert_eq!((read.drawn_at, read.winner_count), (Some(at(600)), Some(3)));
    assert_eq!(read.seed.as_deref(), Some(draw::seed_hex(&[9; 32]).as_str()));
    let won = store
        .draw_entries(id, Some(EntryStatus::Won), page(None, 10))
        .await
        .expect("list");
    let lost = store
        .draw_entries(id, Some(EntryStatus::Lost), page(None, 10))
        .await
        .expect("list");
    assert_eq!((won.len(), lost.len()), (3, 2));
    for entry in &won {
        assert!(outcome.winners.contains(&entry.user_id));
        let order = store
            .order(entry.order_id.expect("an order"))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(order.user_id, entry.user_id);
        assert_eq!(order.draw_id, Some(id));
        assert_eq!(order.stored_status, OrderStatus::PendingPayment);
        assert_eq!(
            (order.total_amount, order.lines.len(), order.lines[0].quantity),
            (Krw(7_000), 1, 1)
        );
        assert_eq!((order.created_at, order.expires_at), (at(600), at(720)));
    }
    assert!(lost.iter().all(|e| e.order_id.is_none()));
    assert_eq!(stock(&store, a.id).await, 7, "every unit won: none back");
    // Fewer entries than units: the rest goes back.
    let b = product(&store, "B", 1_000, 10).await;
    let roomy = new_draw(&store, b.id, 4, 120).await.id;
    enter(&store, users[0], roomy, at(1)).await.expect("enter");
    assert_eq!(
        run_draw(&store, roomy, at(600), 2).await.expect("drawn").winners,
        vec![users[0]]
    );
    assert_eq!(stock(&store, b.id).await, 9);
    // Nobody entered: every unit back, no winner.
    let empty = new_draw(&store, b.id, 5, 120).await.id;
    assert!(
        run_draw(&store, empty, at(600), 3)
            .await
            .expect("drawn")
            .winners
            .is_empty()
    );
    assert_eq!(stock(&store, b.id).await, 9);
    assert_eq!(
        store.draw(empty).await.expect("read").expect("stored").winner_count,
        Some(0)
    );
}

async fn a_draw_orders_unit_comes_back_on_cancel_and_on_expiry_but_payment_takes_none<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 3).await;
    let id = new_draw(&store, a.id, 3, 60).await.id;
    let mut users = Vec::new();
    for n in 0..3 {
        let u = user_with_balance(&store, &format!("u{n}@example.com"), 10_000).await;
        enter(&store, u, id, at(1)).await.expect("enter");
        users.push(u);
    }
    run_draw(&store, id, at(600), 4).await.expect("drawn");
    let order_of = |u: UserId| {
        let store = store.clone();
        async move {
            store
                .draw_entry(id, u)
                .await
                .expect("read")
                .and_then(|e| e.order_id)
                .expect("won")
        }
    };
    assert_eq!(stock(&store, a.id).await, 0);
    pay(&store, order_of(users[0]).await, users[0], None, at(610))
        .await
        .expect("pays with no stock left");
    assert_eq!(stock(&store, a.id).await, 0);
    cancel(&store, order_of(users[1]).await, users[1], at(610))
        .await
        .expect("cancel");
    assert_eq!(stock(&store, a.id).await, 1);
    assert_eq!(store.expire_orders(at(660), 10).await.expect("expire"), 1);
    assert_eq!(stock(&store, a.id).await, 2);
    assert_eq!(
        stored_status(&store, order_of(users[2]).await).await,
        OrderStatus::Expired
    );
    refund(&store, order_of(users[0]).await, users[0], at(700))
        .await
        .expect("refund");
    assert_eq!(stock(&store, a.id).await, 3);
}

async fn twenty_thousand_entries_draw_in_one_transaction<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 1_000).await;
    let id = new_draw(&store, a.id, 1_000, 600).await.id;
    store
        .execute(
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < 20000) \
             insert into account (email, password_hash, name, role, created_at) \
             select 'bulk' || i || '@example.com', 'x', 'bulk', 'USER', 0 from n",
        )
        .await;
    store
        .execute(
            "insert into draw_entries (draw_id, user_id, status, entered_at) \
             select 1, id, 'ENTERED', 0 from account where email like 'bulk%'",
        )
        .await;
    store.execute("update draws set entry_count = 20000 where id = 1").await;
    assert_eq!(id, DrawId(1), "the statements above name the first draw");
    let started = std::time::Instant::now();
    let outcome = run_draw(&store, id, at(600), 5).await.expect("drawn");
    eprintln!("drew 1,000 winners among 20,000 entries in {:?}", started.elapsed());
    assert_eq!(outcome.winners.len(), 1_000);
    let won = store
        .draw_entries(id, Some(EntryStatus::Won), page(None, 100))
        .await
        .expect("list");
    assert_eq!(won.len(), 100);
    assert!(won.iter().all(|e| e.order_id.is_some()));
    let read = store.draw(id).await.expect("read").expect("stored");
    assert_eq!((read.winner_count, read.entry_count), (Some(1_000), 20_000));
}

async fn concurrent_entries_of_one_user_make_one_entry<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let kim = user(&store, "kim@example.com").await;
    let a = product(&store, "A", 1_000, 10).await;
    let id = new_draw(&store, a.id, 2, 60).await.id;
    let tasks = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { enter(&store, kim, id, at(5)).await.map(drop).map_err(|e| e.to_string()) })
        })
        .collect();
    let results = join_all(tasks).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert_eq!(store.draw(id).await.expect("read").expect("stored").entry_count, 1);
}

async fn concurrent_draw_runs_draw_once<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 10).await;
    let id = new_draw(&store, a.id, 2, 60).await.id;
    for n in 0..6 {
        let u = user(&store, &format!("u{n}@example.com")).await;
        enter(&store, u, id, at(1)).await.expect("enter");
    }
    let tasks = (0..5u8)
        .map(|seed| {
            let store = store.clone();
            tokio::spawn(async move { Ok::<_, String>(run_draw(&store, id, at(600), seed).await.is_some()) })
        })
        .collect();
    let drawn = join_all(tasks)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    assert_eq!(drawn, 1, "exactly one run draws");
    let won = store
        .draw_entries(id, Some(EntryStatus::Won), page(None, 10))
        .await
        .expect("list");
    assert_eq!(won.len(), 2);
    assert_eq!(stock(&store, a.id).await, 8);
}

async fn a_batch_of_entries_commits_together_and_keeps_one_entry_per_user<S: Engine>(db: TestDb<S>) {
    let store = db.connect().await;
    let a = product(&store, "A", 1_000, 10).await;
    let id = new_draw(&store, a.id, 2, 60).await.id;
    let mut users = Vec::new();
    for n in 0..4 {
        users.push(user(&store, &format!("u{n}@example.com")).await);
    }
    enter(&store, users[0], id, at(1)).await.expect("enter alone");
    // users[0] entered already; users[1] is listed twice.
    let batch = [users[0], users[1], users[2], users[1], users[3]];
    let mut tx = store.begin().await.expect("begin");
    let entries = draw::enter_many(&mut tx, id, &batch, at(2))
        .await
        .expect("enter the batch");
    tx.commit().await.expect("commit");
    let entered: Vec<Option<UserId>> = entries.iter().map(|e| e.as_ref().map(|e| e.user_id)).collect();
    assert_eq!(
        entered,
        vec![None, Some(users[1]), Some(users[2]), None, Some(users[3])]
    );
    assert_eq!(store.draw(id).await.expect("read").expect("stored").entry_count, 4);
    // A batch after the window writes nothing.
    let late = user(&store, "late@example.com").await;
    let mut tx = store.begin().await.expect("begin");
    assert!(matches!(
        draw::enter_many(&mut tx, id, &[late], at(600)).await,
        Err(Error::DrawNotOpen)
    ));
    drop(tx);
    assert!(store.draw_entry(id, late).await.expect("read").is_none());
    assert_eq!(store.draw(id).await.expect("read").expect("stored").entry_count, 4);
    // The read checks come in the contract's order.
    assert!(matches!(
        draw::check_entry(&store, own(users[0]), id, at(700)).await,
        Err(Error::AlreadyEntered)
    ));
    assert!(matches!(
        draw::check_entry(&store, own(late), id, at(700)).await,
        Err(Error::DrawNotOpen)
    ));
    assert!(matches!(
        draw::check_entry(&store, own(late), DrawId(999_999), at(1)).await,
        Err(Error::DrawNotFound)
    ));
    assert!(draw::check_entry(&store, own(late), id, at(3)).await.is_ok());
}
