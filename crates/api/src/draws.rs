//! Draws: fair admission to a limited drop. An admin sets units aside and opens an entry window;
//! users enter once each; within seconds after the window closes, one instance draws the
//! winners (the server's draw job, `crates/server/src/jobs/draw.rs`), each with a pending order
//! holding one unit. The rules are in `ecommerce_domain::draw`; this module translates HTTP.
//!
//! **Entries share commits.** A rush of entries is thousands of tiny transactions that would
//! each wait for their own commit (and queue on the draw's row to count themselves). Instead,
//! each instance gathers the entries of one draw that arrive while a write is in flight and
//! writes them together in the next transaction ([`EntryBatcher`], group commit): one insert of
//! all the rows (the unique `(draw_id, user_id)` still decides who is first), one guarded count.
//! Every request is still answered only after its entry committed.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Query, State};
use ecommerce_domain::UserId;
use ecommerce_domain::draw::{self, Draw, DrawEntry, DrawRequest, DrawStatus, EntryStatus, NewDraw, parse_seed};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::{DrawId, Error, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::batch::Coalesced;
use crate::error::Result;
use crate::extract::{Admin, Json, PageQuery, Paging, PathParams, UserScope, query_rejection};
use crate::openapi::operations;
use crate::{AppState, Created};

operations!(
    create_draw::<S>,
    list_all_draws::<S>,
    list_draw_entries::<S>,
    audit_draw::<S>,
    list_draws::<S>,
    get_draw::<S>,
    enter_draw::<S>,
    get_draw_entry::<S>,
);

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateDrawRequest {
    #[schema(minimum = 1)]
    pub product_id: i64,
    /// Units set aside for the winners: 1 to 100,000, taken from the product's stock now.
    #[schema(minimum = 1, maximum = 100_000)]
    pub quantity: i64,
    /// RFC 3339; before `entry_ends_at`.
    #[schema(format = DateTime)]
    pub entry_starts_at: String,
    /// RFC 3339; in the future and at most 30 days ahead. The winners are drawn within 10 s after.
    #[schema(format = DateTime)]
    pub entry_ends_at: String,
    /// How long a winner has to pay: 60 to 86,400 seconds from the draw.
    #[schema(minimum = 60, maximum = 86_400)]
    pub payment_window_seconds: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DrawResponse {
    pub id: i64,
    pub product_id: i64,
    pub quantity: i64,
    pub entry_starts_at: String,
    pub entry_ends_at: String,
    pub payment_window_seconds: i64,
    /// SCHEDULED before the window, OPEN in it, CLOSED after it until drawn, then DRAWN.
    pub status: DrawStatus,
    pub entry_count: i64,
    /// Null until drawn.
    pub winner_count: Option<i64>,
    /// Null until drawn.
    pub drawn_at: Option<String>,
}

impl DrawResponse {
    pub fn new(d: Draw, now: Timestamp) -> Self {
        Self {
            id: d.id.0,
            product_id: d.product_id.0,
            quantity: d.quantity,
            entry_starts_at: d.entry_starts_at.to_rfc3339(),
            entry_ends_at: d.entry_ends_at.to_rfc3339(),
            payment_window_seconds: d.payment_window_seconds,
            status: d.status(now),
            entry_count: d.entry_count,
            winner_count: d.winner_count,
            drawn_at: d.drawn_at.map(Timestamp::to_rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DrawPage {
    pub items: Vec<DrawResponse>,
    pub next_after: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DrawEntryResponse {
    pub draw_id: i64,
    pub user_id: i64,
    /// ENTERED until the draw, then WON or LOST.
    pub status: EntryStatus,
    pub entered_at: String,
    /// The winner's `PENDING_PAYMENT` order; null unless WON.
    pub order_id: Option<i64>,
}

impl From<DrawEntry> for DrawEntryResponse {
    fn from(e: DrawEntry) -> Self {
        Self {
            draw_id: e.draw_id.0,
            user_id: e.user_id.0,
            status: e.status,
            entered_at: e.entered_at.to_rfc3339(),
            order_id: e.order_id.map(|o| o.0),
        }
    }
}

/// `next_after` is an opaque cursor (the last entry's position), to pass back as `after`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrawEntryPage {
    pub items: Vec<DrawEntryResponse>,
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DrawEntryQuery {
    /// ENTERED, WON or LOST; all when absent.
    pub status: Option<EntryStatus>,
}

/// How a draw's winners can be checked afterwards.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrawAuditResponse {
    pub draw_id: i64,
    pub quantity: i64,
    /// The 32-byte ChaCha20 seed, 64 hex digits; null until drawn.
    pub seed: Option<String>,
    /// How the winners follow from the seed and the entrants.
    pub algorithm: String,
    /// Every entrant's user id, ascending: the list the seed was applied to.
    pub entrants: Vec<i64>,
    /// The winners recomputed from `seed` and `entrants`, in the order drawn; empty until drawn.
    pub winners: Vec<i64>,
}

const ALGORITHM: &str = "ChaCha20 (rand_chacha 0.9 ChaCha20Rng::from_seed) seeded with `seed`; partial Fisher-Yates \
    over `entrants` (user ids ascending): for i in 0..min(quantity, n), j = i + uniform(n - i), swap(i, j), where \
    uniform(b) draws next_u64() until it is below u64::MAX - (u64::MAX % b) and answers it modulo b; the first \
    min(quantity, n) are the winners.";

fn draw_example() -> serde_json::Value {
    serde_json::json!({
        "id": 12, "product_id": 7, "quantity": 300,
        "entry_starts_at": "2026-12-01T09:00:00.000Z", "entry_ends_at": "2026-12-01T10:00:00.000Z",
        "payment_window_seconds": 1800, "status": "OPEN", "entry_count": 5120,
        "winner_count": null, "drawn_at": null
    })
}

fn entry_example() -> serde_json::Value {
    serde_json::json!({
        "draw_id": 12, "user_id": 42, "status": "ENTERED",
        "entered_at": "2026-12-01T09:03:12.345Z", "order_id": null
    })
}

/// Entries of one transaction at most.
const MAX_BATCH: usize = 500;

/// The entries waiting for the next write, per draw, on this instance, and the reads of the
/// draws they enter, coalesced ([`crate::batch`]: the entries of one draw arriving together
/// share one read of it).
pub struct EntryBatcher {
    queues: Mutex<HashMap<DrawId, Queue>>,
    draws: Coalesced<DrawId, Draw>,
}

impl Default for EntryBatcher {
    fn default() -> Self {
        Self {
            queues: Mutex::default(),
            draws: Coalesced::new("draw"),
        }
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(UserId, tokio::sync::oneshot::Sender<Outcome>)>,
    /// A writer task is running for this draw.
    flushing: bool,
}

/// What a batch answers one of its entries (`Error` is not `Clone`).
enum Outcome {
    Entered(DrawEntry),
    AlreadyEntered,
    NotOpen,
    Failed { unavailable: bool, message: String },
}

impl Outcome {
    fn into_result(self) -> std::result::Result<DrawEntry, Error> {
        match self {
            Outcome::Entered(entry) => Ok(entry),
            Outcome::AlreadyEntered => Err(Error::AlreadyEntered),
            Outcome::NotOpen => Err(Error::DrawNotOpen),
            Outcome::Failed { unavailable, message } => {
                let source = std::io::Error::other(message);
                Err(Error::Store(if unavailable {
                    ecommerce_domain::StoreError::unavailable(source)
                } else {
                    ecommerce_domain::StoreError::new(source)
                }))
            }
        }
    }
}

impl EntryBatcher {
    /// The draw, read in the next batch (alone if that batch failed).
    async fn draw<S: Store>(&self, store: &S, id: DrawId) -> std::result::Result<Option<Draw>, Error> {
        let read = self
            .draws
            .read(id, |ids: Vec<DrawId>| async move {
                let mut found = HashMap::new();
                for id in ids {
                    if let Some(draw) = store.draw(id).await? {
                        found.insert(id, draw);
                    }
                }
                Ok::<_, ecommerce_domain::StoreError>(found)
            })
            .await;
        match read {
            Some(draw) => Ok(draw),
            None => Ok(store.draw(id).await?),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<DrawId, Queue>> {
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes `user`'s entry in the next batch of the draw and waits for its commit.
async fn enter_batched<S: Store>(app: &AppState<S>, id: DrawId, user: UserId) -> std::result::Result<DrawEntry, Error> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let lead = {
        let mut queues = app.draw_entries.queues();
        let queue = queues.entry(id).or_default();
        queue.waiting.push((user, sender));
        !std::mem::replace(&mut queue.flushing, true)
    };
    if lead {
        tokio::spawn(flush_entries(app.clone(), id));
    }
    match receiver.await {
        Ok(outcome) => outcome.into_result(),
        Err(_) => Err(Error::Store(ecommerce_domain::StoreError::new(std::io::Error::other(
            "the entry writer stopped",
        )))),
    }
}

/// Writes the draw's waiting entries, batch after batch, until none is left.
async fn flush_entries<S: Store>(app: AppState<S>, id: DrawId) {
    loop {
        let batch: Vec<_> = {
            let mut queues = app.draw_entries.queues();
            let Some(queue) = queues.get_mut(&id) else { return };
            if queue.waiting.is_empty() {
                queues.remove(&id);
                return;
            }
            let take = queue.waiting.len().min(MAX_BATCH);
            queue.waiting.drain(..take).collect()
        };
        let users: Vec<UserId> = batch.iter().map(|(user, _)| *user).collect();
        let written = write_entries(&app.store, id, &users).await;
        metrics::histogram!("draw_entry_batch_size").record(users.len() as f64);
        match written {
            Ok(entries) => {
                for ((_, sender), entry) in batch.into_iter().zip(entries) {
                    let _ = sender.send(entry.map_or(Outcome::AlreadyEntered, Outcome::Entered));
                }
            }
            Err(err) => {
                let (unavailable, message) = match &err {
                    Error::Store(cause) => (cause.unavailable, cause.to_string()),
                    other => (false, other.to_string()),
                };
                let not_open = matches!(err, Error::DrawNotOpen);
                for (_, sender) in batch {
                    let _ = sender.send(if not_open {
                        Outcome::NotOpen
                    } else {
                        Outcome::Failed {
                            unavailable,
                            message: message.clone(),
                        }
                    });
                }
            }
        }
    }
}

async fn write_entries<S: Store>(
    store: &S,
    id: DrawId,
    users: &[UserId],
) -> std::result::Result<Vec<Option<DrawEntry>>, Error> {
    let mut tx = store.begin().await?;
    match draw::enter_many(&mut tx, id, users, Timestamp::now()).await {
        Ok(entries) => {
            tx.commit().await?;
            Ok(entries)
        }
        Err(err) => {
            tx.rollback().await?;
            Err(err)
        }
    }
}

fn draw_id(params: &PathParams) -> Result<DrawId> {
    Ok(DrawId(params.id("draw_id")?))
}

/// Create a draw (admin)
///
/// Sets `quantity` units of the product aside (they leave its stock in the same transaction, so
/// they can never be sold twice) and opens entries from `entry_starts_at` to `entry_ends_at`.
/// Within 10 s after the window closes the winners are drawn uniformly at random among the
/// entries, each with a `PENDING_PAYMENT` order for one unit due `payment_window_seconds` later;
/// units nobody won go back to stock.
#[utoipa::path(post, path = "/api/v1/admin/draws", tag = "admin",
    request_body(content = CreateDrawRequest, example = json!({
        "product_id": 7, "quantity": 300, "entry_starts_at": "2026-12-01T09:00:00Z",
        "entry_ends_at": "2026-12-01T10:00:00Z", "payment_window_seconds": 1800})),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Draw created", body = DrawResponse,
            headers(("Location" = String, description = "The draw's path, `/api/v1/draws/{draw_id}`")),
            example = draw_example),
        (status = 404, description = "PRODUCT_NOT_FOUND"),
        (status = 409, description = "OUT_OF_STOCK"),
    ))]
pub async fn create_draw<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    Json(body): Json<CreateDrawRequest>,
) -> Result<Created<DrawResponse>> {
    let now = Timestamp::now();
    let new_draw = NewDraw::parse(
        DrawRequest {
            product_id: body.product_id,
            quantity: body.quantity,
            entry_starts_at: &body.entry_starts_at,
            entry_ends_at: &body.entry_ends_at,
            payment_window_seconds: body.payment_window_seconds,
        },
        now,
    )?;
    let mut tx = app.store.begin().await?;
    let created = draw::create_draw(&mut tx, &new_draw, now).await?;
    tx.commit().await?;
    metrics::counter!("draws_created_total").increment(1);
    Ok(Created(
        format!("/api/v1/draws/{}", created.id),
        DrawResponse::new(created, now),
    ))
}

/// List every draw (admin)
///
/// Newest first, drawn ones included.
#[utoipa::path(get, path = "/api/v1/admin/draws", tag = "admin", params(PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every draw, newest first", body = DrawPage,
            example = json!({"items": [draw_example()], "next_after": null})),
    ))]
pub async fn list_all_draws<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    Paging(page): Paging,
) -> Result<axum::Json<DrawPage>> {
    draw_page(&app, false, page).await
}

async fn draw_page<S: Store>(
    app: &AppState<S>,
    undrawn_only: bool,
    page: ecommerce_domain::paging::Page,
) -> Result<axum::Json<DrawPage>> {
    let now = Timestamp::now();
    let draws = app.store.draws(undrawn_only, page).await?;
    let next_after = page.next_after(&draws, |d| d.id.0);
    Ok(axum::Json(DrawPage {
        items: draws.into_iter().map(|d| DrawResponse::new(d, now)).collect(),
        next_after,
    }))
}

/// List a draw's entries (admin)
///
/// Newest first, optionally only those with a `status` (after the draw, `WON` lists the winners
/// with their orders).
#[utoipa::path(get, path = "/api/v1/admin/draws/{draw_id}/entries", tag = "admin",
    params(("draw_id" = i64, Path, description = "Draw id"), DrawEntryQuery, PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The draw's entries, newest first", body = DrawEntryPage,
            example = json!({"items": [entry_example()], "next_after": null})),
        (status = 404, description = "DRAW_NOT_FOUND"),
    ))]
pub async fn list_draw_entries<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    params: PathParams,
    query: std::result::Result<Query<DrawEntryQuery>, axum::extract::rejection::QueryRejection>,
    Paging(page): Paging,
) -> Result<axum::Json<DrawEntryPage>> {
    let id = draw_id(&params)?;
    let Query(query) = query.map_err(query_rejection)?;
    if app.store.draw(id).await?.is_none() {
        return Err(Error::DrawNotFound.into());
    }
    let entries = app.store.draw_entries(id, query.status, page).await?;
    let next_after = page.next_after(&entries, |e| e.id);
    Ok(axum::Json(DrawEntryPage {
        items: entries.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// Audit a draw (admin)
///
/// The seed the winners were drawn with, every entrant, and the winners recomputed from both:
/// anyone can run the stated algorithm on `seed` and `entrants` and check that the `WON`
/// entries are these.
#[utoipa::path(get, path = "/api/v1/admin/draws/{draw_id}/audit", tag = "admin",
    params(("draw_id" = i64, Path, description = "Draw id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The draw's seed, entrants and winners", body = DrawAuditResponse,
            example = json!({"draw_id": 12, "quantity": 2,
                "seed": "9f2c4e0d7a1b3c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6",
                "algorithm": ALGORITHM, "entrants": [3, 8, 42], "winners": [42, 3]})),
        (status = 404, description = "DRAW_NOT_FOUND"),
    ))]
pub async fn audit_draw<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    params: PathParams,
) -> Result<axum::Json<DrawAuditResponse>> {
    let id = draw_id(&params)?;
    let found = app.store.draw(id).await?.ok_or(Error::DrawNotFound)?;
    let entrants = app.store.draw_entrants(id).await?;
    let winners = match found.seed.as_deref().and_then(parse_seed) {
        Some(seed) => draw::choose_winners(&entrants, found.quantity, &seed),
        None => Vec::new(),
    };
    Ok(axum::Json(DrawAuditResponse {
        draw_id: id.0,
        quantity: found.quantity,
        seed: found.seed,
        algorithm: ALGORITHM.to_owned(),
        entrants: entrants.iter().map(|u| u.0).collect(),
        winners: winners.iter().map(|u| u.0).collect(),
    }))
}

/// List the draws not drawn yet
///
/// Newest first: scheduled, open and closed draws (a drawn one leaves the list; it stays
/// readable by id).
#[utoipa::path(get, path = "/api/v1/draws", tag = "draws", params(PageQuery),
    responses(
        (status = 200, description = "Draws not drawn yet, newest first", body = DrawPage,
            example = json!({"items": [draw_example()], "next_after": null})),
    ))]
pub async fn list_draws<S: Store>(
    State(app): State<AppState<S>>,
    Paging(page): Paging,
) -> Result<axum::Json<DrawPage>> {
    draw_page(&app, true, page).await
}

/// Get a draw
///
/// Any draw, drawn ones too; `status` is computed from the clock.
#[utoipa::path(get, path = "/api/v1/draws/{draw_id}", tag = "draws",
    params(("draw_id" = i64, Path, description = "Draw id")),
    responses(
        (status = 200, description = "The draw", body = DrawResponse, example = draw_example),
        (status = 404, description = "DRAW_NOT_FOUND"),
    ))]
pub async fn get_draw<S: Store>(
    State(app): State<AppState<S>>,
    params: PathParams,
) -> Result<axum::Json<DrawResponse>> {
    let id = draw_id(&params)?;
    let found = app.store.draw(id).await?.ok_or(Error::DrawNotFound)?;
    Ok(axum::Json(DrawResponse::new(found, Timestamp::now())))
}

/// Enter a draw
///
/// No body. One entry per user, also under simultaneous requests; when you enter plays no part
/// in who wins. `ALREADY_ENTERED` is answered before `DRAW_NOT_OPEN`.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/draws/{draw_id}/entries", tag = "draws",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token"),
        ("draw_id" = i64, Path, description = "Draw id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Entered", body = DrawEntryResponse,
            headers(("Location" = String, description = "The entry's path, `/api/v1/users/{user_id}/draws/{draw_id}/entry`")),
            example = entry_example),
        (status = 404, description = "DRAW_NOT_FOUND"),
        (status = 409, description = "ALREADY_ENTERED, DRAW_NOT_OPEN"),
    ))]
pub async fn enter_draw<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
) -> Result<Created<DrawEntryResponse>> {
    let id = draw_id(&scope.params)?;
    let read = app.draw_entries.draw(&app.store, id).await?;
    draw::check_entry_in(&app.store, scope.addressed(), read, Timestamp::now()).await?;
    let entry = match enter_batched(&app, id, scope.user_id).await {
        // The window closed between the check and the batch: the closed draw's answer.
        Err(Error::DrawNotOpen) => Err(draw::closed_entry_error(&app.store, id, scope.user_id).await?),
        other => other,
    }?;
    metrics::counter!("draw_entries_total").increment(1);
    Ok(Created(
        format!("/api/v1/users/{}/draws/{}/entry", scope.user_id, id),
        entry.into(),
    ))
}

/// Get the user's entry in a draw
///
/// `ENTERED` until the draw, then `WON` (with the order to pay) or `LOST`.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/draws/{draw_id}/entry", tag = "draws",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token"),
        ("draw_id" = i64, Path, description = "Draw id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The entry", body = DrawEntryResponse, example = entry_example),
        (status = 404, description = "DRAW_NOT_FOUND, ENTRY_NOT_FOUND"),
    ))]
pub async fn get_draw_entry<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
) -> Result<axum::Json<DrawEntryResponse>> {
    let id = draw_id(&scope.params)?;
    let entry = draw::entry_of(&app.store, scope.addressed(), id).await?;
    Ok(axum::Json(entry.into()))
}
