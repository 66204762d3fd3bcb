//! The OpenAPI document, built from the same lists that mount the routes.
//!
//! **One edit per endpoint.** A handler carries its `#[utoipa::path]` (method, path, parameters,
//! success answer with an example, the error codes it answers beyond the common ones) and its
//! `///` doc comment (summary, then description). Its resource module names it once, in
//! [`operations!`], which generates both the module's `routes::<S>()` (each handler mounted at the
//! path and method of its attribute) and its `document()` (the same operations added to the
//! document). `crate::resources!` lists the modules once for both. A test compares the router's
//! routes with the document's operations, so a route cannot be left undocumented.
//!
//! Why not utoipa-axum's `OpenApiRouter` and `routes!`: `routes!` resolves a handler's
//! `__path_*` type from its path tokens and cannot take a generic handler such as
//! `create_order::<S>` (utoipa issue 1234), and its document comes out of the router it built
//! (`split_for_parts`), so building the document would need a concrete `Store`. The document is
//! needed with no database at all (`ecommerce openapi`, the committed `docs/openapi.json`), so
//! the two halves are generated from one list instead. Like utoipa-axum, this reads the
//! `__path_*` types through `utoipa::Path` and the hidden `utoipa::__dev` traits, which utoipa
//! generates for exactly this use; utoipa is pinned by the lock file.
//!
//! **Common answers are added here, not on each handler** ([`complete`]): 401 for operations
//! with a token, 403 for `/users/{user_id}/…` and admin operations, 404 `USER_NOT_FOUND` for
//! `/users/{user_id}/…`, 400 for operations with parameters or a body, 413 and 415 for a body,
//! 409 `REQUEST_IN_PROGRESS` and 422 `IDEMPOTENCY_KEY_REUSED` where `Idempotency-Key` is taken,
//! 500 and 503 everywhere. An operation's own error answers are written as
//! `(status = 409, description = "ORDER_NOT_PENDING, ORDER_EXPIRED")`: a list of codes, which
//! become one named example each (a real problem document, from [`catalogue`]).
//!
//! **The HTTP layer's headers are documented here too** ([`document_caching`]), from the same
//! route rule the layer applies ([`crate::http_cache::caching`]): `If-None-Match`, `ETag` and
//! `304` on catalog reads, the `Cache-Control` of every `/api/v1` answer, `WWW-Authenticate` on
//! every 401 and `Idempotent-Replayed` where an `Idempotency-Key` is taken.

use std::collections::BTreeMap;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use ecommerce_domain::Error;
use ecommerce_domain::store::Store;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{OpenApi as _, Path, ToSchema as _};

use crate::{ApiError, AppState, PROBLEM, Problem};

/// Declares a resource module's operations once. Each entry is a handler with a
/// `#[utoipa::path]` attribute, written `name::<S>` when it is generic over the store. Expands to
/// `pub fn routes<S: Store>() -> Router<AppState<S>>` and `pub(crate) fn document(&mut OpenApi)`.
macro_rules! operations {
    ($($handler:ident $(::<$store:ident>)?),+ $(,)?) => {
        /// This module's routes, each at the path and method of its `#[utoipa::path]`.
        pub fn routes<S: ecommerce_domain::store::Store>() -> axum::Router<$crate::AppState<S>> {
            let router = axum::Router::new();
            $(
                let router = pastey::paste! {
                    $crate::openapi::mount::<[<__path_ $handler>], _, _, S>(router, $handler $(::<$store>)?)
                };
            )+
            router
        }

        /// Adds this module's operations to the OpenAPI document.
        pub(crate) fn document(doc: &mut utoipa::openapi::OpenApi) {
            $( pastey::paste! { $crate::openapi::describe::<[<__path_ $handler>]>(doc) }; )+
        }
    };
}
pub(crate) use operations;

/// Mounts `handler` at the path and methods of its `#[utoipa::path]` type `P`.
pub(crate) fn mount<P, H, T, S>(router: Router<AppState<S>>, handler: H) -> Router<AppState<S>>
where
    P: Path,
    H: Handler<T, AppState<S>>,
    T: 'static,
    S: Store,
{
    let methods = P::methods().iter().fold(MethodRouter::new(), |methods, method| {
        methods.on(method_filter(method), handler.clone())
    });
    router.route(&P::path(), methods)
}

fn method_filter(method: &HttpMethod) -> MethodFilter {
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

/// Adds the operation of the `#[utoipa::path]` type `P`, its tags and the schemas it names.
pub(crate) fn describe<P>(doc: &mut OpenApi)
where
    P: Path + utoipa::__dev::SchemaReferences + for<'t> utoipa::__dev::Tags<'t>,
{
    let mut operation = P::operation();
    let tags = P::tags();
    if !tags.is_empty() {
        operation
            .tags
            .get_or_insert_with(Vec::new)
            .extend(tags.iter().map(ToString::to_string));
    }
    let mut schemas = Vec::new();
    P::schemas(&mut schemas);
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    doc.paths.add_path_operation(P::path(), P::methods(), operation);
}

/// The document's fixed part; the operations come from the resource modules.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ecommerce",
        description = "E-commerce API of a fashion brand platform: catalog and best sellers, a \
            server-side cart, orders paid from a prepaid KRW balance, idempotent charges and \
            first-come-first-served coupons.\n\n\
            Every error is `application/problem+json` (RFC 9457) with a stable, machine-readable \
            `code`; each error answer below lists the codes it can carry, with an example of each. \
            Lists are paged with `?limit=` (1 to 100, default 20) and `?after=` (the `next_after` \
            of the previous page). Every answer carries `X-Request-Id`: the client's own when it \
            is 1 to 64 of `[A-Za-z0-9._-]`, else a new one.",
        license(name = "MIT", identifier = "MIT"),
    ),
    servers((url = "/", description = "The server that serves this document")),
    components(schemas(Problem)),
    tags(
        (name = "accounts", description = "Sign-up and access tokens"),
        (name = "catalog", description = "Products and best sellers (no token needed)"),
        (name = "balance", description = "Prepaid KRW balance: read, charge (idempotent), history"),
        (name = "cart", description = "The server-side cart, the same on every device of the user"),
        (name = "coupons", description = "First-come-first-served coupons and the user's coupons"),
        (name = "orders", description = "Orders: create, pay, cancel, refund, read"),
        (name = "draws", description = "Draws for limited drops: enter once, winners drawn at random after the window"),
        (name = "admin", description = "Catalog, coupon and draw management, and the operator console's reads: every product, coupon, draw, order and user, live figures, sales per hour (admin token only)"),
        (name = "operations", description = "Health probes: liveness, readiness, and the database check"),
    )
)]
struct DocumentHead;

/// The OpenAPI 3.1 document of every `/api/v1` operation and `/health`.
pub fn openapi() -> OpenApi {
    build().0
}

/// The document, and what is wrong with how the operations declare their errors (a test keeps
/// that list empty).
fn build() -> (OpenApi, Vec<String>) {
    let mut doc = DocumentHead::openapi();
    crate::document_resources(&mut doc);
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("An access token from `POST /api/v1/auth/token`"))
                .build(),
        ),
    );
    components.headers.insert(
        REQUEST_ID.into(),
        HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Za-z0-9._-]{1,64}$"))
                    .build(),
            ))
            .description(Some(
                "The request's id, also in the server's log line for it: the client's \
                 `X-Request-Id` when it is 1 to 64 of `[A-Za-z0-9._-]`, else a new UUID",
            ))
            .build()
            .into(),
    );
    add_http_headers(components);
    let catalogue = catalogue();
    let mut issues = Vec::new();
    let mut used = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                complete(&method, path, operation, &catalogue, &mut used, &mut issues);
                document_caching(&method, path, operation);
            }
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    for error in catalogue.iter().filter(|e| used.contains(&e.code)) {
        let example = ExampleBuilder::new()
            .summary(error.detail.clone())
            .value(serde_json::to_value(error.problem()).ok())
            .build();
        components.examples.insert(error.code.into(), example.into());
    }
    (doc, issues)
}

const REQUEST_ID: &str = "X-Request-Id";
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
const IF_NONE_MATCH: &str = "If-None-Match";
const REPLAYED: &str = "Idempotent-Replayed";
const ETAG: &str = "ETag";
const WWW_AUTHENTICATE: &str = "WWW-Authenticate";
const RETRY_AFTER: &str = "Retry-After";
/// Component names of the `Cache-Control` header, one per value the server sends.
const CACHE_CONTROL_NO_CACHE: &str = "Cache-Control.no-cache";
const CACHE_CONTROL_POPULAR: &str = "Cache-Control.popular";
const CACHE_CONTROL_PRIVATE: &str = "Cache-Control.private";
const CACHE_CONTROL_NO_STORE: &str = "Cache-Control.no-store";

fn string_header(description: &str, example: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
        .description(Some(description))
        .example(Some(serde_json::Value::from(example)))
        .build()
}

/// The headers of the caching rules and of authentication, as components the answers point at.
fn add_http_headers(components: &mut utoipa::openapi::Components) {
    let headers = [
        (
            ETAG,
            string_header(
                "A strong validator of this answer (a hash of its body as sent, so each content \
                 coding has its own): send it back in `If-None-Match` to get `304` while nothing changed",
                "\"3f2a9c0d4e5b6a718293a4b5c6d7e8f9\"",
            ),
        ),
        (
            CACHE_CONTROL_NO_CACHE,
            string_header(
                "`no-cache`: a cache may keep the answer but must revalidate it (with `ETag`) before each use",
                "no-cache",
            ),
        ),
        (
            CACHE_CONTROL_POPULAR,
            string_header(
                "`public, max-age=<ECOMMERCE_POPULAR_CACHE_SECONDS>`: the server itself keeps the \
                 best sellers that long, so any cache may too",
                "public, max-age=5",
            ),
        ),
        (
            CACHE_CONTROL_PRIVATE,
            string_header(
                "`private, no-store`: the answer carries a user's data (or, on catalog reads with an \
                 admin token, products not yet released); no cache may keep it",
                "private, no-store",
            ),
        ),
        (
            CACHE_CONTROL_NO_STORE,
            string_header("`no-store`: errors are not cached", "no-store"),
        ),
        (
            REPLAYED,
            string_header(
                "`true` when this is the stored answer of an earlier request with the same \
                 `Idempotency-Key` and body: nothing ran again. Absent on a first run",
                "true",
            ),
        ),
        (
            WWW_AUTHENTICATE,
            string_header(
                "`Bearer`, with `error=\"invalid_token\"` when the request carried a token that is \
                 malformed, expired or revoked (RFC 6750): sign in again with `POST /api/v1/auth/token`",
                "Bearer error=\"invalid_token\"",
            ),
        ),
        (
            RETRY_AFTER,
            string_header(
                "Whole seconds (at least 1) to wait before trying again, with the same \
                 `Idempotency-Key` where one is taken: every `503` carries it (the database is \
                 unreachable or locked for a moment, the sign-in queue or the connection limit is \
                 full, or the request took too long)",
                "1",
            ),
        ),
    ];
    for (name, header) in headers {
        components.headers.insert(name.into(), header.into());
    }
    let if_none_match = ParameterBuilder::new()
        .name(IF_NONE_MATCH)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
        .description(Some(
            "The `ETag` of the copy the client holds (a list, `W/` tags and `*` are taken too): \
             while it still matches, the answer is `304` with no body",
        ))
        // No example: Swagger UI's "Try it out" would fill it in and send it.
        .build();
    components.parameters.insert(IF_NONE_MATCH.into(), if_none_match.into());
}

fn header_ref(name: &str) -> RefOr<utoipa::openapi::header::Header> {
    RefOr::Ref(Ref::new(format!("#/components/headers/{name}")))
}

/// Documents the caching rules of [`crate::http_cache`] on an operation: catalog reads take
/// `If-None-Match`, answer `ETag` and may answer `304`; every answer says its `Cache-Control`; every
/// 401 says `WWW-Authenticate`.
fn document_caching(method: &Method, path: &str, operation: &mut Operation) {
    use crate::http_cache::{Caching, POPULAR, caching};
    let caching = caching(method, path);
    let success = match caching {
        Caching::Shared if path == POPULAR => Some(CACHE_CONTROL_POPULAR),
        Caching::Shared => Some(CACHE_CONTROL_NO_CACHE),
        Caching::Private => Some(CACHE_CONTROL_PRIVATE),
        Caching::Untouched => None,
    };
    let responses = &mut operation.responses.responses;
    if caching == Caching::Shared {
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::Ref(Ref::new(format!("#/components/parameters/{IF_NONE_MATCH}"))));
        let not_modified = ResponseBuilder::new()
            .description("Not modified: the `If-None-Match` sent matches the current `ETag`; no body")
            .header_ref(REQUEST_ID, Ref::new(format!("#/components/headers/{REQUEST_ID}")))
            .build();
        responses.insert("304".into(), not_modified.into());
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let error = status.starts_with('4') || status.starts_with('5');
        let cache_control = match caching {
            Caching::Shared if error => Some(CACHE_CONTROL_NO_STORE),
            _ => success,
        };
        if let Some(name) = cache_control {
            response.headers.insert("Cache-Control".into(), header_ref(name));
        }
        if caching == Caching::Shared && !error {
            response.headers.insert(ETAG.into(), header_ref(ETAG));
        }
        if status == "401" {
            response
                .headers
                .insert(WWW_AUTHENTICATE.into(), header_ref(WWW_AUTHENTICATE));
        }
        if status == "429" {
            response.headers.insert(RETRY_AFTER.into(), header_ref(RETRY_AFTER));
        }
    }
}

/// Adds the answers every operation of its kind shares, turns code lists into problem answers
/// with one example per code, documents `X-Request-Id` on every answer, states `security: []`
/// on public operations and `minimum: 1` on every `*_id` path parameter.
fn complete(
    method: &Method,
    path: &str,
    operation: &mut Operation,
    catalogue: &[ApiError],
    used: &mut Vec<&'static str>,
    issues: &mut Vec<String>,
) {
    let name = operation.operation_id.clone().unwrap_or_else(|| path.to_owned());
    let public = SecurityRequirement::default();
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| requirements.iter().any(|r| *r != public));
    if operation.security.is_none() {
        operation.security = Some(Vec::new());
    }
    let parameters = operation.parameters.as_deref_mut().unwrap_or_default();
    let idempotency_key = parameters.iter().find_map(|p| match p {
        RefOr::T(p) if p.parameter_in == ParameterIn::Header && p.name == IDEMPOTENCY_KEY => {
            Some(p.required == Required::True)
        }
        _ => None,
    });
    let has_parameters = !parameters.is_empty();
    for parameter in parameters.iter_mut() {
        if let RefOr::T(parameter) = parameter
            && parameter.parameter_in == ParameterIn::Path
            && parameter.name.ends_with("_id")
        {
            let id = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .build();
            parameter.schema = Some(id.into());
        }
    }
    if operation.summary.is_none() || operation.description.is_none() {
        issues.push(format!("{name}: a `///` summary line and a description"));
    }
    let has_body = operation.request_body.is_some();
    if let Some(RefOr::T(body)) = &mut operation.request_body {
        body_is_an_object(body);
    }
    let user_scoped = path.contains("/users/{user_id}");
    // The limits of [`crate::rate_limit`]: sign-ups and token requests per address, changes
    // per signed-in user.
    let rate_limited = (*method == Method::POST && matches!(path, "/api/v1/users" | "/api/v1/auth/token"))
        || (secured && *method != Method::GET);

    // The operation's own codes, in the order written, then the common ones.
    let mut codes: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for (status, response) in &operation.responses.responses {
        let Ok(status) = status.parse::<u16>() else {
            continue;
        };
        if status < 400 {
            continue;
        }
        let RefOr::T(response) = response else {
            continue;
        };
        for word in response.description.split(',').map(str::trim) {
            match catalogue.iter().find(|e| e.code == word) {
                Some(error) if error.status.as_u16() == status => {
                    codes.entry(status).or_default().push(error.code);
                }
                Some(error) => issues.push(format!(
                    "{name}: {word} is a {} answer, not {status}",
                    error.status.as_u16()
                )),
                None => issues.push(format!("{name}: {word:?} under {status} is not an error code")),
            }
        }
    }
    let common = [
        (has_parameters || has_body, "VALIDATION_FAILED"),
        (idempotency_key == Some(true), "IDEMPOTENCY_KEY_MISSING"),
        (secured, "UNAUTHORIZED"),
        (user_scoped || path.starts_with("/api/v1/admin/"), "FORBIDDEN"),
        (user_scoped, "USER_NOT_FOUND"),
        (idempotency_key.is_some(), "REQUEST_IN_PROGRESS"),
        (idempotency_key.is_some(), "IDEMPOTENCY_KEY_REUSED"),
        (rate_limited, "RATE_LIMITED"),
        (has_body, "PAYLOAD_TOO_LARGE"),
        (has_body, "UNSUPPORTED_MEDIA_TYPE"),
        (true, "INTERNAL"),
        (true, "SERVICE_UNAVAILABLE"),
    ];
    for (applies, code) in common {
        let Some(error) = catalogue.iter().find(|e| e.code == code).filter(|_| applies) else {
            continue;
        };
        let list = codes.entry(error.status.as_u16()).or_default();
        if !list.contains(&code) {
            list.push(code);
        }
    }

    let responses = &mut operation.responses.responses;
    if idempotency_key.is_some()
        && let Some(RefOr::T(ok)) = responses.get_mut("200")
    {
        ok.headers.insert(REPLAYED.into(), header_ref(REPLAYED));
    }
    for (status, list) in codes {
        used.extend(&list);
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(Problem::name())))
            .examples_from_iter(
                list.iter()
                    .map(|code| (*code, RefOr::Ref(Ref::new(format!("#/components/examples/{code}"))))),
            )
            .build();
        let mut response = ResponseBuilder::new()
            .description(list.join(", "))
            .content(PROBLEM, content)
            .build();
        if status == 503 {
            response.headers.insert(RETRY_AFTER.into(), header_ref(RETRY_AFTER));
        }
        responses.insert(status.to_string(), response.into());
    }
    for response in responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                REQUEST_ID.into(),
                RefOr::Ref(Ref::new(format!("#/components/headers/{REQUEST_ID}"))),
            );
        }
    }
}

/// utoipa marks an optional body (`Option<T>`) as `oneOf: [T, null]`, but a JSON `null` is no
/// body at all for our extractors (a body must be an object): keep `T`, with `required: false`.
fn body_is_an_object(body: &mut utoipa::openapi::request_body::RequestBody) {
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else {
            continue;
        };
        if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
            let mut kept = one_of.items.iter().filter(|item| !is_null_type(item));
            if let (Some(only), None) = (kept.next(), kept.next()) {
                content.schema = Some(only.clone());
            }
        }
    }
}

fn is_null_type(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(object)) if object.schema_type == SchemaType::Type(Type::Null))
}

/// Every error code an operation can answer, as the server answers it: the examples of the
/// document are these problem documents.
fn catalogue() -> Vec<ApiError> {
    use axum::http::StatusCode as S;
    vec![
        ApiError::validation("limit must be between 1 and 100"),
        Error::InvalidChargeAmount.into(),
        Error::BalanceLimitExceeded.into(),
        ApiError::new(
            S::BAD_REQUEST,
            "IDEMPOTENCY_KEY_MISSING",
            "send an Idempotency-Key header",
        ),
        Error::CartEmpty.into(),
        ApiError::unauthorized(),
        Error::InvalidCredentials.into(),
        ApiError::forbidden(),
        Error::UserNotFound.into(),
        Error::ProductNotFound.into(),
        Error::CouponNotFound.into(),
        Error::OrderNotFound.into(),
        Error::EmailTaken.into(),
        ApiError::new(S::CONFLICT, "OUT_OF_STOCK", "not enough stock for product 7"),
        ApiError::new(S::CONFLICT, "PRODUCT_NOT_ON_SALE", "product 7 is not on sale"),
        Error::InsufficientBalance.into(),
        Error::CouponAlreadyIssued.into(),
        Error::CouponSoldOut.into(),
        Error::CouponAlreadyUsed.into(),
        Error::CouponExpired.into(),
        Error::OrderExpired.into(),
        Error::OrderNotPending.into(),
        Error::OrderNotPaid.into(),
        Error::DrawNotFound.into(),
        Error::EntryNotFound.into(),
        Error::DrawNotOpen.into(),
        Error::AlreadyEntered.into(),
        Error::RequestInProgress.into(),
        Error::IdempotencyKeyReused.into(),
        Error::TooManyPendingOrders(ecommerce_domain::order::MAX_PENDING_ORDERS).into(),
        Error::CartFull(ecommerce_domain::cart::MAX_CART_LINES).into(),
        Error::RateLimited { retry_after_seconds: 2 }.into(),
        ApiError::new(
            S::CONFLICT,
            "PURCHASE_LIMIT_EXCEEDED",
            "this purchase would pass the limit per customer of product 7",
        ),
        Error::CouponNotIssuable.into(),
        ApiError::new(
            S::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "the request body is larger than 64 KiB",
        ),
        ApiError::new(
            S::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with Content-Type: application/json",
        ),
        ApiError::new(
            S::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "the server failed to handle this request",
        ),
        ApiError::unavailable("the database is unavailable; try again shortly"),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::StatusCode;
    use ecommerce_store::{PoolOptions, SqliteStore};
    use tower::ServiceExt;

    use super::*;
    use crate::{ApiConfig, router};

    fn document() -> serde_json::Value {
        serde_json::to_value(openapi()).expect("the document serializes")
    }

    /// Method and path of every operation of the document.
    fn documented() -> BTreeSet<(String, String)> {
        let doc = document();
        let mut operations = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "put", "post", "delete", "patch"] {
                if item.get(method).is_some() {
                    operations.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        operations
    }

    /// Routes that are deliberately not in the document.
    const UNDOCUMENTED: &[(&str, &str)] = &[
        ("GET", "/metrics"),
        ("GET", "/api-docs/openapi.json"),
        ("GET", "/api-docs/asyncapi.json"),
        ("GET", "/swagger-ui"),
        ("GET", "/swagger-ui/"),
        ("GET", "/swagger-ui/{*rest}"),
        // The operator console's page (its assets are matched by a wildcard the test does not probe).
        ("GET", "/admin"),
        ("GET", "/admin/"),
    ];

    /// A SQLite file that is removed afterwards.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new() -> Self {
            Self(std::env::temp_dir().join(format!("ecommerce-api-{}.db", uuid::Uuid::new_v4())))
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.0.display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut path = self.0.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Every (method, path) the service's router answers: the paths as the router lists them
    /// (its `Debug` form is the only listing axum offers), the methods by asking each path.
    async fn routed(app: &Router) -> BTreeSet<(String, String)> {
        let listing = format!("{app:?}");
        let paths: BTreeSet<&str> = listing
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with('/') && !s.contains("__private__"))
            .collect();
        assert!(paths.contains("/health"), "the router lists its paths: {listing}");
        let mut routes = BTreeSet::new();
        for path in paths {
            let uri: String = path
                .split('/')
                .map(|segment| match segment {
                    s if s.starts_with("{*") => "index.html",
                    s if s.starts_with('{') => "1",
                    s => s,
                })
                .collect::<Vec<_>>()
                .join("/");
            for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
                let request = Request::builder()
                    .method(method)
                    .uri(&uri)
                    .body(Body::empty())
                    .expect("a valid request");
                let response = app.clone().oneshot(request).await.expect("the router never fails");
                let status = response.status();
                let body = to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
                let code = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned));
                let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                    || (status == StatusCode::NOT_FOUND && code.as_deref() == Some("NOT_FOUND"));
                if !unrouted {
                    routes.insert((method.to_owned(), path.to_owned()));
                }
            }
        }
        routes
    }

    #[tokio::test]
    async fn the_router_serves_exactly_the_documented_operations_and_the_listed_extras() {
        let db = TempDb::new();
        let store = SqliteStore::connect(&db.url(), PoolOptions::default())
            .await
            .expect("a SQLite file");
        let state = AppState::new(store, &[7; 32], ApiConfig::default(), None);
        let routes = routed(&router(state)).await;
        let mut expected = documented();
        expected.extend(UNDOCUMENTED.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())));
        let undocumented: Vec<_> = routes.difference(&expected).collect();
        let unrouted: Vec<_> = expected.difference(&routes).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes missing from the document: {undocumented:?}; documented or listed but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn every_operation_has_a_summary_a_description_and_known_error_codes() {
        let (_, issues) = build();
        assert!(issues.is_empty(), "{issues:#?}");
    }

    #[test]
    fn paging_and_filters_are_query_parameters() {
        let doc = document();
        let mut seen = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("path item").values() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if ["limit", "after", "days", "status", "email", "hours"]
                        .contains(&parameter["name"].as_str().unwrap_or(""))
                    {
                        assert_eq!(parameter["in"], "query", "{parameter}");
                        assert_ne!(parameter["required"], true, "{parameter}");
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(
            seen, 33,
            "the lists take limit and after, popular days and limit, five lists status, \
             the admin user list email, the hourly sales hours"
        );
    }

    #[test]
    fn every_error_answer_has_one_named_example_per_code() {
        let doc = document();
        let examples = doc["components"]["examples"].as_object().expect("examples");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    if !status.starts_with('4') && !status.starts_with('5') {
                        continue;
                    }
                    let codes: Vec<&str> = response["description"].as_str().unwrap_or("").split(", ").collect();
                    let named = response["content"][PROBLEM]["examples"].as_object().expect("examples");
                    assert_eq!(named.len(), codes.len(), "{method} {path} {status}");
                    for code in codes {
                        let example = &examples[code]["value"];
                        assert_eq!(example["code"], code, "{method} {path} {status}");
                        assert_eq!(example["status"].to_string(), *status, "{method} {path}");
                        assert!(named.contains_key(code), "{method} {path} {status} {code}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_caching_and_authentication_headers_are_documented_where_the_server_sends_them() {
        let doc = document();
        let mut catalog_reads = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = operation["responses"].as_object().expect("responses");
                let takes_if_none_match = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["$ref"] == "#/components/parameters/If-None-Match");
                let catalog_read = method == "get"
                    && ["/api/v1/products", "/api/v1/coupons", "/api/v1/draws"]
                        .iter()
                        .any(|p| path.starts_with(p));
                assert_eq!(takes_if_none_match, catalog_read, "{method} {path}");
                assert_eq!(responses.contains_key("304"), catalog_read, "{method} {path}");
                if catalog_read {
                    catalog_reads += 1;
                    for status in ["200", "304"] {
                        assert!(
                            responses[status]["headers"].get("ETag").is_some(),
                            "{method} {path} {status}"
                        );
                    }
                }
                for (status, response) in responses {
                    let headers = &response["headers"];
                    if path.starts_with("/api/v1/") {
                        let cache_control = headers["Cache-Control"]["$ref"].as_str().unwrap_or_default();
                        assert!(
                            cache_control.starts_with("#/components/headers/Cache-Control."),
                            "{method} {path} {status}"
                        );
                    }
                    assert_eq!(
                        headers.get("WWW-Authenticate").is_some(),
                        status == "401",
                        "{method} {path} {status}"
                    );
                    if status == "503" {
                        assert!(headers.get("Retry-After").is_some(), "{method} {path} {status}");
                    }
                }
            }
        }
        assert!(
            catalog_reads >= 5,
            "products, popular, one product, coupons, one coupon"
        );
        let popular = &doc["paths"]["/api/v1/products/popular"]["get"]["responses"]["200"]["headers"];
        assert_eq!(
            popular["Cache-Control"]["$ref"],
            "#/components/headers/Cache-Control.popular"
        );
    }

    /// `docs/openapi.json` is what the server serves; `UPDATE_OPENAPI=1` rewrites it.
    #[test]
    fn the_committed_openapi_json_is_the_served_document() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let mut current = serde_json::to_string_pretty(&openapi()).expect("the document serializes");
        current.push('\n');
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(&path, &current).expect("docs/openapi.json is writable");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == current,
            "docs/openapi.json differs from ecommerce_api::openapi(); regenerate it with\n\
             UPDATE_OPENAPI=1 cargo test -p ecommerce-api openapi\nand commit it"
        );
    }
}
