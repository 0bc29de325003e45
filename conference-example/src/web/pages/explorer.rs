//! The operator's event-store explorer at `/explorer`: the store's streams by category, a
//! stream's events with their metadata and payloads (as stored, and as the application reads
//! them after upcasting), a page at a time so that a store of millions of events browses as
//! fast as an empty one.
//!
//! The operator signs in with the operator token (`serve --operator-token`); the browser then
//! holds a signed, HTTP-only cookie with the token's hash and an expiry, never the token. A new
//! token ends every such session; forms carry a token derived from the cookie. Without an
//! operator token the explorer is closed.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{DateTime, Utc};
use cqrs_core::store::list_categories;
use cqrs_core::trace::TraceParent;
use cqrs_core::{
    ParkedCommand, RecordedEvent, ScheduledCommand, StreamId, StreamSummary, Upcasted, Version,
};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::web::WebState;
use crate::web::pages::{
    Fields, PageError, PagePath, PageQuery, Site, errors, layout, layout_with, over_https,
    see_other,
};
use crate::web::throttle::{self, Client};

type PageResult = Result<Response, PageError>;

const SITE: Site = Site::Operator;

/// The operator's cookie: an expiry and the operator token's hash, signed.
const COOKIE: &str = "conference_operator";

/// How long an operator stays signed in.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// The hidden field that carries a session's form token.
const FORM_TOKEN: &str = "form_token";

/// Streams or events a page shows.
const PAGE: usize = 50;

/// Categories the explorer lists.
const CATEGORIES: usize = 100;

/// Dead letters the overview counts; past that it says "more than".
const DEAD_LETTERS_COUNTED: usize = 1_000;

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/explorer", get(overview))
        .route("/explorer/", get(overview))
        .route("/explorer/login", get(login_form).post(login))
        .route("/explorer/logout", post(logout))
        .route("/explorer/streams", get(streams))
        .route("/explorer/streams/{stream}", get(stream))
        .route("/explorer/streams/{stream}/timeline", get(stream_timeline))
        .route("/explorer/timeline/{correlation}", get(flow_timeline))
        .route("/explorer/chart.svg", get(chart))
        .route("/explorer/read-models", get(read_models))
        .route("/explorer/read-models/{name}/rebuild", post(rebuild))
        .route("/explorer/processes", get(processes))
        .route("/explorer/scheduled", get(scheduled))
        .route("/explorer/scheduled/{id}/discard", post(discard))
        .route("/explorer/dead-letters", get(dead_letters))
        .route("/explorer/dead-letters/{id}/retry", post(retry_dead_letter))
        .route(
            "/explorer/dead-letters/{id}/discard",
            post(discard_dead_letter),
        )
}

// ----- the operator's session -----

/// An operator signed in.
struct Operator {
    form_token: String,
}

impl Operator {
    /// The hidden field every form of this session carries.
    fn form_field(&self) -> Markup {
        html! { input type="hidden" name=(FORM_TOKEN) value=(self.form_token); }
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The operator token, or a 404 page: a server without one has no explorer.
fn operator_token(state: &WebState) -> Result<&str, PageError> {
    state.operator_token.as_deref().ok_or_else(|| {
        PageError::not_found(
            SITE,
            "This server has no operator token (serve --operator-token), so no explorer.",
        )
    })
}

/// The operator, if the cookie is this token's and has not expired; otherwise a 401 page.
fn signed_in(state: &WebState, jar: &SignedCookieJar) -> Result<Operator, PageError> {
    let token = operator_token(state)?;
    let denied = || {
        PageError::new(
            SITE,
            StatusCode::UNAUTHORIZED,
            "Please sign in",
            "The explorer is the operator's: sign in with the operator token.",
        )
    };
    let cookie = jar.get(COOKIE).ok_or_else(denied)?;
    let value = cookie.value();
    let (expires, hash) = value.split_once('.').ok_or_else(denied)?;
    let expires: i64 = expires.parse().map_err(|_| denied())?;
    if expires <= Utc::now().timestamp() || hash != sha256_hex(token) {
        return Err(denied());
    }
    Ok(Operator {
        form_token: sha256_hex(&format!("form:{value}")),
    })
}

/// As [`signed_in`], for a form posted: it must carry the session's form token.
fn signed_in_form(
    state: &WebState,
    jar: &SignedCookieJar,
    fields: &Fields,
) -> Result<Operator, PageError> {
    let operator = signed_in(state, jar)?;
    if fields.text(FORM_TOKEN) != operator.form_token {
        return Err(PageError::form_refused(SITE));
    }
    Ok(operator)
}

fn login_page(messages: &[String]) -> Markup {
    let body = html! {
        section.card {
            h1 { "Event store explorer" }
            p.meta { "Sign in with the operator token the server was started with." }
            (errors(messages))
            form.stack method="post" action="/explorer/login" {
                label for="token" { "Operator token" }
                input #token type="password" name="token" required autocomplete="off";
                div.actions { button type="submit" { "Sign in" } }
            }
        }
    };
    layout(SITE, "Sign in", &body)
}

async fn login_form() -> Markup {
    login_page(&[])
}

async fn login(
    State(state): State<WebState>,
    client: Client,
    jar: SignedCookieJar,
    headers: HeaderMap,
    fields: Fields,
) -> PageResult {
    let token = operator_token(&state)?;
    let given = fields.text("token");
    let keys = throttle::keys("operator", "", client);
    match state.throttle.attempt(&keys, || {
        (given.as_bytes() == token.as_bytes()).then_some(())
    }) {
        Ok(Some(())) => {
            let expires =
                Utc::now().timestamp() + i64::try_from(LIFETIME.as_secs()).unwrap_or(i64::MAX / 2);
            let cookie = Cookie::build((COOKIE, format!("{expires}.{}", sha256_hex(token))))
                .path("/explorer")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(over_https(&state, &headers))
                .max_age(LIFETIME.try_into().unwrap_or_default())
                .build();
            Ok((jar.add(cookie), see_other("/explorer")).into_response())
        }
        Ok(None) => Ok((
            StatusCode::UNAUTHORIZED,
            login_page(&["That is not the operator token.".to_owned()]),
        )
            .into_response()),
        Err(wait) => Ok((
            StatusCode::TOO_MANY_REQUESTS,
            login_page(&[format!(
                "Too many failed attempts. Try again in {} seconds.",
                wait.as_secs() + 1
            )]),
        )
            .into_response()),
    }
}

async fn logout(State(state): State<WebState>, jar: SignedCookieJar, fields: Fields) -> PageResult {
    signed_in_form(&state, &jar, &fields)?;
    Ok((
        jar.remove(Cookie::build(COOKIE).path("/explorer")),
        see_other("/explorer/login"),
    )
        .into_response())
}

// ----- pages -----

/// The explorer's own navigation, above each page.
fn tabs(operator: &Operator, current: &str) -> Markup {
    html! {
        nav.tabs {
            a.current[current == "overview"] href="/explorer" { "Overview" }
            a.current[current == "streams"] href="/explorer/streams" { "Streams" }
            a.current[current == "read-models"] href="/explorer/read-models" { "Read models" }
            a.current[current == "processes"] href="/explorer/processes" { "Processes" }
            a.current[current == "scheduled"] href="/explorer/scheduled" { "Scheduled" }
            a.current[current == "dead-letters"] href="/explorer/dead-letters" { "Dead letters" }
            form.inline method="post" action="/explorer/logout" {
                (operator.form_field())
                button.link type="submit" { "Sign out" }
            }
        }
    }
}

/// A page of a list read with one item more than it shows: the items it shows, and the
/// link to the next page (`next` makes it from the last item shown) when there is one.
fn paged<T>(mut listed: Vec<T>, next: impl FnOnce(&T) -> String) -> (Vec<T>, Option<String>) {
    let more = listed.len() > PAGE;
    listed.truncate(PAGE);
    let next = more.then(|| listed.last().map(next)).flatten();
    (listed, next)
}

fn store_error(err: cqrs_core::StoreError) -> PageError {
    tracing::error!(error = %cqrs_core::ErrorChain(&err), "the explorer could not read the store");
    PageError::new(
        SITE,
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The store could not be read; try again in a moment.",
    )
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string()
}

async fn overview(State(state): State<WebState>, jar: SignedCookieJar) -> PageResult {
    let operator = match signed_in(&state, &jar) {
        Ok(operator) => operator,
        Err(err) if err.status() == StatusCode::UNAUTHORIZED => {
            return Ok(see_other("/explorer/login"));
        }
        Err(err) => return Err(err),
    };
    state.samples.start(&state.app);
    let storage = state.app.storage();
    let head = storage.head().await.map_err(store_error)?;
    let categories = list_categories(&**storage, None, CATEGORIES)
        .await
        .map_err(store_error)?;
    let dead_letters = storage
        .count_parked(DEAD_LETTERS_COUNTED + 1)
        .await
        .map_err(store_error)?;
    let body = html! {
        (tabs(&operator, "overview"))
        section.card {
            h1 { "Event store" }
            dl.facts {
                dt { "Events" } dd { (head.get()) " (the log's head position)" }
                dt { "Categories" } dd { (categories.len()) }
                dt { "Dead letters" }
                dd {
                    a href="/explorer/dead-letters" {
                        @if dead_letters > DEAD_LETTERS_COUNTED { "more than " (DEAD_LETTERS_COUNTED) }
                        @else { (dead_letters) }
                    }
                    @if dead_letters > 0 { " " span.badge.bad { "to retry or discard" } }
                }
            }
            h2 { "Throughput and lag" }
            p.meta { "Events appended per second, and how many events the slowest read model is behind, sampled every second over the last two minutes." }
            img #live-chart src="/explorer/chart.svg" data-src="/explorer/chart.svg" alt="Throughput and read-model lag over the last two minutes" width="720" height="220";
            h2 { "Streams by category" }
            ul.categories {
                @for category in &categories {
                    li { a href={"/explorer/streams?category=" (urlencode(category))} { (category) } }
                }
            }
        }
    };
    Ok(layout(SITE, "Explorer", &body).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct StreamsQuery {
    /// The category whose streams to list.
    category: Option<String>,
    /// Only streams whose names start with this (after the category's `c-`).
    prefix: Option<String>,
    /// The last stream of the page before.
    after: Option<String>,
}

async fn streams(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PageQuery(query): PageQuery<StreamsQuery>,
) -> PageResult {
    let operator = signed_in(&state, &jar)?;
    let storage = state.app.storage();
    let category = query.category.filter(|c| !c.is_empty());
    let search = query.prefix.unwrap_or_default();
    let prefix = match &category {
        Some(category) => format!("{category}-{search}"),
        None => search.clone(),
    };
    let listed = storage
        .list_streams(&prefix, query.after.as_deref(), PAGE + 1)
        .await
        .map_err(store_error)?;
    let categories = list_categories(&**storage, None, CATEGORIES)
        .await
        .map_err(store_error)?;
    let (listed, next) = paged(listed, |last| {
        let mut link = format!(
            "/explorer/streams?after={}",
            urlencode(last.stream.as_str())
        );
        if let Some(category) = &category {
            link.push_str(&format!("&category={}", urlencode(category)));
        }
        if !search.is_empty() {
            link.push_str(&format!("&prefix={}", urlencode(&search)));
        }
        link
    });
    let title = category
        .as_deref()
        .map_or_else(|| "Every stream".to_owned(), |c| format!("Streams of {c}"));
    let body = html! {
        (tabs(&operator, "streams"))
        div.explorer {
            nav.categories {
                h2 { "Categories" }
                ul {
                    li { a.current[category.is_none()] href="/explorer/streams" { "(all)" } }
                    @for c in &categories {
                        li { a.current[category.as_deref() == Some(c.as_str())] href={"/explorer/streams?category=" (urlencode(c))} { (c) } }
                    }
                }
            }
            section.card {
                h1 { (title) }
                form.inline method="get" action="/explorer/streams" {
                    @if let Some(category) = &category {
                        input type="hidden" name="category" value=(category);
                    }
                    label for="prefix" { "Stream name starts with" }
                    input #prefix type="search" name="prefix" value=(search) placeholder={(category.as_deref().map_or(String::new(), |c| format!("{c}-"))) "…"};
                    button type="submit" { "Search" }
                }
                @if listed.is_empty() {
                    p.meta { "No stream matches." }
                } @else {
                    table.streams {
                        thead { tr { th { "Stream" } th { "Version" } th { "Last position" } th { "Last event at" } } }
                        tbody {
                            @for summary in &listed {
                                (stream_row(summary))
                            }
                        }
                    }
                }
                @if let Some(next) = next {
                    p.pager { a.button.secondary rel="next" href=(next) { "Next streams" } }
                }
            }
        }
    };
    Ok(layout(SITE, &title, &body).into_response())
}

fn stream_row(summary: &StreamSummary) -> Markup {
    html! {
        tr {
            td { a href={"/explorer/streams/" (urlencode(summary.stream.as_str()))} { code { (summary.stream) } } }
            td.number { (summary.version.get()) }
            td.number { (summary.position.get()) }
            td { (time(summary.recorded_at)) }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct StreamQuery {
    /// The first version the page shows.
    from: Option<u64>,
}

async fn stream(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(name): PagePath<String>,
    PageQuery(query): PageQuery<StreamQuery>,
) -> PageResult {
    let operator = signed_in(&state, &jar)?;
    let Ok(stream) = StreamId::new(&name) else {
        return Err(PageError::not_found(
            SITE,
            "That is not a stream name: names have 1 to 200 characters and no control characters.",
        ));
    };
    let storage = state.app.storage();
    let summary = storage
        .list_streams(stream.as_str(), None, 1)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|s| s.stream == stream)
        .ok_or_else(|| {
            PageError::not_found(SITE, format!("The store holds no stream named {stream}."))
        })?;
    let from = Version::new(query.from.unwrap_or(1).max(1));
    let events = storage
        .read_stream_page(&stream, from, PAGE)
        .await
        .map_err(store_error)?;
    let upcasters = crate::domain::versions::upcasters();
    let last_shown = events.last().map_or(from.get(), |e| e.version.get());
    let base = format!("/explorer/streams/{}", urlencode(stream.as_str()));
    let body = html! {
        (tabs(&operator, "streams"))
        section.card {
            p.meta { a href={"/explorer/streams?category=" (urlencode(stream.category()))} { "← " (stream.category()) } }
            h1 { code { (stream) } }
            dl.facts {
                dt { "Version" } dd { (summary.version.get()) }
                dt { "Last position" } dd { (summary.position.get()) }
                dt { "Last event at" } dd { (time(summary.recorded_at)) }
            }
            p { a.button href={(base) "/timeline"} { "Timeline of every flow that touched it" } }
            @if events.is_empty() {
                p.meta { "No events from version " (from.get()) " on." }
            } @else {
                p.meta { "Versions " (from.get()) " to " (last_shown) " of " (summary.version.get()) "." }
            }
            @for event in &events {
                (event_card(event, &upcasters))
            }
            (read_model_rows(&state, &stream))
            p.pager {
                @if from.get() > 1 {
                    a.button.secondary rel="prev" href={(base) "?from=" (from.get().saturating_sub(PAGE as u64).max(1))} { "Earlier events" }
                    " "
                }
                @if last_shown < summary.version.get() {
                    a.button.secondary rel="next" href={(base) "?from=" (last_shown + 1)} { "Later events" }
                }
            }
        }
    };
    Ok(layout(SITE, stream.as_str(), &body).into_response())
}

/// The read models' rows of the aggregate behind `stream`, where the app has them: what a
/// registrant and an owner see of an order.
fn read_model_rows(state: &WebState, stream: &StreamId) -> Markup {
    let order = (stream.category() == "order")
        .then(|| {
            stream
                .local_id()
                .and_then(|id| id.parse::<crate::domain::OrderId>().ok())
        })
        .flatten();
    let Some(order) = order else {
        return html! {};
    };
    let draft = state.app.draft_order(order).ok();
    let priced = state.app.priced_order(order);
    let pretty = |value: Option<serde_json::Value>| {
        value.map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
    };
    html! {
        h2 { "Read models" }
        details open {
            summary { "The order as the registrant sees it (draft order)" }
            @match pretty(draft.and_then(|d| serde_json::to_value(d).ok())) {
                Some(json) => pre.json { (json) },
                None => p.meta { "No row (yet)." },
            }
        }
        details {
            summary { "Its prices (priced order)" }
            @match pretty(priced.and_then(|p| serde_json::to_value(p).ok())) {
                Some(json) => pre.json { (json) },
                None => p.meta { "No row (yet)." },
            }
        }
    }
}

/// How many messages a timeline shows, and how many waiting commands it looks through.
const TIMELINE_MESSAGES: usize = 500;
const WAITING_SCANNED: usize = 10_000;

/// The timeline of one flow: every message with its correlation id.
async fn flow_timeline(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(correlation): PagePath<String>,
) -> PageResult {
    let operator = signed_in(&state, &jar)?;
    let Ok(correlation) = correlation.parse::<uuid::Uuid>() else {
        return Err(PageError::not_found(
            SITE,
            "That is not a correlation id (a UUID).",
        ));
    };
    let title = format!("Flow {correlation}");
    timeline_page(&state, &operator, &title, vec![correlation]).await
}

/// The timeline of every flow whose events are in `stream` (its first 100 events'):
/// an order's placement, its registrant, its payment, its expiry.
async fn stream_timeline(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(name): PagePath<String>,
) -> PageResult {
    let operator = signed_in(&state, &jar)?;
    let Ok(stream) = StreamId::new(&name) else {
        return Err(PageError::not_found(SITE, "That is not a stream name."));
    };
    let events = state
        .app
        .storage()
        .read_stream_page(&stream, Version::START, 100)
        .await
        .map_err(store_error)?;
    if events.is_empty() {
        return Err(PageError::not_found(
            SITE,
            format!("The store holds no stream named {stream}."),
        ));
    }
    let mut flows: Vec<uuid::Uuid> = Vec::new();
    for event in &events {
        if let Some(id) = event.metadata.correlation_id
            && !flows.contains(&id)
        {
            flows.push(id);
        }
    }
    let title = format!("Every flow of {stream}");
    timeline_page(&state, &operator, &title, flows).await
}

async fn timeline_page(
    state: &WebState,
    operator: &Operator,
    title: &str,
    flows: Vec<uuid::Uuid>,
) -> PageResult {
    let storage = state.app.storage();
    let query = cqrs_core::LogQuery {
        correlation_ids: flows.clone(),
        limit: TIMELINE_MESSAGES,
        ..cqrs_core::LogQuery::new()
    };
    let entries = storage.query_log(&query).await.map_err(store_error)?;
    let waiting = of_flows(
        &flows,
        |s: &ScheduledCommand| s,
        |after| storage.list_scheduled(after, 1_000),
    )
    .await?;
    // Commands of these flows given up after their last attempt, which the message log does
    // not hold until they are discarded.
    let dead = of_flows(
        &flows,
        |p: &ParkedCommand| &p.scheduled,
        |after| storage.list_parked(after, 1_000),
    )
    .await?;
    if entries.is_empty() && waiting.is_empty() && dead.is_empty() {
        return Err(PageError::not_found(
            SITE,
            "No message in the log belongs to this flow.",
        ));
    }
    let read_models: Vec<super::timeline::ReadModelMark> = state
        .app
        .read_model_status()
        .await
        .map_err(|e| PageError::from_app(SITE, e))?
        .into_iter()
        .flat_map(|s| std::iter::once(s.live).chain(s.building))
        .map(|p| super::timeline::ReadModelMark {
            key: p.key,
            position: p.position.get(),
        })
        .collect();
    let stream_link = |stream: &str| format!("/explorer/streams/{}", urlencode(stream));
    let full = entries.len() == TIMELINE_MESSAGES;
    let body = html! {
        (tabs(operator, "streams"))
        section.card.wide {
            h1 { (title) }
            p.meta {
                (entries.len()) " messages"
                @if full { " (the first " (TIMELINE_MESSAGES) ")" }
                @match waiting.len() {
                    0 => {},
                    1 => ", 1 command waiting",
                    n => { ", " (n) " commands waiting" },
                }
                @match dead.len() {
                    0 => {},
                    1 => { ", " a href="/explorer/dead-letters" { "1 dead letter" } },
                    n => { ", " a href="/explorer/dead-letters" { (n) " dead letters" } },
                }
                ". Commands are rounded, events square, rejected commands and dead letters red, \
                 waiting ones dashed (at their due time); an arrow goes from each message to what \
                 it caused. The squares on the right are the read models, filled once one has \
                 applied the event."
            }
            div.timeline {
                (super::timeline::picture(&entries, &waiting, &dead, &read_models, stream_link))
            }
            ol.read-models {
                @for model in &read_models {
                    li { code { (model.key) } " at position " (model.position) }
                }
            }
        }
    };
    Ok(layout(SITE, title, &body).into_response())
}

/// One event: its place, its metadata, and its payload as stored and as the application
/// reads it (after the upcasters), when the two differ.
/// The commands of `flows` among the first [`WAITING_SCANNED`] that `list` pages through, a
/// thousand at a time after the id it is given, in id order.
async fn of_flows<T, Fut>(
    flows: &[uuid::Uuid],
    command: impl Fn(&T) -> &ScheduledCommand,
    list: impl Fn(Option<uuid::Uuid>) -> Fut,
) -> Result<Vec<T>, PageError>
where
    Fut: Future<Output = Result<Vec<T>, cqrs_core::StoreError>>,
{
    let mut found = Vec::new();
    let mut after = None;
    let mut scanned = 0;
    while scanned < WAITING_SCANNED {
        let page = list(after).await.map_err(store_error)?;
        scanned += page.len();
        after = page.last().map(|item| command(item).command.id);
        let full = page.len() == 1_000;
        found.extend(page.into_iter().filter(|item| {
            command(item)
                .command
                .correlation_id
                .is_some_and(|c| flows.contains(&c))
        }));
        if !full {
            break;
        }
    }
    Ok(found)
}

fn event_card(event: &RecordedEvent, upcasters: &cqrs_core::Upcasters) -> Markup {
    let meta = &event.metadata;
    let stored = event
        .payload
        .to_value()
        .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default());
    let upcast = event.payload.to_value().ok().and_then(|value| {
        let start = Upcasted::new(event.event_type.clone(), event.schema_version, value);
        match upcasters.upcast(start.clone(), Some(meta)) {
            Ok(done) if done.len() == 1 && done[0] == start => None,
            Ok(done) => Some(Ok(done)),
            Err(err) => Some(Err(err.to_string())),
        }
    });
    let trace = TraceParent::of(&meta.headers);
    html! {
        article.event id={"v" (event.version.get())} {
            header {
                span.version { "v" (event.version.get()) }
                " "
                strong { code { (event.event_type) } }
                " "
                span.meta { "schema " (event.schema_version) " · position " (event.position.get()) " · " (time(meta.recorded_at)) }
            }
            dl.metadata {
                dt { "Event id" } dd { code { (meta.event_id) } }
                @if let Some(id) = meta.correlation_id { dt { "Correlation" } dd { a href={"/explorer/timeline/" (id)} { code { (id) } } } }
                @if let Some(id) = meta.causation_id { dt { "Causation" } dd { code { (id) } } }
                @if let Some(id) = meta.command_id { dt { "Command" } dd { code { (id) } } }
                @if let Some(trace) = trace { dt { "Trace" } dd { code { (trace.trace_id_hex()) } } }
                @for (name, value) in &meta.headers {
                    dt { (name) } dd { code { (value) } }
                }
            }
            @match &stored {
                Ok(json) => {
                    details open[upcast.is_none()] {
                        summary { "Payload as stored" }
                        pre.json { (json) }
                    }
                }
                Err(err) => p.error { "The payload is not JSON: " (err) }
            }
            @match &upcast {
                Some(Ok(done)) => {
                    details open {
                        summary { "As the application reads it (upcast)" }
                        @for part in done {
                            p.meta { code { (part.event_type) } " schema " (part.schema_version) }
                            pre.json { (serde_json::to_string_pretty(&part.payload).unwrap_or_default()) }
                        }
                    }
                }
                Some(Err(err)) => p.error { "Upcasting fails: " (err) }
                None => {}
            }
        }
    }
}

/// The live chart: the samples the server took, drawn.
async fn chart(State(state): State<WebState>, jar: SignedCookieJar) -> PageResult {
    signed_in(&state, &jar)?;
    state.samples.start(&state.app);
    let svg = crate::telemetry::chart(&state.samples.snapshot());
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "image/svg+xml"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

// ----- read models, processes, scheduled commands -----

async fn read_models(State(state): State<WebState>, jar: SignedCookieJar) -> PageResult {
    let operator = signed_in(&state, &jar)?;
    let all = state
        .app
        .read_model_status()
        .await
        .map_err(|e| PageError::from_app(SITE, e))?;
    let building = all.iter().any(|s| s.building.is_some());
    let lag = |head: u64, at: u64| head.saturating_sub(at);
    let body = html! {
        (tabs(&operator, "read-models"))
        section.card {
            h1 { "Read models" }
            p.meta {
                "Each read model serves from its live version; a new version, or a rebuild of the \
                 live one, is built beside it from the start of the log and replaces it once it \
                 has caught up. Lag is in events behind the log's head."
                @if building { " This page refreshes while one is being built." }
            }
            table.read-models {
                thead { tr { th { "Read model" } th { "Version" } th { "Position" } th { "Lag" } th { "State" } th {} } }
                tbody {
                    @for status in &all {
                        tr {
                            td { strong { (status.name) } }
                            td { code { (status.live.key) } }
                            td.number { (status.live.position.get()) }
                            td.number { (lag(status.head.get(), status.live.position.get())) }
                            td {
                                @if let Some(err) = &status.live.last_error { span.error { "failing: " (err) } }
                                @else if status.live.live { span.badge.ok { "live" } }
                                @else { span.badge { "catching up" } }
                            }
                            td {
                                form method="post" action={"/explorer/read-models/" (urlencode(&status.name)) "/rebuild"} {
                                    (operator.form_field())
                                    button.secondary type="submit" disabled[status.building.is_some()] { "Rebuild" }
                                }
                            }
                        }
                        @if let Some(next) = &status.building {
                            tr.building {
                                td { "↳ being built" }
                                td { code { (next.key) } }
                                td.number { (next.position.get()) }
                                td.number { (lag(status.head.get(), next.position.get())) }
                                td {
                                    @if let Some(err) = &next.last_error { span.error { "failing: " (err) } }
                                    @else { span.badge { "building" } }
                                }
                                td {}
                            }
                        }
                    }
                }
            }
            @let retired: Vec<&String> = all.iter().flat_map(|s| &s.retired).collect();
            @if !retired.is_empty() {
                p.meta { "Retired: " @for (i, key) in retired.iter().enumerate() { @if i > 0 { ", " } code { (key) } } }
            }
            p.meta { "The log's head: " (all.first().map_or(0, |s| s.head.get())) "." }
        }
    };
    let refresh = building.then_some(2);
    Ok(layout_with(SITE, "Read models", &body, refresh).into_response())
}

async fn rebuild(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(name): PagePath<String>,
    fields: Fields,
) -> PageResult {
    signed_in_form(&state, &jar, &fields)?;
    match state.app.rebuild_read_model(&name) {
        Ok(()) => Ok(see_other("/explorer/read-models")),
        Err(crate::app::AppError::Busy(message)) => Err(PageError::new(
            SITE,
            StatusCode::CONFLICT,
            "Being built already",
            message,
        )),
        Err(err) => Err(PageError::from_app(SITE, err)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ProcessesQuery {
    after: Option<String>,
}

async fn processes(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PageQuery(query): PageQuery<ProcessesQuery>,
) -> PageResult {
    let operator = signed_in(&state, &jar)?;
    let after = match query.after.as_deref().map(StreamId::new) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Err(PageError::bad_request(SITE, "That is not a process id.")),
    };
    let listed = state
        .app
        .storage()
        .list_processes(after.as_ref(), PAGE + 1)
        .await
        .map_err(store_error)?;
    let (listed, next) = paged(listed, |last| {
        format!("/explorer/processes?after={}", urlencode(last.id.as_str()))
    });
    let body = html! {
        (tabs(&operator, "processes"))
        section.card {
            h1 { "Process instances" }
            p.meta { "Each process manager's instances, with their saved state: the position of the last event each took, and whether it has finished." }
            @if listed.is_empty() { p.meta { "No process has saved a state." } }
            @for process in &listed {
                article.event {
                    header {
                        strong { code { (process.id) } }
                        " "
                        @if process.completed { span.badge { "completed" } } @else { span.badge.ok { "running" } }
                        " "
                        span.meta { "v" (process.version.get()) " · last event at position " (process.last_position.get()) " · saved " (time(process.updated_at)) }
                    }
                    details {
                        summary { "State" }
                        pre.json { (process.state.to_value().map(|v| serde_json::to_string_pretty(&v).unwrap_or_default()).unwrap_or_else(|e| e.to_string())) }
                    }
                }
            }
            @if let Some(next) = next {
                p.pager { a.button.secondary rel="next" href=(next) { "Next instances" } }
            }
        }
    };
    Ok(layout(SITE, "Processes", &body).into_response())
}

/// A page of a list in id order: the last id of the page before.
#[derive(Debug, Default, Deserialize)]
struct IdCursor {
    after: Option<uuid::Uuid>,
}

async fn scheduled(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PageQuery(query): PageQuery<IdCursor>,
) -> PageResult {
    let operator = signed_in(&state, &jar)?;
    let listed = state
        .app
        .storage()
        .list_scheduled(query.after, PAGE + 1)
        .await
        .map_err(store_error)?;
    let (listed, next) = paged(listed, |last| {
        format!("/explorer/scheduled?after={}", last.command.id)
    });
    let now = Utc::now();
    let body = html! {
        (tabs(&operator, "scheduled"))
        section.card {
            h1 { "Scheduled commands" }
            p.meta {
                "Commands waiting for their due time (timeouts) or for delivery (a process \
                 manager's commands, retried after a failed attempt), in id order. A command that \
                 fails every attempt is parked with the "
                a href="/explorer/dead-letters" { "dead letters" }
                ". Discarding one here means it is never delivered."
            }
            @if listed.is_empty() { p.meta { "Nothing is waiting." } }
            @else {
                table.scheduled {
                    thead { tr { th { "Command" } th { "Target" } th { "Due" } th { "Attempts" } th { "Flow" } th {} } }
                    tbody {
                        @for s in &listed {
                            @let c = &s.command;
                            tr {
                                td { code { (c.command_type) } br; span.meta { code { (c.id) } } }
                                td { a href={"/explorer/streams/" (urlencode(c.target.as_str()))} { code { (c.target) } } }
                                td { (time(s.due_at)) @if s.due_at <= now { " " span.badge { "due" } } }
                                td.number { (s.attempts) }
                                td { @if let Some(flow) = c.correlation_id { a href={"/explorer/timeline/" (flow)} { "timeline" } } }
                                td {
                                    form method="post" action={"/explorer/scheduled/" (c.id) "/discard"} {
                                        (operator.form_field())
                                        button.danger type="submit" { "Discard" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p.pager { a.button.secondary rel="next" href=(next) { "Next commands" } }
            }
        }
    };
    Ok(layout(SITE, "Scheduled commands", &body).into_response())
}

async fn discard(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<uuid::Uuid>,
    fields: Fields,
) -> PageResult {
    signed_in_form(&state, &jar, &fields)?;
    cqrs_core::cancel_command(&**state.app.storage(), id)
        .await
        .map_err(store_error)?;
    tracing::info!(command_id = %id, "the operator discarded a scheduled command");
    Ok(see_other("/explorer/scheduled"))
}

async fn dead_letters(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PageQuery(query): PageQuery<IdCursor>,
) -> PageResult {
    let operator = signed_in(&state, &jar)?;
    let listed = state
        .app
        .storage()
        .list_parked(query.after, PAGE + 1)
        .await
        .map_err(store_error)?;
    let (listed, next) = paged(listed, |last| {
        format!("/explorer/dead-letters?after={}", last.scheduled.command.id)
    });
    let body = html! {
        (tabs(&operator, "dead-letters"))
        section.card {
            h1 { "Dead letters" }
            p.meta {
                "Scheduled commands the dispatcher gave up on after their last attempt failed, \
                 in id order, with the last error. Mend the cause, then retry one: it is due at \
                 once, with fresh attempts. Or discard it: the message log records it as \
                 rejected, and it is never delivered."
            }
            @if listed.is_empty() { p.meta { "No dead letter: every command was delivered or is still being tried." } }
            @for dead in &listed {
                @let c = &dead.scheduled.command;
                article.event.dead-letter {
                    header {
                        strong { code { (c.command_type) } }
                        " to "
                        a href={"/explorer/streams/" (urlencode(c.target.as_str()))} { code { (c.target) } }
                        " "
                        span.badge.bad { (dead.scheduled.attempts) @if dead.scheduled.attempts == 1 { " attempt" } @else { " attempts" } }
                        " "
                        span.meta { "parked " (time(dead.parked_at)) " · due " (time(dead.scheduled.due_at)) " · " code { (c.id) } }
                        @if let Some(flow) = c.correlation_id {
                            " · " a href={"/explorer/timeline/" (flow)} { "timeline" }
                        }
                    }
                    pre.reason { (dead.reason) }
                    details {
                        summary { "Payload" }
                        pre.json { (pretty(&c.payload)) }
                    }
                    div.actions {
                        form method="post" action={"/explorer/dead-letters/" (c.id) "/retry"} {
                            (operator.form_field())
                            button type="submit" { "Retry" }
                        }
                        form method="post" action={"/explorer/dead-letters/" (c.id) "/discard"} {
                            (operator.form_field())
                            button.danger type="submit" { "Discard" }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p.pager { a.button.secondary rel="next" href=(next) { "Next dead letters" } }
            }
        }
    };
    Ok(layout(SITE, "Dead letters", &body).into_response())
}

/// A stored payload as indented JSON, or as stored when it does not parse.
fn pretty(payload: &cqrs_core::Json) -> String {
    payload
        .to_value()
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| payload.as_str().to_owned())
}

async fn retry_dead_letter(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<uuid::Uuid>,
    fields: Fields,
) -> PageResult {
    on_dead_letter(&state, &jar, &fields, id, false).await
}

async fn discard_dead_letter(
    State(state): State<WebState>,
    jar: SignedCookieJar,
    PagePath(id): PagePath<uuid::Uuid>,
    fields: Fields,
) -> PageResult {
    on_dead_letter(&state, &jar, &fields, id, true).await
}

/// Retries the dead letter `id`, or discards it, for a signed-in operator's form.
async fn on_dead_letter(
    state: &WebState,
    jar: &SignedCookieJar,
    fields: &Fields,
    id: uuid::Uuid,
    discard: bool,
) -> PageResult {
    signed_in_form(state, jar, fields)?;
    let done = if discard {
        state.app.discard_dead_letter(id).await
    } else {
        state.app.retry_dead_letter(id).await
    };
    done.map_err(|e| PageError::from_app(SITE, e))?;
    Ok(see_other("/explorer/dead-letters"))
}

/// Percent-encodes `text` for a path segment or a query value.
fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_for_links() {
        assert_eq!(urlencode("order-01ab"), "order-01ab");
        assert_eq!(urlencode("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
    }
}
