//! The registrant's site: conferences, seat selection with the seats left, checkout, the
//! simulated payment processor, the thank-you and expired pages, finding an order and
//! assigning its seats (UI.md, "Registrant site").

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use maud::{Markup, html};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::app::{AppError, PaymentStep, Rejection};
use crate::domain::{
    AccessCode, ConferenceId, OrderError, OrderId, PaymentId, PaymentState, PersonalInfo,
    SeatAssignmentsError, SeatQuantity, SeatTypeId, is_email,
};
use crate::read::{ConferenceView, DraftOrder, DraftOrderState, PricedOrder};
use crate::web::WebState;
use crate::web::pages::{
    After, Fields, PAGE_SIZE, PageError, PagePath, PageQuery, Site, countdown, day, errors, layout,
    layout_with, money, next_page, see_other,
};
use crate::web::throttle::{self, Client};

type PageResult = Result<Response, PageError>;

const SITE: Site = Site::Registrant;

/// The most seats of one type a registrant picks in one order.
const MAX_PER_TYPE: u32 = crate::app::MAX_SEATS_PER_TYPE;

/// How long a page waits for the read models to show a change before it shows a
/// "please wait" page that reloads itself (the Journey waited 5 s too).
const WAIT: StdDuration = StdDuration::from_secs(5);

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(home))
        .route("/{slug}", get(conference_redirect))
        .route("/{slug}/", get(conference_home))
        .route("/{slug}/register", get(selection).post(register))
        .route("/{slug}/registrant", get(checkout).post(proceed))
        .route("/{slug}/pay/{payment}", get(processor))
        .route("/{slug}/pay/{payment}/accept", post(accept_payment))
        .route("/{slug}/pay/{payment}/reject", post(reject_payment))
        .route("/{slug}/confirmation", get(confirmation))
        .route("/{slug}/expired", get(expired))
        .route("/{slug}/order/find", get(find_form).post(find))
        .route("/{slug}/order/{order}", get(order_display))
        .route(
            "/{slug}/order/{order}/seats",
            get(seats_form).post(save_seats),
        )
}

// ----- helpers -----

/// The published conference `slug`, or a 404 page.
fn published(state: &WebState, slug: &str) -> Result<ConferenceView, PageError> {
    state
        .app
        .conference_by_slug(slug)
        .filter(|c| c.published)
        .ok_or_else(|| PageError::not_found(SITE, format!("There is no conference {slug:?}.")))
}

/// The conference `slug`, published or not: an order placed before it was unpublished can
/// still be paid for and seen.
fn any_conference(state: &WebState, slug: &str) -> Result<ConferenceView, PageError> {
    state
        .app
        .conference_by_slug(slug)
        .ok_or_else(|| PageError::not_found(SITE, format!("There is no conference {slug:?}.")))
}

/// The order a form is about.
fn order_field(fields: &Fields) -> Result<OrderId, PageError> {
    fields
        .parse("order_id", "Order")
        .map_err(|m| PageError::bad_request(SITE, m))
}

fn app_error(err: AppError) -> PageError {
    PageError::from_app(SITE, err)
}

/// The draft order once `ready` holds of it, or as it is after [`WAIT`] (`None`: not known
/// at all). A registrant's next page shows what they just did, not an older state. An order
/// not known at all is not waited for unless `just_placed`.
async fn wait_for_draft(
    state: &WebState,
    order: OrderId,
    just_placed: bool,
    ready: impl Fn(&DraftOrder) -> bool,
) -> Result<Option<DraftOrder>, PageError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let draft = match state.app.draft_order(order) {
            Ok(draft) => Some(draft),
            Err(AppError::NotFound(_)) => None,
            Err(err) => return Err(app_error(err)),
        };
        let unknown = draft.is_none() && !just_placed;
        if unknown || draft.as_ref().is_some_and(&ready) || tokio::time::Instant::now() >= deadline
        {
            return Ok(draft);
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// The order `order` of the conference `conference`, or a 404 page: an order id does not
/// open another conference's pages.
fn own_draft(
    draft: Option<DraftOrder>,
    conference: &ConferenceView,
) -> Result<DraftOrder, PageError> {
    draft
        .filter(|d| d.conference == conference.id)
        .ok_or_else(|| PageError::not_found(SITE, "There is no such order for this conference."))
}

/// A page that reloads itself while the system works.
fn please_wait(title: &str, message: &str) -> Response {
    let body = html! {
        section.card {
            h1 { (title) }
            p { (message) }
            p.meta { "This page reloads by itself." }
        }
    };
    layout_with(SITE, title, &body, Some(1)).into_response()
}

fn seat_name(conference: &ConferenceView, seat_type: SeatTypeId) -> String {
    conference
        .seat_types
        .get(&seat_type)
        .map_or_else(|| "(withdrawn)".to_owned(), |s| s.name.clone())
}

fn status_label(state: DraftOrderState) -> &'static str {
    match state {
        DraftOrderState::PendingReservation => "Reserving seats",
        DraftOrderState::PartiallyReserved => "Partially reserved",
        DraftOrderState::ReservationCompleted => "Seats reserved",
        DraftOrderState::Confirmed => "Confirmed",
        DraftOrderState::Expired => "Expired",
    }
}

fn conference_header(conference: &ConferenceView) -> Markup {
    html! {
        h1 { a href={"/" (conference.slug) "/"} { (conference.details.name) } }
    }
}

// ----- conferences -----

async fn home(State(state): State<WebState>, PageQuery(page): PageQuery<After>) -> Markup {
    let page = state
        .app
        .published_conferences_page(page.after.map(ConferenceId), PAGE_SIZE);
    let conferences = page.items;
    let body = html! {
        section.card {
            h1 { "Conferences" }
            @if conferences.is_empty() {
                p { "No conference is open for registration yet." }
                p.meta {
                    "Conference owners create and publish theirs in the "
                    a href="/admin" { "management portal" } "."
                }
            } @else {
                ul.conferences {
                    @for c in &conferences {
                        li {
                            a href={"/" (c.slug) "/"} { strong { (c.details.name) } }
                            @if !c.details.tagline.is_empty() { " — " (c.details.tagline) }
                            br;
                            span.meta { (c.details.location) " · " (day(c.details.start_date)) }
                        }
                    }
                }
                (next_page("/", page.next.as_deref(), "More conferences"))
            }
        }
    };
    layout(SITE, "Conferences", &body)
}

async fn conference_redirect(PagePath(slug): PagePath<String>) -> Response {
    // Only a slug is sent on: anything else (`%2Fevil.example`) is no page of this site.
    if !crate::domain::is_valid_slug(&slug) {
        return PageError::not_found(SITE, "There is no such page.").into_response();
    }
    see_other(&format!("/{slug}/"))
}

async fn conference_home(
    State(state): State<WebState>,
    PagePath(slug): PagePath<String>,
) -> PageResult {
    let c = published(&state, &slug)?;
    let body = html! {
        section.card {
            h1 { (c.details.name) }
            @if !c.details.tagline.is_empty() { p.tagline { (c.details.tagline) } }
            dl.facts {
                dt { "When" } dd { (day(c.details.start_date)) " to " (day(c.details.end_date)) }
                dt { "Where" } dd { (c.details.location) }
                @if !c.details.twitter_search.is_empty() {
                    dt { "On social media" } dd { (c.details.twitter_search) }
                }
            }
            p { (c.details.description) }
            div.actions {
                a.button href={"/" (c.slug) "/register"} { "Register" }
                a.button.secondary href={"/" (c.slug) "/order/find"} { "Locate registration" }
            }
        }
    };
    Ok(layout(SITE, &c.details.name, &body).into_response())
}

// ----- seat selection -----

#[derive(Debug, Deserialize)]
struct SelectionQuery {
    order_id: Option<OrderId>,
}

/// What the seat selection form shows.
#[derive(Debug, Default)]
struct Selection {
    /// The quantity selected per seat type.
    quantities: BTreeMap<SeatTypeId, u32>,
    /// Seats this order holds per type: they count as available to it.
    held: BTreeMap<SeatTypeId, u32>,
    /// Seat types whose reservation fell short: (requested, reserved).
    partial: BTreeMap<SeatTypeId, (u32, u32)>,
}

impl Selection {
    fn of(draft: &DraftOrder) -> Self {
        let mut selection = Self::default();
        for item in &draft.items {
            selection.held.insert(item.seat_type, item.reserved);
            let shown = if draft.state == DraftOrderState::PartiallyReserved {
                item.reserved
            } else {
                item.requested
            };
            selection.quantities.insert(item.seat_type, shown);
            if draft.state == DraftOrderState::PartiallyReserved && item.reserved < item.requested {
                selection
                    .partial
                    .insert(item.seat_type, (item.requested, item.reserved));
            }
        }
        selection
    }

    /// How many seats of `seat_type` this order can have now.
    fn most(&self, conference: &ConferenceView, seat_type: SeatTypeId) -> u32 {
        let available = conference
            .seat_types
            .get(&seat_type)
            // The V1 read model did not know the seats left: V1 offered up to the maximum.
            .map_or(0, |s| {
                s.available.map_or(i64::from(MAX_PER_TYPE), |a| a.max(0))
            });
        let held = i64::from(self.held.get(&seat_type).copied().unwrap_or(0));
        u32::try_from(available + held).unwrap_or(u32::MAX)
    }
}

async fn selection(
    State(state): State<WebState>,
    PagePath(slug): PagePath<String>,
    PageQuery(query): PageQuery<SelectionQuery>,
) -> PageResult {
    let conference = published(&state, &slug)?;
    let Some(order) = query.order_id else {
        // The order's id is chosen here, so a form sent twice places one order.
        let body = selection_page(
            &conference,
            OrderId::new(),
            &Selection::default(),
            None,
            &[],
        );
        return Ok(body.into_response());
    };
    let draft = own_draft(
        wait_for_draft(&state, order, false, |d| {
            d.state != DraftOrderState::PendingReservation
        })
        .await?,
        &conference,
    )?;
    match draft.state {
        DraftOrderState::Confirmed => {
            return Ok(see_other(&format!("/{slug}/order/{order}")));
        }
        DraftOrderState::Expired => {
            return Ok(see_other(&format!("/{slug}/expired?order_id={order}")));
        }
        _ => {}
    }
    let body = selection_page(
        &conference,
        order,
        &Selection::of(&draft),
        Some(&draft),
        &[],
    );
    Ok(body.into_response())
}

fn selection_page(
    conference: &ConferenceView,
    order: OrderId,
    selection: &Selection,
    draft: Option<&DraftOrder>,
    messages: &[String],
) -> Markup {
    let slug = &conference.slug;
    let body = html! {
        section.card {
            (conference_header(conference))
            h2 { "Choose your seats" }
            @if let Some(draft) = draft {
                (countdown(draft.reservation_expires_at, &format!("/{slug}/expired?order_id={order}")))
            }
            (errors(messages))
            form.stack method="post" action={"/" (slug) "/register"} {
                input type="hidden" name="order_id" value=(order);
                table.seats {
                    thead { tr {
                        th { "Registration type" } th.num { "Price" }
                        th.num { "Available" } th.num { "Quantity" }
                    } }
                    tbody {
                        @for seat in conference.seat_types_on_sale() {
                            @let most = selection.most(conference, seat.id).min(MAX_PER_TYPE);
                            @let chosen = selection.quantities.get(&seat.id).copied().unwrap_or(0);
                            tr data-seat-type=(seat.id) {
                                td {
                                    strong { (seat.name) } br;
                                    span.meta { (seat.description) }
                                    @if let Some((requested, reserved)) = selection.partial.get(&seat.id) {
                                        p.partial {
                                            "Could not reserve all the requested seats: "
                                            (reserved) " of " (requested) " are held for you."
                                        }
                                    }
                                }
                                td.num { (money(seat.price)) }
                                td.num.available {
                                    @match seat.available { Some(left) => (left.max(0)), None => "—" }
                                }
                                td.num {
                                    @if most == 0 && chosen == 0 {
                                        span.soldout { "Sold out" }
                                    } @else {
                                        select name={"qty_" (seat.id)} data-price=(seat.price) aria-label={"Quantity of " (seat.name)} {
                                            @for n in 0..=most.max(chosen) {
                                                option value=(n) selected[n == chosen] { (n) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    tfoot { tr {
                        td colspan="3" { "Estimated total" }
                        td.num #estimated-total { (money(estimated_total(conference, selection))) }
                    } }
                }
                div.actions {
                    button type="submit" { "Order now" }
                    a.button.secondary href={"/" (slug) "/"} { "Back" }
                }
            }
        }
    };
    layout(
        SITE,
        &format!("Register for {}", conference.details.name),
        &body,
    )
}

async fn register(
    State(state): State<WebState>,
    client: Client,
    PagePath(slug): PagePath<String>,
    fields: Fields,
) -> PageResult {
    let conference = published(&state, &slug)?;
    let order = order_field(&fields)?;
    let draft = state.app.draft_order(order).ok();
    let mut selection = match &draft {
        Some(d) if d.conference != conference.id => {
            return Err(PageError::bad_request(
                SITE,
                "This order is for another conference.",
            ));
        }
        Some(d) if d.state == DraftOrderState::Confirmed => {
            return Ok(see_other(&format!("/{slug}/order/{order}")));
        }
        Some(d) if d.state == DraftOrderState::Expired => {
            return Ok(see_other(&format!("/{slug}/expired?order_id={order}")));
        }
        Some(d) => Selection::of(d),
        None => Selection::default(),
    };
    selection.partial.clear();
    selection.quantities.clear();
    let mut invalid = Vec::new();
    for (key, value) in fields.with_prefix("qty_") {
        let Ok(seat_type) = key.parse::<SeatTypeId>() else {
            invalid.push(format!("{key:?} is not a seat type."));
            continue;
        };
        match value.parse::<i64>() {
            Ok(n) if n < 0 => invalid.push("Quantities cannot be negative.".to_owned()),
            Ok(n) => {
                selection
                    .quantities
                    .insert(seat_type, u32::try_from(n).unwrap_or(u32::MAX));
            }
            Err(_) => invalid.push(format!("{value:?} is not a quantity.")),
        }
    }
    // Adjust to what is left now, as the Journey did: show the form again, send nothing.
    let mut adjusted = Vec::new();
    let on_sale: Vec<SeatTypeId> = conference.seat_types_on_sale().map(|s| s.id).collect();
    selection.quantities.retain(|seat_type, _| {
        let kept = on_sale.contains(seat_type);
        if !kept {
            adjusted.push("A seat type you chose is no longer on sale.".to_owned());
        }
        kept
    });
    for seat_type in &on_sale {
        let most = selection.most(&conference, *seat_type);
        if let Some(q) = selection.quantities.get_mut(seat_type)
            && *q > most
        {
            *q = most.min(MAX_PER_TYPE);
            adjusted.push(format!(
                "Only {most} seats of {} are left: the quantity was lowered.",
                seat_name(&conference, *seat_type)
            ));
        }
    }
    if invalid.is_empty() && adjusted.is_empty() && selection.quantities.values().all(|q| *q == 0) {
        invalid.push("One or more items are required.".to_owned());
    }
    if !invalid.is_empty() || !adjusted.is_empty() {
        let status = if invalid.is_empty() {
            StatusCode::CONFLICT
        } else {
            StatusCode::BAD_REQUEST
        };
        invalid.extend(adjusted);
        let page = selection_page(&conference, order, &selection, draft.as_ref(), &invalid);
        return Ok((status, page).into_response());
    }
    let seats: Vec<SeatQuantity> = selection
        .quantities
        .iter()
        .filter(|(_, q)| **q > 0)
        .map(|(seat_type, q)| SeatQuantity::new(*seat_type, *q))
        .collect();
    state
        .order_allowed(client)
        .map_err(|err| PageError::from_api(SITE, err))?;
    let version = match state.app.place_order_as(order, conference.id, seats).await {
        Ok(version) => version,
        Err(AppError::Rejected(Rejection::Order(OrderError::PaymentUnderWay))) => {
            let page = selection_page(
                &conference,
                order,
                &selection,
                draft.as_ref(),
                &["A payment for this order is under way: finish or cancel it first.".to_owned()],
            );
            return Ok((StatusCode::CONFLICT, page).into_response());
        }
        Err(err) => return Err(app_error(err)),
    };
    Ok(see_other(&format!(
        "/{slug}/registrant?order_id={order}&min_version={version}"
    )))
}

// ----- checkout -----

#[derive(Debug, Deserialize)]
struct OrderQuery {
    order_id: OrderId,
    #[serde(default)]
    min_version: u64,
}

async fn checkout(
    State(state): State<WebState>,
    PagePath(slug): PagePath<String>,
    PageQuery(query): PageQuery<OrderQuery>,
) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    let order = query.order_id;
    let draft = own_draft(
        wait_for_draft(&state, order, query.min_version > 0, |d| {
            d.version >= query.min_version && d.state != DraftOrderState::PendingReservation
        })
        .await?,
        &conference,
    )?;
    if draft.version < query.min_version || draft.state == DraftOrderState::PendingReservation {
        return Ok(please_wait(
            "Reserving your seats",
            "Your seats are being reserved.",
        ));
    }
    if let Some(next) = leave_checkout(&slug, &draft) {
        return Ok(next);
    }
    // One projection keeps the draft and the priced order, so the priced order is as
    // current as the draft just read.
    let Some(priced) = state.app.priced_order(order) else {
        return Ok(please_wait(
            "Pricing your order",
            "Your order is being priced.",
        ));
    };
    let registrant = draft.registrant.clone().unwrap_or(PersonalInfo {
        first_name: String::new(),
        last_name: String::new(),
        email: String::new(),
    });
    let confirm = registrant.email.clone();
    Ok(checkout_page(&conference, &draft, &priced, &registrant, &confirm, &[]).into_response())
}

/// Where a registrant goes instead of checkout, if the order is not waiting for it.
fn leave_checkout(slug: &str, draft: &DraftOrder) -> Option<Response> {
    let order = draft.order;
    match draft.state {
        DraftOrderState::PartiallyReserved => {
            Some(see_other(&format!("/{slug}/register?order_id={order}")))
        }
        DraftOrderState::Confirmed => {
            Some(see_other(&format!("/{slug}/confirmation?order_id={order}")))
        }
        DraftOrderState::Expired => Some(see_other(&format!("/{slug}/expired?order_id={order}"))),
        _ if Utc::now() >= draft.reservation_expires_at => {
            Some(see_other(&format!("/{slug}/expired?order_id={order}")))
        }
        _ => None,
    }
}

fn order_lines(conference: &ConferenceView, priced: &PricedOrder) -> Markup {
    html! {
        table.order {
            thead { tr {
                th { "Registration type" } th.num { "Price" } th.num { "Quantity" } th.num { "Total" }
            } }
            tbody {
                @for line in &priced.lines {
                    tr {
                        td { (if line.description.is_empty() { seat_name(conference, line.seat_type) } else { line.description.clone() }) }
                        td.num { (money(line.unit_price)) }
                        td.num { (line.quantity) }
                        td.num { (money(line.line_total)) }
                    }
                }
            }
            tfoot { tr {
                td colspan="3" { "Total" }
                td.num #order-total { (money(priced.total)) }
            } }
        }
    }
}

fn checkout_page(
    conference: &ConferenceView,
    draft: &DraftOrder,
    priced: &PricedOrder,
    registrant: &PersonalInfo,
    confirm_email: &str,
    messages: &[String],
) -> Markup {
    let slug = &conference.slug;
    let order = draft.order;
    let body = html! {
        section.card {
            (conference_header(conference))
            h2 { "Registrant details" }
            (countdown(draft.reservation_expires_at, &format!("/{slug}/expired?order_id={order}")))
            h3 { "Order summary" }
            (order_lines(conference, priced))
            p { a href={"/" (slug) "/register?order_id=" (order)} { "Change the seats" } }
            (errors(messages))
            form.stack method="post" action={"/" (slug) "/registrant"} {
                input type="hidden" name="order_id" value=(order);
                label for="first_name" { "First name" }
                input #first_name type="text" name="first_name" required value=(registrant.first_name);
                label for="last_name" { "Last name" }
                input #last_name type="text" name="last_name" required value=(registrant.last_name);
                label for="email" { "Email" }
                input #email type="email" name="email" required value=(registrant.email);
                label for="confirm_email" { "Confirm email" }
                input #confirm_email type="email" name="confirm_email" required value=(confirm_email);
                @if priced.is_free_of_charge.unwrap_or(false) {
                    p.notice #free-order { "This order is free of charge: no payment is needed." }
                } @else {
                    fieldset #payment-method {
                        legend { "Payment method" }
                        label { input type="radio" name="payment" value="card" checked; " Credit card (third-party processor)" }
                        label { input type="radio" name="payment" value="invoice" disabled; " Invoice me (not available)" }
                    }
                }
                div.actions {
                    button type="submit" {
                        @if priced.is_free_of_charge.unwrap_or(false) { "Complete registration" } @else { "Proceed to payment" }
                    }
                }
            }
        }
    };
    layout(SITE, "Checkout", &body)
}

async fn proceed(
    State(state): State<WebState>,
    PagePath(slug): PagePath<String>,
    fields: Fields,
) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    let order = order_field(&fields)?;
    let draft = own_draft(state.app.draft_order(order).ok(), &conference)?;
    if let Some(next) = leave_checkout(&slug, &draft) {
        return Ok(next);
    }
    let registrant = PersonalInfo {
        first_name: fields.text("first_name"),
        last_name: fields.text("last_name"),
        email: fields.text("email"),
    };
    let confirm = fields.text("confirm_email");
    let mut messages = Vec::new();
    for (value, label) in [
        (&registrant.first_name, "First name"),
        (&registrant.last_name, "Last name"),
        (&registrant.email, "Email"),
    ] {
        if value.is_empty() {
            messages.push(format!("{label} is required."));
        }
    }
    if !registrant.email.is_empty() && !is_email(&registrant.email) {
        messages.push(format!("{:?} is not an email address.", registrant.email));
    }
    if !registrant.email.eq_ignore_ascii_case(&confirm) {
        messages.push("The two emails differ.".to_owned());
    }
    if messages.is_empty() {
        match state.app.assign_registrant(order, registrant.clone()).await {
            Ok(()) => {}
            Err(AppError::Rejected(Rejection::Order(OrderError::InvalidRegistrant(m)))) => {
                messages.push(m);
            }
            // Another order of theirs is open: said on the form, which keeps what they typed.
            Err(AppError::Rejected(Rejection::Registrant(rule))) => {
                messages.push(rule.to_string());
            }
            Err(AppError::Rejected(Rejection::Order(OrderError::Expired))) => {
                return Ok(see_other(&format!("/{slug}/expired?order_id={order}")));
            }
            Err(err) => return Err(app_error(err)),
        }
    }
    if !messages.is_empty() {
        let Some(priced) = state.app.priced_order(order) else {
            return Err(PageError::bad_request(SITE, messages.join(" ")));
        };
        let page = checkout_page(
            &conference,
            &draft,
            &priced,
            &registrant,
            &confirm,
            &messages,
        );
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    match state.app.start_payment(order).await {
        Ok(PaymentStep::ConfirmedFree) => {
            Ok(see_other(&format!("/{slug}/confirmation?order_id={order}")))
        }
        Ok(PaymentStep::Started(payment)) => Ok(see_other(&format!("/{slug}/pay/{payment}"))),
        // Not reserved yet after all: checkout waits for it.
        Err(AppError::NotReady(_)) => {
            Ok(see_other(&format!("/{slug}/registrant?order_id={order}")))
        }
        Err(AppError::Rejected(Rejection::Order(OrderError::Expired))) => {
            Ok(see_other(&format!("/{slug}/expired?order_id={order}")))
        }
        Err(err) => Err(app_error(err)),
    }
}

// ----- the simulated processor -----

async fn processor(
    State(state): State<WebState>,
    PagePath((slug, payment)): PagePath<(String, PaymentId)>,
) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    let details = state.app.payment(payment).await.map_err(app_error)?;
    if details.conference != conference.id {
        return Err(PageError::not_found(SITE, "There is no such payment."));
    }
    let order = details.order;
    match details.state {
        PaymentState::Completed => {
            return Ok(see_other(&format!("/{slug}/confirmation?order_id={order}")));
        }
        PaymentState::Rejected => {
            return Ok(see_other(&format!("/{slug}/registrant?order_id={order}")));
        }
        PaymentState::Initiated => {}
    }
    let body = html! {
        section.card.processor {
            h1 { "Payment processor" }
            p.meta { "A simulated third-party processor: no money moves." }
            dl.facts {
                dt { "For" } dd #payment-description { (details.description) }
                dt { "Amount" } dd #payment-amount { (money(details.total)) }
            }
            div.actions {
                form method="post" action={"/" (slug) "/pay/" (payment) "/accept"} {
                    button #accept type="submit" { "Accept" }
                }
                form method="post" action={"/" (slug) "/pay/" (payment) "/reject"} {
                    button #reject.secondary type="submit" { "Reject" }
                }
            }
        }
    };
    Ok(layout(SITE, "Payment", &body).into_response())
}

async fn accept_payment(
    State(state): State<WebState>,
    PagePath((slug, payment)): PagePath<(String, PaymentId)>,
) -> PageResult {
    let details = state.app.payment(payment).await.map_err(app_error)?;
    if details.state == PaymentState::Initiated {
        state
            .app
            .complete_payment(payment)
            .await
            .map_err(app_error)?;
    }
    Ok(see_other(&format!(
        "/{slug}/confirmation?order_id={}",
        details.order
    )))
}

async fn reject_payment(
    State(state): State<WebState>,
    PagePath((slug, payment)): PagePath<(String, PaymentId)>,
) -> PageResult {
    let details = state.app.payment(payment).await.map_err(app_error)?;
    if details.state == PaymentState::Initiated {
        state.app.cancel_payment(payment).await.map_err(app_error)?;
    }
    Ok(see_other(&format!(
        "/{slug}/registrant?order_id={}",
        details.order
    )))
}

// ----- after -----

async fn confirmation(
    State(state): State<WebState>,
    PagePath(slug): PagePath<String>,
    PageQuery(query): PageQuery<OrderQuery>,
) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    let order = query.order_id;
    let draft = own_draft(
        wait_for_draft(&state, order, false, |d| {
            matches!(
                d.state,
                DraftOrderState::Confirmed | DraftOrderState::Expired
            )
        })
        .await?,
        &conference,
    )?;
    match draft.state {
        DraftOrderState::Confirmed => {}
        DraftOrderState::Expired => {
            return Ok(see_other(&format!("/{slug}/expired?order_id={order}")));
        }
        _ => {
            return Ok(please_wait(
                "Confirming your order",
                "Your payment is being confirmed.",
            ));
        }
    }
    let email = draft.registrant_email.clone().unwrap_or_default();
    let body = html! {
        section.card {
            (conference_header(&conference))
            h2.success { "Registration success" }
            p { "Thank you: your order is confirmed." }
            p {
                "Your order access code is "
                span.code #access-code { (draft.access_code) }
            }
            p.meta { "With it and " strong { (email) } " you can find this order again and assign its seats." }
            div.actions {
                a.button href={"/" (slug) "/order/" (order)} { "See the order" }
                a.button.secondary href={"/" (slug) "/order/" (order) "/seats"} { "Assign seats to attendees" }
                a.button.secondary href={"/" (slug) "/"} { "Back to the conference" }
            }
        }
    };
    Ok(layout(SITE, "Registration success", &body).into_response())
}

async fn expired(State(state): State<WebState>, PagePath(slug): PagePath<String>) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    let body = html! {
        section.card {
            (conference_header(&conference))
            h2.error { "Your order has expired" }
            p { "The time to complete the order ran out, and its seats are being released for other registrants." }
            div.actions {
                a.button href={"/" (slug) "/register"} { "Start a new order" }
                a.button.secondary href={"/" (slug) "/"} { "Back to the conference" }
            }
        }
    };
    Ok((StatusCode::OK, layout(SITE, "Order expired", &body)).into_response())
}

// ----- finding an order -----

async fn find_form(State(state): State<WebState>, PagePath(slug): PagePath<String>) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    Ok(find_page(&conference, "", &[]).into_response())
}

fn find_page(conference: &ConferenceView, email: &str, messages: &[String]) -> Markup {
    let body = html! {
        section.card {
            (conference_header(conference))
            h2 { "Locate your registration" }
            (errors(messages))
            form.stack method="post" action={"/" (conference.slug) "/order/find"} {
                label for="email" { "Email" }
                input #email type="email" name="email" required value=(email);
                label for="access_code" { "Order access code" }
                input #access_code type="text" name="access_code" required autocomplete="off";
                div.actions { button type="submit" { "Find" } }
            }
        }
    };
    layout(SITE, "Locate your registration", &body)
}

async fn find(
    State(state): State<WebState>,
    client: Client,
    PagePath(slug): PagePath<String>,
    fields: Fields,
) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    let email = fields.text("email");
    let keys = throttle::keys("order", &email, client);
    let found = state
        .throttle
        .attempt(&keys, || {
            fields
                .text("access_code")
                .parse::<AccessCode>()
                .ok()
                .and_then(|code| state.app.locate_order(&email, &code).ok())
                .filter(|d| d.conference == conference.id)
        })
        .map_err(|wait| {
            PageError::new(
                SITE,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                format!(
                    "Too many failed attempts. Try again in {} seconds.",
                    wait.as_secs() + 1
                ),
            )
        })?;
    match found {
        Some(draft) => Ok(see_other(&format!("/{slug}/order/{}", draft.order))),
        None => {
            let page = find_page(
                &conference,
                &email,
                &["Could not find an order with this email and access code.".to_owned()],
            );
            Ok((StatusCode::NOT_FOUND, page).into_response())
        }
    }
}

async fn order_display(
    State(state): State<WebState>,
    PagePath((slug, order)): PagePath<(String, OrderId)>,
) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    let Some(draft) = state
        .app
        .draft_order(order)
        .ok()
        .filter(|d| d.conference == conference.id)
    else {
        return Ok(see_other(&format!("/{slug}/order/find")));
    };
    let priced = state.app.priced_order(order);
    let seats_ready = state.app.order_seats(order).is_some();
    let body = html! {
        section.card {
            (conference_header(&conference))
            h2 { "Your order" }
            p { "Status: " span.badge.ok[draft.state == DraftOrderState::Confirmed] #order-status { (status_label(draft.state)) } }
            @if let Some(priced) = &priced {
                (order_lines(&conference, priced))
            } @else {
                table.order {
                    thead { tr { th { "Registration type" } th.num { "Requested" } th.num { "Reserved" } } }
                    tbody {
                        @for item in &draft.items {
                            tr { td { (seat_name(&conference, item.seat_type)) } td.num { (item.requested) } td.num { (item.reserved) } }
                        }
                    }
                }
            }
            div.actions {
                @match draft.state {
                    DraftOrderState::Confirmed => {
                        @if seats_ready {
                            a.button href={"/" (slug) "/order/" (order) "/seats"} { "Assign seats to attendees" }
                        } @else {
                            span.meta { "The seats are being prepared for assignment; reload in a moment." }
                        }
                    }
                    DraftOrderState::Expired => {
                        a.button href={"/" (slug) "/register"} { "Start a new order" }
                    }
                    _ => {
                        a.button href={"/" (slug) "/registrant?order_id=" (order)} { "Continue to checkout" }
                    }
                }
                a.button.secondary href={"/" (slug) "/"} { "Back to the conference" }
            }
        }
    };
    Ok(layout(SITE, "Your order", &body).into_response())
}

// ----- seat assignment -----

struct SeatRow {
    position: u32,
    seat_name: String,
    first_name: String,
    last_name: String,
    email: String,
}

async fn seats_form(
    State(state): State<WebState>,
    PagePath((slug, order)): PagePath<(String, OrderId)>,
) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    own_draft(state.app.draft_order(order).ok(), &conference)?;
    let Some(seats) = state.app.order_seats(order) else {
        // Not ready yet: the order page says so.
        return Ok(see_other(&format!("/{slug}/order/{order}")));
    };
    let rows: Vec<SeatRow> = seats
        .into_iter()
        .map(|s| {
            let a = s.attendee.unwrap_or(PersonalInfo {
                first_name: String::new(),
                last_name: String::new(),
                email: String::new(),
            });
            SeatRow {
                position: s.position,
                seat_name: s.seat_name,
                first_name: a.first_name,
                last_name: a.last_name,
                email: a.email,
            }
        })
        .collect();
    Ok(seats_page(&conference, order, &rows, &[]).into_response())
}

fn seats_page(
    conference: &ConferenceView,
    order: OrderId,
    rows: &[SeatRow],
    messages: &[String],
) -> Markup {
    let slug = &conference.slug;
    let body = html! {
        section.card {
            (conference_header(conference))
            h2 { "Assign seats to attendees" }
            (errors(messages))
            form method="post" action={"/" (slug) "/order/" (order) "/seats"} {
                table.assignments {
                    thead { tr { th { "Seat" } th { "First name" } th { "Last name" } th { "Email" } } }
                    tbody {
                        @for row in rows {
                            @let p = row.position;
                            tr {
                                td { (row.seat_name) " #" (p + 1) }
                                td { input type="text" name={"first_name_" (p)} value=(row.first_name) aria-label="First name"; }
                                td { input type="text" name={"last_name_" (p)} value=(row.last_name) aria-label="Last name"; }
                                td { input type="email" name={"email_" (p)} value=(row.email) aria-label="Email"; }
                            }
                        }
                    }
                }
                p.meta { "Attendees will be notified by e-mail." }
                div.actions {
                    button type="submit" { "Save" }
                    a.button.secondary href={"/" (slug) "/order/" (order)} { "Back to the order" }
                }
            }
        }
    };
    layout(SITE, "Assign seats", &body)
}

async fn save_seats(
    State(state): State<WebState>,
    PagePath((slug, order)): PagePath<(String, OrderId)>,
    fields: Fields,
) -> PageResult {
    let conference = any_conference(&state, &slug)?;
    own_draft(state.app.draft_order(order).ok(), &conference)?;
    let Some(seats) = state.app.order_seats(order) else {
        return Ok(see_other(&format!("/{slug}/order/{order}")));
    };
    let mut rows = Vec::new();
    let mut messages = Vec::new();
    for seat in seats {
        let p = seat.position;
        let row = SeatRow {
            position: p,
            seat_name: seat.seat_name.clone(),
            first_name: fields.text(&format!("first_name_{p}")),
            last_name: fields.text(&format!("last_name_{p}")),
            email: fields.text(&format!("email_{p}")),
        };
        let wanted = (!row.email.is_empty()).then(|| PersonalInfo {
            first_name: row.first_name.clone(),
            last_name: row.last_name.clone(),
            email: row.email.clone(),
        });
        let label = format!("{} #{}", seat.seat_name, p + 1);
        let unchanged = match (&seat.attendee, &wanted) {
            (None, None) => row.first_name.is_empty() && row.last_name.is_empty(),
            (Some(now), Some(w)) => {
                now.email == w.email
                    && now.first_name == w.first_name
                    && now.last_name == w.last_name
            }
            _ => false,
        };
        if !unchanged {
            if wanted.is_none() && (!row.first_name.is_empty() || !row.last_name.is_empty()) {
                messages.push(format!("{label}: the email is required."));
            } else {
                match state.app.assign_seat(order, p, wanted).await {
                    Ok(()) => {}
                    Err(AppError::Rejected(Rejection::Assignments(
                        SeatAssignmentsError::InvalidEmail(email),
                    ))) => messages.push(format!("{label}: {email:?} is not an email address.")),
                    Err(err) => return Err(app_error(err)),
                }
            }
        }
        rows.push(row);
    }
    if !messages.is_empty() {
        let page = seats_page(&conference, order, &rows, &messages);
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    Ok(see_other(&format!("/{slug}/order/{order}")))
}

/// The total of the seats selected, before the script updates it as they change.
fn estimated_total(conference: &ConferenceView, selection: &Selection) -> Decimal {
    selection
        .quantities
        .iter()
        .filter_map(|(seat_type, q)| {
            conference
                .seat_types
                .get(seat_type)
                .map(|s| s.price * Decimal::from(*q))
        })
        .sum()
}
