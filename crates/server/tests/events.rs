//! Black-box tests of the events for the data platform (`shared/API.md`, "Events for the data
//! platform"; `shared/DESIGN.md`, decisions 4 and 6): every payment and refund is recorded in its
//! transaction and delivered at least once, in commit order per order, to the JSON-lines file of
//! the relaying instance or to NATS JetStream; a broker outage or a crashed instance delays events
//! but loses none.
//!
//! Each NATS test starts its own `nats-server` on a free port with its own store directory and
//! kills it on drop; the machine's shared broker is never touched. Events on the stream are read
//! back with a JetStream pull consumer from the first message, de-duplicated by event id.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use ecommerce::jobs::Sink;
use ecommerce_testkit::*;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

mod steps;

const NATS_SERVER: &str = "/usr/sbin/nats-server";
const STREAM: &str = "ECOMMERCE_ORDERS";
/// Idle poll period of the relays under test: short, so that tests do not wait for it.
const RELAY_INTERVAL_MS: u64 = 50;
/// Longest wait for the outbox to empty (covers a 10 s lease expiry and the relay's back-off).
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// Longest wait for a broker to accept connections.
const BROKER_START_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// A private NATS server per test
// ---------------------------------------------------------------------------------------------

/// A `nats-server -js` of one test, on a free port with its own store directory. It can be
/// stopped and started again on the same port and store; it is killed on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("ecommerce-nats-")
            .tempdir()
            .expect("create a temporary directory for nats-server");
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            dir,
        };
        server.restart().await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) on the same port and store, and waits until it accepts
    /// connections.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("open the nats-server log");
        let store = self.dir.path().join("jetstream");
        let mut child = Command::new(NATS_SERVER)
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start {NATS_SERVER}: {err}"));
        let deadline = Instant::now() + BROKER_START_DEADLINE;
        // An external broker gives no readiness signal: retry the connection, bounded.
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nats-server exited ({status}) on port {}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept connections on port {} within {BROKER_START_DEADLINE:?}; its log:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// Kills the broker (an outage); its store stays for [`NatsServer::restart`].
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// One message of the stream, in stream order.
#[derive(Debug, Clone)]
struct StreamEvent {
    subject: String,
    msg_id: Option<String>,
    event: Value,
}

/// Every message of the event stream, from the first, in stream order, read with a pull
/// consumer (`DeliverPolicy::All`).
async fn read_stream(url: &str) -> Vec<StreamEvent> {
    let client = async_nats::connect(url)
        .await
        .unwrap_or_else(|err| panic!("connect to {url}: {err}"));
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream
        .get_stream(STREAM)
        .await
        .unwrap_or_else(|err| panic!("the server must have created stream {STREAM}: {err}"));
    let expected = stream.info().await.expect("stream info").state.messages;
    // On a cluster that just lost a node, the first attempts may time out while it elects new
    // leaders: retry, bounded. One in-memory replica is enough for a reader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumer = loop {
        let created = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                num_replicas: 1,
                memory_storage: true,
                ..Default::default()
            })
            .await;
        match created {
            Ok(consumer) => break consumer,
            Err(err) if Instant::now() < deadline => {
                eprintln!("create a pull consumer: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("create a pull consumer: {err}"),
        }
    };
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (events.len() as u64) < expected {
        assert!(
            Instant::now() < deadline,
            "read {} of the {expected} messages of {STREAM} within 30 s",
            events.len()
        );
        let mut batch = consumer
            .batch()
            .max_messages(500)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .expect("fetch a batch");
        while let Some(message) = batch.next().await {
            let Ok(message) = message else { break };
            let msg_id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Msg-Id"))
                .map(|value| value.as_str().to_owned());
            let text = String::from_utf8_lossy(&message.payload).into_owned();
            let event = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("stream message is not JSON ({err}): {text:?}"));
            events.push(StreamEvent {
                subject: message.subject.to_string(),
                msg_id,
                event,
            });
        }
    }
    events
}

// ---------------------------------------------------------------------------------------------
// Shopping helpers
// ---------------------------------------------------------------------------------------------

/// Creates a coupon as the admin and issues it to the user; returns the user coupon id.
async fn issue_rate_coupon(app: &TestApp, user: &TestUser, percent: i64) -> i64 {
    let admin = app.admin().await.token.clone();
    let coupon = app
        .post(
            "/api/v1/admin/coupons",
            Some(&admin),
            &json!({"name": "Ten off", "discount_type": "RATE", "discount_value": percent,
                    "total_quantity": 10, "valid_for_seconds": 3600}),
        )
        .await
        .expect_status(201)
        .clone();
    let path = format!("/api/v1/users/{}/coupons", user.id);
    let user_coupon = app
        .post(&path, Some(&user.token), &json!({"coupon_id": id_of(&coupon)}))
        .await
        .expect_status(201)
        .clone();
    id_of(&user_coupon)
}

// ---------------------------------------------------------------------------------------------
// The outbox and the envelope
// ---------------------------------------------------------------------------------------------

async fn unsent_events(app: &TestApp) -> i64 {
    app.db()
        .query_i64("select count(*) from outbox where sent_at is null", &[])
        .await
}

async fn recorded_events(app: &TestApp) -> i64 {
    app.db().query_i64("select count(*) from outbox", &[]).await
}

/// Waits (bounded) until the outbox holds `total` events and none is unsent.
///
/// The tests that use it are about the relay loops of the running instances (several relays
/// racing, a broker outage and its back-off, a killed instance's leases running out), so they
/// watch the real processes; a test of what one relay round writes calls the job's step
/// in-process instead (`steps::Jobs::drain_outbox`).
async fn wait_until_delivered(app: &TestApp, total: i64) {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let recorded = recorded_events(app).await;
        let unsent = unsent_events(app).await;
        if recorded == total && unsent == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {DRAIN_DEADLINE:?} the outbox holds {recorded} events (expected {total}), {unsent} of them unsent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The JSON lines of an instance's event file; a missing file has none. Every line must be a
/// whole JSON value ending with a newline.
fn read_event_file(path: &Path) -> Vec<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => panic!("read {}: {err}", path.display()),
    };
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} must hold whole lines only, it ends with {:?}",
        path.display(),
        &text[text.len().saturating_sub(80)..]
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{} has a line that is not JSON ({err}): {line:?}", path.display()))
        })
        .collect()
}

/// The event's `data.items` as the order's lines say they must be.
fn expected_items(order: &Value) -> Value {
    order["items"]
        .as_array()
        .expect("order items")
        .iter()
        .map(|line| {
            json!({"product_id": line["product_id"], "quantity": line["quantity"],
                   "unit_price": line["unit_price"], "amount": line["amount"]})
        })
        .collect()
}

/// Checks an `order.paid` envelope against the paid order, field by field.
fn assert_paid_event(event: &Value, order: &Value) {
    assert_eq!(
        keys(event),
        BTreeSet::from(["id", "type", "occurred_at", "data"]),
        "envelope fields of {event}"
    );
    let id = event["id"].as_str().expect("event id is a string");
    uuid::Uuid::parse_str(id).unwrap_or_else(|err| panic!("event id {id:?} is not a UUID: {err}"));
    assert_eq!(event["type"], json!("order.paid"), "{event}");
    instant(&event["occurred_at"]);
    let data = &event["data"];
    assert_eq!(
        keys(data),
        BTreeSet::from([
            "order_id",
            "user_id",
            "items",
            "total_amount",
            "discount_amount",
            "paid_amount",
            "user_coupon_id",
            "paid_at",
        ]),
        "order.paid data fields of {event}"
    );
    for field in [
        "user_id",
        "total_amount",
        "discount_amount",
        "paid_amount",
        "user_coupon_id",
    ] {
        assert_eq!(data[field], order[field], "data.{field} of {event} vs order {order}");
    }
    assert_eq!(data["order_id"], order["id"], "{event}");
    assert_eq!(data["items"], expected_items(order), "data.items of {event}");
    assert_eq!(
        instant(&data["paid_at"]),
        instant(&order["paid_at"]),
        "data.paid_at of {event} vs the order's paid_at"
    );
}

/// Checks an `order.refunded` envelope against the refunded order.
fn assert_refunded_event(event: &Value, order: &Value) {
    assert_eq!(
        keys(event),
        BTreeSet::from(["id", "type", "occurred_at", "data"]),
        "envelope fields of {event}"
    );
    let id = event["id"].as_str().expect("event id is a string");
    uuid::Uuid::parse_str(id).unwrap_or_else(|err| panic!("event id {id:?} is not a UUID: {err}"));
    assert_eq!(event["type"], json!("order.refunded"), "{event}");
    instant(&event["occurred_at"]);
    let data = &event["data"];
    assert_eq!(
        keys(data),
        BTreeSet::from([
            "order_id",
            "user_id",
            "items",
            "total_amount",
            "discount_amount",
            "refunded_amount",
            "user_coupon_id",
            "refunded_at",
        ]),
        "order.refunded data fields of {event}"
    );
    for field in ["user_id", "total_amount", "discount_amount", "user_coupon_id"] {
        assert_eq!(data[field], order[field], "data.{field} of {event} vs order {order}");
    }
    assert_eq!(data["order_id"], order["id"], "{event}");
    assert_eq!(data["refunded_amount"], order["paid_amount"], "{event}");
    assert_eq!(data["items"], expected_items(order), "data.items of {event}");
    assert!(
        instant(&data["refunded_at"]) >= instant(&order["paid_at"]),
        "refunded_at before paid_at in {event}"
    );
}

/// Groups events by `(type, order_id)` into the set of distinct event ids, checking that one id
/// always carries the same envelope (a redelivery is a copy, never a different event).
fn distinct_ids_by_order<'a>(events: impl IntoIterator<Item = &'a Value>) -> BTreeMap<(String, i64), BTreeSet<String>> {
    let mut by_id: BTreeMap<String, &Value> = BTreeMap::new();
    let mut grouped: BTreeMap<(String, i64), BTreeSet<String>> = BTreeMap::new();
    for event in events {
        let id = event["id"].as_str().expect("event id").to_owned();
        if let Some(earlier) = by_id.insert(id.clone(), event) {
            assert_eq!(earlier, event, "two different events share the id {id}");
        }
        let kind = event["type"].as_str().expect("event type").to_owned();
        let order_id = event["data"]["order_id"].as_i64().expect("data.order_id");
        grouped.entry((kind, order_id)).or_default().insert(id);
    }
    grouped
}

/// Asserts exactly one distinct `order.paid` id for each of `paid` and one `order.refunded` id
/// for each of `refunded`, and no other event.
fn assert_one_event_each(
    grouped: &BTreeMap<(String, i64), BTreeSet<String>>,
    paid: &BTreeSet<i64>,
    refunded: &BTreeSet<i64>,
) {
    let expected: BTreeSet<(String, i64)> = paid
        .iter()
        .map(|id| ("order.paid".to_owned(), *id))
        .chain(refunded.iter().map(|id| ("order.refunded".to_owned(), *id)))
        .collect();
    let got: BTreeSet<(String, i64)> = grouped.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    let unexpected: Vec<_> = got.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "missing events {missing:?}; unexpected events {unexpected:?}"
    );
    for (key, ids) in grouped {
        assert_eq!(ids.len(), 1, "{key:?} has {} distinct event ids: {ids:?}", ids.len());
    }
}

/// A product, users with money and one pending one-unit order per `(user, instance)` pair,
/// `count` orders in all, spread over the instances.
async fn pending_orders(app: &TestApp, users: &[TestUser], count: usize) -> Vec<(TestUser, i64)> {
    let product = id_of(&app.create_product("Event tee", 1_000, 100_000).await);
    for user in users {
        app.fund(user, 1_000_000).await;
    }
    let mut orders = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(10) {
        let creates = chunk.iter().map(|&i| {
            let user = &users[i % users.len()];
            let index = i % app.instance_count();
            async move {
                let order = app.place_order_on(index, user, &[(product, 1)]).await;
                (user.clone(), id_of(&order))
            }
        });
        orders.extend(futures_util::future::join_all(creates).await);
    }
    orders
}

/// Pays every order, `concurrency` at a time, each on instance `i % instances`; every payment
/// must answer 200 `PAID`.
async fn pay_all(app: &TestApp, orders: &[(TestUser, i64)], instances: &[usize]) {
    for (chunk_no, chunk) in orders.chunks(10).enumerate() {
        let payments = chunk.iter().enumerate().map(|(i, (user, order_id))| {
            let index = instances[(chunk_no * 10 + i) % instances.len()];
            async move {
                let response = app.pay_on(index, user, *order_id, None).await;
                let order = response.expect_status(200);
                assert_eq!(order["status"], json!("PAID"), "{order}");
            }
        });
        futures_util::future::join_all(payments).await;
    }
}

// ---------------------------------------------------------------------------------------------
// File sink
// ---------------------------------------------------------------------------------------------

engine_tests!(
    the_file_sink_gets_one_order_paid_per_payment_and_one_order_refunded_per_refund_in_the_documented_envelope,
    with_three_instances_every_paid_order_has_exactly_one_order_paid_across_their_files,
    a_failed_relay_round_gives_its_lease_back_so_the_next_round_sends_at_once,
);

/// A sink that fails (the events file's path is a folder) must not keep the events leased for
/// the lease's 10 s: the next round, once the sink works, sends them at once (audit L9). The
/// events file is created readable by its owner only.
async fn a_failed_relay_round_gives_its_lease_back_so_the_next_round_sends_at_once(engine: Engine) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_RELAY_INTERVAL_MS", steps::NEVER_MS)
        .spawn()
        .await;
    let shirt = app.new_product("Shirt", 1_000, 10).await;
    let user = app.create_user().await;
    app.fund(&user, 10_000).await;
    let first = app.new_order(&user, &[(shirt, 1)]).await;
    app.pay_ok(&user, first, None).await;
    let second = app.new_order(&user, &[(shirt, 1)]).await;
    app.pay_ok(&user, second, None).await;
    assert_eq!(unsent_events(&app).await, 2);

    let jobs = steps::Jobs::open(app.db()).await;
    let broken = app.db().path("events-broken");
    std::fs::create_dir_all(&broken).expect("a folder where the file should be");
    let failed = jobs.relay_once(&Sink::file(&broken).expect("sink")).await;
    assert!(failed.is_err(), "writing into a folder must fail: {failed:?}");
    assert_eq!(unsent_events(&app).await, 2, "nothing was sent");

    let file = app.db().path("events-repaired.jsonl");
    let sink = Sink::file(&file).expect("sink");
    assert_eq!(
        jobs.relay_once(&sink).await.expect("the sink works again"),
        2,
        "the failed round's events are sent at once, not after their lease"
    );
    assert_eq!(unsent_events(&app).await, 0);
    assert_eq!(read_event_file(&file).len(), 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("the events file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "events file mode {mode:o}");
    }
}

async fn the_file_sink_gets_one_order_paid_per_payment_and_one_order_refunded_per_refund_in_the_documented_envelope(
    engine: Engine,
) {
    let app = TestApp::builder(engine)
        .env("ECOMMERCE_RELAY_INTERVAL_MS", steps::NEVER_MS)
        .spawn()
        .await;
    let shirt = id_of(&app.create_product("Shirt", 10_000, 100).await);
    let socks = id_of(&app.create_product("Socks", 3_333, 100).await);
    let user = app.create_user().await;
    app.fund(&user, 200_000).await;
    let coupon = issue_rate_coupon(&app, &user, 10).await;

    // 2 × 10,000 + 3 × 3,333 = 29,999; 10 % off is floor(2,999.9) = 2,999; pays 27,000.
    let with_coupon = app.place_order(&user, &[(shirt, 2), (socks, 3)]).await;
    let with_coupon = app.pay_ok(&user, id_of(&with_coupon), Some(coupon)).await;
    assert_eq!(
        (
            with_coupon["total_amount"].as_i64(),
            with_coupon["discount_amount"].as_i64(),
            with_coupon["paid_amount"].as_i64()
        ),
        (Some(29_999), Some(2_999), Some(27_000)),
        "{with_coupon}"
    );
    let refunded = app.place_order(&user, &[(socks, 1)]).await;
    let paid_then_refunded = app.pay_ok(&user, id_of(&refunded), None).await;
    let refunded = app.refund_ok(&user, id_of(&refunded)).await;
    // Orders that are never paid, and a payment that fails, record nothing.
    let _pending = app.place_order(&user, &[(shirt, 1)]).await;
    let cancelled = app.place_order(&user, &[(shirt, 1)]).await;
    app.post_empty(
        &format!("/api/v1/orders/{}/cancel", id_of(&cancelled)),
        Some(&user.token),
    )
    .await
    .expect_status(200);
    let too_dear = app.place_order(&user, &[(shirt, 50)]).await;
    app.pay_on(0, &user, id_of(&too_dear), None)
        .await
        .assert_problem(409, "INSUFFICIENT_BALANCE");

    // The server's relay ran once at start-up; one in-process relay writes its file.
    let sink = Sink::file(&app.events_file(0)).expect("the events file");
    assert_eq!(steps::Jobs::open(app.db()).await.drain_outbox(&sink).await, 3);
    assert_eq!(unsent_events(&app).await, 0);
    let events = read_event_file(&app.events_file(0));
    assert_eq!(events.len(), 3, "three events, each once: {events:#?}");
    let grouped = distinct_ids_by_order(&events);
    assert_one_event_each(
        &grouped,
        &BTreeSet::from([id_of(&with_coupon), id_of(&refunded)]),
        &BTreeSet::from([id_of(&refunded)]),
    );
    let find = |kind: &str, order_id: i64| {
        events
            .iter()
            .position(|e| e["type"] == json!(kind) && e["data"]["order_id"] == json!(order_id))
            .unwrap_or_else(|| panic!("no {kind} for order {order_id} in {events:#?}"))
    };
    let coupon_paid = find("order.paid", id_of(&with_coupon));
    assert_paid_event(&events[coupon_paid], &with_coupon);
    assert_eq!(events[coupon_paid]["data"]["user_coupon_id"], json!(coupon));
    let plain_paid = find("order.paid", id_of(&refunded));
    assert_paid_event(&events[plain_paid], &paid_then_refunded);
    assert_eq!(events[plain_paid]["data"]["user_coupon_id"], Value::Null);
    let refund_line = find("order.refunded", id_of(&refunded));
    assert_refunded_event(&events[refund_line], &refunded);
    assert_eq!(events[refund_line]["data"]["refunded_amount"], json!(3_333));
    assert!(
        plain_paid < refund_line,
        "order.paid must come before order.refunded of the same order: lines {plain_paid} and {refund_line}"
    );
}

async fn with_three_instances_every_paid_order_has_exactly_one_order_paid_across_their_files(engine: Engine) {
    let app = TestApp::builder(engine)
        .instances(3)
        .env("ECOMMERCE_RELAY_INTERVAL_MS", RELAY_INTERVAL_MS)
        .spawn()
        .await;
    let users = app.create_users(3).await;
    let orders = pending_orders(&app, &users, 30).await;
    pay_all(&app, &orders, &[0, 1, 2]).await;
    // Refund every third order right after the payments.
    let mut refunded = BTreeSet::new();
    for (user, order_id) in orders.iter().step_by(3) {
        app.refund_ok(user, *order_id).await;
        refunded.insert(*order_id);
    }
    wait_until_delivered(&app, 30 + refunded.len() as i64).await;

    let per_file: Vec<Vec<Value>> = (0..3).map(|i| read_event_file(&app.events_file(i))).collect();
    let all: Vec<&Value> = per_file.iter().flatten().collect();
    let paid: BTreeSet<i64> = orders.iter().map(|(_, id)| *id).collect();
    assert_one_event_each(&distinct_ids_by_order(all.iter().copied()), &paid, &refunded);
    // In one file, an order's paid event precedes its refund.
    for (index, events) in per_file.iter().enumerate() {
        for (line, event) in events.iter().enumerate() {
            if event["type"] == json!("order.refunded") {
                let order_id = &event["data"]["order_id"];
                let paid_later = events[line..]
                    .iter()
                    .any(|e| e["type"] == json!("order.paid") && &e["data"]["order_id"] == order_id);
                assert!(
                    !paid_later,
                    "file {index}: order {order_id} refunded before its order.paid"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NATS JetStream
// ---------------------------------------------------------------------------------------------

engine_tests!(jetstream_gets_every_event_on_its_subject_with_the_event_id_as_nats_msg_id_in_order_per_order,);

async fn jetstream_gets_every_event_on_its_subject_with_the_event_id_as_nats_msg_id_in_order_per_order(engine: Engine) {
    let nats = NatsServer::start().await;
    let app = TestApp::builder(engine)
        .instances(2)
        .env("NATS_URL", nats.url())
        .env("ECOMMERCE_RELAY_INTERVAL_MS", RELAY_INTERVAL_MS)
        .spawn()
        .await;
    let users = app.create_users(2).await;
    let orders = pending_orders(&app, &users, 12).await;
    let mut paid_orders = BTreeMap::new();
    for (i, (user, order_id)) in orders.iter().enumerate() {
        let order = app
            .pay_on(i % 2, user, *order_id, None)
            .await
            .expect_status(200)
            .clone();
        paid_orders.insert(*order_id, order);
    }
    let coupon_user = &users[0];
    let coupon = issue_rate_coupon(&app, coupon_user, 25).await;
    let product = id_of(&app.create_product("Cap", 4_001, 10).await);
    let with_coupon = app.place_order(coupon_user, &[(product, 1)]).await;
    let with_coupon = app.pay_ok(coupon_user, id_of(&with_coupon), Some(coupon)).await;
    assert_eq!(with_coupon["discount_amount"], json!(1_000), "floor(4,001 × 25 / 100)");
    paid_orders.insert(id_of(&with_coupon), with_coupon.clone());
    // Refund half the orders straight after their payment, alternating instances.
    let mut refunded_orders = BTreeMap::new();
    for (user, order_id) in orders.iter().step_by(2) {
        let order = app.refund_ok(user, *order_id).await;
        refunded_orders.insert(*order_id, order);
    }
    let total = (paid_orders.len() + refunded_orders.len()) as i64;
    wait_until_delivered(&app, total).await;

    let messages = read_stream(&nats.url()).await;
    let events: Vec<Value> = messages.iter().map(|m| m.event.clone()).collect();
    let grouped = distinct_ids_by_order(&events);
    assert_one_event_each(
        &grouped,
        &paid_orders.keys().copied().collect(),
        &refunded_orders.keys().copied().collect(),
    );
    for (position, message) in messages.iter().enumerate() {
        let event = &message.event;
        let kind = event["type"].as_str().expect("type");
        assert_eq!(message.subject, format!("ecommerce.{kind}"), "subject of {event}");
        assert_eq!(
            message.msg_id.as_deref(),
            event["id"].as_str(),
            "Nats-Msg-Id of {event}"
        );
        let order_id = event["data"]["order_id"].as_i64().expect("order_id");
        match kind {
            "order.paid" => assert_paid_event(event, &paid_orders[&order_id]),
            "order.refunded" => {
                assert_refunded_event(event, &refunded_orders[&order_id]);
                let paid_at = messages
                    .iter()
                    .position(|m| {
                        m.event["type"] == json!("order.paid") && m.event["data"]["order_id"] == json!(order_id)
                    })
                    .expect("the order.paid of a refunded order");
                assert!(
                    paid_at < position,
                    "order {order_id}: order.refunded (#{position}) before order.paid (#{paid_at}) on the stream"
                );
            }
            other => panic!("unexpected event type {other:?}"),
        }
    }
    let coupon_event = messages
        .iter()
        .find(|m| m.event["data"]["order_id"] == with_coupon["id"])
        .expect("the coupon order's event");
    assert_eq!(coupon_event.event["data"]["user_coupon_id"], json!(coupon));
    assert_eq!(coupon_event.event["data"]["paid_amount"], json!(3_001));
    // With a broker, the file sink is not used.
    for index in 0..2 {
        assert!(
            read_event_file(&app.events_file(index)).is_empty(),
            "instance {index} wrote events to its file although NATS_URL is set"
        );
    }
}

engine_tests!(the_events_of_one_order_reach_the_stream_in_commit_order_after_waiting_together,);

/// While the broker is down, each order's `order.paid` and `order.refunded` wait side by side
/// in the outbox; three relays then race for them and must still publish the payment first.
async fn the_events_of_one_order_reach_the_stream_in_commit_order_after_waiting_together(engine: Engine) {
    let mut nats = NatsServer::start().await;
    let app = TestApp::builder(engine)
        .instances(3)
        .env("NATS_URL", nats.url())
        .env("ECOMMERCE_RELAY_INTERVAL_MS", RELAY_INTERVAL_MS)
        .spawn()
        .await;
    let users = app.create_users(3).await;
    let orders = pending_orders(&app, &users, 30).await;

    nats.stop();
    for (i, (user, order_id)) in orders.iter().enumerate() {
        app.pay_on(i % 3, user, *order_id, None).await.expect_status(200);
        let path = format!("/api/v1/orders/{order_id}/refund");
        app.request_on((i + 1) % 3, Method::POST, &path)
            .bearer_auth(&user.token)
            .fetch()
            .await
            .expect_status(200);
    }
    assert_eq!(
        unsent_events(&app).await,
        60,
        "every event waits while the broker is down"
    );
    nats.restart().await;
    wait_until_delivered(&app, 60).await;

    let messages = read_stream(&nats.url()).await;
    let events: Vec<Value> = messages.iter().map(|m| m.event.clone()).collect();
    let ids: BTreeSet<i64> = orders.iter().map(|(_, id)| *id).collect();
    assert_one_event_each(&distinct_ids_by_order(&events), &ids, &ids);
    for order_id in ids {
        let first = |kind: &str| {
            events
                .iter()
                .position(|e| e["type"] == json!(kind) && e["data"]["order_id"] == json!(order_id))
                .unwrap_or_else(|| panic!("no {kind} for order {order_id}"))
        };
        let (paid, refunded) = (first("order.paid"), first("order.refunded"));
        assert!(
            paid < refunded,
            "order {order_id}: order.refunded (#{refunded}) before order.paid (#{paid}) on the stream"
        );
    }
}

postgres_tests!(
    events_paid_while_the_broker_is_down_wait_in_the_outbox_and_all_arrive_when_it_is_back,
    when_an_instance_is_killed_while_relaying_the_other_instances_deliver_every_event,
);

async fn events_paid_while_the_broker_is_down_wait_in_the_outbox_and_all_arrive_when_it_is_back(engine: Engine) {
    let mut nats = NatsServer::start().await;
    let app = TestApp::builder(engine)
        .instances(3)
        .env("NATS_URL", nats.url())
        .env("ECOMMERCE_RELAY_INTERVAL_MS", RELAY_INTERVAL_MS)
        .spawn()
        .await;
    let users = app.create_users(10).await;
    let orders = pending_orders(&app, &users, 101).await;
    let (warm_up, outage_orders) = orders.split_first().expect("orders");
    // The broker works before the outage.
    pay_all(&app, std::slice::from_ref(warm_up), &[0]).await;
    wait_until_delivered(&app, 1).await;

    nats.stop();
    pay_all(&app, outage_orders, &[0, 1, 2]).await;
    assert_eq!(recorded_events(&app).await, 101, "every payment recorded its event");
    assert_eq!(
        unsent_events(&app).await,
        100,
        "with the broker down, the 100 new events wait unsent in the outbox"
    );

    nats.restart().await;
    wait_until_delivered(&app, 101).await;
    let messages = read_stream(&nats.url()).await;
    let events: Vec<Value> = messages.iter().map(|m| m.event.clone()).collect();
    let paid: BTreeSet<i64> = orders.iter().map(|(_, id)| *id).collect();
    let grouped = distinct_ids_by_order(&events);
    assert_one_event_each(&grouped, &paid, &BTreeSet::new());
    let distinct: BTreeSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        distinct.len(),
        101,
        "1 event before and 100 during the outage, none lost"
    );
    for message in &messages {
        assert_eq!(message.subject, "ecommerce.order.paid");
        assert_eq!(message.msg_id.as_deref(), message.event["id"].as_str());
    }
}

async fn when_an_instance_is_killed_while_relaying_the_other_instances_deliver_every_event(engine: Engine) {
    let nats = NatsServer::start().await;
    let mut app = TestApp::builder(engine)
        .instances(3)
        .env("NATS_URL", nats.url())
        .env("ECOMMERCE_RELAY_INTERVAL_MS", RELAY_INTERVAL_MS)
        .spawn()
        .await;
    let users = app.create_users(6).await;
    let orders = pending_orders(&app, &users, 70).await;
    let (before_crash, after_crash) = orders.split_at(60);
    pay_all(&app, before_crash, &[0, 1, 2]).await;
    app.kill_instance(1);
    // The survivors keep taking payments.
    pay_all(&app, after_crash, &[0, 2]).await;

    wait_until_delivered(&app, 70).await;
    assert_eq!(unsent_events(&app).await, 0);
    let messages = read_stream(&nats.url()).await;
    let events: Vec<Value> = messages.iter().map(|m| m.event.clone()).collect();
    let paid: BTreeSet<i64> = orders.iter().map(|(_, id)| *id).collect();
    assert_one_event_each(&distinct_ids_by_order(&events), &paid, &BTreeSet::new());
    assert_eq!(
        messages.len(),
        70,
        "a re-published event is dropped by JetStream (same Nats-Msg-Id)"
    );
    for message in &messages {
        assert_eq!(message.msg_id.as_deref(), message.event["id"].as_str());
    }
}

engine_tests!(events_leased_by_a_killed_instance_are_delivered_by_the_others_once_the_lease_runs_out,);

/// Deterministic crash: the broker is down, so the only instance leases every event and
/// holds the leases while it retries; it is then killed, two fresh instances start, the broker
/// comes back, and the leases of the dead instance must run out and its events be delivered.
async fn events_leased_by_a_killed_instance_are_delivered_by_the_others_once_the_lease_runs_out(engine: Engine) {
    let mut nats = NatsServer::start().await;
    let mut app = TestApp::builder(engine)
        .env("NATS_URL", nats.url())
        .env("ECOMMERCE_RELAY_INTERVAL_MS", RELAY_INTERVAL_MS)
        .spawn()
        .await;
    let users = app.create_users(2).await;
    let orders = pending_orders(&app, &users, 20).await;
    nats.stop();
    pay_all(&app, &orders, &[0]).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        let leased = app
            .db()
            .query_i64(
                "select count(*) from outbox where sent_at is null and lease_until > $1",
                &[now_ms + 1_000],
            )
            .await;
        if leased == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay leased only {leased} of 20 events while the broker was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.kill_instance(0);
    app.add_instance().await;
    app.add_instance().await;
    nats.restart().await;

    wait_until_delivered(&app, 20).await;
    let messages = read_stream(&nats.url()).await;
    let events: Vec<Value> = messages.iter().map(|m| m.event.clone()).collect();
    let paid: BTreeSet<i64> = orders.iter().map(|(_, id)| *id).collect();
    assert_one_event_each(&distinct_ids_by_order(&events), &paid, &BTreeSet::new());
}

// ---------------------------------------------------------------------------------------------
// `ecommerce events tail`
// ---------------------------------------------------------------------------------------------

/// `ecommerce events tail ARGS…` with only `NATS_URL` (when given) from the test's environment.
fn events_tail(nats_url: Option<&str>) -> tokio::process::Command {
    use_server_binary(env!("CARGO_BIN_EXE_ecommerce"));
    let mut command = tokio::process::Command::from(server_command());
    if let Some(url) = nats_url {
        command.env("NATS_URL", url);
    }
    command
        .args(["events", "tail"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The next stdout line of `events tail`, parsed as JSON; panics after `deadline`.
async fn next_json_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    deadline: Instant,
) -> Value {
    let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
        .await
        .expect("events tail printed the line in time")
        .expect("read a line of events tail")
        .expect("events tail ended early");
    serde_json::from_str(&line).unwrap_or_else(|err| panic!("events tail printed a non-JSON line ({err}): {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_prints_every_event_of_the_stream_as_json_lines_and_follows_new_ones() {
    let nats = NatsServer::start().await;
    let app = TestApp::builder(Engine::Sqlite)
        .env("NATS_URL", nats.url())
        .env("ECOMMERCE_RELAY_INTERVAL_MS", RELAY_INTERVAL_MS)
        .spawn()
        .await;
    let product = id_of(&app.create_product("Tail tee", 2_000, 100).await);
    let user = app.create_user().await;
    app.fund(&user, 100_000).await;
    let first = app.place_order(&user, &[(product, 1)]).await;
    app.pay_ok(&user, id_of(&first), None).await;
    let second = app.place_order(&user, &[(product, 2)]).await;
    app.pay_ok(&user, id_of(&second), None).await;
    app.refund_ok(&user, id_of(&second)).await;
    wait_until_delivered(&app, 3).await;
    let on_stream: BTreeSet<String> = read_stream(&nats.url())
        .await
        .iter()
        .map(|m| m.event["id"].as_str().expect("id").to_owned())
        .collect();

    // The server made the stream replayable: kept by age on disk, not deleted once read.
    let client = async_nats::connect(nats.url()).await.expect("connect to NATS");
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(STREAM)
        .await
        .expect("the stream");
    let config = stream.info().await.expect("stream info").config.clone();
    assert_eq!(config.retention, async_nats::jetstream::stream::RetentionPolicy::Limits);
    assert_eq!(config.storage, async_nats::jetstream::stream::StorageType::File);
    assert_eq!(
        config.max_age,
        Duration::from_secs(30 * 86_400),
        "ECOMMERCE_EVENTS_MAX_AGE_DAYS default"
    );

    let mut tail = events_tail(Some(&nats.url()))
        .spawn()
        .expect("start ecommerce events tail");
    let mut lines = BufReader::new(tail.stdout.take().expect("piped stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut printed = Vec::new();
    for _ in 0..3 {
        printed.push(next_json_line(&mut lines, deadline).await);
    }
    let printed_ids: BTreeSet<String> = printed
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(printed_ids, on_stream, "events tail prints the events of the stream");
    assert_one_event_each(
        &distinct_ids_by_order(&printed),
        &BTreeSet::from([id_of(&first), id_of(&second)]),
        &BTreeSet::from([id_of(&second)]),
    );

    // A payment made while tailing shows up too.
    let third = app.place_order(&user, &[(product, 1)]).await;
    let third = app.pay_ok(&user, id_of(&third), None).await;
    let fourth = next_json_line(&mut lines, deadline).await;
    assert_eq!(fourth["type"], json!("order.paid"));
    assert_paid_event(&fourth, &third);

    tail.kill().await.expect("kill events tail");
}

#[tokio::test]
async fn events_tail_without_nats_url_fails_and_says_to_set_it() {
    let run = events_tail(None).output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("events tail without NATS_URL ends at once")
        .expect("run ecommerce events tail");
    assert!(!output.status.success(), "exit status {}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NATS_URL"), "stderr should name NATS_URL: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// Replay: `events tail --from-sequence`, `--since`, `--durable`
// ---------------------------------------------------------------------------------------------

/// A broker with the server's stream (as a relaying instance creates it) and `count` events
/// `e1`, `e2`, … published straight to it; returns the JetStream context.
async fn stream_with_events(nats: &NatsServer, count: u64) -> async_nats::jetstream::Context {
    let client = async_nats::connect(nats.url()).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    ecommerce::events::ensure_stream(
        &js,
        ecommerce::events::StreamSettings::single(Duration::from_secs(3600)),
    )
    .await
    .expect("create the stream as the server does");
    publish_events(&js, 1..=count).await;
    js
}

/// Publishes the events `e{n}` for every `n`, each acknowledged by the broker.
async fn publish_events(js: &async_nats::jetstream::Context, numbers: std::ops::RangeInclusive<u64>) {
    for n in numbers {
        let event = json!({"id": format!("e{n}"), "type": "order.paid", "data": {"order_id": n}});
        js.publish("ecommerce.order.paid", event.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("the broker has the event");
    }
}

/// The `e{n}` numbers of printed events.
fn numbers(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e["id"]
                .as_str()
                .and_then(|id| id.strip_prefix('e')?.parse().ok())
                .expect("an e{n} id")
        })
        .collect()
}

/// A running `events tail` and its stdout lines.
struct Tail {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Tail {
    fn start(nats: &NatsServer, args: &[&str]) -> Tail {
        let mut child = events_tail(Some(&nats.url()))
            .args(args)
            .spawn()
            .expect("start ecommerce events tail");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Tail { child, lines }
    }

    /// The next `count` events printed.
    async fn read(&mut self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(next_json_line(&mut self.lines, deadline).await);
        }
        events
    }

    /// Asks the tail to stop (SIGTERM, as an operator or systemd would), and returns every line
    /// it printed until it exited; it must exit 0.
    async fn stop(mut self) -> Vec<Value> {
        let pid = self.child.id().expect("a running tail");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
        let mut rest = Vec::new();
        let read_all = async {
            while let Some(line) = self.lines.next_line().await.expect("read events tail") {
                rest.push(serde_json::from_str(&line).expect("a JSON line"));
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read_all)
            .await
            .expect("events tail stops within 30 s of SIGTERM");
        let exit = self.child.wait().await.expect("wait for events tail");
        assert!(exit.success(), "events tail exits 0 on SIGTERM: {exit}");
        rest
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_replays_from_a_sequence_number_or_a_time() {
    let nats = NatsServer::start().await;
    let js = stream_with_events(&nats, 6).await;

    let mut from_four = Tail::start(&nats, &["--from-sequence", "4"]);
    assert_eq!(numbers(&from_four.read(3).await), [4, 5, 6]);
    from_four.stop().await;

    // `--since` the time the broker stored the 5th event: events 5 and 6, then new ones.
    let stream = js.get_stream(ecommerce::events::STREAM).await.expect("the stream");
    let fifth = stream.get_raw_message(5).await.expect("the 5th message");
    let since = fifth
        .time
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let mut since_fifth = Tail::start(&nats, &["--since", &since]);
    assert_eq!(numbers(&since_fifth.read(2).await), [5, 6]);
    publish_events(&js, 7..=7).await;
    assert_eq!(numbers(&since_fifth.read(1).await), [7], "then it follows new events");
    since_fifth.stop().await;

    let both = events_tail(Some(&nats.url()))
        .args(["--from-sequence", "1", "--since", &since])
        .output()
        .await
        .expect("run events tail");
    assert!(
        !both.status.success(),
        "--from-sequence and --since together are refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_tail_stopped_mid_stream_and_resumed_loses_and_repeats_nothing() {
    let nats = NatsServer::start().await;
    let js = stream_with_events(&nats, 10).await;

    let mut first = Tail::start(&nats, &["--durable", "warehouse"]);
    let mut printed = first.read(10).await;
    // More events arrive, and the tail is stopped while they stream in.
    publish_events(&js, 11..=40).await;
    printed.extend(first.read(5).await);
    printed.extend(first.stop().await);
    let stopped_after = printed.len();
    assert!(
        (15..=40).contains(&stopped_after),
        "stopped mid-stream after {stopped_after} events"
    );
    // Events keep coming while nobody reads.
    publish_events(&js, 41..=50).await;

    let mut resumed = Tail::start(&nats, &["--durable", "warehouse"]);
    printed.extend(resumed.read(50 - stopped_after).await);
    printed.extend(resumed.stop().await);
    assert_eq!(
        numbers(&printed),
        (1..=50).collect::<Vec<_>>(),
        "every event once, in stream order, across the stop (stopped after {stopped_after})"
    );

    // Nothing is left for the consumer to deliver again: every line printed was acknowledged.
    let stream = js.get_stream(ecommerce::events::STREAM).await.expect("the stream");
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("warehouse").await.expect("the durable consumer");
    let info = consumer.info().await.expect("consumer info");
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 50, "{info:?}");
}

// ---------------------------------------------------------------------------------------------
// A three-node JetStream cluster (deploy/nats/)
// ---------------------------------------------------------------------------------------------

/// The deployment kit's three nodes (`deploy/nats/node-{1,2,3}.conf`) with their client, route
/// and monitoring ports moved to free ones and their storage in a temporary folder; each node is
/// killed on drop.
struct NatsCluster {
    nodes: Vec<Option<Child>>,
    client_ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    async fn start() -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("ecommerce-nats-cluster-")
            .tempdir()
            .expect("a folder for the cluster");
        let ports: Vec<[u16; 3]> = (0..3).map(|_| [free_port(), free_port(), free_port()]).collect();
        let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats");
        let mut nodes = Vec::new();
        for node in 1..=3 {
            let mut config =
                std::fs::read_to_string(kit.join(format!("node-{node}.conf"))).expect("read the kit's node config");
            // The kit's ports: clients 4222-4224, routes 6222-6224, monitoring 8222-8224.
            for (i, [client, route, http]) in ports.iter().enumerate() {
                let i = i as u16;
                config = config
                    .replace(&format!("127.0.0.1:{}", 4222 + i), &format!("127.0.0.1:{client}"))
                    .replace(&format!("127.0.0.1:{}", 6222 + i), &format!("127.0.0.1:{route}"))
                    .replace(&format!("127.0.0.1:{}", 8222 + i), &format!("127.0.0.1:{http}"));
            }
            let store = dir.path().display().to_string();
            config = config.replace("\"/var/lib/nats/", &format!("\"{store}/"));
            assert!(config.contains(&store), "node {node}: could not move the storage");
            let path = dir.path().join(format!("node-{node}.conf"));
            std::fs::write(&path, config).expect("write a node config");
            let log = std::fs::File::create(dir.path().join(format!("node-{node}.log"))).expect("a node log");
            let child = Command::new(NATS_SERVER)
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|err| panic!("start {NATS_SERVER}: {err}"));
            nodes.push(Some(child));
        }
        let cluster = NatsCluster {
            nodes,
            client_ports: ports.iter().map(|p| p[0]).collect(),
            dir,
        };
        let deadline = Instant::now() + BROKER_START_DEADLINE;
        for &port in &cluster.client_ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "a cluster node did not listen:\n{}",
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    /// `NATS_URL` with every node, comma-separated.
    fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.client_ports[node])
    }

    /// Kills node `node` (0-based) for good.
    fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|node| std::fs::read_to_string(self.dir.path().join(format!("node-{node}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }
}

postgres_tests!(through_a_three_node_cluster_that_loses_its_stream_leader_every_event_arrives_exactly_once,);

/// Two instances relay to the kit's three-node cluster with `ECOMMERCE_EVENTS_REPLICAS=3`; the
/// stream's leader is killed during 200 payments. Every payment answers, the outbox empties, and
/// the stream read from a survivor holds, after de-duplication by `Nats-Msg-Id`, exactly one
/// `order.paid` per paid order.
async fn through_a_three_node_cluster_that_loses_its_stream_leader_every_event_arrives_exactly_once(engine: Engine) {
    const PAYMENTS: usize = 200;
    let mut cluster = NatsCluster::start().await;
    let app = TestApp::builder(engine)
        .instances(2)
        .env("NATS_URL", cluster.urls())
        .env("ECOMMERCE_EVENTS_REPLICAS", 3)
        .env("ECOMMERCE_RELAY_INTERVAL_MS", RELAY_INTERVAL_MS)
        .spawn()
        .await;
    let users = app.create_users(10).await;
    let orders = pending_orders(&app, &users, PAYMENTS).await;
    let (before, after) = orders.split_at(50);
    pay_all(&app, before, &[0, 1]).await;
    wait_until_delivered(&app, before.len() as i64).await;

    // The stream is replicated on the three nodes; kill the one that leads it.
    let client = async_nats::connect(cluster.url(2)).await.expect("connect to node 3");
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream(STREAM)
        .await
        .expect("the relay created the stream")
        .info()
        .await
        .expect("stream info")
        .clone();
    assert_eq!(
        info.config.num_replicas, 3,
        "ECOMMERCE_EVENTS_REPLICAS reaches the stream"
    );
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a replicated stream has a leader");
    let node: usize = leader
        .strip_prefix("ecommerce-nats-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("leader {leader:?} is a node of the kit"));
    cluster.kill(node - 1);

    pay_all(&app, after, &[0, 1]).await;
    wait_until_delivered(&app, PAYMENTS as i64).await;
    let survivor = (0..3).find(|&n| n != node - 1).expect("a survivor");
    let messages = read_stream(&cluster.url(survivor)).await;
    let mut by_msg_id: BTreeMap<String, Value> = BTreeMap::new();
    for message in &messages {
        let msg_id = message.msg_id.clone().expect("every message carries Nats-Msg-Id");
        assert_eq!(
            Some(msg_id.as_str()),
            message.event["id"].as_str(),
            "Nats-Msg-Id is the event id"
        );
        by_msg_id.entry(msg_id).or_insert_with(|| message.event.clone());
    }
    let events: Vec<Value> = by_msg_id.into_values().collect();
    let paid: BTreeSet<i64> = orders.iter().map(|(_, id)| *id).collect();
    assert_one_event_each(&distinct_ids_by_order(&events), &paid, &BTreeSet::new());
    assert_eq!(events.len(), PAYMENTS, "one event per payment after de-duplication");
}
