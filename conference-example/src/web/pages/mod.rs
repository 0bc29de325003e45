//! The HTML sites: the registrant's site at `/` and the owner's portal at `/admin`,
//! server-rendered with maud over the same application layer as the API. The only script
//! computes the estimated total and runs the reservation countdown; every page works without
//! it.

mod admin;
mod explorer;
mod site;
mod timeline;

use std::collections::HashMap;
use std::str::FromStr;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use maud::{DOCTYPE, Markup, html};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

use crate::app::AppError;
use crate::web::WebState;
use crate::web::error::ApiError;

/// Both sites' routes, and their stylesheet and script.
pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/static/site.css", get(stylesheet))
        .route("/static/site.js", get(script))
        .merge(site::routes())
        .merge(admin::routes())
        .merge(explorer::routes())
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("site.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("site.js"),
    )
        .into_response()
}

/// Which site a page belongs to: its header differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    Registrant,
    Owner,
    /// The operator's explorer.
    Operator,
}

/// A whole page around `body`.
pub(crate) fn layout(site: Site, title: &str, body: &Markup) -> Markup {
    layout_with(site, title, body, None)
}

/// A whole page that reloads itself after `refresh_seconds` (while the system catches up).
pub(crate) fn layout_with(
    site: Site,
    title: &str,
    body: &Markup,
    refresh_seconds: Option<u32>,
) -> Markup {
    let (brand, home) = match site {
        Site::Registrant => ("Contoso Conferences", "/"),
        Site::Owner => ("Contoso Conference Management Portal", "/admin"),
        Site::Operator => ("Contoso Event Store Explorer", "/explorer"),
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh_seconds {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) " · " (brand) }
                link rel="stylesheet" href="/static/site.css";
                script src="/static/site.js" defer {}
            }
            body {
                header.top {
                    a.brand href=(home) { (brand) }
                    nav {
                        @match site {
                            Site::Registrant => a href="/admin" { "Conference owners" },
                            Site::Owner | Site::Operator => a href="/" { "Registrant site" },
                        }
                    }
                }
                main { (body) }
                footer { "Built on cqrs · the CQRS Journey's conference system" }
            }
        }
    }
}

/// An error page: a status, a title and what to do next. Never a panic, never a raw 500 for
/// bad input.
#[derive(Debug, Clone)]
pub(crate) struct PageError {
    site: Site,
    status: StatusCode,
    title: String,
    message: String,
    /// Seconds to wait before trying again (`Retry-After`), when the server is busy.
    retry_after: Option<u64>,
}

impl PageError {
    pub(crate) fn new(
        site: Site,
        status: StatusCode,
        title: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            site,
            status,
            title: title.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The status the page answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn not_found(site: Site, message: impl Into<String>) -> Self {
        Self::new(site, StatusCode::NOT_FOUND, "Not found", message)
    }

    /// A form that did not carry its session's form token: nothing was done (403).
    pub(crate) fn form_refused(site: Site) -> Self {
        Self::new(
            site,
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form did not come from your session's page: open the page again and resend it.",
        )
    }

    pub(crate) fn bad_request(site: Site, message: impl Into<String>) -> Self {
        Self::new(site, StatusCode::BAD_REQUEST, "That did not work", message)
    }

    /// The application's error, as the API would classify it, on a page.
    pub(crate) fn from_app(site: Site, err: AppError) -> Self {
        Self::from_api(site, ApiError::from(err))
    }

    /// An API error on a page, with its status and `Retry-After`.
    pub(crate) fn from_api(site: Site, api: ApiError) -> Self {
        let title = match api.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::SERVICE_UNAVAILABLE if api.retry_after.is_some() => "Busy right now",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
            StatusCode::TOO_MANY_REQUESTS => "Too many orders",
            _ => "That did not work",
        };
        Self {
            retry_after: api.retry_after,
            ..Self::new(site, api.status, title, api.message)
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let back = match self.site {
            Site::Registrant => "/",
            Site::Owner => "/admin",
            Site::Operator => "/explorer",
        };
        let body = html! {
            section.card {
                h1 { (self.title) }
                p.error { (self.message) }
                p { a href=(back) { "Back to the start" } }
            }
        };
        let mut response = (self.status, layout(self.site, &self.title, &body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Whether the browser came over HTTPS, for a cookie's `Secure` flag: the server was told it
/// is behind TLS (`--secure-cookies`), or the proxy in front says so
/// (`X-Forwarded-Proto: https`).
pub(crate) fn over_https(state: &WebState, headers: &axum::http::HeaderMap) -> bool {
    state.secure_cookies()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// A `303 See Other` to `to`, a path on this site: the answer to a form post. A `to` that
/// would leave the site (`//host`, `/\host`) or is no header value (a control character) is
/// a 404 page instead: such a path comes from a request, never from the site's own links.
pub(crate) fn see_other(to: &str) -> Response {
    let local = to.starts_with('/')
        && !to[1..].starts_with(['/', '\\'])
        && !to.chars().any(|c| c.is_control() || c == '\\');
    if !local {
        return PageError::not_found(Site::Registrant, "There is no such page.").into_response();
    }
    Redirect::to(to).into_response()
}

/// A submitted form, as name/value pairs; a malformed one (or one over the body limit) is a
/// 400 page.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields(HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map(|axum::Form(pairs)| Self(pairs.into_iter().collect()))
            .map_err(|rejection: FormRejection| {
                if crate::web::error::body_timed_out(&rejection) {
                    return PageError::new(
                        Site::Registrant,
                        StatusCode::REQUEST_TIMEOUT,
                        "Too slow",
                        "The form did not arrive in time.",
                    );
                }
                let message = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "The form is over 64 KiB.".to_owned()
                } else {
                    rejection.body_text()
                };
                PageError::bad_request(Site::Registrant, message)
            })
    }
}

impl Fields {
    /// The field `name`, trimmed ("" when absent).
    pub(crate) fn text(&self, name: &str) -> String {
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }

    /// Every field whose name starts with `prefix`, by the rest of its name.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .iter()
            .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.trim())))
    }

    /// The field `name` parsed as `T`, or what to tell the person.
    pub(crate) fn parse<T: FromStr>(&self, name: &str, label: &str) -> Result<T, String> {
        let text = self.text(name);
        text.parse()
            .map_err(|_| format!("{label}: {text:?} is not valid."))
    }

    /// The date field `name` (`yyyy-mm-dd`, or `yyyy/mm/dd` as the Journey wrote them) as
    /// midnight UTC.
    pub(crate) fn date(&self, name: &str, label: &str) -> Result<DateTime<Utc>, String> {
        let text = self.text(name);
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .or_else(|_| NaiveDate::parse_from_str(&text, "%Y/%m/%d"))
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc())
            .ok_or_else(|| format!("{label}: {text:?} is not a date (yyyy-mm-dd)."))
    }
}

/// How many items a page of a list shows.
pub(crate) const PAGE_SIZE: usize = 50;

/// `?after=` of a paged list: the id of the last item of the page before.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub(crate) struct After {
    pub(crate) after: Option<uuid::Uuid>,
}

/// The link to a list's next page, if it has one (`base` is the list's path).
pub(crate) fn next_page(base: &str, next: Option<&str>, label: &str) -> Markup {
    html! {
        @if let Some(next) = next {
            p.pager { a.button.secondary rel="next" href={(base) "?after=" (next)} { (label) } }
        }
    }
}

/// Query parameters; unparsable ones are a 400 page.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PageQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for PageQuery<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                PageError::bad_request(Site::Registrant, rejection.body_text())
            })
    }
}

/// Path parameters; unparsable ones (a malformed id) are a 404 page: no such page exists.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PagePath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PagePath<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|_| PageError::not_found(Site::Registrant, "There is no such page."))
    }
}

/// An amount of money as pages show it.
pub(crate) fn money(amount: Decimal) -> String {
    format!("${:.2}", amount.round_dp(2))
}

/// A date as pages show it.
pub(crate) fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// The countdown to `expires_at`; when it runs out the script goes to `expired_url`.
pub(crate) fn countdown(expires_at: DateTime<Utc>, expired_url: &str) -> Markup {
    let left = (expires_at - Utc::now()).num_seconds().max(0);
    html! {
        p.countdown {
            "Your seats are held for "
            strong data-expires=(expires_at.to_rfc3339()) data-expired-url=(expired_url) {
                (left / 60) ":" (format!("{:02}", left % 60))
            }
            " more minutes."
        }
    }
}

/// A list of error messages at the top of a form.
pub(crate) fn errors(messages: &[String]) -> Markup {
    html! {
        @if !messages.is_empty() {
            div.errors role="alert" {
                @for m in messages { p { (m) } }
            }
        }
    }
}
