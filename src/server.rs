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

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::sync::Notify;

use crate::dispatch::Dispatcher;
use crate::events::sources::EventSources;
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::sinks::sink::Sinks;
use crate::store::Store;
use crate::verify::ip::{AllowList, TrustedProxies};

/// Everything a request handler reads; shared by every worker.
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
}

impl AppState {
    /// The store, when there is one: queue mode, or events configured (in any mode).
    pub fn store(&self) -> Option<&Store> {
        self.dispatcher
            .store()
            .or_else(|| self.events.as_ref().map(|events| &events.store))
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
/// with its own routes, sharing `state`. The public server owns the signals.
pub fn serve(
    listener: TcpListener,
    admin_listener: TcpListener,
    state: AppState,
    admin_token: Option<crate::secret::Secret>,
    serving: &Serving,
    tls: Option<&tls::Tls>,
) -> std::io::Result<(Server, Server)> {
    let state = web::Data::new(state);
    let admin_auth = web::Data::new(admin::AdminAuth { token: admin_token });
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
            .app_data(admin_auth.clone())
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
        .default_service(web::to(routes::not_found));
}

/// Binds one listener; the error names the config key, since two listeners can fail.
pub fn bind(addr: SocketAddr, key: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| std::io::Error::new(e.kind(), format!("{key} {addr}: {e}")))
}
