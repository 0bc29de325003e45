//! The HTML sites over plain HTTP: what the browser tests cannot cheaply reach — bad input
//! on every form, unknown pages, and the owner portal's session (a wrong code, a forged or
//! foreign cookie, sees nothing; signing out, a changed code or a form from elsewhere ends
//! or refuses it).

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;

use crate::{Server, sqlite};

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn page(server: &Server, path: &str) -> (u16, String) {
    let response = client().get(server.url(path)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn form(
    server: &Server,
    path: &str,
    fields: &[(&str, &str)],
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = client().post(server.url(path)).form(fields);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrant_pages_answer_bad_input_with_a_page_and_a_4xx() {
    let server = sqlite().await;
    let conference = server.published_conference("pages", 5).await;

    let (status, home) = page(&server, "/").await;
    assert_eq!(status, 200);
    assert!(home.contains("href=\"/pages/\""), "{home}");
    let (status, selection) = page(&server, "/pages/register").await;
    assert_eq!(status, 200);
    assert!(selection.contains("Available"));
    assert!(selection.contains(&format!("qty_{}", conference.paid)));

    for (path, code) in [
        ("/nothing/", 404),
        ("/nothing/register", 404),
        ("/pages/order/not-an-id", 404),
        ("/pages/registrant?order_id=nope", 400),
        ("/pages/no/such/page", 404),
    ] {
        let (status, body) = page(&server, path).await;
        assert_eq!(status, code, "{path}: {body}");
        assert!(
            body.starts_with("<!DOCTYPE html>"),
            "{path}: a page, not JSON"
        );
    }
    // An unknown order is not waited for.
    let started = std::time::Instant::now();
    let (status, _) = page(
        &server,
        &format!("/pages/registrant?order_id={}", uuid::Uuid::now_v7()),
    )
    .await;
    assert_eq!(status, 404);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    let order = uuid::Uuid::now_v7().to_string();
    let qty = format!("qty_{}", conference.paid);
    for (fields, status, says) in [
        (
            vec![("order_id", order.as_str())],
            400,
            "One or more items are required",
        ),
        (
            vec![("order_id", order.as_str()), (qty.as_str(), "-1")],
            400,
            "cannot be negative",
        ),
        (
            vec![("order_id", order.as_str()), (qty.as_str(), "two")],
            400,
            "is not a quantity",
        ),
        (
            vec![("order_id", "nope"), (qty.as_str(), "1")],
            400,
            "not valid",
        ),
        (
            vec![("order_id", order.as_str()), (qty.as_str(), "6")],
            409,
            "Only 5 seats of Full pass are left",
        ),
        (
            vec![
                ("order_id", order.as_str()),
                ("qty_0190a5d2-0000-7000-8000-000000000000", "1"),
            ],
            409,
            "no longer on sale",
        ),
    ] {
        let response = form(&server, "/pages/register", &fields, None).await;
        assert_eq!(response.status().as_u16(), status, "{fields:?}");
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{fields:?}: {body}");
    }
    // Nothing was placed by any of them.
    let (status, _) = server.get(&format!("/api/orders/{order}")).await;
    assert_eq!(status, 404);

    // A right one goes to checkout, which shows the order once it is reserved.
    let response = form(
        &server,
        "/pages/register",
        &[("order_id", &order), (&qty, "2")],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 303);
    let next = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        next.starts_with(&format!("/pages/registrant?order_id={order}&min_version=")),
        "{next}"
    );
    let (status, checkout) = page(&server, &next).await;
    assert_eq!(status, 200, "{checkout}");
    assert!(checkout.contains("$200.00"), "{checkout}");
    assert!(checkout.contains("payment-method"));

    // Checkout refuses mismatched emails, and keeps what was typed.
    let response = form(
        &server,
        "/pages/registrant",
        &[
            ("order_id", &order),
            ("first_name", "Ana"),
            ("last_name", "Lima"),
            ("email", "ana@example.com"),
            ("confirm_email", "ana@example.org"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("The two emails differ"), "{body}");
    assert!(body.contains("value=\"Lima\""), "{body}");
    let response = form(
        &server,
        "/pages/registrant",
        &[
            ("order_id", &order),
            ("first_name", "Ana"),
            ("last_name", "Lima"),
            ("email", "not-an-email"),
            ("confirm_email", "not-an-email"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("is not an email address")
    );

    // A form over the body limit is a 400 page.
    let big = "x".repeat(70 * 1024);
    let response = form(
        &server,
        "/pages/register",
        &[("order_id", &order), ("pad", &big)],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("64 KiB"));

    // Locating with a wrong code finds nothing and keeps the email.
    let response = form(
        &server,
        "/pages/order/find",
        &[("email", "ana@example.com"), ("access_code", "AAAAAA")],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 404);
    let body = response.text().await.unwrap();
    assert!(body.contains("Could not find an order"));
    assert!(body.contains("value=\"ana@example.com\""));
}

/// The form token on the portal page at `path`, for the session of `cookie`.
async fn form_token(server: &Server, path: &str, cookie: &str) -> String {
    let page = client()
        .get(server.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"form_token\" value=\"";
    let at = page.find(marker).expect("a form token") + marker.len();
    page[at..at + 32].to_owned()
}

/// Signs in as the owner of `conference`; returns the session cookie.
async fn sign_in(server: &Server, email: &str, code: &str) -> reqwest::Response {
    form(
        server,
        "/admin/login",
        &[("email", email), ("access_code", code)],
        None,
    )
    .await
}

/// Signing out ends the session on the server (its cookie, kept, opens nothing); a changed
/// access code ends every session opened with the old one, and the old code opens nothing;
/// over HTTPS the cookie is `Secure`; a form posted from another site is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_on_sign_out_and_code_change_and_refuse_other_sites() {
    let server = sqlite().await;
    let ours = server.published_conference("ended", 5).await;
    let details = format!("/admin/{}", ours.id);
    let opens = |cookie: String| {
        let url = server.url(&details);
        async move {
            client()
                .get(url)
                .header(COOKIE, cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    let first = session(&sign_in(&server, "ana@example.com", &ours.code).await);
    let second = session(&sign_in(&server, "ana@example.com", &ours.code).await);
    assert_eq!(opens(first.clone()).await, 200);
    let token = form_token(&server, &details, &first).await;
    let out = form(
        &server,
        "/admin/logout",
        &[("form_token", &token)],
        Some(&first),
    )
    .await;
    assert_eq!(out.status().as_u16(), 303);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        opens(first).await,
        401,
        "signed out: the kept cookie opens nothing"
    );
    assert_eq!(opens(second.clone()).await, 200, "another session goes on");

    // A new code, from the second session: it goes on under a new cookie; sessions opened
    // with the old code end, and the old code opens nothing.
    let third = session(&sign_in(&server, "ana@example.com", &ours.code).await);
    let token = form_token(&server, &details, &second).await;
    let changed = form(
        &server,
        &format!("{details}/access-code"),
        &[("form_token", &token)],
        Some(&second),
    )
    .await;
    assert_eq!(changed.status().as_u16(), 303);
    let renewed = session(&changed);
    assert_eq!(opens(third).await, 401, "opened with the old code");
    assert_eq!(opens(second).await, 401);
    let page = client()
        .get(server.url(&details))
        .header(COOKIE, &renewed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(&ours.code), "the page shows the new code");
    let old = sign_in(&server, "ana@example.com", &ours.code).await;
    assert_eq!(old.status().as_u16(), 401);

    // Over HTTPS (as the proxy says), the cookie is Secure.
    let marker = "id=\"access-code\">";
    let at = page.find(marker).unwrap() + marker.len();
    let new_code = &page[at..at + 12];
    let https = client()
        .post(server.url("/admin/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("email", "ana@example.com"), ("access_code", new_code)])
        .send()
        .await
        .unwrap();
    assert_eq!(https.status().as_u16(), 303);
    assert!(
        https.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Secure")
    );

    // Another site's form, even with the cookie the browser would add: refused.
    let token = form_token(&server, &details, &renewed).await;
    for (origin, fetch_site) in [
        (Some("http://evil.example"), None),
        (Some("null"), None),
        (None, Some("cross-site")),
    ] {
        let mut request = client()
            .post(server.url(&format!("{details}/unpublish")))
            .header(COOKIE, &renewed)
            .form(&[("form_token", token.as_str())]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = fetch_site {
            request = request.header("sec-fetch-site", site);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "{origin:?} {fetch_site:?}");
    }
    // The same form from the site itself goes through.
    let own = client()
        .post(server.url(&format!("{details}/unpublish")))
        .header(COOKIE, &renewed)
        .header("origin", server.url(""))
        .header("sec-fetch-site", "same-origin")
        .form(&[("form_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(own.status().as_u16(), 303);
    let (status, _) = server.get("/api/conferences/ended").await;
    assert_eq!(status, 404, "unpublished");
}

/// The home page shows 50 conferences at a time, with a link to the next 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_page_pages() {
    let server = sqlite().await;
    for n in 0..51 {
        server.published_conference(&format!("home{n:02}"), 5).await;
    }
    let (status, first) = page(&server, "/").await;
    assert_eq!(status, 200);
    assert_eq!(first.matches("<li>").count(), 50, "{first}");
    assert!(first.contains("href=\"/home00/\""));
    assert!(!first.contains("href=\"/home50/\""));
    let marker = "rel=\"next\" href=\"";
    let at = first.find(marker).expect("a link to the next page") + marker.len();
    let next = &first[at..first[at..].find('"').unwrap() + at];
    let (status, second) = page(&server, next).await;
    assert_eq!(status, 200);
    assert_eq!(second.matches("<li>").count(), 1, "{second}");
    assert!(second.contains("href=\"/home50/\""));
    assert!(!second.contains("rel=\"next\""), "the last page");
    let (status, _) = page(&server, "/?after=nonsense").await;
    assert_eq!(status, 400);
}

/// The session cookie the portal set on `response`.
fn session(response: &reqwest::Response) -> String {
    let set = response.headers()[SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_portal_shows_nothing_without_the_right_session() {
    let server = sqlite().await;
    let ours = server.published_conference("ours", 5).await;
    let theirs = server.published_conference("theirs", 5).await;

    // No session: nothing of the conference.
    for path in ["", "/edit", "/seats", "/orders"] {
        let (status, body) = page(&server, &format!("/admin/{}{path}", ours.id)).await;
        assert_eq!(status, 401, "{path}");
        assert!(!body.contains(&ours.code), "{path} shows the access code");
        assert!(!body.contains("Devconf"), "{path} shows the conference");
    }
    let response = form(&server, &format!("/admin/{}/publish", ours.id), &[], None).await;
    assert_eq!(response.status().as_u16(), 401);

    // A wrong code: refused, the email kept.
    let response = form(
        &server,
        "/admin/login",
        &[("email", "ana@example.com"), ("access_code", "AAAAAA")],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 401);
    let body = response.text().await.unwrap();
    assert!(body.contains("Could not locate a conference with the provided email and access code"));
    assert!(body.contains("value=\"ana@example.com\""));

    // The right one: a signed session that opens this conference only.
    let response = form(
        &server,
        "/admin/login",
        &[
            ("email", "ANA@example.com"),
            ("access_code", &ours.code.to_lowercase()),
        ],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(
        response.headers()[LOCATION],
        format!("/admin/{}", ours.id).as_str()
    );
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly")
            && set.contains("SameSite=Lax")
            && set.contains("Max-Age=28800")
            && !set.contains("Secure"),
        "{set}"
    );
    assert!(
        !set.to_lowercase().contains(&ours.code.to_lowercase()) && !set.contains("ana@"),
        "the cookie holds no secret but its token: {set}"
    );
    let cookie = session(&response);
    let opened = client()
        .get(server.url(&format!("/admin/{}", ours.id)))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status().as_u16(), 200);
    assert!(opened.text().await.unwrap().contains(&ours.code));
    let foreign = client()
        .get(server.url(&format!("/admin/{}", theirs.id)))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 401);

    // A forged session (the token changed, the signature not) opens nothing.
    let (name, value) = cookie.split_once('=').unwrap();
    let last = value.chars().last().unwrap();
    let forged = format!(
        "{name}={}{}",
        &value[..value.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let forged = client()
        .get(server.url(&format!("/admin/{}", ours.id)))
        .header(COOKIE, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);

    // A form posted without the session's form token changes nothing.
    let response = form(
        &server,
        &format!("/admin/{}/unpublish", ours.id),
        &[],
        Some(&cookie),
    )
    .await;
    assert_eq!(response.status().as_u16(), 403);
    let (_, view) = server.get("/api/conferences/ours").await;
    assert!(view["id"].is_string(), "still published: {view}");
    let token = form_token(&server, &format!("/admin/{}", ours.id), &cookie).await;

    // With the session, bad seat types are refused with the reason, and nothing changes.
    for (fields, says) in [
        (
            vec![
                ("name", "X"),
                ("description", "d"),
                ("quantity", "1"),
                ("price", "1"),
            ],
            "2 to 70 characters",
        ),
        (
            vec![
                ("name", "Ok name"),
                ("description", "d"),
                ("quantity", "-3"),
                ("price", "1"),
            ],
            "not a whole number",
        ),
        (
            vec![
                ("name", "Ok name"),
                ("description", "d"),
                ("quantity", "3"),
                ("price", "lots"),
            ],
            "not an amount",
        ),
        (
            vec![
                ("name", "Ok name"),
                ("description", "d"),
                ("quantity", "3"),
                ("price", "60000"),
            ],
            "0 to 50,000",
        ),
    ] {
        let mut fields = fields;
        fields.push(("form_token", &token));
        let response = form(
            &server,
            &format!("/admin/{}/seats", ours.id),
            &fields,
            Some(&cookie),
        )
        .await;
        assert_eq!(response.status().as_u16(), 400, "{fields:?}");
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{fields:?}: {body}");
    }
    // Seat types of a published conference stay.
    let response = form(
        &server,
        &format!("/admin/{}/seats/{}/delete", ours.id, ours.paid),
        &[("form_token", &token)],
        Some(&cookie),
    )
    .await;
    assert_eq!(response.status().as_u16(), 409);
    let (_, view) = server.get("/api/conferences/ours").await;
    assert_eq!(view["seat_types"].as_array().unwrap().len(), 2);
    // The read models' versions, for upgrades.
    let models = client()
        .get(server.url(&format!("/admin/{}/read-models", ours.id)))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status().as_u16(), 200);
    let body = models.text().await.unwrap();
    assert!(
        body.contains("conference_directory@v2") && body.contains("order_views@v2"),
        "{body}"
    );
    let (status, _) = page(&server, &format!("/admin/{}/read-models", ours.id)).await;
    assert_eq!(status, 401, "not without the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_conference_refuses_bad_fields_and_escapes_what_it_shows() {
    let server = sqlite().await;
    server.published_conference("taken", 5).await;
    let base = [
        ("owner_name", "Olga"),
        ("owner_email", "olga@example.com"),
        ("name", "<script>alert(1)</script> Conf"),
        ("description", "Talks"),
        ("location", "Porto"),
        ("start_date", "2027-05-03"),
        ("end_date", "2027-05-04"),
    ];
    for (slug, status, says) in [
        ("taken", 409, "The chosen conference slug is already taken."),
        ("admin", 400, "is not a slug"),
        ("two words", 400, "is not a slug"),
    ] {
        let mut fields = base.to_vec();
        fields.push(("slug", slug));
        let response = form(&server, "/admin/create", &fields, None).await;
        assert_eq!(response.status().as_u16(), status, "{slug}");
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{slug}: {body}");
    }
    let mut fields = base.to_vec();
    fields.retain(|(k, _)| *k != "end_date");
    fields.extend([("slug", "porto"), ("end_date", "May 4th")]);
    let response = form(&server, "/admin/create", &fields, None).await;
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("is not a date"));

    let mut fields = base.to_vec();
    fields.push(("slug", "porto"));
    let response = form(&server, "/admin/create", &fields, None).await;
    assert_eq!(response.status().as_u16(), 303);
    let cookie = session(&response);
    let details = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let body = client()
        .get(server.url(&details))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt; Conf"),
        "{body}"
    );
    assert!(!body.contains("<script>alert"), "escaped");
    // Unpublished: registrants do not see it.
    let (status, _) = page(&server, "/porto/").await;
    assert_eq!(status, 404);
}

/// Paths an attacker crafts: encoded slashes and backslashes that would make the slug's
/// redirect leave the site, and control characters that no header can carry. Each gets a
/// 4xx page, never a 500 and never a redirect elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_get_a_page_never_a_500_or_a_redirect_elsewhere_and_headers_guard_pages() {
    let server = sqlite().await;
    for path in [
        "/%2Fevil.example",
        "/%5Cevil.example",
        "/%2F%2Fevil.example",
        "/%0a",
        "/%0d%0aSet-Cookie:%20x=1",
        "/%00",
        "/%7F",
        "/%E2%80%AE",
        "/d%D0%B5vconf",
        "/%2Fevil.example/register",
    ] {
        let response = client().get(server.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap_or("?").to_owned());
        assert!(
            (400..500).contains(&status),
            "{path}: {status} {location:?}"
        );
        assert!(location.is_none(), "{path}: redirected to {location:?}");
    }
    // Every answer carries the security headers: a page, an error page, the API.
    for path in [
        "/",
        "/nowhere/",
        "/api/conferences/nowhere",
        "/static/site.js",
    ] {
        let response = client().get(server.url(path)).send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "same-origin", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'"),
            "{path}"
        );
    }
    // A real slug is still sent on to its page.
    server.published_conference("here", 5).await;
    let response = client().get(server.url("/here")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/here/");
}
