//! Typed helpers for every route of the contract, as methods of [`TestApp`]. Naming: a helper
//! named after the route answers the [`TestResponse`]; `*_ok` asserts the success status and
//! answers the body; `new_*` answers the new id; `*_on` sends to one instance.

use serde_json::{Value, json};

use crate::app::{Method, TestApp, TestUser, with_token};
use crate::json::{id_of, int, lines_body, unique_key};
use crate::response::{Fetch, TestResponse};

impl TestApp {
    // ----- operations ----------------------------------------------------------------------

    /// `GET /health`.
    pub async fn health(&self) -> TestResponse {
        self.get("/health", None).await
    }

    /// `GET /api-docs/openapi.json`; panics unless 200.
    pub async fn openapi(&self) -> Value {
        self.get("/api-docs/openapi.json", None).await.json(200)
    }

    // ----- catalog -------------------------------------------------------------------------

    /// `POST /api/v1/admin/products` as the admin with any body.
    pub async fn create_product_with(&self, body: &Value) -> TestResponse {
        let token = self.admin_token().await;
        self.post("/api/v1/admin/products", Some(&token), body).await
    }

    /// Creates a product as the admin; panics unless 201. Returns the product.
    pub async fn create_product(&self, name: &str, price: i64, stock: i64) -> Value {
        let body = json!({"name": name, "price": price, "stock": stock});
        self.create_product_with(&body).await.json(201)
    }

    /// Creates a product as the admin; panics unless 201. Returns its id.
    pub async fn new_product(&self, name: &str, price: i64, stock: i64) -> i64 {
        id_of(&self.create_product(name, price, stock).await)
    }

    /// `count` products priced 1,000 KRW with 10,000 in stock, named `P1`…; their ids, ascending.
    pub async fn new_products(&self, count: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(count);
        for n in 1..=count {
            ids.push(self.new_product(&format!("P{n}"), 1_000, 10_000).await);
        }
        ids
    }

    /// `PATCH /api/v1/admin/products/{id}` as the admin.
    pub async fn patch_product(&self, product_id: i64, body: &Value) -> TestResponse {
        let token = self.admin_token().await;
        let path = format!("/api/v1/admin/products/{product_id}");
        self.patch(&path, Some(&token), body).await
    }

    /// Stops the sale of a product; panics unless 200.
    pub async fn stop_product(&self, product_id: i64) {
        self.patch_product(product_id, &json!({"status": "STOPPED"}))
            .await
            .expect_status(200);
    }

    /// `POST /api/v1/admin/products/{id}/restock` as the admin.
    pub async fn restock(&self, product_id: i64, quantity: i64) -> TestResponse {
        let token = self.admin_token().await;
        let path = format!("/api/v1/admin/products/{product_id}/restock");
        self.post(&path, Some(&token), &json!({"quantity": quantity})).await
    }

    /// Creates a product of a limited drop as the admin: `sale_starts_at` (RFC 3339) and
    /// `max_per_user`, each optional; panics unless 201. Returns its id.
    pub async fn new_drop_product(&self, stock: i64, sale_starts_at: Option<&str>, max_per_user: Option<i64>) -> i64 {
        let body = json!({"name": "Limited sneaker", "price": 1_000, "stock": stock,
            "sale_starts_at": sale_starts_at, "max_per_user": max_per_user});
        id_of(self.create_product_with(&body).await.expect_status(201))
    }

    /// `GET /api/v1/products/{id}` with the given token (or none).
    pub async fn product_as(&self, product_id: i64, token: Option<&str>) -> TestResponse {
        self.get(&format!("/api/v1/products/{product_id}"), token).await
    }

    /// `GET /api/v1/products/{id}` without a token.
    pub async fn product(&self, product_id: i64) -> TestResponse {
        self.get(&format!("/api/v1/products/{product_id}"), None).await
    }

    /// The product's stock; panics unless 200.
    pub async fn stock_of(&self, product_id: i64) -> i64 {
        int(self.product(product_id).await.expect_status(200), "stock")
    }

    /// `GET /api/v1/products{query}` without a token; `query` is `""` or `"?limit=…"`.
    pub async fn list_products(&self, query: &str) -> TestResponse {
        self.get(&format!("/api/v1/products{query}"), None).await
    }

    /// `GET /api/v1/products/popular{query}` on instance `index`, without a token.
    pub async fn popular_on(&self, index: usize, query: &str) -> TestResponse {
        self.request_on(index, Method::GET, &format!("/api/v1/products/popular{query}"))
            .fetch()
            .await
    }

    // ----- balance -------------------------------------------------------------------------

    /// `POST /api/v1/users/{user.id}/balance/charges {"amount"}` with `Idempotency-Key: key`.
    pub async fn charge(&self, user: &TestUser, amount: i64, key: &str) -> TestResponse {
        self.charge_on(self.pick_instance(), user, amount, key).await
    }

    /// [`TestApp::charge`] sent to instance `index`.
    pub async fn charge_on(&self, index: usize, user: &TestUser, amount: i64, key: &str) -> TestResponse {
        let path = format!("/api/v1/users/{}/balance/charges", user.id);
        self.request_on(index, Method::POST, &path)
            .bearer_auth(&user.token)
            .header("Idempotency-Key", key)
            .json(&json!({"amount": amount}))
            .fetch()
            .await
    }

    /// A charge with a raw JSON body and an optional `Idempotency-Key`.
    pub async fn charge_raw(&self, user: &TestUser, raw: &str, key: Option<&str>) -> TestResponse {
        let path = format!("/api/v1/users/{}/balance/charges", user.id);
        let mut request = self
            .request(Method::POST, &path)
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(raw.to_owned());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.fetch().await
    }

    /// Charges `amount` (a multiple of 1,000) in steps the charge limits allow, fresh keys each.
    pub async fn fund(&self, user: &TestUser, amount: i64) {
        assert!(amount % 1000 == 0, "fund in multiples of 1,000 KRW");
        let mut left = amount;
        while left > 0 {
            let step = left.min(1_000_000);
            self.charge(user, step, &unique_key()).await.expect_status(200);
            left -= step;
        }
    }

    /// Charges every user `amount` KRW (1,000..=1,000,000), 16 at a time.
    pub async fn fund_all(&self, users: &[TestUser], amount: i64) {
        use futures_util::stream::{self, StreamExt};
        stream::iter(users)
            .map(|user| async move {
                self.charge(user, amount, &unique_key()).await.expect_status(200);
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }

    /// A new user with 1,000,000 KRW.
    pub async fn buyer(&self) -> TestUser {
        let user = self.create_user().await;
        self.fund(&user, 1_000_000).await;
        user
    }

    /// The user's balance; panics unless 200.
    pub async fn balance(&self, user: &TestUser) -> i64 {
        let path = format!("/api/v1/users/{}/balance", user.id);
        let response = self.get(&path, Some(&user.token)).await;
        let body = response.expect_status(200);
        assert_eq!(body["user_id"], json!(user.id), "balance of the wrong user: {body}");
        body["balance"].as_i64().expect("balance is an integer")
    }

    /// `GET /api/v1/users/{user.id}/balance/history{query}` as the user.
    pub async fn balance_history(&self, user: &TestUser, query: &str) -> TestResponse {
        let path = format!("/api/v1/users/{}/balance/history{query}", user.id);
        self.get(&path, Some(&user.token)).await
    }

    /// Every balance history line of the user, newest first.
    pub async fn history(&self, user: &TestUser) -> Vec<Value> {
        let path = format!("/api/v1/users/{}/balance/history", user.id);
        self.all_pages(&path, user.bearer(), 100).await
    }

    // ----- cart ----------------------------------------------------------------------------

    /// The user's cart; panics unless 200.
    pub async fn cart(&self, user: &TestUser) -> Value {
        self.get(&cart_path(user), user.bearer()).await.json(200)
    }

    /// `PUT /api/v1/users/{user.id}/cart/items/{product_id} {"quantity"}`.
    pub async fn put_item(&self, user: &TestUser, product_id: i64, quantity: i64) -> TestResponse {
        let body = json!({"quantity": quantity});
        self.put(&cart_item_path(user, product_id), user.bearer(), &body).await
    }

    /// `DELETE /api/v1/users/{user.id}/cart/items/{product_id}`.
    pub async fn remove_item(&self, user: &TestUser, product_id: i64) -> TestResponse {
        self.delete(&cart_item_path(user, product_id), user.bearer()).await
    }

    /// `DELETE /api/v1/users/{user.id}/cart`.
    pub async fn clear_cart(&self, user: &TestUser) -> TestResponse {
        self.delete(&cart_path(user), user.bearer()).await
    }

    // ----- coupons -------------------------------------------------------------------------

    /// `POST /api/v1/admin/coupons` as the admin.
    pub async fn create_coupon(&self, body: &Value) -> TestResponse {
        let token = self.admin_token().await;
        self.post("/api/v1/admin/coupons", Some(&token), body).await
    }

    /// Creates a coupon as the admin; panics unless 201. Returns its id.
    pub async fn new_coupon(&self, kind: &str, value: i64, quantity: i64, valid_for_seconds: i64) -> i64 {
        let body = coupon_body(kind, value, quantity, valid_for_seconds);
        id_of(self.create_coupon(&body).await.expect_status(201))
    }

    /// `GET /api/v1/coupons/{coupon_id}` without a token.
    pub async fn coupon(&self, coupon_id: i64) -> TestResponse {
        self.get(&format!("/api/v1/coupons/{coupon_id}"), None).await
    }

    /// `GET /api/v1/coupons{query}` without a token.
    pub async fn list_coupons(&self, query: &str) -> TestResponse {
        self.get(&format!("/api/v1/coupons{query}"), None).await
    }

    /// `POST /api/v1/users/{user.id}/coupons {"coupon_id"}`.
    pub async fn issue(&self, user: &TestUser, coupon_id: i64) -> TestResponse {
        let path = format!("/api/v1/users/{}/coupons", user.id);
        self.post(&path, user.bearer(), &json!({ "coupon_id": coupon_id }))
            .await
    }

    /// Issues the coupon to the user; panics unless 201. Returns the user coupon.
    pub async fn issue_ok(&self, user: &TestUser, coupon_id: i64) -> Value {
        self.issue(user, coupon_id).await.json(201)
    }

    /// `GET /api/v1/users/{user.id}/coupons{query}`.
    pub async fn user_coupons(&self, user: &TestUser, query: &str) -> TestResponse {
        let path = format!("/api/v1/users/{}/coupons{query}", user.id);
        self.get(&path, user.bearer()).await
    }

    /// Every coupon of the user, newest first.
    pub async fn all_user_coupons(&self, user: &TestUser) -> Vec<Value> {
        let path = format!("/api/v1/users/{}/coupons", user.id);
        self.all_pages(&path, user.bearer(), 100).await
    }

    /// One of the user's coupons, found in the user's list.
    pub async fn user_coupon(&self, user: &TestUser, user_coupon_id: i64) -> Value {
        self.all_user_coupons(user)
            .await
            .into_iter()
            .find(|coupon| id_of(coupon) == user_coupon_id)
            .unwrap_or_else(|| panic!("user coupon {user_coupon_id} is not in the user's list"))
    }

    // ----- orders --------------------------------------------------------------------------

    /// `POST /api/v1/users/{user.id}/orders` with any body.
    pub async fn create_order(&self, user: &TestUser, body: &Value) -> TestResponse {
        self.create_order_on(self.pick_instance(), user, body).await
    }

    /// [`TestApp::create_order`] sent to instance `index`.
    pub async fn create_order_on(&self, index: usize, user: &TestUser, body: &Value) -> TestResponse {
        self.request_on(index, Method::POST, &orders_path(user))
            .bearer_auth(&user.token)
            .json(body)
            .fetch()
            .await
    }

    /// A direct order of `(product_id, quantity)` lines; panics unless 201. Returns the order.
    pub async fn place_order(&self, user: &TestUser, lines: &[(i64, i64)]) -> Value {
        self.create_order(user, &lines_body(lines)).await.json(201)
    }

    /// [`TestApp::place_order`] sent to instance `index`.
    pub async fn place_order_on(&self, index: usize, user: &TestUser, lines: &[(i64, i64)]) -> Value {
        self.create_order_on(index, user, &lines_body(lines)).await.json(201)
    }

    /// [`TestApp::place_order`], answering the order id.
    pub async fn new_order(&self, user: &TestUser, lines: &[(i64, i64)]) -> i64 {
        id_of(&self.place_order(user, lines).await)
    }

    /// `GET /api/v1/users/{user.id}/orders{query}`.
    pub async fn orders(&self, user: &TestUser, query: &str) -> TestResponse {
        self.get(&format!("{}{query}", orders_path(user)), user.bearer()).await
    }

    /// `GET /api/v1/orders/{order_id}` as `user`.
    pub async fn order(&self, user: &TestUser, order_id: i64) -> TestResponse {
        self.get(&format!("/api/v1/orders/{order_id}"), user.bearer()).await
    }

    /// The order's status as `user` sees it; panics unless 200.
    pub async fn order_status(&self, user: &TestUser, order_id: i64) -> String {
        let response = self.order(user, order_id).await;
        response.expect_status(200)["status"]
            .as_str()
            .expect("a status string")
            .to_owned()
    }

    /// `POST /api/v1/orders/{order_id}/payment {"user_coupon_id": coupon}`.
    pub async fn pay(&self, user: &TestUser, order_id: i64, coupon: Option<i64>) -> TestResponse {
        self.pay_on(self.pick_instance(), user, order_id, coupon).await
    }

    /// [`TestApp::pay`] sent to instance `index`.
    pub async fn pay_on(&self, index: usize, user: &TestUser, order_id: i64, coupon: Option<i64>) -> TestResponse {
        self.request_on(index, Method::POST, &format!("/api/v1/orders/{order_id}/payment"))
            .bearer_auth(&user.token)
            .json(&json!({ "user_coupon_id": coupon }))
            .fetch()
            .await
    }

    /// Pays; panics unless 200 `PAID`. Returns the paid order.
    pub async fn pay_ok(&self, user: &TestUser, order_id: i64, coupon: Option<i64>) -> Value {
        let order = self.pay(user, order_id, coupon).await.json(200);
        assert_eq!(order["status"], json!("PAID"), "paid order: {order}");
        order
    }

    /// A payment with an `Idempotency-Key` and any body.
    pub async fn pay_with_key(&self, user: &TestUser, order_id: i64, key: &str, body: &Value) -> TestResponse {
        self.request(Method::POST, &format!("/api/v1/orders/{order_id}/payment"))
            .bearer_auth(&user.token)
            .header("Idempotency-Key", key)
            .json(body)
            .fetch()
            .await
    }

    /// Orders `(product_id, quantity)` lines and pays with no body at all (no coupon); panics
    /// unless both succeed. Returns the order id.
    pub async fn buy(&self, user: &TestUser, lines: &[(i64, i64)]) -> i64 {
        let order_id = self.new_order(user, lines).await;
        let paid = self
            .post_empty(&format!("/api/v1/orders/{order_id}/payment"), user.bearer())
            .await;
        assert_eq!(paid.expect_status(200)["status"], json!("PAID"));
        order_id
    }

    /// `POST /api/v1/orders/{order_id}/cancel`.
    pub async fn cancel(&self, user: &TestUser, order_id: i64) -> TestResponse {
        self.post_empty(&format!("/api/v1/orders/{order_id}/cancel"), user.bearer())
            .await
    }

    /// `POST /api/v1/orders/{order_id}/refund`.
    pub async fn refund(&self, user: &TestUser, order_id: i64) -> TestResponse {
        self.refund_on(self.pick_instance(), user, order_id).await
    }

    /// [`TestApp::refund`] sent to instance `index`.
    pub async fn refund_on(&self, index: usize, user: &TestUser, order_id: i64) -> TestResponse {
        let path = format!("/api/v1/orders/{order_id}/refund");
        with_token(self.request_on(index, Method::POST, &path), user.bearer())
            .fetch()
            .await
    }

    /// Refunds; panics unless 200 `REFUNDED`. Returns the refunded order.
    pub async fn refund_ok(&self, user: &TestUser, order_id: i64) -> Value {
        let order = self.refund(user, order_id).await.json(200);
        assert_eq!(order["status"], json!("REFUNDED"), "refunded order: {order}");
        order
    }

    // ----- admin reads (the console) -------------------------------------------------------

    /// `GET /api/v1/admin/{route}` (`route` with its query, e.g. `"orders?status=PAID"`) with
    /// `token` (none, a customer's or an admin's).
    pub async fn admin_read_as(&self, token: Option<&str>, route: &str) -> TestResponse {
        self.get(&format!("/api/v1/admin/{route}"), token).await
    }

    /// `GET /api/v1/admin/{route}` as the admin.
    pub async fn admin_read(&self, route: &str) -> TestResponse {
        let token = self.admin_token().await;
        self.admin_read_as(Some(&token), route).await
    }

    /// `GET /api/v1/admin/products{query}` as the admin; panics unless 200. Returns the page.
    pub async fn admin_products(&self, query: &str) -> Value {
        self.admin_read(&format!("products{query}")).await.json(200)
    }

    /// `GET /api/v1/admin/coupons{query}` as the admin; panics unless 200. Returns the page.
    pub async fn admin_coupons(&self, query: &str) -> Value {
        self.admin_read(&format!("coupons{query}")).await.json(200)
    }

    /// `GET /api/v1/admin/orders{query}` as the admin; panics unless 200. Returns the page.
    pub async fn admin_orders(&self, query: &str) -> Value {
        self.admin_read(&format!("orders{query}")).await.json(200)
    }

    /// `GET /api/v1/admin/users{query}` as the admin; panics unless 200. Returns the page.
    pub async fn admin_users(&self, query: &str) -> Value {
        self.admin_read(&format!("users{query}")).await.json(200)
    }

    /// `GET /api/v1/admin/users/{user_id}` as the admin.
    pub async fn admin_user(&self, user_id: i64) -> TestResponse {
        self.admin_read(&format!("users/{user_id}")).await
    }

    /// `GET /api/v1/admin/live` as the admin on instance `index`; panics unless 200.
    pub async fn admin_live_on(&self, index: usize) -> Value {
        let token = self.admin_token().await;
        self.request_on(index, Method::GET, "/api/v1/admin/live")
            .bearer_auth(token)
            .fetch()
            .await
            .json(200)
    }

    /// `GET /api/v1/admin/sales/hourly{query}` as the admin; panics unless 200.
    pub async fn admin_sales_hourly(&self, query: &str) -> Value {
        self.admin_read(&format!("sales/hourly{query}")).await.json(200)
    }

    // ----- draws ---------------------------------------------------------------------------

    /// `POST /api/v1/admin/draws` as the admin with any body.
    pub async fn create_draw_with(&self, body: &Value) -> TestResponse {
        let token = self.admin_token().await;
        self.post("/api/v1/admin/draws", Some(&token), body).await
    }

    /// Creates a draw of `quantity` units of `product_id` whose window runs from `starts_in`
    /// to `ends_in` milliseconds from now (negative: in the past), with a payment window of
    /// `payment_window_seconds`; panics unless 201. Returns the draw.
    pub async fn create_draw(
        &self,
        product_id: i64,
        quantity: i64,
        starts_in_ms: i64,
        ends_in_ms: i64,
        payment_window_seconds: i64,
    ) -> Value {
        let body = draw_body(product_id, quantity, starts_in_ms, ends_in_ms, payment_window_seconds);
        self.create_draw_with(&body).await.json(201)
    }

    /// `GET /api/v1/draws/{id}` without a token.
    pub async fn draw(&self, draw_id: i64) -> TestResponse {
        self.get(&format!("/api/v1/draws/{draw_id}"), None).await
    }

    /// The draw; panics unless 200.
    pub async fn draw_ok(&self, draw_id: i64) -> Value {
        self.draw(draw_id).await.json(200)
    }

    /// `GET /api/v1/draws{query}` without a token.
    pub async fn list_draws(&self, query: &str) -> TestResponse {
        self.get(&format!("/api/v1/draws{query}"), None).await
    }

    /// `POST /api/v1/users/{user.id}/draws/{draw_id}/entries` (no body) as the user.
    pub async fn enter_draw(&self, user: &TestUser, draw_id: i64) -> TestResponse {
        self.enter_draw_on(self.pick_instance(), user, draw_id).await
    }

    /// [`TestApp::enter_draw`] sent to instance `index`.
    pub async fn enter_draw_on(&self, index: usize, user: &TestUser, draw_id: i64) -> TestResponse {
        let path = format!("/api/v1/users/{}/draws/{draw_id}/entries", user.id);
        self.request_on(index, Method::POST, &path)
            .bearer_auth(&user.token)
            .fetch()
            .await
    }

    /// `GET /api/v1/users/{user.id}/draws/{draw_id}/entry` as the user.
    pub async fn draw_entry(&self, user: &TestUser, draw_id: i64) -> TestResponse {
        let path = format!("/api/v1/users/{}/draws/{draw_id}/entry", user.id);
        self.get(&path, user.bearer()).await
    }

    /// `GET /api/v1/admin/draws/{draw_id}/entries{query}` as the admin.
    pub async fn admin_draw_entries(&self, draw_id: i64, query: &str) -> TestResponse {
        let token = self.admin_token().await;
        self.get(&format!("/api/v1/admin/draws/{draw_id}/entries{query}"), Some(&token))
            .await
    }
}

pub fn cart_path(user: &TestUser) -> String {
    format!("/api/v1/users/{}/cart", user.id)
}

pub fn cart_item_path(user: &TestUser, product_id: i64) -> String {
    format!("/api/v1/users/{}/cart/items/{product_id}", user.id)
}

pub fn orders_path(user: &TestUser) -> String {
    format!("/api/v1/users/{}/orders", user.id)
}

/// A coupon body named after its kind and value.
pub fn coupon_body(kind: &str, value: i64, quantity: i64, valid_for_seconds: i64) -> Value {
    json!({
        "name": format!("{kind} {value}"),
        "discount_type": kind,
        "discount_value": value,
        "total_quantity": quantity,
        "valid_for_seconds": valid_for_seconds,
    })
}

/// An RFC 3339 UTC instant `offset_ms` milliseconds from now.
pub fn rfc3339_in(offset_ms: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(offset_ms);
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("format an instant")
}

/// A draw body whose window runs from `starts_in_ms` to `ends_in_ms` from now.
pub fn draw_body(
    product_id: i64,
    quantity: i64,
    starts_in_ms: i64,
    ends_in_ms: i64,
    payment_window_seconds: i64,
) -> Value {
    json!({
        "product_id": product_id,
        "quantity": quantity,
        "entry_starts_at": rfc3339_in(starts_in_ms),
        "entry_ends_at": rfc3339_in(ends_in_ms),
        "payment_window_seconds": payment_window_seconds,
    })
}
