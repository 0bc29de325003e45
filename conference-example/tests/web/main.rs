//! The JSON API over real HTTP, on SQLite and PostgreSQL: every endpoint, its errors and its
//! auth, and 200 registrants racing for a small quota; and the HTML pages' answers to bad
//! input and to the owner portal's sessions.

mod api;
mod concurrency;
mod explorer;
mod hostile;
mod operations;
mod pages;
mod shutdown;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use conference_example::app::{AppConfig, ConferenceApp};
use conference_example::web::{WebState, serve};
use cqrs_core::{Storage, SystemClock};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A server on an ephemeral port, stopped when dropped.
struct Server {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _keep: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) const OPERATOR: &str = "operator-secret";

impl Server {
    async fn start(storage: Arc<dyn Storage>, keep: Option<tempfile::TempDir>) -> Self {
        Self::start_with(storage, keep, AppConfig::default()).await
    }

    async fn start_with(
        storage: Arc<dyn Storage>,
        keep: Option<tempfile::TempDir>,
        config: AppConfig,
    ) -> Self {
        // Every test's client is 127.0.0.1: one client placing hundreds of orders. The limit
        // itself is tested with its defaults.
        Self::start_state(storage, keep, config, |state| {
            state.with_orders_per_client(1_000_000, std::time::Duration::from_millis(1))
        })
        .await
    }

    /// A server on `storage` whose web state `customize` sets up.
    async fn start_state(
        storage: Arc<dyn Storage>,
        keep: Option<tempfile::TempDir>,
        config: AppConfig,
        customize: impl FnOnce(WebState) -> WebState,
    ) -> Self {
        let app = ConferenceApp::new(storage, Arc::new(SystemClock), config);
        app.settle().await.unwrap();
        let engine = app.start();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let state = customize(WebState::new(app, Some(OPERATOR.into())));
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
            client: reqwest::Client::new(),
            stop: Some(stop),
            _keep: keep,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        auth: Auth<'_>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request = match auth {
            Auth::None => request,
            Auth::Owner(email, code) => request.basic_auth(email, Some(code)),
            Auth::Operator(token) => request.bearer_auth(token),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, Auth::None)
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body), Auth::None)
            .await
    }

    /// Creates a conference with a paid and a free seat type and publishes it; returns its
    /// id, access code and the two seat types' ids.
    async fn published_conference(&self, slug: &str, quantity: u32) -> Conference {
        let (status, created) = self
            .post(
                "/api/conferences",
                json!({
                    "name": "Devconf", "slug": slug, "description": "Talks", "location": "Lisbon",
                    "start_date": "2026-09-14T09:00:00Z", "end_date": "2026-09-15T18:00:00Z",
                    "owner_name": "Ana Lima", "owner_email": "ana@example.com",
                }),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let code = created["access_code"].as_str().unwrap().to_owned();
        let owner = Auth::Owner("ana@example.com", &code);
        let (status, paid) = self
            .call(reqwest::Method::POST, &format!("/api/conferences/{id}/seat-types"), Some(json!({"name": "Full pass", "description": "Every talk", "price": 100, "quantity": quantity})), owner)
            .await;
        assert_eq!(status, 201, "{paid}");
        let (status, free) = self
            .call(reqwest::Method::POST, &format!("/api/conferences/{id}/seat-types"), Some(json!({"name": "Party", "description": "The party", "price": "0", "quantity": 50})), owner)
            .await;
        assert_eq!(status, 201, "{free}");
        let (status, _) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/conferences/{id}/publish"),
                None,
                owner,
            )
            .await;
        assert_eq!(status, 204);
        // The seats go on sale through the seat-quota process: wait until they show.
        for _ in 0..500 {
            let (_, view) = self.get(&format!("/api/conferences/{slug}")).await;
            if view["seat_types"].as_array().is_some_and(|s| {
                // (V1's read model has no seats left: the seat types showing is enough.)
                s.len() == 2
                    && s.iter()
                        .all(|t| t["available"].is_null() || t["available"].as_i64() > Some(0))
            }) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Conference {
            id,
            code,
            slug: slug.to_owned(),
            paid: paid["id"].as_str().unwrap().to_owned(),
            free: free["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Places an order and waits until its seats are answered.
    async fn reserved_order(&self, conference: &Conference, seats: Value) -> (String, Value) {
        let (status, placed) = self
            .post(
                &format!("/api/conferences/{}/orders", conference.slug),
                json!({ "seats": seats }),
            )
            .await;
        assert_eq!(status, 202, "{placed}");
        let order = placed["order_id"].as_str().unwrap().to_owned();
        // Placed (1), priced (2), reserved (3).
        let (status, view) = self
            .get(&format!("/api/orders/{order}?min_version=3"))
            .await;
        assert_eq!(status, 200, "{view}");
        (order, view)
    }
}

#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    None,
    Owner(&'a str, &'a str),
    Operator(&'a str),
}

struct Conference {
    id: String,
    code: String,
    slug: String,
    paid: String,
    free: String,
}

async fn sqlite() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = cqrs_store_sqlite::SqliteEventStore::open(dir.path().join("web.db"))
        .await
        .unwrap();
    Server::start(Arc::new(store), Some(dir)).await
}

async fn postgres() -> Option<Server> {
    let store = cqrs_store_postgres::testing::fresh_store().await?;
    Some(Server::start(Arc::new(store), None).await)
}

async fn nats() -> Option<Server> {
    let store = cqrs_store_nats::testing::fresh_store().await?;
    Some(Server::start(Arc::new(store), None).await)
}

/// One test per store for each scenario.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(server) = super::postgres().await {
                        super::$name(&server).await;
                    }
                }
            )*
        }
        /// On a 3-node NATS cluster with three replicas.
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(server) = super::nats().await {
                        super::$name(&server).await;
                    }
                }
            )*
        }
    };
}

use api::*;
use concurrency::*;

on_every_store!(
    owners_manage_conferences_behind_their_credentials,
    registrants_buy_seats_and_see_them_fall,
    a_zero_cost_order_is_confirmed_without_payment,
    seats_are_assigned_to_attendees,
    bad_requests_are_clear_errors,
    the_message_log_is_for_owners_and_the_operator,
    two_hundred_registrants_never_exceed_the_quota,
    owners_racing_for_one_slug_get_one_conference,
    one_registrant_names_one_open_order_per_conference,
    input_is_bounded_and_cleaned,
    guesses_are_throttled_per_client_and_per_account,
);
