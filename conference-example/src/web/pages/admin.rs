//! The owner's portal at `/admin`: create a conference, edit it, manage its seat types,
//! publish or unpublish it, and see its orders and attendees (UI.md, "Business Customer
//! portal"). An owner signs in with their email and the conference's access code; a wrong
//! code sees nothing. The session lives in the store ([`OwnerSession`](crate::domain::OwnerSession)):
//! the browser holds only its random token, in a signed, HTTP-only cookie that expires with
//! it (and is `Secure` over HTTPS). Signing out or changing the access code ends it for every
//! server, and every form of a session carries a token derived from it, so that no other
//! site can post one.

use std::str::FromStr;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use maud::{Markup, html};
use rust_decimal::Decimal;

use crate::app::{AppError, NewConference, OWNER_SESSION_LIFETIME, Rejection, SessionToken};
use crate::domain::{
    AccessCode, ConferenceCommand, ConferenceDetails, ConferenceError, ConferenceId,
    ConferenceSlugError, OrderId, Owner, SeatType, SeatTypeId,
};
use crate::read::{ConferenceView, PaymentStatus};
use crate::web::WebState;
use crate::web::pages::{
    After, Fields, PAGE_SIZE, PageError, PagePath, PageQuery, Site, day, errors, layout, money,
    next_page, over_https, see_other,
};
use crate::web::throttle::{self, Client};

type PageResult = Result<Response, PageError>;

const SITE: Site = Site::Owner;

/// The session cookie: the session's token, signed.
const SESSION: &str = "conference_owner";

/// The hidden field that carries a session's form token.
const FORM_TOKEN: &str = "form_token";

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin", get(home))
        .route("/admin/", get(home))
        .route("/admin/login", get(login_form).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/create", get(create_form).post(create))
        .route("/admin/{id}", get(details))
        .route("/admin/{id}/edit", get(edit_form).post(edit))
        .route("/admin/{id}/publish", post(publish))
        .route("/admin/{id}/access-code", post(change_access_code))
        .route("/admin/{id}/unpublish", post(unpublish))
        .route("/admin/{id}/seats", get(seat_types).post(add_seat_type))
        .route(
            "/admin/{id}/seats/{seat_type}",
            get(seat_type_form).post(update_seat_type),
        )
        .route(
            "/admin/{id}/seats/{seat_type}/delete",
            post(delete_seat_type),
        )
        .route("/admin/{id}/orders", get(orders))
        .route("/admin/{id}/read-models", get(read_models))
}

// ----- the session -----

fn session_cookie(token: &SessionToken, secure: bool) -> Cookie<'static> {
    let lifetime = OWNER_SESSION_LIFETIME.to_std().unwrap_or_default();
    Cookie::build((SESSION, token.as_str().to_owned()))
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(lifetime.try_into().unwrap_or_default())
        .build()
}

/// An owner signed in: the conference, and the session's token.
struct Session {
    view: ConferenceView,
    token: SessionToken,
}

impl Session {
    /// The hidden field every form of this session carries.
    fn form_field(&self) -> Markup {
        html! { input type="hidden" name=(FORM_TOKEN) value=(self.token.form_token()); }
    }
}

/// The session's token from the cookie, if it carries one (its signature checked).
fn session_token(jar: &SignedCookieJar) -> Option<SessionToken> {
    jar.get(SESSION)?.value().parse().ok()
}

/// The conference `id`, if the session is open and its owner's; otherwise a 401 page that
/// shows nothing of it.
async fn signed_in(
    state: &WebState,
    jar: &SignedCookieJar,
    id: ConferenceId,
) -> Result<Session, PageError> {
    let denied = || {
        PageError::new(
            SITE,
            StatusCode::UNAUTHORIZED,
            "Please log in",
            "Log in with the owner's email and the conference's access code to manage it.",
        )
    };
    let token = session_token(jar).ok_or_else(denied)?;
    let view = match state.app.owner_session(&token).await {
        Ok(view) => view,
        Err(AppError::NotFound(_)) => return Err(denied()),
        Err(err) => return Err(app_error(err)),
    };
    if view.id != id {
        return Err(denied());
    }
    Ok(Session { view, token })
}

/// As [`signed_in`], for a form posted: it must carry the session's form token, or it is
/// refused (403) and nothing is done.
async fn signed_in_form(
    state: &WebState,
    jar: &SignedCookieJar,
    id: ConferenceId,
    fields: &Fields,
) -> Result<Session, PageError> {
    let session = signed_in(state, jar, id).await?;
    if fields.text(FORM_TOKEN) != session.token.form_token() {
        return Err(PageError::form_refused(SITE));
    }
    Ok(session)
}

fn app_error(err: AppError) -> PageError {
    PageError::from_app(SITE, err)
}

/// What to tell an owner when a command is refused, or the error page for anything else.
fn refusal(err: AppError) -> Result<String, PageError> {
    match err {
        AppError::Rejected(Rejection::Slug(ConferenceSlugError::Taken)) => {
            Ok("The chosen conference slug is already taken.".to_owned())
        }
        AppError::Rejected(Rejection::Conference(ConferenceError::Invalid(m))) => Ok(m),
        AppError::Rejected(Rejection::Conference(e)) => Ok(e.to_string()),
        other => Err(app_error(other)),
    }
}

fn tabs(view: &ConferenceView, current: &str) -> Markup {
    let id = view.id;
    html! {
        h1 { (view.details.name) " " @if view.published { span.badge.ok { "Published" } } @else { span.badge { "Not published" } } }
        nav.tabs {
            a.current[current == "details"] href={"/admin/" (id)} { "Conference details" }
            a.current[current == "seats"] href={"/admin/" (id) "/seats"} { "Seat types" }
            a.current[current == "orders"] href={"/admin/" (id) "/orders"} { "Registrations" }
            a.current[current == "read-models"] href={"/admin/" (id) "/read-models"} { "Read models" }
        }
    }
}

// ----- home, log in, create -----

async fn home() -> Markup {
    let body = html! {
        section.card {
            h1 { "Contoso Conference Management Portal" }
            p { "Create a conference, sell its seats, and see who registered." }
            div.actions {
                a.button href="/admin/login" { "Log in" }
                a.button.secondary href="/admin/create" { "Create conference" }
            }
        }
    };
    layout(SITE, "Management portal", &body)
}

fn login_page(email: &str, messages: &[String]) -> Markup {
    let body = html! {
        section.card {
            h1 { "Log in" }
            p.meta { "Use the email you created the conference with and its access code." }
            (errors(messages))
            form.stack method="post" action="/admin/login" {
                label for="email" { "Owner email" }
                input #email type="email" name="email" required value=(email);
                label for="access_code" { "Access code" }
                input #access_code type="password" name="access_code" required autocomplete="off";
                div.actions { button type="submit" { "Log in" } }
            }
        }
    };
    layout(SITE, "Log in", &body)
}

async fn login_form() -> Markup {
    login_page("", &[])
}

async fn login(
    State(state): State<WebState>,
    client: Client,
    jar: SignedCookieJar,
    headers: HeaderMap,
    fields: Fields,
) -> Response {
    let email = fields.text("email");
    let keys = throttle::keys("owner", &email, client);
    let code = AccessCode::from_str(&fields.text("access_code")).ok();
    let found = state.throttle.attempt(&keys, || {
        code.as_ref()
            .and_then(|code| state.app.owner_conference(&email, code).ok())
    });
    let found = match found {
        Ok(found) => found,
        Err(wait) => {
            let message = format!(
                "Too many failed attempts. Try again in {} seconds.",
                wait.as_secs() + 1
            );
            return (
                StatusCode::TOO_MANY_REQUESTS,
                login_page(&email, &[message]),
            )
                .into_response();
        }
    };
    match (found, code) {
        (Some(_), Some(code)) => match state.app.open_owner_session(&email, &code).await {
            Ok((token, view)) => (
                jar.add(session_cookie(&token, over_https(&state, &headers))),
                see_other(&format!("/admin/{}", view.id)),
            )
                .into_response(),
            Err(err) => app_error(err).into_response(),
        },
        _ => (
            StatusCode::UNAUTHORIZED,
            login_page(
                &email,
                &[
                    "Could not locate a conference with the provided email and access code."
                        .to_owned(),
                ],
            ),
        )
            .into_response(),
    }
}

/// Ends the session for every server, and forgets the cookie. A post without the session's
/// form token ends nothing (another site cannot sign an owner out).
async fn logout(State(state): State<WebState>, jar: SignedCookieJar, fields: Fields) -> PageResult {
    if let Some(token) = session_token(&jar) {
        if fields.text(FORM_TOKEN) != token.form_token() {
            return Err(PageError::form_refused(SITE));
        }
        state
            .app
            .close_owner_session(&token)
            .await
            .map_err(app_error)?;
    }
    Ok((
        jar.remove(Cookie::build(SESSION).path("/admin")),
        see_other("/admin"),
    )
        .into_response())
}

/// The values of the conference form.
#[derive(Debug, Default)]
struct ConferenceForm {
    owner_name: String,
    owner_email: String,
    slug: String,
    name: String,
    description: String,
    location: String,
    tagline: String,
    twitter_search: String,
    start_date: String,
    end_date: String,
}

impl ConferenceForm {
    fn from_fields(fields: &Fields) -> Self {
        Self {
            owner_name: fields.text("owner_name"),
            owner_email: fields.text("owner_email"),
            slug: fields.text("slug"),
            name: fields.text("name"),
            description: fields.text("description"),
            location: fields.text("location"),
            tagline: fields.text("tagline"),
            twitter_search: fields.text("twitter_search"),
            start_date: fields.text("start_date"),
            end_date: fields.text("end_date"),
        }
    }

    fn of(view: &ConferenceView) -> Self {
        Self {
            owner_name: view.owner.name.clone(),
            owner_email: view.owner.email.clone(),
            slug: view.slug.clone(),
            name: view.details.name.clone(),
            description: view.details.description.clone(),
            location: view.details.location.clone(),
            tagline: view.details.tagline.clone(),
            twitter_search: view.details.twitter_search.clone(),
            start_date: day(view.details.start_date),
            end_date: day(view.details.end_date),
        }
    }

    fn details(&self, fields: &Fields) -> Result<ConferenceDetails, Vec<String>> {
        let start = fields.date("start_date", "Start date");
        let end = fields.date("end_date", "End date");
        match (start, end) {
            (Ok(start_date), Ok(end_date)) => Ok(ConferenceDetails {
                name: self.name.clone(),
                description: self.description.clone(),
                location: self.location.clone(),
                tagline: self.tagline.clone(),
                twitter_search: self.twitter_search.clone(),
                start_date,
                end_date,
            }),
            (start, end) => Err(start.err().into_iter().chain(end.err()).collect()),
        }
    }
}

/// The conference form; `creating` adds the owner and the slug.
fn conference_form(
    action: &str,
    form: &ConferenceForm,
    session: Option<&Session>,
    messages: &[String],
) -> Markup {
    let creating = session.is_none();
    html! {
        (errors(messages))
        form.stack method="post" action=(action) {
            @if let Some(session) = session { (session.form_field()) }
            @if creating {
                label for="owner_name" { "Owner name" }
                input #owner_name type="text" name="owner_name" required value=(form.owner_name);
                label for="owner_email" { "Owner email" }
                input #owner_email type="email" name="owner_email" required value=(form.owner_email);
                label for="slug" { "Slug (the conference's address: letters, digits and _)" }
                input #slug type="text" name="slug" required pattern="\\w+" value=(form.slug);
            }
            label for="name" { "Name" }
            input #name type="text" name="name" required value=(form.name);
            label for="tagline" { "Tagline (optional)" }
            input #tagline type="text" name="tagline" value=(form.tagline);
            label for="description" { "Description" }
            textarea #description name="description" required rows="4" { (form.description) }
            label for="location" { "Location" }
            input #location type="text" name="location" required value=(form.location);
            label for="twitter_search" { "Twitter search (optional)" }
            input #twitter_search type="text" name="twitter_search" value=(form.twitter_search);
            label for="start_date" { "Start date" }
            input #start_date type="date" name="start_date" required value=(form.start_date);
            label for="end_date" { "End date" }
            input #end_date type="date" name="end_date" required value=(form.end_date);
            div.actions {
                button type="submit" { @if creating { "Create" } @else { "Save" } }
            }
        }
    }
}

fn create_page(form: &ConferenceForm, messages: &[String]) -> Markup {
    let body = html! {
        section.card {
            h1 { "Create a conference" }
            p.meta { "It starts unpublished: add its seat types, then publish it." }
            (conference_form("/admin/create", form, None, messages))
        }
    };
    layout(SITE, "Create a conference", &body)
}

async fn create_form() -> Markup {
    create_page(&ConferenceForm::default(), &[])
}

async fn create(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    headers: HeaderMap,
    fields: Fields,
) -> PageResult {
    let form = ConferenceForm::from_fields(&fields);
    let details = match form.details(&fields) {
        Ok(details) => details,
        Err(messages) => {
            return Ok((StatusCode::BAD_REQUEST, create_page(&form, &messages)).into_response());
        }
    };
    let created = state
        .app
        .create_conference(NewConference {
            slug: form.slug.clone(),
            details,
            owner: Owner {
                name: form.owner_name.clone(),
                email: form.owner_email.clone(),
            },
        })
        .await;
    let (id, code) = match created {
        Ok(created) => created,
        Err(err) => {
            let message = refusal(err)?;
            let status = if message.contains("taken") {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            return Ok((status, create_page(&form, &[message])).into_response());
        }
    };
    state.wait_for_conference(id).await;
    let (token, _) = state
        .app
        .open_owner_session(&form.owner_email, &code)
        .await
        .map_err(|_| PageError::new(SITE, StatusCode::SERVICE_UNAVAILABLE, "Try again", "The conference was created but is not visible yet; log in with the access code in a moment."))?;
    Ok((
        jar.add(session_cookie(&token, over_https(&state, &headers))),
        see_other(&format!("/admin/{id}")),
    )
        .into_response())
}

// ----- a conference -----

async fn details(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
) -> PageResult {
    let session = signed_in(&state, &jar, id).await?;
    let view = &session.view;
    let d = &view.details;
    let body = html! {
        section.card {
            (tabs(view, "details"))
            h2 { "Owner" }
            dl.facts {
                dt { "Name" } dd { (view.owner.name) }
                dt { "Email" } dd { (view.owner.email) }
                dt { "Access code" } dd {
                    span.code #access-code { (view.access_code) }
                    form.inline method="post" action={"/admin/" (id) "/access-code"} {
                        (session.form_field())
                        button #change-access-code.secondary type="submit"
                            title="A new code; every session opened with the old one ends" { "Change" }
                    }
                }
            }
            h2 { "Conference" }
            dl.facts {
                dt { "Name" } dd { (d.name) }
                dt { "Tagline" } dd { (d.tagline) }
                dt { "Slug" } dd {
                    (view.slug)
                    @if view.published { " · " a href={"/" (view.slug) "/"} { "see it as registrants do" } }
                }
                dt { "Location" } dd { (d.location) }
                dt { "Twitter search" } dd { (d.twitter_search) }
                dt { "Description" } dd { (d.description) }
                dt { "Dates" } dd { (day(d.start_date)) " to " (day(d.end_date)) }
            }
            div.actions {
                a.button.secondary href={"/admin/" (id) "/edit"} { "Edit" }
                @if view.published {
                    form method="post" action={"/admin/" (id) "/unpublish"} { (session.form_field()) button #unpublish.secondary type="submit" { "Unpublish" } }
                } @else {
                    form method="post" action={"/admin/" (id) "/publish"} { (session.form_field()) button #publish type="submit" { "Publish" } }
                }
                a.button.secondary href={"/admin/" (id) "/seats"} { "Configure seats" }
                form method="post" action="/admin/logout" { (session.form_field()) button.secondary type="submit" { "Log out" } }
            }
        }
    };
    Ok(layout(SITE, &view.details.name, &body).into_response())
}

fn edit_page(session: &Session, form: &ConferenceForm, messages: &[String]) -> Markup {
    let view = &session.view;
    let body = html! {
        section.card {
            (tabs(view, "details"))
            h2 { "Edit the conference" }
            (conference_form(&format!("/admin/{}/edit", view.id), form, Some(session), messages))
        }
    };
    layout(SITE, "Edit", &body)
}

async fn edit_form(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
) -> PageResult {
    let session = signed_in(&state, &jar, id).await?;
    Ok(edit_page(&session, &ConferenceForm::of(&session.view), &[]).into_response())
}

async fn edit(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
    fields: Fields,
) -> PageResult {
    let session = signed_in_form(&state, &jar, id, &fields).await?;
    let form = ConferenceForm::from_fields(&fields);
    let details = match form.details(&fields) {
        Ok(details) => details,
        Err(messages) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                edit_page(&session, &form, &messages),
            )
                .into_response());
        }
    };
    if let Err(err) = state
        .app
        .manage(id, ConferenceCommand::Update { details })
        .await
    {
        let message = refusal(err)?;
        return Ok((
            StatusCode::BAD_REQUEST,
            edit_page(&session, &form, &[message]),
        )
            .into_response());
    }
    state.wait_for_conference(id).await;
    Ok(see_other(&format!("/admin/{id}")))
}

async fn publish(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
    fields: Fields,
) -> PageResult {
    run_on_details(&state, &jar, id, &fields, ConferenceCommand::Publish).await
}

async fn unpublish(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
    fields: Fields,
) -> PageResult {
    run_on_details(&state, &jar, id, &fields, ConferenceCommand::Unpublish).await
}

/// A new access code: every session opened with the old one ends, and this one goes on
/// with the new code.
async fn change_access_code(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    headers: HeaderMap,
    PagePath(id): PagePath<ConferenceId>,
    fields: Fields,
) -> PageResult {
    let session = signed_in_form(&state, &jar, id, &fields).await?;
    let code = state.app.change_access_code(id).await.map_err(app_error)?;
    state.wait_for_conference(id).await;
    let (token, _) = state
        .app
        .open_owner_session(&session.view.owner.email, &code)
        .await
        .map_err(app_error)?;
    Ok((
        jar.add(session_cookie(&token, over_https(&state, &headers))),
        see_other(&format!("/admin/{id}")),
    )
        .into_response())
}

/// Runs an owner's command from the details page, and shows the page again once the
/// directory shows its effect.
async fn run_on_details(
    state: &WebState,
    jar: &SignedCookieJar,
    id: ConferenceId,
    fields: &Fields,
    command: ConferenceCommand,
) -> PageResult {
    signed_in_form(state, jar, id, fields).await?;
    state.app.manage(id, command).await.map_err(app_error)?;
    state.wait_for_conference(id).await;
    Ok(see_other(&format!("/admin/{id}")))
}

// ----- seat types -----

/// The values of a seat type form.
#[derive(Debug, Default)]
struct SeatForm {
    name: String,
    description: String,
    quantity: String,
    price: String,
}

impl SeatForm {
    fn from_fields(fields: &Fields) -> Self {
        Self {
            name: fields.text("name"),
            description: fields.text("description"),
            quantity: fields.text("quantity"),
            price: fields.text("price"),
        }
    }

    fn seat_type(&self) -> Result<SeatType, Vec<String>> {
        let quantity = self.quantity.parse::<u32>().map_err(|_| {
            format!(
                "Quantity: {:?} is not a whole number from 0 to 100000.",
                self.quantity
            )
        });
        let price = Decimal::from_str(&self.price)
            .map_err(|_| format!("Price: {:?} is not an amount from 0 to 50000.", self.price));
        match (quantity, price) {
            (Ok(quantity), Ok(price)) => Ok(SeatType {
                name: self.name.clone(),
                description: self.description.clone(),
                quantity,
                price,
            }),
            (q, p) => Err(q.err().into_iter().chain(p.err()).collect()),
        }
    }
}

fn seat_fields(form: &SeatForm) -> Markup {
    html! {
        label for="seat_name" { "Name" }
        input #seat_name type="text" name="name" required minlength="2" maxlength="70" value=(form.name);
        label for="seat_description" { "Description" }
        input #seat_description type="text" name="description" required maxlength="250" value=(form.description);
        label for="seat_quantity" { "Quantity" }
        input #seat_quantity type="number" name="quantity" required min="0" max="100000" value=(form.quantity);
        label for="seat_price" { "Price" }
        input #seat_price type="number" name="price" required min="0" max="50000" step="0.01" value=(form.price);
    }
}

fn seat_types_page(session: &Session, form: &SeatForm, messages: &[String]) -> Markup {
    let view = &session.view;
    let id = view.id;
    let body = html! {
        section.card {
            (tabs(view, "seats"))
            h2 { "Seat types" }
            (errors(messages))
            @if view.seat_types.is_empty() {
                p { "No seat types yet: add the first one below." }
            } @else {
                table.seat-types {
                    thead { tr {
                        th { "Name" } th { "Description" } th.num { "Quantity" } th.num { "Price" }
                        th.num { "Available" } th {}
                    } }
                    tbody {
                        @for seat in view.seat_types.values() {
                            tr {
                                td { (seat.name) } td { (seat.description) }
                                td.num { (seat.quantity) } td.num { (money(seat.price)) }
                                td.num {
                                    @match (seat.on_sale, seat.available) {
                                        (true, Some(left)) => (left.max(0)),
                                        (true, None) => span.meta { "—" },
                                        (false, _) => span.meta { "on sale once published" },
                                    }
                                }
                                td { div.actions {
                                    a.button.secondary href={"/admin/" (id) "/seats/" (seat.id)} { "Edit" }
                                    form method="post" action={"/admin/" (id) "/seats/" (seat.id) "/delete"} {
                                        (session.form_field())
                                        button.danger type="submit" disabled[seat.on_sale]
                                            title=(if seat.on_sale { "Seats of a conference that was published stay on sale" } else { "Delete this seat type" }) { "Delete" }
                                    }
                                } }
                            }
                        }
                    }
                }
            }
            h3 { "Add a seat type" }
            form.stack method="post" action={"/admin/" (id) "/seats"} {
                (session.form_field())
                (seat_fields(form))
                div.actions { button #add-seat-type type="submit" { "Add" } }
            }
        }
    };
    layout(SITE, "Seat types", &body)
}

async fn seat_types(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
) -> PageResult {
    let session = signed_in(&state, &jar, id).await?;
    Ok(seat_types_page(&session, &SeatForm::default(), &[]).into_response())
}

async fn add_seat_type(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
    fields: Fields,
) -> PageResult {
    let session = signed_in_form(&state, &jar, id, &fields).await?;
    let form = SeatForm::from_fields(&fields);
    let seat_type = match form.seat_type() {
        Ok(seat_type) => seat_type,
        Err(messages) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                seat_types_page(&session, &form, &messages),
            )
                .into_response());
        }
    };
    if let Err(err) = state.app.add_seat_type(id, seat_type).await {
        let message = refusal(err)?;
        return Ok((
            StatusCode::BAD_REQUEST,
            seat_types_page(&session, &form, &[message]),
        )
            .into_response());
    }
    state.wait_for_conference(id).await;
    Ok(see_other(&format!("/admin/{id}/seats")))
}

fn seat_type_page(
    session: &Session,
    seat_type: SeatTypeId,
    form: &SeatForm,
    messages: &[String],
) -> Markup {
    let view = &session.view;
    let body = html! {
        section.card {
            (tabs(view, "seats"))
            h2 { "Edit a seat type" }
            (errors(messages))
            form.stack method="post" action={"/admin/" (view.id) "/seats/" (seat_type)} {
                (session.form_field())
                (seat_fields(form))
                div.actions {
                    button type="submit" { "Save" }
                    a.button.secondary href={"/admin/" (view.id) "/seats"} { "Cancel" }
                }
            }
        }
    };
    layout(SITE, "Edit a seat type", &body)
}

async fn seat_type_form(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath((id, seat_type)): PagePath<(ConferenceId, SeatTypeId)>,
) -> PageResult {
    let session = signed_in(&state, &jar, id).await?;
    let seat = session
        .view
        .seat_types
        .get(&seat_type)
        .ok_or_else(|| PageError::not_found(SITE, "There is no such seat type."))?;
    let form = SeatForm {
        name: seat.name.clone(),
        description: seat.description.clone(),
        quantity: seat.quantity.to_string(),
        price: seat.price.to_string(),
    };
    Ok(seat_type_page(&session, seat_type, &form, &[]).into_response())
}

async fn update_seat_type(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath((id, seat_type)): PagePath<(ConferenceId, SeatTypeId)>,
    fields: Fields,
) -> PageResult {
    let session = signed_in_form(&state, &jar, id, &fields).await?;
    let form = SeatForm::from_fields(&fields);
    let seats = match form.seat_type() {
        Ok(seats) => seats,
        Err(messages) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                seat_type_page(&session, seat_type, &form, &messages),
            )
                .into_response());
        }
    };
    if let Err(err) = state
        .app
        .manage(id, ConferenceCommand::UpdateSeatType { seat_type, seats })
        .await
    {
        let message = refusal(err)?;
        return Ok((
            StatusCode::BAD_REQUEST,
            seat_type_page(&session, seat_type, &form, &[message]),
        )
            .into_response());
    }
    state.wait_for_conference(id).await;
    Ok(see_other(&format!("/admin/{id}/seats")))
}

async fn delete_seat_type(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath((id, seat_type)): PagePath<(ConferenceId, SeatTypeId)>,
    fields: Fields,
) -> PageResult {
    let session = signed_in_form(&state, &jar, id, &fields).await?;
    if let Err(err) = state
        .app
        .manage(id, ConferenceCommand::DeleteSeatType { seat_type })
        .await
    {
        let message = refusal(err)?;
        return Ok((
            StatusCode::CONFLICT,
            seat_types_page(&session, &SeatForm::default(), &[message]),
        )
            .into_response());
    }
    state.wait_for_conference(id).await;
    Ok(see_other(&format!("/admin/{id}/seats")))
}

// ----- orders -----

async fn orders(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
    PageQuery(page): PageQuery<After>,
) -> PageResult {
    let Session { view, .. } = signed_in(&state, &jar, id).await?;
    let page = state
        .app
        .conference_orders_page(id, page.after.map(OrderId), PAGE_SIZE);
    let orders = page.items;
    let body = html! {
        section.card {
            (tabs(&view, "orders"))
            h2 { "Orders and attendees" }
            @if orders.is_empty() {
                p { "No orders yet." }
            } @else {
                table.orders {
                    thead { tr {
                        th { "Order code" } th { "Status" } th.num { "Total" }
                        th { "Registrant" } th { "Email" } th { "Attendees" }
                    } }
                    tbody {
                        @for o in &orders {
                            tr {
                                td { code { (o.access_code) } }
                                td {
                                    @match o.status {
                                        PaymentStatus::Paid => span.badge.ok { "Paid" },
                                        PaymentStatus::Pending => span.badge { "Pending" },
                                    }
                                }
                                td.num { (money(o.total)) }
                                td { (o.registrant_name.as_deref().unwrap_or("—")) }
                                td { (o.registrant_email.as_deref().unwrap_or("—")) }
                                td {
                                    @for seat in &o.seats {
                                        div {
                                            (seat.seat_name) ": "
                                            @if let Some(a) = &seat.attendee {
                                                (a.last_name) " " (a.first_name) ", " (a.email)
                                            } @else { span.meta { "unassigned" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                (next_page(&format!("/admin/{id}/orders"), page.next.as_deref(), "Next orders"))
            }
        }
    };
    Ok(layout(SITE, "Registrations", &body).into_response())
}

// ----- the read models, for upgrades -----

async fn read_models(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<ConferenceId>,
) -> PageResult {
    let Session { view, .. } = signed_in(&state, &jar, id).await?;
    let all = state.app.read_model_status().await.map_err(app_error)?;
    let building = all.iter().any(|s| s.building.is_some());
    let percent = |at: u64, head: u64| {
        (at.min(head) * 100)
            .checked_div(head)
            .map_or(100, |p| p.min(100))
    };
    let body = html! {
        section.card {
            (tabs(&view, "read-models"))
            h2 { "Read models" }
            p.meta {
                "What the pages read from. A new version is built beside the live one while it serves, "
                "and takes over once it has caught up. The operator starts an upgrade with "
                code { "POST /api/admin/projections/upgrade" } "."
            }
            table.read-models {
                thead { tr {
                    th { "Read model" } th { "Live version" } th.num { "Position" }
                    th { "Being built" } th { "Retired" }
                } }
                tbody {
                    @for s in &all {
                        tr {
                            td { (s.name) }
                            td { code { (s.live.key) } @if s.live.live { " " span.badge.ok { "live" } } }
                            td.num { (s.live.position) " / " (s.head) }
                            td {
                                @if let Some(b) = &s.building {
                                    code { (b.key) } " — " (percent(b.position.get(), s.head.get())) "%"
                                } @else { span.meta { "—" } }
                            }
                            td { (s.retired.join(", ")) }
                        }
                    }
                }
            }
        }
    };
    let page = crate::web::pages::layout_with(SITE, "Read models", &body, building.then_some(2));
    Ok(page.into_response())
}
