//! The HTTP server: [`Application`] binds the configured listener and serves the routes.

mod body;
mod context;
mod routes;
mod trigger;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::dispatch::Dispatcher;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::verify::ip::{AllowList, TrustedProxies};

/// Everything a request handler reads; shared by every worker.
pub struct AppState {
    pub rules: RuleSet,
    pub global_allow: AllowList,
    pub trusted_proxies: TrustedProxies,
    pub max_body_bytes: usize,
    pub dispatcher: Dispatcher,
    pub metrics: Metrics,
}

/// A bound, ready-to-run gateway.
pub struct Application {
    server: Server,
    local_addr: SocketAddr,
}

impl Application {
    /// Binds `gateway.listen` (port 0 picks a free port) and prepares the server.
    pub fn build(gateway: Gateway) -> std::io::Result<Self> {
        let listener = TcpListener::bind(gateway.listen)?;
        let local_addr = listener.local_addr()?;
        // In-flight calls to Jenkins finish within their deadline; give them that long.
        let drain_secs = gateway
            .settings
            .jenkins
            .values()
            .map(|j| j.timeout_secs)
            .max()
            .unwrap_or(0)
            + 5;
        let state = web::Data::new(AppState {
            metrics: Metrics::new(gateway.rules.len()),
            rules: gateway.rules,
            global_allow: gateway.global_allow,
            trusted_proxies: gateway.trusted_proxies,
            max_body_bytes: gateway.settings.server.max_body_bytes,
            dispatcher: Dispatcher::direct(gateway.jenkins),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(context::request_context))
                .route(
                    "/generic-webhook-trigger/invoke",
                    web::route().to(routes::invoke),
                )
                .route("/hooks/{rule}", web::post().to(routes::hook))
                .route("/hooks/{rule}", web::route().to(routes::method_not_allowed))
                .route("/healthz", web::get().to(routes::healthz))
                .route("/readyz", web::get().to(routes::readyz))
                .route("/metrics", web::get().to(routes::metrics))
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(drain_secs)
        .client_request_timeout(Duration::from_secs(10))
        .listen(listener)?
        .run();
        Ok(Self { server, local_addr })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the process is asked to stop (SIGINT/SIGTERM), then drains in-flight
    /// requests within the Jenkins deadline.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
