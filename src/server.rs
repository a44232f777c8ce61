//! The HTTP side: the public listener's (`server.listen`) and the operator listener's
//! (`admin.listen`) routes, middleware and handlers, served by [`serve`] over the state that
//! `startup` assembles. Nothing here opens the store or starts a worker.

mod admin;
mod body;
mod client;
mod context;
mod events;
pub mod limits;
mod routes;
pub mod tls;
mod trigger;

use std::future::{Ready, ready};
use std::net::{SocketAddr, TcpListener};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Payload, Server};
use actix_web::middleware::from_fn;
use actix_web::{App, FromRequest, HttpMessage, HttpRequest, HttpServer, web};
use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::dispatch::Dispatcher;
use crate::events::sources::EventSources;
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::sinks::sink::Sinks;
use crate::store::Store;
use crate::verify::ip::{AllowList, TrustedProxies};

/// Everything a request handler reads; shared by every worker. One value is one compiled set of
/// config, rules and sinks: a reload builds a new one and [`Live`] swaps it in whole.
pub struct AppState {
    pub rules: Arc<RuleSet>,
    pub global_allow: AllowList,
    pub trusted_proxies: TrustedProxies,
    pub max_body_bytes: usize,
    pub dispatcher: Dispatcher,
    /// Tells Port's runs of calls decided outside the outbox; `None` without a port sink.
    pub reporter: Option<crate::dispatch::Reporter>,
    pub metrics: Arc<Metrics>,
    pub limits: limits::Limits,
    /// The events endpoint's state; `None` when no Jenkins target has an events token.
    pub events: Option<EventsState>,
    /// The bearer token every admin request must carry, when one is configured.
    pub admin_token: Option<crate::secret::Secret>,
    /// The clients toward Jenkins (the direct dispatcher's and the worker's targets'); the
    /// next set takes over their connections and slots.
    pub jenkins: Arc<crate::dispatch::JenkinsClient>,
}

impl AppState {
    /// The store, when there is one: queue mode, or events configured (in any mode).
    pub fn store(&self) -> Option<&Store> {
        self.dispatcher
            .store()
            .or_else(|| self.events.as_ref().map(|events| &events.store))
    }
}

/// The set in use, swapped whole by a reload (`store`). Each request takes the set once, when
/// it arrives ([`context::request_context`], `load_full`), and keeps it to its answer: a
/// request in flight finishes with the set it started with, and none waits for a reload.
pub type Live = ArcSwap<AppState>;

/// The set a request took when it arrived: what handlers and middleware read.
#[derive(Clone)]
pub struct State(Arc<AppState>);

impl State {
    /// The request's set: the one `request_context` recorded, else (a request that met no
    /// middleware, in a unit test) the one in use now.
    fn of(req: &HttpRequest) -> Option<Self> {
        if let Some(state) = req.extensions().get::<State>() {
            return Some(state.clone());
        }
        req.app_data::<web::Data<Live>>()
            .map(|live| State(live.load_full()))
    }
}

impl Deref for State {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

impl FromRequest for State {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Both apps register the set; without it nothing could be checked.
        ready(State::of(req).ok_or_else(|| {
            crate::error::ApiError::Framework(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
                .into()
        }))
    }
}

/// What `POST /jenkins/{target}/events` needs.
pub struct EventsState {
    pub sources: EventSources,
    pub sinks: Arc<Sinks>,
    pub store: Store,
    pub wake: Arc<Notify>,
    /// A repeat of (target, build, phase) within this long is a duplicate.
    pub retention_ms: i64,
}

/// How the HTTP servers are run: the parts of `[server]` that shape them.
pub struct Serving {
    pub workers: usize,
    pub per_worker_connections: usize,
    pub header_timeout: Duration,
    pub keep_alive: Duration,
    /// How long the public server lets requests in progress finish at shutdown.
    pub drain_secs: u64,
}

impl Serving {
    pub fn from_settings(server: &crate::config::ServerSettings, drain_secs: u64) -> Self {
        let workers = if server.workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            server.workers
        };
        Self {
            workers,
            per_worker_connections: server.max_connections.div_ceil(workers).max(1),
            header_timeout: Duration::from_millis(server.header_timeout_ms.max(1)),
            keep_alive: Duration::from_secs(server.keep_alive_secs),
            drain_secs,
        }
    }
}

/// Starts the public server on `listener` and the operator server on `admin_listener`, each
/// with its own routes, sharing the set in `live`; `POST /reload` calls `reloader`. The public
/// server owns the signals.
pub fn serve(
    listener: TcpListener,
    admin_listener: TcpListener,
    live: Arc<Live>,
    reloader: crate::reload::Reloader,
    serving: &Serving,
    tls: Option<&tls::Tls>,
) -> std::io::Result<(Server, Server)> {
    let state = web::Data::from(live);
    let reloader = web::Data::new(reloader);
    let admin_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // Outermost first: request id and header limits, then the client checks,
            // both before routing, so they cover every path.
            .wrap(from_fn(client::admit))
            .wrap(from_fn(context::request_context))
            .configure(public_routes)
    })
    .workers(serving.workers)
    .max_connections(serving.per_worker_connections)
    .client_request_timeout(serving.header_timeout)
    .client_disconnect_timeout(Duration::from_secs(1))
    // The TLS handshake must finish within the header deadline too (a slow handshake is a
    // slowloris of its own).
    .tls_handshake_timeout(serving.header_timeout)
    .keep_alive(serving.keep_alive)
    .shutdown_timeout(serving.drain_secs);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, (*tls.config).clone())?,
        None => server.listen(listener)?,
    }
    .run();
    // Operator traffic is a scraper and a few people: one worker. The public server owns
    // the signals; the application stops this one after it.
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(admin_state.clone())
            .app_data(reloader.clone())
            .wrap(from_fn(admin::require_token))
            .wrap(from_fn(context::request_context))
            .configure(admin_routes)
    })
    .workers(1)
    .max_connections(ADMIN_MAX_CONNECTIONS)
    .client_request_timeout(serving.header_timeout)
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(serving.keep_alive)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(admin_listener)?
    .run();
    Ok((server, admin))
}

/// Concurrent connections on the admin listener.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The public routes. Operator endpoints (`/metrics`, `/deliveries/{id}`) are absent on
/// purpose: there they fall to the default 404 like any unknown path.
fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/generic-webhook-trigger/invoke",
        web::route().to(routes::invoke),
    )
    .route("/hooks/{rule}", web::post().to(routes::hook))
    .route("/hooks/{rule}", web::route().to(routes::method_not_allowed))
    .route("/jenkins/{target}/events", web::post().to(events::events))
    .route(
        "/jenkins/{target}/events",
        web::route().to(routes::method_not_allowed),
    )
    .route("/healthz", web::get().to(routes::healthz))
    .route("/readyz", web::get().to(routes::readyz))
    .default_service(web::to(routes::not_found));
}

/// The admin routes, served only on `admin.listen`.
fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(admin::metrics))
        .route("/deliveries/{id}", web::get().to(admin::delivery))
        .route("/healthz", web::get().to(routes::healthz))
        .route("/readyz", web::get().to(admin::readyz))
        .route("/reload", web::post().to(admin::reload))
        .route("/reload", web::route().to(routes::method_not_allowed))
        .default_service(web::to(routes::not_found));
}

/// Binds one listener; the error names the config key, since two listeners can fail.
pub fn bind(addr: SocketAddr, key: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| std::io::Error::new(e.kind(), format!("{key} {addr}: {e}")))
}
