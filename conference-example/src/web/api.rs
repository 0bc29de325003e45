//! The JSON API: the application layer over HTTP, for tests and other clients.

use std::str::FromStr;
use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cqrs_core::{Aggregate, LogCursor, LogQuery, LoggedMessage, MessageKind, StreamId};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::{NewConference, PaymentStep};
use crate::domain::{
    AccessCode, Conference, ConferenceCommand, ConferenceDetails, ConferenceId, Order, OrderId,
    Owner, PaymentId, PersonalInfo, SeatQuantity, SeatType, SeatTypeId, SeatsAvailability,
};
use crate::read::{ConferenceView, DraftOrder, DraftOrderState};
use crate::web::WebState;
use crate::web::error::ApiError;
use crate::web::extract::{
    ApiJson, ApiPath, ApiQuery, Credentials, MaybeCredentials, forbidden, refused, unauthorized,
};
use crate::web::throttle::{self, Client};

type ApiResult<T> = Result<T, ApiError>;

/// The API's routes, under `/api`.
pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route(
            "/api/conferences",
            post(create_conference).get(published_conferences),
        )
        .route(
            "/api/conferences/{key}",
            get(conference).put(update_conference),
        )
        .route("/api/conferences/{key}/seat-types", post(add_seat_type))
        .route(
            "/api/conferences/{key}/seat-types/{seat_type}",
            put(update_seat_type).delete(delete_seat_type),
        )
        .route("/api/conferences/{key}/publish", post(publish))
        .route("/api/conferences/{key}/unpublish", post(unpublish))
        .route(
            "/api/conferences/{key}/access-code",
            post(change_access_code),
        )
        .route(
            "/api/conferences/{key}/orders",
            get(conference_orders).post(place_order),
        )
        .route("/api/orders/find", get(find_order))
        .route("/api/orders/{order}", get(order))
        .route(
            "/api/orders/{order}/seats",
            put(update_order_seats).get(order_seats),
        )
        .route(
            "/api/orders/{order}/seats/{position}",
            put(assign_seat).delete(unassign_seat),
        )
        .route("/api/orders/{order}/registrant", post(assign_registrant))
        .route("/api/orders/{order}/confirm", post(confirm_free_order))
        .route("/api/orders/{order}/payments", post(start_payment))
        .route("/api/payments/{payment}/complete", post(complete_payment))
        .route("/api/payments/{payment}/cancel", post(cancel_payment))
        .route("/api/messages", get(messages))
        .route("/metrics", get(prometheus_metrics))
        .route("/api/admin/projections", get(projections))
        .route("/api/admin/projections/upgrade", post(upgrade_projections))
}

// ----- bodies -----

/// A decimal given as a JSON number or string.
fn decimal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(serde_json::Number),
        Text(String),
    }
    let text = match Either::deserialize(deserializer)? {
        Either::Number(n) => n.to_string(),
        Either::Text(t) => t,
    };
    Decimal::from_str(text.trim())
        .or_else(|_| Decimal::from_scientific(text.trim()))
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a decimal number")))
}

/// A time given as an RFC 3339 date-time, or as a date (its midnight, UTC).
fn date_or_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if let Ok(time) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(time.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is neither a date (2026-09-14) nor a date-time (2026-09-14T09:00:00Z)"
            ))
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConferenceBody {
    name: String,
    slug: String,
    description: String,
    location: String,
    #[serde(default)]
    tagline: String,
    #[serde(default)]
    twitter_search: String,
    #[serde(deserialize_with = "date_or_time")]
    start_date: DateTime<Utc>,
    #[serde(deserialize_with = "date_or_time")]
    end_date: DateTime<Utc>,
    owner_name: String,
    owner_email: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConferenceUpdateBody {
    name: String,
    description: String,
    location: String,
    #[serde(default)]
    tagline: String,
    #[serde(default)]
    twitter_search: String,
    #[serde(deserialize_with = "date_or_time")]
    start_date: DateTime<Utc>,
    #[serde(deserialize_with = "date_or_time")]
    end_date: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeatTypeBody {
    name: String,
    description: String,
    #[serde(deserialize_with = "decimal")]
    price: Decimal,
    quantity: u32,
}

impl From<SeatTypeBody> for SeatType {
    fn from(body: SeatTypeBody) -> Self {
        Self {
            name: body.name,
            description: body.description,
            quantity: body.quantity,
            price: body.price,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeatBody {
    seat_type_id: SeatTypeId,
    quantity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    order_id: Option<OrderId>,
    seats: Vec<SeatBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeatsBody {
    seats: Vec<SeatBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonBody {
    first_name: String,
    last_name: String,
    email: String,
}

impl From<PersonBody> for PersonalInfo {
    fn from(body: PersonBody) -> Self {
        Self {
            first_name: body.first_name,
            last_name: body.last_name,
            email: body.email,
        }
    }
}

fn seats(body: Vec<SeatBody>) -> Vec<SeatQuantity> {
    body.into_iter()
        .map(|s| SeatQuantity::new(s.seat_type_id, s.quantity))
        .collect()
}

// ----- answers -----

#[derive(Debug, Serialize)]
struct SeatTypeJson {
    id: SeatTypeId,
    name: String,
    description: String,
    price: Decimal,
    quantity: u32,
    available: Option<i64>,
}

fn conference_json(view: &ConferenceView, owner: bool) -> serde_json::Value {
    let seat_types: Vec<SeatTypeJson> = view
        .seat_types
        .values()
        .filter(|s| owner || s.on_sale)
        .map(|s| SeatTypeJson {
            id: s.id,
            name: s.name.clone(),
            description: s.description.clone(),
            price: s.price,
            quantity: s.quantity,
            available: s.available.map(|a| a.max(0)),
        })
        .collect();
    json!({
        "id": view.id,
        "slug": view.slug,
        "name": view.details.name,
        "description": view.details.description,
        "location": view.details.location,
        "tagline": view.details.tagline,
        "twitter_search": view.details.twitter_search,
        "start_date": view.details.start_date,
        "end_date": view.details.end_date,
        "published": view.published,
        "seat_types": seat_types,
    })
}

/// A draft order's status as the API names it.
#[must_use]
pub fn status_name(state: DraftOrderState) -> &'static str {
    match state {
        DraftOrderState::PendingReservation => "pending_reservation",
        DraftOrderState::PartiallyReserved => "partially_reserved",
        DraftOrderState::ReservationCompleted => "reservation_completed",
        DraftOrderState::Confirmed => "confirmed",
        DraftOrderState::Expired => "expired",
    }
}

// ----- owners -----

/// The conference `id`, if `credentials` are its owner's.
fn owned(
    state: &WebState,
    id: ConferenceId,
    credentials: Option<Credentials>,
) -> ApiResult<ConferenceView> {
    let view = state
        .app
        .conference(id)
        .ok_or_else(|| ApiError::not_found(format!("conference {id} not found")))?;
    match credentials {
        None => Err(unauthorized()),
        Some(Credentials::Operator { token, .. })
            if state.operator_token.as_deref() == Some(token.as_str()) =>
        {
            Ok(view)
        }
        Some(Credentials::Owner {
            email, access_code, ..
        }) if view.owner.email.eq_ignore_ascii_case(&email)
            && AccessCode::from_str(&access_code).is_ok_and(|c| c == view.access_code) =>
        {
            Ok(view)
        }
        Some(other) => Err(refused(state, &other)),
    }
}

fn conference_id(key: &str) -> ApiResult<ConferenceId> {
    key.parse()
        .map_err(|_| ApiError::invalid(format!("{key:?} is not a conference id")))
}

async fn create_conference(
    State(state): State<WebState>,
    ApiJson(body): ApiJson<ConferenceBody>,
) -> ApiResult<Response> {
    let (id, access_code) = state
        .app
        .create_conference(NewConference {
            slug: body.slug.clone(),
            details: ConferenceDetails {
                name: body.name,
                description: body.description,
                location: body.location,
                tagline: body.tagline,
                twitter_search: body.twitter_search,
                start_date: body.start_date,
                end_date: body.end_date,
            },
            owner: Owner {
                name: body.owner_name,
                email: body.owner_email,
            },
        })
        .await?;
    state.wait_for_conference(id).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "slug": body.slug, "access_code": access_code })),
    )
        .into_response())
}

async fn update_conference(
    State(state): State<WebState>,
    ApiPath(key): ApiPath<String>,
    MaybeCredentials(credentials): MaybeCredentials,
    ApiJson(body): ApiJson<ConferenceUpdateBody>,
) -> ApiResult<Response> {
    let id = conference_id(&key)?;
    owned(&state, id, credentials)?;
    state
        .app
        .manage(
            id,
            ConferenceCommand::Update {
                details: ConferenceDetails {
                    name: body.name,
                    description: body.description,
                    location: body.location,
                    tagline: body.tagline,
                    twitter_search: body.twitter_search,
                    start_date: body.start_date,
                    end_date: body.end_date,
                },
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_seat_type(
    State(state): State<WebState>,
    ApiPath(key): ApiPath<String>,
    MaybeCredentials(credentials): MaybeCredentials,
    ApiJson(body): ApiJson<SeatTypeBody>,
) -> ApiResult<Response> {
    let id = conference_id(&key)?;
    owned(&state, id, credentials)?;
    let seat_type = state.app.add_seat_type(id, body.into()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": seat_type }))).into_response())
}

async fn update_seat_type(
    State(state): State<WebState>,
    ApiPath((key, seat_type)): ApiPath<(String, SeatTypeId)>,
    MaybeCredentials(credentials): MaybeCredentials,
    ApiJson(body): ApiJson<SeatTypeBody>,
) -> ApiResult<Response> {
    let id = conference_id(&key)?;
    owned(&state, id, credentials)?;
    state
        .app
        .manage(
            id,
            ConferenceCommand::UpdateSeatType {
                seat_type,
                seats: body.into(),
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_seat_type(
    State(state): State<WebState>,
    ApiPath((key, seat_type)): ApiPath<(String, SeatTypeId)>,
    MaybeCredentials(credentials): MaybeCredentials,
) -> ApiResult<Response> {
    let id = conference_id(&key)?;
    owned(&state, id, credentials)?;
    state
        .app
        .manage(id, ConferenceCommand::DeleteSeatType { seat_type })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn publish(
    State(state): State<WebState>,
    ApiPath(key): ApiPath<String>,
    MaybeCredentials(credentials): MaybeCredentials,
) -> ApiResult<Response> {
    set_published(&state, &key, credentials, ConferenceCommand::Publish).await
}

async fn unpublish(
    State(state): State<WebState>,
    ApiPath(key): ApiPath<String>,
    MaybeCredentials(credentials): MaybeCredentials,
) -> ApiResult<Response> {
    set_published(&state, &key, credentials, ConferenceCommand::Unpublish).await
}

/// Publishes or unpublishes, and answers once the directory shows it.
async fn set_published(
    state: &WebState,
    key: &str,
    credentials: Option<Credentials>,
    command: ConferenceCommand,
) -> ApiResult<Response> {
    let id = conference_id(key)?;
    owned(state, id, credentials)?;
    state.app.manage(id, command).await?;
    state.wait_for_conference(id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new access code for the conference: the old one opens nothing from now on (portal
/// sessions opened with it end).
async fn change_access_code(
    State(state): State<WebState>,
    ApiPath(key): ApiPath<String>,
    MaybeCredentials(credentials): MaybeCredentials,
) -> ApiResult<Json<serde_json::Value>> {
    let id = conference_id(&key)?;
    owned(&state, id, credentials)?;
    let code = state.app.change_access_code(id).await?;
    state.wait_for_conference(id).await;
    Ok(Json(json!({ "access_code": code })))
}

/// `?after=&limit=` of a list: `after` is the `next` of the page before.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    after: Option<Uuid>,
    limit: Option<usize>,
}

impl PageQuery {
    /// The page's size: 100 unless asked, at most 1,000.
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 1_000)
    }
}

async fn conference_orders(
    State(state): State<WebState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
    MaybeCredentials(credentials): MaybeCredentials,
) -> ApiResult<Json<serde_json::Value>> {
    let id = conference_id(&key)?;
    owned(&state, id, credentials)?;
    let page = state
        .app
        .conference_orders_page(id, page.after.map(OrderId), page.limit());
    let orders: Vec<serde_json::Value> = page
        .items
        .into_iter()
        .map(|o| {
            json!({
                "order_id": o.order,
                "access_code": o.access_code,
                "registrant_name": o.registrant_name,
                "registrant_email": o.registrant_email,
                "total": o.total,
                "status": match o.status { crate::read::PaymentStatus::Paid => "paid", crate::read::PaymentStatus::Pending => "pending" },
                "seats": o.seats.iter().map(|s| json!({
                    "position": s.position,
                    "seat_type_id": s.seat_type,
                    "seat_name": s.seat_name,
                    "attendee": s.attendee.as_ref().map(person_json),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "orders": orders, "next": page.next })))
}

// ----- registrants -----

async fn published_conferences(
    State(state): State<WebState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Json<serde_json::Value> {
    let page = state
        .app
        .published_conferences_page(page.after.map(ConferenceId), page.limit());
    let conferences: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "slug": c.slug,
                "name": c.details.name,
                "tagline": c.details.tagline,
                "location": c.details.location,
                "start_date": c.details.start_date,
            })
        })
        .collect();
    Json(json!({ "conferences": conferences, "next": page.next }))
}

async fn conference(
    State(state): State<WebState>,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    state
        .app
        .conference_by_slug(&slug)
        .filter(|c| c.published)
        .map(|c| Json(conference_json(&c, false)))
        .ok_or_else(|| ApiError::not_found(format!("conference {slug:?} not found")))
}

async fn place_order(
    State(state): State<WebState>,
    client: Client,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<OrderBody>,
) -> ApiResult<Response> {
    state.order_allowed(client)?;
    let conference = state
        .app
        .conference_by_slug(&slug)
        .filter(|c| c.published)
        .ok_or_else(|| ApiError::not_found(format!("conference {slug:?} not found")))?;
    let order = body.order_id.unwrap_or_default();
    state
        .app
        .place_order_as(order, conference.id, seats(body.seats))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "order_id": order }))).into_response())
}

async fn update_order_seats(
    State(state): State<WebState>,
    client: Client,
    ApiPath(order): ApiPath<OrderId>,
    ApiJson(body): ApiJson<SeatsBody>,
) -> ApiResult<Response> {
    state.order_allowed(client)?;
    state.app.update_order(order, seats(body.seats)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "order_id": order }))).into_response())
}

#[derive(Debug, Deserialize)]
struct OrderQuery {
    min_version: Option<u64>,
}

async fn order(
    State(state): State<WebState>,
    ApiPath(order): ApiPath<OrderId>,
    ApiQuery(query): ApiQuery<OrderQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let draft = state
        .draft_at_least(order, query.min_version.unwrap_or(0))
        .await?;
    Ok(Json(order_json(&state, &draft)))
}

fn order_json(state: &WebState, draft: &DraftOrder) -> serde_json::Value {
    let priced = state.app.priced_order(draft.order);
    let slug = state.app.conference(draft.conference).map(|c| c.slug);
    let has_seats = state.app.order_seats(draft.order).is_some();
    json!({
        "order_id": draft.order,
        "conference_slug": slug,
        "status": status_name(draft.state),
        "version": draft.version,
        "lines": draft.items.iter().map(|i| json!({
            "seat_type_id": i.seat_type,
            "requested": i.requested,
            "reserved": i.reserved,
        })).collect::<Vec<_>>(),
        "total": priced.as_ref().map(|p| p.total),
        "is_free_of_charge": priced.as_ref().and_then(|p| p.is_free_of_charge),
        "access_code": draft.access_code,
        "reservation_expires_at": draft.reservation_expires_at,
        "registrant": draft.registrant.as_ref().map(person_json),
        "assignments_id": has_seats.then_some(draft.order),
    })
}

fn person_json(person: &PersonalInfo) -> serde_json::Value {
    json!({ "first_name": person.first_name, "last_name": person.last_name, "email": person.email })
}

async fn assign_registrant(
    State(state): State<WebState>,
    ApiPath(order): ApiPath<OrderId>,
    ApiJson(body): ApiJson<PersonBody>,
) -> ApiResult<Response> {
    state.app.assign_registrant(order, body.into()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn confirm_free_order(
    State(state): State<WebState>,
    ApiPath(order): ApiPath<OrderId>,
) -> ApiResult<Response> {
    match state.app.priced_order(order) {
        Some(priced) if priced.is_free_of_charge == Some(false) => {
            return Err(ApiError::conflict(
                "not_free",
                "the order is not free: pay for it",
            ));
        }
        None => return Err(ApiError::not_found(format!("order {order} not found"))),
        Some(_) => {}
    }
    match state.app.start_payment(order).await? {
        PaymentStep::ConfirmedFree => Ok(StatusCode::NO_CONTENT.into_response()),
        PaymentStep::Started(_) => Err(ApiError::conflict(
            "not_free",
            "the order is not free: pay for it",
        )),
    }
}

async fn start_payment(
    State(state): State<WebState>,
    ApiPath(order): ApiPath<OrderId>,
) -> ApiResult<Response> {
    match state.app.start_payment(order).await? {
        PaymentStep::Started(payment) => {
            Ok((StatusCode::CREATED, Json(json!({ "payment_id": payment }))).into_response())
        }
        PaymentStep::ConfirmedFree => Ok((
            StatusCode::OK,
            Json(json!({ "payment_id": null, "confirmed": true })),
        )
            .into_response()),
    }
}

async fn complete_payment(
    State(state): State<WebState>,
    ApiPath(payment): ApiPath<PaymentId>,
) -> ApiResult<Response> {
    state.app.complete_payment(payment).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn cancel_payment(
    State(state): State<WebState>,
    ApiPath(payment): ApiPath<PaymentId>,
) -> ApiResult<Response> {
    state.app.cancel_payment(payment).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct FindQuery {
    email: String,
    access_code: String,
}

async fn find_order(
    State(state): State<WebState>,
    client: Client,
    ApiQuery(query): ApiQuery<FindQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let code = AccessCode::from_str(&query.access_code).map_err(ApiError::invalid)?;
    let keys = throttle::keys("order", &query.email, client);
    let draft = state
        .throttle
        .attempt(&keys, || state.app.locate_order(&query.email, &code).ok())
        .map_err(ApiError::too_many_attempts)?
        .ok_or_else(|| ApiError::not_found("no order with this email and access code"))?;
    Ok(Json(json!({ "order_id": draft.order })))
}

async fn order_seats(
    State(state): State<WebState>,
    ApiPath(order): ApiPath<OrderId>,
) -> ApiResult<Json<serde_json::Value>> {
    let seats = state
        .app
        .order_seats(order)
        .ok_or_else(|| ApiError::not_found(format!("seats of order {order} not found")))?;
    Ok(Json(json!({
        "order_id": order,
        "seats": seats.iter().map(|s| json!({
            "position": s.position,
            "seat_type_id": s.seat_type,
            "seat_name": s.seat_name,
            "attendee": s.attendee.as_ref().map(person_json),
        })).collect::<Vec<_>>(),
    })))
}

async fn assign_seat(
    State(state): State<WebState>,
    ApiPath((order, position)): ApiPath<(OrderId, u32)>,
    ApiJson(body): ApiJson<PersonBody>,
) -> ApiResult<Response> {
    state
        .app
        .assign_seat(order, position, Some(body.into()))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unassign_seat(
    State(state): State<WebState>,
    ApiPath((order, position)): ApiPath<(OrderId, u32)>,
) -> ApiResult<Response> {
    state.app.assign_seat(order, position, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- the message log -----

#[derive(Debug, Deserialize)]
struct MessagesQuery {
    #[serde(rename = "type")]
    message_type: Option<String>,
    correlation_id: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<usize>,
    /// The `next` of the page before.
    after: Option<String>,
}

/// A page's end as the API hands it out: `<microseconds>.<0 command|1 event>.<sequence>`.
fn cursor_text(cursor: &LogCursor) -> String {
    let kind = u8::from(cursor.kind == MessageKind::Event);
    format!(
        "{}.{kind}.{}",
        cursor.recorded_at.timestamp_micros(),
        cursor.sequence
    )
}

fn parse_cursor(text: &str) -> Option<LogCursor> {
    let mut parts = text.split('.');
    let micros: i64 = parts.next()?.parse().ok()?;
    let kind = match parts.next()? {
        "0" => MessageKind::Command,
        "1" => MessageKind::Event,
        _ => return None,
    };
    let sequence: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(LogCursor {
        recorded_at: DateTime::from_timestamp_micros(micros)?,
        kind,
        sequence,
    })
}

async fn messages(
    State(state): State<WebState>,
    MaybeCredentials(credentials): MaybeCredentials,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    // The operator sees everything; an owner sees the messages of their conference and of
    // every order placed for it, expired ones too.
    let scope: Option<Vec<StreamId>> = match credentials {
        None => return Err(unauthorized()),
        Some(Credentials::Operator { token, .. })
            if state.operator_token.as_deref() == Some(token.as_str()) =>
        {
            None
        }
        Some(operator @ Credentials::Operator { .. }) => return Err(refused(&state, &operator)),
        Some(owner @ Credentials::Owner { .. }) => {
            let Credentials::Owner {
                email, access_code, ..
            } = &owner
            else {
                unreachable!("matched as an owner");
            };
            let view = AccessCode::from_str(access_code)
                .ok()
                .and_then(|code| state.app.owner_conference(email, &code).ok())
                .ok_or_else(|| refused(&state, &owner))?;
            let mut streams = Vec::new();
            streams.extend(Conference::stream_id(&view.id).ok());
            streams.extend(SeatsAvailability::stream_id(&view.id).ok());
            for order in state.app.conference_order_ids(view.id) {
                streams.extend(Order::stream_id(&order).ok());
            }
            Some(streams)
        }
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1_000);
    let mut log = LogQuery::new()
        .with_time_range(query.since, query.until)
        .with_limit(limit);
    if let Some(after) = &query.after {
        log.after = Some(parse_cursor(after).ok_or_else(|| {
            ApiError::invalid("`after` is not a cursor: pass the `next` of the page before")
        })?);
    }
    if let Some(t) = query.message_type {
        log = log.with_types([t]);
    }
    if let Some(c) = query.correlation_id {
        log = log.with_correlation_ids([c]);
    }
    if let Some(streams) = scope {
        log = log.with_streams(streams);
    }
    let entries = state.app.log(&log).await?;
    // A full page may have more after it.
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| cursor_text(&e.cursor)))
        .flatten();
    let messages: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| match &e.message {
            LoggedMessage::Command(c) => json!({
                "kind": "command",
                "type": c.command_type,
                "id": c.command_id,
                "target": c.target,
                "correlation_id": c.correlation_id,
                "causation_id": c.causation_id,
                "recorded_at": c.recorded_at,
                "payload": c.payload.to_value().ok(),
            }),
            LoggedMessage::Event(ev) => json!({
                "kind": "event",
                "type": ev.event_type,
                "id": ev.metadata.event_id,
                "stream": ev.stream,
                "version": ev.version.get(),
                "position": ev.position.get(),
                "correlation_id": ev.metadata.correlation_id,
                "causation_id": ev.metadata.causation_id,
                "recorded_at": ev.metadata.recorded_at,
                "payload": ev.payload.to_value().ok(),
            }),
        })
        .collect();
    Ok(Json(json!({ "messages": messages, "next": next })))
}

// ----- operations -----

/// Whether `credentials` are the operator's, or (when `owners_too`) any conference owner's.
fn operator_or_owner(
    state: &WebState,
    credentials: Option<Credentials>,
    owners_too: bool,
) -> ApiResult<()> {
    match credentials {
        None => Err(unauthorized()),
        Some(Credentials::Operator { token, .. })
            if state.operator_token.as_deref() == Some(token.as_str()) =>
        {
            Ok(())
        }
        Some(owner @ Credentials::Owner { .. }) if owners_too => {
            let Credentials::Owner {
                email, access_code, ..
            } = &owner
            else {
                unreachable!("matched as an owner");
            };
            AccessCode::from_str(access_code)
                .ok()
                .and_then(|code| state.app.owner_conference(email, &code).ok())
                .map(|_| ())
                .ok_or_else(|| refused(state, &owner))
        }
        // An owner's right credentials still do not open the operator's endpoints: no
        // attempt is counted against them.
        Some(Credentials::Owner { .. }) => Err(forbidden()),
        Some(other) => Err(refused(state, &other)),
    }
}

/// The read models: the live version of each, one being built, and the log's head.
async fn projections(
    State(state): State<WebState>,
    MaybeCredentials(credentials): MaybeCredentials,
) -> ApiResult<Json<serde_json::Value>> {
    // The operator's alone, as all of `/api/admin`: owners see it in their portal.
    operator_or_owner(&state, credentials, false)?;
    let all = state.app.read_model_status().await?;
    Ok(Json(json!({ "projections": all })))
}

/// Every metric, in Prometheus' text format (operator only): the framework's
/// (`cqrs_core::metric`) and the app's (`crate::telemetry`).
async fn prometheus_metrics(
    State(state): State<WebState>,
    MaybeCredentials(credentials): MaybeCredentials,
) -> ApiResult<Response> {
    operator_or_owner(&state, credentials, false)?;
    let Some(handle) = state.metrics() else {
        return Err(ApiError::not_found(
            "this server records no metrics (another recorder was installed first)",
        ));
    };
    // Histograms are summed here, not as samples arrive.
    handle.run_upkeep();
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

/// Starts building today's read models beside V1's (operator only).
async fn upgrade_projections(
    State(state): State<WebState>,
    MaybeCredentials(credentials): MaybeCredentials,
) -> ApiResult<Response> {
    operator_or_owner(&state, credentials, false)?;
    match state.app.upgrade_read_models() {
        Ok(()) => {}
        Err(crate::app::AppError::Busy(message)) => {
            return Err(ApiError::conflict("upgrade_under_way", message));
        }
        Err(other) => return Err(other.into()),
    }
    let all = state.app.read_model_status().await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "projections": all }))).into_response())
}

/// How long a read waits for the read model to catch up with a version it was asked for.
pub(crate) const CATCH_UP: StdDuration = StdDuration::from_secs(5);
