//! The HTTP server: [`Application`] binds the public listener (`server.listen`) and the
//! operator listener (`admin.listen`) and serves each its own routes.

mod admin;
mod body;
mod client;
mod context;
mod events;
pub mod limits;
mod routes;
mod trigger;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::config::DeliveryMode;
use crate::dispatch::{Dispatcher, JenkinsTarget};
use crate::events::sources::EventSources;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::outbox::worker::Worker;
use crate::outbox::{RetryPolicy, Targets};
use crate::rules::RuleSet;
use crate::sinks::sink::{SinkTarget, Sinks};
use crate::store::Store;
use crate::verify::ip::{AllowList, TrustedProxies};

/// Everything a request handler reads; shared by every worker.
pub struct AppState {
    pub rules: Arc<RuleSet>,
    pub global_allow: AllowList,
    pub trusted_proxies: TrustedProxies,
    pub max_body_bytes: usize,
    pub dispatcher: Dispatcher,
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

/// A bound, ready-to-run gateway.
pub struct Application {
    server: Server,
    local_addr: SocketAddr,
    /// The operator listener; it stops after the public one has drained.
    admin: Server,
    admin_addr: SocketAddr,
    /// Queue mode: the worker, started by `run_until_stopped`.
    worker: Option<Worker>,
    /// How long the worker may finish attempts in progress at shutdown.
    drain: Duration,
}

/// Reloads the signatures of stored calls into each rule's replay memory, so a restart does not
/// reopen their window. A store that cannot be read here is reported, not fatal: the gateway
/// then starts with an empty memory, as it did before signatures were kept.
fn restore_replays(store: &Store, rules: &RuleSet) {
    let now = u64::try_from(crate::store::now_ms() / 1000).unwrap_or(0);
    match store.remembered_signatures(now) {
        Ok(remembered) => {
            for signature in &remembered {
                if let Some(rule) = rules.get(&signature.rule)
                    && rule.reject_replays
                {
                    rule.replays.remember(
                        signature.key,
                        signature.expires_at,
                        Some(&signature.delivery_id),
                    );
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "Cannot reload remembered signatures from the store.");
        }
    }
}

impl Application {
    /// Binds `gateway.listen` and `gateway.admin_listen` (port 0 picks a free port) and
    /// prepares both servers.
    pub fn build(gateway: Gateway) -> std::io::Result<Self> {
        let listener = bind(gateway.listen, "server.listen")?;
        let local_addr = listener.local_addr()?;
        let admin_listener = bind(gateway.admin_listen, "admin.listen")?;
        let admin_addr = admin_listener.local_addr()?;
        // In-flight calls to Jenkins finish within their deadline; give them that long.
        let drain_secs = gateway
            .settings
            .jenkins
            .values()
            .map(|j| j.timeout_secs)
            .max()
            .unwrap_or(0)
            + 5;
        let rules = Arc::new(gateway.rules);
        let metrics = Arc::new(Metrics::new(rules.len()));
        let jenkins = Arc::new(gateway.jenkins);
        let sinks = Arc::new(gateway.sinks);
        let delivery = &gateway.settings.delivery;
        // Events are always stored, in direct mode too: the store directory is used for them.
        let needs_store = delivery.mode == DeliveryMode::Queue || !gateway.event_sources.is_empty();
        let store = if needs_store {
            let store = Store::open(&delivery.store, delivery.max_store_bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "cannot open the delivery store in {}: {e}: {}",
                    delivery.store.display(),
                    crate::error::cause_chain(&e)
                ))
            })?;
            restore_replays(&store, &rules);
            Some(store)
        } else {
            None
        };
        let wake = Arc::new(Notify::new());
        let worker = match &store {
            None => None,
            Some(store) => {
                let policy = RetryPolicy::from_settings(delivery);
                let mut targets = Targets::default();
                for name in gateway.settings.jenkins.keys() {
                    targets.insert(
                        crate::store::target_id("jenkins", name),
                        Arc::new(JenkinsTarget::new(
                            name,
                            Arc::clone(&jenkins),
                            Arc::clone(&rules),
                            Arc::clone(&metrics),
                            policy,
                        )),
                    );
                }
                for sink in sinks.iter() {
                    let target = SinkTarget::new(Arc::clone(sink), Arc::clone(&metrics), policy)
                        .map_err(|e| {
                            std::io::Error::other(format!(
                                "cannot set up TLS for sink {}: {e}",
                                sink.name
                            ))
                        })?;
                    targets.insert(
                        crate::store::target_id("sink", &sink.name),
                        Arc::new(target),
                    );
                }
                Some(Worker::new(
                    store.clone(),
                    targets,
                    Arc::clone(&metrics),
                    delivery,
                    Arc::clone(&wake),
                ))
            }
        };
        let dispatcher = match (&store, delivery.mode) {
            (Some(store), DeliveryMode::Queue) => Dispatcher::Queue {
                store: store.clone(),
                wake: Arc::clone(&wake),
            },
            _ => Dispatcher::Direct(jenkins),
        };
        let events = match store {
            Some(store) if !gateway.event_sources.is_empty() => Some(EventsState {
                sources: gateway.event_sources,
                sinks,
                store,
                wake,
                retention_ms: i64::try_from(delivery.done_retention_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
            }),
            _ => None,
        };
        let server_settings = &gateway.settings.server;
        let limits = limits::Limits::new(server_settings, &rules);
        let workers = if server_settings.workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            server_settings.workers
        };
        let per_worker_connections = server_settings.max_connections.div_ceil(workers).max(1);
        let header_timeout = Duration::from_millis(server_settings.header_timeout_ms.max(1));
        let keep_alive = Duration::from_secs(server_settings.keep_alive_secs);
        let state = web::Data::new(AppState {
            limits,
            metrics,
            rules,
            global_allow: gateway.global_allow,
            trusted_proxies: gateway.trusted_proxies,
            max_body_bytes: gateway.settings.server.max_body_bytes,
            dispatcher,
            events,
        });
        let admin_auth = web::Data::new(admin::AdminAuth {
            token: gateway.admin_token,
        });
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
        .workers(workers)
        .max_connections(per_worker_connections)
        .client_request_timeout(header_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(keep_alive)
        .shutdown_timeout(drain_secs)
        .listen(listener)?
        .run();
        // Operator traffic is a scraper and a few people: one worker. The public server owns
        // the signals; `run_until_stopped` stops this one after it.
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
        .client_request_timeout(header_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(keep_alive)
        .shutdown_timeout(1)
        .disable_signals()
        .listen(admin_listener)?
        .run();
        Ok(Self {
            server,
            local_addr,
            admin,
            admin_addr,
            worker,
            drain: Duration::from_secs(drain_secs),
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_addr.port()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until the public server stops (SIGINT/SIGTERM: it stops accepting and finishes
    /// requests in progress, within the Jenkins deadline); the admin listener keeps answering
    /// meanwhile, so the drain can be watched, and stops then. The queue worker then finishes
    /// its attempts in progress, within the drain bound, and leaves the rest in the store for
    /// the next start.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let worker = self
            .worker
            .map(|worker| actix_web::rt::spawn(worker.run(stopped, self.drain)));
        let admin_handle = self.admin.handle();
        let admin = actix_web::rt::spawn(self.admin);
        let result = self.server.await;
        admin_handle.stop(true).await;
        let admin_result = admin.await.unwrap_or(Ok(()));
        let _ = stop.send(true);
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        result.and(admin_result)
    }
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
fn bind(addr: SocketAddr, key: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| std::io::Error::new(e.kind(), format!("{key} {addr}: {e}")))
}
