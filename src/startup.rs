//! Assembly: from a compiled [`Gateway`], bind the listeners, open the store, build every
//! outbox target (Jenkins and the sinks) and the worker, and hand the HTTP side its state.
//! Routes and handlers stay in `server`, which knows nothing of how they were put together.
//! A reload (`reload`) puts each new set together here too, with what outlives it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use tokio::sync::{Notify, watch};

use crate::config::DeliveryMode;
use crate::dispatch::{Dispatcher, JenkinsTarget, Reporter};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::outbox::worker::Worker;
use crate::outbox::{LiveTargets, RetryPolicy, Targets};
use crate::reload::Reloader;
use crate::rules::RuleSet;
use crate::server::limits::Limits;
use crate::server::{self, AppState, EventsState, Serving};
use crate::sinks::port::runs::Unrecorded;
use crate::sinks::port::target::{PortTarget, TokenCaches};
use crate::sinks::sink::SinkTarget;
use crate::store::Store;

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
    /// Compiles and puts in use a new set (SIGHUP, `POST /reload`, `rules.watch`).
    reloader: Reloader,
    /// `rules.watch`: watching from `build` on, so no change after it returns is missed.
    watching: Option<crate::reload::Watching>,
}

/// Reloads the signatures of stored calls into the replay memory of the rules `fresh` names
/// (`None`: every rule), so neither a restart nor a reload reopens their window. A store that
/// cannot be read here is reported, not fatal: those rules then start with an empty memory, as
/// they did before signatures were kept.
pub(crate) fn restore_replays(store: &Store, rules: &RuleSet, fresh: Option<&[String]>) {
    let now = u64::try_from(crate::store::now_ms() / 1000).unwrap_or(0);
    match store.remembered_signatures(now, fresh) {
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

/// What every compiled set is put together with: opened once at start-up and kept across
/// reloads (the store, the worker's wake-up, the metrics, the count of direct calls in flight).
pub(crate) struct Assembly {
    pub store: Option<Store>,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub unrecorded: Arc<Unrecorded>,
    /// The port sinks' access tokens, by credentials.
    pub port_tokens: TokenCaches,
}

/// One compiled set, ready to be put in use: the handlers' state and, with a store, the
/// worker's targets.
pub(crate) struct Assembled {
    pub state: AppState,
    pub targets: Option<Targets>,
}

impl Assembly {
    /// Whether `gateway` needs the store: queue mode, events, or a port sink's run updates
    /// (whatever the mode).
    pub fn needs_store(gateway: &Gateway) -> bool {
        gateway.settings.delivery.mode == DeliveryMode::Queue
            || !gateway.event_sources.is_empty()
            || gateway.sinks.iter().any(|sink| sink.port().is_some())
    }

    /// Puts `gateway` together with what outlives it. `previous` is the set it replaces: rate
    /// limit buckets with an unchanged quota carry on. An error names what could not be built.
    pub fn assemble(
        &self,
        gateway: Gateway,
        previous: Option<&AppState>,
    ) -> Result<Assembled, String> {
        let rules = Arc::new(gateway.rules);
        let mut jenkins = gateway.jenkins;
        if let Some(previous) = previous {
            jenkins.carry_over(&previous.jenkins);
        }
        let jenkins = Arc::new(jenkins);
        let sinks = Arc::new(gateway.sinks);
        let delivery = &gateway.settings.delivery;
        let reports = sinks.iter().any(|sink| sink.port().is_some());
        let public_urls: Arc<HashMap<String, String>> = Arc::new(
            gateway
                .settings
                .jenkins
                .iter()
                .map(|(name, settings)| {
                    let url = settings.public_url.as_deref().unwrap_or(&settings.url);
                    (name.clone(), url.trim_end_matches('/').to_owned())
                })
                .collect(),
        );
        let correlation_ttl = Duration::from_secs(delivery.done_retention_secs);
        let metrics = &self.metrics;
        let targets = match &self.store {
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
                            Arc::clone(metrics),
                            policy,
                            correlation_ttl,
                            public_urls.get(name).cloned().unwrap_or_default(),
                        )),
                    );
                }
                for sink in sinks.iter() {
                    let tls =
                        |e: rustls::Error| format!("cannot set up TLS for sink {}: {e}", sink.name);
                    let port = PortTarget::new(
                        Arc::clone(sink),
                        store.clone(),
                        Arc::clone(metrics),
                        policy,
                        Arc::clone(&public_urls),
                        Arc::clone(&self.unrecorded),
                        &self.port_tokens,
                    )
                    .map_err(tls)?;
                    let target: Arc<dyn crate::outbox::Target> = match port {
                        Some(port) => Arc::new(port),
                        None => Arc::new(
                            SinkTarget::new(Arc::clone(sink), Arc::clone(metrics), policy)
                                .map_err(tls)?,
                        ),
                    };
                    targets.insert(crate::store::target_id("sink", &sink.name), target);
                }
                self.port_tokens.prune();
                Some(targets)
            }
        };
        let reporter = self
            .store
            .as_ref()
            .filter(|_| reports)
            .map(|store| Reporter {
                store: store.clone(),
                wake: Arc::clone(&self.wake),
                unrecorded: Arc::clone(&self.unrecorded),
                ttl: correlation_ttl,
                public_urls,
            });
        let dispatcher = match (&self.store, delivery.mode) {
            (Some(store), DeliveryMode::Queue) => Dispatcher::Queue {
                store: store.clone(),
                wake: Arc::clone(&self.wake),
            },
            _ => Dispatcher::Direct {
                jenkins: Arc::clone(&jenkins),
                reporter: reporter.clone(),
            },
        };
        let events = match &self.store {
            Some(store) if !gateway.event_sources.is_empty() => Some(EventsState {
                sources: gateway.event_sources,
                sinks,
                store: store.clone(),
                wake: Arc::clone(&self.wake),
                retention_ms: i64::try_from(delivery.done_retention_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
            }),
            _ => None,
        };
        let limits = Limits::carried_over(
            &gateway.settings.server,
            &rules,
            previous.map(|state| &state.limits),
        );
        let state = AppState {
            limits,
            metrics: Arc::clone(metrics),
            rules,
            global_allow: gateway.global_allow,
            trusted_proxies: gateway.trusted_proxies,
            max_body_bytes: gateway.settings.server.max_body_bytes,
            dispatcher,
            reporter,
            events,
            admin_token: gateway.admin_token,
            jenkins,
        };
        Ok(Assembled { state, targets })
    }
}

impl Application {
    /// Binds `gateway.listen` and `gateway.admin_listen` (port 0 picks a free port) and
    /// prepares both servers. A reload reads the config again from `gateway.source`, with the
    /// process's environment.
    pub fn build(gateway: Gateway) -> std::io::Result<Self> {
        let source = gateway.source.clone();
        let env = crate::config::ProcessEnv;
        let load = move || crate::config::load(&source, &env);
        Self::build_reloadable(gateway, Box::new(load), Box::new(crate::config::ProcessEnv))
    }

    /// [`Application::build`], with a reload that gets its settings from `load` and reads
    /// secrets from `env` (tests hand in their own).
    pub fn build_reloadable(
        mut gateway: Gateway,
        load: crate::reload::Load,
        env: Box<dyn crate::config::Env>,
    ) -> std::io::Result<Self> {
        let listener = server::bind(gateway.listen, "server.listen")?;
        let local_addr = listener.local_addr()?;
        let admin_listener = server::bind(gateway.admin_listen, "admin.listen")?;
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
        let delivery = gateway.settings.delivery.clone();
        let store = if Assembly::needs_store(&gateway) {
            let store = Store::open(&delivery.store, delivery.max_store_bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "cannot open the delivery store in {}: {e}: {}",
                    delivery.store.display(),
                    crate::error::cause_chain(&e)
                ))
            })?;
            restore_replays(&store, &gateway.rules, None);
            Some(store)
        } else {
            None
        };
        let assembly = Assembly {
            store,
            wake: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::new(gateway.rules.len())),
            unrecorded: Arc::new(Unrecorded::default()),
            port_tokens: TokenCaches::default(),
        };
        let tls = gateway.tls.take();
        let settings = gateway.settings.clone();
        let source = gateway.source.clone();
        let Assembled { state, targets } = assembly
            .assemble(gateway, None)
            .map_err(std::io::Error::other)?;
        let targets = targets.map(|targets| Arc::new(LiveTargets::from_pointee(targets)));
        let worker = match (&assembly.store, &targets) {
            (Some(store), Some(targets)) => Some(Worker::new(
                store.clone(),
                Arc::clone(targets),
                Arc::clone(&assembly.metrics),
                &delivery,
                Arc::clone(&assembly.wake),
            )),
            _ => None,
        };
        let live = Arc::new(server::Live::from_pointee(state));
        let serving = Serving::from_settings(&settings.server, drain_secs);
        let reloader = Reloader::new(crate::reload::Running {
            settings,
            source,
            load,
            env,
            assembly,
            live: Arc::clone(&live),
            targets,
            tls: tls.clone(),
            watching: None,
        });
        let (server, admin) = server::serve(
            listener,
            admin_listener,
            live,
            reloader.clone(),
            &serving,
            tls.as_ref(),
        )?;
        let watching = reloader.watch();
        Ok(Self {
            watching,
            reloader,
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

    /// What reloads the config, the rules and the sinks (SIGHUP calls it).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves until the public server stops (SIGINT/SIGTERM: it stops accepting and finishes
    /// requests in progress, within the Jenkins deadline); the admin listener keeps answering
    /// meanwhile, so the drain can be watched, and stops then. The queue worker then finishes
    /// its attempts in progress, within the drain bound, and leaves the rest in the store for
    /// the next start.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // With `rules.watch`, changes in `rules.dir` reload until the gateway stops.
        let mut watching = self.watching;
        if let Some(watching) = &mut watching {
            watching.start();
        }
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
