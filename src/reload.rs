//! Hot reload: SIGHUP, `POST /reload` and `rules.watch` compile the config, every rule and every
//! sink again. All of it compiles or nothing changes: a refused reload logs every problem as
//! `check` prints it and the set in use keeps serving. An applied one swaps the handlers' set
//! ([`Live`]) and the worker's targets ([`LiveTargets`]) whole; the listeners, the store and
//! the queue are untouched, and keys that need a restart keep their value and are reported.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::config::{Env, Problem, Problems, Settings, Source};
use crate::gateway::Gateway;
use crate::outbox::LiveTargets;
use crate::server::Live;
use crate::startup::{Assembled, Assembly, restore_replays};

/// Reads the settings again (the config file and the `HOOKGATE__` overrides).
pub type Load = Box<dyn Fn() -> Result<Settings, Problems> + Send + Sync>;

/// How long `rules.watch` waits for the files to stop changing before it reloads: long enough
/// for an editor's save (write, rename) to be one reload, short enough to feel immediate.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(400);
/// Files that never stop changing still reload this long after the first change.
const WATCH_MAX_DELAY: Duration = Duration::from_secs(5);

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
    /// The listener's TLS as started: its certificate is renewed by each reload, its client
    /// CAs are built into the listener.
    pub tls: Option<crate::server::tls::Tls>,
    /// `rules.watch`: the watcher and the directory it watches.
    pub watching: Option<(RecommendedWatcher, PathBuf)>,
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
    metrics: Arc<crate::metrics::Metrics>,
}

impl Reloader {
    pub(crate) fn new(running: Running) -> Self {
        Self {
            metrics: Arc::clone(&running.assembly.metrics),
            running: Arc::new(Mutex::new(running)),
        }
    }

    fn lock(running: &Mutex<Running>) -> MutexGuard<'_, Running> {
        running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reloads; systemd hears `RELOADING=1` before and `READY=1` after, either way, in the
    /// order reloads run (they run one at a time, and the notices are sent under that turn).
    pub async fn reload(&self, trigger: Trigger) -> Result<Applied, Problems> {
        let running = Arc::clone(&self.running);
        // Reading files and building clients blocks: off the request threads. The blocking
        // task runs to its end even if this future is dropped, so READY=1 always follows.
        let outcome = tokio::task::spawn_blocking(move || {
            let mut running = Self::lock(&running);
            crate::systemd::reloading();
            // READY=1 follows whatever happens, a panic included: systemd would otherwise wait
            // for the reload until its timeout and fail `systemctl reload`.
            let mut notice = Reloaded(None);
            let outcome = running.reload(trigger);
            notice.0 = Some(match &outcome {
                Ok(applied) => format!("serving; reload applied, {} rules", applied.rules),
                Err(problems) => format!(
                    "serving the previous set; reload refused with {} problem{}",
                    problems.0.len(),
                    if problems.0.len() == 1 { "" } else { "s" }
                ),
            });
            outcome
        })
        .await;
        outcome.unwrap_or_else(|error| {
            // A panic in a reload: what it said went to stderr already; the set in use (the
            // swap is the last step) serves on.
            self.metrics.reload(None);
            tracing::error!(
                trigger = trigger.as_str(),
                panicked = error.is_panic(),
                "The reload stopped unexpectedly; the set in use keeps serving."
            );
            Err(Problems(vec![Problem::new(
                "",
                "",
                "the reload stopped unexpectedly; see the log",
            )]))
        })
    }

    /// With `rules.watch = true`, watches `rules.dir` from now on; changes reload once
    /// [`Watching::start`] runs, until the handle is dropped. `None` when the key is off or the
    /// directory cannot be watched (logged).
    pub fn watch(&self) -> Option<Watching> {
        let mut running = Self::lock(&self.running);
        if !running.settings.rules.watch {
            return None;
        }
        let (changed, changes) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
            match result {
                Ok(event) => {
                    if reloads_for(&event) {
                        let _ = changed.send(());
                    }
                }
                // Events may have been lost: read everything again (as for a rescan).
                Err(error) => {
                    tracing::warn!(%error, "Watching rules.dir failed; reloading to be sure.");
                    let _ = changed.send(());
                }
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::error!(%error, "Cannot watch rules.dir; reload with SIGHUP or POST /reload.");
                return None;
            }
        };
        let dir = running.settings.rules.dir.clone();
        if let Err(error) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::error!(%error, dir = %dir.display(), "Cannot watch rules.dir; reload with SIGHUP or POST /reload.");
            return None;
        }
        tracing::info!(dir = %dir.display(), "Watching rules.dir: a changed rule file reloads.");
        running.watching = Some((watcher, dir));
        Some(Watching {
            reloader: self.clone(),
            changes: Some(changes),
            task: None,
        })
    }
}

/// Sends `READY=1` with its status when dropped, however the reload ended.
struct Reloaded(Option<String>);

impl Drop for Reloaded {
    fn drop(&mut self) {
        crate::systemd::reloaded(
            self.0
                .as_deref()
                .unwrap_or("serving the previous set; the reload stopped unexpectedly"),
        );
    }
}

/// Watches `rules.dir` while held; changes seen before [`Watching::start`] wait for it.
pub struct Watching {
    reloader: Reloader,
    changes: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
    task: Option<actix_web::rt::task::JoinHandle<()>>,
}

impl Watching {
    /// Reloads on each change from now on (on the running system, which `watch` may precede).
    pub fn start(&mut self) {
        let Some(mut changes) = self.changes.take() else {
            return;
        };
        let reloader = self.reloader.clone();
        self.task = Some(actix_web::rt::spawn(async move {
            while changes.recv().await.is_some() {
                // Debounced: the reload comes once the files have been quiet for a moment, so
                // a save (or a burst of them) is one reload.
                let latest = tokio::time::Instant::now() + WATCH_MAX_DELAY;
                loop {
                    let quiet = (tokio::time::Instant::now() + WATCH_DEBOUNCE).min(latest);
                    match tokio::time::timeout_at(quiet, changes.recv()).await {
                        Ok(Some(())) => {}
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let _ = reloader.reload(Trigger::Watch).await;
            }
        }));
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        // A reload in progress (a secret file that does not answer) must not hold up the
        // shutdown: the watcher then goes with the process.
        if let Ok(mut running) = self.reloader.running.try_lock() {
            running.watching = None;
        }
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
                if let (Some(current), Some(renewed)) = (&self.tls, &tls) {
                    current.certificates.adopt(&renewed.certificates);
                }
                for rule in assembled.state.rules.iter() {
                    rule.replays
                        .set_capacity(settings.server.replay_cache_entries);
                }
                // The worker's targets first: by the time a handler of the new set stores a
                // call of a new rule, the worker makes it with a target that knows the rule.
                if let (Some(live), Some(targets)) = (&self.targets, assembled.targets) {
                    live.store(Arc::new(targets));
                }
                self.live.store(Arc::new(assembled.state));
                for removed in self.settings.sinks.keys() {
                    if !settings.sinks.contains_key(removed) {
                        metrics.sink_removed(removed);
                    }
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
        let mut restart_required = keep_restart_only(&self.settings, &mut settings);
        let mut gateway = Gateway::compile(settings, self.source.clone(), &*self.env)?;
        // The client certificate verifier is part of the listener: new CAs need a restart.
        if gateway.tls.as_ref().map(|tls| &tls.client_cas)
            != self.tls.as_ref().map(|tls| &tls.client_cas)
        {
            restart_required.push("server.tls.client_ca_file");
        }
        if self.assembly.store.is_none() && Assembly::needs_store(&gateway) {
            return Err(Problems(vec![Problem::new(
                &self.source,
                "delivery.store",
                "the new config needs the delivery store (Notification events or a port sink's run updates), which is opened at start-up: restart hookgate to apply it",
            )]));
        }
        let current = self.live.load_full();
        // Shared with the rules in use, whose capacity changes only when the set is swapped.
        let fresh = gateway.rules.inherit_replays(&current.rules);
        if let Some(store) = &self.assembly.store
            && !fresh.is_empty()
        {
            restore_replays(store, &gateway.rules, Some(&fresh));
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
        let Some((watcher, watched)) = &mut self.watching else {
            return;
        };
        if *watched == dir {
            return;
        }
        let _ = watcher.unwatch(watched);
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => tracing::info!(dir = %dir.display(), "Watching the new rules.dir."),
            Err(error) => {
                tracing::error!(%error, dir = %dir.display(), "Cannot watch the new rules.dir; reload with SIGHUP or POST /reload.")
            }
        }
        *watched = dir;
    }
}

/// Whether the watcher reloads for `event`: a change to a rule file, or lost events.
fn reloads_for(event: &notify::Event) -> bool {
    event.need_rescan() || is_a_rule_change(event)
}

/// Whether `event` can change what a reload reads: a rule file written, created, removed or
/// renamed, or a Kubernetes volume (ConfigMap, Secret) swapping its `..data` link. Reads are
/// not (a reload opens every rule file: watching opens would reload forever), nor are editors'
/// swap and backup files, which are not rules.
fn is_a_rule_change(event: &notify::Event) -> bool {
    let kind = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Any
    );
    kind && event.paths.iter().any(|path| {
        crate::rules::is_rule_file_name(path)
            || path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(".."))
    })
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

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn only_changes_to_rule_files_reload() {
        let check = |kind: EventKind, path: &str, expected: bool| {
            let event =
                notify::Event::new(kind).add_path(PathBuf::from("/etc/hookgate/rules").join(path));
            assert_eq!(reloads_for(&event), expected, "{kind:?} {path}");
        };
        let written = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        check(written, "deploy.toml", true);
        check(written, "deploy.yaml", true);
        check(EventKind::Create(CreateKind::File), "deploy.json", true);
        check(EventKind::Remove(RemoveKind::File), "deploy.yml", true);
        check(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "deploy.toml",
            true,
        );
        // Kubernetes swaps a volume's `..data` link.
        check(EventKind::Create(CreateKind::Any), "..data", true);
        // A reload opening the files it reads, and what is not a rule.
        check(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "deploy.toml",
            false,
        );
        check(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "deploy.toml",
            false,
        );
        check(written, ".deploy.toml.swp", false);
        check(written, "deploy.toml~", false);
        check(written, "notes.txt", false);
        check(written, "sender.token", false);
        // The kernel's queue overflowed: events were lost, so everything is read again.
        let lost = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(reloads_for(&lost));
    }
}
