//! Hot reload: SIGHUP, `POST /reload` and `rules.watch` compile the config, every rule and every
//! sink again. All of it compiles or nothing changes: a refused reload logs every problem as
//! `check` prints it and the set in use keeps serving. An applied one swaps the handlers' set
//! ([`Live`]) and the worker's targets ([`LiveTargets`]) whole; the listeners, the store and
//! the queue are untouched, and keys that need a restart keep their value and are reported.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

use crate::config::{Env, Problem, Problems, Settings, Source};
use crate::gateway::Gateway;
use crate::outbox::LiveTargets;
use crate::server::Live;
use crate::server::tls::Certificates;
use crate::startup::{Assembled, Assembly, restore_replays};

/// Reads the settings again (the config file and the `HOOKGATE__` overrides).
pub type Load = Box<dyn Fn() -> Result<Settings, Problems> + Send + Sync>;

/// How long `rules.watch` waits for a file to stop changing before it reloads: long enough for
/// an editor's save (write, rename) to be one reload, short enough to feel immediate.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(400);

/// What asked for a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Admin,
    Watch,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Admin => "POST /reload",
            Trigger::Watch => "rules.watch",
        }
    }
}

/// An applied reload.
#[derive(Debug, Clone)]
pub struct Applied {
    pub rules: usize,
    /// Keys whose change needs a restart: they kept the value they had.
    pub restart_required: Vec<&'static str>,
    /// What `check` would warn about in the new set.
    pub warnings: Vec<Problem>,
}

/// The set in use and what a reload needs to build the next one.
pub(crate) struct Running {
    /// The settings in use; the keys a reload cannot change are as they were at start-up.
    pub settings: Settings,
    pub source: Source,
    pub load: Load,
    pub env: Box<dyn Env>,
    pub assembly: Assembly,
    pub live: Arc<Live>,
    /// The worker's targets, when there is a store.
    pub targets: Option<Arc<LiveTargets>>,
    pub certificates: Option<Arc<Certificates>>,
    /// `rules.watch`: the watcher and the directory it watches.
    pub watching: Option<(Debouncer<RecommendedWatcher>, PathBuf)>,
}

/// A compiled next set, not in use yet.
struct Prepared {
    applied: Applied,
    assembled: Assembled,
    tls: Option<crate::server::tls::Tls>,
    settings: Settings,
}

/// Compiles and puts in use a new set; one reload at a time.
#[derive(Clone)]
pub struct Reloader {
    running: Arc<Mutex<Running>>,
}

impl Reloader {
    pub(crate) fn new(running: Running) -> Self {
        Self {
            running: Arc::new(Mutex::new(running)),
        }
    }

    fn lock(running: &Mutex<Running>) -> MutexGuard<'_, Running> {
        running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reloads; systemd hears `RELOADING=1` before and `READY=1` after, either way.
    pub async fn reload(&self, trigger: Trigger) -> Result<Applied, Problems> {
        crate::systemd::reloading();
        let running = Arc::clone(&self.running);
        // Reading files and building clients blocks: off the request threads.
        let outcome = tokio::task::spawn_blocking(move || Self::lock(&running).reload(trigger))
            .await
            .unwrap_or_else(|error| {
                Err(Problems(vec![Problem::new(
                    "",
                    "",
                    format!("the reload stopped unexpectedly: {error}"),
                )]))
            });
        let status = match &outcome {
            Ok(applied) => format!("serving; reload applied, {} rules", applied.rules),
            Err(problems) => format!(
                "serving the previous set; reload refused with {} problem{}",
                problems.0.len(),
                if problems.0.len() == 1 { "" } else { "s" }
            ),
        };
        crate::systemd::reloaded(&status);
        outcome
    }

    /// With `rules.watch = true`, reloads after files in `rules.dir` change, until the handle
    /// is dropped. `None` when the key is off or the directory cannot be watched (logged).
    pub fn watch(&self) -> Option<Watching> {
        let mut running = Self::lock(&self.running);
        if !running.settings.rules.watch {
            return None;
        }
        let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
        let debouncer = new_debouncer(WATCH_DEBOUNCE, move |result: DebounceEventResult| {
            match result {
                // Editors' swap and backup files are not rules; the reload would read none.
                Ok(events) => {
                    if events
                        .iter()
                        .any(|event| crate::rules::is_rule_file_name(&event.path))
                    {
                        let _ = changed.send(());
                    }
                }
                Err(error) => tracing::warn!(%error, "Watching rules.dir failed."),
            }
        });
        let mut debouncer = match debouncer {
            Ok(debouncer) => debouncer,
            Err(error) => {
                tracing::error!(%error, "Cannot watch rules.dir; reload with SIGHUP or POST /reload.");
                return None;
            }
        };
        let dir = running.settings.rules.dir.clone();
        if let Err(error) = debouncer.watcher().watch(&dir, RecursiveMode::NonRecursive) {
            tracing::error!(%error, dir = %dir.display(), "Cannot watch rules.dir; reload with SIGHUP or POST /reload.");
            return None;
        }
        tracing::info!(dir = %dir.display(), "Watching rules.dir: a changed rule file reloads.");
        running.watching = Some((debouncer, dir));
        drop(running);
        let reloader = self.clone();
        let task = actix_web::rt::spawn(async move {
            while changes.recv().await.is_some() {
                // Changes that came while one reload ran are all in the next one.
                while changes.try_recv().is_ok() {}
                let _ = reloader.reload(Trigger::Watch).await;
            }
        });
        Some(Watching {
            reloader: self.clone(),
            task,
        })
    }
}

/// Reloads on changes in `rules.dir` while held.
pub struct Watching {
    reloader: Reloader,
    task: actix_web::rt::task::JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        Reloader::lock(&self.reloader.running).watching = None;
        self.task.abort();
    }
}

impl Running {
    fn reload(&mut self, trigger: Trigger) -> Result<Applied, Problems> {
        let metrics = Arc::clone(&self.assembly.metrics);
        match self.prepare() {
            Ok(Prepared {
                applied,
                assembled,
                tls,
                settings,
            }) => {
                // Every part compiled: the swap. A request already in progress keeps the set
                // it took; an attempt in progress keeps its target.
                if let (Some(current), Some(renewed)) = (&self.certificates, &tls) {
                    current.adopt(&renewed.certificates);
                }
                self.live.replace(assembled.state);
                if let (Some(live), Some(targets)) = (&self.targets, assembled.targets) {
                    live.replace(targets);
                }
                self.settings = settings;
                // A store-less gateway has no worker; `prepare` refused a set that needs one.
                self.assembly.wake.notify_one();
                self.rewatch();
                metrics.reload(Some(applied.rules));
                for key in &applied.restart_required {
                    tracing::warn!(
                        key,
                        "Reload: this key changes only with a restart; it keeps the value it had."
                    );
                }
                for warning in &applied.warnings {
                    tracing::warn!(%warning, "Unsafe configuration.");
                }
                tracing::info!(
                    trigger = trigger.as_str(),
                    rules = applied.rules,
                    "Reload applied."
                );
                Ok(applied)
            }
            Err(problems) => {
                metrics.reload(None);
                for problem in &problems.0 {
                    tracing::error!(trigger = trigger.as_str(), %problem, "Configuration problem.");
                }
                tracing::error!(
                    trigger = trigger.as_str(),
                    problems = problems.0.len(),
                    "Reload refused; the set in use keeps serving."
                );
                Err(problems)
            }
        }
    }

    /// Compiles the next set, changing nothing yet.
    fn prepare(&self) -> Result<Prepared, Problems> {
        let mut settings = (self.load)()?;
        let restart_required = keep_restart_only(&self.settings, &mut settings);
        let mut gateway = Gateway::compile(settings, self.source.clone(), &*self.env)?;
        if self.assembly.store.is_none() && Assembly::needs_store(&gateway) {
            return Err(Problems(vec![Problem::new(
                &self.source,
                "delivery.store",
                "the new config needs the delivery store (Notification events or a port sink's run updates), which is opened at start-up: restart hookgate to apply it",
            )]));
        }
        let current = self.live.current();
        let fresh = gateway.rules.inherit_replays(&current.rules);
        let capacity = gateway.settings.server.replay_cache_entries;
        for rule in gateway.rules.iter() {
            rule.replays.set_capacity(capacity);
        }
        if let Some(store) = &self.assembly.store {
            restore_replays(store, &gateway.rules, |name| {
                fresh.iter().any(|fresh| fresh == name)
            });
        }
        let warnings = gateway.warnings();
        let rules = gateway.rules.len();
        let tls = gateway.tls.take();
        let settings = gateway.settings.clone();
        let assembled = self
            .assembly
            .assemble(gateway, Some(&current))
            .map_err(|reason| Problems(vec![Problem::new(&self.source, "sinks", reason)]))?;
        Ok(Prepared {
            applied: Applied {
                rules,
                restart_required,
                warnings,
            },
            assembled,
            tls,
            settings,
        })
    }

    /// After an applied reload that moved `rules.dir`, watches the new directory.
    fn rewatch(&mut self) {
        let dir = self.settings.rules.dir.clone();
        let Some((debouncer, watched)) = &mut self.watching else {
            return;
        };
        if *watched == dir {
            return;
        }
        let _ = debouncer.watcher().unwatch(watched);
        match debouncer.watcher().watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => tracing::info!(dir = %dir.display(), "Watching the new rules.dir."),
            Err(error) => {
                tracing::error!(%error, dir = %dir.display(), "Cannot watch the new rules.dir; reload with SIGHUP or POST /reload.")
            }
        }
        *watched = dir;
    }
}

/// Gives every key a running gateway cannot change (its sockets, its store, its log, its
/// worker's retention) the value it has in `running`; returns the keys that differed.
pub fn keep_restart_only(running: &Settings, new: &mut Settings) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($key:literal => $($field:ident).+;)*) => {$(
            if new.$($field).+ != running.$($field).+ {
                new.$($field).+ = Clone::clone(&running.$($field).+);
                kept.push($key);
            }
        )*};
    }
    keep! {
        "server.listen" => server.listen;
        "server.workers" => server.workers;
        "server.max_connections" => server.max_connections;
        "server.header_timeout_ms" => server.header_timeout_ms;
        "server.keep_alive_secs" => server.keep_alive_secs;
        "server.tls" => server.tls;
        "admin.listen" => admin.listen;
        "delivery.mode" => delivery.mode;
        "delivery.store" => delivery.store;
        "delivery.max_store_bytes" => delivery.max_store_bytes;
        "delivery.done_retention_secs" => delivery.done_retention_secs;
        "rules.watch" => rules.watch;
        "log" => log;
    }
    kept
}
