//! The sites, driven in headless Chromium through WebDriver (fantoccini + chromedriver), each
//! journey on the embedded SQLite store the main job uses (`sqlite::…`) and on a 3-node NATS
//! cluster with three replicas (`nats::…`): a paid order, a zero-cost order with no
//! payment step, a partial reservation and the seat-selection pre-check, a countdown that
//! ends on the expired page, an owner who creates and publishes a conference, and the
//! operator who follows an order through the explorer.
//!
//! Needs Debian's `chromium` and `chromium-driver` (or `CHROMIUM` / `CHROMEDRIVER` pointing
//! at them). Without them each test prints a loud notice and passes, except under `CI`,
//! where it fails. Screenshots (of the SQLite journeys) go to `target/tmp/screenshots`, or to
//! `docs/screenshots` with `UPDATE_SCREENSHOTS=1`.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use conference_example::app::{AppConfig, ConferenceApp, open_storage};
use conference_example::domain::{OrderId, SeatQuantity, SeatTypeId};
use conference_example::read::{ConferenceView, DraftOrderState};
use conference_example::web::{WebState, serve};
use cqrs_core::SystemClock;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::sync::oneshot;

/// The operator token the sites are served with (the explorer's).
const OPERATOR: &str = "operator-secret";

/// How long a page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(15);

// ----- the tools -----

fn tool(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Chromium and chromedriver, or `None` after saying loudly why the test is skipped.
/// Under `CI` a missing browser fails the test instead: CI installs it.
fn browser_tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = tool(
        "CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    );
    let driver = tool("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{test}: CI needs Chromium and ChromeDriver (apt-get install chromium chromium-driver)"
        ),
        _ => {
            eprintln!(
                "\n!!! SKIPPED {test}: no Chromium/ChromeDriver here. Install Debian's chromium and \
                 chromium-driver (or set CHROMIUM and CHROMEDRIVER) to run the browser tests.\n"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A chromedriver process and a headless Chromium session, both ended when dropped.
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(chromium: &Path, driver: &Path) -> Self {
        let port = free_port();
        // Its own process group, which the Chromium it starts joins: dropping the browser
        // ends them all, even when a test panics.
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            client: None,
            driver,
            _profile: profile,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The flags keep Chromium off the network this machine does not have.
        let args = json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,1000",
            format!("--user-data-dir={}", browser._profile.path().display()),
        ]);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killing chromedriver alone leaves its Chromium processes behind: kill the group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

// ----- the server -----

/// The store a journey runs on: every journey runs on SQLite and on a NATS cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Sqlite,
    Nats,
}

tokio::task_local! {
    static ON: On;
}

fn on() -> On {
    ON.try_with(|on| *on).unwrap_or(On::Sqlite)
}

/// The app on a fresh store (SQLite, or a NATS cluster: [`on`]) with the demo conference,
/// served on an ephemeral port.
struct Site {
    base: String,
    app: ConferenceApp,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Site {
    async fn start() -> Self {
        Self::start_with(AppConfig::default()).await
    }

    async fn start_with(config: AppConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn cqrs_core::Storage> = match on() {
            On::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("conference.db").display());
                open_storage(&url).await.unwrap()
            }
            // A 3-node cluster with three replicas (the journey is skipped without one).
            On::Nats => Arc::new(
                cqrs_store_nats::testing::fresh_store()
                    .await
                    .expect("a NATS cluster"),
            ),
        };
        Self::start_on(storage, config, dir).await
    }

    /// The app on `storage`.
    async fn start_on(
        storage: Arc<dyn cqrs_core::Storage>,
        config: AppConfig,
        dir: tempfile::TempDir,
    ) -> Self {
        let app = ConferenceApp::new(storage, Arc::new(SystemClock), config);
        app.settle().await.unwrap();
        conference_example::server::seed(&app).await.unwrap();
        let engine = app.start();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let state = WebState::new(app.clone(), Some(OPERATOR.into()));
        tokio::spawn(async move {
            serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
            engine.stop().await;
        });
        Self {
            base,
            app,
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn demo(&self) -> ConferenceView {
        self.app.conference_by_slug("devconf").expect("the demo")
    }

    fn seat_type(&self, name: &str) -> SeatTypeId {
        self.demo()
            .seat_types
            .values()
            .find(|s| s.name == name)
            .map(|s| s.id)
            .expect("a demo seat type")
    }

    fn available(&self, seat_type: SeatTypeId) -> i64 {
        self.demo().seat_types[&seat_type].available.unwrap()
    }

    async fn until(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !ready(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ----- steps -----

async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // A page that navigates by itself (the countdown's redirect) can make a wait fail with
    // "aborted by navigation" while the page it lands on has the element: ask again.
    let mut found = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await;
    while let Err(err) = &found {
        if tokio::time::Instant::now() >= deadline || !err.to_string().contains("navigation") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        found = c
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await;
    }
    match found {
        Ok(element) => element,
        Err(err) => {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let source = c.source().await.unwrap_or_default();
            panic!("no {css:?} on {url}: {err}\n{source}");
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    wait_for(c, css).await.text().await.unwrap()
}

async fn exists(c: &Client, css: &str) -> bool {
    c.find(Locator::Css(css)).await.is_ok()
}

async fn fill(c: &Client, id: &str, value: &str) {
    let field = wait_for(c, &format!("#{id}")).await;
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Sets a field's value directly: date inputs take typed keys in the browser's locale.
async fn set_value(c: &Client, id: &str, value: &str) {
    c.execute(
        "document.getElementById(arguments[0]).value = arguments[1];",
        vec![json!(id), json!(value)],
    )
    .await
    .unwrap();
}

async fn click(c: &Client, css: &str) {
    wait_for(c, css).await.click().await.unwrap();
}

async fn click_link(c: &Client, label: &str) {
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::LinkText(label))
        .await
        .unwrap_or_else(|e| panic!("no link {label:?}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn select(c: &Client, seat_type: SeatTypeId, quantity: u32) {
    wait_for(c, &format!("select[name='qty_{seat_type}']"))
        .await
        .select_by_value(&quantity.to_string())
        .await
        .unwrap();
}

async fn selected(c: &Client, seat_type: SeatTypeId) -> String {
    wait_for(c, &format!("select[name='qty_{seat_type}']"))
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn available_cell(c: &Client, seat_type: SeatTypeId) -> String {
    text(c, &format!("tr[data-seat-type='{seat_type}'] td.available")).await
}

async fn registrant(c: &Client, first: &str, last: &str, email: &str) {
    fill(c, "first_name", first).await;
    fill(c, "last_name", last).await;
    fill(c, "email", email).await;
    fill(c, "confirm_email", email).await;
}

async fn screenshot(c: &Client, name: &str) {
    if on() != On::Sqlite {
        // The pictures in the docs are the SQLite run's.
        return;
    }
    let dir = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG of {name}");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

// ----- the journeys -----

async fn a_registrant_buys_a_paid_order_and_sees_the_remaining_seats_fall() {
    let Some((chromium, driver)) = browser_tools("paid order") else {
        return;
    };
    let site = Site::start().await;
    let browser = Browser::start(&chromium, &driver).await;
    let c = browser.client();
    let full = site.seat_type("Full pass");

    c.goto(&site.url("/")).await.unwrap();
    screenshot(c, "01-conferences").await;
    click_link(c, "devconf 2026").await;
    wait_for(c, "dl.facts").await;
    screenshot(c, "02-conference").await;
    click_link(c, "Register").await;
    assert_eq!(available_cell(c, full).await, "100");
    select(c, full, 2).await;
    // The estimate is the page's script at work.
    assert_eq!(text(c, "#estimated-total").await, "$398.00");
    screenshot(c, "03-seat-selection").await;
    click(c, "button[type=submit]").await;

    wait_for(c, "#first_name").await;
    assert_eq!(text(c, "#order-total").await, "$398.00");
    assert!(
        exists(c, "#payment-method").await,
        "a paid order offers payment"
    );
    assert!(!exists(c, "#free-order").await);
    assert!(
        exists(c, "p.countdown [data-expires]").await,
        "the countdown runs"
    );
    registrant(c, "Ana", "Lima", "ana.lima@example.com").await;
    screenshot(c, "04-checkout").await;
    click(c, "button[type=submit]").await;

    wait_for(c, "#accept").await;
    assert_eq!(text(c, "#payment-amount").await, "$398.00");
    screenshot(c, "05-payment").await;
    click(c, "#accept").await;

    assert_eq!(text(c, "h2.success").await, "Registration success");
    let code = text(c, "#access-code").await;
    assert_eq!(code.len(), 12, "the access code: {code}");
    screenshot(c, "06-thank-you").await;

    // The remaining seats fell by the two sold.
    c.goto(&site.url("/devconf/register")).await.unwrap();
    assert_eq!(available_cell(c, full).await, "98");

    // Found again with the email and the access code; its seats assigned.
    c.goto(&site.url("/devconf/order/find")).await.unwrap();
    fill(c, "email", "ana.lima@example.com").await;
    fill(c, "access_code", &code.to_lowercase()).await;
    click(c, "button[type=submit]").await;
    assert_eq!(text(c, "#order-status").await, "Confirmed");
    let order: OrderId = c
        .current_url()
        .await
        .unwrap()
        .path()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    site.until("the seats can be assigned", |s| {
        s.app.order_seats(order).is_some()
    })
    .await;
    c.goto(&site.url(&format!("/devconf/order/{order}")))
        .await
        .unwrap();
    screenshot(c, "07-order").await;
    click_link(c, "Assign seats to attendees").await;
    fill_seat(c, 0, "Bea", "Costa", "bea@example.com").await;
    screenshot(c, "08-assign-seats").await;
    click(c, "button[type=submit]").await;
    wait_for(c, "#order-status").await;
    site.until("the attendee is seated", |s| {
        s.app.order_seats(order).is_some_and(|seats| {
            seats[0]
                .attendee
                .as_ref()
                .is_some_and(|a| a.email == "bea@example.com")
        })
    })
    .await;

    // The owner sees the order and its attendee.
    let demo = site.demo();
    c.goto(&site.url("/admin/login")).await.unwrap();
    fill(c, "email", &demo.owner.email).await;
    fill(c, "access_code", &demo.access_code.to_string()).await;
    click(c, "button[type=submit]").await;
    wait_for(c, "#access-code").await;
    click_link(c, "Registrations").await;
    let orders = text(c, "table.orders").await;
    assert!(orders.contains("Lima, Ana"), "{orders}");
    assert!(orders.contains("Costa Bea, bea@example.com"), "{orders}");
    assert!(orders.contains("Paid"), "{orders}");
    screenshot(c, "13-registrations").await;
}

async fn fill_seat(c: &Client, position: u32, first: &str, last: &str, email: &str) {
    for (field, value) in [("first_name", first), ("last_name", last), ("email", email)] {
        let input = wait_for(c, &format!("input[name='{field}_{position}']")).await;
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }
}

async fn a_zero_cost_order_completes_with_no_payment_step() {
    let Some((chromium, driver)) = browser_tools("zero-cost order") else {
        return;
    };
    let site = Site::start().await;
    let browser = Browser::start(&chromium, &driver).await;
    let c = browser.client();
    let party = site.seat_type("Party");

    c.goto(&site.url("/devconf/register")).await.unwrap();
    select(c, party, 2).await;
    assert_eq!(text(c, "#estimated-total").await, "$0.00");
    click(c, "button[type=submit]").await;

    wait_for(c, "#first_name").await;
    assert!(exists(c, "#free-order").await, "a free order says so");
    assert!(
        !exists(c, "#payment-method").await,
        "a free order hides the payment"
    );
    assert_eq!(text(c, "#order-total").await, "$0.00");
    registrant(c, "Rui", "Sousa", "rui@example.com").await;
    screenshot(c, "09-zero-cost-checkout").await;
    click(c, "button[type=submit]").await;

    assert_eq!(text(c, "h2.success").await, "Registration success");
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/devconf/confirmation", "straight to thank-you");
    let order: OrderId = url
        .query_pairs()
        .find(|(k, _)| k == "order_id")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    assert_eq!(
        site.app.draft_order(order).unwrap().state,
        DraftOrderState::Confirmed
    );
    assert_eq!(
        site.app.priced_order(order).unwrap().is_free_of_charge,
        Some(true),
        "confirmed without a payment"
    );
}

async fn a_registrant_sees_a_partial_reservation_and_the_selection_pre_check() {
    let Some((chromium, driver)) = browser_tools("partial reservation") else {
        return;
    };
    let site = Site::start().await;
    let browser = Browser::start(&chromium, &driver).await;
    let c = browser.client();
    let workshop = site.seat_type("Workshop");
    let demo = site.demo().id;

    // The form shows 20 workshop seats; then another registrant takes 19.
    c.goto(&site.url("/devconf/register")).await.unwrap();
    assert_eq!(available_cell(c, workshop).await, "20");
    site.app
        .place_order(demo, vec![SeatQuantity::new(workshop, 19)])
        .await
        .unwrap();
    site.until("19 workshop seats are held", |s| s.available(workshop) == 1)
        .await;
    // Asking for 5 of the 1 left: the form comes back lowered, and nothing is sent.
    select(c, workshop, 5).await;
    click(c, "button[type=submit]").await;
    let message = text(c, "div.errors").await;
    assert!(
        message.contains("Only 1 seats of Workshop are left"),
        "{message}"
    );
    assert_eq!(selected(c, workshop).await, "1");

    // A second client (the API, with no pre-check) asks for 3: it gets the 1 left.
    let order = OrderId::new();
    let response = reqwest::Client::new()
        .post(site.url("/api/conferences/devconf/orders"))
        .json(&json!({ "order_id": order, "seats": [{ "seat_type_id": workshop, "quantity": 3 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    site.until("the order is partially reserved", |s| {
        s.app
            .draft_order(order)
            .is_ok_and(|d| d.state == DraftOrderState::PartiallyReserved)
    })
    .await;
    c.goto(&site.url(&format!("/devconf/register?order_id={order}")))
        .await
        .unwrap();
    let partial = text(c, "p.partial").await;
    assert!(
        partial.contains("Could not reserve all the requested seats: 1 of 3"),
        "{partial}"
    );
    assert_eq!(
        selected(c, workshop).await,
        "1",
        "the seats held, pre-selected"
    );
    screenshot(c, "10-partial-reservation").await;
    // The registrant takes the seat they got and pays for it.
    click(c, "button[type=submit]").await;
    wait_for(c, "#first_name").await;
    assert_eq!(text(c, "#order-total").await, "$99.50");
    registrant(c, "Eva", "Reis", "eva@example.com").await;
    click(c, "button[type=submit]").await;
    click(c, "#accept").await;
    assert_eq!(text(c, "h2.success").await, "Registration success");
}

async fn the_countdown_ends_on_the_expired_page_and_the_seats_go_back() {
    let Some((chromium, driver)) = browser_tools("expiry") else {
        return;
    };
    let site = Site::start_with(AppConfig {
        reservation_window: chrono::Duration::seconds(4),
        release_buffer: chrono::Duration::seconds(1),
        ..AppConfig::default()
    })
    .await;
    let browser = Browser::start(&chromium, &driver).await;
    let c = browser.client();
    let workshop = site.seat_type("Workshop");

    c.goto(&site.url("/devconf/register")).await.unwrap();
    select(c, workshop, 3).await;
    click(c, "button[type=submit]").await;
    wait_for(c, "#first_name").await;
    assert!(exists(c, "p.countdown [data-expires]").await);
    site.until("3 seats are held", |s| s.available(workshop) == 17)
        .await;
    // Nobody clicks: the page's countdown takes the registrant to the expired page.
    assert_eq!(text(c, "h2.error").await, "Your order has expired");
    assert_eq!(c.current_url().await.unwrap().path(), "/devconf/expired");
    screenshot(c, "15-expired").await;
    // The seats go back once the release buffer is over.
    site.until("the seats are released", |s| s.available(workshop) == 20)
        .await;
    c.goto(&site.url("/devconf/register")).await.unwrap();
    assert_eq!(available_cell(c, workshop).await, "20");
}

async fn an_owner_creates_and_publishes_a_conference() {
    let Some((chromium, driver)) = browser_tools("owner portal") else {
        return;
    };
    let site = Site::start().await;
    let browser = Browser::start(&chromium, &driver).await;
    let c = browser.client();

    c.goto(&site.url("/admin")).await.unwrap();
    screenshot(c, "11-portal").await;
    click_link(c, "Create conference").await;
    fill(c, "owner_name", "Olga Pinto").await;
    fill(c, "owner_email", "olga@example.com").await;
    fill(c, "slug", "rustfest").await;
    fill(c, "name", "RustFest Porto").await;
    fill(c, "tagline", "Rust by the river").await;
    fill(c, "description", "Two days of talks about Rust.").await;
    fill(c, "location", "Porto").await;
    set_value(c, "start_date", "2027-05-03").await;
    set_value(c, "end_date", "2027-05-04").await;
    click(c, "button[type=submit]").await;

    let code = text(c, "#access-code").await;
    assert_eq!(code.len(), 12);
    assert!(
        exists(c, "#publish").await,
        "a new conference is unpublished"
    );
    screenshot(c, "12-owner-conference").await;

    click_link(c, "Configure seats").await;
    fill(c, "seat_name", "General admission").await;
    fill(c, "seat_description", "Both days").await;
    fill(c, "seat_quantity", "300").await;
    fill(c, "seat_price", "120").await;
    click(c, "#add-seat-type").await;
    let seat_types = text(c, "table.seat-types").await;
    assert!(seat_types.contains("General admission"), "{seat_types}");
    assert!(seat_types.contains("$120.00"), "{seat_types}");
    screenshot(c, "14-seat-types").await;

    click_link(c, "Conference details").await;
    click(c, "#publish").await;
    wait_for(c, "#unpublish").await;

    // Registrants see it, with its seats on sale.
    c.goto(&site.url("/")).await.unwrap();
    click_link(c, "RustFest Porto").await;
    click_link(c, "Register").await;
    let row = text(c, "table.seats tbody").await;
    assert!(row.contains("General admission"), "{row}");
    assert!(row.contains("300"), "{row}");

    // A wrong code sees nothing; the right one opens the conference again.
    c.goto(&site.url("/admin/login")).await.unwrap();
    fill(c, "email", "olga@example.com").await;
    fill(c, "access_code", "AAAAAA").await;
    click(c, "button[type=submit]").await;
    let refused = text(c, "div.errors").await;
    assert!(
        refused.contains("Could not locate a conference"),
        "{refused}"
    );
    assert!(!exists(c, "#access-code").await);
    fill(c, "access_code", &code).await;
    click(c, "button[type=submit]").await;
    assert_eq!(text(c, "#access-code").await, code);
}

async fn the_operator_follows_an_order_through_the_explorer() {
    let Some((chromium, driver)) = browser_tools("explorer") else {
        return;
    };
    // A command that fails is given up at its first attempt: a dead letter at once.
    let site = Site::start_with(AppConfig {
        delivery_attempts: 1,
        ..AppConfig::default()
    })
    .await;
    let full = site.seat_type("Full pass");
    let order = site
        .app
        .place_order(
            site.demo().id,
            vec![SeatQuantity {
                seat_type: full,
                quantity: 2,
            }],
        )
        .await
        .unwrap();
    site.until("the order is reserved", |s| {
        s.app
            .draft_order(order)
            .is_ok_and(|d| d.state == DraftOrderState::ReservationCompleted)
    })
    .await;
    let browser = Browser::start(&chromium, &driver).await;
    let c = browser.client();

    // Signed out, the explorer asks for the operator token.
    c.goto(&site.url("/explorer")).await.unwrap();
    fill(c, "token", OPERATOR).await;
    click(c, "button[type=submit]").await;
    wait_for(c, "ul.categories").await;
    assert!(exists(c, "img#live-chart").await, "the live chart");

    click_link(c, "order").await;
    wait_for(c, "table.streams").await;
    let stream = format!("order-{order}");
    assert!(text(c, "table.streams").await.contains(&stream));
    screenshot(c, "explorer-streams").await;

    click_link(c, &stream).await;
    wait_for(c, "article.event").await;
    let events = text(c, "section.card").await;
    assert!(events.contains("registration.order_placed"), "{events}");
    assert!(events.contains("Payload as stored"), "{events}");
    assert!(
        events.contains("ReservationCompleted") || events.contains("reservation_completed"),
        "the draft order's row: {events}"
    );
    screenshot(c, "explorer-stream").await;

    click_link(c, "Timeline of every flow that touched it").await;
    wait_for(c, "svg.timeline").await;
    for part in [
        "g.command",
        "g.event",
        "g.waiting",
        "path.cause",
        "rect.mark.applied",
    ] {
        assert!(
            exists(c, &format!("svg.timeline {part}")).await,
            "the picture has {part}"
        );
    }
    screenshot(c, "explorer-timeline").await;

    click_link(c, "Read models").await;
    wait_for(c, "table.read-models").await;
    assert!(text(c, "table.read-models").await.contains("order_views"));
    screenshot(c, "explorer-read-models").await;
    click_link(c, "Processes").await;
    wait_for(c, "article.event").await;
    screenshot(c, "explorer-processes").await;
    click_link(c, "Scheduled").await;
    wait_for(c, "table.scheduled").await;
    assert!(
        text(c, "table.scheduled")
            .await
            .contains("registration.expire_registration_process")
    );
    screenshot(c, "explorer-scheduled").await;

    // A command this build cannot handle becomes a dead letter; the operator retries it (it
    // fails again), then discards it.
    let poison = cqrs_core::CommandEnvelope {
        id: uuid::Uuid::new_v4(),
        target: format!("order-{order}").parse().unwrap(),
        command_type: "order.recalculate_totals_v9".into(),
        payload: cqrs_core::Json::parse(r#"{"currency":"EUR","rounding":"half-even"}"#).unwrap(),
        correlation_id: None,
        causation_id: None,
        headers: Default::default(),
    };
    let storage = std::sync::Arc::clone(site.app.storage());
    storage
        .schedule(vec![cqrs_core::ScheduledCommand::new(
            poison.clone(),
            chrono::Utc::now(),
        )])
        .await
        .unwrap();
    // Parked later than `earlier`: after a retry, the old parking stays visible until the
    // server has taken the retry, and the page would be read between that and the new one.
    let parked_after = async |earlier: Option<chrono::DateTime<chrono::Utc>>| {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(parked) = storage.find_parked(poison.id).await.unwrap()
                && earlier.is_none_or(|earlier| parked.parked_at > earlier)
            {
                return parked.parked_at;
            }
            assert!(tokio::time::Instant::now() < deadline, "never parked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let first = parked_after(None).await;
    click_link(c, "Dead letters").await;
    let dead = text(c, "article.dead-letter").await;
    assert!(
        dead.contains("order.recalculate_totals_v9") && dead.contains("gave up after 1 attempt:"),
        "{dead}"
    );
    screenshot(c, "explorer-dead-letters").await;
    click(c, "article.dead-letter button[type=submit]:not(.danger)").await;
    parked_after(Some(first)).await;
    c.goto(&site.url("/explorer/dead-letters")).await.unwrap();
    click(c, "article.dead-letter button.danger").await;
    // The page the discard redirects to: its list is empty, so the empty list's note follows
    // the page's description. (The description alone is on the page before the click too, and
    // a wait for it could end before the form's navigation began.)
    wait_for(c, "section.card p.meta + p.meta").await;
    assert!(!exists(c, "article.dead-letter").await, "discarded");
    assert!(
        storage.find_parked(poison.id).await.unwrap().is_none()
            && storage.find_command(poison.id).await.unwrap().is_some(),
        "gone from the schedule, rejected in the message log"
    );

    // Back on the overview, the chart has samples to draw (the page's script reloads it
    // every two seconds).
    click_link(c, "Overview").await;
    wait_for(c, "img#live-chart").await;
    // Registrants order meanwhile: 24 orders over 3 s, bounded.
    for _ in 0..24 {
        site.app
            .place_order(
                site.demo().id,
                vec![SeatQuantity {
                    seat_type: full,
                    quantity: 1,
                }],
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(125)).await;
    }
    screenshot(c, "explorer-overview").await;
}

/// Every journey on SQLite, and on a NATS cluster of 3 nodes with three replicas.
macro_rules! on_sqlite_and_nats {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::ON.scope(super::On::Sqlite, super::$name()).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if tokio::task::block_in_place(cqrs_store_nats::testing::shared_cluster).is_none() {
                        return;
                    }
                    super::ON.scope(super::On::Nats, super::$name()).await;
                }
            )*
        }
    };
}

on_sqlite_and_nats!(
    a_registrant_buys_a_paid_order_and_sees_the_remaining_seats_fall,
    a_zero_cost_order_completes_with_no_payment_step,
    a_registrant_sees_a_partial_reservation_and_the_selection_pre_check,
    the_countdown_ends_on_the_expired_page_and_the_seats_go_back,
    an_owner_creates_and_publishes_a_conference,
    the_operator_follows_an_order_through_the_explorer,
);
