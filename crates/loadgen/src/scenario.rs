//! The scenarios: a set-up phase through the public API (users, products, coupons, orders), then
//! a closed loop of `concurrency` workers taking numbered tickets until the request budget or the
//! deadline runs out, then the checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use reqwest::Method;
use serde_json::{Value, json};

use crate::checks;
use crate::client::{Api, Body, Reply};
use crate::sql_users;
use crate::stats::{Check, Recorder, ScenarioResult};
use crate::users::{User, UserSource, now_unix};

/// The most a balance may hold (API.md) and the most one charge may add.
const MAX_BALANCE: i64 = 10_000_000;
const MAX_CHARGE: i64 = 1_000_000;
/// Product prices cycle through 1,000..=5,000 KRW.
const MAX_PRICE: i64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Browse,
    Popular,
    Charge,
    Checkout,
    Pay,
    CouponRush,
    DrawEntries,
    ProductDrop,
    Mixed,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Browse,
        Kind::Popular,
        Kind::Charge,
        Kind::Checkout,
        Kind::Pay,
        Kind::CouponRush,
        Kind::DrawEntries,
        Kind::ProductDrop,
        Kind::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Browse => "browse",
            Kind::Popular => "popular",
            Kind::Charge => "charge",
            Kind::Checkout => "checkout",
            Kind::Pay => "pay",
            Kind::CouponRush => "coupon-rush",
            Kind::DrawEntries => "draw-entries",
            Kind::ProductDrop => "product-drop",
            Kind::Mixed => "mixed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Answers that are part of the scenario working as intended; anything else fails a check.
    fn expected(self, op: &str, outcome: &str) -> bool {
        match op {
            "order.create" => outcome == "201",
            "order.create_from_cart" => outcome == "201" || outcome == "400 CART_EMPTY",
            "coupon.issue" => outcome == "201" || outcome == "409 COUPON_SOLD_OUT",
            "draw.enter" => outcome == "201",
            // A drop has more buyers than units: the late ones are told it is sold out.
            "order.pay" if self == Kind::ProductDrop => outcome == "200" || outcome == "409 OUT_OF_STOCK",
            _ => outcome == "200",
        }
    }
}

pub struct RunOptions {
    pub kind: Kind,
    pub label: String,
    pub targets: Vec<String>,
    pub concurrency: usize,
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    /// Hard cap on the measured phase whatever else is asked.
    pub max_seconds: u64,
    pub warmup: u64,
    pub users: usize,
    pub products: usize,
    pub coupon_total: i64,
    pub seed_orders: usize,
    pub admin: Option<(String, String)>,
    pub setup: bool,
    pub setup_concurrency: usize,
    pub user_source: UserSource,
    pub database_url: Option<String>,
    pub out_dir: Option<PathBuf>,
    /// `product-drop`: pay presses per buyer at most (the first and the retries after
    /// `409 OUT_OF_STOCK`).
    pub presses: u32,
    /// `draw-entries`: close the entry window afterwards and time the draw.
    pub draw: bool,
}

/// What the workers share: the prepared data of the scenario.
struct Plan {
    kind: Kind,
    api: Api,
    concurrency: usize,
    tag: String,
    users: Vec<User>,
    products: Vec<i64>,
    /// `pay`: pending orders, (index into `users`, order id).
    orders: Vec<(usize, i64)>,
    coupon_id: i64,
    /// `draw-entries`: the draw everyone enters.
    draw_id: i64,
    /// Units paid per product of this run, from the payment answers.
    sold: BTreeMap<i64, AtomicI64>,
    /// `product-drop`: presses per buyer at most, and how the buyers ended.
    presses: u32,
    buyers_paid: AtomicU64,
    buyers_sold_out: AtomicU64,
}

struct Worker {
    id: usize,
    done: u64,
    rng: u64,
}

impl Worker {
    /// xorshift64*: enough to pick products, and reproducible per worker.
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

impl Plan {
    /// Spreads a worker's steps over the users so many users take part, in a fixed pattern.
    fn user_for(&self, worker: &Worker) -> &User {
        let n = worker.id as u64 + worker.done * self.concurrency as u64;
        &self.users[(n % self.users.len() as u64) as usize]
    }

    fn count_sold(&self, reply: &Reply) {
        let Some(order) = reply.json() else { return };
        for item in order["items"].as_array().into_iter().flatten() {
            if let (Some(product), Some(quantity)) = (item["product_id"].as_i64(), item["quantity"].as_i64())
                && let Some(counter) = self.sold.get(&product)
            {
                counter.fetch_add(quantity, Ordering::Relaxed);
            }
        }
    }

    /// Pays an order; the answer's status (0 when no answer came).
    async fn pay(&self, order_id: i64, token: &str, rec: &mut Recorder) -> u16 {
        let path = format!("/api/v1/orders/{order_id}/payment");
        let sent = self
            .api
            .post(&path, Some(token), &json!({"user_coupon_id": null}))
            .await;
        rec.record("order.pay", &sent);
        match &sent {
            Ok(reply) => {
                if reply.status == 200 {
                    self.count_sold(reply);
                }
                reply.status
            }
            Err(_) => 0,
        }
    }

    async fn order_and_pay(&self, user: &User, body: &Value, op: &'static str, rec: &mut Recorder) {
        let sent = self
            .api
            .post(&format!("/api/v1/users/{}/orders", user.id), Some(&user.token), body)
            .await;
        rec.record(op, &sent);
        if let Ok(reply) = &sent
            && reply.status == 201
            && let Some(order_id) = reply.id()
        {
            self.pay(order_id, &user.token, rec).await;
        }
    }

    async fn step(&self, worker: &mut Worker, ticket: u64, rec: &mut Recorder) {
        match self.kind {
            Kind::Browse => {
                if ticket.is_multiple_of(5) {
                    rec.record("products.list", &self.api.get("/api/v1/products?limit=20", None).await);
                } else {
                    let product = *worker.pick(&self.products);
                    rec.record(
                        "products.get",
                        &self.api.get(&format!("/api/v1/products/{product}"), None).await,
                    );
                }
            }
            Kind::Popular => {
                rec.record(
                    "products.popular",
                    &self.api.get("/api/v1/products/popular?days=3&limit=5", None).await,
                );
            }
            Kind::Charge => {
                let user = self.user_for(worker);
                let path = format!("/api/v1/users/{}/balance/charges", user.id);
                let key = format!("{}-{ticket}", self.tag);
                let body = json!({"amount": 1_000});
                let sent = self
                    .api
                    .send(Method::POST, &path, Some(&user.token), Body::Json(&body), Some(&key))
                    .await;
                rec.record("balance.charge", &sent);
            }
            Kind::Checkout => {
                let user = self.user_for(worker);
                let product = *worker.pick(&self.products);
                let body = json!({"items": [{"product_id": product, "quantity": 1}]});
                self.order_and_pay(user, &body, "order.create", rec).await;
            }
            Kind::Pay => {
                let (user, order_id) = self.orders[ticket as usize];
                self.pay(order_id, &self.users[user].token, rec).await;
            }
            Kind::ProductDrop => {
                // A buyer presses pay; told it is sold out, presses again a few times, as
                // buyers do, then gives up.
                let (user, order_id) = self.orders[ticket as usize];
                let token = &self.users[user].token;
                for _ in 0..self.presses.max(1) {
                    match self.pay(order_id, token, rec).await {
                        200 => {
                            self.buyers_paid.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        409 => {}
                        _ => return,
                    }
                }
                self.buyers_sold_out.fetch_add(1, Ordering::Relaxed);
            }
            Kind::CouponRush => {
                let user = &self.users[ticket as usize];
                let path = format!("/api/v1/users/{}/coupons", user.id);
                let sent = self
                    .api
                    .post(&path, Some(&user.token), &json!({"coupon_id": self.coupon_id}))
                    .await;
                rec.record("coupon.issue", &sent);
            }
            Kind::DrawEntries => {
                let user = &self.users[ticket as usize];
                let path = format!("/api/v1/users/{}/draws/{}/entries", user.id, self.draw_id);
                let sent = self
                    .api
                    .send(Method::POST, &path, Some(&user.token), Body::None, None)
                    .await;
                rec.record("draw.enter", &sent);
            }
            Kind::Mixed => {
                // One user per worker, so a worker's cart is its own.
                let user = &self.users[worker.id % self.users.len()];
                let roll = worker.next() % 100;
                if roll < 40 {
                    rec.record(
                        "products.popular",
                        &self.api.get("/api/v1/products/popular?days=3&limit=5", None).await,
                    );
                } else if roll < 70 {
                    let product = *worker.pick(&self.products);
                    rec.record(
                        "products.get",
                        &self.api.get(&format!("/api/v1/products/{product}"), None).await,
                    );
                } else if roll < 80 {
                    rec.record("products.list", &self.api.get("/api/v1/products?limit=20", None).await);
                } else if roll < 92 {
                    let product = *worker.pick(&self.products);
                    let path = format!("/api/v1/users/{}/cart/items/{product}", user.id);
                    rec.record(
                        "cart.put",
                        &self.api.put(&path, Some(&user.token), &json!({"quantity": 1})).await,
                    );
                } else if roll < 95 {
                    let path = format!("/api/v1/users/{}/cart", user.id);
                    rec.record("cart.get", &self.api.get(&path, Some(&user.token)).await);
                } else {
                    self.order_and_pay(user, &json!({"from_cart": true}), "order.create_from_cart", rec)
                        .await;
                }
            }
        }
    }
}

/// Runs `concurrency` workers over tickets `from..to` until `deadline`.
async fn drive(plan: &Arc<Plan>, from: u64, to: u64, deadline: Instant, seed: u64) -> Recorder {
    let tickets = Arc::new(AtomicU64::new(from));
    let mut handles = Vec::with_capacity(plan.concurrency);
    for id in 0..plan.concurrency {
        let plan = Arc::clone(plan);
        let tickets = Arc::clone(&tickets);
        handles.push(tokio::spawn(async move {
            let mut worker = Worker {
                id,
                done: 0,
                rng: (seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            };
            let mut rec = Recorder::default();
            while Instant::now() < deadline {
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                if ticket >= to {
                    break;
                }
                plan.step(&mut worker, ticket, &mut rec).await;
                worker.done += 1;
            }
            rec
        }));
    }
    let mut total = Recorder::default();
    for handle in handles {
        total.merge(handle.await.expect("worker panicked"));
    }
    total
}

fn bounded<T, F>(items: Vec<T>, concurrency: usize, f: impl Fn(T) -> F) -> impl futures_util::Stream<Item = F::Output>
where
    F: Future,
{
    stream::iter(items).map(f).buffer_unordered(concurrency.max(1))
}

async fn collect_all<S, T>(s: S) -> Result<Vec<T>, String>
where
    S: futures_util::Stream<Item = Result<T, String>>,
{
    let results: Vec<Result<T, String>> = s.collect().await;
    results.into_iter().collect()
}

async fn admin_token(api: &Api, admin: &Option<(String, String)>) -> Result<String, String> {
    let (email, password) = admin
        .as_ref()
        .ok_or("this scenario's set-up needs --admin-email and --admin-password")?;
    api.token(email, password).await.map(|(_, token, _)| token)
}

/// Creates `count` products of this run; returns (id, stock).
async fn create_products(
    api: &Api,
    admin: &str,
    tag: &str,
    count: usize,
    stock: i64,
    concurrency: usize,
) -> Result<Vec<(i64, i64)>, String> {
    let made = bounded((0..count).collect(), concurrency, |j| async move {
        let body =
            json!({"name": format!("loadgen {tag} #{j}"), "price": 1_000 + (j as i64 % 5) * 1_000, "stock": stock});
        let value = api
            .must(
                "POST /api/v1/admin/products",
                api.post("/api/v1/admin/products", Some(admin), &body).await,
                201,
            )
            .await?;
        let id = value["id"].as_i64().ok_or("product without id")?;
        Ok((j, id))
    });
    let mut products = collect_all(made).await?;
    products.sort_unstable();
    Ok(products.into_iter().map(|(_, id)| (id, stock)).collect())
}

/// Tops every user's balance up to `target` (at most the balance limit).
async fn precharge(api: &Api, users: &[User], target: i64, tag: &str, concurrency: usize) -> Result<(), String> {
    let target = target.min(MAX_BALANCE);
    let charged = bounded(users.to_vec(), concurrency, |user| async move {
        let path = format!("/api/v1/users/{}/balance", user.id);
        let value = api
            .must("GET balance", api.get(&path, Some(&user.token)).await, 200)
            .await?;
        let mut balance = value["balance"].as_i64().ok_or("balance without amount")?;
        let mut n = 0;
        while target - balance >= 1_000 {
            let amount = (target - balance).min(MAX_CHARGE);
            let key = format!("{tag}-pre-{}-{n}", user.id);
            let body = json!({"amount": amount});
            let sent = api
                .send(
                    Method::POST,
                    &format!("{path}/charges"),
                    Some(&user.token),
                    Body::Json(&body),
                    Some(&key),
                )
                .await;
            let value = api.must("POST balance charge", sent, 200).await?;
            balance = value["balance"].as_i64().ok_or("charge without balance")?;
            n += 1;
        }
        Ok(())
    });
    collect_all(charged).await.map(drop)
}

/// Creates pending direct orders of one unit each, users and products taken in turn.
async fn create_orders(
    api: &Api,
    users: &[User],
    products: &[i64],
    count: usize,
    concurrency: usize,
) -> Result<Vec<(usize, i64)>, String> {
    let made = bounded((0..count).collect(), concurrency, |n| async move {
        let u = n % users.len();
        let user = &users[u];
        let body = json!({"items": [{"product_id": products[n % products.len()], "quantity": 1}]});
        let value = api
            .must(
                "POST order",
                api.post(&format!("/api/v1/users/{}/orders", user.id), Some(&user.token), &body)
                    .await,
                201,
            )
            .await?;
        Ok((n, (u, value["id"].as_i64().ok_or("order without id")?)))
    });
    let mut orders = collect_all(made).await?;
    orders.sort_unstable();
    Ok(orders.into_iter().map(|(_, o)| o).collect())
}

/// Seeds a few paid orders so the best-seller list has something to rank.
async fn seed_sales(plan: &Plan, count: usize) -> Result<(), String> {
    let mut rec = Recorder::default();
    for n in 0..count {
        let user = &plan.users[n % plan.users.len()];
        let product = plan.products[n % plan.products.len()];
        let body = json!({"items": [{"product_id": product, "quantity": 1 + n % 3}]});
        plan.order_and_pay(user, &body, "order.create", &mut rec).await;
    }
    let failures: Vec<String> = ["order.create", "order.pay"]
        .iter()
        .flat_map(|op| {
            rec.outcomes(op)
                .into_iter()
                .filter(|(o, _)| !o.starts_with('2'))
                .map(move |(o, n)| format!("{op} {o} x{n}"))
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("seeding sales failed: {}", failures.join(", ")))
    }
}

fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}", nanos % (1 << 48))
}

pub async fn run(opts: RunOptions) -> Result<ScenarioResult, String> {
    let kind = opts.kind;
    let api = Api::new(&opts.targets, opts.concurrency.max(opts.setup_concurrency))?;
    let tag = run_tag();
    let setup_started = Instant::now();
    let mut setup: BTreeMap<String, f64> = BTreeMap::new();

    // The request budget decides how much to prepare where steps consume data.
    let finite = matches!(
        kind,
        Kind::Pay | Kind::CouponRush | Kind::DrawEntries | Kind::ProductDrop
    );
    let requests = match (opts.requests, opts.duration) {
        (Some(r), _) => Some(r),
        (None, None) => Some(2_000),
        (None, Some(_)) if finite => {
            return Err(format!(
                "{} needs --requests (it prepares one item per request)",
                kind.name()
            ));
        }
        (None, Some(_)) => None,
    };
    let warmup = if matches!(kind, Kind::CouponRush | Kind::DrawEntries | Kind::ProductDrop) {
        0
    } else {
        opts.warmup
    };
    let steps_planned = requests.map(|r| r + warmup);

    let needs_users = !matches!(kind, Kind::Browse | Kind::Popular) || (kind == Kind::Popular && opts.setup);
    let user_count = match kind {
        Kind::CouponRush | Kind::DrawEntries | Kind::ProductDrop => requests.unwrap_or_default() as usize,
        // One user per connection, so that each cart has one writer.
        Kind::Mixed => opts.concurrency,
        Kind::Popular => opts.users.min(10),
        _ => opts.users,
    };
    // Enough for each user's share of the steps with a margin; the whole limit without a budget.
    let top_up = matches!(
        kind,
        Kind::Checkout | Kind::Pay | Kind::Mixed | Kind::Popular | Kind::ProductDrop
    ) && user_count > 0;
    let target = match steps_planned {
        // One unit of 1,000 KRW each, with a margin.
        _ if kind == Kind::ProductDrop => 2_000,
        _ if kind == Kind::Popular => (opts.seed_orders as i64 * 3 / user_count.max(1) as i64 + 3) * MAX_PRICE,
        Some(steps) if kind != Kind::Mixed => (steps as i64 * 3 / 2 / user_count.max(1) as i64 + 3) * MAX_PRICE,
        // A cart paid in mixed may hold several products: budget half a product per step.
        Some(steps) => (steps as i64 / user_count.max(1) as i64 / 2 + 5) * MAX_PRICE,
        None => MAX_BALANCE,
    }
    .min(MAX_BALANCE);
    let by_sql = opts.user_source.sql.clone();
    let users_started = Instant::now();
    let users = if needs_users && (opts.setup || kind != Kind::Popular) {
        match &by_sql {
            Some(sql) => {
                // A prefix of this run's own: the accounts are new, and no sign-up of an earlier
                // scenario holds their emails.
                let prefix = format!("{}sql{tag}-", opts.user_source.prefix);
                let charges = if top_up {
                    sql_users::charges_for(target)
                } else {
                    Vec::new()
                };
                sql_users::create(&api, sql, &prefix, user_count, &charges).await?
            }
            None => opts.user_source.ensure(&api, user_count).await?,
        }
    } else {
        Vec::new()
    };
    setup.insert("users".into(), users.len() as f64);
    setup.insert("users_seconds".into(), users_started.elapsed().as_secs_f64());
    setup.insert("users_by_sql".into(), if by_sql.is_some() { 1.0 } else { 0.0 });

    let needs_products = matches!(kind, Kind::Browse | Kind::Checkout | Kind::Pay | Kind::Mixed)
        || (kind == Kind::Popular && opts.setup);
    let mut products: Vec<(i64, i64)> = Vec::new();
    let mut coupon_id = 0;
    let mut draw_id = 0;
    if opts.setup && (needs_products || matches!(kind, Kind::CouponRush | Kind::DrawEntries | Kind::ProductDrop)) {
        let admin = admin_token(&api, &opts.admin).await?;
        if needs_products {
            let (count, stock) = match kind {
                Kind::Browse => (opts.products, 1_000),
                Kind::Popular => (opts.products.min(10), 1_000),
                _ => (opts.products, 1_000_000),
            };
            products = create_products(&api, &admin, &tag, count, stock, opts.setup_concurrency * 4).await?;
        }
        if kind == Kind::CouponRush {
            let body = json!({"name": format!("loadgen rush {tag}"), "discount_type": "FIXED", "discount_value": 1_000,
                "total_quantity": opts.coupon_total, "valid_for_seconds": 86_400});
            let value = api
                .must(
                    "POST /api/v1/admin/coupons",
                    api.post("/api/v1/admin/coupons", Some(&admin), &body).await,
                    201,
                )
                .await?;
            coupon_id = value["id"].as_i64().ok_or("coupon without id")?;
        }
        if kind == Kind::DrawEntries {
            // One product stocked with the draw's units, and a draw open for an hour.
            let units = opts.coupon_total.clamp(1, 100_000);
            products = create_products(&api, &admin, &tag, 1, units, 1).await?;
            let body = json!({"product_id": products[0].0, "quantity": units,
                "entry_starts_at": ecommerce_testkit::rfc3339_in(-1_000),
                "entry_ends_at": ecommerce_testkit::rfc3339_in(3_600_000),
                "payment_window_seconds": 600});
            let value = api
                .must(
                    "POST /api/v1/admin/draws",
                    api.post("/api/v1/admin/draws", Some(&admin), &body).await,
                    201,
                )
                .await?;
            draw_id = value["id"].as_i64().ok_or("draw without id")?;
        }
        if kind == Kind::ProductDrop {
            // The drop: one product of U units, 1,000 KRW.
            let units = opts.coupon_total.clamp(1, 1_000_000);
            products = create_products(&api, &admin, &tag, 1, units, 1).await?;
        }
    } else if needs_products {
        return Err(format!("{} needs its set-up (drop --no-setup)", kind.name()));
    }
    setup.insert("products".into(), products.len() as f64);

    // Users written by SQL were written topped up.
    if top_up && !users.is_empty() && by_sql.is_none() {
        let started = Instant::now();
        precharge(&api, &users, target, &tag, opts.setup_concurrency * 4).await?;
        setup.insert("precharge_seconds".into(), started.elapsed().as_secs_f64());
    }

    let product_ids: Vec<i64> = products.iter().map(|(id, _)| *id).collect();
    let orders = if matches!(kind, Kind::Pay | Kind::ProductDrop) {
        // product-drop: one order per buyer (user n holds order n).
        let count = if kind == Kind::ProductDrop {
            users.len()
        } else {
            steps_planned.unwrap_or_default() as usize
        };
        eprintln!("setup: creating {count} pending orders");
        let started = Instant::now();
        let orders = create_orders(&api, &users, &product_ids, count, opts.setup_concurrency * 4).await?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("setup: {count} pending orders in {seconds:.1} s");
        setup.insert("orders_seconds".into(), seconds);
        orders
    } else {
        Vec::new()
    };
    setup.insert("orders".into(), orders.len() as f64);

    let plan = Arc::new(Plan {
        kind,
        api,
        concurrency: opts.concurrency.max(1),
        tag: tag.clone(),
        users,
        products: product_ids.clone(),
        orders,
        coupon_id,
        draw_id,
        sold: product_ids.iter().map(|id| (*id, AtomicI64::new(0))).collect(),
        presses: opts.presses,
        buyers_paid: AtomicU64::new(0),
        buyers_sold_out: AtomicU64::new(0),
    });
    if kind == Kind::Popular && opts.setup {
        seed_sales(&plan, opts.seed_orders).await?;
    }
    setup.insert("seconds".into(), setup_started.elapsed().as_secs_f64());

    let limit = match kind {
        Kind::Pay | Kind::ProductDrop => plan.orders.len() as u64,
        Kind::CouponRush | Kind::DrawEntries => plan.users.len() as u64,
        _ => steps_planned.unwrap_or(u64::MAX),
    };
    let cap = Duration::from_secs(opts.max_seconds);
    // Open every connection before measuring, as behind a load balancer: a harmless read each.
    let opening = (0..plan.concurrency * plan.api.bases().len()).map(|_| plan.api.get("/health", None));
    futures_util::future::join_all(opening).await;
    if warmup > 0 {
        eprintln!("warm-up: {warmup} steps");
        drive(&plan, 0, warmup.min(limit), Instant::now() + cap, 7).await;
    }
    let measured = opts.duration.map_or(cap, |d| d.min(cap));
    eprintln!(
        "run: {} against {} instance(s), {} workers",
        kind.name(),
        plan.api.bases().len(),
        plan.concurrency
    );
    let started_at_unix = now_unix();
    let started = Instant::now();
    let rec = drive(&plan, warmup.min(limit), limit, started + measured, 42).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut extra_checks = Vec::new();

    let (latency_ms, ops) = rec.summary(seconds);
    let requests_done = rec.requests();
    let iterations = match kind {
        Kind::Checkout => ops.get("order.create").map_or(0, |o| o.requests),
        Kind::Mixed => requests_done - ops.get("order.pay").map_or(0, |o| o.requests),
        // Buyers who reached an end (paid, or gave up on sold out).
        Kind::ProductDrop => plan.buyers_paid.load(Ordering::Relaxed) + plan.buyers_sold_out.load(Ordering::Relaxed),
        _ => requests_done,
    };
    if kind == Kind::DrawEntries && opts.draw {
        match &opts.database_url {
            Some(url) => {
                let (timings, draw_checks) = time_draw(&plan, url, &opts.admin).await;
                for (name, value) in timings {
                    setup.insert(name, value);
                }
                extra_checks.extend(draw_checks);
            }
            None => return Err("draw-entries --draw needs --database-url".into()),
        }
    }

    let mut checks = answer_checks(kind, &ops);
    checks.extend(scenario_checks(&plan, &rec, &products, opts.coupon_total, iterations).await);
    checks.extend(extra_checks);
    if let Some(url) = &opts.database_url {
        checks.extend(checks::database(url).await);
        if kind == Kind::CouponRush {
            checks.extend(checks::coupon_count(url, plan.coupon_id, iterations as i64, opts.coupon_total).await);
        }
        if kind == Kind::ProductDrop && !products.is_empty() {
            checks.extend(drop_database_checks(url, products[0].0, products[0].1, plan.orders.len() as i64).await);
        }
    }

    Ok(ScenarioResult {
        label: opts.label,
        scenario: kind.name().to_owned(),
        targets: plan.api.bases().to_vec(),
        instances: plan.api.bases().len(),
        concurrency: plan.concurrency,
        iterations,
        requests: requests_done,
        seconds,
        iterations_per_second: iterations as f64 / seconds.max(1e-9),
        requests_per_second: requests_done as f64 / seconds.max(1e-9),
        latency_ms,
        ops,
        setup,
        checks,
        started_at_unix,
    })
}

/// Every answer is one the scenario expects, and every error is problem+json.
fn answer_checks(kind: Kind, ops: &BTreeMap<String, crate::stats::OpSummary>) -> Vec<Check> {
    let mut unexpected = Vec::new();
    let mut not_problem = 0;
    for (op, summary) in ops {
        not_problem += summary.errors_not_problem_json;
        for (outcome, n) in &summary.outcomes {
            if !kind.expected(op, outcome) {
                unexpected.push(format!("{op}: {outcome} x{n}"));
            }
        }
    }
    vec![
        Check::new(
            "only expected answers",
            unexpected.is_empty(),
            if unexpected.is_empty() {
                "none unexpected".into()
            } else {
                unexpected.join("; ")
            },
        ),
        Check::new(
            "errors are problem+json",
            not_problem == 0,
            format!("{not_problem} error answers without application/problem+json"),
        ),
    ]
}

/// Checks through the API: coupon counts and stock conservation for this run's products.
async fn scenario_checks(
    plan: &Plan,
    rec: &Recorder,
    products: &[(i64, i64)],
    coupon_total: i64,
    iterations: u64,
) -> Vec<Check> {
    let mut checks = Vec::new();
    if plan.kind == Kind::CouponRush {
        let issued = rec.outcomes("coupon.issue").get("201").copied().unwrap_or_default() as i64;
        let expected = (iterations as i64).min(coupon_total);
        checks.push(Check::new(
            "coupons issued (201s) == min(requests, total)",
            issued == expected,
            format!("{issued} issued, expected {expected}"),
        ));
        let remaining = match plan.api.get(&format!("/api/v1/coupons/{}", plan.coupon_id), None).await {
            Ok(reply) => reply.json().and_then(|v| v["remaining_quantity"].as_i64()),
            Err(_) => None,
        };
        checks.push(Check::new(
            "coupon remaining_quantity == total - issued",
            remaining == Some(coupon_total - issued),
            format!("remaining {remaining:?}, expected {}", coupon_total - issued),
        ));
    }
    if plan.kind == Kind::DrawEntries {
        let entered = rec.outcomes("draw.enter").get("201").copied().unwrap_or_default() as i64;
        let counted = match plan.api.get(&format!("/api/v1/draws/{}", plan.draw_id), None).await {
            Ok(reply) => reply.json().and_then(|v| v["entry_count"].as_i64()),
            Err(_) => None,
        };
        checks.push(Check::new(
            "draw entry_count == entries answered 201 == users",
            counted == Some(entered) && entered == iterations as i64,
            format!("entry_count {counted:?}, {entered} entered, {iterations} users"),
        ));
    }
    if plan.kind == Kind::ProductDrop && !products.is_empty() {
        let units = products[0].1;
        let buyers = plan.orders.len() as i64;
        let paid = plan.buyers_paid.load(Ordering::Relaxed) as i64;
        let sold_out = plan.buyers_sold_out.load(Ordering::Relaxed) as i64;
        let expected = units.min(buyers);
        checks.push(Check::new(
            "buyers paid (200) == min(units, buyers), the others ended 409 OUT_OF_STOCK",
            paid == expected && sold_out == buyers - expected,
            format!("{paid} paid, {sold_out} sold out, {buyers} buyers, {units} units"),
        ));
    }
    if matches!(
        plan.kind,
        Kind::Checkout | Kind::Pay | Kind::Mixed | Kind::Popular | Kind::ProductDrop
    ) && !products.is_empty()
    {
        let mut wrong = Vec::new();
        let mut sold_total = 0;
        for (id, initial) in products {
            let sold = plan.sold[id].load(Ordering::Relaxed);
            sold_total += sold;
            let stock = match plan.api.get(&format!("/api/v1/products/{id}"), None).await {
                Ok(reply) => reply.json().and_then(|v| v["stock"].as_i64()),
                Err(_) => None,
            };
            if stock != Some(initial - sold) {
                wrong.push(format!("product {id}: stock {stock:?}, stocked {initial}, paid {sold}"));
            }
        }
        checks.push(Check::new(
            "stock left == stocked - paid units (this run's products)",
            wrong.is_empty(),
            if wrong.is_empty() {
                format!("{} products, {sold_total} units paid", products.len())
            } else {
                wrong.join("; ")
            },
        ));
    }
    checks
}

/// A drop in the database: exactly min(units, buyers) of its orders paid, the rest still
/// pending, and the product's stock is what is left.
async fn drop_database_checks(url: &str, product: i64, units: i64, buyers: i64) -> Vec<Check> {
    let db = match ecommerce_testkit::invariants::Db::connect(url).await {
        Ok(db) => db,
        Err(e) => return vec![Check::new("drop in the database", false, e)],
    };
    let paid = db
        .scalar(
            "select count(*) from purchase_order o where o.status = 'PAID' \
             and exists (select 1 from order_line l where l.order_id = o.id and l.product_id = $1)",
            &[product],
        )
        .await;
    let stock = db.scalar("select stock from product where id = $1", &[product]).await;
    db.close().await;
    let expected = units.min(buyers);
    vec![
        Check::new(
            "paid orders of the drop (DB) == min(units, buyers)",
            paid.as_ref().is_ok_and(|n| *n == expected),
            format!("{paid:?} paid, expected {expected}"),
        ),
        Check::new(
            "drop product stock (DB) == units - paid",
            stock.as_ref().is_ok_and(|n| *n == units - expected),
            format!("stock {stock:?}, expected {}", units - expected),
        ),
    ]
}

/// Closes the draw's entry window in the database and waits for an instance's draw job to draw
/// it. The draw's `drawn_at` is the instant its round began (before it looked for due draws), so
/// "seen DRAWN − drawn_at" bounds the draw itself from above (plus one poll, 5 ms);
/// "seen DRAWN − window closed" adds the wait for the job's next round.
async fn time_draw(plan: &Plan, url: &str, admin: &Option<(String, String)>) -> (Vec<(String, f64)>, Vec<Check>) {
    let mut timings = Vec::new();
    let fail = |detail: String| vec![Check::new("draw drawn after its window closed", false, detail)];
    let db = match ecommerce_testkit::invariants::Db::connect_writable(url).await {
        Ok(db) => db,
        Err(e) => return (timings, fail(e)),
    };
    let token = admin_token(&plan.api, admin).await.ok();
    let closed_at = now_millis();
    if let Err(e) = db
        .scalar(
            "update draws set entry_ends_at = $1 where id = $2 returning id",
            &[closed_at, plan.draw_id],
        )
        .await
    {
        db.close().await;
        return (timings, fail(e));
    }
    eprintln!("draw: window closed, waiting for the draw job");
    let path = format!("/api/v1/draws/{}", plan.draw_id);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut drawn: Option<Value> = None;
    let mut seen_at = 0;
    while Instant::now() < deadline {
        if let Ok(reply) = plan.api.get(&path, token.as_deref()).await
            && let Some(value) = reply.json()
            && value["status"] == "DRAWN"
        {
            seen_at = now_millis();
            drawn = Some(value);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(draw) = drawn else {
        db.close().await;
        return (timings, fail("not DRAWN within 120 s".into()));
    };
    // Milliseconds since the epoch in the database, the answer's RFC 3339 to the millisecond.
    let drawn_at = db
        .scalar("select drawn_at from draws where id = $1", &[plan.draw_id])
        .await
        .ok();
    let entries = draw["entry_count"].as_i64().unwrap_or_default();
    let winners = draw["winner_count"].as_i64();
    let units = draw["quantity"].as_i64().unwrap_or_default();
    if let Some(drawn_at) = drawn_at {
        timings.push(("draw_seconds".to_owned(), (seen_at - drawn_at) as f64 / 1_000.0));
        eprintln!(
            "draw: {entries} entries, {winners:?} winners, drawn in at most {} ms (job round start to DRAWN seen), {} ms after the window closed",
            seen_at - drawn_at,
            seen_at - closed_at
        );
    }
    timings.push(("draw_wait_seconds".to_owned(), (seen_at - closed_at) as f64 / 1_000.0));
    timings.push(("draw_entries".to_owned(), entries as f64));
    let won = db
        .scalar(
            "select count(*) from draw_entries where draw_id = $1 and status = 'WON'",
            &[plan.draw_id],
        )
        .await;
    db.close().await;
    let expected = units.min(entries);
    let checks = vec![Check::new(
        "draw: winner_count == WON entries (DB) == min(units, entries)",
        winners == Some(expected) && won.as_ref().is_ok_and(|n| *n == expected),
        format!("winner_count {winners:?}, WON {won:?}, expected {expected}"),
    )];
    (timings, checks)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
